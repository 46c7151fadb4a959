//! Decoding IPv6 captures: TCP beside IPv4 on a raw-IP link, NDP, UDP and ICMPv6 on Ethernet and link type 229,
//! ICMPv6 errors, NDP and MLD labels, checksums, extension headers and fragments, damaged captures.

use super::*;

// ---- Decoding ----

#[test]
fn ipv6_tcp_on_tun_link_type_101_with_ipv4_beside_it() {
    let file = capture(PcapLinkType::Ip, &tcp_over_ipv6_with_ipv4());
    assert_eq!(u32::from_le_bytes(file[20..24].try_into().unwrap()), 101);
    let ladder = read_pcap(&file).unwrap();
    assert_eq!(ladder.records, 7);
    assert!(ladder.skipped.is_empty(), "{:?}", ladder.skipped);
    let packets = &ladder.packets;
    assert_eq!(
        labels(packets),
        [
            "SYN seq=0 ack=0 len=0 win=65535 (40000→12000)",
            "[SYN, ACK] seq=0 ack=1 len=0 win=65535 (12000→40000)",
            "ACK seq=1 ack=1 len=0 win=65535 (40000→12000)",
            "[PSH, ACK] seq=1 ack=1 len=5 win=65535 (40000→12000)",
            "UDP 40000→12000 len=2",
            "[PSH, ACK] seq=1 ack=1 len=5 win=65535 (40000→12000)",
            "[PSH, ACK] seq=1 ack=6 len=5 win=65535 (12000→40000)",
        ]
    );
    assert_eq!(
        lanes(packets),
        [
            ("fd00:2::2", "fd00:2::15"),
            ("fd00:2::15", "fd00:2::2"),
            ("fd00:2::2", "fd00:2::15"),
            ("fd00:2::2", "fd00:2::15"),
            ("10.0.2.2", "10.0.2.15"),
            ("fd00:2::2", "fd00:2::15"),
            ("fd00:2::15", "fd00:2::2"),
        ]
    );
    // The first "hello" was not acknowledged before the copy went: it is the one lost.
    assert_eq!(
        marks(packets),
        [
            None,
            None,
            None,
            Some("lost?"),
            None,
            Some("retransmission"),
            None
        ]
    );
    assert!((packets[6].time - 6.0 * 123e-6).abs() < 1e-9);
}

#[test]
fn ndp_udp_icmpv6_on_ethernet_and_on_link_type_229() {
    let packets = ndp_udp_and_ping();
    let frames: Vec<Vec<u8>> = packets
        .iter()
        .map(|p| {
            let from_client = p[8..24] == CLIENT6.octets();
            on_ethernet(if from_client { CLIENT_MAC } else { SERVER6_MAC }, p)
        })
        .collect();
    let ethernet = read_pcap(&capture(PcapLinkType::Ethernet, &frames)).unwrap();
    let raw = read_pcap(&pcap(229, true, &timed(packets.clone()))).unwrap();
    let tun = read_pcap(&capture(PcapLinkType::Ip, &packets)).unwrap();
    for ladder in [&ethernet, &raw, &tun] {
        assert!(ladder.skipped.is_empty(), "{:?}", ladder.skipped);
        assert_eq!(labels(&ladder.packets), NDP_UDP_AND_PING_LABELS);
        assert_eq!(lanes(&ladder.packets), NDP_UDP_AND_PING_LANES);
        let ports: Vec<Option<(u16, u16)>> = ladder.packets.iter().map(|p| p.ports).collect();
        assert_eq!(
            ports,
            [
                None,
                None,
                Some((40000, 12001)),
                Some((12001, 40000)),
                None,
                None
            ]
        );
        use PacketKind::{AddressResolution, Other, PortUnreachable, Udp};
        assert_eq!(
            kinds(&ladder.packets),
            [
                AddressResolution,
                AddressResolution,
                Udp,
                PortUnreachable,
                Other,
                Other
            ]
        );
        assert!(
            ladder.packets.iter().all(|p| p.mark.is_none()),
            "{:?}",
            marks(&ladder.packets)
        );
    }

    // An IPv6 packet on an IPv4-only link (228) and an IPv4 one on an IPv6-only link (229) are not read as the
    // other family.
    let crossed = read_pcap(&pcap(228, false, &timed(packets[..1].to_vec()))).unwrap();
    assert_eq!(
        crossed.skipped,
        BTreeMap::from([("malformed or truncated IPv4".to_string(), 1)])
    );
    let crossed = read_pcap(&pcap(
        229,
        false,
        &timed(vec![udp(CLIENT, SERVER, 1, 2, b"x")]),
    ))
    .unwrap();
    assert_eq!(
        crossed.skipped,
        BTreeMap::from([("malformed or truncated IPv6".to_string(), 1)])
    );
}

