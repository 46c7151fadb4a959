//! The HTTP forward proxy on smoltcp: the core's [`ProxyServer`] with every socket and buffer made here, once,
//! at start-up, on any [`Node`] (a TUN/TAP device or a lab node).

use smoltalk_core::proxy::{
    ConnectionBuffers, ProxyConnection, ProxyPolicy, ProxyServer, ProxyStats,
};
use smoltcp::socket::dns;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{IpAddress, Ipv4Address};

use crate::stack::node::Node;

/// The most connections a smoltcp proxy pool may have.
pub const MAX_PROXY_CONNECTIONS: usize = 4096;

/// The longest request or response head a smoltcp proxy connection takes.
pub const PROXY_HEAD_BUFFER: usize = 8 * 1024;

/// Room for what the proxy adds to a head (`Via`, `Host`, `Connection`).
const HEAD_GROWTH: usize = 1024;

/// Clients answered 503 at once when every connection is busy (one more gets a reset until one is free).
const REFUSERS: usize = 4;

/// Body bytes move between sockets through a scratch buffer this big (shared by the whole pool).
const SCRATCH: usize = 32 * 1024;

/// The proxy on one smoltcp node.
pub struct SmoltcpProxy {
    server: ProxyServer<'static>,
    policy: ProxyPolicy<'static>,
    scratch: Vec<u8>,
}

impl SmoltcpProxy {
    /// Adds `connections` pairs of TCP sockets (client, origin) with the node's buffer size, refuser sockets
    /// and, with `dns_server`, a DNS socket, and starts listening on `port`. The pool and its head buffers
    /// live as long as the process.
    pub fn new(
        node: &mut Node,
        port: u16,
        connections: usize,
        dns_server: Option<Ipv4Address>,
        timeout: Duration,
        policy: ProxyPolicy<'static>,
    ) -> Result<SmoltcpProxy, String> {
        if !(1..=MAX_PROXY_CONNECTIONS).contains(&connections) {
            return Err(format!("the smoltcp proxy serves 1 to {MAX_PROXY_CONNECTIONS} connections, not {connections}"));
        }
        if port == 0 {
            return Err("port 0 is not valid with smoltcp: pass --port".into());
        }
        let mut pool = Vec::with_capacity(connections);
        for _ in 0..connections {
            let client = node.add_tcp_socket();
            let upstream = node.add_tcp_socket();
            let buffers = ConnectionBuffers {
                head: Box::leak(vec![0; PROXY_HEAD_BUFFER].into_boxed_slice()),
                out: Box::leak(vec![0; PROXY_HEAD_BUFFER + HEAD_GROWTH].into_boxed_slice()),
            };
            pool.push(ProxyConnection::new(client, upstream, buffers));
        }
        // Added after every client socket: smoltcp gives a SYN to the first listening socket, so the refuser
        // only gets clients the pool cannot take.
        let refusers: Vec<_> = (0..REFUSERS).map(|_| node.add_tcp_socket()).collect();
        let refusers = Box::leak(refusers.into_boxed_slice());
        let dns = dns_server.map(|server| {
            let queries: Vec<Option<dns::DnsQuery>> = (0..connections).map(|_| None).collect();
            node.sockets
                .add(dns::Socket::new(&[IpAddress::Ipv4(server)], queries))
        });
        let seed = node.ephemeral_port();
        let pool = Box::leak(pool.into_boxed_slice());
        let server = ProxyServer::new(&mut node.sockets, port, pool, refusers, dns, timeout, seed)
            .map_err(|e| e.to_string())?;
        Ok(SmoltcpProxy {
            server,
            policy,
            scratch: vec![0; SCRATCH],
        })
    }

    /// Moves every connection along (call after each poll of the node's interface).
    pub fn poll(&mut self, node: &mut Node, now: Instant) -> bool {
        self.server.poll(
            now,
            &mut node.iface,
            &mut node.sockets,
            &self.policy,
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
