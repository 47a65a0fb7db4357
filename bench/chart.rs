//! The chart of `target/bench/report.svg`: one bar per target, hand-written SVG (no plotting
//! dependency for one picture).

use std::fmt::Write as _;

use crate::report::Verdict;

/// A horizontal bar chart, one bar per target, each as a "higher is better" ratio with the
/// target marked in red: hubferry / the other contender for throughput, the other / hubferry
/// for cost (CPU, memory), limit / measured for absolute limits. Hand-written SVG: no plotting
/// dependency for one picture.
pub fn svg(verdicts: &[Verdict], subtitle: &str) -> String {
    let bars: Vec<(&str, f64, f64, Option<bool>)> = verdicts
        .iter()
        .filter_map(|v| v.advantage.map(|(x, t)| (v.what, x, t, v.pass)))
        .collect();
    let (label_w, bar_w, row_h, top) = (430.0, 420.0, 34.0, 70.0);
    let width = label_w + bar_w + 90.0;
    let height = top + row_h * bars.len().max(1) as f64 + 50.0;
    let max = bars.iter().map(|b| b.1.max(b.2)).fold(1.0_f64, f64::max) * 1.1;
    let x = |v: f64| label_w + bar_w * (v / max).min(1.0);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="10" y="22" font-size="16" font-weight="bold">hubferry against each target (bar reaching the red mark = met)</text>"#
    );
    let _ = writeln!(
        s,
        r##"<text x="10" y="42" fill="#555">{}</text>"##,
        escape(subtitle)
    );
    for (i, (label, value, target, pass)) in bars.iter().enumerate() {
        let y = top + row_h * i as f64;
        let colour = match pass {
            Some(true) => "#2e7d32",
            _ => "#c62828",
        };
        let _ = writeln!(
            s,
            r#"<text x="{:.0}" y="{:.0}" text-anchor="end">{}</text>"#,
            label_w - 8.0,
            y + 17.0,
            escape(label)
        );
        let _ = writeln!(
            s,
            r#"<rect x="{label_w:.0}" y="{:.0}" width="{:.1}" height="20" fill="{colour}" opacity="0.8"/>"#,
            y + 4.0,
            x(*value) - label_w
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.0}">{value:.2}</text>"#,
            // After the bar or the target mark, whichever is further right, so neither hides it.
            x(*value).max(x(*target)) + 4.0,
            y + 18.0
        );
        let tx = x(*target);
        let _ = writeln!(
            s,
            r#"<line x1="{tx:.1}" x2="{tx:.1}" y1="{:.0}" y2="{:.0}" stroke="red" stroke-width="2"/>"#,
            y + 1.0,
            y + 27.0
        );
    }
    let one = x(1.0);
    let bottom = top + row_h * bars.len() as f64;
    let _ = writeln!(
        s,
        r#"<line x1="{one:.1}" x2="{one:.1}" y1="{:.0}" y2="{bottom:.0}" stroke="black" stroke-dasharray="4 3"/>"#,
        top - 4.0
    );
    let _ = writeln!(
        s,
        r#"<text x="{one:.1}" y="{:.0}" text-anchor="middle">1</text>"#,
        bottom + 16.0
    );
    let _ = writeln!(
        s,
        r##"<text x="10" y="{:.0}" fill="#555">Throughput: hubferry / other. CPU, RSS against another: other / hubferry. Limits (latency, RSS): limit / measured. Green = met.</text>"##,
        bottom + 38.0
    );
    s.push_str("</svg>\n");
    s
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
