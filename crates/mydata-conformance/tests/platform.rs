//! The platform suite against the reference server (in process, over 127.0.0.1): every check
//! passes; and through a mutating reverse proxy that breaks one rule at a time, exactly the
//! check of that rule fails.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use mydata_conformance::platform::{CHECKS, Profile, run};
use mydata_conformance::report::{Outcome, Report};
use mydata_server::clock::OffsetClock;
use mydata_server::config::Config;
use mydata_server::http::{Spawned, spawn_with};
use mydata_server::platform::Platform;
use mydata_server::secrets::MasterKey;
use mydata_server::storage::sqlite::SqliteStore;

fn free_url() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", l.local_addr().unwrap())
}

struct World {
    srv: Spawned,
    dp_url: String,
    sp_url: String,
    _dir: tempfile::TempDir,
}

/// The reference server in sandbox mode with the clock hook; the sandbox DP and SPs are left to
/// the suite, on free ports.
fn world() -> World {
    world_via(None)
}

/// [`world`], with the platform's DP calls going through a proxy with this mutation.
fn world_via(dp_mutation: Option<Mutation>) -> World {
    let dir = tempfile::tempdir().unwrap();
    let (dp_url, sp_url) = (free_url(), free_url());
    let platform_dp_url = match dp_mutation {
        Some(m) => proxy(&dp_url, m),
        None => dp_url.clone(),
    };
    let config = Config {
        data_dir: dir.path().to_path_buf(),
        sandbox: true,
        sandbox_clock: true,
        sandbox_dp_url: platform_dp_url,
        sandbox_sp_url: sp_url.clone(),
        ..Config::default()
    };
    let clock = OffsetClock::new();
    let store = Arc::new(SqliteStore::open(&dir.path().join("mydata.sqlite")).unwrap());
    let p = Platform::new(
        store,
        MasterKey::generate().unwrap(),
        Arc::new(clock.clone()),
        config,
    )
    .unwrap();
    p.load_sandbox().unwrap();
    let srv = spawn_with(Arc::new(p), Some(clock)).unwrap();
    World {
        srv,
        dp_url,
        sp_url,
        _dir: dir,
    }
}

/// One broken rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mutation {
    None,
    /// Redirect returns: `code=FROM` becomes `code=TO`.
    ReturnCode(&'static str, &'static str),
    /// `/service/data` answers: status FROM becomes TO.
    DataStatus(u16, u16),
    /// 429 without `Retry-After`.
    StripRetryAfter,
    /// The first JWE has one ciphertext character changed.
    CorruptFirstJwe,
    /// The second 200 says `Content-Type: text/plain`.
    SecondJweContentType,
    /// 201 is answered with the earlier 200 again.
    ReplayTaken,
    /// Upstream connections always come from 127.0.0.1.
    IgnoreSource,
    /// After the clock hook, 403 becomes 201.
    ForgetRetention,
    /// The first `/service/data` answer for each ticket: 429 becomes 403, as from a platform
    /// that records the ticket only once the SP-API call is acknowledged.
    FirstPoll403,
    /// Between the platform and the DP: `transaction_uid` sent in upper case.
    DpUpperUid,
    /// Between the platform and the DP: a 429's `Retry-After` shortened to 1 s, so the
    /// platform calls again before the DP asked.
    DpShortRetryAfter,
}

impl Mutation {
    fn on_dp_side(self) -> bool {
        matches!(self, Mutation::DpUpperUid | Mutation::DpShortRetryAfter)
    }
}

#[derive(Default)]
struct Seen {
    jwes: usize,
    last_200: Option<(String, web::Bytes)>,
    clock_moved: bool,
    tickets: std::collections::HashSet<String>,
}

struct Proxy {
    upstream: String,
    mutation: Mutation,
    seen: Mutex<Seen>,
}

