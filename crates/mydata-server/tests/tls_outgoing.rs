//! The platform's outgoing calls over HTTPS (issue 15 items 1, 2 and 4; spec §1, D22, D49), with
//! real TLS on 127.0.0.1 and the sandbox TLS PKI of `fixtures/pki/tls`:
//!
//! - the online flow with the SP-API and the DP-API on HTTPS, then with mutual TLS required by
//!   both (the platform's `platform-client` certificate, pinned by its SHA-256);
//! - each failure fails closed with its documented code and ends the transaction cleanly:
//!   410 toward the SP-API, 504 for a DP's dataset (after one call, never retried): an untrusted
//!   CA, an expired certificate, another host's certificate, a server offering only TLS 1.1, a
//!   missing or wrong client certificate, plain `http://` to a production registration;
//! - a registration's pinned CA replaces the configured trust;
//! - interop: a Python `ssl` server (code we did not write) receives the SP-API call.

mod common;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::dev::ServerHandle;
use actix_web::{App, HttpResponse, HttpServer, web};
use mydata_protocol::codes::ReturnCode;
use mydata_protocol::package::dp::{BuildOptions, DpSigner};
use mydata_protocol::package::sp::PackagingMode;
use mydata_protocol::tls::acceptor::{self, ClientCerts, ServerTls, fingerprint};
use mydata_protocol::tls::pin::acceptor_requiring_client;
use mydata_server::clock::SystemClock;
use mydata_server::config::Config;
use mydata_server::engine::{self, DatasetResult, state};
use mydata_server::platform::{NewDp, NewSp, Platform};
use mydata_server::secrets::MasterKey;
use mydata_server::storage::{DpMethod, TxRecord};
use openssl::ssl::SslAcceptorBuilder;
use openssl::x509::X509;
use serde_json::{Value, json};

use common::World;

const DP_KEY: &[u8] = include_bytes!("../../../fixtures/pki/dp-moi.key");
const DP_CERT: &[u8] = include_bytes!("../../../fixtures/pki/dp-moi.pem");

fn tls_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/pki/tls")
        .join(name)
}

fn tls(name: &str) -> Vec<u8> {
    std::fs::read(tls_path(name)).unwrap()
}

fn tls_text(name: &str) -> String {
    String::from_utf8(tls(name)).unwrap()
}

/// The SHA-256 pin of the platform's client certificate.
fn platform_pin() -> String {
    fingerprint(&X509::from_pem(&tls("platform-client.pem")).unwrap())
}

/// A DP package signed with the sandbox DP key (trusted in the sandbox).
fn package() -> Vec<u8> {
    let signer = DpSigner::from_pem(DP_KEY, DP_CERT).unwrap();
    mydata_dp::build_package(
        &signer,
        &[mydata_dp::DataFile::new(
            "data.json",
            br#"{"note":"over HTTPS"}"#.to_vec(),
        )],
        BuildOptions::default(),
    )
    .unwrap()
}

/// Whether a test peer requires a client certificate.
#[derive(Clone)]
enum ClientAuth {
    /// Asks for none.
    None,
    /// Requires one chaining to the sandbox TLS root with one of these pins.
    Pinned(Vec<String>),
}

fn acceptor_for(server: &str, auth: &ClientAuth) -> SslAcceptorBuilder {
    let cert = tls(&format!("{server}.pem"));
    let key = tls(&format!("{server}.key"));
    match auth {
        ClientAuth::None => acceptor::acceptor(&ServerTls {
            cert_chain_pem: &cert,
            key_pem: &key,
            client_ca_pem: None,
            client_certs: ClientCerts::None,
        })
        .unwrap(),
        ClientAuth::Pinned(pins) => {
            acceptor_requiring_client(&cert, &key, &tls("tls-root-ca.pem"), pins.clone()).unwrap()
        }
    }
}

/// An HTTPS test peer: `POST /sp-api` answers 200 and records the body, `GET /dp` answers the
/// package and records the request.
struct Peer {
    base: String,
    seen: Arc<Mutex<Vec<String>>>,
    _handle: ServerHandle,
}

