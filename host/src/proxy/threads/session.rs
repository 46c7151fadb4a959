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

use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use smoltalk_core::proxy::engine::{
    AfterResponse, Connected, Ending, Failure, HeadStep, OriginStep, ProxyConnection, Recovery,
    ResponseStep,
};
use smoltalk_core::proxy::{Limits, ProxyContext};

use super::super::Clock;
use super::sockets::{copy_until_closed, is_idle, is_timeout, std_duration, Pending};
use crate::sys;

/// Each direction of a body is copied through a buffer this big.
const BODY_BUFFER: usize = 16 * 1024;

/// What a read with a deadline gave.
enum Read_ {
    /// Bytes came.
    Bytes,
    /// The peer finished sending (closed, or reset: `reset`).
    Finished { reset: bool },
    /// The timeout passed with nothing.
    TimedOut,
}

/// How the origin was reached.
enum Reached {
    Exchange,
    Tunnel,
}

/// One client connection on its own thread.
pub(super) struct ClientSession<'c> {
    client: TcpStream,
    engine: ProxyConnection,
    cx: &'c ProxyContext<'c>,
    limits: &'c Limits,
    clock: Clock,
    /// What the client sent and the proxy has not used yet.
    inbound: Pending,
    client_done: bool,
    /// What the origin sent and the proxy has not used yet.
    outbound: Pending,
    /// The heads and pages the engine writes.
    head_out: Box<[u8]>,
    /// The request head for the origin, kept to send again on a retry.
    request_head: Vec<u8>,
    upstream: Option<TcpStream>,
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
            inbound: Pending::new(buffer),
            client_done: false,
            outbound: Pending::new(buffer),
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
            let step = match self.read_head() {
                Ok(step) => step,
                Err(ending) => return ending,
            };
            match self.reach_origin(step) {
                Ok(Reached::Exchange) => {}
                Ok(Reached::Tunnel) => return self.tunnel(),
                Err(ending) => return ending,
            }
            if let Err(ending) = self.exchange() {
                return ending;
            }
        }
    }

    fn fail(&mut self, failure: Failure) -> Result<SocketAddr, Ending> {
        match self.engine.on_failure(failure, &mut self.head_out) {
            Recovery::Retry(addr) => Ok(addr),
            Recovery::End(ending) => Err(ending),
        }
    }

    /// Fails the exchange with `failure`; a retry the engine asks for is carried out.
    fn fail_or_retry(&mut self, failure: Failure) -> Result<(), Ending> {
        let addr = self.fail(failure)?;
        self.retry(addr)
    }

    /// Connects to `addr` again and sends the same request head.
    fn retry(&mut self, addr: SocketAddr) -> Result<(), Ending> {
        match self.reach_origin(OriginStep::Connect(addr))? {
            Reached::Exchange => self.send_head(),
            Reached::Tunnel => Err(Ending::ResetBoth),
        }
    }

    /// Reads until `stream` gives bytes into `pending`, or `wait` passes.
    fn read_into(stream: &mut TcpStream, pending: &mut Pending, wait: Duration) -> Read_ {
        // Zero would mean "no timeout" to the socket: a deadline passed is a millisecond's wait.
        let _ = stream.set_read_timeout(Some(wait.max(Duration::from_millis(1))));
        match pending.fill(stream) {
            Ok(0) => Read_::Finished { reset: false },
            Ok(_) => Read_::Bytes,
            Err(e) if is_timeout(&e) => Read_::TimedOut,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Read_::Bytes,
            Err(_) => Read_::Finished { reset: true },
        }
    }

    /// A read waited until the engine's deadline: the engine says whether the connection ends.
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

    fn read_head(&mut self) -> Result<OriginStep<'static>, Ending> {
        loop {
            // A peek at the kept origin connection, made only if the engine would reuse it.
            let upstream = self.upstream.as_ref();
            let idle = || upstream.is_some_and(is_idle);
            let now = self.clock.now();
            let step = self.engine.on_client_head(
                self.cx,
                self.inbound.bytes(),
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
            let consumed = forward.consumed;
            let next = forward.next.name_to_look_up().map(str::to_owned);
            self.inbound.consume(consumed);
            return Ok(match next {
                Err(next) => next,
                Ok(name) => {
                    self.upstream = None;
                    self.look_up(&name)
                }
            });
        }
    }

    /// Waits (until the engine's deadline) for more of the client's head.
    fn read_more_head(&mut self) -> Result<(), Ending> {
        let wait = self.left();
        match Self::read_into(&mut self.client, &mut self.inbound, wait) {
            Read_::Bytes | Read_::TimedOut => {}
            Read_::Finished { reset: false } => self.client_done = true,
            Read_::Finished { reset: true } => {
                self.fail(Failure::ClientReset)?;
            }
        }
        Ok(())
    }

    /// Looks `name` up with the system's resolver (this thread waits for it).
    fn look_up(&mut self, name: &str) -> OriginStep<'static> {
        let found = (name, 0)
            .to_socket_addrs()
            .map(|addrs| addrs.map(|a| a.ip()).collect::<Vec<IpAddr>>());
        match found {
            Ok(addresses) => self
                .engine
                .on_resolved(self.cx, Ok(&addresses), &mut self.head_out),
            Err(e) => self
                .engine
                .on_resolved(self.cx, Err(&e), &mut self.head_out),
        }
    }

    fn reach_origin(&mut self, mut step: OriginStep<'static>) -> Result<Reached, Ending> {
        loop {
            step = match step {
                OriginStep::Reuse => return Ok(Reached::Exchange),
                OriginStep::End(ending) => return Err(ending),
                OriginStep::LookUp(_) => {
                    log::error!("bug: a second lookup was asked for; reset");
                    return Err(Ending::ResetBoth);
                }
                OriginStep::Connect(addr) => {
                    self.upstream = None;
                    self.outbound.consume(usize::MAX);
                    let wait = self.left().max(Duration::from_millis(1));
                    match TcpStream::connect_timeout(&addr, wait) {
                        Ok(stream) => {
                            let _ = stream.set_nodelay(true);
                            let _ =
                                stream.set_write_timeout(Some(std_duration(self.limits.timeout)));
                            self.upstream = Some(stream);
                            return self.connected();
                        }
                        Err(e) => {
                            log::debug!("connect {addr}: {e}");
                            self.engine
                                .on_connect_failed(is_timeout(&e), &mut self.head_out)
                        }
                    }
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
                if self.client.write_all(reply).is_err() {
                    self.fail(Failure::ClientReset)?;
                }
                Ok(Reached::Tunnel)
            }
            Connected::End(ending) => Err(ending),
        }
    }

    fn send_head(&mut self) -> Result<(), Ending> {
        let sent = match self.upstream.as_mut() {
            Some(upstream) => upstream.write_all(&self.request_head).is_ok(),
            None => false,
        };
        match sent {
            true => Ok(()),
            false => self.fail_or_retry(Failure::OriginLost { partial: false }),
        }
    }

    /// Forwards one request and its response.
    fn exchange(&mut self) -> Result<(), Ending> {
        self.send_head()?;
        let body_done = self.engine.request_body().is_none_or(|b| b.is_done());
        // A client that sent `Expect: 100-continue` waits for a go-ahead; give the origin a moment to answer.
        let mut final_head = false;
        if self.engine.expects_continue() && !body_done && self.inbound.is_empty() {
            let wait = std_duration(self.limits.continue_wait);
            final_head = self.response_head(Some(wait))? == Some(false);
        }
        if !final_head {
            self.forward_request_body()?;
            while self.response_head(None)? != Some(false) {}
        }
        self.relay_response_body()?;
        let origin_clean = self.outbound.is_empty() && self.upstream.is_some();
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
    /// in `inbound`.
    fn forward_request_body(&mut self) -> Result<(), Ending> {
        loop {
            if self.engine.request_body().is_none_or(|b| b.is_done()) {
                return Ok(());
            }
            if self.inbound.is_empty() {
                let wait = self.left();
                match Self::read_into(&mut self.client, &mut self.inbound, wait) {
                    Read_::Bytes => {}
                    Read_::TimedOut => {
                        self.timed_out()?;
                        continue;
                    }
                    Read_::Finished { reset: false } => {
                        self.client_done = true;
                        return self.fail(Failure::ClientClosedMidBody).map(|_| ());
                    }
                    Read_::Finished { reset: true } => {
                        return self.fail(Failure::ClientReset).map(|_| ());
                    }
                }
            }
            let Some(body) = self.engine.request_body() else {
                return Ok(());
            };
            let n = match body.advance(self.inbound.bytes()) {
                Ok(n) => n,
                Err(_) => return self.fail(Failure::MalformedRequestBody).map(|_| ()),
            };
            let chunk = self.inbound.bytes().get(..n).unwrap_or(&[]);
            let written = self
                .upstream
                .as_mut()
                .is_some_and(|u| u.write_all(chunk).is_ok());
            if !written {
                return self
                    .fail(Failure::OriginLost { partial: false })
                    .map(|_| ());
            }
            self.inbound.consume(n);
            self.engine.on_progress(self.limits, self.clock.now(), n);
        }
    }

    /// Reads the origin's next response head and sends what the engine writes of it to the client. `wait`
    /// bounds the wait for its first byte (`Ok(None)` when it passes). `Ok(Some(interim))` once a head went.
    fn response_head(&mut self, wait: Option<Duration>) -> Result<Option<bool>, Ending> {
        let mut origin_done = false;
        loop {
            match self.engine.on_response_head(
                self.cx,
                self.outbound.bytes(),
                origin_done,
                &mut self.head_out,
            ) {
                ResponseStep::Head {
                    consumed,
                    len,
                    interim,
                } => {
                    self.outbound.consume(consumed);
                    let head = self.head_out.get(..len).unwrap_or(&[]);
                    if self.client.write_all(head).is_err() {
                        self.fail(Failure::ClientReset)?;
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
            let left = wait.unwrap_or_else(|| self.left());
            let Some(upstream) = self.upstream.as_mut() else {
                origin_done = true;
                continue;
            };
            match Self::read_into(upstream, &mut self.outbound, left) {
                Read_::Bytes => self.engine.on_progress(self.limits, self.clock.now(), 0),
                Read_::Finished { .. } => origin_done = true,
                Read_::TimedOut if wait.is_some() && self.outbound.is_empty() => return Ok(None),
                Read_::TimedOut => self.timed_out()?,
            }
        }
    }

    /// Streams the response body from the origin to the client.
    fn relay_response_body(&mut self) -> Result<(), Ending> {
        loop {
            if self.engine.response_body().is_none_or(|b| b.is_done()) {
                return Ok(());
            }
            if self.outbound.is_empty() {
                let wait = self.left();
                let Some(upstream) = self.upstream.as_mut() else {
                    return Err(Ending::ResetBoth);
                };
                match Self::read_into(upstream, &mut self.outbound, wait) {
                    Read_::Bytes => {}
                    Read_::TimedOut => {
                        self.timed_out()?;
                        continue;
                    }
                    Read_::Finished { reset } => {
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
            let n = match body.advance(self.outbound.bytes()) {
                Ok(n) => n,
                Err(_) => return self.fail(Failure::MalformedResponseBody).map(|_| ()),
            };
            let chunk = self.outbound.bytes().get(..n).unwrap_or(&[]);
            if self.client.write_all(chunk).is_err() {
                return self.fail(Failure::ClientReset).map(|_| ());
            }
            self.outbound.consume(n);
            self.engine.on_progress(self.limits, self.clock.now(), n);
        }
    }

    /// Copies bytes both ways until both sides have closed (or one stays idle past the tunnel's limit).
    fn tunnel(&mut self) -> Ending {
        let Some(mut origin) = self.upstream.take() else {
            return Ending::ResetBoth;
        };
        // Bytes the client sent right behind its head (a TLS ClientHello) go first.
        if origin.write_all(self.inbound.bytes()).is_err() {
            return self.engine.on_tunnel_closed();
        }
        self.inbound.consume(usize::MAX);
        let idle = std_duration(self.limits.tunnel_idle);
        for stream in [&self.client, &origin] {
            let _ = stream.set_read_timeout(Some(idle));
            let _ = stream.set_write_timeout(Some(idle));
        }
        let (Ok(mut origin_in), Ok(mut client_out)) = (origin.try_clone(), self.client.try_clone())
        else {
            return Ending::ResetBoth;
        };
        let mut back = std::mem::replace(&mut self.outbound, Pending::new(0));
        let mut forth = std::mem::replace(&mut self.inbound, Pending::new(0));
        let client_in = &mut self.client;
        let moved = std::thread::scope(|scope| {
            let back = scope
                .spawn(move || copy_until_closed(&mut origin_in, &mut client_out, &mut back.buf));
            copy_until_closed(client_in, &mut origin, &mut forth.buf) + back.join().unwrap_or(0)
        });
        self.engine
            .on_progress(self.limits, self.clock.now(), moved);
        self.engine.on_tunnel_closed()
    }

    /// Carries out `ending`, then the thread's connections close.
    fn end(mut self, ending: Ending) {
        match ending {
            Ending::Answer { len } => {
                let page = self.head_out.get(..len).unwrap_or(&[]);
                let _ = self.client.write_all(page);
                self.drain();
            }
            Ending::Close => self.drain(),
            Ending::ResetClient => {
                let _ = sys::reset_on_close(&self.client);
            }
            Ending::ResetBoth => {
                let _ = sys::reset_on_close(&self.client);
                if let Some(upstream) = &self.upstream {
                    let _ = sys::reset_on_close(upstream);
                }
            }
        }
    }

    /// Closes the sending side, then reads and drops what the client still sends for the drain time, so the
    /// close does not turn into a reset that destroys the answer before it is read.
    fn drain(&mut self) {
        let _ = self.client.shutdown(Shutdown::Write);
        let deadline = self.clock.now() + self.limits.drain;
        let mut sink = [0u8; 1024];
        loop {
            let left = self.clock.until(deadline);
            if left.is_zero() {
                return;
            }
            let _ = self.client.set_read_timeout(Some(left));
            match self.client.read(&mut sink) {
                Ok(1..) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                _ => return,
            }
        }
    }
}
