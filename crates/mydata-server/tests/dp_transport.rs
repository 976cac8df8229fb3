//! The transport of the platform's outgoing calls, over real HTTP on 127.0.0.1, against scripted
//! peers on raw TCP listeners (issue 20 item 2):
//!
//! - DP-API (spec §9.3, D29): a DP that stalls or resets the connection in the middle of the
//!   body (a transport error: waited out and called again, never an empty body), the call's
//!   total deadline, the connect timeout, redirects not followed, a body over 256 MiB;
//! - SP-API (spec §7, D22): connect timeout, total timeout, redirects not followed.

mod common;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mydata_protocol::codes::{DatasetCode, ReturnCode};
use mydata_protocol::dpapi;
use mydata_protocol::package::dp::{BuildOptions, DpSigner, TrustAnchors};
use mydata_protocol::package::sp::PackagingMode;
use mydata_protocol::template::Values;
use mydata_server::clock::{SharedClock, SystemClock};
use mydata_server::config::Config;
use mydata_server::dpcall::{self, CallLimits};
use mydata_server::engine::{self, DatasetResult, state};
use mydata_server::platform::{NewDp, NewSp, SANDBOX_ROOT_CA};
use mydata_server::storage::{DpMethod, DpRecord, TxRecord};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

use common::World;

const DP_KEY: &[u8] = include_bytes!("../../../fixtures/pki/dp-moi.key");
const DP_CERT: &[u8] = include_bytes!("../../../fixtures/pki/dp-moi.pem");
const RID: &str = "API.FLAKYDP001";
const TX_UID: &str = "0b7c7e0e-5d7a-4c1f-8e55-7f4a3b2c1d99";

/// A DP package signed with the sandbox DP key (trusted under the sandbox root CA).
fn package() -> Vec<u8> {
    let signer = DpSigner::from_pem(DP_KEY, DP_CERT).unwrap();
    mydata_dp::build_package(
        &signer,
        &[mydata_dp::DataFile::new(
            "data.json",
            br#"{"note":"from the scripted DP"}"#.to_vec(),
        )],
        BuildOptions::default(),
    )
    .unwrap()
}

/// What a scripted peer does with one connection, after reading the request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Act {
    /// 200 with the whole package, then closes.
    Package,
    /// 200 with the package's `Content-Length` and half of it, then nothing: the connection
    /// stays open.
    StallMidBody,
    /// 200 with the package's `Content-Length` and half of it, then a reset (RST).
    ResetMidBody,
    /// This status with `Location: {base}/elsewhere` (which would serve the package).
    Redirect(u16),
    /// 200 with a chunked body of this many bytes, written 64 KiB at a time.
    Chunked(u64),
    /// 200 with `Content-Length` of this many bytes, 1 KiB of them, then nothing.
    DeclaredLength(u64),
    /// Reads the request and never answers.
    Silent,
    /// 200 with an empty body (the SP-API receiver's answer).
    Ok,
}

/// A scripted peer: the request lines it received, in order, and the body bytes of chunked
/// answers it wrote.
struct Scripted {
    base: String,
    requests: Arc<Mutex<Vec<String>>>,
    chunked_sent: Arc<AtomicU64>,
}

