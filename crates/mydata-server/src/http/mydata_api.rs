//! The MyData-API (spec §8): `GET /service/data`, `GET /service/txid_status`,
//! `GET /service/type_valid`. The decisions are in [`crate::engine::mydata_api`].

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use actix_web::body::{BodySize, MessageBody};
use actix_web::http::header;
use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse, web};

use super::State;
use crate::http::errors::{self, Surface};
use mydata_protocol::flow;
use mydata_protocol::ids::{ClientId, TxId};

use crate::engine::{self, DataAnswer, StatusAnswer, StatusQuery};
use crate::platform::Platform;

/// Mounts the MyData-API routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/service/data", web::get().to(data))
        .route("/service/txid_status", web::get().to(txid_status))
        .route("/service/type_valid", web::get().to(type_valid));
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
    let Some(source) = crate::http::caller(&state, &req) else {
        return status(401).finish();
    };
    let ticket = header_str(&req, "permission_ticket").map(str::to_string);
    let tx_id = header_str(&req, "tx_id").map(str::to_string);
    let platform = state.into_inner();
    // A poll that meets another poll's 200 being written waits a moment for it to complete
    // (201 then), so that an SP polling again at once is not told 429 (D25).
    let mut waits = 0;
    let answer = loop {
        let answer = decide(&platform, source.clone(), ticket.clone(), tx_id.clone()).await;
        if matches!(answer, Ok(Ok(DataAnswer::Busy))) && waits < BUSY_WAITS {
            waits += 1;
            actix_web::rt::time::sleep(BUSY_WAIT).await;
            continue;
        }
        break answer;
    };
    match answer {
        Ok(Ok(DataAnswer::Status(flow::DataAnswer::NotReady429 { retry_after }))) => status(429)
            .insert_header((header::RETRY_AFTER, retry_after.to_string()))
            .finish(),
        Ok(Ok(DataAnswer::Status(a))) => status(a.status()).finish(),
        Ok(Ok(DataAnswer::Busy)) => status(429)
            .insert_header((header::RETRY_AFTER, "5"))
            .finish(),
        Ok(Ok(DataAnswer::Ready(delivery))) => status(200)
            .content_type("application/jwe")
            .body(DeliveryBody::new(platform, delivery)),
        Ok(Err(e)) => errors::empty(Surface::MyDataApi, &e),
        Err(e) => errors::empty(Surface::MyDataApi, &e.into()),
    }
}

/// How many times, [`BUSY_WAIT`] apart, a poll that meets a delivery in progress looks again.
const BUSY_WAITS: u32 = 40;
/// The pause between those looks.
const BUSY_WAIT: std::time::Duration = std::time::Duration::from_millis(5);

/// The decision of `GET /service/data`: made on the worker when lookups are in memory, with only
/// a 200 (file, JWE) on the blocking pool; otherwise all of it on the blocking pool.
async fn decide(
    platform: &Arc<Platform>,
    peer: crate::engine::Caller,
    ticket: Option<String>,
    tx_id: Option<String>,
) -> Result<crate::ServerResult<DataAnswer>, actix_web::error::BlockingError> {
    let p = platform.clone();
    if platform.store.memory_first() {
        match engine::data_decide(platform, peer, ticket.as_deref(), tx_id.as_deref()) {
            Ok(engine::DataStep::Answer(a)) => Ok(Ok(a)),
            Ok(engine::DataStep::Take(t)) => web::block(move || engine::prepare(&p, *t)).await,
            Err(e) => Ok(Err(e)),
        }
    } else {
        web::block(move || engine::data(&p, peer, ticket.as_deref(), tx_id.as_deref())).await
    }
}

/// The bytes of a 200 body handed to the connection at a time. actix-web asks for more only
/// while its write buffer holds less than 32 KiB, so most of a package has gone to the socket
/// before its end is asked for.
const DELIVERY_CHUNK: usize = 16 * 1024;

