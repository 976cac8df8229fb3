//! Steps 9–12 of the redirect (spec protocol.md §5.3; decisions D11, D19, D21, D22, D36, D39):
//! resuming a transaction, dataset availability, identity methods and the session's citizen, run
//! together by [`admit`]; the authentication check after §5.3; and the transaction states with
//! their `txid_status` body (§8.3).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::codes::{IdentityMethod, ReturnCode};
use crate::date::UnixTime;
use crate::ids::ResourceId;
use crate::package::sp::PackagingMode;

use super::pid::Pid;
use super::redirect::{AcceptedRedirect, Rejection};
use super::retention::{pre_consent_expired, record_expired};

/// The flow state of a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TxState {
    /// The redirect was accepted; the citizen has not authenticated.
    Redirected,
    /// The citizen authenticated; no consent yet.
    Authenticated,
    /// Consented and the SP-API acknowledged; the DPs are being called.
    Consented,
    /// The package is ready to take.
    Ready,
    /// The package has been taken.
    Taken,
    /// The transaction ended with this return code (§6). A transaction whose every dataset failed
    /// after consent is `Ended(DpSystemError)`.
    Ended(ReturnCode),
}

impl TxState {
    /// Whether the transaction has not reached consent and has not ended.
    pub fn is_before_consent(self) -> bool {
        matches!(self, TxState::Redirected | TxState::Authenticated)
    }

    /// The `code` of the `txid_status` body (§8.3).
    ///
    /// `Ended(code)` reports the return code's wire value; the platform never records
    /// `Ended(Success)` (a successful transaction is `Consented`, `Ready` or `Taken`).
    pub fn status_code(self) -> u16 {
        match self {
            TxState::Redirected | TxState::Authenticated => 100,
            TxState::Consented => 102,
            TxState::Ready => 200,
            TxState::Taken => 201,
            TxState::Ended(c) => c.wire(),
        }
    }

    /// The `txid_status` 200 body (§8.3).
    pub fn status_body(self) -> StatusBody {
        let text = match self {
            TxState::Redirected | TxState::Authenticated => "redirect accepted; not consented yet",
            TxState::Consented => "consented; the data providers are being called",
            TxState::Ready => "the package is ready",
            TxState::Taken => "the package has been taken",
            TxState::Ended(c) => c.description(),
        };
        StatusBody {
            code: self.status_code().to_string(),
            text: text.to_owned(),
        }
    }
}

/// The JSON body of a `txid_status` 200: `{"code":"…","text":"…"}` (§8.3). `text` is informative.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusBody {
    /// The decimal status code.
    pub code: String,
    /// Human-readable; never parse it.
    pub text: String,
}

/// What §5.3 step 9 needs to know about a stored transaction with the same (`client_id`, `tx_id`).
#[derive(Clone, PartialEq, Eq)]
pub struct TxFacts {
    /// Its state.
    pub state: TxState,
    /// When it was created.
    pub created_at: UnixTime,
    /// The citizen's last request in it.
    pub last_activity: UnixTime,
    /// Its datasets, in request order.
    pub resources: Vec<ResourceId>,
    /// Its `pid`; `None` once purged.
    pub pid: Option<Pid>,
    /// The `returnUrl` it was created with, as given.
    pub return_url: String,
}

impl fmt::Debug for TxFacts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TxFacts")
            .field("state", &self.state)
            .field("created_at", &self.created_at)
            .field("last_activity", &self.last_activity)
            .field("resources", &self.resources)
            .field("pid", &self.pid)
            .field("return_url", &self.return_url)
            .finish()
    }
}

/// Outcome of §5.3 step 9.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TxSlot {
    /// Create a new transaction (replacing a stored one older than
    /// [`RECORD_LIFETIME_SECS`](super::RECORD_LIFETIME_SECS)).
    New,
    /// Continue the stored transaction: the citizen reloaded the redirect (D19).
    Resume,
}

