//! IPv6 end to end, in network namespaces each test creates and deletes: the lab's classic clients, written for
//! `AF_INET6` in Python, get uppercase answers from smoltalk on the kernel stack (`::1`, in a namespace with only
//! loopback) and from smoltcp on TUN and TAP (fd00:2::15; the kernel's side of the device is fd00:2::2), 8 MiB
//! of them byte-exact with smoltcp's IPv6 segments joined into super-packets on the way to the kernel; ping6
//! is answered; smoltcp's clients reach kernel servers over IPv6, by address and by a name with only an AAAA
//! record; curl gets pages through the smoltcp and the kernel proxies from an IPv6 origin and from a name with
//! only an IPv6 address; and tshark reads smoltcp's IPv6 capture. Nothing leaves the namespaces (no route out,
//! no forwarding, names answered by the test's own DNS server or hosts file).
//!
//! Needs root (namespaces, TUN/TAP), `ip`, `ping`, `python3`, and `curl` or `tshark` where used: skips with a
//! reason elsewhere, fails under `CI=true`.

mod support;

use std::path::PathBuf;

use support::proxy::*;
use support::*;

/// The largest UDP payload in one IPv6 packet at MTU 1500 (1500 - 40 - 8): smoltcp 0.14 neither fragments nor
/// reassembles IPv6, so a UDP request over IPv6 must fit one packet.
const UDP6_MAX: usize = 1452;

/// Runs the IPv6 TCP client (8 KiB, every byte value) or UDP client ([`UDP6_MAX`] bytes) in `ns` against
/// `host` port `port`, and checks the uppercase replies.
fn python_clients_get_uppercase(ns: &Namespace, host: &str, port: u16, what: &str, udp: bool) {
    let len = if udp { UDP6_MAX } else { 32 * 256 };
    let data: Vec<u8> = (0..len).map(|i| (i % 256) as u8).collect();
    let path = temp_file(&format!("{what}-{}", ns.name()), &data);
    // The classic clients of tests/support, their sockets made with AF_INET6.
    let script = match udp {
        true => PY_UDP_CLIENT,
        false => PY_SEND_ONCE_READ_ONCE,
    };
    let port = port.to_string();
    let out = run(ns.command(
        "python3",
        &["-c", script, host, &port, path.to_str().unwrap(), "6"],
    ));
    let _ = std::fs::remove_file(&path);
    assert!(out.status.success(), "{what}: {}", stderr(&out));
    assert!(
        out.stdout == upper(&data),
        "{what}: {} bytes back, not the {} sent in uppercase",
        out.stdout.len(),
        data.len()
    );
    if udp {
        assert!(
            stderr(&out).contains(&format!("from {host}")),
            "{what}: {}",
            stderr(&out)
        );
    }
}

fn smoltcp_servers_answer_ipv6_clients(medium: &str) {
    let test = format!("smoltcp_servers_answer_ipv6_clients_on_{medium}");
    let Some(ns) = namespace_or_skip(&test, "ns6", &[]) else {
        return;
    };
    add_st0_dual(&ns, medium);
    let stack = ["--stack", medium, "--dev", "st0"];
    for (command, udp) in [("tcp-server", false), ("udp-server", true)] {
        let mut args = vec![command];
        args.extend_from_slice(&stack);
        let (mut server, port) = start_server(smoltalk_in(&ns, &args), command);
        python_clients_get_uppercase(&ns, "fd00:2::15", port, &format!("{medium} {command}"), udp);
        // IPv4 still answers on the same server (dual stack).
        let client = if udp { "udp-client" } else { "tcp-client" };
        let out = run(smoltalk_in(&ns, &[client, "10.0.2.15", "12000", "four"]));
        assert_eq!(stdout(&out), "10.0.2.15 > FOUR\n", "{}", stderr(&out));
        assert!(
            terminate(&mut server),
            "{command} on {medium} did not stop cleanly"
        );
    }
    // ping6 (ICMPv6 echo; on TAP after neighbour discovery).
    let mut args = vec!["tcp-server"];
    args.extend_from_slice(&stack);
    let (_server, _) = start_server(smoltalk_in(&ns, &args), "tcp-server");
    let out = run(ns.command("ping", &["-6", "-c", "2", "-W", "2", "fd00:2::15"]));
    assert!(
        stdout(&out).contains("2 received"),
        "ping6: {}",
        stdout(&out)
    );
}

