//! smoltcp on real TUN and TAP devices, each inside a network namespace this test creates and deletes: the
//! smoltcp servers at 10.0.2.15 answer kernel clients (TCP, UDP, ping), and the smoltcp clients reach kernel
//! servers at 10.0.2.2. Nothing leaves the namespace. Needs root: skips with a reason elsewhere, fails under
//! `CI=true`.

mod support;

use std::process::Command;

use smoltalk::netns::Namespace;
use support::*;

/// A namespace with only loopback and one TUN/TAP device `st0` whose kernel side is 10.0.2.2/24.
fn namespace(medium: &str) -> Result<Namespace, String> {
    let ns = Namespace::create(&format!("smoltalk-test-{medium}-{}", std::process::id()))?;
    ns.add_device("st0", medium, "10.0.2.2/24", 1500)?;
    Ok(ns)
}

fn smoltalk_in(ns: &Namespace, args: &[&str]) -> Command {
    ns.command(env!("CARGO_BIN_EXE_smoltalk"), args)
}

/// Why namespaces cannot be used here, if they cannot.
fn missing_privilege() -> Option<String> {
    if !smoltalk::netns::is_root() {
        return Some("needs root to create network namespaces and TUN/TAP devices".into());
    }
    if !std::path::Path::new("/dev/net/tun").exists() {
        return Some("/dev/net/tun is missing (modprobe tun)".into());
    }
    for tool in ["ip", "ping", "python3"] {
        if Command::new(tool).arg("-V").output().is_err()
            && Command::new(tool).arg("--version").output().is_err()
        {
            return Some(format!("{tool} is not installed"));
        }
    }
    None
}

const PY_SEND_ONCE_READ_ONCE: &str = r#"
import socket, sys
data = bytes(range(256)) * 64 + b'the end, in lower case'
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
s.sendall(data)
reply = b''
while len(reply) < len(data):
    chunk = s.recv(65536)
    if not chunk:
        break
    reply += chunk
assert reply == data.upper(), 'got %d bytes, differing' % len(reply)
print('ok', len(reply))
"#;

const PY_UDP_CLIENT: &str = r#"
import socket, sys
data = (b'fragmented datagram ' * 200)[:3000]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(5)
s.sendto(data, (sys.argv[1], int(sys.argv[2])))
reply, addr = s.recvfrom(65536)
assert reply == data.upper() and addr == (sys.argv[1], int(sys.argv[2])), (len(reply), addr)
print('ok', len(reply))
"#;

fn smoltcp_on_device(medium: &str) {
    let test = format!("smoltcp_on_{medium}");
    if let Some(reason) = missing_privilege() {
        cannot_run(&test, &reason);
        return;
    }
    let ns = namespace(medium).unwrap_or_else(|e| panic!("{test}: {e}"));
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
    let out = run(ns.command(
        "python3",
        &["-c", PY_SEND_ONCE_READ_ONCE, "10.0.2.15", "12000"],
    ));
    assert!(
        out.status.success(),
        "send once, read once: {}",
        stderr(&out)
    );
    let out = run(ns.command("ping", &["-c", "2", "-W", "2", "10.0.2.15"]));
    assert!(out.status.success(), "ping: {}", stdout(&out));
    assert!(stdout(&out).contains("2 received"), "{}", stdout(&out));
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
    let out = run(ns.command("python3", &["-c", PY_UDP_CLIENT, "10.0.2.15", "12000"]));
    assert!(out.status.success(), "udp 3000 bytes: {}", stderr(&out));
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

    // Nothing listens on port 1: the kernel answers the SYN with RST.
    let mut args = vec!["tcp-client", "10.0.2.2", "1", "anyone?"];
    args.extend_from_slice(&stack);
    let out = run(smoltalk_in(&ns, &args));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("connection refused"),
        "{}",
        stderr(&out)
    );
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
