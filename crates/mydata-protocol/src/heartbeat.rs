//! The platform side of the DP heartbeat (spec §9.4, D30): which endpoints are reachable, from
//! the results of `GET {endpoint}?heartbeat=true`, and when each is probed next. No I/O: the
//! caller makes the probes and passes their results and the time in.
//!
//! A probe is healthy when the DP answered 200 within [`TIMEOUT_SECS`]; any other status, a
//! transport error or no answer in time is a failure. [`FAILURES_TO_UNREACHABLE`] consecutive
//! failures make the endpoint unreachable (§5.3 step 10 then answers 504, D21); one healthy probe
//! makes it reachable again. An endpoint never probed is reachable.

use std::collections::BTreeMap;

use crate::date::UnixTime;

/// Seconds between two probes of one endpoint (D30).
pub const INTERVAL_SECS: u64 = 300;
/// A probe not answered within this many seconds is a failure (D30).
pub const TIMEOUT_SECS: u64 = 10;
/// Consecutive failures that make an endpoint unreachable (D30).
pub const FAILURES_TO_UNREACHABLE: u32 = 3;

/// The result of one probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Probe {
    /// The DP answered with this HTTP status.
    Status(u16),
    /// No answer: the connection was refused or reset, or the answer broke off.
    Transport,
    /// No answer within [`TIMEOUT_SECS`].
    Timeout,
}

impl Probe {
    /// Whether the probe counts as healthy: a 200, nothing else.
    pub fn healthy(self) -> bool {
        self == Probe::Status(200)
    }
}

impl std::fmt::Display for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Probe::Status(s) => write!(f, "status {s}"),
            Probe::Transport => f.write_str("transport error"),
            Probe::Timeout => f.write_str("timeout"),
        }
    }
}

/// A change of an endpoint's reachability, returned by [`Heartbeats::record`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Change {
    /// The failure that made it unreachable.
    BecameUnreachable,
    /// The healthy probe that made it reachable again.
    BecameReachable,
}

/// What is known of one endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndpointHealth {
    /// Failures since the last healthy probe.
    pub failures: u32,
    /// The last probe's result, if any.
    pub last: Option<Probe>,
    /// When it was last probed.
    pub last_at: Option<UnixTime>,
    /// When the next probe is due.
    pub next_due: UnixTime,
}

impl EndpointHealth {
    /// Whether §5.3 step 10 may call it: fewer than [`FAILURES_TO_UNREACHABLE`] failures in a
    /// row.
    pub fn is_reachable(&self) -> bool {
        self.failures < FAILURES_TO_UNREACHABLE
    }
}

/// The heartbeat state of every DP endpoint, keyed by the endpoint URL (several datasets may
/// share one endpoint: it is probed once).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeats {
    interval_secs: i64,
    endpoints: BTreeMap<String, EndpointHealth>,
}

impl Heartbeats {
    /// No endpoint yet; probes `interval_secs` apart (at least 1).
    pub fn new(interval_secs: u64) -> Self {
        Heartbeats {
            interval_secs: i64::try_from(interval_secs.max(1)).unwrap_or(i64::MAX),
            endpoints: BTreeMap::new(),
        }
    }

    /// Makes the tracked endpoints exactly `endpoints` (the registered DP endpoints now): a new
    /// one is reachable and first probed one interval after `now`; one no longer registered is
    /// forgotten.
    pub fn sync<I, S>(&mut self, endpoints: I, now: UnixTime)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let wanted: std::collections::BTreeSet<String> =
            endpoints.into_iter().map(Into::into).collect();
        self.endpoints.retain(|e, _| wanted.contains(e));
        let first = self.after(now);
        for e in wanted {
            self.endpoints.entry(e).or_insert(EndpointHealth {
                failures: 0,
                last: None,
                last_at: None,
                next_due: first,
            });
        }
    }

    fn after(&self, now: UnixTime) -> UnixTime {
        UnixTime(now.0.saturating_add(self.interval_secs))
    }

    /// The endpoints whose probe is due at `now`, in URL order.
    pub fn due(&self, now: UnixTime) -> Vec<String> {
        self.endpoints
            .iter()
            .filter(|(_, h)| h.next_due <= now)
            .map(|(e, _)| e.clone())
            .collect()
    }

    /// The earliest time a probe is due, if any endpoint is tracked.
    pub fn next_due(&self) -> Option<UnixTime> {
        self.endpoints.values().map(|h| h.next_due).min()
    }

    /// Records the result of a probe of `endpoint` made at `now` and schedules the next one an
    /// interval later. Returns the change of reachability it caused, if any. An endpoint not
    /// tracked (unregistered since the probe started) is ignored.
    pub fn record(&mut self, endpoint: &str, result: Probe, now: UnixTime) -> Option<Change> {
        let next = self.after(now);
        let h = self.endpoints.get_mut(endpoint)?;
        let was = h.is_reachable();
        if result.healthy() {
            h.failures = 0;
        } else {
            h.failures = h.failures.saturating_add(1);
        }
        h.last = Some(result);
        h.last_at = Some(now);
        h.next_due = next;
        match (was, h.is_reachable()) {
            (true, false) => Some(Change::BecameUnreachable),
            (false, true) => Some(Change::BecameReachable),
            _ => None,
        }
    }

    /// Whether `endpoint` may be called: true unless it is tracked and unreachable.
    pub fn is_reachable(&self, endpoint: &str) -> bool {
        self.endpoints
            .get(endpoint)
            .is_none_or(EndpointHealth::is_reachable)
    }

    /// What is known of `endpoint`.
    pub fn get(&self, endpoint: &str) -> Option<&EndpointHealth> {
        self.endpoints.get(endpoint)
    }

    /// The unreachable endpoints, in URL order.
    pub fn unreachable(&self) -> Vec<&str> {
        self.endpoints
            .iter()
            .filter(|(_, h)| !h.is_reachable())
            .map(|(e, _)| e.as_str())
            .collect()
    }

    /// How many tracked endpoints are reachable and unreachable.
    pub fn counts(&self) -> (usize, usize) {
        let down = self
            .endpoints
            .values()
            .filter(|h| !h.is_reachable())
            .count();
        (self.endpoints.len() - down, down)
    }
}

