//! `smoltalk bench`: the benchmark behind BENCHMARKS.md, in one run, with every figure next to the one it is
//! compared with.
//!
//! 1. The uppercase transform against `memcpy` on 64 KiB buffers (no privileges needed).
//! 2. TCP uppercase echo throughput inside a network namespace (root): the kernel stack over loopback, and the
//!    smoltcp server on TAP and TUN at several MTUs and buffer sizes, driven by `smoltalk throughput`; optionally
//!    smoltcp's own `examples/benchmark.rs` on the same kind of device, counted at the device.
//! 3. The smoltcp server's CPU use while idle.
//!
//! Every throughput figure is the median of several runs; the device figures are the kernel's byte counters
//! for the TUN/TAP device (both directions) over the client's whole run.

use std::hint::black_box;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use smoltalk_core::{uppercase_in_place, uppercase_into};

use crate::tools::netns::{is_root, Namespace, NamespaceError, Server, ServerError};

/// Why the benchmark stopped.
#[derive(Debug)]
pub enum BenchError {
    /// The path of this very binary, which runs the servers and the load, is unknown.
    CurrentExe(std::io::Error),
    /// The throughput part needs root; `report` is the report so far (the transform table).
    NeedsRoot {
        /// The report up to here.
        report: String,
    },
    /// The namespace, a device in it, or a device counter failed.
    Namespace(NamespaceError),
    /// A server did not start.
    Server(ServerError),
    /// The load generator could not be run.
    RunLoad(std::io::Error),
    /// The load generator ran and printed no figure.
    LoadFailed {
        /// What it printed on standard error (trimmed).
        stderr: String,
    },
    /// smoltcp's benchmark could not be run.
    RunReference {
        /// Its path.
        path: String,
        /// Why not.
        error: std::io::Error,
    },
    /// smoltcp's benchmark failed every attempt.
    ReferenceFailed {
        /// Its path.
        path: String,
        /// "reader" or "writer".
        mode: String,
        /// Why each attempt failed.
        failures: Vec<String>,
    },
}

impl std::fmt::Display for BenchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BenchError::CurrentExe(e) => write!(f, "cannot find the smoltalk binary: {e}"),
            BenchError::NeedsRoot { report } => write!(
                f,
                "{report}\nthe throughput part needs root (it creates a network namespace with TUN/TAP devices); \
                 run it as root, or pass --transform-only"
            ),
            BenchError::Namespace(e) => write!(f, "{e}"),
            BenchError::Server(e) => write!(f, "{e}"),
            BenchError::RunLoad(e) => write!(f, "{e}"),
            BenchError::LoadFailed { stderr } => write!(f, "throughput run failed: {stderr}"),
            BenchError::RunReference { path, error } => write!(f, "cannot run {path}: {error}"),
            BenchError::ReferenceFailed {
                path,
                mode,
                failures,
            } => write!(f, "{path} {mode} failed every time: {}", failures.join("; ")),
        }
    }
}

impl std::error::Error for BenchError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BenchError::CurrentExe(e) | BenchError::RunLoad(e) => Some(e),
            BenchError::RunReference { error, .. } => Some(error),
            BenchError::Namespace(e) => Some(e),
            BenchError::Server(e) => Some(e),
            BenchError::NeedsRoot { .. }
            | BenchError::LoadFailed { .. }
            | BenchError::ReferenceFailed { .. } => None,
        }
    }
}

impl From<NamespaceError> for BenchError {
    fn from(e: NamespaceError) -> Self {
        BenchError::Namespace(e)
    }
}

impl From<ServerError> for BenchError {
    fn from(e: ServerError) -> Self {
        BenchError::Server(e)
    }
}

/// Options of a benchmark run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Seconds each throughput run measures.
    pub seconds: f64,
    /// Runs per scenario (the median is reported).
    pub runs: usize,
    /// smoltcp's `examples/benchmark.rs`, built, to compare with on the same device.
    pub smoltcp_benchmark: Option<PathBuf>,
    /// Only the transform (no namespace).
    pub transform_only: bool,
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

