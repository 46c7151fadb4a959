//! [`Outgoing`]: what a slot wrote (a rewritten head, a page) and a socket has not taken yet.

use smoltcp::iface::SocketSet;
use smoltcp::socket::tcp;

use super::slot::SlotSockets;

/// Which peer the bytes in a slot's buffer go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Peer {
    Client,
    Origin,
}

/// What the proxy wrote and a socket has not taken yet: `buf[sent..len]` goes to `to`.
#[derive(Debug)]
pub(super) struct Outgoing<const N: usize> {
    pub(super) buf: [u8; N],
    pub(super) len: usize,
    pub(super) sent: usize,
    pub(super) to: Peer,
}

impl<const N: usize> Outgoing<N> {
    /// `buf[..len]` is to go to `to` now.
    pub(super) fn send(&mut self, len: usize, to: Peer) {
        self.len = len.min(N);
        self.sent = 0;
        self.to = to;
    }

    /// `buf[..len]` is kept for `to`, to go once [`Outgoing::release`]d (a request head, until the origin
    /// connection is up; sent again on a retry).
    pub(super) fn hold(&mut self, len: usize, to: Peer) {
        self.send(len, to);
        self.sent = self.len;
    }

    pub(super) fn release(&mut self) {
        self.sent = 0;
    }

    pub(super) fn pending(&self) -> bool {
        self.sent < self.len
    }

    pub(super) fn pending_for(&self, peer: Peer) -> bool {
        self.pending() && self.to == peer
    }

    /// Sends what is left to its peer. Returns whether any byte went.
    pub(super) fn drain(&mut self, sockets: &mut SocketSet<'_>, slot: SlotSockets) -> bool {
        let handle = match self.to {
            Peer::Client => slot.client,
            Peer::Origin => slot.origin,
        };
        let pending = self.buf.get(self.sent..self.len).unwrap_or(&[]);
        match sockets.get_mut::<tcp::Socket>(handle).send_slice(pending) {
            Ok(n) => {
                self.sent += n;
                n > 0
            }
            Err(_) => false,
        }
    }
}
