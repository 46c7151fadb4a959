//! The kernel-stack servers' sockets: where they listen ([`ListenAddress`]: `[::]` for IPv4 and IPv6 clients by
//! default), one per worker on the same address (`SO_REUSEPORT`), the listen backlog, how many workers a machine
//! gets, the open files limit a connection cap needs, and taking the clients waiting ([`Acceptor`], for both TCP
//! designs).
//!
//! With `SO_REUSEPORT` the kernel spreads new TCP connections (and UDP datagrams) over the sockets bound to one
//! address by a hash of the client's address and port: each connection stays with the worker that accepted it,
//! and many clients spread about evenly, but one client's connections may land anywhere and a few can meet on one
//! worker. Every socket of a server must have the option, and two servers of the same user that both set it
//! would share a port without a word: so the address is first claimed by a socket without the option, which
//! fails as any bind does when another server runs there.
//!
//! Every IPv6 socket has `IPV6_V6ONLY` off, set here rather than left to the system's default
//! (`net.ipv6.bindv6only`): a socket on `[::]` then takes IPv4 clients too (as `::ffff:a.b.c.d`, shown as
//! `a.b.c.d`, see [`super::unmapped`]), and the claim on `[::]` collides with a server on `0.0.0.0` and the other
//! way round, so two servers never split one port between the families.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket};

use socket2::{Protocol, Socket, Type};

use smoltalk_core::Refusals;

use super::{bind_error, over_the_last, unmapped, KernelError};
use crate::sys;

/// Where a kernel-stack server is asked to listen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenAddress {
    /// The default: `[::]` on `port`, for IPv4 and IPv6 clients; `0.0.0.0` where the system has no IPv6 (the log
    /// says so and why).
    EveryFamily {
        /// The port (0: any free one).
        port: u16,
    },
    /// This address only, as `--bind` gave it: `::` takes IPv4 and IPv6 clients, and fails where the system has
    /// no IPv6; `0.0.0.0` takes IPv4 clients only; `::1` or `127.0.0.1` one family on loopback.
    Exactly(SocketAddr),
}

impl From<SocketAddr> for ListenAddress {
    fn from(addr: SocketAddr) -> ListenAddress {
        ListenAddress::Exactly(addr)
    }
}

impl ListenAddress {
    /// Binds with `bind`: the address asked for, or for [`ListenAddress::EveryFamily`] `[::]`, then `0.0.0.0` if
    /// the system refuses IPv6 (see [`refuses_ipv6`]).
    pub fn bind_with<T>(
        self,
        bind: impl Fn(SocketAddr) -> Result<T, KernelError>,
    ) -> Result<T, KernelError> {
        let port = match self {
            ListenAddress::Exactly(addr) => return bind(addr),
            ListenAddress::EveryFamily { port } => port,
        };
        match bind((Ipv6Addr::UNSPECIFIED, port).into()) {
            Err(KernelError::Bind { proto, addr, error }) if refuses_ipv6(&error) => {
                let ipv4: SocketAddr = (Ipv4Addr::UNSPECIFIED, port).into();
                log::warn!(
                    "{}: cannot listen on {addr} ({error}): this machine has no IPv6, so listening on {ipv4}, for                      IPv4 clients only",
                    proto.to_ascii_lowercase()
                );
                bind(ipv4)
            }
            other => other,
        }
    }
}

/// Whether binding `[::]` failed because the system has no IPv6: the kernel refuses IPv6 sockets
/// (`EAFNOSUPPORT`, IPv6 compiled out or `ipv6.disable=1`) or has no IPv6 address to bind (`EADDRNOTAVAIL`).
pub fn refuses_ipv6(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(sys::errno::EAFNOSUPPORT | sys::errno::EADDRNOTAVAIL)
    )
}

