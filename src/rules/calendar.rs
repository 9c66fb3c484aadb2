//! Business-hours calendars for rules: a named time zone, a weekly schedule of opening ranges
//! and holidays. Parsing is strict so that a typo is an error at compile time, not a ticket
//! routed as if the office were closed.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Datelike, NaiveDate, Timelike, Utc, Weekday};
use chrono_tz::Tz;
use serde::Deserialize;

/// A calendar as written in the rules file (`[calendars.<name>]`).
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawCalendar {
    /// IANA time zone, e.g. `Europe/Moscow`.
    pub timezone: String,
    /// Opening hours per weekday (`mon = "09:00-18:00"`, several ranges comma-separated);
    /// a day not listed is closed.
    #[serde(default)]
    pub weekly: BTreeMap<String, String>,
    /// Closed dates, `YYYY-MM-DD`.
    #[serde(default)]
    pub holidays: Vec<String>,
}

/// A validated calendar.
#[derive(Debug, Clone, PartialEq)]
pub struct Calendar {
    tz: Tz,
    /// Opening ranges in minutes since midnight `[open, close)`, indexed Monday = 0.
    week: [Vec<(u32, u32)>; 7],
    holidays: BTreeSet<NaiveDate>,
}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// Parses `HH:MM` (00:00 to 24:00) into minutes.
fn minutes(s: &str) -> Option<u32> {
    let (h, m) = s.trim().split_once(':')?;
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    let total = h * 60 + m;
    (m < 60 && total <= 24 * 60).then_some(total)
}

impl Calendar {
    /// Validates a raw calendar; each problem becomes one message (`field: what is wrong`).
    pub fn parse(raw: &RawCalendar) -> Result<Self, Vec<String>> {
        let mut errors = Vec::new();
        let tz: Option<Tz> = match raw.timezone.parse() {
            Ok(tz) => Some(tz),
            Err(_) => {
                errors.push(format!(
                    "timezone: unknown time zone \"{}\"; use an IANA name such as Europe/Moscow or UTC",
                    raw.timezone
                ));
                None
            }
        };
        let mut week: [Vec<(u32, u32)>; 7] = Default::default();
        for (day, ranges) in &raw.weekly {
            let Some(i) = DAYS.iter().position(|d| d == &day.to_lowercase()) else {
                errors.push(format!(
                    "weekly.{day}: unknown day; valid: {}",
                    DAYS.join(", ")
                ));
                continue;
            };
            for range in ranges.split(',').filter(|r| !r.trim().is_empty()) {
                let parsed = range
                    .split_once('-')
                    .and_then(|(a, b)| Some((minutes(a)?, minutes(b)?)));
                match parsed {
                    Some((open, close)) if open < close => week[i].push((open, close)),
                    _ => errors.push(format!(
                        "weekly.{day}: invalid range \"{}\"; write HH:MM-HH:MM with opening before closing, e.g. 09:00-18:00",
                        range.trim()
                    )),
                }
            }
        }
        let mut holidays = BTreeSet::new();
        for h in &raw.holidays {
            match NaiveDate::parse_from_str(h.trim(), "%Y-%m-%d") {
                Ok(d) => {
                    holidays.insert(d);
                }
                Err(_) => errors.push(format!("holidays: invalid date \"{h}\"; write YYYY-MM-DD")),
            }
        }
        match tz {
            Some(tz) if errors.is_empty() => Ok(Self { tz, week, holidays }),
            _ => Err(errors),
        }
    }

    /// Whether the office is open at `at`.
    pub fn is_open(&self, at: DateTime<Utc>) -> bool {
        let local = at.with_timezone(&self.tz);
        if self.holidays.contains(&local.date_naive()) {
            return false;
        }
        let day = local.weekday().num_days_from_monday() as usize;
        let minute = local.hour() * 60 + local.minute();
        self.week[day]
            .iter()
            .any(|&(open, close)| minute >= open && minute < close)
    }

    /// The local time of `at` in this calendar, for traces (`Sat 2026-12-05 10:30 Europe/Moscow`).
    pub fn describe(&self, at: DateTime<Utc>) -> String {
        let local = at.with_timezone(&self.tz);
        let day = match local.weekday() {
            Weekday::Mon => "Mon",
            Weekday::Tue => "Tue",
            Weekday::Wed => "Wed",
            Weekday::Thu => "Thu",
            Weekday::Fri => "Fri",
            Weekday::Sat => "Sat",
            Weekday::Sun => "Sun",
        };
        let holiday = if self.holidays.contains(&local.date_naive()) {
            ", a holiday"
        } else {
            ""
        };
        format!(
            "{day} {} {}{holiday}",
            local.format("%Y-%m-%d %H:%M"),
            self.tz.name()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cal() -> Calendar {
        Calendar::parse(&RawCalendar {
            timezone: "Europe/Moscow".into(),
            weekly: [
                ("mon", "09:00-18:00"),
                ("fri", "09:00-13:00, 14:00-17:00"),
                ("sat", "00:00-24:00"),
            ]
            .iter()
            .map(|(d, r)| (d.to_string(), r.to_string()))
            .collect(),
            holidays: vec!["2026-12-07".into()],
        })
        .unwrap()
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    #[test]
    fn opening_hours_follow_the_time_zone_schedule_and_holidays() {
        let c = cal();
        // Monday 2026-11-30: 09:00 Moscow is 06:00 UTC.
        assert!(!c.is_open(utc("2026-11-30T05:59:00Z")));
        assert!(c.is_open(utc("2026-11-30T06:00:00Z")));
        assert!(c.is_open(utc("2026-11-30T14:59:00Z")));
        assert!(
            !c.is_open(utc("2026-11-30T15:00:00Z")),
            "closing is exclusive"
        );
        // Tuesday is not listed: closed.
        assert!(!c.is_open(utc("2026-12-01T09:00:00Z")));
        // Friday lunch break.
        assert!(c.is_open(utc("2026-12-04T09:30:00Z")));
        assert!(!c.is_open(utc("2026-12-04T10:30:00Z")));
        // Saturday all day, local midnight included.
        assert!(c.is_open(utc("2026-12-04T21:00:00Z")));
        // Monday 2026-12-07 is a holiday.
        assert!(!c.is_open(utc("2026-12-07T09:00:00Z")));
        assert_eq!(
            c.describe(utc("2026-12-07T09:00:00Z")),
            "Mon 2026-12-07 12:00 Europe/Moscow, a holiday"
        );
    }

    #[test]
    fn every_mistake_is_reported() {
        let raw = RawCalendar {
            timezone: "Mars/Olympus".into(),
            weekly: [
                ("moon", "09:00-18:00"),
                ("tue", "18:00-09:00"),
                ("wed", "9-5"),
            ]
            .iter()
            .map(|(d, r)| (d.to_string(), r.to_string()))
            .collect(),
            holidays: vec!["31.12.2026".into()],
        };
        assert_eq!(
            Calendar::parse(&raw).unwrap_err(),
            vec![
                "timezone: unknown time zone \"Mars/Olympus\"; use an IANA name such as Europe/Moscow or UTC",
                "weekly.moon: unknown day; valid: mon, tue, wed, thu, fri, sat, sun",
                "weekly.tue: invalid range \"18:00-09:00\"; write HH:MM-HH:MM with opening before closing, e.g. 09:00-18:00",
                "weekly.wed: invalid range \"9-5\"; write HH:MM-HH:MM with opening before closing, e.g. 09:00-18:00",
                "holidays: invalid date \"31.12.2026\"; write YYYY-MM-DD",
            ]
        );
    }
}
