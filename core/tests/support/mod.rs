#![allow(dead_code)]
//! A single smoltcp interface on a loopback device, for the core's own tests: the server and its clients live on
//! the same node, and a test can move packets one at a time.

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{Loopback, Medium};
use smoltcp::socket::{tcp, udp};
use smoltcp::time::Instant;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, IpEndpoint, Ipv4Address};

pub const ADDR: Ipv4Address = Ipv4Address::new(127, 0, 0, 1);

pub struct Bench {
    pub iface: Interface,
    pub device: Loopback,
    pub sockets: SocketSet<'static>,
    pub now: Instant,
}

impl Bench {
    pub fn new() -> Self {
        let mut device = Loopback::new(Medium::Ip);
        let mut config = Config::new(HardwareAddress::Ip);
        config.random_seed = 42;
        let now = Instant::from_secs(1);
        let mut iface = Interface::new(config, &mut device, now);
        iface.update_ip_addrs(|addrs| {
            addrs.push(IpCidr::new(IpAddress::Ipv4(ADDR), 8)).ok();
        });
        Bench {
            iface,
            device,
            sockets: SocketSet::new(Vec::new()),
            now,
        }
    }

    pub fn tcp_socket(&mut self, size: usize) -> SocketHandle {
        self.sockets.add(tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; size]),
            tcp::SocketBuffer::new(vec![0; size]),
        ))
    }

    pub fn udp_socket(&mut self, packets: usize, payload: usize) -> SocketHandle {
        let buffer =
            || udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; packets], vec![0; payload]);
        self.sockets.add(udp::Socket::new(buffer(), buffer()))
    }

    pub fn poll(&mut self) {
        self.iface
            .poll(self.now, &mut self.device, &mut self.sockets);
    }

    /// Sends what is queued, then takes in exactly one packet.
    pub fn one_packet(&mut self) {
        self.iface
            .poll_egress(self.now, &mut self.device, &mut self.sockets);
        self.iface
            .poll_ingress_single(self.now, &mut self.device, &mut self.sockets);
    }

    pub fn endpoint(port: u16) -> IpEndpoint {
        IpEndpoint::new(IpAddress::Ipv4(ADDR), port)
    }

    pub fn connect(&mut self, handle: SocketHandle, port: u16, local_port: u16) {
        let cx = self.iface.context();
        self.sockets
            .get_mut::<tcp::Socket>(handle)
            .connect(cx, Self::endpoint(port), local_port)
            .unwrap();
    }

    pub fn advance_ms(&mut self, ms: u64) {
        self.now += smoltcp::time::Duration::from_millis(ms);
    }
}
