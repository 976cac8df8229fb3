//! Platform identifiers (brief §9.1, spec D4 and D14), validated on construction.
//!
//! Each type can only hold a valid value: parse with [`str::parse`] or
//! `TryFrom<String>`, and serde goes through the same validation.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, IdKind, Result};
use crate::random::random_bytes;

const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// `n` random ASCII alphanumerics, without modulo bias.
pub(crate) fn random_alnum(n: usize) -> Result<String> {
    let mut out = String::with_capacity(n);
    let mut buf = [0u8; 64];
    while out.len() < n {
        random_bytes(&mut buf)?;
        // 62 * 4 = 248: reject bytes >= 248 to keep the distribution uniform.
        for &b in buf.iter().filter(|&&b| b < 248) {
            if out.len() == n {
                break;
            }
            out.push(ALNUM[(b % 62) as usize] as char);
        }
    }
    Ok(out)
}

macro_rules! string_id {
    ($(#[$m:meta])* $name:ident, $kind:expr, $check:expr) => {
        $(#[$m])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The value as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self> {
                let check: fn(&str) -> std::result::Result<String, &'static str> = $check;
                check(s).map($name).map_err(|r| Error::invalid($kind, r))
            }
        }

        impl TryFrom<String> for $name {
            type Error = Error;
            fn try_from(s: String) -> Result<Self> {
                s.parse()
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

fn prefixed_alnum(s: &str, prefix: &str) -> std::result::Result<String, &'static str> {
    let rest = s.strip_prefix(prefix).ok_or("wrong prefix")?;
    if rest.len() != 10 {
        return Err("must be the prefix followed by exactly 10 characters");
    }
    if !rest.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err("only ASCII letters and digits may follow the prefix");
    }
    Ok(s.to_owned())
}

fn alnum_exact(s: &str, n: usize) -> std::result::Result<String, &'static str> {
    if s.len() != n {
        return Err(match n {
            16 => "must be exactly 16 characters",
            _ => "must be exactly 32 characters",
        });
    }
    if !s.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err("only ASCII letters and digits are allowed");
    }
    Ok(s.to_owned())
}

string_id!(
    /// An SP's `client_id`: `CLI.` followed by 10 ASCII alphanumerics.
    ClientId,
    IdKind::ClientId,
    |s| prefixed_alnum(s, "CLI.")
);

string_id!(
    /// A dataset's `resource_id`: `API.` followed by 10 ASCII alphanumerics.
    ResourceId,
    IdKind::ResourceId,
    |s| prefixed_alnum(s, "API.")
);

string_id!(
    /// A `tx_id` chosen by the SP: 1–64 characters of `[A-Za-z0-9._-]` (a UUID in practice).
    TxId,
    IdKind::TxId,
    |s| {
        if s.is_empty() || s.len() > 64 {
            return Err("must be 1 to 64 characters");
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return Err("only ASCII letters, digits, '.', '_' and '-' are allowed");
        }
        Ok(s.to_owned())
    }
);

string_id!(
    /// A `permission_ticket`: a UUID version 4, held in canonical lower case.
    PermissionTicket,
    IdKind::PermissionTicket,
    |s| {
        let b = s.as_bytes();
        if b.len() != 36 {
            return Err("must be a 36-character UUID");
        }
        for (i, &c) in b.iter().enumerate() {
            let dash = matches!(i, 8 | 13 | 18 | 23);
            if dash != (c == b'-') || (!dash && !c.is_ascii_hexdigit()) {
                return Err("must be a UUID in 8-4-4-4-12 hexadecimal form");
            }
        }
        if b[14] != b'4' {
            return Err("must be a version 4 UUID");
        }
        if !matches!(b[19].to_ascii_lowercase(), b'8' | b'9' | b'a' | b'b') {
            return Err("must carry the RFC 4122 variant");
        }
        Ok(s.to_ascii_lowercase())
    }
);

string_id!(
    /// A `client_secret` or `resource_secret`: 16 ASCII alphanumerics.
    ///
    /// `Debug` does not print the value.
    ClientSecret,
    IdKind::ClientSecret,
    |s| alnum_exact(s, 16)
);

