//! The `sp` suite: plays the platform toward an SP implementation and checks its reactions.
//!
//! The SP under test is configured with the suite's address as its platform URL and with the
//! registration the suite plays (by default the public sandbox `CLI.SANDBOX001` or
//! `CLI.SANDBOX002`). The suite starts transactions through the SP's conformance hook
//! (`POST {hook}/start`), sends SP-API calls to its `sp_api_url`, returns the "browser" to its
//! `return_url`, answers its MyData-API requests from a script, and reads the outcome back
//! through `GET {hook}/tx/{tx_id}`. The hook, the state words and every check are described in
//! `spec/conformance-sp.md`.
//!
//! Every scenario runs as its own transaction, all of them at once, so a run takes about the
//! longest observation window (the 60 s after a 429 without `Retry-After`, by default) plus a few
//! seconds.
//!
//! ```no_run
//! # async fn demo() -> Result<(), mydata_conformance::sp::SuiteError> {
//! use mydata_conformance::sp::{Options, Target, run};
//! let listener = std::net::TcpListener::bind("127.0.0.1:8099").map_err(mydata_conformance::sp::SuiteError::Listen)?;
//! let target = Target::sandbox(1, "http://127.0.0.1:8090")?;
//! let report = run(listener, &target, &Options::default()).await?;
//! print!("{}", report.summary());
//! # Ok(()) }
//! ```

mod fake;

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use mydata_protocol::flow::{SpApiBody, SpApiDelivery, percent_encode};
use mydata_protocol::ids::{PermissionTicket, ResourceId, SecretKey, TxId};
use mydata_protocol::jwe::JweMode;
use mydata_protocol::package::sp::PackagingMode;
use mydata_protocol::param::ParamCipher;
use mydata_sp::SpConfig;
use mydata_sp::callback::{form_decode, parse_query};
use serde_json::Value;

use crate::report::{Outcome, Report};
use fake::{FakeApi, FileSpec, Packer, Part, Reply};

/// Every check of the suite: its stable id and the rule it tests, in report order.
pub const CHECKS: [(&str, &str); 20] = [
    (
        "sp.redirect.shape",
        "protocol.md §5.1–§5.2: the redirect is {platform}/service/{client_id}/{resources}/{tx_id}?returnUrl=…&pid=…, {resources} the standard Base64 (padded, '/' and '+' percent-encoded) of the requested ids joined by ':' in request order",
    ),
    (
        "sp.redirect.tx_id_fresh",
        "protocol.md §2.1, §5.1, D4, D19: every start uses a new well-formed tx_id (a UUID in practice), and the hook reports the tx_id of the redirect",
    ),
    (
        "sp.redirect.return_url",
        "protocol.md §5.1, D18: returnUrl (its part before '?') is the registered return_url",
    ),
    (
        "sp.redirect.pid",
        "protocol.md §3, §5.1: pid decrypts with the registration's parameter cipher to the citizen's ID",
    ),
    (
        "sp.redirect.case_number",
        "protocol.md §5.1, D5: a caseNumber given at the start is sent as caseNumber",
    ),
    (
        "sp.sp_api.accept",
        "protocol.md §7, D22–D23: a delivery with the right apiKey, a permission_ticket and an encrypted secret_key is answered 200 or 201 (any other status, 202 and 204 included, makes the platform return the citizen with 410)",
    ),
    (
        "sp.sp_api.bad_api_key",
        "protocol.md §7, D24, conformance-sp.md §4: a delivery with a wrong apiKey is answered 403 and not acted on: its ticket is never polled",
    ),
    (
        "sp.sp_api.unable_to_deliver",
        "protocol.md §7: unable_to_deliver is accepted (200 or 201) and recorded (state unable_to_deliver); its ticket never yields data and is never polled",
    ),
    (
        "sp.return.success",
        "protocol.md §6, §8.1: a return with code=200 and the encrypted tx_id is accepted and leads to MyData-API requests with the delivered permission_ticket (and, when sent, the same tx_id)",
    ),
    (
        "sp.return.other_codes",
        "protocol.md §6: a return with another code (205 refused, 409 identity conflict) is shown as that outcome (state refused, the code kept), and nothing is polled",
    ),
    (
        "sp.return.bad_tx_id",
        "protocol.md §6: a return whose tx_id does not decrypt under the SP's cipher is refused (4xx) and changes nothing",
    ),
    (
        "sp.mydata_api.retry_after",
        "protocol.md §8.1, D25: after 429 with Retry-After: 2 the next request comes no sooner than 2 s later",
    ),
    (
        "sp.mydata_api.retry_after_absent",
        "protocol.md §8.1, D25: after 429 without Retry-After the SP waits 60 s; no request comes within the observation window (60 s unless shortened)",
    ),
    (
        "sp.mydata_api.taken",
        "protocol.md §8.1: 201 (already taken) is final: state taken, no further request",
    ),
    (
        "sp.mydata_api.expired",
        "protocol.md §8.1: 403 (unknown or expired ticket) is final: state expired, no further request",
    ),
    (
        "sp.mydata_api.all_failed",
        "protocol.md §8.1: 504 (every dataset failed) is final: state failed, no further request",
    ),
    (
        "sp.package.delivered",
        "protocol.md §12, packages.md §5: a valid JWE of a valid package is decrypted and verified: state delivered, each dataset with code 200 and the files as sent, byte for byte (their SHA-256)",
    ),
    (
        "sp.package.tampered_manifest",
        "packages.md §5.1 step 5, §6: a DP package whose manifest was altered after signing is rejected for its signature (state rejected, error bad_signature), its data never delivered",
    ),
    (
        "sp.package.wrong_key",
        "protocol.md §12, D23, packages.md §6: a JWE under another key than the transaction's secret_key is rejected as a JWE failure (state rejected, error jwe)",
    ),
    (
        "sp.package.mode_mismatch",
        "packages.md §5.2 step 3, §6, D21: a package that breaks the registered packaging mode (mode B's partial delivery to a mode A SP, mode A's withheld files to a mode B SP) is rejected for its manifest (state rejected, error manifest, and error_rule packaging_mode when the hook reports error_rule)",
    ),
];

/// The rule text of check `id` (empty for an unknown id).
pub fn rule(id: &str) -> &'static str {
    CHECKS
        .iter()
        .find(|(i, _)| *i == id)
        .map(|(_, r)| *r)
        .unwrap_or("")
}

