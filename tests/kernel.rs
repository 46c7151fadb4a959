//! The real `smoltalk` binary on the kernel stack, over loopback, against itself and against an independent peer
//! (small Python programs that know nothing of smoltalk).

mod support;

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::time::Duration;

use support::*;

/// A TCP uppercase server (bytes.upper() changes only ASCII a-z).
const PY_TCP_SERVER: &str = r#"
import socket, sys, threading
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(('127.0.0.1', 0)); srv.listen(16)
print('python listening on 127.0.0.1:%d' % srv.getsockname()[1], flush=True)
def serve(c):
    while True:
        d = c.recv(65536)
        if not d:
            break
        c.sendall(d.upper())
    c.close()
while True:
    c, _ = srv.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

const PY_UDP_SERVER: &str = r#"
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('127.0.0.1', 0))
print('python listening on 127.0.0.1:%d' % s.getsockname()[1], flush=True)
while True:
    d, a = s.recvfrom(65536)
    s.sendto(d.upper(), a)
"#;

fn tcp_server() -> (Running, u16) {
    let mut cmd = smoltalk();
    cmd.args(["tcp-server", "--bind", "127.0.0.1", "--port", "0"]);
    start_server(cmd, "smoltalk tcp-server")
}

fn udp_server() -> (Running, u16) {
    let mut cmd = smoltalk();
    cmd.args(["udp-server", "--bind", "127.0.0.1", "--port", "0"]);
    start_server(cmd, "smoltalk udp-server")
}

fn every_byte(times: usize) -> Vec<u8> {
    (0..256 * times).map(|i| (i % 256) as u8).collect()
}

#[test]
fn tcp_client_message_and_stdin_lines() {
    let (_server, port) = tcp_server();
    let port = port.to_string();

    let out = run(smoltalk_args(&[
        "tcp-client",
        "127.0.0.1",
        &port,
        "Hello, World! 123 äö",
    ]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "127.0.0.1 > HELLO, WORLD! 123 äö\n");

    let out = run_with_input(
        smoltalk_args(&["tcp-client", "127.0.0.1", &port]),
        b"first line\nsecond: mixed Case\n\nlast",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "127.0.0.1 > FIRST LINE\n127.0.0.1 > SECOND: MIXED CASE\n127.0.0.1 > \n127.0.0.1 > LAST\n"
    );
}

fn smoltalk_args(args: &[&str]) -> std::process::Command {
    let mut cmd = smoltalk();
    cmd.args(args);
    cmd
}

#[test]
#[cfg_attr(smoltalk_no_python, ignore = "needs python3, the independent peer")]
fn tcp_server_answers_an_independent_client_that_sends_once_and_reads_once() {
    let (_server, port) = tcp_server();
    for (name, data) in [
        ("sentence", b"the classic lab sentence".to_vec()),
        ("binary", every_byte(4)),
        ("large", every_byte(4096)), // 1 MiB
    ] {
        let path = temp_file(name, &data);
        let out = run(python(
            PY_SEND_ONCE_READ_ONCE,
            &["127.0.0.1", &port.to_string(), path.to_str().unwrap()],
        ));
        let _ = std::fs::remove_file(&path);
        assert!(out.status.success(), "{name}: {}", stderr(&out));
        assert!(
            out.stdout == upper(&data),
            "{name}: reply differs ({} bytes back of {})",
            out.stdout.len(),
            data.len()
        );
    }
}

#[test]
fn tcp_server_serves_several_clients_at_once() {
    let (_server, port) = tcp_server();
    // All connect first, then all talk: each needs its own connection served concurrently.
    let mut streams: Vec<TcpStream> = (0..8)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).expect("connect"))
        .collect();
    for (i, stream) in streams.iter_mut().enumerate().rev() {
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let message = format!("client number {i} speaking");
        stream.write_all(message.as_bytes()).unwrap();
        let mut reply = vec![0; message.len()];
        stream.read_exact(&mut reply).unwrap();
        assert_eq!(reply, upper(message.as_bytes()));
    }
}

#[test]
#[cfg_attr(smoltalk_no_python, ignore = "needs python3, the independent peer")]
fn udp_server_answers_cli_and_independent_clients() {
    let (_server, port) = udp_server();
    let port_s = port.to_string();
    let out = run_with_input(
        smoltalk_args(&["udp-client", "127.0.0.1", &port_s]),
        b"one\ntwo Two\n",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "127.0.0.1 > ONE\n127.0.0.1 > TWO TWO\n");

    for (name, data) in [("binary", every_byte(8)), ("large", every_byte(200))] {
        let path = temp_file(&format!("udp-{name}"), &data);
        let out = run(python(
            PY_UDP_CLIENT,
            &["127.0.0.1", &port_s, path.to_str().unwrap()],
        ));
        let _ = std::fs::remove_file(&path);
        assert!(out.status.success(), "{name}: {}", stderr(&out));
        assert!(
            out.stdout == upper(&data),
            "{name}: {} bytes back of {}",
            out.stdout.len(),
            data.len()
        );
    }

    // One reply per datagram, same length, from the server's address.
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    for message in [&b"a"[..], b"", b"MiXeD 42"] {
        socket.send_to(message, ("127.0.0.1", port)).unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = socket.recv_from(&mut buf).unwrap();
        assert_eq!(from.port(), port);
        assert_eq!(&buf[..n], &upper(message)[..]);
    }
}

