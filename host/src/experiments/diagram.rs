//! Packet ladder diagrams: a pcap capture (such as `smoltalk lab --pcap` or `--pcap` on a TUN/TAP device writes)
//! drawn as the picture of an exchange that textbooks and Wireshark's flow graph show — one vertical lifeline
//! per host, one arrow per packet, time running down the page.
//!
//! [`packets_from_pcap`] reads a classic libpcap file and turns each IPv4 TCP, UDP and ICMP packet and each
//! ARP packet into a [`LadderPacket`]; [`ladder_svg`] draws them as a standalone SVG image.
//!
//! # What is read
//!
//! - Classic libpcap files in either byte order, with microsecond timestamps (magic `0xa1b2c3d4`) or nanosecond
//!   ones (`0xa1b23c4d`); not pcapng. Link types 1 (Ethernet, with or without one 802.1Q tag) and 101/228 (raw
//!   IPv4).
//! - TCP: `SYN seq=0 ack=0 len=0 win=65535 (40000→12000)` — one flag bare, several as `[SYN, ACK]`, in
//!   Wireshark's order; sequence and acknowledgement numbers relative per direction as Wireshark shows them
//!   (0 for the SYN, so the first data byte is 1; a connection whose SYN was not captured counts from 1); the
//!   window scaled when both SYNs carried the window-scale option; the ports last.
//! - UDP: `UDP 40000→12000 len=5` (payload bytes). ICMP: `ICMP echo request id=1 seq=1`,
//!   `ICMP port unreachable (UDP 40000→12000)`, … ARP: `ARP who-has 10.0.2.15` (from the asker's address to
//!   the asked one), `ARP 10.0.2.15 is-at 02:00:00:00:00:01`.
//! - IPv4 fragments are not reassembled: each is one arrow, `UDP 40000→12000 fragment id=0x561a off=0
//!   len=1480 MF` for the first, `UDP fragment id=0x561a off=1480 len=1480 MF` for the others.
//! - Everything else — IPv6, other IPv4 protocols, other EtherTypes, frames too short or malformed to have
//!   addresses, and a record cut off at the end of the file — is *skipped*: [`read_pcap`] returns the count by
//!   reason in [`PcapLadder::skipped`], and [`packets_from_pcap`] logs it (info level) and returns the packets.
//!   A TCP, UDP or ICMP header inside a good IPv4 packet that is too short to parse is not skipped but drawn,
//!   as `TCP malformed header (N bytes)`, so that a damaged packet still shows where it went.
//! - A file that is not a classic pcap (wrong magic, pcapng, an unknown link type, a header cut short, a record
//!   length no capture could have) is an `Err` with the reason. Nothing here panics on any input.
//!
//! # Marks
//!
//! - `retransmission`: a TCP segment that occupies sequence space (payload, SYN or FIN) whose source, destination,
//!   ports and sequence number were already seen earlier in the capture. The earlier one is marked `lost?`: the
//!   capture point saw it go, the peer did not acknowledge it in time. If the peer had acknowledged the earlier
//!   one before the copy was sent, the copy is a `spurious retransmission` and the earlier one is not marked.
//!   A zero-window probe (one byte sent while
//!   the peer's last window was 0) is labelled `… zero-window probe (…)` and takes no part in this: the byte is
//!   expected to be refused and sent again.
//! - `corrupted`: an IPv4 header, TCP, UDP or ICMP checksum that does not verify (smoltcp's `verify_checksum`).
//!   Checksum offload is not corruption: a TCP or UDP checksum that holds only the pseudo-header sum (what a
//!   kernel with offload hands a TUN/TAP device, smoltcp's `verify_partial_checksum`) or a TCP checksum left
//!   at zero (what smoltcp sends when the device offloads it) is taken as not filled in yet and not marked.
//!
//! Several marks on one packet are joined with `", "` (`corrupted, lost?`).
//!
//! # The picture
//!
//! See [`ladder_svg`]: at most [`MAX_DRAWN`] packets are drawn, the rest counted in a final note row.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use smoltcp::wire::{
    checksum, ArpHardware, ArpOperation, ArpPacket, EthernetFrame, Icmpv4Message, Icmpv4Packet,
    IpAddress, IpProtocol, Ipv4Address, Ipv4Packet, TcpPacket, UdpPacket,
};

/// One packet of a ladder diagram: an arrow from `src` to `dst`.
#[derive(Debug, Clone, PartialEq)]
pub struct LadderPacket {
    /// Seconds since the first packet of the capture.
    pub time: f64,
    /// The sending host (its IPv4 address, for packets read from a capture).
    pub src: String,
    /// The receiving host.
    pub dst: String,
    /// What the packet is, e.g. `[SYN, ACK] seq=0 ack=1 len=0 win=65535 (12000→40000)`.
    pub label: String,
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
    /// Records not turned into packets, counted by reason (`"IPv6"`, `"truncated record at end of file"`, …).
    pub skipped: BTreeMap<String, usize>,
}

impl PcapLadder {
    /// How many records were skipped, for every reason.
    pub fn skipped_total(&self) -> usize {
        self.skipped.values().sum()
    }

