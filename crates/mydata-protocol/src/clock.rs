//! The clock the layers above the core inject: the server, the DP SDK, the command line.
//!
//! The core itself never reads the time (D15): every check takes a [`UnixTime`] parameter, and no
//! function of this crate calls a [`Clock`]. The trait lives here, next to [`UnixTime`], so that
//! every crate built on the core shares one definition: production code passes a
//! [`SystemClock`], tests a [`ManualClock`] that they move by hand.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use crate::date::UnixTime;

/// A source of the current time, in whole seconds since the Unix epoch.
pub trait Clock: Send + Sync {
    /// The current instant.
    fn now(&self) -> UnixTime;
}

/// The operating system's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> UnixTime {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        UnixTime(secs)
    }
}

/// A clock that only moves when told to (for tests). Clones share the same time.
#[derive(Debug, Clone, Default)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    /// A clock standing at `at`.
    pub fn new(at: UnixTime) -> Self {
        ManualClock(Arc::new(AtomicI64::new(at.0)))
    }

    /// Sets the clock to `at`.
    pub fn set(&self, at: UnixTime) {
        self.0.store(at.0, Ordering::SeqCst);
    }

    /// Moves the clock forward by `secs` seconds (backward if negative).
    pub fn advance(&self, secs: i64) {
        self.0.fetch_add(secs, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> UnixTime {
        UnixTime(self.0.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::new(UnixTime(100));
        let shared = c.clone();
        assert_eq!(c.now(), UnixTime(100));
        shared.advance(5);
        assert_eq!(c.now(), UnixTime(105));
        c.set(UnixTime(7));
        assert_eq!(shared.now(), UnixTime(7));
        assert_eq!(format!("{c:?}"), "ManualClock(7)");
        assert!(SystemClock.now().0 > 1_700_000_000);
    }
}
