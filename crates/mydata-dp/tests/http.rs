//! The DP SDK over real HTTP on 127.0.0.1: the sandbox DP and a custom DP against a small
//! introspection endpoint started by each test.
//!
//! The introspection endpoint here is a stand-in for the platform's authorization server
//! (spec protocol.md §10.2–§10.3), written for these tests while the real one is being built:
//! it checks `Authorization: Basic` against the sandbox secrets, answers from a table and
//! counts calls. It returns its table's answer as is, so the DP's own `aud` check is
//! exercised. The end-to-end test of this SDK against the real platform server lives in
//! `crates/mydata-server`'s tests.

use std::collections::HashMap;
use std::io::Cursor;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use mydata_dp::sandbox::{self, Behaviour, SandboxConfig};
use mydata_dp::{
    CallContext, DataFile, Deferred, DpService, ManualClock, Outcome, ResourceSecret, from_fn,
};
use mydata_protocol::catalogue::sandbox_resource_secret;
use mydata_protocol::date::UnixTime;
use mydata_protocol::ids::{PermissionTicket, ResourceId};
use mydata_protocol::package::dp::{self, DpSigner, TrustAnchors, VerifyOptions};

/// 2027-01-01, inside the sandbox DP certificate's validity.
const AT: UnixTime = UnixTime(1_798_761_600);
/// Instant, json+pdf.
const HOUSEHOLD: &str = "API.ARPPI3VTCB";
/// Delivered in 5 minutes, csv+pdf.
const LAND: &str = "API.3DQEOU3GLR";
const CITIZEN: &str = "A120345672";
const NO_DATA_CITIZEN: &str = "H135908240";

fn fixtures() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

// ---------------------------------------------------------------- the stand-in platform

#[derive(Default)]
struct Platform {
    answers: Mutex<HashMap<String, Value>>,
    userinfo: Mutex<HashMap<String, Value>>,
    introspections: AtomicUsize,
    userinfo_calls: AtomicUsize,
    authenticated: Mutex<Vec<String>>,
}

impl Platform {
    fn grant(&self, token: &str, resource_id: &str, uid: &str, transaction_uid: Option<&str>) {
        let mut a = json!({
            "active": true,
            "scope": "sandbox.scope",
            "client_id": "CLI.SANDBOX001",
            "token_type": "Bearer",
            "sub": format!("sub-{uid}"),
            "uid": uid,
            "aud": resource_id,
            "iat": AT.0,
            "exp": i64::MAX / 2,
        });
        if let Some(t) = transaction_uid {
            a["transaction_uid"] = json!(t);
        }
        self.answers.lock().unwrap().insert(token.into(), a);
        self.userinfo.lock().unwrap().insert(
            token.into(),
            json!({"sub": format!("sub-{uid}"), "uid": uid, "uid_type": "NID", "name": "王大明", "birthdate": "1988-01-01"}),
        );
    }

    fn count(&self) -> usize {
        self.introspections.load(Ordering::SeqCst)
    }
}

fn basic_credentials(req: &HttpRequest) -> Option<(String, String)> {
    let v = req.headers().get("authorization")?.to_str().ok()?;
    let b64 = v.strip_prefix("Basic ")?;
    let text = String::from_utf8(STANDARD.decode(b64).ok()?).ok()?;
    let (id, secret) = text.split_once(':')?;
    Some((id.to_owned(), secret.to_owned()))
}

async fn introspect(
    p: web::Data<Platform>,
    req: HttpRequest,
    form: web::Form<HashMap<String, String>>,
) -> HttpResponse {
    p.introspections.fetch_add(1, Ordering::SeqCst);
    let Some((id, secret)) = basic_credentials(&req) else {
        return HttpResponse::Unauthorized().finish();
    };
    let ok = id
        .parse::<ResourceId>()
        .is_ok_and(|rid| sandbox_resource_secret(&rid) == secret);
    if !ok {
        return HttpResponse::Unauthorized().finish();
    }
    p.authenticated.lock().unwrap().push(id);
    let Some(token) = form.get("token") else {
        return HttpResponse::BadRequest().json(json!({"error": "invalid_request"}));
    };
    let answer = p
        .answers
        .lock()
        .unwrap()
        .get(token)
        .cloned()
        .unwrap_or(json!({"active": false}));
    HttpResponse::Ok().json(answer)
}

