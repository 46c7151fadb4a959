//! The HTTP forward proxy on the kernel's stack: one event loop over non-blocking sockets (epoll, through
//! `mio`), every client a `Connection` (in `connection`) that drives the core's engine and only moves bytes.
//!
//! The loop accepts clients (the engine admits them: 403 and 503 are answered here, beyond the cap up to
//! [`REFUSALS`] at once; at the cap, the connection idle longest between requests is reclaimed first), hands each socket event to its connection, wakes at least every [`SWEEP`] to enforce
//! deadlines, and looks names up on threads of their own so that a slow DNS server stalls only the request that
//! needs it.

mod connection;
mod exchange;
mod io;
mod step;

use std::io as stdio;
use std::net::SocketAddr;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::time::Duration;

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};
use smoltalk_core::proxy::engine::{longest_idle, pool_is_full, Admission, OwnAddress};
use smoltalk_core::proxy::{ProxyConnection, ProxyContext};

use super::lookup::{spawn_lookup, LookupResult};
use super::{is_local_address, ProxyConfig, ProxyServeError};
use crate::clock::Clock;
use crate::sys;
use crate::uppercase::kernel::bind_error;
use connection::Connection;

/// Bodies move through a scratch buffer this big (one for the whole loop).
const SCRATCH: usize = 64 * 1024;

/// Connections the kernel may hold ready for `accept` (capped by `net.core.somaxconn`).
pub const LISTEN_BACKLOG: i32 = 4096;

/// Refused clients answered at once, beyond `--max-connections` (more are closed without a word). A refusal
/// costs a descriptor and a few hundred bytes for at most the drain time, so a burst of a thousand clients over
/// the cap all get their 503.
pub const REFUSALS: usize = 2048;

/// The loop wakes at least this often to enforce deadlines.
pub const SWEEP: Duration = Duration::from_millis(100);

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);

/// The kernel-stack proxy: a listening socket and its configuration.
pub struct KernelProxy {
    listener: TcpListener,
    own: SocketAddr,
    config: ProxyConfig,
}

impl KernelProxy {
    /// Binds `addr`.
    pub fn bind(addr: SocketAddr, config: ProxyConfig) -> Result<KernelProxy, ProxyServeError> {
        let listener = sys::tcp_listener(addr)
            .map_err(|e| ProxyServeError::Bind(bind_error("TCP", addr, e)))?;
        // std listens with a backlog of 128: a burst of connections overflows it and each dropped SYN costs its
        // client a one-second retransmission. Listening again raises it.
        let setup = |what| move |source| ProxyServeError::Setup { what, source };
        sys::listen(&listener, LISTEN_BACKLOG)
            .map_err(setup("cannot raise the listening socket's backlog"))?;
        listener
            .set_nonblocking(true)
            .map_err(setup("cannot make the listening socket non-blocking"))?;
        let own = listener
            .local_addr()
            .map_err(setup("cannot read the bound address"))?;
        Ok(KernelProxy {
            listener: TcpListener::from_std(listener),
            own,
            config,
        })
    }

    /// The address the proxy listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.own
    }

    /// Serves clients until the event loop fails.
    pub fn serve(self) -> Result<(), ProxyServeError> {
        raise_descriptor_limit(self.config.limits.max_connections);
        let setup = |what| move |source| ProxyServeError::Setup { what, source };
        let poll = Poll::new().map_err(setup("cannot create the event loop"))?;
        let waker =
            Arc::new(Waker::new(poll.registry(), WAKER).map_err(setup("cannot create a waker"))?);
        let mut listener = self.listener;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)
            .map_err(setup("cannot watch the listening socket"))?;
        let (resolved_tx, resolved) = channel();
        let config = self.config;
        let names = config.names();
        let policy = config.policy(&names);
        let is_local = is_local_address;
        let cx = ProxyContext {
            policy: &policy,
            limits: &config.limits,
            own: OwnAddress {
                listen: self.own,
                is_local: &is_local,
            },
            can_look_up: config.system_dns,
        };
        let mut event_loop = EventLoop {
            poll,
            listener,
            cx,
            clock: Clock::start(),
            scratch: vec![0; SCRATCH].into_boxed_slice(),
            head_out: vec![0; config.limits.out_buffer()].into_boxed_slice(),
            resolver: Resolver {
                tx: resolved_tx,
                waker,
            },
            connections: Vec::new(),
            free: Vec::new(),
            serving: 0,
            refusing: 0,
            accept_blocked: false,
            resolved,
            next_generation: 0,
        };
        event_loop.run().map_err(setup("the event loop failed"))
    }
}

