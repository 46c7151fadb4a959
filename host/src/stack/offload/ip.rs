//! Reading the IP header of a frame: what [`super::receive`] and [`super::transmit`] need of it, for IPv4 and
//! IPv6 alike.

use std::ops::Range;

use super::checksum::sum;
use super::TCP;

/// The IP version of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Version {
    V4,
    V6,
}

/// IPv6's Hop-by-Hop Options header, the only extension header smoltcp reads (any other ends its walk, as it
/// ends it here: the packet is then of no transport protocol smoltalk knows).
const HOP_BY_HOP: u8 = 0;

/// What [`super::receive`] and [`super::transmit`] need of an IP header, the offsets from the start of the frame.
pub(super) struct IpInfo {
    pub(super) version: Version,
    /// The transport protocol: IPv4's protocol field; IPv6's next header, after a Hop-by-Hop header if there is
    /// one (an IPv6 fragment shows as its Fragment header, 44, never as TCP or UDP).
    pub(super) protocol: u8,
    /// Where the transport header starts.
    pub(super) l4: usize,
    /// Where the packet ends (link-layer padding after it is no part of it).
    pub(super) end: usize,
    /// An IPv4 fragment (More Fragments, or an offset).
    pub(super) fragment: bool,
    /// Where the source and destination addresses are, one after the other.
    addresses: Range<usize>,
}

impl IpInfo {
    /// The transport header and payload's length.
    pub(super) fn l4_len(&self) -> usize {
        self.end - self.l4
    }

    /// The one's-complement sum of the pseudo-header over the transport protocol `protocol` (not folded): the
    /// addresses, the protocol and the transport length (IPv4's 16-bit one and IPv6's 32-bit one sum alike).
    pub(super) fn pseudo_header_sum(&self, frame: &[u8], protocol: u8) -> u64 {
        let addresses = frame.get(self.addresses.clone()).unwrap_or_default();
        sum(addresses, 0) + u64::from(protocol) + self.l4_len() as u64
    }

    /// The segmentation type of a TCP super-packet of this version.
    pub(super) fn gso_tcp(&self) -> u8 {
        match self.version {
            Version::V4 => super::GSO_TCPV4,
            Version::V6 => super::GSO_TCPV6,
        }
    }
}

/// The big-endian `u16` at `bytes[at..]`, if the bytes are there.
pub(super) fn be16(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(
        bytes.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}

/// The big-endian `u32` at `bytes[at..]`, if the bytes are there.
pub(super) fn be32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(
        bytes.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

/// Reads the IP header at `frame[l3..]`, if the frame carries IPv4 or IPv6 (on TAP, `l3 == 14`: EtherType
/// 0x0800 or 0x86DD, and the header's version must agree) and the header is consistent with the frame.
pub(super) fn parse(frame: &[u8], l3: usize) -> Option<IpInfo> {
    let ip = frame.get(l3..)?;
    let version = *ip.first()? >> 4;
    if l3 == 14 {
        let ethertype = frame.get(12..14)?;
        let expected: [u8; 2] = match version {
            4 => [0x08, 0x00],
            6 => [0x86, 0xdd],
            _ => return None,
        };
        if ethertype != expected {
            return None;
        }
    }
    match version {
        4 => ipv4(ip, l3),
        6 => ipv6(ip, l3),
        _ => None,
    }
}

fn ipv4(ip: &[u8], l3: usize) -> Option<IpInfo> {
    let header_len = usize::from(*ip.first()? & 0x0f) * 4;
    let total_len = usize::from(be16(ip, 2)?);
    if header_len < 20 || total_len < header_len || total_len > ip.len() {
        return None;
    }
    Some(IpInfo {
        version: Version::V4,
        protocol: *ip.get(9)?,
        l4: l3 + header_len,
        end: l3 + total_len,
        // More fragments, or a fragment offset.
        fragment: be16(ip, 6)? & 0x3fff != 0,
        addresses: l3 + 12..l3 + 20,
    })
}

fn ipv6(ip: &[u8], l3: usize) -> Option<IpInfo> {
    const FIXED: usize = 40;
    let payload_len = usize::from(be16(ip, 4)?);
    let total_len = FIXED + payload_len;
    if total_len > ip.len() {
        return None;
    }
    let mut protocol = *ip.get(6)?;
    let mut l4 = FIXED;
    if protocol == HOP_BY_HOP {
        // Next header, then the header's length in 8-byte units, not counting the first 8.
        let next = *ip.get(l4)?;
        l4 += (usize::from(*ip.get(l4 + 1)?) + 1) * 8;
        protocol = next;
    }
    if l4 > total_len {
        return None;
    }
    Some(IpInfo {
        version: Version::V6,
        protocol,
        l4: l3 + l4,
        end: l3 + total_len,
        fragment: false,
        addresses: l3 + 8..l3 + FIXED,
    })
}

/// The connection (its two ports, as one number) and the payload length of the TCP segment in an IPv4 or IPv6
/// frame (`l3` bytes of link header first), if the frame is one whole TCP segment.
pub fn tcp_payload(frame: &[u8], l3: usize) -> Option<(u32, usize)> {
    let ip = parse(frame, l3).filter(|ip| ip.protocol == TCP && !ip.fragment)?;
    let tcp = frame.get(ip.l4..ip.end)?;
    let ports = be32(tcp, 0)?;
    let tcp_header_len = usize::from(*tcp.get(12)? >> 4) * 4;
    let payload = tcp.len().checked_sub(tcp_header_len)?;
    Some((ports, payload))
}
