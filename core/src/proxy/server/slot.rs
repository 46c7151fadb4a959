//! [`ProxySlot`]: one client of the smoltcp proxy at a time, over a client socket and an origin socket. The slot
//! does what its [`ProxyConnection`] decides and only moves bytes:
//!
//! ```text
//!  Listening ──client connects──▶ Serving(ProxyConnection) ──Ending──▶ Answering (a page) ──▶ Closing ──▶ Listening
//!      │                                                      └────────(FIN or resets)──────────▶ Closing
//!      └──refused (403)──▶ Answering
//! ```
//!
//! Heads are peeked into the shared scratch buffer, parsed there, and only then taken off the socket, so a request
//! body and any pipelined request stay in the client socket's receive buffer until their turn. What the proxy
//! writes (a rewritten head, a page) waits in the slot's own buffer until the socket takes it; bodies move socket
//! to socket through the scratch buffer, never more than the receiving socket has room for, and never past the
//! body's end as its tracker finds it.

use core::net::IpAddr;

use smoltcp::iface::{Context, SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::IpAddress;

use crate::tcp_server::{KEEP_ALIVE, SOCKET_TIMEOUT};

use super::super::engine::{Admission, Ending, Phase, ProxyConnection, ProxyContext};
use super::super::{Limits, ProxyStats};
use super::outgoing::{Outgoing, Peer};
use super::relay::drop_received;
use super::serving::{close_origin, Flow, OriginWait, Serving};
use crate::name_lookup::Lookups;

/// A client socket's settings, whichever way it comes to a slot.
fn prepare_client(client: &mut tcp::Socket<'_>) {
    client.set_timeout(Some(SOCKET_TIMEOUT));
    client.set_keep_alive(Some(KEEP_ALIVE));
    // The proxy writes whole heads and body pieces; Nagle would hold a response's last short segment until the
    // client's delayed ACK (about 40 ms on Linux) for every response.
    client.set_nagle_enabled(false);
}

/// The two sockets a slot drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct SlotSockets {
    pub client: SocketHandle,
    pub origin: SocketHandle,
}

/// What a slot shares with the rest of the pool while it polls.
pub(super) struct Shared<'p, 'c> {
    pub cx: ProxyContext<'p>,
    pub iface: &'c mut Context,
    pub now: Instant,
    pub port: u16,
    pub lookups: Lookups,
    pub next_port: &'c mut u16,
}

/// Where a slot is in its life.
// The slot's storage is the caller's fixed memory (a `static` in firmware): the connection lives in it.
#[allow(clippy::large_enum_variant)]
enum SlotPhase {
    /// The client socket listens.
    Listening,
    /// A client is served; `wait`: what its origin side waits for (a lookup, a reset to go out).
    Serving {
        connection: ProxyConnection,
        wait: OriginWait,
    },
    /// The proxy's own answer is going out; the connection closes after it.
    Answering { deadline: Instant },
    /// The client connection closes (gracefully, or its reset is going out); the socket listens again once it
    /// is closed, or at `deadline`.
    Closing { deadline: Instant },
}

impl core::fmt::Debug for SlotPhase {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SlotPhase::Listening => f.write_str("Listening"),
            SlotPhase::Serving { connection, wait } => f
                .debug_struct("Serving")
                .field("connection", connection)
                .field("wait", wait)
                .finish(),
            SlotPhase::Answering { deadline } => write!(f, "Answering until {deadline}"),
            SlotPhase::Closing { deadline } => write!(f, "Closing until {deadline}"),
        }
    }
}

/// One place in the smoltcp proxy's pool: its sockets, its state and the buffer for what the proxy writes
/// (`OUT` bytes: [`Limits::out_buffer`] for the heads the limits allow). The caller owns the storage: firmware
/// keeps `[ProxySlot::NEW; N]` in a `static`, a host a storage that grows (see [`super::PoolStorage`]).
#[derive(Debug)]
pub struct ProxySlot<const OUT: usize> {
    sockets: Option<SlotSockets>,
    phase: SlotPhase,
    out: Outgoing<OUT>,
    /// What the connections this slot finished had done.
    served: ProxyStats,
}

