//! Live transactions in memory, writes behind (spec D47).
//!
//! [`HotStore`] wraps a database backend for `mydata serve`. A citizen flow reads and rewrites
//! its transaction on every page and every poll; written through, each of those was a database
//! transaction of its own behind SQLite's single writer, and that writer was the limit of the
//! whole server (the flow_load bench). Here:
//!
//! - the transactions this process writes live in memory, indexed by id, by (`client_id`,
//!   `tx_id`) and by ticket hash; lookups are answered from memory and fall back to the
//!   database for anything not there (a transaction from before a restart, or one evicted);
//! - transaction, token and transfer writes are queued and applied by one writer thread, a
//!   batch per database transaction ([`Store::apply`]), at most `window` after the first write
//!   of a batch. Writes of one transaction in one batch are coalesced: only the last version is
//!   written, and a token issued and revoked within a batch never reaches the database;
//! - [`Store::flush`] waits until everything queued before it is committed. The platform calls
//!   it at the two points where a lost write would be seen from outside: before the SP-API call
//!   hands out a permission ticket, before a failed SP-API call sends the citizen back with 410,
//!   and right after a package was served (engine, spec D47);
//! - SP and dataset registrations are cached for [`REGISTRATION_TTL`]: a change made by another
//!   process (`mydata sp …` on the same database) takes effect within that time.
//!
//! Memory stays bounded by the live flows: an entry leaves memory once its last write is
//! committed and the transaction has ended (taken, ended, undeliverable), or when it has been
//! idle for [`IDLE_EVICT_SECS`]. Correctness rests on one invariant: an entry leaves memory
//! only when the database holds its latest version, so a miss in memory may read the database.
//! Deletions leave a tombstone until they are committed, for the same reason.
//!
//! A crash loses what was not yet committed: at most `window` of writes, never a handed-out
//! ticket or a served package (those are flushed first). Reads that scan (`txs_due`,
//! `find_tx_any`, tokens, transfers) flush first and then read the database.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mydata_protocol::date::UnixTime;

use super::{DpRecord, SpRecord, Store, TransferRecord, TxPhase, TxRecord, Write, state};
use crate::auth::TokenRecord;
use crate::error::{ServerError, ServerResult};

/// How long a cached SP or dataset registration is used before it is read again.
pub const REGISTRATION_TTL: Duration = Duration::from_secs(2);

/// A committed transaction idle this long (by its own `last_activity`, against the newest
/// activity written) leaves memory; later reads go to the database.
pub const IDLE_EVICT_SECS: i64 = 3_600;

/// How many attempts a single write gets after its batch failed, before it is dropped (logged,
/// and reported to a [`Store::flush`] that waits for it).
const SINGLE_ATTEMPTS: u32 = 3;

/// How long the writer gathers a batch that a [`Store::flush`] waits for. Under load the
/// flushes of many flows then share one commit (measured with the flow_load bench: commits
/// back to back for every flush cost a fifth of the server's CPU); a flush waits at most this
/// plus one commit.
pub const URGENT_GATHER: Duration = Duration::from_millis(2);

/// The most pairs remembered as absent ([`State`]); the set starts over when full.
const ABSENT_KEPT: usize = 4096;

/// The newest dropped writes remembered for [`Store::flush`].
const DROPPED_KEPT: usize = 1024;

/// One transaction in memory: its latest version (`None`: deleted, not yet committed) and the
/// sequence number of its latest queued write.
struct Entry {
    rec: Option<TxRecord>,
    seq: u64,
}

#[derive(Default)]
struct State {
    txs: HashMap<String, Entry>,
    by_pair: HashMap<(String, String), String>,
    by_ticket: HashMap<String, String>,
    /// Tokens written through this store and not deleted: hash → (transaction, `exp`).
    tokens: HashMap<String, (String, i64)>,
    /// (`client_id`, `tx_id`) pairs that [`Store::find_tx`] just found in neither memory nor
    /// the database. A flow's redirect looks its pair up and then inserts it; with this the
    /// insert's own uniqueness check does not read the database a second time. Only this store
    /// writes transactions (one server per database, D45), and every insert takes its pair out.
    absent: std::collections::HashSet<(String, String)>,
    pending: Vec<(u64, Write)>,
    /// The sequence number of the last queued write (0 = none yet).
    queued: u64,
    /// Every write with a sequence number up to this one is committed or dropped.
    flushed: u64,
    /// A flush is waiting: the writer does not wait out the window.
    urgent: bool,
    stop: bool,
    /// The writer thread has ended.
    dead: bool,
    /// Sequence numbers of dropped writes, newest last, with the last error.
    dropped: Vec<u64>,
    last_error: String,
    /// The newest `last_activity` written, for idle eviction.
    newest_activity: i64,
    batches: u64,
    /// Time spent committing batches (`/metrics`).
    commit_time: Duration,
}

struct Cached<T> {
    at: Instant,
    rec: T,
}

struct Shared {
    inner: Arc<dyn Store>,
    window: Duration,
    state: Mutex<State>,
    /// The writer waits on this for writes, a flush or the stop.
    work: Condvar,
    /// [`Store::flush`] waits on this for the writer's progress.
    done: Condvar,
    sps: Mutex<HashMap<String, Cached<SpRecord>>>,
    dps: Mutex<HashMap<String, Cached<DpRecord>>>,
}

/// A [`Store`] that keeps live transactions in memory and writes behind (module docs).
pub struct HotStore {
    shared: Arc<Shared>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for HotStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HotStore")
            .field("window", &self.shared.window)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing is left half-done under these locks by a panic (each update is a few map
    // operations), so a poisoned lock is taken over.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn pair(tx: &TxRecord) -> (String, String) {
    (tx.client_id.clone(), tx.tx_id.clone())
}

fn terminal(tx: &TxRecord) -> bool {
    matches!(tx.state, state::TAKEN | state::ENDED | state::UNDELIVERABLE)
}

impl State {
    /// Queues `w`; true when it is the first of a batch (the writer is to be woken: while it
    /// gathers a batch it needs no wake-up per write).
    fn queue(&mut self, w: Write) -> bool {
        self.queued += 1;
        self.pending.push((self.queued, w));
        self.pending.len() == 1
    }

