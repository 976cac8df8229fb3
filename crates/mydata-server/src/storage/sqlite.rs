//! The embedded default backend: diesel over SQLite, with embedded migrations.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, CustomizeConnection, Pool, PooledConnection};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use mydata_protocol::date::UnixTime;

use super::rows::schema::{dps, sps, tokens, transactions, transfers};
use super::rows::{TokenRow, TransferRow, TxChange, TxRow, db, is_unique, json_err};
use super::{DpRecord, SpRecord, Store, TransferRecord, TxRecord};
use crate::auth::TokenRecord;
use crate::error::{ServerError, ServerResult};

const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

#[derive(Debug)]
struct Pragmas;

impl CustomizeConnection<SqliteConnection, diesel::r2d2::Error> for Pragmas {
    fn on_acquire(&self, conn: &mut SqliteConnection) -> Result<(), diesel::r2d2::Error> {
        conn.batch_execute(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
             PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON; \
             PRAGMA secure_delete = ON;",
        )
        .map_err(diesel::r2d2::Error::QueryError)
    }
}

/// SQLite storage (a file in the data directory, or in memory for tests).
#[derive(Clone)]
pub struct SqliteStore {
    pool: Pool<ConnectionManager<SqliteConnection>>,
    /// One writer at a time. SQLite allows a single writer; without this, concurrent writers
    /// meet `SQLITE_BUSY` and sleep in the busy handler on the HTTP workers (measured as the
    /// largest stall under the flow_load bench). Readers do not take it (WAL).
    writer: Arc<Mutex<()>>,
}

/// A pooled connection held with the writer lock.
struct WriteConn<'a> {
    conn: PooledConnection<ConnectionManager<SqliteConnection>>,
    _lock: MutexGuard<'a, ()>,
}

impl std::ops::Deref for WriteConn<'_> {
    type Target = SqliteConnection;
    fn deref(&self) -> &SqliteConnection {
        &self.conn
    }
}

impl std::ops::DerefMut for WriteConn<'_> {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        &mut self.conn
    }
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SqliteStore")
    }
}

impl SqliteStore {
    /// Opens (creating if needed) `path` and runs pending migrations.
    pub fn open(path: &Path) -> ServerResult<Self> {
        let url = path
            .to_str()
            .ok_or_else(|| ServerError::Config("database path is not UTF-8".into()))?;
        Self::open_url(url, 8)
    }

    /// A private in-memory database (one connection), for tests.
    pub fn in_memory() -> ServerResult<Self> {
        Self::open_url(":memory:", 1)
    }

    fn open_url(url: &str, size: u32) -> ServerResult<Self> {
        let pool = Pool::builder()
            .max_size(size)
            .connection_timeout(Duration::from_secs(10))
            .connection_customizer(Box::new(Pragmas))
            .build(ConnectionManager::<SqliteConnection>::new(url))
            .map_err(|e| ServerError::Storage(e.to_string()))?;
        let store = SqliteStore {
            pool,
            writer: Arc::new(Mutex::new(())),
        };
        store
            .conn()?
            .run_pending_migrations(MIGRATIONS)
            .map_err(|e| ServerError::Storage(format!("migrations: {e}")))?;
        Ok(store)
    }

    /// A connection for a write: the writer lock first, then a pooled connection. A panic
    /// while writing cannot leave a half-written row (SQLite rolls the statement back), so a
    /// poisoned lock is taken over.
    fn wconn(&self) -> ServerResult<WriteConn<'_>> {
        let lock = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        Ok(WriteConn {
            conn: self.conn()?,
            _lock: lock,
        })
    }

    fn conn(&self) -> ServerResult<PooledConnection<ConnectionManager<SqliteConnection>>> {
        self.pool
            .get()
            .map_err(|e| ServerError::Storage(e.to_string()))
    }
}

impl Store for SqliteStore {
    fn insert_dp(&self, dp: &DpRecord, now: UnixTime) -> ServerResult<()> {
        let record = serde_json::to_string(dp).map_err(json_err)?;
        diesel::insert_into(dps::table)
            .values((
                dps::resource_id.eq(&dp.resource_id),
                dps::record.eq(record),
                dps::created_at.eq(now.0),
            ))
            .execute(&mut *self.wconn()?)
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
            .execute(&mut *self.wconn()?)
            .map_err(db)?;
        if n == 0 {
            return Err(ServerError::NotFound(format!("dataset {}", dp.resource_id)));
        }
        Ok(())
    }

    // Point lookups (primary key or a UNIQUE column) use `get_result`, not `first`: `first` binds
    // `LIMIT ?`, and SQLite re-prepares a statement whose LIMIT parameter is re-bound, which cost
    // 16 % of server CPU under the flow_load bench.
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
            .execute(&mut *self.wconn()?)
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
            .execute(&mut *self.wconn()?)
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
            .execute(&mut *self.wconn()?)
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
            .execute(&mut *self.wconn()?)
            .map_err(db)?;
        Ok(())
    }

    fn delete_tokens_of_tx(&self, tx_id: &str) -> ServerResult<usize> {
        diesel::delete(tokens::table.filter(tokens::tx_id.eq(tx_id)))
            .execute(&mut *self.wconn()?)
            .map_err(db)
    }

    fn delete_expired_tokens(&self, now: UnixTime) -> ServerResult<usize> {
        diesel::delete(tokens::table.filter(tokens::exp.le(now.0)))
            .execute(&mut *self.wconn()?)
            .map_err(db)
    }

    fn insert_tx(&self, tx: &TxRecord) -> ServerResult<()> {
        diesel::insert_into(transactions::table)
            .values(TxRow::from(tx.clone()))
            .execute(&mut *self.wconn()?)
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
            .execute(&mut *self.wconn()?)
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
            .execute(&mut *self.wconn()?)
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
            .execute(&mut *self.wconn()?)
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

    fn checkpoint(&self) -> ServerResult<()> {
        self.wconn()?
            .batch_execute("PRAGMA wal_checkpoint(TRUNCATE);")
            .map_err(db)
    }

    fn delete_transfers_before(&self, before: UnixTime) -> ServerResult<usize> {
        diesel::delete(transfers::table.filter(transfers::at.lt(before.0)))
            .execute(&mut *self.wconn()?)
            .map_err(db)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn shared_suite_on_sqlite_memory() {
        super::super::suite::run_all(&super::SqliteStore::in_memory().unwrap());
    }

    #[test]
    fn shared_suite_on_sqlite_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = super::SqliteStore::open(&dir.path().join("db.sqlite")).unwrap();
        super::super::suite::run_all(&store);
        // Reopening runs no migration twice and keeps the data.
        drop(store);
        let again = super::SqliteStore::open(&dir.path().join("db.sqlite")).unwrap();
        use super::super::Store;
        assert!(!again.list_sps().unwrap().is_empty());
    }
}
