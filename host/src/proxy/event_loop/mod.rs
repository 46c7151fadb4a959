//! The HTTP forward proxy on the kernel's stack: one event loop over non-blocking sockets (epoll, through
//! `mio`), every client a [`Connection`] state machine, the same protocol as the smoltcp proxy.
//!
//! ```text
//!  ReadingHead ──head──▶ Resolving ──addresses──▶ Connecting ──connected──▶ Exchanging ──response whole──┐
//!     ▲   │ (a name in --resolve or a literal skips Resolving; a kept origin connection skips Connecting)   │
//!     │   │                                              CONNECT: Tunnel ◀────┘                          │
//!     │   └─▶ Answering (an error page) ─▶ Draining (read what the client still sends) ─▶ closed          │
//!     └──────────────────────────────────────── keep-alive ◀──────────────────────────────────────────────┘
//! ```
//!
//! The classic lab design, one thread per client ([`crate::proxy::threads`], `--thread-per-client`), is kept
//! for comparison: with a few hundred clients its threads cost more memory and their scheduling a long latency
//! tail (BENCHMARKS.md). Here a client costs its socket and the bytes it has in flight: heads are accumulated
//! per connection (at most [`HEAD_BUFFER`]), bodies move through one scratch buffer, and only what a socket
//! would not take at once is kept. A socket is read only when what was read from it before has gone on, so a
//! slow reader slows its writer down through TCP's flow control, as in the smoltcp proxy.
//!
//! Names that are neither literals nor `--resolve` entries are looked up by the system's resolver on a thread
//! of their own, so a slow DNS server stalls only the request that needs it. Parsing, rewriting, framing, the
//! error pages and the policy are the core's ([`smoltalk_core::http`], [`ProxyPolicy`]).

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, ToSocketAddrs};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use smoltalk_core::http::body::BodyTracker;
use smoltalk_core::http::request::Method;
use smoltalk_core::http::rewrite::{client_response, tunnel_established, upstream_request};
use smoltalk_core::http::{
    BodyFraming, HeadWriter, ProxyError, RequestHead, ResponseHead, MAX_HEADERS,
};
use smoltalk_core::proxy::ProxyPolicy;

use crate::uppercase::kernel::KernelError;

/// The largest request or response head the proxy takes (longer: 414/431 or 502).
pub const HEAD_BUFFER: usize = 8 * 1024;

/// Bodies move through a scratch buffer this big (one for the whole loop).
const SCRATCH: usize = 64 * 1024;

/// A counted response body (a length, or until close) longer than this goes from socket to socket through a
/// pipe with `splice`, never copied into the proxy.
const SPLICE_MIN: usize = 64 * 1024;

/// The pipe `splice` uses holds this much (asked for; the kernel may give less).
const PIPE_SIZE: libc::c_int = 1 << 20;

/// A tunnel with no byte either way for this long is closed.
const TUNNEL_IDLE: Duration = Duration::from_secs(300);

/// How long a refused or answered client may keep sending before the proxy closes (so closing with unread
/// bytes does not reset the connection and destroy the answer before it is read).
const DRAIN: Duration = Duration::from_millis(500);

/// Connections the kernel may hold ready for `accept` (capped by `net.core.somaxconn`).
const LISTEN_BACKLOG: libc::c_int = 4096;

/// Refused clients answered at once, beyond `--max-connections` (more are closed without a word). A refusal
/// costs a descriptor and a few hundred bytes for at most [`DRAIN`], so a burst of a thousand clients over the
/// cap all get their 503.
const REFUSALS: usize = 2048;

/// The loop wakes at least this often to enforce deadlines.
const SWEEP: Duration = Duration::from_millis(100);

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);

/// The proxy's rules and limits.
#[derive(Debug)]
pub struct ProxyRules {
    /// Who may connect, where to, which CONNECT ports, static names, and the `Via` pseudonym.
    pub policy: ProxyPolicy<'static>,
    /// The most client connections served at once (more are answered 503).
    pub max_connections: usize,
    /// How long a client has to send a head, an origin to accept or answer, before 408 or 504.
    pub timeout: Duration,
    /// Whether names outside `--resolve` are looked up with the system's resolver (`--no-dns` turns it off:
    /// such names are 502 without a query leaving the machine).
    pub system_dns: bool,
}

/// The kernel-stack proxy: a listening socket and its rules.
pub struct KernelProxy {
    listener: TcpListener,
    own: SocketAddr,
    rules: ProxyRules,
}

impl KernelProxy {
    /// Binds `addr`.
    pub fn bind(addr: SocketAddr, rules: ProxyRules) -> Result<KernelProxy, KernelError> {
        let listener = std::net::TcpListener::bind(addr)
            .map_err(|e| crate::uppercase::kernel::bind_error("TCP", addr, e))?;
        // std listens with a backlog of 128: a burst of connections overflows it and each dropped SYN costs
        // its client a one-second retransmission. Listening again raises it.
        // SAFETY: `listen` on a descriptor we own; it has no memory preconditions.
        unsafe { libc::listen(std::os::fd::AsRawFd::as_raw_fd(&listener), LISTEN_BACKLOG) };
        listener.set_nonblocking(true).map_err(|e| {
            KernelError(format!(
                "cannot make the listening socket non-blocking: {e}"
            ))
        })?;
        let own = listener
            .local_addr()
            .map_err(|e| KernelError(format!("cannot read the bound address: {e}")))?;
        Ok(KernelProxy {
            listener: TcpListener::from_std(listener),
            own,
            rules,
        })
    }

