//! Browser sessions of the citizen pages (spec D46).
//!
//! A session is named by a random 256-bit cookie value; the server keeps only its SHA-256, so a
//! memory dump does not yield usable cookies. Sessions live in memory: a restart logs citizens out
//! and they resume by reloading the SP's redirect (D19). A session ends after 1,200 s without a
//! request (brief §2: 20 minutes idle).
//!
//! The session holds the CSRF token of its forms, the citizen once authenticated (§5.3 step 12)
//! and, per transaction, the progress through the pages. Failure counters are kept per
//! transaction, outside the session, so that a new cookie does not reset them.

use std::collections::HashMap;
use std::sync::Mutex;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use mydata_protocol::attempts::{Lockout, OTP_RESEND_SECS, OtpChallenge};
use mydata_protocol::certlogin::ChallengeBook;
use mydata_protocol::codes::IdentityMethod;
use mydata_protocol::date::UnixTime;
use mydata_protocol::flow::{AcceptedRedirect, IDLE_EXPIRY_SECS, Pid};
use mydata_protocol::ids::ResourceId;
use sha2::{Digest, Sha256};

use super::Channel;
use crate::error::ServerResult;
use crate::secrets::random_bytes;

/// The session cookie's name.
pub const COOKIE: &str = "mydata_session";

/// A session ends after this many idle seconds.
pub const SESSION_IDLE_SECS: i64 = IDLE_EXPIRY_SECS;

/// One transaction's progress through the pages, in one session.
#[derive(Debug, Clone)]
pub struct Flow {
    /// The redirect as the checks accepted it.
    pub accepted: AcceptedRedirect,
    /// Mode B: datasets that cannot be delivered (shown on the consent page).
    pub unavailable: Vec<ResourceId>,
    /// The terms were accepted.
    pub terms: bool,
    /// The basic information (ID and birth date) matched.
    pub basic: bool,
    /// The one-time password last sent, and where.
    pub otp: Option<(OtpChallenge, Channel)>,
    /// A message for the next page (code sent, wait before a new code, …).
    pub notice: Option<String>,
    /// What the citizen typed into the form that was answered with an error, shown again once
    /// on the next page (never a one-time password).
    pub typed: Typed,
    /// The errors of the last post, each tied to its inputs; shown once on the next page.
    pub errors: Vec<FieldError>,
    /// The challenge of a certificate method, while it is live (D51).
    pub challenge: ChallengeBook,
}

/// The inputs of the flow's forms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    /// National ID number (basic information).
    NationalId,
    /// ROC birth date (basic information).
    BirthDate,
    /// NHI card number (two documents).
    NhiCardNumber,
    /// Household registration number (two documents).
    HouseholdNumber,
    /// One-time password.
    Code,
    /// A certificate method's signature.
    Signature,
}

impl Field {
    /// The input's `id` and `name` on the page.
    pub fn name(self) -> &'static str {
        match self {
            Field::NationalId => "national_id",
            Field::BirthDate => "birth_date",
            Field::NhiCardNumber => "nhi_card_number",
            Field::HouseholdNumber => "household_number",
            Field::Code => "code",
            Field::Signature => "signature",
        }
    }
}

/// An error message and the inputs it is about (the first one is focused).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The inputs, in page order.
    pub fields: Vec<Field>,
    /// The message in Traditional Chinese.
    pub zh: String,
    /// The message in English.
    pub en: String,
}

/// Values typed into a form that was answered with an error. One-time passwords are never kept.
/// Personal data: its `Debug` shows none of it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Typed {
    /// National ID number.
    pub national_id: String,
    /// ROC birth date.
    pub birth_date: String,
    /// NHI card number.
    pub nhi_card_number: String,
    /// Household registration number.
    pub household_number: String,
}

impl std::fmt::Debug for Typed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Typed(<redacted>)")
    }
}

impl Flow {
    /// A flow at its first page.
    pub fn new(accepted: AcceptedRedirect, unavailable: Vec<ResourceId>) -> Self {
        Flow {
            accepted,
            unavailable,
            terms: false,
            basic: false,
            otp: None,
            notice: None,
            typed: Typed::default(),
            errors: Vec::new(),
            challenge: ChallengeBook::new(),
        }
    }
}

