//! A client thread's byte moving: what was read and not used yet ([`Pending`]), reads with a deadline
//! ([`read_into`]), a tunnel's copying ([`TunnelActivity`]), the drain after a close, and the timeouts of
//! blocking sockets.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicI64, AtomicU8, Ordering};
use std::time::Duration;

use smoltalk_core::proxy::{Drain, Limits};
use smoltcp::time::Instant;

use crate::clock::Clock;
use crate::sys;

/// Bytes read from a socket and not used yet: `buf[start..end]`, in a buffer that grows, when full, up to `max`
/// (a response head up to 64 KiB is rare: a thread pays for the room only when its origin sends one).
pub(super) struct Pending {
    pub(super) buf: Box<[u8]>,
    start: usize,
    end: usize,
    max: usize,
}

impl Pending {
    /// A buffer of `size` bytes that never grows.
    pub(super) fn new(size: usize) -> Pending {
        Pending::growing(size, size)
    }

    /// A buffer of `size` bytes that grows up to `max` when a read finds it full.
    pub(super) fn growing(size: usize, max: usize) -> Pending {
        Pending {
            buf: vec![0; size].into_boxed_slice(),
            start: 0,
            end: 0,
            max: max.max(size),
        }
    }

    pub(super) fn bytes(&self) -> &[u8] {
        self.buf.get(self.start..self.end).unwrap_or(&[])
    }

    pub(super) fn is_empty(&self) -> bool {
        self.start == self.end
    }

    pub(super) fn consume(&mut self, n: usize) {
        // Saturating: `consume(usize::MAX)` drops all (a plain add overflows once `start > 0`).
        self.start = self.start.saturating_add(n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Reads more after what is pending (moving it to the front first if the buffer's end is reached).
    /// `Ok(0)` is end of stream; an error `WouldBlock`/`TimedOut` is the socket's read timeout.
    pub(super) fn fill(&mut self, stream: &mut TcpStream) -> io::Result<usize> {
        if self.end == self.buf.len() && self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() && self.buf.len() < self.max {
            let mut grown = vec![0; (self.buf.len() * 2).min(self.max)].into_boxed_slice();
            if let (Some(to), Some(from)) = (grown.get_mut(..self.end), self.buf.get(..self.end)) {
                to.copy_from_slice(from);
            }
            self.buf = grown;
        }
        let space = self.buf.get_mut(self.end..).unwrap_or(&mut []);
        if space.is_empty() {
            return Err(io::Error::new(io::ErrorKind::OutOfMemory, "buffer full"));
        }
        let n = stream.read(space)?;
        self.end += n;
        Ok(n)
    }
}

/// How a tunnel ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TunnelEnd {
    /// Both sides closed (each direction ended with a FIN, passed on).
    Closed,
    /// A side reset its connection (a read or a write failed).
    Reset,
    /// No byte went either way for [`Limits::tunnel_idle`].
    Idle,
}

/// What a tunnel's two copying threads share: when a byte last went either way (a download does not go idle
/// because the client says nothing meanwhile), and what stopped the tunnel if not both sides' closing.
pub(super) struct TunnelActivity {
    clock: Clock,
    idle: Duration,
    /// When a byte last moved, in the clock's microseconds.
    last: AtomicI64,
    /// 0 while running, else the [`TunnelEnd`] that stopped it first.
    stopped: AtomicU8,
}

impl TunnelActivity {
    pub(super) fn new(clock: Clock, limits: &Limits) -> TunnelActivity {
        TunnelActivity {
            clock,
            idle: std_duration(limits.tunnel_idle),
            last: AtomicI64::new(clock.now().total_micros()),
            stopped: AtomicU8::new(0),
        }
    }

    /// When a byte last moved.
    pub(super) fn last(&self) -> Instant {
        Instant::from_micros(self.last.load(Ordering::Acquire))
    }

    /// How the tunnel ended (once both threads are done).
    pub(super) fn end(&self) -> TunnelEnd {
        match self.stopped.load(Ordering::Acquire) {
            1 => TunnelEnd::Reset,
            2 => TunnelEnd::Idle,
            _ => TunnelEnd::Closed,
        }
    }

    fn moved(&self) {
        self.last
            .fetch_max(self.clock.now().total_micros(), Ordering::AcqRel);
    }

    /// How long until the tunnel is idle, if nothing moves before.
    fn quiet_left(&self) -> Duration {
        let since = self.clock.now().total_micros() - self.last.load(Ordering::Acquire);
        self.idle
            .saturating_sub(Duration::from_micros(since.max(0).unsigned_abs()))
    }

    fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire) != 0
    }

    /// Stops the tunnel for `why` (unless it stopped already), so that the other thread's read or write
    /// returns at once: after a reset both connections are reset (the engine ends a tunnel whose peer reset with
    /// resets both ways, and a FIN would let either side take a cut stream for a whole one); once idle, both are
    /// shut with a FIN.
    fn stop(&self, why: TunnelEnd, a: &TcpStream, b: &TcpStream) {
        let code = match why {
            TunnelEnd::Closed => return,
            TunnelEnd::Reset => 1,
            TunnelEnd::Idle => 2,
        };
        let first = self
            .stopped
            .compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        let reset = match first {
            true => why == TunnelEnd::Reset,
            false => self.end() == TunnelEnd::Reset,
        };
        for stream in [a, b] {
            let _ = match reset {
                // Should the abort fail, a shutdown of the reading side still wakes the other thread's read,
                // and sends nothing: the reset then goes when the session closes the connection.
                true => sys::abort_connection(stream).or_else(|_| stream.shutdown(Shutdown::Read)),
                false => stream.shutdown(Shutdown::Both),
            };
        }
    }
}

