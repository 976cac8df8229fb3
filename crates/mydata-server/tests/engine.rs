//! After consent, over real HTTP on 127.0.0.1: the SP-API call to an SP receiver, the DP calls to
//! the sandbox DP, the SP package, the MyData-API (429 → 200 JWE → 201), mode A with a failing
//! dataset, a failing SP-API (410), and the purge (issue 3, items 4–6).

mod common;

use std::sync::Arc;

use mydata_dp::sandbox::{self, Behaviour, SandboxConfig};
use mydata_protocol::catalogue::Catalogue;
use mydata_protocol::codes::ReturnCode;
use mydata_protocol::date::UnixTime;
use mydata_protocol::ids::SecretKey;
use mydata_protocol::jwe::{self, JweMode};
use mydata_protocol::package::dp::VerifyOptions;
use mydata_protocol::package::sp::{self, PackagingMode};
use mydata_protocol::param::{ParamCipher, ParamMode};
use mydata_server::auth::CitizenClaims;
use mydata_server::clock::{Clock, ManualClock};
use mydata_server::config::Config;
use mydata_server::engine::{self, state};
use mydata_server::http::spawn;
use mydata_server::platform::{NewSp, Platform, SANDBOX_CATALOGUE};
use mydata_server::secrets::MasterKey;
use mydata_server::storage::TxRecord;
use mydata_server::storage::sqlite::SqliteStore;
use serde_json::Value;

use common::Seen;

fn start_sp(code: u16) -> (String, Seen, actix_web::dev::ServerHandle) {
    common::start_sp_api_answering(code)
}

fn now_real() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn tx(p: &Platform, id: &str, client: &str, tx_id: &str, resources: &[&str]) -> TxRecord {
    common::authenticated_tx(p, id, client, tx_id, resources)
}

fn citizen(p: &Platform) -> CitizenClaims {
    common::citizen_claims(p)
}

async fn poll(url: &str, ticket: &str) -> (u16, Option<String>, String) {
    let mut r = awc::Client::default()
        .get(format!("{url}/service/data"))
        .insert_header(("permission_ticket", ticket))
        .send()
        .await
        .unwrap();
    let ra = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    let body = String::from_utf8(r.body().await.unwrap().to_vec()).unwrap();
    (r.status().as_u16(), ra, body)
}

