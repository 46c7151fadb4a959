//! Reading the IP header of a frame: what [`super::receive`] and [`super::transmit`] need of it.

use super::checksum::sum;
use super::TCP;

/// What [`super::receive`] and [`super::transmit`] need of an IPv4 header.
pub(super) struct Ipv4Info {
    pub(super) header_len: usize,
    pub(super) protocol: u8,
    pub(super) total_len: usize,
    pub(super) fragment: bool,
}

/// Reads the IPv4 header at `frame[l3..]`, if the frame carries IPv4 (on TAP, `l3 == 14`: EtherType 0x0800)
/// and the header is consistent with the frame.
pub(super) fn ipv4(frame: &[u8], l3: usize) -> Option<Ipv4Info> {
    if l3 == 14 && frame.get(12..14)? != [0x08, 0x00] {
        return None;
    }
    let ip = frame.get(l3..)?;
    let version_ihl = *ip.first()?;
    if version_ihl >> 4 != 4 {
        return None;
    }
    let header_len = usize::from(version_ihl & 0x0f) * 4;
    let total_len = usize::from(u16::from_be_bytes([*ip.get(2)?, *ip.get(3)?]));
    if header_len < 20 || total_len < header_len || total_len > ip.len() {
        return None;
    }
    Some(Ipv4Info {
        header_len,
        protocol: *ip.get(9)?,
        total_len,
        // More fragments, or a fragment offset.
        fragment: u16::from_be_bytes([*ip.get(6)?, *ip.get(7)?]) & 0x3fff != 0,
    })
}

/// The connection (its two ports, as one number) and the payload length of the TCP segment in an IPv4 frame
/// (`l3` bytes of link header first), if the frame is one whole TCP segment.
pub fn tcp_payload(frame: &[u8], l3: usize) -> Option<(u32, usize)> {
    let ip = ipv4(frame, l3).filter(|ip| ip.protocol == TCP && !ip.fragment)?;
    let tcp = frame.get(l3 + ip.header_len..)?;
    let ports = u32::from_be_bytes([*tcp.first()?, *tcp.get(1)?, *tcp.get(2)?, *tcp.get(3)?]);
    let tcp_header_len = usize::from(*tcp.get(12)? >> 4) * 4;
    let payload = ip.total_len.checked_sub(ip.header_len + tcp_header_len)?;
    Some((ports, payload))
}

pub(super) fn pseudo_header_sum(ip: &[u8], protocol: u8, l4_len: usize) -> u64 {
    sum(&ip[12..20], 0) + u64::from(protocol) + l4_len as u64
}
