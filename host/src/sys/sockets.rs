//! Sockets: options std does not set ([`set_socket_buffer`], [`reset_on_close`]), listening again with a larger
//! backlog, resetting a connection from another thread ([`abort_connection`]), peeking at what a kept connection
//! has ([`peek_inbound`]), raw packet sockets ([`PacketSocket`]), and a TCP listener that takes both families on
//! `[::]` whatever the system's default ([`tcp_listener`]).

use std::ffi::{c_int, CStr};
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use super::check;

/// Sets socket option `name` at `level` to `value`.
///
/// `T` must be the plain C type the option takes (`c_int`, `linger`, `timeval`): the kernel reads
/// `size_of::<T>()` bytes of it.
fn set_option<T>(socket: impl AsFd, level: c_int, name: c_int, value: &T) -> io::Result<()> {
    let fd = socket.as_fd().as_raw_fd();
    // SAFETY: `value` is a live `T` for the call and its exact size is passed, so the kernel reads only it; the
    // descriptor is borrowed, so open.
    check(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// One of a socket's two kernel buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketBuffer {
    /// What is sent and not yet acknowledged (`SO_SNDBUF`).
    Send,
    /// What arrived and is not yet read (`SO_RCVBUF`).
    Receive,
}

/// Fixes one kernel buffer of `socket` at `bytes` (the kernel doubles it for its bookkeeping); a fixed buffer
/// turns the kernel's autotuning off for it.
pub fn set_socket_buffer(socket: impl AsFd, which: SocketBuffer, bytes: i32) -> io::Result<()> {
    let name = match which {
        SocketBuffer::Send => libc::SO_SNDBUF,
        SocketBuffer::Receive => libc::SO_RCVBUF,
    };
    set_option(socket, libc::SOL_SOCKET, name, &bytes)
}

/// Listens again on a bound, listening socket, with room for `backlog` connections not yet accepted (std's
/// `TcpListener::bind` listens with 128; the kernel caps it at `net.core.somaxconn`).
pub fn listen(socket: impl AsFd, backlog: i32) -> io::Result<()> {
    let fd = socket.as_fd().as_raw_fd();
    // SAFETY: listen takes no pointer; the descriptor is borrowed, so open.
    check(unsafe { libc::listen(fd, backlog) }).map(drop)
}

/// A socket for `addr`'s family, not bound yet; an IPv6 one with `IPV6_V6ONLY` off, so that on `[::]` it takes
/// IPv4 clients too (and collides with a server on `0.0.0.0`).
pub fn server_socket(
    addr: std::net::SocketAddr,
    kind: socket2::Type,
    protocol: socket2::Protocol,
) -> io::Result<socket2::Socket> {
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), kind, Some(protocol))?;
    if addr.is_ipv6() {
        socket.set_only_v6(false)?;
    }
    Ok(socket)
}

/// A TCP listener on `addr`, as std's `TcpListener::bind` makes one (`SO_REUSEADDR`, a backlog of 128), except
/// that an IPv6 one has `IPV6_V6ONLY` off: on `[::]` it takes IPv4 clients too, whatever
/// `net.ipv6.bindv6only` says.
pub fn tcp_listener(addr: std::net::SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = server_socket(addr, socket2::Type::STREAM, socket2::Protocol::TCP)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(128)?;
    Ok(socket.into())
}

/// Makes closing `socket` send a reset rather than a FIN (`SO_LINGER` on, 0 s).
pub fn reset_on_close(socket: impl AsFd) -> io::Result<()> {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    set_option(socket, libc::SOL_SOCKET, libc::SO_LINGER, &linger)
}

/// Resets a connected TCP socket at once and leaves its descriptor open: the peer gets a reset (no FIN), and
/// every call blocked on the socket in another thread returns. (`connect` to an `AF_UNSPEC` address, which
/// disconnects a socket on Linux.)
pub fn abort_connection(socket: impl AsFd) -> io::Result<()> {
    let fd = socket.as_fd().as_raw_fd();
    // SAFETY: an all-zero `sockaddr` is a valid value of the plain C struct.
    let mut unspecified: libc::sockaddr = unsafe { std::mem::zeroed() };
    unspecified.sa_family = libc::AF_UNSPEC as libc::sa_family_t;
    let len = std::mem::size_of::<libc::sockaddr>() as libc::socklen_t;
    // SAFETY: the address points at the struct above and `len` is its size; the descriptor is borrowed, so open.
    check(unsafe { libc::connect(fd, &unspecified, len) }).map(drop)
}

/// How full a socket's receive queue is, as the kernel counts it (each datagram with its overhead).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiveQueue {
    /// Bytes queued.
    pub queued: usize,
    /// Bytes the queue holds before the kernel drops what arrives (the receive buffer).
    pub capacity: usize,
}

/// `SO_MEMINFO` (Linux 4.12; not in the `libc` crate's Linux list): 55 everywhere but SPARC.
#[cfg(not(target_arch = "sparc64"))]
const SO_MEMINFO: c_int = 55;
#[cfg(target_arch = "sparc64")]
const SO_MEMINFO: c_int = 0x39;

