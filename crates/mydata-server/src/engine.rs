//! The online service after consent (spec §5.3 step 4, §7, §8, D22, D25, D37): the SP-API call,
//! the DP-API call series, packaging, taking the package, and the purge.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mydata_protocol::codes::{DatasetCode, ReturnCode};
use mydata_protocol::date::UnixTime;
use mydata_protocol::flow::{self, SpApiBody, SpApiDelivery, TicketFacts};
use mydata_protocol::ids::{ClientId, PermissionTicket, ResourceId, SecretKey};
use mydata_protocol::jwe::{self, ContentIv, JweMode};
use mydata_protocol::package::sp::{self, Dataset, Outcome, PackagingMode};
use mydata_protocol::param::{ParamCipher, ParamMode};
use serde::{Deserialize, Serialize};

use crate::auth::CitizenClaims;
use crate::config::Config;
use crate::dpcall;
use crate::error::{ServerError, ServerResult};
use crate::packages::Packages;
use crate::platform::{DeliveryLease, Platform};
use crate::storage::{SpRecord, TransferRecord, TxRecord};
use crate::trust::Anchors;

/// Seconds from consent to the purge of everything personal (D37): the core's constant.
pub use mydata_protocol::flow::RETENTION_SECS;
/// SP-API connect timeout (spec §7, D22); the default of `sp_api_connect_timeout_secs`.
pub const SP_API_CONNECT: Duration = Duration::from_secs(15);
/// SP-API total timeout (spec §7, D22); the default of `sp_api_timeout_secs`.
pub const SP_API_TOTAL: Duration = Duration::from_secs(30);

/// One dataset's result in a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetResult {
    /// The dataset.
    pub resource_id: String,
    /// Per-dataset code (`None` while its call series runs).
    pub code: Option<u16>,
    /// Calls made.
    pub calls: u32,
}

pub use crate::storage::state;

pub use crate::sources::SourceIndex;

/// Whether `sp` registered `ip` as a MyData-API source.
pub(crate) fn allows(sp: &SpRecord, ip: IpAddr) -> bool {
    sp.allowed_ips
        .iter()
        .any(|a| a.parse::<IpAddr>().is_ok_and(|a| a == ip))
}

/// The parameter cipher mode of a registration.
pub(crate) fn param_mode(sp: &SpRecord) -> ParamMode {
    if sp.jwe_mode == "gcm" {
        ParamMode::Gcm
    } else {
        ParamMode::Cbc
    }
}

fn jwe_mode(sp: &SpRecord) -> JweMode {
    if sp.jwe_mode == "gcm" {
        JweMode::Gcm
    } else {
        JweMode::Cbc
    }
}

/// The packaging mode of a registration.
pub(crate) fn packaging(sp: &SpRecord) -> PackagingMode {
    if sp.packaging_mode == "B" {
        PackagingMode::B
    } else {
        PackagingMode::A
    }
}

impl Platform {
    /// Keyed hash of a citizen identifier, for transfer records (D37).
    pub fn subject_hash(&self, pid: &str) -> String {
        hex::encode(self.key.keyed_hash(&[b"subject", pid.as_bytes()]))
    }

    /// The citizen's stable opaque `sub` (a UUID derived from a keyed hash of the identifier).
    pub fn citizen_sub(&self, pid: &str) -> String {
        let h = self.key.keyed_hash(&[b"sub", pid.as_bytes()]);
        let mut b = [0u8; 16];
        b.copy_from_slice(&h[..16]);
        PermissionTicket::from_random(b).as_str().to_string()
    }

    /// Keyed hash of a permission ticket (tickets are stored only this way).
    pub fn ticket_hash(&self, ticket: &str) -> String {
        hex::encode(
            self.key
                .keyed_hash(&[b"permission_ticket", ticket.as_bytes()]),
        )
    }