#[test]
#[cfg_attr(
    smoltalk_no_netns,
    ignore = "needs root, /dev/net/tun, ip, ping and python3 (a TUN device in a network namespace)"
)]
fn smoltcp_on_tun_answers_ipv6_clients_and_ping6() {
    smoltcp_servers_answer_ipv6_clients("tun");
}

#[test]
#[cfg_attr(
    smoltalk_no_netns,
    ignore = "needs root, /dev/net/tun, ip, ping and python3 (a TAP device in a network namespace)"
)]
fn smoltcp_on_tap_answers_ipv6_clients_and_ping6_after_neighbour_discovery() {
    smoltcp_servers_answer_ipv6_clients("tap");
}

/// A bulk IPv6 client: connects to `[HOST]:PORT`, sends the file's bytes from one thread while it reads the reply
/// in another (an echo of megabytes would fill both sides' buffers if it sent first), prints the reply.
const PY6_BULK_CLIENT: &str = r#"
import socket, sys, threading
host, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
data = open(path, 'rb').read()
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.settimeout(30)
s.connect((host, port))
sender = threading.Thread(target=s.sendall, args=(data,))
sender.start()
reply = bytearray()
while len(reply) < len(data):
    chunk = s.recv(1 << 20)
    if not chunk:
        break
    reply += chunk
sender.join()
sys.stdout.buffer.write(reply)
s.close()
"#;

/// 8 MiB of every byte value echoed over IPv6 by smoltcp on `medium`, byte-exact; with segmentation offload
/// (the default) its IPv6 segments reach the kernel joined into super-packets (the device layer's coalescer),
/// with `--offload checksum` one MTU at a time.
fn bulk_ipv6_echo_is_byte_exact(medium: &str) {
    let test = format!("bulk_ipv6_echo_is_byte_exact_and_coalesced_on_{medium}");
    let Some(ns) = namespace_or_skip(&test, "ns6b", &[]) else {
        return;
    };
    add_st0_dual(&ns, medium);
    let data: Vec<u8> = (0..8usize << 20).map(|i| (i % 256) as u8).collect();
    let path = temp_file(&format!("bulk6-{}", ns.name()), &data);
    let want = upper(&data);
    // Bytes and packets smoltcp wrote: what the kernel's side of the device received.
    let written = || {
        ns.device_counters("st0", ["rx_bytes", "rx_packets"])
            .unwrap_or_else(|e| panic!("{test}: {e}"))
    };
    for offload in ["segmentation", "checksum"] {
        let (mut server, port) = start_server(
            smoltalk_in(
                &ns,
                &[
                    "tcp-server",
                    "--stack",
                    medium,
                    "--dev",
                    "st0",
                    "--offload",
                    offload,
                ],
            ),
            "tcp-server",
        );
        let [bytes_before, packets_before] = written();
        let port = port.to_string();
        let out = run(ns.command(
            "python3",
            &[
                "-c",
                PY6_BULK_CLIENT,
                "fd00:2::15",
                &port,
                path.to_str().unwrap(),
            ],
        ));
        let [bytes_after, packets_after] = written();
        assert!(out.status.success(), "{test} ({offload}): {}", stderr(&out));
        let first_wrong = out.stdout.iter().zip(&want).position(|(a, b)| a != b);
        assert!(
            out.stdout.len() == want.len() && first_wrong.is_none(),
            "{test} ({offload}): {} bytes back of {}, first wrong at {first_wrong:?}",
            out.stdout.len(),
            want.len()
        );
        assert!(
            terminate(&mut server),
            "{test}: the server did not stop cleanly"
        );
        let average = (bytes_after - bytes_before) / (packets_after - packets_before).max(1);
        let frame_mtu = if medium == "tap" { 1514 } else { 1500 };
        if offload == "segmentation" {
            assert!(
                average > 2 * frame_mtu,
                "{test}: smoltcp's packets averaged {average} bytes: its IPv6 segments were not joined"
            );
        } else {
            assert!(
                average <= frame_mtu,
                "{test}: {average}-byte packets without TSO"
            );
        }
    }
    let _ = std::fs::remove_file(&path);
}

