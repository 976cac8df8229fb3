//! Every outgoing connection of the platform (SP-API, DP-API): HTTPS with TLS 1.2 or later,
//! the server certificate and host name verified, mutual TLS when the peer asks (spec
//! protocol.md §1, D22, D49).
//!
//! - Trust: the system roots plus `tls_ca_file`; a registration that pins its own CA
//!   (`SpRecord::tls_ca`, `DpRecord::tls_ca`, `--tls-ca FILE`) is verified against that CA
//!   alone ([`mydata_protocol::tls::connector::Trust::Only`]).
//! - The platform's client certificate (`tls_client_cert`, `tls_client_key`) is presented to
//!   SPs and DPs that ask for one.
//! - Plain `http://` is refused outside the sandbox ([`check_scheme`]), at registration and at
//!   call time.
//!
//! awc clients are not `Send`: each worker thread caches one client per (timeouts, trust
//! configuration), so a peer's kept-alive connection serves the next call.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Duration;

use mydata_protocol::tls::connector::{self, ClientIdentity, ClientTls, ConnectorError, Trust};
use openssl::ssl::{SslConnector, SslVerifyMode};
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::error::{ServerError, ServerResult};

/// The log target of outgoing-connection failures (no personal data: peers and causes only).
pub const TLS_TARGET: &str = "mydata::tls";

/// The platform's TLS material for outgoing calls, read once from the configuration.
#[derive(Clone)]
pub struct Outbound {
    ca_pem: Option<Vec<u8>>,
    /// The system's CA bundle when OpenSSL's default paths would not find it (see
    /// [`system_bundle`]), then `ca_pem`: trusted besides the default paths.
    extra_pem: Option<Vec<u8>>,
    client_cert_pem: Option<Vec<u8>>,
    client_key_pem: Option<Vec<u8>>,
    plain_http: bool,
    /// SHA-256 of the material above: the cache key of this configuration.
    id: [u8; 32],
}

impl std::fmt::Debug for Outbound {
    /// What is configured, never the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbound")
            .field("extra_ca", &self.ca_pem.is_some())
            .field("client_cert", &self.client_cert_pem.is_some())
            .field("plain_http", &self.plain_http)
            .finish_non_exhaustive()
    }
}

fn read(key: &str, path: &std::path::Path) -> ServerResult<Vec<u8>> {
    std::fs::read(path)
        .map_err(|e| ServerError::Config(format!("{key}: cannot read {}: {e}", path.display())))
}

impl Outbound {
    /// Reads `tls_ca_file`, `tls_client_cert` and `tls_client_key` and checks that they make
    /// a client context (PEM that parses, a key that matches its certificate, both or neither
    /// of certificate and key).
    pub fn from_config(c: &Config) -> ServerResult<Self> {
        let mut ca_pem = c
            .tls_ca_file
            .as_deref()
            .map(|p| read("tls_ca_file", p))
            .transpose()?;
        // The sandbox on HTTPS trusts its own TLS root besides (spec D50, `sandbox_tls`): its
        // DP and SPs serve certificates of the sandbox TLS PKI. Without `sandbox_tls` the
        // sandbox trusts what production does.
        if c.sandbox && c.sandbox_tls {
            let mut pem = ca_pem.unwrap_or_default();
            if !pem.is_empty() && !pem.ends_with(b"\n") {
                pem.push(b'\n');
            }
            pem.extend_from_slice(mydata_protocol::tls::sandbox::ROOT_CA);
            ca_pem = Some(pem);
        }
        let (client_cert_pem, client_key_pem) = match (&c.tls_client_cert, &c.tls_client_key) {
            (Some(cert), Some(key)) => (
                Some(read("tls_client_cert", cert)?),
                Some(read("tls_client_key", key)?),
            ),
            // The sandbox on HTTPS presents the sandbox's platform client certificate, so
            // that sandbox SPs and DPs may require mutual TLS (spec D50, `sandbox_tls`).
            (None, None) if c.sandbox && c.sandbox_tls => (
                Some(mydata_protocol::tls::sandbox::PLATFORM_CLIENT_CERT.to_vec()),
                Some(mydata_protocol::tls::sandbox::PLATFORM_CLIENT_KEY.to_vec()),
            ),
            (None, None) => (None, None),
            (Some(_), None) => {
                return Err(ServerError::Config(
                    "tls_client_cert is set without tls_client_key".into(),
                ));
            }
            (None, Some(_)) => {
                return Err(ServerError::Config(
                    "tls_client_key is set without tls_client_cert".into(),
                ));
            }
        };
        Self::from_pem(ca_pem, client_cert_pem.zip(client_key_pem), c.sandbox)
    }

