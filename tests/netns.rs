//! smoltcp on real TUN and TAP devices, each inside a network namespace this test creates and deletes: the
//! smoltcp servers at 10.0.2.15 answer kernel clients (TCP, UDP, ping), and the smoltcp clients reach kernel
//! servers at 10.0.2.2. Nothing leaves the namespace. Needs root: skips with a reason elsewhere, fails under
//! `CI=true`.

mod support;

use support::*;

fn smoltcp_on_device(medium: &str) {
    let test = format!("smoltcp_on_{medium}");
    let Some(ns) = namespace_or_skip(&test, "netns", &[]) else {
        return;
    };
    // A namespace with only loopback and one TUN/TAP device `st0` whose kernel side is 10.0.2.2/24.
    add_st0(&ns, medium);
    let stack = ["--stack", medium, "--dev", "st0"];

    // The smoltcp TCP server answers kernel clients, and ping.
    let mut args = vec!["tcp-server"];
    args.extend_from_slice(&stack);
    let (server, port) = start_server(smoltalk_in(&ns, &args), "smoltcp tcp-server");
    assert_eq!(port, 12000);
    let out = run(smoltalk_in(
        &ns,
        &["tcp-client", "10.0.2.15", "12000", "hello from the kernel"],
    ));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "10.0.2.15 > HELLO FROM THE KERNEL\n");
    let data: Vec<u8> = (0..64 * 256).map(|i| (i % 256) as u8).collect();
    let path = temp_file(&format!("{medium}-tcp"), &data);
    let script = [
        "-c",
        PY_SEND_ONCE_READ_ONCE,
        "10.0.2.15",
        "12000",
        path.to_str().unwrap(),
    ];
    let out = run(ns.command("python3", &script));
    assert!(
        out.status.success(),
        "send once, read once: {}",
        stderr(&out)
    );
    assert!(
        out.stdout == upper(&data),
        "send once, read once: {} bytes back",
        out.stdout.len()
    );
    let out = run(ns.command("ping", &["-c", "2", "-W", "2", "10.0.2.15"]));
    assert!(out.status.success(), "ping: {}", stdout(&out));
    assert!(stdout(&out).contains("2 received"), "{}", stdout(&out));
    // SIGTERM stops the server cleanly (the device is closed and its offload setting restored).
    let mut server = server;
    assert!(
        terminate(&mut server),
        "the smoltcp server did not stop cleanly on SIGTERM"
    );
    drop(server);

    // The same without checksum offload (a plain tun-tap device; both sides compute every checksum).
    let mut args = vec!["tcp-server", "--no-offload"];
    args.extend_from_slice(&stack);
    let (server, _) = start_server(smoltalk_in(&ns, &args), "smoltcp tcp-server --no-offload");
    let out = run(ns.command("python3", &script));
    assert!(
        out.status.success(),
        "send once, read once, no offload: {}",
        stderr(&out)
    );
    assert!(
        out.stdout == upper(&data),
        "no offload: {} bytes back",
        out.stdout.len()
    );
    let _ = std::fs::remove_file(&path);
    drop(server);

    // The smoltcp UDP server answers kernel clients, a fragmented 3000-byte datagram included.
    let mut args = vec!["udp-server"];
    args.extend_from_slice(&stack);
    let (server, _) = start_server(smoltalk_in(&ns, &args), "smoltcp udp-server");
    let out = run_with_input(
        smoltalk_in(&ns, &["udp-client", "10.0.2.15", "12000"]),
        b"first\nSecond one\n",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "10.0.2.15 > FIRST\n10.0.2.15 > SECOND ONE\n");
    let data: Vec<u8> = b"fragmented Datagram "
        .iter()
        .copied()
        .cycle()
        .take(3000)
        .collect();
    let path = temp_file(&format!("{medium}-udp"), &data);
    let script = [
        "-c",
        PY_UDP_CLIENT,
        "10.0.2.15",
        "12000",
        path.to_str().unwrap(),
    ];
    let out = run(ns.command("python3", &script));
    let _ = std::fs::remove_file(&path);
    assert!(out.status.success(), "udp 3000 bytes: {}", stderr(&out));
    assert!(
        out.stdout == upper(&data),
        "udp 3000 bytes: {} bytes back",
        out.stdout.len()
    );
    drop(server);

    // The smoltcp clients reach kernel servers at 10.0.2.2.
    let (_tcp, tcp_port) = start_server(
        smoltalk_in(&ns, &["tcp-server", "--bind", "10.0.2.2", "--port", "0"]),
        "kernel tcp-server",
    );
    let (_udp, udp_port) = start_server(
        smoltalk_in(&ns, &["udp-server", "--bind", "10.0.2.2", "--port", "0"]),
        "kernel udp-server",
    );
    let tcp_port = tcp_port.to_string();
    let mut args = vec!["tcp-client", "10.0.2.2", &tcp_port];
    args.extend_from_slice(&stack);
    let out = run_with_input(smoltalk_in(&ns, &args), b"from smoltcp\nover tcp\n");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "10.0.2.2 > FROM SMOLTCP\n10.0.2.2 > OVER TCP\n"
    );

    let udp_port = udp_port.to_string();
    let mut args = vec!["udp-client", "10.0.2.2", &udp_port, "from smoltcp over udp"];
    args.extend_from_slice(&stack);
    let out = run(smoltalk_in(&ns, &args));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "10.0.2.2 > FROM SMOLTCP OVER UDP\n");

    // Nothing listens on port 1: the kernel answers the SYN with RST (exit code 3: refused).
    let mut args = vec!["tcp-client", "10.0.2.2", "1", "anyone?"];
    args.extend_from_slice(&stack);
    let out = run(smoltalk_in(&ns, &args));
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stderr(&out).contains("connection refused"),
        "{}",
        stderr(&out)
    );

    // The device exists in the other mode: the error says so, in one line.
    let other = if medium == "tun" { "tap" } else { "tun" };
    let out = run(smoltalk_in(
        &ns,
        &["tcp-server", "--stack", other, "--dev", "st0"],
    ));
    assert_eq!(out.status.code(), Some(1));
    let expected =
        format!("cannot open {other} device st0: st0 exists but is not a {other} device");
    assert!(stderr(&out).contains(&expected), "{}", stderr(&out));
}

