//! The MyData-API poller against a scripted platform on 127.0.0.1: the waits it asks for (through
//! an injected timer, so nothing sleeps for real), the headers it sends, and its final outcome.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use mydata_protocol::ids::{PermissionTicket, TxId};
use mydata_sp::poll::{Answer, CancelToken, MyDataApi, PollError, PollOptions, Timer};

/// One scripted answer: status, optional Retry-After, body.
#[derive(Clone)]
struct Scripted(u16, Option<&'static str>, &'static str);

#[derive(Default)]
struct Script {
    answers: Mutex<VecDeque<Scripted>>,
    seen: Mutex<Vec<(Option<String>, Option<String>)>>,
}

async fn data(req: HttpRequest, script: web::Data<Script>) -> HttpResponse {
    let h = |n: &str| {
        req.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    script
        .seen
        .lock()
        .unwrap()
        .push((h("permission_ticket"), h("tx_id")));
    let next = script.answers.lock().unwrap().pop_front();
    let Some(Scripted(status, retry, body)) = next else {
        return HttpResponse::InternalServerError().finish();
    };
    let mut b = HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap());
    b.insert_header(("cache-control", "no-store"));
    if let Some(r) = retry {
        b.insert_header(("retry-after", r));
    }
    if status == 200 {
        b.insert_header(("content-type", "application/jwe"));
    }
    b.body(body)
}

fn start(answers: Vec<Scripted>) -> (String, Arc<Script>, actix_web::dev::ServerHandle) {
    let script = Arc::new(Script {
        answers: Mutex::new(answers.into()),
        seen: Mutex::default(),
    });
    let data_ = web::Data::from(script.clone());
    let srv = HttpServer::new(move || {
        App::new()
            .app_data(data_.clone())
            .route("/service/data", web::get().to(data))
    })
    .workers(1)
    .bind("127.0.0.1:0")
    .unwrap();
    let addr = srv.addrs()[0];
    let srv = srv.run();
    let handle = srv.handle();
    actix_web::rt::spawn(srv);
    (format!("http://{addr}"), script, handle)
}

/// A timer whose clock only moves when the poller sleeps, recording every wait.
struct ManualTimer {
    now: Cell<SystemTime>,
    waits: RefCell<Vec<Duration>>,
    cancel_on_sleep: Option<CancelToken>,
}

impl ManualTimer {
    fn new() -> Self {
        ManualTimer {
            // 2027-01-01T00:00:00Z
            now: Cell::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_798_761_600)),
            waits: RefCell::default(),
            cancel_on_sleep: None,
        }
    }

    fn waits(&self) -> Vec<u64> {
        self.waits.borrow().iter().map(Duration::as_secs).collect()
    }
}

impl Timer for ManualTimer {
    fn now(&self) -> SystemTime {
        self.now.get()
    }

    fn sleep(&self, d: Duration) -> impl Future<Output = ()> {
        self.waits.borrow_mut().push(d);
        self.now.set(self.now.get() + d);
        if let Some(c) = &self.cancel_on_sleep {
            c.cancel();
        }
        std::future::ready(())
    }
}

fn ticket() -> PermissionTicket {
    "6b1f0e52-2c1d-4f7a-9a57-0f3c1d2e8b44".parse().unwrap()
}

fn tx() -> TxId {
    "3f0c9b1e-7a44-4c1e-9d55-2b8f6c0a1d2e".parse().unwrap()
}

