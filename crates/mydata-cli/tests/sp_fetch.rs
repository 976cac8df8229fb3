//! `mydata sp fetch` and `mydata sp verify` against the real `mydata serve --sandbox` binary over
//! HTTP on 127.0.0.1: the test registers its own SPs (`mydata sp register`), walks the citizen
//! pages as a browser (terms, basic information, two documents, consent), and collects the
//! package with the command, from a saved SP-API body, from the ticket on the command line, and
//! with `--listen` (the command plays the SP itself).

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Output, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use mydata_protocol::flow::{ApplicationMode, Pid};
use mydata_protocol::jwe::JweMode;
use mydata_protocol::param::{ParamCipher, ParamMode};
use mydata_protocol::resources::ResourceList;
use mydata_sp::redirect::RedirectRequest;
use serde_json::Value;
use sha2::Digest as _;

mod common;

use common::*;

fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: stdout {:?} stderr {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(b))
}

/// The unpacked files match the JSON report: sizes, digests, and paths inside `out`.
fn assert_unpacked(v: &Value, out: &Path, rid: &str) -> usize {
    let ds = &v["datasets"][0];
    assert_eq!(ds["resource_id"], rid, "{v}");
    assert_eq!(ds["code"], 200, "{v}");
    assert_eq!(ds["verified"], true, "{v}");
    let files = ds["files"].as_array().unwrap();
    assert!(!files.is_empty(), "{v}");
    for f in files {
        let path = out.join(rid).join(f["name"].as_str().unwrap());
        assert_eq!(Path::new(f["path"].as_str().unwrap()), path);
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len() as u64, f["size"].as_u64().unwrap());
        assert_eq!(sha256_hex(&bytes), f["sha256"].as_str().unwrap());
    }
    files.len()
}

/// Rewrites the SP package with one data file of the DP package changed (the zip CRCs are
/// recomputed, so only the signed digest can catch it).
fn tamper(sp_zip: &[u8]) -> Vec<u8> {
    use std::io::Cursor;
    let rewrite = |bytes: &[u8], f: &dyn Fn(&str, Vec<u8>) -> Vec<u8>| -> Vec<u8> {
        let mut a = zip::ZipArchive::new(Cursor::new(bytes)).unwrap();
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        for i in 0..a.len() {
            let mut e = a.by_index(i).unwrap();
            let name = e.name().unwrap().to_string();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            w.start_file(name.as_str(), zip::write::SimpleFileOptions::default())
                .unwrap();
            w.write_all(&f(&name, data)).unwrap();
        }
        w.finish().unwrap().into_inner()
    };
    let changed = std::cell::Cell::new(false);
    let out = rewrite(sp_zip, &|name, data| {
        if !name.ends_with(".zip") {
            return data;
        }
        rewrite(&data, &|inner, mut d| {
            if !inner.starts_with("META-INF") && !changed.get() && !d.is_empty() {
                d[0] ^= 0x01;
                changed.set(true);
            }
            d
        })
    });
    assert!(changed.get(), "no data file to tamper with");
    out
}

