//! What the lab's segment does to the frames on it and counts of them: [`LinkStats`] (frames, bytes, losses,
//! corruptions, TCP retransmissions), [`LinkFaults`] (the losses and bit flips a node's frames suffer), and the
//! retransmission counter behind [`LinkStats::tcp_retransmissions`].

use std::collections::HashMap;

use smoltcp::wire::{
    EthernetFrame, EthernetProtocol, IpProtocol, Ipv4Address, Ipv4Packet, TcpPacket, TcpSeqNumber,
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
    /// Frames delivered with one bit of their IPv4 packet flipped (see [`LinkFaults::corrupt_chance`]).
    pub corrupted: u64,
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
    /// Percent of this node's IPv4 frames that arrive with one bit flipped somewhere in the IPv4 packet (header
    /// or payload), drawn from a stream of its own so that adding corruption does not move the losses. The
    /// receivers verify every checksum (the lab's ports offload none), so a corrupted packet is dropped by the
    /// stack, never taken as data. The Ethernet header and ARP are left alone: a real link's frame check
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

    /// Flips one bit of the IPv4 packet in `frame`, `corrupt_chance` percent of the time; returns whether it
    /// did.
    pub(super) fn maybe_corrupt(&mut self, frame: &mut [u8]) -> bool {
        const ETHERNET_HEADER: usize = 14;
        if self.corrupt_chance == 0 || frame.len() <= ETHERNET_HEADER {
            return false;
        }
        if EthernetFrame::new_checked(&*frame).map(|f| f.ethertype()) != Ok(EthernetProtocol::Ipv4)
        {
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
/// number sent so far; a segment that starts below it repeats what was sent before.
#[derive(Debug, Default)]
pub(super) struct RetransmissionCounter {
    highest: HashMap<(Ipv4Address, u16, Ipv4Address, u16), TcpSeqNumber>,
}

impl RetransmissionCounter {
    /// Whether `frame` is a TCP segment that repeats sequence space its sender sent before.
    pub(super) fn is_retransmission(&mut self, frame: &[u8]) -> bool {
        let Ok(eth) = EthernetFrame::new_checked(frame) else {
            return false;
        };
        if eth.ethertype() != EthernetProtocol::Ipv4 {
            return false;
        }
        let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else {
            return false;
        };
        if ip.next_header() != IpProtocol::Tcp {
            return false;
        }
        let Ok(tcp) = TcpPacket::new_checked(ip.payload()) else {
            return false;
        };
        let len = tcp.segment_len();
        if len == 0 || tcp.rst() {
            return false;
        }
        let key = (ip.src_addr(), tcp.src_port(), ip.dst_addr(), tcp.dst_port());
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
