//! Printing a comparison (aligned text, Markdown, JSON; each scenario's title followed by its family) and
//! drawing its captures as ladder diagrams and, for TCP, time-sequence graphs.

use std::fmt::Write as _;

use super::{Comparison, Observation, WriteDiagramsError};
use crate::experiments::diagram::packets_from_pcap;
use crate::experiments::graph::{
    graph_capture, time_sequence_svg_on, GraphAxes, GraphError, TimeBase,
};
use crate::lab::IpVersion;
use crate::stack::link_shape::rate_text;

/// How to print the comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned text.
    Table,
    /// A Markdown table.
    Markdown,
    /// JSON, one object per scenario.
    Json,
}

/// The packets of a run over `version`, with that family's names for address resolution (ARP, NDP) and the
/// port-unreachable error (ICMP, ICMPv6).
pub(super) fn packets_cell(o: &Observation, version: IpVersion) -> String {
    let icmp = match version {
        IpVersion::Ipv4 => "ICMP",
        IpVersion::Ipv6 => "ICMPv6",
    };
    match (o.packets, &o.packets_note) {
        (Some(p), _) => format!(
            "{} pkts: {} {} SYN {} FIN {} RST {} {icmp}-unreach {} UDP {} retrans {}",
            p.total,
            version.neighbour_discovery(),
            p.address_resolution,
            p.syn,
            p.fin,
            p.rst,
            p.icmp_port_unreachable,
            p.udp,
            p.retransmissions
        ),
        (None, Some(note)) => note.clone(),
        (None, None) => "-".into(),
    }
}

/// The link a lossy scenario's run had, and the RTT and rate it added, or nothing for a plain scenario.
pub(super) fn link_cell(o: &Observation) -> Option<String> {
    let words = o.link.as_ref()?;
    Some(format!(
        "link: {words} [rtt_ms {}, rate {}]",
        o.rtt_ms.map_or("-".into(), |r| format!("{r}")),
        o.rate_bits.map_or("none".into(), rate_text)
    ))
}

pub(super) fn time_cell(o: &Observation) -> String {
    format!(
        "{:.1} ms{}",
        o.millis,
        if o.virtual_time { " (virtual)" } else { "" }
    )
}

/// The comparison as `format` says.
pub fn render(comparisons: &[Comparison], format: Format) -> String {
    match format {
        Format::Json => serde_json::to_string_pretty(comparisons)
            .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}")),
        Format::Markdown => {
            let mut out = String::from(
                "| scenario | stack | outcome | time | packets |\n|---|---|---|---|---|\n",
            );
            for c in comparisons {
                for o in c.observations() {
                    let _ = writeln!(
                        out,
                        "| {} ({}) | {} ({}{}) | {} | {} | {} |",
                        c.title,
                        c.family,
                        o.stack,
                        o.network,
                        link_cell(o).map_or(String::new(), |l| format!("; {l}")),
                        o.outcome.replace('|', "\\|"),
                        time_cell(o),
                        packets_cell(o, c.family)
                    );
                }
                if c.differs {
                    let _ = writeln!(
                        out,
                        "| | **differ** | {} | | |",
                        c.explanation.replace('|', "\\|")
                    );
                }
            }
            out
        }
        Format::Table => {
            let mut out = String::new();
            for c in comparisons {
                let _ = writeln!(out, "{} ({})", c.title, c.family);
                for o in c.observations() {
                    let _ = writeln!(
                        out,
                        "  {:<8} {:<9} {:<22} {}\n           {}",
                        o.stack,
                        o.network,
                        time_cell(o),
                        o.outcome,
                        packets_cell(o, c.family)
                    );
                    if let Some(link) = link_cell(o) {
                        let _ = writeln!(out, "           {link}");
                    }
                }
                if c.differs {
                    let _ = writeln!(out, "  differ:  {}", c.explanation);
                }
            }
            out
        }
    }
}

/// The name of a run's pictures and capture, without extension: `<scenario>-<stack>-<family>`
/// (`tcp_wrong_port-smoltcp-ipv4`).
pub(super) fn diagram_stem(c: &Comparison, o: &Observation) -> String {
    let family = c.family.name().to_ascii_lowercase();
    format!("{}-{}-{family}", c.scenario.name(), o.stack)
}

/// Writes one ladder diagram per scenario, family and stack into `dir` (`<scenario>-<stack>-ipv4.svg`,
/// `…-ipv6.svg`), drawn from the runs' captures, each capture beside its picture (`.pcap`), and for a run that
/// carried TCP data its time-sequence graph (`…-ipv4-tsg.svg`: the stream and direction with the most payload, on
/// the lab's virtual clock or real time). One scenario's graphs share their axes (the union of what each
/// needs), so that side by side the stacks compare at a glance. Returns the pictures written, ladders and
/// graphs.
pub fn write_diagrams(
    comparisons: &[Comparison],
    dir: &std::path::Path,
) -> Result<Vec<std::path::PathBuf>, WriteDiagramsError> {
    std::fs::create_dir_all(dir).map_err(|source| WriteDiagramsError::CreateDir {
        dir: dir.to_path_buf(),
        source,
    })?;
    let write = |path: &std::path::Path, bytes: &[u8]| {
        std::fs::write(path, bytes).map_err(|source| WriteDiagramsError::Write {
            path: path.to_path_buf(),
            source,
        })
    };
    let mut written = Vec::new();
    for c in comparisons {
        // The graphs of this scenario's runs, drawn once all are known (their axes are shared).
        let mut graphs = Vec::new();
        for o in c.observations() {
            let Some(capture) = &o.capture else { continue };
            let packets = packets_from_pcap(capture)?;
            let path = dir.join(format!("{}.svg", diagram_stem(c, o)));
            let title = format!("{} ({}) — {} ({})", c.title, c.family, o.stack, o.network);
            write(
                &path,
                crate::experiments::diagram::ladder_svg(&title, &packets).as_bytes(),
            )?;
            // The capture the picture was drawn from, beside it, for tshark or Wireshark.
            write(&path.with_extension("pcap"), capture)?;
            written.push(path);
            // A TCP run's time-sequence graph beside its ladder, on the clock the run was on.
            let time_base = match o.virtual_time {
                true => TimeBase::LabVirtual,
                false => TimeBase::Real,
            };
            match graph_capture(capture, None) {
                // A connection that carried no data (refused, say) has nothing to graph.
                Ok(drawn) if drawn.graph.payload_bytes == 0 => {}
                Ok(drawn) => {
                    let tsg = dir.join(format!("{}-tsg.svg", diagram_stem(c, o)));
                    graphs.push((tsg, drawn.graph, time_base));
                }
                // A run without TCP (the UDP scenarios) has no time-sequence graph.
                Err(GraphError::NoTcp { .. }) => {}
                Err(e) => return Err(WriteDiagramsError::Graph(e)),
            }
        }
        let axes = graphs
            .iter()
            .map(|(_, graph, _)| GraphAxes::of(graph))
            .reduce(GraphAxes::union);
        for (tsg, graph, time_base) in graphs {
            let axes = axes.unwrap_or_else(|| GraphAxes::of(&graph));
            write(
                &tsg,
                time_sequence_svg_on(&graph, time_base, axes).as_bytes(),
            )?;
            written.push(tsg);
        }
    }
    Ok(written)
}
