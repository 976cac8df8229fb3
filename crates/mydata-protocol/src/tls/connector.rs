//! Client-side TLS contexts (see the [module documentation](super)).
//!
//! [`connector`] builds the OpenSSL client context of every outgoing HTTPS connection the
//! project makes: the platform toward SP-APIs and DP-APIs, the DP SDK toward introspection and
//! userinfo, the SP SDK toward the MyData-API. The rules (spec protocol.md §1, D22, D49):
//!
//! - TLS 1.2 or later; TLS 1.0 and 1.1 are refused during the handshake.
//! - The server certificate is verified, and so is the host name or IP address of the URL
//!   (the caller gives the host to the connection, as awc does).
//! - Trust is [`Trust::System`] (OpenSSL's default verify paths, which `SSL_CERT_FILE` and
//!   `SSL_CERT_DIR` override), [`Trust::SystemPlus`] (the same plus a PEM bundle: the
//!   platform's `tls_ca_file`, an SDK's extra CA), or [`Trust::Only`] (a PEM bundle alone: the
//!   CA a registration pins, which replaces the system roots for that peer, so that a public CA
//!   cannot issue a certificate for that SP or DP).
//! - An optional client certificate (chain PEM and key PEM) is presented to servers that ask.
//!
//! Nothing here reads a file or opens a socket: the caller reads the PEM bytes.

use openssl::pkey::{PKey, Private};
use openssl::ssl::{SslConnector, SslConnectorBuilder, SslMethod, SslVersion};
use openssl::x509::X509;
use openssl::x509::store::X509StoreBuilder;

/// Where the server certificates of a connection must chain to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trust<'a> {
    /// The system roots only (OpenSSL's default verify paths).
    System,
    /// The system roots and the CA certificates of this PEM bundle.
    SystemPlus(&'a [u8]),
    /// The CA certificates of this PEM bundle only (a registration's pinned CA).
    Only(&'a [u8]),
}

/// A client certificate: the certificate chain (leaf first) and its private key, both PEM.
#[derive(Clone, Copy)]
pub struct ClientIdentity<'a> {
    /// The leaf certificate, then any intermediates, PEM.
    pub chain_pem: &'a [u8],
    /// The leaf's private key, PEM (PKCS#8, or traditional RSA/EC).
    pub key_pem: &'a [u8],
}

impl std::fmt::Debug for ClientIdentity<'_> {
    /// The lengths only: the key is secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("chain_pem_len", &self.chain_pem.len())
            .finish_non_exhaustive()
    }
}

/// What an outgoing connection trusts and presents.
#[derive(Debug, Clone, Copy)]
pub struct ClientTls<'a> {
    /// The server certificate's trust.
    pub trust: Trust<'a>,
    /// The client certificate presented when the server asks for one.
    pub identity: Option<ClientIdentity<'a>>,
}

impl Default for ClientTls<'_> {
    /// System roots, no client certificate.
    fn default() -> Self {
        ClientTls {
            trust: Trust::System,
            identity: None,
        }
    }
}

/// An owned [`ClientTls`], for SDK configurations that keep their PEM bytes (the DP SDK's
/// introspection client, the SP SDK's MyData-API poller).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TlsConfig {
    /// CA certificates (PEM) trusted besides the system roots, or instead of them with
    /// `ca_only`.
    pub ca_pem: Option<Vec<u8>>,
    /// `ca_pem` alone, without the system roots (pinning the platform's CA).
    pub ca_only: bool,
    /// The client certificate chain (PEM, leaf first) and its key (PEM).
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for TlsConfig {
    /// What is set, never the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig")
            .field("ca_pem", &self.ca_pem.is_some())
            .field("ca_only", &self.ca_only)
            .field("identity", &self.identity.is_some())
            .finish()
    }
}

impl TlsConfig {
    /// System roots, no client certificate.
    pub fn new() -> Self {
        TlsConfig::default()
    }

    /// Trusts the CA certificates of `pem` besides the system roots.
    pub fn with_extra_ca(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_pem = Some(pem.into());
        self.ca_only = false;
        self
    }

    /// Trusts the CA certificates of `pem` only (the system roots are not used).
    pub fn with_pinned_ca(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_pem = Some(pem.into());
        self.ca_only = true;
        self
    }

