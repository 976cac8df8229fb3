//! Shared by the tests that drive the real `mydata serve --sandbox` binary over HTTP on
//! 127.0.0.1: a small HTTP/1.1 client, a browser that walks the citizen pages, the platform
//! process, an SP stub, registrations with `mydata sp register`.

// Each test file uses a part of this module.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mydata_protocol::jwe::JweMode;
use mydata_sp::SpConfig;
use serde_json::Value;

pub const CITIZEN: &str = "A120345672";

pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mydata"))
}

pub fn root_ca() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/pki/sandbox-root-ca.pem")
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Instant sandbox datasets that the two-documents method unlocks.
pub fn pii_instant_datasets() -> Vec<String> {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/catalogue.json"),
    )
    .unwrap();
    let c: Value = serde_json::from_str(&text).unwrap();
    c["datasets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| {
            d["delivery"] == "instant"
                && d["identity_methods"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|m| m == "PII")
        })
        .map(|d| d["resource_id"].as_str().unwrap().to_string())
        .collect()
}

pub struct Kill(pub Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

// ---- a small HTTP/1.1 client ----

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn csrf(&self) -> String {
        const MARK: &str = "name=\"csrf\" value=\"";
        let i = self.body.find(MARK).expect("a form") + MARK.len();
        let j = self.body[i..].find('"').unwrap();
        self.body[i..i + j].to_string()
    }

    pub fn step(&self) -> &str {
        let i = self
            .body
            .find("data-step=\"")
            .unwrap_or_else(|| panic!("not a flow page: {self:?}"))
            + 11;
        let j = self.body[i..].find('"').unwrap();
        &self.body[i..i + j]
    }
}

pub fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let nl = b.windows(2).position(|w| w == b"\r\n").unwrap();
        let size = std::str::from_utf8(&b[..nl])
            .unwrap()
            .split(';')
            .next()
            .unwrap();
        let n = usize::from_str_radix(size.trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[nl + 2..nl + 2 + n]);
        b = &b[nl + 2 + n + 2..];
    }
}

pub fn http(method: &str, url: &str, cookie: Option<&str>, form: Option<&[(&str, &str)]>) -> Resp {
    let u = url::Url::parse(url).unwrap();
    assert_eq!(u.host_str(), Some("127.0.0.1"), "only loopback: {url}");
    let mut s = TcpStream::connect(("127.0.0.1", u.port().unwrap())).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    exchange(&mut s, false, method, &u, cookie, form)
}

/// One request on `s`: with `keep_alive` the connection stays open for the next request and the
/// answer is read by its length, otherwise it is read to the end.
pub fn exchange(
    s: &mut TcpStream,
    keep_alive: bool,
    method: &str,
    u: &url::Url,
    cookie: Option<&str>,
    form: Option<&[(&str, &str)]>,
) -> Resp {
    let port = u.port().unwrap();
    let target = match u.query() {
        Some(q) => format!("{}?{q}", u.path()),
        None => u.path().to_string(),
    };
    let body = form
        .map(|f| {
            url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(f)
                .finish()
        })
        .unwrap_or_default();
    let connection = if keep_alive { "keep-alive" } else { "close" };
    let mut req = format!(
        "{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: {connection}\r\n"
    );
    if let Some(c) = cookie {
        req.push_str(&format!("Cookie: {c}\r\n"));
    }
    if form.is_some() {
        req.push_str(&format!(
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(&body);
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    if keep_alive {
        read_one(s, &mut raw);
    } else {
        s.read_to_end(&mut raw).unwrap();
    }
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8(raw[..split].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"))
    {
        body = dechunk(&body);
    }
    Resp {
        status,
        headers,
        body: String::from_utf8(body).unwrap(),
    }
}

/// Reads one answer from `s` into `raw`: the head, then `Content-Length` bytes or chunks up to
/// the last one.
fn read_one(s: &mut TcpStream, raw: &mut Vec<u8>) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        if let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
            let have = raw.len() - split - 4;
            let length = head
                .split("\r\n")
                .find_map(|l| l.strip_prefix("content-length:"))
                .map(|v| v.trim().parse::<usize>().unwrap());
            match length {
                Some(n) if have >= n => return,
                Some(_) => {}
                None if head.contains("transfer-encoding: chunked") => {
                    if raw[split + 4..].ends_with(b"0\r\n\r\n") {
                        return;
                    }
                }
                None => return,
            }
        }
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "the server closed the connection");
        raw.extend_from_slice(&buf[..n]);
    }
}

