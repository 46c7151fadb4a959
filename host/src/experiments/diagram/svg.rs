//! Drawing the ladder as a standalone SVG document: the layout (lifelines, rows, spacing) and the elements.

use std::fmt::Write as _;

use super::fold::{rows, Row};
use super::lanes::lanes;
use super::style::{fit, marker_id, style, time_text, xml_escape, LEGEND, MARKER_COLORS};
use super::{LadderPacket, MAX_DRAWN};

/// Width of one character of the 12 px monospace font, near enough for every common monospace font.
const CHAR_W: f64 = 7.3;
const ROW_H: f64 = 26.0;
const TITLE_Y: f64 = 24.0;
const HOST_BOX_Y: f64 = 40.0;
/// A host box's height beyond its lines of text.
const HOST_BOX_PAD: f64 = 10.0;
/// The height of one line of a host's name.
const HOST_LINE_H: f64 = 14.0;
/// The longest host name kept on one line; a longer one (an IPv6 address can take 39 characters) is broken in
/// two, so that lanes need not widen for it.
const HOST_LINE_CHARS: usize = 20;
const MIN_GAP: f64 = 170.0;
const MAX_GAP: f64 = 760.0;
/// How far a packet from a host to itself reaches to the right.
const SELF_STUB: f64 = 36.0;

/// A host's name as the lines of its box: the name, or a name longer than [`HOST_LINE_CHARS`] broken after the
/// colon nearest its middle (`2001:db8:1234:5678:` / `a8bb:ccff:fedd:eeff`). A long name without a colon stays
/// on one line.
fn host_lines(host: &str) -> Vec<&str> {
    if host.chars().count() <= HOST_LINE_CHARS {
        return vec![host];
    }
    let middle = host.len() / 2;
    let after_colon = host
        .char_indices()
        .filter(|&(at, c)| c == ':' && at + 1 < host.len())
        .map(|(at, _)| at + 1)
        .min_by_key(|at| at.abs_diff(middle));
    match after_colon {
        Some(at) => vec![&host[..at], &host[at..]],
        None => vec![host],
    }
}

