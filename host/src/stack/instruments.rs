//! Instruments for experiments on a smoltcp device: a packet capture (`--pcap`), fault injection
//! (`--drop-chance`, `--corrupt-chance`, `--size-limit`, `--rate-limit`, `--seed`) and a packet trace (`--trace`),
//! each built on smoltcp's own `phy` wrappers (`PcapWriter`, `FaultInjector`, `Tracer`), and a shaped link
//! (`--link-delay`, `--link-rate`: `crate::stack::delay_line`).
//!
//! [`CaptureFile`] is the sink the captures go to. smoltcp's own sink for `std::io::Write` panics when a write
//! fails (a full disk, say); this one logs the failure once and stops capturing, so the experiment goes on.
//! `--pcap -` is a live capture on standard output (`... --pcap - | wireshark -k -i -`): each packet is flushed
//! as it is written, one stream per process (a second capture of the same link type continues it), and
//! whatever smoltalk prints for people goes to standard error instead ([`standard_output_is_the_capture`]).

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use smoltcp::phy::{PcapLinkType, PcapSink};
use smoltcp::time::Instant;

use crate::stack::link_shape::LinkShape;
use crate::sys::PacketSocket;

/// What to wrap a smoltcp device in.
#[derive(Debug, Clone, Default)]
pub struct Instruments {
    /// Write every packet, both directions, to this pcap file.
    pub pcap: Option<PathBuf>,
    /// Faults to inject.
    pub faults: Faults,
    /// Print every packet (log target `smoltalk::trace`, debug level).
    pub trace: bool,
    /// Hold every packet, each direction, as a link of this shape would (unshaped: not at all).
    pub link: LinkShape,
}

impl Instruments {
    /// Whether any instrument is asked for (without one, the device runs bare).
    pub fn any(&self) -> bool {
        self.pcap.is_some() || self.faults.any() || self.trace || !self.link.is_none()
    }
}

/// Faults to inject, as smoltcp's `FaultInjector` takes them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    /// Percent of packets lost, each direction.
    pub drop_chance: u8,
    /// Percent of received packets with one byte changed (smoltcp 0.14's FaultInjector changes a sent packet's
    /// buffer before the stack writes it, so sent packets leave intact).
    pub corrupt_chance: u8,
    /// Packets longer than this are lost (0: no limit).
    pub size_limit: usize,
    /// At most this many packets per second each direction; the rest are lost (0: no limit).
    pub rate_limit: u64,
    /// Seed of the fault generator (not 0, which smoltcp's generator never leaves): the same seed gives the
    /// same faults for the same packets.
    pub seed: u32,
}

impl Faults {
    /// Whether any fault is asked for.
    pub fn any(&self) -> bool {
        self.drop_chance > 0
            || self.corrupt_chance > 0
            || self.size_limit > 0
            || self.rate_limit > 0
    }
}

/// The largest frame smoltcp's `FaultInjector` handles (its internal buffer; a lost larger frame would not
/// fit it).
pub const FAULT_INJECTOR_MAX_FRAME: usize = 1536;

/// A pcap file that never panics: the first failed write is logged and capturing stops.
pub struct CaptureFile {
    out: Option<CaptureOut>,
    path: PathBuf,
}

/// Where a capture's bytes go.
enum CaptureOut {
    /// A file, buffered: flushed when the capture ends.
    File(BufWriter<File>),
    /// Standard output, flushed after every packet (a reader sees each as it happens).
    Live(io::Stdout),
}

/// The `--pcap` path that means standard output.
pub const STANDARD_OUTPUT: &str = "-";

/// Whether a capture writes to standard output in this process (set when it is opened).
static LIVE: AtomicBool = AtomicBool::new(false);

/// The link type of the stream on standard output once its global header is written ([`NO_LINK`] before).
static LIVE_LINK: AtomicU32 = AtomicU32::new(NO_LINK);
const NO_LINK: u32 = u32::MAX;

/// Whether standard output carries a live capture (`--pcap -`): then what smoltalk prints for people goes to
/// standard error.
pub fn standard_output_is_the_capture() -> bool {
    LIVE.load(Ordering::Acquire)
}

/// Whether `path` is [`STANDARD_OUTPUT`].
pub fn is_standard_output(path: &Path) -> bool {
    path.as_os_str() == STANDARD_OUTPUT
}

