//! `mydata sp fetch` and `mydata sp verify` (PLACEHOLDER: being written; replaced before commit).

use clap::Args;

type CliResult<T> = Result<T, Box<dyn std::error::Error>>;

/// `mydata sp fetch`.
#[derive(Args, Debug)]
pub struct FetchArgs {}

/// `mydata sp verify`.
#[derive(Args, Debug)]
pub struct VerifyArgs {}

/// Runs `mydata sp fetch`.
pub fn fetch(_a: FetchArgs) -> CliResult<i32> {
    Err("not built yet".into())
}

/// Runs `mydata sp verify`.
pub fn verify(_a: VerifyArgs) -> CliResult<i32> {
    Err("not built yet".into())
}
