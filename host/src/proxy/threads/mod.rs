//! The HTTP forward proxy on the kernel's stack (`std::net`): the classic lab design, one thread per client
//! connection, made strict and fast.
//!
//! The acceptor thread checks each client against `--allow` and the connection cap, then hands the connection to
//! its own thread ([`ClientSession`]), which loops over requests while the client keeps the connection:
//!
//! ```text
//! read head ─▶ check (loop, CONNECT port) ─▶ resolve ─▶ check destination ─▶ connect (or reuse) the origin
//!     ▲            ─▶ send head (origin-form, no hop-by-hop, Via) ─▶ stream request body ─▶ relay response head
//!     └──────────── keep-alive ◀── stream response body ◀──────────────────────────────────────┘
//! ```
//!
//! `CONNECT` turns the connection into a byte tunnel (one more thread for the way back). A refusal or a failure
//! before any response byte went out is answered with a small HTML page and `Connection: close`; after that, the
//! only honest answer is closing the connection. Connections refused at the accept (403, 503) are answered by
//! one refuser thread, so a flood at the cap costs no thread per client.
//!
//! Parsing, rewriting, framing, the error pages and the policy are the core's ([`smoltalk_core::http`],
//! [`ProxyPolicy`]), the same code the smoltcp proxy runs.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use smoltalk_core::http::body::BodyTracker;
use smoltalk_core::http::request::Method;
use smoltalk_core::http::rewrite::{client_response, tunnel_established, upstream_request};
use smoltalk_core::http::{
    BodyFraming, HeadWriter, ProxyError, RequestHead, ResponseHead, MAX_HEADERS,
};
use smoltalk_core::proxy::ProxyPolicy;

pub use crate::proxy::event_loop::ProxyRules;
use crate::uppercase::kernel::KernelError;

/// The largest request or response head the proxy takes (longer: 414/431 or 502).
pub const HEAD_BUFFER: usize = 8 * 1024;

/// Each direction of a body is copied through a buffer this big.
pub const BODY_BUFFER: usize = 16 * 1024;

/// How long the proxy waits for an origin's `100 Continue` before sending the body anyway (as curl does).
const CONTINUE_WAIT: Duration = Duration::from_secs(1);

/// A tunnel with no byte either way for this long is closed.
const TUNNEL_IDLE: Duration = Duration::from_secs(300);

/// Connections the kernel may hold ready for `accept` (capped by `net.core.somaxconn`).
const LISTEN_BACKLOG: libc::c_int = 4096;

/// The stack of a client thread: its buffers are on the heap, and the thread needs little else.
const THREAD_STACK: usize = 128 * 1024;

/// The kernel-stack proxy: a listening socket and its rules.
#[derive(Debug)]
pub struct KernelProxy {
    listener: TcpListener,
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    rules: ProxyRules,
    /// The proxy's own address, so a request for it is a loop (508).
    own: SocketAddr,
    active: AtomicUsize,
}

impl KernelProxy {
    /// Binds `addr`.
    pub fn bind(addr: SocketAddr, rules: ProxyRules) -> Result<KernelProxy, KernelError> {
        let listener = TcpListener::bind(addr)
            .map_err(|e| crate::uppercase::kernel::bind_error("TCP", addr, e))?;
        // std listens with a backlog of 128: a burst of connections (a browser, a load generator) overflows it
        // and each dropped SYN costs its client a one-second retransmission. Listening again raises it.
        // SAFETY: `listen` on a descriptor we own; it has no memory preconditions.
        unsafe { libc::listen(std::os::fd::AsRawFd::as_raw_fd(&listener), LISTEN_BACKLOG) };
        let own = listener
            .local_addr()
            .map_err(|e| KernelError(format!("cannot read the bound address: {e}")))?;
        Ok(KernelProxy {
            listener,
            shared: Arc::new(Shared {
                rules,
                own,
                active: AtomicUsize::new(0),
            }),
        })
    }

