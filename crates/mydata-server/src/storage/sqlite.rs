//! The embedded default backend: diesel over SQLite, with embedded migrations.

use std::path::Path;
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, CustomizeConnection, Pool, PooledConnection};
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use mydata_protocol::date::UnixTime;

use super::{DpRecord, SpRecord, Store};
use crate::auth::TokenRecord;
use crate::error::{ServerError, ServerResult};

const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

mod schema {
    diesel::table! {
        dps (resource_id) {
            resource_id -> Text,
            record -> Text,
            created_at -> BigInt,
        }
    }
    diesel::table! {
        sps (client_id) {
            client_id -> Text,
            record -> Text,
            created_at -> BigInt,
        }
    }
    diesel::table! {
        tokens (token_hash) {
            token_hash -> Text,
            tx_id -> Text,
            client_id -> Text,
            resource_id -> Text,
            transaction_uid -> Text,
            scope -> Text,
            sub -> Text,
            uid -> Text,
            claims -> Text,
            iat -> BigInt,
            exp -> BigInt,
        }
    }
}
use schema::{dps, sps, tokens};

#[derive(Queryable, Insertable, Selectable)]
#[diesel(table_name = tokens)]
struct TokenRow {
    token_hash: String,
    tx_id: String,
    client_id: String,
    resource_id: String,
    transaction_uid: String,
    scope: String,
    sub: String,
    uid: String,
    claims: String,
    iat: i64,
    exp: i64,
}

impl From<&TokenRecord> for TokenRow {
    fn from(t: &TokenRecord) -> Self {
        TokenRow {
            token_hash: t.token_hash.clone(),
            tx_id: t.tx_id.clone(),
            client_id: t.client_id.clone(),
            resource_id: t.resource_id.clone(),
            transaction_uid: t.transaction_uid.clone(),
            scope: t.scope.clone(),
            sub: t.sub.clone(),
            uid: t.uid.clone(),
            claims: t.claims.clone(),
            iat: t.iat,
            exp: t.exp,
        }
    }
}

impl From<TokenRow> for TokenRecord {
    fn from(t: TokenRow) -> Self {
        TokenRecord {
            token_hash: t.token_hash,
            tx_id: t.tx_id,
            client_id: t.client_id,
            resource_id: t.resource_id,
            transaction_uid: t.transaction_uid,
            scope: t.scope,
            sub: t.sub,
            uid: t.uid,
            claims: t.claims,
            iat: t.iat,
            exp: t.exp,
        }
    }
}

#[derive(Debug)]
struct Pragmas;

impl CustomizeConnection<SqliteConnection, diesel::r2d2::Error> for Pragmas {
    fn on_acquire(&self, conn: &mut SqliteConnection) -> Result<(), diesel::r2d2::Error> {
        conn.batch_execute(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
             PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON;",
        )
        .map_err(diesel::r2d2::Error::QueryError)
    }
}

/// SQLite storage (a file in the data directory, or in memory for tests).
#[derive(Clone)]
pub struct SqliteStore {
    pool: Pool<ConnectionManager<SqliteConnection>>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SqliteStore")
    }
}

fn db(e: DieselError) -> ServerError {
    ServerError::Storage(e.to_string())
}

fn json_err(e: serde_json::Error) -> ServerError {
    ServerError::Storage(format!("stored record: {e}"))
}

fn is_unique(e: &DieselError) -> bool {
    matches!(
        e,
        DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _)
    )
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
        let store = SqliteStore { pool };
        store
            .conn()?
            .run_pending_migrations(MIGRATIONS)
            .map_err(|e| ServerError::Storage(format!("migrations: {e}")))?;
        Ok(store)
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
            .first(&mut self.conn()?)
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
            .first(&mut self.conn()?)
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
