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

/// A failure of a kernel-stack server or client, as one line for a person.
#[derive(Debug)]
pub struct KernelError(pub String);

impl std::fmt::Display for KernelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for KernelError {}

/// A failure of a kernel-stack client: the line for a person, and which failure it was where a caller can tell
/// (refused, no reply, …; the `smoltalk` clients exit with its code).
#[derive(Debug)]
pub struct KernelClientError {
    /// Which failure it was, if it is one a caller can act on.
    pub failure: Option<ClientFailure>,
    /// What happened, as one line.
    pub message: String,
}

impl KernelClientError {
    fn new(failure: Option<ClientFailure>, message: String) -> KernelClientError {
        KernelClientError { failure, message }
    }
}

impl std::fmt::Display for KernelClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for KernelClientError {}

pub(crate) fn bind_error(proto: &str, addr: SocketAddr, e: io::Error) -> KernelError {
    KernelError(match e.kind() {
        io::ErrorKind::AddrInUse => format!(
            "{proto} address {addr} is already in use: another server runs there (stop it or pick another --port)"
        ),
        io::ErrorKind::AddrNotAvailable => {
            format!("cannot bind {proto} {addr}: that address is not on this machine")
        }
        io::ErrorKind::PermissionDenied => {
            format!("cannot bind {proto} {addr}: ports below 1024 need root")
        }
        _ => format!("cannot bind {proto} {addr}: {e}"),
    })
}

/// Resolves `host:port` to all its addresses (a name is looked up only if `host` is not an address).
pub fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, KernelError> {
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| KernelError(format!("cannot resolve {host}: {e}")))?
        .collect();
    if addrs.is_empty() {
        return Err(KernelError(format!("{host} has no address")));
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
    pub fn connect_any(
        servers: &[SocketAddr],
        timeout: Duration,
    ) -> Result<Self, KernelClientError> {
        let mut last = KernelClientError::new(None, "no address to connect to".into());
        for server in servers {
            match KernelTcpClient::connect(*server, timeout) {
                Ok(client) => return Ok(client),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Connects to `server`, waiting at most `timeout` for the handshake and for each reply.
    pub fn connect(server: SocketAddr, timeout: Duration) -> Result<Self, KernelClientError> {
        let stream = TcpStream::connect_timeout(&server, timeout).map_err(|e| match e.kind() {
            io::ErrorKind::ConnectionRefused => KernelClientError::new(
                Some(ClientFailure::Refused),
                format!(
                    "connection to {server} refused: the server is probably not running on that address and port"
                ),
            ),
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => KernelClientError::new(
                Some(ClientFailure::ConnectTimedOut),
                format!(
                    "connection to {server} timed out after {:.1} s: no answer to the TCP handshake",
                    timeout.as_secs_f64()
                ),
            ),
            _ => KernelClientError::new(None, format!("cannot connect to {server}: {e}")),
        })?;
        let _ = stream.set_read_timeout(Some(timeout));
        let _ = stream.set_write_timeout(Some(timeout));
        let _ = stream.set_nodelay(true);
        Ok(KernelTcpClient { stream, server })
    }

    /// Sends `message` and reads its reply (as many bytes as were sent). Large messages are written by a
    /// second thread while this one reads, so neither side's buffers can fill up and stall.
    pub fn exchange(&mut self, message: &[u8]) -> Result<Vec<u8>, KernelClientError> {
        let server = self.server;
        let io_error = |e: io::Error| match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => KernelClientError::new(
                Some(ClientFailure::ReplyTimedOut),
                format!("timed out waiting for the reply from {server}"),
            ),
            io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => KernelClientError::new(
                Some(ClientFailure::Reset),
                format!("connection reset by {server}"),
            ),
            io::ErrorKind::UnexpectedEof => KernelClientError::new(
                Some(ClientFailure::ClosedEarly),
                format!("{server} closed the connection before the whole reply arrived"),
            ),
            _ => KernelClientError::new(None, format!("talking to {server}: {e}")),
        };
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
            .map_err(|e| KernelError(format!("invalid timeout: {e}")))?;
        Ok(KernelUdpClient {
            socket,
            server,
            timeout,
            tries: tries.max(1),
        })
    }

    /// Sends `message` and waits for its reply, sending again after each timeout; returns the reply and the
    /// number of datagrams it took.
    pub fn exchange(&mut self, message: &[u8]) -> Result<(Vec<u8>, u32), KernelClientError> {
        let mut buf = vec![0u8; 65536];
        for attempt in 1..=self.tries {
            if attempt > 1 {
                log::info!(
                    "udp: no reply from {} yet, sending again (try {attempt})",
                    self.server
                );
            }
            self.socket.send_to(message, self.server).map_err(|e| {
                KernelClientError::new(
                    None,
                    if e.raw_os_error() == Some(libc::EMSGSIZE) {
                        format!("a {}-byte datagram is too large to send", message.len())
                    } else {
                        format!("cannot send to {}: {e}", self.server)
                    },
                )
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
        Err(KernelClientError::new(
            Some(ClientFailure::NoReply),
            format!(
                "no reply from {} after {} tries: UDP has no connection, so the datagrams may have been lost or \
                 no server is listening on that address and port",
                self.server, self.tries
            ),
        ))
    }
}
