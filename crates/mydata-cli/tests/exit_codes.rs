//! The README's exit status table (issue 14 item 5), checked against the binary: the table lists
//! every command `mydata --help` offers, and every status it names (1 or 2) is produced by a case
//! here, with a message on standard error and no panic. Also: a closed standard output is a
//! quiet end, not a panic.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;

mod common;

use common::{bin, free_port};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fixture(p: &str) -> String {
    repo().join("fixtures").join(p).display().to_string()
}

/// The leaf commands of `mydata … --help`, as `mydata a b`.
fn commands(prefix: &[&str]) -> Vec<String> {
    let out = bin().args(prefix).arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let subs: Vec<String> = text
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_string)
        .collect();
    if subs.is_empty() {
        return vec![format!("mydata {}", prefix.join(" "))];
    }
    subs.iter()
        .flat_map(|s| {
            let mut p: Vec<&str> = prefix.to_vec();
            p.push(s);
            commands(&p)
        })
        .collect()
}

/// The README table: command → (status 1 listed, status 2 listed).
fn table() -> BTreeMap<String, (bool, bool)> {
    let text = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let section = text
        .split("## Exit status")
        .nth(1)
        .expect("README has an Exit status section");
    let section = section.split("\n## ").next().unwrap();
    let mut rows = BTreeMap::new();
    for line in section.lines().filter(|l| l.starts_with("| `mydata")) {
        // Cells split on unescaped `|`.
        let cells: Vec<String> = line
            .replace("\\|", "\u{1}")
            .split('|')
            .map(|c| c.trim().replace('\u{1}', "|"))
            .collect();
        let cmd = cells[1].trim_matches('`').to_string();
        rows.insert(cmd, (cells[2] != "—", cells[3] != "—"));
    }
    rows
}

struct Case {
    command: &'static str,
    code: i32,
    args: Vec<String>,
}

fn case(command: &'static str, code: i32, args: &[&str]) -> Case {
    Case {
        command,
        code,
        args: args.iter().map(|s| s.to_string()).collect(),
    }
}

