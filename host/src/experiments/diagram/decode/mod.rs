//! Decoding one captured frame into a [`LadderPacket`]: Ethernet or raw IP, ARP, IPv4 and IPv6 (fragments as
//! they are), TCP with the per-connection state that relative sequence numbers and retransmission marks need,
//! UDP, ICMP and ICMPv6 (with NDP and MLD); the label, the [`PacketKind`] (set where the label is written), and
//! the `corrupted`, `retransmission` and `lost?` marks.
//!
//! This module owns the [`Decoder`], the link layer and the marks; [`ipv4`] IPv4 (with ARP and ICMP), [`ipv6`]
//! IPv6 and its extension headers, [`icmpv6`] ICMPv6, NDP and MLD, [`transport`] TCP and UDP over either.

mod icmpv6;
mod ipv4;
mod ipv6;
mod transport;

use std::collections::HashMap;

use smoltcp::wire::{checksum, EthernetFrame, IpAddress, IpProtocol, Ipv4Address, Ipv6Address};

use super::pcap::{LINKTYPE_ETHERNET, LINKTYPE_IPV4, LINKTYPE_IPV6};
use super::{LadderPacket, PacketKind};
use ipv4::arp;
pub use transport::TcpHeader;
use transport::{Direction, FlowKey};

/// Turns frames into ladder packets, with the TCP state that relative sequence numbers and retransmissions need.
#[derive(Default)]
pub(super) struct Decoder {
    directions: HashMap<FlowKey, Direction>,
    /// Index (in the packets decoded so far) and end (raw sequence number after it) of the last segment seen
    /// with this flow and sequence number.
    segments: HashMap<(FlowKey, u32), (usize, u32)>,
    /// Marks per packet index, applied by `finish`.
    marks: Vec<Vec<&'static str>>,
}

pub(super) const RETRANSMISSION: &str = "retransmission";
const SPURIOUS_RETRANSMISSION: &str = "spurious retransmission";
pub(super) const LOST: &str = "lost?";
pub(super) const CORRUPTED: &str = "corrupted";

/// The source and destination of one IP header, of one family by construction (smoltcp's pseudo-header
/// checksums panic when given a mix).
#[derive(Debug, Clone, Copy)]
pub(super) enum AddressPair {
    V4 { src: Ipv4Address, dst: Ipv4Address },
    V6 { src: Ipv6Address, dst: Ipv6Address },
}

impl AddressPair {
    fn src(self) -> IpAddress {
        match self {
            AddressPair::V4 { src, .. } => IpAddress::Ipv4(src),
            AddressPair::V6 { src, .. } => IpAddress::Ipv6(src),
        }
    }

    fn dst(self) -> IpAddress {
        match self {
            AddressPair::V4 { dst, .. } => IpAddress::Ipv4(dst),
            AddressPair::V6 { dst, .. } => IpAddress::Ipv6(dst),
        }
    }

    /// Whether the checksum of `data` (an upper-layer header and payload) holds over this pair's pseudo-header,
    /// computed directly: also for headers too short for smoltcp's packet types.
    fn checksum_ok(self, protocol: IpProtocol, data: &[u8]) -> bool {
        let len = data.len() as u32;
        let pseudo = match self {
            AddressPair::V4 { src, dst } => checksum::pseudo_header_v4(&src, &dst, protocol, len),
            AddressPair::V6 { src, dst } => checksum::pseudo_header_v6(&src, &dst, protocol, len),
        };
        checksum::combine(&[pseudo, checksum::data(data)]) == !0
    }
}

/// One decoded packet, before `finish` joins its marks.
pub(super) struct Arrow {
    src: String,
    dst: String,
    label: String,
    kind: PacketKind,
    ports: Option<(u16, u16)>,
    marks: Vec<&'static str>,
}

/// What an upper-layer decoder says of a packet: the label and, from the same fields, the kind.
pub(super) struct Described {
    label: String,
    kind: PacketKind,
    ports: Option<(u16, u16)>,
}

impl Described {
    pub(super) fn new(label: String, kind: PacketKind) -> Described {
        Described {
            label,
            kind,
            ports: None,
        }
    }