/// Why the suite could not run at all (a check that fails is not an error).
#[derive(Debug, thiserror::Error)]
pub enum SuiteError {
    /// The suite's MyData-API could not listen.
    #[error("cannot listen: {0}")]
    Listen(#[source] std::io::Error),
    /// The target or the options are not usable.
    #[error("configuration: {0}")]
    Config(String),
}

/// The SP under test: where it is and the registration the suite plays for it.
#[derive(Debug, Clone)]
pub struct Target {
    /// The registration: `client_id`, `client_secret`, `cbc_iv`, parameter and JWE mode,
    /// `api_key`, packaging mode and the registered `return_url` (`platform_url` is unused).
    pub registration: SpConfig,
    /// The SP's base URL (for the report).
    pub sp_url: String,
    /// The conformance hook's base URL (default `{sp}/conformance`).
    pub hook_url: String,
    /// The registered SP-API URL (default `{sp}/sp-api`).
    pub sp_api_url: String,
}

impl Target {
    /// The SP at `sp_url` registered as `registration`, with the default hook (`{sp}/conformance`)
    /// and SP-API (`{sp}/sp-api`) URLs.
    pub fn new(sp_url: &str, registration: SpConfig) -> Self {
        let base = sp_url.trim_end_matches('/');
        Target {
            registration,
            sp_url: base.to_owned(),
            hook_url: format!("{base}/conformance"),
            sp_api_url: format!("{base}/sp-api"),
        }
    }

    /// The SP at `sp_url` with the public sandbox registration `CLI.SANDBOX00{n}` (1: packaging
    /// mode A, CBC; 2: mode B, GCM; fixtures/sandbox.json) and return URL `{sp}/return`.
    pub fn sandbox(n: u8, sp_url: &str) -> Result<Self, SuiteError> {
        let (mode, packaging) = match n {
            1 => (JweMode::Cbc, PackagingMode::A),
            2 => (JweMode::Gcm, PackagingMode::B),
            _ => return Err(SuiteError::Config(format!("no sandbox registration {n}"))),
        };
        let parse_err = |e: mydata_protocol::Error| SuiteError::Config(e.to_string());
        let base = sp_url.trim_end_matches('/');
        let reg = SpConfig::new(
            "",
            format!("CLI.SANDBOX00{n}").parse().map_err(parse_err)?,
            format!("SandboxSecret00{n}").parse().map_err(parse_err)?,
            format!("SandboxCbcIv000{n}").parse().map_err(parse_err)?,
            format!("{base}/return"),
        )
        .with_mode(mode)
        .with_api_key(format!("SandboxApiKey000000000000000000{n}"))
        .with_packaging_mode(packaging);
        Ok(Target::new(base, reg))
    }
}

/// The wait protocol.md §8.1 and D25 require after a 429 without `Retry-After`, and the default
/// observation window of `sp.mydata_api.retry_after_absent`.
pub const ABSENT_WINDOW: Duration = Duration::from_secs(60);

/// The answer the SP-API gives to a delivery with a wrong `apiKey` (conformance-sp.md §4; the
/// SDK's `ReceiveError::ApiKey`).
pub const BAD_API_KEY_STATUS: u16 = 403;

/// How the suite runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// The citizen ID sent to the hook (a valid national ID).
    pub pid: String,
    /// The datasets requested: at least two (the packaging-mode check needs two).
    pub resources: Vec<ResourceId>,
    /// The caseNumber of the case-number check.
    pub case_number: String,
    /// How long the suite watches for requests that must not come after a final answer, a
    /// refused delivery or a refused return.
    pub quiet_window: Duration,
    /// How long the suite watches for a request after a 429 without `Retry-After`. A correct SP
    /// waits 60 s, and the default watches all of it ([`ABSENT_WINDOW`]); a shorter window
    /// (for a quick run) still fails an SP that polls within it, but passes one that polls
    /// after it and before the 60 s.
    pub absent_window: Duration,
    /// How long the suite waits for the SP to react (a first poll, a final state).
    pub settle_timeout: Duration,
    /// The wait between two reads of the hook.
    pub hook_interval: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            pid: "A120345672".into(),
            resources: ["API.2RXHOGTXIC", "API.5XQQ2IWD37"]
                .iter()
                .filter_map(|s| s.parse().ok())
                .collect(),
            case_number: "CONF-2026-0001".into(),
            quiet_window: Duration::from_secs(2),
            absent_window: ABSENT_WINDOW,
            settle_timeout: Duration::from_secs(15),
            hook_interval: Duration::from_millis(50),
        }
    }
}

