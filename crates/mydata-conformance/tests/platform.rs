//! The platform suite against the reference server (in process, over 127.0.0.1): every check
//! passes; and through mutating reverse proxies that break one rule at a time, exactly the
//! check of that rule fails. The table "Mutation tests" of spec `conformance-platform.md` maps
//! every check to its test here.
//!
//! A mutated world has three proxies, all sharing one [`Shared`] state: between the suite and
//! the platform ([`Side::Platform`]: the browser, the MyData-API, the clock hook and the DP role's
//! introspection), between the platform and the suite's DP role ([`Side::Dp`], the platform's
//! `sandbox_dp_url`), and between the platform and the suite's SP role ([`Side::Sp`], the
//! registered `sp_api_url`s; the `return_url`s stay the SP role's). Together they model a
//! platform with one bug; a proxy that does not apply its mutation is transparent.

use std::collections::{HashMap, HashSet};
use std::io::{Cursor, Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use mydata_conformance::platform::profile::Sp;
use mydata_conformance::platform::{CHECKS, Profile, run};
use mydata_conformance::report::{Outcome, Report};
use mydata_protocol::codes::DatasetCode;
use mydata_protocol::ids::{ResourceId, SecretKey};
use mydata_protocol::jwe::{self, ContentIv};
use mydata_protocol::package::manifest;
use mydata_protocol::package::sp::{self as sp_package, PackagingMode};
use mydata_server::clock::OffsetClock;
use mydata_server::config::Config;
use mydata_server::http::{Spawned, spawn_with};
use mydata_server::platform::Platform;
use mydata_server::secrets::MasterKey;
use mydata_server::storage::Store;
use mydata_server::storage::sqlite::SqliteStore;
use mydata_sp::receiver::{ReceivedContent, receive};

/// A free port's URL, and the listener that keeps it: dropped only just before the suite listens
/// there ([`World::release`]), so that no other test's socket takes the port meanwhile.
fn free_url() -> (String, TcpListener) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    (format!("http://{}", l.local_addr().unwrap()), l)
}

/// The datasets of the sandbox profile (`Profile::sandbox`).
const INSTANT: &str = "API.AFZDMRDWVI";
const FAILING: &str = "API.ZYUUKSXD2V";
const TAMPERED: &str = "API.WPL4BS6IZW";

/// The one `transaction_uid` of [`Mutation::DpOneUid`] (a lowercase UUID v4).
const ONE_UID: &str = "0f8fad5b-d9cb-469f-a165-70867728950e";

struct World {
    srv: Spawned,
    /// Where the suite finds the platform (the platform-side proxy in a mutated world).
    platform_url: String,
    dp_url: String,
    sp_url: String,
    /// The ports of `dp_url` and `sp_url`, held until [`World::release`].
    reserved: Vec<TcpListener>,
    _dir: tempfile::TempDir,
}

impl World {
    /// Frees the ports of `dp_url` and `sp_url` for the suite.
    fn release(&mut self) {
        self.reserved.clear();
    }
}

/// The reference server in sandbox mode with the clock hook; the sandbox DP and SPs are left to
/// the suite, on free ports.
fn world() -> World {
    world_via(Mutation::None)
}