impl Scripted {
    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

/// A peer on 127.0.0.1 that answers each connection with the next act of `script`, then with
/// `then`. A request for `/elsewhere` (a redirect's target) is answered with the package.
async fn start_peer(script: Vec<Act>, then: Act) -> Scripted {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", l.local_addr().unwrap());
    let requests = Arc::new(Mutex::new(Vec::new()));
    let chunked_sent = Arc::new(AtomicU64::new(0));
    let script = Arc::new(Mutex::new(VecDeque::from(script)));
    let pkg = Arc::new(package());
    let (r2, b2, c2) = (requests.clone(), base.clone(), chunked_sent.clone());
    actix_web::rt::spawn(async move {
        loop {
            let Ok((sock, _)) = l.accept().await else {
                return;
            };
            let (requests, script, pkg, base) =
                (r2.clone(), script.clone(), pkg.clone(), b2.clone());
            let sent = c2.clone();
            actix_web::rt::spawn(async move {
                serve(sock, requests, script, then, pkg, base, sent).await;
            });
        }
    });
    Scripted {
        base,
        requests,
        chunked_sent,
    }
}

async fn serve(
    mut sock: TcpStream,
    requests: Arc<Mutex<Vec<String>>>,
    script: Arc<Mutex<VecDeque<Act>>>,
    then: Act,
    pkg: Arc<Vec<u8>>,
    base: String,
    chunked_sent: Arc<AtomicU64>,
) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match sock.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let line = String::from_utf8_lossy(&head)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    let elsewhere = line.contains(" /elsewhere");
    requests.lock().unwrap().push(line);
    let act = if elsewhere {
        Act::Package
    } else {
        script.lock().unwrap().pop_front().unwrap_or(then)
    };
    let ok_head = |len: usize| {
        format!("HTTP/1.1 200 OK\r\nContent-Type: application/zip\r\nContent-Length: {len}\r\n\r\n")
    };
    let hold = || tokio::time::sleep(Duration::from_secs(3_600));
    match act {
        Act::Package => {
            let _ = sock.write_all(ok_head(pkg.len()).as_bytes()).await;
            let _ = sock.write_all(&pkg).await;
            let _ = sock.shutdown().await;
        }
        Act::StallMidBody | Act::ResetMidBody => {
            let _ = sock.write_all(ok_head(pkg.len()).as_bytes()).await;
            let _ = sock.write_all(&pkg[..pkg.len() / 2]).await;
            let _ = sock.flush().await;
            if act == Act::StallMidBody {
                hold().await;
            } else {
                // Lets the client read the first half, then resets the connection.
                tokio::time::sleep(Duration::from_millis(200)).await;
                sock.set_zero_linger().unwrap();
                drop(sock);
            }
        }
        Act::Redirect(status) => {
            let _ = sock
                .write_all(
                    format!(
                        "HTTP/1.1 {status} Moved\r\nLocation: {base}/elsewhere\r\n\
                         Content-Length: 0\r\nConnection: close\r\n\r\n"
                    )
                    .as_bytes(),
                )
                .await;
            let _ = sock.shutdown().await;
        }
        Act::Chunked(total) => {
            if sock
                .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                .await
                .is_err()
            {
                return;
            }
            let piece = vec![b'x'; 64 * 1024];
            let mut left = total;
            while left > 0 {
                let n = left.min(piece.len() as u64) as usize;
                let mut chunk = format!("{n:x}\r\n").into_bytes();
                chunk.extend_from_slice(&piece[..n]);
                chunk.extend_from_slice(b"\r\n");
                if sock.write_all(&chunk).await.is_err() {
                    // The platform stopped reading.
                    return;
                }
                left -= n as u64;
                chunked_sent.fetch_add(n as u64, Ordering::SeqCst);
            }
            let _ = sock.write_all(b"0\r\n\r\n").await;
            hold().await;
        }
        Act::DeclaredLength(len) => {
            let _ = sock
                .write_all(format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n").as_bytes())
                .await;
            let _ = sock.write_all(&[b'x'; 1024]).await;
            hold().await;
        }
        Act::Silent => hold().await,
        Act::Ok => {
            let _ = sock
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .await;
            let _ = sock.shutdown().await;
        }
    }
}

/// A listener whose accept queue is full and never drained: a connect to it hangs (Linux drops
/// the SYN of a full queue). Keep the returned sockets alive for as long as it must hang.
async fn full_backlog() -> (SocketAddr, TcpListener, Vec<std::net::TcpStream>) {
    let s = TcpSocket::new_v4().unwrap();
    s.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let l = s.listen(0).unwrap();
    let addr = l.local_addr().unwrap();
    let held = actix_web::rt::task::spawn_blocking(move || {
        let mut held = Vec::new();
        for _ in 0..16 {
            match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
                Ok(c) => held.push(c),
                Err(_) => return held,
            }
        }
        panic!("the accept queue never filled up");
    })
    .await
    .unwrap();
    (addr, l, held)
}

fn trust() -> Option<Arc<TrustAnchors>> {
    Some(Arc::new(
        TrustAnchors::from_pem(&[SANDBOX_ROOT_CA]).unwrap(),
    ))
}

fn dp_record(endpoint: &str) -> DpRecord {
    DpRecord {
        tls_ca: None,
        resource_id: RID.into(),
        name: "不穩定的 DP".into(),
        provider: "測試".into(),
        scopes: vec!["test.flaky".into()],
        secret_hash: String::new(),
        endpoint: endpoint.into(),
        method: DpMethod::Get,
        claims: Vec::new(),
        identity_methods: vec!["PII".into()],
        status: "active".into(),
        template: None,
    }
}

