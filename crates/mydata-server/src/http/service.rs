//! The MyData-API (spec §8): `GET /service/data`, `GET /service/txid_status`.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::json;

use super::State;
use crate::engine::{self, DataAnswer, state};

/// Mounts the MyData-API routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/service/data", web::get().to(data))
        .route("/service/txid_status", web::get().to(txid_status));
}

fn header_str<'a>(req: &'a HttpRequest, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

fn status(code: u16) -> actix_web::HttpResponseBuilder {
    let mut b = HttpResponse::build(
        actix_web::http::StatusCode::from_u16(code)
            .unwrap_or(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR),
    );
    b.insert_header((header::CACHE_CONTROL, "no-store"));
    b
}

async fn data(state: State, req: HttpRequest) -> HttpResponse {
    let Some(peer) = req.peer_addr() else {
        return status(401).finish();
    };
    let ticket = header_str(&req, "permission_ticket").map(str::to_string);
    let tx_id = header_str(&req, "tx_id").map(str::to_string);
    let platform = state.into_inner();
    let answer =
        web::block(move || engine::data(&platform, peer.ip(), ticket.as_deref(), tx_id.as_deref()))
            .await;
    match answer {
        Ok(Ok(DataAnswer::UnknownSource)) => status(401).finish(),
        Ok(Ok(DataAnswer::BadTicket)) => status(400).finish(),
        Ok(Ok(DataAnswer::Forbidden)) => status(403).finish(),
        Ok(Ok(DataAnswer::Taken)) => status(201).finish(),
        Ok(Ok(DataAnswer::AllFailed)) => status(504).finish(),
        Ok(Ok(DataAnswer::NotReady(n))) => status(429)
            .insert_header((header::RETRY_AFTER, n.to_string()))
            .finish(),
        Ok(Ok(DataAnswer::Ready(jwe))) => status(200).content_type("application/jwe").body(jwe),
        Ok(Err(e)) => {
            log::error!("MyData-API: {e}");
            status(500).finish()
        }
        Err(e) => {
            log::error!("MyData-API: {e}");
            status(500).finish()
        }
    }
}

async fn txid_status(state: State, req: HttpRequest) -> HttpResponse {
    let Some(peer) = req.peer_addr() else {
        return status(401).finish();
    };
    let src = peer.ip().to_string();
    let Some(tx_id) = header_str(&req, "tx_id").map(str::to_string) else {
        return status(400).finish();
    };
    let client_id = header_str(&req, "client_id").map(str::to_string);
    let p = state.into_inner();
    let r = web::block(
        move || -> crate::ServerResult<(u16, Option<serde_json::Value>)> {
            let sps = p.store.list_sps()?;
            let mine: Vec<&str> = sps
                .iter()
                .filter(|s| s.allowed_ips.contains(&src))
                .map(|s| s.client_id.as_str())
                .collect();
            if mine.is_empty() {
                return Ok((401, None));
            }
            let now = p.now();
            let found: Vec<_> = p
                .store
                .find_tx_any(&tx_id)?
                .into_iter()
                .filter(|t| mine.contains(&t.client_id.as_str()))
                .filter(|t| client_id.as_deref().is_none_or(|c| c == t.client_id))
                .filter(|t| now.0 <= t.created_at + engine::RETENTION_SECS)
                .collect();
            let tx = match found.as_slice() {
                [] => return Ok((404, None)),
                [t] => t,
                _ => return Ok((400, None)),
            };
            let (code, text) = match (tx.state.as_str(), tx.code) {
                (state::REDIRECTED | state::AUTHENTICATED, _) => (100, "waiting for the citizen"),
                (state::FETCHING, _) => (102, "consented; calling the data providers"),
                (state::READY, Some(504)) => (504, "every dataset failed"),
                (state::READY, _) => (200, "the package is ready"),
                (state::TAKEN, _) => (201, "the package has been taken"),
                (_, Some(c)) => (c, "the transaction ended"),
                _ => (400, "the transaction ended"),
            };
            let code = code.to_string();
            Ok((200, Some(json!({"code": code, "text": text}))))
        },
    )
    .await;
    match r {
        Ok(Ok((200, Some(body)))) => status(200).json(body),
        Ok(Ok((code, _))) => status(code).finish(),
        _ => status(500).finish(),
    }
}
