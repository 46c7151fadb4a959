//! The model of one connection the engine's answers are checked against: the request being served as the
//! harness parsed it, the origin connection kept for the next one, the counts the stats must match; and the
//! checks of what must hold after every call, of every ending, of every forwarded head, route and retry.

use std::collections::VecDeque;
use std::net::SocketAddr;

use smoltalk_core::http::BodyFraming;
use smoltalk_core::http::Method;
use smoltalk_core::proxy::engine::{Ending, Phase, ProxyConnection, ResponsePhase};
use smoltalk_core::proxy::ProxyStats;

use super::checks::{self, Answered, Sent};
use super::{Driver, Next, Peer};

/// The request being served, as the harness knows it.
#[derive(Debug)]
pub(super) struct Exchange {
    pub(super) sent: Sent,
    /// On the origin connection kept from the last exchange.
    pub(super) reused: bool,
    pub(super) retried: bool,
    /// Some of a response came from the origin on this connection.
    pub(super) origin_bytes: bool,
    /// An interim head came that an HTTP/1.0 client was not sent.
    pub(super) withheld_interim: bool,
    /// A byte of the response (or the tunnel's 200) went to the client.
    pub(super) started: bool,
    /// The final response head and whether the head written for the client said `Connection: close`.
    pub(super) final_head: Option<(Answered, bool)>,
    /// The addresses still to be tried, in order.
    pub(super) route: VecDeque<SocketAddr>,
}

impl Exchange {
    pub(super) fn new(sent: Sent) -> Exchange {
        Exchange {
            sent,
            reused: false,
            retried: false,
            origin_bytes: false,
            withheld_interim: false,
            started: false,
            final_head: None,
            route: VecDeque::new(),
        }
    }
}

/// The origin connection the driver keeps after an exchange, and for which request it was kept.
#[derive(Debug, Clone)]
pub(super) struct Kept {
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) addr: SocketAddr,
}

/// What the harness knows of the connection: the model the engine's answers are checked against.
#[derive(Debug, Default)]
pub(super) struct Shadow {
    /// No head was forwarded on this connection yet.
    pub(super) first: bool,
    pub(super) exchange: Option<Exchange>,
    pub(super) kept: Option<Kept>,
    pub(super) origin: Option<SocketAddr>,
    pub(super) stats: ProxyStats,
    pub(super) requests: u64,
    pub(super) responses: u64,
    pub(super) tunnels: u64,
    pub(super) body_bytes: u64,
}

impl Driver<'_, '_> {
    /// What must hold after every call.
    pub(super) fn check(&self, conn: &mut ProxyConnection, st: &mut Shadow) {
        let phase = conn.phase();
        assert_eq!(
            conn.deadline().is_none(),
            phase == Phase::Closed,
            "{phase:?}"
        );
        let stats = conn.stats();
        let before = st.stats;
        assert!(
            stats.accepted == 1
                && stats.requests >= before.requests
                && stats.responses >= before.responses
                && stats.errors >= before.errors
                && stats.tunnels >= before.tunnels
                && stats.body_bytes >= before.body_bytes,
            "the stats went back: {before:?} -> {stats:?}"
        );
        assert_eq!(stats.requests, st.requests, "{stats:?}");
        assert_eq!(stats.responses, st.responses, "{stats:?}");
        assert_eq!(stats.tunnels, st.tunnels, "{stats:?}");
        assert_eq!(stats.body_bytes, st.body_bytes, "{stats:?}");
        assert!(stats.errors <= 1, "{stats:?}");
        st.stats = stats;
        if phase == Phase::Closed {
            return;
        }
        let exchanging = matches!(phase, Phase::Exchanging(_));
        let with_origin = exchanging || matches!(phase, Phase::Connecting | Phase::Tunnel);
        assert_eq!(
            st.exchange.is_some(),
            phase != Phase::ReadingHead,
            "{phase:?}"
        );
        assert_eq!(conn.request_line().is_some(), st.exchange.is_some());
        let started = st.exchange.as_ref().is_some_and(|e| e.started);
        assert_eq!(conn.response_started(), started, "{phase:?}");
        let continues = st
            .exchange
            .as_ref()
            .is_some_and(|e| e.sent.expects_continue);
        assert_eq!(conn.expects_continue(), continues);
        assert_eq!(
            conn.origin(),
            st.origin.filter(|_| with_origin),
            "{phase:?}"
        );
        assert_eq!(conn.request_body().is_some(), exchanging);
        let body = matches!(
            phase,
            Phase::Exchanging(ResponsePhase::Body | ResponsePhase::Complete)
        );
        assert_eq!(conn.response_body().is_some(), body, "{phase:?}");
    }

