//! The online-service flow rules (spec protocol.md §5–§8, §14; decisions D17–D27, D37, D39), as pure
//! functions over facts the caller looked up.
//!
//! The server's handlers stay thin: they read the request, look up the facts in storage, call the
//! functions here with the current time, and turn the verdict into an HTTP answer.
//!
//! * **Redirect** (`GET /service/{client_id}/{resources}/{tx_id}`, §5.3): [`validate_redirect`] runs
//!   steps 1–8 and gives an [`AcceptedRedirect`]; [`admit`] then runs steps 9–12, which need stored
//!   and session state. Each of the later steps is also available alone ([`check_resume`],
//!   [`availability`], [`check_methods`], [`check_session_identity`]). A failure is a [`Rejection`].
//! * **Return** (§6): [`return_url`] builds `{registered}?code=…&tx_id=…&{original query}`.
//! * **SP-API** (§7): [`SpApiBody`] writes and reads the JSON body.
//! * **MyData-API** (§8.1): [`data_answer`] evaluates `GET /service/data` in the order of D25;
//!   [`TxState::status_body`] gives the `txid_status` body (§8.3).
//! * **Retention** (§14, D37): [`purge_due`], [`pre_consent_expired`], [`record_expired`].
//!
//! Time checks use whole seconds: a period of *n* seconds has run out once **more** than *n* seconds
//! have passed since its start.

use std::fmt;
use std::net::IpAddr;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::codes::methods_for_all;
use crate::codes::{IdentityLevel, IdentityMethod, MyDataApiStatus, ReturnCode, required_level};
use crate::date::UnixTime;
use crate::error::{Error, IdKind, Result};
use crate::ids::{CaseNumber, ClientId, PermissionTicket, ResourceId, TxId};
use crate::package::sp::PackagingMode;
use crate::param::ParamCipher;
use crate::person::{BusinessNumber, PersonalId};
use crate::resources::{MAX_SEGMENT_LEN, ResourceList};

// --- time limits ----------------------------------------------------------------------------------

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
fn elapsed_more_than(start: UnixTime, now: UnixTime, secs: i64) -> bool {
    now.0.saturating_sub(start.0) > secs
}

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

// --- the citizen named by `pid` -------------------------------------------------------------------

/// The application mode of a service (D39): which kinds of `pid` it admits.
///
/// "Several persons" services use [`ApplicationMode::Person`]: each person completes a separate
/// transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ApplicationMode {
    /// A national ID or resident certificate number, with a natural-person method.
    #[default]
    Person,
    /// A business number, with the business certificate (`MOE`).
    LegalPerson,
    /// Either, with the matching method.
    PersonOrLegalPerson,
}

/// The identifier that `pid` names: a natural person or a legal person (§2.2, D39).
///
/// `Debug` does not print the identifier.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Pid {
    /// A national ID or a resident certificate number.
    Person(PersonalId),
    /// A business number.
    LegalPerson(BusinessNumber),
}

impl Pid {
    /// Parses a decrypted `pid` as a kind the application mode admits (D39).
    ///
    /// In [`ApplicationMode::PersonOrLegalPerson`], 8 characters are read as a business number and
    /// anything else as a personal identifier.
    pub fn parse_for(mode: ApplicationMode, s: &str) -> Result<Self> {
        match mode {
            ApplicationMode::Person => s.parse().map(Pid::Person),
            ApplicationMode::LegalPerson => s.parse().map(Pid::LegalPerson),
            ApplicationMode::PersonOrLegalPerson if s.len() == 8 => s.parse().map(Pid::LegalPerson),
            ApplicationMode::PersonOrLegalPerson => s.parse().map(Pid::Person),
        }
    }

    /// The identifier in canonical form (upper case).
    pub fn as_str(&self) -> &str {
        match self {
            Pid::Person(p) => p.as_str(),
            Pid::LegalPerson(b) => b.as_str(),
        }
    }

