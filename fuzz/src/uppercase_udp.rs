//! `UppercaseUdpServer` on a smoltcp interface, fed datagrams and raw packets built from the input.
//!
//! The input picks the set-up (checksums verified or ignored, the socket's buffer sizes, the scratch size, the
//! random seed), then runs up to [`MAX_OPS`] operations: a raw IP packet, a UDP datagram from one of four
//! clients (one off the subnet, one with source port 0) to the server's port (at its address or a broadcast
//! address), up to 1,200 bytes so that some
//! are larger than the scratch or the buffers, a poll of the server, or the clock moved on. The interface is
//! polled after each one; the server only when the input says so, so requests pile up and buffers fill.
//!
//! What must hold:
//! - every packet the interface sends is well-formed IPv4, and every reply leaves from the server's address (a
//!   reply to a broadcast request too: a broadcast address is never a source);
//! - every UDP datagram from the server's port goes to an endpoint that sent a request, and is the uppercase
//!   of one of that endpoint's unanswered requests, with its length, in order (requests dropped for want of
//!   room are skipped, never answered late or out of order), and is never longer than the scratch;
//! - once the server is idle, every answer it counted has been sent (unless a raw packet was a request: then a
//!   reply to an unroutable source may be lost, which is the network's business), and it never counts more
//!   answers, drops and failures than there were requests.

use std::collections::VecDeque;

use smoltalk_core::{uppercase_byte, UppercaseUdpServer};
use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::socket::udp;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{
    HardwareAddress, IpAddress, IpCidr, IpEndpoint, IpProtocol, Ipv4Address, Ipv4Packet, Ipv4Repr,
    Ipv6Packet, Ipv6Repr, UdpPacket, UdpRepr,
};

use super::device::QueueDevice;
use super::input::Input;

/// The server's address.
pub const SERVER: Ipv4Address = Ipv4Address::new(10, 0, 2, 15);
/// The gateway, for clients off the subnet.
pub const GATEWAY: Ipv4Address = Ipv4Address::new(10, 0, 2, 2);
/// The server's port.
pub const PORT: u16 = 12000;
/// The most operations one input runs.
pub const MAX_OPS: usize = 96;
/// The longest datagram a client sends.
pub const MAX_DATAGRAM: usize = 1200;
/// The clients, by address and port.
pub const CLIENTS: [(Ipv4Address, u16); 4] = [
    (Ipv4Address::new(10, 0, 2, 2), 40000),
    (Ipv4Address::new(10, 0, 2, 3), 40001),
    (Ipv4Address::new(192, 0, 2, 7), 53),
    (Ipv4Address::new(10, 0, 2, 4), 0),
];

struct Harness {
    iface: Interface,
    device: QueueDevice,
    sockets: SocketSet<'static>,
    server: UppercaseUdpServer,
    scratch: Vec<u8>,
    now: Instant,
    /// Requests not answered yet, oldest first, with the endpoint that sent each.
    pending: VecDeque<(IpEndpoint, Vec<u8>)>,
    requests: u64,
    replies: u64,
    /// Whether a raw packet was taken for a request.
    raw_requests: bool,
}

/// Runs one input.
pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let mut harness = Harness::new(&mut input);
    for _ in 0..MAX_OPS {
        if input.is_empty() {
            break;
        }
        match input.byte() % 8 {
            0 => harness.raw(&mut input),
            1..=4 => harness.datagram(&mut input),
            5 | 6 => {
                harness
                    .server
                    .poll(&mut harness.sockets, &mut harness.scratch);
            }
            _ => harness.now += Duration::from_millis(u64::from(input.u16())),
        }
        harness.poll_interface();
    }
    harness.finish();
}