    /// The address the proxy listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.own
    }

    /// Serves clients until the event loop fails.
    pub fn serve(self) -> Result<(), KernelError> {
        raise_descriptor_limit(self.rules.max_connections);
        let fail = |what: &str, e: io::Error| KernelError(format!("{what}: {e}"));
        let poll = Poll::new().map_err(|e| fail("cannot create the event loop", e))?;
        let waker = Arc::new(
            Waker::new(poll.registry(), WAKER).map_err(|e| fail("cannot create a waker", e))?,
        );
        let mut listener = self.listener;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)
            .map_err(|e| fail("cannot watch the listening socket", e))?;
        let (resolved_tx, resolved) = channel();
        let mut event_loop = EventLoop {
            poll,
            listener,
            ctx: Context {
                rules: self.rules,
                own: self.own,
                scratch: vec![0; SCRATCH].into_boxed_slice(),
                head_out: vec![0; HEAD_BUFFER + 1024].into_boxed_slice(),
                resolver: Resolver {
                    tx: resolved_tx,
                    waker,
                },
                now: Instant::now(),
            },
            connections: Vec::new(),
            free: Vec::new(),
            serving: 0,
            refusing: 0,
            accept_blocked: false,
            resolved,
            next_generation: 0,
        };
        event_loop
            .run()
            .map_err(|e| fail("the event loop failed", e))
    }
}

/// What every connection may use while it is driven.
struct Context {
    rules: ProxyRules,
    own: SocketAddr,
    /// Body bytes pass through here on their way from one socket to the other.
    scratch: Box<[u8]>,
    /// Heads the proxy writes are built here before they are queued.
    head_out: Box<[u8]>,
    resolver: Resolver,
    now: Instant,
}

/// Looks names up on threads of their own and hands the answers back to the loop.
struct Resolver {
    tx: Sender<Resolved>,
    waker: Arc<Waker>,
}

/// A lookup's answer for connection `slot` (if it still has `generation`).
struct Resolved {
    slot: usize,
    generation: u64,
    addrs: Result<Vec<SocketAddr>, ProxyError>,
}

impl Resolver {
    fn look_up(&self, slot: usize, generation: u64, host: String, port: u16) {
        let (tx, waker) = (self.tx.clone(), Arc::clone(&self.waker));
        let spawned = std::thread::Builder::new()
            .name("resolver".into())
            .spawn(move || {
                let addrs = (host.as_str(), port)
                    .to_socket_addrs()
                    .map(|a| a.collect::<Vec<_>>())
                    .map_err(|_| ProxyError::OriginUnresolvable);
                let _ = tx.send(Resolved {
                    slot,
                    generation,
                    addrs,
                });
                let _ = waker.wake();
            });
        if spawned.is_err() {
            let _ = self.tx.send(Resolved {
                slot,
                generation,
                addrs: Err(ProxyError::OriginUnresolvable),
            });
            let _ = self.waker.wake();
        }
    }
}

struct EventLoop {
    poll: Poll,
    listener: TcpListener,
    ctx: Context,
    /// Connection `i` has tokens `2 + 2i` (client) and `3 + 2i` (origin).
    connections: Vec<Option<Connection>>,
    free: Vec<usize>,
    serving: usize,
    refusing: usize,
    /// `accept` failed for want of descriptors: try again without waiting for a new client.
    accept_blocked: bool,
    resolved: Receiver<Resolved>,
    next_generation: u64,
}

impl EventLoop {
    fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut last_sweep = Instant::now();
        loop {
            match self.poll.poll(&mut events, Some(SWEEP)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            self.ctx.now = Instant::now();
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(),
                    WAKER => self.take_resolved(),
                    Token(t) => self.drive((t - 2) / 2),
                }
            }
            if self.ctx.now.duration_since(last_sweep) >= SWEEP {
                last_sweep = self.ctx.now;
                if self.accept_blocked {
                    self.accept();
                }
                for slot in 0..self.connections.len() {
                    let due = self.connections[slot]
                        .as_ref()
                        .is_some_and(|c| self.ctx.now >= c.deadline);
                    if due {
                        self.drive(slot);
                    }
                }
            }
        }
    }

    fn accept(&mut self) {
        loop {
            let (stream, peer) = match self.listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
                Err(e) => {
                    // Out of descriptors: the clients still queued are not reported again until a new one
                    // arrives, so the sweep tries again (every 100 ms) until an accept succeeds.
                    log::warn!("accept failed: {e}");
                    self.accept_blocked = true;
                    return;
                }
            };
            self.accept_blocked = false;
            let _ = stream.set_nodelay(true);
            let refusal = match self
                .ctx
                .rules
                .policy
                .check_client(v4_of(peer.ip()).unwrap_or(Ipv4Addr::UNSPECIFIED))
            {
                Err(refusal) => Some(refusal),
                Ok(()) if self.serving >= self.ctx.rules.max_connections => {
                    Some(ProxyError::AtCapacity)
                }
                Ok(()) => None,
            };
            if refusal.is_some() && self.refusing >= REFUSALS {
                log::warn!("From {} dropped: too many refusals under way", peer.ip());
                continue;
            }
            let slot = self.free.pop().unwrap_or_else(|| {
                self.connections.push(None);
                self.connections.len() - 1
            });
            self.next_generation += 1;
            let mut connection =
                Connection::new(stream, peer, slot, self.next_generation, &self.ctx);
            let token = Token(2 + 2 * slot);
            if let Err(e) = self.poll.registry().register(
                &mut connection.client,
                token,
                Interest::READABLE | Interest::WRITABLE,
            ) {
                log::warn!("cannot watch the connection from {peer}: {e}");
                self.free.push(slot);
                continue;
            }
            match refusal {
                Some(refusal) => {
                    log::info!(
                        "From {} Refused {} {}",
                        peer.ip(),
                        refusal.status(),
                        refusal.reason()
                    );
                    connection.refused = true;
                    connection.answer(refusal, &mut self.ctx);
                    self.refusing += 1;
                }
                None => self.serving += 1,
            }
            self.connections[slot] = Some(connection);
            self.drive(slot);
        }
    }

    fn take_resolved(&mut self) {
        while let Ok(resolved) = self.resolved.try_recv() {
            let Some(Some(connection)) = self.connections.get_mut(resolved.slot) else {
                continue;
            };
            if connection.generation == resolved.generation && connection.stage == Stage::Resolving
            {
                connection.resolved = Some(resolved.addrs);
                self.drive(resolved.slot);
            }
        }
    }

    /// Moves connection `slot` as far as its sockets allow, and closes it when it is done.
    fn drive(&mut self, slot: usize) {
        let Some(Some(mut connection)) = self.connections.get_mut(slot).map(Option::take) else {
            return;
        };
        let open = connection.drive(&mut self.ctx, self.poll.registry());
        if open {
            self.connections[slot] = Some(connection);
            return;
        }
        let _ = self.poll.registry().deregister(&mut connection.client);
        if let Some(upstream) = connection.upstream.as_mut() {
            let _ = self.poll.registry().deregister(&mut upstream.stream);
        }
        match connection.refused {
            true => self.refusing -= 1,
            false => self.serving -= 1,
        }
        self.free.push(slot);
    }
}

