//! The redirect to the platform, `GET /service/{client_id}/{resources}/{tx_id}` (spec protocol.md
//! §5, steps 1–8 of §5.3; decisions D17, D18, D20, D3–D5, D39): [`validate_redirect`] and what it
//! accepts or refuses.

use std::fmt;
use std::net::IpAddr;

use crate::codes::methods_for_all;
use crate::codes::{IdentityLevel, IdentityMethod, ReturnCode, required_level};
use crate::date::UnixTime;
use crate::error::{Error, Result};
use crate::ids::{CaseNumber, ClientId, ResourceId, TxId};
use crate::param::ParamCipher;
use crate::resources::{MAX_SEGMENT_LEN, ResourceList};

use super::percent::percent_decode;
use super::pid::Pid;
use super::return_to_sp::return_url;
use super::service::{Lifecycle, ServiceStatus, ServiceView};

/// The parts of a redirect request, as the HTTP layer extracted them.
///
/// Query values are percent-decoded once (form decoding; a `+` that became a space in `pid` is
/// restored by the decryption). The `resources` segment may be given raw or percent-decoded.
#[derive(Debug, Clone, Copy)]
pub struct RedirectRequest<'a> {
    /// The `{client_id}` path segment.
    pub client_id: &'a str,
    /// The `{resources}` path segment.
    pub resources: &'a str,
    /// The `{tx_id}` path segment.
    pub tx_id: &'a str,
    /// The `returnUrl` query parameter.
    pub return_url: Option<&'a str>,
    /// The `pid` query parameter (encrypted).
    pub pid: Option<&'a str>,
    /// The `caseNumber` query parameter.
    pub case_number: Option<&'a str>,
    /// The citizen's browser address (D26).
    pub browser_ip: IpAddr,
}

/// A redirect that passed §5.3 steps 1–8: the transaction may be created (D19).
#[derive(Clone, PartialEq, Eq)]
pub struct AcceptedRedirect {
    /// The SP.
    pub client_id: ClientId,
    /// The requested datasets, in request order.
    pub resources: ResourceList,
    /// The SP's `tx_id`, as given.
    pub tx_id: TxId,
    /// The citizen the SP named.
    pub pid: Pid,
    /// The supplied `returnUrl`, as given (compared by [`check_resume`](super::check_resume)).
    pub return_url: String,
    /// The supplied `returnUrl`'s query string (after the first `?`), when non-empty; it is copied
    /// into the return (§6).
    pub return_query: Option<String>,
    /// `caseNumber`, when given and well formed (outside the trial state a malformed one is not
    /// checked and not recorded, D5).
    pub case_number: Option<CaseNumber>,
    /// The identity methods every requested dataset lists, strongest first (D11). Empty means
    /// §5.3 step 11 fails ([`check_methods`](super::check_methods)).
    pub methods: Vec<IdentityMethod>,
    /// The level the request requires (D11); `None` when a dataset lists no method.
    pub required_level: Option<IdentityLevel>,
}

impl fmt::Debug for AcceptedRedirect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AcceptedRedirect")
            .field("client_id", &self.client_id)
            .field("resources", &self.resources)
            .field("tx_id", &self.tx_id)
            .field("pid", &self.pid)
            .field("return_url", &self.return_url)
            .field("case_number", &self.case_number)
            .field("methods", &self.methods)
            .field("required_level", &self.required_level)
            .finish()
    }
}

impl AcceptedRedirect {
    /// The return target for `code` (§6): the registered return_url, the encrypted `tx_id` and the
    /// original query.
    ///
    /// Fails only when GCM encryption finds no randomness.
    pub fn return_location(
        &self,
        registered: &str,
        cipher: &ParamCipher,
        code: ReturnCode,
    ) -> Result<String> {
        let enc = cipher.encrypt(self.tx_id.as_str())?;
        Ok(return_url(
            registered,
            code,
            Some(&enc),
            self.return_query.as_deref(),
        ))
    }
}

/// Why a redirect is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// §5.3 steps 1–2: a `text/plain` 404 body, no redirect.
    PlainNotFound,
    /// A 302 to the service's **registered** return_url with `code` (§6).
    Redirect {
        /// The return code.
        code: ReturnCode,
        /// The `tx_id` to return encrypted: present exactly when §5.3 step 4 passed (D17).
        tx_id: Option<TxId>,
        /// The supplied `returnUrl`'s query string; `None` for code 404 (D18).
        original_query: Option<String>,
        /// Non-empty when the transaction ended at §5.3 step 10: the SP-API is then called with
        /// these ids as `unable_to_deliver` (§7, D22).
        unable_to_deliver: Vec<ResourceId>,
    },
}