/// Calls of `f` that take about 50 ms.
fn calibrate(mut f: impl FnMut()) -> u64 {
    let mut calls = 1u64;
    loop {
        let start = Instant::now();
        for _ in 0..calls {
            f();
        }
        if start.elapsed() >= Duration::from_millis(50) {
            return calls;
        }
        calls *= 2;
    }
}

fn gbytes_per_s(bytes: usize, calls: u64, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..calls {
        f();
    }
    bytes as f64 * calls as f64 / start.elapsed().as_secs_f64() / 1e9
}

/// The transform table: memcpy, the copying transform the servers use, and the in-place one. The three are
/// measured in turns, 9 rounds, so a neighbour's load on a shared machine hits them alike; each figure and
/// each ratio is the median over the rounds.
pub fn transform_table() -> (String, f64) {
    const LEN: usize = 64 * 1024;
    let src: Vec<u8> = (0..LEN)
        .map(|i| b"Mixed Case text, 0-9!\n"[i % 22])
        .collect();
    let mut dst = vec![0u8; LEN];
    let memcpy = |dst: &mut Vec<u8>| {
        dst.copy_from_slice(black_box(&src));
        black_box(dst);
    };
    let into = |dst: &mut Vec<u8>| {
        uppercase_into(black_box(&src), dst);
        black_box(dst);
    };
    let in_place = |dst: &mut Vec<u8>| uppercase_in_place(black_box(dst));
    let calls = calibrate(|| memcpy(&mut dst));
    let mut rounds: Vec<[f64; 3]> = Vec::new();
    for _ in 0..9 {
        rounds.push([
            gbytes_per_s(LEN, calls, || memcpy(&mut dst)),
            gbytes_per_s(LEN, calls, || into(&mut dst)),
            gbytes_per_s(LEN, calls, || in_place(&mut dst)),
        ]);
    }
    let column = |i: usize| median(rounds.iter().map(|r| r[i]).collect());
    let ratio = |i: usize| median(rounds.iter().map(|r| r[i] / r[0]).collect());
    let mut out = String::from("| operation on 64 KiB | GB/s | × memcpy |\n|---|---:|---:|\n");
    for (i, name) in [
        "memcpy (`copy_from_slice`)",
        "`uppercase_into` (copy + transform, as the servers use it)",
        "`uppercase_in_place`",
    ]
    .iter()
    .enumerate()
    {
        out += &format!("| {name} | {:.1} | {:.2} |\n", column(i), ratio(i));
    }
    (out, ratio(1))
}

