//! `mydata conformance sp` against the example SP on 127.0.0.1: the example SP runs in this
//! test process, pointed at the address the `mydata` binary then plays the platform on.

use std::net::TcpListener;
use std::process::Command;

fn free_port() -> u16 {
    // Bound and released: the suite binds it again a moment later.
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[actix_web::test]
async fn passes_against_example_sp_and_writes_junit() {
    let suite = format!("127.0.0.1:{}", free_port());
    let sp_listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let sp_url = format!("http://{}", sp_listener.local_addr().unwrap());
    let cfg = example_sp::Config::sandbox002()
        .with_platform_url(format!("http://{suite}"))
        .with_public_url(&sp_url);
    let sp = example_sp::spawn_on(sp_listener, cfg).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let junit = dir.path().join("conformance-sp.xml");
    let args: Vec<String> = [
        "conformance",
        "sp",
        "--sp",
        &sp_url,
        "--listen",
        &suite,
        "--sandbox",
        "2",
        // The default (60 s, the rule's whole wait) is shown by `the_window_defaults_to_60_s`
        // and, end to end, by the library's tests; 5 s keeps this test quick.
        "--window",
        "5",
        "--junit",
        junit.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let out = actix_web::rt::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_mydata"))
            .args(&args)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    sp.stop().await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("20 checks: 20 passed, 0 failed, 0 skipped"),
        "{stdout}"
    );
    assert!(
        stdout.contains("PASS  sp.package.mode_mismatch"),
        "{stdout}"
    );
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains("tests=\"20\" failures=\"0\" errors=\"0\" skipped=\"0\""),
        "{xml}"
    );
    assert_eq!(xml.matches("<testcase ").count(), 20, "{xml}");
    assert!(xml.contains("name=\"sp.sp_api.bad_api_key\""), "{xml}");
}

#[actix_web::test]
async fn fails_with_status_1_when_the_sp_is_wrong() {
    // The example SP registered as CLI.SANDBOX001, the suite told it is CLI.SANDBOX002: the
    // redirect and everything encrypted disagree, so checks fail and the status is 1.
    let suite = format!("127.0.0.1:{}", free_port());
    let sp_listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let sp_url = format!("http://{}", sp_listener.local_addr().unwrap());
    let cfg = example_sp::Config::sandbox001()
        .with_platform_url(format!("http://{suite}"))
        .with_public_url(&sp_url);
    let sp = example_sp::spawn_on(sp_listener, cfg).await.unwrap();
    let args: Vec<String> = [
        "conformance",
        "sp",
        "--sp",
        &sp_url,
        "--listen",
        &suite,
        "--sandbox",
        "2",
        "--window",
        "0.2",
        "--quiet",
        "0.2",
        "--timeout",
        "1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let out = actix_web::rt::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_mydata"))
            .args(&args)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    sp.stop().await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("FAIL  sp.redirect.shape"), "{stdout}");
    assert!(stdout.contains("FAIL  sp.redirect.pid"), "{stdout}");
}

#[test]
fn usage_errors_exit_2() {
    for extra in [
        vec!["--sp", "ftp://x"],
        vec!["--sp", "http://127.0.0.1:1", "--resource", "API.2RXHOGTXIC"],
        vec!["--sp", "http://127.0.0.1:1", "--mode", "ecb"],
        vec!["--sp", "http://127.0.0.1:1", "--window", "-1"],
        vec!["--sp", "http://127.0.0.1:1", "--sandbox", "3"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_mydata"))
            .args(["conformance", "sp"])
            .args(&extra)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{extra:?}");
        assert!(!out.stderr.is_empty(), "{extra:?}");
    }
}

#[test]
fn the_window_defaults_to_60_s() {
    let out = Command::new(env!("CARGO_BIN_EXE_mydata"))
        .args(["conformance", "sp", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{help}");
    let window = help
        .split("--window")
        .nth(1)
        .and_then(|s| s.split("\n      --").next())
        .unwrap_or("");
    assert!(window.contains("[default: 60]"), "{help}");
}
