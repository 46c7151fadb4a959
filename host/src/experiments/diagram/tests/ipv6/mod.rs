//! The IPv6 tests of the ladder diagrams: packets built with smoltcp's emitters (`Ipv6Repr`, `TcpRepr`,
//! `UdpRepr`, `Icmpv6Repr`, `NdiscRepr`; extension headers and MLD byte by byte), written as the project's
//! captures are (`MemoryCapture`, smoltcp's `PcapSink`) on Ethernet and raw-IP links; their labels, lanes and
//! marks; damaged captures; and the same captures read by tshark, which must agree. The builders and the
//! captures are here; [`decode`] holds the decoding tests, [`svg`] the lanes of long addresses, [`tshark`] the
//! comparison with tshark.

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

mod decode;
mod svg;
mod tshark;

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
