//! The whole online service over real HTTP on 127.0.0.1 (issue 3, "done when"): the reference
//! server, the sandbox DP and the example SP (`examples/example-sp`, built on the SP SDK). A
//! browser starts at the SP, goes through the platform's pages and comes back; the SP receives
//! the SP-API call, polls, decrypts and verifies. Between the platform and the SP sits a recorder
//! that forwards the SP-API call, so the test can replay the ticket afterwards.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{App, HttpResponse, HttpServer, web};
use common::*;
use mydata_dp::sandbox::Behaviour;
use mydata_protocol::jwe::JweMode;
use mydata_protocol::package::sp::PackagingMode;
use mydata_protocol::param::ParamMode;
use mydata_server::platform::{NewSp, SpCredentials};
use mydata_sp::SpConfig;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Forwards SP-API calls to the example SP and keeps their bodies.
async fn forward(
    target: web::Data<String>,
    seen: web::Data<Seen>,
    body: web::Bytes,
) -> HttpResponse {
    if let Ok(v) = serde_json::from_slice::<Value>(&body) {
        seen.lock().unwrap().push(v);
    }
    let r = awc::Client::default()
        .post(target.get_ref().as_str())
        .insert_header(("Content-Type", "application/json; charset=utf-8"))
        .send_body(body)
        .await
        .unwrap();
    HttpResponse::build(r.status()).finish()
}

fn start_recorder(target: String) -> (String, Seen) {
    let seen: Seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let srv = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(target.clone()))
            .app_data(web::Data::new(s2.clone()))
            .route("/sp-api", web::post().to(forward))
    })
    .workers(1)
    .bind("127.0.0.1:0")
    .unwrap();
    let addr = srv.addrs()[0];
    actix_web::rt::spawn(srv.run());
    (format!("http://{addr}/sp-api"), seen)
}

struct Sp {
    running: example_sp::Running,
    creds: SpCredentials,
    recorded: Seen,
    mode: ParamMode,
}

/// Registers an SP for `resources` at the platform and starts the example SP with its
/// credentials.
async fn start_sp(w: &World, mode: PackagingMode, jwe: JweMode, resources: &[String]) -> Sp {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (recorder, recorded) = start_recorder(format!("{base}/sp-api"));
    let (_, creds) =
        w.p.register_sp(NewSp {
            tls_ca: None,
            name: "範例服務 Example SP".into(),
            purpose: "端對端測試 / end-to-end test".into(),
            return_url: format!("{base}/return"),
            sp_api_url: recorder,
            allowed_ips: vec!["127.0.0.1".parse().unwrap()],
            client_cert_sha256: Vec::new(),
            resources: resources.iter().map(|i| i.parse().unwrap()).collect(),
            jwe_mode: jwe,
            packaging_mode: mode,
            ..NewSp::default()
        })
        .unwrap();
    let mut cfg = example_sp::Config::sandbox001();
    cfg.sp = SpConfig::new(
        w.srv.url.as_str(),
        creds.client_id.parse().unwrap(),
        creds.client_secret.parse().unwrap(),
        creds.cbc_iv.parse().unwrap(),
        format!("{base}/return"),
    )
    .with_mode(jwe)
    .with_api_key(creds.api_key.clone().unwrap())
    .with_packaging_mode(mode);
    cfg.poll.max_wait = Duration::from_millis(200);
    cfg.poll.min_wait = Duration::from_millis(50);
    let running = example_sp::spawn_on(listener, cfg).await.unwrap();
    Sp {
        running,
        creds,
        recorded,
        mode: match jwe {
            JweMode::Cbc => ParamMode::Cbc,
            JweMode::Gcm => ParamMode::Gcm,
        },
    }
}

impl Sp {
    /// The citizen starts at the SP; returns the platform's first page and the flow path.
    async fn start(&self, b: &mut Browser, pid: &str, resources: &[String]) -> (String, Answer) {
        let form: Vec<(&str, &str)> = std::iter::once(("pid", pid))
            .chain(resources.iter().map(|r| ("resource", r.as_str())))
            .collect();
        let a = b
            .post_to(&format!("{}/start", self.running.url()), &form)
            .await;
        assert_eq!(a.status, 303, "{a:?}");
        let platform_url = a.location.unwrap();
        b.open(&platform_url).await
    }

    /// The browser follows the platform's redirect back to the SP; returns the SP's tx_id.
    async fn come_back(&self, b: &mut Browser, a: &Answer) -> String {
        let loc = a.location.clone().expect("back to the SP");
        assert!(loc.starts_with(self.running.return_url()), "{loc}");
        let page = b.get(&loc).await;
        assert_eq!(page.status, 200, "{}", page.body);
        a.returned_in(&self.creds, self.running.return_url(), self.mode)
            .1
            .expect("tx_id")
    }