/// Copies bytes both ways between `client` and `origin` (client to origin through `buffers.0`, origin to client
/// through `buffers.1`, on a thread of its own) until both sides have closed, one fails, or neither moves a byte
/// for the tunnel's idle limit. Returns the bytes moved and the activity that says how and when it ended; an
/// error if the sockets could not be cloned for the two threads.
pub(super) fn relay_both_ways(
    client: &TcpStream,
    origin: &TcpStream,
    buffers: (&mut Pending, &mut Pending),
    clock: Clock,
    limits: &Limits,
) -> io::Result<(usize, TunnelActivity)> {
    let (mut client_in, mut client_out) = (client.try_clone()?, client.try_clone()?);
    let (mut origin_in, mut origin_out) = (origin.try_clone()?, origin.try_clone()?);
    let (forth, back) = (&mut buffers.0.buf, &mut buffers.1.buf);
    let activity = TunnelActivity::new(clock, limits);
    let moved = std::thread::scope(|scope| {
        let activity = &activity;
        let back =
            scope.spawn(move || copy_one_way(&mut origin_in, &mut client_out, back, activity));
        let forth = copy_one_way(&mut client_in, &mut origin_out, forth, activity);
        forth + back.join().unwrap_or(0)
    });
    Ok((moved, activity))
}

/// Copies `from` to `to` until `from` closes (then closes `to`'s sending side), either side fails (a reset), or
/// the tunnel has been idle both ways for its limit. Returns how many bytes went.
fn copy_one_way(
    from: &mut TcpStream,
    to: &mut TcpStream,
    buf: &mut [u8],
    tunnel: &TunnelActivity,
) -> usize {
    let mut total = 0;
    while !tunnel.is_stopped() {
        let left = tunnel.quiet_left();
        if left.is_zero() {
            tunnel.stop(TunnelEnd::Idle, from, to);
            break;
        }
        let _ = from.set_read_timeout(Some(left.max(Duration::from_millis(1))));
        match from.read(buf) {
            Ok(0) => {
                // A read the other thread's stop ended is no end of stream to pass on.
                if !tunnel.is_stopped() {
                    let _ = to.shutdown(Shutdown::Write);
                }
                break;
            }
            Ok(n) => {
                tunnel.moved();
                match to.write_all(buf.get(..n).unwrap_or(&[])) {
                    Ok(()) => total += n,
                    // The other side took nothing for the whole idle time.
                    Err(e) if is_timeout(&e) => tunnel.stop(TunnelEnd::Idle, from, to),
                    Err(_) => tunnel.stop(TunnelEnd::Reset, from, to),
                }
                tunnel.moved();
            }
            // Quiet this way: the loop looks at whether the other way moved meanwhile.
            Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => tunnel.stop(TunnelEnd::Reset, from, to),
        }
    }
    total
}

/// Reads and drops what `client` still sends after the proxy's last byte, as [`Drain`] says, having closed the
/// proxy's sending side first (so the client sees the end of the answer).
pub(super) fn drain(client: &mut TcpStream, clock: &Clock, limits: &Limits) {
    let _ = client.shutdown(Shutdown::Write);
    let mut drain = Drain::start(limits, clock.now());
    let mut sink = [0u8; 4096];
    loop {
        let left = clock.until(drain.deadline());
        if left.is_zero() {
            return;
        }
        let _ = client.set_read_timeout(Some(left.max(Duration::from_millis(1))));
        match client.read(&mut sink) {
            Ok(0) => return,
            Ok(_) => drain.on_bytes(clock.now()),
            Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

pub(super) fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

pub(super) fn std_duration(d: smoltcp::time::Duration) -> Duration {
    Duration::from_micros(d.total_micros())
}

/// What a read with a deadline gave.
pub(super) enum ReadOutcome {
    /// Bytes came.
    Bytes,
    /// The peer finished sending (closed, or reset: `reset`).
    Finished { reset: bool },
    /// The timeout passed with nothing.
    TimedOut,
}

/// Reads until `stream` gives bytes into `pending`, or `wait` passes.
pub(super) fn read_into(
    stream: &mut TcpStream,
    pending: &mut Pending,
    wait: Duration,
) -> ReadOutcome {
    // Zero would mean "no timeout" to the socket: a deadline passed is a millisecond's wait.
    let _ = stream.set_read_timeout(Some(wait.max(Duration::from_millis(1))));
    match pending.fill(stream) {
        Ok(0) => ReadOutcome::Finished { reset: false },
        Ok(_) => ReadOutcome::Bytes,
        Err(e) if is_timeout(&e) => ReadOutcome::TimedOut,
        Err(e) if e.kind() == io::ErrorKind::Interrupted => ReadOutcome::Bytes,
        Err(_) => ReadOutcome::Finished { reset: true },
    }
}
