//! Counting the packets of a run's capture ([`PacketCounts`]): the numbers in the table and the JSON, and what
//! the explanations are built from.
//!
//! The frames are read here, with smoltcp's wire types, IPv4 and IPv6 alike, rather than from the ladder
//! diagram's labels ([`crate::experiments::diagram`] draws the same captures, and reads IPv4 only for now): an
//! IPv6 run's counts then depend on no text a decoder writes. The rules are the diagram's: a SYN is one without
//! ACK, a retransmission is a TCP segment whose flow and sequence number were seen before and whose earlier
//! copy the peer had not yet acknowledged (a copy of an acknowledged one is spurious and not counted; a
//! zero-window probe is neither), and every UDP datagram or fragment of one counts as UDP.

use std::collections::HashMap;
use std::fmt;

use serde::Serialize;
use smoltcp::wire::{
    EthernetFrame, EthernetProtocol, Icmpv4Message, Icmpv4Packet, Icmpv6Message, Icmpv6Packet,
    IpAddress, IpProtocol, Ipv4Packet, Ipv6Packet, TcpPacket,
};

/// Packets of one run, counted from its capture.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PacketCounts {
    /// Every packet captured.
    pub total: usize,
    /// Address resolution: ARP requests and replies (IPv4), NDP neighbour solicitations and advertisements
    /// (IPv6). Loopback needs none.
    pub address_resolution: usize,
    /// TCP segments opening a connection (SYN without ACK).
    pub syn: usize,
    /// TCP resets.
    pub rst: usize,
    /// TCP segments closing a direction (FIN).
    pub fin: usize,
    /// Port-unreachable errors: ICMP destination unreachable code 3 (IPv4), ICMPv6 destination unreachable
    /// code 4 (IPv6).
    pub icmp_port_unreachable: usize,
    /// TCP segments sent again.
    pub retransmissions: usize,
    /// UDP datagrams (each fragment of a fragmented one).
    pub udp: usize,
}

/// Why a capture cannot be counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaptureError {
    /// Shorter than the 24-byte file header of a classic pcap.
    HeaderCutShort {
        /// The capture's length.
        len: usize,
    },
    /// A magic number that is no classic pcap's.
    NotPcap([u8; 4]),
    /// A link type other than Ethernet (1) and raw IP (101, 228 IPv4, 229 IPv6).
    UnsupportedLinkType(u32),
}

impl fmt::Display for CaptureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CaptureError::HeaderCutShort { len } => write!(
                f,
                "{len} bytes, shorter than the 24-byte header of a pcap file"
            ),
            CaptureError::NotPcap(magic) => write!(f, "not a pcap file: magic number {magic:02x?}"),
            CaptureError::UnsupportedLinkType(link) => write!(
                f,
                "pcap link type {link}: only Ethernet (1) and raw IP (101, 228, 229) are counted"
            ),
        }
    }
}

impl std::error::Error for CaptureError {}

const LINKTYPE_ETHERNET: u32 = 1;
const LINKTYPE_RAW: u32 = 101;
const LINKTYPE_IPV4: u32 = 228;
const LINKTYPE_IPV6: u32 = 229;

/// Counts the packets of a classic pcap capture (a record cut short at the end is left out).
pub fn count_packets(pcap: &[u8]) -> Result<PacketCounts, CaptureError> {
    let header: &[u8; 24] = pcap
        .get(..24)
        .and_then(|h| h.try_into().ok())
        .ok_or(CaptureError::HeaderCutShort { len: pcap.len() })?;
    let magic = [header[0], header[1], header[2], header[3]];
    let big_endian = match magic {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => false,
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => true,
        _ => return Err(CaptureError::NotPcap(magic)),
    };
    let u32_at = |at: usize| -> Option<u32> {
        let b: [u8; 4] = pcap.get(at..at.checked_add(4)?)?.try_into().ok()?;
        Some(match big_endian {
            true => u32::from_be_bytes(b),
            false => u32::from_le_bytes(b),
        })
    };
    let link_type = u32_at(20).unwrap_or(0) & 0x0fff_ffff;
    if ![
        LINKTYPE_ETHERNET,
        LINKTYPE_RAW,
        LINKTYPE_IPV4,
        LINKTYPE_IPV6,
    ]
    .contains(&link_type)
    {
        return Err(CaptureError::UnsupportedLinkType(link_type));
    }
    let mut counter = Counter::default();
    let mut at = 24;
    while let Some(len) = u32_at(at + 8) {
        let start = at + 16;
        let Some(frame) = start
            .checked_add(len as usize)
            .and_then(|end| pcap.get(start..end))
        else {
            break;
        };
        counter.frame(link_type, frame);
        at = start + frame.len();
    }
    Ok(counter.counts)
}

/// (source, source port, destination, destination port).
type Flow = (IpAddress, u16, IpAddress, u16);

/// What one direction of a TCP connection has shown so far.
#[derive(Debug, Default, Clone, Copy)]
struct Direction {
    /// The sequence number of its SYN.
    initial: Option<u32>,
    /// The highest acknowledgement number it has sent.
    acked: Option<u32>,
    /// Whether the last window it advertised was 0.
    window_closed: bool,
}