/// One call series against the scripted DP at `base`, under `limits`.
async fn series(base: &str, limits: CallLimits) -> dpcall::SeriesResult {
    let clock: SharedClock = Arc::new(SystemClock);
    let values = Values {
        transaction_uid: TX_UID.into(),
        resource_id: RID.into(),
        ..Values::default()
    };
    dpcall::run_series_limited(
        &dpcall::client_with(limits.connect),
        &clock,
        &dp_record(&format!("{base}/dp")),
        "token",
        &values,
        trust(),
        &limits,
    )
    .await
}

/// Limits for tests: a 1-s wait after a transport error; the rest as specified unless changed.
fn quick() -> CallLimits {
    CallLimits {
        series: dpapi::Limits {
            transport_retry_secs: 1,
            ..dpapi::Limits::default()
        },
        ..CallLimits::default()
    }
}

/// A platform whose DP calls end after 1 s in all and wait 1 s after a transport error.
async fn quick_world() -> World {
    common::world_custom(&[], None, |c: &mut Config| {
        c.dp_call_timeout_secs = 1;
        c.dp_transport_retry_secs = 1;
    })
    .await
}

/// Registers dataset [`RID`] at `endpoint` and an SP for it whose SP-API is `sp_api_url`;
/// the SP's `client_id`.
fn register(w: &World, endpoint: &str, sp_api_url: &str) -> String {
    register_dp(w, endpoint);
    register_sp(w, sp_api_url)
}

/// Registers dataset [`RID`] at `endpoint`.
fn register_dp(w: &World, endpoint: &str) {
    w.p.register_dp(NewDp {
        tls_ca: None,
        resource_id: Some(RID.parse().unwrap()),
        name: "不穩定的 DP".into(),
        provider: "測試".into(),
        scopes: vec!["test.flaky".into()],
        secret: None,
        endpoint: endpoint.into(),
        method: DpMethod::Get,
        claims: Vec::new(),
        identity_methods: vec!["PII".into()],
        template: None,
    })
    .unwrap();
}

/// Registers an SP for [`RID`] whose SP-API is `sp_api_url`; its `client_id`.
fn register_sp(w: &World, sp_api_url: &str) -> String {
    w.p.register_sp(NewSp {
        tls_ca: None,
        name: "測試服務".into(),
        purpose: "測試".into(),
        return_url: common::RETURN.into(),
        sp_api_url: sp_api_url.into(),
        allowed_ips: vec!["127.0.0.1".parse().unwrap()],
        client_cert_sha256: Vec::new(),
        resources: vec![RID.parse().unwrap()],
        packaging_mode: PackagingMode::B,
        ..NewSp::default()
    })
    .unwrap()
    .0
    .client_id
}

/// Consents to transaction `id` of `client_id` for [`RID`]; the return code.
async fn consent(w: &World, id: &str, client_id: &str) -> ReturnCode {
    let t = common::authenticated_tx(&w.p, id, client_id, &format!("tx-{id}"), &[RID]);
    engine::consent(w.p.clone(), t, common::citizen_claims(&w.p))
        .await
        .unwrap()
}

