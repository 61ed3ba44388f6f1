//! A report's content, independent of its format: a title, a period, key figures, and sections
//! of one table each (with an optional chart of one of its columns). HTML ([`super::html`]), CSV
//! and JSON are renderings of the same [`Doc`], so their numbers are the same strings.

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Doc {
    pub kind: String,
    pub title: String,
    /// `2026-11-30 00:00 至 2026-12-07 00:00 (北京时间)`.
    pub period: String,
    pub generated_at: String,
    pub summary: Vec<(String, String)>,
    pub sections: Vec<Section>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Section {
    pub title: String,
    /// Column headers (Chinese).
    pub columns: Vec<String>,
    pub rows: Vec<Vec<String>>,
    pub chart: Option<Chart>,
}

/// A bar chart of one numeric column, labelled by another.
#[derive(Debug, Clone, Serialize)]
pub struct Chart {
    pub title: String,
    pub label_column: usize,
    pub value_column: usize,
    /// A horizontal reference line (e.g. the 99% availability target).
    pub target: Option<f64>,
}

/// A number as every rendering shows it: integers plainly, others with two decimals.
pub fn num(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        format!("{x:.2}")
    }
}

impl Doc {
    /// CSV (UTF-8 with BOM, CRLF): the key figures, then each section's title, header and rows,
    /// separated by empty lines.
    pub fn csv(&self) -> String {
        use crate::exports::csv_field as f;
        let mut out = String::from("\u{feff}");
        let line = |out: &mut String, cells: &[String]| {
            let v: Vec<String> = cells.iter().map(|c| f(c)).collect();
            out.push_str(&v.join(","));
            out.push_str("\r\n");
        };
        line(&mut out, std::slice::from_ref(&self.title));
        line(&mut out, &["统计周期".into(), self.period.clone()]);
        line(&mut out, &["生成时间".into(), self.generated_at.clone()]);
        out.push_str("\r\n");
        line(&mut out, &["指标".into(), "数值".into()]);
        for (k, v) in &self.summary {
            line(&mut out, &[k.clone(), v.clone()]);
        }
        for s in &self.sections {
            out.push_str("\r\n");
            line(&mut out, std::slice::from_ref(&s.title));
            line(&mut out, &s.columns);
            for r in &s.rows {
                line(&mut out, r);
            }
        }
        out
    }
}