/// Which clients a server bound to `addr` takes, for its start-up line: "IPv4 and IPv6" on `[::]`, "IPv4 only"
/// on `0.0.0.0`; `None` for one address, which says it.
pub fn families_served(addr: SocketAddr) -> Option<&'static str> {
    match addr.ip() {
        ip if !ip.is_unspecified() => None,
        std::net::IpAddr::V6(_) => Some("IPv4 and IPv6"),
        std::net::IpAddr::V4(_) => Some("IPv4 only"),
    }
}

/// Connections the kernel holds ready for `accept`, per listening socket (capped by `net.core.somaxconn`,
/// 4096 on current kernels): a burst of clients waits there instead of having its SYNs dropped.
pub const LISTEN_BACKLOG: i32 = 4096;

/// Descriptors kept for everything but clients: standard streams, a lookup, and slack; each worker needs
/// [`DESCRIPTORS_PER_WORKER`] more.
const SPARE_DESCRIPTORS: u64 = 64;

/// Descriptors of each worker: its listening socket, its epoll, its reserve for refusing a client when
/// descriptors run out, and a client being refused.
const DESCRIPTORS_PER_WORKER: u64 = 4;

/// The workers a server gets by default: one per CPU this process may run on.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// `count` listening TCP sockets on `addr` (at least one; with more, each has `SO_REUSEPORT`), each with
/// [`LISTEN_BACKLOG`]. Port 0 picks one free port for all of them.
///
/// With more than one, the address is claimed first by a socket bound without `SO_REUSEPORT` (but with
/// `SO_REUSEADDR`, and not listening): it fails if a server listens there already, lets the shared sockets bind
/// beside it, and is closed only once they listen, so a second server starting at the same moment finds them and
/// fails too.
pub fn tcp_listeners(addr: SocketAddr, count: usize) -> Result<Vec<TcpListener>, KernelError> {
    let bound = |error| bind_error("TCP", addr, error);
    let claim = sys::server_socket(addr, Type::STREAM, Protocol::TCP)
        .and_then(|claim| {
            claim.set_reuse_address(true)?;
            claim.bind(&addr.into())?;
            Ok(claim)
        })
        .map_err(bound)?;
    if count <= 1 {
        claim.listen(LISTEN_BACKLOG).map_err(bound)?;
        return Ok(vec![TcpListener::from(claim)]);
    }
    let at = claim
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .unwrap_or(addr);
    let listeners = (0..count)
        .map(|_| {
            let socket = shared_socket(at, Type::STREAM, Protocol::TCP)?;
            socket.listen(LISTEN_BACKLOG)?;
            Ok(TcpListener::from(socket))
        })
        .collect::<io::Result<_>>()
        .map_err(bound)?;
    drop(claim);
    Ok(listeners)
}

/// `count` UDP sockets on `addr` (at least one; with more, each has `SO_REUSEPORT`). Port 0 picks one free port
/// for all of them. The claim of the address is closed before the shared sockets bind (UDP's `SO_REUSEADDR`
/// would let a second server share the port), so two servers started at the very same moment could both pass
/// it.
pub fn udp_sockets(addr: SocketAddr, count: usize) -> Result<Vec<UdpSocket>, KernelError> {
    let bound = |error| bind_error("UDP", addr, error);
    let claim = sys::server_socket(addr, Type::DGRAM, Protocol::UDP)
        .and_then(|claim| {
            claim.bind(&addr.into())?;
            Ok(UdpSocket::from(claim))
        })
        .map_err(bound)?;
    if count <= 1 {
        return Ok(vec![claim]);
    }
    let at = claim.local_addr().map_err(bound)?;
    drop(claim);
    (0..count)
        .map(|_| shared_socket(at, Type::DGRAM, Protocol::UDP).map(UdpSocket::from))
        .collect::<io::Result<_>>()
        .map_err(bound)
}

/// A socket bound to `at` with `SO_REUSEPORT` (and `SO_REUSEADDR`, as std's listeners have, so a restart does
/// not wait for old connections in TIME-WAIT).
fn shared_socket(at: SocketAddr, kind: Type, protocol: Protocol) -> io::Result<Socket> {
    let socket = sys::server_socket(at, kind, protocol)?;
    if kind == Type::STREAM {
        socket.set_reuse_address(true)?;
    }
    socket.set_reuse_port(true)?;
    socket.bind(&at.into())?;
    Ok(socket)
}

