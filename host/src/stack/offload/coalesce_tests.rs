//! Tests of [`SegmentCoalescer`]: IPv6 TCP segments built with smoltcp's emitters (checksum left zero, as
//! smoltcp leaves it with checksum offload), offered as the device offers them; what is written is cut back into
//! segments the way the kernel's TSO would, and compared, connection by connection, with what was offered.

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    checksum, IpProtocol, Ipv6Address, Ipv6Packet, Ipv6Repr, TcpControl, TcpPacket, TcpRepr,
    TcpSeqNumber, TcpTimestampRepr,
};

use super::*;

const SRC: Ipv6Address = Ipv6Address::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x15);
const DST: Ipv6Address = Ipv6Address::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);
const MSS: usize = 1440;
const FIRST_SEQ: u32 = 1000;

/// One segment to offer: its connection (the source port), where it is in the stream, what it says.
#[derive(Clone)]
struct Spec {
    port: u16,
    seq: u32,
    len: usize,
    control: TcpControl,
    /// `None`: no ACK flag.
    ack: Option<u32>,
    window: u16,
    timestamp: Option<TcpTimestampRepr>,
    /// An 8-byte Hop-by-Hop header before the TCP header.
    hop_by_hop: bool,
}

/// Segment `n` (from 0) of connection `port`: MSS bytes at the sequence number where segment `n` starts, ACK.
fn nth(port: u16, n: usize) -> Spec {
    Spec {
        port,
        seq: FIRST_SEQ.wrapping_add((n * MSS) as u32),
        len: MSS,
        control: TcpControl::None,
        ack: Some(77),
        window: 4096,
        timestamp: None,
        hop_by_hop: false,
    }
}

/// The payload byte at sequence number `seq` of connection `port`: every byte tells where it belongs.
fn byte_at(port: u16, seq: u32) -> u8 {
    (seq.wrapping_mul(31) ^ u32::from(port)) as u8
}

/// The frame for `spec`, behind `l3` bytes of link header (an Ethernet header on TAP), as smoltcp builds it.
fn frame(spec: &Spec, l3: usize) -> Vec<u8> {
    let payload: Vec<u8> = (0..spec.len)
        .map(|i| byte_at(spec.port, spec.seq.wrapping_add(i as u32)))
        .collect();
    let tcp = TcpRepr {
        src_port: spec.port,
        dst_port: 12000,
        control: spec.control,
        seq_number: TcpSeqNumber(spec.seq as i32),
        ack_number: spec.ack.map(|a| TcpSeqNumber(a as i32)),
        window_len: spec.window,
        window_scale: None,
        max_seg_size: None,
        sack_permitted: false,
        sack_ranges: [None, None, None],
        timestamp: spec.timestamp,
        payload: &payload,
    };
    let extension = if spec.hop_by_hop { 8 } else { 0 };
    let ip = Ipv6Repr {
        src_addr: SRC,
        dst_addr: DST,
        next_header: if spec.hop_by_hop {
            IpProtocol::HopByHop
        } else {
            IpProtocol::Tcp
        },
        payload_len: extension + tcp.buffer_len(),
        hop_limit: 64,
    };
    let mut buf = vec![0u8; l3 + ip.buffer_len() + ip.payload_len];
    if l3 == 14 {
        buf[..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 2]);
        buf[6..12].copy_from_slice(&[0x02, 0x53, 0x4d, 0x4f, 0x4c, 0x01]);
        buf[12..14].copy_from_slice(&[0x86, 0xdd]);
    }
    ip.emit(&mut Ipv6Packet::new_unchecked(&mut buf[l3..]));
    let l4 = l3 + 40 + extension;
    if spec.hop_by_hop {
        buf[l3 + 40..l4].copy_from_slice(&[6, 0, 1, 4, 0, 0, 0, 0]);
    }
    tcp.emit(
        &mut TcpPacket::new_unchecked(&mut buf[l4..]),
        &SRC.into(),
        &DST.into(),
        &ChecksumCapabilities::ignored(),
    );
    buf
}

