//! The IPv6 tests of the ladder diagrams: packets built with smoltcp's emitters (`Ipv6Repr`, `TcpRepr`,
//! `UdpRepr`, `Icmpv6Repr`, `NdiscRepr`; extension headers and MLD byte by byte), written as the project's
//! captures are (`MemoryCapture`, smoltcp's `PcapSink`) on Ethernet and raw-IP links; their labels, lanes and
//! marks; damaged captures; and the same captures read by tshark, which must agree.

use std::collections::BTreeMap;

use smoltcp::phy::{ChecksumCapabilities, PcapLinkType, PcapSink};
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{
    checksum, EthernetAddress, Icmpv6DstUnreachable, Icmpv6Packet, Icmpv6ParamProblem, Icmpv6Repr,
    Icmpv6TimeExceeded, IpAddress, IpProtocol, Ipv6Address, Ipv6Packet, Ipv6Repr,
    NdiscNeighborFlags, NdiscPrefixInfoFlags, NdiscPrefixInformation, NdiscRepr, NdiscRouterFlags,
    TcpControl, TcpPacket, TcpRepr, TcpSeqNumber, UdpPacket, UdpRepr,
};

use super::super::style::{COLOR_ARP, COLOR_BAD, COLOR_ICMP};
use super::*;
use crate::stack::instruments::MemoryCapture;

const CLIENT6: Ipv6Address = Ipv6Address::new(0xfd00, 2, 0, 0, 0, 0, 0, 2);
const SERVER6: Ipv6Address = Ipv6Address::new(0xfd00, 2, 0, 0, 0, 0, 0, 0x15);
/// The solicited-node multicast group of SERVER6 (RFC 4291 2.7.1).
const SERVER6_SOLICITED: Ipv6Address = Ipv6Address::new(0xff02, 0, 0, 0, 0, 1, 0xff00, 0x15);
const ROUTER6: Ipv6Address = Ipv6Address::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
const ALL_NODES: Ipv6Address = Ipv6Address::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
const SERVER6_MAC: [u8; 6] = [0x02, 0x53, 0, 0, 0, 0x15];
const ETHERTYPE_IPV6: u16 = 0x86dd;

// ---- Packets, built with smoltcp's emitters ----

/// An IPv6 packet (hop limit 64) whose payload (extension headers included) is `payload`.
fn ipv6_with(src: Ipv6Address, dst: Ipv6Address, next: IpProtocol, payload: &[u8]) -> Vec<u8> {
    let repr = Ipv6Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: next,
        payload_len: payload.len(),
        hop_limit: 64,
    };
    let mut packet = vec![0; repr.buffer_len() + payload.len()];
    repr.emit(&mut Ipv6Packet::new_unchecked(&mut packet));
    packet[repr.buffer_len()..].copy_from_slice(payload);
    packet
}

/// A TCP segment from `src` to `dst`, checksum filled in.
fn tcp6_segment(src: Ipv6Address, dst: Ipv6Address, repr: &TcpRepr) -> Vec<u8> {
    let mut segment = vec![0; repr.buffer_len()];
    repr.emit(
        &mut TcpPacket::new_unchecked(&mut segment),
        &IpAddress::Ipv6(src),
        &IpAddress::Ipv6(dst),
        &ChecksumCapabilities::default(),
    );
    segment
}

fn tcp6(src: Ipv6Address, dst: Ipv6Address, repr: &TcpRepr) -> Vec<u8> {
    ipv6_with(src, dst, IpProtocol::Tcp, &tcp6_segment(src, dst, repr))
}

/// A TCP segment's header fields, the rest as smoltcp's defaults (no options, window 65535).
fn segment<'a>(
    ports: (u16, u16),
    control: TcpControl,
    seq: u32,
    ack: Option<u32>,
    payload: &'a [u8],
) -> TcpRepr<'a> {
    TcpRepr {
        src_port: ports.0,
        dst_port: ports.1,
        control,
        seq_number: TcpSeqNumber(seq as i32),
        ack_number: ack.map(|a| TcpSeqNumber(a as i32)),
        window_len: 65535,
        window_scale: None,
        max_seg_size: None,
        sack_permitted: false,
        sack_ranges: [None; 3],
        timestamp: None,
        payload,
    }
}

