//! The kernel-stack HTTP forward proxy (`smoltalk proxy`), end to end: curl as the client, small Python
//! programs as origins (HTTP, HTTPS and a plain TCP echo), and raw sockets where curl would not send what a
//! test needs. Everything stays on loopback: every proxy runs with `--allow-dest 127.0.0.0/8`, origins listen on
//! 127.0.0.1, and every proxy runs with `--no-dns`, so no name is ever looked up (names come from `--resolve`).
//! Each test starts its own proxy and origins on port 0, so the tests run in parallel.

mod support;

use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use support::proxy::{self as proxy_support, *};
use support::*;

/// `smoltalk proxy --port 0 --allow-dest 127.0.0.0/8` plus `extra` (a later `--allow-dest` adds to it, so tests
/// that narrow it use [`start_proxy_with`]).
fn start_proxy(extra: &[&str]) -> Proxy {
    start_proxy_with(&["--allow-dest", "127.0.0.0/8"], extra)
}

fn start_proxy_with(dest: &[&str], extra: &[&str]) -> Proxy {
    let mut cmd = smoltalk();
    // --no-dns: whatever a test sends, the proxy never asks a DNS server (names come from --resolve).
    cmd.args(["proxy", "--port", "0", "--no-dns"])
        .args(dest)
        .args(extra);
    Proxy::start(cmd, "127.0.0.1", Net::Loopback)
}

/// Starts the HTTP origin on 127.0.0.1; `tls` is `(cert, key)` for HTTPS.
fn origin(tls: Option<(&Path, &Path)>) -> (Running, u16) {
    start_origin(&Net::Loopback, tls)
}

/// What the origin on 127.0.0.1:`origin_port` has seen so far, one request head per entry.
fn seen(origin_port: u16) -> Vec<String> {
    proxy_support::seen(&Net::Loopback, origin_port)
}

/// Connects to 127.0.0.1:`port`, sends `request`, reads until the other side closes (or 10 s pass).
fn raw_exchange(port: u16, request: &[u8]) -> Vec<u8> {
    exchange(&Net::Loopback, ([127, 0, 0, 1], port).into(), request)
}

#[test]
#[cfg_attr(smoltalk_no_curl, ignore = "needs curl, openssl and python3")]
fn get_small_by_address_and_by_resolved_name_with_via_and_logs() {
    let (_origin, origin_port) = origin(None);
    let proxy = start_proxy(&["--resolve", "origin.test=127.0.0.1"]);

    let out = curl_ok(
        &proxy,
        &["-i", &format!("http://127.0.0.1:{origin_port}/small")],
    );
    let (head, body) = split_head(&out.stdout);
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert_eq!(body, SMALL.as_bytes());
    let via = header(&head, "via").unwrap_or_else(|| panic!("no Via in {head}"));
    assert!(via.starts_with("1.1 smoltalk-"), "{via}");
    assert_eq!(header(&head, "content-length"), Some("22"));

    // A name the proxy knows from --resolve (it never asks DNS for it).
    let out = curl_ok(
        &proxy,
        &[&format!("http://origin.test:{origin_port}/small")],
    );
    assert_eq!(stdout(&out), SMALL);

    let log = proxy.wait_log(&[
        &format!("From 127.0.0.1 Request GET http://127.0.0.1:{origin_port}/small HTTP/1.1"),
        &format!("From 127.0.0.1 Request GET http://origin.test:{origin_port}/small HTTP/1.1"),
        "To 127.0.0.1 Response HTTP/1.1 200 OK",
    ]);
    assert!(log.contains("INFO"), "{log}");

    // The origin got origin-form requests with the right Host and the proxy's Via.
    let seen = seen(origin_port);
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(
        seen[0].contains("\r\nGET /small HTTP/1.1\r\n"),
        "{}",
        seen[0]
    );
    assert!(
        seen[0].contains(&format!("\r\nHost: 127.0.0.1:{origin_port}\r\n")),
        "{}",
        seen[0]
    );
    assert!(
        seen[1].contains(&format!("\r\nHost: origin.test:{origin_port}\r\n")),
        "{}",
        seen[1]
    );
    for entry in &seen {
        assert!(entry.contains(&format!("\r\nVia: {via}\r\n")), "{entry}");
    }
    proxy.stop();
}

