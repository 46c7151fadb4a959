//! [`ProxyServer`]: the proxy on smoltcp. A pool of [`ProxySlot`]s in storage the caller owns, a DNS socket
//! they share, and refusers.
//!
//! Every slot's client socket listens on the proxy's port; smoltcp hands a SYN to the first socket in the set
//! that listens, so the host adds the slots' sockets first and the *refusers* last. A refuser only ever gets a
//! client when every slot is busy, and answers it `503` at once: at the cap, a client learns why instead of seeing
//! its SYN reset (smoltcp has no listen backlog).

mod lookup;
mod outgoing;
mod relay;
mod serving;
mod slot;

use core::net::{IpAddr, SocketAddr};

use smoltcp::iface::{Interface, SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::IpAddress;

use crate::error::ServerError;

use super::engine::{Admission, OwnAddress, Phase, ProxyConnection, ProxyContext, ProxyStats};
use super::{Limits, ProxyPolicy};
use lookup::Lookups;
use relay::drop_received;
use slot::{Shared, SlotSockets};

pub use slot::ProxySlot;

/// The most refuser sockets a server keeps.
pub const MAX_REFUSERS: usize = 8;

/// The most fields a response head may have on smoltcp (the parser's room for them is on the stack, 32 bytes
/// each on a 64-bit machine): enough for 80 `Set-Cookie` fields and the rest. The kernel-stack designs take as
/// many as fit [`Limits::response_head`].
pub const RESPONSE_FIELDS: usize = 128;

/// How a [`ProxyServer`] is set up.
#[derive(Debug, Clone, Copy)]
pub struct ProxyServerConfig<'a> {
    /// The port the proxy listens on (not 0).
    pub port: u16,
    /// Sizes and times; `max_connections` is set to the number of slots. A head is only taken off its socket
    /// once it is whole, so the client sockets' receive buffers must hold [`Limits::head`] and the origin
    /// sockets' [`Limits::response_head`] (a longer head waits there until the timeout).
    pub limits: Limits,
    /// One pair of closed TCP sockets (client, origin) per slot, in the order of the slots.
    pub sockets: &'a [(SocketHandle, SocketHandle)],
    /// Sockets that answer 503 when every slot is busy (added to the socket set after the slots' sockets; at
    /// most [`MAX_REFUSERS`]).
    pub refusers: &'a [SocketHandle],
    /// A DNS socket for names that are neither `--resolve` names nor literals (without one they are 502; without
    /// the crate's `dns` feature it is ignored).
    pub dns: Option<SocketHandle>,
    /// Picks the first local port for origin connections (make it random).
    pub port_seed: u16,
}

/// The proxy on smoltcp: as many clients at once as it has slots. `S` is the caller's storage for the slots:
/// `&'static mut [ProxySlot<OUT>; N]` in firmware, `Box<[ProxySlot<OUT>]>` on a host.
#[derive(Debug)]
pub struct ProxyServer<S, const OUT: usize> {
    slots: S,
    port: u16,
    limits: Limits,
    refusers: heapless::Vec<SocketHandle, MAX_REFUSERS>,
    lookups: Lookups,
    next_port: u16,
    refused: u64,
}

