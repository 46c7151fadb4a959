//! The echo part of the benchmark: TCP uppercase echo throughput in the benchmark's namespace, the kernel stack
//! over loopback against smoltcp on TUN/TAP (its defaults, over IPv4 and IPv6, and the options that show what
//! the defaults are worth), and smoltcp's own `examples/benchmark.rs` on TAP (the goals that compare its rows are
//! in `goals.rs`).

use std::time::Instant;

use super::{me, median, throughput, BenchError, BenchOptions};
use crate::tools::netns::{Namespace, Server, ServerError};

/// One row of the echo table.
pub(super) struct Scenario {
    pub(super) name: &'static str,
    /// None: the kernel's own server over loopback; else the device kind and its MTU.
    pub(super) device: Option<(&'static str, usize)>,
    /// smoltcp's `--socket-buffer` (None: the default).
    pub(super) buffer: Option<usize>,
    pub(super) connections: u16,
    /// More options for the smoltcp server.
    pub(super) options: &'static [&'static str],
    /// Over IPv6: the device's kernel side also gets fd00:2::2/64, and the runs go to smoltcp's fd00:2::15 and
    /// 10.0.2.15 in turns, on the same server (see [`Alongside`]).
    pub(super) ipv6: bool,
}

/// What became of a row.
#[derive(Clone, Copy)]
pub(super) enum RowResult {
    /// Its medians.
    Measured(Measured),
    /// The server refused the row's options (an older build, see `--server-binary`).
    Refused,
    /// Left out by `--goal`.
    NotRun,
}

impl RowResult {
    pub(super) fn measured(&self) -> Option<Measured> {
        match self {
            RowResult::Measured(m) => Some(*m),
            RowResult::Refused | RowResult::NotRun => None,
        }
    }
}

/// What one row measured: echo Gbit/s each way, the device's Gbit/s (rx + tx), and the server's CPU time as a
/// share of one CPU over the load generator's whole run, medians.
#[derive(Default, Clone, Copy)]
pub(super) struct Measured {
    pub(super) echo: f64,
    pub(super) device: f64,
    pub(super) server_cpu: f64,
    /// An IPv6 row's IPv4 runs, taken in turns with its IPv6 runs.
    pub(super) ipv4_alongside: Option<Alongside>,
}

/// The IPv4 runs of an IPv6 row: the same server on the same device, a run over IPv4 next to each run over
/// IPv6 (IPv4 first, then IPv6 first, in turns), so the load on a shared machine hits both alike.
#[derive(Default, Clone, Copy)]
pub(super) struct Alongside {
    /// The IPv4 runs' median echo Gbit/s.
    pub(super) echo: f64,
    /// The IPv4 runs' server CPU per Gbit/s (the median CPU over the median echo, as [`Measured::cpu_per_gbit`]).
    pub(super) cpu_per_gbit: f64,
    /// The median over the pairs of runs of IPv6's echo over IPv4's.
    pub(super) ratio: f64,
}

/// One run of the load generator.
struct Run {
    echo: f64,
    /// The device's Gbit/s (rx + tx), on a device.
    device: Option<f64>,
    server_cpu: f64,
}

impl Measured {
    /// The server's CPU time per Gbit/s echoed (lower is cheaper).
    pub(super) fn cpu_per_gbit(&self) -> f64 {
        self.server_cpu / self.echo.max(f64::MIN_POSITIVE)
    }
}

const TAP_1500: Option<(&str, usize)> = Some(("tap", 1500));
const TUN_1500: Option<(&str, usize)> = Some(("tun", 1500));
const TUN_65000: Option<(&str, usize)> = Some(("tun", 65000));
const DEFAULTS: &[&str] = &[];
const THREAD_OFF: &[&str] = &["--kernel-thread", "off"];
const THREAD_ON: &[&str] = &["--kernel-thread", "on"];
const THREAD_PER_CLIENT: &[&str] = &["--thread-per-client"];

