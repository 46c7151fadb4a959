//! [`UppercaseUdpClient`]: send a request datagram, wait for its reply, send again after a timeout, give up
//! after a number of tries.
//!
//! ```text
//!        request()               matching reply
//! Idle ───────────▶ Awaiting ─────────────────▶ Answered
//!                    │  ▲ timeout, tries left: send again
//!                    │  └──┘
//!                    └── timeout, no tries left ──▶ GaveUp (NoReply)
//! ```
//!
//! UDP has no connection, and smoltcp hands ICMP errors to no UDP socket: silence is all a lost request or an
//! absent server looks like. A reply counts only if it comes from the server's address and is the uppercase of
//! the request; anything else (a late reply to an earlier request, a stranger's datagram) is skipped.

use smoltcp::iface::{SocketHandle, SocketSet};
use smoltcp::socket::udp;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::IpEndpoint;

use crate::endpoint::written;
use crate::error::ClientError;
use crate::uppercase::uppercase_byte;

/// Where the client's current request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UdpClientState {
    /// No request yet.
    Idle,
    /// Request sent `tries` times, the last at `sent_at`.
    Awaiting {
        /// Datagrams sent for this request so far.
        tries: u32,
        /// When the last one was sent.
        sent_at: Instant,
    },
    /// The reply arrived after `tries` datagrams.
    Answered {
        /// Datagrams sent for this request.
        tries: u32,
    },
    /// No reply after every try.
    GaveUp,
}

/// A UDP client of an uppercase server.
#[derive(Debug)]
pub struct UppercaseUdpClient {
    handle: SocketHandle,
    server: IpEndpoint,
    max_tries: u32,
    timeout: Duration,
    state: UdpClientState,
    skipped: u64,
}

impl UppercaseUdpClient {
    /// Binds the socket behind `handle` to `local_port`; requests go to `server`, each sent up to `max_tries`
    /// times, `timeout` apart.
    pub fn new(
        handle: SocketHandle,
        sockets: &mut SocketSet<'_>,
        local_port: u16,
        server: IpEndpoint,
        max_tries: u32,
        timeout: Duration,
    ) -> Result<Self, ClientError> {
        let socket = sockets.get_mut::<udp::Socket>(handle);
        if !socket.is_open() {
            socket.bind(local_port).map_err(ClientError::Bind)?;
        }
        Ok(UppercaseUdpClient {
            handle,
            server,
            max_tries: max_tries.max(1),
            timeout,
            state: UdpClientState::Idle,
            skipped: 0,
        })
    }

    /// Where the current request is.
    pub fn state(&self) -> UdpClientState {
        self.state
    }

    /// Datagrams received that were not the reply awaited (late replies, strangers).
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Sends `request` for the first time.
    pub fn request(
        &mut self,
        sockets: &mut SocketSet<'_>,
        request: &[u8],
        now: Instant,
    ) -> Result<(), ClientError> {
        self.send(sockets, request)?;
        self.state = UdpClientState::Awaiting {
            tries: 1,
            sent_at: now,
        };
        Ok(())
    }

    /// Looks for the reply to `request` and copies it into `reply`; sends again when a timeout has passed.
    /// Returns `Ok(Some(len))` once answered, `Ok(None)` while waiting, and `Err(NoReply)` after the last try.
    pub fn poll(
        &mut self,
        sockets: &mut SocketSet<'_>,
        request: &[u8],
        reply: &mut [u8],
        now: Instant,
    ) -> Result<Option<usize>, ClientError> {
        let UdpClientState::Awaiting { tries, sent_at } = self.state else {
            return match self.state {
                UdpClientState::Answered { .. } => Err(ClientError::InvalidState),
                UdpClientState::GaveUp => Err(ClientError::NoReply {
                    tries: self.max_tries,
                }),
                _ => Err(ClientError::InvalidState),
            };
        };
        let socket = sockets.get_mut::<udp::Socket>(self.handle);
        while let Ok((payload, meta)) = socket.recv() {
            if meta.endpoint == self.server && is_reply_to(payload, request) {
                if let Some(out) = reply.get_mut(..payload.len()) {
                    out.copy_from_slice(payload);
                    self.state = UdpClientState::Answered { tries };
                    return Ok(Some(payload.len()));
                }
                return Err(ClientError::RequestTooLarge {
                    len: payload.len(),
                    capacity: reply.len(),
                });
            }
            self.skipped += 1;
            log::debug!(
                "udp: skipped a {}-byte datagram from {} that is not the reply awaited",
                payload.len(),
                written(meta.endpoint)
            );
        }
        if now >= sent_at + self.timeout {
            if tries >= self.max_tries {
                self.state = UdpClientState::GaveUp;
                return Err(ClientError::NoReply { tries });
            }
            log::info!(
                "udp: no reply from {} yet, sending again (try {})",
                self.server,
                tries + 1
            );
            self.send(sockets, request)?;
            self.state = UdpClientState::Awaiting {
                tries: tries + 1,
                sent_at: now,
            };
        }
        Ok(None)
    }

    /// When the client must be polled even if no packet arrives (the next retry or the final timeout).
    pub fn poll_at(&self) -> Option<Instant> {
        match self.state {
            UdpClientState::Awaiting { sent_at, .. } => Some(sent_at + self.timeout),
            _ => None,
        }
    }

    fn send(&mut self, sockets: &mut SocketSet<'_>, request: &[u8]) -> Result<(), ClientError> {
        let socket = sockets.get_mut::<udp::Socket>(self.handle);
        let capacity = socket.payload_send_capacity();
        if request.len() > capacity {
            return Err(ClientError::RequestTooLarge {
                len: request.len(),
                capacity,
            });
        }
        match socket.send_slice(request, self.server) {
            Ok(()) => Ok(()),
            // Full for now: the interface drains it on the next poll; the retry timer covers the loss.
            Err(udp::SendError::BufferFull) => {
                log::debug!("udp: send buffer full, request waits for the next try");
                Ok(())
            }
            Err(udp::SendError::Unaddressable) => Err(ClientError::Unaddressable),
        }
    }
}

/// Whether `reply` is the uppercase form of `request`.
pub fn is_reply_to(reply: &[u8], request: &[u8]) -> bool {
    reply.len() == request.len()
        && reply
            .iter()
            .zip(request)
            .all(|(r, q)| *r == uppercase_byte(*q))
}
