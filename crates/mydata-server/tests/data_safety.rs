//! Issue 12 over real HTTP on 127.0.0.1: a delivery cut mid-body keeps the package, a returnUrl
//! with control characters is refused at the redirect, and a purge that races running flows,
//! pollers and late DP answers leaves no personal data in the database files or `packages/`.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use base64::Engine as _;
use mydata_dp::sandbox::Behaviour;
use mydata_protocol::codes::ReturnCode;
use mydata_protocol::ids::{ClientId, SecretKey};
use mydata_protocol::jwe::{self, JweMode};
use mydata_protocol::package::dp::{TrustAnchors, VerifyOptions};
use mydata_protocol::package::sp::{self, PackagingMode};
use mydata_server::clock::Clock;
use mydata_server::engine::{self, state};
use mydata_server::platform::{NewSp, SANDBOX_ROOT_CA};
use mydata_server::storage::TxPhase;
use serde_json::Value;

use common::{CITIZEN, World};

/// `fixtures/citizens.json` with [`CITIZEN`] given a field of `bytes` characters that deflate
/// cannot shrink much (Base64 of pseudo-random bytes), so that a package is several MiB.
fn citizens_with_large_record(bytes: usize) -> (String, String) {
    let mut doc: Value =
        serde_json::from_str(include_str!("../../../fixtures/citizens.json")).unwrap();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let raw: Vec<u8> = (0..bytes * 3 / 4)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    let noise = base64::engine::general_purpose::STANDARD.encode(raw);
    let person = doc["citizens"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|c| c["national_id"] == CITIZEN)
        .unwrap();
    person["notes"] = Value::String(noise.clone());
    (doc.to_string(), noise[..64].to_string())
}

/// Consents to a transaction of `creds`' SP for `ids` as [`CITIZEN`]; the SP-API body.
async fn consent(w: &World, id: &str, client_id: &str, tx_id: &str, ids: &[String]) -> Value {
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let before = w.sp_api_calls().len();
    let t = common::authenticated_tx(&w.p, id, client_id, tx_id, &refs);
    let code = engine::consent(w.p.clone(), t, common::citizen_claims(&w.p))
        .await
        .unwrap();
    assert_eq!(code, ReturnCode::Success);
    w.sp_api_calls()[before].clone()
}

/// Waits until transaction `id` is in state `want`.
async fn wait_state(w: &World, id: &str, want: TxPhase) {
    wait_states(w, id, &[want]).await
}

