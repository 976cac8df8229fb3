//! # example-sp
//!
//! A small service provider (SP) web app for the MyData online service, built on [`mydata_sp`].
//! It matches the sandbox registrations of `fixtures/sandbox.json` (`CLI.SANDBOX001`: packaging
//! mode A, CBC; `CLI.SANDBOX002`: mode B, GCM; return URL `http://127.0.0.1:8090/return`, SP-API
//! `http://127.0.0.1:8090/sp-api`).
//!
//! | route | what it does |
//! |---|---|
//! | `GET /` | the form: citizen ID, datasets, optional caseNumber |
//! | `POST /start` | binds a fresh `tx_id` to this browser (cookie), 303 to the platform |
//! | `POST /sp-api` | the SP-API receiver: records the ticket and `secret_key`, or `unable_to_deliver` |
//! | `GET /return` | decrypts `tx_id`, checks the cookie binding, polls the MyData-API on code 200, shows the result |
//! | `GET /api/tx/{tx_id}` | the transaction as JSON (for tests) |
//! | `POST /conformance/start` | the conformance hook's start: JSON `{"pid", "resources", "caseNumber"?}` → `{"tx_id", "redirect"}` (spec/conformance-sp.md) |
//! | `GET /conformance/tx/{tx_id}` | the conformance hook's view: `state`, `code`, `polls`, `error`, `datasets` |
//!
//! The conformance hook is always on: this is a sandbox app, and the hook can do nothing the
//! form and `/api/tx` cannot (start a transaction, read its state). A production SP exposes
//! it only in its test configuration.
//!
//! Start it in-process (from an actix runtime, e.g. `#[actix_web::test]`):
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! let cfg = example_sp::Config::sandbox001()
//!     .with_platform_url("http://127.0.0.1:8080")
//!     .with_listen("127.0.0.1:0".parse().unwrap());
//! let sp = example_sp::spawn(cfg).await?;
//! println!("example SP at {}", sp.url());
//! sp.stop().await;
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod html;
pub mod store;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use actix_web::cookie::{Cookie, SameSite};
use actix_web::dev::ServerHandle;
use actix_web::http::header;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use mydata_protocol::catalogue::Catalogue;
use mydata_protocol::codes::IdentityMethod;
use mydata_protocol::date::UnixTime;
use mydata_protocol::flow::{ApplicationMode, Pid};
use mydata_protocol::ids::{CaseNumber, ResourceId, SecretKey, TxId};
use mydata_protocol::jwe::JweMode;
use mydata_protocol::package::dp::TrustAnchors;
use mydata_protocol::package::sp::PackagingMode;
use mydata_protocol::resources::ResourceList;
use mydata_sp::SpConfig;
use mydata_sp::actix::{Rejected, SpApiReceiver};
use mydata_sp::callback::{ReturnOutcome, parse_query};
use mydata_sp::package::{Expectations, PackageError};
use mydata_sp::poll::{Answer, CancelToken, MyDataApi, PollError, PollOptions, SystemTimer};
use mydata_sp::receiver::{Received, ReceivedContent};
use mydata_sp::redirect::RedirectRequest;

use crate::store::{End, Phase, Store, Tx};

/// The default listen address (the sandbox registrations' return URL and SP-API URL use it).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8090";
/// The reference platform's default address (`mydata-server`'s `listen`).
pub const DEFAULT_PLATFORM_URL: &str = "http://127.0.0.1:8080";
/// The sandbox root CA, trusted for DP certificates by default.
pub const SANDBOX_ROOT_CA: &[u8] = include_bytes!("../../../fixtures/pki/sandbox-root-ca.pem");
/// The sandbox catalogue, for dataset names on the form.
pub const SANDBOX_CATALOGUE: &str = include_str!("../../../fixtures/catalogue.json");
/// The datasets checked on the form by default: two sandbox datasets that a two-documents (PII)
/// login may unlock (低收及中低收列冊資料, 身心障礙資格).
pub const DEFAULT_DATASETS: [&str; 2] = ["API.2RXHOGTXIC", "API.5XQQ2IWD37"];
/// The session cookie binding transactions to a browser.
pub const SESSION_COOKIE: &str = "example_sp_session";