/// [`world`]; unless `mutation` is `None`, with the three proxies of `mutation` (module doc).
fn world_via(mutation: Mutation) -> World {
    let dir = tempfile::tempdir().unwrap();
    let ((dp_url, dp_port), (sp_url, sp_port)) = (free_url(), free_url());
    let shared = (mutation != Mutation::None).then(|| {
        let sps = Profile::sandbox("http://127.0.0.1:1", &dp_url, &sp_url)
            .parsed_sps()
            .unwrap();
        Arc::new(Shared {
            mutation,
            sps,
            sp_url: sp_url.clone(),
            seen: Mutex::new(Seen::default()),
        })
    });
    let platform_dp_url = match &shared {
        Some(sh) => proxy(&dp_url, Side::Dp, sh.clone()),
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
        store.clone(),
        MasterKey::generate().unwrap(),
        Arc::new(clock.clone()),
        config,
    )
    .unwrap();
    p.load_sandbox().unwrap();
    if let Some(sh) = &shared {
        // The platform calls the SP-APIs through the SP-side proxy; the browser still returns
        // to the SP role.
        let sp_proxy = proxy(&sp_url, Side::Sp, sh.clone());
        for sp in store.list_sps().unwrap() {
            if let Some(path) = sp.sp_api_url.strip_prefix(sp_url.as_str()) {
                let mut sp = sp.clone();
                sp.sp_api_url = format!("{sp_proxy}{path}");
                store.update_sp(&sp).unwrap();
            }
        }
    }
    let srv = spawn_with(Arc::new(p), Some(clock)).unwrap();
    let platform_url = match &shared {
        Some(sh) => proxy(&srv.url, Side::Platform, sh.clone()),
        None => srv.url.clone(),
    };
    World {
        srv,
        platform_url,
        dp_url,
        sp_url,
        reserved: vec![dp_port, sp_port],
        _dir: dir,
    }
}

/// One broken rule: what a platform with one bug would do differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mutation {
    None,
    /// Redirect returns: `code=FROM` becomes `code=TO`.
    ReturnCode(&'static str, &'static str),
    /// Only the first redirect return with `code=FROM`: it becomes `code=TO` (the main
    /// transaction's return after consent is the suite's first `code=200`).
    FirstReturnCode(&'static str, &'static str),
    /// `/service/data` answers: status FROM becomes TO.
    DataStatus(u16, u16),
    /// `/service/data` before the clock hook was used: 403 becomes this status (the unknown
    /// ticket's; the retention check's 403 comes after the clock hook).
    UnknownTicketStatus(u16),
    /// 429 without `Retry-After`.
    StripRetryAfter,
    /// The `Retry-After` of every `/service/data` 429 is this value.
    DataRetryAfter(&'static str),
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
    /// The SP-API calls never reach the SP; the platform sees 200 (a platform that does not
    /// make the call, yet returns the citizen with code 200).
    SpApiSwallowed,
    /// The SP-API calls carry another service's `apiKey`.
    SpApiWrongKey,
    /// One second after a refusal's return (code 205), the SP-API is called for the refused
    /// transaction (with `unable_to_deliver`), as by a platform that queues the call and does
    /// not cancel it.
    SpApiAfterRefusal,
    /// The main SP package ships the instant dataset's DP package with one byte of its first
    /// data file changed, as by a platform that re-encodes the DP packages it stores.
    PackageDpAltered,
    /// The main SP package gives the failing dataset (DP 500) this code instead of 504.
    PackageFailedCode(u16),
    /// The main SP package ships the tampered dataset's DP package, as received, with code
    /// 200: a platform that does not verify DP packages.
    PackageTamperedShipped,
    /// Between the platform and the DP: `transaction_uid` sent in upper case.
    DpUpperUid,
    /// Every DP call series has the same `transaction_uid` ([`ONE_UID`]): in the DP calls, and
    /// in the platform's introspection answers (which the DP checks the call against).
    DpOneUid,
    /// Between the platform and the DP: a 429's `Retry-After` shortened to 1 s, so the
    /// platform calls again before the DP asked.
    DpShortRetryAfter,
}

impl Mutation {
    /// Whether the mutation rewrites the main transaction's SP package.
    fn on_package(self) -> bool {
        matches!(
            self,
            Mutation::PackageDpAltered
                | Mutation::PackageFailedCode(_)
                | Mutation::PackageTamperedShipped
        )
    }
}

/// Where a proxy sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    /// Suite → platform.
    Platform,
    /// Platform → the suite's DP role.
    Dp,
    /// Platform → the suite's SP role (SP-API calls).
    Sp,
}

