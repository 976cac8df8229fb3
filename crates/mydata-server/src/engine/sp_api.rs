//! The SP-API (spec §7, §5.3 steps 10 and 13): consent, the call that hands the SP its
//! permission ticket, and the call that tells it nothing can be delivered.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mydata_protocol::codes::ReturnCode;
use mydata_protocol::date::UnixTime;
use mydata_protocol::flow::{self, SpApiBody, SpApiDelivery};
use mydata_protocol::ids::{PermissionTicket, ResourceId, SecretKey};
use mydata_protocol::param::ParamCipher;

use crate::auth::CitizenClaims;
use crate::engine::dp_calls::spawn_fetch;
use crate::engine::outbound::{TLS_TARGET, Timing, check_scheme, tls_refusal};
use crate::engine::outcome::{end, forget, record_outcome};
use crate::engine::param_mode;
use crate::error::{ServerError, ServerResult};
use crate::observe::TX;
use crate::platform::Platform;
use crate::storage::{SpRecord, TxRecord, state};

/// SP-API connect timeout (spec §7, D22); the default of `sp_api_connect_timeout_secs`.
pub const SP_API_CONNECT: Duration = Duration::from_secs(15);
/// SP-API total timeout (spec §7, D22); the default of `sp_api_timeout_secs`.
pub const SP_API_TOTAL: Duration = Duration::from_secs(30);

/// The SP-API call and what follows consent. Returns the code the citizen is sent back with:
/// 200 when the SP acknowledged (the DPs are then called in the background), 410 otherwise.
pub async fn consent(
    p: Arc<Platform>,
    mut tx: TxRecord,
    citizen: CitizenClaims,
) -> ServerResult<ReturnCode> {
    let sp = p
        .store
        .get_sp(&tx.client_id)?
        .ok_or_else(|| ServerError::NotFound(format!("service {}", tx.client_id)))?;
    let secrets = p.sp_secrets(&sp)?;
    let ticket = PermissionTicket::generate()?;
    let secret_key = SecretKey::generate()?;
    let cipher = ParamCipher::new(&secrets.client_secret, &secrets.cbc_iv, param_mode(&sp));
    let body = SpApiBody {
        tx_id: tx.tx_id.parse()?,
        api_key: secrets.api_key.clone(),
        permission_ticket: ticket.clone(),
        delivery: SpApiDelivery::SecretKey(cipher.encrypt(secret_key.as_str())?),
    };
    // The ticket is recorded before the call: the SP holds it as soon as the body arrives, and
    // a poll that races the acknowledgement (an SP that polls as it answers 200) must get 429,
    // not 403 (D22, D25). Until the DPs have been called no package can be ready, so nothing
    // is served early; a failed call withdraws the ticket below.
    let now = p.now();
    tx.state = state::CALLING_SP;
    tx.code = Some(200);
    tx.ticket_hash = Some(p.ticket_hash(ticket.as_str()));
    tx.secret_key_sealed = Some(
        p.key
            .seal(&format!("tx:{}:secret_key", tx.id), secret_key.as_str())?,
    );
    tx.citizen_sealed = Some(p.key.seal(
        &format!("tx:{}:citizen", tx.id),
        &serde_json::to_string(&citizen).map_err(|e| ServerError::Internal(e.to_string()))?,
    )?);
    tx.sp_api_ack = false;
    tx.consent_at = Some(now.0);
    tx.purge_at = flow::retention_deadline(now).0;
    {
        // Consent is taken once: of two consent posts racing on two workers (a double click,
        // two tabs), one moves the transaction on and calls the SP-API; the other finds it
        // moved and gets `Conflict` (the page then shows the transaction as it is).
        let _held = p.tx_lock(&tx.id);
        match p.store.get_tx(&tx.id)? {
            Some(now_stored) if now_stored.state == state::AUTHENTICATED => {}
            Some(now_stored) => {
                return Err(ServerError::Conflict(format!(
                    "transaction {}: consent already taken ({})",
                    tx.id, now_stored.state
                )));
            }
            None => return Err(ServerError::NotFound(format!("transaction {}", tx.id))),
        }
        p.store.update_tx(&tx)?;
    }
    tracing::info!(target: TX, event = "consent", tx = %tx.id, client_id = %tx.client_id, "consent given");
    p.metrics.consent();
    // Committed before the SP holds the ticket (D47): a crash after the call must not forget a
    // ticket that is out. The wait is off the HTTP worker.
    flush_off_worker(&p).await?;
    let acknowledged = post_sp_api(&p, &sp, &body).await;
    tracing::info!(
        target: TX,
        event = "sp_api",
        tx = %tx.id,
        client_id = %tx.client_id,
        acknowledged,
        "SP-API call {}",
        if acknowledged { "acknowledged" } else { "failed (410)" }
    );
    if !acknowledged {
        // The ticket never works (code 410): unknown to the MyData-API from here on (403).
        // Committed before the citizen is sent back with 410, so that no restart can bring the
        // ticket back (D47).
        tx.ticket_hash = None;
        end(&p, &mut tx, ReturnCode::SpApiFailed, p.now())?;
        flush_off_worker(&p).await?;
        return Ok(ReturnCode::SpApiFailed);
    }
    // Acknowledged: committed before the citizen is sent back with 200 and the DPs are called,
    // so that a restart resumes the transaction rather than ending it with 410 (D47). (A crash
    // between the SP's answer and this commit leaves `calling_sp`: 410 after the restart.)
    tx.state = state::FETCHING;
    tx.sp_api_ack = true;
    p.store.update_tx(&tx)?;
    record_outcome(
        &p,
        &tx,
        "return",
        ReturnCode::Success,
        p.subject_hash(&citizen.uid),
        p.now(),
    )?;
    flush_off_worker(&p).await?;
    let p2 = p.clone();
    spawn_fetch(p2, tx, citizen, sp);
    Ok(ReturnCode::Success)
}

