//! The DP suite against the sandbox DP and against a DP built on the SDK as the example DP is
//! (every check passes), and against that DP broken in one way at a time (exactly the check
//! of the broken rule fails; where one bug breaks several rules, exactly those).

use std::collections::{HashMap, HashSet};
use std::io::{Cursor, Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use mydata_conformance::dp::{CHECKS, DatasetProfile, Person, Profile, run, run_on};
use mydata_conformance::report::Report;
use mydata_dp::introspect::{BoxFuture, IntrospectError};
use mydata_dp::{
    CacheConfig, CachingIntrospector, CallContext, DataFile, Dataset, Deferred, DpService,
    HttpIntrospector, Introspection, Introspector, Outcome, ResourceSecret, SystemClock, UserInfo,
};
use mydata_protocol::package::dp::DpSigner;
use serde_json::json;

/// The revocation check waits this long (+1 s); the expiry check's token lives 3 s and is
/// called again 1 s past its `exp`, so a DP that keeps answers this long past `exp` is caught
/// even when its first answer took a while.
const CACHE_SECS: u64 = 8;
const INSTANT: &str = "API.CONFTEST01";
const SLOW: &str = "API.CONFTEST02";

fn free_addr() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// A listener on a free loopback port, held until the server takes it (no port race).
fn listener() -> (TcpListener, String) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    (l, url)
}

fn pki(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/pki")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn signer(name: &str) -> DpSigner {
    DpSigner::from_pem(&pki(&format!("{name}.key")), &pki(&format!("{name}.pem"))).unwrap()
}

fn person(id: &str, name: &str, birth: &str) -> Person {
    Person {
        id: id.into(),
        birth_date: Some(birth.into()),
        name: Some(name.into()),
        email: None,
    }
}

fn failed(r: &Report) -> Vec<&str> {
    r.results
        .iter()
        .filter(|c| c.outcome.is_fail())
        .map(|c| c.id.as_str())
        .collect()
}

// --- the sandbox DP -------------------------------------------------------------------------

#[actix_web::test]
async fn the_sandbox_dp_passes_every_check() {
    let (held, platform) = listener();
    let mut config = mydata_dp::sandbox::SandboxConfig::embedded(&platform).unwrap();
    config.cache.ttl_secs = CACHE_SECS;
    let dp = mydata_dp::sandbox::spawn_thread(config).unwrap();
    let mut profile = Profile::sandbox(&platform, &dp.base_url());
    profile.cache_secs = CACHE_SECS;
    let report = run_on(held, &profile).await;
    dp.stop();
    assert!(report.passed(), "{}", report.summary());
    // Everything ran but the checks the sandbox gives no occasion for.
    let skipped: Vec<_> = report
        .results
        .iter()
        .filter(|r| !r.outcome.is_fail() && r.outcome != mydata_conformance::report::Outcome::Pass)
        .map(|r| r.id.as_str())
        .collect();
    assert_eq!(
        skipped,
        vec!["dp.userinfo.bearer", "dp.template.received"],
        "{}",
        report.summary()
    );
    assert_eq!(report.results.len(), CHECKS.len());
}

// --- a DP on the SDK with one fault at a time -------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    /// The heartbeat demands a token.
    HeartbeatNeedsToken,
    /// A call without a token is served (for a default citizen).
    ServesWithoutToken,
    /// The introspection request carries the token in the query string.
    IntrospectTokenInQuery,
    /// An inactive answer is taken as active (for a default citizen).
    AcceptInactive,
    /// The DP never asks the platform; every token is a default citizen's.
    SkipIntrospection,
    /// A token for another dataset is accepted when its scope matches.
    IgnoreAudience,
    /// A token without `aud` is accepted whatever its scope.
    AnyScope,
    /// No data answered 404.
    NoDataAs404,
    /// `Content-Type: application/octet-stream`.
    OctetStream,
    /// A repeated `transaction_uid` is refused as a replay (409).
    RefuseRepeat,
    /// One package slot per dataset: the first package made is answered to every later call.
    RepeatAcrossUids,
    /// The signature file is left out of the package.
    NoSignatureFile,
    /// The package carries another certificate than the one whose key signed it.
    WrongCertificate,
    /// Signed with a key whose certificate is not from the DP CA.
    UntrustedSigner,
    /// Signed with an expired certificate.
    ExpiredSigner,
    /// Active answers cached `CACHE_SECS`, past the token's `exp`.
    CacheIgnoresExp,
    /// Active answers cached for good (until `exp`).
    CacheForever,
    /// The slow dataset's 429 without `Retry-After`.
    NoRetryAfter,
    /// The slow dataset starts over on every call of the series.
    RestartOnRepeat,
    /// Userinfo asked with the token as `access_token` in the query.
    UserinfoTokenInQuery,
    /// The dataset's template items are not read (the citizen comes from the token only).
    TemplateIgnored,
}

