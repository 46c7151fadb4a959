//! From a request head to a connected origin: taking the head (the 414/431/400/408 rules, the checks, the
//! rewritten head), finding the origin (the kept connection, `--resolve`, a literal, a lookup), and connecting to
//! its addresses in turn.

use core::fmt::Display;
use core::net::{IpAddr, SocketAddr};

use smoltcp::time::Instant;

use crate::http::rewrite::{tunnel_established, OPTIONS_ANSWER};
use crate::http::{HeadWriter, ProxyError, RequestHead, MAX_HEADERS};

use super::super::event::{OriginName, ProxyEvent};
use super::origin::{lookup, Candidates, Lookup};
use super::request::{Request, RequestLine};
use super::{
    Before, ConnectStep, Connected, Ending, Forward, HeadStep, Next, Origin, OriginStep,
    ProxyConnection, ProxyContext, Stage, State,
};

impl ProxyConnection {
    /// The client's bytes not yet taken (`bytes`: from the start of the next request head; only the first
    /// [`Limits::head`](super::super::Limits::head) are looked at), whether the client has closed its sending
    /// side (`client_done`), and how to ask whether the origin connection kept from the last exchange is still
    /// open and silent (`origin_idle`, asked only when that connection could carry the request: a check may cost
    /// the driver a system call; `false` if there is no such connection).
    ///
    /// A head that does not end within the limit is 414 or 431; an unfinished head at the client's close is
    /// 400; the deadline passing is 408, except on a kept connection with nothing sent, which ends quietly, as
    /// does a client that closes between requests. A whole head is logged, checked (508, 403, 431) and
    /// rewritten into `out`; then the origin is looked for.
    pub fn on_client_head<'c>(
        &'c mut self,
        cx: &ProxyContext<'_>,
        bytes: &[u8],
        client_done: bool,
        origin_idle: impl FnOnce() -> bool,
        now: Instant,
        out: &mut [u8],
    ) -> HeadStep<'c> {
        let State::ReadingHead { before } = &self.state else {
            return HeadStep::End(self.bug("on_client_head"));
        };
        let first = matches!(before, Before::Nothing);
        let limit = cx.limits.head;
        let window = bytes.get(..limit).unwrap_or(bytes);
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let head = match RequestHead::parse(window, &mut headers) {
            Ok(Some(head)) => head,
            Err(error) => return HeadStep::End(self.answer(error, out)),
            Ok(None) if window.len() >= limit => {
                let error = RequestHead::incomplete_error(window);
                return HeadStep::End(self.answer(error, out));
            }
            Ok(None) if client_done => {
                return HeadStep::End(match window.is_empty() {
                    // The client closed its side between requests (or before its first): the normal end.
                    true => self.close(Ending::Close),
                    false => self.answer(ProxyError::MalformedHead, out),
                });
            }
            Ok(None) if now >= self.deadline => {
                return HeadStep::End(match window.is_empty() && !first {
                    // A kept connection left idle between requests: the normal end.
                    true => self.close(Ending::Close),
                    // Half a head, or no request at all (an idle or slowloris connection).
                    false => self.answer(ProxyError::HeadTimeout, out),
                });
            }
            Ok(None) => {
                // Part of the next request has come: the connection is no longer idle.
                if let State::ReadingHead {
                    before: Before::Served { idle_since, .. },
                } = &mut self.state
                {
                    if !window.is_empty() {
                        *idle_since = None;
                    }
                }
                return HeadStep::NeedMore;
            }
        };
        self.stats.requests += 1;
        let consumed = head.head_len;
        let Some(request) = Request::keep(&head) else {
            let line = RequestLine::of(&head);
            self.log_request(line.as_str());
            return HeadStep::End(self.refuse(&line, ProxyError::BadTarget, out));
        };
        self.log_request(request.line.as_str());
        if head.max_forwards() == Some(0) {
            return HeadStep::End(self.answer_options(&request.line, out));
        }
        let head_len = match Request::check_and_rewrite(&head, cx.policy, out) {
            Ok(len) => len,
            Err(error) => return HeadStep::End(self.refuse(&request.line, error, out)),
        };
        // Resolving, connecting and the exchange share one timeout from here; progress moves it on.
        self.deadline = now + cx.limits.timeout;
        let next = self.find_origin(cx, request, origin_idle, out);
        HeadStep::Forward(Forward {
            consumed,
            head_len,
            next,
        })
    }

    /// An `OPTIONS` request with `Max-Forwards: 0` is addressed to the proxy, which answers it (RFC 9110
    /// §7.6.2) and closes, as after its other answers.
    fn answer_options(&mut self, line: &RequestLine, out: &mut [u8]) -> Ending {
        ProxyEvent::Options {
            client: self.client,
            line: line.as_str(),
        }
        .log();
        let mut answer = HeadWriter::new(out);
        if answer.push(OPTIONS_ANSWER).is_err() {
            return self.bug("on_client_head (no room for the OPTIONS answer)");
        }
        let len = answer.len();
        self.close(Ending::Answer { len })
    }

    fn log_request(&self, line: &str) {
        ProxyEvent::Request {
            client: self.client,
            line,
        }
        .log();
    }

    /// The kept origin connection if it may carry the request; else `--resolve`, a literal, or a lookup.
    fn find_origin(
        &mut self,
        cx: &ProxyContext<'_>,
        request: Request,
        origin_idle: impl FnOnce() -> bool,
        out: &mut [u8],
    ) -> OriginStep<'_> {
        let kept = match &mut self.state {
            State::ReadingHead {
                before: Before::Served { kept, .. },
            } => kept.take(),
            _ => None,
        };
        let reusable = kept.filter(|kept| {
            kept.may_carry(
                &request.host,
                request.port,
                request.is_tunnel(),
                origin_idle,
            )
        });
        if let Some(kept) = reusable {
            let origin = Origin {
                addr: kept.addr,
                reused: true,
            };
            self.enter(Next::Forwarding(request, Stage::exchanging(origin)));
            return OriginStep::Reuse;
        }
        let known = match lookup(cx.policy, &request.host, cx.can_look_up) {
            Ok(Lookup::Known(ip)) => ip,
            Ok(Lookup::Ask) => {
                self.enter(Next::Forwarding(request, Stage::Resolving));
                return match &self.state {
                    State::Forwarding { request, .. } => OriginStep::LookUp(request.host.as_str()),
                    // Cannot happen: the state was entered just above (and the borrow it lends forbids the
                    // logging `bug` here).
                    _ => OriginStep::End(Ending::ResetBoth),
                };
            }
            Err(error) => return OriginStep::End(self.refuse(&request.line, error, out)),
        };
        match Candidates::choose(cx.policy, &cx.own, &[known], request.port) {
            Ok((current, rest)) => {
                self.enter(Next::Forwarding(
                    request,
                    Stage::Connecting { current, rest },
                ));
                OriginStep::Connect(current)
            }
            Err(error) => OriginStep::End(self.refuse(&request.line, error, out)),
        }
    }

    /// The driver's lookup of the name [`OriginStep::LookUp`] gave: its addresses, or why it failed. The
    /// addresses are checked (508, 502, 403) and tried in turn, starting with the first.
    pub fn on_resolved(
        &mut self,
        cx: &ProxyContext<'_>,
        addresses: Result<&[IpAddr], &dyn Display>,
        out: &mut [u8],
    ) -> ConnectStep {
        let State::Forwarding {
            request,
            stage: Stage::Resolving,
        } = &self.state
        else {
            return ConnectStep::End(self.bug("on_resolved"));
        };
        let addresses = match addresses {
            Ok(addresses) => addresses,
            Err(why) => {
                self.unreachable(OriginName::Name(request.host.as_str()), why);
                return ConnectStep::End(self.answer(ProxyError::OriginUnresolvable, out));
            }
        };
        match Candidates::choose(cx.policy, &cx.own, addresses, request.port) {
            Ok((current, rest)) => {
                self.enter(Next::Stage(Stage::Connecting { current, rest }));
                ConnectStep::Connect(current)
            }
            Err(error) => ConnectStep::End(self.answer(error, out)),
        }
    }

    /// The connection to [`OriginStep::Connect`]'s address failed (`timed_out`: no answer in time rather than
    /// a refusal): the next address, or 502/504 once none is left.
    pub fn on_connect_failed(&mut self, timed_out: bool, out: &mut [u8]) -> ConnectStep {
        let State::Forwarding {
            stage: Stage::Connecting { current, rest },
            ..
        } = &mut self.state
        else {
            return ConnectStep::End(self.bug("on_connect_failed"));
        };
        let failed = *current;
        let next = rest.take_first();
        if let Some(next) = next {
            *current = next;
        }
        let why: &dyn Display = match timed_out {
            true => &"no answer in time",
            false => &"connection refused",
        };
        self.unreachable(OriginName::Address(failed), why);
        match next {
            Some(next) => ConnectStep::Connect(next),
            None if timed_out => ConnectStep::End(self.answer(ProxyError::OriginTimeout, out)),
            None => ConnectStep::End(self.answer(ProxyError::OriginRefused, out)),
        }
    }

    /// The origin accepted the connection: the exchange starts, or for `CONNECT` the tunnel (its `200` is
    /// written into `out`).
    pub fn on_connected(
        &mut self,
        cx: &ProxyContext<'_>,
        now: Instant,
        out: &mut [u8],
    ) -> Connected {
        let State::Forwarding {
            request,
            stage: Stage::Connecting { current, .. },
        } = &self.state
        else {
            return Connected::End(self.bug("on_connected"));
        };
        let origin = *current;
        if !request.is_tunnel() {
            self.deadline = now + cx.limits.timeout;
            let origin = Origin {
                addr: origin,
                reused: false,
            };
            self.enter(Next::Stage(Stage::exchanging(origin)));
            return Connected::Exchange;
        }
        let mut reply = HeadWriter::new(out);
        if tunnel_established(cx.policy.pseudonym, &mut reply).is_err() {
            // A buffer too small for sixty bytes is the driver's bug.
            return Connected::End(self.bug("on_connected (no room for the tunnel's reply)"));
        }
        let len = reply.len();
        self.stats.tunnels += 1;
        self.deadline = now + cx.limits.tunnel_idle;
        self.enter(Next::Stage(Stage::Tunnel { origin }));
        Connected::Tunnel { len }
    }

    /// The kept origin connection failed before it carried the request: the same request goes again, once, on a
    /// new connection to `addr`.
    pub(super) fn retry(&mut self, addr: SocketAddr) {
        ProxyEvent::Retry {
            client: self.client,
            origin: addr,
        }
        .log();
        self.enter(Next::Stage(Stage::Connecting {
            current: addr,
            rest: Candidates::default(),
        }));
    }
}
