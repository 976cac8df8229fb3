//! Certificate logins (spec D51) against the sandbox identity PKI in fixtures/pki/identity, with
//! signatures made by code we did not write: the openssl CLI (`openssl cms -sign`) and Python
//! `cryptography` (tests/interop/cms_sign.py). Every refusal of the decision is shown.

use std::path::PathBuf;
use std::process::Command;

use mydata_protocol::certlogin::{CertLoginError, Holders, Issuer, Issuers, verify};
use mydata_protocol::codes::IdentityMethod;
use mydata_protocol::date::UnixTime;

/// 2027-01-01, inside every sandbox identity certificate's validity except the expired one.
const AT: UnixTime = UnixTime(1_798_761_600);
const CHALLENGE: &str = "q3xJ0u2b5mT8Zr1NcVh6Ws9LdYk4PaEg7BoRfUiQ0Tw";

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/pki/identity")
}

fn read(name: &str) -> Vec<u8> {
    let p = dir().join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn issuers() -> Issuers {
    let mut i = Issuers::new();
    let issuer = |ca: &str| {
        Issuer::from_pem(&read(&format!("{ca}.pem")), &[&read(&format!("{ca}.crl"))]).unwrap()
    };
    use IdentityMethod::*;
    i.set(CitizenCertificate, issuer("citizen-ca"));
    i.set(NhiCard, issuer("health-ca"));
    i.set(ChipFinancialCard, issuer("financial-ca"));
    i.set(HardwareFinancialCertificate, issuer("financial-ca"));
    i.set(SoftwareFinancialCertificate, issuer("financial-ca"));
    i.set(BusinessCertificate, issuer("business-ca"));
    i
}

fn holders() -> Holders {
    Holders::from_json(&String::from_utf8(read("certificates.json")).unwrap()).unwrap()
}

/// `openssl cms -sign`: detached, binary, DER, the signer's certificate enclosed.
fn openssl_sign(base: &str, content: &str) -> Vec<u8> {
    openssl_sign_with(base, content, &[])
}

fn openssl_sign_with(base: &str, content: &str, extra: &[&str]) -> Vec<u8> {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("challenge");
    std::fs::write(&input, content).unwrap();
    let out = tmp.path().join("sig.der");
    let st = Command::new("openssl")
        .args([
            "cms", "-sign", "-binary", "-outform", "DER", "-md", "sha256",
        ])
        .args(extra)
        .arg("-in")
        .arg(&input)
        .arg("-signer")
        .arg(dir().join(format!("{base}.pem")))
        .arg("-inkey")
        .arg(dir().join(format!("{base}.key")))
        .arg("-out")
        .arg(&out)
        .status()
        .expect("the openssl CLI (tests/run.sh installs it)");
    assert!(st.success(), "openssl cms -sign failed for {base}");
    std::fs::read(out).unwrap()
}

fn python() -> PathBuf {
    if let Ok(p) = std::env::var("MYDATA_PYTHON") {
        return p.into();
    }
    let venv =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/interop-venv/bin/python");
    assert!(
        venv.exists(),
        "the interop peers need the Python venv: run `bash tests/run.sh` (it creates target/interop-venv)"
    );
    venv
}

/// tests/interop/cms_sign.py (Python `cryptography`).
fn python_sign(base: &str, content: &str) -> Vec<u8> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/interop/cms_sign.py");
    let out = Command::new(python())
        .arg(script)
        .arg(dir().join(format!("{base}.pem")))
        .arg(dir().join(format!("{base}.key")))
        .arg(content)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cms_sign.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn login(method: IdentityMethod, sig: &[u8], pid: &str) -> Result<String, CertLoginError> {
    verify(method, sig, CHALLENGE, pid, &issuers(), &holders(), AT).map(|l| l.holder)
}

#[test]
fn every_method_logs_in_with_openssl_and_python_signatures() {
    use IdentityMethod::*;
    for (method, base, pid) in [
        (CitizenCertificate, "cer-A120345672", "A120345672"),
        (CitizenCertificate, "cer-A800215373", "a800215373"),
        (NhiCard, "nhi-F228710436", "F228710436"),
        (ChipFinancialCard, "fic-A120345672", "A120345672"),
        (HardwareFinancialCertificate, "fch-F228710436", "F228710436"),
        (SoftwareFinancialCertificate, "fcs-A120345672", "A120345672"),
        (BusinessCertificate, "moe-53091428", "53091428"),
    ] {
        for sig in [openssl_sign(base, CHALLENGE), python_sign(base, CHALLENGE)] {
            assert_eq!(
                login(method, &sig, pid),
                Ok(pid.to_ascii_uppercase()),
                "{base}"
            );
        }
    }
}

#[test]
fn every_refusal_of_d51() {
    use IdentityMethod::*;
    let good = openssl_sign("cer-A120345672", CHALLENGE);
    // Another challenge signed: a replayed or stale signature.
    let other = openssl_sign("cer-A120345672", "another-challenge");
    assert_eq!(
        login(CitizenCertificate, &other, "A120345672"),
        Err(CertLoginError::BadSignature)
    );
    // The certificate of another person than the one the SP named.
    assert_eq!(
        login(CitizenCertificate, &good, "F228710436"),
        Err(CertLoginError::WrongPerson)
    );
    // Same last four characters, another person: the issuer's records decide.
    assert_eq!(
        login(CitizenCertificate, &good, "B220345672"),
        Err(CertLoginError::WrongPerson)
    );
    // Revoked (in the citizen CA's CRL).
    let revoked = python_sign("cer-revoked-A240177369", CHALLENGE);
    assert_eq!(
        login(CitizenCertificate, &revoked, "A240177369"),
        Err(CertLoginError::Revoked)
    );
    // Expired at the given time.
    let expired = openssl_sign("cer-expired-B162503988", CHALLENGE);
    assert!(matches!(
        login(CitizenCertificate, &expired, "B162503988"),
        Err(CertLoginError::NotValidNow(_))
    ));
    // A look-alike issuer (same name, another key).
    let lookalike = openssl_sign("cer-lookalike-A120345672", CHALLENGE);
    assert!(matches!(
        login(CitizenCertificate, &lookalike, "A120345672"),
        Err(CertLoginError::Untrusted(_))
    ));
    // The right person, the wrong method's issuer: a health card is not a citizen certificate.
    let nhi = openssl_sign("nhi-A120345672", CHALLENGE);
    assert!(matches!(
        login(CitizenCertificate, &nhi, "A120345672"),
        Err(CertLoginError::Untrusted(_))
    ));
    // A certificate not for signing in (keyUsage keyEncipherment only).
    let nosign = openssl_sign("cer-nosign-A120345672", CHALLENGE);
    assert!(matches!(
        login(CitizenCertificate, &nosign, "A120345672"),
        Err(CertLoginError::Purpose(_))
    ));
    // Before the certificate's start.
    assert!(matches!(
        verify(
            CitizenCertificate,
            &good,
            CHALLENGE,
            "A120345672",
            &issuers(),
            &holders(),
            UnixTime(1_735_689_600)
        ),
        Err(CertLoginError::NotValidNow(_))
    ));
    // Malformed: not DER, truncated, a bare certificate.
    for bad in [
        b"not a signature".to_vec(),
        good[..good.len() / 2].to_vec(),
        read("cer-A120345672.pem"),
    ] {
        assert!(matches!(
            login(CitizenCertificate, &bad, "A120345672"),
            Err(CertLoginError::Malformed(_))
        ));
    }
    // One byte of the signature flipped.
    let mut flipped = good.clone();
    let n = flipped.len();
    flipped[n - 10] ^= 1;
    assert_eq!(
        login(CitizenCertificate, &flipped, "A120345672"),
        Err(CertLoginError::BadSignature)
    );
    // The content embedded instead of detached.
    let embedded = openssl_sign_with("cer-A120345672", CHALLENGE, &["-nodetach"]);
    assert_eq!(
        login(CitizenCertificate, &embedded, "A120345672"),
        Err(CertLoginError::BadSignature)
    );
    // The issuer's records alone would let this pass (they name A120345672 for this
    // certificate); the card's last four characters (0436) do not.
    let lying = Holders::from_json(
        &String::from_utf8(read("certificates.json"))
            .unwrap()
            .replace("\"holder\": \"F228710436\"", "\"holder\": \"A120345672\""),
    )
    .unwrap();
    let theirs = openssl_sign("cer-F228710436", CHALLENGE);
    assert_eq!(
        verify(
            CitizenCertificate,
            &theirs,
            CHALLENGE,
            "A120345672",
            &issuers(),
            &lying,
            AT
        ),
        Err(CertLoginError::WrongPerson)
    );
    // Two records for one certificate are refused when loading.
    let twice = r#"{"certificates": [
        {"method": "CER", "holder": "A120345672", "issuer": "CN=X", "serial": "0a"},
        {"method": "CER", "holder": "F228710436", "issuer": "CN=X", "serial": "A"}]}"#;
    assert!(matches!(
        Holders::from_json(twice),
        Err(CertLoginError::Malformed(_))
    ));
    // No issuer configured for the method.
    assert_eq!(
        verify(
            CitizenCertificate,
            &good,
            CHALLENGE,
            "A120345672",
            &Issuers::new(),
            &holders(),
            AT
        ),
        Err(CertLoginError::NotConfigured("CER"))
    );
}

