//! Helpers for the proxy tests, on either side: the kernel-stack proxy on loopback (`tests/proxy.rs`) and the
//! smoltcp proxy on TUN inside a network namespace (`tests/netns_proxy.rs`). The Python origins, curl, raw
//! exchanges and the checks of the proxy's answers are the same; [`Net`] says where programs run and where
//! the test's own sockets connect from. The scenarios both proxies are put through live in [`scenario`], each
//! called by a test in either file.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::*;

/// The HTTP origin, listening on the address given as its first argument. With `CERT KEY` arguments after it,
/// it serves HTTPS. It records every request it gets (peer port, request line and headers exactly as
/// received) and shows them at `/seen`.
pub const PY_ORIGIN: &str = r#"
import socket, ssl, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SMALL = b'hello from the origin\n'
BIG = []
CHUNKS = [b'5\r\nhello\r\n', b'9;note=x\r\n, chunked\r\n', b'7\r\n world\n\r\n', b'0\r\nX-Trailer: yes\r\n\r\n']
seen = []
lock = threading.Lock()
RAW = {
    # Chunked framing with bare LFs: must never reach a client.
    '/bare-lf-chunks': b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\nok\n0\n\n',
    # Two chunked codings: not one framing (502).
    '/two-te': b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n',
    # One length, said three times: the client gets it once.
    '/cl-list': b'HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\nX-Between: 1\r\nContent-Length: 3\r\n\r\nabc',
}

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
        if self.path in RAW:
            # Responses whose framing the proxy must not relay as it came (issue 13).
            self.wfile.write(RAW[self.path])
            self.wfile.flush()
            self.close_connection = self.path != '/cl-list'
            return
        if self.path == '/many-fields':
            # 80 cookies and a 12 KB policy: a head of 16 KiB with 85 fields, as real sites send.
            extra = [('Set-Cookie', 'c%d=%s; Path=/' % (i, 'v' * 60)) for i in range(80)]
            extra.append(('Content-Security-Policy', "default-src 'self'; " + 'a' * 12000))
            return self.reply(200, b'many fields\n', extra=extra)
        if self.path == '/huge-head':
            # 70 KiB of head: over the 64 KiB a proxy takes.
            return self.reply(200, b'never\n', extra=[('X-Filler-%d' % i, 'f' * 1000) for i in range(70)])
        self.reply(404, b'no such path\n')

    def do_OPTIONS(self):
        self.record()
        self.reply(200, b'', extra=[('Allow', 'GET, OPTIONS')])

    do_HEAD = do_GET

    def handle_expect_100(self):
        if self.path == '/late-continue':
            # The go-ahead well after the proxy stopped waiting for it, and the body read only a second later.
            time.sleep(1.5)
            self.send_response_only(100)
            self.end_headers()
            time.sleep(1)
            return True
        if self.path == '/continue-then-413':
            # The go-ahead and, in the same write, the refusal; then nothing more is read.
            self.wfile.write(b'HTTP/1.1 100 Continue\r\n\r\n'
                             b'HTTP/1.1 413 Payload Too Large\r\nContent-Length: 10\r\n\r\ntoo large\n')
            self.wfile.flush()
            time.sleep(120)
            return False
        return BaseHTTPRequestHandler.handle_expect_100(self)

    def do_POST(self):
        self.record()
        if self.path == '/early':
            # An answer before the body is read, then the close: with the body unread, the kernel resets.
            self.close_connection = True
            return self.reply(413, b'too large\n', extra=[('Connection', 'close')])
        if self.path == '/early-stall':
            # An answer before the body is read; then the connection stays open and nothing more is read.
            self.reply(413, b'too large\n')
            time.sleep(120)
            self.close_connection = True
            return
        if 'chunked' in self.headers.get('Transfer-Encoding', ''):
            body = read_chunked(self.rfile)
        else:
            body = self.rfile.read(int(self.headers.get('Content-Length', '0')))
        extra = [('X-Method', self.command), ('X-Body-Length', str(len(body)))]
        self.reply(200, body, 'application/octet-stream', extra)

    do_PUT = do_POST

class Server(ThreadingHTTPServer):
    daemon_threads = True
    address_family = socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET

srv = Server((sys.argv[1], 0), Handler)
if len(sys.argv) > 3:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(sys.argv[2], sys.argv[3])
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print('python origin listening on %s:%d' % srv.server_address[:2], flush=True)
srv.serve_forever()
"#;

/// A DNS server for the tests: listens on UDP port 53 of the address given first (IPv4 or IPv6), answers A
/// queries for the names given as `NAME=IPv4` arguments and AAAA queries for those given as `NAME=IPv6` (a name
/// may be given twice, once of each family), no records (NODATA) for a known name's other family, no answer at
/// all to AAAA queries for a name also given as `NAME=noaaaa` (a server that drops them), NXDOMAIN for anything
/// else, and prints `query NAME` (`query NAME AAAA` for AAAA) for each query.
pub const PY_DNS: &str = r#"
import socket, sys
names = {}
for arg in sys.argv[2:]:
    name, ip = arg.split('=')
    names.setdefault(name, []).append(ip)
family = socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET
s = socket.socket(family, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 53))
print('dns ready', flush=True)
while True:
    q, a = s.recvfrom(512)
    i, labels = 12, []
    while q[i]:
        labels.append(q[i + 1:i + 1 + q[i]].decode()); i += 1 + q[i]
    qtype, qend = q[i + 1:i + 3], i + 5
    name = '.'.join(labels).lower()
    aaaa = qtype == b'\x00\x1c'
    print('query', name + (' AAAA' if aaaa else ''), flush=True)
    ips = names.get(name)
    if ips is not None and aaaa and 'noaaaa' in ips:
        continue
    if ips is None:
        r = q[:2] + b'\x81\x83\x00\x01\x00\x00\x00\x00\x00\x00' + q[12:qend]
    else:
        want = [ip for ip in ips if ip != 'noaaaa' and (':' in ip) == aaaa] if qtype in (b'\x00\x01', b'\x00\x1c') else []
        answers = b''
        for ip in want:
            data = socket.inet_pton(socket.AF_INET6, ip) if aaaa else socket.inet_aton(ip)
            answers += b'\xc0\x0c' + qtype + b'\x00\x01\x00\x00\x00\x3c' + len(data).to_bytes(2, 'big') + data
        r = q[:2] + b'\x81\x80\x00\x01' + len(want).to_bytes(2, 'big') + b'\x00\x00\x00\x00' + q[12:qend] + answers
    s.sendto(r, a)
