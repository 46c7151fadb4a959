//! IPv4 (fragments drawn as they are, not reassembled), ICMP and ARP: their labels and kinds.

use smoltcp::wire::{
    checksum, ArpHardware, ArpOperation, ArpPacket, Icmpv4Message, Icmpv4Packet, IpProtocol,
    Ipv4Address, Ipv4Packet,
};

use super::super::PacketKind;
use super::transport::udp;
use super::{add_mark, AddressPair, Arrow, Decoder, Described, CORRUPTED};

impl Decoder {
    pub(super) fn ipv4(&mut self, data: &[u8]) -> Result<Arrow, &'static str> {
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
        let described = if ip.more_frags() || ip.frag_offset() != 0 {
            fragment_of(&ip, protocol, payload)
        } else {
            match ip.next_header() {
                IpProtocol::Tcp => self.tcp(AddressPair::V4 { src, dst }, payload, &mut marks),
                IpProtocol::Udp => udp(AddressPair::V4 { src, dst }, payload, &mut marks),
                IpProtocol::Icmp => icmp(payload, &mut marks),
                _ => return Err("other IPv4 protocol"),
            }
        };
        Ok(Arrow::new(
            src.to_string(),
            dst.to_string(),
            described,
            marks,
        ))
    }
}

/// The addresses and TCP bytes of an IPv4 packet that carries a whole TCP segment (not a fragment).
pub(super) fn tcp_of_ipv4(data: &[u8]) -> Option<(AddressPair, &[u8])> {
    let ip = Ipv4Packet::new_checked(data).ok()?;
    if ip.version() != 4
        || ip.more_frags()
        || ip.frag_offset() != 0
        || ip.next_header() != IpProtocol::Tcp
    {
        return None;
    }
    let addresses = AddressPair::V4 {
        src: ip.src_addr(),
        dst: ip.dst_addr(),
    };
    Some((addresses, ip.payload()))
}

fn icmp(data: &[u8], marks: &mut Vec<&'static str>) -> Described {
    let Ok(icmp) = Icmpv4Packet::new_checked(data) else {
        if checksum::data(data) != !0 {
            add_mark(marks, CORRUPTED);
        }
        return Described::other(format!("ICMP malformed header ({} bytes)", data.len()));
    };
    if !icmp.verify_checksum() {
        add_mark(marks, CORRUPTED);
    }
    let code = icmp.msg_code();
    let kind = match (icmp.msg_type(), code) {
        (Icmpv4Message::DstUnreachable, 3) => PacketKind::PortUnreachable,
        _ => PacketKind::Other,
    };
    let label = match icmp.msg_type() {
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
    };
    let ports = match icmp.msg_type() {
        Icmpv4Message::DstUnreachable | Icmpv4Message::TimeExceeded => {
            quoted_ports(data.get(8..).unwrap_or_default()).map(|(sport, dport)| (dport, sport))
        }
        _ => None,
    };
    Described::new(label, kind).between(ports)
}

/// The (source, destination) ports of the TCP or UDP packet an ICMP error quotes, if they can be read.
fn quoted_ports(data: &[u8]) -> Option<(u16, u16)> {
    let version_ihl = *data.first()?;
    if version_ihl >> 4 != 4 || !matches!(data.get(9), Some(6 | 17)) {
        return None;
    }
    let header_len = usize::from(version_ihl & 0x0f) * 4;
    match data.get(header_len..header_len + 4)? {
        &[a, b, c, d] => Some((u16::from_be_bytes([a, b]), u16::from_be_bytes([c, d]))),
        _ => None,
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

/// A fragment: [`PacketKind::Udp`] when of a UDP datagram, [`PacketKind::Other`] when of anything else.
fn fragment_of(ip: &Ipv4Packet<&[u8]>, protocol: u8, payload: &[u8]) -> Described {
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
    let label = format!(
        "{name}{ports} fragment id={:#06x} off={} len={}{}",
        ip.ident(),
        ip.frag_offset(),
        payload.len(),
        if ip.more_frags() { " MF" } else { "" }
    );
    match protocol {
        17 => Described::new(label, PacketKind::Udp),
        _ => Described::other(label),
    }
}

/// An ARP packet's sender and target addresses and description: requests and replies are
/// [`PacketKind::AddressResolution`], other operations [`PacketKind::Other`].
pub(super) fn arp(data: &[u8]) -> Result<(String, String, Described), &'static str> {
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
    let described = match arp.operation() {
        ArpOperation::Request => Described::new(
            format!("ARP who-has {target}"),
            PacketKind::AddressResolution,
        ),
        ArpOperation::Reply => {
            let mac: Vec<String> = arp
                .source_hardware_addr()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            let label = format!("ARP {sender} is-at {}", mac.join(":"));
            Described::new(label, PacketKind::AddressResolution)
        }
        ArpOperation::Unknown(op) => Described::other(format!("ARP operation {op}")),
    };
    Ok((sender, target, described))
}
