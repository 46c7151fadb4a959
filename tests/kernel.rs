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
    // A smoltcp client's server or DNS server of a family smoltcp has no address of: said before the device is
    // opened (nothing is sent; names are looked up in tests/netns_ipv6.rs, inside a namespace).
    for (host, dns, said) in [
        ("fd00:2::2", None, "fd00:2::2 is IPv6"),
        (
            "server.example",
            Some("fd00:2::2"),
            "DNS server fd00:2::2 is IPv6",
        ),
    ] {
        let mut args = vec![
            "tcp-client",
            "--stack",
            "tun",
            "--ip",
            "10.0.2.15/24",
            host,
            "12000",
            "x",
        ];
        args.extend(dns.iter().flat_map(|dns| ["--dns", *dns]));
        assert_fails(
            &args,
            1,
            &[
                said,
                "but smoltcp has no address of that family here (see --ip)",
            ],
        );
    }
    // --dns is smoltcp's: the kernel stack asks the system's resolver.
    assert_fails(
        &[
            "tcp-client",
            "localhost",
            "12000",
            "x",
            "--dns",
            "127.0.0.53",
        ],
        1,
        &["--dns is for --stack tun|tap"],
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

// ---------------------------------------------------------------------------------------------------------------
// IPv6: the servers listen on [::] by default and take IPv4 clients there too; the clients take IPv6 addresses,
// [::1] and names. Loopback only: 127.0.0.1 and ::1.

/// A TCP client of the given family (`4` or `6`, a socket made with `AF_INET` or `AF_INET6` whatever the
/// address looks like): sends MESSAGE, reads as many bytes back, and prints its own port and the reply.
const PY_TCP_CLIENT_OF_FAMILY: &str = r#"
import socket, sys
family = {'4': socket.AF_INET, '6': socket.AF_INET6}[sys.argv[1]]
host, port, message = sys.argv[2], int(sys.argv[3]), sys.argv[4].encode()
s = socket.socket(family, socket.SOCK_STREAM); s.settimeout(10)
s.connect((host, port))
s.sendall(message)
reply = b''
while len(reply) < len(message):
    chunk = s.recv(65536)
    if not chunk:
        break
    reply += chunk
print(s.getsockname()[1], reply.decode(), flush=True)
s.close()
"#;

/// A UDP client of the given family: sends MESSAGE, takes the reply only from the address it sent to (so a
/// reply from the other family, or another address, fails it), and prints its own port and the reply.
const PY_UDP_CLIENT_OF_FAMILY: &str = r#"
import socket, sys
family = {'4': socket.AF_INET, '6': socket.AF_INET6}[sys.argv[1]]
host, port, message = sys.argv[2], int(sys.argv[3]), sys.argv[4].encode()
s = socket.socket(family, socket.SOCK_DGRAM); s.settimeout(5)
s.sendto(message, (host, port))
reply, sender = s.recvfrom(65536)
if sender[0] != host or sender[1] != port:
    sys.exit('reply from %r, not from %s port %d' % (sender, host, port))
print(s.getsockname()[1], reply.decode(), flush=True)
"#;

/// Whether this machine has an IPv6 loopback (`::1` can be bound); if not, the test says why and returns (under
/// `CI=true` it fails instead, see [`cannot_run`]).
fn has_ipv6_loopback(test: &str) -> bool {
    match std::net::TcpListener::bind("[::1]:0") {
        Ok(_) => true,
        Err(e) => {
            cannot_run(test, &format!("no IPv6 loopback (binding ::1 failed: {e})"));
            false
        }
    }
}

/// A server started by the test, with its start-up line and its log (standard error, at info) kept.
struct LoggedServer {
    server: Running,
    line: String,
    log: std::sync::Arc<std::sync::Mutex<String>>,
    log_reader: std::thread::JoinHandle<()>,
}

impl LoggedServer {
    /// Starts `smoltalk ARGS` and waits for its start-up line.
    fn start(args: &[&str]) -> LoggedServer {
        use std::io::BufRead;
        use std::process::Stdio;
        let mut cmd = smoltalk_args(args);
        cmd.env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn smoltalk");
        let (log, log_reader) = collect(child.stderr.take().expect("stderr"));
        let mut stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        let _ = stdout.read_line(&mut line);
        let port = line
            .split_whitespace()
            .skip_while(|w| *w != "on")
            .nth(1)
            .and_then(|addr| addr.rsplit(':').next())
            .and_then(|p| p.parse().ok());
        let Some(port) = port else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{args:?} did not start: {line:?} {}", log.lock().unwrap());
        };
        std::thread::spawn(move || for _ in stdout.lines() {});
        LoggedServer {
            server: Running { child, port },
            line: line.trim_end().to_string(),
            log,
            log_reader,
        }
    }

    fn port(&self) -> u16 {
        self.server.port
    }

    /// Waits (up to 10 s) until the log holds every one of `lines`: a server logs a client's end once it has
    /// read the client's FIN, which may come after the client itself has returned.
    fn wait_log(&self, lines: &[String]) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            let log = self.log.lock().unwrap().clone();
            if lines.iter().all(|line| log.contains(line.as_str())) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// Stops the server (SIGTERM, by its PID) and returns everything it logged.
    fn stop(mut self) -> String {
        terminate(&mut self.server);
        drop(self.server);
        let _ = self.log_reader.join();
        let log = self.log.lock().unwrap().clone();
        log
    }
}

