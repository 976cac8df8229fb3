//! Interoperability with code we did not write: the openssl CLI, Python
//! `cryptography` and `jwcrypto` (tests/interop/*.py). Run through
//! `bash tests/run.sh`, which prepares the Python venv and exports
//! MYDATA_PYTHON and MYDATA_INTEROP_DIR.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn python() -> PathBuf {
    if let Ok(p) = std::env::var("MYDATA_PYTHON") {
        return p.into();
    }
    let venv = repo().join("target/interop-venv/bin/python");
    assert!(
        venv.exists(),
        "the interop peers need the Python venv: run `bash tests/run.sh` (it creates target/interop-venv)"
    );
    venv
}

fn interop_dir() -> PathBuf {
    std::env::var("MYDATA_INTEROP_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo().join("tests/interop"))
}

fn fixture(name: &str) -> String {
    repo()
        .join("fixtures/pki")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

fn run(mut c: Command) -> Output {
    c.output().unwrap_or_else(|e| panic!("{c:?}: {e}"))
}

fn ok(out: Output, what: &str) -> Vec<u8> {
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    out.stdout
}

fn text(b: Vec<u8>) -> String {
    String::from_utf8(b).unwrap().trim().to_owned()
}

fn mydata(args: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mydata"));
    c.args(args);
    run(c)
}

fn py(script: &str, args: &[&str]) -> Output {
    let mut c = Command::new(python());
    c.arg(interop_dir().join(script)).args(args);
    run(c)
}

fn openssl(args: &[&str]) -> Output {
    let mut c = Command::new("openssl");
    c.args(args);
    run(c)
}

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn p(dir: &Path, name: &str) -> String {
    dir.join(name).to_string_lossy().into_owned()
}

const SECRET: &str = "abcdEFGH12345678";
const IV: &str = "0123456789abcdef";
const KEY: &str = "abcdefghijABCDEFGHIJ0123456789xy";
const CLIENT: &str = "CLI.SANDBOX001";
const AT: &str = "2027-01-01";

#[test]
fn openssl_enc_agrees_with_our_cbc_parameter() {
    let ours = text(ok(
        mydata(&[
            "param",
            "encrypt",
            "--secret",
            SECRET,
            "--iv",
            IV,
            "A123456789",
        ]),
        "mydata param",
    ));
    let d = tmp();
    std::fs::write(d.path().join("pid"), "A123456789").unwrap();
    let key_hex = hex::encode(format!("{SECRET}{SECRET}"));
    let iv_hex = hex::encode(IV);
    let theirs = ok(
        openssl(&[
            "enc",
            "-aes-256-cbc",
            "-K",
            &key_hex,
            "-iv",
            &iv_hex,
            "-in",
            &p(d.path(), "pid"),
            "-base64",
            "-A",
        ]),
        "openssl enc",
    );
    assert_eq!(ours, text(theirs));
}

#[test]
fn python_cryptography_parameters_both_ways() {
    for (mode, extra) in [("cbc", vec![]), ("gcm", vec!["--gcm"])] {
        for pid in [
            "A123456789",
            "F228710436",
            "tx-7f3c2a1e-0b9d-4c1e-9a2b-3c4d5e6f7a8b",
            "王大明",
        ] {
            let mut a = vec!["param", "encrypt", "--secret", SECRET, "--iv", IV];
            a.extend(&extra);
            a.push(pid);
            let ours = text(ok(mydata(&a), "mydata encrypt"));
            let mut b = vec!["decrypt", "--secret", SECRET, "--iv", IV];
            b.extend(&extra);
            b.push(&ours);
            assert_eq!(
                text(ok(py("param.py", &b), "param.py decrypt")),
                pid,
                "{mode}"
            );

            let mut c = vec!["encrypt", "--secret", SECRET, "--iv", IV];
            c.extend(&extra);
            c.push(pid);
            let theirs = text(ok(py("param.py", &c), "param.py encrypt"));
            // As it may arrive in a query string: '+' turned into a space.
            let mangled = theirs.replace('+', " ");
            let mut d = vec!["param", "decrypt", "--secret", SECRET, "--iv", IV];
            d.extend(&extra);
            d.push(&mangled);
            assert_eq!(text(ok(mydata(&d), "mydata decrypt")), pid, "{mode}");
        }
    }
    // A wrong secret is refused with the protocol's 400 (spec protocol.md §3 "all decryption
    // failures are one error", §5.3 step 8 "code 400"), in both modes. CBC is deterministic with
    // the fixed secret and IV, so this is the same ciphertext on every run: its padding check
    // fails under the wrong key (the GCM tag always does).
    for extra in [vec![], vec!["--gcm"]] {
        let mut e = vec!["encrypt", "--secret", SECRET, "--iv", IV];
        e.extend(&extra);
        e.push("A123456789");
        let enc = text(ok(py("param.py", &e), "param.py encrypt"));
        let mut d = vec![
            "param",
            "decrypt",
            "--secret",
            "zzzzEFGH12345678",
            "--iv",
            IV,
        ];
        d.extend(&extra);
        d.push(&enc);
        let out = mydata(&d);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(1), "{extra:?}: {err}");
        assert!(err.contains("(return code 400)"), "{extra:?}: {err}");
        assert!(out.stdout.is_empty(), "{extra:?}: nothing decrypted");
    }
}

fn our_package(dir: &Path) -> String {
    let data = p(dir, "household.json");
    std::fs::write(&data, r#"{"name":"王大明","birth":"0770101"}"#).unwrap();
    let pdf = p(dir, "household.pdf");
    std::fs::write(&pdf, b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n").unwrap();
    let out = p(dir, "ours.zip");
    ok(
        mydata(&[
            "package",
            "build",
            "--key",
            &fixture("dp-moi.key"),
            "--cert",
            &fixture("dp-moi.pem"),
            "-o",
            &out,
            &data,
            &pdf,
        ]),
        "mydata package build",
    );
    out
}

fn unzip(zip_path: &str, name: &str, to: &str) {
    let mut z = zip::ZipArchive::new(std::fs::File::open(zip_path).unwrap()).unwrap();
    let mut f = z.by_name(name).unwrap();
    let mut out = std::fs::File::create(to).unwrap();
    std::io::copy(&mut f, &mut out).unwrap();
}

#[test]
fn openssl_verifies_our_manifest_signature_and_digests() {
    let d = tmp();
    let pkg = our_package(d.path());
    let (m, s, c) = (
        p(d.path(), "manifest.xml"),
        p(d.path(), "sig"),
        p(d.path(), "cert.pem"),
    );
    unzip(&pkg, "META-INFO/manifest.xml", &m);
    unzip(&pkg, "META-INFO/manifest.sha256withrsa", &s);
    unzip(&pkg, "META-INFO/certificate.cer", &c);
    let pubkey = ok(
        openssl(&["x509", "-in", &c, "-pubkey", "-noout"]),
        "openssl x509",
    );
    std::fs::write(p(d.path(), "pub.pem"), pubkey).unwrap();
    let v = ok(
        openssl(&[
            "dgst",
            "-sha256",
            "-verify",
            &p(d.path(), "pub.pem"),
            "-signature",
            &s,
            &m,
        ]),
        "openssl dgst -verify",
    );
    assert_eq!(text(v), "Verified OK");
    // The certificate chains to the sandbox root, per openssl.
    let at = "1798761600";
    ok(
        openssl(&[
            "verify",
            "-attime",
            at,
            "-CAfile",
            &fixture("sandbox-root-ca.pem"),
            &c,
        ]),
        "openssl verify",
    );
    // Each digest in the manifest is openssl's SHA-256 of the file.
    let manifest = std::fs::read_to_string(&m).unwrap();
    for name in ["household.json", "household.pdf"] {
        let extracted = p(d.path(), &format!("x-{name}"));
        unzip(&pkg, name, &extracted);
        let dg = text(ok(
            openssl(&["dgst", "-sha256", "-r", &extracted]),
            "openssl dgst",
        ));
        let hexd = dg.split_whitespace().next().unwrap();
        assert!(
            manifest.contains(&format!(
                "<filename>{name}</filename><digest>{hexd}</digest>"
            )),
            "{manifest}"
        );
    }
    // A flipped signature bit no longer verifies with openssl either.
    let mut sig = std::fs::read(&s).unwrap();
    sig[0] ^= 1;
    std::fs::write(&s, sig).unwrap();
    assert!(
        !openssl(&[
            "dgst",
            "-sha256",
            "-verify",
            &p(d.path(), "pub.pem"),
            "-signature",
            &s,
            &m
        ])
        .status
        .success()
    );
}

#[test]
fn python_verifies_our_packages() {
    let d = tmp();
    let pkg = our_package(d.path());
    let out = text(ok(
        py(
            "verify_package.py",
            &[&pkg, "--ca", &fixture("sandbox-root-ca.pem")],
        ),
        "verify_package.py",
    ));
    assert_eq!(out, "OK");
    // And our SP package, with each DP package inside.
    let sp = p(d.path(), "sp.zip");
    ok(
        mydata(&[
            "package",
            "build-sp",
            "--mode",
            "b",
            "-o",
            &sp,
            "--dataset",
            &format!("API.HOUSEHOLD1={pkg}@個人戶籍資料"),
            "--dataset",
            "API.TAXDATA001=504@所得",
        ]),
        "build-sp",
    );
    let summary: Value = serde_json::from_slice(&ok(
        py(
            "sp_package.py",
            &[&sp, "--ca", &fixture("sandbox-root-ca.pem")],
        ),
        "sp_package.py",
    ))
    .unwrap();
    let ds = summary["datasets"].as_array().unwrap();
    assert_eq!(ds.len(), 2);
    assert_eq!(ds[0]["resource_id"], "API.HOUSEHOLD1");
    assert_eq!(ds[0]["resource_name"], "個人戶籍資料");
    assert_eq!(ds[0]["dp_verified"], true);
    assert_eq!(ds[1]["code"], 504);
    assert_eq!(ds[1]["present"], false);
}

fn verify_json(pkg: &str, extra: &[&str]) -> (i32, Value) {
    let mut a = vec!["package", "verify", "--json", "--at", AT, pkg];
    a.extend(extra);
    let out = mydata(&a);
    (
        out.status.code().unwrap(),
        serde_json::from_slice(&out.stdout).unwrap(),
    )
}

/// Exit code, error kind and failing file of a verification.
fn failure(pkg: &str) -> (i32, Option<String>, Option<String>) {
    let (code, v) = verify_json(pkg, &[]);
    let field = |k: &str| v["error"][k].as_str().map(str::to_owned);
    (code, field("kind"), field("file"))
}

#[test]
fn we_verify_python_built_packages_and_name_tampered_files() {
    let d = tmp();
    let a = p(d.path(), "a.json");
    let b = p(d.path(), "b.csv");
    std::fs::write(&a, r#"{"x":1}"#).unwrap();
    std::fs::write(&b, "h1,h2\n1,2\n").unwrap();
    let (key, cert) = (fixture("dp-nhi.key"), fixture("dp-nhi.pem"));
    let build = |name: &str, extra: &[&str]| -> String {
        let out = p(d.path(), name);
        let mut args = vec![
            "--key",
            key.as_str(),
            "--cert",
            cert.as_str(),
            "--out",
            out.as_str(),
        ];
        args.extend(extra);
        args.push(&a);
        args.push(&b);
        ok(py("build_package.py", &args), "build_package.py");
        out
    };
    for (name, extra) in [
        ("plain.zip", vec![]),
        ("b64.zip", vec!["--base64-signature"]),
        ("bs.zip", vec!["--backslash"]),
        ("der.zip", vec!["--der-cert"]),
    ] {
        let pkg = build(name, &extra);
        let (code, v) = verify_json(&pkg, &["--trust", &fixture("sandbox-root-ca.pem")]);
        assert_eq!(code, 0, "{name}: {v}");
        assert_eq!(v["package"]["files"].as_array().unwrap().len(), 2);
        // Human output says OK.
        let human = text(ok(
            mydata(&["package", "verify", "--at", AT, &pkg]),
            "verify",
        ));
        assert!(human.contains(": OK"), "{human}");
    }
    let (code, v) = verify_json(&build("b64.zip", &["--base64-signature"]), &[]);
    assert_eq!(
        (code, v["package"]["signature_encoding"].as_str()),
        (0, Some("base64"))
    );

    let tampered = build("tampered.zip", &["--tamper", "b.csv"]);
    let (code, v) = verify_json(&tampered, &[]);
    assert_eq!(code, 1);
    assert_eq!(v["error"]["kind"], "digest_mismatch");
    assert_eq!(v["error"]["file"], "b.csv");
    let human = mydata(&["package", "verify", "--at", AT, &tampered]);
    assert_eq!(human.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&human.stdout).contains("FAILED: b.csv"));

    assert_eq!(
        failure(&build("extra.zip", &["--extra", "smuggled.txt"])),
        (1, Some("extra_file".into()), Some("smuggled.txt".into()))
    );
    assert_eq!(
        failure(&build("omit.zip", &["--omit", "a.json"])),
        (1, Some("missing_file".into()), Some("a.json".into()))
    );
    // Signed by a DP outside the sandbox CA: fine without anchors, refused with them.
    let other = p(d.path(), "untrusted.zip");
    ok(
        py(
            "build_package.py",
            &[
                "--key",
                &fixture("dp-untrusted.key"),
                "--cert",
                &fixture("dp-untrusted.pem"),
                "--out",
                &other,
                &a,
            ],
        ),
        "build",
    );
    assert_eq!(verify_json(&other, &[]).0, 0);
    let (code, v) = verify_json(&other, &["--trust", &fixture("sandbox-root-ca.pem")]);
    assert_eq!(
        (code, v["error"]["kind"].as_str()),
        (1, Some("untrusted_certificate"))
    );
}

#[test]
fn jwcrypto_decrypts_our_jwe_in_both_modes() {
    let d = tmp();
    let pkg = our_package(d.path());
    for (mode, flags) in [("cbc", vec!["--iv", IV]), ("gcm", vec!["--gcm"])] {
        let mut a = vec!["jwe", "encrypt", "--key", KEY, "--client-id", CLIENT];
        a.extend(&flags);
        a.push(&pkg);
        let jwe = ok(mydata(&a), "mydata jwe encrypt");
        let jf = p(d.path(), &format!("{mode}.jwe"));
        std::fs::write(&jf, &jwe).unwrap();
        let mut b = vec!["decrypt", "--key", KEY, "--in", &jf, "--mode", mode];
        if mode == "cbc" {
            b.extend(["--expect-iv", IV]);
        }
        let payload = ok(py("jwe.py", &b), "jwe.py decrypt");
        let pf = p(d.path(), &format!("{mode}.json"));
        std::fs::write(&pf, &payload).unwrap();
        let zip_out = p(d.path(), &format!("{mode}.zip"));
        let name = text(ok(
            py(
                "jwe.py",
                &[
                    "unpayload",
                    "--in",
                    &pf,
                    "--out",
                    &zip_out,
                    "--client-id",
                    CLIENT,
                ],
            ),
            "unpayload",
        ));
        assert_eq!(name, format!("{CLIENT}.zip"));
        assert_eq!(
            std::fs::read(&zip_out).unwrap(),
            std::fs::read(&pkg).unwrap(),
            "{mode}"
        );
        // The wrong key fails in jwcrypto too.
        let wrong = py(
            "jwe.py",
            &[
                "decrypt",
                "--key",
                "zzzzzzzzzzABCDEFGHIJ0123456789xy",
                "--in",
                &jf,
                "--mode",
                mode,
            ],
        );
        assert!(!wrong.status.success());
    }
}

#[test]
fn we_decrypt_jwcrypto_jwe_in_both_modes() {
    let d = tmp();
    let pkg = our_package(d.path());
    let payload = ok(
        py("jwe.py", &["payload", "--client-id", CLIENT, "--zip", &pkg]),
        "jwe.py payload",
    );
    let pf = p(d.path(), "payload.json");
    std::fs::write(&pf, payload).unwrap();
    for (mode, flag) in [("cbc", None), ("gcm", Some("--gcm"))] {
        let jwe = ok(
            py(
                "jwe.py",
                &["encrypt", "--key", KEY, "--mode", mode, "--in", &pf],
            ),
            "jwe.py encrypt",
        );
        let jf = p(d.path(), &format!("{mode}.jwe"));
        std::fs::write(&jf, jwe).unwrap();
        let out = p(d.path(), &format!("{mode}-out.zip"));
        let mut a = vec![
            "jwe",
            "decrypt",
            "--key",
            KEY,
            "--client-id",
            CLIENT,
            "-o",
            &out,
        ];
        a.extend(flag);
        a.push(&jf);
        ok(mydata(&a), "mydata jwe decrypt");
        assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&pkg).unwrap());
        // The decrypted package verifies.
        assert_eq!(verify_json(&out, &[]).0, 0);
        // Registered for the other mode: refused.
        let mut wrong = vec!["jwe", "decrypt", "--key", KEY, "-o", &out];
        if flag.is_none() {
            wrong.push("--gcm");
        }
        wrong.push(&jf);
        assert_eq!(mydata(&wrong).status.code(), Some(1), "{mode}");
        // Another client's id: refused.
        let mut other = vec![
            "jwe",
            "decrypt",
            "--key",
            KEY,
            "--client-id",
            "CLI.OTHERCLI01",
        ];
        other.extend(flag);
        other.push(&jf);
        let out = mydata(&other);
        assert_eq!(out.status.code(), Some(1), "{mode}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("CLI.OTHERCLI01.zip"),
            "{mode}"
        );
    }
}
