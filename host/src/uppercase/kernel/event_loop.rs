//! One worker of the kernel-stack TCP uppercase server: an event loop (edge-triggered epoll through `mio`) over
//! its own listening socket and the clients it accepted, each a [`Client`] that drives the core's
//! [`UppercaseSession`] and only moves bytes.
//!
//! An idle client costs the worker its socket and a few dozen bytes: bytes are read into one scratch buffer per
//! worker, answered from there, and only what the client's socket does not take at once is kept, in a buffer of
//! the client's own that is given back as soon as it has gone. A client is driven for at most [`BUDGET`] bytes
//! at a time, then waits its turn behind the others.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use smoltalk_core::stream_session::{Next, SessionEnd};
use smoltalk_core::UppercaseSession;
use smoltcp::time::{Duration, Instant};

use super::sockets::{Accepted, Acceptor};
use super::tcp_server::Shared;
use super::KernelError;

/// Bytes are read into a buffer this big (one per worker).
const SCRATCH: usize = 64 * 1024;

/// Bytes one client may move in one turn before the others get theirs.
pub const BUDGET: usize = 1 << 20;

const LISTENER: Token = Token(usize::MAX);

/// One client of a worker.
struct Client {
    stream: TcpStream,
    peer: SocketAddr,
    session: UppercaseSession,
    /// The owed bytes the socket did not take at once (empty, with no memory, while nothing is owed).
    owed: Vec<u8>,
}

/// How a turn of a client ended.
enum Turn {
    /// The socket would block: wait for its next event.
    Wait,
    /// The budget is spent: drive it again after the others.
    Again,
    /// The connection is over and closed.
    Over(SessionEnd),
}

