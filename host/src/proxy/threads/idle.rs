//! [`IdleSessions`]: which client threads are idle between requests, so that the acceptor can reclaim the one
//! idle longest when every place under the cap is taken (the engine decides which and says so; this only finds
//! the threads and wakes the chosen one), and [`Place`], a thread's place under the cap.
//!
//! A thread registers once, with a second handle on its client socket, and then only marks itself idle (when
//! its engine went idle) or busy with an atomic store per request: no lock and no system call on the way. To
//! reclaim a thread, the acceptor marks it reclaimed (only if it is still idle since the same moment), gives its
//! place back at once and shuts its socket's reading side, which ends the thread's wait; the thread then asks its
//! engine to [`reclaim`](smoltalk_core::proxy::ProxyConnection::reclaim) the connection (closed with a FIN, as at
//! a keep-alive timeout).

use std::collections::HashMap;
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use smoltalk_core::proxy::engine::longest_idle;
use smoltcp::time::Instant;

/// A client thread's place under the cap, given back once: when the thread ends, or earlier by the acceptor
/// when it reclaims the thread's idle connection.
#[derive(Debug)]
pub(super) struct Place(Share);

/// A handle on a place that can give it back (the thread's own, and the registry's).
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

/// `Watched::idle_since` while the thread is not idle.
const BUSY: i64 = i64::MIN;
/// `Watched::idle_since` once the acceptor has reclaimed the thread.
const RECLAIMED: i64 = i64::MIN + 1;

/// What the registry knows of one thread.
#[derive(Debug)]
struct Watched {
    /// When its engine went idle (microseconds), or [`BUSY`], or [`RECLAIMED`].
    idle_since: AtomicI64,
    client: TcpStream,
    place: Share,
}

/// The client threads, for the acceptor to reclaim the one idle longest.
#[derive(Debug, Default)]
pub(super) struct IdleSessions {
    sessions: Mutex<HashMap<u64, Arc<Watched>>>,
}

impl IdleSessions {
    /// The cap is reached: the thread idle longest, if any, gives its place back and is woken to close its
    /// connection. Returns whether one was.
    pub(super) fn reclaim_longest(&self) -> bool {
        let Ok(sessions) = self.sessions.lock() else {
            return false;
        };
        // A thread that turns busy meanwhile keeps its connection: the mark below fails, and the next idle one
        // is tried.
        let mut passed = Vec::new();
        loop {
            let idle = sessions
                .iter()
                .filter(|(id, _)| !passed.contains(*id))
                .map(|(id, w)| (*id, since(w.idle_since.load(Ordering::Acquire))));
            let Some(id) = longest_idle(idle) else {
                return false;
            };
            passed.push(id);
            let Some(watched) = sessions.get(&id) else {
                continue;
            };
            let at = watched.idle_since.load(Ordering::Acquire);
            if at < 0
                || watched
                    .idle_since
                    .compare_exchange(at, RECLAIMED, Ordering::AcqRel, Ordering::Acquire)
                    .is_err()
            {
                continue;
            }
            watched.place.give_back();
            let _ = watched.client.shutdown(Shutdown::Read);
            return true;
        }
    }
}

/// The moment a stored `idle_since` stands for, if the thread is idle.
fn since(micros: i64) -> Option<Instant> {
    (micros >= 0).then(|| Instant::from_micros(micros))
}

/// A thread's entry in [`IdleSessions`], taken off when the thread ends.
pub(super) struct IdleWatch<'s> {
    sessions: &'s IdleSessions,
    id: u64,
    watched: Option<Arc<Watched>>,
}

impl<'s> IdleWatch<'s> {
    /// Registers thread `id` on `client` (a second handle on it, made once), whose place is `place`. Without a
    /// second handle the thread cannot be woken: it is then simply never reclaimed.
    pub(super) fn register(
        sessions: &'s IdleSessions,
        id: u64,
        client: &TcpStream,
        place: &Place,
    ) -> IdleWatch<'s> {
        let watched = client.try_clone().ok().map(|client| {
            Arc::new(Watched {
                idle_since: AtomicI64::new(BUSY),
                client,
                place: place.0.clone(),
            })
        });
        if let (Some(watched), Ok(mut all)) = (&watched, sessions.sessions.lock()) {
            all.insert(id, Arc::clone(watched));
        }
        IdleWatch {
            sessions,
            id,
            watched,
        }
    }

    /// The thread waits for its client's next request; its engine went idle `since`.
    pub(super) fn idle(&self, since: Instant) {
        if let Some(watched) = &self.watched {
            let _ = watched.idle_since.compare_exchange(
                BUSY,
                since.total_micros().max(0),
                Ordering::AcqRel,
                Ordering::Acquire,
            );
        }
    }

    /// The wait is over. Returns whether the acceptor reclaimed the thread meanwhile (once: it stays so).
    pub(super) fn busy(&self) -> bool {
        self.watched.as_ref().is_some_and(|watched| {
            let was = watched.idle_since.load(Ordering::Acquire);
            was == RECLAIMED
                || watched
                    .idle_since
                    .compare_exchange(was, BUSY, Ordering::AcqRel, Ordering::Acquire)
                    .is_err_and(|now| now == RECLAIMED)
        })
    }
}

impl Drop for IdleWatch<'_> {
    fn drop(&mut self) {
        if let Ok(mut all) = self.sessions.sessions.lock() {
            all.remove(&self.id);
        }
    }
}
