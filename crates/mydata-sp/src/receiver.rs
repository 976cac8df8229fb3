//! The SP-API receiver core (spec protocol.md §7, D22–D24), free of any web framework.
//!
//! [`receive`] reads the JSON body the platform posts, checks `apiKey` in constant time, and
//! decrypts `secret_key`. The caller stores the result with its `tx_id` and answers 200 (see
//! [`crate::actix`] for an actix-web adapter).

use std::fmt;

use mydata_protocol::flow::{SpApiBody, SpApiDelivery};
use mydata_protocol::ids::{PermissionTicket, ResourceId, SecretKey, TxId};
use mydata_protocol::param::ParamCipher;

/// The most bytes an SP-API body may have (a body with 32 ids is well under 4 KiB).
pub const MAX_BODY_LEN: usize = 64 * 1024;

/// What an SP-API call delivered.
#[derive(Clone, PartialEq, Eq)]
pub enum ReceivedContent {
    /// After consent: the decrypted per-transaction `secret_key`, the JWE key.
    SecretKey(SecretKey),
    /// The transaction ended before consent: these datasets are unavailable and the ticket will
    /// never yield data.
    UnableToDeliver(Vec<ResourceId>),
}

impl fmt::Debug for ReceivedContent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReceivedContent::SecretKey(k) => f.debug_tuple("SecretKey").field(k).finish(),
            ReceivedContent::UnableToDeliver(ids) => {
                f.debug_tuple("UnableToDeliver").field(ids).finish()
            }
        }
    }
}

/// One accepted SP-API call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The SP's `tx_id`.
    pub tx_id: TxId,
    /// The ticket for the MyData-API.
    pub permission_ticket: PermissionTicket,
    /// The key, or the unavailable datasets.
    pub content: ReceivedContent,
}

impl Received {
    /// The `secret_key`, when the call carried one.
    pub fn secret_key(&self) -> Option<&SecretKey> {
        match &self.content {
            ReceivedContent::SecretKey(k) => Some(k),
            ReceivedContent::UnableToDeliver(_) => None,
        }
    }

    /// The unavailable datasets, when the call carried `unable_to_deliver`.
    pub fn unable_to_deliver(&self) -> Option<&[ResourceId]> {
        match &self.content {
            ReceivedContent::SecretKey(_) => None,
            ReceivedContent::UnableToDeliver(ids) => Some(ids),
        }
    }
}

/// Why an SP-API call was refused. The platform treats any answer other than 200/201 as a failed
/// call (the citizen then returns with code 410).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReceiveError {
    /// The body is larger than [`MAX_BODY_LEN`].
    #[error("the SP-API body is larger than {MAX_BODY_LEN} bytes")]
    TooLarge,
    /// The body is not a valid SP-API body (not JSON, bad ids, both or neither of `secret_key`
    /// and `unable_to_deliver`).
    #[error("malformed SP-API body: {0}")]
    Malformed(#[source] mydata_protocol::Error),
    /// `apiKey` is missing, unexpected, or wrong.
    #[error("the SP-API key does not match")]
    ApiKey,
    /// `secret_key` does not decrypt under the SP's parameter cipher.
    #[error("secret_key does not decrypt")]
    SecretKeyDecrypt,
    /// The decrypted `secret_key` is not 32 alphanumerics.
    #[error("the decrypted secret_key is malformed")]
    SecretKeyMalformed,
}

impl ReceiveError {
    /// The HTTP status to answer with: 413 for a large body, 403 for a wrong key, 400 otherwise.
    pub fn status(&self) -> u16 {
        match self {
            ReceiveError::TooLarge => 413,
            ReceiveError::ApiKey => 403,
            _ => 400,
        }
    }

    /// A stable, machine-readable name of the failure.
    pub fn kind(&self) -> &'static str {
        match self {
            ReceiveError::TooLarge => "too_large",
            ReceiveError::Malformed(_) => "malformed",
            ReceiveError::ApiKey => "api_key",
            ReceiveError::SecretKeyDecrypt => "secret_key_decrypt",
            ReceiveError::SecretKeyMalformed => "secret_key_malformed",
        }
    }
}