    /// The skipped records as one line, e.g. `1 skipped (1 IPv6)`; empty when none was.
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

/// The most packets [`ladder_svg`] draws; the rest are counted in a final note row.
pub const MAX_DRAWN: usize = 400;

/// Reads a classic pcap file into ladder packets; what was skipped is logged at info level
/// (use [`read_pcap`] to have it returned).
pub fn packets_from_pcap(bytes: &[u8]) -> Result<Vec<LadderPacket>, String> {
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

const LINKTYPE_ETHERNET: u32 = 1;
const LINKTYPE_RAW: u32 = 101;
const LINKTYPE_IPV4: u32 = 228;
/// Larger than any snapshot length a capture tool uses (tcpdump's largest is 262144).
const MAX_RECORD: usize = 262_144;

/// Reads a classic pcap file into ladder packets, with the count of skipped records by reason.
pub fn read_pcap(bytes: &[u8]) -> Result<PcapLadder, String> {
    let magic = bytes.get(..4).ok_or_else(|| {
        format!(
            "not a pcap file: {} bytes, shorter than a magic number",
            bytes.len()
        )
    })?;
    let (big_endian, nanos) = match magic {
        [0xd4, 0xc3, 0xb2, 0xa1] => (false, false),
        [0xa1, 0xb2, 0xc3, 0xd4] => (true, false),
        [0x4d, 0x3c, 0xb2, 0xa1] => (false, true),
        [0xa1, 0xb2, 0x3c, 0x4d] => (true, true),
        [0x0a, 0x0d, 0x0d, 0x0a] => {
            return Err(
                "a pcapng file, not a classic pcap; convert it with `editcap -F pcap IN OUT`"
                    .into(),
            )
        }
        _ => return Err(format!("not a pcap file: magic number {magic:02x?}")),
    };
    let u32_at = |at: usize| -> Option<u32> {
        let b: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
        Some(if big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        })
    };
    if bytes.len() < 24 {
        return Err(format!(
            "pcap file cut short: {} bytes, shorter than the 24-byte file header",
            bytes.len()
        ));
    }
    let link_type = u32_at(20).ok_or("pcap file header cut short")? & 0x0fff_ffff;
    if ![LINKTYPE_ETHERNET, LINKTYPE_RAW, LINKTYPE_IPV4].contains(&link_type) {
        return Err(format!(
            "pcap link type {link_type} not supported (only 1 Ethernet, 101 and 228 raw IPv4)"
        ));
    }

    let mut ladder = PcapLadder::default();
    let mut decoder = Decoder::default();
    let mut first_time: Option<i128> = None;
    let mut at = 24;
    while at < bytes.len() {
        ladder.records += 1;
        let index = ladder.records;
        let (Some(secs), Some(frac), Some(incl_len)) = (u32_at(at), u32_at(at + 4), u32_at(at + 8))
        else {
            *ladder
                .skipped
                .entry("truncated record at end of file".into())
                .or_default() += 1;
            break;
        };
        let incl_len = incl_len as usize;
        if incl_len > MAX_RECORD {
            return Err(format!(
                "pcap record {index} at byte {at}: captured length {incl_len} is more than any capture keeps; \
                 the file is damaged or not a pcap file"
            ));
        }
        let start = at + 16;
        let Some(data) = bytes.get(start..start + incl_len) else {
            *ladder
                .skipped
                .entry("truncated record at end of file".into())
                .or_default() += 1;
            break;
        };
        at = start + incl_len;

        // In integer nanoseconds first: an f64 of seconds since 1970 keeps only about 0.2 µs.
        let stamp =
            i128::from(secs) * 1_000_000_000 + i128::from(frac) * if nanos { 1 } else { 1000 };
        let time = (stamp - *first_time.get_or_insert(stamp)) as f64 / 1e9;
        match decoder.decode(link_type, data, time) {
            Ok(packet) => ladder.packets.push(packet),
            Err(reason) => *ladder.skipped.entry(reason.into()).or_default() += 1,
        }
    }
    decoder.finish(&mut ladder.packets);
    Ok(ladder)
}

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
struct Decoder {
    directions: HashMap<FlowKey, Direction>,
    /// Index (in the packets decoded so far) and end (raw sequence number after it) of the last segment seen
    /// with this flow and sequence number.
    segments: HashMap<(FlowKey, u32), (usize, u32)>,
    /// Marks per packet index, applied by `finish`.
    marks: Vec<Vec<&'static str>>,
}

const RETRANSMISSION: &str = "retransmission";
const SPURIOUS_RETRANSMISSION: &str = "spurious retransmission";
const LOST: &str = "lost?";
const CORRUPTED: &str = "corrupted";

fn add_mark(marks: &mut Vec<&'static str>, mark: &'static str) {
    if !marks.contains(&mark) {
        marks.push(mark);
    }
}

impl Decoder {
    fn decode(
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
    fn finish(self, packets: &mut [LadderPacket]) {
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

// ---------------------------------------------------------------------------------------------------------------
// The SVG

/// Width of one character of the 12 px monospace font, near enough for every common monospace font.
const CHAR_W: f64 = 7.3;
const ROW_H: f64 = 26.0;
const TITLE_Y: f64 = 24.0;
const HOST_BOX_Y: f64 = 40.0;
const HOST_BOX_H: f64 = 24.0;
const FIRST_ROW_Y: f64 = HOST_BOX_Y + HOST_BOX_H + 34.0;
const MIN_GAP: f64 = 170.0;
const MAX_GAP: f64 = 760.0;
/// How far a packet from a host to itself reaches to the right.
const SELF_STUB: f64 = 36.0;

const COLOR_TCP: &str = "#1f4e79";
const COLOR_UDP: &str = "#2e7d32";
const COLOR_ICMP: &str = "#6a1b9a";
const COLOR_ARP: &str = "#616161";
const COLOR_BAD: &str = "#c62828";
const COLOR_RETRANSMISSION: &str = "#e65100";

/// How a packet is drawn: its colour (also the name of its arrowhead marker) and whether it is dashed.
fn style(packet: &LadderPacket) -> (&'static str, bool) {
    let mark = packet.mark.as_deref().unwrap_or("");
    if mark.contains(LOST) || mark.contains(CORRUPTED) {
        (COLOR_BAD, true)
    } else if mark.contains(RETRANSMISSION) {
        (COLOR_RETRANSMISSION, false)
    } else if packet.label.starts_with("UDP") {
        (COLOR_UDP, false)
    } else if packet.label.starts_with("ICMP") {
        (COLOR_ICMP, false)
    } else if packet.label.starts_with("ARP") {
        (COLOR_ARP, false)
    } else {
        (COLOR_TCP, false)
    }
}

/// The legend: colour, dashed, meaning.
const LEGEND: [(&str, bool, &str); 6] = [
    (COLOR_TCP, false, "TCP"),
    (COLOR_UDP, false, "UDP"),
    (COLOR_ICMP, false, "ICMP"),
    (COLOR_ARP, false, "ARP"),
    (COLOR_RETRANSMISSION, false, "retransmission"),
    (COLOR_BAD, true, "lost? / corrupted"),
];

const MARKER_COLORS: [&str; 6] = [
    COLOR_TCP,
    COLOR_UDP,
    COLOR_ICMP,
    COLOR_ARP,
    COLOR_BAD,
    COLOR_RETRANSMISSION,
];

fn marker_id(color: &str) -> String {
    format!("head-{}", color.trim_start_matches('#'))
}

/// Escapes text for XML content and attribute values; characters XML 1.0 does not allow become U+FFFD.
fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(' '),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// `text` cut to at most `max` characters, with `…` at the end when cut.
fn fit(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
        cut.push('…');
        cut
    }
}

fn time_text(time: f64) -> String {
    format!("{time:.6} s")
}

/// Draws packets as a ladder diagram, a standalone SVG document.
///
/// One lifeline per host (in order of first appearance, the host name in a box on top), one row per packet from
/// top to bottom with its time on the left (`0.000123 s`), and in each row one arrow from the sender's lifeline
/// to the receiver's, its label above it. TCP arrows are blue, UDP green, ICMP purple, ARP grey; packets marked
/// `lost?` or `corrupted` are red and dashed, retransmissions orange, and the mark is written after the label in
/// the same colour. A packet from a host to itself is a short arrow to the right of its lifeline. Labels too long
/// for their arrow are cut with `…`. A legend sits at the bottom.
///
/// Each packet arrow is exactly one `<line class="packet" data-index="N" …/>` element, N its index in `packets`;
/// nothing else has that class. At most [`MAX_DRAWN`] packets are drawn (the first ones) and a final row says
/// `… N more packets`, so the number of arrows is `min(packets.len(), MAX_DRAWN)`. All text is XML-escaped.
pub fn ladder_svg(title: &str, packets: &[LadderPacket]) -> String {
    let drawn = &packets[..packets.len().min(MAX_DRAWN)];
    let hidden = packets.len() - drawn.len();

    let mut hosts: Vec<&str> = Vec::new();
    for packet in drawn {
        for host in [packet.src.as_str(), packet.dst.as_str()] {
            if !hosts.contains(&host) {
                hosts.push(host);
            }
        }
    }
    let column = |host: &str| hosts.iter().position(|h| *h == host).unwrap_or(0);
    let full_label = |packet: &LadderPacket| match &packet.mark {
        Some(mark) => format!("{}  {mark}", packet.label),
        None => packet.label.clone(),
    };
    let text_px = |chars: usize| chars as f64 * CHAR_W;

    // Spacing: the widest label between neighbouring lifelines decides, within bounds.
    let mut gap = MIN_GAP;
    for packet in drawn {
        let span = column(&packet.src).abs_diff(column(&packet.dst));
        if span > 0 {
            let need = (text_px(full_label(packet).chars().count()) + 24.0) / span as f64;
            gap = gap.max(need.min(MAX_GAP));
        }
    }
    let longest_host = hosts.iter().map(|h| h.chars().count()).max().unwrap_or(0);
    let host_box_w = text_px(longest_host) + 20.0;
    let time_w = drawn
        .iter()
        .map(|p| time_text(p.time).chars().count())
        .max()
        .unwrap_or(10);
    let time_col = text_px(time_w) + 24.0;
    let first_x = time_col + (host_box_w / 2.0).max(30.0) + 10.0;
    let x_of = |col: usize| first_x + gap * col as f64;

    // Rightmost extent: host boxes, arrows to self and their labels, the notes.
    let mut right = x_of(hosts.len().saturating_sub(1)) + host_box_w / 2.0;
    for packet in drawn.iter().filter(|p| p.src == p.dst) {
        let x = x_of(column(&packet.src));
        right =
            right.max(x + SELF_STUB + 8.0 + text_px(full_label(packet).chars().count().min(80)));
    }
    let legend_w: f64 = LEGEND
        .iter()
        .map(|(_, _, name)| 48.0 + text_px(name.len()))
        .sum();
    right = right
        .max(16.0 + legend_w)
        .max(16.0 + text_px(title.chars().count().max(40)) * 15.0 / 12.0);
    let width = (right + 24.0).ceil();

    let rows = drawn.len() + usize::from(hidden > 0);
    let bottom_line = FIRST_ROW_Y + ROW_H * rows.max(1) as f64 - ROW_H / 2.0;
    let legend_y = bottom_line + 30.0;
    let height = (legend_y + 20.0).ceil();

    let mut svg = String::with_capacity(600 + drawn.len() * 420);
    let _ = writeln!(svg, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="DejaVu Sans Mono, Menlo, Consolas, monospace" font-size="12">"#
    );
    let _ = writeln!(svg, "<title>{}</title>", xml_escape(title));
    svg.push_str("<defs>\n");
    for color in MARKER_COLORS {
        let _ = writeln!(
            svg,
            r#"<marker id="{}" viewBox="0 0 10 10" refX="10" refY="5" markerUnits="userSpaceOnUse" markerWidth="10" markerHeight="9" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="{color}"/></marker>"#,
            marker_id(color)
        );
    }
    svg.push_str("</defs>\n");
    let _ = writeln!(
        svg,
        r#"<rect x="0" y="0" width="{width}" height="{height}" fill="white"/>"#
    );
    let _ = writeln!(
        svg,
        r##"<text x="16" y="{TITLE_Y}" font-size="15" font-weight="bold" fill="#111">{}</text>"##,
        xml_escape(title)
    );

    // Zebra stripes, so a row's time and its arrow are easy to match across a wide picture.
    for i in (1..rows).step_by(2) {
        let y = FIRST_ROW_Y + ROW_H * i as f64 - ROW_H / 2.0 - 4.0;
        let _ = writeln!(
            svg,
            r##"<rect x="0" y="{y}" width="{width}" height="{ROW_H}" fill="#f4f6fa"/>"##
        );
    }

    // Lifelines and host names.
    for (i, host) in hosts.iter().enumerate() {
        let x = x_of(i);
        let _ = writeln!(
            svg,
            r##"<line class="lifeline" x1="{x}" y1="{}" x2="{x}" y2="{bottom_line}" stroke="#9e9e9e" stroke-width="1" stroke-dasharray="4 3"/>"##,
            HOST_BOX_Y + HOST_BOX_H
        );
        let _ = writeln!(
            svg,
            r##"<rect x="{}" y="{HOST_BOX_Y}" width="{host_box_w}" height="{HOST_BOX_H}" rx="4" fill="#eceff1" stroke="#607d8b"/>"##,
            x - host_box_w / 2.0
        );
        let _ = writeln!(
            svg,
            r##"<text class="host" x="{x}" y="{}" text-anchor="middle" font-weight="bold" fill="#263238">{}</text>"##,
            HOST_BOX_Y + 16.5,
            xml_escape(host)
        );
    }
    if drawn.is_empty() {
        let _ = writeln!(
            svg,
            r##"<text x="16" y="{FIRST_ROW_Y}" fill="#555">no packets</text>"##
        );
    }

    // The packets.
    for (index, packet) in drawn.iter().enumerate() {
        let y = FIRST_ROW_Y + ROW_H * index as f64;
        let (color, dashed) = style(packet);
        let (from, to) = (column(&packet.src), column(&packet.dst));
        let (x1, x2) = (x_of(from), x_of(to));
        let _ = writeln!(
            svg,
            r##"<text class="time" x="{}" y="{}" text-anchor="end" fill="#555">{}</text>"##,
            time_col - 8.0,
            y + 4.0,
            xml_escape(&time_text(packet.time))
        );
        let (line_x2, label_x, anchor, max_chars) = if from == to {
            (x1 + SELF_STUB, x1 + SELF_STUB + 8.0, "start", 80)
        } else {
            let room = (x2 - x1).abs() - 16.0;
            (
                (x1 + x2) / 2.0,
                (x1 + x2) / 2.0,
                "middle",
                (room / CHAR_W).floor().max(4.0) as usize,
            )
        };
        let line_x2 = if from == to {
            line_x2
        } else {
            x2 + if x2 > x1 { -1.5 } else { 1.5 }
        };
        let _ = writeln!(
            svg,
            r#"<line class="packet" data-index="{index}" x1="{x1}" y1="{y}" x2="{line_x2}" y2="{y}" stroke="{color}" stroke-width="{}"{} marker-end="url(#{})"/>"#,
            if packet.mark.is_some() { 2.0 } else { 1.5 },
            if dashed {
                r#" stroke-dasharray="6 4""#
            } else {
                ""
            },
            marker_id(color)
        );

        // The label (and mark) above the arrow, with a white halo so lifelines do not cross the letters.
        let label_y = if from == to { y + 4.0 } else { y - 6.0 };
        let mark_len = packet.mark.as_ref().map_or(0, |m| m.chars().count() + 2);
        let label = fit(&packet.label, max_chars.saturating_sub(mark_len).max(4));
        let _ = write!(
            svg,
            r##"<text class="label" x="{label_x}" y="{label_y}" text-anchor="{anchor}" fill="#212121" stroke="white" stroke-width="3" paint-order="stroke">{}"##,
            xml_escape(&label)
        );
        if let Some(mark) = &packet.mark {
            let _ = write!(
                svg,
                r#"<tspan fill="{color}" font-weight="bold">  {}</tspan>"#,
                xml_escape(mark)
            );
        }
        svg.push_str("</text>\n");
    }
    if hidden > 0 {
        let y = FIRST_ROW_Y + ROW_H * drawn.len() as f64;
        let _ = writeln!(
            svg,
            r##"<text class="note" x="{}" y="{}" font-style="italic" fill="#555">… {hidden} more packet{} (only the first {MAX_DRAWN} are drawn)</text>"##,
            time_col - 8.0 - text_px(time_w),
            y + 4.0,
            if hidden == 1 { "" } else { "s" }
        );
    }

    // Legend.
    let mut x = 16.0;
    for (color, dashed, name) in LEGEND {
        let _ = writeln!(
            svg,
            r#"<line class="legend" x1="{x}" y1="{}" x2="{}" y2="{}" stroke="{color}" stroke-width="2"{}/>"#,
            legend_y - 4.0,
            x + 24.0,
            legend_y - 4.0,
            if dashed {
                r#" stroke-dasharray="6 4""#
            } else {
                ""
            }
        );
        let _ = writeln!(
            svg,
            r##"<text x="{}" y="{legend_y}" fill="#424242">{name}</text>"##,
            x + 30.0
        );
        x += 30.0 + text_px(name.len()) + 18.0;
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT: [u8; 4] = [10, 0, 2, 2];
    const SERVER: [u8; 4] = [10, 0, 2, 15];
    const FIN: u8 = 0x01;
    const SYN: u8 = 0x02;
    const RST: u8 = 0x04;
    const PSH: u8 = 0x08;
    const ACK: u8 = 0x10;

    // ---- Packets, built byte by byte (independently of smoltcp's emitters) ----

    /// The RFC 1071 sum of the concatenated parts (not complemented).
    fn sum16(parts: &[&[u8]]) -> u16 {
        let bytes: Vec<u8> = parts.concat();
        let mut sum: u32 = 0;
        for pair in bytes.chunks(2) {
            let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
            sum += u32::from(word);
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        sum as u16
    }

    fn pseudo(src: [u8; 4], dst: [u8; 4], protocol: u8, len: usize) -> Vec<u8> {
        let mut p = Vec::new();
        p.extend_from_slice(&src);
        p.extend_from_slice(&dst);
        p.extend_from_slice(&[0, protocol]);
        p.extend_from_slice(&(len as u16).to_be_bytes());
        p
    }

    /// An IPv4 packet (DF, TTL 64, the header checksum filled in).
    fn ipv4_with(
        src: [u8; 4],
        dst: [u8; 4],
        protocol: u8,
        ident: u16,
        flags_offset: u16,
        payload: &[u8],
    ) -> Vec<u8> {
        let mut p = vec![0x45, 0];
        p.extend_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
        p.extend_from_slice(&ident.to_be_bytes());
        p.extend_from_slice(&flags_offset.to_be_bytes());
        p.extend_from_slice(&[64, protocol, 0, 0]);
        p.extend_from_slice(&src);
        p.extend_from_slice(&dst);
        let sum = !sum16(&[&p]);
        p[10..12].copy_from_slice(&sum.to_be_bytes());
        p.extend_from_slice(payload);
        p
    }

    fn ipv4(src: [u8; 4], dst: [u8; 4], protocol: u8, payload: &[u8]) -> Vec<u8> {
        ipv4_with(src, dst, protocol, 1, 0x4000, payload)
    }

    #[derive(Clone, Copy)]
    struct Seg<'a> {
        src: [u8; 4],
        dst: [u8; 4],
        sport: u16,
        dport: u16,
        seq: u32,
        ack: u32,
        flags: u8,
        win: u16,
        options: &'a [u8],
        payload: &'a [u8],
    }

    /// The TCP segment alone, checksum filled in.
    fn tcp_segment(s: &Seg) -> Vec<u8> {
        assert_eq!(s.options.len() % 4, 0);
        let mut t = Vec::new();
        t.extend_from_slice(&s.sport.to_be_bytes());
        t.extend_from_slice(&s.dport.to_be_bytes());
        t.extend_from_slice(&s.seq.to_be_bytes());
        t.extend_from_slice(&s.ack.to_be_bytes());
        t.push((((20 + s.options.len()) / 4) as u8) << 4);
        t.push(s.flags);
        t.extend_from_slice(&s.win.to_be_bytes());
        t.extend_from_slice(&[0, 0, 0, 0]);
        t.extend_from_slice(s.options);
        t.extend_from_slice(s.payload);
        let sum = !sum16(&[&pseudo(s.src, s.dst, 6, t.len()), &t]);
        t[16..18].copy_from_slice(&sum.to_be_bytes());
        t
    }

    fn tcp(s: &Seg) -> Vec<u8> {
        ipv4(s.src, s.dst, 6, &tcp_segment(s))
    }

    fn udp_datagram(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        let mut u = Vec::new();
        u.extend_from_slice(&sport.to_be_bytes());
        u.extend_from_slice(&dport.to_be_bytes());
        u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        u.extend_from_slice(&[0, 0]);
        u.extend_from_slice(payload);
        let sum = !sum16(&[&pseudo(src, dst, 17, u.len()), &u]);
        u[6..8].copy_from_slice(&(if sum == 0 { 0xffff } else { sum }).to_be_bytes());
        u
    }

    fn udp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        ipv4(src, dst, 17, &udp_datagram(src, dst, sport, dport, payload))
    }

    fn icmp(src: [u8; 4], dst: [u8; 4], kind: u8, code: u8, rest: [u8; 4], data: &[u8]) -> Vec<u8> {
        let mut m = vec![kind, code, 0, 0];
        m.extend_from_slice(&rest);
        m.extend_from_slice(data);
        let sum = !sum16(&[&m]);
        m[2..4].copy_from_slice(&sum.to_be_bytes());
        ipv4(src, dst, 1, &m)
    }

    const CLIENT_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];
    const SERVER_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];

