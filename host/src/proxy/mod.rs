//! The HTTP forward proxy on both stacks: three designs that only move bytes, around the one engine in the core
//! ([`smoltalk_core::proxy::engine::ProxyConnection`]), which makes every decision.
//!
//! - [`node`]: the core's smoltcp design ([`smoltalk_core::proxy::ProxyServer`]) on a [`crate::stack::node::Node`]
//!   (a TUN/TAP device or a lab node), its slots in a `Box` this module owns.
//! - [`event_loop`]: the kernel stack, one event loop over non-blocking sockets (epoll through `mio`),
//!   `splice` for long bodies.
//! - [`threads`]: the kernel stack, the classic lab design, one blocking thread per client
//!   (`--thread-per-client`), kept for comparison.
//!
//! [`lookup`] is the kernel designs' name lookup (the system's resolver on a thread of its own).
//!
//! [`ProxyConfig`] is what all three are given: the policy's lists, owned, and the core's [`Limits`]. They log
//! the same lines for the same exchange (the core's [`smoltalk_core::proxy::ProxyEvent`]).

pub mod event_loop;
pub mod lookup;
pub mod node;
pub mod threads;

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};

use smoltalk_core::proxy::{Limits, ProxyPolicy};
use smoltcp::wire::IpCidr;

use crate::uppercase::kernel::KernelError;

/// Everything a proxy design is configured with, owned. [`ProxyConfig::policy`] lends it to the core.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Clients that may connect (`--allow`); empty: any.
    pub allow_clients: Vec<IpCidr>,
    /// Addresses the proxy may connect to (`--allow-dest`); empty: any.
    pub allow_destinations: Vec<IpCidr>,
    /// Ports `CONNECT` may tunnel to.
    pub connect_ports: Vec<u16>,
    /// Names answered without DNS (`--resolve HOST=IP`).
    pub static_names: Vec<(String, IpAddr)>,
    /// The name in `Via`.
    pub pseudonym: String,
    /// Sizes and times.
    pub limits: Limits,
    /// Kernel stack: names outside `--resolve` are looked up with the system's resolver (`--no-dns` turns it
    /// off). On smoltcp, a DNS server address does the same.
    pub system_dns: bool,
}

impl ProxyConfig {
    /// The `--resolve` names as the core's policy takes them (borrowed from `self`).
    pub fn names(&self) -> Vec<(&str, IpAddr)> {
        self.static_names
            .iter()
            .map(|(name, ip)| (name.as_str(), *ip))
            .collect()
    }

    /// The core's view of the policy, borrowing `self` and `names` (from [`ProxyConfig::names`]).
    pub fn policy<'a>(&'a self, names: &'a [(&'a str, IpAddr)]) -> ProxyPolicy<'a> {
        ProxyPolicy {
            allow_clients: &self.allow_clients,
            allow_destinations: &self.allow_destinations,
            connect_ports: &self.connect_ports,
            static_names: names,
            pseudonym: &self.pseudonym,
        }
    }
}

/// Why a kernel-stack proxy could not start or stopped serving.
#[derive(Debug)]
pub enum ProxyServeError {
    /// The listening address could not be bound.
    Bind(KernelError),
    /// A part of the server could not be set up.
    Setup {
        /// What was being set up.
        what: &'static str,
        /// The system's error.
        source: io::Error,
    },
    /// The listening socket stopped accepting.
    ListenerFailed,
}

impl fmt::Display for ProxyServeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxyServeError::Bind(e) => write!(f, "{e}"),
            ProxyServeError::Setup { what, source } => write!(f, "{what}: {source}"),
            ProxyServeError::ListenerFailed => f.write_str("the listening socket failed"),
        }
    }
}

impl std::error::Error for ProxyServeError {}

/// Whether `ip` is one of this machine's own addresses (a socket can be bound to it). A kernel-stack proxy that
/// listens on every address is reached at any of them, so a request for one of them is a loop.
pub fn is_local_address(ip: IpAddr) -> bool {
    std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

/// Whether a connection has failed, from its pending error (`take_error`: read and cleared, as `SO_ERROR` does):
/// a reset (seen as `EPIPE` when it came after the peer's FIN), or retransmissions that timed out. A soft error
/// that an ICMP message left (a host unreachable for a moment) is not a failure. For a peer the proxy is not
/// reading now.
pub(crate) fn connection_failed(pending: io::Result<Option<io::Error>>) -> bool {
    match pending {
        Ok(Some(e)) => matches!(
            e.kind(),
            io::ErrorKind::ConnectionReset
                | io::ErrorKind::BrokenPipe
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::TimedOut
        ),
        _ => false,
    }
}

/// Whether a failed write to the origin says that the connection failed (a reset, or retransmissions that
/// timed out) before the origin finished sending. Linux tells a failure once, to the call that meets it, so the
/// read after such a write sees a plain end that must not pass for the origin's close. `EPIPE` is not such a
/// failure: the origin closed first (its reset came after its FIN), and what it sent before is whole.
pub(crate) fn write_met_failure(error: &io::Error) -> bool {
    !matches!(
        error.kind(),
        io::ErrorKind::BrokenPipe | io::ErrorKind::WriteZero
    )
}
