//! smoltalk firmware: the uppercase TCP/UDP service, and with the `proxy` feature the HTTP proxy, on a bare-metal
//! Arm Cortex-M3 (QEMU `mps2-an385`, no heap), with the board's SMSC LAN9118 Ethernet controller.
//!
//! ```text
//! LAN9118 (FIFOs) → Lan9118 (smoltcp phy::Device) → Interface → sockets → UppercaseTcpServer<2> / UppercaseUdpServer
//!                                                                     → ProxyServer (proxy.rs, port 8080)
//! ```
//!
//! The same core objects, buffers and loop as `examples/firmware-riscv` (whose `proxy.rs` this crate uses as it
//! is); the board is what differs (src/board.rs, src/lan9118.rs). Everything lives in static storage. Idle time
//! is spent in `wfi`, woken by TIMER0 (set from `Interface::poll_delay` and the proxy's deadlines), by the
//! LAN9118's receive interrupt through the NVIC, or by SysTick's wrap every 0.67 s.
#![no_std]
#![no_main]

/// Stops the board with a message: formatted in the full build; in the lean build (which carries no `core::fmt`)
/// only its plain first part, the second argument's values left unformatted.
macro_rules! fatal {
    ($plain:literal, $($formatted:tt)+) => {{
        #[cfg(feature = "full")]
        panic!($($formatted)+);
        #[cfg(not(feature = "full"))]
        panic!($plain);
    }};
}

mod board;
mod lan9118;
// The riscv firmware's proxy, unchanged: it uses only the core and smoltcp. Formatted with that crate, not here.
#[cfg(feature = "proxy")]
#[path = "../../firmware-riscv/src/proxy.rs"]
#[rustfmt::skip]
mod proxy;

#[cfg(feature = "full")]
use core::fmt::Write;
use core::ptr::addr_of_mut;

#[cfg(feature = "full")]
use smoltalk_core::MIN_UDP_DATAGRAM;
use smoltalk_core::{UppercaseTcpServer, UppercaseUdpServer, DEFAULT_PORT};
use smoltcp::iface::{Config, Interface, SocketSet, SocketStorage};
use smoltcp::socket::{tcp, udp};
use smoltcp::time::Duration;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpCidr, Ipv4Address};

use board::{now, Uart};
use cortex_m_rt::entry;

/// TCP connections served at once.
const TCP_CONNECTIONS: usize = 2;
/// TCP receive and send buffer, each, per connection.
#[cfg(feature = "full")]
const TCP_BUFFER: usize = 4096;
#[cfg(not(feature = "full"))]
const TCP_BUFFER: usize = 1024;
/// UDP payload buffer, each direction: two of the largest requests answered whole (one frame, lean).
#[cfg(feature = "full")]
const UDP_BUFFER: usize = 2 * MIN_UDP_DATAGRAM;
#[cfg(not(feature = "full"))]
const UDP_BUFFER: usize = 1536;
/// Scratch buffers the servers move bytes through.
#[cfg(feature = "full")]
const SCRATCH: (usize, usize) = (2048, MIN_UDP_DATAGRAM);
#[cfg(not(feature = "full"))]
const SCRATCH: (usize, usize) = (1024, 1536);
/// UDP datagrams queued, each direction.
const UDP_PACKETS: usize = 4;
/// The longest sleep when nothing is due (the timer also backs up a missed device interrupt).
const MAX_SLEEP: Duration = Duration::from_millis(1000);

/// The proxy's sockets (two per slot and a refuser), none without it.
#[cfg(feature = "proxy")]
const PROXY_SOCKETS: usize = proxy::SOCKETS;
#[cfg(not(feature = "proxy"))]
const PROXY_SOCKETS: usize = 0;
/// Every socket: the uppercase service's TCP connections and UDP socket, then the proxy's.
const SOCKETS: usize = TCP_CONNECTIONS + 1 + PROXY_SOCKETS;

