//! The time limits of the online flow (decisions D19, D21, D25, D37): how long a transaction
//! record names its pair (spec protocol.md §5.3 step 9, §8.3), how long a transaction may wait for
//! consent (§5.3), how long personal data and the ticket live after consent (§8.1 step 3, §14),
//! and the bounds of a MyData-API `Retry-After` (§8.1).

use crate::date::UnixTime;

/// Personal data of a consented transaction lives at most this long after consent (D37), and the
/// ticket answers 403 afterwards (§8.1 step 3).
pub const RETENTION_SECS: i64 = 28_800;
/// A (`client_id`, `tx_id`) pair names one transaction for this long after its creation (D19), and
/// the status helpers answer 404 for an older transaction (§8.3).
pub const RECORD_LIFETIME_SECS: i64 = 28_800;
/// A transaction that has not reached consent expires after this much idle time (D21).
pub const IDLE_EXPIRY_SECS: i64 = 1_200;
/// A transaction that has not reached consent expires this long after the redirect (D21).
pub const TOTAL_EXPIRY_SECS: i64 = 3_600;
/// Smallest `Retry-After` of a MyData-API 429 (D25).
pub const RETRY_AFTER_MIN: u32 = 5;
/// Largest `Retry-After` of a MyData-API 429 (D25).
pub const RETRY_AFTER_MAX: u32 = 600;
/// `Retry-After` of a MyData-API 429 when the platform has no estimate (D25).
pub const RETRY_AFTER_DEFAULT: u32 = 60;

/// Whether more than `secs` seconds have passed from `start` to `now` (overflow-safe).
pub(super) fn elapsed_more_than(start: UnixTime, now: UnixTime, secs: i64) -> bool {
    now.0.saturating_sub(start.0) > secs
}