    /// Trust anchors for DP packages: the configured ones, plus the sandbox CA in sandbox
    /// mode; [`Anchors::Missing`] outside the sandbox without any (spec D35).
    pub fn dp_trust(&self) -> Anchors {
        self.dp_trust.anchors()
    }
}

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
    tx.state = state::CALLING_SP.into();
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
    // Committed before the SP holds the ticket (D47): a crash after the call must not forget a
    // ticket that is out. The wait is off the HTTP worker.
    flush_off_worker(&p).await?;
    if !post_sp_api(&p.config, &sp, &body).await {
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
    tx.state = state::FETCHING.into();
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

thread_local! {
    static SP_API_CLIENT: std::cell::RefCell<Option<(Duration, awc::Client)>> =
        const { std::cell::RefCell::new(None) };
}

/// This worker thread's SP-API client with this connect timeout (a new pool when the thread's
/// client has another). It follows no redirect (D22).
fn sp_api_client(connect: Duration) -> awc::Client {
    SP_API_CLIENT.with(|slot| {
        let mut slot = slot.borrow_mut();
        match &*slot {
            Some((c, client)) if *c == connect => client.clone(),
            _ => {
                let client = awc::Client::builder()
                    .timeout(SP_API_TOTAL)
                    .connector(
                        awc::Connector::new()
                            .timeout(connect)
                            .conn_keep_alive(SP_API_IDLE_KEEP),
                    )
                    .disable_redirects()
                    .finish();
                *slot = Some((connect, client.clone()));
                client
            }
        }
    })
}

/// After a restart (spec D47): the transactions whose DP calls were running when the process
/// stopped (state `fetching`), and the ready ones whose package was kept in memory and is gone
/// with it, are fetched again: their old tokens are revoked, the DPs are called anew and the
/// package is rebuilt, under the ticket the SP already holds. One whose citizen claims or SP
/// registration cannot be had ends with 504. Returns how many were resumed. Call it on the actix
/// runtime, before serving: the DP calls are spawned on it.
pub fn resume(p: &Arc<Platform>) -> ServerResult<usize> {
    // The SP-API call's outcome was never recorded: the ticket stays withdrawn and the
    // transaction ends with 410, as a failed call would have ended it (D47). No DP is called.
    for mut tx in p.store.txs_in_state(state::CALLING_SP)? {
        p.revoke_transaction_tokens(&tx.id)?;
        tx.ticket_hash = None;
        tx.package_path = None;
        log::warn!(
            "transaction {}: stopped during its SP-API call; ended with 410",
            tx.id
        );
        end(p, &mut tx, ReturnCode::SpApiFailed, p.now())?;
    }
    let mut todo = p.store.txs_in_state(state::FETCHING)?;
    for tx in p.store.txs_in_state(state::READY)? {
        if tx
            .package_path
            .as_deref()
            .is_some_and(|path| !p.packages.holds(path))
        {
            todo.push(tx);
        }
    }
    let mut resumed = Vec::new();
    for mut tx in todo {
        let citizen = tx
            .citizen_sealed
            .as_deref()
            .and_then(|s| p.key.open(&format!("tx:{}:citizen", tx.id), s).ok())
            .and_then(|json| serde_json::from_str::<CitizenClaims>(&json).ok());
        let sp = p.store.get_sp(&tx.client_id)?;
        p.revoke_transaction_tokens(&tx.id)?;
        let (Some(citizen), Some(sp)) = (citizen, sp) else {
            log::warn!("transaction {}: cannot be resumed; ended with 504", tx.id);
            tx.package_path = None;
            end(p, &mut tx, ReturnCode::DpSystemError, p.now())?;
            continue;
        };
        tx.state = state::FETCHING.into();
        tx.code = Some(200);
        tx.package_path = None;
        tx.datasets = "[]".into();
        p.store.update_tx(&tx)?;
        resumed.push((tx, citizen, sp));
    }
    // Every ending above is committed before anything is served or called (D47).
    p.store.flush()?;
    let n = resumed.len();
    for (tx, citizen, sp) in resumed {
        spawn_fetch(p.clone(), tx, citizen, sp);
    }
    Ok(n)
}

/// Posts an SP-API body (§7); whether the SP answered 200 or 201 (D22), within the
/// configured connect timeout (`sp_api_connect_timeout_secs`) and total time
/// (`sp_api_timeout_secs`). The worker thread's client keeps an SP's connection for the next
/// transaction ([`SP_API_IDLE_KEEP`]).
async fn post_sp_api(config: &Config, sp: &SpRecord, body: &SpApiBody) -> bool {
    let client = sp_api_client(Duration::from_secs(config.sp_api_connect_timeout_secs));
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
        id,
        client_id: sp.client_id.clone(),
        tx_id: tx_id.as_str().to_string(),
        state: state::UNDELIVERABLE.into(),
        code: Some(code.wire() as i32),
        resources: serde_json::to_string(&ids).map_err(|e| ServerError::Internal(e.to_string()))?,
        return_query: None,
        case_number: None,
        pid_sealed: None,
        citizen_sealed: None,
        identity_method: None,
        ticket_hash: Some(p.ticket_hash(ticket.as_str())),
        secret_key_sealed: None,
        sp_api_ack: false,
        datasets: "[]".into(),
        package_path: None,
        created_at: now.0,
        consent_at: None,
        taken_at: None,
        purge_at: now.0 + flow::RECORD_LIFETIME_SECS,
        return_url: None,
        last_activity: now.0,
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
    tx.sp_api_ack = post_sp_api(&p.config, sp, &body).await;
    p.store.update_tx(&tx)?;
    // The citizen is unknown at step 10 (no identifier is kept): no subject hash.
    record_outcome(p, &tx, "return", code, String::new(), now)?;
    Ok(())
}

/// Deletes one transaction at once, with its package (wherever it is) and tokens (a record more
/// than 8 hours old whose pair is reused, D19; the purge). Under the transaction's lock, so that
/// no DP answer or package of it is written after this (they check the transaction under the
/// same lock).
pub fn forget(p: &Platform, tx: &TxRecord) -> ServerResult<()> {
    let _held = p.tx_lock(&tx.id);
    p.packages.discard(&tx.id);
    p.revoke_transaction_tokens(&tx.id)?;
    p.store.delete_tx(&tx.id)
}

/// Ends a transaction with `code`; its personal data goes at once (D37).
pub fn end(p: &Platform, tx: &mut TxRecord, code: ReturnCode, now: UnixTime) -> ServerResult<()> {
    // The transfer record of the ending (§14), with the citizen's keyed hash taken before the
    // identifier goes: `return` when this is the code the SP is sent back with, `ended` when
    // the SP had already been told 200 (a 504 after consent).
    let kind = if tx.sp_api_ack { "ended" } else { "return" };
    let subject = subject_of(p, tx);
    record_outcome(p, tx, kind, code, subject, now)?;
    tx.state = state::ENDED.into();
    tx.code = Some(code.wire() as i32);
    tx.pid_sealed = None;
    tx.citizen_sealed = None;
    tx.secret_key_sealed = None;
    tx.return_url = None;
    tx.purge_at = tx.purge_at.min(flow::retention_deadline(now).0);
    p.store.update_tx(tx)
}

/// The keyed hash of the transaction's citizen (D37), from the sealed identifier or claims; empty
/// when the transaction holds neither (a redirect refused before the citizen was known).
fn subject_of(p: &Platform, tx: &TxRecord) -> String {
    let pid = tx
        .pid_sealed
        .as_deref()
        .and_then(|s| p.key.open(&format!("tx:{}:pid", tx.id), s).ok())
        .or_else(|| {
            let text = tx
                .citizen_sealed
                .as_deref()
                .and_then(|s| p.key.open(&format!("tx:{}:citizen", tx.id), s).ok())?;
            serde_json::from_str::<CitizenClaims>(&text)
                .ok()
                .map(|c| c.uid)
        });
    pid.map(|pid| p.subject_hash(&pid)).unwrap_or_default()
}

/// Writes a transaction-level transfer record (§14): `kind` with the return code, every
/// requested resource_id (comma-separated), `caseNumber` and the identity method.
fn record_outcome(
    p: &Platform,
    tx: &TxRecord,
    kind: &str,
    code: ReturnCode,
    subject_hash: String,
    now: UnixTime,
) -> ServerResult<()> {
    let ids = resources(tx).unwrap_or_default().join(",");
    p.store.insert_transfer(&TransferRecord {
        at: now.0,
        kind: kind.into(),
        client_id: tx.client_id.clone(),
        resource_id: (!ids.is_empty()).then_some(ids),
        subject_hash,
        code: code.wire() as i32,
        case_number: tx.case_number.clone(),
        identity_method: tx.identity_method.clone(),
    })
}

fn resources(tx: &TxRecord) -> ServerResult<Vec<String>> {
    serde_json::from_str(&tx.resources)
        .map_err(|e| ServerError::Storage(format!("transaction resources: {e}")))
}

/// Calls every DP of a consented transaction, then builds and stores the SP package. Never
/// leaves the transaction fetching for ever: a failure of the platform's own (not a DP's) ends
/// it with 504, logged with its cause.
/// Spawns [`fetch_and_package`], counted as running from now on.
fn spawn_fetch(p: Arc<Platform>, tx: TxRecord, citizen: CitizenClaims, sp: SpRecord) {
    let running = p.fetch_started();
    actix_web::rt::spawn(async move {
        fetch_and_package(p, tx, citizen, sp).await;
        drop(running);
    });
}

async fn fetch_and_package(p: Arc<Platform>, tx: TxRecord, citizen: CitizenClaims, sp: SpRecord) {
    let id = tx.id.clone();
    let Err(e) = fetch_and_package_inner(&p, tx, citizen, sp).await else {
        return;
    };
    log::error!("transaction {id}: packaging failed: {e}; ended with 504");
    let ended = (|| {
        let _held = p.tx_lock(&id);
        match p.store.get_tx(&id)? {
            Some(mut t) if t.state == state::FETCHING => {
                t.package_path = None;
                end(&p, &mut t, ReturnCode::DpSystemError, p.now())
            }
            _ => Ok(()),
        }
    })();
    if let Err(e) = ended {
        log::error!("transaction {id}: could not be ended with 504: {e}");
    }
}

/// One dataset's call series as `fetch_and_package` collects it.
type SeriesOutcome = (
    String,
    String,
    DatasetCode,
    Option<actix_web::web::Bytes>,
    u32,
);

/// Whether transaction `id` is still waiting for its DPs (not purged, not ended). Call it
/// holding the transaction's lock.
fn still_fetching(p: &Platform, id: &str) -> ServerResult<bool> {
    Ok(p.store
        .get_tx(id)?
        .is_some_and(|t| t.state == state::FETCHING))
}

/// One dataset's call series: its token, the calls, the token's end. `None` when the
/// transaction ended (or was purged) before the series could start: nothing was issued.
async fn call_dataset(
    p: &Arc<Platform>,
    tx_id: &str,
    client_id: &str,
    rid: &str,
    citizen: &CitizenClaims,
    trust: Anchors,
) -> ServerResult<Option<SeriesOutcome>> {
    let Some(dp) = p.store.get_dp(rid)? else {
        log::warn!("transaction {tx_id}: dataset {rid} is not registered; code 500");
        return Ok(Some((
            rid.into(),
            String::new(),
            DatasetCode::DpError,
            None,
            0,
        )));
    };
    if dp.status != "active" {
        return Ok(Some((
            rid.into(),
            dp.name,
            DatasetCode::DpServiceStopped,
            None,
            0,
        )));
    }
    let trust = match trust {
        Anchors::Configured(a) => a,
        // No anchor outside the sandbox: no package could be trusted, so the DP is not asked
        // for personal data it would send in vain (D35; `http::server` refuses to start so).
        Anchors::Missing => {
            log::error!(
                "transaction {tx_id}: dataset {rid}: no DP trust anchors configured \
                 (dp_trust_anchors); code 500"
            );
            return Ok(Some((rid.into(), dp.name, DatasetCode::DpError, None, 0)));
        }
    };
    let transaction_uid = PermissionTicket::generate()?.as_str().to_string();
    let token = {
        // Under the transaction's lock: a purge either happened before (no token is issued)
        // or revokes this token (D37).
        let _held = p.tx_lock(tx_id);
        if !still_fetching(p, tx_id)? {
            return Ok(None);
        }
        // A dataset registered or changed by another process since this one started (D47).
        p.sync_dataset(&dp)?;
        p.issue_token(tx_id, client_id, rid, &transaction_uid, citizen)?
    };
    // Citizen-entered parameters (D28 `{{param:KEY}}`) are not collected yet: they render
    // empty.
    let values = dpcall::values_for(&dp, &transaction_uid, citizen, Default::default());
    let limits = dpcall::CallLimits::from_config(&p.config);
    let client = dpcall::shared_client_for(limits.connect);
    let r = dpcall::run_series_limited(
        &client,
        &p.clock,
        &dp,
        &token.token,
        &values,
        Some(trust),
        &limits,
    )
    .await;
    // The end of the call series ends the token's life (spec §10.1).
    p.auth.revoke_hash(&token.record.token_hash)?;
    p.store.delete_token(&token.record.token_hash)?;
    Ok(Some((rid.into(), dp.name, r.code, r.package, r.calls)))
}

async fn fetch_and_package_inner(
    p: &Arc<Platform>,
    tx: TxRecord,
    citizen: CitizenClaims,
    sp: SpRecord,
) -> ServerResult<()> {
    let ids = resources(&tx)?;
    let trust = p.dp_trust();
    let subject = p.subject_hash(&citizen.uid);
    let mut handles = Vec::new();
    for rid in ids.clone() {
        let p = p.clone();
        let citizen = citizen.clone();
        let tx_id = tx.id.clone();
        let client_id = tx.client_id.clone();
        let trust = trust.clone();
        handles.push(actix_web::rt::spawn(async move {
            match call_dataset(&p, &tx_id, &client_id, &rid, &citizen, trust).await {
                Ok(r) => r,
                // The platform could not start or finish the series: the dataset fails with
                // 500 and the operator sees why; the others go on.
                Err(e) => {
                    log::error!("transaction {tx_id}: dataset {rid}: {e}; code 500");
                    Some((rid, String::new(), DatasetCode::DpError, None, 0))
                }
            }
        }));
    }
    let mut results = Vec::new();
    let mut ended = false;
    for h in handles {
        match h
            .await
            .map_err(|e| ServerError::Internal(format!("DP task: {e}")))?
        {
            Some(r) => results.push(r),
            None => ended = true,
        }
    }
    if ended {
        // Ended or purged before every series could start: nothing of it is written.
        return Ok(());
    }
    // Build the SP package (spec §11, D10).
    let mut readers: Vec<std::io::Cursor<Vec<u8>>> = results
        .iter()
        .map(|(_, _, _, pkg, _)| {
            std::io::Cursor::new(pkg.as_ref().map(|b| b.to_vec()).unwrap_or_default())
        })
        .collect();
    let mut datasets = Vec::new();
    for ((rid, name, code, pkg, _), reader) in results.iter().zip(readers.iter_mut()) {
        let outcome = match (code, pkg) {
            (DatasetCode::Delivered, Some(_)) => Outcome::Package(reader),
            (DatasetCode::NoData, _) => Outcome::NoData,
            (c, _) => Outcome::Failed(*c),
        };
        datasets.push(Dataset {
            resource_id: rid.parse::<ResourceId>()?,
            resource_name: name.clone(),
            outcome,
        });
    }
    let (zip, _summary) = sp::build(std::io::Cursor::new(Vec::new()), packaging(&sp), datasets)?;
    drop(readers);
    let all_failed = results
        .iter()
        .all(|(_, _, c, _, _)| !matches!(c, DatasetCode::Delivered | DatasetCode::NoData));
    let dataset_results = serde_json::to_string(
        &results
            .iter()
            .map(|(rid, _, c, _, calls)| DatasetResult {
                resource_id: rid.clone(),
                code: Some(c.wire()),
                calls: *calls,
            })
            .collect::<Vec<_>>(),
    )
    .map_err(|e| ServerError::Internal(e.to_string()))?;
    // Under the transaction's lock: a transaction purged or ended while its DPs answered gets
    // no package, in memory or in a file (D37).
    {
        let _held = p.tx_lock(&tx.id);
        match p
            .store
            .get_tx(&tx.id)?
            .filter(|t| t.state == state::FETCHING)
        {
            Some(mut live) => {
                let rel = p.packages.put(&live.id, zip.into_inner())?;
                live.datasets = dataset_results;
                live.state = state::READY.into();
                live.code = Some(if all_failed { 504 } else { 200 });
                live.package_path = Some(rel);
                if let Err(e) = p.store.update_tx(&live) {
                    p.packages.discard(&live.id);
                    return Err(e);
                }
            }
            None => log::info!(
                "transaction {}: ended while fetching; its DP answers are dropped",
                tx.id
            ),
        }
    }
    // The calls are recorded either way (keyed hash only, D37), once their outcome is settled.
    let now = p.now();
    for (rid, _, code, _, _) in &results {
        p.store.insert_transfer(&TransferRecord {
            at: now.0,
            kind: "dp_call".into(),
            client_id: tx.client_id.clone(),
            resource_id: Some(rid.clone()),
            subject_hash: subject.clone(),
            code: code.wire() as i32,
            case_number: tx.case_number.clone(),
            identity_method: tx.identity_method.clone(),
        })?;
    }
    Ok(())
}

/// The MyData-API answer (spec §8.1): the core's decision, with the package on 200.
#[derive(Debug)]
pub enum DataAnswer {
    /// Any answer other than 200 (401, 400, 403, 201, 504, 429).
    Status(flow::DataAnswer),
    /// 200 with this delivery: its JWE is the body, and the package is taken only once the
    /// body has been written ([`Delivered::complete`]).
    Ready(Delivery),
    /// Another poll is serving this package right now: answered 429 (`Retry-After: 5`) unless
    /// that delivery completes within a moment, when the answer is 201 (D25).
    Busy,
}

/// Answers `GET /service/data` up to the body: [`data_decide`] then, on 200, [`prepare`].
pub fn data(
    p: &Arc<Platform>,
    source: std::net::IpAddr,
    ticket: Option<&str>,
    tx_id: Option<&str>,
) -> ServerResult<DataAnswer> {
    match data_decide(p, source, ticket, tx_id)? {
        DataStep::Answer(a) => Ok(a),
        DataStep::Take(t) => prepare(p, *t),
    }
}

/// The first half of `GET /service/data`: lookups and the core's decision.
#[derive(Debug)]
pub enum DataStep {
    /// Anything but 200: the answer.
    Answer(DataAnswer),
    /// 200: the package is to be served ([`prepare`]).
    Take(Box<Take>),
}

/// A package about to be served: the transaction and its SP, the time of the decision, and
/// the lease that keeps a second poll from serving it at the same time.
#[derive(Debug)]
pub struct Take {
    tx: TxRecord,
    sp: SpRecord,
    now: UnixTime,
    lease: DeliveryLease,
}

/// Decides `GET /service/data` with lookups only (no file, no write): from memory when the
/// store keeps live transactions there ([`Store::memory_first`](crate::storage::Store::memory_first)),
/// so the HTTP layer may call it on its workers.
pub fn data_decide(
    p: &Arc<Platform>,
    source: std::net::IpAddr,
    ticket: Option<&str>,
    tx_id: Option<&str>,
) -> ServerResult<DataStep> {
    // The ticket's transaction and its SP: one lookup each, never a scan of every SP.
    let lookup = |t: &PermissionTicket| -> ServerResult<(Option<TxRecord>, Option<SpRecord>)> {
        let tx = p.store.find_tx_by_ticket(&p.ticket_hash(t.as_str()))?;
        let sp = match &tx {
            Some(tx) => p.store.get_sp(&tx.client_id)?,
            None => None,
        };
        Ok((tx, sp))
    };
    let mut registered = p.source_registered(source)?;
    let mut early = None;
    if !registered && let Ok(Some(t)) = flow::data_ticket(true, ticket) {
        // An SP registered by another process on the same database since the index was last
        // rebuilt: learn it from the ticket it presents.
        let (tx, sp) = lookup(&t)?;
        if let Some(sp) = sp.as_ref().filter(|s| allows(s, source)) {
            p.sp_sources.insert(sp);
            registered = true;
        }
        early = Some((tx, sp));
    }
    let now = p.now();
    let (found, sp) = match flow::data_ticket(registered, ticket) {
        Err(answer) => return Ok(DataStep::Answer(DataAnswer::Status(answer))),
        Ok(None) => (None, None),
        Ok(Some(t)) => match early {
            Some(l) => l,
            None => lookup(&t)?,
        },
    };
    let sp = sp.as_ref();
    let facts = match (&found, sp) {
        (Some(tx), Some(sp)) => Some(TicketFacts {
            service_allows_ip: allows(sp, source),
            tx_id: tx.tx_id.parse()?,
            created_at: UnixTime(tx.created_at),
            consent_at: tx.consent_at.map(UnixTime),
            // A ticket is live from the moment the SP-API call sends it (D25).
            sp_api_acknowledged: tx.sp_api_ack || tx.state == state::CALLING_SP,
            unable_to_deliver: tx.state == state::UNDELIVERABLE,
            all_failed: tx.state == state::ENDED
                || (tx.state == state::READY && tx.code == Some(504)),
            taken: tx.state == state::TAKEN,
            ready: tx.state == state::READY,
            retry_estimate: Some(5),
        }),
        _ => None,
    };
    let answer = flow::data_answer(registered, ticket, tx_id, facts.as_ref(), now);
    let (Some(tx), Some(sp), flow::DataAnswer::Ready200) = (found, sp, answer) else {
        return Ok(DataStep::Answer(DataAnswer::Status(answer)));
    };
    // One delivery at a time: while another poll's body is being written, this one waits
    // (429), and gets 201 once that delivery has completed (D25).
    let Some(lease) = p.lease_delivery(&tx.id) else {
        return Ok(DataStep::Answer(DataAnswer::Busy));
    };
    Ok(DataStep::Take(Box::new(Take {
        tx,
        sp: sp.clone(),
        now,
        lease,
    })))
}

/// The second half of a 200 on `GET /service/data`: reads the package (leaving it in place)
/// and encrypts it for the SP. Blocking: file I/O. The package is taken only when the body has
/// been written completely ([`Delivery::complete`]); a delivery dropped before that leaves it
/// available for the next poll (D25).
pub fn prepare(p: &Arc<Platform>, t: Take) -> ServerResult<DataAnswer> {
    let Take {
        mut tx,
        sp,
        now,
        lease,
    } = t;
    let sp = &sp;
    let rel = tx
        .package_path
        .clone()
        .ok_or_else(|| ServerError::Internal("ready without a package".into()))?;
    let Some(zip) = p.packages.get(&rel)? else {
        // Kept in memory and lost with a restart (D47): the transaction ends as one whose
        // datasets all failed, rather than answering 500 until the purge.
        log::warn!("transaction {}: its package is gone; ended with 504", tx.id);
        let _held = p.tx_lock(&tx.id);
        tx.package_path = None;
        end(p, &mut tx, ReturnCode::DpSystemError, now)?;
        p.store.flush()?;
        return Ok(DataAnswer::Status(flow::DataAnswer::AllFailed504));
    };
    let key: SecretKey = p
        .key
        .open(
            &format!("tx:{}:secret_key", tx.id),
            tx.secret_key_sealed.as_deref().unwrap_or_default(),
        )?
        .parse()?;
    let secrets = p.sp_secrets(sp)?;
    let client_id: ClientId = tx.client_id.parse()?;
    // The CBC content IV: the SP's cbc_iv unless the platform option asks for a random one
    // (D2, §12); a GCM JWE's IV is random either way.
    let content_iv = if p.config.jwe_random_iv {
        ContentIv::Random
    } else {
        ContentIv::SpCbcIv(&secrets.cbc_iv)
    };
    let jwe = jwe::encrypt_package(&client_id, &zip, &key, jwe_mode(sp), content_iv)?;
    Ok(DataAnswer::Ready(Delivery {
        jwe,
        id: tx.id,
        now,
        lease,
    }))
}

/// A package being served on a 200. [`Delivery::complete`] takes it once the body has been
/// written; dropped without that (the connection failed), it stays available (D25).
#[derive(Debug)]
pub struct Delivery {
    jwe: String,
    id: String,
    now: UnixTime,
    lease: DeliveryLease,
}

impl Delivery {
    /// The response body: the compact JWE.
    pub fn jwe(&self) -> &str {
        &self.jwe
    }

    /// Splits off the body, keeping what [`Delivery::complete`] needs.
    pub fn into_body(self) -> (String, Delivered) {
        (
            self.jwe,
            Delivered {
                id: self.id,
                now: self.now,
                lease: self.lease,
            },
        )
    }
}

/// What remains of a [`Delivery`] while its body is written: call [`Delivered::complete`] once
/// the whole body has been written; drop it if writing failed.
#[derive(Debug)]
pub struct Delivered {
    id: String,
    now: UnixTime,
    lease: DeliveryLease,
}

impl Delivered {
    /// The body was written completely: the package and the transaction's personal data go,
    /// the delivery is recorded, and all that is committed (D25, D37, D47). Blocking: a file
    /// removal and a flush. A transaction purged meanwhile is left as the purge left it.
    pub fn complete(self, p: &Platform) -> ServerResult<()> {
        let lease = self.take(p)?;
        let r = p.store.flush();
        drop(lease);
        r
    }

    /// The first half of [`Delivered::complete`], without the flush: the transaction is taken
    /// (in memory, with the write-behind store), and the lease is handed back to be dropped
    /// once the write is committed. Cheap enough for an HTTP worker when the store answers
    /// from memory, so that an SP polling again at once already gets 201.
    pub fn take(self, p: &Platform) -> ServerResult<DeliveryLease> {
        let Delivered { id, now, lease } = self;
        let _held = p.tx_lock(&id);
        let Some(mut tx) = p.store.get_tx(&id)?.filter(|t| t.state == state::READY) else {
            return Ok(lease);
        };
        let subject = tx
            .pid_sealed
            .as_deref()
            .and_then(|s| p.key.open(&format!("tx:{}:pid", tx.id), s).ok())
            .map(|pid| p.subject_hash(&pid))
            .unwrap_or_default();
        p.packages.discard(&id);
        p.revoke_transaction_tokens(&tx.id)?;
        tx.state = state::TAKEN.into();
        tx.code = Some(201);
        tx.taken_at = Some(now.0);
        tx.package_path = None;
        tx.pid_sealed = None;
        tx.citizen_sealed = None;
        tx.secret_key_sealed = None;
        tx.return_url = None;
        p.store.update_tx(&tx)?;
        p.store.insert_transfer(&TransferRecord {
            at: now.0,
            kind: "delivery".into(),
            client_id: tx.client_id.clone(),
            resource_id: None,
            subject_hash: subject,
            code: 200,
            case_number: tx.case_number.clone(),
            identity_method: tx.identity_method.clone(),
        })?;
        Ok(lease)
    }
}

/// The core's view of a stored transaction (the one conversion from stored states): `ready`
/// with code 504 is a package found lost (ended 504), an ended or undeliverable transaction is
/// `Ended` with its code.
pub fn tx_state(tx: &TxRecord) -> flow::TxState {
    use flow::TxState;
    match (tx.state.as_str(), tx.code) {
        (state::REDIRECTED, _) => TxState::Redirected,
        (state::AUTHENTICATED, _) => TxState::Authenticated,
        (state::CALLING_SP | state::FETCHING, _) => TxState::Consented,
        (state::READY, Some(504)) => TxState::Ended(ReturnCode::DpSystemError),
        (state::READY, _) => TxState::Ready,
        (state::TAKEN, _) => TxState::Taken,
        (_, c) => TxState::Ended(
            c.and_then(|c| u16::try_from(c).ok())
                .and_then(ReturnCode::from_wire)
                .unwrap_or(ReturnCode::BadRequest),
        ),
    }
}

/// What `txid_status` reports for a stored transaction at `now` (§8.3): [`tx_state`], except
/// that a transaction whose time before consent has run out is 408 at once, before the purge
/// ends it (D21).
pub fn reported_state(tx: &TxRecord, now: UnixTime) -> flow::TxState {
    if expired_before_consent(tx, now) {
        return flow::TxState::Ended(ReturnCode::Timeout);
    }
    tx_state(tx)
}

/// Whether a transaction is before consent and its time has run out (1,200 s idle or 3,600 s
/// in all, D21).
pub fn expired_before_consent(tx: &TxRecord, now: UnixTime) -> bool {
    tx_state(tx).is_before_consent()
        && flow::pre_consent_expired(
            UnixTime(tx.created_at),
            UnixTime(tx.last_activity.max(tx.created_at)),
            now,
        )
}

/// Ends with 408 every transaction whose time before consent ran out, so that its `pid` goes
/// when it ends (D37) and txid_status says 408 (D21), however the citizen left. Returns how many.
fn expire_before_consent(p: &Platform) -> ServerResult<usize> {
    let now = p.now();
    let mut n = 0;
    for st in [state::REDIRECTED, state::AUTHENTICATED] {
        for tx in p.store.txs_in_state(st)? {
            if !expired_before_consent(&tx, now) {
                continue;
            }
            let _held = p.tx_lock(&tx.id);
            // Read again under the lock: the citizen may have moved on since the scan.
            if let Some(mut t) = p.store.get_tx(&tx.id)?
                && expired_before_consent(&t, now)
            {
                end(p, &mut t, ReturnCode::Timeout, now)?;
                n += 1;
            }
        }
    }
    Ok(n)
}

/// What a purge did (spec D37): transactions deleted, orphaned package files removed, and what
/// it could not erase (empty when everything went).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PurgeReport {
    /// Transactions ended with 408 because their time before consent ran out (D21): their
    /// personal data goes now (D37); the record stays until its 8 hours (D19).
    pub expired: usize,
    /// Transactions deleted with their packages and tokens.
    pub purged: usize,
    /// Package files that belonged to no waiting transaction, removed.
    pub orphans: usize,
    /// What could not be erased, one line each (a file, the database log).
    pub not_erased: Vec<String>,
}