/// Reads an SP-API body: parses it, checks `apiKey` against `expected_api_key` in constant time
/// (with no key expected, the body must carry none), and decrypts `secret_key` with `cipher`.
pub fn receive(
    body: &[u8],
    expected_api_key: Option<&str>,
    cipher: &ParamCipher,
) -> Result<Received, ReceiveError> {
    if body.len() > MAX_BODY_LEN {
        return Err(ReceiveError::TooLarge);
    }
    let parsed = SpApiBody::from_json(body).map_err(ReceiveError::Malformed)?;
    if !parsed.api_key_matches(expected_api_key) {
        return Err(ReceiveError::ApiKey);
    }
    let content = match parsed.delivery {
        SpApiDelivery::SecretKey(enc) => {
            let plain = cipher
                .decrypt(&enc)
                .map_err(|_| ReceiveError::SecretKeyDecrypt)?;
            ReceivedContent::SecretKey(
                plain
                    .parse()
                    .map_err(|_| ReceiveError::SecretKeyMalformed)?,
            )
        }
        SpApiDelivery::UnableToDeliver(ids) => ReceivedContent::UnableToDeliver(ids),
    };
    Ok(Received {
        tx_id: parsed.tx_id,
        permission_ticket: parsed.permission_ticket,
        content,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mydata_protocol::param::ParamMode;

    const KEY: &str = "SandboxApiKey0000000000000000001";

    fn cipher(mode: ParamMode) -> ParamCipher {
        ParamCipher::from_raw("SandboxSecret001", "SandboxCbcIv0001", mode).unwrap()
    }

    fn body(mode: ParamMode, api_key: Option<&str>, secret: &SecretKey) -> String {
        SpApiBody {
            tx_id: "3f0c9b1e-7a44-4c1e-9d55-2b8f6c0a1d2e".parse().unwrap(),
            api_key: api_key.map(str::to_owned),
            permission_ticket: PermissionTicket::generate().unwrap(),
            delivery: SpApiDelivery::SecretKey(cipher(mode).encrypt(secret.as_str()).unwrap()),
        }
        .to_json()
    }

    #[test]
    fn accepts_platform_bodies_in_both_modes() {
        for mode in [ParamMode::Cbc, ParamMode::Gcm] {
            let secret = SecretKey::generate().unwrap();
            let b = body(mode, Some(KEY), &secret);
            let r = receive(b.as_bytes(), Some(KEY), &cipher(mode)).unwrap();
            assert_eq!(r.secret_key(), Some(&secret));
            assert_eq!(r.tx_id.as_str(), "3f0c9b1e-7a44-4c1e-9d55-2b8f6c0a1d2e");
            assert!(r.unable_to_deliver().is_none());
            assert!(!format!("{r:?}").contains(secret.as_str()));
        }
    }

    #[test]
    fn worked_example_16_3() {
        let c =
            ParamCipher::from_raw("Kx7pQ2mN9vR4tL8w", "Hj3kM6nP9qS2uV5x", ParamMode::Cbc).unwrap();
        let b = r#"{"tx_id":"3f0c9b1e-7a44-4c1e-9d55-2b8f6c0a1d2e","permission_ticket":"6b1f0e52-2c1d-4f7a-9a57-0f3c1d2e8b44","secret_key":"2qnf5bRDsCWdks4CUhiCdkhTKFcBcKU1DyFIdXYLRhAO3xA69wkNSapclltSlmcU"}"#;
        let r = receive(b.as_bytes(), None, &c).unwrap();
        assert_eq!(
            r.secret_key().unwrap().as_str(),
            "Zq8VtY3cR1mK6wN0pL4sH9dB2fJ7xG5a"
        );
        assert_eq!(
            r.permission_ticket.as_str(),
            "6b1f0e52-2c1d-4f7a-9a57-0f3c1d2e8b44"
        );
    }

    #[test]
    fn unable_to_deliver_is_recorded() {
        let b = r#"{"tx_id":"t1","apiKey":"SandboxApiKey0000000000000000001","permission_ticket":"6b1f0e52-2c1d-4f7a-9a57-0f3c1d2e8b44","unable_to_deliver":["API.LANDREC001"]}"#;
        let r = receive(b.as_bytes(), Some(KEY), &cipher(ParamMode::Cbc)).unwrap();
        assert_eq!(r.unable_to_deliver().unwrap()[0].as_str(), "API.LANDREC001");
        assert!(r.secret_key().is_none());
    }

    #[test]
    fn refusals() {
        let c = cipher(ParamMode::Cbc);
        let secret = SecretKey::generate().unwrap();
        let good = body(ParamMode::Cbc, Some(KEY), &secret);
        // Wrong, missing and unexpected keys.
        let wrong = body(
            ParamMode::Cbc,
            Some("SandboxApiKey0000000000000000002"),
            &secret,
        );
        let e = receive(wrong.as_bytes(), Some(KEY), &c).unwrap_err();
        assert!(matches!(e, ReceiveError::ApiKey));
        assert_eq!(e.status(), 403);
        let none = body(ParamMode::Cbc, None, &secret);
        assert!(matches!(
            receive(none.as_bytes(), Some(KEY), &c),
            Err(ReceiveError::ApiKey)
        ));
        assert!(matches!(
            receive(good.as_bytes(), None, &c),
            Err(ReceiveError::ApiKey)
        ));
        // Both members, neither, garbage.
        let both = r#"{"tx_id":"t1","permission_ticket":"6b1f0e52-2c1d-4f7a-9a57-0f3c1d2e8b44","secret_key":"AAAA","unable_to_deliver":["API.LANDREC001"]}"#;
        let neither =
            r#"{"tx_id":"t1","permission_ticket":"6b1f0e52-2c1d-4f7a-9a57-0f3c1d2e8b44"}"#;
        for bad in [both, neither, "garbage", "", "[]", "{\"tx_id\":1}"] {
            let e = receive(bad.as_bytes(), None, &c).unwrap_err();
            assert!(matches!(e, ReceiveError::Malformed(_)), "{bad}: {e:?}");
            assert_eq!(e.status(), 400);
        }
        // A secret_key under another SP's cipher.
        let other = cipher(ParamMode::Gcm);
        let e = receive(good.as_bytes(), Some(KEY), &other).unwrap_err();
        assert!(matches!(e, ReceiveError::SecretKeyDecrypt), "{e:?}");
        // A secret_key that decrypts to something that is not a key.
        let short = SpApiBody {
            tx_id: "t1".parse().unwrap(),
            api_key: None,
            permission_ticket: PermissionTicket::generate().unwrap(),
            delivery: SpApiDelivery::SecretKey(c.encrypt("short").unwrap()),
        }
        .to_json();
        assert!(matches!(
            receive(short.as_bytes(), None, &c),
            Err(ReceiveError::SecretKeyMalformed)
        ));
        let huge = vec![b' '; MAX_BODY_LEN + 1];
        assert_eq!(receive(&huge, None, &c).unwrap_err().status(), 413);
    }
}
