//! The MyData-API's headers and source addresses over real HTTP (spec §8, D26, D27; issue 20
//! items 5 and 7): malformed headers of the status helpers are 400, and an IPv4 SP reaching a
//! dual-stack listener (`::ffff:a.b.c.d`) is known by its IPv4 address.

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