/// Waits until transaction `id` is no longer fetching, at most `bound`.
async fn settled(w: &World, id: &str, bound: Duration) -> (TxRecord, Vec<DatasetResult>) {
    let start = Instant::now();
    loop {
        let t = w.p.store.get_tx(id).unwrap().unwrap();
        if t.state != state::FETCHING {
            let d = serde_json::from_str(&t.datasets).unwrap();
            return (t, d);
        }
        assert!(
            start.elapsed() < bound,
            "transaction {id} still fetching after {bound:?}"
        );
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The MyData-API status of the last ticket handed to the World's SP receiver.
async fn mydata_api_status(w: &World) -> u16 {
    let body = w.sp_api_calls().last().cloned().unwrap();
    let ticket = body["permission_ticket"].as_str().unwrap();
    let tx_id = body["tx_id"].as_str().unwrap();
    common::poll_until_ready(&w.srv.url, ticket, tx_id).await.0
}

#[actix_web::test]
async fn dp_stalled_mid_body_is_called_again_and_delivers() {
    let w = quick_world().await;
    let dp = start_peer(vec![Act::StallMidBody], Act::Package).await;
    let client_id = register(&w, &format!("{}/dp", dp.base), &w.sp_api_url);
    let started = Instant::now();
    assert_eq!(consent(&w, "t-1", &client_id).await, ReturnCode::Success);
    let (t, d) = settled(&w, "t-1", Duration::from_secs(20)).await;
    assert_eq!(t.state, state::READY);
    assert_eq!((d[0].code, d[0].calls), (Some(200), 2), "{d:?}");
    // A 1-s call, a 1-s wait, a call.
    assert!(started.elapsed() >= Duration::from_secs(2));
    let reqs = dp.requests();
    assert_eq!(reqs.len(), 2);
    // The same transaction_uid on the second call.
    let uid = |r: &str| {
        r.split("transaction_uid=")
            .nth(1)
            .unwrap()
            .split([' ', '&'])
            .next()
            .unwrap()
            .to_string()
    };
    assert_eq!(uid(&reqs[0]), uid(&reqs[1]));
    assert_eq!(mydata_api_status(&w).await, 200);
}

#[actix_web::test]
async fn dp_that_keeps_stalling_ends_with_504_within_the_budget() {
    let w = quick_world().await;
    let dp = start_peer(Vec::new(), Act::StallMidBody).await;
    let client_id = register(&w, &format!("{}/dp", dp.base), &w.sp_api_url);
    let started = Instant::now();
    assert_eq!(consent(&w, "t-1", &client_id).await, ReturnCode::Success);
    // Once the DP has been called again, the platform's clock passes the 5,400-s budget: the
    // next transport error ends the series with 504 (D29).
    while dp.requests().len() < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the DP was never called again: {:?}",
            dp.requests()
        );
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    w.clock.advance(dpapi::BUDGET_SECS);
    let (_, d) = settled(&w, "t-1", Duration::from_secs(20)).await;
    assert_eq!((d[0].code, d[0].calls), (Some(504), 2), "{d:?}");
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(dp.requests().len(), 2);
    // Every dataset failed: the MyData-API answers 504.
    assert_eq!(mydata_api_status(&w).await, 504);
}

#[actix_web::test]
async fn dp_reset_mid_body_is_called_again_not_an_empty_body() {
    let dp = start_peer(vec![Act::ResetMidBody], Act::Package).await;
    let r = series(&dp.base, quick()).await;
    assert_eq!((r.code, r.calls), (DatasetCode::Delivered, 2));
    assert_eq!(r.package.map(|p| p.len()), Some(package().len()));
    assert_eq!(dp.requests().len(), 2);
    // Reset every time: a transport error each time, 504 when the calls run out.
    let dp = start_peer(Vec::new(), Act::ResetMidBody).await;
    let limits = CallLimits {
        series: dpapi::Limits {
            max_calls: 3,
            ..quick().series
        },
        ..quick()
    };
    let r = series(&dp.base, limits).await;
    assert_eq!((r.code, r.calls), (DatasetCode::DpSystemError, 3));
    assert!(r.package.is_none());
}

#[actix_web::test]
async fn dp_call_total_deadline_covers_the_body() {
    // Two calls of at most 1 s each, 1 s apart: 504 in about 3 s, never an empty 200.
    let dp = start_peer(Vec::new(), Act::StallMidBody).await;
    let limits = CallLimits {
        total: Duration::from_secs(1),
        series: dpapi::Limits {
            max_calls: 2,
            ..quick().series
        },
        ..quick()
    };
    let started = Instant::now();
    let r = actix_web::rt::time::timeout(Duration::from_secs(20), series(&dp.base, limits))
        .await
        .expect("the call series never ended");
    assert_eq!((r.code, r.calls), (DatasetCode::DpSystemError, 2));
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(10),
        "{took:?}"
    );
    // A DP that sends nothing at all is cut at the same deadline.
    let dp = start_peer(Vec::new(), Act::Silent).await;
    let started = Instant::now();
    let r = series(&dp.base, limits).await;
    assert_eq!((r.code, r.calls), (DatasetCode::DpSystemError, 2));
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[actix_web::test]
async fn dp_connect_timeout() {
    let (addr, _l, _held) = full_backlog().await;
    let limits = CallLimits {
        connect: Duration::from_secs(1),
        series: dpapi::Limits {
            max_calls: 2,
            ..quick().series
        },
        ..quick()
    };
    let started = Instant::now();
    let r = series(&format!("http://{addr}"), limits).await;
    assert_eq!((r.code, r.calls), (DatasetCode::DpSystemError, 2));
    // Two 1-s connects and a 1-s wait, far below the 300-s call.
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(10),
        "{took:?}"
    );
}

