//! `smoltalk bench`: the benchmark behind BENCHMARKS.md, in one run, with every figure next to the one it is
//! compared with.
//!
//! 1. The uppercase transform against `memcpy` on 64 KiB buffers (no privileges needed).
//! 2. TCP uppercase echo throughput inside a network namespace (root; `echo.rs`): the kernel stack over loopback
//!    (its event loops, and the thread-per-client design it had before beside them), and the smoltcp server on TAP and TUN with its default options at MTU 1500 and 65000, with one and four
//!    connections (on TUN at MTU 1500 over IPv6 too), then with less offload, the kernel thread off and on, and
//!    other buffer sizes, driven by `smoltalk throughput`; optionally
//!    smoltcp's own `examples/benchmark.rs` on TAP, counted at the device.
//! 3. What a connection costs the server in memory, idle and busy, and the idle smoltcp server's CPU
//!    (`footprint.rs`).
//!
//! Every throughput figure is the median of several runs; the device figures are the kernel's byte counters
//! for the TUN/TAP device (both directions) over the client's whole run. `--goal TEXT` runs only the rows the
//! goals whose name contains TEXT compare (and neither smoltcp's benchmark nor the memory part).

use std::hint::black_box;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use smoltalk_core::{uppercase_in_place, uppercase_into};

use crate::tools::netns::{is_root, Namespace, NamespaceError, ServerError};

mod echo;
mod footprint;
mod goals;

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
    /// A server measured for its memory exited.
    ServerGone,
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
            BenchError::ServerGone => write!(f, "the server exited while its memory was measured"),
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
            | BenchError::ServerGone
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
    /// Another smoltalk build whose servers to measure (this build's load generator drives them), to compare
    /// two versions with the same load; rows whose options it does not know are left out.
    pub server_binary: Option<PathBuf>,
    /// Only the echo rows that the goals whose name contains this (ignoring case) compare.
    pub goal_filter: Option<String>,
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
    let mut results = Vec::new();
    let selected = goals::selected_rows(opts.goal_filter.as_deref());
    for (scenario, selected) in echo::SCENARIOS.iter().zip(selected) {
        if !selected {
            results.push(echo::RowResult::NotRun);
            continue;
        }
        eprintln!(
            "bench: {} ({} connection(s))…",
            scenario.name, scenario.connections
        );
        results.push(echo::run_scenario(&ns, scenario, opts)?);
    }
    report += &echo::table(&results);
    let ipv6 = echo::ipv6_table(&results);
    if !ipv6.is_empty() {
        report += "\n### IPv6 beside IPv4: the IPv6 rows' runs over IPv4 and IPv6 in turns, same server and device\n\n";
        report += &ipv6;
    }
    goals.extend(goals::goal_results(&results));
    if opts.goal_filter.is_some() {
        return Ok(report + &goal_table(&goals));
    }
    if let Some(path) = &opts.smoltcp_benchmark {
        let path = path.to_string_lossy();
        report += "\n### smoltcp's own examples/benchmark.rs on TAP, MTU 1500 (64 KiB buffers, one direction)\n\n";
        report += "| mode | its own figure, Gbit/s | device Gbit/s (rx+tx) |\n|---|---:|---:|\n";
        for mode in ["reader", "writer"] {
            eprintln!("bench: smoltcp benchmark.rs {mode}…");
            let (device, own) = echo::run_reference(&ns, &path, mode, opts.runs)?;
            report += &format!("| {mode} | {own:.2} | {device:.2} |\n");
        }
    }
    eprintln!("bench: memory per connection, idle CPU…");
    report += "\n### Memory per connection (the server's resident memory) and idle CPU\n\n";
    report += &footprint::report(&ns, opts)?;
    Ok(report + &goal_table(&goals))
}

/// Runs this binary's load generator in `ns` against `host:port` with `connections` for `seconds`.
fn throughput(
    ns: &Namespace,
    host: &str,
    port: u16,
    seconds: f64,
    connections: usize,
) -> Result<std::process::Output, BenchError> {
    let (port, seconds, connections) = (
        port.to_string(),
        seconds.to_string(),
        connections.to_string(),
    );
    let args = [
        "throughput",
        host,
        &port,
        "--seconds",
        &seconds,
        "--connections",
        &connections,
    ];
    ns.command(&me()?, &args)
        .output()
        .map_err(BenchError::RunLoad)
}

/// This very binary, which runs the load generator (and the servers, unless another build is named).
fn me() -> Result<String, BenchError> {
    std::env::current_exe()
        .map_err(BenchError::CurrentExe)
        .map(|p| p.to_string_lossy().into_owned())
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
