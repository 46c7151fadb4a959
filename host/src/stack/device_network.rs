//! [`DeviceNetwork`]: one smoltcp node on a TUN/TAP device, in real time, its device bare or inside smoltcp's
//! instruments ([`DeviceStack`]). When idle, [`DeviceNetwork::wait`] sleeps on the file descriptor until a frame
//! arrives, the next smoltcp timer is due, or the next frame a shaped link holds is (`--link-delay`) — no busy
//! loop.

use smoltcp::iface::{PollIngressSingleResult, PollResult};
use smoltcp::phy::{
    self, Device, DeviceCapabilities, FaultInjector, PacketMeta, PcapLinkType, PcapMode, PcapSink,
    PcapWriter, Tracer,
};
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress};

use crate::stack::addressing::Addressing;
use crate::stack::delay_line::{DelayHandle, DelayLine};

use crate::stack::device::{DeviceInfo, DeviceKind, TunTapDevice, TunTapRxToken, TunTapTxToken};
use crate::stack::device_error::DeviceError;
use crate::stack::instruments::{trace_packet, CaptureFile, Instruments, FAULT_INJECTOR_MAX_FRAME};
use crate::stack::kernel_thread::KernelThreadMode;
use crate::stack::network::{Network, NetworkError, NodeId};
use crate::stack::node::{random_seed, Node};
use crate::stack::offload::Offload;

/// Bytes of packets taken in per poll before the sockets' replies are sent (see [`DeviceNetwork`]'s `poll`):
/// about four packets at MTU 65000 or with segmentation offload (super-packets of up to 64 KiB), a few hundred
/// at MTU 1500 without it.
pub const INGRESS_BUDGET: u64 = 256 * 1024;

/// The MAC address smoltalk's node uses on a TAP device (locally administered).
pub const TAP_MAC: EthernetAddress = EthernetAddress([0x02, 0x53, 0x4d, 0x4f, 0x4c, 0x01]);

/// The device as smoltcp sees it: bare, or inside smoltcp's instruments (outermost first): the `Tracer`
/// prints what smoltcp sends and receives, the `FaultInjector` loses and corrupts packets on the way, the
/// `PcapWriter` records what crosses smoltcp's end of the link (its packets when it sends them, the kernel's
/// when they reach it: a round trip shows as the gap between a packet and its answer), and the [`DelayLine`]
/// holds packets both ways as `--link-delay` and `--link-rate` say, before the device itself.
// One per process, made once: the bare device's size (its two frame buffers are on the heap) does not matter.
#[allow(clippy::large_enum_variant)]
pub enum DeviceStack {
    /// No instrument: the fast path.
    Bare(TunTapDevice),
    /// With instruments (see [`Instruments`]), and a handle on its delay line's queues.
    Instrumented(Box<Instrumented>, DelayHandle),
}

/// A device inside smoltcp's instruments (see [`DeviceStack`]).
pub type Instrumented = Tracer<FaultInjector<PcapWriter<DelayLine<TunTapDevice>, Capture>>>;

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
                name: device.info().name().to_string(),
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
        let delayed = DelayLine::new(device, instruments.link);
        let handle = delayed.handle();
        // The link type follows the medium: raw IP for TUN, Ethernet for TAP.
        let pcap = PcapWriter::new(delayed, capture, PcapMode::Both);
        let f = instruments.faults;
        let mut faults = FaultInjector::new(pcap, f.seed);
        faults.set_drop_chance(f.drop_chance);
        faults.set_corrupt_chance(f.corrupt_chance);
        faults.set_max_packet_size(f.size_limit);
        faults.set_max_tx_rate(f.rate_limit);
        faults.set_max_rx_rate(f.rate_limit);
        Ok(DeviceStack::Instrumented(
            Box::new(Tracer::new(faults, trace_packet)),
            handle,
        ))
    }

    /// When the next packet a shaped link holds is due, if one is held.
    pub fn next_due(&self) -> Option<Instant> {
        match self {
            DeviceStack::Bare(_) => None,
            DeviceStack::Instrumented(_, handle) => handle.next_due(),
        }
    }
}

