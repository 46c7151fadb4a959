//! `smoltalk compare`: the classic lab's questions answered by running them, on the kernel stack and on
//! smoltcp side by side, over IPv4 and over IPv6.
//!
//! Each [`Scenario`] runs live on both stacks, once per family ([`Families`]): the kernel's over loopback
//! (`std::net`, 127.0.0.1 or ::1), smoltcp's in the lab (two dual-stack nodes on a virtual segment, 10.0.2.x or
//! fd00:2::x), and, as root, smoltcp's client on TUN in a namespace against kernel servers. What a program saw
//! (the error, or the reply) and how long it took come from the run; the packets come from a capture of the
//! run (the lab's segment; `lo` through a packet socket when privileged), counted by `packets` from the ladder
//! diagram's decoding of it (`experiments::diagram`, which `--diagram` draws from too). Where the stacks
//! differ, the explanation is built from the packets both captures show. Nothing in the table is typed in.
//!
//! The lossy scenarios run over a link with a delay and a rate ([`LOSSY_LINK`] unless told otherwise): the lab's
//! links are shaped so, smoltcp on TUN gets it in its device layer (`--link-delay`, `--link-rate`), and the
//! kernel's namespace loopback gets it from netem where the kernel has netem; each row states the RTT and rate
//! it ran with (`link`, `rtt_ms`, `rate_bits`), or that nothing was added.

mod differ;
mod error;
mod kernel;
mod lab;
mod observation;
mod packets;
mod render;
mod report;
mod scenario;
mod tun;

pub use error::{CompareError, WriteDiagramsError};
pub use observation::{Comparison, Observation};
pub use packets::{count_packets, PacketCounts};
pub use render::{render, write_diagrams, Format};
pub use report::{report_html, write_report};
pub use scenario::{Families, Scenario};

use crate::lab::IpVersion;
use crate::stack::link_shape::LinkShape;
use differ::explain;
use kernel::kernel_run;
use lab::lab_run;
use tun::tun_run;

/// The link the lossy scenarios run over by default: 5 ms each way (an RTT of 10 ms), 100 Mbit/s.
pub const LOSSY_LINK: LinkShape =
    LinkShape::new(std::time::Duration::from_millis(5), Some(100_000_000));

/// Runs `scenarios` (every one if empty) on both stacks over each family of `families`, a scenario's families
/// one after another; with `tun`, also smoltcp on TUN in a namespace where privileged. The lossy scenarios run
/// over links of `lossy_link`, the others unshaped.
pub fn run_all(
    scenarios: &[Scenario],
    families: Families,
    tun: bool,
    lossy_link: LinkShape,
) -> Vec<Comparison> {
    let all = if scenarios.is_empty() {
        &Scenario::ALL[..]
    } else {
        scenarios
    };
    all.iter()
        .flat_map(|&s| families.versions().iter().map(move |&v| (s, v)))
        .map(|(s, v)| compare(s, v, tun, lossy_link))
        .collect()
}

/// Runs `scenario` over `version` on both stacks (and on TUN, with `tun`, where privileged) and compares them;
/// a lossy scenario over links of `lossy_link`.
pub fn compare(
    scenario: Scenario,
    version: IpVersion,
    tun: bool,
    lossy_link: LinkShape,
) -> Comparison {
    let link = match scenario.is_lossy() {
        true => lossy_link,
        false => LinkShape::default(),
    };
    let kernel = kernel_run(scenario, version, link);
    let smoltcp = lab_run(scenario, version, link);
    let smoltcp_tun = if tun {
        tun_run(scenario, version, link)
    } else {
        None
    };
    // A stack that could not run the scenario here is not a difference between the stacks.
    let ran = kernel.kind != "not_run" && smoltcp.kind != "not_run";
    let differs = ran && kernel.kind != smoltcp.kind;
    let mut explanation = if differs {
        explain(scenario, version, &kernel, &smoltcp)
    } else {
        String::new()
    };
    // smoltcp on a real device against the kernel, where it ran and saw something else than in the lab.
    if let Some(tun) = smoltcp_tun
        .as_ref()
        .filter(|t| t.kind != "not_run" && t.kind != smoltcp.kind)
    {
        let packets = tun.packets.map_or("no capture".to_string(), |p| {
            format!(
                "{} packets, {} retransmissions, RST {}",
                p.total, p.retransmissions, p.rst
            )
        });
        let line = format!(
            "on TUN against the kernel, smoltcp's client saw: {} ({packets})",
            tun.outcome
        );
        explanation = match explanation.is_empty() {
            true => line,
            false => format!("{explanation}; {line}"),
        };
    }
    let differs = differs || !explanation.is_empty();
    Comparison {
        scenario,
        family: version,
        title: scenario.title(),
        kernel,
        smoltcp,
        smoltcp_tun,
        differs,
        explanation,
    }
}