    /// Presents this client certificate chain (PEM, leaf first) and key (PEM) when asked.
    pub fn with_client_certificate(
        mut self,
        chain_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> Self {
        self.identity = Some((chain_pem.into(), key_pem.into()));
        self
    }

    /// The borrowed settings.
    pub fn as_client_tls(&self) -> ClientTls<'_> {
        ClientTls {
            trust: match (&self.ca_pem, self.ca_only) {
                (Some(pem), true) => Trust::Only(pem),
                (Some(pem), false) => Trust::SystemPlus(pem),
                (None, _) => Trust::System,
            },
            identity: self.identity.as_ref().map(|(c, k)| ClientIdentity {
                chain_pem: c,
                key_pem: k,
            }),
        }
    }

    /// The client context ([`connector`]).
    pub fn connector(&self) -> Result<SslConnector, ConnectorError> {
        connector(&self.as_client_tls())
    }
}

/// Why a client context could not be built. Each names the part of the configuration at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectorError {
    /// The CA bundle is not PEM certificates.
    #[error("the CA bundle is not a PEM certificate list: {0}")]
    CaBundle(String),
    /// The CA bundle holds no certificate.
    #[error("the CA bundle holds no certificate")]
    EmptyCaBundle,
    /// The client certificate chain is not PEM certificates, or is empty.
    #[error("the client certificate is not a PEM certificate chain: {0}")]
    ClientCertificate(String),
    /// The client key is not a PEM private key.
    #[error("the client key is not a PEM private key: {0}")]
    ClientKey(String),
    /// The client key is not the key of the client certificate.
    #[error("the client key does not belong to the client certificate")]
    KeyMismatch,
    /// OpenSSL refused a setting (an OpenSSL build without TLS 1.2, out of memory).
    #[error("OpenSSL: {0}")]
    OpenSsl(String),
}

fn ossl(e: openssl::error::ErrorStack) -> ConnectorError {
    ConnectorError::OpenSsl(e.to_string())
}

/// The CA certificates of a PEM bundle; at least one.
pub fn parse_ca_bundle(pem: &[u8]) -> Result<Vec<X509>, ConnectorError> {
    let certs = X509::stack_from_pem(pem).map_err(|e| ConnectorError::CaBundle(e.to_string()))?;
    if certs.is_empty() {
        return Err(ConnectorError::EmptyCaBundle);
    }
    Ok(certs)
}

/// The certificate chain (leaf first) and key of a client identity, checked to belong together.
pub fn parse_identity(
    id: &ClientIdentity<'_>,
) -> Result<(Vec<X509>, PKey<Private>), ConnectorError> {
    let chain = X509::stack_from_pem(id.chain_pem)
        .map_err(|e| ConnectorError::ClientCertificate(e.to_string()))?;
    if chain.is_empty() {
        return Err(ConnectorError::ClientCertificate(
            "no certificate in the PEM text".into(),
        ));
    }
    let key = PKey::private_key_from_pem(id.key_pem)
        .map_err(|e| ConnectorError::ClientKey(e.to_string()))?;
    let leaf_key = chain[0].public_key().map_err(ossl)?;
    if !leaf_key.public_eq(&key) {
        return Err(ConnectorError::KeyMismatch);
    }
    Ok((chain, key))
}

/// A client context builder for `tls`: TLS 1.2 minimum, peer verification on, the trust and
/// client certificate of `tls`. The caller may add to it (a verify callback that logs the
/// cause of a refusal, ALPN) before [`SslConnectorBuilder::build`]; host name verification
/// happens per connection (`SslConnector::configure` with the URL's host, as awc does).
pub fn connector_builder(tls: &ClientTls<'_>) -> Result<SslConnectorBuilder, ConnectorError> {
    // `SslConnector::builder` turns peer verification on, loads the default verify paths and
    // sets safe cipher suites.
    let mut b = SslConnector::builder(SslMethod::tls_client()).map_err(ossl)?;
    b.set_min_proto_version(Some(SslVersion::TLS1_2))
        .map_err(ossl)?;
    match tls.trust {
        Trust::System => {}
        Trust::SystemPlus(pem) => {
            for ca in parse_ca_bundle(pem)? {
                b.cert_store_mut().add_cert(ca).map_err(ossl)?;
            }
        }
        Trust::Only(pem) => {
            let mut store = X509StoreBuilder::new().map_err(ossl)?;
            for ca in parse_ca_bundle(pem)? {
                store.add_cert(ca).map_err(ossl)?;
            }
            b.set_verify_cert_store(store.build()).map_err(ossl)?;
        }
    }
    if let Some(id) = &tls.identity {
        let (chain, key) = parse_identity(id)?;
        let mut chain = chain.into_iter();
        if let Some(leaf) = chain.next() {
            b.set_certificate(&leaf).map_err(ossl)?;
        }
        for extra in chain {
            b.add_extra_chain_cert(extra).map_err(ossl)?;
        }
        b.set_private_key(&key).map_err(ossl)?;
        b.check_private_key()
            .map_err(|_| ConnectorError::KeyMismatch)?;
    }
    // HTTP/1.1 only: the platform's calls and the SDKs' are single requests on kept-alive
    // connections.
    b.set_alpn_protos(b"\x08http/1.1").map_err(ossl)?;
    Ok(b)
}