async fn forward(px: web::Data<Proxy>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let peer = req
        .peer_addr()
        .map_or(IpAddr::V4(Ipv4Addr::LOCALHOST), |a| a.ip());
    let local = if px.mutation == Mutation::IgnoreSource {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        peer
    };
    let client = awc::Client::builder()
        .disable_redirects()
        .timeout(Duration::from_secs(60))
        .connector(awc::Connector::new().local_address(local))
        .finish();
    let mut pq = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    if px.mutation == Mutation::DpUpperUid
        && let Some(i) = pq.find("transaction_uid=")
    {
        let start = i + "transaction_uid=".len();
        let end = pq[start..].find('&').map_or(pq.len(), |k| start + k);
        let upper = pq[start..end].to_ascii_uppercase();
        pq.replace_range(start..end, &upper);
    }
    let mut up = client.request(req.method().clone(), format!("{}{pq}", px.upstream));
    for (k, v) in req.headers() {
        if !matches!(k.as_str(), "host" | "content-length" | "connection") {
            up = up.append_header((k.clone(), v.clone()));
        }
    }
    let mut r = up.send_body(body).await.unwrap();
    let mut status = r.status().as_u16();
    let mut headers: Vec<(String, String)> = r
        .headers()
        .iter()
        .filter(|(k, _)| {
            !matches!(
                k.as_str(),
                "content-length" | "transfer-encoding" | "connection" | "content-encoding"
            )
        })
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let mut bytes = r.body().limit(64 << 20).await.unwrap();
    let path = req.path();
    let data = path == "/service/data";
    let mut seen = px.seen.lock().unwrap();
    if path.starts_with("/sandbox/clock") {
        seen.clock_moved = true;
    }
    let first_poll = data
        && req
            .headers()
            .get("permission_ticket")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| seen.tickets.insert(t.to_string()));
    match px.mutation {
        Mutation::ReturnCode(from, to) if !data => {
            for (k, v) in headers.iter_mut() {
                if k == "location" {
                    *v = v.replace(&format!("code={from}"), &format!("code={to}"));
                }
            }
        }
        Mutation::DataStatus(from, to) if data && status == from => status = to,
        Mutation::FirstPoll403 if first_poll && status == 429 => status = 403,
        Mutation::StripRetryAfter if data && status == 429 => {
            headers.retain(|(k, _)| k != "retry-after");
        }
        Mutation::CorruptFirstJwe if data && status == 200 => {
            seen.jwes += 1;
            if seen.jwes == 1 {
                let mut t = bytes.to_vec();
                let last_dot = t.iter().rposition(|b| *b == b'.').unwrap();
                let i = last_dot - 3;
                t[i] = if t[i] == b'A' { b'B' } else { b'A' };
                bytes = web::Bytes::from(t);
            }
        }
        Mutation::SecondJweContentType if data && status == 200 => {
            seen.jwes += 1;
            if seen.jwes == 2 {
                for (k, v) in headers.iter_mut() {
                    if k == "content-type" {
                        *v = "text/plain".into();
                    }
                }
            }
        }
        Mutation::ReplayTaken if data => {
            let ct = headers
                .iter()
                .find(|(k, _)| k == "content-type")
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            if status == 200 {
                seen.last_200 = Some((ct, bytes.clone()));
            } else if status == 201
                && let Some((ct, b)) = seen.last_200.clone()
            {
                status = 200;
                headers.push(("content-type".into(), ct));
                bytes = b;
            }
        }
        Mutation::ForgetRetention if data && status == 403 && seen.clock_moved => status = 201,
        Mutation::DpShortRetryAfter if status == 429 => {
            for (k, v) in headers.iter_mut() {
                if k == "retry-after" {
                    *v = "1".into();
                }
            }
        }
        _ => {}
    }
    drop(seen);
    let mut out = HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap());
    for (k, v) in headers {
        out.append_header((k, v));
    }
    out.body(bytes)
}