/// Runs one of the Python clients above; returns its port and the reply it printed.
fn python_client(
    script: &str,
    family: &str,
    host: &str,
    port: u16,
    message: &str,
) -> (u16, String) {
    let out = run(python(script, &[family, host, &port.to_string(), message]));
    assert!(
        out.status.success(),
        "python IPv{family} client to {host} port {port}: {}",
        stderr(&out)
    );
    let printed = stdout(&out);
    let (local_port, reply) = printed
        .trim_end()
        .split_once(' ')
        .unwrap_or_else(|| panic!("python printed {printed:?}"));
    (local_port.parse().expect("port"), reply.to_string())
}

/// What `localhost` resolves to here, in the system resolver's order (the clients see the same).
fn localhost(port: u16) -> Vec<std::net::SocketAddr> {
    use std::net::ToSocketAddrs;
    ("localhost", port)
        .to_socket_addrs()
        .expect("localhost resolves")
        .collect()
}

/// `::1 and 127.0.0.1`: a name's addresses as the clients list them.
fn listed(addrs: &[std::net::SocketAddr]) -> String {
    let ips: Vec<String> = addrs.iter().map(|a| a.ip().to_string()).collect();
    match ips.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
        None => String::new(),
    }
}

#[test]
#[cfg_attr(smoltalk_no_python, ignore = "needs python3, the independent peer")]
fn default_tcp_server_answers_ipv6_and_ipv4_clients_on_one_port() {
    if !has_ipv6_loopback("default_tcp_server_answers_ipv6_and_ipv4_clients_on_one_port") {
        return;
    }
    for design in TCP_DESIGNS {
        let mut args = vec!["tcp-server", "--port", "0"];
        args.extend_from_slice(design);
        let server = LoggedServer::start(&args);
        let port = server.port();
        assert_eq!(
            server.line,
            format!("smoltalk tcp-server listening on [::]:{port} (IPv4 and IPv6, kernel stack)"),
            "{design:?}"
        );
        let (v6_port, v6_reply) =
            python_client(PY_TCP_CLIENT_OF_FAMILY, "6", "::1", port, "over ipv6");
        assert_eq!(v6_reply, "OVER IPV6", "{design:?}");
        let (v4_port, v4_reply) =
            python_client(PY_TCP_CLIENT_OF_FAMILY, "4", "127.0.0.1", port, "over ipv4");
        assert_eq!(v4_reply, "OVER IPV4", "{design:?}");

        // The log names each client as a person knows it: the IPv4 one as 127.0.0.1, never ::ffff:127.0.0.1.
        let expected = [
            format!("tcp: connection from [::1]:{v6_port}"),
            format!("tcp: connection from 127.0.0.1:{v4_port}"),
            format!("tcp: 127.0.0.1:{v4_port} closed after 9 bytes"),
        ];
        server.wait_log(&expected);
        let log = server.stop();
        for expected in expected {
            assert!(
                log.contains(&expected),
                "{design:?}: {expected:?} not in\n{log}"
            );
        }
        assert!(
            !log.contains("::ffff:"),
            "{design:?}: a mapped address in\n{log}"
        );
    }
}