    /// The same from PEM bytes: an extra CA bundle, a client certificate chain and key.
    pub fn from_pem(
        ca_pem: Option<Vec<u8>>,
        client: Option<(Vec<u8>, Vec<u8>)>,
        sandbox: bool,
    ) -> ServerResult<Self> {
        let (client_cert_pem, client_key_pem) = match client {
            Some((c, k)) => (Some(c), Some(k)),
            None => (None, None),
        };
        let mut h = Sha256::new();
        for part in [&ca_pem, &client_cert_pem, &client_key_pem] {
            let bytes = part.as_deref().unwrap_or_default();
            h.update((bytes.len() as u64).to_be_bytes());
            h.update(bytes);
        }
        if let Some(pem) = &ca_pem {
            connector::parse_ca_bundle(pem)
                .map_err(|e| ServerError::Config(format!("tls_ca_file: {e}")))?;
        }
        let extra_pem = match (system_bundle(), &ca_pem) {
            (None, None) => None,
            (system, ca) => {
                let mut all = system.unwrap_or_default();
                all.push(b'\n');
                all.extend_from_slice(ca.as_deref().unwrap_or_default());
                Some(all)
            }
        };
        let out = Outbound {
            extra_pem,
            ca_pem,
            client_cert_pem,
            client_key_pem,
            plain_http: sandbox,
            id: h.finalize().into(),
        };
        out.connector(None).map_err(|e| {
            let key = match e {
                ConnectorError::CaBundle(_) | ConnectorError::EmptyCaBundle => "tls_ca_file",
                ConnectorError::ClientKey(_) | ConnectorError::KeyMismatch => "tls_client_key",
                _ => "tls_client_cert",
            };
            ServerError::Config(format!("{key}: {e}"))
        })?;
        Ok(out)
    }

    /// Whether plain `http://` peers are allowed: in the sandbox only, unless
    /// [`Outbound::with_plain_http`] said otherwise.
    pub fn plain_http(&self) -> bool {
        self.plain_http
    }

    /// Allows (or refuses) plain `http://` SP-API and DP endpoints whatever the sandbox says:
    /// for tests of the production rules against peers on loopback HTTP. `mydata serve` never
    /// calls it.
    pub fn with_plain_http(mut self, allowed: bool) -> Self {
        self.plain_http = allowed;
        self
    }

    /// The client context toward a peer whose registration pins `pinned_ca` (PEM), or toward
    /// any peer with the system roots and `tls_ca_file`. Refusals of the server certificate
    /// are logged with their cause (expired, host name mismatch, unknown issuer).
    pub fn connector(&self, pinned_ca: Option<&str>) -> Result<SslConnector, ConnectorError> {
        let trust = match (pinned_ca, &self.extra_pem) {
            (Some(pem), _) => Trust::Only(pem.as_bytes()),
            (None, Some(pem)) => Trust::SystemPlus(pem),
            (None, None) => Trust::System,
        };
        let identity = self
            .client_cert_pem
            .as_deref()
            .zip(self.client_key_pem.as_deref())
            .map(|(chain_pem, key_pem)| ClientIdentity { chain_pem, key_pem });
        let mut b = connector::connector_builder(&ClientTls { trust, identity })?;
        b.set_verify_callback(SslVerifyMode::PEER, |ok, ctx| {
            if !ok {
                tracing::warn!(
                    target: TLS_TARGET,
                    depth = ctx.error_depth(),
                    "TLS: the peer's certificate is refused: {}",
                    ctx.error()
                );
            }
            ok
        });
        Ok(b.build())
    }

    /// This thread's client toward a peer pinning `pinned_ca` (or none), with these timeouts;
    /// it follows no redirect (D22, D29).
    pub fn client(
        &self,
        timing: Timing,
        pinned_ca: Option<&str>,
    ) -> Result<awc::Client, ConnectorError> {
        let mut h = Sha256::new();
        h.update(self.id);
        if let Some(pem) = pinned_ca {
            h.update(pem.as_bytes());
        }
        let key = CacheKey {
            timing,
            trust: h.finalize().into(),
        };
        CLIENTS.with(|cache| {
            let mut cache = cache.borrow_mut();
            if let Some(c) = cache.get(&key) {
                return Ok(c.clone());
            }
            let client = awc::Client::builder()
                .timeout(timing.total)
                .connector(
                    awc::Connector::new()
                        .timeout(timing.connect)
                        .handshake_timeout(timing.connect)
                        .conn_keep_alive(timing.keep_alive)
                        .openssl(self.connector(pinned_ca)?),
                )
                .disable_redirects()
                .finish();
            // A bounded cache: registrations with their own CA are few; a thread that saw many
            // starts again rather than growing.
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
            cache.insert(key, client.clone());
            Ok(client)
        })
    }
}

