//! A restart of the platform (spec D47), over real HTTP on 127.0.0.1 and one SQLite file: the DP
//! calls that the stop interrupted, and a package lost from memory, are fetched again by the
//! next process under the tickets the SP already holds.

mod common;

use std::sync::Arc;

use common::{
    authenticated_tx, citizen_claims, now_real, open_delivery, poll_until_ready, start_sp_api,
};
use mydata_dp::sandbox::{self, Behaviour, SandboxConfig};
use mydata_protocol::catalogue::Catalogue;
use mydata_protocol::codes::ReturnCode;
use mydata_protocol::date::UnixTime;
use mydata_protocol::ids::SecretKey;
use mydata_protocol::package::sp::PackagingMode;
use mydata_protocol::param::{ParamCipher, ParamMode};
use mydata_server::clock::{Clock, ManualClock};
use mydata_server::config::Config;
use mydata_server::engine::{self, state};
use mydata_server::http::spawn;
use mydata_server::platform::{NewSp, Platform, SANDBOX_CATALOGUE};
use mydata_server::secrets::MasterKey;
use mydata_server::storage;
use serde_json::Value;

fn platform(config: &Config, key: &MasterKey, clock: &ManualClock) -> Arc<Platform> {
    // The store `mydata serve` opens: SQLite behind the write-behind layer.
    let store = storage::open_server(config).unwrap();
    Arc::new(Platform::new(store, key.clone(), Arc::new(clock.clone()), config.clone()).unwrap())
}

/// The ticket and `secret_key` of the SP-API call for `tx_id`.
fn delivery(seen: &[Value], tx_id: &str, cipher: &ParamCipher) -> (String, SecretKey) {
    let body = seen
        .iter()
        .find(|b| b["tx_id"] == tx_id)
        .unwrap_or_else(|| panic!("no SP-API call for {tx_id}"));
    let key = cipher
        .decrypt(body["secret_key"].as_str().unwrap())
        .unwrap()
        .parse()
        .unwrap();
    (body["permission_ticket"].as_str().unwrap().to_string(), key)
}

#[actix_web::test]
async fn interrupted_dp_calls_and_a_lost_package_are_fetched_again_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(UnixTime(now_real()));
    let config = Config {
        data_dir: dir.path().to_path_buf(),
        sandbox: true,
        ..Config::default()
    };
    let key = MasterKey::generate().unwrap();
    let ids: Vec<String> = Catalogue::from_json(SANDBOX_CATALOGUE).unwrap().datasets[..2]
        .iter()
        .map(|d| d.resource_id.to_string())
        .collect();

    // The first process: one dataset never ready within the test, one instant.
    let p1 = platform(&config, &key, &clock);
    let srv1 = spawn(p1.clone()).unwrap();
    let mut dp1 = SandboxConfig::embedded(&srv1.url).unwrap();
    dp1.behaviours.insert(ids[0].clone(), Behaviour::Slow(3600));
    dp1.behaviours.insert(ids[1].clone(), Behaviour::Instant);
    let dp1 = sandbox::spawn(dp1).await.unwrap();
    p1.load_sandbox_at(&dp1.base_url()).unwrap();
    let (sp_api_url, seen) = start_sp_api();
    let (sp_rec, creds) = p1
        .register_sp(NewSp {
            tls_ca: None,
            name: "restart".into(),
            return_url: "http://127.0.0.1:1/return".into(),
            sp_api_url,
            allowed_ips: vec!["127.0.0.1".parse().unwrap()],
            client_cert_sha256: Vec::new(),
            resources: ids.iter().map(|i| i.parse().unwrap()).collect(),
            packaging_mode: PackagingMode::B,
            ..NewSp::default()
        })
        .unwrap();
    let cipher =
        ParamCipher::from_raw(&creds.client_secret, &creds.cbc_iv, ParamMode::Cbc).unwrap();

    // Transaction A waits on its DP; transaction B is packaged, its package in memory.
    let a = authenticated_tx(&p1, "t-a", &sp_rec.client_id, "tx-a", &[&ids[0]]);
    let b = authenticated_tx(&p1, "t-b", &sp_rec.client_id, "tx-b", &[&ids[1]]);
    for t in [a, b] {
        let code = engine::consent(p1.clone(), t, citizen_claims(&p1))
            .await
            .unwrap();
        assert_eq!(code, ReturnCode::Success);
    }
    let start = std::time::Instant::now();
    let ready = loop {
        let t = p1.store.get_tx("t-b").unwrap().unwrap();
        if t.state == state::READY {
            break t.package_path;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(120),
            "transaction B not ready within 120 s: {:?}",
            t.state
        );
        actix_web::rt::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let path = ready.expect("transaction B is ready with a package");
    assert!(path.starts_with("memory:"), "{path}");
    assert_eq!(
        p1.store.get_tx("t-a").unwrap().unwrap().state,
        state::FETCHING
    );
    let (ticket_a, key_a) = delivery(&seen.lock().unwrap(), "tx-a", &cipher);
    let (ticket_b, key_b) = delivery(&seen.lock().unwrap(), "tx-b", &cipher);

    // The stop: the server goes, what it accepted is committed, its memory is lost.
    srv1.handle.stop(true).await;
    p1.store.flush().unwrap();

    // The next process, on the same database and key; its DP answers at once.
    let p2 = platform(&config, &key, &clock);
    let srv2 = spawn(p2.clone()).unwrap();
    let mut dp2 = SandboxConfig::embedded(&srv2.url).unwrap();
    for id in &ids {
        dp2.behaviours.insert(id.clone(), Behaviour::Instant);
    }
    let dp2 = sandbox::spawn(dp2).await.unwrap();
    for id in &ids {
        let mut d = p2.store.get_dp(id).unwrap().unwrap();
        d.endpoint = format!("{}/dp/{id}", dp2.base_url());
        p2.store.update_dp(&d).unwrap();
    }
    assert_eq!(engine::resume(&p2).unwrap(), 2);

    for (ticket, tx_id, key, rid) in [
        (&ticket_a, "tx-a", &key_a, &ids[0]),
        (&ticket_b, "tx-b", &key_b, &ids[1]),
    ] {
        let (status, jwe_text) = poll_until_ready(&srv2.url, ticket, tx_id).await;
        assert_eq!(status, 200, "{tx_id}");
        let reports = open_delivery(&jwe_text, key, &sp_rec.client_id, clock.now());
        assert_eq!(reports.len(), 1);
        assert_eq!(reports[0].entry.resource_id, *rid);
        assert_eq!(reports[0].entry.code, 200);
        assert!(reports[0].ok(), "{tx_id}");
        let (status, _) = poll_until_ready(&srv2.url, ticket, tx_id).await;
        assert_eq!(status, 201, "{tx_id}");
    }
    // A transaction that cannot be resumed (its citizen claims are gone) ends with 504.
    let c = authenticated_tx(&p2, "t-c", &sp_rec.client_id, "tx-c", &[&ids[1]]);
    let mut c = c;
    c.state = state::FETCHING;
    c.sp_api_ack = true;
    p2.store.update_tx(&c).unwrap();
    assert_eq!(engine::resume(&p2).unwrap(), 0);
    let c = p2.store.get_tx("t-c").unwrap().unwrap();
    assert_eq!((c.state, c.code), (state::ENDED, Some(504)));
    srv2.handle.stop(true).await;
}
