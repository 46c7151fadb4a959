//! Tests of the virtio-net header offload over IPv6: frames built with smoltcp's emitters, the partial checksums
//! the kernel leaves made with smoltcp's own pseudo-header sum, and the results read back byte by byte.

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    checksum, IpProtocol, Ipv6Address, Ipv6Packet, Ipv6Repr, TcpPacket, UdpPacket, UdpRepr,
};

use super::tests::{tcp_packet, tcp_repr};
use super::*;

const SRC: Ipv6Address = Ipv6Address::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);
const DST: Ipv6Address = Ipv6Address::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x15);

/// An IPv6 header for `payload_len` bytes of `next_header`, then room for them.
fn ipv6(next_header: IpProtocol, payload_len: usize) -> Vec<u8> {
    let ip = Ipv6Repr {
        src_addr: SRC,
        dst_addr: DST,
        next_header,
        payload_len,
        hop_limit: 64,
    };
    let mut buf = vec![0u8; ip.buffer_len() + payload_len];
    ip.emit(&mut Ipv6Packet::new_unchecked(&mut buf));
    buf
}

/// A TCP/IPv6 packet with a correct checksum.
fn tcp6_packet(payload: &[u8]) -> Vec<u8> {
    let tcp = tcp_repr(payload);
    let mut buf = ipv6(IpProtocol::Tcp, tcp.buffer_len());
    tcp.emit(
        &mut TcpPacket::new_unchecked(&mut buf[40..]),
        &SRC.into(),
        &DST.into(),
        &ChecksumCapabilities::default(),
    );
    buf
}

/// A UDP/IPv6 packet (from port 5353 to 12000) with a correct checksum; with `hop_by_hop`, an 8-byte Hop-by-Hop
/// header (one PadN option) before the UDP header.
fn udp6_packet(payload: &[u8], hop_by_hop: bool) -> Vec<u8> {
    let udp = UdpRepr {
        src_port: 5353,
        dst_port: 12000,
    };
    let udp_len = udp.header_len() + payload.len();
    let mut buf = if hop_by_hop {
        let mut buf = ipv6(IpProtocol::HopByHop, 8 + udp_len);
        buf[40..48].copy_from_slice(&[17, 0, 1, 4, 0, 0, 0, 0]);
        buf
    } else {
        ipv6(IpProtocol::Udp, udp_len)
    };
    let l4 = buf.len() - udp_len;
    udp.emit(
        &mut UdpPacket::new_unchecked(&mut buf[l4..]),
        &SRC.into(),
        &DST.into(),
        payload.len(),
        |out| out.copy_from_slice(payload),
        &ChecksumCapabilities::default(),
    );
    buf
}

/// `ip` behind a link header of `l3` bytes: none (TUN) or Ethernet (TAP) with `ethertype`.
fn on_link(l3: usize, ethertype: [u8; 2], ip: &[u8]) -> Vec<u8> {
    let mut frame = vec![0u8; l3];
    if let Some(field) = frame.get_mut(12..14) {
        field.copy_from_slice(&ethertype);
    }
    frame.extend_from_slice(ip);
    frame
}

const IPV6: [u8; 2] = [0x86, 0xdd];

/// What the kernel leaves in the checksum field of a transport segment of `len` bytes it has not checksummed:
/// the pseudo-header sum (smoltcp's, folded, not complemented).
fn kernel_partial(protocol: IpProtocol, len: usize) -> [u8; 2] {
    checksum::pseudo_header_v6(&SRC, &DST, protocol, len as u32).to_be_bytes()
}

fn needs_csum(csum_start: usize, csum_offset: u16) -> VnetHeader {
    VnetHeader {
        flags: NEEDS_CSUM,
        csum_start: csum_start as u16,
        csum_offset,
        ..VnetHeader::default()
    }
}

#[test]
fn partial_udp_checksums_over_ipv6_are_completed_on_tun_and_tap() {
    for l3 in [0, 14] {
        for hop_by_hop in [false, true] {
            let good = on_link(l3, IPV6, &udp6_packet(b"hello, offload v6", hop_by_hop));
            let l4 = l3 + 40 + if hop_by_hop { 8 } else { 0 };
            let mut frame = good.clone();
            let udp_len = frame.len() - l4;
            frame[l4 + 6..l4 + 8].copy_from_slice(&kernel_partial(IpProtocol::Udp, udp_len));
            assert_ne!(frame, good);
            assert_eq!(
                receive(needs_csum(l4, 6), &mut frame, l3, false),
                Verdict::Accept
            );
            assert_eq!(frame, good, "l3 {l3}, hop-by-hop {hop_by_hop}");
            // Offsets into the IP headers, or past the datagram, are refused, the frame left as it was.
            for header in [needs_csum(l4 - 2, 8), needs_csum(l4, 60000)] {
                let mut bad = good.clone();
                assert_eq!(
                    receive(header, &mut bad, l3, false),
                    Verdict::Drop("checksum offsets outside the UDP datagram")
                );
                assert_eq!(bad, good);
            }
        }
    }
}

