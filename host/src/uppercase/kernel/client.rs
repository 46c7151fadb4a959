//! The kernel stack's uppercase clients, as in the classic lab: a TCP client that sends each message and reads
//! its reply (large ones written by a second thread, so neither side's buffers stall), and a UDP client on an
//! unconnected socket that sends again after each timeout. Every wait has a timeout. Both speak IPv4 and IPv6;
//! the TCP client tries a name's addresses in turn until one takes the connection ([`KernelTcpClient::connect_any`]).

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use smoltalk_core::udp_client::is_reply_to;

use super::{bind_error, KernelError};

/// A connected TCP client.
pub struct KernelTcpClient {
    stream: TcpStream,
    server: SocketAddr,
}

/// What [`KernelTcpClient::connect_any`] reached: the client, on one of the addresses, and how each address
/// tried before it failed.
pub struct Connected {
    /// The client.
    pub client: KernelTcpClient,
    /// The addresses tried first, each as its [`KernelError::Connect`], in order.
    pub failed_first: Vec<KernelError>,
}

impl KernelTcpClient {
    /// Connects to the first of `servers` that accepts, trying them in order (a name's `::1`, refused, then its
    /// `127.0.0.1`), waiting at most `timeout` for each handshake and for each reply. When every one fails, the
    /// error is that address's if there was one, else [`KernelError::EveryAddressFailed`] with each failure.
    pub fn connect_any(
        servers: &[SocketAddr],
        timeout: Duration,
    ) -> Result<Connected, KernelError> {
        let mut failed_first = Vec::new();
        for server in servers {
            match KernelTcpClient::connect(*server, timeout) {
                Ok(client) => {
                    return Ok(Connected {
                        client,
                        failed_first,
                    })
                }
                Err(e) => failed_first.push(e),
            }
        }
        match failed_first.len() {
            0 => Err(KernelError::NoAddressToConnect),
            1 => Err(failed_first
                .pop()
                .unwrap_or(KernelError::NoAddressToConnect)),
            _ => Err(KernelError::EveryAddressFailed {
                failures: failed_first,
            }),
        }
    }

    /// The server's address it is connected to.
    pub fn server(&self) -> SocketAddr {
        self.server
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
    use crate::uppercase::ClientFailure;
    use std::net::TcpListener;

    /// A loopback port of `ip` with nothing listening on it.
    fn closed(ip: &str) -> SocketAddr {
        let listener = TcpListener::bind((ip, 0)).unwrap();
        listener.local_addr().unwrap()
    }

    #[test]
    fn a_refused_address_is_passed_over_for_the_next() {
        if !crate::uppercase::kernel::ipv6_loopback_or_skip(
            "a_refused_address_is_passed_over_for_the_next",
        ) {
            return;
        }
        let server = TcpListener::bind("127.0.0.1:0").unwrap();
        let open = server.local_addr().unwrap();
        let (closed_v6, closed_v4) = (closed("::1"), closed("127.0.0.1"));
        let timeout = Duration::from_secs(2);

        let connected = KernelTcpClient::connect_any(&[closed_v6, open], timeout).unwrap();
        assert_eq!(connected.client.server(), open);
        let failed: Vec<String> = connected
            .failed_first
            .iter()
            .map(|e| e.in_brief().to_string())
            .collect();
        assert_eq!(failed, [format!("{closed_v6} refused")]);

        let Err(error) = KernelTcpClient::connect_any(&[closed_v6, closed_v4], timeout) else {
            panic!("connected to a closed port");
        };
        assert_eq!(error.failure(), Some(ClientFailure::Refused));
        assert_eq!(
            error.to_string(),
            format!(
                "cannot connect to any of the 2 addresses: {closed_v6} refused, {closed_v4} refused: the server is \
                 probably not running on that port"
            )
        );
        // One address: its own line, as before.
        let Err(error) = KernelTcpClient::connect_any(&[closed_v6], timeout) else {
            panic!("connected to a closed port");
        };
        assert!(
            error
                .to_string()
                .starts_with(&format!("connection to {closed_v6} refused")),
            "{error}"
        );
    }
}
