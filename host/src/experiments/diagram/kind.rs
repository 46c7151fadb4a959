//! What a decoded packet is, as data rather than label text: [`PacketKind`], set by the decoders where they
//! write the label, and for TCP the [`Resend`] verdict of the same tracker that sets the `retransmission`
//! marks. `smoltalk compare` counts packets from these (`experiments::compare::count_packets`).

/// What one [`LadderPacket`](super::LadderPacket) is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketKind {
    /// A TCP segment, over IPv4 or IPv6, whose header could be read.
    Tcp(TcpSegment),
    /// A UDP datagram over either family, one whose header is too short to read included, or a fragment of one
    /// (each fragment is one packet: nothing is reassembled).
    Udp,
    /// A port-unreachable error: ICMP destination unreachable code 3 (IPv4), ICMPv6 destination unreachable
    /// code 4 (IPv6).
    PortUnreachable,
    /// Address resolution: an ARP request or reply (IPv4), an NDP neighbor solicitation or advertisement (IPv6),
    /// duplicate address detection's solicitations among them.
    ///
    /// NDP's router solicitations and advertisements and its redirects are not (they find routers, prefixes and
    /// better first hops, not a neighbour's link-layer address), nor is MLD (it joins multicast groups): those
    /// are [`PacketKind::Other`], as is an ARP operation other than request and reply.
    AddressResolution,
    /// Anything else drawn: other ICMP and ICMPv6 messages, NDP router messages and redirects, MLD, fragments of
    /// TCP or ICMP, a TCP or ICMP header too short to read.
    Other,
}

/// The flags of a TCP segment that `compare` counts, and whether it was sent before.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpSegment {
    /// SYN set.
    pub syn: bool,
    /// ACK set.
    pub ack: bool,
    /// FIN set.
    pub fin: bool,
    /// RST set.
    pub rst: bool,
    /// Payload bytes.
    pub payload: u32,
    /// Whether it repeats an earlier segment of its connection.
    pub resend: Resend,
}

impl TcpSegment {
    /// A SYN that opens a connection: SYN without ACK (the answering SYN-ACK is not one).
    pub fn opens_connection(self) -> bool {
        self.syn && !self.ack
    }
}

/// What the retransmission tracker made of a TCP segment (see the module documentation of
/// [`diagram`](super) for the rules).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Resend {
    /// Not a copy: the first segment with its flow and sequence number, or one that occupies no sequence space
    /// (a bare ACK or RST), which is never a copy.
    #[default]
    First,
    /// A copy of a segment the peer had not acknowledged: marked `retransmission` (and the earlier copy
    /// `lost?`).
    Retransmission,
    /// A copy of a segment the peer had already acknowledged: marked `spurious retransmission`; it was not
    /// needed.
    SpuriousRetransmission,
    /// One byte into a window the peer closed: a probe, expected to be refused and sent again; neither a
    /// retransmission nor a copy to look for.
    ZeroWindowProbe,
}
