//! The engine alone: every decision checked on the steps a driver would take, with no socket anywhere.

use core::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::borrow::ToOwned;
use std::string::String;

use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{IpCidr, Ipv4Cidr};

use super::*;
use crate::http::body::BodyTracker;
use crate::proxy::ProxyPolicy;

const LOOPBACK: [IpCidr; 1] = [IpCidr::Ipv4(Ipv4Cidr::new(Ipv4Addr::new(127, 0, 0, 0), 8))];
const NAMES: [(&str, IpAddr); 1] = [("origin.test", IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)))];

fn policy() -> ProxyPolicy<'static> {
    ProxyPolicy {
        allow_clients: &LOOPBACK,
        allow_destinations: &[],
        connect_ports: &[443],
        static_names: &NAMES,
        pseudonym: "smoltalk-test",
    }
}

const LIMITS: Limits = Limits {
    head: 256,
    max_connections: 2,
    ..Limits::DEFAULT
};

fn is_local(ip: IpAddr) -> bool {
    ip.is_loopback()
}

fn with<R>(can_look_up: bool, f: impl FnOnce(&ProxyContext<'_>) -> R) -> R {
    let policy = policy();
    let cx = ProxyContext {
        policy: &policy,
        limits: &LIMITS,
        own: OwnAddress {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 8080),
            is_local: &is_local,
        },
        can_look_up,
    };
    f(&cx)
}

fn client() -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1))
}

fn origin(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)), port)
}

fn at(secs: u64) -> Instant {
    Instant::ZERO + Duration::from_secs(secs)
}

fn text(out: &[u8], len: usize) -> String {
    String::from_utf8_lossy(&out[..len]).into_owned()
}

fn admitted(cx: &ProxyContext<'_>) -> ProxyConnection {
    match ProxyConnection::admit(cx, client(), 0, at(0), &mut [0; 1024]) {
        Admission::Serve(connection) => connection,
        other => panic!("not admitted: {other:?}"),
    }
}

/// Reads `head`, connects to the origin it names (without a lookup), and returns the rewritten head.
fn connect(cx: &ProxyContext<'_>, c: &mut ProxyConnection, head: &str) -> String {
    let mut out = [0u8; 1024];
    let len = match c.on_client_head(cx, head.as_bytes(), false, || false, at(1), &mut out) {
        HeadStep::Forward(Forward {
            consumed,
            head_len,
            next: OriginStep::Connect(addr),
        }) => {
            assert_eq!(consumed, head.len());
            assert_eq!(addr.ip(), origin(80).ip());
            head_len
        }
        other => panic!("{other:?}"),
    };
    let sent = text(&out, len);
    assert_eq!(c.on_connected(cx, at(1), &mut out), Connected::Exchange);
    sent
}

fn response(cx: &ProxyContext<'_>, c: &mut ProxyConnection, head: &str) -> (String, bool) {
    let mut out = [0u8; 1024];
    match c.on_response_head(
        cx,
        head.as_bytes(),
        false,
        &mut [crate::http::EMPTY_HEADER; 64],
        &mut out,
    ) {
        ResponseStep::Head {
            consumed,
            len,
            interim,
        } => {
            assert_eq!(consumed, head.len());
            (text(&out, len), interim)
        }
        other => panic!("{other:?}"),
    }
}

/// The origin closed before any byte of the response head: what the engine says.
fn origin_closed(cx: &ProxyContext<'_>, c: &mut ProxyConnection, out: &mut [u8]) -> ResponseStep {
    c.on_response_head(cx, b"", true, &mut [crate::http::EMPTY_HEADER; 64], out)
}

/// A connection that sent `first`, had a 204 and kept its origin, then sent `next`, which the engine puts on the
/// kept origin connection; with the buffer for what it writes.
fn reusing_the_kept_origin(
    cx: &ProxyContext<'_>,
    first: &str,
    next: &str,
) -> (ProxyConnection, [u8; 1024]) {
    let mut c = admitted(cx);
    connect(cx, &mut c, first);
    response(cx, &mut c, "HTTP/1.1 204 No Content\r\n\r\n");
    assert_eq!(
        c.on_response_sent(cx, true, at(2)),
        AfterResponse::NextRequest { keep_origin: true }
    );
    let mut out = [0u8; 1024];
    assert!(matches!(
        c.on_client_head(cx, next.as_bytes(), false, || true, at(3), &mut out),
        HeadStep::Forward(Forward {
            next: OriginStep::Reuse,
            ..
        })
    ));
    (c, out)
}

