//! `mydata serve --sandbox` as a newcomer runs it: the platform and the sandbox DP in one
//! process, answering over real HTTP on 127.0.0.1; the operator commands see the sandbox
//! registrations.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let status = out.split(' ').nth(1)?.parse().ok()?;
    let body = out.split_once("\r\n\r\n").map(|x| x.1.to_string())?;
    Some((status, body))
}

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn serve_sandbox_runs_platform_and_sandbox_dp() {
    // The data directory is created by `mydata` (0700; a temporary directory is 0755 under
    // the usual umask, and would be refused, spec D48).
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let (p, d) = (free_port(), free_port());
    let child = Command::new(env!("CARGO_BIN_EXE_mydata"))
        .args(["serve", "--sandbox", "--listen"])
        .arg(format!("127.0.0.1:{p}"))
        .arg("--data-dir")
        .arg(&dir)
        .env("MYDATA_SANDBOX_DP_URL", format!("http://127.0.0.1:{d}"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _guard = Kill(child);
    let start = Instant::now();
    let meta = loop {
        if let Some(r) = get(p, "/.well-known/oauth-authorization-server") {
            break r;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "server did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(meta.0, 200);
    let v: serde_json::Value = serde_json::from_str(&meta.1).unwrap();
    assert_eq!(
        v["introspection_endpoint"],
        format!("http://127.0.0.1:{p}/connect/introspect")
    );
    // The sandbox DP answers its heartbeat, and refuses a call without a token.
    let (s, _) = get(d, "/dp/API.ARPPI3VTCB?heartbeat=true").unwrap();
    assert_eq!(s, 200);
    let (s, _) = get(
        d,
        "/dp/API.ARPPI3VTCB?transaction_uid=0b7c7e0e-5d7a-4c1f-8e55-7f4a3b2c1d01",
    )
    .unwrap();
    assert_eq!(s, 401);
    // The operator commands read the same data directory.
    let out = Command::new(env!("CARGO_BIN_EXE_mydata"))
        .args(["sp", "list", "--json", "--data-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sps: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids: Vec<&str> = sps
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["client_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["CLI.SANDBOX001", "CLI.SANDBOX002"]);
    let out = Command::new(env!("CARGO_BIN_EXE_mydata"))
        .args(["dp", "list", "--json", "--data-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    let dps: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(dps.as_array().unwrap().len(), 105);
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("secret"),
        "no secret or hash is listed"
    );
}

#[test]
fn operator_register_and_list() {
    // The data directory is created by `mydata` (0700; a temporary directory is 0755 under
    // the usual umask, and would be refused, spec D48).
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_mydata"))
            .args(args)
            .arg("--data-dir")
            .arg(&dir)
            .output()
            .unwrap()
    };
    let out = run(&[
        "dp",
        "register",
        "--json",
        "--name",
        "戶籍謄本",
        "--provider",
        "內政部",
        "--scope",
        "moi.household.read",
        "--endpoint",
        "https://127.0.0.1:9/dp",
        "--identity-method",
        "pii",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dp: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rid = dp["resource_id"].as_str().unwrap().to_string();
    let secret = dp["resource_secret"].as_str().unwrap().to_string();
    assert!(rid.starts_with("API.") && rid.len() == 14);
    assert_eq!(secret.len(), 16);
    let out = run(&[
        "sp",
        "register",
        "--json",
        "--name",
        "Taipei",
        "--return-url",
        "https://sp.example.test/return",
        "--sp-api-url",
        "https://sp.example.test/sp-api",
        "--dataset",
        &rid,
        "--allow-ip",
        "192.0.2.10",
        "--packaging",
        "b",
        "--jwe",
        "gcm",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sp: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(sp["client_id"].as_str().unwrap().starts_with("CLI."));
    assert_eq!(sp["cbc_iv"].as_str().unwrap().len(), 16);
    assert_eq!(sp["api_key"].as_str().unwrap().len(), 32);
    // An unknown dataset and a bad URL are refused with a message, nothing registered.
    let out = run(&[
        "sp",
        "register",
        "--name",
        "X",
        "--return-url",
        "ftp://x",
        "--sp-api-url",
        "https://x.test/a",
        "--dataset",
        &rid,
        "--allow-ip",
        "192.0.2.1",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("return_url"));
    let out = run(&[
        "sp",
        "register",
        "--name",
        "X",
        "--return-url",
        "https://x.test/r",
        "--sp-api-url",
        "https://x.test/a",
        "--dataset",
        "API.ZZZZZZZZZZ",
        "--allow-ip",
        "192.0.2.1",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let out = run(&["sp", "list", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["packaging_mode"], "B");
    // No secret in the database or the listing.
    let mut db = std::fs::read(dir.join("mydata.sqlite")).unwrap();
    db.extend(std::fs::read(dir.join("mydata.sqlite-wal")).unwrap_or_default());
    let holds = |s: &str| {
        assert!(!s.is_empty(), "an empty needle");
        db.windows(s.len()).any(|w| w == s.as_bytes())
    };
    // Control: the same search finds what the registrations did store, in the same bytes.
    for s in [
        rid.as_str(),
        sp["client_id"].as_str().unwrap(),
        "https://sp.example.test/sp-api",
    ] {
        assert!(holds(s), "control: {s} not found in the database");
    }
    assert_eq!(sp["client_secret"].as_str().unwrap().len(), 16);
    for s in [
        &secret,
        sp["client_secret"].as_str().unwrap(),
        sp["api_key"].as_str().unwrap(),
    ] {
        assert!(!holds(s), "{s} in the database");
    }
}

/// Registration refuses what D3 and D36 refuse (issue 20 item 9): a dataset without identity
/// methods or with an unknown one, a service of more than five datasets without a
/// justification, a service whose datasets share no identity method, and a dataset listed
/// twice. Each refusal exits 2 with a message and registers nothing.
#[test]
fn registration_refuses_what_d3_and_d36_refuse() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_mydata"))
            .args(args)
            .arg("--data-dir")
            .arg(&dir)
            .output()
            .unwrap()
    };
    let refused = |out: &std::process::Output, why: &str| {
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(why), "{why:?} not in {err}");
    };
    let dp = |methods: &[&str]| {
        let mut args = vec![
            "dp",
            "register",
            "--json",
            "--name",
            "資料",
            "--provider",
            "機關",
            "--scope",
            "test.read",
            "--endpoint",
            "https://127.0.0.1:9/dp",
        ];
        for m in methods {
            args.extend(["--identity-method", m]);
        }
        run(&args)
    };
    refused(&dp(&[]), "at least one identity method");
    refused(&dp(&["PII", "XYZ"]), "unknown identity method \"XYZ\"");
    let rid = |out: std::process::Output| -> String {
        assert!(out.status.success(), "{out:?}");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["resource_id"].as_str().unwrap().to_string()
    };
    let pii: Vec<String> = (0..6).map(|_| rid(dp(&["PII", "cer"]))).collect();
    let cer_only = rid(dp(&["CER"]));
    let otp_only = rid(dp(&["OTP"]));
    let sp = |datasets: &[&str], extra: &[&str]| {
        let mut args = vec![
            "sp",
            "register",
            "--json",
            "--name",
            "S",
            "--return-url",
            "https://s.test/r",
            "--sp-api-url",
            "https://s.test/a",
            "--allow-ip",
            "192.0.2.1",
        ];
        for d in datasets {
            args.extend(["--dataset", d]);
        }
        args.extend_from_slice(extra);
        run(&args)
    };
    let six: Vec<&str> = pii.iter().map(String::as_str).collect();
    refused(&sp(&six, &[]), "at most 5");
    refused(&sp(&six, &["--justification", "  "]), "at most 5");
    refused(&sp(&[&pii[0], &otp_only], &[]), "share no identity method");
    refused(&sp(&[&pii[0], &pii[0]], &[]), "listed twice");
    let list = |what: &str| -> usize {
        let out = run(&[what, "list", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v.as_array().unwrap().len()
    };
    assert_eq!(list("sp"), 0, "nothing registered by a refusal");
    assert_eq!(list("dp"), 8);
    // Allowed: five; six with a justification; datasets whose common method is CER.
    assert!(sp(&six[..5], &[]).status.success());
    let out = sp(
        &six,
        &[
            "--justification",
            "法定申辦文件共六項 / six documents by law",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    assert!(sp(&[&pii[1], &cer_only], &[]).status.success());
    assert_eq!(list("sp"), 3);
    // The stored codes are canonical.
    let out = run(&["dp", "list", "--json"]);
    let dps: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        dps.as_array()
            .unwrap()
            .iter()
            .any(|d| d["identity_methods"] == serde_json::json!(["PII", "CER"])),
        "{dps}"
    );
}
