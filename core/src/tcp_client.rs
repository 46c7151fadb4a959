//! [`UppercaseTcpClient`]: the life of one client connection — handshake with a deadline, refusal, reset,
//! close — over a smoltcp TCP socket the host owns.
//!
//! ```text
//!         connect()                 SYN-ACK
//! Idle ─────────────▶ Connecting ───────────▶ Connected ── close() ──▶ Closing ── FIN exchange done ──▶ Closed
//!                        │ RST: ConnectionRefused            │ RST / timeout: ConnectionReset
//!                        │ deadline: ConnectTimedOut         ▼
//!                        └──────────────────────────────▶ Closed
//! ```
//!
//! The client only tracks the connection. Bytes go through [`UppercaseTcpClient::send`] and
//! [`UppercaseTcpClient::recv`]; the host decides what to send and how long to wait for replies.

use smoltcp::iface::{Context, SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::IpEndpoint;

use crate::error::ClientError;

/// Where the client's connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpClientState {
    /// Not connected yet.
    Idle,
    /// SYN sent, waiting for SYN-ACK until `deadline`.
    Connecting {
        /// When the handshake is given up.
        deadline: Instant,
    },
    /// The handshake completed: bytes may flow.
    Connected,
    /// We sent (or will send) FIN; waiting for the connection to finish.
    Closing,
    /// The connection is over.
    Closed,
}

/// One TCP client connection to an uppercase server.
#[derive(Debug)]
pub struct UppercaseTcpClient {
    handle: SocketHandle,
    state: TcpClientState,
}

impl UppercaseTcpClient {
    /// A client that will use the TCP socket behind `handle`.
    pub fn new(handle: SocketHandle) -> Self {
        UppercaseTcpClient {
            handle,
            state: TcpClientState::Idle,
        }
    }

    /// The socket this client uses.
    pub fn handle(&self) -> SocketHandle {
        self.handle
    }

    /// Where the connection is.
    pub fn state(&self) -> TcpClientState {
        self.state
    }

    /// Sends SYN to `server` from `local_port`, and gives the handshake until `now + timeout`.
    pub fn connect(
        &mut self,
        cx: &mut Context,
        sockets: &mut SocketSet<'_>,
        server: IpEndpoint,
        local_port: u16,
        now: Instant,
        timeout: Duration,
    ) -> Result<(), ClientError> {
        let socket = sockets.get_mut::<tcp::Socket>(self.handle);
        socket
            .connect(cx, server, local_port)
            .map_err(ClientError::Connect)?;
        self.state = TcpClientState::Connecting {
            deadline: now + timeout,
        };
        Ok(())
    }

    /// Follows the socket: completes the handshake, notices refusal, reset and the end of a close.
    pub fn poll(
        &mut self,
        sockets: &mut SocketSet<'_>,
        now: Instant,
    ) -> Result<TcpClientState, ClientError> {
        let socket = sockets.get_mut::<tcp::Socket>(self.handle);
        match self.state {
            TcpClientState::Connecting { deadline } => {
                if socket.may_send() {
                    self.state = TcpClientState::Connected;
                } else if !socket.is_open() {
                    // SYN-SENT → CLOSED happens only on RST: nothing listens there.
                    self.state = TcpClientState::Closed;
                    return Err(ClientError::ConnectionRefused);
                } else if now >= deadline {
                    socket.abort();
                    self.state = TcpClientState::Closed;
                    return Err(ClientError::ConnectTimedOut);
                }
            }
            TcpClientState::Connected => {
                if !socket.is_open() {
                    self.state = TcpClientState::Closed;
                    return Err(ClientError::ConnectionReset);
                }
            }
            TcpClientState::Closing => {
                if !socket.is_open() {
                    self.state = TcpClientState::Closed;
                }
            }
            TcpClientState::Idle | TcpClientState::Closed => {}
        }
        Ok(self.state)
    }

    /// When the client needs to be polled even if no packet arrives (the handshake deadline).
    pub fn poll_at(&self) -> Option<Instant> {
        match self.state {
            TcpClientState::Connecting { deadline } => Some(deadline),
            _ => None,
        }
    }

    /// Queues as much of `data` as the send buffer takes, and returns how much that was.
    pub fn send(&mut self, sockets: &mut SocketSet<'_>, data: &[u8]) -> Result<usize, ClientError> {
        if self.state != TcpClientState::Connected {
            return Err(ClientError::InvalidState);
        }
        let socket = sockets.get_mut::<tcp::Socket>(self.handle);
        socket
            .send_slice(data)
            .map_err(|_| ClientError::ConnectionReset)
    }

    /// Takes received bytes into `buf`. `Ok(0)` means nothing has arrived yet, or see
    /// [`UppercaseTcpClient::peer_closed`].
    pub fn recv(
        &mut self,
        sockets: &mut SocketSet<'_>,
        buf: &mut [u8],
    ) -> Result<usize, ClientError> {
        let socket = sockets.get_mut::<tcp::Socket>(self.handle);
        match socket.recv_slice(buf) {
            Ok(n) => Ok(n),
            Err(tcp::RecvError::Finished) => Ok(0),
            Err(tcp::RecvError::InvalidState) => Err(ClientError::ConnectionReset),
        }
    }

    /// Whether the server has closed its side and every byte it sent has been taken.
    pub fn peer_closed(&self, sockets: &mut SocketSet<'_>) -> bool {
        let socket = sockets.get_mut::<tcp::Socket>(self.handle);
        !socket.may_recv() && socket.recv_queue() == 0
    }

    /// Closes our side (FIN after the queued bytes).
    pub fn close(&mut self, sockets: &mut SocketSet<'_>) {
        sockets.get_mut::<tcp::Socket>(self.handle).close();
        if self.state != TcpClientState::Closed {
            self.state = TcpClientState::Closing;
        }
    }
}
