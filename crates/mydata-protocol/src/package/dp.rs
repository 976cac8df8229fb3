//! The DP package (brief §6, §9.6; spec D7–D9): build, sign and verify.
//!
//! ```text
//! package.zip
//! ├── <data files>                     json / pdf / csv …
//! └── META-INFO/
//!     ├── manifest.xml                 SHA-256 of every data file
//!     ├── manifest.sha256withrsa       RSA PKCS#1 v1.5 / SHA-256 over manifest.xml
//!     └── certificate.cer              the DP's signing certificate (PEM)
//! ```

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Read, Seek, Write};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use base64::Engine;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use openssl::asn1::Asn1Time;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private, Public};
use openssl::sign::{Signer, Verifier};
use openssl::stack::Stack;
use openssl::x509::store::{X509Store, X509StoreBuilder};
use openssl::x509::verify::X509VerifyFlags;
use openssl::x509::{X509, X509StoreContext};
use serde::Serialize;
use sha2::{Digest, Sha256};
use zip::write::SimpleFileOptions;

use super::manifest::{self, DpManifestEntry};
use super::names::{self, CERTIFICATE, MANIFEST, SIGNATURE};
use super::{CHUNK, EntryInfo, Limits, read_small, scan, zip_io};
use crate::date::UnixTime;
use crate::error::{Error, Result};

fn ssl(e: openssl::error::ErrorStack) -> Error {
    Error::Certificate(e.to_string())
}

/// A parsed X.509 certificate, PEM or DER.
fn parse_cert(bytes: &[u8]) -> Result<X509> {
    parse_certs(bytes).map(|(leaf, _)| leaf)
}

/// The signer's certificate and any further PEM certificates (untrusted intermediates, spec D8).
fn parse_certs(bytes: &[u8]) -> Result<(X509, Vec<X509>)> {
    let trimmed = bytes.trim_ascii_start();
    if trimmed.starts_with(b"-----BEGIN") {
        let mut all = X509::stack_from_pem(trimmed).map_err(ssl)?.into_iter();
        let leaf = all
            .next()
            .ok_or_else(|| Error::Certificate("no certificate in PEM".into()))?;
        Ok((leaf, all.collect()))
    } else {
        Ok((X509::from_der(bytes).map_err(ssl)?, Vec::new()))
    }
}

fn name_text(n: &openssl::x509::X509NameRef) -> String {
    n.entries()
        .filter_map(|e| {
            let k = e.object().nid().short_name().ok()?;
            let v = e.data().to_string().ok()?;
            Some(format!("{k}={v}"))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The key and certificate a DP signs packages with.
pub struct DpSigner {
    key: PKey<Private>,
    cert: X509,
    cert_pem: Vec<u8>,
}

impl std::fmt::Debug for DpSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DpSigner")
            .field("subject", &name_text(self.cert.subject_name()))
            .finish_non_exhaustive()
    }
}

impl DpSigner {
    /// A signer from a PEM private key (PKCS#8 or PKCS#1) and its PEM certificate.
    ///
    /// Refuses a key that is not RSA of at least 2048 bits, or that does not match the certificate.
    pub fn from_pem(key_pem: &[u8], cert_pem: &[u8]) -> Result<Self> {
        let key = PKey::private_key_from_pem(key_pem)
            .map_err(|e| Error::Signing(format!("private key: {e}")))?;
        let rsa = key
            .rsa()
            .map_err(|_| Error::Signing("the key is not an RSA key".into()))?;
        if rsa.size() < 256 {
            return Err(Error::Signing(
                "RSA keys under 2048 bits are refused".into(),
            ));
        }
        let cert = parse_cert(cert_pem)?;
        let public = cert.public_key().map_err(ssl)?;
        if !key.public_eq(&public) {
            return Err(Error::Signing(
                "the key does not match the certificate".into(),
            ));
        }
        let cert_pem = cert.to_pem().map_err(ssl)?;
        Ok(DpSigner {
            key,
            cert,
            cert_pem,
        })
    }

    /// Signs bytes with SHA256withRSA (PKCS#1 v1.5).
    pub fn sign(&self, data: &[u8]) -> Result<Vec<u8>> {
        let mut s = Signer::new(MessageDigest::sha256(), &self.key)
            .map_err(|e| Error::Signing(e.to_string()))?;
        s.sign_oneshot_to_vec(data)
            .map_err(|e| Error::Signing(e.to_string()))
    }

    /// The certificate in PEM.
    pub fn certificate_pem(&self) -> &[u8] {
        &self.cert_pem
    }
}

/// How the signature entry is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SignatureEncoding {
    /// Raw signature bytes (current DPs).
    #[default]
    Binary,
    /// Base64 text (older DPs).
    Base64,
}