    /// The kind as the wire names it (`uid_type`, `{{pid_type}}`): `NID`, `ARC` or `BAN`.
    pub fn uid_type(&self) -> &'static str {
        match self {
            Pid::Person(PersonalId::National(_)) => "NID",
            Pid::Person(PersonalId::Resident(_)) => "ARC",
            Pid::LegalPerson(_) => "BAN",
        }
    }

    /// Whether an authentication `method` is of the kind that matches this identifier (D39): the
    /// business certificate for a legal person, any other method for a natural person.
    pub fn admits(&self, method: IdentityMethod) -> bool {
        let business = method == IdentityMethod::BusinessCertificate;
        match self {
            Pid::Person(_) => !business,
            Pid::LegalPerson(_) => business,
        }
    }
}

impl fmt::Debug for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pid({}, <redacted>)", self.uid_type())
    }
}

// --- the service as registered --------------------------------------------------------------------

/// The operator status of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ServiceStatus {
    /// In service.
    #[default]
    Active,
    /// Suspended by the operator: redirects get code 423 (§5.3 step 5).
    Suspended,
    /// Taken down: the service is treated as unknown (plain 404, §5.3 step 1).
    TakenDown,
}

/// The lifecycle state of a service, with what its state check needs (D20).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Lifecycle {
    /// Online (production): no state check.
    #[default]
    Online,
    /// Test: the browser must come from one of these IPs.
    Test {
        /// The registered test IPs (at most 3).
        ips: Vec<IpAddr>,
    },
    /// Trial: `caseNumber` is required and must equal the approved application number.
    Trial {
        /// The approved trial application number, compared byte for byte.
        case_number: String,
    },
}

/// One maintenance window of the service, resolved to instants: `start` ≤ t < `end` (D40).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MaintenanceWindow {
    /// First second inside the window.
    pub start: UnixTime,
    /// First second after the window.
    pub end: UnixTime,
}

impl MaintenanceWindow {
    /// Whether `t` is inside the window.
    pub fn contains(&self, t: UnixTime) -> bool {
        self.start <= t && t < self.end
    }
}

/// What the redirect checks need to know about the service the `client_id` names.
#[derive(Debug, Clone)]
pub struct ServiceView {
    /// The registered return_url, exactly as registered.
    pub return_url: String,
    /// Operator status.
    pub status: ServiceStatus,
    /// The service's own maintenance windows around now (weekly or monthly rules resolved by the
    /// caller, D40).
    pub maintenance: Vec<MaintenanceWindow>,
    /// Lifecycle state.
    pub lifecycle: Lifecycle,
    /// Which kinds of `pid` the service admits.
    pub application_mode: ApplicationMode,
    /// The service's parameter cipher (`client_secret`, `cbc_iv`, mode), for `pid` and `tx_id`.
    pub cipher: ParamCipher,
    /// Every dataset the service may request, with the identity methods that dataset lists now.
    pub datasets: Vec<(ResourceId, Vec<IdentityMethod>)>,
}