    fn ethernet(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&dst);
        f.extend_from_slice(&src);
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(payload);
        // Pad to the Ethernet minimum, as a real frame is: the padding must not confuse the IPv4 length.
        f.resize(f.len().max(60), 0);
        f
    }

    fn arp(op: u16, sha: [u8; 6], spa: [u8; 4], tha: [u8; 6], tpa: [u8; 4]) -> Vec<u8> {
        let mut a = vec![0, 1, 8, 0, 6, 4];
        a.extend_from_slice(&op.to_be_bytes());
        a.extend_from_slice(&sha);
        a.extend_from_slice(&spa);
        a.extend_from_slice(&tha);
        a.extend_from_slice(&tpa);
        a
    }

    /// A classic pcap file: microsecond timestamps, the given byte order and link type.
    fn pcap(link_type: u32, big_endian: bool, records: &[(u32, u32, Vec<u8>)]) -> Vec<u8> {
        let u32b = |v: u32| {
            if big_endian {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let u16b = |v: u16| {
            if big_endian {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let mut f = Vec::new();
        f.extend_from_slice(&u32b(0xa1b2_c3d4));
        f.extend_from_slice(&u16b(2));
        f.extend_from_slice(&u16b(4));
        f.extend_from_slice(&u32b(0)); // thiszone
        f.extend_from_slice(&u32b(0)); // sigfigs
        f.extend_from_slice(&u32b(65535)); // snaplen
        f.extend_from_slice(&u32b(link_type));
        for (secs, micros, data) in records {
            f.extend_from_slice(&u32b(*secs));
            f.extend_from_slice(&u32b(*micros));
            f.extend_from_slice(&u32b(data.len() as u32));
            f.extend_from_slice(&u32b(data.len() as u32));
            f.extend_from_slice(data);
        }
        f
    }

    /// Records at 1700000000.5 s plus 123 µs per packet.
    fn timed(packets: Vec<Vec<u8>>) -> Vec<(u32, u32, Vec<u8>)> {
        packets
            .into_iter()
            .enumerate()
            .map(|(i, p)| (1_700_000_000, 500_000 + 123 * i as u32, p))
            .collect()
    }

    /// SYN, SYN-ACK, ACK, "hello" →, "HELLO" ←, ACK, FIN →, FIN ←, ACK; window scale options if `scale`.
    fn exchange(client_isn: u32, server_isn: u32, scale: bool) -> Vec<Vec<u8>> {
        let (c, s) = (client_isn, server_isn);
        // MSS 1460, NOP, window scale 2 (client) or 3 (server).
        let (c_opts, s_opts): (&[u8], &[u8]) = if scale {
            (&[2, 4, 5, 180, 1, 3, 3, 2], &[2, 4, 5, 180, 1, 3, 3, 3])
        } else {
            (&[], &[])
        };
        let (c_win, s_win) = if scale { (16384, 8192) } else { (65535, 65535) };
        let up = |seq, ack, flags, win, options, payload| {
            tcp(&Seg {
                src: CLIENT,
                dst: SERVER,
                sport: 40000,
                dport: 12000,
                seq,
                ack,
                flags,
                win,
                options,
                payload,
            })
        };
        let down = |seq, ack, flags, win, options, payload| {
            tcp(&Seg {
                src: SERVER,
                dst: CLIENT,
                sport: 12000,
                dport: 40000,
                seq,
                ack,
                flags,
                win,
                options,
                payload,
            })
        };
        let one = 1u32;
        vec![
            up(c, 0, SYN, 65535, c_opts, b""),
            down(s, c.wrapping_add(one), SYN | ACK, 65535, s_opts, b""),
            up(c.wrapping_add(1), s.wrapping_add(1), ACK, c_win, &[], b""),
            up(
                c.wrapping_add(1),
                s.wrapping_add(1),
                PSH | ACK,
                c_win,
                &[],
                b"hello",
            ),
            down(
                s.wrapping_add(1),
                c.wrapping_add(6),
                PSH | ACK,
                s_win,
                &[],
                b"HELLO",
            ),
            up(c.wrapping_add(6), s.wrapping_add(6), ACK, c_win, &[], b""),
            up(
                c.wrapping_add(6),
                s.wrapping_add(6),
                FIN | ACK,
                c_win,
                &[],
                b"",
            ),
            down(
                s.wrapping_add(6),
                c.wrapping_add(7),
                FIN | ACK,
                s_win,
                &[],
                b"",
            ),
            up(c.wrapping_add(7), s.wrapping_add(7), ACK, c_win, &[], b""),
        ]
    }

    fn expected_exchange(win: u32) -> Vec<(&'static str, &'static str, String)> {
        let (c, s) = ("10.0.2.2", "10.0.2.15");
        let (up, down) = ("(40000→12000)", "(12000→40000)");
        vec![
            (c, s, format!("SYN seq=0 ack=0 len=0 win=65535 {up}")),
            (
                s,
                c,
                format!("[SYN, ACK] seq=0 ack=1 len=0 win=65535 {down}"),
            ),
            (c, s, format!("ACK seq=1 ack=1 len=0 win={win} {up}")),
            (c, s, format!("[PSH, ACK] seq=1 ack=1 len=5 win={win} {up}")),
            (
                s,
                c,
                format!("[PSH, ACK] seq=1 ack=6 len=5 win={win} {down}"),
            ),
            (c, s, format!("ACK seq=6 ack=6 len=0 win={win} {up}")),
            (c, s, format!("[FIN, ACK] seq=6 ack=6 len=0 win={win} {up}")),
            (
                s,
                c,
                format!("[FIN, ACK] seq=6 ack=7 len=0 win={win} {down}"),
            ),
            (c, s, format!("ACK seq=7 ack=7 len=0 win={win} {up}")),
        ]
    }

    fn assert_exchange(packets: &[LadderPacket], first: usize, win: u32) {
        for (i, (src, dst, label)) in expected_exchange(win).into_iter().enumerate() {
            let p = &packets[first + i];
            assert_eq!(
                (p.src.as_str(), p.dst.as_str(), p.label.as_str()),
                (src, dst, label.as_str()),
                "packet {i}"
            );
            assert_eq!(p.mark, None, "packet {i}: {}", p.label);
        }
    }

    fn labels(packets: &[LadderPacket]) -> Vec<&str> {
        packets.iter().map(|p| p.label.as_str()).collect()
    }

    fn marks(packets: &[LadderPacket]) -> Vec<Option<&str>> {
        packets.iter().map(|p| p.mark.as_deref()).collect()
    }

    // ---- Decoding ----

    #[test]
    fn tcp_exchange_on_raw_ip() {
        // The client's sequence numbers wrap around 2^32 in the middle of the exchange.
        let file = pcap(101, false, &timed(exchange(0xffff_fffe, 5000, false)));
        let ladder = read_pcap(&file).unwrap();
        assert_eq!(ladder.records, 9);
        assert!(ladder.skipped.is_empty(), "{:?}", ladder.skipped);
        assert_exchange(&ladder.packets, 0, 65535);
        for (i, p) in ladder.packets.iter().enumerate() {
            assert!(
                (p.time - 123e-6 * i as f64).abs() < 1e-9,
                "packet {i} at {}",
                p.time
            );
        }
        // Link type 228 (IPv4 only) reads the same.
        let file = pcap(228, false, &timed(exchange(0xffff_fffe, 5000, false)));
        assert_exchange(&packets_from_pcap(&file).unwrap(), 0, 65535);
    }

    #[test]
    fn tcp_exchange_on_ethernet_big_endian_with_arp_and_window_scale() {
        let mut frames = vec![
            ethernet(
                [0xff; 6],
                CLIENT_MAC,
                0x0806,
                &arp(1, CLIENT_MAC, CLIENT, [0; 6], SERVER),
            ),
            ethernet(
                CLIENT_MAC,
                SERVER_MAC,
                0x0806,
                &arp(2, SERVER_MAC, SERVER, CLIENT_MAC, CLIENT),
            ),
        ];
        for packet in exchange(1000, 0x8000_0000, true) {
            let (dst, src) = if packet[12..16] == CLIENT {
                (SERVER_MAC, CLIENT_MAC)
            } else {
                (CLIENT_MAC, SERVER_MAC)
            };
            frames.push(ethernet(dst, src, 0x0800, &packet));
        }
        let file = pcap(1, true, &timed(frames));
        let packets = packets_from_pcap(&file).unwrap();
        assert_eq!(packets.len(), 11);
        assert_eq!(
            (
                packets[0].src.as_str(),
                packets[0].dst.as_str(),
                packets[0].label.as_str()
            ),
            ("10.0.2.2", "10.0.2.15", "ARP who-has 10.0.2.15")
        );
        assert_eq!(
            (
                packets[1].src.as_str(),
                packets[1].dst.as_str(),
                packets[1].label.as_str()
            ),
            (
                "10.0.2.15",
                "10.0.2.2",
                "ARP 10.0.2.15 is-at 02:00:00:00:00:01"
            )
        );
        // 16384 << 2 and 8192 << 3: the windows as scaled by the options of the SYNs.
        assert_exchange(&packets, 2, 65536);
        assert!((packets[10].time - 10.0 * 123e-6).abs() < 1e-9);
    }

    #[test]
    fn vlan_tagged_frame_and_nanosecond_pcap() {
        let packet = udp(CLIENT, SERVER, 40000, 12000, b"hello");
        let mut tagged = vec![0xff; 6];
        tagged.extend_from_slice(&CLIENT_MAC);
        tagged.extend_from_slice(&[0x81, 0x00, 0x00, 0x07, 0x08, 0x00]);
        tagged.extend_from_slice(&packet);
        let mut file = pcap(
            1,
            false,
            &[(10, 0, tagged.clone()), (10, 500_000_000, tagged)],
        );
        file[..4].copy_from_slice(&0xa1b2_3c4du32.to_le_bytes());
        let packets = packets_from_pcap(&file).unwrap();
        assert_eq!(labels(&packets), ["UDP 40000→12000 len=5"; 2]);
        assert!((packets[1].time - 0.5).abs() < 1e-9);
    }

    #[test]
    fn connection_without_its_handshake_counts_from_one() {
        let seg = |src, dst, sport, dport, seq, ack, flags, payload| {
            tcp(&Seg {
                src,
                dst,
                sport,
                dport,
                seq,
                ack,
                flags,
                win: 1000,
                options: &[],
                payload,
            })
        };
        let file = pcap(
            101,
            false,
            &timed(vec![
                seg(CLIENT, SERVER, 40000, 12000, 777, 999, PSH | ACK, b"abc"),
                seg(SERVER, CLIENT, 12000, 40000, 999, 780, ACK, b""),
                // A refused connection: RST to a SYN.
                seg(CLIENT, SERVER, 40001, 12001, 42, 0, SYN, b""),
                seg(SERVER, CLIENT, 12001, 40001, 0, 43, RST | ACK, b""),
            ]),
        );
        assert_eq!(
            labels(&packets_from_pcap(&file).unwrap()),
            [
                "[PSH, ACK] seq=1 ack=1 len=3 win=1000 (40000→12000)",
                "ACK seq=1 ack=4 len=0 win=1000 (12000→40000)",
                "SYN seq=0 ack=0 len=0 win=1000 (40001→12001)",
                "[RST, ACK] seq=1 ack=1 len=0 win=1000 (12001→40001)",
            ]
        );
    }

    #[test]
    fn udp_icmp_and_fragments() {
        let udp_header = udp_datagram(CLIENT, SERVER, 40000, 12001, b"hi");
        let quoted = [
            &ipv4(CLIENT, SERVER, 17, &udp_header)[..20],
            &udp_header[..8],
        ]
        .concat();
        let big = udp_datagram(CLIENT, SERVER, 40000, 12000, &[b'x'; 2000]);
        let file = pcap(
            101,
            false,
            &timed(vec![
                udp(CLIENT, SERVER, 40000, 12000, b"hello"),
                udp(SERVER, CLIENT, 12000, 40000, b"HELLO"),
                udp(CLIENT, SERVER, 40000, 12001, b"hi"),
                icmp(SERVER, CLIENT, 3, 3, [0; 4], &quoted),
                icmp(CLIENT, SERVER, 8, 0, [0, 1, 0, 7], b"ping"),
                icmp(SERVER, CLIENT, 0, 0, [0, 1, 0, 7], b"ping"),
                ipv4_with(CLIENT, SERVER, 17, 0x561a, 0x2000, &big[..1480]),
                ipv4_with(CLIENT, SERVER, 17, 0x561a, 1480 / 8, &big[1480..]),
            ]),
        );
        let packets = packets_from_pcap(&file).unwrap();
        assert_eq!(
            labels(&packets),
            [
                "UDP 40000→12000 len=5",
                "UDP 12000→40000 len=5",
                "UDP 40000→12001 len=2",
                "ICMP port unreachable (UDP 40000→12001)",
                "ICMP echo request id=1 seq=7",
                "ICMP echo reply id=1 seq=7",
                "UDP 40000→12000 fragment id=0x561a off=0 len=1480 MF",
                "UDP fragment id=0x561a off=1480 len=528",
            ]
        );
        assert_eq!(
            (packets[3].src.as_str(), packets[3].dst.as_str()),
            ("10.0.2.15", "10.0.2.2")
        );
        assert!(
            packets.iter().all(|p| p.mark.is_none()),
            "{:?}",
            marks(&packets)
        );
    }

    #[test]
    fn retransmission_marks_the_earlier_segment_lost() {
        let mut packets = exchange(1000, 5000, false);
        // The client's "hello" goes three times; the server's duplicate pure ACKs are no retransmissions.
        let hello = packets[3].clone();
        let dup_ack = tcp(&Seg {
            src: SERVER,
            dst: CLIENT,
            sport: 12000,
            dport: 40000,
            seq: 5001,
            ack: 1001,
            flags: ACK,
            win: 65535,
            options: &[],
            payload: b"",
        });
        packets.splice(
            4..4,
            [dup_ack.clone(), hello.clone(), dup_ack, hello.clone()],
        );
        let file = pcap(101, false, &timed(packets));
        let packets = packets_from_pcap(&file).unwrap();
        assert_eq!(
            marks(&packets),
            [
                None,
                None,
                None,
                Some("lost?"),
                None,
                Some("retransmission, lost?"),
                None,
                Some("retransmission"),
                None,
                None,
                None,
                None,
                None
            ]
        );
        assert_eq!(
            packets[7].label,
            "[PSH, ACK] seq=1 ack=1 len=5 win=65535 (40000→12000)"
        );
        assert_eq!(
            packets[4].label,
            "ACK seq=1 ack=1 len=0 win=65535 (12000→40000)"
        );

        // Sent again although the server had acknowledged it: spurious, and the first copy was not lost.
        let mut packets = exchange(1000, 5000, false);
        packets.truncate(6); // up to the client's ACK of "HELLO", after the server acknowledged "hello"
        packets.push(hello);
        let packets = packets_from_pcap(&pcap(101, false, &timed(packets))).unwrap();
        assert_eq!(
            marks(&packets),
            [
                None,
                None,
                None,
                None,
                None,
                None,
                Some("spurious retransmission")
            ]
        );
        let svg = ladder_svg("spurious", &packets);
        assert!(packet_lines(&svg)[6].3.contains(COLOR_RETRANSMISSION));

        // A retransmitted SYN is one too.
        let syn = exchange(1000, 5000, false).remove(0);
        let file = pcap(101, false, &timed(vec![syn.clone(), syn]));
        assert_eq!(
            marks(&packets_from_pcap(&file).unwrap()),
            [Some("lost?"), Some("retransmission")]
        );
    }

    #[test]
    fn zero_window_probes_are_not_retransmissions() {
        let mut packets = exchange(1000, 5000, false);
        packets.truncate(3);
        let up = |payload: &'static [u8]| {
            tcp(&Seg {
                src: CLIENT,
                dst: SERVER,
                sport: 40000,
                dport: 12000,
                seq: 1001,
                ack: 5001,
                flags: ACK,
                win: 65535,
                options: &[],
                payload,
            })
        };
        let down = |win| {
            tcp(&Seg {
                src: SERVER,
                dst: CLIENT,
                sport: 12000,
                dport: 40000,
                seq: 5001,
                ack: 1001,
                flags: ACK,
                win,
                options: &[],
                payload: b"",
            })
        };
        packets.extend([
            down(0),
            up(b"h"),
            down(0),
            up(b"h"),
            down(1000),
            up(b"hello"),
        ]);
        let packets = packets_from_pcap(&pcap(101, false, &timed(packets))).unwrap();
        assert!(
            packets.iter().all(|p| p.mark.is_none()),
            "{:?}",
            marks(&packets)
        );
        assert_eq!(
            packets[4].label,
            "ACK seq=1 ack=1 len=1 win=65535 zero-window probe (40000→12000)"
        );
        assert_eq!(packets[6].label, packets[4].label);
        assert_eq!(
            packets[8].label,
            "ACK seq=1 ack=1 len=5 win=65535 (40000→12000)"
        );
    }

    #[test]
    fn bad_checksums_are_marked_corrupted_but_offloaded_ones_are_not() {
        let data = Seg {
            src: CLIENT,
            dst: SERVER,
            sport: 40000,
            dport: 12000,
            seq: 1,
            ack: 1,
            flags: PSH | ACK,
            win: 100,
            options: &[],
            payload: b"hello",
        };
        // Each with its own sequence number, so that none is a retransmission of another.
        let at = |seq| tcp(&Seg { seq, ..data });
        let good = at(1);
        let mut tcp_payload_flipped = at(101);
        *tcp_payload_flipped.last_mut().unwrap() ^= 0x20;
        let mut ip_header_flipped = at(201);
        ip_header_flipped[8] = 63; // TTL changed after the header checksum was computed
                                   // What a kernel with checksum offload hands a TUN device: only the pseudo-header sum.
        let mut partial = at(301);
        let pseudo_sum = sum16(&[&pseudo(CLIENT, SERVER, 6, 25)]);
        partial[36..38].copy_from_slice(&pseudo_sum.to_be_bytes());
        // What smoltcp sends when the device offloads the checksum: zero.
        let mut zero = at(401);
        zero[36..38].copy_from_slice(&[0, 0]);
        let mut udp_flipped = udp(CLIENT, SERVER, 40000, 12000, b"hello");
        *udp_flipped.last_mut().unwrap() ^= 1;
        let mut udp_no_checksum = udp(CLIENT, SERVER, 40000, 12000, b"hello");
        udp_no_checksum[26..28].copy_from_slice(&[0, 0]);
        let mut icmp_flipped = icmp(CLIENT, SERVER, 8, 0, [0, 1, 0, 1], b"ping");
        *icmp_flipped.last_mut().unwrap() ^= 1;
        // A TCP header cut to 10 bytes (the IPv4 length agrees): drawn, not skipped.
        let short_tcp = ipv4(CLIENT, SERVER, 6, &tcp_segment(&data)[..10]);

        let file = pcap(
            101,
            false,
            &timed(vec![
                good,
                tcp_payload_flipped,
                ip_header_flipped,
                partial,
                zero,
                udp_flipped,
                udp_no_checksum,
                icmp_flipped,
                short_tcp,
            ]),
        );
        let packets = packets_from_pcap(&file).unwrap();
        assert_eq!(
            marks(&packets),
            [
                None,
                Some("corrupted"),
                Some("corrupted"),
                None,
                None,
                Some("corrupted"),
                None,
                Some("corrupted"),
                Some("corrupted"),
            ]
        );
        assert_eq!(packets[0].mark, None);
        assert_eq!(packets[8].label, "TCP malformed header (10 bytes)");
    }

    #[test]
    fn ipv6_and_other_protocols_are_skipped_and_counted() {
        let mut ipv6 = vec![0x60, 0, 0, 0, 0, 8, 17, 64];
        ipv6.extend_from_slice(&[0; 32]);
        ipv6.extend_from_slice(&[0; 8]);
        let igmp = ipv4(
            CLIENT,
            [224, 0, 0, 1],
            2,
            &[0x11, 0, 0xee, 0xff, 0, 0, 0, 0],
        );
        let udp_packet = udp(CLIENT, SERVER, 1, 2, b"x");
        let raw = pcap(
            101,
            false,
            &[
                (5, 0, ipv6.clone()),
                (5, 250, udp_packet.clone()),
                (5, 300, igmp.clone()),
                (5, 400, vec![0x00; 3]),
            ],
        );
        let ladder = read_pcap(&raw).unwrap();
        assert_eq!(ladder.records, 4);
        assert_eq!(ladder.packets.len(), 1);
        // Times count from the first record, even a skipped one.
        assert!((ladder.packets[0].time - 250e-6).abs() < 1e-9);
        assert_eq!(
            ladder.skipped,
            BTreeMap::from([
                ("IPv6".to_string(), 1),
                ("other IPv4 protocol".to_string(), 1),
                ("not IP".to_string(), 1)
            ])
        );
        assert_eq!(
            ladder.skipped_summary(),
            "3 skipped (1 IPv6, 1 not IP, 1 other IPv4 protocol)"
        );

        let eth = pcap(
            1,
            false,
            &timed(vec![
                ethernet([0xff; 6], CLIENT_MAC, 0x86dd, &ipv6),
                ethernet([0xff; 6], CLIENT_MAC, 0x88cc, &[0; 30]),
                ethernet(SERVER_MAC, CLIENT_MAC, 0x0800, &udp_packet),
                [
                    &ethernet(SERVER_MAC, CLIENT_MAC, 0x0800, &[])[..14],
                    &udp_packet[..20],
                ]
                .concat(), // cut short
                vec![0; 8], // shorter than an Ethernet header
            ]),
        );
        let ladder = read_pcap(&eth).unwrap();
        assert_eq!(labels(&ladder.packets), ["UDP 1→2 len=1"]);
        assert_eq!(ladder.skipped_total(), 4, "{:?}", ladder.skipped);
    }

    #[test]
    fn truncated_files() {
        let file = pcap(101, false, &timed(exchange(1000, 5000, false)));
        // Shorter than the file header: not a capture.
        for cut in [0, 3, 4, 10, 23] {
            assert!(read_pcap(&file[..cut]).is_err(), "cut at {cut}");
        }
        // Just the header: no packets.
        assert_eq!(read_pcap(&file[..24]).unwrap().packets, []);
        // Cut inside the first record header, then inside the second record's data.
        let ladder = read_pcap(&file[..30]).unwrap();
        assert_eq!((ladder.packets.len(), ladder.skipped_total()), (0, 1));
        let second_record_data = 24 + 16 + 40 + 16 + 5;
        let ladder = read_pcap(&file[..second_record_data]).unwrap();
        assert_eq!(ladder.packets.len(), 1);
        assert_eq!(
            ladder.skipped,
            BTreeMap::from([("truncated record at end of file".to_string(), 1)])
        );
        // Every cut reads without panicking, and the packets before the cut are all there.
        let whole = read_pcap(&file).unwrap().packets;
        for cut in 24..file.len() {
            let partial = read_pcap(&file[..cut]).unwrap().packets;
            assert_eq!(partial[..], whole[..partial.len()], "cut at {cut}");
        }
    }

    /// xorshift32: a fixed sequence of pseudo-random numbers.
    fn rng(state: &mut u32) -> u32 {
        *state ^= *state << 13;
        *state ^= *state >> 17;
        *state ^= *state << 5;
        *state
    }

    #[test]
    fn garbage_is_an_error_or_skipped_never_a_panic() {
        assert!(read_pcap(b"").is_err());
        assert!(read_pcap(b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")
            .unwrap_err()
            .contains("not a pcap"));
        let mut pcapng = vec![0x0a, 0x0d, 0x0d, 0x0a];
        pcapng.extend_from_slice(&[0; 40]);
        assert!(read_pcap(&pcapng).unwrap_err().contains("pcapng"));
        assert!(read_pcap(&pcap(113, false, &[]))
            .unwrap_err()
            .contains("link type 113"));
        let mut huge = pcap(1, false, &[]);
        huge.extend_from_slice(&[
            0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        ]);
        huge.extend_from_slice(&[0; 64]);
        assert!(read_pcap(&huge).unwrap_err().contains("captured length"));

        // Random bytes as a file, random frames in a good file, and good files with bytes changed.
        let mut state = 0x1234_5678;
        for _ in 0..300 {
            let len = (rng(&mut state) % 300) as usize;
            let noise: Vec<u8> = (0..len).map(|_| rng(&mut state) as u8).collect();
            let _ = read_pcap(&noise);
            for link in [1, 101] {
                let _ = read_pcap(&pcap(link, false, &[(0, 0, noise.clone())]));
            }
        }
        let mut ethernet_frames = Vec::new();
        for packet in exchange(1000, 5000, true) {
            ethernet_frames.push(ethernet(SERVER_MAC, CLIENT_MAC, 0x0800, &packet));
        }
        ethernet_frames.push(ethernet(
            [0xff; 6],
            CLIENT_MAC,
            0x0806,
            &arp(1, CLIENT_MAC, CLIENT, [0; 6], SERVER),
        ));
        let udp_header = udp_datagram(CLIENT, SERVER, 40000, 12001, b"hi");
        let quoted = [
            &ipv4(CLIENT, SERVER, 17, &udp_header)[..20],
            &udp_header[..8],
        ]
        .concat();
        let mut raw_packets = exchange(1000, 5000, false);
        raw_packets.push(icmp(SERVER, CLIENT, 3, 3, [0; 4], &quoted));
        raw_packets.push(udp(CLIENT, SERVER, 40000, 12000, b"hello"));
        for file in [
            pcap(1, false, &timed(ethernet_frames)),
            pcap(101, true, &timed(raw_packets)),
        ] {
            for _ in 0..3000 {
                let mut damaged = file.clone();
                for _ in 0..1 + rng(&mut state) % 4 {
                    let at = 24 + rng(&mut state) as usize % (damaged.len() - 24);
                    damaged[at] = rng(&mut state) as u8;
                }
                if let Ok(packets) = packets_from_pcap(&damaged) {
                    let svg = ladder_svg("damaged", &packets);
                    assert_eq!(
                        svg.matches(r#"class="packet""#).count(),
                        packets.len().min(MAX_DRAWN)
                    );
                }
            }
        }
    }

    // ---- The SVG ----

    /// A small well-formedness check: one root element, tags balanced and properly nested, attributes quoted
    /// and unique, entities known, no characters XML forbids.
    fn check_well_formed(xml: &str) -> Result<(), String> {
        fn check_text(text: &str) -> Result<(), String> {
            if let Some(c) = text
                .chars()
                .find(|&c| (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r'))
            {
                return Err(format!("control character {:?} in {text:?}", c));
            }
            let mut rest = text;
            while let Some(at) = rest.find('&') {
                rest = &rest[at + 1..];
                let end = rest
                    .find(';')
                    .ok_or_else(|| format!("unterminated entity in {text:?}"))?;
                let entity = &rest[..end];
                let numeric = entity
                    .strip_prefix('#')
                    .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
                if !numeric && !["amp", "lt", "gt", "quot", "apos"].contains(&entity) {
                    return Err(format!("unknown entity &{entity}; in {text:?}"));
                }
            }
            Ok(())
        }
        let is_name = |n: &str| {
            !n.is_empty()
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_:.".contains(c))
        };
        let mut rest = xml.trim_start();
        if let Some(r) = rest.strip_prefix("<?xml") {
            rest = &r[r.find("?>").ok_or("unterminated XML declaration")? + 2..];
        }
        let mut stack: Vec<&str> = Vec::new();
        let mut roots = 0;
        loop {
            let lt = rest.find('<');
            let text = &rest[..lt.unwrap_or(rest.len())];
            check_text(text)?;
            if stack.is_empty() && !text.trim().is_empty() {
                return Err(format!("text outside the root element: {text:?}"));
            }
            if text.contains('>') {
                return Err(format!("stray '>' in text {text:?}"));
            }
            let Some(lt) = lt else { break };
            rest = &rest[lt..];
            if let Some(r) = rest.strip_prefix("<!--") {
                rest = &r[r.find("-->").ok_or("unterminated comment")? + 3..];
                continue;
            }
            if let Some(r) = rest.strip_prefix("</") {
                let end = r.find('>').ok_or("unterminated end tag")?;
                let name = r[..end].trim();
                match stack.pop() {
                    Some(open) if open == name => {}
                    other => return Err(format!("</{name}> closes {other:?}")),
                }
                rest = &r[end + 1..];
                continue;
            }
            let body = &rest[1..];
            let mut quote = None;
            let mut end = None;
            for (i, c) in body.char_indices() {
                match (quote, c) {
                    (Some(q), c) if c == q => quote = None,
                    (Some(_), '<') | (None, '<') => {
                        return Err(format!("'<' inside a tag: {}", &body[..i]))
                    }
                    (Some(_), _) => {}
                    (None, '"' | '\'') => quote = Some(c),
                    (None, '>') => {
                        end = Some(i);
                        break;
                    }
                    (None, _) => {}
                }
            }
            let end = end.ok_or("unterminated tag")?;
            let inner = &body[..end];
            let self_closing = inner.ends_with('/');
            let inner = inner.strip_suffix('/').unwrap_or(inner);
            let name_end = inner.find(char::is_whitespace).unwrap_or(inner.len());
            let name = &inner[..name_end];
            if !is_name(name) {
                return Err(format!("bad element name {name:?}"));
            }
            let mut attrs = inner[name_end..].trim_start();
            let mut seen = Vec::new();
            while !attrs.is_empty() {
                let eq = attrs
                    .find('=')
                    .ok_or_else(|| format!("attribute without value in <{name} {attrs}"))?;
                let attr = &attrs[..eq];
                if !is_name(attr) || seen.contains(&attr) {
                    return Err(format!("bad or repeated attribute {attr:?} in <{name}>"));
                }
                seen.push(attr);
                let value = &attrs[eq + 1..];
                let q = value
                    .chars()
                    .next()
                    .filter(|c| *c == '"' || *c == '\'')
                    .ok_or("unquoted attribute")?;
                let close = value[1..].find(q).ok_or("unterminated attribute value")?;
                check_text(&value[1..1 + close])?;
                let after = &value[close + 2..];
                if !after.is_empty() && !after.starts_with(char::is_whitespace) {
                    return Err(format!("no space after attribute {attr:?} in <{name}>"));
                }
                attrs = after.trim_start();
            }
            if stack.is_empty() {
                roots += 1;
            }
            if !self_closing {
                stack.push(name);
            }
            rest = &body[end + 1..];
        }
        match (roots, stack.last()) {
            (1, None) => Ok(()),
            (_, Some(open)) => Err(format!("<{open}> never closed")),
            (n, None) => Err(format!("{n} root elements")),
        }
    }

    /// Parses the document with Python's XML parser too, when python3 is there.
    fn python_parses(svg: &str, name: &str) {
        let path = std::env::temp_dir().join(format!(
            "smoltalk-diagram-{}-{name}.svg",
            std::process::id()
        ));
        std::fs::write(&path, svg).unwrap();
        let result = std::process::Command::new("python3")
            .args([
                "-c",
                "import xml.etree.ElementTree as E,sys; E.parse(sys.argv[1])",
            ])
            .arg(&path)
            .output();
        let _ = std::fs::remove_file(&path);
        match result {
            Err(e) => println!("python3 not run ({e}): the XML check by Python is skipped"),
            Ok(out) => assert!(
                out.status.success(),
                "python3 rejects the SVG: {}",
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }

    /// The `<line class="packet" …/>` elements, as (data-index, x1, x2, the whole element).
    fn packet_lines(svg: &str) -> Vec<(usize, f64, f64, &str)> {
        let attr = |line: &str, name: &str| -> String {
            let start = line.find(&format!(" {name}=\"")).unwrap() + name.len() + 3;
            line[start..].split('"').next().unwrap().to_string()
        };
        svg.match_indices(r#"<line class="packet""#)
            .map(|(at, _)| {
                let line = &svg[at..at + svg[at..].find("/>").unwrap() + 2];
                let index = attr(line, "data-index").parse().unwrap();
                (
                    index,
                    attr(line, "x1").parse().unwrap(),
                    attr(line, "x2").parse().unwrap(),
                    line,
                )
            })
            .collect()
    }

    #[test]
    fn svg_of_an_exchange() {
        let file = pcap(101, false, &timed(exchange(1000, 5000, false)));
        let packets = packets_from_pcap(&file).unwrap();
        let svg = ladder_svg("TCP: send once, read once", &packets);
        check_well_formed(&svg).unwrap();
        python_parses(&svg, "exchange");
        assert!(svg.contains(r#"<svg xmlns="http://www.w3.org/2000/svg" width=""#));
        assert!(svg.contains(" viewBox=\"0 0 "));
        assert!(svg.contains("<marker "));
        assert_eq!(svg.matches(r#"class="packet""#).count(), packets.len());
        let lines = packet_lines(&svg);
        assert_eq!(
            lines.iter().map(|l| l.0).collect::<Vec<_>>(),
            (0..packets.len()).collect::<Vec<_>>()
        );
        // The client (first seen) is the left lifeline: its packets go right, the server's left.
        for ((_, x1, x2, _), packet) in lines.iter().zip(&packets) {
            assert_eq!(x1 < x2, packet.src == "10.0.2.2", "{}", packet.label);
        }
        // Host names on top, in order of first appearance; times on the left; labels in order.
        let client = svg.find(">10.0.2.2</text>").unwrap();
        let server = svg.find(">10.0.2.15</text>").unwrap();
        assert!(client < server);
        assert!(svg.contains(">0.000000 s</text>") && svg.contains(">0.000123 s</text>"));
        let mut at = 0;
        for packet in &packets {
            let found = svg[at..]
                .find(&format!(">{}</text>", packet.label))
                .unwrap_or_else(|| panic!("{}", packet.label));
            at += found + 1;
        }
        assert!(
            !svg.contains("stroke-dasharray=\"6 4\" marker-end"),
            "nothing is marked"
        );
    }

    fn packet(src: &str, dst: &str, label: &str, mark: Option<&str>) -> LadderPacket {
        LadderPacket {
            time: 0.25,
            src: src.into(),
            dst: dst.into(),
            label: label.into(),
            mark: mark.map(Into::into),
        }
    }

    #[test]
    fn svg_marks_escaping_self_packets_and_empty() {
        let packets = vec![
            packet("a", "b", "data", Some("lost?")),
            packet("a", "b", "data", Some("retransmission")),
            packet("b", "a", "bad", Some("corrupted")),
            packet(
                "<host & \"1\">",
                "b",
                "<script>alert('x')</script> & \u{1} more",
                None,
            ),
            packet("c", "c", "to myself", None),
        ];
        let svg = ladder_svg("title with <tags> & \"quotes\" 'too'", &packets);
        check_well_formed(&svg).unwrap();
        python_parses(&svg, "marks");
        assert!(!svg.contains("<script>") && !svg.contains("<tags>") && !svg.contains("<host"));
        assert!(
            svg.contains("&lt;script&gt;alert(&apos;x&apos;)&lt;/script&gt; &amp; \u{fffd} more")
        );
        assert!(svg.contains("title with &lt;tags&gt; &amp; &quot;quotes&quot; &apos;too&apos;"));
        let lines = packet_lines(&svg);
        assert_eq!(lines.len(), 5);
        assert!(lines[0].3.contains(COLOR_BAD) && lines[0].3.contains("stroke-dasharray"));
        assert!(
            lines[1].3.contains(COLOR_RETRANSMISSION) && !lines[1].3.contains("stroke-dasharray")
        );
        assert!(lines[2].3.contains(COLOR_BAD) && lines[2].3.contains("stroke-dasharray"));
        assert!(lines[3].3.contains(COLOR_TCP) && !lines[3].3.contains("stroke-dasharray"));
        assert!(
            lines[4].2 > lines[4].1,
            "an arrow to itself still has a length"
        );
        assert!(svg.contains(">  lost?</tspan>") && svg.contains(">  corrupted</tspan>"));

        let empty = ladder_svg("nothing", &[]);
        check_well_formed(&empty).unwrap();
        python_parses(&empty, "empty");
        assert_eq!(empty.matches(r#"class="packet""#).count(), 0);
        assert!(empty.contains("no packets"));
    }

    #[test]
    fn svg_draws_at_most_max_drawn_packets() {
        let packets: Vec<LadderPacket> = (0..MAX_DRAWN + 50)
            .map(|i| packet("a", "b", &format!("packet {i}"), None))
            .collect();
        let svg = ladder_svg("many", &packets);
        check_well_formed(&svg).unwrap();
        assert_eq!(svg.matches(r#"class="packet""#).count(), MAX_DRAWN);
        assert!(svg.contains("… 50 more packets"));
        let exactly = ladder_svg("exactly", &packets[..MAX_DRAWN]);
        assert_eq!(exactly.matches(r#"class="packet""#).count(), MAX_DRAWN);
        assert!(!exactly.contains("more packet"));
    }

    #[test]
    fn well_formedness_check_catches_mistakes() {
        for bad in [
            "<svg><g></svg>",
            "<svg></svg><svg></svg>",
            "<svg a=\"1\" a=\"2\"/>",
            "<svg a=1/>",
            "<svg>a & b</svg>",
            "<svg><text>1 < 2</text></svg>",
            "<svg x=\"<\"/>",
            "text<svg/>",
        ] {
            assert!(check_well_formed(bad).is_err(), "{bad}");
        }
        check_well_formed(
            "<?xml version=\"1.0\"?>\n<svg a=\"&amp;\"><!-- c --><g/>x &#38; y</svg>\n",
        )
        .unwrap();
    }
}