impl CaptureFile {
    /// Creates (or truncates) `path`; `-` is standard output (see the module's documentation).
    pub fn create(path: &Path) -> io::Result<CaptureFile> {
        let out = if is_standard_output(path) {
            LIVE.store(true, Ordering::Release);
            CaptureOut::Live(io::stdout())
        } else {
            CaptureOut::File(BufWriter::with_capacity(256 * 1024, File::create(path)?))
        };
        Ok(CaptureFile {
            out: Some(out),
            path: path.to_path_buf(),
        })
    }

    /// Starts the file: the pcap global header for `link_type`.
    pub fn start(&mut self, link_type: PcapLinkType) {
        self.global_header(link_type);
    }

    /// Where the capture goes, for messages.
    fn target(&self) -> String {
        match is_standard_output(&self.path) {
            true => "on standard output".to_string(),
            false => self.path.display().to_string(),
        }
    }

    fn fail(&mut self, e: &io::Error) {
        log::error!("capture {} stopped: {e}", self.target());
        self.out = None;
    }
}

impl PcapSink for CaptureFile {
    fn write(&mut self, data: &[u8]) {
        let written = match self.out.as_mut() {
            Some(CaptureOut::File(out)) => out.write_all(data),
            Some(CaptureOut::Live(out)) => out.write_all(data),
            None => return,
        };
        if let Err(e) = written {
            self.fail(&e);
        }
    }

    /// A file is buffered and flushed when the capture ends (see `Drop`); standard output after each packet.
    fn flush(&mut self) {
        if let Some(CaptureOut::Live(out)) = self.out.as_mut() {
            if let Err(e) = Write::flush(out) {
                self.fail(&e);
            }
        }
    }

    /// The header smoltcp writes, once per stream: a second capture on standard output in the same process
    /// (the lab's proxy part after its uppercase part) continues the stream if its link type is the same, and is
    /// left out, saying so, if not.
    fn global_header(&mut self, link_type: PcapLinkType) {
        let link = u32::from(link_type);
        if let Some(CaptureOut::Live(_)) = self.out {
            match LIVE_LINK.compare_exchange(NO_LINK, link, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {}
                Err(same) if same == link => return,
                Err(other) => {
                    log::error!(
                        "the capture on standard output is of link type {other}: a capture of link type {link} \
                         cannot continue it and is left out"
                    );
                    self.out = None;
                    return;
                }
            }
        }
        self.write_u32(0xa1b2c3d4);
        self.write_u16(2);
        self.write_u16(4);
        self.write_u32(0);
        self.write_u32(0);
        self.write_u32(self.max_packet_size());
        self.write_u32(link);
        self.flush();
    }

    /// One record, written whole in one call (on standard output a reader never sees half of one, and the
    /// stream is locked once per packet).
    fn packet(&mut self, timestamp: Instant, packet: &[u8]) {
        let length = packet.len().min(u32::MAX as usize);
        let kept = length.min(self.max_packet_size() as usize);
        let data = packet.get(..kept).unwrap_or(packet);
        let mut record = Vec::with_capacity(16 + data.len());
        for field in [
            timestamp.secs() as u32,
            timestamp.micros() as u32,
            kept as u32,
            length as u32,
        ] {
            record.extend_from_slice(&field.to_ne_bytes());
        }
        record.extend_from_slice(data);
        self.write(&record);
        self.flush();
    }
}

impl Drop for CaptureFile {
    fn drop(&mut self) {
        let flushed = match self.out.take() {
            Some(CaptureOut::File(mut out)) => Write::flush(&mut out),
            Some(CaptureOut::Live(mut out)) => Write::flush(&mut out),
            None => Ok(()),
        };
        if let Err(e) = flushed {
            log::error!(
                "capture {}: the last packets were not written: {e}",
                self.target()
            );
        }
    }
}

/// The `Tracer`'s printer: every packet at debug level on the `smoltalk::trace` log target.
pub fn trace_packet(timestamp: Instant, packet: smoltcp::phy::TracerPacket) {
    log::debug!(target: "smoltalk::trace", "{timestamp} {packet}");
}

/// A capture kept in memory and shared, so it can be read back after the lab that wrote it is done.
#[derive(Clone, Default)]
pub struct MemoryCapture(std::rc::Rc<std::cell::RefCell<Vec<u8>>>);

impl MemoryCapture {
    /// The pcap bytes written so far.
    pub fn bytes(&self) -> Vec<u8> {
        self.0.borrow().clone()
    }
}