#[test]
#[cfg_attr(smoltalk_no_python, ignore = "needs python3, the independent peer")]
fn default_udp_server_answers_ipv6_and_ipv4_clients_from_their_own_family() {
    if !has_ipv6_loopback("default_udp_server_answers_ipv6_and_ipv4_clients_from_their_own_family")
    {
        return;
    }
    for workers in UDP_WORKERS {
        let mut args = vec!["udp-server", "--port", "0"];
        args.extend_from_slice(workers);
        let server = LoggedServer::start(&args);
        let port = server.port();
        assert_eq!(
            server.line,
            format!("smoltalk udp-server listening on [::]:{port} (IPv4 and IPv6, kernel stack)"),
            "{workers:?}"
        );
        // From many client ports, so that with several workers each one answers some of them.
        for client in 0..8 {
            let (_, reply) = python_client(
                PY_UDP_CLIENT_OF_FAMILY,
                "6",
                "::1",
                port,
                "datagram over ipv6",
            );
            assert_eq!(reply, "DATAGRAM OVER IPV6", "{workers:?} client {client}");
            let (_, reply) = python_client(
                PY_UDP_CLIENT_OF_FAMILY,
                "4",
                "127.0.0.1",
                port,
                "datagram over ipv4",
            );
            assert_eq!(reply, "DATAGRAM OVER IPV4", "{workers:?} client {client}");
        }
        let log = server.stop();
        assert!(
            !log.contains("::ffff:"),
            "{workers:?}: a mapped address in\n{log}"
        );
    }
}

#[test]
fn cli_clients_reach_the_default_server_by_ipv6_address_and_by_name() {
    if !has_ipv6_loopback("cli_clients_reach_the_default_server_by_ipv6_address_and_by_name") {
        return;
    }
    for design in TCP_DESIGNS {
        let mut args = vec!["tcp-server", "--port", "0"];
        args.extend_from_slice(design);
        let server = LoggedServer::start(&args);
        let port = server.port().to_string();
        for host in ["::1", "[::1]", "127.0.0.1"] {
            let out = run(smoltalk_args(&["tcp-client", host, &port, "hello v6"]));
            assert!(out.status.success(), "{design:?} {host}: {}", stderr(&out));
            assert_eq!(stdout(&out), format!("{host} > HELLO V6\n"), "{design:?}");
            // An address is used as given: nothing to say about it.
            assert!(
                !stderr(&out).contains("connected to"),
                "{design:?} {host}: {}",
                stderr(&out)
            );
        }
        // A name: the first of its addresses connects (the server takes both families), and standard error
        // says which, once.
        let addrs = localhost(server.port());
        let out = run_with_input(
            smoltalk_args(&["tcp-client", "localhost", &port]),
            b"one\ntwo\n",
        );
        assert!(out.status.success(), "{design:?}: {}", stderr(&out));
        assert_eq!(
            stdout(&out),
            "localhost > ONE\nlocalhost > TWO\n",
            "{design:?}"
        );
        let said = format!(
            "smoltalk: localhost is {}; connected to {}",
            listed(&addrs),
            addrs[0]
        );
        assert_eq!(
            stderr(&out)
                .lines()
                .filter(|l| l.contains("localhost is"))
                .collect::<Vec<_>>(),
            [said.as_str()],
            "{design:?}"
        );
        server.stop();
    }
    for workers in UDP_WORKERS {
        let mut args = vec!["udp-server", "--port", "0"];
        args.extend_from_slice(workers);
        let server = LoggedServer::start(&args);
        let port = server.port().to_string();
        for host in ["::1", "[::1]", "127.0.0.1"] {
            let out = run(smoltalk_args(&["udp-client", host, &port, "hello v6"]));
            assert!(out.status.success(), "{workers:?} {host}: {}", stderr(&out));
            assert_eq!(stdout(&out), format!("{host} > HELLO V6\n"), "{workers:?}");
            assert!(
                !stderr(&out).contains("sending to"),
                "{workers:?} {host}: {}",
                stderr(&out)
            );
        }
        let addrs = localhost(server.port());
        let target = addrs.iter().find(|a| a.is_ipv4()).unwrap_or(&addrs[0]);
        let out = run(smoltalk_args(&[
            "udp-client",
            "localhost",
            &port,
            "by name",
        ]));
        assert!(out.status.success(), "{workers:?}: {}", stderr(&out));
        assert_eq!(stdout(&out), "localhost > BY NAME\n", "{workers:?}");
        assert_eq!(
            stderr(&out)
                .lines()
                .filter(|l| l.contains("localhost is"))
                .collect::<Vec<_>>(),
            [format!(
                "smoltalk: localhost is {}; sending to {target}",
                listed(&addrs)
            )
            .as_str()],
            "{workers:?}"
        );
        server.stop();
    }
}

