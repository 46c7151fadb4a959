//! [`UppercaseUdpServer`]: the uppercase service over UDP, one reply datagram per request datagram.
//!
//! The reply has the request's length and leaves from the address the request came to. A request is taken out
//! of the receive buffer only once its reply is queued, so a full send buffer delays answers rather than losing
//! them. A request larger than the scratch buffer is dropped, counted and logged — never answered truncated.

use smoltcp::iface::{SocketHandle, SocketSet};
use smoltcp::socket::udp;

use crate::error::ServerError;
use crate::uppercase::uppercase_into;

/// What the server has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UdpServerStats {
    /// Requests answered.
    pub answered: u64,
    /// Requests dropped because they were larger than the server answers.
    pub oversized: u64,
    /// Requests dropped because the reply could not be queued for another reason.
    pub unsendable: u64,
    /// Payload bytes answered.
    pub bytes: u64,
}

/// The uppercase service on one bound UDP socket.
#[derive(Debug)]
pub struct UppercaseUdpServer {
    handle: SocketHandle,
    port: u16,
    stats: UdpServerStats,
}

impl UppercaseUdpServer {
    /// Binds the socket behind `handle` to `port`.
    pub fn new(
        port: u16,
        handle: SocketHandle,
        sockets: &mut SocketSet<'_>,
    ) -> Result<Self, ServerError> {
        let socket = sockets.get_mut::<udp::Socket>(handle);
        if socket.is_open() {
            socket.close();
        }
        socket.bind(port).map_err(ServerError::Bind)?;
        Ok(UppercaseUdpServer {
            handle,
            port,
            stats: UdpServerStats::default(),
        })
    }

    /// The port the server is bound to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// What the server has done so far.
    pub fn stats(&self) -> UdpServerStats {
        self.stats
    }

    /// Answers every request waiting in the receive buffer, as far as the send buffer has room. The largest
    /// request answered is `scratch.len()` bytes. Returns whether any request was answered or dropped.
    pub fn poll(&mut self, sockets: &mut SocketSet<'_>, scratch: &mut [u8]) -> bool {
        let socket = sockets.get_mut::<udp::Socket>(self.handle);
        let mut progressed = false;
        while let Ok((request_len, len, meta)) = socket
            .peek()
            .map(|(request, meta)| (request.len(), uppercase_into(request, scratch), *meta))
        {
            if request_len > len {
                log::warn!(
                    "udp:{}: dropped a {request_len}-byte request from {}: larger than the {} bytes this server answers",
                    self.port,
                    meta.endpoint,
                    scratch.len()
                );
                self.stats.oversized += 1;
                let _ = socket.recv();
                progressed = true;
                continue;
            }
            let Some(reply) = scratch.get(..len) else {
                break;
            };
            match socket.send_slice(reply, meta) {
                Ok(()) => {
                    self.stats.answered += 1;
                    self.stats.bytes += len as u64;
                }
                Err(udp::SendError::BufferFull) if len <= socket.payload_send_capacity() => {
                    // Wait for the interface to drain the send buffer; the request stays queued.
                    break;
                }
                Err(e) => {
                    log::warn!(
                        "udp:{}: dropped a {len}-byte request from {}: reply cannot be sent ({e})",
                        self.port,
                        meta.endpoint
                    );
                    self.stats.unsendable += 1;
                }
            }
            let _ = socket.recv();
            progressed = true;
        }
        progressed
    }
}
