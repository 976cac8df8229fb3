//! The platform's DP-API caller (spec §9, D28, D29): one call series per (transaction, dataset),
//! with the request built from the dataset's template ([`mydata_protocol::template`]) and the
//! retry policy of [`mydata_protocol::dpapi`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use actix_web::web::Bytes;
use awc::error::PayloadError;
use awc::http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderName, HeaderValue};
use awc::http::{Method, Uri};
use mydata_protocol::codes::DatasetCode;
use mydata_protocol::date::CivilDate;
use mydata_protocol::dpapi::{self, Answer, MAX_BODY_BYTES, Series, Step};
use mydata_protocol::package::dp::{self, TrustAnchors, VerifyOptions};
use mydata_protocol::template::{self, TemplateError, Values};

use crate::auth::CitizenClaims;
use crate::clock::SharedClock;
use crate::config::Config;
use crate::engine::outbound::{TLS_TARGET, tls_refusal};
use crate::storage::{DpMethod, DpRecord};

/// Connect timeout of one call (spec §9.3, D29).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Total time of one call: connect, headers and the whole body (spec §9.3, D29).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(300);

/// The limits of a call series (spec §9.3, D29). [`CallLimits::default`] holds the
/// specification's values; [`CallLimits::from_config`] the server's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallLimits {
    /// Connect timeout of one call.
    pub connect: Duration,
    /// Total time of one call, from the start of the connect to the last byte of the body. A
    /// call that outlasts it is a transport error.
    pub total: Duration,
    /// The largest body of a 200 answer; a larger one ends the series with 500.
    pub max_body_bytes: u64,
    /// The retry budget and the wait after a transport error.
    pub series: dpapi::Limits,
}

impl Default for CallLimits {
    fn default() -> Self {
        CallLimits {
            connect: CONNECT_TIMEOUT,
            total: CALL_TIMEOUT,
            max_body_bytes: MAX_BODY_BYTES,
            series: dpapi::Limits::default(),
        }
    }
}

impl CallLimits {
    /// The limits set by `config` (`dp_connect_timeout_secs`, `dp_call_timeout_secs`,
    /// `dp_transport_retry_secs`); the rest as specified.
    pub fn from_config(config: &Config) -> Self {
        CallLimits {
            connect: Duration::from_secs(config.dp_connect_timeout_secs),
            total: Duration::from_secs(config.dp_call_timeout_secs),
            series: dpapi::Limits {
                transport_retry_secs: i64::try_from(config.dp_transport_retry_secs)
                    .unwrap_or(dpapi::TRANSPORT_RETRY_SECS),
                ..dpapi::Limits::default()
            },
            ..CallLimits::default()
        }
    }
}

/// The end of a call series.
#[derive(Debug, Clone)]
pub struct SeriesResult {
    /// Per-dataset code.
    pub code: DatasetCode,
    /// The verified DP package, when `code` is 200.
    pub package: Option<Bytes>,
    /// Calls made.
    pub calls: u32,
}

/// How long an idle connection to a DP is kept for the next call. Shorter than the keep-alive
/// of common servers (actix-web 5 s, nginx 75 s), so that a connection the DP is about to close
/// is not reused.
pub const IDLE_KEEP: Duration = Duration::from_secs(4);

/// A new HTTP client for DP-API calls, with its own connection pool and the specification's
/// connect timeout.
pub fn client() -> awc::Client {
    client_with(CONNECT_TIMEOUT)
}

/// A new HTTP client for DP-API calls, with its own connection pool and this connect timeout.
/// It follows no redirect (D29). The total time of a call is set per call
/// ([`CallLimits::total`]).
pub fn client_with(connect: Duration) -> awc::Client {
    awc::Client::builder()
        .timeout(CALL_TIMEOUT)
        .connector(
            awc::Connector::new()
                .timeout(connect)
                .conn_keep_alive(IDLE_KEEP),
        )
        .disable_redirects()
        .finish()
}

