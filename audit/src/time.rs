//! Timestamps in audit records: RFC 3339 in UTC with milliseconds (`2024-06-01T08:30:05.123Z`),
//! fixed width so that records sort and compare as text, and the parser for the bounds that
//! `audit query --from/--to` accepts.
//!
//! The calendar and the syntax are jiff's (a 31 February or an offset of `+99:99` is refused
//! there). What stays here is the proxy's one hot-path habit: each thread keeps the text of the
//! last second it formatted and only appends the milliseconds, so jiff runs once a second per
//! thread rather than once a request (`cargo bench -p fenfa-benches --bench audit`, `encode`).

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

/// Appends `YYYY-MM-DDTHH:MM:SS` (UTC) for seconds since the epoch. Seconds outside jiff's
/// range (about years -9999 to 9999) are clamped to its ends: no record carries such a time.
fn push_secs(secs: i64, out: &mut Vec<u8>) {
    let secs = secs.clamp(
        jiff::Timestamp::MIN.as_second(),
        jiff::Timestamp::MAX.as_second(),
    );
    let dt = jiff::tz::TimeZone::UTC
        .to_datetime(jiff::Timestamp::from_second(secs).unwrap_or(jiff::Timestamp::UNIX_EPOCH));
    let year = i64::from(dt.year());
    if year < 0 {
        out.push(b'-');
    }
    push_digits(out, year.abs(), 4);
    for (sep, value) in [
        (b'-', dt.month()),
        (b'-', dt.day()),
        (b'T', dt.hour()),
        (b':', dt.minute()),
        (b':', dt.second()),
    ] {
        out.push(sep);
        push_digits(out, i64::from(value), 2);
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

/// Why a time bound was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{input}` is not a time ({reason}); expected unix seconds, `YYYY-MM-DD`, or RFC 3339 such as `2024-06-01T08:30:00Z` or `2024-06-01T16:30:00+08:00`")]
pub struct InvalidTime {
    input: String,
    reason: String,
}

/// Parses a time bound: unix seconds (`1717230605`), a date (`2024-06-01`, midnight UTC), or
/// RFC 3339 with `Z` or an offset (`2024-06-01T08:30:05Z`, `2024-06-01T16:30+08:00`,
/// `2024-06-01T08:30:05.123Z`). Returns milliseconds since the epoch.
///
/// The syntax and the calendar (31 February, offsets past ±25:59) are jiff's; the accepted
/// forms and the millisecond result are Fenfa's.
pub fn parse(s: &str) -> Result<i64, InvalidTime> {
    let s = s.trim();
    let bad = |reason: &dyn std::fmt::Display| InvalidTime {
        input: s.to_string(),
        reason: reason.to_string(),
    };
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        let secs: i64 = s.parse().map_err(|e| bad(&e))?;
        let ts = jiff::Timestamp::from_second(secs).map_err(|e| bad(&e))?;
        return Ok(ts.as_millisecond());
    }
    if s.len() == 10 {
        let date: jiff::civil::Date = s.parse().map_err(|e| bad(&e))?;
        let ts = jiff::tz::TimeZone::UTC
            .to_timestamp(date.into())
            .map_err(|e| bad(&e))?;
        return Ok(ts.as_millisecond());
    }
    // An instant needs its offset: a bare local time (`2024-06-01T08:30`) is ambiguous.
    let ts: jiff::Timestamp = s.parse().map_err(|e| bad(&e))?;
    Ok(ts.as_millisecond())
}

/// `SystemTime` from milliseconds since the epoch.
pub fn from_ms(ms: i64) -> SystemTime {
    if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms as u64)
    } else {
        UNIX_EPOCH
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc_with_milliseconds() {
        assert_eq!(format_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_ms(1_717_230_605_123), "2024-06-01T08:30:05.123Z");
        assert_eq!(format_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(format_ms(253_402_207_200_000), "9999-12-30T22:00:00.000Z");
        // Past jiff's range (which ends at 9999-12-30T22:00:00Z) the second is clamped there;
        // no record carries such a time.
        assert_eq!(format_ms(253_402_300_800_000), "9999-12-30T22:00:00.000Z");
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
            let e = parse(s).unwrap_err().to_string();
            assert!(e.contains("expected"), "{s}: {e}");
        }
    }

    #[test]
    fn rejects_dates_that_do_not_exist() {
        // Once accepted as 2 March and 1 March.
        for s in [
            "2024-02-31",
            "2023-02-29",
            "2024-04-31T00:00:00Z",
            "2023-02-29T12:00Z",
        ] {
            let e = parse(s).unwrap_err().to_string();
            assert!(e.contains(s) && e.contains("expected"), "{s}: {e}");
        }
        // A leap day that exists.
        assert_eq!(parse("2024-02-29").unwrap(), 1_709_164_800_000);
    }

    #[test]
    fn rejects_offsets_out_of_range() {
        for s in [
            "2024-06-01T08:30:00+99:99",
            "2024-06-01T08:30:00+08:60",
            "2024-06-01T08:30+26:00",
        ] {
            assert!(parse(s).is_err(), "{s} was accepted");
        }
        assert_eq!(
            parse("2024-06-01T08:30:00-05:30").unwrap(),
            1_717_230_600_000 + 5 * 3_600_000 + 1_800_000
        );
    }
}
