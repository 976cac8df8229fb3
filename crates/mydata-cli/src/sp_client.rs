//! `mydata sp fetch` and `mydata sp verify`: the SP's side of the MyData-API from the command
//! line, built on the SP SDK (`mydata-sp`).
//!
//! * `fetch` gets a ticket (given on the command line, read from a saved SP-API body, or received
//!   by playing the SP for one transaction with `--listen`), polls the platform, decrypts the JWE,
//!   verifies the SP package and every DP package in it against the trust anchors and the
//!   packaging mode, and unpacks the files.
//! * `verify` does the same for a package saved earlier (the JWE body or the decrypted zip).
//!
//! Verification is the SDK's (`mydata_sp::package`), which runs the protocol core's SP package
//! verifier, the same code path as `mydata package verify`.
//!
//! Exit status: 0 delivered and verified; 1 a final non-delivery answer, a refused SP-API body,
//! a decryption or verification failure; 2 a usage error (returned as `Err`).

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use mydata_protocol::flow::{ApplicationMode, Pid, SpApiBody, SpApiDelivery};
use mydata_protocol::ids::{CbcIv, ClientId, ClientSecret, PermissionTicket, ResourceId, TxId};
use mydata_protocol::jwe::JweMode;
use mydata_protocol::package::dp::TrustAnchors;
use mydata_protocol::package::sp::PackagingMode;
use mydata_protocol::resources::ResourceList;
use mydata_sp::SpConfig;
use mydata_sp::callback::ReturnOutcome;
use mydata_sp::package::{self, Delivered, Expectations, PackageError, Verification};
use mydata_sp::poll::{Answer, CancelToken, MyDataApi, PollError, PollOptions, Timer};
use mydata_sp::receiver::{self, MAX_BODY_LEN, Received, ReceivedContent};
use serde_json::{Value, json};

type CliResult<T> = Result<T, Box<dyn std::error::Error>>;

/// The platform of the sandbox (`mydata serve --sandbox`).
const SANDBOX_PLATFORM: &str = "http://127.0.0.1:8080";
/// The name of the saved SP package zip inside `--out`.
const PACKAGE_ZIP: &str = "package.zip";

/// JWE algorithms of the registration.
#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum JweArg {
    /// A256KW + A256CBC-HS512 (and AES/CBC parameters).
    Cbc,
    /// A256GCMKW + A256GCM (and AES/GCM parameters).
    Gcm,
}

/// Packaging mode of the registration.
#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum PackagingArg {
    /// One dataset fails, nothing is delivered.
    A,
    /// What succeeded is delivered, failures carry their codes.
    B,
}

/// The SP's registration and trust anchors, shared by `fetch` and `verify`.
#[derive(Args, Debug, Clone)]
pub struct Credentials {
    /// Preset everything for the public sandbox SP N (1: CLI.SANDBOX001, mode A, JWE CBC;
    /// 2: CLI.SANDBOX002, mode B, JWE GCM): credentials, API key, platform
    /// http://127.0.0.1:8080 and the sandbox root CA. Other flags override the presets.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(1..=2))]
    pub sandbox: Option<u8>,
    /// The SP's client_id.
    #[arg(long)]
    pub client_id: Option<String>,
    /// The SP's client_secret (16 characters).
    #[arg(long)]
    pub client_secret: Option<String>,
    /// The SP's cbc_iv (16 characters).
    #[arg(long)]
    pub cbc_iv: Option<String>,
    /// The registered JWE / parameter encryption mode (default cbc).
    #[arg(long, value_enum, ignore_case = true)]
    pub jwe: Option<JweArg>,
    /// The registered packaging mode; when given, its rules are checked (packages.md §5.2).
    #[arg(long, value_enum, ignore_case = true)]
    pub packaging: Option<PackagingArg>,
    /// The SP-API key the platform sends (checked on SP-API bodies).
    #[arg(long)]
    pub api_key: Option<String>,
    /// The platform's base URL (default http://127.0.0.1:8080 with --sandbox).
    #[arg(long)]
    pub platform: Option<String>,
    /// A trust anchor for the DP signing certificates (PEM; repeat). Required unless --sandbox.
    #[arg(long = "trust", value_name = "PEM")]
    pub trust: Vec<PathBuf>,
}

/// `mydata sp fetch`.
#[derive(Args, Debug)]
pub struct FetchArgs {
    #[command(flatten)]
    creds: Credentials,
    /// The permission_ticket (with --tx-id and --secret-key).
    #[arg(long)]
    ticket: Option<String>,
    /// The SP's tx_id of the transaction (with --ticket).
    #[arg(long)]
    tx_id: Option<String>,
    /// The secret_key as the SP-API call carried it, still encrypted (with --ticket).
    #[arg(long)]
    secret_key: Option<String>,
    /// A saved SP-API body (JSON: tx_id, apiKey, permission_ticket, secret_key or
    /// unable_to_deliver).
    #[arg(long, value_name = "FILE")]
    delivery: Option<PathBuf>,
    /// Play the SP for one transaction: listen on ADDR (e.g. 127.0.0.1:8090) for POST /sp-api
    /// and GET /return, print the redirect URL to open in a browser, then poll.
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// With --listen: the citizen's national ID (or business number).
    #[arg(long)]
    pid: Option<String>,
    /// With --listen: a dataset to request (repeat, in request order).
    #[arg(long = "resource", value_name = "RESOURCE_ID")]
    resources: Vec<String>,
    /// With --listen: the registered return URL (default http://ADDR/return).
    #[arg(long)]
    return_url: Option<String>,
    /// Where to unpack the datasets (created; must be empty unless --force).
    #[arg(long)]
    out: PathBuf,
    /// Overwrite files already in --out.
    #[arg(long)]
    force: bool,
    /// Give up after this many seconds in all.
    #[arg(long, value_name = "SECS", default_value_t = 5400)]
    deadline: u64,
    /// Never wait longer than this many seconds between two polls, whatever Retry-After says.
    #[arg(long, value_name = "SECS", default_value_t = 3600)]
    max_wait: u64,
    /// Print one JSON object on standard output, nothing else.
    #[arg(long)]
    json: bool,
}

