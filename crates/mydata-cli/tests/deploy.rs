//! The packaging in `deploy/` (issue 14 item 4), checked as far as this machine allows:
//!
//! - `deploy/mydata.service`: `systemd-analyze verify` when it is installed (a copy whose
//!   `ExecStart` names the binary under test, since verify requires it to exist), and its
//!   command line run against the real binary as `mydata config check` with the sample
//!   configuration (so a renamed flag breaks this test, not a server at boot);
//! - `deploy/Dockerfile`: no Docker daemon is assumed, so it is linted structurally: at least
//!   two named stages, a release build of `mydata` in the first, and a final stage that copies
//!   that binary and nothing else, runs as a non-root user and starts the binary; `hadolint`
//!   runs as well when installed.

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;

use common::bin;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn on_path(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The value of `key=` in the unit's `[section]` (the last one).
fn unit_value(unit: &str, section: &str, key: &str) -> Option<String> {
    let mut current = "";
    let mut found = None;
    for line in unit.lines().map(str::trim) {
        if line.starts_with('[') && line.ends_with(']') {
            current = line;
        } else if current == format!("[{section}]")
            && let Some(v) = line.strip_prefix(&format!("{key}="))
        {
            found = Some(v.to_string());
        }
    }
    found
}

#[test]
fn the_systemd_unit_is_valid() {
    let path = repo().join("deploy/mydata.service");
    let unit = std::fs::read_to_string(&path).unwrap();
    let user = unit_value(&unit, "Service", "User").expect("User=");
    assert!(!user.is_empty() && user != "root" && user != "0", "{user}");
    assert_eq!(
        unit_value(&unit, "Service", "StateDirectoryMode").as_deref(),
        Some("0700")
    );
    assert_eq!(
        unit_value(&unit, "Install", "WantedBy").as_deref(),
        Some("multi-user.target")
    );
    let exec = unit_value(&unit, "Service", "ExecStart").expect("ExecStart=");
    let mut words = exec.split_whitespace();
    assert_eq!(words.next(), Some("/usr/local/bin/mydata"));
    let args: Vec<&str> = words.collect();
    assert_eq!(args.first(), Some(&"serve"), "{exec}");
    // The same command line, as `config check`, with the sample configuration and the unit's
    // environment: the binary accepts it and the configuration would start.
    let sample = repo().join("examples/mydata.toml");
    let mut cmd = bin();
    cmd.args(["config", "check"]);
    let mut rest = args[1..].iter();
    while let Some(a) = rest.next() {
        if *a == "--config" {
            rest.next();
            cmd.arg("--config").arg(&sample);
        } else {
            cmd.arg(a);
        }
    }
    for line in unit.lines() {
        if let Some((k, v)) = line
            .trim()
            .strip_prefix("Environment=")
            .and_then(|e| e.split_once('='))
        {
            cmd.env(k, v);
        }
    }
    let out = cmd.output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !on_path("systemd-analyze") {
        eprintln!("skipped: systemd-analyze verify (systemd-analyze is not installed)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("mydata.service");
    std::fs::write(
        &copy,
        unit.replace("/usr/local/bin/mydata", env!("CARGO_BIN_EXE_mydata")),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .env("SYSTEMD_LOG_LEVEL", "warning")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    // Outside a booted systemd (a container), verify may not reach a manager; that is a
    // limitation of the machine, not of the unit, and is reported as a skip.
    if !out.status.success()
        && (err.contains("Failed to connect") || err.contains("System has not been booted"))
    {
        eprintln!("skipped: systemd-analyze verify cannot run here: {err}");
        return;
    }
    assert!(out.status.success(), "systemd-analyze verify: {err}");
    // Nothing said about our unit (other units of the machine may warn).
    let ours: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("mydata.service"))
        .collect();
    assert!(ours.is_empty(), "{ours:?}");
}

/// One instruction of a Dockerfile, continuation lines joined.
fn instructions(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut pending = String::new();
    for line in text.lines() {
        let t = line.trim();
        if pending.is_empty() && (t.is_empty() || t.starts_with('#')) {
            continue;
        }
        if let Some(cont) = t.strip_suffix('\\') {
            pending.push_str(cont);
            pending.push(' ');
            continue;
        }
        pending.push_str(t);
        let (op, rest) = pending.split_once(' ').unwrap_or((&pending, ""));
        out.push((op.to_ascii_uppercase(), rest.trim().to_string()));
        pending.clear();
    }
    out
}

#[test]
fn the_dockerfile_is_multi_stage_non_root_and_ships_the_binary_only() {
    let path = repo().join("deploy/Dockerfile");
    let text = std::fs::read_to_string(&path).unwrap();
    let ins = instructions(&text);
    // Stages: FROM … AS name.
    let stages: Vec<(usize, String)> = ins
        .iter()
        .enumerate()
        .filter(|(_, (op, _))| op == "FROM")
        .map(|(i, (_, rest))| {
            let words: Vec<&str> = rest.split_whitespace().collect();
            assert!(
                words.len() == 3 && words[1].eq_ignore_ascii_case("as"),
                "FROM without a stage name: {rest}"
            );
            (i, words[2].to_string())
        })
        .collect();
    assert!(stages.len() >= 2, "multi-stage: {stages:?}");
    let (build_at, build) = stages[0].clone();
    let (final_at, _) = stages[stages.len() - 1].clone();
    let build_part = &ins[build_at..final_at];
    assert!(
        build_part.iter().any(|(op, rest)| op == "RUN"
            && rest.contains("cargo build --release")
            && rest.contains("--bin mydata")),
        "the first stage builds the release binary"
    );
    let last = &ins[final_at..];
    // What the final stage brings in: the binary from the build stage, nothing else.
    let copies: Vec<&String> = last
        .iter()
        .filter(|(op, _)| op == "COPY" || op == "ADD")
        .map(|(_, rest)| rest)
        .collect();
    assert_eq!(copies.len(), 1, "{copies:?}");
    let words: Vec<&str> = copies[0].split_whitespace().collect();
    assert_eq!(
        words,
        [
            &format!("--from={build}") as &str,
            "/src/target/release/mydata",
            "/usr/local/bin/mydata"
        ]
    );
    // Runs as a non-root user, set after the last RUN.
    let user_at = last
        .iter()
        .rposition(|(op, _)| op == "USER")
        .expect("USER in the final stage");
    let user = &last[user_at].1;
    let name = user.split(':').next().unwrap_or("");
    assert!(!["root", "0", ""].contains(&name), "USER {user}");
    assert!(
        !last[user_at..].iter().any(|(op, _)| op == "RUN"),
        "nothing runs as root after USER"
    );
    let entry = last
        .iter()
        .rfind(|(op, _)| op == "ENTRYPOINT")
        .expect("ENTRYPOINT");
    assert_eq!(entry.1, r#"["/usr/local/bin/mydata"]"#);
    // The settings the image sets are settings of the binary.
    let env: Vec<&String> = last
        .iter()
        .filter(|(op, _)| op == "ENV")
        .map(|(_, r)| r)
        .collect();
    let mut cmd = bin();
    cmd.args(["config", "check", "--sandbox"]);
    for e in env {
        for pair in e.split_whitespace() {
            let (k, v) = pair.split_once('=').expect("ENV KEY=VALUE");
            assert!(k.starts_with("MYDATA_"), "{k}");
            cmd.env(k, v);
        }
    }
    let dir = tempfile::tempdir().unwrap();
    cmd.env("MYDATA_DATA_DIR", dir.path().join("d"));
    let out = cmd.output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // The build context leaves target/ out.
    let ignore = std::fs::read_to_string(repo().join(".dockerignore")).unwrap();
    assert!(ignore.lines().any(|l| l.trim_end_matches('/') == "target"));
    if on_path("hadolint") {
        let out = Command::new("hadolint").arg(&path).output().unwrap();
        assert!(
            out.status.success(),
            "hadolint: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    } else {
        eprintln!("skipped: hadolint (not installed)");
    }
}