/// Runs the suite: the MyData-API listens on `listener` (the SP under test must use
/// `http://{listener address}` as its platform URL). Must run inside an actix runtime (the
/// suite serves HTTP and spawns local tasks).
pub async fn run(
    listener: std::net::TcpListener,
    target: &Target,
    opts: &Options,
) -> Result<Report, SuiteError> {
    if opts.resources.len() < 2 {
        return Err(SuiteError::Config(
            "at least two resources are needed (the packaging-mode check requests two)".into(),
        ));
    }
    let addr = listener.local_addr().map_err(SuiteError::Listen)?;
    let api = Arc::new(FakeApi::default());
    let server = fake::serve(listener, api.clone()).map_err(SuiteError::Listen)?;
    let packer = Packer::new().map_err(SuiteError::Config)?;
    let ctx = Rc::new(Ctx {
        target: target.clone(),
        opts: opts.clone(),
        platform_url: format!("http://{addr}"),
        api,
        packer,
        client: awc::Client::builder()
            .disable_redirects()
            .timeout(Duration::from_secs(30))
            .finish(),
        starts: std::cell::RefCell::new(Vec::new()),
    });
    let mut report = Report::new("sp", target.sp_url.clone());
    let mut results: Vec<(&'static str, Outcome, Duration)> = Vec::new();

    // The redirect checks first (two starts in a row), then every flow at once.
    results.extend(redirect_checks(&ctx).await);
    type Flow = std::pin::Pin<Box<dyn std::future::Future<Output = Vec<Res>>>>;
    let flows: Vec<Flow> = vec![
        Box::pin(flow_good(ctx.clone())),
        Box::pin(flow_bad_api_key(ctx.clone())),
        Box::pin(flow_unable(ctx.clone())),
        Box::pin(flow_other_codes(ctx.clone())),
        Box::pin(flow_bad_return(ctx.clone())),
        Box::pin(flow_retry_after(ctx.clone())),
        Box::pin(flow_retry_absent(ctx.clone())),
        Box::pin(flow_final(ctx.clone(), 201, "taken", "sp.mydata_api.taken")),
        Box::pin(flow_final(
            ctx.clone(),
            403,
            "expired",
            "sp.mydata_api.expired",
        )),
        Box::pin(flow_final(
            ctx.clone(),
            504,
            "failed",
            "sp.mydata_api.all_failed",
        )),
        Box::pin(flow_package(ctx.clone(), Bad::Tampered)),
        Box::pin(flow_package(ctx.clone(), Bad::WrongKey)),
        Box::pin(flow_package(ctx.clone(), Bad::Mode)),
    ];
    let handles: Vec<_> = flows.into_iter().map(actix_web::rt::spawn).collect();
    for h in handles {
        match h.await {
            Ok(r) => results.extend(r),
            Err(e) => results.push((
                "sp.internal",
                Outcome::Fail(format!("a scenario task failed: {e}")),
                Duration::ZERO,
            )),
        }
    }
    results.push(fresh_check(&ctx));
    server.stop(false).await;

    for (id, r) in CHECKS {
        match results.iter().position(|(i, _, _)| *i == id) {
            Some(p) => {
                let (_, outcome, d) = results.swap_remove(p);
                report.push(id, r, outcome, d);
            }
            None => report.push(
                id,
                r,
                Outcome::Fail("the check did not run".into()),
                Duration::ZERO,
            ),
        }
    }
    for (id, outcome, d) in results {
        report.push(id, "an internal failure of the suite", outcome, d);
    }
    Ok(report)
}

type Res = (&'static str, Outcome, Duration);

struct Ctx {
    target: Target,
    opts: Options,
    platform_url: String,
    api: Arc<FakeApi>,
    packer: Packer,
    client: awc::Client,
    /// Every start: (tx_id from the hook, tx_id from the redirect path).
    starts: std::cell::RefCell<Vec<(String, Option<String>)>>,
}

/// A transaction started through the hook.
struct Started {
    tx_id: String,
    redirect: String,
    cookie: Option<String>,
}

/// The hook's view of a transaction.
#[derive(Debug, Clone)]
struct HookTx {
    state: String,
    code: Option<u64>,
    polls: Option<u64>,
    error: Option<String>,
    error_rule: Option<String>,
    raw: Value,
}

fn fail(id: &'static str, t: Instant, m: impl Into<String>) -> Res {
    (id, Outcome::Fail(m.into()), t.elapsed())
}

fn pass(id: &'static str, t: Instant) -> Res {
    (id, Outcome::Pass, t.elapsed())
}

fn judge(id: &'static str, t: Instant, r: Result<(), String>) -> Res {
    match r {
        Ok(()) => pass(id, t),
        Err(m) => fail(id, t, m),
    }
}

impl Ctx {
    fn cipher(&self) -> ParamCipher {
        self.target.registration.cipher()
    }

    fn ids(&self, n: usize) -> Vec<ResourceId> {
        self.opts.resources.iter().take(n).cloned().collect()
    }

    async fn start(&self, ids: &[ResourceId], case: Option<&str>) -> Result<Started, String> {
        let mut body = serde_json::json!({
            "pid": self.opts.pid,
            "resources": ids.iter().map(ToString::to_string).collect::<Vec<_>>(),
        });
        if let Some(c) = case {
            body["caseNumber"] = Value::String(c.to_owned());
        }
        let url = format!("{}/start", self.target.hook_url);
        let mut resp = self
            .client
            .post(&url)
            .send_json(&body)
            .await
            .map_err(|e| format!("hook POST {url}: {e}"))?;
        let status = resp.status();
        let cookies: Vec<String> = resp
            .headers()
            .get_all("set-cookie")
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| v.split(';').next())
            .map(|v| v.trim().to_owned())
            .filter(|v| v.contains('='))
            .collect();
        let body = resp
            .body()
            .limit(1 << 20)
            .await
            .map_err(|e| format!("hook POST {url}: {e}"))?;
        if !status.is_success() {
            return Err(format!(
                "hook POST {url} answered {status}: {}",
                String::from_utf8_lossy(&body)
            ));
        }
        let v: Value =
            serde_json::from_slice(&body).map_err(|e| format!("hook POST {url}: not JSON: {e}"))?;
        let field = |n: &str| {
            v.get(n)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| format!("hook POST {url}: no string member {n:?} in {v}"))
        };
        let started = Started {
            tx_id: field("tx_id")?,
            redirect: field("redirect")?,
            cookie: (!cookies.is_empty()).then(|| cookies.join("; ")),
        };
        let path_tx = parse_redirect(&started.redirect, &self.platform_url)
            .ok()
            .map(|r| r.tx_id);
        self.starts
            .borrow_mut()
            .push((started.tx_id.clone(), path_tx));
        Ok(started)
    }

    async fn hook(&self, tx_id: &str) -> Result<HookTx, String> {
        let url = format!("{}/tx/{}", self.target.hook_url, percent_encode(tx_id));
        let mut resp = self
            .client
            .get(&url)
            .send()
            .await
            .map_err(|e| format!("hook GET {url}: {e}"))?;
        let status = resp.status();
        let body = resp
            .body()
            .limit(4 << 20)
            .await
            .map_err(|e| format!("hook GET {url}: {e}"))?;
        if !status.is_success() {
            return Err(format!(
                "hook GET {url} answered {status}: {}",
                String::from_utf8_lossy(&body)
            ));
        }
        let raw: Value =
            serde_json::from_slice(&body).map_err(|e| format!("hook GET {url}: not JSON: {e}"))?;
        let state = raw
            .get("state")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("hook GET {url}: no state in {raw}"))?
            .to_owned();
        Ok(HookTx {
            state,
            code: raw.get("code").and_then(Value::as_u64),
            polls: raw.get("polls").and_then(Value::as_u64),
            error: raw.get("error").and_then(Value::as_str).map(str::to_owned),
            error_rule: raw
                .get("error_rule")
                .and_then(Value::as_str)
                .map(str::to_owned),
            raw,
        })
    }

    /// Reads the hook until the state leaves started, returned and polling, or the settle
    /// timeout passes (then the last view).
    async fn settle(&self, tx_id: &str) -> Result<HookTx, String> {
        let until = Instant::now() + self.opts.settle_timeout;
        loop {
            let v = self.hook(tx_id).await?;
            let busy = matches!(v.state.as_str(), "started" | "returned" | "polling");
            if !busy || Instant::now() >= until {
                return Ok(v);
            }
            actix_web::rt::time::sleep(self.opts.hook_interval).await;
        }
    }

    /// Waits until `n` requests were seen with `ticket`, or the settle timeout plus `extra`.
    async fn polls(&self, ticket: &PermissionTicket, n: usize, extra: Duration) -> Vec<fake::Seen> {
        let until = Instant::now() + self.opts.settle_timeout + extra;
        loop {
            let seen = self.api.seen(ticket);
            if seen.len() >= n || Instant::now() >= until {
                return seen;
            }
            actix_web::rt::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn sp_api(&self, body: &SpApiBody) -> Result<u16, String> {
        let url = &self.target.sp_api_url;
        let resp = self
            .client
            .post(url)
            .insert_header(("content-type", "application/json; charset=utf-8"))
            .send_body(body.to_json())
            .await
            .map_err(|e| format!("SP-API POST {url}: {e}"))?;
        Ok(resp.status().as_u16())
    }

    /// A delivery for `tx_id` with a fresh ticket and `key`, encrypted with `cipher`.
    fn delivery(
        &self,
        tx_id: &str,
        api_key: Option<String>,
        content: Result<&SecretKey, Vec<ResourceId>>,
    ) -> Result<SpApiBody, String> {
        Ok(SpApiBody {
            tx_id: tx_id
                .parse::<TxId>()
                .map_err(|e| format!("the hook's tx_id {tx_id:?}: {e}"))?,
            api_key,
            permission_ticket: PermissionTicket::generate().map_err(|e| e.to_string())?,
            delivery: match content {
                Ok(k) => SpApiDelivery::SecretKey(
                    self.cipher()
                        .encrypt(k.as_str())
                        .map_err(|e| e.to_string())?,
                ),
                Err(ids) => SpApiDelivery::UnableToDeliver(ids),
            },
        })
    }

    /// The browser back at the registered return URL with `code` and `enc_tx_id`.
    async fn back(&self, s: &Started, code: u16, enc_tx_id: &str) -> Result<u16, String> {
        let ret = &self.target.registration.return_url;
        let sep = if ret.contains('?') { '&' } else { '?' };
        let url = format!("{ret}{sep}code={code}&tx_id={}", percent_encode(enc_tx_id));
        let mut req = self.client.get(&url);
        if let Some(c) = &s.cookie {
            req = req.insert_header(("cookie", c.as_str()));
        }
        let resp = req.send().await.map_err(|e| format!("GET {url}: {e}"))?;
        Ok(resp.status().as_u16())
    }

    async fn back_ok(&self, s: &Started, code: u16) -> Result<u16, String> {
        let enc = self.cipher().encrypt(&s.tx_id).map_err(|e| e.to_string())?;
        self.back(s, code, &enc).await
    }

    /// Start, deliver a secret_key with the right apiKey, script the MyData-API, return with 200.
    async fn delivered_and_back(
        &self,
        ids: &[ResourceId],
        replies: impl FnOnce(&SecretKey) -> Result<Vec<Reply>, String>,
    ) -> Result<(Started, PermissionTicket, u16, u16), String> {
        let s = self.start(ids, None).await?;
        let key = SecretKey::generate().map_err(|e| e.to_string())?;
        let body = self.delivery(&s.tx_id, self.target.registration.api_key.clone(), Ok(&key))?;
        self.api.script(&body.permission_ticket, replies(&key)?);
        let api_status = self.sp_api(&body).await?;
        let ret_status = self.back_ok(&s, 200).await?;
        Ok((s, body.permission_ticket, api_status, ret_status))
    }
}

fn ok_2xx(s: u16) -> bool {
    (200..300).contains(&s)
}

// --- the redirect ----------------------------------------------------------------------------

struct ParsedRedirect {
    client_id: String,
    resources: String,
    tx_id: String,
    query: Vec<(String, String)>,
}

fn parse_redirect(url: &str, platform: &str) -> Result<ParsedRedirect, String> {
    let prefix = format!("{}/service/", platform.trim_end_matches('/'));
    let rest = url
        .strip_prefix(&prefix)
        .ok_or_else(|| format!("{url:?} does not start with {prefix:?}"))?;
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let parts: Vec<&str> = path.split('/').collect();
    let [client_id, resources, tx_id] = parts.as_slice() else {
        return Err(format!(
            "the path after /service/ has {} segments, not 3 ({{client_id}}/{{resources}}/{{tx_id}}): {path:?}",
            parts.len()
        ));
    };
    Ok(ParsedRedirect {
        client_id: form_decode(client_id),
        resources: (*resources).to_owned(),
        tx_id: form_decode(tx_id),
        query: parse_query(query),
    })
}

fn first<'a>(q: &'a [(String, String)], name: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn expected_segment(ids: &[ResourceId]) -> String {
    let joined = ids
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(":");
    base64::engine::general_purpose::STANDARD
        .encode(joined)
        .replace('/', "%2F")
        .replace('+', "%2B")
}

async fn redirect_checks(ctx: &Ctx) -> Vec<Res> {
    let t = Instant::now();
    let ids = ctx.ids(2);
    let ids_rev: Vec<ResourceId> = ids.iter().rev().cloned().collect();
    let a = ctx.start(&ids, None).await;
    let b = ctx.start(&ids_rev, Some(&ctx.opts.case_number)).await;
    let (a, b) = match (a, b) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            return [
                "sp.redirect.shape",
                "sp.redirect.return_url",
                "sp.redirect.pid",
                "sp.redirect.case_number",
            ]
            .into_iter()
            .map(|id| fail(id, t, e.clone()))
            .collect();
        }
    };
    let reg = &ctx.target.registration;
    let pa = parse_redirect(&a.redirect, &ctx.platform_url);
    let pb = parse_redirect(&b.redirect, &ctx.platform_url);
    let shape = (|| {
        for (s, p, want) in [(&a, &pa, &ids), (&b, &pb, &ids_rev)] {
            let p = p.as_ref().map_err(Clone::clone)?;
            if p.client_id != reg.client_id.as_str() {
                return Err(format!(
                    "client_id segment {:?}, expected {}",
                    p.client_id, reg.client_id
                ));
            }
            let seg = expected_segment(want);
            if p.resources != seg {
                return Err(format!(
                    "resources segment {:?}, expected {seg:?} (requested {})",
                    p.resources,
                    want.iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            if p.tx_id != s.tx_id {
                return Err(format!(
                    "the redirect's tx_id {:?} is not the hook's {:?}",
                    p.tx_id, s.tx_id
                ));
            }
            for n in ["returnUrl", "pid"] {
                if first(&p.query, n).is_none_or(str::is_empty) {
                    return Err(format!("no {n} in {}", s.redirect));
                }
            }
        }
        Ok(())
    })();
    let return_url = (|| {
        for (s, p) in [(&a, &pa), (&b, &pb)] {
            let p = p.as_ref().map_err(Clone::clone)?;
            let got = first(&p.query, "returnUrl").unwrap_or("");
            let base = got.split('?').next().unwrap_or("");
            if got.contains('#') || !base.eq_ignore_ascii_case(&reg.return_url) {
                return Err(format!(
                    "returnUrl {got:?} in {}, registered {:?} (the platform would return code 404)",
                    s.redirect, reg.return_url
                ));
            }
        }
        Ok(())
    })();
    let pid = (|| {
        for p in [&pa, &pb] {
            let p = p.as_ref().map_err(Clone::clone)?;
            let enc = first(&p.query, "pid").unwrap_or("");
            let plain = ctx
                .cipher()
                .decrypt(enc)
                .map_err(|e| format!("pid {enc:?} does not decrypt: {e}"))?;
            if plain != ctx.opts.pid {
                return Err(format!(
                    "pid decrypts to {plain:?}, expected {:?}",
                    ctx.opts.pid
                ));
            }
        }
        Ok(())
    })();
    let case = (|| {
        let p = pb.as_ref().map_err(Clone::clone)?;
        match first(&p.query, "caseNumber") {
            Some(c) if c == ctx.opts.case_number => Ok(()),
            other => Err(format!(
                "caseNumber {other:?} in {}, expected {:?}",
                b.redirect, ctx.opts.case_number
            )),
        }
    })();
    vec![
        judge("sp.redirect.shape", t, shape),
        judge("sp.redirect.return_url", t, return_url),
        judge("sp.redirect.pid", t, pid),
        judge("sp.redirect.case_number", t, case),
    ]
}

fn fresh_check(ctx: &Ctx) -> Res {
    let t = Instant::now();
    let starts = ctx.starts.borrow();
    let r = (|| {
        if starts.len() < 2 {
            return Err(format!("only {} starts succeeded", starts.len()));
        }
        let mut seen = std::collections::HashSet::new();
        for (hook, path) in starts.iter() {
            if hook.parse::<TxId>().is_err() {
                return Err(format!("tx_id {hook:?} is not well formed (§2.1)"));
            }
            if path.as_deref().is_some_and(|p| p != hook) {
                return Err(format!(
                    "the hook reported tx_id {hook:?} but the redirect carries {path:?}"
                ));
            }
            if !seen.insert(hook.clone()) {
                return Err(format!(
                    "tx_id {hook:?} was used by two starts (of {})",
                    starts.len()
                ));
            }
        }
        Ok(())
    })();
    judge("sp.redirect.tx_id_fresh", t, r)
}

// --- SP-API and return -------------------------------------------------------------------------

fn no_polls(ctx: &Ctx, ticket: &PermissionTicket, v: Option<&HookTx>) -> Result<(), String> {
    let n = ctx.api.seen(ticket).len();
    if n > 0 {
        return Err(format!("{n} MyData-API request(s) came with this ticket"));
    }
    if let Some(p) = v.and_then(|v| v.polls).filter(|p| *p > 0) {
        return Err(format!("the hook reports {p} MyData-API request(s)"));
    }
    Ok(())
}

async fn flow_good(ctx: Rc<Ctx>) -> Vec<Res> {
    let t = Instant::now();
    let ids = ctx.ids(2);
    let zip = ctx.packer.sp_package(
        ctx.target
            .registration
            .packaging_mode
            .unwrap_or(PackagingMode::A),
        &ids,
        &[Part::File(FILE_1), Part::File(FILE_2)],
    );
    let reg = ctx.target.registration.clone();
    let r = ctx
        .delivered_and_back(&ids, |k| Ok(vec![Reply::Jwe(Packer::jwe(&reg, &zip?, k)?)]))
        .await;
    let (s, ticket, api, ret) = match r {
        Ok(v) => v,
        Err(e) => {
            return [
                "sp.sp_api.accept",
                "sp.return.success",
                "sp.package.delivered",
            ]
            .into_iter()
            .map(|id| fail(id, t, e.clone()))
            .collect();
        }
    };
    let accept = if matches!(api, 200 | 201) {
        Ok(())
    } else {
        Err(format!("the SP-API answered {api}, expected 200 or 201"))
    };
    let seen = ctx.polls(&ticket, 1, Duration::ZERO).await;
    let success = if ret >= 400 {
        Err(format!("the return answered {ret}"))
    } else if seen.is_empty() {
        Err(format!(
            "no MyData-API request with the delivered ticket within {:?} of the return",
            ctx.opts.settle_timeout
        ))
    } else if let Some(x) = seen[0].tx_id.as_deref().filter(|x| *x != s.tx_id) {
        Err(format!(
            "the tx_id header {x:?} is not the transaction's {:?}",
            s.tx_id
        ))
    } else {
        Ok(())
    };
    let delivered = match ctx.settle(&s.tx_id).await {
        Err(e) => Err(e),
        Ok(v) if v.state != "delivered" => Err(format!(
            "state {:?} (error {:?}), expected delivered",
            v.state, v.error
        )),
        Ok(v) => check_datasets(&v, &ids, &[&[&FILE_1], &[&FILE_2]]),
    };
    vec![
        judge("sp.sp_api.accept", t, accept),
        judge("sp.return.success", t, success),
        judge("sp.package.delivered", t, delivered),
    ]
}

const FILE_1: FileSpec = FileSpec {
    name: "data.json",
    bytes: "{\"name\":\"林淑芬\",\"status\":\"low_income\"}".as_bytes(),
};
const FILE_2: FileSpec = FileSpec {
    name: "data.csv",
    bytes: b"level,since\n1,2020-01-01\n",
};

/// The SHA-256 of `bytes`, lowercase hex (the form of packages.md §2.2 and of the hook's
/// `sha256`).
fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// The hook's delivered datasets against what the suite sent: the ids in request order, code
/// 200, exactly the files sent (by name, in order) and each file's bytes (the hook's `sha256`).
fn check_datasets(v: &HookTx, ids: &[ResourceId], files: &[&[&FileSpec]]) -> Result<(), String> {
    let ds = v
        .raw
        .get("datasets")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("no datasets array in {}", v.raw))?;
    if ds.len() != ids.len() {
        return Err(format!(
            "{} datasets, expected {}: {}",
            ds.len(),
            ids.len(),
            v.raw
        ));
    }
    for ((d, id), want) in ds.iter().zip(ids).zip(files) {
        let rid = d.get("resource_id").and_then(Value::as_str).unwrap_or("");
        if rid != id.as_str() {
            return Err(format!("dataset {rid:?}, expected {id}"));
        }
        if d.get("code").and_then(Value::as_u64) != Some(200) {
            return Err(format!(
                "dataset {id}: code {:?}, expected 200",
                d.get("code")
            ));
        }
        let names: Vec<&str> = d
            .get("files")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|f| f.as_str().or_else(|| f.get("name").and_then(Value::as_str)))
                    .collect()
            })
            .unwrap_or_default();
        let want_names: Vec<&str> = want.iter().map(|f| f.name).collect();
        if names != want_names {
            return Err(format!(
                "dataset {id}: files {names:?}, expected {want_names:?}"
            ));
        }
        let digests: Vec<Option<&str>> = d
            .get("sha256")
            .and_then(Value::as_array)
            .map(|a| a.iter().map(Value::as_str).collect())
            .unwrap_or_default();
        if digests.len() != want.len() {
            return Err(format!(
                "dataset {id}: the hook reports {} sha256 value(s) for {} file(s) (conformance-sp.md §2.2: one per file, so the suite can compare the bytes)",
                digests.len(),
                want.len()
            ));
        }
        for (f, got) in want.iter().zip(digests) {
            let sent = sha256_hex(f.bytes);
            let got = got.unwrap_or("").to_ascii_lowercase();
            if got != sent {
                return Err(format!(
                    "dataset {id}: file {:?} has SHA-256 {got:?} at the SP, the suite sent {sent:?} ({} bytes): the delivered bytes differ",
                    f.name,
                    f.bytes.len()
                ));
            }
        }
    }
    Ok(())
}

