//! The platform's Prometheus metrics, rendered in the text exposition format on `GET /metrics`
//! (spec `operations.md`). Counting is a few atomic additions per request and per step; with
//! `metrics = false` nothing is counted and `/metrics` is not served.

use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of a request: the route pattern (never the raw path), the method and the status.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: String,
    status: u16,
}

/// Labels of a latency observation: the route pattern.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

/// Labels of a transaction's final code.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    code: u16,
}

/// Labels of a DP call series: the dataset and its per-dataset code.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DpLabels {
    dataset: String,
    code: u16,
}

/// Labels of a MyData-API answer.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: u16,
}

/// Labels of a gauge by state: a transaction's stored state, or an endpoint's reachability.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

/// The figures taken at scrape time, beside the counters (`GET /metrics`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scrape {
    /// The write-behind store's figures ([`crate::storage::Store::write_behind`]).
    pub write_behind: Option<WriteBehindStats>,
    /// Transactions stored, by state ([`crate::storage::Store::count_txs_by_state`]); `None`
    /// when the count failed (the gauge then keeps its last values).
    pub tx_states: Option<Vec<(&'static str, u64)>>,
    /// DP endpoints known to the heartbeat: (reachable, unreachable).
    pub dp_endpoints: (usize, usize),
}

/// What the write-behind store reports for `/metrics` ([`crate::storage::hot::HotStore`]).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct WriteBehindStats {
    /// Writes queued and not yet committed.
    pub pending: u64,
    /// Batches committed since start.
    pub commits: u64,
    /// Time spent committing batches since start.
    pub commit_time: Duration,
}

