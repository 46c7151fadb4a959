//! [`ClientSession`]: one client on its own thread. The core's engine decides; this reads and writes with
//! blocking calls whose timeouts are the engine's deadlines, in the order a request goes:
//!
//! ```text
//! read head ─▶ reach the origin (look up, connect, or reuse) ─▶ send head ─▶ request body ─▶ response heads
//!     ▲                                                        ─▶ response body ─▶ sent ──┐
//!     └──────────────────────────── the client keeps its connection ◀───────────────────────┘
//! ```
//!
//! The exchange itself (request to the origin, response back) is in [`exchange`]. A client that sent
//! `Expect: 100-continue` gets the origin's answer first, waited for at most [`Limits::continue_wait`].

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc::{sync_channel, RecvTimeoutError};
use std::time::Duration;

use smoltalk_core::proxy::engine::{
    ConnectStep, Connected, Ending, Failure, HeadStep, OriginStep, ProxyConnection,
};
use smoltalk_core::proxy::{Limits, ProxyContext};

use super::super::lookup::{spawn_lookup, LookupResult};
use super::idle::{IdleSessions, IdleWatch, Place};
use super::sockets::{
    drain, is_timeout, read_into, relay_both_ways, std_duration, Pending, ReadOutcome, TunnelEnd,
};
use crate::clock::Clock;
use crate::sys::{self, Inbound};

mod exchange;

/// Each direction of a body is copied through a buffer this big.
const BODY_BUFFER: usize = 16 * 1024;

/// How often a thread blocked on the origin (writing a body it does not take, waiting for its answer) looks at
/// the client's connection and the origin's: a client that reset meanwhile ends the exchange then, not at the
/// origin's pace or the deadline, and an answer that began is read (the event loop hears of both at once).
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
    head_out: Vec<u8>,
    /// The request head for the origin, kept to send again on a retry.
    request_head: Vec<u8>,
    upstream: Option<Upstream>,
    /// The session's entry among the threads the acceptor may reclaim while they idle between requests.
    idle: IdleWatch<'c>,
    /// The session's place under the cap, given back when the session ends (or it is reclaimed).
    _place: Place,
}

impl<'c> ClientSession<'c> {
    pub fn new(
        client: TcpStream,
        engine: ProxyConnection,
        cx: &'c ProxyContext<'c>,
        clock: Clock,
        (sessions, id, place): (&'c IdleSessions, u64, Place),
    ) -> ClientSession<'c> {
        let idle = IdleWatch::register(sessions, id, &client, &place);
        let _ = client.set_nodelay(true);
        let _ = client.set_write_timeout(Some(std_duration(cx.limits.timeout)));
        ClientSession {
            client,
            engine,
            cx,
            limits: cx.limits,
            clock,
            // Each must hold a whole head: a request's, a response's (which may be larger: that buffer grows to
            // it only if an origin sends one).
            from_client: Pending::new(cx.limits.head.max(BODY_BUFFER)),
            client_done: false,
            from_origin: Pending::growing(BODY_BUFFER, cx.limits.response_head),
            // A request head, rewritten, or a page; grown for a larger response head when one comes.
            head_out: vec![0; cx.limits.head + cx.limits.head_growth()],
            request_head: Vec::new(),
            upstream: None,
            idle,
            _place: place,
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

    /// Waits (until the engine's deadline) for more of the client's head. A connection idle between requests
    /// may be reclaimed by the acceptor meanwhile: then the engine closes it.
    fn read_more_head(&mut self) -> Result<(), Ending> {
        let wait = self.left();
        let idle = self.engine.idle_since();
        if let Some(since) = idle {
            self.idle.idle(since);
        }
        let outcome = read_into(&mut self.client, &mut self.from_client, wait);
        if idle.is_some() && self.idle.busy() {
            if let Some(ending) = self.engine.reclaim() {
                return Err(ending);
            }
        }
        match outcome {
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
                    // Writes wait at most [`WATCH`] at a time (see `exchange`).
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
