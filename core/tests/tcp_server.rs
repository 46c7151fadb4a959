//! UppercaseTcpServer on a loopback smoltcp interface: packets are moved one at a time where the order matters.

mod support;

use smoltalk_core::tcp_server::{KEEP_ALIVE, SOCKET_TIMEOUT};
use smoltalk_core::{ServerError, SlotState, UppercaseTcpServer};
use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp;
use support::Bench;

const PORT: u16 = 12000;

fn server(
    bench: &mut Bench,
    slots: usize,
    size: usize,
) -> (UppercaseTcpServer<4>, Vec<SocketHandle>) {
    let handles: Vec<_> = (0..slots).map(|_| bench.tcp_socket(size)).collect();
    let server =
        UppercaseTcpServer::new(PORT, handles.iter().copied(), &mut bench.sockets).unwrap();
    (server, handles)
}

fn run(bench: &mut Bench, server: &mut UppercaseTcpServer<4>, scratch: &mut [u8], rounds: usize) {
    for _ in 0..rounds {
        bench.poll();
        server.poll(&mut bench.sockets, scratch);
        bench.advance_ms(20);
    }
}

#[test]
fn rejects_empty_and_oversized_pools() {
    let mut bench = Bench::new();
    assert_eq!(
        UppercaseTcpServer::<4>::new(PORT, [], &mut bench.sockets).unwrap_err(),
        ServerError::NoSockets
    );
    let handles: Vec<_> = (0..5).map(|_| bench.tcp_socket(64)).collect();
    assert_eq!(
        UppercaseTcpServer::<4>::new(PORT, handles, &mut bench.sockets).unwrap_err(),
        ServerError::TooManySockets { capacity: 4 }
    );
}

/// A slot seen in SYN-RECEIVED (handshake not finished) must not be taken for a closed peer.
#[test]
fn serves_a_connection_first_seen_during_the_handshake() {
    let mut bench = Bench::new();
    let (mut server, handles) = server(&mut bench, 1, 1024);
    let mut scratch = [0u8; 256];
    let client = bench.tcp_socket(1024);
    bench.connect(client, PORT, 50000);
    bench.one_packet(); // SYN in: the server socket is now SYN-RECEIVED.
    server.poll(&mut bench.sockets, &mut scratch);
    assert_eq!(server.slot_states().next(), Some(SlotState::Serving));
    assert!(bench.sockets.get_mut::<tcp::Socket>(handles[0]).is_open());
    run(&mut bench, &mut server, &mut scratch, 5);
    bench
        .sockets
        .get_mut::<tcp::Socket>(client)
        .send_slice(b"send once, read once")
        .unwrap();
    run(&mut bench, &mut server, &mut scratch, 5);
    let mut reply = [0u8; 64];
    let n = bench
        .sockets
        .get_mut::<tcp::Socket>(client)
        .recv_slice(&mut reply)
        .unwrap();
    assert_eq!(&reply[..n], b"SEND ONCE, READ ONCE");
}

/// A stream larger than every buffer and the scratch arrives whole and in order, and the slot listens
/// again after the client closes.
#[test]
fn streams_more_than_the_buffers_hold_then_listens_again() {
    let mut bench = Bench::new();
    let (mut server, _) = server(&mut bench, 2, 512);
    let mut scratch = [0u8; 100];
    let client = bench.tcp_socket(512);
    bench.connect(client, PORT, 50001);
    run(&mut bench, &mut server, &mut scratch, 3);
    let message: Vec<u8> = (0..20_000u32)
        .map(|i| b"abcXYZ09 \xff"[(i % 10) as usize])
        .collect();
    let (mut sent, mut received) = (0, Vec::new());
    for _ in 0..10_000 {
        let socket = bench.sockets.get_mut::<tcp::Socket>(client);
        sent += socket.send_slice(&message[sent..]).unwrap();
        let mut buf = [0u8; 512];
        let n = socket.recv_slice(&mut buf).unwrap();
        received.extend_from_slice(&buf[..n]);
        if received.len() == message.len() {
            break;
        }
        bench.poll();
        server.poll(&mut bench.sockets, &mut scratch);
        bench.advance_ms(1);
    }
    let mut expected = message.clone();
    smoltalk_core::uppercase_in_place(&mut expected);
    assert_eq!(received, expected);
    assert_eq!(server.stats().bytes_in, message.len() as u64);

    bench.sockets.get_mut::<tcp::Socket>(client).close();
    run(&mut bench, &mut server, &mut scratch, 10);
    assert_eq!(server.stats().accepted, 1);
    assert_eq!(server.stats().closed, 1);
    assert_eq!(server.free_slots(), 2);
}

/// smoltcp answers a reset in SYN-RECEIVED by going back to LISTEN (not CLOSED): the slot must follow.
#[test]
fn a_reset_during_the_handshake_frees_its_slot() {
    let mut bench = Bench::new();
    let (mut server, handles) = server(&mut bench, 1, 512);
    let mut scratch = [0u8; 64];
    let client = bench.tcp_socket(512);
    bench.connect(client, PORT, 50003);
    bench.one_packet(); // SYN in
    server.poll(&mut bench.sockets, &mut scratch);
    assert_eq!(server.free_slots(), 0);
    // The client forgets the connection: its interface answers our SYN-ACK with RST.
    bench.sockets.remove(client);
    run(&mut bench, &mut server, &mut scratch, 3);
    assert_eq!(server.stats().reset, 1);
    assert_eq!(server.free_slots(), 1);
    assert!(bench
        .sockets
        .get_mut::<tcp::Socket>(handles[0])
        .is_listening());
}

#[test]
fn server_sockets_give_up_on_silent_peers() {
    let mut bench = Bench::new();
    let (_server, handles) = server(&mut bench, 2, 512);
    for handle in &handles {
        let socket = bench.sockets.get_mut::<tcp::Socket>(*handle);
        assert_eq!(socket.timeout(), Some(SOCKET_TIMEOUT));
        assert_eq!(socket.keep_alive(), Some(KEEP_ALIVE));
    }
}

#[test]
fn a_reset_client_frees_its_slot() {
    let mut bench = Bench::new();
    let (mut server, _) = server(&mut bench, 1, 512);
    let mut scratch = [0u8; 64];
    let client = bench.tcp_socket(512);
    bench.connect(client, PORT, 50002);
    run(&mut bench, &mut server, &mut scratch, 3);
    assert_eq!(server.free_slots(), 0);
    bench.sockets.get_mut::<tcp::Socket>(client).abort();
    run(&mut bench, &mut server, &mut scratch, 3);
    assert_eq!(server.stats().reset, 1);
    assert_eq!(server.free_slots(), 1);
}
