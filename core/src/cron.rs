//! Five-field cron schedules (`minute hour day-of-month month day-of-week`)
//! in UTC, as Cloudflare's cron triggers and the seed's `0 7 * * *` use.

use crate::wire::time::{DAY_MS, HOUR_MS, MINUTE_MS, UnixMillis, civil_from_days, weekday};
use std::fmt;
use std::str::FromStr;

/// A parsed cron schedule.
#[derive(Clone, PartialEq, Eq)]
pub struct Cron {
    source: String,
    minutes: u64,
    hours: u32,
    days: u32,
    months: u16,
    weekdays: u8,
    days_restricted: bool,
    weekdays_restricted: bool,
}

/// Why a cron expression was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid cron expression {expr:?}: {why}")]
pub struct CronError {
    expr: String,
    why: String,
}

impl fmt::Debug for Cron {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cron({:?})", self.source)
    }
}

impl fmt::Display for Cron {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

fn parse_field(field: &str, min: u32, max: u32) -> Result<(u64, bool), String> {
    let mut bits = 0u64;
    let restricted = field != "*";
    for part in field.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let step: u32 = s.parse().map_err(|_| format!("bad step {s:?}"))?;
                if step == 0 {
                    return Err("step 0".into());
                }
                (r, step)
            }
            None => (part, 1),
        };
        let (lo, hi) = if range == "*" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            let a: u32 = a.parse().map_err(|_| format!("bad number {a:?}"))?;
            let b: u32 = b.parse().map_err(|_| format!("bad number {b:?}"))?;
            (a, b)
        } else {
            let a: u32 = range.parse().map_err(|_| format!("bad number {range:?}"))?;
            (a, if step > 1 { max } else { a })
        };
        if lo < min || hi > max || lo > hi {
            return Err(format!("{part:?} is outside {min}-{max}"));
        }
        let mut v = lo;
        while v <= hi {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok((bits, restricted))
}

impl FromStr for Cron {
    type Err = CronError;

    fn from_str(expr: &str) -> Result<Self, CronError> {
        let err = |why: String| CronError { expr: expr.to_owned(), why };
        let fields: Vec<&str> = expr.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(err(format!("expected 5 fields, found {}", fields.len())));
        }
        let (minutes, _) = parse_field(fields[0], 0, 59).map_err(err)?;
        let (hours, _) = parse_field(fields[1], 0, 23).map_err(err)?;
        let (days, days_restricted) = parse_field(fields[2], 1, 31).map_err(err)?;
        let (months, _) = parse_field(fields[3], 1, 12).map_err(err)?;
        let (mut weekdays, weekdays_restricted) = parse_field(fields[4], 0, 7).map_err(err)?;
        if weekdays & (1 << 7) != 0 {
            weekdays |= 1; // 7 is Sunday too
        }
        Ok(Self {
            source: fields.join(" "),
            minutes,
            hours: hours as u32,
            days: days as u32,
            months: months as u16,
            weekdays: (weekdays & 0x7f) as u8,
            days_restricted,
            weekdays_restricted,
        })
    }
}

impl Cron {
    fn day_matches(&self, day: i64) -> bool {
        let (_, m, d) = civil_from_days(day);
        if self.months & (1 << m) == 0 {
            return false;
        }
        let dom = self.days & (1 << d) != 0;
        let dow = self.weekdays & (1 << weekday(day)) != 0;
        match (self.days_restricted, self.weekdays_restricted) {
            (true, true) => dom || dow,
            (true, false) => dom,
            (false, true) => dow,
            (false, false) => true,
        }
    }

    /// The first time this schedule fires strictly after `now`, or `None`
    /// if it never fires within the next eight years (`0 0 31 2 *`).
    pub fn next_after(&self, now: UnixMillis) -> Option<UnixMillis> {
        let first_day = (now.0 / DAY_MS) as i64;
        for day in first_day..first_day + 366 * 8 {
            if !self.day_matches(day) {
                continue;
            }
            let base = day as u64 * DAY_MS;
            for h in 0..24u64 {
                if self.hours & (1 << h) == 0 {
                    continue;
                }
                for m in 0..60u64 {
                    if self.minutes & (1 << m) == 0 {
                        continue;
                    }
                    let t = base + h * HOUR_MS + m * MINUTE_MS;
                    if t > now.0 {
                        return Some(UnixMillis(t));
                    }
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::time::days_from_civil;

    fn at(y: i64, m: u32, d: u32, h: u64, min: u64) -> UnixMillis {
        UnixMillis(days_from_civil(y, m, d) as u64 * DAY_MS + h * HOUR_MS + min * MINUTE_MS)
    }

    #[test]
    fn daily_at_seven() {
        let c: Cron = "0 7 * * *".parse().expect("valid");
        assert_eq!(c.next_after(at(2026, 11, 27, 6, 59)), Some(at(2026, 11, 27, 7, 0)));
        assert_eq!(c.next_after(at(2026, 11, 27, 7, 0)), Some(at(2026, 11, 28, 7, 0)));
        assert_eq!(c.next_after(at(2026, 12, 31, 8, 0)), Some(at(2027, 1, 1, 7, 0)));
    }

    #[test]
    fn steps_lists_ranges_and_weekdays() {
        let c: Cron = "*/15 8-9 * * 1-5".parse().expect("valid");
        // 2026-11-28 is a Saturday: the next fire is Monday 30th 08:00.
        assert_eq!(c.next_after(at(2026, 11, 27, 9, 50)), Some(at(2026, 11, 30, 8, 0)));
        assert_eq!(c.next_after(at(2026, 11, 27, 8, 1)), Some(at(2026, 11, 27, 8, 15)));
        let c: Cron = "30 0 1,15 * 7".parse().expect("valid");
        // Day-of-month OR day-of-week when both are restricted: Sunday 29th.
        assert_eq!(c.next_after(at(2026, 11, 27, 0, 0)), Some(at(2026, 11, 29, 0, 30)));
    }

    #[test]
    fn rejects_nonsense() {
        for bad in ["", "0 7 * *", "60 * * * *", "* 24 * * *", "*/0 * * * *", "a * * * *", "5-1 * * * *"] {
            assert!(bad.parse::<Cron>().is_err(), "{bad:?}");
        }
        let never: Cron = "0 0 31 2 *".parse().expect("valid");
        assert_eq!(never.next_after(at(2026, 1, 1, 0, 0)), None);
    }
}