    /// What must hold of every ending.
    pub(super) fn ended(&mut self, conn: &ProxyConnection, st: &Shadow, ending: Ending) {
        assert_eq!(conn.phase(), Phase::Closed);
        assert_eq!(conn.deadline(), None);
        let exchange = st.exchange.as_ref();
        match ending {
            Ending::Answer { len } => {
                assert!(
                    !exchange.is_some_and(|e| e.started),
                    "an answer after the response started"
                );
                checks::page(&self.out[..len]);
                assert_eq!(conn.stats().errors, 1);
                self.outcome.answers += 1;
            }
            Ending::Close => {
                if let Some((_, close)) = exchange.and_then(|e| e.final_head) {
                    assert!(close, "closed after a response head that did not say so");
                }
                self.outcome.closes += 1;
            }
            Ending::ResetClient | Ending::ResetBoth => self.outcome.resets += 1,
        }
    }

    /// Starts the exchange of a request head just forwarded with `next`.
    pub(super) fn forwarded(
        &mut self,
        st: &mut Shadow,
        sent: Sent,
        idle: bool,
        next: Next,
    ) -> Option<Ending> {
        self.outcome.forwarded += 1;
        st.first = false;
        let kept = st.kept.take();
        let may_reuse = kept.as_ref().is_some_and(|k| {
            idle && !sent.is_tunnel()
                && k.port == sent.port
                && k.host.eq_ignore_ascii_case(&sent.host)
        });
        let mut exchange = Exchange::new(sent);
        if next == Next::Reuse {
            assert!(
                may_reuse,
                "reused {kept:?} (idle {idle}) for {:?}",
                exchange.sent
            );
            self.outcome.reused += 1;
            exchange.reused = true;
            st.origin = kept.map(|k| k.addr);
            st.exchange = Some(exchange);
            return None;
        }
        assert!(
            !may_reuse,
            "{kept:?} was idle and fit {:?}, not reused",
            exchange.sent
        );
        // The driver closes the kept connection.
        self.origin = Peer::default();
        let port = exchange.sent.port;
        let expected = match self.cx.policy.static_address(&exchange.sent.host) {
            Some(ip) => Ok(checks::route(
                self.cx.policy,
                self.setup.listen,
                &[ip],
                port,
            )),
            None if self.setup.can_look_up => Err(exchange.sent.host.clone()),
            None => Ok(Err(502)),
        };
        st.exchange = Some(exchange);
        match (expected, next) {
            (Err(name), Next::LookUp(asked)) => {
                assert_eq!(asked, name);
                self.outcome.lookups += 1;
                None
            }
            (Ok(route), next) => self.follow(st, route, next),
            (expected, next) => panic!("expected {expected:?}, the engine said {next:?}"),
        }
    }

    /// Checks the engine's next step to the origin against the route the harness expects.
    pub(super) fn follow(
        &mut self,
        st: &mut Shadow,
        route: Result<VecDeque<SocketAddr>, u16>,
        next: Next,
    ) -> Option<Ending> {
        match (route, next) {
            (Ok(mut route), Next::Connect(addr)) => {
                assert_eq!(Some(addr), route.pop_front(), "{route:?}");
                st.origin = Some(addr);
                if let Some(exchange) = st.exchange.as_mut() {
                    exchange.route = route;
                }
                None
            }
            (Err(status), Next::End(ending @ Ending::Answer { len })) => {
                assert_eq!(checks::page(&self.out[..len]), status);
                Some(ending)
            }
            (route, next) => panic!("expected {route:?}, the engine said {next:?}"),
        }
    }

    /// Checks a retry the engine asked for (the same request on a new connection to `addr`).
    pub(super) fn retried(&mut self, conn: &ProxyConnection, st: &mut Shadow, addr: SocketAddr) {
        let exchange = st.exchange.as_mut().expect("a retry without a request");
        // Only a request that may go twice (RFC 9112 §9.3.1), and only if the origin sent nothing at all for it:
        // not even an interim head its HTTP/1.0 client was not sent.
        let idempotent = matches!(
            exchange.sent.method,
            Method::Get | Method::Head | Method::Put | Method::Delete | Method::Options
        );
        assert!(
            exchange.reused
                && !exchange.retried
                && idempotent
                && exchange.sent.framing == BodyFraming::None
                && !exchange.started
                && !exchange.origin_bytes
                && !exchange.withheld_interim,
            "a retry of {exchange:?}"
        );
        assert_eq!(Some(addr), st.origin, "a retry elsewhere");
        assert_eq!(conn.phase(), Phase::Connecting);
        exchange.retried = true;
        exchange.reused = false;
        exchange.origin_bytes = false;
        exchange.withheld_interim = false;
        exchange.route.clear();
        self.outcome.retries += 1;
    }
}
