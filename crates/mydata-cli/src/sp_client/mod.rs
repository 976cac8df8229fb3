//! `mydata sp fetch` and `mydata sp verify`: the SP's side of the MyData-API from the command
//! line, built on the SP SDK (`mydata-sp`).
//!
//! * `fetch` gets a ticket (given on the command line, read from a saved SP-API body, or received
//!   by playing the SP for one transaction with `--listen`), polls the platform, decrypts the JWE,
//!   verifies the SP package and every DP package in it against the trust anchors and the
//!   packaging mode, and unpacks the files.
//! * `verify` does the same for a package saved earlier (the JWE body or the decrypted zip).
//!
//! Verification is the SDK's (`mydata_sp::package`), which runs the protocol core's SP package
//! verifier, the same code path as `mydata package verify`.
//!
//! Exit status: 0 delivered and verified; 1 a final non-delivery answer, a refused SP-API body,
//! a decryption or verification failure; 2 a usage error (returned as `Err`).

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use mydata_protocol::flow::{ApplicationMode, Pid, SpApiBody, SpApiDelivery};
use mydata_protocol::ids::{CbcIv, ClientId, ClientSecret, PermissionTicket, ResourceId, TxId};
use mydata_protocol::jwe::JweMode;
use mydata_protocol::package::dp::TrustAnchors;
use mydata_protocol::package::sp::PackagingMode;
use mydata_protocol::resources::ResourceList;
use mydata_sp::SpConfig;
use mydata_sp::callback::ReturnOutcome;
use mydata_sp::package::{self, Delivered, Expectations, PackageError, Verification};
use mydata_sp::poll::{Answer, CancelToken, MyDataApi, PollError, PollOptions, Timer};
use mydata_sp::receiver::{self, MAX_BODY_LEN, Received, ReceivedContent};
use serde_json::{Value, json};

mod args;
mod listener;
mod report;

use args::*;
pub use args::{FetchArgs, VerifyArgs};
use listener::*;
use report::*;

type CliResult<T> = Result<T, Box<dyn std::error::Error>>;

/// The platform of the sandbox (`mydata serve --sandbox`).
const SANDBOX_PLATFORM: &str = "http://127.0.0.1:8080";
/// The name of the saved SP package zip inside `--out`.
const PACKAGE_ZIP: &str = "package.zip";

/// Decrypts an encrypted `secret_key` as the SP-API receiver does, from a body built of the
/// command-line values.
fn received_from_flags(
    sp: &SpConfig,
    ticket: &str,
    tx_id: &str,
    secret_key: &str,
) -> CliResult<Result<Received, receiver::ReceiveError>> {
    let body = SpApiBody {
        tx_id: tx_id.parse::<TxId>().map_err(|e| format!("--tx-id: {e}"))?,
        api_key: None,
        permission_ticket: ticket
            .parse::<PermissionTicket>()
            .map_err(|e| format!("--ticket: {e}"))?,
        delivery: SpApiDelivery::SecretKey(secret_key.to_owned()),
    }
    .to_json();
    Ok(receiver::receive(body.as_bytes(), None, &sp.cipher()))
}

fn read_delivery(
    sp: &SpConfig,
    path: &Path,
) -> CliResult<Result<Received, receiver::ReceiveError>> {
    let body = std::fs::read(path)
        .map_err(|e| crate::exit::runtime(format!("--delivery {}: {e}", path.display())))?;
    Ok(receiver::receive(
        &body,
        sp.api_key.as_deref(),
        &sp.cipher(),
    ))
}

fn refused_json(e: &receiver::ReceiveError) -> Value {
    let hint = match e {
        receiver::ReceiveError::ApiKey => " (give the SP-API key with --api-key)",
        receiver::ReceiveError::SecretKeyDecrypt => {
            " (check --client-secret, --cbc-iv and --jwe of the registration)"
        }
        _ => "",
    };
    json!({
        "status": "refused",
        "verified": false,
        "error": {"kind": e.kind(), "message": format!("SP-API body refused: {e}{hint}")},
    })
}