fn udp6_datagram(src: Ipv6Address, dst: Ipv6Address, ports: (u16, u16), payload: &[u8]) -> Vec<u8> {
    let repr = UdpRepr {
        src_port: ports.0,
        dst_port: ports.1,
    };
    let mut datagram = vec![0; repr.header_len() + payload.len()];
    repr.emit(
        &mut UdpPacket::new_unchecked(&mut datagram),
        &IpAddress::Ipv6(src),
        &IpAddress::Ipv6(dst),
        payload.len(),
        |buffer| buffer.copy_from_slice(payload),
        &ChecksumCapabilities::default(),
    );
    datagram
}

fn udp6(src: Ipv6Address, dst: Ipv6Address, ports: (u16, u16), payload: &[u8]) -> Vec<u8> {
    ipv6_with(
        src,
        dst,
        IpProtocol::Udp,
        &udp6_datagram(src, dst, ports, payload),
    )
}

fn icmp6(src: Ipv6Address, dst: Ipv6Address, repr: &Icmpv6Repr) -> Vec<u8> {
    let mut message = vec![0; repr.buffer_len()];
    repr.emit(
        &src,
        &dst,
        &mut Icmpv6Packet::new_unchecked(&mut message),
        &ChecksumCapabilities::default(),
    );
    ipv6_with(src, dst, IpProtocol::Icmpv6, &message)
}

fn ndp(src: Ipv6Address, dst: Ipv6Address, repr: NdiscRepr) -> Vec<u8> {
    icmp6(src, dst, &Icmpv6Repr::Ndisc(repr))
}

/// An ICMPv6 message written byte by byte (types smoltcp has no emitter for), checksum filled in.
fn icmp6_raw(src: Ipv6Address, dst: Ipv6Address, mut message: Vec<u8>) -> Vec<u8> {
    Icmpv6Packet::new_unchecked(&mut message).fill_checksum(&src, &dst);
    ipv6_with(src, dst, IpProtocol::Icmpv6, &message)
}

/// The IPv6 header smoltcp would write for `packet` (an IPv6 packet from these helpers), for ICMPv6 errors.
fn header_of(packet: &[u8]) -> Ipv6Repr {
    Ipv6Repr::parse(&Ipv6Packet::new_checked(packet).unwrap()).unwrap()
}

fn echo(src: Ipv6Address, dst: Ipv6Address, request: bool) -> Vec<u8> {
    let repr = if request {
        Icmpv6Repr::EchoRequest {
            ident: 1,
            seq_no: 7,
            data: b"ping",
        }
    } else {
        Icmpv6Repr::EchoReply {
            ident: 1,
            seq_no: 7,
            data: b"ping",
        }
    };
    icmp6(src, dst, &repr)
}

/// An extension header: `next`, the length field, and `8 * (len + 1) - 2` bytes of content (zero: for
/// Hop-by-Hop and Destination options that is Pad1 options; for Routing, type 0 with no segments left).
fn extension(next: IpProtocol, len: u8) -> Vec<u8> {
    let mut header = vec![0; 8 * (usize::from(len) + 1)];
    header[0] = next.into();
    header[1] = len;
    header
}

/// A Fragment header: offset in bytes (a multiple of 8).
fn fragment_header(next: IpProtocol, offset: u16, more: bool, ident: u32) -> Vec<u8> {
    let mut header = vec![u8::from(next), 0];
    header.extend_from_slice(&(offset | u16::from(more)).to_be_bytes());
    header.extend_from_slice(&ident.to_be_bytes());
    header
}

/// A capture as the project writes one (smoltcp's `PcapSink` into a `MemoryCapture`), 123 µs apart.
fn capture(link_type: PcapLinkType, packets: &[Vec<u8>]) -> Vec<u8> {
    let mut sink = MemoryCapture::default();
    sink.global_header(link_type);
    for (i, packet) in packets.iter().enumerate() {
        sink.packet(
            Instant::from_micros(1_700_000_000_500_000 + 123 * i as i64),
            packet,
        );
    }
    sink.bytes()
}

/// `packet` in an Ethernet frame, from `src` to `dst` (multicast IPv6 to its 33:33 MAC address).
fn on_ethernet(src: [u8; 6], packet: &[u8]) -> Vec<u8> {
    let dst_ip = &packet[24..40];
    let dst = if dst_ip[0] == 0xff {
        [0x33, 0x33, dst_ip[12], dst_ip[13], dst_ip[14], dst_ip[15]]
    } else if src == CLIENT_MAC {
        SERVER6_MAC
    } else {
        CLIENT_MAC
    };
    ethernet(dst, src, ETHERTYPE_IPV6, packet)
}