#[test]
#[cfg_attr(smoltalk_no_curl, ignore = "needs curl, openssl and python3")]
fn hop_by_hop_headers_are_removed_and_end_to_end_ones_kept() {
    let (_origin, origin_port) = origin(None);
    let proxy = start_proxy(&[]);
    let out = curl_ok(
        &proxy,
        &[
            "-H",
            "Connection: close, X-Drop",
            "-H",
            "X-Drop: 1",
            "-H",
            "Keep-Alive: 5",
            "-H",
            "Proxy-Authorization: Basic eDp4",
            "-H",
            "TE: trailers",
            "-H",
            "Upgrade: websocket",
            "-H",
            "X-Keep: 1",
            &format!("http://127.0.0.1:{origin_port}/small"),
        ],
    );
    assert_eq!(stdout(&out), SMALL);
    let seen = seen(origin_port);
    assert_eq!(seen.len(), 1, "{seen:?}");
    let entry = seen[0].to_ascii_lowercase();
    for gone in [
        "\r\nx-drop:",
        "\r\nkeep-alive:",
        "\r\nproxy-authorization:",
        "\r\nte:",
        "\r\nupgrade:",
    ] {
        assert!(
            !entry.contains(gone),
            "{gone:?} reached the origin:\n{}",
            seen[0]
        );
    }
    assert!(!entry.contains("\r\nproxy-connection:"), "{}", seen[0]);
    assert!(!entry.contains("\r\nconnection:"), "{}", seen[0]);
    assert!(entry.contains("\r\nx-keep: 1\r\n"), "{}", seen[0]);
    assert!(entry.contains("\r\nuser-agent: curl/"), "{}", seen[0]);
    assert!(entry.contains("\r\nvia: 1.1 smoltalk-"), "{}", seen[0]);
    proxy.stop();
}

#[test]
#[cfg_attr(smoltalk_no_curl, ignore = "needs curl, openssl and python3")]
fn head_has_length_but_no_body_and_the_connection_stays_usable() {
    let (_origin, origin_port) = origin(None);
    let proxy = start_proxy(&[]);
    let url = format!("http://127.0.0.1:{origin_port}/small");
    // HEAD, then GET on the same connection: a body wrongly expected after HEAD would swallow the next response.
    let out = curl_ok(
        &proxy,
        &["-v", "-I", &url, "--next", "-x", &proxy.url(), &url],
    );
    let text = stdout(&out);
    let (head, rest) = split_head(&out.stdout);
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert_eq!(header(&head, "content-length"), Some("22"));
    assert_eq!(rest, SMALL.as_bytes(), "{text}");
    assert!(
        stderr(&out).contains("Re-using existing connection"),
        "{}",
        stderr(&out)
    );
    let seen = seen(origin_port);
    assert!(seen[0].contains("\r\nHEAD /small HTTP/1.1\r\n"), "{seen:?}");
    assert!(seen[1].contains("\r\nGET /small HTTP/1.1\r\n"), "{seen:?}");
    proxy.wait_log(&[&format!(
        "Request HEAD http://127.0.0.1:{origin_port}/small HTTP/1.1"
    )]);
    proxy.stop();
}