impl<S, const OUT: usize> ProxyServer<S, OUT>
where
    S: AsMut<[ProxySlot<OUT>]> + AsRef<[ProxySlot<OUT>]>,
{
    /// A proxy over `slots`, each given its pair of sockets from `config` (their client sockets start
    /// listening), with refusers and an optional DNS socket.
    pub fn new(
        sockets: &mut SocketSet<'_>,
        mut slots: S,
        config: ProxyServerConfig<'_>,
    ) -> Result<ProxyServer<S, OUT>, ServerError> {
        let count = slots.as_ref().len();
        if count == 0 || config.sockets.len() != count {
            return Err(ServerError::NoSockets);
        }
        if config.refusers.len() > MAX_REFUSERS {
            return Err(ServerError::TooManySockets {
                capacity: MAX_REFUSERS,
            });
        }
        if OUT < config.limits.out_buffer() {
            return Err(ServerError::BufferTooSmall {
                needed: config.limits.out_buffer(),
                given: OUT,
            });
        }
        for (slot, &(client, origin)) in slots.as_mut().iter_mut().zip(config.sockets) {
            slot.bind(sockets, SlotSockets { client, origin }, config.port)
                .map_err(ServerError::Listen)?;
        }
        let mut refusers = heapless::Vec::new();
        for &refuser in config.refusers {
            let socket = sockets.get_mut::<tcp::Socket>(refuser);
            // A refused client that never sends its FIN must not hold the refuser for ever.
            socket.set_timeout(Some(crate::tcp_server::SOCKET_TIMEOUT));
            socket.listen(config.port).map_err(ServerError::Listen)?;
            let _ = refusers.push(refuser);
        }
        Ok(ProxyServer {
            slots,
            port: config.port,
            limits: Limits {
                max_connections: count,
                ..config.limits
            },
            refusers,
            lookups: Lookups::new(config.dns),
            next_port: relay::dynamic_port(config.port_seed),
            refused: 0,
        })
    }

    /// Moves every slot as far as it can go. Call after each `Interface::poll`; `scratch` carries heads to be
    /// parsed and body bytes between sockets (at least [`Limits::head`] bytes, or heads are limited to its size;
    /// bigger moves more per poll). Returns whether anything moved.
    pub fn poll(
        &mut self,
        now: Instant,
        iface: &mut Interface,
        sockets: &mut SocketSet<'_>,
        policy: &ProxyPolicy<'_>,
        scratch: &mut [u8],
    ) -> bool {
        let own_v4 = iface.ipv4_addr();
        let is_local = move |ip: IpAddr| {
            ip.is_loopback() || matches!(ip, IpAddr::V4(v4) if Some(v4) == own_v4)
        };
        // A head is peeked at until it is whole: it must fit the scratch buffer (and the receive buffer of the
        // socket it comes in on, which the caller sizes; see `ProxyServerConfig::limits`).
        let limits = Limits {
            head: self.limits.head.min(scratch.len()),
            response_head: self.limits.response_head.min(scratch.len()),
            ..self.limits
        };
        let mut shared = Shared {
            cx: ProxyContext {
                policy,
                limits: &limits,
                // smoltcp listens on the port alone: every address of the interface is the proxy.
                own: OwnAddress {
                    listen: SocketAddr::new(IpAddr::from(IpAddress::v4(0, 0, 0, 0)), self.port),
                    is_local: &is_local,
                },
                can_look_up: self.lookups.available(),
            },
            iface: iface.context(),
            now,
            port: self.port,
            lookups: self.lookups,
            next_port: &mut self.next_port,
        };
        let mut moved = false;
        for slot in self.slots.as_mut() {
            moved |= slot.poll(sockets, &mut shared, scratch);
        }
        for &refuser in &self.refusers {
            moved |= refuse(refuser, sockets, &shared, scratch, &mut self.refused);
        }
        moved
    }

    /// The earliest deadline of any slot (the host should poll again by then).
    pub fn poll_at(&self) -> Option<Instant> {
        self.slots
            .as_ref()
            .iter()
            .filter_map(|s| s.deadline())
            .min()
    }

    /// How many slots hold a client connection: served, answered, or still closing (not listening).
    pub fn busy(&self) -> usize {
        self.slots.as_ref().iter().filter(|s| !s.is_free()).count()
    }

    /// The phase of each slot's connection (`None`: no connection, or its socket still closing), in pool order.
    pub fn phases(&self) -> impl Iterator<Item = Option<Phase>> + '_ {
        self.slots.as_ref().iter().map(|s| s.connection_phase())
    }

    /// The pool's counters, summed, and how many clients the refusers answered.
    pub fn stats(&self) -> (ProxyStats, u64) {
        let mut total = ProxyStats::default();
        for slot in self.slots.as_ref() {
            total.add(&slot.stats());
        }
        (total, self.refused)
    }

    /// The limits the pool keeps to.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }
}

/// A refuser: a client that found every slot busy gets 503 and a close.
fn refuse(
    handle: SocketHandle,
    sockets: &mut SocketSet<'_>,
    shared: &Shared<'_, '_>,
    scratch: &mut [u8],
    refused: &mut u64,
) -> bool {
    let socket = sockets.get_mut::<tcp::Socket>(handle);
    match socket.state() {
        // Also a client that already sent its FIN: it still reads the answer.
        tcp::State::Established | tcp::State::CloseWait => {
            let client = socket
                .remote_endpoint()
                .map_or(IpAddr::from(IpAddress::v4(0, 0, 0, 0)), |e| e.addr.into());
            let busy = shared.cx.limits.max_connections;
            if let Admission::Refuse { len } =
                ProxyConnection::admit(&shared.cx, client, busy, shared.now, scratch)
            {
                *refused += 1;
                let _ = socket.send_slice(scratch.get(..len).unwrap_or(&[]));
            }
            socket.close();
            true
        }
        tcp::State::TimeWait | tcp::State::Closed => {
            socket.abort();
            let _ = socket.listen(shared.port);
            true
        }
        _ => {
            // Drop whatever the refused client sends, so its FIN is acknowledged.
            drop_received(socket);
            false
        }
    }
}
