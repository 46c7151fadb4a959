//! [`KernelUdpServer`]: the UDP uppercase server on the kernel's stack, a socket per worker on the same port
//! (`SO_REUSEPORT`; the kernel sends each client's datagrams to one of them by a hash of its address and port),
//! each answered by a thread of its own.
//!
//! A reply is never truncated: every datagram is read with 64 KiB of room, more than any UDP payload (65,507
//! bytes over IPv4, 65,527 over IPv6), and sent back whole. A worker reads up to a batch of requests, then
//! answers them; when it is behind (the batch filled up), the core's [`plan_answers`] has each client answered
//! once per batch, so a flood from a few clients cannot starve the rest (BENCHMARKS.md measures it).

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

use smoltalk_core::stream_session::RefusalReport;
use smoltalk_core::udp_fairness::{plan_answers, UDP_BATCH};
use smoltalk_core::{uppercase_in_place, Refusals};
use smoltcp::time::Duration;

use super::sockets::udp_sockets;
use super::KernelError;
use crate::clock::Clock;
use crate::sys;

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
            worker.join().unwrap_or(Err(KernelError::WorkerPanicked))?;
        }
        Ok(())
    }
}

/// Requests are read into an arena this big, each at the next free offset with room for the largest datagram.
const ARENA: usize = 1 << 20;

/// One request read and not yet answered: where it is in the arena, and who sent it.
struct Request {
    at: usize,
    len: usize,
    peer: SocketAddr,
}

/// Answers every datagram on `socket`, for ever, a batch at a time (see [`plan_answers`]).
fn answer(socket: &UdpSocket) -> Result<(), KernelError> {
    let io = |context| move |error| KernelError::Io { context, error };
    socket
        .set_nonblocking(true)
        .map_err(io("cannot make the UDP socket non-blocking"))?;
    let mut arena = vec![0u8; ARENA];
    let mut batch: Vec<Request> = Vec::with_capacity(UDP_BATCH);
    let mut peers: Vec<SocketAddr> = Vec::with_capacity(UDP_BATCH);
    let mut decisions = [true; UDP_BATCH];
    let clock = Clock::start();
    let mut unanswered = Refusals::new(Duration::from_secs(1));
    let mut failures = 0u32;
    loop {
        batch.clear();
        let mut full = true;
        let mut used = 0;
        while batch.len() < UDP_BATCH {
            let Some(free) = arena.get_mut(used..used + DATAGRAM_BUFFER) else {
                break;
            };
            match socket.recv_from(free) {
                Ok((len, peer)) => {
                    failures = 0;
                    batch.push(Request {
                        at: used,
                        len,
                        peer,
                    });
                    used += len;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    full = false;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    // A receive fails for a reason of its own now and then (the kernel queues an ICMP error on
                    // the socket); a socket that keeps failing is broken.
                    failures += 1;
                    log::warn!("udp: receive failed: {error}");
                    if failures >= 100 {
                        return Err(io("the UDP socket keeps failing")(error));
                    }
                }
            }
        }
        if batch.is_empty() {
            // Wakes at least once a second, so the tail of a flood's report is not held back.
            match sys::wait_readable(
                [socket.as_raw_fd()],
                Some(std::time::Duration::from_secs(1)),
            ) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(io("cannot wait for the UDP socket")(error)),
            }
            report(unanswered.due(clock.now()));
            continue;
        }
        peers.clear();
        peers.extend(batch.iter().map(|r| r.peer));
        let dropped = plan_answers(&peers, full, &mut decisions);
        for (request, answered) in batch.iter().zip(decisions) {
            let Some(datagram) = arena.get_mut(request.at..request.at + request.len) else {
                continue;
            };
            if !answered {
                continue;
            }
            uppercase_in_place(datagram);
            if let Err(e) = socket.send_to(datagram, request.peer) {
                if e.kind() != io::ErrorKind::WouldBlock {
                    log::warn!("udp: cannot answer {}: {e}", request.peer);
                }
            }
        }
        let now = clock.now();
        for _ in 0..dropped {
            report(unanswered.refused(now));
        }
        report(unanswered.due(now));
    }
}

/// Logs requests left unanswered because the server was behind.
fn report(report: Option<RefusalReport>) {
    let Some(report) = report else {
        return;
    };
    log::warn!(
        "udp: behind: {} requests left unanswered{} ({} since the start): while the requests waiting outrun the \
         server, each client gets one answer per {UDP_BATCH} requests read",
        report.refused,
        match report.over.total_micros() {
            0 => String::new(),
            _ => format!(" in the last {:.1} s", report.over.total_millis() as f64 / 1000.0),
        },
        report.total
    );
}