#[derive(Default)]
struct Counter {
    counts: PacketCounts,
    directions: HashMap<Flow, Direction>,
    /// The end (sequence number after it) of the last segment seen with this flow and sequence number.
    segments: HashMap<(Flow, u32), u32>,
}

impl Counter {
    fn frame(&mut self, link_type: u32, data: &[u8]) {
        self.counts.total += 1;
        let (ethertype, packet) = match link_type {
            LINKTYPE_ETHERNET => match EthernetFrame::new_checked(data) {
                Ok(frame) => (frame.ethertype(), frame.payload()),
                Err(_) => return,
            },
            // Raw IP: the version nibble says which.
            _ => match data.first().map(|b| b >> 4) {
                Some(4) => (EthernetProtocol::Ipv4, data),
                Some(6) => (EthernetProtocol::Ipv6, data),
                _ => return,
            },
        };
        match ethertype {
            EthernetProtocol::Arp => self.counts.address_resolution += 1,
            EthernetProtocol::Ipv4 => self.ipv4(packet),
            EthernetProtocol::Ipv6 => self.ipv6(packet),
            _ => {}
        }
    }

    fn ipv4(&mut self, data: &[u8]) {
        let Ok(ip) = Ipv4Packet::new_checked(data) else {
            return;
        };
        let fragment = ip.more_frags() || ip.frag_offset() != 0;
        let (src, dst) = (
            IpAddress::Ipv4(ip.src_addr()),
            IpAddress::Ipv4(ip.dst_addr()),
        );
        match ip.next_header() {
            IpProtocol::Udp => self.counts.udp += 1,
            IpProtocol::Tcp if !fragment => self.tcp(src, dst, ip.payload()),
            IpProtocol::Icmp if !fragment => {
                let port_unreachable = Icmpv4Packet::new_checked(ip.payload()).is_ok_and(|icmp| {
                    icmp.msg_type() == Icmpv4Message::DstUnreachable && icmp.msg_code() == 3
                });
                self.counts.icmp_port_unreachable += usize::from(port_unreachable);
            }
            _ => {}
        }
    }

