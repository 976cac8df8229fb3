//! The DP heartbeat (spec §9.4, D30), the IO shell of [`mydata_protocol::heartbeat`]: every
//! `heartbeat_interval_secs` (300 by default; 0 turns it off) each distinct endpoint of an active
//! dataset gets `GET {endpoint}?heartbeat=true`, with no `Authorization` header, and 10 s to
//! answer 200. The results go to [`crate::dp_health::DpHealth`], which §5.3 step 10, `/readyz`
//! and `/metrics` read.
//!
//! The schedule runs on the system clock, not the platform's (a sandbox or test clock that
//! stands still must not stop the heartbeat). Events have target [`DP`]: a failure at `debug`,
//! an endpoint becoming unreachable at `warn`, reachable again at `info`; they name the endpoint
//! and the result, never anything of a citizen.

use std::sync::Arc;
use std::time::Duration;

use mydata_protocol::clock::{Clock, SystemClock};
use mydata_protocol::heartbeat::{Change, FAILURES_TO_UNREACHABLE, Probe, TIMEOUT_SECS};

use crate::platform::Platform;

/// The target of heartbeat events (`RUST_LOG=mydata::dp=debug` shows every probe).
pub const DP: &str = "mydata::dp";

/// The URL of a heartbeat: the endpoint with `heartbeat=true` added to its query.
pub fn heartbeat_url(endpoint: &str) -> String {
    let sep = if endpoint.contains('?') { '&' } else { '?' };
    format!("{endpoint}{sep}heartbeat=true")
}

/// Starts the heartbeat task on the current actix runtime; `None` when `heartbeat_interval_secs`
/// is 0. The task runs until the runtime stops.
pub fn spawn(p: Arc<Platform>) -> Option<actix_web::rt::task::JoinHandle<()>> {
    if p.config.heartbeat_interval_secs == 0 {
        return None;
    }
    Some(actix_web::rt::spawn(run(p)))
}

/// The distinct endpoints of the active datasets, each with the CA its registration pins (the
/// first registration's, when several datasets share an endpoint).
async fn endpoints(p: &Arc<Platform>) -> Option<Vec<(String, Option<String>)>> {
    let q = p.clone();
    match actix_web::web::block(move || q.store.list_dps()).await {
        Ok(Ok(dps)) => {
            let mut v: Vec<(String, Option<String>)> = dps
                .into_iter()
                .filter(|d| d.status == "active")
                .map(|d| (d.endpoint, d.tls_ca))
                .collect();
            v.sort();
            v.dedup_by(|a, b| a.0 == b.0);
            Some(v)
        }
        Ok(Err(e)) => {
            tracing::warn!(target: DP, event = "heartbeat_skipped", error = %e, "heartbeat: could not list the datasets: {e}");
            None
        }
        Err(e) => {
            tracing::warn!(target: DP, event = "heartbeat_skipped", error = %e, "heartbeat: blocking pool: {e}");
            None
        }
    }
}

/// The heartbeat loop: wakes when the earliest probe is due (at most one interval apart, so a
/// newly registered endpoint is picked up), probes every due endpoint at once, records the
/// results.
pub async fn run(p: Arc<Platform>) {
    let interval = p.config.heartbeat_interval_secs.max(1);
    let connect = Duration::from_secs(p.config.dp_connect_timeout_secs.min(TIMEOUT_SECS));
    // The DP calls' TLS (D49): the endpoint's pinned CA or the system roots and `tls_ca_file`,
    // the platform's client certificate; plain http only in the sandbox.
    let timing = super::outbound::Timing {
        connect,
        total: Duration::from_secs(TIMEOUT_SECS),
        keep_alive: super::dpcall::IDLE_KEEP,
    };
    let clock = SystemClock;
    loop {
        let now = clock.now();
        if let Some(list) = endpoints(&p).await {
            let pinned: std::collections::HashMap<String, Option<String>> =
                list.iter().cloned().collect();
            let due = p
                .dp_health
                .due(list.into_iter().map(|(e, _)| e).collect(), now);
            let probes: Vec<_> = due
                .into_iter()
                .map(|e| {
                    let client = super::outbound::check_scheme(
                        p.outbound.plain_http(),
                        "endpoint",
                        &e,
                    )
                    .and_then(|()| {
                        p.outbound
                            .client(timing, pinned.get(&e).and_then(Option::as_deref))
                            .map_err(|err| err.to_string())
                    });
                    actix_web::rt::spawn(async move {
                        let r = match client {
                            Ok(c) => probe(&c, &e).await,
                            Err(why) => {
                                tracing::debug!(target: DP, endpoint = %e, "heartbeat not sent: {why}");
                                Probe::Transport
                            }
                        };
                        (e, r)
                    })
                })
                .collect();
            for h in probes {
                let Ok((endpoint, result)) = h.await else {
                    continue;
                };
                record(&p, &endpoint, result, clock.now());
            }
        }
        let wait = p
            .dp_health
            .next_due()
            .map_or(interval, |t| {
                u64::try_from(t.0.saturating_sub(clock.now().0)).unwrap_or(0)
            })
            .clamp(1, interval);
        actix_web::rt::time::sleep(Duration::from_secs(wait)).await;
    }
}

fn record(p: &Platform, endpoint: &str, result: Probe, now: mydata_protocol::date::UnixTime) {
    let (change, failures) = p.dp_health.record(endpoint, result, now);
    match change {
        Some(Change::BecameUnreachable) => tracing::warn!(
            target: DP,
            event = "dp_unreachable",
            endpoint,
            result = %result,
            failures,
            "DP endpoint unreachable after {FAILURES_TO_UNREACHABLE} failed heartbeats: its datasets are answered 504"
        ),
        Some(Change::BecameReachable) => tracing::info!(
            target: DP,
            event = "dp_reachable",
            endpoint,
            "DP endpoint reachable again"
        ),
        None if !result.healthy() => tracing::debug!(
            target: DP,
            event = "heartbeat_failed",
            endpoint,
            result = %result,
            failures,
            "heartbeat failed"
        ),
        None => tracing::trace!(target: DP, event = "heartbeat", endpoint, "heartbeat ok"),
    }
}

/// One heartbeat of `endpoint`: its status, or why there was none within [`TIMEOUT_SECS`].
pub async fn probe(client: &awc::Client, endpoint: &str) -> Probe {
    let limit = Duration::from_secs(TIMEOUT_SECS);
    let send = client.get(heartbeat_url(endpoint)).timeout(limit).send();
    match actix_web::rt::time::timeout(limit, send).await {
        Err(_) | Ok(Err(awc::error::SendRequestError::Timeout)) => Probe::Timeout,
        Ok(Err(_)) => Probe::Transport,
        Ok(Ok(res)) => Probe::Status(res.status().as_u16()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_heartbeat_flag_joins_the_query() {
        assert_eq!(
            heartbeat_url("http://dp.test/api/a"),
            "http://dp.test/api/a?heartbeat=true"
        );
        assert_eq!(
            heartbeat_url("http://dp.test/api?ds=a"),
            "http://dp.test/api?ds=a&heartbeat=true"
        );
    }
}
