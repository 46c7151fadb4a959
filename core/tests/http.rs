//! The proxy's HTTP/1.x head parsing, framing and rewriting, checked against exact bytes and values.
//!
//! Every request and response here is a literal byte string; every expectation is the exact value the parser
//! or writer must produce, so a change in behaviour shows up as a diff of bytes, not a vague failure.

use httparse::{Header, EMPTY_HEADER};
use proptest::prelude::*;
use smoltalk_core::http::body::BadChunk;
use smoltalk_core::http::request::Authority;
use smoltalk_core::http::rewrite::{client_response, tunnel_established, upstream_request};
use smoltalk_core::http::{
    BodyFraming, BodyTracker, HeadTooLarge, HeadWriter, Method, ProxyError, RequestHead,
    RequestTarget, ResponseHead, MAX_HEADERS,
};

const PSEUDONYM: &str = "smoltalk";

// ---------------------------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------------------------

fn headers<'b>() -> [Header<'b>; MAX_HEADERS] {
    [EMPTY_HEADER; MAX_HEADERS]
}

/// Parses a whole request head and hands it to `f`.
fn with_request<R>(buf: &[u8], f: impl FnOnce(&RequestHead<'_, '_>) -> R) -> R {
    let mut headers = headers();
    match RequestHead::parse(buf, &mut headers) {
        Ok(Some(head)) => f(&head),
        other => panic!(
            "{:?} did not parse as a whole request: {other:?}",
            String::from_utf8_lossy(buf)
        ),
    }
}

/// The error a request head is refused with.
fn request_error(buf: &[u8]) -> ProxyError {
    let mut headers = headers();
    match RequestHead::parse(buf, &mut headers) {
        Err(e) => e,
        other => panic!(
            "{:?} was not refused: {other:?}",
            String::from_utf8_lossy(buf)
        ),
    }
}

/// The target of a request head, or the error it is refused with.
fn target(buf: &[u8]) -> Result<RequestTarget<'_>, ProxyError> {
    let mut headers = headers();
    RequestHead::parse(buf, &mut headers).map(|h| h.expect("whole head").target)
}

/// The target of `<method> <raw> HTTP/1.1` with the given extra header lines.
fn target_of(method: &str, raw: &str, extra: &str) -> Result<(String, u16, String), ProxyError> {
    let buf = format!("{method} {raw} HTTP/1.1\r\n{extra}\r\n");
    let t = target(buf.as_bytes())?;
    let a = t.authority();
    Ok((a.host.to_string(), a.port, t.path().to_string()))
}

fn framing(buf: &[u8]) -> Result<BodyFraming, ProxyError> {
    let mut headers = headers();
    RequestHead::parse(buf, &mut headers).map(|h| h.expect("whole head").framing)
}

fn keep_alive(buf: &[u8]) -> bool {
    with_request(buf, |h| h.keep_alive)
}

/// The head `upstream_request` writes for `buf`, as text.
fn upstream(buf: &[u8], keep_alive: bool) -> String {
    with_request(buf, |head| {
        let mut out = [0u8; 4096];
        let mut writer = HeadWriter::new(&mut out);
        upstream_request(head, PSEUDONYM, keep_alive, &mut writer).expect("fits");
        String::from_utf8(writer.as_bytes().to_vec()).expect("ASCII head")
    })
}

/// Parses a whole response head (to a `method` request) and hands it to `f`.
fn with_response<R>(buf: &[u8], method: Method, f: impl FnOnce(&ResponseHead<'_, '_>) -> R) -> R {
    let mut headers = headers();
    match ResponseHead::parse(buf, &mut headers, method) {
        Ok(Some(head)) => f(&head),
        other => panic!(
            "{:?} did not parse as a whole response: {other:?}",
            String::from_utf8_lossy(buf)
        ),
    }
}

fn response_error(buf: &[u8], method: Method) -> ProxyError {
    let mut headers = headers();
    match ResponseHead::parse(buf, &mut headers, method) {
        Err(e) => e,
        other => panic!(
            "{:?} was not refused: {other:?}",
            String::from_utf8_lossy(buf)
        ),
    }
}

/// `(framing, keep_alive)` of a response to a `method` request.
fn response_framing(buf: &[u8], method: Method) -> (BodyFraming, bool) {
    with_response(buf, method, |h| (h.framing, h.keep_alive))
}

/// The head `client_response` writes for `buf`, as text.
fn downstream(buf: &[u8], client_minor_version: u8, keep_alive: bool) -> String {
    with_response(buf, Method::Get, |head| {
        let mut out = [0u8; 4096];
        let mut writer = HeadWriter::new(&mut out);
        client_response(
            head,
            PSEUDONYM,
            client_minor_version,
            keep_alive,
            &mut writer,
        )
        .expect("fits");
        String::from_utf8(writer.as_bytes().to_vec()).expect("ASCII head")
    })
}

/// The whole error answer for `error`, as text.
fn error_page(error: ProxyError) -> String {
    let mut out = [0u8; 2048];
    let mut writer = HeadWriter::new(&mut out);
    error.write_response(&mut writer).expect("fits");
    String::from_utf8(writer.as_bytes().to_vec()).expect("UTF-8 page")
}

/// Feeds `input` to a tracker in pieces of `piece` bytes; returns the bytes that belonged to the body and
/// whether the body ended.
fn body_len(framing: BodyFraming, input: &[u8], piece: usize) -> Result<(usize, bool), BadChunk> {
    let mut tracker = BodyTracker::new(framing);
    let mut total = 0;
    for part in input.chunks(piece.max(1)) {
        let n = tracker.advance(part)?;
        assert!(n <= part.len());
        total += n;
        if n < part.len() {
            break;
        }
    }
    Ok((total, tracker.is_done()))
}

const ALL_ERRORS: [ProxyError; 22] = [
    ProxyError::MalformedHead,
    ProxyError::BadTarget,
    ProxyError::MalformedBody,
    ProxyError::ClientNotAllowed,
    ProxyError::DestinationNotAllowed,
    ProxyError::ConnectPortNotAllowed,
    ProxyError::HeadTimeout,
    ProxyError::UriTooLong,
    ProxyError::HeadTooLarge,
    ProxyError::UnsupportedMethod,
    ProxyError::TraceNotAllowed,
    ProxyError::UnsupportedTransferCoding,
    ProxyError::UnsupportedScheme,
    ProxyError::UnsupportedVersion,
    ProxyError::OriginRefused,
    ProxyError::OriginUnresolvable,
    ProxyError::OriginReset,
    ProxyError::BadOriginResponse,
    ProxyError::OriginHeadTooLarge,
    ProxyError::AtCapacity,
    ProxyError::OriginTimeout,
    ProxyError::Loop,
];

// ---------------------------------------------------------------------------------------------------------------
// Request targets
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn absolute_form_with_port_path_and_query() {
    let buf = b"GET http://example.com:8080/a/b?x=1&y=2 HTTP/1.1\r\nHost: example.com:8080\r\n\r\n";
    with_request(buf, |head| {
        assert_eq!(head.method, Method::Get);
        assert_eq!(head.raw_target, "http://example.com:8080/a/b?x=1&y=2");
        assert_eq!(head.minor_version, 1);
        assert_eq!(head.head_len, buf.len());
        assert_eq!(
            head.target,
            RequestTarget::Absolute {
                authority: Authority {
                    host: "example.com",
                    port: 8080
                },
                path: "/a/b?x=1&y=2",
            }
        );
        assert_eq!(head.target.path(), "/a/b?x=1&y=2");
        assert_eq!(head.target.authority().to_string(), "example.com:8080");
        assert_eq!(
            head.to_string(),
            "GET http://example.com:8080/a/b?x=1&y=2 HTTP/1.1"
        );
    });
    assert_eq!(
        upstream(buf, true),
        "GET /a/b?x=1&y=2 HTTP/1.1\r\nHost: example.com:8080\r\nVia: 1.1 smoltalk\r\n\r\n"
    );
}

#[test]
fn absolute_form_without_path_is_slash_on_port_80() {
    assert_eq!(
        target_of("GET", "http://example.com", ""),
        Ok(("example.com".into(), 80, "/".into()))
    );
    assert_eq!(
        target_of("GET", "http://example.com:80", ""),
        Ok(("example.com".into(), 80, "/".into()))
    );
    // Port 80 is the default: Host leaves it out, whether it was written or not.
    assert_eq!(
        upstream(b"GET http://example.com:80 HTTP/1.1\r\n\r\n", true),
        "GET / HTTP/1.1\r\nHost: example.com\r\nVia: 1.1 smoltalk\r\n\r\n"
    );
}

#[test]
fn absolute_form_bare_query_is_written_with_a_slash() {
    assert_eq!(
        target_of("GET", "http://h?q=1", ""),
        Ok(("h".into(), 80, "?q=1".into()))
    );
    assert_eq!(
        target_of("GET", "http://h:81?q", ""),
        Ok(("h".into(), 81, "?q".into()))
    );
    assert_eq!(
        upstream(b"GET http://h?q=1 HTTP/1.1\r\n\r\n", true),
        "GET /?q=1 HTTP/1.1\r\nHost: h\r\nVia: 1.1 smoltalk\r\n\r\n"
    );
}

#[test]
fn absolute_form_drops_the_fragment() {
    assert_eq!(
        target_of("GET", "http://h/p?q=1#frag", ""),
        Ok(("h".into(), 80, "/p?q=1".into()))
    );
    assert_eq!(
        target_of("GET", "http://h#frag", ""),
        Ok(("h".into(), 80, "/".into()))
    );
    assert_eq!(
        target_of("GET", "http://h:8000?q#f", ""),
        Ok(("h".into(), 8000, "?q".into()))
    );
    assert_eq!(
        upstream(b"GET http://h/p#frag HTTP/1.1\r\n\r\n", true),
        "GET /p HTTP/1.1\r\nHost: h\r\nVia: 1.1 smoltalk\r\n\r\n"
    );
}

