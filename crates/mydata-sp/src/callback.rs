//! The return to the SP (spec protocol.md §6): `{return_url}?code={code}[&tx_id={enc}][&{query}]`.
//!
//! [`SpConfig::read_return`] parses the query, maps the code to a [`ReturnOutcome`] and decrypts the
//! `tx_id`. The SP must then check that the `tx_id` is one this browser session started
//! ([`Returned::check_tx`]) and must not rely on `code=200` alone: the data only ever comes through
//! the MyData-API.

use std::fmt;

use mydata_protocol::codes::ReturnCode;
use mydata_protocol::ids::TxId;

use crate::config::SpConfig;

/// The outcome the platform reports on the return, one variant per code of §6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReturnOutcome {
    /// 200: consent given and the SP-API acknowledged; poll the MyData-API.
    Success,
    /// 205: the citizen refused.
    Refused,
    /// 206: over the DP's daily limit.
    OverDailyLimit,
    /// 400: bad request.
    BadRequest,
    /// 401: a dataset is not allowed for this service.
    DatasetNotAllowed,
    /// 403: forbidden.
    Forbidden,
    /// 404: the returnUrl did not match the registered return_url.
    ReturnUrlMismatch,
    /// 408: the transaction expired before consent.
    Timeout,
    /// 409: identity conflict.
    IdentityConflict,
    /// 410: the SP-API call failed.
    SpApiFailed,
    /// 423: the service is suspended or in maintenance.
    ServiceSuspended,
    /// 501: the DP's service is stopped.
    DpServiceStopped,
    /// 504: DP system error.
    DpSystemError,
    /// A code the protocol does not define, kept as sent.
    Other(u16),
}

impl ReturnOutcome {
    /// The outcome of a numeric code.
    pub fn from_code(code: u16) -> Self {
        match ReturnCode::from_wire(code) {
            Some(c) => Self::from(c),
            None => ReturnOutcome::Other(code),
        }
    }

    /// The numeric code.
    pub fn code(self) -> u16 {
        match self.return_code() {
            Some(c) => c.wire(),
            None => match self {
                ReturnOutcome::Other(n) => n,
                _ => 0,
            },
        }
    }

    /// The protocol's [`ReturnCode`], or `None` for [`ReturnOutcome::Other`].
    pub fn return_code(self) -> Option<ReturnCode> {
        Some(match self {
            ReturnOutcome::Success => ReturnCode::Success,
            ReturnOutcome::Refused => ReturnCode::Refused,
            ReturnOutcome::OverDailyLimit => ReturnCode::OverDailyLimit,
            ReturnOutcome::BadRequest => ReturnCode::BadRequest,
            ReturnOutcome::DatasetNotAllowed => ReturnCode::DatasetNotAllowed,
            ReturnOutcome::Forbidden => ReturnCode::Forbidden,
            ReturnOutcome::ReturnUrlMismatch => ReturnCode::ReturnUrlMismatch,
            ReturnOutcome::Timeout => ReturnCode::Timeout,
            ReturnOutcome::IdentityConflict => ReturnCode::IdentityConflict,
            ReturnOutcome::SpApiFailed => ReturnCode::SpApiFailed,
            ReturnOutcome::ServiceSuspended => ReturnCode::ServiceSuspended,
            ReturnOutcome::DpServiceStopped => ReturnCode::DpServiceStopped,
            ReturnOutcome::DpSystemError => ReturnCode::DpSystemError,
            ReturnOutcome::Other(_) => return None,
        })
    }

    /// Whether the citizen consented and the SP should poll the MyData-API.
    pub fn is_success(self) -> bool {
        self == ReturnOutcome::Success
    }

    /// Whether the platform called the SP-API with `unable_to_deliver` for this code at the
    /// availability check (§6 table: 206, 501, 504 may carry one).
    pub fn may_follow_unable_to_deliver(self) -> bool {
        matches!(
            self,
            ReturnOutcome::OverDailyLimit
                | ReturnOutcome::DpServiceStopped
                | ReturnOutcome::DpSystemError
        )
    }

