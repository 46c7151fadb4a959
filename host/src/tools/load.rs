//! `smoltalk throughput`: a load generator for any uppercase TCP server, on the kernel stack. Each connection
//! streams a known text, and every byte of the reply is checked against its uppercase form before it is
//! counted. The figure is what came back, verified, per second.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use smoltalk_core::uppercase_in_place;

use crate::sys::{self, PollSet, SocketBuffer};

/// Why a throughput run stopped.
#[derive(Debug)]
pub enum LoadError {
    /// A connection to the server could not be made.
    Connect {
        /// The server.
        server: SocketAddr,
        /// Why not.
        error: io::Error,
    },
    /// A socket could not be made non-blocking.
    NonBlocking(io::Error),
    /// The socket buffer size asked for does not fit the kernel's `int`.
    BufferTooLarge(usize),
    /// The kernel refused the socket buffer size.
    SocketBuffer(io::Error),
    /// Waiting on the connections failed.
    Poll(io::Error),
    /// A connection failed or was hung up on.
    ClosedOrReset,
    /// Writing to a connection failed.
    Send(io::Error),
    /// The server closed a connection.
    Closed,
    /// Reading from a connection failed.
    Receive(io::Error),
    /// A reply byte was not the uppercase of the byte sent.
    WrongReply {
        /// Where, counted from the connection's first reply byte.
        at: u64,
    },
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadError::Connect { server, error } => {
                write!(f, "cannot connect to {server}: {error}")
            }
            LoadError::NonBlocking(e) => write!(f, "cannot make the socket non-blocking: {e}"),
            LoadError::BufferTooLarge(size) => {
                write!(f, "{size} bytes is too large a socket buffer")
            }
            LoadError::SocketBuffer(e) => write!(f, "cannot set the socket buffer: {e}"),
            LoadError::Poll(e) => write!(f, "poll: {e}"),
            LoadError::ClosedOrReset => f.write_str("the server closed or reset a connection"),
            LoadError::Send(e) => write!(f, "sending: {e}"),
            LoadError::Closed => f.write_str("the server closed a connection"),
            LoadError::Receive(e) => write!(f, "receiving: {e}"),
            LoadError::WrongReply { at } => write!(
                f,
                "the reply differs from the uppercase of what was sent (at byte {at})"
            ),
        }
    }
}

impl std::error::Error for LoadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LoadError::Connect { error, .. }
            | LoadError::NonBlocking(error)
            | LoadError::SocketBuffer(error)
            | LoadError::Poll(error)
            | LoadError::Send(error)
            | LoadError::Receive(error) => Some(error),
            LoadError::BufferTooLarge(_)
            | LoadError::ClosedOrReset
            | LoadError::Closed
            | LoadError::WrongReply { .. } => None,
        }
    }
}

/// What a throughput run measured.
#[derive(Debug, Clone, Copy)]
pub struct Throughput {
    /// Verified reply bytes counted in the measured interval.
    pub bytes: u64,
    /// Length of the measured interval.
    pub elapsed: Duration,
    /// Connections used.
    pub connections: usize,
}

impl Throughput {
    /// Reply bytes per second as Gbit/s (each way: the same bytes went out).
    pub fn gbit_per_s(&self) -> f64 {
        self.bytes as f64 * 8.0 / self.elapsed.as_secs_f64() / 1e9
    }
}

const PATTERN_LEN: usize = 1 << 16;

fn pattern() -> Vec<u8> {
    // Mixed-case text, periodic in PATTERN_LEN and twice that long, so any write of up to PATTERN_LEN bytes
    // can start at any offset of the period.
    let text = b"The Quick Brown Fox Jumps Over The Lazy Dog, 0123456789! ";
    (0..2 * PATTERN_LEN)
        .map(|i| text[(i % PATTERN_LEN) % text.len()])
        .collect()
}

