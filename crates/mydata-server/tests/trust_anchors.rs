//! Issue 20 item 1 over real HTTP on 127.0.0.1: outside the sandbox a DP package is trusted only
//! when its certificate chains to a configured anchor (spec D9 step 4, D35). A self-signed DP
//! fails with its dataset code (500) while a DP whose certificate chains gets 200; a platform
//! without anchors does not start; anchors changed on disk are taken up without a restart.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mydata_dp::sandbox::{self, SandboxConfig};
use mydata_protocol::catalogue::{Catalogue, sandbox_resource_secret};
use mydata_protocol::codes::ReturnCode;
use mydata_protocol::date::UnixTime;
use mydata_protocol::ids::SecretKey;
use mydata_protocol::jwe::JweMode;
use mydata_protocol::package::dp::DpSigner;
use mydata_protocol::package::sp::PackagingMode;
use mydata_protocol::param::{ParamCipher, ParamMode};
use mydata_server::clock::{Clock, ManualClock};
use mydata_server::config::Config;
use mydata_server::engine;
use mydata_server::http::spawn;
use mydata_server::platform::{NewDp, NewSp, Platform, SANDBOX_CATALOGUE, SANDBOX_ROOT_CA};
use mydata_server::secrets::MasterKey;
use mydata_server::storage::DpMethod;
use mydata_server::trust::RELOAD_CHECK;

use common::{authenticated_tx, citizen_claims, now_real, poll_until_ready, start_sp_api};

/// A root CA's own certificate and key: a self-signed certificate, as anyone can make one.
const SELF_SIGNED_KEY: &[u8] = include_bytes!("../../../fixtures/pki/other-root-ca.key");
const SELF_SIGNED_CERT: &[u8] = include_bytes!("../../../fixtures/pki/other-root-ca.pem");

fn platform(dir: &Path, clock: &ManualClock, anchors: Vec<PathBuf>) -> Arc<Platform> {
    std::fs::create_dir_all(dir).unwrap();
    let config = Config {
        data_dir: dir.to_path_buf(),
        sandbox: false,
        dp_trust_anchors: anchors,
        ..Config::default()
    };
    let store = mydata_server::storage::open_server(&config).unwrap();
    Arc::new(
        Platform::new(
            store,
            MasterKey::generate().unwrap(),
            Arc::new(clock.clone()),
            config,
        )
        .unwrap()
        // Production rules (D35) against loopback HTTP peers (D49).
        .with_plain_http(true),
    )
}

#[actix_web::test]
async fn a_platform_outside_the_sandbox_does_not_start_without_dp_trust_anchors() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(UnixTime(now_real()));
    let p = platform(dir.path(), &clock, Vec::new());
    let e = spawn(p).unwrap_err().to_string();
    assert!(e.contains("dp_trust_anchors"), "{e}");
    // A configured anchor that cannot be read stops the platform from being built at all.
    let config = Config {
        data_dir: dir.path().to_path_buf(),
        dp_trust_anchors: vec![dir.path().join("missing.pem")],
        ..Config::default()
    };
    let store = mydata_server::storage::open_server(&config).unwrap();
    let e = Platform::new(
        store,
        MasterKey::generate().unwrap(),
        Arc::new(clock.clone()),
        config,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("missing.pem"), "{e}");
    // With one it starts.
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, SANDBOX_ROOT_CA).unwrap();
    let p = platform(&dir.path().join("2"), &clock, vec![ca]);
    spawn(p).unwrap().handle.stop(false).await;
}

/// One SP of the platform under test, as the test drives it.
struct Sp<'a> {
    p: &'a Arc<Platform>,
    url: &'a str,
    seen: &'a common::Seen,
    client_id: &'a str,
    creds: &'a mydata_server::platform::SpCredentials,
    clock: &'a ManualClock,
}