#[test]
fn absolute_form_scheme_is_case_insensitive_and_host_kept_as_written() {
    assert_eq!(
        target_of("GET", "HTTP://Example.COM:81/X", ""),
        Ok(("Example.COM".into(), 81, "/X".into()))
    );
    assert_eq!(
        target_of("GET", "hTtP://a-b_c.d/", ""),
        Ok(("a-b_c.d".into(), 80, "/".into()))
    );
    assert_eq!(
        upstream(b"GET HTTP://Example.COM:81/X HTTP/1.1\r\n\r\n", true),
        "GET /X HTTP/1.1\r\nHost: Example.COM:81\r\nVia: 1.1 smoltalk\r\n\r\n"
    );
}

#[test]
fn absolute_form_ipv6_literal() {
    let buf = b"GET http://[::1]:8080/x HTTP/1.1\r\n\r\n";
    let t = target(buf).unwrap();
    assert_eq!(
        t,
        RequestTarget::Absolute {
            authority: Authority {
                host: "::1",
                port: 8080
            },
            path: "/x"
        }
    );
    assert_eq!(t.authority().to_string(), "[::1]:8080");
    assert_eq!(
        upstream(buf, true),
        "GET /x HTTP/1.1\r\nHost: [::1]:8080\r\nVia: 1.1 smoltalk\r\n\r\n"
    );
    assert_eq!(
        upstream(b"GET http://[2001:db8::7] HTTP/1.1\r\n\r\n", true),
        "GET / HTTP/1.1\r\nHost: [2001:db8::7]\r\nVia: 1.1 smoltalk\r\n\r\n"
    );
    assert_eq!(
        target_of("GET", "http://[::ffff:192.0.2.1]:81/", ""),
        Ok(("::ffff:192.0.2.1".into(), 81, "/".into()))
    );
}

#[test]
fn absolute_form_ignores_the_host_header() {
    let buf = b"GET http://a.example/ HTTP/1.1\r\nHost: b.example\r\nAccept: */*\r\n\r\n";
    assert_eq!(
        target_of("GET", "http://a.example/", "Host: b.example\r\n"),
        Ok(("a.example".into(), 80, "/".into()))
    );
    // Exactly one Host, the URI's, first.
    assert_eq!(
        upstream(buf, true),
        "GET / HTTP/1.1\r\nHost: a.example\r\nAccept: */*\r\nVia: 1.1 smoltalk\r\n\r\n"
    );
    // Even two Host headers do not matter with an absolute URI.
    assert_eq!(
        target_of("GET", "http://a.example/", "Host: b\r\nHost: c\r\n"),
        Ok(("a.example".into(), 80, "/".into()))
    );
}

#[test]
fn authority_form_for_connect() {
    let buf = b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n";
    with_request(buf, |head| {
        assert_eq!(head.method, Method::Connect);
        assert_eq!(
            head.target,
            RequestTarget::Authority(Authority {
                host: "example.com",
                port: 443
            })
        );
        assert_eq!(head.target.path(), "");
        assert_eq!(head.framing, BodyFraming::None);
        assert!(head.keep_alive);
    });
    assert_eq!(
        target(b"CONNECT [2001:db8::1]:8443 HTTP/1.1\r\n\r\n"),
        Ok(RequestTarget::Authority(Authority {
            host: "2001:db8::1",
            port: 8443
        }))
    );
    // A CONNECT body length means nothing: the bytes after the head are the tunnel's.
    assert_eq!(
        framing(b"CONNECT h:443 HTTP/1.1\r\nContent-Length: 5\r\n\r\n"),
        Ok(BodyFraming::None)
    );
}

#[test]
fn authority_form_requires_a_valid_port() {
    for raw in [
        "example.com",
        "example.com:",
        "example.com:0",
        "example.com:65536",
        "example.com:https",
        "[::1]",
        ":443",
        "http://example.com:443",
        "user@example.com:443",
        "user:pw@example.com:443",
    ] {
        assert_eq!(
            target_of("CONNECT", raw, ""),
            Err(ProxyError::BadTarget),
            "CONNECT {raw}"
        );
    }
    assert_eq!(
        target_of("CONNECT", "h:65535", ""),
        Ok(("h".into(), 65535, "".into()))
    );
    assert_eq!(
        target_of("CONNECT", "h:1", ""),
        Ok(("h".into(), 1, "".into()))
    );
}

#[test]
fn origin_form_uses_the_host_header() {
    let buf = b"GET /index.html?x=1 HTTP/1.1\r\nHost: example.org:8000\r\n\r\n";
    assert_eq!(
        target(buf),
        Ok(RequestTarget::Origin {
            authority: Authority {
                host: "example.org",
                port: 8000
            },
            path: "/index.html?x=1"
        })
    );
    assert_eq!(
        target_of("GET", "/", "Host: example.org\r\n"),
        Ok(("example.org".into(), 80, "/".into()))
    );
    assert_eq!(
        target_of("GET", "/", "Host: [::1]:81\r\n"),
        Ok(("::1".into(), 81, "/".into()))
    );
    // Surrounding white space of the value is not part of the host.
    assert_eq!(
        target_of("GET", "/", "Host:   h.example:82  \r\n"),
        Ok(("h.example".into(), 82, "/".into()))
    );
    // The header name is case-insensitive.
    assert_eq!(
        target_of("GET", "/p", "hOsT: h\r\n"),
        Ok(("h".into(), 80, "/p".into()))
    );
}

#[test]
fn origin_form_path_may_hold_a_uri() {
    // A query that carries a URI (`?next=https://...`) is an ordinary origin-form target.
    assert_eq!(
        target_of("GET", "/login?next=https://example.com/", "Host: h\r\n"),
        Ok(("h".into(), 80, "/login?next=https://example.com/".into()))
    );
    assert_eq!(
        target_of("GET", "/r?u=http://x/y", "Host: h\r\n"),
        Ok(("h".into(), 80, "/r?u=http://x/y".into()))
    );
}

#[test]
fn options_asterisk() {
    let buf = b"OPTIONS * HTTP/1.1\r\nHost: h:8080\r\n\r\n";
    assert_eq!(
        target(buf),
        Ok(RequestTarget::Origin {
            authority: Authority {
                host: "h",
                port: 8080
            },
            path: "*"
        })
    );
    assert_eq!(
        upstream(buf, true),
        "OPTIONS * HTTP/1.1\r\nHost: h:8080\r\nVia: 1.1 smoltalk\r\n\r\n"
    );
    // `*` is only for OPTIONS.
    assert_eq!(
        target_of("GET", "*", "Host: h\r\n"),
        Err(ProxyError::BadTarget)
    );
    // And still needs a Host.
    assert_eq!(target_of("OPTIONS", "*", ""), Err(ProxyError::BadTarget));
}