/// The IPv4 address of `ip` (`::1` counts as 127.0.0.1, a v4-mapped address as its v4 address).
fn v4_of(ip: IpAddr) -> Option<Ipv4Addr> {
    match ip {
        IpAddr::V4(v4) => Some(v4),
        IpAddr::V6(v6) if v6.is_loopback() => Some(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) => v6.to_ipv4_mapped(),
    }
}

/// Where a client connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// A request head is arriving (or the connection idles between requests).
    ReadingHead,
    /// The origin's name is being looked up.
    Resolving,
    /// Connecting to the origin's addresses one after another.
    Connecting,
    /// The request goes to the origin and its response comes back.
    Exchanging,
    /// `CONNECT`: bytes both ways until both sides close.
    Tunnel,
    /// The proxy's own answer is going out; the client's sending side is drained after it.
    Answering,
    /// Our side is closed; what the client still sends is read and dropped until it closes too.
    Draining,
}

/// The request being served.
struct Request {
    method: Method,
    host: String,
    port: u16,
    keep_alive: bool,
    minor_version: u8,
    line: String,
    body: BodyTracker,
    /// The rewritten head, kept to send again once if a kept origin connection turns out to be closed.
    head: Vec<u8>,
    /// Whether the request has a body (then it is not sent twice).
    has_body: bool,
}

/// An origin connection.
struct Upstream {
    stream: TcpStream,
    host: String,
    port: u16,
    addr: SocketAddr,
    connected: bool,
    /// Reused from an earlier request (a failure before any response byte is retried once).
    reused: bool,
    eof: bool,
}

/// Bytes waiting for a socket to take them.
#[derive(Default)]
struct Outgoing {
    bytes: Vec<u8>,
    sent: usize,
}

impl Outgoing {
    fn is_empty(&self) -> bool {
        self.sent == self.bytes.len()
    }

    fn push(&mut self, bytes: &[u8]) {
        if self.is_empty() {
            self.bytes.clear();
            self.sent = 0;
        }
        self.bytes.extend_from_slice(bytes);
    }

