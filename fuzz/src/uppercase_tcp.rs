//! `UppercaseTcpServer` on a smoltcp interface, fed packets built from the input, with a clock the input moves.
//!
//! The input first picks the set-up (checksums verified or ignored, socket buffer and scratch sizes, MTU, the
//! interface's random seed), then runs up to [`MAX_OPS`] operations:
//! - a raw packet: arbitrary bytes as an IP packet;
//! - a TCP segment from one of three clients toward the server's port, with valid checksums, chosen flags and
//!   options, and sequence and acknowledgement numbers chosen *relative to* what that client last sent and what
//!   the server last sent it (exactly, near, behind, or anywhere), so the fuzzer reaches the handshake, data,
//!   retransmissions, windows and both closes without having to guess the server's numbers;
//! - the clock moved on by milliseconds or by seconds.
//!
//! After each operation the interface and the server are polled a bounded number of times. What must hold:
//! - every packet the interface sends is well-formed IPv4 (with correct checksums when they are on), the
//!   server's segments leave from its address, and no TCP payload it sends holds a lower-case letter;
//! - every byte of payload the server sends back on a connection is the uppercase of the byte the client sent
//!   at the same position of its stream (each client's bytes are fixed per sequence number, so retransmissions
//!   agree, and the server's connections are found from its SYN-ACKs); keep-alive probes (one zero octet at a
//!   position already sent) are not echoes; the checks on the server's segments are skipped once a raw packet
//!   might have been a TCP segment to the server's port;
//! - after the input, with the clients silent, every slot is listening again within ten minutes of virtual time
//!   (a peer that stops answering cannot hold a slot forever: the server's socket timeout is four minutes), and
//!   the interface never asks to be polled again without time passing more than a bounded number of times (no
//!   busy loop).

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

use smoltalk_core::tcp_server::SlotState;
use smoltalk_core::{uppercase_byte, TcpServerStats, UppercaseTcpServer};
use smoltcp::iface::{Config, Interface, PollResult, SocketSet};
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::socket::tcp;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{
    HardwareAddress, IpAddress, IpCidr, IpProtocol, Ipv4Address, Ipv4Packet, Ipv4Repr, Ipv6Packet,
    Ipv6Repr, TcpControl, TcpPacket, TcpRepr, TcpSeqNumber, TcpTimestampRepr,
};

use super::device::QueueDevice;
use super::input::Input;

/// The server's address.
pub const SERVER: Ipv4Address = Ipv4Address::new(10, 0, 2, 15);
/// The server's port.
pub const PORT: u16 = 12000;
/// The server's slots (concurrent connections): fewer than the clients, so one can be refused.
pub const SLOTS: usize = 2;
/// The most operations one input runs.
pub const MAX_OPS: usize = 96;
/// The most payload one segment carries.
pub const MAX_PAYLOAD: usize = 96;
/// The clients, by address and port.
pub const CLIENTS: [(Ipv4Address, u16); 3] = [
    (Ipv4Address::new(10, 0, 2, 2), 40000),
    (Ipv4Address::new(10, 0, 2, 2), 40001),
    (Ipv4Address::new(10, 0, 2, 3), 40000),
];
/// Print every segment both ways (for reading a crash; `cargo fuzz run uppercase_tcp CRASH_FILE`).
const TRACE: bool = false;
/// How long the silent clients are given at the end for every slot to be free.
const DRAIN: Duration = Duration::from_secs(600);
/// The most polls at the end.
const MAX_DRAIN_POLLS: usize = 200;

/// One of the server's connections, as its SYN-ACK showed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Connection {
    client: usize,
    server_isn: u32,
    client_isn: u32,
    /// The sequence number after the last byte of data the server sent on it.
    sent_end: u32,
}

