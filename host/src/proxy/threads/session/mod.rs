//! [`ClientSession`]: one client on its own thread. The core's engine decides; this reads and writes with
//! blocking calls whose timeouts are the engine's deadlines, in the order a request goes:
//!
//! ```text
//! read head ─▶ reach the origin (look up, connect, or reuse) ─▶ send head ─▶ request body ─▶ response heads
//!     ▲                                                        ─▶ response body ─▶ sent ──┐
//!     └──────────────────────────── the client keeps its connection ◀───────────────────────┘
//! ```
//!
//! Because it cannot read the response while it sends the request body, a client that sent
//! `Expect: 100-continue` gets the origin's answer first, waited for at most [`Limits::continue_wait`].

use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc::{sync_channel, RecvTimeoutError};
use std::time::Duration;

use smoltalk_core::proxy::engine::{
    AfterResponse, ConnectStep, Connected, Ending, Failure, HeadStep, OriginStep, ProxyConnection,
    ResponseStep,
};
use smoltalk_core::proxy::{Limits, ProxyContext};

use super::super::lookup::{spawn_lookup, LookupResult};
use super::super::Clock;
use super::super::{connection_failed, write_met_failure};
use super::sockets::{
    drain, is_timeout, read_into, relay_both_ways, std_duration, Pending, ReadOutcome, TunnelEnd,
};
use crate::sys::{self, Inbound};

/// Each direction of a body is copied through a buffer this big.
const BODY_BUFFER: usize = 16 * 1024;

/// How often a thread blocked on the origin (writing a body it does not take, waiting for its answer) looks at
/// the client's connection: a client that reset meanwhile ends the exchange then, not at the origin's pace or
/// the deadline (the event loop hears of it at once).
const WATCH: Duration = Duration::from_millis(250);

/// What goes to the origin: the request head, or the first `n` bytes the client sent (body).
enum ToOrigin {
    Head,
    Body(usize),
}

/// How the origin was reached.
enum Reached {
    Exchange,
    Tunnel,
}

/// An origin connection.
struct Upstream {
    stream: TcpStream,
    /// A write to it failed: nothing more goes to it (what it answered is still read).
    write_closed: bool,
    /// A write (or a peek) met the connection's failure (a reset) before the origin had finished sending. Linux
    /// tells a failure once, to the call that meets it: the reads after it see a plain end, which must not pass
    /// for the origin's close.
    reset_seen: bool,
}

/// One client connection on its own thread.
pub(super) struct ClientSession<'c> {
    client: TcpStream,
    engine: ProxyConnection,
    cx: &'c ProxyContext<'c>,
    limits: &'c Limits,
    clock: Clock,
    /// What the client sent and the proxy has not used yet.
    from_client: Pending,
    client_done: bool,
    /// What the origin sent and the proxy has not used yet.
    from_origin: Pending,
    /// The heads and pages the engine writes.
    head_out: Box<[u8]>,
    /// The request head for the origin, kept to send again on a retry.
    request_head: Vec<u8>,
    upstream: Option<Upstream>,
}

