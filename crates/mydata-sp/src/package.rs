//! The delivered package (spec protocol.md §11–§12, packages.md §3, §5.2): JWE decryption,
//! verification of the SP package and of every DP package in it, and the datasets' files.
//!
//! ```no_run
//! # use mydata_sp::SpConfig;
//! # use mydata_sp::package::Expectations;
//! # use mydata_protocol::ids::SecretKey;
//! # use mydata_protocol::package::dp::TrustAnchors;
//! # fn demo(sp: &SpConfig, jwe: &str, key: &SecretKey, trust: &TrustAnchors) -> Result<(), mydata_sp::package::PackageError> {
//! let delivered = sp.open_package(jwe, key, &Expectations::now().trust(trust))?;
//! for d in &delivered.datasets {
//!     println!("{} code {} verified {}", d.resource_id, d.code, d.verification.is_verified());
//!     for f in &d.files {
//!         println!("  {} ({} bytes)", f.name, f.bytes.len());
//!     }
//! }
//! # Ok(()) }
//! ```

use std::io::{Cursor, Read};
use std::time::SystemTime;

use mydata_protocol::codes::DatasetCode;
use mydata_protocol::date::UnixTime;
use mydata_protocol::ids::{CbcIv, ClientId, ResourceId, SecretKey};
use mydata_protocol::jwe::{self, JweMode};
use mydata_protocol::package::Limits;
use mydata_protocol::package::dp::{TrustAnchors, VerifiedPackage, VerifyOptions};
use mydata_protocol::package::sp::{self, DatasetReport, PackagingMode};

use crate::config::SpConfig;

/// Why a delivered package was refused, or why one dataset of it fails.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PackageError {
    /// The JWE is malformed, uses another algorithm than the registered one, carries a `zip` or
    /// `crit` header parameter, does not decrypt (wrong key or tampered), or its payload is not
    /// `{"filename":"{client_id}.zip", "data":…}`.
    #[error("JWE: {0}")]
    Jwe(#[source] mydata_protocol::Error),
    /// The JWE content IV is not the SP's `cbc_iv` (checked only on request).
    #[error("the JWE content IV is not the SP's cbc_iv")]
    ContentIv,
    /// The SP package itself is refused (zip structure, limits, names, manifest, missing or extra
    /// entries; packages.md §5.2 steps 1–3 and 5).
    #[error("SP package: {0}")]
    Package(#[source] mydata_protocol::Error),
    /// The manifest's datasets are not the requested ones in request order (§5.2 step 4).
    #[error("the package lists {got:?}, not the requested {expected:?}")]
    NotRequested {
        /// The requested ids.
        expected: Vec<String>,
        /// The ids in the manifest.
        got: Vec<String>,
    },
    /// The manifest breaks a rule of the registered packaging mode (§5.2 step 3).
    #[error("packaging mode {mode:?}: {reason}")]
    PackagingMode {
        /// The registered mode.
        mode: PackagingMode,
        /// The rule broken.
        reason: String,
    },
    /// A DP package inside fails verification (§5.2 step 6, packages.md §5.1).
    #[error("dataset {resource_id}: {source}")]
    Dataset {
        /// The dataset.
        resource_id: String,
        /// The inner failure.
        #[source]
        source: mydata_protocol::Error,
    },
    /// A verified file could not be read back out of its package.
    #[error("dataset {resource_id}: cannot read {file:?}: {reason}")]
    Extract {
        /// The dataset.
        resource_id: String,
        /// The file.
        file: String,
        /// What failed.
        reason: String,
    },
}

impl PackageError {
    /// A stable, machine-readable kind, as in packages.md §6 (the inner kind for a dataset).
    pub fn kind(&self) -> &'static str {
        match self {
            PackageError::Jwe(e) => e.kind(),
            PackageError::ContentIv => "jwe_content_iv",
            PackageError::Package(e) | PackageError::Dataset { source: e, .. } => e.kind(),
            PackageError::NotRequested { .. } | PackageError::PackagingMode { .. } => "manifest",
            PackageError::Extract { .. } => "zip",
        }
    }

    /// The dataset this error is about, if any.
    pub fn resource_id(&self) -> Option<&str> {
        match self {
            PackageError::Dataset { resource_id, .. }
            | PackageError::Extract { resource_id, .. } => Some(resource_id),
            _ => None,
        }
    }
}

