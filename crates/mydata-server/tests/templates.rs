//! DP request templates (spec §9.1–9.2, D28) over real HTTP on 127.0.0.1: datasets registered
//! with a template call a receiver that records exactly what arrived (query string, headers,
//! body). Also the whole path after consent (the citizen's claims reach the template, the SP
//! manifest names the dataset), and the MyData-API's source-IP index.

mod common;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use mydata_protocol::codes::{DatasetCode, ReturnCode};
use mydata_protocol::date::UnixTime;
use mydata_protocol::flow;
use mydata_protocol::ids::{ClientId, PermissionTicket, SecretKey};
use mydata_protocol::jwe::{self, JweMode};
use mydata_protocol::package::dp::VerifyOptions;
use mydata_protocol::package::sp::{self, PackagingMode};
use mydata_protocol::param::{ParamCipher, ParamMode};
use mydata_protocol::template::Template;
use mydata_server::auth::{CitizenClaims, KNOWN_CLAIMS};
use mydata_server::clock::{ManualClock, SharedClock};
use mydata_server::config::Config;
use mydata_server::dpcall;
use mydata_server::engine::{self, DataAnswer, state};
use mydata_server::error::ServerError;
use mydata_server::http::spawn;
use mydata_server::platform::{NewDp, NewSp, Platform};
use mydata_server::secrets::MasterKey;
use mydata_server::storage::sqlite::SqliteStore;
use mydata_server::storage::{DpMethod, DpRecord, SpRecord, TxRecord};
use serde_json::{Value, json};

const UID: &str = "0b7c7e0e-5d7a-4c1f-8e55-7f4a3b2c1d01";
const TOKEN: &str = "tok-ABC_123.xyz";
/// A name hostile to every location: `&`, `=`, `#`, `"`, `\`, `+`, a space and non-ASCII.
const NAME: &str = "王 \"小明\" & 陳=#1+2\\";

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    query: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&[u8]> {
        let mut it = self.headers.iter().filter(|(k, _)| k == name);
        let first = it.next().map(|(_, v)| v.as_slice());
        assert!(it.next().is_none(), "header {name} sent twice");
        first
    }
    fn header_str(&self, name: &str) -> Option<&str> {
        self.header(name).map(|v| std::str::from_utf8(v).unwrap())
    }
}

type Log = Arc<Mutex<Vec<Seen>>>;

async fn record(log: web::Data<Log>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    log.lock().unwrap().push(Seen {
        method: req.method().to_string(),
        path: req.path().to_string(),
        query: req.query_string().to_string(),
        headers: req
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.as_bytes().to_vec()))
            .collect(),
        body: body.to_vec(),
    });
    HttpResponse::NoContent().finish()
}

/// A DP stand-in on 127.0.0.1 that records every request and answers 204.
fn start_receiver() -> (String, Log, actix_web::dev::ServerHandle) {
    let log: Log = Arc::new(Mutex::new(Vec::new()));
    let l2 = log.clone();
    let srv = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(l2.clone()))
            .default_service(web::to(record))
    })
    .workers(1)
    .bind("127.0.0.1:0")
    .unwrap();
    let addr = srv.addrs()[0];
    let srv = srv.run();
    let h = srv.handle();
    actix_web::rt::spawn(srv);
    (format!("http://{addr}"), log, h)
}

fn platform(dir: &std::path::Path, clock: SharedClock) -> Arc<Platform> {
    let config = Config {
        data_dir: dir.to_path_buf(),
        // Outside the sandbox the platform needs the CA its DPs chain to (spec D35).
        dp_trust_anchors: vec![
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../fixtures/pki/sandbox-root-ca.pem"
            )
            .into(),
        ],
        ..Config::default()
    };
    let store = Arc::new(SqliteStore::open(&dir.join("mydata.sqlite")).unwrap());
    Arc::new(
        Platform::new(store, MasterKey::generate().unwrap(), clock, config)
            .unwrap()
            // Production rules (D35) against loopback HTTP peers (D49).
            .with_plain_http(true),
    )
}

fn real_now() -> UnixTime {
    UnixTime(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64,
    )
}