/// What every connection may use while it is driven.
pub(super) struct Env<'e> {
    pub cx: ProxyContext<'e>,
    pub clock: Clock,
    /// Body bytes pass through here on their way from one socket to the other.
    pub scratch: &'e mut [u8],
    /// The heads and pages the engine writes.
    pub head_out: &'e mut [u8],
    pub resolver: &'e Resolver,
}

/// Looks names up on threads of their own and hands the answers back to the loop.
pub(super) struct Resolver {
    tx: Sender<Resolved>,
    waker: Arc<Waker>,
}

/// A lookup's answer for connection `slot` (if it still has `generation`).
struct Resolved {
    slot: usize,
    generation: u64,
    result: LookupResult,
}

impl Resolver {
    /// Looks `host` up for connection `slot`; the answer comes back through the loop.
    pub fn look_up(&self, slot: usize, generation: u64, host: String) {
        let (tx, waker) = (self.tx.clone(), Arc::clone(&self.waker));
        let spawned = spawn_lookup(host, move |result| {
            let _ = tx.send(Resolved {
                slot,
                generation,
                result,
            });
            let _ = waker.wake();
        });
        if let Err(e) = spawned {
            let _ = self.tx.send(Resolved {
                slot,
                generation,
                result: Err(format!("cannot start a lookup: {e}")),
            });
            let _ = self.waker.wake();
        }
    }
}

struct EventLoop<'e> {
    poll: Poll,
    listener: TcpListener,
    cx: ProxyContext<'e>,
    clock: Clock,
    scratch: Box<[u8]>,
    head_out: Box<[u8]>,
    resolver: Resolver,
    /// Connection `i` has tokens `2 + 2i` (client) and `3 + 2i` (origin).
    connections: Vec<Option<Connection>>,
    free: Vec<usize>,
    /// Connections counted against the cap.
    serving: usize,
    /// Connections answered at the accept or reclaimed, closing.
    refusing: usize,
    /// `accept` failed for want of descriptors: try again without waiting for a new client.
    accept_blocked: bool,
    resolved: Receiver<Resolved>,
    next_generation: u64,
}

