//! The HTTP forward proxy on smoltcp: the core's [`ProxyServer`] on any [`Node`] (a TUN/TAP device or a lab node),
//! with its slots and refusers in a storage this value owns that grows as clients come ([`GrowingPool`]).
//! Everything it decides is the core's; this only makes the sockets and the room the core asks for.
//!
//! smoltcp has no listen backlog: a SYN that finds no listening socket is reset, and a browser gives up on a
//! reset. So the pool starts with one slot and is kept ahead of demand: after every packet the node takes in,
//! [`SmoltcpProxy::keep_listening`] adds a slot whenever the last listening one was taken (up to
//! `--max-connections`), then, at the cap, a refuser (a `503` instead of a reset), up to [`MAX_REFUSERS`]. A
//! slot costs its sockets' buffers only once a client needs it.

use std::net::IpAddr;

use smoltalk_core::error::ServerError;
use smoltalk_core::proxy::{
    Limits, Listeners, PoolStorage, ProxyPolicy, ProxyServer, ProxyServerConfig, ProxySlot,
    ProxyStats,
};
use smoltcp::iface::SocketHandle;
use smoltcp::socket::dns;
use smoltcp::time::Instant;
use smoltcp::wire::IpAddress;

use crate::stack::node::Node;

/// The smoltcp proxy's cap by default: room for a browser (Chromium opens up to 32 connections to a proxy, and
/// 256 in all). The pool grows to it only as clients come, so a cap unused costs nothing.
pub const DEFAULT_POOL: usize = 256;

/// The most connections a smoltcp proxy pool may have.
pub const MAX_PROXY_CONNECTIONS: usize = 4096;

/// The buffer each slot keeps for what the proxy writes: room for the default limits' heads.
pub const SLOT_OUT: usize = Limits::DEFAULT.out_buffer();

/// The most refusers the pool keeps: clients beyond the cap answered `503` at once. A refuser holds a client
/// only until its answer is acknowledged (at most the core's socket timeout for one that never reads it) and
/// costs [`REFUSER_BUFFERS`] of buffers (the first [`SPARE_REFUSERS`] a slot's), so a flood of clients can take
/// at most about 4 MiB this way (and half a MiB for the spares with the default buffers); past this
/// many at once, a client's SYN is reset (and the proxy logs that it ran out).
pub const MAX_REFUSERS: usize = 1024;

/// A refuser's receive and send buffers: it reads nothing and sends one short page.
const REFUSER_BUFFERS: (usize, usize) = (1024, 2048);

/// The first refusers the pool adds have a slot's buffers, so that a client one takes can be handed to a slot
/// whose idle connection is reclaimed (the core hands over only a socket as large as the slot's own, which then
/// serves the client for as long as it stays). smoltcp gives a SYN to the first listening socket in the set, so
/// these, added before the small ones, take the clients beyond the cap first; up to this many reclaims at once.
const SPARE_REFUSERS: usize = 4;

/// Heads are parsed, and body bytes move between sockets, through a scratch buffer this big (shared by the
/// pool; at least the largest head, a response's).
const SCRATCH: usize = 32 * 1024;

/// Why a smoltcp proxy could not be set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SmoltcpProxyError {
    /// The pool size is out of range.
    Connections(usize),
    /// Port 0 is not a port smoltcp listens on.
    PortZero,
    /// The head limit is larger than the slots' buffers.
    HeadTooLarge(usize),
    /// The core refused the pool.
    Pool(ServerError),
}

impl std::fmt::Display for SmoltcpProxyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SmoltcpProxyError::Connections(n) => write!(
                f,
                "the smoltcp proxy serves 1 to {MAX_PROXY_CONNECTIONS} connections, not {n}"
            ),
            SmoltcpProxyError::PortZero => {
                f.write_str("port 0 is not valid with smoltcp: pass --port")
            }
            SmoltcpProxyError::HeadTooLarge(n) => write!(
                f,
                "heads of {n} bytes do not fit the smoltcp proxy's buffers (at most {} bytes)",
                Limits::DEFAULT.response_head
            ),
            SmoltcpProxyError::Pool(e) => write!(f, "cannot start the proxy: {e}"),
        }
    }
}

impl std::error::Error for SmoltcpProxyError {}

/// The pool's storage on a host: slots and refusers in vectors that grow when the core asks for more.
#[derive(Debug)]
pub struct GrowingPool {
    slots: Vec<ProxySlot<SLOT_OUT>>,
    max_slots: usize,
    refusers: Vec<SocketHandle>,
}

impl PoolStorage<SLOT_OUT> for GrowingPool {
    fn slots(&self) -> &[ProxySlot<SLOT_OUT>] {
        &self.slots
    }

    fn slots_mut(&mut self) -> &mut [ProxySlot<SLOT_OUT>] {
        &mut self.slots
    }

    fn slot_capacity(&self) -> usize {
        self.max_slots
    }

    fn push_slot(&mut self) -> bool {
        if self.slots.len() >= self.max_slots {
            return false;
        }
        self.slots.push(ProxySlot::NEW);
        true
    }

    fn refusers(&self) -> &[SocketHandle] {
        &self.refusers
    }

    fn refusers_mut(&mut self) -> &mut [SocketHandle] {
        &mut self.refusers
    }

    fn refuser_capacity(&self) -> usize {
        MAX_REFUSERS
    }

    fn push_refuser(&mut self, handle: SocketHandle) -> bool {
        if self.refusers.len() >= MAX_REFUSERS {
            return false;
        }
        self.refusers.push(handle);
        true
    }
}

