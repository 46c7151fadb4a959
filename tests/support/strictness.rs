//! The proxy's second round of rules (issue 13), as scenarios every design is put through: chunked framing with
//! bare LFs, framing fields said more than once, `Max-Forwards`, large response heads, and a full pool (idle
//! kept-alive clients reclaimed, silent tunnels closed at `--tunnel-idle`). `tests/hostile.rs` runs them on both
//! kernel-stack designs, `tests/netns_proxy.rs` on the smoltcp proxy; each needs a fresh origin (it checks
//! what the origin has seen).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use super::proxy::scenario::{at, seen_at};
use super::proxy::*;

/// A `POST /echo` with a chunked body of `body`, raw.
fn chunked_post(proxy: &Proxy, origin_port: u16, body: &str) -> Vec<u8> {
    let host = proxy.net.origin_host();
    format!(
        "POST http://{host}:{origin_port}/echo HTTP/1.1\r\nHost: {host}:{origin_port}\r\n\
         Transfer-Encoding: chunked\r\n\r\n{body}"
    )
    .into_bytes()
}

/// Every bare LF in chunked framing (after chunk data, ending a size line, in the last chunk) is 400, and
/// nothing after it reaches the origin: not the rest of the body, not a request smuggled behind it.
pub fn bare_lf_in_a_chunked_request_is_400_and_nothing_behind_it_is_relayed(
    proxy: &Proxy,
    origin_port: u16,
) {
    for body in [
        "5\r\nhello\n0\r\n\r\n",
        "5\nhello\r\n0\r\n\r\n",
        "5\r\nhello\r\n0\n\n",
        "5\r\nhello\n40\r\n\r\nGET /SMUGGLED HTTP/1.1\r\nHost: x\r\n\r\n0\r\n\r\n",
    ] {
        let response = proxy.exchange(&chunked_post(proxy, origin_port, body));
        assert_error_page(&response, "400 Bad Request");
        assert!(
            String::from_utf8_lossy(&response).contains("chunked request body is malformed"),
            "{body:?}: {}",
            String::from_utf8_lossy(&response)
        );
    }
    let seen = seen_at(proxy, origin_port);
    assert!(
        seen.iter().all(|entry| !entry.contains("SMUGGLED")),
        "a request was smuggled to the origin: {seen:?}"
    );
    proxy.wait_log(&[&format!(
        "To {} Response HTTP/1.1 400 Bad Request",
        proxy.net.client_host()
    )]);
}

/// An origin's chunked body with bare LFs (`2\nok\n0\n\n`) never reaches the client: its connection is reset,
/// and the request pipelined behind it is not answered on it.
pub fn a_chunked_response_with_bare_lfs_never_reaches_the_client(proxy: &Proxy, origin_port: u16) {
    let host = proxy.net.origin_host();
    let request = format!(
        "GET http://{host}:{origin_port}/bare-lf-chunks HTTP/1.1\r\nHost: {host}\r\n\r\n\
         GET http://{host}:{origin_port}/small HTTP/1.1\r\nHost: {host}\r\n\r\n"
    );
    let response = proxy.exchange(request.as_bytes());
    let text = String::from_utf8_lossy(&response);
    assert!(
        !response.windows(4).any(|w| w == b"2\nok"),
        "the malformed body was relayed:\n{text}"
    );
    assert!(
        !text.contains(SMALL),
        "the next request was answered:\n{text}"
    );
    proxy.wait_log(&["(origin sent a malformed chunked body)"]);
}

