//! Local time for schedules and reports: Asia/Shanghai, UTC+8 all year (China has kept no
//! daylight saving time since 1991), so a fixed offset is exact and needs no time-zone database.
//!
//! What it may not do: take the machine's time zone into account — reports say 北京时间
//! whatever the server's `TZ` is.

use jiff::civil::{Date, DateTime};
use jiff::tz::{self, TimeZone};

/// Seconds east of UTC.
pub const OFFSET_SECS: i64 = 8 * 3600;

fn zone() -> TimeZone {
    TimeZone::fixed(tz::offset(8))
}

/// The local date and time of unix seconds.
pub fn datetime(secs: i64) -> DateTime {
    let secs = secs.clamp(
        jiff::Timestamp::MIN.as_second() + OFFSET_SECS,
        jiff::Timestamp::MAX.as_second() - OFFSET_SECS,
    );
    zone().to_datetime(jiff::Timestamp::from_second(secs).unwrap_or(jiff::Timestamp::UNIX_EPOCH))
}

/// `2026-12-05`.
pub fn day(secs: i64) -> String {
    datetime(secs).strftime("%Y-%m-%d").to_string()
}

/// `2026-12`.
pub fn month(secs: i64) -> String {
    datetime(secs).strftime("%Y-%m").to_string()
}

/// `2026-12-05 08:30:00` (local).
pub fn display(secs: i64) -> String {
    datetime(secs).strftime("%Y-%m-%d %H:%M:%S").to_string()
}

/// Minutes since local midnight.
pub fn minute_of_day(secs: i64) -> i64 {
    let dt = datetime(secs);
    i64::from(dt.hour()) * 60 + i64::from(dt.minute())
}

/// Unix seconds of local midnight starting `date`.
pub fn midnight(date: Date) -> i64 {
    zone()
        .to_timestamp(date.to_datetime(jiff::civil::Time::midnight()))
        .map(|t| t.as_second())
        .unwrap_or(0)
}

/// Unix seconds of the local midnight that starts the day of `secs`.
pub fn day_start(secs: i64) -> i64 {
    midnight(datetime(secs).date())
}

/// Parses `YYYY-MM-DD`.
pub fn parse_day(s: &str) -> Result<Date, String> {
    if s.len() != 10 {
        return Err(format!("`{s}` is not a date; expected YYYY-MM-DD"));
    }
    s.parse::<Date>()
        .map_err(|_| format!("`{s}` is not a date; expected YYYY-MM-DD"))
}

/// Parses `YYYY-MM` into its first day.
pub fn parse_month(s: &str) -> Result<Date, String> {
    let bad = || format!("`{s}` is not a month; expected YYYY-MM");
    if s.len() != 7 {
        return Err(bad());
    }
    format!("{s}-01").parse::<Date>().map_err(|_| bad())
}

/// Record times (`2026-12-05T00:30:00.000Z`, RFC 3339 UTC) for a unix second, as the request
/// audit stores them, so ranges can be compared as text.
pub fn record_time(secs: i64) -> String {
    format!("{}.000Z", &crate::clock::rfc3339(secs)[..19])
}

/// Unix seconds of a record's `time` (RFC 3339); `None` if it is not one.
pub fn parse_record_time(s: &str) -> Option<i64> {
    s.parse::<jiff::Timestamp>().ok().map(|t| t.as_second())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_day_turns_at_utc_sixteen() {
        // 2026-12-04T15:59:59Z is 23:59:59 in Shanghai; a second later it is the 5th.
        let t = 1_796_399_999;
        assert_eq!(crate::clock::rfc3339(t), "2026-12-04T15:59:59Z");
        assert_eq!(day(t), "2026-12-04");
        assert_eq!(day(t + 1), "2026-12-05");
        assert_eq!(day_start(t + 1), t + 1);
        assert_eq!(minute_of_day(t + 1 + 8 * 3600 + 30 * 60), 8 * 60 + 30);
        assert_eq!(month(t + 1), "2026-12");
        assert_eq!(display(t + 1), "2026-12-05 00:00:00");
    }

    #[test]
    fn record_times_round_trip() {
        let t = 1_796_399_999;
        assert_eq!(record_time(t), "2026-12-04T15:59:59.000Z");
        assert_eq!(parse_record_time(&record_time(t)), Some(t));
        assert!(parse_day("2026-13-01").is_err());
        assert_eq!(
            midnight(parse_month("2026-12").unwrap()),
            1_796_400_000 - 4 * 86400
        );
    }
}
