//! The graph's points counted from captures built byte by byte here (independently of smoltcp's emitters):
//! a connection with a loss, its retransmission, a SACK block, a spurious retransmission and a silence; the
//! streams tshark would number; and damaged files, which are errors, never panics.

use super::*;
use crate::experiments::diagram::{read_tcp_segments, PcapError};

const CLIENT: [u8; 4] = [10, 0, 2, 2];
const SERVER: [u8; 4] = [10, 0, 2, 15];
const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;

/// One TCP segment to build.
struct Segment {
    time_us: u32,
    from_client: bool,
    seq: u32,
    ack: u32,
    flags: u8,
    window: u16,
    options: Vec<u8>,
    payload: usize,
}

fn segment(time_us: u32, from_client: bool, seq: u32, ack: u32, flags: u8) -> Segment {
    Segment {
        time_us,
        from_client,
        seq,
        ack,
        flags,
        window: 1000,
        options: Vec::new(),
        payload: 0,
    }
}

impl Segment {
    fn payload(mut self, len: usize) -> Segment {
        self.payload = len;
        self
    }
    fn window(mut self, window: u16) -> Segment {
        self.window = window;
        self
    }
    fn options(mut self, options: &[u8]) -> Segment {
        self.options = options.to_vec();
        self
    }
}

/// The TCP header and payload (checksum left at zero: the graph does not look at it).
fn tcp_bytes(s: &Segment, sport: u16, dport: u16) -> Vec<u8> {
    let mut options = s.options.clone();
    while !options.len().is_multiple_of(4) {
        options.push(1); // NOP
    }
    let mut t = Vec::new();
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&s.seq.to_be_bytes());
    t.extend_from_slice(&s.ack.to_be_bytes());
    t.push((((20 + options.len()) / 4) as u8) << 4);
    t.push(s.flags);
    t.extend_from_slice(&s.window.to_be_bytes());
    t.extend_from_slice(&[0, 0, 0, 0]);
    t.extend_from_slice(&options);
    t.extend(std::iter::repeat_n(b'x', s.payload));
    t
}

fn ipv4(src: [u8; 4], dst: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x45, 0];
    p.extend_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0, 0x40, 0, 64, 6, 0, 0]);
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    p.extend_from_slice(payload);
    p
}

fn ipv6(src: [u8; 16], dst: [u8; 16], payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x60, 0, 0, 0];
    p.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    p.extend_from_slice(&[6, 64]);
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    p.extend_from_slice(payload);
    p
}

/// A classic pcap (microseconds, little-endian) of link type `link_type` with `(time_us, frame)` records.
fn pcap(link_type: u32, frames: &[(u32, Vec<u8>)]) -> Vec<u8> {
    let mut f = vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0];
    f.extend_from_slice(&[0; 8]);
    f.extend_from_slice(&65535u32.to_le_bytes());
    f.extend_from_slice(&link_type.to_le_bytes());
    for (time_us, frame) in frames {
        f.extend_from_slice(&(1000 + time_us / 1_000_000).to_le_bytes());
        f.extend_from_slice(&(time_us % 1_000_000).to_le_bytes());
        f.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        f.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        f.extend_from_slice(frame);
    }
    f
}

/// Raw IPv4 (link type 228) between CLIENT:`cport` and SERVER:12000.
fn capture_v4(segments: &[Segment], cport: u16) -> Vec<u8> {
    let frames: Vec<(u32, Vec<u8>)> = segments
        .iter()
        .map(|s| {
            let frame = if s.from_client {
                ipv4(CLIENT, SERVER, &tcp_bytes(s, cport, 12000))
            } else {
                ipv4(SERVER, CLIENT, &tcp_bytes(s, 12000, cport))
            };
            (s.time_us, frame)
        })
        .collect();
    pcap(228, &frames)
}

/// Window scale 3, SACK permitted, MSS 1460.
const CLIENT_SYN_OPTIONS: [u8; 10] = [3, 3, 3, 4, 2, 2, 4, 0x05, 0xb4, 1];
/// Window scale 2.
const SERVER_SYN_OPTIONS: [u8; 3] = [3, 3, 2];

/// SACK of one block, raw edges.
fn sack(left: u32, right: u32) -> Vec<u8> {
    let mut o = vec![1, 1, 5, 10];
    o.extend_from_slice(&left.to_be_bytes());
    o.extend_from_slice(&right.to_be_bytes());
    o
}