#[test]
fn refuses_clients_not_allowed_and_beyond_the_cap() {
    with(false, |cx| {
        let mut out = [0u8; 1024];
        let outsider = IpAddr::V4(Ipv4Addr::new(10, 0, 2, 2));
        match ProxyConnection::admit(cx, outsider, 0, at(0), &mut out) {
            Admission::Refuse { len } => assert!(text(&out, len).starts_with("HTTP/1.1 403 ")),
            other => panic!("{other:?}"),
        }
        match ProxyConnection::admit(cx, client(), 2, at(0), &mut out) {
            Admission::Refuse { len } => {
                let page = text(&out, len);
                assert!(page.starts_with("HTTP/1.1 503 "), "{page}");
                assert!(page.contains("Retry-After: 1\r\n"), "{page}");
            }
            other => panic!("{other:?}"),
        }
    });
}

#[test]
fn a_get_is_rewritten_answered_and_the_connection_kept() {
    with(false, |cx| {
        let mut c = admitted(cx);
        let sent = connect(
            cx,
            &mut c,
            "GET http://origin.test/a HTTP/1.1\r\nHost: origin.test\r\nProxy-Connection: keep-alive\r\n\r\n",
        );
        assert_eq!(
            sent,
            "GET /a HTTP/1.1\r\nHost: origin.test\r\nVia: 1.1 smoltalk-test\r\n\r\n"
        );
        assert_eq!(c.phase(), Phase::Exchanging(ResponsePhase::Head));
        assert!(c.request_body().is_some_and(|b| b.is_done()));
        let (head, interim) = response(cx, &mut c, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n");
        assert!(!interim);
        assert_eq!(
            head,
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nVia: 1.1 smoltalk-test\r\n\r\n"
        );
        let body = c.response_body().expect("a body");
        assert_eq!(body.advance(b"helloNEXT"), Ok(5));
        assert_eq!(c.phase(), Phase::Exchanging(ResponsePhase::Complete));
        assert_eq!(
            c.on_response_sent(cx, true, at(2)),
            AfterResponse::NextRequest { keep_origin: true }
        );
        assert_eq!(c.phase(), Phase::ReadingHead);
        // The next request to the same origin goes on the kept connection, if it is still idle.
        let mut out = [0u8; 1024];
        let next = "GET http://origin.test/b HTTP/1.1\r\nHost: origin.test\r\n\r\n";
        match c.on_client_head(cx, next.as_bytes(), false, || true, at(3), &mut out) {
            HeadStep::Forward(Forward {
                next: OriginStep::Reuse,
                ..
            }) => {}
            other => panic!("{other:?}"),
        }
        let stats = c.stats();
        assert_eq!((stats.requests, stats.responses), (2, 1));
    });
}

#[test]
fn a_kept_origin_that_closed_is_tried_once_more() {
    with(false, |cx| {
        let (mut c, mut out) = reusing_the_kept_origin(
            cx,
            "GET http://origin.test/ HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET http://origin.test/again HTTP/1.1\r\nHost: x\r\n\r\n",
        );
        // The origin had closed it: nothing came, so the same request goes again on a new connection ...
        assert_eq!(
            origin_closed(cx, &mut c, &mut out),
            ResponseStep::Retry(origin(80))
        );
        assert_eq!(c.phase(), Phase::Connecting);
        assert_eq!(c.on_connected(cx, at(3), &mut out), Connected::Exchange);
        // ... but only once.
        match origin_closed(cx, &mut c, &mut out) {
            ResponseStep::End(Ending::Answer { len }) => {
                assert!(text(&out, len).starts_with("HTTP/1.1 502 "))
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(c.phase(), Phase::Closed);
    });
}

#[test]
fn names_are_looked_up_only_with_a_resolver_and_checked_after() {
    let head = "GET http://elsewhere.test:8080/ HTTP/1.1\r\nHost: elsewhere.test\r\n\r\n";
    with(false, |cx| {
        let mut c = admitted(cx);
        let mut out = [0u8; 1024];
        match c.on_client_head(cx, head.as_bytes(), false, || false, at(1), &mut out) {
            HeadStep::Forward(Forward {
                next: OriginStep::End(Ending::Answer { len }),
                ..
            }) => assert!(text(&out, len).starts_with("HTTP/1.1 502 ")),
            other => panic!("{other:?}"),
        }
    });
    with(true, |cx| {
        let mut c = admitted(cx);
        let mut out = [0u8; 1024];
        match c.on_client_head(cx, head.as_bytes(), false, || false, at(1), &mut out) {
            HeadStep::Forward(Forward {
                next: OriginStep::LookUp(name),
                ..
            }) => assert_eq!(name, "elsewhere.test"),
            other => panic!("{other:?}"),
        }
        assert_eq!(c.phase(), Phase::Resolving);
        // The name resolves to this very proxy: a loop.
        let itself = [IpAddr::V4(Ipv4Addr::LOCALHOST)];
        match c.on_resolved(cx, Ok(&itself), &mut out) {
            ConnectStep::End(Ending::Answer { len }) => {
                assert!(text(&out, len).starts_with("HTTP/1.1 508 "))
            }
            other => panic!("{other:?}"),
        }
    });
}

#[test]
fn every_address_is_tried_before_502_or_504() {
    with(true, |cx| {
        let mut c = admitted(cx);
        let mut out = [0u8; 1024];
        let head = "GET http://two.test/ HTTP/1.1\r\nHost: two.test\r\n\r\n";
        assert!(matches!(
            c.on_client_head(cx, head.as_bytes(), false, || false, at(1), &mut out),
            HeadStep::Forward(Forward {
                next: OriginStep::LookUp(_),
                ..
            })
        ));
        let addrs = [
            IpAddr::V4(Ipv4Addr::new(127, 0, 0, 7)),
            "::1".parse().unwrap(),
        ];
        assert_eq!(
            c.on_resolved(cx, Ok(&addrs), &mut out),
            ConnectStep::Connect(SocketAddr::new(addrs[0], 80))
        );
        assert_eq!(
            c.on_connect_failed(false, &mut out),
            ConnectStep::Connect(SocketAddr::new(addrs[1], 80))
        );
        match c.on_connect_failed(true, &mut out) {
            ConnectStep::End(Ending::Answer { len }) => {
                assert!(text(&out, len).starts_with("HTTP/1.1 504 "))
            }
            other => panic!("{other:?}"),
        }
    });
}

#[test]
fn heads_too_long_incomplete_or_late_get_their_status() {
    with(false, |cx| {
        let mut out = [0u8; 1024];
        let status = |step: HeadStep<'_>, out: &[u8]| match step {
            HeadStep::End(Ending::Answer { len }) => text(out, len)[9..12].to_owned(),
            HeadStep::End(other) => std::format!("{other:?}"),
            other => panic!("{other:?}"),
        };
        let long_line = std::format!("GET /{} HTTP/1.1\r\n", "a".repeat(300));
        let mut c = admitted(cx);
        let step = c.on_client_head(cx, long_line.as_bytes(), false, || false, at(1), &mut out);
        assert_eq!(status(step, &out), "414");
        let long_head = std::format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(300));
        let mut c = admitted(cx);
        let step = c.on_client_head(cx, long_head.as_bytes(), false, || false, at(1), &mut out);
        assert_eq!(status(step, &out), "431");
        let mut c = admitted(cx);
        let step = c.on_client_head(cx, b"GET / HT", true, || false, at(1), &mut out);
        assert_eq!(status(step, &out), "400");
        let mut c = admitted(cx);
        assert_eq!(
            c.on_client_head(cx, b"", false, || false, at(29), &mut out),
            HeadStep::NeedMore
        );
        let step = c.on_client_head(cx, b"", false, || false, at(30), &mut out);
        assert_eq!(status(step, &out), "408");
        // A client that closes before any request: the quiet end.
        let mut c = admitted(cx);
        let step = c.on_client_head(cx, b"", true, || false, at(1), &mut out);
        assert_eq!(step, HeadStep::End(Ending::Close));
    });
}

#[test]
fn interim_heads_reach_http_1_1_clients_only_and_an_early_answer_closes() {
    with(false, |cx| {
        for (version, interim_len) in [("1.1", true), ("1.0", false)] {
            let mut c = admitted(cx);
            let head = std::format!(
                "POST http://origin.test/up HTTP/{version}\r\nHost: x\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n"
            );
            connect(cx, &mut c, &head);
            assert!(c.expects_continue());
            let (sent, interim) = response(cx, &mut c, "HTTP/1.1 100 Continue\r\n\r\n");
            assert!(interim);
            assert_eq!(!sent.is_empty(), interim_len, "{version}: {sent:?}");
            assert_eq!(c.response_started(), interim_len);
            // The origin answers before the body is whole: the client connection cannot be kept.
            let (sent, _) = response(
                cx,
                &mut c,
                "HTTP/1.1 413 Too Large\r\nContent-Length: 0\r\n\r\n",
            );
            assert!(sent.contains("Connection: close\r\n"), "{sent}");
            assert_eq!(
                c.on_response_sent(cx, true, at(2)),
                AfterResponse::End(Ending::Close)
            );
        }
    });
}

#[test]
fn a_tunnel_opens_with_200_and_idles_out() {
    with(false, |cx| {
        let mut c = admitted(cx);
        let mut out = [0u8; 1024];
        let head = "CONNECT origin.test:443 HTTP/1.1\r\nHost: origin.test:443\r\n\r\n";
        match c.on_client_head(cx, head.as_bytes(), false, || false, at(1), &mut out) {
            HeadStep::Forward(Forward {
                head_len: 0,
                next: OriginStep::Connect(addr),
                ..
            }) => assert_eq!(addr, origin(443)),
            other => panic!("{other:?}"),
        }
        match c.on_connected(cx, at(1), &mut out) {
            Connected::Tunnel { len } => {
                assert!(text(&out, len).starts_with("HTTP/1.1 200 Connection established\r\n"))
            }
            other => panic!("{other:?}"),
        }
        assert!(c.response_started());
        c.on_progress(&LIMITS, at(100), 10);
        let idle = LIMITS.tunnel_idle.secs();
        assert_eq!(c.on_timeout(at(100 + idle - 1), &mut out), None);
        assert_eq!(c.on_timeout(at(100 + idle), &mut out), Some(Ending::Close));
        // A port not allowed is 403.
        let mut c = admitted(cx);
        let head = "CONNECT origin.test:22 HTTP/1.1\r\nHost: origin.test:22\r\n\r\n";
        match c.on_client_head(cx, head.as_bytes(), false, || false, at(1), &mut out) {
            HeadStep::End(Ending::Answer { len }) => {
                assert!(text(&out, len).starts_with("HTTP/1.1 403 "))
            }
            other => panic!("{other:?}"),
        }
    });
}

#[test]
fn failures_end_as_the_response_allows() {
    with(false, |cx| {
        let mut out = [0u8; 1024];
        // Before any response byte: the client is reset, the origin gets a FIN.
        let mut c = admitted(cx);
        connect(
            cx,
            &mut c,
            "POST http://origin.test/ HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\n",
        );
        assert_eq!(
            c.on_failure(Failure::ClientClosedMidBody, &mut out),
            Ending::ResetClient
        );
        // After: both are reset.
        let mut c = admitted(cx);
        connect(
            cx,
            &mut c,
            "GET http://origin.test/ HTTP/1.1\r\nHost: x\r\n\r\n",
        );
        response(cx, &mut c, "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n");
        assert_eq!(c.on_origin_finished(false), Some(Ending::ResetBoth));
        // A body delimited by the close ends at the origin's FIN, but not at its reset.
        for (reset, ending) in [(false, None), (true, Some(Ending::ResetBoth))] {
            let mut c = admitted(cx);
            connect(
                cx,
                &mut c,
                "GET http://origin.test/ HTTP/1.1\r\nHost: x\r\n\r\n",
            );
            response(cx, &mut c, "HTTP/1.0 200 OK\r\n\r\n");
            assert_eq!(c.on_origin_finished(reset), ending);
        }
        // An origin that does not answer in time: 504 before the response, a reset after.
        let mut c = admitted(cx);
        connect(
            cx,
            &mut c,
            "GET http://origin.test/ HTTP/1.1\r\nHost: x\r\n\r\n",
        );
        assert_eq!(c.on_timeout(at(30), &mut out), None);
        match c.on_timeout(at(31), &mut out) {
            Some(Ending::Answer { len }) => assert!(text(&out, len).starts_with("HTTP/1.1 504 ")),
            other => panic!("{other:?}"),
        }
    });
}

#[test]
fn a_call_the_state_does_not_allow_is_a_bug_and_resets() {
    with(false, |cx| {
        let mut c = admitted(cx);
        let mut out = [0u8; 1024];
        assert_eq!(
            c.on_response_head(
                cx,
                b"HTTP/1.1 200 OK\r\n\r\n",
                false,
                &mut [crate::http::EMPTY_HEADER; 64],
                &mut out
            ),
            ResponseStep::End(Ending::ResetBoth)
        );
        assert_eq!(c.phase(), Phase::Closed);
        assert_eq!(c.deadline(), None);
        let _ = BodyTracker::new(crate::http::BodyFraming::None);
    });
}

/// Found by the `proxy_connection` fuzz target: a kept origin connection that answers with an interim head an
/// HTTP/1.0 client does not get, then closes, had the origin's request; it must not go again.
#[test]
fn no_retry_after_an_interim_head_the_client_did_not_see() {
    with(false, |cx| {
        let (mut c, mut out) = reusing_the_kept_origin(
            cx,
            "GET http://origin.test/ HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
            "GET http://origin.test/again HTTP/1.0\r\n\r\n",
        );
        let (sent, interim) = response(cx, &mut c, "HTTP/1.1 103 Early Hints\r\n\r\n");
        assert!(interim && sent.is_empty());
        assert!(!c.response_started());
        match origin_closed(cx, &mut c, &mut out) {
            ResponseStep::End(Ending::Answer { len }) => {
                assert!(text(&out, len).starts_with("HTTP/1.1 502 "))
            }
            other => panic!("{other:?}"),
        }
    });
}

/// RFC 9112 §9.3.1: a request that may not be sent twice (a POST, even without a body) is not retried.
#[test]
fn a_non_idempotent_request_is_not_retried() {
    with(false, |cx| {
        let (mut c, mut out) = reusing_the_kept_origin(
            cx,
            "GET http://origin.test/ HTTP/1.1\r\nHost: x\r\n\r\n",
            "POST http://origin.test/act HTTP/1.1\r\nHost: x\r\n\r\n",
        );
        match origin_closed(cx, &mut c, &mut out) {
            ResponseStep::End(Ending::Answer { len }) => {
                assert!(text(&out, len).starts_with("HTTP/1.1 502 "))
            }
            other => panic!("{other:?}"),
        }
    });
}

/// A failure the connection's phase cannot have is the driver's bug: logged, and both connections reset.
#[test]
fn a_failure_out_of_its_phase_is_a_bug() {
    with(false, |cx| {
        let mut out = [0u8; 1024];
        for failure in [
            Failure::MalformedRequestBody,
            Failure::ClientClosedMidBody,
            Failure::MalformedResponseBody,
            Failure::TunnelPeerReset,
        ] {
            let mut c = admitted(cx);
            assert_eq!(
                c.on_failure(failure, &mut out),
                Ending::ResetBoth,
                "{failure:?}"
            );
            assert_eq!(c.phase(), Phase::Closed);
            assert_eq!(c.stats().errors, 0, "{failure:?}");
        }
        // A reset once the response is cut short: nothing more to do, and no page.
        let mut c = admitted(cx);
        connect(
            cx,
            &mut c,
            "GET http://origin.test/ HTTP/1.1\r\nHost: x\r\n\r\n",
        );
        response(cx, &mut c, "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n");
        assert_eq!(c.on_origin_finished(true), Some(Ending::ResetBoth));
        assert_eq!(c.phase(), Phase::Closed);
        assert_eq!(
            c.on_failure(Failure::ClientReset, &mut out),
            Ending::ResetBoth
        );
    });
}

/// RFC 9110 §7.6.2: an `OPTIONS` with `Max-Forwards: 0` is for the proxy, which answers `200` with `Allow` and
/// never looks for an origin; with a higher value it goes on one lower.
#[test]
fn options_with_max_forwards_zero_is_answered_by_the_proxy() {
    with(false, |cx| {
        let mut c = admitted(cx);
        let mut out = [0u8; 1024];
        let head = "OPTIONS http://origin.test/ HTTP/1.1\r\nMax-Forwards: 0\r\n\r\n";
        let len = match c.on_client_head(cx, head.as_bytes(), false, || false, at(1), &mut out) {
            HeadStep::End(Ending::Answer { len }) => len,
            other => panic!("{other:?}"),
        };
        let answer = text(&out, len);
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(
            answer.contains("\r\nAllow: GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, CONNECT\r\n"),
            "{answer}"
        );
        assert!(answer.contains("\r\nContent-Length: 0\r\n"), "{answer}");
        assert!(answer.contains("\r\nConnection: close\r\n"), "{answer}");
        assert_eq!(c.phase(), Phase::Closed);
        assert_eq!(c.stats().errors, 0);

        let mut c = admitted(cx);
        let sent = connect(
            cx,
            &mut c,
            "OPTIONS http://origin.test/ HTTP/1.1\r\nMax-Forwards: 1\r\n\r\n",
        );
        assert!(sent.contains("\r\nMax-Forwards: 0\r\n"), "{sent}");
    });
}

/// A connection idle between requests can be reclaimed for a new client; one that has started its next request,
/// or is still being served, cannot. The one idle longest is chosen.
#[test]
fn only_a_connection_idle_between_requests_is_reclaimed_and_the_longest_idle_first() {
    with(false, |cx| {
        let mut c = admitted(cx);
        assert_eq!(c.idle_since(), None);
        assert_eq!(
            c.reclaim(),
            None,
            "a connection waiting for its first request"
        );
        connect(cx, &mut c, "GET http://origin.test/ HTTP/1.1\r\n\r\n");
        assert_eq!(c.reclaim(), None, "a connection being served");
        response(cx, &mut c, "HTTP/1.1 204 No Content\r\n\r\n");
        assert!(matches!(
            c.on_response_sent(cx, true, at(2)),
            AfterResponse::NextRequest { .. }
        ));
        assert_eq!(c.idle_since(), Some(at(2)));

        // Half of the next request: no longer idle.
        let mut started = admitted(cx);
        connect(cx, &mut started, "GET http://origin.test/ HTTP/1.1\r\n\r\n");
        response(cx, &mut started, "HTTP/1.1 204 No Content\r\n\r\n");
        started.on_response_sent(cx, true, at(1));
        let mut out = [0u8; 1024];
        assert_eq!(
            started.on_client_head(cx, b"GET http://orig", false, || true, at(3), &mut out),
            HeadStep::NeedMore
        );
        assert_eq!(started.idle_since(), None);
        assert_eq!(started.reclaim(), None);

        assert_eq!(
            longest_idle([
                (0, c.idle_since()),
                (1, started.idle_since()),
                (2, Some(at(5)))
            ]),
            Some(0)
        );
        assert_eq!(longest_idle([(0, None::<Instant>)]), None);
        assert!(pool_is_full(cx.limits, cx.limits.max_connections));
        assert!(!pool_is_full(cx.limits, cx.limits.max_connections - 1));
        assert_eq!(c.reclaim(), Some(Ending::Close));
        assert_eq!(c.phase(), Phase::Closed);
    });
}

/// A request line longer than [`LOG_LINE`] is logged cut, ending in `…`, never emptied.
#[test]
fn a_long_request_line_is_kept_for_the_log_cut_with_an_ellipsis() {
    let path = "a".repeat(1000);
    let raw = std::format!("GET http://origin.test/{path} HTTP/1.1\r\n\r\n");
    let mut headers = [httparse::EMPTY_HEADER; 4];
    let head = match crate::http::RequestHead::parse(raw.as_bytes(), &mut headers) {
        Ok(Some(head)) => head,
        other => panic!("{other:?}"),
    };
    let line = RequestLine::of(&head);
    assert_eq!(line.as_str().len(), LOG_LINE);
    assert!(line.as_str().starts_with("GET http://origin.test/aaaa"));
    assert!(line.as_str().ends_with("aaa…"), "{line}");
    // A short one is whole.
    let raw = "GET http://origin.test/ HTTP/1.1\r\n\r\n";
    let mut headers = [httparse::EMPTY_HEADER; 4];
    let head = crate::http::RequestHead::parse(raw.as_bytes(), &mut headers)
        .unwrap()
        .unwrap();
    assert_eq!(
        RequestLine::of(&head).as_str(),
        "GET http://origin.test/ HTTP/1.1"
    );
}
