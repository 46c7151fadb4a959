//! The uppercase service on a byte-stream connection whose socket the driver owns (the kernel stack's event
//! loop and its thread-per-client design, or any other driver): [`UppercaseSession`], what one client is owed and
//! when it is over, and [`ConnectionLimit`] with [`Refusals`], how many clients are served at once and how a
//! refusal is reported. Sans I/O: the driver reads, writes and closes, tells the session what happened, and does
//! what [`UppercaseSession::next`] says. (smoltcp's own design, [`crate::UppercaseTcpServer`], keeps this state in
//! smoltcp's sockets instead.)
//!
//! ```text
//!             bytes read (uppercased in place)                 every owed byte written
//!  Reading ─────────────────────────────────────▶ Answering ───────────────────────────▶ Reading
//!     │ end of stream (nothing is read, so no end is seen, while bytes are owed)
//!     ▼
//!  Finishing ──── our FIN ────▶ Ended(Closed)
//!  any state: a socket error ──▶ Ended(Reset); nothing moved for the idle timeout ──▶ Ended(IdleTimeout)
//! ```
//!
//! Flow control: the session asks for a read only when nothing is owed, so a driver holds at most one read's
//! worth of replies per client. A client that never reads its replies fills its socket buffers and then waits,
//! as TCP's own flow control makes it: the server reads nothing more from it until its replies are taken.

use core::fmt;
use core::sync::atomic::{AtomicUsize, Ordering};

use smoltcp::time::{Duration, Instant};

use crate::uppercase::uppercase_in_place;

/// Where a session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// Nothing is owed: the next bytes from the client are read.
    Reading,
    /// `owed` uppercased bytes (the end of what the driver read last) are still to be written; nothing more is
    /// read until they are.
    Answering {
        /// Bytes still to be written.
        owed: usize,
    },
    /// The client closed its side and every byte it sent was answered: the server closes its own. (Nothing is
    /// read while bytes are owed, so the end of stream is only ever seen with nothing owed.)
    Finishing,
    /// The connection is over.
    Ended(SessionEnd),
}

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEnd {
    /// The client closed its side, every byte was answered and the server closed its own.
    Closed,
    /// Nothing moved either way for the idle timeout: the client sent nothing, or took none of its replies.
    IdleTimeout,
    /// The socket failed (a reset, or the kernel gave up on the peer).
    Reset,
    /// The driver reported something the session's state does not allow (a bug, logged at error level).
    Bug,
}

impl fmt::Display for SessionEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SessionEnd::Closed => "closed",
            SessionEnd::IdleTimeout => "closed after the idle timeout",
            SessionEnd::Reset => "reset",
            SessionEnd::Bug => "closed by an internal error",
        })
    }
}

/// What the driver does next for a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Read from the client (into a buffer of any size) and pass what came to [`UppercaseSession::received`],
    /// or the end of stream to [`UppercaseSession::end_of_stream`].
    Read,
    /// Write the last `owed` bytes of what was read (uppercased) and pass the count to
    /// [`UppercaseSession::wrote`].
    Write {
        /// Bytes still to be written.
        owed: usize,
    },
    /// Close the server's side (a FIN) and call [`UppercaseSession::closed_write`].
    CloseWrite,
    /// Close the connection: it ended so.
    Close(SessionEnd),
}

/// Something the driver saw, as [`UppercaseSession`] takes it (one `match` makes every transition).
#[derive(Debug, Clone, Copy)]
enum Event {
    Received(usize),
    EndOfStream,
    Wrote(usize),
    ClosedWrite,
    Failed,
    Idle,
}

/// One client of the uppercase service on a byte stream.
#[derive(Debug, Clone)]
pub struct UppercaseSession {
    state: SessionState,
    /// When a byte last moved either way (or the session began).
    last_progress: Instant,
    answered: u64,
}

impl UppercaseSession {
    /// A session for a client accepted at `now`.
    pub fn new(now: Instant) -> UppercaseSession {
        UppercaseSession {
            state: SessionState::Reading,
            last_progress: now,
            answered: 0,
        }
    }

    /// Where the session is.
    pub fn state(&self) -> SessionState {
        self.state
    }

    /// Bytes written back so far.
    pub fn answered(&self) -> u64 {
        self.answered
    }

    /// What the driver does next.
    pub fn next(&self) -> Next {
        match self.state {
            SessionState::Reading => Next::Read,
            SessionState::Answering { owed } => Next::Write { owed },
            SessionState::Finishing => Next::CloseWrite,
            SessionState::Ended(end) => Next::Close(end),
        }
    }

    /// The driver read `bytes` (at least one) from the client: they are uppercased in place, and owed back.
    pub fn received(&mut self, bytes: &mut [u8], now: Instant) {
        if matches!(self.state, SessionState::Reading) {
            uppercase_in_place(bytes);
        }
        self.on(Event::Received(bytes.len()), now);
    }

    /// The client closed its side (a read returned the end of stream).
    pub fn end_of_stream(&mut self, now: Instant) {
        self.on(Event::EndOfStream, now);
    }