/// `mydata sp verify`.
#[derive(Args, Debug)]
pub struct VerifyArgs {
    #[command(flatten)]
    creds: Credentials,
    /// The saved package: the MyData-API JWE body, or the decrypted SP package zip.
    #[arg(long, value_name = "FILE")]
    package: PathBuf,
    /// For a JWE: the secret_key as the SP-API call carried it, still encrypted.
    #[arg(long)]
    secret_key: Option<String>,
    /// For a JWE: the transaction's tx_id (reported only).
    #[arg(long)]
    tx_id: Option<String>,
    /// For a JWE: the saved SP-API body that carried the secret_key.
    #[arg(long, value_name = "FILE")]
    delivery: Option<PathBuf>,
    /// Unpack the datasets here (created; must be empty unless --force).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Overwrite files already in --out.
    #[arg(long)]
    force: bool,
    /// Print one JSON object on standard output.
    #[arg(long)]
    json: bool,
}

/// The credentials once presets and flags are merged.
struct Resolved {
    /// The SP configuration, when client_id, client_secret and cbc_iv are all known.
    sp: Option<SpConfig>,
    /// The client_id alone (enough to decrypt a JWE whose key is known).
    client_id: Option<ClientId>,
    jwe: JweMode,
    packaging: Option<PackagingMode>,
    trust: TrustAnchors,
}

impl Resolved {
    /// The SP configuration, or a usage error naming what is missing.
    fn sp(&self) -> CliResult<&SpConfig> {
        self.sp.as_ref().ok_or_else(|| {
            "give --client-id, --client-secret and --cbc-iv (or --sandbox 1|2)".into()
        })
    }

    fn expectations<'a>(&'a self, requested: Option<&'a [ResourceId]>) -> Expectations<'a> {
        let mut e = Expectations::now().trust(&self.trust);
        if let Some(m) = self.packaging {
            e = e.packaging_mode(m);
        }
        if let Some(r) = requested {
            e = e.requested(r);
        }
        e
    }
}

/// One sandbox SP of fixtures/sandbox.json (embedded in the server crate).
fn sandbox_sp(n: u8) -> CliResult<Value> {
    let all: Value = serde_json::from_str(mydata_server::platform::SANDBOX_SPS)?;
    all["sps"]
        .get(usize::from(n).saturating_sub(1))
        .cloned()
        .ok_or_else(|| format!("--sandbox {n}: no such sandbox SP").into())
}

fn resolve(c: &Credentials, return_url: &str) -> CliResult<Resolved> {
    let preset = c.sandbox.map(sandbox_sp).transpose()?;
    let from_preset = |key: &str| -> Option<String> {
        preset
            .as_ref()
            .and_then(|p| p[key].as_str())
            .map(str::to_owned)
    };
    let pick = |flag: &Option<String>, key: &str| flag.clone().or_else(|| from_preset(key));
    let client_id: Option<ClientId> = pick(&c.client_id, "client_id")
        .map(|s| s.parse().map_err(|e| format!("--client-id: {e}")))
        .transpose()?;
    let secret: Option<ClientSecret> = pick(&c.client_secret, "client_secret")
        .map(|s| s.parse().map_err(|e| format!("--client-secret: {e}")))
        .transpose()?;
    let iv: Option<CbcIv> = pick(&c.cbc_iv, "cbc_iv")
        .map(|s| s.parse().map_err(|e| format!("--cbc-iv: {e}")))
        .transpose()?;
    let jwe = match c.jwe {
        Some(JweArg::Cbc) => JweMode::Cbc,
        Some(JweArg::Gcm) => JweMode::Gcm,
        None if from_preset("jwe_mode").as_deref() == Some("gcm") => JweMode::Gcm,
        None => JweMode::Cbc,
    };
    let packaging = match c.packaging {
        Some(PackagingArg::A) => Some(PackagingMode::A),
        Some(PackagingArg::B) => Some(PackagingMode::B),
        None => match from_preset("packaging_mode").as_deref() {
            Some("A") => Some(PackagingMode::A),
            Some("B") => Some(PackagingMode::B),
            _ => None,
        },
    };
    let api_key = pick(&c.api_key, "api_key");
    let platform = c
        .platform
        .clone()
        .or_else(|| preset.as_ref().map(|_| SANDBOX_PLATFORM.to_owned()));
    let mut pems: Vec<Vec<u8>> = Vec::new();
    for p in &c.trust {
        pems.push(std::fs::read(p).map_err(|e| format!("--trust {}: {e}", p.display()))?);
    }
    if pems.is_empty() {
        if preset.is_some() {
            pems.push(mydata_server::platform::SANDBOX_ROOT_CA.to_vec());
        } else {
            return Err(
                "give at least one --trust PEM (or --sandbox 1|2): DP packages are \
                        verified against trust anchors"
                    .into(),
            );
        }
    }
    let trust = TrustAnchors::from_pem(&pems.iter().map(Vec::as_slice).collect::<Vec<_>>())
        .map_err(|e| format!("--trust: {e}"))?;
    let sp = match (&client_id, secret, iv) {
        (Some(id), Some(s), Some(v)) => {
            let mut sp = SpConfig::new(
                platform.clone().unwrap_or_default(),
                id.clone(),
                s,
                v,
                return_url,
            )
            .with_mode(jwe);
            if let Some(k) = api_key {
                sp = sp.with_api_key(k);
            }
            if let Some(m) = packaging {
                sp = sp.with_packaging_mode(m);
            }
            Some(sp)
        }
        _ => None,
    };
    Ok(Resolved {
        sp,
        client_id,
        jwe,
        packaging,
        trust,
    })
}