"#;

/// Starts [`PY_DNS`] in `ns` on `listen`:53 with `names` (`NAME=IP`); returns it and what it prints (`query NAME`
/// lines), collected as they come.
pub fn start_dns(
    ns: &super::Namespace,
    listen: &str,
    names: &[&str],
) -> (super::Running, Arc<Mutex<String>>) {
    let mut args = vec!["-c", PY_DNS, listen];
    args.extend_from_slice(names);
    let mut cmd = ns.command("python3", &args);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().expect("start the DNS server");
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    let ready = lines.next();
    let server = super::Running { child, port: 53 };
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
    /// Inside the network namespace of this name, which has only loopback: origins listen on 127.0.0.1, and
    /// nothing a hostile request names can be looked up or reached beyond it.
    Isolated(String),
}

impl Net {
    /// The address origins listen on.
    pub fn origin_host(&self) -> &'static str {
        match self {
            Net::Loopback | Net::Isolated(_) => "127.0.0.1",
            Net::Namespace(_) => "10.0.2.2",
        }
    }

    /// The address the proxy sees its clients (curl, the test's own sockets) come from, as its log names them
    /// (`From …`, `To …`).
    pub fn client_host(&self) -> &'static str {
        match self {
            Net::Loopback | Net::Isolated(_) => "127.0.0.1",
            Net::Namespace(_) => "10.0.2.2",
        }
    }

    /// `program ARGS`, run here.
    pub fn command(&self, program: &str, args: &[&str]) -> Command {
        let mut cmd = match self {
            Net::Loopback => Command::new(program),
            Net::Namespace(name) | Net::Isolated(name) => {
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", name, program]);
                cmd
            }
        };
        cmd.args(args);
        cmd
    }

    /// A TCP connection to `addr` from here (10 s to connect).
    pub fn connect(&self, addr: SocketAddr) -> TcpStream {
        self.inside(move || TcpStream::connect_timeout(&addr, Duration::from_secs(10)))
            .unwrap_or_else(|e| panic!("connect to {addr} in {self:?}: {e}"))
    }

    /// Runs `work` here: in a namespace, on a thread that joins the namespace first (`setns`) and then ends.
    /// Sockets `work` makes stay in the namespace, and no other thread of the test process changes namespace.
    pub fn inside<R: Send + 'static>(&self, work: impl FnOnce() -> R + Send + 'static) -> R {
        let name = match self {
            Net::Loopback => return work(),
            Net::Namespace(name) | Net::Isolated(name) => name.clone(),
        };
        std::thread::spawn(move || {
            let path = format!("/var/run/netns/{name}");
            let ns = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
            // Moves only this (short-lived) thread.
            smoltalk::sys::enter_network_namespace(&ns)
                .unwrap_or_else(|e| panic!("setns {path}: {e}"));
            work()
        })
        .join()
        .unwrap_or_else(|_| panic!("the thread working inside {self:?} panicked"))
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
    /// waits for its "listening" line; clients reach it at `host` and the port it announces. To see more of
    /// what a failing test's proxy did, set `SMOLTALK_TEST_LOG` (say `debug`): it becomes the proxy's
    /// `RUST_LOG`, and the log a failed assertion prints has those lines too.
    pub fn start(mut cmd: Command, host: &str, net: Net) -> Proxy {
        match std::env::var("SMOLTALK_TEST_LOG") {
            Ok(level) => cmd.env("RUST_LOG", level),
            Err(_) => cmd.env_remove("RUST_LOG"),
        };
        let (mut server, port) = start_server(cmd, "smoltalk proxy");
        let stderr = server
            .child
            .stderr
            .take()
            .expect("the proxy's stderr is piped");
        let (log, reader) = collect(stderr);
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
        match self.host.contains(':') {
            true => format!("http://[{}]:{}", self.host, self.port),
            false => format!("http://{}:{}", self.host, self.port),
        }
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

/// A TCP server on the address given as its argument, the far end of a tunnel that is busy one way: to each
/// client it sends the bytes `0`..`29`, one every 100 ms, then stays silent. Like a TLS server, it closes as soon
/// as its client's side ends.
pub const PY_DRIP: &str = r#"
import socket, sys, threading, time
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((sys.argv[1], 0)); srv.listen(16)
print('python drip listening on %s:%d' % srv.getsockname()[:2], flush=True)
def watch(c, ended):
    try:
        while c.recv(4096):
            pass
    except OSError:
        pass
    ended.set()
def serve(c):
    ended = threading.Event()
    threading.Thread(target=watch, args=(c, ended), daemon=True).start()
    try:
        for i in range(30):
            if ended.wait(0.1):
                break
            c.sendall(bytes([i]))
        ended.wait(60)
    except OSError:
        pass
    c.close()
while True:
    c, _ = srv.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

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

/// Starts the one-way drip server ([`PY_DRIP`]) in `net`. Returns it and its port.
pub fn start_drip(net: &Net) -> (Running, u16) {
    let args = ["-c", PY_DRIP, net.origin_host()];
    start_server(net.command("python3", &args), "python drip")
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

/// Leaves out of `cmd`'s environment the proxy settings curl would follow and its config file's location, so a
/// test's curl goes only where its arguments say.
pub fn without_proxy_settings(cmd: &mut Command) {
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
}

/// curl through `proxy`, where its clients run: quiet but showing errors, no config file, no proxy settings
/// from the environment, 10 s at most.
pub fn curl(proxy: &Proxy, args: &[&str]) -> Output {
    let mut cmd = proxy.net.command(
        "curl",
        &["-q", "-sS", "--max-time", "10", "--noproxy", "", "-x"],
    );
    cmd.arg(proxy.url()).args(args);
    without_proxy_settings(&mut cmd);
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

/// The scenarios both proxies are put through: each is run by a test of `tests/proxy.rs` (the kernel stack on
/// loopback) and by one of `tests/netns_proxy.rs` (smoltcp on TUN in a namespace). A scenario takes the running
/// proxy, which knows where its clients run ([`Net`]: the origins' address, the clients' address its log names)
/// and the ports of the origins the test started; the test starts the proxy with the flags the scenario names
/// and stops it afterwards. The origins' address stands in every request and log line, so each stack gets the
/// same bytes it got when the scenarios were written out in both files.
pub mod scenario {
    use std::io::{ErrorKind, Read, Write};
    use std::net::Shutdown;
    use std::path::Path;
    use std::time::{Duration, Instant};

    use super::*;

    /// `http://ORIGIN_HOST:PORT/PATH`.
    pub fn at(proxy: &Proxy, port: u16, path: &str) -> String {
        format!("http://{}:{port}{path}", proxy.net.origin_host())
    }

    /// What the origin on `port` has seen so far.
    pub fn seen_at(proxy: &Proxy, port: u16) -> Vec<String> {
        seen(&proxy.net, port)
    }

    /// Checks that curl's verbose output shows every request went on one connection to the proxy: it reused
    /// the connection and never connected again. curl retries a request on a fresh connection when a reused one
    /// dies: that would hide a proxy failure.
    fn assert_one_client_connection(proxy: &Proxy, verbose: &str) {
        assert!(
            verbose.contains("Re-using existing connection"),
            "{verbose}"
        );
        assert_eq!(
            verbose
                .matches(&format!("Connected to {}", proxy.host))
                .count(),
            1,
            "curl had to retry: {verbose}"
        );
    }

    /// GET `/small` by address and by a name the proxy knows from `--resolve origin.test=ORIGIN_HOST`: the
    /// response has the proxy's Via, both requests are logged at info, and the origin gets origin-form requests.
    pub fn get_by_address_and_by_resolved_name(proxy: &Proxy, origin_port: u16) {
        let (host, client) = (proxy.net.origin_host(), proxy.net.client_host());
        let out = curl_ok(proxy, &["-i", &at(proxy, origin_port, "/small")]);
        let (head, body) = split_head(&out.stdout);
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert_eq!(body, SMALL.as_bytes());
        let via = header(&head, "via").unwrap_or_else(|| panic!("no Via in {head}"));
        assert!(via.starts_with("1.1 smoltalk-"), "{via}");
        assert_eq!(header(&head, "content-length"), Some("22"));

        // A name the proxy knows from --resolve: it never asks DNS for it (the kernel proxy runs with --no-dns;
        // in the namespace no DNS server runs, so it must not be asked).
        let out = curl_ok(proxy, &[&format!("http://origin.test:{origin_port}/small")]);
        assert_eq!(stdout(&out), SMALL);

        let log = proxy.wait_log(&[
            &format!("From {client} Request GET http://{host}:{origin_port}/small HTTP/1.1"),
            &format!("From {client} Request GET http://origin.test:{origin_port}/small HTTP/1.1"),
            &format!("To {client} Response HTTP/1.1 200 OK"),
        ]);
        assert!(log.contains("INFO"), "{log}");

        // The origin got origin-form requests with the right Host and the proxy's Via (on TUN, from smoltcp's
        // address).
        let seen = seen_at(proxy, origin_port);
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert!(
            seen[0].contains("\r\nGET /small HTTP/1.1\r\n"),
            "{}",
            seen[0]
        );
        assert!(
            seen[0].contains(&format!("\r\nHost: {host}:{origin_port}\r\n")),
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
    }

    /// Hop-by-hop headers (and those `Connection` names) never reach the origin; end-to-end ones do, and the
    /// proxy's Via is added. The origin must not have seen a request before.
    pub fn hop_by_hop_headers_are_removed_and_end_to_end_ones_kept(
        proxy: &Proxy,
        origin_port: u16,
    ) {
        let out = curl_ok(
            proxy,
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
                &at(proxy, origin_port, "/small"),
            ],
        );
        assert_eq!(stdout(&out), SMALL);
        let seen = seen_at(proxy, origin_port);
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
    }

    /// HEAD `/small`, then GET it on the same client connection: the HEAD response has the length but no body,
    /// and the connection stays usable. The origin must not have seen a request before.
    pub fn head_has_length_but_no_body_and_the_connection_stays_usable(
        proxy: &Proxy,
        origin_port: u16,
    ) {
        let url = at(proxy, origin_port, "/small");
        // HEAD, then GET on the same connection: a body wrongly expected after HEAD would swallow the next response.
        let out = curl_ok(
            proxy,
            &["-v", "-I", &url, "--next", "-x", &proxy.url(), &url],
        );
        let text = stdout(&out);
        let (head, rest) = split_head(&out.stdout);
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert_eq!(header(&head, "content-length"), Some("22"));
        assert_eq!(rest, SMALL.as_bytes(), "{text}");
        assert!(
            stderr(&out).contains("Re-using existing connection"),
            "{}",
            stderr(&out)
        );
        let seen = seen_at(proxy, origin_port);
        assert!(seen[0].contains("\r\nHEAD /small HTTP/1.1\r\n"), "{seen:?}");
        assert!(seen[1].contains("\r\nGET /small HTTP/1.1\r\n"), "{seen:?}");
        proxy.wait_log(&[&format!(
            "From {} Request HEAD {url} HTTP/1.1",
            proxy.net.client_host()
        )]);
    }

    /// POST, PUT and a chunked POST of every byte value, then a 2 MiB POST with `Expect: 100-continue`, to the
    /// origin's echo: every body comes back byte-exact. Temporary files are named after `files`. The origin must
    /// not have seen a request before.
    pub fn post_put_chunked_and_2_mib_bodies_reach_the_origin_byte_exact(
        proxy: &Proxy,
        origin_port: u16,
        files: &str,
    ) {
        let client = proxy.net.client_host();
        let url = at(proxy, origin_port, "/echo");

        let small = every_byte(3);
        let small_file = temp_file(&format!("{files}-post-small"), &small);
        let body_arg = format!("@{}", small_file.display());
        let out = curl_ok(proxy, &["--data-binary", &body_arg, &url]);
        assert!(
            out.stdout == small,
            "POST: {} bytes back of {}",
            out.stdout.len(),
            small.len()
        );

        // PUT of the same body (curl -T sends Content-Length).
        let out = curl_ok(
            proxy,
            &["-D", "-", "-T", small_file.to_str().unwrap(), &url],
        );
        let (head, body) = final_head(&out.stdout);
        assert_eq!(header(&head, "x-method"), Some("PUT"), "{head}");
        assert!(body == small, "PUT: {} bytes back", body.len());

        // A chunked request body is forwarded as chunks.
        let out = curl_ok(
            proxy,
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
        let large_file = temp_file(&format!("{files}-post-large"), &large);
        let out = curl_ok(
            proxy,
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

        let seen = seen_at(proxy, origin_port);
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
            &format!("From {client} Request POST {url} HTTP/1.1"),
            &format!("From {client} Request PUT {url} HTTP/1.1"),
            &format!("To {client} Response HTTP/1.1 100 Continue"),
        ]);
    }

    /// A chunked response arrives decoded by curl, and as the origin framed it (extension and trailer too).
    pub fn chunked_response_arrives_intact_and_with_its_framing(proxy: &Proxy, origin_port: u16) {
        let url = at(proxy, origin_port, "/chunked");
        let out = curl_ok(proxy, &[&url]);
        assert_eq!(stdout(&out), "hello, chunked world\n");
        // --raw: curl leaves the chunks as they came, so this is what the proxy forwarded, extension and all.
        let out = curl_ok(proxy, &["--raw", "-i", &url]);
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
    }

    /// The origin's 1 MiB `/big` body arrives byte-exact.
    pub fn one_mebibyte_body_is_byte_exact(proxy: &Proxy, origin_port: u16) {
        let out = curl_ok(proxy, &[&at(proxy, origin_port, "/big")]);
        let expected = big_body();
        assert_eq!(out.stdout.len(), expected.len());
        assert!(out.stdout == expected, "the 1 MiB body differs");
    }

    /// Keep-alive: a small and a 1 MiB response on one client connection and one origin connection. `earlier`
    /// is how many requests the origin has seen before.
    pub fn keep_alive_reuses_the_client_and_the_origin_connection(
        proxy: &Proxy,
        origin_port: u16,
        earlier: usize,
    ) {
        let client = proxy.net.client_host();
        let small = at(proxy, origin_port, "/small");
        let big = at(proxy, origin_port, "/big");
        let out = curl_ok(proxy, &["-v", &small, &big]);
        assert_one_client_connection(proxy, &stderr(&out));
        let mut expected = SMALL.as_bytes().to_vec();
        expected.extend(big_body());
        assert!(
            out.stdout == expected,
            "{} bytes of {}",
            out.stdout.len(),
            expected.len()
        );
        proxy.wait_log(&[
            &format!("From {client} Request GET {small} HTTP/1.1"),
            &format!("From {client} Request GET {big} HTTP/1.1"),
        ]);
        // Both requests reached the origin on one connection of the proxy's (the same peer port).
        let seen = seen_at(proxy, origin_port);
        assert_eq!(seen.len(), earlier + 2, "{seen:?}");
        assert_eq!(peer(&seen[earlier]), peer(&seen[earlier + 1]), "{seen:?}");
    }

    /// 256 KiB of every byte value through a CONNECT tunnel to the echo server on `echo_port` (which the
    /// proxy's `--connect-ports` lists) come back unchanged; the first bytes ride right behind the head.
    pub fn connect_tunnels_every_byte_both_ways(proxy: &Proxy, echo_port: u16) {
        let (host, client) = (proxy.net.origin_host(), proxy.net.client_host());
        let data = every_byte(1024); // 256 KiB
        let mut stream = proxy.connect();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        // The first tunnel bytes ride right behind the head, as a TLS ClientHello would.
        let mut first =
            format!("CONNECT {host}:{echo_port} HTTP/1.1\r\nHost: {host}:{echo_port}\r\n\r\n")
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
        proxy.wait_log(&[&format!(
            "From {client} Request CONNECT {host}:{echo_port} HTTP/1.1"
        )]);
    }

    /// HTTPS to `origin.test` (which the proxy's `--resolve` maps to the HTTPS origin on `https_port`, listed in
    /// its `--connect-ports`), through a CONNECT tunnel: `/small` and 1 MiB, checked against `cert`. Removes
    /// `tls_dir` (the certificate's) once curl is done with it.
    pub fn https_through_a_connect_tunnel_to_a_resolved_name(
        proxy: &Proxy,
        https_port: u16,
        tls_dir: &Path,
        cert: &Path,
    ) {
        let base = format!("https://origin.test:{https_port}");
        let out = curl_ok(
            proxy,
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
            proxy,
            &["--cacert", cert.to_str().unwrap(), &format!("{base}/big")],
        );
        let _ = std::fs::remove_dir_all(tls_dir);
        assert!(
            out.stdout == big_body(),
            "1 MiB over TLS: {} bytes",
            out.stdout.len()
        );
        proxy.wait_log(&[&format!(
            "From {} Request CONNECT origin.test:{https_port} HTTP/1.1",
            proxy.net.client_host()
        )]);
    }

    /// Malformed requests are 400; a real version the proxy does not speak is 505.
    pub fn malformed_requests_are_400_and_an_unknown_version_505(proxy: &Proxy) {
        let host = proxy.net.origin_host();
        for request in [
            "\x01\x02 not http at all\r\n\r\n".to_owned(),
            "GET http://exa!mple/ HTTP/1.1\r\nHost: x\r\n\r\n".to_owned(),
            "GET http://exa mple/ HTTP/1.1\r\nHost: x\r\n\r\n".to_owned(),
            format!("GET http://user@{host}/ HTTP/1.1\r\n\r\n"),
            format!("GET http://{host}:99999/ HTTP/1.1\r\n\r\n"),
            "GET /no-host HTTP/1.1\r\n\r\n".to_owned(),
            // Content-Length and Transfer-Encoding together is how requests are smuggled.
            format!(
                "POST http://{host}:1/ HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc"
            ),
        ] {
            assert_raw_refusal(proxy, request.as_bytes(), "400 Bad Request");
        }
        // A real version the proxy does not speak is 505.
        let request = format!("GET http://{host}:1/ HTTP/2.0\r\n\r\n");
        assert_raw_refusal(proxy, request.as_bytes(), "505 HTTP Version Not Supported");
        proxy.wait_log(&[&format!(
            "To {} Response HTTP/1.1 400 Bad Request",
            proxy.net.client_host()
        )]);
    }

    /// A request line over 8 KiB is 414, whether its head ends or not; a head over 8 KiB, in one header or in
    /// many, is 431.
    pub fn request_line_over_8_kib_is_414_and_head_over_8_kib_is_431(proxy: &Proxy) {
        let host = proxy.net.origin_host();
        let long_path = "a".repeat(9 * 1024);
        // A whole head, with a request line longer than the proxy takes.
        let request = format!("GET http://{host}:1/{long_path} HTTP/1.1\r\nHost: {host}:1\r\n\r\n");
        assert_raw_refusal(proxy, request.as_bytes(), "414 URI Too Long");
        // A request line that never ends.
        let request = format!("GET http://{host}:1/{}", "b".repeat(20 * 1024));
        assert_raw_refusal(proxy, request.as_bytes(), "414 URI Too Long");
        // One 9 KiB header.
        let request = format!(
            "GET http://{host}:1/ HTTP/1.1\r\nX-Big: {}\r\n\r\n",
            "c".repeat(9 * 1024)
        );
        let too_large = "431 Request Header Fields Too Large";
        assert_raw_refusal(proxy, request.as_bytes(), too_large);
        // More header lines than the proxy takes, each small.
        let many: String = (0..100).map(|i| format!("X-H{i}: {i}\r\n")).collect();
        let request = format!("GET http://{host}:1/ HTTP/1.1\r\n{many}\r\n");
        assert_raw_refusal(proxy, request.as_bytes(), too_large);
        proxy.wait_log(&[&format!(
            "To {} Response HTTP/1.1 414 URI Too Long",
            proxy.net.client_host()
        )]);
    }

    /// 501: a method and a transfer coding the proxy does not handle; neither reaches the origin, which must not
    /// have seen a request before.
    pub fn unsupported_method_and_transfer_coding_are_501(proxy: &Proxy, origin_port: u16) {
        let host = proxy.net.origin_host();
        let out = curl_ok(
            proxy,
            &["-i", "-X", "TRACE", &at(proxy, origin_port, "/small")],
        );
        assert_error_page(&out.stdout, "501 Not Implemented");
        assert!(stdout(&out).contains("The proxy does not forward that method"));
        let request = format!(
            "POST http://{host}:{origin_port}/echo HTTP/1.1\r\nHost: {host}:{origin_port}\r\n\
             Transfer-Encoding: br, chunked\r\n\r\nnot really br"
        );
        let response = proxy.exchange(request.as_bytes());
        assert_error_page(&response, "501 Not Implemented");
        assert!(String::from_utf8_lossy(&response).contains("transfer coding"));
        assert!(seen_at(proxy, origin_port).is_empty());
        proxy.wait_log(&[&format!(
            "To {} Response HTTP/1.1 501 Not Implemented",
            proxy.net.client_host()
        )]);
    }

    /// One rule of RFC 9112 a proxy must hold a request to: the hostile request that breaks it, and the answer.
    pub struct StrictRule {
        pub name: &'static str,
        /// The raw request, given the proxy and the origin's port.
        pub request: fn(&Proxy, u16) -> Vec<u8>,
        pub status: &'static str,
    }

    /// A head to the origin's `/echo` with `headers` (each ending in CRLF) and `body`.
    fn post_with(proxy: &Proxy, origin_port: u16, headers: &str, body: &str) -> Vec<u8> {
        let host = proxy.net.origin_host();
        format!(
            "POST http://{host}:{origin_port}/echo HTTP/1.1\r\nHost: {host}:{origin_port}\r\n{headers}\r\n{body}"
        )
        .into_bytes()
    }

    /// A GET of the origin's `/small` with `headers` (each ending in CRLF).
    fn get_with(proxy: &Proxy, origin_port: u16, headers: &str) -> Vec<u8> {
        let host = proxy.net.origin_host();
        format!(
            "GET http://{host}:{origin_port}/small HTTP/1.1\r\nHost: {host}:{origin_port}\r\n{headers}\r\n"
        )
        .into_bytes()
    }

    /// The rules of the hardening issue, each sent as a hostile request that must never reach the origin.
    pub const STRICT_RULES: &[StrictRule] = &[
        StrictRule {
            // The two framings together are how requests are smuggled (RFC 9112 §6.1).
            name: "content_length_with_transfer_encoding",
            request: |p, o| {
                post_with(
                    p,
                    o,
                    "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n",
                    "3\r\nabc\r\n0\r\n\r\n",
                )
            },
            status: "400 Bad Request",
        },
        StrictRule {
            name: "differing_content_lengths",
            request: |p, o| post_with(p, o, "Content-Length: 3\r\nContent-Length: 4\r\n", "abcd"),
            status: "400 Bad Request",
        },
        StrictRule {
            name: "differing_content_lengths_in_one_list",
            request: |p, o| post_with(p, o, "Content-Length: 3, 4\r\n", "abcd"),
            status: "400 Bad Request",
        },
        StrictRule {
            name: "obsolete_line_folding",
            request: |p, o| get_with(p, o, "X-Folded: first\r\n second\r\n"),
            status: "400 Bad Request",
        },
        StrictRule {
            name: "nul_in_a_header_value",
            request: |p, o| get_with(p, o, "X-Nul: a\0b\r\n"),
            status: "400 Bad Request",
        },
        StrictRule {
            name: "bare_cr_in_a_header_value",
            request: |p, o| get_with(p, o, "X-Cr: a\rb\r\n"),
            status: "400 Bad Request",
        },
        StrictRule {
            name: "bare_cr_ending_the_request_line",
            request: |p, o| {
                let host = p.net.origin_host();
                format!("GET http://{host}:{o}/small HTTP/1.1\rHost: {host}\r\n\r\n").into_bytes()
            },
            status: "400 Bad Request",
        },
        StrictRule {
            name: "request_line_over_the_head_buffer",
            request: |p, o| {
                let host = p.net.origin_host();
                let long = "a".repeat(9000);
                format!("GET http://{host}:{o}/{long} HTTP/1.1\r\nHost: {host}\r\n\r\n")
                    .into_bytes()
            },
            status: "414 URI Too Long",
        },
        StrictRule {
            name: "head_over_the_head_buffer",
            request: |p, o| {
                let headers: String = (0..90)
                    .map(|i| format!("X-Filler-{i}: {}\r\n", "f".repeat(90)))
                    .collect();
                get_with(p, o, &headers)
            },
            status: "431 Request Header Fields Too Large",
        },
        StrictRule {
            name: "unknown_transfer_coding",
            request: |p, o| post_with(p, o, "Transfer-Encoding: br, chunked\r\n", "not really br"),
            status: "501 Not Implemented",
        },
        // Two framings read one way by the proxy and maybe another by the origin (issue 13).
        StrictRule {
            name: "chunked_twice",
            request: |p, o| {
                post_with(
                    p,
                    o,
                    "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
                    "5\r\nhello\r\n0\r\n\r\n",
                )
            },
            status: "400 Bad Request",
        },
        StrictRule {
            name: "identity_beside_chunked",
            request: |p, o| {
                post_with(
                    p,
                    o,
                    "Transfer-Encoding: identity\r\nTransfer-Encoding: chunked\r\n",
                    "5\r\nhello\r\n0\r\n\r\n",
                )
            },
            status: "400 Bad Request",
        },
        // A coding list that does not end in `chunked` leaves the body's end unknown (RFC 9112 §6.3).
        StrictRule {
            name: "transfer_coding_not_ending_in_chunked",
            request: |p, o| post_with(p, o, "Transfer-Encoding: gzip\r\n", "not really gzip"),
            status: "400 Bad Request",
        },
        StrictRule {
            name: "absolute_form_with_userinfo",
            request: |p, o| {
                let host = p.net.origin_host();
                format!("GET http://user:secret@{host}:{o}/small HTTP/1.1\r\nHost: {host}\r\n\r\n")
                    .into_bytes()
            },
            status: "400 Bad Request",
        },
        StrictRule {
            name: "absolute_form_with_an_https_scheme",
            request: |p, o| {
                let host = p.net.origin_host();
                format!("GET https://{host}:{o}/small HTTP/1.1\r\nHost: {host}\r\n\r\n")
                    .into_bytes()
            },
            status: "400 Bad Request",
        },
        StrictRule {
            name: "absolute_form_with_an_ftp_scheme",
            request: |p, o| {
                let host = p.net.origin_host();
                format!("GET ftp://{host}:{o}/small HTTP/1.1\r\nHost: {host}\r\n\r\n").into_bytes()
            },
            status: "400 Bad Request",
        },
        StrictRule {
            name: "request_to_the_proxys_own_address",
            request: |p, _| {
                format!(
                    "GET {}/ HTTP/1.1\r\nHost: {}:{}\r\n\r\n",
                    p.url(),
                    p.host,
                    p.port
                )
                .into_bytes()
            },
            status: "508 Loop Detected",
        },
    ];

    /// Sends the hostile request of rule `name` and checks the answer is its error page, the proxy logged it, and
    /// the origin (which must not have seen a request before) saw nothing.
    pub fn strict_rule_holds(proxy: &Proxy, origin_port: u16, name: &str) {
        let rule = STRICT_RULES
            .iter()
            .find(|r| r.name == name)
            .unwrap_or_else(|| panic!("no rule {name}"));
        let response = proxy.exchange(&(rule.request)(proxy, origin_port));
        let text = String::from_utf8_lossy(&response);
        assert!(
            text.starts_with(&format!("HTTP/1.1 {}\r\n", rule.status)),
            "{name}: expected {}, got:\n{text}",
            rule.status
        );
        assert_error_page(&response, rule.status);
        assert!(
            seen_at(proxy, origin_port).is_empty(),
            "{name} reached the origin"
        );
        proxy.wait_log(&[&format!(
            "To {} Response HTTP/1.1 {}",
            proxy.net.client_host(),
            rule.status
        )]);
    }

    /// A client outside the proxy's `--allow` (started with `--allow 10.9.9.9/32`) is 403 and reaches nothing;
    /// the origin must not have seen a request before.
    pub fn client_not_allowed_is_403(proxy: &Proxy, origin_port: u16) {
        let out = curl_ok(proxy, &["-i", &at(proxy, origin_port, "/small")]);
        assert_error_page(&out.stdout, "403 Forbidden");
        assert!(stdout(&out).contains("Your address may not use this proxy"));
        assert!(seen_at(proxy, origin_port).is_empty());
        proxy.wait_log(&[&format!(
            "From {} Refused 403 Forbidden",
            proxy.net.client_host()
        )]);
    }

    /// A destination outside `--allow-dest`, by address and by a `--resolve` name (`origin.test=ORIGIN_HOST`),
    /// is 403 and never reached; the origin must not have seen a request before.
    pub fn destination_not_allowed_is_403(proxy: &Proxy, origin_port: u16) {
        for host in [proxy.net.origin_host(), "origin.test"] {
            let out = curl_ok(
                proxy,
                &["-i", &format!("http://{host}:{origin_port}/small")],
            );
            assert_error_page(&out.stdout, "403 Forbidden");
            assert!(stdout(&out).contains("The proxy may not connect to that address"));
        }
        assert!(seen_at(proxy, origin_port).is_empty());
    }

    /// CONNECT to `host`:`echo_port`, an address the proxy may reach on a port its `--connect-ports` does not
    /// list, is 403.
    pub fn connect_to_a_port_not_listed_is_403(proxy: &Proxy, host: &str, echo_port: u16) {
        let request =
            format!("CONNECT {host}:{echo_port} HTTP/1.1\r\nHost: {host}:{echo_port}\r\n\r\n");
        let response = proxy.exchange(request.as_bytes());
        assert_error_page(&response, "403 Forbidden");
        assert!(
            String::from_utf8_lossy(&response).contains("The proxy does not tunnel to that port")
        );
    }

    /// Half a head, then nothing: 408 after the proxy's `--timeout 1`.
    pub fn half_a_head_times_out_with_408(proxy: &Proxy) {
        let host = proxy.net.origin_host();
        // The Host header is cut short at the address's second dot.
        let cut = host.match_indices('.').nth(1).expect("a dotted address").0;
        let request = format!("GET http://{host}:1/ HTTP/1.1\r\nHost: {}", &host[..cut]);
        let started = Instant::now();
        assert_raw_refusal(proxy, request.as_bytes(), "408 Request Timeout");
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(5),
            "408 after {took:?}"
        );
        proxy.wait_log(&[&format!(
            "To {} Response HTTP/1.1 408 Request Timeout",
            proxy.net.client_host()
        )]);
    }

    /// An origin slower (3 s) than the proxy's `--timeout 1` is 504, after that 1 s.
    pub fn an_origin_slower_than_the_timeout_is_504(proxy: &Proxy, origin_port: u16) {
        let started = Instant::now();
        let out = curl_ok(proxy, &["-i", &at(proxy, origin_port, "/sleep")]);
        // The status says the proxy gave up rather than wait the origin's 3 s; it waited its 1 s first.
        assert_error_page(&out.stdout, "504 Gateway Timeout");
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_millis(2900),
            "504 after {took:?}"
        );
        proxy.wait_log(&[&format!(
            "To {} Response HTTP/1.1 504 Gateway Timeout",
            proxy.net.client_host()
        )]);
    }

    /// An origin that refuses the connection (nothing listens on `closed_port` of the origins' address) and one
    /// that closes without answering are 502.
    pub fn refused_and_silent_origins_are_502(proxy: &Proxy, origin_port: u16, closed_port: u16) {
        let (host, client) = (proxy.net.origin_host(), proxy.net.client_host());
        let out = curl_ok(proxy, &["-i", &at(proxy, closed_port, "/")]);
        assert_error_page(&out.stdout, "502 Bad Gateway");
        assert!(stdout(&out).contains("refused the connection"));

        let out = curl_ok(proxy, &["-i", &at(proxy, origin_port, "/close")]);
        assert_error_page(&out.stdout, "502 Bad Gateway");
        assert!(stdout(&out).contains("closed the connection before its response was complete"));
        proxy.wait_log(&[
            &format!(
                "To {client} Response HTTP/1.1 502 Bad Gateway (GET http://{host}:{closed_port}/ HTTP/1.1"
            ),
            &format!(
                "To {client} Response HTTP/1.1 502 Bad Gateway (GET http://{host}:{origin_port}/close HTTP/1.1"
            ),
        ]);
    }

    /// With `--max-connections 1`, a second client while one connection is held is 503 with `Retry-After`,
    /// logged as `From CLIENT {refusal}` (the stacks word the reason differently); once the held connection is
    /// gone, its place serves the next client.
    pub fn over_the_connection_cap_is_503_and_the_slot_comes_back(
        proxy: &Proxy,
        origin_port: u16,
        refusal: &str,
    ) {
        let url = at(proxy, origin_port, "/small");
        let held = proxy.connect();
        let out = curl_ok(proxy, &["-i", &url]);
        assert_error_page(&out.stdout, "503 Service Unavailable");
        assert_eq!(header(&split_head(&out.stdout).0, "retry-after"), Some("1"));
        proxy.wait_log(&[&format!("From {} {refusal}", proxy.net.client_host())]);
        drop(held);
        // Once the held connection is gone, its place serves the next client.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let out = curl_ok(proxy, &[&url]);
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
    }

    /// Requests to the proxy's own address and port, or that already came through it (its Via), are 508;
    /// another proxy's Via is no loop. The origin must not have seen a request before.
    pub fn requests_that_would_loop_are_508(proxy: &Proxy, origin_port: u16) {
        // The proxy's own address and port.
        let itself = format!("{}/", proxy.url());
        let out = curl_ok(proxy, &["-i", &itself]);
        assert_error_page(&out.stdout, "508 Loop Detected");
        // A request that already came through this proxy (its Via pseudonym, learnt from a normal response).
        let via = via_of(proxy, origin_port);
        let small = at(proxy, origin_port, "/small");
        let out = curl_ok(
            proxy,
            &["-i", "-H", &format!("Via: 1.0 other, {via}"), &small],
        );
        assert_error_page(&out.stdout, "508 Loop Detected");
        assert_eq!(
            seen_at(proxy, origin_port).len(),
            1,
            "only the normal request reached the origin"
        );
        // Another proxy's Via is no loop.
        let out = curl_ok(proxy, &["-H", "Via: 1.1 smoltalk-00000000", &small]);
        assert_eq!(stdout(&out), SMALL);
        proxy.wait_log(&[&format!(
            "To {} Response HTTP/1.1 508 Loop Detected (GET {itself} HTTP/1.1",
            proxy.net.client_host()
        )]);
    }

    /// Three pipelined requests are answered in order, then the connection closes as the last asked; an HTTP/1.0
    /// client without keep-alive is told the connection closes, and it does. The origin must not have seen a
    /// request before.
    pub fn pipelined_requests_and_an_http_1_0_client(proxy: &Proxy, origin_port: u16) {
        let host = proxy.net.origin_host();
        // Three requests in one write, the last asking to close: three responses in order, then the close.
        let get = |path: &str, last: bool| {
            let close = if last { "Connection: close\r\n" } else { "" };
            format!("GET http://{host}:{origin_port}{path} HTTP/1.1\r\nHost: {host}:{origin_port}\r\n{close}\r\n")
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
        assert!(header(&head1, "connection").is_none(), "{head1}");
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

        // HTTP/1.0 without keep-alive: the proxy says it closes, and does; the origin gets HTTP/1.0 too (so it
        // never answers with a chunked body the client could not read), in origin-form, with the client's
        // version in Via.
        let request = format!("GET http://{host}:{origin_port}/small HTTP/1.0\r\n\r\n");
        let reply = proxy.exchange(request.as_bytes());
        let (head, body) = split_head(&reply);
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert_eq!(header(&head, "connection"), Some("close"), "{head}");
        assert_eq!(body, SMALL.as_bytes());
        let seen = seen_at(proxy, origin_port);
        assert_eq!(seen.len(), 4, "{seen:?}");
        assert!(
            seen[3].contains("\r\nGET /small HTTP/1.0\r\n"),
            "{}",
            seen[3]
        );
        assert!(seen[3].contains("\r\nVia: 1.0 smoltalk-"), "{}", seen[3]);
    }

    /// Two requests on one client connection, the first answered with a forged second response behind it: the
    /// second request must get its own response from a new origin connection, not the forged one the origin
    /// left behind the first. `earlier` is how many requests the origin has seen before.
    pub fn bytes_an_origin_sends_past_its_response_never_answer_the_next_request(
        proxy: &Proxy,
        origin_port: u16,
        earlier: usize,
    ) {
        let extra = at(proxy, origin_port, "/extra");
        let small = at(proxy, origin_port, "/small");
        let out = curl_ok(proxy, &["-v", &extra, &small]);
        assert_one_client_connection(proxy, &stderr(&out));
        assert_eq!(stdout(&out), format!("first\n{SMALL}"));
        let seen = seen_at(proxy, origin_port);
        assert_eq!(seen.len(), earlier + 2, "{seen:?}");
        assert_ne!(
            peer(&seen[earlier]),
            peer(&seen[earlier + 1]),
            "the origin connection was kept: {seen:?}"
        );
    }

    /// A client that sends its whole upload before it reads (as simple clients do) gets the answer that came
    /// before its upload ended, and no reset: the proxy's own (508, for a request to the proxy itself) while the
    /// upload goes on in pieces for three times the drain's 500 ms of silence, and an origin's early 413 from
    /// an origin that closes with the upload unread (so its kernel resets the connection to the proxy), and from
    /// one that keeps the connection open and reads no more.
    pub fn an_early_answer_reaches_a_client_that_is_still_uploading(
        proxy: &Proxy,
        origin_port: u16,
    ) {
        let itself = format!("{}/upload", proxy.url());
        let reply = upload(proxy, &itself, 32, 32 * 1024, Duration::from_millis(50));
        assert_error_page(&reply, "508 Loop Detected");
        // An origin that closes, and one that then keeps the connection open and reads no more: the proxy,
        // stuck writing the upload to it, still hears it (64 MiB, far more than the sockets' buffers hold).
        for (path, pieces) in [("/early", 64), ("/early-stall", 1024)] {
            let reply = upload(
                proxy,
                &at(proxy, origin_port, path),
                pieces,
                64 * 1024,
                Duration::ZERO,
            );
            let (head, body) = split_head(&reply);
            assert!(
                head.starts_with("HTTP/1.1 413 "),
                "{path}: {head}\nproxy log:\n{}",
                proxy.log()
            );
            assert_eq!(body, b"too large\n", "{path}");
        }
    }

    /// Interim answers that come while the proxy is stuck sending an upload, to a client that asked
    /// `Expect: 100-continue` and sends its 64 MiB body at once, reading as it goes: an origin's `100 Continue`
    /// that comes 1.5 s late, before it reads the body a second later, reaches the client before its upload
    /// has ended, and the body then goes on whole; an origin that sends `100 Continue` and a 413 in one write
    /// and reads no more gets both to the client.
    pub fn interim_answers_reach_a_client_that_is_still_uploading(proxy: &Proxy, origin_port: u16) {
        let length = 64 << 20;
        let post = |path: &str| {
            let mut stream = proxy.connect();
            let head = format!(
                "POST {} HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nConnection: close\r\n\
                 Content-Length: {length}\r\n\r\n",
                at(proxy, origin_port, path)
            );
            stream.write_all(head.as_bytes()).expect("send the head");
            upload_while_reading(&mut stream, length, proxy)
        };

        let (reply, first_at) = post("/late-continue");
        let (interim, rest) = split_head(&reply);
        assert!(interim.starts_with("HTTP/1.1 100 "), "{interim}");
        assert!(
            first_at < length,
            "the 100 came only after the whole upload; proxy log:\n{}",
            proxy.log()
        );
        let (head, body) = split_head(rest);
        assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
        assert!(
            head.contains(&format!("\r\nX-Body-Length: {length}\r\n")),
            "{head}"
        );
        assert_eq!(body.len(), length);

        let (reply, first_at) = post("/continue-then-413");
        let (interim, rest) = split_head(&reply);
        assert!(interim.starts_with("HTTP/1.1 100 "), "{interim}");
        let (head, body) = split_head(rest);
        assert!(
            head.starts_with("HTTP/1.1 413 "),
            "{head}\nproxy log:\n{}",
            proxy.log()
        );
        assert_eq!(body, b"too large\n");
        assert!(
            first_at < length,
            "the answers came only after the whole upload"
        );
    }

    /// Sends the `length` bytes of an upload on `stream` (its head sent) while reading what comes back, on one
    /// thread, until the proxy closes. Returns what came and how much of the upload had gone when its first
    /// byte came. A reset, or nothing moving either way for 10 s, fails the test.
    fn upload_while_reading(
        stream: &mut TcpStream,
        length: usize,
        proxy: &Proxy,
    ) -> (Vec<u8>, usize) {
        stream.set_nonblocking(true).unwrap();
        let piece = vec![b'u'; 64 * 1024];
        let (mut reply, mut sent, mut first_at) = (Vec::new(), 0, None);
        let mut buf = vec![0u8; 65536];
        let mut last_progress = Instant::now();
        loop {
            let mut moved = false;
            match stream.read(&mut buf) {
                Ok(0) => return (reply, first_at.unwrap_or(sent)),
                Ok(n) => {
                    first_at.get_or_insert(sent);
                    reply.extend_from_slice(&buf[..n]);
                    moved = true;
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
                Err(e) => panic!(
                    "read after {} bytes of reply, {sent} of upload: {e}\nproxy log:\n{}",
                    reply.len(),
                    proxy.log()
                ),
            }
            if sent < length {
                match stream.write(&piece[..piece.len().min(length - sent)]) {
                    Ok(n) => {
                        sent += n;
                        moved = true;
                    }
                    Err(e)
                        if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
                    Err(e) => panic!(
                        "write after {sent} bytes of upload: {e}\nproxy log:\n{}",
                        proxy.log()
                    ),
                }
            }
            if moved {
                last_progress = Instant::now();
            } else {
                assert!(
                    last_progress.elapsed() < Duration::from_secs(10),
                    "nothing moved for 10 s after {sent} bytes of upload and {} of reply; proxy log:\n{}",
                    reply.len(),
                    proxy.log()
                );
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }

    /// POSTs `pieces` pieces of `size` bytes to `url` through `proxy`, one every `gap`, each write checked;
    /// then closes the sending side and reads the answer until the proxy closes (a reset fails the test).
    fn upload(proxy: &Proxy, url: &str, pieces: usize, size: usize, gap: Duration) -> Vec<u8> {
        let mut stream = proxy.connect();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream
            .set_write_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let length = pieces * size;
        let head = format!("POST {url} HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n");
        stream.write_all(head.as_bytes()).expect("send the head");
        let piece = vec![b'u'; size];
        for i in 0..pieces {
            std::thread::sleep(gap);
            if let Err(e) = stream.write_all(&piece) {
                panic!(
                    "piece {i} of the upload to {url}: {e}\nproxy log:\n{}",
                    proxy.log()
                );
            }
        }
        stream.shutdown(Shutdown::Write).expect("shutdown");
        let mut reply = Vec::new();
        if let Err(e) = stream.read_to_end(&mut reply) {
            panic!(
                "reading the answer to {url}: {e} after {} bytes",
                reply.len()
            );
        }
        reply
    }

    /// A tunnel busy one way, the drip server ([`start_drip`]) sending a byte every 100 ms for 3 s while the
    /// client says nothing, stays open past the proxy's idle limit (it must run with `--tunnel-idle 1`), and
    /// closes once neither side has sent anything for that long.
    pub fn a_tunnel_busy_one_way_outlives_the_idle_limit(proxy: &Proxy, drip_port: u16) {
        let host = proxy.net.origin_host();
        let mut stream = proxy.connect();
        stream
            .set_read_timeout(Some(Duration::from_secs(15)))
            .unwrap();
        let request =
            format!("CONNECT {host}:{drip_port} HTTP/1.1\r\nHost: {host}:{drip_port}\r\n\r\n");
        stream.write_all(request.as_bytes()).expect("send");
        let started = Instant::now();
        let received = read_all(&mut stream);
        let took = started.elapsed();
        let (head, bytes) = split_head(&received);
        assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
        assert_eq!(
            bytes,
            (0u8..30).collect::<Vec<u8>>(),
            "the tunnel was cut short; proxy log:\n{}",
            proxy.log()
        );
        // 3 s of drip and an idle second, not the 15 s the read would wait for a tunnel that never closes.
        assert!(
            took < Duration::from_secs(10),
            "the idle tunnel stayed open {took:?}"
        );
    }
}