    /// The memory entry of `id`: `Some(Some(rec))` live, `Some(None)` deleted, `None` unknown.
    fn known(&self, id: &str) -> Option<Option<&TxRecord>> {
        self.txs.get(id).map(|e| e.rec.as_ref())
    }

    fn unindex(&mut self, old: &TxRecord) {
        let p = pair(old);
        if self.by_pair.get(&p) == Some(&old.id) {
            self.by_pair.remove(&p);
        }
        if let Some(h) = &old.ticket_hash
            && self.by_ticket.get(h) == Some(&old.id)
        {
            self.by_ticket.remove(h);
        }
    }

    fn index(&mut self, rec: &TxRecord) {
        self.by_pair.insert(pair(rec), rec.id.clone());
        if let Some(h) = &rec.ticket_hash {
            self.by_ticket.insert(h.clone(), rec.id.clone());
        }
    }

    /// Puts `rec` (or a tombstone for `id`) in memory with the write that carries it; true
    /// when the writer is to be woken ([`State::queue`]).
    fn put(&mut self, id: &str, rec: Option<TxRecord>, w: Write) -> bool {
        if let Some(old) = self.txs.get(id).and_then(|e| e.rec.clone()) {
            self.unindex(&old);
        }
        if let Some(r) = &rec {
            self.index(r);
            self.newest_activity = self.newest_activity.max(r.last_activity);
        }
        let first = self.queue(w);
        self.txs.insert(
            id.to_string(),
            Entry {
                rec,
                seq: self.queued,
            },
        );
        first
    }

    /// Drops committed entries that need not stay: tombstones, ended transactions, and (now
    /// and then) idle ones.
    fn evict(&mut self, touched: &[String], sweep: bool) {
        let flushed = self.flushed;
        let idle_before = self.newest_activity - IDLE_EVICT_SECS;
        let gone = |e: &Entry, idle_too: bool| {
            e.seq <= flushed
                && match &e.rec {
                    None => true,
                    Some(r) => terminal(r) || (idle_too && r.last_activity < idle_before),
                }
        };
        let mut out = Vec::new();
        for id in touched {
            if self.txs.get(id).is_some_and(|e| gone(e, false)) {
                out.push(id.clone());
            }
        }
        if sweep {
            out.extend(
                self.txs
                    .iter()
                    .filter(|(_, e)| gone(e, true))
                    .map(|(id, _)| id.clone()),
            );
        }
        for id in out {
            if let Some(Entry { rec: Some(r), .. }) = self.txs.remove(&id) {
                self.unindex(&r);
            }
        }
    }

    /// Database results seen through memory: memory's version wins, tombstones hide rows, and
    /// live memory entries that `keep` accepts and the database lacks are added.
    fn overlay(&self, db: Vec<TxRecord>, keep: impl Fn(&TxRecord) -> bool) -> Vec<TxRecord> {
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for r in db {
            seen.insert(r.id.clone());
            match self.known(&r.id) {
                None => out.push(r),
                Some(Some(m)) if keep(m) => out.push(m.clone()),
                Some(_) => {}
            }
        }
        for (id, e) in &self.txs {
            if let Some(r) = &e.rec
                && !seen.contains(id)
                && keep(r)
            {
                out.push(r.clone());
            }
        }
        out
    }
}

/// One transaction's writes in a batch, reduced to what the database must see.
enum TxPlan {
    Insert(TxRecord),
    Update(TxRecord),
    Delete,
    DeleteInsert(TxRecord),
    Nothing,
}

/// Reduces a batch: the last version of each transaction in the position of its first write,
/// a token inserted and deleted in the batch dropped, everything else in order.
fn coalesce(ops: Vec<(u64, Write)>) -> (Vec<Write>, Vec<String>) {
    enum Slot {
        Tx(String),
        Token(String),
        Other(Box<Write>),
    }
    let mut slots: Vec<Slot> = Vec::new();
    let mut plans: HashMap<String, TxPlan> = HashMap::new();
    let mut tokens: HashMap<String, Option<Write>> = HashMap::new();
    for (_, w) in ops {
        match w {
            Write::InsertTx(r) => {
                let id = r.id.clone();
                let next = match plans.remove(&id) {
                    Some(TxPlan::Delete) => TxPlan::DeleteInsert(r),
                    None => {
                        slots.push(Slot::Tx(id.clone()));
                        TxPlan::Insert(r)
                    }
                    Some(_) => TxPlan::Insert(r),
                };
                plans.insert(id, next);
            }
            Write::UpdateTx(r) => {
                let id = r.id.clone();
                let next = match plans.remove(&id) {
                    None => {
                        slots.push(Slot::Tx(id.clone()));
                        TxPlan::Update(r)
                    }
                    Some(TxPlan::Insert(_)) => TxPlan::Insert(r),
                    Some(TxPlan::DeleteInsert(_)) => TxPlan::DeleteInsert(r),
                    Some(TxPlan::Update(_)) => TxPlan::Update(r),
                    Some(p @ (TxPlan::Delete | TxPlan::Nothing)) => p,
                };
                plans.insert(id, next);
            }
            Write::DeleteTx(id) => {
                let next = match plans.remove(&id) {
                    None => {
                        slots.push(Slot::Tx(id.clone()));
                        TxPlan::Delete
                    }
                    // Never written: nothing for the database to forget.
                    Some(TxPlan::Insert(_) | TxPlan::Nothing) => TxPlan::Nothing,
                    Some(_) => TxPlan::Delete,
                };
                plans.insert(id, next);
            }
            Write::InsertToken(t) => {
                let h = t.token_hash.clone();
                slots.push(Slot::Token(h.clone()));
                tokens.insert(h, Some(Write::InsertToken(t)));
            }
            Write::DeleteToken(h) => match tokens.get_mut(&h) {
                Some(slot @ Some(Write::InsertToken(_))) => *slot = None,
                _ => slots.push(Slot::Other(Box::new(Write::DeleteToken(h)))),
            },
            Write::DeleteTokensOfTx(tx) => {
                for w in tokens.values_mut() {
                    if matches!(w, Some(Write::InsertToken(t)) if t.tx_id == tx) {
                        *w = None;
                    }
                }
                slots.push(Slot::Other(Box::new(Write::DeleteTokensOfTx(tx))));
            }
            w @ Write::InsertTransfer(_) => slots.push(Slot::Other(Box::new(w))),
        }
    }
    let touched: Vec<String> = plans.keys().cloned().collect();
    let mut out = Vec::with_capacity(slots.len());
    for s in slots {
        match s {
            Slot::Tx(id) => match plans.remove(&id) {
                Some(TxPlan::Insert(r)) => out.push(Write::InsertTx(r)),
                Some(TxPlan::Update(r)) => out.push(Write::UpdateTx(r)),
                Some(TxPlan::Delete) => out.push(Write::DeleteTx(id)),
                Some(TxPlan::DeleteInsert(r)) => {
                    out.push(Write::DeleteTx(id));
                    out.push(Write::InsertTx(r));
                }
                Some(TxPlan::Nothing) | None => {}
            },
            Slot::Token(h) => {
                if let Some(Some(w)) = tokens.remove(&h) {
                    out.push(w);
                }
            }
            Slot::Other(w) => out.push(*w),
        }
    }
    (out, touched)
}

impl Shared {
    /// Applies a reduced batch: as one transaction, or write by write when that fails.
    /// Returns the writes that could not be applied, with the last error.
    fn commit(&self, batch: &[Write]) -> Option<(usize, String)> {
        let attempt = |ws: &[Write]| -> Result<(), String> {
            match std::panic::catch_unwind(AssertUnwindSafe(|| self.inner.apply(ws))) {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("the storage backend panicked".into()),
            }
        };
        let Err(e) = attempt(batch) else {
            return None;
        };
        log::error!(
            "write-behind: a batch of {} writes failed ({e}); retrying one by one",
            batch.len()
        );
        let mut failed = 0;
        let mut last = e;
        for w in batch {
            let mut ok = false;
            for n in 0..SINGLE_ATTEMPTS {
                match attempt(std::slice::from_ref(w)) {
                    Ok(()) => {
                        ok = true;
                        break;
                    }
                    Err(e) => {
                        last = e;
                        std::thread::sleep(Duration::from_millis(50 * u64::from(n + 1)));
                    }
                }
            }
            if !ok {
                failed += 1;
                log::error!("write-behind: a write was dropped: {last}");
            }
        }
        (failed > 0).then_some((failed, last))
    }

