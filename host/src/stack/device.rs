//! [`TunTapDevice`]: a Linux TUN (raw IP) or TAP (Ethernet) device as a smoltcp `phy::Device`, and
//! [`DeviceNetwork`]: one smoltcp node on such a device, in real time.
//!
//! The device is opened with the `tun-tap` crate without the packet-information header, non-blocking. Frames
//! are read into and written from two buffers sized to the device's MTU once, so the hot path allocates nothing
//! (smoltcp's own `TunTapInterface` allocates a fresh MTU-sized buffer per received frame, which costs a lot at
//! a 64 KiB MTU). When idle, [`DeviceNetwork::wait`] sleeps on the file descriptor until a frame arrives or the
//! next smoltcp timer is due — no busy loop.

use std::cell::{Cell, RefCell};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;

use smoltcp::iface::{PollIngressSingleResult, PollResult};
use smoltcp::phy::{
    self, Checksum, Device, DeviceCapabilities, FaultInjector, Medium, PcapLinkType, PcapMode,
    PcapSink, PcapWriter, Tracer,
};
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpCidr, Ipv4Address};

use crate::stack::device_error::{open_error, DeviceError};
use crate::stack::instruments::{trace_packet, CaptureFile, Instruments, FAULT_INJECTOR_MAX_FRAME};
use crate::stack::network::{Network, NetworkError, NodeId};
use crate::stack::node::{random_seed, Node};
use crate::stack::offload::{self, Verdict, VnetHeader, VNET_HEADER_LEN};
use crate::sys::{self, errno};

/// Which kind of device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    /// Raw IP packets.
    Tun,
    /// Ethernet frames.
    Tap,
}

impl DeviceKind {
    /// "tun" or "tap", as `ip tuntap` and `--stack` spell it.
    pub fn name(self) -> &'static str {
        match self {
            DeviceKind::Tun => "tun",
            DeviceKind::Tap => "tap",
        }
    }
}

/// The largest frame read from or written to a device.
const MAX_FRAME: usize = 65535 + 18;

/// How the device was opened.
enum DeviceHandle {
    /// By the `tun-tap` crate: frames as they are, every checksum computed by both sides.
    Plain(tun_tap::Iface),
    /// With the virtio-net header and checksum offload (see [`crate::stack::offload`]).
    Offload { file: File, name: String },
}

impl DeviceHandle {
    fn name(&self) -> &str {
        match self {
            DeviceHandle::Plain(iface) => iface.name(),
            DeviceHandle::Offload { name, .. } => name,
        }
    }

    fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            DeviceHandle::Plain(iface) => iface.recv(buf),
            DeviceHandle::Offload { file, .. } => (&*file).read(buf),
        }
    }

    fn send(&self, buf: &[u8]) -> io::Result<usize> {
        match self {
            DeviceHandle::Plain(iface) => iface.send(buf),
            DeviceHandle::Offload { file, .. } => Write::write(&mut &*file, buf),
        }
    }

    fn fd(&self) -> RawFd {
        match self {
            DeviceHandle::Plain(iface) => iface.as_raw_fd(),
            DeviceHandle::Offload { file, .. } => file.as_raw_fd(),
        }
    }
}

impl Drop for DeviceHandle {
    fn drop(&mut self) {
        // Leave a persistent device as a plain user expects it (see offload::set_offload).
        if let DeviceHandle::Offload { file, .. } = self {
            let _ = offload::set_offload(file.as_raw_fd(), false);
        }
    }
}

/// A TUN or TAP device as a smoltcp device.
pub struct TunTapDevice {
    handle: DeviceHandle,
    kind: DeviceKind,
    mtu: usize,
    rx: Vec<u8>,
    tx: Transmitter,
    received_bytes: Rc<Cell<u64>>,
}

