//! Return codes, per-dataset codes, identity methods and levels, with their wire values.
//!
//! This module is also the one place where core errors are mapped to the
//! platform's return codes ([`Error::return_code`]).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, IdKind};

/// The `code` the platform puts on the return to the SP (`{returnUrl}?code=…`), brief §9.3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ReturnCode {
    /// 200: success, the citizen agreed.
    Success,
    /// 205: the citizen refused.
    Refused,
    /// 206: over the DP's daily limit.
    OverDailyLimit,
    /// 400: bad request (malformed parameters, duplicate dataset, undecryptable pid).
    BadRequest,
    /// 401: a requested dataset is not allowed for this service (or a foreign source IP).
    DatasetNotAllowed,
    /// 403: forbidden.
    Forbidden,
    /// 404: the returnUrl does not match the registered return_url.
    ReturnUrlMismatch,
    /// 408: timeout.
    Timeout,
    /// 409: identity conflict (the logged-in citizen is not the pid the SP named).
    IdentityConflict,
    /// 410: the SP-API call failed.
    SpApiFailed,
    /// 423: service suspended (e.g. a maintenance window).
    ServiceSuspended,
    /// 501: the DP's service is stopped.
    DpServiceStopped,
    /// 504: DP system error.
    DpSystemError,
}

impl ReturnCode {
    /// Every return code, in wire order.
    pub const ALL: [ReturnCode; 13] = [
        ReturnCode::Success,
        ReturnCode::Refused,
        ReturnCode::OverDailyLimit,
        ReturnCode::BadRequest,
        ReturnCode::DatasetNotAllowed,
        ReturnCode::Forbidden,
        ReturnCode::ReturnUrlMismatch,
        ReturnCode::Timeout,
        ReturnCode::IdentityConflict,
        ReturnCode::SpApiFailed,
        ReturnCode::ServiceSuspended,
        ReturnCode::DpServiceStopped,
        ReturnCode::DpSystemError,
    ];

    /// The numeric wire value.
    pub const fn wire(self) -> u16 {
        match self {
            ReturnCode::Success => 200,
            ReturnCode::Refused => 205,
            ReturnCode::OverDailyLimit => 206,
            ReturnCode::BadRequest => 400,
            ReturnCode::DatasetNotAllowed => 401,
            ReturnCode::Forbidden => 403,
            ReturnCode::ReturnUrlMismatch => 404,
            ReturnCode::Timeout => 408,
            ReturnCode::IdentityConflict => 409,
            ReturnCode::SpApiFailed => 410,
            ReturnCode::ServiceSuspended => 423,
            ReturnCode::DpServiceStopped => 501,
            ReturnCode::DpSystemError => 504,
        }
    }

    /// Parses a wire value; `None` for a value the protocol does not define.
    pub fn from_wire(v: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.wire() == v)
    }

    /// A short English description.
    pub const fn description(self) -> &'static str {
        match self {
            ReturnCode::Success => "success",
            ReturnCode::Refused => "the citizen refused",
            ReturnCode::OverDailyLimit => "over the data provider's daily limit",
            ReturnCode::BadRequest => "bad request",
            ReturnCode::DatasetNotAllowed => "dataset not allowed for this service",
            ReturnCode::Forbidden => "forbidden",
            ReturnCode::ReturnUrlMismatch => "returnUrl does not match the registered return_url",
            ReturnCode::Timeout => "timeout",
            ReturnCode::IdentityConflict => "identity conflict",
            ReturnCode::SpApiFailed => "SP-API call failed",
            ReturnCode::ServiceSuspended => "service suspended",
            ReturnCode::DpServiceStopped => "data provider service stopped",
            ReturnCode::DpSystemError => "data provider system error",
        }
    }
}

impl fmt::Display for ReturnCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.wire())
    }
}

/// Per-dataset outcome codes carried in the SP package manifest (brief §9.6, spec D10).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DatasetCode {
    /// 200: delivered (or, in mode A with a failure elsewhere, answered but withheld).
    Delivered,
    /// 204: the DP holds no data for this citizen. Not a failure.
    NoData,
    /// 403: refused by the DP.
    Refused,
    /// 408: the DP did not finish within the retry budget.
    Timeout,
    /// 500: the DP answered an error or an invalid package.
    DpError,
    /// 501: the DP service is stopped.
    DpServiceStopped,
    /// 504: DP system error or unreachable.
    DpSystemError,
}

impl DatasetCode {
    /// Every dataset code, in wire order.
    pub const ALL: [DatasetCode; 7] = [
        DatasetCode::Delivered,
        DatasetCode::NoData,
        DatasetCode::Refused,
        DatasetCode::Timeout,
        DatasetCode::DpError,
        DatasetCode::DpServiceStopped,
        DatasetCode::DpSystemError,
    ];

