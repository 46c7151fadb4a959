//! [`ProxyConnection`]: one client of the proxy as a protocol, without I/O. Every decision the proxy makes is
//! made here, once, for every design; a driver (smoltcp sockets, an epoll loop, a blocking thread) feeds it what
//! happened and does what it answers.
//!
//! ```text
//!  admit ──▶ ReadingHead ──head──▶ Resolving ──addresses──▶ Connecting ──connected──▶ Exchanging ──sent──┐
//!  (403/503)    ▲  │ (--resolve or a literal skips Resolving; the kept origin connection skips both)      │
//!               │  │                                            CONNECT: Tunnel ◀──────┘                  │
//!               │  └── every error, timeout, broken peer, reclaim ──▶ Closed (with an Ending) ◀───────────┤
//!               └────────────────────────────── the client keeps its connection ◀─────────────────────────┘
//! ```
//!
//! Each state carries its data: the [`Request`] exists from the parsed head to the end of its response, the
//! origin's address from the lookup on, the response's [`BodyTracker`] once its head is read. Every transition
//! goes through one method, which traces it (`RUST_LOG=smoltalk::proxy=trace`). A call the state does not allow
//! is a driver's bug: it is logged as one and the connection is reset, never answered as the client's error.
//!
//! What a driver does:
//! 1. [`ProxyConnection::admit`] a client as it connects (a refused one gets its page at once); when the pool is
//!    full ([`pool_is_full`]), first [`reclaim`](ProxyConnection::reclaim) the connection idle longest between
//!    requests ([`longest_idle`] of their [`idle_since`](ProxyConnection::idle_since)), if there is one.
//! 2. Hand the bytes the client sent so far to [`ProxyConnection::on_client_head`] until it answers
//!    [`HeadStep::Forward`] (take `consumed` bytes off the client; the request head for the origin is in
//!    `out[..head_len]`) and follow the [`OriginStep`]: look the name up and report with
//!    [`on_resolved`](ProxyConnection::on_resolved), connect and report with
//!    [`on_connected`](ProxyConnection::on_connected) / [`on_connect_failed`](ProxyConnection::on_connect_failed),
//!    or reuse the origin connection it kept.
//! 3. Send the request head, then move the request body through [`ProxyConnection::request_body`]; hand the
//!    origin's bytes to [`ProxyConnection::on_response_head`] and send each head it writes, then move the body
//!    through [`ProxyConnection::response_body`]; tell [`ProxyConnection::on_response_sent`] when the response is
//!    out, and [`ProxyConnection::on_progress`] whenever bytes move.
//! 4. Report what goes wrong with [`ProxyConnection::on_failure`] / [`ProxyConnection::on_origin_finished`], and
//!    call [`ProxyConnection::on_timeout`] once [`ProxyConnection::deadline`] has passed.
//! 5. Carry out every [`Ending`]: the page, the FIN or the resets it names, then close.
//!
//! Relaying stays in the driver: how bytes move (smoltcp buffers, `splice`, blocking copies) really differs.

mod exchange;
mod head;
mod origin;
mod request;
mod steps;

use core::net::{IpAddr, SocketAddr};

use smoltcp::time::Instant;

use crate::http::body::BodyTracker;
use crate::http::{HeadWriter, ProxyError};

pub use origin::{lookup, Candidates, KeptOrigin, Lookup, OwnAddress, MAX_CANDIDATES};
pub use request::{Request, RequestLine, LOG_LINE, MAX_HOST};
pub use steps::{
    Admission, AfterResponse, ConnectStep, Connected, Ending, Failure, Forward, HeadStep,
    OriginStep, Phase, PhaseStep, ProxyContext, ProxyStats, ResponsePhase, ResponseStep,
};

use super::event::{OriginName, ProxyEvent, ResetCause};
use super::Limits;

/// The origin a request is exchanged with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Origin {
    addr: SocketAddr,
    /// Kept from an earlier exchange: a failure before any response byte may be a connection the origin closed
    /// while it idled, and is retried once on a new connection.
    reused: bool,
}

/// The interim (1xx) heads an origin sent before its final one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Interims {
    /// None yet.
    None,
    /// Some, none of them for the client (an HTTP/1.0 client does not know them): the origin had the request,
    /// but the client has seen nothing.
    Withheld,
    /// At least one went to the client: the response has started.
    Sent,
}