impl<'c> ClientSession<'c> {
    pub fn new(
        client: TcpStream,
        engine: ProxyConnection,
        cx: &'c ProxyContext<'c>,
        clock: Clock,
    ) -> ClientSession<'c> {
        let _ = client.set_nodelay(true);
        let _ = client.set_write_timeout(Some(std_duration(cx.limits.timeout)));
        let buffer = cx.limits.head.max(BODY_BUFFER);
        ClientSession {
            client,
            engine,
            cx,
            limits: cx.limits,
            clock,
            from_client: Pending::new(buffer),
            client_done: false,
            from_origin: Pending::new(buffer),
            head_out: vec![0; cx.limits.out_buffer()].into_boxed_slice(),
            request_head: Vec::new(),
            upstream: None,
        }
    }

    /// Serves the client until its connection ends.
    pub fn run(mut self) {
        let ending = self.serve();
        self.end(ending);
    }

    fn serve(&mut self) -> Ending {
        loop {
            let reached = self.read_head().and_then(|next| self.reach_origin(next));
            match reached {
                Ok(Reached::Exchange) => {}
                Ok(Reached::Tunnel) => return self.tunnel(),
                Err(ending) => return ending,
            }
            if let Err(ending) = self.exchange() {
                return ending;
            }
        }
    }

    /// Tells the engine of `failure`; the connection ends as it says.
    fn fail(&mut self, failure: Failure) -> Ending {
        self.engine.on_failure(failure, &mut self.head_out)
    }

    /// Connects to `addr` again and sends the same request head (the engine's [`ResponseStep::Retry`]).
    fn retry(&mut self, addr: SocketAddr) -> Result<(), Ending> {
        match self.connect(ConnectStep::Connect(addr))? {
            Reached::Exchange => self.send_to_origin(ToOrigin::Head),
            Reached::Tunnel => Err(self.engine.driver_bug("a retry turned into a tunnel")),
        }
    }

    /// A wait ended with nothing: the engine says whether its deadline has passed and the connection ends.
    fn timed_out(&mut self) -> Result<(), Ending> {
        match self.engine.on_timeout(self.clock.now(), &mut self.head_out) {
            Some(ending) => Err(ending),
            None => Ok(()),
        }
    }

    /// How long until the engine's deadline.
    fn left(&self) -> Duration {
        self.engine
            .deadline()
            .map_or(Duration::ZERO, |d| self.clock.until(d))
    }

    /// Reads the client's next request head; what the engine says to do to reach its origin, with a lookup
    /// done. `None`: the kept origin connection carries it.
    fn read_head(&mut self) -> Result<Option<ConnectStep>, Ending> {
        loop {
            // A peek at the kept origin connection, made only if the engine would reuse it.
            let upstream = self.upstream.as_ref();
            let idle = || {
                upstream.is_some_and(|u| {
                    !u.write_closed && sys::peek_inbound(&u.stream) == Inbound::Nothing
                })
            };
            let now = self.clock.now();
            let step = self.engine.on_client_head(
                self.cx,
                self.from_client.bytes(),
                self.client_done,
                idle,
                now,
                &mut self.head_out,
            );
            let forward = match step {
                HeadStep::Forward(forward) => forward,
                HeadStep::End(ending) => return Err(ending),
                HeadStep::NeedMore => {
                    self.read_more_head()?;
                    continue;
                }
            };
            self.request_head.clear();
            self.request_head
                .extend_from_slice(self.head_out.get(..forward.head_len).unwrap_or(&[]));
            let next = match forward.next {
                OriginStep::Reuse => None,
                OriginStep::Connect(addr) => Some(ConnectStep::Connect(addr)),
                OriginStep::End(ending) => Some(ConnectStep::End(ending)),
                OriginStep::LookUp(name) => {
                    let name = name.to_owned();
                    self.from_client.consume(forward.consumed);
                    self.upstream = None;
                    return self.look_up(name).map(Some);
                }
            };
            self.from_client.consume(forward.consumed);
            return Ok(next);
        }
    }

    /// Waits (until the engine's deadline) for more of the client's head.
    fn read_more_head(&mut self) -> Result<(), Ending> {
        let wait = self.left();
        match read_into(&mut self.client, &mut self.from_client, wait) {
            ReadOutcome::Bytes | ReadOutcome::TimedOut => Ok(()),
            ReadOutcome::Finished { reset: false } => {
                self.client_done = true;
                Ok(())
            }
            ReadOutcome::Finished { reset: true } => Err(self.fail(Failure::ClientReset)),
        }
    }

    /// Looks `name` up with the system's resolver, waiting for it until the engine's deadline.
    fn look_up(&mut self, name: String) -> Result<ConnectStep, Ending> {
        let (tx, answer) = sync_channel(1);
        let found: LookupResult = match spawn_lookup(name, move |found| {
            let _ = tx.send(found);
        }) {
            Err(e) => Err(format!("cannot start a lookup: {e}")),
            Ok(()) => loop {
                match answer.recv_timeout(self.left().max(Duration::from_millis(1))) {
                    Ok(found) => break found,
                    Err(RecvTimeoutError::Timeout) => self.timed_out()?,
                    Err(RecvTimeoutError::Disconnected) => {
                        break Err("the lookup ended without an answer".into())
                    }
                }
            },
        };
        Ok(match &found {
            Ok(addresses) => self
                .engine
                .on_resolved(self.cx, Ok(addresses), &mut self.head_out),
            Err(why) => self
                .engine
                .on_resolved(self.cx, Err(why), &mut self.head_out),
        })
    }

    /// Reaches the origin as the engine said: the kept connection (`None`), or a new one.
    fn reach_origin(&mut self, next: Option<ConnectStep>) -> Result<Reached, Ending> {
        match next {
            None => Ok(Reached::Exchange),
            Some(step) => self.connect(step),
        }
    }

    /// Connects as the engine says, asking it again after each failure.
    fn connect(&mut self, mut step: ConnectStep) -> Result<Reached, Ending> {
        loop {
            let addr = match step {
                ConnectStep::Connect(addr) => addr,
                ConnectStep::End(ending) => return Err(ending),
            };
            self.upstream = None;
            self.from_origin.consume(usize::MAX);
            let wait = self.left().max(Duration::from_millis(1));
            match TcpStream::connect_timeout(&addr, wait) {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    // Writes wait at most [`WATCH`] at a time (see `send_to_origin`).
                    let _ = stream.set_write_timeout(Some(WATCH));
                    self.upstream = Some(Upstream {
                        stream,
                        write_closed: false,
                        reset_seen: false,
                    });
                    return self.connected();
                }
                Err(e) => {
                    log::debug!("connect {addr}: {e}");
                    step = self
                        .engine
                        .on_connect_failed(is_timeout(&e), &mut self.head_out);
                }
            }
        }
    }

    fn connected(&mut self) -> Result<Reached, Ending> {
        match self
            .engine
            .on_connected(self.cx, self.clock.now(), &mut self.head_out)
        {
            Connected::Exchange => Ok(Reached::Exchange),
            Connected::Tunnel { len } => {
                let reply = self.head_out.get(..len).unwrap_or(&[]);
                match self.client.write_all(reply) {
                    Ok(()) => Ok(Reached::Tunnel),
                    Err(_) => Err(self.fail(Failure::ClientReset)),
                }
            }
            Connected::End(ending) => Err(ending),
        }
    }

    /// Writes the request head or body bytes to the origin. While the origin takes nothing, it looks every
    /// [`WATCH`] at the client (one that failed ends the exchange) and at the origin: an answer that begins is
    /// read and sent on ([`Self::answer_while_sending`]), an origin that closed or failed gets nothing more
    /// (what it answered, if anything, is read on, and the engine decides from that), and the engine's
    /// deadline holds.
    fn send_to_origin(&mut self, what: ToOrigin) -> Result<(), Ending> {
        let mut sent = 0;
        loop {
            let Some(upstream) = self.upstream.as_mut().filter(|u| !u.write_closed) else {
                return Ok(());
            };
            let bytes = match what {
                ToOrigin::Head => self.request_head.get(sent..),
                ToOrigin::Body(n) => self.from_client.bytes().get(sent..n),
            };
            let bytes = bytes.unwrap_or(&[]);
            if bytes.is_empty() {
                return Ok(());
            }
            match upstream.stream.write(bytes) {
                Ok(n @ 1..) => {
                    sent += n;
                    self.engine.on_progress(self.limits, self.clock.now(), 0);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_timeout(&e) => {
                    if connection_failed(self.client.take_error()) {
                        return Err(self.fail(Failure::ClientReset));
                    }
                    match sys::peek_inbound(&upstream.stream) {
                        Inbound::Nothing => self.timed_out()?,
                        Inbound::Bytes => self.answer_while_sending()?,
                        Inbound::End => upstream.write_closed = true,
                        Inbound::Failed => {
                            upstream.write_closed = true;
                            upstream.reset_seen = true;
                        }
                    }
                }
                Ok(0) => upstream.write_closed = true,
                Err(e) => {
                    upstream.write_closed = true;
                    upstream.reset_seen = write_met_failure(&e);
                }
            }
        }
    }

    /// The origin began to answer while it took no more of the request: the head is read and sent on. After an
    /// interim head the sending goes on; after the final one nothing more goes to the origin (this thread cannot
    /// send while it relays the response), and the rest of the request stays with the client.
    fn answer_while_sending(&mut self) -> Result<(), Ending> {
        self.response_head(Some(Duration::ZERO))?;
        if self.engine.response_body().is_some() {
            if let Some(upstream) = self.upstream.as_mut() {
                upstream.write_closed = true;
            }
        }
        Ok(())
    }

    /// A wait on the origin ended with nothing: the client may have reset meanwhile, or the deadline passed.
    fn origin_silent(&mut self) -> Result<(), Ending> {
        if connection_failed(self.client.take_error()) {
            return Err(self.fail(Failure::ClientReset));
        }
        self.timed_out()
    }

    fn origin_takes_more(&self) -> bool {
        self.upstream.as_ref().is_some_and(|u| !u.write_closed)
    }

    /// Forwards one request and its response.
    fn exchange(&mut self) -> Result<(), Ending> {
        self.send_to_origin(ToOrigin::Head)?;
        let body_done = self.engine.request_body().is_none_or(|b| b.is_done());
        // A client that sent `Expect: 100-continue` waits for a go-ahead; give the origin a moment to answer.
        let mut final_head = false;
        if self.engine.expects_continue() && !body_done && self.from_client.is_empty() {
            let wait = std_duration(self.limits.continue_wait);
            final_head = self.response_head(Some(wait))? == Some(false);
        }
        if !final_head {
            self.forward_request_body()?;
            // Up to the final head (which may have come while the body went).
            while self.engine.response_body().is_none() {
                self.response_head(None)?;
            }
        }
        self.relay_response_body()?;
        // Clean: open both ways and nothing of it unread.
        let origin_clean = self.from_origin.is_empty() && self.origin_takes_more();
        match self
            .engine
            .on_response_sent(self.cx, origin_clean, self.clock.now())
        {
            AfterResponse::NextRequest { keep_origin } => {
                if !keep_origin {
                    self.upstream = None;
                }
                Ok(())
            }
            AfterResponse::End(ending) => Err(ending),
        }
    }

    /// Streams the request body from the client to the origin, leaving any byte after it (a pipelined request)
    /// in `from_client`. An origin that stops taking it leaves the rest with the client.
    fn forward_request_body(&mut self) -> Result<(), Ending> {
        loop {
            let done = self.engine.request_body().is_none_or(|b| b.is_done());
            if done || !self.origin_takes_more() {
                return Ok(());
            }
            if self.from_client.is_empty() {
                let wait = self.left();
                match read_into(&mut self.client, &mut self.from_client, wait) {
                    ReadOutcome::Bytes => {}
                    ReadOutcome::TimedOut => {
                        self.timed_out()?;
                        continue;
                    }
                    ReadOutcome::Finished { reset: false } => {
                        self.client_done = true;
                        return Err(self.fail(Failure::ClientClosedMidBody));
                    }
                    ReadOutcome::Finished { reset: true } => {
                        return Err(self.fail(Failure::ClientReset));
                    }
                }
            }
            let Some(body) = self.engine.request_body() else {
                return Ok(());
            };
            let n = match body.advance(self.from_client.bytes()) {
                Ok(n) => n,
                Err(_) => return Err(self.fail(Failure::MalformedRequestBody)),
            };
            self.send_to_origin(ToOrigin::Body(n))?;
            self.from_client.consume(n);
            self.engine.on_progress(self.limits, self.clock.now(), n);
        }
    }

    /// Reads the origin's next response head and sends what the engine writes of it to the client. `wait`
    /// bounds the wait for its first byte (`Ok(None)` when it passes). `Ok(Some(interim))` once a head went.
    fn response_head(&mut self, wait: Option<Duration>) -> Result<Option<bool>, Ending> {
        let mut until = wait.map(|w| std::time::Instant::now() + w);
        let mut origin_done = false;
        loop {
            match self.engine.on_response_head(
                self.cx,
                self.from_origin.bytes(),
                origin_done,
                &mut self.head_out,
            ) {
                ResponseStep::Head {
                    consumed,
                    len,
                    interim,
                } => {
                    self.from_origin.consume(consumed);
                    let head = self.head_out.get(..len).unwrap_or(&[]);
                    if self.client.write_all(head).is_err() {
                        return Err(self.fail(Failure::ClientReset));
                    }
                    return Ok(Some(interim));
                }
                ResponseStep::Retry(addr) => {
                    self.retry(addr)?;
                    origin_done = false;
                    continue;
                }
                ResponseStep::End(ending) => return Err(ending),
                ResponseStep::NeedMore => {}
            }
            let left = match until {
                Some(until) => until.saturating_duration_since(std::time::Instant::now()),
                None => self.left(),
            };
            let Some(upstream) = self.upstream.as_mut() else {
                return Err(self
                    .engine
                    .driver_bug("reading a response without an origin"));
            };
            match read_into(&mut upstream.stream, &mut self.from_origin, left.min(WATCH)) {
                ReadOutcome::Bytes => self.engine.on_progress(self.limits, self.clock.now(), 0),
                ReadOutcome::Finished { .. } => origin_done = true,
                ReadOutcome::TimedOut => {
                    if until.is_some_and(|u| std::time::Instant::now() >= u) {
                        if self.from_origin.is_empty() {
                            return Ok(None);
                        }
                        // A head has begun: the rest is waited for as any head is.
                        until = None;
                    }
                    self.origin_silent()?;
                }
            }
        }
    }

    /// Streams the response body from the origin to the client.
    fn relay_response_body(&mut self) -> Result<(), Ending> {
        loop {
            if self.engine.response_body().is_none_or(|b| b.is_done()) {
                return Ok(());
            }
            if self.from_origin.is_empty() {
                let wait = self.left().min(WATCH);
                let Some(upstream) = self.upstream.as_mut() else {
                    return Err(self.engine.driver_bug("reading a body without an origin"));
                };
                match read_into(&mut upstream.stream, &mut self.from_origin, wait) {
                    ReadOutcome::Bytes => {}
                    ReadOutcome::TimedOut => {
                        self.origin_silent()?;
                        continue;
                    }
                    ReadOutcome::Finished { reset } => {
                        let reset = reset || upstream.reset_seen;
                        self.upstream = None;
                        match self.engine.on_origin_finished(reset) {
                            Some(ending) => return Err(ending),
                            None => continue,
                        }
                    }
                }
            }
            let Some(body) = self.engine.response_body() else {
                return Ok(());
            };
            let n = match body.advance(self.from_origin.bytes()) {
                Ok(n) => n,
                Err(_) => return Err(self.fail(Failure::MalformedResponseBody)),
            };
            let chunk = self.from_origin.bytes().get(..n).unwrap_or(&[]);
            if self.client.write_all(chunk).is_err() {
                return Err(self.fail(Failure::ClientReset));
            }
            self.from_origin.consume(n);
            self.engine.on_progress(self.limits, self.clock.now(), n);
        }
    }

    /// Copies bytes both ways on two threads until both sides have closed, one resets, or neither moves a byte
    /// for the tunnel's idle limit.
    fn tunnel(&mut self) -> Ending {
        let Some(origin) = self.upstream.as_ref().map(|u| &u.stream) else {
            return self.engine.driver_bug("a tunnel without an origin");
        };
        let idle = std_duration(self.limits.tunnel_idle);
        for stream in [&self.client, origin] {
            let _ = stream.set_write_timeout(Some(idle));
        }
        // Bytes the client sent right behind its head (a TLS ClientHello) go first.
        if (&*origin).write_all(self.from_client.bytes()).is_err() {
            return self.fail(Failure::TunnelPeerReset);
        }
        self.from_client.consume(usize::MAX);
        let relayed = relay_both_ways(
            &self.client,
            origin,
            (&mut self.from_client, &mut self.from_origin),
            self.clock,
            self.limits,
        );
        let Ok((moved, activity)) = relayed else {
            return self.fail(Failure::TunnelPeerReset);
        };
        self.engine.on_progress(self.limits, activity.last(), moved);
        match activity.end() {
            TunnelEnd::Reset => self.fail(Failure::TunnelPeerReset),
            TunnelEnd::Idle => match self.engine.on_timeout(self.clock.now(), &mut self.head_out) {
                Some(ending) => ending,
                None => self.engine.on_tunnel_closed(),
            },
            TunnelEnd::Closed => self.engine.on_tunnel_closed(),
        }
    }

    /// Carries out `ending`; the origin connection closes first (with a FIN unless both are reset), then the
    /// client's.
    fn end(mut self, ending: Ending) {
        if let (Ending::ResetBoth, Some(upstream)) = (ending, &self.upstream) {
            let _ = sys::reset_on_close(&upstream.stream);
        }
        self.upstream = None;
        match ending {
            Ending::Answer { len } => {
                let page = self.head_out.get(..len).unwrap_or(&[]);
                let _ = self.client.write_all(page);
                drain(&mut self.client, &self.clock, self.limits);
            }
            Ending::Close => drain(&mut self.client, &self.clock, self.limits),
            Ending::ResetClient | Ending::ResetBoth => {
                let _ = sys::reset_on_close(&self.client);
            }
        }
    }
}