#[test]
fn every_status_in_the_readme_table_is_produced() {
    let tmp = tempfile::tempdir().unwrap();
    let t = |name: &str| tmp.path().join(name).display().to_string();
    // A "data directory" that is a file; a fresh one; a garbage file; an address in use.
    std::fs::write(t("file"), b"not a directory").unwrap();
    std::fs::write(t("garbage"), b"garbage, not a package").unwrap();
    std::fs::write(t("jwe"), b"a.b.c.d.e").unwrap();
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = busy.local_addr().unwrap().to_string();
    let closed = format!("http://127.0.0.1:{}", free_port());
    let (file, fresh) = (t("file"), t("fresh"));
    let key = fixture("pki/dp-moi.key");
    let cert = fixture("pki/dp-moi.pem");
    let secret = "0123456789abcdef";
    let jwe_key = "0123456789abcdef0123456789abcdef";
    let dp_reg = |dir: &str| -> Vec<String> {
        [
            "dp",
            "register",
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
            "--data-dir",
            dir,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let sp_reg = |dir: &str, rid: &str| -> Vec<String> {
        [
            "sp",
            "register",
            "--name",
            "s",
            "--return-url",
            "https://s.test/r",
            "--sp-api-url",
            "https://s.test/a",
            "--dataset",
            rid,
            "--allow-ip",
            "192.0.2.1",
            "--data-dir",
            dir,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let mut cases = vec![
        case(
            "mydata package build",
            1,
            &[
                "package",
                "build",
                "--key",
                "/nonexistent/k.pem",
                "--cert",
                &cert,
                "-o",
                &t("o.zip"),
                &t("garbage"),
            ],
        ),
        case(
            "mydata package build",
            2,
            &[
                "package",
                "build",
                "--key",
                &key,
                "--cert",
                &cert,
                "-o",
                &t("o.zip"),
            ],
        ),
        case(
            "mydata package build-sp",
            1,
            &[
                "package",
                "build-sp",
                "-o",
                &t("sp.zip"),
                "--dataset",
                "API.AAAAAAAAAA=/nonexistent/p.zip",
            ],
        ),
        case(
            "mydata package build-sp",
            2,
            &[
                "package",
                "build-sp",
                "-o",
                &t("sp.zip"),
                "--dataset",
                "nonsense",
            ],
        ),
        case(
            "mydata package verify",
            1,
            &["package", "verify", &t("garbage")],
        ),
        case("mydata package verify", 2, &["package", "verify"]),
        case(
            "mydata param encrypt",
            2,
            &["param", "encrypt", "--secret", "short", "--iv", secret, "x"],
        ),
        case(
            "mydata param decrypt",
            1,
            &[
                "param", "decrypt", "--secret", secret, "--iv", secret, "AAAA",
            ],
        ),
        case(
            "mydata param decrypt",
            2,
            &["param", "decrypt", "--secret", "short", "--iv", secret, "x"],
        ),
        case(
            "mydata jwe encrypt",
            1,
            &[
                "jwe",
                "encrypt",
                "--key",
                jwe_key,
                "--raw",
                "/nonexistent/in",
            ],
        ),
        case(
            "mydata jwe encrypt",
            2,
            &["jwe", "encrypt", "--key", "short", "--raw", &t("garbage")],
        ),
        case(
            "mydata jwe decrypt",
            1,
            &["jwe", "decrypt", "--key", jwe_key, "--raw", &t("jwe")],
        ),
        case(
            "mydata jwe decrypt",
            2,
            &["jwe", "decrypt", "--key", "short", &t("jwe")],
        ),
        case(
            "mydata serve",
            1,
            &[
                "serve",
                "--sandbox",
                "--listen",
                &busy,
                "--sandbox-dp-url",
                &format!("http://127.0.0.1:{}", free_port()),
                "--data-dir",
                &t("serve1"),
            ],
        ),
        case(
            "mydata serve",
            2,
            &[
                "serve",
                "--sandbox",
                "--listen",
                "127.0.0.1:9",
                "--public-url",
                "http://127.0.0.1:10",
                "--data-dir",
                &t("serve2"),
            ],
        ),
        case("mydata sandbox-dp", 1, &["sandbox-dp", "--listen", &busy]),
        case(
            "mydata sandbox-dp",
            2,
            &["sandbox-dp", "--behaviour", "nonsense"],
        ),
        case("mydata sp list", 1, &["sp", "list", "--data-dir", &file]),
        case("mydata sp list", 2, &["sp", "list", "--bogus"]),
        case(
            "mydata sp fetch",
            1,
            &[
                "sp",
                "fetch",
                "--sandbox-sp",
                "1",
                "--platform",
                &closed,
                "--listen",
                &format!("127.0.0.1:{}", free_port()),
                "--pid",
                "A120345672",
                "--dataset",
                "API.ARPPI3VTCB",
                "--out",
                &t("f1"),
            ],
        ),
        case(
            "mydata sp fetch",
            2,
            &["sp", "fetch", "--sandbox-sp", "1", "--out", &t("f2")],
        ),
        case(
            "mydata sp verify",
            1,
            &[
                "sp",
                "verify",
                "--sandbox-sp",
                "1",
                "--package",
                "/nonexistent/p.zip",
            ],
        ),
        case(
            "mydata sp verify",
            2,
            &["sp", "verify", "--sandbox-sp", "1", "--package", &t("jwe")],
        ),
        case("mydata dp list", 1, &["dp", "list", "--data-dir", &file]),
        case("mydata dp list", 2, &["dp", "list", "--bogus"]),
        case("mydata config check", 1, &["config", "check"]),
        case("mydata config check", 2, &["config", "check", "--bogus"]),
        case(
            "mydata conformance platform",
            1,
            &[
                "conformance",
                "platform",
                "--profile",
                "/nonexistent/profile.json",
            ],
        ),
        case(
            "mydata conformance platform",
            2,
            &["conformance", "platform"],
        ),
        case(
            "mydata conformance sp",
            1,
            &[
                "conformance",
                "sp",
                "--sp",
                "http://127.0.0.1:9",
                "--listen",
                &busy,
            ],
        ),
        case(
            "mydata conformance sp",
            2,
            &["conformance", "sp", "--sp", "ftp://x"],
        ),
        case(
            "mydata conformance dp",
            1,
            &[
                "conformance",
                "dp",
                "--sandbox",
                "--platform-url",
                &format!("http://{busy}"),
                "--cache-secs",
                "1",
            ],
        ),
        case(
            "mydata card-agent",
            1,
            &["card-agent", "--card", "/nonexistent/card.p12"],
        ),
        case(
            "mydata card-agent",
            2,
            &["card-agent", "--card", &file, "--listen", "0.0.0.0:0"],
        ),
        case(
            "mydata conformance dp",
            2,
            &[
                "conformance",
                "dp",
                "--profile",
                "/nonexistent/profile.json",
            ],
        ),
    ];
    let mut push = |command: &'static str, code: i32, args: Vec<String>| {
        cases.push(Case {
            command,
            code,
            args,
        })
    };
    push("mydata sp register", 1, sp_reg(&file, "API.AAAAAAAAAA"));
    push("mydata sp register", 2, sp_reg(&fresh, "API.ZZZZZZZZZZ"));
    push("mydata dp register", 1, dp_reg(&file));
    let mut no_method = dp_reg(&fresh);
    no_method.retain(|a| a != "--identity-method" && a != "PII");
    push("mydata dp register", 2, no_method);
    for (what, id) in [("sp", "CLI.ZZZZZZZZZZ"), ("dp", "API.ZZZZZZZZZZ")] {
        for (sub, command) in [
            (
                "suspend",
                if what == "sp" {
                    "mydata sp suspend"
                } else {
                    "mydata dp suspend"
                },
            ),
            (
                "resume",
                if what == "sp" {
                    "mydata sp resume"
                } else {
                    "mydata dp resume"
                },
            ),
            (
                "delete",
                if what == "sp" {
                    "mydata sp delete"
                } else {
                    "mydata dp delete"
                },
            ),
            (
                "rotate",
                if what == "sp" {
                    "mydata sp rotate"
                } else {
                    "mydata dp rotate"
                },
            ),
        ] {
            let args = |dir: &str| {
                vec![
                    what.to_string(),
                    sub.into(),
                    id.into(),
                    "--data-dir".into(),
                    dir.into(),
                ]
            };
            push(command, 1, args(&file));
            push(command, 2, args(&fresh));
        }
    }

    // The table lists exactly the commands of the binary.
    let rows = table();
    let listed: BTreeSet<&String> = rows.keys().collect();
    let all = commands(&[]);
    let offered: BTreeSet<&String> = all.iter().collect();
    assert_eq!(
        listed, offered,
        "README exit status table vs `mydata --help`"
    );
    // Every status the table names has a case, and every case is in the table.
    for (cmd, (one, two)) in &rows {
        for (listed, code) in [(*one, 1), (*two, 2)] {
            let has = cases.iter().any(|c| c.command == cmd && c.code == code);
            assert_eq!(
                listed, has,
                "{cmd}: status {code} in the table vs a case here"
            );
        }
    }
    for c in &cases {
        let out = bin()
            .args(&c.args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(c.code),
            "{}: {:?}: {err}",
            c.command,
            c.args
        );
        assert!(
            !err.trim().is_empty() || !out.stdout.is_empty(),
            "{}: no message",
            c.command
        );
        assert!(!err.contains("panicked"), "{}: {err}", c.command);
    }
}

/// `mydata sp list --json | head -c1`: the reader goes away, the command ends quietly (0, no
/// panic message) instead of panicking on the broken pipe. The pipe is closed before the
/// command writes (it opens its database first), so that every write meets it closed.
#[test]
fn a_closed_pipe_is_a_quiet_end() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let out = bin()
        .args(["dp", "register", "--name", "d", "--provider", "p"])
        .args(["--scope", "x.read", "--endpoint", "https://127.0.0.1:9/dp"])
        .args(["--identity-method", "PII", "--data-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success());
    for args in [
        vec!["sp", "list", "--json"],
        vec!["dp", "list", "--json"],
        vec!["dp", "list"],
        vec!["config", "check", "--sandbox"],
    ] {
        let mut child = bin()
            .args(&args)
            .arg("--data-dir")
            .arg(&dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        let status = child.wait().unwrap();
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_eq!(status.code(), Some(0), "{args:?}: {err}");
    }
}
