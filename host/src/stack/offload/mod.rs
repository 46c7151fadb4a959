//! Checksum and segmentation offload on TUN/TAP through the virtio-net header (`IFF_VNET_HDR` +
//! `TUNSETOFFLOAD(TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6)`), for TCP and UDP over IPv4 and IPv6.
//!
//! With it, every frame read or written starts with a 10-byte [`VnetHeader`], and the kernel and smoltalk stop
//! computing TCP checksums for each other, and stop cutting TCP streams into MTU-sized packets for each other:
//!
//! - Frames the kernel sends say `NEEDS_CSUM` (the kernel's own packets, checksum only over the pseudo-header)
//!   or `DATA_VALID` (already verified). TCP ones go to smoltcp unverified (it is set not to check TCP); UDP ones
//!   marked `NEEDS_CSUM` have their checksum completed here, since smoltcp checks UDP. A TCP frame with neither
//!   flag (forwarded from elsewhere) is verified here, over the IPv4 or the IPv6 pseudo-header, and dropped if
//!   wrong.
//! - TCP segments smoltcp sends go out with the pseudo-header sum in the checksum field and `NEEDS_CSUM`: the
//!   kernel delivers them locally without a checksum pass, and completes the checksum itself if it forwards them.
//!   (smoltcp is told the device does TCP checksums for both IP versions, so without this its IPv6 segments
//!   would leave with a checksum of 0 and the kernel would drop them.)
//! - With [`Offload::Segmentation`] (TSO4), smoltcp builds IPv4 TCP segments of up to 64 KiB and says at what
//!   size to cut them (`PacketMeta::segmentation_offload_size`); they leave with `gso_type` TCPV4 and that
//!   `gso_size`, and the kernel delivers them whole or cuts them if it forwards them. The other way (TSO4 and
//!   TSO6), the kernel hands the device TCP super-packets of up to 64 KiB with `gso_type` TCPV4 or TCPV6 (what it
//!   would have cut into MSS-sized segments), which smoltcp takes whole: one read and one pass through smoltcp for
//!   up to 44 segments at MTU 1500.
//! - smoltcp 0.14 cannot send IPv6 super-packets, so its IPv6 segments are at most the MSS, checksum offloaded
//!   all the same. Its TCP socket would build them (with `SegmentationCapabilities::tcpv6`), but its interface
//!   drops every IPv6 packet longer than the MTU ("IPv6 fragmentation support is unimplemented") and never hands
//!   the device the segment size for IPv6 (`TxToken::set_meta` is called on the IPv4 path only): a device that
//!   claimed `tcpv6` would have every large IPv6 write silently lost. So the device claims `tcpv4` only (see
//!   [`crate::stack::device`]), and with TSO6 agreed it joins a connection's consecutive IPv6 segments back into
//!   super-packets of up to 64 KiB itself ([`SegmentCoalescer`]), which [`transmit`] marks TCPV6 with the first
//!   segment's payload length as the size.
//!
//! Of IPv6's extension headers, only a Hop-by-Hop header in front of the transport header is looked past, as
//! smoltcp does; smoltcp takes no packet with another one for TCP or UDP, so such packets are left alone here.
//!
//! The `tun-tap` crate cannot ask for the header, so the device is opened here (through
//! [`crate::sys::open_tun`]) with the same ioctl plus `IFF_VNET_HDR`.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

use crate::sys::{self, TunMode};

mod checksum;
mod coalesce;
mod ip;

use checksum::{fold, sum};
pub use coalesce::{Offered, SegmentCoalescer, COALESCED_FLOWS, MAX_SUPER_PACKET};
pub use ip::tcp_payload;
use ip::Version;

/// Length of the virtio-net header in front of every frame.
pub const VNET_HEADER_LEN: usize = 10;

const NEEDS_CSUM: u8 = 1;
const DATA_VALID: u8 = 2;
const GSO_NONE: u8 = 0;
const GSO_TCPV4: u8 = 1;
const GSO_TCPV6: u8 = 4;
/// The congestion-experienced bit of `gso_type` (only with `TUN_F_TSO_ECN`, which smoltalk does not ask for).
const GSO_ECN: u8 = 0x80;
const TCP: u8 = 6;
const UDP: u8 = 17;

/// The virtio-net header (legacy layout, in the machine's byte order, as the kernel reads it without
/// `TUNSETVNETLE`/`TUNSETVNETBE`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VnetHeader {
    /// `NEEDS_CSUM` (1), `DATA_VALID` (2).
    pub flags: u8,
    /// Segmentation offload type: 0, none; 1, TCP over IPv4; 4, TCP over IPv6 (the two smoltalk negotiates).
    pub gso_type: u8,
    /// With segmentation: the length of the headers (link, IP, TCP) in front of the payload.
    pub hdr_len: u16,
    /// With segmentation: the payload bytes of each segment the packet is cut into (the MSS).
    pub gso_size: u16,
    /// Where the checksummed part starts, from the start of the frame.
    pub csum_start: u16,
    /// Where the checksum field is, from `csum_start`.
    pub csum_offset: u16,
}

