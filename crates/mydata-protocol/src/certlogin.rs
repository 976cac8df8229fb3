//! The certificate identity methods (`CER`, `FIC`, `FCH`, `FCS`, `NHI`, `MOE`; spec protocol.md
//! §13, decision D51): a one-shot challenge, and the check of its signature.
//!
//! The citizen's side (a card reader's signing agent, a browser, any signer) signs the challenge
//! string's bytes as a **detached PKCS#7/CMS SignedData** (DER) that carries the signer's
//! certificate. The platform checks, in this order: the structure (exactly one signer, its
//! certificate enclosed), the signature over the challenge, the chain to the issuer of that
//! method at the injected time, the key (RSA ≥ 2048 bits or P-256) and the certificate's purpose
//! (`keyUsage` digitalSignature, `extendedKeyUsage` clientAuth when present), revocation against
//! the CRL of the CA that issued it (signed by that CA and current), and that the certificate
//! belongs to the person the SP
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
    /// The issuing CA's distinguished name, RFC 2253 (`CN=…,O=…,C=TW`, as
    /// `openssl x509 -noout -issuer -nameopt RFC2253` prints it).
    pub issuer: String,
    /// The certificate's serial number, hex (case and leading zeros do not matter).
    pub serial: String,
}

/// (method, issuer DN, serial).
type HolderKey = (IdentityMethod, String, String);

/// The issuers' records of who holds which certificate: (method, issuer, serial) → ID. In the
/// sandbox, `fixtures/pki/identity/certificates.json`; in service, the issuers' lookup services.
#[derive(Debug, Clone, Default)]
pub struct Holders {
    by_serial: HashMap<HolderKey, String>,
}

#[derive(Deserialize)]
struct HoldersFile {
    certificates: Vec<HolderRecord>,
}

impl Holders {
    /// From the records; two records for the same certificate are refused.
    pub fn new(records: impl IntoIterator<Item = HolderRecord>) -> Result<Self, CertLoginError> {
        let mut by_serial = HashMap::new();
        for r in records {
            let key = (
                r.method,
                r.issuer.trim().to_owned(),
                normalize_serial(&r.serial),
            );
            if by_serial
                .insert(key, r.holder.trim().to_ascii_uppercase())
                .is_some()
            {
                return Err(CertLoginError::Malformed(format!(
                    "holder records: two records for {} serial {} of {}",
                    r.method.code(),
                    r.serial,
                    r.issuer
                )));
            }
        }
        Ok(Holders { by_serial })
    }

    /// From a JSON document
    /// `{"certificates": [{"method", "holder", "issuer", "serial", …}, …]}`.
    pub fn from_json(text: &str) -> Result<Self, CertLoginError> {
        let f: HoldersFile = serde_json::from_str(text)
            .map_err(|e| CertLoginError::Malformed(format!("holder records: {e}")))?;
        Holders::new(f.certificates)
    }

    fn holder(&self, method: IdentityMethod, issuer: &str, serial: &str) -> Option<&str> {
        self.by_serial
            .get(&(method, issuer.to_owned(), normalize_serial(serial)))
            .map(String::as_str)
    }
}