/// A reverse proxy to `upstream` on 127.0.0.1, applying `mutation`.
fn proxy(upstream: &str, mutation: Mutation) -> String {
    let px = web::Data::new(Proxy {
        upstream: upstream.to_string(),
        mutation,
        seen: Mutex::new(Seen::default()),
    });
    let srv = HttpServer::new(move || {
        App::new()
            .app_data(px.clone())
            .app_data(web::PayloadConfig::new(16 << 20))
            .default_service(web::to(forward))
    })
    .workers(2)
    .disable_signals()
    .bind("127.0.0.1:0")
    .unwrap();
    let url = format!("http://{}", srv.addrs()[0]);
    actix_web::rt::spawn(srv.run());
    url
}

async fn suite(mutation: Mutation) -> Report {
    let w = world_via(mutation.on_dp_side().then_some(mutation));
    let url = if mutation == Mutation::None || mutation.on_dp_side() {
        w.srv.url.clone()
    } else {
        proxy(&w.srv.url, mutation)
    };
    let p = Profile::sandbox(&url, &w.dp_url, &w.sp_url);
    let r = run(&p).await;
    w.srv.handle.stop(false).await;
    r
}

fn failed(r: &Report) -> Vec<&str> {
    r.results
        .iter()
        .filter(|c| c.outcome.is_fail())
        .map(|c| c.id.as_str())
        .collect()
}

/// Exactly `ids` fail under `mutation`.
async fn only(mutation: Mutation, ids: &[&str]) {
    let r = suite(mutation).await;
    assert_eq!(failed(&r), ids, "{mutation:?}\n{}", r.summary());
}

#[actix_web::test]
async fn every_check_passes_against_the_reference_server() {
    let r = suite(Mutation::None).await;
    assert_eq!(r.results.len(), CHECKS.len(), "{}", r.summary());
    for (c, (id, _)) in r.results.iter().zip(CHECKS) {
        assert_eq!(c.id, *id);
        assert_eq!(c.outcome, Outcome::Pass, "{}", r.summary());
    }
    let xml = r.junit_xml();
    assert!(xml.contains(&format!("tests=\"{}\" failures=\"0\"", CHECKS.len())));
}

#[actix_web::test]
async fn without_a_clock_hook_or_d46_pages_checks_are_skipped_and_a_busy_port_is_a_setup_failure() {
    let w = world();
    let mut p = Profile::sandbox(&w.srv.url, &w.dp_url, &w.sp_url);
    p.clock_hook = None;
    let r = run(&p).await;
    assert!(r.passed(), "{}", r.summary());
    assert_eq!(r.skipped(), 1);
    assert!(matches!(
        r.get("platform.retention.ticket_403_after_8h")
            .unwrap()
            .outcome,
        Outcome::Skip(_)
    ));
    // Pages that do not follow D46: only the redirect and ticket checks run.
    let mut p = Profile::sandbox(&w.srv.url, &w.dp_url, &w.sp_url);
    p.d46_pages = false;
    let r = run(&p).await;
    assert!(r.passed(), "{}", r.summary());
    assert_eq!(r.results.len(), CHECKS.len(), "{}", r.summary());
    assert_eq!(r.skipped(), CHECKS.len() - 5, "{}", r.summary());
    for id in [
        "platform.redirect.bad_pid_400",
        "platform.data.no_ticket_400",
        "platform.data.unknown_ticket_403",
    ] {
        assert_eq!(r.get(id).unwrap().outcome, Outcome::Pass, "{id}");
    }
    // The DP URL is taken by the platform itself: nothing runs, one setup failure.
    let mut p = Profile::sandbox(&w.srv.url, &w.srv.url, &w.sp_url);
    p.clock_hook = None;
    let r = run(&p).await;
    assert_eq!(failed(&r), ["platform.setup"], "{}", r.summary());
    w.srv.handle.stop(false).await;
}

#[actix_web::test]
async fn return_url_mismatch_not_404() {
    only(
        Mutation::ReturnCode("404", "400"),
        &["platform.redirect.return_url_mismatch_404"],
    )
    .await;
}

#[actix_web::test]
async fn unregistered_dataset_not_401() {
    only(
        Mutation::ReturnCode("401", "403"),
        &["platform.redirect.unregistered_dataset_401"],
    )
    .await;
}