async fn userinfo(p: web::Data<Platform>, req: HttpRequest) -> HttpResponse {
    p.userinfo_calls.fetch_add(1, Ordering::SeqCst);
    let token = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    match p.userinfo.lock().unwrap().get(token) {
        Some(v) => HttpResponse::Ok().json(v),
        None => HttpResponse::Unauthorized()
            .insert_header(("WWW-Authenticate", r#"Bearer error="invalid_token""#))
            .finish(),
    }
}

async fn start_platform() -> (Arc<Platform>, String) {
    let p = Arc::new(Platform::default());
    let data = web::Data::from(p.clone());
    let srv = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .route("/connect/introspect", web::post().to(introspect))
            .route("/connect/userinfo", web::get().to(userinfo))
    })
    .workers(1)
    .disable_signals()
    .bind("127.0.0.1:0")
    .unwrap();
    let addr: SocketAddr = srv.addrs()[0];
    actix_web::rt::spawn(srv.run());
    (p, format!("http://{addr}"))
}

// ---------------------------------------------------------------- client helpers

struct Reply {
    status: u16,
    headers: actix_web::http::header::HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

async fn get(url: &str, token: Option<&str>) -> Reply {
    let mut req = awc::Client::default().get(url);
    if let Some(t) = token {
        req = req.insert_header(("Authorization", format!("Bearer {t}")));
    }
    let mut resp = req.send().await.unwrap();
    let body = resp.body().limit(16 << 20).await.unwrap().to_vec();
    Reply {
        status: resp.status().as_u16(),
        headers: resp.headers().clone(),
        body,
    }
}

fn tx() -> String {
    PermissionTicket::generate().unwrap().as_str().to_owned()
}

fn call_url(base: &str, transaction_uid: &str) -> String {
    format!("{base}?transaction_uid={transaction_uid}")
}

fn verify(pkg: &[u8]) -> dp::VerifiedPackage {
    let root = std::fs::read(fixtures().join("pki/sandbox-root-ca.pem")).unwrap();
    let anchors = TrustAnchors::from_pem(&[&root]).unwrap();
    let opts = VerifyOptions {
        trust: Some(&anchors),
        ..VerifyOptions::at(AT)
    };
    dp::verify(Cursor::new(pkg), &opts).unwrap()
}

fn entry(pkg: &[u8], name: &str) -> Vec<u8> {
    use std::io::Read;
    let mut z = zip::ZipArchive::new(Cursor::new(pkg)).unwrap();
    let mut out = Vec::new();
    z.by_name(name).unwrap().read_to_end(&mut out).unwrap();
    out
}

fn config(platform: &str) -> SandboxConfig {
    SandboxConfig::from_fixtures(&fixtures(), platform).unwrap()
}

// ---------------------------------------------------------------- sandbox tests

#[actix_web::test]
async fn valid_token_gets_a_signed_package() {
    let (platform, url) = start_platform().await;
    let dp = sandbox::spawn(config(&url)).await.unwrap();
    let t = tx();
    platform.grant("tok-valid", HOUSEHOLD, CITIZEN, Some(&t));
    let r = get(&call_url(&dp.endpoint(HOUSEHOLD), &t), Some("tok-valid")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/zip"));
    let v = verify(&r.body);
    assert!(v.signer.chain_checked);
    assert!(
        v.signer.subject.contains("Sandbox DP MOI"),
        "{}",
        v.signer.subject
    );
    let doc: Value = serde_json::from_slice(&entry(&r.body, "data.json")).unwrap();
    assert_eq!(doc["resource_id"], HOUSEHOLD);
    assert_eq!(doc["dataset"], "個人戶籍資料");
    assert_eq!(doc["person"]["national_id"], CITIZEN);
    assert_eq!(doc["person"]["name"], "王大明");
    // The platform was asked with this dataset's own sandbox credentials.
    assert_eq!(
        *platform.authenticated.lock().unwrap(),
        vec![HOUSEHOLD.to_owned()]
    );
    // Repeating the transaction_uid is the same request: the same bytes, no new package.
    let again = get(&call_url(&dp.endpoint(HOUSEHOLD), &t), Some("tok-valid")).await;
    assert_eq!((again.status, &again.body), (200, &r.body));
    assert_eq!(dp.dp().packages_built(), 1);
    dp.stop().await;
}

#[actix_web::test]
async fn refused_tokens_get_401() {
    let (platform, url) = start_platform().await;
    let dp = sandbox::spawn(config(&url)).await.unwrap();
    let t = tx();
    let endpoint = call_url(&dp.endpoint(HOUSEHOLD), &t);

    // Unknown to the platform: {"active":false}.
    let r = get(&endpoint, Some("tok-unknown")).await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate"),
        Some(r#"Bearer error="invalid_token""#)
    );

    // Active, but issued for another dataset.
    platform.grant("tok-other-aud", LAND, CITIZEN, Some(&t));
    assert_eq!(get(&endpoint, Some("tok-other-aud")).await.status, 401);

    // Active for this dataset, but for another call series.
    platform.grant("tok-other-tx", HOUSEHOLD, CITIZEN, Some(&tx()));
    assert_eq!(get(&endpoint, Some("tok-other-tx")).await.status, 401);

    // No token at all: 401 without an error code, and the platform is not asked.
    let before = platform.count();
    let r = get(&endpoint, None).await;
    assert_eq!(
        (r.status, r.header("www-authenticate")),
        (401, Some("Bearer"))
    );
    assert_eq!(platform.count(), before);

    // Malformed calls.
    platform.grant("tok-ok", HOUSEHOLD, CITIZEN, None);
    assert_eq!(
        get(&dp.endpoint(HOUSEHOLD), Some("tok-ok")).await.status,
        400
    );
    assert_eq!(
        get(
            &call_url(&dp.endpoint(HOUSEHOLD), "not-a-uuid"),
            Some("tok-ok")
        )
        .await
        .status,
        400
    );
    assert_eq!(
        get(
            &call_url(&dp.endpoint("API.NOSUCHDATA"), &t),
            Some("tok-ok")
        )
        .await
        .status,
        404
    );
    let put = awc::Client::default()
        .put(&endpoint)
        .insert_header(("Authorization", "Bearer tok-ok"))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status().as_u16(), 405);
    dp.stop().await;
}

#[actix_web::test]
async fn citizens_without_data_get_204() {
    let (platform, url) = start_platform().await;
    let dp = sandbox::spawn(config(&url)).await.unwrap();
    let t = tx();
    platform.grant("tok-nodata", HOUSEHOLD, NO_DATA_CITIZEN, Some(&t));
    let r = get(&call_url(&dp.endpoint(HOUSEHOLD), &t), Some("tok-nodata")).await;
    assert_eq!((r.status, r.body.len()), (204, 0));
    // A person the sandbox does not know has no data either.
    let t = tx();
    platform.grant("tok-stranger", HOUSEHOLD, "Z199999999", Some(&t));
    assert_eq!(
        get(&call_url(&dp.endpoint(HOUSEHOLD), &t), Some("tok-stranger"))
            .await
            .status,
        204
    );
    dp.stop().await;
}

#[actix_web::test]
async fn slow_dataset_answers_429_until_ready_with_injected_time() {
    let (platform, url) = start_platform().await;
    let clock = ManualClock::new(AT);
    let mut c = config(&url);
    c.clock = Arc::new(clock.clone());
    c.behaviours.insert(HOUSEHOLD.into(), Behaviour::Slow(5));
    let dp = sandbox::spawn(c).await.unwrap();
    let t = tx();
    platform.grant("tok-slow", HOUSEHOLD, CITIZEN, Some(&t));
    let endpoint = call_url(&dp.endpoint(HOUSEHOLD), &t);

    let r = get(&endpoint, Some("tok-slow")).await;
    assert_eq!((r.status, r.header("retry-after")), (429, Some("5")));
    clock.advance(2);
    let r = get(&endpoint, Some("tok-slow")).await;
    assert_eq!((r.status, r.header("retry-after")), (429, Some("3")));
    // Another call series starts its own clock.
    let t2 = tx();
    platform.grant("tok-slow-2", HOUSEHOLD, CITIZEN, Some(&t2));
    let r = get(&call_url(&dp.endpoint(HOUSEHOLD), &t2), Some("tok-slow-2")).await;
    assert_eq!(r.header("retry-after"), Some("5"));
    clock.advance(3);
    let r = get(&endpoint, Some("tok-slow")).await;
    assert_eq!(r.status, 200);
    verify(&r.body);
    // Three polls, one introspection: the cache answered the others (TTL 30 s).
    assert_eq!(platform.count(), 2, "one per token");
    assert_eq!(dp.dp().service(HOUSEHOLD).unwrap().jobs().len(), 2);
    dp.stop().await;
}

#[actix_web::test]
async fn slow_catalogue_dataset_with_the_real_clock() {
    let (platform, url) = start_platform().await;
    // LAND is delivered in 5 minutes: 1 s with the default time scale.
    let dp = sandbox::spawn(config(&url)).await.unwrap();
    let t = tx();
    platform.grant("tok-land", LAND, CITIZEN, Some(&t));
    let endpoint = call_url(&dp.endpoint(LAND), &t);
    let first = get(&endpoint, Some("tok-land")).await;
    assert_eq!(
        (first.status, first.header("retry-after")),
        (429, Some("1"))
    );
    let mut polls = 1;
    let r = loop {
        let wait: u64 = first.header("retry-after").unwrap().parse().unwrap();
        actix_web::rt::time::sleep(std::time::Duration::from_millis(wait * 1000 + 50)).await;
        let r = get(&endpoint, Some("tok-land")).await;
        polls += 1;
        if r.status != 429 || polls > 5 {
            break r;
        }
    };
    assert_eq!(r.status, 200);
    let v = verify(&r.body);
    let names: Vec<_> = v.files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["data.json", "data.csv"]);
    let csv = String::from_utf8(entry(&r.body, "data.csv")).unwrap();
    assert!(
        csv.starts_with("field,value\r\n") && csv.contains("national_id,A120345672"),
        "{csv}"
    );
    assert_eq!(platform.count(), 1, "introspected once for all polls");
    dp.stop().await;
}

