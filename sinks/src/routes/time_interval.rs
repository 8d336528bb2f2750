//! Named time intervals (Alertmanager's `time_intervals`), evaluated in an IANA time zone.
//!
//! ```yaml
//! time_intervals:
//!   - name: business-hours
//!     time_zone: Europe/Paris        # default UTC
//!     intervals:                     # active when any interval holds
//!       - weekdays: ["monday:friday"] # every listed field must hold; an absent one always does
//!         times: [{start_time: "09:00", end_time: "18:00"}]   # [start, end), 24:00 allowed
//!         days_of_month: ["1:7", "-1"]   # negatives count from the month's end (-1 = last day)
//!         months: ["january:march", "12"]
//!         years: ["2026:2027"]
//! ```
//! Times are wall-clock times in the zone, so `09:00` follows daylight saving time.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, NaiveDate, Timelike, Utc};
use chrono_tz::Tz;
use serde::Deserialize;

use super::de::parse_str;

/// A named set of intervals in one time zone.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeInterval {
    /// The name routes refer to in `mute_time_intervals` / `active_time_intervals`.
    pub name: String,
    /// IANA time zone the intervals are read in (default `UTC`).
    #[serde(default)]
    pub time_zone: TimeZone,
    /// Active when any of these holds (an empty list is never active).
    #[serde(default)]
    pub intervals: Vec<Interval>,
}

impl TimeInterval {
    /// Whether the interval is active at `now`.
    pub fn contains(&self, now: DateTime<Utc>) -> bool {
        let local = now.with_timezone(&self.time_zone.0);
        let local = local.naive_local();
        self.intervals.iter().any(|i| i.contains(local))
    }
}

/// An IANA time zone name (`Europe/Paris`, `UTC`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeZone(pub Tz);

impl Default for TimeZone {
    fn default() -> Self {
        TimeZone(Tz::UTC)
    }
}

impl<'de> Deserialize<'de> for TimeZone {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_str(d, "an IANA time zone name", |name| {
            Tz::from_str(name).map(TimeZone).map_err(|_| {
                format!("unknown time zone {name:?} (an IANA name such as Europe/Paris or UTC)")
            })
        })
    }
}

/// One interval: every field given must hold.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Interval {
    /// Times of day, `[start_time, end_time)`, `HH:MM`.
    #[serde(default)]
    pub times: Vec<TimeRange>,
    /// Days of the week or ranges of them: `monday`, `monday:friday`.
    #[serde(default)]
    pub weekdays: Vec<Range<Weekday>>,
    /// Days of the month, 1–31 or −31–−1 (from the end): `1`, `1:15`, `-3:-1`.
    #[serde(default)]
    pub days_of_month: Vec<Range<DayOfMonth>>,
    /// Months by name or number: `january:march`, `12`.
    #[serde(default)]
    pub months: Vec<Range<Month>>,
    /// Years: `2026`, `2026:2027`.
    #[serde(default)]
    pub years: Vec<Range<Year>>,
}

impl Interval {
    fn contains(&self, t: chrono::NaiveDateTime) -> bool {
        let minute = t.hour() * 60 + t.minute();
        let date = t.date();
        let weekday = t.weekday().num_days_from_monday() as i32;
        let (day, last_day) = (date.day() as i32, days_in_month(date));
        let (month, year) = (date.month() as i32, date.year());
        let resolve = |d: i32| if d < 0 { last_day + 1 + d } else { d };
        (self.times.is_empty()
            || self
                .times
                .iter()
                .any(|r| r.start <= minute && minute < r.end))
            && any_range(&self.weekdays, |s, e| (s..=e).contains(&weekday))
            && any_range(&self.days_of_month, |s, e| {
                (resolve(s)..=resolve(e)).contains(&day)
            })
            && any_range(&self.months, |s, e| (s..=e).contains(&month))
            && any_range(&self.years, |s, e| (s..=e).contains(&year))
    }
}

/// True when `ranges` is empty (the field is not constrained) or one range holds.
fn any_range<U>(ranges: &[Range<U>], holds: impl Fn(i32, i32) -> bool) -> bool {
    ranges.is_empty() || ranges.iter().any(|r| holds(r.start, r.end))
}

