//! # mydata-protocol
//!
//! The protocol core of the MyData platform (個人化資料自主運用): identifiers,
//! parameter encryption, the MyData-API JWE, DP and SP data packages, return
//! codes and identity levels. It performs no network or file I/O of its own —
//! package functions read from and write to caller-supplied `Read`/`Write`
//! values — and it never reads the clock: every time-dependent check takes a
//! [`date::UnixTime`]. It defines the [`clock::Clock`] that the layers above inject, but none of
//! its functions calls one.
//!
//! The wire formats follow the platform in service; `spec/` in the repository
//! documents them and every decision this crate makes where the platform's
//! documents are silent.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod attempts;
pub mod catalogue;
pub mod certlogin;
pub mod clock;
pub mod codes;
pub mod date;
pub mod dpapi;
pub mod error;
pub mod flow;
pub mod heartbeat;
pub mod ids;
pub mod jwe;
pub mod package;
pub mod param;
pub mod person;
mod random;
pub mod resources;
pub mod template;
pub mod tls;

pub use error::{Error, IdKind, Result};

/// Whether two byte strings are equal, comparing every byte of equal-length inputs (no early
/// exit), for secrets such as API keys, one-time password digests and CSRF tokens. Lengths are
/// not hidden.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