/// A new HTTP client for DP-API calls whose HTTPS uses `tls` (a context from
/// [`mydata_protocol::tls::connector`]: a pinned CA, the platform's client certificate).
pub fn client_tls(connect: Duration, tls: openssl::ssl::SslConnector) -> awc::Client {
    awc::Client::builder()
        .timeout(CALL_TIMEOUT)
        .connector(
            awc::Connector::new()
                .timeout(connect)
                .handshake_timeout(connect)
                .conn_keep_alive(IDLE_KEEP)
                .openssl(tls),
        )
        .disable_redirects()
        .finish()
}

thread_local! {
    static SHARED: std::cell::RefCell<Option<(Duration, awc::Client)>> =
        const { std::cell::RefCell::new(None) };
}

/// This worker thread's DP-API client: calls from the thread share its connection pool, so a
/// DP's connection is reused from one transaction to the next instead of opened for each call
/// (awc clients are not `Send`: one per thread).
pub fn shared_client() -> awc::Client {
    shared_client_for(CONNECT_TIMEOUT)
}

/// [`shared_client`] with this connect timeout (a new pool when the thread's client has
/// another).
pub fn shared_client_for(connect: Duration) -> awc::Client {
    SHARED.with(|slot| {
        let mut slot = slot.borrow_mut();
        match &*slot {
            Some((c, client)) if *c == connect => client.clone(),
            _ => {
                let client = client_with(connect);
                *slot = Some((connect, client.clone()));
                client
            }
        }
    })
}

/// Why a call could not be built; the series then ends with 500 without calling the DP.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    /// The template refused the values (a header value with a control character).
    #[error(transparent)]
    Template(#[from] TemplateError),
    /// The registered endpoint does not make a valid request URI.
    #[error("the endpoint does not make a valid request URI")]
    Url,
    /// A header name or value not accepted by the HTTP client.
    #[error("header {0} is not a valid HTTP header")]
    Header(String),
}

/// One DP-API call as it goes on the wire. Every call of a series sends the same request.
#[derive(Clone)]
pub struct PreparedCall {
    /// GET or POST.
    pub method: DpMethod,
    /// The endpoint with `transaction_uid` and the template's query pairs.
    pub url: String,
    /// Every header: `Authorization`, `Accept`, the template's, and `Content-Type` with a body.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The body (POST with `form` or `json` items).
    pub body: Option<Bytes>,
}

impl std::fmt::Debug for PreparedCall {
    /// Names only: the query, the headers and the body may hold personal data and the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedCall")
            .field("method", &self.method)
            .field(
                "headers",
                &self.headers.iter().map(|h| &h.0).collect::<Vec<_>>(),
            )
            .field("body_len", &self.body.as_ref().map(Bytes::len))
            .finish_non_exhaustive()
    }
}

/// The template values of one call series (D28): the series' `transaction_uid`, the dataset,
/// the citizen's claims that the dataset may see (`dp.claims`; the others render empty), and
/// the `params` the citizen entered. A birth date that does not parse as `YYYY-MM-DD` renders
/// empty, like a missing one.
pub fn values_for(
    dp: &DpRecord,
    transaction_uid: &str,
    citizen: &CitizenClaims,
    params: BTreeMap<String, String>,
) -> Values {
    let may = |claim: &str| dp.claims.iter().any(|c| c == claim);
    let claim = |claim: &str, v: Option<&str>| {
        v.filter(|v| !v.is_empty() && may(claim))
            .map(str::to_string)
    };
    Values {
        transaction_uid: transaction_uid.to_string(),
        resource_id: dp.resource_id.clone(),
        pid: claim("uid", Some(&citizen.uid)),
        pid_type: claim("uid_type", Some(&citizen.uid_type)),
        birthdate: claim("birthdate", citizen.birthdate.as_deref())
            .and_then(|b| b.parse::<CivilDate>().ok()),
        name: claim("name", citizen.name.as_deref()),
        email: claim("email", citizen.email.as_deref()),
        params,
    }
}

