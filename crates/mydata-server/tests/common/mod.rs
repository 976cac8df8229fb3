//! Shared set-up of the page tests: the platform with the sandbox DP, an SP-API receiver, a
//! local SMTP sink, and a cookie-keeping HTTP browser.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use actix_web::{App, HttpResponse, HttpServer, web};
use base64::Engine as _;
use mydata_dp::sandbox::{self, SandboxConfig};
use mydata_protocol::catalogue::Catalogue;
use mydata_protocol::date::UnixTime;
use mydata_protocol::flow::percent_encode;
use mydata_protocol::ids::{CbcIv, ClientSecret};
use mydata_protocol::jwe::JweMode;
use mydata_protocol::package::sp::PackagingMode;
use mydata_protocol::param::{ParamCipher, ParamMode};
use mydata_protocol::resources::ResourceList;
use mydata_server::auth::CitizenClaims;
use mydata_server::clock::ManualClock;
use mydata_server::config::Config;
use mydata_server::engine::state;
use mydata_server::http::{Spawned, spawn};
use mydata_server::platform::{NewDp, NewSp, Platform, SANDBOX_CATALOGUE, SpCredentials};
use mydata_server::secrets::MasterKey;
use mydata_server::storage::{DpMethod, TxRecord};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

pub const RETURN: &str = "http://127.0.0.1:1/return";
pub const CITIZEN: &str = "A120345672";
pub const OTHER: &str = "F228710436";

pub type Seen = Arc<Mutex<Vec<Value>>>;

/// A transaction of `client_id` for `resources`, authenticated as [`CITIZEN`] with the two
/// documents, as the pages leave it; stored in `p`.
pub fn authenticated_tx(
    p: &Platform,
    id: &str,
    client_id: &str,
    tx_id: &str,
    resources: &[&str],
) -> TxRecord {
    let now = p.clock.now().0;
    let t = TxRecord {
        id: id.into(),
        client_id: client_id.into(),
        tx_id: tx_id.into(),
        state: state::AUTHENTICATED,
        code: None,
        resources: serde_json::to_string(resources).unwrap(),
        return_query: None,
        case_number: None,
        pid_sealed: Some(p.key.seal(&format!("tx:{id}:pid"), CITIZEN).unwrap()),
        citizen_sealed: None,
        identity_method: Some("PII".into()),
        ticket_hash: None,
        secret_key_sealed: None,
        sp_api_ack: false,
        datasets: "[]".into(),
        package_path: None,
        created_at: now,
        consent_at: None,
        taken_at: None,
        purge_at: now + 3600,
        return_url: None,
        last_activity: now,
    };
    p.store.insert_tx(&t).unwrap();
    t
}

/// Decrypts a delivered JWE (CBC) with the SP's `secret_key` and verifies the SP package in it
/// against the sandbox CA at `at`: one report per dataset.
pub fn open_delivery(
    jwe_text: &str,
    key: &mydata_protocol::ids::SecretKey,
    client_id: &str,
    at: UnixTime,
) -> Vec<mydata_protocol::package::sp::DatasetReport> {
    open_delivery_in(jwe_text, key, client_id, at, JweMode::Cbc)
}

/// [`open_delivery`] for a JWE of either mode.
pub fn open_delivery_in(
    jwe_text: &str,
    key: &mydata_protocol::ids::SecretKey,
    client_id: &str,
    at: UnixTime,
    mode: JweMode,
) -> Vec<mydata_protocol::package::sp::DatasetReport> {
    let client_id: mydata_protocol::ids::ClientId = client_id.parse().unwrap();
    let zip = mydata_protocol::jwe::decrypt_package(jwe_text, key, mode, Some(&client_id)).unwrap();
    let trust = mydata_protocol::package::dp::TrustAnchors::from_pem(&[
        mydata_server::platform::SANDBOX_ROOT_CA,
    ])
    .unwrap();
    mydata_protocol::package::sp::verify(
        std::io::Cursor::new(&zip.zip[..]),
        &mydata_protocol::package::dp::VerifyOptions {
            trust: Some(&trust),
            ..mydata_protocol::package::dp::VerifyOptions::at(at)
        },
    )
    .unwrap()
}

