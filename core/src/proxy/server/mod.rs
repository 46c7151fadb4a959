//! [`ProxyServer`]: the proxy on smoltcp. A pool of [`ProxySlot`]s and refusers in storage the caller owns
//! ([`PoolStorage`]), and a DNS socket they share.
//!
//! Every slot's client socket listens on the proxy's port; smoltcp has no listen backlog and hands a SYN to the
//! first socket in the set, in the order the sockets were added, that listens: a SYN that finds none is reset.
//! So the slots' sockets come first and the *refusers* last. A refuser only ever gets a client when no slot
//! listens. It hands the client to a slot that can take it (a free one that came after it in the set, or the one
//! idle longest between requests, whose connection is reclaimed), exchanging its socket for the slot's, if its
//! socket has a slot's buffers; else it answers `503` at once: at the cap, a client learns why instead of seeing
//! its SYN reset.
//!
//! A pool in fixed memory (firmware) has all its slots and refusers from the start. A pool whose storage grows
//! (a host) starts small and is kept ahead of demand: after every packet the host asks [`ProxyServer::listeners`]
//! whether a socket still listens, and adds the slot or refuser it asks for, before the next packet can find
//! none. Slots are only asked for under the cap and refusers only at it, so every refuser is added after every
//! slot and smoltcp still prefers a free slot to a refuser.

mod outgoing;
mod relay;
mod serving;
mod slot;
mod storage;

use core::net::{IpAddr, SocketAddr};

use smoltcp::iface::{Interface, SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::IpAddress;

use crate::error::ServerError;

use super::engine::{
    longest_idle, Admission, OwnAddress, Phase, ProxyConnection, ProxyContext, ProxyStats,
};
use super::{Limits, ProxyPolicy};
use crate::name_lookup::Lookups;
use relay::drop_received;
use slot::{Shared, SlotSockets};

pub use slot::ProxySlot;
pub use storage::{FixedPool, PoolStorage, MAX_REFUSERS};

/// The most fields a response head may have on smoltcp (the parser's room for them is on the stack, 32 bytes
/// each on a 64-bit machine): enough for 80 `Set-Cookie` fields and the rest. The kernel-stack designs take as
/// many as fit [`Limits::response_head`].
pub const RESPONSE_FIELDS: usize = 128;

/// The most addresses of the interface the loop check knows as the proxy's own (smoltcp's default
/// `IFACE_MAX_ADDR_COUNT` is 2: one of each family).
#[cfg(feature = "ipv6")]
const OWN_ADDRESSES: usize = 4;

/// How a [`ProxyServer`] is set up.
#[derive(Debug, Clone, Copy)]
pub struct ProxyServerConfig<'a> {
    /// The port the proxy listens on (not 0).
    pub port: u16,
    /// Sizes and times; `max_connections` is the cap: the number of slots for a storage that cannot grow, at
    /// most what the storage can hold for one that can. A head is only taken off its socket once it is whole,
    /// so the client sockets' receive buffers must hold [`Limits::head`] and the origin sockets'
    /// [`Limits::response_head`] (a longer head waits there until the timeout).
    pub limits: Limits,
    /// One pair of closed TCP sockets (client, origin) per slot, in the order of the slots.
    pub sockets: &'a [(SocketHandle, SocketHandle)],
    /// Sockets that answer 503 when every slot is busy (added to the socket set after the slots' sockets; at
    /// most what the storage holds). A storage that grows needs none here: [`ProxyServer::listeners`] asks for
    /// them once the pool is at its cap.
    pub refusers: &'a [SocketHandle],
    /// A DNS socket for names that are neither `--resolve` names nor literals (without one they are 502; without
    /// the crate's `dns` feature it is ignored).
    pub dns: Option<SocketHandle>,
    /// Picks the first local port for origin connections (make it random).
    pub port_seed: u16,
}