/// The response, as far as it has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Response {
    /// Its final head is awaited, after `interims`.
    Head { interims: Interims },
    /// Its body streams (or has ended, once `body` is done).
    Body {
        body: BodyTracker,
        /// The client connection is kept after it.
        keep_client: bool,
        /// The origin said it keeps its connection.
        origin_keep_alive: bool,
    },
}

impl Response {
    fn started(&self) -> bool {
        match self {
            Response::Head { interims } => *interims == Interims::Sent,
            Response::Body { .. } => true,
        }
    }
}

/// What a connection waiting for a request head has from before.
// Inline, as every state is: the core has no heap, and the state is no larger for it (`Exchanging` is).
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Before {
    /// No request yet: silence past the timeout is 408, not the end.
    Nothing,
    /// A response went whole: silence is the normal end. `kept`: the origin connection the driver kept open for
    /// the next request to the same origin. `idle_since`: when the response went, while nothing of the next
    /// request has come (the connection may then be reclaimed for a new client).
    Served {
        kept: Option<KeptOrigin>,
        idle_since: Option<Instant>,
    },
}

/// How far a request being forwarded has come.
#[derive(Debug)]
enum Stage {
    /// The driver looks the origin's name up.
    Resolving,
    /// Connecting to `current`; `rest` are tried after it.
    Connecting {
        current: SocketAddr,
        rest: Candidates,
    },
    /// The request goes to `origin` and its response comes back.
    Exchanging { origin: Origin, response: Response },
    /// `CONNECT`: bytes both ways with `origin`.
    Tunnel { origin: SocketAddr },
}

/// A connection's state, with the data that exists in it.
// Inline: the core has no heap; a connection is as large as its largest state, wherever it is kept.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum State {
    /// Waiting for a request head.
    ReadingHead { before: Before },
    /// A request is forwarded: what is kept of it exists from its parsed head to the end of its response, and
    /// stays in place while its stage moves on.
    Forwarding { request: Request, stage: Stage },
    /// Over.
    Closed,
}

/// Where a connection goes: the argument of [`ProxyConnection::enter`].
#[allow(clippy::large_enum_variant)]
enum Next {
    /// Back to waiting for a head.
    ReadingHead(Before),
    /// A request starts to be forwarded.
    Forwarding(Request, Stage),
    /// The request being forwarded moves on to this stage.
    Stage(Stage),
    /// The end.
    Closed,
}

impl Stage {
    /// The exchange with `origin`, its response's head awaited.
    fn exchanging(origin: Origin) -> Stage {
        Stage::Exchanging {
            origin,
            response: Response::Head {
                interims: Interims::None,
            },
        }
    }
}

impl State {
    fn name(&self) -> &'static str {
        match self {
            State::ReadingHead { .. } => "ReadingHead",
            State::Forwarding { stage, .. } => match stage {
                Stage::Resolving => "Resolving",
                Stage::Connecting { .. } => "Connecting",
                Stage::Exchanging { .. } => "Exchanging",
                Stage::Tunnel { .. } => "Tunnel",
            },
            State::Closed => "Closed",
        }
    }

    fn request(&self) -> Option<&Request> {
        match self {
            State::Forwarding { request, .. } => Some(request),
            State::ReadingHead { .. } | State::Closed => None,
        }
    }

    fn stage(&self) -> Option<&Stage> {
        match self {
            State::Forwarding { stage, .. } => Some(stage),
            State::ReadingHead { .. } | State::Closed => None,
        }
    }
}

/// One client connection of the proxy, as a protocol.
#[derive(Debug)]
pub struct ProxyConnection {
    client: IpAddr,
    state: State,
    deadline: Instant,
    stats: ProxyStats,
}

impl ProxyConnection {
    /// A client that just connected: checked against `--allow` (403) and against the load, `busy` connections
    /// being served already (503 at [`Limits::max_connections`]). A refused client's page is written into `out`.
    pub fn admit(
        cx: &ProxyContext<'_>,
        client: IpAddr,
        busy: usize,
        now: Instant,
        out: &mut [u8],
    ) -> Admission {
        let refusal = match cx.policy.check_client(client) {
            Err(error) => Some((error, None)),
            Ok(()) if busy >= cx.limits.max_connections => {
                Some((ProxyError::AtCapacity, Some(cx.limits.max_connections)))
            }
            Ok(()) => None,
        };
        match refusal {
            Some((error, capacity)) => {
                ProxyEvent::Refused {
                    client,
                    error,
                    capacity,
                }
                .log();
                Admission::Refuse {
                    len: write_page(error, out),
                }
            }
            None => Admission::Serve(ProxyConnection {
                client,
                state: State::ReadingHead {
                    before: Before::Nothing,
                },
                deadline: now + cx.limits.timeout,
                stats: ProxyStats {
                    accepted: 1,
                    ..ProxyStats::default()
                },
            }),
        }
    }

