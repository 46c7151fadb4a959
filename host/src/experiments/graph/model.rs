//! The points of one direction's time-sequence graph, taken from the segments of its stream: each data
//! segment with its verdict (new, retransmission, spurious retransmission, zero-window probe), the
//! acknowledgement and receive-window edges the other side sent, its SACK blocks, and the silent gaps.

use std::net::SocketAddr;

use super::streams::TcpStream;
use crate::experiments::diagram::TcpHeader;

/// A silence longer than this between two segments of the stream is marked as a gap (RTO waits show so).
pub const GAP_THRESHOLD: f64 = 0.2;

/// Whether a data segment carries sequence space sent before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentVerdict {
    /// New sequence space; also a keep-alive (which carries none the receiver takes) and the segment after
    /// a one-byte probe that starts with the probe's byte again (it carries new data after it).
    New,
    /// It starts below the highest sequence number sent before: sequence space sent again. tshark's
    /// `tcp.analysis.retransmission` (which includes its fast retransmissions).
    Retransmission,
    /// A retransmission all of whose payload the receiver had already acknowledged: not needed. tshark's
    /// `tcp.analysis.spurious_retransmission` (which it also counts as a retransmission).
    SpuriousRetransmission,
    /// One byte at the next sequence number into a window the receiver closed: a probe, not data sent again
    /// (tshark's `tcp.analysis.window_probe`).
    ZeroWindowProbe,
}

impl SegmentVerdict {
    /// Whether the segment repeats sequence space: a retransmission, spurious or not.
    pub fn is_retransmission(self) -> bool {
        matches!(
            self,
            SegmentVerdict::Retransmission | SegmentVerdict::SpuriousRetransmission
        )
    }
}

/// One segment of the graphed direction that takes sequence space (payload, SYN or FIN): a bar from `seq` to
/// `seq + len` at `time`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DataSegment {
    /// The capture's frame number (tshark's `frame.number`).
    pub frame: usize,
    /// Seconds since the stream's first packet.
    pub time: f64,
    /// Relative sequence number of its start (the sender's SYN is 0, its first data byte 1).
    pub seq: u64,
    /// The sequence space it takes (payload, plus one each for SYN and FIN).
    pub len: u32,
    /// Its payload bytes.
    pub payload_len: u32,
    /// New or sent before.
    pub verdict: SegmentVerdict,
}

/// One acknowledgement from the receiver: where its cumulative ACK and its receive window's right edge stand.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AckPoint {
    /// The capture's frame number.
    pub frame: usize,
    /// Seconds since the stream's first packet.
    pub time: f64,
    /// Relative acknowledgement number (in the sender's sequence space).
    pub ack: u64,
    /// `ack` plus the advertised window (scaled when the SYNs negotiated it).
    pub window_edge: u64,
}

/// One SACK block the receiver reported: the range it holds above (or, a D-SACK, below) its cumulative ACK.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SackMark {
    /// The capture's frame number of the receiver's segment that carried it.
    pub frame: usize,
    /// Seconds since the stream's first packet.
    pub time: f64,
    /// Relative left edge (first byte held).
    pub left: u64,
    /// Relative right edge (one past the last byte held).
    pub right: u64,
}

/// A silence between two segments of the stream (either direction) longer than [`GAP_THRESHOLD`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gap {
    /// Seconds since the stream's first packet, of the last segment before it.
    pub from: f64,
    /// Of the first segment after it.
    pub to: f64,
}

/// How the receive window was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowScaling {
    /// Both SYNs carried the window-scale option: the receiver's windows are shifted by `shift`.
    Negotiated {
        /// The receiver's shift.
        shift: u8,
    },
    /// Both SYNs were captured and at most one carried the option: windows are as sent.
    NotNegotiated,
    /// A SYN was not captured: whether windows are scaled is unknown, and they are drawn as sent.
    Unknown,
}

/// One direction of one TCP stream as a time-sequence graph draws it.
#[derive(Debug, Clone, PartialEq)]
pub struct TimeSequence {
    /// The stream's number (tshark's `tcp.stream`).
    pub stream: usize,
    /// The sender of the data drawn.
    pub sender: SocketAddr,
    /// The receiver, whose ACKs, windows and SACK blocks are drawn.
    pub receiver: SocketAddr,
    /// The capture's time (seconds since its first record) of the stream's first packet: time 0 here.
    pub start: f64,
    /// The sender's segments that take sequence space.
    pub segments: Vec<DataSegment>,
    /// The receiver's segments with ACK set.
    pub acks: Vec<AckPoint>,
    /// The receiver's SACK blocks.
    pub sacks: Vec<SackMark>,
    /// Silences in the stream longer than [`GAP_THRESHOLD`].
    pub gaps: Vec<Gap>,
    /// How the windows were read.
    pub window_scaling: WindowScaling,
    /// The sender's payload bytes, retransmissions counted again.
    pub payload_bytes: u64,
}

