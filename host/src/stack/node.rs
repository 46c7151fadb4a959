//! [`Node`]: one smoltcp host — an interface, its sockets and its ephemeral ports — whatever device it is on.

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::Device;
use smoltcp::socket::{tcp, udp};
use smoltcp::time::Instant;
use smoltcp::wire::{HardwareAddress, IpAddress};

use crate::stack::addressing::Addressing;

/// Buffer sizes for the sockets a node creates.
#[derive(Debug, Clone, Copy)]
pub struct SocketBuffers {
    /// TCP receive and send buffer, each (the send buffer: unless `tcp_send` says otherwise).
    pub tcp: usize,
    /// TCP send buffer, if it differs from the receive buffer (see `crate::lab::soak` for why a lossy link wants
    /// it smaller than the peer's receive buffer).
    pub tcp_send: Option<usize>,
    /// UDP payload buffer, each direction.
    pub udp_payload: usize,
    /// UDP datagrams queued, each direction.
    pub udp_packets: usize,
}

impl Default for SocketBuffers {
    fn default() -> Self {
        SocketBuffers {
            tcp: 64 * 1024,
            tcp_send: None,
            udp_payload: 64 * 1024,
            udp_packets: 64,
        }
    }
}

/// One smoltcp host: interface, sockets, and a source of ephemeral ports.
pub struct Node {
    /// A short name for reports ("server", "client", the device name).
    pub name: String,
    /// The node's interface.
    pub iface: Interface,
    /// The node's sockets.
    pub sockets: SocketSet<'static>,
    /// Buffer sizes for sockets added with [`Node::add_tcp_socket`] and [`Node::add_udp_socket`].
    pub buffers: SocketBuffers,
    port_state: u64,
}

impl Node {
    /// Creates a node on `device` with the addresses of `addressing` (one of each family at most), a default
    /// route via each of its gateways, and `seed` for smoltcp's initial sequence numbers and this node's
    /// ephemeral ports.
    pub fn new<D: Device>(
        name: &str,
        device: &mut D,
        hardware: HardwareAddress,
        addressing: &Addressing,
        seed: u64,
        now: Instant,
    ) -> Node {
        let mut config = Config::new(hardware);
        config.random_seed = seed;
        let mut iface = Interface::new(config, device, now);
        iface.update_ip_addrs(|addrs| {
            // A fresh interface has room for two addresses (smoltcp's IFACE_MAX_ADDR_COUNT): one of each family.
            for cidr in addressing.cidrs() {
                let _ = addrs.push(cidr);
            }
        });
        for gateway in addressing.gateways() {
            // Room for two routes (IFACE_MAX_ROUTE_COUNT): one default route of each family.
            let _ = match gateway {
                IpAddress::Ipv4(v4) => iface.routes_mut().add_default_ipv4_route(v4).map(drop),
                IpAddress::Ipv6(v6) => iface.routes_mut().add_default_ipv6_route(v6).map(drop),
            };
        }
        Node {
            name: name.to_string(),
            iface,
            sockets: SocketSet::new(Vec::new()),
            buffers: SocketBuffers::default(),
            port_state: seed | 1,
        }
    }

    /// Adds a TCP socket with this node's buffer sizes.
    pub fn add_tcp_socket(&mut self) -> SocketHandle {
        let size = self.buffers.tcp;
        let send = self.buffers.tcp_send.unwrap_or(size);
        self.add_tcp_socket_sized(size, send)
    }

    /// Adds a TCP socket with `rx` and `tx` bytes of buffers (one that needs less than the node's sizes).
    pub fn add_tcp_socket_sized(&mut self, rx: usize, tx: usize) -> SocketHandle {
        let socket = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; rx]),
            tcp::SocketBuffer::new(vec![0; tx]),
        );
        self.sockets.add(socket)
    }

    /// Adds a UDP socket with this node's buffer sizes.
    pub fn add_udp_socket(&mut self) -> SocketHandle {
        let b = self.buffers;
        let buffer = || {
            udp::PacketBuffer::new(
                vec![udp::PacketMetadata::EMPTY; b.udp_packets],
                vec![0; b.udp_payload],
            )
        };
        self.sockets.add(udp::Socket::new(buffer(), buffer()))
    }

    /// A pseudo-random port from the dynamic range 49152–65535 (a fixed port would collide with the peer's
    /// TIME-WAIT from an earlier run).
    pub fn ephemeral_port(&mut self) -> u16 {
        // xorshift64: deterministic for a given seed, which keeps the lab repeatable.
        let mut x = self.port_state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.port_state = x;
        49152 + (x % 16384) as u16
    }
}

/// A seed for smoltcp from the operating system's randomness (a real device; the lab uses fixed seeds).
pub fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    hasher.write_u32(std::process::id());
    hasher.finish()
}