/// The citizen a faulty DP assumes when it does not know.
const DEFAULT_CITIZEN: &str = "A120345672";

/// An introspector with the faults of the token side.
struct FaultyIntrospector {
    fault: Fault,
    resource_id: String,
    http: HttpIntrospector,
    platform: String,
    basic: String,
    cache: Mutex<HashMap<String, (Introspection, std::time::Instant)>>,
}

impl FaultyIntrospector {
    async fn ask(&self, token: &str) -> Result<Introspection, IntrospectError> {
        if self.fault == Fault::IntrospectTokenInQuery {
            let url = format!(
                "{}/connect/introspect?token={}",
                self.platform,
                mydata_protocol::template::form_urlencode(token)
            );
            let mut r = awc::Client::new()
                .post(url)
                .insert_header(("Authorization", self.basic.clone()))
                .send()
                .await
                .map_err(|e| IntrospectError::Transport(e.to_string()))?;
            let body = r
                .body()
                .await
                .map_err(|e| IntrospectError::Transport(e.to_string()))?;
            return serde_json::from_slice(&body)
                .map_err(|e| IntrospectError::BadAnswer(e.to_string()));
        }
        self.http.introspect(token).await
    }

    fn fabricated(&self) -> Introspection {
        Introspection {
            active: true,
            aud: vec![self.resource_id.clone()],
            uid: Some(DEFAULT_CITIZEN.into()),
            sub: Some("fabricated".into()),
            ..Introspection::default()
        }
    }

    async fn decide(&self, token: &str) -> Result<Introspection, IntrospectError> {
        let cached_for = match self.fault {
            Fault::CacheIgnoresExp => Some(Duration::from_secs(CACHE_SECS)),
            Fault::CacheForever => Some(Duration::from_secs(3_600)),
            _ => None,
        };
        if let Some(ttl) = cached_for {
            let now = std::time::Instant::now();
            if let Some((i, at)) = self.cache.lock().unwrap().get(token).cloned() {
                let past_exp = i.exp.is_some_and(|e| e <= mydata_conformance_now())
                    && self.fault == Fault::CacheForever;
                if now.duration_since(at) < ttl && !past_exp {
                    return Ok(i);
                }
            }
            let i = self.ask(token).await?;
            if i.active {
                self.cache
                    .lock()
                    .unwrap()
                    .insert(token.to_owned(), (i.clone(), now));
            }
            return Ok(i);
        }
        if self.fault == Fault::SkipIntrospection {
            return Ok(self.fabricated());
        }
        let mut i = self.ask(token).await?;
        match self.fault {
            Fault::AcceptInactive if !i.active => i = self.fabricated(),
            // `aud` names another dataset: judged by the scope alone.
            Fault::IgnoreAudience if i.active && !i.aud.contains(&self.resource_id) => {
                i.aud.clear();
            }
            Fault::AnyScope if i.active && i.aud.is_empty() => {
                i.aud = vec![self.resource_id.clone()];
            }
            _ => {}
        }
        Ok(i)
    }
}

fn mydata_conformance_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

impl Introspector for FaultyIntrospector {
    fn introspect<'a>(
        &'a self,
        token: &'a str,
    ) -> BoxFuture<'a, Result<Introspection, IntrospectError>> {
        Box::pin(self.decide(token))
    }

    fn userinfo<'a>(
        &'a self,
        token: &'a str,
    ) -> BoxFuture<'a, Result<Option<UserInfo>, IntrospectError>> {
        Box::pin(async move {
            if self.fault == Fault::SkipIntrospection || self.fault == Fault::AcceptInactive {
                return Ok(Some(UserInfo(serde_json::Map::new())));
            }
            if self.fault != Fault::UserinfoTokenInQuery {
                return self.http.userinfo(token).await;
            }
            let url = format!(
                "{}/connect/userinfo?access_token={}",
                self.platform,
                mydata_protocol::template::form_urlencode(token)
            );
            let mut r = awc::Client::new()
                .get(url)
                .send()
                .await
                .map_err(|e| IntrospectError::Transport(e.to_string()))?;
            if r.status().as_u16() != 200 {
                return Ok(None);
            }
            let body = r
                .body()
                .await
                .map_err(|e| IntrospectError::Transport(e.to_string()))?;
            serde_json::from_slice(&body)
                .map(Some)
                .map_err(|e| IntrospectError::BadAnswer(e.to_string()))
        })
    }
}

