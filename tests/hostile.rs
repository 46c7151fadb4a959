//! Hostile clients against the kernel-stack proxy (`smoltalk proxy`): requests that break RFC 9112, heads too
//! long, clients that send nothing or a byte a second (slowloris), and more clients than the proxy takes.
//!
//! Each test runs the proxy and its Python origin inside a fresh network namespace that has only loopback, and
//! its own sockets join that namespace: no name or address a hostile request carries can be looked up or reached
//! beyond it (the proxy runs without `--no-dns` here, on purpose: there is nothing to ask). The namespace is
//! deleted when the test ends. The rules of the first round are put to the smoltcp proxy in
//! `tests/netns_proxy.rs`; those of the second (issue 13: chunked framing, framing fields, Max-Forwards, large
//! response heads, a full pool and idle tunnels, in `support::strictness`) run here on every design, the smoltcp
//! proxy on a TUN device in a namespace of its own.
//!
//! Needs root (namespaces, TUN), `ip`, `python3`, `curl` and `openssl`: skips with a reason elsewhere, fails
//! under `CI=true`. Each test has its own namespace, so they run in parallel.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use support::proxy::*;
use support::strictness;
use support::*;

/// One test's namespace: loopback only.
struct Isolated {
    net: Net,
    // Last, so it is dropped (the namespace deleted) after everything the test started in it.
    ns: Namespace,
}

impl Isolated {
    /// A fresh namespace, or `None` (after saying why, or failing under CI) when this machine cannot make one.
    fn new(test: &str) -> Option<Isolated> {
        let ns = namespace_or_skip(test, "hostile", &["curl", "openssl"])?;
        Some(Isolated {
            net: Net::Isolated(ns.name().to_owned()),
            ns,
        })
    }

    /// `smoltalk proxy --port 0 --allow-dest 127.0.0.0/8` plus `extra`, inside the namespace.
    fn proxy(&self, extra: &[&str]) -> Proxy {
        let mut args = vec!["proxy", "--port", "0", "--allow-dest", "127.0.0.0/8"];
        args.extend_from_slice(extra);
        Proxy::start(smoltalk_in(&self.ns, &args), "127.0.0.1", self.net.clone())
    }

    /// The HTTP origin on 127.0.0.1 inside the namespace.
    fn origin(&self) -> (Running, u16) {
        start_origin(&self.net, None)
    }
}

/// Runs the strictness rule `name` (see `scenario::STRICT_RULES`) against a fresh proxy.
fn strict(name: &str) {
    let Some(isolated) = Isolated::new(name) else {
        return;
    };
    let (_origin, origin_port) = isolated.origin();
    let proxy = isolated.proxy(&[]);
    scenario::strict_rule_holds(&proxy, origin_port, name);
    proxy.stop();
}

macro_rules! strict_rule_tests {
    ($($rule:ident),* $(,)?) => {
        $(
            #[test]
            #[cfg_attr(
                any(smoltalk_no_netns, smoltalk_no_curl),
                ignore = "needs root, ip, python3, curl and openssl (a network namespace with only loopback)"
            )]
            fn $rule() {
                strict(stringify!($rule));
            }
        )*

        /// Every rule in the table has its test here (a rule added to the table without one fails).
        #[test]
        fn every_strictness_rule_has_a_test() {
            let tested = [$(stringify!($rule)),*];
            for rule in scenario::STRICT_RULES {
                assert!(tested.contains(&rule.name), "no test for rule {}", rule.name);
            }
            assert_eq!(tested.len(), scenario::STRICT_RULES.len());
        }
    };
}

strict_rule_tests!(
    content_length_with_transfer_encoding,
    differing_content_lengths,
    differing_content_lengths_in_one_list,
    obsolete_line_folding,
    nul_in_a_header_value,
    bare_cr_in_a_header_value,
    bare_cr_ending_the_request_line,
    request_line_over_the_head_buffer,
    head_over_the_head_buffer,
    unknown_transfer_coding,
    chunked_twice,
    identity_beside_chunked,
    transfer_coding_not_ending_in_chunked,
    absolute_form_with_userinfo,
    absolute_form_with_an_https_scheme,
    absolute_form_with_an_ftp_scheme,
    request_to_the_proxys_own_address,
);

