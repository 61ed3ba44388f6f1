//! Charts as SVG drawn on the server: no script, nothing to load.

/// Escapes text for XML/HTML.
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

/// A horizontal bar chart of `(label, value)`, scaled to the largest value.
pub fn bars(title: &str, data: &[(String, f64)]) -> String {
    let row = 26.0;
    let label_w = 170.0;
    let bar_w = 260.0;
    let h = 30.0 + row * data.len().max(1) as f64;
    let max = data.iter().map(|d| d.1).fold(0.0_f64, f64::max).max(1e-9);
    let mut s = format!(
        r#"<svg class="chart" role="img" aria-label="{t}" viewBox="0 0 {w} {h}" width="100%" preserveAspectRatio="xMinYMin meet"><title>{t}</title><text x="0" y="16" class="ct">{t}</text>"#,
        t = esc(title),
        w = label_w + bar_w + 70.0,
    );
    if data.is_empty() {
        s.push_str(r#"<text x="0" y="44" class="cl">—</text>"#);
    }
    for (i, (label, v)) in data.iter().enumerate() {
        let y = 26.0 + row * i as f64;
        let w = (v / max * bar_w).max(if *v > 0.0 { 2.0 } else { 0.0 });
        let shown = if v.fract() == 0.0 {
            format!("{v:.0}")
        } else {
            format!("{v:.2}")
        };
        s.push_str(&format!(
            r#"<text x="0" y="{ty}" class="cl">{l}</text><rect x="{label_w}" y="{y}" width="{w:.1}" height="18" class="cb"/><text x="{vx:.1}" y="{ty}" class="cv">{shown}</text>"#,
            ty = y + 14.0,
            l = esc(label),
            vx = label_w + w + 6.0,
        ));
    }
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped_and_bars_scale_to_the_largest() {
        let svg = bars("t<", &[("<b>".into(), 10.0), ("x".into(), 5.0)]);
        assert!(svg.contains("&lt;b&gt;"));
        assert!(!svg.contains("<b>"));
        assert!(svg.contains(r#"width="260.0""#));
        assert!(svg.contains(r#"width="130.0""#));
    }
}