#[test]
fn icmpv6_errors_ndp_and_mld_labels() {
    let tcp = tcp6(
        CLIENT6,
        SERVER6,
        &segment((40000, 12000), TcpControl::Psh, 1, Some(1), &[b'x'; 1400]),
    );
    let udp = udp6(CLIENT6, SERVER6, (40000, 12001), b"hi");
    let ping = echo(CLIENT6, SERVER6, true);
    let unknown_next = ipv6_with(CLIENT6, SERVER6, IpProtocol::Unknown(253), b"12345678");
    let router2 = Ipv6Address::new(0xfe80, 0, 0, 0, 0, 0, 0, 2);
    let mut mld_report_v1 = vec![131, 0, 0, 0, 0, 0, 0, 0];
    mld_report_v1.extend_from_slice(&SERVER6_SOLICITED.octets());
    let mut mld_query = vec![130, 0, 0, 0, 0, 0, 0, 0];
    mld_query.extend_from_slice(&[0; 16]);
    let mut mld_report_v2 = vec![143, 0, 0, 0, 0, 0, 0, 2];
    mld_report_v2.extend_from_slice(&[4, 0, 0, 0]); // change to exclude, no sources: join
    mld_report_v2.extend_from_slice(&SERVER6_SOLICITED.octets());
    mld_report_v2.extend_from_slice(&[3, 0, 0, 0]); // change to include, no sources: leave
    mld_report_v2.extend_from_slice(&Ipv6Address::new(0xff02, 0, 0, 0, 0, 0, 0, 0xfb).octets());
    // A neighbor solicitation whose option claims length 0 (RFC 4861 4.6: invalid).
    let mut bad_option = vec![135, 0, 0, 0, 0, 0, 0, 0];
    bad_option.extend_from_slice(&SERVER6.octets());
    bad_option.extend_from_slice(&[1, 0, 2, 0, 0, 0, 0, 2]);
    let mlds = Ipv6Address::new(0xff02, 0, 0, 0, 0, 0, 0, 0x16);

    let packets = vec![
        icmp6(
            ROUTER6,
            CLIENT6,
            &Icmpv6Repr::PktTooBig {
                mtu: 1280,
                header: header_of(&tcp),
                data: &tcp[40..],
            },
        ),
        icmp6(
            ROUTER6,
            CLIENT6,
            &Icmpv6Repr::TimeExceeded {
                reason: Icmpv6TimeExceeded::HopLimitExceeded,
                header: header_of(&udp),
                data: &udp[40..],
            },
        ),
        icmp6(
            SERVER6,
            CLIENT6,
            &Icmpv6Repr::ParamProblem {
                reason: Icmpv6ParamProblem::UnrecognizedNxtHdr,
                pointer: 6,
                header: header_of(&unknown_next),
                data: &unknown_next[40..],
            },
        ),
        icmp6(
            ROUTER6,
            CLIENT6,
            &Icmpv6Repr::DstUnreachable {
                reason: Icmpv6DstUnreachable::NoRoute,
                header: header_of(&ping),
                data: &ping[40..],
            },
        ),
        ndp(
            router2,
            Ipv6Address::new(0xff02, 0, 0, 0, 0, 0, 0, 2),
            NdiscRepr::RouterSolicit {
                lladdr: Some(EthernetAddress(CLIENT_MAC).into()),
            },
        ),
        ndp(
            ROUTER6,
            ALL_NODES,
            NdiscRepr::RouterAdvert {
                hop_limit: 64,
                flags: NdiscRouterFlags::empty(),
                router_lifetime: Duration::from_secs(1800),
                reachable_time: Duration::from_millis(0),
                retrans_time: Duration::from_millis(0),
                lladdr: Some(EthernetAddress(SERVER_MAC).into()),
                mtu: Some(1500),
                prefix_info: Some(NdiscPrefixInformation {
                    prefix_len: 64,
                    flags: NdiscPrefixInfoFlags::ON_LINK | NdiscPrefixInfoFlags::ADDRCONF,
                    valid_lifetime: Duration::from_secs(86400),
                    preferred_lifetime: Duration::from_secs(14400),
                    prefix: Ipv6Address::new(0xfd00, 2, 0, 0, 0, 0, 0, 0),
                }),
            },
        ),
        ndp(
            ROUTER6,
            CLIENT6,
            NdiscRepr::Redirect {
                target_addr: Ipv6Address::new(0xfe80, 0, 0, 0, 0, 0, 0, 3),
                dest_addr: Ipv6Address::new(0xfd00, 3, 0, 0, 0, 0, 0, 1),
                lladdr: None,
                redirected_hdr: None,
            },
        ),
        ndp(
            SERVER6,
            ALL_NODES,
            NdiscRepr::NeighborAdvert {
                flags: NdiscNeighborFlags::ROUTER,
                target_addr: SERVER6,
                lladdr: None,
            },
        ),
        // Duplicate address detection: from the unspecified address.
        ndp(
            Ipv6Address::UNSPECIFIED,
            SERVER6_SOLICITED,
            NdiscRepr::NeighborSolicit {
                target_addr: SERVER6,
                lladdr: None,
            },
        ),
        icmp6_raw(CLIENT6, SERVER6_SOLICITED, bad_option),
        icmp6_raw(SERVER6, SERVER6_SOLICITED, mld_report_v1),
        icmp6_raw(ROUTER6, ALL_NODES, mld_query),
        icmp6_raw(SERVER6, mlds, mld_report_v2),
        icmp6_raw(CLIENT6, SERVER6, vec![200, 0, 0, 0, 1, 2, 3, 4]),
        // Cut short: no checksum can hold over two bytes here.
        ipv6_with(CLIENT6, SERVER6, IpProtocol::Icmpv6, &[128, 0]),
    ];
    let ladder = read_pcap(&pcap(229, false, &timed(packets))).unwrap();
    assert!(ladder.skipped.is_empty(), "{:?}", ladder.skipped);
    let packets = &ladder.packets;
    assert_eq!(
        labels(packets),
        [
            "ICMPv6 packet too big mtu=1280 (TCP 40000→12000)",
            "ICMPv6 hop limit exceeded (UDP 40000→12001)",
            "ICMPv6 parameter problem (unrecognized next header) pointer=6 (IPv6 next header 253)",
            "ICMPv6 no route to destination (ICMPv6)",
            "NDP router solicitation",
            "NDP router advertisement lifetime=1800s prefix=fd00:2::/64 mtu=1500",
            "NDP redirect fd00:3::1 via fe80::3",
            "NDP fd00:2::15 advertised (router)",
            "NDP who-has fd00:2::15 (duplicate address detection)",
            "NDP who-has fd00:2::15 (malformed options)",
            "MLD report ff02::1:ff00:15",
            "MLD general query",
            "MLDv2 report join ff02::1:ff00:15, leave ff02::fb",
            "ICMPv6 type 200 code 0",
            "ICMPv6 malformed header (2 bytes)",
        ]
    );
    assert_eq!(
        lanes(packets)[4..10],
        [
            ("fe80::2", "ff02::2"),
            ("fe80::1", "ff02::1"),
            ("fe80::1", "fd00:2::2"),
            ("fd00:2::15", "ff02::1"),
            ("::", "fd00:2::15"),
            ("fd00:2::2", "fd00:2::15"),
        ]
    );
    let mut expected = vec![None; 14];
    expected.push(Some("corrupted"));
    assert_eq!(marks(packets), expected);
    // Neighbor solicitations and advertisements are address resolution, duplicate address detection's and one
    // with malformed options among them; router messages, redirects and MLD are not.
    let mut expected = vec![PacketKind::Other; 15];
    expected[7..10].fill(PacketKind::AddressResolution);
    assert_eq!(kinds(packets), expected);
}

