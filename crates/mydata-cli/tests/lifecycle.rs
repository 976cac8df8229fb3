//! Registrations after they are made (issue 14 item 5), on the real binary: `mydata sp|dp
//! suspend|resume|delete|rotate`, followed by a running server; and the sandbox's
//! registrations, whose credentials are public, not served when the same data directory is
//! started without `--sandbox`.

use std::io::{Read, Write};
use std::net::TcpStream;
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

fn op(dir: &Path, args: &[&str]) -> std::process::Output {
    bin()
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .output()
        .unwrap()
}

/// Sends fresh redirects of `cfg` until `done(status, Location)` holds (a running server
/// re-reads registrations within 2 s); fails the test after 60 s. The last status and
/// `Location`.
fn redirect_until(
    cfg: &mydata_sp::SpConfig,
    list: &ResourceList,
    pid: &Pid,
    what: &str,
    done: impl Fn(u16, &str) -> bool,
) -> (u16, String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let redirect = cfg.redirect(&RedirectRequest::new(list, pid)).unwrap();
        let r = http("GET", &redirect.url, None, None);
        let location = r.header("location").unwrap_or_default().to_string();
        if done(r.status, &location) {
            return (r.status, location);
        }
        assert!(
            Instant::now() < deadline,
            "{what} not followed within 60 s: last answer {} {location} {}",
            r.status,
            r.body
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Whether a redirect's `Location` enters the platform's pages rather than going back to the
/// SP with a return code.
fn accepted(location: &str) -> bool {
    !location.is_empty() && !location.contains("code=")
}

fn op_json(dir: &Path, args: &[&str]) -> Value {
    let out = op(dir, args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn status_of(dir: &Path, what: &str, id_key: &str, id: &str) -> Option<String> {
    let list = op_json(dir, &[what, "list", "--json"]);
    list.as_array()
        .unwrap()
        .iter()
        .find(|r| r[id_key] == id)
        .map(|r| r["status"].as_str().unwrap().to_string())
}

#[test]
fn suspend_resume_rotate_delete() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let dp = op_json(
        &dir,
        &[
            "dp",
            "register",
            "--json",
            "--name",
            "d",
            "--provider",
            "p",
            "--scope",
            "x.read",
            "--endpoint",
            "https://127.0.0.1:9/dp",
            "--identity-method",
            "PII",
        ],
    );
    let rid = dp["resource_id"].as_str().unwrap().to_string();
    let sp = op_json(
        &dir,
        &[
            "sp",
            "register",
            "--json",
            "--name",
            "s",
            "--return-url",
            "https://s.test/r",
            "--sp-api-url",
            "https://s.test/a",
            "--dataset",
            &rid,
            "--allow-ip",
            "192.0.2.1",
        ],
    );
    let cid = sp["client_id"].as_str().unwrap().to_string();
    // Suspend and resume.
    let v = op_json(&dir, &["sp", "suspend", &cid, "--json"]);
    assert_eq!(v["status"], "suspended");
    assert_eq!(
        status_of(&dir, "sp", "client_id", &cid).unwrap(),
        "suspended"
    );
    op_json(&dir, &["sp", "resume", &cid, "--json"]);
    assert_eq!(status_of(&dir, "sp", "client_id", &cid).unwrap(), "active");
    let v = op_json(&dir, &["dp", "suspend", &rid, "--json"]);
    assert_eq!(v["status"], "stopped");
    op_json(&dir, &["dp", "resume", &rid, "--json"]);
    assert_eq!(
        status_of(&dir, "dp", "resource_id", &rid).unwrap(),
        "active"
    );
    // Rotate: new values, of the same shapes.
    let r = op_json(&dir, &["sp", "rotate", &cid, "--json"]);
    assert_eq!(r["client_id"], cid.as_str());
    for k in ["client_secret", "cbc_iv", "api_key"] {
        assert_ne!(r[k], sp[k], "{k} rotated");
        assert_eq!(
            r[k].as_str().unwrap().len(),
            sp[k].as_str().unwrap().len(),
            "{k}"
        );
    }
    let r = op_json(&dir, &["dp", "rotate", &rid, "--json"]);
    assert_ne!(r["resource_secret"], dp["resource_secret"]);
    assert_eq!(r["resource_secret"].as_str().unwrap().len(), 16);
    // Delete: a dataset a service still requests is refused, naming the service.
    let out = op(&dir, &["dp", "delete", &rid]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&cid));
    op_json(&dir, &["sp", "delete", &cid, "--json"]);
    assert!(status_of(&dir, "sp", "client_id", &cid).is_none());
    op_json(&dir, &["dp", "delete", &rid, "--json"]);
    assert!(status_of(&dir, "dp", "resource_id", &rid).is_none());
    // Unknown ids: a usage error naming the id.
    for what in ["sp", "dp"] {
        for cmd in ["suspend", "resume", "delete", "rotate"] {
            let out = op(&dir, &[what, cmd, "API.ZZZZZZZZZZ"]);
            assert_eq!(out.status.code(), Some(2), "{what} {cmd}");
            assert!(
                String::from_utf8_lossy(&out.stderr).contains("API.ZZZZZZZZZZ"),
                "{what} {cmd}"
            );
        }
    }
}

/// A running server follows a suspension made by another process: the SP's redirect ends
/// with 423 (protocol.md §6), and after `resume` the citizen reaches the platform's pages.
#[test]
fn a_running_server_follows_a_suspension() {
    let ids = pii_instant_datasets();
    let p = start_platform();
    let (sp_port, _seen) = sp_stub();
    let creds = register(&p, sp_port, &ids[0], "a", "cbc");
    let cid = creds["client_id"].as_str().unwrap();
    let cfg = sp_config(&p, &creds, sp_port, JweMode::Cbc);
    let list = ResourceList::new(vec![ids[0].parse().unwrap()]).unwrap();
    let pid = Pid::parse_for(ApplicationMode::Person, CITIZEN).unwrap();
    op_json(&p.data_dir, &["sp", "suspend", cid, "--json"]);
    // Registrations are read again within 2 s (REGISTRATION_TTL): fresh redirects until one
    // ends with 423, rather than a fixed wait.
    let (status, location) = redirect_until(&cfg, &list, &pid, "the suspension", |_, l| {
        l.contains("code=423")
    });
    assert!(
        location.starts_with(&format!("http://127.0.0.1:{sp_port}/")),
        "back to the SP: {status} {location}"
    );
    op_json(&p.data_dir, &["sp", "resume", cid, "--json"]);
    redirect_until(&cfg, &list, &pid, "the resumption", |_, l| accepted(l));
    let redirect = cfg.redirect(&RedirectRequest::new(&list, &pid)).unwrap();
    let back = Browser::new(&p.url).consent(&redirect.url);
    assert!(back.contains("code=200"), "{back}");
}

fn serve(dir: &Path, sandbox: bool) -> (Kill, u16) {
    let (port, dp) = (free_port(), free_port());
    let mut cmd = bin();
    cmd.arg("serve")
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--sandbox-dp-url")
        .arg(format!("http://127.0.0.1:{dp}"))
        .arg("--data-dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if sandbox {
        cmd.arg("--sandbox");
    } else {
        cmd.arg("--dp-trust-anchors").arg(root_ca());
    }
    let mut child = Kill(cmd.spawn().unwrap());
    let start = Instant::now();
    loop {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.write_all(b"GET /.well-known/oauth-authorization-server HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            let mut out = String::new();
            if s.read_to_string(&mut out).is_ok() && out.starts_with("HTTP/1.1 200") {
                break;
            }
        }
        assert!(child.0.try_wait().unwrap().is_none(), "serve stopped");
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "serve did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    (child, port)
}

/// The sandbox's registrations (public credentials) are out of service when the data directory
/// is started without the sandbox, and back with it; a registration of the operator's own is
/// left alone.
#[test]
fn sandbox_registrations_are_not_served_without_the_sandbox() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let (s, _) = serve(&dir, true);
    drop(s);
    let own = op_json(
        &dir,
        &[
            "dp",
            "register",
            "--json",
            "--name",
            "own",
            "--provider",
            "p",
            "--scope",
            "x.read",
            "--endpoint",
            "https://127.0.0.1:9/dp",
            "--identity-method",
            "PII",
        ],
    );
    let own = own["resource_id"].as_str().unwrap().to_string();
    assert_eq!(
        status_of(&dir, "sp", "client_id", "CLI.SANDBOX001").unwrap(),
        "active"
    );
    let (s, port) = serve(&dir, false);
    assert_eq!(
        status_of(&dir, "sp", "client_id", "CLI.SANDBOX001").unwrap(),
        "suspended"
    );
    let dps = op_json(&dir, &["dp", "list", "--json"]);
    for d in dps.as_array().unwrap() {
        let want = if d["resource_id"] == own.as_str() {
            "active"
        } else {
            "stopped"
        };
        assert_eq!(d["status"], want, "{d}");
    }
    // The sandbox SP's redirect is refused with 423.
    let sandbox: Value = serde_json::from_str(mydata_server::platform::SANDBOX_SPS).unwrap();
    let s1 = &sandbox["sps"][0];
    let cfg = mydata_sp::SpConfig::new(
        format!("http://127.0.0.1:{port}"),
        s1["client_id"].as_str().unwrap().parse().unwrap(),
        s1["client_secret"].as_str().unwrap().parse().unwrap(),
        s1["cbc_iv"].as_str().unwrap().parse().unwrap(),
        s1["return_url"].as_str().unwrap(),
    );
    let list = ResourceList::new(vec!["API.ARPPI3VTCB".parse().unwrap()]).unwrap();
    let pid = Pid::parse_for(ApplicationMode::Person, CITIZEN).unwrap();
    let redirect = cfg.redirect(&RedirectRequest::new(&list, &pid)).unwrap();
    let r = http("GET", &redirect.url, None, None);
    let location = r.header("location").unwrap_or_default().to_string();
    assert!(
        location.contains("423") || r.body.contains("423"),
        "{} {location}",
        r.status
    );
    drop(s);
    let (s, _) = serve(&dir, true);
    assert_eq!(
        status_of(&dir, "sp", "client_id", "CLI.SANDBOX001").unwrap(),
        "active"
    );
    drop(s);
}

/// `mydata sp rotate` while the server runs: the new credentials work, the old ones no longer
/// do (their encrypted `pid` cannot be read, so the flow does not reach consent).
#[test]
fn a_running_server_takes_rotated_sp_credentials() {
    let ids = pii_instant_datasets();
    let p = start_platform();
    let (sp_port, _seen) = sp_stub();
    let creds = register(&p, sp_port, &ids[0], "a", "cbc");
    let cid = creds["client_id"].as_str().unwrap();
    let list = ResourceList::new(vec![ids[0].parse().unwrap()]).unwrap();
    let pid = Pid::parse_for(ApplicationMode::Person, CITIZEN).unwrap();
    let old = sp_config(&p, &creds, sp_port, JweMode::Cbc);
    let rotated = op_json(&p.data_dir, &["sp", "rotate", cid, "--json"]);
    let mut new_creds = creds.clone();
    for k in ["client_secret", "cbc_iv", "api_key"] {
        new_creds[k] = rotated[k].clone();
    }
    let new = sp_config(&p, &new_creds, sp_port, JweMode::Cbc);
    // Until the server re-reads the registration (within 2 s) the new pid does not decrypt.
    redirect_until(&new, &list, &pid, "the rotated credentials", |_, l| {
        accepted(l)
    });
    let redirect = new.redirect(&RedirectRequest::new(&list, &pid)).unwrap();
    let back = Browser::new(&p.url).consent(&redirect.url);
    assert!(back.contains("code=200"), "{back}");
    let redirect = old.redirect(&RedirectRequest::new(&list, &pid)).unwrap();
    let r = http("GET", &redirect.url, None, None);
    let location = r.header("location").unwrap_or_default().to_string();
    assert!(
        !location.contains("code=200") && (r.status >= 400 || location.contains("code=")),
        "the old credentials still work: {} {location}",
        r.status
    );
}