    /// A short English description.
    pub fn description(self) -> &'static str {
        match self.return_code() {
            Some(c) => c.description(),
            None => "unknown return code",
        }
    }

    /// A short Traditional Chinese description for citizens.
    pub fn description_zh(self) -> &'static str {
        match self {
            ReturnOutcome::Success => "已同意，資料傳送中",
            ReturnOutcome::Refused => "您已拒絕提供資料",
            ReturnOutcome::OverDailyLimit => "已超過資料提供者每日上限",
            ReturnOutcome::BadRequest => "請求格式錯誤",
            ReturnOutcome::DatasetNotAllowed => "此服務未申請所選資料集",
            ReturnOutcome::Forbidden => "拒絕存取",
            ReturnOutcome::ReturnUrlMismatch => "返回網址與登記不符",
            ReturnOutcome::Timeout => "交易逾時",
            ReturnOutcome::IdentityConflict => "身分不一致",
            ReturnOutcome::SpApiFailed => "通知服務提供者失敗",
            ReturnOutcome::ServiceSuspended => "服務暫停或維護中",
            ReturnOutcome::DpServiceStopped => "資料提供者服務停止",
            ReturnOutcome::DpSystemError => "資料提供者系統錯誤",
            ReturnOutcome::Other(_) => "未知的回傳代碼",
        }
    }
}

impl From<ReturnCode> for ReturnOutcome {
    fn from(c: ReturnCode) -> Self {
        match c {
            ReturnCode::Success => ReturnOutcome::Success,
            ReturnCode::Refused => ReturnOutcome::Refused,
            ReturnCode::OverDailyLimit => ReturnOutcome::OverDailyLimit,
            ReturnCode::BadRequest => ReturnOutcome::BadRequest,
            ReturnCode::DatasetNotAllowed => ReturnOutcome::DatasetNotAllowed,
            ReturnCode::Forbidden => ReturnOutcome::Forbidden,
            ReturnCode::ReturnUrlMismatch => ReturnOutcome::ReturnUrlMismatch,
            ReturnCode::Timeout => ReturnOutcome::Timeout,
            ReturnCode::IdentityConflict => ReturnOutcome::IdentityConflict,
            ReturnCode::SpApiFailed => ReturnOutcome::SpApiFailed,
            ReturnCode::ServiceSuspended => ReturnOutcome::ServiceSuspended,
            ReturnCode::DpServiceStopped => ReturnOutcome::DpServiceStopped,
            ReturnCode::DpSystemError => ReturnOutcome::DpSystemError,
        }
    }
}

impl fmt::Display for ReturnOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.code(), self.description())
    }
}

/// Why a return could not be read or does not belong to this browser.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReturnError {
    /// No `code` parameter.
    #[error("the return carries no code")]
    MissingCode,
    /// `code` is not a three-digit number.
    #[error("the return code {0:?} is not a three-digit number")]
    BadCode(String),
    /// The encrypted `tx_id` does not decrypt under the SP's parameter cipher.
    #[error("the returned tx_id does not decrypt")]
    TxIdDecrypt,
    /// The decrypted `tx_id` is not a valid `tx_id`.
    #[error("the returned tx_id is malformed")]
    TxIdMalformed,
    /// The return carries no `tx_id` (the platform omits it for code 400 at the tx_id check).
    #[error("the return carries no tx_id")]
    MissingTxId,
    /// The `tx_id` is not the one this browser session started.
    #[error("the returned tx_id is not the transaction this browser started")]
    TxMismatch,
}

/// A parsed and decrypted return.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Returned {
    /// The outcome.
    pub outcome: ReturnOutcome,
    /// The decrypted `tx_id`, when the return carried one.
    pub tx_id: Option<TxId>,
    /// The other query parameters (the SP's own return query, and repeats), in order, decoded.
    pub extra: Vec<(String, String)>,
}

impl Returned {
    /// Checks that the returned `tx_id` is `expected`, the one bound to this browser session.
    pub fn check_tx(&self, expected: &TxId) -> Result<&TxId, ReturnError> {
        match &self.tx_id {
            None => Err(ReturnError::MissingTxId),
            Some(t) if t == expected => Ok(t),
            Some(_) => Err(ReturnError::TxMismatch),
        }
    }
}

