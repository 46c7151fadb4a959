//! [`Serving`]: one step of a serving slot's connection, over its two sockets: what the engine says, done.

use core::net::{IpAddr, SocketAddr};

use smoltcp::iface::SocketSet;
use smoltcp::socket::tcp;
use smoltcp::wire::IpAddress;

use crate::tcp_server::{KEEP_ALIVE, SOCKET_TIMEOUT};

use smoltcp::time::Instant;

use super::super::engine::{
    AfterResponse, ConnectStep, Connected, Ending, Failure, HeadStep, OriginStep, PhaseStep,
    ProxyConnection, ResponsePhase, ResponseStep, MAX_CANDIDATES,
};
use super::outgoing::{Outgoing, Peer};
use super::relay::{
    discard, finished_before_reset, finished_sending, next_ephemeral, peer_finished, relay,
    was_reset,
};
use super::slot::{Shared, SlotSockets};
use super::RESPONSE_FIELDS;
use crate::name_lookup::{Answer, Query};

/// What a serving slot waits for on the origin's side, besides its sockets.
#[derive(Clone, Copy)]
pub(super) enum OriginWait {
    /// Nothing.
    Nothing,
    /// A lookup of the origin's name.
    Lookup(Query),
    /// The reset of the origin socket's last connection to go out (a `connect` now would forget it, and the old
    /// origin would hold a half-open connection): then a connection to `addr`, at the latest at `until`.
    ResetThenConnect { addr: SocketAddr, until: Instant },
}

impl OriginWait {
    /// When the slot must be polled for this wait, at the latest.
    pub(super) fn deadline(&self) -> Option<Instant> {
        match self {
            OriginWait::ResetThenConnect { until, .. } => Some(*until),
            OriginWait::Lookup(query) => query.deadline(),
            OriginWait::Nothing => None,
        }
    }
}

impl core::fmt::Debug for OriginWait {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            OriginWait::Nothing => f.write_str("Nothing"),
            OriginWait::Lookup(_) => f.write_str("Lookup"),
            OriginWait::ResetThenConnect { addr, until } => {
                write!(f, "ResetThenConnect({addr} by {until})")
            }
        }
    }
}

/// How a step of a serving slot went.
pub(super) enum Flow {
    /// Whether anything moved.
    Moved(bool),
    /// The connection ends so.
    End(Ending),
}

/// Closes an origin connection the proxy is done with: gracefully if it is up, at once if it is still
/// connecting; one already closing is left to finish.
pub(super) fn close_origin(origin: &mut tcp::Socket<'_>) {
    match origin.state() {
        tcp::State::Established | tcp::State::CloseWait => origin.close(),
        tcp::State::SynSent | tcp::State::SynReceived | tcp::State::Listen => origin.abort(),
        _ => {}
    }
}

/// A serving slot's parts, borrowed for one step of its connection.
pub(super) struct Serving<'s, 'x, 'p, 'c, const OUT: usize> {
    pub(super) connection: &'s mut ProxyConnection,
    pub(super) wait: &'s mut OriginWait,
    pub(super) out: &'s mut Outgoing<OUT>,
    pub(super) slot: SlotSockets,
    pub(super) sockets: &'s mut SocketSet<'x>,
    pub(super) shared: &'s mut Shared<'p, 'c>,
    pub(super) scratch: &'s mut [u8],
}

impl<const OUT: usize> PhaseStep for Serving<'_, '_, '_, '_, OUT> {
    type Output = Flow;

    fn reading_head(&mut self) -> Flow {
        let client = self.sockets.get_mut::<tcp::Socket>(self.slot.client);
        if !client.is_open() || client.state() == tcp::State::TimeWait {
            return self.fail(Failure::ClientReset);
        }
        let window = self.shared.cx.limits.head.min(self.scratch.len());
        let window = self.scratch.get_mut(..window).unwrap_or(&mut []);
        let available = client.peek_slice(window).unwrap_or(0);
        // Its FIN, whatever still waits in the buffer (a head is only peeked at until it is whole).
        let client_done = peer_finished(client);
        let origin = self.sockets.get::<tcp::Socket>(self.slot.origin);
        let origin_idle = || origin.state() == tcp::State::Established && origin.recv_queue() == 0;
        let bytes = window.get(..available).unwrap_or(&[]);
        let step = self.connection.on_client_head(
            &self.shared.cx,
            bytes,
            client_done,
            origin_idle,
            self.shared.now,
            &mut self.out.buf,
        );
        let forward = match step {
            HeadStep::Forward(forward) => forward,
            HeadStep::NeedMore => return Flow::Moved(false),
            HeadStep::End(ending) => return Flow::End(ending),
        };
        discard(
            self.sockets.get_mut::<tcp::Socket>(self.slot.client),
            forward.consumed,
        );
        self.out.hold(forward.head_len, Peer::Origin);
        let next = match forward.next {
            OriginStep::Reuse => {
                self.out.release();
                return Flow::Moved(true);
            }
            OriginStep::Connect(addr) => ConnectStep::Connect(addr),
            OriginStep::End(ending) => return Flow::End(ending),
            OriginStep::LookUp(name) => {
                // The origin connection kept from the last exchange does not carry this one.
                close_origin(self.sockets.get_mut::<tcp::Socket>(self.slot.origin));
                let lookups = self.shared.lookups;
                match lookups.start(self.sockets, self.shared.iface, name) {
                    Ok(query) => {
                        *self.wait = OriginWait::Lookup(query);
                        return Flow::Moved(true);
                    }
                    Err(e) => {
                        self.connection
                            .on_resolved(&self.shared.cx, Err(&e), &mut self.out.buf)
                    }
                }
            }
        };
        self.follow(next)
    }

