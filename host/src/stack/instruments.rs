//! Instruments for experiments on a smoltcp device: a packet capture (`--pcap`), fault injection
//! (`--drop-chance`, `--corrupt-chance`, `--size-limit`, `--rate-limit`, `--seed`) and a packet trace (`--trace`),
//! each built on smoltcp's own `phy` wrappers (`PcapWriter`, `FaultInjector`, `Tracer`).
//!
//! [`CaptureFile`] is the sink the captures go to. smoltcp's own sink for `std::io::Write` panics when a write
//! fails (a full disk, say); this one logs the failure once and stops capturing, so the experiment goes on.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use smoltcp::phy::{PcapLinkType, PcapSink};
use smoltcp::time::Instant;

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
}

impl Instruments {
    /// Whether any instrument is asked for (without one, the device runs bare).
    pub fn any(&self) -> bool {
        self.pcap.is_some() || self.faults.any() || self.trace
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
    out: Option<BufWriter<File>>,
    path: PathBuf,
}

impl CaptureFile {
    /// Creates (or truncates) `path`.
    pub fn create(path: &Path) -> io::Result<CaptureFile> {
        let file = File::create(path)?;
        Ok(CaptureFile {
            out: Some(BufWriter::with_capacity(256 * 1024, file)),
            path: path.to_path_buf(),
        })
    }

    /// Starts the file: the pcap global header for `link_type`.
    pub fn start(&mut self, link_type: PcapLinkType) {
        self.global_header(link_type);
    }

    fn fail(&mut self, e: &io::Error) {
        log::error!("capture {} stopped: {e}", self.path.display());
        self.out = None;
    }
}

impl PcapSink for CaptureFile {
    fn write(&mut self, data: &[u8]) {
        if let Some(out) = self.out.as_mut() {
            if let Err(e) = out.write_all(data) {
                self.fail(&e);
            }
        }
    }

    /// Packets are buffered; the file is flushed when the capture ends (see `Drop`).
    fn flush(&mut self) {}

    fn packet(&mut self, timestamp: Instant, packet: &[u8]) {
        let length = packet.len().min(u32::MAX as usize);
        let kept = length.min(self.max_packet_size() as usize);
        self.write_u32(timestamp.secs() as u32);
        self.write_u32(timestamp.micros() as u32);
        self.write_u32(kept as u32);
        self.write_u32(length as u32);
        self.write(packet.get(..kept).unwrap_or(packet));
    }
}

impl Drop for CaptureFile {
    fn drop(&mut self) {
        if let Some(mut out) = self.out.take() {
            if let Err(e) = Write::flush(&mut out) {
                log::error!(
                    "capture {}: the last packets were not written: {e}",
                    self.path.display()
                );
            }
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
/// a packet socket (root only) records the IPv4 packets to or from `ports` (and ICMP errors about them) until
/// [`LoopbackCapture::finish`].
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

/// Whether an Ethernet frame carries an IPv4 TCP/UDP packet to or from one of `ports`, or an ICMP error
/// quoting one.
fn concerns(frame: &[u8], ports: &[u16]) -> bool {
    use smoltcp::wire::{EthernetFrame, EthernetProtocol, IpProtocol, Ipv4Packet};
    let Ok(ethernet) = EthernetFrame::new_checked(frame) else {
        return false;
    };
    if ethernet.ethertype() != EthernetProtocol::Ipv4 {
        return false;
    }
    let Ok(ip) = Ipv4Packet::new_checked(ethernet.payload()) else {
        return false;
    };
    let payload = ip.payload();
    let port_pair = |bytes: &[u8]| -> Option<(u16, u16)> {
        let b = bytes.get(..4)?;
        Some((
            u16::from_be_bytes([b[0], b[1]]),
            u16::from_be_bytes([b[2], b[3]]),
        ))
    };
    let matches = |pair: Option<(u16, u16)>| {
        pair.is_some_and(|(a, b)| ports.contains(&a) || ports.contains(&b))
    };
    match ip.next_header() {
        IpProtocol::Tcp | IpProtocol::Udp => matches(port_pair(payload)),
        // An ICMP error quotes the IPv4 header (20 bytes here) and the first 8 bytes of the datagram.
        IpProtocol::Icmp => matches(payload.get(8 + 20..).and_then(port_pair)),
        _ => false,
    }
}
