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
use smoltalk_core::udp_fairness::{plan_answers, Backlog, UDP_BATCH};
use smoltalk_core::{uppercase_in_place, Refusals};
use smoltcp::time::Duration;

use super::sockets::{udp_sockets, ListenAddress};
use super::workers::run_workers;
use super::KernelError;
use super::{over_the_last, unmapped};
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
    /// Binds `at` (an address, or [`ListenAddress::EveryFamily`]: `[::]` for IPv4 and IPv6 clients, `0.0.0.0`
    /// where the system has no IPv6) with a socket for each of `workers` (at least one).
    pub fn bind(at: impl Into<ListenAddress>, workers: usize) -> Result<Self, KernelError> {
        let sockets = at
            .into()
            .bind_with(|addr| udp_sockets(addr, workers.max(1)))?;
        let addr = sockets
            .first()
            .map(UdpSocket::local_addr)
            .ok_or(KernelError::ListenerFailed)?
            .map_err(|error| KernelError::Io {
                context: "cannot read the UDP socket's address",
                error,
            })?;
        Ok(KernelUdpServer { sockets, addr })
    }

    /// The address it is bound to (`[::]` takes IPv4 clients too).
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
        run_workers("udp worker", self.sockets, |socket| answer(&socket))
    }
}

/// Requests are read into an arena with room for a whole batch of the largest datagrams (its pages are touched
/// only as far as requests fill them).
const ARENA: usize = UDP_BATCH * DATAGRAM_BUFFER;

/// How long a reply waits for room in the socket's send buffer before it is given up.
const SEND_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// One request read and not yet answered: where it is in the arena, and who sent it (as the socket gave it: an
/// IPv4 client of `[::]` as `::ffff:a.b.c.d`, which is where its reply goes).
struct Request {
    at: usize,
    len: usize,
    peer: SocketAddr,
}

/// Why requests were dropped while the server was behind, as logged.
const BEHIND: &str =
    "the server is behind: while the requests waiting outrun it, each client gets one answer per batch read";

/// Why replies were dropped for want of room, as logged.
const SEND_BUFFER_FULL: &str = "the socket's send buffer stayed full for a second";

/// Requests left unanswered, counted and logged at most once a second: those the server dropped while behind,
/// and replies the socket's send buffer had no room for.
struct Unanswered {
    shed: Refusals,
    unsent: Refusals,
}

impl Unanswered {
    fn new() -> Unanswered {
        Unanswered {
            shed: Refusals::new(Duration::from_secs(1)),
            unsent: Refusals::new(Duration::from_secs(1)),
        }
    }

    /// Logs what is due.
    fn report_due(&mut self, now: smoltcp::time::Instant) {
        if let Some(report) = self.shed.due(now) {
            log_unanswered(report, BEHIND);
        }
        if let Some(report) = self.unsent.due(now) {
            log_unanswered(report, SEND_BUFFER_FULL);
        }
    }
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
    let mut unanswered = Unanswered::new();
    let mut failures = 0u32;
    loop {
        batch.clear();
        let mut ran_dry = false;
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
                    ran_dry = true;
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
            unanswered.report_due(clock.now());
            continue;
        }
        let backlog = match (
            batch.len() == UDP_BATCH && !ran_dry,
            sys::receive_queue(socket),
        ) {
            (true, Ok(queue)) => Backlog {
                batch_full: true,
                queued: queue.queued,
                capacity: queue.capacity,
            },
            _ => Backlog::KEEPING_UP,
        };
        peers.clear();
        peers.extend(batch.iter().map(|r| r.peer));
        let shed = plan_answers(&peers, backlog, &mut decisions);
        let now = clock.now();
        for _ in 0..shed {
            if let Some(report) = unanswered.shed.refused(now) {
                log_unanswered(report, BEHIND);
            }
        }
        for (request, answered) in batch.iter().zip(decisions) {
            let Some(datagram) = arena.get_mut(request.at..request.at + request.len) else {
                continue;
            };
            if !answered {
                continue;
            }
            uppercase_in_place(datagram);
            if !send_reply(socket, datagram, request.peer) {
                if let Some(report) = unanswered.unsent.refused(clock.now()) {
                    log_unanswered(report, SEND_BUFFER_FULL);
                }
            }
        }
        unanswered.report_due(clock.now());
    }
}

/// Sends one reply, waiting up to [`SEND_WAIT`] for room in the send buffer; returns whether it went.
fn send_reply(socket: &UdpSocket, reply: &[u8], peer: SocketAddr) -> bool {
    let mut waited = false;
    loop {
        match socket.send_to(reply, peer) {
            Ok(_) => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && !waited => {
                waited = true;
                if !matches!(sys::wait_writable(socket, SEND_WAIT), Ok(true)) {
                    return false;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(e) => {
                log::warn!("udp: cannot answer {}: {e}", unmapped(peer));
                return true;
            }
        }
    }
}

/// Logs requests left unanswered, and why.
fn log_unanswered(report: RefusalReport, why: &str) {
    log::warn!(
        "udp: {} requests left unanswered{} ({} since the start): {why}",
        report.refused,
        over_the_last(&report),
        report.total
    );
}