/// What one client knows of its connection.
#[derive(Debug, Clone, Copy, Default)]
struct Client {
    /// The initial sequence number of its latest SYN.
    isn: u32,
    /// The next sequence number it would send.
    snd_nxt: u32,
    /// The next sequence number it expects from the server, once the server has sent a SYN.
    rcv_nxt: Option<u32>,
}

struct Harness {
    iface: Interface,
    device: QueueDevice,
    sockets: SocketSet<'static>,
    server: UppercaseTcpServer<SLOTS>,
    scratch: Vec<u8>,
    now: Instant,
    clients: [Client; 3],
    /// The byte each client sends at each sequence number, fixed the first time it is sent.
    content: HashMap<(usize, u32), u8, Quick>,
    /// Every acknowledgement number each client sent.
    acks: HashSet<(usize, u32), Quick>,
    /// The sequence number of every FIN each client sent.
    fins: Vec<(usize, u32)>,
    /// The server's connections, from its SYN-ACKs.
    connections: Vec<Connection>,
    /// Whether a raw packet may have been a TCP segment to the server's port.
    tainted: bool,
    /// Payload bytes checked.
    echoed: usize,
}

/// What one input did, for tests that check the harness reaches what it is meant to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// What the server counted.
    pub stats: TcpServerStats,
    /// Payload bytes the server sent that were checked against the client's.
    pub echoed: usize,
}

/// Runs one input.
pub fn run(data: &[u8]) -> Outcome {
    let mut input = Input::new(data);
    let mut harness = Harness::new(&mut input);
    for _ in 0..MAX_OPS {
        if input.is_empty() {
            break;
        }
        match input.byte() % 8 {
            0 => harness.raw(&mut input),
            1..=5 => harness.segment(&mut input),
            6 => harness.now += Duration::from_millis(u64::from(input.u16())),
            _ => harness.now += Duration::from_secs(u64::from(input.byte())),
        }
        harness.poll();
    }
    harness.drain();
    Outcome {
        stats: harness.server.stats(),
        echoed: harness.echoed,
    }
}

impl Harness {
    fn new(input: &mut Input<'_>) -> Self {
        let setup = input.byte();
        let checksums = setup & 1 == 0;
        let buffer = [64, 256, 1024, 4096][usize::from(setup >> 1) & 3];
        let mtu = [1500, 576, 128, 68][usize::from(setup >> 3) & 3];
        let scratch = vec![0; 1 + usize::from(input.byte()) % 256];
        let mut device = QueueDevice::new(checksums, mtu);
        let mut config = Config::new(HardwareAddress::Ip);
        config.random_seed = u64::from(input.u32());
        let now = Instant::from_secs(1);
        let mut iface = Interface::new(config, &mut device, now);
        iface.update_ip_addrs(|addrs| {
            addrs.push(IpCidr::new(IpAddress::Ipv4(SERVER), 24)).ok();
        });
        let mut sockets = SocketSet::new(Vec::new());
        let handles: Vec<_> = (0..SLOTS)
            .map(|_| {
                sockets.add(tcp::Socket::new(
                    tcp::SocketBuffer::new(vec![0; buffer]),
                    tcp::SocketBuffer::new(vec![0; buffer]),
                ))
            })
            .collect();
        let server = UppercaseTcpServer::new(PORT, handles, &mut sockets).expect("server");
        Harness {
            iface,
            device,
            sockets,
            server,
            scratch,
            now,
            clients: [Client::default(); 3],
            content: HashMap::default(),
            acks: HashSet::default(),
            fins: Vec::new(),
            connections: Vec::new(),
            tainted: false,
            echoed: 0,
        }
    }

    fn checksum_caps(&self) -> ChecksumCapabilities {
        match self.device.checksums {
            true => ChecksumCapabilities::default(),
            false => ChecksumCapabilities::ignored(),
        }
    }

