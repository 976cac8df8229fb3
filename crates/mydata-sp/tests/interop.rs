//! Interoperability of the SDK.
//!
//! * The SP-API over real HTTP on 127.0.0.1, platform → SP: `secret_key` encrypted by Python
//!   `cryptography` (tests/interop/param.py), in bodies written by the platform's serializer
//!   (`flow::SpApiBody::to_json`) and by hand from the spec's field names, is accepted by the
//!   SDK's actix receiver, which hands the key Python encrypted to the sink; a wrong `apiKey`,
//!   both members, a key encrypted in the other mode, or garbage are refused with 4xx.
//! * JWEs built by Python `jwcrypto` (tests/interop/jwe.py): one carrying `crit` is refused;
//!   the platform's random content IVs (`jwe_random_iv`) decrypt both here and in jwcrypto.

use std::sync::{Arc, Mutex};

use actix_web::{App, HttpServer};
use mydata_protocol::flow::{SpApiBody, SpApiDelivery};
use mydata_protocol::ids::{PermissionTicket, SecretKey};
use mydata_protocol::jwe::JweMode;
use mydata_sp::SpConfig;
use mydata_sp::actix::SpApiReceiver;
use mydata_sp::receiver::{Received, ReceivedContent};

const API_KEY: &str = "SandboxApiKey0000000000000000002";
const SECRET: &str = "SandboxSecret002";
const CBC_IV: &str = "SandboxCbcIv0002";

fn sandbox002() -> SpConfig {
    SpConfig::new(
        "http://127.0.0.1:8080",
        "CLI.SANDBOX002".parse().unwrap(),
        SECRET.parse().unwrap(),
        CBC_IV.parse().unwrap(),
        "http://127.0.0.1:8090/return",
    )
    .with_mode(JweMode::Gcm)
    .with_api_key(API_KEY)
}

