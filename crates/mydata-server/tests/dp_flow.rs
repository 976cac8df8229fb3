//! The platform's DP-API leg over real HTTP on 127.0.0.1: the platform issues a token and calls
//! the sandbox DP (built on the mydata-dp SDK), which introspects the token at the platform and
//! answers with a signed package, 204, or 429 + Retry-After (issue 4, and issue 3 item 4).

use std::sync::Arc;

use mydata_dp::sandbox::{self, Behaviour, SandboxConfig};
use mydata_protocol::catalogue::Catalogue;
use mydata_protocol::codes::DatasetCode;
use mydata_protocol::package::dp::{self, TrustAnchors, VerifyOptions};
use mydata_server::auth::CitizenClaims;
use mydata_server::clock::{SharedClock, SystemClock};
use mydata_server::config::Config;
use mydata_server::dpcall;
use mydata_server::http::spawn;
use mydata_server::platform::{Platform, SANDBOX_CATALOGUE, SANDBOX_ROOT_CA};
use mydata_server::secrets::MasterKey;
use mydata_server::storage::sqlite::SqliteStore;

fn citizen(uid: &str, name: &str) -> CitizenClaims {
    CitizenClaims {
        sub: format!("sub-{uid}"),
        uid: uid.into(),
        uid_type: "NID".into(),
        birthdate: Some("1988-01-01".into()),
        name: Some(name.into()),
        email: None,
    }
}

/// Issues a token for dataset `token_for` (revoked at once when `revoke`), then runs the
/// platform's call series against dataset `call`.
#[allow(clippy::too_many_arguments)]
async fn call(
    p: &Platform,
    clock: &SharedClock,
    trust: &Arc<TrustAnchors>,
    tx: &str,
    token_for: &str,
    call: &str,
    transaction_uid: &str,
    citizen: &CitizenClaims,
    revoke: bool,
) -> dpcall::SeriesResult {
    let t = p
        .issue_token(tx, "CLI.SANDBOX001", token_for, transaction_uid, citizen)
        .unwrap();
    if revoke {
        p.revoke_transaction_tokens(tx).unwrap();
    }
    let dp_rec = p.store.get_dp(call).unwrap().unwrap();
    dpcall::run_series(
        &dpcall::client(),
        clock,
        &dp_rec,
        &t.token,
        transaction_uid,
        Some(trust.clone()),
    )
    .await
}

#[actix_web::test]
async fn platform_calls_the_sandbox_dp_which_introspects_at_the_platform() {
    let clock: SharedClock = Arc::new(SystemClock);
    let store = Arc::new(SqliteStore::in_memory().unwrap());
    let p = Arc::new(
        Platform::new(
            store,
            MasterKey::generate().unwrap(),
            clock.clone(),
            // Outside the sandbox the platform needs the CA its DPs chain to (spec D35).
            Config {
                dp_trust_anchors: vec![
                    concat!(
                        env!("CARGO_MANIFEST_DIR"),
                        "/../../fixtures/pki/sandbox-root-ca.pem"
                    )
                    .into(),
                ],
                ..Config::default()
            },
        )
        .unwrap()
        // Production rules (D35) against loopback HTTP peers (D49).
        .with_plain_http(true),
    );
    let platform = spawn(p.clone()).unwrap();

    let c = Catalogue::from_json(SANDBOX_CATALOGUE).unwrap();
    let instant = c.datasets[0].resource_id.as_str().to_string();
    let slow = c.datasets[1].resource_id.as_str().to_string();
    let failing = c.datasets[2].resource_id.as_str().to_string();
    let mut cfg = SandboxConfig::embedded(&platform.url).unwrap();
    cfg.behaviours.insert(instant.clone(), Behaviour::Instant);
    cfg.behaviours.insert(slow.clone(), Behaviour::Slow(1));
    cfg.behaviours.insert(failing.clone(), Behaviour::Fail(503));
    let dp_srv = sandbox::spawn(cfg).await.unwrap();
    p.load_sandbox_at(&dp_srv.base_url()).unwrap();

    let trust = Arc::new(TrustAnchors::from_pem(&[SANDBOX_ROOT_CA]).unwrap());
    let wang = citizen("A120345672", "王大明");

    // Instant dataset: one call, a package signed by the sandbox DP for this citizen.
    let r = call(
        &p,
        &clock,
        &trust,
        "tx-1",
        &instant,
        &instant,
        "0b7c7e0e-5d7a-4c1f-8e55-7f4a3b2c1d01",
        &wang,
        false,
    )
    .await;
    assert_eq!(r.code, DatasetCode::Delivered);
    assert_eq!(r.calls, 1);
    let pkg = r.package.unwrap();
    let v = dp::verify(
        std::io::Cursor::new(&pkg[..]),
        &VerifyOptions {
            trust: Some(&trust),
            ..VerifyOptions::at(clock.now())
        },
    )
    .unwrap();
    assert!(!v.files.is_empty());
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(&pkg[..])).unwrap();
    let json_name = v
        .files
        .iter()
        .map(|f| f.name.clone())
        .find(|n| n.ends_with(".json"))
        .unwrap();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut zip.by_name(&json_name).unwrap(), &mut text).unwrap();
    assert!(
        text.contains("A120345672"),
        "the package holds this citizen's data: {text}"
    );

    // Slow dataset: 429 + Retry-After first, then 200 under the same transaction_uid.
    let r = call(
        &p,
        &clock,
        &trust,
        "tx-1",
        &slow,
        &slow,
        "0b7c7e0e-5d7a-4c1f-8e55-7f4a3b2c1d02",
        &wang,
        false,
    )
    .await;
    assert_eq!(r.code, DatasetCode::Delivered);
    assert!(r.calls >= 2, "calls: {}", r.calls);

    // A citizen without data: 204.
    let nobody = citizen("H135908240", "張家豪");
    let r = call(
        &p,
        &clock,
        &trust,
        "tx-2",
        &instant,
        &instant,
        "0b7c7e0e-5d7a-4c1f-8e55-7f4a3b2c1d03",
        &nobody,
        false,
    )
    .await;
    assert_eq!(r.code, DatasetCode::NoData, "calls {}", r.calls);

    // A failing DP (503): 504 for the dataset, no package.
    let r = call(
        &p,
        &clock,
        &trust,
        "tx-1",
        &failing,
        &failing,
        "0b7c7e0e-5d7a-4c1f-8e55-7f4a3b2c1d04",
        &wang,
        false,
    )
    .await;
    assert_eq!(r.code, DatasetCode::DpSystemError);
    assert!(r.package.is_none());

    // A revoked token: the DP's introspection says inactive, the DP answers 401, the dataset fails.
    let r = call(
        &p,
        &clock,
        &trust,
        "tx-3",
        &instant,
        &instant,
        "0b7c7e0e-5d7a-4c1f-8e55-7f4a3b2c1d05",
        &wang,
        true,
    )
    .await;
    assert_eq!(r.code, DatasetCode::DpError);

    // A token of another dataset is refused by this DP.
    let r = call(
        &p,
        &clock,
        &trust,
        "tx-4",
        &slow,
        &instant,
        "0b7c7e0e-5d7a-4c1f-8e55-7f4a3b2c1d06",
        &wang,
        false,
    )
    .await;
    assert_eq!(r.code, DatasetCode::DpError);

    dp_srv.stop().await;
    platform.handle.stop(true).await;
}