async fn flow_bad_api_key(ctx: Rc<Ctx>) -> Vec<Res> {
    const ID: &str = "sp.sp_api.bad_api_key";
    let t = Instant::now();
    let Some(right) = ctx.target.registration.api_key.clone() else {
        return vec![(
            ID,
            Outcome::Skip("the registration has no apiKey".into()),
            t.elapsed(),
        )];
    };
    let r = async {
        let s = ctx.start(&ctx.ids(1), None).await?;
        let key = SecretKey::generate().map_err(|e| e.to_string())?;
        // Same length, last character changed.
        let mut chars: Vec<char> = right.chars().collect();
        if let Some(last) = chars.last_mut() {
            *last = if *last == 'X' { 'Y' } else { 'X' };
        }
        let wrong: String = chars.into_iter().collect();
        let body = ctx.delivery(&s.tx_id, Some(wrong), Ok(&key))?;
        ctx.api
            .script(&body.permission_ticket, vec![Reply::Status(201, None)]);
        let status = ctx.sp_api(&body).await?;
        // The citizen comes back as if the platform had gone on: still nothing may be polled.
        let _ = ctx.back_ok(&s, 200).await?;
        actix_web::rt::time::sleep(ctx.opts.quiet_window).await;
        if status != BAD_API_KEY_STATUS {
            return Err(format!(
                "the SP-API answered {status} to a wrong apiKey, expected {BAD_API_KEY_STATUS}"
            ));
        }
        let v = ctx.hook(&s.tx_id).await?;
        no_polls(&ctx, &body.permission_ticket, Some(&v))
    }
    .await;
    vec![judge(ID, t, r)]
}