#[test]
#[cfg_attr(smoltalk_no_curl, ignore = "needs curl, openssl and python3")]
fn post_put_and_chunked_bodies_reach_the_origin_byte_exact() {
    let (_origin, origin_port) = origin(None);
    let proxy = start_proxy(&[]);
    let url = format!("http://127.0.0.1:{origin_port}/echo");

    let small = every_byte(3);
    let small_file = temp_file("proxy-post-small", &small);
    let out = curl_ok(
        &proxy,
        &["--data-binary", &format!("@{}", small_file.display()), &url],
    );
    assert!(
        out.stdout == small,
        "POST: {} bytes back of {}",
        out.stdout.len(),
        small.len()
    );

    // PUT of the same body (curl -T sends Content-Length).
    let out = curl_ok(
        &proxy,
        &["-D", "-", "-T", small_file.to_str().unwrap(), &url],
    );
    let (head, body) = final_head(&out.stdout);
    assert_eq!(header(&head, "x-method"), Some("PUT"), "{head}");
    assert!(body == small, "PUT: {} bytes back", body.len());

    // A chunked request body is forwarded as chunks.
    let out = curl_ok(
        &proxy,
        &[
            "-H",
            "Transfer-Encoding: chunked",
            "--data-binary",
            &format!("@{}", small_file.display()),
            &url,
        ],
    );
    assert!(
        out.stdout == small,
        "chunked POST: {} bytes back",
        out.stdout.len()
    );
    let _ = std::fs::remove_file(&small_file);

    // 2 MiB: curl asks `Expect: 100-continue`; the origin's 100 goes back through the proxy.
    let large: Vec<u8> = every_byte(8 * 1024).iter().rev().copied().collect();
    let large_file = temp_file("proxy-post-large", &large);
    let out = curl_ok(
        &proxy,
        &[
            "-v",
            "--data-binary",
            &format!("@{}", large_file.display()),
            &url,
        ],
    );
    let _ = std::fs::remove_file(&large_file);
    let verbose = stderr(&out);
    assert!(verbose.contains("> Expect: 100-continue"), "{verbose}");
    assert!(verbose.contains("< HTTP/1.1 100 Continue"), "{verbose}");
    assert!(
        out.stdout == large,
        "2 MiB POST: {} bytes back of {}",
        out.stdout.len(),
        large.len()
    );

    let seen = seen(origin_port);
    assert_eq!(seen.len(), 4, "{seen:?}");
    assert!(
        seen[2]
            .to_ascii_lowercase()
            .contains("\r\ntransfer-encoding: chunked\r\n"),
        "{}",
        seen[2]
    );
    assert!(
        seen[3].contains("\r\nContent-Length: 2097152\r\n"),
        "{}",
        seen[3]
    );
    assert!(
        seen[3].contains("\r\nExpect: 100-continue\r\n"),
        "{}",
        seen[3]
    );
    proxy.wait_log(&[
        &format!("From 127.0.0.1 Request POST {url} HTTP/1.1"),
        &format!("Request PUT {url}"),
    ]);
    proxy.stop();
}

#[test]
#[cfg_attr(smoltalk_no_curl, ignore = "needs curl, openssl and python3")]
fn chunked_response_arrives_intact_and_with_its_framing() {
    let (_origin, origin_port) = origin(None);
    let proxy = start_proxy(&[]);
    let url = format!("http://127.0.0.1:{origin_port}/chunked");
    let out = curl_ok(&proxy, &[&url]);
    assert_eq!(stdout(&out), "hello, chunked world\n");
    // --raw: curl leaves the chunks as they came, so this is what the proxy forwarded, extension and all.
    let out = curl_ok(&proxy, &["--raw", "-i", &url]);
    let (head, body) = split_head(&out.stdout);
    assert_eq!(
        header(&head, "transfer-encoding"),
        Some("chunked"),
        "{head}"
    );
    assert_eq!(
        String::from_utf8_lossy(body),
        "5\r\nhello\r\n9;note=x\r\n, chunked\r\n7\r\n world\n\r\n0\r\nX-Trailer: yes\r\n\r\n"
    );
    proxy.stop();
}

#[test]
#[cfg_attr(smoltalk_no_curl, ignore = "needs curl, openssl and python3")]
fn one_mebibyte_body_is_byte_exact() {
    let (_origin, origin_port) = origin(None);
    let proxy = start_proxy(&[]);
    let out = curl_ok(&proxy, &[&format!("http://127.0.0.1:{origin_port}/big")]);
    let expected = big_body();
    assert_eq!(out.stdout.len(), expected.len());
    assert!(out.stdout == expected, "the 1 MiB body differs");
    proxy.stop();
}

#[test]
#[cfg_attr(smoltalk_no_curl, ignore = "needs curl, openssl and python3")]
fn keep_alive_reuses_the_client_and_the_origin_connection() {
    let (_origin, origin_port) = origin(None);
    let proxy = start_proxy(&[]);
    let small = format!("http://127.0.0.1:{origin_port}/small");
    let big = format!("http://127.0.0.1:{origin_port}/big");
    let out = curl_ok(&proxy, &["-v", &small, &big]);
    let verbose = stderr(&out);
    assert!(
        verbose.contains("Re-using existing connection"),
        "{verbose}"
    );
    assert_eq!(
        verbose.matches("Connected to 127.0.0.1").count(),
        1,
        "{verbose}"
    );
    let mut expected = SMALL.as_bytes().to_vec();
    expected.extend(big_body());
    assert!(
        out.stdout == expected,
        "{} bytes of {}",
        out.stdout.len(),
        expected.len()
    );
    proxy.wait_log(&[
        &format!("From 127.0.0.1 Request GET {small} "),
        &format!("From 127.0.0.1 Request GET {big} "),
    ]);
    // Both requests reached the origin on one connection of the proxy's (the same peer port).
    let seen = seen(origin_port);
    assert_eq!(seen.len(), 2, "{seen:?}");
    let peer = |entry: &str| entry.lines().next().unwrap().to_owned();
    assert_eq!(peer(&seen[0]), peer(&seen[1]), "{seen:?}");
    proxy.stop();
}