/// How frames are handed to the coalescer.
#[derive(Debug, Clone, Copy)]
enum Mode {
    /// Built elsewhere, then offered ([`SegmentCoalescer::offer`]).
    Offer,
    /// Built where the coalescer says ([`SegmentCoalescer::build`]), as the device does.
    Build,
}

const MODES: [Mode; 2] = [Mode::Offer, Mode::Build];

/// Hands each of `specs` over (a frame passed through is written as [`transmit`] makes it), then flushes;
/// returns every write (virtio-net header, frame), in order.
fn send(coalescer: &mut SegmentCoalescer, specs: &[Spec], l3: usize, mode: Mode) -> Vec<Vec<u8>> {
    let mut written = Vec::new();
    offer_all(coalescer, specs, l3, &mut written, mode);
    coalescer.flush(&mut |bytes| written.push(bytes.to_vec()));
    assert_eq!(coalescer.pending(), 0, "something left after the flush");
    written
}

/// Hands each of `specs` over, without the final flush.
fn offer_all(
    coalescer: &mut SegmentCoalescer,
    specs: &[Spec],
    l3: usize,
    written: &mut Vec<Vec<u8>>,
    mode: Mode,
) {
    for spec in specs {
        let mut frame = frame(spec, l3);
        let mut write = |bytes: &[u8]| written.push(bytes.to_vec());
        let offered = match mode {
            Mode::Offer => coalescer.offer(&frame, &mut write),
            Mode::Build => {
                let built = frame.clone();
                // What the build leaves in the caller's buffer is what goes out if it passes through.
                frame.fill(0xee);
                let ((), offered) =
                    coalescer.build(&mut frame, |out| out.copy_from_slice(&built), &mut write);
                offered
            }
        };
        if offered == Offered::PassThrough {
            written.push(with_header(&mut frame, l3));
        }
    }
}

/// `frame` as the device writes a frame passed through: behind the header [`transmit`] makes.
fn with_header(frame: &mut [u8], l3: usize) -> Vec<u8> {
    let mut out = vec![0u8; VNET_HEADER_LEN];
    transmit(frame, l3, None).emit(&mut out);
    out.extend_from_slice(frame);
    out
}

/// A segment as the peer's stack sees it after the kernel cut the super-packets.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    port: u16,
    seq: u32,
    flags: u8,
    ack: u32,
    window: u16,
    options: Vec<u8>,
    payload: Vec<u8>,
}

/// What the specs are, as [`Seen`].
fn expected(specs: &[Spec], l3: usize) -> Vec<Seen> {
    specs
        .iter()
        .flat_map(|s| cut(&with_header(&mut frame(s, l3), l3), l3))
        .collect()
}

/// Checks a write's virtio-net header and checksum, then cuts it into segments as the kernel's TSO would (PSH
/// and FIN on the last one only).
fn cut(written: &[u8], l3: usize) -> Vec<Seen> {
    let header = VnetHeader::parse(written).unwrap();
    let frame = &written[VNET_HEADER_LEN..];
    let ip = Ipv6Packet::new_checked(&frame[l3..]).unwrap();
    let l4 = l3
        + 40
        + if ip.next_header() == IpProtocol::HopByHop {
            8
        } else {
            0
        };
    let tcp_len = usize::from(ip.payload_len()) - (l4 - l3 - 40);
    assert_eq!(
        frame.len(),
        l4 + tcp_len,
        "the IPv6 payload length covers the frame"
    );
    // The checksum field holds the pseudo-header sum over the whole segment; finished as the kernel finishes it
    // (the sum from csum_start, complemented, at csum_offset), it is the real checksum.
    assert_eq!(header.flags, NEEDS_CSUM);
    assert_eq!(
        (usize::from(header.csum_start), header.csum_offset),
        (l4, 16)
    );
    let partial = checksum::pseudo_header_v6(&SRC, &DST, IpProtocol::Tcp, tcp_len as u32);
    assert_eq!(frame[l4 + 16..l4 + 18], partial.to_be_bytes());
    let mut finished = frame.to_vec();
    let sum = !fold(super::sum(&finished[l4..], 0));
    finished[l4 + 16..l4 + 18].copy_from_slice(&sum.to_be_bytes());
    let tcp = TcpPacket::new_checked(&finished[l4..]).unwrap();
    assert!(tcp.verify_checksum(&SRC.into(), &DST.into()));
    let payload = tcp.payload();
    let header_len = usize::from(tcp.header_len());
    let size = match header.gso_type {
        GSO_NONE => payload.len().max(1),
        GSO_TCPV6 => {
            assert_eq!(usize::from(header.hdr_len), l4 + header_len);
            assert!(payload.len() > usize::from(header.gso_size));
            usize::from(header.gso_size)
        }
        other => panic!("gso_type {other}"),
    };
    let flags = finished[l4 + 13];
    let chunks: Vec<&[u8]> = if payload.is_empty() {
        vec![&[]]
    } else {
        payload.chunks(size).collect()
    };
    let last = chunks.len() - 1;
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, chunk)| Seen {
            port: tcp.src_port(),
            seq: (tcp.seq_number() + i * size).0 as u32,
            flags: if i == last {
                flags
            } else {
                flags & !(0x08 | 0x01)
            },
            ack: tcp.ack_number().0 as u32,
            window: tcp.window_len(),
            options: tcp.options().to_vec(),
            payload: chunk.to_vec(),
        })
        .collect()
}

