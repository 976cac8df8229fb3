//! What a dataset answers ([`Outcome`]) and how answers map to HTTP ([`HttpAnswer`]).
//!
//! | answer | HTTP |
//! |---|---|
//! | package | 200 `application/zip` |
//! | no data | 204 |
//! | not ready | 429 + `Retry-After: n` (n ≥ 1) |
//! | forbidden | 403 |
//! | bad or missing token | 401 + `WWW-Authenticate: Bearer …` |
//! | malformed request | 400 |
//! | failure | 500 (or the status the dataset chose) |

use std::sync::Arc;

/// One data file of a package: its name at the package root (or below) and its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataFile {
    /// Path inside the package, e.g. `household.json` (spec D7 rules apply).
    pub name: String,
    /// The content.
    pub bytes: Vec<u8>,
}

impl DataFile {
    /// A data file.
    pub fn new(name: impl Into<String>, bytes: impl Into<Vec<u8>>) -> Self {
        DataFile {
            name: name.into(),
            bytes: bytes.into(),
        }
    }
}

/// A dataset's answer to one verified call.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The data is ready: the SDK packages and signs these files (200).
    Ready(Vec<DataFile>),
    /// The data is ready as an already built and signed DP package (200); sent as is.
    Package(Arc<[u8]>),
    /// No data for this citizen (204).
    NoData,
    /// Work in progress: call again after `retry_after` seconds (429). Not final.
    Pending {
        /// Seconds until the next call; 0 is sent as 1.
        retry_after: u32,
    },
    /// The citizen or the caller may not have this data (403).
    Forbidden,
    /// The DP failed. `status` is sent as is when it is 4xx or 5xx (other than 401 and 429),
    /// else 500. Use [`Outcome::failed`] for a plain 500.
    Failed {
        /// HTTP status to send.
        status: u16,
    },
}

impl Outcome {
    /// A plain failure (500).
    pub fn failed() -> Self {
        Outcome::Failed { status: 500 }
    }
}

/// A final answer, as remembered by the job store for repeated calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Final {
    /// A signed package (200).
    Package(Arc<[u8]>),
    /// 204.
    NoData,
    /// 403.
    Forbidden,
    /// A failure status (4xx/5xx).
    Failed(u16),
}

impl Final {
    /// Bytes held in memory by this answer.
    pub fn weight(&self) -> usize {
        match self {
            Final::Package(p) => p.len(),
            _ => 0,
        }
    }
}

/// A framework-free HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpAnswer {
    /// Status code.
    pub status: u16,
    /// Headers besides `Content-Type` (e.g. `Retry-After`, `WWW-Authenticate`).
    pub headers: Vec<(&'static str, String)>,
    /// `Content-Type` of the body, if any.
    pub content_type: Option<&'static str>,
    /// The body (shared, so cached packages are not copied).
    pub body: Arc<[u8]>,
}

fn json_error(error: &str, description: &str) -> Arc<[u8]> {
    let v = serde_json::json!({ "error": error, "error_description": description });
    Arc::from(v.to_string().into_bytes())
}

impl HttpAnswer {
    fn empty(status: u16) -> Self {
        HttpAnswer {
            status,
            headers: Vec::new(),
            content_type: None,
            body: Arc::from(Vec::new()),
        }
    }

    fn json(status: u16, body: Arc<[u8]>) -> Self {
        HttpAnswer {
            status,
            headers: Vec::new(),
            content_type: Some("application/json"),
            body,
        }
    }

    /// 200 with a package.
    pub fn package(bytes: Arc<[u8]>) -> Self {
        HttpAnswer {
            status: 200,
            headers: Vec::new(),
            content_type: Some("application/zip"),
            body: bytes,
        }
    }

    /// 204.
    pub fn no_data() -> Self {
        Self::empty(204)
    }

    /// 429 with `Retry-After` (at least 1 second).
    pub fn retry_after(seconds: u32) -> Self {
        let mut a = Self::json(429, json_error("not_ready", "the data is being prepared"));
        a.headers.push(("Retry-After", seconds.max(1).to_string()));
        a
    }

