//! [`Connection`]: one client of the event loop. Its [`ProxyConnection`] decides; this moves bytes between two
//! non-blocking sockets and reports what happened:
//!
//! ```text
//!  Serving(ProxyConnection) ──Ending──▶ Answering (a page) ──▶ Draining (read and drop) ──▶ closed
//!          (admitted)          └──────── FIN ───────────────▶ Draining
//!                              └──────── resets ────────────────────────────────────────▶ closed
//!  refused at the accept ──▶ Answering
//! ```
//!
//! A client costs its socket and the bytes in flight: heads accumulate per connection (at most the head limit),
//! bodies move through one scratch buffer, and only what a socket would not take at once is kept. A socket is
//! read only when what was read from it before has gone on, so a slow reader slows its writer down through TCP's
//! flow control. A long counted response body goes origin → pipe → client with `splice`.

use std::io::{self, Read};
use std::net::{IpAddr, Shutdown, SocketAddr};

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use smoltalk_core::proxy::engine::{
    AfterResponse, Connected, Ending, Failure, HeadStep, OriginStep, Phase, ProxyConnection,
    Recovery, ResponsePhase, ResponseStep,
};
use smoltcp::time::Instant;

use super::io::{is_idle, pump, Outgoing, Pumped, SplicePipe};
use super::Env;
use crate::sys;

/// A counted response body longer than this goes from socket to socket through a pipe with `splice`, never
/// copied into the proxy.
const SPLICE_MIN: usize = 64 * 1024;

/// What a lookup thread found for a connection: its addresses, or why it failed.
pub(super) type LookupResult = Result<Vec<IpAddr>, String>;

/// An origin connection.
struct Upstream {
    stream: TcpStream,
    connected: bool,
    /// The origin has closed its side (or a response showed the connection cannot be reused).
    eof: bool,
}

/// Where a client connection is, around its engine.
enum Stage {
    /// The engine drives it (boxed: refused and closing connections, often the many, stay small).
    Serving(Box<ProxyConnection>),
    /// The proxy's own answer is going out; then its sending side closes.
    Answering { deadline: Instant },
    /// Our side is closed; what the client still sends is read and dropped until it closes too.
    Draining { deadline: Instant },
}

/// How a step went.
enum Flow {
    /// Whether anything moved (then another step may).
    Moved(bool),
    /// The connection ends so.
    End(Ending),
    /// Closed: the loop drops it.
    Done,
}

/// One client connection: its stage, its sockets, and what is in flight between them.
pub(super) struct Connection {
    pub client: TcpStream,
    /// Answered at the accept (403, 503): not counted against the cap.
    pub refused: bool,
    pub generation: u64,
    slot: usize,
    stage: Stage,
    io: Streams,
}

/// Everything a connection moves bytes with.
struct Streams {
    /// Client bytes not used yet (a head arriving, or the next pipelined request).
    inbound: Vec<u8>,
    client_eof: bool,
    /// Origin bytes not used yet (a response head arriving).
    outbound: Vec<u8>,
    to_client: Outgoing,
    to_origin: Outgoing,
    /// The request head for the origin, kept to send again on a retry.
    request_head: Vec<u8>,
    /// Whether the request head has gone to the origin whole (its response can only follow it).
    head_sent: bool,
    upstream: Option<Upstream>,
    /// A lookup's answer, handed over by the loop.
    lookup: Option<LookupResult>,
    /// The pipe a long response body is spliced through, while it is.
    pipe: Option<SplicePipe>,
}

impl Connection {
    /// An admitted client, or (`page`) one refused at the accept whose answer goes out first.
    pub fn new(
        client: TcpStream,
        slot: usize,
        generation: u64,
        engine: Result<ProxyConnection, (&[u8], Instant)>,
    ) -> Connection {
        let mut io = Streams {
            inbound: Vec::new(),
            client_eof: false,
            outbound: Vec::new(),
            to_client: Outgoing::default(),
            to_origin: Outgoing::default(),
            request_head: Vec::new(),
            head_sent: false,
            upstream: None,
            lookup: None,
            pipe: None,
        };
        let (stage, refused) = match engine {
            Ok(engine) => (Stage::Serving(Box::new(engine)), false),
            Err((page, deadline)) => {
                io.to_client.push(page);
                (Stage::Answering { deadline }, true)
            }
        };
        Connection {
            client,
            refused,
            generation,
            slot,
            stage,
            io,
        }
    }

