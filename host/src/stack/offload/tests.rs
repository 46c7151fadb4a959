//! Tests of the virtio-net header offload: frames built with smoltcp's emitters, read back byte by byte.

use super::*;

/// A TCP segment from port 40000 to 12000 carrying `payload`.
pub(super) fn tcp_repr(payload: &[u8]) -> smoltcp::wire::TcpRepr<'_> {
    use smoltcp::wire::{TcpControl, TcpRepr, TcpSeqNumber};
    TcpRepr {
        src_port: 40000,
        dst_port: 12000,
        control: TcpControl::Psh,
        seq_number: TcpSeqNumber(7),
        ack_number: Some(TcpSeqNumber(9)),
        window_len: 512,
        window_scale: None,
        max_seg_size: None,
        sack_permitted: false,
        sack_ranges: [None, None, None],
        timestamp: None,
        payload,
    }
}

/// A TCP/IPv4 packet with a correct checksum (made with smoltcp's own emitter).
pub(super) fn tcp_packet(payload: &[u8]) -> Vec<u8> {
    use smoltcp::phy::ChecksumCapabilities;
    use smoltcp::wire::{IpProtocol, Ipv4Address, Ipv4Packet, Ipv4Repr, TcpPacket};
    let (src, dst) = (
        Ipv4Address::new(10, 0, 2, 2),
        Ipv4Address::new(10, 0, 2, 15),
    );
    let tcp = tcp_repr(payload);
    let ip = Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: IpProtocol::Tcp,
        payload_len: tcp.buffer_len(),
        hop_limit: 64,
    };
    let mut buf = vec![0u8; ip.buffer_len() + tcp.buffer_len()];
    let caps = ChecksumCapabilities::default();
    let mut packet = Ipv4Packet::new_unchecked(&mut buf);
    ip.emit(&mut packet, &caps);
    tcp.emit(
        &mut TcpPacket::new_unchecked(packet.payload_mut()),
        &src.into(),
        &dst.into(),
        &caps,
    );
    buf
}

#[test]
fn header_round_trip() {
    let h = VnetHeader {
        flags: NEEDS_CSUM,
        gso_type: GSO_TCPV4,
        hdr_len: 40,
        gso_size: 1460,
        csum_start: 20,
        csum_offset: 16,
    };
    let mut out = [0xffu8; VNET_HEADER_LEN];
    h.emit(&mut out);
    assert_eq!(VnetHeader::parse(&out), Some(h));
    assert_eq!(VnetHeader::parse(&out[..9]), None);
}

#[test]
fn partial_checksum_completes_to_the_real_one() {
    let good = tcp_packet(b"hello, offload");
    let mut frame = good.clone();
    frame[36..38].fill(0); // what smoltcp leaves with the TCP checksum not computed
    let header = transmit(&mut frame, 0, None);
    assert_eq!(
        (header.flags, header.csum_start, header.csum_offset),
        (NEEDS_CSUM, 20, 16)
    );
    // Finish it the way the kernel would: the sum from csum_start, complemented, at csum_offset.
    let finished = !fold(sum(&frame[20..], 0));
    frame[36..38].copy_from_slice(&finished.to_be_bytes());
    assert_eq!(frame, good);
}

#[test]
fn unvouched_tcp_is_verified() {
    let good = tcp_packet(b"check me");
    let mut frame = good.clone();
    assert_eq!(
        receive(VnetHeader::default(), &mut frame, 0, false),
        Verdict::Accept
    );
    frame[45] ^= 0x01; // corrupt the payload
    assert_eq!(
        receive(VnetHeader::default(), &mut frame, 0, false),
        Verdict::Drop("bad TCP checksum")
    );
    let valid = VnetHeader {
        flags: DATA_VALID,
        ..VnetHeader::default()
    };
    assert_eq!(receive(valid, &mut frame, 0, false), Verdict::Accept);
}

#[test]
fn unvouched_tcp_fragments_are_refused() {
    let mut frame = tcp_packet(b"fragmented");
    frame[6] = 0x20; // More Fragments
    assert_eq!(
        receive(VnetHeader::default(), &mut frame, 0, false),
        Verdict::Drop("TCP in IP fragments, checksum not verifiable")
    );
    let valid = VnetHeader {
        flags: DATA_VALID,
        ..VnetHeader::default()
    };
    assert_eq!(receive(valid, &mut frame, 0, false), Verdict::Accept);
}

#[test]
fn tap_frames_are_read_as_ipv4_only_with_its_ethertype() {
    let ip = tcp_packet(b"over ethernet");
    let mut frame = vec![0u8; 14];
    frame[12..14].copy_from_slice(&[0x08, 0x00]);
    frame.extend_from_slice(&ip);
    assert_eq!(transmit(&mut frame.clone(), 14, None).csum_start, 34);
    frame[12..14].copy_from_slice(&[0x86, 0xdd]); // IPv6 EtherType: left alone
    assert_eq!(transmit(&mut frame, 14, None), VnetHeader::default());
}