impl Client {
    /// Moves bytes as far as the socket allows (at most [`BUDGET`]), as the session says.
    fn turn(&mut self, scratch: &mut [u8], now: Instant) -> Turn {
        let mut moved = 0;
        loop {
            if moved >= BUDGET {
                return Turn::Again;
            }
            match self.session.next() {
                Next::Read => match self.stream.read(scratch) {
                    Ok(0) => self.session.end_of_stream(now),
                    Ok(n) => {
                        let Some(bytes) = scratch.get_mut(..n) else {
                            self.session.failed(now);
                            continue;
                        };
                        self.session.received(bytes, now);
                        let (written, full) = self.write(bytes, now);
                        if written < n {
                            self.owed
                                .extend_from_slice(bytes.get(written..).unwrap_or(&[]));
                        }
                        moved += n;
                        // A write the socket did not take whole filled its send buffer: the kernel marks it
                        // so, and the space freed later comes with an event of its own (as tokio relies on), so
                        // the turn ends without a call that would only say "would block". (A read that did not
                        // fill the buffer does not show the socket empty: urgent data stops a read short.)
                        if full && matches!(self.session.next(), Next::Write { .. }) {
                            return Turn::Wait;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Turn::Wait,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => self.session.failed(now),
                },
                Next::Write { owed } => {
                    let Some(from) = self.owed.len().checked_sub(owed) else {
                        log::error!(
                            "tcp: {} is owed {owed} bytes but {} are kept (a bug)",
                            self.peer,
                            self.owed.len()
                        );
                        self.session.failed(now);
                        continue;
                    };
                    let pending = std::mem::take(&mut self.owed);
                    let (written, full) = self.write(pending.get(from..).unwrap_or(&[]), now);
                    self.owed = pending;
                    moved += written;
                    if written == owed {
                        // Every owed byte has gone: the memory goes back too.
                        self.owed = Vec::new();
                    } else if full && matches!(self.session.next(), Next::Write { .. }) {
                        // (As above: freed space comes with an event.)
                        return Turn::Wait;
                    }
                }
                Next::CloseWrite => {
                    let _ = self.stream.shutdown(Shutdown::Write);
                    self.session.closed_write(now);
                }
                Next::Close(end) => return Turn::Over(end),
            }
        }
    }

    /// Writes as much of `bytes` (the owed ones) as the socket takes now, and tells the session; returns how
    /// many went, and whether the socket is full (it took less than it was given).
    fn write(&mut self, bytes: &[u8], now: Instant) -> (usize, bool) {
        let mut written = 0;
        let mut full = false;
        while written < bytes.len() {
            let rest = bytes.get(written..).unwrap_or(&[]);
            match self.stream.write(rest) {
                Ok(0) => {
                    self.session.failed(now);
                    return (written, true);
                }
                Ok(n) => {
                    written += n;
                    if n < rest.len() {
                        full = true;
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    full = true;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.session.wrote(written, now);
                    self.session.failed(now);
                    return (written, true);
                }
            }
        }
        self.session.wrote(written, now);
        (written, full)
    }
}

/// A worker: its listening socket, its clients, the scratch buffer.
struct Worker<'s> {
    shared: &'s Shared,
    poll: Poll,
    listener: TcpListener,
    /// Client `i` has token `i`.
    clients: Vec<Option<Client>>,
    free: Vec<usize>,
    /// Clients whose budget ran out, to be driven again.
    again: VecDeque<usize>,
    scratch: Box<[u8]>,
    /// `accept` failed: try again at the next sweep.
    accept_blocked: bool,
    acceptor: Acceptor,
}

/// Runs one worker on `listener` until its event loop fails.
pub(super) fn serve(listener: std::net::TcpListener, shared: &Shared) -> Result<(), KernelError> {
    let io = |context| move |error| KernelError::Io { context, error };
    listener
        .set_nonblocking(true)
        .map_err(io("cannot make the listening socket non-blocking"))?;
    let poll = Poll::new().map_err(io("cannot create the event loop"))?;
    let mut listener = TcpListener::from_std(listener);
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)
        .map_err(io("cannot watch the listening socket"))?;
    let mut worker = Worker {
        shared,
        poll,
        listener,
        clients: Vec::new(),
        free: Vec::new(),
        again: VecDeque::new(),
        scratch: vec![0; SCRATCH].into_boxed_slice(),
        accept_blocked: false,
        acceptor: Acceptor::new(),
    };
    worker.run().map_err(io("the event loop failed"))
}

/// How often a worker looks for idle clients: a tenth of the idle timeout, between 10 ms and 1 s (an idle
/// client is closed that much after its timeout at most).
pub fn sweep_interval(idle_timeout: Duration) -> Duration {
    let tenth = idle_timeout.total_micros() / 10;
    Duration::from_micros(tenth.clamp(10_000, 1_000_000))
}

impl Worker<'_> {
    fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let sweep = sweep_interval(self.shared.idle_timeout);
        let mut next_sweep = self.shared.clock.now() + sweep;
        loop {
            // The next report of refusals wakes the loop too, so the tail of a burst is logged on time.
            let wake = self
                .shared
                .next_refusal_report()
                .map_or(next_sweep, |at| at.min(next_sweep));
            let timeout = match self.again.is_empty() {
                true => self.shared.clock.until(wake),
                false => std::time::Duration::ZERO,
            };
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(),
                    Token(slot) => self.drive(slot),
                }
            }
            for _ in 0..self.again.len() {
                if let Some(slot) = self.again.pop_front() {
                    self.drive(slot);
                }
            }
            let now = self.shared.clock.now();
            if now >= next_sweep {
                next_sweep = now + sweep;
                self.sweep(now);
            } else {
                self.shared.report_refusals(now);
            }
        }
    }

    /// Closes the clients idle past the timeout, reports refusals not yet reported, and retries an accept that
    /// ran out of descriptors.
    fn sweep(&mut self, now: Instant) {
        let idle = self.shared.idle_timeout;
        for slot in 0..self.clients.len() {
            let expired = self
                .clients
                .get_mut(slot)
                .and_then(Option::as_mut)
                .is_some_and(|client| client.session.expire(now, idle));
            if expired {
                self.drive(slot);
            }
        }
        self.shared.report_refusals(now);
        if self.accept_blocked {
            self.accept();
        }
    }

    fn accept(&mut self) {
        loop {
            let (stream, peer) = match self
                .acceptor
                .accept(&self.listener, self.shared.clock.now())
            {
                Accepted::Client(stream, peer) => (stream, peer),
                Accepted::NoneWaiting => return,
                Accepted::Failed(e) => {
                    // The clients still waiting are not reported again until a new one arrives: the sweep
                    // tries again.
                    if !self.accept_blocked {
                        log::warn!("tcp: accept failed: {e}");
                    }
                    self.accept_blocked = true;
                    return;
                }
            };
            self.accept_blocked = false;
            let now = self.shared.clock.now();
            if !self.shared.limit.admit() {
                // Closed at once (dropped), never left waiting in the backlog.
                drop(stream);
                self.shared.refused(now);
                continue;
            }
            let _ = stream.set_nodelay(true);
            // Urgent data stays in the stream, answered like every other byte.
            let _ = socket2::SockRef::from(&stream).set_out_of_band_inline(true);
            let slot = self.free.pop().unwrap_or_else(|| {
                self.clients.push(None);
                self.clients.len() - 1
            });
            let mut client = Client {
                stream,
                peer,
                session: UppercaseSession::new(now),
                owed: Vec::new(),
            };
            if let Err(e) = self.poll.registry().register(
                &mut client.stream,
                Token(slot),
                Interest::READABLE | Interest::WRITABLE,
            ) {
                log::warn!("tcp: cannot watch the connection from {peer}: {e}");
                self.shared.limit.release();
                self.free.push(slot);
                continue;
            }
            log::info!("tcp: connection from {peer}");
            if let Some(place) = self.clients.get_mut(slot) {
                *place = Some(client);
            }
            self.drive(slot);
        }
    }

    /// Gives client `slot` its turn, and closes it when it is over.
    fn drive(&mut self, slot: usize) {
        let now = self.shared.clock.now();
        let Some(client) = self.clients.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        match client.turn(&mut self.scratch, now) {
            Turn::Wait => {}
            Turn::Again => {
                if !self.again.contains(&slot) {
                    self.again.push_back(slot);
                }
            }
            Turn::Over(end) => {
                let Some(mut client) = self.clients.get_mut(slot).and_then(Option::take) else {
                    return;
                };
                let _ = self.poll.registry().deregister(&mut client.stream);
                self.shared
                    .log_end(client.peer, end, client.session.answered());
                self.shared.limit.release();
                self.free.push(slot);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sweep_is_a_tenth_of_the_idle_timeout_within_bounds() {
        assert_eq!(
            sweep_interval(Duration::from_secs(300)),
            Duration::from_secs(1)
        );
        assert_eq!(
            sweep_interval(Duration::from_secs(2)),
            Duration::from_millis(200)
        );
        assert_eq!(
            sweep_interval(Duration::from_millis(50)),
            Duration::from_millis(10)
        );
    }
}