impl PurgeReport {
    /// Whether everything due was erased.
    pub fn complete(&self) -> bool {
        self.not_erased.is_empty()
    }
}

/// Deletes every transaction whose deadline has passed, with its package and tokens, removes
/// package files no waiting transaction owns, then has the database erase the deleted rows
/// from its files (D37, D45). Reports what it could not erase rather than failing half-way.
pub fn purge(p: &Platform) -> ServerResult<PurgeReport> {
    let mut report = PurgeReport {
        expired: expire_before_consent(p)?,
        ..PurgeReport::default()
    };
    let due = p.store.txs_due(p.now())?;
    for tx in &due {
        match forget(p, tx) {
            Ok(()) => report.purged += 1,
            Err(e) => report
                .not_erased
                .push(format!("transaction {}: {e}", tx.id)),
        }
    }
    p.store.delete_expired_tokens(p.now())?;
    for id in p.packages.files()? {
        let _held = p.tx_lock(&id);
        let owned = p.store.get_tx(&id)?.is_some_and(|t| {
            t.state == state::READY
                && t.package_path.as_deref() == Some(Packages::file_path(&id).as_str())
        });
        if owned {
            continue;
        }
        match p.packages.discard_file(&id) {
            Ok(()) => report.orphans += 1,
            Err(e) => report.not_erased.push(e.to_string()),
        }
    }
    // Every time, not only when something was due: a log an earlier purge could not truncate
    // is truncated now.
    if let Err(e) = p.store.checkpoint() {
        report.not_erased.push(format!("database log: {e}"));
    }
    for line in &report.not_erased {
        log::error!("purge: not erased: {line}");
    }
    Ok(report)
}