/// The rows of the echo table; the goals refer to them by the indices below.
pub(super) const SCENARIOS: &[Scenario] = &[
    row("kernel stack, loopback", None, None, 1, DEFAULTS),
    row("kernel stack, loopback", None, None, 4, DEFAULTS),
    // The kernel server's design before its event loops (issue 15): every kernel figure must stay as high.
    row(
        "kernel stack, loopback, --thread-per-client",
        None,
        None,
        1,
        THREAD_PER_CLIENT,
    ),
    row(
        "kernel stack, loopback, --thread-per-client",
        None,
        None,
        4,
        THREAD_PER_CLIENT,
    ),
    row("smoltcp on TAP", TAP_1500, None, 1, DEFAULTS),
    row("smoltcp on TAP", TAP_1500, None, 4, DEFAULTS),
    row("smoltcp on TUN", TUN_1500, None, 1, DEFAULTS),
    row("smoltcp on TUN", TUN_1500, None, 4, DEFAULTS),
    // The same over IPv6 (the IPv6 issue): smoltcp 0.14 sends IPv6 in MSS-sized segments, which the device
    // joins into super-packets.
    ipv6_row("smoltcp on TUN, IPv6", TUN_1500, 1),
    ipv6_row("smoltcp on TUN, IPv6", TUN_1500, 4),
    row("smoltcp on TUN", TUN_65000, None, 1, DEFAULTS),
    row("smoltcp on TUN", TUN_65000, None, 4, DEFAULTS),
    // What the defaults are worth: without segmentation offload, without any offload, other buffers.
    row(
        "smoltcp on TUN, --offload checksum",
        TUN_1500,
        None,
        1,
        &["--offload", "checksum"],
    ),
    row(
        "smoltcp on TAP, --offload checksum",
        TAP_1500,
        None,
        1,
        &["--offload", "checksum"],
    ),
    row(
        "smoltcp on TUN, --offload checksum",
        TUN_65000,
        None,
        1,
        &["--offload", "checksum"],
    ),
    row(
        "smoltcp on TUN, --no-offload",
        TUN_65000,
        None,
        1,
        &["--no-offload"],
    ),
    row(
        "smoltcp on TUN, --kernel-thread off",
        TUN_1500,
        None,
        1,
        THREAD_OFF,
    ),
    row(
        "smoltcp on TUN, --kernel-thread off",
        TUN_1500,
        None,
        4,
        THREAD_OFF,
    ),
    row(
        "smoltcp on TUN, --kernel-thread off",
        TUN_65000,
        None,
        1,
        THREAD_OFF,
    ),
    row(
        "smoltcp on TUN, --kernel-thread off",
        TUN_65000,
        None,
        4,
        THREAD_OFF,
    ),
    row(
        "smoltcp on TUN, --kernel-thread on",
        TUN_1500,
        None,
        1,
        THREAD_ON,
    ),
    row(
        "smoltcp on TUN, --kernel-thread on",
        TUN_1500,
        None,
        4,
        THREAD_ON,
    ),
    row("smoltcp on TUN", TUN_1500, Some(64 << 10), 1, DEFAULTS),
    row("smoltcp on TUN", TUN_1500, Some(64 << 10), 4, DEFAULTS),
    row("smoltcp on TUN", TUN_1500, Some(1 << 20), 1, DEFAULTS),
    row("smoltcp on TUN", TUN_1500, Some(1 << 20), 4, DEFAULTS),
];

/// Indices into [`SCENARIOS`] of the rows the goals compare.
pub(super) const KERNEL: usize = 0;
pub(super) const KERNEL_FOUR: usize = 1;
pub(super) const KERNEL_THREADS_ONE: usize = 2;
pub(super) const KERNEL_THREADS_FOUR: usize = 3;
pub(super) const TAP_1500_ONE: usize = 4;
pub(super) const TUN_1500_ONE: usize = 6;
pub(super) const TUN_1500_FOUR: usize = 7;
pub(super) const TUN6_1500_ONE: usize = 8;
pub(super) const TUN6_1500_FOUR: usize = 9;
pub(super) const TUN_65000_ONE: usize = 10;
pub(super) const TUN_65000_FOUR: usize = 11;

const fn row(
    name: &'static str,
    device: Option<(&'static str, usize)>,
    buffer: Option<usize>,
    connections: u16,
    options: &'static [&'static str],
) -> Scenario {
    Scenario {
        name,
        device,
        buffer,
        connections,
        options,
        ipv6: false,
    }
}