/// Where the instant dataset's template puts the citizen's ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Where {
    Query,
    Header,
    Form,
    Json,
}

/// The records of the test DP: two citizens with data.
fn record(uid: &str) -> Option<serde_json::Value> {
    match uid {
        "A120345672" => Some(json!({"name": "王大明", "household": "A2034517"})),
        "F228710436" => Some(json!({"name": "林淑芬", "household": "F1087234"})),
        _ => None,
    }
}

struct Instant {
    fault: Fault,
    template: Option<Where>,
}

impl Dataset for Instant {
    fn answer<'a>(&'a self, call: &'a CallContext) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let Some(uid) = call.uid().map(str::to_ascii_uppercase) else {
                return Outcome::failed();
            };
            if let (Some(w), false) = (self.template, self.fault == Fault::TemplateIgnored) {
                let sent = match w {
                    Where::Query => call.params.query("citizen"),
                    Where::Header => call.params.header("x-citizen-id"),
                    Where::Form => call.params.form("citizen"),
                    Where::Json => call.params.json_str("/citizen/id"),
                };
                if sent != Some(uid.as_str()) {
                    return Outcome::Failed { status: 400 };
                }
            }
            let Some(rec) = record(&uid) else {
                return Outcome::NoData;
            };
            let name = call
                .userinfo
                .as_ref()
                .and_then(|u| u.name())
                .unwrap_or("")
                .to_owned();
            let doc = json!({"id": uid, "record": rec, "userinfo_name": name});
            Outcome::Ready(vec![DataFile::new("data.json", doc.to_string())])
        })
    }

    fn wants_userinfo(&self) -> bool {
        true
    }
}

struct TestDp {
    fault: Fault,
    instant: Arc<DpService>,
    slow: Arc<DpService>,
    signer: DpSigner,
    seen: Mutex<HashSet<String>>,
    slot: Mutex<Option<Vec<u8>>>,
}

fn rezip(pkg: &[u8], f: impl Fn(&str, Vec<u8>) -> Option<Vec<u8>>) -> Vec<u8> {
    let mut z = zip::ZipArchive::new(Cursor::new(pkg)).unwrap();
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    for i in 0..z.len() {
        let mut e = z.by_index(i).unwrap();
        let name = e.name().unwrap().into_owned();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        if let Some(d) = f(&name, data) {
            w.start_file(name, zip::write::SimpleFileOptions::default())
                .unwrap();
            w.write_all(&d).unwrap();
        }
    }
    w.finish().unwrap().into_inner()
}

