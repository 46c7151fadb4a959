//! The uppercase servers and clients on a smoltcp [`Node`]: the core's state machines plus the host's part —
//! socket creation, buffers, message queues and deadlines.
//!
//! [`UppercaseServers`] serves TCP and/or UDP on one node. [`TcpExchange`] and [`UdpExchange`] are one client
//! each: messages go in, replies come out, and every wait has a deadline. All three are stepped by the caller
//! after each poll of the network (see [`crate::stack::network::drive`]), so many of them can run side by side.

use std::collections::VecDeque;

use smoltalk_core::{
    ClientError, ServerError, TcpClientState, TcpServerStats, UdpServerStats, UppercaseTcpClient,
    UppercaseTcpServer, UppercaseUdpClient, UppercaseUdpServer,
};
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{IpAddress, IpEndpoint};

use crate::stack::network::{earliest, Step};
use crate::stack::node::Node;

/// The most TCP connections one smoltcp server serves at once.
pub const MAX_TCP_CONNECTIONS: usize = 64;

/// The largest UDP request the smoltcp server answers by default (at least 2,048 bytes are promised).
pub const DEFAULT_MAX_DATAGRAM: usize = 8192;

/// The largest UDP payload smoltcp sends or receives here: the host's reassembly and fragmentation buffers
/// (16 KiB, see host/Cargo.toml) hold the IP and UDP headers too.
pub const MAX_SMOLTCP_DATAGRAM: usize = 16384 - 20 - 8;

/// Bytes carried from a receive buffer to a send buffer in one go. Small enough to stay in the CPU's cache
/// between the two copies; larger scratch buffers measured slower (see BENCHMARKS.md).
pub const TCP_SCRATCH: usize = 32 * 1024;

/// The uppercase service on one node: a TCP pool, a UDP socket, or both.
pub struct UppercaseServers {
    tcp: Option<UppercaseTcpServer<MAX_TCP_CONNECTIONS>>,
    udp: Option<UppercaseUdpServer>,
    tcp_scratch: Vec<u8>,
    udp_scratch: Vec<u8>,
}

impl UppercaseServers {
    /// Serves TCP on `port` with `tcp_connections` sockets (0: no TCP) and UDP when `udp`, answering UDP
    /// requests up to `max_datagram` bytes.
    pub fn new(
        node: &mut Node,
        port: u16,
        tcp_connections: usize,
        udp: bool,
        max_datagram: usize,
    ) -> Result<Self, ServerError> {
        if max_datagram == 0 {
            return Err(ServerError::NoScratch);
        }
        // More than MAX_TCP_CONNECTIONS handles: the core's pool refuses them (TooManySockets).
        let tcp = if tcp_connections > 0 {
            let handles: Vec<_> = (0..tcp_connections)
                .map(|_| node.add_tcp_socket())
                .collect();
            Some(UppercaseTcpServer::new(port, handles, &mut node.sockets)?)
        } else {
            None
        };
        let udp = if udp {
            let handle = node.add_udp_socket();
            let mut server = UppercaseUdpServer::new(port, handle, &mut node.sockets)?;
            // So that a request to the subnet's broadcast address is answered from the node's own address.
            server.set_own_addresses(node.iface.ip_addrs());
            Some(server)
        } else {
            None
        };
        Ok(UppercaseServers {
            tcp,
            udp,
            tcp_scratch: vec![0; node.buffers.tcp.clamp(1, TCP_SCRATCH)],
            udp_scratch: vec![0; max_datagram],
        })
    }

    /// TCP slots free for a new client, if TCP is served.
    pub fn tcp_free_slots(&self) -> Option<usize> {
        self.tcp.as_ref().map(|tcp| tcp.free_slots())
    }

    /// Answers whatever is waiting; returns whether anything moved.
    pub fn poll(&mut self, node: &mut Node) -> bool {
        let mut moved = false;
        if let Some(tcp) = &mut self.tcp {
            moved |= tcp.poll(&mut node.sockets, &mut self.tcp_scratch);
        }
        if let Some(udp) = &mut self.udp {
            moved |= udp.poll(&mut node.sockets, &mut self.udp_scratch);
        }
        moved
    }

