//! [`Addressing`]: a smoltcp node's own addresses on a TUN/TAP device, at most one of each family, each with its
//! default gateway (the kernel's address on the device), from `--ip` and `--gateway`.
//!
//! By default the node is dual-stack: 10.0.2.15/24 with gateway 10.0.2.2, and fd00:2::15/64 (a unique local
//! address, RFC 4193) with gateway fd00:2::2. `--ip` replaces both: given once, the node has that family only;
//! given twice, one of each. A family's gateway is its `--gateway`, or else the default one where the node's
//! subnet holds it (none otherwise: the node then reaches its own subnet only).

use std::fmt;
use std::net::IpAddr;

use smoltcp::wire::{IpAddress, IpCidr, Ipv4Address, Ipv4Cidr, Ipv6Address, Ipv6Cidr};

/// The default IPv4 address and prefix.
pub const DEFAULT_IPV4: Ipv4Cidr = Ipv4Cidr::new(Ipv4Address::new(10, 0, 2, 15), 24);
/// The default IPv4 gateway.
pub const DEFAULT_IPV4_GATEWAY: Ipv4Address = Ipv4Address::new(10, 0, 2, 2);
/// The default IPv6 address and prefix.
pub const DEFAULT_IPV6: Ipv6Cidr =
    Ipv6Cidr::new(Ipv6Address::new(0xfd00, 2, 0, 0, 0, 0, 0, 0x15), 64);
/// The default IPv6 gateway.
pub const DEFAULT_IPV6_GATEWAY: Ipv6Address = Ipv6Address::new(0xfd00, 2, 0, 0, 0, 0, 0, 2);

/// One family's address and gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Family<C, A> {
    /// The node's address and prefix.
    pub cidr: C,
    /// Its default gateway, if it has one.
    pub gateway: Option<A>,
}

/// A node's addresses: at least one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addressing {
    /// The IPv4 address, if the node has one.
    pub ipv4: Option<Family<Ipv4Cidr, Ipv4Address>>,
    /// The IPv6 address, if the node has one.
    pub ipv6: Option<Family<Ipv6Cidr, Ipv6Address>>,
}

/// Why `--ip` and `--gateway` do not make an [`Addressing`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddressingError {
    /// Two addresses of the same family.
    TwoOfOneFamily {
        /// The family ("IPv4", "IPv6").
        family: &'static str,
        /// The first.
        first: IpCidr,
        /// The second.
        second: IpCidr,
    },
    /// Two gateways of the same family.
    TwoGateways {
        /// The family.
        family: &'static str,
    },
    /// An address a node cannot have as its own (smoltcp takes unicast addresses only).
    NotOwnable {
        /// The address and prefix given.
        cidr: IpCidr,
        /// What it is instead ("multicast", "the unspecified address", …).
        what: &'static str,
    },
    /// A gateway of a family the node has no address of.
    GatewayWithoutAddress {
        /// The gateway.
        gateway: IpAddr,
    },
}

impl fmt::Display for AddressingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddressingError::TwoOfOneFamily { family, first, second } => write!(
                f,
                "--ip {first} and --ip {second} are both {family}: give at most one address of each family"
            ),
            AddressingError::NotOwnable { cidr, what } => write!(
                f,
                "--ip {cidr}: {} is {what}, not an address a host can have as its own",
                cidr.address()
            ),
            AddressingError::TwoGateways { family } => {
                write!(f, "two {family} --gateway options: give at most one of each family")
            }
            AddressingError::GatewayWithoutAddress { gateway } => write!(
                f,
                "--gateway {gateway} is {}, but no {} --ip was given",
                family_name(*gateway),
                family_name(*gateway)
            ),
        }
    }
}

impl std::error::Error for AddressingError {}

/// Why `address` cannot be a host's own, if it cannot.
fn not_ownable(address: IpAddress) -> Option<&'static str> {
    match address {
        IpAddress::Ipv4(v4) if v4.is_unspecified() => Some("the unspecified address"),
        IpAddress::Ipv4(v4) if v4.is_loopback() => Some("a loopback address"),
        IpAddress::Ipv4(v4) if v4.is_multicast() => Some("a multicast address"),
        IpAddress::Ipv4(v4) if v4.is_broadcast() => Some("the broadcast address"),
        IpAddress::Ipv6(v6) if v6.is_unspecified() => Some("the unspecified address"),
        IpAddress::Ipv6(v6) if v6.is_loopback() => Some("the loopback address"),
        IpAddress::Ipv6(v6) if v6.is_multicast() => Some("a multicast address"),
        IpAddress::Ipv6(v6) if v6.to_ipv4_mapped().is_some() => {
            Some("an IPv4-mapped address (give the IPv4 address itself)")
        }
        _ => None,
    }
}

fn family_name(ip: IpAddr) -> &'static str {
    match ip {
        IpAddr::V4(_) => "IPv4",
        IpAddr::V6(_) => "IPv6",
    }
}