/// A row over IPv6, default options and buffers.
const fn ipv6_row(
    name: &'static str,
    device: Option<(&'static str, usize)>,
    connections: u16,
) -> Scenario {
    Scenario {
        ipv6: true,
        ..row(name, device, None, connections, DEFAULTS)
    }
}

fn parse_gbits(text: &str, after: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.split_once(after))
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Runs one row: its server (from `opts.server_binary` if given, else this binary) and `opts.runs` runs of
/// the load generator.
pub(super) fn run_scenario(
    ns: &Namespace,
    scenario: &Scenario,
    opts: &BenchOptions,
) -> Result<RowResult, BenchError> {
    let exe = me()?;
    let server_exe = opts
        .server_binary
        .as_ref()
        .map_or(exe.clone(), |p| p.to_string_lossy().into_owned());
    let dev = "stbench0";
    let buffer = scenario.buffer.map(|b| b.to_string());
    let (server_cmd, host) = match scenario.device {
        None => {
            let mut args = vec!["tcp-server", "--bind", "127.0.0.1", "--port", "12000"];
            args.extend_from_slice(scenario.options);
            (ns.command(&server_exe, &args), "127.0.0.1")
        }
        Some((mode, mtu)) => {
            ns.add_device(dev, mode, "10.0.2.2/24", mtu)?;
            if scenario.ipv6 {
                // Usable at once: no duplicate address detection, which keeps it tentative for a second.
                ns.ip(&["-6", "addr", "add", "fd00:2::2/64", "dev", dev, "nodad"])?;
            }
            let mut args = vec!["tcp-server", "--stack", mode, "--dev", dev];
            if let Some(buffer) = &buffer {
                args.extend(["--socket-buffer", buffer]);
            }
            args.extend_from_slice(scenario.options);
            let host = if scenario.ipv6 {
                "fd00:2::15"
            } else {
                "10.0.2.15"
            };
            (ns.command(&server_exe, &args), host)
        }
    };
    let result = (|| -> Result<RowResult, BenchError> {
        let server = match Server::start(server_cmd) {
            Ok(server) => server,
            Err(e @ ServerError::DidNotStart { .. }) if !scenario.options.is_empty() => {
                eprintln!("bench: {}: {e}; row left out", scenario.name);
                return Ok(RowResult::Refused);
            }
            Err(e) => return Err(e.into()),
        };
        let mut runs = Vec::new();
        let mut ipv4_runs = Vec::new();
        for i in 0..opts.runs {
            if !scenario.ipv6 {
                runs.push(run_once(ns, &server, host, dev, scenario, opts)?);
                continue;
            }
            let ipv4_first = i % 2 == 0;
            if ipv4_first {
                ipv4_runs.push(run_once(ns, &server, "10.0.2.15", dev, scenario, opts)?);
            }
            runs.push(run_once(ns, &server, host, dev, scenario, opts)?);
            if !ipv4_first {
                ipv4_runs.push(run_once(ns, &server, "10.0.2.15", dev, scenario, opts)?);
            }
        }
        drop(server);
        let ipv4_alongside = (!ipv4_runs.is_empty()).then(|| Alongside {
            echo: median(ipv4_runs.iter().map(|r| r.echo).collect()),
            cpu_per_gbit: median(ipv4_runs.iter().map(|r| r.server_cpu).collect())
                / median(ipv4_runs.iter().map(|r| r.echo).collect()).max(f64::MIN_POSITIVE),
            ratio: median(
                runs.iter()
                    .zip(&ipv4_runs)
                    .map(|(v6, v4)| v6.echo / v4.echo.max(f64::MIN_POSITIVE))
                    .collect(),
            ),
        });
        Ok(RowResult::Measured(Measured {
            echo: median(runs.iter().map(|r| r.echo).collect()),
            device: median(runs.iter().filter_map(|r| r.device).collect()),
            server_cpu: median(runs.iter().map(|r| r.server_cpu).collect()),
            ipv4_alongside,
        }))
    })();
    if scenario.device.is_some() {
        let _ = ns.delete_device(dev);
    }
    result
}

/// One run of the load generator against `server` at `host`, the device `dev` counted if the row has one.
fn run_once(
    ns: &Namespace,
    server: &Server,
    host: &str,
    dev: &str,
    scenario: &Scenario,
    opts: &BenchOptions,
) -> Result<Run, BenchError> {
    let before = scenario.device.map(|_| ns.device_bytes(dev)).transpose()?;
    let cpu_before = server.cpu_time().ok_or(BenchError::ServerGone)?;
    let start = Instant::now();
    let connections = usize::from(scenario.connections);
    let out = throughput(ns, host, server.port, opts.seconds, connections)?;
    let wall = start.elapsed().as_secs_f64();
    let cpu = server.cpu_time().ok_or(BenchError::ServerGone)? - cpu_before;
    let text = String::from_utf8_lossy(&out.stdout);
    let echo = parse_gbits(&text, "throughput:").ok_or_else(|| BenchError::LoadFailed {
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    })?;
    let device = match before {
        Some(before) => Some((ns.device_bytes(dev)? - before) as f64 * 8.0 / wall / 1e9),
        None => None,
    };
    Ok(Run {
        echo,
        device,
        server_cpu: cpu.as_secs_f64() / wall,
    })
}

/// IPv6 beside IPv4: for each IPv6 row measured, its IPv4 runs taken in turns with its IPv6 runs on the same
/// server; empty if none was.
pub(super) fn ipv6_table(results: &[RowResult]) -> String {
    let rows: Vec<(&Scenario, Alongside, Measured)> = SCENARIOS
        .iter()
        .zip(results)
        .filter_map(|(scenario, result)| {
            let m = result.measured()?;
            Some((scenario, m.ipv4_alongside?, m))
        })
        .collect();
    if rows.is_empty() {
        return String::new();
    }
    let mut out = String::from(
        "| server | MTU | connections | IPv4 echo Gbit/s | IPv6 echo Gbit/s | IPv6 / IPv4 (median of the pairs) | server CPU per Gbit/s (% of one), IPv4 | IPv6 |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for (scenario, ipv4, ipv6) in rows {
        let mtu = scenario.device.map_or(0, |(_, mtu)| mtu);
        out += &format!(
            "| {} | {mtu} | {} | {:.2} | {:.2} | {:.2} | {:.1} | {:.1} |\n",
            scenario.name,
            scenario.connections,
            ipv4.echo,
            ipv6.echo,
            ipv4.ratio,
            ipv4.cpu_per_gbit * 100.0,
            ipv6.cpu_per_gbit() * 100.0
        );
    }
    out
}

/// The echo table, one line per row run (rows left out by `--goal` are not shown; without the kernel's row, its
/// column says –).
pub(super) fn table(results: &[RowResult]) -> String {
    let kernel = results
        .get(KERNEL)
        .and_then(RowResult::measured)
        .map(|m| m.echo);
    let mut out = String::from(
        "| server | MTU | smoltcp buffers, each way | connections | echo Gbit/s each way | device Gbit/s (rx+tx) | × kernel, 1 conn | server CPU, % of one |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for (scenario, result) in SCENARIOS.iter().zip(results) {
        let m = match result {
            RowResult::Measured(m) => m,
            RowResult::NotRun => continue,
            RowResult::Refused => {
                out += &format!(
                    "| {} | – | – | {} | not run (the server refused its options) | – | – | – |\n",
                    scenario.name, scenario.connections
                );
                continue;
            }
        };
        let (mtu, buffers, device) = match scenario.device {
            None => (
                "65536 (lo)".to_string(),
                "kernel".to_string(),
                "–".to_string(),
            ),
            Some((_, mtu)) => (
                mtu.to_string(),
                scenario
                    .buffer
                    .map_or("256 KiB (default)".to_string(), |b| {
                        format!("{} KiB", b >> 10)
                    }),
                format!("{:.2}", m.device),
            ),
        };
        let times_kernel = kernel.map_or("–".to_string(), |k| format!("{:.2}", m.echo / k));
        out += &format!(
            "| {} | {mtu} | {buffers} | {} | {:.2} | {device} | {times_kernel} | {:.0} |\n",
            scenario.name,
            scenario.connections,
            m.echo,
            m.server_cpu * 100.0
        );
    }
    out
}

/// smoltcp's own benchmark (one direction) on a TAP device at MTU 1500; device Gbit/s and its own figure.
///
/// The example starts its kernel-side client before its smoltcp socket listens; when the client wins that race
/// it is refused, panics, and the example waits for ever. Such a run is cut off after 60 s and tried again
/// (up to three attempts per run); it is reported on standard error, never counted.
pub(super) fn run_reference(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_goal_indices_name_the_rows_they_compare() {
        let at = |i: usize| {
            let s = &SCENARIOS[i];
            assert!(
                !s.ipv6 || matches!(i, TUN6_1500_ONE | TUN6_1500_FOUR),
                "row {i}"
            );
            (s.device, s.connections, s.options, s.buffer)
        };
        assert_eq!(at(KERNEL), (None, 1, DEFAULTS, None));
        assert_eq!(at(KERNEL_FOUR), (None, 4, DEFAULTS, None));
        assert_eq!(at(KERNEL_THREADS_ONE), (None, 1, THREAD_PER_CLIENT, None));
        assert_eq!(at(KERNEL_THREADS_FOUR), (None, 4, THREAD_PER_CLIENT, None));
        assert_eq!(at(TAP_1500_ONE), (TAP_1500, 1, DEFAULTS, None));
        assert_eq!(at(TUN_1500_ONE), (TUN_1500, 1, DEFAULTS, None));
        assert_eq!(at(TUN_1500_FOUR), (TUN_1500, 4, DEFAULTS, None));
        assert_eq!(at(TUN_65000_ONE), (TUN_65000, 1, DEFAULTS, None));
        assert_eq!(at(TUN_65000_FOUR), (TUN_65000, 4, DEFAULTS, None));
        assert_eq!(at(TUN6_1500_ONE), (TUN_1500, 1, DEFAULTS, None));
        assert_eq!(at(TUN6_1500_FOUR), (TUN_1500, 4, DEFAULTS, None));
        assert!(SCENARIOS[TUN6_1500_ONE].ipv6 && SCENARIOS[TUN6_1500_FOUR].ipv6);
        assert_eq!(SCENARIOS.iter().filter(|s| s.ipv6).count(), 2);
    }
}
