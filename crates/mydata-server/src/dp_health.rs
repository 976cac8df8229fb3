//! The DP endpoints' heartbeat state shared by the heartbeat task
//! ([`crate::engine::heartbeat`]), §5.3 step 10 (an unreachable endpoint's dataset is answered
//! 504, D21), `GET /readyz` and `GET /metrics`: the core's [`Heartbeats`] behind a lock.

use std::sync::{Mutex, MutexGuard};

use mydata_protocol::date::UnixTime;
use mydata_protocol::heartbeat::{Change, Heartbeats, Probe};

/// The heartbeat state of every DP endpoint (spec §9.4, D30).
#[derive(Debug, Default)]
pub struct DpHealth {
    state: Mutex<Heartbeats>,
}

impl DpHealth {
    /// No endpoint known yet; probes `interval_secs` apart.
    pub fn new(interval_secs: u64) -> Self {
        DpHealth {
            state: Mutex::new(Heartbeats::new(interval_secs)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Heartbeats> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `endpoint` may be called (§5.3 step 10): true unless three heartbeats in a row
    /// failed.
    pub fn is_reachable(&self, endpoint: &str) -> bool {
        self.lock().is_reachable(endpoint)
    }

    /// The unreachable endpoints, in URL order.
    pub fn unreachable(&self) -> Vec<String> {
        self.lock()
            .unreachable()
            .into_iter()
            .map(str::to_owned)
            .collect()
    }

    /// How many known endpoints are reachable and unreachable.
    pub fn counts(&self) -> (usize, usize) {
        self.lock().counts()
    }

    /// Tracks exactly `endpoints` from now on ([`Heartbeats::sync`]) and returns those due at
    /// `now`.
    pub fn due(&self, endpoints: Vec<String>, now: UnixTime) -> Vec<String> {
        let mut h = self.lock();
        h.sync(endpoints, now);
        h.due(now)
    }

    /// The earliest time a probe is due.
    pub fn next_due(&self) -> Option<UnixTime> {
        self.lock().next_due()
    }

    /// Records one probe's result ([`Heartbeats::record`]); returns the change of reachability
    /// and the failures in a row since the last healthy probe.
    pub fn record(&self, endpoint: &str, result: Probe, now: UnixTime) -> (Option<Change>, u32) {
        let mut h = self.lock();
        let change = h.record(endpoint, result, now);
        let failures = h.get(endpoint).map_or(0, |e| e.failures);
        (change, failures)
    }
}
