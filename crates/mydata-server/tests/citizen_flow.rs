//! The citizen pages over real HTTP on 127.0.0.1 (issue 3, item 3): the redirect, terms, basic
//! information, two documents or an e-mailed one-time password (through a real SMTP exchange with
//! a local sink), consent, and every return code these pages produce.

mod common;

use common::*;
use mydata_protocol::flow::percent_encode;
use mydata_protocol::ids::{ResourceId, SecretKey};
use mydata_protocol::jwe::JweMode;
use mydata_protocol::package::dp::TrustAnchors;
use mydata_protocol::package::sp::PackagingMode;
use mydata_server::clock::Clock;
use mydata_server::platform::SANDBOX_ROOT_CA;
use mydata_sp::package::Expectations;
use serde_json::Value;
use std::time::{Duration, Instant};

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
    // The SP opens it as an SP does, with the SP SDK: the `secret_key` of the SP-API call,
    // decrypted with the SP's own credentials, decrypts the JWE; the SP package (mode B, the
    // datasets asked for, in order) and each DP package verify against the sandbox CA; and
    // each dataset holds this citizen's record.
    let key: SecretKey = cipher(&creds)
        .decrypt(calls[0]["secret_key"].as_str().unwrap())
        .unwrap()
        .parse()
        .unwrap();
    let sp = mydata_sp::SpConfig::new(
        w.srv.url.as_str(),
        creds.client_id.parse().unwrap(),
        creds.client_secret.parse().unwrap(),
        creds.cbc_iv.parse().unwrap(),
        RETURN,
    )
    .with_mode(JweMode::Gcm)
    .with_packaging_mode(PackagingMode::B);
    let trust = TrustAnchors::from_pem(&[SANDBOX_ROOT_CA]).unwrap();
    let requested: Vec<ResourceId> = ids.iter().map(|i| i.parse().unwrap()).collect();
    let delivered = sp
        .open_package(
            &jwe,
            &key,
            &Expectations::at(w.clock.now())
                .trust(&trust)
                .requested(&requested),
        )
        .unwrap_or_else(|e| panic!("the SP cannot open the delivery: {e:?}"));
    assert_eq!(delivered.datasets.len(), ids.len());
    for id in &requested {
        let d = delivered
            .dataset(id)
            .unwrap_or_else(|| panic!("{id} not delivered"));
        assert_eq!(d.code, 200, "{id}");
        assert!(d.verification.is_verified(), "{id}: {:?}", d.verification);
        let data = d
            .files
            .iter()
            .find(|f| f.name.ends_with("data.json"))
            .unwrap_or_else(|| panic!("{id}: no data.json"));
        let doc: Value = serde_json::from_slice(&data.bytes).unwrap();
        assert_eq!(doc["resource_id"], id.as_str(), "{id}");
        assert_eq!(doc["person"]["national_id"], CITIZEN, "{id}: {doc}");
        assert_eq!(doc["person"]["name"], "王大明", "{id}: {doc}");
    }
    // Another key does not open it.
    assert!(
        sp.open_package(
            &jwe,
            &SecretKey::generate().unwrap(),
            &Expectations::at(w.clock.now())
        )
        .is_err()
    );
    let (status, _) = poll_until_ready(&w.srv.url, ticket, "tx-pii-1").await;
    assert_eq!(status, 201);

    // A reload of the flow page after the return goes back to the SP with the same outcome
    // (D46); another browser still gets the 403 page.
    let after = b.get(&flow).await;
    assert_eq!(after.returned(&creds), (200, Some("tx-pii-1".to_string())));
    let other = Browser::new(&w.srv.url).get(&flow).await;
    assert_eq!(other.status, 403);
}