/// Progress on standard error: a spinner with the last answer and a countdown on a terminal,
/// plain lines otherwise.
#[derive(Clone)]
struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    fn new() -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            if let Ok(style) = ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}") {
                b.set_style(style);
            }
            b.enable_steady_tick(Duration::from_millis(120));
            b
        });
        Progress { bar }
    }

    /// A line that stays.
    fn line(&self, msg: &str) {
        match &self.bar {
            Some(b) => b.println(format!("mydata: {msg}")),
            None => eprintln!("mydata: {msg}"),
        }
    }

    /// A line that stays, without the `mydata:` prefix (for copying, e.g. a URL).
    fn bare(&self, text: &str) {
        match &self.bar {
            Some(b) => b.println(text),
            None => eprintln!("{text}"),
        }
    }

    /// The status next to the spinner (nothing without a terminal).
    fn status(&self, msg: String) {
        if let Some(b) = &self.bar {
            b.set_message(msg);
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

/// The real clock; waits show a countdown on the progress display.
struct CountdownTimer {
    progress: Progress,
}

impl Timer for CountdownTimer {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }

    fn sleep(&self, d: Duration) -> impl Future<Output = ()> {
        let progress = self.progress.clone();
        async move {
            let end = Instant::now() + d;
            loop {
                let left = end.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                progress.status(format!("next poll in {} s", left.as_secs_f64().ceil()));
                actix_web::rt::time::sleep(left.min(Duration::from_secs(1))).await;
            }
            progress.status("polling".into());
        }
    }
}

fn describe(n: u32, a: &Answer) -> String {
    match a {
        Answer::Ready(jwe) => format!("poll {n}: 200, the package is ready ({} bytes)", jwe.len()),
        Answer::NotReady { wait } => {
            format!("poll {n}: 429 not ready, next poll in {} s", wait.as_secs())
        }
        Answer::Transient { reason, wait } => {
            format!("poll {n}: {reason}, trying again in {} s", wait.as_secs())
        }
        Answer::Final(e) => format!("poll {n}: {e}"),
    }
}

/// The `status` word of a poll that ended without a package.
fn poll_status(e: &PollError) -> &'static str {
    match e {
        PollError::AlreadyTaken => "taken",
        PollError::Forbidden => "expired",
        PollError::AllFailed => "failed",
        PollError::NoTicket => "no_ticket",
        PollError::IpNotAllowed => "ip_not_allowed",
        PollError::DeadlineExceeded { .. } => "deadline",
        PollError::Cancelled => "cancelled",
        PollError::Transport(_) => "unreachable",
        _ => "error",
    }
}

/// A resource id or a file name from a package as a relative path of plain components; `None`
/// when any component could leave the directory (the core checks names already; this is the
/// writer's own guard).
fn safe_relative(name: &str) -> Option<PathBuf> {
    if name.is_empty() || name.contains('\\') || name.contains(':') || name.contains('\0') {
        return None;
    }
    let mut out = PathBuf::new();
    for part in name.split('/') {
        let p = Path::new(part);
        match p.components().collect::<Vec<_>>().as_slice() {
            [Component::Normal(c)] if *c == part => out.push(c),
            _ => return None,
        }
    }
    Some(out)
}

/// Creates `dir` if needed; refuses a directory that already holds files unless `force`.
fn prepare_out(dir: &Path, force: bool) -> CliResult<()> {
    if dir.exists() {
        if !dir.is_dir() {
            return Err(format!("--out {}: not a directory", dir.display()).into());
        }
        let mut entries =
            std::fs::read_dir(dir).map_err(|e| format!("--out {}: {e}", dir.display()))?;
        if entries.next().is_some() && !force {
            return Err(format!(
                "--out {}: the directory is not empty (use --force to overwrite)",
                dir.display()
            )
            .into());
        }
    } else {
        std::fs::create_dir_all(dir).map_err(|e| format!("--out {}: {e}", dir.display()))?;
    }
    Ok(())
}

fn write_file(path: &Path, bytes: &[u8], force: bool) -> CliResult<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    let mut o = std::fs::OpenOptions::new();
    o.write(true);
    if force {
        o.create(true).truncate(true);
    } else {
        o.create_new(true);
    }
    let mut f = o
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("{}: {e}", path.display()).into())
}

fn error_json(e: &PackageError) -> Value {
    json!({"kind": e.kind(), "resource_id": e.resource_id(), "message": e.to_string()})
}