/// [`CITIZEN`]'s claims as the platform holds them after the two documents.
pub fn citizen_claims(p: &Platform) -> CitizenClaims {
    CitizenClaims {
        sub: p.citizen_sub(CITIZEN),
        uid: CITIZEN.into(),
        uid_type: "NID".into(),
        birthdate: Some("1988-01-01".into()),
        name: Some("王大明".into()),
        email: None,
    }
}

/// The status an SP-API receiver answers with.
pub struct Answering(pub u16);

pub async fn sp_api(
    seen: web::Data<Seen>,
    status: Option<web::Data<Answering>>,
    body: web::Json<Value>,
) -> HttpResponse {
    seen.lock().unwrap().push(body.into_inner());
    let code = status.map_or(200, |s| s.0);
    HttpResponse::build(actix_web::http::StatusCode::from_u16(code).unwrap()).finish()
}

pub async fn sp_return(req: actix_web::HttpRequest) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(format!(
            "<!DOCTYPE html><title>SP</title><p id=sp>SP return page: {}</p>",
            req.query_string().replace('<', "")
        ))
}

pub fn start_sp_api() -> (String, Seen) {
    let (url, seen, _) = start_sp_api_answering(200);
    (url, seen)
}

/// An SP receiver (`/sp-api` answering `status`, `/return`) on 127.0.0.1: its SP-API URL, the
/// bodies received, and its handle.
/// An HTTPS client that trusts the sandbox TLS root (and nothing else), following no redirect.
pub fn sandbox_https_client() -> awc::Client {
    let mut b = openssl::ssl::SslConnector::builder(openssl::ssl::SslMethod::tls_client()).unwrap();
    let mut store = openssl::x509::store::X509StoreBuilder::new().unwrap();
    store
        .add_cert(openssl::x509::X509::from_pem(mydata_protocol::tls::sandbox::ROOT_CA).unwrap())
        .unwrap();
    b.set_verify_cert_store(store.build()).unwrap();
    b.set_alpn_protos(b"\x08http/1.1").unwrap();
    awc::Client::builder()
        .connector(awc::Connector::new().openssl(b.build()))
        .disable_redirects()
        .finish()
}

/// The SP-API on HTTPS with the `example-sp` certificate of the sandbox TLS PKI, requiring
/// (when `require_platform`) the platform's client certificate, pinned to `platform-client`.
pub fn start_sp_api_tls(require_platform: bool) -> (String, Seen) {
    use mydata_protocol::tls::{acceptor, pin, sandbox};
    let seen: Seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let tls = if require_platform {
        let platform = openssl::x509::X509::from_pem(sandbox::PLATFORM_CLIENT_CERT).unwrap();
        pin::acceptor_requiring_client(
            sandbox::SP_CERT,
            sandbox::SP_KEY,
            sandbox::ROOT_CA,
            vec![acceptor::fingerprint(&platform)],
        )
        .unwrap()
    } else {
        acceptor::acceptor(&acceptor::ServerTls {
            cert_chain_pem: sandbox::SP_CERT,
            key_pem: sandbox::SP_KEY,
            client_ca_pem: None,
            client_certs: acceptor::ClientCerts::None,
        })
        .unwrap()
    };
    let srv = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(s2.clone()))
            .app_data(web::Data::new(Answering(200)))
            .route("/sp-api", web::post().to(sp_api))
            .route("/return", web::get().to(sp_return))
    })
    .workers(1)
    .bind_openssl("127.0.0.1:0", tls)
    .unwrap();
    let addr = srv.addrs()[0];
    let srv = srv.run();
    actix_web::rt::spawn(srv);
    (format!("https://localhost:{}/sp-api", addr.port()), seen)
}