impl DeviceStack {
    /// Writes what the device holds back: the IPv6 super-packets its coalescer is building (see
    /// [`TunTapDevice::flush`]). Only a bare device coalesces: instruments lower the offload below segmentation
    /// (see [`offload_with`]), and a device without TSO6 holds nothing back.
    pub fn flush(&mut self) {
        if let DeviceStack::Bare(device) = self {
            device.flush();
        }
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

    fn set_meta(&mut self, meta: PacketMeta) {
        match self {
            StackTxToken::Bare(t) => t.set_meta(meta),
            StackTxToken::Instrumented(t) => t.set_meta(meta),
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
            DeviceStack::Instrumented(d, _) => d.receive(now).map(|(rx, tx)| {
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
            DeviceStack::Instrumented(d, _) => d
                .transmit(now)
                .map(|t| StackTxToken::Instrumented(Box::new(t))),
        }
    }

    fn capabilities(&self) -> DeviceCapabilities {
        match self {
            DeviceStack::Bare(d) => d.capabilities(),
            DeviceStack::Instrumented(d, _) => d.capabilities(),
        }
    }
}

/// How much of `wanted` a device inside `instruments` can have, and why less, if less:
///
/// - A capture or corruption: none. With checksum offload smoltcp trusts the kernel's TCP checksums and leaves
///   its own to the kernel, so packets corrupted on the way in (by the `FaultInjector`, after the kernel) would be
///   taken as good, and a capture would show partial checksums and 64 KiB super-packets instead of what a wire
///   carries.
/// - Any other instrument: checksum offload at most. The `FaultInjector` holds frames of at most 1,536 bytes,
///   and losses, rate limits and traces are meant per packet as a wire carries it.
pub fn offload_with(wanted: Offload, instruments: &Instruments) -> (Offload, Option<&'static str>) {
    if wanted > Offload::None
        && (instruments.pcap.is_some() || instruments.faults.corrupt_chance > 0)
    {
        return (
            Offload::None,
            Some("--pcap/--corrupt-chance: offload off, so every checksum is real and verified and every packet is as a wire carries it"),
        );
    }
    if wanted > Offload::Checksum && instruments.any() {
        return (
            Offload::Checksum,
            Some("faults, --trace or --link-delay/--link-rate: no segmentation offload, so they act on packets of at most the MTU (a rate and its queue on packets as a wire carries them)"),
        );
    }
    (wanted, None)
}

/// One smoltcp node on a TUN/TAP device, in real time.
pub struct DeviceNetwork {
    node: Node,
    device: DeviceStack,
    info: DeviceInfo,
}

impl DeviceNetwork {
    /// Opens the device with as much of `offload` as `instruments` allow (see [`offload_with`]) and the kernel
    /// agrees to (see [`TunTapDevice::open`], also for `kernel_thread`), wraps it in `instruments`, and puts a
    /// node with the addresses and gateways of `addressing` on it.
    pub fn open(
        name: &str,
        kind: DeviceKind,
        offload: Offload,
        kernel_thread: KernelThreadMode,
        addressing: &Addressing,
        instruments: &Instruments,
    ) -> Result<Self, DeviceError> {
        let (offload, why) = offload_with(offload, instruments);
        if let Some(why) = why {
            log::info!("{why}: {}", offload.describe());
        }
        let device = TunTapDevice::open(name, kind, offload, kernel_thread)?;
        let info = device.info();
        let mut device = DeviceStack::new(device, instruments)?;
        let hardware = match kind {
            DeviceKind::Tun => HardwareAddress::Ip,
            DeviceKind::Tap => TAP_MAC.into(),
        };
        let now = Instant::from(std::time::Instant::now());
        let node = Node::new(name, &mut device, hardware, addressing, random_seed(), now);
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

    /// Takes in packets up to [`INGRESS_BUDGET`] bytes, then sends everything the sockets have queued, and
    /// writes what the device held back to join into super-packets (see [`DeviceStack::flush`]). The
    /// caller's step (a server moving bytes from receive to send buffers) runs between two polls, so the bytes
    /// are echoed while they are still in the CPU's cache. `Interface::poll`, which first reads every queued
    /// packet, measured slower with four busy connections at MTU 65000; a budget of a few packets measured
    /// slower at MTU 1500, where per-poll work dominates (see BENCHMARKS.md).
    fn poll_each_packet(
        &mut self,
        after_packet: &mut dyn FnMut(NodeId, &mut Node),
    ) -> Result<bool, NetworkError> {
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
                | PollIngressSingleResult::SocketStateChanged => {
                    progressed = true;
                    after_packet(0, node);
                }
            }
        }
        while node
            .iface
            .poll_egress(now, &mut self.device, &mut node.sockets)
            == PollResult::SocketStateChanged
        {
            progressed = true;
        }
        self.device.flush();
        self.check_device()?;
        Ok(progressed)
    }

    fn wait(&mut self, until: Option<Instant>) -> Result<(), NetworkError> {
        // Nothing may wait in the device while smoltalk sleeps (a poll flushes already; this costs nothing then).
        self.device.flush();
        let now = self.now();
        let node = &mut self.node;
        let mut delay = node.iface.poll_delay(now, &node.sockets);
        if let Some(due) = self.device.next_due() {
            // A held packet wakes the loop when it is due.
            let left = if due > now {
                due - now
            } else {
                smoltcp::time::Duration::ZERO
            };
            delay = Some(delay.map_or(left, |d| d.min(left)));
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stack::instruments::Faults;

    #[test]
    fn instruments_lower_the_offload_and_say_why() {
        let bare = Instruments::default();
        assert_eq!(
            offload_with(Offload::Segmentation, &bare),
            (Offload::Segmentation, None)
        );
        let capture = Instruments {
            pcap: Some("x.pcap".into()),
            ..Instruments::default()
        };
        let corrupt = Instruments {
            faults: Faults {
                corrupt_chance: 1,
                ..Faults::default()
            },
            ..Instruments::default()
        };
        for instruments in [&capture, &corrupt] {
            let (offload, why) = offload_with(Offload::Segmentation, instruments);
            assert_eq!(offload, Offload::None);
            assert!(why.is_some_and(|w| w.contains("--pcap/--corrupt-chance")));
        }
        let loss = Instruments {
            faults: Faults {
                drop_chance: 10,
                ..Faults::default()
            },
            ..Instruments::default()
        };
        let trace = Instruments {
            trace: true,
            ..Instruments::default()
        };
        for instruments in [&loss, &trace] {
            let (offload, why) = offload_with(Offload::Segmentation, instruments);
            assert_eq!(offload, Offload::Checksum);
            assert!(why.is_some());
            // Asking for less is not lowered further, and needs no word.
            assert_eq!(
                offload_with(Offload::Checksum, instruments),
                (Offload::Checksum, None)
            );
        }
        assert_eq!(offload_with(Offload::None, &capture), (Offload::None, None));
    }
}