#[test]
fn without_a_current_crl_no_login_passes() {
    use IdentityMethod::*;
    let good = openssl_sign("cer-A120345672", CHALLENGE);
    let mut none = Issuers::new();
    none.set(
        CitizenCertificate,
        Issuer::from_pem(&read("citizen-ca.pem"), &[]).unwrap(),
    );
    assert!(matches!(
        verify(
            CitizenCertificate,
            &good,
            CHALLENGE,
            "A120345672",
            &none,
            &holders(),
            AT
        ),
        Err(CertLoginError::NoCurrentCrl(_))
    ));
    // A CRL under the citizen CA's name, signed by the look-alike's key, does not count.
    let mut forged = Issuers::new();
    forged.set(
        CitizenCertificate,
        Issuer::from_pem(&read("citizen-ca.pem"), &[&read("lookalike-ca.crl")]).unwrap(),
    );
    assert!(matches!(
        verify(
            CitizenCertificate,
            &good,
            CHALLENGE,
            "A120345672",
            &forged,
            &holders(),
            AT
        ),
        Err(CertLoginError::NoCurrentCrl(_))
    ));
    // The citizen CA's own CRL, past its nextUpdate (it was current in May 2026 only).
    let mut stale = Issuers::new();
    stale.set(
        CitizenCertificate,
        Issuer::from_pem(&read("citizen-ca.pem"), &[&read("citizen-ca-stale.crl")]).unwrap(),
    );
    assert!(matches!(
        verify(
            CitizenCertificate,
            &good,
            CHALLENGE,
            "A120345672",
            &stale,
            &holders(),
            AT
        ),
        Err(CertLoginError::NoCurrentCrl(_))
    ));
    // With two CAs for one method, only the issuing CA's CRL speaks for a certificate: the
    // health CA's (current, signed, without this serial) does not clear a revoked citizen
    // certificate, whatever the order.
    let revoked = openssl_sign("cer-revoked-A240177369", CHALLENGE);
    let mut two = Issuers::new();
    let mut cas = read("health-ca.pem");
    cas.extend_from_slice(&read("citizen-ca.pem"));
    two.set(
        CitizenCertificate,
        Issuer::from_pem(&cas, &[&read("health-ca.crl"), &read("citizen-ca.crl")]).unwrap(),
    );
    assert_eq!(
        verify(
            CitizenCertificate,
            &revoked,
            CHALLENGE,
            "A240177369",
            &two,
            &holders(),
            AT
        ),
        Err(CertLoginError::Revoked)
    );
    // A CRL of another issuer does not count.
    let mut wrong = Issuers::new();
    wrong.set(
        CitizenCertificate,
        Issuer::from_pem(&read("citizen-ca.pem"), &[&read("health-ca.crl")]).unwrap(),
    );
    assert!(matches!(
        verify(
            CitizenCertificate,
            &good,
            CHALLENGE,
            "A120345672",
            &wrong,
            &holders(),
            AT
        ),
        Err(CertLoginError::NoCurrentCrl(_))
    ));
    // Before the CRL's lastUpdate (2026-06-01) there is no current CRL either.
    assert!(matches!(
        verify(
            CitizenCertificate,
            &good,
            CHALLENGE,
            "A120345672",
            &issuers(),
            &holders(),
            UnixTime(1_772_323_200) // 2026-03-01
        ),
        Err(CertLoginError::NoCurrentCrl(_))
    ));
}