/// Waits until transaction `id` is in one of the states `want`.
async fn wait_states(w: &World, id: &str, want: &[TxPhase]) {
    let start = Instant::now();
    loop {
        let st = w.p.store.get_tx(id).unwrap().map(|t| t.state);
        if st.is_some_and(|s| want.contains(&s)) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(180),
            "{id} stayed {st:?}, never {want:?}"
        );
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `GET /service/data` until the answer is not 429: status and body.
async fn poll_settled(base: &str, ticket: &str) -> (u16, String) {
    let start = Instant::now();
    loop {
        let mut r = awc::Client::builder()
            .timeout(Duration::from_secs(120))
            .finish()
            .get(format!("{base}/service/data"))
            .insert_header(("permission_ticket", ticket))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        if status != 429 {
            let body = r.body().limit(256 << 20).await.unwrap();
            return (status, String::from_utf8(body.to_vec()).unwrap());
        }
        assert!(start.elapsed() < Duration::from_secs(180), "always 429");
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Opens a GCM delivery and verifies its SP package against the sandbox CA: the data files.
fn open_gcm(text: &str, key: &SecretKey, client_id: &str, w: &World) -> Vec<Vec<u8>> {
    let client_id: ClientId = client_id.parse().unwrap();
    let zip = jwe::decrypt_package(text, key, JweMode::Gcm, Some(&client_id)).unwrap();
    let trust = TrustAnchors::from_pem(&[SANDBOX_ROOT_CA]).unwrap();
    let reports = sp::verify(
        std::io::Cursor::new(&zip.zip[..]),
        &VerifyOptions {
            trust: Some(&trust),
            ..VerifyOptions::at(w.clock.now())
        },
    )
    .unwrap();
    assert!(reports.iter().all(|r| r.ok()), "{reports:?}");
    // The data files themselves, read from the inner DP packages.
    let mut files = Vec::new();
    let mut outer = zip::ZipArchive::new(std::io::Cursor::new(&zip.zip[..])).unwrap();
    for i in 0..outer.len() {
        let mut e = outer.by_index(i).unwrap();
        if !e.name().unwrap().ends_with(".zip") {
            continue;
        }
        let mut inner = Vec::new();
        e.read_to_end(&mut inner).unwrap();
        let mut a = zip::ZipArchive::new(std::io::Cursor::new(inner)).unwrap();
        for j in 0..a.len() {
            let mut f = a.by_index(j).unwrap();
            let mut data = Vec::new();
            f.read_to_end(&mut data).unwrap();
            files.push(data);
        }
    }
    files
}

fn secret_key(creds: &mydata_server::platform::SpCredentials, body: &Value) -> SecretKey {
    common::cipher(creds)
        .decrypt(body["secret_key"].as_str().unwrap())
        .unwrap()
        .parse()
        .unwrap()
}

#[actix_web::test]
async fn a_delivery_cut_mid_body_leaves_the_package_for_the_next_poll() {
    // About 6 MiB of data: more than the kernel's socket buffers hold, so most of the body is
    // still to be written when the SP's connection goes.
    let (citizens, marker) = citizens_with_large_record(6 << 20);
    for budget_mb in [64, 0] {
        let w =
            common::world_custom(&[], Some(&citizens), |c| c.package_memory_mb = budget_mb).await;
        let ids = common::pii_datasets(1);
        let creds = w.register(PackagingMode::A, &ids);
        let body = consent(&w, "t-big", &creds.client_id, "tx-big-1", &ids).await;
        let ticket = body["permission_ticket"].as_str().unwrap().to_string();
        let key = secret_key(&creds, &body);
        wait_state(&w, "t-big", state::READY).await;

        // The SP's connection reads the head and 64 KiB of the body, then closes with unread
        // data, which resets it.
        let addr = w.srv.addr;
        let t2 = ticket.clone();
        let head = actix_web::web::block(move || {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
            write!(
                s,
                "GET /service/data HTTP/1.1\r\nHost: 127.0.0.1\r\npermission_ticket: {t2}\r\n\r\n"
            )
            .unwrap();
            let mut buf = vec![0u8; 64 * 1024];
            s.read_exact(&mut buf).unwrap();
            String::from_utf8_lossy(&buf[..64]).into_owned()
        })
        .await
        .unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");

        // The next poll gets the whole package, which verifies and holds the data.
        let (status, jwe_text) = poll_settled(&w.srv.url, &ticket).await;
        assert_eq!(status, 200, "budget {budget_mb} MiB: the package was lost");
        let files = open_gcm(&jwe_text, &key, &creds.client_id, &w);
        assert!(
            files
                .iter()
                .any(|f| f.windows(marker.len()).any(|x| x == marker.as_bytes())),
            "the large record is not in the package"
        );
        // Delivered completely once: taken, gone from memory and files.
        let (status, _) = poll_settled(&w.srv.url, &ticket).await;
        assert_eq!(status, 201);
        assert_eq!(w.p.packages.bytes_in_memory(), 0);
        assert!(w.p.packages.files().unwrap().is_empty());
        let taken = w.p.store.get_tx("t-big").unwrap().unwrap();
        assert_eq!(taken.state, state::TAKEN);
        assert!(taken.pid_sealed.is_none() && taken.secret_key_sealed.is_none());
        let records = w.p.store.transfers_of(&w.p.subject_hash(CITIZEN)).unwrap();
        assert_eq!(
            records.iter().filter(|r| r.kind == "delivery").count(),
            1,
            "one delivery recorded"
        );
    }
}

#[actix_web::test]
async fn a_return_url_with_control_characters_is_refused_at_the_redirect() {
    let w = common::world().await;
    let ids = common::pii_datasets(1);
    let creds = w.register(PackagingMode::A, &ids);
    for (n, bad) in [
        "?a=1\r\nSet-Cookie: x=1",
        "?a=1\nLocation: http://evil.example/",
        "?a=\t1",
        "?a=\u{7f}",
    ]
    .iter()
    .enumerate()
    {
        let tx_id = format!("tx-ctl-{n}");
        let url = common::redirect_url(
            &w.srv.url,
            &creds,
            &ids,
            &tx_id,
            CITIZEN,
            &format!("{}{bad}", common::RETURN),
        );
        let mut b = common::Browser::new(&w.srv.url);
        let a = b.get(&url).await;
        assert_eq!(a.status, 302, "{bad:?}: {a:?}");
        let location = a.location.clone().unwrap();
        // Step 3's code, to the registered URL, without the supplied query (D18).
        assert_eq!(location, format!("{}?code=404", common::RETURN), "{bad:?}");
        assert!(
            w.p.store
                .find_tx(&creds.client_id, &tx_id)
                .unwrap()
                .is_none()
        );
    }
    // Registration refuses such URLs too: they would reach a header or a request line.
    for (ret, api) in [
        (
            "http://127.0.0.1:1/return\r\nX: y",
            "http://127.0.0.1:1/sp-api",
        ),
        ("http://127.0.0.1:1/return", "http://127.0.0.1:1/sp-api\n"),
    ] {
        let e =
            w.p.register_sp(NewSp {
                tls_ca: None,
                name: "bad".into(),
                return_url: ret.into(),
                sp_api_url: api.into(),
                allowed_ips: vec!["127.0.0.1".parse().unwrap()],
                client_cert_sha256: Vec::new(),
                resources: ids.iter().map(|i| i.parse().unwrap()).collect(),
                ..NewSp::default()
            })
            .unwrap_err();
        assert!(e.to_string().contains("control characters"), "{e}");
    }
}

#[actix_web::test]
async fn purging_while_flows_run_leaves_no_personal_data_behind() {
    // Packages in files (the case where a late write would leave one behind), the write-behind
    // store as `mydata serve` runs it, one slow dataset whose DP is still answering when the
    // purge comes.
    let ids = common::pii_datasets(3);
    let slow = ids[2].clone();
    let w = common::world_custom(&[(slow.as_str(), Behaviour::Slow(2))], None, |c| {
        c.package_memory_mb = 0
    })
    .await;
    let creds = w.register(PackagingMode::B, &ids);
    let dir = w.dir.path().to_path_buf();
    // The search below finds the citizen's ID in the bytes the store writes.
    common::search_finds_what_the_store_writes(CITIZEN, "王大明");
    for round in 0..4 {
        // Six consents: three of the instant datasets only, three with the slow one too.
        let mut tickets = Vec::new();
        for i in 0..6 {
            let set = if i % 2 == 0 { &ids[..2] } else { &ids[..] };
            let body = consent(
                &w,
                &format!("t-{round}-{i}"),
                &creds.client_id,
                &format!("tx-{round}-{i}"),
                set,
            )
            .await;
            tickets.push(body["permission_ticket"].as_str().unwrap().to_string());
        }
        // Readers during the purge: pollers (taking what is ready), status look-ups (which read
        // the database) and page loads.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut readers = Vec::new();
        for t in tickets.clone() {
            let (url, stop) = (w.srv.url.clone(), stop.clone());
            readers.push(actix_web::rt::spawn(async move {
                let c = awc::Client::default();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if let Ok(mut r) = c
                        .get(format!("{url}/service/data"))
                        .insert_header(("permission_ticket", t.as_str()))
                        .send()
                        .await
                    {
                        let _ = r.body().limit(64 << 20).await;
                    }
                    let _ = c
                        .get(format!("{url}/service/txid_status"))
                        .insert_header(("tx_id", "tx-0-0"))
                        .send()
                        .await;
                    let _ = c.get(format!("{url}/flow/nothing-here")).send().await;
                    actix_web::rt::time::sleep(Duration::from_millis(20)).await;
                }
            }));
        }
        // Some packages are ready (and taken), the slow DP is still answering: the purge.
        // (The pollers may have taken it already.)
        wait_states(&w, &format!("t-{round}-0"), &[state::READY, state::TAKEN]).await;
        // Control: before the purge the database holds the citizen's ID, in a token of a
        // transaction of this round (as each DP call's token does while it runs; this one is
        // live whatever the DP calls have done by now), so that its absence afterwards is the
        // purge's doing.
        w.p.issue_token(
            &format!("t-{round}-1"),
            &creds.client_id,
            &slow,
            "5a4f3e2d-1c0b-4a9f-8e7d-6c5b4a3f2e1d",
            &common::citizen_claims(&w.p),
        )
        .unwrap();
        w.p.store.flush().unwrap();
        assert!(
            common::database_holds(&dir, CITIZEN.as_bytes()),
            "round {round}: control: the citizen's ID is not in the database before the purge"
        );
        w.clock.advance(engine::RETENTION_SECS + 1);
        let report = actix_web::web::block({
            let p = w.p.clone();
            move || engine::purge(&p)
        })
        .await
        .unwrap()
        .unwrap();
        assert!(report.complete(), "round {round}: {report:?}");
        for i in 0..6 {
            assert!(
                w.p.store
                    .get_tx(&format!("t-{round}-{i}"))
                    .unwrap()
                    .is_none()
            );
        }
        // Every DP call series of the round has ended, and its package was written or dropped:
        // the late answers came after the purge.
        let start = Instant::now();
        while w.p.fetches_running() > 0 {
            assert!(
                start.elapsed() < Duration::from_secs(180),
                "round {round}: DP calls still running"
            );
            actix_web::rt::time::sleep(Duration::from_millis(50)).await;
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for r in readers {
            r.await.unwrap();
        }
        // Nothing personal anywhere: no package file, no token, no ID in the database or its log.
        let files = w.p.packages.files().unwrap();
        assert!(
            files.is_empty(),
            "round {round}: package files left: {files:?}"
        );
        assert_eq!(w.p.auth.token_count(), 0, "round {round}");
        w.p.store.flush().unwrap();
        assert!(
            !common::database_holds(&dir, CITIZEN.as_bytes()),
            "round {round}: the citizen's ID is in the database or its log"
        );
    }
}