pub fn start_sp_api_answering(status: u16) -> (String, Seen, actix_web::dev::ServerHandle) {
    let seen: Seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let srv = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(s2.clone()))
            .app_data(web::Data::new(Answering(status)))
            .route("/sp-api", web::post().to(sp_api))
            .route("/return", web::get().to(sp_return))
    })
    .workers(1)
    .bind("127.0.0.1:0")
    .unwrap();
    let addr = srv.addrs()[0];
    let srv = srv.run();
    let h = srv.handle();
    actix_web::rt::spawn(srv);
    (format!("http://{addr}/sp-api"), seen, h)
}

pub type Mails = Arc<Mutex<Vec<String>>>;

/// A local SMTP sink: enough of RFC 5321 for one client, keeping each message's data.
pub async fn start_smtp_sink() -> (String, Mails) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let mails: Mails = Arc::new(Mutex::new(Vec::new()));
    let m2 = mails.clone();
    actix_web::rt::spawn(async move {
        loop {
            let Ok((sock, _)) = l.accept().await else {
                return;
            };
            let mails = m2.clone();
            actix_web::rt::spawn(async move {
                let (r, mut w) = sock.into_split();
                let mut r = BufReader::new(r);
                w.write_all(b"220 sink ESMTP\r\n").await.unwrap();
                let mut line = String::new();
                loop {
                    line.clear();
                    if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let cmd = line.to_ascii_uppercase();
                    if cmd.starts_with("EHLO") || cmd.starts_with("HELO") {
                        w.write_all(b"250-sink\r\n250 8BITMIME\r\n").await.unwrap();
                    } else if cmd.starts_with("DATA") {
                        w.write_all(b"354 go on\r\n").await.unwrap();
                        let mut data = String::new();
                        loop {
                            line.clear();
                            r.read_line(&mut line).await.unwrap();
                            if line == ".\r\n" {
                                break;
                            }
                            data.push_str(&line);
                        }
                        mails.lock().unwrap().push(data);
                        w.write_all(b"250 queued\r\n").await.unwrap();
                    } else if cmd.starts_with("QUIT") {
                        w.write_all(b"221 bye\r\n").await.unwrap();
                        return;
                    } else {
                        w.write_all(b"250 ok\r\n").await.unwrap();
                    }
                }
            });
        }
    });
    (format!("smtp://{addr}"), mails)
}

/// The 6-digit code of the last e-mail (the body may be base64 or quoted-printable).
pub fn code_in(mail: &str) -> String {
    let (headers, body) = mail.split_once("\r\n\r\n").unwrap();
    let text = if headers.to_ascii_lowercase().contains("base64") {
        let b: String = body.split_whitespace().collect();
        String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b).unwrap()).unwrap()
    } else {
        body.replace("=\r\n", "")
    };
    let i = text.find("password: ").expect("code line") + "password: ".len();
    text[i..i + 6].to_string()
}

pub struct World {
    pub p: Arc<Platform>,
    pub clock: ManualClock,
    pub srv: Spawned,
    pub seen: Seen,
    pub sp_api_url: String,
    pub mails: Mails,
    pub dir: tempfile::TempDir,
}

pub fn now_real() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

pub async fn world() -> World {
    world_with(&[]).await
}

/// A world whose sandbox DP answers these datasets with these behaviours.
pub async fn world_with(behaviours: &[(&str, mydata_dp::sandbox::Behaviour)]) -> World {
    world_custom(behaviours, None, |_| {}).await
}

