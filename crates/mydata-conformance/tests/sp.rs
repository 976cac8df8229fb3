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
use mydata_sp::callback::parse_query;
use mydata_sp::package::{Delivered, Expectations, PackageError};
use mydata_sp::poll::{Answer, MyDataApi, PollError, PollOptions};
use mydata_sp::receiver::{ReceiveError, ReceivedContent, receive};
use mydata_sp::redirect::RedirectRequest;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

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

/// The example SP with one of the sandbox registrations. Mode A runs with the default options,
/// so the example SP is shown to wait the full 60 s after a 429 without `Retry-After`; mode B
/// runs with a 5 s window to keep the test time down.
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
    let opts = if n == 1 {
        Options::default()
    } else {
        Options {
            absent_window: Duration::from_secs(5),
            ..Options::default()
        }
    };
    let report = run(suite_l, &target, &opts).await.unwrap();
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
//
// Each fault is one real SP bug; `only_fails` asserts that it makes exactly the targeted check
// fail. spec/conformance-sp.md §6 maps every check to the tests here that make it fail.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    // The redirect.
    /// `{resources}` without its Base64 padding (the base64url habit).
    UnpaddedResources,
    /// The second start reuses the first start's `tx_id`.
    ReuseTxId,
    /// `returnUrl` is not the registered one.
    WrongReturnUrl,
    /// `pid` is the citizen's ID in plain text (never encrypted).
    PlainPid,
    /// A `caseNumber` given at the start is dropped.
    DropCaseNumber,
    // The SP-API.
    /// A good `secret_key` delivery is answered 202 Accepted (queued for later).
    Accepted202,
    /// Whatever `apiKey` the body carries is taken as the right one.
    AcceptBadApiKey,
    /// A wrong `apiKey` ends in an unhandled error: 500 instead of 403.
    BadApiKey500,
    /// The ticket of an `unable_to_deliver` call is polled when the citizen comes back.
    PollUnableTicket,
    // The return.
    /// The `tx_id` header is the UUID in upper case (as some databases hand it back).
    UppercaseTxIdHeader,
    /// Every 2xx return code counts as success (205, the citizen's refusal, included).
    AnyTwoHundredIsSuccess,
    /// A `tx_id` that does not decrypt falls back to the session's transaction (its cookie).
    TrustSessionOverTxId,
    // The MyData-API.
    /// `Retry-After` is ignored: the next request comes at once.
    IgnoreRetryAfter,
    /// Without `Retry-After` the SP waits 1 s instead of 60 s.
    ShortDefaultWait,
    /// One more request after 201.
    PollAfterTaken,
    /// One more request after 403.
    PollAfterForbidden,
    /// 504 is taken for a transient failure and polled again.
    RetryAfter504,
    // Packages.
    /// The files are kept as text with trailing whitespace trimmed: the bytes change.
    TrimmedFiles,
    /// A DP package that does not verify is shown as delivered anyway.
    AcceptTamperedManifest,
    /// The DP manifest's signature is never checked, only the files' digests.
    DigestsOnly,
    /// A JWE that does not decrypt is shown as delivered anyway.
    IgnoreJweKeyError,
    /// The JWE's authentication is not checked: the garbage payload is what fails.
    UnauthenticatedJwe,
    /// The packaging mode is never checked.
    IgnorePackagingMode,
    /// The packaging mode is never checked, but a dataset without a file is refused as missing.
    FileForEveryDataset,
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
    error_rule: Option<&'static str>,
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

/// The session cookie of the broken SP: the transaction this "browser" started last.
const COOKIE: &str = "btx";

/// `url` with the path segment after `/service/{client_id}/` (the resources) rewritten by `f`.
fn edit_resources(url: &str, f: impl FnOnce(&str) -> String) -> String {
    let at = url.find("/service/").unwrap() + "/service/".len();
    let seg_start = at + url[at..].find('/').unwrap() + 1;
    let seg_end = seg_start + url[seg_start..].find('/').unwrap();
    format!(
        "{}{}{}",
        &url[..seg_start],
        f(&url[seg_start..seg_end]),
        &url[seg_end..]
    )
}

