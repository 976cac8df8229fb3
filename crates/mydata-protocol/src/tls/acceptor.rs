//! Server-side TLS contexts (see the [module documentation](super)).
//!
//! [`acceptor`] builds the `SslAcceptorBuilder` that actix-web's `bind_openssl`/`listen_openssl`
//! take; [`context`] builds the same settings as a finished `SslContext`, which a running
//! listener can switch to for new handshakes ([`reloadable`]) without touching connections
//! already open. Both take PEM bytes the caller has read: nothing here opens a file.
//!
//! Settings (spec D50): TLS 1.2 and 1.3 only (Mozilla's "intermediate" profile, v5), the
//! certificate chain and key given, and for client certificates one of [`ClientCerts`]. A client
//! certificate, when asked for, must chain to the given CA bundle (the system roots are never
//! used for clients); which client may do what is the application's decision, for example by
//! [`fingerprint`] pins.

use std::sync::{Arc, RwLock};

use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::ssl::{
    SslAcceptor, SslAcceptorBuilder, SslContext, SslMethod, SslVerifyMode, SslVersion,
};
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::{X509, X509Ref};

/// Why a server TLS context could not be built. The text names what was wrong, never key bytes.
#[derive(Debug, thiserror::Error)]
pub enum AcceptorError {
    /// The certificate PEM held no certificate, or could not be parsed.
    #[error("TLS certificate: {0}")]
    Certificate(String),
    /// The private key PEM could not be parsed, or does not match the certificate.
    #[error("TLS private key: {0}")]
    Key(String),
    /// The client CA bundle held no certificate, or could not be parsed.
    #[error("TLS client CA bundle: {0}")]
    ClientCa(String),
    /// OpenSSL refused a setting.
    #[error("TLS settings: {0}")]
    Settings(String),
}

/// Whether the listener asks connecting clients for a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientCerts {
    /// Never asks.
    None,
    /// Asks, accepts a handshake without one, and refuses one that does not chain to the CA
    /// bundle. The application decides per request (for example, per SP registration).
    Optional,
    /// Refuses any handshake without a certificate chaining to the CA bundle.
    Required,
}

/// What a listener serves: its certificate chain and key, and its client-certificate rule.
#[derive(Debug, Clone, Copy)]
pub struct ServerTls<'a> {
    /// The leaf certificate first, then any intermediates (PEM).
    pub cert_chain_pem: &'a [u8],
    /// The private key of the leaf (PEM: PKCS#8, or traditional RSA/EC).
    pub key_pem: &'a [u8],
    /// CA certificates that client certificates must chain to (PEM); needed unless
    /// `client_certs` is [`ClientCerts::None`].
    pub client_ca_pem: Option<&'a [u8]>,
    /// Whether to ask clients for certificates.
    pub client_certs: ClientCerts,
}

fn settings(e: openssl::error::ErrorStack) -> AcceptorError {
    AcceptorError::Settings(e.to_string())
}

