//! The proxy in the lab: a client node (10.0.2.2) fetches through the smoltcp proxy on a proxy node
//! (10.0.2.15:8080) from a small HTTP origin on an origin node (10.0.2.80:80), all on the lab's virtual segment.
//!
//! - [`LabOrigin`]: the origin, a few smoltcp sockets answering fixed paths (a page, 1 MiB, a chunked body, an
//!   echo of POST bodies), remembering each request line and `Via` it saw.
//! - [`LabFetch`]: a client connection that sends its requests one after another on one connection (keep-alive)
//!   and collects each whole response.
//! - [`ProxyLab`] puts them together; [`run_proxy_checks`] is the proxy half of `smoltalk lab`.

use std::fmt::Write as _;
use std::time::Instant as WallInstant;

use smoltalk_core::http::request::Method;
use smoltalk_core::http::{BodyTracker, ResponseHead, MAX_HEADERS};
use smoltalk_core::proxy::ProxyPolicy;
use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{IpAddress, IpCidr, IpEndpoint, Ipv4Address, Ipv4Cidr};

use crate::lab::checks::{sample_text, CheckResult, LabReport};
use crate::lab::{Lab, LinkFaults};
use crate::proxy::node::SmoltcpProxy;
use crate::stack::instruments::CaptureFile;
use crate::stack::network::{drive, earliest, Network, NetworkError, NodeId, Step};
use crate::stack::node::Node;

/// The client node's address.
pub const CLIENT_IP: Ipv4Address = Ipv4Address::new(10, 0, 2, 2);
/// The proxy node's address.
pub const PROXY_IP: Ipv4Address = Ipv4Address::new(10, 0, 2, 15);
/// The origin node's address.
pub const ORIGIN_IP: Ipv4Address = Ipv4Address::new(10, 0, 2, 80);
/// The proxy's port.
pub const PROXY_PORT: u16 = 8080;
/// The origin's port.
pub const ORIGIN_PORT: u16 = 80;
/// The origin's name, known to the proxy through its static names (the lab has no DNS server).
pub const ORIGIN_NAME: &str = "origin.lab";
/// How long a fetch may take in virtual time before it counts as failed.
const FETCH_TIMEOUT: Duration = Duration::from_secs(60);

/// The 1 MiB body the origin serves at `/big`.
pub fn big_body() -> Vec<u8> {
    sample_text(1 << 20, 29)
}

/// The chunked body the origin serves at `/chunked`, exactly as it goes on the wire.
pub const CHUNKED_BODY: &[u8] =
    b"7\r\nchunked\r\n9;ext=1\r\n response\r\n0\r\nX-Trailer: yes\r\n\r\n";

/// What the origin saw of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenRequest {
    /// The request line.
    pub line: String,
    /// The `Via` header, if any.
    pub via: Option<String>,
}

struct OriginSlot {
    handle: SocketHandle,
    /// What the slot still has to send.
    reply: Vec<u8>,
    sent: usize,
    close_after: bool,
}

/// A small HTTP/1.1 origin on a lab node.
pub struct LabOrigin {
    slots: Vec<OriginSlot>,
    /// Every request the origin answered, in order.
    pub seen: Vec<SeenRequest>,
    /// Connections the origin accepted.
    pub connections: u64,
    scratch: Vec<u8>,
}

impl LabOrigin {
    /// `sockets` listening sockets on `port` of `node`. A request must fit the node's socket buffer whole.
    pub fn new(node: &mut Node, port: u16, sockets: usize) -> LabOrigin {
        let slots = (0..sockets)
            .map(|_| {
                let handle = node.add_tcp_socket();
                let _ = node.sockets.get_mut::<tcp::Socket>(handle).listen(port);
                OriginSlot {
                    handle,
                    reply: Vec::new(),
                    sent: 0,
                    close_after: false,
                }
            })
            .collect();
        LabOrigin {
            slots,
            seen: Vec::new(),
            connections: 0,
            scratch: vec![0; node.buffers.tcp],
        }
    }

