//! [`TunTapDevice`]: a Linux TUN (raw IP) or TAP (Ethernet) device as a smoltcp `phy::Device` (the node on it
//! is `super::device_network`).
//!
//! The device is opened with the `tun-tap` crate without the packet-information header, non-blocking. Frames
//! are read into and written from two buffers sized to the device's MTU once, so the hot path allocates nothing
//! (smoltcp's own `TunTapInterface` allocates a fresh MTU-sized buffer per received frame, which costs a lot at
//! a 64 KiB MTU). With TCP segmentation offload agreed, the IPv6 TCP segments smoltcp sends are joined into
//! super-packets before they are written ([`SegmentCoalescer`]; [`TunTapDevice::flush`] writes what is pending).
//! When idle, the node sleeps on its file descriptor until a frame arrives or the next smoltcp
//! timer is due ([`DeviceInfo::wait`]) — no busy loop.

use std::cell::{Cell, RefCell};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;

use std::num::{NonZeroU16, NonZeroUsize};

use smoltcp::phy::{self, Checksum, Device, DeviceCapabilities, Medium, PacketMeta};
use smoltcp::time::Instant;

use crate::stack::device_error::{open_error, DeviceError};
use crate::stack::kernel_thread::{KernelThread, KernelThreadMode};
use crate::stack::offload::{
    self, Offered, Offload, SegmentCoalescer, Verdict, VnetHeader, MAX_SUPER_PACKET,
    VNET_HEADER_LEN,
};
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

/// The largest frame read from or written to a device: the largest IPv6 packet (a 40-byte header and 65535
/// bytes of payload, the most its length field says without a jumbogram; IPv4's largest is 40 bytes shorter), plus
/// an Ethernet header with a VLAN tag.
const MAX_FRAME: usize = 40 + 65535 + 18;

/// How the device was opened.
enum DeviceHandle {
    /// By the `tun-tap` crate: frames as they are, every checksum computed by both sides.
    Plain(tun_tap::Iface),
    /// With the virtio-net header, and the offload agreed with the kernel (see [`crate::stack::offload`]).
    Offload {
        file: File,
        name: String,
        agreed: Offload,
    },
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
        // Leave a persistent device as a plain user expects it (see offload::clear_offload).
        if let DeviceHandle::Offload { file, .. } = self {
            let _ = offload::clear_offload(file.as_raw_fd());
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
    /// Opens (and, when privileged, creates) device `name`. Unless `offload` is [`Offload::None`], with the
    /// virtio-net header and as much of `offload` as the kernel agrees to (see [`offload::negotiate`]):
    /// checksum offload saves the kernel and smoltcp a checksum pass over every TCP segment, segmentation
    /// offload a read or write and a pass through both stacks for every MTU-sized packet. With
    /// `kernel_thread`, a kernel thread takes in the frames smoltalk writes (see [`KernelThread`]).
    pub fn open(
        name: &str,
        kind: DeviceKind,
        offload: Offload,
        kernel_thread: KernelThreadMode,
    ) -> Result<Self, DeviceError> {
        let header = offload != Offload::None;
        // NAPI mode only where its thread can be switched on: without the switch it would change the path
        // frames take for nothing.
        let mut napi =
            header && kernel_thread != KernelThreadMode::Off && KernelThread::may_switch(name);
        let tap = kind == DeviceKind::Tap;
        let handle = if header {
            let (file, name, agreed) = match offload::open(name, tap, offload, napi) {
                Err(e) if napi && e.raw_os_error() == Some(errno::EINVAL) => {
                    // A kernel without IFF_NAPI for TUN/TAP; any other reason shows again without it.
                    log::info!(
                        "{name}: opening in NAPI mode failed ({e}); trying without a kernel thread"
                    );
                    napi = false;
                    offload::open(name, tap, offload, false)
                }
                opened => opened,
            }
            .map_err(|e| open_error(name, kind, e))?;
            DeviceHandle::Offload { file, name, agreed }
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
            offload::clear_offload(iface.as_raw_fd()).map_err(|error| DeviceError::OffloadOff {
                name: name.to_string(),
                error,
            })?;
            DeviceHandle::Plain(iface)
        };
        let mtu = std::fs::read_to_string(format!("/sys/class/net/{}/mtu", handle.name()))
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .unwrap_or(1500);
        let thread = match &handle {
            DeviceHandle::Offload { name, .. } if napi => KernelThread::start(name, kernel_thread),
            _ => None,
        };
        // Room for the largest frame the kernel can hand over (MAX_FRAME: an IPv6 packet with 65535 bytes of
        // payload behind an Ethernet header with a VLAN tag; then the virtio-net header), whatever the MTU is
        // now: the MTU can be raised while smoltalk runs, and a read into a smaller buffer would be cut short.
        let frame = MAX_FRAME + VNET_HEADER_LEN;
        let l3 = match kind {
            DeviceKind::Tun => 0,
            DeviceKind::Tap => 14,
        };
        // IPv6 segments joined into TCPV6 super-packets only where the kernel agreed to take them (TSO6).
        let coalescer = match &handle {
            DeviceHandle::Offload {
                agreed: Offload::Segmentation,
                ..
            } => {
                let coalescer = SegmentCoalescer::new(l3);
                log::debug!(
                    "{}: IPv6 TCP segments joined into TCPV6 super-packets ({} KiB of buffers)",
                    handle.name(),
                    coalescer.buffer_bytes() >> 10
                );
                Some(coalescer)
            }
            _ => None,
        };
        Ok(TunTapDevice {
            handle,
            kind,
            mtu,
            rx: vec![0; frame],
            tx: Transmitter {
                buf: vec![0; frame],
                header_len: if header { VNET_HEADER_LEN } else { 0 },
                segment_size: None,
                thread,
                now: Instant::ZERO,
                l3,
                coalescer,
                writer: FrameWriter::default(),
            },
            received_bytes: Rc::default(),
        })
    }

    /// The offload agreed with the kernel.
    pub fn offload(&self) -> Offload {
        match self.handle {
            DeviceHandle::Plain(_) => Offload::None,
            DeviceHandle::Offload { agreed, .. } => agreed,
        }
    }

    /// When a kernel thread takes in the frames written (see [`KernelThread`]), if it can.
    pub fn kernel_thread(&self) -> Option<KernelThreadMode> {
        self.tx.thread.as_ref().map(KernelThread::mode)
    }

    /// Writes the IPv6 super-packets still being built (see [`SegmentCoalescer`]); the owner calls it at the end
    /// of every poll and before it sleeps, so no segment waits.
    pub fn flush(&mut self) {
        let tx = &mut self.tx;
        if let Some(coalescer) = &mut tx.coalescer {
            let (handle, writer, thread) = (&self.handle, &mut tx.writer, &mut tx.thread);
            let (l3, now) = (tx.l3, tx.now);
            coalescer.flush(&mut |bytes| write_coalesced(bytes, handle, writer, thread, l3, now));
        }
    }

    /// Bytes of buffer the IPv6 segment coalescer holds (0 without one).
    pub fn coalescer_bytes(&self) -> usize {
        self.tx
            .coalescer
            .as_ref()
            .map_or(0, SegmentCoalescer::buffer_bytes)
    }

    /// What a network on this device needs to know of it, however the device is wrapped.
    pub fn info(&self) -> DeviceInfo {
        DeviceInfo {
            name: self.handle.name().to_string(),
            kind: self.kind,
            mtu: self.mtu,
            offload: self.offload(),
            kernel_thread: self.kernel_thread(),
            fd: self.handle.fd(),
            failure: Rc::clone(&self.tx.writer.failure),
            received_bytes: Rc::clone(&self.received_bytes),
        }
    }
}

impl Drop for TunTapDevice {
    fn drop(&mut self) {
        self.flush();
        // The kernel takes the threaded setting only while the device has a NAPI queue, which goes with the
        // descriptor: give it back first.
        drop(self.tx.thread.take());
    }
}

/// A device's name, kind and MTU, and its descriptor, failure and byte count, shared with the device itself
/// (which may sit under smoltcp's `PcapWriter`, `FaultInjector` and `Tracer`).
pub struct DeviceInfo {
    name: String,
    kind: DeviceKind,
    mtu: usize,
    offload: Offload,
    kernel_thread: Option<KernelThreadMode>,
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

