//! The SVG: well-formedness (checked here and by Python's parser), marks, escaping, lanes and the cap on the
//! packets drawn.

use super::*;

// ---- The SVG ----

#[test]
fn svg_of_an_exchange() {
    let file = pcap(101, false, &timed(exchange(1000, 5000, false)));
    let packets = packets_from_pcap(&file).unwrap();
    let svg = ladder_svg("TCP: send once, read once", &packets);
    check_well_formed(&svg).unwrap();
    python_parses(&svg, "exchange");
    assert!(svg.contains(r#"<svg xmlns="http://www.w3.org/2000/svg" width=""#));
    assert!(svg.contains(" viewBox=\"0 0 "));
    assert!(svg.contains("<marker "));
    assert_eq!(svg.matches(r#"class="packet""#).count(), packets.len());
    let lines = packet_lines(&svg);
    assert_eq!(
        lines.iter().map(|l| l.0).collect::<Vec<_>>(),
        (0..packets.len()).collect::<Vec<_>>()
    );
    // The client (first seen) is the left lifeline: its packets go right, the server's left.
    for ((_, x1, x2, _), packet) in lines.iter().zip(&packets) {
        assert_eq!(x1 < x2, packet.src == "10.0.2.2", "{}", packet.label);
    }
    // Host names on top, in order of first appearance; times on the left; labels in order.
    let client = svg.find(">10.0.2.2</text>").unwrap();
    let server = svg.find(">10.0.2.15</text>").unwrap();
    assert!(client < server);
    assert!(svg.contains(">0.000000 s</text>") && svg.contains(">0.000123 s</text>"));
    let mut at = 0;
    for packet in &packets {
        let found = svg[at..]
            .find(&format!(">{}</text>", packet.label))
            .unwrap_or_else(|| panic!("{}", packet.label));
        at += found + 1;
    }
    assert!(
        !svg.contains("stroke-dasharray=\"6 4\" marker-end"),
        "nothing is marked"
    );
}

fn packet(src: &str, dst: &str, label: &str, mark: Option<&str>) -> LadderPacket {
    LadderPacket {
        time: 0.25,
        src: src.into(),
        dst: dst.into(),
        label: label.into(),
        kind: PacketKind::Other,
        ports: None,
        mark: mark.map(Into::into),
    }
}

#[test]
fn svg_marks_escaping_self_packets_and_empty() {
    let packets = vec![
        packet("a", "b", "data", Some("lost?")),
        packet("a", "b", "data", Some("retransmission")),
        packet("b", "a", "bad", Some("corrupted")),
        packet(
            "<host & \"1\">",
            "b",
            "<script>alert('x')</script> & \u{1} more",
            None,
        ),
        packet("c", "c", "to myself", None),
    ];
    let svg = ladder_svg("title with <tags> & \"quotes\" 'too'", &packets);
    check_well_formed(&svg).unwrap();
    python_parses(&svg, "marks");
    assert!(!svg.contains("<script>") && !svg.contains("<tags>") && !svg.contains("<host"));
    assert!(svg.contains("&lt;script&gt;alert(&apos;x&apos;)&lt;/script&gt; &amp; \u{fffd} more"));
    assert!(svg.contains("title with &lt;tags&gt; &amp; &quot;quotes&quot; &apos;too&apos;"));
    let lines = packet_lines(&svg);
    assert_eq!(lines.len(), 5);
    assert!(lines[0].3.contains(COLOR_BAD) && lines[0].3.contains("stroke-dasharray"));
    assert!(lines[1].3.contains(COLOR_RETRANSMISSION) && !lines[1].3.contains("stroke-dasharray"));
    assert!(lines[2].3.contains(COLOR_BAD) && lines[2].3.contains("stroke-dasharray"));
    assert!(lines[3].3.contains(COLOR_TCP) && !lines[3].3.contains("stroke-dasharray"));
    assert!(
        lines[4].2 > lines[4].1,
        "an arrow to itself still has a length"
    );
    assert!(svg.contains(">  lost?</tspan>") && svg.contains(">  corrupted</tspan>"));

    let empty = ladder_svg("nothing", &[]);
    check_well_formed(&empty).unwrap();
    python_parses(&empty, "empty");
    assert_eq!(empty.matches(r#"class="packet""#).count(), 0);
    assert!(empty.contains("no packets"));
}

#[test]
fn svg_draws_at_most_max_drawn_packets() {
    let packets: Vec<LadderPacket> = (0..MAX_DRAWN + 50)
        .map(|i| packet("a", "b", &format!("packet {i}"), None))
        .collect();
    let svg = ladder_svg("many", &packets);
    check_well_formed(&svg).unwrap();
    assert_eq!(svg.matches(r#"class="packet""#).count(), MAX_DRAWN);
    assert!(svg.contains("… 50 more packets"));
    let exactly = ladder_svg("exactly", &packets[..MAX_DRAWN]);
    assert_eq!(exactly.matches(r#"class="packet""#).count(), MAX_DRAWN);
    assert!(!exactly.contains("more packet"));
}

#[test]
fn well_formedness_check_catches_mistakes() {
    for bad in [
        "<svg><g></svg>",
        "<svg></svg><svg></svg>",
        "<svg a=\"1\" a=\"2\"/>",
        "<svg a=1/>",
        "<svg>a & b</svg>",
        "<svg><text>1 < 2</text></svg>",
        "<svg x=\"<\"/>",
        "text<svg/>",
    ] {
        assert!(check_well_formed(bad).is_err(), "{bad}");
    }
    check_well_formed("<?xml version=\"1.0\"?>\n<svg a=\"&amp;\"><!-- c --><g/>x &#38; y</svg>\n")
        .unwrap();
}
