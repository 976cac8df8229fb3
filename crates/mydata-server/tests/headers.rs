//! Rules that existed without a test (issue 20, "Rules that exist but no test checks"), over real
//! HTTP on 127.0.0.1: the citizen pages' security headers and cookie (D46), `no-store` on every
//! MyData-API answer (§8.1), D38's plain 404 for the reserved `/service/spsignature/...` paths, and
//! the `txid_status` codes through a transaction's life (§8.3, D27).

mod common;

use mydata_protocol::package::sp::PackagingMode;
use serde_json::Value;

use common::{Browser, CITIZEN, pii_datasets, world, world_custom};

const CSP: &str = "default-src 'none'; style-src 'self'; frame-ancestors 'none'; base-uri 'none'";

/// One GET without redirects: status, headers, body.
async fn get(url: &str, headers: &[(&str, &str)]) -> (u16, awc::http::header::HeaderMap, String) {
    let mut req = awc::Client::builder().disable_redirects().finish().get(url);
    for (k, v) in headers {
        req = req.insert_header((*k, *v));
    }
    let mut r = req.send().await.unwrap();
    let body = r.body().limit(64 << 20).await.unwrap();
    (
        r.status().as_u16(),
        r.headers().clone(),
        String::from_utf8_lossy(&body).into_owned(),
    )
}

fn header<'a>(h: &'a awc::http::header::HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

fn assert_page_headers(what: &str, h: &awc::http::header::HeaderMap) {
    assert_eq!(header(h, "cache-control"), Some("no-store"), "{what}");
    assert_eq!(header(h, "content-security-policy"), Some(CSP), "{what}");
    assert_eq!(header(h, "x-frame-options"), Some("DENY"), "{what}");
    assert_eq!(header(h, "referrer-policy"), Some("no-referrer"), "{what}");
}

#[actix_web::test]
async fn citizen_pages_carry_the_d46_headers() {
    let w = world().await;
    let ids = pii_datasets(1);
    let creds = w.register(PackagingMode::B, &ids);
    let redirect = w.redirect(&creds, &ids, "tx-hdr", CITIZEN);
    let (s, h, _) = get(&redirect, &[]).await;
    assert_eq!(s, 303);
    assert_page_headers("the redirect's 303", &h);
    let cookie = header(&h, "set-cookie").unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    assert!(!cookie.contains("Secure"), "http public URL: {cookie}");
    let flow = format!("{}{}", w.srv.url, header(&h, "location").unwrap());
    let pair = cookie.split(';').next().unwrap().to_string();
    let (s, h, body) = get(&flow, &[("cookie", &pair)]).await;
    assert_eq!(s, 200, "{body}");
    assert_page_headers("a flow page", &h);
    // Another browser: the 403 page, same headers.
    let (s, h, _) = get(&flow, &[]).await;
    assert_eq!(s, 403);
    assert_page_headers("the 403 page", &h);
    // A redirect for no service: plain 404, same headers.
    let (s, h, body) = get(&format!("{}/service/CLI.NOSUCH0001/x/y", w.srv.url), &[]).await;
    assert_eq!((s, body.as_str()), (404, "Not Found"));
    assert_page_headers("the plain 404", &h);
}

#[actix_web::test]
async fn the_session_cookie_is_secure_under_an_https_public_url() {
    let w = world_custom(&[], None, |c| {
        c.public_url = "https://mydata.example.test".into()
    })
    .await;
    let ids = pii_datasets(1);
    let creds = w.register(PackagingMode::B, &ids);
    let (s, h, _) = get(&w.redirect(&creds, &ids, "tx-secure", CITIZEN), &[]).await;
    assert_eq!(s, 303);
    let cookie = header(&h, "set-cookie").unwrap();
    assert!(cookie.contains("Secure"), "{cookie}");
}

#[actix_web::test]
async fn the_reserved_spsignature_paths_answer_a_plain_404() {
    let w = world().await;
    for path in [
        "/service/spsignature",
        "/service/spsignature/CLI.SANDBOX001/x/y",
    ] {
        let (s, h, body) = get(&format!("{}{path}", w.srv.url), &[]).await;
        assert_eq!(s, 404, "{path}");
        assert!(
            header(&h, "content-type").is_some_and(|t| t.starts_with("text/plain")),
            "{path}: {h:?}"
        );
        assert!(!body.contains('<'), "{path}: {body}");
    }
}

