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

use std::io::{BufRead, BufReader, Write};
use std::net::Shutdown;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use smoltalk::netns::Namespace;
use support::proxy::*;
use support::*;

/// Where the smoltcp proxy listens (its default `--ip` and `--port`).
const PROXY_HOST: &str = "10.0.2.15";
/// The kernel's side of the device, where the origins, curl and the DNS server are.
const KERNEL_HOST: &str = "10.0.2.2";

/// A DNS server for the tests: listens on UDP port 53 of the address given first, answers A queries for the
/// names given as `NAME=IP` arguments, NXDOMAIN for anything else, and prints `query NAME` for each query.
const PY_DNS: &str = r#"
import socket, sys
names = dict(arg.split('=') for arg in sys.argv[2:])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 53))
print('dns ready', flush=True)
while True:
    q, a = s.recvfrom(512)
    i, labels = 12, []
    while q[i]:
        labels.append(q[i + 1:i + 1 + q[i]].decode()); i += 1 + q[i]
    qtype, qend = q[i + 1:i + 3], i + 5
    ip = names.get('.'.join(labels).lower())
    print('query', '.'.join(labels), flush=True)
    if ip and qtype == b'\x00\x01':
        r = q[:2] + b'\x81\x80\x00\x01\x00\x01\x00\x00\x00\x00' + q[12:qend] + b'\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04' + socket.inet_aton(ip)
    else:
        r = q[:2] + b'\x81\x83\x00\x01\x00\x00\x00\x00\x00\x00' + q[12:qend]
    s.sendto(r, a)
"#;

/// One test's network namespace: loopback and a TUN device `st0` whose kernel side is 10.0.2.2/24.
struct Lab {
    net: Net,
    // Last, so it is dropped (the namespace deleted) after everything the test started in it.
    ns: Namespace,
}

impl Lab {
    /// A fresh namespace, or `None` (after saying why, or failing under CI) when this machine cannot make one.
    fn new(test: &str) -> Option<Lab> {
        if let Some(reason) = missing_privilege().or_else(|| missing_tool(&["curl", "openssl"])) {
            cannot_run(test, &reason);
            return None;
        }
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "smoltalk-nsproxy-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let ns = Namespace::create(&name).unwrap_or_else(|e| panic!("{test}: {e}"));
        ns.add_device("st0", "tun", "10.0.2.2/24", 1500)
            .unwrap_or_else(|e| panic!("{test}: {e}"));
        Some(Lab {
            net: Net::Namespace(name),
            ns,
        })
    }

    /// `smoltalk proxy --stack tun --dev st0` plus `extra`, at 10.0.2.15:8080.
    fn proxy(&self, extra: &[&str]) -> Proxy {
        let mut args = vec!["proxy", "--stack", "tun", "--dev", "st0"];
        args.extend_from_slice(extra);
        let cmd = self.ns.command(env!("CARGO_BIN_EXE_smoltalk"), &args);
        let proxy = Proxy::start(cmd, PROXY_HOST, self.net.clone());
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
        let mut args = vec!["-c", PY_DNS, KERNEL_HOST];
        args.extend_from_slice(names);
        let mut cmd = self.ns.command("python3", &args);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = cmd.spawn().expect("start the DNS server");
        let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        let ready = lines.next();
        let server = Running { child, port: 53 };
        assert!(
            matches!(&ready, Some(Ok(line)) if line == "dns ready"),
            "the DNS server did not start: {ready:?}"
        );
        let queries = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&queries);
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                let mut all = sink.lock().unwrap();
                all.push_str(&line);
                all.push('\n');
            }
        });
        (server, queries)
    }
}

