//! The driver's answer to what happens, phase by phase: the calls a correct driver makes (as the smoltcp slot
//! and the host's designs do), each checked as it returns.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use smoltalk_core::http::{BodyFraming, RequestHead, EMPTY_HEADER, MAX_HEADERS};
use smoltalk_core::proxy::engine::{
    AfterResponse, Connected, Ending, Failure, Forward, HeadStep, Phase, ProxyConnection,
    ResponsePhase, ResponseStep,
};

use super::checks::{self, Sent};
use super::shadow::{Kept, Shadow};
use super::{Driver, Next, Peer};

/// Addresses a lookup may answer with: origins, the proxy's own, loopback, ones not allowed, odd ones.
pub(super) const ADDRESSES: [IpAddr; 10] = [
    IpAddr::V4(Ipv4Addr::new(10, 0, 2, 80)),
    IpAddr::V4(Ipv4Addr::new(10, 0, 2, 81)),
    IpAddr::V4(Ipv4Addr::new(10, 0, 2, 82)),
    IpAddr::V4(Ipv4Addr::LOCALHOST),
    IpAddr::V4(super::PROXY_IP),
    IpAddr::V6(Ipv6Addr::LOCALHOST),
    IpAddr::V4(Ipv4Addr::new(192, 168, 7, 7)),
    IpAddr::V6(Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0x0a00, 0x0253)),
    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
    IpAddr::V4(Ipv4Addr::UNSPECIFIED),
];

/// How many bytes a relay takes at once: all, or a piece.
fn piece(byte: u8, available: usize) -> usize {
    match byte {
        0..=127 => available,
        b => available.min(usize::from(b % 16) + 1),
    }
}

impl Driver<'_, '_> {
    pub(super) fn reading(
        &mut self,
        conn: &mut ProxyConnection,
        st: &mut Shadow,
        op: u8,
    ) -> Option<Ending> {
        match op % 64 {
            0..=57 => self.client_sends(),
            58 => self.client.done = true,
            59 | 60 => self.pass_time(conn),
            61 => return self.fail(conn, st, Failure::ClientReset),
            62 if st.kept.is_some() => {
                // The kept origin connection closes, or says something, while it idles.
                match self.input.byte() & 1 {
                    0 => self.origin.done = true,
                    _ => self.origin.inbound.push(b'H'),
                }
            }
            _ => {}
        }
        self.head(conn, st)
    }

    /// Hands the client's bytes to the engine, as a driver does whenever they may have changed.
    pub(super) fn head(&mut self, conn: &mut ProxyConnection, st: &mut Shadow) -> Option<Ending> {
        let limit = self.cx.limits.head;
        let given = self.client.inbound.len();
        let window = &self.client.inbound[..given.min(limit)];
        let parsed = Sent::parse(window);
        let idle = st.kept.is_some()
            && self.origin.inbound.is_empty()
            && !self.origin.done
            && self.input.byte() & 3 != 0;
        let deadline = conn.deadline().expect("reading a head without a deadline");
        if matches!(parsed, Ok(Some(_))) {
            st.requests += 1;
        }
        let step = conn.on_client_head(
            self.cx,
            &self.client.inbound,
            self.client.done,
            || idle,
            self.now,
            &mut self.out,
        );
        let (consumed, head_len, next) = match step {
            HeadStep::NeedMore => {
                assert!(
                    matches!(parsed, Ok(None))
                        && window.len() < limit
                        && !self.client.done
                        && self.now < deadline,
                    "NeedMore for {parsed:?} of {} bytes (done {}, {} / {deadline})",
                    window.len(),
                    self.client.done,
                    self.now
                );
                return None;
            }
            HeadStep::Forward(Forward {
                consumed,
                head_len,
                next,
            }) => (consumed, head_len, Next::of(next)),
            HeadStep::End(ending) => {
                let expected = match parsed {
                    Err(status) => Some(status),
                    Ok(None) if window.len() >= limit => {
                        Some(RequestHead::incomplete_error(window).status())
                    }
                    Ok(None) if window.is_empty() && (self.client.done || !st.first) => None,
                    Ok(None) if self.client.done => Some(400),
                    Ok(None) => Some(408),
                    Ok(Some(_)) => {
                        // Refused after parsing: a bad target, a loop, a port CONNECT may not reach, too big.
                        let status = match ending {
                            Ending::Answer { len } => checks::page(&self.out[..len]),
                            other => panic!("a parsed head ended with {other:?}"),
                        };
                        assert!([400, 403, 431, 508].contains(&status), "{status}");
                        return Some(ending);
                    }
                };
                match (expected, ending) {
                    (None, Ending::Close) => {}
                    (Some(status), Ending::Answer { len }) => {
                        assert_eq!(checks::page(&self.out[..len]), status)
                    }
                    other => panic!("{parsed:?} of {given} bytes: {other:?}"),
                }
                return Some(ending);
            }
        };
        let Ok(Some(sent)) = parsed else {
            panic!("forwarded a head that does not parse: {parsed:?}");
        };
        let head = &self.client.inbound[..consumed];
        assert!(
            consumed == sent.head_len
                && consumed <= given
                && consumed <= limit
                && (head.ends_with(b"\n\n") || head.ends_with(b"\n\r\n")),
            "took {consumed} of {given} bytes for a head of {}",
            sent.head_len
        );
        if !matches!(next, Next::End(_)) {
            checks::upstream(&sent, &self.out[..head_len]);
            assert_eq!(conn.deadline(), Some(self.now + self.timeout()));
        }
        self.client.take(consumed);
        self.forwarded(st, sent, idle, next)
    }

