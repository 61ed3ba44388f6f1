//! `fenfa-gateway audit query`: reads the local segments and prints the records that match.
//!
//! Filters combine with AND: a time range (`--from` inclusive, `--to` exclusive), user, app,
//! channel, service, agency, route, request id, status (`404` or a class such as `5xx`) and
//! decision (`allowed`, `denied`, `error`). Output is the stored JSON lines unchanged (`json`,
//! the default: pipe it to `jq`) or an aligned table for people (`table`).
//!
//! Query reads; it never verifies. Run `audit verify` to know whether what it reads is whole.

use std::io::Write;
use std::path::Path;

use super::chain::Line;
use super::record::{Decision, Record};
use super::segment;

/// A status filter: one code or a class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Code(u16),
    /// `4xx` is `Class(4)`.
    Class(u16),
}

impl std::str::FromStr for Status {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("`{s}` is not a status; expected e.g. `404` or `5xx`");
        let b = s.as_bytes();
        if b.len() == 3 && b[1..].eq_ignore_ascii_case(b"xx") && (b'1'..=b'5').contains(&b[0]) {
            return Ok(Status::Class(u16::from(b[0] - b'0')));
        }
        let code: u16 = s.parse().map_err(|_| bad())?;
        if !(100..=599).contains(&code) {
            return Err(bad());
        }
        Ok(Status::Code(code))
    }
}

impl Status {
    fn matches(self, status: u16) -> bool {
        match self {
            Status::Code(c) => c == status,
            Status::Class(c) => status / 100 == c,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Format {
    #[default]
    Json,
    Table,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "json" => Ok(Format::Json),
            "table" => Ok(Format::Table),
            _ => Err(format!("`{s}` is not a format; expected json or table")),
        }
    }
}

/// Which records to print.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Milliseconds since the epoch, inclusive.
    pub from_ms: Option<i64>,
    /// Milliseconds since the epoch, exclusive.
    pub to_ms: Option<i64>,
    pub user: Option<String>,
    pub app: Option<String>,
    pub channel: Option<String>,
    pub service: Option<String>,
    pub agency: Option<String>,
    pub route: Option<String>,
    pub request_id: Option<String>,
    pub status: Option<Status>,
    pub decision: Option<Decision>,
    pub limit: Option<usize>,
}

impl Filter {
    pub fn matches(&self, r: &Record) -> bool {
        fn eq(want: &Option<String>, have: &Option<String>) -> bool {
            want.as_ref()
                .is_none_or(|w| have.as_deref() == Some(w.as_str()))
        }
        if self.from_ms.is_some() || self.to_ms.is_some() {
            let Ok(t) = super::time::parse(&r.time) else {
                return false;
            };
            if self.from_ms.is_some_and(|f| t < f) || self.to_ms.is_some_and(|to| t >= to) {
                return false;
            }
        }
        eq(&self.user, &r.user)
            && eq(&self.app, &r.app)
            && eq(&self.channel, &r.channel)
            && eq(&self.service, &r.service)
            && eq(&self.agency, &r.agency)
            && eq(&self.route, &r.route)
            && self
                .request_id
                .as_ref()
                .is_none_or(|id| *id == r.request_id)
            && self.status.is_none_or(|s| s.matches(r.status))
            && self.decision.is_none_or(|d| r.decision == Some(d))
    }
}

/// Prints the matching records of the trail in `dir` to `out`; returns how many matched.
pub fn run(
    dir: &Path,
    filter: &Filter,
    format: Format,
    out: &mut dyn Write,
) -> std::io::Result<usize> {
    let mut table = Table::default();
    let mut matched = 0;
    'segments: for (_, path) in segment::list(dir)? {
        let bytes = std::fs::read(&path)?;
        for raw in bytes.split(|&b| b == b'\n') {
            if filter.limit.is_some_and(|l| matched >= l) {
                break 'segments;
            }
            // Only whole chained record lines; checkpoints, incidents, chain headers and damaged
            // lines are skipped.
            let Some(line) = Line::split(raw) else {
                continue;
            };
            if [&b"{\"checkpoint\""[..], b"{\"incident\"", b"{\"chain\""]
                .iter()
                .any(|p| line.head.starts_with(p))
            {
                continue;
            }
            let Ok(record) = serde_json::from_slice::<Record>(raw) else {
                continue;
            };
            if !filter.matches(&record) {
                continue;
            }
            matched += 1;
            match format {
                Format::Json => {
                    out.write_all(raw)?;
                    out.write_all(b"\n")?;
                }
                Format::Table => table.push(&record),
            }
        }
    }
    if format == Format::Table {
        table.print(out)?;
    }
    Ok(matched)
}

