//! The query code of the [`Store`](super::Store) methods, written once for both backends.
//!
//! [`store_impl!`] expands the `impl Store` of a backend from the same diesel queries; a backend
//! says only how it gets a connection to read on and one to write on, and writes out the methods
//! that are its own ([`Store::checkpoint`](super::Store::checkpoint)). The queries use nothing
//! but the shared `table!` definitions and row types of `rows.rs` and diesel's query builder,
//! which compiles them for SQLite and PostgreSQL alike. A macro rather than functions generic
//! over the connection type: the diesel bounds such functions need (one `QueryFragment`,
//! `LoadQuery` and `ExecuteDsl` bound per query shape) would outweigh the queries themselves.

/// Implements [`Store`](super::Store) for `$store` with the shared queries.
///
/// - `read = $read`: an inherent method of `$store` (`fn(&self) -> ServerResult<C>` where `C` is
///   a diesel connection, such as a pooled one) that gives the connection for lookups;
/// - `write = $write`: the same for every write (insert, update, delete); what it returns must
///   dereference mutably to the backend's connection (SQLite's holds the writer lock);
/// - then, in braces, the remaining trait methods written out by the backend. They may use the
///   names imported below (diesel's prelude, `SimpleConnection`, `db`, `ServerResult`, …).
///
/// The expansion is a private module inside the caller's module, so the backend's private
/// connection methods stay private and the caller needs no imports for it.
macro_rules! store_impl {
    ($store:ident, read = $read:ident, write = $write:ident, { $($own:tt)* }) => {
        mod store_impl {
            #[allow(unused_imports)]
            use diesel::connection::SimpleConnection;
            use diesel::prelude::*;
            use mydata_protocol::date::UnixTime;

            use $crate::auth::TokenRecord;
            use $crate::error::{ServerError, ServerResult};
            use $crate::storage::rows::schema::{dps, sps, tokens, transactions, transfers};
            use $crate::storage::rows::{
                TokenRow, TransferRow, TxChange, TxRow, db, is_unique, json_err,
            };
            use $crate::storage::{
                DpRecord, SpRecord, Store, TransferRecord, TxPhase, TxRecord, Write,
            };

            impl Store for super::$store {
                fn insert_dp(&self, dp: &DpRecord, now: UnixTime) -> ServerResult<()> {
                    let record = serde_json::to_string(dp).map_err(json_err)?;
                    diesel::insert_into(dps::table)
                        .values((
                            dps::resource_id.eq(&dp.resource_id),
                            dps::record.eq(record),
                            dps::created_at.eq(now.0),
                        ))
                        .execute(&mut *self.$write()?)
                        .map_err(|e| {
                            if is_unique(&e) {
                                ServerError::Conflict(format!("dataset {}", dp.resource_id))
                            } else {
                                db(e)
                            }
                        })?;
                    Ok(())
                }

                fn update_dp(&self, dp: &DpRecord) -> ServerResult<()> {
                    let record = serde_json::to_string(dp).map_err(json_err)?;
                    let n = diesel::update(dps::table.find(&dp.resource_id))
                        .set(dps::record.eq(record))
                        .execute(&mut *self.$write()?)
                        .map_err(db)?;
                    if n == 0 {
                        return Err(ServerError::NotFound(format!("dataset {}", dp.resource_id)));
                    }
                    Ok(())
                }

                // Point lookups (primary key or a UNIQUE column) use `get_result`, not `first`:
                // `first` binds `LIMIT ?`, and SQLite re-prepares a statement whose LIMIT parameter
                // is re-bound, which cost 16 % of server CPU under the flow_load bench.
                fn get_dp(&self, resource_id: &str) -> ServerResult<Option<DpRecord>> {
                    let r: Option<String> = dps::table
                        .find(resource_id)
                        .select(dps::record)
                        .get_result(&mut self.$read()?)
                        .optional()
                        .map_err(db)?;
                    r.map(|s| serde_json::from_str(&s).map_err(json_err))
                        .transpose()
                }

                fn list_dps(&self) -> ServerResult<Vec<DpRecord>> {
                    let rows: Vec<String> = dps::table
                        .order(dps::resource_id)
                        .select(dps::record)
                        .load(&mut self.$read()?)
                        .map_err(db)?;
                    rows.iter()
                        .map(|s| serde_json::from_str(s).map_err(json_err))
                        .collect()
                }

                fn insert_sp(&self, sp: &SpRecord, now: UnixTime) -> ServerResult<()> {
                    let record = serde_json::to_string(sp).map_err(json_err)?;
                    diesel::insert_into(sps::table)
                        .values((
                            sps::client_id.eq(&sp.client_id),
                            sps::record.eq(record),
                            sps::created_at.eq(now.0),
                        ))
                        .execute(&mut *self.$write()?)
                        .map_err(|e| {
                            if is_unique(&e) {
                                ServerError::Conflict(format!("service {}", sp.client_id))
                            } else {
                                db(e)
                            }
                        })?;
                    Ok(())
                }

                fn update_sp(&self, sp: &SpRecord) -> ServerResult<()> {
                    let record = serde_json::to_string(sp).map_err(json_err)?;
                    let n = diesel::update(sps::table.find(&sp.client_id))
                        .set(sps::record.eq(record))
                        .execute(&mut *self.$write()?)
                        .map_err(db)?;
                    if n == 0 {
                        return Err(ServerError::NotFound(format!("service {}", sp.client_id)));
                    }
                    Ok(())
                }

                fn get_sp(&self, client_id: &str) -> ServerResult<Option<SpRecord>> {
                    let r: Option<String> = sps::table
                        .find(client_id)
                        .select(sps::record)
                        .get_result(&mut self.$read()?)
                        .optional()
                        .map_err(db)?;
                    r.map(|s| serde_json::from_str(&s).map_err(json_err))
                        .transpose()
                }

                fn list_sps(&self) -> ServerResult<Vec<SpRecord>> {
                    let rows: Vec<String> = sps::table
                        .order(sps::client_id)
                        .select(sps::record)
                        .load(&mut self.$read()?)
                        .map_err(db)?;
                    rows.iter()
                        .map(|s| serde_json::from_str(s).map_err(json_err))
                        .collect()
                }

                fn insert_token(&self, t: &TokenRecord) -> ServerResult<()> {
                    diesel::insert_into(tokens::table)
                        .values(TokenRow::from(t))
                        .execute(&mut *self.$write()?)
                        .map_err(db)?;
                    Ok(())
                }

                fn live_tokens(&self, now: UnixTime) -> ServerResult<Vec<TokenRecord>> {
                    let rows: Vec<TokenRow> = tokens::table
                        .filter(tokens::exp.gt(now.0))
                        .select(TokenRow::as_select())
                        .load(&mut self.$read()?)
                        .map_err(db)?;
                    Ok(rows.into_iter().map(TokenRecord::from).collect())
                }

                fn delete_token(&self, token_hash: &str) -> ServerResult<()> {
                    diesel::delete(tokens::table.find(token_hash))
                        .execute(&mut *self.$write()?)
                        .map_err(db)?;
                    Ok(())
                }

                fn delete_tokens_of_tx(&self, tx_id: &str) -> ServerResult<usize> {
                    diesel::delete(tokens::table.filter(tokens::tx_id.eq(tx_id)))
                        .execute(&mut *self.$write()?)
                        .map_err(db)
                }

                fn delete_expired_tokens(&self, now: UnixTime) -> ServerResult<usize> {
                    diesel::delete(tokens::table.filter(tokens::exp.le(now.0)))
                        .execute(&mut *self.$write()?)
                        .map_err(db)
                }

                fn insert_tx(&self, tx: &TxRecord) -> ServerResult<()> {
                    diesel::insert_into(transactions::table)
                        .values(TxRow::from(tx.clone()))
                        .execute(&mut *self.$write()?)
                        .map_err(|e| {
                            if is_unique(&e) {
                                ServerError::Conflict(format!(
                                    "transaction {} of {}",
                                    tx.tx_id, tx.client_id
                                ))
                            } else {
                                db(e)
                            }
                        })?;
                    Ok(())
                }

                fn update_tx(&self, tx: &TxRecord) -> ServerResult<()> {
                    let n = diesel::update(transactions::table.find(&tx.id))
                        .set(TxChange::from(tx))
                        .execute(&mut *self.$write()?)
                        .map_err(db)?;
                    if n == 0 {
                        return Err(ServerError::NotFound(format!("transaction {}", tx.id)));
                    }
                    Ok(())
                }

                fn get_tx(&self, id: &str) -> ServerResult<Option<TxRecord>> {
                    transactions::table
                        .find(id)
                        .select(TxRow::as_select())
                        .get_result(&mut self.$read()?)
                        .optional()
                        .map(|r| r.map(TxRecord::from))
                        .map_err(db)
                }

                fn find_tx(&self, client_id: &str, tx_id: &str) -> ServerResult<Option<TxRecord>> {
                    transactions::table
                        .filter(transactions::client_id.eq(client_id))
                        .filter(transactions::tx_id.eq(tx_id))
                        .select(TxRow::as_select())
                        .get_result(&mut self.$read()?)
                        .optional()
                        .map(|r| r.map(TxRecord::from))
                        .map_err(db)
                }

                fn find_tx_any(&self, tx_id: &str) -> ServerResult<Vec<TxRecord>> {
                    transactions::table
                        .filter(transactions::tx_id.eq(tx_id))
                        .select(TxRow::as_select())
                        .load(&mut self.$read()?)
                        .map(|v| v.into_iter().map(TxRecord::from).collect())
                        .map_err(db)
                }

                fn find_tx_by_ticket(&self, ticket_hash: &str) -> ServerResult<Option<TxRecord>> {
                    transactions::table
                        .filter(transactions::ticket_hash.eq(ticket_hash))
                        .select(TxRow::as_select())
                        .get_result(&mut self.$read()?)
                        .optional()
                        .map(|r| r.map(TxRecord::from))
                        .map_err(db)
                }

                fn txs_due(&self, now: UnixTime) -> ServerResult<Vec<TxRecord>> {
                    transactions::table
                        .filter(transactions::purge_at.le(now.0))
                        .select(TxRow::as_select())
                        .load(&mut self.$read()?)
                        .map(|v| v.into_iter().map(TxRecord::from).collect())
                        .map_err(db)
                }

                fn txs_in_state(&self, state: TxPhase) -> ServerResult<Vec<TxRecord>> {
                    transactions::table
                        .filter(transactions::state.eq(state))
                        .select(TxRow::as_select())
                        .load(&mut self.$read()?)
                        .map(|v| v.into_iter().map(TxRecord::from).collect())
                        .map_err(db)
                }

                fn count_txs_by_state(&self) -> ServerResult<Vec<(TxPhase, u64)>> {
                    let rows: Vec<(TxPhase, i64)> = transactions::table
                        .group_by(transactions::state)
                        .select((transactions::state, diesel::dsl::count_star()))
                        .load(&mut self.$read()?)
                        .map_err(db)?;
                    Ok(TxPhase::tally(
                        rows.into_iter()
                            .map(|(p, n)| (p, u64::try_from(n).unwrap_or(0))),
                    ))
                }

                $crate::storage::registrations::registration_queries!($write);

                fn delete_tx(&self, id: &str) -> ServerResult<()> {
                    diesel::delete(transactions::table.find(id))
                        .execute(&mut *self.$write()?)
                        .map_err(db)?;
                    Ok(())
                }

                fn insert_transfer(&self, t: &TransferRecord) -> ServerResult<()> {
                    diesel::insert_into(transfers::table)
                        .values(TransferRow::from(t))
                        .execute(&mut *self.$write()?)
                        .map_err(db)?;
                    Ok(())
                }

                fn transfers_of(&self, subject_hash: &str) -> ServerResult<Vec<TransferRecord>> {
                    let rows: Vec<TransferRow> = transfers::table
                        .filter(transfers::subject_hash.eq(subject_hash))
                        .order(transfers::id)
                        .select(TransferRow::as_select())
                        .load(&mut self.$read()?)
                        .map_err(db)?;
                    Ok(rows
                        .into_iter()
                        .map(|r| TransferRecord {
                            at: r.at,
                            kind: r.kind,
                            client_id: r.client_id,
                            resource_id: r.resource_id,
                            subject_hash: r.subject_hash,
                            code: r.code,
                            case_number: r.case_number,
                            identity_method: r.identity_method,
                        })
                        .collect())
                }

                fn delete_transfers_before(&self, before: UnixTime) -> ServerResult<usize> {
                    diesel::delete(transfers::table.filter(transfers::at.lt(before.0)))
                        .execute(&mut *self.$write()?)
                        .map_err(db)
                }

                fn apply(&self, batch: &[Write]) -> ServerResult<()> {
                    if batch.is_empty() {
                        return Ok(());
                    }
                    let mut c = self.$write()?;
                    c.transaction::<(), diesel::result::Error, _>(|c| {
                        for w in batch {
                            match w {
                                Write::InsertTx(tx) => {
                                    diesel::insert_into(transactions::table)
                                        .values(TxRow::from(tx.clone()))
                                        .execute(c)?;
                                }
                                Write::UpdateTx(tx) => {
                                    diesel::update(transactions::table.find(&tx.id))
                                        .set(TxChange::from(tx))
                                        .execute(c)?;
                                }
                                Write::DeleteTx(id) => {
                                    diesel::delete(transactions::table.find(id)).execute(c)?;
                                }
                                Write::InsertToken(t) => {
                                    diesel::insert_into(tokens::table)
                                        .values(TokenRow::from(t))
                                        .execute(c)?;
                                }
                                Write::DeleteToken(h) => {
                                    diesel::delete(tokens::table.find(h)).execute(c)?;
                                }
                                Write::DeleteTokensOfTx(tx_id) => {
                                    diesel::delete(tokens::table.filter(tokens::tx_id.eq(tx_id)))
                                        .execute(c)?;
                                }
                                Write::InsertTransfer(t) => {
                                    diesel::insert_into(transfers::table)
                                        .values(TransferRow::from(t))
                                        .execute(c)?;
                                }
                            }
                        }
                        Ok(())
                    })
                    .map_err(db)
                }

                $($own)*
            }
        }
    };
}
pub(super) use store_impl;