/// Decodes `application/x-www-form-urlencoded` text: `+` is a space, `%XY` a byte; a malformed
/// escape is kept as written, and invalid UTF-8 is replaced.
pub fn form_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                }
                _ => {
                    out.push(b'%');
                    i += 1;
                }
            },
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Splits a query string (without `?`) into decoded pairs, in order.
pub fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .trim_start_matches('?')
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (form_decode(k), form_decode(v))
        })
        .collect()
}

impl SpConfig {
    /// Reads the query string of a return (without `?`): the first `code` and the first `tx_id`
    /// decide (§6); the `tx_id` is decrypted with the SP's parameter cipher.
    pub fn read_return(&self, query: &str) -> Result<Returned, ReturnError> {
        let mut code = None;
        let mut enc_tx = None;
        let mut extra = Vec::new();
        for (k, v) in parse_query(query) {
            match k.as_str() {
                "code" if code.is_none() => code = Some(v),
                "tx_id" if enc_tx.is_none() => enc_tx = Some(v),
                _ => extra.push((k, v)),
            }
        }
        let code = code.ok_or(ReturnError::MissingCode)?;
        let n: u16 = if code.len() == 3 && code.bytes().all(|b| b.is_ascii_digit()) {
            code.parse()
                .map_err(|_| ReturnError::BadCode(code.clone()))?
        } else {
            return Err(ReturnError::BadCode(code));
        };
        let tx_id = match enc_tx.filter(|t| !t.is_empty()) {
            None => None,
            Some(enc) => {
                // The cipher reads a space (from form decoding of an unescaped '+') as '+'.
                let plain = self
                    .cipher()
                    .decrypt(&enc)
                    .map_err(|_| ReturnError::TxIdDecrypt)?;
                Some(
                    plain
                        .parse::<TxId>()
                        .map_err(|_| ReturnError::TxIdMalformed)?,
                )
            }
        };
        Ok(Returned {
            outcome: ReturnOutcome::from_code(n),
            tx_id,
            extra,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mydata_protocol::flow::{percent_encode, return_url};

    fn spec_cfg() -> SpConfig {
        SpConfig::new(
            "https://mydata.example",
            "CLI.SANDBOX001".parse().unwrap(),
            "Kx7pQ2mN9vR4tL8w".parse().unwrap(),
            "Hj3kM6nP9qS2uV5x".parse().unwrap(),
            "https://sp.example/mydata/return",
        )
    }

    #[test]
    fn every_code_maps() {
        let codes = [
            200, 205, 206, 400, 401, 403, 404, 408, 409, 410, 423, 501, 504,
        ];
        let mut seen = std::collections::HashSet::new();
        for c in codes {
            let o = ReturnOutcome::from_code(c);
            assert!(!matches!(o, ReturnOutcome::Other(_)), "{c}");
            assert_eq!(o.code(), c);
            assert!(seen.insert(o));
            assert_ne!(o.description_zh(), ReturnOutcome::Other(0).description_zh());
        }
        assert_eq!(ReturnOutcome::from_code(299), ReturnOutcome::Other(299));
        assert_eq!(ReturnOutcome::Other(299).code(), 299);
        assert!(ReturnOutcome::from_code(200).is_success());
        assert!(!ReturnOutcome::from_code(205).is_success());
        assert!(ReturnOutcome::DpSystemError.may_follow_unable_to_deliver());
        assert!(!ReturnOutcome::Refused.may_follow_unable_to_deliver());
    }

    #[test]
    fn worked_example_16_2() {
        let q = "code=200&tx_id=NuW8pQFamqiqoIStUPQJZpAOVicZfW1B6RYMWwW8dh9BpgGZgpZr706aZ7Fi9c1f&step=2";
        let r = spec_cfg().read_return(q).unwrap();
        assert_eq!(r.outcome, ReturnOutcome::Success);
        let want: TxId = "3f0c9b1e-7a44-4c1e-9d55-2b8f6c0a1d2e".parse().unwrap();
        assert_eq!(r.tx_id.as_ref(), Some(&want));
        assert_eq!(r.extra, vec![("step".to_string(), "2".to_string())]);
        assert!(r.check_tx(&want).is_ok());
        let other: TxId = "other-tx".parse().unwrap();
        assert_eq!(r.check_tx(&other), Err(ReturnError::TxMismatch));
    }

    #[test]
    fn platform_built_returns_round_trip_in_both_modes() {
        for cfg in [spec_cfg(), spec_cfg().with_gcm()] {
            let tx: TxId = "tx-1.a_b".parse().unwrap();
            for _ in 0..20 {
                let enc = cfg.cipher().encrypt(tx.as_str()).unwrap();
                let url = return_url(
                    &cfg.return_url,
                    ReturnCode::Refused,
                    Some(&enc),
                    Some("a=1"),
                );
                let q = url.split_once('?').unwrap().1;
                let r = cfg.read_return(q).unwrap();
                assert_eq!(r.outcome, ReturnOutcome::Refused);
                assert_eq!(r.tx_id.as_ref(), Some(&tx));
                // An unescaped '+' read as a space by form decoding still decrypts.
                let raw = format!("code=205&tx_id={enc}");
                assert_eq!(cfg.read_return(&raw).unwrap().tx_id.as_ref(), Some(&tx));
            }
        }
    }

    #[test]
    fn first_occurrence_wins_and_missing_tx_id() {
        let cfg = spec_cfg();
        let enc = percent_encode(&cfg.cipher().encrypt("abc").unwrap());
        let r = cfg
            .read_return(&format!("code=409&tx_id={enc}&code=200&tx_id=zzz"))
            .unwrap();
        assert_eq!(r.outcome, ReturnOutcome::IdentityConflict);
        assert_eq!(r.tx_id.unwrap().as_str(), "abc");
        let r = cfg.read_return("code=400").unwrap();
        assert_eq!(r.outcome, ReturnOutcome::BadRequest);
        assert_eq!(
            r.check_tx(&"abc".parse().unwrap()),
            Err(ReturnError::MissingTxId)
        );
    }

    #[test]
    fn bad_returns() {
        let cfg = spec_cfg();
        assert_eq!(cfg.read_return(""), Err(ReturnError::MissingCode));
        assert_eq!(cfg.read_return("tx_id=x"), Err(ReturnError::MissingCode));
        for bad in ["20", "2000", "abc", "-20", "+20"] {
            assert!(
                matches!(
                    cfg.read_return(&format!("code={bad}")),
                    Err(ReturnError::BadCode(_))
                ),
                "{bad}"
            );
        }
        assert_eq!(
            cfg.read_return("code=200&tx_id=AAAAAAAAAAAAAAAAAAAAAA%3D%3D"),
            Err(ReturnError::TxIdDecrypt)
        );
        assert_eq!(
            cfg.read_return("code=200&tx_id=%%%"),
            Err(ReturnError::TxIdDecrypt)
        );
        let enc = percent_encode(&cfg.cipher().encrypt("a/b").unwrap());
        assert_eq!(
            cfg.read_return(&format!("code=200&tx_id={enc}")),
            Err(ReturnError::TxIdMalformed)
        );
        // A GCM SP does not accept a CBC-encrypted tx_id.
        let enc = percent_encode(&cfg.cipher().encrypt("abc").unwrap());
        assert_eq!(
            cfg.clone()
                .with_gcm()
                .read_return(&format!("code=200&tx_id={enc}")),
            Err(ReturnError::TxIdDecrypt)
        );
    }

    #[test]
    fn form_decoding() {
        assert_eq!(form_decode("a+b%2Bc%3d"), "a b+c=");
        assert_eq!(form_decode("%"), "%");
        assert_eq!(form_decode("%4"), "%4");
        assert_eq!(form_decode("%zz1"), "%zz1");
        assert_eq!(form_decode("%E4%B8%AD"), "中");
        assert_eq!(form_decode("%FF"), "\u{fffd}");
        assert_eq!(
            parse_query("?a=1&&b&c=%20"),
            vec![
                ("a".into(), "1".into()),
                ("b".into(), String::new()),
                ("c".into(), " ".into())
            ]
        );
    }
}
