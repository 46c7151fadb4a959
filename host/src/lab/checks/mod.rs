//! The checks `smoltalk lab` runs: the uppercase service between a client node (10.0.2.2 and fd00:2::2) and a
//! server node (10.0.2.15 and fd00:2::15) of a [`Lab`], each check an exchange whose replies are compared byte
//! for byte with what the transform must give. Both nodes are dual-stack; every check runs over IPv4, then
//! every check again over IPv6.
//!
//! This module owns the lab ([`UppercaseLab`]) and its clients ([`LabClient`]); `report` the results and their
//! rendering; `run` the checks themselves.

mod report;
mod run;

pub use report::{preview, CheckResult, LabReport};
pub use run::{binary_payload, run_uppercase_checks, run_uppercase_checks_captured, sample_text};

use smoltalk_core::ClientError;
use smoltcp::time::Duration;
use smoltcp::wire::{IpAddress, IpEndpoint, Ipv4Address, Ipv4Cidr, Ipv6Address, Ipv6Cidr};

use crate::lab::{IpVersion, Lab};
use crate::stack::addressing::{Addressing, Family};
use crate::stack::network::{drive, earliest, Network, NetworkError, NodeId, Step};
use crate::uppercase::node::{TcpExchange, UdpExchange, UppercaseServers, DEFAULT_MAX_DATAGRAM};

/// The server node's IPv4 address.
pub const SERVER_IP: Ipv4Address = Ipv4Address::new(10, 0, 2, 15);
/// The client node's IPv4 address.
pub const CLIENT_IP: Ipv4Address = Ipv4Address::new(10, 0, 2, 2);
/// The server node's IPv6 address (in fd00:2::/64, a unique local prefix).
pub const SERVER_IPV6: Ipv6Address = Ipv6Address::new(0xfd00, 2, 0, 0, 0, 0, 0, 0x15);
/// The client node's IPv6 address.
pub const CLIENT_IPV6: Ipv6Address = Ipv6Address::new(0xfd00, 2, 0, 0, 0, 0, 0, 2);
/// The uppercase service's port.
pub const PORT: u16 = smoltalk_core::DEFAULT_PORT;
/// TCP sockets in the server's pool.
pub const SERVER_CONNECTIONS: usize = 4;

/// The TCP receive buffer of the lab's nodes.
pub const LAB_TCP_RECEIVE: usize = 64 * 1024;

/// The TCP send buffer of the lab's nodes: half the peer's receive buffer, so that a sender's unacknowledged
/// bytes can never fill the receiver's window. smoltcp 0.14 throws a segment away, ACK field and all, when its
/// sequence number is outside the receive window; a pure ACK whose sequence number sits exactly at the right
/// edge (the sender filled the window and its first segment was lost), any segment into a zero window unless it
/// starts exactly at the next expected byte, and a retransmission of bytes already received are all thrown away
/// so. With equal buffers, a lossy link between two smoltcp nodes loses ACKs that way until a whole
/// retransmission timeout passes, again and again, and can deadlock (see `crate::lab::soak`). With the receive
/// buffer twice the send buffer the window never fills and never closes: every ACK is taken.
pub const LAB_TCP_SEND: usize = 32 * 1024;

/// A lab node's addresses: `v4`/24 and `v6`/64, no gateway (the segment is one link).
fn dual_stack(v4: Ipv4Address, v6: Ipv6Address) -> Addressing {
    Addressing {
        ipv4: Some(Family {
            cidr: Ipv4Cidr::new(v4, 24),
            gateway: None,
        }),
        ipv6: Some(Family {
            cidr: Ipv6Cidr::new(v6, 64),
            gateway: None,
        }),
    }
}

/// The standard lab: a server node serving TCP and UDP uppercase on port 12000, and a client node, both with
/// an address of each family.
pub struct UppercaseLab {
    /// The network.
    pub lab: Lab,
    /// The server node.
    pub server: NodeId,
    /// The client node.
    pub client: NodeId,
    /// The servers on the server node.
    pub servers: UppercaseServers,
}

impl UppercaseLab {
    /// Builds the two nodes, with [`LAB_TCP_RECEIVE`] and [`LAB_TCP_SEND`] buffers, and starts the servers.
    pub fn new() -> Self {
        UppercaseLab::with_buffers(LAB_TCP_RECEIVE, Some(LAB_TCP_SEND))
    }

    /// Builds the two nodes with TCP receive buffers of `tcp` bytes and send buffers of `tcp_send` bytes
    /// (default: `tcp`) on both nodes, and starts the servers.
    pub fn with_buffers(tcp: usize, tcp_send: Option<usize>) -> Self {
        UppercaseLab::in_lab(Lab::default(), tcp, tcp_send)
    }