    /// The address the proxy listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.own
    }

    /// Accepts clients until the listening socket fails.
    pub fn serve(self) -> Result<(), KernelError> {
        let refuser = spawn_refuser()?;
        for stream in self.listener.incoming() {
            let stream = match stream {
                Ok(s) => s,
                Err(e) => {
                    // Out of descriptors or a connection reset before accept: not the proxy's end.
                    log::warn!("accept failed: {e}");
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            };
            let Ok(peer) = stream.peer_addr() else {
                continue;
            };
            if let Err(refusal) = self
                .shared
                .rules
                .policy
                .check_client(v4_of(peer.ip()).unwrap_or(Ipv4Addr::UNSPECIFIED))
            {
                refuse(&refuser, stream, peer, refusal);
                continue;
            }
            if self.shared.active.fetch_add(1, Ordering::AcqRel)
                >= self.shared.rules.max_connections
            {
                self.shared.active.fetch_sub(1, Ordering::AcqRel);
                refuse(&refuser, stream, peer, ProxyError::AtCapacity);
                continue;
            }
            let shared = Arc::clone(&self.shared);
            let spawned = std::thread::Builder::new()
                .stack_size(THREAD_STACK)
                .spawn(move || {
                    let _slot = ActiveSlot(&shared.active);
                    ClientSession::new(stream, peer, &shared).run();
                });
            if let Err(e) = spawned {
                log::warn!("cannot start a thread for {peer}: {e}");
                self.shared.active.fetch_sub(1, Ordering::AcqRel);
            }
        }
        Err(KernelError("the listening socket failed".into()))
    }
}

/// Gives a client thread's place under the cap back when the thread ends, however it ends.
struct ActiveSlot<'a>(&'a AtomicUsize);

impl Drop for ActiveSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
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

/// A refused client, answered by the refuser thread.
type Refusal = (TcpStream, SocketAddr, ProxyError);

/// How long a refused client may go on sending before its connection is closed (so that closing with unread
/// bytes does not reset the connection and destroy the page before the client reads it).
const REFUSAL_DRAIN: Duration = Duration::from_millis(500);

fn spawn_refuser() -> Result<SyncSender<Refusal>, KernelError> {
    let (tx, rx) = sync_channel::<Refusal>(4096);
    std::thread::Builder::new()
        .name("refuser".into())
        .spawn(move || {
            // Answered clients whose bytes are still read and thrown away, each until its end or its deadline:
            // none of them holds up the next refusal.
            let mut draining: Vec<(TcpStream, Instant)> = Vec::new();
            let mut sink = [0u8; 4096];
            loop {
                let wait = match draining.is_empty() {
                    true => Duration::from_secs(3600),
                    false => Duration::from_millis(10),
                };
                match rx.recv_timeout(wait) {
                    Ok((mut stream, peer, refusal)) => {
                        log::info!(
                            "From {} Refused {} {}",
                            peer.ip(),
                            refusal.status(),
                            refusal.reason()
                        );
                        let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
                        let _ = send_error(&mut stream, refusal);
                        let _ = stream.shutdown(Shutdown::Write);
                        if stream.set_nonblocking(true).is_ok() {
                            draining.push((stream, Instant::now() + REFUSAL_DRAIN));
                        }
                    }
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => return,
                }
                let now = Instant::now();
                draining.retain_mut(|(stream, deadline)| {
                    loop {
                        match stream.read(&mut sink) {
                            Ok(0) => return false,
                            Ok(_) => {}
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(_) => return false,
                        }
                    }
                    now < *deadline
                });
            }
        })
        .map_err(|e| KernelError(format!("cannot start the refuser thread: {e}")))?;
    Ok(tx)
}

fn refuse(refuser: &SyncSender<Refusal>, stream: TcpStream, peer: SocketAddr, refusal: ProxyError) {
    if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
        refuser.try_send((stream, peer, refusal))
    {
        log::warn!("From {} dropped: too many refusals waiting", peer.ip());
    }
}

/// Writes `error`'s page.
fn send_error(stream: &mut TcpStream, error: ProxyError) -> io::Result<()> {
    let mut page = [0u8; 1024];
    let mut out = HeadWriter::new(&mut page);
    error
        .write_response(&mut out)
        .map_err(|_| io::Error::other("error page too large"))?;
    stream.write_all(out.as_bytes())
}

/// Bytes read from a socket and not used yet: `buf[start..end]`.
struct Pending {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
}

impl Pending {
    fn new(size: usize) -> Pending {
        Pending {
            buf: vec![0; size].into_boxed_slice(),
            start: 0,
            end: 0,
        }
    }

    fn bytes(&self) -> &[u8] {
        self.buf.get(self.start..self.end).unwrap_or(&[])
    }

    fn is_empty(&self) -> bool {
        self.start == self.end
    }

