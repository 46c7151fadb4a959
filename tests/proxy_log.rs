//! The three proxy designs (the kernel stack's event loop, its thread per client, and smoltcp on TUN) log
//! byte-identical lines for the same exchanges: every line comes from the core's one event type, and every
//! decision behind it from the core's one engine.
//!
//! All three run in one network namespace with only loopback and a TUN device `st0` (kernel side 10.0.2.2/24), so
//! they see the same client (10.0.2.2, whether it connects to the kernel's 10.0.2.2 or to smoltcp's 10.0.2.15) and
//! the same origins (10.0.2.2). Each gets the same sequence of exchanges, one at a time; their `smoltalk::proxy`
//! lines are then compared whole. Needs root, `ip`, `python3` and `curl`: skips with a reason elsewhere, fails under
//! `CI=true`.

mod support;

use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use support::proxy::*;
use support::*;

/// Where the client and the origins are: the kernel's side of `st0`.
const KERNEL: &str = "10.0.2.2";

/// The `smoltalk::proxy` lines of `log`, without their timestamps and levels.
fn proxy_lines(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|line| line.split_once(" smoltalk::proxy] "))
        .map(|(_, line)| line.to_owned())
        .collect()
}

/// Sends `request` and reads until the proxy closes; with `half_close`, closes the sending side right after the
/// request.
fn raw(proxy: &Proxy, request: &[u8], half_close: bool) -> Vec<u8> {
    let mut stream = proxy.connect();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request).unwrap();
    if half_close {
        let _ = stream.shutdown(Shutdown::Write);
    }
    read_all(&mut stream)
}