#[actix_web::test]
async fn refusal_mismatch_conflict_and_bad_forms() {
    let w = world().await;
    let ids = pii_datasets(1);
    let creds = w.register(PackagingMode::A, &ids);

    // Refusal: 205 and no SP-API call.
    let mut b = Browser::new(&w.srv.url);
    let (flow, page) = b
        .open(&w.redirect(&creds, &ids, "tx-refuse", CITIZEN))
        .await;
    let p = b.through_basic(&flow, page, CITIZEN, "0770101").await;
    let p = b.two_documents(&flow, &p.csrf()).await;
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
    let a = b.get(&w.redirect(&creds, &ids, "tx-other", OTHER)).await;
    assert_eq!(a.returned(&creds), (409, Some("tx-other".to_string())));

    // Another person's ID on the basic-information page: 409.
    let mut b2 = Browser::new(&w.srv.url);
    let (flow, page) = b2
        .open(&w.redirect(&creds, &ids, "tx-mismatch", CITIZEN))
        .await;
    let a = b2.through_basic(&flow, page, OTHER, "0640315").await;
    assert_eq!(a.returned(&creds), (409, Some("tx-mismatch".to_string())));

    // A used pair cannot start again (D19): 400.
    let mut b3 = Browser::new(&w.srv.url);
    let a = b3
        .get(&w.redirect(&creds, &ids, "tx-mismatch", CITIZEN))
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
    let a = b.get(&w.redirect(&creds, &[other], "tx-r2", CITIZEN)).await;
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
    let a = b.get(&w.redirect(&creds, &ids, "tx-r5", CITIZEN)).await;
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
    let (flow, page) = b.open(&w.redirect(&creds, &ids, "tx-lock", CITIZEN)).await;
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
    p = b.two_documents(&flow, &p.csrf()).await;
    assert_eq!(p.step(), "identity");
    assert!(p.body.contains("id=\"locked\""));
    // 15 minutes later they are.
    w.clock.advance(900);
    let p = b.get(&flow).await;
    assert!(!p.body.contains("id=\"locked\""));
    let p = b.two_documents(&flow, &p.csrf()).await;
    assert_eq!(p.step(), "consent");

    // Idle for more than 1,200 s before consent: 408.
    w.clock.advance(1_201);
    let mut b2 = Browser::new(&w.srv.url);
    let (flow2, _) = b2.open(&w.redirect(&creds, &ids, "tx-idle", CITIZEN)).await;
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
    let (flow, page) = b.open(&w.redirect(&creds, &ids, "tx-otp", CITIZEN)).await;
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
    // Issuers for the health card only: a dataset taking only CER and TFD has no method here.
    let pki = tempfile::tempdir().unwrap();
    for f in ["health-ca.pem", "health-ca.crl", "certificates.json"] {
        std::fs::copy(identity_fixture(f), pki.path().join(f)).unwrap();
    }
    let dir = pki.path().to_string_lossy().into_owned();
    let w = world_custom(&[], None, |c| c.identity_pki = dir).await;
    let ids = vec![cer_only_dataset()];
    let creds = w.register(PackagingMode::A, &ids);
    let mut b = Browser::new(&w.srv.url);
    let (flow, page) = b.open(&w.redirect(&creds, &ids, "tx-cer", CITIZEN)).await;
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
    let r: Value = common::run_interop("browser_flow.py", args).await;
    assert_eq!(
        r["steps"],
        serde_json::json!(["terms", "basic", "identity", "consent"])
    );
    let rows = r["consent_rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    // Rows name their datasets (the internal code is not shown, issue 14).
    let name = w.p.store.get_dp(&ids[0]).unwrap().unwrap().name;
    assert!(rows[0].as_str().unwrap().contains(&name), "{rows:?}");
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

/// An SP that polls with its ticket before it has even answered the SP-API call gets 429 (the
/// ticket is known and the package not ready), never 403; the later poll delivers (D22, D25).
#[actix_web::test]
async fn poll_racing_the_sp_api_acknowledgement_gets_429() {
    use actix_web::{App, HttpResponse, HttpServer, web};
    use std::sync::{Arc, Mutex};

    let w = world().await;
    let ids = pii_datasets(1);
    type Polled = Arc<Mutex<Vec<(u16, Option<String>)>>>;
    let polled: Polled = Arc::new(Mutex::new(Vec::new()));
    let (p2, base) = (polled.clone(), w.srv.url.clone());
    let srv = HttpServer::new(move || {
        let (polled, base) = (p2.clone(), base.clone());
        App::new().route(
            "/sp-api",
            web::post().to(move |body: web::Json<Value>| {
                let (polled, base) = (polled.clone(), base.clone());
                async move {
                    let ticket = body["permission_ticket"].as_str().unwrap_or("").to_string();
                    let tx_id = body["tx_id"].as_str().unwrap_or("").to_string();
                    let r = awc::Client::default()
                        .get(format!("{base}/service/data"))
                        .insert_header(("permission_ticket", ticket))
                        .insert_header(("tx_id", tx_id))
                        .send()
                        .await
                        .unwrap();
                    let retry = r
                        .headers()
                        .get("Retry-After")
                        .map(|v| v.to_str().unwrap().to_string());
                    polled.lock().unwrap().push((r.status().as_u16(), retry));
                    HttpResponse::Ok().finish()
                }
            }),
        )
    })
    .workers(1)
    .bind("127.0.0.1:0")
    .unwrap();
    let addr = srv.addrs()[0];
    actix_web::rt::spawn(srv.run());
    let creds =
        w.p.register_sp(mydata_server::platform::NewSp {
            tls_ca: None,
            name: "Eager SP".into(),
            purpose: "testing".into(),
            return_url: RETURN.into(),
            sp_api_url: format!("http://{addr}/sp-api"),
            allowed_ips: vec!["127.0.0.1".parse().unwrap()],
            client_cert_sha256: Vec::new(),
            resources: ids.iter().map(|i| i.parse().unwrap()).collect(),
            jwe_mode: mydata_protocol::jwe::JweMode::Gcm,
            packaging_mode: PackagingMode::B,
            ..Default::default()
        })
        .unwrap()
        .1;
    let mut b = Browser::new(&w.srv.url);
    let (flow, page) = b.open(&w.redirect(&creds, &ids, "tx-eager", CITIZEN)).await;
    let p = b.through_basic(&flow, page, CITIZEN, "0770101").await;
    let p = b.two_documents(&flow, &p.csrf()).await;
    assert_eq!(p.step(), "consent");
    let a = b
        .submit(&flow, "consent", &p.csrf(), &[("decision", "agree")])
        .await;
    assert_eq!(a.returned(&creds), (200, Some("tx-eager".to_string())));
    let seen = polled.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].0, 429, "a poll inside the SP-API call: {seen:?}");
    assert!(
        seen[0]
            .1
            .as_deref()
            .is_some_and(|v| v.parse::<u64>().is_ok()),
        "429 carries Retry-After: {seen:?}"
    );
}