impl Rejection {
    pub(super) fn redirect(code: ReturnCode, tx_id: Option<&TxId>, query: Option<&str>) -> Self {
        Rejection::Redirect {
            code,
            tx_id: tx_id.cloned(),
            original_query: query.map(str::to_owned),
            unable_to_deliver: Vec::new(),
        }
    }

    /// The return code, or `None` for a plain 404.
    pub fn code(&self) -> Option<ReturnCode> {
        match self {
            Rejection::PlainNotFound => None,
            Rejection::Redirect { code, .. } => Some(*code),
        }
    }

    /// The `Location` of the redirect, or `None` for a plain 404.
    ///
    /// `registered` is the service's registered return_url and `cipher` its parameter cipher.
    /// Fails only when GCM encryption finds no randomness.
    pub fn location(&self, registered: &str, cipher: &ParamCipher) -> Result<Option<String>> {
        let Rejection::Redirect {
            code,
            tx_id,
            original_query,
            ..
        } = self
        else {
            return Ok(None);
        };
        let enc = tx_id
            .as_ref()
            .map(|t| cipher.encrypt(t.as_str()))
            .transpose()?;
        Ok(Some(return_url(
            registered,
            *code,
            enc.as_deref(),
            original_query.as_deref(),
        )))
    }
}

/// §5.3 steps 1–8, in order; the first failure decides (D17).
///
/// `service` is the registration the caller found for `req.client_id` (`None` when there is none).
/// `now` decides the maintenance windows. On success the identity methods of step 11 are computed
/// but not yet judged: [`admit`](super::admit) (or [`check_methods`](super::check_methods)) does
/// that after steps 9 and 10.
pub fn validate_redirect(
    req: &RedirectRequest<'_>,
    service: Option<&ServiceView>,
    now: UnixTime,
) -> Result<AcceptedRedirect, Rejection> {
    // 1. A well-formed client_id naming a service that is not taken down.
    let client_id: ClientId = req
        .client_id
        .parse()
        .map_err(|_| Rejection::PlainNotFound)?;
    let svc = match service {
        Some(s) if s.status != ServiceStatus::TakenDown => s,
        _ => return Err(Rejection::PlainNotFound),
    };

    // 2. returnUrl present and non-empty.
    let supplied = match req.return_url {
        Some(u) if !u.is_empty() => u,
        _ => return Err(Rejection::PlainNotFound),
    };

    // 3. returnUrl matches the registered return_url (D18).
    let (base, query) = match supplied.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (supplied, None),
    };
    // Control characters (CR, LF, …) cannot reach the `Location` header of the return, so
    // such a returnUrl is refused here rather than failing after consent (D18).
    if supplied.contains('#')
        || supplied.chars().any(char::is_control)
        || !base.eq_ignore_ascii_case(&svc.return_url)
    {
        return Err(Rejection::redirect(
            ReturnCode::ReturnUrlMismatch,
            None,
            None,
        ));
    }
    let query = query.filter(|q| !q.is_empty());

    // 4. tx_id well formed (D4); without it, the return carries no tx_id.
    let tx_id: TxId = req
        .tx_id
        .parse()
        .map_err(|_| Rejection::redirect(ReturnCode::BadRequest, None, query))?;
    let reject = |code: ReturnCode| Rejection::redirect(code, Some(&tx_id), query);

    // 5. Not suspended, not in a maintenance window.
    if svc.status == ServiceStatus::Suspended || svc.maintenance.iter().any(|w| w.contains(now)) {
        return Err(reject(ReturnCode::ServiceSuspended));
    }

    // 6. State rules (D20, D5).
    let case_number = match &svc.lifecycle {
        Lifecycle::Online => req.case_number.and_then(|c| c.parse().ok()),
        Lifecycle::Test { ips } => {
            let ip = req.browser_ip.to_canonical();
            if !ips.iter().any(|t| t.to_canonical() == ip) {
                return Err(reject(ReturnCode::Forbidden));
            }
            req.case_number.and_then(|c| c.parse().ok())
        }
        Lifecycle::Trial { case_number } => {
            let given: CaseNumber = req
                .case_number
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| reject(ReturnCode::BadRequest))?;
            if given.as_str() != case_number {
                return Err(reject(ReturnCode::Forbidden));
            }
            Some(given)
        }
    };

    // 7. The resources segment (D3): syntax and duplicates 400, unregistered 401.
    let resources = decode_resources(req.resources)
        .and_then(|list| {
            list.check_allowed(svc.datasets.iter().map(|(id, _)| id))?;
            Ok(list)
        })
        .map_err(|e| reject(e.return_code()))?;

    // 8. pid present, decrypts, and names a kind the application mode admits (D1, D39). Every
    //    failure is the same 400.
    let pid = req
        .pid
        .filter(|p| !p.is_empty())
        .ok_or(())
        .and_then(|p| svc.cipher.decrypt(p).map_err(drop))
        .and_then(|plain| Pid::parse_for(svc.application_mode, &plain).map_err(drop))
        .map_err(|()| reject(ReturnCode::BadRequest))?;

    // Step 11's facts, judged later.
    let lists: Vec<&[IdentityMethod]> = resources
        .ids()
        .iter()
        .map(|id| {
            svc.datasets
                .iter()
                .find(|(d, _)| d == id)
                .map_or(&[][..], |(_, m)| m.as_slice())
        })
        .collect();

    Ok(AcceptedRedirect {
        client_id,
        methods: methods_for_all(&lists),
        required_level: required_level(&lists),
        resources,
        tx_id,
        pid,
        return_url: supplied.to_owned(),
        return_query: query.map(str::to_owned),
        case_number,
    })
}

