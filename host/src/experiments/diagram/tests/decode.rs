//! Decoding the captures the builders make: TCP exchanges on raw IP and Ethernet, VLAN tags, nanosecond
//! files, UDP, ICMP and fragments, retransmissions, zero-window probes and checksums.

use super::*;

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
    // Ports for the lanes: the datagrams', and the quoted datagram's turned round for its port unreachable (a
    // fragment after the first has none, and a ping none).
    let ports: Vec<Option<(u16, u16)>> = packets.iter().map(|p| p.ports).collect();
    assert_eq!(
        ports,
        [
            Some((40000, 12000)),
            Some((12000, 40000)),
            Some((40000, 12001)),
            Some((12001, 40000)),
            None,
            None,
            None,
            None,
            None
        ]
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
        kinds(&packets)[6],
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
    assert_eq!(kinds(&packets)[4], tcp_kind(ACK, Resend::ZeroWindowProbe));
    assert_eq!(packets[6].kind, packets[4].kind);
    assert_eq!(kinds(&packets)[8], tcp_kind(ACK, Resend::First));
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