    fn resolving(&mut self) -> Flow {
        let OriginWait::Lookup(query) = self.wait else {
            return Flow::End(self.connection.driver_bug("resolving without a lookup"));
        };
        let mut found = heapless::Vec::<IpAddr, MAX_CANDIDATES>::new();
        let step = match self
            .shared
            .lookups
            .poll(self.sockets, query, self.shared.now, &mut found)
        {
            // `end` cancels the query.
            Answer::Pending => return self.progress(false, 0),
            Answer::Found(addresses) => {
                *self.wait = OriginWait::Nothing;
                self.connection
                    .on_resolved(&self.shared.cx, Ok(addresses), &mut self.out.buf)
            }
            Answer::Failed(why) => {
                *self.wait = OriginWait::Nothing;
                self.connection
                    .on_resolved(&self.shared.cx, Err(&why), &mut self.out.buf)
            }
        };
        self.follow(step)
    }

    fn connecting(&mut self) -> Flow {
        if let OriginWait::ResetThenConnect { addr, until } = *self.wait {
            let reset_out = self.origin().remote_endpoint().is_none();
            if !reset_out && self.shared.now < until {
                return self.progress(false, 0);
            }
            *self.wait = OriginWait::Nothing;
            if !reset_out {
                log::debug!(
                    "the reset of the origin socket's last connection did not go out in time"
                );
            }
            // Straight to the new connection, and to each candidate after it should one fail at once:
            // `connect` would abort the old one again and wait anew.
            let mut addr = addr;
            loop {
                if self.open(addr).is_ok() {
                    return Flow::Moved(true);
                }
                match self.connection.on_connect_failed(false, &mut self.out.buf) {
                    ConnectStep::Connect(next) => addr = next,
                    ConnectStep::End(ending) => return Flow::End(ending),
                }
            }
        }
        match self.origin().state() {
            tcp::State::Established => {}
            tcp::State::SynSent | tcp::State::SynReceived => return self.progress(false, 0),
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
            return self.fail(Failure::ClientReset);
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
                    Err(_) => return self.fail(Failure::MalformedRequestBody),
                }
                let body_done = body.is_done();
                if !body_done && finished_sending(self.client()) {
                    return self.fail(Failure::ClientClosedMidBody);
                }
            }
        }
        // The response waits for what the slot's buffer still holds for the client.
        if !self.out.pending() {
            let response = match phase {
                ResponsePhase::Head => self.response_head(),
                ResponsePhase::Body => self.response_body(&mut body_bytes),
                // Every byte is in the client socket's buffer: the response is sent, as far as the slot goes.
                ResponsePhase::Complete => return self.response_sent(),
            };
            match response {
                Flow::Moved(m) => moved |= m,
                end => return end,
            }
        }
        self.progress(moved, body_bytes)
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
            return self.fail(Failure::TunnelPeerReset);
        }
        self.progress(moved, forth + back)
    }

    fn closed(&mut self) -> Flow {
        // The slot leaves `Serving` with every ending: a closed connection here is this design's bug.
        Flow::End(
            self.connection
                .driver_bug("a closed connection was stepped"),
        )
    }
}