/// `f`, or a failed test after 180 s: a poll that would wait for ever ends the test with a
/// message instead of hanging it.
async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    actix_web::rt::time::timeout(Duration::from_secs(180), f)
        .await
        .expect("no answer within 180 s")
}

/// Packages wait in memory (D47). One lost with a restart ends its transaction with 504
/// instead of answering 500 until the purge.
#[actix_web::test]
async fn a_package_lost_from_memory_ends_with_504() {
    let w = world().await;
    let ids = pii_datasets(1);
    let creds = w.register(PackagingMode::B, &ids);
    let mut b = Browser::new(&w.srv.url);
    let url = redirect_url(&w.srv.url, &creds, &ids, "tx-lost-1", CITIZEN, RETURN);
    let (flow, page) = b.open(&url).await;
    let p = b.through_basic(&flow, page, CITIZEN, "0770101").await;
    let p = b.two_documents(&flow, &p.csrf()).await;
    let a = b
        .submit(&flow, "consent", &p.csrf(), &[("decision", "agree")])
        .await;
    assert_eq!(a.returned(&creds).0, 200);
    let ticket = w.sp_api_calls()[0]["permission_ticket"]
        .as_str()
        .unwrap()
        .to_string();
    // Wait until packaged, without polling (a poll would take it); a transaction that ends
    // otherwise, or never gets there, fails the test rather than hanging it.
    let deadline = Instant::now() + Duration::from_secs(120);
    let tx = loop {
        let tx =
            w.p.store
                .find_tx(creds.client_id.as_str(), "tx-lost-1")
                .unwrap()
                .expect("the transaction exists");
        if tx.state == mydata_server::engine::state::READY {
            break tx;
        }
        assert!(
            tx.state != mydata_server::engine::state::ENDED,
            "ended before it was packaged: {tx:?}"
        );
        assert!(
            Instant::now() < deadline,
            "not packaged within 120 s: state {:?}",
            tx.state
        );
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    };
    let path = tx.package_path.clone().unwrap();
    assert!(path.starts_with("memory:"), "{path}");
    assert!(w.p.packages.bytes_in_memory() > 0);
    // What a restart does to it.
    w.p.packages.remove(&path);
    let poll = || within(poll_until_ready(&w.srv.url, &ticket, "tx-lost-1"));
    let (status, _) = poll().await;
    assert_eq!(status, 504);
    let (status, _) = poll().await;
    assert_eq!(status, 504, "and stays so");
    let tx =
        w.p.store
            .find_tx(creds.client_id.as_str(), "tx-lost-1")
            .unwrap()
            .unwrap();
    assert_eq!(tx.state, mydata_server::engine::state::ENDED);
    assert_eq!(tx.code, Some(504));
    assert!(tx.pid_sealed.is_none() && tx.secret_key_sealed.is_none());
}