    /// The numeric wire value.
    pub const fn wire(self) -> u16 {
        match self {
            DatasetCode::Delivered => 200,
            DatasetCode::NoData => 204,
            DatasetCode::Refused => 403,
            DatasetCode::Timeout => 408,
            DatasetCode::DpError => 500,
            DatasetCode::DpServiceStopped => 501,
            DatasetCode::DpSystemError => 504,
        }
    }

    /// Parses a wire value.
    pub fn from_wire(v: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.wire() == v)
    }

    /// Whether this outcome counts as a failure for packaging mode A.
    pub const fn is_failure(self) -> bool {
        !matches!(self, DatasetCode::Delivered | DatasetCode::NoData)
    }
}

impl fmt::Display for DatasetCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.wire())
    }
}

/// HTTP statuses of the MyData-API `GET /service/data` (brief §9.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MyDataApiStatus {
    /// 200: the JWE package.
    Ready,
    /// 201: already taken (one-shot).
    AlreadyTaken,
    /// 400: no ticket.
    NoTicket,
    /// 401: source IP not registered.
    IpNotAllowed,
    /// 403: unknown ticket, SP-API not acknowledged, or older than 8 h.
    Forbidden,
    /// 429: not ready yet (with `Retry-After`).
    NotReady,
    /// 504: every dataset failed.
    AllFailed,
}

impl MyDataApiStatus {
    /// The HTTP status code.
    pub const fn wire(self) -> u16 {
        match self {
            MyDataApiStatus::Ready => 200,
            MyDataApiStatus::AlreadyTaken => 201,
            MyDataApiStatus::NoTicket => 400,
            MyDataApiStatus::IpNotAllowed => 401,
            MyDataApiStatus::Forbidden => 403,
            MyDataApiStatus::NotReady => 429,
            MyDataApiStatus::AllFailed => 504,
        }
    }

    /// Whether a poller should stop polling on this status.
    pub const fn is_final(self) -> bool {
        !matches!(self, MyDataApiStatus::NotReady)
    }
}

/// Default `Retry-After` a client assumes when a 429 carries none (brief §9.5).
pub const DEFAULT_RETRY_AFTER_SECS: u64 = 60;

/// Identity verification strength as coded in service (brief §9.8): 0 is strongest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct IdentityLevel(u8);

impl IdentityLevel {
    /// Level 0: certificates on hardware (CER, FIC, FCH, MOE).
    pub const CERTIFICATE: IdentityLevel = IdentityLevel(0);
    /// Level 1: TW FidO.
    pub const TW_FIDO: IdentityLevel = IdentityLevel(1);
    /// Level 2: NHI card + password, software financial certificate.
    pub const NHI_CARD: IdentityLevel = IdentityLevel(2);
    /// Level 3: two documents.
    pub const TWO_DOCUMENTS: IdentityLevel = IdentityLevel(3);
    /// Level 4: e-mail or mobile one-time password.
    pub const OTP: IdentityLevel = IdentityLevel(4);

    /// The wire level (0–4).
    pub const fn wire(self) -> u8 {
        self.0
    }

    /// Parses a wire level.
    pub fn from_wire(v: u8) -> Option<Self> {
        (v <= 4).then_some(IdentityLevel(v))
    }

    /// The level as the seed documents number it (1 strongest … 4 two documents);
    /// `None` for OTP, which the documents do not rank.
    pub const fn document_level(self) -> Option<u8> {
        if self.0 <= 3 { Some(self.0 + 1) } else { None }
    }

    /// Whether a method of this level satisfies a `required` level.
    pub const fn satisfies(self, required: IdentityLevel) -> bool {
        self.0 <= required.0
    }
}

/// Identity verification methods with their service codes (brief §9.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum IdentityMethod {
    /// Citizen digital certificate (自然人憑證).
    #[serde(rename = "CER")]
    CitizenCertificate,
    /// Chip financial card with one-time certificate (晶片金融卡).
    #[serde(rename = "FIC")]
    ChipFinancialCard,
    /// Hardware financial certificate (硬體金融憑證).
    #[serde(rename = "FCH")]
    HardwareFinancialCertificate,
    /// Business certificate (工商憑證), for legal persons.
    #[serde(rename = "MOE")]
    BusinessCertificate,
    /// TW FidO mobile identity.
    #[serde(rename = "TFD")]
    TwFido,
    /// NHI card + password (健保卡).
    #[serde(rename = "NHI")]
    NhiCard,
    /// Software financial certificate (軟體金融憑證).
    #[serde(rename = "FCS")]
    SoftwareFinancialCertificate,
    /// Two documents: NHI card number + household registration number (雙證件).
    #[serde(rename = "PII")]
    TwoDocuments,
    /// E-mail or mobile one-time password.
    #[serde(rename = "OTP")]
    Otp,
}

