//! The SP suite on 127.0.0.1: it passes against the example SP (both sandbox registrations),
//! passes against a small hand-built SP with no fault, and against that SP with one fault at a
//! time reports exactly the targeted check as failed.

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use mydata_conformance::report::{Outcome, Report};
use mydata_conformance::sp::{CHECKS, Options, Target, run};
use mydata_protocol::flow::{ApplicationMode, Pid, SpApiBody};
use mydata_protocol::ids::{CaseNumber, PermissionTicket, ResourceId, SecretKey, TxId};
use mydata_protocol::package::dp::TrustAnchors;
use mydata_protocol::resources::ResourceList;
use mydata_sp::SpConfig;
use mydata_sp::package::{Expectations, PackageError};
use mydata_sp::poll::{Answer, MyDataApi, PollError, PollOptions};
use mydata_sp::receiver::{ReceivedContent, receive};
use mydata_sp::redirect::RedirectRequest;
use serde_json::{Value, json};

const ROOT_CA: &[u8] = include_bytes!("../../../fixtures/pki/sandbox-root-ca.pem");

fn bind() -> (TcpListener, String) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    (l, url)
}

fn assert_all_pass(report: &Report) {
    assert_eq!(report.results.len(), CHECKS.len(), "{}", report.summary());
    for r in &report.results {
        assert_eq!(r.outcome, Outcome::Pass, "{}", report.summary());
    }
    assert!(report.passed());
}

async fn against_example(n: u8) {
    let (suite_l, suite_url) = bind();
    let (sp_l, sp_url) = bind();
    let base = if n == 1 {
        example_sp::Config::sandbox001()
    } else {
        example_sp::Config::sandbox002()
    };
    let cfg = base.with_platform_url(&suite_url).with_public_url(&sp_url);
    let sp = example_sp::spawn_on(sp_l, cfg).await.unwrap();
    let target = Target::sandbox(n, &sp_url).unwrap();
    let report = run(suite_l, &target, &Options::default()).await.unwrap();
    sp.stop().await;
    assert_all_pass(&report);
    let x = report.junit_xml();
    assert!(x.contains("name=\"sp.mydata_api.retry_after\""), "{x}");
    assert!(x.contains("failures=\"0\""), "{x}");
}

#[actix_web::test]
async fn example_sp_mode_a_cbc_passes() {
    against_example(1).await;
}

#[actix_web::test]
async fn example_sp_mode_b_gcm_passes() {
    against_example(2).await;
}

#[actix_web::test]
async fn no_sp_fails_every_check_without_hanging() {
    let (suite_l, _) = bind();
    // Nothing listens on the SP's address (bound, then dropped).
    let (gone, gone_url) = bind();
    drop(gone);
    let target = Target::sandbox(1, &gone_url).unwrap();
    let opts = Options {
        quiet_window: Duration::from_millis(100),
        absent_window: Duration::from_millis(100),
        settle_timeout: Duration::from_millis(200),
        ..Options::default()
    };
    let report = run(suite_l, &target, &opts).await.unwrap();
    assert_eq!(report.failures(), CHECKS.len(), "{}", report.summary());
    assert!(
        report.summary().contains("hook POST"),
        "{}",
        report.summary()
    );
}

// --- a small SP with configurable faults ----------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    AcceptBadApiKey,
    IgnoreRetryAfter,
    PollAfterTaken,
    AcceptTamperedManifest,
    IgnoreJweKeyError,
    WrongReturnUrl,
    ReuseTxId,
}

#[derive(Default, Clone)]
struct BTx {
    resources: Vec<ResourceId>,
    ticket: Option<PermissionTicket>,
    key: Option<SecretKey>,
    unable: bool,
    code: Option<u16>,
    polls: u32,
    state: &'static str,
    error: Option<&'static str>,
    datasets: Vec<Value>,
}

struct Broken {
    sp: SpConfig,
    fault: Fault,
    trust: TrustAnchors,
    api: MyDataApi,
    txs: Mutex<HashMap<String, BTx>>,
    first_tx: Mutex<Option<TxId>>,
    starts: Mutex<u32>,
}

impl Broken {
    fn with<R>(&self, f: impl FnOnce(&mut HashMap<String, BTx>) -> R) -> R {
        f(&mut self.txs.lock().unwrap())
    }
    fn set(&self, tx: &str, f: impl FnOnce(&mut BTx)) {
        self.with(|m| {
            if let Some(t) = m.get_mut(tx) {
                f(t)
            }
        })
    }
}