/// The segments of connection `port`, in order.
fn of(port: u16, seen: &[Seen]) -> Vec<&Seen> {
    seen.iter().filter(|s| s.port == port).collect()
}

/// Checks that `written` carries the segments of `specs`, connection by connection in the order offered.
fn same_per_connection(specs: &[Spec], written: &[Vec<u8>], l3: usize) {
    let seen: Vec<Seen> = written.iter().flat_map(|w| cut(w, l3)).collect();
    let want = expected(specs, l3);
    assert_eq!(seen.len(), want.len());
    let mut ports: Vec<u16> = specs.iter().map(|s| s.port).collect();
    ports.sort_unstable();
    ports.dedup();
    for port in ports {
        assert_eq!(of(port, &seen), of(port, &want), "connection {port}");
    }
}

fn gso(written: &[u8]) -> VnetHeader {
    VnetHeader::parse(written).unwrap()
}

#[test]
fn contiguous_segments_become_one_tcpv6_super_packet_on_tun_and_tap() {
    for (l3, mode) in [0, 14].into_iter().flat_map(|l3| MODES.map(|m| (l3, m))) {
        let mut coalescer = SegmentCoalescer::new(l3);
        let mut specs: Vec<Spec> = (0..5).map(|n| nth(40000, n)).collect();
        let mut last = nth(40000, 5);
        last.len = 1000;
        specs.push(last);
        let mut written = Vec::new();
        offer_all(&mut coalescer, &specs, l3, &mut written, mode);
        // The shorter last segment ended it: written before any flush.
        assert_eq!(written.len(), 1, "{mode:?}");
        assert_eq!(coalescer.pending(), 0);
        let header = gso(&written[0]);
        let l4 = l3 + 40;
        assert_eq!(
            header,
            VnetHeader {
                flags: NEEDS_CSUM,
                gso_type: GSO_TCPV6,
                hdr_len: (l4 + 20) as u16,
                gso_size: MSS as u16,
                csum_start: l4 as u16,
                csum_offset: 16,
            }
        );
        let frame = &written[0][VNET_HEADER_LEN..];
        assert_eq!(frame.len(), l4 + 20 + 5 * MSS + 1000);
        let ip = Ipv6Packet::new_checked(&frame[l3..]).unwrap();
        assert_eq!(usize::from(ip.payload_len()), 20 + 5 * MSS + 1000);
        assert_eq!(
            &frame[..l3],
            &self::frame(&specs[0], l3)[..l3],
            "link header kept"
        );
        // Bytes in order (built in place, the bytes its headers covered are back).
        let payload = TcpPacket::new_checked(&frame[l4..])
            .unwrap()
            .payload()
            .to_vec();
        let want: Vec<u8> = (0..payload.len())
            .map(|i| byte_at(40000, FIRST_SEQ + i as u32))
            .collect();
        assert!(payload == want, "payload out of order ({mode:?}, l3 {l3})");
        same_per_connection(&specs, &written, l3);
    }
}