/// How a data file is compressed in the package.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FileCompression {
    /// Stored for already-compressed formats (pdf, zip, images), deflated otherwise.
    #[default]
    Auto,
    /// Always deflate.
    Deflate,
    /// Always store.
    Store,
}

/// Options of [`DpPackageBuilder`].
#[derive(Debug, Clone, Copy, Default)]
pub struct BuildOptions {
    /// Signature entry encoding.
    pub signature: SignatureEncoding,
    /// Write `META-INFO\name` (legacy backslash form) instead of `META-INFO/name`.
    pub backslash_meta: bool,
    /// Data file compression.
    pub compression: FileCompression,
}

/// Streams data files into a signed DP package.
pub struct DpPackageBuilder<'s, W: Write + Seek> {
    zip: zip::ZipWriter<W>,
    signer: &'s DpSigner,
    opts: BuildOptions,
    entries: Vec<DpManifestEntry>,
}

impl<'s, W: Write + Seek> DpPackageBuilder<'s, W> {
    /// A builder writing to `out`.
    pub fn new(out: W, signer: &'s DpSigner, opts: BuildOptions) -> Self {
        DpPackageBuilder {
            zip: zip::ZipWriter::new(out),
            signer,
            opts,
            entries: Vec::new(),
        }
    }

    /// Adds one data file, streaming it from `data` while hashing.
    pub fn add_file(&mut self, name: &str, data: &mut dyn Read) -> Result<&mut Self> {
        names::check(name).map_err(|_| Error::BadFileName {
            name: name.into(),
            reason: "unsafe path (spec D7)",
        })?;
        if name.ends_with('/') {
            return Err(Error::BadFileName {
                name: name.into(),
                reason: "a directory is not a data file",
            });
        }
        if name.starts_with("META-INFO/") || name == names::META_DIR {
            return Err(Error::BadFileName {
                name: name.into(),
                reason: "META-INFO/ is reserved",
            });
        }
        if self.entries.iter().any(|e| e.filename == name) {
            return Err(Error::BadFileName {
                name: name.into(),
                reason: "added twice",
            });
        }
        let lower = name.to_ascii_lowercase();
        let store = match self.opts.compression {
            FileCompression::Store => true,
            FileCompression::Deflate => false,
            FileCompression::Auto => [".pdf", ".zip", ".png", ".jpg", ".jpeg", ".gz"]
                .iter()
                .any(|x| lower.ends_with(x)),
        };
        let method = if store {
            zip::CompressionMethod::Stored
        } else {
            zip::CompressionMethod::Deflated
        };
        let options = SimpleFileOptions::default()
            .compression_method(method)
            .large_file(true);
        self.zip
            .start_file(name, options)
            .map_err(|e| Error::Zip(e.to_string()))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = data.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            self.zip.write_all(&buf[..n])?;
        }
        self.entries.push(DpManifestEntry {
            filename: name.to_owned(),
            digest: hex::encode(hasher.finalize()),
        });
        Ok(self)
    }

    /// Writes the manifest, its signature and the certificate, and returns the writer.
    pub fn finish(mut self) -> Result<W> {
        let manifest = manifest::write_dp(&self.entries);
        let sig = self.signer.sign(manifest.as_bytes())?;
        let sig = match self.opts.signature {
            SignatureEncoding::Binary => sig,
            SignatureEncoding::Base64 => STANDARD.encode(sig).into_bytes(),
        };
        let meta = |n: &str| {
            if self.opts.backslash_meta {
                n.replace('/', "\\")
            } else {
                n.to_owned()
            }
        };
        let deflate =
            SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
        for (name, bytes) in [
            (MANIFEST, manifest.as_bytes()),
            (SIGNATURE, &sig[..]),
            (CERTIFICATE, self.signer.certificate_pem()),
        ] {
            self.zip
                .start_file(meta(name), deflate)
                .map_err(|e| Error::Zip(e.to_string()))?;
            self.zip.write_all(bytes)?;
        }
        self.zip.finish().map_err(|e| Error::Zip(e.to_string()))
    }
}

