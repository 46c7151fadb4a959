//! The proxy in the lab: a client node (10.0.2.2) fetches through the smoltcp proxy on a proxy node
//! (10.0.2.15:8080) from a small HTTP origin on an origin node (10.0.2.80:80), all on the lab's virtual segment.
//! The proxy and origin nodes are dual-stack (fd00:2::15, fd00:2::80), so the proxy reaches the origin over
//! IPv6 too: by its literal `http://[fd00:2::80]/` or by a name it knows as an IPv6 address.
//!
//! - [`LabOrigin`]: the origin, a few smoltcp sockets answering fixed paths (a page, 1 MiB, a chunked body, an
//!   echo of POST bodies), remembering each request line and `Via` it saw.
//! - [`LabFetch`]: a client connection that sends its requests one after another on one connection (keep-alive)
//!   and collects each whole response.
//! - [`ProxyLab`] puts them together; [`run_proxy_checks`] is the proxy half of `smoltalk lab`.

use std::net::IpAddr;

use smoltalk_core::proxy::{Limits, ProxyPolicy};
use smoltcp::time::Duration;
use smoltcp::wire::{IpCidr, Ipv4Address, Ipv4Cidr, Ipv6Address, Ipv6Cidr};

use crate::lab::Lab;
use crate::proxy::node::{SmoltcpProxy, SmoltcpProxyError};
use crate::stack::addressing::{Addressing, Family};
use crate::stack::network::{drive_each_packet, earliest, Network, NetworkError, NodeId, Step};

mod checks;
mod fetch;
mod origin;

pub use checks::{run_proxy_checks, run_proxy_checks_captured};
pub use fetch::{LabFetch, LabRequest, LabResponse};
pub use origin::{big_body, LabOrigin, SeenRequest, CHUNKED_BODY};

/// The client node's address.
pub const CLIENT_IP: Ipv4Address = Ipv4Address::new(10, 0, 2, 2);
/// The proxy node's address.
pub const PROXY_IP: Ipv4Address = Ipv4Address::new(10, 0, 2, 15);
/// The origin node's address.
pub const ORIGIN_IP: Ipv4Address = Ipv4Address::new(10, 0, 2, 80);
/// The proxy's port.
pub const PROXY_PORT: u16 = 8080;
/// The origin's port.
pub const ORIGIN_PORT: u16 = 80;
/// The proxy node's IPv6 address.
pub const PROXY_IPV6: Ipv6Address = Ipv6Address::new(0xfd00, 2, 0, 0, 0, 0, 0, 0x15);
/// The origin node's IPv6 address.
pub const ORIGIN_IPV6: Ipv6Address = Ipv6Address::new(0xfd00, 2, 0, 0, 0, 0, 0, 0x80);
/// The origin's name, known to the proxy through its static names (the lab has no DNS server).
pub const ORIGIN_NAME: &str = "origin.lab";
/// A second name of the origin, known to the proxy as its IPv6 address only.
pub const ORIGIN_NAME_IPV6: &str = "origin6.lab";

/// The lab segment, the only place the lab proxy may connect to: its IPv4 subnet and its IPv6 prefix.
const LAB_SEGMENT: [IpCidr; 2] = [
    IpCidr::Ipv4(Ipv4Cidr::new(Ipv4Address::new(10, 0, 2, 0), 24)),
    IpCidr::Ipv6(Ipv6Cidr::new(
        Ipv6Address::new(0xfd00, 2, 0, 0, 0, 0, 0, 0),
        64,
    )),
];

/// The proxy's static names (what `--resolve` gives the command): [`ORIGIN_NAME`] as IPv4,
/// [`ORIGIN_NAME_IPV6`] as IPv6.
const STATIC_NAMES: [(&str, IpAddr); 2] = [
    (ORIGIN_NAME, IpAddr::V4(ORIGIN_IP)),
    (ORIGIN_NAME_IPV6, IpAddr::V6(ORIGIN_IPV6)),
];

/// A lab node's addresses: `v4`/24, and `v6`/64 if given; no gateway (the segment is one link).
fn lab_addressing(v4: Ipv4Address, v6: Option<Ipv6Address>) -> Addressing {
    Addressing {
        ipv4: Some(Family {
            cidr: Ipv4Cidr::new(v4, 24),
            gateway: None,
        }),
        ipv6: v6.map(|v6| Family {
            cidr: Ipv6Cidr::new(v6, 64),
            gateway: None,
        }),
    }
}

/// Three nodes: a client, the proxy, an origin.
pub struct ProxyLab {
    /// The network.
    pub lab: Lab,
    /// The client node.
    pub client: NodeId,
    /// The proxy node.
    pub proxy_node: NodeId,
    /// The origin node.
    pub origin_node: NodeId,
    /// The proxy.
    pub proxy: SmoltcpProxy,
    /// Its policy: clients from anywhere, origins only in the lab's segment, [`ORIGIN_NAME`] known.
    pub policy: ProxyPolicy<'static>,
    /// The origin.
    pub origin: LabOrigin,
    origin_active: Vec<bool>,
}

