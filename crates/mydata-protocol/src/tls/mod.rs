//! TLS settings shared by every connection the project makes or accepts (issue 15).
//!
//! One TLS stack for the workspace: the OpenSSL already linked for package signatures
//! (`openssl/vendored` under the `bundled` feature). This module only *builds* OpenSSL
//! contexts from PEM bytes the caller has read; it opens no file and no socket.
//!
//! - [`connector`]: client contexts (TLS 1.2+, hostname verification, system roots plus an
//!   optional CA bundle, an optional client certificate).
//! - [`acceptor`]: server contexts (certificate and key, TLS 1.2+, optional or required client
//!   certificates checked against a CA bundle).
//! - [`sandbox`]: the sandbox TLS PKI, compiled in.
//! - [`pin`]: a required client certificate narrowed to SHA-256 pins (an SP or DP accepting
//!   only the platform's client certificate).
//!
//! Outgoing connections (spec protocol.md §1, D22, D49): TLS 1.2 minimum, the peer's
//! certificate and host name verified, trust from the system roots plus an optional CA bundle,
//! or a registration's pinned CA alone; a TLS refusal fails closed (410 toward an SP-API, 504
//! for a DP's dataset) and is never retried.

pub mod acceptor;
pub mod connector;
pub mod pin;
pub mod sandbox;
