//! The MyData-API, `GET /service/data` (spec protocol.md §8.1; decisions D25, D26): the checks
//! in order, from the source IP and the `permission_ticket` header to the package.

use crate::codes::MyDataApiStatus;
use crate::date::UnixTime;
use crate::ids::{PermissionTicket, TxId};

use super::limits::{
    RETENTION_SECS, RETRY_AFTER_DEFAULT, RETRY_AFTER_MAX, RETRY_AFTER_MIN, elapsed_more_than,
};
use super::retention::record_expired;

/// The answer to `GET /service/data` (§8.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataAnswer {
    /// 401: the source IP is registered for no service.
    Unauthorized401,
    /// 400: the `permission_ticket` header is absent, empty or not a UUID.
    BadRequest400,
    /// 403: unknown ticket, foreign IP, other `tx_id`, SP-API not acknowledged, or expired.
    Forbidden403,
    /// 201: the package has already been taken.
    AlreadyTaken201,
    /// 504: every dataset failed, or the ticket was sent with `unable_to_deliver`.
    AllFailed504,
    /// 429: not ready; `Retry-After` in [5, 600].
    NotReady429 {
        /// Seconds to wait.
        retry_after: u32,
    },
    /// 200: the JWE.
    Ready200,
}

impl DataAnswer {
    /// The HTTP status.
    pub fn status(self) -> u16 {
        self.api_status().wire()
    }

    /// The same answer as a [`MyDataApiStatus`].
    pub fn api_status(self) -> MyDataApiStatus {
        match self {
            DataAnswer::Unauthorized401 => MyDataApiStatus::IpNotAllowed,
            DataAnswer::BadRequest400 => MyDataApiStatus::NoTicket,
            DataAnswer::Forbidden403 => MyDataApiStatus::Forbidden,
            DataAnswer::AlreadyTaken201 => MyDataApiStatus::AlreadyTaken,
            DataAnswer::AllFailed504 => MyDataApiStatus::AllFailed,
            DataAnswer::NotReady429 { .. } => MyDataApiStatus::NotReady,
            DataAnswer::Ready200 => MyDataApiStatus::Ready,
        }
    }
}

/// What §8.1 needs to know about the ticket's transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TicketFacts {
    /// The ticket's service registered the source IP (D26).
    pub service_allows_ip: bool,
    /// The transaction's `tx_id`.
    pub tx_id: TxId,
    /// When the transaction was created.
    pub created_at: UnixTime,
    /// When the citizen consented.
    pub consent_at: Option<UnixTime>,
    /// The consent SP-API call was answered 200 or 201.
    pub sp_api_acknowledged: bool,
    /// The ticket was sent with `unable_to_deliver` (D22).
    pub unable_to_deliver: bool,
    /// Every dataset failed (no 200 or 204).
    pub all_failed: bool,
    /// The package has been taken.
    pub taken: bool,
    /// The package is complete (§8.2).
    pub ready: bool,
    /// The platform's estimate of the remaining seconds, if any.
    pub retry_estimate: Option<u64>,
}

/// `Retry-After` for a 429: the estimate clamped to [5, 600], or 60 without one (D25).
pub fn clamp_retry_after(estimate: Option<u64>) -> u32 {
    match estimate {
        None => RETRY_AFTER_DEFAULT,
        Some(n) => u32::try_from(n.clamp(u64::from(RETRY_AFTER_MIN), u64::from(RETRY_AFTER_MAX)))
            .unwrap_or(RETRY_AFTER_MAX),
    }
}

/// Whether a `permission_ticket` header passes §8.1 step 2: present and a UUID in 8-4-4-4-12
/// hexadecimal form (any case, any version).
fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, &c)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                c == b'-'
            } else {
                c.is_ascii_hexdigit()
            }
        })
}

/// §8.1 steps 1–2, and the key to look the ticket up by.
///
/// `Ok(None)` means the header is a UUID that cannot be a ticket (not version 4): the ticket is
/// unknown, so pass no facts to [`data_answer`].
pub fn data_ticket(
    source_ip_registered: bool,
    ticket_header: Option<&str>,
) -> Result<Option<PermissionTicket>, DataAnswer> {
    if !source_ip_registered {
        return Err(DataAnswer::Unauthorized401);
    }
    match ticket_header {
        Some(t) if is_uuid(t) => Ok(t.parse().ok()),
        _ => Err(DataAnswer::BadRequest400),
    }
}

