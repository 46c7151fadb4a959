//! [`ProxyPolicy`]: who may use the proxy and where it may go. Every design asks the same questions here.
//!
//! Addresses are `core::net` addresses, as both stacks give them. The lists hold IPv4 CIDRs: an IPv6 client or
//! destination counts as the IPv4 address it stands for where it has one (`::1` as 127.0.0.1, a v4-mapped
//! address as its IPv4 address) and is otherwise allowed only by an empty list.

use core::net::{IpAddr, Ipv4Addr};

use smoltcp::wire::Ipv4Cidr;

use crate::http::ProxyError;

/// The proxy's rules, borrowed from the host's configuration. Empty client and destination lists allow every
/// address; an empty `connect_ports` allows no tunnel.
#[derive(Debug, Clone, Copy)]
pub struct ProxyPolicy<'a> {
    /// Clients that may connect (`--allow`); empty: any client that reaches the proxy's address.
    pub allow_clients: &'a [Ipv4Cidr],
    /// Addresses the proxy may connect to after resolving (`--allow-dest`); empty: any.
    pub allow_destinations: &'a [Ipv4Cidr],
    /// Ports `CONNECT` may tunnel to (`--connect-ports`).
    pub connect_ports: &'a [u16],
    /// Names answered without DNS (`--resolve HOST=IP`), checked first.
    pub static_names: &'a [(&'a str, Ipv4Addr)],
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
            .map(|&(_, address)| IpAddr::V4(address))
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

fn allows(list: &[Ipv4Cidr], address: IpAddr) -> bool {
    list.is_empty()
        || ipv4_of(address).is_some_and(|v4| list.iter().any(|cidr| cidr.contains_addr(&v4)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    }

    #[test]
    fn empty_lists_allow_everything_and_lists_limit() {
        let loopback = [Ipv4Cidr::new(Ipv4Addr::new(127, 0, 0, 0), 8)];
        let names = [("origin.test", Ipv4Addr::new(127, 0, 0, 2))];
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
}
