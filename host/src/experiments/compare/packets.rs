//! Counting the packets of a run's capture ([`PacketCounts`]): the numbers in the table and the JSON, and what
//! the explanations are built from.

use serde::Serialize;

use crate::experiments::diagram::{packets_from_pcap, LadderPacket, PcapError};

/// Packets of one run, counted from its capture.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PacketCounts {
    /// Every packet captured.
    pub total: usize,
    /// TCP segments opening a connection (SYN without ACK).
    pub syn: usize,
    /// TCP resets.
    pub rst: usize,
    /// TCP segments closing a direction (FIN).
    pub fin: usize,
    /// ICMP port-unreachable errors.
    pub icmp_port_unreachable: usize,
    /// TCP segments sent again.
    pub retransmissions: usize,
    /// UDP datagrams.
    pub udp: usize,
}

/// Counts the packets of a capture.
pub fn count_packets(pcap: &[u8]) -> Result<PacketCounts, PcapError> {
    let packets = packets_from_pcap(pcap)?;
    Ok(count(&packets))
}

fn count(packets: &[LadderPacket]) -> PacketCounts {
    let mut c = PacketCounts {
        total: packets.len(),
        ..PacketCounts::default()
    };
    for p in packets {
        // TCP labels start with the flags: one bare (`SYN seq=…`), several in brackets (`[SYN, ACK] seq=…`).
        let tcp = p.label.contains(" seq=");
        let flags = match p.label.strip_prefix('[') {
            Some(rest) => rest.split(']').next().unwrap_or(""),
            None => p.label.split(' ').next().unwrap_or(""),
        };
        if tcp && flags.contains("SYN") && !flags.contains("ACK") {
            c.syn += 1;
        }
        if tcp && flags.contains("RST") {
            c.rst += 1;
        }
        if tcp && flags.contains("FIN") {
            c.fin += 1;
        }
        if p.label.contains("port unreachable") {
            c.icmp_port_unreachable += 1;
        }
        if p.label.starts_with("UDP") {
            c.udp += 1;
        }
        if p.mark
            .as_deref()
            .is_some_and(|m| m.split(", ").any(|m| m == "retransmission"))
        {
            c.retransmissions += 1;
        }
    }
    c
}