/// `url` with the query parameter `name` set to `value` (already encoded).
fn edit_query(url: &str, name: &str, value: &str) -> String {
    let (base, q) = url.split_once('?').unwrap();
    let q: Vec<String> = q
        .split('&')
        .map(|kv| {
            if kv.split('=').next() == Some(name) {
                format!("{name}={value}")
            } else {
                kv.to_owned()
            }
        })
        .collect();
    format!("{base}?{}", q.join("&"))
}

async fn b_start(b: web::Data<Broken>, body: web::Json<Value>) -> HttpResponse {
    let plain_pid = body["pid"].as_str().unwrap_or("").to_owned();
    let pid = Pid::parse_for(ApplicationMode::PersonOrLegalPerson, &plain_pid);
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
        case_number: case.as_ref().filter(|_| b.fault != Fault::DropCaseNumber),
        tx_id: reuse,
        ..RedirectRequest::new(&list, &pid)
    };
    let r = sp.redirect(&rr).unwrap();
    let mut url = r.url.clone();
    match b.fault {
        Fault::UnpaddedResources => {
            url = edit_resources(&url, |seg| {
                seg.trim_end_matches('=').trim_end_matches("%3D").to_owned()
            })
        }
        Fault::PlainPid => url = edit_query(&url, "pid", &plain_pid),
        _ => {}
    }
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
    HttpResponse::Ok()
        .cookie(actix_web::cookie::Cookie::new(COOKIE, r.tx_id.to_string()))
        .json(json!({"tx_id": r.tx_id.as_str(), "redirect": url}))
}