    /// Reads requests and sends replies as far as the sockets allow.
    pub fn poll(&mut self, node: &mut Node, port: u16) -> bool {
        let mut moved = false;
        for slot in &mut self.slots {
            let socket = node.sockets.get_mut::<tcp::Socket>(slot.handle);
            if !socket.is_open() || socket.state() == tcp::State::TimeWait {
                socket.abort();
                let _ = socket.listen(port);
                slot.reply.clear();
                slot.sent = 0;
                continue;
            }
            if slot.sent < slot.reply.len() {
                if let Ok(n @ 1..) = socket.send_slice(&slot.reply[slot.sent..]) {
                    slot.sent += n;
                    moved = true;
                }
                if slot.sent < slot.reply.len() {
                    continue;
                }
                if slot.close_after {
                    socket.close();
                    continue;
                }
            }
            if !socket.may_send() {
                continue;
            }
            let available = socket.peek_slice(&mut self.scratch).unwrap_or(0);
            let Some((request, used, close)) = answer(&self.scratch[..available], &mut self.seen)
            else {
                if !socket.may_recv() && socket.recv_queue() == 0 {
                    socket.close();
                }
                continue;
            };
            let mut left = used;
            while left > 0 {
                match socket.recv(|b| {
                    let k = b.len().min(left);
                    (k, k)
                }) {
                    Ok(k @ 1..) => left -= k,
                    _ => break,
                }
            }
            slot.reply = request;
            slot.sent = 0;
            slot.close_after = close;
            moved = true;
        }
        moved
    }

    /// Counts connections: call after each poll (a slot whose socket became established since).
    fn count_connections(&mut self, node: &mut Node, previously: &mut Vec<bool>) {
        previously.resize(self.slots.len(), false);
        for (slot, was) in self.slots.iter().zip(previously.iter_mut()) {
            let active = node.sockets.get_mut::<tcp::Socket>(slot.handle).is_active();
            if active && !*was {
                self.connections += 1;
            }
            *was = active;
        }
    }
}

/// Parses one whole request at the start of `bytes` and builds its reply: `(reply, bytes used, close after)`.
/// `None` until the request (head and body) is whole.
fn answer(bytes: &[u8], seen: &mut Vec<SeenRequest>) -> Option<(Vec<u8>, usize, bool)> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let head_len = match request.parse(bytes) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return None,
        Err(_) => {
            return Some((
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n".to_vec(),
                bytes.len(),
                true,
            ))
        }
    };
    let header = |name: &str| {
        request
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).into_owned())
    };
    let length: usize = header("content-length")
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    if bytes.len() < head_len + length {
        return None;
    }
    let method = request.method.unwrap_or("");
    let path = request.path.unwrap_or("");
    let close = header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
    seen.push(SeenRequest {
        line: format!("{method} {path} HTTP/1.{}", request.version.unwrap_or(1)),
        via: header("via"),
    });
    let body = &bytes[head_len..head_len + length];
    let (status, extra, content): (&str, &str, Vec<u8>) = match (method, path) {
        ("GET", "/") => (
            "200 OK",
            "",
            b"<html><body>hello through the proxy</body></html>\n".to_vec(),
        ),
        ("GET", "/big") => ("200 OK", "", big_body()),
        ("GET", "/chunked") => (
            "200 OK",
            "Transfer-Encoding: chunked\r\n",
            CHUNKED_BODY.to_vec(),
        ),
        ("POST", "/echo") => ("200 OK", "", body.to_vec()),
        _ => ("404 Not Found", "", b"not here\n".to_vec()),
    };
    let mut reply = format!("HTTP/1.1 {status}\r\nServer: lab-origin\r\n{extra}");
    if extra.is_empty() {
        let _ = write!(reply, "Content-Length: {}\r\n", content.len());
    }
    reply.push_str("\r\n");
    let mut reply = reply.into_bytes();
    reply.extend_from_slice(&content);
    Some((reply, head_len + length, close))
}

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

/// Three nodes: a client, the proxy, an origin.
pub struct ProxyLab {
    /// The network.
    pub lab: Lab,
    /// The client node.
    pub client: NodeId,
    /// The proxy node.
    pub proxy_node: NodeId,
    /// The origin node.
    pub origin_node: NodeId,
    /// The proxy.
    pub proxy: SmoltcpProxy,
    /// The origin.
    pub origin: LabOrigin,
    origin_active: Vec<bool>,
}