const COLUMNS: [&str; 12] = [
    "time",
    "request_id",
    "channel",
    "app",
    "user",
    "service",
    "method",
    "path",
    "status",
    "decision",
    "code",
    "ms",
];
/// Widest a table cell gets before it is cut with `…`.
const MAX_CELL: usize = 48;

#[derive(Default)]
struct Table {
    rows: Vec<[String; 12]>,
}

impl Table {
    fn push(&mut self, r: &Record) {
        let opt = |s: &Option<String>| s.clone().unwrap_or_else(|| "-".into());
        self.rows.push([
            r.time.clone(),
            r.request_id.clone(),
            opt(&r.channel),
            opt(&r.app),
            opt(&r.user),
            opt(&r.service),
            r.method.clone(),
            r.path.clone(),
            r.status.to_string(),
            r.decision.map_or("-", Decision::as_str).to_string(),
            match (&r.denied_by, &r.code) {
                (Some(p), Some(c)) => format!("{p}:{c}"),
                (None, Some(c)) => c.clone(),
                _ => "-".into(),
            },
            format!("{:.1}", r.latency_us as f64 / 1000.0),
        ]);
    }

    fn print(&mut self, out: &mut dyn Write) -> std::io::Result<()> {
        for row in &mut self.rows {
            for cell in row.iter_mut() {
                if cell.chars().count() > MAX_CELL {
                    *cell = cell.chars().take(MAX_CELL - 1).chain(['…']).collect();
                }
            }
        }
        let mut widths = COLUMNS.map(str::len);
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |cells: &[&str], out: &mut dyn Write| -> std::io::Result<()> {
            let mut s = String::new();
            for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
                if i > 0 {
                    s.push_str("  ");
                }
                s.push_str(cell);
                if i + 1 < cells.len() {
                    s.extend(std::iter::repeat_n(' ', w - cell.chars().count()));
                }
            }
            writeln!(out, "{s}")
        };
        line(&COLUMNS, out)?;
        for row in &self.rows {
            let cells: Vec<&str> = row.iter().map(String::as_str).collect();
            line(&cells, out)?;
        }
        writeln!(out, "({} records)", self.rows.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_filters_take_codes_and_classes() {
        assert_eq!("404".parse::<Status>().unwrap(), Status::Code(404));
        assert_eq!("5xx".parse::<Status>().unwrap(), Status::Class(5));
        assert!("5x".parse::<Status>().is_err());
        assert!(Status::Class(4).matches(429));
        assert!(!Status::Code(404).matches(403));
    }

    #[test]
    fn filters_combine_with_and() {
        let r = Record {
            time: "2024-06-01T08:30:05.123Z".into(),
            user: Some("u1".into()),
            channel: Some("wechat".into()),
            status: 429,
            decision: Some(Decision::Denied),
            ..Record::default()
        };
        let mut f = Filter {
            user: Some("u1".into()),
            status: Some(Status::Class(4)),
            decision: Some(Decision::Denied),
            from_ms: Some(crate::time::parse("2024-06-01T08:30Z").unwrap()),
            to_ms: Some(crate::time::parse("2024-06-01T08:31Z").unwrap()),
            ..Filter::default()
        };
        assert!(f.matches(&r));
        f.channel = Some("alipay".into());
        assert!(!f.matches(&r));
        f.channel = None;
        f.to_ms = Some(crate::time::parse("2024-06-01T08:30:05.123Z").unwrap());
        assert!(!f.matches(&r), "`to` is exclusive");
    }
}