fn days_in_month(date: NaiveDate) -> i32 {
    let (y, m) = (date.year(), date.month());
    let next = if m == 12 {
        NaiveDate::from_ymd_opt(y + 1, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(y, m + 1, 1)
    };
    next.map_or(31, |n| n.pred_opt().map_or(31, |d| d.day() as i32))
}

/// `start_time`–`end_time` in minutes of the day.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawTimeRange")]
pub struct TimeRange {
    pub start: u32,
    pub end: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTimeRange {
    /// `HH:MM`, inclusive.
    start_time: String,
    /// `HH:MM`, exclusive; `24:00` is the end of the day.
    end_time: String,
}

impl TryFrom<RawTimeRange> for TimeRange {
    type Error = String;

    fn try_from(raw: RawTimeRange) -> Result<Self, String> {
        let start = parse_hhmm(&raw.start_time)?;
        let end = parse_hhmm(&raw.end_time)?;
        if start >= end {
            return Err(format!(
                "start_time {} is not before end_time {} (split a range that crosses midnight \
                 in two)",
                raw.start_time, raw.end_time
            ));
        }
        Ok(TimeRange { start, end })
    }
}

fn parse_hhmm(s: &str) -> Result<u32, String> {
    let bad = || format!("invalid time {s:?} (HH:MM, 00:00 to 24:00)");
    let (h, m) = s.split_once(':').ok_or_else(bad)?;
    let two_digits = |v: &str| v.len() == 2 && v.bytes().all(|b| b.is_ascii_digit());
    if !two_digits(h) || !two_digits(m) {
        return Err(bad());
    }
    let (h, m): (u32, u32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if m >= 60 || h > 24 || (h == 24 && m != 0) {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

/// What a range counts: parses one value and names the unit in errors.
pub trait Unit {
    const WHAT: &'static str;
    fn parse(s: &str) -> Option<i32>;
    /// Checks a parsed range (`start <= end`, allowed signs).
    fn check(start: i32, end: i32) -> bool {
        start <= end
    }
}

/// An inclusive range `start:end` (or one value) of a [`Unit`], parsed from a string.
#[derive(Debug, PartialEq, Eq)]
pub struct Range<U> {
    pub start: i32,
    pub end: i32,
    unit: std::marker::PhantomData<U>,
}

impl<U> Clone for Range<U> {
    fn clone(&self) -> Self {
        Range {
            start: self.start,
            end: self.end,
            unit: std::marker::PhantomData,
        }
    }
}

impl<U: Unit> FromStr for Range<U> {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let value = |v: &str| {
            U::parse(v.trim()).ok_or_else(|| format!("invalid {} {v:?} in {s:?}", U::WHAT))
        };
        let (start, end) = match s.split_once(':') {
            Some((a, b)) => (value(a)?, value(b)?),
            None => (value(s)?, value(s)?),
        };
        if !U::check(start, end) {
            return Err(format!("invalid {} range {s:?}: start after end", U::WHAT));
        }
        Ok(Range {
            start,
            end,
            unit: std::marker::PhantomData,
        })
    }
}

impl<'de, U: Unit> Deserialize<'de> for Range<U> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_str(d, "a value or a range `start:end`", str::parse)
    }
}

impl<U> fmt::Display for Range<U> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.start, self.end)
    }
}

/// Monday = 0 … Sunday = 6.
#[derive(Debug, PartialEq, Eq)]
pub struct Weekday;
/// 1 … 31, or −31 … −1 counted from the end of the month.
#[derive(Debug, PartialEq, Eq)]
pub struct DayOfMonth;
/// 1 … 12.
#[derive(Debug, PartialEq, Eq)]
pub struct Month;
#[derive(Debug, PartialEq, Eq)]
pub struct Year;

const WEEKDAYS: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];
const MONTHS: [&str; 12] = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];

impl Unit for Weekday {
    const WHAT: &'static str = "weekday";
    fn parse(s: &str) -> Option<i32> {
        let s = s.to_ascii_lowercase();
        WEEKDAYS.iter().position(|d| *d == s).map(|i| i as i32)
    }
}

impl Unit for DayOfMonth {
    const WHAT: &'static str = "day of month";
    fn parse(s: &str) -> Option<i32> {
        s.parse::<i32>()
            .ok()
            .filter(|d| (1..=31).contains(d) || (-31..=-1).contains(d))
    }
    /// Same-sign ranges must be ordered; a mixed range (`1:-1`) is resolved per month.
    fn check(start: i32, end: i32) -> bool {
        (start > 0) != (end > 0) || start <= end
    }
}

impl Unit for Month {
    const WHAT: &'static str = "month";
    fn parse(s: &str) -> Option<i32> {
        let lower = s.to_ascii_lowercase();
        MONTHS
            .iter()
            .position(|m| *m == lower)
            .map(|i| i as i32 + 1)
            .or_else(|| s.parse::<i32>().ok().filter(|m| (1..=12).contains(m)))
    }
}