#[derive(Default)]
struct Seen {
    jwes: usize,
    last_200: Option<(String, web::Bytes)>,
    clock_moved: bool,
    tickets: HashSet<String>,
    /// How many returns [`Mutation::FirstReturnCode`] matched.
    returns: usize,
    /// `secret_key` and SP (index in the profile) of every ticket delivered by an SP-API call.
    keys: HashMap<String, (usize, SecretKey)>,
    /// The DP's 200 body for the tampered dataset.
    tampered_dp: Option<Vec<u8>>,
}

/// What the three proxies of a mutated world share.
struct Shared {
    mutation: Mutation,
    /// The profile's SPs (for the SP-API body and the JWE, as the platform would have them).
    sps: Vec<Sp>,
    /// The suite's SP role.
    sp_url: String,
    seen: Mutex<Seen>,
}

impl Shared {
    /// Records the ticket and `secret_key` of an SP-API body.
    fn learn(&self, body: &[u8]) {
        for (i, sp) in self.sps.iter().enumerate() {
            let Ok(got) = receive(body, sp.raw.api_key.as_deref(), &sp.config.cipher()) else {
                continue;
            };
            if let ReceivedContent::SecretKey(k) = got.content {
                let t = got.permission_ticket.as_str().to_string();
                self.seen.lock().unwrap().keys.insert(t, (i, k));
            }
        }
    }

    /// The MyData-API 200 body `jwe` for `ticket`, with its SP package rewritten per the
    /// mutation when it is the main SP's (packaging mode B).
    fn rewrite_jwe(&self, ticket: &str, jwe_body: &[u8]) -> Option<Vec<u8>> {
        let (i, key) = self.seen.lock().unwrap().keys.get(ticket).cloned()?;
        let sp = &self.sps[i];
        if sp.packaging != PackagingMode::B {
            return None;
        }
        let text = std::str::from_utf8(jwe_body).ok()?;
        let zip = jwe::decrypt_package(text.trim(), &key, sp.jwe, Some(&sp.config.client_id))
            .unwrap()
            .zip;
        let mut lines = read_package(&zip);
        for l in &mut lines {
            match self.mutation {
                Mutation::PackageDpAltered if l.id == INSTANT => {
                    let pkg = l.file.as_deref().expect("the instant dataset ships");
                    l.file = Some(alter_first_data_file(pkg));
                }
                Mutation::PackageFailedCode(code) if l.id == FAILING => l.code = code,
                Mutation::PackageTamperedShipped if l.id == TAMPERED => {
                    let dp = self.seen.lock().unwrap().tampered_dp.clone();
                    l.file = Some(dp.expect("the DP answered the tampered dataset"));
                    l.code = 200;
                }
                _ => {}
            }
        }
        let zip = write_package(lines);
        let iv = ContentIv::SpCbcIv(&sp.config.cbc_iv);
        let out = jwe::encrypt_package(&sp.config.client_id, &zip, &key, sp.jwe, iv).unwrap();
        Some(out.into_bytes())
    }

    /// For [`Mutation::SpApiAfterRefusal`]: the SP-API call, one second after the refusal's
    /// return `location`.
    fn call_after_refusal(&self, location: &str) {
        let sp = &self.sps[0];
        let Some(query) = location
            .strip_prefix(sp.raw.return_url.as_str())
            .and_then(|q| q.strip_prefix('?'))
        else {
            return;
        };
        let Some(tx_id) = sp.config.read_return(query).ok().and_then(|r| r.tx_id) else {
            return;
        };
        let body = serde_json::json!({
            "tx_id": tx_id.as_str(),
            "apiKey": sp.raw.api_key,
            "permission_ticket": "6b1f0e52-2c1d-4f7a-9a57-0f3c1d2e8b44",
            "unable_to_deliver": [INSTANT],
        });
        let url = format!("{}/sp-api", self.sp_url);
        actix_web::rt::spawn(async move {
            actix_web::rt::time::sleep(Duration::from_secs(1)).await;
            let _ = awc::Client::default().post(url).send_json(&body).await;
        });
    }
}

/// One dataset of an SP package.
struct Line {
    id: String,
    name: String,
    code: u16,
    file: Option<Vec<u8>>,
}

