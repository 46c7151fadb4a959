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
