//! Operations (spec `operations.md`): the log subscriber that `mydata serve` installs
//! ([`logging`]), the Prometheus metrics ([`metrics`]) and the names of the transaction events.
//!
//! Every event of a transaction step is emitted with target [`TX`], an `event` field naming the
//! step, the transaction's internal id (`tx`) and its `client_id`; never the citizen's national
//! ID, name or birth date, a token, a permission ticket, a `secret_key` or a `client_secret`.

pub mod logging;
pub mod metrics;

pub use metrics::{Metrics, Scrape, WriteBehindStats};

/// The target of transaction step events (`RUST_LOG=mydata::tx=info`).
pub const TX: &str = "mydata::tx";

/// The target of the access log lines (`RUST_LOG=mydata::access=off` silences them).
pub const ACCESS: &str = "mydata::access";