#[test]
fn tcp_over_ipv6_is_verified_only_when_nobody_vouched() {
    for l3 in [0, 14] {
        let good = on_link(l3, IPV6, &tcp6_packet(b"check me, v6"));
        let mut frame = good.clone();
        assert_eq!(
            receive(VnetHeader::default(), &mut frame, l3, false),
            Verdict::Accept
        );
        assert_eq!(frame, good);
        // A payload byte, then the last byte of the destination address (in the pseudo-header only).
        for at in [frame.len() - 1, l3 + 39] {
            let mut bad = good.clone();
            bad[at] ^= 0x01;
            assert_eq!(
                receive(VnetHeader::default(), &mut bad, l3, false),
                Verdict::Drop("bad TCP checksum"),
                "l3 {l3}, byte {at}"
            );
            let valid = VnetHeader {
                flags: DATA_VALID,
                ..VnetHeader::default()
            };
            assert_eq!(receive(valid, &mut bad, l3, false), Verdict::Accept);
        }
        // The kernel's own segment, checksum partial: smoltcp does not check TCP, so it goes in as it came.
        let mut partial = good.clone();
        let tcp_len = partial.len() - l3 - 40;
        partial[l3 + 56..l3 + 58].copy_from_slice(&kernel_partial(IpProtocol::Tcp, tcp_len));
        let before = partial.clone();
        assert_eq!(
            receive(needs_csum(l3 + 40, 16), &mut partial, l3, false),
            Verdict::Accept
        );
        assert_eq!(partial, before);
    }
}

#[test]
fn ipv6_segments_leave_with_their_checksum_for_the_kernel_to_finish() {
    for l3 in [0, 14] {
        let good = on_link(l3, IPV6, &tcp6_packet(b"hello, kernel"));
        let start = l3 + 40;
        let mut frame = good.clone();
        frame[start + 16..start + 18].fill(0); // what smoltcp leaves with the TCP checksum offloaded
        let header = transmit(&mut frame, l3, None);
        assert_eq!(
            header,
            VnetHeader {
                flags: NEEDS_CSUM,
                csum_start: start as u16,
                csum_offset: 16,
                ..VnetHeader::default()
            }
        );
        let tcp_len = frame.len() - start;
        assert_eq!(
            frame[start + 16..start + 18],
            kernel_partial(IpProtocol::Tcp, tcp_len)
        );
        // Finish it the way the kernel would: the sum from csum_start, complemented, at csum_offset.
        let finished = !fold(sum(&frame[start..], 0));
        frame[start + 16..start + 18].copy_from_slice(&finished.to_be_bytes());
        assert_eq!(frame, good);
    }
    // UDP keeps the checksum smoltcp computed: no header asks for anything.
    let mut udp = udp6_packet(b"mine", false);
    let before = udp.clone();
    assert_eq!(transmit(&mut udp, 0, None), VnetHeader::default());
    assert_eq!(udp, before);
}

#[test]
fn long_ipv6_segments_go_as_tcpv6_super_packets_when_given_a_size() {
    let payload = vec![b'x'; 4000];
    let mut frame = tcp6_packet(&payload);
    let header = transmit(&mut frame, 0, Some(1440));
    assert_eq!(
        (header.gso_type, header.gso_size, header.hdr_len),
        (GSO_TCPV6, 1440, 60)
    );
    assert_eq!((header.flags, header.csum_start), (NEEDS_CSUM, 40));
    let mut short = tcp6_packet(&payload[..1440]);
    assert_eq!(transmit(&mut short, 0, Some(1440)).gso_type, GSO_NONE);
    let mut tap = on_link(14, IPV6, &tcp6_packet(&payload));
    let header = transmit(&mut tap, 14, Some(1428));
    assert_eq!((header.gso_type, header.hdr_len), (GSO_TCPV6, 74));
}

