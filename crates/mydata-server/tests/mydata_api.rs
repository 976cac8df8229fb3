//! The MyData-API over real HTTP (spec §8, §12, D2, D26, D27; issue 20 items 5, 7 and 10):
//! malformed headers of the status helpers are 400, an IPv4 SP reaching a dual-stack listener
//! (`::ffff:a.b.c.d`) is known by its IPv4 address, and `jwe_random_iv` gives CBC JWEs a random
//! content IV that the SDK and Python `jwcrypto` (MYDATA_PYTHON, as `bash tests/run.sh` sets it)
//! both accept.

mod common;

use mydata_protocol::package::sp::PackagingMode;
use serde_json::Value;

/// `GET {base}/service/{path}` with these headers: status and body.
async fn get(base: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut req = awc::Client::default().get(format!("{base}/service/{path}"));
    for (k, v) in headers {
        req = req.insert_header((*k, *v));
    }
    let mut r = req.send().await.unwrap();
    let body = r.body().await.unwrap();
    (
        r.status().as_u16(),
        String::from_utf8_lossy(&body).into_owned(),
    )
}

#[actix_web::test]
async fn status_helpers_answer_400_to_malformed_headers() {
    let w = common::world().await;
    let ids = common::pii_datasets(1);
    let creds = w.register(PackagingMode::A, &ids);
    common::authenticated_tx(&w.p, "t-h", &creds.client_id, "tx-h-1", &[&ids[0]]);
    let long = "a".repeat(65);
    let cases: [(&[(&str, &str)], u16); 8] = [
        (&[("tx_id", "tx-h-1")], 200),
        (&[("tx_id", "tx-h-1"), ("client_id", &creds.client_id)], 200),
        (&[("tx_id", "tx-unknown")], 404),
        (&[], 400),
        (&[("tx_id", "")], 400),
        (&[("tx_id", "tx h 1")], 400),
        (&[("tx_id", &long)], 400),
        (
            &[("tx_id", "tx-h-1"), ("client_id", "not a client id")],
            400,
        ),
    ];
    // Authenticated, not consented: txid_status 100, type_valid 200 with the method.
    for (path, code) in [("txid_status", "100"), ("type_valid", "200")] {
        for (headers, want) in &cases {
            let (status, body) = get(&w.srv.url, path, headers).await;
            assert_eq!(status, *want, "{path} {headers:?}: {body}");
            if status == 200 {
                let v: Value = serde_json::from_str(&body).unwrap();
                assert_eq!(v["code"], code, "{path}: {v}");
            }
        }
    }
}

#[actix_web::test]
async fn an_ipv4_sp_on_a_dual_stack_listener_is_known_by_its_ipv4_address() {
    let w = common::world().await;
    let ids = common::pii_datasets(1);
    // Registered with 127.0.0.1; the second listener is dual-stack, where it arrives as
    // ::ffff:127.0.0.1.
    let creds = w.register(PackagingMode::A, &ids);
    common::authenticated_tx(&w.p, "t-v6", &creds.client_id, "tx-v6-1", &[&ids[0]]);
    let listener = std::net::TcpListener::bind("[::]:0").unwrap();
    let base = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let srv = mydata_server::http::server(w.p.clone(), listener).unwrap();
    let handle = srv.handle();
    actix_web::rt::spawn(srv);

    let (status, body) = get(&base, "txid_status", &[("tx_id", "tx-v6-1")]).await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["code"], "100");
    // An unknown ticket from a registered address is 403, not the 401 of an unknown address.
    let (status, _) = get(
        &base,
        "data",
        &[("permission_ticket", "6b1f0e52-2c1d-4f7a-9a57-0f3c1d2e8b44")],
    )
    .await;
    assert_eq!(status, 403);
    handle.stop(true).await;
}

/// The JWE of one delivered transaction of a CBC SP: consent, poll until 200; the
/// transaction's `secret_key` and the compact JWE.
async fn cbc_delivery(
    w: &common::World,
    creds: &mydata_server::platform::SpCredentials,
    ids: &[String],
    n: usize,
) -> (mydata_protocol::ids::SecretKey, String) {
    use mydata_protocol::param::ParamMode;
    let tx_id = format!("tx-iv-{n}");
    let t = common::authenticated_tx(
        &w.p,
        &format!("t-iv-{n}"),
        &creds.client_id,
        &tx_id,
        &[&ids[0]],
    );
    let code = mydata_server::engine::consent(w.p.clone(), t, common::citizen_claims(&w.p))
        .await
        .unwrap();
    assert_eq!(code, mydata_protocol::codes::ReturnCode::Success);
    let body = w
        .sp_api_calls()
        .into_iter()
        .find(|b| b["tx_id"] == tx_id.as_str())
        .unwrap();
    let key = common::cipher_in(creds, ParamMode::Cbc)
        .decrypt(body["secret_key"].as_str().unwrap())
        .unwrap()
        .parse()
        .unwrap();
    let ticket = body["permission_ticket"].as_str().unwrap();
    let (status, jwe) = common::poll_until_ready(&w.srv.url, ticket, &tx_id).await;
    assert_eq!(status, 200, "{jwe}");
    (key, jwe)
}

