//! [`KernelTcpServer`]: the TCP uppercase server on the kernel's stack, its options, and what its workers share
//! (the connection cap, the idle timeout, the clock, how refusals are logged). The designs that move the bytes
//! are [`super::event_loop`] (the default) and [`super::threads`].

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use smoltalk_core::stream_session::SessionEnd;
use smoltalk_core::{ConnectionLimit, Refusals};

use super::sockets::{
    clients_within_descriptor_limit, default_workers, tcp_listeners, ListenAddress,
};
use super::workers::run_workers;
use super::{event_loop, threads, KernelError};
use crate::clock::Clock;

/// Clients served at once unless `--max-connections` says otherwise (fewer if the open files limit is lower).
pub const DEFAULT_MAX_CONNECTIONS: usize = 100_000;

/// An idle client is closed after this long unless `--idle-timeout` says otherwise.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// Refusals over the cap are logged at most once per this long (the first at once), with how many there were.
pub const REFUSAL_REPORTS: Duration = Duration::from_secs(1);

/// How the server moves bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpDesign {
    /// An event loop (epoll) per worker, each with its own listening socket on the port (`SO_REUSEPORT`).
    EventLoop,
    /// The classic lab design: one thread per client (for comparison).
    ThreadPerClient,
}

/// How a [`KernelTcpServer`] runs.
#[derive(Debug, Clone, Copy)]
pub struct TcpServerOptions {
    /// The design.
    pub design: TcpDesign,
    /// Event loops (one thread each); the thread design has one accepting thread.
    pub workers: usize,
    /// Clients served at once, over all workers; the ones beyond are closed at once.
    pub max_connections: usize,
    /// Whether `max_connections` was asked for (else it is the default): an open files limit below it is then
    /// a warning.
    pub max_connections_asked: bool,
    /// A client with no byte moving either way for this long is closed.
    pub idle_timeout: Duration,
}