async fn flow_unable(ctx: Rc<Ctx>) -> Vec<Res> {
    const ID: &str = "sp.sp_api.unable_to_deliver";
    let t = Instant::now();
    let r = async {
        let ids = ctx.ids(1);
        let s = ctx.start(&ids, None).await?;
        let body = ctx.delivery(
            &s.tx_id,
            ctx.target.registration.api_key.clone(),
            Err(ids.clone()),
        )?;
        ctx.api
            .script(&body.permission_ticket, vec![Reply::Status(504, None)]);
        let status = ctx.sp_api(&body).await?;
        if !matches!(status, 200 | 201) {
            return Err(format!("the SP-API answered {status}, expected 200 or 201"));
        }
        let _ = ctx.back_ok(&s, 504).await?;
        actix_web::rt::time::sleep(ctx.opts.quiet_window).await;
        let v = ctx.hook(&s.tx_id).await?;
        if v.state != "unable_to_deliver" {
            return Err(format!("state {:?}, expected unable_to_deliver", v.state));
        }
        no_polls(&ctx, &body.permission_ticket, Some(&v))
    }
    .await;
    vec![judge(ID, t, r)]
}

async fn flow_other_codes(ctx: Rc<Ctx>) -> Vec<Res> {
    const ID: &str = "sp.return.other_codes";
    let t = Instant::now();
    let r = async {
        for code in [205u16, 409] {
            let s = ctx.start(&ctx.ids(1), None).await?;
            let status = ctx.back_ok(&s, code).await?;
            if status >= 400 {
                return Err(format!("the return with code {code} answered {status}"));
            }
            let v = ctx.settle(&s.tx_id).await?;
            if v.state != "refused" || v.code != Some(u64::from(code)) {
                return Err(format!(
                    "after code {code}: state {:?} code {:?}, expected refused and {code}",
                    v.state, v.code
                ));
            }
            if let Some(p) = v.polls.filter(|p| *p > 0) {
                return Err(format!("after code {code}: {p} MyData-API request(s)"));
            }
        }
        Ok(())
    }
    .await;
    vec![judge(ID, t, r)]
}

