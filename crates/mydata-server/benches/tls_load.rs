//! What HTTPS on the platform's own listener costs (issue 15, spec D50): MyData-API polls per
//! second over HTTPS keep-alive beside plain HTTP, and full TLS handshakes per second beside
//! `openssl s_time` and `openssl speed`, all in one run on one machine.
//!
//! `cargo bench -p mydata-server --bench tls_load`:
//!
//! 1. starts, inside this process, one platform twice over the same store (SQLite in a
//!    temporary directory behind the write-behind layer, as `mydata serve` runs it; the sandbox
//!    configuration; no log subscriber): a plain HTTP listener, and an HTTPS listener with
//!    `fixtures/pki/tls/platform.pem` (ECDSA P-256, TLS 1.2+, HSTS as the platform sends it over
//!    https). One SP is registered (allowed source 127.0.0.1) and one authenticated
//!    transaction stored, so that `GET /service/txid_status` answers 200 `{"code":"100"}`;
//! 2. keep-alive polling, alternating plain and HTTPS (`MYDATA_TLS_ROUNDS` rounds of each):
//!    `MYDATA_TLS_THREADS` client threads each open one connection (`std::net::TcpStream`, or
//!    an `openssl` `SslStream` that trusts `tls-root-ca.pem`), all connected and handshaken
//!    before the clock starts, then poll as fast as answers come for `MYDATA_TLS_SECS`. Every
//!    answer is read in full and must be 200 with a `code`. Per round and as the median of the
//!    rounds: requests/s, p50, p99, the CPU spent per request (the client threads' own, exact,
//!    from `schedstat`; the server's: the rest of the process, in clock ticks), and the
//!    HTTPS/plain ratio against the 80 % target;
//! 3. full handshakes: client threads connect, do a full handshake (the client's session cache
//!    off, no ticket offered: never a resumption, checked) and close the connection without a
//!    request (`MYDATA_TLS_HANDSHAKE_THEN=close`, the default, as `openssl s_time -new` without
//!    `-www` does) or after one `GET /healthz` (`=get`); with one thread (as `s_time`) and with
//!    `MYDATA_TLS_THREADS`;
//! 4. beside it, on the same listener: `openssl s_time -connect 127.0.0.1:PORT -new -time
//!    MYDATA_TLS_HANDSHAKE_SECS -CAfile fixtures/pki/tls/tls-root-ca.pem`, and `openssl speed
//!    -seconds 3 ecdsap256 ecdhp256` (plus `ecdhx25519`, the group TLS 1.3 picks here). Without
//!    the `openssl` command-line tool those lines say so and are skipped.
//!
//! Figures only: the bench never fails on timing. It exits non-zero only when the run is
//! invalid (the setup failed, an answer was not 200, a connection failed, or a handshake was a
//! resumption).
//!
//! Environment: `MYDATA_TLS_THREADS` (2 × cores), `MYDATA_TLS_SECS=10`, `MYDATA_TLS_ROUNDS=3`,
//! `MYDATA_TLS_WARMUP_MS=500` (per round, not recorded), `MYDATA_BENCH_WORKERS=2` (HTTP
//! workers of each listener), `MYDATA_TLS_HANDSHAKE_SECS=10`, `MYDATA_TLS_HANDSHAKE_THEN=close`,
//! `MYDATA_TLS_OPENSSL=1` (0 skips the `openssl` CLI), `MYDATA_TLS_ONLY=all|poll|handshake`
//! (or `plain`, `https`: that polling mode alone, to profile it).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mydata_protocol::catalogue::Catalogue;
use mydata_protocol::date::UnixTime;
use mydata_protocol::jwe::JweMode;
use mydata_protocol::package::sp::PackagingMode;
use mydata_server::clock::SystemClock;
use mydata_server::config::Config;
use mydata_server::platform::{NewSp, Platform, SANDBOX_CATALOGUE};
use mydata_server::secrets::MasterKey;
use mydata_server::storage::{TxPhase, TxRecord};
use openssl::ssl::{SslConnector, SslMethod, SslSessionCacheMode, SslStream};

/// Issue 15's target: HTTPS keep-alive polling at this fraction of the plain rate or more.
const TARGET_RATIO: f64 = 0.80;
/// The transaction polled.
const TX_ID: &str = "tls-bench-tx-1";
/// Client threads carry this prefix (to tell them apart in `perf` and `top -H`).
const CLIENT_THREAD: &str = "tls-bench-c";