    /// 403.
    pub fn forbidden() -> Self {
        Self::json(403, json_error("forbidden", "the data may not be released"))
    }

    /// Status 401: with `invalid_token` when a token was sent but refused (RFC 6750 §3.1),
    /// without an error code when no token was sent.
    pub fn unauthorized(token_sent: bool) -> Self {
        let (www, desc) = if token_sent {
            (
                r#"Bearer error="invalid_token""#,
                "the access token is not active for this dataset",
            )
        } else {
            ("Bearer", "a bearer access token is required")
        };
        let mut a = Self::json(401, json_error("invalid_token", desc));
        a.headers.push(("WWW-Authenticate", www.to_owned()));
        a
    }

    /// 400.
    pub fn bad_request(why: &str) -> Self {
        Self::json(400, json_error("invalid_request", why))
    }

    /// 405 (only GET and POST are served).
    pub fn method_not_allowed() -> Self {
        let mut a = Self::json(405, json_error("invalid_request", "use GET or POST"));
        a.headers.push(("Allow", "GET, POST".to_owned()));
        a
    }

    /// A failure status; statuses outside 4xx/5xx, and 401/429 (which mean something else
    /// to the platform), become 500.
    pub fn failed(status: u16) -> Self {
        let status = match status {
            401 | 429 => 500,
            400..=599 => status,
            _ => 500,
        };
        Self::json(
            status,
            json_error("server_error", "the data provider failed"),
        )
    }

    /// The heartbeat answer: 200 when healthy, else 500.
    pub fn heartbeat(healthy: bool) -> Self {
        let (status, text) = if healthy { (200, "ok") } else { (500, "down") };
        Self::json(
            status,
            Arc::from(
                serde_json::json!({ "status": text })
                    .to_string()
                    .into_bytes(),
            ),
        )
    }

    /// The value of a header set on this answer.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl From<&Final> for HttpAnswer {
    fn from(f: &Final) -> Self {
        match f {
            Final::Package(p) => HttpAnswer::package(p.clone()),
            Final::NoData => HttpAnswer::no_data(),
            Final::Forbidden => HttpAnswer::forbidden(),
            Final::Failed(s) => HttpAnswer::failed(*s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping() {
        let p: Arc<[u8]> = Arc::from(b"PK".to_vec());
        let a = HttpAnswer::from(&Final::Package(p.clone()));
        assert_eq!((a.status, a.content_type), (200, Some("application/zip")));
        assert!(Arc::ptr_eq(&a.body, &p), "cached packages are not copied");
        let a = HttpAnswer::from(&Final::NoData);
        assert_eq!((a.status, a.body.len(), a.content_type), (204, 0, None));
        assert_eq!(HttpAnswer::from(&Final::Forbidden).status, 403);
        assert_eq!(HttpAnswer::from(&Final::Failed(503)).status, 503);
        for odd in [0, 200, 204, 302, 401, 429, 600] {
            assert_eq!(HttpAnswer::failed(odd).status, 500, "{odd}");
        }
        let a = HttpAnswer::retry_after(0);
        assert_eq!((a.status, a.header("retry-after")), (429, Some("1")));
        assert_eq!(
            HttpAnswer::retry_after(42).header("Retry-After"),
            Some("42")
        );
        let a = HttpAnswer::unauthorized(true);
        assert_eq!(a.status, 401);
        assert_eq!(
            a.header("www-authenticate"),
            Some(r#"Bearer error="invalid_token""#)
        );
        assert_eq!(
            HttpAnswer::unauthorized(false).header("WWW-Authenticate"),
            Some("Bearer")
        );
        assert_eq!(HttpAnswer::bad_request("x").status, 400);
        assert_eq!(
            HttpAnswer::method_not_allowed().header("allow"),
            Some("GET, POST")
        );
        assert_eq!(HttpAnswer::heartbeat(true).status, 200);
        assert_eq!(HttpAnswer::heartbeat(false).status, 500);
        assert_eq!(Final::Package(p).weight(), 2);
    }
}