/// The same exchanges, one after another, against `proxy`; returns its proxy lines once the last has been logged.
fn exchanges(proxy: &Proxy, origin: u16, echo: u16) -> Vec<String> {
    let client = proxy.net.client_host();
    let at = |path: &str| format!("http://{KERNEL}:{origin}{path}");
    // A page by address and by a --resolve name; two requests on one connection; a POST, a chunked body, a HEAD.
    curl_ok(proxy, &[&at("/small")]);
    curl_ok(proxy, &[&format!("http://origin.test:{origin}/small")]);
    curl_ok(
        proxy,
        &[&at("/small"), "--next", "-x", &proxy.url(), &at("/missing")],
    );
    curl_ok(proxy, &["--data-binary", "0123456789", &at("/echo")]);
    curl_ok(proxy, &[&at("/chunked")]);
    curl_ok(proxy, &["-I", &at("/small")]);
    // A request line longer than the log keeps (issue 13): cut, never emptied.
    curl_ok(proxy, &[&at(&format!("/{}", "L".repeat(1000)))]);
    // OPTIONS with Max-Forwards: 0, answered by the proxy itself.
    curl_ok(proxy, &["-X", "OPTIONS", "-H", "Max-Forwards: 0", &at("/")]);
    let via = via_of(proxy, origin);
    // What the proxy answers itself: 403, 502, 508, 400, 501.
    let answers: [(String, &str); 5] = [
        (
            format!("GET http://127.0.0.1:{origin}/ HTTP/1.1\r\nHost: x\r\n\r\n"),
            "403 Forbidden",
        ),
        (
            format!("GET http://{KERNEL}:1/ HTTP/1.1\r\nHost: x\r\n\r\n"),
            "502 Bad Gateway",
        ),
        (
            format!(
                "GET {} HTTP/1.1\r\nHost: x\r\nVia: {via}\r\n\r\n",
                at("/small")
            ),
            "508 Loop Detected",
        ),
        ("GARBAGE\r\n\r\n".to_owned(), "400 Bad Request"),
        (
            format!("BREW {} HTTP/1.1\r\nHost: x\r\n\r\n", at("/")),
            "501 Not Implemented",
        ),
    ];
    for (request, status) in &answers {
        assert_error_page(&raw(proxy, request.as_bytes(), false), status);
    }
    // A tunnel to the echo server, both ways, closed by the client.
    let mut tunnel = proxy.connect();
    tunnel
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let connect = format!("CONNECT {KERNEL}:{echo} HTTP/1.1\r\nHost: {KERNEL}:{echo}\r\n\r\nping");
    tunnel.write_all(connect.as_bytes()).unwrap();
    let _ = tunnel.shutdown(Shutdown::Write);
    let echoed = read_all(&mut tunnel);
    assert!(
        echoed.starts_with(b"HTTP/1.1 200 Connection established\r\n") && echoed.ends_with(b"ping"),
        "{:?}",
        String::from_utf8_lossy(&echoed)
    );
    // An origin slower than the timeout (2 s): 504; half a head: 408.
    assert_error_page(
        &raw(
            proxy,
            format!("GET {} HTTP/1.1\r\nHost: x\r\n\r\n", at("/sleep")).as_bytes(),
            false,
        ),
        "504 Gateway Timeout",
    );
    assert_error_page(
        &raw(
            proxy,
            format!("GET {} HTTP/1.1\r\nHost", at("/")).as_bytes(),
            false,
        ),
        "408 Request Timeout",
    );
    // A client that closes in the middle of its body.
    let cut = format!(
        "POST {} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly ten b",
        at("/echo")
    );
    let _ = raw(proxy, cut.as_bytes(), true);
    proxy.wait_log(&[&format!(
        "{client} Peer reset POST {} HTTP/1.1 (client closed mid-body)",
        at("/echo")
    )]);
    // Every connection busy (4 held, silent): the next is refused with 503; the held ones get 408 at the timeout.
    // First every earlier connection's socket must be free again (an aborted one waits up to 1 s for its reset).
    std::thread::sleep(Duration::from_millis(1500));
    let held: Vec<TcpStream> = (0..4).map(|_| proxy.connect()).collect();
    std::thread::sleep(Duration::from_millis(200));
    assert_error_page(
        &raw(proxy, b"GET / HTTP/1.1\r\n\r\n", false),
        "503 Service Unavailable",
    );
    for mut stream in held {
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        assert_error_page(&read_all(&mut stream), "408 Request Timeout");
    }
    let timeouts = format!(
        "To {client} Response HTTP/1.1 408 Request Timeout (-: The request head did not arrive in time)"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let lines = proxy_lines(&proxy.log());
        if lines.iter().filter(|l| **l == timeouts).count() >= 5 {
            return lines;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the 408s were not all logged:\n{}",
            lines.join("\n")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
#[cfg_attr(
    any(smoltalk_no_netns, smoltalk_no_curl),
    ignore = "needs root, /dev/net/tun, ip, ping, python3 and curl (a TUN device in a network namespace)"
)]
fn the_three_designs_log_the_same_lines_for_the_same_exchanges() {
    let test = "the_three_designs_log_the_same_lines_for_the_same_exchanges";
    let Some(ns) = namespace_or_skip(test, "nslog", &["curl"]) else {
        return;
    };
    add_st0(&ns, "tun");
    let net = Net::Namespace(ns.name().to_owned());
    let (_origin, origin) = start_origin(&net, None);
    let (_echo, echo) = start_echo(&net);
    let echo_port = echo.to_string();
    let common = [
        "--no-dns",
        "--resolve",
        "origin.test=10.0.2.2",
        "--allow-dest",
        "10.0.2.0/24",
        "--connect-ports",
        &echo_port,
        "--timeout",
        "2",
        "--max-connections",
        "4",
    ];
    let start = |design: &[&str], host: &str| {
        let mut args = vec!["proxy"];
        args.extend_from_slice(design);
        args.extend_from_slice(&common);
        Proxy::start(smoltalk_in(&ns, &args), host, net.clone())
    };
    let mut logs = Vec::new();
    for (name, design, host) in [
        ("event loop", &["--bind", KERNEL, "--port", "0"][..], KERNEL),
        (
            "thread per client",
            &["--bind", KERNEL, "--port", "0", "--thread-per-client"][..],
            KERNEL,
        ),
        (
            "smoltcp on TUN",
            &["--stack", "tun", "--dev", "st0"][..],
            "10.0.2.15",
        ),
    ] {
        let proxy = start(design, host);
        let lines = exchanges(&proxy, origin, echo);
        let (_, log) = proxy.stop();
        assert!(!log.contains("bug:"), "{name}: {log}");
        logs.push((name, lines));
    }
    let (first, expected) = &logs[0];
    // The lines are the ones the exchanges must give, not merely the same three times.
    let client = KERNEL;
    for needle in [
        format!("From {client} Request GET http://{KERNEL}:{origin}/small HTTP/1.1"),
        format!("To {client} Response HTTP/1.1 200 OK (from {KERNEL}:{origin})"),
        format!("To {client} Response HTTP/1.1 404 Not Found (from {KERNEL}:{origin})"),
        format!("From {client} Request CONNECT {KERNEL}:{echo} HTTP/1.1"),
        format!(
            "To {client} Response HTTP/1.1 502 Bad Gateway (GET http://{KERNEL}:1/ HTTP/1.1: The origin server refused the connection)"
        ),
        format!("From {client} Refused 503 Service Unavailable (all 4 proxy connections are busy)"),
        // 256 bytes: the first 253 of the line and the ellipsis (LOG_LINE).
        {
            let line = format!("GET http://{KERNEL}:{origin}/{}", "L".repeat(1000));
            format!("From {client} Request {}…", &line[..253])
        },
        format!(
            "To {client} Response HTTP/1.1 200 OK (OPTIONS http://{KERNEL}:{origin}/ HTTP/1.1: answered by the proxy, Max-Forwards: 0)"
        ),
    ] {
        assert!(
            expected.contains(&needle),
            "{first} never logged {needle:?}:\n{}",
            expected.join("\n")
        );
    }
    for (name, lines) in &logs[1..] {
        assert_eq!(
            lines,
            expected,
            "{name} logged other lines than the {first}:\n{name}:\n{}\n{first}:\n{}",
            lines.join("\n"),
            expected.join("\n")
        );
    }
}
