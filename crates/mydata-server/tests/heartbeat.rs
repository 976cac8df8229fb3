//! The DP heartbeat (spec §9.4, D30) end to end: a real local DP whose heartbeat answers 500,
//! probed by the platform every second; after three failures the endpoint is unreachable, a
//! redirect asking for its dataset ends with 504 (§5.3 step 10, D21), `/readyz` lists it and
//! stays ready, `/metrics` counts it; one healthy heartbeat makes it reachable again.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use common::*;
use mydata_dp::answer::HttpAnswer;
use mydata_protocol::package::sp::PackagingMode;

/// What the test DP saw and how it answers heartbeats.
#[derive(Default)]
struct Dp {
    healthy: AtomicBool,
    heartbeats: AtomicUsize,
    with_authorization: AtomicUsize,
    calls: AtomicUsize,
}

async fn dp_endpoint(req: HttpRequest, dp: web::Data<Arc<Dp>>) -> HttpResponse {
    let heartbeat = req
        .query_string()
        .split('&')
        .any(|kv| kv == "heartbeat=true");
    if !heartbeat {
        dp.calls.fetch_add(1, Ordering::SeqCst);
        return mydata_dp::actix::to_response(HttpAnswer::failed(503));
    }
    dp.heartbeats.fetch_add(1, Ordering::SeqCst);
    if req.headers().contains_key("authorization") {
        dp.with_authorization.fetch_add(1, Ordering::SeqCst);
    }
    mydata_dp::actix::to_response(HttpAnswer::heartbeat(dp.healthy.load(Ordering::SeqCst)))
}

fn start_dp(dp: Arc<Dp>) -> String {
    let srv = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(dp.clone()))
            .route("/api/ds", web::get().to(dp_endpoint))
    })
    .workers(1)
    .bind("127.0.0.1:0")
    .unwrap();
    let addr = srv.addrs()[0];
    actix_web::rt::spawn(srv.run());
    format!("http://{addr}/api/ds")
}

async fn readyz(base: &str) -> (u16, String) {
    let mut r = awc::Client::new()
        .get(format!("{base}/readyz"))
        .send()
        .await
        .unwrap();
    let body = r.body().await.unwrap();
    (
        r.status().as_u16(),
        String::from_utf8_lossy(&body).into_owned(),
    )
}

async fn metrics(base: &str) -> String {
    let mut r = awc::Client::new()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap();
    String::from_utf8_lossy(&r.body().await.unwrap()).into_owned()
}

/// Waits (a bounded number of 250 ms rounds, no timing asserted) until `/readyz` lists
/// `endpoint` as unreachable (`listed`) or no longer does.
async fn wait_listed(base: &str, endpoint: &str, listed: bool) -> String {
    let line = format!("dp_unreachable {endpoint}\n");
    for _ in 0..240 {
        let (status, body) = readyz(base).await;
        assert_eq!(
            status, 200,
            "an unreachable DP does not make the platform unready"
        );
        if body.contains(&line) == listed {
            return body;
        }
        actix_web::rt::time::sleep(Duration::from_millis(250)).await;
    }
    panic!(
        "{endpoint} never became {}",
        if listed { "unreachable" } else { "reachable" }
    );
}

