//! Packet ladder diagrams: a pcap capture (such as `smoltalk lab --pcap` or `--pcap` on a TUN/TAP device writes)
//! drawn as the picture of an exchange that textbooks and Wireshark's flow graph show — one vertical lifeline
//! per host, one arrow per packet, time running down the page.
//!
//! [`packets_from_pcap`] reads a classic libpcap file and turns each TCP, UDP and ICMP packet over IPv4, each
//! TCP, UDP and ICMPv6 packet over IPv6 (NDP and MLD included) and each ARP packet into a [`LadderPacket`];
//! [`ladder_svg`] draws them as a standalone SVG image.
//!
//! This module owns the program's one reading of a capture. Besides its label each packet says what it is as
//! data: [`PacketKind`], with the retransmission tracker's verdict for a TCP segment ([`Resend`]), set where the
//! label is written; `smoltalk compare` counts a run's packets from that
//! ([`count_packets`](crate::experiments::compare::count_packets)) rather than reading the capture again.
//! `pcap` reads the file, `decode` the frames, `kind` says what a packet is, `svg` and `style` draw.
//! [`read_tcp_segments`] reads the same files for their TCP headers alone ([`TcpHeader`]: fields and options
//! as data), which the time-sequence graphs (`experiments::graph`) draw from.
//!
//! # What is read
//!
//! - Classic libpcap files in either byte order, with microsecond timestamps (magic `0xa1b2c3d4`) or nanosecond
//!   ones (`0xa1b23c4d`); not pcapng. Link types 1 (Ethernet, with or without one 802.1Q tag; EtherTypes IPv4,
//!   ARP and IPv6), 101 (raw IP, IPv4 or IPv6 by the version nibble: what smoltcp's `PcapWriter` writes on TUN
//!   for both), 228 (raw IPv4) and 229 (raw IPv6).
//! - Hosts are the packets' IPv4 or IPv6 addresses (`10.0.2.15`, `fd00:2::15`, `::` for a sender that has no
//!   address yet).
//! - TCP, over either: `SYN seq=0 ack=0 len=0 win=65535 (40000→12000)` — one flag bare, several as `[SYN, ACK]`,
//!   in Wireshark's order; sequence and acknowledgement numbers relative per direction as Wireshark shows them
//!   (0 for the SYN, so the first data byte is 1; a connection whose SYN was not captured counts from 1); the
//!   window scaled when both SYNs carried the window-scale option; the ports last.
//! - UDP, over either: `UDP 40000→12000 len=5` (payload bytes). ICMP: `ICMP echo request id=1 seq=1`,
//!   `ICMP port unreachable (UDP 40000→12000)`, … ARP: `ARP who-has 10.0.2.15` (from the asker's address to
//!   the asked one), `ARP 10.0.2.15 is-at 02:00:00:00:00:01`.
//! - ICMPv6: `ICMPv6 echo request id=1 seq=1`; the errors with the packet they quote, `ICMPv6 port unreachable
//!   (UDP 40000→12001)` (and the other destination-unreachable codes by name), `ICMPv6 packet too big
//!   mtu=1280 (TCP 40000→12000)`, `ICMPv6 hop limit exceeded (…)`, `ICMPv6 parameter problem (unrecognized
//!   next header) pointer=6 (…)`; other types as `ICMPv6 type 200 code 0`.
//! - NDP: `NDP who-has fd00:2::15` (drawn, like ARP's, from the asker to the address asked about rather than
//!   to the solicited-node group it went to; `(duplicate address detection)` when sent from `::`),
//!   `NDP fd00:2::15 is-at 02:53:00:00:00:15 (solicited, override)` (`advertised` without a link-layer
//!   address), `NDP router solicitation`, `NDP router advertisement lifetime=1800s prefix=fd00:2::/64
//!   mtu=1500`, `NDP redirect fd00:3::1 via fe80::3`; `(malformed options)` when the options do not parse.
//!   MLD: `MLD general query`, `MLD query ff02::…`, `MLD report ff02::1:ff00:15`, `MLD done …`,
//!   `MLDv2 report join ff02::1:ff00:15, leave ff02::fb` (the first three records).
//! - IPv6 extension headers: Hop-by-Hop, Routing and Destination options are skipped over to the upper layer.
//! - Fragments are not reassembled: each is one arrow, `UDP 40000→12000 fragment id=0x561a off=0 len=1480 MF`
//!   for the first, `UDP fragment id=0x561a off=1480 len=1480 MF` for the others; over IPv6 the same from the
//!   Fragment header (`id=0x0000beef`, 32 bits; `len` the bytes after it). An IPv6 atomic fragment (offset 0,
//!   no more fragments) is a whole packet and drawn as one.
//! - Everything else — other IPv4 protocols and IPv6 next headers, other EtherTypes, frames too short or
//!   malformed to have addresses, an IPv6 extension header cut short, and a record cut off at the end of the
//!   file — is *skipped*: [`read_pcap`] returns the count by reason in [`PcapLadder::skipped`], and
//!   [`packets_from_pcap`] logs it (info level) and returns the packets. A TCP, UDP, ICMP or ICMPv6 header
//!   inside a good IP packet that is too short to parse is not skipped but drawn, as `TCP malformed header
//!   (N bytes)`, so that a damaged packet still shows where it went.
//! - A file that is not a classic pcap (wrong magic, pcapng, an unknown link type, a header cut short, a record
//!   length no capture could have) is an `Err`, a [`PcapError`] that says why. Nothing here panics on any input.
//!
//! # Marks
//!
//! - `retransmission`: a TCP segment that occupies sequence space (payload, SYN or FIN) whose source, destination,
//!   ports and sequence number were already seen earlier in the capture. The earlier one is marked `lost?`: the
//!   capture point saw it go, the peer did not acknowledge it in time. If the peer had acknowledged the earlier
//!   one before the copy was sent, the copy is a `spurious retransmission` and the earlier one is not marked.
//!   A zero-window probe (one byte sent while
//!   the peer's last window was 0) is labelled `… zero-window probe (…)` and takes no part in this: the byte is
//!   expected to be refused and sent again. The same verdict is the segment's [`Resend`]. A direction's state
//!   (its acknowledgements, its last window) starts again at a SYN whose sequence number is not the one it
//!   started from (a new connection on the same addresses and ports), and so does the peer's at a SYN without
//!   ACK.
//! - `corrupted`: an IPv4 header, TCP, UDP, ICMP or ICMPv6 checksum that does not verify (smoltcp's
//!   `verify_checksum`; over IPv6 the pseudo-header is IPv6's), and a UDP checksum of zero over IPv6, which
//!   RFC 8200 does not allow (over IPv4 zero means "none"). Checksum offload is not corruption: a TCP or UDP
//!   checksum that holds only the pseudo-header sum (what a kernel with offload hands a TUN/TAP device,
//!   smoltcp's `verify_partial_checksum`) or a TCP checksum left at zero (what smoltcp sends when the device
//!   offloads it) is taken as not filled in yet and not marked.
//!
//! Several marks on one packet are joined with `", "` (`corrupted, lost?`).
//!
//! # The picture
//!
//! See [`ladder_svg`]: at most [`MAX_DRAWN`] packets are drawn, the rest counted in a final note row.

