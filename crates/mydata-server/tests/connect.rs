//! The authorization server over real HTTP on 127.0.0.1 (issue 4): introspection, userinfo,
//! metadata, expiry on the injected clock, revocation at purge, restart.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use mydata_protocol::catalogue::sandbox_resource_secret;
use mydata_protocol::date::UnixTime;
use mydata_protocol::ids::ResourceId;
use mydata_server::auth::CitizenClaims;
use mydata_server::clock::ManualClock;
use mydata_server::config::Config;
use mydata_server::http::spawn;
use mydata_server::platform::Platform;
use mydata_server::secrets::MasterKey;
use mydata_server::storage::sqlite::SqliteStore;
use serde_json::Value;

const T0: i64 = 1_767_225_600;
/// Two sandbox datasets of fixtures/catalogue.json.
const HOUSEHOLD: &str = "API.ARPPI3VTCB";

fn citizen() -> CitizenClaims {
    CitizenClaims {
        sub: "0d9c2b7e-5f0a-4b8e-a2c4-7e1f3d6a9b20".into(),
        uid: "A120345672".into(),
        uid_type: "NID".into(),
        birthdate: Some("1988-01-01".into()),
        name: Some("王大明".into()),
        email: Some("wang.daming@example.test".into()),
    }
}

fn platform(store: Arc<SqliteStore>, clock: ManualClock, key: MasterKey) -> Arc<Platform> {
    let config = Config {
        sandbox: true,
        ..Config::default()
    };
    let p = Platform::new(store, key, Arc::new(clock), config).unwrap();
    p.load_sandbox().unwrap();
    Arc::new(p)
}

fn basic(id: &str, secret: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")))
}

async fn introspect(url: &str, auth: Option<String>, body: &str) -> (u16, Value, String) {
    let client = awc::Client::default();
    let mut req = client
        .post(format!("{url}/connect/introspect"))
        .content_type("application/x-www-form-urlencoded");
    if let Some(a) = auth {
        req = req.insert_header(("Authorization", a));
    }
    let mut resp = req.send_body(body.to_string()).await.unwrap();
    let status = resp.status().as_u16();
    let www = resp
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let bytes = resp.body().await.unwrap();
    let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, v, www)
}

fn second_dataset() -> String {
    let c = mydata_protocol::catalogue::Catalogue::from_json(
        mydata_server::platform::SANDBOX_CATALOGUE,
    )
    .unwrap();
    c.datasets[1].resource_id.as_str().to_string()
}