impl Default for Addressing {
    /// 10.0.2.15/24 via 10.0.2.2 and fd00:2::15/64 via fd00:2::2.
    fn default() -> Self {
        Addressing {
            ipv4: Some(Family {
                cidr: DEFAULT_IPV4,
                gateway: Some(DEFAULT_IPV4_GATEWAY),
            }),
            ipv6: Some(Family {
                cidr: DEFAULT_IPV6,
                gateway: Some(DEFAULT_IPV6_GATEWAY),
            }),
        }
    }
}

impl Addressing {
    /// The addressing `--ip` (`cidrs`; empty: the default, both families) and `--gateway` (`gateways`) give.
    pub fn new(cidrs: &[IpCidr], gateways: &[IpAddr]) -> Result<Addressing, AddressingError> {
        let mut ipv4: Option<Ipv4Cidr> = None;
        let mut ipv6: Option<Ipv6Cidr> = None;
        for &cidr in cidrs {
            if let Some(what) = not_ownable(cidr.address()) {
                return Err(AddressingError::NotOwnable { cidr, what });
            }
            let (family, first) = match cidr {
                IpCidr::Ipv4(v4) => ("IPv4", ipv4.replace(v4).map(IpCidr::Ipv4)),
                IpCidr::Ipv6(v6) => ("IPv6", ipv6.replace(v6).map(IpCidr::Ipv6)),
            };
            if let Some(first) = first {
                return Err(AddressingError::TwoOfOneFamily {
                    family,
                    first,
                    second: cidr,
                });
            }
        }
        if cidrs.is_empty() {
            ipv4 = Some(DEFAULT_IPV4);
            ipv6 = Some(DEFAULT_IPV6);
        }
        let (mut gateway4, mut gateway6) = (None, None);
        for &gateway in gateways {
            let (family, taken, has_address) = match gateway {
                IpAddr::V4(v4) => ("IPv4", gateway4.replace(v4).is_some(), ipv4.is_some()),
                IpAddr::V6(v6) => ("IPv6", gateway6.replace(v6).is_some(), ipv6.is_some()),
            };
            if taken {
                return Err(AddressingError::TwoGateways { family });
            }
            if !has_address {
                return Err(AddressingError::GatewayWithoutAddress { gateway });
            }
        }
        Ok(Addressing {
            ipv4: ipv4.map(|cidr| Family {
                cidr,
                gateway: gateway4.or_else(|| {
                    cidr.contains_addr(&DEFAULT_IPV4_GATEWAY)
                        .then_some(DEFAULT_IPV4_GATEWAY)
                }),
            }),
            ipv6: ipv6.map(|cidr| Family {
                cidr,
                gateway: gateway6.or_else(|| {
                    cidr.contains_addr(&DEFAULT_IPV6_GATEWAY)
                        .then_some(DEFAULT_IPV6_GATEWAY)
                }),
            }),
        })
    }

    /// One family only: `cidr`, with no gateway (a node on one link, as in the lab).
    pub fn single(cidr: IpCidr) -> Addressing {
        match cidr {
            IpCidr::Ipv4(cidr) => Addressing {
                ipv4: Some(Family {
                    cidr,
                    gateway: None,
                }),
                ipv6: None,
            },
            IpCidr::Ipv6(cidr) => Addressing {
                ipv4: None,
                ipv6: Some(Family {
                    cidr,
                    gateway: None,
                }),
            },
        }
    }

    /// Whether the node has an address of `ip`'s family (and so can reach it at all).
    pub fn has_family_of(&self, ip: IpAddress) -> bool {
        match ip {
            IpAddress::Ipv4(_) => self.ipv4.is_some(),
            IpAddress::Ipv6(_) => self.ipv6.is_some(),
        }
    }

    /// `Err` with a sentence if the node cannot reach `ip` (`what` names it: "--dns 10.0.2.2", "fd00:2::2").
    pub fn check_reachable(&self, ip: IpAddress, what: &str) -> Result<(), String> {
        match self.has_family_of(ip) {
            true => Ok(()),
            false => Err(format!(
                "{what} is {}, but smoltcp has no address of that family here (see --ip)",
                family_name(ip.into())
            )),
        }
    }

    /// The node's addresses and prefixes, IPv4 first.
    pub fn cidrs(&self) -> impl Iterator<Item = IpCidr> {
        let v4 = self.ipv4.map(|f| IpCidr::Ipv4(f.cidr));
        let v6 = self.ipv6.map(|f| IpCidr::Ipv6(f.cidr));
        v4.into_iter().chain(v6)
    }

    /// The node's subnets (its addresses with the host part cleared), IPv4 first.
    pub fn networks(&self) -> Vec<IpCidr> {
        let v4 = self.ipv4.map(|f| IpCidr::Ipv4(f.cidr.network()));
        let v6 = self.ipv6.map(|f| {
            let prefix = f.cidr.prefix_len();
            let bits = u128::from(f.cidr.address())
                & (!0u128).checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpCidr::Ipv6(Ipv6Cidr::new(Ipv6Address::from(bits), prefix))
        });
        v4.into_iter().chain(v6).collect()
    }