/// The sequence state of the sender, for the verdicts.
#[derive(Debug, Default)]
struct SenderState {
    /// One past the highest relative sequence number sent.
    next_seq: Option<u64>,
    /// The receiver's highest relative acknowledgement.
    highest_ack: Option<u64>,
    /// The receiver's last window (scaled).
    receiver_window: Option<u64>,
}

impl SenderState {
    /// A segment without sequence space (a pure ACK) still says how far the sender has sent: one whose number
    /// is beyond the highest seen shows that data went out that the capture did not see (the lab drops a lost
    /// frame before its capture point), and data sent again below it is a retransmission. tshark counts it
    /// so too.
    fn note_sequence_number(&mut self, seq: u64) {
        self.next_seq = Some(self.next_seq.map_or(seq, |next| next.max(seq)));
    }

    fn verdict(&mut self, seq: u64, header: &TcpHeader) -> SegmentVerdict {
        let space = u64::from(header.sequence_space());
        let payload = header.payload_len as u64;
        let plain = !header.syn && !header.fin && !header.rst;
        let Some(next_seq) = self.next_seq else {
            self.next_seq = Some(seq + space);
            return SegmentVerdict::New;
        };
        // A probe into a closed window takes the next byte and is refused: the sender's next sequence
        // number does not move (as tshark keeps it for its window probes).
        if plain && payload == 1 && seq == next_seq && self.receiver_window == Some(0) {
            return SegmentVerdict::ZeroWindowProbe;
        }
        // A keep-alive: at most one byte, one below the next sequence number (RFC 9293 3.8.4).
        let keep_alive = plain && payload <= 1 && seq + 1 == next_seq;
        // More than one byte from one below the next sequence number: the data after a one-byte probe (smoltcp
        // probes a window it takes for closed with the next byte, then sends that byte again with what
        // follows). It adds new data; tshark does not call it a retransmission either.
        let after_probe = payload > 1 && seq + 1 == next_seq;
        self.next_seq = Some(next_seq.max(seq + space));
        if seq >= next_seq || keep_alive || after_probe {
            return SegmentVerdict::New;
        }
        match self.highest_ack {
            Some(acked) if payload > 0 && seq + payload <= acked => {
                SegmentVerdict::SpuriousRetransmission
            }
            _ => SegmentVerdict::Retransmission,
        }
    }
}

/// Relative sequence numbers of one direction: the SYN's number is 0 (or, its SYN not captured, one below
/// the first number seen), as Wireshark shows them. Sequence numbers are read modulo 2^32 from there: a
/// stream that sends more than 4 GiB wraps.
#[derive(Debug, Clone, Copy)]
struct Relative {
    base: u32,
}

impl Relative {
    fn of(&self, raw: u32) -> u64 {
        u64::from(raw.wrapping_sub(self.base))
    }
}

/// The base of relative numbers of `sender` in `stream`: its SYN's number; its SYN not captured (a capture
/// begun mid-transfer), one below the lowest number of its sequence space that the capture shows: its
/// segments', and the receiver's acknowledgements and SACK blocks (an ACK or a resend of data sent before the
/// capture began is below its first segment), compared as TCP compares them (within 2^31 of the first).
fn base_of(stream: &TcpStream, sender: SocketAddr) -> Option<Relative> {
    let mut from_sender = stream.segments.iter().filter(|s| s.header.src == sender);
    if let Some(syn) = from_sender.clone().find(|s| s.header.syn) {
        return Some(Relative {
            base: syn.header.seq,
        });
    }
    let first = from_sender.next()?.header.seq;
    let numbers = stream.segments.iter().flat_map(|s| {
        let h = &s.header;
        let mine = (h.src == sender).then_some(h.seq);
        let acked = (h.src != sender && h.ack).then_some(h.ack_number);
        let sacked = h
            .sack_blocks
            .iter()
            .filter(move |_| h.src != sender)
            .flat_map(|&(left, right)| [left, right]);
        mine.into_iter().chain(acked).chain(sacked)
    });
    let behind = numbers
        .map(|n| n.wrapping_sub(first) as i32)
        .filter(|d| *d < 0)
        .min()
        .unwrap_or(0);
    Some(Relative {
        base: first.wrapping_add(behind as u32).wrapping_sub(1),
    })
}

