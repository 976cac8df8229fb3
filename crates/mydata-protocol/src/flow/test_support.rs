//! Fixtures shared by the flow's unit tests: the sandbox service and the redirect of the worked
//! example (spec protocol.md §16.1), and the ticket of §16.3.

use crate::codes::IdentityMethod::*;
use crate::date::UnixTime;
use crate::ids::ResourceId;
use crate::param::{ParamCipher, ParamMode};

use super::pid::ApplicationMode;
use super::redirect::{AcceptedRedirect, RedirectRequest, Rejection, validate_redirect};
use super::service::{Lifecycle, ServiceStatus, ServiceView};

pub(super) const SECRET: &str = "Kx7pQ2mN9vR4tL8w";
pub(super) const IV: &str = "Hj3kM6nP9qS2uV5x";
pub(super) const REGISTERED: &str = "https://sp.example/mydata/return";
pub(super) const TX: &str = "3f0c9b1e-7a44-4c1e-9d55-2b8f6c0a1d2e";
pub(super) const ENC_PID: &str = "5fRhnjLWuQPMiB1e9Rsy0Q==";
pub(super) const NOW: UnixTime = UnixTime(1_767_225_600);
pub(super) const TICKET: &str = "6b1f0e52-2c1d-4f7a-9a57-0f3c1d2e8b44";

pub(super) fn rid(s: &str) -> ResourceId {
    s.parse().unwrap()
}

pub(super) fn cipher() -> ParamCipher {
    ParamCipher::from_raw(SECRET, IV, ParamMode::Cbc).unwrap()
}

pub(super) fn service() -> ServiceView {
    ServiceView {
        return_url: REGISTERED.into(),
        status: ServiceStatus::Active,
        maintenance: vec![],
        lifecycle: Lifecycle::Online,
        application_mode: ApplicationMode::Person,
        cipher: cipher(),
        datasets: vec![
            (
                rid("API.HOUSEHOLD1"),
                vec![CitizenCertificate, TwFido, NhiCard],
            ),
            (
                rid("API.LANDREC001"),
                vec![CitizenCertificate, TwFido, TwoDocuments],
            ),
            (rid("API.MOEONLY001"), vec![BusinessCertificate]),
        ],
    }
}

/// `API.HOUSEHOLD1:API.LANDREC001`, standard Base64.
pub(super) const SEG: &str = "QVBJLkhPVVNFSE9MRDE6QVBJLkxBTkRSRUMwMDE=";

pub(super) fn request() -> RedirectRequest<'static> {
    RedirectRequest {
        client_id: "CLI.SANDBOX001",
        resources: SEG,
        tx_id: TX,
        return_url: Some("https://sp.example/mydata/return?step=2"),
        pid: Some(ENC_PID),
        case_number: None,
        browser_ip: "192.0.2.10".parse().unwrap(),
    }
}

pub(super) fn seg(ids: &str) -> &'static str {
    use base64::Engine;
    let s = base64::engine::general_purpose::STANDARD.encode(ids);
    Box::leak(s.into_boxed_str())
}

pub(super) fn run(
    req: &RedirectRequest<'_>,
    svc: &ServiceView,
) -> Result<AcceptedRedirect, Rejection> {
    validate_redirect(req, Some(svc), NOW)
}
