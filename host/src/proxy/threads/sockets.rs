//! A client thread's byte moving: what was read and not used yet ([`Pending`]), a tunnel's copying, a kept
//! connection's idleness, and the timeouts of blocking sockets.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

/// Bytes read from a socket and not used yet: `buf[start..end]`.
pub(super) struct Pending {
    pub(super) buf: Box<[u8]>,
    start: usize,
    end: usize,
}

impl Pending {
    pub(super) fn new(size: usize) -> Pending {
        Pending {
            buf: vec![0; size].into_boxed_slice(),
            start: 0,
            end: 0,
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
        let space = self.buf.get_mut(self.end..).unwrap_or(&mut []);
        if space.is_empty() {
            return Err(io::Error::new(io::ErrorKind::OutOfMemory, "buffer full"));
        }
        let n = stream.read(space)?;
        self.end += n;
        Ok(n)
    }
}

/// Copies `from` to `to` until `from` closes (then closes `to`'s sending side) or either fails. Returns how
/// many bytes went.
pub(super) fn copy_until_closed(from: &mut TcpStream, to: &mut TcpStream, buf: &mut [u8]) -> usize {
    let mut total = 0;
    loop {
        match from.read(buf) {
            Ok(0) => break,
            Ok(n) => {
                if to.write_all(buf.get(..n).unwrap_or(&[])).is_err() {
                    let _ = from.shutdown(Shutdown::Read);
                    break;
                }
                total += n;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    total
}

/// Whether a kept origin connection is still open and silent (the origin may have closed it while it idled).
pub(super) fn is_idle(stream: &TcpStream) -> bool {
    if stream.set_nonblocking(true).is_err() {
        return false;
    }
    let idle =
        matches!(stream.peek(&mut [0u8; 1]), Err(ref e) if e.kind() == io::ErrorKind::WouldBlock);
    stream.set_nonblocking(false).is_ok() && idle
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