#[test]
fn segments_that_join_are_built_in_place_never_in_the_callers_buffer() {
    for l3 in [0, 14] {
        let mut coalescer = SegmentCoalescer::new(l3);
        let mut never = |_: &[u8]| panic!("nothing is to be written yet");
        for n in 0..10 {
            let built = frame(&nth(40000, n), l3);
            let mut scratch = vec![0xee; built.len()];
            let ((), offered) =
                coalescer.build(&mut scratch, |out| out.copy_from_slice(&built), &mut never);
            assert_eq!(offered, Offered::Held);
            // The first one starts the super-packet from the caller's buffer; the others go straight in.
            assert_eq!(scratch.iter().all(|&b| b == 0xee), n > 0, "segment {n}");
        }
        let mut written = Vec::new();
        coalescer.flush(&mut |b| written.push(b.to_vec()));
        let specs: Vec<Spec> = (0..10).map(|n| nth(40000, n)).collect();
        same_per_connection(&specs, &written, l3);
    }
}

#[test]
fn a_connection_gone_quiet_costs_one_guess_and_the_others_are_built_in_place_again() {
    // smoltcp's egress goes round its sockets in a fixed order: A, B, C, then B has nothing more to send.
    let mut order: Vec<(u16, usize)> = Vec::new();
    for n in 0..2 {
        order.extend([(40000, n), (40001, n), (40002, n)]);
    }
    for n in 2..12 {
        order.extend([(40000, n), (40002, n)]);
    }
    let mut coalescer = SegmentCoalescer::new(0);
    let mut in_place = Vec::new();
    let mut never = |_: &[u8]| panic!("nothing is to be written yet");
    for &(port, n) in &order {
        let built = frame(&nth(port, n), 0);
        let mut scratch = vec![0xee; built.len()];
        let ((), offered) =
            coalescer.build(&mut scratch, |out| out.copy_from_slice(&built), &mut never);
        assert_eq!(offered, Offered::Held);
        in_place.push(scratch.iter().all(|&b| b == 0xee));
    }
    // Starting each connection, learning the order (A's second segment) and its change (C's third) go through
    // the caller's buffer; everything after is built where it joins.
    let missed: Vec<usize> = (0..order.len()).filter(|&i| !in_place[i]).collect();
    assert_eq!(missed, vec![0, 1, 2, 3, 7]);
    let mut written = Vec::new();
    coalescer.flush(&mut |b| written.push(b.to_vec()));
    let specs: Vec<Spec> = order.iter().map(|&(port, n)| nth(port, n)).collect();
    same_per_connection(&specs, &written, 0);
}

#[test]
fn a_single_segment_goes_as_it_would_have_gone_alone() {
    for (l3, mode) in [0, 14].into_iter().flat_map(|l3| MODES.map(|m| (l3, m))) {
        let mut coalescer = SegmentCoalescer::new(l3);
        let spec = nth(40000, 0);
        let mut written = Vec::new();
        offer_all(
            &mut coalescer,
            std::slice::from_ref(&spec),
            l3,
            &mut written,
            mode,
        );
        assert!(written.is_empty());
        assert_eq!(coalescer.pending(), 1);
        coalescer.flush(&mut |b| written.push(b.to_vec()));
        assert_eq!(written, vec![with_header(&mut frame(&spec, l3), l3)]);
        assert_eq!(gso(&written[0]).gso_type, GSO_NONE);
    }
}

