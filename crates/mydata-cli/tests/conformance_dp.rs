//! `mydata conformance dp` as a command: the sandbox DP binary passes (exit 0, JUnit XML with
//! no failure), a DP that does not answer fails (exit 1), a bad profile is a usage error (exit 2).

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

/// Whether `GET /dp` on the port answers 200.
fn up(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = write!(
        s,
        "GET /dp HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
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
fn the_sandbox_dp_binary_passes_and_the_junit_file_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let (dp, suite) = (free_port(), free_port());
    let child = mydata()
        .args(["sandbox-dp", "--listen"])
        .arg(format!("127.0.0.1:{dp}"))
        .arg("--platform")
        .arg(format!("http://127.0.0.1:{suite}"))
        .args(["--introspection-cache-secs", "2"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _guard = Kill(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !up(dp) {
        assert!(Instant::now() < deadline, "the sandbox DP did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let junit = dir.path().join("dp.xml");
    let out = mydata()
        .args(["conformance", "dp", "--sandbox", "--dp-url"])
        .arg(format!("http://127.0.0.1:{dp}"))
        .arg("--platform-url")
        .arg(format!("http://127.0.0.1:{suite}"))
        .args(["--cache-secs", "2", "--junit"])
        .arg(&junit)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("18 checks: 16 passed, 0 failed, 2 skipped"),
        "{stdout}"
    );
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains("name=\"mydata-conformance.dp\""), "{xml}");
    assert!(
        xml.contains("tests=\"18\"") && xml.contains("failures=\"0\""),
        "{xml}"
    );
}

#[test]
fn nothing_answering_is_exit_1_and_a_bad_profile_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let out = mydata()
        .args(["conformance", "dp", "--sandbox", "--dp-url"])
        .arg(format!("http://127.0.0.1:{}", free_port()))
        .arg("--platform-url")
        .arg(format!("http://127.0.0.1:{}", free_port()))
        .args(["--cache-secs", "1"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("FAIL  dp.heartbeat"), "{stdout}");

    let profile = dir.path().join("p.json");
    std::fs::write(&profile, r#"{"platform_url": "http://127.0.0.1:1"}"#).unwrap();
    let out = mydata()
        .args(["conformance", "dp", "--profile"])
        .arg(&profile)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("missing field"), "{stderr}");

    let out = mydata()
        .args(["conformance", "dp", "--sandbox", "--cache-secs", "0"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("cache_secs"), "{stderr}");
}