/// Decodes the `{resources}` segment, raw or already percent-decoded (Base64 never holds `%`).
fn decode_resources(segment: &str) -> Result<ResourceList> {
    if segment.len() > MAX_SEGMENT_LEN {
        return Err(Error::MalformedResources(
            "segment longer than 1024 characters",
        ));
    }
    let bytes = percent_decode(segment);
    let text =
        std::str::from_utf8(&bytes).map_err(|_| Error::MalformedResources("not valid UTF-8"))?;
    ResourceList::decode(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codes::IdentityMethod::*;
    use crate::flow::test_support::*;
    use crate::flow::{ApplicationMode, MaintenanceWindow};

    /// The code and whether the tx_id is returned.
    fn code_of(r: Result<AcceptedRedirect, Rejection>) -> (u16, bool) {
        match r {
            Err(Rejection::Redirect { code, tx_id, .. }) => (code.wire(), tx_id.is_some()),
            Err(Rejection::PlainNotFound) => (404, false),
            Ok(a) => panic!("accepted: {a:?}"),
        }
    }

    fn plain(r: Result<AcceptedRedirect, Rejection>) -> bool {
        r == Err(Rejection::PlainNotFound)
    }

    #[test]
    fn accepts_the_worked_example() {
        let a = run(&request(), &service()).unwrap();
        assert_eq!(a.client_id.as_str(), "CLI.SANDBOX001");
        assert_eq!(
            a.resources.ids(),
            [rid("API.HOUSEHOLD1"), rid("API.LANDREC001")]
        );
        assert_eq!(a.tx_id.as_str(), TX);
        assert_eq!(a.pid.as_str(), "A123456789");
        assert_eq!(a.pid.uid_type(), "NID");
        assert_eq!(a.return_query.as_deref(), Some("step=2"));
        assert_eq!(a.case_number, None);
        assert_eq!(a.methods, [CitizenCertificate, TwFido]);
        assert_eq!(a.required_level, Some(IdentityLevel::NHI_CARD));
        assert!(!format!("{a:?}").contains("A123456789"), "pid redacted");
        // Request order is kept.
        let mut r = request();
        r.resources = seg("API.LANDREC001:API.HOUSEHOLD1");
        let a = run(&r, &service()).unwrap();
        assert_eq!(
            a.resources.ids(),
            [rid("API.LANDREC001"), rid("API.HOUSEHOLD1")]
        );
    }

    #[test]
    fn step1_unknown_service_is_plain_404() {
        let svc = service();
        let mut r = request();
        r.client_id = "CLI.short";
        assert!(plain(run(&r, &svc)));
        assert!(plain(validate_redirect(&request(), None, NOW)));
        let mut gone = service();
        gone.status = ServiceStatus::TakenDown;
        assert!(plain(run(&request(), &gone)));
        // Order: step 1 before everything else.
        r.return_url = None;
        r.tx_id = "bad tx";
        assert!(plain(run(&r, &svc)));
    }

    #[test]
    fn step2_missing_return_url_is_plain_404() {
        let mut r = request();
        r.return_url = None;
        assert!(plain(run(&r, &service())));
        r.return_url = Some("");
        r.tx_id = "";
        assert!(plain(run(&r, &service())));
    }

    #[test]
    fn step3_mismatch_returns_404_to_the_registered_url() {
        for bad in [
            "https://evil.example/mydata/return?step=2",
            "https://sp.example/mydata/return/x",
            "https://sp.example/mydata/return#frag",
            "https://sp.example/mydata/return?step=2#frag",
            "https://sp.example/mydata/retur",
        ] {
            let mut r = request();
            r.return_url = Some(bad);
            // Order: step 3 before step 4 (a bad tx_id would give 400).
            r.tx_id = "bad tx";
            let e = run(&r, &service()).unwrap_err();
            assert_eq!(
                e,
                Rejection::Redirect {
                    code: ReturnCode::ReturnUrlMismatch,
                    tx_id: None,
                    original_query: None,
                    unable_to_deliver: vec![],
                },
                "{bad}"
            );
            assert_eq!(
                e.location(REGISTERED, &cipher()).unwrap().unwrap(),
                "https://sp.example/mydata/return?code=404"
            );
        }
        // Case-insensitive match; the supplied text is kept for step 9, the target stays registered.
        let mut r = request();
        r.return_url = Some("HTTPS://SP.example/MyData/Return");
        let a = run(&r, &service()).unwrap();
        assert_eq!(a.return_query, None);
        assert_eq!(a.return_url, "HTTPS://SP.example/MyData/Return");
        r.return_url = Some("https://sp.example/mydata/return?");
        assert_eq!(run(&r, &service()).unwrap().return_query, None);
    }

    #[test]
    fn step4_bad_tx_id_is_400_without_tx_id() {
        for bad in ["", "has space", &"x".repeat(65), "a/b", "ü"] {
            let mut r = request();
            r.tx_id = bad;
            let mut svc = service();
            // Order: step 4 before step 5.
            svc.status = ServiceStatus::Suspended;
            let e = run(&r, &svc).unwrap_err();
            assert_eq!(
                e,
                Rejection::Redirect {
                    code: ReturnCode::BadRequest,
                    tx_id: None,
                    original_query: Some("step=2".into()),
                    unable_to_deliver: vec![],
                }
            );
            assert_eq!(
                e.location(REGISTERED, &cipher()).unwrap().unwrap(),
                "https://sp.example/mydata/return?code=400&step=2"
            );
        }
    }

    #[test]
    fn step5_suspended_or_maintenance_is_423() {
        let mut svc = service();
        svc.status = ServiceStatus::Suspended;
        // Order: step 5 before step 6.
        svc.lifecycle = Lifecycle::Test { ips: vec![] };
        assert_eq!(code_of(run(&request(), &svc)), (423, true));

        let mut svc = service();
        svc.maintenance = vec![MaintenanceWindow {
            start: NOW,
            end: UnixTime(NOW.0 + 60),
        }];
        assert_eq!(code_of(run(&request(), &svc)), (423, true));
        svc.maintenance[0] = MaintenanceWindow {
            start: UnixTime(NOW.0 - 60),
            end: NOW,
        };
        assert!(run(&request(), &svc).is_ok(), "window end is exclusive");
    }

    #[test]
    fn step6_test_ips() {
        let mut svc = service();
        svc.lifecycle = Lifecycle::Test {
            ips: vec![
                "192.0.2.99".parse().unwrap(),
                "2001:db8::1".parse().unwrap(),
            ],
        };
        let mut r = request();
        // Order: step 6 before step 7.
        r.resources = "!!!";
        assert_eq!(code_of(run(&r, &svc)), (403, true));
        let mut r = request();
        r.browser_ip = "192.0.2.99".parse().unwrap();
        assert!(run(&r, &svc).is_ok());
        r.browser_ip = "::ffff:192.0.2.99".parse().unwrap();
        assert!(run(&r, &svc).is_ok(), "IPv4-mapped IPv6 is the same host");
        r.browser_ip = "2001:db8::1".parse().unwrap();
        assert!(run(&r, &svc).is_ok());
        r.browser_ip = "2001:db8::2".parse().unwrap();
        assert_eq!(code_of(run(&r, &svc)), (403, true));
    }

    #[test]
    fn step6_trial_case_number() {
        let mut svc = service();
        svc.lifecycle = Lifecycle::Trial {
            case_number: "APP-2026-0001".into(),
        };
        let mut r = request();
        r.resources = "!!!";
        assert_eq!(code_of(run(&r, &svc)), (400, true), "missing");
        r.case_number = Some("APP 2026");
        assert_eq!(code_of(run(&r, &svc)), (400, true), "malformed");
        r.case_number = Some("");
        assert_eq!(code_of(run(&r, &svc)), (400, true), "empty");
        r.case_number = Some("app-2026-0001");
        assert_eq!(code_of(run(&r, &svc)), (403, true), "byte for byte");
        r.case_number = Some("APP-2026-0001");
        r.resources = SEG;
        let a = run(&r, &svc).unwrap();
        assert_eq!(a.case_number.unwrap().as_str(), "APP-2026-0001");
        // Outside the trial state it is recorded when well formed, and never checked.
        let mut r = request();
        r.case_number = Some("X-1");
        assert_eq!(
            run(&r, &service()).unwrap().case_number.unwrap().as_str(),
            "X-1"
        );
        r.case_number = Some("not valid!");
        assert_eq!(run(&r, &service()).unwrap().case_number, None);
    }

    #[test]
    fn step7_resources() {
        let cases: [(&str, u16); 7] = [
            ("!!!", 400),
            ("", 400),
            (seg("API.HOUSEHOLD1:API.HOUSEHOLD1"), 400),
            (seg("API.HOUSEHOLD1::API.LANDREC001"), 400),
            (seg("API.short"), 400),
            (seg("API.HOUSEHOLD1:API.NOTMINE001"), 401),
            (seg("API.NOTMINE001:API.NOTMINE001"), 400),
        ];
        for (segment, want) in cases {
            let mut r = request();
            r.resources = segment;
            // Order: step 7 before step 8.
            r.pid = None;
            assert_eq!(code_of(run(&r, &service())), (want, true), "{segment}");
        }
        let long = "A".repeat(MAX_SEGMENT_LEN + 1);
        let mut r = request();
        r.resources = &long;
        assert_eq!(code_of(run(&r, &service())), (400, true));
        // A raw (still percent-encoded) segment and the URL-safe alphabet are accepted.
        r.resources = "QVBJLkhPVVNFSE9MRDE6QVBJLkxBTkRSRUMwMDE%3D";
        assert!(run(&r, &service()).is_ok());
        r.resources = "QVBJLkhPVVNFSE9MRDE6QVBJLkxBTkRSRUMwMDE";
        assert!(run(&r, &service()).is_ok());
    }

    #[test]
    fn step8_pid() {
        let c = cipher();
        let bad_check = c.encrypt("A123456788").unwrap();
        let ban = c.encrypt("22099131").unwrap();
        let arc = c.encrypt("a812345671").unwrap();
        let cases: Vec<(Option<&str>, bool)> = vec![
            (None, false),
            (Some(""), false),
            (Some("%%%"), false),
            (Some("AAAA"), false),
            (Some(&bad_check), false),
            (Some(&ban), false),
            (Some(ENC_PID), true),
            (Some("5fRhnjLWuQPMiB1e9Rsy0Q"), true),
            (Some(&arc), true),
        ];
        for (pid, ok) in cases {
            let mut r = request();
            r.pid = pid;
            let got = run(&r, &service());
            if ok {
                assert!(got.is_ok(), "{pid:?}");
            } else {
                assert_eq!(code_of(got), (400, true), "{pid:?}");
            }
        }
        // A resident certificate is normalised to upper case.
        let mut r = request();
        r.pid = Some(&arc);
        let a = run(&r, &service()).unwrap();
        assert_eq!((a.pid.as_str(), a.pid.uid_type()), ("A812345671", "ARC"));

        // Legal-person mode admits a business number only.
        let mut svc = service();
        svc.application_mode = ApplicationMode::LegalPerson;
        assert_eq!(code_of(run(&request(), &svc)), (400, true));
        r.pid = Some(&ban);
        r.resources = seg("API.MOEONLY001");
        let a = run(&r, &svc).unwrap();
        assert_eq!((a.pid.as_str(), a.pid.uid_type()), ("22099131", "BAN"));
        assert_eq!(a.methods, [BusinessCertificate]);
        // Either, in the combined mode.
        svc.application_mode = ApplicationMode::PersonOrLegalPerson;
        assert!(run(&r, &svc).is_ok());
        assert!(run(&request(), &svc).is_ok());
    }
}