    /// The offload agreed with the kernel.
    pub fn offload(&self) -> Offload {
        self.offload
    }

    /// When a kernel thread takes in the frames written (see [`KernelThread`]), if it can.
    pub fn kernel_thread(&self) -> Option<KernelThreadMode> {
        self.kernel_thread
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
    /// Where smoltcp asked the frame being sent to be cut (its `segmentation_offload_size`), if anywhere.
    segment_size: Option<u16>,
    /// The device's threaded NAPI, if smoltalk may switch it; it counts what is written.
    thread: Option<KernelThread>,
    /// The time smoltcp last gave the device.
    now: Instant,
    /// With TSO6 agreed: joins IPv6 TCP segments into super-packets.
    coalescer: Option<SegmentCoalescer>,
    writer: FrameWriter,
}

/// Writes frames to the device, and keeps what a failed write leaves behind.
#[derive(Default)]
struct FrameWriter {
    failure: Rc<RefCell<Option<io::Error>>>,
    warned_down: bool,
}

impl FrameWriter {
    /// Writes `bytes` (virtio-net header, if any, then the frame) to `handle`. A lost packet is logged (TCP
    /// retransmits it); a fatal error is kept for the owner to see.
    fn write(&mut self, handle: &DeviceHandle, bytes: &[u8]) {
        match handle.send(bytes) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(errno::EIO) => {
                if !self.warned_down {
                    let name = handle.name();
                    log::warn!("{name} is down, packets are dropped: bring it up with `ip link set {name} up`");
                    self.warned_down = true;
                }
            }
            Err(e) if is_fatal(&e) => *self.failure.borrow_mut() = Some(e),
            // The kernel's queue is full (or similar): the packet is lost, as on a wire; TCP retransmits.
            Err(e) => log::debug!("{}: dropped an outgoing packet: {e}", handle.name()),
        }
    }
}

/// Writes what the coalescer made (virtio-net header, then a frame of `l3` bytes of link header and IP), counted
/// by `thread` as written at `now`.
fn write_coalesced(
    bytes: &[u8],
    handle: &DeviceHandle,
    writer: &mut FrameWriter,
    thread: &mut Option<KernelThread>,
    l3: usize,
    now: Instant,
) {
    if let (Some(thread), Some(frame)) = (thread.as_mut(), bytes.get(VNET_HEADER_LEN..)) {
        thread.observe(frame, l3, now);
    }
    writer.write(handle, bytes);
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
        let (tx, handle) = (self.tx, self.handle);
        let end = (tx.header_len + len).min(tx.buf.len());
        let (header, frame) = tx.buf[..end].split_at_mut(tx.header_len);
        let segment = tx.segment_size.take();
        let (l3, now) = (tx.l3, tx.now);
        let (result, offered) = match (&mut tx.coalescer, segment) {
            // An IPv6 segment may be built right into a super-packet (see SegmentCoalescer::build); IPv4
            // super-packets (with a segment size) have real TSO.
            (Some(coalescer), None) => {
                let (thread, writer) = (&mut tx.thread, &mut tx.writer);
                coalescer.build(frame, f, &mut |bytes| {
                    write_coalesced(bytes, handle, writer, thread, l3, now)
                })
            }
            _ => (f(frame), Offered::PassThrough),
        };
        if offered == Offered::Held {
            return result;
        }
        if let Some(thread) = &mut tx.thread {
            thread.observe(frame, l3, now);
        }
        if tx.header_len > 0 {
            offload::transmit(frame, l3, segment).emit(header);
        }
        tx.writer.write(handle, &tx.buf[..end]);
        result
    }