/// [`world_with`], with the sandbox DP's people from `citizens` (a `citizens.json` text) when
/// given, and the platform's configuration changed by `tweak`.
pub async fn world_custom(
    behaviours: &[(&str, mydata_dp::sandbox::Behaviour)],
    citizens: Option<&str>,
    tweak: impl FnOnce(&mut Config),
) -> World {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(UnixTime(now_real()));
    let (smtp, mails) = start_smtp_sink().await;
    let mut config = Config {
        data_dir: dir.path().to_path_buf(),
        sandbox: true,
        smtp_url: smtp,
        ..Config::default()
    };
    tweak(&mut config);
    // The store `mydata serve` uses: SQLite in the data directory behind the write-behind
    // layer (spec D47).
    let store = mydata_server::storage::open_server(&config).unwrap();
    let p = Arc::new(
        Platform::new(
            store,
            MasterKey::generate().unwrap(),
            Arc::new(clock.clone()),
            config,
        )
        .unwrap(),
    );
    let srv = spawn(p.clone()).unwrap();
    let mut dp_cfg = SandboxConfig::embedded(&srv.url).unwrap();
    // A platform on HTTPS gets its sandbox DP on HTTPS too (`sandbox_tls`, spec D50).
    dp_cfg.tls = srv.url.starts_with("https://");
    if let Some(text) = citizens {
        dp_cfg.citizens = sandbox::Citizens::from_json(text).unwrap();
    }
    for (id, b) in behaviours {
        dp_cfg.behaviours.insert(id.to_string(), *b);
    }
    let dp = sandbox::spawn(dp_cfg).await.unwrap();
    p.load_sandbox_at(&dp.base_url()).unwrap();
    // A dataset that OTP unlocks (no sandbox catalogue dataset lists OTP).
    p.register_dp(NewDp {
        tls_ca: None,
        resource_id: Some("API.OTPDEMO001".parse().unwrap()),
        name: "OTP 示範資料".into(),
        provider: "沙盒".into(),
        scopes: vec!["sandbox.otp".into()],
        endpoint: format!("{}/dp/API.ARPPI3VTCB", dp.base_url()),
        method: DpMethod::Get,
        identity_methods: vec!["OTP".into()],
        secret: None,
        claims: Vec::new(),
        template: None,
    })
    .unwrap();
    std::mem::forget(dp);
    let (sp_api_url, seen) = start_sp_api();
    World {
        p,
        clock,
        srv,
        seen,
        sp_api_url,
        mails,
        dir,
    }
}

/// Catalogue datasets that list the two-documents method.
pub fn pii_datasets(n: usize) -> Vec<String> {
    Catalogue::from_json(SANDBOX_CATALOGUE)
        .unwrap()
        .datasets
        .iter()
        .filter(|d| d.identity_methods.iter().any(|m| m.code() == "PII"))
        .take(n)
        .map(|d| d.resource_id.to_string())
        .collect()
}

/// A dataset that only certificates unlock.
pub fn cer_only_dataset() -> String {
    Catalogue::from_json(SANDBOX_CATALOGUE)
        .unwrap()
        .datasets
        .iter()
        .find(|d| {
            d.identity_methods
                .iter()
                .all(|m| matches!(m.code(), "CER" | "TFD"))
        })
        .unwrap()
        .resource_id
        .to_string()
}

impl World {
    pub fn register(&self, mode: PackagingMode, resources: &[String]) -> SpCredentials {
        self.register_returning(mode, resources, RETURN)
    }

    /// The receiver's own `/return` page, for a real browser to land on.
    pub fn sp_return_url(&self) -> String {
        self.sp_api_url.replace("/sp-api", "/return")
    }

    pub fn register_returning(
        &self,
        mode: PackagingMode,
        resources: &[String],
        return_url: &str,
    ) -> SpCredentials {
        self.p
            .register_sp(NewSp {
                tls_ca: None,
                name: "測試服務 Test service".into(),
                purpose: "申請測試 / testing".into(),
                return_url: return_url.into(),
                sp_api_url: self.sp_api_url.clone(),
                allowed_ips: vec!["127.0.0.1".parse().unwrap()],
                client_cert_sha256: Vec::new(),
                resources: resources.iter().map(|i| i.parse().unwrap()).collect(),
                jwe_mode: JweMode::Gcm,
                packaging_mode: mode,
                ..NewSp::default()
            })
            .unwrap()
            .1
    }