    /// The same, between (source, destination) ports (see [`LadderPacket::ports`]).
    pub(super) fn between(mut self, ports: Option<(u16, u16)>) -> Described {
        self.ports = ports;
        self
    }

    /// `label` of a packet that is [`PacketKind::Other`].
    pub(super) fn other(label: String) -> Described {
        Described::new(label, PacketKind::Other)
    }
}

impl Arrow {
    pub(super) fn new(
        src: String,
        dst: String,
        described: Described,
        marks: Vec<&'static str>,
    ) -> Arrow {
        Arrow {
            src,
            dst,
            label: described.label,
            kind: described.kind,
            ports: described.ports,
            marks,
        }
    }
}

fn add_mark(marks: &mut Vec<&'static str>, mark: &'static str) {
    if !marks.contains(&mark) {
        marks.push(mark);
    }
}

impl Decoder {
    pub(super) fn decode(
        &mut self,
        link_type: u32,
        data: &[u8],
        time: f64,
    ) -> Result<LadderPacket, &'static str> {
        let arrow = match link_type {
            LINKTYPE_ETHERNET => self.ethernet(data)?,
            LINKTYPE_IPV4 => self.ipv4(data)?,
            LINKTYPE_IPV6 => self.ipv6(data)?,
            // LINKTYPE_RAW: either family, the version nibble says which.
            _ => match data.first().map(|b| b >> 4) {
                Some(4) => self.ipv4(data)?,
                Some(6) => self.ipv6(data)?,
                _ => return Err("not IP"),
            },
        };
        self.marks.push(arrow.marks);
        Ok(LadderPacket {
            time,
            src: arrow.src,
            dst: arrow.dst,
            label: arrow.label,
            kind: arrow.kind,
            ports: arrow.ports,
            mark: None,
        })
    }

    /// Applies the marks gathered while decoding.
    pub(super) fn finish(self, packets: &mut [LadderPacket]) {
        for (packet, marks) in packets.iter_mut().zip(self.marks) {
            if !marks.is_empty() {
                packet.mark = Some(marks.join(", "));
            }
        }
    }

    fn ethernet(&mut self, data: &[u8]) -> Result<Arrow, &'static str> {
        let (ethertype, payload) = ethernet_payload(data)?;
        match ethertype {
            0x0800 => self.ipv4(payload),
            0x0806 => arp(payload)
                .map(|(src, dst, described)| Arrow::new(src, dst, described, Vec::new())),
            0x86dd => self.ipv6(payload),
            _ => Err("other EtherType"),
        }
    }
}

/// The EtherType of an Ethernet frame and its payload, after one 802.1Q tag if there is one.
fn ethernet_payload(data: &[u8]) -> Result<(u16, &[u8]), &'static str> {
    let frame = EthernetFrame::new_checked(data).map_err(|_| "Ethernet frame too short")?;
    let mut ethertype = u16::from(frame.ethertype());
    let mut payload = frame.payload();
    if ethertype == 0x8100 {
        // One 802.1Q tag: the real EtherType follows the tag control field.
        let inner = payload.get(2..4).ok_or("Ethernet frame too short")?;
        ethertype = u16::from_be_bytes([inner[0], inner[1]]);
        payload = payload.get(4..).ok_or("Ethernet frame too short")?;
    }
    Ok((ethertype, payload))
}

/// The TCP header of one frame of link type `link_type`, when the frame holds a whole TCP segment (not a
/// fragment) over IPv4 or IPv6 whose header can be read; `None` for anything else. Checksums are not
/// looked at: the time-sequence graph draws what was on the wire.
pub(super) fn tcp_header_of_frame(link_type: u32, data: &[u8]) -> Option<TcpHeader> {
    let packet = match link_type {
        LINKTYPE_ETHERNET => match ethernet_payload(data).ok()? {
            (0x0800 | 0x86dd, payload) => payload,
            _ => return None,
        },
        _ => data,
    };
    let version = match link_type {
        LINKTYPE_IPV4 => 4,
        LINKTYPE_IPV6 => 6,
        _ => packet.first()? >> 4,
    };
    let (addresses, segment) = match version {
        4 => ipv4::tcp_of_ipv4(packet)?,
        6 => ipv6::tcp_of_ipv6(packet)?,
        _ => return None,
    };
    TcpHeader::parse(addresses, segment)
}