    /// Arbitrary bytes as an IP packet.
    fn raw(&mut self, input: &mut Input<'_>) {
        let len = usize::from(input.byte());
        let packet = input.take(len).to_vec();
        if let Ok(ip) = Ipv4Packet::new_checked(&packet[..]) {
            if ip.next_header() == IpProtocol::Tcp {
                let tcp = ip.payload();
                if tcp.len() < 4 || u16::from_be_bytes([tcp[2], tcp[3]]) == PORT {
                    self.tainted = true;
                }
            }
        }
        self.device.inject(packet);
    }

    /// A TCP segment from one of the clients.
    fn segment(&mut self, input: &mut Input<'_>) {
        let c = usize::from(input.byte()) % CLIENTS.len();
        let flags = input.byte();
        let extras = input.byte();
        let client = self.clients[c];
        let control = match flags & 7 {
            0..=2 => TcpControl::None,
            3 => TcpControl::Psh,
            4 => TcpControl::Syn,
            5 => TcpControl::Fin,
            6 => TcpControl::Rst,
            _ => TcpControl::None,
        };
        let rcv_nxt = client.rcv_nxt;
        let ack = match (flags >> 3) & 3 {
            0 if control == TcpControl::Syn => None,
            0 | 1 => rcv_nxt,
            2 => Some(rcv_nxt.unwrap_or(0).wrapping_add(delta(input))),
            _ => (input.byte() & 1 == 1).then(|| input.u32()),
        };
        let mut in_order = false;
        let seq = if control == TcpControl::Syn {
            // A new connection (a new ISN), or the same SYN again.
            let isn = match flags & 0x80 {
                0 => input.u32(),
                _ => client.isn,
            };
            self.clients[c].isn = isn;
            self.clients[c].snd_nxt = isn;
            in_order = true;
            isn
        } else {
            match (flags >> 5) & 3 {
                0 | 1 => {
                    in_order = true;
                    client.snd_nxt
                }
                2 => client.snd_nxt.wrapping_sub(u32::from(input.byte())),
                _ => match input.byte() & 1 {
                    0 => client.snd_nxt.wrapping_add(delta(input)),
                    _ => input.u32(),
                },
            }
        };
        let window = input.byte();
        let window_len = match window {
            0..=15 => u16::from(window),
            _ => u16::from(window) << 8 | u16::from(window),
        };
        let syn = control == TcpControl::Syn;
        let options = if syn { input.byte() } else { 0 };
        let max_seg_size = (options & 1 != 0).then(|| match options & 0x80 {
            0 => 536,
            _ => input.u16(),
        });
        let window_scale = (options & 2 != 0).then_some((options >> 2) & 15);
        let sack_permitted = options & 0x40 != 0;
        let timestamp = (extras & 1 != 0).then(|| TcpTimestampRepr::new(input.u32(), input.u32()));
        let mut sack_ranges = [None; 3];
        if extras & 2 != 0 {
            let base = rcv_nxt.unwrap_or(0);
            sack_ranges[0] = Some((
                base.wrapping_add(delta(input)),
                base.wrapping_add(delta(input)),
            ));
        }
        let len = usize::from(extras >> 2) % (MAX_PAYLOAD + 1);
        // Each sequence number carries one byte, whatever segment it goes in.
        let start = seq.wrapping_add(u32::from(syn));
        let payload: Vec<u8> = (0..len)
            .map(|i| {
                let at = start.wrapping_add(i as u32);
                let fresh = match input.is_empty() {
                    true => b'a' + (at % 26) as u8,
                    false => input.byte(),
                };
                *self.content.entry((c, at)).or_insert(fresh)
            })
            .collect();
        if in_order {
            let fin = u32::from(control == TcpControl::Fin);
            self.clients[c].snd_nxt = start.wrapping_add(len as u32).wrapping_add(fin);
        }
        if let Some(ack) = ack {
            self.acks.insert((c, ack));
        }
        if control == TcpControl::Fin {
            let fin = (c, start.wrapping_add(len as u32));
            if !self.fins.contains(&fin) {
                self.fins.push(fin);
            }
        }
        let (addr, port) = CLIENTS[c];
        let repr = TcpRepr {
            src_port: port,
            dst_port: PORT,
            control,
            seq_number: TcpSeqNumber(seq as i32),
            ack_number: ack.map(|a| TcpSeqNumber(a as i32)),
            window_len,
            window_scale,
            max_seg_size,
            sack_permitted,
            sack_ranges,
            timestamp,
            payload: &payload,
        };
        let ip = Ipv4Repr {
            src_addr: addr,
            dst_addr: SERVER,
            next_header: IpProtocol::Tcp,
            payload_len: repr.buffer_len(),
            hop_limit: 64,
        };
        let mut packet = vec![0; ip.buffer_len() + repr.buffer_len()];
        let caps = ChecksumCapabilities::default();
        ip.emit(&mut Ipv4Packet::new_unchecked(&mut packet[..]), &caps);
        repr.emit(
            &mut TcpPacket::new_unchecked(&mut packet[ip.buffer_len()..]),
            &IpAddress::Ipv4(addr),
            &IpAddress::Ipv4(SERVER),
            &caps,
        );
        if TRACE {
            eprintln!("{} client {c} -> server: {repr}", self.now);
        }
        self.device.inject(packet);
    }

