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

use core::net::{IpAddr, SocketAddr};

use smoltcp::iface::{Context, SocketHandle, SocketSet};
use smoltcp::socket::{dns, tcp};
use smoltcp::time::Instant;
use smoltcp::wire::{DnsQueryType, IpAddress};

use crate::tcp_server::{KEEP_ALIVE, SOCKET_TIMEOUT};

use super::super::engine::{
    Admission, Connected, Ending, Failure, HeadStep, OriginStep, Phase, ProxyConnection,
    ProxyContext, Recovery, ResponsePhase, ResponseStep,
};
use super::super::{Limits, ProxyStats};
use super::relay::{discard, drop_received, finished_sending, next_ephemeral, relay, was_reset};

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
    pub dns: Option<SocketHandle>,
    pub next_port: &'c mut u16,
}

/// Which peer the bytes in a slot's buffer go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Peer {
    Client,
    Origin,
}

/// What the proxy wrote and a socket has not taken yet: `buf[sent..len]` goes to `to`.
#[derive(Debug)]
struct Outgoing<const N: usize> {
    buf: [u8; N],
    len: usize,
    sent: usize,
    to: Peer,
}

impl<const N: usize> Outgoing<N> {
    /// `buf[..len]` is to go to `to` now.
    fn send(&mut self, len: usize, to: Peer) {
        self.len = len.min(N);
        self.sent = 0;
        self.to = to;
    }

    /// `buf[..len]` is kept for `to`, to go once [`Outgoing::release`]d (a request head, until the origin
    /// connection is up; sent again on a retry).
    fn hold(&mut self, len: usize, to: Peer) {
        self.send(len, to);
        self.sent = self.len;
    }

    fn release(&mut self) {
        self.sent = 0;
    }

    fn pending(&self) -> bool {
        self.sent < self.len
    }

    fn pending_for(&self, peer: Peer) -> bool {
        self.pending() && self.to == peer
    }

    /// Sends what is left to its peer. Returns whether any byte went.
    fn drain(&mut self, sockets: &mut SocketSet<'_>, slot: SlotSockets) -> bool {
        let handle = match self.to {
            Peer::Client => slot.client,
            Peer::Origin => slot.origin,
        };
        let pending = self.buf.get(self.sent..self.len).unwrap_or(&[]);
        match sockets.get_mut::<tcp::Socket>(handle).send_slice(pending) {
            Ok(n) => {
                self.sent += n;
                n > 0
            }
            Err(_) => false,
        }
    }
}

/// Where a slot is in its life.
// The slot's storage is the caller's fixed memory (a `static` in firmware): the connection lives in it.
#[allow(clippy::large_enum_variant)]
enum SlotPhase {
    /// The client socket listens.
    Listening,
    /// A client is served; `lookup` is the DNS query while the connection resolves.
    Serving {
        connection: ProxyConnection,
        lookup: Option<dns::QueryHandle>,
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
            SlotPhase::Serving { connection, lookup } => f
                .debug_struct("Serving")
                .field("connection", connection)
                .field("lookup", &lookup.is_some())
                .finish(),
            SlotPhase::Answering { deadline } => write!(f, "Answering until {deadline}"),
            SlotPhase::Closing { deadline } => write!(f, "Closing until {deadline}"),
        }
    }
}

/// One place in the smoltcp proxy's pool: its sockets, its state and the buffer for what the proxy writes
/// (`OUT` bytes: [`Limits::out_buffer`] for the heads the limits allow). The caller owns the storage: firmware
/// keeps `[ProxySlot::NEW; N]` in a `static`, a host a `Box<[ProxySlot<OUT>]>`.
#[derive(Debug)]
pub struct ProxySlot<const OUT: usize> {
    sockets: Option<SlotSockets>,
    phase: SlotPhase,
    out: Outgoing<OUT>,
    /// What the connections this slot finished had done.
    served: ProxyStats,
}

