//! [`ProxyEvent`]: every line the proxy logs, one type for every design, so the three designs print the same
//! lines for the same exchange.
//!
//! The lines follow the classic lab's log: `From <client> Request <request line>` when a request head arrives,
//! `To <client> Response <status line>` when a response goes back (the origin in parentheses), and
//! `<client> Peer reset <request line> (<cause>)` when an exchange breaks off. They are logged at `info` on the
//! target [`LOG_TARGET`]; what only a developer needs (a lookup that failed, a state machine's transitions) is
//! at `debug` or `trace`.

use core::fmt;
use core::net::{IpAddr, SocketAddr};

use crate::http::{ProxyError, ResponseHead};

/// The log target of every proxy event, whichever design logs it.
pub const LOG_TARGET: &str = "smoltalk::proxy";

/// Why an exchange broke off after it started: the last part of a `Peer reset` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetCause {
    /// The client reset its connection (or its stack gave up on it).
    ClientReset,
    /// The client closed its sending side before its request body was whole.
    ClientClosedMidBody,
    /// The origin reset its connection before its response was whole.
    OriginResetMidResponse,
    /// The origin closed its connection before its response was whole.
    OriginClosedMidResponse,
    /// The origin's chunked body broke the chunk grammar.
    MalformedResponseBody,
    /// Neither side moved a byte for the whole timeout after the response started.
    Stalled,
    /// One end of a tunnel reset its connection.
    TunnelPeerReset,
}

impl ResetCause {
    /// The cause as the log line gives it.
    pub fn as_str(self) -> &'static str {
        match self {
            ResetCause::ClientReset => "client reset",
            ResetCause::ClientClosedMidBody => "client closed mid-body",
            ResetCause::OriginResetMidResponse => "origin reset mid-response",
            ResetCause::OriginClosedMidResponse => "origin closed mid-response",
            ResetCause::MalformedResponseBody => "origin sent a malformed chunked body",
            ResetCause::Stalled => "no progress mid-response",
            ResetCause::TunnelPeerReset => "tunnel peer reset",
        }
    }
}

impl fmt::Display for ResetCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something a proxy connection did that the log tells.
#[derive(Clone, Copy)]
pub enum ProxyEvent<'a> {
    /// A request head arrived whole.
    Request {
        /// The client.
        client: IpAddr,
        /// Its request line.
        line: &'a str,
    },
    /// An origin's response head goes to the client (interim ones too).
    Response {
        /// The client it goes to.
        client: IpAddr,
        /// The head as the origin sent it.
        head: &'a ResponseHead<'a, 'a>,
        /// The origin it came from.
        origin: SocketAddr,
    },
    /// The proxy answers a request itself, with an error page (or, after the response started, a reset).
    Answer {
        /// The client.
        client: IpAddr,
        /// Why.
        error: ProxyError,
        /// The request line, if a head was read.
        line: Option<&'a str>,
    },
    /// The proxy answers a request that is addressed to itself (`OPTIONS` with `Max-Forwards: 0`) with `200`.
    Options {
        /// The client.
        client: IpAddr,
        /// The request line.
        line: &'a str,
    },
    /// A client is refused as it connects (not allowed, or every connection is busy).
    Refused {
        /// The client.
        client: IpAddr,
        /// Why (403 or 503).
        error: ProxyError,
        /// For 503: how many connections the proxy serves at once.
        capacity: Option<usize>,
    },
    /// A connection idle between requests is closed to admit a new client (the pool was full).
    Reclaimed {
        /// The idle connection's client.
        client: IpAddr,
    },
    /// An exchange broke off after it started: both connections are reset (or closed).
    PeerReset {
        /// The client.
        client: IpAddr,
        /// The request line.
        line: &'a str,
        /// Why.
        cause: ResetCause,
    },
    /// A name could not be looked up, or an origin address could not be connected to (debug).
    OriginUnreachable {
        /// The client whose request it was.
        client: IpAddr,
        /// The name or address.
        origin: OriginName<'a>,
        /// What went wrong.
        why: &'a dyn fmt::Display,
    },
    /// A kept origin connection was closed by the origin before it carried the request; it goes again on a new
    /// connection (debug).
    Retry {
        /// The client.
        client: IpAddr,
        /// The origin it goes to again.
        origin: SocketAddr,
    },
    /// A proxy connection moved from one state to another (trace).
    Transition {
        /// The client.
        client: IpAddr,
        /// The state it left.
        from: &'static str,
        /// The state it entered.
        to: &'static str,
    },
    /// An internal invariant failed: a driver asked for something the connection's state does not allow. The
    /// connection is aborted; this is a bug, never the client's fault (error).
    Bug {
        /// The client.
        client: IpAddr,
        /// What was asked.
        call: &'static str,
        /// The state the connection was in.
        state: &'static str,
    },
}

