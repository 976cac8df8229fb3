//! The MyData-API's index of registered source IPs (spec D26).

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use ipnet::IpNet;
use std::sync::{Mutex, RwLock};
use std::time::Instant;

use crate::storage::SpRecord;
use crate::storage::hot::REGISTRATION_TTL;

/// The source IPs registered for the MyData-API, each with the SPs that registered it, kept in
/// memory so that a poll does not read every SP record (`engine::data`). Built from storage when
/// the platform starts; [`Platform::register_sp`] adds to it.
#[derive(Debug, Default)]
pub struct SourceIndex {
    /// Each registered entry as a network (an address is a /32 or /128), with its SPs.
    by_ip: RwLock<HashMap<IpNet, BTreeSet<String>>>,
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
        let mut fresh: HashMap<IpNet, BTreeSet<String>> = HashMap::new();
        for sp in sps {
            for ip in sp.allowed_ips.iter().filter_map(|a| parse_entry(a)) {
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
        for ip in sp.allowed_ips.iter().filter_map(|a| parse_entry(a)) {
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
        // The exact address first (one hash lookup), then the prefixes.
        m.get(&IpNet::from(ip)).is_some_and(|c| !c.is_empty())
            || m.iter().any(|(net, c)| net.contains(&ip) && !c.is_empty())
    }

    /// The SPs that registered `ip`, by address or by a prefix holding it.
    pub fn clients(&self, ip: IpAddr) -> Vec<String> {
        let m = self.by_ip.read().unwrap_or_else(|e| e.into_inner());
        let mut out = BTreeSet::new();
        for (net, c) in m.iter() {
            if net.contains(&ip) {
                out.extend(c.iter().cloned());
            }
        }
        out.into_iter().collect()
    }
}

/// One entry of an SP's `allowed_ips` (spec D26): an address, or a CIDR prefix with its host
/// bits clear, at least /24 for IPv4 and /56 for IPv6 (`10.1.2.0/24`, `2001:db8:0:100::/56`). Written as it was given: an address without a
/// prefix length. Parsed from text by [`FromStr`](std::str::FromStr) (registration flags, the
/// sandbox file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AllowedSource(pub IpNet);

impl std::str::FromStr for AllowedSource {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        parse_entry(s).map(AllowedSource).ok_or_else(|| {
            format!(
                "{s:?} is neither an IP address nor a CIDR prefix with its host bits clear, of \
                 at least /{MIN_PREFIX_V4} for IPv4 or /{MIN_PREFIX_V6} for IPv6 (10.1.2.0/24)"
            )
        })
    }
}

impl std::fmt::Display for AllowedSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.prefix_len() == self.0.max_prefix_len() {
            self.0.addr().fmt(f)
        } else {
            self.0.fmt(f)
        }
    }
}

impl From<IpAddr> for AllowedSource {
    fn from(ip: IpAddr) -> Self {
        AllowedSource(IpNet::from(ip.to_canonical()))
    }
}

impl<'de> serde::Deserialize<'de> for AllowedSource {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for AllowedSource {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// An `allowed_ips` entry: an address, or a CIDR prefix with its host bits clear, at least
/// [`MIN_PREFIX_V4`] / [`MIN_PREFIX_V6`] long. `None` for anything else (refused at
/// registration).
pub fn parse_entry(entry: &str) -> Option<IpNet> {
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(IpNet::from(ip.to_canonical()));
    }
    let net = entry.parse::<IpNet>().ok()?;
    let narrow_enough = match net {
        IpNet::V4(n) => n.prefix_len() >= MIN_PREFIX_V4,
        IpNet::V6(n) => n.prefix_len() >= MIN_PREFIX_V6,
    };
    (net.trunc() == net && narrow_enough).then_some(net)
}

/// The widest IPv4 prefix an SP may register (spec D26): /24.
pub const MIN_PREFIX_V4: u8 = 24;
/// The widest IPv6 prefix an SP may register (spec D26): /56.
pub const MIN_PREFIX_V6: u8 = 56;

/// Whether the `allowed_ips` entry `entry` holds `ip`.
pub fn entry_contains(entry: &str, ip: IpAddr) -> bool {
    parse_entry(entry).is_some_and(|net| net.contains(&ip))
}

fn remove_client(m: &mut HashMap<IpNet, BTreeSet<String>>, client_id: &str) {
    m.retain(|_, clients| {
        clients.remove(client_id);
        !clients.is_empty()
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_addresses_or_clean_prefixes() {
        let a: AllowedSource = "10.1.2.0/24".parse().unwrap();
        assert_eq!(a.to_string(), "10.1.2.0/24");
        assert!(
            "10.1.0.0/16".parse::<AllowedSource>().is_err(),
            "wider than /24"
        );
        assert!(
            "2001:db8::/32".parse::<AllowedSource>().is_err(),
            "wider than /56"
        );
        let b: AllowedSource = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(b.to_string(), "192.0.2.1");
        assert_eq!(
            "2001:db8:0:100::/56"
                .parse::<AllowedSource>()
                .unwrap()
                .to_string(),
            "2001:db8:0:100::/56"
        );
        assert!(
            "10.1.2.3/24".parse::<AllowedSource>().is_err(),
            "host bits set"
        );
        assert!("10.1.0.0/33".parse::<AllowedSource>().is_err());
        assert!("example.org".parse::<AllowedSource>().is_err());
        assert!(entry_contains("10.1.2.0/24", "10.1.2.200".parse().unwrap()));
        assert!(!entry_contains("10.1.2.0/24", "10.1.3.1".parse().unwrap()));
        assert!(entry_contains(
            "198.51.100.7",
            "198.51.100.7".parse().unwrap()
        ));
    }

    #[test]
    fn the_index_finds_addresses_inside_registered_prefixes() {
        let sp = |id: &str, ips: &[&str]| SpRecord {
            client_id: id.into(),
            allowed_ips: ips.iter().map(|s| s.to_string()).collect(),
            ..crate::storage::suite::sample_sp(id)
        };
        let index = SourceIndex::from_sps(&[
            sp("CLI.A", &["10.1.2.0/24"]),
            sp("CLI.B", &["10.1.2.3", "2001:db8:0:100::/56"]),
        ]);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(index.is_registered(ip("10.1.2.99")));
        assert_eq!(index.clients(ip("10.1.2.3")), vec!["CLI.A", "CLI.B"]);
        assert!(index.is_registered(ip("2001:db8:0:1ff::5")));
        assert!(!index.is_registered(ip("10.1.3.1")));
        index.remove("CLI.A");
        assert!(!index.is_registered(ip("10.1.2.99")));
        assert!(index.is_registered(ip("10.1.2.3")));
    }
}
