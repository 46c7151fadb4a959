//! Finding the origin: where its address comes from, which of its addresses the proxy may connect to, and whether
//! the connection kept from the last exchange may carry the next request.
//!
//! The order is the same for every design: a `--resolve` name, then an address literal, then a lookup (the
//! design's resolver: smoltcp's DNS socket, the system's resolver); without a resolver, any other name is 502. Of
//! the addresses found, one that is the proxy itself makes the request a loop (508); the rest are kept only if
//! `--allow-dest` allows them (403 if none is left), and tried in the order given.

use core::net::{IpAddr, SocketAddr};

use heapless::{String, Vec};

use crate::http::ProxyError;

use super::super::policy::ipv4_of;
use super::super::ProxyPolicy;
use super::request::MAX_HOST;

/// The most addresses of one origin tried, in order (more are ignored).
pub const MAX_CANDIDATES: usize = 4;

/// The proxy's own listening address, and how to tell this host's addresses, so that a request for the proxy
/// itself is answered 508 rather than forwarded to itself.
#[derive(Clone, Copy)]
pub struct OwnAddress<'a> {
    /// Where the proxy listens; an unspecified address means every address of this host.
    pub listen: SocketAddr,
    /// Whether an address is one of this host's own (asked only when `listen` is unspecified).
    pub is_local: &'a dyn Fn(IpAddr) -> bool,
}

impl core::fmt::Debug for OwnAddress<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("OwnAddress")
            .field("listen", &self.listen)
            .finish_non_exhaustive()
    }
}

impl OwnAddress<'_> {
    /// Whether a connection to `addr` would reach this proxy.
    pub fn is_proxy(&self, addr: SocketAddr) -> bool {
        if addr.port() != self.listen.port() {
            return false;
        }
        let normal = |ip: IpAddr| ipv4_of(ip).map_or(ip, IpAddr::V4);
        let (ip, own) = (normal(addr.ip()), normal(self.listen.ip()));
        ip == own || ip.is_unspecified() || (own.is_unspecified() && (self.is_local)(ip))
    }
}

/// Where the origin's address comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// `--resolve` or a literal gave it.
    Known(IpAddr),
    /// The name must be looked up.
    Ask,
}

/// `--resolve`, then a literal, then a lookup if the design has a resolver (else 502).
pub fn lookup(
    policy: &ProxyPolicy<'_>,
    host: &str,
    can_look_up: bool,
) -> Result<Lookup, ProxyError> {
    match (policy.static_address(host), can_look_up) {
        (Some(ip), _) => Ok(Lookup::Known(ip)),
        (None, true) => Ok(Lookup::Ask),
        (None, false) => Err(ProxyError::OriginUnresolvable),
    }
}

/// The origin addresses still to try, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Candidates {
    addrs: Vec<SocketAddr, MAX_CANDIDATES>,
    /// How many of `addrs` were taken (an index, not a removal: shifting the rest costs a board `memmove`).
    taken: usize,
}

impl Candidates {
    /// The addresses of `addrs` the proxy may connect to on `port`, the first apart: 508 if any of them is the
    /// proxy itself, 502 if there are none, 403 if `--allow-dest` allows none.
    pub fn choose(
        policy: &ProxyPolicy<'_>,
        own: &OwnAddress<'_>,
        addrs: &[IpAddr],
        port: u16,
    ) -> Result<(SocketAddr, Candidates), ProxyError> {
        if addrs.is_empty() {
            return Err(ProxyError::OriginUnresolvable);
        }
        if addrs
            .iter()
            .any(|&ip| own.is_proxy(SocketAddr::new(ip, port)))
        {
            return Err(ProxyError::Loop);
        }
        let mut chosen = Candidates::default();
        for &ip in addrs {
            if policy.check_destination(ip).is_ok() {
                // Beyond MAX_CANDIDATES the rest are not tried.
                let _ = chosen.addrs.push(SocketAddr::new(ip, port));
            }
        }
        match chosen.take_first() {
            Some(first) => Ok((first, chosen)),
            None => Err(ProxyError::DestinationNotAllowed),
        }
    }

    /// The next address to try, taken off the list.
    pub fn take_first(&mut self) -> Option<SocketAddr> {
        let next = self.addrs.get(self.taken).copied()?;
        self.taken += 1;
        Some(next)
    }
}