async fn handle(
    st: web::Data<TestDp>,
    which: web::Data<&'static str>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let slow = *which.get_ref() == "slow";
    let fault = st.fault;
    let query = req.query_string().to_owned();
    let heartbeat = query.contains("heartbeat=true");
    let has_auth = req.headers().contains_key("authorization");
    if heartbeat && !has_auth && fault == Fault::HeartbeatNeedsToken {
        return HttpResponse::Unauthorized().finish();
    }
    if slow && !heartbeat && has_auth && fault == Fault::RestartOnRepeat {
        // Every call is taken as a new request: always still working.
        return HttpResponse::TooManyRequests()
            .insert_header(("Retry-After", "1"))
            .finish();
    }
    if !slow && !heartbeat && !has_auth && fault == Fault::ServesWithoutToken {
        let rec = record(DEFAULT_CITIZEN).unwrap();
        let pkg = mydata_dp::build_package(
            &st.signer,
            &[DataFile::new("data.json", rec.to_string())],
            Default::default(),
        )
        .unwrap();
        return HttpResponse::Ok().content_type("application/zip").body(pkg);
    }
    let service = if slow { &st.slow } else { &st.instant };
    let resp = mydata_dp::actix::respond(service, &req, &body).await;
    let status = resp.status().as_u16();
    let mut builder = HttpResponse::build(resp.status());
    for (k, v) in resp.headers() {
        if fault == Fault::NoRetryAfter && slow && k.as_str().eq_ignore_ascii_case("retry-after") {
            continue;
        }
        if fault == Fault::OctetStream && !slow && k.as_str().eq_ignore_ascii_case("content-type") {
            builder.insert_header((k.clone(), "application/octet-stream"));
            continue;
        }
        builder.insert_header((k.clone(), v.clone()));
    }
    let bytes = actix_web::body::to_bytes(resp.into_body())
        .await
        .unwrap_or_default()
        .to_vec();
    if slow || heartbeat {
        return builder.body(bytes);
    }
    match (fault, status) {
        (Fault::NoDataAs404, 204) => return HttpResponse::NotFound().finish(),
        (Fault::RefuseRepeat, 200) => {
            let uid = mydata_sp::callback::parse_query(&query)
                .into_iter()
                .find(|(k, _)| k == "transaction_uid")
                .map(|(_, v)| v)
                .unwrap_or_default();
            if !st.seen.lock().unwrap().insert(uid) {
                return HttpResponse::Conflict().body("transaction_uid already used");
            }
        }
        (Fault::RepeatAcrossUids, 200) => {
            let mut slot = st.slot.lock().unwrap();
            match slot.as_ref() {
                Some(first) => return builder.body(first.clone()),
                None => *slot = Some(bytes.clone()),
            }
        }
        (Fault::NoSignatureFile, 200) => {
            return builder.body(rezip(&bytes, |n, d| {
                (n != "META-INFO/manifest.sha256withrsa").then_some(d)
            }));
        }
        (Fault::WrongCertificate, 200) => {
            return builder.body(rezip(&bytes, |n, d| {
                Some(if n == "META-INFO/certificate.cer" {
                    pki("dp-nhi.pem")
                } else {
                    d
                })
            }));
        }
        _ => {}
    }
    builder.body(bytes)
}

struct Running {
    profile: Profile,
    platform: TcpListener,
    handle: actix_web::dev::ServerHandle,
}

fn dataset_profile(base: &str, id: &str, path: &str, scope: &str) -> DatasetProfile {
    DatasetProfile {
        resource_id: id.into(),
        resource_secret: format!("secret-of-{id}"),
        endpoint: format!("{base}{path}"),
        method: "GET".into(),
        scopes: vec![scope.into()],
        template: None,
    }
}

fn template_of(w: Where) -> (String, serde_json::Value) {
    match w {
        Where::Query => (
            "GET".into(),
            json!({"items": [{"location": "query", "name": "citizen", "value": "{{pid}}"}]}),
        ),
        Where::Header => (
            "GET".into(),
            json!({"items": [{"location": "header", "name": "X-Citizen-Id", "value": "{{pid}}"}]}),
        ),
        Where::Form => (
            "POST".into(),
            json!({"items": [{"location": "form", "name": "citizen", "value": "{{pid}}"}]}),
        ),
        Where::Json => (
            "POST".into(),
            json!({"skeleton": {"citizen": {"id": ""}},
                   "items": [{"location": "json", "name": "/citizen/id", "value": "{{pid}}"}]}),
        ),
    }
}