    fn set_meta(&mut self, meta: PacketMeta) {
        self.tx.segment_size = meta.segmentation_offload_size.map(NonZeroU16::get);
    }
}

impl Device for TunTapDevice {
    type RxToken<'a> = TunTapRxToken<'a>;
    type TxToken<'a> = TunTapTxToken<'a>;

    fn receive(&mut self, now: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        self.tx.now = now;
        let (header_len, l3) = (self.tx.header_len, self.tx.l3);
        let segmentation = self.offload() == Offload::Segmentation;
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
                    *self.tx.writer.failure.borrow_mut() = Some(e);
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
                if let Verdict::Drop(reason) = offload::receive(header, frame, l3, segmentation) {
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

    fn transmit(&mut self, now: Instant) -> Option<Self::TxToken<'_>> {
        self.tx.now = now;
        Some(TunTapTxToken {
            handle: &self.handle,
            tx: &mut self.tx,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        capabilities(self.kind, self.mtu, self.offload())
    }
}

/// What smoltcp is told of a device of `kind` with IP MTU `mtu` and `offload` agreed.
fn capabilities(kind: DeviceKind, mtu: usize, offload: Offload) -> DeviceCapabilities {
    let mut caps = DeviceCapabilities::default();
    let l3 = match kind {
        DeviceKind::Tun => {
            caps.medium = Medium::Ip;
            0
        }
        DeviceKind::Tap => {
            caps.medium = Medium::Ethernet;
            14
        }
    };
    caps.max_transmission_unit = mtu + l3;
    if offload >= Offload::Checksum {
        // The device and the kernel vouch for TCP checksums, over IPv4 and IPv6 (see crate::stack::offload);
        // smoltcp keeps the others.
        caps.checksum.tcp = Checksum::None;
    }
    if offload == Offload::Segmentation {
        // TCP segments up to the largest IPv4 packet (smoltcp counts the Ethernet header in, on TAP). Not `tcpv6`:
        // smoltcp 0.14 would build IPv6 super-packets, then drop them for being longer than the MTU (see
        // crate::stack::offload), and every large IPv6 write would be lost; the device joins its IPv6 segments
        // into super-packets itself (offload::SegmentCoalescer).
        caps.segmentation.tcpv4 = NonZeroUsize::new(MAX_SUPER_PACKET + l3);
    }
    caps
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_over_ipv6_is_checksum_offloaded_but_never_segmented() {
        for kind in [DeviceKind::Tun, DeviceKind::Tap] {
            let caps = capabilities(kind, 1500, Offload::Segmentation);
            assert!(!caps.checksum.tcp.tx() && !caps.checksum.tcp.rx());
            assert!(caps.checksum.udp.tx() && caps.checksum.udp.rx());
            assert_eq!(caps.segmentation.tcpv6, None);
            let l3 = if kind == DeviceKind::Tap { 14 } else { 0 };
            assert_eq!(
                caps.segmentation.tcpv4.map(NonZeroUsize::get),
                Some(65535 + l3)
            );
            assert_eq!(caps.max_transmission_unit, 1500 + l3);
            let checksum = capabilities(kind, 1500, Offload::Checksum);
            assert!(!checksum.checksum.tcp.tx());
            assert_eq!(checksum.segmentation.tcpv4, None);
            assert!(capabilities(kind, 1500, Offload::None).checksum.tcp.tx());
        }
    }
}
