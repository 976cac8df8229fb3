//! Idle connections do not starve the SP-API call of file descriptors (spec D48): the real
//! `mydata serve --sandbox`, started with a soft open-file limit of 1,024 (the hard limit kept),
//! raises it to the hard limit and caps inbound connections below it; with 1,500 idle
//! connections held open to it, a whole consent still ends with 200 and the SP gets its SP-API
//! call. Before, the accepted idle connections took every descriptor: the pages, on a connection
//! the browser already had, still answered, but the SP-API call could not open a socket and the
//! consent ended 410.
//!
//! Each idle connection has sent the head of a `POST /connect/introspect` whose body never
//! comes, so the server holds it as long as the test does. (A connection that sends nothing is
//! closed by actix-web after 5 s, which frees descriptors in bursts and would make the outcome
//! before the fix a matter of timing.) The browser keeps one connection, opened before them.
//!
//! A file of its own: the test raises its own soft open-file limit to hold the connections.
#![cfg(unix)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use mydata_protocol::flow::{ApplicationMode, Pid};
use mydata_protocol::jwe::JweMode;
use mydata_protocol::resources::ResourceList;
use mydata_sp::redirect::RedirectRequest;

mod common;

use common::*;

const IDLE: usize = 1_500;

/// What each idle connection sends: a request head whose body never follows.
const STUCK: &str = "POST /connect/introspect HTTP/1.1\r\nHost: 127.0.0.1\r\n\
    Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\n";

/// Keeps `n` idle connections open to `addr` (each has sent a request head announcing a body
/// that never comes), reopening any the server closes, until dropped.
struct Holder {
    stop: Arc<AtomicBool>,
    /// Connections open after the last sweep.
    open: Arc<AtomicUsize>,
    /// Sweeps done (each tries every closed slot once, until one cannot be opened).
    sweeps: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Holder {
    fn start(addr: SocketAddr, n: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let open = Arc::new(AtomicUsize::new(0));
        let sweeps = Arc::new(AtomicUsize::new(0));
        let (s, o, w) = (stop.clone(), open.clone(), sweeps.clone());
        let thread = std::thread::spawn(move || {
            let mut conns: Vec<Option<TcpStream>> = (0..n).map(|_| None).collect();
            let mut buf = [0u8; 64];
            while !s.load(Ordering::Relaxed) {
                let mut count = 0;
                // Once a connection cannot be opened (the backlog is full), the rest of this
                // sweep only checks the open ones.
                let mut refused = false;
                for slot in conns.iter_mut() {
                    if let Some(c) = slot {
                        // Closed by the server: read gives 0 or an error other than WouldBlock.
                        match c.read(&mut buf) {
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                            _ => *slot = None,
                        }
                    }
                    if slot.is_none() && !refused {
                        match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                            Ok(c) if (&c).write_all(STUCK.as_bytes()).is_ok() => {
                                c.set_nonblocking(true).unwrap();
                                *slot = Some(c);
                            }
                            _ => refused = true,
                        }
                    }
                    if slot.is_some() {
                        count += 1;
                    }
                }
                o.store(count, Ordering::Relaxed);
                w.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        Holder {
            stop,
            open,
            sweeps,
            thread: Some(thread),
        }
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn a_consent_succeeds_with_1500_idle_connections_held_open() {
    // This process holds the connections: its own soft limit goes up to the hard limit.
    let limit = rlimit::increase_nofile_limit(u64::MAX).unwrap();
    assert!(
        limit >= IDLE as u64 + 200,
        "this test needs an open-file hard limit of at least {} (it is {limit})",
        IDLE + 200
    );
    // The server starts with a soft limit of 1,024 and the same hard limit.
    let p = start_platform_with(Some("ulimit -Sn 1024"), &[]);

    let rid = pii_instant_datasets()[0].clone();
    let (sp_port, seen) = sp_stub();
    let creds = register(&p, sp_port, &rid, "a", "cbc");
    let cfg = sp_config(&p, &creds, sp_port, JweMode::Cbc);

    let addr: SocketAddr = p.url.trim_start_matches("http://").parse().unwrap();
    // The browser's connection, open before the idle ones; kept busy while they are opened
    // (actix-web closes a connection idle for 5 s).
    let mut browser = Browser::keep_alive(&p.url);
    let holder = Holder::start(addr, IDLE);
    let start = Instant::now();
    // All open, or five sweeps done (the server cannot take them all: before the fix).
    while holder.open.load(Ordering::Relaxed) < IDLE && holder.sweeps.load(Ordering::Relaxed) < 5 {
        let r = browser.send("GET", "/.well-known/oauth-authorization-server", None);
        assert_eq!(r.status, 200);
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the connections were not opened"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let held = holder.open.load(Ordering::Relaxed);

    // A whole consent while they are held: pages, the SP-API call, the return with 200.
    let list = ResourceList::new(vec![rid.parse().unwrap()]).unwrap();
    let pid = Pid::parse_for(ApplicationMode::Person, CITIZEN).unwrap();
    let redirect = cfg.redirect(&RedirectRequest::new(&list, &pid)).unwrap();
    let back = browser.consent(&redirect.url);
    assert!(
        back.starts_with(&cfg.return_url) && back.contains("code=200"),
        "{back} ({held} idle connections open)\n{}",
        p.log()
    );
    let body: serde_json::Value = serde_json::from_str(&wait_for_body(&seen, 0)).unwrap();
    assert_eq!(body["tx_id"], redirect.tx_id.as_str(), "{body}");
    assert!(body["permission_ticket"].is_string(), "{body}");
    // All of them were open at once: the server took them without running out.
    assert_eq!(held, IDLE);
    drop(holder);
    // It says so at start.
    let log = p.log();
    assert!(
        log.contains(&format!("open-file limit {limit} (raised from 1024)")),
        "{log}"
    );
    assert!(log.contains("inbound connections"), "{log}");
}