/// Streams to `server` over `connections` connections for `warmup + duration`, counting only `duration`.
/// One thread drives every connection with non-blocking sockets and `poll`, as iperf3 does, so the load
/// generator itself adds no thread switches as connections are added.
pub fn run(
    server: SocketAddr,
    connections: usize,
    warmup: Duration,
    duration: Duration,
    chunk: usize,
    socket_buffer: Option<usize>,
) -> Result<Throughput, LoadError> {
    let mut conns = Vec::new();
    for _ in 0..connections.max(1) {
        let stream = TcpStream::connect_timeout(&server, Duration::from_secs(5))
            .map_err(|error| LoadError::Connect { server, error })?;
        let _ = stream.set_nodelay(true);
        if let Some(size) = socket_buffer {
            set_socket_buffers(&stream, size)?;
        }
        stream
            .set_nonblocking(true)
            .map_err(LoadError::NonBlocking)?;
        conns.push(LoadConnection {
            stream,
            sent: 0,
            received: 0,
        });
    }
    let pattern = pattern();
    let mut expected = pattern.clone();
    uppercase_in_place(&mut expected);
    let mut buf = vec![0u8; PATTERN_LEN];
    let chunk = chunk.clamp(1, PATTERN_LEN);

    let started = Instant::now();
    let (measure_from, end) = (started + warmup, started + warmup + duration);
    let mut at_start: Option<(Instant, u64)> = None;
    let mut total: u64 = 0;
    let mut poll_set = PollSet::read_write(conns.iter().map(|c| c.stream.as_raw_fd()));
    loop {
        let now = Instant::now();
        if at_start.is_none() && now >= measure_from {
            at_start = Some((now, total));
        }
        if now >= end {
            break;
        }
        match poll_set.poll(Duration::from_millis(100)) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(LoadError::Poll(e)),
        }
        for (conn, ready) in conns.iter_mut().zip(poll_set.readiness()) {
            if ready.failed && !ready.readable {
                return Err(LoadError::ClosedOrReset);
            }
            if ready.writable {
                conn.send(&pattern, chunk)?;
            }
            if ready.readable {
                total += conn.receive(&expected, &mut buf)?;
            }
        }
    }
    let (from, base) = at_start.unwrap_or((started, 0));
    Ok(Throughput {
        bytes: total - base,
        elapsed: Instant::now().duration_since(from),
        connections,
    })
}

/// Fixes the kernel's send and receive buffers of `stream` (which turns the kernel's autotuning off).
fn set_socket_buffers(stream: &TcpStream, size: usize) -> Result<(), LoadError> {
    let size = i32::try_from(size).map_err(|_| LoadError::BufferTooLarge(size))?;
    for which in [SocketBuffer::Send, SocketBuffer::Receive] {
        sys::set_socket_buffer(stream, which, size).map_err(LoadError::SocketBuffer)?;
    }
    Ok(())
}

struct LoadConnection {
    stream: TcpStream,
    sent: u64,
    received: u64,
}

impl LoadConnection {
    fn send(&mut self, pattern: &[u8], chunk: usize) -> Result<(), LoadError> {
        let offset = (self.sent % PATTERN_LEN as u64) as usize;
        match self.stream.write(&pattern[offset..offset + chunk]) {
            Ok(n) => self.sent += n as u64,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(LoadError::Send(e)),
        }
        Ok(())
    }

    /// Reads what is there and checks it against the uppercase of what was sent; returns the bytes taken.
    fn receive(&mut self, expected: &[u8], buf: &mut [u8]) -> Result<u64, LoadError> {
        let n = match self.stream.read(buf) {
            Ok(0) => return Err(LoadError::Closed),
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                return Ok(0)
            }
            Err(e) => return Err(LoadError::Receive(e)),
        };
        let mut checked = 0;
        while checked < n {
            let offset = (self.received % PATTERN_LEN as u64) as usize;
            let len = (n - checked).min(PATTERN_LEN - offset);
            if buf[checked..checked + len] != expected[offset..offset + len] {
                return Err(LoadError::WrongReply { at: self.received });
            }
            checked += len;
            self.received += len as u64;
        }
        Ok(n as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_server_and_a_wrong_reply_are_reported() {
        let server: SocketAddr = ([127, 0, 0, 1], 9).into();
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(
            LoadError::Connect {
                server,
                error: io::Error::from(io::ErrorKind::ConnectionRefused),
            }
            .to_string(),
            format!("cannot connect to 127.0.0.1:9: {refused}")
        );
        assert_eq!(
            LoadError::WrongReply { at: 7 }.to_string(),
            "the reply differs from the uppercase of what was sent (at byte 7)"
        );
        assert_eq!(
            LoadError::BufferTooLarge(1 << 40).to_string(),
            "1099511627776 bytes is too large a socket buffer"
        );
    }
}