/// §5.3 step 9 (D19): the pair is new (or its transaction is more than 8 hours old), or it resumes
/// an identical transaction that has not reached consent and has not expired. Otherwise code 400.
///
/// Identical means the same resource list in the same order, the same decrypted `pid` and the same
/// `returnUrl` text.
pub fn check_resume(
    existing: Option<&TxFacts>,
    new: &AcceptedRedirect,
    now: UnixTime,
) -> Result<TxSlot, ReturnCode> {
    let Some(e) = existing else {
        return Ok(TxSlot::New);
    };
    if record_expired(e.created_at, now) {
        return Ok(TxSlot::New);
    }
    let identical = e.resources == new.resources.ids()
        && e.pid.as_ref() == Some(&new.pid)
        && e.return_url == new.return_url;
    if identical
        && e.state.is_before_consent()
        && !pre_consent_expired(e.created_at, e.last_activity, now)
    {
        Ok(TxSlot::Resume)
    } else {
        Err(ReturnCode::BadRequest)
    }
}

/// Whether a dataset can be delivered, judged before authentication (D21).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Availability {
    /// Available.
    #[default]
    Available,
    /// The dataset or its DP service is stopped, or inside a DP maintenance window: 501.
    Stopped,
    /// The DP is unreachable (heartbeat, D30): 504.
    Unreachable,
    /// The dataset's daily limit is reached (D40): 206.
    OverDailyLimit,
}

impl Availability {
    /// The return code of an unavailable dataset; `None` when it is available.
    pub fn code(self) -> Option<ReturnCode> {
        match self {
            Availability::Available => None,
            Availability::Stopped => Some(ReturnCode::DpServiceStopped),
            Availability::Unreachable => Some(ReturnCode::DpSystemError),
            Availability::OverDailyLimit => Some(ReturnCode::OverDailyLimit),
        }
    }
}

/// How §5.3 step 10 ends a transaction: the return code of the first unavailable dataset, and the
/// unavailable ids for the SP-API's `unable_to_deliver`, in request order.
pub type Undeliverable = (ReturnCode, Vec<ResourceId>);

/// §5.3 step 10 (D21), over the requested datasets in request order.
///
/// Mode A needs every dataset, mode B at least one. When the transaction goes on, the result is
/// the unavailable datasets (mode B shows them on the consent page and in the manifest). When it
/// ends, the error is the code of the first unavailable dataset and the unavailable ids for the
/// SP-API's `unable_to_deliver`, in request order.
pub fn availability(
    mode: PackagingMode,
    datasets: &[(ResourceId, Availability)],
) -> Result<Vec<(ResourceId, Availability)>, Undeliverable> {
    let unavailable: Vec<(ResourceId, Availability)> = datasets
        .iter()
        .filter(|(_, a)| *a != Availability::Available)
        .cloned()
        .collect();
    let Some(first) = unavailable.first().and_then(|(_, a)| a.code()) else {
        return Ok(unavailable);
    };
    let ends = match mode {
        PackagingMode::A => true,
        PackagingMode::B => unavailable.len() == datasets.len(),
    };
    if ends {
        Err((first, unavailable.into_iter().map(|(id, _)| id).collect()))
    } else {
        Ok(unavailable)
    }
}

/// §5.3 step 11 (D11, D36): some identity method is listed by every requested dataset, else 403.
pub fn check_methods(accepted: &AcceptedRedirect) -> Result<(), ReturnCode> {
    if accepted.methods.is_empty() {
        Err(ReturnCode::Forbidden)
    } else {
        Ok(())
    }
}

/// §5.3 step 12: a platform session of a citizen other than `pid` gives 409.
pub fn check_session_identity(session_pid: Option<&Pid>, pid: &Pid) -> Result<(), ReturnCode> {
    match session_pid {
        Some(s) if s != pid => Err(ReturnCode::IdentityConflict),
        _ => Ok(()),
    }
}

/// The authentication check after §5.3 (§5.3 "Authentication", D39): an identity other than
/// `pid` gives 409; a method not offered to this request, or of a kind that does not match the
/// identifier, gives 403.
pub fn check_authenticated(
    accepted: &AcceptedRedirect,
    authenticated: &Pid,
    method: IdentityMethod,
) -> Result<(), ReturnCode> {
    if *authenticated != accepted.pid {
        return Err(ReturnCode::IdentityConflict);
    }
    if !accepted.methods.contains(&method) || !accepted.pid.admits(method) {
        return Err(ReturnCode::Forbidden);
    }
    Ok(())
}

