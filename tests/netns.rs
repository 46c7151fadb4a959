//! smoltcp on real TUN and TAP devices, each inside a network namespace this test creates and deletes: the
//! smoltcp servers at 10.0.2.15 answer kernel clients (TCP, UDP, ping), and the smoltcp clients reach kernel
//! servers at 10.0.2.2. Nothing leaves the namespace. Needs root: skips with a reason elsewhere, fails under
//! `CI=true`.

mod support;

use std::process::Command;

use support::*;

/// A network namespace with only loopback and one TUN/TAP device `st0` whose kernel side is 10.0.2.2/24.
struct Namespace {
    name: String,
}

impl Namespace {
    fn create(medium: &str) -> Result<Namespace, String> {
        let name = format!("smoltalk-test-{medium}-{}", std::process::id());
        let ns = Namespace { name };
        ip(&["netns", "add", &ns.name])?;
        ns.ip(&["link", "set", "lo", "up"])?;
        ns.ip(&["tuntap", "add", "dev", "st0", "mode", medium])?;
        ns.ip(&["addr", "add", "10.0.2.2/24", "dev", "st0"])?;
        ns.ip(&["link", "set", "st0", "up"])?;
        Ok(ns)
    }

    fn ip(&self, args: &[&str]) -> Result<(), String> {
        let mut all = vec!["netns", "exec", &self.name, "ip"];
        all.extend_from_slice(args);
        ip(&all[..])
    }

    /// `program args` inside the namespace.
    fn command(&self, program: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]).args(args);
        cmd
    }

    fn smoltalk(&self, args: &[&str]) -> Command {
        self.command(env!("CARGO_BIN_EXE_smoltalk"), args)
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Why namespaces cannot be used here, if they cannot.
fn missing_privilege() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
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
    let ns = Namespace::create(medium).unwrap_or_else(|e| panic!("{test}: {e}"));
    let stack = ["--stack", medium, "--dev", "st0"];

    // The smoltcp TCP server answers kernel clients, and ping.
    let mut args = vec!["tcp-server"];
    args.extend_from_slice(&stack);
    let (server, port) = start_server(ns.smoltalk(&args), "smoltcp tcp-server");
    assert_eq!(port, 12000);
    let out = run(ns.smoltalk(&["tcp-client", "10.0.2.15", "12000", "hello from the kernel"]));
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
    let (server, _) = start_server(ns.smoltalk(&args), "smoltcp udp-server");
    let out = run_with_input(
        ns.smoltalk(&["udp-client", "10.0.2.15", "12000"]),
        b"first\nSecond one\n",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "10.0.2.15 > FIRST\n10.0.2.15 > SECOND ONE\n");
    let out = run(ns.command("python3", &["-c", PY_UDP_CLIENT, "10.0.2.15", "12000"]));
    assert!(out.status.success(), "udp 3000 bytes: {}", stderr(&out));
    drop(server);

    // The smoltcp clients reach kernel servers at 10.0.2.2.
    let (_tcp, tcp_port) = start_server(
        ns.smoltalk(&["tcp-server", "--bind", "10.0.2.2", "--port", "0"]),
        "kernel tcp-server",
    );
    let (_udp, udp_port) = start_server(
        ns.smoltalk(&["udp-server", "--bind", "10.0.2.2", "--port", "0"]),
        "kernel udp-server",
    );
    let tcp_port = tcp_port.to_string();
    let mut args = vec!["tcp-client", "10.0.2.2", &tcp_port];
    args.extend_from_slice(&stack);
    let out = run_with_input(ns.smoltalk(&args), b"from smoltcp\nover tcp\n");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "10.0.2.2 > FROM SMOLTCP\n10.0.2.2 > OVER TCP\n"
    );

    let udp_port = udp_port.to_string();
    let mut args = vec!["udp-client", "10.0.2.2", &udp_port, "from smoltcp over udp"];
    args.extend_from_slice(&stack);
    let out = run(ns.smoltalk(&args));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "10.0.2.2 > FROM SMOLTCP OVER UDP\n");

    // Nothing listens on port 1: the kernel answers the SYN with RST.
    let mut args = vec!["tcp-client", "10.0.2.2", "1", "anyone?"];
    args.extend_from_slice(&stack);
    let out = run(ns.smoltalk(&args));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("connection refused"),
        "{}",
        stderr(&out)
    );
}

#[test]
#[cfg_attr(
    smoltalk_unprivileged,
    ignore = "needs root: network namespaces and TUN/TAP devices"
)]
fn smoltcp_on_tun() {
    smoltcp_on_device("tun");
}

#[test]
#[cfg_attr(
    smoltalk_unprivileged,
    ignore = "needs root: network namespaces and TUN/TAP devices"
)]
fn smoltcp_on_tap() {
    smoltcp_on_device("tap");
}