    fn run(&self) {
        loop {
            let (ops, upto) = {
                let mut st = lock(&self.state);
                while st.pending.is_empty() && !st.stop {
                    st = self.work.wait(st).unwrap_or_else(|e| e.into_inner());
                }
                if st.pending.is_empty() {
                    break;
                }
                // Gather for the window; when someone waits ([`Store::flush`]), for at most
                // URGENT_GATHER (group commit: the flushes of concurrent flows share one
                // commit); not at all when the store is closing.
                let start = Instant::now();
                let urgent_window = self.window.min(URGENT_GATHER);
                while !st.stop {
                    let limit = if st.urgent {
                        urgent_window
                    } else {
                        self.window
                    };
                    let now = Instant::now();
                    if now >= start + limit {
                        break;
                    }
                    st = self
                        .work
                        .wait_timeout(st, start + limit - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
                st.urgent = false;
                let ops = std::mem::take(&mut st.pending);
                let upto = st.queued;
                (ops, upto)
            };
            let first = ops.first().map(|(s, _)| *s).unwrap_or(upto);
            let (batch, touched) = coalesce(ops);
            let started = Instant::now();
            let failure = self.commit(&batch);
            let took = started.elapsed();
            let mut st = lock(&self.state);
            st.commit_time += took;
            if let Some((_, e)) = failure {
                // Which writes failed is not tracked finer than the batch: a flush waiting for
                // any of them reports the error.
                st.dropped.push(first);
                st.dropped.push(upto);
                let excess = st.dropped.len().saturating_sub(DROPPED_KEPT);
                st.dropped.drain(..excess);
                st.last_error = e;
            }
            st.flushed = upto;
            st.batches += 1;
            let sweep = st.batches.is_multiple_of(64);
            st.evict(&touched, sweep);
            drop(st);
            self.done.notify_all();
        }
    }
}

impl HotStore {
    /// Wraps `inner`; queued writes are committed at most `window` after the first of a batch.
    pub fn new(inner: Arc<dyn Store>, window: Duration) -> ServerResult<Self> {
        let shared = Arc::new(Shared {
            inner,
            window,
            state: Mutex::new(State::default()),
            work: Condvar::new(),
            done: Condvar::new(),
            sps: Mutex::new(HashMap::new()),
            dps: Mutex::new(HashMap::new()),
        });
        let s = shared.clone();
        let writer = std::thread::Builder::new()
            .name("mydata-write-behind".into())
            .spawn(move || {
                // However the loop ends, a waiting flush must learn that nothing more will be
                // committed rather than wait for ever.
                if std::panic::catch_unwind(AssertUnwindSafe(|| s.run())).is_err() {
                    log::error!("write-behind: the writer thread panicked");
                }
                lock(&s.state).dead = true;
                s.done.notify_all();
            })
            .map_err(|e| ServerError::Internal(format!("write-behind thread: {e}")))?;
        Ok(HotStore {
            shared,
            writer: Mutex::new(Some(writer)),
        })
    }

    /// How many transactions are in memory (for tests and figures).
    pub fn in_memory(&self) -> usize {
        lock(&self.shared.state).txs.len()
    }

    /// Writes queued and not yet committed.
    pub fn pending(&self) -> usize {
        let st = lock(&self.shared.state);
        (st.queued - st.flushed) as usize
    }

    fn inner(&self) -> &dyn Store {
        &*self.shared.inner
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.shared.state)
    }

    fn queue(&self, w: Write) {
        let first = self.state().queue(w);
        self.wake(first);
    }

    /// Wakes the writer for the first write of a batch.
    fn wake(&self, first: bool) {
        if first {
            self.shared.work.notify_one();
        }
    }

    /// A lookup by a key that memory indexes: memory first, then the database seen through
    /// memory (`matches` re-checks the key on memory's version).
    fn lookup(
        &self,
        index: impl Fn(&State) -> Option<String>,
        db: impl FnOnce() -> ServerResult<Option<TxRecord>>,
        matches: impl Fn(&TxRecord) -> bool,
    ) -> ServerResult<Option<TxRecord>> {
        {
            let st = self.state();
            if let Some(id) = index(&st)
                && let Some(Some(r)) = st.known(&id)
            {
                return Ok(Some(r.clone()));
            }
        }
        let Some(r) = db()? else {
            return Ok(None);
        };
        let st = self.state();
        Ok(match st.known(&r.id) {
            None => Some(r),
            Some(Some(m)) if matches(m) => Some(m.clone()),
            Some(_) => None,
        })
    }

    fn cached<T: Clone>(
        map: &Mutex<HashMap<String, Cached<T>>>,
        key: &str,
        read: impl FnOnce() -> ServerResult<Option<T>>,
    ) -> ServerResult<Option<T>> {
        if let Some(c) = lock(map).get(key)
            && c.at.elapsed() < REGISTRATION_TTL
        {
            return Ok(Some(c.rec.clone()));
        }
        let r = read()?;
        let mut m = lock(map);
        match &r {
            Some(rec) => {
                m.insert(
                    key.to_string(),
                    Cached {
                        at: Instant::now(),
                        rec: rec.clone(),
                    },
                );
            }
            None => {
                m.remove(key);
            }
        }
        Ok(r)
    }
}

impl Drop for HotStore {
    /// Commits what is queued and stops the writer.
    fn drop(&mut self) {
        {
            let mut st = self.state();
            st.stop = true;
        }
        self.shared.work.notify_all();
        if let Some(h) = lock(&self.writer).take() {
            let _ = h.join();
        }
    }
}

impl Store for HotStore {
    fn ready(&self) -> ServerResult<()> {
        if lock(&self.shared.state).dead {
            return Err(ServerError::Storage(
                "the write-behind writer has stopped".into(),
            ));
        }
        self.inner().ready()
    }

