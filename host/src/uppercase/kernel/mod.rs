//! The uppercase service on the kernel's own stack (`std::net`): the reference every smoltcp figure is compared
//! with, so the best kernel implementation we can write.
//!
//! - [`tcp_server`]: [`KernelTcpServer`], its options ([`TcpServerOptions`]: workers, the connection cap, the idle
//!   timeout) and its two designs: [`event_loop`], one event loop (epoll through `mio`) per worker, each with its
//!   own listening socket on the same port (`SO_REUSEPORT`), the default; and [`threads`], the classic lab
//!   design, a thread per client, kept for comparison (`--thread-per-client`). Both drive the core's
//!   [`smoltalk_core::UppercaseSession`] and [`smoltalk_core::ConnectionLimit`], which decide.
//! - [`udp_server`]: [`KernelUdpServer`], a socket per worker on the same port.
//! - [`sockets`]: binding those sockets, the listen backlog, the open files limit; `workers`: a thread per
//!   worker, and the server's end when the first one stops.
//! - [`client`]: the TCP and UDP clients.
//!
//! This module holds what they share: [`KernelError`], name resolution ([`resolve`]: names, IPv4 and IPv6
//! addresses, `[::1]`), and how an address is shown ([`unmapped`]).

mod client;
pub mod event_loop;
pub mod sockets;
pub mod tcp_server;
pub mod threads;
pub mod udp_server;
mod workers;

use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use super::ClientFailure;

pub use client::{Connected, KernelTcpClient, KernelUdpClient};
pub use sockets::ListenAddress;
pub use tcp_server::{KernelTcpServer, TcpDesign, TcpServerOptions};
pub use udp_server::KernelUdpServer;

/// A failure of a kernel-stack server or client (or of a kernel-stack proxy), as one line for a person.
#[derive(Debug)]
pub enum KernelError {
    /// A server or client socket could not be bound.
    Bind {
        /// "TCP" or "UDP".
        proto: &'static str,
        /// The address asked for.
        addr: SocketAddr,
        /// What the kernel said.
        error: io::Error,
    },
    /// A host name could not be looked up.
    Resolve {
        /// The name.
        host: String,
        /// Why not.
        error: io::Error,
    },
    /// A host name has no address.
    NoAddress {
        /// The name.
        host: String,
    },
    /// A host in brackets that is not an IPv6 address (`[localhost]`): brackets hold only one, as in `[::1]`.
    Brackets {
        /// The host as given.
        host: String,
    },
    /// A client was given no address to try.
    NoAddressToConnect,
    /// A TCP client tried more than one address (a name's), and none took the connection.
    EveryAddressFailed {
        /// Each address's failure ([`KernelError::Connect`]), in the order they were tried.
        failures: Vec<KernelError>,
    },
    /// A TCP client could not connect.
    Connect {
        /// The server.
        server: SocketAddr,
        /// How long the handshake was given.
        timeout: Duration,
        /// What the kernel said.
        error: io::Error,
    },
    /// A TCP client's exchange with its server failed.
    Exchange {
        /// The server.
        server: SocketAddr,
        /// What the kernel said.
        error: io::Error,
    },
    /// A UDP client's receive timeout was refused.
    ReadTimeout(io::Error),
    /// A UDP message is larger than a datagram can be.
    DatagramTooLarge {
        /// Its length in bytes.
        len: usize,
    },
    /// A UDP datagram could not be sent.
    Send {
        /// The server.
        server: SocketAddr,
        /// What the kernel said.
        error: io::Error,
    },
    /// A UDP client got no reply after every try.
    NoReply {
        /// The server.
        server: SocketAddr,
        /// How many datagrams were sent.
        tries: u32,
    },
    /// A step of a server's set-up or loop failed: `context` says which ("cannot create the event loop").
    Io {
        /// What failed, as the message starts.
        context: &'static str,
        /// What the kernel said.
        error: io::Error,
    },
    /// A server's listening socket failed: it can accept no one any more.
    ListenerFailed,
    /// A worker of a server stopped with a panic (a bug; its message is on standard error).
    WorkerPanicked,
}