fn read_package(zip: &[u8]) -> Vec<Line> {
    let mut z = zip::ZipArchive::new(Cursor::new(zip)).unwrap();
    let mut read = |name: &str| {
        let mut v = Vec::new();
        z.by_name(name).unwrap().read_to_end(&mut v).unwrap();
        v
    };
    let entries = manifest::parse_sp(&read("META-INFO/manifest.xml")).unwrap();
    entries
        .into_iter()
        .map(|e| Line {
            file: (!e.filename.is_empty()).then(|| read(&e.filename)),
            id: e.resource_id,
            name: e.resource_name,
            code: e.code,
        })
        .collect()
}

/// A mode B SP package of `lines`, written as the platform writes one.
fn write_package(lines: Vec<Line>) -> Vec<u8> {
    let mut files: Vec<Option<Cursor<Vec<u8>>>> = lines
        .iter()
        .map(|l| l.file.clone().map(Cursor::new))
        .collect();
    let datasets = lines
        .iter()
        .zip(files.iter_mut())
        .map(|(l, f)| sp_package::Dataset {
            resource_id: l.id.parse::<ResourceId>().unwrap(),
            resource_name: l.name.clone(),
            outcome: match f {
                Some(r) => sp_package::Outcome::Package(r),
                None if l.code == 204 => sp_package::Outcome::NoData,
                None => sp_package::Outcome::Failed(DatasetCode::from_wire(l.code).unwrap()),
            },
        })
        .collect();
    let (out, _) = sp_package::build(Cursor::new(Vec::new()), PackagingMode::B, datasets).unwrap();
    out.into_inner()
}

/// A copy of DP package `pkg` with the first byte of its first data file changed (manifest,
/// signature and certificate unchanged): its digest no longer matches.
fn alter_first_data_file(pkg: &[u8]) -> Vec<u8> {
    let mut input = zip::ZipArchive::new(Cursor::new(pkg)).unwrap();
    let mut out = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    let mut altered = false;
    for i in 0..input.len() {
        let mut f = input.by_index(i).unwrap();
        let name = f.name().unwrap().into_owned();
        let mut bytes = Vec::new();
        f.read_to_end(&mut bytes).unwrap();
        if !altered && !name.starts_with("META-INFO") && !f.is_dir() {
            bytes[0] ^= 0x01;
            altered = true;
        }
        out.start_file(name, opts).unwrap();
        out.write_all(&bytes).unwrap();
    }
    assert!(altered, "the DP package has a data file");
    out.finish().unwrap().into_inner()
}

struct Proxy {
    upstream: String,
    side: Side,
    shared: Arc<Shared>,
}

/// `transaction_uid=…` of `pq` replaced by `f(old)`.
fn rewrite_uid(pq: &mut String, f: impl Fn(&str) -> String) {
    if let Some(i) = pq.find("transaction_uid=") {
        let start = i + "transaction_uid=".len();
        let end = pq[start..].find('&').map_or(pq.len(), |k| start + k);
        let new = f(&pq[start..end]);
        pq.replace_range(start..end, &new);
    }
}

