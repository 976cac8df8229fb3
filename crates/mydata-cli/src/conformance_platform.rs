//! `mydata conformance platform`: the platform conformance suite (spec
//! `conformance-platform.md`). Exit status 0 when no check failed, 1 otherwise, 2 on a usage
//! or profile error.

use std::path::PathBuf;

use clap::Args as ClapArgs;
use mydata_conformance::platform::{Profile, run as run_suite};

type CliResult<T> = Result<T, Box<dyn std::error::Error>>;

/// `mydata conformance platform`.
#[derive(ClapArgs, Debug)]
pub struct Args {
    /// The profile (JSON, spec conformance-platform.md).
    #[arg(
        long,
        value_name = "FILE.json",
        conflicts_with = "sandbox",
        required_unless_present = "sandbox"
    )]
    profile: Option<PathBuf>,
    /// Use the built-in profile of `mydata serve --sandbox --no-sandbox-dp --sandbox-clock`.
    #[arg(long)]
    sandbox: bool,
    /// The platform's base URL (overrides the profile's).
    #[arg(long = "platform", alias = "url", alias = "platform-url")]
    url: Option<String>,
    /// With --sandbox: where the suite serves the sandbox DP (the server's sandbox_dp_url).
    #[arg(
        long = "sandbox-dp-url",
        alias = "dp-url",
        default_value = "http://127.0.0.1:8081"
    )]
    dp_url: String,
    /// With --sandbox: where the suite serves the sandbox SPs (the server's sandbox_sp_url).
    #[arg(
        long = "sandbox-sp-url",
        alias = "sp-url",
        default_value = "http://127.0.0.1:8090"
    )]
    sp_url: String,
    /// Write the results as JUnit XML to this file.
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,
}

fn profile(a: &Args) -> CliResult<Profile> {
    let mut p = match &a.profile {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| crate::exit::runtime(format!("--profile {}: {e}", path.display())))?;
            Profile::from_json(&text).map_err(|e| format!("{}: {e}", path.display()))?
        }
        None => Profile::sandbox(
            a.url.as_deref().unwrap_or("http://127.0.0.1:8080"),
            &a.dp_url,
            &a.sp_url,
        ),
    };
    if let Some(u) = &a.url {
        p.platform_url = u.trim_end_matches('/').to_string();
    }
    p.validate()?;
    Ok(p)
}

/// Runs the suite; exit status 0 when no check failed, 1 otherwise.
pub fn run(a: Args) -> CliResult<i32> {
    let p = profile(&a)?;
    let report = actix_web::rt::System::new().block_on(run_suite(&p));
    crate::exit::report(&report, a.junit.as_deref())
}
