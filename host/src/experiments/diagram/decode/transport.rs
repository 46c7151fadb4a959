//! TCP (relative sequence numbers, window scaling, retransmissions and zero-window probes, per connection) and
//! UDP: their labels, kinds and checksum marks; and a TCP header's fields and options as data ([`TcpHeader`]),
//! for the time-sequence graphs.

use std::net::{IpAddr, SocketAddr};

use smoltcp::wire::{IpAddress, IpProtocol, TcpPacket, UdpPacket};

use super::super::{PacketKind, Resend, TcpSegment};
use super::{
    add_mark, AddressPair, Decoder, Described, CORRUPTED, LOST, RETRANSMISSION,
    SPURIOUS_RETRANSMISSION,
};

/// The TCP state of one direction of one connection.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Direction {
    /// The sequence number shown as 0.
    base: Option<u32>,
    /// The window-scale option of this direction's SYN.
    window_scale: Option<u8>,
    /// The last window this direction advertised (scaled).
    window: Option<u32>,
    /// The highest acknowledgement number this direction has sent (raw).
    acked: Option<u32>,
}

/// A TCP segment's header as data: the addresses and ports, the raw sequence and acknowledgement numbers, the
/// flags, the window as sent (unscaled), the options a time-sequence graph needs, and the payload length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpHeader {
    /// The sender's address and port.
    pub src: SocketAddr,
    /// The receiver's address and port.
    pub dst: SocketAddr,
    /// The sequence number, raw (not relative).
    pub seq: u32,
    /// The acknowledgement number, raw; meaningful only with `ack`.
    pub ack_number: u32,
    /// SYN set.
    pub syn: bool,
    /// ACK set.
    pub ack: bool,
    /// FIN set.
    pub fin: bool,
    /// RST set.
    pub rst: bool,
    /// The window field as sent, before any scaling.
    pub window: u16,
    /// The window-scale option's shift (RFC 7323), sent on a SYN.
    pub window_scale: Option<u8>,
    /// The maximum-segment-size option, sent on a SYN.
    pub mss: Option<u16>,
    /// The SACK-permitted option, sent on a SYN.
    pub sack_permitted: bool,
    /// The SACK option's blocks (RFC 2018), raw (left edge, right edge); at most three are read (smoltcp's
    /// option parser keeps three of a rare fourth).
    pub sack_blocks: Vec<(u32, u32)>,
    /// Whether the options could not be parsed (a length that does not fit): then none of them is known.
    pub options_malformed: bool,
    /// The payload's length in bytes.
    pub payload_len: usize,
}

impl TcpHeader {
    /// The header of the TCP segment `data` sent between `addresses`, or `None` when it is too short or its
    /// data offset points outside it.
    pub(super) fn parse(addresses: AddressPair, data: &[u8]) -> Option<TcpHeader> {
        let tcp = TcpPacket::new_checked(data).ok()?;
        let (src, dst): (IpAddr, IpAddr) = match addresses {
            AddressPair::V4 { src, dst } => (src.into(), dst.into()),
            AddressPair::V6 { src, dst } => (src.into(), dst.into()),
        };
        let options = tcp.options_summary();
        let summary = options.unwrap_or_default();
        Some(TcpHeader {
            src: SocketAddr::new(src, tcp.src_port()),
            dst: SocketAddr::new(dst, tcp.dst_port()),
            seq: tcp.seq_number().0 as u32,
            ack_number: tcp.ack_number().0 as u32,
            syn: tcp.syn(),
            ack: tcp.ack(),
            fin: tcp.fin(),
            rst: tcp.rst(),
            window: tcp.window_len(),
            window_scale: summary.window_scale,
            mss: summary.max_segment_size,
            sack_permitted: summary.sack_permitted,
            sack_blocks: summary.sack_ranges.iter().flatten().copied().collect(),
            options_malformed: options.is_err(),
            payload_len: tcp.payload().len(),
        })
    }

    /// The sequence space the segment takes: its payload, and one for SYN and one for FIN.
    pub fn sequence_space(&self) -> u32 {
        self.payload_len as u32 + u32::from(self.syn) + u32::from(self.fin)
    }
}

/// (source, source port, destination, destination port).
pub(super) type FlowKey = (IpAddress, u16, IpAddress, u16);