    /// When the loop must drive this connection even without an event.
    pub fn deadline(&self) -> Option<Instant> {
        match &self.stage {
            Stage::Serving(engine) => engine.deadline(),
            Stage::Answering { deadline } | Stage::Draining { deadline } => Some(*deadline),
        }
    }

    /// Whether the connection waits for a lookup (the loop hands answers only to those).
    pub fn is_resolving(&self) -> bool {
        matches!(&self.stage, Stage::Serving(e) if e.phase() == Phase::Resolving)
    }

    /// A lookup's answer arrived.
    pub fn resolved(&mut self, result: LookupResult) {
        self.io.lookup = Some(result);
    }

    /// Removes the connection's sockets from the loop (before it is dropped).
    pub fn deregister(&mut self, registry: &Registry) {
        let _ = registry.deregister(&mut self.client);
        if let Some(upstream) = self.io.upstream.as_mut() {
            let _ = registry.deregister(&mut upstream.stream);
        }
    }

    /// Moves the connection as far as it goes. Returns whether it is still open.
    pub fn drive(&mut self, env: &mut Env<'_>, registry: &Registry) -> bool {
        for _ in 0..64 {
            let flow = match &mut self.stage {
                Stage::Serving(engine) => {
                    let mut step = Step {
                        engine,
                        io: &mut self.io,
                        client: &mut self.client,
                        env: &mut *env,
                        registry,
                        slot: self.slot,
                        generation: self.generation,
                    };
                    step.run()
                }
                Stage::Answering { deadline } => {
                    let deadline = *deadline;
                    self.answering(deadline, env)
                }
                Stage::Draining { deadline } => {
                    let deadline = *deadline;
                    self.draining(deadline, env)
                }
            };
            match flow {
                Flow::Moved(true) => continue,
                Flow::Moved(false) => return true,
                Flow::Done => return false,
                Flow::End(ending) => {
                    if !self.end(ending, env, registry) {
                        return false;
                    }
                }
            }
        }
        true
    }

    /// Carries out `ending`. Returns whether the connection stays open (to send or drain).
    fn end(&mut self, ending: Ending, env: &mut Env<'_>, registry: &Registry) -> bool {
        let now = env.clock.now();
        let mut upstream = self.io.upstream.take();
        if let Some(upstream) = upstream.as_mut() {
            let _ = registry.deregister(&mut upstream.stream);
            if ending == Ending::ResetBoth {
                let _ = sys::reset_on_close(&upstream.stream);
            }
        }
        // Dropped: closed with a FIN behind what it was sent, or reset as set above.
        drop(upstream);
        self.io.pipe = None;
        match ending {
            Ending::Answer { len } => {
                self.io.to_client.clear();
                self.io
                    .to_client
                    .push(env.head_out.get(..len).unwrap_or(&[]));
                self.stage = Stage::Answering {
                    deadline: now + env.limits.linger,
                };
                true
            }
            Ending::Close => {
                // What is queued for the client still goes out, then its sending side closes.
                self.stage = Stage::Answering {
                    deadline: now + env.limits.linger,
                };
                true
            }
            Ending::ResetClient | Ending::ResetBoth => {
                let _ = sys::reset_on_close(&self.client);
                false
            }
        }
    }

    fn answering(&mut self, deadline: Instant, env: &mut Env<'_>) -> Flow {
        let moved = match self.io.to_client.flush(&mut self.client, env.limits.head) {
            Ok(moved) => moved,
            Err(_) => return Flow::Done,
        };
        if self.io.to_client.is_empty() {
            let _ = self.client.shutdown(Shutdown::Write);
            self.stage = Stage::Draining {
                deadline: env.clock.now() + env.limits.drain,
            };
            return Flow::Moved(true);
        }
        if env.clock.now() >= deadline {
            // A client that never reads its answer is given up.
            return Flow::Done;
        }
        Flow::Moved(moved)
    }

