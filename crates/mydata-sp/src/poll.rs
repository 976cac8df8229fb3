//! The MyData-API poller (spec protocol.md §8.1, D25): `GET {platform}/service/data` with the
//! headers `permission_ticket` and `tx_id`, until the package is ready.
//!
//! * **429** — not ready: wait `Retry-After` (delta-seconds or an HTTP-date), or 60 s without it,
//!   bounded to [[`PollOptions::min_wait`], [`PollOptions::max_wait`]].
//! * **200** — the JWE (compact serialization), returned as text.
//! * **201, 400, 401, 403, 504** — final, as a typed [`PollError`].
//! * A transport failure, 502 or 503 — transient: waited out like a 429, at most
//!   [`PollOptions::max_transient_failures`] times in a row. A request with no complete answer
//!   within [`PollOptions::request_timeout`] (connect, headers and the whole body), and a 200
//!   body that breaks off, are transport failures.
//!
//! Waiting goes through a [`Timer`], so tests can record the waits instead of sleeping; the whole
//! poll stops at [`PollOptions::deadline`] (8 hours by default), also in the middle of a request,
//! or when its [`CancelToken`] is cancelled. Dropping the future also stops it.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use awc::error::PayloadError;
use awc::http::StatusCode;
use awc::http::header::HttpDate;
use mydata_protocol::codes::{DEFAULT_RETRY_AFTER_SECS, MyDataApiStatus};
use mydata_protocol::ids::{PermissionTicket, TxId};
use tokio::sync::watch;

/// The clock and the sleeping of a poll.
pub trait Timer {
    /// The current time (used for HTTP-dates and the deadline).
    fn now(&self) -> SystemTime;
    /// Waits `d`.
    fn sleep(&self, d: Duration) -> impl Future<Output = ()>;
}

/// The real clock and `tokio::time::sleep`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemTimer;

impl Timer for SystemTimer {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }

    fn sleep(&self, d: Duration) -> impl Future<Output = ()> {
        tokio::time::sleep(d)
    }
}

/// A cancellation flag shared between a poll and whoever may stop it. Cheap to clone.
#[derive(Debug, Clone)]
pub struct CancelToken(Arc<watch::Sender<bool>>);

impl Default for CancelToken {
    fn default() -> Self {
        Self::new()
    }
}

impl CancelToken {
    /// A token that is not cancelled.
    pub fn new() -> Self {
        CancelToken(Arc::new(watch::Sender::new(false)))
    }

    /// Cancels every poll using this token (and its clones).
    pub fn cancel(&self) {
        self.0.send_replace(true);
    }

    /// Whether [`CancelToken::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        *self.0.borrow()
    }

    /// Completes once the token is cancelled.
    pub async fn cancelled(&self) {
        let mut rx = self.0.subscribe();
        // The sender lives as long as `self`, so `wait_for` only returns once cancelled.
        let _ = rx.wait_for(|c| *c).await;
    }
}

/// Options of a poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollOptions {
    /// Give up after this long in all (the platform keeps the package 8 hours at most), by the
    /// [`Timer`]'s clock. A request still running when the deadline comes is cut then.
    pub deadline: Duration,
    /// The wait when a 429 carries no usable `Retry-After` (60 s, brief §9.5).
    pub default_retry_after: Duration,
    /// The shortest wait between two polls.
    pub min_wait: Duration,
    /// The longest wait between two polls.
    pub max_wait: Duration,
    /// Transport failures, 502 and 503 in a row before giving up.
    pub max_transient_failures: u32,
    /// Timeout of one request, in real time: from the connect to the last byte of the body. A
    /// request that outlasts it is a transport failure (transient).
    pub request_timeout: Duration,
    /// The largest JWE accepted.
    pub max_body_bytes: usize,
}

