//! HTTPS on the platform's own listener (spec D50, issue 15 item 3): TLS 1.2+ only, HSTS,
//! certificates reloaded for new connections while open ones keep theirs, and client
//! certificates pinned per SP on the MyData-API. Peers we did not write: the `openssl` CLI and
//! Python `requests`.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use mydata_server::platform::NewSp;
use openssl::ssl::{SslConnector, SslMethod, SslStream};
use openssl::x509::X509;
use serde_json::json;

fn pki(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/pki/tls")
        .join(name)
}

fn fingerprint_of(file: &str) -> String {
    let cert = X509::from_pem(&std::fs::read(pki(file)).unwrap()).unwrap();
    mydata_protocol::tls::acceptor::fingerprint(&cert)
}

/// A blocking TLS connection to the listener that trusts the sandbox TLS root.
fn connect(port: u16) -> SslStream<TcpStream> {
    let mut b = SslConnector::builder(SslMethod::tls_client()).unwrap();
    b.set_ca_file(pki("tls-root-ca.pem")).unwrap();
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    b.build().connect("localhost", tcp).unwrap()
}

/// One keep-alive `GET` on `s`: the status line and the headers, lower-cased; the body read.
fn get(s: &mut SslStream<TcpStream>, path: &str) -> String {
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap());
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    head
}

fn peer_fingerprint(s: &SslStream<TcpStream>) -> String {
    mydata_protocol::tls::acceptor::fingerprint(&s.ssl().peer_certificate().unwrap())
}

/// Runs `openssl s_client` against the listener with `extra` flags and no input.
fn s_client(port: u16, extra: &[&str]) -> (bool, String) {
    let out = std::process::Command::new("openssl")
        .args(["s_client", "-connect"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["-servername", "localhost", "-CAfile"])
        .arg(pki("tls-root-ca.pem"))
        .args(["-verify_return_error", "-verify_hostname", "localhost"])
        .args(extra)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("the openssl command-line tool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn tls_files(c: &mut mydata_server::config::Config, dir: &Path) {
    c.tls_cert = Some(dir.join("platform.pem"));
    c.tls_key = Some(dir.join("platform.key"));
    c.public_url = "https://localhost".into();
}

#[actix_web::test]
async fn the_listener_speaks_tls_1_3_refuses_1_1_and_sends_hsts() {
    let w = world_custom(&[], None, |c| tls_files(c, &pki(""))).await;
    assert!(w.srv.url.starts_with("https://"), "{}", w.srv.url);
    let port = w.srv.addr.port();
    let (ok, text) = actix_web::rt::task::spawn_blocking(move || s_client(port, &["-tls1_3"]))
        .await
        .unwrap();
    assert!(ok, "{text}");
    assert!(text.contains("TLSv1.3"), "{text}");
    assert!(text.contains("Verify return code: 0 (ok)"), "{text}");
    // A client offering TLS 1.1 only (its own security level lowered so that it does offer
    // it): the listener refuses.
    let (ok, text) = actix_web::rt::task::spawn_blocking(move || {
        s_client(port, &["-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"])
    })
    .await
    .unwrap();
    assert!(!ok, "TLS 1.1 accepted: {text}");
    assert!(text.contains("Cipher is (NONE)"), "{text}");
    let head = actix_web::rt::task::spawn_blocking(move || get(&mut connect(port), "/healthz"))
        .await
        .unwrap();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(
        head.contains("strict-transport-security: max-age=31536000"),
        "{head}"
    );
}

#[actix_web::test]
async fn a_new_certificate_serves_new_connections_while_open_ones_finish() {
    let files = tempfile::tempdir().unwrap();
    for f in ["platform.pem", "platform.key"] {
        std::fs::copy(pki(f), files.path().join(f)).unwrap();
    }
    let dir = files.path().to_path_buf();
    let w = world_custom(&[], None, |c| tls_files(c, &dir)).await;
    let port = w.srv.addr.port();
    let (old, new) = (
        fingerprint_of("platform.pem"),
        fingerprint_of("sandbox-dp.pem"),
    );
    let dir = files.path().to_path_buf();
    let (before, after, kept) = actix_web::rt::task::spawn_blocking(move || {
        let mut open = connect(port);
        assert!(get(&mut open, "/healthz").starts_with("http/1.1 200"));
        let before = peer_fingerprint(&open);
        // Another certificate for the same names: the key first, so that a look in between
        // sees a mismatch (refused, the old context stays) rather than a half.
        std::fs::copy(pki("sandbox-dp.key"), dir.join("platform.key")).unwrap();
        std::fs::copy(pki("sandbox-dp.pem"), dir.join("platform.pem")).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut after = before.clone();
        while after == before && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(250));
            // The open connection stays busy (keep-alive would close it when idle).
            assert!(get(&mut open, "/healthz").starts_with("http/1.1 200"));
            after = peer_fingerprint(&connect(port));
        }
        assert!(get(&mut open, "/healthz").starts_with("http/1.1 200"));
        (before, after, peer_fingerprint(&open))
    })
    .await
    .unwrap();
    assert_eq!(before, old);
    assert_eq!(after, new, "the new certificate was never served");
    assert_eq!(kept, old, "an open connection keeps its handshake");
}