/// Decrypts a MyData-API JWE into the SP package zip (§12): only `mode`'s `alg`/`enc`, no `zip`
/// and no `crit` header parameter, and the payload's filename must be `{client_id}.zip`. With `content_iv`, the JWE
/// content IV must also equal it (for SPs that insist on the platform's `cbc_iv` convention).
pub fn decrypt(
    compact: &str,
    key: &SecretKey,
    mode: JweMode,
    client_id: &ClientId,
    content_iv: Option<&CbcIv>,
) -> Result<Vec<u8>, PackageError> {
    if let Some(iv) = content_iv {
        let got = jwe::content_iv(compact).map_err(PackageError::Jwe)?;
        if got != iv.as_str().as_bytes() {
            return Err(PackageError::ContentIv);
        }
    }
    let d = jwe::decrypt_package(compact, key, mode, Some(client_id)).map_err(PackageError::Jwe)?;
    Ok(d.zip)
}

/// What the SP expects of a package.
#[derive(Debug, Clone, Copy)]
pub struct Expectations<'a> {
    /// The requested datasets in request order; checked when given (§5.2 step 4).
    pub requested: Option<&'a [ResourceId]>,
    /// The registered packaging mode; its rules are checked when given (§5.2 step 3).
    pub packaging_mode: Option<PackagingMode>,
    /// Trust anchors for the DP certificates; without them, no chain is checked.
    pub trust: Option<&'a TrustAnchors>,
    /// The time at which the DP certificates must be valid.
    pub at: UnixTime,
    /// Resource limits (packages.md D6).
    pub limits: Limits,
}

impl<'a> Expectations<'a> {
    /// Nothing expected beyond the package's own consistency, at time `at`, default limits.
    pub fn at(at: UnixTime) -> Self {
        Expectations {
            requested: None,
            packaging_mode: None,
            trust: None,
            at,
            limits: Limits::default(),
        }
    }

    /// Like [`Expectations::at`], at the current time.
    pub fn now() -> Self {
        let secs = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        Self::at(UnixTime(secs))
    }

    /// Sets the trust anchors.
    pub fn trust(mut self, trust: &'a TrustAnchors) -> Self {
        self.trust = Some(trust);
        self
    }

    /// Sets the requested datasets.
    pub fn requested(mut self, ids: &'a [ResourceId]) -> Self {
        self.requested = Some(ids);
        self
    }

    /// Sets the packaging mode.
    pub fn packaging_mode(mut self, mode: PackagingMode) -> Self {
        self.packaging_mode = Some(mode);
        self
    }
}

/// The verification outcome of one dataset.
#[derive(Debug)]
pub enum Verification {
    /// No file ships for this dataset (no data, a failure, or withheld by mode A).
    NotShipped,
    /// The DP package verified.
    Verified(Box<VerifiedPackage>),
    /// The DP package failed; its files are not offered.
    Failed(PackageError),
}

impl Verification {
    /// Whether the DP package verified.
    pub fn is_verified(&self) -> bool {
        matches!(self, Verification::Verified(_))
    }

    /// Whether nothing is wrong: no package shipped, or it verified.
    pub fn ok(&self) -> bool {
        !matches!(self, Verification::Failed(_))
    }

    /// The failure, if any.
    pub fn error(&self) -> Option<&PackageError> {
        match self {
            Verification::Failed(e) => Some(e),
            _ => None,
        }
    }
}

/// One data file of a verified DP package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataFile {
    /// Its path inside the DP package.
    pub name: String,
    /// Its bytes.
    pub bytes: Vec<u8>,
    /// Its SHA-256 (lowercase hex), as verified against the signed manifest.
    pub digest: String,
}