/// The origin sees exactly one framing field, written by the proxy, however the client repeated it; a
/// response's repeated length reaches the client once, and two chunked codings are 502.
pub fn repeated_framing_fields_reach_the_next_hop_once(proxy: &Proxy, origin_port: u16) {
    let host = proxy.net.origin_host();
    for (fields, tag) in [
        ("Content-Length: 5, 5\r\n", "list"),
        ("Content-Length: 5\r\nContent-Length: 5\r\n", "twice"),
    ] {
        let request = format!(
            "POST http://{host}:{origin_port}/echo?{tag} HTTP/1.1\r\nHost: {host}\r\n{fields}\
             Connection: close\r\n\r\nhello"
        );
        let response = proxy.exchange(request.as_bytes());
        let (head, body) = split_head(&response);
        assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
        assert_eq!(body, b"hello");
        let seen = seen_at(proxy, origin_port);
        let entry = seen
            .iter()
            .find(|e| e.contains(&format!("/echo?{tag} ")))
            .unwrap_or_else(|| panic!("the origin never saw the {tag} request: {seen:?}"));
        let lengths: Vec<&str> = entry
            .lines()
            .filter(|l| l.to_ascii_lowercase().starts_with("content-length:"))
            .collect();
        assert_eq!(lengths, ["Content-Length: 5"], "{entry}");
    }
    let response = proxy.exchange(
        format!(
            "GET http://{host}:{origin_port}/cl-list HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    );
    let (head, body) = split_head(&response);
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    let lengths: Vec<&str> = head
        .lines()
        .filter(|l| l.to_ascii_lowercase().starts_with("content-length:"))
        .collect();
    assert_eq!(lengths, ["Content-Length: 3"], "{head}");
    assert_eq!(header(&head, "x-between"), Some("1"), "{head}");
    assert_eq!(body, b"abc");
    let response = proxy.exchange(
        format!("GET http://{host}:{origin_port}/two-te HTTP/1.1\r\nHost: {host}\r\n\r\n")
            .as_bytes(),
    );
    assert_error_page(&response, "502 Bad Gateway");
}

/// RFC 9110 §7.6.2: `OPTIONS` with `Max-Forwards: 0` is answered by the proxy (200 with `Allow`) and reaches
/// no origin; with `3` the origin sees `2`; `TRACE` with `0` is 405 with `Allow`.
pub fn max_forwards_is_honoured_for_options_and_trace(proxy: &Proxy, origin_port: u16) {
    let host = proxy.net.origin_host();
    let response = proxy.exchange(
        format!("OPTIONS http://{host}:{origin_port}/ HTTP/1.1\r\nHost: {host}\r\nMax-Forwards: 0\r\n\r\n")
            .as_bytes(),
    );
    let (head, _) = split_head(&response);
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert_eq!(
        header(&head, "allow"),
        Some("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, CONNECT"),
        "{head}"
    );
    assert!(
        seen_at(proxy, origin_port).is_empty(),
        "Max-Forwards: 0 reached the origin"
    );
    proxy.wait_log(&["Response HTTP/1.1 200 OK (OPTIONS "]);

    let response = proxy.exchange(
        format!(
            "OPTIONS http://{host}:{origin_port}/ HTTP/1.1\r\nHost: {host}\r\nMax-Forwards: 3\r\n\
             Connection: close\r\n\r\n"
        )
        .as_bytes(),
    );
    let (head, _) = split_head(&response);
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert_eq!(
        header(&head, "allow"),
        Some("GET, OPTIONS"),
        "the origin's answer: {head}"
    );
    let seen = seen_at(proxy, origin_port);
    assert!(
        seen.iter()
            .any(|e| e.contains("OPTIONS / ") && e.contains("Max-Forwards: 2\r\n")),
        "{seen:?}"
    );

    let response = proxy.exchange(
        format!("TRACE http://{host}:{origin_port}/ HTTP/1.1\r\nHost: {host}\r\nMax-Forwards: 0\r\n\r\n")
            .as_bytes(),
    );
    assert_error_page(&response, "405 Method Not Allowed");
    let (head, _) = split_head(&response);
    assert!(header(&head, "allow").is_some(), "{head}");
}

/// A 16 KiB response head with 85 fields (80 cookies) goes through whole; a 70 KiB one is 502, and says why.
pub fn response_heads_up_to_64_kib_pass_and_larger_ones_are_502(proxy: &Proxy, origin_port: u16) {
    let out = curl_ok(proxy, &["-si", &at(proxy, origin_port, "/many-fields")]);
    let response = out.stdout;
    let (head, body) = split_head(&response);
    assert!(
        head.starts_with("HTTP/1.1 200 "),
        "{}",
        &head[..head.len().min(300)]
    );
    assert_eq!(body, b"many fields\n");
    let cookies = head
        .lines()
        .filter(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .count();
    assert_eq!(cookies, 80);
    let policy = header(&head, "content-security-policy").unwrap_or_default();
    assert_eq!(policy.len(), "default-src 'self'; ".len() + 12000);

    let out = curl_ok(proxy, &["-si", &at(proxy, origin_port, "/huge-head")]);
    assert_error_page(&out.stdout, "502 Bad Gateway");
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("response head is larger than the proxy accepts"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// A client connection that sent `GET /small` and read the whole answer, kept open.
fn kept_client(proxy: &Proxy, origin_port: u16, fields: &str) -> TcpStream {
    let mut stream = proxy.connect();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    get_on(&mut stream, proxy, origin_port, fields);
    stream
}

/// Sends `GET /small` (with the header `fields`, each ending in CRLF) on `stream` and reads its answer (by its length); panics unless it is the origin's 200,
/// saying how the read ended and after how long.
fn get_on(stream: &mut TcpStream, proxy: &Proxy, origin_port: u16, fields: &str) {
    let host = proxy.net.origin_host();
    let request =
        format!("GET http://{host}:{origin_port}/small HTTP/1.1\r\nHost: {host}\r\n{fields}\r\n");
    stream.write_all(request.as_bytes()).expect("send");
    let sent = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.ends_with(SMALL.as_bytes()) {
        let ended = match stream.read(&mut buf) {
            Ok(0) => "the connection ended".to_string(),
            Err(e) => format!("the read failed ({:?}: {e})", e.kind()),
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                continue;
            }
        };
        panic!(
            "no whole answer on a kept connection: {ended} {:?} after the request, having read {:?}\nproxy log:\n{}",
            sent.elapsed(),
            String::from_utf8_lossy(&got),
            proxy.log()
        );
    }
    assert!(
        got.starts_with(b"HTTP/1.1 200 "),
        "{}",
        String::from_utf8_lossy(&got)
    );
}

/// Runs `attempt` (a new client's first exchange, which returns the connection and the answer's first bytes)
/// until it is not refused with `503`, for up to 3 s. A client that saw its connection end (the proxy's FIN) may
/// still hold its place for a moment: the proxy gives it back once it has finished the close, which the client
/// cannot see.
fn once_a_place_is_free(mut attempt: impl FnMut() -> (TcpStream, Vec<u8>)) -> (TcpStream, Vec<u8>) {
    let began = Instant::now();
    loop {
        let (stream, reply) = attempt();
        if !(reply.starts_with(b"HTTP/1.1 503 ") && began.elapsed() < Duration::from_secs(3)) {
            return (stream, reply);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Opens a tunnel to the echo server on `echo_port` (once a place is free).
fn open_tunnel(proxy: &Proxy, echo_port: u16) -> TcpStream {
    let host = proxy.net.origin_host();
    let connect =
        format!("CONNECT {host}:{echo_port} HTTP/1.1\r\nHost: {host}:{echo_port}\r\n\r\n");
    let (tunnel, reply) = once_a_place_is_free(|| {
        let mut tunnel = proxy.connect();
        tunnel
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        tunnel.write_all(connect.as_bytes()).expect("send");
        let mut reply = [0u8; 256];
        let n = tunnel.read(&mut reply).expect("the tunnel's reply");
        (tunnel, reply[..n].to_vec())
    });
    assert!(
        reply.starts_with(b"HTTP/1.1 200 "),
        "{}\nproxy log:\n{}",
        String::from_utf8_lossy(&reply),
        proxy.log()
    );
    tunnel
}

/// With every place under the cap taken (the proxy runs with `--max-connections 2 --tunnel-idle 2` and CONNECT
/// allowed to the echo server's port): a new client is served by closing the client idle longest between
/// requests (nginx's rule), which sees its connection end as at a keep-alive timeout, while the other stays
/// usable; silent tunnels are not idle between requests, so with two of them a new client gets 503 until they
/// are closed at `--tunnel-idle`, and then it is served.
pub fn a_full_pool_reclaims_idle_clients_and_silent_tunnels_close(
    proxy: &Proxy,
    origin_port: u16,
    echo_port: u16,
) {
    let mut oldest = kept_client(proxy, origin_port, "");
    std::thread::sleep(Duration::from_millis(50));
    let mut newer = kept_client(proxy, origin_port, "");
    // The new client's head is a browser's, with 3 KiB of cookies: served whole on the reclaimed place (the
    // smoltcp proxy's refusers are sockets of 1 KiB; it must not serve the client on one).
    let cookie = format!("Cookie: session={}\r\n", "c".repeat(3000));
    let mut third = kept_client(proxy, origin_port, &cookie);
    let mut rest = Vec::new();
    assert_eq!(
        oldest.read_to_end(&mut rest).map_err(|e| e.kind()),
        Ok(0),
        "the client idle longest was not closed for the new one"
    );
    get_on(&mut newer, proxy, origin_port, "");
    proxy.wait_log(&["Closed its idle kept connection"]);
    drop((oldest, newer));
    third.shutdown(std::net::Shutdown::Write).ok();
    let _ = third.read_to_end(&mut rest);

    let host = proxy.net.origin_host();
    let tunnels: Vec<TcpStream> = (0..2).map(|_| open_tunnel(proxy, echo_port)).collect();
    let opened = Instant::now();
    let response = proxy.exchange(
        format!("GET http://{host}:{origin_port}/small HTTP/1.1\r\nHost: {host}\r\n\r\n")
            .as_bytes(),
    );
    assert!(
        opened.elapsed() < Duration::from_secs(2),
        "the refusal took as long as the tunnels' idle limit"
    );
    assert_error_page(&response, "503 Service Unavailable");
    for mut tunnel in tunnels {
        let mut rest = Vec::new();
        let _ = tunnel.read_to_end(&mut rest);
        let closed = opened.elapsed();
        assert!(
            closed >= Duration::from_millis(1500) && closed < Duration::from_secs(6),
            "a silent tunnel closed after {closed:?}, not at --tunnel-idle 2"
        );
    }
    // Both places are free again: a new client is served, and served again on its kept connection.
    let request = format!("GET http://{host}:{origin_port}/small HTTP/1.1\r\nHost: {host}\r\n\r\n");
    let (mut served, reply) = once_a_place_is_free(|| {
        let mut stream = proxy.connect();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.write_all(request.as_bytes()).expect("send");
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !got.ends_with(SMALL.as_bytes()) && !got.starts_with(b"HTTP/1.1 503 ") {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        (stream, got)
    });
    assert!(
        reply.starts_with(b"HTTP/1.1 200 ") && reply.ends_with(SMALL.as_bytes()),
        "{}\nproxy log:\n{}",
        String::from_utf8_lossy(&reply),
        proxy.log()
    );
    get_on(&mut served, proxy, origin_port, "");
}
