//! The tests of the ladder diagrams: captures built byte by byte (independently of smoltcp's emitters), their
//! decoding, damaged and hostile files, and the SVG checked for well-formedness. IPv6 is tested in [`ipv6`].

use std::collections::BTreeMap;

use super::style::{COLOR_BAD, COLOR_RETRANSMISSION, COLOR_TCP};
use super::*;

mod ipv6;

const CLIENT: [u8; 4] = [10, 0, 2, 2];
const SERVER: [u8; 4] = [10, 0, 2, 15];
const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const PSH: u8 = 0x08;
const ACK: u8 = 0x10;

// ---- Packets, built byte by byte (independently of smoltcp's emitters) ----

/// The RFC 1071 sum of the concatenated parts (not complemented).
fn sum16(parts: &[&[u8]]) -> u16 {
    let bytes: Vec<u8> = parts.concat();
    let mut sum: u32 = 0;
    for pair in bytes.chunks(2) {
        let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

fn pseudo(src: [u8; 4], dst: [u8; 4], protocol: u8, len: usize) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    p.extend_from_slice(&[0, protocol]);
    p.extend_from_slice(&(len as u16).to_be_bytes());
    p
}

/// An IPv4 packet (DF, TTL 64, the header checksum filled in).
fn ipv4_with(
    src: [u8; 4],
    dst: [u8; 4],
    protocol: u8,
    ident: u16,
    flags_offset: u16,
    payload: &[u8],
) -> Vec<u8> {
    let mut p = vec![0x45, 0];
    p.extend_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
    p.extend_from_slice(&ident.to_be_bytes());
    p.extend_from_slice(&flags_offset.to_be_bytes());
    p.extend_from_slice(&[64, protocol, 0, 0]);
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    let sum = !sum16(&[&p]);
    p[10..12].copy_from_slice(&sum.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

fn ipv4(src: [u8; 4], dst: [u8; 4], protocol: u8, payload: &[u8]) -> Vec<u8> {
    ipv4_with(src, dst, protocol, 1, 0x4000, payload)
}

#[derive(Clone, Copy)]
struct Seg<'a> {
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    win: u16,
    options: &'a [u8],
    payload: &'a [u8],
}

/// The TCP segment alone, checksum filled in.
fn tcp_segment(s: &Seg) -> Vec<u8> {
    assert_eq!(s.options.len() % 4, 0);
    let mut t = Vec::new();
    t.extend_from_slice(&s.sport.to_be_bytes());
    t.extend_from_slice(&s.dport.to_be_bytes());
    t.extend_from_slice(&s.seq.to_be_bytes());
    t.extend_from_slice(&s.ack.to_be_bytes());
    t.push((((20 + s.options.len()) / 4) as u8) << 4);
    t.push(s.flags);
    t.extend_from_slice(&s.win.to_be_bytes());
    t.extend_from_slice(&[0, 0, 0, 0]);
    t.extend_from_slice(s.options);
    t.extend_from_slice(s.payload);
    let sum = !sum16(&[&pseudo(s.src, s.dst, 6, t.len()), &t]);
    t[16..18].copy_from_slice(&sum.to_be_bytes());
    t
}

fn tcp(s: &Seg) -> Vec<u8> {
    ipv4(s.src, s.dst, 6, &tcp_segment(s))
}

fn udp_datagram(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = Vec::new();
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    let sum = !sum16(&[&pseudo(src, dst, 17, u.len()), &u]);
    u[6..8].copy_from_slice(&(if sum == 0 { 0xffff } else { sum }).to_be_bytes());
    u
}

fn udp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    ipv4(src, dst, 17, &udp_datagram(src, dst, sport, dport, payload))
}

fn icmp(src: [u8; 4], dst: [u8; 4], kind: u8, code: u8, rest: [u8; 4], data: &[u8]) -> Vec<u8> {
    let mut m = vec![kind, code, 0, 0];
    m.extend_from_slice(&rest);
    m.extend_from_slice(data);
    let sum = !sum16(&[&m]);
    m[2..4].copy_from_slice(&sum.to_be_bytes());
    ipv4(src, dst, 1, &m)
}

const CLIENT_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];
const SERVER_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];

fn ethernet(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    // Pad to the Ethernet minimum, as a real frame is: the padding must not confuse the IPv4 length.
    f.resize(f.len().max(60), 0);
    f
}

fn arp(op: u16, sha: [u8; 6], spa: [u8; 4], tha: [u8; 6], tpa: [u8; 4]) -> Vec<u8> {
    let mut a = vec![0, 1, 8, 0, 6, 4];
    a.extend_from_slice(&op.to_be_bytes());
    a.extend_from_slice(&sha);
    a.extend_from_slice(&spa);
    a.extend_from_slice(&tha);
    a.extend_from_slice(&tpa);
    a
}

/// A classic pcap file: microsecond timestamps, the given byte order and link type.
fn pcap(link_type: u32, big_endian: bool, records: &[(u32, u32, Vec<u8>)]) -> Vec<u8> {
    let u32b = |v: u32| {
        if big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    };
    let u16b = |v: u16| {
        if big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    };
    let mut f = Vec::new();
    f.extend_from_slice(&u32b(0xa1b2_c3d4));
    f.extend_from_slice(&u16b(2));
    f.extend_from_slice(&u16b(4));
    f.extend_from_slice(&u32b(0)); // thiszone
    f.extend_from_slice(&u32b(0)); // sigfigs
    f.extend_from_slice(&u32b(65535)); // snaplen
    f.extend_from_slice(&u32b(link_type));
    for (secs, micros, data) in records {
        f.extend_from_slice(&u32b(*secs));
        f.extend_from_slice(&u32b(*micros));
        f.extend_from_slice(&u32b(data.len() as u32));
        f.extend_from_slice(&u32b(data.len() as u32));
        f.extend_from_slice(data);
    }
    f
}

