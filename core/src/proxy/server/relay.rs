//! Moving bytes between smoltcp sockets: what only this design does (the engine decides where a body ends; the
//! bytes themselves go socket to socket through the host's scratch buffer).

use smoltcp::iface::{SocketHandle, SocketSet};
use smoltcp::socket::tcp;

use crate::http::body::{BadChunk, BodyTracker};

/// Whether the peer of `socket` has sent its FIN (or reset) and every byte before it has been taken off the
/// socket.
pub fn finished_sending(socket: &tcp::Socket<'_>) -> bool {
    !socket.may_recv() && socket.recv_queue() == 0
}

/// Whether the peer of `socket` has sent its FIN (or reset), whatever is still in the receive buffer. (smoltcp's
/// `may_recv` stays true while bytes wait there; a head, peeked at until it is whole, would keep it true.)
pub fn peer_finished(socket: &tcp::Socket<'_>) -> bool {
    !matches!(
        socket.state(),
        tcp::State::Listen
            | tcp::State::SynSent
            | tcp::State::SynReceived
            | tcp::State::Established
            | tcp::State::FinWait1
            | tcp::State::FinWait2
    )
}

/// Whether `socket`'s connection was reset (or given up on) rather than closed: a socket that never went
/// through a graceful close and is closed now.
pub fn was_reset(socket: &tcp::Socket<'_>) -> bool {
    socket.state() == tcp::State::Closed
}

/// Whether the peer of a closed `socket` had sent its FIN before the connection was reset: a peer that closes
/// and then resets because more bytes came (an origin that answered before the upload was over) ended its
/// stream cleanly. smoltcp keeps the FIN through the reset and reports it as `RecvError::Finished`; the FIN and
/// the reset may be taken in by the same poll, before the proxy looks at the socket between them.
pub fn finished_before_reset(socket: &mut tcp::Socket<'_>) -> bool {
    matches!(socket.recv_slice(&mut []), Err(tcp::RecvError::Finished))
}

/// Copies bytes from `from` to `to` through `scratch`, never more than `to` has room for and, with a tracker,
/// never past the body's end. Returns how many bytes moved.
pub fn relay(
    sockets: &mut SocketSet<'_>,
    from: SocketHandle,
    to: SocketHandle,
    mut body: Option<&mut BodyTracker>,
    scratch: &mut [u8],
) -> Result<usize, BadChunk> {
    let mut total = 0;
    loop {
        if body.as_ref().is_some_and(|b| b.is_done()) {
            return Ok(total);
        }
        let room = {
            let to = sockets.get_mut::<tcp::Socket>(to);
            if !to.may_send() {
                return Ok(total);
            }
            to.send_capacity() - to.send_queue()
        };
        let limit = body.as_ref().map_or(usize::MAX, |b| b.limit());
        let want = room.min(scratch.len()).min(limit);
        if want == 0 {
            return Ok(total);
        }
        let window = scratch.get_mut(..want).unwrap_or(&mut []);
        let from_socket = sockets.get_mut::<tcp::Socket>(from);
        let peeked = from_socket.peek_slice(window).unwrap_or(0);
        if peeked == 0 {
            return Ok(total);
        }
        let n = match body.as_mut() {
            Some(tracker) => tracker.advance(window.get(..peeked).unwrap_or(&[]))?,
            None => peeked,
        };
        discard(from_socket, n);
        // Fits: `want` was at most the room in `to`.
        let _ = sockets
            .get_mut::<tcp::Socket>(to)
            .send_slice(window.get(..n).unwrap_or(&[]));
        total += n;
        if n < peeked {
            return Ok(total);
        }
    }
}

/// Takes `n` bytes off a socket's receive buffer (they were already copied with `peek_slice`).
pub fn discard(socket: &mut tcp::Socket<'_>, mut n: usize) {
    while n > 0 {
        match socket.recv(|b| {
            let k = b.len().min(n);
            (k, k)
        }) {
            Ok(0) | Err(_) => return,
            Ok(k) => n -= k,
        }
    }
}

/// Drops whatever the peer sent, so its FIN (and anything it still sends) is acknowledged.
pub fn drop_received(socket: &mut tcp::Socket<'_>) {
    while let Ok(1..) = socket.recv(|b| (b.len(), b.len())) {}
}

/// The first port of the dynamic range (RFC 6335 §6, 49152–65535), where connections to origins take their
/// local ports.
const FIRST_DYNAMIC_PORT: u16 = 49152;

/// The port of the dynamic range that `seed` falls on: where a pool starts (a fixed start would collide with an
/// origin's TIME-WAIT from an earlier run).
pub fn dynamic_port(seed: u16) -> u16 {
    FIRST_DYNAMIC_PORT + seed % (u16::MAX - FIRST_DYNAMIC_PORT + 1)
}

/// The next local port for a connection to an origin, cycling through the dynamic range.
pub fn next_ephemeral(next: &mut u16) -> u16 {
    let port = (*next).max(FIRST_DYNAMIC_PORT);
    *next = port.checked_add(1).unwrap_or(FIRST_DYNAMIC_PORT);
    port
}