impl Sp<'_> {
    /// Consents to transaction `n` for `ids` and returns, per dataset of the SP package, its
    /// code and whether what shipped verifies against the sandbox CA.
    async fn codes_of_transaction(&self, n: usize, ids: &[&str]) -> Vec<(u16, bool)> {
        let p = self.p;
        let tx_id = format!("tx-{n}");
        let t = authenticated_tx(p, &format!("t-{n}"), self.client_id, &tx_id, ids);
        let code = engine::consent(p.clone(), t, citizen_claims(p))
            .await
            .unwrap();
        assert_eq!(code, ReturnCode::Success);
        let body = self.seen.lock().unwrap().last().unwrap().clone();
        let cipher = ParamCipher::from_raw(
            &self.creds.client_secret,
            &self.creds.cbc_iv,
            ParamMode::Cbc,
        )
        .unwrap();
        let key: SecretKey = cipher
            .decrypt(body["secret_key"].as_str().unwrap())
            .unwrap()
            .parse()
            .unwrap();
        let ticket = body["permission_ticket"].as_str().unwrap();
        let (s, jwe_text) = poll_until_ready(self.url, ticket, &tx_id).await;
        assert_eq!(s, 200, "{jwe_text}");
        let reports = common::open_delivery(&jwe_text, &key, self.client_id, self.clock.now());
        reports.iter().map(|r| (r.entry.code, r.ok())).collect()
    }
}

#[actix_web::test]
async fn outside_the_sandbox_a_self_signed_dp_package_fails_with_its_dataset_code() {
    let dir = tempfile::tempdir().unwrap();
    let anchors = dir.path().join("anchors");
    std::fs::create_dir(&anchors).unwrap();
    std::fs::write(anchors.join("government-root.pem"), SANDBOX_ROOT_CA).unwrap();
    let clock = ManualClock::new(UnixTime(now_real()));
    let p = platform(&dir.path().join("data"), &clock, vec![anchors.clone()]);
    let srv = spawn(p.clone()).unwrap();

    // Two DPs on 127.0.0.1: one signs with a certificate issued by the configured root, the
    // other with a self-signed certificate.
    let trusted = sandbox::spawn(SandboxConfig::embedded(&srv.url).unwrap())
        .await
        .unwrap();
    let mut rogue_cfg = SandboxConfig::embedded(&srv.url).unwrap();
    rogue_cfg.signer = Arc::new(DpSigner::from_pem(SELF_SIGNED_KEY, SELF_SIGNED_CERT).unwrap());
    let rogue = sandbox::spawn(rogue_cfg).await.unwrap();
    // Each DP serves its sandbox dataset under its own resource id and secret.
    let c = Catalogue::from_json(SANDBOX_CATALOGUE).unwrap();
    let register = |d: &mydata_protocol::catalogue::Dataset, base: &str| {
        p.register_dp(NewDp {
            tls_ca: None,
            resource_id: Some(d.resource_id.clone()),
            name: d.name.clone(),
            provider: d.provider.clone(),
            scopes: vec![d.scope.as_str().to_string()],
            endpoint: format!("{base}/dp/{}", d.resource_id),
            method: DpMethod::Get,
            identity_methods: d
                .identity_methods
                .iter()
                .map(|m| m.code().to_string())
                .collect(),
            secret: Some(sandbox_resource_secret(&d.resource_id)),
            claims: Vec::new(),
            template: None,
        })
        .unwrap();
        d.resource_id.to_string()
    };
    let good = register(&c.datasets[0], &trusted.base_url());
    let selfsigned = register(&c.datasets[1], &rogue.base_url());
    let (sp_url, seen) = start_sp_api();
    let (sp, creds) = p
        .register_sp(NewSp {
            tls_ca: None,
            name: "trust".into(),
            return_url: "http://127.0.0.1:1/return".into(),
            sp_api_url: sp_url,
            allowed_ips: vec!["127.0.0.1".parse().unwrap()],
            client_cert_sha256: Vec::new(),
            resources: vec![good.parse().unwrap(), selfsigned.parse().unwrap()],
            jwe_mode: JweMode::Cbc,
            packaging_mode: PackagingMode::B,
            ..NewSp::default()
        })
        .unwrap();
    let ids = [good.as_str(), selfsigned.as_str()];
    let sp = Sp {
        p: &p,
        url: &srv.url,
        seen: &seen,
        client_id: &sp.client_id,
        creds: &creds,
        clock: &clock,
    };
    let codes = sp.codes_of_transaction(1, &ids).await;
    // Nothing untrusted reached the SP: the self-signed package failed with 500.
    assert_eq!(codes, vec![(200, true), (500, true)]);

    // The operator adds the rogue's certificate as an anchor: taken up without a restart.
    std::fs::write(anchors.join("extra.pem"), SELF_SIGNED_CERT).unwrap();
    actix_web::rt::time::sleep(RELOAD_CHECK + Duration::from_millis(100)).await;
    let codes = sp.codes_of_transaction(2, &ids).await;
    // Delivered now; the test's SP trusts only the sandbox CA, so its own check refuses it.
    assert_eq!(codes, vec![(200, true), (200, false)]);
    srv.handle.stop(false).await;
}
