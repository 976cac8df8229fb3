//! Retention (spec §14, D19, D21, D37, D47): what `txid_status` reports as time passes, the
//! purge (expiry before consent, the 8-hour deadline, orphaned package files, the database
//! log), and [`resume`] after a restart.

use std::sync::Arc;

use mydata_protocol::codes::ReturnCode;
use mydata_protocol::date::UnixTime;
use mydata_protocol::flow;

use crate::auth::CitizenClaims;
use crate::engine::dp_calls::spawn_fetch;
use crate::engine::outcome::{end, forget};
use crate::error::ServerResult;
use crate::observe::TX;
use crate::packages::Packages;
use crate::platform::Platform;
use crate::storage::{TxRecord, state};

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
        tx.state = state::FETCHING;
        tx.code = Some(200);
        tx.package_path = None;
        tx.datasets = "[]".into();
        p.store.update_tx(&tx)?;
        resumed.push((tx, citizen, sp));
    }
    // Every ending above is committed before anything is served or called (D47).
    p.store.flush()?;
    let n = resumed.len();
    p.metrics.resumed(n);
    for (tx, citizen, sp) in resumed {
        tracing::info!(
            target: TX,
            event = "resumed",
            tx = %tx.id,
            client_id = %tx.client_id,
            "DP calls resumed after a restart"
        );
        spawn_fetch(p.clone(), tx, citizen, sp);
    }
    Ok(n)
}

/// What `txid_status` reports for a stored transaction at `now` (§8.3): [`TxRecord::flow_state`], except
/// that a transaction whose time before consent has run out is 408 at once, before the purge
/// ends it (D21).
pub fn reported_state(tx: &TxRecord, now: UnixTime) -> flow::TxState {
    if expired_before_consent(tx, now) {
        return flow::TxState::Ended(ReturnCode::Timeout);
    }
    tx.flow_state()
}

/// Whether a transaction is before consent and its time has run out (1,200 s idle or 3,600 s
/// in all, D21).
pub fn expired_before_consent(tx: &TxRecord, now: UnixTime) -> bool {
    tx.flow_state().is_before_consent()
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
            Ok(()) => {
                tracing::info!(
                    target: TX,
                    event = "purged",
                    tx = %tx.id,
                    client_id = %tx.client_id,
                    "transaction purged"
                );
                report.purged += 1
            }
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
    p.metrics
        .purge(report.expired, report.purged, report.orphans);
    // A purge that did nothing is not worth a line at the default level (it runs every minute).
    let busy = report.expired + report.purged + report.orphans + report.not_erased.len() > 0;
    macro_rules! purge_event {
        ($level:expr) => {
            tracing::event!(
                target: TX,
                $level,
                event = "purge",
                expired = report.expired,
                purged = report.purged,
                orphans = report.orphans,
                not_erased = report.not_erased.len(),
                "purge done"
            )
        };
    }
    if busy {
        purge_event!(tracing::Level::INFO);
    } else {
        purge_event!(tracing::Level::DEBUG);
    }
    Ok(report)
}