/// Whether a socket of the pool listens for the next client, and if not, what the host should add (see
/// [`ProxyServer::listeners`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listeners {
    /// A slot listens (under the cap, or one that is free again), or at the cap a refuser does.
    Ready,
    /// No slot listens and the pool is under its cap: add a slot ([`ProxyServer::add_slot`]).
    WantSlot,
    /// Every slot is busy at the cap and no refuser listens: add a refuser ([`ProxyServer::add_refuser`]).
    WantRefuser,
    /// Nothing listens and the storage holds no more: the next client's SYN is reset until a socket is free.
    /// `began`: this check found it so first (since a socket last listened), to be logged once.
    Exhausted {
        /// Whether this is the first check to find the pool exhausted since a socket last listened.
        began: bool,
    },
}

/// Which socket listened at the last check (checked first the next time).
#[derive(Debug, Clone, Copy)]
enum Listener {
    Slot(usize),
    Refuser(usize),
}

/// The proxy on smoltcp: up to `limits.max_connections` clients at once, one per slot. `S` is the caller's
/// storage for the slots and refusers: a [`FixedPool`] over `&'static mut [ProxySlot<OUT>; N]` in firmware, one
/// that grows on a host.
#[derive(Debug)]
pub struct ProxyServer<S, const OUT: usize> {
    storage: S,
    port: u16,
    limits: Limits,
    lookups: Lookups,
    next_port: u16,
    refused: u64,
    /// The socket found listening at the last [`ProxyServer::listeners`].
    listener: Option<Listener>,
    /// Whether the last check found nothing listening and nothing to add.
    exhausted: bool,
}

