//! Decoding one captured frame into a [`LadderPacket`]: Ethernet, ARP, IPv4 (fragments as they are), TCP with
//! the per-connection state that relative sequence numbers and retransmission marks need, UDP and ICMP; and
//! the `corrupted`, `retransmission` and `lost?` marks.

use std::collections::HashMap;

use smoltcp::wire::{
    checksum, ArpHardware, ArpOperation, ArpPacket, EthernetFrame, Icmpv4Message, Icmpv4Packet,
    IpAddress, IpProtocol, Ipv4Address, Ipv4Packet, TcpPacket, UdpPacket,
};

use super::pcap::LINKTYPE_ETHERNET;
use super::LadderPacket;

/// The TCP state of one direction of one connection.
#[derive(Debug, Default, Clone, Copy)]
struct Direction {
    /// The sequence number shown as 0.
    base: Option<u32>,
    /// The window-scale option of this direction's SYN.
    window_scale: Option<u8>,
    /// The last window this direction advertised (scaled).
    window: Option<u32>,
    /// The highest acknowledgement number this direction has sent (raw).
    acked: Option<u32>,
}

/// (source, source port, destination, destination port).
type FlowKey = (Ipv4Address, u16, Ipv4Address, u16);

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
        let (src, dst, label, marks) = match link_type {
            LINKTYPE_ETHERNET => self.ethernet(data)?,
            _ => match data.first().map(|b| b >> 4) {
                Some(4) => self.ipv4(data)?,
                Some(6) => return Err("IPv6"),
                _ => return Err("not IP"),
            },
        };
        self.marks.push(marks);
        Ok(LadderPacket {
            time,
            src,
            dst,
            label,
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

    fn ethernet(
        &mut self,
        data: &[u8],
    ) -> Result<(String, String, String, Vec<&'static str>), &'static str> {
        let frame = EthernetFrame::new_checked(data).map_err(|_| "Ethernet frame too short")?;
        let mut ethertype = u16::from(frame.ethertype());
        let mut payload = frame.payload();
        if ethertype == 0x8100 {
            // One 802.1Q tag: the real EtherType follows the tag control field.
            let inner = payload.get(2..4).ok_or("Ethernet frame too short")?;
            ethertype = u16::from_be_bytes([inner[0], inner[1]]);
            payload = payload.get(4..).ok_or("Ethernet frame too short")?;
        }
        match ethertype {
            0x0800 => self.ipv4(payload),
            0x0806 => arp(payload).map(|(src, dst, label)| (src, dst, label, Vec::new())),
            0x86dd => Err("IPv6"),
            _ => Err("other EtherType"),
        }
    }

    fn ipv4(
        &mut self,
        data: &[u8],
    ) -> Result<(String, String, String, Vec<&'static str>), &'static str> {
        let ip = Ipv4Packet::new_checked(data).map_err(|_| "malformed or truncated IPv4")?;
        if ip.version() != 4 {
            return Err("malformed or truncated IPv4");
        }
        let (src, dst) = (ip.src_addr(), ip.dst_addr());
        let mut marks = Vec::new();
        if !ip.verify_checksum() {
            add_mark(&mut marks, CORRUPTED);
        }
        let protocol = u8::from(ip.next_header());
        let payload = ip.payload();
        let label = if ip.more_frags() || ip.frag_offset() != 0 {
            fragment_label(&ip, protocol, payload)
        } else {
            match ip.next_header() {
                IpProtocol::Tcp => self.tcp(src, dst, payload, &mut marks),
                IpProtocol::Udp => udp(src, dst, payload, &mut marks),
                IpProtocol::Icmp => icmp(payload, &mut marks),
                _ => return Err("other IPv4 protocol"),
            }
        };
        Ok((src.to_string(), dst.to_string(), label, marks))
    }

    fn tcp(
        &mut self,
        src: Ipv4Address,
        dst: Ipv4Address,
        data: &[u8],
        marks: &mut Vec<&'static str>,
    ) -> String {
        let Ok(tcp) = TcpPacket::new_checked(data) else {
            if !transport_checksum_ok(src, dst, IpProtocol::Tcp, data) {
                add_mark(marks, CORRUPTED);
            }
            return format!("TCP malformed header ({} bytes)", data.len());
        };
        let (ip_src, ip_dst) = (IpAddress::Ipv4(src), IpAddress::Ipv4(dst));
        let offloaded = tcp.checksum() == 0 || tcp.verify_partial_checksum(&ip_src, &ip_dst);
        if !tcp.verify_checksum(&ip_src, &ip_dst) && !offloaded {
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

        if tcp.segment_len() > 0 && !zero_window_probe {
            let index = self.marks.len();
            let end = seq.wrapping_add(tcp.segment_len() as u32);
            if let Some((earlier, earlier_end)) = self.segments.insert((key, seq), (index, end)) {
                if rev
                    .acked
                    .is_some_and(|acked| acked.wrapping_sub(earlier_end) as i32 >= 0)
                {
                    // The peer had acknowledged the earlier one: it arrived, this copy was not needed.
                    add_mark(marks, SPURIOUS_RETRANSMISSION);
                } else {
                    add_mark(marks, RETRANSMISSION);
                    if let Some(earlier_marks) = self.marks.get_mut(earlier) {
                        add_mark(earlier_marks, LOST);
                    }
                }
            }
        }

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
        format!(
            "{flags} seq={} ack={shown_ack} len={payload_len} win={window}{} ({sport}→{dport})",
            seq.wrapping_sub(fwd_base),
            if zero_window_probe {
                " zero-window probe"
            } else {
                ""
            }
        )
    }
}

/// Whether a transport checksum holds, computed directly (for headers too short for smoltcp's packet types).
fn transport_checksum_ok(
    src: Ipv4Address,
    dst: Ipv4Address,
    protocol: IpProtocol,
    data: &[u8],
) -> bool {
    let pseudo = checksum::pseudo_header_v4(&src, &dst, protocol, data.len() as u32);
    checksum::combine(&[pseudo, checksum::data(data)]) == !0
}

fn udp(src: Ipv4Address, dst: Ipv4Address, data: &[u8], marks: &mut Vec<&'static str>) -> String {
    let Ok(udp) = UdpPacket::new_checked(data) else {
        if !transport_checksum_ok(src, dst, IpProtocol::Udp, data) {
            add_mark(marks, CORRUPTED);
        }
        return format!("UDP malformed header ({} bytes)", data.len());
    };
    let (ip_src, ip_dst) = (IpAddress::Ipv4(src), IpAddress::Ipv4(dst));
    if !udp.verify_checksum(&ip_src, &ip_dst) && !udp.verify_partial_checksum(&ip_src, &ip_dst) {
        add_mark(marks, CORRUPTED);
    }
    format!(
        "UDP {}→{} len={}",
        udp.src_port(),
        udp.dst_port(),
        udp.payload().len()
    )
}

fn icmp(data: &[u8], marks: &mut Vec<&'static str>) -> String {
    let Ok(icmp) = Icmpv4Packet::new_checked(data) else {
        if checksum::data(data) != !0 {
            add_mark(marks, CORRUPTED);
        }
        return format!("ICMP malformed header ({} bytes)", data.len());
    };
    if !icmp.verify_checksum() {
        add_mark(marks, CORRUPTED);
    }
    let code = icmp.msg_code();
    match icmp.msg_type() {
        Icmpv4Message::EchoRequest => format!(
            "ICMP echo request id={} seq={}",
            icmp.echo_ident(),
            icmp.echo_seq_no()
        ),
        Icmpv4Message::EchoReply => format!(
            "ICMP echo reply id={} seq={}",
            icmp.echo_ident(),
            icmp.echo_seq_no()
        ),
        Icmpv4Message::DstUnreachable => {
            let what = match code {
                0 => "net unreachable".to_string(),
                1 => "host unreachable".to_string(),
                2 => "protocol unreachable".to_string(),
                3 => "port unreachable".to_string(),
                4 => "fragmentation needed".to_string(),
                13 => "communication prohibited".to_string(),
                _ => format!("destination unreachable code={code}"),
            };
            // The 8-byte header is followed by the offending IPv4 header and the first 8 bytes of its payload.
            format!(
                "ICMP {what}{}",
                quoted_packet(data.get(8..).unwrap_or_default())
            )
        }
        Icmpv4Message::TimeExceeded => match code {
            0 => "ICMP time exceeded (TTL)".to_string(),
            1 => "ICMP time exceeded (reassembly)".to_string(),
            _ => format!("ICMP time exceeded code={code}"),
        },
        other if code == 0 => format!("ICMP {other}"),
        other => format!("ICMP {other} code={code}"),
    }
}

/// ` (UDP 40000→12000)` for the packet an ICMP error quotes, or nothing if it cannot be read.
fn quoted_packet(data: &[u8]) -> String {
    let Some(&version_ihl) = data.first() else {
        return String::new();
    };
    if version_ihl >> 4 != 4 {
        return String::new();
    }
    let header_len = usize::from(version_ihl & 0x0f) * 4;
    let (Some(&protocol), Some(ports)) = (data.get(9), data.get(header_len..header_len + 4)) else {
        return String::new();
    };
    let name = match protocol {
        6 => "TCP",
        17 => "UDP",
        _ => return format!(" (IPv4 protocol {protocol})"),
    };
    let sport = u16::from_be_bytes([ports[0], ports[1]]);
    let dport = u16::from_be_bytes([ports[2], ports[3]]);
    format!(" ({name} {sport}→{dport})")
}

fn fragment_label(ip: &Ipv4Packet<&[u8]>, protocol: u8, payload: &[u8]) -> String {
    let name = match protocol {
        1 => "ICMP".to_string(),
        6 => "TCP".to_string(),
        17 => "UDP".to_string(),
        other => format!("IPv4 protocol {other}"),
    };
    let ports = match (ip.frag_offset(), protocol, payload.get(..4)) {
        (0, 6 | 17, Some(p)) => {
            format!(
                " {}→{}",
                u16::from_be_bytes([p[0], p[1]]),
                u16::from_be_bytes([p[2], p[3]])
            )
        }
        _ => String::new(),
    };
    format!(
        "{name}{ports} fragment id={:#06x} off={} len={}{}",
        ip.ident(),
        ip.frag_offset(),
        payload.len(),
        if ip.more_frags() { " MF" } else { "" }
    )
}

fn arp(data: &[u8]) -> Result<(String, String, String), &'static str> {
    let arp = ArpPacket::new_checked(data).map_err(|_| "malformed ARP")?;
    if arp.hardware_type() != ArpHardware::Ethernet
        || u16::from(arp.protocol_type()) != 0x0800
        || arp.hardware_len() != 6
        || arp.protocol_len() != 4
    {
        return Err("ARP for other than IPv4 over Ethernet");
    }
    let ipv4 = |b: &[u8]| -> String {
        match <[u8; 4]>::try_from(b) {
            Ok(octets) => Ipv4Address::from(octets).to_string(),
            Err(_) => "?".into(),
        }
    };
    let sender = ipv4(arp.source_protocol_addr());
    let target = ipv4(arp.target_protocol_addr());
    let label = match arp.operation() {
        ArpOperation::Request => format!("ARP who-has {target}"),
        ArpOperation::Reply => {
            let mac: Vec<String> = arp
                .source_hardware_addr()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            format!("ARP {sender} is-at {}", mac.join(":"))
        }
        ArpOperation::Unknown(op) => format!("ARP operation {op}"),
    };
    Ok((sender, target, label))
}