#[test]
#[cfg_attr(
    smoltalk_no_netns,
    ignore = "needs root, /dev/net/tun, ip and python3 (a TUN device in a network namespace)"
)]
fn bulk_ipv6_echo_is_byte_exact_and_coalesced_on_tun() {
    bulk_ipv6_echo_is_byte_exact("tun");
}

#[test]
#[cfg_attr(
    smoltalk_no_netns,
    ignore = "needs root, /dev/net/tun, ip and python3 (a TAP device in a network namespace)"
)]
fn bulk_ipv6_echo_is_byte_exact_and_coalesced_on_tap() {
    bulk_ipv6_echo_is_byte_exact("tap");
}

#[test]
#[cfg_attr(
    smoltalk_no_netns,
    ignore = "needs root, ip and python3 (a network namespace with only loopback)"
)]
fn kernel_servers_answer_ipv6_clients_on_loopback() {
    let test = "kernel_servers_answer_ipv6_clients_on_loopback";
    let Some(ns) = namespace_or_skip(test, "ns6k", &[]) else {
        return;
    };
    for (command, udp) in [("tcp-server", false), ("udp-server", true)] {
        let (_server, port) = start_server(
            // The default address: [::], both families.
            smoltalk_in(&ns, &[command, "--port", "0"]),
            command,
        );
        python_clients_get_uppercase(&ns, "::1", port, &format!("kernel {command}"), udp);
    }
}

#[test]
#[cfg_attr(
    smoltalk_no_netns,
    ignore = "needs root, /dev/net/tun, ip, ping and python3 (a TUN device in a network namespace)"
)]
fn smoltcp_clients_on_tun_reach_kernel_servers_over_ipv6_by_address_and_by_aaaa_name() {
    smoltcp_clients_reach_kernel_servers_over_ipv6("tun");
}

#[test]
#[cfg_attr(
    smoltalk_no_netns,
    ignore = "needs root, /dev/net/tun, ip, ping and python3 (a TAP device in a network namespace)"
)]
fn smoltcp_clients_on_tap_reach_kernel_servers_over_ipv6_after_neighbour_discovery() {
    smoltcp_clients_reach_kernel_servers_over_ipv6("tap");
}