/// Records at 1700000000.5 s plus 123 µs per packet.
fn timed(packets: Vec<Vec<u8>>) -> Vec<(u32, u32, Vec<u8>)> {
    packets
        .into_iter()
        .enumerate()
        .map(|(i, p)| (1_700_000_000, 500_000 + 123 * i as u32, p))
        .collect()
}

/// SYN, SYN-ACK, ACK, "hello" →, "HELLO" ←, ACK, FIN →, FIN ←, ACK; window scale options if `scale`.
fn exchange(client_isn: u32, server_isn: u32, scale: bool) -> Vec<Vec<u8>> {
    let (c, s) = (client_isn, server_isn);
    // MSS 1460, NOP, window scale 2 (client) or 3 (server).
    let (c_opts, s_opts): (&[u8], &[u8]) = if scale {
        (&[2, 4, 5, 180, 1, 3, 3, 2], &[2, 4, 5, 180, 1, 3, 3, 3])
    } else {
        (&[], &[])
    };
    let (c_win, s_win) = if scale { (16384, 8192) } else { (65535, 65535) };
    let up = |seq, ack, flags, win, options, payload| {
        tcp(&Seg {
            src: CLIENT,
            dst: SERVER,
            sport: 40000,
            dport: 12000,
            seq,
            ack,
            flags,
            win,
            options,
            payload,
        })
    };
    let down = |seq, ack, flags, win, options, payload| {
        tcp(&Seg {
            src: SERVER,
            dst: CLIENT,
            sport: 12000,
            dport: 40000,
            seq,
            ack,
            flags,
            win,
            options,
            payload,
        })
    };
    let one = 1u32;
    vec![
        up(c, 0, SYN, 65535, c_opts, b""),
        down(s, c.wrapping_add(one), SYN | ACK, 65535, s_opts, b""),
        up(c.wrapping_add(1), s.wrapping_add(1), ACK, c_win, &[], b""),
        up(
            c.wrapping_add(1),
            s.wrapping_add(1),
            PSH | ACK,
            c_win,
            &[],
            b"hello",
        ),
        down(
            s.wrapping_add(1),
            c.wrapping_add(6),
            PSH | ACK,
            s_win,
            &[],
            b"HELLO",
        ),
        up(c.wrapping_add(6), s.wrapping_add(6), ACK, c_win, &[], b""),
        up(
            c.wrapping_add(6),
            s.wrapping_add(6),
            FIN | ACK,
            c_win,
            &[],
            b"",
        ),
        down(
            s.wrapping_add(6),
            c.wrapping_add(7),
            FIN | ACK,
            s_win,
            &[],
            b"",
        ),
        up(c.wrapping_add(7), s.wrapping_add(7), ACK, c_win, &[], b""),
    ]
}

fn expected_exchange(win: u32) -> Vec<(&'static str, &'static str, String)> {
    let (c, s) = ("10.0.2.2", "10.0.2.15");
    let (up, down) = ("(40000→12000)", "(12000→40000)");
    vec![
        (c, s, format!("SYN seq=0 ack=0 len=0 win=65535 {up}")),
        (
            s,
            c,
            format!("[SYN, ACK] seq=0 ack=1 len=0 win=65535 {down}"),
        ),
        (c, s, format!("ACK seq=1 ack=1 len=0 win={win} {up}")),
        (c, s, format!("[PSH, ACK] seq=1 ack=1 len=5 win={win} {up}")),
        (
            s,
            c,
            format!("[PSH, ACK] seq=1 ack=6 len=5 win={win} {down}"),
        ),
        (c, s, format!("ACK seq=6 ack=6 len=0 win={win} {up}")),
        (c, s, format!("[FIN, ACK] seq=6 ack=6 len=0 win={win} {up}")),
        (
            s,
            c,
            format!("[FIN, ACK] seq=6 ack=7 len=0 win={win} {down}"),
        ),
        (c, s, format!("ACK seq=7 ack=7 len=0 win={win} {up}")),
    ]
}

fn assert_exchange(packets: &[LadderPacket], first: usize, win: u32) {
    for (i, (src, dst, label)) in expected_exchange(win).into_iter().enumerate() {
        let p = &packets[first + i];
        assert_eq!(
            (p.src.as_str(), p.dst.as_str(), p.label.as_str()),
            (src, dst, label.as_str()),
            "packet {i}"
        );
        assert_eq!(p.mark, None, "packet {i}: {}", p.label);
    }
    assert_eq!(kinds(&packets[first..first + 9]), exchange_kinds());
}

fn labels(packets: &[LadderPacket]) -> Vec<&str> {
    packets.iter().map(|p| p.label.as_str()).collect()
}

fn marks(packets: &[LadderPacket]) -> Vec<Option<&str>> {
    packets.iter().map(|p| p.mark.as_deref()).collect()
}

fn kinds(packets: &[LadderPacket]) -> Vec<PacketKind> {
    packets.iter().map(|p| p.kind).collect()
}

/// The kind of a TCP segment with `flags` (as on the wire) that the tracker found to be `resend`.
fn tcp_kind(flags: u8, resend: Resend) -> PacketKind {
    PacketKind::Tcp(TcpSegment {
        syn: flags & SYN != 0,
        ack: flags & ACK != 0,
        fin: flags & FIN != 0,
        rst: flags & RST != 0,
        resend,
    })
}

/// The kinds of [`exchange`]'s packets: none sent twice.
fn exchange_kinds() -> Vec<PacketKind> {
    [
        SYN,
        SYN | ACK,
        ACK,
        PSH | ACK,
        PSH | ACK,
        ACK,
        FIN | ACK,
        FIN | ACK,
        ACK,
    ]
    .into_iter()
    .map(|flags| tcp_kind(flags, Resend::First))
    .collect()
}

// ---- Decoding ----