/// [`connector_builder`], built.
pub fn connector(tls: &ClientTls<'_>) -> Result<SslConnector, ConnectorError> {
    Ok(connector_builder(tls)?.build())
}

/// Whether the text of a failed connection's error comes from a TLS handshake that OpenSSL
/// refused (a certificate that does not verify, a host name that does not match, a protocol
/// version below TLS 1.2, a handshake alert such as a required client certificate that was
/// missing or refused), as opposed to the network (refused, reset, timed out). HTTP clients
/// built on OpenSSL (awc) keep only the error's text; OpenSSL's error stack names its library
/// as `SSL routines`.
pub fn is_handshake_refusal(error_text: &str) -> bool {
    error_text.contains("SSL routines")
        || error_text.contains("certificate verify failed")
        || error_text.contains("tlsv1 alert")
        || error_text.contains("tlsv13 alert")
        || error_text.contains("sslv3 alert")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn fixture(name: &str) -> Vec<u8> {
        let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../fixtures/pki/tls")
            .join(name);
        std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    #[test]
    fn builds_with_every_trust_and_identity() {
        let root = fixture("tls-root-ca.pem");
        let cert = fixture("platform-client.pem");
        let key = fixture("platform-client.key");
        for trust in [Trust::System, Trust::SystemPlus(&root), Trust::Only(&root)] {
            let c = connector(&ClientTls {
                trust,
                identity: Some(ClientIdentity {
                    chain_pem: &cert,
                    key_pem: &key,
                }),
            });
            assert!(c.is_ok(), "{trust:?}: {c:?}");
        }
    }

    #[test]
    fn the_minimum_version_is_tls_1_2() {
        let mut b = connector_builder(&ClientTls::default()).unwrap();
        assert_eq!(b.min_proto_version(), Some(SslVersion::TLS1_2));
    }

    #[test]
    fn bad_bundles_and_identities_are_named() {
        assert!(matches!(
            connector(&ClientTls {
                trust: Trust::SystemPlus(b"not pem"),
                identity: None
            }),
            Err(ConnectorError::EmptyCaBundle | ConnectorError::CaBundle(_))
        ));
        assert_eq!(
            connector(&ClientTls {
                trust: Trust::Only(b""),
                identity: None
            })
            .err(),
            Some(ConnectorError::EmptyCaBundle)
        );
        let cert = fixture("platform-client.pem");
        let other_key = fixture("sp-client.key");
        let e = connector(&ClientTls {
            trust: Trust::System,
            identity: Some(ClientIdentity {
                chain_pem: &cert,
                key_pem: &other_key,
            }),
        })
        .err();
        assert_eq!(e, Some(ConnectorError::KeyMismatch));
        let e = connector(&ClientTls {
            trust: Trust::System,
            identity: Some(ClientIdentity {
                chain_pem: &cert,
                key_pem: b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            }),
        })
        .err();
        assert!(matches!(e, Some(ConnectorError::ClientKey(_))), "{e:?}");
        let e = connector(&ClientTls {
            trust: Trust::System,
            identity: Some(ClientIdentity {
                chain_pem: b"",
                key_pem: &other_key,
            }),
        })
        .err();
        assert!(
            matches!(e, Some(ConnectorError::ClientCertificate(_))),
            "{e:?}"
        );
        let text = format!(
            "{:?}",
            ClientIdentity {
                chain_pem: &cert,
                key_pem: &other_key
            }
        );
        assert!(!text.contains("PRIVATE"), "{text}");
    }

    #[test]
    fn handshake_refusals_are_told_from_network_errors() {
        assert!(is_handshake_refusal(
            "error:0A000086:SSL routines:tls_post_process_server_certificate:certificate verify failed"
        ));
        assert!(!is_handshake_refusal("Connection refused (os error 111)"));
        assert!(!is_handshake_refusal(
            "Connection reset by peer (os error 104)"
        ));
    }
}