    /// Polls the interface and the server until neither moves (at most a few rounds), checking what is sent.
    fn poll(&mut self) {
        for _ in 0..8 {
            let polled = self
                .iface
                .poll(self.now, &mut self.device, &mut self.sockets);
            let served = self.server.poll(&mut self.sockets, &mut self.scratch);
            self.check_sent();
            let stats = self.server.stats();
            assert_eq!(stats.bytes_in, stats.bytes_out);
            if !served && polled == PollResult::None {
                break;
            }
        }
    }

    /// An IPv6 packet the interface sent: the core's default features give smoltcp IPv6, and although the
    /// server's interface has IPv4 only, smoltcp answers some IPv6 a raw input sends it (ICMPv6 to the all-nodes
    /// group, say). It must be whole and well-formed, and never TCP: the server has no IPv6 address to serve on.
    fn check_sent_ipv6(&self, packet: &[u8]) {
        let ip = Ipv6Packet::new_checked(packet).expect("the server sends whole IPv6 packets");
        let repr = Ipv6Repr::parse(&ip).expect("the server's IPv6 header is valid");
        if TRACE {
            eprintln!("{} server -> IPv6: {repr}", self.now);
        }
        assert_ne!(
            repr.next_header,
            IpProtocol::Tcp,
            "TCP over IPv6 from a server without an IPv6 address"
        );
    }