    /// The SP's view of a transaction once it settled.
    async fn settled(&self, tx_id: &str) -> Value {
        for _ in 0..1200 {
            if let Some(v) = self.running.status(tx_id)
                && !matches!(v["state"].as_str(), Some("started" | "waiting"))
            {
                return v;
            }
            actix_web::rt::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{tx_id} never settled: {:?}", self.running.status(tx_id));
    }

    fn ticket(&self, tx_id: &str) -> String {
        self.recorded
            .lock()
            .unwrap()
            .iter()
            .find(|v| v["tx_id"] == tx_id)
            .and_then(|v| v["permission_ticket"].as_str().map(str::to_string))
            .expect("a recorded SP-API call")
    }
}

/// The two-documents path for the first sandbox citizen, up to the consent page.
async fn authenticate(b: &mut Browser, flow: &str, page: Answer) -> Answer {
    let p = b.through_basic(flow, page, CITIZEN, "0770101").await;
    let p = b.two_documents(flow, &p.csrf()).await;
    assert_eq!(p.step(), "consent");
    p
}

fn codes(v: &Value) -> Vec<(String, Option<u64>)> {
    v["datasets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["resource_id"].as_str().unwrap().to_string(),
                d["code"].as_u64(),
            )
        })
        .collect()
}

/// `GET /service/data` from 127.0.0.2, an address the SP did not register (raw HTTP/1.1 over a
/// socket bound to that source address).
async fn poll_from_127_0_0_2(platform: &str, ticket: &str) -> u16 {
    let addr: std::net::SocketAddr = platform.trim_start_matches("http://").parse().unwrap();
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut s = sock.connect(addr).await.unwrap();
    let req = format!(
        "GET /service/data HTTP/1.1\r\nHost: {addr}\r\npermission_ticket: {ticket}\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out[9..12].parse().unwrap()
}

#[actix_web::test]
async fn five_datasets_mode_b_slow_and_failing_then_replay_expiry_and_purge() {
    let ids = pii_datasets(5);
    let w = world_with(&[
        (ids[1].as_str(), Behaviour::Slow(1)),
        (ids[4].as_str(), Behaviour::Fail(500)),
    ])
    .await;
    let sp = start_sp(&w, PackagingMode::B, JweMode::Gcm, &ids).await;
    let mut b = Browser::new(&w.srv.url);
    let (flow, page) = sp.start(&mut b, CITIZEN, &ids).await;
    let p = authenticate(&mut b, &flow, page).await;
    let a = b
        .submit(&flow, "consent", &p.csrf(), &[("decision", "agree")])
        .await;
    assert_eq!(
        a.returned_in(&sp.creds, sp.running.return_url(), sp.mode).0,
        200
    );
    let tx_id = sp.come_back(&mut b, &a).await;
    let v = sp.settled(&tx_id).await;
    assert_eq!(v["state"], "delivered", "{v}");
    assert_eq!(v["verified"], true, "{v}");
    let c = codes(&v);
    assert_eq!(c.len(), 5);
    for (i, (id, code)) in c.iter().enumerate() {
        assert_eq!(id, &ids[i]);
        assert_eq!(*code, Some(if i == 4 { 504 } else { 200 }), "{v}");
    }
    assert!(!v["datasets"][0]["files"].as_array().unwrap().is_empty());

    // The SP took the package: the ticket is spent (201), from a foreign address it is 401.
    let ticket = sp.ticket(&tx_id);
    let (status, _) = poll_until_ready(&w.srv.url, &ticket, &tx_id).await;
    assert_eq!(status, 201);
    assert_eq!(poll_from_127_0_0_2(&w.srv.url, &ticket).await, 401);

    // 8 hours after consent the ticket is 403, and the purge leaves nothing of the citizen.
    w.clock.advance(28_801);
    let (status, _) = poll_until_ready(&w.srv.url, &ticket, &tx_id).await;
    assert_eq!(status, 403);
    // Controls: the search finds the ID and the name in the bytes the store writes; and
    // before the purge this data directory's database holds the citizen's ID, in a token of
    // this transaction (as the DP calls' tokens did), so its absence afterwards is the purge's
    // doing.
    search_finds_what_the_store_writes(CITIZEN, "王大明");
    let tx =
        w.p.store
            .find_tx(&sp.creds.client_id, &tx_id)
            .unwrap()
            .unwrap();
    w.p.issue_token(
        &tx.id,
        &sp.creds.client_id,
        &ids[0],
        "5a4f3e2d-1c0b-4a9f-8e7d-6c5b4a3f2e1d",
        &citizen_claims(&w.p),
    )
    .unwrap();
    w.p.store.flush().unwrap();
    assert!(
        database_holds(w.dir.path(), CITIZEN.as_bytes()),
        "control: the citizen's ID is not in the database before the purge"
    );
    let r = mydata_server::engine::purge(&w.p).unwrap();
    assert!(r.purged >= 1 && r.complete(), "{r:?}");
    assert!(
        !database_holds(w.dir.path(), CITIZEN.as_bytes()),
        "the database or its log holds the ID"
    );
    assert!(
        !database_holds(w.dir.path(), "王大明".as_bytes()),
        "the database or its log holds the name"
    );
    let left: Vec<_> = std::fs::read_dir(w.dir.path().join("packages"))
        .map(|d| d.collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(
        w.p.packages.bytes_in_memory(),
        0,
        "no package left in memory"
    );
    sp.running.stop().await;
}

#[actix_web::test]
async fn one_dataset_mode_a_then_a_failing_dataset_in_mode_a() {
    let ids = pii_datasets(2);
    let w = world_with(&[(ids[1].as_str(), Behaviour::Fail(503))]).await;
    let sp = start_sp(&w, PackagingMode::A, JweMode::Cbc, &ids).await;

    // One dataset: delivered and verified.
    let mut b = Browser::new(&w.srv.url);
    let (flow, page) = sp.start(&mut b, CITIZEN, &ids[..1]).await;
    let p = authenticate(&mut b, &flow, page).await;
    let a = b
        .submit(&flow, "consent", &p.csrf(), &[("decision", "agree")])
        .await;
    let tx_id = sp.come_back(&mut b, &a).await;
    let v = sp.settled(&tx_id).await;
    assert_eq!(v["state"], "delivered", "{v}");
    assert_eq!(v["verified"], true);
    assert_eq!(codes(&v), vec![(ids[0].clone(), Some(200))]);

    // Mode A with a failing dataset: nothing is shipped, the SP sees every code. The platform
    // session is already authenticated as this citizen, so the identity page is skipped.
    let (flow, page) = sp.start(&mut b, CITIZEN, &ids).await;
    let p = b.through_basic(&flow, page, CITIZEN, "0770101").await;
    assert_eq!(p.step(), "consent");
    let a = b
        .submit(&flow, "consent", &p.csrf(), &[("decision", "agree")])
        .await;
    let tx_id = sp.come_back(&mut b, &a).await;
    let v = sp.settled(&tx_id).await;
    let c = codes(&v);
    assert_eq!(c[1].1, Some(504), "{v}");
    assert!(
        v["datasets"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["files"].as_array().is_none_or(|f| f.is_empty())),
        "{v}"
    );
    sp.running.stop().await;
}

#[actix_web::test]
async fn refusal_mismatch_unknown_dataset_and_wrong_return_url_reach_the_sp() {
    let ids = pii_datasets(2);
    let w = world().await;
    let sp = start_sp(&w, PackagingMode::B, JweMode::Gcm, &ids[..1]).await;

    // Refusal: 205, the SP shows it and never polls.
    let mut b = Browser::new(&w.srv.url);
    let (flow, page) = sp.start(&mut b, CITIZEN, &ids[..1]).await;
    let p = authenticate(&mut b, &flow, page).await;
    let a = b
        .submit(&flow, "consent", &p.csrf(), &[("decision", "refuse")])
        .await;
    let tx_id = sp.come_back(&mut b, &a).await;
    assert_eq!(sp.settled(&tx_id).await["code"], 205);

    // Another person's ID on the basic-information page: 409.
    let mut b2 = Browser::new(&w.srv.url);
    let (flow, page) = sp.start(&mut b2, CITIZEN, &ids[..1]).await;
    let a = b2.through_basic(&flow, page, OTHER, "0640315").await;
    let tx_id = sp.come_back(&mut b2, &a).await;
    assert_eq!(sp.settled(&tx_id).await["code"], 409);

    // A dataset the service may not request: 401, straight back from the redirect.
    let mut b3 = Browser::new(&w.srv.url);
    let form = [("pid", CITIZEN), ("resource", ids[1].as_str())];
    let a = b3
        .post_to(&format!("{}/start", sp.running.url()), &form)
        .await;
    let a = b3.get(&a.location.unwrap()).await;
    assert_eq!(a.status, 302);
    let tx_id = sp.come_back(&mut b3, &a).await;
    assert_eq!(sp.settled(&tx_id).await["code"], 401);

    // A returnUrl other than the registered one: 404 to the registered return_url, no tx_id.
    let url = redirect_url(
        &w.srv.url,
        &sp.creds,
        &ids[..1],
        "tx-wrong-return",
        CITIZEN,
        "http://127.0.0.1:9/elsewhere",
    );
    let a = b3.get(&url).await;
    assert_eq!(
        a.returned_to(&sp.creds, sp.running.return_url()),
        (404, None)
    );
    sp.running.stop().await;
}