fn start(fault: Fault, template: Option<Where>) -> Running {
    let (platform_listener, platform) = listener();
    let (dp_listener, base) = listener();
    let mut instant_p = dataset_profile(&base, INSTANT, "/dp/instant", "conformance.instant.read");
    if let Some(w) = template {
        let (method, t) = template_of(w);
        instant_p.method = method;
        instant_p.template = Some(t);
    }
    let slow_p = dataset_profile(&base, SLOW, "/dp/slow", "conformance.slow.read");
    let sig = match fault {
        Fault::UntrustedSigner => "dp-untrusted",
        Fault::ExpiredSigner => "dp-expired",
        _ => "dp-moi",
    };
    let introspector = |d: &DatasetProfile| -> Arc<dyn Introspector> {
        let http = HttpIntrospector::new(
            &platform,
            &d.resource_id,
            ResourceSecret::new(d.resource_secret.clone()),
        );
        let faulty = FaultyIntrospector {
            fault,
            resource_id: d.resource_id.clone(),
            http,
            platform: platform.clone(),
            basic: mydata_dp::introspect::basic_authorization(
                &d.resource_id,
                &ResourceSecret::new(d.resource_secret.clone()),
            ),
            cache: Mutex::new(HashMap::new()),
        };
        match fault {
            // The faults that replace the SDK's cache.
            Fault::CacheIgnoresExp | Fault::CacheForever => Arc::new(faulty),
            _ => Arc::new(CachingIntrospector::new(
                faulty,
                Arc::new(SystemClock),
                CacheConfig {
                    ttl_secs: CACHE_SECS,
                    ..CacheConfig::default()
                },
            )),
        }
    };
    let instant = DpService::builder(INSTANT)
        .scopes(["conformance.instant.read"])
        .introspector(introspector(&instant_p))
        .signer(Arc::new(signer(sig)))
        .dataset(Instant { fault, template })
        .build()
        .unwrap();
    let slow = DpService::builder(SLOW)
        .scopes(["conformance.slow.read"])
        .introspector(introspector(&slow_p))
        .signer(Arc::new(signer("dp-moi")))
        .dataset(Deferred::new(
            |call: CallContext| {
                std::thread::sleep(Duration::from_secs(2));
                match call.uid().and_then(record) {
                    Some(r) => Outcome::Ready(vec![DataFile::new("slow.json", r.to_string())]),
                    None => Outcome::NoData,
                }
            },
            1,
        ))
        .build()
        .unwrap();
    let st = web::Data::new(TestDp {
        fault,
        instant: Arc::new(instant),
        slow: Arc::new(slow),
        signer: signer("dp-moi"),
        seen: Mutex::new(HashSet::new()),
        slot: Mutex::new(None),
    });
    let srv = HttpServer::new(move || {
        App::new()
            .app_data(st.clone())
            .service(
                web::resource("/dp/instant")
                    .app_data(web::Data::new("instant"))
                    .to(handle),
            )
            .service(
                web::resource("/dp/slow")
                    .app_data(web::Data::new("slow"))
                    .to(handle),
            )
    })
    .workers(2)
    .disable_signals()
    .listen(dp_listener)
    .unwrap()
    .run();
    let handle = srv.handle();
    actix_web::rt::spawn(srv);
    let profile = Profile {
        platform_url: platform.clone(),
        instant: instant_p,
        slow: Some(slow_p),
        citizen: person("A120345672", "王大明", "1988-01-01"),
        other_citizen: person("F228710436", "林淑芬", "1975-03-15"),
        no_data_id: "H135908240".into(),
        dp_ca: None,
        cache_secs: CACHE_SECS,
        slow_max_secs: 20,
        client_id: "CLI.SANDBOX001".into(),
        dp_ca_pem: Some(pki("sandbox-root-ca.pem")),
    };
    Running {
        profile,
        platform: platform_listener,
        handle,
    }
}

async fn suite(fault: Fault, template: Option<Where>) -> Report {
    let r = start(fault, template);
    let report = run_on(r.platform, &r.profile).await;
    r.handle.stop(false).await;
    report
}

/// The run fails exactly `ids` (in report order), and says so in its JUnit XML.
async fn only(fault: Fault, ids: &[&str]) {
    let report = suite(fault, None).await;
    assert_eq!(failed(&report), ids, "{fault:?}\n{}", report.summary());
    let x = report.junit_xml();
    assert!(x.contains(&format!("failures=\"{}\"", ids.len())), "{x}");
}

#[actix_web::test]
async fn the_sdk_dp_without_a_fault_passes_every_check() {
    let report = suite(Fault::None, None).await;
    assert!(report.passed(), "{}", report.summary());
    assert_eq!(report.skipped(), 1, "{}", report.summary()); // no template
    assert_eq!(report.results.len(), CHECKS.len());
}

#[actix_web::test]
async fn templates_in_every_location_are_received() {
    for w in [Where::Query, Where::Header, Where::Form, Where::Json] {
        let report = suite(Fault::None, Some(w)).await;
        assert!(report.passed(), "{w:?}\n{}", report.summary());
        assert_eq!(report.skipped(), 0, "{w:?}\n{}", report.summary());
    }
}

#[actix_web::test]
async fn a_dp_not_reading_its_template_fails() {
    let report = suite(Fault::TemplateIgnored, Some(Where::Header)).await;
    assert_eq!(
        failed(&report),
        ["dp.template.received"],
        "{}",
        report.summary()
    );
}

#[actix_web::test]
async fn a_heartbeat_demanding_a_token_fails() {
    only(Fault::HeartbeatNeedsToken, &["dp.heartbeat"]).await;
}