/// The origin connection a design kept open after an exchange: which origin it goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptOrigin {
    /// The host the request named (a kept connection is reused only for the same name and port).
    pub host: String<MAX_HOST>,
    /// The port.
    pub port: u16,
    /// The address it is connected to.
    pub addr: SocketAddr,
}

impl KeptOrigin {
    /// Whether the next request, to `host:port`, may go on this connection: the same origin, not a tunnel, and
    /// the connection still open and silent (`idle`, as the design sees its socket; asked last, and only if the
    /// rest holds).
    pub fn may_carry(
        &self,
        host: &str,
        port: u16,
        tunnel: bool,
        idle: impl FnOnce() -> bool,
    ) -> bool {
        !tunnel && port == self.port && host.eq_ignore_ascii_case(&self.host) && idle()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::Ipv4Addr;
    use smoltcp::wire::{IpCidr, Ipv4Cidr};

    const POLICY: ProxyPolicy<'static> = ProxyPolicy {
        allow_clients: &[],
        allow_destinations: &[],
        connect_ports: &[443],
        static_names: &[("origin.test", IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)))],
        pseudonym: "smoltalk",
    };

    fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    }

    #[test]
    fn the_order_is_resolve_then_literal_then_a_lookup() {
        assert_eq!(
            lookup(&POLICY, "origin.test", true),
            Ok(Lookup::Known(v4(127, 0, 0, 2)))
        );
        assert_eq!(
            lookup(&POLICY, "10.0.2.2", false),
            Ok(Lookup::Known(v4(10, 0, 2, 2)))
        );
        assert_eq!(lookup(&POLICY, "example.test", true), Ok(Lookup::Ask));
        assert_eq!(
            lookup(&POLICY, "example.test", false),
            Err(ProxyError::OriginUnresolvable)
        );
    }

    #[test]
    fn the_proxy_itself_is_a_loop_and_destinations_are_filtered() {
        let everywhere = |ip: IpAddr| ip.is_loopback();
        let own = OwnAddress {
            listen: SocketAddr::new(v4(0, 0, 0, 0), 8080),
            is_local: &everywhere,
        };
        assert!(own.is_proxy(SocketAddr::new(v4(127, 0, 0, 1), 8080)));
        if cfg!(feature = "ipv6") {
            assert!(own.is_proxy(SocketAddr::new("::1".parse().unwrap(), 8080)));
        }
        assert!(own.is_proxy(SocketAddr::new(v4(0, 0, 0, 0), 8080)));
        assert!(!own.is_proxy(SocketAddr::new(v4(127, 0, 0, 1), 8081)));
        assert!(!own.is_proxy(SocketAddr::new(v4(10, 0, 2, 2), 8080)));
        assert_eq!(
            Candidates::choose(&POLICY, &own, &[v4(127, 0, 0, 1)], 8080),
            Err(ProxyError::Loop)
        );
        assert_eq!(
            Candidates::choose(&POLICY, &own, &[], 80),
            Err(ProxyError::OriginUnresolvable)
        );
        let loopback = [IpCidr::Ipv4(Ipv4Cidr::new(Ipv4Addr::new(127, 0, 0, 0), 8))];
        let strict = ProxyPolicy {
            allow_destinations: &loopback,
            ..POLICY
        };
        assert_eq!(
            Candidates::choose(&strict, &own, &[v4(10, 0, 2, 2)], 80),
            Err(ProxyError::DestinationNotAllowed)
        );
        let (first, mut rest) =
            Candidates::choose(&strict, &own, &[v4(10, 0, 2, 2), v4(127, 0, 0, 9)], 80).unwrap();
        assert_eq!(first, SocketAddr::new(v4(127, 0, 0, 9), 80));
        assert_eq!(rest.take_first(), None);
    }

    #[test]
    fn a_kept_origin_carries_only_its_own_host_and_port_while_idle() {
        let kept = KeptOrigin {
            host: String::try_from("Origin.test").unwrap(),
            port: 80,
            addr: SocketAddr::new(v4(127, 0, 0, 2), 80),
        };
        assert!(kept.may_carry("origin.TEST", 80, false, || true));
        assert!(!kept.may_carry("origin.test", 80, false, || false));
        assert!(!kept.may_carry("origin.test", 81, false, || panic!(
            "asked for another port"
        )));
        assert!(!kept.may_carry("origin.test", 80, true, || true));
        assert!(!kept.may_carry("other.test", 80, false, || true));
    }
}
