//! The example SP in-process on 127.0.0.1, driven the way the platform and a browser drive it:
//! `POST /start` (cookie + redirect), `POST /sp-api` (an `SpApiBody` as the platform writes it),
//! `GET /return` (an encrypted `tx_id` and the cookie), and a small fake MyData-API serving a real
//! JWE of a real SP package signed by the sandbox DP key.

use std::collections::VecDeque;
use std::io::Cursor;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use example_sp::Config;
use mydata_protocol::codes::DatasetCode;
use mydata_protocol::date::UnixTime;
use mydata_protocol::flow::{SpApiBody, SpApiDelivery, percent_encode};
use mydata_protocol::ids::{ClientId, PermissionTicket, ResourceId, SecretKey};
use mydata_protocol::jwe::{self, ContentIv, JweMode};
use mydata_protocol::package::dp::{BuildOptions, DpPackageBuilder, DpSigner};
use mydata_protocol::package::sp::{self, Dataset, Outcome, PackagingMode};
use mydata_protocol::param::ParamCipher;
use mydata_sp::poll::PollOptions;
use serde_json::Value;

const MOI_KEY: &[u8] = include_bytes!("../../../fixtures/pki/dp-moi.key");
const MOI_CERT: &[u8] = include_bytes!("../../../fixtures/pki/dp-moi.pem");
const UNTRUSTED_KEY: &[u8] = include_bytes!("../../../fixtures/pki/dp-untrusted.key");
const UNTRUSTED_CERT: &[u8] = include_bytes!("../../../fixtures/pki/dp-untrusted.pem");

// --- a fake MyData-API ---------------------------------------------------------------------------