impl IdentityMethod {
    /// Every method, strongest first.
    pub const ALL: [IdentityMethod; 9] = [
        IdentityMethod::CitizenCertificate,
        IdentityMethod::ChipFinancialCard,
        IdentityMethod::HardwareFinancialCertificate,
        IdentityMethod::BusinessCertificate,
        IdentityMethod::TwFido,
        IdentityMethod::NhiCard,
        IdentityMethod::SoftwareFinancialCertificate,
        IdentityMethod::TwoDocuments,
        IdentityMethod::Otp,
    ];

    /// The three-letter wire code.
    pub const fn code(self) -> &'static str {
        match self {
            IdentityMethod::CitizenCertificate => "CER",
            IdentityMethod::ChipFinancialCard => "FIC",
            IdentityMethod::HardwareFinancialCertificate => "FCH",
            IdentityMethod::BusinessCertificate => "MOE",
            IdentityMethod::TwFido => "TFD",
            IdentityMethod::NhiCard => "NHI",
            IdentityMethod::SoftwareFinancialCertificate => "FCS",
            IdentityMethod::TwoDocuments => "PII",
            IdentityMethod::Otp => "OTP",
        }
    }

    /// The method's strength.
    pub const fn level(self) -> IdentityLevel {
        match self {
            IdentityMethod::CitizenCertificate
            | IdentityMethod::ChipFinancialCard
            | IdentityMethod::HardwareFinancialCertificate
            | IdentityMethod::BusinessCertificate => IdentityLevel::CERTIFICATE,
            IdentityMethod::TwFido => IdentityLevel::TW_FIDO,
            IdentityMethod::NhiCard | IdentityMethod::SoftwareFinancialCertificate => {
                IdentityLevel::NHI_CARD
            }
            IdentityMethod::TwoDocuments => IdentityLevel::TWO_DOCUMENTS,
            IdentityMethod::Otp => IdentityLevel::OTP,
        }
    }
}

impl fmt::Display for IdentityMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl FromStr for IdentityMethod {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Self::ALL
            .into_iter()
            .find(|m| m.code() == s)
            .ok_or_else(|| Error::invalid(IdKind::Scope, "unknown identity method code"))
    }
}

/// The methods a request for several datasets may offer: those every dataset accepts (spec D11).
///
/// Each inner slice is one dataset's accepted methods. The result keeps the
/// order of [`IdentityMethod::ALL`] (strongest first). An empty input gives an empty result.
pub fn methods_for_all(datasets: &[&[IdentityMethod]]) -> Vec<IdentityMethod> {
    let Some((first, rest)) = datasets.split_first() else {
        return Vec::new();
    };
    IdentityMethod::ALL
        .into_iter()
        .filter(|m| first.contains(m) && rest.iter().all(|d| d.contains(m)))
        .collect()
}

/// The level a request must reach: the strongest (lowest) among each dataset's weakest accepted method.
///
/// `None` when no dataset is given or a dataset accepts no method.
pub fn required_level(datasets: &[&[IdentityMethod]]) -> Option<IdentityLevel> {
    let mut req: Option<IdentityLevel> = None;
    for d in datasets {
        let weakest = d.iter().map(|m| m.level()).max()?;
        req = Some(match req {
            Some(r) => r.min(weakest),
            None => weakest,
        });
    }
    req
}

impl Error {
    /// The return code an SP sees when this error ends a redirect (brief §9.2/§9.3).
    ///
    /// This is the single mapping from core errors to protocol codes.
    pub fn return_code(&self) -> ReturnCode {
        match self {
            Error::ResourceNotAllowed(_) => ReturnCode::DatasetNotAllowed,
            Error::InvalidId { .. }
            | Error::CheckDigit { .. }
            | Error::MalformedResources(_)
            | Error::DuplicateResource(_)
            | Error::KeySize { .. }
            | Error::ParamBase64
            | Error::ParamDecrypt(_) => ReturnCode::BadRequest,
            Error::Io(_) | Error::Random(_) | Error::Signing(_) => ReturnCode::DpSystemError,
            // Everything about a DP's package is the DP's fault as seen by the SP.
            _ => ReturnCode::DpSystemError,
        }
    }