impl Decoder {
    pub(super) fn tcp(
        &mut self,
        addresses: AddressPair,
        data: &[u8],
        marks: &mut Vec<&'static str>,
    ) -> Described {
        let Ok(tcp) = TcpPacket::new_checked(data) else {
            if !addresses.checksum_ok(IpProtocol::Tcp, data) {
                add_mark(marks, CORRUPTED);
            }
            return Described::other(format!("TCP malformed header ({} bytes)", data.len()));
        };
        let (src, dst) = (addresses.src(), addresses.dst());
        let offloaded = tcp.checksum() == 0 || tcp.verify_partial_checksum(&src, &dst);
        if !tcp.verify_checksum(&src, &dst) && !offloaded {
            add_mark(marks, CORRUPTED);
        }

        let (sport, dport) = (tcp.src_port(), tcp.dst_port());
        let key: FlowKey = (src, sport, dst, dport);
        let reverse: FlowKey = (dst, dport, src, sport);
        let seq = tcp.seq_number().0 as u32;
        let ack = tcp.ack_number().0 as u32;
        let window_scale = tcp.options_summary().ok().and_then(|o| o.window_scale);

        let mut fwd = self.directions.get(&key).copied().unwrap_or_default();
        let mut rev = self.directions.get(&reverse).copied().unwrap_or_default();
        if tcp.syn() {
            if fwd.base.is_some_and(|base| base != seq) {
                // A new connection on the same addresses and ports.
                fwd = Direction::default();
                if !tcp.ack() {
                    rev = Direction::default();
                }
            }
            fwd.base = Some(seq);
            fwd.window_scale = window_scale;
        }
        let fwd_base = *fwd.base.get_or_insert(seq.wrapping_sub(1));
        let shown_ack = if tcp.ack() {
            ack.wrapping_sub(*rev.base.get_or_insert(ack.wrapping_sub(1)))
        } else {
            ack
        };
        let window = u32::from(tcp.window_len());
        let window = match (tcp.syn(), fwd.window_scale, rev.window_scale) {
            (false, Some(shift), Some(_)) => window << shift.min(14),
            _ => window,
        };
        let payload_len = tcp.payload().len();
        // A one-byte segment into a window the peer advertised as zero: a probe (RFC 9293 3.8.6.1) that the
        // peer answers without taking the byte, not data that was lost.
        let zero_window_probe =
            payload_len == 1 && !tcp.syn() && !tcp.fin() && rev.window == Some(0);
        fwd.window = Some(window);
        if tcp.ack()
            && fwd
                .acked
                .is_none_or(|acked| ack.wrapping_sub(acked) as i32 > 0)
        {
            fwd.acked = Some(ack);
        }
        self.directions.insert(key, fwd);
        self.directions.insert(reverse, rev);

        let mut resend = Resend::First;
        if zero_window_probe {
            resend = Resend::ZeroWindowProbe;
        } else if tcp.segment_len() > 0 {
            let index = self.marks.len();
            let end = seq.wrapping_add(tcp.segment_len() as u32);
            if let Some((earlier, earlier_end)) = self.segments.insert((key, seq), (index, end)) {
                if rev
                    .acked
                    .is_some_and(|acked| acked.wrapping_sub(earlier_end) as i32 >= 0)
                {
                    // The peer had acknowledged the earlier one: it arrived, this copy was not needed.
                    resend = Resend::SpuriousRetransmission;
                    add_mark(marks, SPURIOUS_RETRANSMISSION);
                } else {
                    resend = Resend::Retransmission;
                    add_mark(marks, RETRANSMISSION);
                    if let Some(earlier_marks) = self.marks.get_mut(earlier) {
                        add_mark(earlier_marks, LOST);
                    }
                }
            }
        }
        let kind = PacketKind::Tcp(TcpSegment {
            syn: tcp.syn(),
            ack: tcp.ack(),
            fin: tcp.fin(),
            rst: tcp.rst(),
            payload: u32::try_from(payload_len).unwrap_or(u32::MAX),
            resend,
        });

        let flags: Vec<&str> = [
            (tcp.fin(), "FIN"),
            (tcp.syn(), "SYN"),
            (tcp.rst(), "RST"),
            (tcp.psh(), "PSH"),
            (tcp.ack(), "ACK"),
            (tcp.urg(), "URG"),
            (tcp.ece(), "ECE"),
            (tcp.cwr(), "CWR"),
        ]
        .into_iter()
        .filter_map(|(set, name)| set.then_some(name))
        .collect();
        let flags = match flags.as_slice() {
            [] => "<no flags>".to_string(),
            [one] => one.to_string(),
            many => format!("[{}]", many.join(", ")),
        };
        let label = format!(
            "{flags} seq={} ack={shown_ack} len={payload_len} win={window}{} ({sport}→{dport})",
            seq.wrapping_sub(fwd_base),
            if zero_window_probe {
                " zero-window probe"
            } else {
                ""
            }
        );
        Described::new(label, kind).between(Some((sport, dport)))
    }
}

/// A UDP datagram: [`PacketKind::Udp`] whether or not its header can be read.
pub(super) fn udp(addresses: AddressPair, data: &[u8], marks: &mut Vec<&'static str>) -> Described {
    let Ok(udp) = UdpPacket::new_checked(data) else {
        if !addresses.checksum_ok(IpProtocol::Udp, data) {
            add_mark(marks, CORRUPTED);
        }
        let label = format!("UDP malformed header ({} bytes)", data.len());
        return Described::new(label, PacketKind::Udp);
    };
    let (src, dst) = (addresses.src(), addresses.dst());
    // Zero means "no checksum" over IPv4 (smoltcp's `verify_checksum` takes it so); IPv6 does not allow it
    // (RFC 8200 8.1: receivers discard such a datagram).
    let zero_over_ipv6 = udp.checksum() == 0 && matches!(addresses, AddressPair::V6 { .. });
    if zero_over_ipv6
        || !udp.verify_checksum(&src, &dst) && !udp.verify_partial_checksum(&src, &dst)
    {
        add_mark(marks, CORRUPTED);
    }
    let label = format!(
        "UDP {}→{} len={}",
        udp.src_port(),
        udp.dst_port(),
        udp.payload().len()
    );
    Described::new(label, PacketKind::Udp).between(Some((udp.src_port(), udp.dst_port())))
}