/// D46: at most one one-time password per 120 s, per transaction and per destination. Dropping
/// the cookie and reloading the SP's redirect, or opening another transaction for the same
/// person, does not send a second code early (issue 20 item 8).
#[actix_web::test]
async fn otp_resend_limit_survives_a_new_cookie_and_another_transaction() {
    let w = world().await;
    let ids = vec!["API.OTPDEMO001".to_string()];
    let creds = w.register(PackagingMode::A, &ids);
    let sent = || w.mails.lock().unwrap().len();
    let to_identity = |tx: &'static str| {
        let w = &w;
        let creds = &creds;
        let ids = &ids;
        async move {
            let mut b = Browser::new(&w.srv.url);
            let (flow, page) = b.open(&w.redirect(creds, ids, tx, CITIZEN)).await;
            let p = b.through_basic(&flow, page, CITIZEN, "0770101").await;
            assert!(p.body.contains("id=\"method-otp\""), "{}", p.body);
            (b, flow, p)
        }
    };
    let (mut b1, flow1, p) = to_identity("tx-otp-a").await;
    b1.submit(&flow1, "otp-send", &p.csrf(), &[("channel", "email")])
        .await;
    assert_eq!(sent(), 1);

    // No cookie: the SP's redirect again, the same transaction resumed in a new session.
    let (mut b2, flow2, p) = to_identity("tx-otp-a").await;
    assert_eq!(flow2, flow1, "the same transaction is resumed");
    let p = b2
        .submit(&flow2, "otp-send", &p.csrf(), &[("channel", "email")])
        .await;
    assert_eq!(sent(), 1, "a second code within 120 s");
    assert!(
        p.body.contains("before asking for a new code"),
        "{}",
        p.body
    );

    // Another transaction for the same person: the same address, so no code either.
    let (mut b3, flow3, p) = to_identity("tx-otp-b").await;
    let p3 = b3
        .submit(&flow3, "otp-send", &p.csrf(), &[("channel", "email")])
        .await;
    assert_eq!(sent(), 1, "a second code to the same address within 120 s");

    // 120 s later a new code goes out.
    w.clock.advance(120);
    b3.submit(&flow3, "otp-send", &p3.csrf(), &[("channel", "email")])
        .await;
    assert_eq!(sent(), 2);
}

