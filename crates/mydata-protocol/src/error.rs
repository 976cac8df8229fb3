//! The one error type of the protocol core.
//!
//! Every fallible function of this crate returns [`Error`]. Each variant says
//! what was wrong in words a DP or SP developer can act on; the mapping from a
//! variant to the platform's return code lives in [`crate::codes`]
//! ([`Error::return_code`]), and nowhere else.

use std::fmt;

/// Which identifier or value failed validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdKind {
    /// `client_id` (`CLI.` + 10 alphanumerics).
    ClientId,
    /// `resource_id` (`API.` + 10 alphanumerics).
    ResourceId,
    /// `tx_id` chosen by the SP.
    TxId,
    /// `permission_ticket` (UUID v4).
    PermissionTicket,
    /// `client_secret` / `resource_secret` (16 alphanumerics).
    ClientSecret,
    /// `secret_key` (32 alphanumerics).
    SecretKey,
    /// `cbc_iv` (16 printable ASCII characters).
    CbcIv,
    /// Taiwanese national ID (身分證統一編號).
    NationalId,
    /// Resident certificate number (居留證統一證號), old or new format.
    ResidentCertificate,
    /// Business number (統一編號) of a legal person.
    BusinessNumber,
    /// A date (ROC or Gregorian).
    Date,
    /// A scope string.
    Scope,
    /// A `caseNumber`.
    CaseNumber,
}

impl fmt::Display for IdKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IdKind::ClientId => "client_id",
            IdKind::ResourceId => "resource_id",
            IdKind::TxId => "tx_id",
            IdKind::PermissionTicket => "permission_ticket",
            IdKind::ClientSecret => "client_secret",
            IdKind::SecretKey => "secret_key",
            IdKind::CbcIv => "cbc_iv",
            IdKind::NationalId => "national ID",
            IdKind::ResidentCertificate => "resident certificate number",
            IdKind::BusinessNumber => "business number",
            IdKind::Date => "date",
            IdKind::Scope => "scope",
            IdKind::CaseNumber => "caseNumber",
        })
    }
}