// --- the redirect ---------------------------------------------------------------------------------

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
    /// The supplied `returnUrl`, as given (compared by [`check_resume`]).
    pub return_url: String,
    /// The supplied `returnUrl`'s query string (after the first `?`), when non-empty; it is copied
    /// into the return (§6).
    pub return_query: Option<String>,
    /// `caseNumber`, when given and well formed (outside the trial state a malformed one is not
    /// checked and not recorded, D5).
    pub case_number: Option<CaseNumber>,
    /// The identity methods every requested dataset lists, strongest first (D11). Empty means
    /// §5.3 step 11 fails ([`check_methods`]).
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
    fn redirect(code: ReturnCode, tx_id: Option<&TxId>, query: Option<&str>) -> Self {
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
/// but not yet judged: [`admit`] (or [`check_methods`]) does that after steps 9 and 10.
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

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent-decodes `%XX` sequences; anything else, including a stray `%`, is kept as is.
fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let (Some(h), Some(l)) = (
                b.get(i + 1).copied().and_then(hex_value),
                b.get(i + 2).copied().and_then(hex_value),
            )
        {
            out.push(h << 4 | l);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// Percent-encodes every byte outside the URI unreserved set (`A–Z a–z 0–9 - . _ ~`).
pub fn percent_encode(s: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
    }
    out
}

// --- steps 9-12 -----------------------------------------------------------------------------------

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
    /// Create a new transaction (replacing a stored one older than [`RECORD_LIFETIME_SECS`]).
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

// --- return to the SP -----------------------------------------------------------------------------

/// The return target (§6, D18): `{registered}?code={code}[&tx_id={enc_tx_id}][&{original_query}]`.
///
/// `enc_tx_id` is the encrypted `tx_id` (standard Base64); it is percent-encoded here. The original
/// query is copied unchanged when non-empty, except for code 404. (A registered return_url that
/// already holds a `?` is continued with `&`.)
pub fn return_url(
    registered: &str,
    code: ReturnCode,
    enc_tx_id: Option<&str>,
    original_query: Option<&str>,
) -> String {
    let mut url = String::with_capacity(registered.len() + 128);
    url.push_str(registered);
    url.push(if registered.contains('?') { '&' } else { '?' });
    url.push_str("code=");
    url.push_str(&code.wire().to_string());
    if let Some(t) = enc_tx_id {
        url.push_str("&tx_id=");
        url.push_str(&percent_encode(t));
    }
    if code != ReturnCode::ReturnUrlMismatch
        && let Some(q) = original_query.filter(|q| !q.is_empty())
    {
        url.push('&');
        url.push_str(q);
    }
    url
}

// --- SP-API ---------------------------------------------------------------------------------------

/// What an SP-API call delivers: exactly one of `secret_key` and `unable_to_deliver` (§7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpApiDelivery {
    /// After consent: the per-transaction `secret_key`, already encrypted (§3, or RSA-OAEP, D42).
    SecretKey(String),
    /// The transaction ended at §5.3 step 10: the unavailable ids, in request order (non-empty).
    UnableToDeliver(Vec<ResourceId>),
}

/// The SP-API request body (§7): `tx_id`, optional `apiKey`, `permission_ticket`, then
/// `secret_key` or `unable_to_deliver`, in that member order.
///
/// `Debug` does not print `apiKey`.
#[derive(Clone, PartialEq, Eq)]
pub struct SpApiBody {
    /// The SP's `tx_id`, plain.
    pub tx_id: TxId,
    /// The SP-API key, when the service uses one (D24), sent verbatim.
    pub api_key: Option<String>,
    /// The ticket.
    pub permission_ticket: PermissionTicket,
    /// What the call delivers.
    pub delivery: SpApiDelivery,
}

impl fmt::Debug for SpApiBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpApiBody")
            .field("tx_id", &self.tx_id)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("permission_ticket", &self.permission_ticket)
            .field("delivery", &self.delivery)
            .finish()
    }
}

#[derive(Serialize, Deserialize)]
struct SpApiWire<T, K, R> {
    tx_id: T,
    #[serde(rename = "apiKey", skip_serializing_if = "Option::is_none", default)]
    api_key: Option<K>,
    permission_ticket: T,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    secret_key: Option<K>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    unable_to_deliver: Option<R>,
}