#[test]
fn long_segments_go_as_super_packets_cut_at_smoltcps_size() {
    let payload = vec![b'x'; 4000];
    let mut frame = tcp_packet(&payload);
    let header = transmit(&mut frame, 0, Some(1460));
    assert_eq!(
        (header.gso_type, header.gso_size, header.hdr_len),
        (GSO_TCPV4, 1460, 40)
    );
    assert_eq!((header.flags, header.csum_start), (NEEDS_CSUM, 20));
    // Short enough for one segment: no segmentation, even if smoltcp named a size.
    let mut short = tcp_packet(&payload[..1460]);
    assert_eq!(transmit(&mut short, 0, Some(1460)).gso_type, GSO_NONE);
    assert_eq!(transmit(&mut frame, 0, None).gso_type, GSO_NONE);
    // On TAP the Ethernet header counts in.
    let mut tap = vec![0u8; 14];
    tap[12..14].copy_from_slice(&[0x08, 0x00]);
    tap.extend_from_slice(&tcp_packet(&payload));
    assert_eq!(transmit(&mut tap, 14, Some(1448)).hdr_len, 54);
}

#[test]
fn super_packets_are_taken_only_when_agreed_and_only_tcp() {
    let mut frame = tcp_packet(&vec![b'y'; 3000]);
    let gso = VnetHeader {
        flags: NEEDS_CSUM,
        gso_type: GSO_TCPV4,
        hdr_len: 40,
        gso_size: 1460,
        csum_start: 20,
        csum_offset: 16,
    };
    assert_eq!(receive(gso, &mut frame, 0, true), Verdict::Accept);
    assert_eq!(
        receive(gso, &mut frame, 0, false),
        Verdict::Drop("segmentation offload frame of a kind not negotiated")
    );
    let udp = VnetHeader {
        gso_type: 5, // VIRTIO_NET_HDR_GSO_UDP_L4, never asked for
        ..gso
    };
    assert_eq!(
        receive(udp, &mut frame, 0, true),
        Verdict::Drop("segmentation offload frame of a kind not negotiated")
    );
    frame[9] = UDP;
    assert_eq!(
        receive(gso, &mut frame, 0, true),
        Verdict::Drop("TCPV4 super-packet that is not one TCP segment")
    );
}

#[test]
fn a_kernel_without_tso_gets_checksum_offload() {
    let mut asked = Vec::new();
    let agreed = negotiate("t0", Offload::Segmentation, |flags| {
        asked.push(flags);
        if flags & libc::TUN_F_TSO4 != 0 {
            Err(io::Error::from_raw_os_error(libc::EINVAL))
        } else {
            Ok(())
        }
    });
    assert_eq!(agreed.ok(), Some(Offload::Checksum));
    assert_eq!(
        asked,
        [
            libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6,
            libc::TUN_F_CSUM
        ]
    );
    // Refusing checksum offload too is an error, not a silent plain device.
    let refused = negotiate("t0", Offload::Segmentation, |_| {
        Err(io::Error::from_raw_os_error(libc::EINVAL))
    });
    assert!(refused.is_err());
    let asked_for_less = negotiate("t0", Offload::Checksum, |flags| {
        assert_eq!(flags, libc::TUN_F_CSUM);
        Ok(())
    });
    assert_eq!(asked_for_less.ok(), Some(Offload::Checksum));
}

#[test]
fn a_segments_connection_and_payload_are_read_from_its_headers() {
    let frame = tcp_packet(&[b'z'; 1000]);
    assert_eq!(tcp_payload(&frame, 0), Some(((40000 << 16) | 12000, 1000)));
    let mut udp = frame.clone();
    udp[9] = UDP;
    assert_eq!(tcp_payload(&udp, 0), None);
    let mut fragment = frame.clone();
    fragment[6] = 0x20;
    assert_eq!(tcp_payload(&fragment, 0), None);
    assert_eq!(tcp_payload(&frame[..30], 0), None);
    // On TAP, only behind the IPv4 EtherType.
    let mut tap = vec![0u8; 14];
    tap[12..14].copy_from_slice(&[0x08, 0x06]);
    tap.extend_from_slice(&frame);
    assert_eq!(tcp_payload(&tap, 14), None);
    assert_eq!(tcp_payload(&[], 14), None);
}

#[test]
fn malformed_frames_do_not_panic() {
    for len in 0..64 {
        let mut frame = vec![0x45u8; len];
        let h = VnetHeader {
            flags: NEEDS_CSUM,
            gso_type: GSO_TCPV4,
            csum_start: 60000,
            csum_offset: 60000,
            ..VnetHeader::default()
        };
        let _ = receive(h, &mut frame, 0, true);
        let _ = receive(VnetHeader::default(), &mut frame, 14, true);
        let _ = transmit(&mut frame, 0, Some(536));
        let _ = tcp_payload(&frame, 0);
        let _ = tcp_payload(&frame, 14);
    }
}
