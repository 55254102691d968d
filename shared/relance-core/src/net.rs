//! Which IP addresses outbound calls never reach (DESIGN §8): loopback, private, link-local,
//! unique-local, CGNAT, multicast and other special ranges. Pure, so that validation can refuse
//! a webhook URL written with such a literal, and the outbound guard of the AWS adapters
//! (`relance_aws::outbound`) can check every address it is about to connect to, by one rule.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Whether a URL's host names this machine: `localhost`, 127.0.0.0/8 or `::1` (brackets
/// allowed): the only places plain http or SMTP without TLS is accepted for.
pub fn is_loopback_host(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Why an address is never called, or None for an ordinary public unicast address.
pub fn special_address(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => special_v4(v4),
        IpAddr::V6(v6) => special_v6(v6),
    }
}

fn special_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        (0, _, _) => "an unspecified (0.0.0.0/8) address",
        (127, _, _) => "a loopback address",
        (10, _, _) => "a private (RFC 1918) address",
        (172, 16..=31, _) => "a private (RFC 1918) address",
        (192, 168, _) => "a private (RFC 1918) address",
        (169, 254, _) => "a link-local address (cloud metadata lives there)",
        (100, 64..=127, _) => "a shared (CGNAT, 100.64.0.0/10) address",
        (192, 0, 0) => "an IETF protocol assignment (192.0.0.0/24)",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "a documentation address",
        (198, 18..=19, _) => "a benchmarking address (198.18.0.0/15)",
        (224..=239, _, _) => "a multicast address",
        (240..=255, _, _) => "a reserved or broadcast address",
        _ => return None,
    })
}

fn special_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if ip.is_unspecified() {
        return Some("the unspecified address (::)");
    }
    if ip.is_loopback() {
        return Some("a loopback address");
    }
    // Forms that carry an IPv4 address are judged by it (::ffff:127.0.0.1 is loopback).
    if let Some(v4) = ip.to_ipv4_mapped() {
        return special_v4(v4);
    }
    let s = ip.segments();
    Some(match s[0] {
        // ::/96, deprecated IPv4-compatible addresses (and everything else under ::/8).
        0 => "a reserved (::/8) address",
        // 64:ff9b::/96 NAT64 embeds an IPv4 address; 64:ff9b:1::/48 is local use.
        0x64 if s[1] == 0xff9b => {
            if s[2] != 0 {
                return Some("a local-use NAT64 address");
            }
            let v4 = Ipv4Addr::from((u32::from(s[6]) << 16) | u32::from(s[7]));
            return special_v4(v4);
        }
        0x100 if s[1..4] == [0, 0, 0] => "a discard-only (100::/64) address",
        0x2001 if s[1] == 0 => "a Teredo (2001::/32) address",
        0x2001 if s[1] == 0xdb8 => "a documentation (2001:db8::/32) address",
        // 6to4 embeds an IPv4 address.
        0x2002 => {
            let v4 = Ipv4Addr::from((u32::from(s[1]) << 16) | u32::from(s[2]));
            return special_v4(v4);
        }
        x if x & 0xfe00 == 0xfc00 => "a unique-local (fc00::/7) address",
        x if x & 0xffc0 == 0xfe80 => "a link-local (fe80::/10) address",
        x if x & 0xffc0 == 0xfec0 => "a site-local (fec0::/10) address",
        x if x & 0xff00 == 0xff00 => "a multicast address",
        _ => return None,
    })
}