#[test]
#[cfg_attr(
    any(smoltalk_no_netns, smoltalk_no_curl),
    ignore = "needs root, ip, python3, curl and openssl (a network namespace with only loopback)"
)]
fn malformed_requests_are_400_and_an_unknown_version_505() {
    let Some(isolated) = Isolated::new("malformed_requests_are_400_and_an_unknown_version_505")
    else {
        return;
    };
    let proxy = isolated.proxy(&[]);
    scenario::malformed_requests_are_400_and_an_unknown_version_505(&proxy);
    proxy.stop();
}

#[test]
#[cfg_attr(
    any(smoltalk_no_netns, smoltalk_no_curl),
    ignore = "needs root, ip, python3, curl and openssl (a network namespace with only loopback)"
)]
fn request_line_over_8_kib_is_414_and_head_over_8_kib_is_431() {
    let Some(isolated) = Isolated::new("request_line_over_8_kib_is_414_and_head_over_8_kib_is_431")
    else {
        return;
    };
    let proxy = isolated.proxy(&[]);
    scenario::request_line_over_8_kib_is_414_and_head_over_8_kib_is_431(&proxy);
    proxy.stop();
}

#[test]
#[cfg_attr(
    any(smoltalk_no_netns, smoltalk_no_curl),
    ignore = "needs root, ip, python3, curl and openssl (a network namespace with only loopback)"
)]
fn unsupported_method_and_transfer_coding_are_501() {
    let Some(isolated) = Isolated::new("unsupported_method_and_transfer_coding_are_501") else {
        return;
    };
    let (_origin, origin_port) = isolated.origin();
    let proxy = isolated.proxy(&[]);
    scenario::unsupported_method_and_transfer_coding_are_501(&proxy, origin_port);
    proxy.stop();
}

#[test]
#[cfg_attr(
    any(smoltalk_no_netns, smoltalk_no_curl),
    ignore = "needs root, ip, python3, curl and openssl (a network namespace with only loopback)"
)]
fn half_a_head_times_out_with_408() {
    let Some(isolated) = Isolated::new("half_a_head_times_out_with_408") else {
        return;
    };
    let proxy = isolated.proxy(&["--timeout", "1"]);
    scenario::half_a_head_times_out_with_408(&proxy);
    proxy.stop();
}

/// `count` connections to `addr`, made inside `net`, non-blocking.
fn open_connections(net: &Net, addr: SocketAddr, count: usize) -> Vec<TcpStream> {
    net.inside(move || {
        (0..count)
            .map(|i| {
                let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
                    .unwrap_or_else(|e| panic!("connection {i} to {addr}: {e}"));
                stream.set_nonblocking(true).expect("nonblocking");
                stream
            })
            .collect()
    })
}

/// A GET of the origin's `/small` on its own connection, answered whole: what a normal client does.
fn normal_request(proxy: &Proxy, origin_port: u16) -> Vec<u8> {
    proxy.exchange(
        format!(
            "GET http://127.0.0.1:{origin_port}/small HTTP/1.1\r\nHost: 127.0.0.1:{origin_port}\r\n\
             Connection: close\r\n\r\n"
        )
        .as_bytes(),
    )
}

/// Checks `response` is a whole 200 carrying the origin's small page.
fn assert_small_page(response: &[u8]) {
    let (head, body) = split_head(response);
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert_eq!(body, SMALL.as_bytes());
}

#[test]
#[cfg_attr(
    any(smoltalk_no_netns, smoltalk_no_curl),
    ignore = "needs root, ip, python3, curl and openssl (a network namespace with only loopback)"
)]
fn slowloris_and_idle_clients_get_408_at_the_timeout_while_a_normal_client_is_served() {
    slowloris(
        "slowloris_and_idle_clients_get_408_at_the_timeout_while_a_normal_client_is_served",
        &[],
    );
}

#[test]
#[cfg_attr(
    any(smoltalk_no_netns, smoltalk_no_curl),
    ignore = "needs root, ip, python3, curl and openssl (a network namespace with only loopback)"
)]
fn the_thread_per_client_design_also_times_out_slowloris_clients() {
    slowloris(
        "the_thread_per_client_design_also_times_out_slowloris_clients",
        &["--thread-per-client"],
    );
}

