//! The MyData-API (spec §8): `GET /service/data` ([`data`]: the core's decision, then the
//! package as a JWE, taken once its body has been written) and the status lookups of
//! `txid_status` and `type_valid` ([`status`]).

use std::sync::Arc;

use mydata_protocol::codes::{IdentityMethod, ReturnCode};
use mydata_protocol::date::UnixTime;
use mydata_protocol::flow::{self, TicketFacts};
use mydata_protocol::ids::{ClientId, PermissionTicket, SecretKey, TxId};
use mydata_protocol::jwe::{self, ContentIv};
use serde_json::json;

use crate::engine::outcome::end;
use crate::engine::retention::reported_state;
use crate::engine::{Caller, allows};
use crate::error::{ServerError, ServerResult};
use crate::observe::TX;
use crate::platform::{DeliveryLease, Platform};
use crate::storage::{SpRecord, TransferRecord, TxRecord, state};

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
    source: impl Into<Caller>,
    ticket: Option<&str>,
    tx_id: Option<&str>,
) -> ServerResult<DataAnswer> {
    match data_decide(p, source.into(), ticket, tx_id)? {
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
    source: impl Into<Caller>,
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
    let source: Caller = source.into();
    let mut registered = p.source_registered(source.ip)?;
    let mut early = None;
    if !registered && let Ok(Some(t)) = flow::data_ticket(true, ticket) {
        // An SP registered by another process on the same database since the index was last
        // rebuilt: learn it from the ticket it presents.
        let (tx, sp) = lookup(&t)?;
        if let Some(sp) = sp.as_ref().filter(|s| allows(s, &source)) {
            p.sp_sources.insert(sp);
            registered = true;
        }
        early = Some((tx, sp));
    }
    let now = p.now();
    let (found, sp) = match flow::data_ticket(registered, ticket) {
        Err(answer) => {
            polled(p, None, answer.status());
            return Ok(DataStep::Answer(DataAnswer::Status(answer)));
        }
        Ok(None) => (None, None),
        Ok(Some(t)) => match early {
            Some(l) => l,
            None => lookup(&t)?,
        },
    };
    let sp = sp.as_ref();
    let facts = match (&found, sp) {
        (Some(tx), Some(sp)) => Some(TicketFacts {
            service_allows_ip: allows(sp, &source),
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
    let (Some(tx), Some(sp), flow::DataAnswer::Ready200) = (found.as_ref(), sp, answer) else {
        polled(p, found.as_ref(), answer.status());
        return Ok(DataStep::Answer(DataAnswer::Status(answer)));
    };
    // One delivery at a time: while another poll's body is being written, this one waits
    // (429), and gets 201 once that delivery has completed (D25).
    let Some(lease) = p.lease_delivery(&tx.id) else {
        polled(p, Some(tx), 429);
        return Ok(DataStep::Answer(DataAnswer::Busy));
    };
    polled(p, Some(tx), 200);
    let tx = tx.clone();
    Ok(DataStep::Take(Box::new(Take {
        tx,
        sp: sp.clone(),
        now,
        lease,
    })))
}

/// One `GET /service/data` answer: an event (with the transaction when the ticket named one)
/// and a count.
fn polled(p: &Platform, tx: Option<&TxRecord>, status: u16) {
    p.metrics.poll(status);
    match tx {
        Some(tx) => tracing::info!(
            target: TX,
            event = "poll",
            tx = %tx.id,
            client_id = %tx.client_id,
            status,
            "MyData-API answered {status}"
        ),
        None => tracing::info!(target: TX, event = "poll", status, "MyData-API answered {status}"),
    }
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
    let jwe = jwe::encrypt_package(&client_id, &zip, &key, sp.jwe_mode, content_iv)?;
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
        tx.state = state::TAKEN;
        tx.code = Some(201);
        tx.taken_at = Some(now.0);
        tx.package_path = None;
        tx.pid_sealed = None;
        tx.citizen_sealed = None;
        tx.secret_key_sealed = None;
        tx.return_url = None;
        p.store.update_tx(&tx)?;
        tracing::info!(target: TX, event = "taken", tx = %tx.id, client_id = %tx.client_id, "package taken by its SP");
        p.metrics.taken();
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

/// Which body a status lookup answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusQuery {
    /// `GET /service/txid_status` (§8.3): the transaction's state.
    TxidStatus,
    /// `GET /service/type_valid` (§8.4): the identity method used, if any.
    TypeValid,
}

/// The answer of a status lookup.
#[derive(Debug, Clone, PartialEq)]
pub enum StatusAnswer {
    /// 401: the source IP is registered by no SP.
    Unregistered,
    /// 404: no transaction with this `tx_id` is visible to this source (and `client_id`).
    NotFound,
    /// 400: more than one SP's transaction matches; `client_id` must say which (D27).
    Ambiguous,
    /// 200 with this JSON body.
    Found(serde_json::Value),
}

impl StatusAnswer {
    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            StatusAnswer::Unregistered => 401,
            StatusAnswer::NotFound => 404,
            StatusAnswer::Ambiguous => 400,
            StatusAnswer::Found(_) => 200,
        }
    }
}

/// `txid_status` and `type_valid` (spec §8.3, §8.4, D26, D27): the same lookup, two bodies.
/// Each transaction is visible to the SPs that registered `source`, read from its SP's record
/// (an SP registered by another process is known at once); a record past its 8 hours is gone
/// (D19). Blocking: store lookups.
pub fn status(
    p: &Platform,
    source: impl Into<Caller>,
    tx_id: &TxId,
    client_id: Option<&ClientId>,
    query: StatusQuery,
) -> ServerResult<StatusAnswer> {
    let source: Caller = source.into();
    let now = p.now();
    let mut found = Vec::new();
    for t in p.store.find_tx_any(tx_id.as_str())? {
        if client_id.is_some_and(|c| c.as_str() != t.client_id)
            || flow::record_expired(UnixTime(t.created_at), now)
        {
            continue;
        }
        if let Some(sp) = p.store.get_sp(&t.client_id)?
            && allows(&sp, &source)
        {
            p.sp_sources.insert(&sp);
            found.push(t);
        }
    }
    if found.is_empty() && !p.source_registered(source.ip)? {
        return Ok(StatusAnswer::Unregistered);
    }
    let tx = match found.as_slice() {
        [] => return Ok(StatusAnswer::NotFound),
        [t] => t,
        _ => return Ok(StatusAnswer::Ambiguous),
    };
    Ok(StatusAnswer::Found(match query {
        StatusQuery::TypeValid => {
            let method = tx
                .identity_method
                .as_deref()
                .and_then(|m| m.parse::<IdentityMethod>().ok());
            match method {
                Some(m) => json!({
                    "code": "200", "text": "authenticated",
                    "type": m.to_string(), "level": m.level().wire(),
                }),
                None => json!({"code": "100", "text": "not yet authenticated"}),
            }
        }
        StatusQuery::TxidStatus => {
            let body = reported_state(tx, now).status_body();
            json!({"code": body.code, "text": body.text})
        }
    }))
}