/// Per-dataset report; with `out`, writes each verified file to `out/{resource_id}/{name}`.
fn datasets_json(d: &Delivered, out: Option<&Path>, force: bool) -> CliResult<Vec<Value>> {
    let mut v = Vec::with_capacity(d.datasets.len());
    for ds in &d.datasets {
        let dir = match out {
            Some(o) => Some(
                o.join(safe_relative(ds.resource_id.as_str()).ok_or_else(|| {
                    format!(
                        "unsafe dataset directory name {:?}",
                        ds.resource_id.as_str()
                    )
                })?),
            ),
            None => None,
        };
        let mut files = Vec::with_capacity(ds.files.len());
        for f in &ds.files {
            let mut fj = json!({"name": f.name, "size": f.bytes.len(), "sha256": f.digest});
            if let Some(dir) = &dir {
                let rel = safe_relative(&f.name).ok_or_else(|| {
                    format!("refusing to write the unsafe file name {:?}", f.name)
                })?;
                let path = dir.join(rel);
                write_file(&path, &f.bytes, force)?;
                fj["path"] = json!(path);
            }
            files.push(fj);
        }
        let (verified, error, signer) = match &ds.verification {
            Verification::NotShipped => (Value::Null, Value::Null, Value::Null),
            Verification::Verified(p) => (json!(true), Value::Null, json!(p.signer.subject)),
            Verification::Failed(e) => (json!(false), error_json(e), Value::Null),
        };
        v.push(json!({
            "resource_id": ds.resource_id.as_str(),
            "resource_name": ds.resource_name,
            "code": ds.code,
            "verified": verified,
            "signer": signer,
            "error": error,
            "files": files,
        }));
    }
    Ok(v)
}

fn mode_json(m: Option<PackagingMode>) -> Value {
    match m {
        Some(PackagingMode::A) => json!("A"),
        Some(PackagingMode::B) => json!("B"),
        None => Value::Null,
    }
}

/// Prints the report: JSON on stdout, or a human summary (stdout) and the failure (stderr).
fn print_report(r: &Value, as_json: bool) {
    if as_json {
        println!("{r}");
        return;
    }
    let s = |k: &str| r[k].as_str().unwrap_or("").to_owned();
    let mut head = format!("status {}", s("status"));
    if let Some(t) = r["tx_id"].as_str() {
        head = format!("tx_id {t}: {head}");
    }
    if let Some(f) = r["package_file"].as_str() {
        head = format!("{f}: {head}");
    }
    match (r["status"].as_str(), r["verified"].as_bool()) {
        (Some(st), _) if st != "delivered" => {}
        (_, None) => {}
        (_, Some(true)) => head.push_str(", verified"),
        (_, Some(false)) => head.push_str(", NOT verified"),
    }
    if let Some(m) = r["packaging_mode"].as_str() {
        head.push_str(&format!(" (packaging mode {m})"));
    }
    if let Some(n) = r["polls"].as_u64() {
        head.push_str(&format!(", {n} polls"));
    }
    println!("{head}");
    for d in r["datasets"].as_array().into_iter().flatten() {
        let state = match (d["verified"].as_bool(), d["error"]["message"].as_str()) {
            (_, Some(m)) => format!(
                "FAILED ({}): {m}",
                d["error"]["kind"].as_str().unwrap_or("")
            ),
            (Some(true), _) => "verified".to_owned(),
            _ => "no file".to_owned(),
        };
        println!(
            "  {} code {} {}: {state}",
            d["resource_id"].as_str().unwrap_or(""),
            d["code"],
            d["resource_name"].as_str().unwrap_or("")
        );
        for f in d["files"].as_array().into_iter().flatten() {
            let name = f["path"].as_str().or(f["name"].as_str()).unwrap_or("");
            println!(
                "    {}  {:>10}  {name}",
                f["sha256"].as_str().unwrap_or(""),
                f["size"]
            );
        }
    }
    if let Some(p) = r["package"].as_str() {
        println!("package zip: {p}");
    }
    if let Some(m) = r["error"]["message"].as_str() {
        eprintln!(
            "mydata: {} ({})",
            m,
            r["error"]["kind"].as_str().unwrap_or("error")
        );
    }
}

/// Decrypts an encrypted `secret_key` as the SP-API receiver does, from a body built of the
/// command-line values.
fn received_from_flags(
    sp: &SpConfig,
    ticket: &str,
    tx_id: &str,
    secret_key: &str,
) -> CliResult<Result<Received, receiver::ReceiveError>> {
    let body = SpApiBody {
        tx_id: tx_id.parse::<TxId>().map_err(|e| format!("--tx-id: {e}"))?,
        api_key: None,
        permission_ticket: ticket
            .parse::<PermissionTicket>()
            .map_err(|e| format!("--ticket: {e}"))?,
        delivery: SpApiDelivery::SecretKey(secret_key.to_owned()),
    }
    .to_json();
    Ok(receiver::receive(body.as_bytes(), None, &sp.cipher()))
}

fn read_delivery(
    sp: &SpConfig,
    path: &Path,
) -> CliResult<Result<Received, receiver::ReceiveError>> {
    let body = std::fs::read(path).map_err(|e| format!("--delivery {}: {e}", path.display()))?;
    Ok(receiver::receive(
        &body,
        sp.api_key.as_deref(),
        &sp.cipher(),
    ))
}

