//! The `mydata` command on the fixture packages: the "Done when" of the foundation issue.

use std::path::PathBuf;
use std::process::{Command, Output};

fn fixture(p: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures")
        .join(p)
        .to_string_lossy()
        .into_owned()
}

fn mydata(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mydata"))
        .args(args)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn fixture_package_prints_ok() {
    let o = mydata(&[
        "package",
        "verify",
        "--at",
        "2027-01-01",
        "--trust",
        &fixture("pki/sandbox-root-ca.pem"),
        &fixture("packages/sample-dp.zip"),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(stdout(&o).contains(": OK (1 files"), "{}", stdout(&o));
    assert!(stdout(&o).contains("household.json"));
}

#[test]
fn tampered_fixture_names_the_file() {
    let o = mydata(&[
        "package",
        "verify",
        "--at",
        "2027-01-01",
        &fixture("packages/sample-dp-tampered.zip"),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout(&o).contains("FAILED: household.json: digest mismatch"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn sp_fixture_verifies_every_dataset() {
    let o = mydata(&[
        "package",
        "verify",
        "--json",
        "--at",
        "2027-01-01",
        &fixture("packages/sample-sp.zip"),
    ]);
    assert_eq!(o.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["kind"], "sp");
    let codes: Vec<u64> = v["datasets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["code"].as_u64().unwrap())
        .collect();
    assert_eq!(codes, [200, 204, 504, 200]);
    // In 2037 the DP certificates have expired: the SP package reports it per dataset.
    let o = mydata(&[
        "package",
        "verify",
        "--json",
        "--at",
        "2037-01-01",
        &fixture("packages/sample-sp.zip"),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["datasets"][0]["error"]["kind"], "certificate_expired");
}

#[test]
fn usage_errors_exit_2_and_leave_nothing_behind() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("p.zip");
    let o = mydata(&[
        "package",
        "build",
        "--key",
        &fixture("pki/dp-moi.key"),
        "--cert",
        &fixture("pki/dp-moi.pem"),
        "-o",
        out.to_str().unwrap(),
        "../evil.json=/dev/null",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("../evil.json"));
    assert_eq!(
        std::fs::read_dir(d.path()).unwrap().count(),
        0,
        "no partial package left"
    );
    assert_eq!(mydata(&["package", "verify"]).status.code(), Some(2));
    let o = mydata(&[
        "param",
        "encrypt",
        "--secret",
        "short",
        "--iv",
        "0123456789abcdef",
        "x",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("16 bytes"));
    let o = mydata(&[
        "package",
        "verify",
        "--at",
        "tomorrow",
        &fixture("packages/sample-dp.zip"),
    ]);
    assert_eq!(o.status.code(), Some(2));
}

/// packages.md §6: the `--json` shape of a failed DP package, key for key (issue 20 item 12).
#[test]
fn failed_dp_package_json_has_the_documented_shape() {
    let o = mydata(&[
        "package",
        "verify",
        "--json",
        "--at",
        "2027-01-01",
        &fixture("packages/sample-dp-tampered.zip"),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let keys = |v: &serde_json::Value| -> Vec<String> {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(&v), ["chain_checked", "error", "kind", "ok"]);
    // No --trust: the output says the chain was not checked (issue 14).
    assert_eq!(v["chain_checked"], false);
    assert_eq!(
        (&v["ok"], &v["kind"]),
        (&serde_json::json!(false), &serde_json::json!("dp"))
    );
    assert_eq!(keys(&v["error"]), ["file", "kind", "message"]);
    assert_eq!(v["error"]["kind"], "digest_mismatch");
    assert_eq!(v["error"]["file"], "household.json");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("household.json")
    );
}