async fn flow_bad_return(ctx: Rc<Ctx>) -> Vec<Res> {
    const ID: &str = "sp.return.bad_tx_id";
    let t = Instant::now();
    let r = async {
        let s = ctx.start(&ctx.ids(1), None).await?;
        let key = SecretKey::generate().map_err(|e| e.to_string())?;
        let body = ctx.delivery(&s.tx_id, ctx.target.registration.api_key.clone(), Ok(&key))?;
        ctx.api
            .script(&body.permission_ticket, vec![Reply::Status(201, None)]);
        let api = ctx.sp_api(&body).await?;
        // A precondition: the SP took the delivery (the exact status is sp.sp_api.accept's).
        if !ok_2xx(api) {
            return Err(format!(
                "the SP-API answered {api} to a good delivery, so the return cannot be tested"
            ));
        }
        // The tx_id encrypted under another registration's key material.
        let reg = &ctx.target.registration;
        let other = ParamCipher::from_raw("ConformanceX9k2Q", "ConformanceIv7Zp", reg.param_mode)
            .map_err(|e| e.to_string())?;
        let enc = other.encrypt(&s.tx_id).map_err(|e| e.to_string())?;
        let status = ctx.back(&s, 200, &enc).await?;
        if !(400..500).contains(&status) {
            return Err(format!(
                "the return with an undecryptable tx_id answered {status}, expected 4xx"
            ));
        }
        actix_web::rt::time::sleep(ctx.opts.quiet_window).await;
        let v = ctx.hook(&s.tx_id).await?;
        if v.state != "started" {
            return Err(format!(
                "state {:?} after the refused return, expected started",
                v.state
            ));
        }
        no_polls(&ctx, &body.permission_ticket, Some(&v))
    }
    .await;
    vec![judge(ID, t, r)]
}

// --- MyData-API reactions -----------------------------------------------------------------------

