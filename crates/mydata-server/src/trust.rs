//! The trust anchors that DP packages must chain to (spec D9 step 4, D35).
//!
//! An operator names PEM files, or directories of them (every `*.pem` and `*.crt` file in the
//! directory, not recursive), in `dp_trust_anchors`. They are read at start; a path that cannot
//! be read or holds no certificate stops the start. After that the files are looked at again at
//! most every [`RELOAD_CHECK`]: when a file was added, removed, replaced or changed, the set is
//! read again, so that a CA rotated on disk is in force within seconds without a restart. A set
//! that fails to load then (a half-written file, no certificate left) is not taken up: the
//! previous set stays in force and the error is logged, once per change.
//!
//! Outside the sandbox there is no default: a platform without anchors refuses to serve
//! ([`crate::http::server`]), and [`DpTrust::anchors`] answers [`Anchors::Missing`] so that an
//! embedder who starts the engine some other way still fails every DP package closed rather than
//! trusting any self-signed certificate. In the sandbox the sandbox CA is always trusted, plus
//! any configured anchors.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use mydata_protocol::package::dp::TrustAnchors;

use crate::error::{ServerError, ServerResult};

/// The sandbox CA that signs the sandbox DPs' certificates (fixtures/pki/sandbox-root-ca.pem).
pub const SANDBOX_ROOT_CA: &[u8] = include_bytes!("../../../fixtures/pki/sandbox-root-ca.pem");

/// How often the anchor files are looked at for changes.
pub const RELOAD_CHECK: Duration = Duration::from_secs(2);

/// What DP packages are verified against.
#[derive(Debug, Clone)]
pub enum Anchors {
    /// These anchors (D9 step 4).
    Configured(Arc<TrustAnchors>),
    /// None configured outside the sandbox: every DP package fails (code 500) without a call.
    Missing,
}

/// One file's identity for change detection.
type Stamp = (PathBuf, Option<SystemTime>, u64);

struct Loaded {
    stamps: Vec<Stamp>,
    anchors: Option<Arc<TrustAnchors>>,
    checked: Instant,
    /// The stamps of a set that failed to load (logged once).
    refused: Option<Vec<Stamp>>,
}

/// The DP trust anchors of one platform, reloaded when their files change.
pub struct DpTrust {
    sandbox: bool,
    paths: Vec<PathBuf>,
    state: Mutex<Loaded>,
}

impl std::fmt::Debug for DpTrust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DpTrust")
            .field("sandbox", &self.sandbox)
            .field("paths", &self.paths)
            .finish_non_exhaustive()
    }
}

impl DpTrust {
    /// Reads the anchors named by `paths` (files or directories), plus the sandbox CA when
    /// `sandbox`. Fails when a path cannot be read or a named set holds no certificate.
    pub fn load(sandbox: bool, paths: &[PathBuf]) -> ServerResult<Self> {
        let (stamps, anchors) = read_set(sandbox, paths)?;
        Ok(DpTrust {
            sandbox,
            paths: paths.to_vec(),
            state: Mutex::new(Loaded {
                stamps,
                anchors,
                checked: Instant::now(),
                refused: None,
            }),
        })
    }

    /// Whether DP packages can be trusted at all: anchors are configured, or this is the
    /// sandbox.
    pub fn is_configured(&self) -> bool {
        self.sandbox || !self.paths.is_empty()
    }

    /// The anchors in force now (files looked at again when [`RELOAD_CHECK`] has passed).
    pub fn anchors(&self) -> Anchors {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if !self.paths.is_empty() && s.checked.elapsed() >= RELOAD_CHECK {
            s.checked = Instant::now();
            let now = stamps(&self.paths);
            let changed = now.as_ref().map_or(true, |n| *n != s.stamps);
            let refused_before = now.as_ref().ok() == s.refused.as_ref();
            if changed && !refused_before {
                match read_set(self.sandbox, &self.paths) {
                    Ok((stamps, anchors)) => {
                        log::warn!(
                            "DP trust anchors reloaded from {}",
                            display_paths(&self.paths)
                        );
                        s.stamps = stamps;
                        s.anchors = anchors;
                        s.refused = None;
                    }
                    Err(e) => {
                        log::error!("DP trust anchors not reloaded (the previous set stays): {e}");
                        s.refused = now.ok();
                    }
                }
            }
        }
        match &s.anchors {
            Some(a) => Anchors::Configured(a.clone()),
            None => Anchors::Missing,
        }
    }
}