/// A name whose first addresses are refused: the TCP client goes on to the next, and says so. With a server on
/// one family, every address of the other family is refused (if `localhost` has only 127.0.0.1 here, the IPv6
/// server leaves it nothing to connect to, and the error names the address).
#[test]
fn tcp_client_goes_through_a_names_addresses_until_one_connects() {
    if !has_ipv6_loopback("tcp_client_goes_through_a_names_addresses_until_one_connects") {
        return;
    }
    for bind in ["127.0.0.1", "::1"] {
        let server = LoggedServer::start(&["tcp-server", "--bind", bind, "--port", "0"]);
        let port = server.port();
        let addrs = localhost(port);
        let out = run(smoltalk_args(&[
            "tcp-client",
            "localhost",
            &port.to_string(),
            "hi",
        ]));
        let served = |a: &&std::net::SocketAddr| a.ip().to_string() == bind;
        match addrs.iter().position(|a| served(&a)) {
            Some(at) => {
                assert!(out.status.success(), "{bind}: {}", stderr(&out));
                assert_eq!(stdout(&out), "localhost > HI\n");
                let refused: String = addrs[..at]
                    .iter()
                    .map(|a| format!("{a} refused, so "))
                    .collect();
                let said = format!(
                    "smoltalk: localhost is {}; {refused}connected to {}",
                    listed(&addrs),
                    addrs[at]
                );
                assert!(
                    stderr(&out).lines().any(|l| l == said),
                    "{said:?} not in {}",
                    stderr(&out)
                );
            }
            None => {
                assert_eq!(out.status.code(), Some(3), "{bind}: {}", stderr(&out));
                let last = stderr(&out).lines().last().unwrap_or_default().to_string();
                for addr in &addrs {
                    assert!(last.contains(&addr.to_string()), "{addr} not in {last}");
                }
                assert!(last.contains("refused"), "{last}");
            }
        }
        server.stop();
    }
}

