//! The whole online flow with every hop on HTTPS (issue 15): the citizen's pages, the SP-API
//! (mutual TLS required by the SP), the DP-API and the DP's introspection (the sandbox DP on
//! HTTPS), and the MyData-API polled by Python `requests` with the SP's client certificate
//! (mutual TLS required by the MyData-API through the SP's pin). All with the sandbox TLS PKI
//! that `mydata serve --sandbox --sandbox-tls` uses.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use mydata_protocol::jwe::JweMode;
use mydata_protocol::package::sp::PackagingMode;
use mydata_server::platform::NewSp;
use serde_json::json;

fn pki(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/pki/tls")
        .join(name)
}

#[actix_web::test]
async fn every_hop_on_https_with_mutual_tls_toward_the_sp_and_on_the_mydata_api() {
    let w = world_custom(&[], None, |c| {
        c.sandbox_tls = true;
        c.tls_client_ca = Some(pki("tls-root-ca.pem"));
    })
    .await;
    assert!(w.srv.url.starts_with("https://"), "{}", w.srv.url);
    // The sandbox DP serves HTTPS: every sandbox dataset's endpoint is https.
    let ids = pii_datasets(1);
    let dp = w.p.store.get_dp(&ids[0]).unwrap().unwrap();
    assert!(
        dp.endpoint.starts_with("https://localhost:"),
        "{}",
        dp.endpoint
    );

    // The SP: its SP-API on HTTPS requiring the platform's client certificate; its MyData-API
    // calls bound to its own certificate.
    let (sp_api_url, seen) = start_sp_api_tls(true);
    let sp_pin = {
        let cert =
            openssl::x509::X509::from_pem(&std::fs::read(pki("sp-client.pem")).unwrap()).unwrap();
        mydata_protocol::tls::acceptor::fingerprint(&cert)
    };
    let (_, creds) =
        w.p.register_sp(NewSp {
            name: "HTTPS SP".into(),
            purpose: "申請測試 / testing".into(),
            return_url: RETURN.into(),
            sp_api_url,
            allowed_ips: vec!["127.0.0.1".parse().unwrap()],
            client_cert_sha256: vec![sp_pin],
            resources: ids.iter().map(|i| i.parse().unwrap()).collect(),
            jwe_mode: JweMode::Gcm,
            packaging_mode: PackagingMode::A,
            ..NewSp::default()
        })
        .unwrap();

    // The citizen, over HTTPS.
    let base = w.srv.url.replace("127.0.0.1", "localhost");
    let mut b = Browser::new(&base);
    let url = redirect_url(&base, &creds, &ids, "tx-https-1", CITIZEN, RETURN);
    let (flow, page) = b.open(&url).await;
    let p = b.through_basic(&flow, page, CITIZEN, "0770101").await;
    let p = b
        .submit(
            &flow,
            "pii",
            &p.csrf(),
            &[
                ("nhi_card_number", "000018342761"),
                ("household_number", "a2034517"),
            ],
        )
        .await;
    assert_eq!(p.step(), "consent");
    let a = b
        .submit(&flow, "consent", &p.csrf(), &[("decision", "agree")])
        .await;
    assert_eq!(a.status, 302);
    assert_eq!(a.returned(&creds), (200, Some("tx-https-1".to_string())));

    // The SP-API call reached the SP over mutual TLS.
    let calls = seen.lock().unwrap().clone();
    assert_eq!(calls.len(), 1, "{calls:?}");
    let ticket = calls[0]["permission_ticket"].as_str().unwrap().to_string();
    // GCM mode: the SP-API carries the secret_key encrypted like the parameters.
    let key: mydata_protocol::ids::SecretKey = cipher(&creds)
        .decrypt(calls[0]["secret_key"].as_str().unwrap())
        .unwrap()
        .parse()
        .unwrap();

    // The MyData-API, polled by Python `requests` with the SP's certificate, until the DP-API
    // calls (over HTTPS, introspected over HTTPS) are done.
    let poll = |cert: bool| {
        let mut args = json!({
            "url": format!("{base}/service/data"),
            "ca": pki("tls-root-ca.pem"),
            "headers": {"permission_ticket": ticket, "tx_id": "tx-https-1"},
        });
        if cert {
            args["cert"] = json!(pki("sp-client.pem"));
            args["key"] = json!(pki("sp-client.key"));
        }
        run_interop("mtls_poll.py", args)
    };
    // Without its certificate the SP is not let in, whatever its IP.
    let refused = poll(false).await;
    assert_ne!(refused["status"], 200, "{refused}");
    assert_ne!(refused["status"], 429, "{refused}");
    let mut answer = poll(true).await;
    for _ in 0..600 {
        if answer["status"] != 429 {
            break;
        }
        actix_web::rt::time::sleep(std::time::Duration::from_millis(100)).await;
        answer = poll(true).await;
    }
    assert_eq!(answer["status"], 200, "{answer}");
    assert_eq!(answer["tls_version"], "TLSv1.3", "{answer}");
    let reports = open_delivery_in(
        answer["body"].as_str().unwrap(),
        &key,
        &creds.client_id,
        w.p.clock.now(),
        JweMode::Gcm,
    );
    assert_eq!(reports.len(), 1);
    assert!(
        matches!(reports[0].package, Some(Ok(_))),
        "the DP package ships and verifies: {:?}",
        reports[0].entry
    );
}
