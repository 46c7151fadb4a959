//! [`UppercaseUdpServer`]: the uppercase service over UDP, one reply datagram per request datagram.
//!
//! The reply has the request's length and leaves from the address the request came to, unless that was a
//! broadcast or multicast address, which is never a source (RFC 1122 §3.2.1.3): then it leaves from the host's
//! address on that subnet (see [`UppercaseUdpServer::set_own_addresses`]) or the interface's choice. A request
//! is taken out of the receive buffer only once its reply is queued, so a full send buffer delays answers rather
//! than losing them. A request larger than the scratch buffer is dropped, counted and logged — never answered
//! truncated.

use heapless::Vec;
use smoltcp::iface::{SocketHandle, SocketSet};
use smoltcp::socket::udp;
use smoltcp::wire::{IpAddress, IpCidr};

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

/// The most host addresses [`UppercaseUdpServer::set_own_addresses`] keeps.
pub const MAX_OWN_ADDRESSES: usize = 4;

/// The uppercase service on one bound UDP socket.
#[derive(Debug)]
pub struct UppercaseUdpServer {
    handle: SocketHandle,
    port: u16,
    stats: UdpServerStats,
    own: Vec<IpCidr, MAX_OWN_ADDRESSES>,
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
            own: Vec::new(),
        })
    }

    /// The host's addresses with their prefixes (the interface's `ip_addrs()`; the first
    /// [`MAX_OWN_ADDRESSES`] are kept), so that a request sent to a subnet's broadcast address is answered from
    /// the host's address on that subnet. Without them, such a request is answered from the interface's choice
    /// of source, as one sent to 255.255.255.255 or a multicast group always is.
    pub fn set_own_addresses(&mut self, cidrs: &[IpCidr]) {
        self.own.clear();
        for cidr in cidrs.iter().take(MAX_OWN_ADDRESSES) {
            let _ = self.own.push(*cidr);
        }
    }

    /// The reply's metadata: back to the request's sender, from the address the request came to unless that
    /// cannot be a source.
    fn reply_meta(&self, mut meta: udp::UdpMetadata) -> udp::UdpMetadata {
        let Some(to) = meta.local_address else {
            return meta;
        };
        if let Some(cidr) = self.own.iter().find(|cidr| broadcast(cidr) == Some(to)) {
            meta.local_address = Some(cidr.address());
        } else if !to.is_unicast() {
            meta.local_address = None;
        }
        meta
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
                    "udp:{}: dropped a {request_len}-byte request from {} port {}: larger than the {} bytes this server answers",
                    self.port,
                    meta.endpoint.addr,
                    meta.endpoint.port,
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
            match socket.send_slice(reply, self.reply_meta(meta)) {
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
                        "udp:{}: dropped a {len}-byte request from {} port {}: reply cannot be sent ({e})",
                        self.port,
                        meta.endpoint.addr,
                        meta.endpoint.port
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

/// The broadcast address of an IPv4 subnet (none for /31 and /32).
fn broadcast(cidr: &IpCidr) -> Option<IpAddress> {
    match cidr {
        IpCidr::Ipv4(cidr) => cidr.broadcast().map(IpAddress::Ipv4),
        #[allow(unreachable_patterns)]
        _ => None,
    }
}