/// The example SP's configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen (`127.0.0.1:0` picks a free port).
    pub listen: SocketAddr,
    /// The SP registration and the platform URL.
    pub sp: SpConfig,
    /// A name shown on the form.
    pub service_name: String,
    /// PEM trust anchors for DP certificates (the sandbox root CA by default).
    pub trust_anchors_pem: Vec<u8>,
    /// The datasets checked by default on the form.
    pub default_datasets: Vec<ResourceId>,
    /// MyData-API polling options.
    pub poll: PollOptions,
    /// Verify DP certificates at this time instead of now (for tests with fixed clocks).
    pub verify_at: Option<UnixTime>,
    /// actix-web worker threads.
    pub workers: usize,
    /// Mark the session cookie `Secure` (set it when serving over HTTPS).
    pub secure_cookie: bool,
    /// The sandbox on HTTPS (`mydata serve --sandbox --sandbox-tls`, spec D50): serve HTTPS with
    /// the `example-sp` certificate of the sandbox TLS PKI, and poll the platform trusting the
    /// sandbox TLS root while presenting the `sp-client` certificate.
    pub sandbox_tls: bool,
}

fn sandbox(n: u8, mode: JweMode, packaging: PackagingMode) -> Config {
    // Constant literals of fixtures/sandbox.json, valid by construction (the unit tests compare
    // them with the fixture); no input reaches these parses.
    let sp = SpConfig::new(
        DEFAULT_PLATFORM_URL,
        format!("CLI.SANDBOX00{n}")
            .parse()
            .expect("sandbox client_id literal"),
        format!("SandboxSecret00{n}")
            .parse()
            .expect("sandbox client_secret literal"),
        format!("SandboxCbcIv000{n}")
            .parse()
            .expect("sandbox cbc_iv literal"),
        format!("http://{DEFAULT_LISTEN}/return"),
    )
    .with_mode(mode)
    .with_api_key(format!("SandboxApiKey000000000000000000{n}"))
    .with_packaging_mode(packaging);
    Config {
        listen: SocketAddr::from(([127, 0, 0, 1], 8090)),
        sp,
        service_name: format!("沙盒 SP {n} / Sandbox SP {n}"),
        trust_anchors_pem: SANDBOX_ROOT_CA.to_vec(),
        default_datasets: DEFAULT_DATASETS
            .iter()
            .filter_map(|s| s.parse().ok())
            .collect(),
        poll: PollOptions::default(),
        verify_at: None,
        workers: 1,
        secure_cookie: false,
        sandbox_tls: false,
    }
}

impl Config {
    /// `CLI.SANDBOX001`: packaging mode A, CBC.
    pub fn sandbox001() -> Self {
        sandbox(1, JweMode::Cbc, PackagingMode::A)
    }

    /// `CLI.SANDBOX002`: packaging mode B, GCM.
    pub fn sandbox002() -> Self {
        sandbox(2, JweMode::Gcm, PackagingMode::B)
    }

    /// Sets the platform URL.
    pub fn with_platform_url(mut self, url: impl Into<String>) -> Self {
        self.sp.platform_url = url.into();
        self
    }

    /// Sets the listen address.
    pub fn with_listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// Sets the return URL to `{base_url}/return` (the SP-API is then `{base_url}/sp-api`), for
    /// an SP registered at the platform with this address.
    pub fn with_public_url(mut self, base_url: &str) -> Self {
        self.sp.return_url = format!("{}/return", base_url.trim_end_matches('/'));
        self
    }
}

struct State {
    sp: SpConfig,
    service_name: String,
    trust: TrustAnchors,
    catalogue: Option<Catalogue>,
    default_datasets: Vec<ResourceId>,
    api: MyDataApi,
    verify_at: Option<UnixTime>,
    secure_cookie: bool,
    sandbox_tls: bool,
    store: Store,
    cancel: CancelToken,
}

