//! What the lab's segment does to the frames on it and counts of them: [`LinkStats`] (frames, bytes, losses,
//! corruptions, TCP retransmissions), [`LinkFaults`] (the losses and bit flips a node's frames suffer), and the
//! retransmission counter behind [`LinkStats::tcp_retransmissions`].

use std::collections::HashMap;

use smoltcp::wire::{
    EthernetFrame, EthernetProtocol, IpAddress, IpProtocol, Ipv4Packet, Ipv6Packet, TcpPacket,
    TcpSeqNumber,
};

/// What crossed the lab's segment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Frames sent by any node.
    pub frames: u64,
    /// Their bytes, Ethernet headers included.
    pub bytes: u64,
    /// Frames lost on purpose (see [`Lab::set_faults`](super::Lab::set_faults)).
    pub dropped: u64,
    /// Frames delivered with one bit of their IPv4 or IPv6 packet flipped (see [`LinkFaults::corrupt_chance`]).
    pub corrupted: u64,
    /// Frames lost because their sender's link queue was full (a shaped segment only; see
    /// [`LinkQueue`](crate::stack::link_shape::LinkQueue)).
    pub queue_dropped: u64,
    /// TCP segments that carried sequence space their sender had sent before (retransmissions, counted as
    /// they are sent, lost or not; keep-alive probes are not counted).
    pub tcp_retransmissions: u64,
}

/// Frames a node loses on purpose, to play a peer that vanished or a lossy link.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkFaults {
    /// Every frame to this node is lost.
    pub drop_inbound: bool,
    /// Every frame from this node is lost.
    pub drop_outbound: bool,
    /// The next this many frames from this node are lost.
    pub drop_next_outbound: u32,
    /// Every this-many-th frame from this node is lost (0: none), a steady loss rate that spares no phase of
    /// a connection in particular.
    pub drop_every_outbound: u32,
    /// Percent of this node's frames lost at random (seeded by `seed`: the same seed and traffic lose the same
    /// frames).
    pub drop_chance: u8,
    /// Seed of the random losses.
    pub seed: u32,
    /// Frames sent since these faults were set (counts for `drop_every_outbound`).
    pub sent: u32,
    /// Percent of this node's IP frames (IPv4 and IPv6) that arrive with one bit flipped somewhere in the IP
    /// packet (header or payload), drawn from a stream of its own so that adding corruption does not move the
    /// losses. The receivers verify every checksum (the lab's ports offload none), so a corrupted packet is
    /// dropped by the stack, never taken as data. IPv6 has no header checksum, but the TCP, UDP and ICMPv6
    /// checksums cover its addresses, payload length and next header (the pseudo-header); a flip in the three
    /// fields no checksum covers (traffic class, flow label, hop limit) is taken as it came, and changes no
    /// data (an NDP message whose hop limit is no longer 255 is ignored, as a lost one). NDP is ICMPv6 and is
    /// corrupted like any other packet. The Ethernet header and ARP are left alone: a real link's frame check
    /// sequence catches those, and ARP has no checksum of its own to catch them with.
    pub corrupt_chance: u8,
    /// State of the corruption draws (0: start from `seed`).
    pub corrupt_state: u32,
}

impl LinkFaults {
    /// The next random loss decision (xorshift32 over the seed, as smoltcp's FaultInjector draws its faults).
    pub(super) fn random_loss(&mut self) -> bool {
        if self.drop_chance == 0 {
            return false;
        }
        let mut x = if self.seed == 0 { 0x5eed } else { self.seed };
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.seed = x;
        (x % 100) < u32::from(self.drop_chance)
    }