    /// The client's address.
    pub fn client(&self) -> IpAddr {
        self.client
    }

    /// Where the connection is.
    pub fn phase(&self) -> Phase {
        match &self.state {
            State::ReadingHead { .. } => Phase::ReadingHead,
            State::Forwarding { stage, .. } => match stage {
                Stage::Resolving => Phase::Resolving,
                Stage::Connecting { .. } => Phase::Connecting,
                Stage::Exchanging { response, .. } => Phase::Exchanging(match response {
                    Response::Head { .. } => ResponsePhase::Head,
                    Response::Body { body, .. } if body.is_done() => ResponsePhase::Complete,
                    Response::Body { .. } => ResponsePhase::Body,
                }),
                Stage::Tunnel { .. } => Phase::Tunnel,
            },
            State::Closed => Phase::Closed,
        }
    }

    /// When the connection's current wait ends ([`ProxyConnection::on_timeout`], or for a head,
    /// [`ProxyConnection::on_client_head`], decides what then); `None` once closed.
    pub fn deadline(&self) -> Option<Instant> {
        match self.state {
            State::Closed => None,
            _ => Some(self.deadline),
        }
    }

    /// When the connection went idle between requests (its response went whole and nothing of the next request
    /// has come), or `None` if it is not idle. A full pool reclaims the one idle longest
    /// ([`ProxyConnection::reclaim`], chosen by [`longest_idle`]) before it refuses a new client.
    pub fn idle_since(&self) -> Option<Instant> {
        match self.state {
            State::ReadingHead {
                before: Before::Served { idle_since, .. },
            } => idle_since,
            _ => None,
        }
    }

    /// Closes a connection idle between requests to admit a new client, as nginx does with its kept-alive
    /// connections when it runs out: `Some(Ending::Close)` (the client sees its kept connection close, as at a
    /// keep-alive timeout), logged. `None`, and nothing done, if it is not idle.
    pub fn reclaim(&mut self) -> Option<Ending> {
        self.idle_since()?;
        ProxyEvent::Reclaimed {
            client: self.client,
        }
        .log();
        Some(self.close(Ending::Close))
    }

    /// What this connection has done.
    pub fn stats(&self) -> ProxyStats {
        self.stats
    }

    /// The request line being served, for a driver's own messages.
    pub fn request_line(&self) -> Option<&str> {
        self.state.request().map(|r| r.line.as_str())
    }

    /// The origin address being connected to or exchanged with.
    pub fn origin(&self) -> Option<SocketAddr> {
        match self.state.stage()? {
            Stage::Resolving => None,
            Stage::Connecting { current, .. } => Some(*current),
            Stage::Exchanging { origin, .. } => Some(origin.addr),
            Stage::Tunnel { origin } => Some(*origin),
        }
    }

    /// Whether any byte of the response (or the tunnel's `200`) has been handed to the driver for the client:
    /// from then on, a failure can only reset the client's connection.
    pub fn response_started(&self) -> bool {
        match self.state.stage() {
            Some(Stage::Exchanging { response, .. }) => response.started(),
            Some(Stage::Tunnel { .. }) => true,
            _ => false,
        }
    }

    /// Whether the client waits for `100 Continue` before it sends its body.
    pub fn expects_continue(&self) -> bool {
        self.state.request().is_some_and(|r| r.expects_continue)
    }

    /// The request body's tracker while exchanging: it says how many of the client's bytes still belong to the
    /// body (pass them through [`BodyTracker::advance`] on their way to the origin).
    pub fn request_body(&mut self) -> Option<&mut BodyTracker> {
        match &mut self.state {
            State::Forwarding {
                request,
                stage: Stage::Exchanging { .. },
            } => Some(&mut request.body),
            _ => None,
        }
    }

