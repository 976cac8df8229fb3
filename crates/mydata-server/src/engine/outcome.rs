//! How a transaction ends and what is recorded of it (spec §14, D37): [`end`] with a return
//! code (its personal data goes at once), [`forget`] (deleted with its package and tokens), and
//! the transaction-level transfer records.

use mydata_protocol::codes::ReturnCode;
use mydata_protocol::date::UnixTime;
use mydata_protocol::flow;

use crate::auth::CitizenClaims;
use crate::error::{ServerError, ServerResult};
use crate::observe::TX;
use crate::platform::Platform;
use crate::storage::{TransferRecord, TxRecord, state};

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
    tracing::info!(
        target: TX,
        event = "ended",
        tx = %tx.id,
        client_id = %tx.client_id,
        code = code.wire(),
        "transaction ended with {}",
        code.wire()
    );
    p.metrics.tx_final(code.wire());
    tx.state = state::ENDED;
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
pub(crate) fn subject_of(p: &Platform, tx: &TxRecord) -> String {
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
pub(crate) fn record_outcome(
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

/// The transaction's requested resource_ids, in request order.
pub(crate) fn resources(tx: &TxRecord) -> ServerResult<Vec<String>> {
    serde_json::from_str(&tx.resources)
        .map_err(|e| ServerError::Storage(format!("transaction resources: {e}")))
}
