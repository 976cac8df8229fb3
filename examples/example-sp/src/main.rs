//! Example SP web app (work in progress).
fn main() {}