#[test]
fn ipv6_checksums_corrupted_and_offloaded() {
    let at = |seq: u32| {
        tcp6(
            CLIENT6,
            SERVER6,
            &segment((40000, 12000), TcpControl::Psh, seq, Some(1), b"hello"),
        )
    };
    let good = at(1);
    let mut payload_flipped = at(101);
    *payload_flipped.last_mut().unwrap() ^= 0x20;
    // An address changed after the checksum was computed: the IPv6 pseudo-header takes part.
    let mut address_changed = at(201);
    address_changed[39] ^= 1;
    // What a kernel with checksum offload hands a TUN device: only the pseudo-header sum.
    let mut partial = at(301);
    let pseudo_sum = checksum::pseudo_header_v6(&CLIENT6, &SERVER6, IpProtocol::Tcp, 25);
    partial[56..58].copy_from_slice(&pseudo_sum.to_be_bytes());
    // What smoltcp sends when the device offloads the TCP checksum: zero.
    let mut zero = at(401);
    zero[56..58].copy_from_slice(&[0, 0]);
    let mut udp_flipped = udp6(CLIENT6, SERVER6, (40000, 12000), b"hello");
    *udp_flipped.last_mut().unwrap() ^= 1;
    // Zero is "no checksum" over IPv4 but not allowed over IPv6 (RFC 8200 8.1).
    let mut udp_zero = udp6(CLIENT6, SERVER6, (40000, 12000), b"hello");
    udp_zero[46..48].copy_from_slice(&[0, 0]);
    let mut icmp_flipped = echo(CLIENT6, SERVER6, true);
    *icmp_flipped.last_mut().unwrap() ^= 1;
    let short_tcp = ipv6_with(
        CLIENT6,
        SERVER6,
        IpProtocol::Tcp,
        &tcp6_segment(
            CLIENT6,
            SERVER6,
            &segment((40000, 12000), TcpControl::Psh, 501, Some(1), b"hello"),
        )[..10],
    );

    let file = capture(
        PcapLinkType::Ip,
        &[
            good,
            payload_flipped,
            address_changed,
            partial,
            zero,
            udp_flipped,
            udp_zero,
            icmp_flipped,
            short_tcp,
        ],
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
            Some("corrupted"),
            Some("corrupted"),
            Some("corrupted"),
        ]
    );
    assert_eq!(packets[2].dst, "fd00:2::14");
    assert_eq!(packets[8].label, "TCP malformed header (10 bytes)");
    let svg = ladder_svg("corrupted IPv6", &packets);
    let lines = packet_lines(&svg);
    assert!(lines[1].3.contains(COLOR_BAD) && lines[1].3.contains("stroke-dasharray"));
    assert!(!lines[0].3.contains(COLOR_BAD));
}