type BoxError = Box<dyn std::error::Error + Send + Sync>;

// ------------------------------------------------------------------------------------------
// Settings

#[derive(Clone, Copy, PartialEq, Eq)]
enum Then {
    Close,
    Get,
}

struct Settings {
    threads: usize,
    secs: u64,
    rounds: usize,
    warmup_ms: u64,
    workers: usize,
    hs_secs: u64,
    hs_then: Then,
    openssl_cli: bool,
    poll: bool,
    handshake: bool,
    /// The polling modes run (both unless `MYDATA_TLS_ONLY=plain|https`, for profiling one).
    modes: Vec<Mode>,
}

impl Settings {
    fn from_env() -> Self {
        fn var(k: &str, d: usize) -> usize {
            std::env::var(k)
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(d)
        }
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let only = std::env::var("MYDATA_TLS_ONLY").unwrap_or_default();
        Settings {
            threads: var("MYDATA_TLS_THREADS", 2 * cores).max(1),
            secs: var("MYDATA_TLS_SECS", 10).max(1) as u64,
            rounds: var("MYDATA_TLS_ROUNDS", 3).max(1),
            warmup_ms: var("MYDATA_TLS_WARMUP_MS", 500) as u64,
            workers: var("MYDATA_BENCH_WORKERS", 2).max(1),
            hs_secs: var("MYDATA_TLS_HANDSHAKE_SECS", 10).max(1) as u64,
            hs_then: match std::env::var("MYDATA_TLS_HANDSHAKE_THEN").as_deref() {
                Ok("get") => Then::Get,
                _ => Then::Close,
            },
            openssl_cli: var("MYDATA_TLS_OPENSSL", 1) != 0,
            poll: only != "handshake",
            handshake: !matches!(only.as_str(), "poll" | "plain" | "https"),
            modes: match only.as_str() {
                "plain" => vec![Mode::Plain],
                "https" => vec![Mode::Https],
                _ => vec![Mode::Plain, Mode::Https],
            },
        }
    }
}

fn pki(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/pki/tls")
        .join(name)
}

// ------------------------------------------------------------------------------------------
// CPU readings (/proc)

/// The CPU time a task has run, in nanoseconds: the first field of its `schedstat` (exact, where
/// `stat`'s utime and stime are ticks).
fn schedstat_ns(path: &Path) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The calling thread's CPU time in nanoseconds.
fn thread_cpu_ns() -> u64 {
    schedstat_ns(Path::new("/proc/thread-self/schedstat"))
}

/// The CPU time of this process, every thread counted, ended ones included (the server's
/// blocking-pool threads come and go), in nanoseconds: utime + stime of `/proc/self/stat`, in
/// clock ticks (1 % of a 10 s window at 100 Hz).
fn process_cpu_ns(ticks_per_sec: f64) -> u64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = s.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    // After "pid (comm)" the state is field 3; utime is field 14 and stime 15.
    let get = |i: usize| {
        f.get(i - 3)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    ((get(14) + get(15)) as f64 / ticks_per_sec * 1e9) as u64
}

fn clock_ticks_per_sec() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

// ------------------------------------------------------------------------------------------
// The platform

struct Servers {
    plain: SocketAddr,
    https: SocketAddr,
    client_id: String,
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

fn now() -> UnixTime {
    UnixTime(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64),
    )
}

