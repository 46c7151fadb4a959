//! The smoltcp HTTP forward proxy (`smoltalk proxy --stack tun`) end to end, on a real TUN device inside a
//! network namespace each test creates and deletes: the proxy is smoltcp at 10.0.2.15:8080, and curl, the
//! Python origins (HTTP, HTTPS, a TCP echo) and a tiny Python DNS server all run on the kernel's side of the
//! device, 10.0.2.2, inside the namespace. The namespace has only loopback and that device, no route out and no
//! forwarding: nothing leaves it. The cases are those of `tests/proxy.rs` (the kernel-stack proxy), plus names
//! looked up through the proxy's own DNS socket.
//!
//! Needs root (namespaces, TUN), `ip`, `ping`, `python3`, `curl` and `openssl`: skips with a reason elsewhere,
//! fails under `CI=true`. Each test has its own namespace, so they run in parallel.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::proxy::*;
use support::*;

/// Where the smoltcp proxy listens (its default `--ip` and `--port`).
const PROXY_HOST: &str = "10.0.2.15";
/// The kernel's side of the device, where the origins, curl and the DNS server are.
const KERNEL_HOST: &str = "10.0.2.2";

/// One test's network namespace: loopback and a TUN device `st0` whose kernel side is 10.0.2.2/24.
struct Lab {
    net: Net,
    // Last, so it is dropped (the namespace deleted) after everything the test started in it.
    ns: Namespace,
}

impl Lab {
    /// A fresh namespace, or `None` (after saying why, or failing under CI) when this machine cannot make one.
    fn new(test: &str) -> Option<Lab> {
        let ns = namespace_or_skip(test, "nsproxy", &["curl", "openssl"])?;
        add_st0(&ns, "tun");
        Some(Lab {
            net: Net::Namespace(ns.name().to_owned()),
            ns,
        })
    }

    /// `smoltalk proxy --stack tun --dev st0` plus `extra`, at 10.0.2.15:8080.
    fn proxy(&self, extra: &[&str]) -> Proxy {
        let mut args = vec!["proxy", "--stack", "tun", "--dev", "st0"];
        args.extend_from_slice(extra);
        let proxy = Proxy::start(smoltalk_in(&self.ns, &args), PROXY_HOST, self.net.clone());
        assert_eq!(proxy.port, 8080);
        proxy
    }

    /// The HTTP origin on 10.0.2.2; `tls` is `(cert, key)` for HTTPS.
    fn origin(&self, tls: Option<(&Path, &Path)>) -> (Running, u16) {
        start_origin(&self.net, tls)
    }

    /// What the origin on 10.0.2.2:`port` has seen, one request head per entry.
    fn seen(&self, port: u16) -> Vec<String> {
        seen(&self.net, port)
    }

    /// The DNS server on 10.0.2.2:53 with `names` (`NAME=IP`), and what it prints (`query NAME` lines).
    fn dns(&self, names: &[&str]) -> (Running, Arc<Mutex<String>>) {
        start_dns(&self.ns, KERNEL_HOST, names)
    }
}

/// Stops the proxy with SIGTERM and checks it exited 0, saying so in its log.
fn stop_cleanly(proxy: Proxy) {
    let (clean, log) = proxy.stop();
    assert!(
        clean,
        "the smoltcp proxy did not exit 0 on SIGTERM; it logged:\n{log}"
    );
    assert!(log.contains("stopped by a signal; closing st0"), "{log}");
}

#[test]
#[cfg_attr(
    any(smoltalk_no_netns, smoltalk_no_curl),
    ignore = "needs root, /dev/net/tun, ip, ping, python3, curl and openssl (a TUN device in a network namespace)"
)]
fn get_by_address_and_by_resolved_name_with_via_logs_and_a_clean_stop() {
    let Some(lab) = Lab::new("get_by_address_and_by_resolved_name_with_via_logs_and_a_clean_stop")
    else {
        return;
    };
    let (_origin, origin_port) = lab.origin(None);
    let proxy = lab.proxy(&["--resolve", "origin.test=10.0.2.2"]);
    scenario::get_by_address_and_by_resolved_name(&proxy, origin_port);
    // SIGTERM stops it cleanly: exit status 0, and the device is closed.
    stop_cleanly(proxy);
}