/// Runs `mydata sp fetch`.
pub fn fetch(a: FetchArgs) -> CliResult<i32> {
    let sources = [
        a.ticket.is_some() || a.secret_key.is_some(),
        a.delivery.is_some(),
        a.listen.is_some(),
    ];
    match sources.iter().filter(|s| **s).count() {
        1 => {}
        0 => {
            return Err(
                "give the ticket: --ticket T --tx-id X --secret-key K, --delivery FILE, or \
                 --listen ADDR --pid ID --dataset API.X"
                    .into(),
            );
        }
        _ => {
            return Err("give only one of --ticket/--secret-key, --delivery and --listen".into());
        }
    }
    if a.listen.is_none() && (a.pid.is_some() || !a.resources.is_empty()) {
        return Err("--pid and --dataset go with --listen".into());
    }
    let return_url = match (&a.return_url, a.listen) {
        (Some(u), _) => u.clone(),
        (None, Some(l)) => format!("http://{l}/return"),
        (None, None) => String::new(),
    };
    let cfg = resolve(&a.creds, &return_url)?;
    let sp = cfg.sp()?.clone();
    if sp.platform_url.is_empty() {
        return Err("give --platform URL (or --sandbox-sp 1|2)".into());
    }
    url::Url::parse(&sp.platform_url).map_err(|e| format!("--platform: {e}"))?;
    // The ticket is served once: refuse an unusable --out before taking the package.
    prepare_out(&a.out, a.force)?;
    let listen_plan = match a.listen {
        Some(addr) => {
            let pid = a.pid.as_deref().ok_or("--listen needs --pid")?;
            let pid = Pid::parse_for(ApplicationMode::PersonOrLegalPerson, pid)
                .map_err(|e| format!("--pid: {e}"))?;
            if a.resources.is_empty() {
                return Err("--listen needs at least one --dataset".into());
            }
            let ids = a
                .resources
                .iter()
                .map(|r| {
                    r.parse::<ResourceId>()
                        .map_err(|e| format!("--dataset {r}: {e}"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let list = ResourceList::new(ids.clone()).map_err(|e| format!("--dataset: {e}"))?;
            let redirect = sp
                .redirect(&mydata_sp::redirect::RedirectRequest::new(&list, &pid))
                .map_err(|e| format!("redirect: {e}"))?;
            Some((addr, ids, redirect))
        }
        None => None,
    };
    let received = match (&a.ticket, &a.delivery, &listen_plan) {
        (Some(t), _, _) => {
            let tx = a.tx_id.as_deref().ok_or("--ticket needs --tx-id")?;
            let k = a
                .secret_key
                .as_deref()
                .ok_or("--ticket needs --secret-key")?;
            Some(received_from_flags(&sp, t, tx, k)?)
        }
        (None, _, _) if a.secret_key.is_some() => return Err("--secret-key needs --ticket".into()),
        (None, Some(p), _) => Some(read_delivery(&sp, p)?),
        _ => None,
    };
    let opts = PollOptions {
        deadline: Duration::from_secs(a.deadline),
        max_wait: Duration::from_secs(a.max_wait.max(1)),
        ..PollOptions::default()
    };
    let progress = Progress::new();
    let started = Instant::now();
    let out = a.out.clone();
    let force = a.force;
    let shown = progress.clone();
    let report = actix_web::rt::System::new().block_on(async move {
        let mut server = None;
        let mut requested = None;
        let received = match (received, listen_plan) {
            (Some(r), _) => r,
            (None, Some((addr, ids, redirect))) => {
                // No citizen waits on a platform that is not there.
                platform_answers(&sp.platform_url)?;
                let l = listen(&sp, addr, &redirect.tx_id, &progress).await?;
                progress.line("open this URL in a browser to go through the platform's pages:");
                progress.bare(&redirect.url);
                progress.status("waiting for the citizen (SP-API call and return)".into());
                requested = Some(ids);
                match l.wait(started, opts.deadline).await {
                    Ok(r) => {
                        server = Some(l);
                        r
                    }
                    Err(v) => {
                        l.stop().await;
                        return Ok::<Value, Box<dyn std::error::Error>>(v);
                    }
                }
            }
            (None, None) => return Err("no ticket source".into()),
        };
        let report = match received {
            Err(e) => refused_json(&e),
            Ok(r) => {
                collect(
                    &sp,
                    &cfg,
                    r,
                    requested.as_deref(),
                    opts,
                    &progress,
                    &out,
                    force,
                )
                .await?
            }
        };
        if let Some(l) = server {
            l.linger_for_return(Duration::from_secs(5)).await;
            l.stop().await;
        }
        Ok(report)
    });
    shown.finish();
    let report = report?;
    print_report(&report, a.json)?;
    Ok(exit_code(&report))
}

/// Checks that the platform accepts connections before anything waits on it (a citizen, a
/// poll): a wrong `--platform` fails at once, naming the address, instead of after the deadline.
fn platform_answers(platform: &str) -> CliResult<()> {
    let url = url::Url::parse(platform).map_err(|e| format!("--platform {platform}: {e}"))?;
    let addrs = url
        .socket_addrs(|| Some(80))
        .map_err(|e| crate::exit::runtime(format!("the platform {platform}: {e}")))?;
    let mut last = None;
    for a in addrs {
        match std::net::TcpStream::connect_timeout(&a, Duration::from_secs(5)) {
            Ok(_) => return Ok(()),
            Err(e) => last = Some(format!("{a}: {e}")),
        }
    }
    Err(crate::exit::runtime(format!(
        "the platform {platform} does not answer ({}): check --platform",
        last.unwrap_or_else(|| "no address".into())
    )))
}

fn exit_code(r: &Value) -> i32 {
    let ok = r["verified"].as_bool() == Some(true)
        && matches!(r["status"].as_str(), Some("delivered" | "verified"));
    if ok { 0 } else { 1 }
}

/// Polls with a received ticket, then decrypts, verifies and unpacks.
#[allow(clippy::too_many_arguments)]
async fn collect(
    sp: &SpConfig,
    cfg: &Resolved,
    r: Received,
    requested: Option<&[ResourceId]>,
    opts: PollOptions,
    progress: &Progress,
    out: &Path,
    force: bool,
) -> CliResult<Value> {
    let key = match r.content {
        ReceivedContent::SecretKey(k) => k,
        ReceivedContent::UnableToDeliver(ids) => {
            let ids: Vec<&str> = ids.iter().map(ResourceId::as_str).collect();
            return Ok(json!({
                "tx_id": r.tx_id.as_str(),
                "status": "undeliverable",
                "verified": false,
                "unable_to_deliver": ids,
                "polls": 0,
                "error": {"kind": "unable_to_deliver", "message": format!(
                    "the platform could not deliver {} (unable_to_deliver): the ticket will never yield data",
                    ids.join(", "))},
            }));
        }
    };
    platform_answers(&sp.platform_url)?;
    let api = MyDataApi::new(&sp.platform_url, opts);
    progress.line(&format!("polling {} for tx_id {}", api.data_url(), r.tx_id));
    progress.status("polling".into());
    let timer = CountdownTimer {
        progress: progress.clone(),
    };
    let mut polls = 0u32;
    let got = api
        .poll_observed(
            &r.permission_ticket,
            Some(&r.tx_id),
            &timer,
            &CancelToken::new(),
            |n, answer| {
                polls = n;
                progress.line(&describe(n, answer));
            },
        )
        .await;
    let mut report = json!({
        "tx_id": r.tx_id.as_str(),
        "packaging_mode": mode_json(cfg.packaging),
        "polls": polls,
        "out": out,
    });
    let jwe = match got {
        Ok(j) => j,
        Err(e) => {
            report["status"] = json!(poll_status(&e));
            report["verified"] = json!(false);
            report["http_status"] = json!(e.api_status().map(|s| s.wire()));
            report["error"] = json!({"kind": e.kind(), "message": e.to_string()});
            return Ok(report);
        }
    };
    report["status"] = json!("delivered");
    let zip = match package::decrypt(&jwe, &key, sp.jwe_mode, &sp.client_id, None) {
        Ok(z) => z,
        Err(e) => {
            report["verified"] = json!(false);
            report["error"] = error_json(&e);
            return Ok(report);
        }
    };
    // The package is served once: keep it, whatever verification says.
    let zip_path = out.join(PACKAGE_ZIP);
    write_file(&zip_path, &zip, force)?;
    report["package"] = json!(zip_path);
    fill_verification(&mut report, &zip, cfg, requested, Some(out), force)?;
    Ok(report)
}

/// Verifies `zip`, and records the outcome and the datasets (unpacked into `out` when given)
/// in `report`.
fn fill_verification(
    report: &mut Value,
    zip: &[u8],
    cfg: &Resolved,
    requested: Option<&[ResourceId]>,
    out: Option<&Path>,
    force: bool,
) -> CliResult<()> {
    match package::verify(zip, &cfg.expectations(requested)) {
        Ok(d) => {
            let verified = d.verified();
            report["verified"] = json!(verified);
            report["datasets"] = json!(datasets_json(&d, out, force)?);
            if let Some(e) = d.first_failure() {
                report["error"] = error_json(e);
            }
            debug_assert!(verified || !report["error"].is_null());
        }
        Err(e) => {
            report["verified"] = json!(false);
            report["error"] = error_json(&e);
        }
    }
    Ok(())
}

/// Runs `mydata sp verify`.
pub fn verify(a: VerifyArgs) -> CliResult<i32> {
    let cfg = resolve(&a.creds, "")?;
    let bytes = std::fs::read(&a.package)
        .map_err(|e| crate::exit::runtime(format!("--package {}: {e}", a.package.display())))?;
    if let Some(o) = &a.out {
        prepare_out(o, a.force)?;
    }
    let is_zip = bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(b"PK\x05\x06");
    let mut report = json!({
        "package_file": a.package,
        "format": if is_zip { "zip" } else { "jwe" },
        "packaging_mode": mode_json(cfg.packaging),
        "out": a.out,
    });
    let zip = if is_zip {
        if a.secret_key.is_some() || a.delivery.is_some() {
            return Err(format!(
                "{} is already a zip: --secret-key and --delivery are for a JWE",
                a.package.display()
            )
            .into());
        }
        if matches!(
            mydata_protocol::package::detect(std::io::Cursor::new(&bytes)),
            Ok(mydata_protocol::package::PackageKind::Dp)
        ) {
            return Err(format!(
                "{} is a DP package (one dataset), not the SP package: verify it with \
                 `mydata package verify`",
                a.package.display()
            )
            .into());
        }
        bytes
    } else {
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| format!("{}: neither a zip nor a JWE text", a.package.display()))?
            .trim();
        let received = match (&a.secret_key, &a.delivery) {
            (Some(k), None) => {
                // The ticket is not used here; a syntactically valid one lets the receiver
                // decrypt the key exactly as it does for a live SP-API call.
                let tx = a.tx_id.as_deref().unwrap_or("mydata-sp-verify");
                let placeholder = PermissionTicket::generate()?;
                received_from_flags(cfg.sp()?, placeholder.as_str(), tx, k)?
            }
            (None, Some(p)) => read_delivery(cfg.sp()?, p)?,
            (Some(_), Some(_)) => return Err("give --secret-key or --delivery, not both".into()),
            (None, None) => {
                return Err(format!(
                    "{} is a JWE: give --secret-key (as received) or --delivery FILE, with the \
                     credentials (or --sandbox-sp 1|2)",
                    a.package.display()
                )
                .into());
            }
        };
        let r = match received {
            Ok(r) => r,
            Err(e) => {
                let r = refused_json(&e);
                print_report(&r, a.json)?;
                return Ok(1);
            }
        };
        if a.tx_id.is_some() || a.delivery.is_some() {
            report["tx_id"] = json!(r.tx_id.as_str());
        }
        let Some(key) = r.secret_key() else {
            let r = json!({"status": "undeliverable", "verified": false,
                "error": {"kind": "unable_to_deliver", "message": "the SP-API body carries unable_to_deliver, not a secret_key"}});
            print_report(&r, a.json)?;
            return Ok(1);
        };
        let client_id = cfg
            .client_id
            .as_ref()
            .ok_or("give --client-id (or --sandbox-sp 1|2) to decrypt a JWE")?;
        match package::decrypt(text, key, cfg.jwe, client_id, None) {
            Ok(z) => z,
            Err(e) => {
                report["status"] = json!("failed");
                report["verified"] = json!(false);
                report["error"] = error_json(&e);
                print_report(&report, a.json)?;
                return Ok(1);
            }
        }
    };
    fill_verification(&mut report, &zip, &cfg, None, a.out.as_deref(), a.force)?;
    let ok = report["verified"].as_bool() == Some(true);
    report["status"] = json!(if ok { "verified" } else { "failed" });
    print_report(&report, a.json)?;
    Ok(exit_code(&report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_names_stay_inside() {
        assert_eq!(
            safe_relative("data/a.json"),
            Some(PathBuf::from("data").join("a.json"))
        );
        assert_eq!(
            safe_relative("API.ABCDEFGHIJ"),
            Some(PathBuf::from("API.ABCDEFGHIJ"))
        );
        for bad in [
            "",
            "..",
            "../x",
            "a/../../x",
            "/etc/passwd",
            "a//b",
            "./a",
            "a/.",
            "c:x",
            "a\\b",
            "a\0b",
        ] {
            assert_eq!(safe_relative(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn sandbox_presets() {
        let c = Credentials {
            sandbox: Some(2),
            client_id: None,
            client_secret: None,
            cbc_iv: None,
            jwe: None,
            packaging: None,
            api_key: None,
            platform: None,
            trust: Vec::new(),
        };
        let r = resolve(&c, "").unwrap();
        let sp = r.sp().unwrap();
        assert_eq!(sp.client_id.as_str(), "CLI.SANDBOX002");
        assert_eq!(sp.jwe_mode, JweMode::Gcm);
        assert_eq!(r.packaging, Some(PackagingMode::B));
        assert_eq!(sp.platform_url, SANDBOX_PLATFORM);
        assert_eq!(
            sp.api_key.as_deref(),
            Some("SandboxApiKey0000000000000000002")
        );
        // Without presets, trust anchors are required.
        let none = Credentials { sandbox: None, ..c };
        assert!(resolve(&none, "").is_err());
    }

    #[test]
    fn out_dir_is_refused_when_not_empty() {
        let d = tempfile::tempdir().unwrap();
        let sub = d.path().join("new");
        prepare_out(&sub, false).unwrap();
        assert!(sub.is_dir());
        std::fs::write(sub.join("x"), b"1").unwrap();
        assert!(prepare_out(&sub, false).is_err());
        prepare_out(&sub, true).unwrap();
        assert!(write_file(&sub.join("x"), b"2", false).is_err());
        write_file(&sub.join("x"), b"2", true).unwrap();
        assert_eq!(std::fs::read(sub.join("x")).unwrap(), b"2");
    }

    /// `--out` holds personal data: directories 0700 and files 0600 whatever the umask
    /// (the test runs under the usual 022, which would leave 0755 and 0644).
    #[cfg(unix)]
    #[test]
    fn unpacked_files_are_owner_only() {
        let mode = |p: &Path| mydata_server::datadir::mode_of(p).unwrap();
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("out");
        prepare_out(&out, false).unwrap();
        let file = out.join("API.X/household.json");
        write_file(&file, b"{}", false).unwrap();
        assert_eq!(mode(&out), 0o700);
        assert_eq!(mode(file.parent().unwrap()), 0o700);
        assert_eq!(mode(&file), 0o600);
    }
}