async fn flow_retry_after(ctx: Rc<Ctx>) -> Vec<Res> {
    const ID: &str = "sp.mydata_api.retry_after";
    let t = Instant::now();
    let r = async {
        let (_, ticket, _, _) = ctx
            .delivered_and_back(&ctx.ids(1), |_| {
                Ok(vec![
                    Reply::Status(429, Some("2")),
                    Reply::Status(201, None),
                ])
            })
            .await?;
        let seen = ctx.polls(&ticket, 2, Duration::from_secs(2)).await;
        match seen.as_slice() {
            [] => Err("no MyData-API request after the return".into()),
            [_] => Err(format!(
                "no second request within {:?} after a 429 with Retry-After: 2",
                ctx.opts.settle_timeout + Duration::from_secs(2)
            )),
            [a, b, ..] => {
                let gap = b.at.duration_since(a.at);
                if gap < Duration::from_secs(2) {
                    Err(format!(
                        "the next request came {} ms after a 429 with Retry-After: 2",
                        gap.as_millis()
                    ))
                } else {
                    Ok(())
                }
            }
        }
    }
    .await;
    vec![judge(ID, t, r)]
}

async fn flow_retry_absent(ctx: Rc<Ctx>) -> Vec<Res> {
    const ID: &str = "sp.mydata_api.retry_after_absent";
    let t = Instant::now();
    let r = async {
        let (_, ticket, _, _) = ctx
            .delivered_and_back(&ctx.ids(1), |_| Ok(vec![Reply::Status(429, None)]))
            .await?;
        let seen = ctx.polls(&ticket, 1, Duration::ZERO).await;
        let Some(first) = seen.first() else {
            return Err("no MyData-API request after the return".into());
        };
        let until = first.at + ctx.opts.absent_window;
        actix_web::rt::time::sleep_until(until.into()).await;
        let early: Vec<_> = ctx
            .api
            .seen(&ticket)
            .into_iter()
            .skip(1)
            .filter(|s| s.at < until)
            .collect();
        match early.first() {
            Some(s) => Err(format!(
                "a request came {} ms after a 429 without Retry-After (a correct SP waits 60 s; none may come within the {} s watched)",
                s.at.duration_since(first.at).as_millis(),
                ctx.opts.absent_window.as_secs_f64()
            )),
            None => Ok(()),
        }
    }
    .await;
    vec![judge(ID, t, r)]
}

async fn flow_final(ctx: Rc<Ctx>, status: u16, state: &'static str, id: &'static str) -> Vec<Res> {
    let t = Instant::now();
    let r = async {
        let (s, ticket, _, _) = ctx
            .delivered_and_back(&ctx.ids(1), |_| Ok(vec![Reply::Status(status, None)]))
            .await?;
        if ctx.polls(&ticket, 1, Duration::ZERO).await.is_empty() {
            return Err("no MyData-API request after the return".into());
        }
        let v = ctx.settle(&s.tx_id).await?;
        if v.state != state {
            return Err(format!(
                "after {status}: state {:?} (error {:?}), expected {state}",
                v.state, v.error
            ));
        }
        actix_web::rt::time::sleep(ctx.opts.quiet_window).await;
        let n = ctx.api.seen(&ticket).len();
        if n > 1 {
            return Err(format!(
                "{} more request(s) after the final {status}",
                n - 1
            ));
        }
        Ok(())
    }
    .await;
    vec![judge(id, t, r)]
}

#[derive(Clone, Copy)]
enum Bad {
    Tampered,
    WrongKey,
    Mode,
}

async fn flow_package(ctx: Rc<Ctx>, bad: Bad) -> Vec<Res> {
    let id = match bad {
        Bad::Tampered => "sp.package.tampered_manifest",
        Bad::WrongKey => "sp.package.wrong_key",
        Bad::Mode => "sp.package.mode_mismatch",
    };
    let t = Instant::now();
    let reg = ctx.target.registration.clone();
    let registered = match (bad, reg.packaging_mode) {
        (Bad::Mode, None) => {
            return vec![(
                id,
                Outcome::Skip("the registration names no packaging mode".into()),
                t.elapsed(),
            )];
        }
        (_, m) => m.unwrap_or(PackagingMode::A),
    };
    let r = async {
        let (ids, zip) = match bad {
            Bad::Tampered => {
                let ids = ctx.ids(1);
                let zip = ctx
                    .packer
                    .sp_package(registered, &ids, &[Part::Tampered(FILE_1)])?;
                (ids, zip)
            }
            Bad::WrongKey => {
                let ids = ctx.ids(1);
                let zip = ctx
                    .packer
                    .sp_package(registered, &ids, &[Part::File(FILE_1)])?;
                (ids, zip)
            }
            Bad::Mode => {
                let ids = ctx.ids(2);
                let other = match registered {
                    PackagingMode::A => PackagingMode::B,
                    PackagingMode::B => PackagingMode::A,
                };
                let zip =
                    ctx.packer
                        .sp_package(other, &ids, &[Part::File(FILE_1), Part::Failed])?;
                (ids, zip)
            }
        };
        let (s, ticket, _, _) = ctx
            .delivered_and_back(&ids, |k| {
                let key = match bad {
                    Bad::WrongKey => SecretKey::generate().map_err(|e| e.to_string())?,
                    _ => k.clone(),
                };
                Ok(vec![Reply::Jwe(Packer::jwe(&reg, &zip, &key)?)])
            })
            .await?;
        if ctx.polls(&ticket, 1, Duration::ZERO).await.is_empty() {
            return Err("no MyData-API request after the return".into());
        }
        let v = ctx.settle(&s.tx_id).await?;
        let (kind, rule) = bad.reason();
        rejected_for(&v, kind, rule)
    }
    .await;
    vec![judge(id, t, r)]
}

impl Bad {
    /// The failure kind of packages.md §6 the SP must report for this package, and the
    /// `error_rule` it must report when its hook reports one (conformance-sp.md §2.2).
    fn reason(self) -> (&'static str, Option<&'static str>) {
        match self {
            // The manifest's bytes changed after signing: step 5 (the signature) fails first.
            Bad::Tampered => ("bad_signature", None),
            Bad::WrongKey => ("jwe", None),
            Bad::Mode => ("manifest", Some("packaging_mode")),
        }
    }
}