    /// The response body's tracker once the final head is read: it says how many of the origin's bytes still
    /// belong to the body.
    pub fn response_body(&mut self) -> Option<&mut BodyTracker> {
        match &mut self.state {
            State::Forwarding {
                stage:
                    Stage::Exchanging {
                        response: Response::Body { body, .. },
                        ..
                    },
                ..
            } => Some(body),
            _ => None,
        }
    }

    /// Bytes moved (`body_bytes` of them body or tunnel bytes): an exchange or a tunnel that moves is not
    /// stalled, so its deadline moves on.
    pub fn on_progress(&mut self, limits: &Limits, now: Instant, body_bytes: usize) {
        self.stats.body_bytes += body_bytes as u64;
        match self.state.stage() {
            Some(Stage::Exchanging { .. }) => self.deadline = now + limits.timeout,
            Some(Stage::Tunnel { .. }) => self.deadline = now + limits.tunnel_idle,
            // A head's deadline is for the whole head (a byte at a time does not move it); a lookup's and a
            // connection's are the request's.
            _ => {}
        }
    }

    /// The deadline has passed (call once `now` reaches [`ProxyConnection::deadline`]): what ends. `None` while
    /// reading a head (hand the bytes to [`ProxyConnection::on_client_head`], which decides) or before the
    /// deadline.
    pub fn on_timeout(&mut self, now: Instant, out: &mut [u8]) -> Option<Ending> {
        if now < self.deadline {
            return None;
        }
        Some(match self.state.stage()? {
            Stage::Resolving => self.answer(ProxyError::OriginUnresolvable, out),
            Stage::Connecting { .. } => self.answer(ProxyError::OriginTimeout, out),
            Stage::Exchanging { response, .. } if !response.started() => {
                self.answer(ProxyError::OriginTimeout, out)
            }
            Stage::Exchanging { .. } => self.peer_reset(ResetCause::Stalled, Ending::ResetBoth),
            Stage::Tunnel { .. } => self.close(Ending::Close),
        })
    }

    /// Something went wrong that only the driver sees. A failure that cannot happen where the connection is (a
    /// body failing while no request is exchanged, anything once it is closed) is the driver's bug.
    pub fn on_failure(&mut self, failure: Failure, out: &mut [u8]) -> Ending {
        let started = self.response_started();
        let (exchanging, body) = match self.state.stage() {
            Some(Stage::Exchanging { response, .. }) => {
                (true, matches!(response, Response::Body { .. }))
            }
            _ => (false, false),
        };
        match (failure, &self.state) {
            (_, State::Closed) => self.bug("on_failure"),
            // Between requests the client may go as it likes.
            (Failure::ClientReset, State::ReadingHead { .. }) => self.close(Ending::ResetBoth),
            // Before any response byte, the origin gets a FIN behind what it was sent (an upload that broke
            // off is seen as short); after, both are reset.
            (Failure::ClientReset, _) if !started => {
                self.peer_reset(ResetCause::ClientReset, Ending::ResetClient)
            }
            (Failure::ClientReset, _) => {
                self.peer_reset(ResetCause::ClientReset, Ending::ResetBoth)
            }
            (Failure::ClientClosedMidBody, _) if exchanging => {
                self.peer_reset(ResetCause::ClientClosedMidBody, Ending::ResetClient)
            }
            (Failure::MalformedRequestBody, _) if exchanging => {
                self.answer(ProxyError::MalformedBody, out)
            }
            (Failure::MalformedResponseBody, _) if body => {
                self.peer_reset(ResetCause::MalformedResponseBody, Ending::ResetBoth)
            }
            (Failure::TunnelPeerReset, _)
                if matches!(self.state.stage(), Some(Stage::Tunnel { .. })) =>
            {
                self.peer_reset(ResetCause::TunnelPeerReset, Ending::ResetBoth)
            }
            _ => self.bug("on_failure"),
        }
    }

    /// A step of the driver's ended: bytes moved (`moved`, `body_bytes` of them body or tunnel bytes), which
    /// moves the deadline on, or nothing did, and the deadline may have passed. `Some`: the connection ends.
    pub fn after_step(
        &mut self,
        limits: &Limits,
        now: Instant,
        moved: bool,
        body_bytes: usize,
        out: &mut [u8],
    ) -> Option<Ending> {
        match moved || body_bytes > 0 {
            true => {
                self.on_progress(limits, now, body_bytes);
                None
            }
            false => self.on_timeout(now, out),
        }
    }

