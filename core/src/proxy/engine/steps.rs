//! What a driver and the engine say to each other: the context every call takes, and the answers each call
//! gives (what to do next, how a connection ends).

use core::net::SocketAddr;

use super::super::{Limits, ProxyPolicy};
use super::{OwnAddress, ProxyConnection};

/// What every call needs from the driver's configuration.
#[derive(Debug, Clone, Copy)]
pub struct ProxyContext<'a> {
    /// Who may use the proxy and where it may go.
    pub policy: &'a ProxyPolicy<'a>,
    /// Sizes and times.
    pub limits: &'a Limits,
    /// Where the proxy listens, to recognise a request for itself.
    pub own: OwnAddress<'a>,
    /// Whether the driver can look names up (a DNS socket, the system's resolver); without, only `--resolve`
    /// names and address literals are served.
    pub can_look_up: bool,
}

/// Counters of one connection's work (a design sums them over its connections).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Client connections accepted.
    pub accepted: u64,
    /// Request heads read.
    pub requests: u64,
    /// Final responses relayed from origins.
    pub responses: u64,
    /// Requests the proxy answered itself: with an error page, or with resets when the error came after the
    /// response had started. (A peer's reset is no error of the proxy's and is not counted.)
    pub errors: u64,
    /// CONNECT tunnels opened.
    pub tunnels: u64,
    /// Body bytes relayed, both ways.
    pub body_bytes: u64,
}

impl ProxyStats {
    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &ProxyStats) {
        self.accepted += other.accepted;
        self.requests += other.requests;
        self.responses += other.responses;
        self.errors += other.errors;
        self.tunnels += other.tunnels;
        self.body_bytes += other.body_bytes;
    }
}

/// Where a connection is, for a driver to dispatch on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// A request head is arriving (or the client idles between requests).
    ReadingHead,
    /// The driver looks the origin's name up.
    Resolving,
    /// The driver connects to the origin.
    Connecting,
    /// The request goes to the origin and its response comes back.
    Exchanging(ResponsePhase),
    /// `CONNECT`: bytes both ways until both ends close.
    Tunnel,
    /// Over: the driver carries out the [`Ending`] it was given.
    Closed,
}

impl Phase {
    /// Calls `step`'s method for this phase. A design that steps its connections (the smoltcp slot, the event
    /// loop) dispatches on the phase here, in this one match, rather than in a match of its own.
    pub fn dispatch<S: PhaseStep>(self, step: &mut S) -> S::Output {
        match self {
            Phase::ReadingHead => step.reading_head(),
            Phase::Resolving => step.resolving(),
            Phase::Connecting => step.connecting(),
            Phase::Exchanging(response) => step.exchanging(response),
            Phase::Tunnel => step.tunnel(),
            Phase::Closed => {
                log::error!(
                    target: super::super::LOG_TARGET,
                    "bug: a closed proxy connection was stepped; reset"
                );
                step.closed()
            }
        }
    }
}

/// What a design does in each [`Phase`] of a connection, for [`Phase::dispatch`].
pub trait PhaseStep {
    /// What a step gives the design.
    type Output;
    /// Read the client's head: [`ProxyConnection::on_client_head`].
    fn reading_head(&mut self) -> Self::Output;
    /// Wait for the lookup: [`ProxyConnection::on_resolved`].
    fn resolving(&mut self) -> Self::Output;
    /// Wait for the connection: [`ProxyConnection::on_connected`].
    fn connecting(&mut self) -> Self::Output;
    /// Move the request and the response, which has come as far as `response`.
    fn exchanging(&mut self, response: ResponsePhase) -> Self::Output;
    /// Move bytes both ways.
    fn tunnel(&mut self) -> Self::Output;
    /// Nothing is left to do: stepping a closed connection is the design's bug (already logged); end it.
    fn closed(&mut self) -> Self::Output;
}

/// How far the origin's response has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponsePhase {
    /// Its head (or the next one, after an interim response) is awaited.
    Head,
    /// Its body streams.
    Body,
    /// It is whole; once the driver has sent it all, [`ProxyConnection::on_response_sent`].
    Complete,
}

/// How a connection ends. Whatever else it says, an origin connection the driver holds is closed (with a FIN)
/// unless it says to reset it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The proxy's own answer is in `out[..len]`: send it, close the client connection (FIN), then read and drop
    /// what the client still sends as [`Drain`](crate::proxy::Drain) says (a stack that must keep the socket
    /// until it closes reads until then, or [`Limits::linger`]).
    Answer {
        /// The page's length.
        len: usize,
    },
    /// Close the client connection (FIN) after what is queued, then drain it as after an answer.
    Close,
    /// Reset the client connection; the origin connection gets a FIN behind the bytes already queued for it
    /// (a request body never ends at the close, so the origin sees that the upload broke off).
    ResetClient,
    /// Reset both connections.
    ResetBoth,
}