    pub(super) fn resolving(
        &mut self,
        conn: &mut ProxyConnection,
        st: &mut Shadow,
        op: u8,
    ) -> Option<Ending> {
        match op % 16 {
            0..=10 => {
                let count = usize::from(self.input.byte() % 7);
                let addresses: Vec<IpAddr> = (0..count)
                    .map(|_| ADDRESSES[usize::from(self.input.byte()) % ADDRESSES.len()])
                    .collect();
                let port = st.exchange.as_ref().map_or(0, |e| e.sent.port);
                let route = checks::route(self.cx.policy, self.setup.listen, &addresses, port);
                let next = Next::after(conn.on_resolved(self.cx, Ok(&addresses), &mut self.out));
                self.follow(st, route, next)
            }
            11 => {
                let next =
                    Next::after(conn.on_resolved(self.cx, Err(&"no such name"), &mut self.out));
                self.follow(st, Err(502), next)
            }
            12 | 13 => {
                self.pass_time(conn);
                self.on_timeout(conn, st)
            }
            14 => {
                self.client_sends();
                None
            }
            _ => self.fail(conn, st, Failure::ClientReset),
        }
    }

    pub(super) fn connecting(
        &mut self,
        conn: &mut ProxyConnection,
        st: &mut Shadow,
        op: u8,
    ) -> Option<Ending> {
        match op % 32 {
            0..=22 => self.connected(conn, st),
            23 | 24 => {
                let timed_out = op & 0x20 != 0;
                let expected = st.exchange.as_mut().and_then(|e| e.route.pop_front());
                let next = Next::after(conn.on_connect_failed(timed_out, &mut self.out));
                match (expected, next) {
                    (Some(addr), Next::Connect(next)) => {
                        assert_eq!(next, addr);
                        st.origin = Some(addr);
                        None
                    }
                    (None, next) => {
                        let status = if timed_out { 504 } else { 502 };
                        self.follow(st, Err(status), next)
                    }
                    other => panic!("after a failed connect: {other:?}"),
                }
            }
            25 | 26 => {
                self.pass_time(conn);
                self.on_timeout(conn, st)
            }
            27 | 28 => {
                self.client_sends();
                None
            }
            29 => {
                self.client.done = true;
                None
            }
            30 => self.fail(conn, st, Failure::ClientReset),
            _ => self.connected(conn, st),
        }
    }

    fn connected(&mut self, conn: &mut ProxyConnection, st: &mut Shadow) -> Option<Ending> {
        let exchange = st.exchange.as_mut().expect("connecting without a request");
        let step = conn.on_connected(self.cx, self.now, &mut self.out);
        self.origin = Peer::default();
        match step {
            Connected::Exchange => {
                assert!(!exchange.sent.is_tunnel());
                assert_eq!(conn.phase(), Phase::Exchanging(ResponsePhase::Head));
                assert_eq!(conn.deadline(), Some(self.now + self.timeout()));
            }
            Connected::Tunnel { len } => {
                assert!(exchange.sent.is_tunnel());
                checks::tunnel_reply(&self.out[..len]);
                exchange.started = true;
                st.tunnels += 1;
                self.outcome.tunnels += 1;
                assert_eq!(conn.phase(), Phase::Tunnel);
                assert_eq!(conn.deadline(), Some(self.now + self.cx.limits.tunnel_idle));
            }
            Connected::End(ending) => panic!("a connection made ended with {ending:?}"),
        }
        None
    }