impl Peer {
    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

async fn sp_api(seen: web::Data<Arc<Mutex<Vec<String>>>>, body: web::Bytes) -> HttpResponse {
    seen.lock()
        .unwrap()
        .push(String::from_utf8_lossy(&body).into_owned());
    HttpResponse::Ok().finish()
}

async fn dp(
    seen: web::Data<Arc<Mutex<Vec<String>>>>,
    pkg: web::Data<web::Bytes>,
    req: actix_web::HttpRequest,
) -> HttpResponse {
    seen.lock().unwrap().push(req.uri().to_string());
    HttpResponse::Ok()
        .content_type("application/zip")
        .body(pkg.get_ref().clone())
}

/// Starts an HTTPS peer on 127.0.0.1 serving the fixture certificate `server`.
fn start_peer(server: &str, auth: ClientAuth) -> Peer {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let pkg = web::Bytes::from(package());
    let srv = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(s2.clone()))
            .app_data(web::Data::new(pkg.clone()))
            .route("/sp-api", web::post().to(sp_api))
            .route("/dp", web::get().to(dp))
    })
    .workers(1)
    .bind_openssl("127.0.0.1:0", acceptor_for(server, &auth))
    .unwrap();
    let addr = srv.addrs()[0];
    let srv = srv.run();
    let handle = srv.handle();
    actix_web::rt::spawn(srv);
    Peer {
        base: format!("https://127.0.0.1:{}", addr.port()),
        seen,
        _handle: handle,
    }
}

/// A sandbox platform trusting the sandbox TLS root for outgoing calls, presenting the fixture
/// client certificate `client` when given.
async fn world(client: Option<&str>) -> World {
    let client = client.map(str::to_string);
    common::world_custom(&[], None, move |c: &mut Config| {
        c.tls_ca_file = Some(tls_path("tls-root-ca.pem"));
        if let Some(name) = client {
            c.tls_client_cert = Some(tls_path(&format!("{name}.pem")));
            c.tls_client_key = Some(tls_path(&format!("{name}.key")));
        }
        c.dp_transport_retry_secs = 1;
    })
    .await
}

fn register_dp(p: &Platform, rid: &str, endpoint: &str, tls_ca: Option<String>) {
    p.register_dp(NewDp {
        tls_ca,
        resource_id: Some(rid.parse().unwrap()),
        name: "HTTPS DP".into(),
        provider: "測試".into(),
        scopes: vec!["test.https".into()],
        secret: None,
        endpoint: endpoint.into(),
        method: DpMethod::Get,
        claims: Vec::new(),
        identity_methods: vec!["PII".into()],
        template: None,
    })
    .unwrap();
}

fn register_sp(p: &Platform, rid: &str, sp_api_url: &str, tls_ca: Option<String>) -> String {
    p.register_sp(NewSp {
        tls_ca,
        name: "HTTPS SP".into(),
        purpose: "測試".into(),
        return_url: common::RETURN.into(),
        sp_api_url: sp_api_url.into(),
        allowed_ips: vec!["127.0.0.1".parse().unwrap()],
        resources: vec![rid.parse().unwrap()],
        packaging_mode: PackagingMode::B,
        ..NewSp::default()
    })
    .unwrap()
    .0
    .client_id
}

async fn consent(p: &Arc<Platform>, id: &str, client_id: &str, rid: &str) -> ReturnCode {
    let t = common::authenticated_tx(p, id, client_id, &format!("tx-{id}"), &[rid]);
    engine::consent(p.clone(), t, common::citizen_claims(p))
        .await
        .unwrap()
}