#[actix_web::test]
async fn serving_without_a_token_fails() {
    only(Fault::ServesWithoutToken, &["dp.token.missing_401"]).await;
}

#[actix_web::test]
async fn a_token_in_the_introspection_query_fails() {
    only(Fault::IntrospectTokenInQuery, &["dp.introspect.request"]).await;
}

#[actix_web::test]
async fn accepting_inactive_tokens_fails() {
    // Expired and revoked tokens are inactive too, but there the SDK's job store still refuses:
    // the fabricated answer names another owner than the series' first call (403).
    only(Fault::AcceptInactive, &["dp.token.inactive_refused"]).await;
}

#[actix_web::test]
async fn skipping_introspection_fails() {
    // Without introspection the DP cannot know whose token it holds: every token check, the
    // 204 for a citizen without data and the other citizen's own package fail with it.
    only(
        Fault::SkipIntrospection,
        &[
            "dp.token.inactive_refused",
            "dp.token.audience",
            "dp.token.scope",
            "dp.no_data_204",
            "dp.introspect.request",
            "dp.uid.distinct",
            "dp.token.expired",
            "dp.token.revoked",
        ],
    )
    .await;
}

#[actix_web::test]
async fn ignoring_the_audience_fails() {
    only(Fault::IgnoreAudience, &["dp.token.audience"]).await;
}

#[actix_web::test]
async fn accepting_any_scope_fails() {
    only(Fault::AnyScope, &["dp.token.scope"]).await;
}

#[actix_web::test]
async fn no_data_as_404_fails() {
    only(Fault::NoDataAs404, &["dp.no_data_204"]).await;
}

#[actix_web::test]
async fn a_package_as_octet_stream_fails() {
    only(Fault::OctetStream, &["dp.answer.zip"]).await;
}

#[actix_web::test]
async fn refusing_a_repeated_transaction_uid_fails() {
    only(Fault::RefuseRepeat, &["dp.uid.same_request"]).await;
}

#[actix_web::test]
async fn repeating_a_package_across_transaction_uids_fails() {
    only(Fault::RepeatAcrossUids, &["dp.uid.distinct"]).await;
}

#[actix_web::test]
async fn a_package_without_its_signature_file_fails() {
    only(Fault::NoSignatureFile, &["dp.package.format"]).await;
}

#[actix_web::test]
async fn a_package_with_another_certificate_fails() {
    only(Fault::WrongCertificate, &["dp.package.signature"]).await;
}

#[actix_web::test]
async fn signing_with_an_untrusted_key_fails() {
    only(Fault::UntrustedSigner, &["dp.package.certificate"]).await;
}

#[actix_web::test]
async fn signing_with_an_expired_certificate_fails() {
    only(Fault::ExpiredSigner, &["dp.package.certificate"]).await;
}

#[actix_web::test]
async fn keeping_an_answer_past_exp_fails() {
    only(Fault::CacheIgnoresExp, &["dp.token.expired"]).await;
}

#[actix_web::test]
async fn keeping_a_revoked_token_fails() {
    only(Fault::CacheForever, &["dp.token.revoked"]).await;
}

#[actix_web::test]
async fn a_429_without_retry_after_fails() {
    only(Fault::NoRetryAfter, &["dp.slow.retry_after"]).await;
}

#[actix_web::test]
async fn starting_over_on_a_repeated_transaction_uid_fails() {
    only(Fault::RestartOnRepeat, &["dp.slow.retry_after"]).await;
}

#[actix_web::test]
async fn userinfo_without_a_bearer_header_fails() {
    only(Fault::UserinfoTokenInQuery, &["dp.userinfo.bearer"]).await;
}

#[actix_web::test]
async fn no_dp_fails_every_check_without_hanging_and_a_busy_port_is_a_setup_failure() {
    let platform = format!("http://{}", free_addr());
    let dead = format!("http://{}", free_addr());
    let mut p = Profile::sandbox(&platform, &dead);
    p.cache_secs = 1;
    p.slow_max_secs = 2;
    let report = run(&p).await;
    // Nothing answers: every check fails but the two with nothing to judge (no userinfo
    // request, no template).
    assert_eq!(report.failures(), CHECKS.len() - 2, "{}", report.summary());

    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut p = Profile::sandbox(&format!("http://{}", busy.local_addr().unwrap()), &dead);
    p.cache_secs = 1;
    let report = run(&p).await;
    assert_eq!(failed(&report), ["dp.setup"], "{}", report.summary());
}