/// An origin as a log line names it: by name, or by address.
#[derive(Debug, Clone, Copy)]
pub enum OriginName<'a> {
    /// A host name (a lookup failed).
    Name(&'a str),
    /// An address (a connection failed).
    Address(SocketAddr),
}

impl fmt::Display for OriginName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OriginName::Name(name) => f.write_str(name),
            OriginName::Address(addr) => write!(f, "{addr}"),
        }
    }
}

impl ProxyEvent<'_> {
    /// The level the event is logged at.
    pub fn level(&self) -> log::Level {
        match self {
            ProxyEvent::Request { .. }
            | ProxyEvent::Response { .. }
            | ProxyEvent::Answer { .. }
            | ProxyEvent::Options { .. }
            | ProxyEvent::Refused { .. }
            | ProxyEvent::Reclaimed { .. }
            | ProxyEvent::PeerReset { .. } => log::Level::Info,
            ProxyEvent::OriginUnreachable { .. } | ProxyEvent::Retry { .. } => log::Level::Debug,
            ProxyEvent::Transition { .. } => log::Level::Trace,
            ProxyEvent::Bug { .. } => log::Level::Error,
        }
    }

    /// Logs the event on [`LOG_TARGET`] at its [`level`](ProxyEvent::level).
    pub fn log(&self) {
        log::log!(target: LOG_TARGET, self.level(), "{self}");
    }
}

impl fmt::Debug for ProxyEvent<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProxyEvent({self})")
    }
}

impl fmt::Display for ProxyEvent<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxyEvent::Request { client, line } => write!(f, "From {client} Request {line}"),
            ProxyEvent::Response {
                client,
                head,
                origin,
            } => write!(f, "To {client} Response {head} (from {origin})"),
            ProxyEvent::Answer {
                client,
                error,
                line,
            } => write!(
                f,
                "To {client} Response HTTP/1.1 {} {} ({}: {error})",
                error.status(),
                error.reason(),
                line.unwrap_or("-")
            ),
            ProxyEvent::Options { client, line } => write!(
                f,
                "To {client} Response HTTP/1.1 200 OK ({line}: answered by the proxy, Max-Forwards: 0)"
            ),
            ProxyEvent::Refused {
                client,
                error,
                capacity,
            } => {
                write!(
                    f,
                    "From {client} Refused {} {}",
                    error.status(),
                    error.reason()
                )?;
                match capacity {
                    Some(n) => write!(f, " (all {n} proxy connections are busy)"),
                    None => Ok(()),
                }
            }
            ProxyEvent::Reclaimed { client } => write!(
                f,
                "To {client} Closed its idle kept connection (every proxy connection was busy; a new client needed one)"
            ),
            ProxyEvent::PeerReset {
                client,
                line,
                cause,
            } => write!(f, "{client} Peer reset {line} ({cause})"),
            ProxyEvent::OriginUnreachable {
                client,
                origin,
                why,
            } => write!(f, "{client}: cannot reach {origin}: {why}"),
            ProxyEvent::Retry { client, origin } => write!(
                f,
                "{client}: the kept connection to {origin} was closed by the origin; connecting again"
            ),
            ProxyEvent::Transition { client, from, to } => {
                write!(f, "{client}: {from} -> {to}")
            }
            ProxyEvent::Bug {
                client,
                call,
                state,
            } => write!(
                f,
                "bug: {call} called in state {state} (connection from {client} aborted)"
            ),
        }
    }
}
