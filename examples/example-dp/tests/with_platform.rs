//! The example DP serves a real dataset to the reference platform: the platform registers the
//! dataset, issues a token for a transaction, and its DP-API caller calls the example-dp binary,
//! which introspects the token at the platform and answers with a signed transcript (issue 4).

use std::io::Read;
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mydata_protocol::codes::DatasetCode;
use mydata_protocol::package::dp::{self, TrustAnchors, VerifyOptions};
use mydata_server::auth::CitizenClaims;
use mydata_server::clock::{SharedClock, SystemClock};
use mydata_server::config::Config;
use mydata_server::dpcall;
use mydata_server::http::spawn;
use mydata_server::platform::{NewDp, Platform, SANDBOX_ROOT_CA};
use mydata_server::secrets::MasterKey;
use mydata_server::storage::DpMethod;
use mydata_server::storage::sqlite::SqliteStore;

/// The DP's introspection cache in this test, in seconds (`--introspection-cache-secs`).
const CACHE_SECS: u64 = 2;

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn fixture(name: &str) -> String {
    format!("{}/../../fixtures/pki/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[actix_web::test]
async fn example_dp_serves_the_platform() {
    let clock: SharedClock = Arc::new(SystemClock);
    let store = Arc::new(SqliteStore::in_memory().unwrap());
    let p = Arc::new(
        Platform::new(
            store,
            MasterKey::generate().unwrap(),
            clock.clone(),
            // Outside the sandbox the platform needs the CA its DPs chain to (spec D35).
            Config {
                dp_trust_anchors: vec![fixture("sandbox-root-ca.pem").into()],
                ..Config::default()
            },
        )
        .unwrap()
        // Production rules (D35) against loopback HTTP peers (D49).
        .with_plain_http(true),
    );
    let platform = spawn(p.clone()).unwrap();
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}/dp/household-transcript");
    let (rec, secret) = p
        .register_dp(NewDp {
            tls_ca: None,
            resource_id: None,
            name: "戶籍謄本".into(),
            provider: "內政部戶政司".into(),
            scopes: vec!["moi.household.transcript".into()],
            secret: None,
            endpoint: endpoint.clone(),
            method: DpMethod::Get,
            claims: vec![],
            identity_methods: vec!["PII".into()],
            template: None,
        })
        .unwrap();
    let _dp = Running(
        Command::new(env!("CARGO_BIN_EXE_example-dp"))
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .args([
                "--platform",
                &platform.url,
                "--resource-id",
                &rec.resource_id,
            ])
            .env("MYDATA_RESOURCE_SECRET", &secret)
            // The SDK reuses an introspection answer (30 s by default); a short cache lets the
            // revocation below be seen without a long wait.
            .args(["--introspection-cache-secs", &CACHE_SECS.to_string()])
            .args([
                "--key",
                &fixture("dp-moi.key"),
                "--cert",
                &fixture("dp-moi.pem"),
            ])
            .spawn()
            .unwrap(),
    );
    let client = dpcall::client();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ok = client
            .get(format!("{endpoint}?heartbeat=true"))
            .send()
            .await
            .map(|r| r.status().as_u16() == 200)
            .unwrap_or(false);
        if ok {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "example-dp did not answer its heartbeat within 60 s"
        );
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }

    let citizen = CitizenClaims {
        sub: "6f1d2c3b-4a59-4e8f-9a0b-1c2d3e4f5a6b".into(),
        uid: "A120345672".into(),
        uid_type: "NID".into(),
        birthdate: Some("1988-01-01".into()),
        name: Some("王大明".into()),
        email: None,
    };
    let t = p
        .issue_token(
            "tx-ex",
            "CLI.SANDBOX001",
            &rec.resource_id,
            "2d1c0b9a-8f7e-4d6c-9b5a-4e3f2a1b0c9d",
            &citizen,
        )
        .unwrap();
    let trust = Arc::new(TrustAnchors::from_pem(&[SANDBOX_ROOT_CA]).unwrap());
    let r = dpcall::run_series(
        &client,
        &clock,
        &rec,
        &t.token,
        &t.record.transaction_uid,
        Some(trust.clone()),
    )
    .await;
    assert_eq!(r.code, DatasetCode::Delivered, "calls {}", r.calls);
    let pkg = r.package.unwrap();
    let v = dp::verify(
        std::io::Cursor::new(&pkg[..]),
        &VerifyOptions {
            trust: Some(&trust),
            ..VerifyOptions::at(clock.now())
        },
    )
    .unwrap();
    let names: Vec<String> = v.files.iter().map(|f| f.name.clone()).collect();
    assert!(names.contains(&"transcript.json".to_string()), "{names:?}");
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(&pkg[..])).unwrap();
    let mut text = String::new();
    zip.by_name("transcript.json")
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    assert!(text.contains("A120345672"), "{text}");

    // A control transaction, delivered too: its token stays valid throughout.
    let ctl = p
        .issue_token(
            "tx-ctl",
            "CLI.SANDBOX001",
            &rec.resource_id,
            "4f3e2d1c-0b9a-4f8e-9d7c-6b5a4f3e2d1c",
            &citizen,
        )
        .unwrap();
    let r = dpcall::run_series(
        &client,
        &clock,
        &rec,
        &ctl.token,
        &ctl.record.transaction_uid,
        Some(trust.clone()),
    )
    .await;
    assert_eq!(r.code, DatasetCode::Delivered, "control: calls {}", r.calls);

    // The platform revokes the first transaction. The DP introspected its token for the series
    // above and keeps that answer up to CACHE_SECS; once the cache may no longer hold it, the DP
    // asks again and refuses the same token (401), where before it answered the finished call
    // series again (200).
    let call = |token: String, transaction_uid: String| {
        let (client, endpoint) = (client.clone(), endpoint.clone());
        async move {
            client
                .get(format!("{endpoint}?transaction_uid={transaction_uid}"))
                .insert_header(("Authorization", format!("Bearer {token}")))
                .insert_header(("Accept", "application/zip"))
                .send()
                .await
                .expect("the DP answers")
                .status()
                .as_u16()
        }
    };
    assert_eq!(
        call(t.token.clone(), t.record.transaction_uid.clone()).await,
        200,
        "before the revocation the same call is answered again"
    );
    p.revoke_transaction_tokens("tx-ex").unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    loop {
        let status = call(t.token.clone(), t.record.transaction_uid.clone()).await;
        seen.push(status);
        if status == 401 {
            break;
        }
        assert_eq!(status, 200, "only the cached answer or a refusal: {seen:?}");
        assert!(
            Instant::now() < deadline,
            "the DP still accepts the revoked token 60 s after the revocation, with a \
             {CACHE_SECS} s introspection cache: {seen:?}"
        );
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }
    // Not a DP that refuses everything by now: the control token is still accepted.
    assert_eq!(
        call(ctl.token.clone(), ctl.record.transaction_uid.clone()).await,
        200,
        "the control transaction's token"
    );

    // A token revoked before the DP ever saw it is refused from the first call.
    let t2 = p
        .issue_token(
            "tx-ex2",
            "CLI.SANDBOX001",
            &rec.resource_id,
            "3e2d1c0b-9a8f-4e7d-8c6b-5a4f3e2d1c0b",
            &citizen,
        )
        .unwrap();
    p.revoke_transaction_tokens("tx-ex2").unwrap();
    assert_eq!(
        call(t2.token.clone(), t2.record.transaction_uid.clone()).await,
        401
    );
    platform.handle.stop(true).await;
}