    fn consume(&mut self, n: usize) {
        // Saturating: `consume(usize::MAX)` drops all (a plain add overflows once `start > 0`).
        self.start = self.start.saturating_add(n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Reads more after what is pending (moving it to the front first if the buffer's end is reached).
    /// `Ok(0)` is end of stream; an error `WouldBlock`/`TimedOut` is the socket's read timeout.
    fn fill(&mut self, stream: &mut TcpStream) -> io::Result<usize> {
        if self.end == self.buf.len() && self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let space = self.buf.get_mut(self.end..).unwrap_or(&mut []);
        if space.is_empty() {
            return Err(io::Error::new(io::ErrorKind::OutOfMemory, "buffer full"));
        }
        let n = stream.read(space)?;
        self.end += n;
        Ok(n)
    }

    fn is_full(&self) -> bool {
        self.start == 0 && self.end == self.buf.len()
    }
}

/// What the proxy keeps of a request head once it is parsed (the head's bytes are reused for the body).
struct Request {
    method: Method,
    host: String,
    port: u16,
    framing: BodyFraming,
    keep_alive: bool,
    minor_version: u8,
    expects_continue: bool,
    /// The request line, for logs.
    line: String,
}

/// An open connection to an origin, kept for the next request to the same host and port.
struct Upstream {
    stream: TcpStream,
    host: String,
    port: u16,
    addr: SocketAddr,
}

/// How an exchange failed.
enum Failure {
    /// The proxy answers with this page (if the response has not started) and closes.
    Answer(ProxyError),
    /// The client went away or broke its side: close without a word.
    Client(io::Error),
    /// The origin broke off after the response started: close the client connection.
    OriginBrokeOff(io::Error),
}

/// What the proxy does with the client connection after an exchange.
enum Next {
    KeepAlive,
    Close,
}

/// One client connection and its thread's buffers.
struct ClientSession<'s> {
    client: TcpStream,
    peer: SocketAddr,
    shared: &'s Shared,
    /// What the client sent and the proxy has not forwarded yet.
    inbound: Pending,
    /// What the origin sent and the proxy has not forwarded yet.
    outbound: Pending,
    /// Heads the proxy writes (to the origin, then to the client): `head_out[..head_out_len]`.
    head_out: Box<[u8]>,
    head_out_len: usize,
    upstream: Option<Upstream>,
    /// Whether any byte of the current response has gone to the client.
    response_started: bool,
}

impl<'s> ClientSession<'s> {
    fn new(client: TcpStream, peer: SocketAddr, shared: &'s Shared) -> ClientSession<'s> {
        let _ = client.set_nodelay(true);
        ClientSession {
            client,
            peer,
            shared,
            inbound: Pending::new(HEAD_BUFFER.max(BODY_BUFFER)),
            outbound: Pending::new(HEAD_BUFFER.max(BODY_BUFFER)),
            head_out: vec![0; HEAD_BUFFER + 1024].into_boxed_slice(),
            head_out_len: 0,
            upstream: None,
            response_started: false,
        }
    }

    fn run(mut self) {
        for served in 0u64.. {
            self.response_started = false;
            let request = match self.read_request(served == 0) {
                Ok(Some(request)) => request,
                Ok(None) => break,
                Err(error) => {
                    self.answer(error, None);
                    break;
                }
            };
            log::info!("From {} Request {}", self.peer.ip(), request.line);
            match self.exchange(&request) {
                Ok(Next::KeepAlive) => continue,
                Ok(Next::Close) => break,
                Err(Failure::Answer(error)) => {
                    self.answer(error, Some(&request));
                    break;
                }
                Err(Failure::Client(e)) => {
                    if is_reset(&e) {
                        log::info!("{} Peer reset {}", self.peer.ip(), request.line);
                    }
                    break;
                }
                Err(Failure::OriginBrokeOff(e)) => {
                    let origin = self
                        .upstream
                        .as_ref()
                        .map_or(self.peer.ip(), |u| u.addr.ip());
                    log::info!("{} Peer reset {} ({e})", origin, request.line);
                    break;
                }
            }
        }
        let _ = self.client.shutdown(Shutdown::Both);
    }

    /// Answers `error` with its page, unless the response already started.
    fn answer(&mut self, error: ProxyError, request: Option<&Request>) {
        let line = request.map_or("-", |r| r.line.as_str());
        log::info!(
            "To {} Response HTTP/1.1 {} {} ({line}: {error})",
            self.peer.ip(),
            error.status(),
            error.reason()
        );
        if !self.response_started {
            let _ = self
                .client
                .set_write_timeout(Some(self.shared.rules.timeout));
            let _ = send_error(&mut self.client, error);
            let _ = self.client.shutdown(Shutdown::Write);
            // Leave a moment for the page to be read before the close discards unread request bytes.
            let _ = self
                .client
                .set_read_timeout(Some(Duration::from_millis(200)));
            let mut sink = [0u8; 1024];
            while let Ok(1..) = self.client.read(&mut sink) {}
        }
    }

    /// Reads the next request head (`first`: the connection's first). `Ok(None)`: the client closed, or stayed
    /// idle past the timeout between requests (the normal end of a kept connection); silence before the first
    /// request is 408. The timeout is a deadline for the whole head, so a client sending a byte at a time
    /// (slowloris) does not hold the thread longer.
    fn read_request(&mut self, first: bool) -> Result<Option<Request>, ProxyError> {
        let deadline = Instant::now() + self.shared.rules.timeout;
        loop {
            // Zero would mean "no timeout" to the socket: a deadline passed is a millisecond's wait.
            let left = deadline.saturating_duration_since(Instant::now());
            let _ = self
                .client
                .set_read_timeout(Some(left.max(Duration::from_millis(1))));
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            // The head must fit in HEAD_BUFFER bytes (the inbound buffer is larger, for bodies): what does not
            // is 414 or 431, as on smoltcp, whose head buffer is that size.
            let pending = self.inbound.bytes();
            let window = pending.get(..HEAD_BUFFER).unwrap_or(pending);
            match RequestHead::parse(window, &mut headers)? {
                Some(head) => {
                    let (request, len) =
                        take_request(&self.shared.rules.policy, &head, &mut self.head_out)?;
                    self.head_out_len = len;
                    let head_len = head.head_len;
                    self.inbound.consume(head_len);
                    return Ok(Some(request));
                }
                None if window.len() == HEAD_BUFFER || self.inbound.is_full() => {
                    return Err(RequestHead::incomplete_error(window))
                }
                None => {}
            }
            let had_bytes = !self.inbound.is_empty();
            if Instant::now() >= deadline && (had_bytes || first) {
                return Err(ProxyError::HeadTimeout);
            }
            match self.inbound.fill(&mut self.client) {
                Ok(0) if had_bytes => return Err(ProxyError::MalformedHead),
                Ok(0) => return Ok(None),
                Ok(_) => {}
                Err(e) if is_timeout(&e) && (had_bytes || first) => {
                    return Err(ProxyError::HeadTimeout)
                }
                Err(_) => return Ok(None),
            }
        }
    }

    /// Forwards one request and its response.
    fn exchange(&mut self, request: &Request) -> Result<Next, Failure> {
        let fresh = self.origin(request).map_err(Failure::Answer)?;
        if request.method == Method::Connect {
            return self.tunnel();
        }
        let mut request_body = BodyTracker::new(request.framing);
        if let Err(e) = self.send_head() {
            if fresh {
                return Err(Failure::Answer(ProxyError::OriginReset));
            }
            // A kept origin connection the origin had already closed: once more on a new one.
            log::debug!("reused origin connection failed ({e}); reconnecting");
            self.upstream = None;
            self.origin(request).map_err(Failure::Answer)?;
            self.send_head()
                .map_err(|_| Failure::Answer(ProxyError::OriginReset))?;
        }
        let wants_keep_alive = request.keep_alive;
        // A client that sent `Expect: 100-continue` waits for a go-ahead; give the origin a moment to answer.
        let mut early = None;
        if request.expects_continue && !request_body.is_done() && self.inbound.is_empty() {
            match self.relay_response_head(request, Some(CONTINUE_WAIT), false) {
                Ok(Some(response)) if response.interim => {}
                Ok(Some(response)) => early = Some(response),
                Ok(None) => {}
                Err(failure) => return Err(failure),
            }
        }
        if early.is_none() {
            self.forward_request_body(&mut request_body)?;
        }
        let response = match early {
            Some(response) => response,
            None => loop {
                match self.relay_response_head(
                    request,
                    None,
                    wants_keep_alive && request_body.is_done(),
                )? {
                    Some(response) if response.interim => continue,
                    Some(response) => break response,
                    None => return Err(Failure::Answer(ProxyError::OriginTimeout)),
                }
            },
        };
        self.relay_response_body(response.framing)?;
        if !(response.origin_keep_alive && request_body.is_done() && self.outbound.is_empty()) {
            self.upstream = None;
        }
        match response.client_keep_alive {
            true => Ok(Next::KeepAlive),
            false => Ok(Next::Close),
        }
    }

    /// Makes `self.upstream` a connection to the request's origin: the kept one if it goes there, else a new one
    /// to the first address that accepts. Returns whether the connection is new.
    fn origin(&mut self, request: &Request) -> Result<bool, ProxyError> {
        if let Some(upstream) = &self.upstream {
            if request.method != Method::Connect
                && upstream.host.eq_ignore_ascii_case(&request.host)
                && upstream.port == request.port
                && is_idle(&upstream.stream)
            {
                return Ok(false);
            }
        }
        self.upstream = None;
        self.outbound.consume(usize::MAX);
        let addrs = self.resolve(&request.host, request.port)?;
        let mut error = ProxyError::OriginRefused;
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, self.shared.rules.timeout) {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    self.upstream = Some(Upstream {
                        stream,
                        host: request.host.clone(),
                        port: request.port,
                        addr,
                    });
                    return Ok(true);
                }
                Err(e) if is_timeout(&e) => error = ProxyError::OriginTimeout,
                Err(e) => log::debug!("connect {addr}: {e}"),
            }
        }
        Err(error)
    }