impl Unit for Year {
    const WHAT: &'static str = "year";
    fn parse(s: &str) -> Option<i32> {
        s.parse::<i32>().ok().filter(|y| (1..=9999).contains(y))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(rfc3339: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(rfc3339).unwrap().to_utc()
    }

    fn interval(yaml: &str) -> TimeInterval {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    fn business_hours() -> TimeInterval {
        interval(
            "name: bh\ntime_zone: Europe/Paris\nintervals:\n  - weekdays: [\"monday:friday\"]\n    times: [{start_time: \"09:00\", end_time: \"18:00\"}]\n",
        )
    }

    #[test]
    fn business_hours_in_paris_follow_daylight_saving_time() {
        let bh = business_hours();
        // Winter (UTC+1): 09:00 Paris is 08:00 UTC.
        assert!(!bh.contains(at("2026-01-14T07:59:00Z")));
        assert!(bh.contains(at("2026-01-14T08:00:00Z")));
        assert!(bh.contains(at("2026-01-14T16:59:00Z")));
        assert!(!bh.contains(at("2026-01-14T17:00:00Z")));
        // Summer (UTC+2): 09:00 Paris is 07:00 UTC.
        assert!(bh.contains(at("2026-07-15T07:00:00Z")));
        assert!(!bh.contains(at("2026-07-15T16:00:00Z")));
        // DST starts on Sunday 2026-03-29; Monday 30th 08:30 UTC is 10:30 Paris.
        assert!(bh.contains(at("2026-03-30T07:00:00Z")));
        assert!(!bh.contains(at("2026-03-27T07:30:00Z"))); // Friday, still UTC+1: 08:30
        // Weekend.
        assert!(!bh.contains(at("2026-01-17T10:00:00Z")));
    }

    #[test]
    fn weekday_boundaries_are_local_not_utc() {
        // Saturday 00:30 in Tokyo is Friday 15:30 UTC.
        let weekend = interval(
            "name: w\ntime_zone: Asia/Tokyo\nintervals: [{weekdays: [\"saturday:sunday\"]}]\n",
        );
        assert!(weekend.contains(at("2026-01-16T15:30:00Z")));
        assert!(!weekend.contains(at("2026-01-16T14:30:00Z")));
        let utc = interval("name: w\nintervals: [{weekdays: [saturday, sunday]}]\n");
        assert!(!utc.contains(at("2026-01-16T15:30:00Z")));
    }

    #[test]
    fn days_of_month_count_back_from_the_end() {
        let last = interval("name: l\nintervals: [{days_of_month: [\"-1\"]}]\n");
        assert!(last.contains(at("2026-02-28T12:00:00Z")));
        assert!(last.contains(at("2028-02-29T12:00:00Z"))); // leap year
        assert!(!last.contains(at("2028-02-28T12:00:00Z")));
        assert!(last.contains(at("2026-04-30T12:00:00Z")));
        let last3 = interval("name: l\nintervals: [{days_of_month: [\"-3:-1\"]}]\n");
        assert!(last3.contains(at("2026-01-29T00:00:00Z")));
        assert!(!last3.contains(at("2026-01-28T23:59:00Z")));
        let first_week_and_all = interval("name: f\nintervals: [{days_of_month: [\"1:7\"]}]\n");
        assert!(first_week_and_all.contains(at("2026-01-07T23:00:00Z")));
        assert!(!first_week_and_all.contains(at("2026-01-08T00:00:00Z")));
        let mixed = interval("name: m\nintervals: [{days_of_month: [\"15:-1\"]}]\n");
        assert!(mixed.contains(at("2026-02-28T00:00:00Z")));
        assert!(!mixed.contains(at("2026-02-14T00:00:00Z")));
        let day31 = interval("name: d\nintervals: [{days_of_month: [\"31\"]}]\n");
        assert!(!day31.contains(at("2026-02-28T00:00:00Z")));
    }

    #[test]
    fn months_years_and_times_combine() {
        let q1 = interval(
            "name: q\nintervals:\n  - months: [\"january:march\"]\n    years: [\"2026\"]\n  - months: [\"12\"]\n    times: [{start_time: \"22:00\", end_time: \"24:00\"}]\n",
        );
        assert!(q1.contains(at("2026-03-31T23:00:00Z")));
        assert!(!q1.contains(at("2027-03-01T00:00:00Z")));
        assert!(q1.contains(at("2027-12-05T23:59:00Z")));
        assert!(!q1.contains(at("2027-12-05T21:59:00Z")));
        let empty = interval("name: e\n");
        assert!(!empty.contains(at("2026-01-01T00:00:00Z")));
        let always = interval("name: a\nintervals: [{}]\n");
        assert!(always.contains(at("2026-01-01T00:00:00Z")));
    }

    #[test]
    fn bad_values_are_refused_with_a_reason() {
        let cases = [
            ("time_zone: Mars/Olympus", "unknown time zone"),
            (
                "intervals: [{weekdays: [funday]}]",
                "invalid weekday \"funday\"",
            ),
            (
                "intervals: [{weekdays: [\"friday:monday\"]}]",
                "start after end",
            ),
            (
                "intervals: [{days_of_month: [\"0\"]}]",
                "invalid day of month",
            ),
            (
                "intervals: [{days_of_month: [\"-1:-3\"]}]",
                "start after end",
            ),
            ("intervals: [{months: [\"13\"]}]", "invalid month"),
            (
                "intervals: [{times: [{start_time: \"18:00\", end_time: \"09:00\"}]}]",
                "not before",
            ),
            (
                "intervals: [{times: [{start_time: \"9h\", end_time: \"10:00\"}]}]",
                "invalid time",
            ),
            (
                "intervals: [{times: [{start_time: \"24:01\", end_time: \"24:00\"}]}]",
                "invalid time",
            ),
            ("intervals: [{hours: []}]", "unknown field `hours`"),
        ];
        for (yaml, want) in cases {
            let err = serde_yaml_ng::from_str::<TimeInterval>(&format!("name: x\n{yaml}\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{yaml}: {err}");
        }
    }
}