/// One dataset of the delivered package, in manifest (request) order.
#[derive(Debug)]
pub struct DatasetData {
    /// The dataset.
    pub resource_id: ResourceId,
    /// Its name as registered.
    pub resource_name: String,
    /// The per-dataset code (200 delivered, 204 no data, 403, 408, 500, 501, 504, …).
    pub code: u16,
    /// Whether its DP package verified.
    pub verification: Verification,
    /// The data files, in the DP manifest's order; empty unless the package verified.
    pub files: Vec<DataFile>,
}

impl DatasetData {
    /// The code as a [`DatasetCode`]; `None` for a code the protocol does not define (a failure).
    pub fn dataset_code(&self) -> Option<DatasetCode> {
        DatasetCode::from_wire(self.code)
    }

    /// Whether the code counts as a failure (anything but 200 and 204).
    pub fn is_failure(&self) -> bool {
        self.dataset_code().is_none_or(DatasetCode::is_failure)
    }
}

/// A decrypted and verified SP package.
#[derive(Debug)]
pub struct Delivered {
    /// Every dataset of the manifest, in order.
    pub datasets: Vec<DatasetData>,
}

impl Delivered {
    /// Whether every shipped DP package verified.
    pub fn verified(&self) -> bool {
        self.datasets.iter().all(|d| d.verification.ok())
    }

    /// The first dataset failure, if any.
    pub fn first_failure(&self) -> Option<&PackageError> {
        self.datasets.iter().find_map(|d| d.verification.error())
    }

    /// The dataset `id`.
    pub fn dataset(&self, id: &ResourceId) -> Option<&DatasetData> {
        self.datasets.iter().find(|d| &d.resource_id == id)
    }

    /// The delivered package only if every shipped DP package verified; otherwise the first
    /// failure.
    pub fn into_verified(mut self) -> Result<Self, PackageError> {
        let bad = self.datasets.iter().position(|d| !d.verification.ok());
        match bad {
            None => Ok(self),
            Some(i) => {
                let d = self.datasets.swap_remove(i);
                match d.verification {
                    Verification::Failed(e) => Err(e),
                    _ => Ok(self),
                }
            }
        }
    }
}

fn check_mode(mode: PackagingMode, reports: &[DatasetReport]) -> Result<(), PackageError> {
    let err = |reason: String| PackageError::PackagingMode { mode, reason };
    match mode {
        PackagingMode::A => {
            let any_file = reports.iter().any(|r| !r.entry.filename.is_empty());
            let failure = reports
                .iter()
                .find(|r| DatasetCode::from_wire(r.entry.code).is_none_or(DatasetCode::is_failure));
            if let (true, Some(f)) = (any_file, failure) {
                return Err(err(format!(
                    "{} failed with code {} but files were shipped",
                    f.entry.resource_id, f.entry.code
                )));
            }
        }
        PackagingMode::B => {
            if let Some(r) = reports.iter().find(|r| {
                r.entry.code == DatasetCode::Delivered.wire() && r.entry.filename.is_empty()
            }) {
                return Err(err(format!(
                    "{} has code 200 but no file",
                    r.entry.resource_id
                )));
            }
        }
    }
    Ok(())
}

fn read_entry<R: Read + std::io::Seek>(
    zip: &mut zip::ZipArchive<R>,
    name: &str,
    size_hint: u64,
) -> Result<Vec<u8>, String> {
    let f = zip.by_name(name).map_err(|e| e.to_string())?;
    let declared = f.size();
    let limit = declared.max(size_hint);
    let mut out = Vec::new();
    f.take(limit.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| e.to_string())?;
    if out.len() as u64 != declared {
        return Err(format!(
            "read {} bytes, the entry declares {declared}",
            out.len()
        ));
    }
    Ok(out)
}