#[actix_web::test]
async fn platform_bodies_over_http() {
    let sp = sandbox002();
    let got: Arc<Mutex<Vec<Received>>> = Arc::default();
    let g = got.clone();
    let receiver = SpApiReceiver::from_config(&sp, move |r: Received| {
        g.lock().unwrap().push(r);
        Ok(())
    });
    let srv = HttpServer::new(move || App::new().configure(receiver.configure("/sp-api")))
        .workers(1)
        .bind("127.0.0.1:0")
        .unwrap();
    let url = format!("http://{}/sp-api", srv.addrs()[0]);
    let srv = srv.run();
    let handle = srv.handle();
    actix_web::rt::spawn(srv);

    // The platform side is Python `cryptography` (param.py), with the SP's credentials.
    let secret = SecretKey::generate().unwrap();
    let ticket = PermissionTicket::generate().unwrap();
    let body = |api_key: Option<&str>, delivery: SpApiDelivery| {
        SpApiBody {
            tx_id: "tx-interop-1".parse().unwrap(),
            api_key: api_key.map(str::to_owned),
            permission_ticket: ticket.clone(),
            delivery,
        }
        .to_json()
    };
    let post = |b: String| {
        let url = url.clone();
        async move {
            awc::Client::default()
                .post(url)
                .insert_header(("content-type", "application/json; charset=utf-8"))
                .send_body(b)
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let enc = param_py(&["encrypt", "--gcm", "--secret", SECRET, secret.as_str()]);
    assert_eq!(
        post(body(Some(API_KEY), SpApiDelivery::SecretKey(enc.clone()))).await,
        200
    );
    // The same delivery in a body written by hand from protocol.md §7, not by our serializer.
    let by_hand = serde_json::json!({
        "tx_id": "tx-interop-2",
        "apiKey": API_KEY,
        "permission_ticket": ticket.as_str(),
        "secret_key": enc,
    })
    .to_string();
    assert_eq!(post(by_hand).await, 200);
    assert_eq!(
        post(body(
            Some(API_KEY),
            SpApiDelivery::UnableToDeliver(vec!["API.5XQQ2IWD37".parse().unwrap()])
        ))
        .await,
        200
    );
    // Refusals.
    assert_eq!(
        post(body(
            Some("SandboxApiKey0000000000000000001"),
            SpApiDelivery::SecretKey(enc.clone())
        ))
        .await,
        403
    );
    assert_eq!(
        post(body(None, SpApiDelivery::SecretKey(enc.clone()))).await,
        403
    );
    let both = format!(
        r#"{{"tx_id":"t","apiKey":"{API_KEY}","permission_ticket":"{ticket}","secret_key":"{enc}","unable_to_deliver":["API.5XQQ2IWD37"]}}"#
    );
    assert_eq!(post(both).await, 400);
    assert_eq!(post("garbage".into()).await, 400);
    // A CBC-encrypted key (Python, with the SP's secret and cbc_iv) does not pass a GCM SP.
    let cbc = param_py(&[
        "encrypt",
        "--secret",
        SECRET,
        "--iv",
        CBC_IV,
        secret.as_str(),
    ]);
    assert_eq!(
        post(body(Some(API_KEY), SpApiDelivery::SecretKey(cbc))).await,
        400
    );

    let got = got.lock().unwrap().clone();
    assert_eq!(got.len(), 3, "only the three valid calls reach the sink");
    // The key Python encrypted, decrypted by the SDK.
    assert_eq!(got[0].content, ReceivedContent::SecretKey(secret.clone()));
    assert_eq!(got[0].permission_ticket, ticket);
    assert_eq!(got[1].content, ReceivedContent::SecretKey(secret));
    assert_eq!(got[1].tx_id.as_str(), "tx-interop-2");
    assert_eq!(
        got[2].unable_to_deliver().unwrap()[0].as_str(),
        "API.5XQQ2IWD37"
    );
    handle.stop(true).await;
}

// --- JWEs from and for code we did not write: Python `jwcrypto` (tests/interop/jwe.py). Run
// through `bash tests/run.sh`, which prepares the venv and exports MYDATA_PYTHON and
// MYDATA_INTEROP_DIR.

fn repo() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn python() -> std::path::PathBuf {
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

fn interop_dir() -> std::path::PathBuf {
    std::env::var("MYDATA_INTEROP_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| repo().join("tests/interop"))
}

/// Runs `jwe.py` with `args`, `stdin` on its standard input: exit status, stdout, stderr.
fn jwe_py(args: &[&str], stdin: &[u8]) -> (bool, Vec<u8>, String) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(python())
        .arg(interop_dir().join("jwe.py"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("jwe.py {args:?}: {e}"));
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `param.py` (Python `cryptography`) with `args`: its one line of output.
fn param_py(args: &[&str]) -> String {
    let out = std::process::Command::new(python())
        .arg(interop_dir().join("param.py"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("param.py {args:?}: {e}"));
    assert!(
        out.status.success(),
        "param.py {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn jwcrypto_encrypt(key: &SecretKey, mode: &str, plaintext: &[u8], crit: Option<&str>) -> String {
    let mut args = vec![
        "encrypt",
        "--key",
        key.as_str(),
        "--mode",
        mode,
        "--in",
        "-",
    ];
    args.extend(crit.iter().flat_map(|c| ["--crit", c]));
    let (ok, out, err) = jwe_py(&args, plaintext);
    assert!(ok, "jwe.py encrypt: {err}");
    String::from_utf8(out).unwrap().trim().to_owned()
}

/// The protected header of a compact JWE, as JSON.
fn protected_header(compact: &str) -> serde_json::Value {
    use base64::Engine;
    let b64 = compact.split('.').next().unwrap();
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(b64)
        .unwrap();
    serde_json::from_slice(&raw).unwrap()
}

/// §12, D2 (issue 20 item 6): a JWE whose protected header carries `crit`, built by jwcrypto with
/// the right key and the SP's registered algorithms, is refused by the SP's package reader with
/// the JWE error kind; the same JWE without `crit` decrypts.
#[test]
fn a_jwcrypto_jwe_with_crit_is_refused() {
    use mydata_protocol::jwe;
    use mydata_sp::package::{self, PackageError};
    let key = SecretKey::generate().unwrap();
    for (mode, name) in [(JweMode::Cbc, "cbc"), (JweMode::Gcm, "gcm")] {
        let sp = sandbox002().with_mode(mode);
        let payload = jwe::payload_json(&sp.client_id, b"PK\x05\x06not really a zip");
        // Control: jwcrypto's JWE without `crit` is accepted.
        let plain = jwcrypto_encrypt(&key, name, payload.as_bytes(), None);
        assert!(protected_header(&plain).get("crit").is_none());
        let zip = package::decrypt(&plain, &key, mode, &sp.client_id, None).unwrap();
        assert_eq!(zip, b"PK\x05\x06not really a zip", "{name}");

        let with_crit = jwcrypto_encrypt(&key, name, payload.as_bytes(), Some("exp"));
        let h = protected_header(&with_crit);
        assert_eq!(h["crit"], serde_json::json!(["exp"]), "{name}: {h}");
        assert_eq!(h["alg"], mode.alg());
        assert_eq!(h["enc"], mode.enc());
        let e = package::decrypt(&with_crit, &key, mode, &sp.client_id, None).unwrap_err();
        assert!(matches!(e, PackageError::Jwe(_)), "{name}: {e:?}");
        assert_eq!(e.kind(), "jwe", "{name}");
        // The whole reader (decrypt, then verify) refuses it at the JWE step.
        let e = sp
            .open_package(&with_crit, &key, &mydata_sp::package::Expectations::now())
            .unwrap_err();
        assert_eq!(e.kind(), "jwe", "{name}: {e:?}");
    }
}

/// D2, §12 (issue 20 item 10): with `jwe_random_iv`, the platform's CBC content IV is 16 fresh
/// random bytes. Two JWEs of the same payload then have different IVs, neither is the `cbc_iv`,
/// and both decrypt in the SP's reader and in jwcrypto. Without the option the IV is the
/// `cbc_iv`, which jwcrypto is asked to confirm.
#[test]
fn random_content_ivs_decrypt_in_the_sp_and_in_jwcrypto() {
    use mydata_protocol::jwe::{self, ContentIv};
    use mydata_sp::package;
    let sp = sandbox002().with_mode(JweMode::Cbc);
    let key = SecretKey::generate().unwrap();
    let zip = b"PK\x05\x06same payload".as_slice();
    let payload = jwe::payload_json(&sp.client_id, zip);
    let seal = |random: bool| {
        jwe::encrypt_package(
            &sp.client_id,
            zip,
            &key,
            JweMode::Cbc,
            // What the platform passes with and without `jwe_random_iv`.
            if random {
                ContentIv::Random
            } else {
                ContentIv::SpCbcIv(&sp.cbc_iv)
            },
        )
        .unwrap()
    };
    let jwcrypto_decrypts = |compact: &str, expect_iv: Option<&str>| {
        let mut args = vec![
            "decrypt",
            "--key",
            key.as_str(),
            "--in",
            "-",
            "--mode",
            "cbc",
        ];
        args.extend(expect_iv.iter().flat_map(|iv| ["--expect-iv", iv]));
        let (ok, out, err) = jwe_py(&args, compact.as_bytes());
        assert!(ok, "jwe.py decrypt: {err}");
        assert_eq!(out, payload.as_bytes());
    };

    let (a, b) = (seal(true), seal(true));
    let (iv_a, iv_b) = (jwe::content_iv(&a).unwrap(), jwe::content_iv(&b).unwrap());
    assert_eq!((iv_a.len(), iv_b.len()), (16, 16));
    assert_ne!(iv_a, iv_b, "a fresh IV per message");
    for (compact, iv) in [(&a, &iv_a), (&b, &iv_b)] {
        assert_ne!(iv.as_slice(), sp.cbc_iv.as_str().as_bytes());
        assert_eq!(
            package::decrypt(compact, &key, JweMode::Cbc, &sp.client_id, None).unwrap(),
            zip
        );
        jwcrypto_decrypts(compact, None);
        // An SP that insists on the cbc_iv convention refuses it, as documented.
        assert!(matches!(
            package::decrypt(compact, &key, JweMode::Cbc, &sp.client_id, Some(&sp.cbc_iv)),
            Err(package::PackageError::ContentIv)
        ));
    }

    // Without the option: the cbc_iv, every time.
    for compact in [seal(false), seal(false)] {
        assert_eq!(
            jwe::content_iv(&compact).unwrap(),
            sp.cbc_iv.as_str().as_bytes()
        );
        assert_eq!(
            package::decrypt(
                &compact,
                &key,
                JweMode::Cbc,
                &sp.client_id,
                Some(&sp.cbc_iv)
            )
            .unwrap(),
            zip
        );
        jwcrypto_decrypts(&compact, Some(sp.cbc_iv.as_str()));
    }
}
