//! Checksum and segmentation offload on TUN/TAP through the virtio-net header (`IFF_VNET_HDR` +
//! `TUNSETOFFLOAD(TUN_F_CSUM | TUN_F_TSO4)`).
//!
//! With it, every frame read or written starts with a 10-byte [`VnetHeader`], and the kernel and smoltalk stop
//! computing TCP checksums for each other, and stop cutting TCP streams into MTU-sized packets for each other:
//!
//! - Frames the kernel sends say `NEEDS_CSUM` (the kernel's own packets, checksum only over the pseudo-header)
//!   or `DATA_VALID` (already verified). TCP ones go to smoltcp unverified (it is set not to check TCP); UDP ones
//!   marked `NEEDS_CSUM` have their checksum completed here, since smoltcp checks UDP. A TCP frame with neither
//!   flag (forwarded from elsewhere) is verified here and dropped if wrong.
//! - TCP segments smoltcp sends go out with the pseudo-header sum in the checksum field and `NEEDS_CSUM`: the
//!   kernel delivers them locally without a checksum pass, and completes the checksum itself if it forwards them.
//! - With [`Offload::Segmentation`] (TSO4), smoltcp builds TCP segments of up to 64 KiB and says at what size to
//!   cut them (`PacketMeta::segmentation_offload_size`); they leave with `gso_type` TCPV4 and that `gso_size`,
//!   and the kernel delivers them whole or cuts them if it forwards them. The other way, the kernel hands the
//!   device TCP super-packets of up to 64 KiB with `gso_type` TCPV4 (what it would have cut into MSS-sized
//!   segments), which smoltcp takes whole: one read and one pass through smoltcp for up to 44 segments at MTU 1500.
//!
//! The `tun-tap` crate cannot ask for the header, so the device is opened here (through
//! [`crate::sys::open_tun`]) with the same ioctl plus `IFF_VNET_HDR`. Only IPv4 is handled (smoltalk's core is
//! IPv4-only).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

use crate::sys::{self, TunMode};

/// Length of the virtio-net header in front of every frame.
pub const VNET_HEADER_LEN: usize = 10;

const NEEDS_CSUM: u8 = 1;
const DATA_VALID: u8 = 2;
const GSO_NONE: u8 = 0;
const GSO_TCPV4: u8 = 1;
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
    /// Segmentation offload type: 0, none; 1, TCP over IPv4 (the only one smoltalk negotiates).
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
    /// TCP checksums and TCP segmentation both ways (`TUN_F_CSUM | TUN_F_TSO4`): packets of up to 64 KiB.
    Segmentation,
}

impl Offload {
    /// The `TUNSETOFFLOAD` flags that ask for this.
    fn flags(self) -> u32 {
        match self {
            Offload::None => 0,
            Offload::Checksum => libc::TUN_F_CSUM,
            Offload::Segmentation => libc::TUN_F_CSUM | libc::TUN_F_TSO4,
        }
    }

    /// A line for people.
    pub fn describe(self) -> &'static str {
        match self {
            Offload::None => "no offload",
            Offload::Checksum => "TCP checksum offload",
            Offload::Segmentation => "TCP segmentation (TSO4) and checksum offload",
        }
    }
}

/// Asks the device for `wanted` through `set` (which issues `TUNSETOFFLOAD` with the flags it is given), and
/// for less if the kernel refuses: a kernel without TSO4 on TUN/TAP still gets checksum offload. Returns what
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

/// One's-complement sum of `data` as big-endian 16-bit words, not folded.
fn sum(data: &[u8], mut acc: u64) -> u64 {
    let (chunks, rest) = data.as_chunks::<8>();
    for c in chunks {
        acc += u64::from(u16::from_be_bytes([c[0], c[1]]))
            + u64::from(u16::from_be_bytes([c[2], c[3]]))
            + u64::from(u16::from_be_bytes([c[4], c[5]]))
            + u64::from(u16::from_be_bytes([c[6], c[7]]));
    }
    let (pairs, odd) = rest.as_chunks::<2>();
    for p in pairs {
        acc += u64::from(u16::from_be_bytes(*p));
    }
    if let Some(b) = odd.first() {
        acc += u64::from(u16::from_be_bytes([*b, 0]));
    }
    acc
}

fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// What [`receive`] and [`transmit`] need of an IPv4 header.
struct Ipv4Info {
    header_len: usize,
    protocol: u8,
    total_len: usize,
    fragment: bool,
}