impl<const OUT: usize> ProxySlot<OUT> {
    /// A slot with no sockets yet ([`super::ProxyServer::new`] gives it two).
    pub const NEW: ProxySlot<OUT> = ProxySlot {
        sockets: None,
        phase: SlotPhase::Listening,
        out: Outgoing {
            buf: [0; OUT],
            len: 0,
            sent: 0,
            to: Peer::Client,
        },
        served: ProxyStats {
            accepted: 0,
            requests: 0,
            responses: 0,
            errors: 0,
            tunnels: 0,
            body_bytes: 0,
        },
    };

    /// Gives the slot its sockets and starts listening on `port`.
    pub(super) fn bind(
        &mut self,
        sockets: &mut SocketSet<'_>,
        slot: SlotSockets,
        port: u16,
    ) -> Result<(), tcp::ListenError> {
        let client = sockets.get_mut::<tcp::Socket>(slot.client);
        prepare_client(client);
        client.listen(port)?;
        self.sockets = Some(slot);
        self.phase = SlotPhase::Listening;
        Ok(())
    }

    /// When the connection served went idle between requests ([`ProxyConnection::idle_since`]).
    pub(super) fn idle_since(&self) -> Option<Instant> {
        match &self.phase {
            SlotPhase::Serving { connection, .. } => connection.idle_since(),
            _ => None,
        }
    }

    /// Takes over `client`, a refuser's socket holding a client that just connected, which is admitted at the
    /// slot's next poll; returns the slot's own client socket for the refuser in exchange. A free slot gives its
    /// listening socket (the refuser took the client only because it came first in the socket set). A slot
    /// whose connection idles between requests, in a full pool, has it reclaimed (its client's connection closed
    /// as at a keep-alive timeout, and any origin connection it kept) and gives its closing socket, which the
    /// refuser drains until it listens again. `None`, and nothing done, for any other slot.
    pub(super) fn take_client(
        &mut self,
        client: SocketHandle,
        sockets: &mut SocketSet<'_>,
    ) -> Option<SocketHandle> {
        let slot = self.sockets?;
        let listening = self.listens(sockets);
        match &mut self.phase {
            SlotPhase::Listening if listening => {}
            SlotPhase::Serving { connection, .. } => {
                connection.reclaim()?;
                self.served.add(&connection.stats());
                close_origin(sockets.get_mut::<tcp::Socket>(slot.origin));
                sockets.get_mut::<tcp::Socket>(slot.client).close();
                self.out.send(0, Peer::Client);
            }
            _ => return None,
        }
        prepare_client(sockets.get_mut::<tcp::Socket>(client));
        self.sockets = Some(SlotSockets { client, ..slot });
        self.phase = SlotPhase::Listening;
        Some(slot.client)
    }

    /// The socket the slot's clients come in on (`None` before it has its sockets).
    pub(super) fn client_socket(&self) -> Option<SocketHandle> {
        self.sockets.map(|slot| slot.client)
    }

    /// Whether the slot serves no client now.
    pub(super) fn is_free(&self) -> bool {
        matches!(self.phase, SlotPhase::Listening)
    }

    /// Whether the slot's client socket listens: the next SYN to the proxy's port may take it.
    pub(super) fn listens(&self, sockets: &SocketSet<'_>) -> bool {
        self.sockets.is_some_and(|slot| {
            sockets.get::<tcp::Socket>(slot.client).state() == tcp::State::Listen
        })
    }

    /// The engine's phase of the connection served, if any.
    pub(super) fn connection_phase(&self) -> Option<Phase> {
        match &self.phase {
            SlotPhase::Serving { connection, .. } => Some(connection.phase()),
            _ => None,
        }
    }