/// `GET /service/data` (§8.1, D25): checks 1–7 in order; the first that holds decides.
///
/// `facts` describe the transaction of the ticket in `ticket_header` (look it up with the key from
/// [`data_ticket`]); `None` when the ticket is unknown. `tx_id_header` is checked when present.
/// A ticket sent with `unable_to_deliver` has no consent: it expires, like its transaction record,
/// 8 hours after creation.
pub fn data_answer(
    source_ip_registered: bool,
    ticket_header: Option<&str>,
    tx_id_header: Option<&str>,
    facts: Option<&TicketFacts>,
    now: UnixTime,
) -> DataAnswer {
    if let Err(answer) = data_ticket(source_ip_registered, ticket_header) {
        return answer;
    }
    let Some(f) = facts else {
        return DataAnswer::Forbidden403;
    };
    let tx_differs = tx_id_header.is_some_and(|h| h != f.tx_id.as_str());
    let valid = if f.unable_to_deliver {
        !record_expired(f.created_at, now)
    } else {
        f.sp_api_acknowledged
            && f.consent_at
                .is_some_and(|c| !elapsed_more_than(c, now, RETENTION_SECS))
    };
    if !f.service_allows_ip || tx_differs || !valid {
        return DataAnswer::Forbidden403;
    }
    if f.taken {
        return DataAnswer::AlreadyTaken201;
    }
    if f.all_failed || f.unable_to_deliver {
        return DataAnswer::AllFailed504;
    }
    if !f.ready {
        return DataAnswer::NotReady429 {
            retry_after: clamp_retry_after(f.retry_estimate),
        };
    }
    DataAnswer::Ready200
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::test_support::*;

    fn ticket_facts() -> TicketFacts {
        TicketFacts {
            service_allows_ip: true,
            tx_id: TX.parse().unwrap(),
            created_at: UnixTime(NOW.0 - 600),
            consent_at: Some(UnixTime(NOW.0 - 500)),
            sp_api_acknowledged: true,
            unable_to_deliver: false,
            all_failed: false,
            taken: false,
            ready: true,
            retry_estimate: None,
        }
    }

    fn answer(f: Option<&TicketFacts>) -> DataAnswer {
        data_answer(true, Some(TICKET), Some(TX), f, NOW)
    }

    #[test]
    fn mydata_api_answers() {
        let f = ticket_facts();
        assert_eq!(answer(Some(&f)), DataAnswer::Ready200);
        assert_eq!(
            data_answer(true, Some(TICKET), None, Some(&f), NOW),
            DataAnswer::Ready200
        );
        assert_eq!(
            data_answer(true, Some(&TICKET.to_uppercase()), None, Some(&f), NOW),
            DataAnswer::Ready200
        );
        // 1
        assert_eq!(
            data_answer(false, None, None, Some(&f), NOW),
            DataAnswer::Unauthorized401
        );
        // 2
        for t in [
            None,
            Some(""),
            Some("x"),
            Some(&TICKET[1..]),
            Some("6b1f0e52_2c1d-4f7a-9a57-0f3c1d2e8b44"),
        ] {
            assert_eq!(
                data_answer(true, t, None, Some(&f), NOW),
                DataAnswer::BadRequest400,
                "{t:?}"
            );
        }
        // 3
        let forbidden = [
            TicketFacts {
                service_allows_ip: false,
                ..f.clone()
            },
            TicketFacts {
                sp_api_acknowledged: false,
                ..f.clone()
            },
            TicketFacts {
                consent_at: None,
                ..f.clone()
            },
            TicketFacts {
                consent_at: Some(UnixTime(NOW.0 - 28_801)),
                ..f.clone()
            },
        ];
        for g in &forbidden {
            assert_eq!(answer(Some(g)), DataAnswer::Forbidden403, "{g:?}");
        }
        assert_eq!(answer(None), DataAnswer::Forbidden403);
        assert_eq!(
            data_answer(true, Some(TICKET), Some("other"), Some(&f), NOW),
            DataAnswer::Forbidden403
        );
        assert_eq!(
            data_answer(true, Some(TICKET), Some(""), Some(&f), NOW),
            DataAnswer::Forbidden403
        );
        let edge = TicketFacts {
            consent_at: Some(UnixTime(NOW.0 - 28_800)),
            ..f.clone()
        };
        assert_eq!(answer(Some(&edge)), DataAnswer::Ready200);
        // 4, 5, 6
        assert_eq!(
            answer(Some(&TicketFacts {
                taken: true,
                ..f.clone()
            })),
            DataAnswer::AlreadyTaken201
        );
        assert_eq!(
            answer(Some(&TicketFacts {
                all_failed: true,
                ..f.clone()
            })),
            DataAnswer::AllFailed504
        );
        let udl = TicketFacts {
            unable_to_deliver: true,
            consent_at: None,
            sp_api_acknowledged: false,
            ready: false,
            ..f.clone()
        };
        assert_eq!(answer(Some(&udl)), DataAnswer::AllFailed504);
        let old_udl = TicketFacts {
            created_at: UnixTime(NOW.0 - 28_801),
            ..udl
        };
        assert_eq!(answer(Some(&old_udl)), DataAnswer::Forbidden403);
        let pending = TicketFacts {
            ready: false,
            ..f.clone()
        };
        assert_eq!(
            answer(Some(&pending)),
            DataAnswer::NotReady429 { retry_after: 60 }
        );
        for (est, want) in [
            (0, 5),
            (5, 5),
            (42, 42),
            (600, 600),
            (3_600, 600),
            (u64::MAX, 600),
        ] {
            let g = TicketFacts {
                retry_estimate: Some(est),
                ..pending.clone()
            };
            assert_eq!(
                answer(Some(&g)),
                DataAnswer::NotReady429 { retry_after: want }
            );
        }
    }

    #[test]
    fn mydata_api_order() {
        let f = ticket_facts();
        let everything_wrong = TicketFacts {
            service_allows_ip: false,
            taken: true,
            all_failed: true,
            ready: false,
            ..f.clone()
        };
        // 401 beats 400 beats 403 beats 201 beats 504 beats 429.
        assert_eq!(
            data_answer(false, Some("x"), Some("y"), Some(&everything_wrong), NOW),
            DataAnswer::Unauthorized401
        );
        assert_eq!(
            data_answer(true, Some("x"), Some("y"), Some(&everything_wrong), NOW),
            DataAnswer::BadRequest400
        );
        assert_eq!(answer(Some(&everything_wrong)), DataAnswer::Forbidden403);
        let g = TicketFacts {
            service_allows_ip: true,
            ..everything_wrong
        };
        assert_eq!(answer(Some(&g)), DataAnswer::AlreadyTaken201);
        let g = TicketFacts { taken: false, ..g };
        assert_eq!(answer(Some(&g)), DataAnswer::AllFailed504);
        let g = TicketFacts {
            all_failed: false,
            ..g
        };
        assert!(matches!(answer(Some(&g)), DataAnswer::NotReady429 { .. }));

        let statuses = [
            (DataAnswer::Unauthorized401, 401),
            (DataAnswer::BadRequest400, 400),
            (DataAnswer::Forbidden403, 403),
            (DataAnswer::AlreadyTaken201, 201),
            (DataAnswer::AllFailed504, 504),
            (DataAnswer::NotReady429 { retry_after: 5 }, 429),
            (DataAnswer::Ready200, 200),
        ];
        for (a, s) in statuses {
            assert_eq!(a.status(), s);
        }
    }

    #[test]
    fn ticket_lookup_key() {
        assert_eq!(
            data_ticket(false, Some(TICKET)),
            Err(DataAnswer::Unauthorized401)
        );
        assert_eq!(data_ticket(true, None), Err(DataAnswer::BadRequest400));
        assert_eq!(
            data_ticket(true, Some(&TICKET.to_uppercase())),
            Ok(Some(TICKET.parse().unwrap()))
        );
        // A UUID that is not version 4 passes step 2 but names no ticket.
        let v1 = "6b1f0e52-2c1d-1f7a-9a57-0f3c1d2e8b44";
        assert_eq!(data_ticket(true, Some(v1)), Ok(None));
        assert_eq!(
            data_answer(true, Some(v1), None, None, NOW),
            DataAnswer::Forbidden403
        );
    }
}
