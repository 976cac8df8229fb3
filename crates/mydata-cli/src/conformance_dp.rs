//! `mydata conformance dp`: the DP conformance suite (spec `conformance-dp.md`). Exit status 0
//! when no check failed, 1 otherwise, 2 on a usage or profile error.

use std::path::{Path, PathBuf};

use clap::Args as ClapArgs;
use mydata_conformance::dp::{Profile, run as run_suite};

type CliResult<T> = Result<T, Box<dyn std::error::Error>>;

/// `mydata conformance dp`.
#[derive(ClapArgs, Debug)]
pub struct Args {
    /// The profile (JSON, spec conformance-dp.md).
    #[arg(
        long,
        value_name = "FILE.json",
        conflicts_with = "sandbox",
        required_unless_present = "sandbox"
    )]
    profile: Option<PathBuf>,
    /// Use the built-in profile of the sandbox DP (`mydata sandbox-dp --platform URL`, where
    /// URL is this suite's --platform-url).
    #[arg(long)]
    sandbox: bool,
    /// With --sandbox: the sandbox DP's base URL [http://127.0.0.1:8081].
    #[arg(long = "dp-url", requires = "sandbox")]
    dp_url: Option<String>,
    /// Where the suite serves /connect/introspect and /connect/userinfo: the platform URL the
    /// DP is configured with (http://IP:PORT; overrides the profile's).
    #[arg(long = "platform-url", alias = "platform")]
    platform_url: Option<String>,
    /// The longest the DP keeps an active introspection answer, in seconds (overrides the
    /// profile's cache_secs; default 30).
    #[arg(long, value_name = "SECONDS")]
    cache_secs: Option<u64>,
    /// Write the results as JUnit XML to this file.
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,
}

fn profile(a: &Args) -> CliResult<Profile> {
    let mut p = match &a.profile {
        Some(path) => {
            // An unreadable profile is a profile error (exit 2), as a malformed one is.
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("--profile {}: {e}", path.display()))?;
            let base = path.parent().unwrap_or(Path::new("."));
            Profile::parse_json(&text, base).map_err(|e| format!("{}: {e}", path.display()))?
        }
        None => Profile::sandbox(
            a.platform_url.as_deref().unwrap_or("http://127.0.0.1:9100"),
            a.dp_url.as_deref().unwrap_or("http://127.0.0.1:8081"),
        ),
    };
    if let Some(u) = &a.platform_url {
        p.platform_url = u.trim_end_matches('/').to_string();
    }
    if let Some(c) = a.cache_secs {
        p.cache_secs = c;
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
