//! Typed errors of the servers and clients, each with a `Display` that a person can read.

use core::fmt;

use smoltcp::socket::{tcp, udp};

/// Why a server could not start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerError {
    /// The server was given no socket to serve on.
    NoSockets,
    /// More sockets were given than the server's fixed pool holds.
    TooManySockets {
        /// The pool's capacity.
        capacity: usize,
    },
    /// A TCP socket refused to listen (port 0, or the socket was already open).
    Listen(tcp::ListenError),
    /// The UDP socket refused to bind (port 0, or it was already bound).
    Bind(udp::BindError),
    /// The scratch buffer handed to the server is empty.
    NoScratch,
    /// A buffer the caller gave is smaller than the server's limits need.
    BufferTooSmall {
        /// Bytes the limits need.
        needed: usize,
        /// Bytes given.
        given: usize,
    },
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerError::NoSockets => write!(f, "the server needs at least one socket"),
            ServerError::TooManySockets { capacity } => {
                write!(f, "the server's pool holds at most {capacity} sockets")
            }
            ServerError::Listen(e) => write!(f, "TCP socket cannot listen: {e}"),
            ServerError::Bind(e) => write!(f, "UDP socket cannot bind: {e}"),
            ServerError::NoScratch => write!(f, "the server needs a non-empty scratch buffer"),
            ServerError::BufferTooSmall { needed, given } => write!(
                f,
                "a buffer of {given} bytes is too small: the limits need {needed}"
            ),
        }
    }
}

/// Why a client exchange failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientError {
    /// The remote answered the SYN with RST: nothing listens on that address and port.
    ConnectionRefused,
    /// No answer to the handshake before the deadline.
    ConnectTimedOut,
    /// The connection was reset or timed out after it was established.
    ConnectionReset,
    /// The peer closed the connection before the whole reply arrived.
    ClosedEarly {
        /// Reply bytes that had arrived.
        received: usize,
        /// Reply bytes that were expected.
        expected: usize,
    },
    /// The reply did not arrive before the deadline.
    ReplyTimedOut,
    /// No UDP reply after every try.
    NoReply {
        /// How many datagrams were sent.
        tries: u32,
    },
    /// The socket could not connect (unspecified address or port, or already open).
    Connect(tcp::ConnectError),
    /// The UDP socket could not bind its local port.
    Bind(udp::BindError),
    /// The request does not fit the socket's buffer.
    RequestTooLarge {
        /// Request length.
        len: usize,
        /// What the socket's buffer holds.
        capacity: usize,
    },
    /// The request does not fit one IPv6 packet, and smoltcp 0.14 does not fragment IPv6.
    RequestNeedsIpv6Fragments {
        /// Request length.
        len: usize,
        /// The largest UDP payload one IPv6 packet carries on this device.
        largest: usize,
    },
    /// The server's address or port is unspecified (0.0.0.0 or port 0).
    Unaddressable,
    /// The operation needs a state the client is not in (for example sending before connecting).
    InvalidState,
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::ConnectionRefused => write!(
                f,
                "connection refused: the server is probably not running on that address and port"
            ),
            ClientError::ConnectTimedOut => write!(
                f,
                "connection timed out: no answer to the TCP handshake (is the address reachable?)"
            ),
            ClientError::ConnectionReset => write!(f, "connection reset by the server"),
            ClientError::ClosedEarly { received, expected } => write!(
                f,
                "the server closed the connection after {received} of {expected} reply bytes"
            ),
            ClientError::ReplyTimedOut => write!(f, "timed out waiting for the reply"),
            ClientError::NoReply { tries } => write!(
                f,
                "no reply after {tries} tries: UDP has no connection, so the datagrams may have been lost \
                 or no server is listening on that address and port"
            ),
            ClientError::Connect(e) => write!(f, "cannot connect: {e}"),
            ClientError::Bind(e) => write!(f, "cannot bind the UDP socket: {e}"),
            ClientError::RequestTooLarge { len, capacity } => write!(
                f,
                "request of {len} bytes does not fit the socket buffer of {capacity} bytes"
            ),
            ClientError::RequestNeedsIpv6Fragments { len, largest } => write!(
                f,
                "a request of {len} bytes does not fit one IPv6 packet (at most {largest} bytes here), and \
                 smoltcp does not fragment IPv6: send at most {largest} bytes, or use the server's IPv4 address"
            ),
            ClientError::Unaddressable => {
                write!(f, "the server address or port is unspecified")
            }
            ClientError::InvalidState => write!(f, "the client is not in a state for that"),
        }
    }
}

impl core::error::Error for ServerError {}
impl core::error::Error for ClientError {}
