//! Counting the packets of a run's capture ([`PacketCounts`]): the numbers in the table and the JSON, and what
//! the explanations are built from.
//!
//! The capture is read once, by the ladder diagram's decoder ([`packets_from_pcap`], IPv4 and IPv6 alike), and
//! each packet counts by what that decoder says it is ([`PacketKind`], never its label text); a capture it
//! cannot read is its [`PcapError`]. This module owns only the rules of counting:
//!
//! - the total is every packet the decoder reads, one arrow of the diagram each (records it skips, such as other
//!   EtherTypes or a record cut off at the end of the file, are not packets of the run);
//! - a SYN is one without ACK (the answering SYN-ACK is not counted);
//! - a retransmission is a TCP segment the diagram marks `retransmission`: its flow and sequence number were
//!   seen before and the peer had not yet acknowledged the earlier copy (a copy of an acknowledged one is a
//!   spurious retransmission and not counted; a zero-window probe is neither);
//! - every UDP datagram or fragment of one counts as UDP;
//! - address resolution is ARP requests and replies and NDP neighbour solicitations and advertisements, not
//!   NDP's router messages and redirects nor MLD.

use serde::Serialize;

use crate::experiments::diagram::{packets_from_pcap, LadderPacket, PacketKind, PcapError, Resend};

/// Packets of one run, counted from its capture.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PacketCounts {
    /// Every packet of the capture that the diagram's decoder reads: one arrow of the diagram each (a record
    /// it skips, such as a frame too damaged to have addresses, is not counted).
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
    /// TCP segments sent again (spurious copies and zero-window probes not included).
    pub retransmissions: usize,
    /// UDP datagrams (each fragment of a fragmented one).
    pub udp: usize,
}

impl PacketCounts {
    /// These counts with `packet` counted too.
    fn with(mut self, packet: &LadderPacket) -> PacketCounts {
        self.total += 1;
        match packet.kind {
            PacketKind::Tcp(segment) => {
                self.syn += usize::from(segment.opens_connection());
                self.rst += usize::from(segment.rst);
                self.fin += usize::from(segment.fin);
                self.retransmissions += usize::from(segment.resend == Resend::Retransmission);
            }
            PacketKind::Udp => self.udp += 1,
            PacketKind::PortUnreachable => self.icmp_port_unreachable += 1,
            PacketKind::AddressResolution => self.address_resolution += 1,
            PacketKind::Other => {}
        }
        self
    }
}

/// Counts the packets of a classic pcap capture, as the ladder diagram reads them.
pub fn count_packets(pcap: &[u8]) -> Result<PacketCounts, PcapError> {
    Ok(count(&packets_from_pcap(pcap)?))
}

/// Counts decoded packets.
fn count(packets: &[LadderPacket]) -> PacketCounts {
    packets
        .iter()
        .fold(PacketCounts::default(), PacketCounts::with)
}

#[cfg(test)]
mod tests {
    use smoltcp::phy::{PcapLinkType, PcapSink};
    use smoltcp::time::Instant;
    use smoltcp::wire::{IpProtocol, Ipv6Packet, TcpPacket};

    use super::*;
    use crate::experiments::diagram::TcpSegment;
    use crate::lab::checks::{LabClient, UppercaseLab, PORT};
    use crate::lab::IpVersion;
    use crate::stack::instruments::MemoryCapture;
    use crate::stack::network::Network;
    use crate::uppercase::node::{ClientTimeouts, TcpExchange, UdpExchange};

    /// The lab's capture of the client `exchange` makes, run to its end.
    fn lab_capture(exchange: impl FnOnce(&mut UppercaseLab) -> LabClient) -> Vec<u8> {
        let mut lab = UppercaseLab::new();
        let capture = MemoryCapture::default();
        lab.lab.capture_to(lab.client, Box::new(capture.clone()));
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
            count_packets(b"sh"),
            Err(PcapError::ShorterThanMagic { len: 2 })
        );
        let mut cut_short = 0xa1b2_c3d4u32.to_le_bytes().to_vec();
        cut_short.resize(10, 0);
        assert_eq!(
            count_packets(&cut_short),
            Err(PcapError::HeaderCutShort { len: 10 })
        );
        let mut pcapng = vec![0x0a, 0x0d, 0x0d, 0x0a];
        pcapng.resize(40, 0);
        assert!(count_packets(&pcapng)
            .unwrap_err()
            .to_string()
            .starts_with("a pcapng file"));
        assert!(count_packets(b"short")
            .unwrap_err()
            .to_string()
            .starts_with("not a pcap file"));
    }

    fn packet(kind: PacketKind) -> LadderPacket {
        LadderPacket {
            time: 0.0,
            src: "a".into(),
            dst: "b".into(),
            label: String::new(),
            kind,
            ports: None,
            mark: None,
        }
    }

    fn segment(syn: bool, ack: bool, fin: bool, rst: bool, resend: Resend) -> PacketKind {
        PacketKind::Tcp(TcpSegment {
            syn,
            ack,
            fin,
            rst,
            payload: 0,
            resend,
        })
    }

    #[test]
    fn the_rules_of_counting() {
        let (f, t) = (false, true);
        let packets: Vec<LadderPacket> = [
            // SYN, SYN-ACK: one connection opened.
            segment(t, f, f, f, Resend::First),
            segment(t, t, f, f, Resend::First),
            // The SYN again, unanswered: a retransmission (and still a SYN).
            segment(t, f, f, f, Resend::Retransmission),
            // A copy the peer had acknowledged, and a zero-window probe: neither is a retransmission.
            segment(f, t, f, f, Resend::SpuriousRetransmission),
            segment(f, t, f, f, Resend::ZeroWindowProbe),
            segment(f, t, t, f, Resend::First),
            segment(f, t, f, t, Resend::First),
            PacketKind::Udp,
            PacketKind::Udp,
            PacketKind::PortUnreachable,
            PacketKind::AddressResolution,
            PacketKind::Other,
        ]
        .into_iter()
        .map(packet)
        .collect();
        assert_eq!(
            count(&packets),
            PacketCounts {
                total: 12,
                address_resolution: 1,
                syn: 2,
                rst: 1,
                fin: 1,
                icmp_port_unreachable: 1,
                retransmissions: 1,
                udp: 2,
            }
        );
    }
}
