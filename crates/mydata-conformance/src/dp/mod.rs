//! The `dp` suite: plays the platform toward a data provider (DP) and checks every rule of the
//! DP-API that is observable from outside (spec `conformance-dp.md`).
//!
//! The DP under test is configured with the suite's address as its platform URL and with the
//! `resource_secret`s of the profile. The suite serves `/connect/introspect` and
//! `/connect/userinfo` there, issues its own tokens (one per call series, bound to its
//! `transaction_uid`, as the platform does), calls the DP's endpoints as the platform does
//! (§9.1: `transaction_uid`, `Authorization: Bearer`, `Accept: application/zip`, the template),
//! and judges the answers and the packages. Everything runs over loopback. A run takes about
//! `cache_secs` (the revocation check waits that long) or the slow dataset's time, whichever
//! is longer, plus a few seconds.
//!
//! ```no_run
//! # async fn demo() {
//! use mydata_conformance::dp::{Profile, run};
//! // The sandbox DP (`mydata sandbox-dp --platform http://127.0.0.1:9100`) on :8081.
//! let profile = Profile::sandbox("http://127.0.0.1:9100", "http://127.0.0.1:8081");
//! let report = run(&profile).await;
//! print!("{}", report.summary());
//! # }
//! ```

mod checks;
mod platform;
pub mod profile;

pub use checks::{CHECKS, run, run_on};
pub use profile::{DatasetProfile, Person, Profile, ProfileError};
