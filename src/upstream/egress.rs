//! Where the upstream client may connect. The configured upstreams are the operator's choice
//! and may sit on a private network; every other destination can only come from a redirect an
//! upstream sent, and must be a public address unless `redirect.allow_private` is set. Otherwise
//! one hostile or compromised upstream (or a spoofed CDN URL) turns the mirror into a proxy to
//! its own loopback, the cloud metadata service (169.254.169.254) or the private network (SSRF).
//!
//! The check runs inside the client's TCP connector (`upstream::connector`), on the addresses
//! it is about to connect to, after name resolution: a host name that resolves to a public
//! address when checked and to a private one when connected (DNS rebinding) cannot slip
//! through.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

use url::Url;

use crate::{net::embedded_ipv4::embedded_ipv4, upstream::proxy::Proxy};

/// Why `ip` is not a public unicast address (its kind, for error messages), or `None` when it
/// is one. IPv4 inside IPv6 (mapped `::ffff:a.b.c.d`, compatible `::a.b.c.d`, NAT64
/// `64:ff9b::a.b.c.d` and 6to4 `2002:aabb:ccdd::`, read by [`embedded_ipv4`]) is judged by
/// the IPv4 address it carries, since that is where the packets end up.
pub fn non_public(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => non_public_v4(v4),
        IpAddr::V6(v6) => non_public_v6(v6),
    }
}

fn non_public_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        _ if ip.is_unspecified() => "unspecified",
        (0, _, _) => "\"this network\" (0.0.0.0/8)",
        (127, _, _) => "loopback",
        (10, _, _) | (192, 168, _) => "private",
        (172, 16..=31, _) => "private",
        (169, 254, _) => "link-local (cloud metadata lives here)",
        (100, 64..=127, _) => "shared (carrier-grade NAT)",
        (192, 0, 0) => "IETF protocol assignment",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "documentation",
        (198, 18..=19, _) => "benchmarking",
        (224..=239, _, _) => "multicast",
        (240..=255, _, _) => "reserved or broadcast",
        _ => return None,
    })
}

fn non_public_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let segments = ip.segments();
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if ip.is_loopback() {
        return Some("loopback");
    }
    if let Some(v4) = embedded_ipv4(ip) {
        return non_public_v4(v4);
    }
    let first = segments[0];
    Some(match first {
        _ if first & 0xfe00 == 0xfc00 => "unique local (private)",
        _ if first & 0xffc0 == 0xfe80 => "link-local",
        _ if first & 0xffc0 == 0xfec0 => "site-local (private)",
        _ if first & 0xff00 == 0xff00 => "multicast",
        0x2001 if segments[1] == 0x0db8 => "documentation",
        // Only 2000::/3 is allocated as global unicast; the rest (discard-only 100::/64,
        // local-use NAT64 64:ff9b:1::/48 ...) is not reachable on the internet.
        _ if first & 0xe000 != 0x2000 => "reserved (not global unicast)",
        _ => return None,
    })
}

/// A connection the policy refused; carried through awc as a resolver error so the upstream
/// client can tell it from a DNS failure (see `upstream::send_error`).
#[derive(Debug)]
pub struct Refused {
    pub host: String,
    pub port: u16,
    /// Every address the host had, each with why it is not public.
    pub addresses: Vec<(IpAddr, &'static str)>,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "refusing to connect to {}:{}: ", self.host, self.port)?;
        for (i, (ip, kind)) in self.addresses.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            write!(f, "{sep}{ip} is {kind}")?;
        }
        write!(
            f,
            "; a redirect may lead only to a public address unless redirect.allow_private = true"
        )
    }
}

impl std::error::Error for Refused {}

/// Which destinations need no check: the configured upstreams, by host and port.
#[derive(Debug, Clone)]
pub struct Policy {
    allow_private: bool,
    trusted: Vec<(String, u16)>,
}

impl Policy {
    /// `trusted`: the URLs of every configured upstream and configured realm, never a realm
    /// learned from a challenge, which is as untrusted as a redirect.
    pub fn new<'a>(allow_private: bool, trusted: impl IntoIterator<Item = &'a Url>) -> Policy {
        Policy {
            allow_private,
            trusted: trusted.into_iter().filter_map(origin).collect(),
        }
    }

    /// Also trusted: the egress proxies, configured as the upstreams are (a company's proxy
    /// is often on a private address).
    pub fn trusting_proxies<'a>(mut self, proxies: impl IntoIterator<Item = &'a Proxy>) -> Policy {
        self.trusted
            .extend(proxies.into_iter().map(|p| (p.host.clone(), p.port)));
        self
    }

    /// Whether `host:port` is a configured upstream or proxy (or every address is allowed).
    pub fn trusts(&self, host: &str, port: u16) -> bool {
        self.allow_private
            || self
                .trusted
                .iter()
                .any(|(h, p)| *p == port && h.eq_ignore_ascii_case(host))
    }

    /// The addresses of `host` the client may connect to: all of them for a trusted host,
    /// otherwise the public ones, and an error when none is left.
    pub fn filter(
        &self,
        host: &str,
        port: u16,
        addrs: Vec<SocketAddr>,
    ) -> Result<Vec<SocketAddr>, Refused> {
        if self.trusts(host, port) {
            return Ok(addrs);
        }
        let (public, refused): (Vec<_>, Vec<_>) = addrs
            .into_iter()
            .partition(|addr| non_public(addr.ip()).is_none());
        if public.is_empty() {
            return Err(Refused {
                host: host.to_owned(),
                port,
                addresses: refused
                    .iter()
                    .filter_map(|a| non_public(a.ip()).map(|kind| (a.ip(), kind)))
                    .collect(),
            });
        }
        if !refused.is_empty() {
            log::debug!("{host}:{port}: not connecting to non-public {refused:?}");
        }
        Ok(public)
    }
}