#[test]
fn fetch_and_verify_against_the_sandbox_platform() {
    let ids = pii_instant_datasets();
    let rid = ids[0].as_str();
    let p = start_platform();
    let (sp_port, seen) = sp_stub();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();

    // (b) A saved SP-API body, mode A / CBC.
    let creds = register(&p, sp_port, rid, "a", "cbc");
    let cfg = sp_config(&p, &creds, sp_port, JweMode::Cbc);
    let list = ResourceList::new(vec![rid.parse().unwrap()]).unwrap();
    let pid = Pid::parse_for(ApplicationMode::Person, CITIZEN).unwrap();
    let redirect = cfg.redirect(&RedirectRequest::new(&list, &pid)).unwrap();
    let back = Browser::new(&p.url).consent(&redirect.url);
    assert!(
        back.starts_with(&cfg.return_url) && back.contains("code=200"),
        "{back}"
    );
    let body = wait_for_body(&seen, 0);
    let delivery = w.join("delivery.json");
    std::fs::write(&delivery, &body).unwrap();
    let args = cred_args(&p, &creds, "cbc", "A");
    let out1 = w.join("out1");
    let a = [
        vec!["sp".to_string(), "fetch".into(), "--delivery".into()],
        vec![delivery.display().to_string()],
        vec!["--out".into(), out1.display().to_string(), "--json".into()],
        vec!["--max-wait".into(), "1".into()],
        args.clone(),
    ]
    .concat();
    let out = run(&a);
    let v = json_of(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{v} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(v["status"], "delivered");
    assert_eq!(v["verified"], true);
    assert_eq!(v["packaging_mode"], "A");
    assert_eq!(v["tx_id"], redirect.tx_id.as_str());
    assert!(v["polls"].as_u64().unwrap() >= 1);
    assert_eq!(v["datasets"].as_array().unwrap().len(), 1);
    assert_unpacked(&v, &out1, rid);
    // Only the JSON on stdout; the progress went to stderr.
    assert!(String::from_utf8_lossy(&out.stderr).contains("poll 1:"));
    let zip_path = out1.join("package.zip");
    assert_eq!(Path::new(v["package"].as_str().unwrap()), zip_path);
    // The saved zip is the SP package: `mydata package verify` agrees.
    let pv = bin()
        .args(["package", "verify", "--json", "--trust"])
        .arg(root_ca())
        .arg(&zip_path)
        .output()
        .unwrap();
    assert_eq!(
        pv.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&pv.stdout)
    );

    // The ticket is spent: a second fetch of the same body is a final 201.
    let a2 = [
        vec!["sp".to_string(), "fetch".into(), "--delivery".into()],
        vec![delivery.display().to_string()],
        vec![
            "--out".into(),
            w.join("out2").display().to_string(),
            "--json".into(),
        ],
        args.clone(),
    ]
    .concat();
    let out = run(&a2);
    let v = json_of(&out);
    assert_eq!(out.status.code(), Some(1), "{v}");
    assert_eq!(v["status"], "taken");
    assert_eq!(v["http_status"], 201);
    assert_eq!(v["error"]["kind"], "already_taken");
    // Same with the ticket on the command line, human output: the message says taken.
    let sent: Value = serde_json::from_str(&body).unwrap();
    let a3 = [
        vec!["sp".to_string(), "fetch".into()],
        vec![
            "--ticket".into(),
            sent["permission_ticket"].as_str().unwrap().into(),
        ],
        vec!["--tx-id".into(), sent["tx_id"].as_str().unwrap().into()],
        vec![
            "--secret-key".into(),
            sent["secret_key"].as_str().unwrap().into(),
        ],
        vec!["--out".into(), w.join("out3").display().to_string()],
        args.clone(),
    ]
    .concat();
    let out = run(&a3);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("201") && err.contains("taken"), "{err}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("status taken"));

    // `sp verify` on the saved zip, unpacking again.
    let out4 = w.join("out4");
    let verify_zip = |file: &Path, out: Option<&Path>| {
        let mut a = vec![
            "sp".to_string(),
            "verify".into(),
            "--json".into(),
            "--package".into(),
            file.display().to_string(),
        ];
        if let Some(o) = out {
            a.extend(["--out".to_string(), o.display().to_string()]);
        }
        a.extend(args.iter().cloned());
        run(&a)
    };
    let out = verify_zip(&zip_path, Some(&out4));
    let v = json_of(&out);
    assert_eq!(out.status.code(), Some(0), "{v}");
    assert_eq!(
        (v["status"].as_str(), v["format"].as_str()),
        (Some("verified"), Some("zip"))
    );
    assert_unpacked(&v, &out4, rid);
    // A tampered data file inside the DP package: exit 1, the kind names the rule.
    let bad = w.join("tampered.zip");
    std::fs::write(&bad, tamper(&std::fs::read(&zip_path).unwrap())).unwrap();
    let out = verify_zip(&bad, None);
    let v = json_of(&out);
    assert_eq!(out.status.code(), Some(1), "{v}");
    assert_eq!(v["verified"], false);
    assert_eq!(v["error"]["kind"], "digest_mismatch", "{v}");
    assert_eq!(v["datasets"][0]["verified"], false);
    // A refusing directory is a usage error before anything is written.
    let out = verify_zip(&zip_path, Some(&out4));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not empty"));

    // The JWE form: encrypted with this transaction's key it verifies; with another key it is a
    // decryption failure.
    let secret_plain = ParamCipher::from_raw(
        creds["client_secret"].as_str().unwrap(),
        creds["cbc_iv"].as_str().unwrap(),
        ParamMode::Cbc,
    )
    .unwrap()
    .decrypt(sent["secret_key"].as_str().unwrap())
    .unwrap();
    let jwe_with = |key: &str, name: &str| {
        let o = bin()
            .args(["jwe", "encrypt", "--key", key, "--client-id"])
            .arg(creds["client_id"].as_str().unwrap())
            .arg(&zip_path)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let path = w.join(name);
        std::fs::write(&path, &o.stdout).unwrap();
        path
    };
    let verify_jwe = |file: &Path| {
        let a = [
            vec!["sp".to_string(), "verify".into(), "--json".into()],
            vec!["--package".into(), file.display().to_string()],
            vec![
                "--secret-key".into(),
                sent["secret_key"].as_str().unwrap().into(),
            ],
            args.clone(),
        ]
        .concat();
        run(&a)
    };
    let out = verify_jwe(&jwe_with(&secret_plain, "good.jwe"));
    let v = json_of(&out);
    assert_eq!(out.status.code(), Some(0), "{v}");
    assert_eq!(v["format"], "jwe");
    assert_eq!(v["datasets"][0]["verified"], true);
    let out = verify_jwe(&jwe_with("Zq8VtY3cR1mK6wN0pL4sH9dB2fJ7xG5a", "wrong.jwe"));
    let v = json_of(&out);
    assert_eq!(out.status.code(), Some(1), "{v}");
    assert_eq!(v["verified"], false);
    assert_eq!(v["error"]["kind"], "jwe", "{v}");
    // A JWE without its key is a usage error.
    let a = [
        vec!["sp".to_string(), "verify".into()],
        vec!["--package".into(), w.join("good.jwe").display().to_string()],
        args.clone(),
    ]
    .concat();
    assert_eq!(run(&a).status.code(), Some(2));

    // (a) The ticket on the command line, mode B / GCM, a second transaction.
    let creds_b = register(&p, sp_port, rid, "b", "gcm");
    let cfg_b = sp_config(&p, &creds_b, sp_port, JweMode::Gcm);
    let redirect = cfg_b.redirect(&RedirectRequest::new(&list, &pid)).unwrap();
    let back = Browser::new(&p.url).consent(&redirect.url);
    assert!(back.contains("code=200"), "{back}");
    let sent: Value = serde_json::from_str(&wait_for_body(&seen, 1)).unwrap();
    assert_eq!(sent["tx_id"], redirect.tx_id.as_str());
    let out5 = w.join("out5");
    let a = [
        vec!["sp".to_string(), "fetch".into(), "--json".into()],
        vec![
            "--ticket".into(),
            sent["permission_ticket"].as_str().unwrap().into(),
        ],
        vec!["--tx-id".into(), sent["tx_id"].as_str().unwrap().into()],
        vec![
            "--secret-key".into(),
            sent["secret_key"].as_str().unwrap().into(),
        ],
        vec!["--out".into(), out5.display().to_string()],
        vec!["--max-wait".into(), "1".into()],
        cred_args(&p, &creds_b, "gcm", "B"),
    ]
    .concat();
    let out = run(&a);
    let v = json_of(&out);
    assert_eq!(out.status.code(), Some(0), "{v}");
    assert_eq!(
        (v["status"].as_str(), v["packaging_mode"].as_str()),
        (Some("delivered"), Some("B"))
    );
    assert_unpacked(&v, &out5, rid);
    assert!(out5.join("package.zip").is_file());

    // --listen: the command plays the SP; the test is the citizen's browser.
    let listen_port = free_port();
    let creds_l = register(&p, listen_port, rid, "a", "cbc");
    let out6 = w.join("out6");
    let (status, v, log) = fetch_listen(&p, &creds_l, listen_port, rid, &out6, "agree");
    assert_eq!(status, Some(0), "{v} {log}");
    assert_eq!(v["status"], "delivered");
    assert_unpacked(&v, &out6, rid);
    assert!(log.contains("SP-API call received"), "{log}");
    assert!(log.contains("returned with code 200"), "{log}");
    // The citizen refuses: no ticket, the command reports the return code and exits 1.
    let out7 = w.join("out7");
    let (status, v, log) = fetch_listen(&p, &creds_l, listen_port, rid, &out7, "refuse");
    assert_eq!(status, Some(1), "{v} {log}");
    assert_eq!(v["status"], "returned", "{v}");
    // Refusal on the consent page is code 205 (protocol.md §6, D46), nothing else.
    assert_eq!(v["return_code"], 205, "{v}");
    assert_eq!(v["polls"], 0);
    assert!(!out7.join("package.zip").exists());
}

