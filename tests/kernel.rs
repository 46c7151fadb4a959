//! The real `smoltalk` binary on the kernel stack, over loopback, against itself and against an independent peer
//! (small Python programs that know nothing of smoltalk). The TCP server's tests run on each of its designs (the
//! event loops, one per CPU and four, and a thread per client), the UDP server's with one socket per CPU and
//! with four.

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

/// The TCP server's designs, as its options: the event loops (one per CPU, and four), and a thread per client.
const TCP_DESIGNS: [&[&str]; 3] = [&[], &["--workers", "4"], &["--thread-per-client"]];

/// The UDP server with one socket per CPU, and with four.
const UDP_WORKERS: [&[&str]; 2] = [&[], &["--workers", "4"]];

fn tcp_server(design: &[&str]) -> (Running, u16) {
    let mut cmd = smoltalk();
    cmd.args(["tcp-server", "--bind", "127.0.0.1", "--port", "0"]);
    cmd.args(design);
    start_server(cmd, "smoltalk tcp-server")
}

fn udp_server(workers: &[&str]) -> (Running, u16) {
    let mut cmd = smoltalk();
    cmd.args(["udp-server", "--bind", "127.0.0.1", "--port", "0"]);
    cmd.args(workers);
    start_server(cmd, "smoltalk udp-server")
}

fn every_byte(times: usize) -> Vec<u8> {
    (0..256 * times).map(|i| (i % 256) as u8).collect()
}

#[test]
fn tcp_client_message_and_stdin_lines() {
    for design in TCP_DESIGNS {
        tcp_client_message_and_stdin_lines_on(design);
    }
}

fn tcp_client_message_and_stdin_lines_on(design: &[&str]) {
    let (_server, port) = tcp_server(design);
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
    for design in TCP_DESIGNS {
        let (_server, port) = tcp_server(design);
        answers_sending_once_reading_once(port, design);
    }
}

fn answers_sending_once_reading_once(port: u16, design: &[&str]) {
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
        assert!(out.status.success(), "{design:?} {name}: {}", stderr(&out));
        assert!(
            out.stdout == upper(&data),
            "{design:?} {name}: reply differs ({} bytes back of {})",
            out.stdout.len(),
            data.len()
        );
    }
}

#[test]
fn tcp_server_serves_several_clients_at_once() {
    for design in TCP_DESIGNS {
        serves_several_clients_at_once(design);
    }
}

fn serves_several_clients_at_once(design: &[&str]) {
    let (_server, port) = tcp_server(design);
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
        assert_eq!(reply, upper(message.as_bytes()), "{design:?}");
    }
}

/// A client that sends and closes its side at once (as `printf … | nc -N` does): the data and the end arrive
/// together, and the server answers the data, then closes.
#[test]
fn tcp_server_answers_a_client_that_sends_and_closes_at_once() {
    for design in TCP_DESIGNS {
        let (_server, port) = tcp_server(design);
        for size in [5, 1000, 64 * 1024, 200_000] {
            let message: Vec<u8> = b"send and close, "
                .iter()
                .copied()
                .cycle()
                .take(size)
                .collect();
            let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let writer = {
                let mut stream = stream.try_clone().unwrap();
                let message = message.clone();
                std::thread::spawn(move || {
                    stream.write_all(&message).unwrap();
                    stream.shutdown(std::net::Shutdown::Write).unwrap();
                })
            };
            let mut reply = Vec::new();
            let read = stream.read_to_end(&mut reply);
            writer.join().unwrap();
            assert!(
                read.is_ok(),
                "{design:?} {size}: {read:?} after {} bytes",
                reply.len()
            );
            assert!(
                reply == upper(&message),
                "{design:?} {size}: {} bytes back",
                reply.len()
            );
        }
    }
}

/// Urgent data (`MSG_OOB`) stays in the stream: every byte comes back, in order, on every design.
#[test]
fn tcp_server_answers_urgent_data_in_the_stream() {
    for design in TCP_DESIGNS {
        let (_server, port) = tcp_server(design);
        for _ in 0..20 {
            let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let socket = socket2::SockRef::from(&stream);
            socket.send(b"aaaa").unwrap();
            socket.send_with_flags(b"b", libc::MSG_OOB).unwrap();
            socket.send(b"cccc").unwrap();
            let mut reply = [0u8; 9];
            stream
                .read_exact(&mut reply)
                .unwrap_or_else(|e| panic!("{design:?}: {e}"));
            assert_eq!(&reply, b"AAAABCCCC", "{design:?}");
        }
    }
}