#[actix_web::test]
async fn consent_fetch_package_take_and_purge() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(UnixTime(now_real()));
    // Packages in files and writes straight to SQLite here (`package_memory_mb = 0`, the store
    // without the write-behind layer); the other server tests run as `mydata serve` does.
    let config = Config {
        data_dir: dir.path().to_path_buf(),
        sandbox: true,
        package_memory_mb: 0,
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
    let c = Catalogue::from_json(SANDBOX_CATALOGUE).unwrap();
    let ids: Vec<String> = c.datasets[..5]
        .iter()
        .map(|d| d.resource_id.to_string())
        .collect();
    let mut cfg = SandboxConfig::embedded(&srv.url).unwrap();
    for id in &ids[..4] {
        cfg.behaviours.insert(id.clone(), Behaviour::Instant);
    }
    cfg.behaviours.insert(ids[1].clone(), Behaviour::Slow(1));
    cfg.behaviours.insert(ids[4].clone(), Behaviour::Fail(500));
    let dp = sandbox::spawn(cfg).await.unwrap();
    p.load_sandbox_at(&dp.base_url()).unwrap();
    let (sp_url, seen, sp_h) = start_sp(200);
    let register = |name: &str, mode: PackagingMode, url: &str| {
        p.register_sp(NewSp {
            tls_ca: None,
            name: name.into(),
            return_url: "http://127.0.0.1:1/return".into(),
            sp_api_url: url.into(),
            allowed_ips: vec!["127.0.0.1".parse().unwrap()],
            client_cert_sha256: Vec::new(),
            resources: ids.iter().map(|i| i.parse().unwrap()).collect(),
            packaging_mode: mode,
            ..NewSp::default()
        })
        .unwrap()
    };
    let (sp_b, creds_b) = register("B", PackagingMode::B, &sp_url);
    let (sp_a, creds_a) = register("A", PackagingMode::A, &sp_url);

    // Mode B, five datasets, one slow, one failing.
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let t = tx(&p, "t-1", &sp_b.client_id, "tx-b-1", &refs);
    let code = engine::consent(p.clone(), t, citizen(&p)).await.unwrap();
    assert_eq!(code, ReturnCode::Success);
    let body = seen.lock().unwrap()[0].clone();
    assert_eq!(body["tx_id"], "tx-b-1");
    assert_eq!(body["apiKey"], creds_b.api_key.clone().unwrap());
    assert!(body.get("unable_to_deliver").is_none());
    let cipher =
        ParamCipher::from_raw(&creds_b.client_secret, &creds_b.cbc_iv, ParamMode::Cbc).unwrap();
    let key: SecretKey = cipher
        .decrypt(body["secret_key"].as_str().unwrap())
        .unwrap()
        .parse()
        .unwrap();
    let ticket = body["permission_ticket"].as_str().unwrap().to_string();

    let (s, ra, _) = poll(&srv.url, &ticket).await;
    assert_eq!((s, ra.as_deref()), (429, Some("5")));
    // Waits on the condition with a generous deadline (the slow DP's 5 s and a loaded
    // machine), not on a count of short rounds.
    let start = std::time::Instant::now();
    let jwe_text = loop {
        actix_web::rt::time::sleep(std::time::Duration::from_millis(100)).await;
        let (s, _, b) = poll(&srv.url, &ticket).await;
        if s == 200 {
            break b;
        }
        assert_eq!(s, 429);
        assert!(
            start.elapsed() < std::time::Duration::from_secs(120),
            "the package was not ready within 120 s"
        );
    };
    let reports = common::open_delivery(&jwe_text, &key, &sp_b.client_id, clock.now());
    let codes: Vec<u16> = reports.iter().map(|r| r.entry.code).collect();
    assert_eq!(codes, vec![200, 200, 200, 200, 504]);
    assert!(reports[..4].iter().all(|r| r.ok()));
    // One-shot: the second poll is 201, and the package file and tokens are gone.
    assert_eq!(poll(&srv.url, &ticket).await.0, 201);
    assert_eq!(p.auth.token_count(), 0);
    assert!(
        std::fs::read_dir(dir.path().join("packages"))
            .unwrap()
            .next()
            .is_none()
    );
    // Transfer records: five DP calls and one delivery, under a keyed hash.
    let mine = p.store.transfers_of(&p.subject_hash("A120345672")).unwrap();
    assert_eq!(mine.iter().filter(|t| t.kind == "dp_call").count(), 5);
    assert_eq!(mine.iter().filter(|t| t.kind == "delivery").count(), 1);

    // txid_status: taken, and unknown tx_id.
    for (tx_id, want) in [("tx-b-1", Some("201")), ("tx-none", None)] {
        let mut r = awc::Client::default()
            .get(format!("{}/service/txid_status", srv.url))
            .insert_header(("tx_id", tx_id))
            .send()
            .await
            .unwrap();
        match want {
            Some(code) => {
                assert_eq!(r.status().as_u16(), 200);
                let v: Value = r.json().await.unwrap();
                assert_eq!(v["code"], code);
            }
            None => assert_eq!(r.status().as_u16(), 404),
        }
    }

    // type_valid: the method the citizen used and its wire level (PII = 3).
    let mut r = awc::Client::default()
        .get(format!("{}/service/type_valid", srv.url))
        .insert_header(("tx_id", "tx-b-1"))
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v,
        serde_json::json!({"code":"200","text":"authenticated","type":"PII","level":3})
    );

    // Bad tickets.
    assert_eq!(poll(&srv.url, "not-a-ticket").await.0, 400);
    assert_eq!(
        poll(&srv.url, "6b1f0e52-2c1d-4f7a-9a57-0f3c1d2e8b44")
            .await
            .0,
        403
    );

    // Mode A with a failing dataset: only the manifest ships.
    let t = tx(&p, "t-2", &sp_a.client_id, "tx-a-1", &[&ids[0], &ids[4]]);
    assert_eq!(
        engine::consent(p.clone(), t, citizen(&p)).await.unwrap(),
        ReturnCode::Success
    );
    let body = seen.lock().unwrap()[1].clone();
    let cipher =
        ParamCipher::from_raw(&creds_a.client_secret, &creds_a.cbc_iv, ParamMode::Cbc).unwrap();
    let key: SecretKey = cipher
        .decrypt(body["secret_key"].as_str().unwrap())
        .unwrap()
        .parse()
        .unwrap();
    let ticket = body["permission_ticket"].as_str().unwrap().to_string();
    let start = std::time::Instant::now();
    let (s, b) = loop {
        actix_web::rt::time::sleep(std::time::Duration::from_millis(50)).await;
        let (s, _, b) = poll(&srv.url, &ticket).await;
        if s != 429 {
            break (s, b);
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(120),
            "still 429 after 120 s"
        );
    };
    assert_eq!(s, 200);
    let zip = jwe::decrypt_package(&b, &key, JweMode::Cbc, None).unwrap();
    let reports = sp::verify(
        std::io::Cursor::new(&zip.zip[..]),
        &VerifyOptions::at(clock.now()),
    )
    .unwrap();
    assert!(
        reports
            .iter()
            .all(|r| r.entry.filename.is_empty() && r.package.is_none())
    );
    assert_eq!(reports[1].entry.code, 504);

    // A failing SP-API: 410, the ticket never works, personal data gone.
    let (bad_url, _, bad_h) = start_sp(500);
    let (sp_x, _) = register("X", PackagingMode::A, &bad_url);
    let t = tx(&p, "t-3", &sp_x.client_id, "tx-x-1", &[&ids[0]]);
    assert_eq!(
        engine::consent(p.clone(), t, citizen(&p)).await.unwrap(),
        ReturnCode::SpApiFailed
    );
    let t = p.store.get_tx("t-3").unwrap().unwrap();
    assert_eq!((t.state, t.code), (state::ENDED, Some(410)));
    assert!(t.pid_sealed.is_none() && t.ticket_hash.is_none());

    // A consented transaction left untaken is purged 8 hours after consent: 403, nothing left.
    let t = tx(&p, "t-4", &sp_b.client_id, "tx-b-2", &[&ids[0]]);
    engine::consent(p.clone(), t, citizen(&p)).await.unwrap();
    let ticket = seen.lock().unwrap()[2]["permission_ticket"]
        .as_str()
        .unwrap()
        .to_string();
    // Waits on the condition (a loaded machine may take long), not on a fixed time.
    let start = std::time::Instant::now();
    while p.store.get_tx("t-4").unwrap().unwrap().state != state::READY {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(120),
            "t-4 never became ready"
        );
        actix_web::rt::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    clock.advance(engine::RETENTION_SECS + 1);
    assert_eq!(poll(&srv.url, &ticket).await.0, 403);
    let r = engine::purge(&p).unwrap();
    assert!(r.purged >= 2 && r.complete(), "{r:?}");
    assert!(p.store.get_tx("t-4").unwrap().is_none());
    assert!(
        std::fs::read_dir(dir.path().join("packages"))
            .unwrap()
            .next()
            .is_none()
    );
    let raw = std::fs::read(dir.path().join("mydata.sqlite")).unwrap();
    let wal = std::fs::read(dir.path().join("mydata.sqlite-wal")).unwrap_or_default();
    for hay in [&raw, &wal] {
        assert!(
            !hay.windows(10).any(|w| w == b"A120345672"),
            "the citizen's ID is in the database"
        );
    }

    sp_h.stop(true).await;
    bad_h.stop(true).await;
    dp.stop().await;
    srv.handle.stop(true).await;
}