impl Harness {
    fn new(input: &mut Input<'_>) -> Self {
        let setup = input.byte();
        let checksums = setup & 1 == 0;
        let packets = 1 + usize::from(setup >> 1) % 4;
        let sizes = [0, 64, 512, 2048];
        let rx_payload = sizes[usize::from(setup >> 3) & 3];
        let tx_payload = sizes[usize::from(setup >> 5) & 3];
        let scratch = vec![0; usize::from(input.u16()) % 1500];
        let mut device = QueueDevice::new(checksums, 1500);
        let mut config = Config::new(HardwareAddress::Ip);
        config.random_seed = u64::from(input.u32());
        let now = Instant::from_secs(1);
        let mut iface = Interface::new(config, &mut device, now);
        iface.update_ip_addrs(|addrs| {
            addrs.push(IpCidr::new(IpAddress::Ipv4(SERVER), 24)).ok();
        });
        iface
            .routes_mut()
            .add_default_ipv4_route(GATEWAY)
            .expect("a default route");
        let mut sockets = SocketSet::new(Vec::new());
        let buffer = |payload: usize| {
            udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; packets], vec![0; payload])
        };
        let handle = sockets.add(udp::Socket::new(buffer(rx_payload), buffer(tx_payload)));
        let mut server = UppercaseUdpServer::new(PORT, handle, &mut sockets).expect("server");
        server.set_own_addresses(iface.ip_addrs());
        Harness {
            iface,
            device,
            sockets,
            server,
            scratch,
            now,
            pending: VecDeque::new(),
            requests: 0,
            replies: 0,
            raw_requests: false,
        }
    }

    /// Arbitrary bytes as an IP packet; if the interface may take it for a request, it is one.
    fn raw(&mut self, input: &mut Input<'_>) {
        let len = usize::from(input.u16()) % (MAX_DATAGRAM + 64);
        let packet = input.take(len).to_vec();
        if let Some((from, request)) = self.as_request(&packet) {
            self.raw_requests = true;
            self.requests += 1;
            self.pending.push_back((from, request));
        }
        self.device.inject(packet);
    }

    /// The request `packet` is, if it is a UDP datagram to the server's port that the interface accepts.
    fn as_request(&self, packet: &[u8]) -> Option<(IpEndpoint, Vec<u8>)> {
        let caps = self.checksum_caps();
        let ip = Ipv4Packet::new_checked(packet).ok()?;
        let ip_repr = Ipv4Repr::parse(&ip, &caps).ok()?;
        let to_us = ip_repr.dst_addr == SERVER
            || ip_repr.dst_addr == Ipv4Address::BROADCAST
            || ip_repr.dst_addr == Ipv4Address::new(10, 0, 2, 255);
        if !to_us || ip_repr.next_header != IpProtocol::Udp {
            return None;
        }
        let payload = ip.payload();
        let udp = UdpPacket::new_checked(payload).ok()?;
        let src = IpAddress::Ipv4(ip_repr.src_addr);
        let dst = IpAddress::Ipv4(ip_repr.dst_addr);
        let repr = UdpRepr::parse(&udp, &src, &dst, &caps).ok()?;
        (repr.dst_port == PORT)
            .then(|| (IpEndpoint::new(src, repr.src_port), udp.payload().to_vec()))
    }

    /// A datagram from one of the clients, with a valid checksum.
    fn datagram(&mut self, input: &mut Input<'_>) {
        let choice = input.byte();
        let (addr, port) = CLIENTS[usize::from(choice) % CLIENTS.len()];
        // Mostly to the server's address; sometimes to a broadcast address, which is answered from the server's.
        let to = match choice >> 5 {
            6 => Ipv4Address::BROADCAST,
            7 => Ipv4Address::new(10, 0, 2, 255),
            _ => SERVER,
        };
        let len = usize::from(input.u16()) % (MAX_DATAGRAM + 1);
        let mut payload = input.take(len).to_vec();
        // A short input still sends the length it asked for: some of it lower case.
        payload.extend((payload.len()..len).map(|i| b"aZ9 \xff"[i % 5]));
        let repr = UdpRepr {
            src_port: port,
            dst_port: PORT,
        };
        let ip = Ipv4Repr {
            src_addr: addr,
            dst_addr: to,
            next_header: IpProtocol::Udp,
            payload_len: repr.header_len() + payload.len(),
            hop_limit: 64,
        };
        let mut packet = vec![0; ip.buffer_len() + ip.payload_len];
        let caps = ChecksumCapabilities::default();
        ip.emit(&mut Ipv4Packet::new_unchecked(&mut packet[..]), &caps);
        repr.emit(
            &mut UdpPacket::new_unchecked(&mut packet[ip.buffer_len()..]),
            &IpAddress::Ipv4(addr),
            &IpAddress::Ipv4(to),
            payload.len(),
            |buf| buf.copy_from_slice(&payload),
            &caps,
        );
        self.requests += 1;
        self.pending
            .push_back((IpEndpoint::new(IpAddress::Ipv4(addr), port), payload));
        self.device.inject(packet);
    }

    fn checksum_caps(&self) -> ChecksumCapabilities {
        match self.device.checksums {
            true => ChecksumCapabilities::default(),
            false => ChecksumCapabilities::ignored(),
        }
    }

    fn poll_interface(&mut self) {
        self.iface
            .poll(self.now, &mut self.device, &mut self.sockets);
        self.check_sent();
    }

    /// Checks every packet the interface sent since the last call.
    fn check_sent(&mut self) {
        let caps = self.checksum_caps();
        for packet in std::mem::take(&mut self.device.sent) {
            // The core's default features give smoltcp IPv6; the server's interface has IPv4 only, but smoltcp
            // answers some IPv6 a raw input sends it (ICMPv6 to the all-nodes group, say): whole and well-formed.
            if packet.first().map(|b| b >> 4) == Some(6) {
                let ip = Ipv6Packet::new_checked(&packet[..]).expect("whole IPv6 packets");
                Ipv6Repr::parse(&ip).expect("a valid IPv6 header");
                continue;
            }
            let ip = Ipv4Packet::new_checked(&packet[..]).expect("whole IPv4 packets");
            let ip_repr = Ipv4Repr::parse(&ip, &caps).expect("a valid IPv4 header");
            // Only the server's replies are checked for their source: smoltcp 0.14 itself answers a TCP segment
            // sent to a broadcast address with a reset from that address (RFC 1122 §4.2.3.10 says to drop it).
            if ip_repr.next_header != IpProtocol::Udp {
                continue;
            }
            let udp = UdpPacket::new_checked(ip.payload()).expect("whole UDP datagrams");
            let src = IpAddress::Ipv4(ip_repr.src_addr);
            let dst = IpAddress::Ipv4(ip_repr.dst_addr);
            let repr = UdpRepr::parse(&udp, &src, &dst, &caps).expect("a valid UDP header");
            assert_eq!(repr.src_port, PORT, "only the server sends UDP");
            assert_eq!(ip_repr.src_addr, SERVER, "a reply from {ip_repr}");
            let to = IpEndpoint::new(dst, repr.dst_port);
            let reply = udp.payload();
            assert!(
                reply.len() <= self.scratch.len(),
                "a reply longer than the scratch"
            );
            let answers = |(from, request): &(IpEndpoint, Vec<u8>)| {
                *from == to
                    && request.len() == reply.len()
                    && request
                        .iter()
                        .zip(reply)
                        .all(|(&q, &r)| uppercase_byte(q) == r)
            };
            let Some(i) = self.pending.iter().position(answers) else {
                panic!(
                    "a reply to {to} that answers none of its unanswered requests: {:?}",
                    String::from_utf8_lossy(reply)
                );
            };
            // Requests from the same endpoint before it were dropped: they can never be answered now.
            let mut index = 0;
            self.pending.retain(|(from, _)| {
                let keep = index > i || *from != to;
                index += 1;
                keep
            });
            self.replies += 1;
        }
    }

    /// The server answers what is left, and its counts must agree with what was seen.
    fn finish(&mut self) {
        // Enough rounds to empty the smallest send buffer into the device as many times as the receive buffer
        // can hold requests.
        for _ in 0..8 {
            self.server.poll(&mut self.sockets, &mut self.scratch);
            self.poll_interface();
        }
        let stats = self.server.stats();
        assert!(self.replies <= stats.answered);
        if !self.raw_requests {
            assert_eq!(
                self.replies, stats.answered,
                "answers counted but never sent"
            );
        }
        assert!(stats.answered + stats.oversized + stats.unsendable <= self.requests);
    }
}
