//! `smoltalk graph` and the time-sequence graphs' retransmission marks, checked against tshark on lossy lab
//! captures (the lab needs no privileges; tshark reads files only). Without tshark the tshark tests say why
//! and return; under `CI=true` they fail.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use smoltalk::experiments::diagram::read_tcp_segments;
use smoltalk::experiments::graph::{split_streams, TimeSequence};
use support::*;

/// A fresh directory for one test.
fn test_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("smoltalk-graph-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Whether tshark is there; if not, says why (and fails under CI).
fn tshark_here(test: &str) -> bool {
    match missing_tool(&["tshark"]) {
        Some(reason) => {
            cannot_run(test, &reason);
            false
        }
        None => true,
    }
}

/// The lab's lossy captures: `compare`'s 1 MiB transfer at 10 % loss over IPv4 and IPv6, and the soak's
/// 200 kB each way at 5 % loss (other seeds, other losses).
fn lossy_lab_captures(dir: &Path) -> Vec<PathBuf> {
    let out = run({
        let mut cmd = smoltalk();
        cmd.args([
            "compare",
            "--no-tun",
            "--scenario",
            "lossy_tcp_transfer",
            "--diagram",
            dir.to_str().unwrap(),
        ]);
        cmd
    });
    assert!(out.status.success(), "{}", stderr(&out));
    let soak = dir.join("soak.pcap");
    let out = run({
        let mut cmd = smoltalk();
        cmd.args([
            "lab",
            "--soak",
            "200000",
            "--drop-chance",
            "5",
            "--seed",
            "7",
            "--no-reference",
            "--udp-requests",
            "0",
            "--pcap",
            soak.to_str().unwrap(),
        ]);
        cmd
    });
    assert!(out.status.success(), "{}", stderr(&out));
    vec![
        dir.join("lossy_tcp_transfer-smoltcp-ipv4.pcap"),
        dir.join("lossy_tcp_transfer-smoltcp-ipv6.pcap"),
        soak,
    ]
}

/// The frame numbers tshark's display filter `filter` selects in `pcap`.
fn tshark_frames(pcap: &Path, filter: &str) -> BTreeSet<usize> {
    tshark_lines(pcap, &[], filter, &["frame.number"])
        .iter()
        .map(|l| l.trim().parse().expect("a frame number"))
        .collect()
}

/// Every retransmission the graph marks is one tshark's `tcp.analysis.retransmission` marks, and every one
/// tshark marks the graph marks, in each direction of each stream of three lossy lab captures; the same for
/// the spurious ones (`tcp.analysis.spurious_retransmission`, which tshark counts as retransmissions too).
///
/// The definitions can differ in one place, and the check allows exactly that difference and no other: tshark
/// calls a segment below the highest sequence number sent "out-of-order" rather than a retransmission when it
/// comes within 3 ms (or the handshake's round trip) of the segment that sent that highest number and does
/// not end where it ended; the graph calls every segment that repeats sequence space a retransmission (the
/// lab's captures are one point on a segment that never reorders, so such a segment is sent again). A frame
/// the graph marks beyond tshark's retransmissions must be one of tshark's `tcp.analysis.out_of_order`. On
/// these captures the lab's clock is coarse and that set has been empty; the count is printed.
/// Keep-alives (`tcp.analysis.keep_alive`) and zero-window probes take no new sequence space for both.
#[test]
#[cfg_attr(smoltalk_no_tshark, ignore = "needs tshark")]
fn retransmissions_are_marked_where_tshark_marks_them() {
    let test = "retransmissions_are_marked_where_tshark_marks_them";
    if !tshark_here(test) {
        return;
    }
    let dir = test_dir("tshark");
    let mut total = 0;
    for pcap in lossy_lab_captures(&dir) {
        let bytes = std::fs::read(&pcap).unwrap();
        let capture = read_tcp_segments(&bytes).unwrap();
        let streams = split_streams(&capture.segments);
        assert!(!streams.is_empty(), "{}: no TCP", pcap.display());
        // The streams as tshark numbers them: the same count.
        let tshark_streams: BTreeSet<String> = tshark_lines(&pcap, &[], "tcp", &["tcp.stream"])
            .into_iter()
            .collect();
        assert_eq!(tshark_streams.len(), streams.len(), "{}", pcap.display());
        for stream in &streams {
            for sender in [stream.first_sender, stream.first_receiver] {
                let graph = TimeSequence::build(stream, sender);
                let ours: BTreeSet<usize> = graph.retransmitted_frames().into_iter().collect();
                let spurious: BTreeSet<usize> = graph
                    .segments
                    .iter()
                    .filter(|s| {
                        s.verdict
                            == smoltalk::experiments::graph::SegmentVerdict::SpuriousRetransmission
                    })
                    .map(|s| s.frame)
                    .collect();
                let this_way = format!(
                    "tcp.stream == {} && tcp.srcport == {} && {} == {}",
                    stream.index,
                    sender.port(),
                    if sender.is_ipv4() {
                        "ip.src"
                    } else {
                        "ipv6.src"
                    },
                    sender.ip()
                );
                let theirs =
                    tshark_frames(&pcap, &format!("{this_way} && tcp.analysis.retransmission"));
                let their_spurious = tshark_frames(
                    &pcap,
                    &format!("{this_way} && tcp.analysis.spurious_retransmission"),
                );
                let out_of_order =
                    tshark_frames(&pcap, &format!("{this_way} && tcp.analysis.out_of_order"));
                let missed: Vec<_> = theirs.difference(&ours).collect();
                assert!(
                    missed.is_empty(),
                    "{} {sender}: tshark marks {missed:?} as retransmissions, the graph does not",
                    pcap.display()
                );
                let beyond: Vec<_> = ours.difference(&theirs).collect();
                let unexplained: Vec<_> = beyond
                    .iter()
                    .filter(|f| !out_of_order.contains(f))
                    .collect();
                assert!(
                    unexplained.is_empty(),
                    "{} {sender}: the graph marks {unexplained:?}, which tshark calls neither \
                     retransmission nor out-of-order",
                    pcap.display()
                );
                if !beyond.is_empty() {
                    println!(
                        "{} {sender}: {} marked that tshark calls out-of-order: {beyond:?}",
                        pcap.display(),
                        beyond.len()
                    );
                }
                assert_eq!(spurious, their_spurious, "{} {sender}", pcap.display());
                total += theirs.len();
            }
        }
    }
    // Lossy runs: there are retransmissions to compare, in more than one capture's worth.
    assert!(
        total > 50,
        "only {total} retransmissions in the lossy captures"
    );
    println!("{total} retransmissions, each marked where tshark marks it");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `smoltalk graph CAPTURE`: exit 0, the path printed, the SVG beside the capture, well-formed XML, with one
/// bar per segment of the busier direction that takes sequence space (as tshark counts them) and as many
/// marked retransmissions as tshark marks; `-o` and `--stream` honoured; a stream out of range and a file that
/// is no capture are errors that say so.
#[test]
#[cfg_attr(smoltalk_no_tshark, ignore = "needs tshark")]
fn the_graph_command_writes_a_well_formed_svg_and_refuses_bad_input() {
    let test = "the_graph_command_writes_a_well_formed_svg_and_refuses_bad_input";
    if !tshark_here(test) {
        return;
    }
    let dir = test_dir("cli");
    let pcap = lossy_lab_captures(&dir).remove(0);
    let out = run({
        let mut cmd = smoltalk();
        cmd.args(["graph", pcap.to_str().unwrap()]);
        cmd
    });
    assert!(out.status.success(), "{}", stderr(&out));
    let expected = dir.join("lossy_tcp_transfer-smoltcp-ipv4-stream0.svg");
    let printed = stdout(&out);
    assert!(
        printed.lines().any(|l| l == expected.to_str().unwrap()),
        "{printed}"
    );
    // The lab's server (port 12000) sends the uppercased MiB back, with the most payload.
    assert!(
        printed.contains("stream 0, the one of 1 that carried the most payload"),
        "{printed}"
    );
    let svg = std::fs::read_to_string(&expected).unwrap();
    let direction = "tcp.stream == 0 && tcp.srcport == 12000";
    let segments = tshark_lines(
        &pcap,
        &[],
        &format!("{direction} && (tcp.len > 0 || tcp.flags.syn == 1 || tcp.flags.fin == 1)"),
        &["frame.number"],
    )
    .len();
    assert!(segments > 100, "{segments}");
    assert_eq!(svg.matches("class=\"segment").count(), segments);
    let retransmissions = tshark_lines(
        &pcap,
        &[],
        &format!("{direction} && tcp.analysis.retransmission"),
        &["frame.number"],
    )
    .len();
    assert!(retransmissions > 0);
    assert_eq!(
        svg.matches("class=\"segment retransmission").count(),
        retransmissions
    );
    assert!(
        svg.contains("x: capture time"),
        "the CLI's clock is the capture's"
    );
    // --reverse: the other direction, the client's (the MiB it sent, to port 12000), segment for segment as
    // tshark sees them.
    let out = run({
        let mut cmd = smoltalk();
        cmd.args(["graph", "--reverse", pcap.to_str().unwrap()]);
        cmd
    });
    assert!(out.status.success(), "{}", stderr(&out));
    let reversed = dir.join("lossy_tcp_transfer-smoltcp-ipv4-stream0-reverse.svg");
    assert!(
        stdout(&out).contains("(the other direction;"),
        "{}",
        stdout(&out)
    );
    let reversed = std::fs::read_to_string(&reversed).unwrap();
    let client_segments = tshark_lines(
        &pcap,
        &[],
        "tcp.stream == 0 && tcp.dstport == 12000 && (tcp.len > 0 || tcp.flags.syn == 1 || tcp.flags.fin == 1)",
        &["frame.number"],
    )
    .len();
    assert!(client_segments > 100, "{client_segments}");
    assert_eq!(reversed.matches("class=\"segment").count(), client_segments);
    if missing_tool(&["python3"]).is_none() {
        let parsed = Command::new("python3")
            .args([
                "-c",
                "import sys, xml.etree.ElementTree as E; E.parse(sys.argv[1])",
                expected.to_str().unwrap(),
            ])
            .status()
            .unwrap();
        assert!(
            parsed.success(),
            "{} is not well-formed XML",
            expected.display()
        );
    } else {
        cannot_run(
            test,
            "python3 is not installed: the SVG's XML is not parsed",
        );
    }

    // -o and --stream.
    let chosen = dir.join("chosen.svg");
    let out = run({
        let mut cmd = smoltalk();
        cmd.args(["graph", pcap.to_str().unwrap(), "--stream", "0", "-o"])
            .arg(&chosen);
        cmd
    });
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("stream 0 of 1"), "{}", stdout(&out));
    assert_eq!(std::fs::read_to_string(&chosen).unwrap(), svg);

    // A stream that is not there.
    let out = run({
        let mut cmd = smoltalk();
        cmd.args(["graph", pcap.to_str().unwrap(), "--stream", "9"]);
        cmd
    });
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no TCP stream 9: the capture has 1 (0 to 0)"),
        "{}",
        stderr(&out)
    );

    // A file that is no capture, and one cut in its header.
    let not_pcap = dir.join("notes.txt");
    std::fs::write(&not_pcap, "these are notes, not packets\n").unwrap();
    let cut = dir.join("cut.pcap");
    std::fs::write(&cut, &std::fs::read(&pcap).unwrap()[..20]).unwrap();
    for (file, says) in [
        (&not_pcap, "not a pcap file"),
        (&cut, "shorter than the 24-byte file header"),
    ] {
        let out = run({
            let mut cmd = smoltalk();
            cmd.arg("graph").arg(file);
            cmd
        });
        assert_eq!(out.status.code(), Some(1), "{}", file.display());
        assert!(stderr(&out).contains(says), "{}", stderr(&out));
        assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    }
    let _ = std::fs::remove_dir_all(&dir);
}