/// One store, one SP, one authenticated transaction; the platform over it twice: plain and
/// HTTPS, each listening on 127.0.0.1 with `workers` workers, in an actix system of its own.
fn start_servers(workers: usize) -> Result<Servers, BoxError> {
    let dir = tempfile::tempdir()?;
    let base = Config {
        workers,
        data_dir: dir.path().to_path_buf(),
        sandbox: true,
        ..Config::default()
    };
    let store = mydata_server::storage::open_server(&base)?;
    let key = MasterKey::generate()?;
    let plain = Platform::new(
        store.clone(),
        key.clone(),
        Arc::new(SystemClock),
        base.clone(),
    )?;
    // The sandbox datasets, with a DP address never called here.
    plain.load_sandbox_at("http://127.0.0.1:9")?;
    let dataset = Catalogue::from_json(SANDBOX_CATALOGUE)?
        .datasets
        .iter()
        .find(|d| d.identity_methods.iter().any(|m| m.code() == "PII"))
        .ok_or("no sandbox dataset with the two-documents method")?
        .resource_id
        .clone();
    let (_, creds) = plain.register_sp(NewSp {
        name: "TLS bench SP".into(),
        purpose: "bench".into(),
        return_url: "http://127.0.0.1:1/return".into(),
        sp_api_url: "http://127.0.0.1:1/sp-api".into(),
        allowed_ips: vec!["127.0.0.1".parse()?],
        resources: vec![dataset.clone()],
        jwe_mode: JweMode::Gcm,
        packaging_mode: PackagingMode::A,
        ..NewSp::default()
    })?;
    let mut tx = TxRecord::created(
        "tls-bench-1".into(),
        &creds.client_id,
        TX_ID,
        &[dataset.as_str()],
        TxPhase::Authenticated,
        now(),
    );
    tx.pid_sealed = Some(key.seal("tx:tls-bench-1:pid", "A120345672")?);
    tx.identity_method = Some("PII".into());
    store.insert_tx(&tx)?;
    // The same platform with the listener's certificate: built after the SP is registered,
    // so that its index of SP sources holds it.
    let tls = Config {
        tls_cert: Some(pki("platform.pem")),
        tls_key: Some(pki("platform.key")),
        public_url: "https://localhost".into(),
        ..base
    };
    let https = Platform::new(store, key, Arc::new(SystemClock), tls)?;
    let (plain, https) = (Arc::new(plain), Arc::new(https));

    let (tx_addr, rx_addr) = std::sync::mpsc::channel();
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("tls-bench-system".into())
        .spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let started = mydata_server::http::spawn(plain)
                    .and_then(|p| mydata_server::http::spawn(https).map(|h| (p, h)));
                match started {
                    Ok((p, h)) => {
                        let _ = tx_addr.send(Ok((p.addr, h.addr, h.url.clone())));
                        let _ = stop_rx.await;
                        p.handle.stop(true).await;
                        h.handle.stop(true).await;
                    }
                    Err(e) => {
                        let _ = tx_addr.send(Err(e.to_string()));
                    }
                }
            });
        })?;
    let (plain, https, url) = rx_addr.recv()??;
    if !url.starts_with("https://") {
        return Err(format!("the TLS listener is not https: {url}").into());
    }
    Ok(Servers {
        plain,
        https,
        client_id: creds.client_id,
        stop,
        thread,
        _dir: dir,
    })
}

// ------------------------------------------------------------------------------------------
// Clients

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Plain,
    Https,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Plain => "plain",
            Mode::Https => "https",
        }
    }
}

/// A client context that trusts the sandbox TLS root and never resumes a session. With
/// `MYDATA_TLS_CLIENT_READ_AHEAD=1` it reads ahead (a record in one `recv`, not its 5-byte
/// header and then its body), to see what the second `recv` of each record costs.
fn connector() -> Result<SslConnector, BoxError> {
    let mut b = SslConnector::builder(SslMethod::tls_client())?;
    b.set_ca_file(pki("tls-root-ca.pem"))?;
    b.set_session_cache_mode(SslSessionCacheMode::OFF);
    if std::env::var("MYDATA_TLS_CLIENT_READ_AHEAD").is_ok_and(|v| v == "1") {
        b.set_read_ahead(true);
    }
    Ok(b.build())
}

fn tls_connect(c: &SslConnector, addr: SocketAddr) -> Result<SslStream<TcpStream>, BoxError> {
    let tcp = TcpStream::connect(addr)?;
    tcp.set_nodelay(true)?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    c.connect("localhost", tcp)
        .map_err(|e| format!("TLS handshake: {e}").into())
}

fn plain_connect(addr: SocketAddr) -> Result<TcpStream, BoxError> {
    let tcp = TcpStream::connect(addr)?;
    tcp.set_nodelay(true)?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    Ok(tcp)
}