impl Serialize for SpApiBody {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let (secret_key, unable_to_deliver) = match &self.delivery {
            SpApiDelivery::SecretKey(k) => (Some(k.as_str()), None),
            SpApiDelivery::UnableToDeliver(ids) => (None, Some(ids.as_slice())),
        };
        SpApiWire {
            tx_id: self.tx_id.as_str(),
            api_key: self.api_key.as_deref(),
            permission_ticket: self.permission_ticket.as_str(),
            secret_key,
            unable_to_deliver,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for SpApiBody {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let w = SpApiWire::<String, String, Vec<String>>::deserialize(d)?;
        SpApiBody::from_wire(w).map_err(D::Error::custom)
    }
}

impl SpApiBody {
    fn from_wire(w: SpApiWire<String, String, Vec<String>>) -> Result<Self> {
        let delivery = match (w.secret_key, w.unable_to_deliver) {
            (Some(k), None) if !k.is_empty() => SpApiDelivery::SecretKey(k),
            (None, Some(ids)) if !ids.is_empty() => SpApiDelivery::UnableToDeliver(
                ids.iter()
                    .map(|s| s.parse())
                    .collect::<Result<Vec<ResourceId>>>()?,
            ),
            (Some(_), Some(_)) | (None, None) => {
                return Err(Error::invalid(
                    IdKind::SecretKey,
                    "the SP-API body must hold exactly one of secret_key and unable_to_deliver",
                ));
            }
            _ => {
                return Err(Error::invalid(
                    IdKind::SecretKey,
                    "secret_key or unable_to_deliver is empty",
                ));
            }
        };
        Ok(SpApiBody {
            tx_id: w.tx_id.parse()?,
            api_key: w.api_key,
            permission_ticket: w.permission_ticket.parse()?,
            delivery,
        })
    }