struct Scenario {
    name: &'static str,
    /// None: the kernel's own server over loopback.
    device: Option<(&'static str, usize)>,
    buffer: usize,
    connections: u16,
    /// The load generator's kernel socket buffers (None: autotuned).
    client_buffer: Option<usize>,
    /// smoltcp with checksum offload (the default) or `--no-offload`.
    offload: bool,
}

#[derive(Default, Clone, Copy)]
struct Measured {
    echo: f64,
    device: f64,
}

const AUTO: Option<usize> = None;
const CLIENT_128K: Option<usize> = Some(128 << 10);
const TAP_1500: Option<(&str, usize)> = Some(("tap", 1500));
const TUN_1500: Option<(&str, usize)> = Some(("tun", 1500));
const TUN_65000: Option<(&str, usize)> = Some(("tun", 65000));

/// The rows of the throughput table; the goals below refer to them by index.
const SCENARIOS: &[Scenario] = &[
    scenario("kernel stack, loopback", None, 0, 1, AUTO, true),
    scenario("kernel stack, loopback", None, 0, 4, AUTO, true),
    scenario("smoltcp on TAP", TAP_1500, 256 << 10, 1, AUTO, true),
    scenario("smoltcp on TUN", TUN_1500, 256 << 10, 1, AUTO, true),
    scenario("smoltcp on TUN", TUN_65000, 1 << 20, 1, AUTO, true),
    scenario("smoltcp on TUN", TUN_65000, 1 << 20, 4, AUTO, true),
    scenario(
        "smoltcp on TUN, --no-offload",
        TUN_65000,
        1 << 20,
        1,
        AUTO,
        false,
    ),
    scenario("kernel stack, loopback", None, 0, 1, CLIENT_128K, true),
    scenario("kernel stack, loopback", None, 0, 4, CLIENT_128K, true),
    scenario("smoltcp on TUN", TUN_65000, 256 << 10, 1, CLIENT_128K, true),
    scenario("smoltcp on TUN", TUN_65000, 256 << 10, 4, CLIENT_128K, true),
];

const fn scenario(
    name: &'static str,
    device: Option<(&'static str, usize)>,
    buffer: usize,
    connections: u16,
    client_buffer: Option<usize>,
    offload: bool,
) -> Scenario {
    Scenario {
        name,
        device,
        buffer,
        connections,
        client_buffer,
        offload,
    }
}

fn me() -> Result<String, BenchError> {
    std::env::current_exe()
        .map_err(BenchError::CurrentExe)
        .map(|p| p.to_string_lossy().into_owned())
}

fn parse_gbits(text: &str, after: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.split_once(after))
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

fn run_scenario(
    ns: &Namespace,
    scenario: &Scenario,
    opts: &BenchOptions,
) -> Result<Measured, BenchError> {
    let exe = me()?;
    let dev = "stbench0";
    let (server_cmd, host) = match scenario.device {
        None => (
            ns.command(
                &exe,
                &["tcp-server", "--bind", "127.0.0.1", "--port", "12000"],
            ),
            "127.0.0.1",
        ),
        Some((mode, mtu)) => {
            ns.add_device(dev, mode, "10.0.2.2/24", mtu)?;
            let buffer = scenario.buffer.to_string();
            let mut args = vec![
                "tcp-server",
                "--stack",
                mode,
                "--dev",
                dev,
                "--socket-buffer",
                &buffer,
            ];
            if !scenario.offload {
                args.push("--no-offload");
            }
            (ns.command(&exe, &args), "10.0.2.15")
        }
    };
    let result = (|| -> Result<Measured, BenchError> {
        let server = Server::start(server_cmd)?;
        let mut echo = Vec::new();
        let mut device = Vec::new();
        for _ in 0..opts.runs {
            let before = scenario.device.map(|_| ns.device_bytes(dev)).transpose()?;
            let start = Instant::now();
            let (port, seconds) = (server.port.to_string(), opts.seconds.to_string());
            let connections = scenario.connections.to_string();
            let mut args = vec![
                "throughput",
                host,
                &port,
                "--seconds",
                &seconds,
                "--connections",
                &connections,
            ];
            let client_buffer = scenario.client_buffer.map(|b| b.to_string());
            if let Some(size) = &client_buffer {
                args.extend(["--socket-buffer", size]);
            }
            let out = ns
                .command(&exe, &args)
                .output()
                .map_err(BenchError::RunLoad)?;
            let wall = start.elapsed().as_secs_f64();
            let text = String::from_utf8_lossy(&out.stdout);
            let gbits =
                parse_gbits(&text, "throughput:").ok_or_else(|| BenchError::LoadFailed {
                    stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
                })?;
            echo.push(gbits);
            if let Some(before) = before {
                let after = ns.device_bytes(dev)?;
                device.push((after - before) as f64 * 8.0 / wall / 1e9);
            }
        }
        drop(server);
        Ok(Measured {
            echo: median(echo),
            device: median(device),
        })
    })();
    if scenario.device.is_some() {
        let _ = ns.delete_device(dev);
    }
    result
}

/// smoltcp's own benchmark (one direction) on a TAP device at MTU 1500; device Gbit/s and its own figure.
///
/// The example starts its kernel-side client before its smoltcp socket listens; when the client wins that race
/// it is refused, panics, and the example waits for ever. Such a run is cut off after 60 s and tried again
/// (up to three attempts per run); it is reported on standard error, never counted.
fn run_reference(
    ns: &Namespace,
    path: &str,
    mode: &str,
    runs: usize,
) -> Result<(f64, f64), BenchError> {
    let dev = "tap0";
    let mut device = Vec::new();
    let mut own = Vec::new();
    let mut failures = Vec::new();
    while own.len() < runs && failures.len() < 3 * runs {
        ns.add_device(dev, "tap", "192.168.69.100/24", 1500)?;
        let before = ns.device_bytes(dev)?;
        let start = Instant::now();
        let out = ns
            .command("timeout", &["60", path, "--tap", dev, mode])
            .output()
            .map_err(|error| BenchError::RunReference {
                path: path.to_string(),
                error,
            })?;
        let wall = start.elapsed().as_secs_f64();
        let after = ns.device_bytes(dev)?;
        let _ = ns.delete_device(dev);
        let text = String::from_utf8_lossy(&out.stdout);
        match parse_gbits(&text, "throughput:") {
            Some(gbits) => {
                own.push(gbits);
                device.push((after - before) as f64 * 8.0 / wall / 1e9);
            }
            None => {
                let why = String::from_utf8_lossy(&out.stderr);
                let why = why
                    .lines()
                    .find(|l| l.contains("panicked") || l.contains("rror"))
                    .unwrap_or("no figure");
                eprintln!("bench: {path} {mode} failed, trying again: {why}");
                failures.push(why.to_string());
            }
        }
    }
    if own.is_empty() {
        return Err(BenchError::ReferenceFailed {
            path: path.to_string(),
            mode: mode.to_string(),
            failures,
        });
    }
    Ok((median(device), median(own)))
}

fn idle_cpu(ns: &Namespace) -> Result<Duration, BenchError> {
    let exe = me()?;
    ns.add_device("stidle0", "tun", "10.0.2.2/24", 1500)?;
    let server =
        Server::start(ns.command(&exe, &["tcp-server", "--stack", "tun", "--dev", "stidle0"]))?;
    let before = server.cpu_time().unwrap_or_default();
    std::thread::sleep(Duration::from_secs(3));
    let used = server.cpu_time().unwrap_or_default().saturating_sub(before);
    drop(server);
    let _ = ns.delete_device("stidle0");
    Ok(used)
}

/// Runs the benchmark and returns its report (markdown).
pub fn run(opts: &BenchOptions) -> Result<String, BenchError> {
    let mut report = String::new();
    let (table, transform_ratio) = transform_table();
    report += "### Uppercase transform vs memcpy\n\n";
    report += &table;
    let mut goals = vec![(
        "transform ≥ 0.8× memcpy (64 KiB)".to_string(),
        transform_ratio,
        0.8,
    )];
    if opts.transform_only {
        return Ok(report + &goal_table(&goals));
    }
    if !is_root() {
        return Err(BenchError::NeedsRoot { report });
    }
    let ns = Namespace::create(&format!("smoltalk-bench-{}", std::process::id()))?;
    report += &format!(
        "\n### TCP uppercase echo, inside a network namespace ({} run(s) of {} s each, median)\n\n",
        opts.runs, opts.seconds
    );
    report += "| server | MTU | server buffers | connections | client buffers | echo Gbit/s each way | device Gbit/s (rx+tx) | × kernel, same client buffers, 1 conn |\n";
    report += "|---|---:|---:|---:|---:|---:|---:|---:|\n";
    let mut results = Vec::new();
    for scenario in SCENARIOS {
        eprintln!(
            "bench: {} ({} connection(s))…",
            scenario.name, scenario.connections
        );
        let m = run_scenario(&ns, scenario, opts)?;
        results.push(m);
    }
    let kernel = results[0].echo;
    let kernel_128k = results[7].echo;
    for (scenario, m) in SCENARIOS.iter().zip(&results) {
        let reference = if scenario.client_buffer.is_some() {
            kernel_128k
        } else {
            kernel
        };
        let client = scenario
            .client_buffer
            .map_or("autotuned".to_string(), |b| format!("{} KiB", b >> 10));
        let (mtu, buffers, device) = match scenario.device {
            None => (
                "65536 (lo)".to_string(),
                "kernel".to_string(),
                "–".to_string(),
            ),
            Some((_, mtu)) => (
                mtu.to_string(),
                format!("{} KiB", scenario.buffer >> 10),
                format!("{:.2}", m.device),
            ),
        };
        report += &format!(
            "| {} | {mtu} | {buffers} | {} | {client} | {:.2} | {device} | {:.2} |\n",
            scenario.name,
            scenario.connections,
            m.echo,
            m.echo / reference
        );
    }
    let tap = results[2];
    if let Some(path) = &opts.smoltcp_benchmark {
        let path = path.to_string_lossy();
        report += "\n### smoltcp's own examples/benchmark.rs on TAP, MTU 1500 (64 KiB buffers, one direction)\n\n";
        report += "| mode | its own figure, Gbit/s | device Gbit/s (rx+tx) |\n|---|---:|---:|\n";
        let mut best = 0.0f64;
        for mode in ["reader", "writer"] {
            eprintln!("bench: smoltcp benchmark.rs {mode}…");
            let (device, own) = run_reference(&ns, &path, mode, opts.runs)?;
            best = best.max(device);
            report += &format!("| {mode} | {own:.2} | {device:.2} |\n");
        }
        goals.push((
            "TAP, MTU 1500: device bytes ≥ 0.9× benchmark.rs (its better mode)".into(),
            tap.device / best,
            0.9,
        ));
    }
    goals.push((
        "TUN, MTU 65000, 1 MiB buffers: echo ≥ 1.0× kernel echo over loopback".into(),
        results[4].echo / kernel,
        1.0,
    ));
    goals.push((
        "TUN, MTU 65000, 1 MiB: 4 connections ≥ 1.0× one connection (autotuned client buffers)"
            .into(),
        results[5].echo / results[4].echo,
        1.0,
    ));
    goals.push((
        "TUN, MTU 65000, 256 KiB: 4 connections ≥ 1.0× one connection (128 KiB client buffers)"
            .into(),
        results[10].echo / results[9].echo,
        1.0,
    ));
    let idle = idle_cpu(&ns)?;
    report += &format!(
        "\nIdle smoltcp server (TUN): {} ms of CPU in 3 s.\n",
        idle.as_millis()
    );
    Ok(report + &goal_table(&goals))
}

fn goal_table(goals: &[(String, f64, f64)]) -> String {
    let mut out = String::from("\n### Goals\n\n| goal | measured | met |\n|---|---:|---|\n");
    for (name, value, target) in goals {
        out += &format!(
            "| {name} | {value:.2}× | {} |\n",
            if value >= target { "yes" } else { "no" }
        );
    }
    out
}

/// The command line `bench` was given, for the record.
pub fn describe() -> String {
    let args: Vec<String> = std::env::args().collect();
    let kernel = Command::new("uname")
        .arg("-r")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    format!(
        "`{}` on Linux {kernel}, {} CPU(s)\n",
        args.join(" "),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_read_as_they_did_as_strings() {
        let root = BenchError::NeedsRoot {
            report: "table".into(),
        };
        assert_eq!(
            root.to_string(),
            "table\nthe throughput part needs root (it creates a network namespace with TUN/TAP devices); run it \
             as root, or pass --transform-only"
        );
        let reference = BenchError::ReferenceFailed {
            path: "benchmark".into(),
            mode: "reader".into(),
            failures: vec!["panicked".into(), "no figure".into()],
        };
        assert_eq!(
            reference.to_string(),
            "benchmark reader failed every time: panicked; no figure"
        );
        let ip = BenchError::from(NamespaceError::Ip {
            args: "netns add x".into(),
            stderr: "File exists".into(),
        });
        assert_eq!(ip.to_string(), "ip netns add x: File exists");
    }
}