#[actix_web::test]
async fn waits_as_told_then_takes_the_jwe() {
    // 2027-01-01T00:05:00Z: after waits of 7 s and 60 s the clock reads 00:01:07, so 233 s remain.
    let (url, script, h) = start(vec![
        Scripted(429, Some("7"), ""),
        Scripted(429, None, ""),
        Scripted(429, Some("Fri, 01 Jan 2027 00:05:00 GMT"), ""),
        Scripted(429, Some("not a number"), ""),
        Scripted(200, None, "aaa.bbb.ccc.ddd.eee\r\n"),
    ]);
    let api = MyDataApi::new(&url, PollOptions::default());
    let timer = ManualTimer::new();
    let jwe = api
        .poll(&ticket(), Some(&tx()), &timer, &CancelToken::new())
        .await
        .unwrap();
    assert_eq!(jwe, "aaa.bbb.ccc.ddd.eee");
    assert_eq!(timer.waits(), vec![7, 60, 233, 60]);
    let seen = script.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 5);
    for (t, x) in seen {
        assert_eq!(t.as_deref(), Some("6b1f0e52-2c1d-4f7a-9a57-0f3c1d2e8b44"));
        assert_eq!(x.as_deref(), Some("3f0c9b1e-7a44-4c1e-9d55-2b8f6c0a1d2e"));
    }
    h.stop(true).await;
}

#[actix_web::test]
async fn observer_sees_every_answer_in_order() {
    let (url, _script, h) = start(vec![
        Scripted(429, Some("7"), ""),
        Scripted(503, None, ""),
        Scripted(200, None, "aaa.bbb.ccc.ddd.eee"),
    ]);
    let api = MyDataApi::new(&url, PollOptions::default());
    let timer = ManualTimer::new();
    let mut seen = Vec::new();
    let jwe = api
        .poll_observed(&ticket(), None, &timer, &CancelToken::new(), |n, a| {
            seen.push((n, a.clone()));
        })
        .await
        .unwrap();
    assert_eq!(jwe, "aaa.bbb.ccc.ddd.eee");
    assert_eq!(seen.len(), 3);
    assert_eq!(
        seen[0],
        (
            1,
            Answer::NotReady {
                wait: Duration::from_secs(7)
            }
        )
    );
    assert!(
        matches!(&seen[1], (2, Answer::Transient { wait, .. }) if wait.as_secs() == 60),
        "{seen:?}"
    );
    assert_eq!(seen[2], (3, Answer::Ready("aaa.bbb.ccc.ddd.eee".into())));
    // A final answer is observed too, and is what the poll returns.
    let (url, _script, h2) = start(vec![Scripted(201, None, "")]);
    let api = MyDataApi::new(&url, PollOptions::default());
    let mut last = None;
    let got = api
        .poll_observed(&ticket(), None, &timer, &CancelToken::new(), |n, a| {
            last = Some((n, a.clone()));
        })
        .await;
    assert_eq!(got, Err(PollError::AlreadyTaken));
    assert_eq!(last, Some((1, Answer::Final(PollError::AlreadyTaken))));
    h.stop(true).await;
    h2.stop(true).await;
}

#[actix_web::test]
async fn final_statuses_are_typed() {
    let cases = [
        (201, PollError::AlreadyTaken),
        (403, PollError::Forbidden),
        (504, PollError::AllFailed),
        (400, PollError::NoTicket),
        (401, PollError::IpNotAllowed),
        (404, PollError::UnexpectedStatus(404)),
    ];
    for (status, want) in cases {
        let (url, script, h) = start(vec![
            Scripted(429, Some("5"), ""),
            Scripted(status, None, ""),
        ]);
        let api = MyDataApi::new(&url, PollOptions::default());
        let timer = ManualTimer::new();
        let got = api.poll(&ticket(), None, &timer, &CancelToken::new()).await;
        assert_eq!(got, Err(want.clone()), "{status}");
        assert_eq!(timer.waits(), vec![5], "{status}");
        // Without a tx_id, the header is not sent.
        assert!(script.seen.lock().unwrap().iter().all(|(_, x)| x.is_none()));
        if status != 404 {
            assert_eq!(got.unwrap_err().api_status().unwrap().wire(), status);
        }
        h.stop(true).await;
    }
}