    /// The driver wrote `n` of the owed bytes (the first `n` of the last `owed`).
    pub fn wrote(&mut self, n: usize, now: Instant) {
        self.on(Event::Wrote(n), now);
    }

    /// The driver closed the server's side, as [`Next::CloseWrite`] asked.
    pub fn closed_write(&mut self, now: Instant) {
        self.on(Event::ClosedWrite, now);
    }

    /// A read or write on the socket failed.
    pub fn failed(&mut self, now: Instant) {
        self.on(Event::Failed, now);
    }

    /// When the session ends for idleness if nothing moves before (`None` once it has ended).
    pub fn deadline(&self, idle_timeout: Duration) -> Option<Instant> {
        match self.state {
            SessionState::Ended(_) => None,
            _ => Some(self.last_progress + idle_timeout),
        }
    }

    /// Ends the session if nothing moved for `idle_timeout` up to `now`; returns whether it did.
    pub fn expire(&mut self, now: Instant, idle_timeout: Duration) -> bool {
        let due = self.deadline(idle_timeout).is_some_and(|at| now >= at);
        if due {
            self.on(Event::Idle, now);
        }
        due
    }

    /// Every transition.
    fn on(&mut self, event: Event, now: Instant) {
        use SessionState::*;
        let next = match (self.state, event) {
            (Ended(end), _) => Ended(end),
            (_, Event::Failed) => Ended(SessionEnd::Reset),
            (_, Event::Idle) => Ended(SessionEnd::IdleTimeout),
            (Reading, Event::Received(n)) if n > 0 => Answering { owed: n },
            (Reading, Event::EndOfStream) => Finishing,
            (Answering { owed }, Event::Wrote(n)) if n <= owed => match owed - n {
                0 => Reading,
                owed => Answering { owed },
            },
            (Finishing, Event::ClosedWrite) => Ended(SessionEnd::Closed),
            (state, event) => {
                log::error!("uppercase session: {event:?} in {state:?} (a bug in the driver)");
                Ended(SessionEnd::Bug)
            }
        };
        let moved = match event {
            Event::Received(n) | Event::Wrote(n) => n > 0,
            Event::EndOfStream | Event::ClosedWrite => true,
            Event::Failed | Event::Idle => false,
        };
        if moved {
            self.last_progress = now;
        }
        if let Event::Wrote(n) = event {
            self.answered += n as u64;
        }
        self.state = next;
    }
}

/// How many clients are served at once, shared by every worker of a server (`--max-connections`): a client is
/// admitted only while fewer than the maximum are open, and gives its place back when it ends.
#[derive(Debug)]
pub struct ConnectionLimit {
    max: usize,
    open: AtomicUsize,
}

impl ConnectionLimit {
    /// A limit of `max` clients at once (at least one).
    pub const fn new(max: usize) -> ConnectionLimit {
        ConnectionLimit {
            max: if max == 0 { 1 } else { max },
            open: AtomicUsize::new(0),
        }
    }

    /// The most clients served at once.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Clients served now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Takes a place for a new client; `false` (and nothing taken) if every place is taken.
    pub fn admit(&self) -> bool {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < self.max).then_some(open + 1)
            })
            .is_ok()
    }

    /// Gives back the place of a client that ended.
    pub fn release(&self) {
        let released = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                open.checked_sub(1)
            });
        if released.is_err() {
            log::error!("connection limit: a place was given back that was never taken (a bug)");
        }
    }
}

/// A report of clients refused over the limit: the first refusal at once, then at most one report per
/// [`Refusals`] window, counting the ones in between, so a flood of clients cannot flood the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefusalReport {
    /// Clients refused since the last report (the first report: 1).
    pub refused: u64,
    /// Over how long (zero for the first).
    pub over: Duration,
    /// Clients refused since the server started.
    pub total: u64,
}

/// Counts refusals and says when to report them (see [`RefusalReport`]).
#[derive(Debug, Clone)]
pub struct Refusals {
    window: Duration,
    /// When the last report was made, if any.
    reported_at: Option<Instant>,
    unreported: u64,
    total: u64,
}

impl Refusals {
    /// At most one report per `window`.
    pub const fn new(window: Duration) -> Refusals {
        Refusals {
            window,
            reported_at: None,
            unreported: 0,
            total: 0,
        }
    }

    /// Clients refused so far.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// A client was refused at `now`: a report if one is due.
    pub fn refused(&mut self, now: Instant) -> Option<RefusalReport> {
        self.total += 1;
        self.unreported += 1;
        self.due(now)
    }

    /// When the refusals not yet reported are due to be (`None`: there are none, or they are due now).
    pub fn next_report_at(&self) -> Option<Instant> {
        match (self.unreported, self.reported_at) {
            (0, _) | (_, None) => None,
            (_, Some(at)) => Some(at + self.window),
        }
    }

