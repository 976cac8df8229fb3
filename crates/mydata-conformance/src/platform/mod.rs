//! The `platform` suite: plays SP and DP toward a platform implementation and checks every rule
//! of the wire protocol that is observable from outside (spec `conformance-platform.md`).
//!
//! The suite serves the profile's SP URLs (SP-API receiver, return page) and DP URL (the
//! sandbox DP, signing with the fixture key, behind a recorder), drives the citizen pages per
//! spec D46 as a cookie-keeping browser, polls the MyData-API, and verifies what comes back
//! with the SP SDK. Everything runs over loopback.
//!
//! ```no_run
//! # async fn demo() {
//! use mydata_conformance::platform::{Profile, run};
//! let profile = Profile::sandbox(
//!     "http://127.0.0.1:8080",
//!     "http://127.0.0.1:8081",
//!     "http://127.0.0.1:8090",
//! );
//! let report = run(&profile).await;
//! print!("{}", report.summary());
//! # }
//! ```

mod checks;
pub mod profile;
mod roles;

pub use checks::{CHECKS, run};
pub use profile::{Profile, ProfileError};