#[derive(Default)]
struct FakePlatform {
    answers: Mutex<VecDeque<(u16, Option<&'static str>, String)>>,
    seen: Mutex<Vec<(Option<String>, Option<String>)>>,
}

async fn data(req: HttpRequest, p: web::Data<FakePlatform>) -> HttpResponse {
    let h = |n: &str| {
        req.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    p.seen
        .lock()
        .unwrap()
        .push((h("permission_ticket"), h("tx_id")));
    let next = p.answers.lock().unwrap().pop_front();
    let (status, retry, body) = next.unwrap_or((201, None, String::new()));
    let mut b = HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap());
    if let Some(r) = retry {
        b.insert_header(("retry-after", r));
    }
    if status == 200 {
        b.insert_header(("content-type", "application/jwe"));
    }
    b.body(body)
}

fn start_platform() -> (String, Arc<FakePlatform>, actix_web::dev::ServerHandle) {
    let p = Arc::new(FakePlatform::default());
    let d = web::Data::from(p.clone());
    let srv = HttpServer::new(move || {
        App::new()
            .app_data(d.clone())
            .route("/service/data", web::get().to(data))
    })
    .workers(1)
    .bind("127.0.0.1:0")
    .unwrap();
    let addr = srv.addrs()[0];
    let srv = srv.run();
    let h = srv.handle();
    actix_web::rt::spawn(srv);
    (format!("http://{addr}"), p, h)
}

// --- packages ------------------------------------------------------------------------------------

fn dp_package(key: &[u8], cert: &[u8], name: &str, bytes: &[u8]) -> Vec<u8> {
    let signer = DpSigner::from_pem(key, cert).unwrap();
    let mut b = DpPackageBuilder::new(Cursor::new(Vec::new()), &signer, BuildOptions::default());
    b.add_file(name, &mut &bytes[..]).unwrap();
    b.finish().unwrap().into_inner()
}

const LOW_INCOME: &[u8] = r#"{"name":"<林淑芬>","status":"low_income"}"#.as_bytes();

/// The SP package of the two default datasets: the first from the sandbox MOI key, the second
/// either from the same key, from an untrusted DP, or failed.
fn sp_package(mode: PackagingMode, second: Result<bool, DatasetCode>) -> Vec<u8> {
    let dp1 = dp_package(MOI_KEY, MOI_CERT, "low_income.json", LOW_INCOME);
    let dp2 = match second {
        Ok(true) => dp_package(MOI_KEY, MOI_CERT, "disability.json", b"{\"level\":1}"),
        _ => dp_package(UNTRUSTED_KEY, UNTRUSTED_CERT, "disability.json", b"{}"),
    };
    let (mut r1, mut r2) = (&dp1[..], &dp2[..]);
    let datasets = vec![
        Dataset {
            resource_id: "API.2RXHOGTXIC".parse().unwrap(),
            resource_name: "低收及中低收列冊資料".into(),
            outcome: Outcome::Package(&mut r1),
        },
        Dataset {
            resource_id: "API.5XQQ2IWD37".parse().unwrap(),
            resource_name: "身心障礙資格".into(),
            outcome: match second {
                Err(c) => Outcome::Failed(c),
                Ok(_) => Outcome::Package(&mut r2),
            },
        },
    ];
    sp::build(Cursor::new(Vec::new()), mode, datasets)
        .unwrap()
        .0
        .into_inner()
}

// --- the browser ---------------------------------------------------------------------------------

fn client() -> awc::Client {
    awc::Client::builder().disable_redirects().finish()
}

struct Started {
    tx_id: String,
    cookie: String,
    location: String,
}

async fn start_tx(sp_url: &str, form: &str) -> Started {
    start_tx_with(sp_url, form, None).await
}

async fn start_tx_with(sp_url: &str, form: &str, cookie: Option<&str>) -> Started {
    let mut req = client()
        .post(format!("{sp_url}/start"))
        .insert_header(("content-type", "application/x-www-form-urlencoded"));
    if let Some(c) = cookie {
        req = req.insert_header(("cookie", c));
    }
    let resp = req.send_body(form.to_owned()).await.unwrap();
    assert_eq!(resp.status(), 303);
    let location = resp
        .headers()
        .get("location")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let set_cookie = resp.headers().get("set-cookie").unwrap().to_str().unwrap();
    assert!(set_cookie.contains("HttpOnly"), "{set_cookie}");
    assert!(set_cookie.contains("SameSite=Lax"), "{set_cookie}");
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    let path = location.split('?').next().unwrap();
    let tx_id = path.rsplit('/').next().unwrap().to_owned();
    Started {
        tx_id,
        cookie,
        location,
    }
}

async fn get(url: &str, cookie: Option<&str>) -> (u16, String) {
    let mut req = client().get(url);
    if let Some(c) = cookie {
        req = req.insert_header(("cookie", c));
    }
    let mut resp = req.send().await.unwrap();
    let body = resp.body().limit(1 << 20).await.unwrap();
    (
        resp.status().as_u16(),
        String::from_utf8(body.to_vec()).unwrap(),
    )
}

async fn post_sp_api(sp_url: &str, body: String) -> u16 {
    client()
        .post(format!("{sp_url}/sp-api"))
        .insert_header(("content-type", "application/json; charset=utf-8"))
        .send_body(body)
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn status(sp_url: &str, tx_id: &str) -> Value {
    let (code, body) = get(&format!("{sp_url}/api/tx/{tx_id}"), None).await;
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// Polls the JSON status until it leaves "waiting" (bounded by a count, not by time).
async fn settled(sp_url: &str, tx_id: &str) -> Value {
    for _ in 0..3000 {
        let s = status(sp_url, tx_id).await;
        if s["state"] != "waiting" {
            return s;
        }
        actix_web::rt::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the transaction never settled");
}

fn test_config(base: Config, platform_url: &str) -> Config {
    let mut c = base
        .with_platform_url(platform_url)
        .with_listen("127.0.0.1:0".parse().unwrap());
    c.poll = PollOptions {
        min_wait: Duration::ZERO,
        max_wait: Duration::from_millis(1),
        ..PollOptions::default()
    };
    // 2027-01-01T00:00:00Z, inside the sandbox certificates' validity.
    c.verify_at = Some(UnixTime(1_798_761_600));
    c
}

fn platform_cipher(c: &Config) -> ParamCipher {
    c.sp.cipher()
}

fn sp_api_body(c: &Config, tx_id: &str, ticket: &PermissionTicket, key: &SecretKey) -> String {
    SpApiBody {
        tx_id: tx_id.parse().unwrap(),
        api_key: c.sp.api_key.clone(),
        permission_ticket: ticket.clone(),
        delivery: SpApiDelivery::SecretKey(platform_cipher(c).encrypt(key.as_str()).unwrap()),
    }
    .to_json()
}

fn return_query(c: &Config, code: u16, tx_id: &str) -> String {
    let enc = platform_cipher(c).encrypt(tx_id).unwrap();
    format!("code={code}&tx_id={}", percent_encode(&enc))
}

// --- tests ---------------------------------------------------------------------------------------

#[actix_web::test]
async fn full_flow_mode_a_cbc() {
    let (platform_url, platform, ph) = start_platform();
    let cfg = test_config(Config::sandbox001(), &platform_url);
    let sp = example_sp::spawn(cfg.clone()).await.unwrap();
    let url = sp.url();

    // The form offers the default datasets, checked.
    let (code, page) = get(&format!("{url}/"), None).await;
    assert_eq!(code, 200);
    assert!(page.contains("value=\"API.2RXHOGTXIC\" checked"), "{page}");
    assert!(page.contains("低收及中低收列冊資料"));

    let s = start_tx(
        &url,
        "pid=f228710436&resource=API.2RXHOGTXIC&resource=API.5XQQ2IWD37&caseNumber=",
    )
    .await;
    assert!(
        s.location.starts_with(&format!(
            "{platform_url}/service/CLI.SANDBOX001/QVBJLjJSWEhPR1RYSUM6QVBJLjVYUVEySVdEMzc=/"
        )),
        "{}",
        s.location
    );
    assert!(
        s.location
            .contains("returnUrl=http%3A%2F%2F127.0.0.1%3A8090%2Freturn&pid=")
    );
    assert_eq!(status(&url, &s.tx_id).await["state"], "started");

    // The platform's SP-API call: a wrong key is refused, the right one accepted, once.
    let ticket = PermissionTicket::generate().unwrap();
    let key = SecretKey::generate().unwrap();
    let mut wrong = cfg.clone();
    wrong.sp.api_key = Some("SandboxApiKey0000000000000000002".into());
    assert_eq!(
        post_sp_api(&url, sp_api_body(&wrong, &s.tx_id, &ticket, &key)).await,
        403
    );
    assert_eq!(post_sp_api(&url, "{}".into()).await, 400);
    assert_eq!(
        post_sp_api(&url, sp_api_body(&cfg, "unknown-tx", &ticket, &key)).await,
        404
    );
    assert_eq!(
        post_sp_api(&url, sp_api_body(&cfg, &s.tx_id, &ticket, &key)).await,
        200
    );
    assert_eq!(
        post_sp_api(&url, sp_api_body(&cfg, &s.tx_id, &ticket, &key)).await,
        409
    );
    assert_eq!(status(&url, &s.tx_id).await["sp_api_received"], true);

    // The MyData-API: not ready once, then the JWE of a real package.
    let client_id: ClientId = "CLI.SANDBOX001".parse().unwrap();
    let zip = sp_package(PackagingMode::A, Ok(true));
    let compact = jwe::encrypt_package(
        &client_id,
        &zip,
        &key,
        JweMode::Cbc,
        ContentIv::SpCbcIv(&cfg.sp.cbc_iv),
    )
    .unwrap();
    platform
        .answers
        .lock()
        .unwrap()
        .extend([(429, Some("1"), String::new()), (200, None, compact)]);

    let q = return_query(&cfg, 200, &s.tx_id);
    // Not bound to this browser: refused, and nothing starts.
    let (code, page) = get(&format!("{url}/return?{q}"), None).await;
    assert_eq!(code, 403);
    assert!(page.contains("Refused"));
    let other = "example_sp_session=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    assert_eq!(get(&format!("{url}/return?{q}"), Some(other)).await.0, 403);
    assert_eq!(status(&url, &s.tx_id).await["state"], "started");
    assert!(platform.seen.lock().unwrap().is_empty());

    // The right browser: the waiting page (or already the result), then delivered + verified.
    let (code, page) = get(&format!("{url}/return?{q}"), Some(&s.cookie)).await;
    assert_eq!(code, 200);
    assert!(page.contains(&s.tx_id));
    let st = settled(&url, &s.tx_id).await;
    assert_eq!(st["state"], "delivered", "{st}");
    assert_eq!(st["code"], 200);
    assert_eq!(st["verified"], true, "{st}");
    assert_eq!(st["error"], Value::Null);
    let ds = st["datasets"].as_array().unwrap();
    assert_eq!(ds.len(), 2);
    assert_eq!(ds[0]["resource_id"], "API.2RXHOGTXIC");
    assert_eq!(ds[0]["code"], 200);
    assert_eq!(ds[0]["files"][0]["name"], "low_income.json");
    assert_eq!(ds[0]["files"][0]["size"], LOW_INCOME.len());
    assert_eq!(ds[1]["files"][0]["name"], "disability.json");

    // The platform saw the ticket and tx_id headers on both polls.
    let seen = platform.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    for (t, x) in &seen {
        assert_eq!(t.as_deref(), Some(ticket.as_str()));
        assert_eq!(x.as_deref(), Some(s.tx_id.as_str()));
    }

    // The result page: no refresh, file names, JSON content escaped.
    let (code, page) = get(&format!("{url}/return?{q}"), Some(&s.cookie)).await;
    assert_eq!(code, 200);
    assert!(!page.contains("http-equiv=\"refresh\""));
    assert!(page.contains("low_income.json"));
    assert!(page.contains("&lt;林淑芬&gt;"), "{page}");
    assert!(!page.contains("<林淑芬>"));
    assert!(page.contains("verified"));
    // Returning again does not poll again.
    assert_eq!(platform.seen.lock().unwrap().len(), 2);
    assert_eq!(sp.status(&s.tx_id).unwrap()["state"], "delivered");

    sp.stop().await;
    ph.stop(true).await;
}

#[actix_web::test]
async fn mode_b_gcm_untrusted_dp_and_other_outcomes() {
    let (platform_url, platform, ph) = start_platform();
    let cfg = test_config(Config::sandbox002(), &platform_url);
    let sp = example_sp::spawn(cfg.clone()).await.unwrap();
    let url = sp.url();

    // Mode B, GCM: the second DP is not trusted; the first still shows and verifies.
    let s = start_tx(
        &url,
        "pid=B162503988&resources=API.2RXHOGTXIC%2CAPI.5XQQ2IWD37",
    )
    .await;
    assert!(s.location.contains("/service/CLI.SANDBOX002/"));
    let ticket = PermissionTicket::generate().unwrap();
    let key = SecretKey::generate().unwrap();
    assert_eq!(
        post_sp_api(&url, sp_api_body(&cfg, &s.tx_id, &ticket, &key)).await,
        200
    );
    let client_id: ClientId = "CLI.SANDBOX002".parse().unwrap();
    let zip = sp_package(PackagingMode::B, Ok(false));
    let compact =
        jwe::encrypt_package(&client_id, &zip, &key, JweMode::Gcm, ContentIv::Random).unwrap();
    platform
        .answers
        .lock()
        .unwrap()
        .push_back((200, None, compact));
    let q = return_query(&cfg, 200, &s.tx_id);
    assert_eq!(
        get(&format!("{url}/return?{q}"), Some(&s.cookie)).await.0,
        200
    );
    let st = settled(&url, &s.tx_id).await;
    assert_eq!(st["state"], "delivered", "{st}");
    assert_eq!(st["verified"], false);
    assert_eq!(st["datasets"][0]["verified"], true);
    assert_eq!(st["datasets"][1]["verified"], false);
    assert_eq!(st["datasets"][1]["files"].as_array().unwrap().len(), 0);
    assert!(
        st["error"].as_str().unwrap().contains("API.5XQQ2IWD37"),
        "{st}"
    );

    // A refusal (205) ends the transaction without polling.
    let polls_before = platform.seen.lock().unwrap().len();
    let s2 = start_tx_with(
        &url,
        "pid=A120345672&resource=API.2RXHOGTXIC",
        Some(&s.cookie),
    )
    .await;
    // Same browser: the cookie is kept.
    assert_eq!(s2.cookie, s.cookie);
    let q = return_query(&cfg, 205, &s2.tx_id);
    let (code, page) = get(&format!("{url}/return?{q}"), Some(&s.cookie)).await;
    assert_eq!(code, 200);
    assert!(page.contains("您已拒絕提供資料"), "{page}");
    let st = status(&url, &s2.tx_id).await;
    assert_eq!(st["state"], "ended");
    assert_eq!(st["code"], 205);
    assert_eq!(platform.seen.lock().unwrap().len(), polls_before);

    // unable_to_deliver then 504: recorded, shown, nothing polled.
    let s3 = start_tx(&url, "pid=A120345672&resource=API.5XQQ2IWD37").await;
    let body = SpApiBody {
        tx_id: s3.tx_id.parse().unwrap(),
        api_key: cfg.sp.api_key.clone(),
        permission_ticket: PermissionTicket::generate().unwrap(),
        delivery: SpApiDelivery::UnableToDeliver(vec![
            "API.5XQQ2IWD37".parse::<ResourceId>().unwrap(),
        ]),
    }
    .to_json();
    assert_eq!(post_sp_api(&url, body).await, 200);
    let q = return_query(&cfg, 504, &s3.tx_id);
    let (code, page) = get(&format!("{url}/return?{q}"), Some(&s3.cookie)).await;
    assert_eq!(code, 200);
    assert!(page.contains("API.5XQQ2IWD37"));
    let st = status(&url, &s3.tx_id).await;
    assert_eq!(st["state"], "ended");
    assert_eq!(st["unable_to_deliver"][0], "API.5XQQ2IWD37");

    // A MyData-API 504 after code 200: failed with the typed reason.
    let s4 = start_tx(&url, "pid=A120345672&resource=API.2RXHOGTXIC").await;
    assert_eq!(
        post_sp_api(&url, sp_api_body(&cfg, &s4.tx_id, &ticket, &key)).await,
        200
    );
    platform
        .answers
        .lock()
        .unwrap()
        .push_back((504, None, String::new()));
    let q = return_query(&cfg, 200, &s4.tx_id);
    assert_eq!(
        get(&format!("{url}/return?{q}"), Some(&s4.cookie)).await.0,
        200
    );
    let st = settled(&url, &s4.tx_id).await;
    assert_eq!(st["state"], "failed");
    assert!(st["error"].as_str().unwrap().contains("504"), "{st}");

    // Bad input on the form and on the return.
    let resp = client()
        .post(format!("{url}/start"))
        .insert_header(("content-type", "application/x-www-form-urlencoded"))
        .send_body("pid=A123456780&resource=API.2RXHOGTXIC")
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let resp = client()
        .post(format!("{url}/start"))
        .insert_header(("content-type", "application/x-www-form-urlencoded"))
        .send_body("pid=A120345672&resource=%3Cscript%3E")
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let (code, page) = get(
        &format!("{url}/return?code=200&tx_id=bm90LWVuY3J5cHRlZA%3D%3D"),
        None,
    )
    .await;
    assert_eq!(code, 400);
    assert!(!page.contains("<script"));
    assert_eq!(get(&format!("{url}/return?code=abc"), None).await.0, 400);
    assert_eq!(get(&format!("{url}/api/tx/nope"), None).await.0, 404);

    sp.stop().await;
    ph.stop(true).await;
}

#[actix_web::test]
async fn spawn_on_a_bound_listener_with_its_own_return_url() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let base = format!("http://{addr}");
    let cfg = Config::sandbox001()
        .with_platform_url("http://127.0.0.1:9")
        .with_public_url(&format!("{base}/"));
    let sp = example_sp::spawn_on(listener, cfg).await.unwrap();
    assert_eq!(sp.addr(), addr);
    assert_eq!(sp.return_url(), format!("{base}/return"));
    assert_eq!(sp.sp_api_url(), format!("{base}/sp-api"));
    let s = start_tx(&sp.url(), "pid=A120345672&resource=API.2RXHOGTXIC").await;
    let want = format!(
        "returnUrl={}&pid=",
        percent_encode(&format!("{base}/return"))
    );
    assert!(
        s.location
            .starts_with("http://127.0.0.1:9/service/CLI.SANDBOX001/")
    );
    assert!(s.location.contains(&want), "{}", s.location);
    sp.stop().await;
}

#[actix_web::test]
async fn conformance_hook_starts_and_reports() {
    let (platform_url, platform, ph) = start_platform();
    let cfg = test_config(Config::sandbox001(), &platform_url);
    let sp = example_sp::spawn(cfg.clone()).await.unwrap();
    let url = sp.url();

    // Bad input: not JSON, an invalid pid, no dataset; an unknown tx_id.
    for body in [
        "nope",
        r#"{"pid":"A123456780","resources":["API.2RXHOGTXIC"]}"#,
        r#"{"pid":"A120345672","resources":[]}"#,
    ] {
        let resp = client()
            .post(format!("{url}/conformance/start"))
            .insert_header(("content-type", "application/json"))
            .send_body(body)
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{body}");
    }
    assert_eq!(
        get(&format!("{url}/conformance/tx/nope"), None).await.0,
        404
    );

    // A start: the redirect the form would send, and the session cookie.
    let mut resp = client()
        .post(format!("{url}/conformance/start"))
        .send_json(&serde_json::json!({
            "pid": "A120345672",
            "resources": ["API.2RXHOGTXIC"],
            "caseNumber": "C-1",
        }))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let cookie = resp
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let v: Value = resp.json().await.unwrap();
    let tx_id = v["tx_id"].as_str().unwrap().to_owned();
    let redirect = v["redirect"].as_str().unwrap();
    assert!(
        redirect.starts_with(&format!(
            "{platform_url}/service/CLI.SANDBOX001/QVBJLjJSWEhPR1RYSUM=/{tx_id}?returnUrl="
        )),
        "{redirect}"
    );
    assert!(redirect.ends_with("&caseNumber=C-1"), "{redirect}");
    let hook = |t: String| {
        let url = url.clone();
        async move {
            let (code, body) = get(&format!("{url}/conformance/tx/{t}"), None).await;
            assert_eq!(code, 200, "{body}");
            serde_json::from_str::<Value>(&body).unwrap()
        }
    };
    let st = hook(tx_id.clone()).await;
    assert_eq!(st["state"], "started");
    assert_eq!(st["polls"], 0);
    assert_eq!(st["code"], Value::Null);

    // Delivered: the files by name; one poll counted.
    let ticket = PermissionTicket::generate().unwrap();
    let key = SecretKey::generate().unwrap();
    assert_eq!(
        post_sp_api(&url, sp_api_body(&cfg, &tx_id, &ticket, &key)).await,
        200
    );
    let zip = {
        let dp = dp_package(MOI_KEY, MOI_CERT, "low_income.json", LOW_INCOME);
        let mut r = &dp[..];
        sp::build(
            Cursor::new(Vec::new()),
            PackagingMode::A,
            vec![Dataset {
                resource_id: "API.2RXHOGTXIC".parse().unwrap(),
                resource_name: "低收及中低收列冊資料".into(),
                outcome: Outcome::Package(&mut r),
            }],
        )
        .unwrap()
        .0
        .into_inner()
    };
    let client_id: ClientId = "CLI.SANDBOX001".parse().unwrap();
    let compact = jwe::encrypt_package(
        &client_id,
        &zip,
        &key,
        JweMode::Cbc,
        ContentIv::SpCbcIv(&cfg.sp.cbc_iv),
    )
    .unwrap();
    platform
        .answers
        .lock()
        .unwrap()
        .push_back((200, None, compact));
    let q = return_query(&cfg, 200, &tx_id);
    assert_eq!(
        get(&format!("{url}/return?{q}"), Some(&cookie)).await.0,
        200
    );
    settled(&url, &tx_id).await;
    let st = hook(tx_id.clone()).await;
    assert_eq!(st["state"], "delivered", "{st}");
    assert_eq!(st["code"], 200);
    assert_eq!(st["polls"], 1);
    assert_eq!(st["datasets"][0]["files"][0], "low_income.json");
    // The SHA-256 of the bytes the SP kept (spec/conformance-sp.md §2.2).
    let sent = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(LOW_INCOME))
    };
    assert_eq!(st["datasets"][0]["sha256"][0], sent.as_str());
    assert_eq!(st["error_rule"], Value::Null);

    // A 403 on the MyData-API: expired. The hook's start binds to the browser like the form.
    let mut resp = client()
        .post(format!("{url}/conformance/start"))
        .send_json(&serde_json::json!({"pid": "A120345672", "resources": ["API.2RXHOGTXIC"]}))
        .await
        .unwrap();
    let cookie2 = resp
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    assert_ne!(cookie2, cookie);
    let v: Value = resp.json().await.unwrap();
    let t2 = v["tx_id"].as_str().unwrap().to_owned();
    assert_ne!(t2, tx_id);
    let ticket2 = PermissionTicket::generate().unwrap();
    assert_eq!(
        post_sp_api(&url, sp_api_body(&cfg, &t2, &ticket2, &key)).await,
        200
    );
    platform
        .answers
        .lock()
        .unwrap()
        .push_back((403, None, String::new()));
    let q = return_query(&cfg, 200, &t2);
    assert_eq!(
        get(&format!("{url}/return?{q}"), Some(&cookie)).await.0,
        403
    );
    assert_eq!(
        get(&format!("{url}/return?{q}"), Some(&cookie2)).await.0,
        200
    );
    settled(&url, &t2).await;
    let st = hook(t2.clone()).await;
    assert_eq!(st["state"], "expired", "{st}");
    assert_eq!(st["polls"], 1);
    assert_eq!(st["datasets"].as_array().unwrap().len(), 0);
    sp.stop().await;
    ph.stop(true).await;
}