#[test]
fn tcp_exchange_on_raw_ip() {
    // The client's sequence numbers wrap around 2^32 in the middle of the exchange.
    let file = pcap(101, false, &timed(exchange(0xffff_fffe, 5000, false)));
    let ladder = read_pcap(&file).unwrap();
    assert_eq!(ladder.records, 9);
    assert!(ladder.skipped.is_empty(), "{:?}", ladder.skipped);
    assert_exchange(&ladder.packets, 0, 65535);
    for (i, p) in ladder.packets.iter().enumerate() {
        assert!(
            (p.time - 123e-6 * i as f64).abs() < 1e-9,
            "packet {i} at {}",
            p.time
        );
    }
    // Link type 228 (IPv4 only) reads the same.
    let file = pcap(228, false, &timed(exchange(0xffff_fffe, 5000, false)));
    assert_exchange(&packets_from_pcap(&file).unwrap(), 0, 65535);
}

#[test]
fn tcp_exchange_on_ethernet_big_endian_with_arp_and_window_scale() {
    let mut frames = vec![
        ethernet(
            [0xff; 6],
            CLIENT_MAC,
            0x0806,
            &arp(1, CLIENT_MAC, CLIENT, [0; 6], SERVER),
        ),
        ethernet(
            CLIENT_MAC,
            SERVER_MAC,
            0x0806,
            &arp(2, SERVER_MAC, SERVER, CLIENT_MAC, CLIENT),
        ),
    ];
    for packet in exchange(1000, 0x8000_0000, true) {
        let (dst, src) = if packet[12..16] == CLIENT {
            (SERVER_MAC, CLIENT_MAC)
        } else {
            (CLIENT_MAC, SERVER_MAC)
        };
        frames.push(ethernet(dst, src, 0x0800, &packet));
    }
    let file = pcap(1, true, &timed(frames));
    let packets = packets_from_pcap(&file).unwrap();
    assert_eq!(packets.len(), 11);
    assert_eq!(
        (
            packets[0].src.as_str(),
            packets[0].dst.as_str(),
            packets[0].label.as_str()
        ),
        ("10.0.2.2", "10.0.2.15", "ARP who-has 10.0.2.15")
    );
    assert_eq!(
        (
            packets[1].src.as_str(),
            packets[1].dst.as_str(),
            packets[1].label.as_str()
        ),
        (
            "10.0.2.15",
            "10.0.2.2",
            "ARP 10.0.2.15 is-at 02:00:00:00:00:01"
        )
    );
    assert_eq!(kinds(&packets[..2]), [PacketKind::AddressResolution; 2]);
    // 16384 << 2 and 8192 << 3: the windows as scaled by the options of the SYNs.
    assert_exchange(&packets, 2, 65536);
    assert!((packets[10].time - 10.0 * 123e-6).abs() < 1e-9);
}

#[test]
fn vlan_tagged_frame_and_nanosecond_pcap() {
    let packet = udp(CLIENT, SERVER, 40000, 12000, b"hello");
    let mut tagged = vec![0xff; 6];
    tagged.extend_from_slice(&CLIENT_MAC);
    tagged.extend_from_slice(&[0x81, 0x00, 0x00, 0x07, 0x08, 0x00]);
    tagged.extend_from_slice(&packet);
    let mut file = pcap(
        1,
        false,
        &[(10, 0, tagged.clone()), (10, 500_000_000, tagged)],
    );
    file[..4].copy_from_slice(&0xa1b2_3c4du32.to_le_bytes());
    let packets = packets_from_pcap(&file).unwrap();
    assert_eq!(labels(&packets), ["UDP 40000→12000 len=5"; 2]);
    assert!((packets[1].time - 0.5).abs() < 1e-9);
}

#[test]
fn connection_without_its_handshake_counts_from_one() {
    let seg = |src, dst, sport, dport, seq, ack, flags, payload| {
        tcp(&Seg {
            src,
            dst,
            sport,
            dport,
            seq,
            ack,
            flags,
            win: 1000,
            options: &[],
            payload,
        })
    };
    let file = pcap(
        101,
        false,
        &timed(vec![
            seg(CLIENT, SERVER, 40000, 12000, 777, 999, PSH | ACK, b"abc"),
            seg(SERVER, CLIENT, 12000, 40000, 999, 780, ACK, b""),
            // A refused connection: RST to a SYN.
            seg(CLIENT, SERVER, 40001, 12001, 42, 0, SYN, b""),
            seg(SERVER, CLIENT, 12001, 40001, 0, 43, RST | ACK, b""),
        ]),
    );
    assert_eq!(
        labels(&packets_from_pcap(&file).unwrap()),
        [
            "[PSH, ACK] seq=1 ack=1 len=3 win=1000 (40000→12000)",
            "ACK seq=1 ack=4 len=0 win=1000 (12000→40000)",
            "SYN seq=0 ack=0 len=0 win=1000 (40001→12001)",
            "[RST, ACK] seq=1 ack=1 len=0 win=1000 (12001→40001)",
        ]
    );
}