/// A running example SP.
pub struct Running {
    addr: SocketAddr,
    handle: ServerHandle,
    join: actix_web::rt::task::JoinHandle<io::Result<()>>,
    state: Arc<State>,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Running {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://{addr}`.
    pub fn url(&self) -> String {
        let scheme = if self.state.sandbox_tls {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr)
    }

    /// The return URL this SP sends in its redirects.
    pub fn return_url(&self) -> &str {
        &self.state.sp.return_url
    }

    /// The SP-API URL of this instance: `http://{addr}/sp-api`.
    pub fn sp_api_url(&self) -> String {
        format!("http://{}/sp-api", self.addr)
    }

    /// The server handle (to stop it from elsewhere).
    pub fn handle(&self) -> ServerHandle {
        self.handle.clone()
    }

    /// The JSON status of a transaction, as `GET /api/tx/{tx_id}` answers it.
    pub fn status(&self, tx_id: &str) -> Option<serde_json::Value> {
        self.state
            .store
            .view(tx_id)
            .and_then(|v| serde_json::to_value(v).ok())
    }

    /// Cancels the background polls and stops the server gracefully.
    pub async fn stop(self) {
        self.state.cancel.cancel();
        self.handle.stop(true).await;
        let _ = self.join.await;
    }

    /// Waits until the server stops (e.g. on Ctrl-C).
    pub async fn wait(self) -> io::Result<()> {
        let r = self.join.await.map_err(io::Error::other)?;
        self.state.cancel.cancel();
        r
    }
}

/// Binds `cfg.listen` and starts the example SP on the current actix runtime.
pub async fn spawn(cfg: Config) -> io::Result<Running> {
    launch(cfg, None)
}

/// Starts the example SP on an already bound listener (`cfg.listen` is ignored).
///
/// Useful when the SP must be registered at the platform with its address before it starts:
///
/// ```no_run
/// # async fn demo() -> std::io::Result<()> {
/// let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
/// let base = format!("http://{}", listener.local_addr()?);
/// // Register return_url = {base}/return and sp_api_url = {base}/sp-api at the platform, then:
/// let cfg = example_sp::Config::sandbox001().with_public_url(&base);
/// let sp = example_sp::spawn_on(listener, cfg).await?;
/// # sp.stop().await; Ok(()) }
/// ```
pub async fn spawn_on(listener: std::net::TcpListener, cfg: Config) -> io::Result<Running> {
    launch(cfg, Some(listener))
}

fn launch(cfg: Config, listener: Option<std::net::TcpListener>) -> io::Result<Running> {
    let trust = TrustAnchors::from_pem(&[&cfg.trust_anchors_pem])
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    let mut api = MyDataApi::new(&cfg.sp.platform_url, cfg.poll);
    if cfg.sandbox_tls {
        use mydata_protocol::tls::sandbox;
        let tls = mydata_sp::tls::TlsConfig::new()
            .with_extra_ca(sandbox::ROOT_CA)
            .with_client_certificate(sandbox::SP_CLIENT_CERT, sandbox::SP_CLIENT_KEY);
        api = api
            .with_tls(&tls)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    }
    let sandbox_tls = cfg.sandbox_tls;
    let state = Arc::new(State {
        api,
        sp: cfg.sp,
        service_name: cfg.service_name,
        trust,
        catalogue: Catalogue::from_json(SANDBOX_CATALOGUE).ok(),
        default_datasets: cfg.default_datasets,
        verify_at: cfg.verify_at,
        secure_cookie: cfg.secure_cookie,
        sandbox_tls,
        store: Store::default(),
        cancel: CancelToken::new(),
    });
    let sink_state = state.clone();
    let receiver = SpApiReceiver::from_config(&state.sp, move |r: Received| sp_api(&sink_state, r));
    let app_state = state.clone();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::from(app_state.clone()))
            .app_data(web::PayloadConfig::new(16 * 1024))
            .route("/", web::get().to(index))
            .route("/start", web::post().to(start))
            .service(receiver.resource("/sp-api"))
            .route("/return", web::get().to(return_page))
            .route("/api/tx/{tx_id}", web::get().to(api_tx))
            .route("/conformance/start", web::post().to(hook_start))
            .route("/conformance/tx/{tx_id}", web::get().to(hook_tx))
    })
    .workers(cfg.workers.max(1))
    .disable_signals();
    let server = if sandbox_tls {
        use mydata_protocol::tls::sandbox;
        // The pages and the SP-API share this listener, so no client certificate is asked for
        // (a citizen's browser has none); the SP-API call is authenticated by its API key.
        let tls =
            mydata_protocol::tls::acceptor::acceptor(&mydata_protocol::tls::acceptor::ServerTls {
                cert_chain_pem: sandbox::SP_CERT,
                key_pem: sandbox::SP_KEY,
                client_ca_pem: None,
                client_certs: mydata_protocol::tls::acceptor::ClientCerts::None,
            })
            .map_err(|e| io::Error::other(e.to_string()))?;
        match listener {
            Some(l) => server.listen_openssl(l, tls)?,
            None => server.bind_openssl(cfg.listen, tls)?,
        }
    } else {
        match listener {
            Some(l) => server.listen(l)?,
            None => server.bind(cfg.listen)?,
        }
    };
    let addr = server
        .addrs()
        .first()
        .copied()
        .ok_or_else(|| io::Error::other("no address bound"))?;
    let server = server.run();
    let handle = server.handle();
    let join = actix_web::rt::spawn(server);
    Ok(Running {
        addr,
        handle,
        join,
        state,
    })
}