    fn ipv6(&mut self, data: &[u8]) {
        let Ok(ip) = Ipv6Packet::new_checked(data) else {
            return;
        };
        let (src, dst) = (
            IpAddress::Ipv6(ip.src_addr()),
            IpAddress::Ipv6(ip.dst_addr()),
        );
        match ip.next_header() {
            IpProtocol::Udp => self.counts.udp += 1,
            // A fragment (of a datagram larger than the path's MTU): its next header says what it carries.
            IpProtocol::Ipv6Frag => {
                let inner = ip.payload().first().copied().map(IpProtocol::from);
                self.counts.udp += usize::from(inner == Some(IpProtocol::Udp));
            }
            IpProtocol::Tcp => self.tcp(src, dst, ip.payload()),
            IpProtocol::Icmpv6 => {
                let Ok(icmp) = Icmpv6Packet::new_checked(ip.payload()) else {
                    return;
                };
                match icmp.msg_type() {
                    Icmpv6Message::DstUnreachable if icmp.msg_code() == 4 => {
                        self.counts.icmp_port_unreachable += 1
                    }
                    Icmpv6Message::NeighborSolicit | Icmpv6Message::NeighborAdvert => {
                        self.counts.address_resolution += 1
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }

    fn tcp(&mut self, src: IpAddress, dst: IpAddress, data: &[u8]) {
        let Ok(tcp) = TcpPacket::new_checked(data) else {
            return;
        };
        let c = &mut self.counts;
        c.syn += usize::from(tcp.syn() && !tcp.ack());
        c.rst += usize::from(tcp.rst());
        c.fin += usize::from(tcp.fin());

        let key: Flow = (src, tcp.src_port(), dst, tcp.dst_port());
        let reverse: Flow = (dst, tcp.dst_port(), src, tcp.src_port());
        let seq = tcp.seq_number().0 as u32;
        let ack = tcp.ack_number().0 as u32;
        let mut fwd = self.directions.get(&key).copied().unwrap_or_default();
        let mut rev = self.directions.get(&reverse).copied().unwrap_or_default();
        if tcp.syn() {
            if fwd.initial.is_some_and(|initial| initial != seq) {
                // A new connection on the same addresses and ports.
                fwd = Direction::default();
                if !tcp.ack() {
                    rev = Direction::default();
                }
            }
            fwd.initial = Some(seq);
        }
        // One byte into a window the peer closed: a probe the peer refuses on purpose, not a loss.
        let zero_window_probe =
            tcp.payload().len() == 1 && !tcp.syn() && !tcp.fin() && rev.window_closed;
        fwd.window_closed = tcp.window_len() == 0;
        if tcp.ack()
            && fwd
                .acked
                .is_none_or(|acked| ack.wrapping_sub(acked) as i32 > 0)
        {
            fwd.acked = Some(ack);
        }
        self.directions.insert(key, fwd);
        self.directions.insert(reverse, rev);

        let len = tcp.segment_len() as u32;
        if len == 0 || zero_window_probe {
            return;
        }
        let end = seq.wrapping_add(len);
        if let Some(earlier_end) = self.segments.insert((key, seq), end) {
            let spurious = rev
                .acked
                .is_some_and(|acked| acked.wrapping_sub(earlier_end) as i32 >= 0);
            self.counts.retransmissions += usize::from(!spurious);
        }
    }
}

#[cfg(test)]
mod tests {
    use smoltcp::phy::{PcapLinkType, PcapSink};
    use smoltcp::time::Instant;

    use super::*;
    use crate::lab::checks::{LabClient, UppercaseLab, PORT};
    use crate::lab::IpVersion;
    use crate::stack::instruments::MemoryCapture;
    use crate::stack::network::Network;
    use crate::uppercase::node::{ClientTimeouts, TcpExchange, UdpExchange};

    /// The lab's capture of the client `exchange` makes, run to its end.
    fn lab_capture(exchange: impl FnOnce(&mut UppercaseLab) -> LabClient) -> Vec<u8> {
        let mut lab = UppercaseLab::new();
        let capture = MemoryCapture::default();
        lab.lab.capture_to(Box::new(capture.clone()));
        let client = exchange(&mut lab);
        let _ = lab.run(&mut [client]).unwrap();
        drop(lab.lab.take_capture());
        capture.bytes()
    }

    fn udp_to_closed_port(version: IpVersion) -> Vec<u8> {
        lab_capture(|lab| {
            let timeouts = ClientTimeouts {
                tries: 1,
                ..ClientTimeouts::default()
            };
            let node = lab.lab.node(lab.client);
            let endpoint = UppercaseLab::endpoint_over(version, PORT + 1);
            LabClient::Udp(
                UdpExchange::with_messages(node, endpoint, timeouts, [b"x".to_vec()]).unwrap(),
            )
        })
    }

    #[test]
    fn a_closed_udp_port_counts_the_same_over_both_families() {
        let expected = PacketCounts {
            total: 4,
            address_resolution: 2,
            icmp_port_unreachable: 1,
            udp: 1,
            ..PacketCounts::default()
        };
        for version in IpVersion::BOTH {
            let counts = count_packets(&udp_to_closed_port(version)).unwrap();
            assert_eq!(counts, expected, "{version}");
        }
    }

    #[test]
    fn an_ipv6_tcp_exchange_counts_its_syn_and_fins() {
        let pcap = lab_capture(|lab| {
            let node = lab.lab.node(lab.client);
            let endpoint = UppercaseLab::endpoint_over(IpVersion::Ipv6, PORT);
            LabClient::Tcp(TcpExchange::with_messages(
                node,
                endpoint,
                ClientTimeouts::default(),
                [b"hello".to_vec()],
            ))
        });
        let counts = count_packets(&pcap).unwrap();
        assert_eq!(
            (
                counts.address_resolution,
                counts.syn,
                counts.fin,
                counts.rst,
                counts.retransmissions
            ),
            (2, 1, 2, 0, 0),
            "{counts:?}"
        );
    }

    #[test]
    fn raw_ipv6_records_are_counted_and_a_segment_sent_twice_is_a_retransmission() {
        // A raw-IP capture, as smoltcp writes on TUN: the same IPv6 TCP segment twice, unacknowledged.
        let mut segment = vec![0u8; 40 + 20 + 5];
        let mut ip = Ipv6Packet::new_unchecked(&mut segment[..]);
        ip.set_version(6);
        ip.set_payload_len(25);
        ip.set_next_header(IpProtocol::Tcp);
        ip.set_hop_limit(64);
        ip.set_src_addr(smoltcp::wire::Ipv6Address::new(
            0xfd00, 2, 0, 0, 0, 0, 0, 0x15,
        ));
        ip.set_dst_addr(smoltcp::wire::Ipv6Address::new(0xfd00, 2, 0, 0, 0, 0, 0, 2));
        let mut tcp = TcpPacket::new_unchecked(&mut segment[40..]);
        tcp.set_src_port(50000);
        tcp.set_dst_port(12000);
        tcp.set_header_len(20);
        tcp.set_ack(true);
        tcp.set_window_len(1000);
        let mut capture = MemoryCapture::default();
        capture.global_header(PcapLinkType::Ip);
        capture.packet(Instant::from_millis(0), &segment);
        capture.packet(Instant::from_millis(200), &segment);
        let counts = count_packets(&capture.bytes()).unwrap();
        assert_eq!((counts.total, counts.retransmissions), (2, 1), "{counts:?}");
    }

    #[test]
    fn what_is_not_a_pcap_says_why() {
        assert_eq!(
            count_packets(b"short"),
            Err(CaptureError::HeaderCutShort { len: 5 })
        );
        let mut pcapng = vec![0x0a, 0x0d, 0x0d, 0x0a];
        pcapng.resize(40, 0);
        assert!(count_packets(&pcapng)
            .unwrap_err()
            .to_string()
            .starts_with("not a pcap file"));
    }
}