impl std::fmt::Display for KernelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KernelError::Bind { proto, addr, error } => match error.kind() {
                io::ErrorKind::AddrInUse => write!(
                    f,
                    "{proto} address {addr} is already in use: another server runs there (stop it or pick another \
                     --port)"
                ),
                _ if is_family_refused(error) => write!(
                    f,
                    "cannot bind {proto} {addr}: this machine has no {} (the kernel refuses the address family)",
                    family(*addr)
                ),
                io::ErrorKind::AddrNotAvailable if addr.ip().is_unspecified() => write!(
                    f,
                    "cannot bind {proto} {addr}: this machine has no {} address (is {} switched off?)",
                    family(*addr),
                    family(*addr)
                ),
                io::ErrorKind::AddrNotAvailable => {
                    write!(f, "cannot bind {proto} {addr}: that address is not on this machine")
                }
                io::ErrorKind::PermissionDenied => {
                    write!(f, "cannot bind {proto} {addr}: ports below 1024 need root")
                }
                _ => write!(f, "cannot bind {proto} {addr}: {error}"),
            },
            KernelError::Resolve { host, error } => match LookupFailure::of(error) {
                LookupFailure::NoSuchName => {
                    write!(f, "cannot resolve {host}: the system resolver knows no such name")
                }
                LookupFailure::NoAddress => write!(
                    f,
                    "{host} has no address: the name is known, but with no IPv4 or IPv6 address"
                ),
                LookupFailure::NoAnswer => write!(
                    f,
                    "cannot resolve {host}: the name server did not answer (is the network up? try again)"
                ),
                LookupFailure::Other => write!(f, "cannot resolve {host}: {error}"),
            },
            KernelError::NoAddress { host } => write!(
                f,
                "{host} has no address: the name is known, but with no IPv4 or IPv6 address"
            ),
            KernelError::Brackets { host } => write!(
                f,
                "{host} is not an IPv6 address: brackets hold only an IPv6 address, as in [::1] (a name or an IPv4 \
                 address goes without them)"
            ),
            KernelError::NoAddressToConnect => f.write_str("no address to connect to"),
            KernelError::EveryAddressFailed { failures } => {
                write!(
                    f,
                    "cannot connect to any of the {} addresses: ",
                    failures.len()
                )?;
                for (i, failure) in failures.iter().enumerate() {
                    let sep = if i == 0 { "" } else { ", " };
                    write!(f, "{sep}{}", failure.in_brief())?;
                }
                let all_refused = failures.iter().all(|failure| {
                    matches!(failure, KernelError::Connect { error, .. }
                        if error.kind() == io::ErrorKind::ConnectionRefused)
                });
                if all_refused {
                    f.write_str(": the server is probably not running on that port")?;
                }
                Ok(())
            }
            KernelError::Connect {
                server,
                timeout,
                error,
            } => match error.kind() {
                io::ErrorKind::ConnectionRefused => write!(
                    f,
                    "connection to {server} refused: the server is probably not running on that address and port"
                ),
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => write!(
                    f,
                    "connection to {server} timed out after {:.1} s: no answer to the TCP handshake",
                    timeout.as_secs_f64()
                ),
                _ => match unreachable(*server, error) {
                    Some(why) => write!(f, "cannot connect to {server}: {why}"),
                    None => write!(f, "cannot connect to {server}: {error}"),
                },
            },
            KernelError::Exchange { server, error } => match error.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                    write!(f, "timed out waiting for the reply from {server}")
                }
                io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => {
                    write!(f, "connection reset by {server}")
                }
                io::ErrorKind::UnexpectedEof => {
                    write!(f, "{server} closed the connection before the whole reply arrived")
                }
                _ => write!(f, "talking to {server}: {error}"),
            },
            KernelError::ReadTimeout(e) => write!(f, "invalid timeout: {e}"),
            KernelError::DatagramTooLarge { len } => {
                write!(f, "a {len}-byte datagram is too large to send")
            }
            KernelError::Send { server, error } => match unreachable(*server, error) {
                Some(why) => write!(f, "cannot send to {server}: {why}"),
                None => write!(f, "cannot send to {server}: {error}"),
            },
            KernelError::NoReply { server, tries } => write!(
                f,
                "no reply from {server} after {tries} tries: UDP has no connection, so the datagrams may have been \
                 lost or no server is listening on that address and port"
            ),
            KernelError::Io { context, error } => write!(f, "{context}: {error}"),
            KernelError::ListenerFailed => f.write_str("the listening socket failed"),
            KernelError::WorkerPanicked => {
                f.write_str("a worker stopped with an internal error (see the message above)")
            }
        }
    }
}