fn html(status: actix_web::http::StatusCode, body: String) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((header::CONTENT_TYPE, "text/html; charset=utf-8"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header(("x-content-type-options", "nosniff"))
        .insert_header((
            "content-security-policy",
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self' http: https:",
        ))
        .insert_header(("referrer-policy", "no-referrer"))
        .body(body)
}

fn index_page(s: &State, error: Option<&str>) -> String {
    let mut ids: Vec<ResourceId> = s.default_datasets.clone();
    if let Some(c) = &s.catalogue {
        for d in &c.datasets {
            if d.identity_methods.contains(&IdentityMethod::TwoDocuments)
                && !ids.contains(&d.resource_id)
            {
                ids.push(d.resource_id.clone());
            }
        }
    }
    let names: Vec<(String, String, String, bool)> = ids
        .iter()
        .map(|id| {
            let (name, provider) = s
                .catalogue
                .as_ref()
                .and_then(|c| c.get(id))
                .map(|d| (d.name.clone(), d.provider.clone()))
                .unwrap_or_default();
            (
                id.to_string(),
                name,
                provider,
                s.default_datasets.contains(id),
            )
        })
        .collect();
    let choices: Vec<html::Choice<'_>> = names
        .iter()
        .map(|(id, name, provider, checked)| html::Choice {
            resource_id: id,
            name,
            provider,
            checked: *checked,
        })
        .collect();
    html::index(s.sp.client_id.as_str(), &s.service_name, &choices, error)
}

async fn index(s: web::Data<State>) -> HttpResponse {
    html(actix_web::http::StatusCode::OK, index_page(&s, None))
}

fn bad_form(s: &State, msg: &str) -> HttpResponse {
    html(
        actix_web::http::StatusCode::BAD_REQUEST,
        index_page(s, Some(msg)),
    )
}

fn valid_session(v: &str) -> bool {
    v.len() == 32 && v.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Why a start was refused: the status and a bilingual message.
type StartError = (actix_web::http::StatusCode, String);

/// The start of a transaction, shared by the form (`POST /start`) and the conformance hook
/// (`POST /conformance/start`): validates the input, builds the redirect with a fresh `tx_id`
/// and records the transaction under `session`.
fn begin(
    s: &State,
    pid_raw: &str,
    ids: &[String],
    case: &str,
    session: &str,
) -> Result<mydata_sp::redirect::Redirect, StartError> {
    use actix_web::http::StatusCode;
    let bad = |m: String| (StatusCode::BAD_REQUEST, m);
    let pid = Pid::parse_for(
        ApplicationMode::PersonOrLegalPerson,
        &pid_raw.trim().to_ascii_uppercase(),
    )
    .map_err(|_| bad("身分證統一編號格式錯誤 / the citizen ID is not valid".into()))?;
    let mut parsed = Vec::new();
    for id in ids {
        match id.trim().parse::<ResourceId>() {
            Ok(r) if !parsed.contains(&r) => parsed.push(r),
            Ok(_) => {}
            Err(_) => return Err(bad(format!("資料集代碼錯誤 / not a resource_id: {id}"))),
        }
    }
    let list = ResourceList::new(parsed)
        .map_err(|_| bad("請選擇 1 至 32 個資料集 / choose 1 to 32 datasets".into()))?;
    let case = case.trim();
    let case_number = if case.is_empty() {
        None
    } else {
        Some(
            case.parse::<CaseNumber>()
                .map_err(|_| bad("案件編號格式錯誤 / the caseNumber is not valid".into()))?,
        )
    };
    let rr = RedirectRequest {
        case_number: case_number.as_ref(),
        ..RedirectRequest::new(&list, &pid)
    };
    let redirect =
        s.sp.redirect(&rr)
            .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    s.store.insert(
        redirect.tx_id.to_string(),
        Tx::new(session.to_owned(), list.ids().to_vec(), SystemTime::now()),
    );
    Ok(redirect)
}

/// The browser's session: its cookie when valid, else a fresh random one.
fn session_of(req: &HttpRequest) -> Option<String> {
    match req.cookie(SESSION_COOKIE).map(|c| c.value().to_owned()) {
        Some(v) if valid_session(&v) => Some(v),
        _ => SecretKey::generate().ok().map(|k| k.as_str().to_owned()),
    }
}

fn session_cookie(s: &State, session: String) -> Cookie<'static> {
    Cookie::build(SESSION_COOKIE, session)
        .path("/")
        .http_only(true)
        .secure(s.secure_cookie)
        .same_site(SameSite::Lax)
        .finish()
}

async fn start(s: web::Data<State>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let text = String::from_utf8_lossy(&body);
    let mut pid_raw = String::new();
    let mut ids: Vec<String> = Vec::new();
    let mut case = String::new();
    for (k, v) in parse_query(&text) {
        match k.as_str() {
            "pid" => pid_raw = v,
            "resource" => ids.push(v),
            "resources" => ids.extend(
                v.split([',', ' ', '\n', '\r', '\t'])
                    .filter(|x| !x.is_empty())
                    .map(str::to_owned),
            ),
            "caseNumber" => case = v,
            _ => {}
        }
    }
    let Some(session) = session_of(&req) else {
        return html(
            actix_web::http::StatusCode::INTERNAL_SERVER_ERROR,
            html::message("錯誤 / Error", "no randomness available"),
        );
    };
    let redirect = match begin(&s, &pid_raw, &ids, &case, &session) {
        Ok(r) => r,
        Err((status, msg)) if status.is_client_error() => return bad_form(&s, &msg),
        Err((status, msg)) => {
            return html(
                status,
                html::message("設定錯誤 / Configuration error", &msg),
            );
        }
    };
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, redirect.url))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .cookie(session_cookie(&s, session))
        .finish()
}