#[test]
#[cfg_attr(
    smoltalk_no_netns,
    ignore = "needs root, /dev/net/tun, ip, ping and python3 (network namespaces with TUN/TAP devices)"
)]
fn smoltcp_on_tun() {
    smoltcp_on_device("tun");
}

#[test]
#[cfg_attr(
    smoltalk_no_netns,
    ignore = "needs root, /dev/net/tun, ip, ping and python3 (network namespaces with TUN/TAP devices)"
)]
fn smoltcp_on_tap() {
    smoltcp_on_device("tap");
}

/// The kernel's packet and byte counters for `st0`, each direction (rx: from smoltcp, tx: to smoltcp).
fn st0_counters(ns: &Namespace) -> [u64; 4] {
    // Read together: while smoltcp still sends (the load generator has stopped, the server has not), counts read
    // one by one would miss packets in one and count their bytes in another.
    ns.device_counters("st0", ["rx_packets", "rx_bytes", "tx_packets", "tx_bytes"])
        .unwrap_or_else(|e| panic!("st0 counters: {e}"))
}

/// Offload on `medium`: by default (segmentation offload) the kernel's counters for the device show packets
/// larger than its MTU both ways, while two seconds of echo load on two connections comes back verified byte for
/// byte, and the device's threaded NAPI is switched on for them (`--kernel-thread auto`, the default) or from
/// the start (`on`), and off again when the server stops; with
/// `--offload checksum` and `--no-offload` the same load is byte-exact too.
fn offload_on_device(medium: &str) {
    let test = format!("offload_on_{medium}");
    let Some(ns) = namespace_or_skip(&test, "netns", &[]) else {
        return;
    };
    add_st0(&ns, medium);
    // The largest frame the kernel counts for an MTU of 1500 (TAP: with the Ethernet header).
    let largest = if medium == "tap" { 1514 } else { 1500 };
    let threaded = || {
        let out = run(ns.command("cat", &["/sys/class/net/st0/threaded"]));
        stdout(&out).trim().to_string()
    };
    for (options, super_packets) in [
        (&[][..], true),
        (&["--kernel-thread", "on"][..], true),
        (&["--offload", "checksum"][..], false),
        (&["--no-offload"][..], false),
    ] {
        let mut args = vec!["tcp-server", "--stack", medium, "--dev", "st0"];
        args.extend_from_slice(options);
        let mut cmd = smoltalk_in(&ns, &args);
        cmd.env("RUST_LOG", "info,smoltalk::stack::kernel_thread=debug");
        let (mut server, port) = start_server(cmd, "smoltcp tcp-server");
        // `--kernel-thread on` switches the device's threaded NAPI on while it runs; `auto` (the default) only
        // while two or more connections are busy; both give it back when the server stops.
        let always = options.contains(&"on");
        assert_eq!(threaded(), if always { "1" } else { "0" }, "{options:?}");
        let before = st0_counters(&ns);
        // Two connections, every reply byte checked against the uppercase of what was sent.
        let port = port.to_string();
        let load = [
            "throughput",
            "10.0.2.15",
            &port,
            "--seconds",
            "2",
            "--connections",
            "2",
        ];
        let out = run(smoltalk_in(&ns, &load));
        assert!(
            out.status.success() && stdout(&out).contains("verified reply bytes"),
            "{options:?}: {}{}",
            stdout(&out),
            stderr(&out)
        );
        let after = st0_counters(&ns);
        let [rx_packets, rx_bytes, tx_packets, tx_bytes] =
            [0, 1, 2, 3].map(|i| after[i] - before[i]);
        assert!(
            rx_packets > 100 && tx_packets > 100,
            "{options:?}: {rx_packets} and {tx_packets} packets"
        );
        let (from_smoltcp, to_smoltcp) = (rx_bytes / rx_packets, tx_bytes / tx_packets);
        if super_packets {
            assert!(
                from_smoltcp > largest && to_smoltcp > largest,
                "{options:?}: {from_smoltcp} bytes per packet from smoltcp, {to_smoltcp} to it: no \
                 segmentation offload"
            );
        } else {
            // A super-packet here and there would lift the average past the MTU: segmentation offload is off.
            assert!(
                from_smoltcp <= largest && to_smoltcp <= largest,
                "{options:?}: {from_smoltcp} and {to_smoltcp} bytes per packet"
            );
        }
        assert!(
            terminate(&mut server),
            "{options:?}: the server did not stop cleanly"
        );
        assert_eq!(threaded(), "0", "{options:?}: after the server stopped");
        let mut log = String::new();
        if let Some(mut err) = server.child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut err, &mut log);
        }
        if options.is_empty() {
            // Two busy connections: the default switched the kernel thread on.
            assert!(
                log.contains("2 busy connection(s): kernel receive thread on"),
                "{log}"
            );
        }
    }
}

#[test]
#[cfg_attr(
    smoltalk_no_netns,
    ignore = "needs root, /dev/net/tun and ip (network namespaces with TUN/TAP devices)"
)]
fn offload_on_tun() {
    offload_on_device("tun");
}

#[test]
#[cfg_attr(
    smoltalk_no_netns,
    ignore = "needs root, /dev/net/tun and ip (network namespaces with TUN/TAP devices)"
)]
fn offload_on_tap() {
    offload_on_device("tap");
}