string_id!(
    /// An SP's `secret_key` (the JWE key): 32 ASCII alphanumerics.
    ///
    /// `Debug` does not print the value.
    SecretKey,
    IdKind::SecretKey,
    |s| alnum_exact(s, 32)
);

string_id!(
    /// An SP's `cbc_iv`: 16 printable ASCII characters.
    CbcIv,
    IdKind::CbcIv,
    |s| {
        if s.len() != 16 {
            return Err("must be exactly 16 characters");
        }
        if !s.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("only printable ASCII characters (no spaces) are allowed");
        }
        Ok(s.to_owned())
    }
);

string_id!(
    /// A scope string owned by a DP (`tygh.resource.prenatal.read`): 1–128 printable ASCII characters.
    Scope,
    IdKind::Scope,
    |s| {
        if s.is_empty() || s.len() > 128 {
            return Err("must be 1 to 128 characters");
        }
        if !s.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("only printable ASCII characters (no spaces) are allowed");
        }
        Ok(s.to_owned())
    }
);

string_id!(
    /// A trial service's `caseNumber`: 1–64 characters of `[A-Za-z0-9-]` (spec D5).
    CaseNumber,
    IdKind::CaseNumber,
    |s| {
        if s.is_empty() || s.len() > 64 {
            return Err("must be 1 to 64 characters");
        }
        if !s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err("only ASCII letters, digits and '-' are allowed");
        }
        Ok(s.to_owned())
    }
);

macro_rules! redacted_debug {
    ($($t:ident),*) => {$(
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($t), "(<redacted>)"))
            }
        }
    )*};
}
redacted_debug!(ClientSecret, SecretKey);

macro_rules! plain_debug {
    ($($t:ident),*) => {$(
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($t), "({:?})"), self.0)
            }
        }
    )*};
}
plain_debug!(
    ClientId,
    ResourceId,
    TxId,
    PermissionTicket,
    CbcIv,
    Scope,
    CaseNumber
);

impl ClientId {
    /// A fresh random `client_id`.
    pub fn generate() -> Result<Self> {
        Ok(ClientId(format!("CLI.{}", random_alnum(10)?)))
    }
}

impl ResourceId {
    /// A fresh random `resource_id`.
    pub fn generate() -> Result<Self> {
        Ok(ResourceId(format!("API.{}", random_alnum(10)?)))
    }
}

impl ClientSecret {
    /// A fresh random 16-character secret.
    pub fn generate() -> Result<Self> {
        Ok(ClientSecret(random_alnum(16)?))
    }
}

impl SecretKey {
    /// A fresh random 32-character `secret_key`.
    pub fn generate() -> Result<Self> {
        Ok(SecretKey(random_alnum(32)?))
    }
}

impl CbcIv {
    /// A fresh random 16-character `cbc_iv` (alphanumerics).
    pub fn generate() -> Result<Self> {
        Ok(CbcIv(random_alnum(16)?))
    }
}

impl PermissionTicket {
    /// A fresh random UUID v4 ticket.
    pub fn generate() -> Result<Self> {
        let mut b = [0u8; 16];
        random_bytes(&mut b)?;
        Ok(Self::from_random(b))
    }

