//! The DP calls of a consented transaction (spec §10, D35): one call series per dataset,
//! each with its own token ([`dpcall`](crate::engine::dpcall) runs the series), then the SP
//! package (spec §11).

use std::sync::Arc;

use mydata_protocol::codes::{DatasetCode, ReturnCode};
use mydata_protocol::ids::{PermissionTicket, ResourceId};
use mydata_protocol::package::sp::{self, Dataset, Outcome};
use serde::{Deserialize, Serialize};

use crate::auth::CitizenClaims;
use crate::engine::dpcall;
use crate::engine::outcome::{end, resources};
use crate::error::{ServerError, ServerResult};
use crate::observe::TX;
use crate::platform::Platform;
use crate::storage::{SpRecord, TransferRecord, TxRecord, state};
use crate::trust::Anchors;

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

/// Calls every DP of a consented transaction, then builds and stores the SP package. Never
/// leaves the transaction fetching for ever: a failure of the platform's own (not a DP's) ends
/// it with 504, logged with its cause.
/// Spawns [`fetch_and_package`], counted as running from now on.
pub(crate) fn spawn_fetch(p: Arc<Platform>, tx: TxRecord, citizen: CitizenClaims, sp: SpRecord) {
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
    let limits = dpcall::CallLimits::from_config(&p.config);
    // HTTPS toward the DP, against its pinned CA or the system roots and `tls_ca_file`, with
    // the platform's client certificate; plain http only in the sandbox (D49). Either refusal
    // ends the dataset with 504 without a call.
    let checked =
        crate::engine::outbound::check_scheme(p.outbound.plain_http(), "endpoint", &dp.endpoint)
            .and_then(|()| {
                let timing = crate::engine::outbound::Timing {
                    connect: limits.connect,
                    total: dpcall::CALL_TIMEOUT,
                    keep_alive: dpcall::IDLE_KEEP,
                };
                p.outbound
                    .client(timing, dp.tls_ca.as_deref())
                    .map_err(|e| format!("the TLS settings of this dataset do not build: {e}"))
            });
    let client = match checked {
        Ok(c) => c,
        Err(why) => {
            tracing::warn!(
                target: crate::engine::outbound::TLS_TARGET,
                resource_id = %rid,
                "DP-API call not made: {why}; the dataset ends with 504 (D49)"
            );
            return Ok(Some((
                rid.into(),
                dp.name,
                DatasetCode::DpSystemError,
                None,
                0,
            )));
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
    for (rid, _, code, _, calls) in &results {
        tracing::info!(
            target: TX,
            event = "dp_call",
            tx = %tx.id,
            client_id = %tx.client_id,
            dataset = %rid,
            code = code.wire(),
            calls,
            "dataset {rid}: code {}",
            code.wire()
        );
        p.metrics.dp_call(rid, code.wire());
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
    let (zip, _summary) = sp::build(
        std::io::Cursor::new(Vec::new()),
        sp.packaging_mode,
        datasets,
    )?;
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
                live.state = state::READY;
                live.code = Some(if all_failed { 504 } else { 200 });
                live.package_path = Some(rel);
                if let Err(e) = p.store.update_tx(&live) {
                    p.packages.discard(&live.id);
                    return Err(e);
                }
                tracing::info!(
                    target: TX,
                    event = "packaged",
                    tx = %live.id,
                    client_id = %live.client_id,
                    code = if all_failed { 504 } else { 200 },
                    datasets = results.len(),
                    "SP package ready"
                );
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