#[test]
#[cfg_attr(
    any(smoltalk_no_netns, smoltalk_no_curl),
    ignore = "needs root, /dev/net/tun, ip, ping, python3, curl and openssl (a TUN device in a network namespace)"
)]
fn head_then_get_and_keep_alive_reuse_both_connections() {
    let Some(lab) = Lab::new("head_then_get_and_keep_alive_reuse_both_connections") else {
        return;
    };
    let (_origin, origin_port) = lab.origin(None);
    let proxy = lab.proxy(&[]);
    scenario::head_has_length_but_no_body_and_the_connection_stays_usable(&proxy, origin_port);
    // Keep-alive: a small and a 1 MiB response on one client connection and one origin connection, after the
    // HEAD and GET above.
    scenario::keep_alive_reuses_the_client_and_the_origin_connection(&proxy, origin_port, 2);
    stop_cleanly(proxy);
}

#[test]
#[cfg_attr(
    any(smoltalk_no_netns, smoltalk_no_curl),
    ignore = "needs root, /dev/net/tun, ip, ping, python3, curl and openssl (a TUN device in a network namespace)"
)]
fn post_put_chunked_and_2_mib_bodies_reach_the_origin_byte_exact() {
    let Some(lab) = Lab::new("post_put_chunked_and_2_mib_bodies_reach_the_origin_byte_exact")
    else {
        return;
    };
    let (_origin, origin_port) = lab.origin(None);
    let proxy = lab.proxy(&[]);
    scenario::post_put_chunked_and_2_mib_bodies_reach_the_origin_byte_exact(
        &proxy,
        origin_port,
        "nsproxy",
    );
    stop_cleanly(proxy);
}

#[test]
#[cfg_attr(
    any(smoltalk_no_netns, smoltalk_no_curl),
    ignore = "needs root, /dev/net/tun, ip, ping, python3, curl and openssl (a TUN device in a network namespace)"
)]
fn chunked_response_with_its_framing_and_one_mebibyte_byte_exact() {
    let Some(lab) = Lab::new("chunked_response_with_its_framing_and_one_mebibyte_byte_exact")
    else {
        return;
    };
    let (_origin, origin_port) = lab.origin(None);
    let proxy = lab.proxy(&[]);
    scenario::chunked_response_arrives_intact_and_with_its_framing(&proxy, origin_port);
    scenario::one_mebibyte_body_is_byte_exact(&proxy, origin_port);
    stop_cleanly(proxy);
}

#[test]
#[cfg_attr(
    any(smoltalk_no_netns, smoltalk_no_curl),
    ignore = "needs root, /dev/net/tun, ip, ping, python3, curl and openssl (a TUN device in a network namespace)"
)]
fn hop_by_hop_headers_are_removed_and_via_added_at_the_origin() {
    let Some(lab) = Lab::new("hop_by_hop_headers_are_removed_and_via_added_at_the_origin") else {
        return;
    };
    let (_origin, origin_port) = lab.origin(None);
    let proxy = lab.proxy(&[]);
    scenario::hop_by_hop_headers_are_removed_and_end_to_end_ones_kept(&proxy, origin_port);
    stop_cleanly(proxy);
}