/// The values `SO_MEMINFO` gives (`SK_MEMINFO_VARS`: up to `SK_MEMINFO_DROPS`).
const SK_MEMINFO_VARS: usize = 9;

/// How full `socket`'s receive queue is (`SO_MEMINFO`).
pub fn receive_queue(socket: impl AsFd) -> io::Result<ReceiveQueue> {
    let fd = socket.as_fd().as_raw_fd();
    let mut info = [0u32; SK_MEMINFO_VARS];
    let mut len = std::mem::size_of_val(&info) as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `info`, which lives across the call, and writes the
    // length it used back into `len`; the descriptor is borrowed, so open.
    check(unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            SO_MEMINFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    })?;
    let at = |i: c_int| info.get(i as usize).copied().unwrap_or(0) as usize;
    Ok(ReceiveQueue {
        queued: at(libc::SK_MEMINFO_RMEM_ALLOC),
        capacity: at(libc::SK_MEMINFO_RCVBUF),
    })
}

/// What a connected socket has for its reader now (see [`peek_inbound`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inbound {
    /// Nothing yet: a read would wait.
    Nothing,
    /// Bytes to read.
    Bytes,
    /// The peer's end of stream (its FIN), with every byte before it read.
    End,
    /// The connection failed (a reset, or retransmissions that timed out). Linux tells this once, so the reads
    /// after this peek see a plain end.
    Failed,
}

/// What a connected socket has for its reader, from a peek that does not wait (`MSG_PEEK | MSG_DONTWAIT`,
/// whatever the socket's own blocking mode); nothing is taken from it. A kept connection the peer closed (or
/// wrote to) while it idled is not [`Inbound::Nothing`].
pub fn peek_inbound(socket: impl AsFd) -> Inbound {
    let fd = socket.as_fd().as_raw_fd();
    let mut byte = 0u8;
    // SAFETY: the buffer is one byte on this stack frame, its length is 1; the descriptor is borrowed, so open.
    let got = unsafe {
        libc::recv(
            fd,
            (&mut byte as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    match got {
        1.. => Inbound::Bytes,
        0 => Inbound::End,
        _ => match io::Error::last_os_error().kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Inbound::Nothing,
            _ => Inbound::Failed,
        },
    }
}

/// A raw packet socket (`AF_PACKET`) on one interface: every frame to or from it, of every protocol, with its
/// link-layer header. Root (`CAP_NET_RAW`) only.
pub struct PacketSocket {
    fd: OwnedFd,
}

/// A frame a [`PacketSocket`] received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketFrame {
    /// Bytes written to the buffer.
    pub len: usize,
    /// Whether the frame was going out of the interface (on loopback each packet is seen going out, then
    /// coming in).
    pub outgoing: bool,
}

impl PacketSocket {
    /// Opens a packet socket on `interface` (`c"lo"`, say) whose receives give up after `read_timeout`.
    pub fn open(interface: &CStr, read_timeout: Duration) -> io::Result<PacketSocket> {
        let protocol = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: socket(2) takes no pointer; the descriptor it returns is owned just below.
        let fd =
            check(unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, c_int::from(protocol)) })?;
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: if_nametoindex reads the NUL-terminated name it is given, which lives across the call.
        let index = unsafe { libc::if_nametoindex(interface.as_ptr()) };
        if index == 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: sockaddr_ll is plain data, for which all-zero bytes are a valid value.
        let mut address: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        address.sll_family = libc::AF_PACKET as u16;
        address.sll_protocol = protocol;
        address.sll_ifindex = index as c_int;
        // SAFETY: `address` lives across the call and its size is passed; the descriptor is ours.
        check(unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&address as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        })?;
        let timeout = libc::timeval {
            tv_sec: read_timeout.as_secs().min(i32::MAX as u64) as libc::time_t,
            tv_usec: read_timeout.subsec_micros() as libc::suseconds_t,
        };
        set_option(&fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &timeout)?;
        Ok(PacketSocket { fd })
    }

    /// Receives one frame into `buf` (cut to its length). `ErrorKind::WouldBlock` when the read timeout passed
    /// with none.
    pub fn receive(&self, buf: &mut [u8]) -> io::Result<PacketFrame> {
        // SAFETY: sockaddr_ll is plain data, for which all-zero bytes are a valid value.
        let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut from_len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // SAFETY: the buffer and the address outlive the call and their sizes are passed; the descriptor is
        // ours.
        let n = unsafe {
            libc::recvfrom(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                0,
                (&mut from as *mut libc::sockaddr_ll).cast(),
                &mut from_len,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(PacketFrame {
            len: (n as usize).min(buf.len()),
            outgoing: from.sll_pkttype == libc::PACKET_OUTGOING,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_receive_queue_fills_as_datagrams_wait() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let empty = receive_queue(&socket).unwrap();
        assert_eq!(empty.queued, 0);
        assert!(empty.capacity > 0);
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        sender
            .send_to(&[0u8; 1000], socket.local_addr().unwrap())
            .unwrap();
        let one = receive_queue(&socket).unwrap();
        assert!(one.queued >= 1000, "{one:?}");
        assert_eq!(one.capacity, empty.capacity);
    }
}
