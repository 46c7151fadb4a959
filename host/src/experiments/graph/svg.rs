//! Drawing a [`TimeSequence`] as a standalone SVG document: the plot's scales and ticks, the marks, the title
//! and the legend.

use std::fmt::Write as _;

use super::model::{SegmentVerdict, TimeSequence, WindowScaling};
use super::TimeBase;
use crate::experiments::diagram::xml_escape;

const WIDTH: f64 = 960.0;
const HEIGHT: f64 = 620.0;
const LEFT: f64 = 96.0;
const RIGHT: f64 = 24.0;
const TOP: f64 = 72.0;
const BOTTOM: f64 = 128.0;
/// Half the width of a segment bar's end ticks.
const CAP: f64 = 2.5;

const COLOR_SEGMENT: &str = "#1f4e79";
const COLOR_RETRANSMISSION: &str = "#c62828";
const COLOR_SPURIOUS: &str = "#e65100";
const COLOR_PROBE: &str = "#757575";
const COLOR_ACK: &str = "#2e7d32";
const COLOR_WINDOW: &str = "#9e9d24";
const COLOR_SACK: &str = "#8e24aa";
const COLOR_GAP: &str = "#fff3c4";

/// A linear map from data to pixels.
#[derive(Debug, Clone, Copy)]
struct Scale {
    from: f64,
    to: f64,
    start: f64,
    end: f64,
}

impl Scale {
    /// `from..to` onto pixels `start..end`; an empty range is widened so that nothing divides by zero.
    fn new(from: f64, to: f64, start: f64, end: f64) -> Scale {
        let to = if to > from { to } else { from + 1.0 };
        Scale {
            from,
            to,
            start,
            end,
        }
    }

    fn at(&self, value: f64) -> f64 {
        self.start + (value - self.from) / (self.to - self.from) * (self.end - self.start)
    }
}

/// A round step (1, 2 or 5 times a power of ten) that cuts `span` into about `target` pieces.
fn tick_step(span: f64, target: f64) -> f64 {
    let raw = (span / target).max(f64::MIN_POSITIVE);
    let power = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * power)
        .find(|&s| s >= raw)
        .unwrap_or(10.0 * power);
    if step.is_finite() && step > 0.0 {
        step
    } else {
        1.0
    }
}

/// The ticks of `from..=to` at multiples of `step`.
fn ticks(from: f64, to: f64, step: f64) -> Vec<f64> {
    let first = (from / step).ceil() as i64;
    let last = (to / step).floor() as i64;
    (first..=last.min(first + 50))
        .map(|k| k as f64 * step)
        .collect()
}

/// Enough decimals to tell ticks `step` apart.
fn decimals(step: f64) -> usize {
    if step >= 1.0 {
        0
    } else {
        (-step.log10().floor()) as usize
    }
}

fn verdict_style(verdict: SegmentVerdict) -> (&'static str, &'static str) {
    match verdict {
        SegmentVerdict::New => ("segment", COLOR_SEGMENT),
        SegmentVerdict::Retransmission => ("segment retransmission", COLOR_RETRANSMISSION),
        SegmentVerdict::SpuriousRetransmission => {
            ("segment retransmission spurious", COLOR_SPURIOUS)
        }
        SegmentVerdict::ZeroWindowProbe => ("segment probe", COLOR_PROBE),
    }
}

/// A step line through `points` (time, value): across at the old value, then up or down to the new one.
fn step_path(points: impl Iterator<Item = (f64, f64)>, x: Scale, y: Scale) -> String {
    let mut d = String::new();
    for (i, (t, v)) in points.enumerate() {
        let (px, py) = (x.at(t), y.at(v));
        if i == 0 {
            let _ = write!(d, "M{px:.1},{py:.1}");
        } else {
            let _ = write!(d, " H{px:.1} V{py:.1}");
        }
    }
    d
}

fn window_scaling_text(scaling: WindowScaling) -> String {
    match scaling {
        WindowScaling::Negotiated { shift } => format!("window scaled ×{}", 1u64 << shift),
        WindowScaling::NotNegotiated => "window not scaled".into(),
        WindowScaling::Unknown => "window scaling unknown (a SYN not captured): as sent".into(),
    }
}

/// What a graph's axes span: seconds from the stream's first packet, and the relative sequence numbers. A graph
/// spans its own by default; graphs shown side by side (one scenario on each stack) share the union of theirs,
/// so that the same length on the page is the same time and the same bytes in each.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GraphAxes {
    /// The time axis runs from 0 to this many seconds.
    pub seconds: f64,
    /// The lowest and highest sequence number drawn.
    pub seq: (u64, u64),
}