/// `url` against `base` when it is a path.
pub fn absolute(base: &str, url: &str) -> String {
    if url.starts_with("http") {
        url.to_string()
    } else {
        format!("{base}{url}")
    }
}

/// The `Cookie` header of a cookie jar, `None` when it is empty.
pub fn cookie_header(jar: &BTreeMap<String, String>) -> Option<String> {
    (!jar.is_empty()).then(|| {
        jar.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    })
}

/// Keeps the cookies a response sets (`name=value` of each `Set-Cookie`).
pub fn keep_cookies(jar: &mut BTreeMap<String, String>, headers: &[(String, String)]) {
    for (k, v) in headers {
        if k.eq_ignore_ascii_case("set-cookie")
            && let Some((n, val)) = v.split(';').next().and_then(|p| p.split_once('='))
        {
            jar.insert(n.to_string(), val.to_string());
        }
    }
}

/// A browser on the platform: one cookie jar, no automatic redirects.
pub struct Browser {
    base: String,
    cookies: BTreeMap<String, String>,
    /// One connection kept open for every request ([`Browser::keep_alive`]).
    conn: Option<TcpStream>,
}

impl Browser {
    pub fn new(base: &str) -> Self {
        Browser {
            base: base.to_string(),
            cookies: BTreeMap::new(),
            conn: None,
        }
    }

    /// A browser that sends every request on one connection to `base`, opened now.
    pub fn keep_alive(base: &str) -> Self {
        let u = url::Url::parse(base).unwrap();
        let s = TcpStream::connect(("127.0.0.1", u.port().unwrap())).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        Browser {
            conn: Some(s),
            ..Browser::new(base)
        }
    }

    pub fn send(&mut self, method: &str, url: &str, form: Option<&[(&str, &str)]>) -> Resp {
        let url = absolute(&self.base, url);
        let jar = cookie_header(&self.cookies);
        let cookie = jar.as_deref();
        let r = match &mut self.conn {
            Some(s) => {
                let u = url::Url::parse(&url).unwrap();
                assert_eq!(
                    u.port(),
                    url::Url::parse(&self.base).unwrap().port(),
                    "{url}"
                );
                exchange(s, true, method, &u, cookie, form)
            }
            None => http(method, &url, cookie, form),
        };
        keep_cookies(&mut self.cookies, &r.headers);
        r
    }

    /// Posts a form of the flow page and loads the next page (or returns the redirect away).
    pub fn submit(
        &mut self,
        flow: &str,
        action: &str,
        csrf: &str,
        fields: &[(&str, &str)],
    ) -> Resp {
        let mut form = vec![("csrf", csrf)];
        form.extend_from_slice(fields);
        let a = self.send("POST", &format!("{flow}/{action}"), Some(&form));
        if a.status == 303 {
            let next = a.header("location").unwrap().to_string();
            return self.send("GET", &next, None);
        }
        a
    }

    /// Opens the SP's redirect and goes through terms, basic information, two documents and
    /// consent as the first sandbox citizen; returns the redirect back to the SP.
    pub fn consent(&mut self, redirect: &str) -> String {
        self.decide(redirect, "agree")
    }

    /// Like [`Browser::consent`], with `decision` (`agree` or `refuse`) on the consent page.
    pub fn decide(&mut self, redirect: &str, decision: &str) -> String {
        let a = self.send("GET", redirect, None);
        assert_eq!(a.status, 303, "{a:?}");
        let flow = a.header("location").unwrap().to_string();
        let p = self.send("GET", &flow, None);
        assert_eq!(p.step(), "terms", "{p:?}");
        let p = self.submit(&flow, "terms", &p.csrf(), &[]);
        assert_eq!(p.step(), "basic");
        let p = self.submit(
            &flow,
            "basic",
            &p.csrf(),
            &[("national_id", CITIZEN), ("birth_date", "0770101")],
        );
        let p = self.submit(
            &flow,
            "pii",
            &p.csrf(),
            &[
                ("nhi_card_number", "000018342761"),
                ("household_number", "A2034517"),
            ],
        );
        assert_eq!(p.step(), "consent", "{}", p.body);
        let a = self.submit(&flow, "consent", &p.csrf(), &[("decision", decision)]);
        assert_eq!(a.status, 302, "{a:?}");
        a.header("location").unwrap().to_string()
    }
}

