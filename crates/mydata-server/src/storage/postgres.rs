//! The PostgreSQL backend (feature `postgres`, on by default): diesel over libpq with an r2d2
//! pool and its own embedded migrations (`migrations_pg/`, the same tables as the SQLite ones in
//! PostgreSQL types). Selected by a `postgres://` `database_url` (spec D45).
//!
//! Behaviour matches [`super::sqlite::SqliteStore`] for every [`Store`] method (the shared suite
//! runs on both). Differences that are PostgreSQL's own:
//!
//! - no writer lock: PostgreSQL takes concurrent writers (row locks, MVCC);
//! - [`Store::checkpoint`] runs a plain `VACUUM` of the two tables that hold personal data
//!   (`transactions`, `tokens`), which prunes the deleted row versions from their pages. PostgreSQL
//!   has no `secure_delete`: the freed bytes are not overwritten until reused, old row images stay
//!   in the write-ahead log until it is recycled, and in any base backup or WAL archive the
//!   operator keeps. Those are the operator's to manage (spec D45).

use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, Pool, PooledConnection};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use mydata_protocol::date::UnixTime;

use super::rows::schema::{dps, sps, tokens, transactions, transfers};
use super::rows::{TokenRow, TransferRow, TxChange, TxRow, db, is_unique, json_err};
use super::{DpRecord, SpRecord, Store, TransferRecord, TxRecord};
use crate::auth::TokenRecord;
use crate::error::{ServerError, ServerResult};

const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations_pg");

/// The advisory lock held while migrations run, so that two servers started together on one
/// database do not both apply them ("mydata" in ASCII).
const MIGRATION_LOCK: i64 = 0x6d79_6461_7461;

/// Pooled connections per store.
const POOL_SIZE: u32 = 16;

type PgPool = Pool<ConnectionManager<PgConnection>>;

/// PostgreSQL storage.
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PgStore")
    }
}

impl PgStore {
    /// Connects to `url` (`postgres://user:password@host:port/database`, or any libpq connection
    /// URI) and runs pending migrations. The error of a failed connection is libpq's own message
    /// (never the URL, which may hold a password).
    pub fn open(url: &str) -> ServerResult<Self> {
        // One direct connection first: a wrong host or password fails at once with libpq's
        // message, where the pool would retry until its timeout and report only that.
        let mut first = PgConnection::establish(url)
            .map_err(|e| ServerError::Storage(format!("PostgreSQL: {}", e.to_string().trim())))?;
        run_migrations(&mut first)?;
        drop(first);
        let pool = Pool::builder()
            .max_size(POOL_SIZE)
            .min_idle(Some(1))
            .connection_timeout(Duration::from_secs(10))
            .build(ConnectionManager::<PgConnection>::new(url))
            .map_err(|e| ServerError::Storage(format!("PostgreSQL pool: {e}")))?;
        Ok(PgStore { pool })
    }

    fn conn(&self) -> ServerResult<PooledConnection<ConnectionManager<PgConnection>>> {
        self.pool
            .get()
            .map_err(|e| ServerError::Storage(e.to_string()))
    }
}

/// Applies pending migrations under a session advisory lock (released even when one fails).
fn run_migrations(conn: &mut PgConnection) -> ServerResult<()> {
    conn.batch_execute(&format!("SELECT pg_advisory_lock({MIGRATION_LOCK})"))
        .map_err(db)?;
    let ran = conn
        .run_pending_migrations(MIGRATIONS)
        .map(|_| ())
        .map_err(|e| ServerError::Storage(format!("migrations: {e}")));
    let unlocked = conn
        .batch_execute(&format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})"))
        .map_err(db);
    ran.and(unlocked)
}

impl Store for PgStore {
    fn insert_dp(&self, dp: &DpRecord, now: UnixTime) -> ServerResult<()> {
        let record = serde_json::to_string(dp).map_err(json_err)?;
        diesel::insert_into(dps::table)
            .values((
                dps::resource_id.eq(&dp.resource_id),
                dps::record.eq(record),
                dps::created_at.eq(now.0),
            ))
            .execute(&mut self.conn()?)
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
            .execute(&mut self.conn()?)
            .map_err(db)?;
        if n == 0 {
            return Err(ServerError::NotFound(format!("dataset {}", dp.resource_id)));
        }
        Ok(())
    }

    fn get_dp(&self, resource_id: &str) -> ServerResult<Option<DpRecord>> {
        let r: Option<String> = dps::table
            .find(resource_id)
            .select(dps::record)
            .get_result(&mut self.conn()?)
            .optional()
            .map_err(db)?;
        r.map(|s| serde_json::from_str(&s).map_err(json_err))
            .transpose()
    }

    fn list_dps(&self) -> ServerResult<Vec<DpRecord>> {
        let rows: Vec<String> = dps::table
            .order(dps::resource_id)
            .select(dps::record)
            .load(&mut self.conn()?)
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
            .execute(&mut self.conn()?)
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
            .execute(&mut self.conn()?)
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
            .get_result(&mut self.conn()?)
            .optional()
            .map_err(db)?;
        r.map(|s| serde_json::from_str(&s).map_err(json_err))
            .transpose()
    }

    fn list_sps(&self) -> ServerResult<Vec<SpRecord>> {
        let rows: Vec<String> = sps::table
            .order(sps::client_id)
            .select(sps::record)
            .load(&mut self.conn()?)
            .map_err(db)?;
        rows.iter()
            .map(|s| serde_json::from_str(s).map_err(json_err))
            .collect()
    }