/// One browser session.
#[derive(Debug)]
pub struct Session {
    /// The CSRF token every form of this session carries.
    pub csrf: String,
    /// The authenticated citizen, if any (§5.3 step 12).
    pub citizen: Option<Pid>,
    /// How the citizen authenticated.
    pub method: Option<IdentityMethod>,
    /// The last request.
    pub last_seen: UnixTime,
    /// Transactions opened in this session, by internal id.
    pub flows: HashMap<String, Flow>,
}

#[derive(Default)]
struct Inner {
    sessions: HashMap<[u8; 32], Session>,
    locks: HashMap<String, (Lockout, UnixTime)>,
    /// When a one-time password was last sent, by transaction (`tx:{id}`) and by destination
    /// (`to:{SHA-256 of the address}`): outside the sessions, so that a new cookie does not
    /// reset the resend limit (D46).
    otp_sent: HashMap<String, UnixTime>,
    last_sweep: i64,
}

/// Every session of this server.
#[derive(Default)]
pub struct Sessions {
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sessions({})", self.len())
    }
}

fn otp_keys(tx: &str, to: &str) -> [String; 2] {
    let dest = Sha256::digest(to.trim().to_lowercase().as_bytes());
    [format!("tx:{tx}"), format!("to:{}", hex::encode(dest))]
}

fn key(cookie: &str) -> [u8; 32] {
    Sha256::digest(cookie.as_bytes()).into()
}

fn token() -> ServerResult<String> {
    Ok(URL_SAFE_NO_PAD.encode(random_bytes::<32>()?))
}

impl Sessions {
    /// No sessions.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the live session named by `cookie` (refreshing its idle time); `None` when
    /// there is no such session or it has expired.
    pub fn with<R>(
        &self,
        cookie: Option<&str>,
        now: UnixTime,
        f: impl FnOnce(&mut Session) -> R,
    ) -> Option<R> {
        let k = key(cookie?);
        let mut inner = self.lock();
        let live = inner
            .sessions
            .get(&k)
            .is_some_and(|s| now.0.saturating_sub(s.last_seen.0) <= SESSION_IDLE_SECS);
        if !live {
            inner.sessions.remove(&k);
            return None;
        }
        let s = inner.sessions.get_mut(&k)?;
        s.last_seen = now;
        Some(f(s))
    }

    /// Runs `f` on the session named by `cookie`, creating one when there is none. Returns the
    /// new cookie value when a session was created.
    pub fn with_or_create<R>(
        &self,
        cookie: Option<&str>,
        now: UnixTime,
        f: impl FnOnce(&mut Session) -> R,
    ) -> ServerResult<(Option<String>, R)> {
        self.sweep(now);
        let mut inner = self.lock();
        if let Some(c) = cookie {
            let k = key(c);
            if let Some(s) = inner.sessions.get_mut(&k)
                && now.0.saturating_sub(s.last_seen.0) <= SESSION_IDLE_SECS
            {
                s.last_seen = now;
                return Ok((None, f(s)));
            }
            inner.sessions.remove(&k);
        }
        let value = token()?;
        let mut s = Session {
            csrf: token()?,
            citizen: None,
            method: None,
            last_seen: now,
            flows: HashMap::new(),
        };
        let r = f(&mut s);
        inner.sessions.insert(key(&value), s);
        Ok((Some(value), r))
    }

    /// Ends the session named by `cookie`.
    pub fn remove(&self, cookie: &str) {
        self.lock().sessions.remove(&key(cookie));
    }

    /// Runs `f` on the failure counter of a transaction.
    pub fn lockout<R>(&self, tx: &str, now: UnixTime, f: impl FnOnce(&mut Lockout) -> R) -> R {
        let mut inner = self.lock();
        let entry = inner
            .locks
            .entry(tx.to_string())
            .or_insert_with(|| (Lockout::new(), now));
        entry.1 = now;
        f(&mut entry.0)
    }

    /// Claims the sending of a one-time password for transaction `tx` to `to` at `now`: refused
    /// with the time a new one may be sent when one went to the same transaction or to the same
    /// destination less than [`OTP_RESEND_SECS`] ago, in any session (D46).
    pub fn claim_otp_send(&self, tx: &str, to: &str, now: UnixTime) -> Result<(), UnixTime> {
        let keys = otp_keys(tx, to);
        let mut inner = self.lock();
        let last = keys
            .iter()
            .filter_map(|k| inner.otp_sent.get(k))
            .map(|t| t.0)
            .max();
        if let Some(last) = last
            && now.0.saturating_sub(last) < OTP_RESEND_SECS
        {
            return Err(UnixTime(last.saturating_add(OTP_RESEND_SECS)));
        }
        for k in keys {
            inner.otp_sent.insert(k, now);
        }
        Ok(())
    }