/// [`Store::flush`](crate::storage::Store::flush) on the blocking pool.
async fn flush_off_worker(p: &Arc<Platform>) -> ServerResult<()> {
    let store = p.store.clone();
    actix_web::web::block(move || store.flush())
        .await
        .map_err(|e| ServerError::Internal(format!("flush: {e}")))?
}

/// How long an idle connection to an SP is kept for the next SP-API call: well under the
/// keep-alive of common servers (actix-web 5 s), since a POST that meets a connection the SP
/// has just closed would end the transaction with 410.
pub const SP_API_IDLE_KEEP: Duration = Duration::from_secs(2);

/// Posts an SP-API body (§7); whether the SP answered 200 or 201 (D22), within the
/// configured connect timeout (`sp_api_connect_timeout_secs`) and total time
/// (`sp_api_timeout_secs`). The worker thread's client keeps an SP's connection for the next
/// transaction ([`SP_API_IDLE_KEEP`]). Over HTTPS the SP's certificate is verified against
/// its pinned CA, or the system roots and `tls_ca_file`, and the platform's client certificate
/// is presented when the SP asks; plain `http://` is refused outside the sandbox (D49). A TLS
/// refusal is a failed call: 410 for a consent call (D22).
async fn post_sp_api(p: &Platform, sp: &SpRecord, body: &SpApiBody) -> bool {
    let config = &p.config;
    if let Err(why) = check_scheme(p.outbound.plain_http(), "sp_api_url", &sp.sp_api_url) {
        tracing::warn!(
            target: TLS_TARGET,
            client_id = %sp.client_id,
            "SP-API call not made: {why}; the call fails (410 after consent)"
        );
        return false;
    }
    let connect = Duration::from_secs(config.sp_api_connect_timeout_secs);
    let timing = Timing {
        connect,
        total: SP_API_TOTAL,
        keep_alive: SP_API_IDLE_KEEP,
    };
    let client = match p.outbound.client(timing, sp.tls_ca.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(
                target: TLS_TARGET,
                client_id = %sp.client_id,
                "SP-API call not made: the TLS settings of this service do not build: {e}"
            );
            return false;
        }
    };
    let total = Duration::from_secs(config.sp_api_timeout_secs);
    let deadline = Instant::now() + total;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match client
            .post(&sp.sp_api_url)
            .timeout(left)
            .insert_header(("Content-Type", "application/json; charset=utf-8"))
            .send_body(body.to_json())
            .await
        {
            Ok(r) => {
                let status = r.status().as_u16();
                if !matches!(status, 200 | 201) {
                    log::warn!(
                        "SP-API call of {} answered {status}; the transaction ends with 410",
                        sp.client_id
                    );
                }
                return matches!(status, 200 | 201);
            }
            // Out of file descriptors on this side: nothing reached the SP, so the call is
            // made again shortly, within the SP-API's total time (D22), rather than ending the
            // transaction with 410 at once.
            Err(e) if out_of_descriptors(&e) && Instant::now() + FD_RETRY_WAIT < deadline => {
                log::warn!(
                    "SP-API call of {}: out of file descriptors; retrying in {} ms",
                    sp.client_id,
                    FD_RETRY_WAIT.as_millis()
                );
                actix_web::rt::time::sleep(FD_RETRY_WAIT).await;
            }
            Err(e) => {
                if let Some(why) = tls_refusal(&e) {
                    tracing::warn!(
                        target: TLS_TARGET,
                        client_id = %sp.client_id,
                        "SP-API call refused by TLS: {why}; the call fails (410 after consent)"
                    );
                }
                log::warn!(
                    "SP-API call of {} failed: {e}; the transaction ends with 410",
                    sp.client_id
                );
                return false;
            }
        }
    }
}