    /// The addresses of `host` the proxy may connect to: `--resolve` first, then an address literal, then the
    /// system's resolver. Addresses outside `--allow-dest` are dropped (403 if none is left); the proxy's own
    /// address is a loop (508).
    fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, ProxyError> {
        let policy = &self.shared.rules.policy;
        let addrs: Vec<SocketAddr> = match policy.static_address(host) {
            Some(v4) => vec![SocketAddr::new(IpAddr::V4(v4), port)],
            None => match host.parse::<IpAddr>() {
                Ok(ip) => vec![SocketAddr::new(ip, port)],
                Err(_) if !self.shared.rules.system_dns => {
                    return Err(ProxyError::OriginUnresolvable)
                }
                Err(_) => (host, port)
                    .to_socket_addrs()
                    .map_err(|_| ProxyError::OriginUnresolvable)?
                    .collect(),
            },
        };
        if addrs.is_empty() {
            return Err(ProxyError::OriginUnresolvable);
        }
        if addrs.iter().any(|a| self.is_self(*a)) {
            return Err(ProxyError::Loop);
        }
        let allowed: Vec<SocketAddr> = addrs
            .into_iter()
            .filter(|a| match v4_of(a.ip()) {
                Some(v4) => policy.check_destination(v4).is_ok(),
                None => policy.allow_destinations.is_empty(),
            })
            .collect();
        match allowed.is_empty() {
            true => Err(ProxyError::DestinationNotAllowed),
            false => Ok(allowed),
        }
    }

