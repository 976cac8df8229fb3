#[path = "../tests/common/mod.rs"]
mod common;
fn main() { let _ = common::CITIZEN; }