    fn draining(&mut self, deadline: Instant, env: &mut Env<'_>) -> Flow {
        loop {
            match self.client.read(env.scratch) {
                Ok(0) => return Flow::Done,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Flow::Done,
            }
        }
        match env.clock.now() >= deadline {
            true => Flow::Done,
            false => Flow::Moved(false),
        }
    }
}

/// A serving connection's parts, borrowed for one step of its engine.
struct Step<'s, 'e> {
    engine: &'s mut ProxyConnection,
    io: &'s mut Streams,
    client: &'s mut TcpStream,
    env: &'s mut Env<'e>,
    registry: &'s Registry,
    slot: usize,
    generation: u64,
}

impl Step<'_, '_> {
    fn run(&mut self) -> Flow {
        match self.engine.phase() {
            Phase::ReadingHead => self.read_head(),
            Phase::Resolving => self.resolving(),
            Phase::Connecting => self.connecting(),
            Phase::Exchanging(phase) => self.exchanging(phase),
            Phase::Tunnel => self.tunnel(),
            Phase::Closed => {
                log::error!("bug: a closed proxy connection was still being served; reset");
                Flow::End(Ending::ResetBoth)
            }
        }
    }

    fn recover(&mut self, failure: Failure) -> Flow {
        match self.engine.on_failure(failure, self.env.head_out) {
            Recovery::End(ending) => Flow::End(ending),
            Recovery::Retry(addr) => self.follow(OriginStep::Connect(addr)),
        }
    }

    /// Reads from the client into `inbound` (at most `limit` bytes in all). `Ok(true)` if bytes came.
    fn read_client(&mut self, limit: usize) -> Result<bool, Failure> {
        let mut moved = false;
        while !self.io.client_eof && self.io.inbound.len() < limit {
            let want = (limit - self.io.inbound.len()).min(self.env.scratch.len());
            match self.client.read(&mut self.env.scratch[..want]) {
                Ok(0) => {
                    self.io.client_eof = true;
                    moved = true;
                }
                Ok(n) => {
                    self.io.inbound.extend_from_slice(&self.env.scratch[..n]);
                    moved = true;
                }
                Err(e) => match e.kind() {
                    io::ErrorKind::WouldBlock => break,
                    io::ErrorKind::Interrupted => {}
                    _ => return Err(Failure::ClientReset),
                },
            }
        }
        Ok(moved)
    }