impl TunTapDevice {
    /// Opens (and, when privileged, creates) device `name`; with `offload`, with the virtio-net header and
    /// checksum offload, which saves the kernel and smoltcp a checksum pass over every TCP segment.
    pub fn open(name: &str, kind: DeviceKind, offload: bool) -> Result<Self, DeviceError> {
        let handle = if offload {
            let (file, name) = offload::open(name, kind == DeviceKind::Tap)
                .map_err(|e| open_error(name, kind, e))?;
            DeviceHandle::Offload { file, name }
        } else {
            let mode = match kind {
                DeviceKind::Tun => tun_tap::Mode::Tun,
                DeviceKind::Tap => tun_tap::Mode::Tap,
            };
            let iface = tun_tap::Iface::without_packet_info(name, mode)
                .map_err(|e| open_error(name, kind, e))?;
            iface
                .set_non_blocking()
                .map_err(|error| DeviceError::NonBlocking {
                    name: name.to_string(),
                    error,
                })?;
            // An earlier offloading user may have left the device's checksum offload on.
            offload::set_offload(iface.as_raw_fd(), false).map_err(|error| {
                DeviceError::OffloadOff {
                    name: name.to_string(),
                    error,
                }
            })?;
            DeviceHandle::Plain(iface)
        };
        let mtu = std::fs::read_to_string(format!("/sys/class/net/{}/mtu", handle.name()))
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .unwrap_or(1500);
        // Room for the largest frame the kernel can hand over (an IP packet of 65535 bytes plus an Ethernet
        // header with a VLAN tag, plus the virtio-net header), whatever the MTU is now: the MTU can be raised
        // while smoltalk runs, and a read into a smaller buffer would be cut short.
        let frame = MAX_FRAME + VNET_HEADER_LEN;
        Ok(TunTapDevice {
            handle,
            kind,
            mtu,
            rx: vec![0; frame],
            tx: Transmitter {
                buf: vec![0; frame],
                header_len: if offload { VNET_HEADER_LEN } else { 0 },
                l3: match kind {
                    DeviceKind::Tun => 0,
                    DeviceKind::Tap => 14,
                },
                failure: Rc::default(),
                warned_down: false,
            },
            received_bytes: Rc::default(),
        })
    }

    /// Whether frames carry the virtio-net header (checksum offload).
    pub fn offload(&self) -> bool {
        matches!(self.handle, DeviceHandle::Offload { .. })
    }

    /// What a network on this device needs to know of it, however the device is wrapped.
    pub fn info(&self) -> DeviceInfo {
        DeviceInfo {
            name: self.handle.name().to_string(),
            kind: self.kind,
            mtu: self.mtu,
            offload: self.offload(),
            fd: self.handle.fd(),
            failure: Rc::clone(&self.tx.failure),
            received_bytes: Rc::clone(&self.received_bytes),
        }
    }
}

/// A device's name, kind and MTU, and its descriptor, failure and byte count, shared with the device itself
/// (which may sit under smoltcp's `PcapWriter`, `FaultInjector` and `Tracer`).
pub struct DeviceInfo {
    name: String,
    kind: DeviceKind,
    mtu: usize,
    offload: bool,
    /// The device's descriptor, valid as long as the device (which the same network owns).
    fd: RawFd,
    failure: Rc<RefCell<Option<io::Error>>>,
    received_bytes: Rc<Cell<u64>>,
}

impl DeviceInfo {
    /// The device's name as the kernel knows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The device's IP MTU, read from the kernel when opened.
    pub fn mtu(&self) -> usize {
        self.mtu
    }

    /// The device's kind.
    pub fn kind(&self) -> DeviceKind {
        self.kind
    }

    /// Whether frames carry the virtio-net header (checksum offload).
    pub fn offload(&self) -> bool {
        self.offload
    }

    /// A fatal error seen while reading or writing (the device was deleted, say).
    pub fn take_failure(&self) -> Option<io::Error> {
        self.failure.borrow_mut().take()
    }

    /// Bytes read from the device so far.
    pub fn received_bytes(&self) -> u64 {
        self.received_bytes.get()
    }

    /// Sleeps until a frame can be read or `timeout` passes (`None`: until a frame arrives).
    pub fn wait(&self, timeout: Option<std::time::Duration>) -> io::Result<()> {
        // The device, and the stop signal's pipe (see `sys::stop_on_signals`; -1, none, is left out).
        let wake = sys::stop_wake_fd().unwrap_or(-1);
        match sys::wait_readable([self.fd, wake], timeout) {
            Err(e) if e.kind() != io::ErrorKind::Interrupted => Err(e),
            _ => Ok(()),
        }
    }
}

fn is_fatal(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(errno::EBADFD) | Some(errno::ENODEV) | Some(errno::EBADF) | Some(errno::ENXIO)
    )
}

/// A frame read from the device.
pub struct TunTapRxToken<'a>(&'a [u8]);