/// Whether `accept` failed because the process or the system ran out of descriptors.
fn is_out_of_descriptors(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(sys::errno::EMFILE | sys::errno::ENFILE)
    )
}

/// What [`Acceptor::accept`] found on a listening socket.
pub enum Accepted {
    /// A client, and its address as a person knows it (an IPv4 client of `[::]` as `a.b.c.d`, not
    /// `::ffff:a.b.c.d`).
    Client(mio::net::TcpStream, SocketAddr),
    /// Nobody is waiting.
    NoneWaiting,
    /// `accept` failed (out of descriptors with no reserve left, or another reason): try again later.
    Failed(io::Error),
}

/// Takes the clients waiting on a listening socket for both designs. It keeps a descriptor in reserve, so that
/// when descriptors run out it can still refuse the clients waiting in the backlog instead of leaving them
/// there: it closes the reserve, accepts one client and closes it at once, and takes the reserve again.
/// Refusals are logged at most once a second, with their count.
pub struct Acceptor {
    spare: Option<std::fs::File>,
    refusals: Refusals,
}

impl Acceptor {
    /// Takes the reserve (a descriptor of `/dev/null`).
    pub fn new() -> Acceptor {
        Acceptor {
            spare: std::fs::File::open("/dev/null").ok(),
            refusals: Refusals::new(smoltcp::time::Duration::from_secs(1)),
        }
    }

    /// The next client waiting on `listener`. A call a signal or a client's early reset interrupted is made
    /// again; when descriptors run out, the clients waiting are refused with the reserve, one by one.
    pub fn accept(
        &mut self,
        listener: &mio::net::TcpListener,
        now: smoltcp::time::Instant,
    ) -> Accepted {
        loop {
            match listener.accept() {
                Ok((stream, peer)) => return Accepted::Client(stream, unmapped(peer)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Accepted::NoneWaiting,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) => {}
                Err(e) if is_out_of_descriptors(&e) => {
                    if !self.refuse_one(listener, now) {
                        return Accepted::Failed(e);
                    }
                }
                Err(e) => return Accepted::Failed(e),
            }
        }
    }

    /// After `accept` ran out of descriptors: refuses the next client waiting on `listener` with the reserve's
    /// descriptor. Returns whether one was refused (`false`: no reserve, or nobody waiting).
    fn refuse_one(
        &mut self,
        listener: &mio::net::TcpListener,
        now: smoltcp::time::Instant,
    ) -> bool {
        if self.spare.take().is_none() {
            return false;
        }
        let refused = match listener.accept() {
            Ok((stream, _)) => {
                drop(stream);
                true
            }
            Err(_) => false,
        };
        self.spare = std::fs::File::open("/dev/null").ok();
        if refused {
            if let Some(report) = self.refusals.refused(now) {
                log::warn!(
                    "tcp: refused {} clients{} ({} since the start): out of open files (raise `ulimit -n`, or \
                     lower --max-connections)",
                    report.refused,
                    over_the_last(&report),
                    report.total
                );
            }
        }
        refused
    }
}

impl Default for Acceptor {
    fn default() -> Self {
        Acceptor::new()
    }
}

