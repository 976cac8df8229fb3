//! Attempt limits and one-time passwords of the citizen pages (brief §2, §9.9; spec D46).
//!
//! * **Lockout:** failures are counted per counter (for the citizen flow: per transaction) within a
//!   sliding window of 900 s; the 5th failure inside the window locks the counter for 900 s. While
//!   locked, every attempt is refused without being judged.
//! * **One-time password:** 6 decimal digits, valid 120 s, compared once per attempt; a new one
//!   cannot be requested within 120 s of the previous one.
//!
//! Pure rules: time is always a parameter.

use crate::date::UnixTime;

/// Failures counted inside this window (seconds).
pub const LOCKOUT_WINDOW_SECS: i64 = 900;
/// The failure that locks the counter.
pub const LOCKOUT_THRESHOLD: usize = 5;
/// How long a lock lasts (seconds).
pub const LOCKOUT_SECS: i64 = 900;
/// A one-time password is valid this long (seconds).
pub const OTP_VALID_SECS: i64 = 120;
/// No new one-time password within this time of the previous one (seconds).
pub const OTP_RESEND_SECS: i64 = 120;
/// Digits of a one-time password.
pub const OTP_DIGITS: usize = 6;

/// A failure counter with a lock (§9.9: 5 failures within 15 minutes lock for 15 minutes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lockout {
    failures: Vec<UnixTime>,
    locked_until: Option<UnixTime>,
}

impl Lockout {
    /// A counter without failures.
    pub fn new() -> Self {
        Self::default()
    }

    /// `Err(until)` while the counter is locked at `now`; `Ok(())` when an attempt may be judged.
    pub fn check(&self, now: UnixTime) -> Result<(), UnixTime> {
        match self.locked_until {
            Some(until) if now < until => Err(until),
            _ => Ok(()),
        }
    }

    /// Records a failure at `now`. Returns `Some(until)` when this failure locked the counter.
    pub fn fail(&mut self, now: UnixTime) -> Option<UnixTime> {
        if let Some(until) = self.locked_until {
            if now < until {
                return Some(until);
            }
            self.locked_until = None;
            self.failures.clear();
        }
        self.failures
            .retain(|t| now.0.saturating_sub(t.0) < LOCKOUT_WINDOW_SECS);
        self.failures.push(now);
        if self.failures.len() >= LOCKOUT_THRESHOLD {
            let until = UnixTime(now.0.saturating_add(LOCKOUT_SECS));
            self.locked_until = Some(until);
            self.failures.clear();
            return Some(until);
        }
        None
    }

    /// Failures left before the lock, at `now` (0 while locked).
    pub fn remaining(&self, now: UnixTime) -> usize {
        if self.check(now).is_err() {
            return 0;
        }
        let recent = self
            .failures
            .iter()
            .filter(|t| now.0.saturating_sub(t.0) < LOCKOUT_WINDOW_SECS)
            .count();
        LOCKOUT_THRESHOLD.saturating_sub(recent)
    }

    /// Forgets the failures (after a success).
    pub fn reset(&mut self) {
        self.failures.clear();
        self.locked_until = None;
    }
}

/// The outcome of checking a one-time password.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OtpCheck {
    /// It matches and is in time.
    Valid,
    /// It does not match.
    Wrong,
    /// It matches the form but its 120 s have passed (or none was sent).
    Expired,
    /// Not 6 decimal digits.
    Malformed,
}

/// An issued one-time password, as the server keeps it: only a digest of the code (the caller
/// chooses the digest; a keyed hash is expected) and the issue time.
#[derive(Clone, PartialEq, Eq)]
pub struct OtpChallenge {
    /// Digest of the code.
    pub digest: Vec<u8>,
    /// When it was sent.
    pub issued_at: UnixTime,
}

impl std::fmt::Debug for OtpChallenge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtpChallenge")
            .field("issued_at", &self.issued_at)
            .finish_non_exhaustive()
    }
}

/// Turns `OTP_DIGITS` random bytes into a code of 6 decimal digits (each byte reduced modulo 10
/// after rejecting values ≥ 250, so that every digit is equally likely). Returns `None` when the
/// bytes run out before 6 digits are found; the caller draws more.
pub fn otp_from_random(bytes: &[u8]) -> Option<String> {
    let code: String = bytes
        .iter()
        .filter(|b| **b < 250)
        .take(OTP_DIGITS)
        .map(|b| char::from(b'0' + b % 10))
        .collect();
    (code.len() == OTP_DIGITS).then_some(code)
}

