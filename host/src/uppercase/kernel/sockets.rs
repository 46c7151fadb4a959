//! The kernel-stack servers' sockets: one per worker on the same address (`SO_REUSEPORT`), the listen backlog,
//! how many workers a machine gets, the open files limit a connection cap needs, and taking the clients waiting
//! ([`Acceptor`], for both TCP designs).
//!
//! With `SO_REUSEPORT` the kernel spreads new TCP connections (and UDP datagrams) over the sockets bound to one
//! address by a hash of the client's address and port: each connection stays with the worker that accepted it,
//! and many clients spread about evenly, but one client's connections may land anywhere and a few can meet on one
//! worker. Every socket of a server must have the option, and two servers of the same user that both set it
//! would share a port without a word: so the address is first claimed by a socket without the option, which
//! fails as any bind does when another server runs there.

use std::io;
use std::net::{SocketAddr, TcpListener, UdpSocket};

use socket2::{Domain, Protocol, Socket, Type};

use smoltalk_core::Refusals;

use super::{bind_error, over_the_last, KernelError};
use crate::sys;

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
    if count <= 1 {
        let listener = TcpListener::bind(addr).map_err(bound)?;
        sys::listen(&listener, LISTEN_BACKLOG).map_err(bound)?;
        return Ok(vec![listener]);
    }
    let claim = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .and_then(|claim| {
            claim.set_reuse_address(true)?;
            claim.bind(&addr.into())?;
            Ok(claim)
        })
        .map_err(bound)?;
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
    let claim = UdpSocket::bind(addr).map_err(bound)?;
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
    let socket = Socket::new(Domain::for_address(at), kind, Some(protocol))?;
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
    /// A client.
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
                Ok((stream, peer)) => return Accepted::Client(stream, peer),
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
    use std::io::{Read, Write};
    use std::net::TcpStream;

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