    /// The SP's redirect for `pid`, returning to [`RETURN`].
    pub fn redirect(
        &self,
        creds: &SpCredentials,
        ids: &[String],
        tx_id: &str,
        pid: &str,
    ) -> String {
        redirect_url(&self.srv.url, creds, ids, tx_id, pid, RETURN)
    }

    pub fn sp_api_calls(&self) -> Vec<Value> {
        self.seen.lock().unwrap().clone()
    }
}

pub fn cipher(creds: &SpCredentials) -> ParamCipher {
    cipher_in(creds, ParamMode::Gcm)
}

pub fn cipher_in(creds: &SpCredentials, mode: ParamMode) -> ParamCipher {
    ParamCipher::new(
        &creds.client_secret.parse::<ClientSecret>().unwrap(),
        &creds.cbc_iv.parse::<CbcIv>().unwrap(),
        mode,
    )
}

pub fn segment(ids: &[String]) -> String {
    ResourceList::new(ids.iter().map(|i| i.parse().unwrap()).collect())
        .unwrap()
        .encode()
}

pub fn redirect_url(
    base: &str,
    creds: &SpCredentials,
    resources: &[String],
    tx_id: &str,
    pid: &str,
    return_url: &str,
) -> String {
    let enc_pid = cipher(creds).encrypt(pid).unwrap();
    format!(
        "{base}/service/{}/{}/{tx_id}?returnUrl={}&pid={}",
        creds.client_id,
        percent_encode(&segment(resources)),
        percent_encode(return_url),
        percent_encode(&enc_pid)
    )
}

/// A browser: one cookie jar, no automatic redirects.
pub struct Browser {
    pub base: String,
    /// Cookies by host:port, then by name.
    pub cookies: std::collections::HashMap<String, std::collections::BTreeMap<String, String>>,
    pub client: awc::Client,
}

#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub location: Option<String>,
    pub body: String,
}

impl Answer {
    /// The return code and decrypted tx_id of a redirect back to the SP.
    pub fn returned(&self, creds: &SpCredentials) -> (u16, Option<String>) {
        self.returned_to(creds, RETURN)
    }

    pub fn returned_to(&self, creds: &SpCredentials, ret: &str) -> (u16, Option<String>) {
        self.returned_in(creds, ret, ParamMode::Gcm)
    }

    /// The return code and decrypted tx_id, for an SP whose parameters use `mode`.
    pub fn returned_in(
        &self,
        creds: &SpCredentials,
        ret: &str,
        mode: ParamMode,
    ) -> (u16, Option<String>) {
        let loc = self.location.as_deref().expect("a redirect");
        assert!(loc.starts_with(ret), "{loc}");
        let q = loc.split_once('?').unwrap().1;
        let mut code = None;
        let mut tx = None;
        for (k, v) in url::form_urlencoded::parse(q.as_bytes()) {
            match k.as_ref() {
                "code" if code.is_none() => code = Some(v.parse().unwrap()),
                "tx_id" if tx.is_none() => tx = Some(cipher_in(creds, mode).decrypt(&v).unwrap()),
                _ => {}
            }
        }
        (code.expect("code"), tx)
    }

    pub fn csrf(&self) -> String {
        const MARK: &str = "name=\"csrf\" value=\"";
        let i = self.body.find(MARK).expect("a form") + MARK.len();
        let j = self.body[i..].find('"').unwrap();
        self.body[i..i + j].to_string()
    }

    pub fn step(&self) -> &str {
        let i = self
            .body
            .find("data-step=\"")
            .unwrap_or_else(|| panic!("not a flow page: {self:?}"))
            + 11;
        let j = self.body[i..].find('"').unwrap();
        &self.body[i..i + j]
    }
}

