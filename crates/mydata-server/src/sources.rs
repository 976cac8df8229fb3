//! The MyData-API's index of registered source IPs (spec D26).

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::{Mutex, RwLock};
use std::time::Instant;

use crate::storage::SpRecord;
use crate::storage::hot::REGISTRATION_TTL;

/// The source IPs registered for the MyData-API, each with the SPs that registered it, kept in
/// memory so that a poll does not read every SP record (`engine::data`). Built from storage when
/// the platform starts; [`Platform::register_sp`] adds to it.
#[derive(Debug, Default)]
pub struct SourceIndex {
    by_ip: RwLock<HashMap<IpAddr, BTreeSet<String>>>,
    /// When the index was last rebuilt from storage (`None`: never).
    loaded: Mutex<Option<Instant>>,
}

impl SourceIndex {
    /// The index of `sps`, as loaded now.
    pub fn from_sps(sps: &[SpRecord]) -> Self {
        let index = SourceIndex::default();
        index.replace(sps);
        index
    }

    /// Rebuilds the whole index from `sps` (every registration in storage).
    pub fn replace(&self, sps: &[SpRecord]) {
        let mut fresh: HashMap<IpAddr, BTreeSet<String>> = HashMap::new();
        for sp in sps {
            for ip in sp
                .allowed_ips
                .iter()
                .filter_map(|a| a.parse::<IpAddr>().ok())
            {
                fresh.entry(ip).or_default().insert(sp.client_id.clone());
            }
        }
        *self.by_ip.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        *self.loaded.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }

    /// Whether the index is older than [`REGISTRATION_TTL`] and this caller should rebuild
    /// it: one caller at a time is told so (the others keep using the index as it is).
    pub fn claim_refresh(&self) -> bool {
        let Ok(mut loaded) = self.loaded.try_lock() else {
            return false;
        };
        if loaded.is_some_and(|at| at.elapsed() < REGISTRATION_TTL) {
            return false;
        }
        // Claimed: the next callers wait for the next period, even if this rebuild fails.
        *loaded = Some(Instant::now());
        true
    }

    /// Adds `sp`'s source IPs, replacing what the index held for its `client_id` (use it after
    /// any change of an SP's `allowed_ips`).
    pub fn insert(&self, sp: &SpRecord) {
        let mut m = self.by_ip.write().unwrap_or_else(|e| e.into_inner());
        remove_client(&mut m, &sp.client_id);
        for ip in sp
            .allowed_ips
            .iter()
            .filter_map(|a| a.parse::<IpAddr>().ok())
        {
            m.entry(ip).or_default().insert(sp.client_id.clone());
        }
    }

    /// Forgets an SP.
    pub fn remove(&self, client_id: &str) {
        let mut m = self.by_ip.write().unwrap_or_else(|e| e.into_inner());
        remove_client(&mut m, client_id);
    }

    /// Whether some SP registered `ip`.
    pub fn is_registered(&self, ip: IpAddr) -> bool {
        let m = self.by_ip.read().unwrap_or_else(|e| e.into_inner());
        m.get(&ip).is_some_and(|c| !c.is_empty())
    }

    /// The SPs that registered `ip`.
    pub fn clients(&self, ip: IpAddr) -> Vec<String> {
        let m = self.by_ip.read().unwrap_or_else(|e| e.into_inner());
        m.get(&ip)
            .map(|c| c.iter().cloned().collect())
            .unwrap_or_default()
    }
}

fn remove_client(m: &mut HashMap<IpAddr, BTreeSet<String>>, client_id: &str) {
    m.retain(|_, clients| {
        clients.remove(client_id);
        !clients.is_empty()
    });
}