/// The hook's view of a package the SP must refuse: state `rejected`, `error` the kind of
/// packages.md §6 the refusal must be for, and, when the hook reports `error_rule` and `rule` is
/// given, that rule. A rejection for another reason fails: it shows the SP did not check what
/// the scenario broke.
fn rejected_for(v: &HookTx, kind: &str, rule: Option<&str>) -> Result<(), String> {
    if v.state != "rejected" {
        return Err(format!(
            "state {:?} (error {:?}), expected rejected with error {kind:?} (datasets {})",
            v.state,
            v.error,
            v.raw.get("datasets").cloned().unwrap_or(Value::Null)
        ));
    }
    if v.error.as_deref() != Some(kind) {
        return Err(format!(
            "rejected with error {:?}, expected {kind:?} (packages.md §6): the SP refused the package for another reason than the one the scenario broke",
            v.error
        ));
    }
    match (rule, v.error_rule.as_deref()) {
        (Some(want), Some(got)) if got != want => Err(format!(
            "rejected with error {kind:?} but error_rule {got:?}, expected {want:?}: the SP refused the package for another rule than the one the scenario broke"
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_are_unique_and_cite_the_spec() {
        let mut ids = std::collections::HashSet::new();
        for (id, rule) in CHECKS {
            assert!(ids.insert(id), "{id}");
            assert!(id.starts_with("sp."));
            assert!(rule.contains(".md") || rule.contains('D'), "{id}");
        }
        assert_eq!(rule("sp.redirect.pid"), CHECKS[3].1);
        assert_eq!(rule("nope"), "");
    }

    #[test]
    fn redirects_parse() {
        let p = parse_redirect(
            "http://127.0.0.1:1/service/CLI.X/QVBJ%2FLg%3D%3D/tx-1?returnUrl=http%3A%2F%2Fa%2Fr%3Fx%3D1&pid=ab%2B",
            "http://127.0.0.1:1/",
        )
        .unwrap();
        assert_eq!(p.client_id, "CLI.X");
        assert_eq!(p.resources, "QVBJ%2FLg%3D%3D");
        assert_eq!(p.tx_id, "tx-1");
        assert_eq!(first(&p.query, "returnUrl"), Some("http://a/r?x=1"));
        assert_eq!(first(&p.query, "pid"), Some("ab+"));
        assert!(parse_redirect("http://other/service/a/b/c", "http://127.0.0.1:1").is_err());
        assert!(parse_redirect("http://127.0.0.1:1/service/a/b", "http://127.0.0.1:1").is_err());
    }

    #[test]
    fn canonical_segment() {
        let ids: Vec<ResourceId> = vec!["API.2RXHOGTXIC".parse().unwrap()];
        assert_eq!(expected_segment(&ids), "QVBJLjJSWEhPR1RYSUM=");
        let ids: Vec<ResourceId> = vec![
            "API.2RXHOGTXIC".parse().unwrap(),
            "API.5XQQ2IWD37".parse().unwrap(),
        ];
        assert_eq!(
            expected_segment(&ids),
            "QVBJLjJSWEhPR1RYSUM6QVBJLjVYUVEySVdEMzc="
        );
    }

    #[test]
    fn the_default_window_is_the_rules_60_seconds() {
        assert_eq!(ABSENT_WINDOW, Duration::from_secs(60));
        assert_eq!(Options::default().absent_window, ABSENT_WINDOW);
        assert!(rule("sp.mydata_api.retry_after_absent").contains("60 s"));
    }

    fn view(v: Value) -> HookTx {
        HookTx {
            state: v["state"].as_str().unwrap_or("").to_owned(),
            code: None,
            polls: None,
            error: v["error"].as_str().map(str::to_owned),
            error_rule: v["error_rule"].as_str().map(str::to_owned),
            raw: v,
        }
    }

    #[test]
    fn a_rejection_must_be_for_the_broken_rule() {
        let ok = view(serde_json::json!({"state": "rejected", "error": "bad_signature"}));
        assert!(rejected_for(&ok, "bad_signature", None).is_ok());
        let other = view(serde_json::json!({"state": "rejected", "error": "digest_mismatch"}));
        let e = rejected_for(&other, "bad_signature", None).unwrap_err();
        assert!(e.contains("digest_mismatch"), "{e}");
        let none = view(serde_json::json!({"state": "rejected", "error": null}));
        assert!(rejected_for(&none, "jwe", None).is_err());
        let delivered = view(serde_json::json!({"state": "delivered", "error": null}));
        assert!(rejected_for(&delivered, "jwe", None).is_err());
        // error_rule: checked when the hook reports it, not required.
        let mode = view(
            serde_json::json!({"state": "rejected", "error": "manifest", "error_rule": "packaging_mode"}),
        );
        assert!(rejected_for(&mode, "manifest", Some("packaging_mode")).is_ok());
        let bare = view(serde_json::json!({"state": "rejected", "error": "manifest"}));
        assert!(rejected_for(&bare, "manifest", Some("packaging_mode")).is_ok());
        let wrong = view(
            serde_json::json!({"state": "rejected", "error": "manifest", "error_rule": "requested"}),
        );
        let e = rejected_for(&wrong, "manifest", Some("packaging_mode")).unwrap_err();
        assert!(e.contains("requested"), "{e}");
    }

    #[test]
    fn delivered_files_are_compared_byte_for_byte() {
        let ids: Vec<ResourceId> = vec!["API.2RXHOGTXIC".parse().unwrap()];
        let good = sha256_hex(FILE_1.bytes);
        let v = view(serde_json::json!({"state": "delivered", "datasets": [
            {"resource_id": "API.2RXHOGTXIC", "code": 200, "files": ["data.json"], "sha256": [good]}
        ]}));
        assert!(check_datasets(&v, &ids, &[&[&FILE_1]]).is_ok());
        let upper = view(serde_json::json!({"state": "delivered", "datasets": [
            {"resource_id": "API.2RXHOGTXIC", "code": 200, "files": ["data.json"], "sha256": [good.to_uppercase()]}
        ]}));
        assert!(check_datasets(&upper, &ids, &[&[&FILE_1]]).is_ok());
        let other = sha256_hex(b"{}");
        let v = view(serde_json::json!({"state": "delivered", "datasets": [
            {"resource_id": "API.2RXHOGTXIC", "code": 200, "files": ["data.json"], "sha256": [other]}
        ]}));
        let e = check_datasets(&v, &ids, &[&[&FILE_1]]).unwrap_err();
        assert!(e.contains("bytes differ"), "{e}");
        let names_only = view(serde_json::json!({"state": "delivered", "datasets": [
            {"resource_id": "API.2RXHOGTXIC", "code": 200, "files": ["data.json"]}
        ]}));
        assert!(check_datasets(&names_only, &ids, &[&[&FILE_1]]).is_err());
    }

    #[test]
    fn sandbox_targets() {
        let t = Target::sandbox(2, "http://127.0.0.1:8090/").unwrap();
        assert_eq!(t.registration.client_id.as_str(), "CLI.SANDBOX002");
        assert_eq!(t.registration.return_url, "http://127.0.0.1:8090/return");
        assert_eq!(t.hook_url, "http://127.0.0.1:8090/conformance");
        assert_eq!(t.sp_api_url, "http://127.0.0.1:8090/sp-api");
        assert_eq!(t.registration.jwe_mode, JweMode::Gcm);
        assert!(Target::sandbox(3, "http://x").is_err());
    }
}