#[actix_web::test]
async fn an_unreachable_dp_is_answered_504_until_a_heartbeat_succeeds() {
    let w = world_custom(&[], None, |c| c.heartbeat_interval_secs = 1).await;
    let ids = pii_datasets(2);
    let dp = Arc::new(Dp::default());
    let endpoint = start_dp(dp.clone());
    let mut record = w.p.store.get_dp(&ids[0]).unwrap().unwrap();
    record.endpoint = endpoint.clone();
    w.p.store.update_dp(&record).unwrap();
    let creds = w.register(PackagingMode::A, &ids);
    let mut b = Browser::new(&w.srv.url);

    // Three failed heartbeats: unreachable, listed by /readyz, which stays 200.
    let body = wait_listed(&w.srv.url, &endpoint, true).await;
    assert!(body.starts_with("ready\n"), "{body}");
    assert!(dp.heartbeats.load(Ordering::SeqCst) >= 3);
    assert_eq!(
        dp.with_authorization.load(Ordering::SeqCst),
        0,
        "a heartbeat carries no Authorization header"
    );
    assert!(!w.p.dp_health.is_reachable(&endpoint));
    let text = metrics(&w.srv.url).await;
    assert!(
        text.contains("mydata_dp_endpoints{state=\"unreachable\"} 1"),
        "{text}"
    );

    // A redirect asking for its dataset: 504 back to the SP (mode A: the whole transaction),
    // and the SP-API hears which dataset cannot be delivered (§5.3 step 10).
    let a = b.get(&w.redirect(&creds, &ids, "tx-hb-1", CITIZEN)).await;
    assert_eq!(a.returned(&creds), (504, Some("tx-hb-1".to_string())));
    let calls = w.sp_api_calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["unable_to_deliver"], serde_json::json!([ids[0]]));
    assert_eq!(
        dp.calls.load(Ordering::SeqCst),
        0,
        "the DP itself is never called"
    );
    // A redirect for the other dataset alone is accepted.
    let a = b
        .get(&w.redirect(&creds, &ids[1..], "tx-hb-2", CITIZEN))
        .await;
    assert!(
        !a.location.as_deref().unwrap_or("").starts_with(RETURN),
        "{a:?}"
    );

    // One healthy heartbeat: reachable again, and the same request is accepted.
    dp.healthy.store(true, Ordering::SeqCst);
    let body = wait_listed(&w.srv.url, &endpoint, false).await;
    assert_eq!(body, "ready\n");
    assert!(w.p.dp_health.is_reachable(&endpoint));
    let a = b.get(&w.redirect(&creds, &ids, "tx-hb-3", CITIZEN)).await;
    assert!(
        !a.location.as_deref().unwrap_or("").starts_with(RETURN),
        "{a:?}"
    );
    let text = metrics(&w.srv.url).await;
    assert!(
        text.contains("mydata_dp_endpoints{state=\"unreachable\"} 0"),
        "{text}"
    );
}

#[actix_web::test]
async fn interval_zero_turns_the_heartbeat_off() {
    let w = world_custom(&[], None, |c| c.heartbeat_interval_secs = 0).await;
    let ids = pii_datasets(1);
    let dp = Arc::new(Dp::default());
    let endpoint = start_dp(dp.clone());
    let mut record = w.p.store.get_dp(&ids[0]).unwrap().unwrap();
    record.endpoint = endpoint.clone();
    w.p.store.update_dp(&record).unwrap();
    // No task is started for it.
    assert!(mydata_server::engine::heartbeat::spawn(w.p.clone()).is_none());
    // A control beside it, on the same runtime: a platform probing every second. Once its DP
    // has been probed three times, the platform without heartbeat has had the same chances to
    // probe (however slow the machine), and has not.
    let control = world_custom(&[], None, |c| c.heartbeat_interval_secs = 1).await;
    let control_dp = Arc::new(Dp::default());
    control_dp.healthy.store(true, Ordering::SeqCst);
    let control_endpoint = start_dp(control_dp.clone());
    let mut record = control.p.store.get_dp(&ids[0]).unwrap().unwrap();
    record.endpoint = control_endpoint;
    control.p.store.update_dp(&record).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while control_dp.heartbeats.load(Ordering::SeqCst) < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "control: the platform with a 1 s interval did not probe 3 times in 120 s ({})",
            control_dp.heartbeats.load(Ordering::SeqCst)
        );
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(dp.heartbeats.load(Ordering::SeqCst), 0);
    assert!(w.p.dp_health.is_reachable(&endpoint));
    assert_eq!(readyz(&w.srv.url).await, (200, "ready\n".to_string()));
}