#[test]
fn udp_icmp_and_fragments() {
    let udp_header = udp_datagram(CLIENT, SERVER, 40000, 12001, b"hi");
    let quoted = [
        &ipv4(CLIENT, SERVER, 17, &udp_header)[..20],
        &udp_header[..8],
    ]
    .concat();
    let big = udp_datagram(CLIENT, SERVER, 40000, 12000, &[b'x'; 2000]);
    let file = pcap(
        101,
        false,
        &timed(vec![
            udp(CLIENT, SERVER, 40000, 12000, b"hello"),
            udp(SERVER, CLIENT, 12000, 40000, b"HELLO"),
            udp(CLIENT, SERVER, 40000, 12001, b"hi"),
            icmp(SERVER, CLIENT, 3, 3, [0; 4], &quoted),
            icmp(CLIENT, SERVER, 8, 0, [0, 1, 0, 7], b"ping"),
            icmp(SERVER, CLIENT, 0, 0, [0, 1, 0, 7], b"ping"),
            ipv4_with(CLIENT, SERVER, 17, 0x561a, 0x2000, &big[..1480]),
            ipv4_with(CLIENT, SERVER, 17, 0x561a, 1480 / 8, &big[1480..]),
            ipv4_with(CLIENT, SERVER, 6, 0x561b, 0x2000, &[0; 24]),
        ]),
    );
    let packets = packets_from_pcap(&file).unwrap();
    assert_eq!(
        labels(&packets),
        [
            "UDP 40000→12000 len=5",
            "UDP 12000→40000 len=5",
            "UDP 40000→12001 len=2",
            "ICMP port unreachable (UDP 40000→12001)",
            "ICMP echo request id=1 seq=7",
            "ICMP echo reply id=1 seq=7",
            "UDP 40000→12000 fragment id=0x561a off=0 len=1480 MF",
            "UDP fragment id=0x561a off=1480 len=528",
            "TCP 0→0 fragment id=0x561b off=0 len=24 MF",
        ]
    );
    // Each fragment of a UDP datagram is UDP; a fragment of a TCP segment is no segment whose flags are read.
    use PacketKind::{Other, PortUnreachable, Udp};
    assert_eq!(
        kinds(&packets),
        [
            Udp,
            Udp,
            Udp,
            PortUnreachable,
            Other,
            Other,
            Udp,
            Udp,
            Other
        ]
    );
    assert_eq!(
        (packets[3].src.as_str(), packets[3].dst.as_str()),
        ("10.0.2.15", "10.0.2.2")
    );
    assert!(
        packets.iter().all(|p| p.mark.is_none()),
        "{:?}",
        marks(&packets)
    );
}

#[test]
fn retransmission_marks_the_earlier_segment_lost() {
    let mut packets = exchange(1000, 5000, false);
    // The client's "hello" goes three times; the server's duplicate pure ACKs are no retransmissions.
    let hello = packets[3].clone();
    let dup_ack = tcp(&Seg {
        src: SERVER,
        dst: CLIENT,
        sport: 12000,
        dport: 40000,
        seq: 5001,
        ack: 1001,
        flags: ACK,
        win: 65535,
        options: &[],
        payload: b"",
    });
    packets.splice(
        4..4,
        [dup_ack.clone(), hello.clone(), dup_ack, hello.clone()],
    );
    let file = pcap(101, false, &timed(packets));
    let packets = packets_from_pcap(&file).unwrap();
    assert_eq!(
        marks(&packets),
        [
            None,
            None,
            None,
            Some("lost?"),
            None,
            Some("retransmission, lost?"),
            None,
            Some("retransmission"),
            None,
            None,
            None,
            None,
            None
        ]
    );
    assert_eq!(
        packets[7].label,
        "[PSH, ACK] seq=1 ack=1 len=5 win=65535 (40000→12000)"
    );
    let resent = |packets: &[LadderPacket]| -> Vec<Resend> {
        packets
            .iter()
            .filter_map(|p| match p.kind {
                PacketKind::Tcp(segment) => Some(segment.resend),
                _ => None,
            })
            .collect()
    };
    let mut expected = vec![Resend::First; 13];
    expected[5] = Resend::Retransmission;
    expected[7] = Resend::Retransmission;
    assert_eq!(resent(&packets), expected);
    assert_eq!(
        packets[4].label,
        "ACK seq=1 ack=1 len=0 win=65535 (12000→40000)"
    );

    // Sent again although the server had acknowledged it: spurious, and the first copy was not lost.
    let mut packets = exchange(1000, 5000, false);
    packets.truncate(6); // up to the client's ACK of "HELLO", after the server acknowledged "hello"
    packets.push(hello);
    let packets = packets_from_pcap(&pcap(101, false, &timed(packets))).unwrap();
    assert_eq!(
        marks(&packets),
        [
            None,
            None,
            None,
            None,
            None,
            None,
            Some("spurious retransmission")
        ]
    );
    assert_eq!(
        packets[6].kind,
        tcp_kind(PSH | ACK, Resend::SpuriousRetransmission)
    );
    let svg = ladder_svg("spurious", &packets);
    assert!(packet_lines(&svg)[6].3.contains(COLOR_RETRANSMISSION));

    // A retransmitted SYN is one too.
    let syn = exchange(1000, 5000, false).remove(0);
    let file = pcap(101, false, &timed(vec![syn.clone(), syn]));
    let packets = packets_from_pcap(&file).unwrap();
    assert_eq!(marks(&packets), [Some("lost?"), Some("retransmission")]);
    assert_eq!(
        kinds(&packets),
        [
            tcp_kind(SYN, Resend::First),
            tcp_kind(SYN, Resend::Retransmission)
        ]
    );
}

#[test]
fn zero_window_probes_are_not_retransmissions() {
    let mut packets = exchange(1000, 5000, false);
    packets.truncate(3);
    let up = |payload: &'static [u8]| {
        tcp(&Seg {
            src: CLIENT,
            dst: SERVER,
            sport: 40000,
            dport: 12000,
            seq: 1001,
            ack: 5001,
            flags: ACK,
            win: 65535,
            options: &[],
            payload,
        })
    };
    let down = |win| {
        tcp(&Seg {
            src: SERVER,
            dst: CLIENT,
            sport: 12000,
            dport: 40000,
            seq: 5001,
            ack: 1001,
            flags: ACK,
            win,
            options: &[],
            payload: b"",
        })
    };
    packets.extend([
        down(0),
        up(b"h"),
        down(0),
        up(b"h"),
        down(1000),
        up(b"hello"),
    ]);
    let packets = packets_from_pcap(&pcap(101, false, &timed(packets))).unwrap();
    assert!(
        packets.iter().all(|p| p.mark.is_none()),
        "{:?}",
        marks(&packets)
    );
    assert_eq!(
        packets[4].label,
        "ACK seq=1 ack=1 len=1 win=65535 zero-window probe (40000→12000)"
    );
    assert_eq!(packets[6].label, packets[4].label);
    assert_eq!(packets[4].kind, tcp_kind(ACK, Resend::ZeroWindowProbe));
    assert_eq!(packets[6].kind, packets[4].kind);
    assert_eq!(packets[8].kind, tcp_kind(ACK, Resend::First));
    assert_eq!(
        packets[8].label,
        "ACK seq=1 ack=1 len=5 win=65535 (40000→12000)"
    );
}