/// Runs `mydata sp fetch --listen` and goes through the platform's pages with `decision`;
/// returns the exit code, the JSON on stdout and the progress lines.
fn fetch_listen(
    p: &Platform,
    creds: &Value,
    port: u16,
    rid: &str,
    out: &Path,
    decision: &str,
) -> (Option<i32>, Value, String) {
    let child = bin()
        .args(["sp", "fetch", "--json", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .args([
            "--pid",
            CITIZEN,
            "--resource",
            rid,
            "--max-wait",
            "1",
            "--out",
        ])
        .arg(out)
        .args(cred_args(p, creds, "cbc", "A"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = Kill(child);
    let stderr = child.0.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let log = Arc::new(Mutex::new(String::new()));
    let log2 = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { return };
            log2.lock().unwrap().push_str(&format!("{line}\n"));
            if line.starts_with("http://") {
                let _ = tx.send(line);
            }
        }
    });
    let url = rx
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("no URL printed: {}", log.lock().unwrap()));
    assert!(url.starts_with(&format!("{}/service/", p.url)), "{url}");
    let back = Browser::new(&p.url).decide(&url, decision);
    assert!(
        back.starts_with(&format!("http://127.0.0.1:{port}/return?")),
        "{back}"
    );
    let page = http("GET", &back, None, None);
    assert_eq!(page.status, 200, "{page:?}");
    assert!(page.body.contains("Return code "), "{}", page.body);
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "fetch --listen did not finish: {}",
            log.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut stdout = Vec::new();
    child
        .0
        .stdout
        .take()
        .unwrap()
        .read_to_end(&mut stdout)
        .unwrap();
    let v: Value = serde_json::from_slice(&stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {} / {}",
            String::from_utf8_lossy(&stdout),
            log.lock().unwrap()
        )
    });
    let log = log.lock().unwrap().clone();
    (status.code(), v, log)
}

