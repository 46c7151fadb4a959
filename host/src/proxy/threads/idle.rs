//! [`IdleSessions`]: which client threads are idle between requests, so that the acceptor can reclaim the one
//! idle longest when every place under the cap is taken (the engine decides which and says so; this only finds
//! the threads and wakes the chosen one), and [`Place`], a thread's place under the cap.
//!
//! A thread idle between requests blocks in a read of its client. It registers itself (when its engine went
//! idle, and a handle on its socket) before that read and takes itself off after. To reclaim it, the acceptor
//! gives its place back at once and shuts its socket's reading side, which ends the read; the thread then asks
//! its engine to [`reclaim`](smoltalk_core::proxy::ProxyConnection::reclaim) the connection (closed with a FIN,
//! as at a keep-alive timeout).

use std::collections::HashMap;
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use smoltalk_core::proxy::engine::longest_idle;
use smoltcp::time::Instant;

/// A client thread's place under the cap, given back once: when the thread ends, or earlier by the acceptor
/// when it reclaims the thread's idle connection.
#[derive(Debug)]
pub(super) struct Place(Share);

/// A handle on a place that can give it back (the thread's own, and the one the registry keeps while the thread
/// idles).
#[derive(Debug, Clone)]
struct Share {
    active: Arc<AtomicUsize>,
    given_back: Arc<AtomicBool>,
}

impl Share {
    /// Gives the place back, if it has not been already.
    fn give_back(&self) {
        if !self.given_back.swap(true, Ordering::AcqRel) {
            self.active.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Place {
    /// Takes a place: returns it and how many were taken before.
    pub(super) fn take(active: &Arc<AtomicUsize>) -> (Place, usize) {
        let before = active.fetch_add(1, Ordering::AcqRel);
        let place = Place(Share {
            active: Arc::clone(active),
            given_back: Arc::new(AtomicBool::new(false)),
        });
        (place, before)
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.0.give_back();
    }
}

/// A thread idle between requests.
#[derive(Debug)]
struct Idle {
    since: Instant,
    client: TcpStream,
    place: Share,
}

/// The client threads idle between requests, by their id.
#[derive(Debug, Default)]
pub(super) struct IdleSessions {
    idle: Mutex<HashMap<u64, Idle>>,
}

impl IdleSessions {
    /// Thread `id`, whose engine went idle `since`, is about to wait for its client's next request on `client`;
    /// `place` is its place under the cap.
    pub(super) fn register(&self, id: u64, since: Instant, client: &TcpStream, place: &Place) {
        let Ok(client) = client.try_clone() else {
            // Without a second handle the thread cannot be woken: it is simply not reclaimable.
            return;
        };
        let place = place.0.clone();
        if let Ok(mut idle) = self.idle.lock() {
            idle.insert(
                id,
                Idle {
                    since,
                    client,
                    place,
                },
            );
        }
    }

    /// Thread `id` is done waiting (its read returned). Returns whether the acceptor reclaimed it meanwhile.
    pub(super) fn unregister(&self, id: u64) -> bool {
        match self.idle.lock() {
            Ok(mut idle) => idle.remove(&id).is_none(),
            Err(_) => false,
        }
    }

    /// The cap is reached: the thread idle longest, if any, gives its place back and is woken to close its
    /// connection. Returns whether one was.
    pub(super) fn reclaim_longest(&self) -> bool {
        let Ok(mut idle) = self.idle.lock() else {
            return false;
        };
        let Some(id) = longest_idle(idle.iter().map(|(id, entry)| (*id, Some(entry.since)))) else {
            return false;
        };
        let Some(entry) = idle.remove(&id) else {
            return false;
        };
        entry.place.give_back();
        let _ = entry.client.shutdown(Shutdown::Read);
        true
    }
}