/// Builds an acceptor for `tls`: TLS 1.2 minimum, the chain and key checked against each other.
pub fn acceptor(tls: &ServerTls<'_>) -> Result<SslAcceptorBuilder, AcceptorError> {
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server()).map_err(settings)?;
    b.set_min_proto_version(Some(SslVersion::TLS1_2))
        .map_err(settings)?;
    let mut chain = X509::stack_from_pem(tls.cert_chain_pem)
        .map_err(|e| AcceptorError::Certificate(e.to_string()))?
        .into_iter();
    let leaf = chain
        .next()
        .ok_or_else(|| AcceptorError::Certificate("no certificate in the PEM".into()))?;
    b.set_certificate(&leaf)
        .map_err(|e| AcceptorError::Certificate(e.to_string()))?;
    for extra in chain {
        b.add_extra_chain_cert(extra)
            .map_err(|e| AcceptorError::Certificate(e.to_string()))?;
    }
    let key = PKey::private_key_from_pem(tls.key_pem)
        .map_err(|e| AcceptorError::Key(format!("cannot parse: {e}")))?;
    b.set_private_key(&key)
        .map_err(|_| AcceptorError::Key("does not match the certificate".into()))?;
    b.check_private_key()
        .map_err(|_| AcceptorError::Key("does not match the certificate".into()))?;
    match tls.client_certs {
        ClientCerts::None => b.set_verify(SslVerifyMode::NONE),
        mode => {
            let pem = tls.client_ca_pem.ok_or_else(|| {
                AcceptorError::ClientCa("client certificates need a CA bundle".into())
            })?;
            let cas =
                X509::stack_from_pem(pem).map_err(|e| AcceptorError::ClientCa(e.to_string()))?;
            if cas.is_empty() {
                return Err(AcceptorError::ClientCa("no certificate in the PEM".into()));
            }
            let mut store = X509StoreBuilder::new().map_err(settings)?;
            for ca in &cas {
                b.add_client_ca(ca).map_err(settings)?;
                store.add_cert(ca.clone()).map_err(settings)?;
            }
            b.set_verify_cert_store(store.build()).map_err(settings)?;
            let mut verify = SslVerifyMode::PEER;
            if mode == ClientCerts::Required {
                verify |= SslVerifyMode::FAIL_IF_NO_PEER_CERT;
            }
            b.set_verify(verify);
            // Sessions resumed across a certificate requirement must keep its result.
            b.set_session_id_context(b"mydata").map_err(settings)?;
        }
    }
    Ok(b)
}

/// [`acceptor`] finished into a context, for [`Reloadable::replace`].
pub fn context(tls: &ServerTls<'_>) -> Result<SslContext, AcceptorError> {
    Ok(acceptor(tls)?.build().into_context())
}

/// The current context of a listener that can change certificates while it runs.
///
/// Every new handshake switches to the context current at that moment; handshakes already done
/// and their connections keep theirs. Cloning shares the same slot.
#[derive(Clone)]
pub struct Reloadable {
    current: Arc<RwLock<SslContext>>,
}

impl std::fmt::Debug for Reloadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloadable").finish_non_exhaustive()
    }
}

impl Reloadable {
    /// Makes `ctx` the context of every handshake from now on.
    pub fn replace(&self, ctx: SslContext) {
        // A poisoned lock only means a panic elsewhere while holding it; the slot is still whole.
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = ctx;
    }

