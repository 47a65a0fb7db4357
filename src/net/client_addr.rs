//! Who the client is: the peer of the connection, or, when that peer is one of the configured
//! `access.trusted_proxies`, the address the proxies say they were asked by in
//! `X-Forwarded-For`. Anyone can write that header, so only the hops a trusted proxy appended
//! are believed: it is read right to left, and the first address that is not itself a trusted
//! proxy is the client (nginx's `real_ip_recursive on`). Plus CIDR lists for the allow and deny
//! rules, and the key a client is rate-limited by.

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
};

use ipnet::{IpNet, Ipv6Net};

use crate::net::embedded_ipv4::embedded_ipv4;

/// A network in CIDR notation (`10.0.0.0/8`, `2001:db8::/32`); a bare address is a /32 (/128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr(IpNet);

impl Cidr {
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let text = text.trim();
        let bad =
            || format!("'{text}' is not an address or network like 10.0.0.0/8 or 2001:db8::/32");
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        // The address by std's parser, not ipnet's: ipnet reads `010.0.0.1` as 10.0.0.1, where
        // other tools read a leading zero as octal (8.0.0.1); std refuses it, and so do we.
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let net = match prefix {
            None => IpNet::from(addr),
            Some(digits) if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => {
                let prefix = digits.parse::<u8>().map_err(|_| bad())?;
                IpNet::new(addr, prefix).map_err(|_| bad())?
            }
            Some(_) => return Err(bad()),
        };
        Ok(Cidr(net.trunc()))
    }

    /// Whether `ip` is in this network. An IPv4 address written as IPv6 (`::ffff:10.1.2.3`, as
    /// a dual-stack listener reports IPv4 peers) is matched as the IPv4 address it is.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(&ip.to_canonical())
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Whether any network of `list` holds `ip`.
pub fn any_contains(list: &[Cidr], ip: IpAddr) -> bool {
    list.iter().any(|cidr| cidr.contains(ip))
}

/// Whether `access.allow` and `access.deny` let `client` use the mirror: deny wins over allow,
/// and an empty allow list allows everyone.
///
/// An IPv4 address written as IPv6 is read differently by the two lists. Deny matches it in
/// every form (mapped, compatible, NAT64, 6to4: see [`embedded_ipv4`]): a client denied by its
/// IPv4 address must not get in by reaching the mirror through a translator or a 6to4 relay.
/// Allow matches an IPv4 entry only against the IPv4 address itself or its mapped form
/// `::ffff:a.b.c.d`, which is how a dual-stack socket reports that very IPv4 peer. The other
/// forms are IPv6 addresses that merely name an IPv4 address: any IPv6 host can build a 6to4
/// prefix out of any IPv4 address (a private `10.x` one names different hosts on every network),
/// and a NAT64 prefix speaks for whatever is behind the translator. Admitting them takes an IPv6
/// entry that covers them (`2002:cb00:7100::/40`), as trusted proxies do (see [`client_ip`]).
pub fn admitted(allow: &[Cidr], deny: &[Cidr], client: IpAddr) -> bool {
    let carried = match client {
        IpAddr::V6(v6) => embedded_ipv4(v6).map(IpAddr::V4),
        IpAddr::V4(_) => None,
    };
    let denied = any_contains(deny, client) || carried.is_some_and(|v4| any_contains(deny, v4));
    !denied && (allow.is_empty() || any_contains(allow, client))
}

/// The client's address: `peer` itself unless it is a trusted proxy; then, reading the
/// `X-Forwarded-For` values (every field, in order) from the right, the first address that is
/// not a trusted proxy. An entry that is not an address stops the walk: whoever wrote it is not
/// to be believed, so the last trusted hop before it is the client. When every hop is trusted,
/// the left-most one is.
pub fn client_ip<'a>(
    peer: IpAddr,
    forwarded_for: impl IntoIterator<Item = &'a str>,
    trusted_proxies: &[Cidr],
) -> IpAddr {
    let peer = peer.to_canonical();
    if !any_contains(trusted_proxies, peer) {
        return peer;
    }
    let hops: Vec<&str> = forwarded_for
        .into_iter()
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|hop| !hop.is_empty())
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        let Some(ip) = parse_hop(hop) else {
            return client;
        };
        client = ip;
        if !any_contains(trusted_proxies, ip) {
            return ip;
        }
    }
    client
}