    /// The body as compact JSON.
    pub fn to_json(&self) -> String {
        // Serializing strings and string arrays cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads a body (SP side): the ids must be valid, and exactly one of `secret_key` and
    /// `unable_to_deliver` must be present and non-empty. Unknown members are ignored; repeated
    /// members are refused.
    pub fn from_json(json: &[u8]) -> Result<Self> {
        let w: SpApiWire<String, String, Vec<String>> = serde_json::from_slice(json)
            .map_err(|_| {
                Error::invalid(
                    IdKind::TxId,
                    "the SP-API body is not a JSON object with string members tx_id and permission_ticket",
                )
            })?;
        Self::from_wire(w)
    }

    /// Whether the body carries the expected `apiKey` (D24), compared in constant time for equal
    /// lengths. With no key expected, the body must carry none.
    pub fn api_key_matches(&self, expected: Option<&str>) -> bool {
        match (self.api_key.as_deref(), expected) {
            (None, None) => true,
            (Some(got), Some(want)) => crate::constant_time_eq(got.as_bytes(), want.as_bytes()),
            _ => false,
        }
    }
}

// --- MyData-API -----------------------------------------------------------------------------------

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

// --- retention ------------------------------------------------------------------------------------

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

/// Whether a transaction is more than 8 hours old (D19, §8.3): its (`client_id`, `tx_id`) pair is
/// free again, and the status helpers answer 404 for it.
pub fn record_expired(created_at: UnixTime, now: UnixTime) -> bool {
    elapsed_more_than(created_at, now, RECORD_LIFETIME_SECS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::param::ParamMode;
    use IdentityMethod::*;

    const SECRET: &str = "Kx7pQ2mN9vR4tL8w";
    const IV: &str = "Hj3kM6nP9qS2uV5x";
    const REGISTERED: &str = "https://sp.example/mydata/return";
    const TX: &str = "3f0c9b1e-7a44-4c1e-9d55-2b8f6c0a1d2e";
    const ENC_PID: &str = "5fRhnjLWuQPMiB1e9Rsy0Q==";
    const NOW: UnixTime = UnixTime(1_767_225_600);

    fn rid(s: &str) -> ResourceId {
        s.parse().unwrap()
    }

    fn cipher() -> ParamCipher {
        ParamCipher::from_raw(SECRET, IV, ParamMode::Cbc).unwrap()
    }

    fn service() -> ServiceView {
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
    const SEG: &str = "QVBJLkhPVVNFSE9MRDE6QVBJLkxBTkRSRUMwMDE=";

    fn request() -> RedirectRequest<'static> {
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

    fn seg(ids: &str) -> &'static str {
        use base64::Engine;
        let s = base64::engine::general_purpose::STANDARD.encode(ids);
        Box::leak(s.into_boxed_str())
    }

    fn run(req: &RedirectRequest<'_>, svc: &ServiceView) -> Result<AcceptedRedirect, Rejection> {
        validate_redirect(req, Some(svc), NOW)
    }

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
    fn return_url_building() {
        let enc = cipher().encrypt(TX).unwrap();
        assert_eq!(
            return_url(REGISTERED, ReturnCode::Success, Some(&enc), Some("step=2")),
            "https://sp.example/mydata/return?code=200&tx_id=NuW8pQFamqiqoIStUPQJZpAOVicZfW1B6RYMWwW8dh9BpgGZgpZr706aZ7Fi9c1f&step=2"
        );
        assert_eq!(
            return_url(
                REGISTERED,
                ReturnCode::ReturnUrlMismatch,
                Some("x"),
                Some("a=1")
            ),
            "https://sp.example/mydata/return?code=404&tx_id=x",
            "never the query for 404"
        );
        assert_eq!(
            return_url(REGISTERED, ReturnCode::Refused, None, Some("")),
            "https://sp.example/mydata/return?code=205"
        );
        assert_eq!(
            return_url(
                REGISTERED,
                ReturnCode::Refused,
                Some("a+b/c=="),
                Some("code=1&x=%20")
            ),
            "https://sp.example/mydata/return?code=205&tx_id=a%2Bb%2Fc%3D%3D&code=1&x=%20"
        );
        assert_eq!(
            return_url("https://sp.example/r?k=v", ReturnCode::Timeout, None, None),
            "https://sp.example/r?k=v&code=408"
        );
    }

    /// The `tx_id` parameter of a return URL, percent-decoded.
    fn tx_param(url: &str) -> String {
        let q = url.split_once('?').unwrap().1;
        let v = q
            .split('&')
            .find_map(|kv| kv.strip_prefix("tx_id="))
            .unwrap();
        assert!(!v.contains(['+', '/', '=']), "{v}");
        String::from_utf8(percent_decode(v)).unwrap()
    }

    #[test]
    fn returned_tx_id_decrypts_in_both_modes() {
        let a = run(&request(), &service()).unwrap();
        let mut seen_special = false;
        for mode in [ParamMode::Cbc, ParamMode::Gcm] {
            let c = ParamCipher::from_raw(SECRET, IV, mode).unwrap();
            for _ in 0..64 {
                let url = a
                    .return_location(REGISTERED, &c, ReturnCode::Success)
                    .unwrap();
                assert!(url.starts_with("https://sp.example/mydata/return?code=200&tx_id="));
                assert!(url.ends_with("&step=2"));
                let enc = tx_param(&url);
                seen_special |= enc.contains(['+', '/']);
                assert_eq!(c.decrypt(&enc).unwrap(), TX);
            }
        }
        assert!(seen_special, "some ciphertext held + or /");
        let e = admit(
            &a,
            None,
            PackagingMode::A,
            |_: &ResourceId| Availability::Unreachable,
            None,
            NOW,
        )
        .unwrap_err();
        let url = e.location(REGISTERED, &cipher()).unwrap().unwrap();
        assert!(url.starts_with("https://sp.example/mydata/return?code=504&tx_id="));
        assert_eq!(cipher().decrypt(&tx_param(&url)).unwrap(), TX);
        assert_eq!(
            Rejection::PlainNotFound
                .location(REGISTERED, &cipher())
                .unwrap(),
            None
        );
    }

    const TICKET: &str = "6b1f0e52-2c1d-4f7a-9a57-0f3c1d2e8b44";
    const KEY: &str = "2qnf5bRDsCWdks4CUhiCdkhTKFcBcKU1DyFIdXYLRhAO3xA69wkNSapclltSlmcU";

    #[test]
    fn sp_api_body_exact_json() {
        let mut body = SpApiBody {
            tx_id: TX.parse().unwrap(),
            api_key: None,
            permission_ticket: TICKET.parse().unwrap(),
            delivery: SpApiDelivery::SecretKey(KEY.into()),
        };
        let json =
            format!(r#"{{"tx_id":"{TX}","permission_ticket":"{TICKET}","secret_key":"{KEY}"}}"#);
        assert_eq!(body.to_json(), json);
        assert_eq!(SpApiBody::from_json(json.as_bytes()).unwrap(), body);

        body.api_key = Some("Zq8VtY3cR1mK6wN0pL4sH9dB2fJ7xG5a".into());
        body.delivery =
            SpApiDelivery::UnableToDeliver(vec![rid("API.LANDREC001"), rid("API.HOUSEHOLD1")]);
        let json = format!(
            r#"{{"tx_id":"{TX}","apiKey":"Zq8VtY3cR1mK6wN0pL4sH9dB2fJ7xG5a","permission_ticket":"{TICKET}","unable_to_deliver":["API.LANDREC001","API.HOUSEHOLD1"]}}"#
        );
        assert_eq!(body.to_json(), json);
        let back = SpApiBody::from_json(json.as_bytes()).unwrap();
        assert_eq!(back, body);
        assert!(back.api_key_matches(Some("Zq8VtY3cR1mK6wN0pL4sH9dB2fJ7xG5a")));
        assert!(!back.api_key_matches(Some("Zq8VtY3cR1mK6wN0pL4sH9dB2fJ7xG5b")));
        assert!(!back.api_key_matches(Some("short")));
        assert!(!back.api_key_matches(None));
        assert!(!format!("{back:?}").contains("Zq8V"), "apiKey redacted");
        // serde goes through the same rules.
        let v: SpApiBody = serde_json::from_str(&json).unwrap();
        assert_eq!(v, body);
        assert_eq!(serde_json::to_string(&v).unwrap(), json);
    }

    #[test]
    fn sp_api_body_refusals() {
        let base = format!(r#""tx_id":"{TX}","permission_ticket":"{TICKET}""#);
        for bad in [
            format!("{{{base}}}"),
            format!(r#"{{{base},"secret_key":"{KEY}","unable_to_deliver":["API.LANDREC001"]}}"#),
            format!(r#"{{{base},"unable_to_deliver":[]}}"#),
            format!(r#"{{{base},"secret_key":""}}"#),
            format!(r#"{{{base},"unable_to_deliver":["API.x"]}}"#),
            format!(r#"{{{base},"secret_key":"{KEY}","secret_key":"{KEY}"}}"#),
            format!(r#"{{"tx_id":"bad tx","permission_ticket":"{TICKET}","secret_key":"{KEY}"}}"#),
            format!(r#"{{"tx_id":"{TX}","permission_ticket":"nope","secret_key":"{KEY}"}}"#),
            format!(r#"{{"permission_ticket":"{TICKET}","secret_key":"{KEY}"}}"#),
            format!(r#"{{"tx_id":1,"permission_ticket":"{TICKET}","secret_key":"{KEY}"}}"#),
            "[]".into(),
            "".into(),
            "{".into(),
        ] {
            assert!(SpApiBody::from_json(bad.as_bytes()).is_err(), "{bad}");
            assert!(serde_json::from_str::<SpApiBody>(&bad).is_err(), "{bad}");
        }
        // Unknown members are ignored; the ticket is read in any case and held in lower case.
        let ok = format!(
            r#"{{"tx_id":"{TX}","permission_ticket":"{}","secret_key":"{KEY}","extra":1}}"#,
            TICKET.to_uppercase()
        );
        let b = SpApiBody::from_json(ok.as_bytes()).unwrap();
        assert_eq!(b.permission_ticket.as_str(), TICKET);
        assert!(b.api_key_matches(None));
    }

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

    #[test]
    fn percent_coding() {
        assert_eq!(
            percent_encode("aZ09-._~+/= %é"),
            "aZ09-._~%2B%2F%3D%20%25%C3%A9"
        );
        assert_eq!(percent_decode("a%2Bb%2fc%3D%zz%4"), b"a+b/c=%zz%4");
        assert_eq!(percent_decode("%"), b"%");
    }
}
