//! # mydata-conformance
//!
//! Three conformance suites, runnable offline, for implementations of the MyData online service
//! (spec `protocol.md`, `sp-developers.md`):
//!
//! - [`platform`]: plays SP and DP toward a platform implementation and checks every rule that
//!   is observable from outside (codes, headers, `Retry-After`, one-shot tickets, JWE modes,
//!   package format, the source-IP allowlist, retention).
//! - [`sp`]: plays the platform toward an SP implementation and checks its reactions through
//!   the documented conformance hook.
//!
//! - [`dp`]: plays the platform toward a DP (its authorization server and its DP-API calls)
//!   and checks tokens, `transaction_uid` handling, answers and packages.
//!
//! All three produce a [`report::Report`]: a readable summary, JUnit XML for CI, and a failure count
//! that the `mydata conformance` command turns into its exit status.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod dp;
pub mod platform;
pub mod report;
pub mod sp;
