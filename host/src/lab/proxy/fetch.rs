//! The lab's HTTP client: a [`LabFetch`] is one connection to the proxy that sends its [`LabRequest`]s one
//! after another (keep-alive) and collects each whole [`LabResponse`].

use std::fmt::Write as _;

use smoltalk_core::http::request::Method;
use smoltalk_core::http::{BodyTracker, ResponseHead, MAX_HEADERS};
use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{IpAddress, IpEndpoint};

use super::{ORIGIN_NAME, PROXY_IP, PROXY_PORT};
use crate::stack::node::Node;

/// How long a fetch may take in virtual time before it counts as failed.
const FETCH_TIMEOUT: Duration = Duration::from_secs(60);

/// A request a [`LabFetch`] sends.
#[derive(Debug, Clone)]
pub struct LabRequest {
    /// The method (GET, POST, …).
    pub method: Method,
    /// The request target as sent to the proxy (absolute-form).
    pub target: String,
    /// The body (sent with `Content-Length` when not empty).
    pub body: Vec<u8>,
}

impl LabRequest {
    /// `GET target`.
    pub fn get(target: &str) -> LabRequest {
        LabRequest {
            method: Method::Get,
            target: target.into(),
            body: Vec::new(),
        }
    }

    fn bytes(&self) -> Vec<u8> {
        let mut head = format!(
            "{} {} HTTP/1.1\r\nHost: {ORIGIN_NAME}\r\nUser-Agent: smoltalk-lab\r\n",
            self.method.as_str(),
            self.target
        );
        if !self.body.is_empty() {
            let _ = write!(head, "Content-Length: {}\r\n", self.body.len());
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }
}

/// A whole response a [`LabFetch`] received.
#[derive(Debug, Clone)]
pub struct LabResponse {
    /// The status code.
    pub status: u16,
    /// The headers, in order.
    pub headers: Vec<(String, String)>,
    /// The body as it came (a chunked body with its chunk framing).
    pub body: Vec<u8>,
}

impl LabResponse {
    /// The first header named `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One client connection through the proxy: sends each request after the previous response is whole.
pub struct LabFetch {
    handle: SocketHandle,
    requests: Vec<LabRequest>,
    next: usize,
    out: Vec<u8>,
    sent: usize,
    received: Vec<u8>,
    /// Every whole response so far.
    pub responses: Vec<LabResponse>,
    /// Whether the connection to the proxy is established.
    pub connected: bool,
    deadline: Instant,
    /// Why the fetch ended early, if it did.
    pub failure: Option<String>,
    done: bool,
    half_close: bool,
}

impl LabFetch {
    /// A fetch of `requests` from a new socket on `node`, connecting to the proxy now.
    pub fn new(node: &mut Node, requests: Vec<LabRequest>, now: Instant) -> LabFetch {
        let handle = node.add_tcp_socket();
        let port = node.ephemeral_port();
        let cx = node.iface.context();
        let socket = node.sockets.get_mut::<tcp::Socket>(handle);
        let failure = socket
            .connect(
                cx,
                IpEndpoint::new(IpAddress::Ipv4(PROXY_IP), PROXY_PORT),
                port,
            )
            .err()
            .map(|e| format!("cannot connect: {e}"));
        LabFetch {
            handle,
            requests,
            next: 0,
            out: Vec::new(),
            sent: 0,
            received: Vec::new(),
            responses: Vec::new(),
            connected: false,
            deadline: now + FETCH_TIMEOUT,
            done: failure.is_some(),
            failure,
            half_close: false,
        }
    }

    /// A fetch that sends `raw` at once (pipelined requests, or a broken head) and expects one response per
    /// entry of `requests` (whose methods say how to frame them).
    pub fn raw(node: &mut Node, raw: Vec<u8>, requests: Vec<LabRequest>, now: Instant) -> LabFetch {
        let mut fetch = LabFetch::new(node, requests, now);
        fetch.out = raw;
        fetch.next = fetch.requests.len();
        fetch
    }

    /// Closes the sending side (FIN) as soon as everything is sent, still reading the responses (what
    /// `nc -N` or `shutdown(SHUT_WR)` do).
    pub fn half_closing(mut self) -> LabFetch {
        self.half_close = true;
        self
    }

    /// Resets the connection (RST), as a client that aborts does.
    pub fn reset(&mut self, node: &mut Node) {
        node.sockets.get_mut::<tcp::Socket>(self.handle).abort();
        self.done = true;
    }

    /// Bytes received and not yet part of a whole response.
    pub fn pending_bytes(&self) -> &[u8] {
        &self.received
    }

    /// Whether every response arrived, or the fetch failed.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// One step; returns whether anything moved.
    pub fn step(&mut self, node: &mut Node, now: Instant) -> bool {
        if self.done {
            return false;
        }
        let mut moved = false;
        let socket = node.sockets.get_mut::<tcp::Socket>(self.handle);
        if !self.connected {
            if socket.state() == tcp::State::Established {
                self.connected = true;
                moved = true;
            } else if !socket.is_open() {
                return self.fail("connection refused or reset");
            }
        }
        if self.connected
            && self.sent == self.out.len()
            && self.responses.len() == self.next
            && self.next < self.requests.len()
        {
            if let Some(request) = self.requests.get(self.next) {
                self.out = request.bytes();
                self.sent = 0;
                self.next += 1;
            }
        }
        if self.connected && self.sent < self.out.len() {
            if let Ok(n @ 1..) = socket.send_slice(&self.out[self.sent..]) {
                self.sent += n;
                moved = true;
            }
            if self.half_close && self.sent == self.out.len() {
                socket.close();
            }
        }
        let mut buf = vec![0; 64 * 1024];
        while let Ok(n @ 1..) = socket.recv_slice(&mut buf) {
            self.received.extend_from_slice(&buf[..n]);
            moved = true;
        }
        let closed = self.connected && !socket.may_recv();
        if let Some(response) = self.take_response(closed) {
            self.responses.push(response);
            moved = true;
        }
        // A fetch without requests only holds its connection open.
        if self.responses.len() == self.requests.len() && !self.requests.is_empty() {
            socket.close();
            self.done = true;
            return true;
        }
        if closed && self.received.is_empty() {
            return self.fail(&format!(
                "the proxy closed after {} response(s)",
                self.responses.len()
            ));
        }
        if now >= self.deadline {
            return self.fail("timed out");
        }
        moved
    }

    fn fail(&mut self, why: &str) -> bool {
        self.failure = Some(why.to_string());
        self.done = true;
        true
    }

    /// The first whole response in `received`, taken off it.
    fn take_response(&mut self, closed: bool) -> Option<LabResponse> {
        let method = self
            .requests
            .get(self.responses.len())
            .map_or(Method::Get, |r| r.method);
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let head = ResponseHead::parse(&self.received, &mut headers, method).ok()??;
        let mut tracker = BodyTracker::new(head.framing);
        let rest = &self.received[head.head_len..];
        let body_len = tracker.advance(rest).ok()?;
        if !(tracker.is_done() || (tracker.ends_at_close() && closed)) {
            return None;
        }
        let response = LabResponse {
            status: head.code,
            headers: head
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_string(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect(),
            body: rest[..body_len].to_vec(),
        };
        let used = head.head_len + body_len;
        self.received.drain(..used);
        Some(response)
    }
}