#[test]
#[cfg_attr(
    any(smoltalk_no_netns, smoltalk_no_curl),
    ignore = "needs root, /dev/net/tun, ip, ping, python3, curl and openssl (a TUN device in a network namespace)"
)]
fn connect_tunnels_every_byte_both_ways_and_https_through_a_tunnel() {
    let Some(lab) = Lab::new("connect_tunnels_every_byte_both_ways_and_https_through_a_tunnel")
    else {
        return;
    };
    let (dir, cert, key) = self_signed_cert();
    let (_https, https_port) = lab.origin(Some((&cert, &key)));
    let (_echo, echo_port) = start_echo(&lab.net);
    let proxy = lab.proxy(&[
        "--resolve",
        "origin.test=10.0.2.2",
        "--connect-ports",
        &format!("443,{echo_port},{https_port}"),
    ]);

    // 256 KiB of every byte value through a tunnel to the echo server; the first bytes ride right behind the
    // head, as a TLS ClientHello would.
    scenario::connect_tunnels_every_byte_both_ways(&proxy, echo_port);

    // HTTPS to a name from --resolve, through a CONNECT tunnel.
    scenario::https_through_a_connect_tunnel_to_a_resolved_name(&proxy, https_port, &dir, &cert);
    stop_cleanly(proxy);
}

#[test]
#[cfg_attr(
    any(smoltalk_no_netns, smoltalk_no_curl),
    ignore = "needs root, /dev/net/tun, ip, ping, python3, curl and openssl (a TUN device in a network namespace)"
)]
fn names_resolve_through_the_proxys_dns_socket_and_resolve_comes_first() {
    let Some(lab) = Lab::new("names_resolve_through_the_proxys_dns_socket_and_resolve_comes_first")
    else {
        return;
    };
    let (_origin, origin_port) = lab.origin(None);
    // The DNS server knows `dns-only.test` (the origin) and maps `both.test` elsewhere (10.0.2.99, where
    // nothing answers); --resolve maps `both.test` to the origin.
    let (_dns, queries) = lab.dns(&["dns-only.test=10.0.2.2", "both.test=10.0.2.99"]);
    let proxy = lab.proxy(&[
        "--dns",
        "10.0.2.2",
        "--resolve",
        "both.test=10.0.2.2",
        "--timeout",
        "5",
    ]);

    // Known only to the DNS server: looked up through the proxy's DNS socket.
    let out = curl_ok(
        &proxy,
        &[&format!("http://dns-only.test:{origin_port}/small")],
    );
    assert_eq!(stdout(&out), SMALL);
    // Unknown to everyone: NXDOMAIN, 502.
    let out = curl_ok(
        &proxy,
        &["-i", &format!("http://unknown.test:{origin_port}/small")],
    );
    assert_error_page(&out.stdout, "502 Bad Gateway");
    assert!(
        stdout(&out).contains("name does not resolve"),
        "{}",
        stdout(&out)
    );
    // --resolve comes first: the DNS server's answer (10.0.2.99) is never asked for.
    let out = curl_ok(&proxy, &[&format!("http://both.test:{origin_port}/small")]);
    assert_eq!(stdout(&out), SMALL);

    let queries = queries.lock().unwrap().clone();
    assert!(queries.contains("query dns-only.test\n"), "{queries}");
    assert!(queries.contains("query unknown.test\n"), "{queries}");
    assert!(!queries.contains("both.test"), "{queries}");
    let seen = lab.seen(origin_port);
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(
        seen[0].contains(&format!("\r\nHost: dns-only.test:{origin_port}\r\n")),
        "{}",
        seen[0]
    );
    assert!(
        seen[1].contains(&format!("\r\nHost: both.test:{origin_port}\r\n")),
        "{}",
        seen[1]
    );
    proxy.wait_log(&[
        &format!("From 10.0.2.2 Request GET http://dns-only.test:{origin_port}/small HTTP/1.1"),
        &format!(
            "Response HTTP/1.1 502 Bad Gateway (GET http://unknown.test:{origin_port}/small HTTP/1.1"
        ),
    ]);
    stop_cleanly(proxy);
}