/// The client (ISN 1000) sends 300 bytes in three segments; the second is lost, the server acknowledges the
/// first and reports the third in a SACK block; after 459 ms the client sends the second again, then (once
/// everything is acknowledged) the first again, needlessly; then both close.
fn lossy_connection() -> Vec<Segment> {
    vec![
        segment(0, true, 1000, 0, SYN).options(&CLIENT_SYN_OPTIONS), // 1
        segment(10_000, false, 5000, 1001, SYN | ACK).options(&SERVER_SYN_OPTIONS), // 2
        segment(20_000, true, 1001, 5001, ACK),                      // 3
        segment(30_000, true, 1001, 5001, ACK).payload(100),         // 4
        segment(31_000, true, 1101, 5001, ACK).payload(100),         // 5 (lost on the way)
        segment(32_000, true, 1201, 5001, ACK).payload(100),         // 6
        segment(40_000, false, 5001, 1101, ACK).window(500),         // 7
        segment(41_000, false, 5001, 1101, ACK)
            .window(500)
            .options(&sack(1201, 1301)), // 8
        segment(500_000, true, 1101, 5001, ACK).payload(100),        // 9: retransmission
        segment(510_000, false, 5001, 1301, ACK).window(500),        // 10
        segment(520_000, true, 1001, 5001, ACK).payload(100),        // 11: spurious
        segment(530_000, true, 1301, 5001, FIN | ACK),               // 12
        segment(540_000, false, 5001, 1302, FIN | ACK).window(500),  // 13
    ]
}

#[test]
fn points_counted_from_a_capture_with_a_loss() {
    let drawn = graph_capture(&capture_v4(&lossy_connection(), 40000), None).unwrap();
    let g = &drawn.graph;
    assert_eq!((drawn.streams, g.stream), (1, 0));
    assert_eq!(g.sender.to_string(), "10.0.2.2:40000");
    assert_eq!(g.receiver.to_string(), "10.0.2.15:12000");
    // SYN, four data segments (two of them sent before), FIN: each with its relative start and space.
    let segments: Vec<(usize, u64, u32, SegmentVerdict)> = g
        .segments
        .iter()
        .map(|s| (s.frame, s.seq, s.len, s.verdict))
        .collect();
    use SegmentVerdict::*;
    assert_eq!(
        segments,
        [
            (1, 0, 1, New),
            (4, 1, 100, New),
            (5, 101, 100, New),
            (6, 201, 100, New),
            (9, 101, 100, Retransmission),
            (11, 1, 100, SpuriousRetransmission),
            (12, 301, 1, New),
        ]
    );
    assert_eq!(g.retransmitted_frames(), [9, 11]);
    assert_eq!(g.payload_bytes, 500);
    assert_eq!(drawn.other_direction_payload, 0);
    // The server's ACKs: five points, three steps up (1 → 101 → 301 → 302).
    let acks: Vec<(usize, u64, u64)> = g
        .acks
        .iter()
        .map(|a| (a.frame, a.ack, a.window_edge))
        .collect();
    // The SYN-ACK's window is never scaled; afterwards 500 << 2 (both SYNs carried the option).
    assert_eq!(
        acks,
        [
            (2, 1, 1001),
            (7, 101, 2101),
            (8, 101, 2101),
            (10, 301, 2301),
            (13, 302, 2302)
        ]
    );
    assert_eq!(g.ack_advances(), 3);
    assert_eq!(g.window_scaling, WindowScaling::Negotiated { shift: 2 });
    let sacks: Vec<(usize, u64, u64)> =
        g.sacks.iter().map(|s| (s.frame, s.left, s.right)).collect();
    assert_eq!(sacks, [(8, 201, 301)]);
    // Times from the stream's first packet; one silence (41 ms to 500 ms) longer than 200 ms.
    assert_eq!(g.gaps.len(), 1);
    assert!((g.gaps[0].from - 0.041).abs() < 1e-9 && (g.gaps[0].to - 0.5).abs() < 1e-9);
    assert!((g.duration() - 0.54).abs() < 1e-9);

    let svg = time_sequence_svg(g, TimeBase::LabVirtual);
    assert_eq!(svg.matches("class=\"segment").count(), 7);
    assert_eq!(svg.matches("class=\"segment retransmission").count(), 2);
    assert_eq!(svg.matches("class=\"sack\"").count(), 1);
    assert_eq!(svg.matches("class=\"gap\"").count(), 1);
    assert!(svg.contains("virtual time (the lab&apos;s clock)"), "{svg}");
    assert!(svg.contains("10.0.2.2:40000 → 10.0.2.15:12000"));
    assert!(svg.trim_end().ends_with("</svg>"));
}