#[test]
fn bad_checksums_are_marked_corrupted_but_offloaded_ones_are_not() {
    let data = Seg {
        src: CLIENT,
        dst: SERVER,
        sport: 40000,
        dport: 12000,
        seq: 1,
        ack: 1,
        flags: PSH | ACK,
        win: 100,
        options: &[],
        payload: b"hello",
    };
    // Each with its own sequence number, so that none is a retransmission of another.
    let at = |seq| tcp(&Seg { seq, ..data });
    let good = at(1);
    let mut tcp_payload_flipped = at(101);
    *tcp_payload_flipped.last_mut().unwrap() ^= 0x20;
    let mut ip_header_flipped = at(201);
    ip_header_flipped[8] = 63; // TTL changed after the header checksum was computed
                               // What a kernel with checksum offload hands a TUN device: only the pseudo-header sum.
    let mut partial = at(301);
    let pseudo_sum = sum16(&[&pseudo(CLIENT, SERVER, 6, 25)]);
    partial[36..38].copy_from_slice(&pseudo_sum.to_be_bytes());
    // What smoltcp sends when the device offloads the checksum: zero.
    let mut zero = at(401);
    zero[36..38].copy_from_slice(&[0, 0]);
    let mut udp_flipped = udp(CLIENT, SERVER, 40000, 12000, b"hello");
    *udp_flipped.last_mut().unwrap() ^= 1;
    let mut udp_no_checksum = udp(CLIENT, SERVER, 40000, 12000, b"hello");
    udp_no_checksum[26..28].copy_from_slice(&[0, 0]);
    let mut icmp_flipped = icmp(CLIENT, SERVER, 8, 0, [0, 1, 0, 1], b"ping");
    *icmp_flipped.last_mut().unwrap() ^= 1;
    // A TCP header cut to 10 bytes (the IPv4 length agrees): drawn, not skipped.
    let short_tcp = ipv4(CLIENT, SERVER, 6, &tcp_segment(&data)[..10]);

    let file = pcap(
        101,
        false,
        &timed(vec![
            good,
            tcp_payload_flipped,
            ip_header_flipped,
            partial,
            zero,
            udp_flipped,
            udp_no_checksum,
            icmp_flipped,
            short_tcp,
        ]),
    );
    let packets = packets_from_pcap(&file).unwrap();
    assert_eq!(
        marks(&packets),
        [
            None,
            Some("corrupted"),
            Some("corrupted"),
            None,
            None,
            Some("corrupted"),
            None,
            Some("corrupted"),
            Some("corrupted"),
        ]
    );
    assert_eq!(packets[0].mark, None);
    assert_eq!(packets[8].label, "TCP malformed header (10 bytes)");
}

#[test]
fn other_protocols_are_skipped_and_counted() {
    // IPv6 carrying ESP (50), which is not drawn.
    let mut ipv6 = vec![0x60, 0, 0, 0, 0, 8, 50, 64];
    ipv6.extend_from_slice(&[0; 32]);
    ipv6.extend_from_slice(&[0; 8]);
    let igmp = ipv4(
        CLIENT,
        [224, 0, 0, 1],
        2,
        &[0x11, 0, 0xee, 0xff, 0, 0, 0, 0],
    );
    let udp_packet = udp(CLIENT, SERVER, 1, 2, b"x");
    let raw = pcap(
        101,
        false,
        &[
            (5, 0, ipv6.clone()),
            (5, 250, udp_packet.clone()),
            (5, 300, igmp.clone()),
            (5, 400, vec![0x00; 3]),
        ],
    );
    let ladder = read_pcap(&raw).unwrap();
    assert_eq!(ladder.records, 4);
    assert_eq!(ladder.packets.len(), 1);
    // Times count from the first record, even a skipped one.
    assert!((ladder.packets[0].time - 250e-6).abs() < 1e-9);
    assert_eq!(
        ladder.skipped,
        BTreeMap::from([
            ("other IPv6 protocol".to_string(), 1),
            ("other IPv4 protocol".to_string(), 1),
            ("not IP".to_string(), 1)
        ])
    );
    assert_eq!(
        ladder.skipped_summary(),
        "3 skipped (1 not IP, 1 other IPv4 protocol, 1 other IPv6 protocol)"
    );

    let eth = pcap(
        1,
        false,
        &timed(vec![
            ethernet([0xff; 6], CLIENT_MAC, 0x86dd, &ipv6),
            ethernet([0xff; 6], CLIENT_MAC, 0x88cc, &[0; 30]),
            ethernet(SERVER_MAC, CLIENT_MAC, 0x0800, &udp_packet),
            [
                &ethernet(SERVER_MAC, CLIENT_MAC, 0x0800, &[])[..14],
                &udp_packet[..20],
            ]
            .concat(), // cut short
            vec![0; 8], // shorter than an Ethernet header
        ]),
    );
    let ladder = read_pcap(&eth).unwrap();
    assert_eq!(labels(&ladder.packets), ["UDP 1→2 len=1"]);
    assert_eq!(ladder.skipped_total(), 4, "{:?}", ladder.skipped);
}

