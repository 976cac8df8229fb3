//! What `mydata sp fetch`/`verify` print and write: progress on standard error, the JSON or text report, and the unpacked files under `--out`.

use super::*;

/// Progress on standard error: a spinner with the last answer and a countdown on a terminal,
/// plain lines otherwise.
#[derive(Clone)]
pub(super) struct Progress {
    pub(super) bar: Option<ProgressBar>,
}

impl Progress {
    pub(super) fn new() -> Self {
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
    pub(super) fn line(&self, msg: &str) {
        match &self.bar {
            Some(b) => b.println(format!("mydata: {msg}")),
            None => eprintln!("mydata: {msg}"),
        }
    }

    /// A line that stays, without the `mydata:` prefix (for copying, e.g. a URL).
    pub(super) fn bare(&self, text: &str) {
        match &self.bar {
            Some(b) => b.println(text),
            None => eprintln!("{text}"),
        }
    }

    /// The status next to the spinner (nothing without a terminal).
    pub(super) fn status(&self, msg: String) {
        if let Some(b) = &self.bar {
            b.set_message(msg);
        }
    }

    pub(super) fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

/// The real clock; waits show a countdown on the progress display.
pub(super) struct CountdownTimer {
    pub(super) progress: Progress,
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

pub(super) fn describe(n: u32, a: &Answer) -> String {
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
pub(super) fn poll_status(e: &PollError) -> &'static str {
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
pub(super) fn safe_relative(name: &str) -> Option<PathBuf> {
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
pub(super) fn prepare_out(dir: &Path, force: bool) -> CliResult<()> {
    if dir.exists() {
        if !dir.is_dir() {
            return Err(crate::exit::runtime(format!(
                "--out {}: not a directory",
                dir.display()
            )));
        }
        let mut entries = std::fs::read_dir(dir)
            .map_err(|e| crate::exit::runtime(format!("--out {}: {e}", dir.display())))?;
        if entries.next().is_some() && !force {
            return Err(format!(
                "--out {}: the directory is not empty (use --force to overwrite)",
                dir.display()
            )
            .into());
        }
    } else {
        // Personal data goes in it: owner-only, whatever the umask (D48).
        mydata_server::datadir::create_dir(dir)
            .map_err(|e| crate::exit::runtime(format!("--out {e}")))?;
    }
    Ok(())
}

pub(super) fn write_file(path: &Path, bytes: &[u8], force: bool) -> CliResult<()> {
    // A dataset's files are personal data: directories 0700 and files 0600, whatever the umask
    // (as the platform's data directory, D48).
    if let Some(parent) = path.parent() {
        mydata_server::datadir::create_dir(parent)?;
    }
    let mut o = std::fs::OpenOptions::new();
    o.write(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(mydata_server::datadir::FILE_MODE);
    }
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

pub(super) fn error_json(e: &PackageError) -> Value {
    json!({"kind": e.kind(), "resource_id": e.resource_id(), "message": e.to_string()})
}

/// Per-dataset report; with `out`, writes each verified file to `out/{resource_id}/{name}`.
pub(super) fn datasets_json(
    d: &Delivered,
    out: Option<&Path>,
    force: bool,
) -> CliResult<Vec<Value>> {
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

pub(super) fn mode_json(m: Option<PackagingMode>) -> Value {
    match m {
        Some(PackagingMode::A) => json!("A"),
        Some(PackagingMode::B) => json!("B"),
        None => Value::Null,
    }
}

/// Prints the report: JSON on stdout, or a human summary (stdout) and the failure (stderr).
pub(super) fn print_report(r: &Value, as_json: bool) -> std::io::Result<()> {
    if as_json {
        return outln!("{r}");
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
    outln!("{head}")?;
    for d in r["datasets"].as_array().into_iter().flatten() {
        let state = match (d["verified"].as_bool(), d["error"]["message"].as_str()) {
            (_, Some(m)) => format!(
                "FAILED ({}): {m}",
                d["error"]["kind"].as_str().unwrap_or("")
            ),
            (Some(true), _) => "verified".to_owned(),
            _ => "no file".to_owned(),
        };
        outln!(
            "  {} code {} {}: {state}",
            d["resource_id"].as_str().unwrap_or(""),
            d["code"],
            d["resource_name"].as_str().unwrap_or("")
        )?;
        for f in d["files"].as_array().into_iter().flatten() {
            let name = f["path"].as_str().or(f["name"].as_str()).unwrap_or("");
            outln!(
                "    {}  {:>10}  {name}",
                f["sha256"].as_str().unwrap_or(""),
                f["size"]
            )?;
        }
    }
    if let Some(p) = r["package"].as_str() {
        outln!("package zip: {p}")?;
    }
    if let Some(m) = r["error"]["message"].as_str() {
        eprintln!(
            "mydata: {} ({})",
            m,
            r["error"]["kind"].as_str().unwrap_or("error")
        );
    }
    Ok(())
}
