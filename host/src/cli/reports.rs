//! The commands that run something and print a report: `lab` (the checks, or the loss soak), `compare`,
//! `graph` (a capture's time-sequence graph), `throughput` and `bench`.

use std::io::Write;
use std::time::Duration as StdDuration;

use super::args::{BenchArgs, CompareArgs, GraphArgs, LabArgs, ThroughputArgs};
use crate::uppercase::kernel::resolve;

pub(super) fn compare(args: CompareArgs) -> Result<(), String> {
    let lossy_link = crate::stack::link_shape::LinkShape::new(args.link_delay, args.link_rate.0);
    let comparisons =
        crate::experiments::compare::run_all(&args.scenario, args.family, !args.no_tun, lossy_link);
    print!(
        "{}",
        crate::experiments::compare::render(&comparisons, args.format)
    );
    if let Some(dir) = &args.diagram {
        let written = crate::experiments::compare::write_diagrams(&comparisons, dir)
            .map_err(|e| e.to_string())?;
        eprintln!(
            "smoltalk compare: {} diagrams in {}",
            written.len(),
            dir.display()
        );
    }
    if let Some(dir) = &args.report {
        let page =
            crate::experiments::compare::write_report(&comparisons, dir, &how_compared(&args))
                .map_err(|e| e.to_string())?;
        eprintln!("smoltalk compare: the report is {}", page.display());
    }
    Ok(())
}

/// How `compare` ran, for the report's first paragraph: the command, and what each stack's times are.
fn how_compared(args: &CompareArgs) -> String {
    let mut command = vec!["smoltalk compare".to_string()];
    for scenario in &args.scenario {
        command.push(format!("--scenario {}", scenario.name()));
    }
    if args.no_tun {
        command.push("--no-tun".into());
    }
    match args.family {
        crate::experiments::compare::Families::Both => {}
        crate::experiments::compare::Families::Ipv4 => command.push("--family 4".into()),
        crate::experiments::compare::Families::Ipv6 => command.push("--family 6".into()),
    }
    let lossy = crate::experiments::compare::LOSSY_LINK;
    if args.link_delay != lossy.delay {
        command.push(format!("--link-delay {}ns", args.link_delay.as_nanos()));
    }
    if args.link_rate.0 != lossy.rate {
        command.push(match args.link_rate.0 {
            Some(bits) => format!("--link-rate {bits}bit"),
            None => "--link-rate none".into(),
        });
    }
    let tun = match (args.no_tun, crate::sys::is_root()) {
        (true, _) => "smoltcp on TUN was not run (--no-tun)",
        (false, true) => {
            "smoltcp's client on a TUN device in a namespace against kernel servers (wall time)"
        }
        (false, false) => "smoltcp on TUN was not run (it needs root)",
    };
    format!(
        "Made by `{}` ({}): the kernel stack over loopback (wall time), smoltcp in the lab (virtual time: the \
         lab's clock, which stands still while nothing is due), and {tun}. Each picture links to itself at full \
         size, and the capture it was drawn from is beside it.",
        command.join(" "),
        match args.family {
            crate::experiments::compare::Families::Both => "IPv4, then IPv6",
            crate::experiments::compare::Families::Ipv4 => "IPv4",
            crate::experiments::compare::Families::Ipv6 => "IPv6",
        }
    )
}

pub(super) fn graph(args: GraphArgs) -> Result<(), String> {
    use crate::experiments::graph::{
        graph_capture_direction, time_sequence_svg, GraphDirection, TimeBase,
    };
    let bytes = std::fs::read(&args.capture)
        .map_err(|e| format!("cannot read {}: {e}", args.capture.display()))?;
    let direction = match args.reverse {
        true => GraphDirection::Other,
        false => GraphDirection::Busier,
    };
    let drawn = graph_capture_direction(&bytes, args.stream, direction)
        .map_err(|e| format!("{}: {e}", args.capture.display()))?;
    let graph = &drawn.graph;
    let output = args.output.unwrap_or_else(|| {
        let stem = args
            .capture
            .file_stem()
            .map_or("capture".into(), |s| s.to_string_lossy().into_owned());
        args.capture.with_file_name(format!(
            "{stem}-stream{}{}.svg",
            graph.stream,
            if args.reverse { "-reverse" } else { "" }
        ))
    });
    std::fs::write(&output, time_sequence_svg(graph, TimeBase::Capture))
        .map_err(|e| format!("cannot write {}: {e}", output.display()))?;
    let why = if drawn.busiest_chosen {
        format!(
            ", the one of {} that carried the most payload",
            drawn.streams
        )
    } else {
        format!(" of {}", drawn.streams)
    };
    println!(
        "stream {}{why}: {} → {}, {} payload bytes drawn (the {} direction; {} the other way), {} \
         segments, {} retransmissions",
        graph.stream,
        graph.sender,
        graph.receiver,
        graph.payload_bytes,
        if args.reverse { "other" } else { "busier" },
        drawn.other_direction_payload,
        graph.segments.len(),
        graph.retransmitted_frames().len()
    );
    println!("{}", output.display());
    Ok(())
}

