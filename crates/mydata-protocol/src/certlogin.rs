//! The certificate identity methods (`CER`, `FIC`, `FCH`, `FCS`, `NHI`, `MOE`; spec protocol.md
//! §13, decision D51): a one-shot challenge, and the check of its signature.
//!
//! The citizen's side (a card reader's signing agent, a browser, any signer) signs the challenge
//! string's bytes as a **detached PKCS#7/CMS SignedData** (DER) that carries the signer's
//! certificate. The platform checks, in this order: the structure (exactly one signer, its
//! certificate enclosed), the signature over the challenge, the chain to the issuer of that
//! method at the injected time, the certificate's purpose (`keyUsage` digitalSignature,
//! `extendedKeyUsage` clientAuth when present), revocation against the issuer's CRL (itself
//! signed by the issuer and current), and that the certificate belongs to the person the SP
//! named: the subject's `serialNumber` matches the ID (the last four characters of a national ID
//! or resident certificate number, the whole of a business number) **and** the issuer's records
//! ([`Holders`]) name that ID for the certificate's issuer and serial number.
//!
//! No I/O and no clock: the caller passes the time, the issuers' certificates and CRLs, and the
//! holder records.

use std::collections::HashMap;

use openssl::pkcs7::{Pkcs7, Pkcs7Flags};
use openssl::stack::Stack;
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::verify::X509VerifyFlags;
use openssl::x509::{CrlStatus, X509, X509Crl, X509PurposeId, X509StoreContext};
use serde::Deserialize;

use crate::codes::IdentityMethod;
use crate::date::UnixTime;

/// How long a challenge may be answered, in seconds (D51).
pub const CHALLENGE_TTL_SECS: i64 = 300;

/// Why a certificate login was refused. Every variant is the citizen's failure (a failed
/// attempt for the lockout of D36), except [`CertLoginError::NotConfigured`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertLoginError {
    /// The signature is not DER PKCS#7/CMS SignedData, or holds no or several signers, or no
    /// certificate for its signer.
    #[error("malformed signature: {0}")]
    Malformed(String),
    /// The signature does not verify over the challenge with the enclosed certificate's key.
    #[error("the signature does not verify over the challenge")]
    BadSignature,
    /// The certificate does not chain to this method's issuer (or it is a look-alike).
    #[error("the certificate is not from this method's issuer: {0}")]
    Untrusted(String),
    /// The certificate is outside its validity period at the given time.
    #[error("the certificate is not valid at this time: {0}")]
    NotValidNow(String),
    /// The certificate may not be used to sign in (`keyUsage`, `extendedKeyUsage`).
    #[error("the certificate may not be used to sign in: {0}")]
    Purpose(String),
    /// The issuer revoked the certificate.
    #[error("the certificate is revoked")]
    Revoked,
    /// No current CRL of the issuer (missing, not signed by the issuer, or past its next
    /// update): revocation cannot be ruled out, so the login is refused.
    #[error("no current revocation list for this issuer: {0}")]
    NoCurrentCrl(String),
    /// The certificate names another person than the one the SP named.
    #[error("the certificate belongs to another person")]
    WrongPerson,
    /// The challenge is unknown, already used, or older than [`CHALLENGE_TTL_SECS`].
    #[error("the challenge is unknown, used or expired")]
    Challenge,
    /// The platform trusts no issuer for this method (an operator's configuration).
    #[error("no issuer is configured for {0}")]
    NotConfigured(&'static str),
}

/// The certificate methods.
pub const CERTIFICATE_METHODS: [IdentityMethod; 6] = [
    IdentityMethod::CitizenCertificate,
    IdentityMethod::ChipFinancialCard,
    IdentityMethod::HardwareFinancialCertificate,
    IdentityMethod::BusinessCertificate,
    IdentityMethod::NhiCard,
    IdentityMethod::SoftwareFinancialCertificate,
];

/// Whether `m` is proved with a certificate.
pub fn is_certificate_method(m: IdentityMethod) -> bool {
    CERTIFICATE_METHODS.contains(&m)
}

/// One issuer: its CA certificate(s) and its current CRL(s).
pub struct Issuer {
    cas: Vec<X509>,
    crls: Vec<X509Crl>,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Issuer({} CAs, {} CRLs)",
            self.cas.len(),
            self.crls.len()
        )
    }
}

