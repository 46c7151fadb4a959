//! ICMPv6 (RFC 4443): echo, the errors with the packet they quote, Neighbor Discovery (NDP, RFC 4861) and
//! Multicast Listener Discovery (MLD, RFC 2710 and RFC 3810) — their labels and kinds, the checksum mark, and
//! where a neighbor solicitation is drawn to.

use smoltcp::wire::{
    Icmpv6Message, Icmpv6Packet, IpProtocol, Ipv6Address, NdiscNeighborFlags, NdiscRepr,
};

use super::super::PacketKind;
use super::ipv6::{address_at, quoted_packet, quoted_ports};
use super::{add_mark, AddressPair, Described, CORRUPTED};

/// The label and kind of one ICMPv6 message, and the host it is drawn to when that is not the IPv6 destination.
pub(super) struct Icmpv6Arrow {
    pub(super) described: Described,
    /// For a neighbor solicitation sent to a multicast group: the address asked about, as an ARP request is
    /// drawn to the address it asks about rather than to the broadcast.
    pub(super) receiver: Option<Ipv6Address>,
}

impl Icmpv6Arrow {
    fn new(label: String, kind: PacketKind) -> Icmpv6Arrow {
        Icmpv6Arrow {
            described: Described::new(label, kind),
            receiver: None,
        }
    }
}

/// A message that is [`PacketKind::Other`], drawn to its IPv6 destination.
impl From<String> for Icmpv6Arrow {
    fn from(label: String) -> Self {
        Icmpv6Arrow::new(label, PacketKind::Other)
    }
}

fn malformed(what: &str, data: &[u8]) -> Icmpv6Arrow {
    format!("{what} malformed header ({} bytes)", data.len()).into()
}

/// Decodes the ICMPv6 message `data` sent from `src` to `dst`; marks it `corrupted` if its checksum (over the
/// IPv6 pseudo-header) does not verify.
pub(super) fn icmpv6(
    src: Ipv6Address,
    dst: Ipv6Address,
    data: &[u8],
    marks: &mut Vec<&'static str>,
) -> Icmpv6Arrow {
    let addresses = AddressPair::V6 { src, dst };
    if !addresses.checksum_ok(IpProtocol::Icmpv6, data) {
        add_mark(marks, CORRUPTED);
    }
    let (Some(&kind), Some(&code)) = (data.first(), data.get(1)) else {
        return malformed("ICMPv6", data);
    };
    if data.len() < 4 {
        return malformed("ICMPv6", data);
    }
    // MLD before smoltcp's packet type, which knows only MLDv2's lengths and not MLDv1's report and done.
    if let Some(label) = mld(kind, data) {
        return label.into();
    }
    let Ok(packet) = Icmpv6Packet::new_checked(data) else {
        return match Icmpv6Message::from(kind) {
            // Types smoltcp does not read (without its RPL feature, RPL's either).
            Icmpv6Message::Unknown(_) | Icmpv6Message::RplControl => {
                format!("ICMPv6 type {kind} code {code}").into()
            }
            _ => malformed("ICMPv6", data),
        };
    };
    match packet.msg_type() {
        Icmpv6Message::EchoRequest => format!(
            "ICMPv6 echo request id={} seq={}",
            packet.echo_ident(),
            packet.echo_seq_no()
        )
        .into(),
        Icmpv6Message::EchoReply => format!(
            "ICMPv6 echo reply id={} seq={}",
            packet.echo_ident(),
            packet.echo_seq_no()
        )
        .into(),
        Icmpv6Message::DstUnreachable => {
            let what = match code {
                0 => "no route to destination".to_string(),
                1 => "communication prohibited".to_string(),
                2 => "beyond scope of source address".to_string(),
                3 => "address unreachable".to_string(),
                4 => "port unreachable".to_string(),
                5 => "source address failed policy".to_string(),
                6 => "reject route".to_string(),
                _ => format!("destination unreachable code={code}"),
            };
            let label = format!("ICMPv6 {what}{}", quoted_packet(packet.payload()));
            let mut arrow = match code {
                4 => Icmpv6Arrow::new(label, PacketKind::PortUnreachable),
                _ => label.into(),
            };
            // Drawn from the port the quoted packet went to, back to its sender.
            let ports = quoted_ports(packet.payload()).map(|(sport, dport)| (dport, sport));
            arrow.described = arrow.described.between(ports);
            arrow
        }
        Icmpv6Message::PktTooBig => format!(
            "ICMPv6 packet too big mtu={}{}",
            packet.pkt_too_big_mtu(),
            quoted_packet(packet.payload())
        )
        .into(),
        Icmpv6Message::TimeExceeded => {
            let what = match code {
                0 => "hop limit exceeded".to_string(),
                1 => "fragment reassembly time exceeded".to_string(),
                _ => format!("time exceeded code={code}"),
            };
            format!("ICMPv6 {what}{}", quoted_packet(packet.payload())).into()
        }
        Icmpv6Message::ParamProblem => {
            let what = match code {
                0 => "erroneous header field".to_string(),
                1 => "unrecognized next header".to_string(),
                2 => "unrecognized IPv6 option".to_string(),
                _ => format!("code={code}"),
            };
            format!(
                "ICMPv6 parameter problem ({what}) pointer={}{}",
                packet.param_problem_ptr(),
                quoted_packet(packet.payload())
            )
            .into()
        }
        message if message.is_ndisc() => ndp(&packet, src, dst),
        other if code == 0 => format!("ICMPv6 {other}").into(),
        other => format!("ICMPv6 {other} code={code}").into(),
    }
}

