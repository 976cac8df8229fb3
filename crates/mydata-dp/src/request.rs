//! Parsing a DP-API call (spec protocol.md §9.1–§9.4) from plain method, query, headers and body.
//!
//! Checks, in this order: method (GET or POST, else 405), heartbeat (`?heartbeat=true`,
//! no credential needed), `Authorization: Bearer …` (missing → 401), `transaction_uid`
//! (missing, repeated with different values or not a UUID v4 → 400), body (a POST form or
//! JSON body that does not parse → 400).

use std::fmt;

use serde_json::Value;

use crate::answer::HttpAnswer;

/// Longest accepted bearer token, in bytes (platform tokens are 43 characters).
pub const MAX_TOKEN_LEN: usize = 4096;

/// Longest accepted request body, in bytes (template bodies are small).
pub const MAX_BODY_LEN: usize = 64 * 1024;

/// A request as any HTTP framework sees it.
#[derive(Debug, Clone, Copy)]
pub struct RawRequest<'a> {
    /// The method, e.g. `GET`.
    pub method: &'a str,
    /// The query string without the leading `?` (may be empty).
    pub query: &'a str,
    /// Header names and raw values, in order (names compare case-insensitively).
    pub headers: &'a [(&'a str, &'a [u8])],
    /// The request body (empty for GET).
    pub body: &'a [u8],
}

/// The HTTP method of a DP-API call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `GET`.
    Get,
    /// `POST`.
    Post,
}

/// A `transaction_uid`: a UUID version 4, held in lower case.
///
/// Upper-case input is accepted and lower-cased, so that one call series always maps to
/// one key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TransactionUid(String);

impl TransactionUid {
    /// Parses a UUID v4 in the 8-4-4-4-12 hexadecimal form.
    pub fn parse(s: &str) -> Option<Self> {
        let b = s.as_bytes();
        if b.len() != 36 {
            return None;
        }
        for (i, &c) in b.iter().enumerate() {
            let dash = matches!(i, 8 | 13 | 18 | 23);
            if dash != (c == b'-') || (!dash && !c.is_ascii_hexdigit()) {
                return None;
            }
        }
        if b[14] != b'4' || !matches!(b[19].to_ascii_lowercase(), b'8' | b'9' | b'a' | b'b') {
            return None;
        }
        Some(TransactionUid(s.to_ascii_lowercase()))
    }

    /// The value, lower case.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TransactionUid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The caller's bearer token. `Debug` does not print it.
#[derive(Clone, PartialEq, Eq)]
pub struct BearerToken(String);

impl BearerToken {
    /// A token from its text.
    pub fn new(token: impl Into<String>) -> Self {
        BearerToken(token.into())
    }

    /// The token text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

/// The values the platform's per-dataset template put into the call (spec §9.2).
///
/// `Authorization` is not kept here; other headers are, with lower-case names.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Params {
    /// Query items, decoded, in order (including `transaction_uid`).
    pub query: Vec<(String, String)>,
    /// Headers with UTF-8 values, names in lower case, in order.
    pub headers: Vec<(String, String)>,
    /// Form items of a POST `application/x-www-form-urlencoded` body.
    pub form: Vec<(String, String)>,
    /// The JSON document of a POST `application/json` body.
    pub json: Option<Value>,
}

impl Params {
    /// The first query item called `name`.
    pub fn query(&self, name: &str) -> Option<&str> {
        first(&self.query, name)
    }

    /// The first header called `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The first form item called `name`.
    pub fn form(&self, name: &str) -> Option<&str> {
        first(&self.form, name)
    }

    /// The string at a JSON Pointer (RFC 6901) in the JSON body.
    pub fn json_str(&self, pointer: &str) -> Option<&str> {
        self.json.as_ref()?.pointer(pointer)?.as_str()
    }

    /// A value from the query, then the form, then the headers, in that order.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.query(name)
            .or_else(|| self.form(name))
            .or_else(|| self.header(name))
    }
}

fn first<'a>(items: &'a [(String, String)], name: &str) -> Option<&'a str> {
    items
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// A well-formed DP-API call (not yet authenticated: the token has not been introspected).
#[derive(Debug, Clone)]
pub struct DpRequest {
    /// GET or POST.
    pub method: Method,
    /// The call series' key.
    pub transaction_uid: TransactionUid,
    /// The bearer token to introspect.
    pub token: BearerToken,
    /// Template-provided values.
    pub params: Params,
}

/// What a request turned out to be.
#[derive(Debug, Clone)]
pub enum Parsed {
    /// `?heartbeat=true`: answer 200 when healthy, else 500, without authentication.
    Heartbeat,
    /// A data call.
    Call(DpRequest),
}

/// Why a request was refused before authentication.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// Neither GET nor POST: 405.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// No usable `Authorization: Bearer` header: 401.
    #[error("missing bearer token")]
    MissingToken,
    /// Malformed request: 400.
    #[error("bad request: {0}")]
    BadRequest(&'static str),
}

