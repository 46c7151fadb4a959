//! A smoltcp device that is two queues: packets the harness injects, and packets the interface sent.

use std::collections::VecDeque;

use smoltcp::phy::{self, ChecksumCapabilities, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

/// An IP-medium device: [`QueueDevice::inject`] queues a packet for the interface to receive, and every packet
/// the interface transmits lands in [`QueueDevice::sent`].
#[derive(Debug)]
pub struct QueueDevice {
    /// Packets waiting to be received, oldest first.
    pub incoming: VecDeque<Vec<u8>>,
    /// Packets the interface sent since the harness last took them.
    pub sent: Vec<Vec<u8>>,
    /// Whether the interface verifies and fills in checksums (`false`: it ignores them both ways).
    pub checksums: bool,
    /// The largest packet either way.
    pub mtu: usize,
}

impl QueueDevice {
    /// An empty device.
    pub fn new(checksums: bool, mtu: usize) -> Self {
        QueueDevice {
            incoming: VecDeque::new(),
            sent: Vec::new(),
            checksums,
            mtu,
        }
    }

    /// Queues `packet` (an IP packet) for the interface.
    pub fn inject(&mut self, packet: Vec<u8>) {
        self.incoming.push_back(packet);
    }
}

/// A received packet.
#[derive(Debug)]
pub struct Rx(Vec<u8>);

/// Room for one sent packet.
#[derive(Debug)]
pub struct Tx<'a>(&'a mut Vec<Vec<u8>>);

impl phy::RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut packet = vec![0; len];
        let result = f(&mut packet);
        self.0.push(packet);
        result
    }
}

impl phy::Device for QueueDevice {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx<'a>;

    fn receive(&mut self, _now: Instant) -> Option<(Rx, Tx<'_>)> {
        let packet = self.incoming.pop_front()?;
        Some((Rx(packet), Tx(&mut self.sent)))
    }

    fn transmit(&mut self, _now: Instant) -> Option<Tx<'_>> {
        Some(Tx(&mut self.sent))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = self.mtu;
        if !self.checksums {
            caps.checksum = ChecksumCapabilities::ignored();
        }
        caps
    }
}