#[test]
#[cfg_attr(
    any(smoltalk_no_netns, smoltalk_no_curl),
    ignore = "needs root, /dev/net/tun, ip, ping, python3, curl and openssl (a TUN device in a network namespace)"
)]
fn malformed_hostile_and_unsupported_requests_are_400_414_431_501_505_508() {
    let Some(lab) =
        Lab::new("malformed_hostile_and_unsupported_requests_are_400_414_431_501_505_508")
    else {
        return;
    };
    let (_origin, origin_port) = lab.origin(None);
    let proxy = lab.proxy(&[]);
    scenario::malformed_requests_are_400_and_an_unknown_version_505(&proxy);
    scenario::request_line_over_8_kib_is_414_and_head_over_8_kib_is_431(&proxy);
    scenario::unsupported_method_and_transfer_coding_are_501(&proxy, origin_port);
    // Every RFC 9112 rule of the hardening issue (each is a test of its own on the kernel proxy, tests/hostile.rs).
    for rule in scenario::STRICT_RULES {
        scenario::strict_rule_holds(&proxy, origin_port, rule.name);
    }
    stop_cleanly(proxy);
}

#[test]
#[cfg_attr(
    any(smoltalk_no_netns, smoltalk_no_curl),
    ignore = "needs root, /dev/net/tun, ip, ping, python3, curl and openssl (a TUN device in a network namespace)"
)]
fn clients_destinations_and_connect_ports_not_allowed_are_403() {
    let Some(lab) = Lab::new("clients_destinations_and_connect_ports_not_allowed_are_403") else {
        return;
    };
    let (_origin, origin_port) = lab.origin(None);

    // A client outside --allow.
    let proxy = lab.proxy(&["--allow", "10.9.9.9/32"]);
    scenario::client_not_allowed_is_403(&proxy, origin_port);
    stop_cleanly(proxy);

    // A destination outside --allow-dest, by address and by a --resolve name; CONNECT to a port not listed.
    let proxy = lab.proxy(&[
        "--allow-dest",
        "10.0.2.3/32",
        "--resolve",
        "origin.test=10.0.2.2",
    ]);
    scenario::destination_not_allowed_is_403(&proxy, origin_port);
    let (_echo, echo_port) = start_echo(&lab.net);
    scenario::connect_to_a_port_not_listed_is_403(&proxy, "10.0.2.3", echo_port);
    assert!(lab.seen(origin_port).is_empty());
    stop_cleanly(proxy);
}

#[test]
#[cfg_attr(
    any(smoltalk_no_netns, smoltalk_no_curl),
    ignore = "needs root, /dev/net/tun, ip, ping, python3, curl and openssl (a TUN device in a network namespace)"
)]
fn half_a_head_is_408_and_a_slow_origin_504_after_the_timeout() {
    let Some(lab) = Lab::new("half_a_head_is_408_and_a_slow_origin_504_after_the_timeout") else {
        return;
    };
    let (_origin, origin_port) = lab.origin(None);
    let proxy = lab.proxy(&["--timeout", "1"]);
    // Both at once: each waits out the same 1 s timeout.
    std::thread::scope(|scope| {
        scope.spawn(|| scenario::half_a_head_times_out_with_408(&proxy));
        scope.spawn(|| scenario::an_origin_slower_than_the_timeout_is_504(&proxy, origin_port));
    });
    stop_cleanly(proxy);
}

#[test]
#[cfg_attr(
    any(smoltalk_no_netns, smoltalk_no_curl),
    ignore = "needs root, /dev/net/tun, ip, ping, python3, curl and openssl (a TUN device in a network namespace)"
)]
fn refused_and_silent_origins_are_502() {
    let Some(lab) = Lab::new("refused_and_silent_origins_are_502") else {
        return;
    };
    let (_origin, origin_port) = lab.origin(None);
    let proxy = lab.proxy(&[]);
    // Nothing listens on port 1 in the namespace: the kernel answers smoltcp's SYN with RST.
    scenario::refused_and_silent_origins_are_502(&proxy, origin_port, 1);
    stop_cleanly(proxy);
}

#[test]
#[cfg_attr(
    any(smoltalk_no_netns, smoltalk_no_curl),
    ignore = "needs root, /dev/net/tun, ip, ping, python3, curl and openssl (a TUN device in a network namespace)"
)]
fn over_the_connection_cap_is_503_and_the_slot_comes_back() {
    let Some(lab) = Lab::new("over_the_connection_cap_is_503_and_the_slot_comes_back") else {
        return;
    };
    let (_origin, origin_port) = lab.origin(None);
    let proxy = lab.proxy(&["--max-connections", "1"]);
    scenario::over_the_connection_cap_is_503_and_the_slot_comes_back(
        &proxy,
        origin_port,
        "Refused 503 Service Unavailable (all 1 proxy connections are busy)",
    );
    stop_cleanly(proxy);
}