    /// Gives back a claim whose code could not be sent: the citizen may ask again at once.
    pub fn release_otp_send(&self, tx: &str, to: &str) {
        let mut inner = self.lock();
        for k in otp_keys(tx, to) {
            inner.otp_sent.remove(&k);
        }
    }

    /// Drops idle sessions and counters untouched for an hour; at most once a minute.
    pub fn sweep(&self, now: UnixTime) {
        let mut inner = self.lock();
        if now.0.saturating_sub(inner.last_sweep) < 60 {
            return;
        }
        inner.last_sweep = now.0;
        inner
            .sessions
            .retain(|_, s| now.0.saturating_sub(s.last_seen.0) <= SESSION_IDLE_SECS);
        inner
            .locks
            .retain(|_, (_, t)| now.0.saturating_sub(t.0) <= 3_600);
        inner
            .otp_sent
            .retain(|_, t| now.0.saturating_sub(t.0) < OTP_RESEND_SECS);
    }

    /// Live sessions (including idle ones not yet swept).
    pub fn len(&self) -> usize {
        self.lock().sessions.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_after_idle_time() {
        let s = Sessions::new();
        let (cookie, csrf) = s
            .with_or_create(None, UnixTime(1000), |s| s.csrf.clone())
            .unwrap();
        let cookie = cookie.unwrap();
        assert_eq!(
            s.with(Some(&cookie), UnixTime(2200), |s| s.csrf.clone()),
            Some(csrf.clone())
        );
        assert!(s.with(Some(&cookie), UnixTime(3401), |_| ()).is_none());
        assert!(s.with(Some("forged"), UnixTime(2200), |_| ()).is_none());
        let (again, other) = s
            .with_or_create(Some(&cookie), UnixTime(3402), |s| s.csrf.clone())
            .unwrap();
        assert!(again.is_some());
        assert_ne!(other, csrf);
    }

    #[test]
    fn otp_resend_limit_is_per_transaction_and_destination() {
        let s = Sessions::new();
        assert_eq!(
            s.claim_otp_send("tx1", "a@example.test", UnixTime(100)),
            Ok(())
        );
        // The same transaction to another address, or another transaction to the same address
        // (case and spaces ignored): refused until 120 s after the first.
        assert_eq!(
            s.claim_otp_send("tx1", "b@example.test", UnixTime(150)),
            Err(UnixTime(220))
        );
        assert_eq!(
            s.claim_otp_send("tx2", " A@Example.test", UnixTime(219)),
            Err(UnixTime(220))
        );
        assert_eq!(
            s.claim_otp_send("tx2", "b@example.test", UnixTime(150)),
            Ok(())
        );
        assert_eq!(
            s.claim_otp_send("tx1", "a@example.test", UnixTime(220)),
            Ok(())
        );
        // A failed delivery gives the claim back.
        s.release_otp_send("tx1", "a@example.test");
        assert_eq!(
            s.claim_otp_send("tx1", "a@example.test", UnixTime(221)),
            Ok(())
        );
    }

    #[test]
    fn typed_values_are_not_in_debug_output() {
        let t = Typed {
            national_id: "A120345672".into(),
            birth_date: "0770101".into(),
            nhi_card_number: "000018342761".into(),
            household_number: "A2034517".into(),
        };
        let shown = format!("{t:?}");
        for v in ["A120345672", "0770101", "000018342761", "A2034517"] {
            assert!(!shown.contains(v), "{shown}");
        }
    }

    #[test]
    fn counters_outlive_sessions() {
        let s = Sessions::new();
        for i in 0..4 {
            assert_eq!(s.lockout("tx", UnixTime(i), |l| l.fail(UnixTime(i))), None);
        }
        assert!(
            s.lockout("tx", UnixTime(5), |l| l.fail(UnixTime(5)))
                .is_some()
        );
        assert!(
            s.lockout("tx", UnixTime(6), |l| l.check(UnixTime(6)))
                .is_err()
        );
        assert!(
            s.lockout("other", UnixTime(6), |l| l.check(UnixTime(6)))
                .is_ok()
        );
    }
}