impl Issuer {
    /// An issuer from PEM CA certificates and PEM or DER CRLs.
    pub fn from_pem(cas_pem: &[u8], crls: &[&[u8]]) -> Result<Self, CertLoginError> {
        let cas = X509::stack_from_pem(cas_pem)
            .map_err(|e| CertLoginError::Malformed(format!("issuer certificate: {e}")))?;
        if cas.is_empty() {
            return Err(CertLoginError::Malformed("no issuer certificate".into()));
        }
        let crls = crls
            .iter()
            .map(|c| {
                X509Crl::from_pem(c)
                    .or_else(|_| X509Crl::from_der(c))
                    .map_err(|e| CertLoginError::Malformed(format!("CRL: {e}")))
            })
            .collect::<Result<_, _>>()?;
        Ok(Issuer { cas, crls })
    }
}

/// The issuers the platform trusts, per certificate method.
#[derive(Debug, Default)]
pub struct Issuers {
    by_method: HashMap<IdentityMethod, Issuer>,
}

impl Issuers {
    /// No issuer.
    pub fn new() -> Self {
        Issuers::default()
    }

    /// Trusts `issuer` for `method` (replacing an earlier one).
    pub fn set(&mut self, method: IdentityMethod, issuer: Issuer) {
        self.by_method.insert(method, issuer);
    }

    /// The issuer of `method`.
    pub fn get(&self, method: IdentityMethod) -> Option<&Issuer> {
        self.by_method.get(&method)
    }
}

/// One record of an issuer: which person a certificate was issued to.
#[derive(Debug, Clone, Deserialize)]
pub struct HolderRecord {
    /// The method the certificate serves.
    pub method: IdentityMethod,
    /// The person's full ID (national ID, resident certificate number or business number).
    pub holder: String,
    /// The certificate's serial number, lowercase hex without leading zeros.
    pub serial: String,
}

/// The issuers' records of who holds which certificate: (method, serial) → ID. In the sandbox,
/// `fixtures/pki/identity/certificates.json`; in service, the issuers' lookup services.
#[derive(Debug, Clone, Default)]
pub struct Holders {
    by_serial: HashMap<(IdentityMethod, String), String>,
}

#[derive(Deserialize)]
struct HoldersFile {
    certificates: Vec<HolderRecord>,
}

impl Holders {
    /// From the records.
    pub fn new(records: impl IntoIterator<Item = HolderRecord>) -> Self {
        Holders {
            by_serial: records
                .into_iter()
                .map(|r| {
                    (
                        (r.method, normalize_serial(&r.serial)),
                        r.holder.to_ascii_uppercase(),
                    )
                })
                .collect(),
        }
    }

    /// From a JSON document `{"certificates": [{"method", "holder", "serial", …}, …]}`.
    pub fn from_json(text: &str) -> Result<Self, CertLoginError> {
        let f: HoldersFile = serde_json::from_str(text)
            .map_err(|e| CertLoginError::Malformed(format!("holder records: {e}")))?;
        Ok(Holders::new(f.certificates))
    }

    fn holder(&self, method: IdentityMethod, serial: &str) -> Option<&str> {
        self.by_serial
            .get(&(method, normalize_serial(serial)))
            .map(String::as_str)
    }
}

fn normalize_serial(s: &str) -> String {
    let t = s.trim().trim_start_matches('0').to_ascii_lowercase();
    if t.is_empty() { "0".into() } else { t }
}

/// A certificate login that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertLogin {
    /// The method.
    pub method: IdentityMethod,
    /// The person, upper case (as the SP named them).
    pub holder: String,
    /// The certificate's serial number, lowercase hex.
    pub serial: String,
    /// The certificate's subject, one line.
    pub subject: String,
}

