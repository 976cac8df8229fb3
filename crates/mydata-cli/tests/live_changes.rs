//! Issue 12 against the real `mydata serve --sandbox` binary over HTTP on 127.0.0.1:
//!
//! - a dataset and an SP registered by separate `mydata dp register` / `mydata sp register`
//!   processes while the server runs are used at once, with no restart: the DP is called, its
//!   package verifies, and `txid_status` / `type_valid` follow the SP's transaction (SQLite and
//!   PostgreSQL);
//! - `kill -9` right after an SP-API call failed (410), then a restart: the ticket answers 403,
//!   `txid_status` stays 410, and no DP is called.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use actix_web::{App, HttpServer};
use mydata_dp::actix::DpApi;
use mydata_dp::{DataFile, DpService, Outcome, ResourceSecret, from_fn};
use mydata_protocol::flow::{ApplicationMode, Pid};
use mydata_protocol::jwe::JweMode;
use mydata_protocol::package::dp::DpSigner;
use mydata_protocol::resources::ResourceList;
use mydata_sp::redirect::RedirectRequest;
use serde_json::Value;

use common::{Browser, CITIZEN, Platform, bin, cred_args, run, sp_config, wait_for_body};

/// A DP of our own on `listener` for `resource_id` (endpoint `/dp/live`), introspecting at
/// `platform` with `secret` and signing with the sandbox DP key: how many calls it received.
fn start_dp(
    listener: TcpListener,
    platform: &str,
    resource_id: &str,
    secret: &str,
) -> Arc<AtomicUsize> {
    let pki = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/pki");
    let signer = DpSigner::from_pem(
        &std::fs::read(pki.join("dp-moi.key")).unwrap(),
        &std::fs::read(pki.join("dp-moi.pem")).unwrap(),
    )
    .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let service = DpService::builder(resource_id)
        .platform(platform, ResourceSecret::new(secret.to_string()))
        .signer(Arc::new(signer))
        .dataset(from_fn(move |call| {
            seen.fetch_add(1, Ordering::SeqCst);
            let doc = serde_json::json!({"uid": call.uid(), "record": "live registration"});
            Outcome::Ready(vec![DataFile::new("record.json", doc.to_string())])
        }))
        .build()
        .unwrap();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let api = DpApi::new(service);
            HttpServer::new(move || App::new().configure(api.configure("/dp/live")))
                .workers(1)
                .listen(listener)
                .unwrap()
                .run()
                .await
                .unwrap();
        });
    });
    calls
}

/// A dataset registered by `mydata dp register` (a separate process) while the server runs,
/// served by a DP of our own: how many calls that DP received.
fn live_dataset(p: &Platform, resource_id: &str, env: &[(&str, &str)]) -> Arc<AtomicUsize> {
    // The registration needs the endpoint and the DP needs the secret the registration prints:
    // the DP's port is bound first.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let reg = dp_register(
        p,
        resource_id,
        &format!("http://127.0.0.1:{port}/dp/live"),
        env,
    );
    let secret = reg["resource_secret"]
        .as_str()
        .unwrap_or_else(|| panic!("no resource_secret in {reg}"));
    start_dp(listener, &p.url, resource_id, secret)
}

/// `mydata dp register --json` from a separate process, into the running server's database.
fn dp_register(p: &Platform, resource_id: &str, endpoint: &str, env: &[(&str, &str)]) -> Value {
    let mut cmd = bin();
    cmd.args(["dp", "register", "--json", "--name", "即時登錄 live"])
        .args(["--provider", "測試機關", "--scope", "live.registration"])
        .args(["--endpoint", endpoint, "--identity-method", "PII"])
        .args(["--resource-id", resource_id])
        // The running server is the sandbox; its DP is plain HTTP on loopback (D49).
        .env("MYDATA_SANDBOX", "true");
    common::operator_json(p, cmd, env)
}

/// `mydata sp register --json` from a separate process for `resource_id`, with its SP-API at
/// `sp_port`.
fn sp_register(p: &Platform, sp_port: u16, resource_id: &str, env: &[(&str, &str)]) -> Value {
    common::register_with(p, sp_port, resource_id, "a", "cbc", env)
}

/// An SP registered for `resource_id` by a separate process, and its redirect for [`CITIZEN`]:
/// its credentials, `client_id`, the redirect and its `tx_id`.
fn new_sp_and_redirect(
    p: &Platform,
    sp_port: u16,
    resource_id: &str,
    env: &[(&str, &str)],
) -> (Value, String, mydata_sp::redirect::Redirect, String) {
    let creds = sp_register(p, sp_port, resource_id, env);
    let client_id = creds["client_id"].as_str().unwrap().to_string();
    let cfg = sp_config(p, &creds, sp_port, JweMode::Cbc);
    let list = ResourceList::new(vec![resource_id.parse().unwrap()]).unwrap();
    let pid = Pid::parse_for(ApplicationMode::Person, CITIZEN).unwrap();
    let redirect = cfg.redirect(&RedirectRequest::new(&list, &pid)).unwrap();
    let tx_id = redirect.tx_id.as_str().to_string();
    (creds, client_id, redirect, tx_id)
}