/// §14, D37: every outcome leaves a transfer record with its code: the 200 of an acknowledged
/// consent, and the endings 205 (refused), 409 (someone else at the keyboard) and 410 (the
/// SP-API failed), each under the citizen's keyed hash (issue 20 item 11).
#[actix_web::test]
async fn every_outcome_leaves_a_transfer_record_with_its_code() {
    let w = world().await;
    let ids = pii_datasets(1);
    let creds = w.register(PackagingMode::B, &ids);
    let subject = w.p.subject_hash(CITIZEN);
    let returns = || {
        w.p.store.flush().unwrap();
        let mut codes: Vec<(String, i32)> =
            w.p.store
                .transfers_of(&subject)
                .unwrap()
                .into_iter()
                .filter(|t| t.kind == "return")
                .map(|t| (t.resource_id.unwrap_or_default(), t.code))
                .collect();
        codes.sort();
        codes
    };
    let to_consent = |tx: &'static str| {
        let (w, creds, ids) = (&w, &creds, &ids);
        async move {
            let mut b = Browser::new(&w.srv.url);
            let (flow, page) = b.open(&w.redirect(creds, ids, tx, CITIZEN)).await;
            let p = b.through_basic(&flow, page, CITIZEN, "0770101").await;
            let p = b.two_documents(&flow, &p.csrf()).await;
            assert_eq!(p.step(), "consent");
            (b, flow, p)
        }
    };
    // 200, then 205.
    let (mut b, flow, p) = to_consent("tx-rec-ok").await;
    let a = b
        .submit(&flow, "consent", &p.csrf(), &[("decision", "agree")])
        .await;
    assert_eq!(a.returned(&creds).0, 200);
    let (mut b, flow, p) = to_consent("tx-rec-refused").await;
    let a = b
        .submit(&flow, "consent", &p.csrf(), &[("decision", "refuse")])
        .await;
    assert_eq!(a.returned(&creds).0, 205);
    // 409: another person's national ID on the basic page.
    let mut b = Browser::new(&w.srv.url);
    let (flow, page) = b
        .open(&w.redirect(&creds, &ids, "tx-rec-409", CITIZEN))
        .await;
    let a = b.through_basic(&flow, page, OTHER, "0770101").await;
    assert_eq!(a.returned(&creds).0, 409);
    let ds = ids[0].clone();
    assert_eq!(
        returns(),
        vec![(ds.clone(), 200), (ds.clone(), 205), (ds.clone(), 409)]
    );
    // 410: an SP-API that fails.
    let (url, _, _) = common::start_sp_api_answering(500);
    let failing =
        w.p.register_sp(mydata_server::platform::NewSp {
            tls_ca: None,
            name: "failing".into(),
            return_url: RETURN.into(),
            sp_api_url: url,
            allowed_ips: vec!["127.0.0.1".parse().unwrap()],
            client_cert_sha256: Vec::new(),
            resources: ids.iter().map(|i| i.parse().unwrap()).collect(),
            jwe_mode: mydata_protocol::jwe::JweMode::Gcm,
            ..Default::default()
        })
        .unwrap()
        .1;
    let mut b = Browser::new(&w.srv.url);
    let url = common::redirect_url(&w.srv.url, &failing, &ids, "tx-rec-410", CITIZEN, RETURN);
    let (flow, page) = b.open(&url).await;
    let p = b.through_basic(&flow, page, CITIZEN, "0770101").await;
    let p = b.two_documents(&flow, &p.csrf()).await;
    let a = b
        .submit(&flow, "consent", &p.csrf(), &[("decision", "agree")])
        .await;
    assert_eq!(a.returned(&failing).0, 410);
    assert!(returns().contains(&(ds, 410)), "{:?}", returns());
}

/// D1: a `pid` that is not Base64, one that does not decrypt (a failed GCM tag), and one that
/// decrypts to something that is not an identifier get one and the same answer: 302 back to the
/// SP with code 400 and nothing else that differs, so the platform is no decryption oracle. (The
/// error value keeps its cause for local tools such as `mydata param decrypt`, D1.)
#[actix_web::test]
async fn pid_decryption_failures_get_one_answer() {
    let w = world().await;
    let ids = pii_datasets(1);
    let creds = w.register(PackagingMode::B, &ids);
    let not_an_id = cipher(&creds).encrypt("HELLO-WORLD").unwrap();
    let wrong_key = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [7u8; 40]);
    let mut seen = Vec::new();
    for (n, pid) in ["!!not base64!!", wrong_key.as_str(), not_an_id.as_str()]
        .iter()
        .enumerate()
    {
        let tx = format!("tx-d1-{n}");
        let url = format!(
            "{}/service/{}/{}/{tx}?returnUrl={}&pid={}",
            w.srv.url,
            creds.client_id,
            percent_encode(&segment(&ids)),
            percent_encode(RETURN),
            percent_encode(pid)
        );
        let a = Browser::new(&w.srv.url).get(&url).await;
        assert_eq!(a.returned(&creds), (400, Some(tx)), "{a:?}");
        // The same shape: status, body, and the Location without its (randomly encrypted) tx_id.
        let loc = a.location.clone().unwrap();
        let shape: Vec<String> =
            url::form_urlencoded::parse(loc.split_once('?').unwrap().1.as_bytes())
                .filter(|(k, _)| k != "tx_id")
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
        seen.push((a.status, a.body.clone(), shape));
    }
    assert!(seen.windows(2).all(|p| p[0] == p[1]), "{seen:?}");
}

