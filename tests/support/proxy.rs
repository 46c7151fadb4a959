//! Helpers for the proxy tests, on either side: the kernel-stack proxy on loopback (`tests/proxy.rs`) and the
//! smoltcp proxy on TUN inside a network namespace (`tests/netns_proxy.rs`). The Python origins, curl, raw
//! exchanges and the checks of the proxy's answers are the same; [`Net`] says where programs run and where
//! the test's own sockets connect from.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::*;

/// The HTTP origin, listening on the address given as its first argument. With `CERT KEY` arguments after it,
/// it serves HTTPS. It records every request it gets (peer port, request line and headers exactly as
/// received) and shows them at `/seen`.
pub const PY_ORIGIN: &str = r#"
import ssl, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SMALL = b'hello from the origin\n'
BIG = []
CHUNKS = [b'5\r\nhello\r\n', b'9;note=x\r\n, chunked\r\n', b'7\r\n world\n\r\n', b'0\r\nX-Trailer: yes\r\n\r\n']
seen = []
lock = threading.Lock()

def read_chunked(f):
    body = b''
    while True:
        size = int(f.readline().split(b';')[0].strip(), 16)
        if size == 0:
            while f.readline() not in (b'\r\n', b'\n', b''):
                pass
            return body
        body += f.read(size)
        f.readline()

