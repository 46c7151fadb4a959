//! `compare --report DIR`: one page that a browser opens offline (`DIR/index.html`): how the runs were made,
//! the table, and per scenario the "differ" explanation and each stack's pictures side by side (kernel | lab |
//! TUN), drawn into `DIR` beside their captures by [`write_diagrams`]. The page is well-formed XML as well as
//! HTML (every element closed, all text escaped), with its style inline and nothing fetched from anywhere.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::render::{diagram_stem, link_cell, packets_cell, time_cell};
use super::{write_diagrams, Comparison, Observation, WriteDiagramsError};
use crate::experiments::diagram::xml_escape as escape;

/// The page's style: the pictures of one scenario in a row, each scrolling on its own, at their own scale
/// (one pixel of one ladder is one pixel of the others: the rows line up).
const STYLE: &str = "body{font-family:sans-serif;margin:24px;color:#222}\
table{border-collapse:collapse;font-size:13px}\
td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}\
th{background:#eceff1}tr.differ td{background:#fff3e0}\
.stacks{display:grid;grid-auto-flow:column;grid-auto-columns:minmax(0,1fr);gap:12px;margin:8px 0 32px}\
figure{margin:0;border:1px solid #ddd;padding:6px;overflow:auto;max-height:900px}\
figcaption{font-size:12px;margin-bottom:6px}\
img.graph{width:100%;height:auto;display:block}\
p.differ{background:#fff3e0;padding:6px 10px;border-left:4px solid #e65100}\
p.none{color:#777;font-style:italic}";

/// Writes the report for `comparisons` into `dir`: the pictures and captures ([`write_diagrams`]), then
/// `index.html`. `how` says how the runs were made (the command, whether TUN ran), as the page's first
/// paragraph. Returns the page's path.
pub fn write_report(
    comparisons: &[Comparison],
    dir: &Path,
    how: &str,
) -> Result<PathBuf, WriteDiagramsError> {
    let written = write_diagrams(comparisons, dir)?;
    let page = dir.join("index.html");
    std::fs::write(&page, report_html(comparisons, &written, how)).map_err(|source| {
        WriteDiagramsError::Write {
            path: page.clone(),
            source,
        }
    })?;
    Ok(page)
}

/// The page (see the module's documentation); `pictures` are the files [`write_diagrams`] wrote.
pub fn report_html(comparisons: &[Comparison], pictures: &[PathBuf], how: &str) -> String {
    let mut html = String::with_capacity(8192 + comparisons.len() * 2048);
    html.push_str(
        "<!DOCTYPE html>\n<html xmlns=\"http://www.w3.org/1999/xhtml\" lang=\"en\">\n<head>\n",
    );
    html.push_str("<meta charset=\"utf-8\"/>\n<title>smoltalk compare</title>\n");
    let _ = writeln!(html, "<style>{STYLE}</style>\n</head>\n<body>");
    html.push_str("<h1>smoltalk compare: the classic questions on every stack</h1>\n");
    let _ = writeln!(html, "<p class=\"how\">{}</p>", escape(how));

    // The table, each scenario linked to its pictures.
    html.push_str("<table>\n<tr><th>scenario</th><th>stack</th><th>outcome</th><th>time</th><th>packets</th></tr>\n");
    for c in comparisons {
        let anchor = anchor(c);
        for (i, o) in c.observations().enumerate() {
            let scenario = match i {
                0 => format!(
                    "<a href=\"#{anchor}\">{} ({})</a>",
                    escape(c.title),
                    c.family
                ),
                _ => String::new(),
            };
            let _ = writeln!(
                html,
                "<tr><td>{scenario}</td><td>{} ({})</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(o.stack),
                escape(&network(o)),
                escape(&o.outcome),
                escape(&time_cell(o)),
                escape(&packets_cell(o, c.family))
            );
        }
        if c.differs {
            let _ = writeln!(
                html,
                "<tr class=\"differ\"><td></td><td>differ</td><td colspan=\"3\">{}</td></tr>",
                escape(&c.explanation)
            );
        }
    }
    html.push_str("</table>\n");

    // Per scenario: the explanation and the pictures side by side.
    for c in comparisons {
        let _ = writeln!(
            html,
            "<h2 id=\"{}\">{} ({})</h2>",
            anchor(c),
            escape(c.title),
            c.family
        );
        if c.differs {
            let _ = writeln!(
                html,
                "<p class=\"differ\">differ: {}</p>",
                escape(&c.explanation)
            );
        }
        html.push_str("<div class=\"stacks\">\n");
        for o in c.observations() {
            let stem = diagram_stem(c, o);
            let caption = format!(
                "{} ({}): {}; {}; {}",
                o.stack,
                network(o),
                o.outcome,
                time_cell(o),
                packets_cell(o, c.family)
            );
            let _ = writeln!(
                html,
                "<figure><figcaption>{}</figcaption>",
                escape(&caption)
            );
            let drawn: Vec<&PathBuf> = pictures
                .iter()
                .filter(|p| {
                    p.file_stem()
                        .and_then(|s| s.to_str())
                        .is_some_and(|s| s == stem || s.starts_with(&format!("{stem}-")))
                })
                .collect();
            if drawn.is_empty() {
                html.push_str("<p class=\"none\">no capture of this run</p>\n");
            }
            // The ladder, then the time-sequence graph (on the axes the scenario's graphs share).
            for picture in &drawn {
                let name = picture
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                // Graphs are all as wide and fill their column alike: the shared axes stay shared on the page.
                let class = match name.ends_with("-tsg.svg") {
                    true => " class=\"graph\"",
                    false => "",
                };
                let _ = writeln!(
                    html,
                    "<a href=\"{0}\"><img{class} src=\"{0}\" alt=\"{1}\"/></a>",
                    escape(&name),
                    escape(&caption)
                );
            }
            if !drawn.is_empty() {
                let _ = writeln!(
                    html,
                    "<p><a href=\"{}.pcap\">the capture</a></p>",
                    escape(&stem)
                );
            }
            html.push_str("</figure>\n");
        }
        html.push_str("</div>\n");
    }
    html.push_str("</body>\n</html>\n");
    html
}

/// Where a run ran, and over which link where it was shaped.
fn network(o: &Observation) -> String {
    match link_cell(o) {
        Some(link) => format!("{}; {link}", o.network),
        None => o.network.to_string(),
    }
}

/// The id of a scenario's section: its name and family (`tcp_wrong_port-ipv4`).
fn anchor(c: &Comparison) -> String {
    format!(
        "{}-{}",
        c.scenario.name(),
        c.family.name().to_ascii_lowercase()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_for_html_and_xml() {
        assert_eq!(
            escape("a<b> & \"c\" 'd'\u{1}"),
            "a&lt;b&gt; &amp; &quot;c&quot; &apos;d&apos;\u{fffd}"
        );
    }
}
