//! HTTPS toward the platform, and mutual TLS from it (issue 15, spec D49). Feature `tls` (on
//! by default).
//!
//! - [`TlsConfig`]: what the SDK's client trusts (the system roots, plus or instead of a CA
//!   bundle) and the client certificate it presents. TLS 1.2 or later; the platform's
//!   certificate and host name are verified.
//! - [`acceptor_requiring_platform`]: a server context for actix-web's `bind_openssl` that
//!   requires the platform's client certificate: it must chain to the given CA and, when pins
//!   are given, have one of those SHA-256 fingerprints ([`fingerprint`]).

pub use mydata_protocol::tls::acceptor::{AcceptorError, fingerprint};
pub use mydata_protocol::tls::connector::{ConnectorError, TlsConfig};
pub use mydata_protocol::tls::pin::acceptor_requiring_client as acceptor_requiring_platform;
