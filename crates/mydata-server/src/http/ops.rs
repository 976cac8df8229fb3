//! The operator's endpoints (spec `operations.md`): `GET /healthz` (the process answers),
//! `GET /readyz` (the database answers and its schema is current; unreachable DP endpoints
//! listed) and `GET /metrics`
//! (Prometheus text format); and the access log and request metrics of every request.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::{HttpResponse, web};

use super::State;
use crate::observe::ACCESS;

/// The paths of the operator's endpoints.
pub const PATHS: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// Mounts `/healthz`, `/readyz` and (with `metrics`) `/metrics`.
pub fn configure(cfg: &mut web::ServiceConfig, metrics: bool) {
    cfg.route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz));
    if metrics {
        cfg.route("/metrics", web::get().to(metrics_text));
    }
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .content_type("text/plain; charset=utf-8")
        .body("ok\n")
}

async fn readyz(state: State) -> HttpResponse {
    let p = state.clone().into_inner();
    let checked = web::block(move || p.store.ready()).await;
    // The reason goes to the log only: the answer may be public (no `admin_listen`), and a
    // database error can name hosts and users.
    let reason = match checked {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(e) => Some(format!("blocking pool: {e}")),
    };
    let (status, mut body) = match reason {
        None => (actix_web::http::StatusCode::OK, String::from("ready\n")),
        Some(why) => {
            tracing::warn!(target: "mydata::ops", event = "not_ready", reason = %why, "readyz: not ready: {why}");
            (
                actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
                String::from("not ready\n"),
            )
        }
    };
    // DP endpoints that failed three heartbeats in a row (§9.4, D30) are listed, and do not
    // make the platform unready: the other datasets still work, and a redirect asking for
    // theirs is answered 504 (spec operations.md).
    for endpoint in state.dp_health.unreachable() {
        body.push_str("dp_unreachable ");
        body.push_str(&endpoint);
        body.push('\n');
    }
    HttpResponse::build(status)
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .content_type("text/plain; charset=utf-8")
        .body(body)
}

async fn metrics_text(state: State) -> HttpResponse {
    // One aggregate query (GROUP BY state) per scrape, off the worker thread; the write-behind
    // store commits its queue first, so live transactions are counted.
    let p = state.clone().into_inner();
    let tx_states = match web::block(move || p.store.count_txs_by_state()).await {
        Ok(Ok(v)) => Some(v.into_iter().map(|(s, n)| (s.as_str(), n)).collect()),
        Ok(Err(e)) => {
            tracing::warn!(target: "mydata::ops", event = "metrics_partial", error = %e, "metrics: transactions not counted: {e}");
            None
        }
        Err(e) => {
            tracing::warn!(target: "mydata::ops", event = "metrics_partial", error = %e, "metrics: blocking pool: {e}");
            None
        }
    };
    let text = state.metrics.render(&crate::observe::Scrape {
        write_behind: state.store.write_behind(),
        tx_states,
        dp_endpoints: state.dp_health.counts(),
    });
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(text)
}

/// When a request arrived; the rest of its access line is read from the answer's request.
pub struct Seen {
    start: Instant,
}

impl Seen {
    /// Notes a request as it arrives.
    pub fn of(_req: &ServiceRequest) -> Self {
        Seen {
            start: Instant::now(),
        }
    }

    /// Counts the answer and writes its access log line (never a header or the query): the
    /// method and path are borrowed from the request, nothing is copied for the line.
    pub fn answered<B: MessageBody>(self, res: &ServiceResponse<B>) {
        let took = self.start.elapsed();
        let status = res.status().as_u16();
        let req = res.request();
        let route = req.match_pattern();
        let route = route.as_deref().unwrap_or("unmatched");
        let method = req.method().as_str();
        if let Some(p) = req.app_data::<State>() {
            p.metrics.request(route, method, status, took);
        }
        let path = req.path();
        tracing::info!(
            target: ACCESS,
            method,
            path,
            route,
            status,
            duration_ms = took.as_secs_f64() * 1000.0,
            "{method} {path} {status}"
        );
    }
}
