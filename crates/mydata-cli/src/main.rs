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
    let cli = commands::Cli::parse();
    match commands::run(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("mydata: error: {e}");
            std::process::exit(2);
        }
    }
}