/// The wait before an SP-API call that failed for lack of file descriptors is made again.
pub const FD_RETRY_WAIT: Duration = Duration::from_millis(250);

/// Whether a failed request never left this host because the process (or the system) ran out
/// of file descriptors (EMFILE, ENFILE).
fn out_of_descriptors(e: &awc::error::SendRequestError) -> bool {
    use awc::error::{ConnectError, SendRequestError};
    match e {
        SendRequestError::Connect(ConnectError::Io(io)) => {
            matches!(io.raw_os_error(), Some(23 | 24))
        }
        // The resolver's own socket, where its error keeps only the text.
        SendRequestError::Connect(ConnectError::Resolver(r)) => {
            let text = r.to_string();
            text.contains("os error 24") || text.contains("os error 23")
        }
        _ => false,
    }
}

/// §5.3 step 10: the transaction ends with `code` before authentication, and the SP-API is
/// called with `unable_to_deliver` (§7, D22). The ticket it carries answers the MyData-API as the
/// core decides for such tickets. A stored transaction with the same pair is replaced.
pub async fn undeliverable(
    p: &Arc<Platform>,
    sp: &SpRecord,
    tx_id: &mydata_protocol::ids::TxId,
    code: ReturnCode,
    unable: &[ResourceId],
    now: UnixTime,
) -> ServerResult<()> {
    if let Some(old) = p.store.find_tx(&sp.client_id, tx_id.as_str())? {
        forget(p, &old)?;
    }
    let secrets = p.sp_secrets(sp)?;
    let ticket = PermissionTicket::generate()?;
    let id = PermissionTicket::generate()?.as_str().to_string();
    let ids: Vec<&str> = unable.iter().map(|r| r.as_str()).collect();
    let mut tx = TxRecord {
        code: Some(code.wire() as i32),
        ticket_hash: Some(p.ticket_hash(ticket.as_str())),
        ..TxRecord::created(
            id,
            &sp.client_id,
            tx_id.as_str(),
            &ids,
            state::UNDELIVERABLE,
            now,
        )
    };
    p.store.insert_tx(&tx)?;
    // Committed before the SP-API call hands the ticket out (D47).
    flush_off_worker(p).await?;
    let body = SpApiBody {
        tx_id: tx_id.clone(),
        api_key: secrets.api_key.clone(),
        permission_ticket: ticket,
        delivery: SpApiDelivery::UnableToDeliver(unable.to_vec()),
    };
    tx.sp_api_ack = post_sp_api(p, sp, &body).await;
    tracing::info!(
        target: TX,
        event = "sp_api",
        tx = %tx.id,
        client_id = %tx.client_id,
        acknowledged = tx.sp_api_ack,
        unable_to_deliver = unable.len(),
        code = code.wire(),
        "SP-API call (unable to deliver) {}",
        if tx.sp_api_ack { "acknowledged" } else { "failed" }
    );
    p.metrics.tx_final(code.wire());
    p.store.update_tx(&tx)?;
    // The citizen is unknown at step 10 (no identifier is kept): no subject hash.
    record_outcome(p, &tx, "return", code, String::new(), now)?;
    Ok(())
}
