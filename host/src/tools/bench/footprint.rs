//! The footprint part of the benchmark: what a connection costs the server in memory, idle and busy, and what
//! an idle server costs in CPU, for smoltcp on TUN (default options) beside the kernel stack's server.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use super::{me, throughput, BenchError, BenchOptions};
use crate::tools::netns::{rss_kib, Namespace, Server};

/// Connections held idle while the memory is read.
const IDLE: usize = 8;
/// Connections kept busy (the load generator's) while the memory is read.
const BUSY: usize = 4;

/// Opens N connections to HOST PORT, has each echo "hello", prints "ready" and holds them until its standard
/// input closes.
const HOLD_IDLE: &str = r#"
import socket, sys
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
held = []
for _ in range(n):
    s = socket.create_connection((host, port), timeout=5)
    s.sendall(b"hello")
    got = b""
    while len(got) < 5:
        chunk = s.recv(5 - len(got))
        if not chunk:
            sys.exit("closed before the reply")
        got += chunk
    if got != b"HELLO":
        sys.exit("wrong reply %r" % got)
    held.append(s)
print("ready", flush=True)
sys.stdin.read()
"#;

/// A server's resident memory: when started, with [`IDLE`] connections held, after [`BUSY`] busy ones.
struct Footprint {
    start_kib: u64,
    idle_kib: u64,
    busy_kib: u64,
}

fn measure(
    ns: &Namespace,
    server: &Server,
    host: &str,
    opts: &BenchOptions,
) -> Result<Footprint, BenchError> {
    let pid = server.child.id();
    let rss = || rss_kib(pid).ok_or(BenchError::ServerGone);
    let start_kib = rss()?;
    let port = server.port.to_string();
    let idle = IDLE.to_string();
    let mut holder = ns
        .command("python3", &["-c", HOLD_IDLE, host, &port, &idle])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(BenchError::RunLoad)?;
    let mut line = String::new();
    if let Some(out) = holder.stdout.take() {
        let _ = BufReader::new(out).read_line(&mut line);
    }
    let idle_kib = rss();
    drop(holder.stdin.take());
    let held = holder.wait_with_output().map_err(BenchError::RunLoad)?;
    if line.trim() != "ready" {
        return Err(BenchError::LoadFailed {
            stderr: String::from_utf8_lossy(&held.stderr).trim().to_string(),
        });
    }
    let idle_kib = idle_kib?;
    let out = throughput(ns, host, server.port, opts.seconds, BUSY)?;
    if !out.status.success() {
        return Err(BenchError::LoadFailed {
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(Footprint {
        start_kib,
        idle_kib,
        busy_kib: rss()?,
    })
}

/// The memory table (resident memory of the server process) and the idle smoltcp server's CPU.
pub(super) fn report(ns: &Namespace, opts: &BenchOptions) -> Result<String, BenchError> {
    let exe = match &opts.server_binary {
        Some(path) => path.to_string_lossy().into_owned(),
        None => me()?,
    };
    let mut out = format!(
        "| server | RSS when started | with {IDLE} idle connections | per idle connection | after {BUSY} busy ones | per busy connection |\n\
         |---|---:|---:|---:|---:|---:|\n"
    );
    let kernel =
        Server::start(ns.command(&exe, &["tcp-server", "--bind", "127.0.0.1", "--port", "0"]))?;
    let k = measure(ns, &kernel, "127.0.0.1", opts)?;
    drop(kernel);
    out += &row(
        "kernel stack (its socket buffers are kernel memory, not counted)",
        &k,
    );
    ns.add_device("stmem0", "tun", "10.0.2.2/24", 1500)?;
    let result = (|| {
        let smoltcp = Server::start(ns.command(
            &exe,
            &[
                "tcp-server",
                "--stack",
                "tun",
                "--dev",
                "stmem0",
                "--connections",
                "16",
            ],
        ))?;
        let s = measure(ns, &smoltcp, "10.0.2.15", opts)?;
        drop(smoltcp);
        let idle = idle_cpu(ns, &exe)?;
        Ok::<_, BenchError>((s, idle))
    })();
    let _ = ns.delete_device("stmem0");
    let (s, idle) = result?;
    out += &row(
        "smoltcp on TUN, MTU 1500, default options, 16 connection slots",
        &s,
    );
    out += &format!(
        "\nIdle smoltcp server (TUN): {} ms of CPU in 3 s.\n",
        idle.as_millis()
    );
    Ok(out)
}

fn row(name: &str, f: &Footprint) -> String {
    let mib = |kib: u64| format!("{:.1} MiB", kib as f64 / 1024.0);
    let per =
        |more: u64, less: u64, n: usize| format!("{} KiB", more.saturating_sub(less) / n as u64);
    format!(
        "| {name} | {} | {} | {} | {} | {} |\n",
        mib(f.start_kib),
        mib(f.idle_kib),
        per(f.idle_kib, f.start_kib, IDLE),
        mib(f.busy_kib),
        per(f.busy_kib, f.idle_kib, BUSY),
    )
}

fn idle_cpu(ns: &Namespace, exe: &str) -> Result<Duration, BenchError> {
    ns.add_device("stidle0", "tun", "10.0.2.2/24", 1500)?;
    let result = (|| {
        let server =
            Server::start(ns.command(exe, &["tcp-server", "--stack", "tun", "--dev", "stidle0"]))?;
        let before = server.cpu_time().ok_or(BenchError::ServerGone)?;
        std::thread::sleep(Duration::from_secs(3));
        let after = server.cpu_time().ok_or(BenchError::ServerGone)?;
        Ok(after.saturating_sub(before))
    })();
    let _ = ns.delete_device("stidle0");
    result
}