impl Default for TcpServerOptions {
    fn default() -> Self {
        TcpServerOptions {
            design: TcpDesign::EventLoop,
            workers: default_workers(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_asked: false,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }
}

/// A bound TCP uppercase server.
pub struct KernelTcpServer {
    listeners: Vec<TcpListener>,
    addr: SocketAddr,
    options: TcpServerOptions,
}

/// What every worker of one server shares.
pub(super) struct Shared {
    pub limit: ConnectionLimit,
    /// One count of refusals for all workers, so a burst is reported once.
    refusals: Mutex<Refusals>,
    /// Some refusals are not reported yet (so the workers look at `refusals` only then, not at every event).
    unreported: AtomicBool,
    pub idle_timeout: smoltcp::time::Duration,
    pub clock: Clock,
}

impl KernelTcpServer {
    /// Binds `at` (an address, or [`ListenAddress::EveryFamily`]: `[::]` for IPv4 and IPv6 clients, `0.0.0.0`
    /// where the system has no IPv6): a listening socket per worker for the event loops, one for the thread
    /// design.
    pub fn bind(
        at: impl Into<ListenAddress>,
        mut options: TcpServerOptions,
    ) -> Result<Self, KernelError> {
        let sockets = match options.design {
            TcpDesign::EventLoop => options.workers.max(1),
            TcpDesign::ThreadPerClient => 1,
        };
        let listeners = at.into().bind_with(|addr| tcp_listeners(addr, sockets))?;
        let addr = listeners
            .first()
            .map(TcpListener::local_addr)
            .ok_or(KernelError::ListenerFailed)?
            .map_err(|error| KernelError::Io {
                context: "cannot read the listening socket's address",
                error,
            })?;
        options.max_connections = clients_within_descriptor_limit(
            options.max_connections,
            options.max_connections_asked,
            listeners.len(),
        );
        Ok(KernelTcpServer {
            listeners,
            addr,
            options,
        })
    }

    /// The address it listens on (the port the kernel chose for port 0; `[::]` takes IPv4 clients too).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// How it serves, in a few words (for the start-up line).
    pub fn describe(&self) -> String {
        let o = &self.options;
        let design = match o.design {
            TcpDesign::EventLoop if self.listeners.len() == 1 => "1 event loop".to_string(),
            TcpDesign::EventLoop => format!(
                "{} event loops, new connections spread over them by the kernel (SO_REUSEPORT)",
                self.listeners.len()
            ),
            TcpDesign::ThreadPerClient => "a thread per client".to_string(),
        };
        format!(
            "{design}; at most {} clients at once, idle ones closed after {} s",
            o.max_connections,
            o.idle_timeout.as_secs_f64()
        )
    }

    /// Clients served at once (`--max-connections`, or fewer if the open files limit is lower).
    pub fn max_connections(&self) -> usize {
        self.options.max_connections
    }

    /// Serves until a worker fails.
    pub fn serve(self) -> Result<(), KernelError> {
        let shared = Arc::new(Shared {
            limit: ConnectionLimit::new(self.options.max_connections),
            unreported: AtomicBool::new(false),
            refusals: Mutex::new(Refusals::new(smoltcp::time::Duration::from_micros(
                REFUSAL_REPORTS.as_micros() as u64,
            ))),
            idle_timeout: smoltcp::time::Duration::from_micros(
                self.options.idle_timeout.as_micros() as u64,
            ),
            clock: Clock::start(),
        });
        match self.options.design {
            TcpDesign::ThreadPerClient => {
                let listener = self.listeners.into_iter().next();
                threads::serve(listener.ok_or(KernelError::ListenerFailed)?, &shared)
            }
            TcpDesign::EventLoop => run_workers("worker", self.listeners, move |listener| {
                event_loop::serve(listener, &shared)
            }),
        }
    }
}

impl Shared {
    /// Counts a client refused over the cap at `now` (one of a burst; see [`Shared::report_refusals`]).
    pub fn refused(&self, now: smoltcp::time::Instant) {
        let mut refusals = self.refusals.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(report) = refusals.refused(now) {
            self.log_refusals(report);
        }
        self.unreported
            .store(refusals.next_report_at().is_some(), Ordering::Release);
    }

    /// Logs the refusals not yet reported, once a report is due (workers call this now and then, so the tail of
    /// a burst is reported too).
    pub fn report_refusals(&self, now: smoltcp::time::Instant) {
        if !self.unreported.load(Ordering::Acquire) {
            return;
        }
        let mut refusals = self.refusals.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(report) = refusals.due(now) {
            self.log_refusals(report);
        }
        self.unreported
            .store(refusals.next_report_at().is_some(), Ordering::Release);
    }

    /// When the refusals not yet reported are due to be logged.
    pub fn next_refusal_report(&self) -> Option<smoltcp::time::Instant> {
        if !self.unreported.load(Ordering::Acquire) {
            return None;
        }
        self.refusals
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .next_report_at()
    }

    /// Logs how a client's connection ended.
    pub fn log_end(&self, peer: SocketAddr, end: SessionEnd, answered: u64) {
        match end {
            SessionEnd::Closed => log::info!("tcp: {peer} closed after {answered} bytes"),
            SessionEnd::IdleTimeout => log::info!(
                "tcp: {peer} closed after {answered} bytes: nothing moved for the idle timeout ({} s)",
                self.idle_timeout.total_millis() as f64 / 1000.0
            ),
            SessionEnd::Reset => log::info!("tcp: {peer} reset after {answered} bytes"),
            SessionEnd::Bug => {
                log::error!("tcp: {peer} closed by an internal error after {answered} bytes")
            }
        }
    }

    fn log_refusals(&self, report: smoltalk_core::stream_session::RefusalReport) {
        let max = self.limit.max();
        if report.over.total_micros() == 0 {
            log::warn!(
                "tcp: refused a client: {max} are served already, the most --max-connections allows (refusals \
                 are counted and reported at most once a second)"
            );
        } else {
            log::warn!(
                "tcp: refused {} more clients in the last {:.1} s ({} since the start): {max} are served, the \
                 most --max-connections allows",
                report.refused,
                report.over.total_millis() as f64 / 1000.0,
                report.total
            );
        }
    }
}
