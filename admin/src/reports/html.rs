//! The HTML rendering: one self-contained page — inline CSS, charts as inline SVG, no script,
//! no font, image or style sheet from anywhere — that prints on A4 (`@media print`).

use super::doc::{Chart, Doc, Section};

/// Escapes text for HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

const STYLE: &str = "body{font-family:'Noto Sans CJK SC','Source Han Sans SC','WenQuanYi Micro Hei','Microsoft YaHei','PingFang SC',sans-serif;margin:24px;color:#222}\
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:24px 0 8px;border-left:4px solid #1f6feb;padding-left:8px}\
.meta{color:#555;font-size:13px}table{border-collapse:collapse;width:100%;font-size:13px;margin:8px 0}\
th,td{border:1px solid #ccc;padding:4px 6px;text-align:left}th{background:#f0f3f7}td.n{text-align:right}\
.summary td:first-child{width:40%;background:#fafafa}svg{max-width:100%;height:auto}\
@media print{body{margin:0}h2{break-after:avoid}table,svg{break-inside:avoid}}\
@page{size:A4;margin:15mm}";

pub fn render(d: &Doc) -> String {
    let mut o = String::new();
    o.push_str("<!DOCTYPE html>\n<html lang=\"zh-CN\"><head><meta charset=\"utf-8\">");
    o.push_str("<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">");
    o.push_str(&format!(
        "<title>{}</title><style>{STYLE}</style></head><body>",
        esc(&d.title)
    ));
    o.push_str(&format!("<h1>{}</h1>", esc(&d.title)));
    o.push_str(&format!(
        "<p class=\"meta\">统计周期：{}　生成时间：{}</p>",
        esc(&d.period),
        esc(&d.generated_at)
    ));
    o.push_str("<h2>概要</h2><table class=\"summary\" id=\"summary\"><tbody>");
    for (k, v) in &d.summary {
        o.push_str(&format!(
            "<tr><td>{}</td><td class=\"n\">{}</td></tr>",
            esc(k),
            esc(v)
        ));
    }
    o.push_str("</tbody></table>");
    for (i, s) in d.sections.iter().enumerate() {
        section(&mut o, i, s);
    }
    o.push_str("</body></html>\n");
    o
}

fn section(o: &mut String, i: usize, s: &Section) {
    o.push_str(&format!("<h2>{}</h2>", esc(&s.title)));
    if let Some(c) = &s.chart {
        if !s.rows.is_empty() {
            o.push_str(&bar_chart(c, s));
        }
    }
    o.push_str(&format!("<table id=\"section-{i}\"><thead><tr>"));
    for c in &s.columns {
        o.push_str(&format!("<th>{}</th>", esc(c)));
    }
    o.push_str("</tr></thead><tbody>");
    if s.rows.is_empty() {
        o.push_str(&format!(
            "<tr><td colspan=\"{}\">无</td></tr>",
            s.columns.len().max(1)
        ));
    }
    for r in &s.rows {
        o.push_str("<tr>");
        for v in r {
            let numeric = !v.is_empty() && v.parse::<f64>().is_ok();
            if numeric {
                o.push_str(&format!("<td class=\"n\">{}</td>", esc(v)));
            } else {
                o.push_str(&format!("<td>{}</td>", esc(v)));
            }
        }
        o.push_str("</tr>");
    }
    o.push_str("</tbody></table>");
}

/// A horizontal bar chart: one bar per row (at most 20), the value written at its end.
fn bar_chart(c: &Chart, s: &Section) -> String {
    let rows: Vec<(&str, f64)> = s
        .rows
        .iter()
        .take(20)
        .map(|r| {
            (
                r.get(c.label_column).map(String::as_str).unwrap_or(""),
                r.get(c.value_column)
                    .and_then(|v| v.parse::<f64>().ok())
                    .unwrap_or(0.0),
            )
        })
        .collect();
    let max = rows
        .iter()
        .map(|(_, v)| *v)
        .chain(c.target)
        .fold(0.0f64, f64::max)
        .max(1e-9);
    let (label_w, bar_w, row_h, top) = (200.0, 460.0, 22.0, 28.0);
    let h = top + rows.len() as f64 * row_h + 10.0;
    let w = label_w + bar_w + 90.0;
    let mut o = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" role=\"img\" viewBox=\"0 0 {w} {h}\" width=\"{w}\" height=\"{h}\" font-size=\"12\"><title>{}</title>",
        esc(&c.title)
    );
    o.push_str(&format!(
        "<text x=\"0\" y=\"16\" font-size=\"13\" font-weight=\"bold\">{}</text>",
        esc(&c.title)
    ));
    for (i, (label, v)) in rows.iter().enumerate() {
        let y = top + i as f64 * row_h;
        let len = (v / max * bar_w).max(0.0);
        let label: String = label.chars().take(24).collect();
        o.push_str(&format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>",
            label_w - 6.0,
            y + 14.0,
            esc(&label)
        ));
        o.push_str(&format!(
            "<rect x=\"{label_w}\" y=\"{}\" width=\"{len:.1}\" height=\"{}\" fill=\"#1f6feb\"/>",
            y + 3.0,
            row_h - 6.0
        ));
        o.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{}\">{}</text>",
            label_w + len + 4.0,
            y + 14.0,
            esc(&super::doc::num(*v))
        ));
    }
    if let Some(t) = c.target {
        let x = label_w + t / max * bar_w;
        o.push_str(&format!(
            "<line x1=\"{x:.1}\" y1=\"{}\" x2=\"{x:.1}\" y2=\"{}\" stroke=\"#d1242f\" stroke-dasharray=\"4 3\"/><text x=\"{x:.1}\" y=\"{}\" fill=\"#d1242f\" text-anchor=\"middle\">目标 {}</text>",
            top - 4.0,
            h - 6.0,
            top - 6.0,
            esc(&super::doc::num(t))
        ));
    }
    o.push_str("</svg>");
    o
}