/// The conformance hook's start request (spec/conformance-sp.md §2.1).
#[derive(Debug, serde::Deserialize)]
struct HookStart {
    pid: String,
    resources: Vec<String>,
    #[serde(rename = "caseNumber", default)]
    case_number: Option<String>,
}

/// `POST /conformance/start`: the same start as the form, answered as JSON
/// `{"tx_id", "redirect"}` with the session cookie, for the SP conformance suite.
async fn hook_start(s: web::Data<State>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let start: HookStart = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return HttpResponse::BadRequest()
                .json(serde_json::json!({"error": format!("body: {e}")}));
        }
    };
    let Some(session) = session_of(&req) else {
        return HttpResponse::InternalServerError()
            .json(serde_json::json!({"error": "no randomness available"}));
    };
    let case = start.case_number.unwrap_or_default();
    match begin(&s, &start.pid, &start.resources, &case, &session) {
        Ok(r) => HttpResponse::Ok()
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .cookie(session_cookie(&s, session))
            .json(serde_json::json!({"tx_id": r.tx_id.as_str(), "redirect": r.url})),
        Err((status, msg)) => HttpResponse::build(status).json(serde_json::json!({"error": msg})),
    }
}

/// `GET /conformance/tx/{tx_id}`: the conformance hook's view of a transaction.
async fn hook_tx(s: web::Data<State>, path: web::Path<String>) -> HttpResponse {
    match s.store.hook_view(&path) {
        Some(v) => HttpResponse::Ok()
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .json(v),
        None => HttpResponse::NotFound().json(serde_json::json!({"error": "unknown tx_id"})),
    }
}