    pub(super) fn exchanging(
        &mut self,
        conn: &mut ProxyConnection,
        st: &mut Shadow,
        op: u8,
        phase: ResponsePhase,
    ) -> Option<Ending> {
        match op % 32 {
            0..=3 => {
                self.client_sends();
                None
            }
            4..=7 => self.request_body(conn, st),
            8..=17 => {
                self.origin_sends(phase == ResponsePhase::Head);
                self.response(conn, st, phase)
            }
            18 => {
                self.origin.done = true;
                self.origin.reset = op & 0x20 != 0;
                self.response(conn, st, phase)
            }
            19..=22 if phase == ResponsePhase::Complete => self.response_sent(conn, st),
            23 => {
                self.pass_time(conn);
                self.on_timeout(conn, st)
            }
            24 => {
                conn.on_progress(self.cx.limits, self.now, 0);
                assert_eq!(conn.deadline(), Some(self.now + self.timeout()));
                None
            }
            25 => {
                self.client.done = true;
                self.request_body(conn, st)
            }
            26 => self.fail(conn, st, Failure::ClientReset),
            // A write to the origin failed: the driver stops writing and reads on, and finds the connection reset.
            27 if phase == ResponsePhase::Head => {
                self.origin.done = true;
                self.origin.reset = true;
                self.response(conn, st, phase)
            }
            // The kept connection had been closed by the origin as the request went out on it.
            28 | 29 if st.exchange.as_ref().is_some_and(|e| e.reused) => {
                self.origin.done = true;
                self.origin.reset = op & 0x20 != 0;
                self.response(conn, st, phase)
            }
            _ => self.response(conn, st, phase),
        }
    }

    /// Moves the client's bytes that belong to the request body through the engine's tracker.
    fn request_body(&mut self, conn: &mut ProxyConnection, st: &mut Shadow) -> Option<Ending> {
        let take = piece(self.input.byte(), self.client.inbound.len());
        let body = conn
            .request_body()
            .expect("exchanging without a request body tracker");
        if body.is_done() {
            return None;
        }
        if self.client.inbound.is_empty() {
            return match self.client.done {
                true => self.fail(conn, st, Failure::ClientClosedMidBody),
                false => None,
            };
        }
        match body.advance(&self.client.inbound[..take]) {
            Ok(n) => {
                assert!(n <= take && (n == take || body.is_done()));
                self.client.take(n);
                self.progress(conn, st, n);
                None
            }
            Err(_) => self.fail(conn, st, Failure::MalformedRequestBody),
        }
    }

    fn progress(&mut self, conn: &mut ProxyConnection, st: &mut Shadow, bytes: usize) {
        if bytes > 0 {
            conn.on_progress(self.cx.limits, self.now, bytes);
            st.body_bytes += bytes as u64;
        }
    }

    /// Hands the origin's bytes to the engine: its response head, or its body through the tracker.
    fn response(
        &mut self,
        conn: &mut ProxyConnection,
        st: &mut Shadow,
        phase: ResponsePhase,
    ) -> Option<Ending> {
        match phase {
            ResponsePhase::Head => self.response_head(conn, st),
            ResponsePhase::Body => {
                let take = piece(self.input.byte(), self.origin.inbound.len());
                let body = conn
                    .response_body()
                    .expect("a response body without its tracker");
                match body.advance(&self.origin.inbound[..take]) {
                    Ok(n) => {
                        assert!(n <= take && (n == take || body.is_done()));
                        let done = body.is_done();
                        self.origin.take(n);
                        self.progress(conn, st, n);
                        if done || !self.origin.done || !self.origin.inbound.is_empty() {
                            return None;
                        }
                        let until_close = conn.response_body().is_some_and(|b| b.ends_at_close());
                        let ending = conn.on_origin_finished(self.origin.reset);
                        match ending {
                            None => {
                                assert!(until_close && !self.origin.reset);
                                assert_eq!(
                                    conn.phase(),
                                    Phase::Exchanging(ResponsePhase::Complete)
                                );
                            }
                            Some(ending) => assert_eq!(ending, Ending::ResetBoth),
                        }
                        ending
                    }
                    Err(_) => self.fail(conn, st, Failure::MalformedResponseBody),
                }
            }
            // What the origin sends after its response stays where it is (the connection is not clean).
            ResponsePhase::Complete => None,
        }
    }