/// `GET {path}` on the platform with the given headers: status and body.
fn get(p: &Platform, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let port: u16 = p.url.rsplit(':').next().unwrap().parse().unwrap();
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text[9..12].parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The `code` member of `txid_status` for `tx_id` of `client_id`, or the HTTP status when
/// not 200.
fn txid_status(p: &Platform, client_id: &str, tx_id: &str) -> String {
    let (status, body) = get(
        p,
        "/service/txid_status",
        &[("tx_id", tx_id), ("client_id", client_id)],
    );
    if status != 200 {
        return format!("http {status}");
    }
    let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    v["code"].as_str().unwrap().to_string()
}

/// A PostgreSQL database of its own for one test, on `MYDATA_TEST_PG_URL` (tests/run.sh
/// starts one): its URL.
fn scratch_pg(name: &str) -> String {
    let base = std::env::var("MYDATA_TEST_PG_URL")
        .expect("MYDATA_TEST_PG_URL names a PostgreSQL whose user may create databases");
    let db = format!("mydata_live_{name}_{}", std::process::id());
    for sql in [
        format!("DROP DATABASE IF EXISTS {db}"),
        format!("CREATE DATABASE {db}"),
    ] {
        let out = Command::new("psql")
            .arg(&base)
            .args(["-v", "ON_ERROR_STOP=1", "-qc", &sql])
            .output()
            .expect("psql (PostgreSQL's client) is needed for the PostgreSQL tests");
        assert!(
            out.status.success(),
            "{sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (head, _) = base.rsplit_once('/').unwrap();
    format!("{head}/{db}")
}

fn registrations_by_another_process_are_followed(env: &[(&str, &str)]) {
    let p = common::start_platform_with(None, env);
    let (sp_port, seen) = common::sp_stub();
    let rid = "API.LIVEREG001";
    let calls = live_dataset(&p, rid, env);
    let (creds, client_id, redirect, tx_id) = new_sp_and_redirect(&p, sp_port, rid, env);
    assert_eq!(txid_status(&p, &client_id, &tx_id), "http 404");
    let mut browser = Browser::new(&p.url);
    let opened = browser.send("GET", &redirect.url, None);
    assert_eq!(opened.status, 303, "{opened:?}");
    assert_eq!(txid_status(&p, &client_id, &tx_id), "100");
    let back = browser.consent(&redirect.url);
    assert!(back.contains("code=200"), "{back}");
    let body = wait_for_body(&seen, 0);
    let delivery = p.data_dir.join("../delivery.json");
    std::fs::write(&delivery, &body).unwrap();
    let out = run(&[
        vec!["sp".to_string(), "fetch".into(), "--delivery".into()],
        vec![delivery.display().to_string()],
        vec![
            "--out".into(),
            p.data_dir.join("../out").display().to_string(),
            "--json".into(),
            "--max-wait".into(),
            "10".into(),
            "--deadline".into(),
            "180".into(),
        ],
        cred_args(&p, &creds, "cbc", "A"),
    ]
    .concat());
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", String::from_utf8_lossy(&out.stderr), p.log()));
    assert_eq!(v["status"], "delivered", "{v}\n{}", p.log());
    assert_eq!(v["verified"], true, "{v}");
    assert_eq!(v["datasets"][0]["code"], 200, "{v}");
    assert!(
        calls.load(Ordering::SeqCst) >= 1,
        "the new DP was never called"
    );
    // The MyData-API's status helpers know the new SP: taken, and the method used.
    assert_eq!(txid_status(&p, &client_id, &tx_id), "201");
    let (status, tv) = get(
        &p,
        "/service/type_valid",
        &[("tx_id", &tx_id), ("client_id", &client_id)],
    );
    assert_eq!(status, 200, "{tv}");
    let tv: Value = serde_json::from_str(&tv).unwrap();
    assert_eq!(
        (tv["type"].as_str(), tv["level"].as_u64()),
        (Some("PII"), Some(3))
    );
}

#[test]
fn registrations_by_another_process_are_followed_on_sqlite() {
    registrations_by_another_process_are_followed(&[]);
}

#[test]
fn registrations_by_another_process_are_followed_on_postgres() {
    let url = scratch_pg("reg");
    registrations_by_another_process_are_followed(&[("MYDATA_DATABASE_URL", &url)]);
}

#[test]
fn kill9_after_a_failed_sp_api_call_keeps_the_ticket_withdrawn() {
    // A long write-behind window: an ending that is only queued would be lost by the kill.
    let env = [("MYDATA_WRITE_BEHIND_MS", "1000")];
    let mut p = common::start_platform_with(None, &env);
    let (sp_port, seen) = common::sp_stub_answering(500);
    let rid = "API.KILLNINE01";
    let calls = live_dataset(&p, rid, &env);
    let (_, client_id, redirect, tx_id) = new_sp_and_redirect(&p, sp_port, rid, &env);
    let back = Browser::new(&p.url).consent(&redirect.url);
    assert!(back.contains("code=410"), "{back}");
    // The SP received the ticket before it answered 500.
    let body: Value = serde_json::from_str(&wait_for_body(&seen, 0)).unwrap();
    let ticket = body["permission_ticket"].as_str().unwrap().to_string();

    p.kill9_and_restart();
    let log = p.log();
    assert!(
        !log.contains("resumed"),
        "a transaction was resumed:\n{log}"
    );
    let (status, _) = get(&p, "/service/data", &[("permission_ticket", &ticket)]);
    assert_eq!(status, 403, "the withdrawn ticket came back:\n{log}");
    assert_eq!(txid_status(&p, &client_id, &tx_id), "410");
    // Its DP is never called, before or after the restart (a restart that resumed the
    // transaction would call it at once; two seconds are given for that to show).
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        assert_eq!(calls.load(Ordering::SeqCst), 0, "{}", p.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    assert!(!p.log().contains("resumed"), "{}", p.log());
}
