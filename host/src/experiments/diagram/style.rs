//! How the ladder looks: the colour and dash of each kind of packet, the legend and arrowheads, and the text
//! helpers (XML escaping, cutting a label to fit, the time column).

use super::decode::{CORRUPTED, LOST, RETRANSMISSION};
use super::LadderPacket;

pub(super) const COLOR_TCP: &str = "#1f4e79";
pub(super) const COLOR_UDP: &str = "#2e7d32";
pub(super) const COLOR_ICMP: &str = "#6a1b9a";
pub(super) const COLOR_ARP: &str = "#616161";
pub(super) const COLOR_BAD: &str = "#c62828";
pub(super) const COLOR_RETRANSMISSION: &str = "#e65100";

/// How a packet is drawn: its colour (also the name of its arrowhead marker) and whether it is dashed.
pub(super) fn style(packet: &LadderPacket) -> (&'static str, bool) {
    let mark = packet.mark.as_deref().unwrap_or("");
    if mark.contains(LOST) || mark.contains(CORRUPTED) {
        (COLOR_BAD, true)
    } else if mark.contains(RETRANSMISSION) {
        (COLOR_RETRANSMISSION, false)
    } else if packet.label.starts_with("UDP") {
        (COLOR_UDP, false)
    } else if packet.label.starts_with("ICMP") {
        (COLOR_ICMP, false)
    } else if ["ARP", "NDP", "MLD"]
        .iter()
        .any(|neighbour| packet.label.starts_with(neighbour))
    {
        (COLOR_ARP, false)
    } else {
        (COLOR_TCP, false)
    }
}

/// The legend: colour, dashed, meaning.
pub(super) const LEGEND: [(&str, bool, &str); 6] = [
    (COLOR_TCP, false, "TCP"),
    (COLOR_UDP, false, "UDP"),
    (COLOR_ICMP, false, "ICMP / ICMPv6"),
    (COLOR_ARP, false, "ARP / NDP / MLD"),
    (COLOR_RETRANSMISSION, false, "retransmission"),
    (COLOR_BAD, true, "lost? / corrupted"),
];

pub(super) const MARKER_COLORS: [&str; 6] = [
    COLOR_TCP,
    COLOR_UDP,
    COLOR_ICMP,
    COLOR_ARP,
    COLOR_BAD,
    COLOR_RETRANSMISSION,
];

pub(super) fn marker_id(color: &str) -> String {
    format!("head-{}", color.trim_start_matches('#'))
}

/// Escapes text for XML content and attribute values; characters XML 1.0 does not allow become U+FFFD.
pub(crate) fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(' '),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// `text` cut to at most `max` characters, with `…` at the end when cut.
pub(super) fn fit(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
        cut.push('…');
        cut
    }
}

pub(super) fn time_text(time: f64) -> String {
    format!("{time:.6} s")
}