impl<'x, const OUT: usize> Serving<'_, 'x, '_, '_, OUT> {
    /// One step of the connection, in the phase it is in.
    pub(super) fn step(&mut self) -> Flow {
        self.connection.phase().dispatch(self)
    }

    fn client(&mut self) -> &mut tcp::Socket<'x> {
        self.sockets.get_mut::<tcp::Socket>(self.slot.client)
    }

    fn origin(&mut self) -> &mut tcp::Socket<'x> {
        self.sockets.get_mut::<tcp::Socket>(self.slot.origin)
    }

    fn fail(&mut self, failure: Failure) -> Flow {
        Flow::End(self.connection.on_failure(failure, &mut self.out.buf))
    }

    /// Does what the engine said to reach the origin, asking it again where that fails at once.
    fn follow(&mut self, mut step: ConnectStep) -> Flow {
        loop {
            step = match step {
                ConnectStep::Connect(addr) => match self.connect(addr) {
                    Ok(()) => return Flow::Moved(true),
                    Err(()) => self.connection.on_connect_failed(false, &mut self.out.buf),
                },
                ConnectStep::End(ending) => return Flow::End(ending),
            }
        }
    }

    /// Opens the origin socket's connection to `addr`. A socket still holding a connection (the one kept from the
    /// last exchange, or one closing) is reset first, and `addr` waits until the reset has gone out.
    fn connect(&mut self, addr: SocketAddr) -> Result<(), ()> {
        let origin = self.origin();
        if origin.is_open() || origin.remote_endpoint().is_some() {
            origin.abort();
            let until = self.shared.now + self.shared.cx.limits.reset_grace;
            *self.wait = OriginWait::ResetThenConnect { addr, until };
            return Ok(());
        }
        self.open(addr)
    }

    /// Opens the origin socket's connection to `addr`, whatever the socket held (a reset not sent yet is dropped).
    fn open(&mut self, addr: SocketAddr) -> Result<(), ()> {
        let remote = match addr.ip() {
            IpAddr::V4(v4) => (IpAddress::Ipv4(v4), addr.port()),
            // A v4-mapped address is an IPv4 origin (as the kernel stack's designs reach it).
            #[cfg(feature = "ipv6")]
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => (IpAddress::Ipv4(v4), addr.port()),
                None => (IpAddress::Ipv6(v6), addr.port()),
            },
            // A build without IPv6 has no IPv6 to speak (and no IPv6 literal reaches here).
            #[cfg(not(feature = "ipv6"))]
            IpAddr::V6(_) => return Err(()),
        };
        let origin = self.sockets.get_mut::<tcp::Socket>(self.slot.origin);
        let local_port = next_ephemeral(self.shared.next_port);
        origin
            .connect(self.shared.iface, remote, local_port)
            .map_err(|e| log::debug!("cannot connect to {addr}: {e}"))?;
        origin.set_timeout(Some(SOCKET_TIMEOUT));
        origin.set_keep_alive(Some(KEEP_ALIVE));
        origin.set_nagle_enabled(false);
        Ok(())
    }

    /// Reports progress, or asks about the deadline when nothing moved.
    fn progress(&mut self, moved: bool, body_bytes: usize) -> Flow {
        let limits = self.shared.cx.limits;
        let now = self.shared.now;
        match self
            .connection
            .after_step(limits, now, moved, body_bytes, &mut self.out.buf)
        {
            Some(ending) => Flow::End(ending),
            None => Flow::Moved(moved || body_bytes > 0),
        }
    }

    /// The whole response is out: the next request on a kept connection (the origin connection kept only if it is
    /// open and nothing follows the response on it), or the end.
    fn response_sent(&mut self) -> Flow {
        let origin = self.origin();
        let origin_clean = origin.may_recv() && origin.recv_queue() == 0;
        match self
            .connection
            .on_response_sent(&self.shared.cx, origin_clean, self.shared.now)
        {
            AfterResponse::NextRequest { keep_origin } => {
                if !keep_origin {
                    close_origin(self.origin());
                }
                Flow::Moved(true)
            }
            AfterResponse::End(ending) => Flow::End(ending),
        }
    }

    fn response_head(&mut self) -> Flow {
        let window = self.shared.cx.limits.response_head.min(self.scratch.len());
        let window = self.scratch.get_mut(..window).unwrap_or(&mut []);
        let origin = self.sockets.get_mut::<tcp::Socket>(self.slot.origin);
        let available = origin.peek_slice(window).unwrap_or(0);
        // Its FIN or reset, whatever still waits in the buffer (a head is only peeked at until it is whole).
        let origin_done = peer_finished(origin);
        let bytes = window.get(..available).unwrap_or(&[]);
        let mut fields = [httparse::EMPTY_HEADER; RESPONSE_FIELDS];
        match self.connection.on_response_head(
            &self.shared.cx,
            bytes,
            origin_done,
            &mut fields,
            &mut self.out.buf,
        ) {
            ResponseStep::NeedMore => Flow::Moved(false),
            ResponseStep::Head { consumed, len, .. } => {
                discard(self.origin(), consumed);
                self.out.send(len, Peer::Client);
                Flow::Moved(true)
            }
            // The request head is still in the buffer: it goes again once the new connection is up.
            ResponseStep::Retry(addr) => self.follow(ConnectStep::Connect(addr)),
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
            Err(_) => return self.fail(Failure::MalformedResponseBody),
        }
        let done = body.is_done();
        let origin = self.origin();
        if !done && finished_sending(origin) {
            let reset = was_reset(origin) && !finished_before_reset(origin);
            if let Some(ending) = self.connection.on_origin_finished(reset) {
                return Flow::End(ending);
            }
            return Flow::Moved(true);
        }
        Flow::Moved(false)
    }
}