    /// When the slot must be polled again even if no packet arrives.
    pub(super) fn deadline(&self) -> Option<Instant> {
        match &self.phase {
            SlotPhase::Listening => None,
            SlotPhase::Serving { connection, wait } => {
                match (connection.deadline(), wait.deadline()) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            }
            SlotPhase::Answering { deadline } | SlotPhase::Closing { deadline } => Some(*deadline),
        }
    }

    /// What this slot's connections have done, the one being served included.
    pub(super) fn stats(&self) -> ProxyStats {
        let mut stats = self.served;
        if let SlotPhase::Serving { connection, .. } = &self.phase {
            stats.add(&connection.stats());
        }
        stats
    }

    /// Moves the slot as far as its sockets allow. Returns whether anything moved.
    pub(super) fn poll(
        &mut self,
        sockets: &mut SocketSet<'_>,
        shared: &mut Shared<'_, '_>,
        scratch: &mut [u8],
    ) -> bool {
        let Some(slot) = self.sockets else {
            return false;
        };
        let mut moved = false;
        // Each step may enable the next (a head parsed, then the origin found in --resolve, ...).
        for _ in 0..16 {
            let step = match &mut self.phase {
                SlotPhase::Listening => self.accept(slot, sockets, shared),
                SlotPhase::Serving { connection, wait } => {
                    let mut serving = Serving {
                        connection,
                        wait,
                        out: &mut self.out,
                        slot,
                        sockets: &mut *sockets,
                        shared: &mut *shared,
                        scratch: &mut *scratch,
                    };
                    match serving.step() {
                        Flow::Moved(moved) => moved,
                        Flow::End(ending) => {
                            self.end(ending, slot, sockets, shared);
                            true
                        }
                    }
                }
                SlotPhase::Answering { deadline } => {
                    let deadline = *deadline;
                    self.answering(deadline, slot, sockets, shared)
                }
                SlotPhase::Closing { deadline } => {
                    let deadline = *deadline;
                    self.closing(deadline, slot, sockets, shared)
                }
            };
            moved |= step;
            if !step {
                break;
            }
        }
        moved
    }

    fn accept(
        &mut self,
        slot: SlotSockets,
        sockets: &mut SocketSet<'_>,
        shared: &mut Shared<'_, '_>,
    ) -> bool {
        let client = sockets.get_mut::<tcp::Socket>(slot.client);
        match client.state() {
            tcp::State::Listen | tcp::State::SynReceived => return false,
            // A client may have sent its request and its FIN before this poll: serve it all the same.
            tcp::State::Established | tcp::State::CloseWait => {}
            // A handshake that timed out, or a connection reset before it was served: listen again.
            _ => return self.listen_again(slot, sockets, shared.port),
        }
        let ip = client
            .remote_endpoint()
            .map_or(IpAddr::from(IpAddress::v4(0, 0, 0, 0)), |e| e.addr.into());
        // A free slot: this client does not count against the cap (the refusers answer those beyond it).
        match ProxyConnection::admit(&shared.cx, ip, 0, shared.now, &mut self.out.buf) {
            Admission::Serve(connection) => {
                self.phase = SlotPhase::Serving {
                    connection,
                    wait: OriginWait::Nothing,
                };
            }
            Admission::Refuse { len } => {
                self.out.send(len, Peer::Client);
                self.phase = SlotPhase::Answering {
                    deadline: shared.now + shared.cx.limits.linger,
                };
            }
        }
        true
    }

