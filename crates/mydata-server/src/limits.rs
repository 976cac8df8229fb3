//! Operating-system resources of `mydata serve` (spec D48): the open-file limit, and the cap on
//! inbound connections that keeps file descriptors free for outgoing calls (the SP-API call, the
//! DP calls), the database and package files.

use crate::config::Config;

/// Raises the soft open-file limit (`RLIMIT_NOFILE`) to the hard limit; returns the soft limit
/// now in force. Where the hard limit is unlimited and the kernel refuses that as a soft limit,
/// the soft limit is raised to 1,048,576 (Linux's default `nr_open`) instead.
pub fn raise_nofile_limit() -> std::io::Result<u64> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => Ok(n),
        Err(_) => rlimit::increase_nofile_limit(1 << 20),
    }
}

/// The soft open-file limit in force (`None` where it cannot be read).
pub fn nofile_limit() -> Option<u64> {
    rlimit::Resource::NOFILE.get().ok().map(|(soft, _)| soft)
}

/// How many inbound connections the HTTP server accepts at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionCap {
    /// The open-file limit it was derived from (1,024 when it cannot be read).
    pub nofile: u64,
    /// The cap in all workers ([`Config::connection_cap`]).
    pub total: usize,
    /// HTTP worker threads.
    pub workers: usize,
    /// The cap of each worker (actix-web counts per worker): `total / workers`, at least 1.
    pub per_worker: usize,
}

/// The connection cap of `config` under the open-file limit in force now.
pub fn connection_cap(config: &Config) -> ConnectionCap {
    cap_under(config, nofile_limit().unwrap_or(1024))
}

fn cap_under(config: &Config, nofile: u64) -> ConnectionCap {
    let total = config.connection_cap(nofile);
    let workers = config.worker_count().max(1);
    ConnectionCap {
        nofile,
        total,
        workers,
        per_worker: (total / workers).max(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_is_divided_among_the_workers() {
        let c = Config {
            workers: 2,
            ..Config::default()
        };
        let cap = cap_under(&c, 1024);
        assert_eq!((cap.total, cap.workers, cap.per_worker), (768, 2, 384));
        let c = Config {
            workers: 4,
            max_connections: 2,
            ..Config::default()
        };
        assert_eq!(cap_under(&c, 1024).per_worker, 1);
    }
}
