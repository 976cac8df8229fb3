//! Configuration that cannot disagree with itself (issue 14 item 3), on the real binary:
//! `MYDATA_LISTEN` alone moves the listener and the public URL, and the in-process sandbox DP
//! follows (a full flow succeeds); settings that disagree are refused at start; `mydata config
//! check` prints the effective configuration, secrets redacted, and its problems.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use mydata_protocol::flow::{ApplicationMode, Pid};
use mydata_protocol::jwe::JweMode;
use mydata_protocol::resources::ResourceList;
use mydata_sp::redirect::RedirectRequest;
use serde_json::Value;

mod common;

use common::*;

/// The regression of issue 14: with only `MYDATA_LISTEN` set (another port than the default),
/// the in-process sandbox DP used to introspect at the default public URL and every dataset
/// failed silently. Now a whole flow delivers a verified package.
#[test]
fn a_full_sandbox_flow_with_only_mydata_listen() {
    let ids = pii_instant_datasets();
    let rid = ids[0].as_str();
    let p = start_platform_listening_by_env();
    let meta = http(
        "GET",
        &format!("{}/.well-known/oauth-authorization-server", p.url),
        None,
        None,
    );
    let v: Value = serde_json::from_str(&meta.body).unwrap();
    assert_eq!(
        v["issuer"],
        p.url.as_str(),
        "public_url follows MYDATA_LISTEN"
    );
    let (sp_port, seen) = sp_stub();
    let creds = register(&p, sp_port, rid, "a", "cbc");
    let cfg = sp_config(&p, &creds, sp_port, JweMode::Cbc);
    let list = ResourceList::new(vec![rid.parse().unwrap()]).unwrap();
    let pid = Pid::parse_for(ApplicationMode::Person, CITIZEN).unwrap();
    let redirect = cfg.redirect(&RedirectRequest::new(&list, &pid)).unwrap();
    let back = Browser::new(&p.url).consent(&redirect.url);
    assert!(back.contains("code=200"), "{back}");
    let body = wait_for_body(&seen, 0);
    let work = tempfile::tempdir().unwrap();
    let delivery = work.path().join("delivery.json");
    std::fs::write(&delivery, &body).unwrap();
    let out_dir = work.path().join("out");
    let args = [
        vec!["sp".to_string(), "fetch".into(), "--delivery".into()],
        vec![delivery.display().to_string()],
        vec![
            "--out".into(),
            out_dir.display().to_string(),
            "--json".into(),
        ],
        vec!["--max-wait".into(), "1".into()],
        cred_args(&p, &creds, "cbc", "A"),
    ]
    .concat();
    let out = run(&args);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{v} {} / server: {}",
        String::from_utf8_lossy(&out.stderr),
        p.log()
    );
    assert_eq!(v["status"], "delivered");
    assert_eq!(v["verified"], true);
    let ds = &v["datasets"][0];
    assert_eq!(ds["resource_id"], rid);
    assert_eq!(ds["code"], 200, "{v}");
}

fn serve_refused(args: &[&str]) -> (Option<i32>, String) {
    let tmp = tempfile::tempdir().unwrap();
    let mut child = bin()
        .arg("serve")
        .args(args)
        .arg("--data-dir")
        .arg(tmp.path().join("data"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("mydata serve {args:?} started instead of refusing");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().unwrap();
    (
        status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Addresses that disagree are refused at start, naming the key; nothing listens.
#[test]
fn serve_refuses_disagreeing_addresses() {
    let (p, q) = (free_port(), free_port());
    let listen = format!("127.0.0.1:{p}");
    let public = format!("http://127.0.0.1:{q}");
    let (code, err) = serve_refused(&["--sandbox", "--listen", &listen, "--public-url", &public]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("public_url") && err.contains(&listen), "{err}");
    assert!(std::net::TcpStream::connect(("127.0.0.1", p)).is_err());
    // The same disagreement through the environment: same refusal.
    let tmp = tempfile::tempdir().unwrap();
    let out = bin()
        .args(["serve", "--sandbox", "--data-dir"])
        .arg(tmp.path().join("data"))
        .env("MYDATA_LISTEN", &listen)
        .env("MYDATA_PUBLIC_URL", &public)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("public_url"));
    // The sandbox DP on the platform's own port.
    let (code, err) = serve_refused(&[
        "--sandbox",
        "--listen",
        &listen,
        "--sandbox-dp-url",
        &format!("http://127.0.0.1:{p}"),
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("sandbox_dp_url"), "{err}");
    // The sandbox clock outside the sandbox.
    let (code, err) = serve_refused(&["--sandbox-clock", "--listen", &listen]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("sandbox_clock"), "{err}");
}

/// `mydata config check`: every key with its value and source, secrets redacted, problems
/// listed; 0 when serve would start, 1 when it would refuse.
#[test]
fn config_check_prints_the_effective_configuration() {
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/mydata.toml");
    let out = bin()
        .args(["config", "check", "--json", "--config"])
        .arg(&sample)
        .env(
            "MYDATA_DATABASE_URL",
            "postgres://mydata:hunter2@db.test/mydata",
        )
        .args(["--sms-webhook", "https://sms.test/send?token=s3cret"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        !text.contains("hunter2") && !text.contains("s3cret"),
        "{text}"
    );
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["ok"], true);
    let setting = |k: &str| -> Value {
        v["settings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["key"] == k)
            .cloned()
            .unwrap_or_else(|| panic!("{k} not listed"))
    };
    assert_eq!(setting("listen")["source"], "file");
    assert_eq!(setting("database_url")["source"], "env");
    assert_eq!(
        setting("database_url")["value"],
        "postgres://mydata:***@db.test/mydata"
    );
    assert_eq!(setting("sms_webhook")["source"], "flag");
    assert_eq!(
        v["settings"].as_array().unwrap().len(),
        mydata_server::config_layers::KEYS.len()
    );
    // Human output; a derived public URL; a wildcard listener warns.
    let out = bin()
        .args(["config", "check", "--sandbox", "--listen", "0.0.0.0:9555"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("public_url = \"http://127.0.0.1:9555\"  # derived"),
        "{text}"
    );
    assert!(text.contains("# warning: public_url"), "{text}");
    // Errors: exit 1, each named.
    let out = bin()
        .args(["config", "check", "--sandbox", "--listen", "127.0.0.1:9555"])
        .args(["--public-url", "http://localhost:9556"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("# error: public_url"), "{text}");
    // A value that does not load: exit 1, the flag named.
    let out = bin()
        .args(["config", "check", "--workers", "many"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("--workers"));
    // Outside the sandbox without trust anchors: refused.
    let out = bin().args(["config", "check"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("dp_trust_anchors"));
}