    fn read_head(&mut self) -> Flow {
        if self
            .io
            .to_client
            .flush(self.client, self.env.limits.head)
            .is_err()
        {
            return self.recover(Failure::ClientReset);
        }
        let idle = self
            .io
            .upstream
            .as_ref()
            .is_some_and(|u| u.connected && !u.eof && is_idle(&u.stream));
        let cx = self.env.cx;
        let now = self.env.clock.now();
        let step = self.engine.on_client_head(
            &cx,
            &self.io.inbound,
            self.io.client_eof,
            idle,
            now,
            self.env.head_out,
        );
        let (consumed, head_len, next) = match step {
            HeadStep::Forward {
                consumed,
                head_len,
                next,
            } => (consumed, head_len, next),
            HeadStep::End(ending) => return Flow::End(ending),
            HeadStep::NeedMore => {
                return match self.read_client(self.env.limits.head) {
                    // Parse what came (a whole request may have come with the client's FIN) before judging.
                    Ok(moved) => Flow::Moved(moved),
                    Err(failure) => self.recover(failure),
                };
            }
        };
        self.io.inbound.drain(..consumed.min(self.io.inbound.len()));
        self.io.request_head.clear();
        self.io
            .request_head
            .extend_from_slice(self.env.head_out.get(..head_len).unwrap_or(&[]));
        let next = match next {
            OriginStep::LookUp(name) => {
                let name = name.to_owned();
                self.io.lookup = None;
                self.drop_upstream();
                self.env.resolver.look_up(self.slot, self.generation, name);
                return Flow::Moved(true);
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
                    Err(e) => {
                        log::debug!("connect {addr}: {e}");
                        self.engine.on_connect_failed(false, self.env.head_out)
                    }
                },
                OriginStep::Reuse => {
                    self.begin_exchange();
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

    fn drop_upstream(&mut self) {
        if let Some(mut upstream) = self.io.upstream.take() {
            let _ = self.registry.deregister(&mut upstream.stream);
        }
        self.io.pipe = None;
    }

    /// Starts a non-blocking connection to `addr` (closing any other origin connection).
    fn connect(&mut self, addr: SocketAddr) -> io::Result<()> {
        self.drop_upstream();
        let mut stream = TcpStream::connect(addr)?;
        let token = Token(3 + 2 * self.slot);
        self.registry
            .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)?;
        self.io.upstream = Some(Upstream {
            stream,
            connected: false,
            eof: false,
        });
        Ok(())
    }

    /// The request head goes to the origin (again, on a retry); its response is read from scratch.
    fn begin_exchange(&mut self) {
        self.io.to_origin.clear();
        let head = std::mem::take(&mut self.io.request_head);
        self.io.to_origin.push(&head);
        self.io.request_head = head;
        self.io.head_sent = false;
        self.io.outbound.clear();
    }

    fn resolving(&mut self) -> Flow {
        let Some(result) = self.io.lookup.take() else {
            return match self
                .engine
                .on_timeout(self.env.clock.now(), self.env.head_out)
            {
                Some(ending) => Flow::End(ending),
                None => Flow::Moved(false),
            };
        };
        let cx = self.env.cx;
        let step = match &result {
            Ok(addresses) => self
                .engine
                .on_resolved(&cx, Ok(addresses), self.env.head_out),
            Err(why) => self.engine.on_resolved(&cx, Err(why), self.env.head_out),
        };
        self.follow(step)
    }

    fn connecting(&mut self) -> Flow {
        let Some(upstream) = self.io.upstream.as_mut() else {
            log::error!("bug: a proxy connection connects without a socket; reset");
            return Flow::End(Ending::ResetBoth);
        };
        let failed = match upstream.stream.take_error() {
            Ok(Some(e)) | Err(e) => Some(e),
            Ok(None) => match upstream.stream.peer_addr() {
                Ok(_) => None,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => {
                    return match self
                        .engine
                        .on_timeout(self.env.clock.now(), self.env.head_out)
                    {
                        Some(ending) => Flow::End(ending),
                        None => Flow::Moved(false),
                    };
                }
                Err(e) => Some(e),
            },
        };
        if let Some(e) = failed {
            log::debug!("connect: {e}");
            self.drop_upstream();
            let step = self.engine.on_connect_failed(false, self.env.head_out);
            return self.follow(step);
        }
        upstream.connected = true;
        let _ = upstream.stream.set_nodelay(true);
        let cx = self.env.cx;
        match self
            .engine
            .on_connected(&cx, self.env.clock.now(), self.env.head_out)
        {
            Connected::Exchange => self.begin_exchange(),
            Connected::Tunnel { len } => {
                self.io
                    .to_client
                    .push(self.env.head_out.get(..len).unwrap_or(&[]));
                // Bytes the client sent right behind its head (a TLS ClientHello) go first.
                let early = std::mem::take(&mut self.io.inbound);
                self.io.to_origin.clear();
                self.io.to_origin.push(&early);
            }
            Connected::End(ending) => return Flow::End(ending),
        }
        Flow::Moved(true)
    }

    fn exchanging(&mut self, phase: ResponsePhase) -> Flow {
        let keep = self.env.limits.head;
        let mut moved = false;
        let mut body_bytes = 0;
        // 1. What is queued for the origin: the head, then body bytes.
        let Some(upstream) = self.io.upstream.as_mut() else {
            log::error!("bug: a proxy connection exchanges without an origin socket; reset");
            return Flow::End(Ending::ResetBoth);
        };
        match self.io.to_origin.flush(&mut upstream.stream, keep) {
            Ok(m) => moved |= m,
            Err(_) => {
                let partial = !self.io.outbound.is_empty();
                return self.recover(Failure::OriginLost { partial });
            }
        }
        self.io.head_sent |= self.io.to_origin.is_empty();
        // 2. The request body, client to origin, never past its end.
        if self.io.head_sent {
            match self.forward_request_body() {
                Ok(n) => body_bytes += n,
                Err(failure) => return self.recover(failure),
            }
        }
        // 3. The response, origin to client.
        match phase {
            ResponsePhase::Head => match self.response_head() {
                Flow::Moved(m) => moved |= m,
                other => return other,
            },
            ResponsePhase::Body => match self.response_body(&mut body_bytes) {
                Flow::Moved(m) => moved |= m,
                other => return other,
            },
            ResponsePhase::Complete => {}
        }
        match self.io.to_client.flush(self.client, keep) {
            Ok(m) => moved |= m,
            Err(_) => return self.recover(Failure::ClientReset),
        }
        if phase == ResponsePhase::Complete
            && self.io.to_client.is_empty()
            && self.io.pipe.is_none()
        {
            let origin_clean =
                self.io.outbound.is_empty() && self.io.upstream.as_ref().is_some_and(|u| !u.eof);
            let cx = self.env.cx;
            return match self
                .engine
                .on_response_sent(&cx, origin_clean, self.env.clock.now())
            {
                AfterResponse::NextRequest { keep_origin } => {
                    if !keep_origin {
                        self.drop_upstream();
                    }
                    Flow::Moved(true)
                }
                AfterResponse::End(ending) => Flow::End(ending),
            };
        }
        self.progress(moved || body_bytes > 0, body_bytes)
    }

    /// Reports progress, or (nothing moved) a client reset nothing else would notice, or the deadline.
    fn progress(&mut self, moved: bool, body_bytes: usize) -> Flow {
        if moved {
            self.engine
                .on_progress(self.env.limits, self.env.clock.now(), body_bytes);
            return Flow::Moved(true);
        }
        if let Ok(Some(_)) = self.client.take_error() {
            // The client reset while the proxy was not reading it (the origin takes the body slower than it
            // comes): nothing else would notice until the timeout.
            return self.recover(Failure::ClientReset);
        }
        match self
            .engine
            .on_timeout(self.env.clock.now(), self.env.head_out)
        {
            Some(ending) => Flow::End(ending),
            None => Flow::Moved(false),
        }
    }

    /// Moves request body bytes from the client to the origin while the origin takes them. Returns how many.
    fn forward_request_body(&mut self) -> Result<usize, Failure> {
        let keep = self.env.limits.head;
        let mut moved = 0;
        let Some(upstream) = self.io.upstream.as_mut() else {
            return Ok(0);
        };
        let Some(body) = self.engine.request_body() else {
            return Ok(0);
        };
        while !body.is_done() && self.io.to_origin.is_empty() {
            if self.io.inbound.is_empty() {
                if self.io.client_eof {
                    return Err(Failure::ClientClosedMidBody);
                }
                let want = body.limit().min(self.env.scratch.len());
                match self.client.read(&mut self.env.scratch[..want]) {
                    Ok(0) => {
                        self.io.client_eof = true;
                        return Err(Failure::ClientClosedMidBody);
                    }
                    Ok(n) => self.io.inbound.extend_from_slice(&self.env.scratch[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => return Err(Failure::ClientReset),
                }
            }
            let n = body
                .advance(&self.io.inbound)
                .map_err(|_| Failure::MalformedRequestBody)?;
            self.io.to_origin.push(&self.io.inbound[..n]);
            self.io.inbound.drain(..n);
            moved += n;
            if self.io.to_origin.flush(&mut upstream.stream, keep).is_err() {
                return Err(Failure::OriginLost { partial: true });
            }
        }
        Ok(moved)
    }

    /// Reads the origin's head bytes and hands them to the engine; queues each head it writes for the client.
    fn response_head(&mut self) -> Flow {
        // The origin cannot answer a head it has not had whole. After that, its answer is read even while the
        // body is still on its way (an early 413 must not wait behind the upload).
        if !self.io.head_sent && self.io.outbound.is_empty() {
            return Flow::Moved(false);
        }
        let mut moved = false;
        loop {
            let (came, origin_done) = match self.read_origin_head() {
                Ok(came) => (came, false),
                Err(()) => (false, true),
            };
            moved |= came;
            let cx = self.env.cx;
            match self.engine.on_response_head(
                &cx,
                &self.io.outbound,
                origin_done,
                self.env.head_out,
            ) {
                ResponseStep::NeedMore if came => continue,
                ResponseStep::NeedMore => return Flow::Moved(moved),
                ResponseStep::Head {
                    consumed,
                    len,
                    interim,
                } => {
                    self.io
                        .outbound
                        .drain(..consumed.min(self.io.outbound.len()));
                    self.io
                        .to_client
                        .push(self.env.head_out.get(..len).unwrap_or(&[]));
                    if !interim && self.io.outbound.is_empty() {
                        return Flow::Moved(true);
                    }
                    if !interim {
                        return Flow::Moved(true);
                    }
                    moved = true;
                }
                ResponseStep::Retry(addr) => return self.follow(OriginStep::Connect(addr)),
                ResponseStep::End(ending) => return Flow::End(ending),
            }
        }
    }

    /// Reads origin bytes into `outbound` (at most a head's worth in all). `Ok(true)` if bytes came; `Err` if the
    /// origin closed or reset.
    fn read_origin_head(&mut self) -> Result<bool, ()> {
        let Some(upstream) = self.io.upstream.as_mut() else {
            return Err(());
        };
        if upstream.eof {
            return Err(());
        }
        let limit = self.env.limits.head;
        if self.io.outbound.len() >= limit {
            return Ok(false);
        }
        let want = (limit - self.io.outbound.len()).clamp(1, self.env.scratch.len());
        match upstream.stream.read(&mut self.env.scratch[..want]) {
            Ok(0) => {
                upstream.eof = true;
                Err(())
            }
            Ok(n) => {
                self.io.outbound.extend_from_slice(&self.env.scratch[..n]);
                Ok(true)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                Ok(false)
            }
            Err(_) => {
                upstream.eof = true;
                Err(())
            }
        }
    }

    /// Moves response body bytes from the origin to the client (through a pipe for long counted bodies).
    fn response_body(&mut self, body_bytes: &mut usize) -> Flow {
        let keep = self.env.limits.head;
        let mut moved = false;
        loop {
            if !self.io.to_client.is_empty() {
                match self.io.to_client.flush(self.client, keep) {
                    Ok(m) => moved |= m,
                    Err(_) => return self.recover(Failure::ClientReset),
                }
                if !self.io.to_client.is_empty() {
                    return Flow::Moved(moved);
                }
            }
            let Some(body) = self.engine.response_body() else {
                return Flow::Moved(moved);
            };
            if body.is_done() && self.io.pipe.is_none() {
                return Flow::Moved(moved);
            }
            let spliced = self.io.pipe.is_some()
                || (body.is_counted() && body.limit() > SPLICE_MIN && self.io.outbound.is_empty());
            if spliced {
                match self.splice_body(body_bytes) {
                    Some(Ok(m)) => {
                        moved |= m;
                        if m {
                            continue;
                        }
                        return Flow::Moved(moved);
                    }
                    Some(Err(flow)) => return flow,
                    // No pipe to be had: the bytes are copied below instead.
                    None => {}
                }
            }
            match self.copy_body(body_bytes) {
                Ok(true) => moved = true,
                Ok(false) => return Flow::Moved(moved),
                Err(flow) => return flow,
            }
        }
    }

    /// One read of the origin (or the head's leftover bytes) passed to the client. `Ok(false)`: nothing to
    /// read now.
    fn copy_body(&mut self, body_bytes: &mut usize) -> Result<bool, Flow> {
        let from_head = !self.io.outbound.is_empty();
        let len = if from_head {
            self.io.outbound.len()
        } else {
            let Some(limit) = self.engine.response_body().map(|b| b.limit()) else {
                return Ok(false);
            };
            let Some(upstream) = self.io.upstream.as_mut() else {
                return Err(Flow::End(Ending::ResetBoth));
            };
            let want = limit.min(self.env.scratch.len());
            match upstream.stream.read(&mut self.env.scratch[..want]) {
                Ok(0) => {
                    upstream.eof = true;
                    return match self.engine.on_origin_finished(false) {
                        Some(ending) => Err(Flow::End(ending)),
                        None => Ok(true),
                    };
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(true),
                Err(_) => {
                    upstream.eof = true;
                    return match self.engine.on_origin_finished(true) {
                        Some(ending) => Err(Flow::End(ending)),
                        None => Ok(true),
                    };
                }
            }
        };
        let bytes = match from_head {
            true => &self.io.outbound[..len],
            false => &self.env.scratch[..len],
        };
        let Some(body) = self.engine.response_body() else {
            return Ok(false);
        };
        let n = match body.advance(bytes) {
            Ok(n) => n,
            Err(_) => return Err(self.recover(Failure::MalformedResponseBody)),
        };
        self.io.to_client.push(&bytes[..n]);
        *body_bytes += n;
        if n < len {
            // Bytes past the response: the origin connection cannot carry another request.
            if let Some(upstream) = self.io.upstream.as_mut() {
                upstream.eof = true;
            }
        }
        if from_head {
            self.io.outbound.clear();
        }
        Ok(true)
    }

    /// Moves body bytes origin → pipe → client. `None` if no pipe can be made (the caller copies instead);
    /// `Some(Ok(moved))` otherwise. The pipe is dropped once the body has gone through it.
    fn splice_body(&mut self, body_bytes: &mut usize) -> Option<Result<bool, Flow>> {
        if self.io.pipe.is_none() {
            match SplicePipe::new() {
                Ok(pipe) => self.io.pipe = Some(pipe),
                Err(e) => {
                    log::debug!("no pipe for splice ({e}); copying");
                    return None;
                }
            }
        }
        let mut moved = false;
        loop {
            let (Some(pipe), Some(upstream)) = (self.io.pipe.as_mut(), self.io.upstream.as_mut())
            else {
                return Some(Ok(moved));
            };
            if pipe.held > 0 {
                match pipe.drain(self.client) {
                    Ok(n) => moved |= n > 0,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Some(Ok(moved)),
                    Err(_) => return Some(Err(self.recover(Failure::ClientReset))),
                }
                if pipe.held > 0 {
                    continue;
                }
            }
            let Some(body) = self.engine.response_body() else {
                return Some(Ok(moved));
            };
            if body.is_done() {
                self.io.pipe = None;
                return Some(Ok(true));
            }
            match pipe.fill(&upstream.stream, body.limit()) {
                Ok(0) => {
                    upstream.eof = true;
                    if let Some(ending) = self.engine.on_origin_finished(false) {
                        return Some(Err(Flow::End(ending)));
                    }
                }
                Ok(n) => {
                    body.advance_unseen(n);
                    *body_bytes += n;
                    moved = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Some(Ok(moved)),
                Err(_) => {
                    upstream.eof = true;
                    if let Some(ending) = self.engine.on_origin_finished(true) {
                        return Some(Err(Flow::End(ending)));
                    }
                }
            }
        }
    }

    fn tunnel(&mut self) -> Flow {
        let keep = self.env.limits.head;
        let Some(upstream) = self.io.upstream.as_mut() else {
            log::error!("bug: a tunnel without an origin socket; reset");
            return Flow::End(Ending::ResetBoth);
        };
        let mut moved = false;
        let flushed = (
            self.io.to_client.flush(self.client, keep),
            self.io.to_origin.flush(&mut upstream.stream, keep),
        );
        match flushed {
            (Ok(a), Ok(b)) => moved |= a || b,
            _ => return self.recover(Failure::TunnelPeerReset),
        }
        let scratch = &mut *self.env.scratch;
        let forth = pump(
            self.client,
            &mut self.io.client_eof,
            &mut upstream.stream,
            &mut self.io.to_origin,
            scratch,
        );
        let back = pump(
            &mut upstream.stream,
            &mut upstream.eof,
            self.client,
            &mut self.io.to_client,
            scratch,
        );
        match (forth, back) {
            (Pumped::Moved(a), Pumped::Moved(b)) => moved |= a || b,
            _ => return self.recover(Failure::TunnelPeerReset),
        }
        if self.io.client_eof
            && upstream.eof
            && self.io.to_client.is_empty()
            && self.io.to_origin.is_empty()
        {
            return Flow::End(self.engine.on_tunnel_closed());
        }
        self.progress(moved, 0)
    }
}