async fn b_tx(b: web::Data<Broken>, path: web::Path<String>) -> HttpResponse {
    match b.with(|m| m.get(path.as_str()).cloned()) {
        Some(t) => HttpResponse::Ok().json(json!({
            "tx_id": path.as_str(), "state": t.state, "code": t.code, "polls": t.polls,
            "error": t.error, "error_rule": t.error_rule, "datasets": t.datasets,
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
        Err(ReceiveError::ApiKey) if b.fault == Fault::BadApiKey500 => {
            return HttpResponse::InternalServerError().finish();
        }
        Err(e) => return HttpResponse::build(e.status().try_into().unwrap()).finish(),
    };
    let mut status = 200;
    let known = b.with(|m| match m.get_mut(r.tx_id.as_str()) {
        Some(t) => {
            t.ticket = Some(r.permission_ticket.clone());
            match r.content {
                ReceivedContent::SecretKey(k) => {
                    t.key = Some(k);
                    if b.fault == Fault::Accepted202 {
                        status = 202;
                    }
                }
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
        HttpResponse::build(status.try_into().unwrap()).finish()
    } else {
        HttpResponse::NotFound().finish()
    }
}

/// The return read as a correct SP reads it, or, with [`Fault::TrustSessionOverTxId`], a
/// `tx_id` that does not decrypt replaced by the session cookie's transaction.
fn read_back(b: &Broken, req: &HttpRequest) -> Option<(TxId, u16)> {
    match b.sp.read_return(req.query_string()) {
        Ok(back) => Some((back.tx_id?, back.outcome.code())),
        Err(_) if b.fault == Fault::TrustSessionOverTxId => {
            let code = parse_query(req.query_string())
                .into_iter()
                .find(|(k, _)| k == "code")?
                .1
                .parse()
                .ok()?;
            Some((req.cookie(COOKIE)?.value().parse().ok()?, code))
        }
        Err(_) => None,
    }
}

async fn b_return(b: web::Data<Broken>, req: HttpRequest) -> HttpResponse {
    let Some((tx_id, code)) = read_back(&b, &req) else {
        return HttpResponse::BadRequest().finish();
    };
    let success = if b.fault == Fault::AnyTwoHundredIsSuccess {
        (200..300).contains(&code)
    } else {
        code == 200
    };
    let go = b.with(|m| {
        let t = m.get_mut(tx_id.as_str())?;
        t.code = Some(code);
        if t.unable {
            // The fault: the ticket is polled all the same (with no key to open a package).
            return (b.fault == Fault::PollUnableTicket)
                .then(|| Some((t.ticket.clone()?, None, t.resources.clone())))
                .flatten();
        }
        if !success {
            t.state = "refused";
            return None;
        }
        match (&t.ticket, &t.key) {
            (Some(tk), Some(k)) => {
                t.state = "returned";
                Some((tk.clone(), Some(k.clone()), t.resources.clone()))
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
    key: Option<SecretKey>,
    resources: Vec<ResourceId>,
) {
    let tx = tx_id.as_str();
    let header: TxId = if b.fault == Fault::UppercaseTxIdHeader {
        tx.to_uppercase().parse().unwrap()
    } else {
        tx_id.clone()
    };
    let fetch = || b.api.fetch_once(&ticket, Some(&header), SystemTime::now());
    loop {
        b.set(tx, |t| {
            t.polls += 1;
            t.state = "polling";
        });
        match fetch().await {
            Answer::NotReady { wait } | Answer::Transient { wait, .. } => {
                // The correct wait is `wait` (Retry-After, or 60 s without it).
                let wait = match b.fault {
                    Fault::IgnoreRetryAfter if wait < Duration::from_secs(60) => Duration::ZERO,
                    Fault::ShortDefaultWait if wait >= Duration::from_secs(60) => {
                        Duration::from_secs(1)
                    }
                    _ => wait,
                };
                actix_web::rt::time::sleep(wait).await;
            }
            Answer::Final(PollError::AllFailed) if b.fault == Fault::RetryAfter504 => {
                actix_web::rt::time::sleep(Duration::from_secs(1)).await;
            }
            Answer::Final(e) => {
                let again = match e {
                    PollError::AlreadyTaken => b.fault == Fault::PollAfterTaken,
                    PollError::Forbidden => b.fault == Fault::PollAfterForbidden,
                    _ => false,
                };
                if again {
                    b.set(tx, |t| t.polls += 1);
                    let _ = fetch().await;
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
                let Some(key) = &key else {
                    b.set(tx, |t| {
                        t.state = "rejected";
                        t.error = Some("jwe");
                    });
                    return;
                };
                let mut sp = b.sp.clone();
                if matches!(
                    b.fault,
                    Fault::IgnorePackagingMode | Fault::FileForEveryDataset
                ) {
                    sp.packaging_mode = None;
                }
                let exp = Expectations::now().trust(&b.trust).requested(&resources);
                let r = sp.open_package(&jwe, key, &exp);
                b.set(tx, |t| record(b.fault, t, r));
                return;
            }
        }
    }
}

/// Records what the SP made of a package, with the package faults.
fn record(fault: Fault, t: &mut BTx, r: Result<Delivered, PackageError>) {
    match r {
        Ok(d) => {
            let mut kind = d.first_failure().map(PackageError::kind);
            if fault == Fault::DigestsOnly && kind == Some("bad_signature") {
                // This SP never checks the signature: its own check of the files against the
                // altered manifest is what fails.
                kind = Some("digest_mismatch");
            }
            if fault == Fault::FileForEveryDataset
                && d.datasets.iter().any(|ds| ds.files.is_empty())
            {
                kind = kind.or(Some("missing_file"));
            }
            let ok = kind.is_none() || fault == Fault::AcceptTamperedManifest;
            t.state = if ok { "delivered" } else { "rejected" };
            t.error = kind;
            t.datasets = d
                .datasets
                .iter()
                .map(|ds| {
                    let kept: Vec<Vec<u8>> = ds
                        .files
                        .iter()
                        .map(|f| {
                            if fault == Fault::TrimmedFiles {
                                f.bytes.trim_ascii_end().to_vec()
                            } else {
                                f.bytes.clone()
                            }
                        })
                        .collect();
                    json!({"resource_id": ds.resource_id.as_str(), "code": ds.code,
                        "files": ds.files.iter().map(|f| f.name.clone()).collect::<Vec<_>>(),
                        "sha256": kept.iter().map(|k| hex::encode(Sha256::digest(k))).collect::<Vec<_>>()})
                })
                .collect();
        }
        Err(PackageError::Jwe(_)) if fault == Fault::IgnoreJweKeyError => {
            t.state = "delivered";
        }
        Err(PackageError::Jwe(_)) if fault == Fault::UnauthenticatedJwe => {
            // Decrypted without checking the tag: what comes out is not the {filename, data}
            // payload.
            t.state = "rejected";
            t.error = Some("jwe_payload");
        }
        Err(e) => {
            t.state = "rejected";
            t.error = Some(e.kind());
            t.error_rule =
                matches!(e, PackageError::PackagingMode { .. }).then_some("packaging_mode");
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

/// The windows of the runs against the broken SP: shorter than the defaults to keep the tests
/// quick. The retry-after-absent window (3 s) still holds a poll of [`Fault::ShortDefaultWait`]
/// (1 s after the 429), so that check is shown to fail within the shortened window.
fn quick() -> Options {
    Options {
        quiet_window: Duration::from_millis(1500),
        absent_window: Duration::from_secs(3),
        ..Options::default()
    }
}

async fn against_broken(fault: Fault) -> Report {
    let (suite_l, suite_url) = bind();
    let (sp_l, sp_url) = bind();
    let target = Target::sandbox(1, &sp_url).unwrap();
    let mut sp = target.registration.clone();
    sp.platform_url = suite_url;
    let h = spawn_broken(fault, sp_l, sp).await;
    let report = run(suite_l, &target, &quick()).await.unwrap();
    h.stop(false).await;
    report
}

/// Runs the suite against the broken SP with `fault` and asserts that exactly check `id` failed,
/// with a message containing `why` (so it failed for the reason the fault models).
async fn only_fails(fault: Fault, id: &str, why: &str) {
    assert!(CHECKS.iter().any(|(c, _)| *c == id), "unknown check {id}");
    let report = against_broken(fault).await;
    let failed: Vec<&str> = report
        .results
        .iter()
        .filter(|r| r.outcome.is_fail())
        .map(|r| r.id.as_str())
        .collect();
    assert_eq!(failed, vec![id], "{fault:?}\n{}", report.summary());
    assert_eq!(report.skipped(), 0, "{}", report.summary());
    let r = report.results.iter().find(|r| r.id == id).unwrap();
    match &r.outcome {
        Outcome::Fail(m) => assert!(m.contains(why), "{fault:?}: {m:?} does not say {why:?}"),
        other => panic!("{fault:?}: {other:?}"),
    }
    let x = report.junit_xml();
    assert!(x.contains("failures=\"1\""), "{x}");
}

#[actix_web::test]
async fn the_broken_sp_without_a_fault_passes() {
    assert_all_pass(&against_broken(Fault::None).await);
}

// The redirect.

#[actix_web::test]
async fn unpadded_resources_fail() {
    only_fails(
        Fault::UnpaddedResources,
        "sp.redirect.shape",
        "resources segment",
    )
    .await;
}

#[actix_web::test]
async fn a_reused_tx_id_fails() {
    only_fails(
        Fault::ReuseTxId,
        "sp.redirect.tx_id_fresh",
        "was used by two starts",
    )
    .await;
}

#[actix_web::test]
async fn a_wrong_return_url_fails() {
    only_fails(
        Fault::WrongReturnUrl,
        "sp.redirect.return_url",
        "would return code 404",
    )
    .await;
}

#[actix_web::test]
async fn a_plain_pid_fails() {
    only_fails(Fault::PlainPid, "sp.redirect.pid", "does not decrypt").await;
}

#[actix_web::test]
async fn a_dropped_case_number_fails() {
    only_fails(
        Fault::DropCaseNumber,
        "sp.redirect.case_number",
        "caseNumber None",
    )
    .await;
}

// The SP-API.

#[actix_web::test]
async fn answering_202_to_a_good_delivery_fails() {
    only_fails(
        Fault::Accepted202,
        "sp.sp_api.accept",
        "answered 202, expected 200 or 201",
    )
    .await;
}

#[actix_web::test]
async fn accepting_a_bad_api_key_fails() {
    only_fails(
        Fault::AcceptBadApiKey,
        "sp.sp_api.bad_api_key",
        "answered 200 to a wrong apiKey, expected 403",
    )
    .await;
}

#[actix_web::test]
async fn answering_500_to_a_bad_api_key_fails() {
    only_fails(
        Fault::BadApiKey500,
        "sp.sp_api.bad_api_key",
        "answered 500 to a wrong apiKey, expected 403",
    )
    .await;
}

#[actix_web::test]
async fn polling_an_unable_to_deliver_ticket_fails() {
    only_fails(
        Fault::PollUnableTicket,
        "sp.sp_api.unable_to_deliver",
        "expected unable_to_deliver",
    )
    .await;
}

// The return.

#[actix_web::test]
async fn an_upper_case_tx_id_header_fails() {
    only_fails(
        Fault::UppercaseTxIdHeader,
        "sp.return.success",
        "is not the transaction",
    )
    .await;
}

#[actix_web::test]
async fn taking_205_for_success_fails() {
    only_fails(
        Fault::AnyTwoHundredIsSuccess,
        "sp.return.other_codes",
        "expected refused and 205",
    )
    .await;
}

#[actix_web::test]
async fn accepting_an_undecryptable_tx_id_fails() {
    only_fails(
        Fault::TrustSessionOverTxId,
        "sp.return.bad_tx_id",
        "answered 200, expected 4xx",
    )
    .await;
}

// The MyData-API.

#[actix_web::test]
async fn ignoring_retry_after_fails() {
    only_fails(
        Fault::IgnoreRetryAfter,
        "sp.mydata_api.retry_after",
        "after a 429 with Retry-After: 2",
    )
    .await;
}

#[actix_web::test]
async fn a_short_default_wait_fails() {
    only_fails(
        Fault::ShortDefaultWait,
        "sp.mydata_api.retry_after_absent",
        "after a 429 without Retry-After",
    )
    .await;
}

#[actix_web::test]
async fn polling_after_201_fails() {
    only_fails(
        Fault::PollAfterTaken,
        "sp.mydata_api.taken",
        "after the final 201",
    )
    .await;
}

#[actix_web::test]
async fn polling_after_403_fails() {
    only_fails(
        Fault::PollAfterForbidden,
        "sp.mydata_api.expired",
        "after the final 403",
    )
    .await;
}

#[actix_web::test]
async fn polling_after_504_fails() {
    only_fails(
        Fault::RetryAfter504,
        "sp.mydata_api.all_failed",
        "expected failed",
    )
    .await;
}

// Packages.

#[actix_web::test]
async fn altered_file_bytes_fail() {
    only_fails(
        Fault::TrimmedFiles,
        "sp.package.delivered",
        "the delivered bytes differ",
    )
    .await;
}

#[actix_web::test]
async fn accepting_a_tampered_manifest_fails() {
    only_fails(
        Fault::AcceptTamperedManifest,
        "sp.package.tampered_manifest",
        r#"state "delivered""#,
    )
    .await;
}

#[actix_web::test]
async fn rejecting_a_tampered_manifest_for_its_digests_fails() {
    only_fails(
        Fault::DigestsOnly,
        "sp.package.tampered_manifest",
        r#"rejected with error Some("digest_mismatch"), expected "bad_signature""#,
    )
    .await;
}

#[actix_web::test]
async fn ignoring_the_jwe_key_error_fails() {
    only_fails(
        Fault::IgnoreJweKeyError,
        "sp.package.wrong_key",
        r#"state "delivered""#,
    )
    .await;
}

#[actix_web::test]
async fn rejecting_a_wrong_key_jwe_for_its_payload_fails() {
    only_fails(
        Fault::UnauthenticatedJwe,
        "sp.package.wrong_key",
        r#"rejected with error Some("jwe_payload"), expected "jwe""#,
    )
    .await;
}

#[actix_web::test]
async fn ignoring_the_packaging_mode_fails() {
    only_fails(
        Fault::IgnorePackagingMode,
        "sp.package.mode_mismatch",
        r#"state "delivered""#,
    )
    .await;
}

#[actix_web::test]
async fn rejecting_a_mode_mismatch_for_a_missing_file_fails() {
    only_fails(
        Fault::FileForEveryDataset,
        "sp.package.mode_mismatch",
        r#"rejected with error Some("missing_file"), expected "manifest""#,
    )
    .await;
}