impl GraphAxes {
    /// The axes that `graph`'s points need.
    pub fn of(graph: &TimeSequence) -> GraphAxes {
        let lows = graph
            .segments
            .iter()
            .map(|s| s.seq)
            .chain(graph.acks.iter().map(|a| a.ack));
        let highs = graph
            .segments
            .iter()
            .map(|s| s.seq + u64::from(s.len))
            .chain(graph.acks.iter().map(|a| a.window_edge))
            .chain(graph.sacks.iter().map(|s| s.right));
        GraphAxes {
            seconds: graph.duration(),
            seq: (lows.min().unwrap_or(0), highs.max().unwrap_or(1)),
        }
    }

    /// Axes that span both.
    pub fn union(self, other: GraphAxes) -> GraphAxes {
        GraphAxes {
            seconds: self.seconds.max(other.seconds),
            seq: (self.seq.0.min(other.seq.0), self.seq.1.max(other.seq.1)),
        }
    }
}

/// The graph as a standalone SVG document, its x axis on `time_base`'s clock, on its own axes.
pub fn time_sequence_svg(graph: &TimeSequence, time_base: TimeBase) -> String {
    time_sequence_svg_on(graph, time_base, GraphAxes::of(graph))
}

/// The graph as a standalone SVG document on `axes` (see [`GraphAxes`]).
pub fn time_sequence_svg_on(graph: &TimeSequence, time_base: TimeBase, axes: GraphAxes) -> String {
    let plot_right = WIDTH - RIGHT;
    let plot_bottom = HEIGHT - BOTTOM;
    let x = Scale::new(0.0, axes.seconds * 1.02, LEFT, plot_right);
    let (low, high) = (axes.seq.0 as f64, axes.seq.1 as f64);
    let y = Scale::new(low, high + (high - low) * 0.02, plot_bottom, TOP);

    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="monospace" font-size="12">"#
    );
    let _ = writeln!(
        out,
        r#"<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>"#
    );
    let retransmissions = graph.retransmitted_frames().len();
    let title = format!(
        "TCP stream {}: {} → {}",
        graph.stream, graph.sender, graph.receiver
    );
    let counts = format!(
        "{} segments, {} payload bytes, {retransmissions} retransmissions; {}",
        graph.segments.len(),
        graph.payload_bytes,
        window_scaling_text(graph.window_scaling),
    );
    let clock = format!(
        "x: {}, seconds from the stream's first packet",
        time_base.label()
    );
    let _ = writeln!(
        out,
        r#"<text class="title" x="{LEFT}" y="22" font-size="15" font-weight="bold">{}</text>"#,
        xml_escape(&title)
    );
    for (line, text) in [(40, counts), (56, clock)] {
        let _ = writeln!(
            out,
            r#"<text class="subtitle" x="{LEFT}" y="{line}">{}</text>"#,
            xml_escape(&text)
        );
    }

    // Gaps first, under everything else.
    for gap in &graph.gaps {
        let (x1, x2) = (x.at(gap.from), x.at(gap.to));
        let _ = writeln!(
            out,
            r#"<rect class="gap" x="{x1:.1}" y="{TOP}" width="{:.1}" height="{:.1}" fill="{COLOR_GAP}"/>"#,
            (x2 - x1).max(1.0),
            plot_bottom - TOP
        );
        if x2 - x1 > 64.0 {
            let _ = writeln!(
                out,
                r##"<text class="gap-label" x="{:.1}" y="{:.1}" text-anchor="middle" fill="#8d6e00">{:.3} s</text>"##,
                (x1 + x2) / 2.0,
                TOP + 14.0,
                gap.to - gap.from
            );
        }
    }

    // Axes, ticks and grid.
    let _ = writeln!(
        out,
        r#"<path class="axes" d="M{LEFT},{TOP} V{plot_bottom} H{plot_right}" fill="none" stroke="black"/>"#
    );
    let time_step = tick_step(x.to - x.from, 10.0);
    for t in ticks(x.from, x.to, time_step) {
        let px = x.at(t);
        let _ = writeln!(
            out,
            r##"<line x1="{px:.1}" y1="{TOP}" x2="{px:.1}" y2="{plot_bottom}" stroke="#eeeeee"/><line x1="{px:.1}" y1="{plot_bottom}" x2="{px:.1}" y2="{:.1}" stroke="black"/><text class="tick" x="{px:.1}" y="{:.1}" text-anchor="middle">{t:.*}</text>"##,
            plot_bottom + 5.0,
            plot_bottom + 18.0,
            decimals(time_step)
        );
    }
    let seq_step = tick_step(y.to - y.from, 8.0).max(1.0);
    for v in ticks(y.from, y.to, seq_step) {
        let py = y.at(v);
        let _ = writeln!(
            out,
            r##"<line x1="{LEFT}" y1="{py:.1}" x2="{plot_right}" y2="{py:.1}" stroke="#eeeeee"/><line x1="{:.1}" y1="{py:.1}" x2="{LEFT}" y2="{py:.1}" stroke="black"/><text class="tick" x="{:.1}" y="{:.1}" text-anchor="end">{v:.0}</text>"##,
            LEFT - 5.0,
            LEFT - 8.0,
            py + 4.0
        );
    }
    let _ = writeln!(
        out,
        r#"<text class="axis-label" x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
        (LEFT + plot_right) / 2.0,
        plot_bottom + 38.0,
        xml_escape(&format!(
            "time (s), {}, since the stream's first packet",
            time_base.label()
        ))
    );
    let _ = writeln!(
        out,
        r#"<text class="axis-label" transform="translate(18,{:.1}) rotate(-90)" text-anchor="middle">relative sequence number</text>"#,
        (TOP + plot_bottom) / 2.0
    );

    // The receiver's lines, then the sender's segments over them, then SACK blocks.
    let window = step_path(
        graph.acks.iter().map(|a| (a.time, a.window_edge as f64)),
        x,
        y,
    );
    let _ = writeln!(
        out,
        r#"<path class="window" d="{window}" fill="none" stroke="{COLOR_WINDOW}" stroke-dasharray="4 2"/>"#
    );
    let ack = step_path(graph.acks.iter().map(|a| (a.time, a.ack as f64)), x, y);
    let _ = writeln!(
        out,
        r#"<path class="ack" d="{ack}" fill="none" stroke="{COLOR_ACK}"/>"#
    );
    for segment in &graph.segments {
        let (class, color) = verdict_style(segment.verdict);
        let px = x.at(segment.time);
        let (y1, y2) = (
            y.at(segment.seq as f64),
            y.at((segment.seq + u64::from(segment.len)) as f64),
        );
        let _ = writeln!(
            out,
            r#"<path class="{class}" data-frame="{}" d="M{:.1},{y1:.1} h{} M{px:.1},{y1:.1} V{y2:.1} M{:.1},{y2:.1} h{}" stroke="{color}" fill="none"/>"#,
            segment.frame,
            px - CAP,
            2.0 * CAP,
            px - CAP,
            2.0 * CAP
        );
    }
    for sack in &graph.sacks {
        let px = x.at(sack.time) + 3.0;
        let _ = writeln!(
            out,
            r#"<line class="sack" data-frame="{}" x1="{px:.1}" y1="{:.1}" x2="{px:.1}" y2="{:.1}" stroke="{COLOR_SACK}" stroke-width="2"/>"#,
            sack.frame,
            y.at(sack.left as f64),
            y.at(sack.right as f64)
        );
    }

    // The legend, in two rows under the axis label.
    let entries: [(&str, &str, &str); 8] = [
        ("segment", COLOR_SEGMENT, "data segment"),
        ("retransmission", COLOR_RETRANSMISSION, "retransmission"),
        ("spurious", COLOR_SPURIOUS, "spurious retransm."),
        ("probe", COLOR_PROBE, "zero-window probe"),
        ("ack", COLOR_ACK, "cumulative ACK"),
        ("window", COLOR_WINDOW, "ACK + receive window"),
        ("sack", COLOR_SACK, "SACK block"),
        ("gap", COLOR_GAP, "silence > 200 ms"),
    ];
    for (i, (name, color, text)) in entries.iter().enumerate() {
        let lx = LEFT + (i % 4) as f64 * 210.0;
        let ly = plot_bottom + 62.0 + (i / 4) as f64 * 22.0;
        let swatch = if *name == "gap" {
            format!(
                r#"<rect x="{lx:.1}" y="{:.1}" width="18" height="12" fill="{color}" stroke="{COLOR_PROBE}" stroke-width="0.5"/>"#,
                ly - 10.0
            )
        } else {
            format!(
                r#"<line x1="{lx:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{color}" stroke-width="3"/>"#,
                ly - 4.0,
                lx + 18.0,
                ly - 4.0
            )
        };
        let _ = writeln!(
            out,
            r#"<g class="legend legend-{name}">{swatch}<text x="{:.1}" y="{ly:.1}">{}</text></g>"#,
            lx + 24.0,
            xml_escape(text)
        );
    }
    out.push_str("</svg>\n");
    out
}
