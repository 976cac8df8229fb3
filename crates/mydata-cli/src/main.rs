//! `mydata`: the command-line tool of the MyData reference implementation.
//!
//! Exit status: 0 success, 1 a verification or decryption failure (the
//! message names the file or rule), 2 a usage error.

#![forbid(unsafe_code)]

mod commands;
mod conformance_platform;
mod conformance_sp;
mod server_cmds;
mod sp_client;

use clap::Parser;

fn main() {
    // The server's warnings and errors (an SP-API call that failed, a dataset that could not be
    // called, a purge that could not erase something) go to standard error; `RUST_LOG` changes
    // the level (spec D48).
    // `mydata serve` installs its own subscriber once its configuration is read (`log_format`,
    // spec operations.md).
    let cli = commands::Cli::parse();
    if !cli.is_serve() {
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
            .format_target(false)
            .init();
    }
    match commands::run(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("mydata: error: {e}");
            std::process::exit(2);
        }
    }
}