#[test]
fn truncated_files() {
    let file = pcap(101, false, &timed(exchange(1000, 5000, false)));
    // Shorter than the file header: not a capture.
    for cut in [0, 3, 4, 10, 23] {
        assert!(read_pcap(&file[..cut]).is_err(), "cut at {cut}");
    }
    // Just the header: no packets.
    assert_eq!(read_pcap(&file[..24]).unwrap().packets, []);
    // Cut inside the first record header, then inside the second record's data.
    let ladder = read_pcap(&file[..30]).unwrap();
    assert_eq!((ladder.packets.len(), ladder.skipped_total()), (0, 1));
    let second_record_data = 24 + 16 + 40 + 16 + 5;
    let ladder = read_pcap(&file[..second_record_data]).unwrap();
    assert_eq!(ladder.packets.len(), 1);
    assert_eq!(
        ladder.skipped,
        BTreeMap::from([("truncated record at end of file".to_string(), 1)])
    );
    // Every cut reads without panicking, and the packets before the cut are all there.
    let whole = read_pcap(&file).unwrap().packets;
    for cut in 24..file.len() {
        let partial = read_pcap(&file[..cut]).unwrap().packets;
        assert_eq!(partial[..], whole[..partial.len()], "cut at {cut}");
    }
}

/// xorshift32: a fixed sequence of pseudo-random numbers.
fn rng(state: &mut u32) -> u32 {
    *state ^= *state << 13;
    *state ^= *state >> 17;
    *state ^= *state << 5;
    *state
}