/// Builds the request of a call series (spec §9.1): `transaction_uid` appended to the endpoint's
/// query, then the template's query pairs; `Authorization: Bearer {token}` and
/// `Accept: application/zip`, then the template's headers; the template's body for POST.
pub fn prepare(dp: &DpRecord, token: &str, values: &Values) -> Result<PreparedCall, PrepareError> {
    let method = match dp.method {
        DpMethod::Get => template::Method::Get,
        DpMethod::Post => template::Method::Post,
    };
    let rendered = dp
        .template
        .as_ref()
        .map(|t| t.render(method, values))
        .transpose()?;
    let url = template::call_url(&dp.endpoint, &values.transaction_uid, rendered.as_ref());
    url.parse::<Uri>().map_err(|_| PrepareError::Url)?;
    let mut headers = vec![
        (
            AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| PrepareError::Header("Authorization".into()))?,
        ),
        (ACCEPT, HeaderValue::from_static("application/zip")),
    ];
    let mut body = None;
    if let Some(r) = rendered {
        for (name, value) in &r.headers {
            let bad = || PrepareError::Header(name.clone());
            headers.push((
                HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad())?,
                HeaderValue::from_bytes(value.as_bytes()).map_err(|_| bad())?,
            ));
        }
        if let Some(b) = r.body {
            headers.push((CONTENT_TYPE, HeaderValue::from_static(b.content_type())));
            body = Some(Bytes::from(b.as_str().to_string()));
        }
    }
    Ok(PreparedCall {
        method: dp.method,
        url,
        headers,
        body,
    })
}

/// Runs one call series against `dp` without citizen values: the template's citizen
/// placeholders render empty. See [`run_series_with`].
pub async fn run_series(
    client: &awc::Client,
    clock: &SharedClock,
    dp: &DpRecord,
    token: &str,
    transaction_uid: &str,
    trust: Option<Arc<TrustAnchors>>,
) -> SeriesResult {
    let values = Values {
        transaction_uid: transaction_uid.to_string(),
        resource_id: dp.resource_id.clone(),
        ..Values::default()
    };
    run_series_with(client, clock, dp, token, &values, trust).await
}

/// Runs one call series against `dp` with the request built from its template and `values`,
/// under the specification's limits. See [`run_series_limited`].
pub async fn run_series_with(
    client: &awc::Client,
    clock: &SharedClock,
    dp: &DpRecord,
    token: &str,
    values: &Values,
    trust: Option<Arc<TrustAnchors>>,
) -> SeriesResult {
    run_series_limited(
        client,
        clock,
        dp,
        token,
        values,
        trust,
        &CallLimits::default(),
    )
    .await
}