/// The sending side of a device: the frame buffer and what a failed write leaves behind.
struct Transmitter {
    buf: Vec<u8>,
    /// Bytes of virtio-net header in front of each frame (0 without offload).
    header_len: usize,
    /// Bytes of link-layer header before the IP header (TAP: Ethernet).
    l3: usize,
    failure: Rc<RefCell<Option<io::Error>>>,
    warned_down: bool,
}

/// Room for a frame to write to the device.
pub struct TunTapTxToken<'a> {
    handle: &'a DeviceHandle,
    tx: &'a mut Transmitter,
}

impl phy::RxToken for TunTapRxToken<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.0)
    }
}

impl phy::TxToken for TunTapTxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let tx = self.tx;
        let end = (tx.header_len + len).min(tx.buf.len());
        let (header, frame) = tx.buf[..end].split_at_mut(tx.header_len);
        let result = f(frame);
        if tx.header_len > 0 {
            offload::transmit(frame, tx.l3).emit(header);
        }
        match self.handle.send(&tx.buf[..end]) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(errno::EIO) => {
                if !tx.warned_down {
                    let name = self.handle.name();
                    log::warn!("{name} is down, packets are dropped: bring it up with `ip link set {name} up`");
                    tx.warned_down = true;
                }
            }
            Err(e) if is_fatal(&e) => *tx.failure.borrow_mut() = Some(e),
            // The kernel's queue is full (or similar): the packet is lost, as on a wire; TCP retransmits.
            Err(e) => log::debug!("{}: dropped an outgoing packet: {e}", self.handle.name()),
        }
        result
    }
}

impl Device for TunTapDevice {
    type RxToken<'a> = TunTapRxToken<'a>;
    type TxToken<'a> = TunTapTxToken<'a>;

