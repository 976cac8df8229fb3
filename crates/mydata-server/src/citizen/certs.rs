//! The issuers of the certificate identity methods and their records of who holds which
//! certificate (spec D51): the sandbox's, compiled in, or a directory laid out like
//! `fixtures/pki/identity/` (`identity_pki`).

use std::path::Path;

use mydata_protocol::certlogin::{Holders, Issuer, Issuers};
use mydata_protocol::codes::IdentityMethod;

use crate::error::{ServerError, ServerResult};

/// Each issuer's file name (without `.pem`/`.crl`) and the methods it serves.
const LAYOUT: [(&str, &[IdentityMethod]); 4] = [
    ("citizen-ca", &[IdentityMethod::CitizenCertificate]),
    ("health-ca", &[IdentityMethod::NhiCard]),
    (
        "financial-ca",
        &[
            IdentityMethod::ChipFinancialCard,
            IdentityMethod::HardwareFinancialCertificate,
            IdentityMethod::SoftwareFinancialCertificate,
        ],
    ),
    ("business-ca", &[IdentityMethod::BusinessCertificate]),
];

macro_rules! sandbox_file {
    ($name:literal) => {
        include_bytes!(concat!("../../../../fixtures/pki/identity/", $name))
    };
}

/// The sandbox issuers (CA certificate, CRL), in the order of [`LAYOUT`].
const SANDBOX: [(&[u8], &[u8]); 4] = [
    (
        sandbox_file!("citizen-ca.pem"),
        sandbox_file!("citizen-ca.crl"),
    ),
    (
        sandbox_file!("health-ca.pem"),
        sandbox_file!("health-ca.crl"),
    ),
    (
        sandbox_file!("financial-ca.pem"),
        sandbox_file!("financial-ca.crl"),
    ),
    (
        sandbox_file!("business-ca.pem"),
        sandbox_file!("business-ca.crl"),
    ),
];
const SANDBOX_HOLDERS: &[u8] = sandbox_file!("certificates.json");

/// The issuers the platform trusts for the certificate methods, and their holder records.
#[derive(Debug)]
pub struct CertTrust {
    /// The issuers, per method.
    pub issuers: Issuers,
    /// Who holds which certificate.
    pub holders: Holders,
}

fn holders(bytes: &[u8], what: &str) -> ServerResult<Holders> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| ServerError::Config(format!("{what}: not UTF-8")))?;
    Holders::from_json(text).map_err(|e| ServerError::Config(format!("{what}: {e}")))
}

impl CertTrust {
    /// The sandbox identity PKI (`fixtures/pki/identity/`), compiled in.
    pub fn sandbox() -> ServerResult<Self> {
        let mut issuers = Issuers::new();
        for ((name, methods), (ca, crl)) in LAYOUT.iter().zip(SANDBOX) {
            for m in *methods {
                let issuer = Issuer::from_pem(ca, &[crl])
                    .map_err(|e| ServerError::Config(format!("sandbox {name}: {e}")))?;
                issuers.set(*m, issuer);
            }
        }
        Ok(CertTrust {
            issuers,
            holders: holders(SANDBOX_HOLDERS, "sandbox certificates.json")?,
        })
    }

    /// The issuers in `dir`: `{issuer}.pem` with its `{issuer}.crl` for each issuer present
    /// (`citizen-ca`, `health-ca`, `financial-ca`, `business-ca`), and `certificates.json`. A
    /// missing issuer leaves its methods unoffered; a CA without its CRL is refused.
    pub fn from_dir(dir: &Path) -> ServerResult<Self> {
        let read = |name: &str| std::fs::read(dir.join(name));
        let mut issuers = Issuers::new();
        let mut any = false;
        for (name, methods) in LAYOUT {
            let Ok(ca) = read(&format!("{name}.pem")) else {
                continue;
            };
            let crl = read(&format!("{name}.crl")).map_err(|e| {
                ServerError::Config(format!(
                    "identity_pki {}: {name}.pem without {name}.crl: {e}",
                    dir.display()
                ))
            })?;
            for m in methods {
                let issuer = Issuer::from_pem(&ca, &[&crl]).map_err(|e| {
                    ServerError::Config(format!("identity_pki {}: {name}: {e}", dir.display()))
                })?;
                issuers.set(*m, issuer);
            }
            any = true;
        }
        if !any {
            return Err(ServerError::Config(format!(
                "identity_pki {}: no issuer (citizen-ca.pem, health-ca.pem, financial-ca.pem, business-ca.pem)",
                dir.display()
            )));
        }
        let records = read("certificates.json").map_err(|e| {
            ServerError::Config(format!(
                "identity_pki {}: certificates.json: {e}",
                dir.display()
            ))
        })?;
        Ok(CertTrust {
            issuers,
            holders: holders(&records, "identity_pki certificates.json")?,
        })
    }

    /// Whether `method` can be performed (an issuer is configured for it).
    pub fn offers(&self, method: IdentityMethod) -> bool {
        self.issuers.get(method).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sandbox_offers_every_certificate_method_and_a_directory_needs_crls() {
        let t = CertTrust::sandbox().unwrap();
        for m in mydata_protocol::certlogin::CERTIFICATE_METHODS {
            assert!(t.offers(m), "{m:?}");
        }
        assert!(!t.offers(IdentityMethod::TwFido));

        let dir = tempfile::tempdir().unwrap();
        assert!(CertTrust::from_dir(dir.path()).is_err(), "empty");
        std::fs::write(dir.path().join("citizen-ca.pem"), SANDBOX[0].0).unwrap();
        let e = CertTrust::from_dir(dir.path()).unwrap_err().to_string();
        assert!(e.contains("citizen-ca.crl"), "{e}");
        std::fs::write(dir.path().join("citizen-ca.crl"), SANDBOX[0].1).unwrap();
        std::fs::write(dir.path().join("certificates.json"), SANDBOX_HOLDERS).unwrap();
        let t = CertTrust::from_dir(dir.path()).unwrap();
        assert!(t.offers(IdentityMethod::CitizenCertificate));
        assert!(!t.offers(IdentityMethod::NhiCard));
    }
}