fn new_dp(id: &str, endpoint: String, method: DpMethod, template: Option<&str>) -> NewDp {
    NewDp {
        tls_ca: None,
        resource_id: Some(id.parse().unwrap()),
        name: "車籍資料".into(),
        provider: "交通部".into(),
        scopes: vec!["mvdis.car.read".into()],
        secret: None,
        endpoint,
        method,
        claims: KNOWN_CLAIMS.iter().map(|c| c.to_string()).collect(),
        identity_methods: vec!["PII".into()],
        template: template.map(|t| Template::from_json(t).unwrap()),
    }
}

fn citizen() -> CitizenClaims {
    CitizenClaims {
        sub: "sub-1".into(),
        uid: "a120345672".into(),
        uid_type: "NID".into(),
        birthdate: Some("1988-01-01".into()),
        name: Some(NAME.into()),
        email: Some("wang+dp@example.tw".into()),
    }
}

async fn run(dp: &DpRecord, values: &mydata_protocol::template::Values) -> dpcall::SeriesResult {
    let clock: SharedClock = Arc::new(ManualClock::new(real_now()));
    dpcall::run_series_with(&dpcall::client(), &clock, dp, TOKEN, values, None).await
}

/// Decodes `application/x-www-form-urlencoded` (test oracle).
fn decode(s: &str) -> Vec<(String, String)> {
    url::form_urlencoded::parse(s.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

#[actix_web::test]
async fn get_template_sends_exactly_the_encoded_request() {
    let dir = tempfile::tempdir().unwrap();
    let p = platform(dir.path(), Arc::new(ManualClock::new(real_now())));
    let (url, log, h) = start_receiver();
    let (dp, _) = p
        .register_dp(new_dp(
            "API.TMPLGET001",
            format!("{url}/dp/cars?src=mydata"),
            DpMethod::Get,
            Some(
                r#"{"items": [
                {"location": "query",  "name": "id",      "value": "{{pid}}"},
                {"location": "query",  "name": "who",     "value": "{{name}}"},
                {"location": "query",  "name": "mail",    "value": "{{email}}"},
                {"location": "query",  "name": "birth",   "value": "{{birthdate:roc_slash}}"},
                {"location": "query",  "name": "plate",   "value": "{{param:plate}}"},
                {"location": "query",  "name": "year",    "value": "{{param:year}}"},
                {"location": "header", "name": "X-Name",  "value": "{{name}}"},
                {"location": "header", "name": "X-Ids",   "value": "{{pid_type}}:{{pid}} {{resource_id}} {{transaction_uid}}"}
            ]}"#,
            ),
        ))
        .unwrap();
    // The template is stored with the dataset.
    let stored = p.store.get_dp("API.TMPLGET001").unwrap().unwrap();
    assert_eq!(stored, dp);
    assert_eq!(stored.template.as_ref().unwrap().items().len(), 8);

    let params = BTreeMap::from([("plate".to_string(), "ABC 1234&x=1#".to_string())]);
    let values = dpcall::values_for(&stored, UID, &citizen(), params);
    let r = run(&stored, &values).await;
    assert_eq!((r.code, r.calls), (DatasetCode::NoData, 1));

    let seen = log.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    let s = &seen[0];
    assert_eq!((s.method.as_str(), s.path.as_str()), ("GET", "/dp/cars"));
    assert_eq!(
        s.query,
        format!(
            "src=mydata&transaction_uid={UID}&id=A120345672\
             &who=%E7%8E%8B+%22%E5%B0%8F%E6%98%8E%22+%26+%E9%99%B3%3D%231%2B2%5C\
             &mail=wang%2Bdp%40example.tw&birth=077%2F01%2F01\
             &plate=ABC+1234%26x%3D1%23&year="
        )
    );
    let q = decode(&s.query);
    assert_eq!(q.len(), 8, "no value added a query pair: {q:?}");
    assert_eq!(q[2], ("id".into(), "A120345672".into()));
    assert_eq!(q[3], ("who".into(), NAME.into()));
    assert_eq!(q[6], ("plate".into(), "ABC 1234&x=1#".into()));
    assert_eq!(
        q[7],
        ("year".into(), String::new()),
        "missing renders empty"
    );
    assert_eq!(
        s.header_str("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    assert_eq!(s.header_str("accept"), Some("application/zip"));
    assert_eq!(s.header("x-name"), Some(NAME.as_bytes()));
    assert_eq!(
        s.header_str("x-ids"),
        Some(format!("NID:A120345672 API.TMPLGET001 {UID}").as_str())
    );
    assert_eq!(s.header("content-type"), None);
    assert!(s.body.is_empty());

    // A dataset without a template: the plain call, as before templates.
    let (plain, _) = p
        .register_dp(new_dp(
            "API.TMPLNONE01",
            format!("{url}/plain"),
            DpMethod::Get,
            None,
        ))
        .unwrap();
    assert!(plain.template.is_none());
    let r = dpcall::run_series(
        &dpcall::client(),
        &(Arc::new(ManualClock::new(real_now())) as SharedClock),
        &plain,
        TOKEN,
        UID,
        None,
    )
    .await;
    assert_eq!(r.code, DatasetCode::NoData);
    let s = log.lock().unwrap()[1].clone();
    assert_eq!(s.query, format!("transaction_uid={UID}"));
    // Only the platform's two headers and what the HTTP client itself adds.
    let names: Vec<&str> = s.headers.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(s.header_str("accept"), Some("application/zip"));
    assert!(
        names.iter().all(|n| [
            "accept",
            "accept-encoding",
            "authorization",
            "content-length",
            "date",
            "host",
            "user-agent"
        ]
        .contains(n)),
        "{names:?}"
    );
    h.stop(true).await;
}

#[actix_web::test]
async fn post_templates_send_json_or_form_bodies() {
    let dir = tempfile::tempdir().unwrap();
    let p = platform(dir.path(), Arc::new(ManualClock::new(real_now())));
    let (url, log, h) = start_receiver();
    let (json_dp, _) = p
        .register_dp(new_dp(
            "API.TMPLJSON01",
            format!("{url}/json"),
            DpMethod::Post,
            Some(
                r#"{"items": [
                {"location": "json",   "name": "/citizen/name",  "value": "{{name}}"},
                {"location": "json",   "name": "/citizen/id",    "value": "{{pid}}"},
                {"location": "json",   "name": "/citizen/birth", "value": "{{birthdate:gregorian8}}"},
                {"location": "json",   "name": "/request/uid",   "value": "{{transaction_uid}}"},
                {"location": "query",  "name": "v",              "value": "2"},
                {"location": "header", "name": "X-Mail",         "value": "{{email}}"}
            ], "skeleton": {"apiVersion": 2, "request": {"kind": "full"}, "flags": [true, null]}}"#,
            ),
        ))
        .unwrap();
    let (form_dp, _) = p
        .register_dp(new_dp(
            "API.TMPLFORM01",
            format!("{url}/form"),
            DpMethod::Post,
            Some(
                r#"[{"location": "form", "name": "name", "value": "{{name}}"},
                    {"location": "form", "name": "mail", "value": "<{{email}}>"}]"#,
            ),
        ))
        .unwrap();
    let c = citizen();
    let r = run(
        &json_dp,
        &dpcall::values_for(&json_dp, UID, &c, BTreeMap::new()),
    )
    .await;
    assert_eq!((r.code, r.calls), (DatasetCode::NoData, 1));
    let r = run(
        &form_dp,
        &dpcall::values_for(&form_dp, UID, &c, BTreeMap::new()),
    )
    .await;
    assert_eq!((r.code, r.calls), (DatasetCode::NoData, 1));

    let seen = log.lock().unwrap().clone();
    let (j, f) = (&seen[0], &seen[1]);
    assert_eq!((j.method.as_str(), j.path.as_str()), ("POST", "/json"));
    assert_eq!(j.query, format!("transaction_uid={UID}&v=2"));
    assert_eq!(j.header_str("content-type"), Some("application/json"));
    assert_eq!(j.header_str("accept"), Some("application/zip"));
    assert_eq!(j.header_str("x-mail"), Some("wang+dp@example.tw"));
    let body: Value = serde_json::from_slice(&j.body).unwrap();
    assert_eq!(
        body,
        json!({
            "apiVersion": 2,
            "flags": [true, null],
            "request": {"kind": "full", "uid": UID},
            "citizen": {"name": NAME, "id": "A120345672", "birth": "19880101"}
        })
    );
    // The quotes of the name are escaped inside one JSON string.
    let text = std::str::from_utf8(&j.body).unwrap();
    assert!(text.contains(r#""王 \"小明\" & 陳=#1+2\\""#), "{text}");

    assert_eq!((f.method.as_str(), f.path.as_str()), ("POST", "/form"));
    assert_eq!(f.query, format!("transaction_uid={UID}"));
    assert_eq!(
        f.header_str("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    let body = std::str::from_utf8(&f.body).unwrap();
    assert_eq!(
        body,
        "name=%E7%8E%8B+%22%E5%B0%8F%E6%98%8E%22+%26+%E9%99%B3%3D%231%2B2%5C\
         &mail=%3Cwang%2Bdp%40example.tw%3E"
    );
    assert_eq!(
        decode(body),
        vec![
            ("name".to_string(), NAME.to_string()),
            ("mail".to_string(), "<wang+dp@example.tw>".to_string())
        ]
    );
    h.stop(true).await;
}

#[actix_web::test]
async fn a_header_value_with_a_line_break_is_never_sent() {
    let dir = tempfile::tempdir().unwrap();
    let p = platform(dir.path(), Arc::new(ManualClock::new(real_now())));
    let (url, log, h) = start_receiver();
    let (hdr, _) = p
        .register_dp(new_dp(
            "API.TMPLHDR001",
            format!("{url}/h"),
            DpMethod::Get,
            Some(r#"[{"location": "header", "name": "X-Name", "value": "{{name}}"}]"#),
        ))
        .unwrap();
    let (qry, _) = p
        .register_dp(new_dp(
            "API.TMPLQRY001",
            format!("{url}/q"),
            DpMethod::Get,
            Some(r#"[{"location": "query", "name": "name", "value": "{{name}}"}]"#),
        ))
        .unwrap();
    let mut c = citizen();
    for evil in ["x\r\nX-Admin: 1", "x\nX-Admin: 1", "x\0y"] {
        c.name = Some(evil.into());
        let r = run(&hdr, &dpcall::values_for(&hdr, UID, &c, BTreeMap::new())).await;
        assert_eq!((r.code, r.calls), (DatasetCode::DpError, 0), "{evil:?}");
        assert!(r.package.is_none());
        let err = dpcall::prepare(
            &hdr,
            TOKEN,
            &dpcall::values_for(&hdr, UID, &c, BTreeMap::new()),
        )
        .unwrap_err();
        assert!(err.to_string().contains("X-Name"), "{err}");
    }
    assert!(log.lock().unwrap().is_empty(), "nothing reached the DP");
    // In the query the same value is only data.
    c.name = Some("x\r\nX-Admin: 1".into());
    let r = run(&qry, &dpcall::values_for(&qry, UID, &c, BTreeMap::new())).await;
    assert_eq!(r.code, DatasetCode::NoData);
    let s = log.lock().unwrap()[0].clone();
    assert_eq!(
        s.query,
        format!("transaction_uid={UID}&name=x%0D%0AX-Admin%3A+1")
    );
    assert!(s.header("x-admin").is_none());
    h.stop(true).await;
}

#[test]
fn registration_refuses_bad_templates_and_endpoints() {
    let dir = tempfile::tempdir().unwrap();
    let p = platform(dir.path(), Arc::new(ManualClock::new(real_now())));
    let invalid = |r: Result<_, ServerError>| match r {
        Err(ServerError::Invalid(m)) => m,
        other => panic!("{:?}", other.map(|_: (DpRecord, String)| ())),
    };
    // A body on a GET endpoint.
    let m = invalid(p.register_dp(new_dp(
        "API.TMPLBAD001",
        "http://127.0.0.1:9/dp".into(),
        DpMethod::Get,
        Some(r#"[{"location": "json", "name": "/a", "value": "{{pid}}"}]"#),
    )));
    assert!(m.contains("POST"), "{m}");
    assert!(
        invalid(p.register_dp(new_dp(
            "API.TMPLBAD002",
            "http://127.0.0.1:9/dp".into(),
            DpMethod::Get,
            Some(r#"[{"location": "form", "name": "a", "value": "{{pid}}"}]"#),
        )))
        .contains("POST")
    );
    for endpoint in [
        "http://127.0.0.1:9/dp#frag",
        "ftp://127.0.0.1/dp",
        "not a url",
        "http://127.0.0.1:9/a b",
    ] {
        invalid(p.register_dp(new_dp(
            "API.TMPLBAD003",
            endpoint.into(),
            DpMethod::Get,
            None,
        )));
    }
    // A placeholder for a claim the dataset may not see (default claims: no name, no email).
    let mut no_name = new_dp(
        "API.TMPLBAD004",
        "http://127.0.0.1:9/dp".into(),
        DpMethod::Get,
        Some(r#"[{"location": "query", "name": "n", "value": "{{name}}"}]"#),
    );
    no_name.claims = vec![];
    let m = invalid(p.register_dp(no_name));
    assert!(m.contains("claim name"), "{m}");
    assert!(p.store.list_dps().unwrap().is_empty(), "nothing registered");
    // A record whose claims were narrowed after registration: those values render empty.
    let (mut dp, _) = p
        .register_dp(new_dp(
            "API.TMPLCLM001",
            "http://127.0.0.1:9/dp".into(),
            DpMethod::Get,
            Some(r#"[{"location": "query", "name": "n", "value": "{{name}}|{{email}}|{{pid}}"}]"#),
        ))
        .unwrap();
    dp.claims = vec!["uid".into(), "name".into()];
    let v = dpcall::values_for(&dp, UID, &citizen(), BTreeMap::new());
    assert_eq!(
        (v.name.as_deref(), v.email.as_deref(), v.pid.as_deref()),
        (Some(NAME), None, Some("a120345672"))
    );
    assert!(v.birthdate.is_none() && v.pid_type.is_none());
    // The template document itself is checked before registration.
    assert!(Template::from_json(r#"[{"location":"query","name":"a","value":"{{ssn}}"}]"#).is_err());
    assert!(Template::from_json(r#"[{"location":"query","name":"a","value":"{{"}]"#).is_err());
    // A record stored before templates existed (no "template" key) still loads.
    let mut v =
        serde_json::to_value(mydata_server::storage::suite::sample_dp("API.OLDRECORD1")).unwrap();
    v.as_object_mut().unwrap().remove("template");
    let old: DpRecord = serde_json::from_value(v).unwrap();
    assert!(old.template.is_none());
}

// --- after consent ------------------------------------------------------------------------------

fn start_sp() -> (String, common::Seen, actix_web::dev::ServerHandle) {
    common::start_sp_api_answering(200)
}

fn tx(p: &Platform, id: &str, client: &str, resources: &[&str]) -> TxRecord {
    common::authenticated_tx(p, id, client, &format!("tx-{id}"), resources)
}

#[actix_web::test]
async fn consent_calls_the_dp_with_the_citizens_claims_and_names_the_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let p = platform(dir.path(), Arc::new(ManualClock::new(real_now())));
    let srv = spawn(p.clone()).unwrap();
    let (dp_url, log, dp_h) = start_receiver();
    let (sp_url, sp_seen, sp_h) = start_sp();
    p.register_dp(new_dp(
        "API.TMPLE2E001",
        format!("{dp_url}/e2e"),
        DpMethod::Post,
        Some(
            r#"[{"location": "form",   "name": "who",  "value": "{{name}}"},
                {"location": "form",   "name": "born", "value": "{{birthdate:roc7}}"},
                {"location": "header", "name": "X-Pid","value": "{{pid}}"}]"#,
        ),
    ))
    .unwrap();
    let (sp_rec, creds) = p
        .register_sp(NewSp {
            tls_ca: None,
            name: "Template SP".into(),
            return_url: "http://127.0.0.1:1/return".into(),
            sp_api_url: sp_url,
            allowed_ips: vec!["127.0.0.1".parse().unwrap()],
            client_cert_sha256: Vec::new(),
            resources: vec!["API.TMPLE2E001".parse().unwrap()],
            packaging_mode: PackagingMode::A,
            ..NewSp::default()
        })
        .unwrap();
    let t = tx(&p, "t-e2e", &sp_rec.client_id, &["API.TMPLE2E001"]);
    assert_eq!(
        engine::consent(p.clone(), t, citizen()).await.unwrap(),
        ReturnCode::Success
    );
    let body = sp_seen.lock().unwrap()[0].clone();
    let ticket = body["permission_ticket"].as_str().unwrap().to_string();
    let cipher =
        ParamCipher::from_raw(&creds.client_secret, &creds.cbc_iv, ParamMode::Cbc).unwrap();
    let key: SecretKey = cipher
        .decrypt(body["secret_key"].as_str().unwrap())
        .unwrap()
        .parse()
        .unwrap();
    let mut jwe_text = None;
    let start = std::time::Instant::now();
    while start.elapsed() < std::time::Duration::from_secs(120) {
        actix_web::rt::time::sleep(std::time::Duration::from_millis(25)).await;
        let mut r = awc::Client::default()
            .get(format!("{}/service/data", srv.url))
            .insert_header(("permission_ticket", ticket.as_str()))
            .send()
            .await
            .unwrap();
        match r.status().as_u16() {
            429 => continue,
            200 => {
                jwe_text = Some(String::from_utf8(r.body().await.unwrap().to_vec()).unwrap());
                break;
            }
            other => panic!("MyData-API answered {other}"),
        }
    }
    let jwe_text = jwe_text.expect("the package was not ready within 120 s");

    // The DP got the citizen's claims through the template.
    let seen = log.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    let s = &seen[0];
    assert_eq!(s.method, "POST");
    let uid = s.query.strip_prefix("transaction_uid=").unwrap();
    assert!(uid.parse::<PermissionTicket>().is_ok(), "{}", s.query);
    assert_eq!(s.header_str("x-pid"), Some("A120345672"));
    assert!(
        s.header_str("authorization")
            .is_some_and(|a| a.starts_with("Bearer ") && a.len() == 7 + 43)
    );
    assert_eq!(
        decode(std::str::from_utf8(&s.body).unwrap()),
        vec![
            ("who".to_string(), NAME.to_string()),
            ("born".to_string(), "0770101".to_string())
        ]
    );

    // The SP package's manifest names the dataset (one get_dp per dataset, no list).
    let client_id: ClientId = sp_rec.client_id.parse().unwrap();
    let zip = jwe::decrypt_package(&jwe_text, &key, JweMode::Cbc, Some(&client_id)).unwrap();
    let reports = sp::verify(
        std::io::Cursor::new(&zip.zip[..]),
        &VerifyOptions::at(p.now()),
    )
    .unwrap();
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].entry.resource_id, "API.TMPLE2E001");
    assert_eq!(reports[0].entry.resource_name, "車籍資料");
    assert_eq!(reports[0].entry.code, 204);

    dp_h.stop(true).await;
    sp_h.stop(true).await;
    srv.handle.stop(true).await;
}

// --- the MyData-API's source index ---------------------------------------------------------------

#[test]
fn data_checks_the_source_ip_against_the_index() {
    let dir = tempfile::tempdir().unwrap();
    let p = platform(dir.path(), Arc::new(ManualClock::new(real_now())));
    p.register_dp(new_dp(
        "API.TMPLIDX001",
        "http://127.0.0.1:9/dp".into(),
        DpMethod::Get,
        None,
    ))
    .unwrap();
    let (a, _) = p
        .register_sp(NewSp {
            tls_ca: None,
            name: "A".into(),
            return_url: "http://127.0.0.1:1/return".into(),
            sp_api_url: "http://127.0.0.1:1/sp-api".into(),
            allowed_ips: vec!["10.0.0.1".parse().unwrap(), "::1".parse().unwrap()],
            client_cert_sha256: Vec::new(),
            resources: vec!["API.TMPLIDX001".parse().unwrap()],
            ..NewSp::default()
        })
        .unwrap();
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let unknown = "6b1f0e52-2c1d-4f7a-9a57-0f3c1d2e8b44";
    let status =
        |src: &str, ticket: Option<&str>| match engine::data(&p, ip(src), ticket, None).unwrap() {
            DataAnswer::Status(s) => s,
            DataAnswer::Ready(_) | DataAnswer::Busy => panic!("ready"),
        };
    assert!(p.sp_sources.is_registered(ip("10.0.0.1")));
    assert_eq!(p.sp_sources.clients(ip("::1")), vec![a.client_id.clone()]);
    // Registered by SP A: the ticket is looked at (unknown: 403; none: 400).
    assert_eq!(
        status("10.0.0.1", Some(unknown)),
        flow::DataAnswer::Forbidden403
    );
    assert_eq!(status("::1", None), flow::DataAnswer::BadRequest400);
    // Registered by nobody: 401 before anything else.
    assert_eq!(
        status("10.0.0.2", Some(unknown)),
        flow::DataAnswer::Unauthorized401
    );

    // SP B is written to the database by another process (as `mydata sp register` does while
    // the server runs): not in the index, learnt from the first ticket it presents.
    let mut b = mydata_server::storage::suite::sample_sp("CLI.OTHERPROC1");
    b.allowed_ips = vec!["10.0.0.9".into()];
    b.resources = vec!["API.TMPLIDX001".into()];
    p.store.insert_sp(&b, p.now()).unwrap();
    assert!(!p.sp_sources.is_registered(ip("10.0.0.9")));
    let ticket = "3f2c1d0e-9b8a-4c7d-8e6f-5a4b3c2d1e0f";
    let mut t = tx(&p, "t-idx", &b.client_id, &["API.TMPLIDX001"]);
    t.state = state::FETCHING;
    t.sp_api_ack = true;
    t.consent_at = Some(p.now().0);
    t.ticket_hash = Some(p.ticket_hash(ticket));
    p.store.update_tx(&t).unwrap();
    // Another source with B's ticket does not learn anything.
    assert_eq!(
        status("10.0.0.2", Some(ticket)),
        flow::DataAnswer::Unauthorized401
    );
    assert!(!p.sp_sources.is_registered(ip("10.0.0.2")));
    assert!(matches!(
        status("10.0.0.9", Some(ticket)),
        flow::DataAnswer::NotReady429 { .. }
    ));
    assert!(p.sp_sources.is_registered(ip("10.0.0.9")));
    assert_eq!(
        status("10.0.0.9", Some(unknown)),
        flow::DataAnswer::Forbidden403
    );
    // A's source with B's ticket: registered, but not B's source.
    assert_eq!(
        status("10.0.0.1", Some(ticket)),
        flow::DataAnswer::Forbidden403
    );

    // The index at start is built from storage.
    let p2 = Platform::new(
        p.store.clone(),
        MasterKey::generate().unwrap(),
        p.clock.clone(),
        Config::default(),
    )
    .unwrap();
    let mut clients = p2.sp_sources.clients(ip("10.0.0.1"));
    clients.extend(p2.sp_sources.clients(ip("10.0.0.9")));
    assert_eq!(clients, vec![a.client_id.clone(), b.client_id.clone()]);
    p2.sp_sources.remove(&a.client_id);
    assert!(!p2.sp_sources.is_registered(ip("10.0.0.1")));
    assert!(!p2.sp_sources.is_registered(ip("::1")));
    let mut moved: SpRecord = b.clone();
    moved.allowed_ips = vec!["10.0.0.10".into()];
    p2.sp_sources.insert(&moved);
    assert!(!p2.sp_sources.is_registered(ip("10.0.0.9")));
    assert!(p2.sp_sources.is_registered(ip("10.0.0.10")));
}