/// 500 idle and 500 slowloris clients against the proxy started with `design` (its options): a normal client
/// is served while they are held, and each of them gets 408 and is closed once `--timeout` has passed.
fn slowloris(test: &str, design: &[&str]) {
    const IDLE: usize = 500;
    const SLOW: usize = 500;
    const TIMEOUT: Duration = Duration::from_secs(6);
    let Some(isolated) = Isolated::new(test) else {
        return;
    };
    // Over a thousand sockets are held below.
    let _ = smoltalk::sys::raise_open_files_limit();
    let (_origin, origin_port) = isolated.origin();
    let mut args = vec!["--timeout", "6", "--max-connections", "2000"];
    args.extend_from_slice(design);
    let proxy = isolated.proxy(&args);
    let pid = proxy.server.child.id();
    let baseline_sockets = open_sockets(pid);

    // 1,000 connections: the first 500 send nothing, the other 500 a request head one byte a second.
    let opened = Instant::now();
    let mut held = open_connections(&isolated.net, proxy.addr(), IDLE + SLOW);
    let slow_head = format!(
        "GET http://127.0.0.1:{origin_port}/small HTTP/1.1\r\nHost: 127.0.0.1:{origin_port}\r\n\r\n"
    )
    .into_bytes();
    // The next byte of the head each slow client sends (one a second), until it is answered: a proxy that
    // restarted its clock at every byte would never answer them, and the test would fail at its deadline.
    let mut sent = 0;
    let mut send_slow_byte = |held: &mut [TcpStream], received: &[Received]| {
        for (stream, got) in held.iter_mut().zip(received).skip(IDLE) {
            if got.bytes.is_empty() && !got.ended {
                let _ = stream.write(&slow_head[sent..sent + 1]);
            }
        }
        sent += 1;
    };
    let mut received: Vec<Received> = held.iter().map(|_| Received::default()).collect();
    send_slow_byte(&mut held, &received);
    // Wait until the proxy holds every one of them (a socket each).
    while open_sockets(pid) < baseline_sockets + IDLE + SLOW {
        assert!(
            opened.elapsed() < TIMEOUT,
            "the proxy never accepted all 1,000 connections ({} sockets open)",
            open_sockets(pid)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let rss = rss_kib(pid);

    // A normal client is served while all 1,000 are held.
    let asked = Instant::now();
    let response = normal_request(&proxy, origin_port);
    let served_in = asked.elapsed();
    assert_small_page(&response);
    for (stream, got) in held.iter_mut().zip(&mut received) {
        read_available(stream, got);
    }
    let early = received
        .iter()
        .filter(|r| !r.bytes.is_empty() || r.ended)
        .count();
    assert_eq!(
        early, 0,
        "{early} held connections were answered or closed before the timeout"
    );

    // Everything held must be answered 408 and closed after the timeout, the slow ones while still sending.
    let deadline = opened + TIMEOUT + Duration::from_secs(20);
    let mut next_byte = opened + Duration::from_secs(1);
    while received.iter().any(|r| !r.ended) {
        assert!(
            Instant::now() < deadline,
            "{} held connections still open 20 s after the timeout (a clock restarted by every byte?)",
            received.iter().filter(|r| !r.ended).count()
        );
        if Instant::now() >= next_byte {
            send_slow_byte(&mut held, &received);
            next_byte += Duration::from_secs(1);
        }
        for (stream, got) in held.iter_mut().zip(&mut received) {
            read_available(stream, got);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for (i, got) in received.iter().enumerate() {
        let kind = if i < IDLE { "idle" } else { "slowloris" };
        let text = String::from_utf8_lossy(&got.bytes);
        assert!(
            text.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
            "{kind} connection {i} got:\n{text}"
        );
        assert_error_page(&got.bytes, "408 Request Timeout");
        let ended_after = got.ended_at.expect("ended") - opened;
        assert!(
            ended_after >= TIMEOUT,
            "{kind} connection {i} was closed {ended_after:?} after it opened, before the {TIMEOUT:?} timeout"
        );
    }
    let log = proxy.log();
    assert_eq!(
        log.matches("Response HTTP/1.1 408 Request Timeout").count(),
        IDLE + SLOW,
        "one 408 logged per held connection"
    );
    // Once the clients close too, their sockets are gone, and the proxy still serves.
    drop(held);
    let closed_by = Instant::now() + Duration::from_secs(5);
    while open_sockets(pid) > baseline_sockets {
        assert!(
            Instant::now() < closed_by,
            "the proxy kept {} sockets open; {baseline_sockets} before",
            open_sockets(pid)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_small_page(&normal_request(&proxy, origin_port));
    let _ = writeln!(
        std::io::stderr(),
        "slowloris {design:?}: {} connections held ({IDLE} idle, {SLOW} at a byte a second); proxy RSS {rss} KiB; \
         a normal client was served in {served_in:?} meanwhile; all held got 408 and were closed after the \
         {TIMEOUT:?} timeout",
        IDLE + SLOW
    );
    proxy.stop();
}

#[test]
#[cfg_attr(
    any(smoltalk_no_netns, smoltalk_no_curl),
    ignore = "needs root, ip, python3, curl and openssl (a network namespace with only loopback)"
)]
fn over_the_connection_cap_is_503_at_once_and_transfers_in_progress_go_on() {
    over_the_cap(
        "over_the_connection_cap_is_503_at_once_and_transfers_in_progress_go_on",
        &[],
    );
}

#[test]
#[cfg_attr(
    any(smoltalk_no_netns, smoltalk_no_curl),
    ignore = "needs root, ip, python3, curl and openssl (a network namespace with only loopback)"
)]
fn the_thread_per_client_design_also_answers_503_over_the_cap() {
    over_the_cap(
        "the_thread_per_client_design_also_answers_503_over_the_cap",
        &["--thread-per-client"],
    );
}

/// 100 clients fill the cap of the proxy started with `design` (its options), one of them in the middle of a
/// 1 MiB upload; 1,000 more at once each get 503 and are closed, and the upload goes on byte-exact.
fn over_the_cap(test: &str, design: &[&str]) {
    const CAP: usize = 100;
    const EXTRA: usize = 1000;
    let Some(isolated) = Isolated::new(test) else {
        return;
    };
    // Over a thousand sockets are held below.
    let _ = smoltalk::sys::raise_open_files_limit();
    let (_origin, origin_port) = isolated.origin();
    let mut args = vec!["--max-connections", "100", "--timeout", "30"];
    args.extend_from_slice(design);
    let proxy = isolated.proxy(&args);
    let pid = proxy.server.child.id();

    // One upload in progress (half of a 1 MiB body sent, so it cannot finish while the rest waits) and CAP - 1
    // idle clients fill the cap.
    let body = big_body();
    let mut transfer = proxy.connect();
    transfer
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let head = format!(
        "POST http://127.0.0.1:{origin_port}/echo HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    transfer.write_all(head.as_bytes()).expect("send");
    transfer
        .write_all(&body[..body.len() / 2])
        .expect("the first half of the upload");
    let held = open_connections(&isolated.net, proxy.addr(), CAP - 1);

    // 1,000 more clients at once: each is answered 503 and closed, long before any timeout.
    let started = Instant::now();
    let mut extra = open_connections(&isolated.net, proxy.addr(), EXTRA);
    let mut received: Vec<Received> = extra.iter().map(|_| Received::default()).collect();
    let rss = rss_kib(pid);
    while received.iter().any(|r| !r.ended) {
        assert!(
            started.elapsed() < Duration::from_secs(25),
            "{} clients over the cap were not answered before the proxy's 30 s timeout: {:?}; log: {}",
            received.iter().filter(|r| !r.ended).count(),
            received.iter().enumerate().filter(|(_, r)| !r.ended).map(|(i, r)| (i, r.bytes.len())).collect::<Vec<_>>(),
            proxy.log().lines().filter(|l| !l.contains("Refused")).collect::<Vec<_>>().join("\n")
        );
        for (stream, got) in extra.iter_mut().zip(&mut received) {
            read_available(stream, got);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut waits: Vec<Duration> = received
        .iter()
        .map(|r| r.ended_at.expect("ended") - started)
        .collect();
    waits.sort();
    for (i, got) in received.iter().enumerate() {
        let text = String::from_utf8_lossy(&got.bytes);
        assert!(
            text.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
            "client {i} over the cap got:\n{text}"
        );
        assert_error_page(&got.bytes, "503 Service Unavailable");
    }

    // The upload in progress goes on, and its echo comes back byte-exact; the held connections are untouched.
    transfer
        .write_all(&body[body.len() / 2..])
        .expect("the second half of the upload");
    let mut echoed = Vec::new();
    transfer
        .read_to_end(&mut echoed)
        .expect("the echo of the upload");
    let (head, echo) = split_head(&echoed);
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(echo == body, "the upload in progress was damaged");
    let mut probe = [0u8; 1];
    for stream in &held {
        let mut stream = stream;
        assert!(
            matches!(stream.read(&mut probe), Err(e) if e.kind() == ErrorKind::WouldBlock),
            "a held connection was answered or closed"
        );
    }
    let _ = writeln!(
        std::io::stderr(),
        "cap {design:?}: {CAP} held, {EXTRA} more refused with 503 (median {:?}, slowest {:?} after they connected); proxy RSS \
         with {} connections {rss} KiB",
        waits[waits.len() / 2],
        waits[waits.len() - 1],
        CAP + EXTRA
    );
    drop(held);
    proxy.stop();
}

/// `resolv.conf` for one namespace: `ip netns exec` mounts `/etc/netns/NAME/resolv.conf` over `/etc/resolv.conf`
/// for what it runs. Removed on drop.
struct NamespaceResolver {
    dir: std::path::PathBuf,
}

impl NamespaceResolver {
    fn write(namespace: &str, conf: &str) -> NamespaceResolver {
        let dir = std::path::Path::new("/etc/netns").join(namespace);
        std::fs::create_dir_all(&dir).expect("create /etc/netns/NAME");
        std::fs::write(dir.join("resolv.conf"), conf).expect("write resolv.conf");
        NamespaceResolver { dir }
    }
}

impl Drop for NamespaceResolver {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        // `/etc/netns` itself too, if this made it and nothing else is in it.
        let _ = std::fs::remove_dir("/etc/netns");
    }
}

/// A DNS server on 127.0.0.1:53 that takes every query and never answers. It tells how many queries it has
/// taken to whoever connects to the TCP port it announces.
const PY_SILENT_DNS: &str = r#"
import socket, threading
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(('127.0.0.1', 53))
t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
t.bind(('127.0.0.1', 0))
t.listen(4)
queries = 0
def tell():
    while True:
        c, _ = t.accept()
        c.sendall(str(queries).encode())
        c.close()
threading.Thread(target=tell, daemon=True).start()
print('silent dns listening on 127.0.0.1:%d' % t.getsockname()[1], flush=True)
while True:
    s.recvfrom(512)
    queries += 1
"#;

/// How many queries the silent DNS server, which tells it on `port`, has taken.
fn dns_queries(net: &Net, port: u16) -> u64 {
    let reply = read_all(&mut net.connect(SocketAddr::from(([127, 0, 0, 1], port))));
    String::from_utf8_lossy(&reply).parse().expect("a count")
}

/// A name whose DNS server never answers is 502 at the proxy's `--timeout`, not when the system's resolver
/// gives up (told here to wait 30 s): both kernel-stack designs wait for a lookup only until the engine's
/// deadline.
#[test]
#[cfg_attr(
    any(smoltalk_no_netns, smoltalk_no_curl),
    ignore = "needs root, ip, python3, curl and openssl (a network namespace with only loopback)"
)]
fn a_lookup_that_never_answers_is_502_at_the_timeout() {
    let test = "a_lookup_that_never_answers_is_502_at_the_timeout";
    let Some(isolated) = Isolated::new(test) else {
        return;
    };
    let _resolver = NamespaceResolver::write(
        isolated.ns.name(),
        "nameserver 127.0.0.1\noptions timeout:30 attempts:1\n",
    );
    let (_dns, dns_port) = start_server(
        isolated.net.command("python3", &["-c", PY_SILENT_DNS]),
        "silent dns",
    );
    for design in [&[][..], &["--thread-per-client"][..]] {
        let mut extra = vec!["--timeout", "1"];
        extra.extend_from_slice(design);
        let proxy = isolated.proxy(&extra);
        let queries = dns_queries(&isolated.net, dns_port);
        let started = Instant::now();
        let reply = proxy.exchange(b"GET http://never.test/ HTTP/1.1\r\nHost: never.test\r\n\r\n");
        let took = started.elapsed();
        assert_error_page(&reply, "502 Bad Gateway");
        // The lookup did reach the server that never answers (else this would prove nothing), and the 502 came
        // at the deadline: not before it, not when the resolver gave up.
        assert!(
            dns_queries(&isolated.net, dns_port) > queries,
            "{design:?}: the lookup never reached the silent DNS server"
        );
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(8),
            "{design:?}: the 502 took {took:?}"
        );
        proxy.stop();
    }
}

/// The two kernel-stack designs: the event loop (the default) and a thread per client.
const KERNEL_DESIGNS: [&[&str]; 2] = [&[], &["--thread-per-client"]];

/// Runs `scenario` against each design with `extra` options, each with a fresh origin (and an echo server for
/// tunnels): the two kernel-stack designs in a namespace with only loopback, then the smoltcp proxy on a TUN
/// device `st0` in a namespace of its own (its kernel side, 10.0.2.2, is where the origins and the clients
/// are; nothing else is there).
fn on_every_design(test: &str, extra: &[&str], scenario: impl Fn(&Proxy, u16, u16)) {
    let Some(isolated) = Isolated::new(test) else {
        return;
    };
    let with = |echo: &str| {
        let mut args = vec!["--connect-ports".to_owned(), echo.to_owned()];
        args.extend(extra.iter().map(|a| a.to_string()));
        args
    };
    for design in KERNEL_DESIGNS {
        let (_origin, origin_port) = isolated.origin();
        let (_echo, echo_port) = start_echo(&isolated.net);
        let mut args = with(&echo_port.to_string());
        args.extend(design.iter().map(|a| a.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let proxy = isolated.proxy(&args);
        scenario(&proxy, origin_port, echo_port);
        proxy.stop();
    }
    let Some(ns) = namespace_or_skip(test, "hostile", &["curl", "openssl"]) else {
        return;
    };
    add_st0(&ns, "tun");
    let net = Net::Namespace(ns.name().to_owned());
    let (_origin, origin_port) = start_origin(&net, None);
    let (_echo, echo_port) = start_echo(&net);
    let mut args: Vec<String> = ["proxy", "--stack", "tun", "--dev", "st0", "--no-dns"]
        .iter()
        .map(|a| a.to_string())
        .collect();
    args.extend(with(&echo_port.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let proxy = Proxy::start(smoltalk_in(&ns, &args), "10.0.2.15", net);
    scenario(&proxy, origin_port, echo_port);
    proxy.stop();
}

macro_rules! on_every_design {
    ($($(#[$doc:meta])* $test:ident($($extra:expr),*) => $scenario:expr;)*) => {
        $(
            $(#[$doc])*
            #[test]
            #[cfg_attr(
                any(smoltalk_no_netns, smoltalk_no_curl),
                ignore = "needs root, /dev/net/tun, ip, ping, python3, curl and openssl (network namespaces)"
            )]
            fn $test() {
                on_every_design(stringify!($test), &[$($extra),*], $scenario);
            }
        )*
    };
}

on_every_design! {
    /// Issue 13, item 1: a bare LF anywhere in a request's chunked framing is 400, and nothing behind it (a
    /// smuggled request) reaches the origin.
    bare_lf_in_a_chunked_request_is_400_and_nothing_behind_it_is_relayed() => |p, o, _| {
        strictness::bare_lf_in_a_chunked_request_is_400_and_nothing_behind_it_is_relayed(p, o)
    };
    /// Item 1, the other way: an origin's chunked body with bare LFs never reaches the client.
    a_chunked_response_with_bare_lfs_never_reaches_the_client() => |p, o, _| {
        strictness::a_chunked_response_with_bare_lfs_never_reaches_the_client(p, o)
    };
    /// Item 2: a framing field said twice reaches the next hop once, as the proxy wrote it.
    repeated_framing_fields_reach_the_next_hop_once() => |p, o, _| {
        strictness::repeated_framing_fields_reach_the_next_hop_once(p, o)
    };
    /// Item 3: Max-Forwards for OPTIONS and TRACE.
    max_forwards_is_honoured_for_options_and_trace() => |p, o, _| {
        strictness::max_forwards_is_honoured_for_options_and_trace(p, o)
    };
    /// Item 5: response heads up to 64 KiB, with as many fields as fit.
    response_heads_up_to_64_kib_pass_and_larger_ones_are_502() => |p, o, _| {
        strictness::response_heads_up_to_64_kib_pass_and_larger_ones_are_502(p, o)
    };
    /// Item 4: at the cap, the client idle longest is reclaimed; silent tunnels close at --tunnel-idle.
    a_full_pool_reclaims_idle_clients_and_silent_tunnels_close("--max-connections", "2", "--tunnel-idle", "2") =>
        strictness::a_full_pool_reclaims_idle_clients_and_silent_tunnels_close;
}
