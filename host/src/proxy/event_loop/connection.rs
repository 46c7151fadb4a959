//! [`Connection`]: one client of the event loop. Its [`ProxyConnection`] decides; this moves bytes between two
//! non-blocking sockets and reports what happened:
//!
//! ```text
//!  Serving(ProxyConnection) ──Answer/Close──▶ Answering (the page, what is queued) ──FIN──▶ Draining ──▶ closed
//!          (admitted)          └──── resets ──────────────────────────────────────────────────────────▶ closed
//!  refused at the accept ──▶ Answering
//!  reclaimed while idle between requests (the pool full) ──▶ Answering (nothing queued: just the FIN)
//! ```
//!
//! Draining reads and drops what the client still sends, as the core's [`Drain`] says: until it closes, while
//! it keeps sending, no longer than the linger time.
//!
//! A client costs its socket and the bytes in flight: heads accumulate per connection (at most the head limit),
//! bodies move through one scratch buffer, and only what a socket would not take at once is kept. A socket is
//! read only when what was read from it before has gone on, so a slow reader slows its writer down through TCP's
//! flow control. A long counted response body goes origin → pipe → client with `splice`.

use std::io::{self, Read};
use std::net::Shutdown;

use mio::net::TcpStream;
use mio::Registry;
use smoltalk_core::proxy::engine::{Ending, Phase, ProxyConnection};
use smoltalk_core::proxy::Drain;
use smoltcp::time::Instant;

use super::super::lookup::LookupResult;
use super::io::{Outgoing, SplicePipe};
use super::step::Step;
use super::Env;
use crate::sys;

/// An origin connection.
pub(super) struct Upstream {
    pub(super) stream: TcpStream,
    pub(super) connected: bool,
    /// The origin has closed its side (or a response showed the connection cannot be reused).
    pub(super) eof: bool,
    /// A write to it failed: nothing more goes to it (what it answered is still read).
    pub(super) write_closed: bool,
    /// That write met the connection's failure (a reset) before the origin had finished sending. Linux tells a
    /// failure once, to the call that meets it: the reads after it see a plain end, which must not pass for the
    /// origin's close.
    pub(super) reset_seen: bool,
}

/// Where a client connection is, around its engine.
enum Stage {
    /// The engine drives it (boxed: refused and closing connections, often the many, stay small).
    Serving(Box<ProxyConnection>),
    /// The proxy's own answer is going out; then its sending side closes.
    Answering { deadline: Instant },
    /// Our side is closed; what the client still sends is read and dropped until it closes too, or as long as
    /// the drain's rule says.
    Draining(Drain),
}

/// How a step went.
pub(super) enum Flow {
    /// Whether anything moved (then another step may).
    Moved(bool),
    /// The connection ends so.
    End(Ending),
    /// Closed: the loop drops it.
    Done,
}

/// One client connection: its stage, its sockets, and what is in flight between them.
pub(super) struct Connection {
    pub client: TcpStream,
    /// Answered at the accept (403, 503), or reclaimed while idle: closing, and not counted against the cap.
    pub uncounted: bool,
    pub generation: u64,
    slot: usize,
    stage: Stage,
    io: Streams,
    /// The ending of a connection reclaimed while idle, for the next drive to carry out.
    reclaimed: Option<Ending>,
}

/// Everything a connection moves bytes with.
pub(super) struct Streams {
    /// Client bytes not used yet (a head arriving, or the next pipelined request).
    pub(super) from_client: Vec<u8>,
    pub(super) client_eof: bool,
    /// Origin bytes not used yet (a response head arriving).
    pub(super) from_origin: Vec<u8>,
    pub(super) to_client: Outgoing,
    pub(super) to_origin: Outgoing,
    /// The request head for the origin, kept to send again on a retry.
    pub(super) request_head: Vec<u8>,
    /// Whether the request head has gone to the origin whole (its response can only follow it).
    pub(super) head_sent: bool,
    pub(super) upstream: Option<Upstream>,
    /// A lookup's answer, handed over by the loop.
    pub(super) lookup: Option<LookupResult>,
    /// The pipe a long response body is spliced through, while it is.
    pub(super) pipe: Option<SplicePipe>,
}

impl Connection {
    /// An admitted client, or (`page`) one refused at the accept whose answer goes out first.
    pub fn new(
        client: TcpStream,
        slot: usize,
        generation: u64,
        engine: Result<ProxyConnection, (&[u8], Instant)>,
    ) -> Connection {
        let mut io = Streams {
            from_client: Vec::new(),
            client_eof: false,
            from_origin: Vec::new(),
            to_client: Outgoing::default(),
            to_origin: Outgoing::default(),
            request_head: Vec::new(),
            head_sent: false,
            upstream: None,
            lookup: None,
            pipe: None,
        };
        let (stage, uncounted) = match engine {
            Ok(engine) => (Stage::Serving(Box::new(engine)), false),
            Err((page, deadline)) => {
                io.to_client.push(page);
                (Stage::Answering { deadline }, true)
            }
        };
        Connection {
            client,
            uncounted,
            generation,
            slot,
            stage,
            io,
            reclaimed: None,
        }
    }

