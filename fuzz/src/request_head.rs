//! The proxy's request head: parsed from arbitrary bytes, and when it parses, rewritten for the origin.
//!
//! What must hold, for any bytes:
//! - parsing never panics; an error is a 4xx or 5xx; an incomplete head is 414 or 431 once the buffer is full;
//! - a head that parses parses the same from exactly its own bytes, and every shorter prefix of it is
//!   incomplete (never an error: the proxy parses whatever has arrived so far);
//! - the origin's request (every method but `CONNECT`, which the proxy answers itself) is written whole into a
//!   buffer of the head's size plus two bytes a header and a fixed margin, and a buffer too small fails cleanly;
//! - that request parses again, whole, with the same method, origin, path, version and body framing, one
//!   `Host`, this proxy's `Via` (so a loop is found), the connection's fate as asked, and no hop-by-hop header:
//!   exactly `Host`, the client's end-to-end headers in their order, `Via`, and at most our own `Connection`.

use std::fmt::Write as _;

use httparse::{Header, EMPTY_HEADER};
use smoltalk_core::http::rewrite::upstream_request;
use smoltalk_core::http::{
    is_hop_by_hop, HeadWriter, Method, ProxyError, RequestHead, RequestTarget, MAX_HEADERS,
};
use smoltalk_core::proxy::ProxyPolicy;
use std::net::{IpAddr, Ipv4Addr};

/// The name the fuzzed proxy puts in `Via`.
pub const PSEUDONYM: &str = "smoltalk-fuzz";

/// What a rewritten head may add to the original besides two bytes a header line (`name:value\n` is written
/// `name: value\r\n`): the `Host` line (a bracketed literal and a port at most), the `Via` and `Connection`
/// lines, the request line's CR, and the one `/` that an empty or query-only path gains.
const REWRITE_MARGIN: usize = 128 + PSEUDONYM.len();

/// The policy the proxy checks a parsed request against (the checks must not panic on any authority).
fn policy() -> ProxyPolicy<'static> {
    const NAMES: [(&str, IpAddr); 1] = [("origin.test", IpAddr::V4(Ipv4Addr::new(10, 0, 2, 80)))];
    ProxyPolicy {
        allow_clients: &[],
        allow_destinations: &[],
        connect_ports: &[443],
        static_names: &NAMES,
        pseudonym: PSEUDONYM,
    }
}

/// Parses `data` as a request head and checks everything above.
pub fn run(data: &[u8]) {
    let mut headers = [EMPTY_HEADER; MAX_HEADERS];
    match RequestHead::parse(data, &mut headers) {
        Ok(Some(head)) => check_head(data, &head),
        Ok(None) => {
            let error = RequestHead::incomplete_error(data);
            assert!(
                matches!(error, ProxyError::UriTooLong | ProxyError::HeadTooLarge),
                "an incomplete head is answered with {error:?}"
            );
        }
        Err(error) => {
            assert!((400..=599).contains(&error.status()), "{error:?}");
        }
    }
}

fn check_head(data: &[u8], head: &RequestHead<'_, '_>) {
    assert!(head.head_len > 0 && head.head_len <= data.len());
    let own = &data[..head.head_len];
    {
        let mut headers = [EMPTY_HEADER; MAX_HEADERS];
        let again = RequestHead::parse(own, &mut headers)
            .expect("a head parses from its own bytes")
            .expect("a head is whole in its own bytes");
        assert_eq!(again.head_len, head.head_len);
        assert_eq!(again.method, head.method);
        assert_eq!(again.target, head.target);
        assert_eq!(again.framing, head.framing);
        assert_eq!(again.keep_alive, head.keep_alive);
    }
    for cut in [head.head_len - 1, head.head_len / 2] {
        let mut headers = [EMPTY_HEADER; MAX_HEADERS];
        let partial = RequestHead::parse(&own[..cut], &mut headers);
        assert!(
            matches!(partial, Ok(None)),
            "the first {cut} of {} bytes of a valid head are {:?}, not incomplete",
            head.head_len,
            partial.map(|h| h.map(|h| h.head_len))
        );
    }

    // What the proxy logs and checks before it connects anywhere.
    let mut line = String::new();
    write!(line, "{head}").expect("a head displays");
    let _ = head.came_through(PSEUDONYM);
    let _ = head.expects_continue();
    let policy = policy();
    let authority = head.target.authority();
    assert!(authority.port != 0);
    if let Some(address) = policy.static_address(authority.host) {
        let _ = policy.check_destination(address);
    }
    let mut shown = String::new();
    write!(shown, "{authority}").expect("an authority displays");

    if head.method == Method::Connect {
        let _ = policy.check_connect_port(authority.port);
        return;
    }
    for keep_alive in [true, false] {
        // Too small a buffer fails cleanly, whatever fitted.
        let mut small = [0u8; 64];
        let mut writer = HeadWriter::new(&mut small);
        if upstream_request(head, policy.pseudonym, keep_alive, &mut writer).is_err() {
            assert!(writer.len() <= 64);
        }
        let mut out = vec![0u8; head.head_len + 2 * head.headers.len() + REWRITE_MARGIN];
        let mut writer = HeadWriter::new(&mut out);
        upstream_request(head, policy.pseudonym, keep_alive, &mut writer)
            .expect("the origin's request fits the head's size plus the margin");
        let written = writer.len();
        check_rewritten(head, &out[..written], keep_alive);
    }
}

