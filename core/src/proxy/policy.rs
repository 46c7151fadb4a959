//! [`ProxyPolicy`]: who may use the proxy and where it may go. Both stacks ask the same questions here.

use smoltcp::wire::{Ipv4Address, Ipv4Cidr};

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
    pub static_names: &'a [(&'a str, Ipv4Address)],
    /// The name this proxy puts in `Via`, and recognises there to find loops.
    pub pseudonym: &'a str,
}

impl ProxyPolicy<'_> {
    /// 403 unless `client` is allowed.
    pub fn check_client(&self, client: Ipv4Address) -> Result<(), ProxyError> {
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
    pub fn check_destination(&self, destination: Ipv4Address) -> Result<(), ProxyError> {
        match allows(self.allow_destinations, destination) {
            true => Ok(()),
            false => Err(ProxyError::DestinationNotAllowed),
        }
    }

    /// The address `--resolve` gives `host` (case-insensitive, trailing dot ignored), or the address `host`
    /// spells as a literal.
    pub fn static_address(&self, host: &str) -> Option<Ipv4Address> {
        let host = host.strip_suffix('.').unwrap_or(host);
        self.static_names
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(host))
            .map(|&(_, address)| address)
            .or_else(|| host.parse().ok())
    }
}

fn allows(list: &[Ipv4Cidr], address: Ipv4Address) -> bool {
    list.is_empty() || list.iter().any(|cidr| cidr.contains_addr(&address))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_lists_allow_everything_and_lists_limit() {
        let loopback = [Ipv4Cidr::new(Ipv4Address::new(127, 0, 0, 0), 8)];
        let names = [("origin.test", Ipv4Address::new(127, 0, 0, 2))];
        let open = ProxyPolicy {
            allow_clients: &[],
            allow_destinations: &[],
            connect_ports: &[443],
            static_names: &names,
            pseudonym: "smoltalk",
        };
        assert_eq!(open.check_client(Ipv4Address::new(10, 0, 2, 2)), Ok(()));
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
        assert_eq!(strict.check_client(Ipv4Address::new(127, 9, 9, 9)), Ok(()));
        assert_eq!(
            strict.check_client(Ipv4Address::new(10, 0, 2, 2)),
            Err(ProxyError::ClientNotAllowed)
        );
        assert_eq!(
            strict.check_destination(Ipv4Address::new(8, 8, 8, 8)),
            Err(ProxyError::DestinationNotAllowed)
        );
        assert_eq!(
            strict.static_address("ORIGIN.test."),
            Some(Ipv4Address::new(127, 0, 0, 2))
        );
        assert_eq!(
            strict.static_address("10.0.2.2"),
            Some(Ipv4Address::new(10, 0, 2, 2))
        );
        assert_eq!(strict.static_address("elsewhere.test"), None);
    }
}