#[test]
fn psh_ends_the_super_packet_and_is_kept_on_it() {
    for mode in MODES {
        let mut coalescer = SegmentCoalescer::new(0);
        let mut specs: Vec<Spec> = (0..4).map(|n| nth(40000, n)).collect();
        specs[2].control = TcpControl::Psh;
        let mut written = Vec::new();
        offer_all(&mut coalescer, &specs, 0, &mut written, mode);
        assert_eq!(written.len(), 1, "written at the PSH");
        let frame = &written[0][VNET_HEADER_LEN..];
        assert_eq!(frame[40 + 13], 0x18, "ACK|PSH on the super-packet");
        assert_eq!(gso(&written[0]).gso_type, GSO_TCPV6);
        coalescer.flush(&mut |b| written.push(b.to_vec()));
        assert_eq!(written.len(), 2);
        same_per_connection(&specs, &written, 0);
        // A PSH segment with nothing pending goes at once, as it is.
        let mut alone = nth(40000, 0);
        alone.control = TcpControl::Psh;
        let mut none = Vec::new();
        offer_all(
            &mut coalescer,
            std::slice::from_ref(&alone),
            0,
            &mut none,
            mode,
        );
        assert_eq!(none, vec![with_header(&mut self::frame(&alone, 0), 0)]);
    }
}

/// What makes a segment one that cannot join the three before it.
type Breaker = fn(&mut Spec);

/// Three segments, then `breaker` (made from the fourth), then two more from where `breaker` leaves the stream.
fn broken_stream(breaker: impl FnOnce(&mut Spec)) -> Vec<Spec> {
    let mut specs: Vec<Spec> = (0..3).map(|n| nth(40000, n)).collect();
    let mut odd = nth(40000, 3);
    breaker(&mut odd);
    let next = odd.seq.wrapping_add(odd.len as u32) + u32::from(odd.control == TcpControl::Fin);
    specs.push(odd.clone());
    for n in 0..2 {
        let mut more = nth(40000, 0);
        more.seq = next.wrapping_add((n * MSS) as u32);
        more.ack = odd.ack;
        more.window = odd.window;
        more.timestamp = odd.timestamp;
        specs.push(more);
    }
    specs
}

#[test]
fn what_cannot_join_flushes_its_connection_first_and_keeps_the_order() {
    // (what, the breaker, writes: the three before, the breaker or what it starts, the two after)
    let cases: [(&str, Breaker, usize); 13] = [
        ("a gap", |s: &mut Spec| s.seq += 1, 2),
        ("a rewind", |s: &mut Spec| s.seq -= MSS as u32, 2),
        ("another ACK number", |s: &mut Spec| s.ack = Some(78), 2),
        ("another window", |s: &mut Spec| s.window = 4097, 2),
        (
            "other options",
            |s: &mut Spec| s.timestamp = Some(TcpTimestampRepr::new(9, 5)),
            2,
        ),
        // Starts a super-packet cut at 1441 bytes, which the next (shorter) segment ends; the last goes alone.
        ("a longer segment", |s: &mut Spec| s.len = MSS + 1, 3),
        ("FIN", |s: &mut Spec| s.control = TcpControl::Fin, 3),
        ("RST", |s: &mut Spec| s.control = TcpControl::Rst, 3),
        ("SYN", |s: &mut Spec| s.control = TcpControl::Syn, 3),
        // The two after have no ACK flag either: each goes alone.
        ("no ACK flag", |s: &mut Spec| s.ack = None, 4),
        ("a pure ACK", |s: &mut Spec| s.len = 0, 3),
        ("a Hop-by-Hop header", |s: &mut Spec| s.hop_by_hop = true, 3),
        // Joins, and ends the super-packet: the two after make a second one.
        ("a shorter segment", |s: &mut Spec| s.len = 100, 2),
    ];
    for (l3, mode) in [0, 14].into_iter().flat_map(|l3| MODES.map(|m| (l3, m))) {
        for (what, breaker, writes) in &cases {
            let specs = broken_stream(*breaker);
            let mut coalescer = SegmentCoalescer::new(l3);
            let written = send(&mut coalescer, &specs, l3, mode);
            assert_eq!(written.len(), *writes, "{what}, l3 {l3}, {mode:?}");
            same_per_connection(&specs, &written, l3);
            assert_eq!(gso(&written[0]).gso_type, GSO_TCPV6, "{what}");
        }
    }
}