#[test]
fn usage_errors_exit_2() {
    let w = tempfile::tempdir().unwrap();
    let out = w.path().join("o");
    let o = out.display().to_string();
    let cases: Vec<Vec<&str>> = vec![
        // No ticket source.
        vec!["sp", "fetch", "--sandbox", "1", "--out", &o],
        // Two ticket sources.
        vec![
            "sp",
            "fetch",
            "--sandbox",
            "1",
            "--out",
            &o,
            "--delivery",
            "x.json",
            "--listen",
            "127.0.0.1:9",
        ],
        // No such sandbox SP.
        vec![
            "sp",
            "fetch",
            "--sandbox",
            "3",
            "--out",
            &o,
            "--delivery",
            "x.json",
        ],
        // No credentials and no trust anchors.
        vec!["sp", "fetch", "--out", &o, "--delivery", "x.json"],
        // A ticket that is not a UUID.
        vec![
            "sp",
            "fetch",
            "--sandbox",
            "1",
            "--out",
            &o,
            "--ticket",
            "nope",
            "--tx-id",
            "t1",
            "--secret-key",
            "AAAA",
        ],
        // --listen without --pid.
        vec![
            "sp",
            "fetch",
            "--sandbox",
            "1",
            "--out",
            &o,
            "--listen",
            "127.0.0.1:9",
            "--resource",
            "API.ARPPI3VTCB",
        ],
    ];
    for args in cases {
        let r = bin().args(&args).output().unwrap();
        assert_eq!(
            r.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&r.stderr)
        );
        assert!(!r.stderr.is_empty(), "{args:?}: no message");
        assert!(r.stdout.is_empty(), "{args:?}");
    }
    // A missing file is a runtime failure (1, issue 14), named, not a usage error.
    for (args, named) in [
        (
            vec![
                "sp",
                "fetch",
                "--sandbox-sp",
                "1",
                "--out",
                &o,
                "--delivery",
                "/nonexistent/x.json",
            ],
            "/nonexistent/x.json",
        ),
        (
            vec![
                "sp",
                "verify",
                "--sandbox-sp",
                "1",
                "--package",
                "/nonexistent/p.zip",
            ],
            "/nonexistent/p.zip",
        ),
    ] {
        let r = bin().args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&r.stderr);
        assert_eq!(r.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(named), "{err}");
        assert!(r.stdout.is_empty(), "{args:?}");
    }
    // A platform that does not answer: said at once, naming it, before any wait.
    let closed = format!("http://127.0.0.1:{}", free_port());
    let started = std::time::Instant::now();
    let r = bin()
        .args(["sp", "fetch", "--sandbox-sp", "1", "--platform", &closed])
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--pid", CITIZEN, "--dataset", "API.ARPPI3VTCB", "--out", &o])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&closed) && err.contains("does not answer"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    // A refused SP-API body (wrong apiKey) is a failure (1), named by kind, and nothing polls.
    let body = w.path().join("d.json");
    std::fs::write(
        &body,
        r#"{"tx_id":"t1","apiKey":"WrongKey","permission_ticket":"6b1f0e52-2c1d-4f7a-9a57-0f3c1d2e8b44","secret_key":"AAAA"}"#,
    )
    .unwrap();
    let r = bin()
        .args([
            "sp",
            "fetch",
            "--sandbox",
            "1",
            "--json",
            "--platform",
            "http://127.0.0.1:9",
        ])
        .arg("--out")
        .arg(&out)
        .arg("--delivery")
        .arg(&body)
        .output()
        .unwrap();
    assert_eq!(r.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&r.stdout).unwrap();
    assert_eq!(v["error"]["kind"], "api_key");
    assert_eq!(v["status"], "refused");
    // unable_to_deliver: the ticket never yields data, so nothing polls (the platform URL is a
    // closed port) and the answer is final.
    std::fs::write(
        &body,
        r#"{"tx_id":"t1","apiKey":"SandboxApiKey0000000000000000001","permission_ticket":"6b1f0e52-2c1d-4f7a-9a57-0f3c1d2e8b44","unable_to_deliver":["API.ARPPI3VTCB"]}"#,
    )
    .unwrap();
    let r = bin()
        .args([
            "sp",
            "fetch",
            "--sandbox",
            "1",
            "--platform",
            "http://127.0.0.1:9",
        ])
        .arg("--out")
        .arg(&out)
        .arg("--delivery")
        .arg(&body)
        .output()
        .unwrap();
    assert_eq!(r.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&r.stdout).contains("status undeliverable"));
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        err.contains("API.ARPPI3VTCB") && !err.contains("poll 1"),
        "{err}"
    );
}