/// Checks the head sent to the origin against the client's head it was made from.
fn check_rewritten(head: &RequestHead<'_, '_>, out: &[u8], keep_alive: bool) {
    let mut headers: [Header<'_>; MAX_HEADERS + 4] = [EMPTY_HEADER; MAX_HEADERS + 4];
    let sent = match RequestHead::parse(out, &mut headers) {
        Ok(Some(sent)) => sent,
        other => panic!(
            "the origin's request {:?} does not parse: {:?}",
            String::from_utf8_lossy(out),
            other.map(|h| h.map(|h| h.head_len))
        ),
    };
    let show = || String::from_utf8_lossy(out).into_owned();
    assert_eq!(sent.head_len, out.len(), "{}", show());
    assert_eq!(sent.method, head.method);
    assert_eq!(sent.minor_version, head.minor_version);
    assert_eq!(sent.framing, head.framing, "{}", show());
    assert_eq!(sent.keep_alive, keep_alive, "{}", show());
    assert!(sent.came_through(PSEUDONYM), "{}", show());
    let RequestTarget::Origin { authority, path } = sent.target else {
        panic!("the origin's request is not in origin-form: {}", show());
    };
    assert_eq!(authority, head.target.authority(), "{}", show());
    let expected = head.target.path();
    match expected.strip_prefix('?') {
        Some(_) => assert_eq!(path.strip_prefix('/'), Some(expected)),
        None => assert_eq!(path, expected),
    }

    // Exactly: Host, the client's end-to-end headers in order, our Via, and our Connection if any.
    let connection = head
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .map(|h| h.value);
    // The client's end-to-end fields in order, but its framing fields as one: the field the proxy writes, where
    // the first of them stood.
    let framing = &head.framing_headers();
    let framing_field: Option<(&str, Vec<u8>)> =
        match (&framing.transfer_encoding, framing.content_length) {
            (Some(codings), _) => {
                let names: Vec<&str> = codings.iter().map(|c| c.name()).collect();
                Some(("Transfer-Encoding", names.join(", ").into_bytes()))
            }
            (None, Some(length)) => Some(("Content-Length", length.to_string().into_bytes())),
            (None, None) => None,
        };
    let mut framing_written = false;
    let mut kept: Vec<(&str, &[u8])> = Vec::new();
    for h in head.headers {
        if h.name.eq_ignore_ascii_case("content-length")
            || h.name.eq_ignore_ascii_case("transfer-encoding")
        {
            if !framing_written {
                if let Some((name, value)) = &framing_field {
                    kept.push((name, value.as_slice()));
                }
                framing_written = true;
            }
            continue;
        }
        let max_forwards =
            head.max_forwards().is_some() && h.name.eq_ignore_ascii_case("max-forwards");
        let dropped = h.name.eq_ignore_ascii_case("host")
            || max_forwards
            || is_hop_by_hop(h.name, connection.clone());
        if !dropped {
            kept.push((h.name, h.value));
        }
    }
    let got: Vec<(&str, &[u8])> = sent.headers.iter().map(|h| (h.name, h.value)).collect();
    let (first, rest) = got.split_first().expect("a Host header");
    assert!(first.0 == "Host", "{}", show());
    assert_eq!(
        sent.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("host"))
            .count(),
        1,
        "{}",
        show()
    );
    assert!(rest.len() > kept.len(), "{}", show());
    assert_eq!(&rest[..kept.len()], &kept[..], "{}", show());
    // Then an `OPTIONS` request's Max-Forwards one lower, our Via and our Connection.
    let mut ours: Vec<(&str, Vec<u8>)> = Vec::new();
    if let Some(n) = head.max_forwards() {
        ours.push(("Max-Forwards", n.saturating_sub(1).to_string().into_bytes()));
    }
    ours.push((
        "Via",
        format!("1.{} {PSEUDONYM}", head.minor_version).into_bytes(),
    ));
    match (keep_alive, head.minor_version) {
        (false, _) => ours.push(("Connection", b"close".to_vec())),
        (true, 0) => ours.push(("Connection", b"keep-alive".to_vec())),
        (true, _) => {}
    }
    let ours: Vec<(&str, &[u8])> = ours.iter().map(|(n, v)| (*n, v.as_slice())).collect();
    assert_eq!(&rest[kept.len()..], &ours[..], "{}", show());
    let framing_fields = sent
        .headers
        .iter()
        .filter(|h| {
            h.name.eq_ignore_ascii_case("content-length")
                || h.name.eq_ignore_ascii_case("transfer-encoding")
        })
        .count();
    assert!(framing_fields <= 1, "{}", show());
    // Checked against the list written out here, not the one the rewriter uses.
    let named: Vec<&[u8]> = connection
        .flat_map(|v| v.split(|&b| b == b','))
        .map(|t| t.trim_ascii())
        .filter(|t| !t.is_empty())
        .collect();
    for (name, _) in &rest[..kept.len()] {
        let lower = name.to_ascii_lowercase();
        assert!(
            ![
                "connection",
                "keep-alive",
                "proxy-connection",
                "proxy-authorization",
                "proxy-authenticate",
                "te",
                "trailer",
                "upgrade"
            ]
            .contains(&lower.as_str()),
            "hop-by-hop {name} forwarded: {}",
            show()
        );
        assert!(
            lower == "content-length"
                || lower == "transfer-encoding"
                || !named
                    .iter()
                    .any(|t| t.eq_ignore_ascii_case(name.as_bytes())),
            "{name}, named by Connection, forwarded: {}",
            show()
        );
    }
}