impl Default for Heartbeats {
    fn default() -> Self {
        Heartbeats::new(INTERVAL_SECS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "https://dp.example/api/a";
    const B: &str = "https://dp.example/api/b";

    #[test]
    fn three_failures_make_unreachable_and_one_success_reachable() {
        let mut h = Heartbeats::new(300);
        h.sync([A, B], UnixTime(1_000));
        assert!(h.is_reachable(A));
        assert_eq!(h.record(A, Probe::Status(500), UnixTime(1_300)), None);
        assert_eq!(h.record(A, Probe::Timeout, UnixTime(1_600)), None);
        assert!(h.is_reachable(A), "two failures are not enough");
        assert_eq!(
            h.record(A, Probe::Transport, UnixTime(1_900)),
            Some(Change::BecameUnreachable)
        );
        assert!(!h.is_reachable(A));
        assert_eq!(h.unreachable(), vec![A]);
        assert_eq!(h.counts(), (1, 1));
        // Still failing: no new change.
        assert_eq!(h.record(A, Probe::Status(503), UnixTime(2_200)), None);
        assert_eq!(
            h.record(A, Probe::Status(200), UnixTime(2_500)),
            Some(Change::BecameReachable)
        );
        assert!(h.is_reachable(A));
        assert_eq!(h.get(A).unwrap().failures, 0);
        assert_eq!(h.counts(), (2, 0));
    }

    #[test]
    fn a_success_resets_the_count_of_consecutive_failures() {
        let mut h = Heartbeats::new(300);
        h.sync([A], UnixTime(0));
        h.record(A, Probe::Status(500), UnixTime(300));
        h.record(A, Probe::Status(500), UnixTime(600));
        h.record(A, Probe::Status(200), UnixTime(900));
        h.record(A, Probe::Status(500), UnixTime(1_200));
        h.record(A, Probe::Status(500), UnixTime(1_500));
        assert!(h.is_reachable(A));
    }

    #[test]
    fn only_200_is_healthy() {
        assert!(Probe::Status(200).healthy());
        for p in [
            Probe::Status(204),
            Probe::Status(302),
            Probe::Status(500),
            Probe::Transport,
            Probe::Timeout,
        ] {
            assert!(!p.healthy(), "{p}");
        }
    }

    #[test]
    fn probes_fall_due_one_interval_apart() {
        let mut h = Heartbeats::new(300);
        h.sync([A, B], UnixTime(1_000));
        assert!(h.due(UnixTime(1_299)).is_empty());
        assert_eq!(h.due(UnixTime(1_300)), vec![A.to_string(), B.to_string()]);
        assert_eq!(h.next_due(), Some(UnixTime(1_300)));
        h.record(A, Probe::Status(200), UnixTime(1_300));
        assert_eq!(h.due(UnixTime(1_300)), vec![B.to_string()]);
        h.record(B, Probe::Status(200), UnixTime(1_301));
        assert_eq!(h.next_due(), Some(UnixTime(1_600)));
    }

    #[test]
    fn sync_forgets_unregistered_endpoints_and_keeps_known_ones() {
        let mut h = Heartbeats::new(1);
        h.sync([A, B], UnixTime(0));
        for t in 1..=3 {
            h.record(A, Probe::Status(500), UnixTime(t));
        }
        h.sync([A], UnixTime(10));
        assert!(!h.is_reachable(A), "a known endpoint keeps its failures");
        assert!(h.get(B).is_none());
        assert!(h.is_reachable(B), "an endpoint not tracked is reachable");
        assert_eq!(h.record(B, Probe::Status(500), UnixTime(11)), None);
        assert!(h.get(B).is_none());
    }

    #[test]
    fn interval_zero_is_read_as_one_second() {
        let mut h = Heartbeats::new(0);
        h.sync([A], UnixTime(5));
        assert_eq!(h.next_due(), Some(UnixTime(6)));
    }
}