class Handler(BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'

    def log_message(self, *args):
        pass

    def record(self):
        head = self.raw_requestline.decode('latin-1')
        head += ''.join('%s: %s\r\n' % (k, v) for k, v in self.headers.items())
        with lock:
            seen.append('peer %d\r\n%s' % (self.client_address[1], head))

    def reply(self, code, body, ctype='text/plain', extra=()):
        self.send_response(code)
        self.send_header('Content-Type', ctype)
        self.send_header('Content-Length', str(len(body)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        if self.command != 'HEAD':
            self.wfile.write(body)

    def do_GET(self):
        if self.path == '/seen':
            with lock:
                return self.reply(200, '\r\n'.join(seen).encode('latin-1'))
        self.record()
        if self.path == '/small':
            return self.reply(200, SMALL)
        if self.path == '/big':
            with lock:
                if not BIG:
                    BIG.append(bytes((i * 7 + i // 251) % 256 for i in range(1 << 20)))
            return self.reply(200, BIG[0], 'application/octet-stream')
        if self.path == '/chunked':
            self.send_response(200)
            self.send_header('Content-Type', 'text/plain')
            self.send_header('Transfer-Encoding', 'chunked')
            self.end_headers()
            for part in CHUNKS:
                self.wfile.write(part)
                self.wfile.flush()
                time.sleep(0.01)
            return
        if self.path == '/sleep':
            time.sleep(3)
            return self.reply(200, b'too late\n')
        if self.path == '/extra':
            # A response with more bytes behind it than its Content-Length: a forged second response.
            forged = b'HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nforged\n'
            self.wfile.write(b'HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nfirst\n' + forged)
            return
        if self.path == '/close':
            self.close_connection = True
            return
        self.reply(404, b'no such path\n')

    do_HEAD = do_GET

    def do_POST(self):
        self.record()
        if 'chunked' in self.headers.get('Transfer-Encoding', ''):
            body = read_chunked(self.rfile)
        else:
            body = self.rfile.read(int(self.headers.get('Content-Length', '0')))
        extra = [('X-Method', self.command), ('X-Body-Length', str(len(body)))]
        self.reply(200, body, 'application/octet-stream', extra)

    do_PUT = do_POST

class Server(ThreadingHTTPServer):
    daemon_threads = True

srv = Server((sys.argv[1], 0), Handler)
if len(sys.argv) > 3:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(sys.argv[2], sys.argv[3])
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print('python origin listening on %s:%d' % srv.server_address[:2], flush=True)
srv.serve_forever()
"#;

/// A plain TCP echo server on the address given as its argument, the far end of CONNECT tunnels.
pub const PY_ECHO: &str = r#"
import socket, sys, threading
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((sys.argv[1], 0)); srv.listen(16)
print('python echo listening on %s:%d' % srv.getsockname()[:2], flush=True)
def serve(c):
    while True:
        d = c.recv(65536)
        if not d:
            break
        c.sendall(d)
    c.shutdown(socket.SHUT_WR)
    c.close()
while True:
    c, _ = srv.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

/// The origin's `/small` body.
pub const SMALL: &str = "hello from the origin\n";

/// The origin's `/big` body, computed the same way.
pub fn big_body() -> Vec<u8> {
    (0..1usize << 20)
        .map(|i| ((i * 7 + i / 251) % 256) as u8)
        .collect()
}

/// Every byte value, `times` times over.
pub fn every_byte(times: usize) -> Vec<u8> {
    (0..256 * times).map(|i| (i % 256) as u8).collect()
}

/// Where a test's programs run and where its own sockets connect from.
#[derive(Debug, Clone)]
pub enum Net {
    /// This machine, on loopback: origins listen on 127.0.0.1.
    Loopback,
    /// Inside the network namespace of this name: origins listen on 10.0.2.2, the kernel's side of its device.
    Namespace(String),
}

impl Net {
    /// The address origins listen on.
    pub fn origin_host(&self) -> &'static str {
        match self {
            Net::Loopback => "127.0.0.1",
            Net::Namespace(_) => "10.0.2.2",
        }
    }

    /// `program ARGS`, run here.
    pub fn command(&self, program: &str, args: &[&str]) -> Command {
        let mut cmd = match self {
            Net::Loopback => Command::new(program),
            Net::Namespace(name) => {
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", name, program]);
                cmd
            }
        };
        cmd.args(args);
        cmd
    }

    /// A TCP connection to `addr` from here (10 s to connect). In a namespace the socket is made by a thread
    /// that joins the namespace first (`setns`), then ends: the socket stays in the namespace, and no other
    /// thread of the test process ever changes namespace.
    pub fn connect(&self, addr: SocketAddr) -> TcpStream {
        let name = match self {
            Net::Loopback => {
                return TcpStream::connect_timeout(&addr, Duration::from_secs(10))
                    .unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
            }
            Net::Namespace(name) => name.clone(),
        };
        std::thread::spawn(move || {
            let path = format!("/var/run/netns/{name}");
            let ns = std::fs::File::open(&path).map_err(|e| format!("open {path}: {e}"))?;
            // SAFETY: setns has no memory preconditions; it moves only this (short-lived) thread.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(format!("setns {path}: {}", std::io::Error::last_os_error()));
            }
            TcpStream::connect_timeout(&addr, Duration::from_secs(10))
                .map_err(|e| format!("connect to {addr} in {name}: {e}"))
        })
        .join()
        .expect("the connecting thread panicked")
        .unwrap_or_else(|e| panic!("{e}"))
    }
}

/// A running proxy, with what it logs on stderr collected as it comes.
pub struct Proxy {
    pub server: Running,
    /// The address clients reach it at.
    pub host: String,
    pub port: u16,
    /// Where its clients run.
    pub net: Net,
    log: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Proxy {
    /// Starts `cmd` (a `smoltalk proxy` command, run in `net`) with `RUST_LOG` unset, so it logs at info, and
    /// waits for its "listening" line; clients reach it at `host` and the port it announces.
    pub fn start(mut cmd: Command, host: &str, net: Net) -> Proxy {
        cmd.env_remove("RUST_LOG");
        let (mut server, port) = start_server(cmd, "smoltalk proxy");
        let log = Arc::new(Mutex::new(String::new()));
        let mut stderr = server
            .child
            .stderr
            .take()
            .expect("the proxy's stderr is piped");
        let sink = Arc::clone(&log);
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = stderr.read(&mut buf) {
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Proxy {
            server,
            host: host.to_owned(),
            port,
            net,
            log,
            reader: Some(reader),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}:{}", self.host, self.port)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.host.parse().expect("an address"), self.port)
    }

    /// A connection to the proxy from where its clients run.
    pub fn connect(&self) -> TcpStream {
        self.net.connect(self.addr())
    }

    /// Sends `request` to the proxy on a connection of its own and reads until the proxy closes (or 10 s pass).
    pub fn exchange(&self, request: &[u8]) -> Vec<u8> {
        exchange(&self.net, self.addr(), request)
    }

    /// The log so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits (up to 5 s) until the log holds every one of `needles`; returns the log.
    pub fn wait_log(&self, needles: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let log = self.log();
            if needles.iter().all(|n| log.contains(n)) {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "the proxy never logged {needles:?}; it logged:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the proxy (SIGTERM, by PID) and checks it was still running and no thread of it panicked.
    /// Returns whether it exited with status 0, and its whole log (to its last line, if it exited).
    pub fn stop(mut self) -> (bool, String) {
        assert!(
            self.server.child.try_wait().expect("wait").is_none(),
            "the proxy died during the test; it logged:\n{}",
            self.log()
        );
        let log = self.log();
        assert!(!log.contains("panicked"), "a proxy thread panicked:\n{log}");
        let clean = terminate(&mut self.server);
        if self.server.child.try_wait().is_ok_and(|s| s.is_some()) {
            // It exited, so its stderr is closed and the reader ends.
            if let Some(reader) = self.reader.take() {
                let _ = reader.join();
            }
        }
        (clean, self.log())
    }
}

/// Starts the HTTP origin in `net`; `tls` is `(cert, key)` for HTTPS. Returns it and its port.
pub fn start_origin(net: &Net, tls: Option<(&Path, &Path)>) -> (Running, u16) {
    let mut args = vec!["-c", PY_ORIGIN, net.origin_host()];
    if let Some((cert, key)) = tls {
        args.extend([cert.to_str().unwrap(), key.to_str().unwrap()]);
    }
    start_server(net.command("python3", &args), "python origin")
}

/// Starts the TCP echo server in `net`. Returns it and its port.
pub fn start_echo(net: &Net) -> (Running, u16) {
    let args = ["-c", PY_ECHO, net.origin_host()];
    start_server(net.command("python3", &args), "python echo")
}

/// What the origin in `net` on `port` has seen so far, one request head per entry, asked for directly (not
/// through the proxy).
pub fn seen(net: &Net, port: u16) -> Vec<String> {
    let host = net.origin_host();
    let addr = SocketAddr::new(host.parse().unwrap(), port);
    let request = format!("GET /seen HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n");
    let reply = exchange(net, addr, request.as_bytes());
    let (_, body) = split_head(&reply);
    let body = String::from_utf8_lossy(body).into_owned();
    body.split("peer ")
        .filter(|e| !e.is_empty())
        .map(|e| format!("peer {e}"))
        .collect()
}

/// The peer port an entry of [`seen`] came from (`peer N`).
pub fn peer(entry: &str) -> String {
    entry.lines().next().unwrap().to_owned()
}

/// curl through `proxy`, where its clients run: quiet but showing errors, no config file, no proxy settings
/// from the environment, 10 s at most.
pub fn curl(proxy: &Proxy, args: &[&str]) -> Output {
    let mut cmd = proxy.net.command(
        "curl",
        &["-q", "-sS", "--max-time", "10", "--noproxy", "", "-x"],
    );
    cmd.arg(proxy.url()).args(args);
    for var in [
        "http_proxy",
        "HTTP_PROXY",
        "https_proxy",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
        "no_proxy",
        "NO_PROXY",
        "CURL_HOME",
    ] {
        cmd.env_remove(var);
    }
    run(cmd)
}

/// Runs curl and checks that it succeeded.
pub fn curl_ok(proxy: &Proxy, args: &[&str]) -> Output {
    let out = curl(proxy, args);
    assert!(
        out.status.success(),
        "curl {args:?} failed: {}\nproxy log:\n{}",
        stderr(&out),
        proxy.log()
    );
    out
}

/// Connects to `addr` from `net`, sends `request`, reads until the other side closes (or 10 s pass).
pub fn exchange(net: &Net, addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut stream = net.connect(addr);
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request).expect("send");
    read_all(&mut stream)
}

/// Everything `stream` gives until it closes (a reset after some bytes keeps those bytes).
pub fn read_all(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    out
}

/// A message's head (as text) and body.
pub fn split_head(message: &[u8]) -> (String, &[u8]) {
    let at = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| {
            panic!("no end of head in {:?}", String::from_utf8_lossy(message));
        });
    (
        String::from_utf8_lossy(&message[..at + 4]).into_owned(),
        &message[at + 4..],
    )
}

/// The final response's head and body, past any interim (1xx) heads.
pub fn final_head(message: &[u8]) -> (String, &[u8]) {
    let (head, body) = split_head(message);
    match head.starts_with("HTTP/1.1 1") {
        true => final_head(body),
        false => (head, body),
    }
}

/// The value of the header `name` in `head` (first one; case-insensitive name).
pub fn header<'h>(head: &'h str, name: &str) -> Option<&'h str> {
    head.lines().skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Checks that `response` is the proxy's own answer `status`: that status line, `Connection: close`, an HTML
/// page of exactly `Content-Length` bytes naming the status.
pub fn assert_error_page(response: &[u8], status: &str) {
    let text = String::from_utf8_lossy(response);
    assert!(
        text.starts_with(&format!("HTTP/1.1 {status}\r\n")),
        "expected {status}, got:\n{text}"
    );
    let (head, body) = split_head(response);
    assert_eq!(header(&head, "connection"), Some("close"), "{head}");
    assert_eq!(
        header(&head, "content-type"),
        Some("text/html; charset=utf-8"),
        "{head}"
    );
    assert_eq!(
        header(&head, "content-length"),
        Some(body.len().to_string().as_str()),
        "{text}"
    );
    let body = String::from_utf8_lossy(body);
    assert!(body.starts_with("<!DOCTYPE html>"), "{body}");
    assert!(body.contains(&format!("<h1>{status}</h1>")), "{body}");
    assert!(body.trim_end().ends_with("</html>"), "{body}");
}

/// Sends a request head over a raw connection to the proxy and checks the answer is the error page `status`.
pub fn assert_raw_refusal(proxy: &Proxy, request: &[u8], status: &str) {
    let response = proxy.exchange(request);
    assert_error_page(&response, status);
}

/// The proxy's `Via` entry, as a normal response through it carries it (`1.1 smoltalk-…`).
pub fn via_of(proxy: &Proxy, origin_port: u16) -> String {
    let host = proxy.net.origin_host();
    let out = curl_ok(
        proxy,
        &[
            "-D",
            "-",
            "-o",
            "/dev/null",
            &format!("http://{host}:{origin_port}/small"),
        ],
    );
    let head = stdout(&out);
    header(&head, "via")
        .unwrap_or_else(|| panic!("no Via in {head}"))
        .to_owned()
}

/// A fresh self-signed certificate for `origin.test` in a directory of this test's own: `(dir, cert, key)`.
pub fn self_signed_cert() -> (PathBuf, PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("smoltalk-proxy-test-{}-tls", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let mut cmd = Command::new("openssl");
    cmd.args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .args([
            "-subj",
            "/CN=origin.test",
            "-days",
            "1",
            "-addext",
            "subjectAltName=DNS:origin.test",
        ]);
    let out = run(cmd);
    assert!(out.status.success(), "openssl: {}", stderr(&out));
    (dir, cert, key)
}
