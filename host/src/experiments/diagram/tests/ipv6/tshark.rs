//! tshark reads the same IPv6 captures and must agree.

use super::*;

// ---- tshark reads the same captures ----

/// Why tshark cannot be run here, if it cannot. Not `tshark -V`, which would start a live capture.
fn tshark_missing() -> Option<String> {
    match std::process::Command::new("tshark")
        .arg("--version")
        .output()
    {
        Ok(out) if out.status.success() => None,
        Ok(out) => Some(format!("`tshark --version` failed: {}", out.status)),
        Err(e) => Some(format!("tshark is not installed ({e})")),
    }
}

/// tshark's fields for each packet of `file` (checksums verified), one `Vec` per packet.
fn tshark_fields(file: &[u8], name: &str, fields: &[&str]) -> Vec<Vec<String>> {
    let path = std::env::temp_dir().join(format!(
        "smoltalk-diagram-{}-{name}.pcap",
        std::process::id()
    ));
    std::fs::write(&path, file).unwrap();
    let mut command = std::process::Command::new("tshark");
    command.args([
        "-n",
        "-o",
        "tcp.check_checksum:TRUE",
        "-o",
        "udp.check_checksum:TRUE",
        "-r",
    ]);
    command.arg(&path).args(["-T", "fields"]);
    for field in fields {
        command.args(["-e", field]);
    }
    let out = command.output();
    let _ = std::fs::remove_file(&path);
    let out = out.unwrap();
    assert!(
        out.status.success(),
        "tshark: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| line.split('\t').map(str::to_string).collect())
        .collect()
}

#[test]
fn tshark_agrees_on_ipv6_captures() {
    if let Some(reason) = tshark_missing() {
        let in_ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
        assert!(
            !in_ci,
            "tshark_agrees_on_ipv6_captures cannot run under CI=true: {reason}"
        );
        // Straight to the descriptor: libtest captures the output of passing tests, and a skip must be seen.
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED tshark_agrees_on_ipv6_captures: {reason}"
        );
        return;
    }
    let mut bad_echo = echo(CLIENT6, SERVER6, true);
    *bad_echo.last_mut().unwrap() ^= 1;
    let mut bad_tcp = tcp6(
        CLIENT6,
        SERVER6,
        &segment((40001, 12000), TcpControl::Psh, 9, Some(1), b"data"),
    );
    *bad_tcp.last_mut().unwrap() ^= 1;
    let mut bad_udp = udp6(SERVER6, CLIENT6, (12001, 40001), b"data");
    *bad_udp.last_mut().unwrap() ^= 1;
    let on_ethernet_both_ways = |packets: Vec<Vec<u8>>| -> Vec<Vec<u8>> {
        packets
            .iter()
            .map(|packet| {
                let from_client = packet[8..24] == CLIENT6.octets();
                on_ethernet(if from_client { CLIENT_MAC } else { SERVER6_MAC }, packet)
            })
            .collect()
    };
    let mut ethernet_packets = ndp_udp_and_ping();
    ethernet_packets.extend([bad_echo, bad_tcp]);
    let mut tun_packets = tcp_over_ipv6_with_ipv4();
    tun_packets.extend(ndp_udp_and_ping());
    tun_packets.push(bad_udp);
    let fields = [
        "ipv6.src",
        "ipv6.dst",
        "ip.src",
        "ip.dst",
        "icmpv6.type",
        "icmpv6.nd.ns.target_address",
        "tcp.seq",
        "tcp.ack",
        "tcp.analysis.retransmission",
        "tcp.checksum.status",
        "udp.checksum.status",
        "icmpv6.checksum.status",
    ];
    for (name, file) in [
        (
            "ethernet",
            capture(
                PcapLinkType::Ethernet,
                &on_ethernet_both_ways(ethernet_packets),
            ),
        ),
        ("tun", capture(PcapLinkType::Ip, &tun_packets)),
    ] {
        let ladder = read_pcap(&file).unwrap();
        let rows = tshark_fields(&file, name, &fields);
        assert_eq!(rows.len(), ladder.records, "{name}: packets tshark reads");
        assert_eq!(
            ladder.packets.len(),
            ladder.records,
            "{name}: {:?}",
            ladder.skipped
        );
        let mut bad = 0;
        for (i, (row, packet)) in rows.iter().zip(&ladder.packets).enumerate() {
            // The first value of each field: an ICMPv6 error repeats the fields of the packet it quotes.
            let field = |name: &str| -> &str {
                let at = fields.iter().position(|f| *f == name).unwrap();
                row.get(at).and_then(|v| v.split(',').next()).unwrap_or("")
            };
            let src = [field("ipv6.src"), field("ip.src")].concat();
            let dst = [field("ipv6.dst"), field("ip.dst")].concat();
            let target = field("icmpv6.nd.ns.target_address");
            let drawn_to = if !target.is_empty() && dst.starts_with("ff") {
                target.to_string()
            } else {
                dst
            };
            let what = format!("{name} packet {i}: {} ({row:?})", packet.label);
            assert_eq!(
                (packet.src.as_str(), packet.dst.as_str()),
                (src.as_str(), drawn_to.as_str()),
                "{what}"
            );
            if !field("tcp.seq").is_empty() && field("icmpv6.type").is_empty() {
                let seq_ack = format!("seq={} ack={} ", field("tcp.seq"), field("tcp.ack"));
                assert!(packet.label.contains(&seq_ack), "{what}: {seq_ack}");
            }
            let marks = packet.mark.as_deref().unwrap_or("");
            let tshark_bad = [
                "tcp.checksum.status",
                "udp.checksum.status",
                "icmpv6.checksum.status",
            ]
            .iter()
            .any(|status| field(status) == "0");
            assert_eq!(marks.contains("corrupted"), tshark_bad, "{what}");
            bad += usize::from(tshark_bad);
            assert_eq!(
                marks.split(", ").any(|m| m == "retransmission"),
                field("tcp.analysis.retransmission") == "1",
                "{what}"
            );
        }
        assert!(bad > 0, "{name}: the corrupted packets are seen as such");
    }
}