/// The body of a 200 on `GET /service/data` (spec D25). It completes the delivery (the package
/// is taken) only when the connection has asked for its end after a chance to write what came
/// before it; if the connection fails first, the body is dropped unfinished and the package
/// stays available for the next poll.
struct DeliveryBody {
    data: Bytes,
    pos: usize,
    /// The end was asked for once and put off, so the connection wrote what it held.
    end_put_off: bool,
    pending: Option<(Arc<Platform>, engine::Delivered)>,
}

impl DeliveryBody {
    fn new(p: Arc<Platform>, d: engine::Delivery) -> Self {
        let (jwe, delivered) = d.into_body();
        DeliveryBody {
            data: Bytes::from(jwe),
            pos: 0,
            end_put_off: false,
            pending: Some((p, delivered)),
        }
    }
}

impl MessageBody for DeliveryBody {
    type Error = std::convert::Infallible;

    fn size(&self) -> BodySize {
        BodySize::Sized(self.data.len() as u64)
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let this = self.get_mut();
        if this.pos < this.data.len() {
            let end = (this.pos + DELIVERY_CHUNK).min(this.data.len());
            let chunk = this.data.slice(this.pos..end);
            this.pos = end;
            return Poll::Ready(Some(Ok(chunk)));
        }
        if !this.end_put_off {
            // Once: the connection first writes out its buffer (a reset peer fails it here,
            // and the body is dropped unfinished), then asks again.
            this.end_put_off = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        if let Some((p, delivered)) = this.pending.take() {
            // Taken at once in memory (a poll right after gets 201), committed off the worker.
            let job: Box<dyn FnOnce() -> crate::ServerResult<()> + Send> = if p.store.memory_first()
            {
                match delivered.take(&p) {
                    Ok(lease) => Box::new(move || {
                        let r = p.store.flush();
                        drop(lease);
                        r
                    }),
                    Err(e) => Box::new(move || Err(e)),
                }
            } else {
                Box::new(move || delivered.complete(&p))
            };
            actix_web::rt::spawn(async move {
                match web::block(job).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => errors::log(Surface::Delivery, &e),
                    Err(e) => errors::log(Surface::Delivery, &e.into()),
                }
            });
        }
        Poll::Ready(None)
    }
}

impl Drop for DeliveryBody {
    fn drop(&mut self) {
        if let Some((_, d)) = &self.pending {
            log::warn!(
                "MyData-API: a delivery was interrupted after {} of {} bytes; the package stays available ({d:?})",
                self.pos,
                self.data.len()
            );
        }
    }
}

async fn txid_status(state: State, req: HttpRequest) -> HttpResponse {
    lookup(state, req, StatusQuery::TxidStatus).await
}

async fn type_valid(state: State, req: HttpRequest) -> HttpResponse {
    lookup(state, req, StatusQuery::TypeValid).await
}

/// `txid_status` and `type_valid` (spec §8.3, §8.4): headers checked here, the lookup in
/// [`engine::status`].
async fn lookup(state: State, req: HttpRequest, query: StatusQuery) -> HttpResponse {
    let Some(source) = crate::http::caller(&state, &req) else {
        return status(401).finish();
    };
    // A missing or malformed header is 400 (D27), before anything is looked up.
    let Some(tx_id) = header_str(&req, "tx_id").and_then(|t| t.parse::<TxId>().ok()) else {
        return status(400).finish();
    };
    let client_id = match req.headers().get("client_id") {
        None => None,
        Some(v) => match v.to_str().ok().and_then(|c| c.parse::<ClientId>().ok()) {
            Some(c) => Some(c),
            None => return status(400).finish(),
        },
    };
    let p = state.into_inner();
    match web::block(move || engine::status(&p, source, &tx_id, client_id.as_ref(), query)).await {
        Ok(Ok(StatusAnswer::Found(body))) => status(200).json(body),
        Ok(Ok(answer)) => status(answer.status()).finish(),
        Ok(Err(e)) => errors::empty(Surface::MyDataApi, &e),
        Err(e) => errors::empty(Surface::MyDataApi, &e.into()),
    }
}