/// Raises the open files limit as far as allowed and returns how many clients it leaves room for beside
/// `workers` (each client is one descriptor), at most `wanted`; says so when that is fewer (a warning if
/// `wanted` was asked for, a note if it is the default).
pub fn clients_within_descriptor_limit(wanted: usize, asked: bool, workers: usize) -> usize {
    match sys::raise_open_files_limit() {
        Ok(allowed) => {
            let reserved = SPARE_DESCRIPTORS
                .saturating_add(DESCRIPTORS_PER_WORKER.saturating_mul(workers as u64));
            let room = allowed.saturating_sub(reserved).max(1);
            if (wanted as u64) > room {
                let level = if asked {
                    log::Level::Warn
                } else {
                    log::Level::Info
                };
                log::log!(
                    level,
                    "only {allowed} open files allowed: serving at most {room} clients at once instead of \
                     {wanted} (raise `ulimit -n` for more)"
                );
                return room as usize;
            }
            wanted
        }
        Err(e) => {
            log::warn!("cannot read the open files limit: {e}");
            wanted
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::uppercase::kernel::ipv6_loopback_or_skip;
    use std::cell::RefCell;
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::os::fd::AsRawFd;

    /// Binds `at` with a stand-in that fails every IPv6 address with `errno`; returns what it gave and the
    /// addresses it was asked for.
    fn bind_without_ipv6(
        at: ListenAddress,
        errno: i32,
    ) -> (Result<SocketAddr, KernelError>, Vec<SocketAddr>) {
        let asked = RefCell::new(Vec::new());
        let bound = at.bind_with(|addr| {
            asked.borrow_mut().push(addr);
            match addr {
                SocketAddr::V6(_) => {
                    Err(bind_error("TCP", addr, io::Error::from_raw_os_error(errno)))
                }
                SocketAddr::V4(_) => Ok(addr),
            }
        });
        (bound, asked.into_inner())
    }

    #[test]
    fn the_default_falls_back_to_ipv4_only_where_the_system_refuses_ipv6() {
        let every = ListenAddress::EveryFamily { port: 12000 };
        let any_v6: SocketAddr = "[::]:12000".parse().unwrap();
        let any_v4: SocketAddr = "0.0.0.0:12000".parse().unwrap();
        for errno in [sys::errno::EAFNOSUPPORT, sys::errno::EADDRNOTAVAIL] {
            let (bound, asked) = bind_without_ipv6(every, errno);
            assert_eq!(bound.ok(), Some(any_v4), "errno {errno}");
            assert_eq!(asked, [any_v6, any_v4]);
        }
        // Another failure is not IPv6 missing: no second try, and the error is the one met.
        let (bound, asked) = bind_without_ipv6(every, libc::EADDRINUSE);
        assert!(
            bound
                .as_ref()
                .is_err_and(|e| e.to_string().contains("already in use")),
            "{bound:?}"
        );
        assert_eq!(asked, [any_v6]);
        // `--bind ::` asked for IPv6: never IPv4 instead, and the error says why.
        let (bound, asked) =
            bind_without_ipv6(ListenAddress::Exactly(any_v6), sys::errno::EAFNOSUPPORT);
        assert_eq!(
            bound.map_err(|e| e.to_string()),
            Err("cannot bind TCP [::]:12000: this machine has no IPv6 (the kernel refuses the address family)".into())
        );
        assert_eq!(asked, [any_v6]);
    }

    #[test]
    fn the_start_up_line_names_the_families_of_a_wildcard_address() {
        let families = |addr: &str| families_served(addr.parse().unwrap());
        assert_eq!(families("[::]:12000"), Some("IPv4 and IPv6"));
        assert_eq!(families("0.0.0.0:12000"), Some("IPv4 only"));
        assert_eq!(families("[::1]:12000"), None);
        assert_eq!(families("127.0.0.1:12000"), None);
    }

    #[test]
    fn a_dual_stack_listener_takes_ipv4_clients_and_shows_them_as_ipv4() {
        if !ipv6_loopback_or_skip("a_dual_stack_listener_takes_ipv4_clients_and_shows_them_as_ipv4")
        {
            return;
        }
        for (family, client_ip) in [("IPv4", "127.0.0.1"), ("IPv6", "::1")] {
            let listeners = tcp_listeners("[::]:0".parse().unwrap(), 1).unwrap();
            let Some(listener) = listeners.into_iter().next() else {
                panic!("no listener");
            };
            let port = listener.local_addr().unwrap().port();
            let client = TcpStream::connect((client_ip, port)).unwrap();
            listener.set_nonblocking(true).unwrap();
            let ready = sys::wait_readable(
                [listener.as_raw_fd()],
                Some(std::time::Duration::from_secs(5)),
            );
            assert!(ready.is_ok(), "{family}: {ready:?}");
            let listener = mio::net::TcpListener::from_std(listener);
            let now = smoltcp::time::Instant::from_millis(0);
            match Acceptor::new().accept(&listener, now) {
                Accepted::Client(_, peer) => {
                    assert_eq!(peer, client.local_addr().unwrap(), "{family}");
                    assert!(!peer.to_string().contains("ffff"), "{family}: {peer}");
                }
                Accepted::NoneWaiting => panic!("{family}: no client waiting"),
                Accepted::Failed(e) => panic!("{family}: {e}"),
            }
        }
    }

    #[test]
    fn servers_on_either_wildcard_share_no_port() {
        if !ipv6_loopback_or_skip("servers_on_either_wildcard_share_no_port") {
            return;
        }
        let ip = |text: &str| -> std::net::IpAddr { text.parse().unwrap() };
        for (first, second) in [
            ("::", "0.0.0.0"),
            ("0.0.0.0", "::"),
            ("::", "127.0.0.1"),
            ("::", "::1"),
        ] {
            for (first_count, second_count) in [(1, 1), (3, 1), (1, 3), (3, 3)] {
                let what = format!("{first} ({first_count}) then {second} ({second_count})");
                let tcp = tcp_listeners(SocketAddr::new(ip(first), 0), first_count).unwrap();
                let port = tcp[0].local_addr().unwrap().port();
                let again = tcp_listeners(SocketAddr::new(ip(second), port), second_count);
                assert!(
                    again
                        .as_ref()
                        .is_err_and(|e| e.to_string().contains("already in use")),
                    "TCP {what}: {:?}",
                    again.map(|_| ())
                );
                let udp = udp_sockets(SocketAddr::new(ip(first), 0), first_count).unwrap();
                let port = udp[0].local_addr().unwrap().port();
                let again = udp_sockets(SocketAddr::new(ip(second), port), second_count);
                assert!(
                    again
                        .as_ref()
                        .is_err_and(|e| e.to_string().contains("already in use")),
                    "UDP {what}: {:?}",
                    again.map(|_| ())
                );
            }
        }
        // One loopback address of each family: two servers, no collision.
        let v6 = tcp_listeners("[::1]:0".parse().unwrap(), 3).unwrap();
        let port = v6[0].local_addr().unwrap().port();
        assert!(tcp_listeners(SocketAddr::new(ip("127.0.0.1"), port), 3).is_ok());
    }

    #[test]
    fn workers_share_one_port_and_a_second_server_is_refused() {
        let listeners = tcp_listeners(([127, 0, 0, 1], 0).into(), 3).unwrap();
        let at = listeners[0].local_addr().unwrap();
        assert!(listeners.iter().all(|l| l.local_addr().unwrap() == at));
        let again = tcp_listeners(at, 3).err().map(|e| e.to_string());
        assert!(
            again
                .as_deref()
                .is_some_and(|e| e.contains("already in use")),
            "{again:?}"
        );
        // Every connection is accepted by one of them.
        let mut client = TcpStream::connect(at).unwrap();
        client.write_all(b"x").unwrap();
        for listener in &listeners {
            listener.set_nonblocking(true).unwrap();
        }
        let accepted = (0..200).find_map(|_| {
            let got = listeners.iter().find_map(|l| l.accept().ok());
            if got.is_none() {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            got
        });
        let (mut server, _) = accepted.expect("no listener accepted the connection");
        server.set_nonblocking(false).unwrap();
        let mut byte = [0u8];
        server.read_exact(&mut byte).unwrap();
        assert_eq!(&byte, b"x");

        let udp = udp_sockets(([127, 0, 0, 1], 0).into(), 2).unwrap();
        let at = udp[0].local_addr().unwrap();
        assert_eq!(udp[1].local_addr().unwrap(), at);
        assert!(udp_sockets(at, 2).is_err());
    }
}
