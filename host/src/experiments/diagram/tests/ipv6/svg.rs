//! The lanes of long IPv6 addresses in the SVG.

use super::*;

// ---- The SVG ----

/// The host boxes of an SVG (the only `rect`s with rounded corners), as (x, width, height).
fn host_boxes(svg: &str) -> Vec<(f64, f64, f64)> {
    let attr = |element: &str, name: &str| -> f64 {
        let start = element.find(&format!(" {name}=\"")).unwrap() + name.len() + 3;
        element[start..].split('"').next().unwrap().parse().unwrap()
    };
    svg.lines()
        .filter(|line| line.starts_with("<rect ") && line.contains(r#" rx="4""#))
        .map(|line| (attr(line, "x"), attr(line, "width"), attr(line, "height")))
        .collect()
}

#[test]
fn svg_lanes_of_long_ipv6_addresses() {
    let global = Ipv6Address::new(
        0x2001, 0xdb8, 0x1234, 0x5678, 0xa8bb, 0xccff, 0xfedd, 0xeeff,
    );
    let longest = Ipv6Address::new(
        0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xfffe,
    );
    let mut packets = ndp_udp_and_ping();
    packets.push(udp6(global, SERVER6, (40000, 12000), b"hello"));
    packets.push(udp6(SERVER6, longest, (12000, 40000), b"HELLO"));
    let file = capture(PcapLinkType::Ip, &packets);
    let packets = packets_from_pcap(&file).unwrap();
    assert_eq!(packets[6].src, "2001:db8:1234:5678:a8bb:ccff:fedd:eeff");
    assert_eq!(packets[7].dst, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe");
    let svg = ladder_svg("IPv6", &packets);
    check_well_formed(&svg).unwrap();
    python_parses(&svg, "ipv6");

    // Short addresses on one line, long ones on two, broken after the colon nearest the middle.
    assert!(svg.contains(">fd00:2::2</text>") && svg.contains(">fd00:2::15</text>"));
    assert!(svg.contains(r#"dy="0">2001:db8:1234:5678:</tspan><tspan x="#));
    assert!(svg.contains(r#"dy="14">a8bb:ccff:fedd:eeff</tspan></text>"#));
    assert!(svg.contains(r#"dy="0">ffff:ffff:ffff:ffff:</tspan>"#));
    assert!(svg.contains(r#"dy="14">ffff:ffff:ffff:fffe</tspan></text>"#));

    // Four lanes whose boxes hold their longest line and do not touch; the lifelines start below them.
    let boxes = host_boxes(&svg);
    assert_eq!(boxes.len(), 4);
    for pair in boxes.windows(2) {
        let ((x0, w0, _), (x1, _, _)) = (pair[0], pair[1]);
        assert!(x0 + w0 < x1, "host boxes overlap: {boxes:?}");
    }
    for (_, width, height) in &boxes {
        assert!(*width >= 20.0 * 7.3, "{width}");
        assert_eq!(*height, 38.0);
    }
    assert!(svg.contains(r#"<line class="lifeline" x1=""#));
    assert!(svg
        .lines()
        .filter(|line| line.starts_with(r#"<line class="lifeline""#))
        .all(|line| line.contains(r#" y1="78""#)));

    // NDP grey like ARP, ICMPv6 purple like ICMP.
    let lines = packet_lines(&svg);
    assert!(lines[0].3.contains(COLOR_ARP) && lines[1].3.contains(COLOR_ARP));
    assert!(lines[3].3.contains(COLOR_ICMP) && lines[4].3.contains(COLOR_ICMP));
    assert!(svg.contains(">ICMP / ICMPv6</text>") && svg.contains(">ARP / NDP / MLD</text>"));
}