    fn response_head(&mut self, conn: &mut ProxyConnection, st: &mut Shadow) -> Option<Ending> {
        let limit = self.cx.limits.response_head;
        let exchange = st.exchange.as_mut().expect("a response without a request");
        let given = self.origin.inbound.len();
        let window = &self.origin.inbound[..given.min(limit)];
        let parsed = checks::origin_head(window, exchange.sent.method);
        let body_done = conn.request_body().is_some_and(|b| b.is_done());
        exchange.origin_bytes |= !window.is_empty();
        // As much room for fields as `checks::origin_head` gives its parser.
        let step = conn.on_response_head(
            self.cx,
            &self.origin.inbound,
            self.origin.done,
            &mut [EMPTY_HEADER; MAX_HEADERS],
            &mut self.out,
        );
        let (consumed, len, interim) = match step {
            ResponseStep::NeedMore => {
                assert!(matches!(parsed, Ok(None)) && window.len() < limit && !self.origin.done);
                return None;
            }
            ResponseStep::Retry(addr) => {
                assert!(self.origin.done && window.is_empty());
                self.retried(conn, st, addr);
                return None;
            }
            ResponseStep::End(ending) => {
                let expected = match parsed {
                    Err(status) => status,
                    Ok(None) if window.len() >= limit || self.origin.done => 502,
                    // The head did not fit the client's buffer.
                    Ok(Some(_)) => 502,
                    Ok(None) => panic!("the engine ended a response head it could still wait for"),
                };
                if let Ending::Answer { len } = ending {
                    assert_eq!(checks::page(&self.out[..len]), expected);
                } else {
                    assert_eq!(ending, Ending::ResetBoth);
                    assert!(exchange.started, "a reset before the response started");
                }
                return Some(ending);
            }
            ResponseStep::Head {
                consumed,
                len,
                interim,
            } => (consumed, len, interim),
        };
        let Ok(Some(answered)) = parsed else {
            panic!("a response head taken that does not parse: {parsed:?}");
        };
        assert!(consumed == answered.head_len && consumed <= given && interim == answered.interim);
        let sent = &exchange.sent;
        let keep = sent.keep_alive && answered.framing != BodyFraming::UntilClose && body_done;
        if interim && sent.minor_version == 0 {
            assert_eq!(len, 0, "an interim head for an HTTP/1.0 client");
            exchange.withheld_interim = true;
        } else {
            let close = checks::client_head(sent, &answered, keep, &self.out[..len]);
            exchange.started = true;
            if !interim {
                exchange.final_head = Some((answered, close));
            }
        }
        self.origin.take(consumed);
        if interim {
            self.outcome.interim += 1;
            assert_eq!(conn.phase(), Phase::Exchanging(ResponsePhase::Head));
        } else {
            st.responses += 1;
            self.outcome.responses += 1;
            assert!(matches!(
                conn.phase(),
                Phase::Exchanging(ResponsePhase::Body | ResponsePhase::Complete)
            ));
        }
        None
    }

    /// The whole response has gone to the client.
    fn response_sent(&mut self, conn: &mut ProxyConnection, st: &mut Shadow) -> Option<Ending> {
        let clean = !self.origin.done && self.origin.inbound.is_empty();
        let origin_clean = clean && self.input.byte() & 7 != 0;
        let body_done = conn.request_body().is_some_and(|b| b.is_done());
        let exchange = st.exchange.take().expect("a response without a request");
        let (answered, close) = exchange.final_head.expect("complete without a final head");
        let after = conn.on_response_sent(self.cx, origin_clean, self.now);
        match after {
            AfterResponse::NextRequest { keep_origin } => {
                assert!(!close && exchange.sent.keep_alive, "{exchange:?}");
                assert_eq!(
                    keep_origin,
                    answered.keep_alive && origin_clean && body_done
                );
                assert_eq!(conn.phase(), Phase::ReadingHead);
                assert_eq!(conn.deadline(), Some(self.now + self.timeout()));
                self.outcome.next_requests += 1;
                match keep_origin {
                    true => {
                        self.outcome.kept_origins += 1;
                        st.kept = st.origin.map(|addr| Kept {
                            host: exchange.sent.host.clone(),
                            port: exchange.sent.port,
                            addr,
                        });
                    }
                    false => self.origin = Peer::default(),
                }
                None
            }
            AfterResponse::End(ending) => {
                assert!(
                    close && ending == Ending::Close,
                    "{ending:?} after {exchange:?}"
                );
                st.exchange = Some(exchange);
                Some(ending)
            }
        }
    }

    pub(super) fn tunnel(
        &mut self,
        conn: &mut ProxyConnection,
        st: &mut Shadow,
        op: u8,
    ) -> Option<Ending> {
        match op % 16 {
            0..=9 => {
                let bytes = usize::from(self.input.byte());
                conn.on_progress(self.cx.limits, self.now, bytes);
                st.body_bytes += bytes as u64;
                assert_eq!(conn.deadline(), Some(self.now + self.cx.limits.tunnel_idle));
                None
            }
            10 => {
                let ending = conn.on_tunnel_closed();
                assert_eq!(ending, Ending::Close);
                Some(ending)
            }
            11 => self.fail(conn, st, Failure::TunnelPeerReset),
            12 | 13 => {
                self.pass_time(conn);
                self.on_timeout(conn, st)
            }
            _ => self.fail(conn, st, Failure::ClientReset),
        }
    }
}