/// The most signer-certificate files a [`TrustAnchors`] keeps parsed.
const CERT_CACHE_ENTRIES: usize = 256;

/// A parsed signer-certificate file: the leaf and any further certificates after it.
type ParsedCerts = (X509, Vec<X509>);

/// Parsed signer-certificate files keyed by the SHA-256 of their bytes, at most
/// [`CERT_CACHE_ENTRIES`]; when full, one arbitrary entry is dropped. Parsing X.509 is the
/// dearest step of a verification, and a DP signs every package with the same file: the same
/// bytes always parse to the same certificates, so a hit changes nothing but the time taken.
/// Validity and chain are still checked on every verification.
#[derive(Default)]
struct CertCache {
    parsed: HashMap<[u8; 32], ParsedCerts>,
}

impl CertCache {
    fn get(&self, key: &[u8; 32]) -> Option<ParsedCerts> {
        self.parsed.get(key).cloned()
    }

    fn insert(&mut self, key: [u8; 32], certs: ParsedCerts) {
        if self.parsed.len() >= CERT_CACHE_ENTRIES && !self.parsed.contains_key(&key) {
            let evicted = self.parsed.keys().next().copied();
            if let Some(k) = evicted {
                self.parsed.remove(&k);
            }
        }
        self.parsed.insert(key, certs);
    }
}

/// Certificates a verifier trusts as anchors (roots or intermediates).
///
/// It also remembers, for the verifications made with it, the parsed signer-certificate files
/// (keyed by the SHA-256 of their bytes, bounded) and the last verification store built (keyed
/// by the verification time, which the store carries): keep one `TrustAnchors` for many
/// verifications. Both caches are behind locks, so one value may be shared between threads.
pub struct TrustAnchors {
    certs: Vec<X509>,
    parsed: Mutex<CertCache>,
    store: Mutex<Option<(UnixTime, Arc<X509Store>)>>,
    /// Signer-certificate files (SHA-256 of their bytes) whose chain verified at one time.
    chains: Mutex<Option<(UnixTime, HashSet<[u8; 32]>)>>,
}

impl std::fmt::Debug for TrustAnchors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TrustAnchors({} certificates)", self.certs.len())
    }
}

