//! What a soak found: each stream's run ([`SoakRun`]), the UDP requests ([`UdpSoak`]), and the report that
//! renders them as a table ([`SoakReport`]).

use std::fmt::Write as _;

use smoltcp::time::Duration;

use super::{SoakError, SoakOptions};
use crate::lab::checks::{CLIENT_IP, PORT, SERVER_IP};
use crate::lab::LinkStats;

/// One stream through the lab.
#[derive(Debug, Clone)]
pub struct SoakRun {
    /// What the run was ("no faults", "10 % drop, 1 % corrupt").
    pub label: String,
    /// Reply bytes that arrived and were checked.
    pub verified: u64,
    /// Virtual time from the SYN to the end of the close.
    pub virtual_time: Duration,
    /// Real time the run took.
    pub wall_time: std::time::Duration,
    /// What crossed the segment.
    pub link: LinkStats,
    /// The longest time nothing moved on the segment.
    pub longest_silence: Duration,
    /// Whether every byte came back right.
    pub outcome: Result<(), SoakError>,
}

/// UDP requests at the same faults: how many tries each took.
#[derive(Debug, Clone)]
pub struct UdpSoak {
    /// Requests sent.
    pub requests: u32,
    /// Tries allowed per request.
    pub max_tries: u32,
    /// Requests answered correctly after exactly `i + 1` tries, for each `i`.
    pub tries: Vec<u32>,
    /// Why the requests stopped early, if they did.
    pub error: Option<String>,
}

impl UdpSoak {
    /// Requests answered.
    pub fn answered(&self) -> u32 {
        self.tries.iter().sum()
    }
}

/// Everything a soak found.
#[derive(Debug, Clone)]
pub struct SoakReport {
    /// What was soaked.
    pub options: SoakOptions,
    /// The loss-free reference run (if asked for), then the run with the faults.
    pub runs: Vec<SoakRun>,
    /// The UDP requests, if any.
    pub udp: Option<UdpSoak>,
}

impl SoakReport {
    /// Whether every run was byte-exact and every UDP request answered.
    pub fn passed(&self) -> bool {
        self.runs.iter().all(|r| r.outcome.is_ok())
            && self
                .udp
                .as_ref()
                .is_none_or(|u| u.error.is_none() && u.answered() == u.requests)
    }

    /// The first failure, for the error line.
    pub fn failure(&self) -> Option<String> {
        for run in &self.runs {
            if let Err(e) = &run.outcome {
                return Some(format!("{}: {e}", run.label));
            }
        }
        let udp = self.udp.as_ref()?;
        match &udp.error {
            Some(e) => Some(format!("udp: {e}")),
            None if udp.answered() < udp.requests => Some(format!(
                "udp: {} of {} requests answered",
                udp.answered(),
                udp.requests
            )),
            None => None,
        }
    }

    /// The report as people read it.
    pub fn render(&self) -> String {
        let o = &self.options;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "smoltalk lab --soak: {} bytes of uppercase over TCP each way, client {CLIENT_IP} -> server \
             {SERVER_IP}:{PORT}, {} KiB receive / {} KiB send buffers, seed {}, link: {}",
            o.bytes,
            o.receive_buffer / 1024,
            o.send_buffer / 1024,
            o.seed,
            o.link.describe()
        );
        let _ = writeln!(
            out,
            "{:<24} {:>12} {:>13} {:>9} {:>9} {:>8} {:>9} {:>11} {:>11} {:>10} {:>9}  result",
            "run",
            "bytes",
            "virtual time",
            "wall time",
            "frames",
            "dropped",
            "corrupted",
            "retransmits",
            "max silence",
            "MB/s virt.",
            "MB/s wall",
        );
        for run in &self.runs {
            let secs = run.virtual_time.total_micros() as f64 / 1e6;
            let wall = run.wall_time.as_secs_f64();
            // Under a millisecond of virtual time is no rate at all: the clock only jumps to due timers.
            let virtual_rate = if secs >= 1e-3 {
                format!("{:.3}", run.verified as f64 / secs / 1e6)
            } else {
                "-".to_string()
            };
            let _ = writeln!(
                out,
                "{:<24} {:>12} {:>11.3} s {:>7.2} s {:>9} {:>8} {:>9} {:>11} {:>9.3} s {:>10} {:>9.1}  {}",
                run.label,
                run.verified,
                secs,
                wall,
                run.link.frames,
                run.link.dropped,
                run.link.corrupted,
                run.link.tcp_retransmissions,
                run.longest_silence.total_micros() as f64 / 1e6,
                virtual_rate,
                run.verified as f64 / wall.max(1e-9) / 1e6,
                match &run.outcome {
                    Ok(()) => "byte-exact".to_string(),
                    Err(e) => format!("FAILED: {e}"),
                }
            );
        }
        for run in self.runs.iter().filter(|r| r.link.queue_dropped > 0) {
            let _ = writeln!(
                out,
                "{}: {} frames lost in a full link queue, besides those dropped on purpose ({} frames at most \
                 wait on a link)",
                run.label,
                run.link.queue_dropped,
                crate::stack::link_shape::QUEUE_LIMIT
            );
        }
        if let [clean, faulty] = &self.runs[..] {
            if clean.outcome.is_ok() && faulty.outcome.is_ok() {
                let rate = |r: &SoakRun| r.verified as f64 / r.wall_time.as_secs_f64().max(1e-9);
                let _ = writeln!(
                    out,
                    "with faults: {:.2}x the loss-free run's wall-clock throughput; {:.0} s of virtual time against {:.3} s \
                     ({})",
                    rate(faulty) / rate(clean),
                    faulty.virtual_time.total_micros() as f64 / 1e6,
                    clean.virtual_time.total_micros() as f64 / 1e6,
                    match o.link.is_none() {
                        true => "the lab's link has no rate or delay here: its virtual time is retransmission \
                                 timeouts and delayed ACKs"
                            .to_string(),
                        false => format!("the link: {}", o.link.describe()),
                    }
                );
            }
        }
        if let Some(udp) = &self.udp {
            let histogram: Vec<String> = udp
                .tries
                .iter()
                .enumerate()
                .filter(|(_, n)| **n > 0)
                .map(|(i, n)| {
                    format!(
                        "{n} after {} {}",
                        i + 1,
                        if i == 0 { "try" } else { "tries" }
                    )
                })
                .collect();
            let _ = writeln!(
                out,
                "udp: {} of {} requests answered right at the same faults (up to {} tries of 1 s each): {}{}",
                udp.answered(),
                udp.requests,
                udp.max_tries,
                histogram.join(", "),
                udp.error
                    .as_ref()
                    .map_or(String::new(), |e| format!("; then: {e}"))
            );
        }
        out
    }
}