/// A [`KernelError`] in a few words, for a list of them: a failed connection attempt as its server and what
/// happened (`[::1]:12000 refused`), any other error whole.
pub struct InBrief<'a>(&'a KernelError);

impl std::fmt::Display for InBrief<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let KernelError::Connect { server, error, .. } = self.0 else {
            return self.0.fmt(f);
        };
        match error.kind() {
            io::ErrorKind::ConnectionRefused => write!(f, "{server} refused"),
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => write!(f, "{server} timed out"),
            io::ErrorKind::NetworkUnreachable => write!(f, "{server} unreachable (no route)"),
            io::ErrorKind::HostUnreachable => write!(f, "{server} unreachable (no host)"),
            io::ErrorKind::AddrNotAvailable => {
                write!(f, "{server} unreachable (no address of ours)")
            }
            _ if is_family_refused(error) => {
                write!(f, "{server} unreachable (no {} here)", family(*server))
            }
            _ => write!(f, "{server} failed ({error})"),
        }
    }
}

impl KernelError {
    /// This error in a few words, for a list of them (see [`InBrief`]).
    pub fn in_brief(&self) -> InBrief<'_> {
        InBrief(self)
    }

    /// Which client failure this is, where a caller can act on it (the `smoltalk` clients exit with its code).
    pub fn failure(&self) -> Option<ClientFailure> {
        match self {
            KernelError::Connect { error, .. } => match error.kind() {
                io::ErrorKind::ConnectionRefused => Some(ClientFailure::Refused),
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => {
                    Some(ClientFailure::ConnectTimedOut)
                }
                _ => None,
            },
            KernelError::Exchange { error, .. } => match error.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                    Some(ClientFailure::ReplyTimedOut)
                }
                io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => {
                    Some(ClientFailure::Reset)
                }
                io::ErrorKind::UnexpectedEof => Some(ClientFailure::ClosedEarly),
                _ => None,
            },
            KernelError::NoReply { .. } => Some(ClientFailure::NoReply),
            KernelError::EveryAddressFailed { failures } => {
                failures.last().and_then(KernelError::failure)
            }
            _ => None,
        }
    }
}

impl std::error::Error for KernelError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            KernelError::Bind { error, .. }
            | KernelError::Resolve { error, .. }
            | KernelError::Connect { error, .. }
            | KernelError::Exchange { error, .. }
            | KernelError::ReadTimeout(error)
            | KernelError::Send { error, .. }
            | KernelError::Io { error, .. } => Some(error),
            KernelError::EveryAddressFailed { failures } => failures
                .last()
                .map(|last| last as &(dyn std::error::Error + 'static)),
            KernelError::NoAddress { .. }
            | KernelError::Brackets { .. }
            | KernelError::NoAddressToConnect
            | KernelError::DatagramTooLarge { .. }
            | KernelError::NoReply { .. }
            | KernelError::ListenerFailed
            | KernelError::WorkerPanicked => None,
        }
    }
}

pub(crate) fn bind_error(proto: &'static str, addr: SocketAddr, error: io::Error) -> KernelError {
    KernelError::Bind { proto, addr, error }
}

/// The period a rate-limited report covers, as its log line says it: nothing for the first report (made at
/// once), else " in the last N.N s".
pub(crate) fn over_the_last(report: &smoltalk_core::stream_session::RefusalReport) -> String {
    match report.over.total_micros() {
        0 => String::new(),
        _ => format!(
            " in the last {:.1} s",
            report.over.total_millis() as f64 / 1000.0
        ),
    }
}

/// `addr` as a person knows it: an IPv4 client of a socket on `[::]` arrives as `::ffff:a.b.c.d`, and is shown
/// (and logged) as `a.b.c.d`. Every other address is itself.
pub fn unmapped(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// "IPv4" or "IPv6", `addr`'s family.
fn family(addr: SocketAddr) -> &'static str {
    match addr {
        SocketAddr::V4(_) => "IPv4",
        SocketAddr::V6(_) => "IPv6",
    }
}