pub(super) fn lab(args: LabArgs) -> Result<(), String> {
    let capture = |path: &std::path::Path| {
        crate::stack::instruments::CaptureFile::create(path)
            .map_err(|e| format!("cannot write the capture {}: {e}", path.display()))
    };
    if let Some(bytes) = args.soak {
        let options = crate::lab::soak::SoakOptions {
            bytes,
            drop_chance: args.drop_chance,
            corrupt_chance: args.corrupt_chance,
            seed: args.seed,
            receive_buffer: args.socket_buffer,
            send_buffer: args.send_buffer.unwrap_or(args.socket_buffer / 2),
            udp_requests: args.udp_requests,
            reference: !args.no_reference,
            skip_checksums: args.skip_checksums,
            link: args.link(),
        };
        let report =
            crate::lab::soak::run(&options, args.pcap.as_deref().map(capture).transpose()?);
        super::say(&report.render());
        return match report.failure() {
            None => Ok(()),
            Some(failure) => Err(format!("the soak failed: {failure}")),
        };
    }
    let proxy_pcap = args.pcap.as_ref().map(|p| {
        // On standard output the proxy's part continues the one stream.
        if crate::stack::instruments::is_standard_output(p) {
            return p.clone();
        }
        let stem = p
            .file_stem()
            .map_or("capture".into(), |s| s.to_string_lossy().into_owned());
        let name = match p.extension() {
            Some(ext) => format!("{stem}-proxy.{}", ext.to_string_lossy()),
            None => format!("{stem}-proxy"),
        };
        p.with_file_name(name)
    });
    let uppercase = crate::lab::checks::run_uppercase_checks_captured(
        args.pcap.as_deref().map(capture).transpose()?,
        args.link(),
    )
    .map_err(|e| e.to_string())?;
    super::say(&format!("{}\n", uppercase.render()));
    let proxy = crate::lab::proxy::run_proxy_checks_captured(
        proxy_pcap.as_deref().map(capture).transpose()?,
        args.link(),
    )
    .map_err(|e| e.to_string())?;
    super::say(&proxy.render());
    // The classic questions, measured: the kernel over loopback and smoltcp in the lab (what needs no root).
    super::say(
        "\nsmoltalk lab: the classic questions on both stacks (`smoltalk compare` for JSON and diagrams)\n",
    );
    // What needs no root: the kernel's loopback and the lab (the TUN runs are `smoltalk compare`'s).
    let comparisons = crate::experiments::compare::run_all(
        &[],
        crate::experiments::compare::Families::Both,
        false,
        args.lossy_link(),
    );
    super::say(&crate::experiments::compare::render(
        &comparisons,
        crate::experiments::compare::Format::Table,
    ));
    if let Some(dir) = &args.diagram {
        let written = crate::experiments::compare::write_diagrams(&comparisons, dir)
            .map_err(|e| e.to_string())?;
        super::say(&format!(
            "{} diagrams in {}\n",
            written.len(),
            dir.display()
        ));
    }
    if uppercase.passed() && proxy.passed() {
        Ok(())
    } else {
        Err("some lab checks failed (see above)".into())
    }
}

pub(super) fn throughput(args: ThroughputArgs) -> Result<(), String> {
    let servers = resolve(&args.host, args.port).map_err(|e| e.to_string())?;
    let measured = crate::tools::load::run(
        servers[0],
        args.connections as usize,
        StdDuration::from_secs_f64(args.seconds / 4.0),
        StdDuration::from_secs_f64(args.seconds),
        args.chunk as usize,
        args.socket_buffer,
    )
    .map_err(|e| e.to_string())?;
    let mut out = super::human_output();
    let _ = writeln!(
        out,
        "throughput: {:.3} Gbit/s each way ({} verified reply bytes in {:.2} s over {} connection(s))",
        measured.gbit_per_s(),
        measured.bytes,
        measured.elapsed.as_secs_f64(),
        measured.connections
    );
    Ok(())
}

pub(super) fn bench(args: BenchArgs) -> Result<(), String> {
    let opts = crate::tools::bench::BenchOptions {
        seconds: args.seconds,
        runs: args.runs as usize,
        smoltcp_benchmark: args.smoltcp_benchmark,
        transform_only: args.transform_only,
        server_binary: args.server_binary,
        goal_filter: args.goal,
    };
    let report = crate::tools::bench::run(&opts).map_err(|e| e.to_string())?;
    println!("{}\n{report}", crate::tools::bench::describe());
    Ok(())
}