/// Waits until transaction `id` is no longer fetching (bounded: a failure, not a timing).
async fn settled(p: &Platform, id: &str) -> (TxRecord, Vec<DatasetResult>) {
    let start = Instant::now();
    loop {
        let t = p.store.get_tx(id).unwrap().unwrap();
        if t.state != state::FETCHING {
            let d = serde_json::from_str(&t.datasets).unwrap();
            return (t, d);
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "transaction {id} still fetching"
        );
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The transaction ended with 410 before any ticket worked (D22): ended, code 410, no ticket.
fn ended_with_410(p: &Platform, id: &str) {
    let t = p.store.get_tx(id).unwrap().unwrap();
    assert_eq!(t.state, state::ENDED, "{id}");
    assert_eq!(t.code, Some(410), "{id}");
    assert!(t.ticket_hash.is_none(), "{id}: the ticket was withdrawn");
    assert!(
        t.secret_key_sealed.is_none() && t.citizen_sealed.is_none(),
        "{id}"
    );
}

/// One flow with the SP-API at `sp` and the DP at `dp` over HTTPS: consent's code, then the
/// dataset's code and call count once settled (`None` when consent failed).
async fn flow(
    w: &World,
    n: usize,
    sp: &Peer,
    dp: &Peer,
    tls_ca: Option<String>,
) -> (ReturnCode, Option<(Option<u16>, u32)>) {
    let rid = format!("API.HTTPSDP{n:03}");
    register_dp(&w.p, &rid, &format!("{}/dp", dp.base), tls_ca.clone());
    let client_id = register_sp(&w.p, &rid, &format!("{}/sp-api", sp.base), tls_ca);
    let id = format!("t-{n}");
    let code = consent(&w.p, &id, &client_id, &rid).await;
    if code != ReturnCode::Success {
        ended_with_410(&w.p, &id);
        return (code, None);
    }
    let (_, d) = settled(&w.p, &id).await;
    (code, Some((d[0].code, d[0].calls)))
}

/// The MyData-API answer for the ticket of the last SP-API body `sp` received.
async fn poll_last(w: &World, sp: &Peer) -> u16 {
    let body: Value = serde_json::from_str(sp.seen().last().unwrap()).unwrap();
    let ticket = body["permission_ticket"].as_str().unwrap();
    let tx_id = body["tx_id"].as_str().unwrap();
    common::poll_until_ready(&w.srv.url, ticket, tx_id).await.0
}

#[actix_web::test]
async fn the_online_flow_runs_with_the_sp_api_and_the_dp_api_on_https() {
    let w = world(None).await;
    let sp = start_peer("example-sp", ClientAuth::None);
    let dp = start_peer("sandbox-dp", ClientAuth::None);
    let (code, dataset) = flow(&w, 1, &sp, &dp, None).await;
    assert_eq!(code, ReturnCode::Success);
    assert_eq!(dataset, Some((Some(200), 1)));
    assert_eq!(sp.seen().len(), 1);
    assert_eq!(dp.seen().len(), 1);
    assert!(dp.seen()[0].contains("transaction_uid="), "{:?}", dp.seen());
    assert_eq!(poll_last(&w, &sp).await, 200);
    // A second transaction reuses the thread's client (one per trust configuration).
    let (code, dataset) = flow(&w, 2, &sp, &dp, None).await;
    assert_eq!((code, dataset), (ReturnCode::Success, Some((Some(200), 1))));
}

#[actix_web::test]
async fn mutual_tls_required_by_the_sp_and_the_dp() {
    let w = world(Some("platform-client")).await;
    let sp = start_peer("example-sp", ClientAuth::Pinned(vec![platform_pin()]));
    let dp = start_peer("sandbox-dp", ClientAuth::Pinned(vec![platform_pin()]));
    let (code, dataset) = flow(&w, 1, &sp, &dp, None).await;
    assert_eq!(code, ReturnCode::Success);
    assert_eq!(dataset, Some((Some(200), 1)));
    assert_eq!(poll_last(&w, &sp).await, 200);
}

#[actix_web::test]
async fn a_missing_or_wrong_client_certificate_fails_closed() {
    let good_sp = start_peer("example-sp", ClientAuth::None);
    let strict_sp = start_peer("example-sp", ClientAuth::Pinned(vec![platform_pin()]));
    let strict_dp = start_peer("sandbox-dp", ClientAuth::Pinned(vec![platform_pin()]));
    // No certificate; one of the right CA but not the pinned one; an untrusted one; an expired
    // one.
    for client in [
        None,
        Some("sp-client"),
        Some("untrusted-client"),
        Some("expired-client"),
    ] {
        let w = world(client).await;
        let (code, _) = flow(&w, 1, &strict_sp, &strict_dp, None).await;
        assert_eq!(code, ReturnCode::SpApiFailed, "{client:?}");
        // The SP answered nothing: it never saw a body.
        assert!(strict_sp.seen().is_empty(), "{client:?}");
        // Toward the DP: the dataset ends with 504 and the DP served nothing. (With TLS 1.3 the
        // DP's refusal comes after the client's side of the handshake: it may first show as a
        // reset, a transport error called again, before the alert is read.)
        let (code, dataset) = flow(&w, 2, &good_sp, &strict_dp, None).await;
        assert_eq!(code, ReturnCode::Success, "{client:?}");
        assert_eq!(dataset.map(|d| d.0), Some(Some(504)), "{client:?}");
        assert!(strict_dp.seen().is_empty(), "{client:?}");
    }
}

#[actix_web::test]
async fn server_certificates_that_do_not_verify_fail_closed() {
    let w = world(None).await;
    let good_sp = start_peer("example-sp", ClientAuth::None);
    let good_dp = start_peer("sandbox-dp", ClientAuth::None);
    for (n, server) in ["untrusted-server", "expired-server", "wrong-host"]
        .into_iter()
        .enumerate()
    {
        let bad = start_peer(server, ClientAuth::None);
        let (code, _) = flow(&w, 10 + n, &bad, &good_dp, None).await;
        assert_eq!(code, ReturnCode::SpApiFailed, "{server}");
        assert!(bad.seen().is_empty(), "{server}");
        let (code, dataset) = flow(&w, 20 + n, &good_sp, &bad, None).await;
        assert_eq!(code, ReturnCode::Success, "{server}");
        assert_eq!(dataset, Some((Some(504), 1)), "{server}");
        assert!(bad.seen().is_empty(), "{server}");
    }
}

#[actix_web::test]
async fn a_registrations_pinned_ca_replaces_the_configured_trust() {
    // The platform trusts the system roots only: the sandbox root is pinned by the
    // registrations themselves.
    let w = common::world_custom(&[], None, |_| {}).await;
    let sp = start_peer("example-sp", ClientAuth::None);
    let dp = start_peer("sandbox-dp", ClientAuth::None);
    let (code, _) = flow(&w, 1, &sp, &dp, None).await;
    assert_eq!(code, ReturnCode::SpApiFailed, "not trusted without the pin");
    let (code, dataset) = flow(&w, 2, &sp, &dp, Some(tls_text("tls-root-ca.pem"))).await;
    assert_eq!((code, dataset), (ReturnCode::Success, Some((Some(200), 1))));
    // Pinning another CA refuses the same certificates, even where the platform trusts them.
    let w = world(None).await;
    let (code, _) = flow(&w, 3, &sp, &dp, Some(tls_text("other-tls-root-ca.pem"))).await;
    assert_eq!(code, ReturnCode::SpApiFailed);
    // A pin that is not PEM certificates is refused at registration.
    let e =
        w.p.register_dp(NewDp {
            tls_ca: Some("not a certificate".into()),
            resource_id: Some("API.HTTPSDP099".parse().unwrap()),
            name: "x".into(),
            provider: "x".into(),
            scopes: vec!["x".into()],
            secret: None,
            endpoint: format!("{}/dp", dp.base),
            method: DpMethod::Get,
            claims: Vec::new(),
            identity_methods: vec!["PII".into()],
            template: None,
        })
        .unwrap_err()
        .to_string();
    assert!(e.contains("tls_ca"), "{e}");
}

#[actix_web::test]
async fn plain_http_to_a_production_registration_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let key = MasterKey::generate().unwrap();
    let production = Config {
        data_dir: dir.path().to_path_buf(),
        dp_trust_anchors: vec![
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../fixtures/pki/sandbox-root-ca.pem"
            )
            .into(),
        ],
        tls_ca_file: Some(tls_path("tls-root-ca.pem")),
        ..Config::default()
    };
    let store = mydata_server::storage::open_server(&production).unwrap();
    let sandbox = Platform::new(
        store.clone(),
        key.clone(),
        Arc::new(SystemClock),
        Config {
            sandbox: true,
            ..production.clone()
        },
    )
    .unwrap();
    let sp = start_peer("example-sp", ClientAuth::None);
    let dp = start_peer("sandbox-dp", ClientAuth::None);
    // Registered while the platform ran as the sandbox: an http SP-API, an http DP.
    let http_sp = "http://127.0.0.1:9/sp-api";
    register_dp(&sandbox, "API.HTTPSDP001", &format!("{}/dp", dp.base), None);
    let sp_plain = register_sp(&sandbox, "API.HTTPSDP001", http_sp, None);
    register_dp(&sandbox, "API.HTTPSDP002", "http://127.0.0.1:9/dp", None);
    let dp_plain = register_sp(
        &sandbox,
        "API.HTTPSDP002",
        &format!("{}/sp-api", sp.base),
        None,
    );
    let p = Arc::new(Platform::new(store, key, Arc::new(SystemClock), production).unwrap());
    // Registering plain http is refused, with the rule in the message; https is accepted.
    let e = p
        .register_sp(NewSp {
            name: "x".into(),
            return_url: common::RETURN.into(),
            sp_api_url: http_sp.into(),
            allowed_ips: vec!["127.0.0.1".parse().unwrap()],
            resources: vec!["API.HTTPSDP001".parse().unwrap()],
            ..NewSp::default()
        })
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("sp_api_url") && e.contains("http://") && e.contains("sandbox"),
        "{e}"
    );
    let e = p
        .register_dp(NewDp {
            tls_ca: None,
            resource_id: None,
            name: "x".into(),
            provider: "x".into(),
            scopes: vec!["x".into()],
            secret: None,
            endpoint: "http://127.0.0.1:9/dp".into(),
            method: DpMethod::Get,
            claims: Vec::new(),
            identity_methods: vec!["PII".into()],
            template: None,
        })
        .unwrap_err()
        .to_string();
    assert!(e.contains("endpoint") && e.contains("http://"), "{e}");
    register_dp(&p, "API.HTTPSDP003", &format!("{}/dp", dp.base), None);
    // Calling them is refused too: 410 toward the SP, 504 for the DP's dataset, no call made.
    assert_eq!(
        consent(&p, "t-1", &sp_plain, "API.HTTPSDP001").await,
        ReturnCode::SpApiFailed
    );
    ended_with_410(&p, "t-1");
    assert_eq!(
        consent(&p, "t-2", &dp_plain, "API.HTTPSDP002").await,
        ReturnCode::Success
    );
    let (_, d) = settled(&p, "t-2").await;
    assert_eq!((d[0].code, d[0].calls), (Some(504), 0));
    assert!(dp.seen().is_empty());
}