/// `http://10.0.2.2:PORT/PATH`.
fn at_origin(port: u16, path: &str) -> String {
    format!("http://{KERNEL_HOST}:{port}{path}")
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

    let out = curl_ok(&proxy, &["-i", &at_origin(origin_port, "/small")]);
    let (head, body) = split_head(&out.stdout);
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert_eq!(body, SMALL.as_bytes());
    let via = header(&head, "via").unwrap_or_else(|| panic!("no Via in {head}"));
    assert!(via.starts_with("1.1 smoltalk-"), "{via}");
    assert_eq!(header(&head, "content-length"), Some("22"));

    // A name the proxy knows from --resolve (no DNS server runs here: it must not be asked).
    let out = curl_ok(
        &proxy,
        &[&format!("http://origin.test:{origin_port}/small")],
    );
    assert_eq!(stdout(&out), SMALL);

    let log = proxy.wait_log(&[
        &format!("From 10.0.2.2 Request GET http://10.0.2.2:{origin_port}/small HTTP/1.1"),
        &format!("From 10.0.2.2 Request GET http://origin.test:{origin_port}/small HTTP/1.1"),
        "To 10.0.2.2 Response HTTP/1.1 200 OK",
    ]);
    assert!(log.contains("INFO"), "{log}");

    // The origin got origin-form requests with the right Host and the proxy's Via, from smoltcp's address.
    let seen = lab.seen(origin_port);
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(
        seen[0].contains("\r\nGET /small HTTP/1.1\r\n"),
        "{}",
        seen[0]
    );
    assert!(
        seen[0].contains(&format!("\r\nHost: 10.0.2.2:{origin_port}\r\n")),
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
    let small = at_origin(origin_port, "/small");
    let big = at_origin(origin_port, "/big");

    // HEAD, then GET on the same connection: a body wrongly expected after HEAD would swallow the next response.
    let out = curl_ok(
        &proxy,
        &["-v", "-I", &small, "--next", "-x", &proxy.url(), &small],
    );
    let (head, rest) = split_head(&out.stdout);
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{}", stdout(&out));
    assert_eq!(header(&head, "content-length"), Some("22"));
    assert_eq!(rest, SMALL.as_bytes(), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("Re-using existing connection"),
        "{}",
        stderr(&out)
    );

    // Keep-alive: a small and a 1 MiB response on one client connection and one origin connection.
    let out = curl_ok(&proxy, &["-v", &small, &big]);
    let verbose = stderr(&out);
    assert!(
        verbose.contains("Re-using existing connection"),
        "{verbose}"
    );
    assert_eq!(
        verbose.matches("Connected to 10.0.2.15").count(),
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
        &format!("From 10.0.2.2 Request HEAD {small} HTTP/1.1"),
        &format!("From 10.0.2.2 Request GET {big} HTTP/1.1"),
    ]);
    let seen = lab.seen(origin_port);
    assert_eq!(seen.len(), 4, "{seen:?}");
    assert!(seen[0].contains("\r\nHEAD /small HTTP/1.1\r\n"), "{seen:?}");
    assert!(seen[1].contains("\r\nGET /small HTTP/1.1\r\n"), "{seen:?}");
    // Both keep-alive requests reached the origin on one connection of the proxy's (the same peer port).
    assert_eq!(peer(&seen[2]), peer(&seen[3]), "{seen:?}");
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
    let url = at_origin(origin_port, "/echo");

    let small = every_byte(3);
    let small_file = temp_file("nsproxy-post-small", &small);
    let body_arg = format!("@{}", small_file.display());
    let out = curl_ok(&proxy, &["--data-binary", &body_arg, &url]);
    assert!(
        out.stdout == small,
        "POST: {} bytes back of {}",
        out.stdout.len(),
        small.len()
    );
    let out = curl_ok(
        &proxy,
        &["-D", "-", "-T", small_file.to_str().unwrap(), &url],
    );
    let (head, body) = final_head(&out.stdout);
    assert_eq!(header(&head, "x-method"), Some("PUT"), "{head}");
    assert!(body == small, "PUT: {} bytes back", body.len());
    let out = curl_ok(
        &proxy,
        &[
            "-H",
            "Transfer-Encoding: chunked",
            "--data-binary",
            &body_arg,
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
    let large_file = temp_file("nsproxy-post-large", &large);
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

    let seen = lab.seen(origin_port);
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
        &format!("From 10.0.2.2 Request POST {url} HTTP/1.1"),
        &format!("From 10.0.2.2 Request PUT {url} HTTP/1.1"),
        "To 10.0.2.2 Response HTTP/1.1 100 Continue",
    ]);
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
    let url = at_origin(origin_port, "/chunked");
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

    let out = curl_ok(&proxy, &[&at_origin(origin_port, "/big")]);
    let expected = big_body();
    assert_eq!(out.stdout.len(), expected.len());
    assert!(out.stdout == expected, "the 1 MiB body differs");
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
            &at_origin(origin_port, "/small"),
        ],
    );
    assert_eq!(stdout(&out), SMALL);
    let seen = lab.seen(origin_port);
    assert_eq!(seen.len(), 1, "{seen:?}");
    let entry = seen[0].to_ascii_lowercase();
    for gone in [
        "\r\nx-drop:",
        "\r\nkeep-alive:",
        "\r\nproxy-authorization:",
        "\r\nte:",
        "\r\nupgrade:",
        "\r\nproxy-connection:",
        "\r\nconnection:",
    ] {
        assert!(
            !entry.contains(gone),
            "{gone:?} reached the origin:\n{}",
            seen[0]
        );
    }
    assert!(entry.contains("\r\nx-keep: 1\r\n"), "{}", seen[0]);
    assert!(entry.contains("\r\nuser-agent: curl/"), "{}", seen[0]);
    assert!(entry.contains("\r\nvia: 1.1 smoltalk-"), "{}", seen[0]);
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
    let data = every_byte(1024);
    let mut stream = proxy.connect();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut first =
        format!("CONNECT 10.0.2.2:{echo_port} HTTP/1.1\r\nHost: 10.0.2.2:{echo_port}\r\n\r\n")
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

    // HTTPS to a name from --resolve, through a CONNECT tunnel.
    let base = format!("https://origin.test:{https_port}");
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
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.stdout == big_body(),
        "1 MiB over TLS: {} bytes",
        out.stdout.len()
    );
    proxy.wait_log(&[
        &format!("From 10.0.2.2 Request CONNECT 10.0.2.2:{echo_port} HTTP/1.1"),
        &format!("From 10.0.2.2 Request CONNECT origin.test:{https_port} HTTP/1.1"),
    ]);
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
fn malformed_oversized_and_unsupported_requests_are_400_414_431_501_505() {
    let Some(lab) =
        Lab::new("malformed_oversized_and_unsupported_requests_are_400_414_431_501_505")
    else {
        return;
    };
    let (_origin, origin_port) = lab.origin(None);
    let proxy = lab.proxy(&[]);
    for request in [
        &b"\x01\x02 not http at all\r\n\r\n"[..],
        b"GET http://exa!mple/ HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET http://exa mple/ HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET http://user@10.0.2.2/ HTTP/1.1\r\n\r\n",
        b"GET http://10.0.2.2:99999/ HTTP/1.1\r\n\r\n",
        b"GET /no-host HTTP/1.1\r\n\r\n",
        // Content-Length and Transfer-Encoding together is how requests are smuggled.
        b"POST http://10.0.2.2:1/ HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc",
    ] {
        assert_raw_refusal(&proxy, request, "400 Bad Request");
    }
    assert_raw_refusal(
        &proxy,
        b"GET http://10.0.2.2:1/ HTTP/2.0\r\n\r\n",
        "505 HTTP Version Not Supported",
    );

    // 414: a whole head with a request line longer than the proxy takes, and a request line that never ends.
    let long_path = "a".repeat(9 * 1024);
    let request = format!("GET http://10.0.2.2:1/{long_path} HTTP/1.1\r\nHost: 10.0.2.2:1\r\n\r\n");
    assert_raw_refusal(&proxy, request.as_bytes(), "414 URI Too Long");
    let request = format!("GET http://10.0.2.2:1/{}", "b".repeat(20 * 1024));
    assert_raw_refusal(&proxy, request.as_bytes(), "414 URI Too Long");
    // 431: one 9 KiB header, and more header lines than the proxy takes.
    let request = format!(
        "GET http://10.0.2.2:1/ HTTP/1.1\r\nX-Big: {}\r\n\r\n",
        "c".repeat(9 * 1024)
    );
    let too_large = "431 Request Header Fields Too Large";
    assert_raw_refusal(&proxy, request.as_bytes(), too_large);
    let many: String = (0..100).map(|i| format!("X-H{i}: {i}\r\n")).collect();
    let request = format!("GET http://10.0.2.2:1/ HTTP/1.1\r\n{many}\r\n");
    assert_raw_refusal(&proxy, request.as_bytes(), too_large);

    // 501: a method, a transfer coding and a scheme the proxy does not handle.
    let out = curl_ok(
        &proxy,
        &["-i", "-X", "TRACE", &at_origin(origin_port, "/small")],
    );
    assert_error_page(&out.stdout, "501 Not Implemented");
    assert!(stdout(&out).contains("The proxy does not forward that method"));
    let request = format!(
        "POST http://10.0.2.2:{origin_port}/echo HTTP/1.1\r\nHost: 10.0.2.2:{origin_port}\r\n\
         Transfer-Encoding: gzip\r\n\r\nnot really gzip"
    );
    let response = proxy.exchange(request.as_bytes());
    assert_error_page(&response, "501 Not Implemented");
    assert!(String::from_utf8_lossy(&response).contains("transfer coding"));
    let request = format!("GET https://10.0.2.2:{origin_port}/small HTTP/1.1\r\n\r\n");
    assert_raw_refusal(&proxy, request.as_bytes(), "501 Not Implemented");
    assert!(lab.seen(origin_port).is_empty());
    proxy.wait_log(&[
        "To 10.0.2.2 Response HTTP/1.1 400 Bad Request",
        "To 10.0.2.2 Response HTTP/1.1 414 URI Too Long",
        "To 10.0.2.2 Response HTTP/1.1 501 Not Implemented",
    ]);
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
    let small = at_origin(origin_port, "/small");

    // A client outside --allow.
    let proxy = lab.proxy(&["--allow", "10.9.9.9/32"]);
    let out = curl_ok(&proxy, &["-i", &small]);
    assert_error_page(&out.stdout, "403 Forbidden");
    assert!(stdout(&out).contains("Your address may not use this proxy"));
    proxy.wait_log(&["From 10.0.2.2 Refused 403 Forbidden"]);
    stop_cleanly(proxy);

    // A destination outside --allow-dest, by address and by a --resolve name; CONNECT to a port not listed.
    let proxy = lab.proxy(&[
        "--allow-dest",
        "10.0.2.3/32",
        "--resolve",
        "origin.test=10.0.2.2",
    ]);
    for url in [
        small.clone(),
        format!("http://origin.test:{origin_port}/small"),
    ] {
        let out = curl_ok(&proxy, &["-i", &url]);
        assert_error_page(&out.stdout, "403 Forbidden");
        assert!(stdout(&out).contains("The proxy may not connect to that address"));
    }
    let (_echo, echo_port) = start_echo(&lab.net);
    let request =
        format!("CONNECT 10.0.2.3:{echo_port} HTTP/1.1\r\nHost: 10.0.2.3:{echo_port}\r\n\r\n");
    let response = proxy.exchange(request.as_bytes());
    assert_error_page(&response, "403 Forbidden");
    assert!(String::from_utf8_lossy(&response).contains("The proxy does not tunnel to that port"));
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
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let started = Instant::now();
            assert_raw_refusal(
                &proxy,
                b"GET http://10.0.2.2:1/ HTTP/1.1\r\nHost: 10.0",
                "408 Request Timeout",
            );
            let took = started.elapsed();
            assert!(
                took >= Duration::from_millis(900) && took < Duration::from_secs(5),
                "408 after {took:?}"
            );
        });
        scope.spawn(|| {
            let started = Instant::now();
            let out = curl_ok(&proxy, &["-i", &at_origin(origin_port, "/sleep")]);
            // The proxy gave up after its 1 s rather than wait the origin's 3 s.
            assert_error_page(&out.stdout, "504 Gateway Timeout");
            let took = started.elapsed();
            assert!(
                took >= Duration::from_millis(900) && took < Duration::from_millis(2900),
                "504 after {took:?}"
            );
        });
    });
    proxy.wait_log(&[
        "To 10.0.2.2 Response HTTP/1.1 408 Request Timeout",
        "To 10.0.2.2 Response HTTP/1.1 504 Gateway Timeout",
    ]);
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
    let out = curl_ok(&proxy, &["-i", &at_origin(1, "/")]);
    assert_error_page(&out.stdout, "502 Bad Gateway");
    assert!(stdout(&out).contains("refused the connection"));

    let out = curl_ok(&proxy, &["-i", &at_origin(origin_port, "/close")]);
    assert_error_page(&out.stdout, "502 Bad Gateway");
    assert!(stdout(&out).contains("closed the connection before its response was complete"));
    proxy.wait_log(&[
        "To 10.0.2.2 Response HTTP/1.1 502 Bad Gateway (GET http://10.0.2.2:1/ HTTP/1.1",
        &format!(
            "To 10.0.2.2 Response HTTP/1.1 502 Bad Gateway (GET http://10.0.2.2:{origin_port}/close HTTP/1.1"
        ),
    ]);
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
    let url = at_origin(origin_port, "/small");
    let held = proxy.connect();
    let out = curl_ok(&proxy, &["-i", &url]);
    assert_error_page(&out.stdout, "503 Service Unavailable");
    assert_eq!(header(&split_head(&out.stdout).0, "retry-after"), Some("1"));
    proxy.wait_log(&[
        "From 10.0.2.2 Refused 503 Service Unavailable (all 1 proxy connections are busy)",
    ]);
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
    // The proxy's own address and port.
    let out = curl_ok(&proxy, &["-i", "http://10.0.2.15:8080/"]);
    assert_error_page(&out.stdout, "508 Loop Detected");
    // A request that already came through this proxy (its Via pseudonym, learnt from a normal response).
    let via = via_of(&proxy, origin_port);
    let small = at_origin(origin_port, "/small");
    let out = curl_ok(
        &proxy,
        &["-i", "-H", &format!("Via: 1.0 other, {via}"), &small],
    );
    assert_error_page(&out.stdout, "508 Loop Detected");
    assert_eq!(
        lab.seen(origin_port).len(),
        1,
        "only the normal request reached the origin"
    );
    // Another proxy's Via is no loop.
    let out = curl_ok(&proxy, &["-H", "Via: 1.1 smoltalk-00000000", &small]);
    assert_eq!(stdout(&out), SMALL);
    proxy.wait_log(&[
        "To 10.0.2.2 Response HTTP/1.1 508 Loop Detected (GET http://10.0.2.15:8080/ HTTP/1.1",
    ]);
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
    // Three requests in one write, the last asking to close: three responses in order, then the close.
    let get = |path: &str, last: bool| {
        let close = if last { "Connection: close\r\n" } else { "" };
        format!("GET http://10.0.2.2:{origin_port}{path} HTTP/1.1\r\nHost: 10.0.2.2:{origin_port}\r\n{close}\r\n")
    };
    let pipeline = [
        get("/small", false),
        get("/chunked", false),
        get("/small", true),
    ]
    .concat();
    let reply = proxy.exchange(pipeline.as_bytes());
    let (head1, rest) = split_head(&reply);
    assert!(head1.starts_with("HTTP/1.1 200 OK\r\n"), "{head1}");
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

    // HTTP/1.0 without keep-alive: the proxy says it closes, and does; the origin gets HTTP/1.0 too (so it never
    // answers with a chunked body the client could not read).
    let request = format!("GET http://10.0.2.2:{origin_port}/small HTTP/1.0\r\n\r\n");
    let reply = proxy.exchange(request.as_bytes());
    let (head, body) = split_head(&reply);
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert_eq!(header(&head, "connection"), Some("close"), "{head}");
    assert_eq!(body, SMALL.as_bytes());
    let seen = lab.seen(origin_port);
    assert_eq!(seen.len(), 4, "{seen:?}");
    assert!(
        seen[3].contains("\r\nGET /small HTTP/1.0\r\n"),
        "{}",
        seen[3]
    );
    assert!(seen[3].contains("\r\nVia: 1.0 smoltalk-"), "{}", seen[3]);

    // Two requests on one client connection, the first answered with a forged second response behind it: the
    // second request must get its own response from a new origin connection.
    let extra = at_origin(origin_port, "/extra");
    let small = at_origin(origin_port, "/small");
    let out = curl_ok(&proxy, &["-v", &extra, &small]);
    let verbose = stderr(&out);
    assert!(
        verbose.contains("Re-using existing connection"),
        "{verbose}"
    );
    assert_eq!(
        verbose.matches("Connected to 10.0.2.15").count(),
        1,
        "curl had to retry: {verbose}"
    );
    assert_eq!(stdout(&out), format!("first\n{SMALL}"));
    let seen = lab.seen(origin_port);
    assert_eq!(seen.len(), 6, "{seen:?}");
    assert_ne!(
        peer(&seen[4]),
        peer(&seen[5]),
        "the origin connection was kept: {seen:?}"
    );
    stop_cleanly(proxy);
}
