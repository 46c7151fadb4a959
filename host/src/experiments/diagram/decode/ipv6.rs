//! IPv6: the header, the extension headers on the way to the upper layer (Hop-by-Hop, Routing and Destination
//! options skipped over; a Fragment header drawn as a fragment, not reassembled), and the packet an ICMPv6
//! error quotes.

use smoltcp::wire::{IpProtocol, Ipv6Address, Ipv6ExtHeader, Ipv6FragmentHeader, Ipv6Packet};

use super::super::PacketKind;
use super::icmpv6::icmpv6;
use super::transport::udp;
use super::{AddressPair, Arrow, Decoder, Described};

/// The length of the fixed IPv6 header.
const HEADER_LEN: usize = 40;
/// The length of a Fragment header.
const FRAGMENT_HEADER_LEN: usize = 8;

/// What a Fragment header says.
#[derive(Debug, Clone, Copy)]
struct Fragment {
    ident: u32,
    /// In bytes.
    offset: usize,
    more: bool,
    /// The bytes after the Fragment header: this fragment's share of the original packet.
    len: usize,
}

/// Where the extension headers end: the upper-layer protocol and its bytes, and the Fragment header if one was
/// on the way.
#[derive(Debug, Clone, Copy)]
struct UpperLayer<'a> {
    protocol: IpProtocol,
    payload: &'a [u8],
    fragment: Option<Fragment>,
}

/// Follows the extension headers from `next` over `payload`. `None` when one is cut short or malformed before
/// any Fragment header; after a Fragment header the walk stops where the bytes run out (a fragment carries only
/// part of the packet), and at once for a fragment other than the first (its bytes are data, not headers).
fn upper_layer(mut next: IpProtocol, mut payload: &[u8]) -> Option<UpperLayer<'_>> {
    let mut fragment: Option<Fragment> = None;
    loop {
        match next {
            IpProtocol::HopByHop | IpProtocol::Ipv6Route | IpProtocol::Ipv6Opts => {
                // The length field counts 8-byte units after the first 8 bytes.
                let skipped = Ipv6ExtHeader::new_checked(payload).ok().and_then(|header| {
                    let len = (usize::from(header.header_len()) + 1) * 8;
                    Some((header.next_header(), payload.get(len..)?))
                });
                match (skipped, fragment) {
                    (Some((after, rest)), _) => (next, payload) = (after, rest),
                    (None, Some(_)) => break,
                    (None, None) => return None,
                }
            }
            IpProtocol::Ipv6Frag if fragment.is_none() => {
                let header = payload.get(..FRAGMENT_HEADER_LEN)?;
                // smoltcp's Fragment header type starts after the next-header and reserved bytes.
                let fields = Ipv6FragmentHeader::new_checked(header.get(2..)?).ok()?;
                let rest = payload.get(FRAGMENT_HEADER_LEN..)?;
                fragment = Some(Fragment {
                    ident: fields.ident(),
                    offset: usize::from(fields.frag_offset()) * 8,
                    more: fields.more_frags(),
                    len: rest.len(),
                });
                next = IpProtocol::from(*header.first()?);
                payload = rest;
                if fields.frag_offset() != 0 {
                    break;
                }
            }
            _ => break,
        }
    }
    Some(UpperLayer {
        protocol: next,
        payload,
        fragment,
    })
}

/// The name an arrow gives an upper-layer protocol over IPv6.
fn protocol_name(protocol: IpProtocol) -> String {
    match protocol {
        IpProtocol::Tcp => "TCP".into(),
        IpProtocol::Udp => "UDP".into(),
        IpProtocol::Icmpv6 => "ICMPv6".into(),
        other => format!("IPv6 next header {}", u8::from(other)),
    }
}

/// ` 40000→12000` from the first four bytes of a TCP or UDP header, or nothing.
fn ports(protocol: IpProtocol, header: &[u8]) -> String {
    match (protocol, header.get(..4)) {
        (IpProtocol::Tcp | IpProtocol::Udp, Some(&[a, b, c, d])) => format!(
            " {}→{}",
            u16::from_be_bytes([a, b]),
            u16::from_be_bytes([c, d])
        ),
        _ => String::new(),
    }
}

/// `UDP 40000→12000 fragment id=0x0000beef off=0 len=1232 MF` (the ports in the first fragment only):
/// [`PacketKind::Udp`] when of a UDP datagram, [`PacketKind::Other`] when of anything else.
fn fragment_of(upper: &UpperLayer<'_>, fragment: Fragment) -> Described {
    let ports = if fragment.offset == 0 {
        ports(upper.protocol, upper.payload)
    } else {
        String::new()
    };
    let label = format!(
        "{}{ports} fragment id={:#010x} off={} len={}{}",
        protocol_name(upper.protocol),
        fragment.ident,
        fragment.offset,
        fragment.len,
        if fragment.more { " MF" } else { "" }
    );
    match upper.protocol {
        IpProtocol::Udp => Described::new(label, PacketKind::Udp),
        _ => Described::other(label),
    }
}

