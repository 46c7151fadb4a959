//! The lab's HTTP origin: a few smoltcp sockets on the origin node answering fixed paths (a page, 1 MiB, a
//! chunked body, an echo of POST bodies), remembering each request line and `Via` it saw.

use std::fmt::Write as _;

use smoltalk_core::http::MAX_HEADERS;
use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp;
use smoltcp::wire::IpEndpoint;

use crate::lab::checks::sample_text;
use crate::stack::node::Node;

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
    /// The `Host` header, if any.
    pub host: Option<String>,
    /// Where the request came from (the proxy's address and port, of the family it connected over).
    pub from: Option<IpEndpoint>,
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
            let from = socket.remote_endpoint();
            let Some((request, used, close)) =
                answer(&self.scratch[..available], from, &mut self.seen)
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
    pub(super) fn count_connections(&mut self, node: &mut Node, previously: &mut Vec<bool>) {
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

/// Parses one whole request at the start of `bytes` (sent from `from`) and builds its reply: `(reply, bytes
/// used, close after)`.
/// `None` until the request (head and body) is whole.
fn answer(
    bytes: &[u8],
    from: Option<IpEndpoint>,
    seen: &mut Vec<SeenRequest>,
) -> Option<(Vec<u8>, usize, bool)> {
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
        host: header("host"),
        from,
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