#[actix_web::test]
async fn transient_failures_are_retried_then_given_up() {
    let (url, _s, h) = start(vec![
        Scripted(503, Some("9"), ""),
        Scripted(502, None, ""),
        Scripted(200, None, "x.y.z.w.v"),
    ]);
    let api = MyDataApi::new(&url, PollOptions::default());
    let timer = ManualTimer::new();
    let got = api.poll(&ticket(), None, &timer, &CancelToken::new()).await;
    assert_eq!(got.as_deref(), Ok("x.y.z.w.v"));
    assert_eq!(timer.waits(), vec![9, 60]);
    h.stop(true).await;

    let (url, _s, h) = start(vec![
        Scripted(503, None, ""),
        Scripted(503, None, ""),
        Scripted(503, None, ""),
    ]);
    let opts = PollOptions {
        max_transient_failures: 2,
        ..PollOptions::default()
    };
    let timer = ManualTimer::new();
    let got = MyDataApi::new(&url, opts)
        .poll(&ticket(), None, &timer, &CancelToken::new())
        .await;
    assert_eq!(got, Err(PollError::Transport("HTTP 503".into())));
    assert_eq!(timer.waits(), vec![60, 60]);
    h.stop(true).await;
}

#[actix_web::test]
async fn deadline_and_cancellation() {
    let (url, script, h) = start(vec![
        Scripted(429, Some("60"), ""),
        Scripted(429, Some("60"), ""),
        Scripted(200, None, "never.reached.a.b.c"),
    ]);
    let opts = PollOptions {
        deadline: Duration::from_secs(100),
        ..PollOptions::default()
    };
    let timer = ManualTimer::new();
    let got = MyDataApi::new(&url, opts)
        .poll(&ticket(), None, &timer, &CancelToken::new())
        .await;
    assert_eq!(got, Err(PollError::DeadlineExceeded { polls: 2 }));
    assert_eq!(timer.waits(), vec![60]);
    assert_eq!(script.seen.lock().unwrap().len(), 2);
    h.stop(true).await;

    let (url, script, h) = start(vec![
        Scripted(429, Some("5"), ""),
        Scripted(200, None, "never.reached.a.b.c"),
    ]);
    let cancel = CancelToken::new();
    let timer = ManualTimer {
        cancel_on_sleep: Some(cancel.clone()),
        ..ManualTimer::new()
    };
    let got = MyDataApi::new(&url, PollOptions::default())
        .poll(&ticket(), None, &timer, &cancel)
        .await;
    assert_eq!(got, Err(PollError::Cancelled));
    assert_eq!(script.seen.lock().unwrap().len(), 1);
    h.stop(true).await;
}

#[actix_web::test]
async fn unreachable_platform_is_transient_then_transport_error() {
    // Bind then drop a listener to get a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let opts = PollOptions {
        max_transient_failures: 1,
        ..PollOptions::default()
    };
    let timer = ManualTimer::new();
    let got = MyDataApi::new(&format!("http://127.0.0.1:{port}"), opts)
        .poll(&ticket(), None, &timer, &CancelToken::new())
        .await;
    assert!(matches!(got, Err(PollError::Transport(_))), "{got:?}");
    assert_eq!(timer.waits(), vec![60]);
}

/// What a raw platform stub does with one connection, after reading the request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Raw {
    /// 200 with `Content-Length: 100` and 7 bytes of it, then nothing (the connection stays
    /// open).
    StallMidBody,
    /// 200 with `Content-Length: 100` and 7 bytes of it, then a reset.
    ResetMidBody,
    /// Reads the request, never answers.
    Silent,
    /// 200 with a whole JWE.
    Jwe,
}

