//! A capture's TCP segments split into streams, numbered as tshark's `tcp.stream` numbers them, and the choice
//! of the stream and direction a graph draws.

use std::collections::HashMap;
use std::net::SocketAddr;

use crate::experiments::diagram::CapturedSegment;

/// One TCP connection of a capture: its segments in both directions, in capture order.
#[derive(Debug, Clone, PartialEq)]
pub struct TcpStream {
    /// Its number, from 0, in order of first appearance: tshark's `tcp.stream`.
    pub index: usize,
    /// The sender of the stream's first captured segment (the client, when the SYN was captured).
    pub first_sender: SocketAddr,
    /// The other end.
    pub first_receiver: SocketAddr,
    /// Its segments, both directions, in capture order.
    pub segments: Vec<CapturedSegment>,
}

/// The two endpoints of a connection in a fixed order, so that both directions find the same stream.
type ConnectionKey = (SocketAddr, SocketAddr);

fn connection_key(segment: &CapturedSegment) -> ConnectionKey {
    let (a, b) = (segment.header.src, segment.header.dst);
    if a <= b {
        (a, b)
    } else {
        (b, a)
    }
}

/// The initial sequence number of a SYN without ACK (a connection's opening), if `segment` is one.
fn opening_isn(segment: &CapturedSegment) -> Option<u32> {
    (segment.header.syn && !segment.header.ack).then_some(segment.header.seq)
}

/// Splits `segments` into streams, numbered in order of first appearance of each pair of endpoints (both
/// directions one stream), as tshark numbers `tcp.stream`. A SYN without ACK on a pair whose stream opened
/// with another initial sequence number is a new connection on the same ports, and starts a new stream (as
/// tshark does for a reused port); a repeated SYN with the same number is a retransmission and does not.
pub fn split_streams(segments: &[CapturedSegment]) -> Vec<TcpStream> {
    let mut streams: Vec<TcpStream> = Vec::new();
    // The stream each pair is in now, and that stream's opening initial sequence number.
    let mut current: HashMap<ConnectionKey, (usize, Option<u32>)> = HashMap::new();
    for segment in segments {
        let key = connection_key(segment);
        let isn = opening_isn(segment);
        let reused = match (current.get(&key), isn) {
            (None, _) => true,
            (Some((_, Some(opened))), Some(isn)) => *opened != isn,
            // A SYN on a pair whose stream's opening was not captured: tshark takes it as a new connection
            // only once the old one has closed; here, only when the stream has seen a SYN of its own.
            (Some(_), _) => false,
        };
        let index = match (reused, current.get_mut(&key)) {
            (false, Some((index, opened))) => {
                if opened.is_none() {
                    *opened = isn;
                }
                *index
            }
            _ => {
                let index = streams.len();
                streams.push(TcpStream {
                    index,
                    first_sender: segment.header.src,
                    first_receiver: segment.header.dst,
                    segments: Vec::new(),
                });
                current.insert(key, (index, isn));
                index
            }
        };
        if let Some(stream) = streams.get_mut(index) {
            stream.segments.push(segment.clone());
        }
    }
    streams
}

impl TcpStream {
    /// The payload bytes `sender` sent in this stream, retransmitted bytes counted again.
    pub fn payload_from(&self, sender: SocketAddr) -> u64 {
        self.segments
            .iter()
            .filter(|s| s.header.src == sender)
            .map(|s| s.header.payload_len as u64)
            .sum()
    }

    /// The payload bytes of both directions.
    pub fn payload(&self) -> u64 {
        self.segments
            .iter()
            .map(|s| s.header.payload_len as u64)
            .sum()
    }

    /// The direction that carried the most payload, as (sender, receiver); the first sender's on a tie.
    pub fn busier_direction(&self) -> (SocketAddr, SocketAddr) {
        let (a, b) = (self.first_sender, self.first_receiver);
        if self.payload_from(b) > self.payload_from(a) {
            (b, a)
        } else {
            (a, b)
        }
    }
}

/// The index of the stream that carried the most payload (both directions); the first on a tie. `None` when
/// there is no stream.
pub fn busiest_stream(streams: &[TcpStream]) -> Option<usize> {
    streams
        .iter()
        .rev()
        .max_by_key(|s| s.payload())
        .map(|s| s.index)
}
