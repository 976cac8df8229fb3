//! The sandbox TLS PKI (`fixtures/pki/tls/`), compiled in so that `mydata serve --sandbox
//! --sandbox-tls`, the sandbox DP and the example SP run on HTTPS wherever the binary is.
//!
//! **Every key here is public on purpose.** Trust [`ROOT_CA`] only in the sandbox and tests.
//! All certificates are valid from 2026-01-01 to 2036-01-01; the server certificates are for
//! `localhost`, `127.0.0.1` and `::1`.

/// The sandbox TLS root (`tls-root-ca.pem`): every certificate below chains to it.
pub const ROOT_CA: &[u8] = include_bytes!("../../../../fixtures/pki/tls/tls-root-ca.pem");
/// The platform's server certificate (`platform.pem`).
pub const PLATFORM_CERT: &[u8] = include_bytes!("../../../../fixtures/pki/tls/platform.pem");
/// The key of [`PLATFORM_CERT`].
pub const PLATFORM_KEY: &[u8] = include_bytes!("../../../../fixtures/pki/tls/platform.key");
/// The sandbox DP's server certificate (`sandbox-dp.pem`).
pub const DP_CERT: &[u8] = include_bytes!("../../../../fixtures/pki/tls/sandbox-dp.pem");
/// The key of [`DP_CERT`].
pub const DP_KEY: &[u8] = include_bytes!("../../../../fixtures/pki/tls/sandbox-dp.key");
/// The example SP's server certificate (`example-sp.pem`).
pub const SP_CERT: &[u8] = include_bytes!("../../../../fixtures/pki/tls/example-sp.pem");
/// The key of [`SP_CERT`].
pub const SP_KEY: &[u8] = include_bytes!("../../../../fixtures/pki/tls/example-sp.key");
/// The platform's client certificate toward SPs and DPs (`platform-client.pem`).
pub const PLATFORM_CLIENT_CERT: &[u8] =
    include_bytes!("../../../../fixtures/pki/tls/platform-client.pem");
/// The key of [`PLATFORM_CLIENT_CERT`].
pub const PLATFORM_CLIENT_KEY: &[u8] =
    include_bytes!("../../../../fixtures/pki/tls/platform-client.key");
/// A sandbox SP's client certificate toward the MyData-API (`sp-client.pem`).
pub const SP_CLIENT_CERT: &[u8] = include_bytes!("../../../../fixtures/pki/tls/sp-client.pem");
/// The key of [`SP_CLIENT_CERT`].
pub const SP_CLIENT_KEY: &[u8] = include_bytes!("../../../../fixtures/pki/tls/sp-client.key");

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::x509::X509;

    #[test]
    fn every_certificate_chains_to_the_root() {
        let root = X509::from_pem(ROOT_CA).unwrap();
        for pem in [
            PLATFORM_CERT,
            DP_CERT,
            SP_CERT,
            PLATFORM_CLIENT_CERT,
            SP_CLIENT_CERT,
        ] {
            let cert = X509::from_pem(pem).unwrap();
            assert!(cert.verify(&root.public_key().unwrap()).unwrap());
        }
    }
}