#[test]
fn tcpv6_super_packets_are_taken_only_when_agreed_and_only_as_one_tcp_segment_over_ipv6() {
    let gso = VnetHeader {
        flags: NEEDS_CSUM,
        gso_type: GSO_TCPV6,
        hdr_len: 60,
        gso_size: 1440,
        csum_start: 40,
        csum_offset: 16,
    };
    let mut frame = tcp6_packet(&vec![b'y'; 3000]);
    assert_eq!(receive(gso, &mut frame, 0, true), Verdict::Accept);
    let ecn = VnetHeader {
        gso_type: GSO_TCPV6 | GSO_ECN,
        ..gso
    };
    assert_eq!(receive(ecn, &mut frame, 0, true), Verdict::Accept);
    assert_eq!(
        receive(gso, &mut frame, 0, false),
        Verdict::Drop("segmentation offload frame of a kind not negotiated")
    );
    let mut tap = on_link(14, IPV6, &frame);
    let on_tap = VnetHeader {
        csum_start: 54,
        hdr_len: 74,
        ..gso
    };
    assert_eq!(receive(on_tap, &mut tap, 14, true), Verdict::Accept);
    // Each version's type on its own version only.
    let v4 = VnetHeader {
        gso_type: GSO_TCPV4,
        ..gso
    };
    assert_eq!(
        receive(v4, &mut frame, 0, true),
        Verdict::Drop("super-packet whose segmentation type is for the other IP version")
    );
    let mut ipv4 = tcp_packet(&vec![b'y'; 3000]);
    assert_eq!(
        receive(gso, &mut ipv4, 0, true),
        Verdict::Drop("super-packet whose segmentation type is for the other IP version")
    );
    // Not TCP, not IP, or an IPv6 length longer than the frame.
    let mut udp = udp6_packet(&vec![b'u'; 3000], false);
    assert_eq!(
        receive(gso, &mut udp, 0, true),
        Verdict::Drop("TCPV6 super-packet that is not one TCP segment")
    );
    let mut arp = on_link(14, [0x08, 0x06], &frame);
    assert_eq!(
        receive(on_tap, &mut arp, 14, true),
        Verdict::Drop("TCPV6 super-packet that is not IPv6")
    );
    let mut cut = frame.clone();
    cut.truncate(2000);
    assert_eq!(
        receive(gso, &mut cut, 0, true),
        Verdict::Drop("TCPV6 super-packet that is not IPv6")
    );
}

#[test]
fn the_link_header_and_the_ip_version_must_agree() {
    let ipv6 = tcp6_packet(b"over ethernet");
    let ipv4 = tcp_packet(b"over ethernet");
    assert_eq!(
        transmit(&mut on_link(14, IPV6, &ipv6), 14, None).csum_start,
        54
    );
    assert_eq!(
        transmit(&mut on_link(14, [0x08, 0x00], &ipv6), 14, None),
        VnetHeader::default()
    );
    assert_eq!(
        transmit(&mut on_link(14, IPV6, &ipv4), 14, None),
        VnetHeader::default()
    );
}

#[test]
fn an_ipv6_segments_connection_and_payload_are_read_from_its_headers() {
    let frame = tcp6_packet(&[b'z'; 1000]);
    let flow = Some(((40000 << 16) | 12000, 1000));
    assert_eq!(tcp_payload(&frame, 0), flow);
    assert_eq!(tcp_payload(&on_link(14, IPV6, &frame), 14), flow);
    assert_eq!(tcp_payload(&udp6_packet(&[b'z'; 1000], false), 0), None);
    assert_eq!(tcp_payload(&frame[..50], 0), None);
    // A Hop-by-Hop header is looked past, as smoltcp does.
    let mut hop_by_hop = udp6_packet(&[0; 1000], true);
    hop_by_hop[6] = 0; // the fixed header's next header: Hop-by-Hop
    hop_by_hop[40] = TCP;
    hop_by_hop[48..52].copy_from_slice(&[0x9c, 0x40, 0x2e, 0xe0]); // ports 40000 → 12000
    hop_by_hop[60] = 0x50; // a 20-byte TCP header
    assert_eq!(
        tcp_payload(&hop_by_hop, 0),
        Some(((40000 << 16) | 12000, 988))
    );
}

#[test]
fn malformed_ipv6_frames_do_not_panic() {
    let whole = tcp6_packet(&[b'm'; 200]);
    let mut samples: Vec<Vec<u8>> = (0..whole.len()).map(|n| whole[..n].to_vec()).collect();
    for (at, value) in [
        (4, 0xff),
        (5, 0xff),
        (6, 0),
        (40, 6),
        (41, 0xff),
        (52, 0xf0),
    ] {
        let mut odd = whole.clone();
        odd[at] = value;
        samples.push(odd);
    }
    for fill in [0x60u8, 0x6f, 0x00] {
        samples.extend((0..100).map(|n| vec![fill; n]));
    }
    for sample in &samples {
        for l3 in [0, 14] {
            let mut frame = on_link(l3, IPV6, sample);
            for gso_type in [GSO_NONE, GSO_TCPV6] {
                let h = VnetHeader {
                    flags: NEEDS_CSUM,
                    gso_type,
                    csum_start: 60000,
                    csum_offset: 60000,
                    ..VnetHeader::default()
                };
                let _ = receive(h, &mut frame, l3, true);
                let _ = receive(VnetHeader::default(), &mut frame, l3, true);
            }
            let _ = transmit(&mut frame, l3, Some(536));
            let _ = tcp_payload(&frame, l3);
        }
    }
}