#[test]
#[cfg_attr(
    any(smoltalk_no_netns, smoltalk_no_curl),
    ignore = "needs root, /dev/net/tun, ip, ping, python3, curl and openssl (a TUN device in a network namespace)"
)]
fn requests_to_the_proxy_itself_or_through_it_again_are_508() {
    let Some(lab) = Lab::new("requests_to_the_proxy_itself_or_through_it_again_are_508") else {
        return;
    };
    let (_origin, origin_port) = lab.origin(None);
    let proxy = lab.proxy(&[]);
    scenario::requests_that_would_loop_are_508(&proxy, origin_port);
    stop_cleanly(proxy);
}

#[test]
#[cfg_attr(
    any(smoltalk_no_netns, smoltalk_no_curl),
    ignore = "needs root, /dev/net/tun, ip, ping, python3, curl and openssl (a TUN device in a network namespace)"
)]
fn pipelining_http_1_0_and_bytes_past_a_response_never_answering_the_next_request() {
    let Some(lab) =
        Lab::new("pipelining_http_1_0_and_bytes_past_a_response_never_answering_the_next_request")
    else {
        return;
    };
    let (_origin, origin_port) = lab.origin(None);
    let proxy = lab.proxy(&[]);
    scenario::pipelined_requests_and_an_http_1_0_client(&proxy, origin_port);
    // After the pipeline's three requests and the HTTP/1.0 one.
    scenario::bytes_an_origin_sends_past_its_response_never_answer_the_next_request(
        &proxy,
        origin_port,
        4,
    );
    stop_cleanly(proxy);
}