/// jwcrypto (tests/interop/jwe.py, Python we did not write) decrypts `compact` under `key` in mode
/// CBC: the plaintext.
fn jwcrypto_decrypt(key: &str, compact: &str) -> Vec<u8> {
    let py = std::env::var("MYDATA_PYTHON")
        .expect("MYDATA_PYTHON: run the tests with bash tests/run.sh");
    let dir = std::env::var("MYDATA_INTEROP_DIR")
        .unwrap_or_else(|_| format!("{}/../../tests/interop", env!("CARGO_MANIFEST_DIR")));
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), compact).unwrap();
    let out = std::process::Command::new(py)
        .arg(format!("{dir}/jwe.py"))
        .args(["decrypt", "--key", key, "--mode", "cbc", "--in"])
        .arg(file.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "jwe.py decrypt: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// `jwe_random_iv` (D2, §12; issue 20 item 10): unset, a CBC SP's JWE content IV is its `cbc_iv`;
/// set, it is 16 random bytes, different for every delivery, and the JWE still opens in the SP
/// SDK's reader and in jwcrypto.
#[actix_web::test]
async fn jwe_random_iv_makes_the_cbc_content_iv_random() {
    use mydata_protocol::jwe::{self, JweMode};
    use mydata_server::platform::NewSp;
    for random in [false, true] {
        let w = common::world_custom(&[], None, |c| c.jwe_random_iv = random).await;
        let ids = common::pii_datasets(1);
        let (_, creds) =
            w.p.register_sp(NewSp {
                tls_ca: None,
                name: "CBC".into(),
                return_url: common::RETURN.into(),
                sp_api_url: w.sp_api_url.clone(),
                allowed_ips: vec!["127.0.0.1".parse().unwrap()],
                client_cert_sha256: Vec::new(),
                resources: ids.iter().map(|i| i.parse().unwrap()).collect(),
                jwe_mode: JweMode::Cbc,
                packaging_mode: PackagingMode::B,
                ..NewSp::default()
            })
            .unwrap();
        let sp = mydata_sp::SpConfig::new(
            w.srv.url.clone(),
            creds.client_id.parse().unwrap(),
            creds.client_secret.parse().unwrap(),
            creds.cbc_iv.parse().unwrap(),
            common::RETURN,
        );
        let mut ivs = Vec::new();
        for n in 0..2 {
            let (key, compact) = cbc_delivery(&w, &creds, &ids, n).await;
            let iv = jwe::content_iv(&compact).unwrap();
            // Our SP reader opens it and the package verifies.
            let delivered = sp
                .open_package(&compact, &key, &mydata_sp::package::Expectations::now())
                .unwrap();
            assert!(delivered.verified());
            // So does jwcrypto, to the same payload.
            let plain = jwe::decrypt_compact(&compact, &key, JweMode::Cbc).unwrap();
            assert_eq!(jwcrypto_decrypt(key.as_str(), &compact), plain);
            ivs.push(iv);
        }
        let cbc_iv = creds.cbc_iv.as_bytes();
        if random {
            assert!(
                ivs.iter().all(|iv| iv.len() == 16 && iv != cbc_iv),
                "{ivs:?}"
            );
            assert_ne!(ivs[0], ivs[1], "a fresh IV per delivery");
        } else {
            assert!(ivs.iter().all(|iv| iv == cbc_iv), "{ivs:?}");
        }
    }
}

/// A world trusting `trusted` as proxies, with an SP registered at 198.51.100.7 and its
/// transaction `tx-xff-1`.
async fn behind_balancer(ids: &[String], trusted: &[&str]) -> common::World {
    let w = common::world_custom(&[], None, |c| {
        c.trusted_proxies = trusted.iter().map(|s| s.to_string()).collect();
    })
    .await;
    let (_, creds) =
        w.p.register_sp(mydata_server::platform::NewSp {
            tls_ca: None,
            name: "behind a balancer".into(),
            return_url: "http://127.0.0.1:1/return".into(),
            sp_api_url: w.sp_api_url.clone(),
            allowed_ips: vec!["198.51.100.7".parse().unwrap()],
            client_cert_sha256: Vec::new(),
            resources: vec![ids[0].parse().unwrap()],
            ..Default::default()
        })
        .unwrap();
    common::authenticated_tx(&w.p, "t-xff", &creds.client_id, "tx-xff-1", &[&ids[0]]);
    w
}

/// An SP at 198.51.100.7 behind a load balancer on 127.0.0.1 (D26): with the balancer trusted, the
/// right-most untrusted `X-Forwarded-For` address is the source; an address the client wrote
/// itself, left of the balancer's, is not believed; without trusted proxies the header is ignored.
#[actix_web::test]
async fn behind_a_trusted_proxy_the_source_is_the_rightmost_untrusted_forwarded_address() {
    let ids = common::pii_datasets(1);
    let w = behind_balancer(&ids, &["127.0.0.1"]).await;
    let status = |xff: &'static str| {
        let base = w.srv.url.clone();
        async move {
            get(
                &base,
                "txid_status",
                &[("tx_id", "tx-xff-1"), ("X-Forwarded-For", xff)],
            )
            .await
        }
    };
    let (s, body) = status("6.6.6.6, 198.51.100.7").await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["code"], "100");
    // The client put the SP's address first; the balancer appended the client's real one.
    assert_eq!(status("198.51.100.7, 6.6.6.6").await.0, 401);

    // Nothing trusted: the TCP peer (127.0.0.1) is the source, whatever the header says.
    let w = behind_balancer(&ids, &[]).await;
    let (s, _) = get(
        &w.srv.url,
        "txid_status",
        &[("tx_id", "tx-xff-1"), ("X-Forwarded-For", "198.51.100.7")],
    )
    .await;
    assert_ne!(s, 200);
}
