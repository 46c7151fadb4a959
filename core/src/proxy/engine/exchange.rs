//! The exchange with the origin: its response heads (what the client gets, whether either connection is kept),
//! the end of its body, and the retry of a request whose kept origin connection turned out closed.

use smoltcp::time::Instant;

use crate::http::body::BodyTracker;
use crate::http::rewrite::client_response;
use crate::http::{BodyFraming, HeadWriter, ProxyError, ResponseHead};

use super::super::event::{ProxyEvent, ResetCause};
use super::origin::KeptOrigin;
use super::{
    AfterResponse, Before, Ending, Interims, Next, ProxyConnection, ProxyContext, Response,
    ResponseStep, Stage, State,
};

impl ProxyConnection {
    /// The origin's bytes not yet taken, from the start of its next response head (only the first
    /// [`Limits::response_head`](super::super::Limits::response_head) are looked at), whether the origin has
    /// finished sending (closed or reset), and room for the head's fields (a design with a heap gives
    /// [`ResponseHead::fields_in`] of `bytes`, so any head that fits the limit parses; one without, what it has).
    ///
    /// A head is logged and rewritten into `out` for the client: the origin's status and end-to-end headers,
    /// `Via`, and the client connection's fate, kept only if the client wants it, the body's framing allows it
    /// and the request body has gone whole. An interim head goes to an HTTP/1.1 client only. A head that does not
    /// end within the limit, has more fields than `fields` holds or does not fit `out` is 502 (too large); one
    /// that is not HTTP is 502; so is an origin that closes before its head is whole, unless it was a kept
    /// connection that never carried the request (then the request goes again, once).
    pub fn on_response_head<'b>(
        &mut self,
        cx: &ProxyContext<'_>,
        bytes: &'b [u8],
        origin_done: bool,
        fields: &mut [httparse::Header<'b>],
        out: &mut [u8],
    ) -> ResponseStep {
        let State::Forwarding {
            request,
            stage:
                Stage::Exchanging {
                    origin,
                    response: Response::Head { interims },
                },
        } = &self.state
        else {
            return ResponseStep::End(self.bug("on_response_head"));
        };
        let limit = cx.limits.response_head;
        let window = bytes.get(..limit).unwrap_or(bytes);
        let head = match ResponseHead::parse(window, fields, request.method) {
            Ok(Some(head)) => head,
            Ok(None) if window.len() >= limit => {
                return ResponseStep::End(self.answer(ProxyError::OriginHeadTooLarge, out))
            }
            Ok(None) if origin_done => return self.origin_lost(!window.is_empty(), out),
            Ok(None) => return ResponseStep::NeedMore,
            Err(error) => return ResponseStep::End(self.answer(error, out)),
        };
        ProxyEvent::Response {
            client: self.client,
            head: &head,
            origin: origin.addr,
        }
        .log();
        let interim = head.is_interim();
        let keep_client =
            request.keep_alive && head.framing != BodyFraming::UntilClose && request.body.is_done();
        let mut writer = HeadWriter::new(out);
        let written = client_response(
            &head,
            cx.policy.pseudonym,
            request.minor_version,
            keep_client,
            &mut writer,
        );
        // An HTTP/1.0 client does not know interim responses: they are not sent to it.
        let len = match interim && request.minor_version == 0 {
            true => 0,
            false => writer.len(),
        };
        let (consumed, framing, origin_keep_alive) = (head.head_len, head.framing, head.keep_alive);
        let interims = match (*interims, len > 0) {
            (Interims::Sent, _) | (_, true) => Interims::Sent,
            (Interims::None | Interims::Withheld, false) => Interims::Withheld,
        };
        if written.is_err() {
            return ResponseStep::End(self.answer(ProxyError::OriginHeadTooLarge, out));
        }
        let next = match interim {
            true => Response::Head { interims },
            false => {
                self.stats.responses += 1;
                Response::Body {
                    body: BodyTracker::new(framing),
                    keep_client,
                    origin_keep_alive,
                }
            }
        };
        if let State::Forwarding {
            stage: Stage::Exchanging { response, .. },
            ..
        } = &mut self.state
        {
            *response = next;
        }
        ResponseStep::Head {
            consumed,
            len,
            interim,
        }
    }

    /// The origin finished sending (`reset`: it reset the connection) while its response body streams. A body
    /// delimited by the close ends here; any other is cut short: both connections are reset. `None`: go on
    /// (send what is left, then [`ProxyConnection::on_response_sent`]).
    pub fn on_origin_finished(&mut self, reset: bool) -> Option<Ending> {
        let State::Forwarding {
            stage:
                Stage::Exchanging {
                    response: Response::Body { body, .. },
                    ..
                },
            ..
        } = &mut self.state
        else {
            return Some(self.bug("on_origin_finished"));
        };
        if body.is_done() {
            return None;
        }
        if body.ends_at_close() && !reset {
            *body = BodyTracker::new(BodyFraming::None);
            return None;
        }
        let cause = match reset {
            true => ResetCause::OriginResetMidResponse,
            false => ResetCause::OriginClosedMidResponse,
        };
        Some(self.peer_reset(cause, Ending::ResetBoth))
    }

    /// The whole response has gone to the client. `origin_clean`: the origin connection is open and nothing
    /// follows the response on it (bytes past a response mean the connection cannot carry another). The client
    /// connection is kept as the response head said; the origin connection too if the origin keeps it and the
    /// request body went whole.
    pub fn on_response_sent(
        &mut self,
        cx: &ProxyContext<'_>,
        origin_clean: bool,
        now: Instant,
    ) -> AfterResponse {
        let State::Forwarding {
            request,
            stage:
                Stage::Exchanging {
                    origin,
                    response:
                        Response::Body {
                            body,
                            keep_client,
                            origin_keep_alive,
                        },
                },
        } = &self.state
        else {
            return AfterResponse::End(self.bug("on_response_sent"));
        };
        if !body.is_done() {
            return AfterResponse::End(self.bug("on_response_sent (body not whole)"));
        }
        let keep_origin = *origin_keep_alive && origin_clean && request.body.is_done();
        if !*keep_client {
            return AfterResponse::End(self.close(Ending::Close));
        }
        let kept = keep_origin.then(|| KeptOrigin {
            host: request.host.clone(),
            port: request.port,
            addr: origin.addr,
        });
        self.deadline = now + cx.limits.timeout;
        self.enter(Next::ReadingHead(Before::Served {
            kept,
            idle_since: Some(now),
        }));
        AfterResponse::NextRequest { keep_origin }
    }

    /// The origin connection failed before the response head was whole (`partial`: some of it had come): once
    /// more on a new connection if it was a kept one, nothing of the response had come (not even an interim head
    /// the client did not see: then the origin had the request), and the request has no body and may be sent
    /// twice (RFC 9112 §9.3.1: a proxy retries only idempotent requests; the origin may have closed the connection
    /// while it idled); else 502.
    fn origin_lost(&mut self, partial: bool, out: &mut [u8]) -> ResponseStep {
        let retry = match &self.state {
            State::Forwarding {
                request,
                stage:
                    Stage::Exchanging {
                        origin,
                        response:
                            Response::Head {
                                interims: Interims::None,
                            },
                    },
            } => origin.reused && !request.has_body && request.method.is_idempotent() && !partial,
            _ => false,
        };
        match (retry, self.origin()) {
            (true, Some(addr)) => {
                self.retry(addr);
                ResponseStep::Retry(addr)
            }
            _ => ResponseStep::End(self.answer(ProxyError::OriginReset, out)),
        }
    }
}