impl VnetHeader {
    /// Reads a header; `None` if `bytes` is too short.
    pub fn parse(bytes: &[u8]) -> Option<VnetHeader> {
        let h = bytes.get(..VNET_HEADER_LEN)?;
        Some(VnetHeader {
            flags: h[0],
            gso_type: h[1],
            hdr_len: u16::from_ne_bytes([h[2], h[3]]),
            gso_size: u16::from_ne_bytes([h[4], h[5]]),
            csum_start: u16::from_ne_bytes([h[6], h[7]]),
            csum_offset: u16::from_ne_bytes([h[8], h[9]]),
        })
    }

    /// Writes the header into the first [`VNET_HEADER_LEN`] bytes of `out`.
    pub fn emit(&self, out: &mut [u8]) {
        if let Some(h) = out.get_mut(..VNET_HEADER_LEN) {
            h.fill(0);
            h[0] = self.flags;
            h[1] = self.gso_type;
            h[2..4].copy_from_slice(&self.hdr_len.to_ne_bytes());
            h[4..6].copy_from_slice(&self.gso_size.to_ne_bytes());
            h[6..8].copy_from_slice(&self.csum_start.to_ne_bytes());
            h[8..10].copy_from_slice(&self.csum_offset.to_ne_bytes());
        }
    }
}

/// How much of its work smoltcp hands to the kernel through the virtio-net header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Offload {
    /// No header: every TCP checksum computed and verified by both sides, every packet at most the MTU.
    None,
    /// TCP checksums (`TUN_F_CSUM`).
    Checksum,
    /// TCP checksums and TCP segmentation (`TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6`): packets of up to 64 KiB both
    /// ways, smoltcp's over IPv6 joined from its MSS-sized segments by the device (see the module's doc).
    Segmentation,
}

impl Offload {
    /// The `TUNSETOFFLOAD` flags that ask for this.
    fn flags(self) -> u32 {
        match self {
            Offload::None => 0,
            Offload::Checksum => libc::TUN_F_CSUM,
            Offload::Segmentation => libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6,
        }
    }

    /// A line for people.
    pub fn describe(self) -> &'static str {
        match self {
            Offload::None => "no offload",
            Offload::Checksum => "TCP checksum offload",
            Offload::Segmentation => "TCP segmentation (TSO4, TSO6) and checksum offload",
        }
    }
}