    /// Flips one bit of the IPv4 or IPv6 packet in `frame`, `corrupt_chance` percent of the time; returns
    /// whether it did.
    pub(super) fn maybe_corrupt(&mut self, frame: &mut [u8]) -> bool {
        const ETHERNET_HEADER: usize = 14;
        if self.corrupt_chance == 0 || frame.len() <= ETHERNET_HEADER {
            return false;
        }
        let ethertype = EthernetFrame::new_checked(&*frame).map(|f| f.ethertype());
        if !matches!(
            ethertype,
            Ok(EthernetProtocol::Ipv4 | EthernetProtocol::Ipv6)
        ) {
            return false;
        }
        let mut draw = || {
            let mut x = match self.corrupt_state {
                0 => self.seed.rotate_left(16) ^ 0xc0de_5eed,
                x => x,
            };
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            self.corrupt_state = x;
            x
        };
        if draw() % 100 >= u32::from(self.corrupt_chance) {
            return false;
        }
        let packet = &mut frame[ETHERNET_HEADER..];
        let index = draw() as usize % packet.len();
        let bit = 1u8 << (draw() % 8);
        if let Some(byte) = packet.get_mut(index) {
            *byte ^= bit;
        }
        true
    }
}

/// Counts TCP retransmissions on the segment: for each direction of each connection, the highest sequence
/// number sent so far; a segment that starts below it repeats what was sent before. IPv4 and IPv6 alike.
#[derive(Debug, Default)]
pub(super) struct RetransmissionCounter {
    highest: HashMap<(IpAddress, u16, IpAddress, u16), TcpSeqNumber>,
}

impl RetransmissionCounter {
    /// Whether `frame` is a TCP segment that repeats sequence space its sender sent before.
    pub(super) fn is_retransmission(&mut self, frame: &[u8]) -> bool {
        let Some((src, dst, segment)) = tcp_segment(frame) else {
            return false;
        };
        let Ok(tcp) = TcpPacket::new_checked(segment) else {
            return false;
        };
        let len = tcp.segment_len();
        if len == 0 || tcp.rst() {
            return false;
        }
        let key = (src, tcp.src_port(), dst, tcp.dst_port());
        let start = tcp.seq_number();
        let end = start + len;
        if tcp.syn() {
            // A new connection (or its SYN again): the sequence space starts here.
            let again = self.highest.get(&key) == Some(&end);
            self.highest.insert(key, end);
            return again;
        }
        match self.highest.get_mut(&key) {
            Some(highest) => {
                // A keep-alive probe repeats the last byte sent, on purpose: not a retransmission.
                let keep_alive = len == 1 && end == *highest && tcp.payload().len() == 1;
                let repeated = start < *highest && !keep_alive;
                if end > *highest {
                    *highest = end;
                }
                repeated
            }
            None => {
                self.highest.insert(key, end);
                false
            }
        }
    }
}

