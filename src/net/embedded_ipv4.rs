//! IPv4 addresses written as IPv6 ones. The same IPv4 host can reach hubferry, or be reached by
//! it, under several IPv6 spellings; the redirect filter (`egress`) and the access lists
//! (`client_addr`) must both see the IPv4 address behind each of them, so both read it here.

use std::net::{Ipv4Addr, Ipv6Addr};

/// The IPv4 address `ip` carries, when it has one of these forms:
/// - mapped, `::ffff:a.b.c.d` (RFC 4291 2.5.5.2): how a dual-stack socket reports an IPv4 peer;
/// - compatible, `::a.b.c.d` (RFC 4291 2.5.5.1, deprecated), except `::` and `::1`, which are
///   IPv6's own unspecified and loopback addresses;
/// - NAT64's well-known prefix, `64:ff9b::a.b.c.d` (RFC 6052): an IPv4 host behind a translator;
/// - 6to4, `2002:aabb:ccdd::/48` (RFC 3056): the site behind the IPv4 address `aa.bb.cc.dd`.
pub fn embedded_ipv4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let v4 = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    match ip.segments() {
        [0, 0, 0, 0, 0, 0xffff, hi, lo] => Some(v4(hi, lo)),
        [0, 0, 0, 0, 0, 0, 0, 0 | 1] => None,
        [0, 0, 0, 0, 0, 0, hi, lo] => Some(v4(hi, lo)),
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => Some(v4(hi, lo)),
        [0x2002, hi, lo, ..] => Some(v4(hi, lo)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn embedded(ip: &str) -> Option<Ipv4Addr> {
        embedded_ipv4(ip.parse().unwrap())
    }

    fn v4(ip: &str) -> Option<Ipv4Addr> {
        Some(ip.parse().unwrap())
    }

    #[test]
    fn every_form_yields_its_ipv4_address() {
        assert_eq!(embedded("::ffff:203.0.113.9"), v4("203.0.113.9"));
        assert_eq!(embedded("::ffff:cb00:7109"), v4("203.0.113.9"));
        assert_eq!(embedded("::203.0.113.9"), v4("203.0.113.9"));
        assert_eq!(embedded("::127.0.0.1"), v4("127.0.0.1"));
        assert_eq!(embedded("::0.0.0.2"), v4("0.0.0.2"));
        assert_eq!(embedded("64:ff9b::203.0.113.9"), v4("203.0.113.9"));
        assert_eq!(embedded("64:ff9b::a00:1"), v4("10.0.0.1"));
        // 6to4: the IPv4 address follows the prefix, whatever subnet and host come after.
        assert_eq!(embedded("2002:cb00:7109::"), v4("203.0.113.9"));
        assert_eq!(embedded("2002:cb00:7109:ffff:1:2:3:4"), v4("203.0.113.9"));
        assert_eq!(embedded("2002:7f00:1::1"), v4("127.0.0.1"));
    }

    #[test]
    fn other_ipv6_addresses_carry_none() {
        for ip in [
            "::",
            "::1",
            "2001:db8::cb00:7109",
            "::fffe:cb00:7109",
            "::1:0:cb00:7109",
            // SIIT's IPv4-translated form (RFC 2765), unused on the internet: not read.
            "::ffff:0:cb00:7109",
            // NAT64 local-use prefix (RFC 8215) puts the address elsewhere; not read.
            "64:ff9b:1::cb00:7109",
            "64:ff9b::1:cb00:7109",
            "2003:cb00:7109::",
            "fe80::cb00:7109",
            "2606:4700::1111",
        ] {
            assert_eq!(embedded(ip), None, "{ip}");
        }
    }
}
