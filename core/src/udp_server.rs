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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::Bench;
    use std::vec;

    const PORT: u16 = 12000;

    fn setup(server_payload: usize) -> (Bench, UppercaseUdpServer, SocketHandle) {
        let mut bench = Bench::new();
        let handle = bench.udp_socket(8, server_payload);
        let server = UppercaseUdpServer::new(PORT, handle, &mut bench.sockets).unwrap();
        let client = bench.udp_socket(8, 16384);
        bench
            .sockets
            .get_mut::<udp::Socket>(client)
            .bind(40000)
            .unwrap();
        (bench, server, client)
    }

    fn send(bench: &mut Bench, client: SocketHandle, data: &[u8]) {
        bench
            .sockets
            .get_mut::<udp::Socket>(client)
            .send_slice(data, Bench::endpoint(PORT))
            .unwrap();
    }

    #[test]
    fn one_reply_per_request_same_length() {
        let (mut bench, mut server, client) = setup(8192);
        let mut scratch = [0u8; 2048];
        let big: std::vec::Vec<u8> = (0..2048u32).map(|i| (i % 256) as u8).collect();
        for request in [&b"hello udp"[..], &b""[..], &big[..]] {
            send(&mut bench, client, request);
            for _ in 0..5 {
                bench.poll();
                server.poll(&mut bench.sockets, &mut scratch);
            }
            let (reply, meta) = bench
                .sockets
                .get_mut::<udp::Socket>(client)
                .recv()
                .unwrap_or_else(|e| panic!("no reply to {} bytes: {e}", request.len()));
            assert_eq!(meta.endpoint, Bench::endpoint(PORT));
            assert!(crate::udp_client::is_reply_to(reply, request));
        }
        assert_eq!(server.stats().answered, 3);
    }

    #[test]
    fn oversized_request_is_dropped_not_truncated() {
        let (mut bench, mut server, client) = setup(8192);
        let mut scratch = [0u8; 2048];
        send(&mut bench, client, &vec![b'a'; 2049]);
        send(&mut bench, client, b"after");
        for _ in 0..5 {
            bench.poll();
            server.poll(&mut bench.sockets, &mut scratch);
        }
        let socket = bench.sockets.get_mut::<udp::Socket>(client);
        let (reply, _) = socket.recv().unwrap();
        assert_eq!(reply, b"AFTER");
        assert!(socket.recv().is_err(), "no reply to the oversized request");
        assert_eq!(server.stats().oversized, 1);
        assert_eq!(server.stats().answered, 1);
    }

    /// With the send buffer full, requests wait in the receive buffer instead of being lost.
    #[test]
    fn full_send_buffer_delays_but_loses_nothing() {
        let mut bench = Bench::new();
        let handle = bench.sockets.add(udp::Socket::new(
            udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 8], vec![0; 4096]),
            udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 1], vec![0; 64]),
        ));
        let mut server = UppercaseUdpServer::new(PORT, handle, &mut bench.sockets).unwrap();
        let client = bench.udp_socket(8, 4096);
        bench
            .sockets
            .get_mut::<udp::Socket>(client)
            .bind(40001)
            .unwrap();
        for i in 0..5u8 {
            send(&mut bench, client, &[b'a' + i; 10]);
        }
        let mut scratch = [0u8; 64];
        let mut replies = vec![];
        for _ in 0..20 {
            bench.poll();
            server.poll(&mut bench.sockets, &mut scratch);
            while let Ok((reply, _)) = bench.sockets.get_mut::<udp::Socket>(client).recv() {
                replies.push(reply.to_vec());
            }
        }
        let expected: std::vec::Vec<_> = (0..5u8).map(|i| vec![b'A' + i; 10]).collect();
        assert_eq!(replies, expected);
    }
}