fn subject_line(c: &X509) -> String {
    c.subject_name()
        .entries()
        .map(|e| {
            format!(
                "{}={}",
                e.object().nid().short_name().unwrap_or("?"),
                e.data().to_string().unwrap_or_default()
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn subject_serial_number(c: &X509) -> Option<String> {
    c.subject_name()
        .entries_by_nid(openssl::nid::Nid::SERIALNUMBER)
        .next()
        .and_then(|e| e.data().to_string().ok())
}

/// Whether the certificate's partial ID fits `pid`: the whole business number for `MOE`, the
/// last four characters of the ID otherwise.
fn partial_id_matches(method: IdentityMethod, cert_serial_number: &str, pid: &str) -> bool {
    let (c, p) = (
        cert_serial_number.trim().to_ascii_uppercase(),
        pid.trim().to_ascii_uppercase(),
    );
    if method == IdentityMethod::BusinessCertificate {
        return c == p;
    }
    c.len() == 4 && p.len() >= 4 && p.ends_with(&c)
}

/// Checks a login: `signature` (DER PKCS#7/CMS SignedData, detached) over the bytes of
/// `challenge`, with `method`, for the person `pid`, at `at`.
pub fn verify(
    method: IdentityMethod,
    signature: &[u8],
    challenge: &str,
    pid: &str,
    issuers: &Issuers,
    holders: &Holders,
    at: UnixTime,
) -> Result<CertLogin, CertLoginError> {
    let issuer = issuers
        .get(method)
        .ok_or(CertLoginError::NotConfigured(method.code()))?;
    // (1) structure: SignedData, one signer, its certificate enclosed.
    let p7 = Pkcs7::from_der(signature)
        .map_err(|_| CertLoginError::Malformed("not DER PKCS#7/CMS".into()))?;
    let none = Stack::<X509>::new().map_err(|e| CertLoginError::Malformed(e.to_string()))?;
    let signers = p7
        .signers(&none, Pkcs7Flags::empty())
        .map_err(|_| CertLoginError::Malformed("no signer certificate enclosed".into()))?;
    if signers.len() != 1 {
        return Err(CertLoginError::Malformed(format!(
            "{} signers, expected one",
            signers.len()
        )));
    }
    let cert = signers
        .get(0)
        .map(|c| c.to_owned())
        .ok_or_else(|| CertLoginError::Malformed("no signer".into()))?;
    // (2) the signature over the challenge (the chain is step 3).
    let empty_store = X509StoreBuilder::new()
        .map_err(|e| CertLoginError::Malformed(e.to_string()))?
        .build();
    p7.verify(
        &none,
        &empty_store,
        Some(challenge.as_bytes()),
        None,
        Pkcs7Flags::NOVERIFY | Pkcs7Flags::BINARY | Pkcs7Flags::DETACHED,
    )
    .map_err(|_| CertLoginError::BadSignature)?;
    // (3) chain, validity and purpose at `at`.
    check_chain(&cert, issuer, at)?;
    // (4) revocation.
    check_crl(&cert, issuer, at)?;
    // (5) the person.
    let serial = cert
        .serial_number()
        .to_bn()
        .and_then(|b| b.to_hex_str().map(|s| s.to_ascii_lowercase()))
        .map_err(|e| CertLoginError::Malformed(e.to_string()))?;
    let partial = subject_serial_number(&cert).unwrap_or_default();
    if !partial_id_matches(method, &partial, pid) {
        return Err(CertLoginError::WrongPerson);
    }
    match holders.holder(method, &serial) {
        Some(h) if h.eq_ignore_ascii_case(pid.trim()) => {}
        _ => return Err(CertLoginError::WrongPerson),
    }
    Ok(CertLogin {
        method,
        holder: pid.trim().to_ascii_uppercase(),
        serial: normalize_serial(&serial),
        subject: subject_line(&cert),
    })
}

fn check_chain(cert: &X509, issuer: &Issuer, at: UnixTime) -> Result<(), CertLoginError> {
    let err = |e: openssl::error::ErrorStack| CertLoginError::Malformed(e.to_string());
    let mut b = X509StoreBuilder::new().map_err(err)?;
    for c in &issuer.cas {
        b.add_cert(c.clone()).map_err(err)?;
    }
    let mut param = openssl::x509::verify::X509VerifyParam::new().map_err(err)?;
    param.set_time(at.0 as _);
    param.set_flags(X509VerifyFlags::X509_STRICT).map_err(err)?;
    param.set_purpose(X509PurposeId::SSL_CLIENT).map_err(err)?;
    b.set_param(&param).map_err(err)?;
    let store = b.build();
    let chain = Stack::new().map_err(err)?;
    let mut ctx = X509StoreContext::new().map_err(err)?;
    let (ok, code, why) = ctx
        .init(&store, cert, &chain, |c| {
            let ok = c.verify_cert()?;
            Ok((ok, c.error().as_raw(), c.error().error_string().to_owned()))
        })
        .map_err(err)?;
    if ok {
        return Ok(());
    }
    // OpenSSL's verification codes (x509_vfy.h; stable across versions).
    const CERT_NOT_YET_VALID: i32 = 9;
    const CERT_HAS_EXPIRED: i32 = 10;
    const INVALID_PURPOSE: i32 = 26;
    Err(match code {
        CERT_HAS_EXPIRED | CERT_NOT_YET_VALID => CertLoginError::NotValidNow(why),
        INVALID_PURPOSE => CertLoginError::Purpose(why),
        _ => CertLoginError::Untrusted(why),
    })
}

fn check_crl(cert: &X509, issuer: &Issuer, at: UnixTime) -> Result<(), CertLoginError> {
    let t = openssl::asn1::Asn1Time::from_unix(at.0 as _)
        .map_err(|e| CertLoginError::Malformed(e.to_string()))?;
    let mut current = None;
    for crl in &issuer.crls {
        let signed = issuer.cas.iter().any(|ca| {
            ca.subject_name()
                .try_cmp(crl.issuer_name())
                .is_ok_and(|o| o.is_eq())
                && ca
                    .public_key()
                    .is_ok_and(|k| crl.verify(&k).unwrap_or(false))
        });
        let started = crl.last_update() <= t;
        let fresh = crl.next_update().is_some_and(|n| t < *n);
        if signed && started && fresh {
            current = Some(crl);
            break;
        }
    }
    let Some(crl) = current else {
        return Err(CertLoginError::NoCurrentCrl(
            "none signed by the issuer and current at this time".into(),
        ));
    };
    match crl.get_by_cert(cert) {
        CrlStatus::NotRevoked => Ok(()),
        CrlStatus::Revoked(_) | CrlStatus::RemoveFromCrl(_) => Err(CertLoginError::Revoked),
    }
}

/// The challenges handed out, one per flow: issued, answered once, or expired.
///
/// A pure state machine (the caller passes the time and the random value, and keeps the book
/// in its flow state).
#[derive(Debug, Clone, Default)]
pub struct ChallengeBook {
    live: HashMap<String, (String, UnixTime)>,
}

impl ChallengeBook {
    /// An empty book.
    pub fn new() -> Self {
        ChallengeBook::default()
    }

    /// Hands out `random` (at least 32 random bytes, encoded by the caller) as the challenge of
    /// `flow` at `now`, replacing that flow's earlier one.
    pub fn issue(&mut self, flow: &str, random: String, now: UnixTime) -> String {
        self.live
            .retain(|_, (_, t)| now.0 - t.0 <= CHALLENGE_TTL_SECS);
        self.live.insert(flow.to_owned(), (random.clone(), now));
        random
    }

    /// Takes the challenge of `flow` if it is `answered` and not older than
    /// [`CHALLENGE_TTL_SECS`] at `now`. A challenge is taken once: a second answer, or an
    /// answer to a replaced challenge, is refused.
    pub fn take(
        &mut self,
        flow: &str,
        answered: &str,
        now: UnixTime,
    ) -> Result<(), CertLoginError> {
        // Any answer ends the challenge: a second try needs a new one.
        let Some((value, issued)) = self.live.remove(flow) else {
            return Err(CertLoginError::Challenge);
        };
        let fresh = now.0 >= issued.0 && now.0 - issued.0 <= CHALLENGE_TTL_SECS;
        let same = value.len() == answered.len()
            && value
                .bytes()
                .zip(answered.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if same && fresh {
            Ok(())
        } else {
            Err(CertLoginError::Challenge)
        }
    }

    /// The live challenge of `flow` at `now`, if any (to show it again on a reloaded page).
    pub fn current(&self, flow: &str, now: UnixTime) -> Option<&str> {
        self.live
            .get(flow)
            .filter(|(_, t)| now.0 >= t.0 && now.0 - t.0 <= CHALLENGE_TTL_SECS)
            .map(|(v, _)| v.as_str())
    }

    /// Challenges held.
    pub fn len(&self) -> usize {
        self.live.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_ids() {
        use IdentityMethod::*;
        assert!(partial_id_matches(CitizenCertificate, "5672", "a120345672"));
        assert!(!partial_id_matches(
            CitizenCertificate,
            "5673",
            "A120345672"
        ));
        assert!(!partial_id_matches(CitizenCertificate, "", "A120345672"));
        assert!(!partial_id_matches(
            CitizenCertificate,
            "A120345672",
            "A120345672"
        ));
        assert!(partial_id_matches(
            BusinessCertificate,
            "53091428",
            "53091428"
        ));
        assert!(!partial_id_matches(BusinessCertificate, "1428", "53091428"));
    }

    #[test]
    fn a_challenge_is_taken_once_within_its_time() {
        let mut b = ChallengeBook::new();
        let c = b.issue("tx1", "abc".into(), UnixTime(1000));
        assert!(b.take("tx1", "abd", UnixTime(1001)).is_err(), "wrong value");
        assert!(
            b.take("tx1", &c, UnixTime(1001)).is_err(),
            "a wrong answer ends it"
        );
        let c = b.issue("tx1", "def".into(), UnixTime(1000));
        b.take("tx1", &c, UnixTime(1000 + CHALLENGE_TTL_SECS))
            .unwrap();
        assert_eq!(
            b.take("tx1", &c, UnixTime(1001)),
            Err(CertLoginError::Challenge)
        );
        let c = b.issue("tx2", "ghi".into(), UnixTime(1000));
        assert!(
            b.take("tx2", &c, UnixTime(1001 + CHALLENGE_TTL_SECS))
                .is_err(),
            "stale"
        );
        assert!(b.is_empty());
        let old = b.issue("tx3", "old".into(), UnixTime(1000));
        b.issue("tx3", "new".into(), UnixTime(1001));
        assert!(b.take("tx3", &old, UnixTime(1002)).is_err(), "replaced");
    }
}