fn smoltcp_clients_reach_kernel_servers_over_ipv6(medium: &str) {
    let test = format!("smoltcp_clients_on_{medium}_reach_kernel_servers_over_ipv6");
    let Some(ns) = namespace_or_skip(&test, "ns6c", &[]) else {
        return;
    };
    add_st0_dual(&ns, medium);
    let (_tcp, tcp_port) = start_server(
        smoltalk_in(&ns, &["tcp-server", "--bind", "fd00:2::2", "--port", "0"]),
        "kernel tcp-server",
    );
    let (_udp, udp_port) = start_server(
        smoltalk_in(&ns, &["udp-server", "--bind", "fd00:2::2", "--port", "0"]),
        "kernel udp-server",
    );
    let (_dns, queries) = start_dns(&ns, "10.0.2.2", &["v6only.test=fd00:2::2"]);
    let stack = ["--stack", medium, "--dev", "st0"];
    for (client, port) in [("tcp-client", tcp_port), ("udp-client", udp_port)] {
        let port = port.to_string();
        for host in ["fd00:2::2", "[fd00:2::2]"] {
            let mut args = vec![client, host, &port, "over ipv6"];
            args.extend_from_slice(&stack);
            let out = run(smoltalk_in(&ns, &args));
            assert!(out.status.success(), "{client} {host}: {}", stderr(&out));
            assert_eq!(stdout(&out), format!("{host} > OVER IPV6\n"));
        }
        // A name with only an AAAA record: looked up through smoltcp's DNS socket, the address said.
        let mut args = vec![client, "v6only.test", &port, "by name"];
        args.extend_from_slice(&stack);
        let out = run(smoltalk_in(&ns, &args));
        assert!(out.status.success(), "{client} by name: {}", stderr(&out));
        assert_eq!(stdout(&out), "v6only.test > BY NAME\n");
        assert!(
            stderr(&out).contains(&format!(
                "smoltalk: v6only.test is fd00:2::2 (DNS server 10.0.2.2); connecting to [fd00:2::2]:{port}"
            )),
            "{}",
            stderr(&out)
        );
    }
    let asked = queries.lock().unwrap().clone();
    assert!(asked.contains("query v6only.test AAAA\n"), "{asked}");
    assert!(asked.contains("query v6only.test\n"), "{asked}");
    // A name nobody knows: a clear error, exit 1.
    let mut args = vec!["tcp-client", "nosuch.test", "12000", "x"];
    args.extend_from_slice(&stack);
    let out = run(smoltalk_in(&ns, &args));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(
            "smoltalk: error: nosuch.test has no IPv4 or IPv6 address (DNS server 10.0.2.2)"
        ),
        "{}",
        stderr(&out)
    );
    // A UDP request longer than one IPv6 packet: said, not sent in vain (smoltcp does not fragment IPv6).
    let long = "a".repeat(UDP6_MAX + 1);
    let udp_port = udp_port.to_string();
    let mut args = vec!["udp-client", "fd00:2::2", &udp_port, &long];
    args.extend_from_slice(&stack);
    let out = run(smoltalk_in(&ns, &args));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!(
            "a request of {} bytes does not fit one IPv6 packet (at most {UDP6_MAX} bytes here)",
            UDP6_MAX + 1
        )),
        "{}",
        stderr(&out)
    );
    // An IPv6 server for a node given IPv4 only: said, not tried.
    let mut args = vec![
        "tcp-client",
        "fd00:2::2",
        "12000",
        "x",
        "--ip",
        "10.0.2.15/24",
    ];
    args.extend_from_slice(&stack);
    let out = run(smoltalk_in(&ns, &args));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("fd00:2::2 is IPv6, but smoltcp has no address of that family here"),
        "{}",
        stderr(&out)
    );
}

