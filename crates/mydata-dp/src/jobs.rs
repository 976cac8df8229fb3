//! The job store: one entry per `transaction_uid`, so that a repeated `transaction_uid` is
//! the same request (spec protocol.md §9.3).
//!
//! The first call of a series creates the job and runs the dataset; while the dataset
//! answers "pending", later calls run it again (it can look at [`JobInfo::first_seen`]);
//! while one call is running, a concurrent call with the same `transaction_uid` gets 429;
//! once the dataset gives a final answer, every later call gets that same answer without
//! running the dataset again. Jobs expire `ttl` seconds after their first call, and the
//! store is bounded in count and in package bytes (oldest evicted first).

use std::sync::Mutex;

use mydata_protocol::date::UnixTime;

use crate::answer::Final;
use crate::bounded::BoundedMap;

/// Bounds and timings of a [`JobStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobStoreConfig {
    /// Seconds a job lives after its first call (default 7,200: an access token's life).
    pub ttl_secs: u64,
    /// Most jobs kept (default 10,000).
    pub max_jobs: usize,
    /// Most package bytes kept in finished jobs (default 256 MiB).
    pub max_bytes: usize,
    /// `Retry-After` for a call that arrives while another call of the series is running
    /// (default 2).
    pub busy_retry_after: u32,
}

impl Default for JobStoreConfig {
    fn default() -> Self {
        JobStoreConfig {
            ttl_secs: 7_200,
            max_jobs: 10_000,
            max_bytes: 256 * 1024 * 1024,
            busy_retry_after: 2,
        }
    }
}

/// What the store knows about a call series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobInfo {
    /// When the first call of the series arrived.
    pub first_seen: UnixTime,
    /// Calls so far, including the current one.
    pub calls: u32,
}

#[derive(Debug)]
enum State {
    Idle,
    Busy,
    Done(Final),
}

#[derive(Debug)]
struct Job {
    owner: String,
    info: JobInfo,
    state: State,
}

/// The outcome of [`JobStore::claim`].
#[derive(Debug)]
pub enum Claim<'a> {
    /// Run the dataset for this call, then settle the guard.
    Run(JobGuard<'a>),
    /// The series already has a final answer.
    Done(Final),
    /// Another call of the series is running: answer 429 with this `Retry-After`.
    Busy {
        /// Seconds.
        retry_after: u32,
    },
    /// The series belongs to another citizen or caller: answer 403.
    Conflict,
}

/// The job store. Thread-safe; the lock is never held while a dataset runs.
#[derive(Debug)]
pub struct JobStore {
    inner: Mutex<Inner>,
    config: JobStoreConfig,
}

#[derive(Debug)]
struct Inner {
    map: BoundedMap<String, Job>,
    claims: u64,
}

impl Default for JobStore {
    fn default() -> Self {
        Self::new(JobStoreConfig::default())
    }
}

impl JobStore {
    /// An empty store.
    pub fn new(config: JobStoreConfig) -> Self {
        JobStore {
            inner: Mutex::new(Inner {
                map: BoundedMap::new(config.max_jobs, config.max_bytes),
                claims: 0,
            }),
            config,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a call of the series `key` made for `owner` (the citizen, e.g. the token's
    /// `sub`) at `now`, and says what to do with it.
    pub fn claim(&self, key: &str, owner: &str, now: UnixTime) -> Claim<'_> {
        let mut inner = self.lock();
        inner.claims = inner.claims.wrapping_add(1);
        if inner.claims.is_multiple_of(1024) {
            inner.map.purge_expired(now);
        }
        let key_owned = key.to_owned();
        if let Some(job) = inner.map.get_mut(&key_owned, now) {
            if job.owner != owner {
                return Claim::Conflict;
            }
            job.info.calls = job.info.calls.saturating_add(1);
            return match &job.state {
                State::Busy => Claim::Busy {
                    retry_after: self.config.busy_retry_after.max(1),
                },
                State::Done(f) => Claim::Done(f.clone()),
                State::Idle => {
                    job.state = State::Busy;
                    Claim::Run(JobGuard {
                        store: self,
                        key: key_owned,
                        info: job.info,
                        at: now,
                        settled: false,
                    })
                }
            };
        }
        let info = JobInfo {
            first_seen: now,
            calls: 1,
        };
        let ttl = i64::try_from(self.config.ttl_secs).unwrap_or(i64::MAX);
        inner.map.insert(
            key_owned.clone(),
            Job {
                owner: owner.to_owned(),
                info,
                state: State::Busy,
            },
            UnixTime(now.0.saturating_add(ttl)),
            0,
        );
        Claim::Run(JobGuard {
            store: self,
            key: key_owned,
            info,
            at: now,
            settled: false,
        })
    }

    fn settle(&self, key: &String, at: UnixTime, state: State) {
        let mut inner = self.lock();
        let weight = match &state {
            State::Done(f) => f.weight(),
            _ => 0,
        };
        if let Some(job) = inner.map.get_mut(key, at) {
            job.state = state;
            inner.map.set_weight(key, weight);
        }
    }

    /// Jobs held.
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    /// Whether no job is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Package bytes held by finished jobs.
    pub fn bytes(&self) -> usize {
        self.lock().map.total_weight()
    }
}

/// The right to run the dataset for one call. Dropping it without settling (for example
/// when the caller disconnects) lets the next call of the series run the dataset again.
#[derive(Debug)]
pub struct JobGuard<'a> {
    store: &'a JobStore,
    key: String,
    info: JobInfo,
    at: UnixTime,
    settled: bool,
}

impl JobGuard<'_> {
    /// The series so far.
    pub fn info(&self) -> JobInfo {
        self.info
    }

