//! Registrations and outgoing HTTPS on the real binary (issue 15 item 4, spec D49): outside the
//! sandbox `mydata sp|dp register` refuse plain `http://` SP-API URLs and DP endpoints with a
//! clear message and exit status 2; `--tls-ca FILE` stores the registration's own CA (PEM
//! checked); in the sandbox plain HTTP is accepted.

use std::path::Path;
use std::process::Output;

mod common;

use common::*;

fn op(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    bin()
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn dp_args<'a>(endpoint: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec![
        "dp",
        "register",
        "--json",
        "--name",
        "d",
        "--provider",
        "p",
        "--scope",
        "x.read",
        "--identity-method",
        "PII",
        "--endpoint",
        endpoint,
    ];
    a.extend_from_slice(extra);
    a
}

fn sp_args<'a>(sp_api_url: &'a str, rid: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec![
        "sp",
        "register",
        "--json",
        "--name",
        "s",
        "--return-url",
        "http://127.0.0.1:9/return",
        "--sp-api-url",
        sp_api_url,
        "--dataset",
        rid,
        "--allow-ip",
        "192.0.2.1",
    ];
    a.extend_from_slice(extra);
    a
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn plain_http_is_refused_outside_the_sandbox_and_a_pinned_ca_is_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/pki/tls/tls-root-ca.pem");
    let root = root.to_str().unwrap();
    let not_pem = tmp.path().join("not.pem");
    std::fs::write(&not_pem, "not a certificate").unwrap();

    let out = op(&dir, &[], &dp_args("http://127.0.0.1:9/dp", &[]));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let e = stderr(&out);
    assert!(e.contains("http://") && e.contains("sandbox"), "{e}");

    let out = op(
        &dir,
        &[],
        &dp_args(
            "https://127.0.0.1:9/dp",
            &["--tls-ca", not_pem.to_str().unwrap()],
        ),
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("tls_ca"), "{}", stderr(&out));

    let out = op(
        &dir,
        &[],
        &dp_args("https://127.0.0.1:9/dp", &["--tls-ca", root]),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let dp: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rid = dp["resource_id"].as_str().unwrap().to_string();

    let out = op(&dir, &[], &sp_args("http://127.0.0.1:9/sp-api", &rid, &[]));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("sp_api_url"), "{}", stderr(&out));
    let out = op(
        &dir,
        &[],
        &sp_args("https://127.0.0.1:9/sp-api", &rid, &["--tls-ca", root]),
    );
    assert!(out.status.success(), "{}", stderr(&out));

    // The sandbox keeps plain HTTP.
    let sandbox = [("MYDATA_SANDBOX", "true")];
    let out = op(&dir, &sandbox, &dp_args("http://127.0.0.1:9/dp", &[]));
    assert!(out.status.success(), "{}", stderr(&out));
    let out = op(
        &dir,
        &sandbox,
        &sp_args("http://127.0.0.1:9/sp-api", &rid, &[]),
    );
    assert!(out.status.success(), "{}", stderr(&out));
}