    fn receive(&mut self, _now: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let (header_len, l3) = (self.tx.header_len, self.tx.l3);
        loop {
            let n = match self.handle.recv(&mut self.rx) {
                Ok(n) if n > self.rx.len() || n < header_len => {
                    log::warn!(
                        "{}: dropped a {n}-byte frame that cannot be right",
                        self.handle.name()
                    );
                    continue;
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                Err(e) if is_fatal(&e) => {
                    *self.tx.failure.borrow_mut() = Some(e);
                    return None;
                }
                Err(e) => {
                    log::debug!("{}: read failed: {e}", self.handle.name());
                    return None;
                }
            };
            self.received_bytes
                .set(self.received_bytes.get() + n as u64);
            if header_len > 0 {
                let (header, frame) = self.rx[..n].split_at_mut(header_len);
                let header = VnetHeader::parse(header).unwrap_or_default();
                if let Verdict::Drop(reason) = offload::receive(header, frame, l3) {
                    log::debug!("{}: dropped a frame: {reason}", self.handle.name());
                    continue;
                }
            }
            return Some((
                TunTapRxToken(&self.rx[header_len..n]),
                TunTapTxToken {
                    handle: &self.handle,
                    tx: &mut self.tx,
                },
            ));
        }
    }

    fn transmit(&mut self, _now: Instant) -> Option<Self::TxToken<'_>> {
        Some(TunTapTxToken {
            handle: &self.handle,
            tx: &mut self.tx,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        match self.kind {
            DeviceKind::Tun => {
                caps.medium = Medium::Ip;
                caps.max_transmission_unit = self.mtu;
            }
            DeviceKind::Tap => {
                caps.medium = Medium::Ethernet;
                caps.max_transmission_unit = self.mtu + 14;
            }
        }
        if self.offload() {
            // The device and the kernel vouch for TCP checksums (see crate::stack::offload); smoltcp keeps the others.
            caps.checksum.tcp = Checksum::None;
        }
        caps
    }
}

/// Bytes of packets taken in per poll before the sockets' replies are sent (see [`DeviceNetwork`]'s `poll`):
/// about four packets at MTU 65000, a few hundred at MTU 1500.
pub const INGRESS_BUDGET: u64 = 256 * 1024;

/// The MAC address smoltalk's node uses on a TAP device (locally administered).
pub const TAP_MAC: EthernetAddress = EthernetAddress([0x02, 0x53, 0x4d, 0x4f, 0x4c, 0x01]);

/// The device as smoltcp sees it: bare, or inside smoltcp's instruments (outermost first): the `Tracer`
/// prints what smoltcp sends and receives, the `FaultInjector` loses and corrupts packets on the way, and the
/// `PcapWriter` records what crosses the device itself.
// One per process, made once: the bare device's size (its two frame buffers are on the heap) does not matter.
#[allow(clippy::large_enum_variant)]
pub enum DeviceStack {
    /// No instrument: the fast path.
    Bare(TunTapDevice),
    /// With instruments (see [`Instruments`]).
    Instrumented(Box<Instrumented>),
}

/// A device inside smoltcp's instruments (see [`DeviceStack`]).
pub type Instrumented = Tracer<FaultInjector<PcapWriter<TunTapDevice, Capture>>>;

/// Where the `PcapWriter` of an instrumented device writes: a file, or nowhere (`--pcap` not given).
pub enum Capture {
    /// Into this file.
    File(CaptureFile),
    /// Nowhere.
    Off,
}

impl PcapSink for Capture {
    fn write(&mut self, data: &[u8]) {
        if let Capture::File(file) = self {
            file.write(data);
        }
    }

    fn global_header(&mut self, link_type: PcapLinkType) {
        if let Capture::File(file) = self {
            file.global_header(link_type);
        }
    }

    fn packet(&mut self, timestamp: Instant, packet: &[u8]) {
        if let Capture::File(file) = self {
            file.packet(timestamp, packet);
        }
    }
}

impl DeviceStack {
    /// `device`, bare if no instrument is asked for, else wrapped as `instruments` says.
    pub fn new(
        device: TunTapDevice,
        instruments: &Instruments,
    ) -> Result<DeviceStack, DeviceError> {
        if !instruments.any() {
            return Ok(DeviceStack::Bare(device));
        }
        let frame = device.capabilities().max_transmission_unit;
        if instruments.faults.any() && frame > FAULT_INJECTOR_MAX_FRAME {
            return Err(DeviceError::FrameTooLarge {
                name: device.handle.name().to_string(),
                frame,
            });
        }
        let capture =
            match &instruments.pcap {
                Some(path) => Capture::File(CaptureFile::create(path).map_err(|error| {
                    DeviceError::Capture {
                        path: path.clone(),
                        error,
                    }
                })?),
                None => Capture::Off,
            };
        // The link type follows the medium: raw IP for TUN, Ethernet for TAP.
        let pcap = PcapWriter::new(device, capture, PcapMode::Both);
        let f = instruments.faults;
        let mut faults = FaultInjector::new(pcap, f.seed);
        faults.set_drop_chance(f.drop_chance);
        faults.set_corrupt_chance(f.corrupt_chance);
        faults.set_max_packet_size(f.size_limit);
        faults.set_max_tx_rate(f.rate_limit);
        faults.set_max_rx_rate(f.rate_limit);
        Ok(DeviceStack::Instrumented(Box::new(Tracer::new(
            faults,
            trace_packet,
        ))))
    }
}

/// A received frame, from either kind of stack.
pub enum StackRxToken<'a> {
    /// From the bare device.
    Bare(TunTapRxToken<'a>),
    /// Through the instruments.
    Instrumented(<Instrumented as Device>::RxToken<'a>),
}

/// Room for a frame to send, on either kind of stack.
pub enum StackTxToken<'a> {
    /// On the bare device.
    Bare(TunTapTxToken<'a>),
    /// Through the instruments (boxed: the FaultInjector's token carries a frame-sized buffer, which would
    /// make every bare token that big too).
    Instrumented(Box<<Instrumented as Device>::TxToken<'a>>),
}

impl phy::RxToken for StackRxToken<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        match self {
            StackRxToken::Bare(t) => t.consume(f),
            StackRxToken::Instrumented(t) => t.consume(f),
        }
    }
}

impl phy::TxToken for StackTxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        match self {
            StackTxToken::Bare(t) => t.consume(len, f),
            StackTxToken::Instrumented(t) => (*t).consume(len, f),
        }
    }
}

impl Device for DeviceStack {
    type RxToken<'a> = StackRxToken<'a>;
    type TxToken<'a> = StackTxToken<'a>;

    fn receive(&mut self, now: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        match self {
            DeviceStack::Bare(d) => d
                .receive(now)
                .map(|(rx, tx)| (StackRxToken::Bare(rx), StackTxToken::Bare(tx))),
            DeviceStack::Instrumented(d) => d.receive(now).map(|(rx, tx)| {
                (
                    StackRxToken::Instrumented(rx),
                    StackTxToken::Instrumented(Box::new(tx)),
                )
            }),
        }
    }

