//! [`ProxyConnection`]: one client of the proxy, from its SYN to its last byte, as a state machine over two
//! smoltcp sockets (the client's and the origin's) and two fixed buffers.
//!
//! ```text
//!  Listening ──SYN──▶ ReadingHead ──head──▶ Resolving ──address──▶ Connecting ──accepted──▶ Exchanging
//!      ▲                  ▲   │ (name in --resolve or a literal skips Resolving)               │   │
//!      │                  │   │                                           CONNECT: Tunnel ◀─────┘   │
//!      │                  │   └──────────────── keep-alive: next request ◀─────────────────────────┘
//!      │                  └─▶ Answering (an error page, then close)
//!      └──────────────────── Closing (our FIN is out; listen again once the socket is closed)
//! ```
//!
//! Heads are read with `peek`, parsed in place, and only then taken off the socket, so a request body and any
//! pipelined request stay in the client socket's receive buffer until their turn. Bodies move socket to socket
//! through the host's scratch buffer, never more than the receiving socket has room for, and a
//! [`BodyTracker`] stops each copy at the body's last byte. Nothing here allocates or reads a clock.

use core::fmt::Write;

use heapless::String;
use smoltcp::iface::{Context, SocketHandle, SocketSet};
use smoltcp::socket::{dns, tcp};
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{DnsQueryType, IpAddress, IpEndpoint, Ipv4Address};

use crate::http::body::BodyTracker;
use crate::http::request::Method;
use crate::http::rewrite::{client_response, tunnel_established, upstream_request};
use crate::http::{BodyFraming, HeadWriter, ProxyError, RequestHead, ResponseHead, MAX_HEADERS};
use crate::tcp_server::{KEEP_ALIVE, PEER_TIMEOUT, SOCKET_TIMEOUT};

use super::policy::ProxyPolicy;

/// A tunnel with no byte either way for this long is closed.
pub const TUNNEL_IDLE: Duration = Duration::from_secs(300);

/// The longest request line kept for logs (longer ones are cut).
const LOG_LINE: usize = 160;

/// How long an aborted client socket may wait for its reset to go out before it listens again anyway
/// (listening forgets the connection, and a reset not yet sent with it: the client would wait in vain).
const RESET_GRACE: Duration = Duration::from_secs(1);

/// Where a proxy connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionState {
    /// The client socket listens for a SYN.
    Listening,
    /// A client is connected; its request head is arriving.
    ReadingHead,
    /// The origin's name is being looked up with the DNS socket.
    Resolving,
    /// The origin socket's SYN is out.
    Connecting,
    /// The request goes to the origin and its response comes back.
    Exchanging(ResponsePhase),
    /// `CONNECT`: bytes both ways until both sides close.
    Tunnel,
    /// The proxy's own answer (an error page) is going out; the connection closes after it.
    Answering,
    /// The client connection is closing; the socket listens again once it is closed.
    Closing,
}

/// How far the origin's response has come, within [`ConnectionState::Exchanging`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponsePhase {
    /// Waiting for (more of) the response head.
    Head,
    /// Streaming the response body.
    Body,
}

/// What the proxy keeps of the request being served.
#[derive(Debug)]
struct Exchange {
    method: Method,
    minor_version: u8,
    /// The client wants the connection kept (and the framing allows it so far).
    keep_alive: bool,
    host: String<253>,
    port: u16,
    origin: Option<Ipv4Address>,
    request_body: BodyTracker,
    response_body: BodyTracker,
    origin_keep_alive: bool,
    /// Whether any byte of the response has been queued to the client.
    response_started: bool,
    /// The request line, for logs.
    line: String<LOG_LINE>,
}

/// The buffers one proxy connection owns, sized by the host at start-up.
#[derive(Debug)]
pub struct ConnectionBuffers<'a> {
    /// Request and response heads are copied here to be parsed (their longest allowed size).
    pub head: &'a mut [u8],
    /// Heads the proxy writes (rewritten requests and responses, error pages): the head size plus room for
    /// what the proxy adds.
    pub out: &'a mut [u8],
}

/// What the whole server shares with each connection while it polls.
pub(crate) struct Shared<'p, 'c> {
    pub policy: &'p ProxyPolicy<'p>,
    pub port: u16,
    pub own_address: Option<Ipv4Address>,
    pub timeout: Duration,
    pub dns: Option<SocketHandle>,
    pub cx: &'c mut Context,
    pub now: Instant,
    pub next_port: &'c mut u16,
}

/// Counters of one connection's (and the server's) work.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Client connections accepted.
    pub accepted: u64,
    /// Requests read.
    pub requests: u64,
    /// Responses relayed from origins.
    pub responses: u64,
    /// Requests answered with an error page.
    pub errors: u64,
    /// CONNECT tunnels opened.
    pub tunnels: u64,
    /// Body bytes relayed from clients to origins and back.
    pub body_bytes: u64,
}