    /// The per-dataset code a failed DP package gets in the SP manifest.
    pub fn dataset_code(&self) -> DatasetCode {
        match self {
            Error::Io(_) => DatasetCode::DpSystemError,
            _ => DatasetCode::DpError,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_code_wire_values() {
        let wires: Vec<u16> = ReturnCode::ALL.iter().map(|c| c.wire()).collect();
        assert_eq!(
            wires,
            [
                200, 205, 206, 400, 401, 403, 404, 408, 409, 410, 423, 501, 504
            ]
        );
        for c in ReturnCode::ALL {
            assert_eq!(ReturnCode::from_wire(c.wire()), Some(c));
            assert_eq!(c.to_string(), c.wire().to_string());
            assert!(!c.description().is_empty());
        }
        assert_eq!(ReturnCode::from_wire(201), None);
        assert_eq!(ReturnCode::from_wire(0), None);
    }

    #[test]
    fn dataset_code_wire_values() {
        let wires: Vec<u16> = DatasetCode::ALL.iter().map(|c| c.wire()).collect();
        assert_eq!(wires, [200, 204, 403, 408, 500, 501, 504]);
        for c in DatasetCode::ALL {
            assert_eq!(DatasetCode::from_wire(c.wire()), Some(c));
        }
        assert!(!DatasetCode::Delivered.is_failure());
        assert!(!DatasetCode::NoData.is_failure());
        assert!(DatasetCode::Timeout.is_failure());
        assert_eq!(DatasetCode::from_wire(429), None);
    }

    #[test]
    fn mydata_api_statuses() {
        let all = [
            (MyDataApiStatus::Ready, 200),
            (MyDataApiStatus::AlreadyTaken, 201),
            (MyDataApiStatus::NoTicket, 400),
            (MyDataApiStatus::IpNotAllowed, 401),
            (MyDataApiStatus::Forbidden, 403),
            (MyDataApiStatus::NotReady, 429),
            (MyDataApiStatus::AllFailed, 504),
        ];
        for (s, w) in all {
            assert_eq!(s.wire(), w);
            assert_eq!(s.is_final(), w != 429);
        }
    }

    #[test]
    fn identity_methods_codes_and_levels() {
        let expect = [
            ("CER", 0),
            ("FIC", 0),
            ("FCH", 0),
            ("MOE", 0),
            ("TFD", 1),
            ("NHI", 2),
            ("FCS", 2),
            ("PII", 3),
            ("OTP", 4),
        ];
        for (m, (code, level)) in IdentityMethod::ALL.into_iter().zip(expect) {
            assert_eq!(m.code(), code);
            assert_eq!(m.level().wire(), level);
            assert_eq!(code.parse::<IdentityMethod>().unwrap(), m);
            assert_eq!(serde_json::to_string(&m).unwrap(), format!("\"{code}\""));
        }
        assert!("XYZ".parse::<IdentityMethod>().is_err());
        assert_eq!(IdentityLevel::CERTIFICATE.document_level(), Some(1));
        assert_eq!(IdentityLevel::TWO_DOCUMENTS.document_level(), Some(4));
        assert_eq!(IdentityLevel::OTP.document_level(), None);
        assert!(IdentityLevel::CERTIFICATE.satisfies(IdentityLevel::NHI_CARD));
        assert!(!IdentityLevel::TWO_DOCUMENTS.satisfies(IdentityLevel::NHI_CARD));
        assert_eq!(IdentityLevel::from_wire(5), None);
    }

    #[test]
    fn methods_and_level_for_several_datasets() {
        use IdentityMethod::*;
        let land: &[IdentityMethod] = &[CitizenCertificate, TwFido, NhiCard, BusinessCertificate];
        let low_income: &[IdentityMethod] = &[CitizenCertificate, TwFido, NhiCard, TwoDocuments];
        assert_eq!(
            methods_for_all(&[land, low_income]),
            vec![CitizenCertificate, TwFido, NhiCard]
        );
        assert_eq!(
            required_level(&[land, low_income]),
            Some(IdentityLevel::NHI_CARD)
        );
        assert_eq!(
            required_level(&[low_income]),
            Some(IdentityLevel::TWO_DOCUMENTS)
        );
        assert_eq!(required_level(&[]), None);
        assert_eq!(required_level(&[&[]]), None);
        assert!(methods_for_all(&[]).is_empty());
    }

    #[test]
    fn errors_map_to_codes_in_one_place() {
        assert_eq!(
            Error::ResourceNotAllowed("API.X".into()).return_code(),
            ReturnCode::DatasetNotAllowed
        );
        assert_eq!(
            Error::DuplicateResource("API.X".into()).return_code(),
            ReturnCode::BadRequest
        );
        assert_eq!(Error::ParamBase64.return_code(), ReturnCode::BadRequest);
        assert_eq!(
            Error::ParamDecrypt("x").return_code(),
            ReturnCode::BadRequest
        );
        assert_eq!(Error::BadSignature.return_code(), ReturnCode::DpSystemError);
        assert_eq!(Error::BadSignature.dataset_code(), DatasetCode::DpError);
    }
}
