//! Pictures for the console, drawn on the server as SVG text: the adapter lineage tree and
//! the dashboard's day charts. Every piece of text that comes from data goes through
//! [`esc`], and every link through [`pct`], so the markup is as safe as the templates'.

use std::fmt::Write;

use crate::model::Millis;
use crate::service::overview::{ForestNode, Series};

/// Escapes text for HTML and SVG, in element content and in quoted attributes.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes one URL path segment or query value (everything but RFC 3986's
/// unreserved characters).
pub fn pct(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// `s` cut to `max` characters, with an ellipsis when cut.
fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// Colours of chart lines, in order.
pub const PALETTE: [&str; 8] = [
    "#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#db2777", "#0891b2", "#4b5563",
];

const BOX_W: u32 = 220;
const BOX_H: u32 = 58;
const GAP_X: u32 = 48;
const GAP_Y: u32 = 14;
const MARGIN: u32 = 12;

/// The lineage forest as one SVG: one box per adapter (id, version, feedback count and
/// positive ratio with a bar), children to the right of their parent, a line for each
/// DERIVED_FROM edge; each box links to the adapter's page.
pub fn lineage(nodes: &[ForestNode]) -> String {
    if nodes.is_empty() {
        return String::new();
    }
    let n = nodes.len();
    let mut has_child = vec![false; n];
    for node in nodes {
        if let Some(p) = node.parent
            && let Some(h) = has_child.get_mut(p)
        {
            *h = true;
        }
    }
    // Leaves take successive rows in depth-first order; a parent sits between its first
    // and last child. Children come after their parent, so a reverse pass sees them first.
    let mut y = vec![0f64; n];
    let mut span: Vec<Option<(f64, f64)>> = vec![None; n];
    let mut row = 0f64;
    for i in 0..n {
        if !has_child[i] {
            y[i] = row;
            row += 1.0;
        }
    }
    for i in (0..n).rev() {
        if has_child[i]
            && let Some((lo, hi)) = span[i]
        {
            y[i] = (lo + hi) / 2.0;
        }
        if let Some(p) = nodes[i].parent
            && p < n
        {
            span[p] = Some(match span[p] {
                None => (y[i], y[i]),
                Some((lo, hi)) => (lo.min(y[i]), hi.max(y[i])),
            });
        }
    }
    let depth = nodes.iter().map(|d| d.depth).max().unwrap_or(0) as u32;
    let width = MARGIN * 2 + (depth + 1) * BOX_W + depth * GAP_X;
    let height = MARGIN * 2 + (row as u32) * (BOX_H + GAP_Y);
    let px = |d: usize| f64::from(MARGIN) + d as f64 * f64::from(BOX_W + GAP_X);
    let py = |r: f64| f64::from(MARGIN) + r * f64::from(BOX_H + GAP_Y);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="lineage" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="Adapter lineage">"#
    );
    s.push_str(r##"<g stroke="#94a3b8" stroke-width="1.5" fill="none">"##);
    for (i, node) in nodes.iter().enumerate() {
        if let Some(p) = node.parent.filter(|&p| p < n) {
            let (x1, y1) = (px(nodes[p].depth) + f64::from(BOX_W), py(y[p]) + 29.0);
            let (x2, y2) = (px(node.depth), py(y[i]) + 29.0);
            let mid = (x1 + x2) / 2.0;
            let _ = write!(
                s,
                r#"<path d="M{x1:.1} {y1:.1} C{mid:.1} {y1:.1} {mid:.1} {y2:.1} {x2:.1} {y2:.1}"/>"#
            );
        }
    }
    s.push_str("</g>");
    for (i, node) in nodes.iter().enumerate() {
        let (x, top) = (px(node.depth), py(y[i]));
        let ratio = node.positive_ratio();
        let detail = format!(
            "{} · {} fb · {}",
            node.version.as_deref().unwrap_or("no version"),
            node.feedback,
            ratio.map_or("no feedback".to_owned(), |r| format!(
                "{:.0}% positive",
                r * 100.0
            ))
        );
        let _ = write!(
            s,
            r##"<a href="/console/adapters/{href}" class="node" data-adapter="{id}"><title>{id}{base}</title><rect x="{x:.1}" y="{top:.1}" width="{BOX_W}" height="{BOX_H}" rx="6" fill="#ffffff" stroke="#334155"/><text x="{tx:.1}" y="{t1:.1}" font-size="13" font-weight="600" fill="#0f172a">{label}</text><text x="{tx:.1}" y="{t2:.1}" font-size="11" fill="#475569">{detail}</text><rect x="{tx:.1}" y="{bar:.1}" width="{bw}" height="5" fill="#fee2e2"/>"##,
            href = pct(&node.id),
            id = esc(&node.id),
            base = node
                .base_model
                .as_deref()
                .map(|b| format!(" (base model {})", esc(b)))
                .unwrap_or_default(),
            tx = x + 8.0,
            t1 = top + 19.0,
            t2 = top + 36.0,
            bar = top + 45.0,
            bw = BOX_W - 16,
            label = esc(&clip(&node.id, 28)),
            detail = esc(&clip(&detail, 34)),
        );
        if let Some(r) = ratio {
            let _ = write!(
                s,
                r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="5" fill="#16a34a"/>"##,
                x + 8.0,
                top + 45.0,
                f64::from(BOX_W - 16) * r
            );
        }
        if node.hidden_children > 0 {
            let _ = write!(
                s,
                r##"<text x="{:.1}" y="{:.1}" font-size="11" fill="#b45309">+{} more</text>"##,
                x + f64::from(BOX_W) + 4.0,
                top + 19.0,
                node.hidden_children
            );
        }
        s.push_str("</a>");
    }
    s.push_str("</svg>");
    s
}

const CHART_W: f64 = 760.0;
const CHART_H: f64 = 220.0;
const PAD_L: f64 = 48.0;
const PAD_R: f64 = 12.0;
const PAD_T: f64 = 12.0;
const PAD_B: f64 = 28.0;

/// `YYYY-MM-DD` of a day start.
pub fn day_label(ms: Millis) -> String {
    let (y, m, d) = civil_from_days((ms / 86_400_000) as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Year, month, day of a count of days since 1970-01-01 (Howard Hinnant's algorithm).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn frame(s: &mut String, label: &str, days: &[Millis], y_max_label: &str) {
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{CHART_W}" height="{CHART_H}" viewBox="0 0 {CHART_W} {CHART_H}" role="img" aria-label="{}">"#,
        esc(label)
    );
    let bottom = CHART_H - PAD_B;
    let _ = write!(
        s,
        r##"<g stroke="#cbd5e1"><line x1="{PAD_L}" y1="{PAD_T}" x2="{PAD_L}" y2="{bottom}"/><line x1="{PAD_L}" y1="{bottom}" x2="{}" y2="{bottom}"/></g>"##,
        CHART_W - PAD_R
    );
    let _ = write!(
        s,
        r##"<g font-size="11" fill="#475569"><text x="{}" y="{}" text-anchor="end">{}</text><text x="{}" y="{bottom}" text-anchor="end">0</text>"##,
        PAD_L - 4.0,
        PAD_T + 10.0,
        esc(y_max_label),
        PAD_L - 4.0
    );
    if let (Some(first), Some(last)) = (days.first(), days.last()) {
        let _ = write!(
            s,
            r#"<text x="{PAD_L}" y="{}">{}</text><text x="{}" y="{}" text-anchor="end">{}</text>"#,
            CHART_H - 8.0,
            day_label(*first),
            CHART_W - PAD_R,
            CHART_H - 8.0,
            day_label(*last)
        );
    }
    s.push_str("</g>");
}

fn x_of(i: usize, n: usize) -> f64 {
    let inner = CHART_W - PAD_L - PAD_R;
    if n <= 1 {
        PAD_L + inner / 2.0
    } else {
        PAD_L + inner * i as f64 / (n - 1) as f64
    }
}

/// Bars of items per day.
pub fn bars(days: &[Millis], series: &Series, label: &str) -> String {
    let max = series.count.iter().copied().max().unwrap_or(0).max(1);
    let mut s = String::new();
    frame(&mut s, label, days, &max.to_string());
    let n = series.count.len().max(1);
    let inner_h = CHART_H - PAD_T - PAD_B;
    let slot = (CHART_W - PAD_L - PAD_R) / n as f64;
    let w = (slot * 0.7).max(1.0);
    s.push_str(r##"<g fill="#2563eb">"##);
    for (i, (&c, day)) in series.count.iter().zip(days).enumerate() {
        if c == 0 {
            continue;
        }
        let h = inner_h * c as f64 / max as f64;
        let _ = write!(
            s,
            r#"<rect x="{:.1}" y="{:.1}" width="{w:.1}" height="{h:.1}"><title>{}: {c}</title></rect>"#,
            PAD_L + slot * i as f64 + (slot - w) / 2.0,
            CHART_H - PAD_B - h,
            day_label(*day)
        );
    }
    s.push_str("</g></svg>");
    s
}

/// Positive ratio per day, one line per series (days without items leave a gap).
pub fn ratio_lines(days: &[Millis], series: &[Series], label: &str) -> String {
    let mut s = String::new();
    frame(&mut s, label, days, "100%");
    let inner_h = CHART_H - PAD_T - PAD_B;
    for (k, line) in series.iter().enumerate() {
        let colour = PALETTE[k % PALETTE.len()];
        let n = line.count.len();
        let mut path = String::new();
        let mut pen_down = false;
        for i in 0..n {
            let (c, p) = (line.count[i], line.positive[i]);
            if c == 0 {
                pen_down = false;
                continue;
            }
            let (x, y) = (x_of(i, n), CHART_H - PAD_B - inner_h * p as f64 / c as f64);
            let _ = write!(path, "{}{x:.1} {y:.1} ", if pen_down { "L" } else { "M" });
            pen_down = true;
            let _ = write!(
                s,
                r#"<circle cx="{x:.1}" cy="{y:.1}" r="2.5" fill="{colour}"><title>{} {}: {p}/{c}</title></circle>"#,
                esc(&line.name),
                day_label(days.get(i).copied().unwrap_or(0))
            );
        }
        if !path.is_empty() {
            let _ = write!(
                s,
                r#"<path d="{}" fill="none" stroke="{colour}" stroke-width="1.5"/>"#,
                path.trim_end()
            );
        }
    }
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup_and_quotes() {
        assert_eq!(
            esc(r#"<script>"a" & 'b'</script>"#),
            "&lt;script&gt;&quot;a&quot; &amp; &#39;b&#39;&lt;/script&gt;"
        );
        assert_eq!(pct("a b/<c>"), "a%20b%2F%3Cc%3E");
    }

    #[test]
    fn dates_come_out_right() {
        assert_eq!(day_label(0), "1970-01-01");
        assert_eq!(day_label(1_790_063_117_318), "2026-09-22");
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn a_hostile_adapter_id_is_text_in_the_tree() {
        let node = ForestNode {
            id: "<script>x</script>".into(),
            version: Some("\"v1\"".into()),
            base_model: None,
            depth: 0,
            parent: None,
            feedback: 2,
            positive: 1,
            hidden_children: 0,
        };
        let svg = lineage(&[node]);
        assert!(!svg.contains("<script>"), "{svg}");
        assert!(svg.contains("&lt;script&gt;x&lt;/script&gt;"), "{svg}");
        assert!(svg.contains("%3Cscript%3E"), "{svg}");
    }
}
