//! `kill -9` soak (issue 12): citizens keep consenting while the platform is killed with
//! SIGKILL and restarted, then every transaction is checked.
//!
//! `cargo bench -p mydata-cli --bench crash_soak`:
//!
//! 1. starts `mydata serve --sandbox` (SQLite, write-behind store, the sandbox DP in the same
//!    process) on free ports of 127.0.0.1 with a data directory of its own, and registers two
//!    SPs with `mydata sp register` for one instant PII dataset: a *good* one whose SP-API stub
//!    answers 200, and a *failing* one whose stub answers 500 (every consent to it ends 410);
//! 2. runs `MYDATA_SOAK_WORKERS` citizens in a loop: a fresh `tx_id` redirect (every 4th to the
//!    failing SP), terms, basic information, two documents, consent. A connection that fails
//!    mid-flow (the server was killed) leaves the transaction *interrupted*; otherwise the code
//!    the citizen came back with is kept. A ticket the SP-API stub received is matched to its
//!    transaction by the body's `tx_id`; the worker then polls `GET /service/data` with it
//!    every 200 ms (through connection failures and 429) until another answer, and decrypts
//!    and verifies a 200 as the SP would, never polling that ticket again;
//! 3. meanwhile a killer thread, every `MYDATA_SOAK_KILL_EVERY_MS`, kills the server with
//!    SIGKILL and restarts it on the same ports and data directory, `MYDATA_SOAK_KILLS` times;
//! 4. after the last restart stops the citizens, polls the tickets that have not answered yet
//!    until none is 429 (at most `MYDATA_SOAK_SETTLE_SECS`), and checks every transaction:
//!    - back with `code=200`: the SP received its ticket, and either exactly one verified 200
//!      was received for it, or the transaction ended with a documented code (a 504 poll, or
//!      an ended `txid_status` such as 504 or 410); a last poll must then not be 200 (when it
//!      is, after a verified 200, the package was available again after a crash between the
//!      write and the commit: printed, a documented limit, not a failure);
//!    - back with `code=410`: `txid_status` is still 410 after every kill and its ticket
//!      answers 403;
//!    - interrupted: what `txid_status` says at the end (410 when the SP-API outcome was not
//!      recorded, 200/201 when delivered, 100 when it never reached consent, or 404); a ticket
//!      of a delivered one delivered exactly once, a ticket of a 410 answers 403;
//!    - no ticket ever gave two 200s, or a 200 that does not verify, or a 200 for a
//!      transaction that ends 410;
//! 5. prints the counts (transactions by outcome, kills, restarts, verified deliveries,
//!    violations) and the duration, and the exact sequence of every violation (polls tagged
//!    with the number of kills done when they were answered) with the server's log lines for
//!    it.
//!
//! Figures only: the bench never fails on timing. It exits non-zero only when a violation is
//! found or the run is invalid (no transaction completed, or the setup failed).
//!
//! Environment: `MYDATA_SOAK_WORKERS=4 MYDATA_SOAK_KILLS=20 MYDATA_SOAK_KILL_EVERY_MS=1500
//! MYDATA_SOAK_SETTLE_SECS=120 MYDATA_WRITE_BEHIND_MS=10` (the last is passed to the server).
//! A short run: `MYDATA_SOAK_KILLS=3`.

// The module allows its own dead code (each user takes a part of it).
#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mydata_protocol::flow::{ApplicationMode, Pid};
use mydata_protocol::ids::{ResourceId, SecretKey};
use mydata_protocol::jwe::JweMode;
use mydata_protocol::package::dp::TrustAnchors;
use mydata_protocol::package::sp::PackagingMode;
use mydata_protocol::resources::ResourceList;
use mydata_sp::SpConfig;
use mydata_sp::package::Expectations;
use mydata_sp::redirect::RedirectRequest;
use serde_json::Value;

use common::{CITIZEN, Resp};

/// How often a ticket is polled while it answers 429 or the server is down.
const POLL_EVERY: Duration = Duration::from_millis(200);
/// How long a citizen's worker polls one ticket before leaving it to the settling phase.
const POLL_CAP_IN_RUN: Duration = Duration::from_secs(20);

fn env_num(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

// ------------------------------------------------------------------------------------------
// A small HTTP/1.1 client that reports a failed connection instead of panicking

/// `method url` with `headers`, a cookie and a form, on a new connection; `Err` when the
/// connection fails or the answer is cut short (the server was killed).
fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    cookie: Option<&str>,
    form: Option<&[(&str, &str)]>,
) -> Result<Resp, String> {
    let u = url::Url::parse(url).map_err(|e| format!("{url}: {e}"))?;
    let port = u.port().ok_or_else(|| format!("{url}: no port"))?;
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
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
    let mut req =
        format!("{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    for (k, v) in headers {
        let _ = write!(req, "{k}: {v}\r\n");
    }
    if let Some(c) = cookie {
        let _ = write!(req, "Cookie: {c}\r\n");
    }
    if form.is_some() {
        let _ = write!(
            req,
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
            body.len()
        );
    }
    req.push_str("\r\n");
    req.push_str(&body);
    s.write_all(req.as_bytes())
        .map_err(|e| format!("send: {e}"))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| format!("read: {e}"))?;
    parse_answer(&raw)
}