/// D46 session reuse: a browser whose platform session already verified this person skips the
/// identity page in the next transaction (terms, basic information and consent are asked again).
#[actix_web::test]
async fn an_authenticated_session_skips_identity_for_the_same_person() {
    let w = world().await;
    let ids = pii_datasets(1);
    let creds = w.register(PackagingMode::B, &ids);
    let mut b = Browser::new(&w.srv.url);
    let (flow, page) = b.open(&w.redirect(&creds, &ids, "tx-first", CITIZEN)).await;
    let p = b.through_basic(&flow, page, CITIZEN, "0770101").await;
    assert_eq!(p.step(), "identity");
    let p = b.two_documents(&flow, &p.csrf()).await;
    let a = b
        .submit(&flow, "consent", &p.csrf(), &[("decision", "agree")])
        .await;
    assert_eq!(a.returned(&creds).0, 200);
    // The next transaction in the same browser: terms, basic information, then consent.
    let (flow, page) = b
        .open(&w.redirect(&creds, &ids, "tx-second", CITIZEN))
        .await;
    let p = b.through_basic(&flow, page, CITIZEN, "0770101").await;
    assert_eq!(p.step(), "consent", "{}", p.body);
    // A new browser is asked to verify again.
    let mut fresh = Browser::new(&w.srv.url);
    let (flow, page) = fresh
        .open(&w.redirect(&creds, &ids, "tx-third", CITIZEN))
        .await;
    let p = fresh.through_basic(&flow, page, CITIZEN, "0770101").await;
    assert_eq!(p.step(), "identity");
}

/// D21 mode B: a dataset that is stopped does not end the transaction; the consent page lists it
/// as unavailable next to the others.
#[actix_web::test]
async fn mode_b_consent_page_lists_unavailable_datasets() {
    let w = world().await;
    let ids = pii_datasets(2);
    let creds = w.register(PackagingMode::B, &ids);
    let mut stopped = w.p.store.get_dp(&ids[1]).unwrap().unwrap();
    stopped.status = "stopped".into();
    w.p.store.update_dp(&stopped).unwrap();
    let mut b = Browser::new(&w.srv.url);
    let (flow, page) = b
        .open(&w.redirect(&creds, &ids, "tx-mode-b", CITIZEN))
        .await;
    let p = b.through_basic(&flow, page, CITIZEN, "0770101").await;
    let p = b.two_documents(&flow, &p.csrf()).await;
    assert_eq!(p.step(), "consent");
    let row = |id: &str| -> String {
        let at = p
            .body
            .find(&format!("data-resource=\"{id}\""))
            .expect("listed");
        let start = p.body[..at].rfind("<tr").unwrap();
        let end = at + p.body[at..].find("</tr>").unwrap();
        p.body[start..end].to_string()
    };
    assert!(row(&ids[1]).contains("unavailable now"), "{}", row(&ids[1]));
    assert!(!row(&ids[0]).contains("unavailable"), "{}", row(&ids[0]));
}

fn identity_fixture(name: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/pki/identity")
        .join(name)
}

/// `openssl cms -sign` (code we did not write) over `challenge` with a sandbox identity
/// certificate: detached, DER, then base64 as the page takes it.
fn cms_signature(base: &str, challenge: &str) -> String {
    use base64::Engine as _;
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("challenge");
    std::fs::write(&input, challenge).unwrap();
    let out = tmp.path().join("sig.der");
    let st = std::process::Command::new("openssl")
        .args([
            "cms", "-sign", "-binary", "-outform", "DER", "-md", "sha256", "-in",
        ])
        .arg(&input)
        .arg("-signer")
        .arg(identity_fixture(&format!("{base}.pem")))
        .arg("-inkey")
        .arg(identity_fixture(&format!("{base}.key")))
        .arg("-out")
        .arg(&out)
        .status()
        .unwrap();
    assert!(st.success(), "openssl cms -sign {base}");
    base64::engine::general_purpose::STANDARD.encode(std::fs::read(out).unwrap())
}

