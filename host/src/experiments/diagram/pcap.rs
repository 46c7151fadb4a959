//! Reading a classic libpcap file: the file header, the link type, and the records, each handed to the
//! [`Decoder`](super::decode::Decoder) for the ladder ([`read_pcap`]) or read for its TCP header alone
//! ([`read_tcp_segments`], for the time-sequence graphs).

use super::decode::{tcp_header_of_frame, Decoder, TcpHeader};
use super::PcapLadder;

pub(super) const LINKTYPE_ETHERNET: u32 = 1;
/// Raw IP, either family (the version nibble says which): what smoltcp's `PcapWriter` writes on TUN.
const LINKTYPE_RAW: u32 = 101;
pub(super) const LINKTYPE_IPV4: u32 = 228;
pub(super) const LINKTYPE_IPV6: u32 = 229;
/// Larger than any snapshot length a capture tool uses (tcpdump's largest is 262144).
const MAX_RECORD: usize = 262_144;

/// Why a file cannot be read as a classic pcap capture at all (damage inside a record is not this: such a
/// record is skipped and counted, see [`PcapLadder::skipped`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PcapError {
    /// Shorter than the 4-byte magic number.
    ShorterThanMagic {
        /// The file's length.
        len: usize,
    },
    /// A pcapng file (magic `0a 0d 0d 0a`), which is not read here.
    Pcapng,
    /// A magic number that is no classic pcap's.
    UnknownMagic([u8; 4]),
    /// Shorter than the 24-byte file header.
    HeaderCutShort {
        /// The file's length.
        len: usize,
    },
    /// A link type other than 1 (Ethernet), 101 (raw IP), 228 (raw IPv4) and 229 (raw IPv6).
    UnsupportedLinkType(u32),
    /// A record whose captured length is more than any capture keeps.
    RecordTooLong {
        /// The record's number, from 1.
        index: usize,
        /// Where its header starts in the file.
        at: usize,
        /// The captured length it claims.
        len: usize,
    },
}

impl std::fmt::Display for PcapError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PcapError::ShorterThanMagic { len } => {
                write!(f, "not a pcap file: {len} bytes, shorter than a magic number")
            }
            PcapError::Pcapng => f.write_str(
                "a pcapng file, not a classic pcap; convert it with `editcap -F pcap IN OUT`",
            ),
            PcapError::UnknownMagic(magic) => write!(f, "not a pcap file: magic number {magic:02x?}"),
            PcapError::HeaderCutShort { len } => write!(
                f,
                "pcap file cut short: {len} bytes, shorter than the 24-byte file header"
            ),
            PcapError::UnsupportedLinkType(link_type) => write!(
                f,
                "pcap link type {link_type} not supported (only 1 Ethernet, 101 raw IP, 228 raw IPv4, \
                 229 raw IPv6)"
            ),
            PcapError::RecordTooLong { index, at, len } => write!(
                f,
                "pcap record {index} at byte {at}: captured length {len} is more than any capture keeps; \
                 the file is damaged or not a pcap file"
            ),
        }
    }
}

impl std::error::Error for PcapError {}

/// One record of a capture, as [`records`] hands it over.
pub(super) struct Record<'a> {
    /// The record's number, from 1: tshark's `frame.number`.
    pub(super) frame: usize,
    /// Seconds since the first record of the capture.
    pub(super) time: f64,
    /// The captured bytes.
    pub(super) data: &'a [u8],
}

/// What [`records`] read: how many records the file holds (one cut off at the end counted) and whether the
/// last was cut off.
pub(super) struct RecordCount {
    pub(super) records: usize,
    pub(super) truncated: bool,
}