fn extract(
    outer: &mut zip::ZipArchive<Cursor<&[u8]>>,
    filename: &str,
    rid: &str,
    pkg: &VerifiedPackage,
) -> Result<Vec<DataFile>, PackageError> {
    let err = |file: &str, reason: String| PackageError::Extract {
        resource_id: rid.to_owned(),
        file: file.to_owned(),
        reason,
    };
    let inner_bytes = read_entry(outer, filename, 0).map_err(|r| err(filename, r))?;
    let mut inner =
        zip::ZipArchive::new(Cursor::new(inner_bytes)).map_err(|e| err(filename, e.to_string()))?;
    pkg.files
        .iter()
        .map(|vf| {
            let bytes = read_entry(&mut inner, &vf.name, vf.size).map_err(|r| err(&vf.name, r))?;
            if bytes.len() as u64 != vf.size {
                return Err(err(&vf.name, "size differs from the verified size".into()));
            }
            Ok(DataFile {
                name: vf.name.clone(),
                bytes,
                digest: vf.digest.clone(),
            })
        })
        .collect()
}

/// Verifies an SP package (packages.md §5.2) and reads the files of every DP package that
/// verifies. A structural fault, a mode rule or a request mismatch fails the whole call; a DP
/// package that fails is reported in its dataset (see [`Delivered::verified`]).
pub fn verify(zip: &[u8], exp: &Expectations<'_>) -> Result<Delivered, PackageError> {
    let opts = VerifyOptions {
        at: exp.at,
        trust: exp.trust,
        limits: exp.limits,
    };
    let reports = sp::verify(Cursor::new(zip), &opts).map_err(PackageError::Package)?;
    if let Some(requested) = exp.requested {
        let got: Vec<&str> = reports
            .iter()
            .map(|r| r.entry.resource_id.as_str())
            .collect();
        let expected: Vec<&str> = requested.iter().map(ResourceId::as_str).collect();
        if got != expected {
            return Err(PackageError::NotRequested {
                expected: expected.into_iter().map(str::to_owned).collect(),
                got: got.into_iter().map(str::to_owned).collect(),
            });
        }
    }
    if let Some(mode) = exp.packaging_mode {
        check_mode(mode, &reports)?;
    }
    let mut outer = zip::ZipArchive::new(Cursor::new(zip))
        .map_err(|e| PackageError::Package(mydata_protocol::Error::Zip(e.to_string())))?;
    let mut datasets = Vec::with_capacity(reports.len());
    for r in reports {
        // sp::verify has checked every resource_id.
        let resource_id: ResourceId = r.entry.resource_id.parse().map_err(PackageError::Package)?;
        let (verification, files) = match r.package {
            None => (Verification::NotShipped, Vec::new()),
            Some(Err(e)) => {
                let source = match e {
                    mydata_protocol::Error::Dataset { source, .. } => *source,
                    other => other,
                };
                (
                    Verification::Failed(PackageError::Dataset {
                        resource_id: resource_id.to_string(),
                        source,
                    }),
                    Vec::new(),
                )
            }
            Some(Ok(pkg)) => {
                match extract(&mut outer, &r.entry.filename, resource_id.as_str(), &pkg) {
                    Ok(files) => (Verification::Verified(Box::new(pkg)), files),
                    Err(e) => (Verification::Failed(e), Vec::new()),
                }
            }
        };
        datasets.push(DatasetData {
            resource_id,
            resource_name: r.entry.resource_name,
            code: r.entry.code,
            verification,
            files,
        });
    }
    Ok(Delivered { datasets })
}

impl SpConfig {
    /// Decrypts a MyData-API JWE with this SP's `client_id` and JWE mode, then verifies the
    /// package. The registered packaging mode is checked when `exp` names none and the
    /// configuration knows it.
    pub fn open_package(
        &self,
        compact: &str,
        key: &SecretKey,
        exp: &Expectations<'_>,
    ) -> Result<Delivered, PackageError> {
        let zip = decrypt(compact, key, self.jwe_mode, &self.client_id, None)?;
        let mut exp = *exp;
        if exp.packaging_mode.is_none() {
            exp.packaging_mode = self.packaging_mode;
        }
        verify(&zip, &exp)
    }
}
