//! The classic lab design of the kernel-stack TCP uppercase server, kept for comparison
//! (`--thread-per-client`): one thread accepts, each client gets a thread of its own that blocks on its socket
//! and drives the core's [`UppercaseSession`]. The cap, the idle timeout and the refusal reports are the event
//! loop's; a thread costs far more memory than an event loop's client (see BENCHMARKS.md).

use std::io::{self, Read};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;

use mio::{Events, Interest, Poll, Token};
use smoltalk_core::stream_session::{Next, SessionEnd};
use smoltalk_core::UppercaseSession;
use smoltcp::time::Duration;

use super::sockets::{Accepted, Acceptor};
use super::tcp_server::{Shared, REFUSAL_REPORTS};
use super::KernelError;
use crate::clock::Clock;
use crate::sys;

/// Each client's thread reads into a buffer this big.
const BUFFER: usize = 64 * 1024;

/// Accepts clients on `listener` and serves each on a thread of its own, until accepting fails for good.
pub(super) fn serve(listener: TcpListener, shared: &Arc<Shared>) -> Result<(), KernelError> {
    let io = |context| move |error| KernelError::Io { context, error };
    // The accepting thread waits in epoll, so that it can report the tail of a burst of refusals on time.
    listener
        .set_nonblocking(true)
        .map_err(io("cannot make the listening socket non-blocking"))?;
    let mut poll = Poll::new().map_err(io("cannot create the event loop"))?;
    let mut watched = mio::net::TcpListener::from_std(listener);
    poll.registry()
        .register(&mut watched, Token(0), Interest::READABLE)
        .map_err(io("cannot watch the listening socket"))?;
    let mut events = Events::with_capacity(16);
    let mut acceptor = Acceptor::new();
    loop {
        match poll.poll(&mut events, Some(REFUSAL_REPORTS)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(io("the event loop failed")(error)),
        }
        loop {
            let (stream, peer) = match acceptor.accept(&watched, shared.clock.now()) {
                Accepted::Client(stream, peer) => (stream, peer),
                Accepted::NoneWaiting => break,
                Accepted::Failed(e) => {
                    // The poll's timeout comes round to try again.
                    log::warn!("tcp: accept failed: {e}");
                    break;
                }
            };
            let now = shared.clock.now();
            if !shared.limit.admit() {
                drop(stream);
                shared.refused(now);
                continue;
            }
            log::info!("tcp: connection from {peer}");
            let stream = std::net::TcpStream::from(std::os::fd::OwnedFd::from(stream));
            let client = Arc::clone(shared);
            let spawned = std::thread::Builder::new()
                .name(format!("client {peer}"))
                .spawn(move || {
                    let (end, answered) = serve_client(stream, client.idle_timeout, client.clock);
                    client.log_end(peer, end, answered);
                    client.limit.release();
                });
            // Out of threads: this client is turned away (its connection closes), the others go on.
            if let Err(e) = spawned {
                log::warn!("tcp: cannot serve {peer}: {e}");
                shared.limit.release();
            }
        }
        shared.report_refusals(shared.clock.now());
    }
}

/// Serves one client on this thread until its session ends; returns how it ended and the bytes answered.
pub fn serve_client(
    mut stream: TcpStream,
    idle_timeout: Duration,
    clock: Clock,
) -> (SessionEnd, u64) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_nodelay(true);
    // Urgent data stays in the stream, answered like every other byte.
    let _ = socket2::SockRef::from(&stream).set_out_of_band_inline(true);
    let mut session = UppercaseSession::new(clock.now());
    let mut buf = vec![0u8; BUFFER];
    let mut owed_from = 0;
    // The socket's read timeout as last set: it changes only when the wait left does (by more than the
    // rounding), not on every read, which would cost a system call each.
    let mut read_timeout = None;
    loop {
        let now = clock.now();
        // Every wait ends at the idle deadline (a little after it, at most the rounding).
        let left = session
            .deadline(idle_timeout)
            .map(|at| timeout_rounded(clock.until(at)));
        match session.next() {
            Next::Read => {
                if left != read_timeout {
                    let _ = stream.set_read_timeout(left);
                    read_timeout = left;
                }
                match stream.read(&mut buf) {
                    Ok(0) => session.end_of_stream(now),
                    Ok(n) => {
                        if let Some(bytes) = buf.get_mut(..n) {
                            session.received(bytes, clock.now());
                        }
                        owed_from = 0;
                    }
                    Err(e) if is_timeout(&e) => {
                        session.expire(clock.now(), idle_timeout);
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => session.failed(now),
                }
            }
            Next::Write { owed } => {
                // Sent without waiting, then waited for room: a blocking write would report what it moved only
                // when it ends, so a client that takes its replies slowly would look idle, and one that takes
                // none would be given the timeout twice.
                let end = owed_from + owed;
                let sent = socket2::SockRef::from(&stream).send_with_flags(
                    buf.get(owed_from..end).unwrap_or(&[]),
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                );
                match sent {
                    Ok(0) => session.failed(now),
                    Ok(n) => {
                        owed_from += n;
                        session.wrote(n, clock.now());
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        let wait = left.unwrap_or(std::time::Duration::from_secs(1));
                        match sys::wait_writable(&stream, wait) {
                            Ok(true) => {}
                            Ok(false) => {
                                session.expire(clock.now(), idle_timeout);
                            }
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(_) => session.failed(now),
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => session.failed(now),
                }
            }
            Next::CloseWrite => {
                let _ = stream.shutdown(Shutdown::Write);
                session.closed_write(now);
            }
            Next::Close(end) => return (end, session.answered()),
        }
    }
}

/// A wait rounded up to the next 10 ms (at least 10 ms: a zero timeout would mean none).
fn timeout_rounded(wait: std::time::Duration) -> std::time::Duration {
    let step = 10_000u128;
    let micros = wait.as_micros().div_ceil(step).max(1) * step;
    std::time::Duration::from_micros(micros.min(u64::MAX as u128) as u64)
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_round_up_to_ten_milliseconds() {
        let ms = std::time::Duration::from_millis;
        assert_eq!(timeout_rounded(ms(0)), ms(10));
        assert_eq!(
            timeout_rounded(ms(300_000) - std::time::Duration::from_micros(3)),
            ms(300_000)
        );
        assert_eq!(timeout_rounded(ms(1_001)), ms(1_010));
    }
}
