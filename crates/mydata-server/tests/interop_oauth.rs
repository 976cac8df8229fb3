//! An independent client (Python Authlib + requests, tests/interop/oauth_client.py) introspects
//! tokens and reads userinfo against the running server. Run through `bash tests/run.sh`, which
//! prepares the venv and exports MYDATA_PYTHON and MYDATA_INTEROP_DIR.

use std::path::PathBuf;
use std::sync::Arc;

use mydata_protocol::catalogue::{Catalogue, sandbox_resource_secret};
use mydata_protocol::date::UnixTime;
use mydata_server::auth::CitizenClaims;
use mydata_server::clock::SystemClock;
use mydata_server::config::Config;
use mydata_server::http::spawn;
use mydata_server::platform::{Platform, SANDBOX_CATALOGUE};
use mydata_server::secrets::MasterKey;
use mydata_server::storage::sqlite::SqliteStore;
use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn python() -> PathBuf {
    if let Ok(p) = std::env::var("MYDATA_PYTHON") {
        return p.into();
    }
    let venv = repo().join("target/interop-venv/bin/python");
    assert!(
        venv.exists(),
        "the interop peers need the Python venv: run `bash tests/run.sh`"
    );
    venv
}

fn interop_dir() -> PathBuf {
    std::env::var("MYDATA_INTEROP_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo().join("tests/interop"))
}

#[actix_web::test]
async fn authlib_and_requests_against_the_running_server() {
    let store = Arc::new(SqliteStore::in_memory().unwrap());
    let config = Config {
        public_url: "http://platform.invalid".into(),
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
    let p = Platform::new(
        store,
        MasterKey::generate().unwrap(),
        Arc::new(SystemClock),
        config,
    )
    .unwrap()
    // Production rules (D35) against loopback HTTP peers (D49).
    .with_plain_http(true);
    p.load_sandbox().unwrap();
    let p = Arc::new(p);
    let c = Catalogue::from_json(SANDBOX_CATALOGUE).unwrap();
    let (own, other) = (&c.datasets[0].resource_id, &c.datasets[5].resource_id);
    let citizen = CitizenClaims {
        sub: "9b2f6a1e-0c3d-4e5f-8a7b-6c5d4e3f2a10".into(),
        uid: "F228710436".into(),
        uid_type: "NID".into(),
        birthdate: Some("1975-03-15".into()),
        name: Some("林淑芬".into()),
        email: None,
    };
    let t = p
        .issue_token("tx-py", "CLI.SANDBOX001", own.as_str(), "u-py", &citizen)
        .unwrap();
    let srv = spawn(p.clone()).unwrap();
    let url = srv.url.clone();
    let args = [
        interop_dir()
            .join("oauth_client.py")
            .to_string_lossy()
            .into_owned(),
        url,
        own.as_str().to_string(),
        sandbox_resource_secret(own),
        t.token.clone(),
        other.as_str().to_string(),
        sandbox_resource_secret(other),
    ];
    let out = actix_web::rt::task::spawn_blocking(move || {
        std::process::Command::new(python()).args(args).output()
    })
    .await
    .unwrap()
    .unwrap();
    assert!(
        out.status.success(),
        "oauth_client.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["metadata_status"], 200);
    assert_eq!(v["metadata"]["issuer"], "http://platform.invalid");
    assert_eq!(v["own"]["status"], 200);
    let own_body = &v["own"]["body"];
    assert_eq!(own_body["active"], true);
    assert_eq!(own_body["aud"], own.as_str());
    assert_eq!(own_body["uid"], "F228710436");
    assert!(own_body["exp"].as_i64().unwrap() > UnixTime(0).0);
    assert_eq!(v["other"]["body"], serde_json::json!({"active": false}));
    assert_eq!(v["wrong"]["status"], 401);
    assert_eq!(v["wrong"]["www"], "Basic realm=\"mydata\"");
    assert!(!v["wrong"]["body"].as_str().unwrap().contains("active"));
    assert_eq!(v["anonymous"]["status"], 401);
    assert_eq!(v["userinfo"]["status"], 200);
    assert_eq!(v["userinfo"]["body"]["name"], "林淑芬");
    assert!(v["userinfo"]["body"].get("email").is_none());
    assert_eq!(v["userinfo_bad"]["status"], 401);
    assert_eq!(v["userinfo_bad"]["www"], "Bearer error=\"invalid_token\"");
    srv.handle.stop(true).await;
}