impl ProxyLab {
    /// A lab whose proxy has `connections` connections, knows [`ORIGIN_NAME`], and may connect only inside
    /// the lab's 10.0.2.0/24.
    pub fn new(connections: usize) -> Result<ProxyLab, String> {
        let mut lab = Lab::default();
        let client = lab.add_node("client", IpCidr::new(CLIENT_IP.into(), 24));
        let proxy_node = lab.add_node("proxy", IpCidr::new(PROXY_IP.into(), 24));
        let origin_node = lab.add_node("origin", IpCidr::new(ORIGIN_IP.into(), 24));
        let policy = ProxyPolicy {
            allow_clients: &[],
            allow_destinations: &[LAB_SEGMENT],
            connect_ports: &[443],
            static_names: &[(ORIGIN_NAME, ORIGIN_IP)],
            pseudonym: "smoltalk-lab",
        };
        let proxy = SmoltcpProxy::new(
            lab.node(proxy_node),
            PROXY_PORT,
            connections,
            None,
            Duration::from_secs(10),
            policy,
        )?;
        // The origin reads each request whole (the POST check sends 200 KiB).
        lab.node(origin_node).buffers.tcp = 512 * 1024;
        let origin = LabOrigin::new(lab.node(origin_node), ORIGIN_PORT, 8);
        Ok(ProxyLab {
            lab,
            client,
            proxy_node,
            origin_node,
            proxy,
            origin,
            origin_active: Vec::new(),
        })
    }

    /// Runs one fetch per entry of `clients`, side by side, until all are done.
    pub fn fetch(&mut self, clients: Vec<Vec<LabRequest>>) -> Result<Vec<LabFetch>, NetworkError> {
        let now = self.lab.now();
        let client = self.client;
        let fetches: Vec<LabFetch> = clients
            .into_iter()
            .map(|requests| LabFetch::new(self.lab.node(client), requests, now))
            .collect();
        self.run_fetches(fetches)
    }

    /// Runs `fetches` (made on the client node) side by side until all are done, then lets the proxy settle.
    pub fn run_fetches(
        &mut self,
        mut fetches: Vec<LabFetch>,
    ) -> Result<Vec<LabFetch>, NetworkError> {
        let client = self.client;
        self.run_until(
            |lab, fetches: &mut Vec<LabFetch>| {
                let now = lab.now();
                let mut moved = false;
                for fetch in fetches.iter_mut() {
                    moved |= fetch.step(lab.node(client), now);
                }
                (moved, fetches.iter().all(LabFetch::is_done))
            },
            &mut fetches,
        )?;
        self.settle()?;
        Ok(fetches)
    }

    /// Lets closing connections finish (at most 5 s of virtual time), so the next fetch finds the pool free.
    pub fn settle(&mut self) -> Result<(), NetworkError> {
        let until = self.lab.now() + Duration::from_secs(5);
        let (proxy_node, origin_node) = (self.proxy_node, self.origin_node);
        let (proxy, origin, origin_active) =
            (&mut self.proxy, &mut self.origin, &mut self.origin_active);
        drive(&mut self.lab, |lab| {
            let now = lab.now();
            let mut moved = proxy.poll(lab.node(proxy_node), now);
            moved |= origin.poll(lab.node(origin_node), ORIGIN_PORT);
            origin.count_connections(lab.node(origin_node), origin_active);
            if proxy.busy() == 0 || now >= until {
                return Step::Done(());
            }
            Step::Pending {
                moved,
                poll_at: earliest(proxy.poll_at(), Some(now + Duration::from_millis(200))),
            }
        })
    }

    /// Polls the proxy and origin and `step` until `step` says it is done.
    pub fn run_until<T>(
        &mut self,
        mut step: impl FnMut(&mut Lab, &mut T) -> (bool, bool),
        state: &mut T,
    ) -> Result<(), NetworkError> {
        let (proxy_node, origin_node) = (self.proxy_node, self.origin_node);
        let (proxy, origin, origin_active) =
            (&mut self.proxy, &mut self.origin, &mut self.origin_active);
        drive(&mut self.lab, |lab| {
            let now = lab.now();
            let mut moved = proxy.poll(lab.node(proxy_node), now);
            moved |= origin.poll(lab.node(origin_node), ORIGIN_PORT);
            origin.count_connections(lab.node(origin_node), origin_active);
            let (stepped, done) = step(lab, state);
            if done {
                return Step::Done(());
            }
            Step::Pending {
                moved: moved || stepped,
                poll_at: earliest(proxy.poll_at(), Some(now + Duration::from_millis(200))),
            }
        })
    }
}

/// The lab segment, the only place the lab proxy may connect to.
const LAB_SEGMENT: Ipv4Cidr = Ipv4Cidr::new(Ipv4Address::new(10, 0, 2, 0), 24);

/// Decides a check from the lab and its finished fetches: a detail line, or what went wrong.
type Judge<'a> = dyn Fn(&ProxyLab, &[LabFetch]) -> Result<String, String> + 'a;

/// Runs every proxy check in fresh labs.
pub fn run_proxy_checks() -> Result<LabReport, NetworkError> {
    run_proxy_checks_captured(None)
}

