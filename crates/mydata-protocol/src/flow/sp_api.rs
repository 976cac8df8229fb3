//! The SP-API call (spec protocol.md §7; decisions D22–D24, D42): the JSON body that hands the SP
//! its `permission_ticket` with the `secret_key`, or the `unable_to_deliver` datasets.

use std::fmt;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, IdKind, Result};
use crate::ids::{PermissionTicket, ResourceId, TxId};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::test_support::*;

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
}
