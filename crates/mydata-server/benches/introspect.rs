//! Introspection rate of our server beside node-oidc-provider's, on the same machine in the
//! same run.
//!
//! `cargo bench -p mydata-server --bench introspect`:
//!
//! 1. starts `mydata-server` inside this process (2 HTTP workers, SQLite file in a temporary
//!    directory, the sandbox datasets), issues one access token and checks that it
//!    introspects as active;
//! 2. drives `POST /connect/introspect` with wrk exactly as the peer's harness does
//!    (`-t2 -c32 --timeout 2s --latency`, keep-alive, an unrecorded warm-up first), then checks
//!    every answer of a short extra run and one final request still say `"active":true`;
//! 3. stops our server and runs the peer's own `bench.sh` (`../shared/peers/oidc-provider`,
//!    or `MYDATA_PEER_DIR`), which measures `/token/introspection` the same way;
//! 4. prints both rates, their ratio and whether it reaches the 5× target.
//!
//! Timing is informational: the bench never fails on it. It exits non-zero only when our own
//! run is invalid (non-2xx answers, socket errors, or a token that stopped being active).
//!
//! Environment (the same names `bench.sh` reads, passed on to it): `DURATION=20s WARMUP=5s
//! THREADS=2 CONNECTIONS=32 TIMEOUT=2s`; `MYDATA_BENCH_WORKERS=2` sets our worker count.
//!
//! Needs `wrk` (`apt-get install wrk`); the peer also needs node, npm, curl and setsid. When the
//! peer folder has no `node_modules`, the folder is copied to `target/bench-peer/oidc-provider`
//! and `npm ci` runs there, so the shared folder is left untouched.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use mydata_protocol::catalogue::{Catalogue, sandbox_resource_secret};
use mydata_server::auth::CitizenClaims;
use mydata_server::clock::SystemClock;
use mydata_server::config::Config;
use mydata_server::platform::{Platform, SANDBOX_CATALOGUE};
use mydata_server::secrets::MasterKey;
use mydata_server::storage::sqlite::SqliteStore;

/// The target: at least this many times the peer's rate.
const TARGET_RATIO: f64 = 5.0;

/// wrk settings shared by both servers.
struct Settings {
    duration: String,
    warmup: String,
    threads: String,
    connections: String,
    timeout: String,
    workers: usize,
}

impl Settings {
    fn from_env() -> Self {
        let var = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_string());
        Settings {
            duration: var("DURATION", "20s"),
            warmup: var("WARMUP", "5s"),
            threads: var("THREADS", "2"),
            connections: var("CONNECTIONS", "32"),
            timeout: var("TIMEOUT", "2s"),
            workers: var("MYDATA_BENCH_WORKERS", "2").parse().unwrap_or(2),
        }
    }

    fn describe(&self) -> String {
        format!(
            "wrk -t{} -c{} -d{} --timeout {} --latency, keep-alive, warm-up {} (not recorded)",
            self.threads, self.connections, self.duration, self.timeout, self.warmup
        )
    }
}

/// One measured window.
#[derive(Debug, Default, Clone)]
struct Figures {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    non2xx: u64,
    socket_errors: u64,
    /// Peak RSS in kB (ours: this process; the peer: its node process).
    peak_rss_kb: Option<u64>,
}

/// `key=value` pairs of one report line.
fn fields(line: &str) -> HashMap<&str, &str> {
    line.split_whitespace()
        .filter_map(|w| w.split_once('='))
        .collect()
}

fn num<T: std::str::FromStr + Default>(m: &HashMap<&str, &str>, k: &str) -> T {
    m.get(k).and_then(|v| v.parse().ok()).unwrap_or_default()
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| {
        std::env::split_paths(&p).any(|d| {
            let f = d.join(tool);
            f.is_file()
                && std::fs::metadata(&f)
                    .map(|m| {
                        use std::os::unix::fs::PermissionsExt;
                        m.permissions().mode() & 0o111 != 0
                    })
                    .unwrap_or(false)
        })
    })
}

