//! `mydata conformance sp`: the SP conformance suite (spec `conformance-sp.md`). The suite plays
//! the platform on `--listen`; the SP under test must use that address as its platform URL.
//! Exit status 0 when no check failed, 1 otherwise or when the suite cannot run (the address is
//! taken), 2 on a usage error.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args as ClapArgs;
use mydata_conformance::sp::{Options, Target, run as run_suite};
use mydata_protocol::jwe::JweMode;
use mydata_protocol::package::sp::PackagingMode;

type CliResult<T> = Result<T, Box<dyn std::error::Error>>;

/// `mydata conformance sp` (boxed: the flags are many, and the command enum stays small).
#[derive(ClapArgs, Debug)]
pub struct Args {
    #[command(flatten)]
    flags: Box<Flags>,
}

/// The flags of `mydata conformance sp`.
#[derive(ClapArgs, Debug)]
struct Flags {
    /// The SP's base URL (defaults of the hook, return and SP-API URLs derive from it).
    #[arg(long, value_name = "URL")]
    sp: String,
    /// Where the suite serves the MyData-API: the SP's platform URL is http://{listen}.
    #[arg(long, default_value = "127.0.0.1:8099")]
    listen: SocketAddr,
    /// The SP's conformance hook (default {sp}/conformance).
    #[arg(long, value_name = "URL")]
    hook: Option<String>,
    /// Start from the public sandbox registration CLI.SANDBOX001 (1: packaging mode A, CBC) or
    /// CLI.SANDBOX002 (2: mode B, GCM); the flags below override parts of it.
    #[arg(long = "sandbox-sp", alias = "sandbox", default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=2))]
    sandbox: u8,
    /// The SP's client_id.
    #[arg(long)]
    client_id: Option<String>,
    /// The SP's client_secret.
    #[arg(long)]
    client_secret: Option<String>,
    /// The SP's cbc_iv.
    #[arg(long)]
    cbc_iv: Option<String>,
    /// The SP-API key; an empty value means none (the bad-apiKey check is then skipped).
    #[arg(long)]
    api_key: Option<String>,
    /// The registration's encryption mode: cbc or gcm (parameters and JWE).
    #[arg(long)]
    mode: Option<String>,
    /// The registered packaging mode: A or B.
    #[arg(long)]
    packaging: Option<String>,
    /// The registered return URL (default {sp}/return).
    #[arg(long, value_name = "URL")]
    return_url: Option<String>,
    /// The registered SP-API URL (default {sp}/sp-api).
    #[arg(long, value_name = "URL")]
    sp_api_url: Option<String>,
    /// The citizen ID sent to the hook.
    #[arg(long, default_value = "A120345672")]
    pid: String,
    /// The datasets requested, in order (at least two; repeat the flag).
    #[arg(
        long = "dataset",
        alias = "resource",
        alias = "datasets",
        value_name = "API.X"
    )]
    resources: Vec<String>,
    /// The caseNumber of the case-number check.
    #[arg(long, default_value = "CONF-2026-0001")]
    case_number: String,
    /// Seconds to watch for a request after a 429 without Retry-After. A correct SP waits 60,
    /// and the default watches all 60; a shorter window is quicker but passes an SP that polls
    /// after it and before the 60 s.
    #[arg(long, default_value_t = 60.0)]
    window: f64,
    /// Seconds to watch for requests that must not come (after a final answer, a refused call).
    #[arg(long, default_value_t = 2.0)]
    quiet: f64,
    /// Seconds to wait for the SP to react (a first poll, a final state).
    #[arg(long, default_value_t = 15.0)]
    timeout: f64,
    /// Write the results as JUnit XML to this file.
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,
}

fn secs(name: &str, v: f64) -> CliResult<Duration> {
    if !(v.is_finite() && (0.0..=3600.0).contains(&v)) {
        return Err(format!("--{name} must be between 0 and 3600 seconds").into());
    }
    Ok(Duration::from_secs_f64(v))
}

fn target(a: &Flags) -> CliResult<Target> {
    if !(a.sp.starts_with("http://") || a.sp.starts_with("https://")) {
        return Err(format!("--sp {:?} is not an http(s) URL", a.sp).into());
    }
    let mut t = Target::sandbox(a.sandbox, &a.sp)?;
    let reg = &mut t.registration;
    if let Some(v) = &a.client_id {
        reg.client_id = v.parse().map_err(|e| format!("--client-id: {e}"))?;
    }
    if let Some(v) = &a.client_secret {
        reg.client_secret = v.parse().map_err(|e| format!("--client-secret: {e}"))?;
    }
    if let Some(v) = &a.cbc_iv {
        reg.cbc_iv = v.parse().map_err(|e| format!("--cbc-iv: {e}"))?;
    }
    if let Some(v) = &a.api_key {
        reg.api_key = (!v.is_empty()).then(|| v.clone());
    }
    if let Some(m) = &a.mode {
        let mode = match m.to_ascii_lowercase().as_str() {
            "cbc" => JweMode::Cbc,
            "gcm" => JweMode::Gcm,
            _ => return Err("--mode must be cbc or gcm".into()),
        };
        t.registration = t.registration.with_mode(mode);
    }
    if let Some(p) = &a.packaging {
        t.registration.packaging_mode = Some(match p.to_ascii_uppercase().as_str() {
            "A" => PackagingMode::A,
            "B" => PackagingMode::B,
            _ => return Err("--packaging must be A or B".into()),
        });
    }
    if let Some(u) = &a.return_url {
        t.registration.return_url = u.clone();
    }
    if let Some(u) = &a.sp_api_url {
        t.sp_api_url = u.clone();
    }
    if let Some(u) = &a.hook {
        t.hook_url = u.trim_end_matches('/').to_owned();
    }
    Ok(t)
}

fn options(a: &Flags) -> CliResult<Options> {
    let mut o = Options {
        pid: a.pid.trim().to_owned(),
        case_number: a.case_number.clone(),
        absent_window: secs("window", a.window)?,
        quiet_window: secs("quiet", a.quiet)?,
        settle_timeout: secs("timeout", a.timeout)?,
        ..Options::default()
    };
    if !a.resources.is_empty() {
        o.resources = a
            .resources
            .iter()
            .map(|r| r.trim().parse().map_err(|e| format!("--dataset {r}: {e}")))
            .collect::<Result<_, _>>()?;
    }
    if o.resources.len() < 2 {
        return Err("give at least two --dataset (the packaging-mode check requests two)".into());
    }
    Ok(o)
}

/// Runs the suite; exit status 0 when every check passed (skips allowed), 1 otherwise.
pub fn run(a: Args) -> CliResult<i32> {
    let a = a.flags;
    let target = target(&a)?;
    let opts = options(&a)?;
    let listener = std::net::TcpListener::bind(a.listen)
        .map_err(|e| crate::exit::runtime(format!("--listen {}: {e}", a.listen)))?;
    eprintln!(
        "mydata conformance sp: playing the platform at http://{} for {} ({})",
        a.listen, target.sp_url, target.registration.client_id
    );
    let report = actix_web::rt::System::new().block_on(run_suite(listener, &target, &opts))?;
    crate::exit::report(&report, a.junit.as_deref())
}