/// The counters, histograms and gauges of one platform.
pub struct Metrics {
    enabled: bool,
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    tx_final: Family<CodeLabels, Counter>,
    tx_started: Counter,
    consents: Counter,
    dp_calls: Family<DpLabels, Counter>,
    polls: Family<StatusLabels, Counter>,
    taken: Counter,
    purged: Counter,
    expired: Counter,
    orphans: Counter,
    resumed: Counter,
    wb_pending: Gauge,
    tx_states: Family<StateLabels, Gauge>,
    dp_endpoints: Family<StateLabels, Gauge>,
    wb_commits: Counter,
    wb_commit_seconds: Counter<f64, std::sync::atomic::AtomicU64>,
    /// The write-behind totals last rendered, to turn totals into counter increments.
    wb_seen: Mutex<WriteBehindStats>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

fn latency_histogram() -> Histogram {
    // 1 ms to about 33 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

impl Metrics {
    /// The metrics of a platform; `enabled = false` counts nothing.
    pub fn new(enabled: bool) -> Self {
        let mut registry = Registry::with_prefix("mydata");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency: Family<RouteLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_histogram);
        let tx_final = Family::<CodeLabels, Counter>::default();
        let dp_calls = Family::<DpLabels, Counter>::default();
        let polls = Family::<StatusLabels, Counter>::default();
        let m = Metrics {
            enabled,
            requests,
            latency,
            tx_final,
            tx_started: Counter::default(),
            consents: Counter::default(),
            dp_calls,
            polls,
            taken: Counter::default(),
            purged: Counter::default(),
            expired: Counter::default(),
            orphans: Counter::default(),
            resumed: Counter::default(),
            wb_pending: Gauge::default(),
            tx_states: Family::default(),
            dp_endpoints: Family::default(),
            wb_commits: Counter::default(),
            wb_commit_seconds: Counter::default(),
            wb_seen: Mutex::new(WriteBehindStats::default()),
            registry: Registry::default(),
        };
        registry.register(
            "http_requests",
            "HTTP requests by route pattern, method and status",
            m.requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route pattern, up to the response head",
            m.latency.clone(),
        );
        registry.register(
            "transactions_started",
            "Transactions opened by an accepted redirect",
            m.tx_started.clone(),
        );
        registry.register(
            "consents",
            "Consents given (the SP-API is then called)",
            m.consents.clone(),
        );
        registry.register(
            "transactions_final",
            "Transactions by final code (201 taken, 4xx/5xx ended)",
            m.tx_final.clone(),
        );
        registry.register(
            "dp_calls",
            "DP call series by dataset and per-dataset code",
            m.dp_calls.clone(),
        );
        registry.register(
            "mydata_api_answers",
            "GET /service/data answers by status",
            m.polls.clone(),
        );
        registry.register(
            "packages_taken",
            "Packages served to their SP and taken",
            m.taken.clone(),
        );
        registry.register(
            "purged_transactions",
            "Transactions deleted by the purge",
            m.purged.clone(),
        );
        registry.register(
            "expired_transactions",
            "Transactions ended with 408 by the purge (time before consent ran out)",
            m.expired.clone(),
        );
        registry.register(
            "purged_orphan_files",
            "Orphaned package files removed by the purge",
            m.orphans.clone(),
        );
        registry.register(
            "resumed_transactions",
            "Transactions whose DP calls were resumed after a restart",
            m.resumed.clone(),
        );
        registry.register(
            "write_behind_pending",
            "Writes queued in the write-behind store and not yet committed",
            m.wb_pending.clone(),
        );
        registry.register(
            "write_behind_commits",
            "Batches committed by the write-behind store",
            m.wb_commits.clone(),
        );
        registry.register(
            "write_behind_commit_seconds",
            "Time spent committing write-behind batches",
            m.wb_commit_seconds.clone(),
        );
        registry.register(
            "transactions_stored",
            "Transactions stored, by state (counted at scrape time; taken and ended ones stay until the purge)",
            m.tx_states.clone(),
        );
        registry.register(
            "dp_endpoints",
            "DP endpoints by heartbeat state (reachable, unreachable after 3 failed heartbeats)",
            m.dp_endpoints.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Whether anything is counted (and `/metrics` served).
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// One HTTP request answered: `route` is the matched pattern (`unmatched` for none).
    pub fn request(&self, route: &str, method: &str, status: u16, took: Duration) {
        if !self.enabled {
            return;
        }
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_string(),
                method: method.to_string(),
                status,
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels {
                route: route.to_string(),
            })
            .observe(took.as_secs_f64());
    }

    /// A redirect accepted: a transaction opened or resumed.
    pub fn tx_started(&self) {
        if self.enabled {
            self.tx_started.inc();
        }
    }

    /// A consent given.
    pub fn consent(&self) {
        if self.enabled {
            self.consents.inc();
        }
    }

    /// A transaction reached its final code (`201` when its package was taken).
    pub fn tx_final(&self, code: u16) {
        if self.enabled {
            self.tx_final.get_or_create(&CodeLabels { code }).inc();
        }
    }

    /// One dataset's DP call series ended with `code`.
    pub fn dp_call(&self, dataset: &str, code: u16) {
        if self.enabled {
            self.dp_calls
                .get_or_create(&DpLabels {
                    dataset: dataset.to_string(),
                    code,
                })
                .inc();
        }
    }

    /// A `GET /service/data` answered with `status`.
    pub fn poll(&self, status: u16) {
        if self.enabled {
            self.polls.get_or_create(&StatusLabels { status }).inc();
        }
    }

    /// A package taken by its SP.
    pub fn taken(&self) {
        if self.enabled {
            self.taken.inc();
            self.tx_final(201);
        }
    }

    /// What one purge did.
    pub fn purge(&self, expired: usize, purged: usize, orphans: usize) {
        if self.enabled {
            self.expired.inc_by(expired as u64);
            self.purged.inc_by(purged as u64);
            self.orphans.inc_by(orphans as u64);
        }
    }

    /// Transactions resumed after a restart.
    pub fn resumed(&self, n: usize) {
        if self.enabled {
            self.resumed.inc_by(n as u64);
        }
    }

    /// The text exposition format (`text/plain; version=0.0.4` compatible, OpenMetrics
    /// `# EOF` included), with the figures of `now` taken at scrape time.
    pub fn render(&self, now: &Scrape) -> String {
        if let Some(wb) = now.write_behind {
            let mut seen = self.wb_seen.lock().unwrap_or_else(|e| e.into_inner());
            self.wb_pending
                .set(i64::try_from(wb.pending).unwrap_or(i64::MAX));
            self.wb_commits
                .inc_by(wb.commits.saturating_sub(seen.commits));
            let more = wb.commit_time.saturating_sub(seen.commit_time);
            self.wb_commit_seconds.inc_by(more.as_secs_f64());
            *seen = wb;
        }
        if let Some(states) = &now.tx_states {
            for (state, n) in states {
                self.tx_states
                    .get_or_create(&StateLabels {
                        state: (*state).to_string(),
                    })
                    .set(i64::try_from(*n).unwrap_or(i64::MAX));
            }
        }
        let (up, down) = now.dp_endpoints;
        for (state, n) in [("reachable", up), ("unreachable", down)] {
            self.dp_endpoints
                .get_or_create(&StateLabels {
                    state: state.to_string(),
                })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_move_and_render() {
        let m = Metrics::new(true);
        m.request("/service/data", "GET", 429, Duration::from_millis(3));
        m.dp_call("API.x", 200);
        m.taken();
        let text = m.render(&Scrape {
            write_behind: Some(WriteBehindStats {
                pending: 3,
                commits: 2,
                commit_time: Duration::from_millis(5),
            }),
            tx_states: Some(vec![("ready", 4), ("taken", 0)]),
            dp_endpoints: (5, 1),
        });
        assert!(
            text.contains(
                "mydata_http_requests_total{route=\"/service/data\",method=\"GET\",status=\"429\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains("mydata_transactions_final_total{code=\"201\"} 1"));
        assert!(text.contains("mydata_write_behind_pending 3"));
        assert!(text.contains("mydata_write_behind_commits_total 2"));
        assert!(
            text.contains("mydata_transactions_stored{state=\"ready\"} 4"),
            "{text}"
        );
        assert!(text.contains("mydata_transactions_stored{state=\"taken\"} 0"));
        assert!(text.contains("mydata_dp_endpoints{state=\"reachable\"} 5"));
        assert!(text.contains("mydata_dp_endpoints{state=\"unreachable\"} 1"));
        // Totals become increments: the same totals again add nothing.
        let text = m.render(&Scrape {
            write_behind: Some(WriteBehindStats {
                pending: 0,
                commits: 2,
                commit_time: Duration::from_millis(5),
            }),
            ..Scrape::default()
        });
        assert!(text.contains("mydata_write_behind_commits_total 2"));
    }

    #[test]
    fn disabled_counts_nothing() {
        let m = Metrics::new(false);
        m.request("/", "GET", 200, Duration::ZERO);
        m.taken();
        let text = m.render(&Scrape::default());
        assert!(!text.contains("route=\"/\""));
        assert!(!text.contains("mydata_packages_taken_total 1"));
    }
}