#[test]
fn a_shorter_segment_in_the_middle_ends_the_super_packet() {
    for mode in MODES {
        let mut specs: Vec<Spec> = (0..2).map(|n| nth(40000, n)).collect();
        let mut short = nth(40000, 2);
        short.len = 700;
        specs.push(short);
        let mut after = nth(40000, 0);
        after.seq = FIRST_SEQ + (2 * MSS + 700) as u32;
        specs.push(after);
        let mut coalescer = SegmentCoalescer::new(0);
        let mut written = Vec::new();
        offer_all(&mut coalescer, &specs, 0, &mut written, mode);
        assert_eq!(written.len(), 1, "written at the shorter segment");
        assert_eq!(written[0].len(), VNET_HEADER_LEN + 60 + 2 * MSS + 700);
        assert_eq!(coalescer.pending(), 1);
        coalescer.flush(&mut |b| written.push(b.to_vec()));
        same_per_connection(&specs, &written, 0);
    }
}

#[test]
fn interleaved_connections_each_get_their_own_super_packet() {
    let ports = [40000, 40001, 40002, 40003];
    let specs: Vec<Spec> = (0..10).flat_map(|n| ports.map(|p| nth(p, n))).collect();
    for mode in MODES {
        let mut coalescer = SegmentCoalescer::new(14);
        let mut written = Vec::new();
        offer_all(&mut coalescer, &specs, 14, &mut written, mode);
        assert!(written.is_empty());
        assert_eq!(coalescer.pending(), 4);
        coalescer.flush(&mut |b| written.push(b.to_vec()));
        assert_eq!(written.len(), 4);
        for w in &written {
            assert_eq!(w.len(), VNET_HEADER_LEN + 14 + 60 + 10 * MSS);
        }
        same_per_connection(&specs, &written, 14);
    }
}

#[test]
fn connections_in_no_particular_order_keep_theirs() {
    // Three connections sending in an irregular order, pure ACKs and a PSH among them: whatever the coalescer
    // guesses about who sends next, each connection's segments arrive as they were sent.
    let mut next = [0usize; 3];
    let mut specs = Vec::new();
    let mut state = 12345u32;
    for i in 0..300 {
        state = state.wrapping_mul(1_103_515_245).wrapping_add(12345);
        let c = (state >> 16) as usize % 3;
        let port = 40000 + c as u16;
        let mut spec = nth(port, next[c]);
        match i % 17 {
            5 => spec.len = 0,
            11 => spec.control = TcpControl::Psh,
            _ => {}
        }
        next[c] += usize::from(spec.len > 0);
        specs.push(spec);
    }
    for (l3, mode) in [0, 14].into_iter().flat_map(|l3| MODES.map(|m| (l3, m))) {
        let mut coalescer = SegmentCoalescer::new(l3);
        let written = send(&mut coalescer, &specs, l3, mode);
        assert!(written.len() < specs.len() / 2, "{} writes", written.len());
        same_per_connection(&specs, &written, l3);
    }
}

#[test]
fn a_full_table_flushes_the_connection_added_to_least_recently() {
    for mode in MODES {
        let ports: Vec<u16> = (0..=COALESCED_FLOWS as u16).map(|i| 40000 + i).collect();
        let mut specs: Vec<Spec> = ports[..COALESCED_FLOWS]
            .iter()
            .map(|&p| nth(p, 0))
            .collect();
        specs.extend(ports[1..COALESCED_FLOWS].iter().map(|&p| nth(p, 1)));
        let mut coalescer = SegmentCoalescer::new(0);
        let mut written = Vec::new();
        offer_all(&mut coalescer, &specs, 0, &mut written, mode);
        assert!(written.is_empty());
        assert_eq!(coalescer.pending(), COALESCED_FLOWS);
        let newcomer = nth(ports[COALESCED_FLOWS], 0);
        offer_all(
            &mut coalescer,
            std::slice::from_ref(&newcomer),
            0,
            &mut written,
            mode,
        );
        assert_eq!(written.len(), 1);
        assert_eq!(cut(&written[0], 0)[0].port, ports[0], "the oldest went");
        assert_eq!(coalescer.pending(), COALESCED_FLOWS);
        specs.push(newcomer);
        coalescer.flush(&mut |b| written.push(b.to_vec()));
        assert_eq!(written.len(), COALESCED_FLOWS + 1);
        same_per_connection(&specs, &written, 0);
    }
}