/// The data behind a lock, also when another thread panicked while holding it: the caches
/// hold only complete values, so they are never left half-written.
fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl TrustAnchors {
    /// Anchors from one or more PEM documents (each may hold several certificates).
    pub fn from_pem(pems: &[&[u8]]) -> Result<Self> {
        let mut certs = Vec::new();
        for p in pems {
            certs.extend(X509::stack_from_pem(p).map_err(ssl)?);
        }
        if certs.is_empty() {
            return Err(Error::Certificate(
                "no certificate in the trust anchor file".into(),
            ));
        }
        Ok(TrustAnchors {
            certs,
            parsed: Mutex::new(CertCache::default()),
            store: Mutex::new(None),
            chains: Mutex::new(None),
        })
    }

    /// The signer-certificate file parsed, from the cache when these bytes were seen before.
    fn parse_certs(&self, bytes: &[u8]) -> Result<ParsedCerts> {
        let key: [u8; 32] = Sha256::digest(bytes).into();
        if let Some(hit) = locked(&self.parsed).get(&key) {
            return Ok(hit);
        }
        let parsed = parse_certs(bytes)?;
        locked(&self.parsed).insert(key, parsed.clone());
        Ok(parsed)
    }

    /// Whether the chain of the signer-certificate file with this digest verified at `at`.
    /// The same bytes against the same anchors at the same second always get the same answer
    /// from OpenSSL, so under load a DP's chain is checked once a second, not once a package;
    /// only successes are remembered, and only for the last time seen.
    fn chain_verified(&self, key: &[u8; 32], at: UnixTime) -> bool {
        locked(&self.chains)
            .as_ref()
            .is_some_and(|(t, set)| *t == at && set.contains(key))
    }

    fn remember_chain(&self, key: [u8; 32], at: UnixTime) {
        let mut c = locked(&self.chains);
        match c.as_mut() {
            Some((t, set)) if *t == at => {
                if set.len() < CERT_CACHE_ENTRIES {
                    set.insert(key);
                }
            }
            _ => *c = Some((at, HashSet::from([key]))),
        }
    }

    /// The verification store for `at`: the one built last when it was built for the same
    /// time (the openssl crate sets the time on the store, not on each verification).
    fn store_at(&self, at: UnixTime) -> Result<Arc<X509Store>> {
        if let Some((t, store)) = locked(&self.store).as_ref()
            && *t == at
        {
            return Ok(Arc::clone(store));
        }
        let store = Arc::new(self.build_store(at)?);
        *locked(&self.store) = Some((at, store.clone()));
        Ok(store)
    }

    fn build_store(&self, at: UnixTime) -> Result<X509Store> {
        let mut b = X509StoreBuilder::new().map_err(ssl)?;
        for c in &self.certs {
            b.add_cert(c.clone()).map_err(ssl)?;
        }
        let mut param = openssl::x509::verify::X509VerifyParam::new().map_err(ssl)?;
        param.set_time(at.0 as _);
        param
            .set_flags(X509VerifyFlags::PARTIAL_CHAIN)
            .map_err(ssl)?;
        b.set_param(&param).map_err(ssl)?;
        Ok(b.build())
    }
}

/// Options of [`verify`].
#[derive(Debug, Clone, Copy)]
pub struct VerifyOptions<'a> {
    /// The time at which the certificate must be valid.
    pub at: UnixTime,
    /// When set, the certificate must chain to one of these at `at`.
    pub trust: Option<&'a TrustAnchors>,
    /// Resource limits.
    pub limits: Limits,
}

impl<'a> VerifyOptions<'a> {
    /// Default limits, no trust anchors.
    pub fn at(at: UnixTime) -> Self {
        VerifyOptions {
            at,
            trust: None,
            limits: Limits::default(),
        }
    }
}

/// The DP's signing certificate, as verified.
#[derive(Debug, Clone, Serialize)]
pub struct SignerInfo {
    /// Subject distinguished name.
    pub subject: String,
    /// Issuer distinguished name.
    pub issuer: String,
    /// Serial number, hex.
    pub serial: String,
    /// Start of validity.
    pub not_before: String,
    /// End of validity.
    pub not_after: String,
    /// Whether the chain to a trust anchor was checked.
    pub chain_checked: bool,
}

/// One verified data file.
#[derive(Debug, Clone, Serialize)]
pub struct VerifiedFile {
    /// Path inside the package.
    pub name: String,
    /// Uncompressed size in bytes.
    pub size: u64,
    /// SHA-256, lowercase hex.
    pub digest: String,
}

