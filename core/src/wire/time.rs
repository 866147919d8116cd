//! Time as the core sees it: milliseconds since the Unix epoch, passed in.
//!
//! Google resets daily quotas at midnight Pacific time, which is 07:00 UTC
//! while daylight saving is in effect and 08:00 UTC otherwise. The US rules
//! (since 2007: from the second Sunday of March to the first Sunday of
//! November, switching at 02:00 local) are computed here, so no time-zone
//! database is needed on either host.

use serde::{Deserialize, Serialize};

/// Milliseconds since 1970-01-01T00:00:00Z.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct UnixMillis(pub u64);

/// One minute, in milliseconds.
pub const MINUTE_MS: u64 = 60_000;
/// One hour, in milliseconds.
pub const HOUR_MS: u64 = 60 * MINUTE_MS;
/// One day, in milliseconds.
pub const DAY_MS: u64 = 24 * HOUR_MS;

impl UnixMillis {
    /// `self + ms`, saturating.
    pub fn plus(self, ms: u64) -> Self {
        Self(self.0.saturating_add(ms))
    }

    /// Milliseconds from `self` until `later` (0 when `later` is not later).
    pub fn until(self, later: UnixMillis) -> u64 {
        later.0.saturating_sub(self.0)
    }

    /// RFC 3339 form in UTC, to the second: `2026-11-27T07:00:00Z`.
    pub fn to_rfc3339(self) -> String {
        let days = (self.0 / DAY_MS) as i64;
        let rem = self.0 % DAY_MS;
        let (y, m, d) = civil_from_days(days);
        let (h, min, s) = (rem / HOUR_MS, (rem % HOUR_MS) / MINUTE_MS, (rem % MINUTE_MS) / 1000);
        format!("{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}Z")
    }
}

/// The instant of an RFC 3339 timestamp as Google writes them
/// (`2026-12-03T20:00:00.123456Z`, or with an offset such as `+01:00`);
/// `None` for anything else, or a time before the epoch.
pub fn parse_rfc3339(s: &str) -> Option<UnixMillis> {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<u64> {
        let part = b.get(from..from + len)?;
        part.iter().all(u8::is_ascii_digit).then(|| part.iter().fold(0, |n, d| n * 10 + u64::from(d - b'0')))
    };
    let sep = |at: usize, c: u8| b.get(at) == Some(&c);
    if !(sep(4, b'-') && sep(7, b'-') && matches!(b.get(10), Some(b'T' | b't')) && sep(13, b':') && sep(16, b':')) {
        return None;
    }
    let (y, mo, d, h, mi, sec) = (num(0, 4)?, num(5, 2)?, num(8, 2)?, num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut ms = 0;
    if sep(i, b'.') {
        i += 1;
        let digits = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return None;
        }
        ms = num(i, digits.min(3))? * 10u64.pow(3 - digits.min(3) as u32);
        i += digits;
    }
    let offset_min: i64 = match b.get(i) {
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(&c @ (b'+' | b'-')) if i + 6 == b.len() && sep(i + 3, b':') => {
            let m = (num(i + 1, 2)? * 60 + num(i + 4, 2)?) as i64;
            if c == b'+' { m } else { -m }
        }
        _ => return None,
    };
    let days = days_from_civil(y as i64, mo as u32, d as u32);
    let secs = days * 86_400 + (h * 3600 + mi * 60 + sec) as i64 - offset_min * 60;
    u64::try_from(secs).ok().map(|s| UnixMillis(s * 1000 + ms))
}

/// Days since the epoch of a civil (proleptic Gregorian) date.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date `(year, month, day)` of a day number since the epoch.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { yoe + era * 400 + 1 } else { yoe + era * 400 }, m, d)
}

/// Day of week of a day number: 0 = Sunday … 6 = Saturday.
pub fn weekday(days: i64) -> u32 {
    (days + 4).rem_euclid(7) as u32
}

/// Day number of the `n`-th (1-based) Sunday of a month.
fn nth_sunday(year: i64, month: u32, n: u32) -> i64 {
    let first = days_from_civil(year, month, 1);
    let to_sunday = (7 - weekday(first)) % 7;
    first + to_sunday as i64 + 7 * (n as i64 - 1)
}

/// Whether Pacific time is on daylight saving time at local midnight
/// starting the local day `day` (a day number of the Pacific calendar).
///
/// The switches happen at 02:00 local, so midnight on the day daylight
/// saving starts is still standard time, and midnight on the day it ends is
/// still daylight time.
fn pacific_midnight_is_dst(day: i64) -> bool {
    let (year, _, _) = civil_from_days(day);
    let start = nth_sunday(year, 3, 2);
    let end = nth_sunday(year, 11, 1);
    day > start && day <= end
}

/// UTC offset of Pacific time at `t`, in hours behind UTC (7 or 8).
pub fn pacific_offset_hours(t: UnixMillis) -> u64 {
    let utc_day = (t.0 / DAY_MS) as i64;
    let (year, _, _) = civil_from_days(utc_day);
    // DST starts at 02:00 PST = 10:00 UTC on the second Sunday in March and
    // ends at 02:00 PDT = 09:00 UTC on the first Sunday in November.
    let start = nth_sunday(year, 3, 2) as u64 * DAY_MS + 10 * HOUR_MS;
    let end = nth_sunday(year, 11, 1) as u64 * DAY_MS + 9 * HOUR_MS;
    if t.0 >= start && t.0 < end { 7 } else { 8 }
}