#[actix_web::test]
async fn dp_redirects_are_not_followed() {
    for status in [301, 302, 303, 307, 308] {
        let dp = start_peer(vec![Act::Redirect(status)], Act::Package).await;
        let r = series(&dp.base, quick()).await;
        assert_eq!((r.code, r.calls), (DatasetCode::DpError, 1), "{status}");
        assert!(r.package.is_none());
        let reqs = dp.requests();
        assert_eq!(reqs.len(), 1, "{status}: {reqs:?}");
        assert!(reqs[0].starts_with("GET /dp?"), "{reqs:?}");
    }
}

#[actix_web::test]
async fn dp_body_over_256_mib_is_500() {
    // Announced: refused from the Content-Length alone.
    let dp = start_peer(Vec::new(), Act::DeclaredLength(dpapi::MAX_BODY_BYTES + 1)).await;
    let r = series(&dp.base, quick()).await;
    assert_eq!((r.code, r.calls), (DatasetCode::DpError, 1));
    // Streamed without a length: counted while reading, 256 MiB + 1 byte is one too many.
    let limits = CallLimits::default();
    assert_eq!(limits.max_body_bytes, 256 * 1024 * 1024);
    let dp = start_peer(Vec::new(), Act::Chunked(limits.max_body_bytes + 1)).await;
    let r = series(&dp.base, limits).await;
    assert_eq!((r.code, r.calls), (DatasetCode::DpError, 1));
    assert!(r.package.is_none());
    assert_eq!(dp.requests().len(), 1);
    // The platform read (nearly) the whole limit before refusing: the count is made while
    // reading, not from a header.
    let sent = dp.chunked_sent.load(Ordering::SeqCst);
    assert!(sent >= limits.max_body_bytes - (1 << 20), "{sent}");
}

#[actix_web::test]
async fn sp_api_total_timeout_ends_with_410() {
    let w = common::world_custom(&[], None, |c: &mut Config| c.sp_api_timeout_secs = 1).await;
    let sp = start_peer(Vec::new(), Act::Silent).await;
    let client_id = register(&w, "http://127.0.0.1:1/dp", &format!("{}/sp-api", sp.base));
    let started = Instant::now();
    assert_eq!(
        consent(&w, "t-1", &client_id).await,
        ReturnCode::SpApiFailed
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(10),
        "{took:?}"
    );
    assert_eq!(sp.requests().len(), 1, "no retry");
    let t = w.p.store.get_tx("t-1").unwrap().unwrap();
    assert_eq!((t.state, t.code), (state::ENDED, Some(410)));
}

#[actix_web::test]
async fn sp_api_connect_timeout_ends_with_410() {
    let w = common::world_custom(&[], None, |c: &mut Config| {
        c.sp_api_connect_timeout_secs = 1;
    })
    .await;
    let (addr, _l, _held) = full_backlog().await;
    let client_id = register(
        &w,
        "http://127.0.0.1:1/dp",
        &format!("http://{addr}/sp-api"),
    );
    let started = Instant::now();
    assert_eq!(
        consent(&w, "t-1", &client_id).await,
        ReturnCode::SpApiFailed
    );
    // The 1-s connect timeout, well before the 30-s total.
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(10),
        "{took:?}"
    );
}

#[actix_web::test]
async fn sp_api_redirects_are_not_followed() {
    let w = common::world().await;
    register_dp(&w, "http://127.0.0.1:1/dp");
    for (i, status) in [301, 302, 303, 307, 308].into_iter().enumerate() {
        // The redirect points at the SP receiver itself, which would answer 200.
        let sp = start_peer(vec![Act::Redirect(status)], Act::Ok).await;
        let client_id = register_sp(&w, &format!("{}/sp-api", sp.base));
        let id = format!("t-{i}");
        assert_eq!(
            consent(&w, &id, &client_id).await,
            ReturnCode::SpApiFailed,
            "{status}"
        );
        assert_eq!(sp.requests().len(), 1, "{status}: {:?}", sp.requests());
        let t = w.p.store.get_tx(&id).unwrap().unwrap();
        assert_eq!(t.code, Some(410));
    }
}

#[actix_web::test]
async fn sp_api_default_timeouts_are_the_spec() {
    let c = Config::default();
    assert_eq!(
        (c.sp_api_connect_timeout_secs, c.sp_api_timeout_secs),
        (15, 30)
    );
    assert_eq!(
        CallLimits::from_config(&c),
        CallLimits {
            connect: Duration::from_secs(15),
            total: Duration::from_secs(300),
            max_body_bytes: 256 * 1024 * 1024,
            series: dpapi::Limits {
                max_calls: 16,
                budget_secs: 5_400,
                transport_retry_secs: 30,
            },
        }
    );
}