/// A DP package that passed every check.
#[derive(Debug, Clone, Serialize)]
pub struct VerifiedPackage {
    /// Data files in manifest order.
    pub files: Vec<VerifiedFile>,
    /// The signing certificate.
    pub signer: SignerInfo,
    /// How the signature was encoded.
    pub signature_encoding: SignatureEncoding,
    /// Whether the legacy `META-INFO\` form was used.
    pub backslash_meta: bool,
    /// Total data bytes hashed.
    pub data_bytes: u64,
}

fn check_validity(cert: &X509, at: UnixTime) -> Result<()> {
    let t = Asn1Time::from_unix(at.0 as _).map_err(ssl)?;
    let nb = cert.not_before();
    let na = cert.not_after();
    let before = nb.compare(&t).map_err(ssl)? == std::cmp::Ordering::Greater;
    let after = na.compare(&t).map_err(ssl)? == std::cmp::Ordering::Less;
    if before || after {
        return Err(Error::CertificateExpired {
            at: at.0,
            not_before: nb.to_string(),
            not_after: na.to_string(),
        });
    }
    Ok(())
}

fn check_chain(
    cert: &X509,
    intermediates: Vec<X509>,
    anchors: &TrustAnchors,
    at: UnixTime,
) -> Result<()> {
    let store = anchors.store_at(at)?;
    let mut chain = Stack::new().map_err(ssl)?;
    for c in intermediates {
        chain.push(c).map_err(ssl)?;
    }
    let mut ctx = X509StoreContext::new().map_err(ssl)?;
    let (ok, why) = ctx
        .init(&store, cert, &chain, |c| {
            let ok = c.verify_cert()?;
            Ok((ok, c.error().error_string().to_owned()))
        })
        .map_err(ssl)?;
    if ok {
        Ok(())
    } else {
        Err(Error::UntrustedCertificate(why))
    }
}

fn check_signature(
    public: &PKey<Public>,
    manifest: &[u8],
    sig_entry: &[u8],
) -> Result<SignatureEncoding> {
    let rsa = public
        .rsa()
        .map_err(|_| Error::Certificate("the signing key is not RSA".into()))?;
    let modulus = rsa.size() as usize;
    if modulus < 256 {
        return Err(Error::Certificate(
            "RSA keys under 2048 bits are refused".into(),
        ));
    }
    let (sig, enc) = if sig_entry.len() == modulus {
        (sig_entry.to_vec(), SignatureEncoding::Binary)
    } else {
        let text: Vec<u8> = sig_entry
            .iter()
            .copied()
            .filter(|b| !b.is_ascii_whitespace())
            .collect();
        // Base64 text with padding optional (spec D8).
        const LENIENT: GeneralPurpose = GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
        );
        let raw = LENIENT.decode(&text).map_err(|_| Error::BadSignature)?;
        (raw, SignatureEncoding::Base64)
    };
    let mut v = Verifier::new(MessageDigest::sha256(), public).map_err(ssl)?;
    match v.verify_oneshot(&sig, manifest) {
        Ok(true) => Ok(enc),
        _ => Err(Error::BadSignature),
    }
}

