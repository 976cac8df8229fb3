//! The citizen pages over real HTTP on 127.0.0.1 (issue 3, item 3): the redirect, terms, basic
//! information, two documents or an e-mailed one-time password (through a real SMTP exchange with
//! a local sink), consent, and every return code these pages produce.

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
use mydata_server::clock::ManualClock;
use mydata_server::config::Config;
use mydata_server::http::{Spawned, spawn};
use mydata_server::platform::{NewDp, NewSp, Platform, SANDBOX_CATALOGUE, SpCredentials};
use mydata_server::secrets::MasterKey;
use mydata_server::storage::DpMethod;
use mydata_server::storage::sqlite::SqliteStore;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const RETURN: &str = "http://127.0.0.1:1/return";
const CITIZEN: &str = "A120345672";
const OTHER: &str = "F228710436";

type Seen = Arc<Mutex<Vec<Value>>>;

async fn sp_api(seen: web::Data<Seen>, body: web::Json<Value>) -> HttpResponse {
    seen.lock().unwrap().push(body.into_inner());
    HttpResponse::Ok().finish()
}

async fn sp_return(req: actix_web::HttpRequest) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(format!(
            "<!DOCTYPE html><title>SP</title><p id=sp>SP return page: {}</p>",
            req.query_string().replace('<', "")
        ))
}

fn start_sp_api() -> (String, Seen) {
    let seen: Seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let srv = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(s2.clone()))
            .route("/sp-api", web::post().to(sp_api))
            .route("/return", web::get().to(sp_return))
    })
    .workers(1)
    .bind("127.0.0.1:0")
    .unwrap();
    let addr = srv.addrs()[0];
    actix_web::rt::spawn(srv.run());
    (format!("http://{addr}/sp-api"), seen)
}

type Mails = Arc<Mutex<Vec<String>>>;

