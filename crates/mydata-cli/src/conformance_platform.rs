//! `mydata conformance platform` (PLACEHOLDER: being written; replaced before commit).

use clap::Args as ClapArgs;

type CliResult<T> = Result<T, Box<dyn std::error::Error>>;

/// `mydata conformance platform`.
#[derive(ClapArgs, Debug)]
pub struct Args {}

/// Runs the suite; exit status 0 when every check passed, 1 otherwise.
pub fn run(_a: Args) -> CliResult<i32> {
    Err("not built yet".into())
}
