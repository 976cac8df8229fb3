//! `mydata`: the command-line tool of the MyData reference implementation.
//!
//! Exit status: 0 success, 1 a verification, decryption or runtime failure (the
//! message names the file, address or rule), 2 a usage error ([`exit`]).

#![forbid(unsafe_code)]

/// `println!` that returns the write's error instead of panicking (a closed pipe,
/// `mydata sp list --json | head -c1`, is then a quiet end, [`exit::is_broken_pipe`]).
macro_rules! outln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($t)*)
    }};
}

mod card_agent;
mod commands;
mod conformance_dp;
mod conformance_platform;
mod conformance_sp;
mod exit;
mod server_cmds;
mod settings;
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
        Err(e) if exit::is_broken_pipe(e.as_ref()) => std::process::exit(0),
        Err(e) => {
            let status = exit::status_of(e.as_ref());
            let what = if status == 2 { "usage error" } else { "error" };
            eprintln!("mydata: {what}: {e}");
            std::process::exit(status);
        }
    }
}