    /// TCP statistics, if TCP is served.
    pub fn tcp_stats(&self) -> Option<TcpServerStats> {
        self.tcp.as_ref().map(|tcp| tcp.stats())
    }

    /// UDP statistics, if UDP is served.
    pub fn udp_stats(&self) -> Option<UdpServerStats> {
        self.udp.as_ref().map(|udp| udp.stats())
    }
}

/// Deadlines of a client.
#[derive(Debug, Clone, Copy)]
pub struct ClientTimeouts {
    /// For the TCP handshake.
    pub connect: Duration,
    /// TCP: the longest silence while a reply is due; UDP: the wait for each try.
    pub reply: Duration,
    /// UDP: datagrams sent per request at most.
    pub tries: u32,
}

impl Default for ClientTimeouts {
    fn default() -> Self {
        ClientTimeouts {
            connect: Duration::from_secs(5),
            reply: Duration::from_secs(5),
            tries: 3,
        }
    }
}

#[derive(Debug)]
enum TcpPhase {
    Start,
    Connecting,
    Exchanging,
    Closing { deadline: Instant },
    Done,
}

struct InFlight {
    request: Vec<u8>,
    sent: usize,
    reply: Vec<u8>,
    received: usize,
    deadline: Instant,
}

/// One TCP client: connects, sends each message and reads its whole reply (the same length) before the next,
/// then closes. A message larger than the socket buffers is streamed: sending and receiving interleave.
pub struct TcpExchange {
    client: UppercaseTcpClient,
    server: IpEndpoint,
    timeouts: ClientTimeouts,
    phase: TcpPhase,
    queue: VecDeque<Vec<u8>>,
    input_closed: bool,
    current: Option<InFlight>,
    replies: VecDeque<Vec<u8>>,
}

impl TcpExchange {
    /// A client on a new socket of `node`, for `server`. Push messages with [`TcpExchange::push`] and call
    /// [`TcpExchange::finish`] when there are no more.
    pub fn new(node: &mut Node, server: IpEndpoint, timeouts: ClientTimeouts) -> Self {
        let handle = node.add_tcp_socket();
        TcpExchange {
            client: UppercaseTcpClient::new(handle),
            server,
            timeouts,
            phase: TcpPhase::Start,
            queue: VecDeque::new(),
            input_closed: false,
            current: None,
            replies: VecDeque::new(),
        }
    }

    /// A client that sends `messages` and then closes.
    pub fn with_messages(
        node: &mut Node,
        server: IpEndpoint,
        timeouts: ClientTimeouts,
        messages: impl IntoIterator<Item = Vec<u8>>,
    ) -> Self {
        let mut exchange = TcpExchange::new(node, server, timeouts);
        exchange.queue.extend(messages);
        exchange.finish();
        exchange
    }

    /// Queues one more message.
    pub fn push(&mut self, message: Vec<u8>) {
        self.queue.push_back(message);
    }

    /// No more messages: close once every queued one is answered.
    pub fn finish(&mut self) {
        self.input_closed = true;
    }

    /// The next complete reply, in order.
    pub fn next_reply(&mut self) -> Option<Vec<u8>> {
        self.replies.pop_front()
    }

    /// One step: connect, send, receive, close, as far as the sockets allow.
    pub fn step(&mut self, node: &mut Node, now: Instant) -> Result<Step<()>, ClientError> {
        let mut moved = false;
        if let TcpPhase::Start = self.phase {
            let port = node.ephemeral_port();
            let cx = node.iface.context();
            self.client.connect(
                cx,
                &mut node.sockets,
                self.server,
                port,
                now,
                self.timeouts.connect,
            )?;
            self.phase = TcpPhase::Connecting;
            moved = true;
        }
        if let TcpPhase::Connecting = self.phase {
            if self.client.poll(&mut node.sockets, now)? == TcpClientState::Connected {
                self.phase = TcpPhase::Exchanging;
                moved = true;
            }
        }
        if let TcpPhase::Exchanging = self.phase {
            moved |= self.exchange(node, now)?;
        }
        if let TcpPhase::Closing { deadline } = self.phase {
            let state = self.client.poll(&mut node.sockets, now);
            if matches!(state, Ok(TcpClientState::Closed) | Err(_)) {
                self.phase = TcpPhase::Done;
            } else if now >= deadline {
                // Every reply has arrived; only the closing handshake is late. Report it, don't fail.
                log::warn!(
                    "{}: the server did not finish closing the connection in time",
                    self.server
                );
                self.phase = TcpPhase::Done;
            }
        }
        if let TcpPhase::Done = self.phase {
            return Ok(Step::Done(()));
        }
        let poll_at = earliest(
            self.client.poll_at(),
            match self.phase {
                TcpPhase::Closing { deadline } => Some(deadline),
                _ => self.current.as_ref().map(|c| c.deadline),
            },
        );
        Ok(Step::Pending { moved, poll_at })
    }