/// A Neighbor Discovery message, its fixed fields read from the packet (whose length smoltcp has checked) and
/// its options through smoltcp's `NdiscRepr`; options that do not parse are said to be malformed. Neighbor
/// solicitations and advertisements are [`PacketKind::AddressResolution`] (malformed options or not: the
/// message is one); router solicitations and advertisements and redirects are [`PacketKind::Other`].
fn ndp(packet: &Icmpv6Packet<&[u8]>, src: Ipv6Address, dst: Ipv6Address) -> Icmpv6Arrow {
    let repr = NdiscRepr::parse(packet).ok();
    let options = if repr.is_none() {
        " (malformed options)"
    } else {
        ""
    };
    let label = match packet.msg_type() {
        Icmpv6Message::NeighborSolicit => {
            let target = packet.target_addr();
            let dad = if src.is_unspecified() {
                " (duplicate address detection)"
            } else {
                ""
            };
            let label = format!("NDP who-has {target}{dad}{options}");
            return Icmpv6Arrow {
                described: Described::new(label, PacketKind::AddressResolution),
                receiver: dst.is_multicast().then_some(target),
            };
        }
        Icmpv6Message::NeighborAdvert => {
            let target = packet.target_addr();
            let flags: Vec<&str> = [
                (NdiscNeighborFlags::ROUTER, "router"),
                (NdiscNeighborFlags::SOLICITED, "solicited"),
                (NdiscNeighborFlags::OVERRIDE, "override"),
            ]
            .into_iter()
            .filter(|(flag, _)| packet.neighbor_flags().contains(*flag))
            .map(|(_, name)| name)
            .collect();
            let flags = if flags.is_empty() {
                String::new()
            } else {
                format!(" ({})", flags.join(", "))
            };
            let label = match repr {
                Some(NdiscRepr::NeighborAdvert {
                    lladdr: Some(lladdr),
                    ..
                }) => format!("NDP {target} is-at {lladdr}{flags}"),
                _ => format!("NDP {target} advertised{flags}{options}"),
            };
            return Icmpv6Arrow::new(label, PacketKind::AddressResolution);
        }
        Icmpv6Message::RouterSolicit => format!("NDP router solicitation{options}"),
        Icmpv6Message::RouterAdvert => {
            let mut label = format!(
                "NDP router advertisement lifetime={}s",
                packet.router_lifetime().secs()
            );
            if let Some(NdiscRepr::RouterAdvert {
                mtu, prefix_info, ..
            }) = repr
            {
                if let Some(prefix) = prefix_info {
                    label += &format!(" prefix={}/{}", prefix.prefix, prefix.prefix_len);
                }
                if let Some(mtu) = mtu {
                    label += &format!(" mtu={mtu}");
                }
            }
            label + options
        }
        Icmpv6Message::Redirect => {
            let (target, destination) = (packet.target_addr(), packet.dest_addr());
            if target == destination {
                format!("NDP redirect {destination} on-link{options}")
            } else {
                format!("NDP redirect {destination} via {target}{options}")
            }
        }
        other => format!("ICMPv6 {other}"),
    };
    label.into()
}

/// The label of an MLD message (types 130, 131, 132 and 143), `None` for any other type.
fn mld(kind: u8, data: &[u8]) -> Option<String> {
    let (name, group) = match kind {
        130 => ("MLD query", address_at(data, 8)),
        131 => ("MLD report", address_at(data, 8)),
        132 => ("MLD done", address_at(data, 8)),
        143 => return Some(mldv2_report(data)),
        _ => return None,
    };
    Some(match group {
        None => format!("{name} malformed header ({} bytes)", data.len()),
        Some(group) if kind == 130 && group.is_unspecified() => "MLD general query".into(),
        Some(group) => format!("{name} {group}"),
    })
}

/// How many of an MLDv2 report's records are named in its label.
const RECORDS_NAMED: usize = 3;

/// `MLDv2 report join ff02::1:ff00:15, leave ff02::fb`: each multicast address record (RFC 3810 5.2) with what
/// it says — `join` and `leave` for a change to exclude or to include with no sources, the record type's name
/// otherwise.
fn mldv2_report(data: &[u8]) -> String {
    let Some(&[high, low]) = data.get(6..8) else {
        return format!("MLDv2 report malformed header ({} bytes)", data.len());
    };
    let count = usize::from(u16::from_be_bytes([high, low]));
    let mut named = Vec::new();
    let mut at = 8;
    for _ in 0..count.min(RECORDS_NAMED) {
        let (Some(&kind), Some(&aux_words), Some(&[sources_high, sources_low]), Some(group)) = (
            data.get(at),
            data.get(at + 1),
            data.get(at + 2..at + 4),
            address_at(data, at + 4),
        ) else {
            named.push("(cut short)".to_string());
            break;
        };
        let sources = usize::from(u16::from_be_bytes([sources_high, sources_low]));
        let what = match (kind, sources) {
            (4, 0) => "join".to_string(),
            (3, 0) => "leave".to_string(),
            (1, _) => "include".to_string(),
            (2, _) => "exclude".to_string(),
            (3, _) => "to-include".to_string(),
            (4, _) => "to-exclude".to_string(),
            (5, _) => "allow".to_string(),
            (6, _) => "block".to_string(),
            (other, _) => format!("record type {other}"),
        };
        named.push(format!("{what} {group}"));
        at += 20 + 16 * sources + 4 * usize::from(aux_words);
    }
    if count > RECORDS_NAMED {
        named.push(format!("+{} more", count - RECORDS_NAMED));
    }
    if named.is_empty() {
        "MLDv2 report (no records)".into()
    } else {
        format!("MLDv2 report {}", named.join(", "))
    }
}
