//! [`ProxyPolicy`]: who may use the proxy and where it may go. Every design asks the same questions here.
//!
//! Addresses are `core::net` addresses, as both stacks give them. The lists hold CIDRs of either family (IPv6
//! ones only with the crate's `ipv6` feature). An address is allowed by a CIDR of its own family that contains
//! it; besides, an IPv6 address that stands for an IPv4 one (`::1` for 127.0.0.1, a v4-mapped address for its
//! IPv4 address: what a dual-stack kernel socket reports for an IPv4 peer) is allowed by the IPv4 CIDRs that
//! contain that IPv4 address.

use core::net::{IpAddr, Ipv4Addr};

use smoltcp::wire::IpCidr;

use crate::http::ProxyError;

/// The proxy's rules, borrowed from the host's configuration. Empty client and destination lists allow every
/// address; an empty `connect_ports` allows no tunnel.
#[derive(Debug, Clone, Copy)]
pub struct ProxyPolicy<'a> {
    /// Clients that may connect (`--allow`); empty: any client that reaches the proxy's address.
    pub allow_clients: &'a [IpCidr],
    /// Addresses the proxy may connect to after resolving (`--allow-dest`); empty: any.
    pub allow_destinations: &'a [IpCidr],
    /// Ports `CONNECT` may tunnel to (`--connect-ports`).
    pub connect_ports: &'a [u16],
    /// Names answered without DNS (`--resolve HOST=IP`), checked first.
    pub static_names: &'a [(&'a str, IpAddr)],
    /// The name this proxy puts in `Via`, and recognises there to find loops.
    pub pseudonym: &'a str,
}

impl ProxyPolicy<'_> {
    /// 403 unless `client` is allowed.
    pub fn check_client(&self, client: IpAddr) -> Result<(), ProxyError> {
        match allows(self.allow_clients, client) {
            true => Ok(()),
            false => Err(ProxyError::ClientNotAllowed),
        }
    }

    /// 403 unless `CONNECT` may tunnel to `port`.
    pub fn check_connect_port(&self, port: u16) -> Result<(), ProxyError> {
        match self.connect_ports.contains(&port) {
            true => Ok(()),
            false => Err(ProxyError::ConnectPortNotAllowed),
        }
    }

    /// 403 unless the proxy may connect to `destination`.
    pub fn check_destination(&self, destination: IpAddr) -> Result<(), ProxyError> {
        match allows(self.allow_destinations, destination) {
            true => Ok(()),
            false => Err(ProxyError::DestinationNotAllowed),
        }
    }

    /// The address `--resolve` gives `host` (case-insensitive, trailing dot ignored), or the address `host`
    /// spells as a literal (IPv4, or IPv6 without brackets; IPv6 only with the crate's `ipv6` feature). `None`:
    /// the name must be looked up.
    pub fn static_address(&self, host: &str) -> Option<IpAddr> {
        let host = host.strip_suffix('.').unwrap_or(host);
        self.static_names
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(host))
            .map(|&(_, address)| address)
            .or_else(|| literal(host))
    }
}

/// The address `host` spells as a literal.
#[cfg(feature = "ipv6")]
fn literal(host: &str) -> Option<IpAddr> {
    host.parse().ok()
}

/// The address `host` spells as a literal: IPv4 only, without the crate's `ipv6` feature (which a lean firmware
/// leaves out, with the code that parses IPv6).
#[cfg(not(feature = "ipv6"))]
fn literal(host: &str) -> Option<IpAddr> {
    host.parse().ok().map(IpAddr::V4)
}

/// The IPv4 address `ip` stands for: itself, 127.0.0.1 for `::1`, the embedded address of a v4-mapped one.
pub fn ipv4_of(ip: IpAddr) -> Option<Ipv4Addr> {
    match ip {
        IpAddr::V4(v4) => Some(v4),
        #[cfg(feature = "ipv6")]
        IpAddr::V6(v6) if v6.is_loopback() => Some(Ipv4Addr::LOCALHOST),
        #[cfg(feature = "ipv6")]
        IpAddr::V6(v6) => v6.to_ipv4_mapped(),
        // Without IPv6, no IPv6 address reaches the policy (it is neither parsed nor given by the stack).
        #[cfg(not(feature = "ipv6"))]
        IpAddr::V6(_) => None,
    }
}