fn refused_json(e: &receiver::ReceiveError) -> Value {
    let hint = match e {
        receiver::ReceiveError::ApiKey => " (give the SP-API key with --api-key)",
        receiver::ReceiveError::SecretKeyDecrypt => {
            " (check --client-secret, --cbc-iv and --jwe of the registration)"
        }
        _ => "",
    };
    json!({
        "status": "refused",
        "verified": false,
        "error": {"kind": e.kind(), "message": format!("SP-API body refused: {e}{hint}")},
    })
}

/// Runs `mydata sp fetch`.
pub fn fetch(a: FetchArgs) -> CliResult<i32> {
    let sources = [
        a.ticket.is_some() || a.secret_key.is_some(),
        a.delivery.is_some(),
        a.listen.is_some(),
    ];
    match sources.iter().filter(|s| **s).count() {
        1 => {}
        0 => {
            return Err(
                "give the ticket: --ticket T --tx-id X --secret-key K, --delivery FILE, or \
                 --listen ADDR --pid ID --resource API.X"
                    .into(),
            );
        }
        _ => {
            return Err("give only one of --ticket/--secret-key, --delivery and --listen".into());
        }
    }
    if a.listen.is_none() && (a.pid.is_some() || !a.resources.is_empty()) {
        return Err("--pid and --resource go with --listen".into());
    }
    let return_url = match (&a.return_url, a.listen) {
        (Some(u), _) => u.clone(),
        (None, Some(l)) => format!("http://{l}/return"),
        (None, None) => String::new(),
    };
    let cfg = resolve(&a.creds, &return_url)?;
    let sp = cfg.sp()?.clone();
    if sp.platform_url.is_empty() {
        return Err("give --platform URL (or --sandbox 1|2)".into());
    }
    url::Url::parse(&sp.platform_url).map_err(|e| format!("--platform: {e}"))?;
    // The ticket is served once: refuse an unusable --out before taking the package.
    prepare_out(&a.out, a.force)?;
    let listen_plan = match a.listen {
        Some(addr) => {
            let pid = a.pid.as_deref().ok_or("--listen needs --pid")?;
            let pid = Pid::parse_for(ApplicationMode::PersonOrLegalPerson, pid)
                .map_err(|e| format!("--pid: {e}"))?;
            if a.resources.is_empty() {
                return Err("--listen needs at least one --resource".into());
            }
            let ids = a
                .resources
                .iter()
                .map(|r| {
                    r.parse::<ResourceId>()
                        .map_err(|e| format!("--resource {r}: {e}"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let list = ResourceList::new(ids.clone()).map_err(|e| format!("--resource: {e}"))?;
            let redirect = sp
                .redirect(&mydata_sp::redirect::RedirectRequest::new(&list, &pid))
                .map_err(|e| format!("redirect: {e}"))?;
            Some((addr, ids, redirect))
        }
        None => None,
    };
    let received = match (&a.ticket, &a.delivery, &listen_plan) {
        (Some(t), _, _) => {
            let tx = a.tx_id.as_deref().ok_or("--ticket needs --tx-id")?;
            let k = a
                .secret_key
                .as_deref()
                .ok_or("--ticket needs --secret-key")?;
            Some(received_from_flags(&sp, t, tx, k)?)
        }
        (None, _, _) if a.secret_key.is_some() => return Err("--secret-key needs --ticket".into()),
        (None, Some(p), _) => Some(read_delivery(&sp, p)?),
        _ => None,
    };
    let opts = PollOptions {
        deadline: Duration::from_secs(a.deadline),
        max_wait: Duration::from_secs(a.max_wait.max(1)),
        ..PollOptions::default()
    };
    let progress = Progress::new();
    let started = Instant::now();
    let out = a.out.clone();
    let force = a.force;
    let shown = progress.clone();
    let report = actix_web::rt::System::new().block_on(async move {
        let mut server = None;
        let mut requested = None;
        let received = match (received, listen_plan) {
            (Some(r), _) => r,
            (None, Some((addr, ids, redirect))) => {
                let l = listen(&sp, addr, &redirect.tx_id, &progress).await?;
                progress.line("open this URL in a browser to go through the platform's pages:");
                progress.bare(&redirect.url);
                progress.status("waiting for the citizen (SP-API call and return)".into());
                requested = Some(ids);
                match l.wait(started, opts.deadline).await {
                    Ok(r) => {
                        server = Some(l);
                        r
                    }
                    Err(v) => {
                        l.stop().await;
                        return Ok::<Value, Box<dyn std::error::Error>>(v);
                    }
                }
            }
            (None, None) => return Err("no ticket source".into()),
        };
        let report = match received {
            Err(e) => refused_json(&e),
            Ok(r) => {
                collect(
                    &sp,
                    &cfg,
                    r,
                    requested.as_deref(),
                    opts,
                    &progress,
                    &out,
                    force,
                )
                .await?
            }
        };
        if let Some(l) = server {
            l.linger_for_return(Duration::from_secs(5)).await;
            l.stop().await;
        }
        Ok(report)
    });
    shown.finish();
    let report = report?;
    print_report(&report, a.json);
    Ok(exit_code(&report))
}

fn exit_code(r: &Value) -> i32 {
    let ok = r["verified"].as_bool() == Some(true)
        && matches!(r["status"].as_str(), Some("delivered" | "verified"));
    if ok { 0 } else { 1 }
}

/// Polls with a received ticket, then decrypts, verifies and unpacks.
#[allow(clippy::too_many_arguments)]
async fn collect(
    sp: &SpConfig,
    cfg: &Resolved,
    r: Received,
    requested: Option<&[ResourceId]>,
    opts: PollOptions,
    progress: &Progress,
    out: &Path,
    force: bool,
) -> CliResult<Value> {
    let key = match r.content {
        ReceivedContent::SecretKey(k) => k,
        ReceivedContent::UnableToDeliver(ids) => {
            let ids: Vec<&str> = ids.iter().map(ResourceId::as_str).collect();
            return Ok(json!({
                "tx_id": r.tx_id.as_str(),
                "status": "undeliverable",
                "verified": false,
                "unable_to_deliver": ids,
                "polls": 0,
                "error": {"kind": "unable_to_deliver", "message": format!(
                    "the platform could not deliver {} (unable_to_deliver): the ticket will never yield data",
                    ids.join(", "))},
            }));
        }
    };
    let api = MyDataApi::new(&sp.platform_url, opts);
    progress.line(&format!("polling {} for tx_id {}", api.data_url(), r.tx_id));
    progress.status("polling".into());
    let timer = CountdownTimer {
        progress: progress.clone(),
    };
    let mut polls = 0u32;
    let got = api
        .poll_observed(
            &r.permission_ticket,
            Some(&r.tx_id),
            &timer,
            &CancelToken::new(),
            |n, answer| {
                polls = n;
                progress.line(&describe(n, answer));
            },
        )
        .await;
    let mut report = json!({
        "tx_id": r.tx_id.as_str(),
        "packaging_mode": mode_json(cfg.packaging),
        "polls": polls,
        "out": out,
    });
    let jwe = match got {
        Ok(j) => j,
        Err(e) => {
            report["status"] = json!(poll_status(&e));
            report["verified"] = json!(false);
            report["http_status"] = json!(e.api_status().map(|s| s.wire()));
            report["error"] = json!({"kind": e.kind(), "message": e.to_string()});
            return Ok(report);
        }
    };
    report["status"] = json!("delivered");
    let zip = match package::decrypt(&jwe, &key, sp.jwe_mode, &sp.client_id, None) {
        Ok(z) => z,
        Err(e) => {
            report["verified"] = json!(false);
            report["error"] = error_json(&e);
            return Ok(report);
        }
    };
    // The package is served once: keep it, whatever verification says.
    let zip_path = out.join(PACKAGE_ZIP);
    write_file(&zip_path, &zip, force)?;
    report["package"] = json!(zip_path);
    fill_verification(&mut report, &zip, cfg, requested, Some(out), force)?;
    Ok(report)
}

/// Verifies `zip`, and records the outcome and the datasets (unpacked into `out` when given)
/// in `report`.
fn fill_verification(
    report: &mut Value,
    zip: &[u8],
    cfg: &Resolved,
    requested: Option<&[ResourceId]>,
    out: Option<&Path>,
    force: bool,
) -> CliResult<()> {
    match package::verify(zip, &cfg.expectations(requested)) {
        Ok(d) => {
            let verified = d.verified();
            report["verified"] = json!(verified);
            report["datasets"] = json!(datasets_json(&d, out, force)?);
            if let Some(e) = d.first_failure() {
                report["error"] = error_json(e);
            }
            debug_assert!(verified || !report["error"].is_null());
        }
        Err(e) => {
            report["verified"] = json!(false);
            report["error"] = error_json(&e);
        }
    }
    Ok(())
}

/// Runs `mydata sp verify`.
pub fn verify(a: VerifyArgs) -> CliResult<i32> {
    let cfg = resolve(&a.creds, "")?;
    let bytes =
        std::fs::read(&a.package).map_err(|e| format!("--package {}: {e}", a.package.display()))?;
    if let Some(o) = &a.out {
        prepare_out(o, a.force)?;
    }
    let is_zip = bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(b"PK\x05\x06");
    let mut report = json!({
        "package_file": a.package,
        "format": if is_zip { "zip" } else { "jwe" },
        "packaging_mode": mode_json(cfg.packaging),
        "out": a.out,
    });
    let zip = if is_zip {
        if a.secret_key.is_some() || a.delivery.is_some() {
            return Err(format!(
                "{} is already a zip: --secret-key and --delivery are for a JWE",
                a.package.display()
            )
            .into());
        }
        if matches!(
            mydata_protocol::package::detect(std::io::Cursor::new(&bytes)),
            Ok(mydata_protocol::package::PackageKind::Dp)
        ) {
            return Err(format!(
                "{} is a DP package (one dataset), not the SP package: verify it with \
                 `mydata package verify`",
                a.package.display()
            )
            .into());
        }
        bytes
    } else {
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| format!("{}: neither a zip nor a JWE text", a.package.display()))?
            .trim();
        let received = match (&a.secret_key, &a.delivery) {
            (Some(k), None) => {
                // The ticket is not used here; a syntactically valid one lets the receiver
                // decrypt the key exactly as it does for a live SP-API call.
                let tx = a.tx_id.as_deref().unwrap_or("mydata-sp-verify");
                let placeholder = PermissionTicket::generate()?;
                received_from_flags(cfg.sp()?, placeholder.as_str(), tx, k)?
            }
            (None, Some(p)) => read_delivery(cfg.sp()?, p)?,
            (Some(_), Some(_)) => return Err("give --secret-key or --delivery, not both".into()),
            (None, None) => {
                return Err(format!(
                    "{} is a JWE: give --secret-key (as received) or --delivery FILE, with the \
                     credentials (or --sandbox 1|2)",
                    a.package.display()
                )
                .into());
            }
        };
        let r = match received {
            Ok(r) => r,
            Err(e) => {
                let r = refused_json(&e);
                print_report(&r, a.json);
                return Ok(1);
            }
        };
        if a.tx_id.is_some() || a.delivery.is_some() {
            report["tx_id"] = json!(r.tx_id.as_str());
        }
        let Some(key) = r.secret_key() else {
            let r = json!({"status": "undeliverable", "verified": false,
                "error": {"kind": "unable_to_deliver", "message": "the SP-API body carries unable_to_deliver, not a secret_key"}});
            print_report(&r, a.json);
            return Ok(1);
        };
        let client_id = cfg
            .client_id
            .as_ref()
            .ok_or("give --client-id (or --sandbox 1|2) to decrypt a JWE")?;
        match package::decrypt(text, key, cfg.jwe, client_id, None) {
            Ok(z) => z,
            Err(e) => {
                report["status"] = json!("failed");
                report["verified"] = json!(false);
                report["error"] = error_json(&e);
                print_report(&report, a.json);
                return Ok(1);
            }
        }
    };
    fill_verification(&mut report, &zip, &cfg, None, a.out.as_deref(), a.force)?;
    let ok = report["verified"].as_bool() == Some(true);
    report["status"] = json!(if ok { "verified" } else { "failed" });
    print_report(&report, a.json);
    Ok(exit_code(&report))
}

/// What the `--listen` SP has seen.
#[derive(Default)]
struct Seen {
    delivery: Option<Result<Received, receiver::ReceiveError>>,
    returned: Option<ReturnOutcome>,
    returned_at: Option<Instant>,
    delivered_at: Option<Instant>,
}

struct ListenState {
    sp: SpConfig,
    tx_id: TxId,
    seen: Mutex<Seen>,
    notify: tokio::sync::Notify,
    progress: Progress,
}

impl ListenState {
    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct Listening {
    state: Arc<ListenState>,
    handle: actix_web::dev::ServerHandle,
}

async fn sp_api(state: web::Data<ListenState>, body: web::Bytes) -> HttpResponse {
    let got = receiver::receive(&body, state.sp.api_key.as_deref(), &state.sp.cipher());
    let status = match &got {
        Err(e) => {
            state
                .progress
                .line(&format!("SP-API call refused: {e} ({})", e.kind()));
            e.status()
        }
        Ok(r) if r.tx_id != state.tx_id => {
            state.progress.line(&format!(
                "SP-API call for another tx_id ({}) refused",
                r.tx_id
            ));
            return HttpResponse::BadRequest().body("unknown tx_id");
        }
        Ok(r) => {
            let what = match &r.content {
                ReceivedContent::SecretKey(_) => "a secret_key".to_owned(),
                ReceivedContent::UnableToDeliver(ids) => format!(
                    "unable_to_deliver {}",
                    ids.iter()
                        .map(ResourceId::as_str)
                        .collect::<Vec<_>>()
                        .join(",")
                ),
            };
            state.progress.line(&format!(
                "SP-API call received: ticket {} with {what}",
                r.permission_ticket
            ));
            200
        }
    };
    {
        let mut s = state.seen();
        // The first accepted call decides; a refused call is kept only until one is accepted.
        if !matches!(s.delivery, Some(Ok(_))) {
            if got.is_ok() {
                s.delivered_at = Some(Instant::now());
            }
            s.delivery = Some(got);
        }
    }
    state.notify.notify_waiters();
    HttpResponse::build(
        actix_web::http::StatusCode::from_u16(status)
            .unwrap_or(actix_web::http::StatusCode::BAD_REQUEST),
    )
    .finish()
}

fn page(title: &str, text: &str) -> HttpResponse {
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header(("cache-control", "no-store"))
        .body(format!(
            "<!DOCTYPE html><html lang=en><meta charset=utf-8><title>{}</title><h1>{}</h1><p id=result>{}</p><p>The <code>mydata sp fetch</code> command continues in the terminal; you may close this page.</p></html>",
            esc(title),
            esc(title),
            esc(text)
        ))
}

async fn sp_return(state: web::Data<ListenState>, req: HttpRequest) -> HttpResponse {
    let back = state
        .sp
        .read_return(req.query_string())
        .map_err(|e| e.to_string())
        .and_then(|r| {
            r.check_tx(&state.tx_id)
                .map_err(|e| e.to_string())
                .map(|_| r.outcome)
        });
    match back {
        Ok(outcome) => {
            state.progress.line(&format!(
                "the citizen returned with code {}: {}",
                outcome.code(),
                outcome.description()
            ));
            {
                let mut s = state.seen();
                s.returned = Some(outcome);
                s.returned_at = Some(Instant::now());
            }
            state.notify.notify_waiters();
            page(
                &format!("Return code {}", outcome.code()),
                &format!("{} / {}", outcome.description(), outcome.description_zh()),
            )
        }
        Err(e) => {
            state.progress.line(&format!("a return was refused: {e}"));
            let mut r = page("Return refused", &e);
            *r.status_mut() = actix_web::http::StatusCode::BAD_REQUEST;
            r
        }
    }
}

async fn listen(
    sp: &SpConfig,
    addr: SocketAddr,
    tx_id: &TxId,
    progress: &Progress,
) -> CliResult<Listening> {
    let state = Arc::new(ListenState {
        sp: sp.clone(),
        tx_id: tx_id.clone(),
        seen: Mutex::default(),
        notify: tokio::sync::Notify::new(),
        progress: progress.clone(),
    });
    let data = web::Data::from(state.clone());
    let srv = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(web::PayloadConfig::new(MAX_BODY_LEN))
            .route("/sp-api", web::post().to(sp_api))
            .route("/return", web::get().to(sp_return))
    })
    .workers(1)
    .disable_signals()
    .bind(addr)
    .map_err(|e| format!("--listen {addr}: {e}"))?
    .run();
    let handle = srv.handle();
    actix_web::rt::spawn(srv);
    progress.line(&format!(
        "playing the SP on http://{addr} (POST /sp-api, GET /return), tx_id {tx_id}"
    ));
    Ok(Listening { state, handle })
}

impl Listening {
    /// Waits for the SP-API call; ends early with a report when the citizen comes back without
    /// one (refusal, timeout, …) or the deadline passes.
    async fn wait(
        &self,
        started: Instant,
        deadline: Duration,
    ) -> Result<Result<Received, receiver::ReceiveError>, Value> {
        // After a return without an SP-API call, a late call still has this long to arrive.
        const GRACE: Duration = Duration::from_secs(3);
        loop {
            let notified = self.state.notify.notified();
            {
                let mut s = self.state.seen();
                // Some platforms record our 200 only after the call returns and answer polls
                // before that with 403 (the reference server records the ticket first, D25):
                // start once the citizen is back (the platform redirects after the
                // acknowledgement), or after the grace period for a browser that never returns.
                let settled =
                    s.returned.is_some() || s.delivered_at.is_some_and(|t| t.elapsed() >= GRACE);
                if matches!(s.delivery, Some(Ok(_)))
                    && settled
                    && let Some(d) = s.delivery.take()
                {
                    return Ok(d);
                }
                if let (Some(o), Some(at)) = (s.returned, s.returned_at)
                    && at.elapsed() >= GRACE
                {
                    if let Some(Err(e)) = s.delivery.take() {
                        return Ok(Err(e));
                    }
                    let status = if o.is_success() {
                        "no_sp_api_call"
                    } else {
                        "returned"
                    };
                    return Err(json!({
                        "tx_id": self.state.tx_id.as_str(),
                        "status": status,
                        "verified": false,
                        "return_code": o.code(),
                        "polls": 0,
                        "error": {"kind": "return", "message": format!(
                            "the citizen came back with code {} ({}) and no SP-API call delivered a ticket",
                            o.code(), o.description())},
                    }));
                }
            }
            let left = deadline.saturating_sub(started.elapsed());
            if left.is_zero() {
                return Err(json!({
                    "tx_id": self.state.tx_id.as_str(),
                    "status": "deadline",
                    "verified": false,
                    "polls": 0,
                    "error": {"kind": "deadline", "message": "the deadline passed before the SP-API call"},
                }));
            }
            let nap = left.min(Duration::from_millis(500));
            let _ = actix_web::rt::time::timeout(nap, notified).await;
        }
    }

    /// Gives the browser up to `d` to load the return page if it has not yet.
    async fn linger_for_return(&self, d: Duration) {
        let until = Instant::now() + d;
        while self.state.seen().returned.is_none() && Instant::now() < until {
            actix_web::rt::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn stop(self) {
        self.handle.stop(true).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_names_stay_inside() {
        assert_eq!(
            safe_relative("data/a.json"),
            Some(PathBuf::from("data").join("a.json"))
        );
        assert_eq!(
            safe_relative("API.ABCDEFGHIJ"),
            Some(PathBuf::from("API.ABCDEFGHIJ"))
        );
        for bad in [
            "",
            "..",
            "../x",
            "a/../../x",
            "/etc/passwd",
            "a//b",
            "./a",
            "a/.",
            "c:x",
            "a\\b",
            "a\0b",
        ] {
            assert_eq!(safe_relative(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn sandbox_presets() {
        let c = Credentials {
            sandbox: Some(2),
            client_id: None,
            client_secret: None,
            cbc_iv: None,
            jwe: None,
            packaging: None,
            api_key: None,
            platform: None,
            trust: Vec::new(),
        };
        let r = resolve(&c, "").unwrap();
        let sp = r.sp().unwrap();
        assert_eq!(sp.client_id.as_str(), "CLI.SANDBOX002");
        assert_eq!(sp.jwe_mode, JweMode::Gcm);
        assert_eq!(r.packaging, Some(PackagingMode::B));
        assert_eq!(sp.platform_url, SANDBOX_PLATFORM);
        assert_eq!(
            sp.api_key.as_deref(),
            Some("SandboxApiKey0000000000000000002")
        );
        // Without presets, trust anchors are required.
        let none = Credentials { sandbox: None, ..c };
        assert!(resolve(&none, "").is_err());
    }

    #[test]
    fn out_dir_is_refused_when_not_empty() {
        let d = tempfile::tempdir().unwrap();
        let sub = d.path().join("new");
        prepare_out(&sub, false).unwrap();
        assert!(sub.is_dir());
        std::fs::write(sub.join("x"), b"1").unwrap();
        assert!(prepare_out(&sub, false).is_err());
        prepare_out(&sub, true).unwrap();
        assert!(write_file(&sub.join("x"), b"2", false).is_err());
        write_file(&sub.join("x"), b"2", true).unwrap();
        assert_eq!(std::fs::read(sub.join("x")).unwrap(), b"2");
    }
}