fn status_kb(key: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// utime + stime of this process (all threads), in clock ticks.
fn cpu_ticks() -> u64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = s.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    // After "pid (comm)": state is field 3, utime 14 and stime 15 (1-based over the whole line).
    let get = |i: usize| {
        f.get(i - 3)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    get(14) + get(15)
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

/// One introspection over a fresh connection: (status, body).
fn introspect_once(addr: SocketAddr, basic: &str, token: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let body = format!("token={token}");
    write!(
        s,
        "POST /connect/introspect HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Basic {basic}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = raw
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Ok((status, body))
}

fn is_active(addr: SocketAddr, basic: &str, token: &str) -> bool {
    matches!(introspect_once(addr, basic, token),
             Ok((200, body)) if body.contains("\"active\":true"))
}

/// Runs wrk with one of our scripts; returns its stdout.
fn wrk(
    s: &Settings,
    script: &str,
    threads: &str,
    connections: &str,
    duration: &str,
    url: &str,
    env: &[(&str, &str)],
) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("benches/wrk")
        .join(script);
    let out = Command::new("wrk")
        .args([
            &format!("-t{threads}"),
            &format!("-c{connections}"),
            &format!("-d{duration}"),
            "--timeout",
            &s.timeout,
            "--latency",
            "-s",
        ])
        .arg(&script)
        .arg(url)
        .envs(env.iter().copied())
        .stderr(Stdio::inherit())
        .output()
        .expect("run wrk");
    if !out.status.success() {
        eprintln!("wrk exited with {}", out.status);
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Our server on its own thread with its own actix system.
struct Running {
    addr: SocketAddr,
    url: String,
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

fn start(platform: Arc<Platform>) -> Running {
    let (tx, rx) = std::sync::mpsc::channel();
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let srv = mydata_server::http::spawn(platform).expect("start the server");
            tx.send((srv.addr, srv.url.clone()))
                .expect("main thread waits for the address");
            let _ = stop_rx.await;
            srv.handle.stop(true).await;
        });
    });
    let (addr, url) = rx.recv().expect("server thread sends its address");
    Running {
        addr,
        url,
        stop,
        thread,
    }
}

/// Measures our server. Returns the figures and whether the run is valid.
fn run_ours(s: &Settings) -> (Figures, bool) {
    println!(
        "== ours: mydata-server (in this process, {} workers)",
        s.workers
    );
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = Arc::new(SqliteStore::open(&dir.path().join("mydata.sqlite")).expect("open db"));
    let config = Config {
        workers: s.workers,
        data_dir: dir.path().to_path_buf(),
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
    let key = MasterKey::generate().expect("master key");
    let platform = Platform::new(store, key, Arc::new(SystemClock), config)
        .expect("build platform")
        .with_plain_http(true);
    let datasets = platform.load_sandbox().expect("load sandbox");
    let catalogue = Catalogue::from_json(SANDBOX_CATALOGUE).expect("catalogue");
    let resource = catalogue.datasets[0].resource_id.clone();
    let basic = STANDARD.encode(format!(
        "{}:{}",
        resource.as_str(),
        sandbox_resource_secret(&resource)
    ));
    let citizen = CitizenClaims {
        sub: "0d9c2b7e-5f0a-4b8e-a2c4-7e1f3d6a9b20".into(),
        uid: "A120345672".into(),
        uid_type: "NID".into(),
        birthdate: Some("1988-01-01".into()),
        name: Some("王大明".into()),
        email: None,
    };
    let token = platform
        .issue_token(
            "tx-bench",
            "CLI.SANDBOX001",
            resource.as_str(),
            "u-bench",
            &citizen,
        )
        .expect("issue token")
        .token;
    let srv = start(Arc::new(platform));
    let url = format!("{}/connect/introspect", srv.url);
    println!("server:         {url} ({datasets} sandbox datasets, SQLite file in a tempdir)");
    println!(
        "rss at start:   {} kB (this process)",
        status_kb("VmRSS").unwrap_or(0)
    );

    let (status, body) = introspect_once(srv.addr, &basic, &token).expect("first introspection");
    println!("first answer:   {status} {body}");
    let mut valid = status == 200 && body.contains("\"active\":true");
    if !valid {
        println!("INVALID: the token is not active before the run");
    }

    let env = [
        ("MYDATA_BENCH_TOKEN", token.as_str()),
        ("MYDATA_BENCH_BASIC", basic.as_str()),
    ];
    let warm = wrk(
        s,
        "introspect.lua",
        &s.threads,
        &s.connections,
        &s.warmup,
        &url,
        &env,
    );
    let hz = clock_ticks_per_sec();
    let (c0, t0) = (cpu_ticks(), Instant::now());
    let out = wrk(
        s,
        "introspect.lua",
        &s.threads,
        &s.connections,
        &s.duration,
        &url,
        &env,
    );
    let cpu_pct = (cpu_ticks() - c0) as f64 / hz / t0.elapsed().as_secs_f64() * 100.0;
    for l in out.lines() {
        println!("  ours | {l}");
    }
    let result = |text: &str| {
        text.lines()
            .find(|l| l.starts_with("MYDATA_WRK "))
            .map(str::to_string)
    };
    let Some(line) = result(&out) else {
        println!("INVALID: no result line from wrk");
        return (Figures::default(), false);
    };
    let warm_bad = result(&warm).map_or(u64::MAX, |l| {
        let w = fields(&l);
        num::<u64>(&w, "non2xx") + num::<u64>(&w, "socket_errors")
    });
    let m = fields(&line);
    let mut f = Figures {
        rps: num(&m, "rps"),
        p50_ms: num(&m, "p50_ms"),
        p99_ms: num(&m, "p99_ms"),
        non2xx: num(&m, "non2xx"),
        socket_errors: num(&m, "socket_errors"),
        peak_rss_kb: None,
    };
    println!("server CPU:     {cpu_pct:.0}% of one core during the measurement");
    println!(
        "warm-up:        {warm_bad} non-2xx or socket errors; measured: {} non-2xx, {} socket errors",
        f.non2xx, f.socket_errors
    );
    if f.non2xx > 0 || f.socket_errors > 0 || warm_bad > 0 {
        println!("INVALID: the run saw non-2xx answers or socket errors");
        valid = false;
    }

    // Every answer of a short extra run must be 200 with "active":true.
    let check = wrk(s, "introspect_check.lua", "1", "4", "2s", &url, &env);
    match check.lines().find(|l| l.starts_with("MYDATA_CHECK ")) {
        Some(l) => {
            let c = fields(l);
            let (good, bad): (u64, u64) = (num(&c, "good"), num(&c, "bad"));
            println!("check run:      {good} answers active, {bad} not (every body read)");
            if good == 0 || bad > 0 {
                println!("INVALID: {l}");
                valid = false;
            }
        }
        None => {
            println!("INVALID: no result line from the check run");
            valid = false;
        }
    }
    let still = is_active(srv.addr, &basic, &token);
    println!(
        "token still active after the run: {}",
        if still { "yes" } else { "no" }
    );
    valid &= still;

    f.peak_rss_kb = status_kb("VmHWM");
    println!(
        "peak RSS:       {} kB (VmHWM of this process: the server and the bench driving it)",
        f.peak_rss_kb.unwrap_or(0)
    );

    let _ = srv.stop.send(());
    srv.thread.join().expect("server thread");
    (f, valid)
}

/// Where the peer's harness can run: the shared folder if it has `node_modules`, otherwise a
/// copy under `target/` where `npm ci` is run once.
fn peer_dir() -> Result<PathBuf, String> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let src = std::env::var_os("MYDATA_PEER_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest.join("../../../shared/peers/oidc-provider"));
    let src = src.canonicalize().unwrap_or(src);
    if !src.join("bench.sh").is_file() {
        return Err(format!("no bench.sh in {}", src.display()));
    }
    let installed = |d: &Path| d.join("node_modules/oidc-provider/package.json").is_file();
    if installed(&src) {
        return Ok(src);
    }
    let dst = manifest.join("../../target/bench-peer/oidc-provider");
    std::fs::create_dir_all(dst.join("wrk")).map_err(|e| format!("{}: {e}", dst.display()))?;
    let dst = dst.canonicalize().unwrap_or(dst);
    let mut files = vec![
        PathBuf::from("bench.sh"),
        PathBuf::from("server.mjs"),
        PathBuf::from("package.json"),
        PathBuf::from("package-lock.json"),
    ];
    for e in std::fs::read_dir(src.join("wrk")).map_err(|e| format!("peer wrk/: {e}"))? {
        let e = e.map_err(|e| format!("peer wrk/: {e}"))?;
        files.push(Path::new("wrk").join(e.file_name()));
    }
    for f in &files {
        let to = dst.join(f);
        let _ = std::fs::remove_file(&to); // the originals are read-only
        std::fs::copy(src.join(f), &to).map_err(|e| format!("copy {}: {e}", f.display()))?;
    }
    if !installed(&dst) {
        if !on_path("npm") {
            return Err(format!(
                "npm not found; install Node 20+ and npm, then run `npm ci` in {}",
                src.display()
            ));
        }
        println!(
            "peer has no node_modules: running `npm ci` in {} (a copy of {}; once)",
            dst.display(),
            src.display()
        );
        let st = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dst)
            .status()
            .map_err(|e| format!("npm ci: {e}"))?;
        if !st.success() || !installed(&dst) {
            return Err(format!(
                "`npm ci` failed in {}; run it there (or in {}) by hand",
                dst.display(),
                src.display()
            ));
        }
    }
    Ok(dst)
}

/// Runs the peer's own harness and reads its introspection result.
fn run_peer(s: &Settings) -> Result<Figures, String> {
    println!("== peer: node-oidc-provider (its own bench.sh)");
    for tool in ["node", "curl", "setsid", "bash"] {
        if !on_path(tool) {
            return Err(format!("'{tool}' not found on PATH"));
        }
    }
    let dir = peer_dir()?;
    println!("harness:        {}", dir.display());
    let mut child = Command::new("bash")
        .arg(dir.join("bench.sh"))
        .current_dir(&dir)
        .envs([
            ("DURATION", &s.duration),
            ("WARMUP", &s.warmup),
            ("THREADS", &s.threads),
            ("CONNECTIONS", &s.connections),
            ("TIMEOUT", &s.timeout),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("bench.sh: {e}"))?;
    let mut result = None;
    let mut hwm = None;
    let stdout = child.stdout.take().expect("piped stdout");
    for l in BufReader::new(stdout).lines().map_while(Result::ok) {
        println!("  peer | {l}");
        if l.starts_with("RESULT ") && l.contains("endpoint=introspection") {
            let m = fields(&l);
            result = Some(Figures {
                rps: num(&m, "rps"),
                p50_ms: num(&m, "p50_ms"),
                p99_ms: num(&m, "p99_ms"),
                non2xx: num(&m, "non2xx"),
                socket_errors: num(&m, "socket_errors"),
                peak_rss_kb: None,
            });
        }
        // "server peak RSS (VmHWM): after (a) N kB, at end N kB; ..."
        if let Some(rest) = l.split_once("at end ").map(|(_, r)| r)
            && l.starts_with("server peak RSS")
        {
            hwm = rest.split_whitespace().next().and_then(|v| v.parse().ok());
        }
    }
    let st = child.wait().map_err(|e| format!("bench.sh: {e}"))?;
    if !st.success() {
        return Err(format!("bench.sh exited with {st}"));
    }
    let mut f = result.ok_or("no introspection RESULT line from bench.sh")?;
    f.peak_rss_kb = hwm;
    Ok(f)
}

fn row(name: &str, f: &Figures) {
    println!(
        "{name:<28} {:>10.1} {:>9.3} {:>9.3} {:>8} {:>9} {:>11}",
        f.rps,
        f.p50_ms,
        f.p99_ms,
        f.non2xx,
        f.socket_errors,
        f.peak_rss_kb
            .map_or("-".to_string(), |k| format!("{:.1}", k as f64 / 1024.0)),
    );
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        // Built but not run by `cargo test --all-targets`.
        return;
    }
    if !on_path("wrk") {
        eprintln!("introspect bench: `wrk` not found; install it (Debian: `apt-get install wrk`)");
        std::process::exit(1);
    }
    let s = Settings::from_env();
    println!("introspection bench: {}", s.describe());
    println!(
        "machine:        {} cpus, loadavg {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!();
    let (ours, valid) = run_ours(&s);
    println!();
    let peer = run_peer(&s);
    println!();
    println!(
        "== introspection, same machine, same run ({})",
        s.describe()
    );
    println!(
        "{:<28} {:>10} {:>9} {:>9} {:>8} {:>9} {:>11}",
        "server", "req/s", "p50 ms", "p99 ms", "non-2xx", "sock-err", "peak RSS MB"
    );
    row(&format!("mydata-server ({} workers)", s.workers), &ours);
    match &peer {
        Ok(p) => {
            row("node-oidc-provider", p);
            if p.rps > 0.0 {
                let ratio = ours.rps / p.rps;
                println!(
                    "ratio ours/peer: {ratio:.2}x   target >= {TARGET_RATIO}x: {}",
                    if ratio >= TARGET_RATIO {
                        "PASS"
                    } else {
                        "BELOW"
                    }
                );
            }
        }
        Err(e) => println!("node-oidc-provider           not measured: {e}"),
    }
    if !valid {
        println!("our run is INVALID (see above): its rate means nothing");
        std::process::exit(1);
    }
}