#[actix_web::test]
async fn heartbeat_needs_no_token() {
    let (platform, url) = start_platform().await;
    let mut c = config(&url);
    c.behaviours.insert(LAND.into(), Behaviour::Down);
    c.behaviours
        .insert("API.POIBMVODRP".into(), Behaviour::Fail(502));
    let dp = sandbox::spawn(c).await.unwrap();
    let r = get(&format!("{}?heartbeat=true", dp.endpoint(HOUSEHOLD)), None).await;
    assert_eq!(r.status, 200);
    let r = get(&format!("{}?heartbeat=true", dp.endpoint(LAND)), None).await;
    assert_eq!(r.status, 500);
    assert_eq!(platform.count(), 0);
    // Failing datasets: their status; down datasets: 503.
    let t = tx();
    platform.grant("tok-fail", "API.POIBMVODRP", CITIZEN, Some(&t));
    let r = get(
        &call_url(&dp.endpoint("API.POIBMVODRP"), &t),
        Some("tok-fail"),
    )
    .await;
    assert_eq!(r.status, 502);
    assert_eq!(
        get(
            &format!("{}?heartbeat=true", dp.endpoint("API.POIBMVODRP")),
            None
        )
        .await
        .status,
        200
    );
    let t = tx();
    platform.grant("tok-down", LAND, CITIZEN, Some(&t));
    assert_eq!(
        get(&call_url(&dp.endpoint(LAND), &t), Some("tok-down"))
            .await
            .status,
        503
    );
    // The list.
    let r = get(&format!("{}/dp", dp.base_url()), None).await;
    let list: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(list["datasets"].as_array().unwrap().len(), 105);
    assert_eq!(list["datasets"][0]["resource_id"], HOUSEHOLD);
    dp.stop().await;
}

