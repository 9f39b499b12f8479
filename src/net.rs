//! Who is on the other end: the client address of a request, believing
//! `X-Forwarded-For` only as far as `server.trusted_proxies` allows, and the
//! address group rate limits count (an IPv6 client owns a whole /64).
//!
//! One function ([`client_addr`]) for the limiters and the audit trail, so
//! that they never disagree on who a request came from.

use std::net::{IpAddr, Ipv6Addr};

use actix_web::HttpRequest;
use actix_web::http::header::HeaderName;
use ipnet::IpNet;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The proxies whose `X-Forwarded-For` entries are believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Parses CIDRs (`10.0.0.0/8`, `::1/128`) or bare addresses; the error
    /// names the entry at fault.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, String> {
        entries
            .iter()
            .map(|entry| {
                let entry = entry.as_ref().trim();
                entry
                    .parse::<IpNet>()
                    .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("`{entry}` is not an address or a CIDR"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    /// Whether `ip` is one of the trusted proxies.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(&ip))
    }
}

/// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) is the IPv4 client it maps.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// One `X-Forwarded-For` entry: an address, possibly with a port
/// (`1.2.3.4:5678`, `[::1]:80`) as some proxies write it.
fn parse_entry(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(rest) = entry.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    let (host, port) = entry.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

/// The client of a connection from `peer` that carried these
/// `X-Forwarded-For` values (in header order).
///
/// The header is only believed when the peer is a trusted proxy; then the
/// chain is walked from the right (the entry the nearest proxy wrote),
/// skipping trusted proxies, and the first untrusted address is the client.
/// Entries left of it were written by the client itself and prove nothing.
/// A malformed entry stops the walk at the last proxy that was believed.
pub fn resolve<'a>(
    peer: Option<IpAddr>,
    forwarded_for: impl IntoIterator<Item = &'a str>,
    trusted: &TrustedProxies,
) -> Option<IpAddr> {
    let mut client = canonical(peer?);
    if !trusted.contains(client) {
        return Some(client);
    }
    let entries: Vec<&str> = forwarded_for
        .into_iter()
        .flat_map(|value| value.split(','))
        .collect();
    for entry in entries.iter().rev() {
        let Some(ip) = parse_entry(entry).map(canonical) else {
            break;
        };
        client = ip;
        if !trusted.contains(ip) {
            break;
        }
    }
    Some(client)
}

/// The client address of `req` (see [`resolve`]); `None` only when the
/// connection has no peer address (never over TCP).
pub fn client_addr(req: &HttpRequest, trusted: &TrustedProxies) -> Option<IpAddr> {
    let values = req
        .headers()
        .get_all(X_FORWARDED_FOR)
        .filter_map(|v| v.to_str().ok());
    resolve(req.peer_addr().map(|a| a.ip()), values, trusted)
}

/// The group a limit counts `ip` in: the address itself for IPv4, its /64
/// for IPv6 (one subscriber's link; they can pick any address in it).
pub fn limit_key(ip: IpAddr) -> IpAddr {
    match canonical(ip) {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & (u128::MAX << 64);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn proxies(list: &[&str]) -> TrustedProxies {
        TrustedProxies::parse(list).unwrap()
    }

    #[test]
    fn forwarded_for_is_ignored_from_an_untrusted_peer() {
        let none = TrustedProxies::default();
        assert_eq!(
            resolve(Some(ip("203.0.113.9")), ["198.51.100.1"], &none),
            Some(ip("203.0.113.9"))
        );
        let lan = proxies(&["10.0.0.0/8"]);
        assert_eq!(
            resolve(Some(ip("203.0.113.9")), ["198.51.100.1"], &lan),
            Some(ip("203.0.113.9"))
        );
    }

    #[test]
    fn the_chain_is_walked_from_the_right_past_trusted_proxies() {
        let lan = proxies(&["10.0.0.0/8", "192.0.2.7"]);
        // The client forged the first entry; the two proxies wrote the rest.
        let chain = ["1.1.1.1, 198.51.100.4", "192.0.2.7"];
        assert_eq!(
            resolve(Some(ip("10.0.0.2")), chain, &lan),
            Some(ip("198.51.100.4"))
        );
        // No header: the proxy itself is the client.
        assert_eq!(
            resolve(Some(ip("10.0.0.2")), [], &lan),
            Some(ip("10.0.0.2"))
        );
        // Every hop trusted: the leftmost one.
        assert_eq!(
            resolve(Some(ip("10.0.0.2")), ["10.1.1.1, 10.2.2.2"], &lan),
            Some(ip("10.1.1.1"))
        );
        // Garbage stops the walk at the last believed hop.
        assert_eq!(
            resolve(Some(ip("10.0.0.2")), ["198.51.100.4, nonsense"], &lan),
            Some(ip("10.0.0.2"))
        );
        // Ports and brackets, as some proxies write them; mapped IPv4.
        assert_eq!(
            resolve(Some(ip("10.0.0.2")), ["198.51.100.4:5555"], &lan),
            Some(ip("198.51.100.4"))
        );
        assert_eq!(
            resolve(Some(ip("10.0.0.2")), ["[2001:db8::1]:443"], &lan),
            Some(ip("2001:db8::1"))
        );
        assert_eq!(
            resolve(Some(ip("::ffff:10.0.0.2")), ["::ffff:198.51.100.4"], &lan),
            Some(ip("198.51.100.4"))
        );
    }

    #[test]
    fn ipv6_is_counted_per_64() {
        assert_eq!(
            limit_key(ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd")),
            ip("2001:db8:1:2::")
        );
        assert_eq!(
            limit_key(ip("2001:db8:1:2::1")),
            limit_key(ip("2001:db8:1:2::ffff"))
        );
        assert_ne!(
            limit_key(ip("2001:db8:1:2::1")),
            limit_key(ip("2001:db8:1:3::1"))
        );
        assert_eq!(limit_key(ip("198.51.100.4")), ip("198.51.100.4"));
    }

    #[test]
    fn bad_proxy_entries_are_named() {
        let err = TrustedProxies::parse(&["10.0.0.0/8", "ten"]).unwrap_err();
        assert!(err.contains("ten"), "{err}");
        assert!(proxies(&["::1"]).contains(ip("::1")));
    }
}
