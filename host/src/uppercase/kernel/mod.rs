//! The uppercase service on the kernel's own stack (`std::net`): the classic lab programs, as the baseline the
//! smoltcp variant is compared with.
//!
//! The TCP server runs one thread per client connection, as in the classic design; the UDP server answers each
//! datagram from one loop. Clients block, with timeouts on every wait.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs, UdpSocket};
use std::time::Duration;

use smoltalk_core::udp_client::is_reply_to;
use smoltalk_core::uppercase_in_place;

use super::ClientFailure;

/// A failure of a kernel-stack server or client (or of a kernel-stack proxy), as one line for a person.
#[derive(Debug)]
pub enum KernelError {
    /// A server or client socket could not be bound.
    Bind {
        /// "TCP" or "UDP".
        proto: &'static str,
        /// The address asked for.
        addr: SocketAddr,
        /// What the kernel said.
        error: io::Error,
    },
    /// A host name could not be looked up.
    Resolve {
        /// The name.
        host: String,
        /// Why not.
        error: io::Error,
    },
    /// A host name has no address.
    NoAddress {
        /// The name.
        host: String,
    },
    /// A client was given no address to try.
    NoAddressToConnect,
    /// A TCP client could not connect.
    Connect {
        /// The server.
        server: SocketAddr,
        /// How long the handshake was given.
        timeout: Duration,
        /// What the kernel said.
        error: io::Error,
    },
    /// A TCP client's exchange with its server failed.
    Exchange {
        /// The server.
        server: SocketAddr,
        /// What the kernel said.
        error: io::Error,
    },
    /// A UDP client's receive timeout was refused.
    ReadTimeout(io::Error),
    /// A UDP message is larger than a datagram can be.
    DatagramTooLarge {
        /// Its length in bytes.
        len: usize,
    },
    /// A UDP datagram could not be sent.
    Send {
        /// The server.
        server: SocketAddr,
        /// What the kernel said.
        error: io::Error,
    },
    /// A UDP client got no reply after every try.
    NoReply {
        /// The server.
        server: SocketAddr,
        /// How many datagrams were sent.
        tries: u32,
    },
    /// A step of a server's set-up or loop failed: `context` says which ("cannot create the event loop").
    Io {
        /// What failed, as the message starts.
        context: &'static str,
        /// What the kernel said.
        error: io::Error,
    },
    /// A server's listening socket failed: it can accept no one any more.
    ListenerFailed,
}

impl std::fmt::Display for KernelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KernelError::Bind { proto, addr, error } => match error.kind() {
                io::ErrorKind::AddrInUse => write!(
                    f,
                    "{proto} address {addr} is already in use: another server runs there (stop it or pick another \
                     --port)"
                ),
                io::ErrorKind::AddrNotAvailable => {
                    write!(f, "cannot bind {proto} {addr}: that address is not on this machine")
                }
                io::ErrorKind::PermissionDenied => {
                    write!(f, "cannot bind {proto} {addr}: ports below 1024 need root")
                }
                _ => write!(f, "cannot bind {proto} {addr}: {error}"),
            },
            KernelError::Resolve { host, error } => write!(f, "cannot resolve {host}: {error}"),
            KernelError::NoAddress { host } => write!(f, "{host} has no address"),
            KernelError::NoAddressToConnect => f.write_str("no address to connect to"),
            KernelError::Connect {
                server,
                timeout,
                error,
            } => match error.kind() {
                io::ErrorKind::ConnectionRefused => write!(
                    f,
                    "connection to {server} refused: the server is probably not running on that address and port"
                ),
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => write!(
                    f,
                    "connection to {server} timed out after {:.1} s: no answer to the TCP handshake",
                    timeout.as_secs_f64()
                ),
                _ => write!(f, "cannot connect to {server}: {error}"),
            },
            KernelError::Exchange { server, error } => match error.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                    write!(f, "timed out waiting for the reply from {server}")
                }
                io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => {
                    write!(f, "connection reset by {server}")
                }
                io::ErrorKind::UnexpectedEof => {
                    write!(f, "{server} closed the connection before the whole reply arrived")
                }
                _ => write!(f, "talking to {server}: {error}"),
            },
            KernelError::ReadTimeout(e) => write!(f, "invalid timeout: {e}"),
            KernelError::DatagramTooLarge { len } => {
                write!(f, "a {len}-byte datagram is too large to send")
            }
            KernelError::Send { server, error } => write!(f, "cannot send to {server}: {error}"),
            KernelError::NoReply { server, tries } => write!(
                f,
                "no reply from {server} after {tries} tries: UDP has no connection, so the datagrams may have been \
                 lost or no server is listening on that address and port"
            ),
            KernelError::Io { context, error } => write!(f, "{context}: {error}"),
            KernelError::ListenerFailed => f.write_str("the listening socket failed"),
        }
    }
}

