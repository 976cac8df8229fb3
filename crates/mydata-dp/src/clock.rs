//! Time, injected: the SDK's core logic never reads the system clock directly.
//!
//! Every component that needs the time (the job store, the introspection cache,
//! the sandbox's slow datasets) takes an [`Arc<dyn Clock>`](Clock). Production
//! code uses [`SystemClock`]; tests use [`ManualClock`] and move time by hand.
//! The three are the protocol core's ([`mydata_protocol::clock`]), re-exported here.

use std::sync::Arc;

pub use mydata_protocol::clock::{Clock, ManualClock, SystemClock};

/// The system clock as an `Arc<dyn Clock>`.
pub fn system() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}