#[test]
fn origin_form_host_errors() {
    // Missing, in HTTP/1.1 and HTTP/1.0 alike.
    assert_eq!(
        request_error(b"GET / HTTP/1.1\r\n\r\n"),
        ProxyError::BadTarget
    );
    assert_eq!(
        request_error(b"GET / HTTP/1.0\r\nAccept: */*\r\n\r\n"),
        ProxyError::BadTarget
    );
    // Duplicate, even with equal values.
    assert_eq!(
        request_error(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
        ProxyError::BadTarget
    );
    assert_eq!(
        request_error(b"GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n"),
        ProxyError::BadTarget
    );
    for host in [
        "",
        "a b",
        "a,b",
        "h:0",
        "h:65536",
        "h:",
        "h:x",
        "user@h",
        "user:pw@h:80",
        "a:b:80",
        "a b:c:80",
        "[::1",
        "[::g]:80",
        "h/p",
        "-:-:80",
    ] {
        assert_eq!(
            target_of("GET", "/", &format!("Host: {host}\r\n")),
            Err(ProxyError::BadTarget),
            "Host: {host}"
        );
    }
    // A Host value that is not UTF-8.
    assert_eq!(
        request_error(b"GET / HTTP/1.1\r\nHost: h\xff\r\n\r\n"),
        ProxyError::BadTarget
    );
    // 253 characters is the longest name.
    let long = "a".repeat(253);
    assert_eq!(
        target_of("GET", "/", &format!("Host: {long}\r\n")),
        Ok((long.clone(), 80, "/".into()))
    );
    assert_eq!(
        target_of("GET", "/", &format!("Host: {long}a\r\n")),
        Err(ProxyError::BadTarget)
    );
}

#[test]
fn absolute_form_authority_errors() {
    for raw in [
        "http://",
        "http:///x",
        "http://:80/",
        "http://h:abc/",
        "http://h:/",
        "http://h:-1/",
        "http://h:+80/",
        "http://h:0/",
        "http://h:65536/",
        "http://h:99999999999999999999/",
        "http://user@h/",
        "http://user:pw@h/",
        "http://user:pw@h:8080/",
        "http://[::1/",
        "http://[]:80/",
        "http://[::1]x/",
        "http://[::1]:/",
        "http://[fe80::1%25eth0]/",
        "http://::1/",
        "http://a:b:80/",
        "http://h%20x/",
        "http://h!/",
    ] {
        assert_eq!(
            target_of("GET", raw, ""),
            Err(ProxyError::BadTarget),
            "GET {raw}"
        );
    }
}

#[test]
fn other_schemes_are_unsupported() {
    for raw in [
        "https://example.com/",
        "HTTPS://example.com:443/",
        "ftp://example.com/f",
        "ws://example.com/",
    ] {
        assert_eq!(
            target_of("GET", raw, "Host: example.com\r\n"),
            Err(ProxyError::UnsupportedScheme),
            "GET {raw}"
        );
    }
}

#[test]
fn garbage_targets_are_refused() {
    for raw in [
        "example.com/x",
        "foo",
        "http:/h/",
        "http:h",
        "h:80",
        "?q",
        "%2F",
    ] {
        assert_eq!(
            target_of("GET", raw, "Host: h\r\n"),
            Err(ProxyError::BadTarget),
            "GET {raw}"
        );
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Methods, versions and malformed heads
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn methods_round_trip() {
    for (token, method) in [
        ("GET", Method::Get),
        ("HEAD", Method::Head),
        ("POST", Method::Post),
        ("PUT", Method::Put),
        ("PATCH", Method::Patch),
        ("DELETE", Method::Delete),
        ("OPTIONS", Method::Options),
        ("CONNECT", Method::Connect),
    ] {
        assert_eq!(Method::from_token(token), Some(method));
        assert_eq!(method.as_str(), token);
    }
    assert_eq!(Method::from_token("get"), None);
    assert_eq!(Method::from_token("TRACE"), None);
    assert_eq!(Method::from_token(""), None);
    for method in ["HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] {
        let buf = format!("{method} http://h/p HTTP/1.1\r\n\r\n");
        assert_eq!(
            with_request(buf.as_bytes(), |h| h.method.as_str().to_string()),
            method
        );
        assert_eq!(
            upstream(buf.as_bytes(), true),
            format!("{method} /p HTTP/1.1\r\nHost: h\r\nVia: 1.1 smoltalk\r\n\r\n")
        );
    }
}

#[test]
fn unsupported_methods() {
    for line in [
        "TRACE / HTTP/1.1",
        "TRACE http://h/ HTTP/1.1",
        "get / HTTP/1.1",
        "Get http://h/ HTTP/1.1",
        "BREW http://pot/ HTTP/1.1",
        "PROPFIND / HTTP/1.1",
        // The method is judged before the target.
        "TRACE garbage HTTP/1.1",
    ] {
        let buf = format!("{line}\r\nHost: h\r\n\r\n");
        assert_eq!(
            request_error(buf.as_bytes()),
            ProxyError::UnsupportedMethod,
            "{line}"
        );
    }
}

#[test]
fn unsupported_versions() {
    for version in ["HTTP/2.0", "HTTP/1.2", "HTTP/0.9", "HTTP/3.0"] {
        let buf = format!("GET http://h/ {version}\r\n\r\n");
        assert_eq!(
            request_error(buf.as_bytes()),
            ProxyError::UnsupportedVersion,
            "{version}"
        );
    }
    // httparse judges whatever follows the second space as the version; only a real `HTTP/x.y` token is an
    // unsupported version, anything else is a broken request line (400).
    for line in [
        "GET http://h/  HTTP/1.1",
        "GET http://h/ FTP/1.1",
        "GET http://h/ http/1.1",
        "GET http://exa mple/ HTTP/1.1",
        "GET http://h/ HTTP/1.x",
    ] {
        let buf = format!("{line}\r\n\r\n");
        assert_eq!(
            request_error(buf.as_bytes()),
            ProxyError::MalformedHead,
            "{line}"
        );
    }
    with_request(b"GET http://h/ HTTP/1.0\r\n\r\n", |h| {
        assert_eq!(h.minor_version, 0)
    });
}

#[test]
fn bad_request_lines() {
    for buf in [
        &b"GET /\r\n\r\n"[..],
        b"GET\r\n\r\n",
        b"GET  http://h/ HTTP/1.1\r\n\r\n",
        b"GET http://h/ HTTP/1.1 extra\r\n\r\n",
        b" GET http://h/ HTTP/1.1\r\n\r\n",
        b"GET http://h/\x01 HTTP/1.1\r\n\r\n",
        b"G\"ET http://h/ HTTP/1.1\r\n\r\n",
        b"GET http://h/\xff HTTP/1.1\r\n\r\n",
        b"GET http://h/ HTTP/1.1\rX\n\r\n",
    ] {
        assert_eq!(
            request_error(buf),
            ProxyError::MalformedHead,
            "{:?}",
            String::from_utf8_lossy(buf)
        );
    }
}

#[test]
fn bad_header_lines() {
    for line in [
        &b"Bad Header: x"[..],
        b"Bad\"Name: x",
        b": no-name",
        b"X-A\x01: y",
        b"H\xc3\xa9ader: x",
        b"X-Ctl: a\x7fb",
        b"X-Nul: a\x00b",
        b"No-Colon",
        b"Space-Before-Colon : x",
    ] {
        let mut buf = b"GET http://h/ HTTP/1.1\r\n".to_vec();
        buf.extend_from_slice(line);
        buf.extend_from_slice(b"\r\n\r\n");
        assert_eq!(
            request_error(&buf),
            ProxyError::MalformedHead,
            "{:?}",
            String::from_utf8_lossy(line)
        );
    }
}

#[test]
fn too_many_headers() {
    let head = |n: usize| {
        let mut buf = String::from("GET http://h/ HTTP/1.1\r\n");
        for i in 0..n {
            buf.push_str(&format!("X-H{i}: {i}\r\n"));
        }
        buf.push_str("\r\n");
        buf
    };
    let fits = head(MAX_HEADERS);
    with_request(fits.as_bytes(), |h| {
        assert_eq!(h.headers.len(), MAX_HEADERS);
        assert_eq!(h.headers[MAX_HEADERS - 1].name, "X-H63");
    });
    assert_eq!(
        request_error(head(MAX_HEADERS + 1).as_bytes()),
        ProxyError::HeadTooLarge
    );
    // Known as soon as the extra line is whole, before the head ends.
    let partial = head(MAX_HEADERS + 1);
    let partial = &partial.as_bytes()[..partial.len() - 2];
    assert_eq!(request_error(partial), ProxyError::HeadTooLarge);
}

#[test]
fn incomplete_head_errors() {
    // The request line never ended: 414.
    let mut long_line = b"GET http://h/".to_vec();
    long_line.resize(1024, b'a');
    assert_eq!(
        RequestHead::incomplete_error(&long_line),
        ProxyError::UriTooLong
    );
    assert_eq!(RequestHead::incomplete_error(b""), ProxyError::UriTooLong);
    assert_eq!(
        RequestHead::incomplete_error(b"\r\n\r\n"),
        ProxyError::UriTooLong
    );
    // Empty lines before the request line do not count as its end.
    let mut after_blank = b"\r\n\r\n\n".to_vec();
    after_blank.extend_from_slice(&long_line);
    assert_eq!(
        RequestHead::incomplete_error(&after_blank),
        ProxyError::UriTooLong
    );
    // The request line ended, the headers did not: 431.
    let mut long_headers = b"GET http://h/ HTTP/1.1\r\nX-Big: ".to_vec();
    long_headers.resize(1024, b'b');
    assert_eq!(
        RequestHead::incomplete_error(&long_headers),
        ProxyError::HeadTooLarge
    );
    assert_eq!(
        RequestHead::incomplete_error(b"GET http://h/ HTTP/1.1\n"),
        ProxyError::HeadTooLarge
    );
    // And what parse says of those buffers: not whole yet.
    let mut hs = headers();
    assert!(matches!(RequestHead::parse(&long_line, &mut hs), Ok(None)));
    let mut hs = headers();
    assert!(matches!(
        RequestHead::parse(&long_headers, &mut hs),
        Ok(None)
    ));
}

/// Heads that parse, each checked at every split point.
const VALID_HEADS: [&[u8]; 7] = [
    b"GET http://example.com:8080/a?b HTTP/1.1\r\nHost: example.com\r\nUser-Agent: t\r\nAccept: */*\r\n\r\n",
    b"POST /submit HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\n",
    b"PUT http://h/x HTTP/1.1\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n",
    b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n",
    b"\r\nGET http://h/ HTTP/1.1\r\n\r\n",
    b"GET http://h/ HTTP/1.1\nHost: h\n\n",
];

#[test]
fn partial_heads_wait_at_every_split() {
    for whole in VALID_HEADS {
        let mut hs = headers();
        let head_len = RequestHead::parse(whole, &mut hs)
            .expect("valid")
            .expect("whole")
            .head_len;
        assert_eq!(head_len, whole.len());
        for split in 0..whole.len() {
            let mut hs = headers();
            let result = RequestHead::parse(&whole[..split], &mut hs);
            assert!(
                matches!(result, Ok(None)),
                "{:?} split at {split}: {result:?}",
                String::from_utf8_lossy(whole)
            );
        }
        // A body (or the next request) after the head is not part of it.
        let mut more = whole.to_vec();
        more.extend_from_slice(b"hello GET / HTTP/1.1\r\n");
        with_request(&more, |h| assert_eq!(h.head_len, whole.len()));
    }
}

#[test]
fn head_len_excludes_the_body() {
    let buf = b"POST http://h/ HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello";
    with_request(buf, |h| {
        assert_eq!(h.head_len, buf.len() - 5);
        assert_eq!(&buf[h.head_len..], b"hello");
        assert_eq!(h.framing, BodyFraming::Length(5));
    });
}

// ---------------------------------------------------------------------------------------------------------------
// Request framing
// ---------------------------------------------------------------------------------------------------------------

fn request_with(headers: &str) -> Vec<u8> {
    format!("POST http://h/ HTTP/1.1\r\n{headers}\r\n").into_bytes()
}

#[test]
fn request_framing_by_content_length() {
    assert_eq!(framing(&request_with("")), Ok(BodyFraming::None));
    assert_eq!(
        framing(&request_with("Content-Length: 0\r\n")),
        Ok(BodyFraming::None)
    );
    assert_eq!(
        framing(&request_with("Content-Length: 42\r\n")),
        Ok(BodyFraming::Length(42))
    );
    assert_eq!(
        framing(&request_with("content-length: 007\r\n")),
        Ok(BodyFraming::Length(7))
    );
    assert_eq!(
        framing(&request_with("Content-Length: 9999999999999999999\r\n")),
        Ok(BodyFraming::Length(9_999_999_999_999_999_999))
    );
    // Equal duplicates, as a list or as separate lines, are one length.
    assert_eq!(
        framing(&request_with("Content-Length: 42, 42\r\n")),
        Ok(BodyFraming::Length(42))
    );
    assert_eq!(
        framing(&request_with(
            "Content-Length: 42\r\nX-A: b\r\nContent-Length: 42\r\n"
        )),
        Ok(BodyFraming::Length(42))
    );
}

#[test]
fn request_framing_invalid_content_length() {
    for headers in [
        "Content-Length: 42\r\nContent-Length: 43\r\n",
        "Content-Length: 42, 43\r\n",
        "Content-Length: 0\r\nContent-Length: 1\r\n",
        "Content-Length: abc\r\n",
        "Content-Length: -1\r\n",
        "Content-Length: +5\r\n",
        "Content-Length: 0x10\r\n",
        "Content-Length: 1 2\r\n",
        "Content-Length: 4.0\r\n",
        "Content-Length: 99999999999999999999\r\n",
        // An empty value is not a length (RFC 9110 §8.6: 1*DIGIT), and must not pass for "no body".
        "Content-Length:\r\n",
        "Content-Length: \r\n",
        "Content-Length: ,\r\n",
        "Content-Length: 5\r\nContent-Length:\r\n",
    ] {
        assert_eq!(
            framing(&request_with(headers)),
            Err(ProxyError::MalformedHead),
            "{headers:?}"
        );
    }
}

#[test]
fn request_framing_chunked() {
    for headers in [
        "Transfer-Encoding: chunked\r\n",
        "Transfer-Encoding: CHUNKED\r\n",
        "transfer-encoding:  chunked \r\n",
        "Transfer-Encoding: gzip, chunked\r\n",
        "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
    ] {
        assert_eq!(
            framing(&request_with(headers)),
            Ok(BodyFraming::Chunked),
            "{headers:?}"
        );
    }
}

/// A coding the proxy does not know: 501 (RFC 9112 §6.1).
#[test]
fn request_framing_unknown_codings_are_unsupported() {
    for headers in [
        "Transfer-Encoding: chunkedx\r\n",
        "Transfer-Encoding: br, chunked\r\n",
        "Transfer-Encoding: gzip;level=9, chunked\r\n",
    ] {
        assert_eq!(
            framing(&request_with(headers)),
            Err(ProxyError::UnsupportedTransferCoding),
            "{headers:?}"
        );
    }
}

/// What RFC 9112 does not allow a request's `Transfer-Encoding` to say is 400: a list that does not end in
/// `chunked` (the body's end is unknown, §6.3), `chunked` twice (§6.1), `identity` (no longer a coding),
/// `chunked` with parameters, an empty field, and more codings than anyone stacks.
#[test]
fn request_framing_codings_rfc_9112_does_not_allow_are_400() {
    for headers in [
        "Transfer-Encoding: gzip\r\n",
        "Transfer-Encoding: chunked, gzip\r\n",
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n",
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: chunked, chunked\r\n",
        "Transfer-Encoding: identity\r\n",
        "Transfer-Encoding: identity\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: identity, chunked\r\n",
        "Transfer-Encoding: chunked;x=1\r\n",
        "Transfer-Encoding: \r\n",
        "Transfer-Encoding: gzip, gzip, gzip, gzip, chunked\r\n",
    ] {
        assert_eq!(
            framing(&request_with(headers)),
            Err(ProxyError::MalformedHead),
            "{headers:?}"
        );
    }
}

#[test]
fn request_framing_both_length_and_coding_is_refused() {
    for headers in [
        "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
        "Transfer-Encoding: chunked\r\nContent-Length: 0\r\n",
        "Content-Length: 5\r\nTransfer-Encoding: gzip, chunked\r\n",
        "Content-Length: 5\r\nTransfer-Encoding: gzip\r\n",
    ] {
        assert_eq!(
            framing(&request_with(headers)),
            Err(ProxyError::MalformedHead),
            "{headers:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Keep-alive
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn request_keep_alive_http_1_1() {
    let h =
        |headers: &str| keep_alive(format!("GET http://h/ HTTP/1.1\r\n{headers}\r\n").as_bytes());
    assert!(h(""));
    assert!(h("Connection: keep-alive\r\n"));
    assert!(h("Connection: upgrade\r\n"));
    assert!(!h("Connection: close\r\n"));
    assert!(!h("Connection: CLOSE\r\n"));
    assert!(!h("Connection: keep-alive, close\r\n"));
    assert!(!h("Connection: x-a\r\nConnection: close\r\n"));
    assert!(!h("Proxy-Connection: close\r\n"));
    assert!(!h("Connection: keep-alive\r\nProxy-Connection: Close\r\n"));
    // Only the token `close`, not a header merely containing it.
    assert!(h("Connection: closed\r\n"));
    assert!(h("X-Connection: close\r\n"));
}

#[test]
fn request_keep_alive_http_1_0() {
    let h =
        |headers: &str| keep_alive(format!("GET http://h/ HTTP/1.0\r\n{headers}\r\n").as_bytes());
    assert!(!h(""));
    assert!(h("Connection: keep-alive\r\n"));
    assert!(h("Connection: Keep-Alive\r\n"));
    assert!(h("Connection: foo, keep-alive\r\n"));
    assert!(h("Proxy-Connection: keep-alive\r\n"));
    assert!(!h("Connection: close\r\n"));
    assert!(!h("Keep-Alive: timeout=5\r\n"));
    assert!(!h("Connection: keep-alives\r\n"));
}

// ---------------------------------------------------------------------------------------------------------------
// Upstream request rewriting
// ---------------------------------------------------------------------------------------------------------------

const HOP_BY_HOP_REQUEST: &[u8] = b"GET http://example.com/x HTTP/1.1\r\n\
Host: ignored.example\r\n\
User-Agent: test/1.0\r\n\
Connection: keep-alive, X-Secret, x-other\r\n\
Keep-Alive: timeout=5\r\n\
Proxy-Connection: keep-alive\r\n\
Proxy-Authorization: Basic Zm9vOmJhcg==\r\n\
TE: trailers\r\n\
Trailer: Expires\r\n\
Upgrade: websocket\r\n\
X-Secret: 1\r\n\
Accept: */*\r\n\
X-OTHER: 2\r\n\
Cookie: a=b; c=d\r\n\
X-Empty:\r\n\
Via: 1.0 fred\r\n\
\r\n";

#[test]
fn upstream_request_removes_hop_by_hop_headers() {
    assert_eq!(
        upstream(HOP_BY_HOP_REQUEST, true),
        "GET /x HTTP/1.1\r\n\
         Host: example.com\r\n\
         User-Agent: test/1.0\r\n\
         Accept: */*\r\n\
         Cookie: a=b; c=d\r\n\
         X-Empty: \r\n\
         Via: 1.0 fred\r\n\
         Via: 1.1 smoltalk\r\n\
         \r\n"
    );
}

#[test]
fn upstream_request_closes_only_when_not_kept() {
    assert_eq!(
        upstream(HOP_BY_HOP_REQUEST, false),
        "GET /x HTTP/1.1\r\n\
         Host: example.com\r\n\
         User-Agent: test/1.0\r\n\
         Accept: */*\r\n\
         Cookie: a=b; c=d\r\n\
         X-Empty: \r\n\
         Via: 1.0 fred\r\n\
         Via: 1.1 smoltalk\r\n\
         Connection: close\r\n\
         \r\n"
    );
    // The client's own `Connection: close` is not forwarded; the caller's decision is.
    assert_eq!(
        upstream(b"GET http://h/ HTTP/1.1\r\nConnection: close\r\n\r\n", true),
        "GET / HTTP/1.1\r\nHost: h\r\nVia: 1.1 smoltalk\r\n\r\n"
    );
}

#[test]
fn upstream_request_hop_by_hop_names_are_case_insensitive() {
    let buf = b"GET http://h/ HTTP/1.1\r\n\
CONNECTION: X-Foo\r\n\
KEEP-ALIVE: 1\r\n\
proxy-connection: 1\r\n\
PROXY-AUTHORIZATION: x\r\n\
te: x\r\n\
TRAILER: x\r\n\
upgrade: x\r\n\
x-foo: 1\r\n\
X-Bar: 2\r\n\
\r\n";
    assert_eq!(
        upstream(buf, true),
        "GET / HTTP/1.1\r\nHost: h\r\nX-Bar: 2\r\nVia: 1.1 smoltalk\r\n\r\n"
    );
}

#[test]
fn upstream_request_host_first_and_origin_form_host_as_sent() {
    let buf = b"POST /form?a=1 HTTP/1.1\r\nAccept: x\r\nContent-Length: 3\r\nHost:  h.example:81 \r\n\r\n";
    assert_eq!(
        upstream(buf, true),
        "POST /form?a=1 HTTP/1.1\r\nHost: h.example:81\r\nAccept: x\r\nContent-Length: 3\r\nVia: 1.1 smoltalk\r\n\r\n"
    );
}

#[test]
fn upstream_request_via_names_the_client_version() {
    // HTTP/1.0 client: the request goes on as 1.0 (so no chunked answer reaches it), Via records the 1.0 hop,
    // and a kept connection says so, as 1.0 requires.
    let buf = b"GET http://h/p HTTP/1.0\r\nConnection: keep-alive\r\nAccept: a\r\n\r\n";
    assert_eq!(
        upstream(buf, true),
        "GET /p HTTP/1.0\r\nHost: h\r\nAccept: a\r\nVia: 1.0 smoltalk\r\nConnection: keep-alive\r\n\r\n"
    );
    assert_eq!(
        upstream(b"GET http://h/p HTTP/1.0\r\n\r\n", false),
        "GET /p HTTP/1.0\r\nHost: h\r\nVia: 1.0 smoltalk\r\nConnection: close\r\n\r\n"
    );
}

#[test]
fn upstream_request_keeps_body_framing_headers() {
    assert_eq!(
        upstream(
            b"POST http://h/ HTTP/1.1\r\nContent-Length: 5\r\nContent-Type: a/b\r\n\r\n",
            true
        ),
        "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Type: a/b\r\nVia: 1.1 smoltalk\r\n\r\n"
    );
    assert_eq!(
        upstream(
            b"POST http://h/ HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            true
        ),
        "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\nVia: 1.1 smoltalk\r\n\r\n"
    );
}

/// Issue 13: the next hop sees exactly one framing field, the one the proxy wrote, however the client or the
/// origin spelled theirs: duplicates are folded into one, and a message the proxy cannot read as one framing
/// is refused rather than relayed.
#[test]
fn ambiguous_framing_fields_reach_the_next_hop_as_one_field_the_proxy_wrote() {
    let cases: [(&[u8], &str); 4] = [
        (
            b"POST http://h/ HTTP/1.1\r\nContent-Length: 5, 5\r\nX-A: 1\r\n\r\n",
            "Content-Length: 5\r\nX-A: 1\r\n",
        ),
        (
            b"POST http://h/ HTTP/1.1\r\nContent-Length: 5\r\nX-A: 1\r\nContent-Length: 5\r\n\r\n",
            "Content-Length: 5\r\nX-A: 1\r\n",
        ),
        (
            b"POST http://h/ HTTP/1.1\r\ntransfer-encoding: GZIP\r\nX-A: 1\r\nTransfer-Encoding:chunked\r\n\r\n",
            "Transfer-Encoding: gzip, chunked\r\nX-A: 1\r\n",
        ),
        (
            b"POST http://h/ HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
            "Content-Length: 0\r\n",
        ),
    ];
    for (request, fields) in cases {
        assert_eq!(
            upstream(request, true),
            format!("POST / HTTP/1.1\r\nHost: h\r\n{fields}Via: 1.1 smoltalk\r\n\r\n"),
            "{:?}",
            String::from_utf8_lossy(request)
        );
    }
    for refused in [
        &b"POST http://h/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
        b"POST http://h/ HTTP/1.1\r\nTransfer-Encoding: identity\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST http://h/ HTTP/1.1\r\nContent-Length: 5, 6\r\n\r\n",
    ] {
        assert_eq!(framing(refused), Err(ProxyError::MalformedHead));
    }
    // Towards the client.
    assert_eq!(
        downstream(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2, 2\r\n\r\n",
            1,
            true
        ),
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nVia: 1.1 smoltalk\r\n\r\n"
    );
    assert_eq!(
        downstream(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: x-gzip\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n",
            1,
            true
        ),
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nVia: 1.1 smoltalk\r\n\r\n"
    );
    for refused in [
        &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2, 3\r\n\r\n",
    ] {
        let mut hs = headers();
        assert_eq!(
            ResponseHead::parse(refused, &mut hs, Method::Get).err(),
            Some(ProxyError::BadOriginResponse),
            "{:?}",
            String::from_utf8_lossy(refused)
        );
    }
}

/// RFC 9110 §7.6.2: an `OPTIONS` request's `Max-Forwards` goes on one lower; `0` means the request is for the
/// proxy itself (the engine answers it); `TRACE` with `0` is 405, any other `TRACE` 501. Other methods'
/// `Max-Forwards` go on as they came.
#[test]
fn max_forwards_is_decremented_for_options_and_zero_is_for_the_proxy() {
    assert_eq!(
        upstream(
            b"OPTIONS http://h/ HTTP/1.1\r\nMax-Forwards: 3\r\nX-A: 1\r\n\r\n",
            true
        ),
        "OPTIONS / HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nMax-Forwards: 2\r\nVia: 1.1 smoltalk\r\n\r\n"
    );
    with_request(
        b"OPTIONS * HTTP/1.1\r\nHost: h\r\nMax-Forwards: 0\r\n\r\n",
        |h| assert_eq!(h.max_forwards(), Some(0)),
    );
    assert_eq!(
        upstream(b"GET http://h/ HTTP/1.1\r\nMax-Forwards: 3\r\n\r\n", true),
        "GET / HTTP/1.1\r\nHost: h\r\nMax-Forwards: 3\r\nVia: 1.1 smoltalk\r\n\r\n"
    );
    let mut hs = headers();
    assert_eq!(
        RequestHead::parse(
            b"OPTIONS http://h/ HTTP/1.1\r\nMax-Forwards: x\r\n\r\n",
            &mut hs
        )
        .err(),
        Some(ProxyError::MalformedHead)
    );
    let mut hs = headers();
    assert_eq!(
        RequestHead::parse(
            b"TRACE http://h/ HTTP/1.1\r\nMax-Forwards: 0\r\n\r\n",
            &mut hs
        )
        .err(),
        Some(ProxyError::TraceNotAllowed)
    );
    let mut hs = headers();
    assert_eq!(
        RequestHead::parse(
            b"TRACE http://h/ HTTP/1.1\r\nMax-Forwards: 1\r\n\r\n",
            &mut hs
        )
        .err(),
        Some(ProxyError::UnsupportedMethod)
    );
    let mut page = [0u8; 2048];
    let mut writer = HeadWriter::new(&mut page);
    ProxyError::TraceNotAllowed
        .write_response(&mut writer)
        .unwrap();
    let page = String::from_utf8(writer.as_bytes().to_vec()).unwrap();
    assert!(
        page.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
        "{page}"
    );
    assert!(
        page.contains("\r\nAllow: GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, CONNECT\r\n"),
        "{page}"
    );
}

#[test]
fn connection_cannot_strip_body_framing() {
    // The proxy forwards the body as framed; if `Connection` could name the framing header away, the origin
    // would read the body as the next request (smuggling). The framing header stays.
    let buf = b"POST http://h/ HTTP/1.1\r\nConnection: Content-Length, X-A\r\nContent-Length: 5\r\nX-A: 1\r\n\r\n";
    with_request(buf, |h| assert_eq!(h.framing, BodyFraming::Length(5)));
    assert_eq!(
        upstream(buf, true),
        "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nVia: 1.1 smoltalk\r\n\r\n"
    );
    let buf = b"POST http://h/ HTTP/1.1\r\nConnection: transfer-encoding\r\nTransfer-Encoding: chunked\r\n\r\n";
    with_request(buf, |h| assert_eq!(h.framing, BodyFraming::Chunked));
    assert_eq!(
        upstream(buf, true),
        "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nVia: 1.1 smoltalk\r\n\r\n"
    );
    // The same towards the client.
    assert_eq!(
        downstream(
            b"HTTP/1.1 200 OK\r\nConnection: content-length\r\nContent-Length: 2\r\n\r\n",
            1,
            true
        ),
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nVia: 1.1 smoltalk\r\n\r\n"
    );
}

#[test]
fn upstream_request_does_not_fit() {
    with_request(HOP_BY_HOP_REQUEST, |head| {
        let mut big = [0u8; 4096];
        let mut writer = HeadWriter::new(&mut big);
        upstream_request(head, PSEUDONYM, false, &mut writer).unwrap();
        let full = writer.len();
        for size in 0..full {
            let mut small = vec![0u8; size];
            let mut writer = HeadWriter::new(&mut small);
            assert_eq!(
                upstream_request(head, PSEUDONYM, false, &mut writer),
                Err(HeadTooLarge),
                "buffer of {size}"
            );
            assert!(writer.len() <= size);
        }
        let mut exact = vec![0u8; full];
        let mut writer = HeadWriter::new(&mut exact);
        assert_eq!(
            upstream_request(head, PSEUDONYM, false, &mut writer),
            Ok(())
        );
        assert_eq!(writer.len(), full);
    });
}

#[test]
fn upstream_request_parses_back() {
    // What the origin receives is itself a valid origin-form request for the same place.
    for whole in [
        HOP_BY_HOP_REQUEST,
        b"GET http://[::1]:8080?q HTTP/1.0\r\nAccept: a\r\n\r\n",
        b"POST /p HTTP/1.1\r\nHost: h:81\r\nContent-Length: 5\r\n\r\n",
    ] {
        let text = upstream(whole, false);
        let (authority, path, method, framing, minor_version) = with_request(whole, |h| {
            (
                h.target.authority().to_string(),
                h.target.path().to_string(),
                h.method,
                h.framing,
                h.minor_version,
            )
        });
        with_request(text.as_bytes(), |again| {
            assert!(matches!(again.target, RequestTarget::Origin { .. }));
            assert_eq!(again.target.authority().to_string(), authority);
            let expected_path = if path.starts_with('?') {
                format!("/{path}")
            } else {
                path.clone()
            };
            assert_eq!(again.target.path(), expected_path);
            assert_eq!(again.method, method);
            assert_eq!(again.framing, framing);
            assert_eq!(again.minor_version, minor_version);
            assert!(!again.keep_alive);
            assert!(again.came_through(PSEUDONYM));
        });
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Request helpers: Via loops, Expect, header lookup
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn came_through_finds_the_pseudonym_in_via() {
    let through = |via: &str, name: &str| {
        with_request(
            format!("GET http://h/ HTTP/1.1\r\n{via}\r\n").as_bytes(),
            |h| h.came_through(name),
        )
    };
    assert!(!through("", "smoltalk"));
    assert!(through("Via: 1.1 smoltalk\r\n", "smoltalk"));
    assert!(through("Via: 1.1 SmolTalk\r\n", "smoltalk"));
    assert!(through("via: HTTP/1.1 smoltalk\r\n", "smoltalk"));
    assert!(through(
        "Via: 1.0 fred, 1.1 smoltalk (smoltalk/0.1)\r\n",
        "smoltalk"
    ));
    assert!(through("Via: 1.0 fred,1.1\tsmoltalk\r\n", "smoltalk"));
    assert!(through(
        "Via: 1.0 fred\r\nVia: 1.1 smoltalk\r\n",
        "smoltalk"
    ));
    assert!(through(
        "Via: 1.0 a, 1.1 b, 1.1 smoltalk, 1.1 c\r\n",
        "smoltalk"
    ));
    assert!(through(
        "Via: 1.1 proxy.example:3128\r\n",
        "proxy.example:3128"
    ));
    assert!(!through("Via: 1.1 fred\r\n", "smoltalk"));
    assert!(!through("Via: 1.1 smoltalk-2\r\n", "smoltalk"));
    assert!(!through("Via: 1.1 other (smoltalk)\r\n", "smoltalk"));
    assert!(!through("Via: smoltalk\r\n", "smoltalk"));
    assert!(!through("X-Via: 1.1 smoltalk\r\n", "smoltalk"));
    assert!(!through("Via: 1.1 proxy.example:3128\r\n", "proxy.example"));
}

#[test]
fn expect_continue_and_header_lookup() {
    let buf = b"POST http://h/ HTTP/1.1\r\nX-A: first\r\nexpect: 100-Continue\r\nx-a: second\r\nContent-Length: 3\r\n\r\n";
    with_request(buf, |h| {
        assert!(h.expects_continue());
        assert_eq!(h.header("X-A"), Some(&b"first"[..]));
        assert_eq!(h.header("content-length"), Some(&b"3"[..]));
        assert_eq!(h.header("missing"), None);
        assert_eq!(h.headers.len(), 4);
        assert_eq!(h.headers[2].name, "x-a");
    });
    with_request(b"POST http://h/ HTTP/1.1\r\n\r\n", |h| {
        assert!(!h.expects_continue())
    });
    with_request(b"POST http://h/ HTTP/1.1\r\nExpect: 200-ok\r\n\r\n", |h| {
        assert!(!h.expects_continue())
    });
}

// ---------------------------------------------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn response_head_fields() {
    let buf = b"HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\nX-A: b\r\n\r\nabc";
    with_response(buf, Method::Get, |h| {
        assert_eq!(h.code, 404);
        assert_eq!(h.reason, "Not Found");
        assert_eq!(h.minor_version, 1);
        assert_eq!(h.head_len, buf.len() - 3);
        assert_eq!(h.headers.len(), 2);
        assert_eq!(h.framing, BodyFraming::Length(3));
        assert!(h.keep_alive);
        assert!(!h.is_interim());
        assert_eq!(h.to_string(), "HTTP/1.1 404 Not Found");
    });
    with_response(b"HTTP/1.0 200\r\n\r\n", Method::Get, |h| {
        assert_eq!(h.code, 200);
        assert_eq!(h.reason, "");
        assert_eq!(h.minor_version, 0);
    });
}

#[test]
fn response_framing_length_and_chunked() {
    assert_eq!(
        response_framing(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", Method::Get),
        (BodyFraming::Length(5), true)
    );
    assert_eq!(
        response_framing(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", Method::Get),
        (BodyFraming::Length(0), true)
    );
    assert_eq!(
        response_framing(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
            Method::Get
        ),
        (BodyFraming::Length(5), true)
    );
    assert_eq!(
        response_framing(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            Method::Post
        ),
        (BodyFraming::Chunked, true)
    );
    assert_eq!(
        response_framing(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            Method::Get
        ),
        (BodyFraming::Chunked, true)
    );
    // Both: the coding wins (RFC 9112 §6.3).
    assert_eq!(
        response_framing(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            Method::Get
        ),
        (BodyFraming::Chunked, true)
    );
}

#[test]
fn response_framing_until_close() {
    // No length at all.
    assert_eq!(
        response_framing(b"HTTP/1.1 200 OK\r\n\r\n", Method::Get),
        (BodyFraming::UntilClose, false)
    );
    assert_eq!(
        response_framing(
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\n\r\n",
            Method::Get
        ),
        (BodyFraming::UntilClose, false)
    );
    // A coding other than chunked last: only the close ends it.
    assert_eq!(
        response_framing(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            Method::Get
        ),
        (BodyFraming::UntilClose, false)
    );
    assert_eq!(
        response_framing(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\nContent-Length: 5\r\n\r\n",
            Method::Get
        ),
        (BodyFraming::UntilClose, false)
    );
}

#[test]
fn response_framing_without_body() {
    // A response to HEAD has no body whatever it says.
    assert_eq!(
        response_framing(
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n",
            Method::Head
        ),
        (BodyFraming::None, true)
    );
    assert_eq!(
        response_framing(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            Method::Head
        ),
        (BodyFraming::None, true)
    );
    assert_eq!(
        response_framing(b"HTTP/1.1 200 OK\r\n\r\n", Method::Head),
        (BodyFraming::None, true)
    );
    // Not even a conflicting length matters then.
    assert_eq!(
        response_framing(
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            Method::Head
        ),
        (BodyFraming::None, true)
    );
    for status in [
        &b"HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n"[..],
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
        b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.1 204 No Content\r\n\r\n",
    ] {
        assert_eq!(
            response_framing(status, Method::Get),
            (BodyFraming::None, true),
            "{:?}",
            String::from_utf8_lossy(status)
        );
    }
}

#[test]
fn interim_responses() {
    with_response(b"HTTP/1.1 100 Continue\r\n\r\n", Method::Post, |h| {
        assert!(h.is_interim());
        assert_eq!(h.framing, BodyFraming::None);
        assert!(h.keep_alive);
    });
    with_response(
        b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n",
        Method::Get,
        |h| {
            assert!(h.is_interim());
            assert_eq!(h.framing, BodyFraming::None);
        },
    );
    // 101 would end HTTP on the connection, and the proxy never asks for it (it drops `Upgrade`): refused.
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    assert_eq!(
        ResponseHead::parse(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            &mut headers,
            Method::Get
        )
        .err(),
        Some(ProxyError::BadOriginResponse)
    );
    with_response(
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        Method::Get,
        |h| assert!(!h.is_interim()),
    );
}

#[test]
fn response_keep_alive() {
    let kept = |buf: &[u8]| response_framing(buf, Method::Get).1;
    assert!(kept(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n"));
    assert!(!kept(
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\n"
    ));
    assert!(!kept(
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: Keep-Alive, Close\r\n\r\n"
    ));
    assert!(!kept(b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n"));
    assert!(kept(
        b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\nConnection: keep-alive\r\n\r\n"
    ));
    // An origin's Proxy-Connection means nothing.
    assert!(kept(
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nProxy-Connection: close\r\n\r\n"
    ));
    assert!(!kept(
        b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\nProxy-Connection: keep-alive\r\n\r\n"
    ));
}

#[test]
fn malformed_responses() {
    for buf in [
        &b"garbage\r\n\r\n"[..],
        b"HTTP/1.1 abc OK\r\n\r\n",
        b"HTTP/1.1 20 OK\r\n\r\n",
        b"HTTP/2.0 200 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nBad Header: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\n",
    ] {
        assert_eq!(
            response_error(buf, Method::Get),
            ProxyError::BadOriginResponse,
            "{:?}",
            String::from_utf8_lossy(buf)
        );
    }
    let mut many = String::from("HTTP/1.1 200 OK\r\n");
    for i in 0..=MAX_HEADERS {
        many.push_str(&format!("X-{i}: {i}\r\n"));
    }
    many.push_str("\r\n");
    // More fields than the parser was given room for: too large, and said so (not "not valid HTTP").
    assert_eq!(
        response_error(many.as_bytes(), Method::Get),
        ProxyError::OriginHeadTooLarge
    );
    // With room for every line of it, the same head parses.
    let fields = ResponseHead::fields_in(many.as_bytes());
    assert_eq!(fields, MAX_HEADERS + 1);
    let mut room = vec![httparse::EMPTY_HEADER; fields];
    assert!(matches!(
        ResponseHead::parse(many.as_bytes(), &mut room, Method::Get),
        Ok(Some(_))
    ));
}

#[test]
fn partial_responses_wait_at_every_split() {
    let whole = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\n";
    for split in 0..whole.len() {
        let mut hs = headers();
        let result = ResponseHead::parse(&whole[..split], &mut hs, Method::Get);
        assert!(matches!(result, Ok(None)), "split at {split}: {result:?}");
    }
    with_response(whole, Method::Get, |h| assert_eq!(h.head_len, whole.len()));
}

// ---------------------------------------------------------------------------------------------------------------
// Client response rewriting
// ---------------------------------------------------------------------------------------------------------------

const HOP_BY_HOP_RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\n\
Date: Mon, 01 Jan 2024 00:00:00 GMT\r\n\
Connection: keep-alive, X-Hop\r\n\
Keep-Alive: timeout=5\r\n\
Proxy-Authenticate: Basic realm=\"x\"\r\n\
Proxy-Connection: keep-alive\r\n\
Trailer: Expires\r\n\
Upgrade: h2c\r\n\
TE: trailers\r\n\
X-Hop: 1\r\n\
Content-Type: text/plain\r\n\
Content-Length: 5\r\n\
Set-Cookie: a=1\r\n\
Set-Cookie: b=2\r\n\
\r\n";

const END_TO_END_RESPONSE: &str = "HTTP/1.1 200 OK\r\n\
Date: Mon, 01 Jan 2024 00:00:00 GMT\r\n\
Content-Type: text/plain\r\n\
Content-Length: 5\r\n\
Set-Cookie: a=1\r\n\
Set-Cookie: b=2\r\n\
Via: 1.1 smoltalk\r\n";

#[test]
fn client_response_removes_hop_by_hop_headers() {
    // Kept, HTTP/1.1 client: nothing to say about the connection.
    assert_eq!(
        downstream(HOP_BY_HOP_RESPONSE, 1, true),
        format!("{END_TO_END_RESPONSE}\r\n")
    );
}

#[test]
fn client_response_connection_fate() {
    assert_eq!(
        downstream(HOP_BY_HOP_RESPONSE, 1, false),
        format!("{END_TO_END_RESPONSE}Connection: close\r\n\r\n")
    );
    assert_eq!(
        downstream(HOP_BY_HOP_RESPONSE, 0, false),
        format!("{END_TO_END_RESPONSE}Connection: close\r\n\r\n")
    );
    // An HTTP/1.0 client must be told the connection stays.
    assert_eq!(
        downstream(HOP_BY_HOP_RESPONSE, 0, true),
        format!("{END_TO_END_RESPONSE}Connection: keep-alive\r\n\r\n")
    );
}

#[test]
fn client_response_from_http_1_0_origin() {
    assert_eq!(
        downstream(
            b"HTTP/1.0 302 Found\r\nLocation: http://h/x\r\nContent-Length: 0\r\n\r\n",
            1,
            false
        ),
        "HTTP/1.1 302 Found\r\nLocation: http://h/x\r\nContent-Length: 0\r\nVia: 1.0 smoltalk\r\nConnection: close\r\n\r\n"
    );
    // An empty reason phrase stays empty.
    assert_eq!(
        downstream(b"HTTP/1.1 204\r\n\r\n", 1, true),
        "HTTP/1.1 204 \r\nVia: 1.1 smoltalk\r\n\r\n"
    );
}

#[test]
fn client_response_interim_says_nothing_of_the_connection() {
    for keep in [true, false] {
        for client in [0, 1] {
            assert_eq!(
                downstream(b"HTTP/1.1 100 Continue\r\n\r\n", client, keep),
                "HTTP/1.1 100 Continue\r\nVia: 1.1 smoltalk\r\n\r\n"
            );
            assert_eq!(
                downstream(
                    b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n",
                    client,
                    keep
                ),
                "HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\nVia: 1.1 smoltalk\r\n\r\n"
            );
        }
    }
}

#[test]
fn client_response_drops_content_length_beside_transfer_encoding() {
    // RFC 9112 §6.3: an intermediary that forwards such a message must first remove Content-Length, or the
    // client may frame the chunked body by the length.
    assert_eq!(
        downstream(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\nX-A: b\r\n\r\n",
            1,
            true
        ),
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: b\r\nVia: 1.1 smoltalk\r\n\r\n"
    );
    // Chunked alone, or a length alone, go on untouched.
    assert_eq!(
        downstream(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            1,
            true
        ),
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nVia: 1.1 smoltalk\r\n\r\n"
    );
}

#[test]
fn client_response_does_not_fit() {
    with_response(HOP_BY_HOP_RESPONSE, Method::Get, |head| {
        let full = format!("{END_TO_END_RESPONSE}Connection: keep-alive\r\n\r\n").len();
        for size in 0..full {
            let mut small = vec![0u8; size];
            let mut writer = HeadWriter::new(&mut small);
            assert_eq!(
                client_response(head, PSEUDONYM, 0, true, &mut writer),
                Err(HeadTooLarge),
                "buffer of {size}"
            );
        }
        let mut exact = vec![0u8; full];
        let mut writer = HeadWriter::new(&mut exact);
        assert_eq!(
            client_response(head, PSEUDONYM, 0, true, &mut writer),
            Ok(())
        );
        assert_eq!(writer.len(), full);
    });
}

#[test]
fn tunnel_established_head() {
    let mut out = [0u8; 128];
    let mut writer = HeadWriter::new(&mut out);
    tunnel_established(PSEUDONYM, &mut writer).unwrap();
    assert_eq!(
        writer.as_bytes(),
        b"HTTP/1.1 200 Connection established\r\nVia: 1.1 smoltalk\r\n\r\n"
    );
    let full = writer.len();
    let mut small = vec![0u8; full - 1];
    assert_eq!(
        tunnel_established(PSEUDONYM, &mut HeadWriter::new(&mut small)),
        Err(HeadTooLarge)
    );
}

// ---------------------------------------------------------------------------------------------------------------
// HeadWriter
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn head_writer_fills_and_refuses_overflow() {
    let mut out = [0u8; 8];
    let mut writer = HeadWriter::new(&mut out);
    assert!(writer.is_empty());
    assert_eq!(writer.push(b"abc"), Ok(()));
    assert_eq!(writer.push(b""), Ok(()));
    assert_eq!(writer.len(), 3);
    assert!(!writer.is_empty());
    // A push that does not fit writes nothing at all.
    assert_eq!(writer.push(b"defghi"), Err(HeadTooLarge));
    assert_eq!(writer.as_bytes(), b"abc");
    assert_eq!(writer.push(b"defgh"), Ok(()));
    assert_eq!(writer.as_bytes(), b"abcdefgh");
    assert_eq!(writer.push(b"x"), Err(HeadTooLarge));
    assert_eq!(writer.len(), 8);

    use core::fmt::Write;
    let mut out = [0u8; 4];
    let mut writer = HeadWriter::new(&mut out);
    assert!(write!(writer, "{}", 12).is_ok());
    assert!(write!(writer, "{}", 345).is_err());
    assert_eq!(writer.as_bytes(), b"12");
    assert_eq!(HeadTooLarge.to_string(), "the head does not fit its buffer");
}

// ---------------------------------------------------------------------------------------------------------------
// Error pages
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn error_statuses_and_reasons() {
    let expected: [(ProxyError, u16, &str); 22] = [
        (ProxyError::MalformedHead, 400, "Bad Request"),
        (ProxyError::BadTarget, 400, "Bad Request"),
        (ProxyError::MalformedBody, 400, "Bad Request"),
        (ProxyError::ClientNotAllowed, 403, "Forbidden"),
        (ProxyError::DestinationNotAllowed, 403, "Forbidden"),
        (ProxyError::ConnectPortNotAllowed, 403, "Forbidden"),
        (ProxyError::HeadTimeout, 408, "Request Timeout"),
        (ProxyError::UriTooLong, 414, "URI Too Long"),
        (
            ProxyError::HeadTooLarge,
            431,
            "Request Header Fields Too Large",
        ),
        (ProxyError::UnsupportedMethod, 501, "Not Implemented"),
        (ProxyError::TraceNotAllowed, 405, "Method Not Allowed"),
        (
            ProxyError::UnsupportedTransferCoding,
            501,
            "Not Implemented",
        ),
        (ProxyError::UnsupportedScheme, 400, "Bad Request"),
        (
            ProxyError::UnsupportedVersion,
            505,
            "HTTP Version Not Supported",
        ),
        (ProxyError::OriginRefused, 502, "Bad Gateway"),
        (ProxyError::OriginUnresolvable, 502, "Bad Gateway"),
        (ProxyError::OriginReset, 502, "Bad Gateway"),
        (ProxyError::BadOriginResponse, 502, "Bad Gateway"),
        (ProxyError::OriginHeadTooLarge, 502, "Bad Gateway"),
        (ProxyError::AtCapacity, 503, "Service Unavailable"),
        (ProxyError::OriginTimeout, 504, "Gateway Timeout"),
        (ProxyError::Loop, 508, "Loop Detected"),
    ];
    for ((error, status, reason), listed) in expected.into_iter().zip(ALL_ERRORS) {
        assert_eq!(error, listed);
        assert_eq!(error.status(), status, "{error:?}");
        assert_eq!(error.reason(), reason, "{error:?}");
    }
}

#[test]
fn error_pages_are_whole_answers() {
    for error in ALL_ERRORS {
        let page = error_page(error);
        let (head, body) = page.split_once("\r\n\r\n").expect("head and body");
        let mut lines = head.split("\r\n");
        assert_eq!(
            lines.next(),
            Some(format!("HTTP/1.1 {} {}", error.status(), error.reason()).as_str())
        );
        let headers: Vec<&str> = lines.collect();
        assert!(
            headers.contains(&format!("Content-Length: {}", body.len()).as_str()),
            "{error:?}: {headers:?} for a body of {}",
            body.len()
        );
        assert!(headers.contains(&"Connection: close"), "{error:?}");
        assert!(
            headers.contains(&"Content-Type: text/html; charset=utf-8"),
            "{error:?}"
        );
        assert_eq!(
            headers.contains(&"Retry-After: 1"),
            error == ProxyError::AtCapacity,
            "{error:?}"
        );
        assert!(body.starts_with("<!DOCTYPE html>\n"), "{error:?}");
        assert!(
            body.contains(&format!(
                "<title>{} {}</title>",
                error.status(),
                error.reason()
            )),
            "{error:?}"
        );
        assert!(
            body.contains(&format!("<h1>{} {}</h1>", error.status(), error.reason())),
            "{error:?}"
        );
        assert!(body.contains(&format!("<p>{error}.</p>")), "{error:?}");
        assert!(body.ends_with("</html>\n"), "{error:?}");
        // The answer parses as a response whose body is exactly the page.
        with_response(page.as_bytes(), Method::Get, |h| {
            assert_eq!(h.code, error.status());
            assert_eq!(h.reason, error.reason());
            assert_eq!(h.framing, BodyFraming::Length(body.len() as u64));
            assert!(!h.keep_alive);
            assert_eq!(h.head_len + body.len(), page.len());
        });
    }
}

/// The page with its sentence: only with the core's `explain` feature (a lean board leaves the sentences out).
#[cfg(feature = "explain")]
#[test]
fn error_page_exact_bytes() {
    let page = error_page(ProxyError::Loop);
    let body = "<!DOCTYPE html>\n<html><head><title>508 Loop Detected</title></head>\n\
                <body><h1>508 Loop Detected</h1>\n<p>The request would loop through this proxy.</p>\n\
                <hr><address>smoltalk proxy</address></body></html>\n";
    assert_eq!(
        page,
        format!(
            "HTTP/1.1 508 Loop Detected\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        )
    );
    let page = error_page(ProxyError::AtCapacity);
    assert!(page.starts_with(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: "
    ));
    assert!(page.contains("\r\nConnection: close\r\nRetry-After: 1\r\n\r\n<!DOCTYPE html>"));
}

#[test]
fn error_page_overflow_is_head_too_large() {
    for error in [
        ProxyError::Loop,
        ProxyError::AtCapacity,
        ProxyError::UnsupportedScheme,
    ] {
        let full = error_page(error).len();
        for size in [0, 1, 16, 100, full / 2, full - 1] {
            let mut small = vec![0u8; size];
            let mut writer = HeadWriter::new(&mut small);
            assert_eq!(
                error.write_response(&mut writer),
                Err(HeadTooLarge),
                "{error:?} in {size}"
            );
            assert!(writer.len() <= size);
        }
        let mut exact = vec![0u8; full];
        let mut writer = HeadWriter::new(&mut exact);
        assert_eq!(error.write_response(&mut writer), Ok(()));
        assert_eq!(writer.len(), full);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Body tracking
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn body_tracker_by_length() {
    for piece in [1, 2, 5, 64] {
        assert_eq!(
            body_len(BodyFraming::Length(5), b"helloGET / HTTP/1.1\r\n", piece),
            Ok((5, true))
        );
        assert_eq!(
            body_len(BodyFraming::Length(10), b"hello", piece),
            Ok((5, false))
        );
    }
    let mut t = BodyTracker::new(BodyFraming::Length(u64::MAX));
    assert_eq!(t.limit(), usize::MAX);
    assert_eq!(t.advance(&[0; 100]), Ok(100));
    assert!(!t.is_done() && !t.ends_at_close());

    let mut t = BodyTracker::new(BodyFraming::Length(3));
    assert_eq!(t.limit(), 3);
    assert_eq!(t.advance(b"a"), Ok(1));
    assert_eq!(t.limit(), 2);
    assert_eq!(t.advance(b""), Ok(0));
    assert_eq!(t.advance(b"bcd"), Ok(2));
    assert!(t.is_done());
    assert_eq!(t.limit(), 0);
    assert_eq!(t.advance(b"more"), Ok(0));
}

#[test]
fn body_tracker_without_body_and_until_close() {
    for framing in [BodyFraming::None, BodyFraming::Length(0)] {
        let mut t = BodyTracker::new(framing);
        assert!(t.is_done());
        assert_eq!(t.limit(), 0);
        assert_eq!(t.advance(b"GET / HTTP/1.1\r\n"), Ok(0));
    }
    let mut t = BodyTracker::new(BodyFraming::UntilClose);
    assert!(t.ends_at_close() && !t.is_done());
    assert_eq!(t.limit(), usize::MAX);
    assert_eq!(t.advance(b"0\r\n\r\nanything"), Ok(13));
    assert!(t.ends_at_close());
}

#[test]
fn body_tracker_chunked() {
    let body: &[u8] =
        b"4\r\nWiki\r\n5;ext=\"x y\"\r\npedia\r\nE \r\n in\r\n\r\nchunks.\r\nA\r\n0123456789\r\n0\r\nExpires: never\r\nX-T: 1\r\n\r\n";
    let mut stream = body.to_vec();
    stream.extend_from_slice(b"GET / HTTP/1.1\r\n");
    for piece in 1..=stream.len() {
        assert_eq!(
            body_len(BodyFraming::Chunked, &stream, piece),
            Ok((body.len(), true)),
            "piece {piece}"
        );
    }
    let t = BodyTracker::new(BodyFraming::Chunked);
    assert_eq!(t.limit(), usize::MAX);
    assert!(!t.is_done() && !t.ends_at_close());
    assert_eq!(
        body_len(BodyFraming::Chunked, b"fF\r\n", 64),
        Ok((4, false))
    );
    assert_eq!(
        body_len(BodyFraming::Chunked, b"000\r\n\r\nX", 64),
        Ok((7, true))
    );
    // The longest size the tracker takes: 15 hex digits.
    assert_eq!(
        body_len(BodyFraming::Chunked, b"fffffffffffffff\r\nabc", 64),
        Ok((20, false))
    );
}

#[test]
fn body_tracker_bad_chunks() {
    for bad in [
        &b"x\r\n"[..],
        b"\r\n",
        b";ext\r\n",
        b" 1\r\n",
        b"1\r\nAB\r\n",
        b"1\r\nA\rX",
        b"1\r\nA\r\r\n",
        b"0\r\n\rX",
        b"0\r\nTrailer: x\r\n\rX",
        b"1\x00\r\n",
        b"1;\x01\r\n",
        b"ffffffffffffffff\r\n",
        b"12345678901234567\r\n",
    ] {
        assert_eq!(
            body_len(BodyFraming::Chunked, bad, 64),
            Err(BadChunk),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
        assert_eq!(
            body_len(BodyFraming::Chunked, bad, 1),
            Err(BadChunk),
            "{:?} byte by byte",
            String::from_utf8_lossy(bad)
        );
    }
    assert_eq!(BadChunk.to_string(), "malformed chunked body");
}

// ---------------------------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------------------------

fn any_framing() -> impl Strategy<Value = BodyFraming> {
    prop_oneof![
        Just(BodyFraming::None),
        any::<u64>().prop_map(BodyFraming::Length),
        (0u64..64).prop_map(BodyFraming::Length),
        Just(BodyFraming::Chunked),
        Just(BodyFraming::UntilClose),
    ]
}

/// A chunked body made of `chunks`, sizes in either case, then a trailer section.
fn chunked_body(chunks: &[Vec<u8>], upper: bool, trailers: &[String]) -> Vec<u8> {
    let mut body = Vec::new();
    for chunk in chunks.iter().filter(|c| !c.is_empty()) {
        let size = if upper {
            format!("{:X}", chunk.len())
        } else {
            format!("{:x}", chunk.len())
        };
        body.extend_from_slice(size.as_bytes());
        body.extend_from_slice(b"\r\n");
        body.extend_from_slice(chunk);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"0\r\n");
    for t in trailers {
        body.extend_from_slice(t.as_bytes());
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"\r\n");
    body
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn request_parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let mut hs = headers();
        if let Ok(Some(head)) = RequestHead::parse(&bytes, &mut hs) {
            prop_assert!(head.head_len <= bytes.len());
            let mut out = [0u8; 1024];
            let _ = upstream_request(&head, PSEUDONYM, head.keep_alive, &mut HeadWriter::new(&mut out));
            let _ = head.came_through(PSEUDONYM);
            let _ = head.to_string();
        }
        let _ = RequestHead::incomplete_error(&bytes);
    }

    #[test]
    fn mutated_heads_never_panic(
        which in 0..VALID_HEADS.len(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        split in any::<prop::sample::Index>(),
    ) {
        let mut bytes = VALID_HEADS[which].to_vec();
        for (at, byte) in edits {
            let i = at.index(bytes.len());
            bytes[i] = byte;
        }
        let cut = split.index(bytes.len() + 1);
        for buf in [&bytes[..], &bytes[..cut]] {
            let mut hs = headers();
            match RequestHead::parse(buf, &mut hs) {
                Ok(Some(head)) => {
                    prop_assert!(head.head_len <= buf.len());
                    let mut out = [0u8; 1024];
                    let mut writer = HeadWriter::new(&mut out);
                    let _ = upstream_request(&head, PSEUDONYM, false, &mut writer);
                }
                Ok(None) => { let _ = RequestHead::incomplete_error(buf); }
                Err(e) => { prop_assert!((400..=508).contains(&e.status())); }
            }
            let mut hs = headers();
            if let Ok(Some(head)) = ResponseHead::parse(buf, &mut hs, Method::Get) {
                let mut out = [0u8; 1024];
                let _ = client_response(&head, PSEUDONYM, 1, true, &mut HeadWriter::new(&mut out));
            }
        }
    }

    #[test]
    fn valid_head_prefixes_are_partial(which in 0..VALID_HEADS.len(), cut in any::<prop::sample::Index>()) {
        let whole = VALID_HEADS[which];
        let cut = cut.index(whole.len());
        let mut hs = headers();
        prop_assert!(matches!(RequestHead::parse(&whole[..cut], &mut hs), Ok(None)));
    }

    #[test]
    fn body_tracker_never_panics_and_never_overtakes(
        framing in any_framing(),
        bytes in proptest::collection::vec(any::<u8>(), 0..400),
        pieces in proptest::collection::vec(1usize..40, 1..20),
    ) {
        let mut tracker = BodyTracker::new(framing);
        let mut rest = &bytes[..];
        let mut sizes = pieces.iter().cycle();
        while !rest.is_empty() {
            let n = (*sizes.next().unwrap()).min(rest.len());
            let (part, after) = rest.split_at(n);
            let limit = tracker.limit();
            match tracker.advance(part) {
                Ok(taken) => {
                    prop_assert!(taken <= part.len());
                    prop_assert!(taken <= limit);
                    if taken < part.len() {
                        prop_assert!(tracker.is_done());
                        break;
                    }
                }
                Err(BadChunk) => {
                    prop_assert_eq!(framing, BodyFraming::Chunked);
                    break;
                }
            }
            rest = after;
        }
    }

    #[test]
    fn chunked_end_is_found_in_any_split(
        chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..8),
        upper in any::<bool>(),
        trailers in proptest::collection::vec("[A-Za-z-]{1,10}: [ -~]{0,20}", 0..3),
        after in proptest::collection::vec(any::<u8>(), 0..40),
        pieces in proptest::collection::vec(1usize..30, 1..10),
    ) {
        let body = chunked_body(&chunks, upper, &trailers);
        let mut stream = body.clone();
        stream.extend_from_slice(&after);
        let mut tracker = BodyTracker::new(BodyFraming::Chunked);
        let mut total = 0;
        let mut rest = &stream[..];
        let mut sizes = pieces.iter().cycle();
        while !rest.is_empty() && !tracker.is_done() {
            let n = (*sizes.next().unwrap()).min(rest.len());
            let (part, next) = rest.split_at(n);
            let taken = tracker.advance(part).expect("valid chunked body");
            total += taken;
            rest = next;
        }
        prop_assert!(tracker.is_done());
        prop_assert_eq!(total, body.len());
    }
}

#[test]
fn transfer_coding_in_http_1_0_or_empty_is_refused() {
    let mut hs = headers();
    let head = b"POST http://h/ HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n";
    assert_eq!(
        RequestHead::parse(head, &mut hs).err(),
        Some(ProxyError::MalformedHead)
    );
    let mut hs = headers();
    let head = b"POST http://h/ HTTP/1.1\r\nTransfer-Encoding:\r\nContent-Length: 5\r\n\r\n";
    assert_eq!(
        RequestHead::parse(head, &mut hs).err(),
        Some(ProxyError::MalformedHead)
    );
    let mut hs = headers();
    let head = b"POST http://h/ HTTP/1.1\r\nTransfer-Encoding: \r\n\r\n";
    assert_eq!(
        RequestHead::parse(head, &mut hs).err(),
        Some(ProxyError::MalformedHead)
    );
}

#[test]
fn options_in_absolute_form_without_path_asks_about_the_server() {
    let mut hs = headers();
    let head = RequestHead::parse(b"OPTIONS http://h:8001 HTTP/1.1\r\n\r\n", &mut hs)
        .expect("valid")
        .expect("whole");
    assert_eq!(head.target.path(), "*");
}

#[test]
fn obsolete_folding_nul_and_bare_cr_in_a_head_are_400() {
    for head in [
        // obs-fold: a header continued on the next line (RFC 9112 §5.2: a request with it is rejected).
        &b"GET http://h/ HTTP/1.1\r\nX-Long: a\r\n  continued\r\n\r\n"[..],
        b"GET http://h/ HTTP/1.1\r\nX-Long: a\r\n\tcontinued\r\n\r\n",
        // NUL in a header value and in the request line.
        b"GET http://h/ HTTP/1.1\r\nX-Nul: a\0b\r\n\r\n",
        b"GET http://h/\0 HTTP/1.1\r\n\r\n",
        // A bare CR inside a header value, and as a line end.
        b"GET http://h/ HTTP/1.1\r\nX-Cr: a\rb\r\n\r\n",
        b"GET http://h/ HTTP/1.1\rHost: h\r\n\r\n",
    ] {
        assert_eq!(
            request_error(head),
            ProxyError::MalformedHead,
            "{:?}",
            String::from_utf8_lossy(head)
        );
    }
}