#[test]
fn ipv6_extension_headers_and_fragments() {
    let datagram = udp6_datagram(CLIENT6, SERVER6, (40000, 12000), b"hello");
    // Hop-by-Hop, then Routing, then Destination options, then UDP.
    let chained = [
        extension(IpProtocol::Ipv6Route, 0),
        extension(IpProtocol::Ipv6Opts, 1),
        extension(IpProtocol::Udp, 0),
        datagram.clone(),
    ]
    .concat();
    let big = udp6_datagram(CLIENT6, SERVER6, (40000, 12000), &[b'x'; 2000]);
    let first = [
        fragment_header(IpProtocol::Udp, 0, true, 0xbeef),
        big[..1232].to_vec(),
    ]
    .concat();
    let second = [
        fragment_header(IpProtocol::Udp, 1232, false, 0xbeef),
        big[1232..].to_vec(),
    ]
    .concat();
    // The first fragment with Destination options after the Fragment header: the ports are still found.
    let first_with_options = [
        fragment_header(IpProtocol::Ipv6Opts, 0, true, 0xcafe),
        extension(IpProtocol::Udp, 0),
        big[..1224].to_vec(),
    ]
    .concat();
    // Offset 0 and no more fragments: a whole packet (RFC 8200 4.5).
    let atomic = [
        fragment_header(IpProtocol::Udp, 0, false, 7),
        datagram.clone(),
    ]
    .concat();
    // Hop-by-Hop claiming 16 bytes with 8 there.
    let cut = [17, 1, 0, 0, 0, 0, 0, 0];
    let packets = vec![
        ipv6_with(CLIENT6, SERVER6, IpProtocol::HopByHop, &chained),
        ipv6_with(CLIENT6, SERVER6, IpProtocol::Ipv6Frag, &first),
        ipv6_with(CLIENT6, SERVER6, IpProtocol::Ipv6Frag, &second),
        ipv6_with(CLIENT6, SERVER6, IpProtocol::Ipv6Frag, &first_with_options),
        ipv6_with(CLIENT6, SERVER6, IpProtocol::Ipv6Frag, &atomic),
        ipv6_with(CLIENT6, SERVER6, IpProtocol::HopByHop, &cut),
        ipv6_with(CLIENT6, SERVER6, IpProtocol::IpSecEsp, b"12345678"),
    ];
    let ladder = read_pcap(&pcap(229, false, &timed(packets))).unwrap();
    assert_eq!(
        labels(&ladder.packets),
        [
            "UDP 40000→12000 len=5",
            "UDP 40000→12000 fragment id=0x0000beef off=0 len=1232 MF",
            "UDP fragment id=0x0000beef off=1232 len=776",
            "UDP 40000→12000 fragment id=0x0000cafe off=0 len=1232 MF",
            "UDP 40000→12000 len=5",
        ]
    );
    // Behind extension headers and in every fragment, a UDP datagram is UDP.
    assert_eq!(kinds(&ladder.packets), [PacketKind::Udp; 5]);
    assert!(
        ladder.packets.iter().all(|p| p.mark.is_none()),
        "{:?}",
        marks(&ladder.packets)
    );
    assert_eq!(
        ladder.skipped,
        BTreeMap::from([
            ("malformed IPv6 extension header".to_string(), 1),
            ("other IPv6 protocol".to_string(), 1),
        ])
    );
}

