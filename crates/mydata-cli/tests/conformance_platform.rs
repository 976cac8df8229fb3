//! `mydata conformance platform --sandbox` against the real `mydata serve --sandbox
//! --no-sandbox-dp --sandbox-clock` binary, over 127.0.0.1.

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

fn up(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = write!(
        s,
        "GET /.well-known/oauth-authorization-server HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    );
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.starts_with("HTTP/1.1 200")
}

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn mydata() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mydata"))
}

#[test]
fn the_suite_passes_against_mydata_serve_sandbox() {
    let dir = tempfile::tempdir().unwrap();
    let (p, d, s) = (free_port(), free_port(), free_port());
    let child = mydata()
        .args([
            "serve",
            "--sandbox",
            "--no-sandbox-dp",
            "--sandbox-clock",
            "--listen",
        ])
        .arg(format!("127.0.0.1:{p}"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("MYDATA_SANDBOX_DP_URL", format!("http://127.0.0.1:{d}"))
        .env("MYDATA_SANDBOX_SP_URL", format!("http://127.0.0.1:{s}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _guard = Kill(child);
    let start = Instant::now();
    while !up(p) {
        assert!(start.elapsed() < Duration::from_secs(120), "server not up");
        std::thread::sleep(Duration::from_millis(100));
    }
    let junit = dir.path().join("platform.xml");
    let out = mydata()
        .args(["conformance", "platform", "--sandbox", "--platform"])
        .arg(format!("http://127.0.0.1:{p}"))
        .arg("--sandbox-dp-url")
        .arg(format!("http://127.0.0.1:{d}"))
        .arg("--sandbox-sp-url")
        .arg(format!("http://127.0.0.1:{s}"))
        .arg("--junit")
        .arg(&junit)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("PASS  platform.retention.ticket_403_after_8h"),
        "{stdout}"
    );
    assert!(
        stdout.contains("PASS  platform.data.ticket_live_during_sp_api"),
        "{stdout}"
    );
    assert!(stdout.contains("0 failed, 0 skipped"), "{stdout}");
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains("tests=\"22\" failures=\"0\""), "{xml}");
    assert!(xml.contains("name=\"platform.data.one_shot_201\""), "{xml}");
}

#[test]
fn a_failing_run_usage_and_profile_errors_have_their_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on the platform port: every check fails, exit 1.
    let (p, d, s) = (free_port(), free_port(), free_port());
    let out = mydata()
        // The older flag names (`--url`, `--dp-url`, `--sp-url`) are kept as aliases.
        .args(["conformance", "platform", "--sandbox", "--url"])
        .arg(format!("http://127.0.0.1:{p}"))
        .arg("--dp-url")
        .arg(format!("http://127.0.0.1:{d}"))
        .arg("--sp-url")
        .arg(format!("http://127.0.0.1:{s}"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("FAIL  platform.redirect."));
    // Neither --profile nor --sandbox: usage, exit 2.
    let out = mydata().args(["conformance", "platform"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    // A malformed profile: exit 2 with the reason.
    let bad = dir.path().join("p.json");
    std::fs::write(&bad, "{\"platform_url\": 1}").unwrap();
    let out = mydata()
        .args(["conformance", "platform", "--profile"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("p.json"));
    // --sandbox-clock without --sandbox is refused.
    let out = mydata()
        .args(["serve", "--sandbox-clock", "--data-dir"])
        .arg(dir.path().join("d2"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--sandbox-clock"));
}