/// The source, destination and TCP segment of an Ethernet frame carrying IPv4 or IPv6 TCP (smoltcp puts no
/// extension header before TCP: the segment follows the IPv6 header).
fn tcp_segment(frame: &[u8]) -> Option<(IpAddress, IpAddress, &[u8])> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    let payload: &[u8] = eth.payload();
    let (src, dst, protocol, segment) = match eth.ethertype() {
        EthernetProtocol::Ipv4 => {
            let ip = Ipv4Packet::new_checked(payload).ok()?;
            let (src, dst) = (ip.src_addr().into(), ip.dst_addr().into());
            (src, dst, ip.next_header(), ip.payload())
        }
        EthernetProtocol::Ipv6 => {
            let ip = Ipv6Packet::new_checked(payload).ok()?;
            let (src, dst) = (ip.src_addr().into(), ip.dst_addr().into());
            (src, dst, ip.next_header(), ip.payload())
        }
        _ => return None,
    };
    (protocol == IpProtocol::Tcp).then_some((src, dst, segment))
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::wire::{EthernetAddress, Ipv4Address, Ipv6Address};

    const CLIENT_V6: Ipv6Address = Ipv6Address::new(0xfd00, 2, 0, 0, 0, 0, 0, 2);
    const SERVER_V6: Ipv6Address = Ipv6Address::new(0xfd00, 2, 0, 0, 0, 0, 0, 0x15);

    /// An Ethernet frame with one TCP segment of `payload` bytes at sequence number `seq`, over IPv4 or IPv6.
    fn tcp_frame(ipv6: bool, seq: i32, payload: usize) -> Vec<u8> {
        let ip_header = if ipv6 { 40 } else { 20 };
        let mut frame = vec![0u8; 14 + ip_header + 20 + payload];
        let mut eth = EthernetFrame::new_unchecked(&mut frame[..]);
        eth.set_src_addr(EthernetAddress([2, 0, 0, 0, 0, 2]));
        eth.set_dst_addr(EthernetAddress([2, 0, 0, 0, 0, 1]));
        if ipv6 {
            eth_type(&mut frame, EthernetProtocol::Ipv6);
            let mut packet = Ipv6Packet::new_unchecked(&mut frame[14..]);
            packet.set_version(6);
            packet.set_payload_len((20 + payload) as u16);
            packet.set_next_header(IpProtocol::Tcp);
            packet.set_hop_limit(64);
            packet.set_src_addr(CLIENT_V6);
            packet.set_dst_addr(SERVER_V6);
        } else {
            eth_type(&mut frame, EthernetProtocol::Ipv4);
            let mut packet = Ipv4Packet::new_unchecked(&mut frame[14..]);
            packet.set_version(4);
            packet.set_header_len(20);
            packet.set_total_len((20 + 20 + payload) as u16);
            packet.set_next_header(IpProtocol::Tcp);
            packet.set_hop_limit(64);
            packet.set_src_addr(Ipv4Address::new(10, 0, 2, 2));
            packet.set_dst_addr(Ipv4Address::new(10, 0, 2, 15));
        }
        let mut tcp = TcpPacket::new_unchecked(&mut frame[14 + ip_header..]);
        tcp.set_src_port(50000);
        tcp.set_dst_port(12000);
        tcp.set_seq_number(TcpSeqNumber(seq));
        tcp.set_header_len(20);
        tcp.set_ack(true);
        frame
    }

    fn eth_type(frame: &mut [u8], protocol: EthernetProtocol) {
        EthernetFrame::new_unchecked(frame).set_ethertype(protocol);
    }

    #[test]
    fn an_ipv6_segment_sent_again_is_a_retransmission() {
        for ipv6 in [false, true] {
            let mut counter = RetransmissionCounter::default();
            assert!(!counter.is_retransmission(&tcp_frame(ipv6, 1000, 100)));
            assert!(!counter.is_retransmission(&tcp_frame(ipv6, 1100, 100)));
            assert!(
                counter.is_retransmission(&tcp_frame(ipv6, 1000, 100)),
                "ipv6: {ipv6}"
            );
            // A pure ACK carries no sequence space.
            assert!(!counter.is_retransmission(&tcp_frame(ipv6, 1000, 0)));
        }
        // The two families are different flows: the same ports and sequence numbers repeat nothing.
        let mut counter = RetransmissionCounter::default();
        assert!(!counter.is_retransmission(&tcp_frame(false, 1000, 100)));
        assert!(!counter.is_retransmission(&tcp_frame(true, 1000, 100)));
    }

    #[test]
    fn corruption_flips_one_bit_of_ipv6_packets_and_leaves_arp_alone() {
        let mut faults = LinkFaults {
            corrupt_chance: 100,
            seed: 7,
            ..LinkFaults::default()
        };
        for _ in 0..50 {
            let original = tcp_frame(true, 1000, 64);
            let mut frame = original.clone();
            assert!(faults.maybe_corrupt(&mut frame));
            let flipped: u32 = original
                .iter()
                .zip(&frame)
                .map(|(a, b)| (a ^ b).count_ones())
                .sum();
            assert_eq!(flipped, 1);
            assert_eq!(
                frame[..14],
                original[..14],
                "the Ethernet header is left alone"
            );
        }
        let mut arp = tcp_frame(false, 1000, 28);
        eth_type(&mut arp, EthernetProtocol::Arp);
        let before = arp.clone();
        assert!(!faults.maybe_corrupt(&mut arp));
        assert_eq!(arp, before);
    }
}