fn sp_api(s: &State, r: Received) -> Result<(), Rejected> {
    s.store.with(|m| {
        let tx = m
            .get_mut(r.tx_id.as_str())
            .ok_or_else(|| Rejected::new(404, "unknown tx_id"))?;
        if tx.sp_api_received {
            return Err(Rejected::new(
                409,
                "the SP-API was already called for this tx_id",
            ));
        }
        tx.sp_api_received = true;
        tx.ticket = Some(r.permission_ticket);
        match r.content {
            ReceivedContent::SecretKey(k) => tx.secret_key = Some(k),
            ReceivedContent::UnableToDeliver(ids) => tx.unable_to_deliver = Some(ids),
        }
        Ok(())
    })
}

fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

async fn return_page(s: web::Data<State>, req: HttpRequest) -> HttpResponse {
    use actix_web::http::StatusCode;
    let returned = match s.sp.read_return(req.query_string()) {
        Ok(r) => r,
        Err(e) => {
            return html(
                StatusCode::BAD_REQUEST,
                html::message("無效的回傳 / Invalid return", &e.to_string()),
            );
        }
    };
    let outcome = returned.outcome;
    let Some(tx_id) = returned.tx_id.clone() else {
        return html(
            StatusCode::BAD_REQUEST,
            html::message(
                "無法對應交易 / No transaction",
                &format!(
                    "{} / {} ({})",
                    outcome.description_zh(),
                    outcome.description(),
                    outcome.code()
                ),
            ),
        );
    };
    let cookie = req.cookie(SESSION_COOKIE).map(|c| c.value().to_owned());
    let start_poll = s.store.with(|m| {
        let tx = m.get_mut(tx_id.as_str())?;
        let bound = cookie.as_deref().is_some_and(|c| same(c, &tx.session));
        if !bound {
            return None;
        }
        if tx.code.is_none() {
            tx.code = Some(outcome.code());
            tx.phase = if outcome.is_success() {
                Phase::Waiting
            } else {
                Phase::Ended
            };
            return Some(outcome.is_success());
        }
        Some(false)
    });
    let Some(start_poll) = start_poll else {
        return html(
            StatusCode::FORBIDDEN,
            html::message(
                "拒絕 / Refused",
                "此交易不是由這個瀏覽器發起的。/ This transaction was not started in this browser.",
            ),
        );
    };
    if start_poll {
        poll_in_background(s.clone().into_inner(), tx_id.clone());
    }
    let view = match s.store.view(tx_id.as_str()) {
        Some(v) => v,
        None => {
            return html(
                StatusCode::NOT_FOUND,
                html::message("找不到交易 / Not found", tx_id.as_str()),
            );
        }
    };
    let shown = view.code.map(ReturnOutcome::from_code).unwrap_or(outcome);
    html(
        StatusCode::OK,
        html::transaction(&view, shown.description_zh(), shown.description()),
    )
}