impl Browser {
    pub fn new(base: &str) -> Self {
        Browser {
            base: base.into(),
            cookies: Default::default(),
            client: if base.starts_with("https://") {
                sandbox_https_client()
            } else {
                awc::Client::builder().disable_redirects().finish()
            },
        }
    }

    pub async fn send(&mut self, req: awc::ClientRequest, form: Option<&[(&str, &str)]>) -> Answer {
        let host = req
            .get_uri()
            .authority()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let jar = self.cookies.entry(host.clone()).or_default();
        let req = if jar.is_empty() {
            req
        } else {
            let v = jar
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; ");
            req.insert_header(("Cookie", v))
        };
        let mut r = match form {
            Some(f) => req.send_form(&f.to_vec()).await.unwrap(),
            None => req.send().await.unwrap(),
        };
        for v in r.headers().get_all("set-cookie") {
            let v = v.to_str().unwrap();
            let (pair, _) = v.split_once(';').unwrap_or((v, ""));
            if let Some((k, val)) = pair.split_once('=') {
                if k == "mydata_session" {
                    assert!(v.contains("HttpOnly") && v.contains("SameSite=Lax"), "{v}");
                }
                self.cookies
                    .entry(host.clone())
                    .or_default()
                    .insert(k.to_string(), val.to_string());
            }
        }
        let location = r
            .headers()
            .get("location")
            .map(|v| v.to_str().unwrap().to_string());
        let body = String::from_utf8(r.body().await.unwrap().to_vec()).unwrap();
        Answer {
            status: r.status().as_u16(),
            location,
            body,
        }
    }

    pub async fn get(&mut self, url: &str) -> Answer {
        let url = if url.starts_with("http") {
            url.to_string()
        } else {
            format!("{}{url}", self.base)
        };
        let req = self.client.get(url);
        self.send(req, None).await
    }

    /// Posts a form to an absolute URL.
    pub async fn post_to(&mut self, url: &str, form: &[(&str, &str)]) -> Answer {
        let req = self.client.post(url);
        self.send(req, Some(form)).await
    }

    pub async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Answer {
        let req = self.client.post(format!("{}{path}", self.base));
        self.send(req, Some(form)).await
    }

    /// Opens the redirect and follows it to the first page; returns the flow path.
    pub async fn open(&mut self, url: &str) -> (String, Answer) {
        let a = self.get(url).await;
        assert_eq!(a.status, 303, "{a:?}");
        let flow = a.location.unwrap();
        let page = self.get(&flow).await;
        assert_eq!(page.status, 200, "{}", page.body);
        (flow, page)
    }

    /// Posts a form of the current page and loads the next page (or returns the redirect).
    pub async fn submit(
        &mut self,
        flow: &str,
        action: &str,
        csrf: &str,
        fields: &[(&str, &str)],
    ) -> Answer {
        let mut form = vec![("csrf", csrf)];
        form.extend_from_slice(fields);
        let a = self.post(&format!("{flow}/{action}"), &form).await;
        if a.status == 303 {
            let next = a.location.unwrap();
            assert_eq!(next, flow);
            return self.get(&next).await;
        }
        a
    }

    /// The first sandbox citizen's two documents, on the identity page.
    pub async fn two_documents(&mut self, flow: &str, csrf: &str) -> Answer {
        self.submit(
            flow,
            "pii",
            csrf,
            &[
                ("nhi_card_number", "000018342761"),
                ("household_number", "A2034517"),
            ],
        )
        .await
    }

    /// Terms and basic information for `id` born `roc`; returns the identity page.
    pub async fn through_basic(&mut self, flow: &str, page: Answer, id: &str, roc: &str) -> Answer {
        assert_eq!(page.step(), "terms");
        let p = self.submit(flow, "terms", &page.csrf(), &[]).await;
        assert_eq!(p.step(), "basic");
        self.submit(
            flow,
            "basic",
            &p.csrf(),
            &[("national_id", id), ("birth_date", roc)],
        )
        .await
    }
}