#[test]
fn a_full_buffer_is_written_and_the_next_segment_starts_anew() {
    // 45 segments of 1440 bytes fit 64 KiB with their headers (40 + 20 + 64800); a 46th would not.
    let specs: Vec<Spec> = (0..50).map(|n| nth(40000, n)).collect();
    for mode in MODES {
        let mut coalescer = SegmentCoalescer::new(0);
        let mut written = Vec::new();
        offer_all(&mut coalescer, &specs[..45], 0, &mut written, mode);
        assert_eq!(written.len(), 1, "written when full");
        assert_eq!(written[0].len(), VNET_HEADER_LEN + 60 + 45 * MSS);
        assert!(written[0].len() - VNET_HEADER_LEN <= MAX_SUPER_PACKET);
        assert_eq!(coalescer.pending(), 0);
        written.extend(send(&mut coalescer, &specs[45..], 0, mode));
        assert_eq!(written.len(), 2);
        same_per_connection(&specs, &written, 0);
    }
}

#[test]
fn ipv4_and_other_frames_pass_through_and_leave_pending_ones_alone() {
    for mode in MODES {
        let mut coalescer = SegmentCoalescer::new(0);
        let mut written = Vec::new();
        offer_all(&mut coalescer, &[nth(40000, 0)], 0, &mut written, mode);
        // An IPv4 segment between the same ports (40000 to 12000) is not the IPv6 connection.
        let ipv4 = super::tests::tcp_packet(&[b'x'; 100]);
        let mut udp6 = frame(&nth(40000, 1), 0);
        udp6[6] = 17;
        for other in [&ipv4[..], &udp6[..], &[0x60, 0, 0][..]] {
            let mut out = other.to_vec();
            let mut never = |_: &[u8]| panic!("nothing is to be written");
            let offered = match mode {
                Mode::Offer => coalescer.offer(other, &mut never),
                Mode::Build => {
                    coalescer
                        .build(&mut out, |b| b.copy_from_slice(other), &mut never)
                        .1
                }
            };
            assert_eq!(offered, Offered::PassThrough);
            assert_eq!(out, other, "left as built");
        }
        assert_eq!(coalescer.pending(), 1);
        offer_all(&mut coalescer, &[nth(40000, 1)], 0, &mut written, mode);
        assert!(written.is_empty());
        assert_eq!(coalescer.pending(), 1);
    }
}

#[test]
fn malformed_frames_do_not_panic() {
    for (l3, mode) in [0, 14].into_iter().flat_map(|l3| MODES.map(|m| (l3, m))) {
        let good = frame(&nth(40000, 0), l3);
        let mut coalescer = SegmentCoalescer::new(l3);
        let hand_over = |coalescer: &mut SegmentCoalescer, bytes: &[u8]| match mode {
            Mode::Offer => {
                let _ = coalescer.offer(bytes, &mut |_| {});
            }
            Mode::Build => {
                let mut out = vec![0; bytes.len()];
                let _ = coalescer.build(&mut out, |b| b.copy_from_slice(bytes), &mut |_| {});
            }
        };
        hand_over(&mut coalescer, &good);
        for len in 0..good.len() {
            hand_over(&mut coalescer, &good[..len]);
        }
        for (at, value) in [
            (4, 0xff),
            (5, 0xff),
            (40 + 12, 0xf0),
            (40 + 12, 0x10),
            (6, 0),
        ] {
            let mut bad = good.clone();
            bad[l3 + at] = value;
            hand_over(&mut coalescer, &bad);
            hand_over(&mut coalescer, &frame(&nth(40000, 1), l3));
        }
        coalescer.flush(&mut |_| {});
        assert_eq!(coalescer.pending(), 0);
    }
}

#[test]
fn the_buffers_are_what_the_docs_say() {
    let tun = SegmentCoalescer::new(0).buffer_bytes();
    assert_eq!(
        tun,
        COALESCED_FLOWS * (VNET_HEADER_LEN + MAX_SUPER_PACKET) + 114
    );
    assert_eq!(
        SegmentCoalescer::new(14).buffer_bytes(),
        tun + COALESCED_FLOWS * 14
    );
}