fn display_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The certificate files a configured path stands for, sorted.
fn files_of(path: &Path) -> ServerResult<Vec<PathBuf>> {
    let meta = std::fs::metadata(path)
        .map_err(|e| ServerError::Config(format!("dp_trust_anchors: {}: {e}", path.display())))?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut out = Vec::new();
    let entries = std::fs::read_dir(path)
        .map_err(|e| ServerError::Config(format!("dp_trust_anchors: {}: {e}", path.display())))?;
    for e in entries {
        let e = e.map_err(|e| {
            ServerError::Config(format!("dp_trust_anchors: {}: {e}", path.display()))
        })?;
        let p = e.path();
        let cert_ext = p
            .extension()
            .and_then(|x| x.to_str())
            .is_some_and(|x| x.eq_ignore_ascii_case("pem") || x.eq_ignore_ascii_case("crt"));
        if cert_ext && p.is_file() {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

/// The stamps (path, modification time, length) of every file the paths stand for.
fn stamps(paths: &[PathBuf]) -> ServerResult<Vec<Stamp>> {
    let mut out = Vec::new();
    for p in paths {
        for f in files_of(p)? {
            let m = std::fs::metadata(&f).map_err(|e| {
                ServerError::Config(format!("dp_trust_anchors: {}: {e}", f.display()))
            })?;
            out.push((f, m.modified().ok(), m.len()));
        }
    }
    Ok(out)
}

fn read_set(
    sandbox: bool,
    paths: &[PathBuf],
) -> ServerResult<(Vec<Stamp>, Option<Arc<TrustAnchors>>)> {
    let mut pems: Vec<Vec<u8>> = Vec::new();
    if sandbox {
        pems.push(SANDBOX_ROOT_CA.to_vec());
    }
    let mut st = Vec::new();
    for p in paths {
        let files = files_of(p)?;
        if files.is_empty() {
            return Err(ServerError::Config(format!(
                "dp_trust_anchors: {}: no .pem or .crt file in the directory",
                p.display()
            )));
        }
        for f in files {
            let named = |e: &dyn std::fmt::Display| {
                ServerError::Config(format!("dp_trust_anchors: {}: {e}", f.display()))
            };
            // Stamped before reading: a file changed while being read is read again at the
            // next check.
            let m = std::fs::metadata(&f).map_err(|e| named(&e))?;
            let bytes = std::fs::read(&f).map_err(|e| named(&e))?;
            // Each file on its own, so that the error names it.
            TrustAnchors::from_pem(&[&bytes]).map_err(|e| named(&e))?;
            st.push((f, m.modified().ok(), m.len()));
            pems.push(bytes);
        }
    }
    if pems.is_empty() {
        return Ok((st, None));
    }
    let refs: Vec<&[u8]> = pems.iter().map(Vec::as_slice).collect();
    let anchors = TrustAnchors::from_pem(&refs)
        .map_err(|e| ServerError::Config(format!("dp_trust_anchors: {e}")))?;
    Ok((st, Some(Arc::new(anchors))))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CA: &[u8] = SANDBOX_ROOT_CA;

    fn count(t: &DpTrust) -> String {
        match t.anchors() {
            Anchors::Configured(a) => format!("{a:?}"),
            Anchors::Missing => "missing".into(),
        }
    }

    #[test]
    fn nothing_configured_outside_the_sandbox_is_missing() {
        let t = DpTrust::load(false, &[]).unwrap();
        assert!(!t.is_configured());
        assert!(matches!(t.anchors(), Anchors::Missing));
        let s = DpTrust::load(true, &[]).unwrap();
        assert!(s.is_configured());
        assert_eq!(count(&s), "TrustAnchors(1 certificates)");
    }

    #[test]
    fn files_and_directories_load_and_bad_ones_stop_the_start() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("cas");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("a.pem"), CA).unwrap();
        std::fs::write(dir.join("b.crt"), CA).unwrap();
        std::fs::write(dir.join("notes.txt"), b"not a cert").unwrap();
        let t = DpTrust::load(false, std::slice::from_ref(&dir)).unwrap();
        assert_eq!(count(&t), "TrustAnchors(2 certificates)");
        // Missing path, empty directory, a file without a certificate: refused, named.
        let e = DpTrust::load(false, &[d.path().join("nope.pem")]).unwrap_err();
        assert!(e.to_string().contains("nope.pem"), "{e}");
        let empty = d.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        let e = DpTrust::load(false, &[empty]).unwrap_err();
        assert!(e.to_string().contains("no .pem or .crt"), "{e}");
        std::fs::write(dir.join("c.pem"), b"-----BEGIN NOTHING-----\n").unwrap();
        let e = DpTrust::load(false, &[dir]).unwrap_err();
        assert!(e.to_string().contains("c.pem"), "{e}");
    }

    #[test]
    fn changed_files_are_reloaded_and_a_broken_change_keeps_the_old_set() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().to_path_buf();
        std::fs::write(dir.join("a.pem"), CA).unwrap();
        let t = DpTrust::load(false, std::slice::from_ref(&dir)).unwrap();
        assert_eq!(count(&t), "TrustAnchors(1 certificates)");
        std::fs::write(dir.join("b.pem"), CA).unwrap();
        // Not looked at before RELOAD_CHECK has passed.
        assert_eq!(count(&t), "TrustAnchors(1 certificates)");
        t.state.lock().unwrap().checked -= RELOAD_CHECK;
        assert_eq!(count(&t), "TrustAnchors(2 certificates)");
        // A broken file: the previous set stays in force.
        std::fs::write(dir.join("c.pem"), b"garbage").unwrap();
        t.state.lock().unwrap().checked -= RELOAD_CHECK;
        assert_eq!(count(&t), "TrustAnchors(2 certificates)");
        // Fixed: taken up.
        std::fs::remove_file(dir.join("c.pem")).unwrap();
        std::fs::remove_file(dir.join("b.pem")).unwrap();
        t.state.lock().unwrap().checked -= RELOAD_CHECK;
        assert_eq!(count(&t), "TrustAnchors(1 certificates)");
    }
}
