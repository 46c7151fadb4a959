//! Which requests of a batch a UDP server answers: all of them while it keeps up, one per sender while it is
//! behind, so that a flood from a few senders cannot starve the others.
//!
//! A UDP server that falls behind does not choose whom it loses: the kernel drops whatever arrives while the
//! socket's receive queue is full, and under a flood that is mostly everyone else's requests. A server that reads
//! its requests in batches is behind ([`Backlog::is_behind`]) when a batch filled up before the queue was empty and
//! the queue is still at least half full, so that the kernel is about to drop. Then, if the batch has more than
//! one sender, each sender gets one answer per batch and its other requests in the batch are dropped unanswered:
//! reading a request costs far less than answering it, so the server drains the queue faster than a flood fills
//! it, and a sender with one request in the batch (a normal client) is answered as before. A batch from one
//! sender alone is answered whole (there is nobody to protect: a client that sends a burst gets every reply the
//! kernel let through). Once the server keeps up, every request is answered again.

/// Requests a server reads (at most) before it answers them.
pub const UDP_BATCH: usize = 64;

/// What a server saw of its receive queue when it read a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backlog {
    /// The batch filled up ([`UDP_BATCH`] requests) before the queue ran dry.
    pub batch_full: bool,
    /// Bytes still queued after the batch was read (the kernel's count, with its overhead per datagram).
    pub queued: usize,
    /// The most the queue holds before the kernel drops (the socket's receive buffer, counted the same way).
    pub capacity: usize,
}

impl Backlog {
    /// A backlog with nothing left behind the batch.
    pub const KEEPING_UP: Backlog = Backlog {
        batch_full: false,
        queued: 0,
        capacity: 0,
    };

    /// Whether the server is behind: the batch filled up and the queue is at least half full.
    pub fn is_behind(&self) -> bool {
        self.batch_full && self.queued.saturating_mul(2) >= self.capacity
    }
}

/// Decides for each request of a batch, from its sender, whether it is answered: all of them unless the server
/// is behind ([`Backlog::is_behind`]) and the batch has more than one sender, else only each sender's first.
/// `answer` gets one decision per sender (it must be at least as long as `senders`; extra entries are left
/// alone). Returns how many requests are dropped.
pub fn plan_answers<E: PartialEq>(senders: &[E], backlog: Backlog, answer: &mut [bool]) -> usize {
    let one_sender = senders.windows(2).all(|pair| pair.first() == pair.get(1));
    let behind = backlog.is_behind() && !one_sender;
    let mut dropped = 0;
    for (i, (sender, decision)) in senders.iter().zip(answer.iter_mut()).enumerate() {
        let earlier = senders.get(..i).unwrap_or(&[]);
        *decision = !behind || !earlier.contains(sender);
        if !*decision {
            dropped += 1;
        }
    }
    dropped
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEHIND: Backlog = Backlog {
        batch_full: true,
        queued: 100_000,
        capacity: 200_000,
    };

    #[test]
    fn behind_means_a_full_batch_and_a_queue_at_least_half_full() {
        assert!(BEHIND.is_behind());
        let not_full = Backlog {
            batch_full: false,
            ..BEHIND
        };
        assert!(!not_full.is_behind());
        let short_queue = Backlog {
            queued: 99_999,
            ..BEHIND
        };
        assert!(!short_queue.is_behind());
        assert!(!Backlog::KEEPING_UP.is_behind());
    }

    #[test]
    fn every_request_is_answered_while_the_server_keeps_up() {
        let mut answer = [false; 4];
        assert_eq!(
            plan_answers(&[1, 1, 1, 2], Backlog::KEEPING_UP, &mut answer),
            0
        );
        assert_eq!(answer, [true; 4]);
    }

    #[test]
    fn behind_each_sender_gets_its_first_request_answered() {
        let senders = [7, 7, 3, 7, 9, 3, 7];
        let mut answer = [false; 8];
        assert_eq!(plan_answers(&senders, BEHIND, &mut answer), 4);
        assert_eq!(
            answer,
            [true, false, true, false, true, false, false, false]
        );
    }

    #[test]
    fn a_batch_from_one_sender_is_answered_whole_even_behind() {
        let mut answer = [false; UDP_BATCH];
        assert_eq!(plan_answers(&[5; UDP_BATCH], BEHIND, &mut answer), 0);
        assert_eq!(answer, [true; UDP_BATCH]);
    }

    #[test]
    fn a_short_decision_buffer_decides_what_fits() {
        let mut answer = [false; 2];
        assert_eq!(plan_answers(&[1, 1, 2], BEHIND, &mut answer), 1);
        assert_eq!(answer, [true, false]);
    }
}