#[test]
#[cfg_attr(
    any(smoltalk_no_netns, smoltalk_no_curl),
    ignore = "needs root, /dev/net/tun, ip, ping, python3 and curl (a TUN device in a network namespace)"
)]
fn curl_through_the_smoltcp_proxy_to_an_ipv6_origin_and_an_aaaa_only_name() {
    let test = "curl_through_the_smoltcp_proxy_to_an_ipv6_origin_and_an_aaaa_only_name";
    let Some(ns) = namespace_or_skip(test, "ns6p", &["curl"]) else {
        return;
    };
    add_st0_dual(&ns, "tun");
    let net = Net::Namespace(ns.name().to_owned());
    let (_origin, origin_port) = start_server(
        net.command("python3", &["-c", PY_ORIGIN, "fd00:2::2"]),
        "python origin on fd00:2::2",
    );
    let (_origin4, origin4_port) = start_server(
        net.command("python3", &["-c", PY_ORIGIN, "10.0.2.2"]),
        "python origin on 10.0.2.2",
    );
    let (_dns, queries) = start_dns(
        &ns,
        "10.0.2.2",
        &[
            "v6only.test=fd00:2::2",
            "v4only.test=10.0.2.2",
            "v4only.test=noaaaa",
        ],
    );
    let args = [
        "proxy",
        "--stack",
        "tun",
        "--dev",
        "st0",
        "--dns",
        "10.0.2.2",
        "--timeout",
        "5",
    ];
    // Clients reach it over IPv6 too.
    let proxy = Proxy::start(smoltalk_in(&ns, &args), "fd00:2::15", net.clone());
    for url in [
        format!("http://[fd00:2::2]:{origin_port}/small"),
        format!("http://v6only.test:{origin_port}/small"),
    ] {
        let out = curl_ok(&proxy, &[&url]);
        assert_eq!(stdout(&out), SMALL, "{url}");
    }
    let asked = queries.lock().unwrap().clone();
    assert!(asked.contains("query v6only.test AAAA\n"), "{asked}");
    // A DNS server that never answers AAAA for a name: its A answer is used after a short grace, not after
    // smoltcp's DNS timeout (10 s, past the proxy's --timeout of 5 s).
    let started = std::time::Instant::now();
    let out = curl_ok(
        &proxy,
        &[&format!("http://v4only.test:{origin4_port}/small")],
    );
    assert_eq!(stdout(&out), SMALL);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(3),
        "{:?} for a name whose AAAA query goes unanswered",
        started.elapsed()
    );
    // A v4-mapped address is the IPv4 origin it stands for.
    let out = curl_ok(
        &proxy,
        &[&format!("http://[::ffff:10.0.2.2]:{origin4_port}/small")],
    );
    assert_eq!(stdout(&out), SMALL);
    let log = proxy.wait_log(&["(from [fd00:2::2]:"]);
    assert!(
        log.contains("From fd00:2::2 Request GET http://v6only.test:"),
        "{log}"
    );
    // The proxy's own IPv6 address is a loop: 508, never forwarded to itself.
    let out = curl_ok(&proxy, &["-i", "http://[fd00:2::15]:8080/"]);
    assert_error_page(&out.stdout, "508 Loop Detected");
    drop(proxy);

    // --allow-dest takes IPv6 CIDRs: the IPv6 origin is allowed, the IPv4 one is 403.
    let mut args = args.to_vec();
    args.extend_from_slice(&["--allow-dest", "fd00:2::/64"]);
    let proxy = Proxy::start(smoltalk_in(&ns, &args), "10.0.2.15", net.clone());
    let out = curl_ok(
        &proxy,
        &[&format!("http://[fd00:2::2]:{origin_port}/small")],
    );
    assert_eq!(stdout(&out), SMALL);
    for ipv4 in ["10.0.2.2", "[::ffff:10.0.2.2]"] {
        let out = curl_ok(
            &proxy,
            &["-i", &format!("http://{ipv4}:{origin4_port}/small")],
        );
        assert_error_page(&out.stdout, "403 Forbidden");
    }
}

/// `/etc/netns/NAME/hosts`, which `ip netns exec NAME` puts in place of `/etc/hosts` for what it runs; removed
/// with its folder when dropped.
struct NamespaceHosts {
    dir: PathBuf,
}

impl NamespaceHosts {
    fn write(ns: &Namespace, lines: &str) -> NamespaceHosts {
        let dir = PathBuf::from("/etc/netns").join(ns.name());
        std::fs::create_dir_all(&dir).expect("create /etc/netns/NAME");
        std::fs::write(dir.join("hosts"), lines).expect("write /etc/netns/NAME/hosts");
        NamespaceHosts { dir }
    }
}

