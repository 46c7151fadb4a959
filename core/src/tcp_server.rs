//! [`UppercaseTcpServer`]: the uppercase service over TCP, on a fixed pool of smoltcp sockets.
//!
//! smoltcp 0.14 has no listen backlog: a socket is one connection, and a SYN that finds no socket in `Listen`
//! is answered with RST. So the server keeps a pool of sockets that all listen on one port, one per client it
//! can serve at the same time. Each socket is a *slot* with its own small state machine:
//!
//! ```text
//!            SYN from a client                 peer sent FIN and every byte is answered
//! Listening ───────────────────▶ Serving ──────────────────────────────────────────▶ Closing
//!     ▲                              │ reset / timeout                                   │ FIN acknowledged
//!     └──────────────────────────────┴───────────────────────────────────────────────────┘ (listen again)
//! ```
//!
//! While `Serving`, bytes are answered as they arrive: a client that sends once and reads once gets its reply
//! without closing its side. The server never takes more from a receive buffer than the send buffer has room
//! for, so no byte is ever dropped: a slow reader slows its writer down through TCP's own flow control.
//!
//! On a lossy link, two things decide whether a connection survives, both measured between two smoltcp peers
//! in the host's lab (`smoltalk lab --soak`): the socket timeout must outlast smoltcp's retransmission
//! back-off ([`SOCKET_TIMEOUT`]), and each peer's receive buffer should be larger than the other's send
//! buffer (twice, in the lab). smoltcp discards a segment whose sequence number falls outside the receive
//! window without reading its ACK, so a sender that can fill the receiver's window, or a window that closes
//! because this server stops reading while its replies are unacknowledged, loses ACKs to it until a whole
//! retransmission timeout passes, and can deadlock. The host chooses the buffers.

use heapless::Vec;
use smoltcp::iface::{SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::time::Duration;

use crate::endpoint::written;
use crate::error::ServerError;
use crate::uppercase::uppercase_into;

/// The cap on smoltcp 0.14's retransmission timeout (its `RTTE_MAX_RTO`, which it does not export). smoltcp
/// doubles the timeout after every expiry and lowers it again only with a fresh round-trip sample, which it
/// discards whenever anything is retransmitted before the sample's ACK (Karn's rule). On a lossy link the
/// timeout therefore climbs to this cap, and a live peer may send nothing for this long between two tries.
pub const MAX_RTO: Duration = Duration::from_secs(60);

/// smoltcp's socket timeout on every connection the server accepts: the connection is aborted once nothing
/// *acceptable* has come from the peer for this long (a SYN that is never completed, a client that vanished, a
/// FIN never acknowledged), so it cannot hold a slot forever.
///
/// It must be several [`MAX_RTO`]s, not one. A live peer in retransmission back-off is silent for up to a
/// whole `MAX_RTO`, its retransmission can be lost too, and what it does send in between may not count: a pure
/// ACK whose sequence number lies past the end of our receive window (the peer's data beyond a segment we
/// lost) is answered but not accepted, so it does not restart the timer. With the timeout at one `MAX_RTO`
/// (60 s, as it was) a 1 MiB transfer at 10 % loss was reset after 190 s of back-off; at four, giving up
/// needs three maximal retransmissions in a row to go unanswered. (RFC 1122 4.2.3.5 asks for at least 100 s
/// before a connection is given up; Linux waits about 15 minutes.)
pub const SOCKET_TIMEOUT: Duration = Duration::from_secs(4 * 60);

/// An application-level wait for a peer (the proxy's closing handshake, a client that never reads its
/// answer) ends after this long.
pub const PEER_TIMEOUT: Duration = Duration::from_secs(60);

/// An idle connection is probed this often, so a peer that vanished without a word is noticed
/// (after [`SOCKET_TIMEOUT`] of unanswered probes).
pub const KEEP_ALIVE: Duration = Duration::from_secs(20);

/// Where one pooled socket is in its connection's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotState {
    /// Listening on the server's port, waiting for a SYN.
    Listening,
    /// Connected to a client: answering its bytes as they arrive.
    Serving,
    /// The client has closed its side and every byte was answered; our FIN is on its way.
    Closing,
}

/// What the server has done so far (for reports and logs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpServerStats {
    /// Connections accepted.
    pub accepted: u64,
    /// Connections that ended with our FIN after the client's.
    pub closed: u64,
    /// Connections that ended with a reset or a timeout.
    pub reset: u64,
    /// Bytes taken from clients.
    pub bytes_in: u64,
    /// Bytes queued back to clients (always equal to `bytes_in` once the server is idle).
    pub bytes_out: u64,
}

#[derive(Debug)]
struct Slot {
    handle: SocketHandle,
    state: SlotState,
}

/// The uppercase service over TCP on up to `N` concurrent connections.
///
/// The host creates the sockets (with the buffers it chooses), adds them to its [`SocketSet`], and passes
/// their handles to [`UppercaseTcpServer::new`]. After each `Interface::poll` it calls
/// [`UppercaseTcpServer::poll`] with the same socket set and a scratch buffer.
#[derive(Debug)]
pub struct UppercaseTcpServer<const N: usize> {
    port: u16,
    slots: Vec<Slot, N>,
    stats: TcpServerStats,
}