impl Decoder {
    pub(super) fn ipv6(&mut self, data: &[u8]) -> Result<Arrow, &'static str> {
        let ip = Ipv6Packet::new_checked(data).map_err(|_| "malformed or truncated IPv6")?;
        if ip.version() != 6 {
            return Err("malformed or truncated IPv6");
        }
        let (src, dst) = (ip.src_addr(), ip.dst_addr());
        let addresses = AddressPair::V6 { src, dst };
        let upper =
            upper_layer(ip.next_header(), ip.payload()).ok_or("malformed IPv6 extension header")?;
        let mut marks = Vec::new();
        let mut receiver = dst;
        let described = match upper.fragment {
            // An atomic fragment (offset 0, no more) is a whole packet.
            Some(fragment) if fragment.offset != 0 || fragment.more => {
                fragment_of(&upper, fragment)
            }
            _ => match upper.protocol {
                IpProtocol::Tcp => self.tcp(addresses, upper.payload, &mut marks),
                IpProtocol::Udp => udp(addresses, upper.payload, &mut marks),
                IpProtocol::Icmpv6 => {
                    let message = icmpv6(src, dst, upper.payload, &mut marks);
                    receiver = message.receiver.unwrap_or(dst);
                    message.described
                }
                _ => return Err("other IPv6 protocol"),
            },
        };
        Ok(Arrow::new(
            src.to_string(),
            receiver.to_string(),
            described,
            marks,
        ))
    }
}

/// The addresses and TCP bytes of an IPv6 packet that carries a whole TCP segment (an atomic fragment is
/// whole), past the extension headers.
pub(super) fn tcp_of_ipv6(data: &[u8]) -> Option<(AddressPair, &[u8])> {
    let ip = Ipv6Packet::new_checked(data).ok()?;
    if ip.version() != 6 {
        return None;
    }
    let upper = upper_layer(ip.next_header(), ip.payload())?;
    if upper.fragment.is_some_and(|f| f.offset != 0 || f.more) || upper.protocol != IpProtocol::Tcp
    {
        return None;
    }
    let addresses = AddressPair::V6 {
        src: ip.src_addr(),
        dst: ip.dst_addr(),
    };
    Some((addresses, upper.payload))
}

/// ` (UDP 40000→12000)` for the IPv6 packet an ICMPv6 error quotes (its header, then as much of the rest as
/// fits), or nothing if it cannot be read.
pub(super) fn quoted_packet(data: &[u8]) -> String {
    let (Some(header), Some(rest)) = (data.get(..HEADER_LEN), data.get(HEADER_LEN..)) else {
        return String::new();
    };
    let (Some(&version), Some(&next)) = (header.first(), header.get(6)) else {
        return String::new();
    };
    if version >> 4 != 6 {
        return String::new();
    }
    // The quoted packet is cut where the error message ends: an extension header cut there shows nothing.
    let Some(upper) = upper_layer(IpProtocol::from(next), rest) else {
        return String::new();
    };
    let ports = match upper.fragment {
        Some(fragment) if fragment.offset != 0 => String::new(),
        _ => ports(upper.protocol, upper.payload),
    };
    format!(" ({}{ports})", protocol_name(upper.protocol))
}

/// The (source, destination) ports of the TCP or UDP packet an ICMPv6 error quotes (a first fragment's too),
/// if they can be read.
pub(super) fn quoted_ports(data: &[u8]) -> Option<(u16, u16)> {
    let (header, rest) = (data.get(..HEADER_LEN)?, data.get(HEADER_LEN..)?);
    if header.first()? >> 4 != 6 {
        return None;
    }
    let upper = upper_layer(IpProtocol::from(*header.get(6)?), rest)?;
    if upper.fragment.is_some_and(|fragment| fragment.offset != 0) {
        return None;
    }
    match (upper.protocol, upper.payload.get(..4)?) {
        (IpProtocol::Tcp | IpProtocol::Udp, &[a, b, c, d]) => {
            Some((u16::from_be_bytes([a, b]), u16::from_be_bytes([c, d])))
        }
        _ => None,
    }
}

/// The address an IPv6 header field holds, from 16 bytes.
pub(super) fn address_at(data: &[u8], at: usize) -> Option<Ipv6Address> {
    let octets: [u8; 16] = data.get(at..at.checked_add(16)?)?.try_into().ok()?;
    Some(Ipv6Address::from(octets))
}