/// A client as it connects: served, or refused with its page in `out`.
// No heap in the core to box the connection in: it is moved once, into the place its driver keeps it.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Admission {
    /// Serve it.
    Serve(ProxyConnection),
    /// Refused (403 or 503): send `out[..len]`, then close and drain as after an [`Ending::Answer`].
    Refuse {
        /// The page's length.
        len: usize,
    },
}

/// What to do with a request head that arrived (or not yet).
#[derive(Debug, PartialEq, Eq)]
pub enum HeadStep<'c> {
    /// Not whole yet: read more (the deadline still applies).
    NeedMore,
    /// The head is taken: see [`Forward`].
    Forward(Forward<'c>),
    /// The connection ends.
    End(Ending),
}

/// A request head taken: drop `consumed` bytes from the client's stream (what follows is the body or the next
/// request); the head to send the origin is in `out[..head_len]` (empty for a tunnel). Then `next`.
#[derive(Debug, PartialEq, Eq)]
pub struct Forward<'c> {
    /// Bytes of the client's stream the head took.
    pub consumed: usize,
    /// The rewritten head's length in `out`.
    pub head_len: usize,
    /// How to reach the origin.
    pub next: OriginStep<'c>,
}

/// How to reach the origin. On every step but [`OriginStep::Reuse`], an origin connection the driver kept from
/// the last exchange is closed first: the connection has forgotten it.
#[derive(Debug, PartialEq, Eq)]
pub enum OriginStep<'c> {
    /// Look this name up, then [`ProxyConnection::on_resolved`].
    LookUp(&'c str),
    /// Connect to this address, then [`ProxyConnection::on_connected`] or
    /// [`ProxyConnection::on_connect_failed`].
    Connect(SocketAddr),
    /// Send the request on the origin connection kept from the last exchange (the connection is exchanging).
    Reuse,
    /// The connection ends.
    End(Ending),
}

/// How to go on reaching the origin after a lookup or a failed connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectStep {
    /// Connect to this address (closing any other origin connection), then [`ProxyConnection::on_connected`] or
    /// [`ProxyConnection::on_connect_failed`].
    Connect(SocketAddr),
    /// The connection ends.
    End(Ending),
}

/// What an accepted origin connection is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connected {
    /// Send the request head (the one [`HeadStep::Forward`] wrote; on a retry, the same head again).
    Exchange,
    /// A tunnel: send the client `out[..len]` (the `200`), and any bytes it sent behind its head to the origin.
    Tunnel {
        /// The reply's length.
        len: usize,
    },
    /// The connection ends.
    End(Ending),
}

/// What to do with the origin's bytes while its response head is awaited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseStep {
    /// Not whole yet: read more.
    NeedMore,
    /// A head was read: drop `consumed` bytes of the origin's stream and send the client `out[..len]` (`len` is 0
    /// for an interim response the client must not see). After an interim head, another head follows; after the
    /// final one, the body ([`ProxyConnection::response_body`]).
    Head {
        /// Bytes of the origin's stream the head took.
        consumed: usize,
        /// The rewritten head's length in `out`.
        len: usize,
        /// Whether it was an interim (1xx) head.
        interim: bool,
    },
    /// The kept origin connection was closed before it carried the request: connect to this address again and
    /// send the same request head ([`ProxyConnection::on_connected`] follows).
    Retry(SocketAddr),
    /// The connection ends.
    End(Ending),
}

/// What follows a response sent whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterResponse {
    /// Read the client's next request; keep the origin connection for it if `keep_origin`, else close it.
    NextRequest {
        /// Whether the origin connection may carry another request.
        keep_origin: bool,
    },
    /// The connection ends.
    End(Ending),
}

/// Something that went wrong that only the driver can see. (An origin that goes away is not one: a driver whose
/// writes to the origin fail stops writing and reads on; the read side tells the engine, through
/// [`ProxyConnection::on_response_head`] or [`ProxyConnection::on_origin_finished`], whether an answer came first.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The client's connection was reset (or its stack gave up on it).
    ClientReset,
    /// The client closed its sending side before its request body was whole.
    ClientClosedMidBody,
    /// The client's chunked request body broke the chunk grammar.
    MalformedRequestBody,
    /// The origin's chunked response body broke the chunk grammar.
    MalformedResponseBody,
    /// One end of a tunnel reset its connection.
    TunnelPeerReset,
}