impl<S, const OUT: usize> ProxyServer<S, OUT>
where
    S: PoolStorage<OUT>,
{
    /// A proxy over the slots in `storage`, each given its pair of sockets from `config` (their client sockets
    /// start listening), with refusers and an optional DNS socket.
    pub fn new(
        sockets: &mut SocketSet<'_>,
        mut storage: S,
        config: ProxyServerConfig<'_>,
    ) -> Result<ProxyServer<S, OUT>, ServerError> {
        let count = storage.slots().len();
        if count == 0 || config.sockets.len() != count {
            return Err(ServerError::NoSockets);
        }
        // A storage that cannot grow serves as many clients as it has slots; one that can, up to the cap.
        let cap = match storage.slot_capacity() {
            capacity if capacity <= count => count,
            capacity => config.limits.max_connections.clamp(count, capacity),
        };
        if OUT < config.limits.out_buffer() {
            return Err(ServerError::BufferTooSmall {
                needed: config.limits.out_buffer(),
                given: OUT,
            });
        }
        for (slot, &(client, origin)) in storage.slots_mut().iter_mut().zip(config.sockets) {
            slot.bind(sockets, SlotSockets { client, origin }, config.port)
                .map_err(ServerError::Listen)?;
        }
        for &refuser in config.refusers {
            listen_refuser(sockets, refuser, config.port)?;
            if !storage.push_refuser(refuser) {
                return Err(ServerError::TooManySockets {
                    capacity: storage.refuser_capacity(),
                });
            }
        }
        Ok(ProxyServer {
            storage,
            port: config.port,
            limits: Limits {
                max_connections: cap,
                ..config.limits
            },
            lookups: Lookups::new(config.dns),
            next_port: relay::dynamic_port(config.port_seed),
            refused: 0,
            listener: None,
            exhausted: false,
        })
    }

    /// Whether one of the pool's sockets listens for the next client, or what the host should add so that one
    /// does. A host whose storage grows calls it after every packet the interface takes in (a SYN takes the
    /// socket that listened) and adds what it asks for until it says [`Listeners::Ready`] or
    /// [`Listeners::Exhausted`]: then no client within the cap meets a reset, and beyond it every client gets
    /// a refuser's 503 while the storage has room for one. Under the cap only slots are asked for, at the cap
    /// only refusers, so smoltcp (which hands a SYN to the first listening socket in the set) prefers a slot.
    pub fn listeners(&mut self, sockets: &SocketSet<'_>) -> Listeners {
        let listens =
            |handle: SocketHandle| sockets.get::<tcp::Socket>(handle).state() == tcp::State::Listen;
        let slots = self.storage.slots();
        let refusers = self.storage.refusers();
        let still = match self.listener {
            Some(Listener::Slot(i)) => slots.get(i).is_some_and(|s| s.listens(sockets)),
            Some(Listener::Refuser(i)) => refusers.get(i).is_some_and(|&h| listens(h)),
            None => false,
        };
        if !still {
            self.listener = slots
                .iter()
                .position(|s| s.listens(sockets))
                .map(Listener::Slot)
                .or_else(|| {
                    let refuser = refusers.iter().position(|&h| listens(h));
                    refuser.map(Listener::Refuser)
                });
        }
        let wanted = match self.listener {
            Some(_) => Listeners::Ready,
            None if slots.len() < self.limits.max_connections => Listeners::WantSlot,
            None if refusers.len() < self.storage.refuser_capacity() => Listeners::WantRefuser,
            None => Listeners::Exhausted {
                began: !self.exhausted,
            },
        };
        self.exhausted = matches!(wanted, Listeners::Exhausted { .. });
        wanted
    }

    /// Adds a slot over a new pair of closed TCP sockets (client, origin) added to the set after every socket
    /// the pool has; its client socket starts listening. For a storage that grows, when
    /// [`ProxyServer::listeners`] asks for one.
    pub fn add_slot(
        &mut self,
        sockets: &mut SocketSet<'_>,
        client: SocketHandle,
        origin: SocketHandle,
    ) -> Result<(), ServerError> {
        let full = ServerError::TooManySockets {
            capacity: self.limits.max_connections,
        };
        if self.storage.slots().len() >= self.limits.max_connections || !self.storage.push_slot() {
            return Err(full);
        }
        let slot = self.storage.slots_mut().last_mut().ok_or(full)?;
        slot.bind(sockets, SlotSockets { client, origin }, self.port)
            .map_err(ServerError::Listen)
    }

    /// Adds a refuser over a new closed TCP socket added to the set after every socket the pool has (a few KiB
    /// of buffers: it only sends a 503 page); it starts listening. When [`ProxyServer::listeners`] asks for one.
    pub fn add_refuser(
        &mut self,
        sockets: &mut SocketSet<'_>,
        refuser: SocketHandle,
    ) -> Result<(), ServerError> {
        if !self.storage.push_refuser(refuser) {
            return Err(ServerError::TooManySockets {
                capacity: self.storage.refuser_capacity(),
            });
        }
        listen_refuser(sockets, refuser, self.port)
    }

    /// How many refusers the pool has made.
    pub fn refusers(&self) -> usize {
        self.storage.refusers().len()
    }

    /// How many of the pool's sockets listen now (slots and refusers), and how many slots and refusers it has.
    pub fn sockets_listening(&self, sockets: &SocketSet<'_>) -> (usize, usize, usize) {
        let slots = self.storage.slots();
        let refusers = self.storage.refusers();
        let listening = slots.iter().filter(|s| s.listens(sockets)).count()
            + refusers
                .iter()
                .filter(|&&h| sockets.get::<tcp::Socket>(h).state() == tcp::State::Listen)
                .count();
        (listening, slots.len(), refusers.len())
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
        // The interface's own addresses, of both families (copied: the interface is borrowed again below).
        // `OwnAddress::is_proxy` asks with an address that stands for an IPv4 one already made IPv4.
        #[cfg(feature = "ipv6")]
        let is_local = {
            let mut own_addresses = heapless::Vec::<IpAddr, OWN_ADDRESSES>::new();
            for cidr in iface.ip_addrs() {
                let _ = own_addresses.push(IpAddr::from(cidr.address()));
            }
            move |ip: IpAddr| ip.is_loopback() || own_addresses.contains(&ip)
        };
        // IPv4 only: the one address (as small as a board's flash wants it).
        #[cfg(not(feature = "ipv6"))]
        let is_local = {
            let own_v4 = iface.ipv4_addr();
            move |ip: IpAddr| ip.is_loopback() || matches!(ip, IpAddr::V4(v4) if Some(v4) == own_v4)
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
        for slot in self.storage.slots_mut() {
            moved |= slot.poll(sockets, &mut shared, scratch);
        }
        for i in 0..self.storage.refusers().len() {
            let Some(&refuser) = self.storage.refusers().get(i) else {
                break;
            };
            // A client a refuser took goes to a slot if one can take it: one that is free (it came after the
            // refuser in the socket set), or the one idle longest between requests, reclaimed. The refuser
            // gets that slot's socket in exchange: still listening, or closing the reclaimed client.
            if has_client(refuser, sockets) {
                if let Some(given) = hand_over(self.storage.slots_mut(), refuser, sockets) {
                    if let Some(slot) = self.storage.refusers_mut().get_mut(i) {
                        *slot = given;
                    }
                    moved = true;
                    continue;
                }
            }
            moved |= refuse(refuser, sockets, &shared, scratch, &mut self.refused);
        }
        moved
    }

    /// The earliest deadline of any slot (the host should poll again by then).
    pub fn poll_at(&self) -> Option<Instant> {
        self.storage
            .slots()
            .iter()
            .filter_map(|s| s.deadline())
            .min()
    }

    /// How many slots hold a client connection: served, answered, or still closing (not listening).
    pub fn busy(&self) -> usize {
        self.storage.slots().iter().filter(|s| !s.is_free()).count()
    }

    /// The phase of each slot's connection (`None`: no connection, or its socket still closing), in pool order.
    pub fn phases(&self) -> impl Iterator<Item = Option<Phase>> + '_ {
        self.storage.slots().iter().map(|s| s.connection_phase())
    }

    /// The pool's counters, summed, and how many clients the refusers answered.
    pub fn stats(&self) -> (ProxyStats, u64) {
        let mut total = ProxyStats::default();
        for slot in self.storage.slots() {
            total.add(&slot.stats());
        }
        (total, self.refused)
    }

    /// The limits the pool keeps to.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }
}