#[actix_web::test]
async fn wrong_platform_credentials_give_500() {
    let (platform, url) = start_platform().await;
    // A service with a wrong secret: the platform refuses it, the DP cannot check tokens.
    let svc = DpService::builder(HOUSEHOLD)
        .platform(&url, ResourceSecret::new("0000000000000000"))
        .dataset(from_fn(|_| Outcome::NoData))
        .build()
        .unwrap();
    let addr = serve_one(svc, "/x");
    let t = tx();
    platform.grant("tok-cred", HOUSEHOLD, CITIZEN, Some(&t));
    let r = get(&call_url(&format!("http://{addr}/x"), &t), Some("tok-cred")).await;
    assert_eq!(r.status, 500);
    assert!(platform.authenticated.lock().unwrap().is_empty());
}

#[test]
fn presigned_sandbox_on_its_own_thread() {
    // The platform stand-in runs on its own thread too; this test has no runtime of its own.
    let (tx_url, rx_url) = std::sync::mpsc::channel();
    let platform_thread = std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let (platform, url) = start_platform().await;
            tx_url.send((platform, url)).unwrap();
            actix_web::rt::time::sleep(std::time::Duration::from_secs(30)).await;
        });
    });
    let (platform, url) = rx_url.recv().unwrap();
    let mut c = config(&url);
    c.presign = true;
    let dp = sandbox::spawn_thread(c).unwrap();
    let built = dp.dp().packages_built();
    assert_eq!(built, 105 * 7, "105 datasets × 7 people with data");
    let t = tx();
    platform.grant("tok-thread", HOUSEHOLD, CITIZEN, Some(&t));
    let url = call_url(&dp.endpoint(HOUSEHOLD), &t);
    let r =
        actix_web::rt::System::new().block_on(async move { get(&url, Some("tok-thread")).await });
    assert_eq!(r.status, 200);
    verify(&r.body);
    assert_eq!(
        dp.dp().packages_built(),
        built,
        "served from the pre-signed cache"
    );
    let addr = dp.addr();
    dp.stop();
    assert!(std::net::TcpStream::connect(addr).is_err(), "stopped");
    drop(platform_thread);
}

