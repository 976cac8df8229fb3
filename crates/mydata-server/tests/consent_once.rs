//! Issue 20 item 3 and the "SP-API at most once" rule over real HTTP on 127.0.0.1 (spec §6,
//! §7, D22): `code=200` reaches the SP only after the SP-API answered, a reload of the flow page
//! during the call waits instead, and two consent posts racing on two workers call the SP-API
//! once.

mod common;

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{App, HttpResponse, HttpServer, web};
use mydata_protocol::package::sp::PackagingMode;
use mydata_server::engine::state;
use mydata_server::platform::{NewSp, SpCredentials};
use serde_json::Value;

use common::{Browser, CITIZEN, RETURN, World, pii_datasets, world};

/// An SP-API that answers after `delay` with the status held in the returned cell; the bodies
/// it received.
fn slow_sp_api(delay: Duration) -> (String, Arc<AtomicU16>, Arc<Mutex<Vec<Value>>>) {
    let status = Arc::new(AtomicU16::new(200));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (st, sn) = (status.clone(), seen.clone());
    let srv = HttpServer::new(move || {
        let (st, sn) = (st.clone(), sn.clone());
        App::new().route(
            "/sp-api",
            web::post().to(move |body: web::Json<Value>| {
                let (st, sn) = (st.clone(), sn.clone());
                async move {
                    sn.lock().unwrap().push(body.into_inner());
                    actix_web::rt::time::sleep(delay).await;
                    let code = st.load(Ordering::SeqCst);
                    HttpResponse::build(actix_web::http::StatusCode::from_u16(code).unwrap())
                        .finish()
                }
            }),
        )
    })
    .workers(2)
    .bind("127.0.0.1:0")
    .unwrap();
    let addr = srv.addrs()[0];
    actix_web::rt::spawn(srv.run());
    (format!("http://{addr}/sp-api"), status, seen)
}

fn register(w: &World, sp_api_url: &str, ids: &[String]) -> SpCredentials {
    w.p.register_sp(NewSp {
        tls_ca: None,
        name: "Slow SP".into(),
        purpose: "testing".into(),
        return_url: RETURN.into(),
        sp_api_url: sp_api_url.into(),
        allowed_ips: vec!["127.0.0.1".parse().unwrap()],
        client_cert_sha256: Vec::new(),
        resources: ids.iter().map(|i| i.parse().unwrap()).collect(),
        jwe_mode: mydata_protocol::jwe::JweMode::Gcm,
        packaging_mode: PackagingMode::B,
        ..Default::default()
    })
    .unwrap()
    .1
}

/// Takes a browser through to the consent page of `tx_id`: the flow path and the form's CSRF.
async fn to_consent(
    w: &World,
    b: &mut Browser,
    creds: &SpCredentials,
    ids: &[String],
    tx_id: &str,
) -> (String, String) {
    let (flow, page) = b.open(&w.redirect(creds, ids, tx_id, CITIZEN)).await;
    let p = b.through_basic(&flow, page, CITIZEN, "0770101").await;
    let p = b.two_documents(&flow, &p.csrf()).await;
    assert_eq!(p.step(), "consent");
    (flow, p.csrf())
}

/// The same browser (same cookies) in a second tab.
fn second_tab(b: &Browser) -> Browser {
    let mut t = Browser::new(&b.base);
    t.cookies = b.cookies.clone();
    t
}

