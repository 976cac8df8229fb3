//! HTTPS on the listener (spec D50): the certificate files of the configuration, taken up again
//! when they change, and the client certificate of each connection.
//!
//! The contexts are built by [`mydata_protocol::tls::acceptor`]; this module reads the files,
//! watches them, and hands each connection's verified client certificate to the handlers.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use mydata_protocol::tls::acceptor::{self, ClientCerts, Reloadable, ServerTls};
use mydata_protocol::tls::sandbox;
use openssl::ssl::SslAcceptorBuilder;
use openssl::x509::X509;

use crate::config::Config;
use crate::error::{ServerError, ServerResult};

/// How often the certificate files are looked at for a change.
pub const RELOAD_CHECK: Duration = Duration::from_secs(2);

/// The client certificate a connection presented, verified against `tls_client_ca` during the
/// handshake (a certificate that does not chain ends the handshake). Stored in the connection's
/// data: `req.conn_data::<PeerCert>()`.
#[derive(Debug, Clone)]
pub struct PeerCert {
    /// The certificate.
    pub cert: X509,
    /// Its SHA-256 fingerprint, lower-case hex (the form of registration pins), computed once
    /// per connection.
    pub sha256: String,
}

/// A stamp of one file: its modification time and length.
type Stamp = Option<(Option<SystemTime>, u64)>;

/// The listener's certificate files and the slot new handshakes take their context from.
pub struct ListenerTls {
    /// `None`: the sandbox's compiled-in certificate (`sandbox_tls`), never reloaded.
    paths: Option<Paths>,
    slot: Reloadable,
    stamps: Mutex<[Stamp; 3]>,
}

impl std::fmt::Debug for ListenerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerTls")
            .field("files", &self.paths.as_ref().map(Paths::describe))
            .finish_non_exhaustive()
    }
}

/// The three files of the configuration.
struct Paths {
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
}

struct Files {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
}

impl Files {
    fn tls(&self) -> ServerTls<'_> {
        ServerTls {
            cert_chain_pem: &self.cert,
            key_pem: &self.key,
            client_ca_pem: self.client_ca.as_deref(),
            client_certs: if self.client_ca.is_some() {
                ClientCerts::Optional
            } else {
                ClientCerts::None
            },
        }
    }
}

fn stamp(p: &PathBuf) -> Stamp {
    std::fs::metadata(p)
        .ok()
        .map(|m| (m.modified().ok(), m.len()))
}

impl ListenerTls {
    /// The listener's TLS when `tls_cert` is set: the acceptor to bind with and the watcher of
    /// its files. Fails, naming the file, when one cannot be read or the certificate and key
    /// do not go together.
    pub fn from_config(c: &Config) -> ServerResult<Option<(SslAcceptorBuilder, Arc<Self>)>> {
        if c.tls_cert.is_none() && c.sandbox && c.sandbox_tls {
            return Self::sandbox(c).map(Some);
        }
        let (Some(cert), Some(key)) = (&c.tls_cert, &c.tls_key) else {
            if c.tls_cert.is_some() || c.tls_key.is_some() || c.tls_client_ca.is_some() {
                return Err(ServerError::Config(
                    "tls_cert and tls_key go together (tls_client_ca needs both)".into(),
                ));
            }
            return Ok(None);
        };
        let paths = Paths {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: c.tls_client_ca.clone(),
        };
        let (stamps, files) = paths.read()?;
        let (builder, slot) = acceptor::reloadable(&files.tls())
            .map_err(|e| ServerError::Config(format!("{}: {e}", paths.describe())))?;
        let this = Arc::new(ListenerTls {
            paths: Some(paths),
            slot,
            stamps: Mutex::new(stamps),
        });
        Ok(Some((builder, this)))
    }

    /// The sandbox's compiled-in `platform` certificate (`sandbox_tls` without `tls_cert`),
    /// with `tls_client_ca` if set.
    fn sandbox(c: &Config) -> ServerResult<(SslAcceptorBuilder, Arc<Self>)> {
        let client_ca =
            match &c.tls_client_ca {
                Some(p) => Some(std::fs::read(p).map_err(|e| {
                    ServerError::Config(format!("tls_client_ca {}: {e}", p.display()))
                })?),
                None => None,
            };
        let files = Files {
            cert: sandbox::PLATFORM_CERT.to_vec(),
            key: sandbox::PLATFORM_KEY.to_vec(),
            client_ca,
        };
        let (builder, slot) = acceptor::reloadable(&files.tls())
            .map_err(|e| ServerError::Config(format!("the sandbox TLS certificate: {e}")))?;
        let this = Arc::new(ListenerTls {
            paths: None,
            slot,
            stamps: Mutex::new([None, None, None]),
        });
        Ok((builder, this))
    }