    fn exchange(&mut self, node: &mut Node, now: Instant) -> Result<bool, ClientError> {
        let sockets = &mut node.sockets;
        self.client.poll(sockets, now)?;
        let mut moved = false;
        loop {
            if self.current.is_none() {
                match self.queue.pop_front() {
                    Some(request) => {
                        let len = request.len();
                        self.current = Some(InFlight {
                            request,
                            sent: 0,
                            reply: vec![0; len],
                            received: 0,
                            deadline: now + self.timeouts.reply,
                        });
                    }
                    None if self.input_closed => {
                        self.client.close(sockets);
                        self.phase = TcpPhase::Closing {
                            deadline: now + self.timeouts.reply,
                        };
                        return Ok(true);
                    }
                    None => return Ok(moved),
                }
            }
            let Some(current) = self.current.as_mut() else {
                return Ok(moved);
            };
            if current.sent < current.request.len() {
                let n = self
                    .client
                    .send(sockets, &current.request[current.sent..])?;
                current.sent += n;
                moved |= n > 0;
            }
            let n = self
                .client
                .recv(sockets, &mut current.reply[current.received..])?;
            current.received += n;
            if n > 0 {
                // The timeout is for silence, not for the whole reply: a large reply that keeps coming is fine.
                current.deadline = now + self.timeouts.reply;
                moved = true;
            }
            if current.received == current.reply.len() {
                if let Some(done) = self.current.take() {
                    self.replies.push_back(done.reply);
                }
                moved = true;
                continue;
            }
            if self.client.peer_closed(sockets) {
                return Err(ClientError::ClosedEarly {
                    received: current.received,
                    expected: current.reply.len(),
                });
            }
            if now >= current.deadline {
                return Err(ClientError::ReplyTimedOut);
            }
            return Ok(moved);
        }
    }
}

/// One UDP client: sends each message as one datagram and waits for its reply (retrying after each timeout)
/// before sending the next.
pub struct UdpExchange {
    client: UppercaseUdpClient,
    queue: VecDeque<Vec<u8>>,
    input_closed: bool,
    current: Option<Vec<u8>>,
    reply_buf: Vec<u8>,
    replies: VecDeque<(Vec<u8>, u32)>,
    /// With an IPv6 server, the largest request one packet carries (see [`UdpExchange::over_ipv6_mtu`]).
    ipv6_largest: Option<usize>,
}

impl UdpExchange {
    /// A client on a new UDP socket of `node`, for `server`.
    pub fn new(
        node: &mut Node,
        server: IpEndpoint,
        timeouts: ClientTimeouts,
    ) -> Result<Self, ClientError> {
        let handle = node.add_udp_socket();
        let port = node.ephemeral_port();
        let client = UppercaseUdpClient::new(
            handle,
            &mut node.sockets,
            port,
            server,
            timeouts.tries,
            timeouts.reply,
        )?;
        Ok(UdpExchange {
            client,
            queue: VecDeque::new(),
            input_closed: false,
            current: None,
            reply_buf: vec![0; 65536],
            replies: VecDeque::new(),
            ipv6_largest: None,
        })
    }

    /// With an IPv6 server, requests are limited to what one IPv6 packet of `ip_mtu` bytes carries: smoltcp 0.14
    /// neither fragments nor reassembles IPv6, and a longer one would be dropped unsent, try after try.
    pub fn over_ipv6_mtu(mut self, server: IpEndpoint, ip_mtu: usize) -> Self {
        if matches!(server.addr, IpAddress::Ipv6(_)) {
            self.ipv6_largest = Some(ip_mtu.saturating_sub(40 + 8));
        }
        self
    }