#[actix_web::test]
async fn bad_pid_not_400() {
    only(
        Mutation::ReturnCode("400", "403"),
        &["platform.redirect.bad_pid_400"],
    )
    .await;
}

#[actix_web::test]
async fn refusal_not_205() {
    only(
        Mutation::ReturnCode("205", "200"),
        &["platform.flow.refusal_205"],
    )
    .await;
}

#[actix_web::test]
async fn identity_conflict_not_409() {
    only(
        Mutation::ReturnCode("409", "403"),
        &["platform.flow.identity_conflict_409"],
    )
    .await;
}

#[actix_web::test]
async fn no_ticket_not_400() {
    only(
        Mutation::DataStatus(400, 404),
        &["platform.data.no_ticket_400"],
    )
    .await;
}

#[actix_web::test]
async fn unknown_ticket_not_403() {
    only(
        Mutation::DataStatus(403, 404),
        &[
            "platform.data.unknown_ticket_403",
            "platform.retention.ticket_403_after_8h",
        ],
    )
    .await;
}

#[actix_web::test]
async fn not_ready_without_retry_after() {
    // Every 429 loses its Retry-After, the one during the SP-API call too.
    only(
        Mutation::StripRetryAfter,
        &[
            "platform.data.ticket_live_during_sp_api",
            "platform.data.not_ready_429",
        ],
    )
    .await;
}

#[actix_web::test]
async fn a_ticket_not_live_during_the_sp_api_call() {
    only(
        Mutation::FirstPoll403,
        &["platform.data.ticket_live_during_sp_api"],
    )
    .await;
}

#[actix_web::test]
async fn a_corrupted_jwe() {
    only(Mutation::CorruptFirstJwe, &["platform.data.jwe_gcm"]).await;
}

#[actix_web::test]
async fn a_jwe_with_the_wrong_content_type() {
    only(Mutation::SecondJweContentType, &["platform.data.jwe_cbc"]).await;
}

#[actix_web::test]
async fn a_taken_package_given_again() {
    only(Mutation::ReplayTaken, &["platform.data.one_shot_201"]).await;
}

#[actix_web::test]
async fn the_source_address_ignored() {
    only(Mutation::IgnoreSource, &["platform.data.foreign_ip_401"]).await;
}

#[actix_web::test]
async fn all_failed_not_504() {
    only(
        Mutation::DataStatus(504, 500),
        &["platform.data.all_failed_504"],
    )
    .await;
}

#[actix_web::test]
async fn retention_ignored() {
    only(
        Mutation::ForgetRetention,
        &["platform.retention.ticket_403_after_8h"],
    )
    .await;
}

#[actix_web::test]
async fn dp_calls_with_an_upper_case_transaction_uid() {
    only(
        Mutation::DpUpperUid,
        &["platform.dp.bearer_and_transaction_uid"],
    )
    .await;
}

#[actix_web::test]
async fn dp_called_again_before_its_retry_after() {
    only(
        Mutation::DpShortRetryAfter,
        &["platform.dp.retry_after_respected"],
    )
    .await;
}

/// The clock hook refuses what it must.
#[actix_web::test]
async fn clock_hook_refuses_bad_bodies() {
    let w = world();
    let c = awc::Client::default();
    let url = format!("{}/sandbox/clock", w.srv.url);
    for bad in [
        serde_json::json!({ "advance_secs": -1 }),
        serde_json::json!({ "advance_secs": 1_000_000_000_i64 }),
        serde_json::json!({ "seconds": 5 }),
    ] {
        let r = c.post(&url).send_json(&bad).await.unwrap();
        assert_eq!(r.status().as_u16(), 400, "{bad}");
    }
    let mut r = c
        .post(&url)
        .send_json(&serde_json::json!({ "advance_secs": 3600 }))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["offset_secs"], 3600);
    let _: HashMap<String, serde_json::Value> = serde_json::from_value(v).unwrap();
    w.srv.handle.stop(false).await;
}