impl KernelError {
    /// Which client failure this is, where a caller can act on it (the `smoltalk` clients exit with its code).
    pub fn failure(&self) -> Option<ClientFailure> {
        match self {
            KernelError::Connect { error, .. } => match error.kind() {
                io::ErrorKind::ConnectionRefused => Some(ClientFailure::Refused),
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => {
                    Some(ClientFailure::ConnectTimedOut)
                }
                _ => None,
            },
            KernelError::Exchange { error, .. } => match error.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                    Some(ClientFailure::ReplyTimedOut)
                }
                io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => {
                    Some(ClientFailure::Reset)
                }
                io::ErrorKind::UnexpectedEof => Some(ClientFailure::ClosedEarly),
                _ => None,
            },
            KernelError::NoReply { .. } => Some(ClientFailure::NoReply),
            _ => None,
        }
    }
}

impl std::error::Error for KernelError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            KernelError::Bind { error, .. }
            | KernelError::Resolve { error, .. }
            | KernelError::Connect { error, .. }
            | KernelError::Exchange { error, .. }
            | KernelError::ReadTimeout(error)
            | KernelError::Send { error, .. }
            | KernelError::Io { error, .. } => Some(error),
            KernelError::NoAddress { .. }
            | KernelError::NoAddressToConnect
            | KernelError::DatagramTooLarge { .. }
            | KernelError::NoReply { .. }
            | KernelError::ListenerFailed => None,
        }
    }
}

pub(crate) fn bind_error(proto: &'static str, addr: SocketAddr, error: io::Error) -> KernelError {
    KernelError::Bind { proto, addr, error }
}

/// Resolves `host:port` to all its addresses (a name is looked up only if `host` is not an address).
pub fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, KernelError> {
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|error| KernelError::Resolve {
            host: host.to_string(),
            error,
        })?
        .collect();
    if addrs.is_empty() {
        return Err(KernelError::NoAddress {
            host: host.to_string(),
        });
    }
    Ok(addrs)
}

/// The address a UDP client sends to: the first IPv4 address of a name, since a server bound to 0.0.0.0 (the
/// default) does not hear `::1`, and UDP cannot try one address after another the way TCP can.
pub fn udp_target(addrs: &[SocketAddr]) -> Option<SocketAddr> {
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
}

/// An idle client connection is closed after this long, so idle clients cannot pile up threads for ever.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// A bound TCP uppercase server.
pub struct KernelTcpServer {
    listener: TcpListener,
}

impl KernelTcpServer {
    /// Binds `addr`.
    pub fn bind(addr: SocketAddr) -> Result<Self, KernelError> {
        let listener = TcpListener::bind(addr).map_err(|e| bind_error("TCP", addr, e))?;
        Ok(KernelTcpServer { listener })
    }

