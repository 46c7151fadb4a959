//! [`KernelUdpServer`]: the UDP uppercase server on the kernel's stack, a socket per worker on the same port
//! (`SO_REUSEPORT`; the kernel sends each client's datagrams to one of them by a hash of its address and port),
//! each answered by a thread of its own.
//!
//! A reply is never truncated: every datagram is read into a 64 KiB buffer, larger than any UDP payload (65,507
//! bytes over IPv4, 65,527 over IPv6), and sent back whole.

use std::io;
use std::net::{SocketAddr, UdpSocket};

use smoltalk_core::uppercase_in_place;

use super::sockets::udp_sockets;
use super::KernelError;

/// Datagrams are read into a buffer this big: more than the largest UDP payload.
const DATAGRAM_BUFFER: usize = 64 * 1024;

/// A bound UDP uppercase server.
pub struct KernelUdpServer {
    sockets: Vec<UdpSocket>,
    addr: SocketAddr,
}

impl KernelUdpServer {
    /// Binds `addr` with a socket for each of `workers` (at least one).
    pub fn bind(addr: SocketAddr, workers: usize) -> Result<Self, KernelError> {
        let sockets = udp_sockets(addr, workers.max(1))?;
        let addr = sockets
            .first()
            .and_then(|s| s.local_addr().ok())
            .unwrap_or(addr);
        Ok(KernelUdpServer { sockets, addr })
    }

    /// The address it is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// How it serves, in a few words (for the start-up line).
    pub fn describe(&self) -> String {
        match self.sockets.len() {
            1 => "1 worker".to_string(),
            n => format!(
                "{n} workers, each client's datagrams to one of them by the kernel's hash (SO_REUSEPORT)"
            ),
        }
    }

    /// Answers datagrams until a worker fails.
    pub fn serve(self) -> Result<(), KernelError> {
        let workers = self
            .sockets
            .into_iter()
            .enumerate()
            .map(|(index, socket)| {
                std::thread::Builder::new()
                    .name(format!("udp worker {index}"))
                    .spawn(move || answer(&socket))
                    .map_err(|error| KernelError::Io {
                        context: "cannot start a worker",
                        error,
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        for worker in workers {
            worker.join().unwrap_or(Err(KernelError::ListenerFailed))?;
        }
        Ok(())
    }
}

/// Answers every datagram on `socket`, for ever.
fn answer(socket: &UdpSocket) -> Result<(), KernelError> {
    let mut buf = vec![0u8; DATAGRAM_BUFFER];
    let mut failures = 0u32;
    loop {
        let (n, peer) = match socket.recv_from(&mut buf) {
            Ok(received) => received,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => {
                // A receive fails for a reason of its own now and then (the kernel queues an ICMP error on the
                // socket); a socket that keeps failing is broken.
                failures += 1;
                log::warn!("udp: receive failed: {error}");
                if failures >= 100 {
                    return Err(KernelError::Io {
                        context: "the UDP socket keeps failing",
                        error,
                    });
                }
                continue;
            }
        };
        failures = 0;
        let Some(datagram) = buf.get_mut(..n) else {
            continue;
        };
        uppercase_in_place(datagram);
        if let Err(e) = socket.send_to(datagram, peer) {
            log::warn!("udp: cannot answer {peer}: {e}");
        }
    }
}
