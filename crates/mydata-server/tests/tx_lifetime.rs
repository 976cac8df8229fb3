//! Issue 20 item 4 over real HTTP on 127.0.0.1 (spec D19, D21, D37, §8.3): a (client_id, tx_id)
//! names one transaction for 8 hours whatever happens to it. An abandoned transaction reports
//! 408 once its time before consent has run out and loses its `pid` at the next purge; its pair
//! is refused with 400 until the 8 hours have passed, then txid_status says 404. A redirect
//! refused at §5.3 step 12 (409) leaves an ended transaction too.

mod common;

use mydata_protocol::package::sp::PackagingMode;
use mydata_server::engine;
use serde_json::Value;

use common::{Browser, CITIZEN, OTHER, World, pii_datasets, world};

/// `txid_status` of `tx_id`: the HTTP status and the body's `code`.
async fn txid_status(w: &World, tx_id: &str) -> (u16, Option<String>) {
    let mut r = awc::Client::default()
        .get(format!("{}/service/txid_status", w.srv.url))
        .insert_header(("tx_id", tx_id))
        .send()
        .await
        .unwrap();
    let body = r.body().await.unwrap();
    let code = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v["code"].as_str().map(str::to_string));
    (r.status().as_u16(), code)
}

#[actix_web::test]
async fn an_abandoned_transaction_says_408_loses_its_pid_and_keeps_its_pair_for_8_hours() {
    let w = world().await;
    let ids = pii_datasets(1);
    let creds = w.register(PackagingMode::B, &ids);
    let redirect = w.redirect(&creds, &ids, "tx-left", CITIZEN);
    let mut b = Browser::new(&w.srv.url);
    b.open(&redirect).await;
    assert_eq!(txid_status(&w, "tx-left").await, (200, Some("100".into())));

    // 1,201 s idle: abandoned. 408 at once, before any purge.
    w.clock.advance(1_201);
    assert_eq!(txid_status(&w, "tx-left").await, (200, Some("408".into())));
    let r = engine::purge(&w.p).unwrap();
    assert_eq!(r.expired, 1, "{r:?}");
    let tx =
        w.p.store
            .find_tx(&creds.client_id, "tx-left")
            .unwrap()
            .expect("the record stays");
    assert_eq!((tx.state.as_str(), tx.code), ("ended", Some(408)));
    assert!(tx.pid_sealed.is_none(), "the pid goes when it ends (D37)");

    // Past the old 3,600 s purge: still the same transaction; the pair is refused (400), and
    // the refusal does not start a new transaction.
    w.clock.advance(5_000);
    engine::purge(&w.p).unwrap();
    assert_eq!(txid_status(&w, "tx-left").await, (200, Some("408".into())));
    let a = Browser::new(&w.srv.url).get(&redirect).await;
    assert_eq!(a.returned(&creds).0, 400);
    assert_eq!(txid_status(&w, "tx-left").await, (200, Some("408".into())));

    // At 8 hours it is still there; more than 8 hours after it began: gone, 404 (D19).
    w.clock.advance(28_800 - 1_201 - 5_000);
    assert_eq!(engine::purge(&w.p).unwrap().purged, 0);
    assert_eq!(txid_status(&w, "tx-left").await, (200, Some("408".into())));
    w.clock.advance(1);
    let r = engine::purge(&w.p).unwrap();
    assert_eq!(r.purged, 1, "{r:?}");
    assert_eq!(txid_status(&w, "tx-left").await.0, 404);
}

#[actix_web::test]
async fn a_redirect_refused_at_step_12_leaves_an_ended_transaction() {
    let w = world().await;
    let ids = pii_datasets(1);
    let creds = w.register(PackagingMode::B, &ids);
    // A browser whose platform session is authenticated as CITIZEN...
    let mut b = Browser::new(&w.srv.url);
    let (flow, page) = b.open(&w.redirect(&creds, &ids, "tx-own", CITIZEN)).await;
    let p = b.through_basic(&flow, page, CITIZEN, "0770101").await;
    let p = b.two_documents(&flow, &p.csrf()).await;
    assert_eq!(p.step(), "consent");
    // ... opens a redirect for someone else: 409 (§5.3 step 12).
    let a = b.get(&w.redirect(&creds, &ids, "tx-other", OTHER)).await;
    assert_eq!(a.returned(&creds), (409, Some("tx-other".to_string())));
    assert_eq!(txid_status(&w, "tx-other").await, (200, Some("409".into())));
    let tx =
        w.p.store
            .find_tx(&creds.client_id, "tx-other")
            .unwrap()
            .unwrap();
    assert!(tx.pid_sealed.is_none());
    // The pair is spent: another browser gets 400, not a new transaction.
    let a = Browser::new(&w.srv.url)
        .get(&w.redirect(&creds, &ids, "tx-other", OTHER))
        .await;
    assert_eq!(a.returned(&creds).0, 400);
    assert_eq!(txid_status(&w, "tx-other").await, (200, Some("409".into())));
}
