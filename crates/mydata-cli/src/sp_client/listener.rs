//! `mydata sp fetch --listen`: an SP for one transaction (its SP-API endpoint and return page on a local port).

use super::*;

/// What the `--listen` SP has seen.
#[derive(Default)]
pub(super) struct Seen {
    pub(super) delivery: Option<Result<Received, receiver::ReceiveError>>,
    pub(super) returned: Option<ReturnOutcome>,
    pub(super) returned_at: Option<Instant>,
    pub(super) delivered_at: Option<Instant>,
}

pub(super) struct ListenState {
    pub(super) sp: SpConfig,
    pub(super) tx_id: TxId,
    pub(super) seen: Mutex<Seen>,
    pub(super) notify: tokio::sync::Notify,
    pub(super) progress: Progress,
}

impl ListenState {
    pub(super) fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub(super) struct Listening {
    pub(super) state: Arc<ListenState>,
    pub(super) handle: actix_web::dev::ServerHandle,
}

pub(super) async fn sp_api(state: web::Data<ListenState>, body: web::Bytes) -> HttpResponse {
    let got = receiver::receive(&body, state.sp.api_key.as_deref(), &state.sp.cipher());
    let status = match &got {
        Err(e) => {
            state
                .progress
                .line(&format!("SP-API call refused: {e} ({})", e.kind()));
            e.status()
        }
        Ok(r) if r.tx_id != state.tx_id => {
            state.progress.line(&format!(
                "SP-API call for another tx_id ({}) refused",
                r.tx_id
            ));
            return HttpResponse::BadRequest().body("unknown tx_id");
        }
        Ok(r) => {
            let what = match &r.content {
                ReceivedContent::SecretKey(_) => "a secret_key".to_owned(),
                ReceivedContent::UnableToDeliver(ids) => format!(
                    "unable_to_deliver {}",
                    ids.iter()
                        .map(ResourceId::as_str)
                        .collect::<Vec<_>>()
                        .join(",")
                ),
            };
            state.progress.line(&format!(
                "SP-API call received: ticket {} with {what}",
                r.permission_ticket
            ));
            200
        }
    };
    {
        let mut s = state.seen();
        // The first accepted call decides; a refused call is kept only until one is accepted.
        if !matches!(s.delivery, Some(Ok(_))) {
            if got.is_ok() {
                s.delivered_at = Some(Instant::now());
            }
            s.delivery = Some(got);
        }
    }
    state.notify.notify_waiters();
    HttpResponse::build(
        actix_web::http::StatusCode::from_u16(status)
            .unwrap_or(actix_web::http::StatusCode::BAD_REQUEST),
    )
    .finish()
}

pub(super) fn page(title: &str, text: &str) -> HttpResponse {
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header(("cache-control", "no-store"))
        .body(format!(
            "<!DOCTYPE html><html lang=en><meta charset=utf-8><title>{}</title><h1>{}</h1><p id=result>{}</p><p>The <code>mydata sp fetch</code> command continues in the terminal; you may close this page.</p></html>",
            esc(title),
            esc(title),
            esc(text)
        ))
}

pub(super) async fn sp_return(state: web::Data<ListenState>, req: HttpRequest) -> HttpResponse {
    let back = state
        .sp
        .read_return(req.query_string())
        .map_err(|e| e.to_string())
        .and_then(|r| {
            r.check_tx(&state.tx_id)
                .map_err(|e| e.to_string())
                .map(|_| r.outcome)
        });
    match back {
        Ok(outcome) => {
            state.progress.line(&format!(
                "the citizen returned with code {}: {}",
                outcome.code(),
                outcome.description()
            ));
            {
                let mut s = state.seen();
                s.returned = Some(outcome);
                s.returned_at = Some(Instant::now());
            }
            state.notify.notify_waiters();
            page(
                &format!("Return code {}", outcome.code()),
                &format!("{} / {}", outcome.description(), outcome.description_zh()),
            )
        }
        Err(e) => {
            state.progress.line(&format!("a return was refused: {e}"));
            let mut r = page("Return refused", &e);
            *r.status_mut() = actix_web::http::StatusCode::BAD_REQUEST;
            r
        }
    }
}

pub(super) async fn listen(
    sp: &SpConfig,
    addr: SocketAddr,
    tx_id: &TxId,
    progress: &Progress,
) -> CliResult<Listening> {
    let state = Arc::new(ListenState {
        sp: sp.clone(),
        tx_id: tx_id.clone(),
        seen: Mutex::default(),
        notify: tokio::sync::Notify::new(),
        progress: progress.clone(),
    });
    let data = web::Data::from(state.clone());
    let srv = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(web::PayloadConfig::new(MAX_BODY_LEN))
            .route("/sp-api", web::post().to(sp_api))
            .route("/return", web::get().to(sp_return))
    })
    .workers(1)
    .disable_signals()
    .bind(addr)
    .map_err(|e| format!("--listen {addr}: {e}"))?
    .run();
    let handle = srv.handle();
    actix_web::rt::spawn(srv);
    progress.line(&format!(
        "playing the SP on http://{addr} (POST /sp-api, GET /return), tx_id {tx_id}"
    ));
    Ok(Listening { state, handle })
}