impl<const N: usize> UppercaseTcpServer<N> {
    /// Puts every socket in `handles` into `Listen` on `port`, with [`SOCKET_TIMEOUT`] and [`KEEP_ALIVE`].
    pub fn new(
        port: u16,
        handles: impl IntoIterator<Item = SocketHandle>,
        sockets: &mut SocketSet<'_>,
    ) -> Result<Self, ServerError> {
        let mut slots = Vec::new();
        for handle in handles {
            slots
                .push(Slot {
                    handle,
                    state: SlotState::Listening,
                })
                .map_err(|_| ServerError::TooManySockets { capacity: N })?;
        }
        if slots.is_empty() {
            return Err(ServerError::NoSockets);
        }
        for slot in &slots {
            let socket = sockets.get_mut::<tcp::Socket>(slot.handle);
            if socket.is_open() {
                socket.abort();
            }
            socket.set_timeout(Some(SOCKET_TIMEOUT));
            socket.set_keep_alive(Some(KEEP_ALIVE));
            socket.listen(port).map_err(ServerError::Listen)?;
        }
        Ok(UppercaseTcpServer {
            port,
            slots,
            stats: TcpServerStats::default(),
        })
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// What the server has done so far.
    pub fn stats(&self) -> TcpServerStats {
        self.stats
    }

    /// The state of each slot, in the order the handles were given.
    pub fn slot_states(&self) -> impl Iterator<Item = SlotState> + '_ {
        self.slots.iter().map(|slot| slot.state)
    }

    /// How many slots are listening (free for a new client).
    pub fn free_slots(&self) -> usize {
        self.slot_states()
            .filter(|state| *state == SlotState::Listening)
            .count()
    }

    /// Advances every slot: accepts, answers, closes and listens again. `scratch` carries bytes from a receive
    /// buffer to a send buffer; any size works, larger moves more per call. Returns whether anything changed
    /// (bytes moved or a slot changed state), so a host can poll again before sleeping.
    pub fn poll(&mut self, sockets: &mut SocketSet<'_>, scratch: &mut [u8]) -> bool {
        let mut progressed = false;
        for slot in self.slots.iter_mut() {
            let socket = sockets.get_mut::<tcp::Socket>(slot.handle);
            progressed |= step_slot(slot, socket, self.port, scratch, &mut self.stats);
        }
        progressed
    }
}

/// One step of one slot's state machine.
fn step_slot(
    slot: &mut Slot,
    socket: &mut tcp::Socket<'_>,
    port: u16,
    scratch: &mut [u8],
    stats: &mut TcpServerStats,
) -> bool {
    let before = slot.state;
    if slot.state == SlotState::Listening && socket.is_active() {
        stats.accepted += 1;
        if let Some(peer) = socket.remote_endpoint() {
            log::info!("tcp:{port}: connection from {}", written(peer));
        }
        slot.state = SlotState::Serving;
    }

    let mut moved = 0;
    if slot.state == SlotState::Serving {
        moved = answer(socket, scratch);
        stats.bytes_in += moved as u64;
        stats.bytes_out += moved as u64;
        // The client's FIN has arrived (CLOSE-WAIT) and every byte it sent is answered: close our side too.
        // (`may_recv` alone cannot tell: it is also false during the handshake, in SYN-RECEIVED.)
        if socket.state() == tcp::State::CloseWait && socket.recv_queue() == 0 {
            socket.close();
            slot.state = SlotState::Closing;
        }
    }

    // A reset in SYN-RECEIVED puts the socket straight back into LISTEN: the connection is over.
    if slot.state == SlotState::Serving && socket.state() == tcp::State::Listen {
        stats.reset += 1;
        log::info!("tcp:{port}: connection reset during the handshake");
        slot.state = SlotState::Listening;
    }

    if slot.state != SlotState::Listening && !socket.is_open() {
        match slot.state {
            SlotState::Closing => stats.closed += 1,
            _ => {
                stats.reset += 1;
                log::info!("tcp:{port}: connection reset or timed out");
            }
        }
        relisten(socket, port);
        slot.state = SlotState::Listening;
    } else if slot.state == SlotState::Listening && !socket.is_open() {
        // A half-open connection was reset before it was seen as established.
        relisten(socket, port);
    }
    moved > 0 || before != slot.state
}

fn relisten(socket: &mut tcp::Socket<'_>, port: u16) {
    // `listen` only fails on port 0 (refused in `new`) or an open socket (just checked): nothing to lose.
    if let Err(e) = socket.listen(port) {
        log::warn!("tcp:{port}: cannot listen again: {e}");
    }
}

/// Moves as many bytes as both buffers allow from the receive buffer, uppercased, to the send buffer.
fn answer(socket: &mut tcp::Socket<'_>, scratch: &mut [u8]) -> usize {
    let mut moved = 0;
    while socket.can_recv() && socket.may_send() {
        let room = socket.send_capacity() - socket.send_queue();
        let limit = room.min(scratch.len());
        if limit == 0 {
            break;
        }
        let taken = socket.recv(|rx| {
            let n = uppercase_into(rx, &mut scratch[..limit]);
            (n, n)
        });
        let taken = match taken {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        // `taken <= room`, so the send buffer accepts all of it.
        match socket.send_slice(&scratch[..taken]) {
            Ok(sent) if sent == taken => moved += taken,
            Ok(sent) => {
                log::error!("tcp: send buffer took {sent} of {taken} bytes");
                moved += sent;
                break;
            }
            Err(e) => {
                log::error!("tcp: cannot queue the reply: {e}");
                break;
            }
        }
    }
    moved
}
