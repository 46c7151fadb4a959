//! The HTTP forward proxy on the kernel's stack (`std::net`): the classic lab design, one blocking thread per
//! client, kept for comparison (`--thread-per-client`). Each thread drives the core's engine
//! (`session::ClientSession`, its exchange with the origin in `session::exchange`) with blocking reads and
//! writes whose timeouts come from the engine's deadlines.
//!
//! The acceptor thread admits each client through the engine (403 and 503 are decided there; at the cap, the
//! thread idle longest between requests is reclaimed first, see `idle`) and hands it to a thread of its own; refused clients are answered by one refuser thread, which drains them side by side, so a
//! flood at the cap costs no thread per client.

mod idle;
mod session;
mod sockets;

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;

use smoltalk_core::proxy::engine::{pool_is_full, Admission, OwnAddress};
use smoltalk_core::proxy::{Drain, Limits, ProxyConnection, ProxyContext};

use super::event_loop::LISTEN_BACKLOG;
use super::{is_local_address, ProxyConfig, ProxyServeError};
use crate::clock::Clock;
use crate::sys;
use crate::uppercase::kernel::bind_error;
use idle::{IdleSessions, Place};

/// The stack of a client thread: its buffers are on the heap, and the thread needs little else.
const THREAD_STACK: usize = 128 * 1024;

/// Refused clients waiting for the refuser thread (more are closed without a word).
const REFUSALS_WAITING: usize = 4096;

/// The kernel-stack proxy, a thread per client: a listening socket and its configuration.
#[derive(Debug)]
pub struct KernelProxy {
    listener: TcpListener,
    shared: Arc<Shared>,
}

/// What every client thread shares.
#[derive(Debug)]
struct Shared {
    config: ProxyConfig,
    /// The proxy's own address, so a request for it is a loop (508).
    own: SocketAddr,
    clock: Clock,
    /// Places taken under the cap.
    active: Arc<AtomicUsize>,
    /// The threads idle between requests, for the acceptor to reclaim at the cap.
    idle: IdleSessions,
    next_id: AtomicU64,
}

impl Shared {
    /// Runs `f` with the engine's context for this proxy.
    fn with_context<R>(&self, f: impl FnOnce(&ProxyContext<'_>) -> R) -> R {
        let names = self.config.names();
        let policy = self.config.policy(&names);
        let is_local = is_local_address;
        f(&ProxyContext {
            policy: &policy,
            limits: &self.config.limits,
            own: OwnAddress {
                listen: self.own,
                is_local: &is_local,
            },
            can_look_up: self.config.system_dns,
        })
    }
}

impl KernelProxy {
    /// Binds `addr`.
    pub fn bind(addr: SocketAddr, config: ProxyConfig) -> Result<KernelProxy, ProxyServeError> {
        let listener = sys::tcp_listener(addr)
            .map_err(|e| ProxyServeError::Bind(bind_error("TCP", addr, e)))?;
        let setup = |what| move |source| ProxyServeError::Setup { what, source };
        // std listens with a backlog of 128: a burst of connections (a browser, a load generator) overflows it
        // and each dropped SYN costs its client a one-second retransmission. Listening again raises it.
        sys::listen(&listener, LISTEN_BACKLOG)
            .map_err(setup("cannot raise the listening socket's backlog"))?;
        let own = listener
            .local_addr()
            .map_err(setup("cannot read the bound address"))?;
        Ok(KernelProxy {
            listener,
            shared: Arc::new(Shared {
                config,
                own,
                clock: Clock::start(),
                active: Arc::new(AtomicUsize::new(0)),
                idle: IdleSessions::default(),
                next_id: AtomicU64::new(0),
            }),
        })
    }

    /// The address the proxy listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.own
    }

    /// Accepts clients until the listening socket fails.
    pub fn serve(self) -> Result<(), ProxyServeError> {
        let refuser =
            spawn_refuser(self.shared.config.limits, self.shared.clock).map_err(|source| {
                ProxyServeError::Setup {
                    what: "cannot start the refuser thread",
                    source,
                }
            })?;
        let mut page = vec![0; self.shared.config.limits.out_buffer()];
        self.shared.with_context(|cx| {
            for stream in self.listener.incoming() {
                let stream = match stream {
                    Ok(s) => s,
                    Err(e) => {
                        // Out of descriptors or a connection reset before accept: not the proxy's end.
                        log::warn!("accept failed: {e}");
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                };
                let Ok(peer) = stream.peer_addr() else {
                    continue;
                };
                if pool_is_full(cx.limits, self.shared.active.load(Ordering::Acquire)) {
                    self.shared.idle.reclaim_longest();
                }
                let (place, busy) = Place::take(&self.shared.active);
                let now = self.shared.clock.now();
                let engine = match ProxyConnection::admit(
                    cx,
                    peer.ip().to_canonical(),
                    busy,
                    now,
                    &mut page,
                ) {
                    Admission::Serve(engine) => engine,
                    Admission::Refuse { len } => {
                        drop(place);
                        let answer = page.get(..len).unwrap_or(&[]).to_vec();
                        refuse(&refuser, stream, peer, answer);
                        continue;
                    }
                };
                let shared = Arc::clone(&self.shared);
                let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
                let spawned =
                    std::thread::Builder::new()
                        .stack_size(THREAD_STACK)
                        .spawn(move || {
                            shared.with_context(|cx| {
                                let idle = (&shared.idle, id, place);
                                session::ClientSession::new(stream, engine, cx, shared.clock, idle)
                                    .run()
                            });
                        });
                if let Err(e) = spawned {
                    // The closure, and the place it held, are dropped with the error.
                    log::warn!("cannot start a thread for {peer}: {e}");
                }
            }
        });
        Err(ProxyServeError::ListenerFailed)
    }
}

/// A refused client and the answer it gets, for the refuser thread.
type Refusal = (TcpStream, SocketAddr, Vec<u8>);

/// Starts the thread that answers refused clients: each gets its page, then what it still sends is read and
/// dropped as [`Drain`] says (so the close does not turn into a reset that destroys the page), all side by side.
fn spawn_refuser(limits: Limits, clock: Clock) -> io::Result<SyncSender<Refusal>> {
    let (tx, rx) = sync_channel::<Refusal>(REFUSALS_WAITING);
    std::thread::Builder::new()
        .name("refuser".into())
        .spawn(move || {
            let mut draining: Vec<(TcpStream, Drain)> = Vec::new();
            let mut sink = [0u8; 4096];
            loop {
                let wait = match draining.is_empty() {
                    true => Duration::from_secs(3600),
                    false => Duration::from_millis(10),
                };
                match rx.recv_timeout(wait) {
                    Ok((mut stream, _peer, page)) => {
                        let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
                        let _ = stream.write_all(&page);
                        let _ = stream.shutdown(Shutdown::Write);
                        if stream.set_nonblocking(true).is_ok() {
                            draining.push((stream, Drain::start(&limits, clock.now())));
                        }
                    }
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => return,
                }
                let now = clock.now();
                draining.retain_mut(|(stream, drain)| {
                    loop {
                        match stream.read(&mut sink) {
                            Ok(0) => return false,
                            Ok(_) => drain.on_bytes(now),
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(_) => return false,
                        }
                    }
                    !drain.is_over(now)
                });
            }
        })?;
    Ok(tx)
}

fn refuse(refuser: &SyncSender<Refusal>, stream: TcpStream, peer: SocketAddr, page: Vec<u8>) {
    if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
        refuser.try_send((stream, peer, page))
    {
        log::warn!("From {} dropped: too many refusals waiting", peer.ip());
    }
}