/// A local SMTP sink: enough of RFC 5321 for one client, keeping each message's data.
async fn start_smtp_sink() -> (String, Mails) {
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
fn code_in(mail: &str) -> String {
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

struct World {
    p: Arc<Platform>,
    clock: ManualClock,
    srv: Spawned,
    seen: Seen,
    sp_api_url: String,
    mails: Mails,
    _dir: tempfile::TempDir,
}

fn now_real() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

async fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(UnixTime(now_real()));
    let (smtp, mails) = start_smtp_sink().await;
    let config = Config {
        data_dir: dir.path().to_path_buf(),
        sandbox: true,
        smtp_url: smtp,
        ..Config::default()
    };
    let store = Arc::new(SqliteStore::open(&dir.path().join("mydata.sqlite")).unwrap());
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
    let dp = sandbox::spawn(SandboxConfig::embedded(&srv.url).unwrap())
        .await
        .unwrap();
    p.load_sandbox_at(&dp.base_url()).unwrap();
    // A dataset that OTP unlocks (no sandbox catalogue dataset lists OTP).
    p.register_dp(NewDp {
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
        _dir: dir,
    }
}

/// Catalogue datasets that list the two-documents method.
fn pii_datasets(n: usize) -> Vec<String> {
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
fn cer_only_dataset() -> String {
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
    fn register(&self, mode: PackagingMode, resources: &[String]) -> SpCredentials {
        self.register_returning(mode, resources, RETURN)
    }

    /// The receiver's own `/return` page, for a real browser to land on.
    fn sp_return_url(&self) -> String {
        self.sp_api_url.replace("/sp-api", "/return")
    }

    fn register_returning(
        &self,
        mode: PackagingMode,
        resources: &[String],
        return_url: &str,
    ) -> SpCredentials {
        self.p
            .register_sp(NewSp {
                name: "測試服務 Test service".into(),
                purpose: "申請測試 / testing".into(),
                return_url: return_url.into(),
                sp_api_url: self.sp_api_url.clone(),
                allowed_ips: vec!["127.0.0.1".parse().unwrap()],
                resources: resources.iter().map(|i| i.parse().unwrap()).collect(),
                jwe_mode: JweMode::Gcm,
                packaging_mode: mode,
                ..NewSp::default()
            })
            .unwrap()
            .1
    }

    fn sp_api_calls(&self) -> Vec<Value> {
        self.seen.lock().unwrap().clone()
    }
}

fn cipher(creds: &SpCredentials) -> ParamCipher {
    ParamCipher::new(
        &creds.client_secret.parse::<ClientSecret>().unwrap(),
        &creds.cbc_iv.parse::<CbcIv>().unwrap(),
        ParamMode::Gcm,
    )
}

fn segment(ids: &[String]) -> String {
    ResourceList::new(ids.iter().map(|i| i.parse().unwrap()).collect())
        .unwrap()
        .encode()
}

fn redirect_url(
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
struct Browser {
    base: String,
    cookie: Option<String>,
    client: awc::Client,
}

#[derive(Debug)]
struct Answer {
    status: u16,
    location: Option<String>,
    body: String,
}

impl Answer {
    /// The return code and decrypted tx_id of a redirect back to the SP.
    fn returned(&self, creds: &SpCredentials) -> (u16, Option<String>) {
        self.returned_to(creds, RETURN)
    }

    fn returned_to(&self, creds: &SpCredentials, ret: &str) -> (u16, Option<String>) {
        let loc = self.location.as_deref().expect("a redirect");
        assert!(loc.starts_with(ret), "{loc}");
        let q = loc.split_once('?').unwrap().1;
        let mut code = None;
        let mut tx = None;
        for (k, v) in url::form_urlencoded::parse(q.as_bytes()) {
            match k.as_ref() {
                "code" if code.is_none() => code = Some(v.parse().unwrap()),
                "tx_id" if tx.is_none() => tx = Some(cipher(creds).decrypt(&v).unwrap()),
                _ => {}
            }
        }
        (code.expect("code"), tx)
    }

    fn csrf(&self) -> String {
        const MARK: &str = "name=\"csrf\" value=\"";
        let i = self.body.find(MARK).expect("a form") + MARK.len();
        let j = self.body[i..].find('"').unwrap();
        self.body[i..i + j].to_string()
    }

    fn step(&self) -> &str {
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
    fn new(base: &str) -> Self {
        Browser {
            base: base.into(),
            cookie: None,
            client: awc::Client::builder().disable_redirects().finish(),
        }
    }

    async fn send(&mut self, req: awc::ClientRequest, form: Option<&[(&str, &str)]>) -> Answer {
        let req = match &self.cookie {
            Some(c) => req.insert_header(("Cookie", format!("mydata_session={c}"))),
            None => req,
        };
        let mut r = match form {
            Some(f) => req.send_form(&f.to_vec()).await.unwrap(),
            None => req.send().await.unwrap(),
        };
        for v in r.headers().get_all("set-cookie") {
            let v = v.to_str().unwrap();
            if let Some(rest) = v.strip_prefix("mydata_session=") {
                self.cookie = Some(rest.split(';').next().unwrap().to_string());
                assert!(v.contains("HttpOnly") && v.contains("SameSite=Lax"), "{v}");
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

    async fn get(&mut self, url: &str) -> Answer {
        let url = if url.starts_with("http") {
            url.to_string()
        } else {
            format!("{}{url}", self.base)
        };
        let req = self.client.get(url);
        self.send(req, None).await
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Answer {
        let req = self.client.post(format!("{}{path}", self.base));
        self.send(req, Some(form)).await
    }

    /// Opens the redirect and follows it to the first page; returns the flow path.
    async fn open(&mut self, url: &str) -> (String, Answer) {
        let a = self.get(url).await;
        assert_eq!(a.status, 303, "{a:?}");
        let flow = a.location.unwrap();
        let page = self.get(&flow).await;
        assert_eq!(page.status, 200, "{}", page.body);
        (flow, page)
    }

    /// Posts a form of the current page and loads the next page (or returns the redirect).
    async fn submit(
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

    /// Terms and basic information for `id` born `roc`; returns the identity page.
    async fn through_basic(&mut self, flow: &str, page: Answer, id: &str, roc: &str) -> Answer {
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

async fn poll_until_ready(base: &str, ticket: &str, tx_id: &str) -> (u16, String) {
    for _ in 0..200 {
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

#[actix_web::test]
async fn two_documents_consent_and_delivery() {
    let w = world().await;
    let ids = pii_datasets(2);
    let creds = w.register(PackagingMode::B, &ids);
    let mut b = Browser::new(&w.srv.url);
    let url = redirect_url(
        &w.srv.url,
        &creds,
        &ids,
        "tx-pii-1",
        CITIZEN,
        &format!("{RETURN}?case=7"),
    );
    let (flow, page) = b.open(&url).await;
    assert!(page.body.contains("測試服務 Test service"));

    // Reloading the redirect resumes the same transaction (D19).
    let again = b.get(&url).await;
    assert_eq!(again.location.as_deref(), Some(flow.as_str()));

    let p = b.through_basic(&flow, page, CITIZEN, "0770101").await;
    assert_eq!(p.step(), "identity");
    assert!(p.body.contains("id=\"method-pii\""));
    // No dataset lists OTP, so it is not offered.
    assert!(!p.body.contains("id=\"method-otp\""));
    let p = b
        .submit(
            &flow,
            "pii",
            &p.csrf(),
            &[
                ("nhi_card_number", "000018342761"),
                ("household_number", "a2034517"),
            ],
        )
        .await;
    assert_eq!(p.step(), "consent");
    for id in &ids {
        assert!(p.body.contains(id.as_str()));
    }
    assert!(p.body.contains("申請測試 / testing"));
    let a = b
        .submit(&flow, "consent", &p.csrf(), &[("decision", "agree")])
        .await;
    assert_eq!(a.status, 302);
    assert_eq!(a.returned(&creds), (200, Some("tx-pii-1".to_string())));
    assert!(a.location.as_deref().unwrap().ends_with("&case=7"));

    // The SP got its ticket, and the MyData-API delivers.
    let calls = w.sp_api_calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["tx_id"], "tx-pii-1");
    assert!(calls[0]["secret_key"].is_string());
    let ticket = calls[0]["permission_ticket"].as_str().unwrap();
    let (status, jwe) = poll_until_ready(&w.srv.url, ticket, "tx-pii-1").await;
    assert_eq!(status, 200);
    assert_eq!(jwe.split('.').count(), 5);
    let (status, _) = poll_until_ready(&w.srv.url, ticket, "tx-pii-1").await;
    assert_eq!(status, 201);

    // The flow page is gone once the citizen is back at the SP: it answers with the outcome.
    let after = b.get(&flow).await;
    assert_eq!(after.status, 403);
}

#[actix_web::test]
async fn refusal_mismatch_conflict_and_bad_forms() {
    let w = world().await;
    let ids = pii_datasets(1);
    let creds = w.register(PackagingMode::A, &ids);

    // Refusal: 205 and no SP-API call.
    let mut b = Browser::new(&w.srv.url);
    let (flow, page) = b
        .open(&redirect_url(
            &w.srv.url,
            &creds,
            &ids,
            "tx-refuse",
            CITIZEN,
            RETURN,
        ))
        .await;
    let p = b.through_basic(&flow, page, CITIZEN, "0770101").await;
    let p = b
        .submit(
            &flow,
            "pii",
            &p.csrf(),
            &[
                ("nhi_card_number", "000018342761"),
                ("household_number", "A2034517"),
            ],
        )
        .await;
    // A forged form (wrong CSRF token) is refused and changes nothing.
    let forged = b
        .post(
            &format!("{flow}/consent"),
            &[("csrf", "forged"), ("decision", "agree")],
        )
        .await;
    assert_eq!(forged.status, 403);
    // So is the right token from a browser without the session cookie.
    let mut stranger = Browser::new(&w.srv.url);
    let s = stranger
        .post(
            &format!("{flow}/consent"),
            &[("csrf", &p.csrf()), ("decision", "agree")],
        )
        .await;
    assert_eq!(s.status, 403);
    let a = b
        .submit(&flow, "consent", &p.csrf(), &[("decision", "refuse")])
        .await;
    assert_eq!(a.returned(&creds), (205, Some("tx-refuse".to_string())));
    assert!(w.sp_api_calls().is_empty());

    // Step 12: this browser's session now belongs to CITIZEN; a redirect for OTHER gives 409.
    let a = b
        .get(&redirect_url(
            &w.srv.url, &creds, &ids, "tx-other", OTHER, RETURN,
        ))
        .await;
    assert_eq!(a.returned(&creds), (409, Some("tx-other".to_string())));

    // Another person's ID on the basic-information page: 409.
    let mut b2 = Browser::new(&w.srv.url);
    let (flow, page) = b2
        .open(&redirect_url(
            &w.srv.url,
            &creds,
            &ids,
            "tx-mismatch",
            CITIZEN,
            RETURN,
        ))
        .await;
    let a = b2.through_basic(&flow, page, OTHER, "0640315").await;
    assert_eq!(a.returned(&creds), (409, Some("tx-mismatch".to_string())));

    // A used pair cannot start again (D19): 400.
    let mut b3 = Browser::new(&w.srv.url);
    let a = b3
        .get(&redirect_url(
            &w.srv.url,
            &creds,
            &ids,
            "tx-mismatch",
            CITIZEN,
            RETURN,
        ))
        .await;
    assert_eq!(a.returned(&creds), (400, Some("tx-mismatch".to_string())));
}

#[actix_web::test]
async fn redirect_rejections() {
    let w = world().await;
    let ids = pii_datasets(1);
    let creds = w.register(PackagingMode::A, &ids);
    let mut b = Browser::new(&w.srv.url);

    // Wrong return URL: 404 to the registered one, without tx_id.
    let a = b
        .get(&redirect_url(
            &w.srv.url,
            &creds,
            &ids,
            "tx-r1",
            CITIZEN,
            "http://evil.example/return",
        ))
        .await;
    assert_eq!(a.status, 302);
    assert_eq!(a.returned(&creds), (404, None));

    // A dataset the service may not request: 401.
    let other = pii_datasets(2)[1].clone();
    let a = b
        .get(&redirect_url(
            &w.srv.url,
            &creds,
            &[other],
            "tx-r2",
            CITIZEN,
            RETURN,
        ))
        .await;
    assert_eq!(a.returned(&creds), (401, Some("tx-r2".to_string())));

    // A pid that does not decrypt: 400.
    let a = b
        .get(&format!(
            "{}/service/{}/{}/tx-r3?returnUrl={}&pid=AAAA",
            w.srv.url,
            creds.client_id,
            percent_encode(&segment(&ids)),
            percent_encode(RETURN)
        ))
        .await;
    assert_eq!(a.returned(&creds), (400, Some("tx-r3".to_string())));

    // An unknown service: a plain 404, no redirect.
    let a = b
        .get(&format!(
            "{}/service/CLI.UNKNOWN001/QUJD/tx-r4?returnUrl=x&pid=y",
            w.srv.url
        ))
        .await;
    assert_eq!(a.status, 404);
    assert!(a.location.is_none());

    // A stopped dataset in mode A: 501, and the SP-API hears unable_to_deliver (§5.3 step 10).
    let mut dp = w.p.store.get_dp(&ids[0]).unwrap().unwrap();
    dp.status = "stopped".into();
    w.p.store.update_dp(&dp).unwrap();
    let a = b
        .get(&redirect_url(
            &w.srv.url, &creds, &ids, "tx-r5", CITIZEN, RETURN,
        ))
        .await;
    assert_eq!(a.returned(&creds), (501, Some("tx-r5".to_string())));
    let calls = w.sp_api_calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["tx_id"], "tx-r5");
    assert_eq!(calls[0]["unable_to_deliver"], serde_json::json!([ids[0]]));
    assert!(calls[0].get("secret_key").is_none());
    // Its ticket answers 504 on the MyData-API (§8.1, D22).
    let ticket = calls[0]["permission_ticket"].as_str().unwrap();
    let (status, _) = poll_until_ready(&w.srv.url, ticket, "tx-r5").await;
    assert_eq!(status, 504);
}

#[actix_web::test]
async fn lockout_and_expiry() {
    let w = world().await;
    let ids = pii_datasets(1);
    let creds = w.register(PackagingMode::A, &ids);
    let mut b = Browser::new(&w.srv.url);
    let (flow, page) = b
        .open(&redirect_url(
            &w.srv.url, &creds, &ids, "tx-lock", CITIZEN, RETURN,
        ))
        .await;
    let mut p = b.through_basic(&flow, page, CITIZEN, "0770101").await;
    for i in 0..5 {
        p = b
            .submit(
                &flow,
                "pii",
                &p.csrf(),
                &[
                    ("nhi_card_number", "000000000000"),
                    ("household_number", "A0000000"),
                ],
            )
            .await;
        assert_eq!(p.step(), "identity");
        if i < 4 {
            assert!(
                p.body.contains(&format!("{} attempts left", 4 - i)),
                "{}",
                p.body
            );
        }
    }
    assert!(p.body.contains("id=\"locked\""));
    // While locked, even the right documents are not judged.
    p = b
        .submit(
            &flow,
            "pii",
            &p.csrf(),
            &[
                ("nhi_card_number", "000018342761"),
                ("household_number", "A2034517"),
            ],
        )
        .await;
    assert_eq!(p.step(), "identity");
    assert!(p.body.contains("id=\"locked\""));
    // 15 minutes later they are.
    w.clock.advance(900);
    let p = b.get(&flow).await;
    assert!(!p.body.contains("id=\"locked\""));
    let p = b
        .submit(
            &flow,
            "pii",
            &p.csrf(),
            &[
                ("nhi_card_number", "000018342761"),
                ("household_number", "A2034517"),
            ],
        )
        .await;
    assert_eq!(p.step(), "consent");

    // Idle for more than 1,200 s before consent: 408.
    w.clock.advance(1_201);
    let mut b2 = Browser::new(&w.srv.url);
    let (flow2, _) = b2
        .open(&redirect_url(
            &w.srv.url, &creds, &ids, "tx-idle", CITIZEN, RETURN,
        ))
        .await;
    w.clock.advance(1_201);
    let a = b2.get(&flow2).await;
    assert_eq!(a.returned(&creds), (408, Some("tx-idle".to_string())));
    // The first transaction, idle as long, ends the same way; its personal data is gone at once.
    let a = b.get(&flow).await;
    assert_eq!(a.returned(&creds), (408, Some("tx-lock".to_string())));
    let tx =
        w.p.store
            .find_tx(&creds.client_id, "tx-lock")
            .unwrap()
            .unwrap();
    assert_eq!(tx.code, Some(408));
    assert!(tx.pid_sealed.is_none() && tx.return_url.is_none());
    // A flow page seen again afterwards is simply refused.
    assert_eq!(b.get(&flow).await.status, 403);
}

#[actix_web::test]
async fn email_one_time_password() {
    let w = world().await;
    let ids = vec!["API.OTPDEMO001".to_string()];
    let creds = w.register(PackagingMode::A, &ids);
    let mut b = Browser::new(&w.srv.url);
    let (flow, page) = b
        .open(&redirect_url(
            &w.srv.url, &creds, &ids, "tx-otp", CITIZEN, RETURN,
        ))
        .await;
    let p = b.through_basic(&flow, page, CITIZEN, "0770101").await;
    assert!(p.body.contains("id=\"method-otp\""));
    assert!(!p.body.contains("id=\"method-pii\""));
    assert!(p.body.contains("wa***@example.test"));
    let p = b
        .submit(&flow, "otp-send", &p.csrf(), &[("channel", "email")])
        .await;
    assert!(p.body.contains("id=\"submit-otp\""), "{}", p.body);
    let mail = w.mails.lock().unwrap().last().cloned().expect("an e-mail");
    assert!(mail.contains("wang.daming@example.test"));
    let code = code_in(&mail);
    // A second code within 120 s is refused.
    let p = b
        .submit(&flow, "otp-send", &p.csrf(), &[("channel", "email")])
        .await;
    assert_eq!(w.mails.lock().unwrap().len(), 1);
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let p = b.submit(&flow, "otp", &p.csrf(), &[("code", wrong)]).await;
    assert!(p.body.contains("attempts left"));
    let p = b.submit(&flow, "otp", &p.csrf(), &[("code", &code)]).await;
    assert_eq!(p.step(), "consent", "{}", p.body);
    let a = b
        .submit(&flow, "consent", &p.csrf(), &[("decision", "agree")])
        .await;
    assert_eq!(a.returned(&creds), (200, Some("tx-otp".to_string())));
    let tx =
        w.p.store
            .find_tx(&creds.client_id, "tx-otp")
            .unwrap()
            .unwrap();
    assert_eq!(tx.identity_method.as_deref(), Some("OTP"));
}

#[actix_web::test]
async fn no_usable_method_goes_back_with_403() {
    let w = world().await;
    let ids = vec![cer_only_dataset()];
    let creds = w.register(PackagingMode::A, &ids);
    let mut b = Browser::new(&w.srv.url);
    let (flow, page) = b
        .open(&redirect_url(
            &w.srv.url, &creds, &ids, "tx-cer", CITIZEN, RETURN,
        ))
        .await;
    let p = b.through_basic(&flow, page, CITIZEN, "0770101").await;
    assert!(p.body.contains("id=\"no-method\""));
    assert!(p.body.contains("(CER)"));
    let a = b.submit(&flow, "cancel", &p.csrf(), &[]).await;
    assert_eq!(a.returned(&creds), (403, Some("tx-cer".to_string())));
}

/// The pages in headless Chromium with JavaScript disabled (Selenium, tests/interop/browser_flow.py):
/// plain HTML forms carry the citizen from the SP's redirect to the SP's return page.
#[actix_web::test]
async fn headless_chromium_without_javascript() {
    let w = world().await;
    let ids = pii_datasets(2);
    let ret = w.sp_return_url();
    let creds = w.register_returning(PackagingMode::B, &ids, &ret);
    let url = redirect_url(&w.srv.url, &creds, &ids, "tx-browser", CITIZEN, &ret);
    let args = serde_json::json!({
        "url": url,
        "national_id": CITIZEN,
        "birth_date": "0770101",
        "nhi_card_number": "000018342761",
        "household_number": "A2034517",
        "decision": "agree",
        "wait_for": "/return",
    });
    let py = std::env::var("MYDATA_PYTHON")
        .expect("MYDATA_PYTHON: run the tests with bash tests/run.sh");
    let dir = std::env::var("MYDATA_INTEROP_DIR").expect("MYDATA_INTEROP_DIR");
    let out = actix_web::rt::task::spawn_blocking(move || {
        std::process::Command::new(py)
            .arg(format!("{dir}/browser_flow.py"))
            .arg(args.to_string())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "browser_flow.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        r["steps"],
        serde_json::json!(["terms", "basic", "identity", "consent"])
    );
    let rows = r["consent_rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows[0].as_str().unwrap().contains(ids[0].as_str()));
    let final_url = r["final_url"].as_str().unwrap();
    assert!(final_url.starts_with(&ret), "{final_url}");
    assert!(
        r["final_text"]
            .as_str()
            .unwrap()
            .contains("SP return page: code=200&tx_id=")
    );
    let a = Answer {
        status: 302,
        location: Some(final_url.to_string()),
        body: String::new(),
    };
    assert_eq!(
        a.returned_to(&creds, &ret),
        (200, Some("tx-browser".to_string()))
    );
    assert_eq!(w.sp_api_calls().len(), 1);
}