    fn write_behind(&self) -> Option<crate::observe::WriteBehindStats> {
        let st = lock(&self.shared.state);
        Some(crate::observe::WriteBehindStats {
            pending: st.queued - st.flushed,
            commits: st.batches,
            commit_time: st.commit_time,
        })
    }

    fn insert_dp(&self, dp: &DpRecord, now: UnixTime) -> ServerResult<()> {
        lock(&self.shared.dps).remove(&dp.resource_id);
        self.inner().insert_dp(dp, now)
    }

    fn update_dp(&self, dp: &DpRecord) -> ServerResult<()> {
        lock(&self.shared.dps).remove(&dp.resource_id);
        self.inner().update_dp(dp)
    }

    fn get_dp(&self, resource_id: &str) -> ServerResult<Option<DpRecord>> {
        Self::cached(&self.shared.dps, resource_id, || {
            self.inner().get_dp(resource_id)
        })
    }

    fn list_dps(&self) -> ServerResult<Vec<DpRecord>> {
        self.inner().list_dps()
    }

    fn insert_sp(&self, sp: &SpRecord, now: UnixTime) -> ServerResult<()> {
        lock(&self.shared.sps).remove(&sp.client_id);
        self.inner().insert_sp(sp, now)
    }

    fn update_sp(&self, sp: &SpRecord) -> ServerResult<()> {
        lock(&self.shared.sps).remove(&sp.client_id);
        self.inner().update_sp(sp)
    }

    fn get_sp(&self, client_id: &str) -> ServerResult<Option<SpRecord>> {
        Self::cached(&self.shared.sps, client_id, || {
            self.inner().get_sp(client_id)
        })
    }

    fn list_sps(&self) -> ServerResult<Vec<SpRecord>> {
        self.inner().list_sps()
    }

    fn delete_sp(&self, client_id: &str) -> ServerResult<()> {
        lock(&self.shared.sps).remove(client_id);
        self.inner().delete_sp(client_id)
    }

    fn delete_dp(&self, resource_id: &str) -> ServerResult<()> {
        lock(&self.shared.dps).remove(resource_id);
        self.inner().delete_dp(resource_id)
    }

    fn insert_token(&self, t: &TokenRecord) -> ServerResult<()> {
        let mut st = self.state();
        if st.tokens.contains_key(&t.token_hash) {
            return Err(ServerError::Conflict("token".into()));
        }
        st.tokens
            .insert(t.token_hash.clone(), (t.tx_id.clone(), t.exp));
        let first = st.queue(Write::InsertToken(t.clone()));
        drop(st);
        self.wake(first);
        Ok(())
    }

    fn live_tokens(&self, now: UnixTime) -> ServerResult<Vec<TokenRecord>> {
        self.flush()?;
        self.inner().live_tokens(now)
    }

    fn delete_token(&self, token_hash: &str) -> ServerResult<()> {
        let mut st = self.state();
        st.tokens.remove(token_hash);
        let first = st.queue(Write::DeleteToken(token_hash.to_string()));
        drop(st);
        self.wake(first);
        Ok(())
    }

    /// Counts the tokens of `tx_id` written through this store (tokens from before a restart
    /// are deleted too, but not counted).
    fn delete_tokens_of_tx(&self, tx_id: &str) -> ServerResult<usize> {
        let mut st = self.state();
        let before = st.tokens.len();
        st.tokens.retain(|_, (tx, _)| tx != tx_id);
        let n = before - st.tokens.len();
        let first = st.queue(Write::DeleteTokensOfTx(tx_id.to_string()));
        drop(st);
        self.wake(first);
        Ok(n)
    }

    fn delete_expired_tokens(&self, now: UnixTime) -> ServerResult<usize> {
        self.flush()?;
        self.state().tokens.retain(|_, (_, exp)| *exp > now.0);
        self.inner().delete_expired_tokens(now)
    }