/// Walks the records of a classic pcap file, handing each with the file's link type to `each`; a record cut off
/// at the end of the file ends the walk (counted, and said in [`RecordCount::truncated`]).
pub(super) fn records(
    bytes: &[u8],
    mut each: impl FnMut(u32, Record<'_>),
) -> Result<RecordCount, PcapError> {
    let magic: [u8; 4] = bytes
        .get(..4)
        .and_then(|m| m.try_into().ok())
        .ok_or(PcapError::ShorterThanMagic { len: bytes.len() })?;
    let (big_endian, nanos) = match magic {
        [0xd4, 0xc3, 0xb2, 0xa1] => (false, false),
        [0xa1, 0xb2, 0xc3, 0xd4] => (true, false),
        [0x4d, 0x3c, 0xb2, 0xa1] => (false, true),
        [0xa1, 0xb2, 0x3c, 0x4d] => (true, true),
        [0x0a, 0x0d, 0x0d, 0x0a] => return Err(PcapError::Pcapng),
        _ => return Err(PcapError::UnknownMagic(magic)),
    };
    let u32_at = |at: usize| -> Option<u32> {
        let b: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
        Some(if big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        })
    };
    let cut_short = PcapError::HeaderCutShort { len: bytes.len() };
    if bytes.len() < 24 {
        return Err(cut_short);
    }
    let link_type = u32_at(20).ok_or(cut_short)? & 0x0fff_ffff;
    if ![
        LINKTYPE_ETHERNET,
        LINKTYPE_RAW,
        LINKTYPE_IPV4,
        LINKTYPE_IPV6,
    ]
    .contains(&link_type)
    {
        return Err(PcapError::UnsupportedLinkType(link_type));
    }

    let mut count = RecordCount {
        records: 0,
        truncated: false,
    };
    let mut first_time: Option<i128> = None;
    let mut at = 24;
    while at < bytes.len() {
        count.records += 1;
        let index = count.records;
        let (Some(secs), Some(frac), Some(incl_len)) = (u32_at(at), u32_at(at + 4), u32_at(at + 8))
        else {
            count.truncated = true;
            break;
        };
        let incl_len = incl_len as usize;
        if incl_len > MAX_RECORD {
            return Err(PcapError::RecordTooLong {
                index,
                at,
                len: incl_len,
            });
        }
        let start = at + 16;
        let Some(data) = bytes.get(start..start + incl_len) else {
            count.truncated = true;
            break;
        };
        at = start + incl_len;

        // In integer nanoseconds first: an f64 of seconds since 1970 keeps only about 0.2 µs.
        let stamp =
            i128::from(secs) * 1_000_000_000 + i128::from(frac) * if nanos { 1 } else { 1000 };
        let time = (stamp - *first_time.get_or_insert(stamp)) as f64 / 1e9;
        each(
            link_type,
            Record {
                frame: index,
                time,
                data,
            },
        );
    }
    Ok(count)
}

/// Reads a classic pcap file into ladder packets, with the count of skipped records by reason.
pub fn read_pcap(bytes: &[u8]) -> Result<PcapLadder, PcapError> {
    let mut ladder = PcapLadder::default();
    let mut decoder = Decoder::default();
    let count = records(bytes, |link_type, record| {
        match decoder.decode(link_type, record.data, record.time) {
            Ok(packet) => ladder.packets.push(packet),
            Err(reason) => *ladder.skipped.entry(reason.into()).or_default() += 1,
        }
    })?;
    ladder.records = count.records;
    if count.truncated {
        *ladder
            .skipped
            .entry("truncated record at end of file".into())
            .or_default() += 1;
    }
    decoder.finish(&mut ladder.packets);
    Ok(ladder)
}

/// One TCP segment of a capture: where it is in the file, when it was captured, and its header.
#[derive(Debug, Clone, PartialEq)]
pub struct CapturedSegment {
    /// The record's number in the file, from 1: tshark's `frame.number`.
    pub frame: usize,
    /// Seconds since the first record of the capture.
    pub time: f64,
    /// The segment's header fields and options, and its payload length.
    pub header: TcpHeader,
}

/// The TCP segments of a capture, and how many records it holds in all.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TcpCapture {
    /// Every whole TCP segment over IPv4 or IPv6 whose header could be read, in capture order.
    pub segments: Vec<CapturedSegment>,
    /// Records in the file, TCP or not (a record cut off at the end counted).
    pub records: usize,
}

/// Reads the TCP segments of a classic pcap file (the same file format, link types and IP decoding as
/// [`read_pcap`]): every whole segment over IPv4 or IPv6 with a readable header, fragments and damaged
/// headers left out.
pub fn read_tcp_segments(bytes: &[u8]) -> Result<TcpCapture, PcapError> {
    let mut segments = Vec::new();
    let count = records(bytes, |link_type, record| {
        if let Some(header) = tcp_header_of_frame(link_type, record.data) {
            segments.push(CapturedSegment {
                frame: record.frame,
                time: record.time,
                header,
            });
        }
    })?;
    Ok(TcpCapture {
        segments,
        records: count.records,
    })
}