#[test]
#[cfg_attr(smoltalk_no_python, ignore = "needs python3, the independent peer")]
fn cli_clients_talk_to_independent_servers() {
    let (_tcp, tcp_port) = start_server(python(PY_TCP_SERVER, &[]), "python tcp server");
    let out = run(smoltalk_args(&[
        "tcp-client",
        "127.0.0.1",
        &tcp_port.to_string(),
        "to python",
    ]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "127.0.0.1 > TO PYTHON\n");

    let (_udp, udp_port) = start_server(python(PY_UDP_SERVER, &[]), "python udp server");
    let out = run(smoltalk_args(&[
        "udp-client",
        "127.0.0.1",
        &udp_port.to_string(),
        "to python by udp",
    ]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "127.0.0.1 > TO PYTHON BY UDP\n");
}

/// Runs smoltalk with `args`, expects exit code `code` and an error line containing every one of `needles`,
/// and nothing on standard output.
fn assert_fails(args: &[&str], code: i32, needles: &[&str]) {
    let out = run(smoltalk_args(args));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
    for needle in needles {
        assert!(err.contains(needle), "{args:?}: {needle:?} not in {err}");
    }
    assert!(out.stdout.is_empty(), "{args:?} printed {}", stdout(&out));
}

#[test]
fn errors_are_one_clear_line_and_a_failure_exit() {
    let closed = closed_port().to_string();
    let closed = closed.as_str();
    assert_fails(
        &["tcp-client", "127.0.0.1", closed, "anyone?"],
        3,
        &["refused: the server is probably not running"],
    );
    assert_fails(
        &[
            "udp-client",
            "127.0.0.1",
            closed,
            "anyone?",
            "--timeout",
            "0.2",
            "--tries",
            "2",
        ],
        8,
        &["no reply", "after 2 tries", "UDP has no connection"],
    );

    let (_server, port) = tcp_server();
    let port = port.to_string();
    assert_fails(
        &["tcp-server", "--bind", "127.0.0.1", "--port", &port],
        1,
        &["already in use"],
    );
    assert_fails(
        &["tcp-server", "--bind", "300.1.2.3"],
        2,
        &["invalid value '300.1.2.3'"],
    );
    assert_fails(
        &[
            "tcp-client",
            "--stack",
            "tun",
            "--ip",
            "10.0.2.15/40",
            "10.0.2.2",
            "1",
        ],
        2,
        &["not a prefix length"],
    );
    // With smoltcp the server must be an address: no name is looked up.
    assert_fails(
        &[
            "tcp-client",
            "--stack",
            "tun",
            "server.example",
            "12000",
            "x",
        ],
        1,
        &["is not an IPv4 address"],
    );
    assert_fails(
        &["udp-server", "--stack", "tun", "--max-datagram", "20000"],
        2,
        &["not a size from 1 to 16356 bytes"],
    );
}

/// The clients' failures a caller can act on have exit codes of their own (README, `smoltalk --help`): 3 for a
/// refused connection, 8 for a UDP request that got no reply; the error line stays what it was.
#[test]
fn client_failures_exit_with_their_documented_codes() {
    let port = closed_port();
    let closed = port.to_string();

    let out = run(smoltalk_args(&[
        "tcp-client",
        "127.0.0.1",
        &closed,
        "anyone?",
    ]));
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(
        stderr(&out).lines().last(),
        Some(
            format!(
                "smoltalk: error: connection to 127.0.0.1:{port} refused: the server is probably not running \
                 on that address and port"
            )
            .as_str()
        )
    );

    let out = run(smoltalk_args(&[
        "udp-client",
        "127.0.0.1",
        &closed,
        "anyone?",
        "--timeout",
        "0.2",
        "--tries",
        "1",
    ]));
    assert_eq!(out.status.code(), Some(8), "{}", stderr(&out));
    assert_eq!(
        stderr(&out).lines().last(),
        Some(
            format!(
                "smoltalk: error: no reply from 127.0.0.1:{port} after 1 tries: UDP has no connection, so the \
                 datagrams may have been lost or no server is listening on that address and port"
            )
            .as_str()
        )
    );

    // The codes are in the help, as in the README.
    let out = run(smoltalk_args(&["udp-client", "--help"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let help = stdout(&out);
    assert!(help.contains("  3  connection refused"), "{help}");
    assert!(help.contains("  8  no UDP reply after every try"), "{help}");
}