    /// Checks every packet the interface sent since the last call.
    fn check_sent(&mut self) {
        let caps = self.checksum_caps();
        for packet in std::mem::take(&mut self.device.sent) {
            if packet.first().map(|b| b >> 4) == Some(6) {
                self.check_sent_ipv6(&packet);
                continue;
            }
            let ip =
                Ipv4Packet::new_checked(&packet[..]).expect("the server sends whole IPv4 packets");
            let ip_repr = Ipv4Repr::parse(&ip, &caps).expect("the server's IPv4 header is valid");
            if ip_repr.next_header != IpProtocol::Tcp {
                continue;
            }
            let tcp =
                TcpPacket::new_checked(ip.payload()).expect("the server sends whole TCP segments");
            let src = IpAddress::Ipv4(ip_repr.src_addr);
            let dst = IpAddress::Ipv4(ip_repr.dst_addr);
            let repr =
                TcpRepr::parse(&tcp, &src, &dst, &caps).expect("the server's TCP header is valid");
            if repr.src_port != PORT {
                continue;
            }
            // The server's segments leave from its address, unless a raw packet was a segment to its port: smoltcp
            // 0.14 takes TCP segments sent to a broadcast address (RFC 1122 §4.2.3.10 says to drop them), and
            // answers them from that address.
            assert!(
                self.tainted || ip_repr.src_addr == SERVER,
                "a segment from {ip_repr}: {repr}"
            );
            assert!(
                !repr.payload.iter().any(u8::is_ascii_lowercase),
                "the server sent lower case: {:?}",
                repr.payload
            );
            let Some(c) = CLIENTS
                .iter()
                .position(|&(a, p)| a == ip_repr.dst_addr && p == repr.dst_port)
            else {
                assert!(self.tainted || repr.payload.is_empty());
                continue;
            };
            let seq = repr.seq_number.0 as u32;
            if TRACE {
                eprintln!(
                    "{} server -> client {c}: {repr} {:?}",
                    self.now,
                    self.states()
                );
            }
            let syn = repr.control == TcpControl::Syn;
            if syn {
                let client_isn = repr.ack_number.map_or(0, |a| a.0 as u32).wrapping_sub(1);
                let known = self
                    .connections
                    .iter()
                    .any(|k| (k.client, k.server_isn, k.client_isn) == (c, seq, client_isn));
                if !known {
                    self.connections.push(Connection {
                        client: c,
                        server_isn: seq,
                        client_isn,
                        sent_end: seq.wrapping_add(1),
                    });
                }
            }
            let end = seq
                .wrapping_add(u32::from(syn))
                .wrapping_add(repr.payload.len() as u32)
                .wrapping_add(u32::from(repr.control == TcpControl::Fin));
            // Where the server took the client's FIN: smoltcp 0.14 takes a FIN even when the segment's data runs
            // past its receive window, just after the data it kept (RFC 9293 would drop the FIN with the data
            // it did not keep), so it can lie before the FIN the client sent.
            if let Some(ack) = repr.ack_number {
                let fin = (c, (ack.0 as u32).wrapping_sub(1));
                if !self.fins.contains(&fin) && self.took_fin(c) {
                    self.fins.push(fin);
                }
            }
            let client = &mut self.clients[c];
            match client.rcv_nxt {
                _ if syn => client.rcv_nxt = Some(end),
                // In order (or overlapping what came before) and reaching further: the client takes it.
                Some(next)
                    if repr.control != TcpControl::Rst
                        && (seq.wrapping_sub(next) as i32) <= 0
                        && (end.wrapping_sub(next) as i32) > 0 =>
                {
                    client.rcv_nxt = Some(end);
                }
                _ => {}
            }
            // A keep-alive probe is one garbage octet (smoltcp sends a zero) just before the next sequence number
            // (RFC 9293 §3.8.4): at one already sent (the SYN's and the FIN's included), or just before one the
            // client acknowledged (smoltcp takes an acknowledgement of bytes it has queued but not sent yet, and
            // skips them: only a peer that lies about what it received loses anything).
            let probe = repr.payload == [0]
                && (self.acks.contains(&(c, seq.wrapping_add(1)))
                    || self.connections.iter().any(|k| {
                        k.client == c
                            && seq.wrapping_sub(k.server_isn) as i32 >= 0
                            && k.sent_end.wrapping_sub(seq) as i32 >= 0
                    }));
            if !repr.payload.is_empty() && !self.tainted && !probe {
                self.check_echo(c, seq.wrapping_add(u32::from(syn)), repr.payload);
            }
        }
    }

