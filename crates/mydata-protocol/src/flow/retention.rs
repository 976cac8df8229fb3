//! Retention (spec protocol.md §14; decisions D19, D21, D37): when a transaction's personal data
//! must go, when a transaction that has not reached consent expires, and when its record frees its
//! (`client_id`, `tx_id`) pair.

use crate::date::UnixTime;

use super::limits::{
    IDLE_EXPIRY_SECS, RECORD_LIFETIME_SECS, RETENTION_SECS, TOTAL_EXPIRY_SECS, elapsed_more_than,
};

/// When the personal data of a transaction consented at `consent_at` must be gone (§14, D37): the
/// first second at which more than [`RETENTION_SECS`] have passed, `consent_at + 28,801`
/// (saturating). From then on [`purge_due`] holds and the ticket answers 403 (§8.1 step 3); at
/// `consent_at + 28,800` neither yet. A store that deletes a row once `deadline <= now` agrees
/// with both to the second.
pub fn retention_deadline(consent_at: UnixTime) -> UnixTime {
    UnixTime(
        consent_at
            .0
            .saturating_add(RETENTION_SECS)
            .saturating_add(1),
    )
}

/// The times that decide when a transaction's personal data must go (§14, D37).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RetentionFacts {
    /// When the transaction was created.
    pub created_at: UnixTime,
    /// When the citizen consented.
    pub consent_at: Option<UnixTime>,
    /// When the transaction ended with a return code other than success (before or after
    /// consent), if it did.
    pub ended_at: Option<UnixTime>,
    /// When the package was taken.
    pub taken_at: Option<UnixTime>,
}

/// Whether the personal data of a transaction (`pid`, citizen claims, DP and SP packages,
/// `secret_key`, access tokens) must be deleted now (§14, D37).
///
/// Due at take; or, after consent, once more than 28,800 s have passed since consent; or when the
/// transaction ended; or, before consent, once the transaction is past its 3,600 s limit (D21),
/// whether or not anything recorded its end.
pub fn purge_due(f: &RetentionFacts, now: UnixTime) -> bool {
    let reached = |t: Option<UnixTime>| t.is_some_and(|t| t <= now);
    if reached(f.taken_at) || reached(f.ended_at) {
        return true;
    }
    match f.consent_at {
        Some(c) => elapsed_more_than(c, now, RETENTION_SECS),
        None => elapsed_more_than(f.created_at, now, TOTAL_EXPIRY_SECS),
    }
}

/// Whether a transaction that has not reached consent has expired (D21): more than 1,200 s idle,
/// or more than 3,600 s since the redirect. The next request of the browser gets code 408.
pub fn pre_consent_expired(created_at: UnixTime, last_activity: UnixTime, now: UnixTime) -> bool {
    elapsed_more_than(last_activity, now, IDLE_EXPIRY_SECS)
        || elapsed_more_than(created_at, now, TOTAL_EXPIRY_SECS)
}

/// When the record of a transaction created at `created_at` goes (D19): the first second at
/// which it is more than [`RECORD_LIFETIME_SECS`] old, `created_at + 28,801` (saturating), the
/// second from which [`record_expired`] holds. A store that deletes a row once
/// `deadline <= now` agrees with it to the second.
pub fn record_deadline(created_at: UnixTime) -> UnixTime {
    UnixTime(
        created_at
            .0
            .saturating_add(RECORD_LIFETIME_SECS)
            .saturating_add(1),
    )
}

/// Whether a transaction is more than 8 hours old (D19, §8.3): its (`client_id`, `tx_id`) pair is
/// free again, and the status helpers answer 404 for it.
pub fn record_expired(created_at: UnixTime, now: UnixTime) -> bool {
    elapsed_more_than(created_at, now, RECORD_LIFETIME_SECS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_deadline_is_the_first_second_record_expired_holds() {
        let created = UnixTime(1_000_000);
        let d = record_deadline(created);
        assert!(!record_expired(created, UnixTime(d.0 - 1)));
        assert!(record_expired(created, d));
        assert_eq!(d.0 - created.0, 28_801);
        assert_eq!(record_deadline(UnixTime(i64::MAX)), UnixTime(i64::MAX));
    }

    #[test]
    fn retention() {
        let created = UnixTime(1_000_000);
        let at = |s: i64| UnixTime(created.0 + s);
        let base = RetentionFacts {
            created_at: created,
            consent_at: None,
            ended_at: None,
            taken_at: None,
        };
        // Before consent: 3,600 s at most.
        assert!(!purge_due(&base, at(3_600)));
        assert!(purge_due(&base, at(3_601)));
        // Ended before consent: at the end.
        let ended = RetentionFacts {
            ended_at: Some(at(30)),
            ..base
        };
        assert!(!purge_due(&ended, at(29)));
        assert!(purge_due(&ended, at(30)));
        // Consented: 28,800 s after consent, or at take.
        let consented = RetentionFacts {
            consent_at: Some(at(100)),
            ..base
        };
        assert!(!purge_due(&consented, at(100 + 28_800)));
        assert!(purge_due(&consented, at(100 + 28_801)));
        let taken = RetentionFacts {
            taken_at: Some(at(200)),
            ..consented
        };
        assert!(!purge_due(&taken, at(199)));
        assert!(purge_due(&taken, at(200)));
        assert_eq!(RETENTION_SECS, 28_800);

        assert!(!pre_consent_expired(created, at(3_000), at(3_600)));
        assert!(pre_consent_expired(created, at(3_000), at(3_601)));
        assert!(!pre_consent_expired(created, at(0), at(1_200)));
        assert!(pre_consent_expired(created, at(0), at(1_201)));
        assert!(!record_expired(created, at(28_800)));
        assert!(record_expired(created, at(28_801)));
        // Extreme times do not overflow.
        assert!(!record_expired(UnixTime(i64::MAX), UnixTime(i64::MIN)));
        assert!(record_expired(UnixTime(i64::MIN), UnixTime(i64::MAX)));
    }
}
