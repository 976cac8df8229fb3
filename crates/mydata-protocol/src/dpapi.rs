//! The platform side of the DP-API call series (spec §9.3, D29): what to do with each answer,
//! `Retry-After` parsing, and the retry budget. No I/O: the caller performs the calls and the
//! waits, and passes the time in.

use crate::codes::DatasetCode;
use crate::date::{CivilDate, UnixTime};

/// At most this many calls per series, the first included.
pub const MAX_CALLS: u32 = 16;
/// No call starts later than this many seconds after the first call started.
pub const BUDGET_SECS: i64 = 5_400;
/// `Retry-After` when absent or unparsable.
pub const DEFAULT_RETRY_AFTER: i64 = 60;
/// Wait after a transport error or timeout.
pub const TRANSPORT_RETRY_SECS: i64 = 30;
/// Largest DP package body accepted (256 MiB).
pub const MAX_BODY_BYTES: u64 = 256 * 1024 * 1024;

/// The retry rules of a call series (spec §9.3, D29). [`Limits::default`] holds the
/// specification's values; a deployment may shorten the wait after a transport error (tests do).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// At most this many calls per series, the first included ([`MAX_CALLS`]).
    pub max_calls: u32,
    /// No call starts later than this many seconds after the first call started
    /// ([`BUDGET_SECS`]).
    pub budget_secs: i64,
    /// Seconds to wait after a transport error or timeout ([`TRANSPORT_RETRY_SECS`]).
    pub transport_retry_secs: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_calls: MAX_CALLS,
            budget_secs: BUDGET_SECS,
            transport_retry_secs: TRANSPORT_RETRY_SECS,
        }
    }
}

/// What the DP answered to one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer<'a> {
    /// An HTTP status, with the `Retry-After` header if any. For 200 the caller has already
    /// checked the package: `package_ok` tells whether it verified.
    Status {
        /// The status code.
        status: u16,
        /// The `Retry-After` header.
        retry_after: Option<&'a str>,
        /// For 200: the body verified as a DP package within the size limit.
        package_ok: bool,
    },
    /// No complete answer: the connection was refused or reset, the call's total deadline
    /// passed (connect, headers or body), or the body broke off before its end. Never a 200 with
    /// an empty body.
    Transport,
    /// The TLS handshake failed closed (D49): the DP's certificate does not verify (unknown CA,
    /// expired, another host name), it offers no TLS 1.2 or later, or it refused the platform's
    /// client certificate; or the endpoint is plain `http://` outside the sandbox. Calling again
    /// would meet the same certificate: the series ends at once with 504, as an exhausted
    /// transport budget does.
    Refused,
}

/// The next step of a call series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The series is over with this per-dataset code (200 = keep the package).
    Done(DatasetCode),
    /// Call again, with the same `transaction_uid`, after this many seconds.
    RetryAfter(i64),
}

/// A DP-API call series' bookkeeping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Series {
    first_call: UnixTime,
    calls: u32,
    limits: Limits,
}

impl Series {
    /// A series whose first call starts at `now`, under the specification's [`Limits`].
    pub fn start(now: UnixTime) -> Self {
        Series::start_with(now, Limits::default())
    }

    /// A series whose first call starts at `now`, under `limits`.
    pub fn start_with(now: UnixTime, limits: Limits) -> Self {
        Series {
            first_call: now,
            calls: 1,
            limits,
        }
    }

    /// The limits of this series.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Calls made so far.
    pub fn calls(&self) -> u32 {
        self.calls
    }

    /// When the first call started.
    pub fn first_call(&self) -> UnixTime {
        self.first_call
    }

    /// Decides the next step after `answer`, received at `now`. A `RetryAfter` counts the next
    /// call as made.
    pub fn next(&mut self, answer: Answer<'_>, now: UnixTime) -> Step {
        let (wait, code_when_exhausted) = match answer {
            Answer::Refused => return Step::Done(DatasetCode::DpSystemError),
            Answer::Transport => (
                self.limits.transport_retry_secs.max(0),
                DatasetCode::DpSystemError,
            ),
            Answer::Status {
                status,
                retry_after,
                package_ok,
            } => match status {
                200 if package_ok => return Step::Done(DatasetCode::Delivered),
                200 => return Step::Done(DatasetCode::DpError),
                204 => return Step::Done(DatasetCode::NoData),
                403 => return Step::Done(DatasetCode::Refused),
                426 | 429 => (
                    retry_after
                        .and_then(|v| parse_retry_after(v, now))
                        .unwrap_or(DEFAULT_RETRY_AFTER)
                        .max(1),
                    DatasetCode::Timeout,
                ),
                500..=599 => return Step::Done(DatasetCode::DpSystemError),
                _ => return Step::Done(DatasetCode::DpError),
            },
        };
        let next_start = now.0.saturating_add(wait);
        if self.calls >= self.limits.max_calls
            || next_start > self.first_call.0.saturating_add(self.limits.budget_secs)
        {
            return Step::Done(code_when_exhausted);
        }
        self.calls += 1;
        Step::RetryAfter(wait)
    }
}

/// `Retry-After` as seconds from `now`: delay-seconds, or an IMF-fixdate
/// (`Sun, 06 Nov 1994 08:49:37 GMT`). `None` when unparsable.
pub fn parse_retry_after(v: &str, now: UnixTime) -> Option<i64> {
    let v = v.trim();
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        return v.parse::<i64>().ok().or(Some(i64::MAX / 4));
    }
    let at = parse_http_date(v)?;
    Some((at.0 - now.0).max(0))
}