/// The system's CA bundle, read once, when OpenSSL would not find it itself: a `bundled`
/// (vendored) OpenSSL looks in its build-time directory (`/usr/local/ssl`), not the
/// distribution's. `None` when `SSL_CERT_FILE` or `SSL_CERT_DIR` is set (OpenSSL reads them) or
/// no bundle is found.
fn system_bundle() -> Option<Vec<u8>> {
    static BUNDLE: std::sync::OnceLock<Option<Vec<u8>>> = std::sync::OnceLock::new();
    BUNDLE
        .get_or_init(|| {
            if openssl_probe::has_ssl_cert_env_vars() {
                return None;
            }
            let file = openssl_probe::probe().cert_file?;
            std::fs::read(file).ok()
        })
        .clone()
}

/// The timeouts of a client (the SP-API's and the DP-API's differ, D22, D29).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Timing {
    /// Connect timeout; also the TLS handshake's.
    pub connect: Duration,
    /// Default total time of a request (a call may set its own).
    pub total: Duration,
    /// How long an idle connection is kept for the next call.
    pub keep_alive: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct CacheKey {
    timing: Timing,
    trust: [u8; 32],
}

/// The most clients a worker thread keeps.
const MAX_CACHED: usize = 64;

thread_local! {
    static CLIENTS: RefCell<HashMap<CacheKey, awc::Client>> = RefCell::new(HashMap::new());
}

/// Checks the scheme of an outgoing URL (`what` names it in the message): `https://` always;
/// `http://` only when `plain_http` (the sandbox, D49). Any other scheme is refused.
pub fn check_scheme(plain_http: bool, what: &str, url: &str) -> Result<(), String> {
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    if lower.starts_with("https://") {
        return Ok(());
    }
    if lower.starts_with("http://") {
        if plain_http {
            return Ok(());
        }
        return Err(format!(
            "{what}: plain http:// is refused outside the sandbox; every server-to-server call \
             uses HTTPS (spec §1, D49): register an https:// URL"
        ));
    }
    Err(format!("{what}: http or https only"))
}

/// Checks a registration's pinned CA bundle (`--tls-ca`): PEM certificates, at least one.
pub fn check_pinned_ca(what: &str, pem: &str) -> Result<(), String> {
    connector::parse_ca_bundle(pem.as_bytes())
        .map(|_| ())
        .map_err(|e| format!("{what}: {e}"))
}

/// Whether a failed call's error is a TLS refusal (not the network), and its text: during the
/// handshake, or, with TLS 1.3, the server's alert refusing the client certificate, which
/// arrives with the first read after the client has sent its request.
pub fn tls_refusal(e: &awc::error::SendRequestError) -> Option<String> {
    use awc::error::{ConnectError, SendRequestError};
    match e {
        SendRequestError::Connect(ConnectError::SslError(e)) => Some(e.to_string()),
        other => {
            let text = other.to_string();
            connector::is_handshake_refusal(&text).then_some(text)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_is_refused_outside_the_sandbox_only() {
        assert!(check_scheme(false, "sp_api_url", "https://sp.example/api").is_ok());
        assert!(check_scheme(false, "sp_api_url", "HTTPS://sp.example/api").is_ok());
        let e = check_scheme(false, "sp_api_url", "http://127.0.0.1:9/api").unwrap_err();
        assert!(e.contains("sp_api_url") && e.contains("http://"), "{e}");
        assert!(check_scheme(true, "endpoint", "http://127.0.0.1:9/api").is_ok());
        assert!(check_scheme(true, "endpoint", "ftp://x/").is_err());
        assert!(check_scheme(false, "endpoint", "").is_err());
    }

    #[test]
    fn a_key_without_its_certificate_is_refused() {
        let c = Config {
            tls_client_key: Some("/nonexistent".into()),
            ..Config::default()
        };
        let e = Outbound::from_config(&c).unwrap_err().to_string();
        assert!(e.contains("tls_client_key"), "{e}");
    }

    #[test]
    fn a_bad_ca_file_names_its_key() {
        let e = Outbound::from_pem(Some(b"nothing".to_vec()), None, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("tls_ca_file"), "{e}");
        assert!(check_pinned_ca("--tls-ca", "nothing").is_err());
    }
}