fn poll_in_background(s: Arc<State>, tx_id: TxId) {
    let fetched = s.store.with(|m| {
        let tx = m.get_mut(tx_id.as_str())?;
        match (&tx.ticket, &tx.secret_key) {
            (Some(t), Some(k)) => Some((t.clone(), k.clone(), tx.resources.clone())),
            _ => {
                let (why, kind) = if tx.unable_to_deliver.is_some() {
                    ("the SP-API reported unable_to_deliver", "unable_to_deliver")
                } else {
                    (
                        "no SP-API call with a secret_key was received",
                        "no_delivery",
                    )
                };
                tx.failed(why.into(), End::Error(kind));
                None
            }
        }
    });
    let Some((ticket, key, resources)) = fetched else {
        return;
    };
    actix_web::rt::spawn(async move {
        // The SDK's poll, counting each answered request on the transaction for the hook.
        let count = |n: u32, _: &Answer| {
            s.store.with(|m| {
                if let Some(tx) = m.get_mut(tx_id.as_str()) {
                    tx.polls = n;
                }
            })
        };
        let result = s
            .api
            .poll_observed(&ticket, Some(&tx_id), &SystemTimer, &s.cancel, count)
            .await;
        let outcome = match result {
            Err(e) => {
                let end = match e {
                    PollError::AlreadyTaken => End::Taken,
                    PollError::Forbidden => End::Expired,
                    ref other => End::Failed(other.kind()),
                };
                Err((format!("MyData-API: {e}"), end, None))
            }
            Ok(jwe) => {
                let exp = Expectations {
                    requested: Some(&resources),
                    ..s.verify_at
                        .map(Expectations::at)
                        .unwrap_or_else(Expectations::now)
                        .trust(&s.trust)
                };
                s.sp.open_package(&jwe, &key, &exp).map_err(|e| {
                    let rule = match e {
                        PackageError::PackagingMode { .. } => Some("packaging_mode"),
                        PackageError::NotRequested { .. } => Some("requested"),
                        _ => None,
                    };
                    (e.to_string(), End::Rejected(e.kind()), rule)
                })
            }
        };
        s.store.with(|m| {
            if let Some(tx) = m.get_mut(tx_id.as_str()) {
                match outcome {
                    Ok(d) => tx.delivered(&d),
                    Err((e, end, rule)) => {
                        tx.failed(e, end);
                        tx.error_rule = rule;
                    }
                }
            }
        });
    });
}

async fn api_tx(s: web::Data<State>, path: web::Path<String>) -> HttpResponse {
    match s.store.view(&path) {
        Some(v) => HttpResponse::Ok()
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .json(v),
        None => HttpResponse::NotFound().json(serde_json::json!({"error": "unknown tx_id"})),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sandbox_presets_match_fixtures() {
        let fixtures: serde_json::Value =
            serde_json::from_str(include_str!("../../../fixtures/sandbox.json")).unwrap();
        for (cfg, i) in [(Config::sandbox001(), 0), (Config::sandbox002(), 1)] {
            let f = &fixtures["sps"][i];
            assert_eq!(cfg.sp.client_id.as_str(), f["client_id"]);
            assert_eq!(cfg.sp.client_secret.as_str(), f["client_secret"]);
            assert_eq!(cfg.sp.cbc_iv.as_str(), f["cbc_iv"]);
            assert_eq!(cfg.sp.api_key.as_deref(), f["api_key"].as_str());
            assert_eq!(cfg.sp.return_url, f["return_url"]);
            assert_eq!(
                format!("http://{}/sp-api", cfg.listen),
                f["sp_api_url"].as_str().unwrap()
            );
            let mode = if f["jwe_mode"] == "gcm" {
                JweMode::Gcm
            } else {
                JweMode::Cbc
            };
            assert_eq!(cfg.sp.jwe_mode, mode);
            let packaging = if f["packaging_mode"] == "B" {
                PackagingMode::B
            } else {
                PackagingMode::A
            };
            assert_eq!(cfg.sp.packaging_mode, Some(packaging));
            assert_eq!(cfg.default_datasets.len(), 2);
            assert!(TrustAnchors::from_pem(&[&cfg.trust_anchors_pem]).is_ok());
        }
    }

    #[test]
    fn default_datasets_admit_two_documents() {
        let c = Catalogue::from_json(SANDBOX_CATALOGUE).unwrap();
        for id in DEFAULT_DATASETS {
            let d = c.get(&id.parse().unwrap()).unwrap();
            assert!(d.identity_methods.contains(&IdentityMethod::TwoDocuments));
        }
    }
}