/// Hashes one entry, streaming, enforcing its declared size and the package total.
pub(crate) fn hash_entry<R: Read + Seek>(
    zip: &mut zip::ZipArchive<R>,
    e: &EntryInfo,
    total: &mut u64,
    limits: &Limits,
    buf: &mut [u8],
) -> Result<String> {
    let mut f = zip
        .by_index(e.index)
        .map_err(|err| Error::Zip(err.to_string()))?;
    let mut hasher = Sha256::new();
    let mut n_entry = 0u64;
    loop {
        let n = f.read(buf).map_err(zip_io)?;
        if n == 0 {
            break;
        }
        n_entry += n as u64;
        *total += n as u64;
        if n_entry > e.size {
            return Err(Error::ZipBomb {
                name: e.name.clone(),
                reason: "inflates beyond its declared size".into(),
            });
        }
        if *total > limits.max_total_bytes {
            return Err(Error::TooLarge {
                what: "uncompressed data".into(),
                limit: limits.max_total_bytes,
            });
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Verifies a DP package in the order of spec D9; the first failure is returned.
pub fn verify<R: Read + Seek>(reader: R, opts: &VerifyOptions<'_>) -> Result<VerifiedPackage> {
    verify_inner(reader, opts, true)
}

/// Verifies a DP package as [`verify`] does, except the certificate's validity period and chain
/// (steps 3 and 4 of D9): the structure, the signature with the enclosed certificate's key, the
/// manifest and every digest. For tools that judge the certificate apart (a conformance suite
/// telling a wrong signature from an untrusted or expired certificate); a recipient uses
/// [`verify`]. `opts.trust` is ignored; `opts.at` is reported only.
pub fn verify_content<R: Read + Seek>(
    reader: R,
    opts: &VerifyOptions<'_>,
) -> Result<VerifiedPackage> {
    verify_inner(reader, opts, false)
}

fn verify_inner<R: Read + Seek>(
    reader: R,
    opts: &VerifyOptions<'_>,
    check_certificate: bool,
) -> Result<VerifiedPackage> {
    let limits = &opts.limits;
    // (1) structure, limits, names.
    let (mut zip, entries) = scan(reader, limits)?;
    let mut meta: HashMap<&'static str, &EntryInfo> = HashMap::new();
    let mut data: BTreeMap<String, &EntryInfo> = BTreeMap::new();
    let backslash_meta = entries.iter().any(|e| e.legacy_meta);
    for e in &entries {
        match [MANIFEST, SIGNATURE, CERTIFICATE]
            .into_iter()
            .find(|m| *m == e.name)
        {
            Some(m) => meta.insert(m, e),
            None => data.insert(e.name.clone(), e),
        };
    }
    // (2) metadata present.
    let get = |m: &'static str| meta.get(m).copied().ok_or(Error::MissingMetadata(m));
    let (m_e, s_e, c_e) = (get(MANIFEST)?, get(SIGNATURE)?, get(CERTIFICATE)?);
    let cert_bytes = read_small(
        &mut zip,
        c_e.index,
        limits.max_certificate_bytes,
        CERTIFICATE,
    )?;
    let sig_bytes = read_small(&mut zip, s_e.index, limits.max_signature_bytes, SIGNATURE)?;
    let manifest_bytes = read_small(&mut zip, m_e.index, limits.max_manifest_bytes, MANIFEST)?;
    // (3) certificate valid at the given time.
    let trust = opts.trust.filter(|_| check_certificate);
    let (cert, intermediates) = match trust {
        Some(anchors) => anchors.parse_certs(&cert_bytes)?,
        None => parse_certs(&cert_bytes)?,
    };
    if check_certificate {
        check_validity(&cert, opts.at)?;
    }
    // (4) chain.
    if let Some(anchors) = trust {
        let key: [u8; 32] = Sha256::digest(&cert_bytes).into();
        if !anchors.chain_verified(&key, opts.at) {
            check_chain(&cert, intermediates, anchors, opts.at)?;
            anchors.remember_chain(key, opts.at);
        }
    }
    // (5) signature over the raw manifest bytes.
    let public = cert.public_key().map_err(ssl)?;
    let signature_encoding = check_signature(&public, &manifest_bytes, &sig_bytes)?;
    // (6) the now authenticated manifest.
    let listed = manifest::parse_dp(&manifest_bytes)?;
    if listed.is_empty() {
        // A DP with no data answers 204 instead (spec D34).
        return Err(Error::Manifest("the manifest lists no file".into()));
    }
    // (7) no duplicates, nothing missing, nothing extra, every digest.
    let mut seen = std::collections::HashSet::new();
    for l in &listed {
        if !seen.insert(l.filename.as_str()) {
            return Err(Error::DuplicateEntry(l.filename.clone()));
        }
        if !data.contains_key(&l.filename) {
            return Err(Error::MissingFile(l.filename.clone()));
        }
    }
    if let Some(extra) = data.keys().find(|k| !seen.contains(k.as_str())) {
        return Err(Error::ExtraFile(extra.clone()));
    }
    // A buffer as large as the largest entry, between 8 KiB and CHUNK: a package of small
    // files (the usual case) does not allocate and zero CHUNK bytes per verification.
    let largest = listed
        .iter()
        .map(|l| data[&l.filename].size)
        .max()
        .unwrap_or(0);
    let mut buf = vec![0u8; (largest.min(CHUNK as u64) as usize).max(8 * 1024)];
    let mut total = 0u64;
    let mut files = Vec::with_capacity(listed.len());
    for l in listed {
        let e = data[&l.filename];
        let digest = hash_entry(&mut zip, e, &mut total, limits, &mut buf)?;
        if digest != l.digest {
            return Err(Error::DigestMismatch(l.filename));
        }
        files.push(VerifiedFile {
            name: l.filename,
            size: e.size,
            digest,
        });
    }
    let signer = SignerInfo {
        subject: name_text(cert.subject_name()),
        issuer: name_text(cert.issuer_name()),
        serial: cert
            .serial_number()
            .to_bn()
            .and_then(|b| b.to_hex_str())
            .map(|s| s.to_string())
            .unwrap_or_default(),
        not_before: cert.not_before().to_string(),
        not_after: cert.not_after().to_string(),
        chain_checked: trust.is_some(),
    };
    Ok(VerifiedPackage {
        files,
        signer,
        signature_encoding,
        backslash_meta,
        data_bytes: total,
    })
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;
    use std::path::PathBuf;

    use openssl::asn1::Asn1Time;
    use openssl::hash::MessageDigest;
    use openssl::pkey::PKey;
    use openssl::rsa::Rsa;
    use openssl::x509::X509;

    use super::*;

    fn pki(name: &str) -> Vec<u8> {
        let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../fixtures/pki")
            .join(name);
        std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    /// 2027-01-01, inside dp-moi's validity (2025-06-01 … 2036-01-01).
    const AT: UnixTime = UnixTime(1_798_761_600);
    /// 2036-06-01, after dp-moi's end.
    const LATER: UnixTime = UnixTime(2_096_409_600);

    fn package(signer: &DpSigner) -> Vec<u8> {
        let mut b = DpPackageBuilder::new(Cursor::new(Vec::new()), signer, BuildOptions::default());
        b.add_file("household.json", &mut &b"{\"a\":1}"[..])
            .unwrap();
        b.finish().unwrap().into_inner()
    }

    fn verify_at(pkg: &[u8], roots: &TrustAnchors, at: UnixTime) -> Result<VerifiedPackage> {
        let mut opts = VerifyOptions::at(at);
        opts.trust = Some(roots);
        verify(Cursor::new(pkg), &opts)
    }

    /// A certificate with dp-moi's subject, issuer name, serial and validity, signed by a key
    /// of its own (not the sandbox root's), with the signer for it.
    fn impostor() -> DpSigner {
        let real = X509::from_pem(&pki("dp-moi.pem")).unwrap();
        let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
        let mut b = X509::builder().unwrap();
        b.set_version(2).unwrap();
        b.set_serial_number(real.serial_number()).unwrap();
        b.set_subject_name(real.subject_name()).unwrap();
        b.set_issuer_name(real.issuer_name()).unwrap();
        b.set_pubkey(&key).unwrap();
        b.set_not_before(&Asn1Time::from_unix(1_748_736_000).unwrap())
            .unwrap();
        b.set_not_after(&Asn1Time::from_unix(2_082_758_400).unwrap())
            .unwrap();
        b.sign(&key, MessageDigest::sha256()).unwrap();
        let cert = b.build();
        DpSigner::from_pem(
            &key.private_key_to_pem_pkcs8().unwrap(),
            &cert.to_pem().unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn cached_verification_still_checks_time_and_chain() {
        let roots = TrustAnchors::from_pem(&[&pki("sandbox-root-ca.pem")]).unwrap();
        let moi = DpSigner::from_pem(&pki("dp-moi.key"), &pki("dp-moi.pem")).unwrap();
        let pkg = package(&moi);

        // First verification parses and caches; the second is a hit and still succeeds.
        assert!(verify_at(&pkg, &roots, AT).unwrap().signer.chain_checked);
        assert_eq!(locked(&roots.parsed).parsed.len(), 1);
        assert!(verify_at(&pkg, &roots, AT).is_ok());
        assert_eq!(
            locked(&roots.parsed).parsed.len(),
            1,
            "the same file is one entry"
        );

        // The cached certificate is refused at a later time, and accepted again before it.
        let e = verify_at(&pkg, &roots, LATER).unwrap_err();
        assert!(matches!(e, Error::CertificateExpired { .. }), "{e}");
        assert!(verify_at(&pkg, &roots, AT).is_ok());

        // A different certificate with the same subject is its own entry and is refused.
        let fake = impostor();
        let forged = package(&fake);
        let e = verify_at(&forged, &roots, AT).unwrap_err();
        assert!(matches!(e, Error::UntrustedCertificate(_)), "{e}");
        assert_eq!(locked(&roots.parsed).parsed.len(), 2);
        let e = verify_at(&forged, &roots, AT).unwrap_err();
        assert!(matches!(e, Error::UntrustedCertificate(_)), "{e}");
        // The genuine package still verifies after the forged one.
        assert!(verify_at(&pkg, &roots, AT).is_ok());
    }

    #[test]
    fn a_verified_chain_is_remembered_for_that_second_only() {
        let roots = TrustAnchors::from_pem(&[&pki("sandbox-root-ca.pem")]).unwrap();
        let moi = DpSigner::from_pem(&pki("dp-moi.key"), &pki("dp-moi.pem")).unwrap();
        let pkg = package(&moi);
        let remembered =
            |r: &TrustAnchors| locked(&r.chains).as_ref().map(|(t, set)| (*t, set.len()));
        assert_eq!(remembered(&roots), None);
        assert!(verify_at(&pkg, &roots, AT).is_ok());
        assert_eq!(remembered(&roots), Some((AT, 1)));
        // A forged chain is never remembered, and stays refused at the same second.
        let forged = package(&impostor());
        for _ in 0..2 {
            let e = verify_at(&forged, &roots, AT).unwrap_err();
            assert!(matches!(e, Error::UntrustedCertificate(_)), "{e}");
        }
        assert_eq!(remembered(&roots), Some((AT, 1)));
        // Another second: checked again, and what was remembered before is forgotten.
        let next = UnixTime(AT.0 + 1);
        assert!(verify_at(&pkg, &roots, next).is_ok());
        assert_eq!(remembered(&roots), Some((next, 1)));
        // The same bytes under other anchors are checked against those anchors.
        let other = TrustAnchors::from_pem(&[&pki("other-root-ca.pem")]).unwrap();
        let e = verify_at(&pkg, &other, AT).unwrap_err();
        assert!(matches!(e, Error::UntrustedCertificate(_)), "{e}");
    }

    #[test]
    fn cert_cache_is_bounded() {
        let leaf = X509::from_pem(&pki("dp-moi.pem")).unwrap();
        let mut cache = CertCache::default();
        for i in 0..(CERT_CACHE_ENTRIES + 10) {
            let mut key = [0u8; 32];
            key[..8].copy_from_slice(&(i as u64).to_le_bytes());
            cache.insert(key, (leaf.clone(), Vec::new()));
            assert!(cache.get(&key).is_some(), "the entry just inserted is kept");
        }
        assert_eq!(cache.parsed.len(), CERT_CACHE_ENTRIES);
    }
}