/// Runs one call series against `dp` with the request built from its template and `values`,
/// waiting in real time between calls and reading the budget from `clock`. When the request
/// cannot be built (a header value with a control character), the DP is not called and the
/// series ends with 500. `limits.connect` is the client's (see [`client_with`]); the other
/// limits apply here.
pub async fn run_series_limited(
    client: &awc::Client,
    clock: &SharedClock,
    dp: &DpRecord,
    token: &str,
    values: &Values,
    trust: Option<Arc<TrustAnchors>>,
    limits: &CallLimits,
) -> SeriesResult {
    let call = match prepare(dp, token, values) {
        Ok(c) => c,
        Err(e) => {
            log::warn!("DP-API call of {} not sent: {e}", dp.resource_id);
            return SeriesResult {
                code: DatasetCode::DpError,
                package: None,
                calls: 0,
            };
        }
    };
    let mut series = Series::start_with(clock.now(), limits.series);
    loop {
        let mut req = client.request(
            match call.method {
                DpMethod::Get => Method::GET,
                DpMethod::Post => Method::POST,
            },
            &call.url,
        );
        for h in &call.headers {
            req = req.insert_header(h.clone());
        }
        req = req.timeout(limits.total);
        // One deadline for the whole call: connect, headers and every byte of the body (D29).
        // awc's own timeout stops at the headers.
        let received = actix_web::rt::time::timeout(
            limits.total,
            call_once(req, call.body.clone(), limits.max_body_bytes),
        )
        .await
        .unwrap_or(Received::Transport("the call's total time ran out"));
        let mut refused = false;
        let (answer_status, retry_after, body) = match received {
            Received::Refused(why) => {
                tracing::warn!(
                    target: TLS_TARGET,
                    resource_id = %dp.resource_id,
                    "DP-API call refused by TLS: {why}; the dataset ends with 504 (D49)"
                );
                refused = true;
                (None, None, None)
            }
            Received::Transport(why) => {
                log::warn!(
                    "DP-API call {} of {}: {why}; a transport error",
                    series.calls(),
                    dp.resource_id
                );
                (None, None, None)
            }
            Received::Status {
                status,
                retry_after,
                body,
            } => (Some(status), retry_after, body),
        };
        let mut package_ok = false;
        if let (Some(200), Some(b)) = (answer_status, &body) {
            let bytes = b.clone();
            let at = clock.now();
            let trust = trust.clone();
            package_ok = actix_web::rt::task::spawn_blocking(move || {
                let mut opts = VerifyOptions::at(at);
                opts.trust = trust.as_deref();
                dp::verify(std::io::Cursor::new(&bytes[..]), &opts).is_ok()
            })
            .await
            .unwrap_or(false);
        }
        let answer = match answer_status {
            None if refused => Answer::Refused,
            None => Answer::Transport,
            Some(status) => Answer::Status {
                status,
                retry_after: retry_after.as_deref(),
                package_ok,
            },
        };
        match series.next(answer, clock.now()) {
            Step::Done(code) => {
                return SeriesResult {
                    package: (code == DatasetCode::Delivered).then(|| body.unwrap_or_default()),
                    code,
                    calls: series.calls(),
                };
            }
            Step::RetryAfter(secs) => {
                actix_web::rt::time::sleep(Duration::from_secs(secs.max(0) as u64)).await;
            }
        }
    }
}

/// What one call received.
enum Received {
    /// No complete answer (the reason, for the log): refused, reset, timed out, or a body that
    /// broke off. Never an empty body.
    Transport(&'static str),
    /// The TLS handshake failed closed (the cause, for the log): not called again (D49).
    Refused(String),
    /// An answer. `body` is read for 200 only, and is `None` when it exceeds the limit.
    Status {
        status: u16,
        retry_after: Option<String>,
        body: Option<Bytes>,
    },
}

/// Sends `req` and, for 200, reads the body up to `max_body` bytes (counted while reading, and
/// refused at once when `Content-Length` says more). The caller bounds the time.
async fn call_once(req: awc::ClientRequest, body: Option<Bytes>, max_body: u64) -> Received {
    let sent = match body {
        Some(b) => req.send_body(b).await,
        None => req.send().await,
    };
    let mut resp = match sent {
        Ok(r) => r,
        Err(awc::error::SendRequestError::Timeout) => return Received::Transport("timed out"),
        Err(e) if tls_refusal(&e).is_some() => {
            return Received::Refused(tls_refusal(&e).unwrap_or_default());
        }
        Err(awc::error::SendRequestError::Connect(_)) => {
            return Received::Transport("could not connect");
        }
        Err(e) => {
            // TLS 1.3: a refused client certificate shows at the first read.
            if let Some(why) = tls_refusal(&e) {
                return Received::Refused(why);
            }
            return Received::Transport("no answer");
        }
    };
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = if status == 200 {
        match resp
            .body()
            .limit(usize::try_from(max_body).unwrap_or(usize::MAX))
            .await
        {
            Ok(b) => Some(b),
            // Over the limit: a 200 whose package is refused (500, D29).
            Err(PayloadError::Overflow) => None,
            // The body broke off (reset, closed early, malformed framing): no answer was
            // received, and the DP is called again.
            Err(_) => return Received::Transport("the body broke off"),
        }
    } else {
        None
    };
    Received::Status {
        status,
        retry_after,
        body,
    }
}