    /// [`UppercaseLab::with_buffers`] on `lab`, an empty lab set up as the caller likes.
    pub fn in_lab(mut lab: Lab, tcp: usize, tcp_send: Option<usize>) -> Self {
        let server = lab.add_node_with("server", &dual_stack(SERVER_IP, SERVER_IPV6));
        let client = lab.add_node_with("client", &dual_stack(CLIENT_IP, CLIENT_IPV6));
        for node in [server, client] {
            lab.node(node).buffers.tcp = tcp;
            lab.node(node).buffers.tcp_send = tcp_send;
        }
        let servers = UppercaseServers::new(
            lab.node(server),
            PORT,
            SERVER_CONNECTIONS,
            true,
            DEFAULT_MAX_DATAGRAM,
        )
        .expect("a fresh node accepts the server's sockets");
        UppercaseLab {
            lab,
            server,
            client,
            servers,
        }
    }

    /// The server's IPv4 endpoint on `port`.
    pub fn endpoint(port: u16) -> IpEndpoint {
        UppercaseLab::endpoint_over(IpVersion::Ipv4, port)
    }

    /// The server's endpoint on `port` over `version`.
    pub fn endpoint_over(version: IpVersion, port: u16) -> IpEndpoint {
        let address = match version {
            IpVersion::Ipv4 => IpAddress::Ipv4(SERVER_IP),
            IpVersion::Ipv6 => IpAddress::Ipv6(SERVER_IPV6),
        };
        IpEndpoint::new(address, port)
    }

    /// Runs `clients` on the client node side by side until each has finished or failed; the server keeps
    /// serving meanwhile. Returns each client's outcome, in order.
    pub fn run(
        &mut self,
        clients: &mut [LabClient],
    ) -> Result<Vec<Result<(), ClientError>>, NetworkError> {
        let mut outcomes: Vec<Option<Result<(), ClientError>>> = vec![None; clients.len()];
        let (server, client) = (self.server, self.client);
        let servers = &mut self.servers;
        drive(&mut self.lab, |lab| {
            let now = lab.now();
            let mut moved = servers.poll(lab.node(server));
            let mut poll_at = None;
            for (exchange, outcome) in clients.iter_mut().zip(outcomes.iter_mut()) {
                if outcome.is_some() {
                    continue;
                }
                match exchange.step(lab, client, now) {
                    Ok(Step::Done(())) => *outcome = Some(Ok(())),
                    Ok(Step::Pending {
                        moved: m,
                        poll_at: p,
                    }) => {
                        moved |= m;
                        poll_at = earliest(poll_at, p);
                    }
                    Err(e) => *outcome = Some(Err(e)),
                }
            }
            if outcomes.iter().all(Option::is_some) {
                Step::Done(())
            } else {
                Step::Pending { moved, poll_at }
            }
        })?;
        Ok(outcomes.into_iter().flatten().collect())
    }
}

impl UppercaseLab {
    /// Lets `duration` of virtual time pass with the server serving (timers fire, retransmissions go out).
    pub fn run_for(&mut self, duration: Duration) -> Result<(), NetworkError> {
        let until = self.lab.now() + duration;
        let (server, servers) = (self.server, &mut self.servers);
        drive(&mut self.lab, |lab| {
            let moved = servers.poll(lab.node(server));
            if lab.now() >= until {
                Step::Done(())
            } else {
                Step::Pending {
                    moved,
                    poll_at: Some(until),
                }
            }
        })
    }
}

impl Default for UppercaseLab {
    fn default() -> Self {
        UppercaseLab::new()
    }
}

/// A client the lab runs: TCP or UDP.
pub enum LabClient {
    /// A TCP client.
    Tcp(TcpExchange),
    /// A UDP client.
    Udp(UdpExchange),
}

impl LabClient {
    fn step<N: Network>(
        &mut self,
        net: &mut N,
        node: NodeId,
        now: smoltcp::time::Instant,
    ) -> Result<Step<()>, ClientError> {
        match self {
            LabClient::Tcp(c) => c.step(net.node(node), now),
            LabClient::Udp(c) => c.step(net.node(node), now),
        }
    }

    /// Every reply received so far, in order (UDP: with the tries each took).
    pub fn take_replies(&mut self) -> Vec<(Vec<u8>, u32)> {
        let mut replies = Vec::new();
        match self {
            LabClient::Tcp(c) => {
                while let Some(reply) = c.next_reply() {
                    replies.push((reply, 1));
                }
            }
            LabClient::Udp(c) => {
                while let Some(reply) = c.next_reply() {
                    replies.push(reply);
                }
            }
        }
        replies
    }
}