#[actix_web::test]
async fn an_sp_with_certificate_pins_polls_only_with_its_certificate() {
    let w = world_custom(&[], None, |c| {
        tls_files(c, &pki(""));
        c.tls_client_ca = Some(pki("tls-root-ca.pem"));
    })
    .await;
    let ids = pii_datasets(1);
    let pinned = |pins: Vec<String>| {
        w.p.register_sp(NewSp {
            name: "mTLS SP".into(),
            purpose: "testing".into(),
            return_url: RETURN.into(),
            sp_api_url: w.sp_api_url.clone(),
            allowed_ips: vec!["127.0.0.0/24".parse().unwrap()],
            client_cert_sha256: pins,
            resources: ids.iter().map(|i| i.parse().unwrap()).collect(),
            ..NewSp::default()
        })
        .unwrap()
        .1
    };
    // The pin as `openssl x509 -fingerprint -sha256` prints it: upper case, colons.
    let out = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(pki("sp-client.pem"))
        .output()
        .unwrap();
    let printed = String::from_utf8(out.stdout).unwrap();
    let pin = printed.trim().rsplit('=').next().unwrap().to_string();
    assert!(pin.contains(':'), "{printed}");
    let creds = pinned(vec![pin]);
    let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    authenticated_tx(&w.p, "tx-mtls-1", &creds.client_id, "mtls-tx-1", &id_refs);
    let url = format!(
        "{}/service/txid_status",
        w.srv.url.replace("127.0.0.1", "localhost")
    );
    let poll = |cert: Option<&str>| {
        let mut args = json!({
            "url": url,
            "ca": pki("tls-root-ca.pem"),
            "headers": {"tx_id": "mtls-tx-1", "client_id": creds.client_id},
        });
        if let Some(c) = cert {
            args["cert"] = json!(pki(&format!("{c}.pem")));
            args["key"] = json!(pki(&format!("{c}.key")));
        }
        run_interop("mtls_poll.py", args)
    };
    let with = poll(Some("sp-client")).await;
    assert_eq!(with["status"], 200, "{with}");
    assert!(with["body"].as_str().unwrap().contains("100"), "{with}");
    // No certificate, or another one the CA issued: the transaction is not this caller's.
    let without = poll(None).await;
    assert_eq!(without["status"], 404, "{without}");
    let other = poll(Some("platform-client")).await;
    assert_eq!(other["status"], 404, "{other}");
    // A certificate of an untrusted CA, or an expired one: no handshake at all.
    for bad in ["untrusted-client", "expired-client"] {
        let r = poll(Some(bad)).await;
        assert!(
            r["error"].as_str().is_some_and(|e| e.contains("SSL")),
            "{bad}: {r}"
        );
    }
    // An SP without pins polls as before, certificate or not.
    let open = pinned(Vec::new());
    authenticated_tx(&w.p, "tx-mtls-2", &open.client_id, "mtls-tx-2", &id_refs);
    let r = run_interop(
        "mtls_poll.py",
        json!({
            "url": url,
            "ca": pki("tls-root-ca.pem"),
            "headers": {"tx_id": "mtls-tx-2", "client_id": open.client_id},
        }),
    )
    .await;
    assert_eq!(r["status"], 200, "{r}");
    // A malformed pin is refused at registration.
    let bad = w.p.register_sp(NewSp {
        name: "bad pin".into(),
        return_url: RETURN.into(),
        sp_api_url: w.sp_api_url.clone(),
        allowed_ips: vec!["127.0.0.1".parse().unwrap()],
        client_cert_sha256: vec!["abc".into()],
        resources: ids.iter().map(|i| i.parse().unwrap()).collect(),
        ..NewSp::default()
    });
    let e = bad.expect_err("a short pin is refused").to_string();
    assert!(e.contains("64 hex digits"), "{e}");
}

#[test]
fn certificate_and_key_that_do_not_match_stop_the_server_with_the_files_named() {
    let mut c = mydata_server::config::Config {
        tls_cert: Some(pki("platform.pem")),
        tls_key: Some(pki("sandbox-dp.key")),
        ..Default::default()
    };
    let e = mydata_server::http::tls::ListenerTls::from_config(&c)
        .err()
        .expect("refused")
        .to_string();
    assert!(
        e.contains("platform.pem") && e.contains("does not match"),
        "{e}"
    );
    c.tls_key = Some(pki("missing.key"));
    let e = mydata_server::http::tls::ListenerTls::from_config(&c)
        .err()
        .expect("refused")
        .to_string();
    assert!(e.contains("tls_key") && e.contains("missing.key"), "{e}");
}

#[actix_web::test]
async fn the_sandbox_serves_its_compiled_in_certificate_with_sandbox_tls() {
    let w = world_custom(&[], None, |c| c.sandbox_tls = true).await;
    assert!(w.srv.url.starts_with("https://"), "{}", w.srv.url);
    let port = w.srv.addr.port();
    let (head, fp) = actix_web::rt::task::spawn_blocking(move || {
        let mut s = connect(port);
        (get(&mut s, "/healthz"), peer_fingerprint(&s))
    })
    .await
    .unwrap();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(fp, fingerprint_of("platform.pem"));
}