static mut SOCKET_STORAGE: [SocketStorage<'static>; SOCKETS] = [SocketStorage::EMPTY; SOCKETS];
static mut TCP_RX: [[u8; TCP_BUFFER]; TCP_CONNECTIONS] = [[0; TCP_BUFFER]; TCP_CONNECTIONS];
static mut TCP_TX: [[u8; TCP_BUFFER]; TCP_CONNECTIONS] = [[0; TCP_BUFFER]; TCP_CONNECTIONS];
static mut UDP_RX_META: [udp::PacketMetadata; UDP_PACKETS] =
    [udp::PacketMetadata::EMPTY; UDP_PACKETS];
static mut UDP_TX_META: [udp::PacketMetadata; UDP_PACKETS] =
    [udp::PacketMetadata::EMPTY; UDP_PACKETS];
static mut UDP_RX: [u8; UDP_BUFFER] = [0; UDP_BUFFER];
static mut UDP_TX: [u8; UDP_BUFFER] = [0; UDP_BUFFER];
static mut TCP_SCRATCH: [u8; SCRATCH.0] = [0; SCRATCH.0];
static mut UDP_SCRATCH: [u8; SCRATCH.1] = [0; SCRATCH.1];

/// Called once by cortex-m-rt's reset handler, with `.data` copied, `.bss` zeroed and the stack painted.
#[entry]
fn main() -> ! {
    #[cfg(feature = "full")]
    board::init_logger();
    Uart::init();
    let mut uart = Uart;
    uart.line("smoltalk firmware: booting");

    board::init();
    let mut nic = match lan9118::Lan9118::new() {
        Ok(nic) => nic,
        Err(_e) => fatal!("LAN9118 set-up failed", "LAN9118 set-up failed: {_e}"),
    };
    board::enable_irqs();
    let mac = nic.mac();
    #[cfg(feature = "full")]
    let _ = writeln!(
        uart,
        "smoltalk firmware: LAN9118 (ID_REV {:#010x}) at IRQ {}, MAC {}, link {}",
        nic.id_rev(),
        board::ETHERNET_IRQ,
        EthernetAddress(mac),
        if nic.link_up() { "up" } else { "down" }
    );

    let mut config = Config::new(HardwareAddress::Ethernet(EthernetAddress(mac)));
    config.random_seed = board::ticks()
        ^ u64::from_le_bytes([mac[0], mac[1], mac[2], mac[3], mac[4], mac[5], 0x5a, 0xa5]);
    let mut iface = Interface::new(config, &mut nic, now());
    iface.update_ip_addrs(|addrs| {
        let _ = addrs.push(IpCidr::new(Ipv4Address::new(10, 0, 2, 15).into(), 24));
    });
    let _ = iface
        .routes_mut()
        .add_default_ipv4_route(Ipv4Address::new(10, 0, 2, 2));

    // SAFETY: `main` runs once and never returns, so these are the only references to the statics.
    let (
        storage,
        tcp_rx,
        tcp_tx,
        udp_rx_meta,
        udp_tx_meta,
        udp_rx,
        udp_tx,
        tcp_scratch,
        udp_scratch,
    ) = unsafe {
        (
            &mut *addr_of_mut!(SOCKET_STORAGE),
            &mut *addr_of_mut!(TCP_RX),
            &mut *addr_of_mut!(TCP_TX),
            &mut *addr_of_mut!(UDP_RX_META),
            &mut *addr_of_mut!(UDP_TX_META),
            &mut *addr_of_mut!(UDP_RX),
            &mut *addr_of_mut!(UDP_TX),
            &mut *addr_of_mut!(TCP_SCRATCH),
            &mut *addr_of_mut!(UDP_SCRATCH),
        )
    };
    let mut sockets = SocketSet::new(&mut storage[..]);
    let mut tcp_handles = [None; TCP_CONNECTIONS];
    for ((handle, rx), tx) in tcp_handles
        .iter_mut()
        .zip(tcp_rx.iter_mut())
        .zip(tcp_tx.iter_mut())
    {
        let socket = tcp::Socket::new(
            tcp::SocketBuffer::new(&mut rx[..]),
            tcp::SocketBuffer::new(&mut tx[..]),
        );
        *handle = Some(sockets.add(socket));
    }
    let udp_handle = sockets.add(udp::Socket::new(
        udp::PacketBuffer::new(&mut udp_rx_meta[..], &mut udp_rx[..]),
        udp::PacketBuffer::new(&mut udp_tx_meta[..], &mut udp_tx[..]),
    ));

    let mut tcp_server: UppercaseTcpServer<TCP_CONNECTIONS> = match UppercaseTcpServer::new(
        DEFAULT_PORT,
        tcp_handles.iter().flatten().copied(),
        &mut sockets,
    ) {
        Ok(server) => server,
        Err(_e) => fatal!("tcp server", "tcp server: {_e}"),
    };
    let mut udp_server = match UppercaseUdpServer::new(DEFAULT_PORT, udp_handle, &mut sockets) {
        Ok(server) => server,
        Err(_e) => fatal!("udp server", "udp server: {_e}"),
    };
    #[cfg(feature = "proxy")]
    let mut proxy = {
        let seed =
            board::ticks() ^ u64::from_le_bytes([mac[5], mac[4], mac[3], mac[2], 0, 0, 0, 0]);
        match proxy::BoardProxy::start(&mut sockets, seed as u16) {
            Ok(proxy) => proxy,
            Err(_e) => fatal!("proxy", "proxy: {_e}"),
        }
    };
    // What each core object costs here (size.sh reads this line for the size report).
    #[cfg(feature = "full")]
    let _ = write!(
        uart,
        "smoltalk firmware: sizes: Interface {}, tcp::Socket {}, udp::Socket {}, SocketSet {}, \
         UppercaseTcpServer<{TCP_CONNECTIONS}> {}, UppercaseUdpServer {}, Lan9118 {}",
        core::mem::size_of::<Interface>(),
        core::mem::size_of::<tcp::Socket>(),
        core::mem::size_of::<udp::Socket>(),
        core::mem::size_of::<SocketSet>(),
        core::mem::size_of::<UppercaseTcpServer<TCP_CONNECTIONS>>(),
        core::mem::size_of::<UppercaseUdpServer>(),
        core::mem::size_of::<lan9118::Lan9118>(),
    );
    #[cfg(all(feature = "full", feature = "proxy"))]
    let _ = write!(
        uart,
        ", ProxyServer<{} slots> {}, ProxySlot<{}> {}",
        proxy::SLOTS,
        core::mem::size_of::<smoltalk_core::proxy::ProxyServer<proxy::Slots, { proxy::OUT }>>(),
        proxy::OUT,
        core::mem::size_of::<smoltalk_core::proxy::ProxySlot<{ proxy::OUT }>>(),
    );
    #[cfg(feature = "full")]
    let _ = writeln!(uart, " bytes");
    uart.line("smoltalk firmware: uppercase on 10.0.2.15:12000 (tcp, udp)");
    #[cfg(feature = "proxy")]
    uart.line("smoltalk firmware: http proxy on 10.0.2.15:8080");

    let mut served = 0;
    #[cfg(all(feature = "full", feature = "proxy"))]
    let mut proxied = 0;
    loop {
        let closed = tcp_server.stats().closed + tcp_server.stats().reset;
        if closed != served {
            served = closed;
            #[cfg(feature = "full")]
            let _ = writeln!(
                uart,
                "smoltalk firmware: {served} tcp connections served, {} udp requests answered, \
                 {} frames dropped, {} send errors, stack high-water {} of {} bytes",
                udp_server.stats().answered,
                nic.counters().rx_dropped,
                nic.counters().tx_errors,
                board::stack_high_water(),
                board::stack_size()
            );
        }
        #[cfg(all(feature = "full", feature = "proxy"))]
        {
            let (stats, refused) = proxy.stats();
            if proxy.busy() == 0 && stats.accepted + refused != proxied {
                proxied = stats.accepted + refused;
                let _ = writeln!(
                    uart,
                    "smoltalk firmware: proxy: {} clients, {} requests, {} responses, {} errors, {} refused, \
                     {} body bytes, stack high-water {} of {} bytes",
                    stats.accepted,
                    stats.requests,
                    stats.responses,
                    stats.errors,
                    refused,
                    stats.body_bytes,
                    board::stack_high_water(),
                    board::stack_size()
                );
            }
        }
        let mut busy = true;
        while busy {
            let timestamp = now();
            let changed = iface.poll(timestamp, &mut nic, &mut sockets);
            let moved = tcp_server.poll(&mut sockets, &mut tcp_scratch[..])
                | udp_server.poll(&mut sockets, &mut udp_scratch[..]);
            #[cfg(feature = "proxy")]
            let moved = proxy.poll(timestamp, &mut iface, &mut sockets) | moved;
            busy = moved || changed != smoltcp::iface::PollResult::None;
        }
        let timestamp = now();
        let delay = iface
            .poll_delay(timestamp, &sockets)
            .map_or(MAX_SLEEP, |delay| delay.min(MAX_SLEEP));
        // The proxy's deadlines (a client's head timeout, a closing connection's linger) wake the board too.
        #[cfg(feature = "proxy")]
        let delay = proxy.poll_at().map_or(delay, |at| {
            delay.min(if at > timestamp {
                at - timestamp
            } else {
                Duration::ZERO
            })
        });
        if delay != Duration::ZERO {
            // Returns at once if a frame is already waiting.
            board::sleep(delay);
        }
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    #[cfg(feature = "full")]
    {
        let _ = writeln!(Uart, "smoltalk firmware: PANIC: {info}");
        let _ = writeln!(
            Uart,
            "smoltalk firmware: stack high-water {} of {} bytes",
            board::stack_high_water(),
            board::stack_size()
        );
    }
    // Lean: no formatting, so the panic's message (and `core::fmt`) stays out of the image.
    #[cfg(not(feature = "full"))]
    {
        let _ = info;
        Uart.line("smoltalk firmware: PANIC");
    }
    board::halt()
}