/// The proxy on one smoltcp node.
pub struct SmoltcpProxy {
    server: ProxyServer<GrowingPool, SLOT_OUT>,
    scratch: Vec<u8>,
    /// Times the pool ran out of listening sockets with no room for another (clients reset meanwhile).
    exhausted: u64,
}

impl SmoltcpProxy {
    /// Adds one pair of TCP sockets (client, origin) with the node's buffer size and, with `dns_server`, a DNS
    /// socket, and starts listening on `port`. The pool grows to `limits.max_connections` slots as clients
    /// come (see [`SmoltcpProxy::keep_listening`]).
    pub fn new(
        node: &mut Node,
        port: u16,
        mut limits: Limits,
        dns_server: Option<IpAddr>,
    ) -> Result<SmoltcpProxy, SmoltcpProxyError> {
        // A head is taken off its socket only once it is whole: no longer than a receive buffer holds.
        limits.head = limits.head.min(node.buffers.tcp);
        limits.response_head = limits.response_head.min(node.buffers.tcp);
        let connections = limits.max_connections;
        if !(1..=MAX_PROXY_CONNECTIONS).contains(&connections) {
            return Err(SmoltcpProxyError::Connections(connections));
        }
        if port == 0 {
            return Err(SmoltcpProxyError::PortZero);
        }
        if limits.out_buffer() > SLOT_OUT {
            return Err(SmoltcpProxyError::HeadTooLarge(
                limits.head.max(limits.response_head),
            ));
        }
        let storage = GrowingPool {
            slots: vec![ProxySlot::NEW],
            max_slots: connections,
            refusers: Vec::new(),
        };
        let pairs = [(node.add_tcp_socket(), node.add_tcp_socket())];
        let dns = dns_server.map(|server| {
            // Its query storage is fixed when it is made: room for every slot the pool may grow to, each asking
            // for A and AAAA records at once.
            let queries: Vec<Option<dns::DnsQuery>> = (0..2 * connections).map(|_| None).collect();
            node.sockets
                .add(dns::Socket::new(&[IpAddress::from(server)], queries))
        });
        let config = ProxyServerConfig {
            port,
            limits,
            sockets: &pairs,
            // The core asks for refusers once the pool is at its cap (see `keep_listening`).
            refusers: &[],
            dns,
            port_seed: node.ephemeral_port(),
        };
        let server = ProxyServer::new(&mut node.sockets, storage, config)
            .map_err(SmoltcpProxyError::Pool)?;
        Ok(SmoltcpProxy {
            server,
            scratch: vec![0; SCRATCH.max(limits.head).max(limits.response_head)],
            exhausted: 0,
        })
    }

    /// Makes sure a socket listens for the next client, adding the slot or refuser the core asks for. Call
    /// after every packet the node takes in (see [`crate::stack::network::drive_each_packet`]): one packet is
    /// one SYN at most, so the next always finds a socket.
    pub fn keep_listening(&mut self, node: &mut Node) {
        loop {
            let added = match self.server.listeners(&node.sockets) {
                Listeners::Ready => return,
                Listeners::WantSlot => {
                    let (client, origin) = (node.add_tcp_socket(), node.add_tcp_socket());
                    self.server.add_slot(&mut node.sockets, client, origin)
                }
                Listeners::WantRefuser => {
                    let refuser = if self.server.refusers() < SPARE_REFUSERS {
                        node.add_tcp_socket()
                    } else {
                        let (rx, tx) = REFUSER_BUFFERS;
                        node.add_tcp_socket_sized(rx, tx)
                    };
                    self.server.add_refuser(&mut node.sockets, refuser)
                }
                Listeners::Exhausted { began } => {
                    if began {
                        self.exhausted += 1;
                        let (stats, refused) = self.server.stats();
                        log::warn!(
                            "every one of the {} connections and {MAX_REFUSERS} refusers is busy: new clients \
                             are reset until one is free (ran out {} time(s); {} clients served, {refused} \
                             refused so far)",
                            self.server.limits().max_connections,
                            self.exhausted,
                            stats.accepted,
                        );
                    }
                    return;
                }
            };
            if let Err(e) = added {
                // Cannot happen for new closed sockets under the storage's bounds; the next packet tries again.
                log::error!("the proxy cannot add a socket: {e}");
                return;
            }
        }
    }

    /// How many of the pool's sockets listen, and how many slots and refusers it has made so far.
    pub fn sockets(&self, node: &Node) -> (usize, usize, usize) {
        self.server.sockets_listening(&node.sockets)
    }

    /// Times the pool ran out of listening sockets with no room for another.
    pub fn exhausted(&self) -> u64 {
        self.exhausted
    }

    /// Moves every connection along (call after each poll of the node's interface), and keeps a socket
    /// listening (slots that finish listen again; this adds one if none does).
    pub fn poll(&mut self, node: &mut Node, now: Instant, policy: &ProxyPolicy<'_>) -> bool {
        let moved = self.server.poll(
            now,
            &mut node.iface,
            &mut node.sockets,
            policy,
            &mut self.scratch,
        );
        self.keep_listening(node);
        moved
    }

    /// When the proxy must be polled again even if no packet arrives.
    pub fn poll_at(&self) -> Option<Instant> {
        self.server.poll_at()
    }

    /// Connections serving a client now.
    pub fn busy(&self) -> usize {
        self.server.busy()
    }

    /// The pool's counters and how many clients were refused at the cap.
    pub fn stats(&self) -> (ProxyStats, u64) {
        self.server.stats()
    }
}