impl PcapSink for MemoryCapture {
    fn write(&mut self, data: &[u8]) {
        self.0.borrow_mut().extend_from_slice(data);
    }
}

/// A capture of the kernel's loopback interface (`lo`), for the kernel-stack side of `smoltalk compare`:
/// a packet socket (root only) records the IPv4 and IPv6 packets to or from `ports` (and ICMP and ICMPv6 errors
/// about them) until [`LoopbackCapture::finish`].
pub struct LoopbackCapture {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Vec<u8>>,
}

impl LoopbackCapture {
    /// Starts capturing on `lo`. Fails without the privilege to open a packet socket.
    pub fn start(ports: Vec<u16>) -> io::Result<LoopbackCapture> {
        let socket = PacketSocket::open(c"lo", std::time::Duration::from_millis(20))?;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = std::sync::Arc::clone(&stop);
        let thread = std::thread::spawn(move || capture_loop(&socket, &ports, &stopping));
        Ok(LoopbackCapture { stop, thread })
    }

    /// Stops and returns the capture (an Ethernet pcap: loopback frames have an all-zero Ethernet header).
    pub fn finish(self) -> Vec<u8> {
        // Let the last packets of the scenario arrive.
        std::thread::sleep(std::time::Duration::from_millis(50));
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

fn capture_loop(
    socket: &PacketSocket,
    ports: &[u16],
    stop: &std::sync::atomic::AtomicBool,
) -> Vec<u8> {
    let mut pcap = MemoryCapture::default();
    pcap.global_header(PcapLinkType::Ethernet);
    let start = std::time::Instant::now();
    let mut frame = vec![0u8; 65600];
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let received = match socket.receive(&mut frame) {
            Ok(received) if received.len > 0 => received,
            // The read timeout (so `stop` is looked at again), or a failed read.
            _ => continue,
        };
        // On loopback every packet is seen going out and coming in: keep one.
        if received.outgoing {
            continue;
        }
        let packet = frame.get(..received.len).unwrap_or(&[]);
        if concerns(packet, ports) {
            let at = smoltcp::time::Instant::from_micros(start.elapsed().as_micros() as i64);
            pcap.packet(at, packet);
        }
    }
    pcap.bytes()
}

/// Whether an Ethernet frame carries an IPv4 or IPv6 TCP/UDP packet to or from one of `ports`, or an ICMP or
/// ICMPv6 error quoting one.
fn concerns(frame: &[u8], ports: &[u16]) -> bool {
    use smoltcp::wire::{EthernetFrame, EthernetProtocol};
    let Ok(ethernet) = EthernetFrame::new_checked(frame) else {
        return false;
    };
    let pair = match ethernet.ethertype() {
        EthernetProtocol::Ipv4 => ipv4_ports(ethernet.payload()),
        EthernetProtocol::Ipv6 => ipv6_ports(ethernet.payload()),
        _ => None,
    };
    pair.is_some_and(|(a, b)| ports.contains(&a) || ports.contains(&b))
}

/// The two ports at the start of a TCP or UDP header.
fn port_pair(bytes: &[u8]) -> Option<(u16, u16)> {
    let b = bytes.get(..4)?;
    Some((
        u16::from_be_bytes([b[0], b[1]]),
        u16::from_be_bytes([b[2], b[3]]),
    ))
}

/// The ports of an IPv4 TCP/UDP packet, or of the one an ICMP message quotes.
fn ipv4_ports(packet: &[u8]) -> Option<(u16, u16)> {
    use smoltcp::wire::{IpProtocol, Ipv4Packet};
    let ip = Ipv4Packet::new_checked(packet).ok()?;
    let payload = ip.payload();
    match ip.next_header() {
        IpProtocol::Tcp | IpProtocol::Udp => port_pair(payload),
        // An ICMP error quotes the IPv4 header (20 bytes here) and the first 8 bytes of the datagram.
        IpProtocol::Icmp => port_pair(payload.get(8 + 20..)?),
        _ => None,
    }
}

/// The ports of an IPv6 TCP/UDP packet, or of the TCP/UDP packet an ICMPv6 error quotes.
fn ipv6_ports(packet: &[u8]) -> Option<(u16, u16)> {
    use smoltcp::wire::{IpProtocol, Ipv6Packet};
    let ip = Ipv6Packet::new_checked(packet).ok()?;
    let payload = ip.payload();
    match ip.next_header() {
        IpProtocol::Tcp | IpProtocol::Udp => port_pair(payload),
        // Error messages are the types below 128 (the rest, echo and neighbour discovery among them, are not). One
        // quotes as much of the packet as fits after its own 8 bytes: the IPv6 header (40 bytes), then the
        // transport header, if the quoted header says it is TCP or UDP.
        IpProtocol::Icmpv6 if payload.first().is_some_and(|kind| *kind < 128) => {
            let quoted = payload.get(8..)?;
            match IpProtocol::from(*quoted.get(6)?) {
                IpProtocol::Tcp | IpProtocol::Udp => port_pair(quoted.get(40..)?),
                _ => None,
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::phy::ChecksumCapabilities;
    use smoltcp::wire::{
        EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, Icmpv6DstUnreachable,
        Icmpv6Packet, Icmpv6Repr, IpProtocol, Ipv4Address, Ipv4Packet, Ipv4Repr, Ipv6Address,
        Ipv6Packet, Ipv6Repr, TcpControl, TcpPacket, TcpRepr, TcpSeqNumber, UdpPacket, UdpRepr,
    };

    const KERNEL: Ipv6Address = Ipv6Address::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);
    const SMOLTCP: Ipv6Address = Ipv6Address::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x15);

    /// A loopback frame (all-zero Ethernet addresses) of `ethertype` around `packet`.
    fn ethernet(ethertype: EthernetProtocol, packet: &[u8]) -> Vec<u8> {
        let repr = EthernetRepr {
            src_addr: EthernetAddress([0; 6]),
            dst_addr: EthernetAddress([0; 6]),
            ethertype,
        };
        let mut frame = vec![0u8; repr.buffer_len() + packet.len()];
        let mut ethernet = EthernetFrame::new_unchecked(&mut frame);
        repr.emit(&mut ethernet);
        ethernet.payload_mut().copy_from_slice(packet);
        frame
    }

    /// An IPv6 packet from the kernel's address to smoltcp's carrying `payload` as `next_header`.
    fn ipv6(next_header: IpProtocol, payload: &[u8]) -> (Ipv6Repr, Vec<u8>) {
        let repr = Ipv6Repr {
            src_addr: KERNEL,
            dst_addr: SMOLTCP,
            next_header,
            payload_len: payload.len(),
            hop_limit: 64,
        };
        let mut packet = vec![0u8; repr.buffer_len() + payload.len()];
        let mut ip = Ipv6Packet::new_unchecked(&mut packet);
        repr.emit(&mut ip);
        ip.payload_mut().copy_from_slice(payload);
        (repr, packet)
    }

    fn udp(src_port: u16, dst_port: u16, payload: &[u8]) -> Vec<u8> {
        let repr = UdpRepr { src_port, dst_port };
        let mut bytes = vec![0u8; repr.header_len() + payload.len()];
        repr.emit(
            &mut UdpPacket::new_unchecked(&mut bytes),
            &KERNEL.into(),
            &SMOLTCP.into(),
            payload.len(),
            |out| out.copy_from_slice(payload),
            &ChecksumCapabilities::default(),
        );
        bytes
    }

    fn tcp(src_port: u16, dst_port: u16) -> Vec<u8> {
        let repr = TcpRepr {
            src_port,
            dst_port,
            control: TcpControl::Syn,
            seq_number: TcpSeqNumber(1),
            ack_number: None,
            window_len: 1024,
            window_scale: None,
            max_seg_size: Some(1440),
            sack_permitted: false,
            sack_ranges: [None, None, None],
            timestamp: None,
            payload: &[],
        };
        let mut bytes = vec![0u8; repr.buffer_len()];
        repr.emit(
            &mut TcpPacket::new_unchecked(&mut bytes),
            &KERNEL.into(),
            &SMOLTCP.into(),
            &ChecksumCapabilities::default(),
        );
        bytes
    }

    /// An ICMPv6 message from smoltcp's address to the kernel's, as a loopback frame.
    fn icmpv6(message: Icmpv6Repr) -> Vec<u8> {
        let mut bytes = vec![0u8; message.buffer_len()];
        message.emit(
            &SMOLTCP,
            &KERNEL,
            &mut Icmpv6Packet::new_unchecked(&mut bytes),
            &ChecksumCapabilities::default(),
        );
        ethernet(EthernetProtocol::Ipv6, &ipv6(IpProtocol::Icmpv6, &bytes).1)
    }

    /// A port-unreachable error quoting `quoted` (an IPv6 packet of `header`).
    fn unreachable(header: Ipv6Repr, quoted: &[u8]) -> Vec<u8> {
        icmpv6(Icmpv6Repr::DstUnreachable {
            reason: Icmpv6DstUnreachable::PortUnreachable,
            header,
            data: quoted.get(40..).unwrap_or_default(),
        })
    }

    const PORTS: [u16; 2] = [12000, 12001];

    #[test]
    fn ipv6_tcp_and_udp_to_or_from_the_ports_are_kept_and_others_dropped() {
        let v6 = |protocol, l4: Vec<u8>| ethernet(EthernetProtocol::Ipv6, &ipv6(protocol, &l4).1);
        assert!(concerns(&v6(IpProtocol::Tcp, tcp(40000, 12000)), &PORTS));
        assert!(concerns(&v6(IpProtocol::Tcp, tcp(12001, 40000)), &PORTS));
        assert!(concerns(
            &v6(IpProtocol::Udp, udp(40000, 12001, b"hi")),
            &PORTS
        ));
        assert!(!concerns(&v6(IpProtocol::Tcp, tcp(40000, 22)), &PORTS));
        assert!(!concerns(
            &v6(IpProtocol::Udp, udp(5353, 5353, b"hi")),
            &PORTS
        ));
        // A TCP packet behind the wrong EtherType, or cut short, is not one.
        let packet = ipv6(IpProtocol::Tcp, &tcp(40000, 12000)).1;
        assert!(!concerns(
            &ethernet(EthernetProtocol::Ipv4, &packet),
            &PORTS
        ));
        let whole = v6(IpProtocol::Tcp, tcp(40000, 12000));
        assert!(!concerns(&whole[..whole.len() - 1], &PORTS));
        assert!(!concerns(&whole[..14 + 40], &PORTS));
        // IPv4 still is.
        let v4 = Ipv4Repr {
            src_addr: Ipv4Address::new(10, 0, 2, 2),
            dst_addr: Ipv4Address::new(10, 0, 2, 15),
            next_header: IpProtocol::Udp,
            payload_len: 10,
            hop_limit: 64,
        };
        let mut packet = vec![0u8; 30];
        let mut ip = Ipv4Packet::new_unchecked(&mut packet);
        v4.emit(&mut ip, &ChecksumCapabilities::default());
        ip.payload_mut().copy_from_slice(&udp(40000, 12000, b"hi"));
        assert!(concerns(&ethernet(EthernetProtocol::Ipv4, &packet), &PORTS));
    }

    #[test]
    fn icmpv6_errors_quoting_the_ports_are_kept_and_other_icmpv6_dropped() {
        let (header, quoted) = ipv6(IpProtocol::Udp, &udp(40000, 12000, b"ping"));
        assert!(concerns(&unreachable(header, &quoted), &PORTS));
        let (header, quoted) = ipv6(IpProtocol::Tcp, &tcp(12001, 40000));
        let too_big = icmpv6(Icmpv6Repr::PktTooBig {
            mtu: 1280,
            header,
            data: &quoted[40..],
        });
        assert!(concerns(&too_big, &PORTS));
        // Quoting other ports, or too little of the packet to show them.
        let (header, other) = ipv6(IpProtocol::Udp, &udp(40000, 53, b"ping"));
        assert!(!concerns(&unreachable(header, &other), &PORTS));
        let (header, quoted) = ipv6(IpProtocol::Udp, &udp(40000, 12000, b"ping"));
        assert!(!concerns(&unreachable(header, &quoted[..42]), &PORTS));
        // Quoting a packet that is not TCP or UDP, though its bytes look like the ports.
        let (header, echo) = ipv6(IpProtocol::Icmpv6, &udp(40000, 12000, b"ping"));
        assert!(!concerns(&unreachable(header, &echo), &PORTS));
        // Not an error, though its bytes where an error quotes ports look like them.
        // (An echo's data starts where an error's quoted packet does, after 8 bytes.)
        let data = ipv6(IpProtocol::Udp, &udp(40000, 12000, b"ping")).1;
        let echo = icmpv6(Icmpv6Repr::EchoRequest {
            ident: 1,
            seq_no: 0,
            data: &data,
        });
        let bytes = &echo[14 + 40 + 8..];
        assert_eq!(bytes[6], 17, "the echo reads as quoting UDP");
        assert_eq!(port_pair(&bytes[40..]), Some((40000, 12000)));
        assert!(!concerns(&echo, &PORTS));
    }
}