impl From<Rejection> for HttpAnswer {
    fn from(r: Rejection) -> Self {
        match r {
            Rejection::MethodNotAllowed => HttpAnswer::method_not_allowed(),
            Rejection::MissingToken => HttpAnswer::unauthorized(false),
            Rejection::BadRequest(why) => HttpAnswer::bad_request(why),
        }
    }
}

fn header<'a>(raw: &RawRequest<'a>, name: &str) -> Option<&'a [u8]> {
    raw.headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| *v)
}

fn bearer(raw: &RawRequest<'_>) -> Option<BearerToken> {
    let v = std::str::from_utf8(header(raw, "authorization")?)
        .ok()?
        .trim();
    let (scheme, token) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = token.trim();
    // RFC 6750 token68 characters.
    let ok = !token.is_empty()
        && token.len() <= MAX_TOKEN_LEN
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b));
    ok.then(|| BearerToken(token.to_owned()))
}

impl DpRequest {
    /// Parses a raw request into a heartbeat or a call, or the answer refusing it.
    pub fn parse(raw: &RawRequest<'_>) -> Result<Parsed, Rejection> {
        let method = if raw.method.eq_ignore_ascii_case("GET") {
            Method::Get
        } else if raw.method.eq_ignore_ascii_case("POST") {
            Method::Post
        } else {
            return Err(Rejection::MethodNotAllowed);
        };
        let query: Vec<(String, String)> = serde_urlencoded::from_str(raw.query)
            .map_err(|_| Rejection::BadRequest("unreadable query string"))?;
        if query
            .iter()
            .any(|(k, v)| k == "heartbeat" && v.eq_ignore_ascii_case("true"))
        {
            return Ok(Parsed::Heartbeat);
        }
        let token = bearer(raw).ok_or(Rejection::MissingToken)?;
        let mut uid: Option<TransactionUid> = None;
        for (_, v) in query.iter().filter(|(k, _)| k == "transaction_uid") {
            let parsed = TransactionUid::parse(v)
                .ok_or(Rejection::BadRequest("transaction_uid is not a UUID v4"))?;
            if uid.as_ref().is_some_and(|u| *u != parsed) {
                return Err(Rejection::BadRequest("conflicting transaction_uid values"));
            }
            uid = Some(parsed);
        }
        let transaction_uid = uid.ok_or(Rejection::BadRequest("missing transaction_uid"))?;
        let headers = raw
            .headers
            .iter()
            .filter(|(k, _)| !k.eq_ignore_ascii_case("authorization"))
            .filter_map(|(k, v)| {
                let v = std::str::from_utf8(v).ok()?;
                Some((k.to_ascii_lowercase(), v.to_owned()))
            })
            .collect();
        let mut params = Params {
            query,
            headers,
            ..Params::default()
        };
        if method == Method::Post && !raw.body.is_empty() {
            if raw.body.len() > MAX_BODY_LEN {
                return Err(Rejection::BadRequest("body too large"));
            }
            let ctype = header(raw, "content-type")
                .and_then(|v| std::str::from_utf8(v).ok())
                .map(|v| {
                    v.split(';')
                        .next()
                        .unwrap_or_default()
                        .trim()
                        .to_ascii_lowercase()
                })
                .unwrap_or_default();
            if ctype == "application/x-www-form-urlencoded" {
                params.form = serde_urlencoded::from_bytes(raw.body)
                    .map_err(|_| Rejection::BadRequest("unreadable form body"))?;
            } else if ctype == "application/json" || ctype.ends_with("+json") {
                params.json = Some(
                    serde_json::from_slice(raw.body)
                        .map_err(|_| Rejection::BadRequest("unreadable JSON body"))?,
                );
            }
        }
        Ok(Parsed::Call(DpRequest {
            method,
            transaction_uid,
            token,
            params,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "c2a4e0f6-8d1b-4f3e-b5a7-19e2d4c6f801";

    fn parse(
        method: &str,
        query: &str,
        headers: &[(&str, &[u8])],
        body: &[u8],
    ) -> Result<Parsed, Rejection> {
        DpRequest::parse(&RawRequest {
            method,
            query,
            headers,
            body,
        })
    }

    fn call(r: Result<Parsed, Rejection>) -> DpRequest {
        match r {
            Ok(Parsed::Call(c)) => c,
            other => panic!("not a call: {other:?}"),
        }
    }

    const AUTH: (&str, &[u8]) = ("Authorization", b"Bearer abc-DEF_123");

    #[test]
    fn transaction_uid_syntax() {
        assert!(TransactionUid::parse(UID).is_some());
        assert_eq!(
            TransactionUid::parse(&UID.to_ascii_uppercase()).map(|u| u.0),
            Some(UID.to_owned())
        );
        for bad in [
            "",
            "c2a4e0f6-8d1b-3f3e-b5a7-19e2d4c6f801", // version 3
            "c2a4e0f6-8d1b-4f3e-c5a7-19e2d4c6f801", // variant
            "c2a4e0f6-8d1b-4f3e-b5a7-19e2d4c6f80",
            "c2a4e0f68d1b-4f3e-b5a7-19e2d4c6f8011",
            "g2a4e0f6-8d1b-4f3e-b5a7-19e2d4c6f801",
            "c2a4e0f6-8d1b-4f3e-b5a7-19e2d4c6f80é",
        ] {
            assert!(TransactionUid::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn heartbeat_needs_no_credential() {
        assert!(matches!(
            parse("GET", "heartbeat=true", &[], b""),
            Ok(Parsed::Heartbeat)
        ));
        assert!(matches!(
            parse("POST", "a=1&heartbeat=TRUE", &[], b""),
            Ok(Parsed::Heartbeat)
        ));
        assert_eq!(
            parse("GET", "heartbeat=false", &[], b"").unwrap_err(),
            Rejection::MissingToken
        );
    }

    #[test]
    fn order_of_checks() {
        assert_eq!(
            parse("PUT", "", &[AUTH], b"").unwrap_err(),
            Rejection::MethodNotAllowed
        );
        assert_eq!(
            parse("GET", "", &[], b"").unwrap_err(),
            Rejection::MissingToken
        );
        assert_eq!(
            parse(
                "GET",
                &format!("transaction_uid={UID}"),
                &[("authorization", b"Basic eA==")],
                b""
            )
            .unwrap_err(),
            Rejection::MissingToken
        );
        assert_eq!(
            parse(
                "GET",
                &format!("transaction_uid={UID}"),
                &[("authorization", b"Bearer a b")],
                b""
            )
            .unwrap_err(),
            Rejection::MissingToken
        );
        assert_eq!(
            parse(
                "GET",
                &format!("transaction_uid={UID}"),
                &[("authorization", b"Bearer \xff")],
                b""
            )
            .unwrap_err(),
            Rejection::MissingToken
        );
        assert!(matches!(
            parse("GET", "", &[AUTH], b""),
            Err(Rejection::BadRequest(_))
        ));
        assert!(matches!(
            parse("GET", "transaction_uid=x", &[AUTH], b""),
            Err(Rejection::BadRequest(_))
        ));
        let other = "d2a4e0f6-8d1b-4f3e-b5a7-19e2d4c6f801";
        assert!(matches!(
            parse(
                "GET",
                &format!("transaction_uid={UID}&transaction_uid={other}"),
                &[AUTH],
                b""
            ),
            Err(Rejection::BadRequest(_))
        ));
        let long = format!("Bearer {}", "a".repeat(MAX_TOKEN_LEN + 1));
        assert_eq!(
            parse(
                "GET",
                &format!("transaction_uid={UID}"),
                &[("Authorization", long.as_bytes())],
                b""
            )
            .unwrap_err(),
            Rejection::MissingToken
        );
    }

    #[test]
    fn template_values() {
        let q = format!("transaction_uid={UID}&plate=ABC%2D1234&year=113&name=%E7%8E%8B");
        let headers: &[(&str, &[u8])] = &[AUTH, ("X-Pid", b"A120345672"), ("X-Bin", b"\xff\xfe")];
        let c = call(parse("GET", &q, headers, b"ignored"));
        assert_eq!(c.method, Method::Get);
        assert_eq!(c.transaction_uid.as_str(), UID);
        assert_eq!(c.token.as_str(), "abc-DEF_123");
        assert_eq!(format!("{:?}", c.token), "BearerToken(<redacted>)");
        assert_eq!(c.params.query("plate"), Some("ABC-1234"));
        assert_eq!(c.params.get("name"), Some("王"));
        assert_eq!(c.params.header("x-pid"), Some("A120345672"));
        assert_eq!(c.params.header("authorization"), None);
        assert_eq!(c.params.header("x-bin"), None);
        assert!(c.params.form.is_empty());

        let form: &[(&str, &[u8])] = &[
            AUTH,
            (
                "Content-Type",
                b"application/x-www-form-urlencoded; charset=utf-8",
            ),
        ];
        let c = call(parse(
            "POST",
            &format!("transaction_uid={UID}"),
            form,
            b"pid=A120345672&year=113",
        ));
        assert_eq!(c.method, Method::Post);
        assert_eq!(c.params.form("year"), Some("113"));
        assert_eq!(c.params.get("pid"), Some("A120345672"));

        let json: &[(&str, &[u8])] = &[AUTH, ("content-type", b"application/json")];
        let c = call(parse(
            "POST",
            &format!("transaction_uid={UID}"),
            json,
            br#"{"a":{"pid":"X"}}"#,
        ));
        assert_eq!(c.params.json_str("/a/pid"), Some("X"));
        assert!(matches!(
            parse("POST", &format!("transaction_uid={UID}"), json, b"{nope"),
            Err(Rejection::BadRequest(_))
        ));
        let big = vec![b'a'; MAX_BODY_LEN + 1];
        assert!(matches!(
            parse("POST", &format!("transaction_uid={UID}"), json, &big),
            Err(Rejection::BadRequest(_))
        ));
    }
}
