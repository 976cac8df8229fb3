//! The server's one source of time. Tests inject a [`ManualClock`]; the protocol core never reads
//! the clock, and neither does any handler except through [`Clock`].
//!
//! [`Clock`], [`SystemClock`] and [`ManualClock`] are the protocol core's
//! ([`mydata_protocol::clock`]), re-exported here; the server adds [`SharedClock`] and the
//! sandbox's [`OffsetClock`].

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use mydata_protocol::date::UnixTime;

pub use mydata_protocol::clock::{Clock, ManualClock, SystemClock};

/// A shared clock.
pub type SharedClock = Arc<dyn Clock>;

/// The system clock plus an offset that only grows (sandbox `--sandbox-clock`, spec
/// `conformance-platform.md`): lets a conformance suite jump past the 8-hour retention without
/// waiting. Clones share the same offset. Never for production.
#[derive(Debug, Clone, Default)]
pub struct OffsetClock(Arc<AtomicI64>);

impl OffsetClock {
    /// A clock at system time (offset 0).
    pub fn new() -> Self {
        OffsetClock::default()
    }

    /// Moves the clock forward by `secs` seconds (saturating).
    pub fn advance(&self, secs: i64) {
        let _ = self
            .0
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |o| {
                Some(o.saturating_add(secs))
            });
    }

    /// The current offset from system time, in seconds.
    pub fn offset(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

impl Clock for OffsetClock {
    fn now(&self) -> UnixTime {
        UnixTime(SystemClock.now().0.saturating_add(self.offset()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_clock_moves_with_the_system_and_by_advances() {
        let c = OffsetClock::new();
        let before = SystemClock.now().0;
        let a = c.now().0;
        assert!(a >= before && a - before < 5);
        c.clone().advance(28_801);
        assert_eq!(c.offset(), 28_801);
        assert!(c.now().0 >= before + 28_801);
        c.advance(i64::MAX);
        assert_eq!(c.offset(), i64::MAX);
        assert!(c.now().0 > 0);
    }
}