    /// When the loop must drive this connection even without an event.
    pub fn deadline(&self) -> Option<Instant> {
        match &self.stage {
            Stage::Serving(engine) => engine.deadline(),
            Stage::Answering { deadline } => Some(*deadline),
            Stage::Draining(drain) => Some(drain.deadline()),
        }
    }

    /// When its engine went idle between requests (see [`ProxyConnection::idle_since`]).
    pub fn idle_since(&self) -> Option<Instant> {
        match &self.stage {
            Stage::Serving(engine) => engine.idle_since(),
            _ => None,
        }
    }

    /// Closes the connection if its engine is idle between requests, to admit a new client; from then on it is
    /// not counted against the cap. Returns whether it was reclaimed (its ending is carried out at the next
    /// [`Connection::drive`]).
    pub fn reclaim(&mut self) -> bool {
        let Stage::Serving(engine) = &mut self.stage else {
            return false;
        };
        self.reclaimed = engine.reclaim();
        self.uncounted |= self.reclaimed.is_some();
        self.reclaimed.is_some()
    }

    /// Whether the connection waits for a lookup (the loop hands answers only to those).
    pub fn is_resolving(&self) -> bool {
        matches!(&self.stage, Stage::Serving(e) if e.phase() == Phase::Resolving)
    }

    /// A lookup's answer arrived.
    pub fn resolved(&mut self, result: LookupResult) {
        self.io.lookup = Some(result);
    }

    /// Removes the connection's sockets from the loop (before it is dropped).
    pub fn deregister(&mut self, registry: &Registry) {
        let _ = registry.deregister(&mut self.client);
        if let Some(upstream) = self.io.upstream.as_mut() {
            let _ = registry.deregister(&mut upstream.stream);
        }
    }

    /// Moves the connection as far as it goes. Returns whether it is still open.
    pub fn drive(&mut self, env: &mut Env<'_>, registry: &Registry) -> bool {
        if let Some(ending) = self.reclaimed.take() {
            if !self.end(ending, env, registry) {
                return false;
            }
        }
        for _ in 0..64 {
            let flow = match &mut self.stage {
                Stage::Serving(engine) => {
                    let mut step = Step {
                        engine,
                        io: &mut self.io,
                        client: &mut self.client,
                        env: &mut *env,
                        registry,
                        slot: self.slot,
                        generation: self.generation,
                    };
                    step.run()
                }
                Stage::Answering { deadline } => {
                    let deadline = *deadline;
                    self.answering(deadline, env)
                }
                Stage::Draining(drain) => Self::draining(&mut self.client, drain, env),
            };
            match flow {
                Flow::Moved(true) => continue,
                Flow::Moved(false) => return true,
                Flow::Done => return false,
                Flow::End(ending) => {
                    if !self.end(ending, env, registry) {
                        return false;
                    }
                }
            }
        }
        true
    }

    /// Carries out `ending`. Returns whether the connection stays open (to send or drain).
    fn end(&mut self, ending: Ending, env: &mut Env<'_>, registry: &Registry) -> bool {
        let now = env.clock.now();
        let mut upstream = self.io.upstream.take();
        if let Some(upstream) = upstream.as_mut() {
            let _ = registry.deregister(&mut upstream.stream);
            if ending == Ending::ResetBoth {
                let _ = sys::reset_on_close(&upstream.stream);
            }
        }
        // Dropped: closed with a FIN behind what it was sent, or reset as set above.
        drop(upstream);
        self.io.pipe = None;
        match ending {
            Ending::Answer { len } => {
                self.io.to_client.clear();
                self.io
                    .to_client
                    .push(env.head_out.get(..len).unwrap_or(&[]));
                self.stage = Stage::Answering {
                    deadline: now + env.cx.limits.linger,
                };
                true
            }
            Ending::Close => {
                // What is queued for the client still goes out, then its sending side closes.
                self.stage = Stage::Answering {
                    deadline: now + env.cx.limits.linger,
                };
                true
            }
            Ending::ResetClient | Ending::ResetBoth => {
                let _ = sys::reset_on_close(&self.client);
                false
            }
        }
    }

    fn answering(&mut self, deadline: Instant, env: &mut Env<'_>) -> Flow {
        let moved = match self
            .io
            .to_client
            .flush(&mut self.client, env.cx.limits.head)
        {
            Ok(moved) => moved,
            Err(_) => return Flow::Done,
        };
        if self.io.to_client.is_empty() {
            let _ = self.client.shutdown(Shutdown::Write);
            self.stage = Stage::Draining(Drain::start(env.cx.limits, env.clock.now()));
            return Flow::Moved(true);
        }
        if env.clock.now() >= deadline {
            // A client that never reads its answer is given up.
            return Flow::Done;
        }
        Flow::Moved(moved)
    }

    fn draining(client: &mut TcpStream, drain: &mut Drain, env: &mut Env<'_>) -> Flow {
        loop {
            match client.read(env.scratch) {
                Ok(0) => return Flow::Done,
                Ok(_) => drain.on_bytes(env.clock.now()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Flow::Done,
            }
        }
        match drain.is_over(env.clock.now()) {
            true => Flow::Done,
            false => Flow::Moved(false),
        }
    }
}
