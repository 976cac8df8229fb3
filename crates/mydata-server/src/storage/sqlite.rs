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

/// How often the checkpointer thread copies the WAL into the database file.
pub const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

#[derive(Debug)]
struct Pragmas;

impl CustomizeConnection<SqliteConnection, diesel::r2d2::Error> for Pragmas {
    fn on_acquire(&self, conn: &mut SqliteConnection) -> Result<(), diesel::r2d2::Error> {
        // The busy timeout first: connections opened together (the pool fills at start) would
        // otherwise meet "database is locked" at once on `journal_mode`.
        // No automatic checkpoint: it would run inside a commit, and its fsync would stall the
        // writer (and every flow waiting for a commit) for tens of milliseconds. The
        // checkpointer thread does it instead (`Checkpointer`).
        conn.batch_execute(
            "PRAGMA busy_timeout = 5000; PRAGMA journal_mode = WAL; \
             PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; \
             PRAGMA secure_delete = ON; PRAGMA wal_autocheckpoint = 0;",
        )
        .map_err(diesel::r2d2::Error::QueryError)
    }
}

/// A thread that runs a passive checkpoint every [`CHECKPOINT_EVERY`] on a connection of its
/// own, beside the writer rather than inside its commits. It stops when the last clone of the
/// store is dropped.
struct Checkpointer {
    stop: Arc<(Mutex<bool>, std::sync::Condvar)>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Checkpoint passes completed (for tests, which wait on it rather than on time).
    passes: Arc<std::sync::atomic::AtomicU64>,
}

impl Checkpointer {
    fn start(pool: Pool<ConnectionManager<SqliteConnection>>) -> ServerResult<Self> {
        let stop = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
        let s = stop.clone();
        let passes = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let done = passes.clone();
        let thread = std::thread::Builder::new()
            .name("mydata-sqlite-checkpoint".into())
            .spawn(move || {
                let (lock, cv) = &*s;
                let mut stopped = lock.lock().unwrap_or_else(|e| e.into_inner());
                while !*stopped {
                    stopped = cv
                        .wait_timeout(stopped, CHECKPOINT_EVERY)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                    if *stopped {
                        break;
                    }
                    drop(stopped);
                    let r = pool.get().map_err(|e| e.to_string()).and_then(|mut c| {
                        c.batch_execute("PRAGMA wal_checkpoint(PASSIVE);")
                            .map_err(|e| e.to_string())
                    });
                    match r {
                        Ok(()) => {
                            done.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                        }
                        Err(e) => log::warn!("SQLite checkpoint: {e}"),
                    }
                    stopped = lock.lock().unwrap_or_else(|e| e.into_inner());
                }
            })
            .map_err(|e| ServerError::Internal(format!("checkpoint thread: {e}")))?;
        Ok(Checkpointer {
            stop,
            passes,
            thread: Mutex::new(Some(thread)),
        })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        *self.stop.0.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.stop.1.notify_all();
        if let Some(t) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = t.join();
        }
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
    /// The checkpointer thread of a database file (`None` in memory).
    _checkpointer: Option<Arc<Checkpointer>>,
    /// The database file and its identity when opened (`None` in memory): `ready` checks that
    /// the path still names that file.
    file: Option<(std::path::PathBuf, FileId)>,
}

/// What identifies a file across renames: device and inode on Unix, nothing elsewhere.
type FileId = Option<(u64, u64)>;