/// A platform stub on a raw TCP listener: each connection gets the next act of `script`, then
/// `then`. Returns its URL and the count of requests.
async fn start_raw(script: Vec<Raw>, then: Raw) -> (String, Arc<Mutex<u32>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let count = Arc::new(Mutex::new(0u32));
    let script = Arc::new(Mutex::new(VecDeque::from(script)));
    let c2 = count.clone();
    actix_web::rt::spawn(async move {
        while let Ok((mut sock, _)) = l.accept().await {
            let (count, script) = (c2.clone(), script.clone());
            actix_web::rt::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                *count.lock().unwrap() += 1;
                let act = script.lock().unwrap().pop_front().unwrap_or(then);
                let partial = b"HTTP/1.1 200 OK\r\nContent-Type: application/jwe\r\n\
                                Content-Length: 100\r\n\r\naaa.bbb";
                match act {
                    Raw::StallMidBody | Raw::Silent => {
                        if act == Raw::StallMidBody {
                            let _ = sock.write_all(partial).await;
                        }
                        tokio::time::sleep(Duration::from_secs(3_600)).await;
                    }
                    Raw::ResetMidBody => {
                        let _ = sock.write_all(partial).await;
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        sock.set_zero_linger().unwrap();
                    }
                    Raw::Jwe => {
                        let _ = sock
                            .write_all(
                                b"HTTP/1.1 200 OK\r\nContent-Type: application/jwe\r\n\
                                  Content-Length: 19\r\nConnection: close\r\n\r\n\
                                  aaa.bbb.ccc.ddd.eee",
                            )
                            .await;
                    }
                }
            });
        }
    });
    (url, count)
}

#[actix_web::test]
async fn request_timeout_covers_the_body() {
    let (url, count) = start_raw(Vec::new(), Raw::StallMidBody).await;
    let opts = PollOptions {
        request_timeout: Duration::from_secs(1),
        max_transient_failures: 0,
        ..PollOptions::default()
    };
    let api = MyDataApi::new(&url, opts);
    let started = std::time::Instant::now();
    let got = tokio::time::timeout(
        Duration::from_secs(20),
        api.poll(&ticket(), None, &ManualTimer::new(), &CancelToken::new()),
    )
    .await
    .expect("the poll hung on a stalled body");
    assert!(matches!(&got, Err(PollError::Transport(_))), "{got:?}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert_eq!(*count.lock().unwrap(), 1);
    // One request alone: a transient answer, to be waited out like a transport failure.
    let got = tokio::time::timeout(
        Duration::from_secs(20),
        api.fetch_once(&ticket(), None, SystemTime::now()),
    )
    .await
    .expect("the request hung on a stalled body");
    assert!(matches!(got, Answer::Transient { .. }), "{got:?}");
}

#[actix_web::test]
async fn deadline_is_honoured_during_a_request() {
    for act in [Raw::Silent, Raw::StallMidBody] {
        let (url, count) = start_raw(Vec::new(), act).await;
        // The request alone could take 300 s; the poll's deadline is 1 s away.
        let opts = PollOptions {
            deadline: Duration::from_secs(1),
            ..PollOptions::default()
        };
        let started = std::time::Instant::now();
        let got = tokio::time::timeout(
            Duration::from_secs(20),
            MyDataApi::new(&url, opts).poll(
                &ticket(),
                None,
                &mydata_sp::poll::SystemTimer,
                &CancelToken::new(),
            ),
        )
        .await
        .unwrap_or_else(|_| panic!("{act:?}: the poll outlasted its deadline"));
        assert_eq!(
            got,
            Err(PollError::DeadlineExceeded { polls: 1 }),
            "{act:?}"
        );
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(5),
            "{act:?}: {took:?}"
        );
        assert_eq!(*count.lock().unwrap(), 1);
    }
}

#[actix_web::test]
async fn broken_body_is_transient_and_polled_again() {
    let (url, count) = start_raw(vec![Raw::ResetMidBody], Raw::Jwe).await;
    let timer = ManualTimer::new();
    let got = tokio::time::timeout(
        Duration::from_secs(20),
        MyDataApi::new(&url, PollOptions::default()).poll(
            &ticket(),
            None,
            &timer,
            &CancelToken::new(),
        ),
    )
    .await
    .expect("the poll hung");
    assert_eq!(got.as_deref(), Ok("aaa.bbb.ccc.ddd.eee"));
    assert_eq!(*count.lock().unwrap(), 2);
    assert_eq!(timer.waits(), vec![60]);
}