fn lanes(packets: &[LadderPacket]) -> Vec<(&str, &str)> {
    packets
        .iter()
        .map(|p| (p.src.as_str(), p.dst.as_str()))
        .collect()
}

// ---- The captures ----

/// A TCP connection over IPv6 whose "hello" is sent twice, and an IPv4 datagram in the middle: what a TUN
/// capture (link type 101) of both families holds.
fn tcp_over_ipv6_with_ipv4() -> Vec<Vec<u8>> {
    let (c, s) = (0xffff_fffe_u32, 5000_u32); // the client's sequence numbers wrap
    let up = (40000, 12000);
    let down = (12000, 40000);
    let hello = tcp6(
        CLIENT6,
        SERVER6,
        &segment(
            up,
            TcpControl::Psh,
            c.wrapping_add(1),
            Some(s + 1),
            b"hello",
        ),
    );
    vec![
        tcp6(
            CLIENT6,
            SERVER6,
            &segment(up, TcpControl::Syn, c, None, b""),
        ),
        tcp6(
            SERVER6,
            CLIENT6,
            &segment(down, TcpControl::Syn, s, Some(c.wrapping_add(1)), b""),
        ),
        tcp6(
            CLIENT6,
            SERVER6,
            &segment(up, TcpControl::None, c.wrapping_add(1), Some(s + 1), b""),
        ),
        hello.clone(),
        udp(CLIENT, SERVER, 40000, 12000, b"v4"),
        hello,
        tcp6(
            SERVER6,
            CLIENT6,
            &segment(
                down,
                TcpControl::Psh,
                s + 1,
                Some(c.wrapping_add(6)),
                b"HELLO",
            ),
        ),
    ]
}

/// Neighbor discovery, then UDP refused with an ICMPv6 port unreachable, then a ping: IPv6 packets (without
/// a link layer).
fn ndp_udp_and_ping() -> Vec<Vec<u8>> {
    let refused = udp6(CLIENT6, SERVER6, (40000, 12001), b"hi");
    vec![
        ndp(
            CLIENT6,
            SERVER6_SOLICITED,
            NdiscRepr::NeighborSolicit {
                target_addr: SERVER6,
                lladdr: Some(EthernetAddress(CLIENT_MAC).into()),
            },
        ),
        ndp(
            SERVER6,
            CLIENT6,
            NdiscRepr::NeighborAdvert {
                flags: NdiscNeighborFlags::SOLICITED | NdiscNeighborFlags::OVERRIDE,
                target_addr: SERVER6,
                lladdr: Some(EthernetAddress(SERVER6_MAC).into()),
            },
        ),
        refused.clone(),
        icmp6(
            SERVER6,
            CLIENT6,
            &Icmpv6Repr::DstUnreachable {
                reason: Icmpv6DstUnreachable::PortUnreachable,
                header: header_of(&refused),
                data: &refused[40..],
            },
        ),
        echo(CLIENT6, SERVER6, true),
        echo(SERVER6, CLIENT6, false),
    ]
}

const NDP_UDP_AND_PING_LABELS: [&str; 6] = [
    "NDP who-has fd00:2::15",
    "NDP fd00:2::15 is-at 02:53:00:00:00:15 (solicited, override)",
    "UDP 40000→12001 len=2",
    "ICMPv6 port unreachable (UDP 40000→12001)",
    "ICMPv6 echo request id=1 seq=7",
    "ICMPv6 echo reply id=1 seq=7",
];

/// The lanes of [`ndp_udp_and_ping`]: the solicitation is drawn to the address it asks about, not to the
/// solicited-node group it was sent to.
const NDP_UDP_AND_PING_LANES: [(&str, &str); 6] = [
    ("fd00:2::2", "fd00:2::15"),
    ("fd00:2::15", "fd00:2::2"),
    ("fd00:2::2", "fd00:2::15"),
    ("fd00:2::15", "fd00:2::2"),
    ("fd00:2::2", "fd00:2::15"),
    ("fd00:2::15", "fd00:2::2"),
];

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

// ---- The SVG ----