fn parse_http_date(v: &str) -> Option<UnixTime> {
    // IMF-fixdate only (RFC 9110 §5.6.7): "Sun, 06 Nov 1994 08:49:37 GMT".
    let rest = v.split_once(", ")?.1;
    let parts: Vec<&str> = rest.split(' ').collect();
    if parts.len() != 5 || parts[4] != "GMT" {
        return None;
    }
    let day: u8 = parts[0].parse().ok()?;
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| *m == parts[1])? as u8
        + 1;
    let year: i32 = parts[2].parse().ok()?;
    let hms: Vec<i64> = parts[3]
        .split(':')
        .map(|p| p.parse::<i64>().ok())
        .collect::<Option<_>>()?;
    if hms.len() != 3 || hms[0] > 23 || hms[1] > 59 || hms[2] > 60 {
        return None;
    }
    let date = CivilDate::new(year, month, day).ok()?;
    Some(UnixTime(
        date.days_since_epoch() * 86_400 + hms[0] * 3600 + hms[1] * 60 + hms[2],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(status: u16, ra: Option<&str>) -> Answer<'_> {
        Answer::Status {
            status,
            retry_after: ra,
            package_ok: true,
        }
    }

    #[test]
    fn final_answers() {
        let t = UnixTime(1000);
        let mut s = Series::start(t);
        assert_eq!(s.next(st(200, None), t), Step::Done(DatasetCode::Delivered));
        let bad = Answer::Status {
            status: 200,
            retry_after: None,
            package_ok: false,
        };
        assert_eq!(s.next(bad, t), Step::Done(DatasetCode::DpError));
        assert_eq!(s.next(st(204, None), t), Step::Done(DatasetCode::NoData));
        assert_eq!(s.next(st(403, None), t), Step::Done(DatasetCode::Refused));
        assert_eq!(s.next(st(404, None), t), Step::Done(DatasetCode::DpError));
        assert_eq!(s.next(st(302, None), t), Step::Done(DatasetCode::DpError));
        assert_eq!(
            s.next(st(503, Some("5")), t),
            Step::Done(DatasetCode::DpSystemError)
        );
        assert_eq!(s.calls(), 1);
    }

    #[test]
    fn retry_after_forms() {
        let now = UnixTime::parse("1994-11-06T08:49:00Z").unwrap();
        assert_eq!(parse_retry_after("120", now), Some(120));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now),
            Some(37)
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:48:37 GMT", now),
            Some(0)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 25:00:00 GMT", now),
            None
        );
        let mut s = Series::start(now);
        assert_eq!(s.next(st(429, None), now), Step::RetryAfter(60));
        assert_eq!(s.next(st(426, Some("0")), now), Step::RetryAfter(1));
        assert_eq!(s.next(st(429, Some("junk")), now), Step::RetryAfter(60));
        assert_eq!(s.calls(), 4);
    }

    #[test]
    fn budget_of_sixteen_calls() {
        let mut now = UnixTime(0);
        let mut s = Series::start(now);
        for _ in 1..MAX_CALLS {
            assert_eq!(s.next(st(429, Some("1")), now), Step::RetryAfter(1));
            now.0 += 1;
        }
        assert_eq!(s.calls(), 16);
        assert_eq!(
            s.next(st(429, Some("1")), now),
            Step::Done(DatasetCode::Timeout)
        );
    }

    #[test]
    fn budget_of_5400_seconds() {
        let mut s = Series::start(UnixTime(0));
        assert_eq!(
            s.next(st(429, Some("5300")), UnixTime(0)),
            Step::RetryAfter(5300)
        );
        assert_eq!(
            s.next(st(429, Some("100")), UnixTime(5300)),
            Step::RetryAfter(100)
        );
        assert_eq!(
            s.next(st(429, Some("1")), UnixTime(5400)),
            Step::Done(DatasetCode::Timeout)
        );
        let mut s = Series::start(UnixTime(0));
        assert_eq!(
            s.next(st(429, Some("99999999999999999999")), UnixTime(0)),
            Step::Done(DatasetCode::Timeout)
        );
        let mut s = Series::start(UnixTime(0));
        assert_eq!(
            s.next(Answer::Transport, UnixTime(10)),
            Step::RetryAfter(30)
        );
        assert_eq!(
            s.next(Answer::Transport, UnixTime(5380)),
            Step::Done(DatasetCode::DpSystemError)
        );
    }

    #[test]
    fn a_tls_refusal_ends_the_series_at_once_with_504() {
        let mut s = Series::start(UnixTime(0));
        assert_eq!(
            s.next(Answer::Refused, UnixTime(1)),
            Step::Done(DatasetCode::DpSystemError)
        );
        assert_eq!(s.calls(), 1);
    }

    #[test]
    fn transport_wait_is_a_limit() {
        let limits = Limits {
            transport_retry_secs: 2,
            ..Limits::default()
        };
        let mut s = Series::start_with(UnixTime(0), limits);
        assert_eq!(s.limits(), limits);
        assert_eq!(s.next(Answer::Transport, UnixTime(1)), Step::RetryAfter(2));
        assert_eq!(s.next(Answer::Transport, UnixTime(4)), Step::RetryAfter(2));
        assert_eq!(s.calls(), 3);
        // The 5,400-s mark still ends the series, with 504.
        assert_eq!(
            s.next(Answer::Transport, UnixTime(5399)),
            Step::Done(DatasetCode::DpSystemError)
        );
        // And so do sixteen calls.
        let mut s = Series::start_with(UnixTime(0), limits);
        for _ in 1..MAX_CALLS {
            assert_eq!(s.next(Answer::Transport, UnixTime(0)), Step::RetryAfter(2));
        }
        assert_eq!(
            s.next(Answer::Transport, UnixTime(0)),
            Step::Done(DatasetCode::DpSystemError)
        );
        assert_eq!(Series::start(UnixTime(0)).limits(), Limits::default());
    }
}
