//! The core's HTTP proxy on the board (feature `proxy`): `ProxyServer` on 10.0.2.15:8080, beside the uppercase
//! service, with its slots, socket buffers and scratch buffer in `static` memory.
//!
//! ```text
//! client ──▶ 8080 ──▶ ProxySlot (client socket ⇄ scratch ⇄ origin socket) ──▶ 10.0.2.0/24
//!                     (both slots busy: the refuser answers 503)
//! ```
//!
//! There is no DNS socket: only address literals are served (`http://10.0.2.100/…`; a name is 502). Heads are
//! limited to [`LIMITS`]`.head` bytes, two clients are served at once, and the proxy connects only into the
//! user network's 10.0.2.0/24.

use core::ptr::addr_of_mut;

use smoltalk_core::error::ServerError;
use smoltalk_core::proxy::{
    FixedPool, Limits, ProxyPolicy, ProxyServer, ProxyServerConfig, ProxySlot, ProxyStats,
};
use smoltcp::iface::{Interface, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{IpCidr, Ipv4Address, Ipv4Cidr};

/// The port the proxy listens on.
pub const PORT: u16 = 8080;
/// Clients served at once (one slot each: a client socket and an origin socket).
pub const SLOTS: usize = 2;
/// Sockets that answer `503` while both slots are busy (instead of a reset: smoltcp has no listen backlog).
const REFUSERS: usize = 1;
/// The sockets the proxy adds to the socket set.
pub const SOCKETS: usize = 2 * SLOTS + REFUSERS;

/// The proxy's limits on the board: heads of at most 2 KiB (a request or response head; beyond it the client
/// gets 414/431, a longer response head is 502). Enough for curl's few hundred bytes and most servers' response
/// heads; the buffers that must hold a whole head (each slot's client and origin receive buffers, the scratch
/// buffer) are then 2 KiB, and each slot's own buffer for the rewritten head 3.1 KiB. The times are the
/// defaults of `smoltalk proxy`.
pub const LIMITS: Limits = Limits {
    head: 2048,
    response_head: 2048,
    max_connections: SLOTS,
    ..Limits::DEFAULT
};
/// Each slot's buffer for what the proxy writes (a rewritten head, an error page).
pub const OUT: usize = LIMITS.out_buffer();

/// Each receive buffer a head must fit in whole: the client sockets' (request heads) and the origin sockets'
/// (response heads).
const HEAD_RX: usize = LIMITS.head;
/// The client sockets' send buffers (responses go out through them) and the origin sockets' (requests).
const CLIENT_TX: usize = 2048;
const ORIGIN_TX: usize = 2048;
/// The refuser's buffers: its `503` answer (about 350 bytes) goes out whole; what the client sends is dropped.
const REFUSER_RX: usize = 256;
const REFUSER_TX: usize = 1024;
/// Heads are parsed, and body bytes move socket to socket, through this buffer (at least a head).
const SCRATCH: usize = LIMITS.head;

/// Clients allowed from anywhere: QEMU's user networking shows every forwarded client as 10.0.2.2.
const ALLOW_CLIENTS: [IpCidr; 0] = [];
/// Origins only in the user network (with `restrict=on`, only what a `guestfwd` names answers there).
const ALLOW_DESTINATIONS: [IpCidr; 1] = [IpCidr::Ipv4(Ipv4Cidr::new(Ipv4Address::new(10, 0, 2, 0), 24))];
/// `CONNECT` tunnels only to 443.
const CONNECT_PORTS: [u16; 1] = [443];

/// Who may use the proxy and where it may go.
pub const POLICY: ProxyPolicy<'static> = ProxyPolicy {
    allow_clients: &ALLOW_CLIENTS,
    allow_destinations: &ALLOW_DESTINATIONS,
    connect_ports: &CONNECT_PORTS,
    static_names: &[],
    pseudonym: "smoltalk-board",
};

/// One slot's socket buffers: its client socket's and its origin socket's.
struct SlotBuffers {
    client_rx: [u8; HEAD_RX],
    client_tx: [u8; CLIENT_TX],
    origin_rx: [u8; HEAD_RX],
    origin_tx: [u8; ORIGIN_TX],
}