pub async fn poll_until_ready(base: &str, ticket: &str, tx_id: &str) -> (u16, String) {
    // Generous: the DP calls run on a loaded 2-core machine in CI.
    for _ in 0..1200 {
        let mut r = awc::Client::default()
            .get(format!("{base}/service/data"))
            .insert_header(("permission_ticket", ticket))
            .insert_header(("tx_id", tx_id))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        if status != 429 {
            let body = String::from_utf8(r.body().await.unwrap().to_vec()).unwrap();
            return (status, body);
        }
        actix_web::rt::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("never ready");
}

/// Runs the Python peer `script` of `tests/interop` (MYDATA_PYTHON, MYDATA_INTEROP_DIR, as `bash
/// tests/run.sh` sets them) with `args` as its one JSON argument, off the async runtime; its
/// standard output parsed as JSON. Fails the test with the script's standard error.
pub async fn run_interop(script: &str, args: Value) -> Value {
    let py = std::env::var("MYDATA_PYTHON")
        .expect("MYDATA_PYTHON: run the tests with bash tests/run.sh");
    let dir = std::env::var("MYDATA_INTEROP_DIR").expect("MYDATA_INTEROP_DIR");
    let path = format!("{dir}/{script}");
    let out = actix_web::rt::task::spawn_blocking(move || {
        std::process::Command::new(py)
            .arg(path)
            .arg(args.to_string())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{script} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Whether `needle` is anywhere in the file at `path` (a missing file holds nothing). An empty
/// needle is refused: it would say nothing about the file.
pub fn file_holds(path: &std::path::Path, needle: &[u8]) -> bool {
    assert!(!needle.is_empty(), "an empty needle");
    std::fs::read(path).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle))
}

/// Whether the SQLite database of the data directory `dir` (`mydata.sqlite`) or its log
/// (`mydata.sqlite-wal`) holds `needle`. The database must exist and not be empty: a search of
/// a missing file would find nothing whatever the server wrote.
pub fn database_holds(dir: &std::path::Path, needle: &[u8]) -> bool {
    let db = dir.join("mydata.sqlite");
    let len = std::fs::metadata(&db).map_or(0, |m| m.len());
    assert!(len > 0, "{} is missing or empty", db.display());
    file_holds(&db, needle) || file_holds(&dir.join("mydata.sqlite-wal"), needle)
}

/// Positive control of [`database_holds`]: a token of the citizen `uid` carrying the claim
/// `name`, written by the SQLite store to a fresh database (claims as the platform encodes them,
/// JSON by `serde_json`), is found by the same search, in the bytes the store writes.
pub fn search_finds_what_the_store_writes(uid: &str, name: &str) {
    use mydata_server::storage::Store as _;
    let dir = tempfile::tempdir().unwrap();
    let store =
        mydata_server::storage::sqlite::SqliteStore::open(&dir.path().join("mydata.sqlite"))
            .unwrap();
    store
        .insert_token(&mydata_server::auth::TokenRecord {
            token_hash: "00".repeat(32),
            tx_id: "t-control".into(),
            client_id: "CLI.AAAAAAAAAA".into(),
            resource_id: "API.AAAAAAAAAA".into(),
            transaction_uid: "2d1c0b9a-8f7e-4d6c-9b5a-4e3f2a1b0c9d".into(),
            scope: "control".into(),
            sub: "6f1d2c3b-4a59-4e8f-9a0b-1c2d3e4f5a6b".into(),
            uid: uid.into(),
            claims: serde_json::json!({ "name": name }).to_string(),
            iat: 1,
            exp: i64::MAX,
        })
        .unwrap();
    store.flush().unwrap();
    assert!(
        database_holds(dir.path(), uid.as_bytes()),
        "control: the search does not find the ID the store wrote"
    );
    assert!(
        database_holds(dir.path(), name.as_bytes()),
        "control: the search does not find the name the store wrote"
    );
}
