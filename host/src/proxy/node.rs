//! The HTTP forward proxy on smoltcp: the core's [`ProxyServer`] on any [`Node`] (a TUN/TAP device or a lab node),
//! with its sockets made once at start-up and its slots in a `Box` this value owns. Everything it decides is the
//! core's; this only sizes the pool and hands it to the core.

use smoltalk_core::error::ServerError;
use smoltalk_core::proxy::{
    Limits, ProxyPolicy, ProxyServer, ProxyServerConfig, ProxySlot, ProxyStats,
};
use smoltcp::socket::dns;
use smoltcp::time::Instant;
use smoltcp::wire::{IpAddress, Ipv4Address};

use crate::stack::node::Node;

/// The most connections a smoltcp proxy pool may have.
pub const MAX_PROXY_CONNECTIONS: usize = 4096;

/// The buffer each slot keeps for what the proxy writes: room for the default limits' heads.
pub const SLOT_OUT: usize = Limits::DEFAULT.out_buffer();

/// Clients answered 503 at once when every connection is busy (one more gets a reset until one is free).
const REFUSERS: usize = 4;

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

/// The proxy on one smoltcp node.
pub struct SmoltcpProxy {
    server: ProxyServer<Box<[ProxySlot<SLOT_OUT>]>, SLOT_OUT>,
    scratch: Vec<u8>,
}

impl SmoltcpProxy {
    /// Adds `limits.max_connections` pairs of TCP sockets (client, origin) with the node's buffer size, refuser
    /// sockets and, with `dns_server`, a DNS socket, and starts listening on `port`.
    pub fn new(
        node: &mut Node,
        port: u16,
        limits: Limits,
        dns_server: Option<Ipv4Address>,
    ) -> Result<SmoltcpProxy, SmoltcpProxyError> {
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
        let slots: Box<[ProxySlot<SLOT_OUT>]> = (0..connections).map(|_| ProxySlot::NEW).collect();
        let pairs: Vec<_> = (0..connections)
            .map(|_| (node.add_tcp_socket(), node.add_tcp_socket()))
            .collect();
        // Added after every slot's socket: smoltcp gives a SYN to the first listening socket, so the refusers
        // only get clients the pool cannot take.
        let refusers: Vec<_> = (0..REFUSERS).map(|_| node.add_tcp_socket()).collect();
        let dns = dns_server.map(|server| {
            let queries: Vec<Option<dns::DnsQuery>> = (0..connections).map(|_| None).collect();
            node.sockets
                .add(dns::Socket::new(&[IpAddress::Ipv4(server)], queries))
        });
        let config = ProxyServerConfig {
            port,
            limits,
            sockets: &pairs,
            refusers: &refusers,
            dns,
            port_seed: node.ephemeral_port(),
        };
        let server =
            ProxyServer::new(&mut node.sockets, slots, config).map_err(SmoltcpProxyError::Pool)?;
        Ok(SmoltcpProxy {
            server,
            scratch: vec![0; SCRATCH.max(limits.head).max(limits.response_head)],
        })
    }

    /// Moves every connection along (call after each poll of the node's interface).
    pub fn poll(&mut self, node: &mut Node, now: Instant, policy: &ProxyPolicy<'_>) -> bool {
        self.server.poll(
            now,
            &mut node.iface,
            &mut node.sockets,
            policy,
            &mut self.scratch,
        )
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
