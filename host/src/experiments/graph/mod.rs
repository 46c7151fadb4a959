//! TCP time-sequence graphs (Stevens and tcptrace's, Wireshark's "TCP Stream Graphs"): one direction of one
//! TCP stream of a capture drawn as sequence number against time, as a standalone SVG image.
//!
//! This module owns the graph: which stream and direction to draw ([`streams`]: streams numbered as tshark's
//! `tcp.stream`), the points taken from the capture ([`model`]: data segments with their retransmission
//! verdicts, the ACK and receive-window lines, SACK blocks, gaps) and the picture (`svg`). The capture is read
//! by the ladder diagrams' reader ([`read_tcp_segments`]), so both pictures see the same packets.
//!
//! # What is drawn
//!
//! - x: seconds since the stream's first packet, on the clock the caller names ([`TimeBase`]): a capture's
//!   own stamps, the lab's virtual clock, or real time.
//! - y: the sender's relative sequence number (its SYN is 0, its first data byte 1).
//! - Each segment that takes sequence space as a vertical bar from its sequence number to the end of what it
//!   carries; a retransmission (it starts below the highest sequence number sent before: sequence space sent
//!   again, a keep-alive not counted) in another colour, a spurious one (all its payload acknowledged
//!   already) in a third.
//! - The receiver's cumulative ACK as a step line, and the right edge of its receive window (ACK plus the
//!   advertised window, scaled when both SYNs carried the window-scale option) as another.
//! - The receiver's SACK blocks as short bars at the time of the ACK that carried them.
//! - Silences longer than [`GAP_THRESHOLD`] (200 ms: retransmission timeouts show so) as light bands, labelled.

pub mod model;
pub mod streams;
mod svg;
#[cfg(test)]
mod tests;

pub use model::{
    AckPoint, DataSegment, Gap, SackMark, SegmentVerdict, TimeSequence, WindowScaling,
    GAP_THRESHOLD,
};
pub use streams::{busiest_stream, split_streams, TcpStream};
pub use svg::{time_sequence_svg, time_sequence_svg_on, GraphAxes};

use crate::experiments::diagram::{read_tcp_segments, PcapError};

/// Which clock a capture's time stamps are on: the graph's x axis says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeBase {
    /// The capture's own stamps, origin unknown (`smoltalk graph` on any file).
    Capture,
    /// The in-process lab's virtual clock: time moves only when a timer is due, so packets sent together share
    /// one stamp.
    LabVirtual,
    /// The host's real clock (captures of the kernel stack, of TUN/TAP devices).
    Real,
}

impl TimeBase {
    /// The axis's name for it.
    pub fn label(self) -> &'static str {
        match self {
            TimeBase::Capture => "capture time",
            TimeBase::LabVirtual => "virtual time (the lab's clock)",
            TimeBase::Real => "real time",
        }
    }
}

/// Why a capture cannot be graphed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GraphError {
    /// The file is not a classic pcap capture that can be read.
    Pcap(PcapError),
    /// The capture holds no TCP segment.
    NoTcp {
        /// Records in the file.
        records: usize,
    },
    /// The stream asked for is not in the capture.
    NoSuchStream {
        /// The index asked for.
        asked: usize,
        /// How many streams there are (indices 0 to `streams - 1`).
        streams: usize,
    },
}

impl std::fmt::Display for GraphError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GraphError::Pcap(e) => write!(f, "{e}"),
            GraphError::NoTcp { records } => {
                write!(f, "no TCP segment in the capture ({records} records)")
            }
            GraphError::NoSuchStream { asked, streams } => write!(
                f,
                "no TCP stream {asked}: the capture has {streams} (0 to {})",
                streams.saturating_sub(1)
            ),
        }
    }
}

impl std::error::Error for GraphError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            GraphError::Pcap(e) => Some(e),
            _ => None,
        }
    }
}

impl From<PcapError> for GraphError {
    fn from(e: PcapError) -> GraphError {
        GraphError::Pcap(e)
    }
}

/// A graph of a capture, with how its stream and direction were chosen.
#[derive(Debug, Clone, PartialEq)]
pub struct CaptureGraph {
    /// The points.
    pub graph: TimeSequence,
    /// How many TCP streams the capture has.
    pub streams: usize,
    /// Whether the stream was chosen as the one that carried the most payload (no stream was asked for).
    pub busiest_chosen: bool,
    /// The payload bytes of the other direction (the one not drawn).
    pub other_direction_payload: u64,
}

/// Which direction of a stream a graph draws.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum GraphDirection {
    /// The one that carried the most payload (the first sender's on a tie).
    #[default]
    Busier,
    /// The other one (a client's requests, say, where the replies were larger).
    Other,
}

/// The graph of stream `stream` (tshark's `tcp.stream`; the one that carried the most payload when `None`) of
/// the capture `bytes`, in the direction that carried the most payload.
pub fn graph_capture(bytes: &[u8], stream: Option<usize>) -> Result<CaptureGraph, GraphError> {
    graph_capture_direction(bytes, stream, GraphDirection::Busier)
}

/// [`graph_capture`], in the direction `direction` says.
pub fn graph_capture_direction(
    bytes: &[u8],
    stream: Option<usize>,
    direction: GraphDirection,
) -> Result<CaptureGraph, GraphError> {
    let capture = read_tcp_segments(bytes)?;
    let streams = split_streams(&capture.segments);
    if streams.is_empty() {
        return Err(GraphError::NoTcp {
            records: capture.records,
        });
    }
    let index = match stream {
        Some(asked) => asked,
        None => busiest_stream(&streams).unwrap_or_default(),
    };
    let chosen = streams.get(index).ok_or(GraphError::NoSuchStream {
        asked: index,
        streams: streams.len(),
    })?;
    let (sender, receiver) = match (chosen.busier_direction(), direction) {
        (busier, GraphDirection::Busier) => busier,
        ((busier, other), GraphDirection::Other) => (other, busier),
    };
    Ok(CaptureGraph {
        graph: TimeSequence::build(chosen, sender),
        streams: streams.len(),
        busiest_chosen: stream.is_none(),
        other_direction_payload: chosen.payload_from(receiver),
    })
}
