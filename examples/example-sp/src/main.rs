//! `example-sp`: a small SP web app for the MyData sandbox.
//!
//! ```text
//! example-sp [--sandbox 1|2] [--listen 127.0.0.1:8090] [--platform-url http://127.0.0.1:8080] …
//! ```
//!
//! Against the SP conformance suite (spec/conformance-sp.md), point it at the suite:
//!
//! ```text
//! example-sp --sandbox 1 --listen 127.0.0.1:8090 --platform http://127.0.0.1:8099
//! mydata conformance sp --sp http://127.0.0.1:8090 --listen 127.0.0.1:8099
//! ```
//!
//! Every flag can also come from the environment (`EXAMPLE_SP_LISTEN`, …).

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use example_sp::Config;
use mydata_protocol::jwe::JweMode;
use mydata_protocol::package::sp::PackagingMode;

/// A small SP web app for the MyData online service (sandbox defaults).
#[derive(Debug, Parser)]
#[command(name = "example-sp", version)]
struct Args {
    /// Start from the sandbox registration CLI.SANDBOX001 (1: mode A, CBC) or CLI.SANDBOX002 (2: mode B, GCM).
    #[arg(long, env = "EXAMPLE_SP_SANDBOX", default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=2))]
    sandbox: u8,
    /// Address to listen on.
    #[arg(long, env = "EXAMPLE_SP_LISTEN", default_value = example_sp::DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// The platform's base URL (for the SP conformance suite: the suite's address).
    #[arg(long, visible_alias = "platform", env = "EXAMPLE_SP_PLATFORM_URL", default_value = example_sp::DEFAULT_PLATFORM_URL)]
    platform_url: String,
    /// client_id (overrides the sandbox one).
    #[arg(long, env = "EXAMPLE_SP_CLIENT_ID")]
    client_id: Option<String>,
    /// client_secret (overrides the sandbox one).
    #[arg(long, env = "EXAMPLE_SP_CLIENT_SECRET", hide_env_values = true)]
    client_secret: Option<String>,
    /// cbc_iv (overrides the sandbox one).
    #[arg(long, env = "EXAMPLE_SP_CBC_IV", hide_env_values = true)]
    cbc_iv: Option<String>,
    /// SP-API key (overrides the sandbox one); an empty value means none.
    #[arg(long, env = "EXAMPLE_SP_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Encryption mode: cbc or gcm (parameters and JWE).
    #[arg(long, env = "EXAMPLE_SP_MODE")]
    mode: Option<String>,
    /// Packaging mode: A or B.
    #[arg(long, env = "EXAMPLE_SP_PACKAGING")]
    packaging: Option<String>,
    /// The registered return URL (default: http://{listen}/return).
    #[arg(long, env = "EXAMPLE_SP_RETURN_URL")]
    return_url: Option<String>,
    /// PEM file of trust anchors for DP certificates (default: the sandbox root CA).
    #[arg(long, env = "EXAMPLE_SP_TRUST_ANCHORS")]
    trust_anchors: Option<PathBuf>,
    /// Default datasets on the form, comma-separated resource_ids.
    #[arg(long, env = "EXAMPLE_SP_DATASETS", value_delimiter = ',')]
    datasets: Vec<String>,
    /// Mark the session cookie Secure (when served over HTTPS).
    #[arg(long, env = "EXAMPLE_SP_SECURE_COOKIE")]
    secure_cookie: bool,
    /// The sandbox on HTTPS (`mydata serve --sandbox --sandbox-tls`): serve HTTPS with the sandbox
    /// TLS PKI, poll https://127.0.0.1:8080 trusting its root, with the sp-client certificate.
    #[arg(long, env = "EXAMPLE_SP_SANDBOX_TLS")]
    sandbox_tls: bool,
}

fn config(a: Args) -> Result<Config, String> {
    let mut c = if a.sandbox == 2 {
        Config::sandbox002()
    } else {
        Config::sandbox001()
    };
    let platform_url = match a.platform_url.strip_prefix("http://") {
        // The default platform, on HTTPS in the HTTPS sandbox.
        Some(rest) if a.sandbox_tls => format!("https://{rest}"),
        _ => a.platform_url,
    };
    c = c.with_listen(a.listen).with_platform_url(platform_url);
    if let Some(v) = a.client_id {
        c.sp.client_id = v.parse().map_err(|e| format!("--client-id: {e}"))?;
    }
    if let Some(v) = a.client_secret {
        c.sp.client_secret = v.parse().map_err(|e| format!("--client-secret: {e}"))?;
    }
    if let Some(v) = a.cbc_iv {
        c.sp.cbc_iv = v.parse().map_err(|e| format!("--cbc-iv: {e}"))?;
    }
    if let Some(v) = a.api_key {
        c.sp.api_key = (!v.is_empty()).then_some(v);
    }
    if let Some(m) = a.mode {
        let mode = match m.to_ascii_lowercase().as_str() {
            "cbc" => JweMode::Cbc,
            "gcm" => JweMode::Gcm,
            _ => return Err("--mode must be cbc or gcm".into()),
        };
        c.sp = c.sp.with_mode(mode);
    }
    if let Some(p) = a.packaging {
        c.sp.packaging_mode = Some(match p.to_ascii_uppercase().as_str() {
            "A" => PackagingMode::A,
            "B" => PackagingMode::B,
            _ => return Err("--packaging must be A or B".into()),
        });
    }
    match a.return_url {
        Some(u) => c.sp.return_url = u,
        None if a.listen.port() != 0 => {
            let scheme = if a.sandbox_tls { "https" } else { "http" };
            c = c.with_public_url(&format!("{scheme}://{}", a.listen));
        }
        None => {}
    }
    if let Some(p) = a.trust_anchors {
        c.trust_anchors_pem =
            std::fs::read(&p).map_err(|e| format!("--trust-anchors {}: {e}", p.display()))?;
    }
    if !a.datasets.is_empty() {
        c.default_datasets = a
            .datasets
            .iter()
            .map(|d| d.trim().parse().map_err(|e| format!("--datasets {d}: {e}")))
            .collect::<Result<_, _>>()?;
    }
    c.secure_cookie = a.secure_cookie || a.sandbox_tls;
    c.sandbox_tls = a.sandbox_tls;
    Ok(c)
}

#[actix_web::main]
async fn main() -> ExitCode {
    let cfg = match config(Args::parse()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("example-sp: {e}");
            return ExitCode::from(2);
        }
    };
    let client = cfg.sp.client_id.clone();
    let platform = cfg.sp.platform_url.clone();
    let running = match example_sp::spawn(cfg).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("example-sp: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "example-sp {client} listening on {} (platform {platform})",
        running.url()
    );
    let handle = running.handle();
    actix_web::rt::spawn(async move {
        if actix_web::rt::signal::ctrl_c().await.is_ok() {
            handle.stop(true).await;
        }
    });
    match running.wait().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("example-sp: {e}");
            ExitCode::FAILURE
        }
    }
}
