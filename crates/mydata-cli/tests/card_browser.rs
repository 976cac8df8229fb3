//! A citizen certificate login in headless Chromium with JavaScript on (spec D51): `mydata serve
//! --sandbox` offering `mydata card-agent` (`card_agent_url`), the agent holding a sandbox card,
//! `mydata sp fetch --listen` playing the SP; the page's script asks the agent to sign (a wrong
//! PIN first), the signature logs the citizen in, and the package is delivered and verified.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

fn python() -> PathBuf {
    if let Ok(p) = std::env::var("MYDATA_PYTHON") {
        return p.into();
    }
    let venv =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/interop-venv/bin/python");
    assert!(
        venv.exists(),
        "the interop peers need the Python venv: run `bash tests/run.sh`"
    );
    venv
}

fn interop(script: &str) -> PathBuf {
    std::env::var("MYDATA_INTEROP_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/interop"))
        .join(script)
}

#[test]
fn a_citizen_certificate_through_the_card_agent_in_headless_chromium() {
    let agent_port = free_port();
    let agent_url = format!("http://127.0.0.1:{agent_port}");
    let p = start_platform_with(None, &[("MYDATA_CARD_AGENT_URL", agent_url.as_str())]);

    // The agent with a copy of the sandbox card (its wrong-PIN count is written beside it).
    let dir = tempfile::tempdir().unwrap();
    let card = dir.path().join("card.p12");
    std::fs::copy(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../fixtures/pki/identity/cer-A120345672.p12"),
        &card,
    )
    .unwrap();
    let _agent = Kill(
        bin()
            .args(["card-agent", "--card"])
            .arg(&card)
            .arg("--listen")
            .arg(format!("127.0.0.1:{agent_port}"))
            .args(["--origin", &p.url])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", agent_port)).is_err() {
        assert!(Instant::now() < deadline, "the card agent did not start");
        std::thread::sleep(Duration::from_millis(100));
    }

    // The SP: `mydata sp fetch --listen`, for a dataset that takes CER (and TFD) only.
    let rid = "API.ARPPI3VTCB";
    let port = free_port();
    let creds = register(&p, port, rid, "a", "cbc");
    let out_dir = dir.path().join("out");
    let child = bin()
        .args(["sp", "fetch", "--json", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .args([
            "--pid",
            CITIZEN,
            "--resource",
            rid,
            "--max-wait",
            "1",
            "--out",
        ])
        .arg(&out_dir)
        .args(cred_args(&p, &creds, "cbc", "A"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut fetch = Kill(child);
    let stderr = fetch.0.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { return };
            if line.starts_with("http://") {
                let _ = tx.send(line);
            }
        }
    });
    let url = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("sp fetch printed no redirect URL");

    // The browser: a wrong PIN, then the right one.
    let args = serde_json::json!({
        "url": url,
        "national_id": CITIZEN,
        "birth_date": "0770101",
        "pins": ["000000", "123456"],
        "wait_for": "/return",
    });
    let out = std::process::Command::new(python())
        .arg(interop("card_flow.py"))
        .arg(args.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "card_flow.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        r["steps"],
        serde_json::json!(["terms", "basic", "identity", "consent"]),
        "{r}"
    );
    assert!(
        r["statuses"][0].as_str().unwrap().contains("2 tries left"),
        "{r}"
    );
    assert!(
        r["final_url"]
            .as_str()
            .unwrap()
            .starts_with(&format!("http://127.0.0.1:{port}/return?")),
        "{r}"
    );

    // The SP collected and verified the package.
    let start = Instant::now();
    let status = loop {
        if let Some(s) = fetch.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "sp fetch did not finish"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut stdout = Vec::new();
    fetch
        .0
        .stdout
        .take()
        .unwrap()
        .read_to_end(&mut stdout)
        .unwrap();
    let v: Value = serde_json::from_slice(&stdout).unwrap();
    assert_eq!(status.code(), Some(0), "{v}");
    assert_eq!(v["status"], "delivered", "{v}");
    // type_valid tells the SP the method: a citizen certificate, wire level 0 (§8.4).
    let tx_id = url
        .split('?')
        .next()
        .and_then(|path| path.rsplit('/').next())
        .unwrap()
        .to_string();
    let base = url::Url::parse(&p.url).unwrap();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", base.port().unwrap())).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    use std::io::Write as _;
    write!(
        s,
        "GET /service/type_valid HTTP/1.1\r\nHost: 127.0.0.1\r\ntx_id: {tx_id}\r\nclient_id: {}\r\nConnection: close\r\n\r\n",
        creds["client_id"].as_str().unwrap()
    )
    .unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"type\":\"CER\""), "{answer}");
    assert!(answer.contains("\"level\":0"), "{answer}");
}