impl Default for PollOptions {
    fn default() -> Self {
        PollOptions {
            deadline: Duration::from_secs(28_800),
            default_retry_after: Duration::from_secs(DEFAULT_RETRY_AFTER_SECS),
            min_wait: Duration::from_secs(1),
            max_wait: Duration::from_secs(3_600),
            max_transient_failures: 5,
            request_timeout: Duration::from_secs(300),
            max_body_bytes: 512 << 20,
        }
    }
}

/// Why a poll ended without a package.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PollError {
    /// 201: the package has already been taken (it is served once).
    #[error("201: the package has already been taken")]
    AlreadyTaken,
    /// 400: the platform saw no valid `permission_ticket`.
    #[error("400: no valid permission_ticket")]
    NoTicket,
    /// 401: this source IP is not registered.
    #[error("401: the source IP is not registered for any service")]
    IpNotAllowed,
    /// 403: unknown ticket, other `tx_id`, SP-API not acknowledged, or older than 8 hours.
    #[error("403: unknown or expired ticket")]
    Forbidden,
    /// 504: every dataset failed, or the ticket came with `unable_to_deliver`.
    #[error("504: every dataset failed")]
    AllFailed,
    /// Any other HTTP status.
    #[error("unexpected HTTP status {0}")]
    UnexpectedStatus(u16),
    /// The platform could not be reached (after the allowed transient failures).
    #[error("transport: {0}")]
    Transport(String),
    /// A 200 body that is empty, too large or not UTF-8. (A body that breaks off is a transport
    /// failure, polled again.)
    #[error("200 body: {0}")]
    Body(String),
    /// The deadline passed before the package was ready.
    #[error("gave up after {polls} polls: the deadline passed")]
    DeadlineExceeded {
        /// Requests made.
        polls: u32,
    },
    /// The poll was cancelled.
    #[error("cancelled")]
    Cancelled,
}

impl PollError {
    /// The MyData-API status this error stands for, when it is one of §8.1.
    pub fn api_status(&self) -> Option<MyDataApiStatus> {
        Some(match self {
            PollError::AlreadyTaken => MyDataApiStatus::AlreadyTaken,
            PollError::NoTicket => MyDataApiStatus::NoTicket,
            PollError::IpNotAllowed => MyDataApiStatus::IpNotAllowed,
            PollError::Forbidden => MyDataApiStatus::Forbidden,
            PollError::AllFailed => MyDataApiStatus::AllFailed,
            _ => return None,
        })
    }

    /// A stable, machine-readable name.
    pub fn kind(&self) -> &'static str {
        match self {
            PollError::AlreadyTaken => "already_taken",
            PollError::NoTicket => "no_ticket",
            PollError::IpNotAllowed => "ip_not_allowed",
            PollError::Forbidden => "forbidden",
            PollError::AllFailed => "all_failed",
            PollError::UnexpectedStatus(_) => "unexpected_status",
            PollError::Transport(_) => "transport",
            PollError::Body(_) => "body",
            PollError::DeadlineExceeded { .. } => "deadline",
            PollError::Cancelled => "cancelled",
        }
    }
}

/// The answer to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// 200: the JWE.
    Ready(String),
    /// 429: wait this long (already bounded by the options).
    NotReady {
        /// The wait before the next poll.
        wait: Duration,
    },
    /// A transport failure (no complete answer within the request timeout, a body that broke
    /// off), 502 or 503: wait this long, then try again.
    Transient {
        /// What happened.
        reason: String,
        /// The wait before the next poll.
        wait: Duration,
    },
    /// A final answer.
    Final(PollError),
}

/// Reads a `Retry-After` value: delta-seconds, or an HTTP-date relative to `now` (a past date is
/// zero). `None` when it is neither.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        // Saturate absurd values instead of failing.
        return Some(Duration::from_secs(v.parse::<u64>().unwrap_or(u64::MAX)));
    }
    let date: HttpDate = v.parse().ok()?;
    let at = SystemTime::from(date);
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// A MyData-API client for one platform. `Send + Sync`; each poll makes its own HTTP client.
/// With the `tls` feature (the default) `https://` platforms are reached with TLS 1.2 or later
/// and the system roots, plus what [`MyDataApi::with_tls`] adds (a CA bundle, the SP's client
/// certificate for a MyData-API that requires one).
#[derive(Debug, Clone)]
pub struct MyDataApi {
    data_url: String,
    opts: PollOptions,
    tls: Option<TlsClient>,
}

