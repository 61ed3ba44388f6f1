//! Timestamps in audit records: RFC 3339 in UTC with milliseconds (`2024-06-01T08:30:05.123Z`),
//! fixed width so that records sort and compare as text, and the parser for the bounds that
//! `audit query --from/--to` accepts.
//!
//! Written here rather than pulled from a date crate: the gateway needs exactly one format out and
//! a handful in, and civil-from-days is twenty lines.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 for times before it).
pub fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// `t` as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn format(t: SystemTime) -> String {
    format_ms(unix_ms(t))
}

/// Milliseconds since the epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn format_ms(ms: i64) -> String {
    let mut out = Vec::with_capacity(24);
    push_ms(ms, &mut out);
    // Only ASCII digits and separators were written.
    String::from_utf8(out).unwrap_or_default()
}

/// Appends milliseconds since the epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
///
/// The proxy formats a time for every request and most fall in the same second as the one
/// before, so each thread keeps the last second's `YYYY-MM-DDTHH:MM:SS` and only adds the
/// milliseconds.
pub fn push_ms(ms: i64, out: &mut Vec<u8>) {
    thread_local! {
        static LAST: std::cell::Cell<(i64, [u8; 19])> = const { std::cell::Cell::new((i64::MIN, [0; 19])) };
    }
    let secs = ms.div_euclid(1000);
    let (cached, text) = LAST.get();
    if cached == secs {
        out.extend_from_slice(&text);
    } else {
        let start = out.len();
        push_secs(secs, out);
        if let Ok(text) = <[u8; 19]>::try_from(&out[start..]) {
            LAST.set((secs, text));
        }
    }
    out.push(b'.');
    push_digits(out, ms.rem_euclid(1000), 3);
    out.push(b'Z');
}

/// Appends `YYYY-MM-DDTHH:MM:SS` for seconds since the epoch.
fn push_secs(secs: i64, out: &mut Vec<u8>) {
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    if (0..10_000).contains(&y) {
        push_digits(out, y, 4);
    } else {
        out.extend_from_slice(y.to_string().as_bytes());
    }
    for (sep, value) in [
        (b'-', m),
        (b'-', d),
        (b'T', sod / 3600),
        (b':', (sod % 3600) / 60),
        (b':', sod % 60),
    ] {
        out.push(sep);
        push_digits(out, value, 2);
    }
}

/// Appends `0 <= n < 10^width` as exactly `width` decimal digits.
fn push_digits(out: &mut Vec<u8>, n: i64, width: u32) {
    let mut div = 10i64.pow(width - 1);
    while div > 0 {
        out.push(b'0' + ((n / div) % 10) as u8);
        div /= 10;
    }
}

/// Parses a time bound: unix seconds (`1717230605`), a date (`2024-06-01`, midnight UTC), or
/// RFC 3339 with `Z` or an offset (`2024-06-01T08:30:05Z`, `2024-06-01T16:30+08:00`,
/// `2024-06-01T08:30:05.123Z`). Returns milliseconds since the epoch.
pub fn parse(s: &str) -> Result<i64, String> {
    let s = s.trim();
    let bad = || {
        format!(
            "`{s}` is not a time; expected unix seconds, `YYYY-MM-DD`, or RFC 3339 such as `2024-06-01T08:30:00Z` or `2024-06-01T16:30:00+08:00`"
        )
    };
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        let secs: i64 = s.parse().map_err(|_| bad())?;
        return secs.checked_mul(1000).ok_or_else(bad);
    }
    let b = s.as_bytes();
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| -> Result<i64, String> {
        let part = s.get(r).ok_or_else(bad)?;
        if part.is_empty() || !part.bytes().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        part.parse().map_err(|_| bad())
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
        return Err(bad());
    }
    let mut ms = days_from_civil(y, mo, d) * 86_400_000;
    if b.len() == 10 {
        return Ok(ms);
    }
    if !matches!(b[10], b'T' | b't' | b' ') || b.len() < 16 || b[13] != b':' {
        return Err(bad());
    }
    let (h, mi) = (num(11..13)?, num(14..16)?);
    if h > 23 || mi > 59 {
        return Err(bad());
    }
    ms += (h * 3600 + mi * 60) * 1000;
    let mut i = 16;
    if b.get(i) == Some(&b':') {
        let sec = num(i + 1..i + 3)?;
        if sec > 60 {
            return Err(bad());
        }
        ms += sec * 1000;
        i += 3;
        if b.get(i) == Some(&b'.') {
            let start = i + 1;
            let mut end = start;
            while b.get(end).is_some_and(u8::is_ascii_digit) {
                end += 1;
            }
            if end == start {
                return Err(bad());
            }
            // Milliseconds: the first three digits, right-padded.
            let frac = &s[start..end.min(start + 3)];
            let mut f: i64 = frac.parse().map_err(|_| bad())?;
            for _ in frac.len()..3 {
                f *= 10;
            }
            ms += f;
            i = end;
        }
    }
    match b.get(i) {
        Some(b'Z' | b'z') if i + 1 == b.len() => Ok(ms),
        Some(&sign @ (b'+' | b'-')) if b.len() == i + 6 && b[i + 3] == b':' => {
            let (oh, om) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
            let off = (oh * 60 + om) * 60_000;
            Ok(if sign == b'+' { ms - off } else { ms + off })
        }
        _ => Err(bad()),
    }
}