/// Reads the IPv4 header at `frame[l3..]`, if the frame carries IPv4 (on TAP, `l3 == 14`: EtherType 0x0800)
/// and the header is consistent with the frame.
fn ipv4(frame: &[u8], l3: usize) -> Option<Ipv4Info> {
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

fn pseudo_header_sum(ip: &[u8], protocol: u8, l4_len: usize) -> u64 {
    sum(&ip[12..20], 0) + u64::from(protocol) + l4_len as u64
}

/// What to do with a frame read from the device.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Hand it to smoltcp.
    Accept,
    /// Drop it, for this reason.
    Drop(&'static str),
}

/// Prepares a received frame (`l3` bytes of link header, then IP) for smoltcp, which checks every checksum but
/// TCP's: completes a partial UDP checksum, verifies a TCP checksum nobody vouched for. With `segmentation`
/// agreed, a TCP super-packet (`gso_type` TCPV4) is let in whole; any other segmentation frame is dropped.
pub fn receive(header: VnetHeader, frame: &mut [u8], l3: usize, segmentation: bool) -> Verdict {
    let gso = header.gso_type & !GSO_ECN;
    if gso != GSO_NONE && !(segmentation && gso == GSO_TCPV4) {
        return Verdict::Drop("segmentation offload frame of a kind not negotiated");
    }
    let Some(ip) = ipv4(frame, l3) else {
        if gso != GSO_NONE {
            return Verdict::Drop("TCPV4 super-packet that is not IPv4");
        }
        // Not IPv4 (ARP, IPv6) or malformed: nothing of ours to fix; smoltcp checks or drops the rest.
        return Verdict::Accept;
    };
    if gso != GSO_NONE && (ip.protocol != TCP || ip.fragment) {
        return Verdict::Drop("TCPV4 super-packet that is not one TCP segment");
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
    let (start, end) = (l3 + ip.header_len, l3 + ip.total_len);
    if header.flags & NEEDS_CSUM != 0 {
        // The kernel's packet: the field holds the pseudo-header sum, the rest is ours to add if anyone checks.
        if ip.protocol == UDP {
            let from = usize::from(header.csum_start);
            let field = from + usize::from(header.csum_offset);
            if from < start || field + 2 > end {
                return Verdict::Drop("checksum offsets outside the UDP datagram");
            }
            let checksum = match !fold(sum(&frame[from..end], 0)) {
                0 => 0xffff, // 0 means "no checksum" in UDP
                c => c,
            };
            frame[field..field + 2].copy_from_slice(&checksum.to_be_bytes());
        }
        return Verdict::Accept;
    }
    if !vouched && ip.protocol == TCP {
        let acc = pseudo_header_sum(&frame[l3..], TCP, ip.total_len - ip.header_len)
            + sum(&frame[start..end], 0);
        if fold(acc) != 0xffff {
            return Verdict::Drop("bad TCP checksum");
        }
    }
    Verdict::Accept
}

/// Prepares a frame smoltcp built (TCP checksum left zero) for the device: puts the pseudo-header sum in the TCP
/// checksum field and returns the header asking the kernel to finish the checksum if it ever needs it. With
/// `segment` (smoltcp's `segmentation_offload_size`), a TCP segment whose payload is longer goes as a TCPV4
/// super-packet, to be cut into segments of that many payload bytes.
pub fn transmit(frame: &mut [u8], l3: usize, segment: Option<u16>) -> VnetHeader {
    match ipv4(frame, l3) {
        Some(ip) if ip.protocol == TCP && !ip.fragment && ip.total_len - ip.header_len >= 20 => {
            let start = l3 + ip.header_len;
            let tcp_len = ip.total_len - ip.header_len;
            let partial = fold(pseudo_header_sum(&frame[l3..], TCP, tcp_len));
            frame[start + 16..start + 18].copy_from_slice(&partial.to_be_bytes());
            let mut header = VnetHeader {
                flags: NEEDS_CSUM,
                gso_type: GSO_NONE,
                hdr_len: 0,
                gso_size: 0,
                csum_start: start as u16,
                csum_offset: 16,
            };
            // The TCP header's length, from its data offset (smoltcp wrote it: 20 to 60 bytes).
            let tcp_header_len = usize::from(frame[start + 12] >> 4) * 4;
            if let Some(mss) = segment {
                if tcp_len > tcp_header_len + usize::from(mss) {
                    header.gso_type = GSO_TCPV4;
                    header.gso_size = mss;
                    header.hdr_len = (start + tcp_header_len) as u16;
                }
            }
            header
        }
        // smoltcp computed every other checksum itself (and never fragments TCP: segments fit the MTU, or go
        // as super-packets the kernel cuts).
        _ => VnetHeader::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A TCP/IPv4 packet with a correct checksum (made with smoltcp's own emitter).
    fn tcp_packet(payload: &[u8]) -> Vec<u8> {
        use smoltcp::phy::ChecksumCapabilities;
        use smoltcp::wire::{
            IpProtocol, Ipv4Address, Ipv4Packet, Ipv4Repr, TcpPacket, TcpRepr, TcpSeqNumber,
        };
        let (src, dst) = (
            Ipv4Address::new(10, 0, 2, 2),
            Ipv4Address::new(10, 0, 2, 15),
        );
        let tcp = TcpRepr {
            src_port: 40000,
            dst_port: 12000,
            control: smoltcp::wire::TcpControl::Psh,
            seq_number: TcpSeqNumber(7),
            ack_number: Some(TcpSeqNumber(9)),
            window_len: 512,
            window_scale: None,
            max_seg_size: None,
            sack_permitted: false,
            sack_ranges: [None, None, None],
            timestamp: None,
            payload,
        };
        let ip = Ipv4Repr {
            src_addr: src,
            dst_addr: dst,
            next_header: IpProtocol::Tcp,
            payload_len: tcp.buffer_len(),
            hop_limit: 64,
        };
        let mut buf = vec![0u8; ip.buffer_len() + tcp.buffer_len()];
        let caps = ChecksumCapabilities::default();
        let mut packet = Ipv4Packet::new_unchecked(&mut buf);
        ip.emit(&mut packet, &caps);
        tcp.emit(
            &mut TcpPacket::new_unchecked(packet.payload_mut()),
            &src.into(),
            &dst.into(),
            &caps,
        );
        buf
    }

    #[test]
    fn header_round_trip() {
        let h = VnetHeader {
            flags: NEEDS_CSUM,
            gso_type: GSO_TCPV4,
            hdr_len: 40,
            gso_size: 1460,
            csum_start: 20,
            csum_offset: 16,
        };
        let mut out = [0xffu8; VNET_HEADER_LEN];
        h.emit(&mut out);
        assert_eq!(VnetHeader::parse(&out), Some(h));
        assert_eq!(VnetHeader::parse(&out[..9]), None);
    }

    #[test]
    fn partial_checksum_completes_to_the_real_one() {
        let good = tcp_packet(b"hello, offload");
        let mut frame = good.clone();
        frame[36..38].fill(0); // what smoltcp leaves with the TCP checksum not computed
        let header = transmit(&mut frame, 0, None);
        assert_eq!(
            (header.flags, header.csum_start, header.csum_offset),
            (NEEDS_CSUM, 20, 16)
        );
        // Finish it the way the kernel would: the sum from csum_start, complemented, at csum_offset.
        let finished = !fold(sum(&frame[20..], 0));
        frame[36..38].copy_from_slice(&finished.to_be_bytes());
        assert_eq!(frame, good);
    }

    #[test]
    fn unvouched_tcp_is_verified() {
        let good = tcp_packet(b"check me");
        let mut frame = good.clone();
        assert_eq!(
            receive(VnetHeader::default(), &mut frame, 0, false),
            Verdict::Accept
        );
        frame[45] ^= 0x01; // corrupt the payload
        assert_eq!(
            receive(VnetHeader::default(), &mut frame, 0, false),
            Verdict::Drop("bad TCP checksum")
        );
        let valid = VnetHeader {
            flags: DATA_VALID,
            ..VnetHeader::default()
        };
        assert_eq!(receive(valid, &mut frame, 0, false), Verdict::Accept);
    }

    #[test]
    fn unvouched_tcp_fragments_are_refused() {
        let mut frame = tcp_packet(b"fragmented");
        frame[6] = 0x20; // More Fragments
        assert_eq!(
            receive(VnetHeader::default(), &mut frame, 0, false),
            Verdict::Drop("TCP in IP fragments, checksum not verifiable")
        );
        let valid = VnetHeader {
            flags: DATA_VALID,
            ..VnetHeader::default()
        };
        assert_eq!(receive(valid, &mut frame, 0, false), Verdict::Accept);
    }

    #[test]
    fn tap_frames_are_read_as_ipv4_only_with_its_ethertype() {
        let ip = tcp_packet(b"over ethernet");
        let mut frame = vec![0u8; 14];
        frame[12..14].copy_from_slice(&[0x08, 0x00]);
        frame.extend_from_slice(&ip);
        assert_eq!(transmit(&mut frame.clone(), 14, None).csum_start, 34);
        frame[12..14].copy_from_slice(&[0x86, 0xdd]); // IPv6 EtherType: left alone
        assert_eq!(transmit(&mut frame, 14, None), VnetHeader::default());
    }

    #[test]
    fn long_segments_go_as_super_packets_cut_at_smoltcps_size() {
        let payload = vec![b'x'; 4000];
        let mut frame = tcp_packet(&payload);
        let header = transmit(&mut frame, 0, Some(1460));
        assert_eq!(
            (header.gso_type, header.gso_size, header.hdr_len),
            (GSO_TCPV4, 1460, 40)
        );
        assert_eq!((header.flags, header.csum_start), (NEEDS_CSUM, 20));
        // Short enough for one segment: no segmentation, even if smoltcp named a size.
        let mut short = tcp_packet(&payload[..1460]);
        assert_eq!(transmit(&mut short, 0, Some(1460)).gso_type, GSO_NONE);
        assert_eq!(transmit(&mut frame, 0, None).gso_type, GSO_NONE);
        // On TAP the Ethernet header counts in.
        let mut tap = vec![0u8; 14];
        tap[12..14].copy_from_slice(&[0x08, 0x00]);
        tap.extend_from_slice(&tcp_packet(&payload));
        assert_eq!(transmit(&mut tap, 14, Some(1448)).hdr_len, 54);
    }

    #[test]
    fn super_packets_are_taken_only_when_agreed_and_only_tcp() {
        let mut frame = tcp_packet(&vec![b'y'; 3000]);
        let gso = VnetHeader {
            flags: NEEDS_CSUM,
            gso_type: GSO_TCPV4,
            hdr_len: 40,
            gso_size: 1460,
            csum_start: 20,
            csum_offset: 16,
        };
        assert_eq!(receive(gso, &mut frame, 0, true), Verdict::Accept);
        assert_eq!(
            receive(gso, &mut frame, 0, false),
            Verdict::Drop("segmentation offload frame of a kind not negotiated")
        );
        let udp = VnetHeader {
            gso_type: 5, // VIRTIO_NET_HDR_GSO_UDP_L4, never asked for
            ..gso
        };
        assert_eq!(
            receive(udp, &mut frame, 0, true),
            Verdict::Drop("segmentation offload frame of a kind not negotiated")
        );
        frame[9] = UDP;
        assert_eq!(
            receive(gso, &mut frame, 0, true),
            Verdict::Drop("TCPV4 super-packet that is not one TCP segment")
        );
    }

    #[test]
    fn a_kernel_without_tso4_gets_checksum_offload() {
        let mut asked = Vec::new();
        let agreed = negotiate("t0", Offload::Segmentation, |flags| {
            asked.push(flags);
            if flags & libc::TUN_F_TSO4 != 0 {
                Err(io::Error::from_raw_os_error(libc::EINVAL))
            } else {
                Ok(())
            }
        });
        assert_eq!(agreed.ok(), Some(Offload::Checksum));
        assert_eq!(
            asked,
            [libc::TUN_F_CSUM | libc::TUN_F_TSO4, libc::TUN_F_CSUM]
        );
        // Refusing checksum offload too is an error, not a silent plain device.
        let refused = negotiate("t0", Offload::Segmentation, |_| {
            Err(io::Error::from_raw_os_error(libc::EINVAL))
        });
        assert!(refused.is_err());
        let asked_for_less = negotiate("t0", Offload::Checksum, |flags| {
            assert_eq!(flags, libc::TUN_F_CSUM);
            Ok(())
        });
        assert_eq!(asked_for_less.ok(), Some(Offload::Checksum));
    }

    #[test]
    fn a_segments_connection_and_payload_are_read_from_its_headers() {
        let frame = tcp_packet(&[b'z'; 1000]);
        assert_eq!(tcp_payload(&frame, 0), Some(((40000 << 16) | 12000, 1000)));
        let mut udp = frame.clone();
        udp[9] = UDP;
        assert_eq!(tcp_payload(&udp, 0), None);
        let mut fragment = frame.clone();
        fragment[6] = 0x20;
        assert_eq!(tcp_payload(&fragment, 0), None);
        assert_eq!(tcp_payload(&frame[..30], 0), None);
        // On TAP, only behind the IPv4 EtherType.
        let mut tap = vec![0u8; 14];
        tap[12..14].copy_from_slice(&[0x08, 0x06]);
        tap.extend_from_slice(&frame);
        assert_eq!(tcp_payload(&tap, 14), None);
        assert_eq!(tcp_payload(&[], 14), None);
    }

    #[test]
    fn malformed_frames_do_not_panic() {
        for len in 0..64 {
            let mut frame = vec![0x45u8; len];
            let h = VnetHeader {
                flags: NEEDS_CSUM,
                gso_type: GSO_TCPV4,
                csum_start: 60000,
                csum_offset: 60000,
                ..VnetHeader::default()
            };
            let _ = receive(h, &mut frame, 0, true);
            let _ = receive(VnetHeader::default(), &mut frame, 14, true);
            let _ = transmit(&mut frame, 0, Some(536));
            let _ = tcp_payload(&frame, 0);
            let _ = tcp_payload(&frame, 14);
        }
    }
}
