//! Sandbox-only hooks (spec `conformance-platform.md`), mounted only with `sandbox` and
//! `sandbox_clock`. Never for production.
//!
//! `POST /sandbox/clock` with `{"advance_secs": N}` (0 ≤ N ≤ 31,536,000) moves the platform
//! clock forward by N seconds, runs the retention purge at once, and answers
//! `{"now": UNIX_SECONDS, "offset_secs": TOTAL, "purged": COUNT}`.

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use serde_json::json;

use crate::clock::{Clock, OffsetClock};
use crate::http::State;
use crate::http::errors::{self, Surface};

/// The largest single advance accepted: one year.
pub const MAX_ADVANCE_SECS: i64 = 365 * 24 * 3600;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Advance {
    advance_secs: i64,
}

/// Mounts `POST /sandbox/clock`, driving `clock` (the platform's own clock).
pub fn configure(cfg: &mut web::ServiceConfig, clock: OffsetClock) {
    cfg.app_data(web::Data::new(clock))
        .route("/sandbox/clock", web::post().to(advance));
}

fn bad(msg: &str) -> HttpResponse {
    HttpResponse::BadRequest().json(json!({ "error": "invalid_request", "error_description": msg }))
}

async fn advance(p: State, clock: web::Data<OffsetClock>, body: web::Bytes) -> HttpResponse {
    let Ok(a) = serde_json::from_slice::<Advance>(&body) else {
        return bad("expected {\"advance_secs\": N}");
    };
    if !(0..=MAX_ADVANCE_SECS).contains(&a.advance_secs) {
        return bad("advance_secs must be 0 to 31536000");
    }
    clock.advance(a.advance_secs);
    let p2 = p.clone().into_inner();
    let purged = match web::block(move || crate::engine::purge(&p2)).await {
        Ok(Ok(r)) if r.complete() => r.purged,
        Ok(Ok(r)) => {
            log::error!("sandbox clock: purge incomplete: {:?}", r.not_erased);
            return HttpResponse::InternalServerError()
                .json(json!({ "error": "purge_incomplete" }));
        }
        Ok(Err(e)) => return errors::json_error(Surface::SandboxClock, &e, "purge_failed"),
        Err(e) => return errors::json_error(Surface::SandboxClock, &e.into(), "purge_failed"),
    };
    HttpResponse::Ok().json(json!({
        "now": clock.now().0,
        "offset_secs": clock.offset(),
        "purged": purged,
    }))
}