/// The default client context (system roots, TLS 1.2+), built once: building one reads the
/// system's CA files.
#[cfg(feature = "tls")]
fn default_connector() -> Option<openssl::ssl::SslConnector> {
    static DEFAULT: std::sync::OnceLock<Option<openssl::ssl::SslConnector>> =
        std::sync::OnceLock::new();
    DEFAULT
        .get_or_init(|| crate::tls::TlsConfig::new().connector().ok())
        .clone()
}

/// The client context of [`MyDataApi::with_tls`].
#[derive(Clone)]
struct TlsClient {
    #[cfg(feature = "tls")]
    connector: openssl::ssl::SslConnector,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsClient")
    }
}

impl MyDataApi {
    /// A client for the platform at `platform_url` (e.g. `http://127.0.0.1:8080`).
    pub fn new(platform_url: &str, opts: PollOptions) -> Self {
        MyDataApi {
            data_url: format!("{}/service/data", platform_url.trim_end_matches('/')),
            opts,
            tls: None,
        }
    }

    /// HTTPS toward the platform with `tls`: an extra or pinned CA bundle, and the SP's client
    /// certificate (`sp-client`) for a MyData-API that requires mutual TLS. Fails when the PEM
    /// does not parse or the key is not the certificate's.
    #[cfg(feature = "tls")]
    pub fn with_tls(
        mut self,
        tls: &crate::tls::TlsConfig,
    ) -> Result<Self, crate::tls::ConnectorError> {
        self.tls = Some(TlsClient {
            connector: tls.connector()?,
        });
        Ok(self)
    }

    /// The URL polled.
    pub fn data_url(&self) -> &str {
        &self.data_url
    }

    /// The options.
    pub fn options(&self) -> &PollOptions {
        &self.opts
    }

    fn client(&self) -> awc::Client {
        let connector = awc::Connector::new();
        #[cfg(feature = "tls")]
        let connector = match &self.tls {
            Some(t) => connector.openssl(t.connector.clone()),
            // TLS 1.2 or later with the system roots (D49).
            None => match default_connector() {
                Some(c) => connector.openssl(c),
                None => connector,
            },
        };
        #[cfg(not(feature = "tls"))]
        let _ = &self.tls;
        awc::Client::builder()
            .connector(connector)
            .timeout(self.opts.request_timeout)
            .disable_redirects()
            .finish()
    }

    fn bounded(&self, d: Duration) -> Duration {
        d.clamp(
            self.opts.min_wait,
            self.opts.max_wait.max(self.opts.min_wait),
        )
    }

    fn wait_from(&self, header: Option<&str>, now: SystemTime) -> Duration {
        let d = header
            .and_then(|h| parse_retry_after(h, now))
            .unwrap_or(self.opts.default_retry_after);
        self.bounded(d)
    }

    /// One request, within [`PollOptions::request_timeout`]; `now` is used to read an HTTP-date
    /// `Retry-After`.
    pub async fn fetch_once(
        &self,
        ticket: &PermissionTicket,
        tx_id: Option<&TxId>,
        now: SystemTime,
    ) -> Answer {
        tokio::time::timeout(
            self.opts.request_timeout,
            self.fetch_with(&self.client(), ticket, tx_id, now),
        )
        .await
        .unwrap_or_else(|_| self.timed_out())
    }

    /// The answer to a request that outlasted [`PollOptions::request_timeout`].
    fn timed_out(&self) -> Answer {
        Answer::Transient {
            reason: format!(
                "no complete answer within {} s",
                self.opts.request_timeout.as_secs_f64()
            ),
            wait: self.bounded(self.opts.default_retry_after),
        }
    }