// ---------------------------------------------------------------- a custom DP on the SDK

fn signer() -> Arc<DpSigner> {
    let key = std::fs::read(fixtures().join("pki/dp-nhi.key")).unwrap();
    let cert = std::fs::read(fixtures().join("pki/dp-nhi.pem")).unwrap();
    Arc::new(DpSigner::from_pem(&key, &cert).unwrap())
}

/// Serves one service with the actix adapter on its own thread; returns the address.
fn serve_one(service: DpService, path: &'static str) -> SocketAddr {
    let api = mydata_dp::actix::DpApi::new(service);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let srv = HttpServer::new(move || App::new().configure(api.configure(path)))
                .workers(1)
                .disable_signals()
                .bind("127.0.0.1:0")
                .unwrap();
            tx.send(srv.addrs()[0]).unwrap();
            let _ = srv.run().await;
        });
    });
    rx.recv().unwrap()
}

/// A template-driven dataset: it wants the userinfo claims and a POSTed `year`.
struct TaxDataset;

impl mydata_dp::Dataset for TaxDataset {
    fn answer<'a>(
        &'a self,
        call: &'a CallContext,
    ) -> mydata_dp::introspect::BoxFuture<'a, Outcome> {
        let out = match (call.params.form("year"), call.userinfo.as_ref()) {
            (Some(year), Some(u)) => Outcome::Ready(vec![DataFile::new(
                "tax.json",
                json!({"year": year, "name": u.name(), "birthdate": u.birthdate(), "sp": call.client_id()})
                    .to_string(),
            )]),
            (None, _) => Outcome::Forbidden,
            _ => Outcome::failed(),
        };
        Box::pin(async move { out })
    }

    fn wants_userinfo(&self) -> bool {
        true
    }
}