    fn insert_tx(&self, tx: &TxRecord) -> ServerResult<()> {
        let conflict =
            || ServerError::Conflict(format!("transaction {} of {}", tx.tx_id, tx.client_id));
        let in_memory = |st: &State| {
            matches!(st.known(&tx.id), Some(Some(_))) || st.by_pair.contains_key(&pair(tx))
        };
        let known_absent = {
            let mut st = self.state();
            if in_memory(&st) {
                return Err(conflict());
            }
            st.absent.remove(&pair(tx))
        };
        let stored = if known_absent {
            None
        } else {
            self.inner().find_tx(&tx.client_id, &tx.tx_id)?
        };
        let mut st = self.state();
        if in_memory(&st) {
            return Err(conflict());
        }
        if let Some(db) = stored
            && st.known(&db.id).is_none()
        {
            return Err(conflict());
        }
        let first = st.put(&tx.id, Some(tx.clone()), Write::InsertTx(tx.clone()));
        drop(st);
        self.wake(first);
        Ok(())
    }

    fn update_tx(&self, tx: &TxRecord) -> ServerResult<()> {
        let not_found = || ServerError::NotFound(format!("transaction {}", tx.id));
        // The stored identity (insert_tx) is kept, as the database backends keep it.
        let merge = |base: &TxRecord| TxRecord {
            client_id: base.client_id.clone(),
            tx_id: base.tx_id.clone(),
            resources: base.resources.clone(),
            created_at: base.created_at,
            ..tx.clone()
        };
        {
            let mut st = self.state();
            match st.known(&tx.id) {
                Some(Some(base)) => {
                    let rec = merge(base);
                    let first = st.put(&tx.id, Some(rec.clone()), Write::UpdateTx(rec));
                    drop(st);
                    self.wake(first);
                    return Ok(());
                }
                Some(None) => return Err(not_found()),
                None => {}
            }
        }
        let base = self.inner().get_tx(&tx.id)?.ok_or_else(not_found)?;
        let mut st = self.state();
        let rec = match st.known(&tx.id) {
            Some(None) => return Err(not_found()),
            Some(Some(m)) => merge(m),
            None => merge(&base),
        };
        let first = st.put(&tx.id, Some(rec.clone()), Write::UpdateTx(rec));
        drop(st);
        self.wake(first);
        Ok(())
    }

    fn get_tx(&self, id: &str) -> ServerResult<Option<TxRecord>> {
        self.lookup(
            |_| Some(id.to_string()),
            || self.inner().get_tx(id),
            |_| true,
        )
    }

    fn find_tx(&self, client_id: &str, tx_id: &str) -> ServerResult<Option<TxRecord>> {
        let key = (client_id.to_string(), tx_id.to_string());
        let found = self.lookup(
            |st| st.by_pair.get(&key).cloned(),
            || self.inner().find_tx(client_id, tx_id),
            |r| r.client_id == client_id && r.tx_id == tx_id,
        )?;
        if found.is_none() {
            let mut st = self.state();
            if !st.by_pair.contains_key(&key) {
                if st.absent.len() >= ABSENT_KEPT {
                    st.absent.clear();
                }
                st.absent.insert(key);
            }
        }
        Ok(found)
    }

    fn find_tx_any(&self, tx_id: &str) -> ServerResult<Vec<TxRecord>> {
        self.flush()?;
        let db = self.inner().find_tx_any(tx_id)?;
        Ok(self.state().overlay(db, |r| r.tx_id == tx_id))
    }

    fn find_tx_by_ticket(&self, ticket_hash: &str) -> ServerResult<Option<TxRecord>> {
        self.lookup(
            |st| st.by_ticket.get(ticket_hash).cloned(),
            || self.inner().find_tx_by_ticket(ticket_hash),
            |r| r.ticket_hash.as_deref() == Some(ticket_hash),
        )
    }

    fn txs_due(&self, now: UnixTime) -> ServerResult<Vec<TxRecord>> {
        self.flush()?;
        let db = self.inner().txs_due(now)?;
        Ok(self.state().overlay(db, |r| r.purge_at <= now.0))
    }

    fn txs_in_state(&self, state: TxPhase) -> ServerResult<Vec<TxRecord>> {
        self.flush()?;
        let db = self.inner().txs_in_state(state)?;
        Ok(self.state().overlay(db, |r| r.state == state))
    }

    /// Counted by the database once every write accepted so far is committed (a flush: at most
    /// `write_behind_ms` of waiting), so the figures include the live transactions.
    fn count_txs_by_state(&self) -> ServerResult<Vec<(TxPhase, u64)>> {
        self.flush()?;
        self.inner().count_txs_by_state()
    }

    fn delete_tx(&self, id: &str) -> ServerResult<()> {
        let first = self.state().put(id, None, Write::DeleteTx(id.to_string()));
        self.wake(first);
        Ok(())
    }

    fn insert_transfer(&self, t: &TransferRecord) -> ServerResult<()> {
        self.queue(Write::InsertTransfer(t.clone()));
        Ok(())
    }

    fn transfers_of(&self, subject_hash: &str) -> ServerResult<Vec<TransferRecord>> {
        self.flush()?;
        self.inner().transfers_of(subject_hash)
    }

    fn delete_transfers_before(&self, before: UnixTime) -> ServerResult<usize> {
        self.flush()?;
        self.inner().delete_transfers_before(before)
    }

    fn checkpoint(&self) -> ServerResult<()> {
        self.flush()?;
        self.inner().checkpoint()
    }

    /// Applies `batch` behind the queue: flushes, then writes it through.
    fn apply(&self, batch: &[Write]) -> ServerResult<()> {
        self.flush()?;
        // Rows written around memory: no pair is known to be absent any more.
        self.state().absent.clear();
        self.inner().apply(batch)
    }

    fn memory_first(&self) -> bool {
        true
    }