impl ProxyLab {
    /// A lab whose proxy has `connections` connections, knows [`ORIGIN_NAME`] and [`ORIGIN_NAME_IPV6`], and
    /// may connect only inside the lab's 10.0.2.0/24 and fd00:2::/64.
    pub fn new(connections: usize) -> Result<ProxyLab, SmoltcpProxyError> {
        let mut lab = Lab::default();
        let client = lab.add_node("client", IpCidr::new(CLIENT_IP.into(), 24));
        let proxy_node = lab.add_node_with("proxy", &lab_addressing(PROXY_IP, Some(PROXY_IPV6)));
        let origin_node =
            lab.add_node_with("origin", &lab_addressing(ORIGIN_IP, Some(ORIGIN_IPV6)));
        let limits = Limits {
            max_connections: connections,
            timeout: Duration::from_secs(10),
            ..Limits::DEFAULT
        };
        let proxy = SmoltcpProxy::new(lab.node(proxy_node), PROXY_PORT, limits, None)?;
        // The origin reads each request whole (the POST check sends 200 KiB).
        lab.node(origin_node).buffers.tcp = 512 * 1024;
        // One listening socket for each connection the proxy may open at once (smoltcp has no backlog).
        let origin = LabOrigin::new(lab.node(origin_node), ORIGIN_PORT, connections.max(8));
        Ok(ProxyLab {
            lab,
            client,
            proxy_node,
            origin_node,
            proxy,
            policy: ProxyPolicy {
                allow_clients: &[],
                allow_destinations: &LAB_SEGMENT,
                connect_ports: &[443],
                static_names: &STATIC_NAMES,
                pseudonym: "smoltalk-lab",
            },
            origin,
            origin_active: Vec::new(),
        })
    }

    /// Runs one fetch per entry of `clients`, side by side, until all are done.
    pub fn fetch(&mut self, clients: Vec<Vec<LabRequest>>) -> Result<Vec<LabFetch>, NetworkError> {
        let now = self.lab.now();
        let client = self.client;
        let fetches: Vec<LabFetch> = clients
            .into_iter()
            .map(|requests| LabFetch::new(self.lab.node(client), requests, now))
            .collect();
        self.run_fetches(fetches)
    }

    /// Runs `fetches` (made on the client node) side by side until all are done, then lets the proxy settle.
    pub fn run_fetches(
        &mut self,
        mut fetches: Vec<LabFetch>,
    ) -> Result<Vec<LabFetch>, NetworkError> {
        let client = self.client;
        self.run_until(
            |lab, fetches: &mut Vec<LabFetch>| {
                let now = lab.now();
                let mut moved = false;
                for fetch in fetches.iter_mut() {
                    moved |= fetch.step(lab.node(client), now);
                }
                (moved, fetches.iter().all(LabFetch::is_done))
            },
            &mut fetches,
        )?;
        self.settle()?;
        Ok(fetches)
    }

    /// Lets closing connections finish (at most 5 s of virtual time), so the next fetch finds the pool free.
    pub fn settle(&mut self) -> Result<(), NetworkError> {
        let until = self.lab.now() + Duration::from_secs(5);
        self.poll_until(|lab, proxy| (false, proxy.busy() == 0 || lab.now() >= until))
    }

    /// Polls the proxy and origin and `step` until `step` says it is done.
    pub fn run_until<T>(
        &mut self,
        mut step: impl FnMut(&mut Lab, &mut T) -> (bool, bool),
        state: &mut T,
    ) -> Result<(), NetworkError> {
        self.poll_until(|lab, _| step(lab, state))
    }

    /// Polls the proxy and origin, then `step` (given the proxy to look at), until `step` says it is done;
    /// `step` says whether it moved anything, and whether it is done.
    fn poll_until(
        &mut self,
        mut step: impl FnMut(&mut Lab, &SmoltcpProxy) -> (bool, bool),
    ) -> Result<(), NetworkError> {
        let (proxy_node, origin_node) = (self.proxy_node, self.origin_node);
        let (proxy, policy, origin, origin_active) = (
            &mut self.proxy,
            &self.policy,
            &mut self.origin,
            &mut self.origin_active,
        );
        // After every packet the proxy's node takes in, before the next: a SYN may have taken the last
        // listening socket.
        let keep_listening = |proxy: &mut SmoltcpProxy, id, node: &mut _| {
            if id == proxy_node {
                proxy.keep_listening(node);
            }
        };
        drive_each_packet(&mut self.lab, proxy, keep_listening, |lab, proxy| {
            let now = lab.now();
            let mut moved = proxy.poll(lab.node(proxy_node), now, policy);
            moved |= origin.poll(lab.node(origin_node), ORIGIN_PORT);
            origin.count_connections(lab.node(origin_node), origin_active);
            let (stepped, done) = step(lab, proxy);
            if done {
                return Step::Done(());
            }
            Step::Pending {
                moved: moved || stepped,
                poll_at: earliest(proxy.poll_at(), Some(now + Duration::from_millis(200))),
            }
        })
    }
}