#[actix_web::test]
async fn custom_dataset_with_userinfo_and_post_form() {
    let (platform, url) = start_platform().await;
    let svc = DpService::builder(HOUSEHOLD)
        .platform(
            &url,
            ResourceSecret::new(sandbox_resource_secret(&HOUSEHOLD.parse().unwrap())),
        )
        .signer(signer())
        .dataset(TaxDataset)
        .build()
        .unwrap();
    let addr = serve_one(svc, "/tax");
    let t = tx();
    platform.grant("tok-tax", HOUSEHOLD, CITIZEN, Some(&t));
    let endpoint = call_url(&format!("http://{addr}/tax"), &t);
    let mut resp = awc::Client::default()
        .post(&endpoint)
        .insert_header(("Authorization", "Bearer tok-tax"))
        .send_form(&[("year", "113")])
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let body = resp.body().await.unwrap().to_vec();
    assert!(verify(&body).signer.subject.contains("Sandbox DP NHI"));
    let doc: Value = serde_json::from_slice(&entry(&body, "tax.json")).unwrap();
    assert_eq!(
        doc,
        json!({"year": "113", "name": "王大明", "birthdate": "1988-01-01", "sp": "CLI.SANDBOX001"})
    );
    assert_eq!(platform.userinfo_calls.load(Ordering::SeqCst), 1);
    // Without the template value: 403, final for this series.
    let t = tx();
    platform.grant("tok-tax-2", HOUSEHOLD, CITIZEN, Some(&t));
    let r = get(
        &call_url(&format!("http://{addr}/tax"), &t),
        Some("tok-tax-2"),
    )
    .await;
    assert_eq!(r.status, 403);
}

#[actix_web::test]
async fn deferred_work_runs_once_in_the_background() {
    let (platform, url) = start_platform().await;
    let runs = Arc::new(AtomicUsize::new(0));
    let counter = runs.clone();
    // The work waits until the test releases it.
    let (release, gate) = std::sync::mpsc::channel::<()>();
    let gate = Mutex::new(gate);
    let work = move |call: CallContext| {
        counter.fetch_add(1, Ordering::SeqCst);
        let _ = gate.lock().map(|g| g.recv());
        Outcome::Ready(vec![DataFile::new(
            "r.json",
            format!("{{\"uid\":\"{}\"}}", call.uid().unwrap_or("")),
        )])
    };
    let svc = DpService::builder(HOUSEHOLD)
        .platform(
            &url,
            ResourceSecret::new(sandbox_resource_secret(&HOUSEHOLD.parse().unwrap())),
        )
        .signer(signer())
        .dataset(Deferred::new(work, 7))
        .build()
        .unwrap();
    let addr = serve_one(svc, "/slow");
    let t = tx();
    platform.grant("tok-deferred", HOUSEHOLD, CITIZEN, Some(&t));
    let endpoint = call_url(&format!("http://{addr}/slow"), &t);
    for _ in 0..3 {
        let r = get(&endpoint, Some("tok-deferred")).await;
        assert_eq!((r.status, r.header("retry-after")), (429, Some("7")));
    }
    release.send(()).unwrap();
    // The released work finishes on a thread of its own: until then 429, within a deadline.
    let start = std::time::Instant::now();
    let mut r = get(&endpoint, Some("tok-deferred")).await;
    while r.status != 200 {
        assert_eq!(r.status, 429);
        assert!(
            start.elapsed() < std::time::Duration::from_secs(60),
            "the released work did not finish within 60 s"
        );
        actix_web::rt::time::sleep(std::time::Duration::from_millis(20)).await;
        r = get(&endpoint, Some("tok-deferred")).await;
    }
    assert_eq!(r.status, 200);
    assert_eq!(entry(&r.body, "r.json"), br#"{"uid":"A120345672"}"#);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    // Done: repeated calls get the same package without running the work again.
    assert_eq!(get(&endpoint, Some("tok-deferred")).await.body, r.body);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}