/// Reads one HTTP/1.1 answer (headers and a `content-length` body) from `s` into `buf`:
/// its status and the body's range in `buf`. Nothing is pipelined, so an answer ends the
/// bytes read.
fn read_answer<S: Read>(
    s: &mut S,
    buf: &mut Vec<u8>,
) -> Result<(u16, std::ops::Range<usize>), BoxError> {
    buf.clear();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err("connection closed mid-answer".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = std::str::from_utf8(&buf[..head_end])?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or("no status line")?;
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .ok_or("no content-length")?;
    while buf.len() < head_end + len {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err("connection closed mid-body".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    if buf.len() > head_end + len {
        return Err("bytes after the answer".into());
    }
    Ok((status, head_end..head_end + len))
}

/// One request (written at once) and its answer: whether it is the 200 with a `code` expected.
fn exchange<S: Read + Write>(s: &mut S, req: &[u8], buf: &mut Vec<u8>) -> Result<bool, BoxError> {
    s.write_all(req)?;
    let (status, body) = read_answer(s, buf)?;
    Ok(status == 200 && buf[body].windows(6).any(|w| w == b"\"code\""))
}

fn poll_request(client_id: &str) -> Vec<u8> {
    format!(
        "GET /service/txid_status HTTP/1.1\r\nHost: localhost\r\ntx_id: {TX_ID}\r\n\
         client_id: {client_id}\r\n\r\n"
    )
    .into_bytes()
}

/// What one client thread saw.
#[derive(Default)]
struct Seen {
    /// Latency of each answer in nanoseconds.
    latencies: Vec<u64>,
    bad: u64,
    errors: Vec<String>,
    reused: u64,
    /// This client thread's CPU time over the recorded window.
    cpu_ns: u64,
}

/// Polls on one open connection until `end`, after `warm` unrecorded.
fn poll_on<S: Read + Write>(s: &mut S, req: &[u8], warm: Instant, end: Instant, seen: &mut Seen) {
    let mut buf = Vec::with_capacity(4096);
    let mut cpu0 = None;
    loop {
        let t0 = Instant::now();
        if t0 >= warm && cpu0.is_none() {
            cpu0 = Some(thread_cpu_ns());
        }
        if t0 >= end {
            seen.cpu_ns = thread_cpu_ns().saturating_sub(cpu0.unwrap_or(0));
            return;
        }
        match exchange(s, req, &mut buf) {
            Ok(ok) => {
                if t0 >= warm {
                    seen.latencies.push(t0.elapsed().as_nanos() as u64);
                }
                if !ok {
                    seen.bad += 1;
                }
            }
            Err(e) => {
                seen.errors.push(e.to_string());
                return;
            }
        }
    }
}

/// One measured window's figures.
#[derive(Clone, Copy, Default)]
struct Figures {
    count: u64,
    secs: f64,
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// Server threads' CPU per request (µs), client threads' CPU per request (µs).
    server_us: f64,
    client_us: f64,
    /// CPU of the whole process over the window, in cores.
    cores_busy: f64,
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i] as f64 / 1e6
}

/// Where client threads wait: all connected, then released together into the window.
struct Gate {
    connected: Barrier,
    go: Barrier,
    window: std::sync::OnceLock<(Instant, Instant)>,
}

impl Gate {
    /// Called by a client thread once it is connected (or failed to): waits for the others
    /// and returns the window (recording starts at `.0`, everything stops at `.1`).
    fn ready(&self) -> (Instant, Instant) {
        self.connected.wait();
        self.go.wait();
        *self
            .window
            .get()
            .expect("the window is set before the release")
    }
}

/// Runs `threads` client threads: each sets up (not timed), calls [`Gate::ready`], then works
/// until the window ends. Returns the figures and what went wrong.
fn run_clients<F>(threads: usize, warmup: Duration, secs: u64, work: F) -> (Figures, Seen)
where
    F: Fn(&Gate) -> Seen + Send + Sync + 'static,
{
    let work = Arc::new(work);
    let gate = Arc::new(Gate {
        connected: Barrier::new(threads + 1),
        go: Barrier::new(threads + 1),
        window: std::sync::OnceLock::new(),
    });
    let mut handles = Vec::new();
    for i in 0..threads {
        let (work, gate) = (work.clone(), gate.clone());
        handles.push(
            std::thread::Builder::new()
                .name(format!("{CLIENT_THREAD}{i}"))
                .spawn(move || work(&gate))
                .expect("spawn a client thread"),
        );
    }
    let hz = clock_ticks_per_sec();
    gate.connected.wait();
    let warm = Instant::now() + warmup;
    let end = warm + Duration::from_secs(secs);
    let _ = gate.window.set((warm, end));
    gate.go.wait();
    std::thread::sleep(warm.saturating_duration_since(Instant::now()));
    let total0 = process_cpu_ns(hz);
    let t0 = Instant::now();
    std::thread::sleep(end.saturating_duration_since(Instant::now()));
    let elapsed = t0.elapsed().as_secs_f64();
    let mut all = Seen::default();
    let mut lat = Vec::new();
    for h in handles {
        let s = h.join().unwrap_or_else(|_| Seen {
            errors: vec!["a client thread panicked".into()],
            ..Seen::default()
        });
        lat.extend(s.latencies);
        all.bad += s.bad;
        all.reused += s.reused;
        all.cpu_ns += s.cpu_ns;
        all.errors.extend(s.errors);
    }
    // Everything this process ran over the window, less the client threads' own (exact).
    let total1 = process_cpu_ns(hz);
    lat.sort_unstable();
    let count = lat.len() as u64;
    let client = all.cpu_ns as f64 / 1e9;
    let server = (total1.saturating_sub(total0) as f64 / 1e9 - client).max(0.0);
    let per = |cpu: f64| {
        if count == 0 {
            0.0
        } else {
            cpu.max(0.0) / count as f64 * 1e6
        }
    };
    let f = Figures {
        count,
        secs: elapsed,
        rps: count as f64 / elapsed,
        p50_ms: percentile(&lat, 0.50),
        p99_ms: percentile(&lat, 0.99),
        server_us: per(server),
        client_us: per(client),
        cores_busy: (server + client) / elapsed,
    };
    all.latencies = lat;
    (f, all)
}

/// One keep-alive polling window of `mode`.
fn poll_round(s: &Settings, srv: &Servers, mode: Mode) -> (Figures, Seen) {
    let req = Arc::new(poll_request(&srv.client_id));
    let addr = match mode {
        Mode::Plain => srv.plain,
        Mode::Https => srv.https,
    };
    let conn = match mode {
        Mode::Https => Some(Arc::new(connector().expect("TLS client context"))),
        Mode::Plain => None,
    };
    run_clients(
        s.threads,
        Duration::from_millis(s.warmup_ms),
        s.secs,
        move |gate| {
            let mut seen = Seen::default();
            match &conn {
                Some(c) => match tls_connect(c, addr) {
                    Ok(mut st) => {
                        let (warm, end) = gate.ready();
                        poll_on(&mut st, &req, warm, end, &mut seen);
                    }
                    Err(e) => {
                        gate.ready();
                        seen.errors.push(format!("connect: {e}"));
                    }
                },
                None => match plain_connect(addr) {
                    Ok(mut st) => {
                        let (warm, end) = gate.ready();
                        poll_on(&mut st, &req, warm, end, &mut seen);
                    }
                    Err(e) => {
                        gate.ready();
                        seen.errors.push(format!("connect: {e}"));
                    }
                },
            }
            seen
        },
    )
}

/// Full handshakes with `threads` threads for `secs`.
fn handshake_run(s: &Settings, srv: &Servers, threads: usize) -> (Figures, Seen) {
    let addr = srv.https;
    let then = s.hs_then;
    let health = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec();
    run_clients(threads, Duration::ZERO, s.hs_secs, move |gate| {
        let mut seen = Seen::default();
        let c = match connector() {
            Ok(c) => c,
            Err(e) => {
                gate.ready();
                seen.errors.push(format!("TLS client context: {e}"));
                return seen;
            }
        };
        let (warm, end) = gate.ready();
        let mut buf = Vec::with_capacity(4096);
        let cpu0 = thread_cpu_ns();
        loop {
            let t0 = Instant::now();
            if t0 >= end {
                seen.cpu_ns = thread_cpu_ns().saturating_sub(cpu0);
                return seen;
            }
            match tls_connect(&c, addr) {
                Ok(mut st) => {
                    if st.ssl().session_reused() {
                        seen.reused += 1;
                    }
                    if then == Then::Get {
                        match st
                            .write_all(&health)
                            .map_err(BoxError::from)
                            .and_then(|()| read_answer(&mut st, &mut buf))
                        {
                            Ok((200, _)) => {}
                            Ok(_) => seen.bad += 1,
                            Err(e) => {
                                seen.errors.push(format!("GET after the handshake: {e}"));
                                return seen;
                            }
                        }
                    }
                    if t0 >= warm {
                        seen.latencies.push(t0.elapsed().as_nanos() as u64);
                    }
                    // Closed without close_notify, as `s_time` does.
                    drop(st);
                }
                Err(e) => {
                    seen.errors.push(format!("handshake: {e}"));
                    return seen;
                }
            }
        }
    })
}

// ------------------------------------------------------------------------------------------
// The openssl command-line tool

fn openssl_version() -> Option<String> {
    let out = Command::new("openssl").arg("version").output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// `openssl s_time` against `addr`: its summary lines, its connection count, and the wall
/// time of the command as measured here (`s_time` prints whole seconds only).
fn s_time(addr: SocketAddr, secs: u64) -> Result<(Vec<String>, Option<u64>, f64), String> {
    let t0 = Instant::now();
    let out = Command::new("openssl")
        .args(["s_time", "-connect"])
        .arg(addr.to_string())
        .args(["-new", "-time"])
        .arg(secs.to_string())
        .arg("-CAfile")
        .arg(pki("tls-root-ca.pem"))
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("openssl s_time: {e}"))?;
    let wall = t0.elapsed().as_secs_f64();
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<String> = text
        .lines()
        .filter(|l| l.contains("connections in"))
        .map(|l| l.trim().to_string())
        .collect();
    // "N connections in T real seconds, B bytes read per connection"
    let count = lines.iter().find_map(|l| {
        let (n, rest) = l.split_once(" connections in ")?;
        rest.contains("real seconds")
            .then(|| n.trim().parse().ok())?
    });
    if lines.is_empty() {
        return Err(format!(
            "openssl s_time printed no result ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok((lines, count, wall))
}

/// The last `n` numbers of the first line of `text` containing `key`.
fn last_numbers(text: &str, key: &str, n: usize) -> Option<Vec<f64>> {
    let l = text.lines().find(|l| l.contains(key))?;
    let nums: Vec<f64> = l
        .split_whitespace()
        .filter_map(|w| w.trim_end_matches('s').parse().ok())
        .collect();
    (nums.len() >= n).then(|| nums[nums.len() - n..].to_vec())
}

struct Speed {
    ecdsa_sign: Option<f64>,
    ecdsa_verify: Option<f64>,
    ecdh_p256: Option<f64>,
    x25519: Option<f64>,
}

fn openssl_speed(algs: &[&str]) -> Result<String, String> {
    let out = Command::new("openssl")
        .args(["speed", "-seconds", "3"])
        .args(algs)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("openssl speed: {e}"))?;
    if !out.status.success() {
        return Err(format!("openssl speed {}: {}", algs.join(" "), out.status));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn speed() -> Result<Speed, String> {
    let main = openssl_speed(&["ecdsap256", "ecdhp256"])?;
    let ecdsa = last_numbers(&main, "ecdsa (nistp256)", 2);
    let ecdh = last_numbers(&main, "ecdh (nistp256)", 1);
    let x = openssl_speed(&["ecdhx25519"])
        .ok()
        .and_then(|t| last_numbers(&t, "ecdh (X25519)", 1));
    Ok(Speed {
        ecdsa_sign: ecdsa.as_ref().map(|v| v[0]),
        ecdsa_verify: ecdsa.as_ref().map(|v| v[1]),
        ecdh_p256: ecdh.map(|v| v[0]),
        x25519: x.map(|v| v[0]),
    })
}

// ------------------------------------------------------------------------------------------
// Report

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn header() {
    println!(
        "{:<16} {:>10} {:>9} {:>9} {:>10} {:>10} {:>10} {:>10}",
        "", "req/s", "p50 ms", "p99 ms", "requests", "srv µs/req", "cli µs/req", "cores busy"
    );
}

fn row(name: &str, f: &Figures) {
    println!(
        "{name:<16} {:>10.0} {:>9.3} {:>9.3} {:>10} {:>10.1} {:>10.1} {:>10.2}",
        f.rps, f.p50_ms, f.p99_ms, f.count, f.server_us, f.client_us, f.cores_busy
    );
}

/// Whether the run stays valid after `seen`; prints what went wrong.
fn check(what: &str, seen: &Seen, f: &Figures) -> bool {
    let mut ok = true;
    if f.count == 0 {
        println!("INVALID ({what}): no answer recorded");
        ok = false;
    }
    if seen.bad > 0 {
        println!(
            "INVALID ({what}): {} answers were not 200 with a code",
            seen.bad
        );
        ok = false;
    }
    if seen.reused > 0 {
        println!(
            "INVALID ({what}): {} handshakes resumed a session",
            seen.reused
        );
        ok = false;
    }
    if let Some(e) = seen.errors.first() {
        println!(
            "INVALID ({what}): {} connection errors, the first: {e}",
            seen.errors.len()
        );
        ok = false;
    }
    ok
}

fn met(ok: bool) -> &'static str {
    if ok { "MET" } else { "NOT MET" }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        // Built but not run by `cargo test --all-targets`.
        return;
    }
    let s = Settings::from_env();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("TLS cost bench (issue 15, spec D50)");
    println!(
        "machine:        {cores} cpus, loadavg {} (at start)",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "server:         mydata-server in this process, {} HTTP workers per listener, SQLite \
         (write-behind) in a tempdir, sandbox config, no log subscriber, metrics on",
        s.workers
    );
    println!(
        "tls:            fixtures/pki/tls/platform.pem (ECDSA P-256), {}",
        openssl::version::version()
    );
    let srv = match start_servers(s.workers) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("tls_load: setup failed: {e}");
            std::process::exit(1);
        }
    };
    println!(
        "listeners:      plain http://{}  https://{} (HSTS sent, as over https)",
        srv.plain, srv.https
    );
    let mut valid = true;

    // The first answer of each listener, and what TLS negotiated.
    let req = poll_request(&srv.client_id);
    let first = (|| -> Result<String, BoxError> {
        let mut buf = Vec::new();
        let mut p = plain_connect(srv.plain)?;
        p.write_all(&req)?;
        let (st, body) = read_answer(&mut p, &mut buf)?;
        let plain = format!("{st} {}", String::from_utf8_lossy(&buf[body]));
        let mut t = tls_connect(&connector()?, srv.https)?;
        let negotiated = format!(
            "{} {}",
            t.ssl().version_str(),
            t.ssl().current_cipher().map_or("?", |c| c.name())
        );
        t.write_all(&req)?;
        let (st, body) = read_answer(&mut t, &mut buf)?;
        let https = format!("{st} {}", String::from_utf8_lossy(&buf[body]));
        Ok(format!("plain {plain}; https {https} ({negotiated})"))
    })();
    match first {
        Ok(t) => println!("first answers:  GET /service/txid_status: {t}"),
        Err(e) => {
            println!("INVALID: first request failed: {e}");
            std::process::exit(1);
        }
    }
    println!();

    let mut plain_runs: Vec<Figures> = Vec::new();
    let mut https_runs: Vec<Figures> = Vec::new();
    if s.poll {
        println!(
            "== MyData-API keep-alive polling: {} client threads, one connection each \
             (connected and handshaken before the clock), {} s per round after {} ms warm-up, \
             {} rounds alternating plain/https",
            s.threads, s.secs, s.warmup_ms, s.rounds
        );
        header();
        for round in 1..=s.rounds {
            for &mode in &s.modes {
                let (f, seen) = poll_round(&s, &srv, mode);
                row(&format!("round {round} {}", mode.name()), &f);
                valid &= check(&format!("round {round} {}", mode.name()), &seen, &f);
                match mode {
                    Mode::Plain => plain_runs.push(f),
                    Mode::Https => https_runs.push(f),
                }
            }
            if let (Some(p), Some(h)) = (plain_runs.last(), https_runs.last())
                && s.modes.len() == 2
                && p.rps > 0.0
            {
                println!(
                    "round {round} ratio https/plain: {:.1} %",
                    h.rps / p.rps * 100.0
                );
            }
        }
        let med = |v: &[Figures]| Figures {
            count: median(v.iter().map(|f| f.count as f64).collect()) as u64,
            secs: median(v.iter().map(|f| f.secs).collect()),
            rps: median(v.iter().map(|f| f.rps).collect()),
            p50_ms: median(v.iter().map(|f| f.p50_ms).collect()),
            p99_ms: median(v.iter().map(|f| f.p99_ms).collect()),
            server_us: median(v.iter().map(|f| f.server_us).collect()),
            client_us: median(v.iter().map(|f| f.client_us).collect()),
            cores_busy: median(v.iter().map(|f| f.cores_busy).collect()),
        };
        let (mp, mh) = (med(&plain_runs), med(&https_runs));
        println!();
        println!("== median of {} rounds", s.rounds);
        header();
        row("plain http", &mp);
        row("https", &mh);
        if mp.rps > 0.0 && mh.rps > 0.0 {
            let ratio = mh.rps / mp.rps;
            println!(
                "HTTPS/plain requests/s: {:.1} % (target >= {:.0} %: {})",
                ratio * 100.0,
                TARGET_RATIO * 100.0,
                met(ratio >= TARGET_RATIO)
            );
            if mp.server_us > 0.0 {
                println!(
                    "server CPU per request: https {:.1} µs vs plain {:.1} µs ({:+.1} µs, \
                     {:.2}x); client CPU per request: https {:.1} µs vs plain {:.1} µs \
                     (client and server share the same cores)",
                    mh.server_us,
                    mp.server_us,
                    mh.server_us - mp.server_us,
                    mh.server_us / mp.server_us,
                    mh.client_us,
                    mp.client_us
                );
            }
        }
        println!();
    }

    if s.handshake {
        let then = match s.hs_then {
            Then::Close => "then closed without a request",
            Then::Get => "then one GET /healthz, then closed",
        };
        println!(
            "== full TLS handshakes: a new connection each, client session cache off (never \
             resumed), {then}; {} s each",
            s.hs_secs
        );
        println!(
            "{:<16} {:>10} {:>9} {:>9} {:>10} {:>10} {:>10} {:>10}",
            "", "hs/s", "p50 ms", "p99 ms", "handshakes", "srv µs/hs", "cli µs/hs", "cores busy"
        );
        let mut ours = Vec::new();
        for threads in [1, s.threads] {
            let (f, seen) = handshake_run(&s, &srv, threads);
            let name = format!(
                "ours {threads} thread{}",
                if threads == 1 { "" } else { "s" }
            );
            row(&name, &f);
            valid &= check(&name, &seen, &f);
            ours.push((threads, f));
        }
        let version = if s.openssl_cli {
            openssl_version()
        } else {
            None
        };
        match version {
            None if s.openssl_cli => {
                println!("openssl CLI:    not found on PATH; s_time and speed skipped")
            }
            None => println!("openssl CLI:    skipped (MYDATA_TLS_OPENSSL=0)"),
            Some(v) => {
                println!("openssl CLI:    {v}");
                let cmd = format!(
                    "openssl s_time -connect {} -new -time {} -CAfile fixtures/pki/tls/tls-root-ca.pem",
                    srv.https, s.hs_secs
                );
                match s_time(srv.https, s.hs_secs) {
                    Ok((lines, count, wall)) => {
                        println!("s_time:         {cmd}");
                        for l in &lines {
                            println!("  s_time | {l}");
                        }
                        if let Some(n) = count {
                            let r = n as f64 / wall;
                            println!(
                                "s_time (1 connection at a time, handshake then close): {r:.0} \
                                 handshakes/s ({n} in {wall:.2} s of wall time, measured here); \
                                 ours with 1 thread: {:.0} ({:.0} % of s_time)",
                                ours[0].1.rps,
                                ours[0].1.rps / r * 100.0
                            );
                        }
                    }
                    Err(e) => println!("s_time:         not measured: {e}"),
                }
                match speed() {
                    Ok(sp) => {
                        let show =
                            |v: Option<f64>| v.map_or("?".to_string(), |x| format!("{x:.0}"));
                        println!(
                            "openssl speed -seconds 3 ecdsap256 ecdhp256 (one core): ECDSA P-256 \
                             sign/s {}, verify/s {}; ECDH P-256 ops/s {}; (ecdhx25519) X25519 \
                             ops/s {}",
                            show(sp.ecdsa_sign),
                            show(sp.ecdsa_verify),
                            show(sp.ecdh_p256),
                            show(sp.x25519)
                        );
                        if let Some(sign) = sp.ecdsa_sign {
                            let (n, f) = ours.last().expect("two handshake runs");
                            println!(
                                "a full handshake costs the server at least one ECDSA sign: \
                                 ours {:.0} hs/s with {n} threads is {:.1} % of one core's \
                                 sign/s, with clients and server on the same {cores} cores",
                                f.rps,
                                f.rps / sign * 100.0
                            );
                        }
                    }
                    Err(e) => println!("openssl speed:  not measured: {e}"),
                }
            }
        }
        println!();
    }

    let _ = srv.stop.send(());
    let _ = srv.thread.join();
    if !valid {
        println!("the run is INVALID (see above): its figures mean nothing");
        std::process::exit(1);
    }
}