impl EventLoop<'_> {
    fn run(&mut self) -> stdio::Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut last_sweep = self.clock.now();
        let sweep = smoltcp::time::Duration::from_micros(SWEEP.as_micros() as u64);
        loop {
            match self.poll.poll(&mut events, Some(SWEEP)) {
                Ok(()) => {}
                Err(e) if e.kind() == stdio::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(),
                    WAKER => self.take_resolved(),
                    Token(t) => self.drive((t - 2) / 2),
                }
            }
            let now = self.clock.now();
            if now >= last_sweep + sweep {
                last_sweep = now;
                if self.accept_blocked {
                    self.accept();
                }
                for slot in 0..self.connections.len() {
                    let due = self.connections[slot]
                        .as_ref()
                        .and_then(Connection::deadline)
                        .is_some_and(|deadline| now >= deadline);
                    if due {
                        self.drive(slot);
                    }
                }
            }
        }
    }

    fn accept(&mut self) {
        loop {
            let (stream, peer) = match self.listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == stdio::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == stdio::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == stdio::ErrorKind::ConnectionAborted => continue,
                Err(e) => {
                    // Out of descriptors: the clients still queued are not reported again until a new one
                    // arrives, so the sweep tries again (every 100 ms) until an accept succeeds.
                    log::warn!("accept failed: {e}");
                    self.accept_blocked = true;
                    return;
                }
            };
            self.accept_blocked = false;
            let _ = stream.set_nodelay(true);
            let now = self.clock.now();
            if pool_is_full(self.cx.limits, self.serving) {
                self.reclaim_longest_idle();
            }
            let engine = match ProxyConnection::admit(
                &self.cx,
                peer.ip().to_canonical(),
                self.serving,
                now,
                &mut self.head_out,
            ) {
                Admission::Serve(engine) => Ok(engine),
                Admission::Refuse { .. } if self.refusing >= REFUSALS => {
                    log::warn!("From {} dropped: too many refusals under way", peer.ip());
                    continue;
                }
                Admission::Refuse { len } => Err((
                    self.head_out.get(..len).unwrap_or(&[]),
                    now + self.cx.limits.linger,
                )),
            };
            let slot = self.free.pop().unwrap_or_else(|| {
                self.connections.push(None);
                self.connections.len() - 1
            });
            self.next_generation += 1;
            let mut connection = Connection::new(stream, slot, self.next_generation, engine);
            let token = Token(2 + 2 * slot);
            if let Err(e) = self.poll.registry().register(
                &mut connection.client,
                token,
                Interest::READABLE | Interest::WRITABLE,
            ) {
                log::warn!("cannot watch the connection from {peer}: {e}");
                self.free.push(slot);
                continue;
            }
            match connection.uncounted {
                true => self.refusing += 1,
                false => self.serving += 1,
            }
            self.connections[slot] = Some(connection);
            self.drive(slot);
        }
    }

    /// The pool is full: the connection idle longest between requests, if any, is closed to make room.
    fn reclaim_longest_idle(&mut self) {
        let idle = longest_idle(
            self.connections
                .iter()
                .enumerate()
                .map(|(slot, c)| (slot, c.as_ref().and_then(Connection::idle_since))),
        );
        let Some(slot) = idle else {
            return;
        };
        let Some(Some(connection)) = self.connections.get_mut(slot) else {
            return;
        };
        if connection.reclaim() {
            self.serving -= 1;
            self.refusing += 1;
        }
        self.drive(slot);
    }

    fn take_resolved(&mut self) {
        while let Ok(resolved) = self.resolved.try_recv() {
            let Some(Some(connection)) = self.connections.get_mut(resolved.slot) else {
                continue;
            };
            if connection.generation == resolved.generation && connection.is_resolving() {
                connection.resolved(resolved.result);
                self.drive(resolved.slot);
            }
        }
    }

    /// Moves connection `slot` as far as its sockets allow, and closes it when it is done.
    fn drive(&mut self, slot: usize) {
        let Some(Some(mut connection)) = self.connections.get_mut(slot).map(Option::take) else {
            return;
        };
        let mut env = Env {
            cx: self.cx,
            clock: self.clock,
            scratch: &mut self.scratch,
            head_out: &mut self.head_out,
            resolver: &self.resolver,
        };
        let open = connection.drive(&mut env, self.poll.registry());
        if open {
            self.connections[slot] = Some(connection);
            return;
        }
        connection.deregister(self.poll.registry());
        match connection.uncounted {
            true => self.refusing -= 1,
            false => self.serving -= 1,
        }
        self.free.push(slot);
    }
}

/// Raises the soft limit on open descriptors to the hard one: each client costs two (three with a pipe), and
/// the usual soft limit of 1024 is below what `--max-connections` allows.
fn raise_descriptor_limit(max_connections: usize) {
    let needed = (max_connections as u64)
        .saturating_mul(4)
        .saturating_add(64);
    match sys::raise_open_files_limit() {
        Ok(allowed) if allowed < needed => log::warn!(
            "only {allowed} open files allowed: fewer than --max-connections {max_connections} clients may be served"
        ),
        Ok(_) => {}
        Err(e) => log::warn!("cannot raise the open files limit: {e}"),
    }
}