#[test]
fn garbage_is_an_error_or_skipped_never_a_panic() {
    assert!(read_pcap(b"").is_err());
    assert_eq!(
        read_pcap(b"").unwrap_err(),
        PcapError::ShorterThanMagic { len: 0 }
    );
    assert!(read_pcap(b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")
        .unwrap_err()
        .to_string()
        .contains("not a pcap"));
    let mut pcapng = vec![0x0a, 0x0d, 0x0d, 0x0a];
    pcapng.extend_from_slice(&[0; 40]);
    assert!(read_pcap(&pcapng)
        .unwrap_err()
        .to_string()
        .contains("pcapng"));
    assert_eq!(read_pcap(&pcapng).unwrap_err(), PcapError::Pcapng);
    assert!(read_pcap(&pcap(113, false, &[]))
        .unwrap_err()
        .to_string()
        .contains("link type 113"));
    let mut huge = pcap(1, false, &[]);
    huge.extend_from_slice(&[
        0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    ]);
    huge.extend_from_slice(&[0; 64]);
    assert!(read_pcap(&huge)
        .unwrap_err()
        .to_string()
        .contains("captured length"));
    assert!(matches!(
        read_pcap(&huge),
        Err(PcapError::RecordTooLong {
            index: 1,
            at: 24,
            ..
        })
    ));

    // Random bytes as a file, random frames in a good file, and good files with bytes changed.
    let mut state = 0x1234_5678;
    for _ in 0..300 {
        let len = (rng(&mut state) % 300) as usize;
        let noise: Vec<u8> = (0..len).map(|_| rng(&mut state) as u8).collect();
        let _ = read_pcap(&noise);
        for link in [1, 101] {
            let _ = read_pcap(&pcap(link, false, &[(0, 0, noise.clone())]));
        }
    }
    let mut ethernet_frames = Vec::new();
    for packet in exchange(1000, 5000, true) {
        ethernet_frames.push(ethernet(SERVER_MAC, CLIENT_MAC, 0x0800, &packet));
    }
    ethernet_frames.push(ethernet(
        [0xff; 6],
        CLIENT_MAC,
        0x0806,
        &arp(1, CLIENT_MAC, CLIENT, [0; 6], SERVER),
    ));
    let udp_header = udp_datagram(CLIENT, SERVER, 40000, 12001, b"hi");
    let quoted = [
        &ipv4(CLIENT, SERVER, 17, &udp_header)[..20],
        &udp_header[..8],
    ]
    .concat();
    let mut raw_packets = exchange(1000, 5000, false);
    raw_packets.push(icmp(SERVER, CLIENT, 3, 3, [0; 4], &quoted));
    raw_packets.push(udp(CLIENT, SERVER, 40000, 12000, b"hello"));
    for file in [
        pcap(1, false, &timed(ethernet_frames)),
        pcap(101, true, &timed(raw_packets)),
    ] {
        for _ in 0..3000 {
            let mut damaged = file.clone();
            for _ in 0..1 + rng(&mut state) % 4 {
                let at = 24 + rng(&mut state) as usize % (damaged.len() - 24);
                damaged[at] = rng(&mut state) as u8;
            }
            if let Ok(packets) = packets_from_pcap(&damaged) {
                let svg = ladder_svg("damaged", &packets);
                assert_eq!(
                    svg.matches(r#"class="packet""#).count(),
                    packets.len().min(MAX_DRAWN)
                );
            }
        }
    }
}

// ---- The SVG ----

/// A small well-formedness check: one root element, tags balanced and properly nested, attributes quoted
/// and unique, entities known, no characters XML forbids.
fn check_well_formed(xml: &str) -> Result<(), String> {
    fn check_text(text: &str) -> Result<(), String> {
        if let Some(c) = text
            .chars()
            .find(|&c| (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r'))
        {
            return Err(format!("control character {:?} in {text:?}", c));
        }
        let mut rest = text;
        while let Some(at) = rest.find('&') {
            rest = &rest[at + 1..];
            let end = rest
                .find(';')
                .ok_or_else(|| format!("unterminated entity in {text:?}"))?;
            let entity = &rest[..end];
            let numeric = entity
                .strip_prefix('#')
                .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
            if !numeric && !["amp", "lt", "gt", "quot", "apos"].contains(&entity) {
                return Err(format!("unknown entity &{entity}; in {text:?}"));
            }
        }
        Ok(())
    }
    let is_name = |n: &str| {
        !n.is_empty()
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_:.".contains(c))
    };
    let mut rest = xml.trim_start();
    if let Some(r) = rest.strip_prefix("<?xml") {
        rest = &r[r.find("?>").ok_or("unterminated XML declaration")? + 2..];
    }
    let mut stack: Vec<&str> = Vec::new();
    let mut roots = 0;
    loop {
        let lt = rest.find('<');
        let text = &rest[..lt.unwrap_or(rest.len())];
        check_text(text)?;
        if stack.is_empty() && !text.trim().is_empty() {
            return Err(format!("text outside the root element: {text:?}"));
        }
        if text.contains('>') {
            return Err(format!("stray '>' in text {text:?}"));
        }
        let Some(lt) = lt else { break };
        rest = &rest[lt..];
        if let Some(r) = rest.strip_prefix("<!--") {
            rest = &r[r.find("-->").ok_or("unterminated comment")? + 3..];
            continue;
        }
        if let Some(r) = rest.strip_prefix("</") {
            let end = r.find('>').ok_or("unterminated end tag")?;
            let name = r[..end].trim();
            match stack.pop() {
                Some(open) if open == name => {}
                other => return Err(format!("</{name}> closes {other:?}")),
            }
            rest = &r[end + 1..];
            continue;
        }
        let body = &rest[1..];
        let mut quote = None;
        let mut end = None;
        for (i, c) in body.char_indices() {
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), '<') | (None, '<') => {
                    return Err(format!("'<' inside a tag: {}", &body[..i]))
                }
                (Some(_), _) => {}
                (None, '"' | '\'') => quote = Some(c),
                (None, '>') => {
                    end = Some(i);
                    break;
                }
                (None, _) => {}
            }
        }
        let end = end.ok_or("unterminated tag")?;
        let inner = &body[..end];
        let self_closing = inner.ends_with('/');
        let inner = inner.strip_suffix('/').unwrap_or(inner);
        let name_end = inner.find(char::is_whitespace).unwrap_or(inner.len());
        let name = &inner[..name_end];
        if !is_name(name) {
            return Err(format!("bad element name {name:?}"));
        }
        let mut attrs = inner[name_end..].trim_start();
        let mut seen = Vec::new();
        while !attrs.is_empty() {
            let eq = attrs
                .find('=')
                .ok_or_else(|| format!("attribute without value in <{name} {attrs}"))?;
            let attr = &attrs[..eq];
            if !is_name(attr) || seen.contains(&attr) {
                return Err(format!("bad or repeated attribute {attr:?} in <{name}>"));
            }
            seen.push(attr);
            let value = &attrs[eq + 1..];
            let q = value
                .chars()
                .next()
                .filter(|c| *c == '"' || *c == '\'')
                .ok_or("unquoted attribute")?;
            let close = value[1..].find(q).ok_or("unterminated attribute value")?;
            check_text(&value[1..1 + close])?;
            let after = &value[close + 2..];
            if !after.is_empty() && !after.starts_with(char::is_whitespace) {
                return Err(format!("no space after attribute {attr:?} in <{name}>"));
            }
            attrs = after.trim_start();
        }
        if stack.is_empty() {
            roots += 1;
        }
        if !self_closing {
            stack.push(name);
        }
        rest = &body[end + 1..];
    }
    match (roots, stack.last()) {
        (1, None) => Ok(()),
        (_, Some(open)) => Err(format!("<{open}> never closed")),
        (n, None) => Err(format!("{n} root elements")),
    }
}

/// Parses the document with Python's XML parser too, when python3 is there.
fn python_parses(svg: &str, name: &str) {
    let path = std::env::temp_dir().join(format!(
        "smoltalk-diagram-{}-{name}.svg",
        std::process::id()
    ));
    std::fs::write(&path, svg).unwrap();
    let result = std::process::Command::new("python3")
        .args([
            "-c",
            "import xml.etree.ElementTree as E,sys; E.parse(sys.argv[1])",
        ])
        .arg(&path)
        .output();
    let _ = std::fs::remove_file(&path);
    match result {
        Err(e) => println!("python3 not run ({e}): the XML check by Python is skipped"),
        Ok(out) => assert!(
            out.status.success(),
            "python3 rejects the SVG: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// The `<line class="packet" …/>` elements, as (data-index, x1, x2, the whole element).
fn packet_lines(svg: &str) -> Vec<(usize, f64, f64, &str)> {
    let attr = |line: &str, name: &str| -> String {
        let start = line.find(&format!(" {name}=\"")).unwrap() + name.len() + 3;
        line[start..].split('"').next().unwrap().to_string()
    };
    svg.match_indices(r#"<line class="packet""#)
        .map(|(at, _)| {
            let line = &svg[at..at + svg[at..].find("/>").unwrap() + 2];
            let index = attr(line, "data-index").parse().unwrap();
            (
                index,
                attr(line, "x1").parse().unwrap(),
                attr(line, "x2").parse().unwrap(),
                line,
            )
        })
        .collect()
}

#[test]
fn svg_of_an_exchange() {
    let file = pcap(101, false, &timed(exchange(1000, 5000, false)));
    let packets = packets_from_pcap(&file).unwrap();
    let svg = ladder_svg("TCP: send once, read once", &packets);
    check_well_formed(&svg).unwrap();
    python_parses(&svg, "exchange");
    assert!(svg.contains(r#"<svg xmlns="http://www.w3.org/2000/svg" width=""#));
    assert!(svg.contains(" viewBox=\"0 0 "));
    assert!(svg.contains("<marker "));
    assert_eq!(svg.matches(r#"class="packet""#).count(), packets.len());
    let lines = packet_lines(&svg);
    assert_eq!(
        lines.iter().map(|l| l.0).collect::<Vec<_>>(),
        (0..packets.len()).collect::<Vec<_>>()
    );
    // The client (first seen) is the left lifeline: its packets go right, the server's left.
    for ((_, x1, x2, _), packet) in lines.iter().zip(&packets) {
        assert_eq!(x1 < x2, packet.src == "10.0.2.2", "{}", packet.label);
    }
    // Host names on top, in order of first appearance; times on the left; labels in order.
    let client = svg.find(">10.0.2.2</text>").unwrap();
    let server = svg.find(">10.0.2.15</text>").unwrap();
    assert!(client < server);
    assert!(svg.contains(">0.000000 s</text>") && svg.contains(">0.000123 s</text>"));
    let mut at = 0;
    for packet in &packets {
        let found = svg[at..]
            .find(&format!(">{}</text>", packet.label))
            .unwrap_or_else(|| panic!("{}", packet.label));
        at += found + 1;
    }
    assert!(
        !svg.contains("stroke-dasharray=\"6 4\" marker-end"),
        "nothing is marked"
    );
}

fn packet(src: &str, dst: &str, label: &str, mark: Option<&str>) -> LadderPacket {
    LadderPacket {
        time: 0.25,
        src: src.into(),
        dst: dst.into(),
        label: label.into(),
        kind: PacketKind::Other,
        mark: mark.map(Into::into),
    }
}

#[test]
fn svg_marks_escaping_self_packets_and_empty() {
    let packets = vec![
        packet("a", "b", "data", Some("lost?")),
        packet("a", "b", "data", Some("retransmission")),
        packet("b", "a", "bad", Some("corrupted")),
        packet(
            "<host & \"1\">",
            "b",
            "<script>alert('x')</script> & \u{1} more",
            None,
        ),
        packet("c", "c", "to myself", None),
    ];
    let svg = ladder_svg("title with <tags> & \"quotes\" 'too'", &packets);
    check_well_formed(&svg).unwrap();
    python_parses(&svg, "marks");
    assert!(!svg.contains("<script>") && !svg.contains("<tags>") && !svg.contains("<host"));
    assert!(svg.contains("&lt;script&gt;alert(&apos;x&apos;)&lt;/script&gt; &amp; \u{fffd} more"));
    assert!(svg.contains("title with &lt;tags&gt; &amp; &quot;quotes&quot; &apos;too&apos;"));
    let lines = packet_lines(&svg);
    assert_eq!(lines.len(), 5);
    assert!(lines[0].3.contains(COLOR_BAD) && lines[0].3.contains("stroke-dasharray"));
    assert!(lines[1].3.contains(COLOR_RETRANSMISSION) && !lines[1].3.contains("stroke-dasharray"));
    assert!(lines[2].3.contains(COLOR_BAD) && lines[2].3.contains("stroke-dasharray"));
    assert!(lines[3].3.contains(COLOR_TCP) && !lines[3].3.contains("stroke-dasharray"));
    assert!(
        lines[4].2 > lines[4].1,
        "an arrow to itself still has a length"
    );
    assert!(svg.contains(">  lost?</tspan>") && svg.contains(">  corrupted</tspan>"));

    let empty = ladder_svg("nothing", &[]);
    check_well_formed(&empty).unwrap();
    python_parses(&empty, "empty");
    assert_eq!(empty.matches(r#"class="packet""#).count(), 0);
    assert!(empty.contains("no packets"));
}

#[test]
fn svg_draws_at_most_max_drawn_packets() {
    let packets: Vec<LadderPacket> = (0..MAX_DRAWN + 50)
        .map(|i| packet("a", "b", &format!("packet {i}"), None))
        .collect();
    let svg = ladder_svg("many", &packets);
    check_well_formed(&svg).unwrap();
    assert_eq!(svg.matches(r#"class="packet""#).count(), MAX_DRAWN);
    assert!(svg.contains("… 50 more packets"));
    let exactly = ladder_svg("exactly", &packets[..MAX_DRAWN]);
    assert_eq!(exactly.matches(r#"class="packet""#).count(), MAX_DRAWN);
    assert!(!exactly.contains("more packet"));
}

#[test]
fn well_formedness_check_catches_mistakes() {
    for bad in [
        "<svg><g></svg>",
        "<svg></svg><svg></svg>",
        "<svg a=\"1\" a=\"2\"/>",
        "<svg a=1/>",
        "<svg>a & b</svg>",
        "<svg><text>1 < 2</text></svg>",
        "<svg x=\"<\"/>",
        "text<svg/>",
    ] {
        assert!(check_well_formed(bad).is_err(), "{bad}");
    }
    check_well_formed("<?xml version=\"1.0\"?>\n<svg a=\"&amp;\"><!-- c --><g/>x &#38; y</svg>\n")
        .unwrap();
}

#[test]
fn pcap_errors_say_why() {
    let says = |bytes: &[u8]| read_pcap(bytes).unwrap_err().to_string();
    assert_eq!(
        says(b"ab"),
        "not a pcap file: 2 bytes, shorter than a magic number"
    );
    assert_eq!(
        says(b"GET / HTTP/1.1"),
        "not a pcap file: magic number [47, 45, 54, 20]"
    );
    assert_eq!(
        says(&[0x0a, 0x0d, 0x0d, 0x0a, 0, 0]),
        "a pcapng file, not a classic pcap; convert it with `editcap -F pcap IN OUT`"
    );
    assert_eq!(
        says(&pcap(101, false, &[])[..20]),
        "pcap file cut short: 20 bytes, shorter than the 24-byte file header"
    );
    assert_eq!(
        says(&pcap(113, false, &[])),
        "pcap link type 113 not supported (only 1 Ethernet, 101 raw IP, 228 raw IPv4, 229 raw IPv6)"
    );
    let mut huge = pcap(1, false, &[]);
    huge.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 0x10, 0]);
    assert_eq!(
        says(&huge),
        "pcap record 1 at byte 24: captured length 1048576 is more than any capture keeps; \
         the file is damaged or not a pcap file"
    );
}