    fn current(&self) -> SslContext {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// An acceptor whose certificate, key and client CA bundle can be replaced while it runs:
/// returns the builder to give actix-web and the slot to [`Reloadable::replace`] into.
///
/// The switch happens in OpenSSL's server-name callback, which OpenSSL (1.1.1 and later) calls
/// on every handshake, with or without SNI. The TLS versions and client-certificate *mode* stay
/// those of `tls`; a reload is expected to keep them.
pub fn reloadable(tls: &ServerTls<'_>) -> Result<(SslAcceptorBuilder, Reloadable), AcceptorError> {
    let slot = Reloadable {
        current: Arc::new(RwLock::new(context(tls)?)),
    };
    let mut b = acceptor(tls)?;
    let cb = slot.clone();
    b.set_servername_callback(move |ssl, _alert| {
        let ctx = cb.current();
        ssl.set_ssl_context(&ctx)
            .map_err(|_| openssl::ssl::SniError::ALERT_FATAL)
    });
    Ok((b, slot))
}

/// The SHA-256 fingerprint of a certificate's DER encoding, lower-case hex (the form of
/// registration pins).
pub fn fingerprint(cert: &X509Ref) -> String {
    cert.digest(MessageDigest::sha256())
        .map(|d| hex::encode(&*d))
        .unwrap_or_default()
}

/// Whether `cert`'s [`fingerprint`] is one of `pins` ([`pin_matches`]).
pub fn pinned(cert: &X509Ref, pins: &[String]) -> bool {
    pin_matches(&fingerprint(cert), pins)
}

/// A certificate pin as written (hex, any case, `:` separators allowed) in the form
/// [`fingerprint`] gives.
pub fn normalize_pin(pin: &str) -> String {
    pin.chars()
        .filter(|c| *c != ':')
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// Whether the fingerprint `fp` (as [`fingerprint`] gives it) is one of `pins`, each compared in
/// constant time after [`normalize_pin`]. Never true for an empty fingerprint.
pub fn pin_matches(fp: &str, pins: &[String]) -> bool {
    !fp.is_empty()
        && pins
            .iter()
            .any(|p| crate::constant_time_eq(normalize_pin(p).as_bytes(), fp.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let p = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/pki/tls/");
        std::fs::read(format!("{p}{name}")).expect("fixture")
    }

    fn platform() -> (Vec<u8>, Vec<u8>) {
        (fixture("platform.pem"), fixture("platform.key"))
    }

    #[test]
    fn builds_with_and_without_client_certificates() {
        let (cert, key) = platform();
        let ca = fixture("tls-root-ca.pem");
        for mode in [
            ClientCerts::None,
            ClientCerts::Optional,
            ClientCerts::Required,
        ] {
            let tls = ServerTls {
                cert_chain_pem: &cert,
                key_pem: &key,
                client_ca_pem: Some(&ca),
                client_certs: mode,
            };
            assert!(acceptor(&tls).is_ok(), "{mode:?}");
        }
    }

    #[test]
    fn refuses_a_key_of_another_certificate() {
        let cert = fixture("platform.pem");
        let key = fixture("sandbox-dp.key");
        let tls = ServerTls {
            cert_chain_pem: &cert,
            key_pem: &key,
            client_ca_pem: None,
            client_certs: ClientCerts::None,
        };
        let e = acceptor(&tls).err().expect("mismatched key refused");
        assert!(matches!(e, AcceptorError::Key(_)), "{e}");
        assert!(e.to_string().contains("does not match"), "{e}");
    }

    #[test]
    fn refuses_empty_or_missing_inputs() {
        let (cert, key) = platform();
        let no_cert = ServerTls {
            cert_chain_pem: b"not a certificate",
            key_pem: &key,
            client_ca_pem: None,
            client_certs: ClientCerts::None,
        };
        assert!(matches!(
            acceptor(&no_cert).err(),
            Some(AcceptorError::Certificate(_))
        ));
        let no_ca = ServerTls {
            cert_chain_pem: &cert,
            key_pem: &key,
            client_ca_pem: None,
            client_certs: ClientCerts::Required,
        };
        assert!(matches!(
            acceptor(&no_ca).err(),
            Some(AcceptorError::ClientCa(_))
        ));
        let bad_key = ServerTls {
            cert_chain_pem: &cert,
            key_pem: b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            client_ca_pem: None,
            client_certs: ClientCerts::None,
        };
        assert!(matches!(
            acceptor(&bad_key).err(),
            Some(AcceptorError::Key(_))
        ));
    }

    #[test]
    fn fingerprint_matches_openssl_and_pins_ignore_case_and_colons() {
        let cert = X509::from_pem(&fixture("sp-client.pem")).expect("pem");
        let fp = fingerprint(&cert);
        assert_eq!(fp.len(), 64);
        let der = cert.to_der().expect("der");
        use sha2::Digest;
        assert_eq!(fp, hex::encode(sha2::Sha256::digest(&der)));
        let colons: String = fp
            .to_uppercase()
            .as_bytes()
            .chunks(2)
            .map(|c| std::str::from_utf8(c).expect("hex"))
            .collect::<Vec<_>>()
            .join(":");
        assert!(pinned(&cert, &[colons]));
        let other = X509::from_pem(&fixture("platform-client.pem")).expect("pem");
        assert!(!pinned(&other, std::slice::from_ref(&fp)));
        assert!(!pinned(&cert, &[]));
    }
}