/// Asks the device for `wanted` through `set` (which issues `TUNSETOFFLOAD` with the flags it is given), and
/// for less if the kernel refuses: a kernel without TSO on TUN/TAP still gets checksum offload. Returns what
/// was agreed; an error only if even checksum offload is refused.
pub fn negotiate(
    name: &str,
    wanted: Offload,
    mut set: impl FnMut(u32) -> io::Result<()>,
) -> io::Result<Offload> {
    let mut level = wanted;
    loop {
        match set(level.flags()) {
            Ok(()) => return Ok(level),
            Err(e) if level == Offload::Segmentation => {
                log::warn!(
                    "{name}: the kernel refused TCP segmentation offload ({e}); falling back to checksum \
                     offload, one packet per MTU"
                );
                level = Offload::Checksum;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Opens TUN (`tap == false`) or TAP device `name` with the virtio-net header, non-blocking (with `napi`,
/// through the device's NAPI queue), and negotiates `wanted` (see [`negotiate`]); returns the device, its name
/// and the offload agreed.
pub fn open(
    name: &str,
    tap: bool,
    wanted: Offload,
    napi: bool,
) -> io::Result<(File, String, Offload)> {
    let mode = if tap { TunMode::Tap } else { TunMode::Tun };
    let (file, name) = sys::open_tun(name, mode, true, napi)?;
    let fd = file.as_raw_fd();
    let agreed = negotiate(&name, wanted, |flags| sys::set_tun_offload(fd, flags))?;
    Ok((file, name, agreed))
}

/// Turns the device's offload off. The setting belongs to the device, not to the open descriptor: it outlives
/// the program that set it, so a plain (header-less) user must clear it, or the kernel keeps handing over
/// frames with unfinished checksums.
pub fn clear_offload(fd: std::os::fd::RawFd) -> io::Result<()> {
    sys::set_tun_offload(fd, 0)
}

/// What to do with a frame read from the device.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Hand it to smoltcp.
    Accept,
    /// Drop it, for this reason.
    Drop(&'static str),
}

/// Prepares a received frame (`l3` bytes of link header, then IPv4 or IPv6) for smoltcp, which checks every
/// checksum but TCP's: completes a partial UDP checksum, verifies a TCP checksum nobody vouched for. With
/// `segmentation` agreed, a TCP super-packet (`gso_type` TCPV4 on IPv4, TCPV6 on IPv6) is let in whole; any other
/// segmentation frame is dropped.
pub fn receive(header: VnetHeader, frame: &mut [u8], l3: usize, segmentation: bool) -> Verdict {
    let gso = header.gso_type & !GSO_ECN;
    if gso != GSO_NONE && !(segmentation && (gso == GSO_TCPV4 || gso == GSO_TCPV6)) {
        return Verdict::Drop("segmentation offload frame of a kind not negotiated");
    }
    let Some(ip) = ip::parse(frame, l3) else {
        return match gso {
            GSO_NONE => {
                // Not IP (ARP) or malformed: nothing of ours to fix; smoltcp checks or drops the rest.
                Verdict::Accept
            }
            GSO_TCPV4 => Verdict::Drop("TCPV4 super-packet that is not IPv4"),
            _ => Verdict::Drop("TCPV6 super-packet that is not IPv6"),
        };
    };
    if gso != GSO_NONE {
        if gso != ip.gso_tcp() {
            return Verdict::Drop(
                "super-packet whose segmentation type is for the other IP version",
            );
        }
        if ip.protocol != TCP || ip.fragment {
            return Verdict::Drop(match ip.version {
                Version::V4 => "TCPV4 super-packet that is not one TCP segment",
                Version::V6 => "TCPV6 super-packet that is not one TCP segment",
            });
        }
    }
    let vouched = header.flags & (NEEDS_CSUM | DATA_VALID) != 0;
    if ip.fragment {
        // smoltcp reassembles fragments, then trusts TCP checksums: a fragmented TCP segment nobody vouched for
        // cannot be checked here, so it is not let in. (UDP fragments are checked by smoltcp after reassembly.)
        if ip.protocol == TCP && header.flags & DATA_VALID == 0 {
            return Verdict::Drop("TCP in IP fragments, checksum not verifiable");
        }
        return Verdict::Accept;
    }
    let (start, end) = (ip.l4, ip.end);
    if header.flags & NEEDS_CSUM != 0 {
        // The kernel's packet: the field holds the pseudo-header sum, the rest is ours to add if anyone checks.
        if ip.protocol == UDP {
            let from = usize::from(header.csum_start);
            let field = from + usize::from(header.csum_offset);
            if from < start || field + 2 > end {
                return Verdict::Drop("checksum offsets outside the UDP datagram");
            }
            // In bounds: `end` is within the frame (ip::parse saw to it).
            let datagram = frame.get(from..end).unwrap_or_default();
            // 0 means "no checksum" in UDP (over IPv4; over IPv6, where the checksum is a must, it is invalid).
            let checksum = match !fold(sum(datagram, 0)) {
                0 => 0xffff,
                c => c,
            };
            if let Some(at) = frame.get_mut(field..field + 2) {
                at.copy_from_slice(&checksum.to_be_bytes());
            }
        }
        return Verdict::Accept;
    }
    if !vouched && ip.protocol == TCP {
        let segment = frame.get(start..end).unwrap_or_default();
        if fold(ip.pseudo_header_sum(frame, TCP) + sum(segment, 0)) != 0xffff {
            return Verdict::Drop("bad TCP checksum");
        }
    }
    Verdict::Accept
}

/// Prepares a frame smoltcp built (TCP checksum left zero) for the device: puts the pseudo-header sum in the TCP
/// checksum field and returns the header asking the kernel to finish the checksum if it ever needs it. With
/// `segment` (smoltcp's `segmentation_offload_size`), a TCP segment whose payload is longer goes as a super-packet
/// (TCPV4 or TCPV6, after the IP version), to be cut into segments of that many payload bytes.
pub fn transmit(frame: &mut [u8], l3: usize, segment: Option<u16>) -> VnetHeader {
    let Some(ip) = ip::parse(frame, l3).filter(|ip| ip.protocol == TCP && !ip.fragment) else {
        // smoltcp computed every other checksum itself (and never fragments TCP: segments fit the MTU, or go as
        // super-packets the kernel cuts).
        return VnetHeader::default();
    };
    let start = ip.l4;
    let tcp_len = ip.l4_len();
    // The TCP header's length, from its data offset (smoltcp wrote it: 20 to 60 bytes).
    let tcp_header_len = match frame.get(start + 12) {
        Some(offset) if tcp_len >= 20 => usize::from(offset >> 4) * 4,
        _ => return VnetHeader::default(),
    };
    let partial = fold(ip.pseudo_header_sum(frame, TCP));
    if let Some(field) = frame.get_mut(start + 16..start + 18) {
        field.copy_from_slice(&partial.to_be_bytes());
    }
    let mut header = VnetHeader {
        flags: NEEDS_CSUM,
        gso_type: GSO_NONE,
        hdr_len: 0,
        gso_size: 0,
        csum_start: start as u16,
        csum_offset: 16,
    };
    if let Some(mss) = segment {
        if tcp_len > tcp_header_len + usize::from(mss) {
            header.gso_type = ip.gso_tcp();
            header.gso_size = mss;
            header.hdr_len = (start + tcp_header_len) as u16;
        }
    }
    header
}

#[cfg(test)]
mod coalesce_tests;
#[cfg(test)]
mod ipv6_tests;
#[cfg(test)]
mod tests;