/// `--reverse`: the other direction of the same stream, the server's, which sent no payload: its SYN-ACK and
/// FIN are the only segments that take sequence space.
#[test]
fn the_other_direction_is_drawn_when_asked() {
    let capture = capture_v4(&lossy_connection(), 40000);
    let busier = graph_capture(&capture, None).unwrap();
    let other = graph_capture_direction(&capture, None, GraphDirection::Other).unwrap();
    assert_eq!(
        (other.graph.sender, other.graph.receiver),
        (busier.graph.receiver, busier.graph.sender)
    );
    assert_eq!(other.graph.payload_bytes, 0);
    assert_eq!(other.other_direction_payload, 500);
    // The server's SYN-ACK (frame 2) and FIN (frame 13) occupy its sequence space; nothing else does.
    let frames: Vec<usize> = other.graph.segments.iter().map(|s| s.frame).collect();
    assert_eq!(frames, [2, 13]);
}

#[test]
fn the_busier_direction_and_stream_are_drawn() {
    // Stream 0 carries 300 bytes; stream 1 (other ports) 100 each way plus 500 from the server.
    let mut quiet = lossy_connection();
    quiet.truncate(6);
    let mut frames = Vec::new();
    let first = capture_v4(&quiet, 40000);
    let busy = vec![
        segment(600_000, true, 7000, 0, SYN),
        segment(601_000, false, 9000, 7001, SYN | ACK),
        segment(602_000, true, 7001, 9001, ACK).payload(100),
        segment(603_000, false, 9001, 7101, ACK).payload(600),
    ];
    let second = capture_v4(&busy, 40001);
    frames.extend_from_slice(&first);
    frames.extend_from_slice(&second[24..]);
    let drawn = graph_capture(&frames, None).unwrap();
    assert_eq!((drawn.streams, drawn.graph.stream), (2, 1));
    assert!(drawn.busiest_chosen);
    assert_eq!(drawn.graph.sender.to_string(), "10.0.2.15:12000");
    assert_eq!(
        (drawn.graph.payload_bytes, drawn.other_direction_payload),
        (600, 100)
    );
    // Asked for stream 0: the client's 300 bytes.
    let asked = graph_capture(&frames, Some(0)).unwrap();
    assert_eq!((asked.graph.stream, asked.graph.payload_bytes), (0, 300));
    assert!(!asked.busiest_chosen);
    assert_eq!(
        graph_capture(&frames, Some(2)),
        Err(GraphError::NoSuchStream {
            asked: 2,
            streams: 2
        })
    );
}

#[test]
fn a_new_syn_on_the_same_ports_is_a_new_stream_and_a_repeated_one_is_not() {
    let segments = vec![
        segment(0, true, 1000, 0, SYN),
        segment(1_000_000, true, 1000, 0, SYN), // the same SYN again: retransmitted
        segment(1_001_000, false, 5000, 1001, SYN | ACK),
        segment(2_000_000, true, 3000, 0, SYN), // another connection on the same ports
    ];
    let capture = read_tcp_segments(&capture_v4(&segments, 40000)).unwrap();
    let streams = split_streams(&capture.segments);
    let sizes: Vec<usize> = streams.iter().map(|s| s.segments.len()).collect();
    assert_eq!(sizes, [3, 1]);
    let g = TimeSequence::build(&streams[0], streams[0].first_sender);
    assert_eq!(g.retransmitted_frames(), [2]);
    assert_eq!(g.window_scaling, WindowScaling::NotNegotiated);
}