impl ProxyStats {
    /// Counts `n` relayed body bytes; returns whether any moved.
    fn count_body(&mut self, n: usize) -> bool {
        self.body_bytes += n as u64;
        n > 0
    }
}

/// One client of the proxy: a client socket, an origin socket and their buffers.
pub struct ProxyConnection<'a> {
    client: SocketHandle,
    upstream: SocketHandle,
    buffers: ConnectionBuffers<'a>,
    /// `buffers.out[sent..len]` is still to go.
    out_len: usize,
    out_sent: usize,
    state: ConnectionState,
    deadline: Instant,
    client_ip: Ipv4Address,
    exchange: Option<Exchange>,
    /// The origin the (still open) origin socket is connected to, if it may carry the next request.
    kept_origin: Option<(String<253>, u16)>,
    /// The proxy's port, which the client socket listens on.
    port: u16,
    /// The DNS query under way in [`ConnectionState::Resolving`].
    query: Option<dns::QueryHandle>,
    /// Whether a request was read on this client connection: a client silent past the timeout before its first
    /// request is answered 408; between requests, silence is the normal end of a kept connection.
    served: bool,
    stats: ProxyStats,
}

impl core::fmt::Debug for ProxyConnection<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ProxyConnection")
            .field("client", &self.client)
            .field("upstream", &self.upstream)
            .field("state", &self.state)
            .field("client_ip", &self.client_ip)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl<'a> ProxyConnection<'a> {
    /// A connection over two closed sockets the host created. [`ProxyConnection::poll`] starts listening.
    pub fn new(
        client: SocketHandle,
        upstream: SocketHandle,
        buffers: ConnectionBuffers<'a>,
    ) -> ProxyConnection<'a> {
        ProxyConnection {
            client,
            upstream,
            buffers,
            out_len: 0,
            out_sent: 0,
            state: ConnectionState::Closing,
            deadline: Instant::ZERO,
            client_ip: Ipv4Address::UNSPECIFIED,
            exchange: None,
            kept_origin: None,
            port: 0,
            query: None,
            served: false,
            stats: ProxyStats::default(),
        }
    }

    /// Where the connection is.
    pub fn state(&self) -> ConnectionState {
        self.state
    }

    /// What this connection has done.
    pub fn stats(&self) -> ProxyStats {
        self.stats
    }

    /// When this connection next needs a poll without any packet arriving (a deadline).
    pub fn deadline(&self) -> Option<Instant> {
        match self.state {
            ConnectionState::Listening => None,
            _ => Some(self.deadline),
        }
    }

    /// Moves the connection as far as its sockets allow. Returns whether anything moved.
    pub(crate) fn poll(
        &mut self,
        sockets: &mut SocketSet<'_>,
        shared: &mut Shared<'_, '_>,
        scratch: &mut [u8],
    ) -> bool {
        let mut moved = false;
        // Each step may enable the next (a head parsed, then the origin resolved from `--resolve`, …).
        for _ in 0..8 {
            let before = self.state;
            let step = match self.state {
                ConnectionState::Listening => self.accept(sockets, shared),
                ConnectionState::ReadingHead => self.read_head(sockets, shared),
                ConnectionState::Resolving => self.resolve(sockets, shared),
                ConnectionState::Connecting => self.connecting(sockets, shared),
                ConnectionState::Exchanging(_) => self.exchanging(sockets, shared, scratch),
                ConnectionState::Tunnel => self.tunnel(sockets, shared, scratch),
                ConnectionState::Answering => self.answering(sockets, shared),
                ConnectionState::Closing => self.closing(sockets, shared),
            };
            let step = match step {
                Ok(moved) => moved,
                Err(error) => {
                    self.answer(sockets, error, shared.now);
                    true
                }
            };
            moved |= step;
            if self.state == before && !step {
                break;
            }
        }
        moved
    }

    fn accept(
        &mut self,
        sockets: &mut SocketSet<'_>,
        shared: &mut Shared<'_, '_>,
    ) -> Result<bool, ProxyError> {
        let client = sockets.get_mut::<tcp::Socket>(self.client);
        match client.state() {
            tcp::State::Listen | tcp::State::SynReceived => return Ok(false),
            // A client may have sent its request and its FIN before this poll: serve it all the same.
            tcp::State::Established | tcp::State::CloseWait => {}
            // A handshake that timed out, or a connection reset before it was served: listen again.
            _ => return Ok(self.listen_again(sockets)),
        }
        self.stats.accepted += 1;
        self.client_ip = match client.remote_endpoint() {
            Some(IpEndpoint {
                addr: IpAddress::Ipv4(ip),
                ..
            }) => ip,
            _ => Ipv4Address::UNSPECIFIED,
        };
        self.exchange = None;
        self.served = false;
        self.start_reading(shared.now, shared.timeout);
        shared.policy.check_client(self.client_ip).map(|()| true)
    }

    fn start_reading(&mut self, now: Instant, timeout: Duration) {
        self.state = ConnectionState::ReadingHead;
        self.deadline = now + timeout;
    }

    fn read_head(
        &mut self,
        sockets: &mut SocketSet<'_>,
        shared: &mut Shared<'_, '_>,
    ) -> Result<bool, ProxyError> {
        let client = sockets.get_mut::<tcp::Socket>(self.client);
        if !client.is_open() || client.state() == tcp::State::TimeWait {
            return Ok(self.listen_again(sockets));
        }
        let available = client.peek_slice(self.buffers.head).unwrap_or(0);
        let bytes = self.buffers.head.get(..available).unwrap_or(&[]);
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let head = match RequestHead::parse(bytes, &mut headers)? {
            Some(head) => head,
            None if available == self.buffers.head.len() => {
                return Err(RequestHead::incomplete_error(bytes))
            }
            None if !client.may_recv() || shared.now >= self.deadline => {
                return match available {
                    // A client that never sent a request and let the timeout pass (an idle or slowloris
                    // connection): 408, then closed.
                    0 if client.may_recv() && !self.served => Err(ProxyError::HeadTimeout),
                    // A kept connection the client closed or left idle: the normal end.
                    0 => {
                        client.close();
                        self.state = ConnectionState::Closing;
                        self.deadline = shared.now + PEER_TIMEOUT;
                        Ok(true)
                    }
                    _ if shared.now >= self.deadline => Err(ProxyError::HeadTimeout),
                    _ => Err(ProxyError::MalformedHead),
                };
            }
            None => return Ok(false),
        };
        self.stats.requests += 1;
        self.served = true;
        let mut line = String::new();
        let _ = write!(line, "{head}");
        log::info!("From {} Request {}", self.client_ip, line);
        let authority = head.target.authority();
        let mut host = String::new();
        host.push_str(authority.host)
            .map_err(|()| ProxyError::BadTarget)?;
        let head_len = head.head_len;
        let exchange = Exchange {
            method: head.method,
            minor_version: head.minor_version,
            keep_alive: head.keep_alive,
            host,
            port: authority.port,
            origin: None,
            request_body: BodyTracker::new(head.framing),
            response_body: BodyTracker::new(BodyFraming::None),
            origin_keep_alive: false,
            response_started: false,
            line,
        };
        let checks = if head.came_through(shared.policy.pseudonym) {
            Err(ProxyError::Loop)
        } else if head.method == Method::Connect {
            shared.policy.check_connect_port(authority.port)
        } else {
            let mut out = HeadWriter::new(self.buffers.out);
            let written = upstream_request(&head, shared.policy.pseudonym, true, &mut out);
            self.out_len = out.len();
            self.out_sent = 0;
            written.map_err(|_| ProxyError::HeadTooLarge)
        };
        self.exchange = Some(exchange);
        discard(client, head_len);
        checks?;
        self.deadline = shared.now + shared.timeout;
        self.find_origin(sockets, shared)
    }

    /// The origin's address from `--resolve` or a literal, else a DNS query.
    fn find_origin(
        &mut self,
        sockets: &mut SocketSet<'_>,
        shared: &mut Shared<'_, '_>,
    ) -> Result<bool, ProxyError> {
        let exchange = self.exchange.as_ref().ok_or(ProxyError::MalformedHead)?;
        if let Some(address) = shared.policy.static_address(&exchange.host) {
            return self.connect(sockets, shared, address);
        }
        let dns_handle = shared.dns.ok_or(ProxyError::OriginUnresolvable)?;
        let dns = sockets.get_mut::<dns::Socket>(dns_handle);
        match dns.start_query(shared.cx, &exchange.host, DnsQueryType::A) {
            Ok(query) => {
                self.query = Some(query);
                self.state = ConnectionState::Resolving;
                Ok(true)
            }
            Err(e) => {
                log::info!("cannot look up {}: {e}", exchange.host);
                Err(ProxyError::OriginUnresolvable)
            }
        }
    }

    fn resolve(
        &mut self,
        sockets: &mut SocketSet<'_>,
        shared: &mut Shared<'_, '_>,
    ) -> Result<bool, ProxyError> {
        let query = self.query.ok_or(ProxyError::OriginUnresolvable)?;
        let dns_handle = shared.dns.ok_or(ProxyError::OriginUnresolvable)?;
        let dns = sockets.get_mut::<dns::Socket>(dns_handle);
        let result = dns.get_query_result(query);
        if !matches!(result, Err(dns::GetQueryResultError::Pending)) {
            self.query = None;
        }
        match result {
            Ok(addresses) => {
                let address = addresses.iter().find_map(|a| match a {
                    IpAddress::Ipv4(v4) => Some(*v4),
                    #[allow(unreachable_patterns)]
                    _ => None,
                });
                match address {
                    Some(address) => self.connect(sockets, shared, address),
                    None => Err(ProxyError::OriginUnresolvable),
                }
            }
            Err(dns::GetQueryResultError::Pending) if shared.now >= self.deadline => {
                dns.cancel_query(query);
                self.query = None;
                Err(ProxyError::OriginUnresolvable)
            }
            Err(dns::GetQueryResultError::Pending) => Ok(false),
            Err(dns::GetQueryResultError::Failed) => Err(ProxyError::OriginUnresolvable),
        }
    }

    /// Checks `address`, then reuses the kept origin connection or opens a new one.
    fn connect(
        &mut self,
        sockets: &mut SocketSet<'_>,
        shared: &mut Shared<'_, '_>,
        address: Ipv4Address,
    ) -> Result<bool, ProxyError> {
        let exchange = self.exchange.as_mut().ok_or(ProxyError::MalformedHead)?;
        exchange.origin = Some(address);
        let is_self = exchange.port == shared.port
            && (Some(address) == shared.own_address
                || address.is_loopback()
                || address.is_unspecified());
        if is_self {
            return Err(ProxyError::Loop);
        }
        shared.policy.check_destination(address)?;
        let upstream = sockets.get_mut::<tcp::Socket>(self.upstream);
        let reusable = self.kept_origin.take().is_some_and(|(host, port)| {
            host.eq_ignore_ascii_case(&exchange.host) && port == exchange.port
        }) && exchange.method != Method::Connect
            && upstream.state() == tcp::State::Established
            && upstream.recv_queue() == 0;
        if reusable {
            self.state = ConnectionState::Connecting;
            return Ok(true);
        }
        if upstream.is_open() {
            upstream.abort();
        }
        let local_port = next_ephemeral(shared.next_port);
        upstream
            .connect(
                shared.cx,
                (IpAddress::Ipv4(address), exchange.port),
                local_port,
            )
            .map_err(|e| {
                log::info!("cannot connect to {address}:{}: {e}", exchange.port);
                ProxyError::OriginRefused
            })?;
        upstream.set_timeout(Some(SOCKET_TIMEOUT));
        upstream.set_keep_alive(Some(KEEP_ALIVE));
        upstream.set_nagle_enabled(false);
        self.state = ConnectionState::Connecting;
        Ok(true)
    }

    fn connecting(
        &mut self,
        sockets: &mut SocketSet<'_>,
        shared: &mut Shared<'_, '_>,
    ) -> Result<bool, ProxyError> {
        let upstream = sockets.get_mut::<tcp::Socket>(self.upstream);
        match upstream.state() {
            tcp::State::Established => {}
            tcp::State::SynSent | tcp::State::SynReceived if shared.now < self.deadline => {
                return Ok(false)
            }
            tcp::State::SynSent | tcp::State::SynReceived => {
                upstream.abort();
                return Err(ProxyError::OriginTimeout);
            }
            _ => return Err(ProxyError::OriginRefused),
        }
        let exchange = self.exchange.as_mut().ok_or(ProxyError::MalformedHead)?;
        if exchange.method == Method::Connect {
            self.stats.tunnels += 1;
            let mut out = HeadWriter::new(self.buffers.out);
            tunnel_established(shared.policy.pseudonym, &mut out)
                .map_err(|_| ProxyError::HeadTooLarge)?;
            self.out_len = out.len();
            self.out_sent = 0;
            exchange.response_started = true;
            self.state = ConnectionState::Tunnel;
            self.deadline = shared.now + TUNNEL_IDLE;
        } else {
            self.state = ConnectionState::Exchanging(ResponsePhase::Head);
        }
        Ok(true)
    }

    fn exchanging(
        &mut self,
        sockets: &mut SocketSet<'_>,
        shared: &mut Shared<'_, '_>,
        scratch: &mut [u8],
    ) -> Result<bool, ProxyError> {
        let ConnectionState::Exchanging(phase) = self.state else {
            return Ok(false);
        };
        let mut moved = false;
        if sockets.get_mut::<tcp::Socket>(self.client).state() == tcp::State::Closed {
            // The client reset the connection (or stopped answering): neither its request nor the response can
            // be completed.
            let line = self.exchange.as_ref().map_or("-", |e| e.line.as_str());
            log::info!("{} Peer reset {line} (client reset)", self.client_ip);
            let started = self.exchange.as_ref().is_some_and(|e| e.response_started);
            return Ok(match started {
                true => self.abort_both(sockets, shared),
                false => self.abort_client_close_origin(sockets, shared),
            });
        }
        let head_sent = self.out_sent == self.out_len;
        // The request head first, then its body; the response may start before the body is done.
        if phase == ResponsePhase::Head && !head_sent {
            moved |= self.drain_out(sockets, self.upstream);
        }
        let head_sent = self.out_sent == self.out_len;
        let exchange = self.exchange.as_mut().ok_or(ProxyError::MalformedHead)?;
        if head_sent || phase == ResponsePhase::Body {
            let (client, upstream) = (self.client, self.upstream);
            match relay(
                sockets,
                client,
                upstream,
                Some(&mut exchange.request_body),
                scratch,
            ) {
                Ok(n) => moved |= self.stats.count_body(n),
                Err(_) => return Err(ProxyError::MalformedBody),
            }
            if !exchange.request_body.is_done()
                && finished_sending(sockets.get_mut::<tcp::Socket>(self.client))
            {
                log::info!(
                    "{} Peer reset {} (client closed mid-body)",
                    self.client_ip,
                    exchange.line
                );
                return Ok(self.abort_client_close_origin(sockets, shared));
            }
        }
        match phase {
            ResponsePhase::Head if head_sent => moved |= self.response_head(sockets, shared)?,
            ResponsePhase::Head => {}
            ResponsePhase::Body => moved |= self.response_body(sockets, shared, scratch)?,
        }
        if moved {
            self.deadline = shared.now + shared.timeout;
        } else if shared.now >= self.deadline {
            let started = self.exchange.as_ref().is_some_and(|e| e.response_started);
            if !started {
                return Err(ProxyError::OriginTimeout);
            }
            return Ok(self.abort_both(sockets, shared));
        }
        Ok(moved)
    }

    fn response_head(
        &mut self,
        sockets: &mut SocketSet<'_>,
        shared: &mut Shared<'_, '_>,
    ) -> Result<bool, ProxyError> {
        let exchange = self.exchange.as_mut().ok_or(ProxyError::MalformedHead)?;
        let upstream = sockets.get_mut::<tcp::Socket>(self.upstream);
        let available = upstream.peek_slice(self.buffers.head).unwrap_or(0);
        let bytes = self.buffers.head.get(..available).unwrap_or(&[]);
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let head = match ResponseHead::parse(bytes, &mut headers, exchange.method)? {
            Some(head) => head,
            None if available == self.buffers.head.len() => {
                return Err(ProxyError::BadOriginResponse)
            }
            None if !upstream.may_recv() => return Err(ProxyError::OriginReset),
            None => return Ok(false),
        };
        log::info!(
            "To {} Response {}",
            exchange.origin.unwrap_or(Ipv4Address::UNSPECIFIED),
            head
        );
        let interim = head.is_interim();
        let keep = exchange.keep_alive
            && head.framing != BodyFraming::UntilClose
            && exchange.request_body.is_done();
        let mut out = HeadWriter::new(self.buffers.out);
        client_response(
            &head,
            shared.policy.pseudonym,
            exchange.minor_version,
            keep,
            &mut out,
        )
        .map_err(|_| ProxyError::BadOriginResponse)?;
        // An HTTP/1.0 client does not know interim responses: they are not sent to it.
        self.out_len = if interim && exchange.minor_version == 0 {
            0
        } else {
            out.len()
        };
        self.out_sent = 0;
        let head_len = head.head_len;
        if !interim {
            self.stats.responses += 1;
            exchange.keep_alive = keep;
            exchange.origin_keep_alive = head.keep_alive;
            exchange.response_body = BodyTracker::new(head.framing);
            self.state = ConnectionState::Exchanging(ResponsePhase::Body);
        }
        exchange.response_started |= self.out_len > 0;
        discard(upstream, head_len);
        if interim {
            // The interim head goes out now; the final one is parsed into the same buffer afterwards.
            self.drain_out(sockets, self.client);
            if self.out_sent < self.out_len {
                // No room for it in the client's send buffer: rare; treat as a broken client.
                return Ok(self.abort_both(sockets, shared));
            }
        }
        Ok(true)
    }

    fn response_body(
        &mut self,
        sockets: &mut SocketSet<'_>,
        shared: &mut Shared<'_, '_>,
        scratch: &mut [u8],
    ) -> Result<bool, ProxyError> {
        let mut moved = false;
        if self.out_sent < self.out_len {
            moved |= self.drain_out(sockets, self.client);
            if self.out_sent < self.out_len {
                return Ok(moved);
            }
        }
        let exchange = self.exchange.as_mut().ok_or(ProxyError::MalformedHead)?;
        let (client, upstream) = (self.client, self.upstream);
        match relay(
            sockets,
            upstream,
            client,
            Some(&mut exchange.response_body),
            scratch,
        ) {
            Ok(n) => moved |= self.stats.count_body(n),
            Err(_) => {
                log::info!(
                    "{} sent a malformed chunked body for {}",
                    exchange.origin.unwrap_or(Ipv4Address::UNSPECIFIED),
                    exchange.line
                );
                return Ok(self.abort_both(sockets, shared));
            }
        }
        let origin_done = finished_sending(sockets.get_mut::<tcp::Socket>(upstream));
        if !exchange.response_body.is_done() {
            if origin_done && exchange.response_body.ends_at_close() {
                exchange.keep_alive = false;
            } else if origin_done {
                let origin = exchange.origin.unwrap_or(Ipv4Address::UNSPECIFIED);
                let why = match sockets.get_mut::<tcp::Socket>(upstream).state() {
                    tcp::State::Closed => "origin reset mid-response",
                    _ => "origin closed mid-response",
                };
                log::info!("{} Peer reset {} ({why})", origin, exchange.line);
                return Ok(self.abort_both(sockets, shared));
            } else {
                return Ok(moved);
            }
        }
        if !exchange.request_body.is_done() {
            // The origin answered before taking the whole body: the client connection cannot be reused.
            exchange.keep_alive = false;
            if !origin_done {
                return Ok(moved);
            }
        }
        self.finish_exchange(sockets, shared);
        Ok(true)
    }

    /// The response is whole: keep or close the origin connection, then read the next request or close.
    fn finish_exchange(&mut self, sockets: &mut SocketSet<'_>, shared: &mut Shared<'_, '_>) {
        let Some(exchange) = self.exchange.take() else {
            return;
        };
        let upstream = sockets.get_mut::<tcp::Socket>(self.upstream);
        if exchange.origin_keep_alive && exchange.request_body.is_done() && upstream.may_recv() {
            self.kept_origin = Some((exchange.host, exchange.port));
        } else if upstream.state() == tcp::State::CloseWait {
            upstream.close();
        } else {
            upstream.abort();
        }
        let client = sockets.get_mut::<tcp::Socket>(self.client);
        if exchange.keep_alive {
            self.start_reading(shared.now, shared.timeout);
        } else {
            client.close();
            self.state = ConnectionState::Closing;
            self.deadline = shared.now + PEER_TIMEOUT;
        }
    }

    fn tunnel(
        &mut self,
        sockets: &mut SocketSet<'_>,
        shared: &mut Shared<'_, '_>,
        scratch: &mut [u8],
    ) -> Result<bool, ProxyError> {
        let mut moved = false;
        if self.out_sent < self.out_len {
            moved |= self.drain_out(sockets, self.client);
            if self.out_sent < self.out_len {
                return Ok(moved);
            }
        }
        let (client, upstream) = (self.client, self.upstream);
        let forth = relay(sockets, client, upstream, None, scratch).unwrap_or(0);
        let back = relay(sockets, upstream, client, None, scratch).unwrap_or(0);
        moved |= self.stats.count_body(forth + back);
        // A side that has sent its FIN (and whose bytes are all across) gets its FIN passed on.
        let mut open = 0;
        for (from, to) in [(client, upstream), (upstream, client)] {
            let from_done = finished_sending(sockets.get_mut::<tcp::Socket>(from));
            let to_socket = sockets.get_mut::<tcp::Socket>(to);
            if from_done && to_socket.may_send() {
                to_socket.close();
                moved = true;
            }
            if !from_done {
                open += 1;
            }
        }
        let client_socket = sockets.get_mut::<tcp::Socket>(client);
        let client_gone = !client_socket.is_open();
        let upstream_gone = !sockets.get_mut::<tcp::Socket>(upstream).is_open();
        if open == 0 || client_gone || upstream_gone || (!moved && shared.now >= self.deadline) {
            self.exchange = None;
            return Ok(self.abort_both_unless_closing(sockets, shared));
        }
        if moved {
            self.deadline = shared.now + TUNNEL_IDLE;
        }
        Ok(moved)
    }

    fn answering(
        &mut self,
        sockets: &mut SocketSet<'_>,
        shared: &mut Shared<'_, '_>,
    ) -> Result<bool, ProxyError> {
        // A client that never reads its answer is given up after PEER_TIMEOUT.
        if self.deadline == Instant::ZERO {
            self.deadline = shared.now + PEER_TIMEOUT;
        }
        let moved = self.drain_out(sockets, self.client);
        let client = sockets.get_mut::<tcp::Socket>(self.client);
        if self.out_sent == self.out_len || !client.may_send() {
            client.close();
            self.state = ConnectionState::Closing;
            self.deadline = shared.now + PEER_TIMEOUT;
            return Ok(true);
        }
        if shared.now >= self.deadline {
            client.abort();
            self.state = ConnectionState::Closing;
            self.deadline = shared.now + RESET_GRACE;
            return Ok(true);
        }
        Ok(moved)
    }

    fn closing(
        &mut self,
        sockets: &mut SocketSet<'_>,
        shared: &mut Shared<'_, '_>,
    ) -> Result<bool, ProxyError> {
        let client = sockets.get_mut::<tcp::Socket>(self.client);
        // Unread bytes are dropped, so the client's FIN (and anything it still sends) is acknowledged.
        while let Ok(1..) = client.recv(|b| (b.len(), b.len())) {}
        match client.state() {
            // Aborted, and the reset not sent yet (smoltcp sends it on the next egress; listening now would
            // forget it, and the client would never learn that its connection is gone).
            tcp::State::Closed
                if client.remote_endpoint().is_some() && shared.now < self.deadline =>
            {
                Ok(false)
            }
            // Our FIN is acknowledged: TIME-WAIT protects nothing a listening socket needs, so skip its 10 s.
            tcp::State::Closed | tcp::State::TimeWait => Ok(self.listen_again(sockets)),
            _ if shared.now >= self.deadline && self.deadline != Instant::ZERO => {
                client.abort();
                Ok(self.listen_again(sockets))
            }
            _ => Ok(false),
        }
    }

    /// Answers `error` with its page if no response byte went out yet, else aborts; either way the connection
    /// closes afterwards.
    fn answer(&mut self, sockets: &mut SocketSet<'_>, error: ProxyError, now: Instant) {
        self.stats.errors += 1;
        let line = self.exchange.as_ref().map_or("-", |e| e.line.as_str());
        if error == ProxyError::ClientNotAllowed {
            log::info!(
                "From {} Refused {} {}",
                self.client_ip,
                error.status(),
                error.reason()
            );
        } else {
            log::info!(
                "To {} Response HTTP/1.1 {} {} ({line}: {error})",
                self.client_ip,
                error.status(),
                error.reason()
            );
        }
        let started = self.exchange.as_ref().is_some_and(|e| e.response_started);
        self.exchange = None;
        self.kept_origin = None;
        let upstream = sockets.get_mut::<tcp::Socket>(self.upstream);
        if upstream.is_open() {
            upstream.abort();
        }
        let client = sockets.get_mut::<tcp::Socket>(self.client);
        if started || !client.may_send() {
            client.abort();
            self.state = ConnectionState::Closing;
            self.deadline = now + RESET_GRACE;
            return;
        }
        let mut out = HeadWriter::new(self.buffers.out);
        let _ = error.write_response(&mut out);
        self.out_len = out.len();
        self.out_sent = 0;
        self.state = ConnectionState::Answering;
        self.deadline = Instant::ZERO;
    }

    /// Sends what is left of `out` to `to`. Returns whether any byte went.
    fn drain_out(&mut self, sockets: &mut SocketSet<'_>, to: SocketHandle) -> bool {
        let socket = sockets.get_mut::<tcp::Socket>(to);
        let pending = self
            .buffers
            .out
            .get(self.out_sent..self.out_len)
            .unwrap_or(&[]);
        match socket.send_slice(pending) {
            Ok(n) => {
                self.out_sent += n;
                n > 0
            }
            Err(_) => false,
        }
    }

    fn abort_both(&mut self, sockets: &mut SocketSet<'_>, shared: &mut Shared<'_, '_>) -> bool {
        self.exchange = None;
        self.kept_origin = None;
        sockets.get_mut::<tcp::Socket>(self.upstream).abort();
        sockets.get_mut::<tcp::Socket>(self.client).abort();
        self.state = ConnectionState::Closing;
        self.deadline = shared.now + RESET_GRACE;
        true
    }

    /// The client broke off its request before any response byte: the client connection is reset, and the
    /// origin's is closed with a FIN behind the body bytes already queued. A request body never ends at the
    /// close, so the short body tells the origin the upload failed; and a FIN is sent again until it is
    /// acknowledged, where a lone reset lost on the way would leave the origin waiting for the rest.
    fn abort_client_close_origin(
        &mut self,
        sockets: &mut SocketSet<'_>,
        shared: &mut Shared<'_, '_>,
    ) -> bool {
        self.exchange = None;
        self.kept_origin = None;
        sockets.get_mut::<tcp::Socket>(self.upstream).close();
        sockets.get_mut::<tcp::Socket>(self.client).abort();
        self.state = ConnectionState::Closing;
        self.deadline = shared.now + RESET_GRACE;
        true
    }

    /// The end of a tunnel: sockets still closing gracefully are left to finish; the rest are aborted.
    fn abort_both_unless_closing(
        &mut self,
        sockets: &mut SocketSet<'_>,
        shared: &mut Shared<'_, '_>,
    ) -> bool {
        self.kept_origin = None;
        let upstream = sockets.get_mut::<tcp::Socket>(self.upstream);
        if upstream.may_send() || upstream.may_recv() {
            upstream.abort();
        }
        let client = sockets.get_mut::<tcp::Socket>(self.client);
        if client.may_send() {
            client.close();
        }
        self.state = ConnectionState::Closing;
        self.deadline = shared.now + PEER_TIMEOUT;
        true
    }

    /// Puts the client socket back into `Listen` on the proxy's port.
    fn listen_again(&mut self, sockets: &mut SocketSet<'_>) -> bool {
        // An origin connection is never handed from one client to the next. One this proxy closed is left to
        // finish its close (the next connect on this slot aborts it if it has not by then).
        self.kept_origin = None;
        let upstream = sockets.get_mut::<tcp::Socket>(self.upstream);
        let closing = matches!(
            upstream.state(),
            tcp::State::FinWait1
                | tcp::State::FinWait2
                | tcp::State::Closing
                | tcp::State::LastAck
                | tcp::State::TimeWait
        );
        if upstream.is_open() && !closing {
            upstream.abort();
        }
        let client = sockets.get_mut::<tcp::Socket>(self.client);
        if client.is_open() {
            client.abort();
        }
        self.exchange = None;
        self.out_len = 0;
        self.out_sent = 0;
        self.deadline = Instant::ZERO;
        match client.listen(self.port) {
            Ok(()) => self.state = ConnectionState::Listening,
            // Cannot happen for a closed socket and a non-zero port; stay closing and try again next poll.
            Err(e) => log::error!("proxy socket cannot listen again: {e}"),
        }
        true
    }

    /// Listens on `port` (called once by the server at start).
    pub(crate) fn listen(
        &mut self,
        sockets: &mut SocketSet<'_>,
        port: u16,
    ) -> Result<(), tcp::ListenError> {
        let client = sockets.get_mut::<tcp::Socket>(self.client);
        client.set_timeout(Some(SOCKET_TIMEOUT));
        client.set_keep_alive(Some(KEEP_ALIVE));
        // The proxy writes whole heads and body pieces; Nagle would hold a response's last short segment
        // until the client's delayed ACK (about 40 ms on Linux) for every response.
        client.set_nagle_enabled(false);
        client.listen(port)?;
        self.port = port;
        self.state = ConnectionState::Listening;
        Ok(())
    }
}