#[actix_web::test]
async fn introspection_userinfo_and_metadata_over_http() {
    let clock = ManualClock::new(UnixTime(T0));
    let store = Arc::new(SqliteStore::in_memory().unwrap());
    let p = platform(store, clock.clone(), MasterKey::from_bytes([9; 32]));
    let other = second_dataset();
    let srv = spawn(p.clone()).unwrap();
    let url = srv.url.clone();

    let t = p
        .issue_token(
            "tx-1",
            "CLI.SANDBOX001",
            HOUSEHOLD,
            "c2a4e0f6-8d1b-4f3e-b5a7-19e2d4c6f801",
            &citizen(),
        )
        .unwrap();
    let good = || {
        Some(basic(
            HOUSEHOLD,
            &sandbox_resource_secret(&HOUSEHOLD.parse::<ResourceId>().unwrap()),
        ))
    };
    let body = format!("token={}", t.token);

    // Live token, its own dataset: active with the spec's fields.
    let (s, v, _) = introspect(&url, good(), &body).await;
    assert_eq!(s, 200);
    assert_eq!(v["active"], true);
    assert_eq!(v["aud"], HOUSEHOLD);
    assert_eq!(v["uid"], "A120345672");
    assert_eq!(v["client_id"], "CLI.SANDBOX001");
    assert_eq!(v["transaction_uid"], "c2a4e0f6-8d1b-4f3e-b5a7-19e2d4c6f801");
    assert_eq!(v["exp"], T0 + 7200);
    assert_eq!(v["iat"], T0);
    assert_eq!(v["token_type"], "Bearer");

    // Another dataset with valid credentials: inactive, exactly {"active":false}.
    let other_auth = basic(
        &other,
        &sandbox_resource_secret(&other.parse::<ResourceId>().unwrap()),
    );
    let (s, v, _) = introspect(&url, Some(other_auth), &body).await;
    assert_eq!((s, v), (200, serde_json::json!({"active": false})));

    // Wrong secret, unknown id, missing or malformed credentials: 401, nothing about the token.
    for auth in [
        Some(basic(HOUSEHOLD, "wrongwrongwrong1")),
        Some(basic("API.ZZZZZZZZZZ", "wrongwrongwrong1")),
        Some("Basic !!!".to_string()),
        Some(format!("Bearer {}", t.token)),
        None,
    ] {
        let (s, v, www) = introspect(&url, auth.clone(), &body).await;
        assert_eq!(s, 401, "{auth:?}");
        assert_eq!(www, "Basic realm=\"mydata\"");
        assert!(v.get("active").is_none());
    }

    // Missing token: 400 invalid_request (after authentication).
    let (s, v, _) = introspect(&url, good(), "token_type_hint=access_token").await;
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_request")));

    // Userinfo: the claims the dataset may see.
    let client = awc::Client::default();
    let mut r = client
        .get(format!("{url}/connect/userinfo"))
        .insert_header(("Authorization", format!("Bearer {}", t.token)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let claims: Value = r.json().await.unwrap();
    assert_eq!(claims["uid"], "A120345672");
    assert_eq!(claims["birthdate"], "1988-01-01");
    assert_eq!(claims["name"], "王大明");
    let r = client
        .get(format!("{url}/connect/userinfo"))
        .insert_header(("Authorization", "Bearer not-a-token"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(
        r.headers().get("www-authenticate").unwrap(),
        "Bearer error=\"invalid_token\""
    );
    let r = client
        .get(format!("{url}/connect/userinfo"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);

    // Metadata.
    let mut r = client
        .get(format!("{url}/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap();
    let m: Value = r.json().await.unwrap();
    assert_eq!(
        m["introspection_endpoint"],
        "http://127.0.0.1:8080/connect/introspect"
    );
    assert_eq!(
        m["introspection_endpoint_auth_methods_supported"][0],
        "client_secret_basic"
    );
    assert!(m.get("token_endpoint").is_none());

    // Expiry on the injected clock.
    clock.advance(7199);
    assert_eq!(introspect(&url, good(), &body).await.1["active"], true);
    clock.advance(1);
    assert_eq!(introspect(&url, good(), &body).await.1["active"], false);
    let r = client
        .get(format!("{url}/connect/userinfo"))
        .insert_header(("Authorization", format!("Bearer {}", t.token)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    srv.handle.stop(true).await;
}

#[actix_web::test]
async fn purge_revokes_and_restart_keeps_live_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("mydata.sqlite");
    let key = MasterKey::from_bytes([4; 32]);
    let clock = ManualClock::new(UnixTime(T0));
    let store = Arc::new(SqliteStore::open(&db).unwrap());
    let p = platform(store, clock.clone(), key.clone());
    let a = p
        .issue_token("tx-a", "CLI.SANDBOX001", HOUSEHOLD, "u-a", &citizen())
        .unwrap();
    let b = p
        .issue_token("tx-b", "CLI.SANDBOX001", HOUSEHOLD, "u-b", &citizen())
        .unwrap();
    drop(p);

    // A restarted server (same data directory and key) still knows both tokens.
    let p = platform(
        Arc::new(SqliteStore::open(&db).unwrap()),
        clock.clone(),
        key,
    );
    let srv = spawn(p.clone()).unwrap();
    let good = || {
        Some(basic(
            HOUSEHOLD,
            &sandbox_resource_secret(&HOUSEHOLD.parse::<ResourceId>().unwrap()),
        ))
    };
    assert_eq!(
        introspect(&srv.url, good(), &format!("token={}", a.token))
            .await
            .1["active"],
        true
    );

    // Purging transaction a revokes its token at once, in memory and in the database.
    assert_eq!(p.revoke_transaction_tokens("tx-a").unwrap(), 1);
    assert_eq!(
        introspect(&srv.url, good(), &format!("token={}", a.token))
            .await
            .1["active"],
        false
    );
    assert_eq!(
        introspect(&srv.url, good(), &format!("token={}", b.token))
            .await
            .1["active"],
        true
    );
    assert_eq!(p.store.live_tokens(UnixTime(T0)).unwrap().len(), 1);

    // The database holds keyed hashes only, never a token or a resource secret.
    let raw = std::fs::read(&db).unwrap();
    let wal = std::fs::read(dir.path().join("mydata.sqlite-wal")).unwrap_or_default();
    for hay in [&raw, &wal] {
        assert!(!hay.windows(43).any(|w| w == b.token.as_bytes()));
        let secret = sandbox_resource_secret(&HOUSEHOLD.parse::<ResourceId>().unwrap());
        assert!(!hay.windows(16).any(|w| w == secret.as_bytes()));
    }
    clock.advance(7200);
    assert_eq!(p.sweep_tokens().unwrap(), 1);
    assert_eq!(p.auth.token_count(), 0);
    srv.handle.stop(true).await;
}