    /// The report of refusals not yet reported, once the window since the last report has passed (a driver
    /// calls this at [`Refusals::next_report_at`], so the tail of a burst is reported on time).
    pub fn due(&mut self, now: Instant) -> Option<RefusalReport> {
        if self.unreported == 0 {
            return None;
        }
        let over = match self.reported_at {
            None => Duration::ZERO,
            Some(at) if now >= at + self.window => now - at,
            Some(_) => return None,
        };
        let report = RefusalReport {
            refused: self.unreported,
            over,
            total: self.total,
        };
        self.unreported = 0;
        self.reported_at = Some(now);
        Some(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Instant {
        Instant::from_millis(ms as i64)
    }

    const IDLE: Duration = Duration::from_secs(10);

    #[test]
    fn bytes_are_answered_uppercased_and_nothing_more_is_read_until_they_are() {
        let mut session = UppercaseSession::new(at(0));
        assert_eq!(session.next(), Next::Read);
        let mut bytes = *b"hello, World \xe4";
        session.received(&mut bytes, at(1));
        assert_eq!(&bytes, b"HELLO, WORLD \xe4");
        assert_eq!(session.next(), Next::Write { owed: 14 });
        session.wrote(10, at(2));
        assert_eq!(session.next(), Next::Write { owed: 4 });
        session.wrote(0, at(3));
        assert_eq!(session.next(), Next::Write { owed: 4 });
        session.wrote(4, at(4));
        assert_eq!(session.next(), Next::Read);
        assert_eq!(session.answered(), 14);
    }

    #[test]
    fn the_end_of_stream_closes_after_every_owed_byte() {
        let mut session = UppercaseSession::new(at(0));
        session.received(&mut [b'a'; 3], at(1));
        session.end_of_stream(at(2));
        // Nothing is read while bytes are owed, so the end of stream cannot be seen before they are written:
        // a driver that reports it anyway has a bug.
        assert_eq!(session.next(), Next::Close(SessionEnd::Bug));

        let mut session = UppercaseSession::new(at(0));
        session.received(&mut [b'a'; 3], at(1));
        session.wrote(3, at(2));
        session.end_of_stream(at(3));
        assert_eq!(session.next(), Next::CloseWrite);
        session.closed_write(at(4));
        assert_eq!(session.next(), Next::Close(SessionEnd::Closed));
        assert_eq!(session.deadline(IDLE), None);
    }

    #[test]
    fn idleness_counts_from_the_last_byte_moved_either_way() {
        let mut session = UppercaseSession::new(at(0));
        assert_eq!(session.deadline(IDLE), Some(at(10_000)));
        session.received(&mut [b'x'; 2], at(5_000));
        assert_eq!(session.deadline(IDLE), Some(at(15_000)));
        // A client that takes none of its replies is idle too.
        session.wrote(0, at(9_000));
        assert!(!session.expire(at(14_999), IDLE));
        assert!(session.expire(at(15_000), IDLE));
        assert_eq!(session.next(), Next::Close(SessionEnd::IdleTimeout));
        // Once ended, nothing changes it.
        session.wrote(2, at(15_001));
        assert_eq!(
            session.state(),
            SessionState::Ended(SessionEnd::IdleTimeout)
        );
    }

    #[test]
    fn a_failure_ends_the_session_as_a_reset_and_a_wrong_report_as_a_bug() {
        let mut session = UppercaseSession::new(at(0));
        session.failed(at(1));
        assert_eq!(session.next(), Next::Close(SessionEnd::Reset));

        let mut session = UppercaseSession::new(at(0));
        session.wrote(1, at(1));
        assert_eq!(session.next(), Next::Close(SessionEnd::Bug));

        let mut session = UppercaseSession::new(at(0));
        session.received(&mut [b'a'; 2], at(1));
        session.wrote(3, at(2));
        assert_eq!(session.next(), Next::Close(SessionEnd::Bug));
    }

    #[test]
    fn the_limit_admits_up_to_its_maximum_and_takes_places_back() {
        let limit = ConnectionLimit::new(2);
        assert!(limit.admit());
        assert!(limit.admit());
        assert!(!limit.admit());
        assert_eq!(limit.open(), 2);
        limit.release();
        assert!(limit.admit());
        limit.release();
        limit.release();
        // A release too many is a logged bug and leaves the count at zero.
        limit.release();
        assert_eq!(limit.open(), 0);
        assert_eq!(ConnectionLimit::new(0).max(), 1);
    }

    #[test]
    fn refusals_are_reported_at_once_then_once_a_window() {
        let mut refusals = Refusals::new(Duration::from_secs(1));
        let first = refusals.refused(at(100));
        assert_eq!(
            first,
            Some(RefusalReport {
                refused: 1,
                over: Duration::ZERO,
                total: 1
            })
        );
        for ms in 101..600 {
            assert_eq!(refusals.refused(at(ms)), None);
        }
        assert_eq!(refusals.due(at(1_000)), None);
        assert_eq!(refusals.next_report_at(), Some(at(1_100)));
        assert_eq!(
            refusals.due(at(1_100)),
            Some(RefusalReport {
                refused: 499,
                over: Duration::from_secs(1),
                total: 500
            })
        );
        assert_eq!(refusals.due(at(5_000)), None);
        assert_eq!(refusals.next_report_at(), None);
        assert_eq!(refusals.refused(at(5_000)).map(|r| r.refused), Some(1));
        assert_eq!(refusals.total(), 501);
    }
}
