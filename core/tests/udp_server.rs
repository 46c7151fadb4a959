//! UppercaseUdpServer on a loopback smoltcp interface.

mod support;

use smoltalk_core::UppercaseUdpServer;
use smoltcp::iface::SocketHandle;
use smoltcp::socket::udp;
use support::Bench;

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
    let big: Vec<u8> = (0..2048u32).map(|i| (i % 256) as u8).collect();
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
        assert!(smoltalk_core::udp_client::is_reply_to(reply, request));
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
    let expected: Vec<_> = (0..5u8).map(|i| vec![b'A' + i; 10]).collect();
    assert_eq!(replies, expected);
}

/// A request sent to a broadcast address is answered from the server's own address: a broadcast address is
/// never a source (RFC 1122 §3.2.1.3), and smoltcp drops a packet from one, so the client never got its reply.
/// Found with the `uppercase_udp` fuzz target's check that every packet leaves from the server's address.
#[test]
fn broadcast_request_is_answered_from_our_own_address() {
    use smoltcp::wire::{IpAddress, IpEndpoint, Ipv4Address};
    // The subnet's broadcast address needs the host's prefixes; 255.255.255.255 does not.
    for (to, own) in [
        (Ipv4Address::BROADCAST, false),
        (Ipv4Address::BROADCAST, true),
        (Ipv4Address::new(127, 255, 255, 255), true),
    ] {
        let (mut bench, mut server, client) = setup(8192);
        if own {
            server.set_own_addresses(bench.iface.ip_addrs());
        }
        bench
            .sockets
            .get_mut::<udp::Socket>(client)
            .send_slice(b"hello", IpEndpoint::new(IpAddress::Ipv4(to), PORT))
            .unwrap();
        let mut scratch = [0u8; 64];
        for _ in 0..5 {
            bench.poll();
            server.poll(&mut bench.sockets, &mut scratch);
        }
        assert_eq!(server.stats().answered, 1, "request to {to}");
        let (reply, meta) = bench
            .sockets
            .get_mut::<udp::Socket>(client)
            .recv()
            .unwrap_or_else(|e| panic!("no reply to a request sent to {to}: {e}"));
        assert_eq!(reply, b"HELLO");
        assert_eq!(meta.endpoint, Bench::endpoint(PORT), "request to {to}");
    }
}