/// Whether the kernel refused a socket of the family asked for (`EAFNOSUPPORT`: IPv6 compiled out or switched
/// off at boot).
fn is_family_refused(error: &io::Error) -> bool {
    error.raw_os_error() == Some(crate::sys::errno::EAFNOSUPPORT)
}

/// Why `server` cannot be reached from this machine, where `error` says so: its family refused, no route, no
/// host, no address of ours to send from. `None` for every other error.
fn unreachable(server: SocketAddr, error: &io::Error) -> Option<String> {
    let ipv6_note = match server {
        SocketAddr::V6(_) => " (IPv6 may not be set up on this machine)",
        SocketAddr::V4(_) => "",
    };
    let why = match error.kind() {
        _ if is_family_refused(error) => format!(
            "this machine has no {} (the kernel refuses the address family)",
            family(server)
        ),
        io::ErrorKind::NetworkUnreachable => {
            format!("network unreachable: this machine has no route to it{ipv6_note}")
        }
        io::ErrorKind::HostUnreachable => {
            "host unreachable: nothing on its network answers for that address".to_string()
        }
        io::ErrorKind::AddrNotAvailable => {
            format!("this machine has no address to reach it from{ipv6_note}")
        }
        _ => return None,
    };
    Some(why)
}

/// Why the system resolver gave no address, as far as its error tells: std reports `getaddrinfo`'s failure as
/// `gai_strerror`'s words (always the C locale's: a Rust program does not set one), glibc's or musl's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LookupFailure {
    /// No such name (`EAI_NONAME`).
    NoSuchName,
    /// The name is known, with no address (`EAI_NODATA`, `EAI_ADDRFAMILY`).
    NoAddress,
    /// The name server did not answer (`EAI_AGAIN`).
    NoAnswer,
    /// Anything else: the error says it.
    Other,
}

impl LookupFailure {
    fn of(error: &io::Error) -> LookupFailure {
        let text = error.to_string();
        let says = |words: &[&str]| words.iter().any(|w| text.contains(w));
        if says(&["Name or service not known", "Name does not resolve"]) {
            LookupFailure::NoSuchName
        } else if says(&[
            "No address associated with hostname",
            "Address family for hostname not supported",
            "Name has no usable address",
        ]) {
            LookupFailure::NoAddress
        } else if says(&["Temporary failure in name resolution", "Try again"]) {
            LookupFailure::NoAnswer
        } else {
            LookupFailure::Other
        }
    }
}

/// Resolves `host:port` to all its addresses, in the system resolver's order (for `localhost`, often `::1`
/// then `127.0.0.1`). `host` is a name (looked up), an IPv4 or IPv6 address (not looked up), or an IPv6 address
/// in brackets (`[::1]`, as in a URL); anything else in brackets is refused before any lookup.
pub fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, KernelError> {
    if host.starts_with('[') || host.ends_with(']') {
        return match address_literal(host) {
            Some(ip) => Ok(vec![SocketAddr::new(ip, port)]),
            None => Err(KernelError::Brackets {
                host: host.to_string(),
            }),
        };
    }
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|error| KernelError::Resolve {
            host: host.to_string(),
            error,
        })?
        .collect();
    if addrs.is_empty() {
        return Err(KernelError::NoAddress {
            host: host.to_string(),
        });
    }
    Ok(addrs)
}

/// The address `host` spells, as people write one: IPv4, IPv6, or IPv6 in brackets (`[::1]`, as in a URL);
/// `None` for a name, or for anything else in brackets.
pub fn address_literal(host: &str) -> Option<IpAddr> {
    match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(bracketed) => bracketed.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6),
        None => host.parse().ok(),
    }
}

/// Whether `host` is an address (IPv4, IPv6, or IPv6 in brackets) rather than a name to look up.
pub fn is_address(host: &str) -> bool {
    address_literal(host).is_some()
}

/// The address a UDP client sends to: the first IPv4 address of a name, else its first. UDP cannot try one
/// address after another the way TCP can (silence takes a whole timeout to tell), and IPv4 reaches a server on
/// `[::]` (the default) as well as one on `0.0.0.0`.
pub fn udp_target(addrs: &[SocketAddr]) -> Option<SocketAddr> {
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
}