/// Waits until the transaction `tx_id` of `client_id` is in state `want`.
async fn wait_state(
    w: &World,
    client_id: &str,
    tx_id: &str,
    want: mydata_server::storage::TxPhase,
) {
    for _ in 0..400 {
        let st =
            w.p.store
                .find_tx(client_id, tx_id)
                .unwrap()
                .map(|t| t.state);
        if st == Some(want) {
            return;
        }
        actix_web::rt::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{tx_id} never reached {want}");
}

#[actix_web::test]
async fn a_reload_during_the_sp_api_call_waits_and_never_returns_200_before_the_answer() {
    let w = world().await;
    let ids = pii_datasets(1);
    let (url, status, seen) = slow_sp_api(Duration::from_millis(1500));
    let creds = register(&w, &url, &ids);

    // The SP-API will fail (500): the transaction must end 410 and nothing may say 200.
    status.store(500, Ordering::SeqCst);
    let mut b = Browser::new(&w.srv.url);
    let (flow, csrf) = to_consent(&w, &mut b, &creds, &ids, "tx-fails").await;
    let mut tab = second_tab(&b);
    let (f2, c2) = (flow.clone(), csrf.clone());
    let consent = actix_web::rt::spawn(async move {
        b.post(
            &format!("{f2}/consent"),
            &[("csrf", &c2), ("decision", "agree")],
        )
        .await
    });
    wait_state(&w, &creds.client_id, "tx-fails", state::CALLING_SP).await;
    // A reload while the SP-API call is made: a page that reloads itself, not code=200.
    let r = tab.get(&flow).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.location.is_none(), "{r:?}");
    assert!(r.body.contains("Please wait"), "{}", r.body);
    let a = consent.await.unwrap();
    assert_eq!(a.returned(&creds), (410, Some("tx-fails".to_string())));
    // After the answer, the reload goes back to the SP with the same code.
    let r = tab.get(&flow).await;
    assert_eq!(r.returned(&creds), (410, Some("tx-fails".to_string())));
    assert_eq!(seen.lock().unwrap().len(), 1);

    // The same with an SP-API that answers 200: waiting, then 200.
    status.store(200, Ordering::SeqCst);
    let mut b = Browser::new(&w.srv.url);
    let (flow, csrf) = to_consent(&w, &mut b, &creds, &ids, "tx-ok").await;
    let mut tab = second_tab(&b);
    let f2 = flow.clone();
    let consent = actix_web::rt::spawn(async move {
        b.post(
            &format!("{f2}/consent"),
            &[("csrf", &csrf), ("decision", "agree")],
        )
        .await
    });
    wait_state(&w, &creds.client_id, "tx-ok", state::CALLING_SP).await;
    let r = tab.get(&flow).await;
    assert!(
        r.location.is_none() && r.body.contains("Please wait"),
        "{r:?}"
    );
    let a = consent.await.unwrap();
    assert_eq!(a.returned(&creds), (200, Some("tx-ok".to_string())));
    let r = tab.get(&flow).await;
    assert_eq!(r.returned(&creds), (200, Some("tx-ok".to_string())));
}

#[actix_web::test]
async fn two_racing_consent_posts_call_the_sp_api_once() {
    let w = world().await;
    let ids = pii_datasets(1);
    let (url, _status, seen) = slow_sp_api(Duration::from_millis(500));
    let creds = register(&w, &url, &ids);
    for round in 0..5 {
        let tx_id = format!("tx-race-{round}");
        let mut b = Browser::new(&w.srv.url);
        let (flow, csrf) = to_consent(&w, &mut b, &creds, &ids, &tx_id).await;
        let mut tab = second_tab(&b);
        let form = [("csrf", csrf.as_str()), ("decision", "agree")];
        let path = format!("{flow}/consent");
        // Both posts in flight at once (the platform runs one worker per core).
        let (a1, a2) = futures_join(b.post(&path, &form), tab.post(&path, &form)).await;
        let calls = seen
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c["tx_id"] == tx_id.as_str())
            .count();
        assert_eq!(
            calls, 1,
            "round {round}: the SP-API was called {calls} times"
        );
        // One post returns to the SP with 200; the other shows the transaction as it is: a
        // page of the flow (to wait or to return), never a second ticket.
        let returned: Vec<_> = [&a1, &a2]
            .iter()
            .filter(|a| a.status == 302)
            .map(|a| a.returned(&creds))
            .collect();
        assert!(
            returned.iter().all(|r| *r == (200, Some(tx_id.clone()))),
            "{returned:?}"
        );
        for a in [&a1, &a2] {
            let shown_again = a.status == 303 && a.location.as_deref() == Some(&flow);
            let waiting = a.status == 200 && a.body.contains("Please wait");
            assert!(a.status == 302 || shown_again || waiting, "{a:?}");
        }
    }
}

/// Runs two futures concurrently on the current task (both requests in flight together).
async fn futures_join<A, B>(a: A, b: B) -> (A::Output, B::Output)
where
    A: std::future::Future,
    B: std::future::Future,
{
    tokio::join!(a, b)
}

/// The same race without HTTP's timing: two consents of one loaded transaction, run together,
/// as two workers that both read it before either wrote. One calls the SP-API; the other is
/// refused with `Conflict`.
#[actix_web::test]
async fn two_consents_of_one_loaded_transaction_call_the_sp_api_once() {
    let w = world().await;
    let ids = pii_datasets(1);
    let (url, _status, seen) = slow_sp_api(Duration::from_millis(300));
    let creds = register(&w, &url, &ids);
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let t = common::authenticated_tx(&w.p, "t-race", &creds.client_id, "tx-race", &refs);
    let (a, b) = futures_join(
        mydata_server::engine::consent(w.p.clone(), t.clone(), common::citizen_claims(&w.p)),
        mydata_server::engine::consent(w.p.clone(), t, common::citizen_claims(&w.p)),
    )
    .await;
    assert_eq!(seen.lock().unwrap().len(), 1, "the SP-API was called twice");
    let ok = [&a, &b].iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok, 1, "{a:?} {b:?}");
    assert!(
        [&a, &b]
            .iter()
            .any(|r| matches!(r, Err(mydata_server::ServerError::Conflict(_)))),
        "{a:?} {b:?}"
    );
}