    fn transmit(&mut self, now: Instant) -> Option<Self::TxToken<'_>> {
        match self {
            DeviceStack::Bare(d) => d.transmit(now).map(StackTxToken::Bare),
            DeviceStack::Instrumented(d) => d
                .transmit(now)
                .map(|t| StackTxToken::Instrumented(Box::new(t))),
        }
    }

    fn capabilities(&self) -> DeviceCapabilities {
        match self {
            DeviceStack::Bare(d) => d.capabilities(),
            DeviceStack::Instrumented(d) => d.capabilities(),
        }
    }
}

/// One smoltcp node on a TUN/TAP device, in real time.
pub struct DeviceNetwork {
    node: Node,
    device: DeviceStack,
    info: DeviceInfo,
}

impl DeviceNetwork {
    /// Opens the device (see [`TunTapDevice::open`] for `offload`), wraps it in `instruments`, and puts a node
    /// with address `cidr` and default gateway `gateway` on it.
    pub fn open(
        name: &str,
        kind: DeviceKind,
        offload: bool,
        cidr: IpCidr,
        gateway: Option<Ipv4Address>,
        instruments: &Instruments,
    ) -> Result<Self, DeviceError> {
        let device = TunTapDevice::open(name, kind, offload)?;
        let info = device.info();
        let mut device = DeviceStack::new(device, instruments)?;
        let hardware = match kind {
            DeviceKind::Tun => HardwareAddress::Ip,
            DeviceKind::Tap => TAP_MAC.into(),
        };
        let now = Instant::from(std::time::Instant::now());
        let node = Node::new(
            name,
            &mut device,
            hardware,
            cidr,
            gateway,
            random_seed(),
            now,
        );
        Ok(DeviceNetwork { node, device, info })
    }

    /// The device's name, kind and MTU.
    pub fn device(&self) -> &DeviceInfo {
        &self.info
    }

    /// The node (also `node(0)` of the [`Network`]).
    pub fn node_mut(&mut self) -> &mut Node {
        &mut self.node
    }

    fn check_device(&mut self) -> Result<(), NetworkError> {
        match self.info.take_failure() {
            Some(error) => Err(NetworkError::DeviceGone {
                device: self.info.name().to_string(),
                error,
            }),
            None => Ok(()),
        }
    }
}

impl Network for DeviceNetwork {
    fn now(&self) -> Instant {
        Instant::from(std::time::Instant::now())
    }

    fn node(&mut self, _id: NodeId) -> &mut Node {
        &mut self.node
    }

    /// Takes in packets up to [`INGRESS_BUDGET`] bytes, then sends everything the sockets have queued. The
    /// caller's step (a server moving bytes from receive to send buffers) runs between two polls, so the bytes
    /// are echoed while they are still in the CPU's cache. `Interface::poll`, which first reads every queued
    /// packet, measured slower with four busy connections at MTU 65000; a budget of a few packets measured
    /// slower at MTU 1500, where per-poll work dominates (see BENCHMARKS.md).
    fn poll(&mut self) -> Result<bool, NetworkError> {
        let now = self.now();
        let node = &mut self.node;
        node.iface.poll_maintenance(now);
        let mut progressed = false;
        let budget_end = self.info.received_bytes() + INGRESS_BUDGET;
        while self.info.received_bytes() < budget_end {
            match node
                .iface
                .poll_ingress_single(now, &mut self.device, &mut node.sockets)
            {
                PollIngressSingleResult::None => break,
                PollIngressSingleResult::PacketProcessed
                | PollIngressSingleResult::SocketStateChanged => progressed = true,
            }
        }
        while node
            .iface
            .poll_egress(now, &mut self.device, &mut node.sockets)
            == PollResult::SocketStateChanged
        {
            progressed = true;
        }
        self.check_device()?;
        Ok(progressed)
    }

    fn wait(&mut self, until: Option<Instant>) -> Result<(), NetworkError> {
        let now = self.now();
        let node = &mut self.node;
        let mut delay = node.iface.poll_delay(now, &node.sockets);
        if let Some(until) = until {
            let left = if until > now {
                until - now
            } else {
                smoltcp::time::Duration::ZERO
            };
            delay = Some(delay.map_or(left, |d| d.min(left)));
        }
        self.info
            .wait(delay.map(Into::into))
            .map_err(|error| NetworkError::Wait {
                device: self.info.name().to_string(),
                error,
            })?;
        self.check_device()
    }
}