fn file_id(path: &Path) -> std::io::Result<FileId> {
    let m = std::fs::metadata(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        Ok(Some((m.dev(), m.ino())))
    }
    #[cfg(not(unix))]
    {
        let _ = m;
        Ok(None)
    }
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
    ///
    /// The file is created with mode 0600 (or set to 0600) before SQLite opens it, and so are
    /// `-wal` and `-shm` if they exist: SQLite creates those with the mode of the database
    /// file, so they are owner-only too whatever the umask (spec D48).
    pub fn open(path: &Path) -> ServerResult<Self> {
        let url = path
            .to_str()
            .ok_or_else(|| ServerError::Config("database path is not UTF-8".into()))?;
        crate::datadir::ensure_private_file(path)?;
        for suffix in ["-wal", "-shm"] {
            crate::datadir::tighten_file(Path::new(&format!("{url}{suffix}")))?;
        }
        let mut store = Self::open_url(url, 8)?;
        let id =
            file_id(path).map_err(|e| ServerError::Storage(format!("{}: {e}", path.display())))?;
        store.file = Some((path.to_path_buf(), id));
        Ok(store)
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
        let checkpointer = if url == ":memory:" {
            None
        } else {
            Some(Arc::new(Checkpointer::start(pool.clone())?))
        };
        let store = SqliteStore {
            pool,
            writer: Arc::new(Mutex::new(())),
            _checkpointer: checkpointer,
            file: None,
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

    /// How many passes the checkpointer thread has completed (0 in memory).
    pub fn checkpoint_passes(&self) -> u64 {
        self._checkpointer
            .as_ref()
            .map_or(0, |c| c.passes.load(std::sync::atomic::Ordering::Acquire))
    }

    /// [`Store::ready`](super::Store::ready): the file is still there (the same file), the
    /// migrations table answers and no migration is pending.
    fn ready_check(&self) -> ServerResult<()> {
        if let Some((path, id)) = &self.file {
            match file_id(path) {
                Ok(now) if now == *id => {}
                Ok(_) => {
                    return Err(ServerError::Storage(format!(
                        "{}: replaced by another file since it was opened",
                        path.display()
                    )));
                }
                Err(e) => {
                    return Err(ServerError::Storage(format!("{}: {e}", path.display())));
                }
            }
        }
        super::rows::migrations_applied(&mut *self.conn()?, MIGRATIONS)
    }

    fn conn(&self) -> ServerResult<PooledConnection<ConnectionManager<SqliteConnection>>> {
        self.pool
            .get()
            .map_err(|e| ServerError::Storage(e.to_string()))
    }
}

// The shared queries; every write (and the checkpoint) holds the writer lock through `wconn`.
super::queries::store_impl!(SqliteStore, read = conn, write = wconn, {
    fn ready(&self) -> ServerResult<()> {
        self.ready_check()
    }

    /// Copies the WAL into the database and truncates it to nothing, so that no copy of a
    /// deleted row remains in the log (D37, D45). A reader holding an old snapshot makes SQLite
    /// answer "busy" without truncating; the checkpoint is then tried again, and reported as
    /// failed if the log could not be truncated within [`CHECKPOINT_PATIENCE`].
    fn checkpoint(&self) -> ServerResult<()> {
        let start = std::time::Instant::now();
        loop {
            let row = {
                let mut c = self.wconn()?;
                diesel::sql_query("PRAGMA wal_checkpoint(TRUNCATE)")
                    .get_result::<super::CheckpointRow>(&mut *c)
                    .map_err(db)?
            };
            if row.busy == 0 {
                return Ok(());
            }
            if start.elapsed() >= super::CHECKPOINT_PATIENCE {
                return Err(ServerError::Storage(format!(
                    "the WAL could not be truncated within {} s (busy; {} of {} frames copied)",
                    super::CHECKPOINT_PATIENCE.as_secs(),
                    row.checkpointed,
                    row.log
                )));
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
});

/// How long [`Store::checkpoint`](super::Store::checkpoint) keeps trying to truncate the WAL.
pub const CHECKPOINT_PATIENCE: Duration = Duration::from_secs(30);

/// The row of `PRAGMA wal_checkpoint`.
#[derive(diesel::QueryableByName)]
struct CheckpointRow {
    #[diesel(sql_type = diesel::sql_types::Integer)]
    busy: i32,
    #[diesel(sql_type = diesel::sql_types::Integer)]
    log: i32,
    #[diesel(sql_type = diesel::sql_types::Integer)]
    checkpointed: i32,
}

#[cfg(test)]
mod tests {
    #[test]
    fn shared_suite_on_sqlite_memory() {
        super::super::suite::run_all(&super::SqliteStore::in_memory().unwrap());
    }

    #[test]
    fn the_checkpointer_keeps_the_wal_from_growing() {
        use super::super::Store;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let store = super::SqliteStore::open(&path).unwrap();
        let wal = dir.path().join("db.sqlite-wal");
        // Rows written in rounds; between rounds the checkpointer copies the WAL into the
        // database, and the writer then starts the WAL over instead of growing it.
        let mut sizes = Vec::new();
        for round in 0..6 {
            for i in 0..200 {
                let tx = super::super::suite::sample_tx(
                    &format!("t-{round}-{i}"),
                    "CLI.AAAAAAAAAA",
                    &format!("tx-{round}-{i}"),
                    1000,
                );
                store.insert_tx(&tx).unwrap();
            }
            // Two passes of the checkpointer after the writes: the second began after them
            // and copied every frame (waiting on the passes, not on time: a loaded machine may
            // run the thread late).
            let target = store.checkpoint_passes() + 2;
            let start = std::time::Instant::now();
            while store.checkpoint_passes() < target {
                assert!(
                    start.elapsed() < std::time::Duration::from_secs(120),
                    "the checkpointer stopped"
                );
                std::thread::sleep(super::CHECKPOINT_EVERY / 5);
            }
            sizes.push(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0));
        }
        let first = sizes[0].max(1);
        assert!(
            sizes.iter().all(|s| *s <= first * 2),
            "the WAL keeps growing: {sizes:?}"
        );
        // The rows are in the database file itself once checkpointed.
        drop(store);
        assert!(!wal.exists() || std::fs::metadata(&wal).unwrap().len() == 0);
        let again = super::SqliteStore::open(&path).unwrap();
        assert_eq!(again.find_tx_any("tx-5-199").unwrap().len(), 1);
    }

    /// The database, its WAL and its shared memory are owner-only, under the umask of the test
    /// process (usually 022; `mydata-cli`'s `data_dir_modes` test forces 022), and an existing
    /// database with a wider mode is tightened when opened.
    #[cfg(unix)]
    #[test]
    fn database_files_are_owner_only() {
        use super::super::Store;
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let mode = |suffix: &str| {
            crate::datadir::mode_of(std::path::Path::new(&format!("{}{suffix}", path.display())))
                .unwrap()
        };
        let store = super::SqliteStore::open(&path).unwrap();
        store
            .insert_sp(
                &super::super::suite::sample_sp("CLI.AAAAAAAAAA"),
                mydata_protocol::date::UnixTime(1),
            )
            .unwrap();
        for s in ["", "-wal", "-shm"] {
            assert_eq!(mode(s), 0o600, "db.sqlite{s}");
        }
        drop(store);
        for s in ["", "-wal", "-shm"] {
            let p = format!("{}{s}", path.display());
            if std::path::Path::new(&p).exists() {
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
            }
        }
        let store = super::SqliteStore::open(&path).unwrap();
        assert_eq!(store.list_sps().unwrap().len(), 1);
        for s in ["", "-wal", "-shm"] {
            assert_eq!(mode(s), 0o600, "db.sqlite{s} reopened");
        }
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