async fn b_start(b: web::Data<Broken>, body: web::Json<Value>) -> HttpResponse {
    let pid = Pid::parse_for(
        ApplicationMode::PersonOrLegalPerson,
        body["pid"].as_str().unwrap_or(""),
    );
    let ids: Vec<ResourceId> = body["resources"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str()?.parse().ok())
        .collect();
    let (Ok(pid), Ok(list)) = (pid, ResourceList::new(ids.clone())) else {
        return HttpResponse::BadRequest().json(json!({"error": "bad start"}));
    };
    let case: Option<CaseNumber> = body["caseNumber"].as_str().and_then(|c| c.parse().ok());
    let mut sp = b.sp.clone();
    if b.fault == Fault::WrongReturnUrl {
        sp.return_url = format!("{}/elsewhere", sp.return_url);
    }
    // The fault: the second start reuses the first start's tx_id.
    let n = {
        let mut c = b.starts.lock().unwrap();
        *c += 1;
        *c
    };
    let reuse = if b.fault == Fault::ReuseTxId && n == 2 {
        b.first_tx.lock().unwrap().clone()
    } else {
        None
    };
    let rr = RedirectRequest {
        case_number: case.as_ref(),
        tx_id: reuse,
        ..RedirectRequest::new(&list, &pid)
    };
    let r = sp.redirect(&rr).unwrap();
    b.first_tx.lock().unwrap().get_or_insert(r.tx_id.clone());
    b.with(|m| {
        m.insert(
            r.tx_id.to_string(),
            BTx {
                resources: ids,
                state: "started",
                ..BTx::default()
            },
        )
    });
    HttpResponse::Ok().json(json!({"tx_id": r.tx_id.as_str(), "redirect": r.url}))
}

async fn b_tx(b: web::Data<Broken>, path: web::Path<String>) -> HttpResponse {
    match b.with(|m| m.get(path.as_str()).cloned()) {
        Some(t) => HttpResponse::Ok().json(json!({
            "tx_id": path.as_str(), "state": t.state, "code": t.code, "polls": t.polls,
            "error": t.error, "datasets": t.datasets,
        })),
        None => HttpResponse::NotFound().finish(),
    }
}

async fn b_sp_api(b: web::Data<Broken>, body: web::Bytes) -> HttpResponse {
    // The fault: whatever apiKey the body carries is taken as the right one.
    let sent = SpApiBody::from_json(&body).ok().and_then(|b| b.api_key);
    let key = match b.fault {
        Fault::AcceptBadApiKey => sent.as_deref(),
        _ => b.sp.api_key.as_deref(),
    };
    let r = match receive(&body, key, &b.sp.cipher()) {
        Ok(r) => r,
        Err(e) => return HttpResponse::build(e.status().try_into().unwrap()).finish(),
    };
    let known = b.with(|m| match m.get_mut(r.tx_id.as_str()) {
        Some(t) => {
            t.ticket = Some(r.permission_ticket.clone());
            match r.content {
                ReceivedContent::SecretKey(k) => t.key = Some(k),
                ReceivedContent::UnableToDeliver(_) => {
                    t.unable = true;
                    t.state = "unable_to_deliver";
                }
            }
            true
        }
        None => false,
    });
    if known {
        HttpResponse::Ok().finish()
    } else {
        HttpResponse::NotFound().finish()
    }
}

async fn b_return(b: web::Data<Broken>, req: HttpRequest) -> HttpResponse {
    let Ok(back) = b.sp.read_return(req.query_string()) else {
        return HttpResponse::BadRequest().finish();
    };
    let Some(tx_id) = back.tx_id else {
        return HttpResponse::BadRequest().finish();
    };
    let code = back.outcome.code();
    let go = b.with(|m| {
        let t = m.get_mut(tx_id.as_str())?;
        t.code = Some(code);
        if t.unable {
            return None;
        }
        if code != 200 {
            t.state = "refused";
            return None;
        }
        match (&t.ticket, &t.key) {
            (Some(tk), Some(k)) => {
                t.state = "returned";
                Some((tk.clone(), k.clone(), t.resources.clone()))
            }
            _ => {
                t.state = "error";
                None
            }
        }
    });
    if let Some((ticket, key, resources)) = go {
        let b = b.into_inner();
        actix_web::rt::spawn(poll(b, tx_id, ticket, key, resources));
    }
    HttpResponse::Ok().body("back")
}

