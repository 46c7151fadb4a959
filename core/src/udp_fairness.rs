//! Which requests of a batch a UDP server answers: all of them while it keeps up, one per sender while it is
//! behind, so that a flood from a few senders cannot starve the others.
//!
//! A UDP server that falls behind does not choose whom it loses: the kernel drops whatever arrives while the
//! socket's receive queue is full, and under a flood that is mostly everyone else's requests. A server that reads
//! its requests in batches knows it is behind when a batch fills up before the queue is empty. Then each sender
//! gets one answer per batch and its other requests in the batch are dropped unanswered: reading a request costs
//! far less than answering it, so the server drains the queue faster than a flood fills it, and a sender with one
//! request in the batch (a normal client) is answered as before. Once the server keeps up, every request is
//! answered again.

/// Requests a server reads (at most) before it answers them.
pub const UDP_BATCH: usize = 64;

/// Decides for each request of a batch, from its sender, whether it is answered: all of them unless `behind`
/// (the batch filled up before the receive queue was empty), else only each sender's first. `answer` gets one
/// decision per sender (it must be at least as long as `senders`; extra entries are left alone). Returns how
/// many requests are dropped.
pub fn plan_answers<E: PartialEq>(senders: &[E], behind: bool, answer: &mut [bool]) -> usize {
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

    #[test]
    fn every_request_is_answered_while_the_server_keeps_up() {
        let mut answer = [false; 4];
        assert_eq!(plan_answers(&[1, 1, 1, 2], false, &mut answer), 0);
        assert_eq!(answer, [true; 4]);
    }

    #[test]
    fn behind_each_sender_gets_its_first_request_answered() {
        let senders = [7, 7, 3, 7, 9, 3, 7];
        let mut answer = [false; 8];
        assert_eq!(plan_answers(&senders, true, &mut answer), 4);
        assert_eq!(
            answer,
            [true, false, true, false, true, false, false, false]
        );
    }

    #[test]
    fn a_short_decision_buffer_decides_what_fits() {
        let mut answer = [false; 2];
        assert_eq!(plan_answers(&[1, 1, 1], true, &mut answer), 1);
        assert_eq!(answer, [true, false]);
    }
}