/// One `X-Forwarded-For` entry: an address, or an address with a port (`192.0.2.1:4711`,
/// `[2001:db8::1]:4711`), as some proxies write them.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .or_else(|_| hop.parse::<SocketAddr>().map(|s| s.ip()))
        .ok()
        .map(|ip| ip.to_canonical())
}

/// What a client is counted by for rate limits: its IPv4 address, or its IPv6 /64 (one
/// subscriber usually gets a whole /64, and can pick any address in it).
pub fn limit_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        v4 @ IpAddr::V4(_) => v4,
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Net::new_assert(v6, 64).network()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn cidrs(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|c| Cidr::parse(c).unwrap()).collect()
    }

    #[test]
    fn cidrs_parse_and_normalise() {
        for (text, shown) in [
            ("10.0.0.0/8", "10.0.0.0/8"),
            ("10.1.2.3/8", "10.0.0.0/8"),
            ("192.0.2.7", "192.0.2.7/32"),
            (" 0.0.0.0/0 ", "0.0.0.0/0"),
            ("2001:db8::1/32", "2001:db8::/32"),
            ("::1", "::1/128"),
            ("::/0", "::/0"),
        ] {
            assert_eq!(Cidr::parse(text).unwrap().to_string(), shown);
        }
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "10.0.0.0/8/8",
            "10.0.0",
            "example.com",
            "[::1]",
            "10.0.0.0/-1",
            "10.0.0.0/ 8",
            // Octal to some readers (8.0.0.0/8): refused, not guessed at.
            "010.0.0.0/8",
        ] {
            assert!(Cidr::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn membership() {
        let net = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(net.contains(ip("10.255.0.1")));
        assert!(!net.contains(ip("11.0.0.1")));
        // A dual-stack listener's view of an IPv4 peer.
        assert!(net.contains(ip("::ffff:10.1.2.3")));
        assert!(!net.contains(ip("::a01:203")));
        let v6 = Cidr::parse("2001:db8::/32").unwrap();
        assert!(v6.contains(ip("2001:db8:ffff::1")));
        assert!(!v6.contains(ip("2001:db9::1")));
        assert!(!v6.contains(ip("10.0.0.1")));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
        assert!(!Cidr::parse("0.0.0.0/0").unwrap().contains(ip("::1")));
        assert!(Cidr::parse("::/0").unwrap().contains(ip("::1")));
        assert!(Cidr::parse("192.0.2.7").unwrap().contains(ip("192.0.2.7")));
        assert!(!Cidr::parse("192.0.2.7").unwrap().contains(ip("192.0.2.8")));
    }

    #[test]
    fn deny_wins_and_an_empty_allow_list_allows_everyone() {
        let none: Vec<Cidr> = Vec::new();
        assert!(admitted(&none, &none, ip("192.0.2.1")));
        assert!(admitted(&none, &none, ip("2001:db8::1")));
        let allow = cidrs(&["192.0.2.0/24", "2001:db8::/32"]);
        let deny = cidrs(&["192.0.2.7", "2001:db8:bad::/48"]);
        assert!(admitted(&allow, &deny, ip("192.0.2.1")));
        assert!(admitted(&allow, &deny, ip("2001:db8::1")));
        assert!(!admitted(&allow, &deny, ip("192.0.2.7")));
        assert!(!admitted(&allow, &deny, ip("2001:db8:bad::1")));
        assert!(!admitted(&allow, &deny, ip("198.51.100.1")));
        assert!(!admitted(&none, &deny, ip("192.0.2.7")));
    }

    #[test]
    fn deny_reads_ipv4_in_every_ipv6_form() {
        let none: Vec<Cidr> = Vec::new();
        let deny = cidrs(&["203.0.113.0/24"]);
        for client in [
            "203.0.113.9",
            "::ffff:203.0.113.9",
            "::203.0.113.9",
            "64:ff9b::203.0.113.9",
            "2002:cb00:7109::1",
            "2002:cb00:71ff:1234::",
        ] {
            assert!(!admitted(&none, &deny, ip(client)), "{client} got in");
        }
        for client in [
            "198.51.100.1",
            "::ffff:198.51.100.1",
            "64:ff9b::198.51.100.1",
            "2002:c633:6401::1",
            "2001:db8::cb00:7109",
            "::1",
        ] {
            assert!(admitted(&none, &deny, ip(client)), "{client} refused");
        }
        // A deny list of IPv6 networks keeps matching them as they are.
        let deny = cidrs(&["64:ff9b::/96", "2002::/16"]);
        assert!(!admitted(&none, &deny, ip("64:ff9b::203.0.113.9")));
        assert!(!admitted(&none, &deny, ip("2002:cb00:7109::1")));
        assert!(admitted(&none, &deny, ip("203.0.113.9")));
    }

    #[test]
    fn allow_reads_an_ipv4_entry_as_the_address_or_its_mapped_form_only() {
        let none: Vec<Cidr> = Vec::new();
        let allow = cidrs(&["203.0.113.0/24"]);
        assert!(admitted(&allow, &none, ip("203.0.113.9")));
        assert!(admitted(&allow, &none, ip("::ffff:203.0.113.9")));
        for claimed in ["::203.0.113.9", "64:ff9b::203.0.113.9", "2002:cb00:7109::1"] {
            assert!(!admitted(&allow, &none, ip(claimed)), "{claimed} got in");
        }
        // An IPv6 entry admits them.
        let allow = cidrs(&[
            "203.0.113.0/24",
            "2002:cb00:7100::/40",
            "64:ff9b::cb00:7100/120",
        ]);
        assert!(admitted(&allow, &none, ip("2002:cb00:7109::1")));
        assert!(admitted(&allow, &none, ip("64:ff9b::203.0.113.9")));
        assert!(!admitted(&allow, &none, ip("64:ff9b::198.51.100.1")));
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let trusted = cidrs(&["10.0.0.0/8"]);
        assert_eq!(
            client_ip(ip("192.0.2.1"), ["203.0.113.9"], &trusted),
            ip("192.0.2.1")
        );
        assert_eq!(
            client_ip(ip("192.0.2.1"), ["203.0.113.9"], &[]),
            ip("192.0.2.1")
        );
    }

    #[test]
    fn a_trusted_proxy_names_the_right_most_untrusted_hop() {
        let trusted = cidrs(&["10.0.0.0/8", "2001:db8:1::/48"]);
        let peer = ip("10.0.0.5");
        assert_eq!(
            client_ip(peer, ["203.0.113.9"], &trusted),
            ip("203.0.113.9")
        );
        // The client wrote the left part itself: it is not believed.
        assert_eq!(
            client_ip(peer, ["198.51.100.1, 203.0.113.9"], &trusted),
            ip("203.0.113.9")
        );
        // Chains of trusted proxies are walked through, across header fields.
        assert_eq!(
            client_ip(
                peer,
                ["198.51.100.1, 203.0.113.9", "10.1.1.1,2001:db8:1::7"],
                &trusted
            ),
            ip("203.0.113.9")
        );
        assert_eq!(
            client_ip(peer, ["[2001:db8:2::1]:4711", "192.0.2.1:80"], &trusted),
            ip("192.0.2.1")
        );
        assert_eq!(
            client_ip(peer, ["[2001:db8:2::1]:4711"], &trusted),
            ip("2001:db8:2::1")
        );
    }

    #[test]
    fn garbage_or_nothing_forwarded_stops_at_the_last_trusted_hop() {
        let trusted = cidrs(&["10.0.0.0/8"]);
        let peer = ip("10.0.0.5");
        assert_eq!(client_ip(peer, [], &trusted), peer);
        assert_eq!(client_ip(peer, [""], &trusted), peer);
        assert_eq!(client_ip(peer, ["unknown"], &trusted), peer);
        assert_eq!(
            client_ip(peer, ["203.0.113.9, <script>, 10.2.2.2"], &trusted),
            ip("10.2.2.2")
        );
        // Every hop trusted: the left-most.
        assert_eq!(
            client_ip(peer, ["10.3.3.3, 10.2.2.2"], &trusted),
            ip("10.3.3.3")
        );
        assert_eq!(
            client_ip(ip("::ffff:10.0.0.5"), ["::ffff:203.0.113.9"], &trusted),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn ipv6_clients_are_limited_by_their_64() {
        assert_eq!(limit_key(ip("192.0.2.1")), ip("192.0.2.1"));
        assert_eq!(limit_key(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
        assert_eq!(limit_key(ip("2001:db8:0:1:aaaa::1")), ip("2001:db8:0:1::"));
        assert_eq!(
            limit_key(ip("2001:db8:0:1::1")),
            limit_key(ip("2001:db8:0:1:ffff:ffff:ffff:ffff"))
        );
        assert_ne!(
            limit_key(ip("2001:db8:0:1::1")),
            limit_key(ip("2001:db8:0:2::1"))
        );
    }
}