    /// The UUID v4 made from 16 random bytes (version and variant bits are set here).
    pub fn from_random(mut b: [u8; 16]) -> Self {
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        let h = hex::encode(b);
        PermissionTicket(format!(
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind_of(e: Error) -> IdKind {
        match e {
            Error::InvalidId { kind, .. } => kind,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn client_and_resource_ids() {
        assert!("CLI.abcDEF1234".parse::<ClientId>().is_ok());
        assert!("API.0123456789".parse::<ResourceId>().is_ok());
        for bad in [
            "CLI.abc",
            "CLI.abcdefghijk",
            "cli.abcdefghij",
            "API.abcdefghij",
            "CLI.abcde-ghij",
            "CLI.abcdéfghi",
            "",
        ] {
            let e = bad.parse::<ClientId>().unwrap_err();
            assert_eq!(kind_of(e), IdKind::ClientId, "{bad}");
        }
        assert!("CLI.0123456789".parse::<ResourceId>().is_err());
        assert!("API.01234 6789".parse::<ResourceId>().is_err());
    }

    #[test]
    fn tx_ids() {
        assert!(
            "3f1c2a7e-1b2c-4d5e-8f90-0123456789ab"
                .parse::<TxId>()
                .is_ok()
        );
        assert!("a".parse::<TxId>().is_ok());
        assert!("A.b_c-9".parse::<TxId>().is_ok());
        assert!("".parse::<TxId>().is_err());
        assert!("a".repeat(65).parse::<TxId>().is_err());
        assert!("a".repeat(64).parse::<TxId>().is_ok());
        assert!("a b".parse::<TxId>().is_err());
        assert!("a/b".parse::<TxId>().is_err());
        assert!("a%2F".parse::<TxId>().is_err());
    }

    #[test]
    fn permission_tickets() {
        let t: PermissionTicket = "3F1C2A7E-1B2C-4D5E-8F90-0123456789AB".parse().unwrap();
        assert_eq!(t.as_str(), "3f1c2a7e-1b2c-4d5e-8f90-0123456789ab");
        for bad in [
            "3f1c2a7e-1b2c-3d5e-8f90-0123456789ab", // version 3
            "3f1c2a7e-1b2c-4d5e-7f90-0123456789ab", // wrong variant
            "3f1c2a7e1b2c-4d5e-8f90-0123456789ab-",
            "3f1c2a7e-1b2c-4d5e-8f90-0123456789a",
            "3f1c2a7e-1b2c-4d5e-8f90-0123456789ag",
        ] {
            assert_eq!(
                kind_of(bad.parse::<PermissionTicket>().unwrap_err()),
                IdKind::PermissionTicket,
                "{bad}"
            );
        }
        let g = PermissionTicket::generate().unwrap();
        assert_eq!(g.as_str().parse::<PermissionTicket>().unwrap(), g);
        assert_ne!(g, PermissionTicket::generate().unwrap());
        let z = PermissionTicket::from_random([0; 16]);
        assert_eq!(z.as_str(), "00000000-0000-4000-8000-000000000000");
    }

    #[test]
    fn secrets_and_iv() {
        assert!("abcdEFGH12345678".parse::<ClientSecret>().is_ok());
        assert!("abcdEFGH1234567".parse::<ClientSecret>().is_err());
        assert!("abcdEFGH1234567!".parse::<ClientSecret>().is_err());
        assert!("a".repeat(32).parse::<SecretKey>().is_ok());
        assert!("a".repeat(31).parse::<SecretKey>().is_err());
        assert!("0123456789abcdef".parse::<CbcIv>().is_ok());
        assert!("0123456789abcd!@".parse::<CbcIv>().is_ok());
        assert!("0123456789abcd e".parse::<CbcIv>().is_err());
        assert!("0123456789abcde".parse::<CbcIv>().is_err());
        let s = ClientSecret::generate().unwrap();
        assert_eq!(format!("{s:?}"), "ClientSecret(<redacted>)");
        assert_eq!(SecretKey::generate().unwrap().as_str().len(), 32);
        assert_eq!(CbcIv::generate().unwrap().as_str().len(), 16);
        assert!(ClientId::generate().unwrap().as_str().starts_with("CLI."));
        assert!(ResourceId::generate().unwrap().as_str().starts_with("API."));
    }

    #[test]
    fn scopes_and_case_numbers() {
        assert!("tygh.resource.prenatal.read".parse::<Scope>().is_ok());
        assert!("MolLandReadMyData".parse::<Scope>().is_ok());
        assert!("".parse::<Scope>().is_err());
        assert!("a b".parse::<Scope>().is_err());
        assert!("A-2024-0001".parse::<CaseNumber>().is_ok());
        assert!("A_1".parse::<CaseNumber>().is_err());
        assert!("".parse::<CaseNumber>().is_err());
    }

    #[test]
    fn serde_validates() {
        let ok: ClientId = serde_json::from_str("\"CLI.abcdefghij\"").unwrap();
        assert_eq!(serde_json::to_string(&ok).unwrap(), "\"CLI.abcdefghij\"");
        assert!(serde_json::from_str::<ClientId>("\"CLI.x\"").is_err());
    }
}