    /// One request, with no time limit of its own (the callers set it).
    async fn fetch_with(
        &self,
        client: &awc::Client,
        ticket: &PermissionTicket,
        tx_id: Option<&TxId>,
        now: SystemTime,
    ) -> Answer {
        let mut req = client
            .get(&self.data_url)
            .insert_header(("permission_ticket", ticket.as_str()))
            .insert_header(("accept", "application/jwe"));
        if let Some(t) = tx_id {
            req = req.insert_header(("tx_id", t.as_str()));
        }
        let mut resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                return Answer::Transient {
                    reason: e.to_string(),
                    wait: self.bounded(self.opts.default_retry_after),
                };
            }
        };
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        match resp.status() {
            StatusCode::OK => match resp.body().limit(self.opts.max_body_bytes).await {
                Ok(b) => match String::from_utf8(b.to_vec()) {
                    Ok(s) if !s.trim().is_empty() => Answer::Ready(s.trim().to_owned()),
                    Ok(_) => Answer::Final(PollError::Body("empty".into())),
                    Err(_) => Answer::Final(PollError::Body("not UTF-8".into())),
                },
                Err(PayloadError::Overflow) => Answer::Final(PollError::Body(format!(
                    "larger than {} bytes",
                    self.opts.max_body_bytes
                ))),
                // A body that broke off: the package is still there (it counts as taken only
                // once written in full, D25), so it is polled again.
                Err(e) => Answer::Transient {
                    reason: format!("the body broke off: {e}"),
                    wait: self.bounded(self.opts.default_retry_after),
                },
            },
            StatusCode::TOO_MANY_REQUESTS => Answer::NotReady {
                wait: self.wait_from(retry_after.as_deref(), now),
            },
            StatusCode::CREATED => Answer::Final(PollError::AlreadyTaken),
            StatusCode::BAD_REQUEST => Answer::Final(PollError::NoTicket),
            StatusCode::UNAUTHORIZED => Answer::Final(PollError::IpNotAllowed),
            StatusCode::FORBIDDEN => Answer::Final(PollError::Forbidden),
            StatusCode::GATEWAY_TIMEOUT => Answer::Final(PollError::AllFailed),
            s @ (StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE) => Answer::Transient {
                reason: format!("HTTP {}", s.as_u16()),
                wait: self.wait_from(retry_after.as_deref(), now),
            },
            s => Answer::Final(PollError::UnexpectedStatus(s.as_u16())),
        }
    }

    /// Polls until the package is ready (the JWE text) or a final answer, the deadline, or
    /// cancellation. `tx_id` is sent when given (the platform then checks it).
    pub async fn poll<T: Timer>(
        &self,
        ticket: &PermissionTicket,
        tx_id: Option<&TxId>,
        timer: &T,
        cancel: &CancelToken,
    ) -> Result<String, PollError> {
        self.poll_observed(ticket, tx_id, timer, cancel, |_, _| {})
            .await
    }

    /// [`MyDataApi::poll`], calling `observe` with the request number (from 1) and the answer
    /// after every request, before waiting or returning; for progress displays and logs.
    pub async fn poll_observed<T: Timer, F: FnMut(u32, &Answer)>(
        &self,
        ticket: &PermissionTicket,
        tx_id: Option<&TxId>,
        timer: &T,
        cancel: &CancelToken,
        mut observe: F,
    ) -> Result<String, PollError> {
        let client = self.client();
        // A deadline beyond what SystemTime can hold means no deadline.
        let deadline = timer.now().checked_add(self.opts.deadline);
        let mut polls = 0u32;
        let mut transient = 0u32;
        loop {
            if cancel.is_cancelled() {
                return Err(PollError::Cancelled);
            }
            // The time left before the deadline bounds the request as well.
            let left = deadline.map(|d| d.duration_since(timer.now()).unwrap_or(Duration::ZERO));
            if left == Some(Duration::ZERO) {
                return Err(PollError::DeadlineExceeded { polls });
            }
            let cut_by_deadline = left.is_some_and(|l| l < self.opts.request_timeout);
            let limit = left.map_or(self.opts.request_timeout, |l| {
                l.min(self.opts.request_timeout)
            });
            polls = polls.saturating_add(1);
            let request =
                tokio::time::timeout(limit, self.fetch_with(&client, ticket, tx_id, timer.now()));
            let answer = tokio::select! {
                a = request => match a {
                    Ok(a) => a,
                    Err(_) if cut_by_deadline => {
                        Answer::Final(PollError::DeadlineExceeded { polls })
                    }
                    Err(_) => self.timed_out(),
                },
                () = cancel.cancelled() => return Err(PollError::Cancelled),
            };
            observe(polls, &answer);
            let wait = match answer {
                Answer::Ready(jwe) => return Ok(jwe),
                Answer::Final(e) => return Err(e),
                Answer::NotReady { wait } => {
                    transient = 0;
                    wait
                }
                Answer::Transient { reason, wait } => {
                    transient += 1;
                    if transient > self.opts.max_transient_failures {
                        return Err(PollError::Transport(reason));
                    }
                    wait
                }
            };
            let wake = timer.now().checked_add(wait);
            if let (Some(d), Some(w)) = (deadline, wake)
                && w > d
            {
                return Err(PollError::DeadlineExceeded { polls });
            }
            tokio::select! {
                () = timer.sleep(wait) => {}
                () = cancel.cancelled() => return Err(PollError::Cancelled),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_798_761_600);
        assert_eq!(parse_retry_after("60", now), Some(Duration::from_secs(60)));
        assert_eq!(parse_retry_after(" 5 ", now), Some(Duration::from_secs(5)));
        // 2027-01-01T00:00:30Z
        assert_eq!(
            parse_retry_after("Fri, 01 Jan 2027 00:00:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        // A date in the past is no wait.
        assert_eq!(
            parse_retry_after("Thu, 31 Dec 2026 23:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        for bad in ["", "-5", "1.5", "soon", "Fri, 99 Jan 2027 00:00:30 GMT"] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad}");
        }
        assert_eq!(
            parse_retry_after("99999999999999999999999", now),
            Some(Duration::from_secs(u64::MAX))
        );
    }

    #[test]
    fn waits_are_bounded() {
        let api = MyDataApi::new("http://127.0.0.1:1/", PollOptions::default());
        assert_eq!(api.data_url(), "http://127.0.0.1:1/service/data");
        let now = SystemTime::UNIX_EPOCH;
        assert_eq!(api.wait_from(None, now), Duration::from_secs(60));
        assert_eq!(api.wait_from(Some("junk"), now), Duration::from_secs(60));
        assert_eq!(api.wait_from(Some("0"), now), Duration::from_secs(1));
        assert_eq!(
            api.wait_from(Some("99999999"), now),
            Duration::from_secs(3600)
        );
    }

    #[actix_web::test]
    async fn huge_deadline_does_not_overflow() {
        let opts = PollOptions {
            deadline: Duration::MAX,
            max_transient_failures: 0,
            ..PollOptions::default()
        };
        // Port 1 on loopback refuses the connection: one transient failure, then give up.
        let api = MyDataApi::new("http://127.0.0.1:1", opts);
        let ticket = PermissionTicket::generate().unwrap();
        let got = api
            .poll(&ticket, None, &SystemTimer, &CancelToken::new())
            .await;
        assert!(matches!(got, Err(PollError::Transport(_))), "{got:?}");
    }

    #[actix_web::test]
    async fn cancel_token() {
        let t = CancelToken::new();
        let t2 = t.clone();
        assert!(!t.is_cancelled());
        t2.cancel();
        assert!(t.is_cancelled());
        // Completes at once when already cancelled.
        t.cancelled().await;
        let api = MyDataApi::new("http://127.0.0.1:1", PollOptions::default());
        let ticket = PermissionTicket::generate().unwrap();
        assert_eq!(
            api.poll(&ticket, None, &SystemTimer, &t).await,
            Err(PollError::Cancelled)
        );
    }
}