#[test]
fn damaged_ipv6_captures_never_panic() {
    let raw: Vec<Vec<u8>> = ndp_udp_and_ping()
        .into_iter()
        .chain(tcp_over_ipv6_with_ipv4())
        .collect();
    let frames: Vec<Vec<u8>> = raw
        .iter()
        .filter(|packet| packet[0] >> 4 == 6)
        .map(|packet| {
            let from_client = packet[8..24] == CLIENT6.octets();
            on_ethernet(if from_client { CLIENT_MAC } else { SERVER6_MAC }, packet)
        })
        .collect();
    let mut state = 0x9e37_79b9;
    for file in [
        capture(PcapLinkType::Ethernet, &frames),
        capture(PcapLinkType::Ip, &raw),
        pcap(229, false, &timed(ndp_udp_and_ping())),
    ] {
        assert!(read_pcap(&file).unwrap().skipped.is_empty());
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
    // Every cut of every packet, on each raw link.
    for packet in ndp_udp_and_ping() {
        for cut in 0..packet.len() {
            let mut short = packet[..cut].to_vec();
            if cut >= 6 {
                // The length field agrees, so the cut reaches the upper layers.
                let payload_len = cut.saturating_sub(40) as u16;
                short[4..6].copy_from_slice(&payload_len.to_be_bytes());
            }
            let _ = read_pcap(&pcap(229, false, &[(0, 0, short.clone())])).unwrap();
            let _ = read_pcap(&pcap(101, false, &[(0, 0, short)])).unwrap();
        }
    }
}