/// Whether this machine has an IPv6 loopback (`::1` can be bound), for the tests that need one; without it,
/// says why the test does nothing, or fails under CI (`CI=true`), where every test must run.
#[cfg(test)]
pub(crate) fn ipv6_loopback_or_skip(test: &str) -> bool {
    match std::net::TcpListener::bind("[::1]:0") {
        Ok(_) => true,
        Err(e) => {
            let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
            assert!(
                !ci,
                "{test} cannot run under CI=true: no IPv6 loopback (binding ::1: {e})"
            );
            eprintln!("SKIPPED {test}: no IPv6 loopback (binding ::1: {e})");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(kind: io::ErrorKind) -> io::Error {
        io::Error::from(kind)
    }

    #[test]
    fn each_failure_reads_as_one_line_for_a_person() {
        let addr: SocketAddr = ([127, 0, 0, 1], 12000).into();
        assert_eq!(
            bind_error("TCP", addr, kind(io::ErrorKind::AddrInUse)).to_string(),
            "TCP address 127.0.0.1:12000 is already in use: another server runs there (stop it or pick another \
             --port)"
        );
        assert_eq!(
            bind_error("UDP", addr, kind(io::ErrorKind::PermissionDenied)).to_string(),
            "cannot bind UDP 127.0.0.1:12000: ports below 1024 need root"
        );
        let connect = |k| KernelError::Connect {
            server: addr,
            timeout: Duration::from_millis(2500),
            error: kind(k),
        };
        assert_eq!(
            connect(io::ErrorKind::ConnectionRefused).to_string(),
            "connection to 127.0.0.1:12000 refused: the server is probably not running on that address and port"
        );
        assert_eq!(
            connect(io::ErrorKind::TimedOut).to_string(),
            "connection to 127.0.0.1:12000 timed out after 2.5 s: no answer to the TCP handshake"
        );
        let exchange = KernelError::Exchange {
            server: addr,
            error: kind(io::ErrorKind::UnexpectedEof),
        };
        assert_eq!(
            exchange.to_string(),
            "127.0.0.1:12000 closed the connection before the whole reply arrived"
        );
        let silence = KernelError::NoReply {
            server: addr,
            tries: 3,
        };
        assert_eq!(
            silence.to_string(),
            "no reply from 127.0.0.1:12000 after 3 tries: UDP has no connection, so the datagrams may have been \
             lost or no server is listening on that address and port"
        );
        let io = KernelError::Io {
            context: "cannot create the event loop",
            error: io::Error::other("no epoll"),
        };
        assert_eq!(io.to_string(), "cannot create the event loop: no epoll");
    }

    #[test]
    fn client_failures_are_told_by_their_kind() {
        let server: SocketAddr = "127.0.0.1:12000".parse().unwrap();
        let connect = |kind| KernelError::Connect {
            server,
            timeout: Duration::from_secs(1),
            error: io::Error::from(kind),
        };
        assert_eq!(
            connect(io::ErrorKind::ConnectionRefused).failure(),
            Some(ClientFailure::Refused)
        );
        assert_eq!(
            connect(io::ErrorKind::TimedOut).failure(),
            Some(ClientFailure::ConnectTimedOut)
        );
        let exchange = |kind| KernelError::Exchange {
            server,
            error: io::Error::from(kind),
        };
        assert_eq!(
            exchange(io::ErrorKind::UnexpectedEof).failure(),
            Some(ClientFailure::ClosedEarly)
        );
        assert_eq!(
            exchange(io::ErrorKind::ConnectionReset).failure(),
            Some(ClientFailure::Reset)
        );
        assert_eq!(
            KernelError::NoReply { server, tries: 2 }.failure(),
            Some(ClientFailure::NoReply)
        );
        assert_eq!(KernelError::ListenerFailed.failure(), None);
    }

    /// Every line an IPv6 address can meet, as clear as its IPv4 twin: the address in brackets, and what this
    /// machine lacks where that is the reason.
    #[test]
    fn ipv6_failures_read_as_clearly_as_ipv4_ones() {
        let v6: SocketAddr = "[::1]:12000".parse().unwrap();
        let v4: SocketAddr = ([127, 0, 0, 1], 12000).into();
        let family_refused = || io::Error::from_raw_os_error(crate::sys::errno::EAFNOSUPPORT);
        let connect = |server, error| {
            KernelError::Connect {
                server,
                timeout: Duration::from_secs(5),
                error,
            }
            .to_string()
        };
        assert_eq!(
            connect(v6, kind(io::ErrorKind::ConnectionRefused)),
            "connection to [::1]:12000 refused: the server is probably not running on that address and port"
        );
        assert_eq!(
            connect(v6, kind(io::ErrorKind::TimedOut)),
            "connection to [::1]:12000 timed out after 5.0 s: no answer to the TCP handshake"
        );
        assert_eq!(
            connect(v6, kind(io::ErrorKind::NetworkUnreachable)),
            "cannot connect to [::1]:12000: network unreachable: this machine has no route to it (IPv6 may not be \
             set up on this machine)"
        );
        assert_eq!(
            connect(v4, kind(io::ErrorKind::NetworkUnreachable)),
            "cannot connect to 127.0.0.1:12000: network unreachable: this machine has no route to it"
        );
        assert_eq!(
            connect(v6, kind(io::ErrorKind::HostUnreachable)),
            "cannot connect to [::1]:12000: host unreachable: nothing on its network answers for that address"
        );
        assert_eq!(
            connect(v6, kind(io::ErrorKind::AddrNotAvailable)),
            "cannot connect to [::1]:12000: this machine has no address to reach it from (IPv6 may not be set up \
             on this machine)"
        );
        assert_eq!(
            connect(v6, family_refused()),
            "cannot connect to [::1]:12000: this machine has no IPv6 (the kernel refuses the address family)"
        );
        assert_eq!(
            KernelError::Send {
                server: v6,
                error: kind(io::ErrorKind::NetworkUnreachable)
            }
            .to_string(),
            "cannot send to [::1]:12000: network unreachable: this machine has no route to it (IPv6 may not be set \
             up on this machine)"
        );
        assert_eq!(
            KernelError::NoReply {
                server: v6,
                tries: 2
            }
            .to_string(),
            "no reply from [::1]:12000 after 2 tries: UDP has no connection, so the datagrams may have been lost or \
             no server is listening on that address and port"
        );
    }

    #[test]
    fn a_failed_lookup_says_what_the_resolver_found() {
        // std reports getaddrinfo's failure with gai_strerror's words: glibc's, then musl's.
        let resolve = |words: &str| {
            KernelError::Resolve {
                host: "nowhere.invalid".into(),
                error: io::Error::other(format!("failed to lookup address information: {words}")),
            }
            .to_string()
        };
        for words in ["Name or service not known", "Name does not resolve"] {
            assert_eq!(
                resolve(words),
                "cannot resolve nowhere.invalid: the system resolver knows no such name"
            );
        }
        for words in [
            "No address associated with hostname",
            "Address family for hostname not supported",
            "Name has no usable address",
        ] {
            assert_eq!(
                resolve(words),
                "nowhere.invalid has no address: the name is known, but with no IPv4 or IPv6 address"
            );
        }
        assert_eq!(
            resolve("Temporary failure in name resolution"),
            "cannot resolve nowhere.invalid: the name server did not answer (is the network up? try again)"
        );
        assert_eq!(
            resolve("Something else entirely"),
            "cannot resolve nowhere.invalid: failed to lookup address information: Something else entirely"
        );
        assert_eq!(
            KernelError::NoAddress {
                host: "empty.example".into()
            }
            .to_string(),
            "empty.example has no address: the name is known, but with no IPv4 or IPv6 address"
        );
    }

    #[test]
    fn every_address_of_a_name_failing_is_one_line_naming_each() {
        let refused = |server: &str| KernelError::Connect {
            server: server.parse().unwrap(),
            timeout: Duration::from_secs(5),
            error: kind(io::ErrorKind::ConnectionRefused),
        };
        let both = KernelError::EveryAddressFailed {
            failures: vec![refused("[::1]:12001"), refused("127.0.0.1:12001")],
        };
        assert_eq!(
            both.to_string(),
            "cannot connect to any of the 2 addresses: [::1]:12001 refused, 127.0.0.1:12001 refused: the server is \
             probably not running on that port"
        );
        assert_eq!(both.failure(), Some(ClientFailure::Refused));
        let mixed = KernelError::EveryAddressFailed {
            failures: vec![
                KernelError::Connect {
                    server: "[::1]:12001".parse().unwrap(),
                    timeout: Duration::from_secs(5),
                    error: kind(io::ErrorKind::NetworkUnreachable),
                },
                KernelError::Connect {
                    server: "127.0.0.1:12001".parse().unwrap(),
                    timeout: Duration::from_secs(5),
                    error: kind(io::ErrorKind::TimedOut),
                },
            ],
        };
        assert_eq!(
            mixed.to_string(),
            "cannot connect to any of the 2 addresses: [::1]:12001 unreachable (no route), 127.0.0.1:12001 timed \
             out"
        );
        assert_eq!(mixed.failure(), Some(ClientFailure::ConnectTimedOut));
    }

    #[test]
    fn hosts_are_names_addresses_or_ipv6_in_brackets() {
        let v6: SocketAddr = "[::1]:12000".parse().unwrap();
        assert_eq!(resolve("::1", 12000).unwrap(), vec![v6]);
        assert_eq!(resolve("[::1]", 12000).unwrap(), vec![v6]);
        assert_eq!(
            resolve("127.0.0.1", 12000).unwrap(),
            vec![SocketAddr::from(([127, 0, 0, 1], 12000))]
        );
        for host in ["[127.0.0.1]", "[localhost]", "[::1", "::1]", "[]"] {
            let error = resolve(host, 12000).map(|_| ()).unwrap_err();
            assert_eq!(
                error.to_string(),
                format!(
                    "{host} is not an IPv6 address: brackets hold only an IPv6 address, as in [::1] (a name or an \
                     IPv4 address goes without them)"
                )
            );
        }
        assert!(is_address("::1") && is_address("[::1]") && is_address("127.0.0.1"));
        assert!(!is_address("localhost") && !is_address("[127.0.0.1]") && !is_address("[::1"));
    }

    #[test]
    fn binding_ipv6_fails_in_words_that_say_what_the_machine_lacks() {
        let any_v6: SocketAddr = "[::]:12000".parse().unwrap();
        let v6: SocketAddr = "[::1]:12000".parse().unwrap();
        let family_refused = io::Error::from_raw_os_error(crate::sys::errno::EAFNOSUPPORT);
        assert_eq!(
            bind_error("TCP", any_v6, family_refused).to_string(),
            "cannot bind TCP [::]:12000: this machine has no IPv6 (the kernel refuses the address family)"
        );
        assert_eq!(
            bind_error("UDP", any_v6, kind(io::ErrorKind::AddrNotAvailable)).to_string(),
            "cannot bind UDP [::]:12000: this machine has no IPv6 address (is IPv6 switched off?)"
        );
        assert_eq!(
            bind_error("TCP", v6, kind(io::ErrorKind::AddrNotAvailable)).to_string(),
            "cannot bind TCP [::1]:12000: that address is not on this machine"
        );
        assert_eq!(
            bind_error("TCP", any_v6, kind(io::ErrorKind::AddrInUse)).to_string(),
            "TCP address [::]:12000 is already in use: another server runs there (stop it or pick another --port)"
        );
    }

    #[test]
    fn mapped_ipv4_clients_are_shown_as_ipv4() {
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:40000".parse().unwrap();
        assert_eq!(unmapped(mapped).to_string(), "127.0.0.1:40000");
        for plain in ["[::1]:40000", "127.0.0.1:40000", "[::]:40000"] {
            let addr: SocketAddr = plain.parse().unwrap();
            assert_eq!(unmapped(addr), addr);
        }
    }

    #[test]
    fn udp_sends_to_a_names_first_ipv4_address() {
        let v6: SocketAddr = "[::1]:12000".parse().unwrap();
        let v4: SocketAddr = "127.0.0.1:12000".parse().unwrap();
        assert_eq!(udp_target(&[v6, v4]), Some(v4));
        assert_eq!(udp_target(&[v6]), Some(v6));
        assert_eq!(udp_target(&[]), None);
    }
}