    /// The driver found itself in a place its design cannot be in (a socket missing, a query lost): its own bug,
    /// logged as one; the connection ends with resets.
    pub fn driver_bug(&mut self, what: &'static str) -> Ending {
        self.bug(what)
    }

    /// Both ends of the tunnel have closed and every byte is across.
    pub fn on_tunnel_closed(&mut self) -> Ending {
        match self.state.stage() {
            Some(Stage::Tunnel { .. }) => self.close(Ending::Close),
            _ => self.bug("on_tunnel_closed"),
        }
    }

    /// Moves to `next`: the one place a connection changes state, traced. A request being forwarded stays where it
    /// is while its stage moves on ([`Next::Stage`], which only a forwarding connection is ever given).
    fn enter(&mut self, next: Next) {
        let from = self.state.name();
        match next {
            Next::ReadingHead(before) => self.state = State::ReadingHead { before },
            Next::Forwarding(request, stage) => self.state = State::Forwarding { request, stage },
            Next::Stage(next) => {
                if let State::Forwarding { stage, .. } = &mut self.state {
                    *stage = next;
                }
            }
            Next::Closed => self.state = State::Closed,
        }
        ProxyEvent::Transition {
            client: self.client,
            from,
            to: self.state.name(),
        }
        .log();
    }

    /// Ends the connection with `ending`.
    fn close(&mut self, ending: Ending) -> Ending {
        self.enter(Next::Closed);
        ending
    }

    /// The proxy answers `error` itself: with its page in `out` if no response byte went out yet, else with
    /// resets.
    fn answer(&mut self, error: ProxyError, out: &mut [u8]) -> Ending {
        self.stats.errors += 1;
        ProxyEvent::Answer {
            client: self.client,
            error,
            line: self.request_line(),
        }
        .log();
        let ending = match self.response_started() {
            true => Ending::ResetBoth,
            false => Ending::Answer {
                len: write_page(error, out),
            },
        };
        self.close(ending)
    }

    /// The proxy answers `error` to the request whose head it just read (`line`), before it is the state's.
    fn refuse(&mut self, line: &RequestLine, error: ProxyError, out: &mut [u8]) -> Ending {
        self.stats.errors += 1;
        ProxyEvent::Answer {
            client: self.client,
            error,
            line: Some(line.as_str()),
        }
        .log();
        let len = write_page(error, out);
        self.close(Ending::Answer { len })
    }

    /// An exchange broke off: logged with its cause, and ended with `ending`.
    fn peer_reset(&mut self, cause: ResetCause, ending: Ending) -> Ending {
        let line = self.request_line().unwrap_or("-");
        ProxyEvent::PeerReset {
            client: self.client,
            line,
            cause,
        }
        .log();
        self.close(ending)
    }

    /// A driver asked for something the state does not allow: logged as the bug it is, and the connection reset.
    fn bug(&mut self, call: &'static str) -> Ending {
        ProxyEvent::Bug {
            client: self.client,
            call,
            state: self.state.name(),
        }
        .log();
        self.close(Ending::ResetBoth)
    }

    /// A debug line for an origin that could not be reached.
    fn unreachable(&self, origin: OriginName<'_>, why: &dyn core::fmt::Display) {
        ProxyEvent::OriginUnreachable {
            client: self.client,
            origin,
            why,
        }
        .log();
    }
}

/// Whether a client arriving while `busy` connections are served finds the pool full: then the connection idle
/// longest is reclaimed first ([`longest_idle`], [`ProxyConnection::reclaim`]), and only if none is idle is the
/// client refused (503, by [`ProxyConnection::admit`]).
pub fn pool_is_full(limits: &Limits, busy: usize) -> bool {
    busy >= limits.max_connections
}

/// Of the connections given with their [`ProxyConnection::idle_since`], the one idle longest.
pub fn longest_idle<K>(connections: impl IntoIterator<Item = (K, Option<Instant>)>) -> Option<K> {
    connections
        .into_iter()
        .filter_map(|(key, since)| since.map(|since| (key, since)))
        .min_by_key(|&(_, since)| since)
        .map(|(key, _)| key)
}

/// Writes `error`'s whole answer into `out`; returns its length (what fitted, if `out` is too small).
fn write_page(error: ProxyError, out: &mut [u8]) -> usize {
    let mut page = HeadWriter::new(out);
    let _ = error.write_response(&mut page);
    page.len()
}

#[cfg(test)]
mod tests;