/// Draws packets as a ladder diagram, a standalone SVG document.
///
/// One lifeline per endpoint (in order of first appearance, its name in a box on top: the host, or the host and
/// port where client and server share an address, see `lanes`), one row per packet from top to bottom with its
/// time on the left (`0.000123 s`), and in each row one arrow from the sender's lifeline to the receiver's, its
/// label above it. Long runs of data segments, ACKs and datagrams are folded into one row that counts them
/// (see `fold`). A host name longer than 20 characters (a long IPv6 address) is written
/// on two lines, broken after a colon, and lifelines are always far enough apart for their boxes. TCP arrows
/// are blue, UDP green, ICMP and ICMPv6 purple, ARP, NDP and MLD grey; packets marked `lost?` or `corrupted` are
/// red and dashed, retransmissions orange, and the mark is written after the label in the same colour. A packet
/// from a host to itself is a short arrow to the right of its lifeline. Labels too long for their arrow are cut
/// with `…`. A legend sits at the bottom.
///
/// Each packet arrow is exactly one `<line class="packet" data-index="N" …/>` element, N its index in `packets`;
/// nothing else has that class; each folded row is one `<text class="fold" data-packets="N">` element, N the
/// packets it stands for. At most [`MAX_DRAWN`] rows are drawn (the first ones) and a final row says `… N more
/// packets`, so arrows, folded packets and that N add up to `packets.len()`. All text is XML-escaped.
pub fn ladder_svg(title: &str, packets: &[LadderPacket]) -> String {
    let mut rows = rows(packets);
    rows.truncate(MAX_DRAWN);
    let shown: usize = rows
        .iter()
        .map(|row| match row {
            Row::Packet(_) => 1,
            Row::Folded(fold) => fold.packets,
        })
        .sum();
    let hidden = packets.len().saturating_sub(shown);
    let drawn: Vec<(usize, &LadderPacket)> = rows
        .iter()
        .filter_map(|row| match row {
            Row::Packet(i) => packets.get(*i).map(|p| (*i, p)),
            Row::Folded(_) => None,
        })
        .collect();

    let lanes = lanes(packets);
    let used = |lane: &usize| {
        drawn.iter().any(|(i, _)| {
            lanes
                .ends
                .get(*i)
                .is_some_and(|&(a, b)| a == *lane || b == *lane)
        })
    };
    // Only lanes a drawn packet uses, in order of first appearance.
    let shown_lanes: Vec<usize> = (0..lanes.names.len()).filter(used).collect();
    let hosts: Vec<&str> = shown_lanes
        .iter()
        .filter_map(|&l| lanes.names.get(l).map(String::as_str))
        .collect();
    let ends = |index: usize| {
        let (from, to) = lanes.ends.get(index).copied().unwrap_or((0, 0));
        let column = |lane: usize| shown_lanes.iter().position(|&l| l == lane).unwrap_or(0);
        (column(from), column(to))
    };
    let full_label = |packet: &LadderPacket| match &packet.mark {
        Some(mark) => format!("{}  {mark}", packet.label),
        None => packet.label.clone(),
    };
    let text_px = |chars: usize| chars as f64 * CHAR_W;

    // Host boxes: all as wide as the widest line and as tall as the most lines.
    let host_names: Vec<Vec<&str>> = hosts.iter().map(|host| host_lines(host)).collect();
    let longest_line = host_names
        .iter()
        .flatten()
        .map(|line| line.chars().count())
        .max()
        .unwrap_or(0);
    let host_box_w = text_px(longest_line) + 20.0;
    let most_lines = host_names.iter().map(Vec::len).max().unwrap_or(1);
    let host_box_h = HOST_BOX_PAD + HOST_LINE_H * most_lines as f64;
    let first_row_y = HOST_BOX_Y + host_box_h + 34.0;

    // Spacing: the widest label between neighbouring lifelines decides, within bounds; but never so close
    // that the host boxes touch.
    let mut gap = MIN_GAP.max(host_box_w + 16.0);
    for &(index, packet) in &drawn {
        let (from, to) = ends(index);
        let span = from.abs_diff(to);
        if span > 0 {
            let need = (text_px(full_label(packet).chars().count()) + 24.0) / span as f64;
            gap = gap.max(need.min(MAX_GAP));
        }
    }
    let time_w = drawn
        .iter()
        .map(|(_, p)| time_text(p.time).chars().count())
        .max()
        .unwrap_or(10);
    let time_col = text_px(time_w) + 24.0;
    let first_x = time_col + (host_box_w / 2.0).max(30.0) + 10.0;
    let x_of = |col: usize| first_x + gap * col as f64;

    // Rightmost extent: host boxes, arrows to self and their labels, the notes.
    let mut right = x_of(hosts.len().saturating_sub(1)) + host_box_w / 2.0;
    for &(index, packet) in &drawn {
        let (from, to) = ends(index);
        if from == to {
            let x = x_of(from);
            right = right
                .max(x + SELF_STUB + 8.0 + text_px(full_label(packet).chars().count().min(80)));
        }
    }
    for row in &rows {
        if let Row::Folded(fold) = row {
            right = right.max(time_col + text_px(fold.text().chars().count()) + 16.0);
        }
    }
    let legend_w: f64 = LEGEND
        .iter()
        .map(|(_, _, name)| 48.0 + text_px(name.len()))
        .sum();
    right = right
        .max(16.0 + legend_w)
        .max(16.0 + text_px(title.chars().count().max(40)) * 15.0 / 12.0);
    let width = (right + 24.0).ceil();

    let row_count = rows.len() + usize::from(hidden > 0);
    let bottom_line = first_row_y + ROW_H * row_count.max(1) as f64 - ROW_H / 2.0;
    let legend_y = bottom_line + 30.0;
    let height = (legend_y + 20.0).ceil();

    let mut svg = String::with_capacity(600 + drawn.len() * 420);
    let _ = writeln!(svg, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="DejaVu Sans Mono, Menlo, Consolas, monospace" font-size="12">"#
    );
    let _ = writeln!(svg, "<title>{}</title>", xml_escape(title));
    svg.push_str("<defs>\n");
    for color in MARKER_COLORS {
        let _ = writeln!(
            svg,
            r#"<marker id="{}" viewBox="0 0 10 10" refX="10" refY="5" markerUnits="userSpaceOnUse" markerWidth="10" markerHeight="9" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="{color}"/></marker>"#,
            marker_id(color)
        );
    }
    svg.push_str("</defs>\n");
    let _ = writeln!(
        svg,
        r#"<rect x="0" y="0" width="{width}" height="{height}" fill="white"/>"#
    );
    let _ = writeln!(
        svg,
        r##"<text x="16" y="{TITLE_Y}" font-size="15" font-weight="bold" fill="#111">{}</text>"##,
        xml_escape(title)
    );

    // Zebra stripes, so a row's time and its arrow are easy to match across a wide picture.
    for i in (1..row_count).step_by(2) {
        let y = first_row_y + ROW_H * i as f64 - ROW_H / 2.0 - 4.0;
        let _ = writeln!(
            svg,
            r##"<rect x="0" y="{y}" width="{width}" height="{ROW_H}" fill="#f4f6fa"/>"##
        );
    }

    // Lifelines and host names.
    for (i, lines) in host_names.iter().enumerate() {
        let x = x_of(i);
        let _ = writeln!(
            svg,
            r##"<line class="lifeline" x1="{x}" y1="{}" x2="{x}" y2="{bottom_line}" stroke="#9e9e9e" stroke-width="1" stroke-dasharray="4 3"/>"##,
            HOST_BOX_Y + host_box_h
        );
        let _ = writeln!(
            svg,
            r##"<rect x="{}" y="{HOST_BOX_Y}" width="{host_box_w}" height="{host_box_h}" rx="4" fill="#eceff1" stroke="#607d8b"/>"##,
            x - host_box_w / 2.0
        );
        // Centred in the box, whatever the number of lines.
        let first_baseline =
            HOST_BOX_Y + 16.5 + (most_lines - lines.len()) as f64 * HOST_LINE_H / 2.0;
        let _ = write!(
            svg,
            r##"<text class="host" x="{x}" y="{first_baseline}" text-anchor="middle" font-weight="bold" fill="#263238">"##
        );
        match lines.as_slice() {
            [one] => svg.push_str(&xml_escape(one)),
            several => {
                for (n, line) in several.iter().enumerate() {
                    let dy = if n == 0 { 0.0 } else { HOST_LINE_H };
                    let _ = write!(
                        svg,
                        r#"<tspan x="{x}" dy="{dy}">{}</tspan>"#,
                        xml_escape(line)
                    );
                }
            }
        }
        svg.push_str("</text>\n");
    }
    if rows.is_empty() {
        let _ = writeln!(
            svg,
            r##"<text x="16" y="{first_row_y}" fill="#555">no packets</text>"##
        );
    }

    // The packets, and the folded runs.
    for (row, what) in rows.iter().enumerate() {
        let y = first_row_y + ROW_H * row as f64;
        let (index, packet) = match what {
            Row::Packet(index) => match packets.get(*index) {
                Some(packet) => (*index, packet),
                None => continue,
            },
            Row::Folded(fold) => {
                let _ = writeln!(
                    svg,
                    r##"<text class="fold" data-packets="{}" x="{}" y="{}" font-style="italic" fill="#555">{}</text>"##,
                    fold.packets,
                    time_col - 8.0 - text_px(time_w),
                    y + 4.0,
                    xml_escape(&fold.text())
                );
                continue;
            }
        };
        let (color, dashed) = style(packet);
        let (from, to) = ends(index);
        let (x1, x2) = (x_of(from), x_of(to));
        let _ = writeln!(
            svg,
            r##"<text class="time" x="{}" y="{}" text-anchor="end" fill="#555">{}</text>"##,
            time_col - 8.0,
            y + 4.0,
            xml_escape(&time_text(packet.time))
        );
        let (line_x2, label_x, anchor, max_chars) = if from == to {
            (x1 + SELF_STUB, x1 + SELF_STUB + 8.0, "start", 80)
        } else {
            let room = (x2 - x1).abs() - 16.0;
            (
                (x1 + x2) / 2.0,
                (x1 + x2) / 2.0,
                "middle",
                (room / CHAR_W).floor().max(4.0) as usize,
            )
        };
        let line_x2 = if from == to {
            line_x2
        } else {
            x2 + if x2 > x1 { -1.5 } else { 1.5 }
        };
        let _ = writeln!(
            svg,
            r#"<line class="packet" data-index="{index}" x1="{x1}" y1="{y}" x2="{line_x2}" y2="{y}" stroke="{color}" stroke-width="{}"{} marker-end="url(#{})"/>"#,
            if packet.mark.is_some() { 2.0 } else { 1.5 },
            if dashed {
                r#" stroke-dasharray="6 4""#
            } else {
                ""
            },
            marker_id(color)
        );

        // The label (and mark) above the arrow, with a white halo so lifelines do not cross the letters.
        let label_y = if from == to { y + 4.0 } else { y - 6.0 };
        let mark_len = packet.mark.as_ref().map_or(0, |m| m.chars().count() + 2);
        let label = fit(&packet.label, max_chars.saturating_sub(mark_len).max(4));
        let _ = write!(
            svg,
            r##"<text class="label" x="{label_x}" y="{label_y}" text-anchor="{anchor}" fill="#212121" stroke="white" stroke-width="3" paint-order="stroke">{}"##,
            xml_escape(&label)
        );
        if let Some(mark) = &packet.mark {
            let _ = write!(
                svg,
                r#"<tspan fill="{color}" font-weight="bold">  {}</tspan>"#,
                xml_escape(mark)
            );
        }
        svg.push_str("</text>\n");
    }
    if hidden > 0 {
        let y = first_row_y + ROW_H * rows.len() as f64;
        let _ = writeln!(
            svg,
            r##"<text class="note" data-packets="{hidden}" x="{}" y="{}" font-style="italic" fill="#555">… {hidden} more packet{} (only the first {MAX_DRAWN} rows are drawn)</text>"##,
            time_col - 8.0 - text_px(time_w),
            y + 4.0,
            if hidden == 1 { "" } else { "s" }
        );
    }

    // Legend.
    let mut x = 16.0;
    for (color, dashed, name) in LEGEND {
        let _ = writeln!(
            svg,
            r#"<line class="legend" x1="{x}" y1="{}" x2="{}" y2="{}" stroke="{color}" stroke-width="2"{}/>"#,
            legend_y - 4.0,
            x + 24.0,
            legend_y - 4.0,
            if dashed {
                r#" stroke-dasharray="6 4""#
            } else {
                ""
            }
        );
        let _ = writeln!(
            svg,
            r##"<text x="{}" y="{legend_y}" fill="#424242">{name}</text>"##,
            x + 30.0
        );
        x += 30.0 + text_px(name.len()) + 18.0;
    }
    svg.push_str("</svg>\n");
    svg
}