/// The first midnight in Pacific time strictly after `now`: when Google's
/// per-day quotas reset.
pub fn next_pacific_midnight(now: UnixMillis) -> UnixMillis {
    let offset = pacific_offset_hours(now) * HOUR_MS;
    // The Pacific calendar day `now` falls in.
    let local_day = (now.0.saturating_sub(offset) / DAY_MS) as i64;
    let next_day = local_day + 1;
    let off = if pacific_midnight_is_dst(next_day) { 7 } else { 8 } * HOUR_MS;
    UnixMillis(next_day as u64 * DAY_MS + off)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(y: i64, m: u32, d: u32, h: u64, min: u64) -> UnixMillis {
        UnixMillis(days_from_civil(y, m, d) as u64 * DAY_MS + h * HOUR_MS + min * MINUTE_MS)
    }

    #[test]
    fn civil_round_trip() {
        for z in [-1000i64, 0, 1, 19_000, 20_419, 60_000] {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(weekday(0), 4); // a Thursday
        assert_eq!(at(2026, 11, 27, 7, 0).to_rfc3339(), "2026-11-27T07:00:00Z");
    }

    #[test]
    fn summer_reset_is_0700_utc() {
        assert_eq!(next_pacific_midnight(at(2026, 7, 15, 12, 0)), at(2026, 7, 16, 7, 0));
        // 06:59 UTC is still the previous Pacific day.
        assert_eq!(next_pacific_midnight(at(2026, 7, 15, 6, 59)), at(2026, 7, 15, 7, 0));
        // Exactly at midnight: the next one is a day later.
        assert_eq!(next_pacific_midnight(at(2026, 7, 15, 7, 0)), at(2026, 7, 16, 7, 0));
    }

    #[test]
    fn winter_reset_is_0800_utc() {
        // 07:30 UTC in winter is still 23:30 the previous Pacific day.
        assert_eq!(next_pacific_midnight(at(2026, 11, 27, 7, 30)), at(2026, 11, 27, 8, 0));
        assert_eq!(next_pacific_midnight(at(2026, 11, 27, 8, 30)), at(2026, 11, 28, 8, 0));
        assert_eq!(next_pacific_midnight(at(2026, 1, 10, 7, 59)), at(2026, 1, 10, 8, 0));
        assert_eq!(next_pacific_midnight(at(2026, 1, 10, 8, 0)), at(2026, 1, 11, 8, 0));
    }

    #[test]
    fn across_the_switches() {
        // 2026: DST starts Sunday 8 March, ends Sunday 1 November.
        assert_eq!(weekday(days_from_civil(2026, 3, 8)), 0);
        assert_eq!(weekday(days_from_civil(2026, 11, 1)), 0);
        // Saturday 7 March evening PST: next midnight (start of 8 March) is still PST.
        assert_eq!(next_pacific_midnight(at(2026, 3, 7, 20, 0)), at(2026, 3, 8, 8, 0));
        // Sunday 8 March after the switch: midnight of 9 March is PDT.
        assert_eq!(next_pacific_midnight(at(2026, 3, 8, 12, 0)), at(2026, 3, 9, 7, 0));
        // Saturday 31 Oct: midnight starting 1 Nov is still PDT.
        assert_eq!(next_pacific_midnight(at(2026, 10, 31, 12, 0)), at(2026, 11, 1, 7, 0));
        // Sunday 1 Nov after the switch: midnight of 2 Nov is PST.
        assert_eq!(next_pacific_midnight(at(2026, 11, 1, 12, 0)), at(2026, 11, 2, 8, 0));
        // 1 Nov 07:30 UTC = 00:30 PDT on 1 Nov; next midnight is start of 2 Nov, PST.
        assert_eq!(next_pacific_midnight(at(2026, 11, 1, 7, 30)), at(2026, 11, 2, 8, 0));
    }

    #[test]
    fn offsets() {
        assert_eq!(pacific_offset_hours(at(2026, 3, 8, 9, 59)), 8);
        assert_eq!(pacific_offset_hours(at(2026, 3, 8, 10, 0)), 7);
        assert_eq!(pacific_offset_hours(at(2026, 11, 1, 8, 59)), 7);
        assert_eq!(pacific_offset_hours(at(2026, 11, 1, 9, 0)), 8);
    }

    #[test]
    fn rfc3339_timestamps_parse_as_google_writes_them() {
        let t = UnixMillis(1_800_000_000_000);
        assert_eq!(parse_rfc3339(&t.to_rfc3339()), Some(t));
        assert_eq!(
            parse_rfc3339("2026-12-03T20:00:00.123456Z"),
            parse_rfc3339("2026-12-03T20:00:00Z").map(|t| t.plus(123))
        );
        assert_eq!(parse_rfc3339("2026-12-03T21:00:00+01:00"), parse_rfc3339("2026-12-03T20:00:00Z"));
        assert_eq!(parse_rfc3339("2026-12-03T19:30:00-00:30"), parse_rfc3339("2026-12-03T20:00:00Z"));
        for bad in [
            "",
            "2026-12-03",
            "2026-13-03T20:00:00Z",
            "2026-12-03T20:00:00",
            "2026-12-03T20:00:00.Z",
            "1969-12-31T23:59:59Z",
            "2026-12-03T20:00:00Zjunk",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }
}