    /// Reads the files again and makes them the context of new handshakes. On any error the
    /// context in force stays, and the error says why.
    pub fn reload(&self) -> ServerResult<()> {
        let Some(paths) = &self.paths else {
            return Ok(());
        };
        let (stamps, files) = paths.read()?;
        let ctx = acceptor::context(&files.tls())
            .map_err(|e| ServerError::Config(format!("{}: {e}", paths.describe())))?;
        self.slot.replace(ctx);
        *self.stamps.lock().unwrap_or_else(|e| e.into_inner()) = stamps;
        Ok(())
    }

    /// [`reload`](Self::reload) when a file's modification time or length changed since the
    /// last read; a change that fails to load is not tried again until the files change again.
    /// Returns whether a new context is in force.
    pub fn reload_if_changed(&self) -> bool {
        let Some(paths) = &self.paths else {
            return false;
        };
        let now = paths.stamps_now();
        {
            let mut seen = self.stamps.lock().unwrap_or_else(|e| e.into_inner());
            if *seen == now {
                return false;
            }
            *seen = now;
        }
        match self.reload() {
            Ok(()) => {
                tracing::warn!(target: "mydata::tls", files = %paths.describe(), "listener certificate reloaded");
                true
            }
            Err(e) => {
                tracing::error!(target: "mydata::tls", error = %e, "listener certificate not reloaded (the previous one stays)");
                false
            }
        }
    }

    /// Looks at the files every [`RELOAD_CHECK`] on a thread of its own, until `self` is
    /// dropped (the server that holds it stopped).
    pub fn watch(self: &Arc<Self>) {
        if self.paths.is_none() {
            return;
        }
        let weak: Weak<Self> = Arc::downgrade(self);
        let spawned = std::thread::Builder::new()
            .name("mydata-tls-watch".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(RELOAD_CHECK);
                    match weak.upgrade() {
                        Some(t) => {
                            t.reload_if_changed();
                        }
                        None => return,
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!(target: "mydata::tls", error = %e, "cannot watch the listener's certificate files");
        }
    }
}

impl Paths {
    fn describe(&self) -> String {
        match &self.client_ca {
            Some(ca) => format!(
                "tls_cert {}, tls_key {}, tls_client_ca {}",
                self.cert.display(),
                self.key.display(),
                ca.display()
            ),
            None => format!(
                "tls_cert {}, tls_key {}",
                self.cert.display(),
                self.key.display()
            ),
        }
    }

    fn stamps_now(&self) -> [Stamp; 3] {
        [
            stamp(&self.cert),
            stamp(&self.key),
            self.client_ca.as_ref().and_then(stamp),
        ]
    }

    /// Reads the three files, stamped before reading (a file changed while read is read again
    /// at the next check).
    fn read(&self) -> ServerResult<([Stamp; 3], Files)> {
        let stamps = self.stamps_now();
        let read = |key: &str, p: &PathBuf| {
            std::fs::read(p).map_err(|e| ServerError::Config(format!("{key} {}: {e}", p.display())))
        };
        let files = Files {
            cert: read("tls_cert", &self.cert)?,
            key: read("tls_key", &self.key)?,
            client_ca: match &self.client_ca {
                Some(p) => Some(read("tls_client_ca", p)?),
                None => None,
            },
        };
        Ok((stamps, files))
    }
}

/// The `on_connect` hook of the server: keeps a TLS connection's client certificate, if any.
pub fn on_connect(conn: &dyn std::any::Any, data: &mut actix_web::dev::Extensions) {
    type Tls = actix_tls::accept::openssl::TlsStream<actix_web::rt::net::TcpStream>;
    if let Some(tls) = conn.downcast_ref::<Tls>()
        && let Some(cert) = tls.ssl().peer_certificate()
    {
        let sha256 = acceptor::fingerprint(&cert);
        data.insert(PeerCert { cert, sha256 });
    }
}