/// The host boxes of an SVG (the only `rect`s with rounded corners), as (x, width, height).
fn host_boxes(svg: &str) -> Vec<(f64, f64, f64)> {
    let attr = |element: &str, name: &str| -> f64 {
        let start = element.find(&format!(" {name}=\"")).unwrap() + name.len() + 3;
        element[start..].split('"').next().unwrap().parse().unwrap()
    };
    svg.lines()
        .filter(|line| line.starts_with("<rect ") && line.contains(r#" rx="4""#))
        .map(|line| (attr(line, "x"), attr(line, "width"), attr(line, "height")))
        .collect()
}

#[test]
fn svg_lanes_of_long_ipv6_addresses() {
    let global = Ipv6Address::new(
        0x2001, 0xdb8, 0x1234, 0x5678, 0xa8bb, 0xccff, 0xfedd, 0xeeff,
    );
    let longest = Ipv6Address::new(
        0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xfffe,
    );
    let mut packets = ndp_udp_and_ping();
    packets.push(udp6(global, SERVER6, (40000, 12000), b"hello"));
    packets.push(udp6(SERVER6, longest, (12000, 40000), b"HELLO"));
    let file = capture(PcapLinkType::Ip, &packets);
    let packets = packets_from_pcap(&file).unwrap();
    assert_eq!(packets[6].src, "2001:db8:1234:5678:a8bb:ccff:fedd:eeff");
    assert_eq!(packets[7].dst, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe");
    let svg = ladder_svg("IPv6", &packets);
    check_well_formed(&svg).unwrap();
    python_parses(&svg, "ipv6");

    // Short addresses on one line, long ones on two, broken after the colon nearest the middle.
    assert!(svg.contains(">fd00:2::2</text>") && svg.contains(">fd00:2::15</text>"));
    assert!(svg.contains(r#"dy="0">2001:db8:1234:5678:</tspan><tspan x="#));
    assert!(svg.contains(r#"dy="14">a8bb:ccff:fedd:eeff</tspan></text>"#));
    assert!(svg.contains(r#"dy="0">ffff:ffff:ffff:ffff:</tspan>"#));
    assert!(svg.contains(r#"dy="14">ffff:ffff:ffff:fffe</tspan></text>"#));

    // Four lanes whose boxes hold their longest line and do not touch; the lifelines start below them.
    let boxes = host_boxes(&svg);
    assert_eq!(boxes.len(), 4);
    for pair in boxes.windows(2) {
        let ((x0, w0, _), (x1, _, _)) = (pair[0], pair[1]);
        assert!(x0 + w0 < x1, "host boxes overlap: {boxes:?}");
    }
    for (_, width, height) in &boxes {
        assert!(*width >= 20.0 * 7.3, "{width}");
        assert_eq!(*height, 38.0);
    }
    assert!(svg.contains(r#"<line class="lifeline" x1=""#));
    assert!(svg
        .lines()
        .filter(|line| line.starts_with(r#"<line class="lifeline""#))
        .all(|line| line.contains(r#" y1="78""#)));

    // NDP grey like ARP, ICMPv6 purple like ICMP.
    let lines = packet_lines(&svg);
    assert!(lines[0].3.contains(COLOR_ARP) && lines[1].3.contains(COLOR_ARP));
    assert!(lines[3].3.contains(COLOR_ICMP) && lines[4].3.contains(COLOR_ICMP));
    assert!(svg.contains(">ICMP / ICMPv6</text>") && svg.contains(">ARP / NDP / MLD</text>"));
}

// ---- tshark reads the same captures ----

/// Why tshark cannot be run here, if it cannot. Not `tshark -V`, which would start a live capture.
fn tshark_missing() -> Option<String> {
    match std::process::Command::new("tshark")
        .arg("--version")
        .output()
    {
        Ok(out) if out.status.success() => None,
        Ok(out) => Some(format!("`tshark --version` failed: {}", out.status)),
        Err(e) => Some(format!("tshark is not installed ({e})")),
    }
}

/// tshark's fields for each packet of `file` (checksums verified), one `Vec` per packet.
fn tshark_fields(file: &[u8], name: &str, fields: &[&str]) -> Vec<Vec<String>> {
    let path = std::env::temp_dir().join(format!(
        "smoltalk-diagram-{}-{name}.pcap",
        std::process::id()
    ));
    std::fs::write(&path, file).unwrap();
    let mut command = std::process::Command::new("tshark");
    command.args([
        "-n",
        "-o",
        "tcp.check_checksum:TRUE",
        "-o",
        "udp.check_checksum:TRUE",
        "-r",
    ]);
    command.arg(&path).args(["-T", "fields"]);
    for field in fields {
        command.args(["-e", field]);
    }
    let out = command.output();
    let _ = std::fs::remove_file(&path);
    let out = out.unwrap();
    assert!(
        out.status.success(),
        "tshark: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| line.split('\t').map(str::to_string).collect())
        .collect()
}

#[test]
fn tshark_agrees_on_ipv6_captures() {
    if let Some(reason) = tshark_missing() {
        let in_ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
        assert!(
            !in_ci,
            "tshark_agrees_on_ipv6_captures cannot run under CI=true: {reason}"
        );
        // Straight to the descriptor: libtest captures the output of passing tests, and a skip must be seen.
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED tshark_agrees_on_ipv6_captures: {reason}"
        );
        return;
    }
    let mut bad_echo = echo(CLIENT6, SERVER6, true);
    *bad_echo.last_mut().unwrap() ^= 1;
    let mut bad_tcp = tcp6(
        CLIENT6,
        SERVER6,
        &segment((40001, 12000), TcpControl::Psh, 9, Some(1), b"data"),
    );
    *bad_tcp.last_mut().unwrap() ^= 1;
    let mut bad_udp = udp6(SERVER6, CLIENT6, (12001, 40001), b"data");
    *bad_udp.last_mut().unwrap() ^= 1;
    let on_ethernet_both_ways = |packets: Vec<Vec<u8>>| -> Vec<Vec<u8>> {
        packets
            .iter()
            .map(|packet| {
                let from_client = packet[8..24] == CLIENT6.octets();
                on_ethernet(if from_client { CLIENT_MAC } else { SERVER6_MAC }, packet)
            })
            .collect()
    };
    let mut ethernet_packets = ndp_udp_and_ping();
    ethernet_packets.extend([bad_echo, bad_tcp]);
    let mut tun_packets = tcp_over_ipv6_with_ipv4();
    tun_packets.extend(ndp_udp_and_ping());
    tun_packets.push(bad_udp);
    let fields = [
        "ipv6.src",
        "ipv6.dst",
        "ip.src",
        "ip.dst",
        "icmpv6.type",
        "icmpv6.nd.ns.target_address",
        "tcp.seq",
        "tcp.ack",
        "tcp.analysis.retransmission",
        "tcp.checksum.status",
        "udp.checksum.status",
        "icmpv6.checksum.status",
    ];
    for (name, file) in [
        (
            "ethernet",
            capture(
                PcapLinkType::Ethernet,
                &on_ethernet_both_ways(ethernet_packets),
            ),
        ),
        ("tun", capture(PcapLinkType::Ip, &tun_packets)),
    ] {
        let ladder = read_pcap(&file).unwrap();
        let rows = tshark_fields(&file, name, &fields);
        assert_eq!(rows.len(), ladder.records, "{name}: packets tshark reads");
        assert_eq!(
            ladder.packets.len(),
            ladder.records,
            "{name}: {:?}",
            ladder.skipped
        );
        let mut bad = 0;
        for (i, (row, packet)) in rows.iter().zip(&ladder.packets).enumerate() {
            // The first value of each field: an ICMPv6 error repeats the fields of the packet it quotes.
            let field = |name: &str| -> &str {
                let at = fields.iter().position(|f| *f == name).unwrap();
                row.get(at).and_then(|v| v.split(',').next()).unwrap_or("")
            };
            let src = [field("ipv6.src"), field("ip.src")].concat();
            let dst = [field("ipv6.dst"), field("ip.dst")].concat();
            let target = field("icmpv6.nd.ns.target_address");
            let drawn_to = if !target.is_empty() && dst.starts_with("ff") {
                target.to_string()
            } else {
                dst
            };
            let what = format!("{name} packet {i}: {} ({row:?})", packet.label);
            assert_eq!(
                (packet.src.as_str(), packet.dst.as_str()),
                (src.as_str(), drawn_to.as_str()),
                "{what}"
            );
            if !field("tcp.seq").is_empty() && field("icmpv6.type").is_empty() {
                let seq_ack = format!("seq={} ack={} ", field("tcp.seq"), field("tcp.ack"));
                assert!(packet.label.contains(&seq_ack), "{what}: {seq_ack}");
            }
            let marks = packet.mark.as_deref().unwrap_or("");
            let tshark_bad = [
                "tcp.checksum.status",
                "udp.checksum.status",
                "icmpv6.checksum.status",
            ]
            .iter()
            .any(|status| field(status) == "0");
            assert_eq!(marks.contains("corrupted"), tshark_bad, "{what}");
            bad += usize::from(tshark_bad);
            assert_eq!(
                marks.split(", ").any(|m| m == "retransmission"),
                field("tcp.analysis.retransmission") == "1",
                "{what}"
            );
        }
        assert!(bad > 0, "{name}: the corrupted packets are seen as such");
    }
}