    /// Whether `addr` is the proxy itself.
    fn is_self(&self, addr: SocketAddr) -> bool {
        crate::proxy::event_loop::is_proxy_itself(addr, self.shared.own)
    }

    /// Sends the rewritten request head (and, for a fresh request, sets the origin's read timeout).
    fn send_head(&mut self) -> io::Result<()> {
        let timeout = self.shared.rules.timeout;
        let head = self.head_out.get(..self.head_out_len).unwrap_or(&[]);
        let upstream = self
            .upstream
            .as_mut()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))?;
        upstream.stream.set_read_timeout(Some(timeout))?;
        upstream.stream.set_write_timeout(Some(timeout))?;
        upstream.stream.write_all(head)
    }

    /// Streams the request body from the client to the origin, leaving any byte after it (a pipelined request)
    /// in `inbound`.
    fn forward_request_body(&mut self, body: &mut BodyTracker) -> Result<(), Failure> {
        while !body.is_done() {
            if self.inbound.is_empty() {
                match self.inbound.fill(&mut self.client) {
                    Ok(0) => return Err(Failure::Client(io::ErrorKind::UnexpectedEof.into())),
                    Ok(_) => {}
                    Err(e) if is_timeout(&e) => {
                        return Err(Failure::Answer(ProxyError::HeadTimeout))
                    }
                    Err(e) => return Err(Failure::Client(e)),
                }
            }
            let n = body
                .advance(self.inbound.bytes())
                .map_err(|_| Failure::Answer(ProxyError::MalformedBody))?;
            let chunk = self.inbound.bytes().get(..n).unwrap_or(&[]);
            let upstream = self
                .upstream
                .as_mut()
                .ok_or(Failure::Answer(ProxyError::OriginReset))?;
            upstream
                .stream
                .write_all(chunk)
                .map_err(|_| Failure::Answer(ProxyError::OriginReset))?;
            self.inbound.consume(n);
        }
        Ok(())
    }

    /// Reads the origin's next response head and sends it on to the client. `wait` bounds the wait for its
    /// first byte (`Ok(None)` when it passes); `client_keep_alive` is whether the client connection may be
    /// kept, as far as the request goes.
    fn relay_response_head(
        &mut self,
        request: &Request,
        wait: Option<Duration>,
        client_keep_alive: bool,
    ) -> Result<Option<ResponseSummary>, Failure> {
        let timeout = self.shared.rules.timeout;
        let pseudonym = self.shared.rules.policy.pseudonym;
        let upstream = self
            .upstream
            .as_mut()
            .ok_or(Failure::Answer(ProxyError::OriginReset))?;
        let origin_ip = upstream.addr.ip();
        let _ = upstream
            .stream
            .set_read_timeout(Some(wait.unwrap_or(timeout)));
        loop {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            if let Some(head) =
                ResponseHead::parse(self.outbound.bytes(), &mut headers, request.method)
                    .map_err(Failure::Answer)?
            {
                log::info!("To {origin_ip} Response {head}");
                let keep = client_keep_alive && head.framing != BodyFraming::UntilClose;
                let summary = ResponseSummary {
                    interim: head.is_interim(),
                    framing: head.framing,
                    origin_keep_alive: head.keep_alive,
                    client_keep_alive: keep,
                };
                let head_len = head.head_len;
                // An HTTP/1.0 client does not know interim responses: they are not sent to it.
                let send = !(summary.interim && request.minor_version == 0);
                let mut out = HeadWriter::new(&mut self.head_out);
                client_response(&head, pseudonym, request.minor_version, keep, &mut out)
                    .map_err(|_| Failure::Answer(ProxyError::BadOriginResponse))?;
                let len = out.len();
                self.outbound.consume(head_len);
                if send {
                    self.response_started = true;
                    let head = self.head_out.get(..len).unwrap_or(&[]);
                    self.client.write_all(head).map_err(Failure::Client)?;
                }
                if let Some(upstream) = &self.upstream {
                    let _ = upstream.stream.set_read_timeout(Some(timeout));
                }
                return Ok(Some(summary));
            }
            if self.outbound.is_full() {
                return Err(Failure::Answer(ProxyError::BadOriginResponse));
            }
            let upstream = self
                .upstream
                .as_mut()
                .ok_or(Failure::Answer(ProxyError::OriginReset))?;
            match self.outbound.fill(&mut upstream.stream) {
                Ok(0) => return Err(Failure::Answer(ProxyError::OriginReset)),
                Ok(_) => {}
                Err(e) if is_timeout(&e) && wait.is_some() && self.outbound.is_empty() => {
                    return Ok(None)
                }
                Err(e) if is_timeout(&e) => return Err(Failure::Answer(ProxyError::OriginTimeout)),
                Err(_) => return Err(Failure::Answer(ProxyError::OriginReset)),
            }
        }
    }

    /// Streams the response body from the origin to the client.
    fn relay_response_body(&mut self, framing: BodyFraming) -> Result<(), Failure> {
        let mut body = BodyTracker::new(framing);
        while !body.is_done() {
            if self.outbound.is_empty() {
                let upstream = self
                    .upstream
                    .as_mut()
                    .ok_or(Failure::Answer(ProxyError::OriginReset))?;
                match self.outbound.fill(&mut upstream.stream) {
                    Ok(0) if body.ends_at_close() => return Ok(()),
                    Ok(0) => {
                        return Err(Failure::OriginBrokeOff(io::ErrorKind::UnexpectedEof.into()))
                    }
                    Ok(_) => {}
                    Err(e) => return Err(Failure::OriginBrokeOff(e)),
                }
            }
            let n = body.advance(self.outbound.bytes()).map_err(|_| {
                Failure::OriginBrokeOff(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "malformed chunked body",
                ))
            })?;
            let chunk = self.outbound.bytes().get(..n).unwrap_or(&[]);
            self.client.write_all(chunk).map_err(Failure::Client)?;
            self.outbound.consume(n);
        }
        Ok(())
    }

    /// Answers `CONNECT` and copies bytes both ways until both sides have closed.
    fn tunnel(&mut self) -> Result<Next, Failure> {
        let pseudonym = self.shared.rules.policy.pseudonym;
        let mut out = HeadWriter::new(&mut self.head_out);
        tunnel_established(pseudonym, &mut out)
            .map_err(|_| Failure::Answer(ProxyError::HeadTooLarge))?;
        let len = out.len();
        self.response_started = true;
        self.client
            .write_all(self.head_out.get(..len).unwrap_or(&[]))
            .map_err(Failure::Client)?;
        let upstream = self
            .upstream
            .take()
            .ok_or(Failure::Answer(ProxyError::OriginReset))?;
        let mut origin = upstream.stream;
        // Bytes the client sent right behind its head (a TLS ClientHello) go first.
        origin
            .write_all(self.inbound.bytes())
            .map_err(Failure::OriginBrokeOff)?;
        self.inbound.consume(usize::MAX);
        for stream in [&self.client, &origin] {
            let _ = stream.set_read_timeout(Some(TUNNEL_IDLE));
            let _ = stream.set_write_timeout(Some(TUNNEL_IDLE));
        }
        let (mut origin_in, mut client_out) = match (origin.try_clone(), self.client.try_clone()) {
            (Ok(o), Ok(c)) => (o, c),
            _ => return Err(Failure::Answer(ProxyError::OriginReset)),
        };
        let mut back = std::mem::replace(&mut self.outbound, Pending::new(0));
        let mut forth = std::mem::replace(&mut self.inbound, Pending::new(0));
        let client_in = &mut self.client;
        std::thread::scope(|scope| {
            scope.spawn(move || copy_until_closed(&mut origin_in, &mut client_out, &mut back.buf));
            copy_until_closed(client_in, &mut origin, &mut forth.buf);
        });
        Ok(Next::Close)
    }
}