/// Runs `tests/interop/tls_peer.py` with `args` (plus its ready file) beside `drive`, which
/// gets the peer's base URL once it listens; the script's report and `drive`'s result.
async fn with_python_peer<F, Fut, T>(mut args: Value, drive: F) -> (Value, T)
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("port");
    args["ready_file"] = json!(ready.display().to_string());
    let peer = common::run_interop("tls_peer.py", args);
    let driver = async {
        let start = Instant::now();
        let port = loop {
            if let Ok(text) = std::fs::read_to_string(&ready) {
                break text.trim().to_string();
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "tls_peer.py never listened"
            );
            actix_web::rt::time::sleep(Duration::from_millis(20)).await;
        };
        drive(format!("https://127.0.0.1:{port}")).await
    };
    tokio::join!(peer, driver)
}

#[actix_web::test]
async fn a_python_tls_server_receives_the_sp_api_call() {
    let w = world(None).await;
    let dp = start_peer("sandbox-dp", ClientAuth::None);
    let args = json!({
        "cert": tls_path("example-sp.pem").display().to_string(),
        "key": tls_path("example-sp.key").display().to_string(),
        "timeout": 60,
    });
    let (out, code) = with_python_peer(args, |base| async move {
        register_dp(&w.p, "API.HTTPSDP001", &format!("{}/dp", dp.base), None);
        let client_id = register_sp(&w.p, "API.HTTPSDP001", &format!("{base}/sp-api"), None);
        consent(&w.p, "t-1", &client_id, "API.HTTPSDP001").await
    })
    .await;
    assert_eq!(code, ReturnCode::Success, "{out}");
    let req = &out["requests"][0];
    assert_eq!(req["method"], "POST");
    assert_eq!(req["path"], "/sp-api");
    assert!(
        req["content_type"]
            .as_str()
            .unwrap()
            .starts_with("application/json"),
        "{req}"
    );
    let body: Value = serde_json::from_str(req["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["tx_id"], "tx-t-1");
    assert!(body["permission_ticket"].is_string(), "{body}");
    let version = out["negotiated"][0].as_str().unwrap();
    assert!(matches!(version, "TLSv1.2" | "TLSv1.3"), "{version}");
}

#[actix_web::test]
async fn a_server_offering_only_tls_1_1_is_refused() {
    let w = world(None).await;
    let dp = start_peer("sandbox-dp", ClientAuth::None);
    let args = json!({
        "cert": tls_path("example-sp.pem").display().to_string(),
        "key": tls_path("example-sp.key").display().to_string(),
        "max_version": "TLSv1_1",
        "timeout": 60,
    });
    let (out, code) = with_python_peer(args, |base| async move {
        register_dp(&w.p, "API.HTTPSDP001", &format!("{}/dp", dp.base), None);
        let client_id = register_sp(&w.p, "API.HTTPSDP001", &format!("{base}/sp-api"), None);
        let code = consent(&w.p, "t-1", &client_id, "API.HTTPSDP001").await;
        ended_with_410(&w.p, "t-1");
        code
    })
    .await;
    assert_eq!(code, ReturnCode::SpApiFailed, "{out}");
    assert_eq!(out["requests"], json!([]), "{out}");
    assert_eq!(out["negotiated"], json!([]), "{out}");
    assert!(
        !out["handshake_errors"].as_array().unwrap().is_empty(),
        "{out}"
    );
}