impl Listening {
    /// Waits for the SP-API call; ends early with a report when the citizen comes back without
    /// one (refusal, timeout, …) or the deadline passes.
    pub(super) async fn wait(
        &self,
        started: Instant,
        deadline: Duration,
    ) -> Result<Result<Received, receiver::ReceiveError>, Value> {
        // After a return without an SP-API call, a late call still has this long to arrive.
        const GRACE: Duration = Duration::from_secs(3);
        loop {
            let notified = self.state.notify.notified();
            {
                let mut s = self.state.seen();
                // Some platforms record our 200 only after the call returns and answer polls
                // before that with 403 (the reference server records the ticket first, D25):
                // start once the citizen is back (the platform redirects after the
                // acknowledgement), or after the grace period for a browser that never returns.
                let settled =
                    s.returned.is_some() || s.delivered_at.is_some_and(|t| t.elapsed() >= GRACE);
                if matches!(s.delivery, Some(Ok(_)))
                    && settled
                    && let Some(d) = s.delivery.take()
                {
                    return Ok(d);
                }
                if let (Some(o), Some(at)) = (s.returned, s.returned_at)
                    && at.elapsed() >= GRACE
                {
                    if let Some(Err(e)) = s.delivery.take() {
                        return Ok(Err(e));
                    }
                    let status = if o.is_success() {
                        "no_sp_api_call"
                    } else {
                        "returned"
                    };
                    return Err(json!({
                        "tx_id": self.state.tx_id.as_str(),
                        "status": status,
                        "verified": false,
                        "return_code": o.code(),
                        "polls": 0,
                        "error": {"kind": "return", "message": format!(
                            "the citizen came back with code {} ({}) and no SP-API call delivered a ticket",
                            o.code(), o.description())},
                    }));
                }
            }
            let left = deadline.saturating_sub(started.elapsed());
            if left.is_zero() {
                return Err(json!({
                    "tx_id": self.state.tx_id.as_str(),
                    "status": "deadline",
                    "verified": false,
                    "polls": 0,
                    "error": {"kind": "deadline", "message": "the deadline passed before the SP-API call"},
                }));
            }
            let nap = left.min(Duration::from_millis(500));
            let _ = actix_web::rt::time::timeout(nap, notified).await;
        }
    }

    /// Gives the browser up to `d` to load the return page if it has not yet.
    pub(super) async fn linger_for_return(&self, d: Duration) {
        let until = Instant::now() + d;
        while self.state.seen().returned.is_none() && Instant::now() < until {
            actix_web::rt::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub(super) async fn stop(self) {
        self.handle.stop(true).await;
    }
}
