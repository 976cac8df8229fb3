//! Time, injected: the SDK's core logic never reads the system clock directly.
//!
//! Every component that needs the time (the job store, the introspection cache,
//! the sandbox's slow datasets) takes an [`Arc<dyn Clock>`](Clock). Production
//! code uses [`SystemClock`]; tests use [`ManualClock`] and move time by hand.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use mydata_protocol::date::UnixTime;

/// A source of the current time, in whole seconds since the Unix epoch.
pub trait Clock: Send + Sync {
    /// The current time.
    fn now(&self) -> UnixTime;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
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
#[derive(Clone, Default)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    /// A clock set to `at`.
    pub fn new(at: UnixTime) -> Self {
        ManualClock(Arc::new(AtomicI64::new(at.0)))
    }

    /// Sets the time.
    pub fn set(&self, at: UnixTime) {
        self.0.store(at.0, Ordering::SeqCst);
    }

    /// Moves the time forward by `secs` seconds (backward if negative).
    pub fn advance(&self, secs: i64) {
        self.0.fetch_add(secs, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> UnixTime {
        UnixTime(self.0.load(Ordering::SeqCst))
    }
}

impl fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ManualClock({})", self.0.load(Ordering::SeqCst))
    }
}

/// The system clock as an `Arc<dyn Clock>`.
pub fn system() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
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
        assert!(SystemClock.now().0 > 1_700_000_000);
    }
}