/// A burst of requests from one client, more than a batch, is answered whole: there is nobody else to be fair
/// to.
#[test]
fn udp_server_answers_a_burst_from_one_client_whole() {
    for workers in [&["--workers", "1"][..], &[]] {
        let (_server, port) = udp_server(workers);
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        for _ in 0..5 {
            let requests: Vec<String> = (0..200).map(|i| format!("burst request {i}")).collect();
            for request in &requests {
                socket
                    .send_to(request.as_bytes(), ("127.0.0.1", port))
                    .unwrap();
            }
            let mut replies = Vec::new();
            let mut buf = [0u8; 64];
            while replies.len() < requests.len() {
                match socket.recv_from(&mut buf) {
                    Ok((n, _)) => replies.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
                    Err(e) => panic!("{workers:?}: {} of 200 replies, then {e}", replies.len()),
                }
            }
            let expected: Vec<String> = requests.iter().map(|r| r.to_uppercase()).collect();
            assert_eq!(replies, expected, "{workers:?}");
        }
    }
}

/// With an open files limit that allows fewer clients than asked, the server serves what fits and closes the
/// others at once: none is left waiting in the backlog.
#[test]
fn clients_beyond_the_open_files_limit_are_closed_not_left_waiting() {
    for design in ["", "--workers 4", "--thread-per-client"] {
        let mut cmd = std::process::Command::new("sh");
        cmd.args([
            "-c",
            &format!("ulimit -n 120 && exec \"$0\" tcp-server --bind 127.0.0.1 --port 0 {design}"),
            env!("CARGO_BIN_EXE_smoltalk"),
        ]);
        let (_server, port) = start_server(cmd, "smoltalk tcp-server under ulimit -n 120");
        let mut streams: Vec<TcpStream> = (0..100)
            .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
            .collect();
        let (mut served, mut closed) = (0, 0);
        for stream in &mut streams {
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let _ = stream.write_all(b"hi");
            let mut reply = [0u8; 2];
            match stream.read(&mut reply) {
                Ok(2) if &reply == b"HI" => served += 1,
                Ok(0) => closed += 1,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => closed += 1,
                other => {
                    panic!("{design}: a client got {other:?} ({served} served, {closed} closed)")
                }
            }
        }
        assert!(served >= 10, "{design}: only {served} served");
        assert_eq!(served + closed, 100, "{design}");
    }
}

#[test]
#[cfg_attr(smoltalk_no_python, ignore = "needs python3, the independent peer")]
fn udp_server_answers_cli_and_independent_clients() {
    for workers in UDP_WORKERS {
        udp_server_answers_cli_and_independent_clients_with(workers);
    }
}

fn udp_server_answers_cli_and_independent_clients_with(workers: &[&str]) {
    let (_server, port) = udp_server(workers);
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

    // One reply per datagram, same length, from the server's address, up to the largest UDP payload; from
    // many client ports, so that with several workers each one answers some of them.
    let largest = every_byte(256)[..65_507].to_vec();
    for client in 0..16 {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        for message in [&b"a"[..], b"", b"MiXeD 42", &largest] {
            socket.send_to(message, ("127.0.0.1", port)).unwrap();
            let mut buf = vec![0u8; 65_536];
            let (n, from) = socket.recv_from(&mut buf).unwrap();
            assert_eq!(from.port(), port, "{workers:?} client {client}");
            assert!(
                buf[..n] == upper(message)[..],
                "{workers:?} client {client}: {n} bytes back of {}",
                message.len()
            );
        }
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

    // A second server on a port in use is refused, whichever design either has (the event loops' sockets
    // share their port with each other only).
    for design in TCP_DESIGNS {
        let (_server, port) = tcp_server(design);
        let port = port.to_string();
        for second in TCP_DESIGNS {
            let mut args = vec!["tcp-server", "--bind", "127.0.0.1", "--port", &port];
            args.extend_from_slice(second);
            assert_fails(&args, 1, &["already in use"]);
        }
    }
    let (_udp, port) = udp_server(&["--workers", "2"]);
    let port = port.to_string();
    assert_fails(
        &[
            "udp-server",
            "--bind",
            "127.0.0.1",
            "--port",
            &port,
            "--workers",
            "2",
        ],
        1,
        &["already in use"],
    );
    // Options a server does not have are refused, not ignored.
    assert_fails(
        &["udp-server", "--max-connections", "10"],
        1,
        &["--max-connections is for tcp-server: UDP has no connections"],
    );
    assert_fails(
        &["tcp-server", "--stack", "tun", "--workers", "2"],
        1,
        &[
            "--workers is for the kernel stack's tcp-server",
            "--connections",
        ],
    );
    assert_fails(
        &["tcp-server", "--thread-per-client", "--workers", "2"],
        2,
        &["cannot be used with"],
    );
    assert_fails(
        &["tcp-server", "--connections", "5"],
        1,
        &[
            "--connections is for smoltcp's tcp-server",
            "--max-connections",
        ],
    );
    assert_fails(
        &["udp-server", "--max-datagram", "100"],
        1,
        &["--max-datagram is for smoltcp's udp-server"],
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