    /// A client that sends `messages`, one after the other.
    pub fn with_messages(
        node: &mut Node,
        server: IpEndpoint,
        timeouts: ClientTimeouts,
        messages: impl IntoIterator<Item = Vec<u8>>,
    ) -> Result<Self, ClientError> {
        let mut exchange = UdpExchange::new(node, server, timeouts)?;
        exchange.queue.extend(messages);
        exchange.finish();
        Ok(exchange)
    }

    /// Queues one more message.
    pub fn push(&mut self, message: Vec<u8>) {
        self.queue.push_back(message);
    }

    /// No more messages.
    pub fn finish(&mut self) {
        self.input_closed = true;
    }

    /// The next reply, with the number of datagrams its request took.
    pub fn next_reply(&mut self) -> Option<(Vec<u8>, u32)> {
        self.replies.pop_front()
    }

    /// One step: send, look for the reply, retry.
    pub fn step(&mut self, node: &mut Node, now: Instant) -> Result<Step<()>, ClientError> {
        let mut moved = false;
        loop {
            if self.current.is_none() {
                match self.queue.pop_front() {
                    Some(request) if request.len() > MAX_SMOLTCP_DATAGRAM => {
                        return Err(ClientError::RequestTooLarge {
                            len: request.len(),
                            capacity: MAX_SMOLTCP_DATAGRAM,
                        });
                    }
                    Some(request) if self.ipv6_largest.is_some_and(|l| request.len() > l) => {
                        return Err(ClientError::RequestNeedsIpv6Fragments {
                            len: request.len(),
                            largest: self.ipv6_largest.unwrap_or_default(),
                        });
                    }
                    Some(request) => {
                        self.client.request(&mut node.sockets, &request, now)?;
                        self.current = Some(request);
                        moved = true;
                    }
                    None if self.input_closed => return Ok(Step::Done(())),
                    None => {
                        return Ok(Step::Pending {
                            moved,
                            poll_at: None,
                        })
                    }
                }
            }
            let Some(request) = self.current.as_ref() else {
                continue;
            };
            match self
                .client
                .poll(&mut node.sockets, request, &mut self.reply_buf, now)?
            {
                Some(len) => {
                    let tries = match self.client.state() {
                        smoltalk_core::UdpClientState::Answered { tries } => tries,
                        _ => 1,
                    };
                    self.replies
                        .push_back((self.reply_buf[..len].to_vec(), tries));
                    self.current = None;
                    moved = true;
                }
                None => {
                    return Ok(Step::Pending {
                        moved,
                        poll_at: self.client.poll_at(),
                    })
                }
            }
        }
    }
}

/// What a command-line client needs of an exchange, TCP or UDP: messages in, replies out.
pub trait ClientExchange {
    /// Queues one more message.
    fn push_message(&mut self, message: Vec<u8>);
    /// No more messages.
    fn finish_messages(&mut self);
    /// One step (see [`TcpExchange::step`] and [`UdpExchange::step`]).
    fn step_on(&mut self, node: &mut Node, now: Instant) -> Result<Step<()>, ClientError>;
    /// The next complete reply, with the datagrams its request took (UDP; always 1 for TCP).
    fn take_reply(&mut self) -> Option<(Vec<u8>, u32)>;
}

impl ClientExchange for TcpExchange {
    fn push_message(&mut self, message: Vec<u8>) {
        self.push(message);
    }
    fn finish_messages(&mut self) {
        self.finish();
    }
    fn step_on(&mut self, node: &mut Node, now: Instant) -> Result<Step<()>, ClientError> {
        self.step(node, now)
    }
    fn take_reply(&mut self) -> Option<(Vec<u8>, u32)> {
        self.next_reply().map(|reply| (reply, 1))
    }
}

impl ClientExchange for UdpExchange {
    fn push_message(&mut self, message: Vec<u8>) {
        self.push(message);
    }
    fn finish_messages(&mut self) {
        self.finish();
    }
    fn step_on(&mut self, node: &mut Node, now: Instant) -> Result<Step<()>, ClientError> {
        self.step(node, now)
    }
    fn take_reply(&mut self) -> Option<(Vec<u8>, u32)> {
        self.next_reply()
    }
}
