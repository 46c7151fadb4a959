//! [`ProxyServer`]: the proxy's fixed pool of [`ProxyConnection`]s, its DNS socket and its refusers.
//!
//! Every connection's client socket listens on the proxy's port; smoltcp hands a SYN to the first socket in
//! the set that listens, so the host adds the connections' sockets first and the *refusers* last. A refuser
//! only ever gets a client when every connection is busy, and answers it `503` at once: at the cap, a client
//! learns why instead of seeing its SYN reset.

use smoltcp::iface::{Interface, SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::time::{Duration, Instant};

use crate::error::ServerError;
use crate::http::{HeadWriter, ProxyError};

use super::connection::{ConnectionState, ProxyConnection, ProxyStats, Shared};
use super::policy::ProxyPolicy;

/// The proxy on smoltcp: as many clients at once as the host gave it connections.
#[derive(Debug)]
pub struct ProxyServer<'a> {
    port: u16,
    connections: &'a mut [ProxyConnection<'a>],
    refusers: &'a [SocketHandle],
    dns: Option<SocketHandle>,
    timeout: Duration,
    next_port: u16,
    refused: u64,
}

impl<'a> ProxyServer<'a> {
    /// A proxy on `port` over `connections` (their client sockets start listening), with refuser sockets
    /// (each answers one client 503 at a time when the pool is full) and an optional DNS socket (without one, only `--resolve` names and literals work).
    /// `timeout` bounds the wait for a client's head and for an origin; `port_seed` picks the first local
    /// port for origin connections (make it random).
    pub fn new(
        sockets: &mut SocketSet<'_>,
        port: u16,
        connections: &'a mut [ProxyConnection<'a>],
        refusers: &'a [SocketHandle],
        dns: Option<SocketHandle>,
        timeout: Duration,
        port_seed: u16,
    ) -> Result<ProxyServer<'a>, ServerError> {
        if connections.is_empty() {
            return Err(ServerError::NoSockets);
        }
        for connection in connections.iter_mut() {
            connection
                .listen(sockets, port)
                .map_err(ServerError::Listen)?;
        }
        for &refuser in refusers {
            // A refused client that never sends its FIN must not hold the refuser for ever.
            sockets
                .get_mut::<tcp::Socket>(refuser)
                .set_timeout(Some(crate::tcp_server::SOCKET_TIMEOUT));
            sockets
                .get_mut::<tcp::Socket>(refuser)
                .listen(port)
                .map_err(ServerError::Listen)?;
        }
        Ok(ProxyServer {
            port,
            connections,
            refusers,
            dns,
            timeout,
            next_port: 49152 + port_seed % 16384,
            refused: 0,
        })
    }

    /// Moves every connection as far as it can go. Call after each `Interface::poll`; `scratch` carries body
    /// bytes between sockets (bigger moves more per poll). Returns whether anything moved.
    pub fn poll(
        &mut self,
        now: Instant,
        iface: &mut Interface,
        sockets: &mut SocketSet<'_>,
        policy: &ProxyPolicy<'_>,
        scratch: &mut [u8],
    ) -> bool {
        let own_address = iface.ipv4_addr();
        let mut shared = Shared {
            policy,
            port: self.port,
            own_address,
            timeout: self.timeout,
            dns: self.dns,
            cx: iface.context(),
            now,
            next_port: &mut self.next_port,
        };
        let mut moved = false;
        for connection in self.connections.iter_mut() {
            moved |= connection.poll(sockets, &mut shared, scratch);
        }
        for index in 0..self.refusers.len() {
            moved |= self.poll_refuser(index, sockets, scratch);
        }
        moved
    }

    /// The refuser: a client that found every connection busy gets 503 and a close.
    fn poll_refuser(
        &mut self,
        index: usize,
        sockets: &mut SocketSet<'_>,
        scratch: &mut [u8],
    ) -> bool {
        let Some(&handle) = self.refusers.get(index) else {
            return false;
        };
        let socket = sockets.get_mut::<tcp::Socket>(handle);
        match socket.state() {
            // Also a client that already sent its FIN: it still reads the answer.
            tcp::State::Established | tcp::State::CloseWait => {
                self.refused += 1;
                log::info!(
                    "From {} Refused 503 Service Unavailable (all {} proxy connections are busy)",
                    socket
                        .remote_endpoint()
                        .map_or(smoltcp::wire::IpAddress::v4(0, 0, 0, 0), |e| e.addr),
                    self.connections.len()
                );
                let mut page = HeadWriter::new(scratch);
                let _ = ProxyError::AtCapacity.write_response(&mut page);
                let _ = socket.send_slice(page.as_bytes());
                socket.close();
                true
            }
            tcp::State::TimeWait | tcp::State::Closed => {
                socket.abort();
                let _ = socket.listen(self.port);
                true
            }
            _ => {
                // Drop whatever the refused client sends, so its FIN is acknowledged.
                while let Ok(1..) = socket.recv(|b| (b.len(), b.len())) {}
                false
            }
        }
    }

    /// The earliest deadline of any connection (the host should poll again by then).
    pub fn poll_at(&self) -> Option<Instant> {
        self.connections.iter().filter_map(|c| c.deadline()).min()
    }

    /// How many connections are serving a client.
    pub fn busy(&self) -> usize {
        self.connections
            .iter()
            .filter(|c| c.state() != ConnectionState::Listening)
            .count()
    }

    /// Each connection's state, in pool order.
    pub fn states(&self) -> impl Iterator<Item = ConnectionState> + '_ {
        self.connections.iter().map(|c| c.state())
    }

    /// The pool's counters, summed, and how many clients the refusers answered.
    pub fn stats(&self) -> (ProxyStats, u64) {
        let mut total = ProxyStats::default();
        for s in self.connections.iter().map(|c| c.stats()) {
            total.accepted += s.accepted;
            total.requests += s.requests;
            total.responses += s.responses;
            total.errors += s.errors;
            total.tunnels += s.tunnels;
            total.body_bytes += s.body_bytes;
        }
        (total, self.refused)
    }
}