/// A redirect that passed every check of §5.3.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    /// Create or resume the transaction.
    pub slot: TxSlot,
    /// Mode B: the datasets that cannot be delivered, in request order (empty in mode A).
    pub unavailable: Vec<(ResourceId, Availability)>,
}

/// §5.3 steps 9–12, in order, over the facts the caller looked up.
///
/// * `existing`: the stored transaction with the same (`client_id`, `tx_id`), if any (step 9);
/// * `mode` and `availability_of`: the service's packaging mode and each dataset's availability
///   (step 10);
/// * `session_pid`: the citizen of the browser's platform session, if any (step 12).
pub fn admit(
    accepted: &AcceptedRedirect,
    existing: Option<&TxFacts>,
    mode: PackagingMode,
    availability_of: impl Fn(&ResourceId) -> Availability,
    session_pid: Option<&Pid>,
    now: UnixTime,
) -> Result<Admission, Rejection> {
    let reject = |code| {
        Rejection::redirect(
            code,
            Some(&accepted.tx_id),
            accepted.return_query.as_deref(),
        )
    };
    let slot = check_resume(existing, accepted, now).map_err(reject)?;
    let datasets: Vec<(ResourceId, Availability)> = accepted
        .resources
        .ids()
        .iter()
        .map(|id| (id.clone(), availability_of(id)))
        .collect();
    let unavailable = availability(mode, &datasets).map_err(|(code, ids)| {
        let mut r = reject(code);
        if let Rejection::Redirect {
            unable_to_deliver, ..
        } = &mut r
        {
            *unable_to_deliver = ids;
        }
        r
    })?;
    check_methods(accepted).map_err(reject)?;
    check_session_identity(session_pid, &accepted.pid).map_err(reject)?;
    Ok(Admission { slot, unavailable })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codes::IdentityLevel;
    use crate::codes::IdentityMethod::*;
    use crate::flow::test_support::*;

    fn facts(a: &AcceptedRedirect) -> TxFacts {
        TxFacts {
            state: TxState::Redirected,
            created_at: UnixTime(NOW.0 - 100),
            last_activity: UnixTime(NOW.0 - 100),
            resources: a.resources.ids().to_vec(),
            pid: Some(a.pid.clone()),
            return_url: a.return_url.clone(),
        }
    }

    #[test]
    fn step9_resume_rules() {
        let a = run(&request(), &service()).unwrap();
        assert_eq!(check_resume(None, &a, NOW), Ok(TxSlot::New));
        let f = facts(&a);
        assert_eq!(check_resume(Some(&f), &a, NOW), Ok(TxSlot::Resume));
        let mut g = f.clone();
        g.state = TxState::Authenticated;
        assert_eq!(check_resume(Some(&g), &a, NOW), Ok(TxSlot::Resume));

        let mut changes: Vec<TxFacts> = Vec::new();
        for state in [
            TxState::Consented,
            TxState::Ready,
            TxState::Taken,
            TxState::Ended(ReturnCode::Refused),
        ] {
            changes.push(TxFacts { state, ..f.clone() });
        }
        changes.push(TxFacts {
            resources: vec![rid("API.LANDREC001"), rid("API.HOUSEHOLD1")],
            ..f.clone()
        });
        changes.push(TxFacts {
            pid: Some(Pid::Person("B123456780".parse().unwrap())),
            ..f.clone()
        });
        changes.push(TxFacts {
            pid: None,
            ..f.clone()
        });
        changes.push(TxFacts {
            return_url: "https://sp.example/mydata/return?step=3".into(),
            ..f.clone()
        });
        // Idle for more than 1,200 s.
        changes.push(TxFacts {
            last_activity: UnixTime(NOW.0 - 1_201),
            created_at: UnixTime(NOW.0 - 1_300),
            ..f.clone()
        });
        for g in &changes {
            assert_eq!(
                check_resume(Some(g), &a, NOW),
                Err(ReturnCode::BadRequest),
                "{g:?}"
            );
        }
        // More than 8 hours after creation, the pair is free again.
        let old = TxFacts {
            state: TxState::Taken,
            created_at: UnixTime(NOW.0 - 28_801),
            ..f.clone()
        };
        assert_eq!(check_resume(Some(&old), &a, NOW), Ok(TxSlot::New));
        let not_yet = TxFacts {
            created_at: UnixTime(NOW.0 - 28_800),
            ..old
        };
        assert_eq!(
            check_resume(Some(&not_yet), &a, NOW),
            Err(ReturnCode::BadRequest)
        );
    }

    #[test]
    fn step10_availability() {
        use Availability::*;
        let (h, l, m) = (
            rid("API.HOUSEHOLD1"),
            rid("API.LANDREC001"),
            rid("API.MOEONLY001"),
        );
        let all_ok = [(h.clone(), Available), (l.clone(), Available)];
        for mode in [PackagingMode::A, PackagingMode::B] {
            assert_eq!(availability(mode, &all_ok), Ok(vec![]));
        }
        let some = [
            (h.clone(), Available),
            (l.clone(), Unreachable),
            (m.clone(), Stopped),
        ];
        assert_eq!(
            availability(PackagingMode::A, &some),
            Err((ReturnCode::DpSystemError, vec![l.clone(), m.clone()]))
        );
        assert_eq!(
            availability(PackagingMode::B, &some),
            Ok(vec![(l.clone(), Unreachable), (m.clone(), Stopped)])
        );
        let none = [
            (h.clone(), OverDailyLimit),
            (l.clone(), Stopped),
            (m.clone(), Unreachable),
        ];
        for mode in [PackagingMode::A, PackagingMode::B] {
            assert_eq!(
                availability(mode, &none),
                Err((
                    ReturnCode::OverDailyLimit,
                    vec![h.clone(), l.clone(), m.clone()]
                ))
            );
        }
        assert_eq!(
            availability(PackagingMode::A, &[(h.clone(), Stopped)]),
            Err((ReturnCode::DpServiceStopped, vec![h]))
        );
        assert_eq!(Available.code(), None);
    }

    #[test]
    fn step11_and_12() {
        let a = run(&request(), &service()).unwrap();
        assert_eq!(check_methods(&a), Ok(()));
        let mut r = request();
        r.resources = seg("API.HOUSEHOLD1:API.MOEONLY001");
        let b = run(&r, &service()).unwrap();
        assert!(b.methods.is_empty(), "validate_redirect defers step 11");
        assert_eq!(b.required_level, Some(IdentityLevel::CERTIFICATE));
        assert_eq!(check_methods(&b), Err(ReturnCode::Forbidden));

        let other = Pid::Person("B123456780".parse().unwrap());
        assert_eq!(check_session_identity(None, &a.pid), Ok(()));
        assert_eq!(check_session_identity(Some(&a.pid), &a.pid), Ok(()));
        assert_eq!(
            check_session_identity(Some(&other), &a.pid),
            Err(ReturnCode::IdentityConflict)
        );
    }

    #[test]
    fn admit_keeps_the_order_of_steps_9_to_12() {
        let svc = service();
        let a = run(&request(), &svc).unwrap();
        let ok = |_: &ResourceId| Availability::Available;
        let other = Pid::Person("B123456780".parse().unwrap());
        let code = |r: Result<Admission, Rejection>| r.unwrap_err().code().unwrap().wire();

        let adm = admit(&a, None, PackagingMode::A, ok, None, NOW).unwrap();
        assert_eq!(adm.slot, TxSlot::New);
        let f = facts(&a);
        let adm = admit(&a, Some(&f), PackagingMode::A, ok, Some(&a.pid), NOW).unwrap();
        assert_eq!(adm.slot, TxSlot::Resume);

        // A request with no common method (step 11) ...
        let mut r = request();
        r.resources = seg("API.HOUSEHOLD1:API.MOEONLY001");
        let b = run(&r, &svc).unwrap();
        let stopped = |id: &ResourceId| {
            if id.as_str() == "API.MOEONLY001" {
                Availability::Stopped
            } else {
                Availability::Available
            }
        };
        let consented = TxFacts {
            state: TxState::Consented,
            ..facts(&b)
        };
        // ... that also fails steps 9, 10 and 12 gets step 9's 400,
        assert_eq!(
            code(admit(
                &b,
                Some(&consented),
                PackagingMode::A,
                stopped,
                Some(&other),
                NOW
            )),
            400
        );
        // then step 10's 501 with unable_to_deliver and the tx_id,
        let e = admit(&b, None, PackagingMode::A, stopped, Some(&other), NOW).unwrap_err();
        assert_eq!(
            e,
            Rejection::Redirect {
                code: ReturnCode::DpServiceStopped,
                tx_id: Some(TX.parse().unwrap()),
                original_query: Some("step=2".into()),
                unable_to_deliver: vec![rid("API.MOEONLY001")],
            }
        );
        // then step 11's 403 (mode B goes on with one dataset unavailable),
        let e = admit(&b, None, PackagingMode::B, stopped, Some(&other), NOW).unwrap_err();
        assert_eq!(e.code(), Some(ReturnCode::Forbidden));
        assert!(
            matches!(e, Rejection::Redirect { ref unable_to_deliver, .. } if unable_to_deliver.is_empty())
        );
        // and finally step 12's 409.
        assert_eq!(
            code(admit(&a, None, PackagingMode::A, ok, Some(&other), NOW)),
            409
        );
        let adm = admit(
            &a,
            None,
            PackagingMode::B,
            |id: &ResourceId| {
                if id.as_str() == "API.LANDREC001" {
                    Availability::OverDailyLimit
                } else {
                    Availability::Available
                }
            },
            None,
            NOW,
        )
        .unwrap();
        assert_eq!(
            adm.unavailable,
            [(rid("API.LANDREC001"), Availability::OverDailyLimit)]
        );
    }

    #[test]
    fn authentication_checks() {
        let a = run(&request(), &service()).unwrap();
        let other = Pid::Person("B123456780".parse().unwrap());
        assert_eq!(check_authenticated(&a, &a.pid, CitizenCertificate), Ok(()));
        assert_eq!(
            check_authenticated(&a, &other, CitizenCertificate),
            Err(ReturnCode::IdentityConflict)
        );
        assert_eq!(
            check_authenticated(&a, &a.pid, NhiCard),
            Err(ReturnCode::Forbidden),
            "not offered: LANDREC001 does not list NHI"
        );
        let ban = Pid::LegalPerson("22099131".parse().unwrap());
        assert!(ban.admits(BusinessCertificate) && !ban.admits(CitizenCertificate));
        assert!(a.pid.admits(Otp) && !a.pid.admits(BusinessCertificate));
        let mut b = a.clone();
        b.methods.push(BusinessCertificate);
        assert_eq!(
            check_authenticated(&b, &b.pid, BusinessCertificate),
            Err(ReturnCode::Forbidden),
            "a method of the wrong kind"
        );
        assert_eq!(format!("{ban:?}"), "Pid(BAN, <redacted>)");
    }

    #[test]
    fn txid_status_codes() {
        let cases = [
            (TxState::Redirected, "100"),
            (TxState::Authenticated, "100"),
            (TxState::Consented, "102"),
            (TxState::Ready, "200"),
            (TxState::Taken, "201"),
        ];
        for (s, c) in cases {
            assert_eq!(s.status_body().code, c);
        }
        for rc in ReturnCode::ALL {
            let b = TxState::Ended(rc).status_body();
            assert_eq!(b.code, rc.wire().to_string());
            assert!(!b.text.is_empty());
        }
        assert_eq!(
            serde_json::to_string(&TxState::Ended(ReturnCode::Timeout).status_body()).unwrap(),
            r#"{"code":"408","text":"timeout"}"#
        );
        assert!(TxState::Authenticated.is_before_consent());
        assert!(!TxState::Ended(ReturnCode::Timeout).is_before_consent());
    }
}