// ---- the platform, an SP stub, registrations ----

pub struct Platform {
    server: Kill,
    pub url: String,
    /// The data directory (`data` in a temporary directory; the server creates it).
    pub data_dir: PathBuf,
    /// The server's standard error.
    pub log: PathBuf,
    /// The port of the in-process sandbox DP.
    pub dp_port: u16,
    port: u16,
    shell: Option<String>,
    env: Vec<(String, String)>,
    _dir: tempfile::TempDir,
}

impl Platform {
    /// What the server wrote on its standard error so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log once it holds `needle` (lines reach the file a moment after their event: the
    /// server writes them from a thread of its own), or as it is after 60 s.
    pub fn log_with(&self, needle: &str) -> String {
        let start = std::time::Instant::now();
        while start.elapsed() < std::time::Duration::from_secs(60) {
            let log = self.log();
            if log.contains(needle) {
                return log;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        self.log()
    }

    /// Stops the server with SIGTERM (its graceful shutdown) and waits up to 30 s for it to
    /// exit; its exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.server.0.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success(), "kill -TERM {pid}");
        let start = Instant::now();
        loop {
            if let Some(st) = self.server.0.try_wait().unwrap() {
                return st;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the server did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the server with SIGKILL (no shutdown of any kind), then starts it again on the
    /// same ports and data directory; returns once it answers.
    pub fn kill9_and_restart(&mut self) {
        self.server.0.kill().unwrap();
        self.server.0.wait().unwrap();
        self.server = spawn_serve(
            self.port,
            self.dp_port,
            &self.data_dir,
            &self.log,
            self.shell.as_deref(),
            &self.env,
        );
    }
}

pub fn start_platform() -> Platform {
    start_platform_with(None, &[])
}

/// `mydata serve --sandbox` on free ports of 127.0.0.1, with the data directory `data` in a new
/// temporary directory, started through `sh -c '{shell}; exec mydata serve …'` when `shell` is
/// given (a umask, a ulimit), with the extra environment `env`; returns once it answers.
pub fn start_platform_with(shell: Option<&str>, env: &[(&str, &str)]) -> Platform {
    start(shell, env, false)
}

/// [`start_platform`] with the listener moved by `MYDATA_LISTEN` alone (no `--listen`, no
/// public URL): the public URL must follow it (issue 14).
pub fn start_platform_listening_by_env() -> Platform {
    start(None, &[], true)
}

fn start(shell: Option<&str>, env: &[(&str, &str)], listen_by_env: bool) -> Platform {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let log = dir.path().join("serve.log");
    let (p, d) = (free_port(), free_port());
    let mut env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    if listen_by_env {
        env.push(("MYDATA_LISTEN".into(), format!("127.0.0.1:{p}")));
    }
    let server = spawn_serve(p, d, &data_dir, &log, shell, &env);
    Platform {
        server,
        url: format!("http://127.0.0.1:{p}"),
        data_dir,
        log,
        dp_port: d,
        port: p,
        shell: shell.map(str::to_string),
        env,
        _dir: dir,
    }
}

/// Starts `mydata serve --sandbox` (appending to `log`) and waits until it answers.
fn spawn_serve(
    p: u16,
    d: u16,
    data_dir: &Path,
    log: &Path,
    shell: Option<&str>,
    env: &[(String, String)],
) -> Kill {
    let mut cmd = match shell {
        Some(s) => {
            let mut c = Command::new("sh");
            c.arg("-c")
                .arg(format!("{s}; exec \"$0\" \"$@\""))
                .arg(env!("CARGO_BIN_EXE_mydata"));
            c
        }
        None => bin(),
    };
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    cmd.args(["serve", "--sandbox"]);
    if !env.iter().any(|(k, _)| k == "MYDATA_LISTEN") {
        cmd.arg("--listen").arg(format!("127.0.0.1:{p}"));
    }
    let child = cmd
        .arg("--data-dir")
        .arg(data_dir)
        .env("MYDATA_SANDBOX_DP_URL", format!("http://127.0.0.1:{d}"))
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdout(Stdio::null())
        .stderr(out)
        .spawn()
        .unwrap();
    let mut server = Kill(child);
    let start = Instant::now();
    loop {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", p)) {
            let _ = s.write_all(
                b"GET /.well-known/oauth-authorization-server HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            );
            let mut out = String::new();
            if s.read_to_string(&mut out).is_ok() && out.starts_with("HTTP/1.1 200") {
                break;
            }
        }
        if let Ok(Some(st)) = server.0.try_wait() {
            panic!(
                "the server stopped ({st}): {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "server did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    server
}

/// An SP stub on 127.0.0.1: records the body of every `POST /sp-api` and answers 200 to
/// everything.
pub fn sp_stub() -> (u16, Arc<Mutex<Vec<String>>>) {
    sp_stub_answering(200)
}

/// [`sp_stub`] answering `POST /sp-api` with `status` (and 200 to anything else).
pub fn sp_stub_answering(status: u16) -> (u16, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(conn) = conn else { return };
            let mut r = BufReader::new(conn);
            let mut first = String::new();
            if r.read_line(&mut first).is_err() {
                continue;
            }
            let mut len = 0usize;
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).is_err() || h == "\r\n" || h.is_empty() {
                    break;
                }
                if let Some((k, v)) = h.split_once(':')
                    && k.eq_ignore_ascii_case("content-length")
                {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; len];
            let _ = r.read_exact(&mut body);
            let code = if first.starts_with("POST /sp-api") {
                s2.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&body).into_owned());
                status
            } else {
                200
            };
            let _ = r.get_mut().write_all(
                format!("HTTP/1.1 {code} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            );
        }
    });
    (port, seen)
}

pub fn wait_for_body(seen: &Mutex<Vec<String>>, n: usize) -> String {
    let start = Instant::now();
    loop {
        if let Some(b) = seen.lock().unwrap().get(n) {
            return b.clone();
        }
        assert!(start.elapsed() < Duration::from_secs(60), "no SP-API call");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `mydata sp register --json` into the platform's data directory.
pub fn register(p: &Platform, sp_port: u16, rid: &str, packaging: &str, jwe: &str) -> Value {
    register_with(p, sp_port, rid, packaging, jwe, &[])
}

/// [`register`] with extra environment for the command (the server's `MYDATA_DATABASE_URL`).
pub fn register_with(
    p: &Platform,
    sp_port: u16,
    rid: &str,
    packaging: &str,
    jwe: &str,
    env: &[(&str, &str)],
) -> Value {
    let mut cmd = bin();
    cmd.args(["sp", "register", "--json", "--name", "sp fetch test"])
        .arg("--return-url")
        .arg(format!("http://127.0.0.1:{sp_port}/return"))
        .arg("--sp-api-url")
        .arg(format!("http://127.0.0.1:{sp_port}/sp-api"))
        .args(["--dataset", rid, "--allow-ip", "127.0.0.1"])
        .args(["--packaging", packaging, "--jwe", jwe])
        // The server runs as the sandbox and the SP stub is plain HTTP on loopback (D49).
        .env("MYDATA_SANDBOX", "true");
    operator_json(p, cmd, env)
}

/// Runs an operator command (`mydata sp …`, `mydata dp …`) on the platform's data directory
/// with extra environment `env`: it must succeed; its JSON output.
pub fn operator_json(p: &Platform, mut cmd: Command, env: &[(&str, &str)]) -> Value {
    let out = cmd
        .arg("--data-dir")
        .arg(&p.data_dir)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

pub fn sp_config(p: &Platform, creds: &Value, sp_port: u16, mode: JweMode) -> SpConfig {
    SpConfig::new(
        p.url.as_str(),
        creds["client_id"].as_str().unwrap().parse().unwrap(),
        creds["client_secret"].as_str().unwrap().parse().unwrap(),
        creds["cbc_iv"].as_str().unwrap().parse().unwrap(),
        format!("http://127.0.0.1:{sp_port}/return"),
    )
    .with_mode(mode)
}

/// The credential flags of `creds`.
pub fn cred_args(p: &Platform, creds: &Value, jwe: &str, packaging: &str) -> Vec<String> {
    let mut v: Vec<String> = [
        "--client-id",
        creds["client_id"].as_str().unwrap(),
        "--client-secret",
        creds["client_secret"].as_str().unwrap(),
        "--cbc-iv",
        creds["cbc_iv"].as_str().unwrap(),
        "--api-key",
        creds["api_key"].as_str().unwrap(),
        "--jwe",
        jwe,
        "--packaging",
        packaging,
        "--platform",
        &p.url,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.push("--trust".into());
    v.push(root_ca().display().to_string());
    v
}

pub fn run(args: &[String]) -> Output {
    bin().args(args).output().unwrap()
}
