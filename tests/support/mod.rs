//! Helpers for the end-to-end tests: run the real `smoltalk` binary, wait for its "listening" line, stop it by
//! PID (see `smoltalk::tools::netns::Server`), decide what a test that needs root does when it cannot run, and
//! make a test's network namespace with its TUN/TAP device `st0` and run `smoltalk` inside it.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::process::{Command, Output, Stdio};

pub mod firmware;
pub mod proxy;
pub mod strictness;

/// The binary under test.
pub fn smoltalk() -> Command {
    Command::new(env!("CARGO_BIN_EXE_smoltalk"))
}

pub use smoltalk::tools::netns::Namespace;
pub use smoltalk::tools::netns::Server as Running;

/// Starts `cmd` and waits until it prints its "listening on ADDR:PORT" line; returns the process and the port.
pub fn start_server(cmd: Command, what: &str) -> (Running, u16) {
    let server = Running::start(cmd).unwrap_or_else(|e| panic!("{what}: {e}"));
    let port = server.port;
    (server, port)
}

/// Sends SIGTERM to a server this test started and waits (up to 5 s) for it to exit; returns whether it exited
/// cleanly (status 0).
pub fn terminate(server: &mut Running) -> bool {
    let _ = smoltalk::sys::kill(server.child.id(), smoltalk::sys::Signal::Terminate);
    for _ in 0..500 {
        if let Ok(Some(status)) = server.child.try_wait() {
            return status.success();
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    false
}

/// Runs `cmd` with `stdin` to completion.
pub fn run_with_input(mut cmd: Command, stdin: &[u8]) -> Output {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    let mut input = child.stdin.take().expect("stdin");
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().expect("wait");
    let _ = writer.join();
    out
}

/// Runs `cmd` to completion with no input.
pub fn run(mut cmd: Command) -> Output {
    cmd.stdin(Stdio::null()).output().expect("run")
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Whether this run is CI's (`CI=true`), where a test that cannot run must fail rather than skip.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Called when a test cannot run here: under CI it fails; elsewhere it prints why and the test returns.
pub fn cannot_run(test: &str, reason: &str) {
    if in_ci() {
        panic!("{test} cannot run under CI=true: {reason}");
    }
    // Straight to the descriptor: libtest captures `eprintln!` of passing tests, and a skip must be seen.
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {reason}");
}

/// Why network namespaces with TUN/TAP devices cannot be used here, if they cannot.
pub fn missing_privilege() -> Option<String> {
    if !smoltalk::tools::netns::is_root() {
        return Some("needs root to create network namespaces and TUN/TAP devices".into());
    }
    if !std::path::Path::new("/dev/net/tun").exists() {
        return Some("/dev/net/tun is missing (modprobe tun)".into());
    }
    missing_tool(&["ip", "ping", "python3"])
}

/// The first of `tools` that is not installed, as a reason to skip. A tool is there if it can be started at all
/// (whatever its exit status); it is started with `--version`, never `-V` (which `tshark` takes for "capture
/// verbosely", on the first interface).
pub fn missing_tool(tools: &[&str]) -> Option<String> {
    for tool in tools {
        if Command::new(tool)
            .arg("--version")
            .stdin(Stdio::null())
            .output()
            .is_err()
        {
            return Some(format!("{tool} is not installed"));
        }
    }
    None
}

/// A free loopback port with nothing listening on it (TCP and UDP), for "connection refused" cases.
pub fn closed_port() -> u16 {
    let socket = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = socket.local_addr().expect("addr").port();
    drop(socket);
    port
}

/// The uppercase of `bytes`, written independently of the core.
pub fn upper(bytes: &[u8]) -> Vec<u8> {
    bytes.iter().map(|b| b.to_ascii_uppercase()).collect()
}

/// An independent peer: a Python program given as `script`, run with `args`.
pub fn python(script: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new("python3");
    cmd.arg("-c").arg(script).args(args);
    cmd
}

/// Connects, sends once, reads the whole reply without closing its side, then closes: the classic lab client.
/// Arguments: HOST PORT FILE, then optionally the family of its socket, `4` (`AF_INET`) or `6` (`AF_INET6`);
/// without it, whatever HOST resolves to.
pub const PY_SEND_ONCE_READ_ONCE: &str = r#"
import socket, sys
host, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
family = {'4': socket.AF_INET, '6': socket.AF_INET6}.get(sys.argv[4] if len(sys.argv) > 4 else '')
data = open(path, 'rb').read()
if family is None:
    s = socket.create_connection((host, port), timeout=10)
else:
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect((host, port))
s.sendall(data)
reply = b''
while len(reply) < len(data):
    chunk = s.recv(65536)
    if not chunk:
        break
    reply += chunk
sys.stdout.buffer.write(reply)
s.close()
"#;

/// One datagram with the file's bytes, one reply printed (and the address it came from, on standard error).
/// Arguments: HOST PORT FILE, then optionally the family of its socket, `4` (the default) or `6`.
pub const PY_UDP_CLIENT: &str = r#"
import socket, sys
host, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
family = socket.AF_INET6 if len(sys.argv) > 4 and sys.argv[4] == '6' else socket.AF_INET
data = open(path, 'rb').read()
s = socket.socket(family, socket.SOCK_DGRAM); s.settimeout(5)
s.sendto(data, (host, port))
reply, addr = s.recvfrom(65536)
sys.stdout.buffer.write(reply)
print('from', addr[0], file=sys.stderr)
"#;

/// Writes `data` to a file of this test process's own in the temporary directory.
pub fn temp_file(name: &str, data: &[u8]) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("smoltalk-test-{}-{name}", std::process::id()));
    std::fs::write(&path, data).expect("write temp file");
    path
}

/// Fields of every packet in `pcap` that `filter` keeps, one line per packet (tab-separated), as
/// `tshark -T fields` prints them; `options` go first (`-n`, `-o ip.check_checksum:TRUE`). Panics if tshark fails.
pub fn tshark_lines(
    pcap: &std::path::Path,
    options: &[&str],
    filter: &str,
    fields: &[&str],
) -> Vec<String> {
    let mut cmd = Command::new("tshark");
    cmd.args(options)
        .args(["-r", pcap.to_str().unwrap()])
        .args(["-Y", filter, "-T", "fields"]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    let out = cmd.output().expect("run tshark");
    assert!(
        out.status.success(),
        "tshark -r {}: {}",
        pcap.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// The hex of `bytes`, as tshark prints payloads (`tcp.payload`, `udp.payload`).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The resident memory of process `pid`, in KiB (`VmRSS` in `/proc/PID/status`).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// How many sockets process `pid` has open.
pub fn open_sockets(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter(|target| target.to_string_lossy().starts_with("socket:"))
                .count()
        })
        .unwrap_or(0)
}

/// What one held connection has received so far, and whether it ended (EOF or reset).
#[derive(Default)]
pub struct Received {
    pub bytes: Vec<u8>,
    pub ended: bool,
    pub ended_at: Option<std::time::Instant>,
}

/// Reads whatever `stream` has now into `into`, without blocking.
pub fn read_available(stream: &mut std::net::TcpStream, into: &mut Received) {
    let mut buf = [0u8; 4096];
    while !into.ended {
        match stream.read(&mut buf) {
            Ok(0) => into.ended = true,
            Ok(n) => into.bytes.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => into.ended = true,
        }
    }
    into.ended_at.get_or_insert_with(std::time::Instant::now);
}

/// Collects what `from` (a child's piped output) writes into a string, on a thread of its own, as it comes; the
/// thread ends when the child closes it.
pub fn collect(
    mut from: impl Read + Send + 'static,
) -> (
    std::sync::Arc<std::sync::Mutex<String>>,
    std::thread::JoinHandle<()>,
) {
    let text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = std::sync::Arc::clone(&text);
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = from.read(&mut buf) {
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    (text, reader)
}

/// A new network namespace `smoltalk-KIND-PID-N` for `test` (with loopback up), deleted when dropped; each call in
/// a test process gets a name of its own, so tests run in parallel. Panics, naming `test`, if it cannot be made.
pub fn fresh_namespace(kind: &str, test: &str) -> Namespace {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let name = format!(
        "smoltalk-{kind}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    Namespace::create(&name).unwrap_or_else(|e| panic!("{test}: {e}"))
}

/// [`fresh_namespace`], or `None` after saying why (failing under CI, see [`cannot_run`]) when this machine
/// cannot make namespaces with TUN/TAP devices ([`missing_privilege`]) or lacks one of `tools`.
pub fn namespace_or_skip(test: &str, kind: &str, tools: &[&str]) -> Option<Namespace> {
    if let Some(reason) = missing_privilege().or_else(|| missing_tool(tools)) {
        cannot_run(test, &reason);
        return None;
    }
    Some(fresh_namespace(kind, test))
}

/// Adds the device the namespace tests put smoltcp on to `ns`: `st0`, TUN or TAP (`medium`), its kernel side
/// 10.0.2.2/24 (smoltalk's default address on it is 10.0.2.15), MTU 1500, up. Panics if it cannot.
pub fn add_st0(ns: &Namespace, medium: &str) {
    ns.add_device("st0", medium, "10.0.2.2/24", 1500)
        .unwrap_or_else(|e| panic!("cannot add {medium} device st0 in {}: {e}", ns.name()));
}

/// [`add_st0`], and the kernel's side of `st0` also at fd00:2::2/64 (smoltalk's default IPv6 address on it is
/// fd00:2::15), usable at once (`nodad`: no duplicate address detection, which would keep it tentative for a
/// second).
pub fn add_st0_dual(ns: &Namespace, medium: &str) {
    add_st0(ns, medium);
    ns.ip(&["-6", "addr", "add", "fd00:2::2/64", "dev", "st0", "nodad"])
        .unwrap_or_else(|e| panic!("cannot give st0 an IPv6 address in {}: {e}", ns.name()));
}

/// `smoltalk ARGS`, to be run inside `ns`.
pub fn smoltalk_in(ns: &Namespace, args: &[&str]) -> Command {
    ns.command(env!("CARGO_BIN_EXE_smoltalk"), args)
}
