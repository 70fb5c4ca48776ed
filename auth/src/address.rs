//! Client addresses as limits count them: an IPv4 address alone, an IPv6 address by its
//! network prefix (a /64 by default). One IPv6 subscriber is usually given a whole /64 (RFC
//! 6177), so counting full IPv6 addresses would let one client appear as 2^64 clients to a
//! per-address limit.

use std::net::{IpAddr, Ipv6Addr};

/// Prefix length IPv6 addresses are grouped by: what one site is assigned.
pub const IPV6_PREFIX: u8 = 64;

/// The group `ip` is counted in: itself for IPv4 (and IPv4-mapped IPv6), its first
/// `ipv6_prefix` bits for IPv6 (at most 128).
pub fn group(ip: IpAddr, ipv6_prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return IpAddr::V4(v4);
            }
            let bits = u32::from(ipv6_prefix.min(128));
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_is_grouped_by_prefix_and_ipv4_stays_whole() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff:1:2:3".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(group(a, 64), group(b, 64));
        assert_ne!(group(a, 64), group(other, 64));
        assert_eq!(group(a, 64), "2001:db8:1:2::".parse::<IpAddr>().unwrap());
        assert_eq!(group(a, 48), group(other, 48));
        assert_eq!(group(a, 128), a);
        assert_eq!(group(a, 0), "::".parse::<IpAddr>().unwrap());
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(group(v4, 64), v4);
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(group(mapped, 64), v4);
    }
}