    /// The node's gateways, IPv4 first.
    pub fn gateways(&self) -> impl Iterator<Item = IpAddress> {
        let v4 = self.ipv4.and_then(|f| f.gateway).map(IpAddress::Ipv4);
        let v6 = self.ipv6.and_then(|f| f.gateway).map(IpAddress::Ipv6);
        v4.into_iter().chain(v6)
    }

    /// The node's endpoints on `port`, as people write them (`10.0.2.15:12000 and [fd00:2::15]:12000`).
    pub fn endpoints(&self, port: u16) -> String {
        let v4 = self.ipv4.map(|f| format!("{}:{port}", f.cidr.address()));
        let v6 = self.ipv6.map(|f| format!("[{}]:{port}", f.cidr.address()));
        v4.into_iter().chain(v6).collect::<Vec<_>>().join(" and ")
    }
}

impl fmt::Display for Addressing {
    /// `10.0.2.15/24 via 10.0.2.2, fd00:2::15/64 via fd00:2::2`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(v4) = self.ipv4 {
            parts.push(match v4.gateway {
                Some(g) => format!("{} via {g}", v4.cidr),
                None => format!("{} (no gateway)", v4.cidr),
            });
        }
        if let Some(v6) = self.ipv6 {
            parts.push(match v6.gateway {
                Some(g) => format!("{} via {g}", v6.cidr),
                None => format!("{} (no gateway)", v6.cidr),
            });
        }
        f.write_str(&parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(text: &str) -> IpCidr {
        text.parse().unwrap()
    }

    #[test]
    fn the_default_is_dual_stack_with_both_gateways() {
        let both = Addressing::new(&[], &[]).unwrap();
        assert_eq!(both, Addressing::default());
        assert_eq!(
            both.to_string(),
            "10.0.2.15/24 via 10.0.2.2, fd00:2::15/64 via fd00:2::2"
        );
        assert_eq!(
            both.endpoints(12000),
            "10.0.2.15:12000 and [fd00:2::15]:12000"
        );
        assert_eq!(
            both.networks(),
            vec![cidr("10.0.2.0/24"), cidr("fd00:2::/64")]
        );
    }

    #[test]
    fn one_ip_gives_one_family_and_gateways_follow_their_family() {
        let v6 = Addressing::new(&[cidr("fd00:2::15/64")], &[]).unwrap();
        assert_eq!(v6.ipv4, None);
        assert_eq!(
            v6.gateways().collect::<Vec<_>>(),
            vec![IpAddress::Ipv6(DEFAULT_IPV6_GATEWAY)]
        );
        assert_eq!(
            v6.cidrs().map(|c| c.to_string()).collect::<Vec<_>>(),
            ["fd00:2::15/64"]
        );
        // Outside the default subnet: no gateway unless one is given.
        let elsewhere = Addressing::new(&[cidr("10.9.0.5/24")], &[]).unwrap();
        assert_eq!(elsewhere.gateways().count(), 0);
        let given = Addressing::new(
            &[cidr("10.9.0.5/24"), cidr("fd00:9::5/64")],
            &["fd00:9::1".parse().unwrap()],
        )
        .unwrap();
        assert_eq!(
            given.gateways().map(|g| g.to_string()).collect::<Vec<_>>(),
            ["fd00:9::1"]
        );
    }

    #[test]
    fn two_of_one_family_and_stray_gateways_are_refused() {
        let two = Addressing::new(&[cidr("10.0.2.15/24"), cidr("10.0.3.15/24")], &[]).unwrap_err();
        assert_eq!(
            two.to_string(),
            "--ip 10.0.2.15/24 and --ip 10.0.3.15/24 are both IPv4: give at most one address of each family"
        );
        let stray =
            Addressing::new(&[cidr("10.0.2.15/24")], &["fd00:2::2".parse().unwrap()]).unwrap_err();
        assert_eq!(
            stray.to_string(),
            "--gateway fd00:2::2 is IPv6, but no IPv6 --ip was given"
        );
        for (bad, what) in [
            ("ff02::1/64", "ff02::1 is a multicast address"),
            ("::/64", ":: is the unspecified address"),
            ("::1/128", "::1 is the loopback address"),
            ("::ffff:10.0.2.15/96", "is an IPv4-mapped address"),
            ("224.0.0.1/24", "224.0.0.1 is a multicast address"),
            ("127.0.0.1/8", "127.0.0.1 is a loopback address"),
        ] {
            let error = Addressing::new(&[cidr(bad)], &[]).unwrap_err().to_string();
            assert!(error.contains(what), "{bad}: {error}");
        }
        let gateways: Vec<IpAddr> = vec!["10.0.2.2".parse().unwrap(), "10.0.2.3".parse().unwrap()];
        assert_eq!(
            Addressing::new(&[], &gateways).unwrap_err(),
            AddressingError::TwoGateways { family: "IPv4" }
        );
    }
}