async fn poll(
    b: Arc<Broken>,
    tx_id: TxId,
    ticket: PermissionTicket,
    key: SecretKey,
    resources: Vec<ResourceId>,
) {
    let tx = tx_id.as_str();
    loop {
        b.set(tx, |t| {
            t.polls += 1;
            t.state = "polling";
        });
        match b
            .api
            .fetch_once(&ticket, Some(&tx_id), SystemTime::now())
            .await
        {
            Answer::NotReady { wait } | Answer::Transient { wait, .. } => {
                // The correct wait is `wait` (Retry-After, or 60 s without it).
                let wait = if b.fault == Fault::IgnoreRetryAfter && wait < Duration::from_secs(60) {
                    Duration::ZERO
                } else {
                    wait
                };
                actix_web::rt::time::sleep(wait).await;
            }
            Answer::Final(e) => {
                if e == PollError::AlreadyTaken && b.fault == Fault::PollAfterTaken {
                    let _ = b
                        .api
                        .fetch_once(&ticket, Some(&tx_id), SystemTime::now())
                        .await;
                }
                let (state, kind) = match e {
                    PollError::AlreadyTaken => ("taken", None),
                    PollError::Forbidden => ("expired", None),
                    other => ("failed", Some(other.kind())),
                };
                b.set(tx, |t| {
                    t.state = state;
                    t.error = kind;
                });
                return;
            }
            Answer::Ready(jwe) => {
                let exp = Expectations::now().trust(&b.trust).requested(&resources);
                let r = b.sp.open_package(&jwe, &key, &exp);
                b.set(tx, |t| match r {
                    Ok(d) => {
                        let ok = d.verified() || b.fault == Fault::AcceptTamperedManifest;
                        t.state = if ok { "delivered" } else { "rejected" };
                        t.error = d.first_failure().map(PackageError::kind);
                        t.datasets = d
                            .datasets
                            .iter()
                            .map(|ds| {
                                json!({"resource_id": ds.resource_id.as_str(), "code": ds.code,
                                    "files": ds.files.iter().map(|f| f.name.clone()).collect::<Vec<_>>()})
                            })
                            .collect();
                    }
                    Err(PackageError::Jwe(_)) if b.fault == Fault::IgnoreJweKeyError => {
                        t.state = "delivered";
                    }
                    Err(e) => {
                        t.state = "rejected";
                        t.error = Some(e.kind());
                    }
                });
                return;
            }
        }
    }
}

async fn spawn_broken(
    fault: Fault,
    listener: TcpListener,
    sp: SpConfig,
) -> actix_web::dev::ServerHandle {
    let b = web::Data::new(Broken {
        api: MyDataApi::new(&sp.platform_url, PollOptions::default()),
        sp,
        fault,
        trust: TrustAnchors::from_pem(&[ROOT_CA]).unwrap(),
        txs: Mutex::new(HashMap::new()),
        first_tx: Mutex::new(None),
        starts: Mutex::new(0),
    });
    let srv = HttpServer::new(move || {
        App::new()
            .app_data(b.clone())
            .route("/conformance/start", web::post().to(b_start))
            .route("/conformance/tx/{tx_id}", web::get().to(b_tx))
            .route("/sp-api", web::post().to(b_sp_api))
            .route("/return", web::get().to(b_return))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)
    .unwrap()
    .run();
    let h = srv.handle();
    actix_web::rt::spawn(srv);
    h
}

async fn against_broken(fault: Fault) -> Report {
    let (suite_l, suite_url) = bind();
    let (sp_l, sp_url) = bind();
    let target = Target::sandbox(1, &sp_url).unwrap();
    let mut sp = target.registration.clone();
    sp.platform_url = suite_url;
    let h = spawn_broken(fault, sp_l, sp).await;
    let opts = Options {
        quiet_window: Duration::from_millis(1500),
        absent_window: Duration::from_secs(3),
        ..Options::default()
    };
    let report = run(suite_l, &target, &opts).await.unwrap();
    h.stop(false).await;
    report
}

async fn only_fails(fault: Fault, id: &str) {
    let report = against_broken(fault).await;
    let failed: Vec<&str> = report
        .results
        .iter()
        .filter(|r| r.outcome.is_fail())
        .map(|r| r.id.as_str())
        .collect();
    assert_eq!(failed, vec![id], "{}", report.summary());
    assert_eq!(report.skipped(), 0, "{}", report.summary());
    let x = report.junit_xml();
    assert!(x.contains("failures=\"1\""), "{x}");
}

#[actix_web::test]
async fn the_broken_sp_without_a_fault_passes() {
    assert_all_pass(&against_broken(Fault::None).await);
}

#[actix_web::test]
async fn accepting_a_bad_api_key_fails() {
    only_fails(Fault::AcceptBadApiKey, "sp.sp_api.bad_api_key").await;
}

#[actix_web::test]
async fn ignoring_retry_after_fails() {
    only_fails(Fault::IgnoreRetryAfter, "sp.mydata_api.retry_after").await;
}

#[actix_web::test]
async fn polling_after_201_fails() {
    only_fails(Fault::PollAfterTaken, "sp.mydata_api.taken").await;
}

#[actix_web::test]
async fn accepting_a_tampered_manifest_fails() {
    only_fails(
        Fault::AcceptTamperedManifest,
        "sp.package.tampered_manifest",
    )
    .await;
}

#[actix_web::test]
async fn ignoring_the_jwe_key_error_fails() {
    only_fails(Fault::IgnoreJweKeyError, "sp.package.wrong_key").await;
}

#[actix_web::test]
async fn a_wrong_return_url_fails() {
    only_fails(Fault::WrongReturnUrl, "sp.redirect.return_url").await;
}

#[actix_web::test]
async fn a_reused_tx_id_fails() {
    only_fails(Fault::ReuseTxId, "sp.redirect.tx_id_fresh").await;
}