/// How a step of a serving slot went.
enum Flow {
    /// Whether anything moved.
    Moved(bool),
    /// The connection ends so.
    End(Ending),
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
        client.set_timeout(Some(SOCKET_TIMEOUT));
        client.set_keep_alive(Some(KEEP_ALIVE));
        // The proxy writes whole heads and body pieces; Nagle would hold a response's last short segment until
        // the client's delayed ACK (about 40 ms on Linux) for every response.
        client.set_nagle_enabled(false);
        client.listen(port)?;
        self.sockets = Some(slot);
        self.phase = SlotPhase::Listening;
        Ok(())
    }

    /// Whether the slot serves no client now.
    pub(super) fn is_free(&self) -> bool {
        matches!(self.phase, SlotPhase::Listening)
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
            SlotPhase::Serving { connection, .. } => connection.deadline(),
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
                SlotPhase::Serving { connection, lookup } => {
                    let mut serving = Serving {
                        connection,
                        lookup,
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
                    lookup: None,
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
        if let SlotPhase::Serving { connection, lookup } = &self.phase {
            self.served.add(&connection.stats());
            if let (Some(query), Some(dns)) = (lookup, shared.dns) {
                sockets.get_mut::<dns::Socket>(dns).cancel_query(*query);
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

/// Closes an origin connection the proxy is done with: gracefully if it is up, at once if it is still
/// connecting; one already closing is left to finish.
fn close_origin(origin: &mut tcp::Socket<'_>) {
    match origin.state() {
        tcp::State::Established | tcp::State::CloseWait => origin.close(),
        tcp::State::SynSent | tcp::State::SynReceived | tcp::State::Listen => origin.abort(),
        _ => {}
    }
}

/// A serving slot's parts, borrowed for one step of its connection.
struct Serving<'s, 'x, 'p, 'c, const OUT: usize> {
    connection: &'s mut ProxyConnection,
    lookup: &'s mut Option<dns::QueryHandle>,
    out: &'s mut Outgoing<OUT>,
    slot: SlotSockets,
    sockets: &'s mut SocketSet<'x>,
    shared: &'s mut Shared<'p, 'c>,
    scratch: &'s mut [u8],
}

impl<'x, const OUT: usize> Serving<'_, 'x, '_, '_, OUT> {
    fn step(&mut self) -> Flow {
        match self.connection.phase() {
            Phase::ReadingHead => self.read_head(),
            Phase::Resolving => self.resolving(),
            Phase::Connecting => self.connecting(),
            Phase::Exchanging(phase) => self.exchanging(phase),
            Phase::Tunnel => self.tunnel(),
            Phase::Closed => {
                // The slot leaves `Serving` with every ending; a closed connection here is a bug of this driver.
                log::error!("bug: a closed proxy connection was still being served; reset");
                Flow::End(Ending::ResetBoth)
            }
        }
    }

    fn client(&mut self) -> &mut tcp::Socket<'x> {
        self.sockets.get_mut::<tcp::Socket>(self.slot.client)
    }

    fn origin(&mut self) -> &mut tcp::Socket<'x> {
        self.sockets.get_mut::<tcp::Socket>(self.slot.origin)
    }

    fn recover(&mut self, failure: Failure) -> Flow {
        match self.connection.on_failure(failure, &mut self.out.buf) {
            Recovery::End(ending) => Flow::End(ending),
            Recovery::Retry(addr) => self.follow(OriginStep::Connect(addr)),
        }
    }

    fn read_head(&mut self) -> Flow {
        let client = self.sockets.get_mut::<tcp::Socket>(self.slot.client);
        if !client.is_open() || client.state() == tcp::State::TimeWait {
            return self.recover(Failure::ClientReset);
        }
        let window = self.shared.cx.limits.head.min(self.scratch.len());
        let window = self.scratch.get_mut(..window).unwrap_or(&mut []);
        let available = client.peek_slice(window).unwrap_or(0);
        let client_done = !client.may_recv();
        let origin = self.sockets.get_mut::<tcp::Socket>(self.slot.origin);
        let origin_idle = origin.state() == tcp::State::Established && origin.recv_queue() == 0;
        let bytes = window.get(..available).unwrap_or(&[]);
        let step = self.connection.on_client_head(
            &self.shared.cx,
            bytes,
            client_done,
            origin_idle,
            self.shared.now,
            &mut self.out.buf,
        );
        let (consumed, head_len, next) = match step {
            HeadStep::NeedMore => return Flow::Moved(false),
            HeadStep::End(ending) => return Flow::End(ending),
            HeadStep::Forward {
                consumed,
                head_len,
                next,
            } => (consumed, head_len, next),
        };
        discard(
            self.sockets.get_mut::<tcp::Socket>(self.slot.client),
            consumed,
        );
        self.out.hold(head_len, Peer::Origin);
        let next = match next {
            OriginStep::LookUp(name) => {
                let Some(handle) = self.shared.dns else {
                    log::error!("bug: a lookup was asked for without a DNS socket");
                    return Flow::End(Ending::ResetBoth);
                };
                let dns = self.sockets.get_mut::<dns::Socket>(handle);
                match dns.start_query(self.shared.iface, name, DnsQueryType::A) {
                    Ok(query) => {
                        *self.lookup = Some(query);
                        return Flow::Moved(true);
                    }
                    Err(e) => {
                        self.connection
                            .on_resolved(&self.shared.cx, Err(&e), &mut self.out.buf)
                    }
                }
            }
            OriginStep::Connect(addr) => OriginStep::Connect(addr),
            OriginStep::Reuse => OriginStep::Reuse,
            OriginStep::End(ending) => OriginStep::End(ending),
        };
        self.follow(next)
    }

    /// Does what the engine said to reach the origin, asking it again where that fails at once.
    fn follow(&mut self, mut step: OriginStep<'static>) -> Flow {
        loop {
            step = match step {
                OriginStep::Connect(addr) => match self.connect(addr) {
                    Ok(()) => return Flow::Moved(true),
                    Err(()) => self.connection.on_connect_failed(false, &mut self.out.buf),
                },
                OriginStep::Reuse => {
                    self.out.release();
                    return Flow::Moved(true);
                }
                OriginStep::End(ending) => return Flow::End(ending),
                OriginStep::LookUp(_) => {
                    log::error!("bug: a second lookup was asked for; reset");
                    return Flow::End(Ending::ResetBoth);
                }
            }
        }
    }

    /// Opens the origin socket's connection to `addr` (aborting whatever it held).
    fn connect(&mut self, addr: SocketAddr) -> Result<(), ()> {
        let remote = match addr.ip() {
            IpAddr::V4(v4) => (IpAddress::Ipv4(v4), addr.port()),
            // This core speaks IPv4 only.
            IpAddr::V6(_) => return Err(()),
        };
        let local_port = next_ephemeral(self.shared.next_port);
        let origin = self.sockets.get_mut::<tcp::Socket>(self.slot.origin);
        if origin.is_open() {
            origin.abort();
        }
        origin
            .connect(self.shared.iface, remote, local_port)
            .map_err(|e| log::debug!("cannot connect to {addr}: {e}"))?;
        origin.set_timeout(Some(SOCKET_TIMEOUT));
        origin.set_keep_alive(Some(KEEP_ALIVE));
        origin.set_nagle_enabled(false);
        Ok(())
    }

    fn resolving(&mut self) -> Flow {
        let (Some(query), Some(handle)) = (*self.lookup, self.shared.dns) else {
            log::error!("bug: a proxy connection resolves without a query; reset");
            return Flow::End(Ending::ResetBoth);
        };
        let dns = self.sockets.get_mut::<dns::Socket>(handle);
        let step = match dns.get_query_result(query) {
            Err(dns::GetQueryResultError::Pending) => {
                return match self
                    .connection
                    .on_timeout(self.shared.now, &mut self.out.buf)
                {
                    // `end` cancels the query.
                    Some(ending) => Flow::End(ending),
                    None => Flow::Moved(false),
                };
            }
            Ok(found) => {
                *self.lookup = None;
                let mut addresses: heapless::Vec<
                    IpAddr,
                    { smoltcp::config::DNS_MAX_RESULT_COUNT },
                > = heapless::Vec::new();
                for address in &found {
                    let _ = addresses.push(IpAddr::from(*address));
                }
                self.connection
                    .on_resolved(&self.shared.cx, Ok(&addresses), &mut self.out.buf)
            }
            Err(dns::GetQueryResultError::Failed) => {
                *self.lookup = None;
                self.connection.on_resolved(
                    &self.shared.cx,
                    Err(&"the DNS server gave no address"),
                    &mut self.out.buf,
                )
            }
        };
        self.follow(step)
    }

    fn connecting(&mut self) -> Flow {
        match self.origin().state() {
            tcp::State::Established => {}
            tcp::State::SynSent | tcp::State::SynReceived => {
                return match self
                    .connection
                    .on_timeout(self.shared.now, &mut self.out.buf)
                {
                    Some(ending) => Flow::End(ending),
                    None => Flow::Moved(false),
                };
            }
            // Refused (or reset before it was up).
            _ => {
                let step = self.connection.on_connect_failed(false, &mut self.out.buf);
                return self.follow(step);
            }
        }
        match self
            .connection
            .on_connected(&self.shared.cx, self.shared.now, &mut self.out.buf)
        {
            Connected::Exchange => self.out.release(),
            Connected::Tunnel { len } => self.out.send(len, Peer::Client),
            Connected::End(ending) => return Flow::End(ending),
        }
        Flow::Moved(true)
    }

    fn exchanging(&mut self, phase: ResponsePhase) -> Flow {
        if self.client().state() == tcp::State::Closed {
            // The client reset the connection (or stopped answering): the exchange cannot be completed.
            return self.recover(Failure::ClientReset);
        }
        let mut moved = false;
        let mut body_bytes = 0;
        if self.out.pending() {
            moved |= self.out.drain(self.sockets, self.slot);
        }
        // The request body follows its head; the response may start before the body is done.
        if !self.out.pending_for(Peer::Origin) {
            if let Some(body) = self.connection.request_body() {
                let (client, origin) = (self.slot.client, self.slot.origin);
                match relay(self.sockets, client, origin, Some(body), self.scratch) {
                    Ok(n) => body_bytes += n,
                    Err(_) => return self.recover(Failure::MalformedRequestBody),
                }
                let body_done = body.is_done();
                if !body_done && finished_sending(self.client()) {
                    return self.recover(Failure::ClientClosedMidBody);
                }
            }
        }
        if !self.out.pending() {
            match phase {
                ResponsePhase::Head => match self.response_head() {
                    Flow::Moved(m) => moved |= m,
                    end => return end,
                },
                ResponsePhase::Body => match self.response_body(&mut body_bytes) {
                    Flow::Moved(m) => moved |= m,
                    end => return end,
                },
                ResponsePhase::Complete => {
                    let origin = self.origin();
                    let origin_clean = origin.may_recv() && origin.recv_queue() == 0;
                    match self.connection.on_response_sent(
                        &self.shared.cx,
                        origin_clean,
                        self.shared.now,
                    ) {
                        super::super::engine::AfterResponse::NextRequest { keep_origin } => {
                            if !keep_origin {
                                close_origin(self.origin());
                            }
                            return Flow::Moved(true);
                        }
                        super::super::engine::AfterResponse::End(ending) => {
                            return Flow::End(ending)
                        }
                    }
                }
            }
        }
        self.progress(moved || body_bytes > 0, body_bytes)
    }

    /// Reports progress, or asks about the deadline when nothing moved.
    fn progress(&mut self, moved: bool, body_bytes: usize) -> Flow {
        if moved {
            self.connection
                .on_progress(self.shared.cx.limits, self.shared.now, body_bytes);
            return Flow::Moved(true);
        }
        match self
            .connection
            .on_timeout(self.shared.now, &mut self.out.buf)
        {
            Some(ending) => Flow::End(ending),
            None => Flow::Moved(false),
        }
    }

    fn response_head(&mut self) -> Flow {
        let window = self.shared.cx.limits.head.min(self.scratch.len());
        let window = self.scratch.get_mut(..window).unwrap_or(&mut []);
        let origin = self.sockets.get_mut::<tcp::Socket>(self.slot.origin);
        let available = origin.peek_slice(window).unwrap_or(0);
        let origin_done = finished_sending(origin) || was_reset(origin);
        let bytes = window.get(..available).unwrap_or(&[]);
        match self.connection.on_response_head(
            &self.shared.cx,
            bytes,
            origin_done,
            &mut self.out.buf,
        ) {
            ResponseStep::NeedMore => Flow::Moved(false),
            ResponseStep::Head { consumed, len, .. } => {
                discard(self.origin(), consumed);
                self.out.send(len, Peer::Client);
                Flow::Moved(true)
            }
            // The request head is still in the buffer: it goes again once the new connection is up.
            ResponseStep::Retry(addr) => self.follow(OriginStep::Connect(addr)),
            ResponseStep::End(ending) => Flow::End(ending),
        }
    }

    fn response_body(&mut self, body_bytes: &mut usize) -> Flow {
        let Some(body) = self.connection.response_body() else {
            return Flow::Moved(false);
        };
        let (client, origin) = (self.slot.client, self.slot.origin);
        match relay(self.sockets, origin, client, Some(body), self.scratch) {
            Ok(n) => *body_bytes += n,
            Err(_) => return self.recover(Failure::MalformedResponseBody),
        }
        let done = body.is_done();
        let origin = self.origin();
        if !done && finished_sending(origin) {
            let reset = was_reset(origin);
            if let Some(ending) = self.connection.on_origin_finished(reset) {
                return Flow::End(ending);
            }
            return Flow::Moved(true);
        }
        Flow::Moved(false)
    }

    fn tunnel(&mut self) -> Flow {
        let mut moved = false;
        if self.out.pending() {
            moved |= self.out.drain(self.sockets, self.slot);
            if self.out.pending() {
                return self.progress(moved, 0);
            }
        }
        let (client, origin) = (self.slot.client, self.slot.origin);
        let forth = relay(self.sockets, client, origin, None, self.scratch).unwrap_or(0);
        let back = relay(self.sockets, origin, client, None, self.scratch).unwrap_or(0);
        // A side that has sent its FIN (and whose bytes are all across) gets its FIN passed on.
        for (from, to) in [(client, origin), (origin, client)] {
            let from_done = finished_sending(self.sockets.get_mut::<tcp::Socket>(from));
            let to = self.sockets.get_mut::<tcp::Socket>(to);
            if from_done && to.may_send() {
                to.close();
                moved = true;
            }
        }
        let client_done = finished_sending(self.client());
        let origin_done = finished_sending(self.origin());
        if client_done && origin_done {
            return Flow::End(self.connection.on_tunnel_closed());
        }
        if was_reset(self.client()) || was_reset(self.origin()) {
            return self.recover(Failure::TunnelPeerReset);
        }
        self.progress(moved || forth + back > 0, forth + back)
    }
}