mod decode;
mod fold;
mod kind;
mod lanes;
mod pcap;
mod style;
mod svg;
#[cfg(test)]
mod tests;

pub use decode::TcpHeader;
pub use kind::{PacketKind, Resend, TcpSegment};
pub use pcap::{read_pcap, read_tcp_segments, CapturedSegment, PcapError, TcpCapture};
pub(crate) use style::xml_escape;
pub use svg::ladder_svg;

use std::collections::BTreeMap;

/// One packet of a ladder diagram: an arrow from `src` to `dst`.
#[derive(Debug, Clone, PartialEq)]
pub struct LadderPacket {
    /// Seconds since the first packet of the capture.
    pub time: f64,
    /// The sending host (its IPv4 or IPv6 address, for packets read from a capture).
    pub src: String,
    /// The receiving host.
    pub dst: String,
    /// What the packet is, e.g. `[SYN, ACK] seq=0 ack=1 len=0 win=65535 (12000→40000)`.
    pub label: String,
    /// What the packet is, as data: set from the same fields as `label`.
    pub kind: PacketKind,
    /// The (source, destination) ports of a TCP segment or UDP datagram; for an ICMP or ICMPv6 error, those of
    /// the packet it quotes, turned round (the error goes from the port the packet was sent to back to its
    /// sender). `None` for anything else. The ladder tells endpoints of one address apart by them.
    pub ports: Option<(u16, u16)>,
    /// `retransmission`, `spurious retransmission`, `lost?`, `corrupted` or several of them joined by `", "`;
    /// `None` for an ordinary packet.
    pub mark: Option<String>,
}

/// The packets of a capture and what was left out.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PcapLadder {
    /// The packets drawn, in capture order.
    pub packets: Vec<LadderPacket>,
    /// Records in the file (packets plus skipped records).
    pub records: usize,
    /// Records not turned into packets, counted by reason (`"other IPv6 protocol"`, `"truncated record at end
    /// of file"`, …).
    pub skipped: BTreeMap<String, usize>,
}

impl PcapLadder {
    /// How many records were skipped, for every reason.
    pub fn skipped_total(&self) -> usize {
        self.skipped.values().sum()
    }

    /// The skipped records as one line, e.g. `1 skipped (1 other IPv6 protocol)`; empty when none was.
    pub fn skipped_summary(&self) -> String {
        if self.skipped.is_empty() {
            return String::new();
        }
        let reasons: Vec<String> = self
            .skipped
            .iter()
            .map(|(reason, n)| format!("{n} {reason}"))
            .collect();
        format!("{} skipped ({})", self.skipped_total(), reasons.join(", "))
    }
}

/// The most rows [`ladder_svg`] draws; the packets of the rest are counted in a final note row.
pub const MAX_DRAWN: usize = 400;

/// Reads a classic pcap file into ladder packets; what was skipped is logged at info level
/// (use [`read_pcap`] to have it returned).
pub fn packets_from_pcap(bytes: &[u8]) -> Result<Vec<LadderPacket>, PcapError> {
    let ladder = read_pcap(bytes)?;
    if !ladder.skipped.is_empty() {
        log::info!(
            "pcap: {} of {} records {}",
            ladder.skipped_total(),
            ladder.records,
            ladder.skipped_summary()
        );
    }
    Ok(ladder.packets)
}