/// Errors of the protocol core.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    // --- identifiers -------------------------------------------------------
    /// An identifier does not have the documented form.
    #[error("invalid {kind}: {reason}")]
    InvalidId {
        /// What was being parsed.
        kind: IdKind,
        /// Why it was refused.
        reason: &'static str,
    },
    /// An identifier has the right form but its check digit is wrong.
    #[error("invalid {kind}: check digit does not match")]
    CheckDigit {
        /// What was being parsed.
        kind: IdKind,
    },

    // --- resources path segment -------------------------------------------
    /// The `{resources}` path segment is not valid Base64 / not valid UTF-8 / empty / too long.
    #[error("malformed resources segment: {0}")]
    MalformedResources(&'static str),
    /// The same `resource_id` appears twice in the `{resources}` segment.
    #[error("duplicate resource_id {0} in the resources segment")]
    DuplicateResource(String),
    /// A `resource_id` is not registered for the service.
    #[error("resource_id {0} is not registered for this service")]
    ResourceNotAllowed(String),

    // --- parameter encryption ---------------------------------------------
    /// The key material has the wrong size.
    #[error("wrong key size: {what} must be {expected} bytes, got {got}")]
    KeySize {
        /// Which key or IV.
        what: &'static str,
        /// Required size in bytes.
        expected: usize,
        /// Size given.
        got: usize,
    },
    /// An encrypted parameter is not valid Base64.
    #[error("encrypted parameter is not valid Base64")]
    ParamBase64,
    /// Decryption failed: wrong key or IV, bad padding, or a failed GCM tag.
    #[error("encrypted parameter does not decrypt: {0}")]
    ParamDecrypt(&'static str),

    // --- JWE -----------------------------------------------------------------
    /// The JWE is malformed, uses an algorithm other than the registered one, carries a `zip` or
    /// `crit` header parameter, or does not decrypt.
    #[error("JWE: {0}")]
    Jwe(String),
    /// The decrypted JWE payload is not the documented `{filename, data}` object.
    #[error("JWE payload: {0}")]
    JwePayload(String),

    // --- packages ------------------------------------------------------------
    /// The zip container itself cannot be read.
    #[error("zip: {0}")]
    Zip(String),
    /// An entry name is absolute, contains `..`, a drive letter, a control character, etc.
    #[error("unsafe entry name {name:?}: {reason}")]
    UnsafeEntryName {
        /// The entry name as found.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// Two entries (or two manifest lines) carry the same name.
    #[error("duplicate entry {0:?}")]
    DuplicateEntry(String),
    /// More entries than the configured limit.
    #[error("too many entries: more than {limit}")]
    TooManyEntries {
        /// The configured limit.
        limit: usize,
    },
    /// More uncompressed bytes than the configured limit.
    #[error("too much data: {what} exceeds {limit} bytes")]
    TooLarge {
        /// What exceeded the limit.
        what: String,
        /// The configured limit in bytes.
        limit: u64,
    },
    /// An entry inflates far beyond its compressed size, or beyond its declared size.
    #[error("zip bomb suspected in {name:?}: {reason}")]
    ZipBomb {
        /// The entry.
        name: String,
        /// Which rule tripped.
        reason: String,
    },
    /// A required metadata entry is missing.
    #[error("missing {0}")]
    MissingMetadata(&'static str),
    /// The signing certificate cannot be parsed.
    #[error("certificate: {0}")]
    Certificate(String),
    /// The signing certificate is not valid at the verification time.
    #[error("certificate not valid at {at}: valid from {not_before} to {not_after}")]
    CertificateExpired {
        /// Verification time (UTC unix seconds).
        at: i64,
        /// Start of validity (as printed by the certificate).
        not_before: String,
        /// End of validity.
        not_after: String,
    },
    /// The signing certificate does not chain to a configured trust anchor.
    #[error("certificate does not chain to a trusted anchor: {0}")]
    UntrustedCertificate(String),
    /// The manifest signature does not verify.
    #[error("manifest signature does not verify")]
    BadSignature,
    /// The manifest XML is malformed.
    #[error("manifest.xml: {0}")]
    Manifest(String),
    /// The manifest carries a DTD (`<!DOCTYPE`), which is refused.
    #[error("manifest.xml carries a DTD, which is refused")]
    XmlDtd,
    /// The manifest uses an entity other than the five predefined ones.
    #[error("manifest.xml uses entity &{0};, which is refused")]
    XmlEntity(String),
    /// A data file does not match its digest.
    #[error("digest mismatch for {0:?}")]
    DigestMismatch(String),
    /// The manifest lists a file the zip does not hold.
    #[error("file {0:?} is listed in the manifest but missing from the package")]
    MissingFile(String),
    /// The zip holds a file the manifest does not list.
    #[error("file {0:?} is in the package but not listed in the manifest")]
    ExtraFile(String),
    /// A file name given to a package builder is not acceptable.
    #[error("cannot package {name:?}: {reason}")]
    BadFileName {
        /// The name.
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// A DP package inside an SP package fails verification.
    #[error("dataset {resource_id}: {source}")]
    Dataset {
        /// The dataset whose DP package failed.
        resource_id: String,
        /// What failed.
        #[source]
        source: Box<Error>,
    },
    /// Signing failed inside the crypto backend (bad key, etc.).
    #[error("signing: {0}")]
    Signing(String),
    /// An I/O error from a reader or writer supplied by the caller.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// Randomness could not be obtained from the operating system.
    #[error("no randomness available: {0}")]
    Random(String),
    /// A catalogue document does not parse or breaks a rule.
    #[error("catalogue: {0}")]
    Catalogue(String),
}

impl Error {
    /// The file this error is about, when there is one (for "names the file that fails").
    pub fn file(&self) -> Option<&str> {
        match self {
            Error::DigestMismatch(f)
            | Error::MissingFile(f)
            | Error::ExtraFile(f)
            | Error::DuplicateEntry(f) => Some(f),
            Error::UnsafeEntryName { name, .. } | Error::ZipBomb { name, .. } => Some(name),
            Error::Dataset { source, .. } => source.file(),
            _ => None,
        }
    }

    /// A stable, machine-readable name of the error kind (used by `--json` outputs).
    pub fn kind(&self) -> &'static str {
        match self {
            Error::InvalidId { .. } => "invalid_id",
            Error::CheckDigit { .. } => "check_digit",
            Error::MalformedResources(_) => "malformed_resources",
            Error::DuplicateResource(_) => "duplicate_resource",
            Error::ResourceNotAllowed(_) => "resource_not_allowed",
            Error::KeySize { .. } => "key_size",
            Error::ParamBase64 => "param_base64",
            Error::ParamDecrypt(_) => "param_decrypt",
            Error::Jwe(_) => "jwe",
            Error::JwePayload(_) => "jwe_payload",
            Error::Zip(_) => "zip",
            Error::UnsafeEntryName { .. } => "unsafe_entry_name",
            Error::DuplicateEntry(_) => "duplicate_entry",
            Error::TooManyEntries { .. } => "too_many_entries",
            Error::TooLarge { .. } => "too_large",
            Error::ZipBomb { .. } => "zip_bomb",
            Error::MissingMetadata(_) => "missing_metadata",
            Error::Certificate(_) => "certificate",
            Error::CertificateExpired { .. } => "certificate_expired",
            Error::UntrustedCertificate(_) => "untrusted_certificate",
            Error::BadSignature => "bad_signature",
            Error::Manifest(_) => "manifest",
            Error::XmlDtd => "xml_dtd",
            Error::XmlEntity(_) => "xml_entity",
            Error::DigestMismatch(_) => "digest_mismatch",
            Error::MissingFile(_) => "missing_file",
            Error::ExtraFile(_) => "extra_file",
            Error::BadFileName { .. } => "bad_file_name",
            Error::Dataset { source, .. } => source.kind(),
            Error::Signing(_) => "signing",
            Error::Io(_) => "io",
            Error::Random(_) => "random",
            Error::Catalogue(_) => "catalogue",
        }
    }

    pub(crate) fn invalid(kind: IdKind, reason: &'static str) -> Self {
        Error::InvalidId { kind, reason }
    }
}

/// Result alias of the protocol core.
pub type Result<T, E = Error> = std::result::Result<T, E>;