/// `txid_status` and `type_valid` through one transaction's life, and `no-store` on every
/// MyData-API answer on the way.
#[actix_web::test]
async fn status_codes_through_a_transaction_and_no_store_everywhere() {
    let w = world().await;
    let ids = pii_datasets(1);
    let creds = w.register(PackagingMode::B, &ids);
    let base = w.srv.url.clone();
    let api = |path: &'static str, headers: Vec<(&'static str, String)>| {
        let base = base.clone();
        async move {
            let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let (s, hm, body) = get(&format!("{base}/service/{path}"), &h).await;
            assert_eq!(
                header(&hm, "cache-control"),
                Some("no-store"),
                "{path} {s}: every MyData-API answer is no-store (§8.1)"
            );
            let code = serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|v| v["code"].as_str().map(str::to_string));
            (s, code)
        }
    };
    let status = |tx: &'static str| api("txid_status", vec![("tx_id", tx.to_string())]);
    // Unknown: 404; malformed: 400.
    assert_eq!(status("tx-none").await, (404, None));
    assert_eq!(api("txid_status", vec![]).await.0, 400);
    assert_eq!(api("type_valid", vec![]).await.0, 400);
    assert_eq!(api("data", vec![]).await.0, 400);
    assert_eq!(
        api("data", vec![("permission_ticket", uuid_like())])
            .await
            .0,
        403
    );

    // Redirected: 100.
    let mut b = Browser::new(&w.srv.url);
    let (flow, page) = b.open(&w.redirect(&creds, &ids, "tx-life", CITIZEN)).await;
    assert_eq!(status("tx-life").await, (200, Some("100".into())));
    assert_eq!(
        api("type_valid", vec![("tx_id", "tx-life".into())]).await,
        (200, Some("100".into()))
    );
    let p = b.through_basic(&flow, page, CITIZEN, "0770101").await;
    let p = b.two_documents(&flow, &p.csrf()).await;
    assert_eq!(
        api("type_valid", vec![("tx_id", "tx-life".into())]).await,
        (200, Some("200".into()))
    );
    let a = b
        .submit(&flow, "consent", &p.csrf(), &[("decision", "agree")])
        .await;
    assert_eq!(a.returned(&creds).0, 200);
    // Consented: 102 or already 200; then 200 (ready), 201 (taken).
    let (s, code) = status("tx-life").await;
    assert!(
        s == 200 && matches!(code.as_deref(), Some("102" | "200")),
        "{code:?}"
    );
    let call = w.sp_api_calls().last().unwrap().clone();
    let ticket = call["permission_ticket"].as_str().unwrap().to_string();
    let (s, _) = common::poll_until_ready(&w.srv.url, &ticket, "tx-life").await;
    assert_eq!(s, 200);
    // The taking is recorded once the server has written the last byte (D25), a moment after
    // the client read it: wait for it rather than race it.
    let start = std::time::Instant::now();
    let mut taken = status("tx-life").await;
    while taken == (200, Some("200".into())) {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(60),
            "the taking was not recorded within 60 s"
        );
        actix_web::rt::time::sleep(std::time::Duration::from_millis(20)).await;
        taken = status("tx-life").await;
    }
    assert_eq!(taken, (200, Some("201".into())));
    assert_eq!(
        api("data", vec![("permission_ticket", ticket.clone())])
            .await
            .0,
        201
    );

    // Ended before consent: 205.
    let mut b = Browser::new(&w.srv.url);
    let (flow, page) = b
        .open(&w.redirect(&creds, &ids, "tx-refuse", CITIZEN))
        .await;
    let p = b.through_basic(&flow, page, CITIZEN, "0770101").await;
    let p = b.two_documents(&flow, &p.csrf()).await;
    b.submit(&flow, "consent", &p.csrf(), &[("decision", "refuse")])
        .await;
    assert_eq!(status("tx-refuse").await, (200, Some("205".into())));

    // The same tx_id at two services of this source: 400 without client_id, 200 with it.
    let other = w.register(PackagingMode::B, &ids);
    Browser::new(&w.srv.url)
        .open(&w.redirect(&other, &ids, "tx-life", CITIZEN))
        .await;
    assert_eq!(status("tx-life").await.0, 400);
    assert_eq!(
        api(
            "txid_status",
            vec![
                ("tx_id", "tx-life".into()),
                ("client_id", other.client_id.clone())
            ]
        )
        .await,
        (200, Some("100".into()))
    );
}

/// A well-formed ticket that no transaction holds.
fn uuid_like() -> String {
    "3f2a9c1e-7b4d-4e8a-9c2f-1a2b3c4d5e6f".into()
}