/// `SystemTime` from milliseconds since the epoch.
pub fn from_ms(ms: i64) -> SystemTime {
    if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms as u64)
    } else {
        UNIX_EPOCH
    }
}

/// Days since the Unix epoch as (year, month, day), proleptic Gregorian (Howard Hinnant's
/// algorithm). Shared with the control plane's report timestamps.
pub fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Days since 1970-01-01 of a civil date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc_with_milliseconds() {
        assert_eq!(format_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_ms(1_717_230_605_123), "2024-06-01T08:30:05.123Z");
        assert_eq!(format_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(format_ms(253_402_300_799_999), "9999-12-31T23:59:59.999Z");
        assert_eq!(format_ms(253_402_300_800_000), "10000-01-01T00:00:00.000Z");
    }

    #[test]
    fn times_in_the_same_second_differ_only_in_milliseconds() {
        // The second is cached per thread: the next second, or an earlier one, is not stale.
        assert_eq!(format_ms(1_717_230_605_123), "2024-06-01T08:30:05.123Z");
        assert_eq!(format_ms(1_717_230_605_999), "2024-06-01T08:30:05.999Z");
        assert_eq!(format_ms(1_717_230_606_000), "2024-06-01T08:30:06.000Z");
        assert_eq!(format_ms(1_717_230_605_001), "2024-06-01T08:30:05.001Z");
    }

    #[test]
    fn parses_every_accepted_form_to_the_same_instant() {
        let t = 1_717_230_600_000;
        assert_eq!(parse("1717230600").unwrap(), t);
        assert_eq!(parse("2024-06-01T08:30:00Z").unwrap(), t);
        assert_eq!(parse("2024-06-01T08:30Z").unwrap(), t);
        assert_eq!(parse("2024-06-01T16:30:00+08:00").unwrap(), t);
        assert_eq!(parse("2024-06-01T08:30:00.000Z").unwrap(), t);
        assert_eq!(parse("2024-06-01T08:30:00.5Z").unwrap(), t + 500);
        assert_eq!(parse("2024-06-01").unwrap(), 1_717_200_000_000);
    }

    #[test]
    fn round_trips_what_it_formats() {
        for ms in [0, 1, 999, 1_717_230_605_123, 4_102_444_799_999] {
            assert_eq!(parse(&format_ms(ms)).unwrap(), ms);
        }
    }

    #[test]
    fn rejects_garbage_with_a_useful_message() {
        for s in [
            "",
            "yesterday",
            "2024-13-01",
            "2024-06-01T25:00Z",
            "2024-06-01T08:30",
            "2024-06-01T08:30:00+8",
        ] {
            let e = parse(s).unwrap_err();
            assert!(e.contains("expected"), "{s}: {e}");
        }
    }
}