/// Whether `input` has the form of a one-time password (6 ASCII digits).
pub fn otp_well_formed(input: &str) -> bool {
    input.len() == OTP_DIGITS && input.bytes().all(|b| b.is_ascii_digit())
}

/// Whether a new code may be sent at `now`: `Err(when)` gives the first second it may.
pub fn otp_may_send(previous: Option<&OtpChallenge>, now: UnixTime) -> Result<(), UnixTime> {
    match previous {
        Some(p) if now.0.saturating_sub(p.issued_at.0) < OTP_RESEND_SECS => {
            Err(UnixTime(p.issued_at.0.saturating_add(OTP_RESEND_SECS)))
        }
        _ => Ok(()),
    }
}

/// Checks `input` against the challenge. `digest_of` computes the same digest the challenge was
/// made with; the comparison runs in constant time over the digests.
pub fn otp_check(
    challenge: Option<&OtpChallenge>,
    input: &str,
    digest_of: impl Fn(&str) -> Vec<u8>,
    now: UnixTime,
) -> OtpCheck {
    let input = input.trim();
    if !otp_well_formed(input) {
        return OtpCheck::Malformed;
    }
    let Some(c) = challenge else {
        return OtpCheck::Expired;
    };
    if now.0.saturating_sub(c.issued_at.0) > OTP_VALID_SECS || now < c.issued_at {
        return OtpCheck::Expired;
    }
    if crate::constant_time_eq(&digest_of(input), &c.digest) {
        OtpCheck::Valid
    } else {
        OtpCheck::Wrong
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifth_failure_in_window_locks_for_fifteen_minutes() {
        let mut l = Lockout::new();
        for i in 0..4 {
            assert_eq!(l.fail(UnixTime(1000 + i * 60)), None);
        }
        assert_eq!(l.remaining(UnixTime(1300)), 1);
        assert_eq!(l.fail(UnixTime(1400)), Some(UnixTime(2300)));
        assert_eq!(l.check(UnixTime(2299)), Err(UnixTime(2300)));
        assert_eq!(l.remaining(UnixTime(2299)), 0);
        assert_eq!(l.check(UnixTime(2300)), Ok(()));
        assert_eq!(l.remaining(UnixTime(2300)), 5);
    }

    #[test]
    fn failures_outside_the_window_do_not_count() {
        let mut l = Lockout::new();
        for i in 0..4 {
            l.fail(UnixTime(i * 300));
        }
        // The first failure (t=0) left the window at t=900.
        assert_eq!(l.fail(UnixTime(950)), None);
        assert_eq!(l.check(UnixTime(951)), Ok(()));
    }

    #[test]
    fn reset_clears_failures() {
        let mut l = Lockout::new();
        for i in 0..4 {
            l.fail(UnixTime(i));
        }
        l.reset();
        assert_eq!(l.fail(UnixTime(10)), None);
        assert_eq!(l.remaining(UnixTime(10)), 4);
    }

    fn digest(s: &str) -> Vec<u8> {
        s.bytes().rev().collect()
    }

    #[test]
    fn otp_rules() {
        let c = OtpChallenge {
            digest: digest("123456"),
            issued_at: UnixTime(100),
        };
        assert_eq!(
            otp_check(Some(&c), "123456", digest, UnixTime(220)),
            OtpCheck::Valid
        );
        assert_eq!(
            otp_check(Some(&c), " 123456 ", digest, UnixTime(101)),
            OtpCheck::Valid
        );
        assert_eq!(
            otp_check(Some(&c), "123456", digest, UnixTime(221)),
            OtpCheck::Expired
        );
        assert_eq!(
            otp_check(Some(&c), "123457", digest, UnixTime(150)),
            OtpCheck::Wrong
        );
        assert_eq!(
            otp_check(Some(&c), "12345", digest, UnixTime(150)),
            OtpCheck::Malformed
        );
        assert_eq!(
            otp_check(Some(&c), "12345a", digest, UnixTime(150)),
            OtpCheck::Malformed
        );
        assert_eq!(
            otp_check(None, "123456", digest, UnixTime(150)),
            OtpCheck::Expired
        );
        assert_eq!(otp_may_send(Some(&c), UnixTime(219)), Err(UnixTime(220)));
        assert_eq!(otp_may_send(Some(&c), UnixTime(220)), Ok(()));
        assert_eq!(otp_may_send(None, UnixTime(0)), Ok(()));
    }

    #[test]
    fn otp_from_random_rejects_biased_bytes() {
        assert_eq!(
            otp_from_random(&[0, 255, 9, 19, 250, 249, 11, 3]).as_deref(),
            Some("099913")
        );
        assert_eq!(otp_from_random(&[255; 12]), None);
    }
}