    fn flush(&self) -> ServerResult<()> {
        let mut st = self.state();
        let target = st.queued;
        let from = st.flushed;
        if from >= target {
            return Ok(());
        }
        st.urgent = true;
        self.shared.work.notify_one();
        while st.flushed < target {
            if st.dead {
                return Err(ServerError::Storage(
                    "write-behind: the writer has stopped".into(),
                ));
            }
            st = self.shared.done.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        // `dropped` holds (first, last) sequence ranges of failed batches.
        let failed = st
            .dropped
            .chunks(2)
            .any(|r| r.len() == 2 && r[0] <= target && r[1] > from);
        if failed {
            return Err(ServerError::Storage(format!(
                "write-behind: writes were not committed: {}",
                st.last_error
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::sqlite::SqliteStore;
    use crate::storage::suite;

    fn hot(window_ms: u64) -> (Arc<SqliteStore>, HotStore) {
        let db = Arc::new(SqliteStore::in_memory().unwrap());
        let hot = HotStore::new(db.clone(), Duration::from_millis(window_ms)).unwrap();
        (db, hot)
    }

    #[test]
    fn shared_suite_through_memory() {
        for window in [0, 5, 200] {
            let (_, h) = hot(window);
            suite::run_all(&h);
        }
    }

    #[test]
    fn writes_reach_the_database_within_the_window_and_on_flush() {
        let (db, h) = hot(60_000);
        let tx = suite::sample_tx("t-1", "CLI.AAAAAAAAAA", "tx-1", 1000);
        h.insert_tx(&tx).unwrap();
        // Behind: memory answers, the database has nothing yet.
        assert_eq!(h.get_tx("t-1").unwrap().unwrap(), tx);
        assert!(db.get_tx("t-1").unwrap().is_none());
        assert_eq!(h.pending(), 1);
        h.flush().unwrap();
        assert_eq!(db.get_tx("t-1").unwrap().unwrap(), tx);
        assert_eq!(h.pending(), 0);

        let (db, h) = hot(20);
        h.insert_tx(&tx).unwrap();
        let start = Instant::now();
        while db.get_tx("t-1").unwrap().is_none() {
            assert!(start.elapsed() < Duration::from_secs(10), "never written");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_batch_keeps_only_the_last_version_and_drops_short_lived_tokens() {
        let t = |h: &str, tx: &str| suite::token(h, tx, 2);
        let a = suite::sample_tx("a", "CLI.AAAAAAAAAA", "tx-a", 1000);
        let mut a2 = a.clone();
        a2.state = TxPhase::Authenticated;
        let mut a3 = a.clone();
        a3.state = TxPhase::Fetching;
        let b = suite::sample_tx("b", "CLI.AAAAAAAAAA", "tx-b", 1000);
        let ops = vec![
            Write::InsertTx(a.clone()),
            Write::UpdateTx(b.clone()),
            Write::InsertToken(t("h1", "a")),
            Write::UpdateTx(a2),
            Write::InsertToken(t("h2", "a")),
            Write::InsertToken(t("h3", "c")),
            Write::DeleteToken("h1".into()),
            Write::DeleteTx("b".into()),
            Write::UpdateTx(a3.clone()),
            Write::DeleteTokensOfTx("a".into()),
            Write::InsertTx(b.clone()),
        ];
        let (out, mut touched) = coalesce(
            ops.into_iter()
                .enumerate()
                .map(|(i, w)| (i as u64, w))
                .collect(),
        );
        touched.sort();
        assert_eq!(touched, vec!["a", "b"]);
        assert_eq!(
            out,
            vec![
                Write::InsertTx(a3),
                Write::DeleteTx("b".into()),
                Write::InsertTx(b),
                Write::InsertToken(t("h3", "c")),
                Write::DeleteTokensOfTx("a".into()),
            ]
        );
        // Inserted and deleted in one batch: the database never sees it.
        let (out, _) = coalesce(vec![
            (1, Write::InsertTx(a.clone())),
            (2, Write::DeleteTx("a".into())),
        ]);
        assert!(out.is_empty());
    }

    #[test]
    fn a_transaction_deleted_before_commit_never_reaches_the_database() {
        let (db, h) = hot(60_000);
        let tx = suite::sample_tx("t-1", "CLI.AAAAAAAAAA", "tx-1", 1000);
        h.insert_tx(&tx).unwrap();
        h.delete_tx("t-1").unwrap();
        assert!(h.get_tx("t-1").unwrap().is_none());
        h.flush().unwrap();
        assert!(db.find_tx_any("tx-1").unwrap().is_empty());
        assert_eq!(h.in_memory(), 0, "a committed tombstone leaves memory");
    }

    #[test]
    fn a_pair_found_absent_is_inserted_once_without_a_second_read() {
        let (db, h) = hot(60_000);
        assert!(h.find_tx("CLI.AAAAAAAAAA", "tx-1").unwrap().is_none());
        // A row appears in the database behind the store's back (never in production: one
        // server per database): the memo is what the insert relies on, so it goes unseen…
        db.insert_tx(&suite::sample_tx("t-db", "CLI.AAAAAAAAAA", "tx-1", 1000))
            .unwrap();
        h.insert_tx(&suite::sample_tx("t-1", "CLI.AAAAAAAAAA", "tx-1", 1000))
            .unwrap();
        // …but only once: the memo is used up, and the next insert of the pair is refused by
        // memory, and of another pair checked against the database.
        assert!(matches!(
            h.insert_tx(&suite::sample_tx("t-2", "CLI.AAAAAAAAAA", "tx-1", 1000)),
            Err(ServerError::Conflict(_))
        ));
        db.insert_tx(&suite::sample_tx("t-db2", "CLI.AAAAAAAAAA", "tx-2", 1000))
            .unwrap();
        assert!(matches!(
            h.insert_tx(&suite::sample_tx("t-3", "CLI.AAAAAAAAAA", "tx-2", 1000)),
            Err(ServerError::Conflict(_))
        ));
        // Found (not absent): no memo, the insert checks the database and refuses.
        assert!(h.find_tx("CLI.AAAAAAAAAA", "tx-2").unwrap().is_some());
        assert!(
            h.insert_tx(&suite::sample_tx("t-4", "CLI.AAAAAAAAAA", "tx-2", 1000))
                .is_err()
        );
    }

    #[test]
    fn deletion_hides_the_database_row_until_committed() {
        let (db, h) = hot(60_000);
        let mut tx = suite::sample_tx("t-1", "CLI.AAAAAAAAAA", "tx-1", 1000);
        tx.ticket_hash = Some("th".into());
        db.insert_tx(&tx).unwrap();
        assert_eq!(h.find_tx_by_ticket("th").unwrap().unwrap(), tx);
        h.delete_tx("t-1").unwrap();
        assert!(db.get_tx("t-1").unwrap().is_some(), "not yet committed");
        assert!(h.get_tx("t-1").unwrap().is_none());
        assert!(h.find_tx("CLI.AAAAAAAAAA", "tx-1").unwrap().is_none());
        assert!(h.find_tx_by_ticket("th").unwrap().is_none());
        assert!(matches!(h.update_tx(&tx), Err(ServerError::NotFound(_))));
        // The pair is free again before the delete is committed.
        let again = suite::sample_tx("t-2", "CLI.AAAAAAAAAA", "tx-1", 1000);
        h.insert_tx(&again).unwrap();
        h.flush().unwrap();
        assert_eq!(db.find_tx_any("tx-1").unwrap(), vec![again]);
    }

    #[test]
    fn a_withdrawn_ticket_stops_matching_before_commit() {
        let (db, h) = hot(60_000);
        let mut tx = suite::sample_tx("t-1", "CLI.AAAAAAAAAA", "tx-1", 1000);
        tx.ticket_hash = Some("th".into());
        db.insert_tx(&tx).unwrap();
        let mut withdrawn = tx.clone();
        withdrawn.ticket_hash = None;
        h.update_tx(&withdrawn).unwrap();
        assert!(h.find_tx_by_ticket("th").unwrap().is_none());
        assert!(db.find_tx_by_ticket("th").unwrap().is_some());
    }

    #[test]
    fn ended_transactions_leave_memory_once_committed() {
        let (db, h) = hot(0);
        let mut tx = suite::sample_tx("t-1", "CLI.AAAAAAAAAA", "tx-1", 1000);
        h.insert_tx(&tx).unwrap();
        tx.state = state::TAKEN;
        h.update_tx(&tx).unwrap();
        h.flush().unwrap();
        assert_eq!(h.in_memory(), 0);
        // Still found, from the database.
        assert_eq!(h.get_tx("t-1").unwrap().unwrap(), tx);
        assert_eq!(db.get_tx("t-1").unwrap().unwrap(), tx);
        // A live one stays.
        h.insert_tx(&suite::sample_tx("t-2", "CLI.AAAAAAAAAA", "tx-2", 1000))
            .unwrap();
        h.flush().unwrap();
        assert_eq!(h.in_memory(), 1);
    }

    #[test]
    fn scans_see_writes_not_yet_committed() {
        let (_, h) = hot(60_000);
        h.insert_tx(&suite::sample_tx("t-1", "CLI.AAAAAAAAAA", "tx-1", 1000))
            .unwrap();
        let due = h.txs_due(UnixTime(1000)).unwrap();
        assert_eq!(due.len(), 1);
        assert!(h.txs_due(UnixTime(999)).unwrap().is_empty());
        assert_eq!(h.find_tx_any("tx-1").unwrap().len(), 1);
    }

    /// Sets when the cached copy of `key` was read: `fresh` just now, or else older than
    /// [`REGISTRATION_TTL`]. The test drives the cache's age instead of waiting for it, so that
    /// neither a slow machine nor a fast one changes what it sees.
    fn age_cached<T>(map: &Mutex<HashMap<String, Cached<T>>>, key: &str, fresh: bool) {
        let mut m = lock(map);
        let c = m.get_mut(key).expect("a cached copy to age");
        c.at = if fresh {
            // `elapsed` saturates at zero: fresh for a long while, whatever the load.
            Instant::now() + Duration::from_secs(3_600)
        } else {
            Instant::now()
                .checked_sub(REGISTRATION_TTL + Duration::from_millis(1))
                .expect("a monotonic clock older than the TTL")
        };
    }

    #[test]
    fn registrations_are_cached_and_refreshed_by_own_writes() {
        let (db, h) = hot(0);
        let id = "CLI.AAAAAAAAAA";
        let mut sp = suite::sample_sp(id);
        h.insert_sp(&sp, UnixTime(1)).unwrap();
        assert_eq!(h.get_sp(id).unwrap().unwrap(), sp);
        // Another process's change is not seen while the cached copy is younger than the TTL…
        let mut other = sp.clone();
        other.status = "suspended".into();
        db.update_sp(&other).unwrap();
        age_cached(&h.shared.sps, id, true);
        assert_eq!(h.get_sp(id).unwrap().unwrap().status, "active", "cached");
        // …and is once it is older: the refresh reads the database again.
        age_cached(&h.shared.sps, id, false);
        assert_eq!(
            h.get_sp(id).unwrap().unwrap().status,
            "suspended",
            "refreshed"
        );
        // A change through this store is seen at once, although the cached copy is fresh.
        age_cached(&h.shared.sps, id, true);
        sp.name = "renamed".into();
        h.update_sp(&sp).unwrap();
        assert_eq!(h.get_sp(id).unwrap().unwrap(), sp, "own write");
        // A removal through this store too, and one by another process once the TTL is over.
        age_cached(&h.shared.sps, id, true);
        h.delete_sp(id).unwrap();
        assert_eq!(h.get_sp(id).unwrap(), None, "own removal");

        // The same for dataset registrations.
        let rid = "API.AAAAAAAAAA";
        let mut dp = suite::sample_dp(rid);
        h.insert_dp(&dp, UnixTime(1)).unwrap();
        assert_eq!(h.get_dp(rid).unwrap().unwrap(), dp);
        let mut moved = dp.clone();
        moved.endpoint = "http://127.0.0.1:9/elsewhere".into();
        db.update_dp(&moved).unwrap();
        age_cached(&h.shared.dps, rid, true);
        assert_eq!(h.get_dp(rid).unwrap().unwrap(), dp, "cached");
        age_cached(&h.shared.dps, rid, false);
        assert_eq!(h.get_dp(rid).unwrap().unwrap(), moved, "refreshed");
        age_cached(&h.shared.dps, rid, true);
        dp.name = "renamed".into();
        h.update_dp(&dp).unwrap();
        assert_eq!(h.get_dp(rid).unwrap().unwrap(), dp, "own write");
        db.delete_dp(rid).unwrap();
        age_cached(&h.shared.dps, rid, true);
        assert!(
            h.get_dp(rid).unwrap().is_some(),
            "cached after another's removal"
        );
        age_cached(&h.shared.dps, rid, false);
        assert_eq!(h.get_dp(rid).unwrap(), None, "removal seen after the TTL");
    }

    /// A backend whose writes fail: flush reports it instead of pretending.
    struct Failing(SqliteStore);

    impl Store for Failing {
        fn ready(&self) -> ServerResult<()> {
            self.0.ready()
        }
        fn insert_dp(&self, dp: &DpRecord, now: UnixTime) -> ServerResult<()> {
            self.0.insert_dp(dp, now)
        }
        fn update_dp(&self, dp: &DpRecord) -> ServerResult<()> {
            self.0.update_dp(dp)
        }
        fn get_dp(&self, id: &str) -> ServerResult<Option<DpRecord>> {
            self.0.get_dp(id)
        }
        fn list_dps(&self) -> ServerResult<Vec<DpRecord>> {
            self.0.list_dps()
        }
        fn insert_sp(&self, sp: &SpRecord, now: UnixTime) -> ServerResult<()> {
            self.0.insert_sp(sp, now)
        }
        fn update_sp(&self, sp: &SpRecord) -> ServerResult<()> {
            self.0.update_sp(sp)
        }
        fn get_sp(&self, id: &str) -> ServerResult<Option<SpRecord>> {
            self.0.get_sp(id)
        }
        fn list_sps(&self) -> ServerResult<Vec<SpRecord>> {
            self.0.list_sps()
        }
        fn delete_sp(&self, id: &str) -> ServerResult<()> {
            self.0.delete_sp(id)
        }
        fn delete_dp(&self, id: &str) -> ServerResult<()> {
            self.0.delete_dp(id)
        }
        fn insert_token(&self, t: &TokenRecord) -> ServerResult<()> {
            self.0.insert_token(t)
        }
        fn live_tokens(&self, now: UnixTime) -> ServerResult<Vec<TokenRecord>> {
            self.0.live_tokens(now)
        }
        fn delete_token(&self, h: &str) -> ServerResult<()> {
            self.0.delete_token(h)
        }
        fn delete_tokens_of_tx(&self, tx: &str) -> ServerResult<usize> {
            self.0.delete_tokens_of_tx(tx)
        }
        fn delete_expired_tokens(&self, now: UnixTime) -> ServerResult<usize> {
            self.0.delete_expired_tokens(now)
        }
        fn insert_tx(&self, tx: &TxRecord) -> ServerResult<()> {
            self.0.insert_tx(tx)
        }
        fn update_tx(&self, tx: &TxRecord) -> ServerResult<()> {
            self.0.update_tx(tx)
        }
        fn get_tx(&self, id: &str) -> ServerResult<Option<TxRecord>> {
            self.0.get_tx(id)
        }
        fn find_tx(&self, c: &str, t: &str) -> ServerResult<Option<TxRecord>> {
            self.0.find_tx(c, t)
        }
        fn find_tx_any(&self, t: &str) -> ServerResult<Vec<TxRecord>> {
            self.0.find_tx_any(t)
        }
        fn find_tx_by_ticket(&self, h: &str) -> ServerResult<Option<TxRecord>> {
            self.0.find_tx_by_ticket(h)
        }
        fn txs_due(&self, now: UnixTime) -> ServerResult<Vec<TxRecord>> {
            self.0.txs_due(now)
        }
        fn txs_in_state(&self, s: TxPhase) -> ServerResult<Vec<TxRecord>> {
            self.0.txs_in_state(s)
        }
        fn count_txs_by_state(&self) -> ServerResult<Vec<(TxPhase, u64)>> {
            self.0.count_txs_by_state()
        }
        fn delete_tx(&self, id: &str) -> ServerResult<()> {
            self.0.delete_tx(id)
        }
        fn insert_transfer(&self, t: &TransferRecord) -> ServerResult<()> {
            self.0.insert_transfer(t)
        }
        fn transfers_of(&self, s: &str) -> ServerResult<Vec<TransferRecord>> {
            self.0.transfers_of(s)
        }
        fn delete_transfers_before(&self, b: UnixTime) -> ServerResult<usize> {
            self.0.delete_transfers_before(b)
        }
        fn checkpoint(&self) -> ServerResult<()> {
            self.0.checkpoint()
        }
        fn apply(&self, _: &[Write]) -> ServerResult<()> {
            Err(ServerError::Storage("disk full".into()))
        }
    }

    #[test]
    fn a_failed_commit_is_reported_to_flush() {
        let h = HotStore::new(
            Arc::new(Failing(SqliteStore::in_memory().unwrap())),
            Duration::from_millis(0),
        )
        .unwrap();
        h.insert_tx(&suite::sample_tx("t-1", "CLI.AAAAAAAAAA", "tx-1", 1000))
            .unwrap();
        match h.flush() {
            Err(ServerError::Storage(m)) => assert!(m.contains("disk full"), "{m}"),
            other => panic!("{other:?}"),
        }
        // Later writes that succeed... still fail here (every apply fails); a flush with
        // nothing new queued since is clean.
        assert!(h.flush().is_ok());
    }

    #[test]
    fn dropping_the_store_commits_what_is_queued() {
        let (db, h) = hot(60_000);
        h.insert_tx(&suite::sample_tx("t-1", "CLI.AAAAAAAAAA", "tx-1", 1000))
            .unwrap();
        drop(h);
        assert!(db.get_tx("t-1").unwrap().is_some());
    }
}