/// The proxy's socket buffers (size.sh lists them apart from the rest of the static RAM).
struct SocketBuffers {
    slots: [SlotBuffers; SLOTS],
    refuser_rx: [u8; REFUSER_RX],
    refuser_tx: [u8; REFUSER_TX],
}

static mut PROXY_SLOTS: [ProxySlot<OUT>; SLOTS] = [ProxySlot::NEW; SLOTS];
static mut PROXY_SOCKET_BUFFERS: SocketBuffers = SocketBuffers {
    slots: [const {
        SlotBuffers {
            client_rx: [0; HEAD_RX],
            client_tx: [0; CLIENT_TX],
            origin_rx: [0; HEAD_RX],
            origin_tx: [0; ORIGIN_TX],
        }
    }; SLOTS],
    refuser_rx: [0; REFUSER_RX],
    refuser_tx: [0; REFUSER_TX],
};
static mut PROXY_SCRATCH: [u8; SCRATCH] = [0; SCRATCH];

/// The storage of the proxy's slots and refuser: fixed, it never grows.
pub type Slots = FixedPool<&'static mut [ProxySlot<OUT>; SLOTS]>;

/// The proxy and its scratch buffer.
pub struct BoardProxy {
    server: ProxyServer<Slots, OUT>,
    scratch: &'static mut [u8; SCRATCH],
}

impl BoardProxy {
    /// Adds the proxy's sockets to `sockets` (after every other socket on the port: the slots' first, the
    /// refuser last) and starts listening on [`PORT`]. Call once.
    pub fn start(
        sockets: &mut SocketSet<'static>,
        port_seed: u16,
    ) -> Result<BoardProxy, ServerError> {
        // SAFETY: `start` is called once (from `rust_main`, which never returns), so these are the only
        // references to the proxy's statics.
        let (slots, buffers, scratch) = unsafe {
            (
                &mut *addr_of_mut!(PROXY_SLOTS),
                &mut *addr_of_mut!(PROXY_SOCKET_BUFFERS),
                &mut *addr_of_mut!(PROXY_SCRATCH),
            )
        };
        let pairs = buffers.slots.each_mut().map(|slot| {
            let client = sockets.add(tcp::Socket::new(
                tcp::SocketBuffer::new(&mut slot.client_rx[..]),
                tcp::SocketBuffer::new(&mut slot.client_tx[..]),
            ));
            let origin = sockets.add(tcp::Socket::new(
                tcp::SocketBuffer::new(&mut slot.origin_rx[..]),
                tcp::SocketBuffer::new(&mut slot.origin_tx[..]),
            ));
            (client, origin)
        });
        let refuser = sockets.add(tcp::Socket::new(
            tcp::SocketBuffer::new(&mut buffers.refuser_rx[..]),
            tcp::SocketBuffer::new(&mut buffers.refuser_tx[..]),
        ));
        let config = ProxyServerConfig {
            port: PORT,
            limits: LIMITS,
            sockets: &pairs,
            refusers: &[refuser],
            dns: None,
            port_seed,
        };
        let server = ProxyServer::new(sockets, FixedPool::new(slots), config)?;
        Ok(BoardProxy { server, scratch })
    }

    /// Moves every client along; call after each `Interface::poll`. Returns whether anything moved.
    pub fn poll(
        &mut self,
        now: Instant,
        iface: &mut Interface,
        sockets: &mut SocketSet<'static>,
    ) -> bool {
        self.server
            .poll(now, iface, sockets, &POLICY, &mut self.scratch[..])
    }

    /// When the proxy must be polled again even if no frame arrives (a client's or origin's deadline).
    pub fn poll_at(&self) -> Option<Instant> {
        self.server.poll_at()
    }

    /// Clients being served now.
    #[cfg_attr(not(feature = "full"), allow(dead_code))] // status lines: the full build
    pub fn busy(&self) -> usize {
        self.server.busy()
    }

    /// What the proxy has done, and how many clients the refuser answered 503.
    #[cfg_attr(not(feature = "full"), allow(dead_code))] // status lines: the full build
    pub fn stats(&self) -> (ProxyStats, u64) {
        self.server.stats()
    }
}
