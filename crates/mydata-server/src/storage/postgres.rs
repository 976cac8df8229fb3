//! The PostgreSQL backend (feature `postgres`, on by default): diesel over libpq with an r2d2
//! pool and its own embedded migrations (`migrations_pg/`, the same tables as the SQLite ones in
//! PostgreSQL types). Selected by a `postgres://` `database_url` (spec D45).
//!
//! Behaviour matches [`super::sqlite::SqliteStore`] for every [`Store`](super::Store) method:
//! both expand the same queries (`queries.rs`) and the shared suite runs on both. Differences
//! that are PostgreSQL's own:
//!
//! - no writer lock: PostgreSQL takes concurrent writers (row locks, MVCC);
//! - [`Store::checkpoint`](super::Store::checkpoint) runs a plain `VACUUM` of the two tables
//!   that hold personal data (`transactions`, `tokens`), which prunes the deleted row versions
//!   from their pages. PostgreSQL has no `secure_delete`: the freed bytes are not overwritten
//!   until reused, old row images stay in the write-ahead log until it is recycled, and in any
//!   base backup or WAL archive the operator keeps. Those are the operator's to manage (spec D45).

use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, Pool, PooledConnection};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use super::rows::db;
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

    /// [`Store::ready`](super::Store::ready): a pooled connection, the migrations table
    /// answers and no migration is pending.
    fn ready_check(&self) -> ServerResult<()> {
        super::rows::migrations_applied(&mut *self.conn()?, MIGRATIONS)
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

// The shared queries; reads and writes alike on a pooled connection (no writer lock).
super::queries::store_impl!(PgStore, read = conn, write = conn, {
    fn ready(&self) -> ServerResult<()> {
        self.ready_check()
    }

    /// A plain `VACUUM` of `transactions` and `tokens`: prunes the deleted row versions from
    /// their pages (it cannot run inside a transaction, and pooled connections are never in one).
    /// It does not overwrite freed space or the write-ahead log; see the module documentation.
    fn checkpoint(&self) -> ServerResult<()> {
        self.conn()?
            .batch_execute("VACUUM transactions, tokens")
            .map_err(db)
    }
});