/// Readies a refuser's socket and starts it listening on `port`.
fn listen_refuser(
    sockets: &mut SocketSet<'_>,
    refuser: SocketHandle,
    port: u16,
) -> Result<(), ServerError> {
    let socket = sockets.get_mut::<tcp::Socket>(refuser);
    // A refused client that never sends its FIN must not hold the refuser for ever.
    socket.set_timeout(Some(crate::tcp_server::SOCKET_TIMEOUT));
    socket.listen(port).map_err(ServerError::Listen)
}

/// Whether a refuser's socket holds a client (also one that already sent its FIN: it still reads the answer).
fn has_client(handle: SocketHandle, sockets: &SocketSet<'_>) -> bool {
    matches!(
        sockets.get::<tcp::Socket>(handle).state(),
        tcp::State::Established | tcp::State::CloseWait
    )
}

/// Gives the client on `refuser`'s socket to a slot that can serve it: a free one, else the one idle longest
/// between requests (its connection reclaimed, as a full pool does before it refuses). Returns the socket the
/// refuser gets in exchange; `None` if no slot can take the client (then it is refused).
///
/// A connection stays on the socket it came in on, so the slot keeps it for as long as the client stays: only a
/// refuser socket with buffers as large as the slot's own may be handed over. A refuser's few KiB would hold no
/// longer head than they do (a browser's, with its cookies, would wait there until the head timeout) and would
/// slow every response after. The host gives its first refusers a slot's buffers for this.
fn hand_over<const OUT: usize>(
    slots: &mut [ProxySlot<OUT>],
    refuser: SocketHandle,
    sockets: &mut SocketSet<'_>,
) -> Option<SocketHandle> {
    let taker = slots
        .iter()
        .position(|s| s.listens(sockets))
        .or_else(|| longest_idle(slots.iter().enumerate().map(|(i, s)| (i, s.idle_since()))))?;
    let slot = slots.get_mut(taker)?;
    let buffers = |handle| {
        let socket = sockets.get::<tcp::Socket>(handle);
        (socket.recv_capacity(), socket.send_capacity())
    };
    let (given, own) = (buffers(refuser), buffers(slot.client_socket()?));
    if given.0 < own.0 || given.1 < own.1 {
        return None;
    }
    slot.take_client(refuser, sockets)
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
