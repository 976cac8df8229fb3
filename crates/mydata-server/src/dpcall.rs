//! The platform's DP-API caller (spec §9, D28, D29): one call series per (transaction, dataset),
//! with the retry policy of [`mydata_protocol::dpapi`].

use std::sync::Arc;
use std::time::Duration;

use actix_web::web::Bytes;
use mydata_protocol::codes::DatasetCode;
use mydata_protocol::dpapi::{Answer, MAX_BODY_BYTES, Series, Step};
use mydata_protocol::package::dp::{self, TrustAnchors, VerifyOptions};

use crate::clock::SharedClock;
use crate::storage::{DpMethod, DpRecord};

/// Connect timeout of one call.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Total timeout of one call.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(300);

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

/// An HTTP client for DP-API calls (one per worker thread; awc clients are not `Send`).
pub fn client() -> awc::Client {
    awc::Client::builder()
        .timeout(CALL_TIMEOUT)
        .connector(awc::Connector::new().timeout(CONNECT_TIMEOUT))
        .disable_redirects()
        .finish()
}

/// Runs one call series against `dp`, waiting in real time between calls and reading the budget
/// from `clock`.
pub async fn run_series(
    client: &awc::Client,
    clock: &SharedClock,
    dp: &DpRecord,
    token: &str,
    transaction_uid: &str,
    trust: Option<Arc<TrustAnchors>>,
) -> SeriesResult {
    let sep = if dp.endpoint.contains('?') { '&' } else { '?' };
    let url = format!("{}{sep}transaction_uid={transaction_uid}", dp.endpoint);
    let mut series = Series::start(clock.now());
    loop {
        let req = match dp.method {
            DpMethod::Get => client.get(&url),
            DpMethod::Post => client.post(&url),
        }
        .insert_header(("Authorization", format!("Bearer {token}")))
        .insert_header(("Accept", "application/zip"));
        let (answer_status, retry_after, body) = match req.send().await {
            Err(_) => (None, None, None),
            Ok(mut resp) => {
                let status = resp.status().as_u16();
                let ra = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                let body = if status == 200 {
                    match resp.body().limit(MAX_BODY_BYTES as usize).await {
                        Ok(b) => Some(b),
                        Err(_) => Some(Bytes::new()),
                    }
                } else {
                    None
                };
                (Some(status), ra, body)
            }
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