fn allows(list: &[IpCidr], address: IpAddr) -> bool {
    if list.is_empty() {
        return true;
    }
    let v4 = ipv4_of(address);
    list.iter().any(|cidr| match cidr {
        IpCidr::Ipv4(cidr) => v4.is_some_and(|v4| cidr.contains_addr(&v4)),
        // A v4-mapped address is an IPv4 peer or destination: only IPv4 CIDRs speak for it (`::/0` is not a
        // way around an IPv4 list).
        #[cfg(feature = "ipv6")]
        IpCidr::Ipv6(cidr) => matches!(
            address,
            IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() && cidr.contains_addr(&v6)
        ),
        // An IPv6 CIDR in a build without the `ipv6` feature (smoltcp's IPv6 turned on by another crate): this
        // build speaks no IPv6, so it allows nothing.
        #[allow(unreachable_patterns)]
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::wire::Ipv4Cidr;

    fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    }

    #[test]
    fn empty_lists_allow_everything_and_lists_limit() {
        let loopback = [IpCidr::Ipv4(Ipv4Cidr::new(Ipv4Addr::new(127, 0, 0, 0), 8))];
        let names = [("origin.test", v4(127, 0, 0, 2))];
        let open = ProxyPolicy {
            allow_clients: &[],
            allow_destinations: &[],
            connect_ports: &[443],
            static_names: &names,
            pseudonym: "smoltalk",
        };
        assert_eq!(open.check_client(v4(10, 0, 2, 2)), Ok(()));
        assert_eq!(open.check_client("2001:db8::1".parse().unwrap()), Ok(()));
        assert_eq!(open.check_connect_port(443), Ok(()));
        assert_eq!(
            open.check_connect_port(22),
            Err(ProxyError::ConnectPortNotAllowed)
        );
        let strict = ProxyPolicy {
            allow_clients: &loopback,
            allow_destinations: &loopback,
            ..open
        };
        assert_eq!(strict.check_client(v4(127, 9, 9, 9)), Ok(()));
        if cfg!(feature = "ipv6") {
            // An IPv6 address counts as the IPv4 address it stands for.
            assert_eq!(strict.check_client("::1".parse().unwrap()), Ok(()));
            assert_eq!(
                strict.check_client("::ffff:127.0.0.3".parse().unwrap()),
                Ok(())
            );
        }
        assert_eq!(
            strict.check_client(v4(10, 0, 2, 2)),
            Err(ProxyError::ClientNotAllowed)
        );
        assert_eq!(
            strict.check_destination("2001:db8::1".parse().unwrap()),
            Err(ProxyError::DestinationNotAllowed)
        );
        assert_eq!(
            strict.check_destination(v4(8, 8, 8, 8)),
            Err(ProxyError::DestinationNotAllowed)
        );
        assert_eq!(
            strict.static_address("ORIGIN.test."),
            Some(v4(127, 0, 0, 2))
        );
        assert_eq!(strict.static_address("10.0.2.2"), Some(v4(10, 0, 2, 2)));
        let v6_literal = cfg!(feature = "ipv6").then(|| "::1".parse().unwrap());
        assert_eq!(strict.static_address("::1"), v6_literal);
        assert_eq!(strict.static_address("elsewhere.test"), None);
    }

    #[cfg(feature = "ipv6")]
    #[test]
    fn ipv6_cidrs_allow_their_own_family_and_ipv4_cidrs_the_addresses_ipv6_stands_for() {
        use smoltcp::wire::Ipv6Cidr;
        let ula: IpAddr = "fd00:2::9".parse().unwrap();
        let lists = [
            IpCidr::Ipv6(Ipv6Cidr::new("fd00:2::".parse().unwrap(), 64)),
            IpCidr::Ipv4(Ipv4Cidr::new(Ipv4Addr::new(127, 0, 0, 0), 8)),
        ];
        let names = [("v6only.test", ula)];
        let policy = ProxyPolicy {
            allow_clients: &lists,
            allow_destinations: &lists[..1],
            connect_ports: &[],
            static_names: &names,
            pseudonym: "smoltalk",
        };
        assert_eq!(policy.check_client(ula), Ok(()));
        assert_eq!(policy.check_client("::1".parse().unwrap()), Ok(()));
        assert_eq!(
            policy.check_client("::ffff:127.0.0.3".parse().unwrap()),
            Ok(())
        );
        assert_eq!(
            policy.check_client("fd00:3::9".parse().unwrap()),
            Err(ProxyError::ClientNotAllowed)
        );
        // An IPv6 CIDR allows no IPv4 address, not even ::/0 (each family has its own list entries).
        assert_eq!(
            policy.check_destination(v4(127, 0, 0, 1)),
            Err(ProxyError::DestinationNotAllowed)
        );
        assert_eq!(policy.check_destination(ula), Ok(()));
        // ::/0 allows every IPv6 address, but not an IPv4 one written v4-mapped.
        let any_v6 = [IpCidr::Ipv6(Ipv6Cidr::new("::".parse().unwrap(), 0))];
        let v6_only = ProxyPolicy {
            allow_destinations: &any_v6,
            ..policy
        };
        assert_eq!(
            v6_only.check_destination("2001:db8::1".parse().unwrap()),
            Ok(())
        );
        assert_eq!(
            v6_only.check_destination("::ffff:127.0.0.1".parse().unwrap()),
            Err(ProxyError::DestinationNotAllowed)
        );
        assert_eq!(policy.static_address("V6ONLY.test"), Some(ula));
    }
}