    /// Writes as much as `stream` takes. `Ok(true)` if anything went.
    fn flush(&mut self, stream: &mut TcpStream) -> io::Result<bool> {
        let mut moved = false;
        while !self.is_empty() {
            match stream.write(&self.bytes[self.sent..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.sent += n;
                    moved = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.is_empty() && self.bytes.capacity() > HEAD_BUFFER {
            // A slow reader made this grow; give the memory back.
            self.bytes = Vec::new();
            self.sent = 0;
        }
        Ok(moved)
    }
}

/// The response being relayed.
#[derive(Clone, Copy)]
enum ResponseStage {
    Head,
    Body(BodyTracker),
    Done,
}

/// How an exchange went wrong.
enum Failure {
    /// The proxy answers with this page (if the response has not started) and closes.
    Answer(ProxyError),
    /// A socket failed or the client went away: close without a word.
    Close(&'static str),
    /// A kept origin connection was found closed; the request goes again on a new one (already set up).
    Retry,
}

impl From<ProxyError> for Failure {
    fn from(e: ProxyError) -> Failure {
        Failure::Answer(e)
    }
}

/// One client connection: its socket, its origin connection, and what is in flight between them.
struct Connection {
    client: TcpStream,
    peer: SocketAddr,
    slot: usize,
    generation: u64,
    stage: Stage,
    deadline: Instant,
    /// Client bytes not used yet (a head arriving, or the next pipelined request).
    inbound: Vec<u8>,
    client_eof: bool,
    /// Origin bytes not used yet (a response head arriving).
    outbound: Vec<u8>,
    to_client: Outgoing,
    to_upstream: Outgoing,
    upstream: Option<Upstream>,
    request: Option<Request>,
    response: ResponseStage,
    /// Whether the request head has gone to the origin whole (the response can only follow it).
    head_flushed: bool,
    response_started: bool,
    /// Whether the client connection is kept after this response.
    keep_alive: bool,
    /// The addresses still to try, and the lookup's answer.
    addrs: VecDeque<SocketAddr>,
    resolved: Option<Result<Vec<SocketAddr>, ProxyError>>,
    /// Answered at the accept (403, 503): not counted against the cap.
    refused: bool,
    /// Whether a request was read on this connection: silence past the timeout before the first one is 408,
    /// between requests it is the normal end of a kept connection.
    served: bool,
    /// The pipe a long response body is spliced through, while it is.
    pipe: Option<SplicePipe>,
}

impl Connection {
    fn new(
        client: TcpStream,
        peer: SocketAddr,
        slot: usize,
        generation: u64,
        ctx: &Context,
    ) -> Connection {
        Connection {
            client,
            peer,
            slot,
            generation,
            stage: Stage::ReadingHead,
            deadline: ctx.now + ctx.rules.timeout,
            inbound: Vec::new(),
            client_eof: false,
            outbound: Vec::new(),
            to_client: Outgoing::default(),
            to_upstream: Outgoing::default(),
            upstream: None,
            request: None,
            response: ResponseStage::Done,
            head_flushed: false,
            response_started: false,
            keep_alive: false,
            addrs: VecDeque::new(),
            resolved: None,
            refused: false,
            served: false,
            pipe: None,
        }
    }

    /// Moves the connection as far as it goes. Returns whether it is still open.
    fn drive(&mut self, ctx: &mut Context, registry: &mio::Registry) -> bool {
        for _ in 0..64 {
            let step = match self.stage {
                Stage::ReadingHead => self.read_head(ctx),
                Stage::Resolving => self.resolving(ctx),
                Stage::Connecting => self.connecting(ctx, registry),
                Stage::Exchanging => self.exchanging(ctx),
                Stage::Tunnel => self.tunnel(ctx),
                Stage::Answering => self.answering(ctx),
                Stage::Draining => self.draining(ctx),
            };
            match step {
                Ok(Some(true)) => continue,
                Ok(Some(false)) => return true,
                Ok(None) => return false,
                Err(Failure::Answer(error)) => {
                    if !self.answer(error, ctx) {
                        return false;
                    }
                }
                Err(Failure::Retry) => continue,
                Err(Failure::Close(why)) => {
                    let line = self.request.as_ref().map_or("-", |r| r.line.as_str());
                    log::info!("{} Peer reset {line} ({why})", self.peer.ip());
                    if self.stage == Stage::Exchanging {
                        // A broken exchange ends with a reset to the client, as on smoltcp: a FIN would tell it
                        // that a response delimited by the close is whole. The origin gets a FIN (a request
                        // body never ends at the close, so it knows an upload was cut short).
                        reset_on_close(&self.client);
                    }
                    return false;
                }
            }
        }
        true
    }

    /// Answers `error` with its page if no response byte went out yet. Returns whether the connection stays
    /// open (to send the page).
    fn answer(&mut self, error: ProxyError, ctx: &mut Context) -> bool {
        let line = self.request.as_ref().map_or("-", |r| r.line.as_str());
        if !self.refused {
            log::info!(
                "To {} Response HTTP/1.1 {} {} ({line}: {error})",
                self.peer.ip(),
                error.status(),
                error.reason()
            );
        }
        self.upstream = None;
        if self.response_started {
            return false;
        }
        let mut page = HeadWriter::new(&mut ctx.head_out);
        let _ = error.write_response(&mut page);
        self.to_client = Outgoing::default();
        self.to_client.push(page.as_bytes());
        self.response_started = true;
        self.stage = Stage::Answering;
        self.deadline = ctx.now + ctx.rules.timeout;
        true
    }

    /// Reads from the client into `inbound` (at most `limit` bytes in all), through `scratch` so that
    /// `inbound` holds only what came. `Ok(true)` if bytes came.
    fn read_client(&mut self, limit: usize, scratch: &mut [u8]) -> Result<bool, Failure> {
        let mut moved = false;
        while !self.client_eof && self.inbound.len() < limit {
            let want = (limit - self.inbound.len()).min(scratch.len());
            match self.client.read(&mut scratch[..want]) {
                Ok(0) => {
                    self.client_eof = true;
                    moved = true;
                }
                Ok(n) => {
                    self.inbound.extend_from_slice(&scratch[..n]);
                    moved = true;
                }
                Err(e) => match e.kind() {
                    io::ErrorKind::WouldBlock => break,
                    io::ErrorKind::Interrupted => {}
                    _ => return Err(Failure::Close("client reset")),
                },
            }
        }
        Ok(moved)
    }

    fn read_head(&mut self, ctx: &mut Context) -> Result<Option<bool>, Failure> {
        self.to_client
            .flush(&mut self.client)
            .map_err(|_| Failure::Close("client reset"))?;
        let window = &self.inbound[..self.inbound.len().min(HEAD_BUFFER)];
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        match RequestHead::parse(window, &mut headers)? {
            Some(head) => {
                let request = take_request(&ctx.rules.policy, &head, &mut ctx.head_out);
                let head_len = head.head_len;
                self.inbound.drain(..head_len);
                return self.start_request(request?, ctx).map(Some);
            }
            None if window.len() == HEAD_BUFFER => {
                return Err(RequestHead::incomplete_error(window).into())
            }
            None => {}
        }
        if self.client_eof {
            // The client closed its side: the end of a kept connection, or half a head.
            return match self.inbound.is_empty() {
                true => Ok(None),
                false => Err(ProxyError::MalformedHead.into()),
            };
        }
        if self.read_client(HEAD_BUFFER, &mut ctx.scratch)? {
            // Parse what came (a whole request may have come with the client's FIN) before judging the end.
            return Ok(Some(true));
        }
        if ctx.now >= self.deadline {
            return match self.inbound.is_empty() && self.served {
                // A kept connection left idle between requests: the normal end.
                true => Ok(None),
                // Half a head, or no request at all yet (an idle or slowloris connection): 408, then closed.
                false => Err(ProxyError::HeadTimeout.into()),
            };
        }
        Ok(Some(false))
    }

    fn start_request(&mut self, request: Request, ctx: &mut Context) -> Result<bool, Failure> {
        self.served = true;
        log::info!("From {} Request {}", self.peer.ip(), request.line);
        self.response_started = false;
        self.response = ResponseStage::Head;
        self.deadline = ctx.now + ctx.rules.timeout;
        let kept = self.upstream.as_ref().is_some_and(|u| {
            request.method != Method::Connect
                && u.connected
                && !u.eof
                && u.host.eq_ignore_ascii_case(&request.host)
                && u.port == request.port
                && is_idle(&u.stream)
        });
        let (host, port) = (request.host.clone(), request.port);
        self.request = Some(request);
        if kept {
            if let Some(upstream) = self.upstream.as_mut() {
                upstream.reused = true;
            }
            return self.begin_exchange();
        }
        self.upstream = None;
        let policy = &ctx.rules.policy;
        let addrs = match policy.static_address(&host) {
            Some(v4) => vec![SocketAddr::new(IpAddr::V4(v4), port)],
            None => match host.parse::<IpAddr>() {
                Ok(ip) => vec![SocketAddr::new(ip, port)],
                Err(_) if ctx.rules.system_dns => {
                    ctx.resolver.look_up(self.slot, self.generation, host, port);
                    self.stage = Stage::Resolving;
                    return Ok(true);
                }
                Err(_) => return Err(ProxyError::OriginUnresolvable.into()),
            },
        };
        self.resolved = Some(Ok(addrs));
        self.stage = Stage::Resolving;
        Ok(true)
    }

    fn resolving(&mut self, ctx: &mut Context) -> Result<Option<bool>, Failure> {
        let Some(resolved) = self.resolved.take() else {
            if ctx.now >= self.deadline {
                return Err(ProxyError::OriginUnresolvable.into());
            }
            return Ok(Some(false));
        };
        let addrs = resolved?;
        if addrs.is_empty() {
            return Err(ProxyError::OriginUnresolvable.into());
        }
        let own = ctx.own;
        let is_self = |a: &SocketAddr| is_proxy_itself(*a, own);
        if addrs.iter().any(is_self) {
            return Err(ProxyError::Loop.into());
        }
        let policy = &ctx.rules.policy;
        self.addrs = addrs
            .into_iter()
            .filter(|a| match v4_of(a.ip()) {
                Some(v4) => policy.check_destination(v4).is_ok(),
                None => policy.allow_destinations.is_empty(),
            })
            .collect();
        if self.addrs.is_empty() {
            return Err(ProxyError::DestinationNotAllowed.into());
        }
        self.stage = Stage::Connecting;
        Ok(Some(true))
    }

    fn connecting(
        &mut self,
        ctx: &mut Context,
        registry: &mio::Registry,
    ) -> Result<Option<bool>, Failure> {
        if let Some(upstream) = self.upstream.as_mut() {
            match upstream.stream.take_error() {
                Ok(None) => {}
                Ok(Some(e)) | Err(e) => {
                    log::debug!("connect {}: {e}", upstream.addr);
                    let _ = registry.deregister(&mut upstream.stream);
                    self.upstream = None;
                    return match self.addrs.is_empty() {
                        true => Err(ProxyError::OriginRefused.into()),
                        false => Ok(Some(true)),
                    };
                }
            }
            match upstream.stream.peer_addr() {
                Ok(_) => {
                    upstream.connected = true;
                    let _ = upstream.stream.set_nodelay(true);
                    return self.begin_exchange().map(Some);
                }
                Err(e) if e.kind() == io::ErrorKind::NotConnected => {}
                Err(_) => {
                    self.upstream = None;
                    return Err(ProxyError::OriginRefused.into());
                }
            }
            if ctx.now >= self.deadline {
                return Err(ProxyError::OriginTimeout.into());
            }
            return Ok(Some(false));
        }
        let Some(addr) = self.addrs.pop_front() else {
            return Err(ProxyError::OriginRefused.into());
        };
        let request = self.request.as_ref().ok_or(Failure::Close("no request"))?;
        let mut stream = match TcpStream::connect(addr) {
            Ok(s) => s,
            Err(e) => {
                log::debug!("connect {addr}: {e}");
                return match self.addrs.is_empty() {
                    true => Err(ProxyError::OriginRefused.into()),
                    false => Ok(Some(true)),
                };
            }
        };
        let token = Token(3 + 2 * self.slot);
        registry
            .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
            .map_err(|_| Failure::Answer(ProxyError::OriginRefused))?;
        self.upstream = Some(Upstream {
            stream,
            host: request.host.clone(),
            port: request.port,
            addr,
            connected: false,
            reused: false,
            eof: false,
        });
        Ok(Some(true))
    }

    /// The origin is connected: queue the request head (or open the tunnel).
    fn begin_exchange(&mut self) -> Result<bool, Failure> {
        let request = self.request.as_ref().ok_or(Failure::Close("no request"))?;
        if request.method == Method::Connect {
            self.stage = Stage::Tunnel;
            return Ok(true);
        }
        self.to_upstream = Outgoing::default();
        self.to_upstream.push(&request.head);
        self.head_flushed = false;
        self.outbound.clear();
        self.stage = Stage::Exchanging;
        Ok(true)
    }

    fn exchanging(&mut self, ctx: &mut Context) -> Result<Option<bool>, Failure> {
        let mut moved = false;
        // 1. What is queued for the origin: the head, then body bytes.
        let upstream = self.upstream.as_mut().ok_or(ProxyError::OriginReset)?;
        match self.to_upstream.flush(&mut upstream.stream) {
            Ok(m) => moved |= m,
            Err(_) if !self.response_started => {
                return Err(self.origin_failed(ProxyError::OriginReset))
            }
            Err(_) => return Err(Failure::Close("origin reset")),
        }
        // 2. The request body, client to origin, never past its end.
        moved |= self.forward_request_body(ctx)?;
        // 3. The response, origin to client.
        moved |= self.relay_response(ctx)?;
        match self.to_client.flush(&mut self.client) {
            Ok(m) => moved |= m,
            Err(_) => return Err(Failure::Close("client reset")),
        }
        let request_done = self.request.as_ref().is_none_or(|r| r.body.is_done());
        if matches!(self.response, ResponseStage::Done) && self.to_client.is_empty() {
            return self.finish_exchange(request_done, ctx).map(Some);
        }
        if moved {
            self.deadline = ctx.now + ctx.rules.timeout;
        } else if let Ok(Some(_)) = self.client.take_error() {
            // The client reset while the proxy was not reading it (the origin takes the body slower than it
            // comes): nothing else would notice until the timeout.
            return Err(Failure::Close("client reset"));
        } else if ctx.now >= self.deadline {
            return match self.response_started {
                false => Err(ProxyError::OriginTimeout.into()),
                true => Err(Failure::Close("no progress mid-response")),
            };
        }
        Ok(Some(moved))
    }

    /// A failure of the origin connection before any response byte: once more on a new connection if the
    /// connection was a kept one (the origin may have closed it while it idled) and the request had no body;
    /// else `error`.
    fn origin_failed(&mut self, error: ProxyError) -> Failure {
        let retry = match (&self.upstream, &self.request) {
            (Some(u), Some(r))
                if u.reused
                    && !r.has_body
                    && !self.response_started
                    && self.outbound.is_empty() =>
            {
                Some(u.addr)
            }
            _ => None,
        };
        self.upstream = None;
        match retry {
            None => Failure::Answer(error),
            Some(addr) => {
                log::debug!("a kept origin connection to {addr} was closed; connecting again");
                self.addrs = VecDeque::from([addr]);
                self.stage = Stage::Connecting;
                Failure::Retry
            }
        }
    }

    fn forward_request_body(&mut self, ctx: &mut Context) -> Result<bool, Failure> {
        let mut moved = false;
        let Some(request) = self.request.as_mut() else {
            return Ok(false);
        };
        let upstream = self.upstream.as_mut().ok_or(ProxyError::OriginReset)?;
        while !request.body.is_done() && self.to_upstream.is_empty() {
            if self.inbound.is_empty() {
                if self.client_eof {
                    return Err(Failure::Close("client closed mid-body"));
                }
                let want = request.body.limit().min(ctx.scratch.len());
                match self.client.read(&mut ctx.scratch[..want]) {
                    Ok(0) => {
                        self.client_eof = true;
                        return Err(Failure::Close("client closed mid-body"));
                    }
                    Ok(n) => self.inbound.extend_from_slice(&ctx.scratch[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => return Err(Failure::Close("client reset")),
                }
            }
            let n = request
                .body
                .advance(&self.inbound)
                .map_err(|_| ProxyError::MalformedBody)?;
            self.to_upstream.push(&self.inbound[..n]);
            self.inbound.drain(..n);
            moved = true;
            if self.to_upstream.flush(&mut upstream.stream).is_err() {
                return Err(Failure::Close("origin reset"));
            }
        }
        Ok(moved)
    }

    fn relay_response(&mut self, ctx: &mut Context) -> Result<bool, Failure> {
        let mut moved = false;
        loop {
            match self.response {
                ResponseStage::Done => return Ok(moved),
                ResponseStage::Head => {
                    // The origin cannot answer a head it has not had whole. After that, its answer is read even
                    // while the body is still on its way (an early 413 must not wait behind the upload).
                    self.head_flushed |= self.to_upstream.is_empty();
                    if !self.head_flushed && self.outbound.is_empty() {
                        return Ok(moved);
                    }
                    if !self.parse_response_head(ctx)?
                        && !self.read_upstream_head(&mut ctx.scratch)?
                    {
                        return Ok(moved);
                    }
                    moved = true;
                }
                ResponseStage::Body(mut body) => {
                    if !self.to_client.is_empty() {
                        return Ok(moved);
                    }
                    if self.pipe.is_some()
                        || (body.is_counted()
                            && body.limit() > SPLICE_MIN
                            && self.outbound.is_empty())
                    {
                        // Without a pipe to be had, the bytes are copied below instead.
                        if let Some(m) = self.splice_body(&mut body)? {
                            moved |= m;
                            self.response = match (body.is_done(), &self.pipe) {
                                (true, None) => ResponseStage::Done,
                                _ => ResponseStage::Body(body),
                            };
                            if m {
                                continue;
                            }
                            return Ok(moved);
                        }
                    }
                    // Body bytes that came with the head first, then straight from the socket via `scratch`.
                    let from_head = !self.outbound.is_empty();
                    let len = if from_head {
                        self.outbound.len()
                    } else {
                        let upstream = self.upstream.as_mut().ok_or(Failure::Close("no origin"))?;
                        let want = body.limit().min(ctx.scratch.len());
                        match upstream.stream.read(&mut ctx.scratch[..want]) {
                            Ok(0) => {
                                upstream.eof = true;
                                if body.ends_at_close() {
                                    self.keep_alive = false;
                                    self.response = ResponseStage::Done;
                                    continue;
                                }
                                return Err(Failure::Close("origin closed mid-response"));
                            }
                            Ok(n) => n,
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(moved),
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                            Err(_) => return Err(Failure::Close("origin reset mid-response")),
                        }
                    };
                    let bytes = if from_head {
                        &self.outbound[..len]
                    } else {
                        &ctx.scratch[..len]
                    };
                    let n = body
                        .advance(bytes)
                        .map_err(|_| Failure::Close("origin sent a malformed chunked body"))?;
                    match self.client.write(&bytes[..n]) {
                        Ok(w) => self.to_client.push(&bytes[w..n]),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            self.to_client.push(&bytes[..n])
                        }
                        Err(_) => return Err(Failure::Close("client reset")),
                    }
                    if n < len {
                        // Bytes past the response: the origin connection cannot carry another request.
                        if let Some(upstream) = self.upstream.as_mut() {
                            upstream.eof = true;
                        }
                    }
                    if from_head {
                        self.outbound.clear();
                    }
                    self.response = match body.is_done() {
                        true => ResponseStage::Done,
                        false => ResponseStage::Body(body),
                    };
                    moved = true;
                }
            }
        }
    }

    /// Moves body bytes origin → pipe → client. `Ok(Some(moved))`, or `Ok(None)` if no pipe can be made (the
    /// caller copies instead). The pipe is dropped once the body has gone through it.
    fn splice_body(&mut self, body: &mut BodyTracker) -> Result<Option<bool>, Failure> {
        use std::os::fd::AsRawFd;
        if self.pipe.is_none() {
            match SplicePipe::new() {
                Ok(pipe) => self.pipe = Some(pipe),
                Err(e) => {
                    log::debug!("no pipe for splice ({e}); copying");
                    return Ok(None);
                }
            }
        }
        let Some(pipe) = self.pipe.as_mut() else {
            return Ok(None);
        };
        let upstream = self.upstream.as_mut().ok_or(Failure::Close("no origin"))?;
        let mut moved = false;
        loop {
            if pipe.held > 0 {
                match pipe.drain(self.client.as_raw_fd()) {
                    Ok(n) => moved |= n > 0,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Some(moved)),
                    Err(_) => return Err(Failure::Close("client reset")),
                }
                if pipe.held > 0 {
                    continue;
                }
            }
            if body.is_done() {
                self.pipe = None;
                return Ok(Some(true));
            }
            match pipe.fill(upstream.stream.as_raw_fd(), body.limit()) {
                Ok(0) => {
                    upstream.eof = true;
                    if body.ends_at_close() {
                        self.keep_alive = false;
                        *body = BodyTracker::new(BodyFraming::None);
                        continue;
                    }
                    return Err(Failure::Close("origin closed mid-response"));
                }
                Ok(n) => {
                    body.advance_unseen(n);
                    moved = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Some(moved)),
                Err(_) => return Err(Failure::Close("origin reset mid-response")),
            }
        }
    }

    /// Reads the origin's head bytes into `outbound` (through `scratch`). `Ok(true)` if bytes came.
    fn read_upstream_head(&mut self, scratch: &mut [u8]) -> Result<bool, Failure> {
        let upstream = self.upstream.as_mut().ok_or(Failure::Close("no origin"))?;
        let want = HEAD_BUFFER
            .saturating_sub(self.outbound.len())
            .clamp(1, scratch.len());
        let n = match upstream.stream.read(&mut scratch[..want]) {
            Ok(n) => n,
            Err(ref e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                return Ok(false);
            }
            Err(_) => 0,
        };
        if n == 0 {
            // Closed or reset before the head was whole.
            return Err(self.origin_failed(ProxyError::OriginReset));
        }
        self.outbound.extend_from_slice(&scratch[..n]);
        Ok(true)
    }

    /// Parses `outbound` as a response head and queues the rewritten head for the client. `Ok(false)` until
    /// the head is whole.
    fn parse_response_head(&mut self, ctx: &mut Context) -> Result<bool, Failure> {
        let Some(request) = self.request.as_ref() else {
            return Ok(false);
        };
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let head = match ResponseHead::parse(&self.outbound, &mut headers, request.method)? {
            Some(head) => head,
            None if self.outbound.len() >= HEAD_BUFFER => {
                return Err(ProxyError::BadOriginResponse.into())
            }
            None => return Ok(false),
        };
        let origin_ip = self
            .upstream
            .as_ref()
            .map_or(self.peer.ip(), |u| u.addr.ip());
        log::info!("To {origin_ip} Response {head}");
        let interim = head.is_interim();
        let keep =
            request.keep_alive && head.framing != BodyFraming::UntilClose && request.body.is_done();
        let mut out = HeadWriter::new(&mut ctx.head_out);
        client_response(
            &head,
            ctx.rules.policy.pseudonym,
            request.minor_version,
            keep,
            &mut out,
        )
        .map_err(|_| ProxyError::BadOriginResponse)?;
        // An HTTP/1.0 client does not know interim responses: they are not sent to it.
        if !(interim && request.minor_version == 0) {
            self.to_client.push(out.as_bytes());
            self.response_started = true;
        }
        let (head_len, framing, origin_keep_alive) = (head.head_len, head.framing, head.keep_alive);
        self.outbound.drain(..head_len);
        if !interim {
            self.keep_alive = keep;
            if !origin_keep_alive {
                if let Some(upstream) = self.upstream.as_mut() {
                    upstream.eof = true;
                }
            }
            let body = BodyTracker::new(framing);
            self.response = match body.is_done() {
                true => ResponseStage::Done,
                false => ResponseStage::Body(body),
            };
        }
        Ok(true)
    }

    /// The response is whole and sent: read the next request, or close.
    fn finish_exchange(&mut self, request_done: bool, ctx: &mut Context) -> Result<bool, Failure> {
        if !request_done || !self.outbound.is_empty() {
            self.upstream = None;
        }
        if self.upstream.as_ref().is_some_and(|u| u.eof) {
            self.upstream = None;
        }
        if let Some(upstream) = self.upstream.as_mut() {
            upstream.reused = false;
        }
        self.request = None;
        if self.keep_alive && request_done {
            self.stage = Stage::ReadingHead;
            self.deadline = ctx.now + ctx.rules.timeout;
            return Ok(true);
        }
        let _ = self.client.shutdown(Shutdown::Write);
        self.stage = Stage::Draining;
        self.deadline = ctx.now + DRAIN;
        Ok(true)
    }

    fn tunnel(&mut self, ctx: &mut Context) -> Result<Option<bool>, Failure> {
        if !self.response_started {
            let mut out = HeadWriter::new(&mut ctx.head_out);
            tunnel_established(ctx.rules.policy.pseudonym, &mut out)
                .map_err(|_| ProxyError::HeadTooLarge)?;
            self.to_client.push(out.as_bytes());
            self.response_started = true;
            // Bytes the client sent right behind its head (a TLS ClientHello) go first.
            let early = std::mem::take(&mut self.inbound);
            self.to_upstream.push(&early);
            self.deadline = ctx.now + TUNNEL_IDLE;
        }
        let upstream = self.upstream.as_mut().ok_or(Failure::Close("no origin"))?;
        let mut moved = false;
        moved |= self
            .to_client
            .flush(&mut self.client)
            .map_err(|_| Failure::Close("client reset"))?;
        moved |= self
            .to_upstream
            .flush(&mut upstream.stream)
            .map_err(|_| Failure::Close("origin reset"))?;
        let scratch = &mut ctx.scratch;
        moved |= pump(
            &mut self.client,
            &mut self.client_eof,
            &mut upstream.stream,
            &mut self.to_upstream,
            scratch,
        )?;
        moved |= pump(
            &mut upstream.stream,
            &mut upstream.eof,
            &mut self.client,
            &mut self.to_client,
            scratch,
        )?;
        if self.client_eof
            && upstream.eof
            && self.to_client.is_empty()
            && self.to_upstream.is_empty()
        {
            return Ok(None);
        }
        if moved {
            self.deadline = ctx.now + TUNNEL_IDLE;
        } else if ctx.now >= self.deadline {
            return Err(Failure::Close("tunnel idle"));
        }
        Ok(Some(moved))
    }

    fn answering(&mut self, ctx: &mut Context) -> Result<Option<bool>, Failure> {
        let moved = self
            .to_client
            .flush(&mut self.client)
            .map_err(|_| Failure::Close("client reset"))?;
        if self.to_client.is_empty() {
            let _ = self.client.shutdown(Shutdown::Write);
            self.stage = Stage::Draining;
            self.deadline = ctx.now + DRAIN;
            return Ok(Some(true));
        }
        if ctx.now >= self.deadline {
            return Ok(None);
        }
        Ok(Some(moved))
    }

    fn draining(&mut self, ctx: &mut Context) -> Result<Option<bool>, Failure> {
        loop {
            match self.client.read(&mut ctx.scratch) {
                Ok(0) => return Ok(None),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Ok(None),
            }
        }
        match ctx.now >= self.deadline {
            true => Ok(None),
            false => Ok(Some(false)),
        }
    }
}

/// Whether `addr` is the proxy's own listening address: the same port, and the bound address, or (bound to
/// every address) any address of this machine. A v4-mapped IPv6 address counts as its IPv4 address.
pub(crate) fn is_proxy_itself(addr: SocketAddr, own: SocketAddr) -> bool {
    if addr.port() != own.port() {
        return false;
    }
    let ip = v4_of(addr.ip()).map_or(addr.ip(), IpAddr::V4);
    let own_ip = v4_of(own.ip()).map_or(own.ip(), IpAddr::V4);
    if ip == own_ip || ip.is_unspecified() {
        return true;
    }
    // Bound to every address: an address is this machine's if a socket can be bound to it.
    own_ip.is_unspecified() && std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

/// Makes closing `stream` send a reset (`SO_LINGER` 0) rather than a FIN.
fn reset_on_close(stream: &TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt reads `linger`, which lives across the call, on a socket we own.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
}

/// Whether a kept origin connection is still open and silent (an origin that closed it while it idled, or
/// sent anything unasked, cannot carry the next request).
fn is_idle(stream: &TcpStream) -> bool {
    matches!(stream.peek(&mut [0u8; 1]), Err(ref e) if e.kind() == io::ErrorKind::WouldBlock)
}

/// Raises the soft limit on open descriptors to the hard one: each client costs two (three with a pipe), and
/// the usual soft limit of 1024 is below what `--max-connections` allows.
fn raise_descriptor_limit(max_connections: usize) {
    let needed = (max_connections as u64)
        .saturating_mul(4)
        .saturating_add(64);
    match raise_open_files_limit() {
        Some(allowed) if allowed < needed => log::warn!(
            "only {allowed} open files allowed: fewer than --max-connections {max_connections} clients may be served"
        ),
        _ => {}
    }
}

/// Raises this process's soft limit on open files to its hard limit; returns the soft limit now in force (`None`
/// if it cannot be read).
pub fn raise_open_files_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
        (libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0).then_some(limit.rlim_cur)
    }
}

/// One direction of a tunnel: reads `from` (when what was read before has gone on) and writes `to`, queueing
/// what `to` does not take; passes the end of stream on as a half-close.
fn pump(
    from: &mut TcpStream,
    from_eof: &mut bool,
    to: &mut TcpStream,
    queue: &mut Outgoing,
    scratch: &mut [u8],
) -> Result<bool, Failure> {
    let mut moved = false;
    while !*from_eof && queue.is_empty() {
        match from.read(scratch) {
            Ok(0) => {
                *from_eof = true;
                moved = true;
            }
            Ok(n) => {
                moved = true;
                match to.write(&scratch[..n]) {
                    Ok(w) => queue.push(&scratch[w..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => queue.push(&scratch[..n]),
                    Err(_) => return Err(Failure::Close("tunnel peer reset")),
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Err(Failure::Close("tunnel peer reset")),
        }
    }
    if *from_eof && queue.is_empty() {
        let _ = to.shutdown(Shutdown::Write);
    }
    Ok(moved)
}

/// Checks a parsed head and writes the request to send the origin; returns what the proxy keeps of it.
fn take_request(
    policy: &ProxyPolicy<'_>,
    head: &RequestHead<'_, '_>,
    head_out: &mut [u8],
) -> Result<Request, ProxyError> {
    let authority = head.target.authority();
    if head.came_through(policy.pseudonym) {
        return Err(ProxyError::Loop);
    }
    let mut request = Request {
        method: head.method,
        host: authority.host.to_owned(),
        port: authority.port,
        keep_alive: head.keep_alive,
        minor_version: head.minor_version,
        line: head.to_string(),
        body: BodyTracker::new(head.framing),
        head: Vec::new(),
        has_body: head.framing != BodyFraming::None,
    };
    if head.method == Method::Connect {
        policy.check_connect_port(authority.port)?;
        return Ok(request);
    }
    let mut out = HeadWriter::new(head_out);
    upstream_request(head, policy.pseudonym, true, &mut out)
        .map_err(|_| ProxyError::HeadTooLarge)?;
    request.head = out.as_bytes().to_vec();
    Ok(request)
}

/// A pipe that carries a response body from the origin's socket to the client's inside the kernel.
struct SplicePipe {
    read: std::os::fd::OwnedFd,
    write: std::os::fd::OwnedFd,
    /// Bytes in the pipe, not yet passed on to the client.
    held: usize,
}

impl SplicePipe {
    fn new() -> io::Result<SplicePipe> {
        use std::os::fd::FromRawFd;
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 writes.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both descriptors are open and now owned here alone.
        let (read, write) = unsafe {
            (
                std::os::fd::OwnedFd::from_raw_fd(fds[0]),
                std::os::fd::OwnedFd::from_raw_fd(fds[1]),
            )
        };
        // A bigger pipe moves more per call; the default (64 KiB) still works if the kernel refuses.
        // SAFETY: fcntl on a descriptor we own.
        unsafe {
            libc::fcntl(
                std::os::fd::AsRawFd::as_raw_fd(&write),
                libc::F_SETPIPE_SZ,
                PIPE_SIZE,
            )
        };
        Ok(SplicePipe {
            read,
            write,
            held: 0,
        })
    }

    /// Moves up to `max` bytes from the socket `from` into the pipe. `Ok(0)` is the socket's end of stream.
    fn fill(&mut self, from: std::os::fd::RawFd, max: usize) -> io::Result<usize> {
        let write = std::os::fd::AsRawFd::as_raw_fd(&self.write);
        let n = splice(from, write, max.min(PIPE_SIZE as usize))?;
        self.held += n;
        Ok(n)
    }

    /// Moves what the pipe holds to the socket `to`.
    fn drain(&mut self, to: std::os::fd::RawFd) -> io::Result<usize> {
        let read = std::os::fd::AsRawFd::as_raw_fd(&self.read);
        let n = splice(read, to, self.held)?;
        self.held -= n.min(self.held);
        Ok(n)
    }
}

fn splice(from: std::os::fd::RawFd, to: std::os::fd::RawFd, len: usize) -> io::Result<usize> {
    loop {
        // SAFETY: both descriptors are open for the call; null offsets mean "the current position", as
        // sockets and pipes require.
        let n = unsafe {
            libc::splice(
                from,
                std::ptr::null_mut(),
                to,
                std::ptr::null_mut(),
                len,
                libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}