    /// Carries out `ending` for the connection being served.
    fn end(
        &mut self,
        ending: Ending,
        slot: SlotSockets,
        sockets: &mut SocketSet<'_>,
        shared: &mut Shared<'_, '_>,
    ) {
        if let SlotPhase::Serving { connection, wait } = &self.phase {
            self.served.add(&connection.stats());
            if let OriginWait::Lookup(query) = wait {
                shared.lookups.cancel(sockets, *query);
            }
        }
        let limits: &Limits = shared.cx.limits;
        let now = shared.now;
        let origin = sockets.get_mut::<tcp::Socket>(slot.origin);
        match ending {
            Ending::ResetBoth => origin.abort(),
            Ending::ResetClient => origin.close(),
            Ending::Answer { .. } | Ending::Close => close_origin(origin),
        }
        let client = sockets.get_mut::<tcp::Socket>(slot.client);
        self.phase = match ending {
            Ending::Answer { len } => {
                self.out.send(len, Peer::Client);
                SlotPhase::Answering {
                    deadline: now + limits.linger,
                }
            }
            Ending::Close => {
                client.close();
                SlotPhase::Closing {
                    deadline: now + limits.linger,
                }
            }
            Ending::ResetClient | Ending::ResetBoth => {
                client.abort();
                SlotPhase::Closing {
                    deadline: now + limits.reset_grace,
                }
            }
        };
    }

    fn answering(
        &mut self,
        deadline: Instant,
        slot: SlotSockets,
        sockets: &mut SocketSet<'_>,
        shared: &mut Shared<'_, '_>,
    ) -> bool {
        let moved = self.out.drain(sockets, slot);
        let client = sockets.get_mut::<tcp::Socket>(slot.client);
        // What the client still sends is dropped, so its window stays open and its FIN is acknowledged.
        drop_received(client);
        if !self.out.pending() || !client.may_send() {
            client.close();
            self.phase = SlotPhase::Closing {
                deadline: shared.now + shared.cx.limits.linger,
            };
            return true;
        }
        if shared.now >= deadline {
            // A client that never reads its answer is given up.
            client.abort();
            self.phase = SlotPhase::Closing {
                deadline: shared.now + shared.cx.limits.reset_grace,
            };
            return true;
        }
        moved
    }

    fn closing(
        &mut self,
        deadline: Instant,
        slot: SlotSockets,
        sockets: &mut SocketSet<'_>,
        shared: &Shared<'_, '_>,
    ) -> bool {
        let (now, port) = (shared.now, shared.port);
        let client = sockets.get_mut::<tcp::Socket>(slot.client);
        drop_received(client);
        match client.state() {
            // Aborted, and the reset not sent yet (smoltcp sends it on the next egress; listening now would
            // forget it, and the client would never learn that its connection is gone).
            tcp::State::Closed if client.remote_endpoint().is_some() && now < deadline => false,
            // Our FIN is acknowledged: TIME-WAIT protects nothing a listening socket needs, so skip its 10 s.
            tcp::State::Closed | tcp::State::TimeWait => self.listen_again(slot, sockets, port),
            _ if now >= deadline => {
                client.abort();
                self.listen_again(slot, sockets, port)
            }
            _ => false,
        }
    }

    /// Puts the client socket back into `Listen` on the proxy's port.
    fn listen_again(&mut self, slot: SlotSockets, sockets: &mut SocketSet<'_>, port: u16) -> bool {
        // An origin connection is never handed from one client to the next. One this proxy closed is left to
        // finish its close (the next connect on this slot aborts it if it has not by then).
        let origin = sockets.get_mut::<tcp::Socket>(slot.origin);
        if matches!(
            origin.state(),
            tcp::State::Established
                | tcp::State::SynSent
                | tcp::State::SynReceived
                | tcp::State::CloseWait
        ) {
            origin.abort();
        }
        let client = sockets.get_mut::<tcp::Socket>(slot.client);
        if client.is_open() {
            client.abort();
        }
        self.out.send(0, Peer::Client);
        match client.listen(port) {
            Ok(()) => self.phase = SlotPhase::Listening,
            // Cannot happen for a closed socket and a non-zero port; stay closing and try again next poll.
            Err(e) => log::error!("proxy socket cannot listen again on port {port}: {e}"),
        }
        true
    }
}