#[test]
#[cfg_attr(
    any(smoltalk_no_netns, smoltalk_no_curl),
    ignore = "needs root, /dev/net/tun, ip, ping, python3, curl and openssl (a TUN device in a network namespace)"
)]
fn a_full_pool_refuses_a_thousand_clients_without_stalling_and_idle_ones_get_408() {
    const POOL: usize = 4;
    const EXTRA: usize = 1000;
    let Some(lab) =
        Lab::new("a_full_pool_refuses_a_thousand_clients_without_stalling_and_idle_ones_get_408")
    else {
        return;
    };
    // Over a thousand sockets are held below.
    let _ = smoltalk::sys::raise_open_files_limit();
    let (_origin, origin_port) = lab.origin(None);
    let proxy = lab.proxy(&["--max-connections", "4", "--timeout", "10"]);
    let pid = proxy.server.child.id();

    // One upload in progress (half of a 1 MiB body sent, so it cannot finish while the rest waits) and POOL - 1
    // idle clients fill the pool.
    let body = big_body();
    let mut transfer = proxy.connect();
    transfer
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let head = format!(
        "POST http://{KERNEL_HOST}:{origin_port}/echo HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    transfer.write_all(head.as_bytes()).expect("send");
    transfer
        .write_all(&body[..body.len() / 2])
        .expect("the first half of the upload");
    let opened = Instant::now();
    let mut idle: Vec<_> = (1..POOL).map(|_| proxy.connect()).collect();
    for stream in &idle {
        stream.set_nonblocking(true).unwrap();
    }
    let rss_before = rss_kib(pid);

    // 1,000 more clients, one after another: each is answered 503 and closed by a refuser (one each: a refused
    // client that holds its connection open holds its refuser until the timeout), never reset, for there is
    // room for 1,024 refusers. None waits for the pool.
    let addr = proxy.addr();
    let (mut answered, refused) = lab.net.inside(move || {
        let (mut answered, mut refused) = (Vec::new(), 0);
        for i in 0..EXTRA {
            match TcpStream::connect_timeout(&addr, Duration::from_secs(10)) {
                Ok(stream) => {
                    stream.set_nonblocking(true).unwrap();
                    answered.push(stream);
                }
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => refused += 1,
                Err(e) => panic!("client {i} over the pool: {e}"),
            }
        }
        (answered, refused)
    });
    let mut received: Vec<Received> = answered.iter().map(|_| Received::default()).collect();
    let started = Instant::now();
    while received.iter().any(|r| !r.ended) {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{} clients over the pool were neither refused nor answered",
            received.iter().filter(|r| !r.ended).count()
        );
        for (stream, got) in answered.iter_mut().zip(&mut received) {
            read_available(stream, got);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let pages = received
        .iter()
        .filter(|r| {
            String::from_utf8_lossy(&r.bytes).starts_with("HTTP/1.1 503 Service Unavailable\r\n")
        })
        .count();
    for got in &received {
        if !got.bytes.is_empty() {
            assert_error_page(&got.bytes, "503 Service Unavailable");
        }
    }
    assert!(pages > 0, "no client over the pool was answered 503");
    assert_eq!(
        refused + answered.len(),
        EXTRA,
        "every client was refused or answered"
    );
    assert_eq!(refused, 0, "clients over the pool were reset at the SYN");
    let rss_after = rss_kib(pid);

    // The upload in progress goes on, and its echo comes back byte-exact.
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

    // The idle clients, which never sent a request, get 408 at the timeout and are closed.
    let mut idle_received: Vec<Received> = idle.iter().map(|_| Received::default()).collect();
    while idle_received.iter().any(|r| !r.ended) {
        assert!(
            opened.elapsed() < Duration::from_secs(30),
            "idle clients still open 20 s after the 10 s timeout"
        );
        for (stream, got) in idle.iter_mut().zip(&mut idle_received) {
            read_available(stream, got);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for got in &idle_received {
        assert_error_page(&got.bytes, "408 Request Timeout");
        assert!(got.ended_at.expect("ended") - opened >= Duration::from_secs(10));
    }
    // The pool stays at its cap: a thousand clients more cost the proxy only their refusers (3 KiB of buffers
    // and a socket each, at most 1,024 of them: about 4 MiB), and pages touched for the first time.
    assert!(
        rss_after <= rss_before + 2048 + 4096,
        "RSS grew from {rss_before} to {rss_after} KiB"
    );
    let _ = writeln!(
        std::io::stderr(),
        "smoltcp pool of {POOL}: {EXTRA} more clients: {refused} refused at the SYN, {pages} answered 503; proxy \
         RSS {rss_before} KiB before, {rss_after} KiB after"
    );
    stop_cleanly(proxy);
}

/// The smoltcp proxy, as the kernel-stack designs in `tests/proxy.rs`: a client that sends its whole upload
/// before it reads still gets the answer that came first, and a tunnel busy one way outlives `--tunnel-idle`
/// while an idle one closes at it.
#[test]
#[cfg_attr(
    any(smoltalk_no_netns, smoltalk_no_curl),
    ignore = "needs root, /dev/net/tun, ip, ping, python3, curl and openssl (a TUN device in a network namespace)"
)]
fn early_answers_reach_uploading_clients_and_one_way_tunnels_stay_open() {
    let Some(lab) = Lab::new("early_answers_reach_uploading_clients_and_one_way_tunnels_stay_open")
    else {
        return;
    };
    let (_origin, origin_port) = lab.origin(None);
    let (_drip, drip_port) = start_drip(&lab.net);
    let proxy = lab.proxy(&[
        "--connect-ports",
        &drip_port.to_string(),
        "--tunnel-idle",
        "1",
    ]);
    scenario::an_early_answer_reaches_a_client_that_is_still_uploading(&proxy, origin_port);
    scenario::interim_answers_reach_a_client_that_is_still_uploading(&proxy, origin_port);
    scenario::a_tunnel_busy_one_way_outlives_the_idle_limit(&proxy, drip_port);
    stop_cleanly(proxy);
}