/// A complete answer read to the end of the connection, or `Err` when it is cut short.
fn parse_answer(raw: &[u8]) -> Result<Resp, String> {
    if raw.is_empty() {
        return Err("closed without an answer".into());
    }
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("cut in the head")?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("not an HTTP answer: {head:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let find = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    if find("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        if !body.ends_with(b"0\r\n\r\n") {
            return Err(format!("{status}: chunked body cut short"));
        }
        body = common::dechunk(&body);
    } else if let Some(n) = find("content-length").and_then(|v| v.parse::<usize>().ok())
        && body.len() != n
    {
        return Err(format!("{status}: body cut at {} of {n} bytes", body.len()));
    }
    Ok(Resp {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn attr_after<'a>(body: &'a str, mark: &str) -> Option<&'a str> {
    let i = body.find(mark)? + mark.len();
    let j = body[i..].find('"')?;
    Some(&body[i..i + j])
}

// ------------------------------------------------------------------------------------------
// The citizen: Browser::consent that returns what went wrong instead of panicking

/// How a consent flow ended without a code.
#[derive(Debug, Clone)]
enum Cut {
    /// The connection failed (the server was down or killed) during `step`.
    Conn { step: &'static str, err: String },
    /// The server answered something the flow does not expect at `step`.
    Unexpected { step: &'static str, what: String },
}

impl Cut {
    fn step(&self) -> &'static str {
        match self {
            Cut::Conn { step, .. } | Cut::Unexpected { step, .. } => step,
        }
    }
}

struct Citizen {
    base: String,
    cookies: BTreeMap<String, String>,
}

impl Citizen {
    fn new(base: &str) -> Self {
        Citizen {
            base: base.to_string(),
            cookies: BTreeMap::new(),
        }
    }

    fn send(
        &mut self,
        step: &'static str,
        method: &str,
        url: &str,
        form: Option<&[(&str, &str)]>,
    ) -> Result<Resp, Cut> {
        let url = common::absolute(&self.base, url);
        let jar = common::cookie_header(&self.cookies);
        let r = request(method, &url, &[], jar.as_deref(), form)
            .map_err(|err| Cut::Conn { step, err })?;
        common::keep_cookies(&mut self.cookies, &r.headers);
        Ok(r)
    }

    /// The flow page `r` at `want`: its CSRF token.
    fn page(step: &'static str, r: &Resp, want: &str) -> Result<String, Cut> {
        let got = attr_after(&r.body, "data-step=\"");
        if r.status != 200 || got != Some(want) {
            return Err(Cut::Unexpected {
                step,
                what: format!(
                    "{} (step {got:?}, expected {want}): {}",
                    r.status,
                    r.body.chars().take(200).collect::<String>()
                ),
            });
        }
        attr_after(&r.body, "name=\"csrf\" value=\"")
            .map(str::to_string)
            .ok_or_else(|| Cut::Unexpected {
                step,
                what: "a flow page without a form".into(),
            })
    }

    fn submit(
        &mut self,
        step: &'static str,
        flow: &str,
        csrf: &str,
        fields: &[(&str, &str)],
    ) -> Result<Resp, Cut> {
        let mut form = vec![("csrf", csrf)];
        form.extend_from_slice(fields);
        let a = self.send(step, "POST", &format!("{flow}/{step}"), Some(&form))?;
        if a.status == 303
            && let Some(next) = a.header("location").map(str::to_string)
        {
            return self.send(step, "GET", &next, None);
        }
        Ok(a)
    }

    /// Terms, basic information, two documents and consent as the first sandbox citizen: the
    /// redirect back to the SP.
    fn consent(&mut self, redirect: &str) -> Result<String, Cut> {
        let a = self.send("open", "GET", redirect, None)?;
        let flow = match (a.status, a.header("location")) {
            (303, Some(l)) => l.to_string(),
            _ => {
                return Err(Cut::Unexpected {
                    step: "open",
                    what: format!(
                        "{} {:?}",
                        a.status,
                        a.body.chars().take(200).collect::<String>()
                    ),
                });
            }
        };
        let p = self.send("open", "GET", &flow, None)?;
        let csrf = Self::page("open", &p, "terms")?;
        let p = self.submit("terms", &flow, &csrf, &[])?;
        let csrf = Self::page("terms", &p, "basic")?;
        let p = self.submit(
            "basic",
            &flow,
            &csrf,
            &[("national_id", CITIZEN), ("birth_date", "0770101")],
        )?;
        let csrf = Self::page("basic", &p, "identity")?;
        let p = self.submit(
            "pii",
            &flow,
            &csrf,
            &[
                ("nhi_card_number", "000018342761"),
                ("household_number", "A2034517"),
            ],
        )?;
        let csrf = Self::page("pii", &p, "consent")?;
        let a = self.submit("consent", &flow, &csrf, &[("decision", "agree")])?;
        match (a.status, a.header("location")) {
            (302, Some(l)) => Ok(l.to_string()),
            _ => Err(Cut::Unexpected {
                step: "consent",
                what: format!(
                    "{} {:?}",
                    a.status,
                    a.body.chars().take(200).collect::<String>()
                ),
            }),
        }
    }
}

// ------------------------------------------------------------------------------------------
// The SPs

/// One registered SP, its stub's received SP-API bodies indexed by `tx_id`.
struct Sp {
    name: &'static str,
    cfg: SpConfig,
    client_id: String,
    seen: Arc<Mutex<Vec<String>>>,
    /// Bodies of `seen` read so far, and the SP-API bodies by `tx_id`.
    index: Mutex<(usize, HashMap<String, Vec<Value>>)>,
}

/// What the SP received in an SP-API call.
#[derive(Debug, Clone)]
struct Ticket {
    ticket: String,
    secret_key: Option<String>,
    /// How many SP-API bodies named this `tx_id` (more than one is reported).
    calls: usize,
}

impl Sp {
    fn ticket(&self, tx_id: &str) -> Option<Ticket> {
        let mut ix = self.index.lock().unwrap();
        let seen = self.seen.lock().unwrap();
        let from = ix.0;
        for body in &seen[from..] {
            if let Ok(v) = serde_json::from_str::<Value>(body)
                && let Some(t) = v["tx_id"].as_str()
            {
                ix.1.entry(t.to_string()).or_default().push(v.clone());
            }
        }
        ix.0 = seen.len();
        let bodies = ix.1.get(tx_id)?;
        let first = bodies.first()?;
        Some(Ticket {
            ticket: first["permission_ticket"].as_str()?.to_string(),
            secret_key: first["secret_key"].as_str().map(str::to_string),
            calls: bodies.len(),
        })
    }

    fn sp_api_calls(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

// ------------------------------------------------------------------------------------------
// Transactions

/// How the citizen's flow ended.
#[derive(Debug, Clone)]
enum End {
    /// Back at the SP with this `code`.
    Code(String),
    /// No code: see [`Cut`].
    Cut(Cut),
}

/// One answer to a poll of a ticket, with the number of kills done when it was answered.
#[derive(Debug, Clone)]
struct PollAnswer {
    kills: usize,
    /// Seconds since the start of the run.
    at: f64,
    status: u16,
    note: String,
}

#[derive(Debug)]
struct Tx {
    sp: usize,
    tx_id: String,
    end: End,
    /// Kills done when the flow started and when it ended.
    kills_at: (usize, usize),
    /// When the flow ended, in seconds since the start of the run.
    ended_at: f64,
    ticket: Option<Ticket>,
    /// Every poll answer but the 429s and failed connections, which are counted.
    polls: Vec<PollAnswer>,
    polls_429: usize,
    polls_conn: usize,
    /// 200s whose package decrypted and verified.
    verified: usize,
    /// 200s that did not decrypt or verify.
    bad_200: Vec<String>,
    /// The first answer other than 429 (or failed connection) — polling stops there.
    settled: Option<u16>,
    /// `txid_status` right after the citizen came back with 410 (the worker asks at once).
    status_at_410: Option<String>,
}

struct Shared {
    url: String,
    sps: Vec<Sp>,
    ids: Vec<ResourceId>,
    anchors: TrustAnchors,
    kills: AtomicUsize,
    restarts: AtomicUsize,
    stop: AtomicBool,
    t0: Instant,
    /// When each kill was sent, in seconds since `t0`.
    kill_times: Mutex<Vec<f64>>,
}

impl Shared {
    fn now(&self) -> f64 {
        self.t0.elapsed().as_secs_f64()
    }

    /// `t=…s`, with the kills just before and just after.
    fn when(&self, at: f64) -> String {
        let kills = self.kill_times.lock().unwrap();
        let next = kills.iter().position(|&k| k > at).unwrap_or(kills.len());
        let before = match next {
            0 => "no kill before".to_string(),
            i => format!("kill {i} at t={:.3}s", kills[i - 1]),
        };
        let after = match kills.get(next) {
            Some(k) => format!("kill {} at t={k:.3}s", next + 1),
            None => "no kill after".to_string(),
        };
        format!("t={at:.3}s ({before}, {after})")
    }

    /// `txid_status` of `tx` for its SP: the `code` member, or `http {status}`, or `down` when
    /// no answer came.
    fn txid_status(&self, sp: usize, tx_id: &str) -> String {
        let client_id = self.sps[sp].client_id.as_str();
        match request(
            "GET",
            &format!("{}/service/txid_status", self.url),
            &[("tx_id", tx_id), ("client_id", client_id)],
            None,
            None,
        ) {
            Ok(r) if r.status == 200 => serde_json::from_str::<Value>(&r.body)
                .ok()
                .and_then(|v| v["code"].as_str().map(str::to_string))
                .unwrap_or_else(|| format!("bad body {:?}", r.body)),
            Ok(r) => format!("http {}", r.status),
            Err(_) => "down".into(),
        }
    }

    /// `txid_status`, retried while the server is down (at most `wait`).
    fn txid_status_up(&self, sp: usize, tx_id: &str, wait: Duration) -> String {
        let until = Instant::now() + wait;
        loop {
            let s = self.txid_status(sp, tx_id);
            if s != "down" || Instant::now() > until {
                return s;
            }
            std::thread::sleep(POLL_EVERY);
        }
    }

    /// One `GET /service/data` with `tx`'s ticket; a 200 is decrypted and verified.
    fn poll_once(&self, tx: &mut Tx) -> Option<u16> {
        let t = tx.ticket.clone()?;
        let kills = self.kills.load(Ordering::SeqCst);
        let r = request(
            "GET",
            &format!("{}/service/data", self.url),
            &[("permission_ticket", &t.ticket)],
            None,
            None,
        );
        match r {
            Err(_) => {
                tx.polls_conn += 1;
                None
            }
            Ok(r) if r.status == 429 => {
                tx.polls_429 += 1;
                Some(429)
            }
            Ok(r) => {
                let note = if r.status == 200 {
                    match self.open(tx.sp, &t, &r.body) {
                        Ok(n) => {
                            tx.verified += 1;
                            format!("verified ({n} DP packages)")
                        }
                        Err(e) => {
                            tx.bad_200.push(e.clone());
                            format!("NOT VERIFIED: {e}")
                        }
                    }
                } else {
                    String::new()
                };
                tx.polls.push(PollAnswer {
                    kills,
                    at: self.now(),
                    status: r.status,
                    note,
                });
                Some(r.status)
            }
        }
    }

    /// Polls `tx`'s ticket every [`POLL_EVERY`] until it answers something other than 429
    /// (through failed connections), at most `cap`.
    fn poll_until_answer(&self, tx: &mut Tx, cap: Duration) {
        if tx.settled.is_some() || tx.ticket.is_none() {
            return;
        }
        let until = Instant::now() + cap;
        loop {
            match self.poll_once(tx) {
                Some(429) | None => {}
                Some(s) => {
                    tx.settled = Some(s);
                    return;
                }
            }
            if Instant::now() > until {
                return;
            }
            std::thread::sleep(POLL_EVERY);
        }
    }

    /// Decrypts and verifies a delivered JWE as the SP: how many DP packages verified.
    fn open(&self, sp: usize, t: &Ticket, jwe: &str) -> Result<usize, String> {
        let cfg = &self.sps[sp].cfg;
        let enc = t
            .secret_key
            .as_deref()
            .ok_or("no secret_key in the SP-API body")?;
        let key: SecretKey = cfg
            .cipher()
            .decrypt(enc)
            .map_err(|e| format!("secret_key: {e}"))?
            .parse()
            .map_err(|e| format!("secret_key: {e}"))?;
        let exp = Expectations::now()
            .trust(&self.anchors)
            .requested(&self.ids);
        let d = cfg
            .open_package(jwe.trim(), &key, &exp)
            .map_err(|e| format!("{e}"))?;
        if !d.verified() {
            return Err(format!("{:?}", d.first_failure()));
        }
        Ok(d.datasets
            .iter()
            .filter(|d| d.verification.is_verified())
            .count())
    }
}

/// One citizen's transaction, then (for a code 200, or an interrupted one whose SP holds a
/// ticket) polls as the SP would.
fn one_transaction(sh: &Shared, n: usize) -> Tx {
    let sp = if n % 4 == 3 { 1 } else { 0 };
    let list = ResourceList::new(sh.ids.clone()).unwrap();
    let pid = Pid::parse_for(ApplicationMode::Person, CITIZEN).unwrap();
    let redirect = sh.sps[sp]
        .cfg
        .redirect(&RedirectRequest::new(&list, &pid))
        .unwrap();
    let tx_id = redirect.tx_id.as_str().to_string();
    let k0 = sh.kills.load(Ordering::SeqCst);
    let end = match Citizen::new(&sh.url).consent(&redirect.url) {
        Ok(back) => {
            let code = url::Url::parse(&back)
                .ok()
                .and_then(|u| {
                    u.query_pairs()
                        .find(|(k, _)| k == "code")
                        .map(|(_, v)| v.into_owned())
                })
                .unwrap_or_else(|| format!("no code in {back}"));
            End::Code(code)
        }
        Err(c) => End::Cut(c),
    };
    let k1 = sh.kills.load(Ordering::SeqCst);
    let mut tx = Tx {
        sp,
        ticket: sh.sps[sp].ticket(&tx_id),
        tx_id,
        end,
        kills_at: (k0, k1),
        ended_at: sh.now(),
        polls: Vec::new(),
        polls_429: 0,
        polls_conn: 0,
        verified: 0,
        bad_200: Vec::new(),
        settled: None,
        status_at_410: None,
    };
    match &tx.end {
        End::Code(c) if c == "200" => sh.poll_until_answer(&mut tx, POLL_CAP_IN_RUN),
        End::Code(c) if c == "410" => {
            tx.status_at_410 = Some(sh.txid_status(sp, &tx.tx_id));
            // A withdrawn ticket: one poll, which must never be 200.
            sh.poll_once(&mut tx);
        }
        End::Cut(_) if tx.ticket.is_some() => sh.poll_until_answer(&mut tx, POLL_CAP_IN_RUN),
        _ => {}
    }
    tx
}

// ------------------------------------------------------------------------------------------
// The checks

/// The result of checking one transaction after the run.
struct Checked {
    outcome: String,
    violations: Vec<String>,
    /// A final poll answered 200 again after a verified 200 (a documented limit).
    available_again: bool,
    final_status: String,
    final_poll: Option<u16>,
}

fn ended_code(s: &str) -> bool {
    s.len() == 3 && !["100", "102", "200", "201"].contains(&s) && s.parse::<u16>().is_ok()
}

fn check(sh: &Shared, tx: &mut Tx) -> Checked {
    let status = sh.txid_status_up(tx.sp, &tx.tx_id, Duration::from_secs(30));
    let mut v = Vec::new();
    let mut available_again = false;
    let mut final_poll = None;
    if tx.verified > 1 {
        v.push(format!("the SP received {} verified 200s", tx.verified));
    }
    for e in &tx.bad_200 {
        v.push(format!("a 200 that does not verify: {e}"));
    }
    if tx.ticket.as_ref().is_some_and(|t| t.calls > 1) {
        v.push("more than one SP-API call for the transaction".into());
    }
    if tx.verified > 0 && status == "410" {
        v.push("delivered, but txid_status ends 410".into());
    }
    let outcome;
    match tx.end.clone() {
        End::Code(c) if c == "200" => {
            if tx.sp == 1 {
                v.push("the failing SP's citizen came back with 200".into());
            }
            if tx.ticket.is_none() {
                v.push("code=200, but the SP never received an SP-API call".into());
            }
            if tx.verified == 1 {
                outcome = "code 200: delivered once, verified".to_string();
            } else if tx.verified == 0 {
                if tx.settled == Some(504) || ended_code(&status) {
                    outcome = format!(
                        "code 200: ended with a documented code (poll {}, txid_status {status})",
                        tx.settled.map_or("none".into(), |s| s.to_string())
                    );
                } else {
                    outcome = "code 200: VIOLATION".into();
                    v.push(format!(
                        "no verified 200 and no documented ending (last poll {:?}, txid_status {status})",
                        tx.settled
                    ));
                }
            } else {
                outcome = "code 200: VIOLATION".into();
            }
            final_poll = sh.poll_once(tx);
            if final_poll == Some(200) {
                if tx.verified >= 1 && tx.bad_200.is_empty() {
                    available_again = true;
                } else {
                    v.push(
                        "a final poll is 200 (the package was never taken during the run)".into(),
                    );
                }
            }
        }
        End::Code(c) if c == "410" => {
            outcome = format!("code 410 ({} SP)", sh.sps[tx.sp].name);
            if status != "410" {
                v.push(format!(
                    "txid_status is {status} after the kills (was {:?} right after)",
                    tx.status_at_410
                ));
            }
            if tx
                .status_at_410
                .as_deref()
                .is_some_and(|s| s != "410" && s != "down")
            {
                v.push(format!(
                    "txid_status right after the 410 was {:?}",
                    tx.status_at_410
                ));
            }
            if tx.ticket.is_some() {
                final_poll = poll_up(sh, tx);
                if final_poll != Some(403) {
                    v.push(format!("its ticket answers {final_poll:?}, not 403"));
                }
            }
        }
        End::Code(c) => {
            outcome = format!("code {c} ({} SP)", sh.sps[tx.sp].name);
            if tx.verified > 0 {
                v.push(format!("code={c}, but the SP received the package"));
            }
            if status != c {
                v.push(format!("came back with {c}, txid_status ends {status}"));
            }
        }
        End::Cut(cut) => {
            let how = match cut {
                Cut::Conn { .. } => "interrupted",
                Cut::Unexpected { .. } => "unexpected answer",
            };
            let before = if cut.step() == "consent" {
                "at consent"
            } else {
                "before consent"
            };
            outcome = format!("{how} {before}: txid_status {status}");
            match status.as_str() {
                "200" | "201" => {
                    if tx.ticket.is_none() {
                        v.push(format!("txid_status {status} but the SP holds no ticket"));
                    } else if tx.verified != 1 {
                        v.push(format!(
                            "txid_status {status}, but {} verified 200s",
                            tx.verified
                        ));
                    } else {
                        final_poll = sh.poll_once(tx);
                        available_again = final_poll == Some(200);
                    }
                }
                "410" => {
                    if tx.ticket.is_some() {
                        final_poll = poll_up(sh, tx);
                        if final_poll != Some(403) {
                            v.push(format!("410, but its ticket answers {final_poll:?}"));
                        }
                    }
                }
                "100" | "http 404" => {
                    if tx.ticket.is_some() {
                        v.push(format!("txid_status {status}, but the SP holds a ticket"));
                    }
                }
                s if ended_code(s) => {}
                s => v.push(format!("txid_status {s} is not a documented outcome")),
            }
        }
    }
    Checked {
        outcome,
        violations: v,
        available_again,
        final_status: status,
        final_poll,
    }
}

/// One poll of `tx`'s ticket that got an answer (retried through failed connections, 30 s).
fn poll_up(sh: &Shared, tx: &mut Tx) -> Option<u16> {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(s) = sh.poll_once(tx) {
            return Some(s);
        }
        if Instant::now() > until {
            return None;
        }
        std::thread::sleep(POLL_EVERY);
    }
}

fn describe(sh: &Shared, tx: &Tx, c: &Checked, log: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "  tx_id {} ({} SP, client_id {}): {:?} at {}, flow from kill {} to kill {}",
        tx.tx_id,
        sh.sps[tx.sp].name,
        sh.sps[tx.sp].client_id,
        tx.end,
        sh.when(tx.ended_at),
        tx.kills_at.0,
        tx.kills_at.1
    );
    if let Some(t) = &tx.ticket {
        let _ = writeln!(s, "    ticket {} ({} SP-API calls)", t.ticket, t.calls);
    }
    let _ = writeln!(
        s,
        "    polls: {} × 429, {} failed connections; answers: {}",
        tx.polls_429,
        tx.polls_conn,
        tx.polls
            .iter()
            .map(|p| format!(
                "[after kill {}, {}] {}{}",
                p.kills,
                sh.when(p.at),
                p.status,
                if p.note.is_empty() {
                    String::new()
                } else {
                    format!(" {}", p.note)
                }
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if let Some(st) = &tx.status_at_410 {
        let _ = writeln!(s, "    txid_status right after the 410: {st}");
    }
    let _ = writeln!(
        s,
        "    txid_status at the end: {}; final poll {:?}",
        c.final_status, c.final_poll
    );
    for v in &c.violations {
        let _ = writeln!(s, "    VIOLATION: {v}");
    }
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| {
            l.contains(&tx.tx_id) || tx.ticket.as_ref().is_some_and(|t| l.contains(&t.ticket))
        })
        .take(20)
        .collect();
    if !lines.is_empty() {
        let _ = writeln!(s, "    server log:");
        for l in lines {
            let _ = writeln!(s, "      {l}");
        }
    }
    s
}

// ------------------------------------------------------------------------------------------

fn main() {
    let workers = env_num("MYDATA_SOAK_WORKERS", 4).max(1) as usize;
    let kills = env_num("MYDATA_SOAK_KILLS", 20) as usize;
    let kill_every = Duration::from_millis(env_num("MYDATA_SOAK_KILL_EVERY_MS", 1500));
    let settle = Duration::from_secs(env_num("MYDATA_SOAK_SETTLE_SECS", 120));
    let write_behind = std::env::var("MYDATA_WRITE_BEHIND_MS").unwrap_or_else(|_| "10".into());
    let t0 = Instant::now();

    // 1. The platform and two SPs.
    let p = common::start_platform_with(None, &[("MYDATA_WRITE_BEHIND_MS", &write_behind)]);
    let rid = common::pii_instant_datasets()
        .into_iter()
        .next()
        .expect("an instant PII dataset in fixtures/catalogue.json");
    let mut sps = Vec::new();
    for (name, answer) in [("good", 200), ("failing", 500)] {
        let (port, seen) = common::sp_stub_answering(answer);
        let creds = common::register(&p, port, &rid, "a", "cbc");
        sps.push(Sp {
            name,
            cfg: common::sp_config(&p, &creds, port, JweMode::Cbc)
                .with_packaging_mode(PackagingMode::A),
            client_id: creds["client_id"].as_str().unwrap().to_string(),
            seen,
            index: Mutex::new((0, HashMap::new())),
        });
    }
    let anchors =
        TrustAnchors::from_pem(&[std::fs::read(common::root_ca()).unwrap().as_slice()]).unwrap();
    let sh = Arc::new(Shared {
        url: p.url.clone(),
        sps,
        ids: vec![rid.parse().unwrap()],
        anchors,
        kills: AtomicUsize::new(0),
        restarts: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
        t0,
        kill_times: Mutex::new(Vec::new()),
    });
    println!(
        "crash_soak: {workers} citizens, {kills} kills every {} ms, write-behind {write_behind} ms, dataset {rid}, server {}",
        kill_every.as_millis(),
        p.url
    );

    // 2. The citizens.
    let counter = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..workers)
        .map(|i| {
            let sh = sh.clone();
            let counter = counter.clone();
            std::thread::Builder::new()
                .name(format!("citizen-{i}"))
                .spawn(move || {
                    let mut done = Vec::new();
                    while !sh.stop.load(Ordering::SeqCst) {
                        let n = counter.fetch_add(1, Ordering::SeqCst);
                        let tx = one_transaction(&sh, n);
                        // The server is down: wait a little rather than spin through flows
                        // that cannot start.
                        if matches!(tx.end, End::Cut(Cut::Conn { .. })) {
                            std::thread::sleep(Duration::from_millis(100));
                        }
                        done.push(tx);
                    }
                    done
                })
                .unwrap()
        })
        .collect();

    // 3. The killer.
    let platform = Arc::new(Mutex::new(p));
    let killer = {
        let sh = sh.clone();
        let platform = platform.clone();
        std::thread::Builder::new()
            .name("killer".into())
            .spawn(move || {
                let mut restart_times = Vec::new();
                for _ in 0..kills {
                    std::thread::sleep(kill_every);
                    let mut p = platform.lock().unwrap();
                    sh.kill_times.lock().unwrap().push(sh.now());
                    sh.kills.fetch_add(1, Ordering::SeqCst);
                    let t = Instant::now();
                    p.kill9_and_restart();
                    restart_times.push(t.elapsed());
                    sh.restarts.fetch_add(1, Ordering::SeqCst);
                }
                restart_times
            })
            .unwrap()
    };
    let restart_times = match killer.join() {
        Ok(t) => t,
        Err(_) => {
            sh.stop.store(true, Ordering::SeqCst);
            let p = platform.lock().unwrap_or_else(|e| e.into_inner());
            eprintln!("crash_soak: INVALID RUN: a restart failed\n{}", p.log());
            drop(p);
            drop(platform);
            std::process::exit(2);
        }
    };
    let t_load = t0.elapsed();

    // 4. Stop, settle, check.
    sh.stop.store(true, Ordering::SeqCst);
    let mut txs: Vec<Tx> = Vec::new();
    for h in handles {
        match h.join() {
            Ok(d) => txs.extend(d),
            Err(_) => {
                eprintln!("crash_soak: INVALID RUN: a citizen thread panicked");
                drop(platform);
                std::process::exit(2);
            }
        }
    }
    // A body the stub was still reading when the server was killed.
    for tx in txs.iter_mut().filter(|t| t.ticket.is_none()) {
        tx.ticket = sh.sps[tx.sp].ticket(&tx.tx_id);
    }
    let t_settle = Instant::now();
    let settle_until = t_settle + settle;
    loop {
        let mut waiting = 0;
        for tx in txs.iter_mut() {
            let wants = tx.ticket.is_some()
                && tx.settled.is_none()
                && match &tx.end {
                    End::Code(c) => c == "200",
                    End::Cut(_) => true,
                };
            if wants {
                match sh.poll_once(tx) {
                    Some(429) | None => waiting += 1,
                    Some(s) => tx.settled = Some(s),
                }
            }
        }
        if waiting == 0 || Instant::now() > settle_until {
            if waiting > 0 {
                println!("crash_soak: {waiting} tickets still answer 429 after {settle:?}");
            }
            break;
        }
        std::thread::sleep(POLL_EVERY);
    }
    let t_settled = t_settle.elapsed();
    let log = platform.lock().unwrap().log();
    // The temporary data directory goes with the platform: the log is kept.
    let kept_log = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("crash_soak-serve.log");
    let kept_log = std::fs::write(&kept_log, &log)
        .map(|()| kept_log.display().to_string())
        .unwrap_or_else(|e| format!("not kept: {e}"));
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    let mut again = Vec::new();
    let mut undelivered = Vec::new();
    let mut at_consent = Vec::new();
    let mut cuts: BTreeMap<String, usize> = BTreeMap::new();
    let mut violations = Vec::new();
    let mut verified = 0;
    for tx in txs.iter_mut() {
        // Counted before the checks' own polls.
        verified += tx.verified;
        let c = check(&sh, tx);
        *outcomes.entry(c.outcome.clone()).or_default() += 1;
        if c.available_again {
            again.push(describe(&sh, tx, &c, &log));
        }
        match &tx.end {
            End::Code(code) if code == "200" && tx.verified == 0 && c.violations.is_empty() => {
                undelivered.push(describe(&sh, tx, &c, &log));
            }
            End::Cut(Cut::Conn { step, err }) => {
                *cuts.entry(format!("{step}: {err}")).or_default() += 1;
                if *step == "consent" {
                    at_consent.push(describe(&sh, tx, &c, &log));
                }
            }
            End::Cut(Cut::Unexpected { step, what }) => {
                *cuts
                    .entry(format!("{step}: unexpected {what}"))
                    .or_default() += 1;
            }
            End::Code(_) => {}
        }
        if !c.violations.is_empty() {
            violations.push(describe(&sh, tx, &c, &log));
        }
    }
    let completed = txs.iter().filter(|t| matches!(t.end, End::Code(_))).count();

    // 5. The figures.
    let ms = |d: &Duration| d.as_secs_f64() * 1e3;
    let mut rt: Vec<f64> = restart_times.iter().map(ms).collect();
    rt.sort_by(f64::total_cmp);
    println!();
    println!("{:<72} {:>7}", "transactions by outcome", "count");
    for (k, n) in &outcomes {
        println!("  {k:<70} {n:>7}");
    }
    println!("  {:<70} {:>7}", "total", txs.len());
    println!();
    println!(
        "{:<72} {:>7}",
        "kills done",
        sh.kills.load(Ordering::SeqCst)
    );
    println!(
        "{:<72} {:>7}",
        "restarts",
        sh.restarts.load(Ordering::SeqCst)
    );
    if !rt.is_empty() {
        println!(
            "{:<72} {:>7.0} / {:.0} / {:.0}",
            "restart until answering, ms (min / median / max)",
            rt[0],
            rt[rt.len() / 2],
            rt[rt.len() - 1]
        );
    }
    println!(
        "{:<72} {:>7}",
        "SP-API calls received (good / failing)",
        format!(
            "{} / {}",
            sh.sps[0].sp_api_calls(),
            sh.sps[1].sp_api_calls()
        )
    );
    println!("{:<72} {:>7}", "verified deliveries", verified);
    println!(
        "{:<72} {:>7}",
        "polls answered 429 / failed connections",
        format!(
            "{} / {}",
            txs.iter().map(|t| t.polls_429).sum::<usize>(),
            txs.iter().map(|t| t.polls_conn).sum::<usize>()
        )
    );
    println!(
        "{:<72} {:>7}",
        "available again after a crash between the write and the commit",
        again.len()
    );
    println!("{:<72} {:>7}", "violations", violations.len());
    println!(
        "duration: {:.1} s (load with kills {:.1} s, settling {:.1} s, checks {:.1} s)",
        t0.elapsed().as_secs_f64(),
        t_load.as_secs_f64(),
        t_settled.as_secs_f64(),
        (t_settle.elapsed() - t_settled).as_secs_f64()
    );
    println!("server log: {kept_log}");
    if !cuts.is_empty() {
        println!("\nflows cut short, by step and error:");
        for (k, n) in &cuts {
            println!("  {n:>5} × {k}");
        }
    }
    if !at_consent.is_empty() {
        println!("\nconsents interrupted by a kill (no answer to the consent POST):");
        for a in &at_consent {
            print!("{a}");
        }
    }
    if !undelivered.is_empty() {
        println!("\ncode 200 without a delivery, ended with a documented code:");
        for a in &undelivered {
            print!("{a}");
        }
    }
    if !again.is_empty() {
        println!("\navailable again after a verified 200 (documented limit, not a failure):");
        for a in &again {
            print!("{a}");
        }
    }
    // Stops the server (an exit skips destructors).
    drop(platform);
    if !violations.is_empty() {
        println!("\nVIOLATIONS:");
        for v in &violations {
            print!("{v}");
        }
        std::process::exit(1);
    }
    if completed == 0 {
        println!("crash_soak: INVALID RUN: no transaction completed");
        std::process::exit(2);
    }
}