    /// The address it listens on (the port the kernel chose for port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves forever, one thread per client.
    pub fn serve(self) -> Result<(), KernelError> {
        loop {
            match self.listener.accept() {
                Ok((stream, peer)) => {
                    log::info!("tcp: connection from {peer}");
                    let _ = stream.set_read_timeout(Some(IDLE_TIMEOUT));
                    let spawned = std::thread::Builder::new()
                        .name(format!("client {peer}"))
                        .spawn(move || match serve_connection(stream) {
                            Ok(bytes) => log::info!("tcp: {peer} closed after {bytes} bytes"),
                            Err(e) => log::info!("tcp: {peer} ended: {e}"),
                        });
                    // Out of threads: this client is turned away (the connection closes), the others go on.
                    if let Err(e) = spawned {
                        log::warn!("tcp: cannot serve {peer}: {e}");
                    }
                }
                // Running out of descriptors or a client resetting before accept: log, go on.
                Err(e) => {
                    log::warn!("tcp: accept failed: {e}");
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }
}

/// Answers one client until it closes its side; returns the bytes answered.
pub fn serve_connection(mut stream: TcpStream) -> io::Result<u64> {
    let _ = stream.set_nodelay(true);
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        uppercase_in_place(&mut buf[..n]);
        stream.write_all(&buf[..n])?;
        total += n as u64;
    }
    let _ = stream.shutdown(Shutdown::Write);
    Ok(total)
}

/// A bound UDP uppercase server.
pub struct KernelUdpServer {
    socket: UdpSocket,
}

impl KernelUdpServer {
    /// Binds `addr`.
    pub fn bind(addr: SocketAddr) -> Result<Self, KernelError> {
        let socket = UdpSocket::bind(addr).map_err(|e| bind_error("UDP", addr, e))?;
        Ok(KernelUdpServer { socket })
    }

    /// The address it is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Answers datagrams forever. Any datagram the kernel delivers (up to 65,507 bytes) is answered whole.
    pub fn serve(self) -> Result<(), KernelError> {
        let mut buf = vec![0u8; 65536];
        loop {
            match self.socket.recv_from(&mut buf) {
                Ok((n, peer)) => {
                    uppercase_in_place(&mut buf[..n]);
                    if let Err(e) = self.socket.send_to(&buf[..n], peer) {
                        log::warn!("udp: cannot answer {peer}: {e}");
                    }
                }
                Err(e) => log::warn!("udp: receive failed: {e}"),
            }
        }
    }
}

/// A connected TCP client.
pub struct KernelTcpClient {
    stream: TcpStream,
    server: SocketAddr,
}

impl KernelTcpClient {
    /// Connects to the first of `servers` that accepts, waiting at most `timeout` for each handshake and for
    /// each reply. The error is the last address's.
    pub fn connect_any(servers: &[SocketAddr], timeout: Duration) -> Result<Self, KernelError> {
        let mut last = KernelError::NoAddressToConnect;
        for server in servers {
            match KernelTcpClient::connect(*server, timeout) {
                Ok(client) => return Ok(client),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Connects to `server`, waiting at most `timeout` for the handshake and for each reply.
    pub fn connect(server: SocketAddr, timeout: Duration) -> Result<Self, KernelError> {
        let stream =
            TcpStream::connect_timeout(&server, timeout).map_err(|error| KernelError::Connect {
                server,
                timeout,
                error,
            })?;
        let _ = stream.set_read_timeout(Some(timeout));
        let _ = stream.set_write_timeout(Some(timeout));
        let _ = stream.set_nodelay(true);
        Ok(KernelTcpClient { stream, server })
    }

    /// Sends `message` and reads its reply (as many bytes as were sent). Large messages are written by a
    /// second thread while this one reads, so neither side's buffers can fill up and stall.
    pub fn exchange(&mut self, message: &[u8]) -> Result<Vec<u8>, KernelError> {
        let server = self.server;
        let io_error = |error: io::Error| KernelError::Exchange { server, error };
        let mut reply = vec![0u8; message.len()];
        if message.len() <= 64 * 1024 {
            self.stream.write_all(message).map_err(io_error)?;
            self.stream.read_exact(&mut reply).map_err(io_error)?;
        } else {
            let mut writer = self.stream.try_clone().map_err(io_error)?;
            std::thread::scope(|scope| {
                let sending = scope.spawn(move || writer.write_all(message));
                let read = self.stream.read_exact(&mut reply);
                let sent = sending
                    .join()
                    .unwrap_or_else(|_| Err(io::Error::other("writer panicked")));
                read.and(sent)
            })
            .map_err(io_error)?;
        }
        Ok(reply)
    }

    /// Closes our side and waits (briefly) for the server to close its own.
    pub fn close(mut self) {
        let _ = self.stream.shutdown(Shutdown::Write);
        let mut rest = [0u8; 1024];
        while matches!(self.stream.read(&mut rest), Ok(n) if n > 0) {}
    }
}

/// A UDP client with an unconnected socket, like the classic lab's.
pub struct KernelUdpClient {
    socket: UdpSocket,
    server: SocketAddr,
    timeout: Duration,
    tries: u32,
}

impl KernelUdpClient {
    /// A socket on an ephemeral port, for `server`; each request is sent up to `tries` times, `timeout` apart.
    pub fn new(server: SocketAddr, timeout: Duration, tries: u32) -> Result<Self, KernelError> {
        let local: SocketAddr = if server.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            ([0u16; 8], 0).into()
        };
        let socket = UdpSocket::bind(local).map_err(|e| bind_error("UDP", local, e))?;
        socket
            .set_read_timeout(Some(timeout))
            .map_err(KernelError::ReadTimeout)?;
        Ok(KernelUdpClient {
            socket,
            server,
            timeout,
            tries: tries.max(1),
        })
    }

    /// Sends `message` and waits for its reply, sending again after each timeout; returns the reply and the
    /// number of datagrams it took.
    pub fn exchange(&mut self, message: &[u8]) -> Result<(Vec<u8>, u32), KernelError> {
        let mut buf = vec![0u8; 65536];
        for attempt in 1..=self.tries {
            if attempt > 1 {
                log::info!(
                    "udp: no reply from {} yet, sending again (try {attempt})",
                    self.server
                );
            }
            self.socket.send_to(message, self.server).map_err(|error| {
                if error.raw_os_error() == Some(crate::sys::errno::EMSGSIZE) {
                    KernelError::DatagramTooLarge { len: message.len() }
                } else {
                    KernelError::Send {
                        server: self.server,
                        error,
                    }
                }
            })?;
            let deadline = std::time::Instant::now() + self.timeout;
            loop {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    break;
                }
                let _ = self.socket.set_read_timeout(Some(left));
                match self.socket.recv_from(&mut buf) {
                    Ok((n, from)) if from == self.server && is_reply_to(&buf[..n], message) => {
                        return Ok((buf[..n].to_vec(), attempt));
                    }
                    Ok((n, from)) => log::debug!("udp: skipped {n} bytes from {from}"),
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) =>
                    {
                        break
                    }
                    // An unconnected socket may still see an ICMP error reported by the kernel: treat as silence.
                    Err(e) => {
                        log::debug!("udp: receive error: {e}");
                        std::thread::sleep(left.min(Duration::from_millis(50)));
                    }
                }
            }
        }
        Err(KernelError::NoReply {
            server: self.server,
            tries: self.tries,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(kind: io::ErrorKind) -> io::Error {
        io::Error::from(kind)
    }

    #[test]
    fn each_failure_reads_as_one_line_for_a_person() {
        let addr: SocketAddr = ([127, 0, 0, 1], 12000).into();
        assert_eq!(
            bind_error("TCP", addr, kind(io::ErrorKind::AddrInUse)).to_string(),
            "TCP address 127.0.0.1:12000 is already in use: another server runs there (stop it or pick another \
             --port)"
        );
        assert_eq!(
            bind_error("UDP", addr, kind(io::ErrorKind::PermissionDenied)).to_string(),
            "cannot bind UDP 127.0.0.1:12000: ports below 1024 need root"
        );
        let connect = |k| KernelError::Connect {
            server: addr,
            timeout: Duration::from_millis(2500),
            error: kind(k),
        };
        assert_eq!(
            connect(io::ErrorKind::ConnectionRefused).to_string(),
            "connection to 127.0.0.1:12000 refused: the server is probably not running on that address and port"
        );
        assert_eq!(
            connect(io::ErrorKind::TimedOut).to_string(),
            "connection to 127.0.0.1:12000 timed out after 2.5 s: no answer to the TCP handshake"
        );
        let exchange = KernelError::Exchange {
            server: addr,
            error: kind(io::ErrorKind::UnexpectedEof),
        };
        assert_eq!(
            exchange.to_string(),
            "127.0.0.1:12000 closed the connection before the whole reply arrived"
        );
        let silence = KernelError::NoReply {
            server: addr,
            tries: 3,
        };
        assert_eq!(
            silence.to_string(),
            "no reply from 127.0.0.1:12000 after 3 tries: UDP has no connection, so the datagrams may have been \
             lost or no server is listening on that address and port"
        );
        let io = KernelError::Io {
            context: "cannot create the event loop",
            error: io::Error::other("no epoll"),
        };
        assert_eq!(io.to_string(), "cannot create the event loop: no epoll");
    }

    #[test]
    fn client_failures_are_told_by_their_kind() {
        let server: SocketAddr = "127.0.0.1:12000".parse().unwrap();
        let connect = |kind| KernelError::Connect {
            server,
            timeout: Duration::from_secs(1),
            error: io::Error::from(kind),
        };
        assert_eq!(
            connect(io::ErrorKind::ConnectionRefused).failure(),
            Some(ClientFailure::Refused)
        );
        assert_eq!(
            connect(io::ErrorKind::TimedOut).failure(),
            Some(ClientFailure::ConnectTimedOut)
        );
        let exchange = |kind| KernelError::Exchange {
            server,
            error: io::Error::from(kind),
        };
        assert_eq!(
            exchange(io::ErrorKind::UnexpectedEof).failure(),
            Some(ClientFailure::ClosedEarly)
        );
        assert_eq!(
            exchange(io::ErrorKind::ConnectionReset).failure(),
            Some(ClientFailure::Reset)
        );
        assert_eq!(
            KernelError::NoReply { server, tries: 2 }.failure(),
            Some(ClientFailure::NoReply)
        );
        assert_eq!(KernelError::ListenerFailed.failure(), None);
    }
}