#[test]
fn a_server_on_one_family_refuses_clients_of_the_other() {
    if !has_ipv6_loopback("a_server_on_one_family_refuses_clients_of_the_other") {
        return;
    }
    for design in TCP_DESIGNS {
        for (bind, line_addr, families, serves, refuses) in [
            ("::1", "[::1]", "", "::1", "127.0.0.1"),
            ("127.0.0.1", "127.0.0.1", "", "127.0.0.1", "::1"),
            ("0.0.0.0", "0.0.0.0", "IPv4 only, ", "127.0.0.1", "::1"),
        ] {
            let mut args = vec!["tcp-server", "--bind", bind, "--port", "0"];
            args.extend_from_slice(design);
            let server = LoggedServer::start(&args);
            let port = server.port();
            assert_eq!(
                server.line,
                format!(
                    "smoltalk tcp-server listening on {line_addr}:{port} ({families}kernel stack)"
                )
            );
            let out = run(smoltalk_args(&[
                "tcp-client",
                serves,
                &port.to_string(),
                "yes",
            ]));
            assert!(
                out.status.success(),
                "{design:?} {bind} {serves}: {}",
                stderr(&out)
            );
            assert_eq!(stdout(&out), format!("{serves} > YES\n"));

            let shown = match refuses.contains(':') {
                true => format!("[{refuses}]:{port}"),
                false => format!("{refuses}:{port}"),
            };
            let out = run(smoltalk_args(&[
                "tcp-client",
                refuses,
                &port.to_string(),
                "no",
            ]));
            assert_eq!(
                out.status.code(),
                Some(3),
                "{design:?} {bind} {refuses}: {}",
                stderr(&out)
            );
            assert_eq!(
                stderr(&out).lines().last(),
                Some(
                    format!(
                        "smoltalk: error: connection to {shown} refused: the server is probably not running on \
                         that address and port"
                    )
                    .as_str()
                ),
                "{design:?} {bind}"
            );
            assert!(out.stdout.is_empty());
            server.stop();
        }
        // `--bind ::` said outright is the default's dual stack.
        let mut args = vec!["tcp-server", "--bind", "::", "--port", "0"];
        args.extend_from_slice(design);
        let server = LoggedServer::start(&args);
        let port = server.port().to_string();
        assert!(
            server.line.ends_with("(IPv4 and IPv6, kernel stack)"),
            "{}",
            server.line
        );
        for host in ["::1", "127.0.0.1"] {
            let out = run(smoltalk_args(&["tcp-client", host, &port, "both"]));
            assert_eq!(
                stdout(&out),
                format!("{host} > BOTH\n"),
                "{design:?}: {}",
                stderr(&out)
            );
        }
        server.stop();
    }
    // UDP: a datagram to the other family gets no reply.
    for workers in UDP_WORKERS {
        let mut args = vec!["udp-server", "--bind", "::1", "--port", "0"];
        args.extend_from_slice(workers);
        let server = LoggedServer::start(&args);
        let port = server.port().to_string();
        let out = run(smoltalk_args(&["udp-client", "::1", &port, "yes"]));
        assert_eq!(stdout(&out), "::1 > YES\n", "{workers:?}: {}", stderr(&out));
        assert_fails(
            &[
                "udp-client",
                "127.0.0.1",
                &port,
                "no",
                "--timeout",
                "0.2",
                "--tries",
                "1",
            ],
            8,
            &[&format!("no reply from 127.0.0.1:{port} after 1 tries")],
        );
        server.stop();
    }
}

/// The "already in use" check holds across the families: a server on `[::]` (the default) takes IPv4 clients
/// too, so a second server on `0.0.0.0` or `127.0.0.1`, same port, is refused, and the other way round.
#[test]
fn servers_on_either_family_never_share_a_port() {
    if !has_ipv6_loopback("servers_on_either_family_never_share_a_port") {
        return;
    }
    let pairs: [(&[&str], &[&str]); 3] = [
        (&[], &["--bind", "0.0.0.0"]),
        (&["--bind", "0.0.0.0"], &[]),
        (&[], &["--bind", "127.0.0.1"]),
    ];
    for (first_bind, second_bind) in pairs {
        for design in TCP_DESIGNS {
            let mut args = vec!["tcp-server", "--port", "0"];
            args.extend_from_slice(first_bind);
            args.extend_from_slice(design);
            let server = LoggedServer::start(&args);
            let port = server.port().to_string();
            for second in TCP_DESIGNS {
                let mut args = vec!["tcp-server", "--port", &port];
                args.extend_from_slice(second_bind);
                args.extend_from_slice(second);
                assert_server_refused(&args, "already in use");
            }
            server.stop();
        }
        for workers in UDP_WORKERS {
            let mut args = vec!["udp-server", "--port", "0"];
            args.extend_from_slice(first_bind);
            args.extend_from_slice(workers);
            let server = LoggedServer::start(&args);
            let port = server.port().to_string();
            for second in UDP_WORKERS {
                let mut args = vec!["udp-server", "--port", &port];
                args.extend_from_slice(second_bind);
                args.extend_from_slice(second);
                assert_server_refused(&args, "already in use");
            }
            server.stop();
        }
    }
}

