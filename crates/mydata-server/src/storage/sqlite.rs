//! The embedded default backend: diesel over SQLite, with embedded migrations.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, CustomizeConnection, Pool, PooledConnection};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

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

// The shared queries; every write (and the checkpoint) holds the writer lock through `wconn`.
super::queries::store_impl!(SqliteStore, read = conn, write = wconn, {
    fn checkpoint(&self) -> ServerResult<()> {
        self.wconn()?
            .batch_execute("PRAGMA wal_checkpoint(TRUNCATE);")
            .map_err(db)
    }
});

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
