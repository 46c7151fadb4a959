//! The event loop's byte moving: what waits for a socket ([`Outgoing`]), one direction of a tunnel ([`pump`]),
//! a kept connection's idleness, and a pipe that carries long bodies socket to socket inside the kernel
//! ([`SplicePipe`]).

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::OwnedFd;

use mio::net::TcpStream;

use crate::sys;

/// Bytes waiting for a socket to take them.
#[derive(Default)]
pub(super) struct Outgoing {
    bytes: Vec<u8>,
    sent: usize,
}

impl Outgoing {
    pub fn is_empty(&self) -> bool {
        self.sent == self.bytes.len()
    }

    pub fn push(&mut self, bytes: &[u8]) {
        if self.is_empty() {
            self.bytes.clear();
            self.sent = 0;
        }
        self.bytes.extend_from_slice(bytes);
    }

    /// Drops what is queued.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.sent = 0;
    }

    /// Writes as much as `stream` takes. `Ok(true)` if anything went.
    pub fn flush(&mut self, stream: &mut TcpStream, keep: usize) -> io::Result<bool> {
        let mut moved = false;
        while !self.is_empty() {
            match stream.write(&self.bytes[self.sent..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.sent += n;
                    moved = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.is_empty() && self.bytes.capacity() > keep {
            // A slow reader made this grow; give the memory back.
            self.bytes = Vec::new();
            self.sent = 0;
        }
        Ok(moved)
    }
}

/// How one direction of a tunnel went.
pub(super) enum Pumped {
    /// Whether any byte (or the end of stream) moved.
    Moved(bool),
    /// A socket failed (a peer reset).
    Reset,
}

/// One direction of a tunnel: reads `from` (when what was read before has gone on) and writes `to`, queueing
/// what `to` does not take; passes the end of stream on as a half-close.
pub(super) fn pump(
    from: &mut TcpStream,
    from_eof: &mut bool,
    to: &mut TcpStream,
    queue: &mut Outgoing,
    scratch: &mut [u8],
) -> Pumped {
    let mut moved = false;
    while !*from_eof && queue.is_empty() {
        match from.read(scratch) {
            Ok(0) => {
                *from_eof = true;
                moved = true;
            }
            Ok(n) => {
                moved = true;
                match to.write(&scratch[..n]) {
                    Ok(w) => queue.push(&scratch[w..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => queue.push(&scratch[..n]),
                    Err(_) => return Pumped::Reset,
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Pumped::Reset,
        }
    }
    if *from_eof && queue.is_empty() {
        let _ = to.shutdown(Shutdown::Write);
    }
    Pumped::Moved(moved)
}

/// The pipe `splice` uses holds this much (asked for; the kernel may give less).
const PIPE_SIZE: i32 = 1 << 20;

/// A pipe that carries a response body from the origin's socket to the client's inside the kernel.
pub(super) struct SplicePipe {
    read: OwnedFd,
    write: OwnedFd,
    /// Bytes in the pipe, not yet passed on to the client.
    pub held: usize,
}

impl SplicePipe {
    pub fn new() -> io::Result<SplicePipe> {
        let (read, write) = sys::pipe()?;
        // A bigger pipe moves more per call; the default (64 KiB) still works if the kernel refuses.
        let _ = sys::set_pipe_size(&write, PIPE_SIZE);
        Ok(SplicePipe {
            read,
            write,
            held: 0,
        })
    }

    /// Moves up to `max` bytes from the socket `from` into the pipe. `Ok(0)` is the socket's end of stream.
    pub fn fill(&mut self, from: &TcpStream, max: usize) -> io::Result<usize> {
        let n = sys::splice(from, &self.write, max.min(PIPE_SIZE as usize))?;
        self.held += n;
        Ok(n)
    }

    /// Moves what the pipe holds to the socket `to`.
    pub fn drain(&mut self, to: &TcpStream) -> io::Result<usize> {
        let n = sys::splice(&self.read, to, self.held)?;
        self.held -= n.min(self.held);
        Ok(n)
    }
}