/// Starts `smoltalk ARGS`, a server that must be refused: it exits 1 with an error line containing `needle`.
/// One that starts instead (it prints its start-up line) is stopped at once and fails the test, rather than
/// serving for ever.
fn assert_server_refused(args: &[&str], needle: &str) {
    use std::io::BufRead;
    use std::process::Stdio;
    let mut child = smoltalk_args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn smoltalk");
    let (log, log_reader) = collect(child.stderr.take().expect("stderr"));
    let mut line = String::new();
    let _ = std::io::BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line);
    if line.contains("listening on") {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "{args:?} started ({}) where it should have been refused",
            line.trim_end()
        );
    }
    let status = child.wait().expect("wait");
    let _ = log_reader.join();
    let log = log.lock().unwrap().clone();
    assert_eq!(status.code(), Some(1), "{args:?}: {log}");
    assert!(log.contains(needle), "{args:?}: {needle:?} not in {log}");
}

/// A free port on `::1` with nothing listening on it (TCP and UDP).
fn closed_ipv6_port() -> u16 {
    let socket = std::net::TcpListener::bind("[::1]:0").expect("bind ::1");
    socket.local_addr().expect("addr").port()
}

#[test]
fn ipv6_client_errors_are_one_clear_line() {
    if !has_ipv6_loopback("ipv6_client_errors_are_one_clear_line") {
        return;
    }
    let port = closed_ipv6_port();
    let closed = port.to_string();
    for host in ["[::1]", "::1"] {
        let out = run(smoltalk_args(&["tcp-client", host, &closed, "anyone?"]));
        assert_eq!(out.status.code(), Some(3), "{host}: {}", stderr(&out));
        assert_eq!(
            stderr(&out).lines().last(),
            Some(
                format!(
                    "smoltalk: error: connection to [::1]:{port} refused: the server is probably not running on \
                     that address and port"
                )
                .as_str()
            )
        );
        let out = run(smoltalk_args(&[
            "udp-client",
            host,
            &closed,
            "anyone?",
            "--timeout",
            "0.2",
            "--tries",
            "1",
        ]));
        assert_eq!(out.status.code(), Some(8), "{host}: {}", stderr(&out));
        assert_eq!(
            stderr(&out).lines().last(),
            Some(
                format!(
                    "smoltalk: error: no reply from [::1]:{port} after 1 tries: UDP has no connection, so the \
                     datagrams may have been lost or no server is listening on that address and port"
                )
                .as_str()
            )
        );
    }
    // Brackets hold an IPv6 address only; anything else in them is refused before any lookup.
    for host in ["[localhost]", "[127.0.0.1]", "[::1"] {
        for client in ["tcp-client", "udp-client"] {
            assert_fails(
                &[client, host, &closed, "x"],
                1,
                &[&format!(
                    "{host} is not an IPv6 address: brackets hold only an IPv6 address, as in [::1]"
                )],
            );
        }
    }
    // A port in use on ::1 is named with its brackets.
    let taken = std::net::TcpListener::bind("[::1]:0").expect("bind ::1");
    let port = taken.local_addr().expect("addr").port().to_string();
    assert_server_refused(
        &["tcp-server", "--bind", "::1", "--port", &port],
        &format!("TCP address [::1]:{port} is already in use"),
    );
}