fn challenge_in(page: &Answer) -> String {
    let start = page
        .body
        .find("id=\"challenge\">")
        .unwrap_or_else(|| panic!("no challenge on the page: {}", page.body))
        + "id=\"challenge\">".len();
    let end = page.body[start..].find('<').unwrap() + start;
    page.body[start..end].to_string()
}

/// A citizen certificate through the pages (spec D51): a challenge, a signature made by the
/// openssl CLI, consent and delivery; the method is what `type_valid` reports. And the refusals:
/// another person's certificate (counted), the same challenge again, a stale challenge.
#[actix_web::test]
async fn citizen_certificate_login_through_the_pages() {
    let w = world().await;
    let ids = vec![cer_only_dataset()];
    let creds = w.register(PackagingMode::A, &ids);
    let mut b = Browser::new(&w.srv.url);
    let (flow, page) = b.open(&w.redirect(&creds, &ids, "tx-cer", CITIZEN)).await;
    let p = b.through_basic(&flow, page, CITIZEN, "0770101").await;
    assert!(p.body.contains("id=\"method-cert\""), "{}", p.body);
    assert!(!p.body.contains("id=\"no-method\""));

    // Another person's certificate: refused, counted.
    let p = b.submit(&flow, "cert-challenge", &p.csrf(), &[]).await;
    let ch = challenge_in(&p);
    assert_eq!(ch.len(), 43);
    let other = cms_signature("cer-F228710436", &ch);
    let p = b
        .submit(
            &flow,
            "cert",
            &p.csrf(),
            &[("method", "CER"), ("challenge", &ch), ("signature", &other)],
        )
        .await;
    assert_eq!(p.step(), "identity");
    assert!(p.body.contains("belongs to another person"), "{}", p.body);
    assert!(p.body.contains("4 attempts left"), "{}", p.body);
    // The same challenge again, now with the right certificate: the challenge is spent.
    let mine = cms_signature("cer-A120345672", &ch);
    let p = b
        .submit(
            &flow,
            "cert",
            &p.csrf(),
            &[("method", "CER"), ("challenge", &ch), ("signature", &mine)],
        )
        .await;
    assert!(
        p.body.contains("The challenge was used or has expired"),
        "{}",
        p.body
    );
    // A challenge answered after 300 s.
    let p = b.submit(&flow, "cert-challenge", &p.csrf(), &[]).await;
    let ch = challenge_in(&p);
    w.clock.advance(301);
    let late = cms_signature("cer-A120345672", &ch);
    let p = b
        .submit(
            &flow,
            "cert",
            &p.csrf(),
            &[("method", "CER"), ("challenge", &ch), ("signature", &late)],
        )
        .await;
    assert!(
        p.body.contains("The challenge was used or has expired"),
        "{}",
        p.body
    );
    // A method the request does not take (NHI is not listed by this dataset).
    let p = b.submit(&flow, "cert-challenge", &p.csrf(), &[]).await;
    let ch = challenge_in(&p);
    let nhi = cms_signature("nhi-A120345672", &ch);
    let p = b
        .submit(
            &flow,
            "cert",
            &p.csrf(),
            &[("method", "NHI"), ("challenge", &ch), ("signature", &nhi)],
        )
        .await;
    assert!(p.body.contains("this method is not offered"), "{}", p.body);
    // The right certificate over a fresh challenge: consent, then back to the SP with 200.
    let p = b.submit(&flow, "cert-challenge", &p.csrf(), &[]).await;
    let ch = challenge_in(&p);
    let good = cms_signature("cer-A120345672", &ch);
    let p = b
        .submit(
            &flow,
            "cert",
            &p.csrf(),
            &[("method", "CER"), ("challenge", &ch), ("signature", &good)],
        )
        .await;
    assert_eq!(p.step(), "consent", "{}", p.body);
    let tx =
        w.p.store
            .find_tx(&creds.client_id, "tx-cer")
            .unwrap()
            .unwrap();
    assert_eq!(tx.identity_method.as_deref(), Some("CER"));
}
