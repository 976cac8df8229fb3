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

pub mod acceptor;
pub mod connector;
pub mod sandbox;
