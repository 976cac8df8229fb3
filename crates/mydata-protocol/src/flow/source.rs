//! The source IP of a request (spec D26): the TCP peer, or, behind trusted reverse proxies, the
//! right-most address in `X-Forwarded-For` that is not one of them.

use std::net::IpAddr;

use ipnet::IpNet;

/// Trusted reverse proxies (D26): addresses or CIDR prefixes whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Parses each entry as an address (`10.0.0.5`, `::1`) or a CIDR prefix (`10.0.0.0/8`).
    /// Returns the first entry that is neither.
    pub fn parse<'a>(entries: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        let mut nets = Vec::new();
        for e in entries {
            let e = e.trim();
            let net = match e.parse::<IpNet>() {
                Ok(n) => n,
                Err(_) => match e.parse::<IpAddr>() {
                    Ok(a) => IpNet::from(a.to_canonical()),
                    Err(_) => return Err(e.to_string()),
                },
            };
            nets.push(net);
        }
        Ok(TrustedProxies(nets))
    }

    /// Whether no proxy is trusted (the source IP is then always the TCP peer).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `ip` is a trusted proxy.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|n| n.contains(&ip))
    }
}

/// The source IP of a request from TCP peer `peer` carrying the `X-Forwarded-For` header values
/// `forwarded_for` (in the order received; several headers are one list, D26).
///
/// An IPv4 client of a dual-stack listener (`::ffff:a.b.c.d`) is its IPv4 address. When the peer
/// is a trusted proxy, the list is read from the right: the first address that is not a trusted
/// proxy is the source; when every address is trusted, the left-most is. An entry that is not an
/// address stops the walk at the hop to its right (a client cannot choose its IP by writing one).
pub fn source_ip(peer: IpAddr, forwarded_for: &[&str], trusted: &TrustedProxies) -> IpAddr {
    let mut source = peer.to_canonical();
    if !trusted.contains(source) {
        return source;
    }
    let hops = forwarded_for
        .iter()
        .flat_map(|h| h.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    for hop in hops.iter().rev() {
        let Ok(ip) = hop.parse::<IpAddr>().map(|a| a.to_canonical()) else {
            return source;
        };
        source = ip;
        if !trusted.contains(ip) {
            return ip;
        }
    }
    source
}

/// The `for=` addresses of RFC 7239 `Forwarded` header values, in order, as
/// [`source_ip`] takes `X-Forwarded-For` hops: quotes, IPv6 brackets and ports removed. A node
/// that is not an address (`unknown`, an obfuscated `_name`) is kept as written, so that
/// [`source_ip`] stops there.
pub fn forwarded_for<'a>(values: &[&'a str]) -> Vec<&'a str> {
    let mut out = Vec::new();
    for element in values.iter().flat_map(|v| v.split(',')) {
        for pair in element.split(';') {
            let Some((name, value)) = pair.trim().split_once('=') else {
                continue;
            };
            if !name.trim().eq_ignore_ascii_case("for") {
                continue;
            }
            let v = value.trim().trim_matches('"');
            let node = match v.strip_prefix('[') {
                Some(rest) => rest.split(']').next().unwrap_or(rest),
                // `a.b.c.d:port`; a bare IPv6 address is not valid here but taken whole.
                None if v.matches(':').count() == 1 => v.split(':').next().unwrap_or(v),
                None => v,
            };
            out.push(node);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn without_trusted_proxies_the_peer_is_the_source_whatever_the_header() {
        let none = TrustedProxies::default();
        assert_eq!(
            source_ip(ip("192.0.2.1"), &["198.51.100.9"], &none),
            ip("192.0.2.1")
        );
        assert_eq!(
            source_ip(ip("::ffff:192.0.2.1"), &[], &none),
            ip("192.0.2.1")
        );
        // A peer that is not trusted is believed over its header.
        let lb = TrustedProxies::parse(["10.0.0.0/8"]).unwrap();
        assert_eq!(
            source_ip(ip("192.0.2.1"), &["198.51.100.9"], &lb),
            ip("192.0.2.1")
        );
    }

    #[test]
    fn behind_trusted_proxies_the_rightmost_untrusted_address_is_the_source() {
        let t = TrustedProxies::parse(["10.0.0.0/8", "2001:db8::1"]).unwrap();
        // The client wrote its own first entry; the proxies appended the real one.
        assert_eq!(
            source_ip(ip("10.0.0.2"), &["6.6.6.6, 198.51.100.7", "10.1.1.1"], &t),
            ip("198.51.100.7")
        );
        assert_eq!(
            source_ip(ip("2001:db8::1"), &["::ffff:203.0.113.5"], &t),
            ip("203.0.113.5")
        );
        // Every hop trusted: the left-most.
        assert_eq!(
            source_ip(ip("10.0.0.2"), &["10.9.9.9, 10.1.1.1"], &t),
            ip("10.9.9.9")
        );
        // No header: the proxy itself (never a registered SP address in practice).
        assert_eq!(source_ip(ip("10.0.0.2"), &[], &t), ip("10.0.0.2"));
        // Garbage stops the walk at the hop to its right.
        assert_eq!(
            source_ip(ip("10.0.0.2"), &["198.51.100.7, junk, 10.1.1.1"], &t),
            ip("10.1.1.1")
        );
    }

    #[test]
    fn trusted_proxies_parse_addresses_and_prefixes_and_name_a_bad_entry() {
        let t = TrustedProxies::parse(["127.0.0.1", " 10.0.0.0/8 ", "fd00::/8"]).unwrap();
        assert!(t.contains(ip("127.0.0.1")) && t.contains(ip("::ffff:10.2.3.4")));
        assert!(t.contains(ip("fd12::1")) && !t.contains(ip("127.0.0.2")));
        assert_eq!(
            TrustedProxies::parse(["10.0.0.0/33"]),
            Err("10.0.0.0/33".into())
        );
        assert_eq!(
            TrustedProxies::parse(["proxy.local"]),
            Err("proxy.local".into())
        );
        assert!(TrustedProxies::parse([]).unwrap().is_empty());
    }

    #[test]
    fn forwarded_header_nodes_are_read_like_x_forwarded_for() {
        let v = [
            "for=192.0.2.43, for=\"[2001:db8:cafe::17]:4711\";proto=https",
            "For=\"198.51.100.7:8443\";by=203.0.113.1, for=unknown",
        ];
        assert_eq!(
            forwarded_for(&v),
            ["192.0.2.43", "2001:db8:cafe::17", "198.51.100.7", "unknown"]
        );
        let proxies = TrustedProxies::parse(["10.0.0.0/8"]).unwrap();
        let hops = forwarded_for(&["for=203.0.113.9, for=10.0.0.5"]);
        assert_eq!(
            source_ip(ip("10.0.0.1"), &hops, &proxies),
            ip("203.0.113.9")
        );
        assert!(forwarded_for(&["proto=https;by=10.0.0.1"]).is_empty());
    }
}