    /// The dataset is still working: the next call runs it again.
    pub fn pending(mut self) {
        self.settled = true;
        self.store.settle(&self.key, self.at, State::Idle);
    }

    /// The final answer: every later call of the series gets it.
    pub fn finish(mut self, answer: Final) {
        self.settled = true;
        self.store.settle(&self.key, self.at, State::Done(answer));
    }
}

impl Drop for JobGuard<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.store.settle(&self.key, self.at, State::Idle);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn run(c: Claim<'_>) -> JobGuard<'_> {
        match c {
            Claim::Run(g) => g,
            other => panic!("expected Run, got {other:?}"),
        }
    }

    #[test]
    fn series_lifecycle() {
        let s = JobStore::default();
        let g = run(s.claim("t1", "alice", UnixTime(100)));
        assert_eq!(
            g.info(),
            JobInfo {
                first_seen: UnixTime(100),
                calls: 1
            }
        );
        // A concurrent call while the first runs.
        assert!(matches!(
            s.claim("t1", "alice", UnixTime(101)),
            Claim::Busy { retry_after: 2 }
        ));
        g.pending();
        let g = run(s.claim("t1", "alice", UnixTime(105)));
        assert_eq!(
            g.info(),
            JobInfo {
                first_seen: UnixTime(100),
                calls: 3
            }
        );
        let pkg: Arc<[u8]> = Arc::from(vec![1u8; 10]);
        g.finish(Final::Package(pkg.clone()));
        assert_eq!(s.bytes(), 10);
        match s.claim("t1", "alice", UnixTime(106)) {
            Claim::Done(Final::Package(p)) => assert!(Arc::ptr_eq(&p, &pkg)),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            s.claim("t1", "mallory", UnixTime(107)),
            Claim::Conflict
        ));
        // Another series is independent.
        run(s.claim("t2", "bob", UnixTime(107))).finish(Final::NoData);
        assert!(matches!(
            s.claim("t2", "bob", UnixTime(108)),
            Claim::Done(Final::NoData)
        ));
    }

    #[test]
    fn dropped_guard_releases() {
        let s = JobStore::default();
        drop(run(s.claim("t", "a", UnixTime(0))));
        let g = run(s.claim("t", "a", UnixTime(1)));
        assert_eq!(g.info().first_seen, UnixTime(0));
    }

    #[test]
    fn expiry_and_bounds() {
        let s = JobStore::new(JobStoreConfig {
            ttl_secs: 10,
            max_jobs: 2,
            max_bytes: 100,
            busy_retry_after: 0,
        });
        run(s.claim("a", "x", UnixTime(0))).finish(Final::Forbidden);
        assert!(matches!(
            s.claim("a", "x", UnixTime(9)),
            Claim::Done(Final::Forbidden)
        ));
        // Expired: a new series with a new first_seen.
        let g = run(s.claim("a", "x", UnixTime(10)));
        assert_eq!(
            g.info(),
            JobInfo {
                first_seen: UnixTime(10),
                calls: 1
            }
        );
        g.pending();
        assert!(matches!(s.claim("a", "x", UnixTime(10)), Claim::Run(_)));
        run(s.claim("b", "x", UnixTime(11))).pending();
        run(s.claim("c", "x", UnixTime(11))).pending();
        assert_eq!(s.len(), 2, "oldest evicted");
        run(s.claim("d", "x", UnixTime(11))).finish(Final::Package(Arc::from(vec![0u8; 150])));
        assert!(s.bytes() <= 100);
        // busy_retry_after 0 is sent as 1.
        let _g = run(s.claim("e", "x", UnixTime(11)));
        assert!(matches!(
            s.claim("e", "x", UnixTime(11)),
            Claim::Busy { retry_after: 1 }
        ));
    }
}