/// A distinguished name in RFC 2253 form: the last RDN first, `,` between, special characters
/// escaped with `\`.
fn rfc2253(name: &openssl::x509::X509NameRef) -> String {
    let mut parts: Vec<String> = name
        .entries()
        .map(|e| {
            let key = e.object().nid().short_name().unwrap_or("?");
            let value = e.data().to_string().unwrap_or_default();
            let n = value.chars().count();
            let mut out = String::with_capacity(value.len() + 4);
            for (i, ch) in value.chars().enumerate() {
                let special = matches!(ch, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
                    || (i == 0 && (ch == '#' || ch == ' '))
                    || (i + 1 == n && ch == ' ');
                if special {
                    out.push('\\');
                }
                out.push(ch);
            }
            format!("{key}={out}")
        })
        .collect();
    parts.reverse();
    parts.join(",")
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
    // The content must be detached: a SignedData that carries content of its own is refused
    // (NO_DUAL_CONTENT), whatever it holds.
    p7.verify(
        &none,
        &empty_store,
        Some(challenge.as_bytes()),
        None,
        Pkcs7Flags::NOVERIFY
            | Pkcs7Flags::BINARY
            | Pkcs7Flags::DETACHED
            | Pkcs7Flags::NO_DUAL_CONTENT,
    )
    .map_err(|_| CertLoginError::BadSignature)?;
    check_key(&cert)?;
    // (3) chain, validity and purpose at `at`.
    check_chain(&cert, issuer, at)?;
    // (4) revocation, against the CRL of the CA that issued the certificate.
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
    match holders.holder(method, &rfc2253(cert.issuer_name()), &serial) {
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

/// RSA of 2048 bits or more, or ECDSA on P-256; `keyUsage` present with digitalSignature.
fn check_key(cert: &X509) -> Result<(), CertLoginError> {
    let key = cert
        .public_key()
        .map_err(|e| CertLoginError::Malformed(e.to_string()))?;
    let strong = if let Ok(rsa) = key.rsa() {
        rsa.size() >= 256
    } else if let Ok(ec) = key.ec_key() {
        ec.group().curve_name() == Some(openssl::nid::Nid::X9_62_PRIME256V1)
    } else {
        false
    };
    if !strong {
        return Err(CertLoginError::Purpose(
            "the key is neither RSA of 2048 bits or more nor P-256".into(),
        ));
    }
    match cert.key_usage() {
        Some(ku) if ku.contains(openssl::x509::X509KeyUsage::DIGITAL_SIGNATURE) => Ok(()),
        _ => Err(CertLoginError::Purpose(
            "keyUsage without digitalSignature".into(),
        )),
    }
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
    // At least 112-bit security for every key and signature of the chain.
    param.set_auth_level(2);
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
    let same = |a: &openssl::x509::X509NameRef, b: &openssl::x509::X509NameRef| {
        a.try_cmp(b).is_ok_and(|o| o.is_eq())
    };
    // The CA that issued the certificate (the chain check found one).
    let Some(ca_key) = issuer
        .cas
        .iter()
        .filter(|ca| same(ca.subject_name(), cert.issuer_name()))
        .filter_map(|ca| ca.public_key().ok())
        .find(|k| cert.verify(k).unwrap_or(false))
    else {
        return Err(CertLoginError::Untrusted("no issuing CA".into()));
    };
    // Only that CA's own CRL, current at `at`, speaks for its certificates.
    let current = issuer.crls.iter().find(|crl| {
        same(crl.issuer_name(), cert.issuer_name())
            && crl.verify(&ca_key).unwrap_or(false)
            && crl.last_update() <= t
            && crl.next_update().is_some_and(|n| t < *n)
    });
    let Some(crl) = current else {
        return Err(CertLoginError::NoCurrentCrl(
            "none signed by the issuing CA and current at this time".into(),
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

    /// Hands out `random` (32 bytes from the operating system), base64url without padding (43
    /// characters), as the challenge of `flow` at `now`, replacing that flow's earlier one.
    pub fn issue(&mut self, flow: &str, random: [u8; 32], now: UnixTime) -> String {
        use base64::Engine as _;
        let value = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random);
        self.live
            .retain(|_, (_, t)| now.0 - t.0 <= CHALLENGE_TTL_SECS);
        self.live.insert(flow.to_owned(), (value.clone(), now));
        value
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

/// Wrong PINs in a row after which a card locks.
pub const PIN_TRIES: u32 = 3;

/// Why a card did not sign.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CardError {
    /// [`PIN_TRIES`] wrong PINs in a row: the card signs nothing any more.
    #[error("the card is locked after {PIN_TRIES} wrong PINs")]
    Locked,
    /// A wrong PIN; `left` more wrong ones lock the card.
    #[error("wrong PIN ({left} tries left)")]
    WrongPin {
        /// Tries left before the card locks.
        left: u32,
    },
    /// The card's file is not a PKCS#12 with a key and a certificate.
    #[error("unreadable card: {0}")]
    Unreadable(String),
    /// The signature could not be made.
    #[error("signing failed: {0}")]
    Signing(String),
}

/// The citizen's side of D51: a sandbox card (a PKCS#12 whose password is the PIN) that signs a
/// challenge as the platform wants it (detached PKCS#7, DER, the certificate enclosed), and
/// locks after [`PIN_TRIES`] wrong PINs in a row, as a smart card does. The caller keeps the
/// count of wrong PINs where it survives a restart ([`Card::wrong_pins`]).
pub struct Card {
    der: Vec<u8>,
    wrong: u32,
}

impl std::fmt::Debug for Card {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Card(<{} bytes>, {} wrong PINs)",
            self.der.len(),
            self.wrong
        )
    }
}

impl Card {
    /// A card from its PKCS#12 bytes, with `wrong_so_far` wrong PINs already entered.
    pub fn new(pkcs12_der: Vec<u8>, wrong_so_far: u32) -> Result<Self, CardError> {
        openssl::pkcs12::Pkcs12::from_der(&pkcs12_der)
            .map_err(|e| CardError::Unreadable(e.to_string()))?;
        Ok(Card {
            der: pkcs12_der,
            wrong: wrong_so_far,
        })
    }

    /// Wrong PINs in a row so far.
    pub fn wrong_pins(&self) -> u32 {
        self.wrong
    }

    /// Whether the card is locked.
    pub fn locked(&self) -> bool {
        self.wrong >= PIN_TRIES
    }

    /// The certificate's subject, one line (needs no PIN: a card shows its certificate).
    pub fn subject(&self, pin: &str) -> Option<String> {
        let p = openssl::pkcs12::Pkcs12::from_der(&self.der).ok()?;
        p.parse2(pin).ok()?.cert.map(|c| subject_line(&c))
    }

    /// Signs `challenge` with the PIN. A wrong PIN counts; the right one resets the count.
    pub fn sign(&mut self, pin: &str, challenge: &str) -> Result<Vec<u8>, CardError> {
        if self.locked() {
            return Err(CardError::Locked);
        }
        let p12 = openssl::pkcs12::Pkcs12::from_der(&self.der)
            .map_err(|e| CardError::Unreadable(e.to_string()))?;
        let Ok(parsed) = p12.parse2(pin) else {
            self.wrong += 1;
            return Err(if self.locked() {
                CardError::Locked
            } else {
                CardError::WrongPin {
                    left: PIN_TRIES - self.wrong,
                }
            });
        };
        self.wrong = 0;
        let (Some(key), Some(cert)) = (parsed.pkey, parsed.cert) else {
            return Err(CardError::Unreadable("no key or no certificate".into()));
        };
        let none = Stack::<X509>::new().map_err(|e| CardError::Signing(e.to_string()))?;
        let p7 = Pkcs7::sign(
            &cert,
            &key,
            &none,
            challenge.as_bytes(),
            Pkcs7Flags::DETACHED | Pkcs7Flags::BINARY,
        )
        .map_err(|e| CardError::Signing(e.to_string()))?;
        p7.to_der().map_err(|e| CardError::Signing(e.to_string()))
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
        let c = b.issue("tx1", [1; 32], UnixTime(1000));
        assert_eq!(c.len(), 43);
        assert_eq!(b.current("tx1", UnixTime(1001)), Some(c.as_str()));
        let mut wrong = c.clone().into_bytes();
        wrong[0] ^= 1;
        let wrong = String::from_utf8(wrong).unwrap();
        assert!(
            b.take("tx1", &wrong, UnixTime(1001)).is_err(),
            "wrong value"
        );
        assert!(
            b.take("tx1", &c, UnixTime(1001)).is_err(),
            "a wrong answer ends it"
        );
        let c = b.issue("tx1", [2; 32], UnixTime(1000));
        b.take("tx1", &c, UnixTime(1000 + CHALLENGE_TTL_SECS))
            .unwrap();
        assert_eq!(
            b.take("tx1", &c, UnixTime(1001)),
            Err(CertLoginError::Challenge)
        );
        let c = b.issue("tx2", [3; 32], UnixTime(1000));
        assert_eq!(b.current("tx2", UnixTime(1001 + CHALLENGE_TTL_SECS)), None);
        assert!(
            b.take("tx2", &c, UnixTime(1001 + CHALLENGE_TTL_SECS))
                .is_err(),
            "stale"
        );
        assert!(b.is_empty());
        let old = b.issue("tx3", [4; 32], UnixTime(1000));
        b.issue("tx3", [5; 32], UnixTime(1001));
        assert!(b.take("tx3", &old, UnixTime(1002)).is_err(), "replaced");
    }

    #[test]
    fn distinguished_names_in_rfc_2253_form() {
        let mut b = openssl::x509::X509NameBuilder::new().unwrap();
        b.append_entry_by_text("C", "TW").unwrap();
        b.append_entry_by_text("O", "Acme, Inc.").unwrap();
        b.append_entry_by_text("CN", " Root+1").unwrap();
        assert_eq!(rfc2253(&b.build()), "CN=\\ Root\\+1,O=Acme\\, Inc.,C=TW");
    }
}
