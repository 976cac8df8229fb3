//! `mydata card-agent` over real HTTP on 127.0.0.1: it signs a challenge so that the platform's
//! check (spec D51) accepts it, answers only the origins it was given, and locks the card after
//! three wrong PINs, also across a restart.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use mydata_protocol::certlogin::{Holders, Issuer, Issuers, verify};
use mydata_protocol::codes::IdentityMethod;
use mydata_protocol::date::UnixTime;

const CHALLENGE: &str = "q3xJ0u2b5mT8Zr1NcVh6Ws9LdYk4PaEg7BoRfUiQ0Tw";

fn identity(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/pki/identity")
        .join(name)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One HTTP/1.1 request; (status, headers and body as text).
fn http(port: u16, method: &str, path: &str, origin: Option<&str>, form: &str) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return (0, String::new());
    };
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let origin = origin.map_or(String::new(), |o| format!("Origin: {o}\r\n"));
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{origin}Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{form}",
        form.len()
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, out)
}

fn start(card: &Path, port: u16) -> Kill {
    let child = Command::new(env!("CARGO_BIN_EXE_mydata"))
        .args(["card-agent", "--card"])
        .arg(card)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .args(["--origin", "http://pages.example"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let guard = Kill(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    while http(port, "GET", "/", None, "").0 != 200 {
        assert!(Instant::now() < deadline, "the card agent did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    guard
}

fn signature_of(answer: &str) -> Vec<u8> {
    let body = &answer[answer.find("\r\n\r\n").unwrap() + 4..];
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    base64::engine::general_purpose::STANDARD
        .decode(v["signature"].as_str().unwrap())
        .unwrap()
}

#[test]
fn the_agent_signs_for_allowed_origins_and_locks_after_three_wrong_pins() {
    let dir = tempfile::tempdir().unwrap();
    let card = dir.path().join("card.p12");
    std::fs::copy(identity("cer-A120345672.p12"), &card).unwrap();
    let port = free_port();
    let agent = start(&card, port);
    let form = format!("challenge={CHALLENGE}&pin=123456");

    // Signed for an allowed origin, and the platform's check accepts the signature.
    let (status, answer) = http(port, "POST", "/sign", Some("http://pages.example"), &form);
    assert_eq!(status, 200, "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("access-control-allow-origin: http://pages.example"),
        "{answer}"
    );
    let mut issuers = Issuers::new();
    issuers.set(
        IdentityMethod::CitizenCertificate,
        Issuer::from_pem(
            &std::fs::read(identity("citizen-ca.pem")).unwrap(),
            &[&std::fs::read(identity("citizen-ca.crl")).unwrap()],
        )
        .unwrap(),
    );
    let holders =
        Holders::from_json(&std::fs::read_to_string(identity("certificates.json")).unwrap())
            .unwrap();
    let login = verify(
        IdentityMethod::CitizenCertificate,
        &signature_of(&answer),
        CHALLENGE,
        "A120345672",
        &issuers,
        &holders,
        UnixTime(1_798_761_600),
    )
    .unwrap();
    assert_eq!(login.holder, "A120345672");

    // Another origin's page gets nothing.
    let (status, _) = http(port, "POST", "/sign", Some("http://evil.example"), &form);
    assert_eq!(status, 403);
    // A malformed request.
    assert_eq!(http(port, "POST", "/sign", None, "challenge=&pin=").0, 400);

    // Three wrong PINs lock the card.
    let wrong = format!("challenge={CHALLENGE}&pin=000000");
    let (s1, a1) = http(port, "POST", "/sign", None, &wrong);
    assert_eq!(s1, 401);
    assert!(a1.contains("\"tries_left\":2"), "{a1}");
    assert_eq!(http(port, "POST", "/sign", None, &wrong).0, 401);
    assert_eq!(http(port, "POST", "/sign", None, &wrong).0, 423);
    assert_eq!(http(port, "POST", "/sign", None, &form).0, 423);
    drop(agent);

    // Still locked after a restart.
    let port = free_port();
    let _agent = start(&card, port);
    let (status, answer) = http(port, "GET", "/", None, "");
    assert_eq!(status, 200);
    assert!(answer.contains("\"locked\":true"), "{answer}");
    assert_eq!(http(port, "POST", "/sign", None, &form).0, 423);
}

#[test]
fn the_agent_listens_on_loopback_only_and_needs_a_card() {
    let out = Command::new(env!("CARGO_BIN_EXE_mydata"))
        .args(["card-agent", "--card"])
        .arg(identity("cer-A120345672.p12"))
        .args(["--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"));
    let out = Command::new(env!("CARGO_BIN_EXE_mydata"))
        .args(["card-agent", "--card", "/nonexistent/card.p12"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}