/// Host (as awc's `Uri` spells it: IPv6 in brackets) and port of an upstream URL.
fn origin(url: &Url) -> Option<(String, u16)> {
    Some((url.host_str()?.to_owned(), url.port_or_known_default()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(ip: &str) -> Option<&'static str> {
        non_public(ip.parse().unwrap())
    }

    #[test]
    fn ipv4_ranges() {
        for ip in [
            "0.0.0.0",
            "0.1.2.3",
            "127.0.0.1",
            "127.255.255.254",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "198.18.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
        ] {
            assert!(kind(ip).is_some(), "{ip} passed as public");
        }
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "172.15.255.255",
            "172.32.0.1",
            "100.63.255.255",
            "100.128.0.1",
            "169.253.0.1",
            "192.167.1.1",
            "104.16.0.1",
        ] {
            assert_eq!(kind(ip), None, "{ip}");
        }
        assert_eq!(kind("127.0.0.1"), Some("loopback"));
        assert_eq!(kind("10.1.2.3"), Some("private"));
        assert!(kind("169.254.169.254").unwrap().starts_with("link-local"));
    }

    #[test]
    fn ipv6_ranges() {
        for ip in [
            "::",
            "::1",
            "fe80::1",
            "febf::1",
            "fc00::1",
            "fd12:3456::1",
            "fec0::1",
            "ff02::1",
            "2001:db8::1",
            "100::1",
            "64:ff9b:1::1",
            "fe00::1",
            "4000::1",
        ] {
            assert!(kind(ip).is_some(), "{ip} passed as public");
        }
        for ip in ["2606:4700::1111", "2a00:1450:4001::1", "2001:4860::8888"] {
            assert_eq!(kind(ip), None, "{ip}");
        }
        assert_eq!(kind("::1"), Some("loopback"));
        assert_eq!(kind("fe80::1"), Some("link-local"));
    }

    #[test]
    fn ipv4_inside_ipv6_is_judged_as_ipv4() {
        assert_eq!(kind("::ffff:127.0.0.1"), Some("loopback"));
        assert_eq!(kind("::ffff:10.0.0.1"), Some("private"));
        assert!(kind("::ffff:169.254.169.254").is_some());
        assert_eq!(kind("::ffff:8.8.8.8"), None);
        assert_eq!(kind("::127.0.0.1"), Some("loopback"));
        assert_eq!(kind("64:ff9b::192.168.0.1"), Some("private"));
        assert_eq!(kind("64:ff9b::8.8.8.8"), None);
        assert_eq!(kind("2002:7f00:1::"), Some("loopback"));
        assert_eq!(kind("2002:0808:0808::1"), None);
    }

    fn policy(allow_private: bool) -> Policy {
        Policy {
            allow_private,
            trusted: vec![("registry.internal".into(), 443), ("[fd00::5]".into(), 80)],
        }
    }

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn configured_upstreams_may_be_private_redirect_targets_may_not() {
        let private = addrs(&["10.0.0.5:443"]);
        let p = policy(false);
        assert_eq!(
            p.filter("Registry.Internal", 443, private.clone()).unwrap(),
            private
        );
        assert!(p.filter("[fd00::5]", 80, addrs(&["[fd00::5]:80"])).is_ok());
        // Same host, another port: not the configured upstream.
        let err = p.filter("registry.internal", 8443, private).unwrap_err();
        assert_eq!(
            err.to_string(),
            "refusing to connect to registry.internal:8443: 10.0.0.5 is private; a redirect \
             may lead only to a public address unless redirect.allow_private = true"
        );
        let err = p
            .filter("cdn", 80, addrs(&["127.0.0.1:80", "[::1]:80"]))
            .unwrap_err();
        assert_eq!(err.addresses.len(), 2);
    }

    #[test]
    fn only_public_addresses_of_a_mixed_host_are_used() {
        let mixed = addrs(&["169.254.169.254:80", "93.184.215.14:80"]);
        assert_eq!(
            policy(false)
                .filter("cdn.example", 80, mixed.clone())
                .unwrap(),
            addrs(&["93.184.215.14:80"])
        );
        assert_eq!(
            policy(true)
                .filter("cdn.example", 80, mixed.clone())
                .unwrap(),
            mixed
        );
    }
}
