//! The data directory is owner-only whatever the umask (spec D48): the real `mydata serve
//! --sandbox`, started under `umask 022`, runs a whole consent with packages in files; the data
//! directory, `packages/`, the package file, `mydata.sqlite`, its `-wal` and `-shm`, and
//! `master.key` are 0700 / 0600. A data directory that others may enter is refused (by `serve`
//! and by the operator commands) with a message saying how to fix it, unless
//! `allow_shared_data_dir` is set; files with wider modes are tightened when it is opened.
#![cfg(unix)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use mydata_protocol::flow::{ApplicationMode, Pid};
use mydata_protocol::jwe::JweMode;
use mydata_protocol::resources::ResourceList;
use mydata_sp::redirect::RedirectRequest;

mod common;

use common::*;

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

fn chmod(p: &Path, m: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
}

/// `mydata sp list --json --data-dir DIR` with the extra environment `env`, under `umask 022`.
fn sp_list(dir: &Path, env: &[(&str, &str)]) -> Output {
    std::process::Command::new("sh")
        .arg("-c")
        .arg("umask 022; exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_mydata"))
        .args(["sp", "list", "--json", "--data-dir"])
        .arg(dir)
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

#[test]
fn a_whole_flow_under_umask_022_leaves_only_owner_only_files() {
    let p = start_platform_with(Some("umask 022"), &[("MYDATA_PACKAGE_MEMORY_MB", "0")]);
    let rid = pii_instant_datasets()[0].clone();
    let (sp_port, seen) = sp_stub();
    let creds = register(&p, sp_port, &rid, "a", "cbc");
    let cfg = sp_config(&p, &creds, sp_port, JweMode::Cbc);
    let list = ResourceList::new(vec![rid.parse().unwrap()]).unwrap();
    let pid = Pid::parse_for(ApplicationMode::Person, CITIZEN).unwrap();
    let redirect = cfg.redirect(&RedirectRequest::new(&list, &pid)).unwrap();
    let back = Browser::new(&p.url).consent(&redirect.url);
    assert!(back.contains("code=200"), "{back}");
    wait_for_body(&seen, 0);
    // The package goes to a file (package_memory_mb = 0) once the DP has answered.
    let packages = p.data_dir.join("packages");
    let start = Instant::now();
    let zip = loop {
        let found = std::fs::read_dir(&packages).ok().and_then(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path())
                .find(|f| f.extension().is_some_and(|x| x == "zip"))
        });
        if let Some(f) = found {
            break f;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no package file: {}",
            p.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(mode(&p.data_dir), 0o700, "the data directory");
    assert_eq!(mode(&packages), 0o700, "packages/");
    assert_eq!(mode(&zip), 0o600, "{}", zip.display());
    for f in [
        "mydata.sqlite",
        "mydata.sqlite-wal",
        "mydata.sqlite-shm",
        "master.key",
    ] {
        assert_eq!(mode(&p.data_dir.join(f)), 0o600, "{f}");
    }
}

#[test]
fn a_shared_data_dir_is_refused_unless_allowed() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("shared");
    std::fs::create_dir(&dir).unwrap();
    chmod(&dir, 0o755);
    let fix = format!("chmod 700 {}", dir.display());

    // The operator commands refuse it, and create nothing in it.
    // A runtime failure (exit 1, issue 14), not a usage error.
    let out = sp_list(&dir, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&fix), "{err}");
    assert!(err.contains("allow_shared_data_dir"), "{err}");
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "nothing created"
    );

    // `mydata serve` refuses it before listening.
    let (port, dp) = (free_port(), free_port());
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_mydata"))
        .args(["serve", "--sandbox", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(&dir)
        .env("MYDATA_SANDBOX_DP_URL", format!("http://127.0.0.1:{dp}"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut serve = Kill(child);
    let start = Instant::now();
    let status = loop {
        if let Some(s) = serve.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "mydata serve started on a shared data directory"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(serve.0.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains(&fix) && err.contains("allow_shared_data_dir"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "nothing created"
    );

    // Allowed, by the environment or the configuration file: it opens; the directory stays as
    // it is, the files created in it are 0600.
    let by_env = sp_list(&dir, &[("MYDATA_ALLOW_SHARED_DATA_DIR", "1")]);
    let conf = root.path().join("mydata.toml");
    std::fs::write(&conf, "allow_shared_data_dir = true\n").unwrap();
    let by_file = std::process::Command::new("sh")
        .arg("-c")
        .arg("umask 022; exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_mydata"))
        .args(["sp", "list", "--json", "--config"])
        .arg(&conf)
        .arg("--data-dir")
        .arg(&dir)
        .output()
        .unwrap();
    for out in [by_env, by_file] {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(mode(&dir), 0o755);
        assert_eq!(mode(&dir.join("mydata.sqlite")), 0o600);
        assert_eq!(mode(&dir.join("master.key")), 0o600);
    }
}

#[test]
fn files_with_wider_modes_are_tightened_when_opened() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("data");
    // Created by the command itself: 0700.
    let out = sp_list(&dir, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(mode(&dir), 0o700);
    // Left with wider modes (by an older version, a copy, a restore).
    let db = dir.join("mydata.sqlite");
    chmod(&db, 0o644);
    chmod(&dir.join("master.key"), 0o644);
    let packages = dir.join("packages");
    std::fs::create_dir(&packages).unwrap();
    chmod(&packages, 0o755);
    let zip = packages.join("0b7c7e0e-5d7a-4c1f-8e55-7f4a3b2c1d01.zip");
    std::fs::write(&zip, b"PK").unwrap();
    chmod(&zip, 0o644);
    let out = sp_list(&dir, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(mode(&db), 0o600);
    assert_eq!(mode(&dir.join("master.key")), 0o600);
    assert_eq!(mode(&packages), 0o700);
    assert_eq!(mode(&zip), 0o600);
    for side in ["mydata.sqlite-wal", "mydata.sqlite-shm"] {
        let f = dir.join(side);
        if f.exists() {
            assert_eq!(mode(&f), 0o600, "{side}");
        }
    }
}