    /// Checks that `payload`, sent by the server at `seq` to client `c`, is the uppercase of what the client
    /// sent at the same position of its stream, on one of the server's connections with that client.
    ///
    /// The position in the stream is the position in the client's sequence space, except past a FIN the server
    /// took, which holds a sequence number and no byte: smoltcp 0.14 still takes data after the peer's FIN
    /// (RFC 9293 §3.10.7.4 says to ignore it), and the server answers it like any other bytes.
    fn check_echo(&mut self, c: usize, seq: u32, payload: &[u8]) {
        let content = &self.content;
        let fins: Vec<Option<u32>> = core::iter::once(None)
            .chain(
                self.fins
                    .iter()
                    .filter(|&&(client, _)| client == c)
                    .map(|&(_, f)| Some(f)),
            )
            .collect();
        let mut echoed = false;
        for k in self.connections.iter_mut().filter(|k| k.client == c) {
            let offset = seq.wrapping_sub(k.server_isn.wrapping_add(1));
            let start = k.client_isn.wrapping_add(1).wrapping_add(offset);
            let same = offset < 1 << 24
                && fins.iter().any(|&fin| {
                    payload.iter().enumerate().all(|(i, &b)| {
                        let mut at = start.wrapping_add(i as u32);
                        if fin.is_some_and(|f| at.wrapping_sub(f) as i32 >= 0) {
                            at = at.wrapping_add(1);
                        }
                        content
                            .get(&(c, at))
                            .is_some_and(|&sent| uppercase_byte(sent) == b)
                    })
                });
            if same && !echoed {
                echoed = true;
                self.echoed += payload.len();
            }
            if same {
                let end = seq.wrapping_add(payload.len() as u32);
                if (end.wrapping_sub(k.sent_end) as i32) > 0 {
                    k.sent_end = end;
                }
            }
        }
        assert!(
            echoed,
            "client {c}: the server sent {payload:?} at {seq}, which is not the uppercase of what the client sent \
             there (connections {:?})",
            self.connections
        );
    }

    /// The clients fall silent: time runs on to each timer the interface asks for, until every slot listens.
    fn drain(&mut self) {
        let deadline = self.now + DRAIN;
        let mut polls = 0;
        loop {
            self.poll();
            if self.server.free_slots() == SLOTS {
                return;
            }
            polls += 1;
            assert!(
                polls < MAX_DRAIN_POLLS,
                "still busy after {polls} polls without a timer: {:?}",
                self.states()
            );
            match self.iface.poll_at(self.now, &self.sockets) {
                Some(at) if at > self.now => self.now = at,
                Some(_) => {}
                None => break,
            }
            if self.now > deadline {
                break;
            }
        }
        assert_eq!(
            self.server.free_slots(),
            SLOTS,
            "silent clients still hold slots after {} s: {:?}",
            DRAIN.secs(),
            self.states()
        );
    }

    /// Whether a server socket connected to client `c` has taken its FIN.
    fn took_fin(&self, c: usize) -> bool {
        let (addr, port) = CLIENTS[c];
        self.sockets.iter().any(|(_, socket)| match socket {
            smoltcp::socket::Socket::Tcp(s) => {
                s.remote_endpoint()
                    .is_some_and(|e| e.addr == IpAddress::Ipv4(addr) && e.port == port)
                    && matches!(
                        s.state(),
                        tcp::State::CloseWait
                            | tcp::State::LastAck
                            | tcp::State::Closing
                            | tcp::State::TimeWait
                    )
            }
            #[allow(unreachable_patterns)]
            _ => false,
        })
    }

    fn states(&self) -> Vec<(SlotState, tcp::State)> {
        self.server
            .slot_states()
            .zip(self.sockets.iter())
            .map(|(slot, (_, socket))| match socket {
                smoltcp::socket::Socket::Tcp(s) => (slot, s.state()),
                #[allow(unreachable_patterns)]
                _ => (slot, tcp::State::Closed),
            })
            .collect()
    }
}

/// A hasher for the harness's own small integer keys: a multiply and a rotate per word instead of SipHash,
/// which under libFuzzer's comparison tracing cost a third of the target's time.
type Quick = BuildHasherDefault<QuickHasher>;

#[derive(Default)]
struct QuickHasher(u64);

impl Hasher for QuickHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .rotate_left(29);
    }
}

/// A small signed step, -128..=127.
fn delta(input: &mut Input<'_>) -> u32 {
    i32::from(input.byte() as i8) as u32
}