#[test]
#[cfg_attr(smoltalk_no_curl, ignore = "needs curl, openssl and python3")]
fn connect_tunnels_every_byte_both_ways() {
    let (_echo, echo_port) = start_echo(&Net::Loopback);
    let proxy = start_proxy(&["--connect-ports", &format!("443,{echo_port}")]);
    let data = every_byte(1024); // 256 KiB
    let mut stream = TcpStream::connect(("127.0.0.1", proxy.port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // The first tunnel bytes ride right behind the head, as a TLS ClientHello would.
    let mut first =
        format!("CONNECT 127.0.0.1:{echo_port} HTTP/1.1\r\nHost: 127.0.0.1:{echo_port}\r\n\r\n")
            .into_bytes();
    first.extend_from_slice(&data[..1000]);
    stream.write_all(&first).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let rest = data[1000..].to_vec();
    let sender = std::thread::spawn(move || {
        writer.write_all(&rest).unwrap();
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let received = read_all(&mut stream);
    sender.join().unwrap();
    let (head, echoed) = split_head(&received);
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert!(
        header(&head, "via").is_some_and(|v| v.starts_with("1.1 smoltalk-")),
        "{head}"
    );
    assert_eq!(echoed.len(), data.len());
    assert!(echoed == data, "the tunnel changed bytes");
    proxy.wait_log(&[&format!(
        "From 127.0.0.1 Request CONNECT 127.0.0.1:{echo_port} HTTP/1.1"
    )]);
    proxy.stop();
}

#[test]
#[cfg_attr(smoltalk_no_curl, ignore = "needs curl, openssl and python3")]
fn https_through_a_connect_tunnel_to_a_resolved_name() {
    let (dir, cert, key) = self_signed_cert();
    let (_origin, origin_port) = origin(Some((&cert, &key)));
    let proxy = start_proxy(&[
        "--resolve",
        "origin.test=127.0.0.1",
        "--connect-ports",
        &origin_port.to_string(),
    ]);
    let base = format!("https://origin.test:{origin_port}");
    let out = curl_ok(
        &proxy,
        &[
            "-v",
            "--cacert",
            cert.to_str().unwrap(),
            &format!("{base}/small"),
        ],
    );
    assert_eq!(stdout(&out), SMALL);
    assert!(
        stderr(&out).contains("CONNECT origin.test:"),
        "{}",
        stderr(&out)
    );
    let out = curl_ok(
        &proxy,
        &["--cacert", cert.to_str().unwrap(), &format!("{base}/big")],
    );
    assert!(
        out.stdout == big_body(),
        "1 MiB over TLS: {} bytes",
        out.stdout.len()
    );
    let _ = std::fs::remove_dir_all(&dir);
    proxy.wait_log(&[&format!(
        "From 127.0.0.1 Request CONNECT origin.test:{origin_port} HTTP/1.1"
    )]);
    proxy.stop();
}

#[test]
#[cfg_attr(smoltalk_no_curl, ignore = "needs curl, openssl and python3")]
fn malformed_requests_are_400() {
    let proxy = start_proxy(&[]);
    assert_raw_refusal(
        &proxy,
        b"\x01\x02 not http at all\r\n\r\n",
        "400 Bad Request",
    );
    assert_raw_refusal(
        &proxy,
        b"GET http://exa!mple/ HTTP/1.1\r\nHost: x\r\n\r\n",
        "400 Bad Request",
    );
    assert_raw_refusal(
        &proxy,
        b"GET http://exa mple/ HTTP/1.1\r\nHost: x\r\n\r\n",
        "400 Bad Request",
    );
    assert_raw_refusal(
        &proxy,
        b"GET http://user@127.0.0.1/ HTTP/1.1\r\n\r\n",
        "400 Bad Request",
    );
    assert_raw_refusal(
        &proxy,
        b"GET http://127.0.0.1:99999/ HTTP/1.1\r\n\r\n",
        "400 Bad Request",
    );
    assert_raw_refusal(&proxy, b"GET /no-host HTTP/1.1\r\n\r\n", "400 Bad Request");
    // Content-Length and Transfer-Encoding together is how requests are smuggled.
    assert_raw_refusal(
        &proxy,
        b"POST http://127.0.0.1:1/ HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc",
        "400 Bad Request",
    );
    // A real version the proxy does not speak is 505.
    assert_raw_refusal(
        &proxy,
        b"GET http://127.0.0.1:1/ HTTP/2.0\r\n\r\n",
        "505 HTTP Version Not Supported",
    );
    proxy.wait_log(&["Response HTTP/1.1 400 Bad Request"]);
    proxy.stop();
}

#[test]
#[cfg_attr(smoltalk_no_curl, ignore = "needs curl, openssl and python3")]
fn client_not_allowed_is_403() {
    let (_origin, origin_port) = origin(None);
    let proxy = start_proxy(&["--allow", "10.9.9.9/32"]);
    let out = curl_ok(
        &proxy,
        &["-i", &format!("http://127.0.0.1:{origin_port}/small")],
    );
    assert_error_page(&out.stdout, "403 Forbidden");
    assert!(stdout(&out).contains("Your address may not use this proxy"));
    assert!(seen(origin_port).is_empty());
    proxy.wait_log(&["From 127.0.0.1 Refused 403 Forbidden"]);
    proxy.stop();
}

#[test]
#[cfg_attr(smoltalk_no_curl, ignore = "needs curl, openssl and python3")]
fn destination_not_allowed_is_403() {
    let (_origin, origin_port) = origin(None);
    let proxy = start_proxy_with(
        &["--allow-dest", "127.0.0.2/32"],
        &["--resolve", "origin.test=127.0.0.1"],
    );
    for host in ["127.0.0.1", "origin.test"] {
        let out = curl_ok(
            &proxy,
            &["-i", &format!("http://{host}:{origin_port}/small")],
        );
        assert_error_page(&out.stdout, "403 Forbidden");
        assert!(stdout(&out).contains("The proxy may not connect to that address"));
    }
    assert!(seen(origin_port).is_empty());
    proxy.stop();
}

#[test]
#[cfg_attr(smoltalk_no_curl, ignore = "needs curl, openssl and python3")]
fn connect_to_a_port_not_listed_is_403() {
    let (_echo, echo_port) = start_echo(&Net::Loopback);
    let proxy = start_proxy(&[]); // --connect-ports defaults to 443
    let request =
        format!("CONNECT 127.0.0.1:{echo_port} HTTP/1.1\r\nHost: 127.0.0.1:{echo_port}\r\n\r\n");
    let response = raw_exchange(proxy.port, request.as_bytes());
    assert_error_page(&response, "403 Forbidden");
    assert!(String::from_utf8_lossy(&response).contains("The proxy does not tunnel to that port"));
    proxy.stop();
}

#[test]
#[cfg_attr(smoltalk_no_curl, ignore = "needs curl, openssl and python3")]
fn half_a_head_times_out_with_408() {
    let proxy = start_proxy(&["--timeout", "1"]);
    let started = Instant::now();
    assert_raw_refusal(
        &proxy,
        b"GET http://127.0.0.1:1/ HTTP/1.1\r\nHost: 127.0",
        "408 Request Timeout",
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "{took:?}"
    );
    proxy.stop();
}

#[test]
#[cfg_attr(smoltalk_no_curl, ignore = "needs curl, openssl and python3")]
fn request_line_over_8_kib_is_414_and_head_over_8_kib_is_431() {
    let proxy = start_proxy(&[]);
    let long_path = "a".repeat(9 * 1024);
    // A whole head, with a request line longer than the proxy takes.
    let request =
        format!("GET http://127.0.0.1:1/{long_path} HTTP/1.1\r\nHost: 127.0.0.1:1\r\n\r\n");
    assert_raw_refusal(&proxy, request.as_bytes(), "414 URI Too Long");
    // A request line that never ends.
    let request = format!("GET http://127.0.0.1:1/{}", "b".repeat(20 * 1024));
    assert_raw_refusal(&proxy, request.as_bytes(), "414 URI Too Long");
    // One 9 KiB header.
    let request = format!(
        "GET http://127.0.0.1:1/ HTTP/1.1\r\nX-Big: {}\r\n\r\n",
        "c".repeat(9 * 1024)
    );
    assert_raw_refusal(
        &proxy,
        request.as_bytes(),
        "431 Request Header Fields Too Large",
    );
    // More header lines than the proxy takes, each small.
    let many: String = (0..100).map(|i| format!("X-H{i}: {i}\r\n")).collect();
    let request = format!("GET http://127.0.0.1:1/ HTTP/1.1\r\n{many}\r\n");
    assert_raw_refusal(
        &proxy,
        request.as_bytes(),
        "431 Request Header Fields Too Large",
    );
    proxy.stop();
}

#[test]
#[cfg_attr(smoltalk_no_curl, ignore = "needs curl, openssl and python3")]
fn unsupported_method_and_transfer_coding_are_501() {
    let (_origin, origin_port) = origin(None);
    let proxy = start_proxy(&[]);
    let out = curl_ok(
        &proxy,
        &[
            "-i",
            "-X",
            "TRACE",
            &format!("http://127.0.0.1:{origin_port}/small"),
        ],
    );
    assert_error_page(&out.stdout, "501 Not Implemented");
    assert!(stdout(&out).contains("The proxy does not forward that method"));
    let request = format!(
        "POST http://127.0.0.1:{origin_port}/echo HTTP/1.1\r\nHost: 127.0.0.1:{origin_port}\r\n\
         Transfer-Encoding: gzip\r\n\r\nnot really gzip"
    );
    let response = raw_exchange(proxy.port, request.as_bytes());
    assert_error_page(&response, "501 Not Implemented");
    assert!(String::from_utf8_lossy(&response).contains("transfer coding"));
    // https:// without CONNECT.
    let request = format!("GET https://127.0.0.1:{origin_port}/small HTTP/1.1\r\n\r\n");
    assert_raw_refusal(&proxy, request.as_bytes(), "501 Not Implemented");
    assert!(seen(origin_port).is_empty());
    proxy.stop();
}

#[test]
#[cfg_attr(smoltalk_no_curl, ignore = "needs curl, openssl and python3")]
fn refused_and_silent_origins_are_502() {
    let (_origin, origin_port) = origin(None);
    let proxy = start_proxy(&[]);
    let closed = closed_port();
    let out = curl_ok(&proxy, &["-i", &format!("http://127.0.0.1:{closed}/")]);
    assert_error_page(&out.stdout, "502 Bad Gateway");
    assert!(stdout(&out).contains("refused the connection"));

    let out = curl_ok(
        &proxy,
        &["-i", &format!("http://127.0.0.1:{origin_port}/close")],
    );
    assert_error_page(&out.stdout, "502 Bad Gateway");
    assert!(stdout(&out).contains("closed the connection before its response was complete"));

    // A name outside --resolve, with --no-dns: no query leaves, the answer is 502.
    let out = curl_ok(&proxy, &["-i", "http://nowhere.test/"]);
    assert_error_page(&out.stdout, "502 Bad Gateway");
    assert!(stdout(&out).contains("name does not resolve"));
    proxy.wait_log(&[&format!(
        "Response HTTP/1.1 502 Bad Gateway (GET http://127.0.0.1:{closed}/ HTTP/1.1"
    )]);
    proxy.stop();
}

#[test]
#[cfg_attr(smoltalk_no_curl, ignore = "needs curl, openssl and python3")]
fn over_the_connection_cap_is_503_and_the_slot_comes_back() {
    let (_origin, origin_port) = origin(None);
    let proxy = start_proxy(&["--max-connections", "1"]);
    let url = format!("http://127.0.0.1:{origin_port}/small");
    let held = TcpStream::connect(("127.0.0.1", proxy.port)).expect("connect");
    let out = curl_ok(&proxy, &["-i", &url]);
    assert_error_page(&out.stdout, "503 Service Unavailable");
    assert_eq!(header(&split_head(&out.stdout).0, "retry-after"), Some("1"));
    proxy.wait_log(&["From 127.0.0.1 Refused 503 Service Unavailable"]);
    drop(held);
    // Once the held connection is gone, its place serves the next client.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let out = curl_ok(&proxy, &[&url]);
        if stdout(&out) == SMALL {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the slot never came back: {}",
            stdout(&out)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    proxy.stop();
}

#[test]
#[cfg_attr(smoltalk_no_curl, ignore = "needs curl, openssl and python3")]
fn an_origin_slower_than_the_timeout_is_504() {
    let (_origin, origin_port) = origin(None);
    let proxy = start_proxy(&["--timeout", "1"]);
    let started = Instant::now();
    let out = curl_ok(
        &proxy,
        &["-i", &format!("http://127.0.0.1:{origin_port}/sleep")],
    );
    // The status says the proxy gave up rather than wait the origin's 3 s; it waited its 1 s first.
    assert_error_page(&out.stdout, "504 Gateway Timeout");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    proxy.wait_log(&["Response HTTP/1.1 504 Gateway Timeout"]);
    proxy.stop();
}

#[test]
#[cfg_attr(smoltalk_no_curl, ignore = "needs curl, openssl and python3")]
fn requests_that_would_loop_are_508() {
    let (_origin, origin_port) = origin(None);
    let proxy = start_proxy(&[]);
    // The proxy's own address and port.
    let out = curl_ok(&proxy, &["-i", &format!("{}/", proxy.url())]);
    assert_error_page(&out.stdout, "508 Loop Detected");
    // A request that already came through this proxy (its Via pseudonym, learnt from a normal response).
    let via = via_of(&proxy, origin_port);
    let out = curl_ok(
        &proxy,
        &[
            "-i",
            "-H",
            &format!("Via: 1.0 other, {via}"),
            &format!("http://127.0.0.1:{origin_port}/small"),
        ],
    );
    assert_error_page(&out.stdout, "508 Loop Detected");
    assert_eq!(
        seen(origin_port).len(),
        1,
        "only the normal request reached the origin"
    );
    // Another proxy's Via is no loop.
    let out = curl_ok(
        &proxy,
        &[
            "-H",
            "Via: 1.1 smoltalk-00000000",
            &format!("http://127.0.0.1:{origin_port}/small"),
        ],
    );
    assert_eq!(stdout(&out), SMALL);
    proxy.stop();
}

#[test]
#[cfg_attr(smoltalk_no_curl, ignore = "needs curl, openssl and python3")]
fn bytes_an_origin_sends_past_its_response_never_answer_the_next_request() {
    let (_origin, origin_port) = origin(None);
    let proxy = start_proxy(&[]);
    let extra = format!("http://127.0.0.1:{origin_port}/extra");
    let small = format!("http://127.0.0.1:{origin_port}/small");
    // Two requests on one client connection: the second must get its own response from a new origin
    // connection, not the forged one the origin left behind the first.
    let out = curl_ok(&proxy, &["-v", &extra, &small]);
    let verbose = stderr(&out);
    assert!(
        verbose.contains("Re-using existing connection"),
        "{verbose}"
    );
    // curl retries a request on a fresh connection when a reused one dies: that would hide a proxy failure.
    assert_eq!(
        verbose.matches("Connected to 127.0.0.1").count(),
        1,
        "curl had to retry: {verbose}"
    );
    assert_eq!(stdout(&out), format!("first\n{SMALL}"));
    let seen = seen(origin_port);
    assert_eq!(seen.len(), 2, "{seen:?}");
    let peer = |entry: &str| entry.lines().next().unwrap().to_owned();
    assert_ne!(
        peer(&seen[0]),
        peer(&seen[1]),
        "the origin connection was kept: {seen:?}"
    );
    proxy.stop();
}

#[test]
#[cfg_attr(smoltalk_no_curl, ignore = "needs curl, openssl and python3")]
fn pipelined_requests_and_an_http_1_0_client() {
    let (_origin, origin_port) = origin(None);
    let proxy = start_proxy(&[]);
    // Three requests in one write, the last asking to close: three responses in order, then the close.
    let get = |path: &str, last: bool| {
        let close = if last { "Connection: close\r\n" } else { "" };
        format!("GET http://127.0.0.1:{origin_port}{path} HTTP/1.1\r\nHost: 127.0.0.1:{origin_port}\r\n{close}\r\n")
    };
    let pipeline = [
        get("/small", false),
        get("/chunked", false),
        get("/small", true),
    ]
    .concat();
    let reply = raw_exchange(proxy.port, pipeline.as_bytes());
    let (head1, rest) = split_head(&reply);
    assert!(head1.starts_with("HTTP/1.1 200 OK\r\n"), "{head1}");
    assert!(header(&head1, "connection").is_none(), "{head1}");
    let (body1, rest) = rest.split_at(SMALL.len());
    assert_eq!(body1, SMALL.as_bytes());
    let (head2, rest) = split_head(rest);
    assert_eq!(
        header(&head2, "transfer-encoding"),
        Some("chunked"),
        "{head2}"
    );
    let chunks =
        b"5\r\nhello\r\n9;note=x\r\n, chunked\r\n7\r\n world\n\r\n0\r\nX-Trailer: yes\r\n\r\n";
    assert!(
        rest.starts_with(chunks),
        "{}",
        String::from_utf8_lossy(rest)
    );
    let (head3, body3) = split_head(&rest[chunks.len()..]);
    assert_eq!(header(&head3, "connection"), Some("close"), "{head3}");
    assert_eq!(body3, SMALL.as_bytes());

    // HTTP/1.0 without keep-alive: the proxy says it closes, and does.
    let request = format!("GET http://127.0.0.1:{origin_port}/small HTTP/1.0\r\n\r\n");
    let reply = raw_exchange(proxy.port, request.as_bytes());
    let (head, body) = split_head(&reply);
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert_eq!(header(&head, "connection"), Some("close"), "{head}");
    assert_eq!(body, SMALL.as_bytes());
    // The origin still got HTTP/1.1 in origin-form, with the client's version in Via.
    let seen = seen(origin_port);
    assert_eq!(seen.len(), 4, "{seen:?}");
    assert!(
        seen[3].contains("\r\nGET /small HTTP/1.0\r\n"),
        "{}",
        seen[3]
    );
    assert!(seen[3].contains("\r\nVia: 1.0 smoltalk-"), "{}", seen[3]);
    proxy.stop();
}

/// The classic design (`--thread-per-client`), kept for comparison, serves the same: pages and 1 MiB on a kept
/// connection, a CONNECT tunnel, and 503 at its cap.
#[test]
#[cfg_attr(smoltalk_no_curl, ignore = "needs curl, openssl and python3")]
fn the_thread_per_client_design_serves_the_same() {
    let (_origin, origin_port) = origin(None);
    let (_echo, echo_port) = start_echo(&Net::Loopback);
    let proxy = start_proxy(&[
        "--thread-per-client",
        "--connect-ports",
        &echo_port.to_string(),
    ]);
    let small = format!("http://127.0.0.1:{origin_port}/small");
    let big = format!("http://127.0.0.1:{origin_port}/big");
    let out = curl_ok(&proxy, &["-v", &small, &big]);
    assert!(stderr(&out).contains("Re-using existing connection"));
    let mut expected = SMALL.as_bytes().to_vec();
    expected.extend(big_body());
    assert!(out.stdout == expected, "{} bytes", out.stdout.len());

    let data = every_byte(64);
    let mut request =
        format!("CONNECT 127.0.0.1:{echo_port} HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes();
    request.extend_from_slice(&data);
    let mut stream = TcpStream::connect(("127.0.0.1", proxy.port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(&request).unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    let received = read_all(&mut stream);
    let (head, echoed) = split_head(&received);
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert!(echoed == data, "the tunnel changed bytes");

    proxy.stop();

    // A fresh proxy, so no earlier connection still holds a place: one held connection fills the cap.
    let proxy = start_proxy(&["--thread-per-client", "--max-connections", "1"]);
    let held = TcpStream::connect(("127.0.0.1", proxy.port)).expect("connect");
    let out = curl_ok(&proxy, &["-i", &small]);
    assert_error_page(&out.stdout, "503 Service Unavailable");
    drop(held);
    proxy.stop();
}

/// A client that sends its request and closes its sending side at once (`nc -N`, `shutdown(SHUT_WR)`) still
/// gets its response: the request is parsed before the end of the stream is judged.
#[test]
#[cfg_attr(smoltalk_no_curl, ignore = "needs curl, openssl and python3")]
fn a_request_followed_at_once_by_the_clients_fin_is_answered() {
    let (_origin, origin_port) = origin(None);
    let proxy = start_proxy(&[]);
    let mut stream = TcpStream::connect(("127.0.0.1", proxy.port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let request = format!("GET http://127.0.0.1:{origin_port}/small HTTP/1.0\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    let reply = read_all(&mut stream);
    let (head, body) = split_head(&reply);
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert_eq!(body, SMALL.as_bytes());
    proxy.stop();
}