    fn insert_token(&self, t: &TokenRecord) -> ServerResult<()> {
        diesel::insert_into(tokens::table)
            .values(TokenRow::from(t))
            .execute(&mut self.conn()?)
            .map_err(db)?;
        Ok(())
    }

    fn live_tokens(&self, now: UnixTime) -> ServerResult<Vec<TokenRecord>> {
        let rows: Vec<TokenRow> = tokens::table
            .filter(tokens::exp.gt(now.0))
            .select(TokenRow::as_select())
            .load(&mut self.conn()?)
            .map_err(db)?;
        Ok(rows.into_iter().map(TokenRecord::from).collect())
    }

    fn delete_token(&self, token_hash: &str) -> ServerResult<()> {
        diesel::delete(tokens::table.find(token_hash))
            .execute(&mut self.conn()?)
            .map_err(db)?;
        Ok(())
    }

    fn delete_tokens_of_tx(&self, tx_id: &str) -> ServerResult<usize> {
        diesel::delete(tokens::table.filter(tokens::tx_id.eq(tx_id)))
            .execute(&mut self.conn()?)
            .map_err(db)
    }

    fn delete_expired_tokens(&self, now: UnixTime) -> ServerResult<usize> {
        diesel::delete(tokens::table.filter(tokens::exp.le(now.0)))
            .execute(&mut self.conn()?)
            .map_err(db)
    }

    fn insert_tx(&self, tx: &TxRecord) -> ServerResult<()> {
        diesel::insert_into(transactions::table)
            .values(TxRow::from(tx.clone()))
            .execute(&mut self.conn()?)
            .map_err(|e| {
                if is_unique(&e) {
                    ServerError::Conflict(format!("transaction {} of {}", tx.tx_id, tx.client_id))
                } else {
                    db(e)
                }
            })?;
        Ok(())
    }

    fn update_tx(&self, tx: &TxRecord) -> ServerResult<()> {
        let n = diesel::update(transactions::table.find(&tx.id))
            .set(TxChange::from(tx))
            .execute(&mut self.conn()?)
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
            .get_result(&mut self.conn()?)
            .optional()
            .map(|r| r.map(TxRecord::from))
            .map_err(db)
    }

    fn find_tx(&self, client_id: &str, tx_id: &str) -> ServerResult<Option<TxRecord>> {
        transactions::table
            .filter(transactions::client_id.eq(client_id))
            .filter(transactions::tx_id.eq(tx_id))
            .select(TxRow::as_select())
            .get_result(&mut self.conn()?)
            .optional()
            .map(|r| r.map(TxRecord::from))
            .map_err(db)
    }

    fn find_tx_any(&self, tx_id: &str) -> ServerResult<Vec<TxRecord>> {
        transactions::table
            .filter(transactions::tx_id.eq(tx_id))
            .select(TxRow::as_select())
            .load(&mut self.conn()?)
            .map(|v| v.into_iter().map(TxRecord::from).collect())
            .map_err(db)
    }

    fn find_tx_by_ticket(&self, ticket_hash: &str) -> ServerResult<Option<TxRecord>> {
        transactions::table
            .filter(transactions::ticket_hash.eq(ticket_hash))
            .select(TxRow::as_select())
            .get_result(&mut self.conn()?)
            .optional()
            .map(|r| r.map(TxRecord::from))
            .map_err(db)
    }

    fn txs_due(&self, now: UnixTime) -> ServerResult<Vec<TxRecord>> {
        transactions::table
            .filter(transactions::purge_at.le(now.0))
            .select(TxRow::as_select())
            .load(&mut self.conn()?)
            .map(|v| v.into_iter().map(TxRecord::from).collect())
            .map_err(db)
    }

    fn delete_tx(&self, id: &str) -> ServerResult<()> {
        diesel::delete(transactions::table.find(id))
            .execute(&mut self.conn()?)
            .map_err(db)?;
        Ok(())
    }

    fn insert_transfer(&self, t: &TransferRecord) -> ServerResult<()> {
        diesel::insert_into(transfers::table)
            .values(TransferRow {
                at: t.at,
                kind: t.kind.clone(),
                client_id: t.client_id.clone(),
                resource_id: t.resource_id.clone(),
                subject_hash: t.subject_hash.clone(),
                code: t.code,
                case_number: t.case_number.clone(),
                identity_method: t.identity_method.clone(),
            })
            .execute(&mut self.conn()?)
            .map_err(db)?;
        Ok(())
    }

    fn transfers_of(&self, subject_hash: &str) -> ServerResult<Vec<TransferRecord>> {
        let rows: Vec<TransferRow> = transfers::table
            .filter(transfers::subject_hash.eq(subject_hash))
            .order(transfers::id)
            .select(TransferRow::as_select())
            .load(&mut self.conn()?)
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
            .execute(&mut self.conn()?)
            .map_err(db)
    }

    /// A plain `VACUUM` of `transactions` and `tokens`: prunes the deleted row versions from
    /// their pages (it cannot run inside a transaction, and pooled connections are never in one).
    /// It does not overwrite freed space or the write-ahead log; see the module documentation.
    fn checkpoint(&self) -> ServerResult<()> {
        self.conn()?
            .batch_execute("VACUUM transactions, tokens")
            .map_err(db)
    }
}