#[test]
fn a_sandbox_card_signs_behind_its_pin_and_locks_after_three_wrong_ones() {
    use mydata_protocol::certlogin::{Card, CardError};
    let mut card = Card::new(read("cer-A120345672.p12"), 0).unwrap();
    assert!(card.subject("123456").unwrap().contains("WANG, DA-MING"));
    let sig = card.sign("123456", CHALLENGE).unwrap();
    assert_eq!(
        login(IdentityMethod::CitizenCertificate, &sig, "A120345672"),
        Ok("A120345672".into())
    );
    assert_eq!(
        card.sign("000000", CHALLENGE),
        Err(CardError::WrongPin { left: 2 })
    );
    // The right PIN resets the count.
    card.sign("123456", CHALLENGE).unwrap();
    assert_eq!(card.wrong_pins(), 0);
    assert_eq!(
        card.sign("1", CHALLENGE),
        Err(CardError::WrongPin { left: 2 })
    );
    assert_eq!(
        card.sign("2", CHALLENGE),
        Err(CardError::WrongPin { left: 1 })
    );
    assert_eq!(card.sign("3", CHALLENGE), Err(CardError::Locked));
    // Locked: the right PIN signs nothing any more, also for a card read again with the count.
    assert_eq!(card.sign("123456", CHALLENGE), Err(CardError::Locked));
    let mut again = Card::new(read("cer-A120345672.p12"), card.wrong_pins()).unwrap();
    assert_eq!(again.sign("123456", CHALLENGE), Err(CardError::Locked));
    assert!(matches!(
        Card::new(b"not a card".to_vec(), 0),
        Err(CardError::Unreadable(_))
    ));
}