#[test]
fn ipv6_segments_are_read_and_a_missing_syn_leaves_scaling_unknown() {
    let (a, b) = (
        [0xfd, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
        [0xfd, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x15],
    );
    let data = tcp_bytes(&segment(0, true, 100, 7, ACK).payload(10), 40000, 12000);
    let ack = tcp_bytes(&segment(0, false, 7, 110, ACK).window(64), 12000, 40000);
    let capture = pcap(229, &[(0, ipv6(a, b, &data)), (5, ipv6(b, a, &ack))]);
    let g = graph_capture(&capture, None).unwrap().graph;
    assert_eq!(g.sender.to_string(), "[fd00:2::2]:40000");
    // No SYN: the first byte seen is 1.
    assert_eq!(g.segments.len(), 1);
    assert_eq!((g.segments[0].seq, g.segments[0].len), (1, 10));
    assert_eq!(g.acks.len(), 1);
    assert_eq!((g.acks[0].ack, g.acks[0].window_edge), (11, 75));
    assert_eq!(g.window_scaling, WindowScaling::Unknown);
}

#[test]
fn damaged_and_foreign_files_are_errors_not_panics() {
    assert!(matches!(
        graph_capture(b"[package]\nname = 1\n", None),
        Err(GraphError::Pcap(PcapError::UnknownMagic(_)))
    ));
    // A capture with no TCP: one UDP packet.
    let mut udp = ipv4(CLIENT, SERVER, &[0x9c, 0x40, 0x2e, 0xe0, 0, 8, 0, 0]);
    udp[9] = 17;
    assert_eq!(
        graph_capture(&pcap(228, &[(0, udp)]), None),
        Err(GraphError::NoTcp { records: 1 })
    );
    assert_eq!(
        graph_capture(&pcap(228, &[]), Some(0)),
        Err(GraphError::NoTcp { records: 0 })
    );
    // Cut anywhere, and with any byte damaged: an error or a graph, never a panic.
    let whole = capture_v4(&lossy_connection(), 40000);
    for len in 0..whole.len() {
        if let Ok(drawn) = graph_capture(&whole[..len], None) {
            let _ = time_sequence_svg(&drawn.graph, TimeBase::Capture);
        }
    }
    for at in 24..whole.len() {
        let mut damaged = whole.clone();
        damaged[at] ^= 0xff;
        if let Ok(drawn) = graph_capture(&damaged, None) {
            let _ = time_sequence_svg(&drawn.graph, TimeBase::Real);
        }
    }
    // Truncated: the segments before the cut are still drawn.
    let cut = graph_capture(&whole[..whole.len() - 10], None).unwrap();
    assert_eq!(cut.graph.segments.len(), 7);
    assert_eq!(cut.graph.acks.len(), 4);
}

#[test]
fn a_pure_ack_beyond_the_data_seen_and_the_segment_after_a_probe() {
    let segments = vec![
        segment(0, true, 1000, 0, SYN),                     // 1
        segment(1_000, false, 5000, 1001, SYN | ACK),       // 2
        segment(2_000, true, 1001, 5001, ACK).payload(100), // 3
        segment(3_000, true, 1201, 5001, ACK), // 4: pure ACK; 101..201 went out uncaptured
        segment(4_000, true, 1101, 5001, ACK).payload(100), // 5: so this is sent again
        segment(5_000, true, 1201, 5001, ACK).payload(1), // 6: one byte
        segment(6_000, true, 1201, 5001, ACK).payload(100), // 7: that byte again, and 99 new
        segment(7_000, true, 1201, 5001, ACK).payload(50), // 8: below the highest: sent again
    ];
    let g = graph_capture(&capture_v4(&segments, 40000), None)
        .unwrap()
        .graph;
    assert_eq!(g.retransmitted_frames(), [5, 8]);
    assert_eq!(g.segments.len(), 6);
}

/// A capture begun mid-transfer (no SYN): the receiver acknowledges, and the sender resends, data from before
/// the first segment captured. Relative numbers start below all of it, so the resend is a retransmission, the
/// data after it is new, and the axis spans the few KB shown, not 4 GB.
#[test]
fn a_capture_begun_mid_transfer_counts_from_below_its_lowest_number() {
    let segments = vec![
        segment(0, true, 6000, 5001, ACK).payload(1000), // 1: new
        segment(1_000, false, 5001, 1000, ACK).window(8000), // 2: acknowledges data before the capture
        segment(2_000, true, 1000, 5001, ACK).payload(1000), // 3: that data, sent again
        segment(3_000, true, 7000, 5001, ACK).payload(1000), // 4: new
        segment(4_000, true, 8000, 5001, ACK).payload(1000), // 5: new
    ];
    let drawn = graph_capture(&capture_v4(&segments, 40000), None).unwrap();
    let g = &drawn.graph;
    let verdicts: Vec<(usize, u64, SegmentVerdict)> = g
        .segments
        .iter()
        .map(|s| (s.frame, s.seq, s.verdict))
        .collect();
    use SegmentVerdict::*;
    assert_eq!(
        verdicts,
        [
            (1, 5001, New),
            (3, 1, Retransmission),
            (4, 6001, New),
            (5, 7001, New)
        ]
    );
    let axes = GraphAxes::of(g);
    assert!(axes.seq.0 <= 1 && axes.seq.1 < 20_000, "{axes:?}");
}