async fn forward(px: web::Data<Proxy>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let sh = &px.shared;
    let mutation = sh.mutation;
    let (on_platform, on_dp, on_sp) = (
        px.side == Side::Platform,
        px.side == Side::Dp,
        px.side == Side::Sp,
    );
    let mut body = body;
    if on_sp && req.method() == actix_web::http::Method::POST {
        sh.learn(&body);
        match mutation {
            Mutation::SpApiSwallowed => return HttpResponse::Ok().finish(),
            Mutation::SpApiWrongKey => {
                let mut v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                v["apiKey"] = "SandboxApiKeyOfAnotherService000".into();
                body = web::Bytes::from(serde_json::to_vec(&v).unwrap());
            }
            _ => {}
        }
    }
    let peer = req
        .peer_addr()
        .map_or(IpAddr::V4(Ipv4Addr::LOCALHOST), |a| a.ip());
    let local = if on_platform && mutation == Mutation::IgnoreSource {
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
    match mutation {
        Mutation::DpUpperUid if on_dp => rewrite_uid(&mut pq, str::to_ascii_uppercase),
        Mutation::DpOneUid if on_dp => rewrite_uid(&mut pq, |_| ONE_UID.to_string()),
        _ => {}
    }
    let mut up = client.request(req.method().clone(), format!("{}{pq}", px.upstream));
    for (k, v) in req.headers() {
        if !matches!(k.as_str(), "host" | "content-length" | "connection") {
            up = up.append_header((k.clone(), v.clone()));
        }
    }
    // The upstream may be gone: the suite's roles stop at the end of a run while the platform
    // may still be calling them.
    let Ok(mut r) = up.send_body(body).await else {
        return HttpResponse::BadGateway().finish();
    };
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
    let Ok(mut bytes) = r.body().limit(64 << 20).await else {
        return HttpResponse::BadGateway().finish();
    };
    let path = req.path();
    let data = on_platform && path == "/service/data";
    let ticket = req
        .headers()
        .get("permission_ticket")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if on_dp && status == 200 && path == format!("/dp/{TAMPERED}") {
        sh.seen.lock().unwrap().tampered_dp = Some(bytes.to_vec());
    }
    if data
        && status == 200
        && mutation.on_package()
        && let Some(t) = &ticket
        && let Some(b) = sh.rewrite_jwe(t, &bytes)
    {
        bytes = web::Bytes::from(b);
    }
    let mut seen = sh.seen.lock().unwrap();
    if on_platform && path.starts_with("/sandbox/clock") {
        seen.clock_moved = true;
    }
    let first_poll = data
        && ticket
            .as_ref()
            .is_some_and(|t| seen.tickets.insert(t.to_string()));
    let location = headers
        .iter()
        .find(|(k, _)| k == "location")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    match mutation {
        Mutation::ReturnCode(from, to) if on_platform && !data => {
            for (k, v) in headers.iter_mut() {
                if k == "location" {
                    *v = v.replace(&format!("code={from}"), &format!("code={to}"));
                }
            }
        }
        Mutation::FirstReturnCode(from, to)
            if on_platform && location.contains(&format!("code={from}")) =>
        {
            seen.returns += 1;
            if seen.returns == 1 {
                for (k, v) in headers.iter_mut() {
                    if k == "location" {
                        *v = v.replace(&format!("code={from}"), &format!("code={to}"));
                    }
                }
            }
        }
        Mutation::SpApiAfterRefusal if on_platform && location.contains("code=205") => {
            sh.call_after_refusal(&location);
        }
        Mutation::DataStatus(from, to) if data && status == from => status = to,
        Mutation::UnknownTicketStatus(to) if data && status == 403 && !seen.clock_moved => {
            status = to;
        }
        Mutation::FirstPoll403 if first_poll && status == 429 => status = 403,
        Mutation::StripRetryAfter if data && status == 429 => {
            headers.retain(|(k, _)| k != "retry-after");
        }
        Mutation::DataRetryAfter(value) if data && status == 429 => {
            for (k, v) in headers.iter_mut() {
                if k == "retry-after" {
                    *v = value.into();
                }
            }
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
        Mutation::DpOneUid if on_platform && path == "/connect/introspect" && status == 200 => {
            let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            if v.get("transaction_uid").is_some() {
                v["transaction_uid"] = ONE_UID.into();
                bytes = web::Bytes::from(serde_json::to_vec(&v).unwrap());
            }
        }
        Mutation::DpShortRetryAfter if on_dp && status == 429 => {
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

/// A reverse proxy to `upstream` on 127.0.0.1, applying the shared mutation on its side.
fn proxy(upstream: &str, side: Side, shared: Arc<Shared>) -> String {
    let px = web::Data::new(Proxy {
        upstream: upstream.to_string(),
        side,
        shared,
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
    let mut w = world_via(mutation);
    let p = Profile::sandbox(&w.platform_url, &w.dp_url, &w.sp_url);
    w.release();
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
    let mut w = world();
    let mut p = Profile::sandbox(&w.srv.url, &w.dp_url, &w.sp_url);
    p.clock_hook = None;
    w.release();
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
    // 404 for a ticket the platform never issued; the expired ticket of the retention check
    // (after the clock hook) is still 403.
    only(
        Mutation::UnknownTicketStatus(404),
        &["platform.data.unknown_ticket_403"],
    )
    .await;
}

#[actix_web::test]
async fn not_ready_without_retry_after() {
    // Every 429 loses its Retry-After, the one during the SP-API call too: both checks that
    // read a 429's Retry-After fail (not_ready_polled_too_often isolates not_ready_429).
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
async fn not_ready_polled_too_often() {
    // Retry-After: 1 is an integer (ticket_live_during_sp_api passes) but below 5.
    only(
        Mutation::DataRetryAfter("1"),
        &["platform.data.not_ready_429"],
    )
    .await;
}

#[actix_web::test]
async fn the_sp_api_not_called() {
    only(Mutation::SpApiSwallowed, &["platform.sp_api.call"]).await;
}

#[actix_web::test]
async fn the_sp_api_called_with_another_api_key() {
    only(Mutation::SpApiWrongKey, &["platform.sp_api.call"]).await;
}

#[actix_web::test]
async fn the_sp_api_called_after_a_refusal() {
    // The call comes a second after the return, within the quiet window (3 s by default).
    let r = suite(Mutation::SpApiAfterRefusal).await;
    assert_eq!(failed(&r), ["platform.flow.refusal_205"], "{}", r.summary());
    let Outcome::Fail(why) = &r.get("platform.flow.refusal_205").unwrap().outcome else {
        unreachable!()
    };
    assert!(why.contains("after the return"), "{why}");
}

#[actix_web::test]
async fn success_not_200() {
    // The main transaction's return (the suite's first code=200) says 410, as if its SP-API
    // call had failed; the later transactions return 200.
    only(
        Mutation::FirstReturnCode("200", "410"),
        &["platform.return.success_200"],
    )
    .await;
}

#[actix_web::test]
async fn a_dp_package_altered_in_the_sp_package() {
    only(Mutation::PackageDpAltered, &["platform.package.verifies"]).await;
}

#[actix_web::test]
async fn a_failed_dataset_not_504() {
    only(
        Mutation::PackageFailedCode(500),
        &["platform.package.failed_dataset"],
    )
    .await;
}

#[actix_web::test]
async fn a_tampered_dp_package_passed_on() {
    only(
        Mutation::PackageTamperedShipped,
        &["platform.package.tampered_not_verified"],
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
async fn dp_calls_with_one_transaction_uid_for_every_series() {
    only(
        Mutation::DpOneUid,
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

/// The table "Mutation tests" of spec conformance-platform.md names, for every check, a test of
/// this file that runs `only` or `suite` (a mutation), and names no test that does not exist.
#[test]
fn every_check_has_a_mutation_test() {
    let spec = include_str!("../../../spec/conformance-platform.md");
    let this = include_str!("platform.rs");
    let table = spec
        .split("## Mutation tests")
        .nth(1)
        .expect("spec: section Mutation tests")
        .split("\n## ")
        .next()
        .unwrap();
    let mut covered = HashSet::new();
    for row in table.lines().filter(|l| l.starts_with("| `platform.")) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let id = cells[1].trim_matches('`');
        let test = cells[2].trim_matches('`');
        let at = this
            .find(&format!("async fn {test}()"))
            .unwrap_or_else(|| panic!("spec names test {test} for {id}: no such test"));
        let body = &this[at..];
        let body = &body[..body.find("\n}\n").unwrap()];
        assert!(
            body.contains("only(") || body.contains("suite("),
            "{test} runs no mutation"
        );
        assert!(body.contains(id), "{test} does not name {id}");
        covered.insert(id.to_string());
    }
    for (id, _) in CHECKS {
        assert!(
            covered.contains(*id),
            "{id} has no mutation test in the spec table"
        );
    }
}