/// Whether the peer of `socket` has sent its FIN and every byte before it has been taken off the socket.
fn finished_sending(socket: &tcp::Socket<'_>) -> bool {
    !socket.may_recv() && socket.recv_queue() == 0
}

/// Copies bytes from `from` to `to` through `scratch`, never more than `to` has room for and, with a tracker,
/// never past the body's end. Returns how many bytes moved.
fn relay(
    sockets: &mut SocketSet<'_>,
    from: SocketHandle,
    to: SocketHandle,
    mut body: Option<&mut BodyTracker>,
    scratch: &mut [u8],
) -> Result<usize, crate::http::body::BadChunk> {
    let mut total = 0;
    loop {
        if body.as_ref().is_some_and(|b| b.is_done()) {
            return Ok(total);
        }
        let room = {
            let to = sockets.get_mut::<tcp::Socket>(to);
            if !to.may_send() {
                return Ok(total);
            }
            to.send_capacity() - to.send_queue()
        };
        let limit = body.as_ref().map_or(usize::MAX, |b| b.limit());
        let want = room.min(scratch.len()).min(limit);
        if want == 0 {
            return Ok(total);
        }
        let window = scratch.get_mut(..want).unwrap_or(&mut []);
        let from_socket = sockets.get_mut::<tcp::Socket>(from);
        let peeked = from_socket.peek_slice(window).unwrap_or(0);
        if peeked == 0 {
            return Ok(total);
        }
        let n = match body.as_mut() {
            Some(tracker) => tracker.advance(window.get(..peeked).unwrap_or(&[]))?,
            None => peeked,
        };
        discard(from_socket, n);
        // Fits: `want` was at most the room in `to`.
        let _ = sockets
            .get_mut::<tcp::Socket>(to)
            .send_slice(window.get(..n).unwrap_or(&[]));
        total += n;
        if n < peeked {
            return Ok(total);
        }
    }
}

/// Takes `n` bytes off a socket's receive buffer (they were already copied with `peek_slice`).
fn discard(socket: &mut tcp::Socket<'_>, mut n: usize) {
    while n > 0 {
        match socket.recv(|b| {
            let k = b.len().min(n);
            (k, k)
        }) {
            Ok(0) | Err(_) => return,
            Ok(k) => n -= k,
        }
    }
}

/// The next local port for a connection to an origin, cycling through the dynamic range.
fn next_ephemeral(next: &mut u16) -> u16 {
    let port = if *next < 49152 { 49152 } else { *next };
    *next = if port == u16::MAX { 49152 } else { port + 1 };
    port
}