/// Checks a parsed head and writes the request to send the origin into `head_out`; returns what the proxy keeps
/// of the request and the length written.
fn take_request(
    policy: &ProxyPolicy<'_>,
    head: &RequestHead<'_, '_>,
    head_out: &mut [u8],
) -> Result<(Request, usize), ProxyError> {
    let authority = head.target.authority();
    let request = Request {
        method: head.method,
        host: authority.host.to_owned(),
        port: authority.port,
        framing: head.framing,
        keep_alive: head.keep_alive,
        minor_version: head.minor_version,
        expects_continue: head.expects_continue(),
        line: head.to_string(),
    };
    if head.came_through(policy.pseudonym) {
        return Err(ProxyError::Loop);
    }
    if head.method == Method::Connect {
        policy.check_connect_port(authority.port)?;
        return Ok((request, 0));
    }
    let mut out = HeadWriter::new(head_out);
    upstream_request(head, policy.pseudonym, true, &mut out)
        .map_err(|_| ProxyError::HeadTooLarge)?;
    Ok((request, out.len()))
}

/// What the proxy learnt from a response head it relayed.
struct ResponseSummary {
    interim: bool,
    framing: BodyFraming,
    origin_keep_alive: bool,
    client_keep_alive: bool,
}

/// Copies `from` to `to` until `from` closes (then closes `to`'s sending side) or either fails.
fn copy_until_closed(from: &mut TcpStream, to: &mut TcpStream, buf: &mut [u8]) {
    loop {
        match from.read(buf) {
            Ok(0) => break,
            Ok(n) => {
                if to.write_all(buf.get(..n).unwrap_or(&[])).is_err() {
                    let _ = from.shutdown(Shutdown::Read);
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// Whether a kept origin connection is still open and silent (the origin may have closed it while it idled).
fn is_idle(stream: &TcpStream) -> bool {
    if stream.set_nonblocking(true).is_err() {
        return false;
    }
    let idle =
        matches!(stream.peek(&mut [0u8; 1]), Err(ref e) if e.kind() == io::ErrorKind::WouldBlock);
    stream.set_nonblocking(false).is_ok() && idle
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

fn is_reset(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted
    )
}