/// [`run_proxy_checks`], recording the segment into `capture` if given.
pub fn run_proxy_checks_captured(capture: Option<CaptureFile>) -> Result<LabReport, NetworkError> {
    let wall = WallInstant::now();
    let setup = NetworkError::ProxyLabSetup;
    let mut lab = ProxyLab::new(4).map_err(setup)?;
    if let Some(capture) = capture {
        lab.lab.capture_to(Box::new(capture));
    }
    let start = lab.lab.now();
    let mut checks = Vec::new();
    let page = format!("http://{ORIGIN_NAME}/");
    let big = format!("http://{ORIGIN_NAME}/big");

    let mut check = |lab: &mut ProxyLab,
                     name: &str,
                     clients: Vec<Vec<LabRequest>>,
                     judge: &Judge<'_>|
     -> Result<(), NetworkError> {
        let before = (lab.lab.link_stats(), lab.lab.now());
        let started = WallInstant::now();
        let fetches = lab.fetch(clients)?;
        let verdict = match fetches.iter().find_map(|f| f.failure.clone()) {
            Some(failure) => Err(failure),
            None => judge(lab, &fetches),
        };
        let link = lab.lab.link_stats();
        let (passed, detail) = match verdict {
            Ok(detail) => (true, detail),
            Err(detail) => (false, detail),
        };
        checks.push(CheckResult {
            name: name.to_string(),
            passed,
            detail,
            packets: link.frames - before.0.frames,
            virtual_time: lab.lab.now() - before.1,
            wall_time: started.elapsed(),
        });
        Ok(())
    };

    check(
        &mut lab,
        "proxy: GET a page through the proxy",
        vec![vec![LabRequest::get(&page)]],
        &|lab, f| {
            let r = &f[0].responses[0];
            let seen = lab.origin.seen.last().ok_or("the origin saw nothing")?;
            let via_ok = seen.via.as_deref() == Some("1.1 smoltalk-lab")
                && r.header("via") == Some("1.1 smoltalk-lab");
            match (
                r.status,
                r.body.starts_with(b"<html>"),
                seen.line == "GET / HTTP/1.1",
                via_ok,
            ) {
                (200, true, true, true) => Ok(format!(
                    "200, {} bytes; origin saw \"{}\" with Via: 1.1 smoltalk-lab",
                    r.body.len(),
                    seen.line
                )),
                _ => Err(format!("status {}, origin saw {:?}", r.status, seen)),
            }
        },
    )?;

    check(
        &mut lab,
        "proxy: 1 MiB body, byte for byte",
        vec![vec![LabRequest::get(&big)]],
        &|_, f| {
            let r = &f[0].responses[0];
            match r.status == 200 && r.body == big_body() {
                true => Ok(format!(
                    "200, {} bytes identical to the origin's",
                    r.body.len()
                )),
                false => Err(format!(
                    "status {}, {} bytes, identical: {}",
                    r.status,
                    r.body.len(),
                    r.body == big_body()
                )),
            }
        },
    )?;

    let origin_connections = lab.origin.connections;
    let accepted = lab.proxy.stats().0.accepted;
    check(
        &mut lab,
        "proxy: keep-alive, 3 requests on 1 connection",
        vec![vec![
            LabRequest::get(&page),
            LabRequest::get(&big),
            LabRequest::get(&page),
        ]],
        &|lab, f| {
            let statuses: Vec<u16> = f[0].responses.iter().map(|r| r.status).collect();
            let clients = lab.proxy.stats().0.accepted - accepted;
            let origins = lab.origin.connections - origin_connections;
            // The proxy may also reuse an origin connection an earlier client left open.
            match (statuses == [200, 200, 200], clients, origins) {
                (true, 1, 0 | 1) => Ok(format!("3 x 200 over 1 client connection and {origins} new origin connection(s)")),
                _ => Err(format!("statuses {statuses:?} over {clients} client and {origins} origin connection(s)")),
            }
        },
    )?;

    let upload = sample_text(200 * 1024, 31);
    let post = LabRequest {
        method: Method::Post,
        target: format!("http://{ORIGIN_NAME}/echo"),
        body: upload.clone(),
    };
    check(
        &mut lab,
        "proxy: POST 200 KiB, echoed back",
        vec![vec![post]],
        &|_, f| {
            let r = &f[0].responses[0];
            match r.status == 200 && r.body == upload {
                true => Ok(format!("200, {} bytes up and back identical", r.body.len())),
                false => Err(format!("status {}, {} bytes back", r.status, r.body.len())),
            }
        },
    )?;

    check(
        &mut lab,
        "proxy: chunked response forwarded intact",
        vec![vec![
            LabRequest::get(&format!("http://{ORIGIN_NAME}/chunked")),
            LabRequest::get(&page),
        ]],
        &|_, f| {
            let r = &f[0].responses[0];
            match (r.status, r.body == CHUNKED_BODY, f[0].responses[1].status) {
                (200, true, 200) => Ok(format!(
                    "{} bytes of chunks and trailer as sent, then the next request",
                    r.body.len()
                )),
                _ => Err(format!(
                    "status {}, body {:?}",
                    r.status,
                    String::from_utf8_lossy(&r.body)
                )),
            }
        },
    )?;

    check(
        &mut lab,
        "proxy: 4 clients at once",
        (0..4)
            .map(|_| vec![LabRequest::get(&page), LabRequest::get(&big)])
            .collect(),
        &|_, f| {
            let ok = f
                .iter()
                .all(|f| f.responses.len() == 2 && f.responses[1].body == big_body());
            match ok {
                true => Ok("4 x (page + 1 MiB), every body identical".into()),
                false => Err("a client's responses were wrong".into()),
            }
        },
    )?;

    check(
        &mut lab,
        "proxy: origin port closed -> 502",
        vec![vec![LabRequest::get(&format!("http://{ORIGIN_NAME}:81/"))]],
        &|_, f| expect_status(&f[0], 502),
    )?;

    check(
        &mut lab,
        "proxy: unknown name -> 502, no lookup leaves",
        vec![vec![LabRequest::get("http://nowhere.lab/")]],
        &|_, f| expect_status(&f[0], 502),
    )?;

    check(
        &mut lab,
        "proxy: address outside --allow-dest -> 403",
        vec![vec![LabRequest::get("http://192.0.2.1/")]],
        &|_, f| expect_status(&f[0], 403),
    )?;

    // Lose every 50th frame on the proxy's way out (2 %): TCP retransmits, the body still arrives whole.
    let proxy_node = lab.proxy_node;
    lab.lab.set_faults(
        proxy_node,
        LinkFaults {
            drop_every_outbound: 50,
            ..LinkFaults::default()
        },
    );
    check(
        &mut lab,
        "proxy: every 50th frame lost, 1 MiB still whole",
        vec![vec![LabRequest::get(&big)]],
        &|lab, f| {
            let r = &f[0].responses[0];
            let dropped = lab.lab.link_stats().dropped;
            match r.status == 200 && r.body == big_body() {
                true => Ok(format!(
                    "200, 1 MiB identical; {dropped} frames dropped on the way"
                )),
                false => Err(format!("status {}, {} bytes", r.status, r.body.len())),
            }
        },
    )?;
    lab.lab.set_faults(proxy_node, LinkFaults::default());

    // A full pool: 4 clients hold every connection without sending, the fifth is answered 503.
    let client = lab.client;
    let now = lab.lab.now();
    let mut holders: Vec<LabFetch> = (0..4)
        .map(|_| LabFetch::new(lab.lab.node(client), Vec::new(), now))
        .collect();
    lab.run_until(
        |lab, holders: &mut Vec<LabFetch>| {
            let now = lab.now();
            let mut moved = false;
            for h in holders.iter_mut() {
                moved |= h.step(lab.node(client), now);
            }
            (moved, holders.iter().all(|h| h.connected))
        },
        &mut holders,
    )?;
    check(
        &mut lab,
        "proxy: pool full -> 503",
        vec![vec![LabRequest::get(&page)]],
        &|_, f| expect_status(&f[0], 503),
    )?;

    let link = lab.lab.link_stats();
    Ok(LabReport {
        title: format!(
            "smoltalk lab: proxy node {PROXY_IP}:{PROXY_PORT} (4 connections) between client {CLIENT_IP} and origin {ORIGIN_NAME} ({ORIGIN_IP}:{ORIGIN_PORT})"
        ),
        checks,
        packets: link.frames,
        bytes: link.bytes,
        virtual_time: lab.lab.now() - start,
        wall_time: wall.elapsed(),
    })
}

fn expect_status(fetch: &LabFetch, status: u16) -> Result<String, String> {
    let r = &fetch.responses[0];
    let html = r.body.starts_with(b"<!DOCTYPE html>");
    match (r.status == status, r.header("connection"), html) {
        (true, Some("close"), true) => {
            Ok(format!("{status} with an HTML page and Connection: close"))
        }
        _ => Err(format!(
            "status {}, Connection {:?}",
            r.status,
            r.header("connection")
        )),
    }
}