impl Drop for NamespaceHosts {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
#[cfg_attr(
    any(smoltalk_no_netns, smoltalk_no_curl),
    ignore = "needs root, ip, python3 and curl (a network namespace with only loopback)"
)]
fn curl_through_the_kernel_proxy_to_an_ipv6_origin_and_a_name_with_only_an_ipv6_address() {
    let test =
        "curl_through_the_kernel_proxy_to_an_ipv6_origin_and_a_name_with_only_an_ipv6_address";
    let Some(ns) = namespace_or_skip(test, "ns6kp", &["curl"]) else {
        return;
    };
    // The system resolver inside the namespace knows v6only.test as ::1 and nothing else beyond localhost.
    let _hosts = NamespaceHosts::write(
        &ns,
        "127.0.0.1 localhost\n::1 localhost ip6-localhost\n::1 v6only.test\n",
    );
    let net = Net::Isolated(ns.name().to_owned());
    let (_origin, origin_port) = start_server(
        net.command("python3", &["-c", PY_ORIGIN, "::1"]),
        "python origin on ::1",
    );
    for design in [&[][..], &["--thread-per-client"][..]] {
        let mut args = vec![
            "proxy",
            "--bind",
            "::1",
            "--port",
            "0",
            "--allow-dest",
            "::1/128",
        ];
        args.extend_from_slice(design);
        let proxy = Proxy::start(smoltalk_in(&ns, &args), "::1", net.clone());
        for url in [
            format!("http://[::1]:{origin_port}/small"),
            format!("http://v6only.test:{origin_port}/small"),
        ] {
            let out = curl_ok(&proxy, &[&url]);
            assert_eq!(stdout(&out), SMALL, "{url} {design:?}");
        }
        // ::1/128 speaks for IPv6 only: the IPv4 origin, even written v4-mapped, is 403.
        let mapped = format!("http://[::ffff:127.0.0.1]:{origin_port}/small");
        let out = curl_ok(&proxy, &["-i", &mapped]);
        assert_error_page(&out.stdout, "403 Forbidden");
        // Its own address and port: 508.
        let own = format!("http://[::1]:{}/", proxy.port);
        let out = curl_ok(&proxy, &["-i", &own]);
        assert_error_page(&out.stdout, "508 Loop Detected");
    }
    // On [::] the proxy takes IPv4 clients too, and any address of the machine on its port is itself: 508.
    ns.ip(&["-6", "addr", "add", "fd00:5::1/128", "dev", "lo"])
        .expect("give lo a second IPv6 address");
    let args = ["proxy", "--bind", "::", "--port", "0"];
    let proxy = Proxy::start(smoltalk_in(&ns, &args), "127.0.0.1", net.clone());
    let out = curl_ok(&proxy, &[&format!("http://[::1]:{origin_port}/small")]);
    assert_eq!(stdout(&out), SMALL, "an IPv4 client of a proxy on [::]");
    for own in ["[fd00:5::1]", "[::1]", "127.0.0.1", "[::ffff:127.0.0.1]"] {
        let out = curl_ok(&proxy, &["-i", &format!("http://{own}:{}/", proxy.port)]);
        assert_error_page(&out.stdout, "508 Loop Detected");
    }
}

#[test]
#[cfg_attr(
    any(smoltalk_no_netns, smoltalk_no_tshark),
    ignore = "needs root, /dev/net/tun, ip, ping, python3 and tshark (a TUN device in a network namespace)"
)]
fn tshark_reads_the_ipv6_capture_of_smoltcp_on_tap_with_its_neighbour_discovery() {
    let test = "tshark_reads_the_ipv6_capture_of_smoltcp_on_tap_with_its_neighbour_discovery";
    let Some(ns) = namespace_or_skip(test, "ns6t", &["tshark"]) else {
        return;
    };
    add_st0_dual(&ns, "tap");
    let pcap = std::env::temp_dir().join(format!("smoltalk-test-{}-ipv6.pcap", std::process::id()));
    let args = [
        "tcp-server",
        "--stack",
        "tap",
        "--dev",
        "st0",
        "--pcap",
        pcap.to_str().unwrap(),
    ];
    let (mut server, port) = start_server(smoltalk_in(&ns, &args), "tcp-server --pcap");
    python_clients_get_uppercase(
        &ns,
        "fd00:2::15",
        port,
        "tap tcp-server with a capture",
        false,
    );
    assert!(terminate(&mut server), "the server did not stop cleanly");
    let payloads = tshark_lines(
        &pcap,
        &["-n"],
        "ipv6.src == fd00:2::15 && tcp.len > 0",
        &["ipv6.dst", "tcp.srcport"],
    );
    let ndp = tshark_lines(
        &pcap,
        &["-n"],
        "icmpv6.type == 136",
        &["icmpv6.nd.na.target_address"],
    );
    let _ = std::fs::remove_file(&pcap);
    assert!(
        !payloads.is_empty(),
        "no IPv6 TCP data from smoltcp in the capture"
    );
    assert!(
        payloads.iter().all(|l| l == &format!("fd00:2::2\t{port}")),
        "{payloads:?}"
    );
    // smoltcp's neighbour advertisement for its own address, as tshark decodes it.
    assert!(ndp.iter().any(|l| l == "fd00:2::15"), "{ndp:?}");
}