/// How the receiver's windows are scaled: from the SYNs of both directions.
fn window_scaling(stream: &TcpStream, sender: SocketAddr) -> WindowScaling {
    let syn_of = |who: SocketAddr| {
        stream
            .segments
            .iter()
            .find(|s| s.header.src == who && s.header.syn)
    };
    match (syn_of(sender), syn_of(stream_peer(stream, sender))) {
        (Some(ours), Some(theirs)) => {
            match (ours.header.window_scale, theirs.header.window_scale) {
                (Some(_), Some(shift)) => WindowScaling::Negotiated {
                    shift: shift.min(14),
                },
                _ => WindowScaling::NotNegotiated,
            }
        }
        _ => WindowScaling::Unknown,
    }
}

fn stream_peer(stream: &TcpStream, one: SocketAddr) -> SocketAddr {
    if stream.first_sender == one {
        stream.first_receiver
    } else {
        stream.first_sender
    }
}

impl TimeSequence {
    /// The graph of what `sender` sent in `stream` (one of its two endpoints), with what the other end
    /// acknowledged, advertised and selectively acknowledged.
    pub fn build(stream: &TcpStream, sender: SocketAddr) -> TimeSequence {
        let receiver = stream_peer(stream, sender);
        let start = stream.segments.first().map_or(0.0, |s| s.time);
        let window_scaling = window_scaling(stream, sender);
        let mut graph = TimeSequence {
            stream: stream.index,
            sender,
            receiver,
            start,
            segments: Vec::new(),
            acks: Vec::new(),
            sacks: Vec::new(),
            gaps: Vec::new(),
            window_scaling,
            payload_bytes: stream.payload_from(sender),
        };
        let Some(relative) = base_of(stream, sender) else {
            return graph;
        };
        let mut state = SenderState::default();
        let mut previous_time: Option<f64> = None;
        for segment in &stream.segments {
            let time = segment.time - start;
            if let Some(before) = previous_time.filter(|&before| time - before > GAP_THRESHOLD) {
                graph.gaps.push(Gap {
                    from: before,
                    to: time,
                });
            }
            previous_time = Some(time);
            let header = &segment.header;
            if header.src == sender {
                if header.sequence_space() == 0 {
                    state.note_sequence_number(relative.of(header.seq));
                    continue;
                }
                let seq = relative.of(header.seq);
                let verdict = state.verdict(seq, header);
                graph.segments.push(DataSegment {
                    frame: segment.frame,
                    time,
                    seq,
                    len: header.sequence_space(),
                    payload_len: header.payload_len as u32,
                    verdict,
                });
                continue;
            }
            // The receiver's segment: its ACK, window and SACK blocks, in the sender's sequence space.
            if !header.ack {
                continue;
            }
            let ack = relative.of(header.ack_number);
            let window = match window_scaling {
                WindowScaling::Negotiated { shift } if !header.syn => {
                    u64::from(header.window) << shift
                }
                _ => u64::from(header.window),
            };
            state.highest_ack = Some(state.highest_ack.map_or(ack, |a| a.max(ack)));
            state.receiver_window = Some(window);
            graph.acks.push(AckPoint {
                frame: segment.frame,
                time,
                ack,
                window_edge: ack + window,
            });
            for &(left, right) in &header.sack_blocks {
                graph.sacks.push(SackMark {
                    frame: segment.frame,
                    time,
                    left: relative.of(left),
                    right: relative.of(right),
                });
            }
        }
        graph
    }

    /// The frames of the segments marked as retransmissions (spurious ones included), in capture order.
    pub fn retransmitted_frames(&self) -> Vec<usize> {
        self.segments
            .iter()
            .filter(|s| s.verdict.is_retransmission())
            .map(|s| s.frame)
            .collect()
    }

    /// How many times the cumulative ACK moved up: the steps of the ACK line.
    pub fn ack_advances(&self) -> usize {
        self.acks
            .windows(2)
            .filter(|pair| matches!(pair, [a, b] if b.ack > a.ack))
            .count()
    }

    /// The time of the last point drawn, in seconds since the stream's first packet.
    pub fn duration(&self) -> f64 {
        let last_segment = self.segments.iter().map(|s| s.time);
        let last_ack = self.acks.iter().map(|a| a.time);
        last_segment.chain(last_ack).fold(0.0, f64::max)
    }
}
