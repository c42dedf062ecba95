//! The rotation schedule of a secret: RotationRules (AutomaticallyAfterDays, or a `rate()` or
//! `cron()` ScheduleExpression, and a Duration) parsed and checked as RotateSecret checks them,
//! and the rotation windows they open.
//!
//! Pure: every instant comes from the caller, as UTC epoch seconds, so nothing here reads a
//! clock.

use rand::RngExt as _;
use serde::{Deserialize, Serialize};
use time::{Date, Month, OffsetDateTime};

const HOUR: i64 = 3600;
const DAY: i64 = 24 * HOUR;

/// AutomaticallyAfterDays: 1 to 1000 (RotationRulesType).
const MAX_AFTER_DAYS: i64 = 1000;
/// `rate(N days)`: the longest rotation period is 999 days.
const MAX_RATE_DAYS: i64 = 999;
/// `rate(N hours)`: a secret rotates at most every four hours; from 24 hours on, a rate is
/// written in days.
const MIN_RATE_HOURS: i64 = 4;
const MAX_RATE_HOURS: i64 = 23;
/// Duration: whole hours, at least one, and never past the end of a UTC day.
const MAX_DURATION_HOURS: i64 = 24;

/// The Gregorian calendar repeats every 400 years: a cron expression that matches no instant in
/// that span matches none ever.
const CALENDAR_CYCLE_MONTHS: i64 = 400 * 12;

/// RotationRules as RotateSecret takes them and DescribeSecret returns them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RotationRules {
    pub automatically_after_days: Option<i64>,
    pub schedule_expression: Option<String>,
    pub duration: Option<String>,
}

/// Why RotationRules were refused. Each message names the parameter and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RulesError {
    #[error("RotationRules must set either AutomaticallyAfterDays or ScheduleExpression")]
    NoSchedule,
    #[error("RotationRules must set AutomaticallyAfterDays or ScheduleExpression, not both")]
    BothSchedules,
    #[error("AutomaticallyAfterDays must be between 1 and {MAX_AFTER_DAYS}, not {0}")]
    AfterDaysOutOfRange(i64),
    #[error("ScheduleExpression {0:?} must be a rate() or a cron() expression")]
    UnknownExpression(String),
    #[error("ScheduleExpression {expression:?} is not a valid rate expression: {reason}")]
    Rate { expression: String, reason: String },
    #[error("ScheduleExpression {expression:?} is not a valid cron expression: {reason}")]
    Cron { expression: String, reason: String },
    #[error("ScheduleExpression {0:?} matches no date, so it would never rotate the secret")]
    NeverMatches(String),
    #[error("Duration {0:?} must be a whole number of hours from 1h to 24h, such as 3h")]
    Duration(String),
    #[error(
        "Duration {hours}h is too long: a window opening at {start_hour:02}:00 UTC would run into \
         the next UTC day"
    )]
    CrossesMidnight { start_hour: i64, hours: i64 },
    #[error(
        "Duration {hours}h is too long: the window would run into the next rotation window, \
         {gap} hours later"
    )]
    OverlapsNext { hours: i64, gap: i64 },
}

/// A rotation window, in UTC epoch seconds: rotation may start at any instant in [start, end).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub start: i64,
    pub end: i64,
}

impl Window {
    /// A uniformly random instant in [start, end): rotations of many secrets on one schedule
    /// spread over the window.
    pub fn pick(&self, rng: &mut impl rand::Rng) -> i64 {
        // Parsed schedules never make an empty window; one built by hand gets its start.
        if self.end <= self.start {
            return self.start;
        }
        rng.random_range(self.start..self.end)
    }
}

/// Parsed RotationRules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    cadence: Cadence,
    /// The window's length from Duration, in seconds; `None` takes the cadence's default.
    duration: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Cadence {
    /// AutomaticallyAfterDays or `rate(N days)`: windows open at midnight, N days apart.
    Days(i64),
    /// `rate(N hours)`: windows open on the hour, N hours apart.
    Hours(i64),
    Cron(Cron),
}

impl Schedule {
    /// Parses and checks rules as RotateSecret does: exactly one of AutomaticallyAfterDays and
    /// ScheduleExpression, and a Duration that keeps each window inside its UTC day and before
    /// the next window.
    pub fn parse(rules: &RotationRules) -> Result<Schedule, RulesError> {
        let cadence = match (rules.automatically_after_days, &rules.schedule_expression) {
            (Some(_), Some(_)) => return Err(RulesError::BothSchedules),
            (None, None) => return Err(RulesError::NoSchedule),
            (Some(days), None) => {
                if !(1..=MAX_AFTER_DAYS).contains(&days) {
                    return Err(RulesError::AfterDaysOutOfRange(days));
                }
                Cadence::Days(days)
            }
            (None, Some(expression)) => parse_expression(expression)?,
        };
        let duration_hours = rules.duration.as_deref().map(parse_duration).transpose()?;
        if let Some(hours) = duration_hours {
            check_window(&cadence, hours)?;
        }
        Ok(Schedule {
            cadence,
            duration: duration_hours.map(|hours| hours * HOUR),
        })
    }

    /// The first window that opens strictly after `after` (epoch seconds, UTC). `last_rotated`
    /// is given for rate() schedules, which count from the last rotation.
    ///
    /// Rate windows form a series from the last rotation (or from `after` when there was
    /// none): when a window was missed, the next one of the series is returned. `None` only
    /// when the instant lies past the calendar's range.
    pub fn next_window(&self, after: i64, last_rotated: Option<i64>) -> Option<Window> {
        let from = last_rotated.unwrap_or(after);
        let start = match &self.cadence {
            Cadence::Days(days) => next_in_series(floor_day(from)?, days * DAY, after)?,
            // Windows start on the hour, so the series does too.
            Cadence::Hours(hours) => next_in_series(ceil_hour(from)?, hours * HOUR, after)?,
            Cadence::Cron(cron) => cron.next_after(after)?,
        };
        let end = match (self.duration, self.in_hours()) {
            (Some(duration), _) => start.checked_add(duration)?,
            (None, true) => start.checked_add(HOUR)?,
            (None, false) => floor_day(start)?.checked_add(DAY)?,
        };
        Some(Window { start, end })
    }

    /// Whether the schedule repeats within a day, so its default window is one hour rather than
    /// the rest of the day.
    fn in_hours(&self) -> bool {
        match &self.cadence {
            Cadence::Days(_) => false,
            Cadence::Hours(_) => true,
            Cadence::Cron(cron) => cron.hours.count_ones() > 1,
        }
    }
}

fn parse_expression(expression: &str) -> Result<Cadence, RulesError> {
    if let Some(body) = expression
        .strip_prefix("rate(")
        .and_then(|rest| rest.strip_suffix(')'))
    {
        return parse_rate(body).map_err(|reason| RulesError::Rate {
            expression: expression.to_owned(),
            reason,
        });
    }
    if let Some(body) = expression
        .strip_prefix("cron(")
        .and_then(|rest| rest.strip_suffix(')'))
    {
        let cron = Cron::parse(body).map_err(|reason| RulesError::Cron {
            expression: expression.to_owned(),
            reason,
        })?;
        if cron.next_after(0).is_none() {
            return Err(RulesError::NeverMatches(expression.to_owned()));
        }
        return Ok(Cadence::Cron(cron));
    }
    Err(RulesError::UnknownExpression(expression.to_owned()))
}

fn parse_rate(body: &str) -> Result<Cadence, String> {
    let mut parts = body.split_ascii_whitespace();
    let (Some(value), Some(unit), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err("expected rate(VALUE UNIT), such as rate(10 days) or rate(6 hours)".into());
    };
    let value = parse_number(value).ok_or_else(|| format!("{value:?} is not a number"))?;
    match unit {
        "day" | "days" if (1..=MAX_RATE_DAYS).contains(&value) => Ok(Cadence::Days(value)),
        "day" | "days" => Err(format!(
            "a rate in days must be between 1 and {MAX_RATE_DAYS}, not {value}"
        )),
        "hour" | "hours" if (MIN_RATE_HOURS..=MAX_RATE_HOURS).contains(&value) => {
            Ok(Cadence::Hours(value))
        }
        "hour" | "hours" => Err(format!(
            "a rate in hours must be between {MIN_RATE_HOURS} and {MAX_RATE_HOURS}, not {value}"
        )),
        other => Err(format!(
            "the unit must be hour, hours, day or days, not {other:?}"
        )),
    }
}

fn parse_duration(text: &str) -> Result<i64, RulesError> {
    text.strip_suffix('h')
        .and_then(parse_number)
        .filter(|hours| (1..=MAX_DURATION_HOURS).contains(hours))
        .ok_or_else(|| RulesError::Duration(text.to_owned()))
}

/// Decimal digits only: no sign, no spaces.
fn parse_number(text: &str) -> Option<i64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Refuses a Duration that would run a window into the next UTC day or the next window.
fn check_window(cadence: &Cadence, hours: i64) -> Result<(), RulesError> {
    match cadence {
        // Opens at midnight, and a Duration is at most 24 hours.
        Cadence::Days(_) => Ok(()),
        // Where a window opens depends on the last rotation, so only the overlap is knowable.
        Cadence::Hours(gap) if hours > *gap => Err(RulesError::OverlapsNext { hours, gap: *gap }),
        Cadence::Hours(_) => Ok(()),
        Cadence::Cron(cron) => {
            let latest = cron.latest_hour();
            if latest + hours > 24 {
                return Err(RulesError::CrossesMidnight {
                    start_hour: latest,
                    hours,
                });
            }
            match cron.shortest_gap() {
                Some(gap) if hours > gap => Err(RulesError::OverlapsNext { hours, gap }),
                _ => Ok(()),
            }
        }
    }
}

/// The first instant `base + k * step`, k ≥ 1, strictly after `after`.
fn next_in_series(base: i64, step: i64, after: i64) -> Option<i64> {
    let first = base.checked_add(step)?;
    if first > after {
        return Some(first);
    }
    let steps = after.checked_sub(first)? / step + 1;
    first.checked_add(steps.checked_mul(step)?)
}

fn floor_day(instant: i64) -> Option<i64> {
    instant.div_euclid(DAY).checked_mul(DAY)
}

fn ceil_hour(instant: i64) -> Option<i64> {
    instant
        .checked_add(HOUR - 1)?
        .div_euclid(HOUR)
        .checked_mul(HOUR)
}

/// A cron expression in AWS's six-field syntax, as Secrets Manager accepts it: minutes 0, year
/// `*`, and `?` in exactly one of day-of-month and day-of-week.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Cron {
    /// Bit h set: the window may open at h:00.
    hours: u64,
    /// Bit m set: month m (1 = January).
    months: u64,
    days: Days,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Days {
    OfMonth(MonthDays),
    OfWeek(WeekDays),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum MonthDays {
    /// Bit d set: day d of the month.
    Set(u64),
    /// `L`: the month's last day.
    Last,
    /// `LW`: the month's last weekday (Monday to Friday).
    LastWeekday,
    /// `15W`: the weekday nearest that day, within the same month.
    NearestWeekday(u32),
}

/// Weekdays numbered as AWS numbers them: 1 = Sunday to 7 = Saturday.
#[derive(Clone, Debug, PartialEq, Eq)]
enum WeekDays {
    /// Bit w set: every weekday w.
    Set(u64),
    /// `6L`: the month's last weekday w.
    Last(u32),
    /// `6#3`: the month's n-th weekday w.
    Nth { weekday: u32, nth: u32 },
}

struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    /// Names of the values from `min` on, matched without regard to case.
    names: &'static [&'static str],
}

const HOURS: Field = Field {
    name: "hours",
    min: 0,
    max: 23,
    names: &[],
};
const DAY_OF_MONTH: Field = Field {
    name: "day-of-month",
    min: 1,
    max: 31,
    names: &[],
};
const MONTHS: Field = Field {
    name: "month",
    min: 1,
    max: 12,
    names: &[
        "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
    ],
};
const DAY_OF_WEEK: Field = Field {
    name: "day-of-week",
    min: 1,
    max: 7,
    names: &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"],
};

impl Field {
    fn value(&self, text: &str) -> Result<u32, String> {
        let value = match self
            .names
            .iter()
            .position(|name| name.eq_ignore_ascii_case(text))
        {
            Some(index) => self.min + u32::try_from(index).map_err(|e| e.to_string())?,
            None => parse_number(text)
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| format!("{text:?} is not a valid {} value", self.name))?,
        };
        if !(self.min..=self.max).contains(&value) {
            return Err(format!(
                "{} must be between {} and {}, not {value}",
                self.name, self.min, self.max
            ));
        }
        Ok(value)
    }

    /// A list of values, ranges (`a-b`), `*` and steps (`a/s`, `a-b/s`, `*/s`), as a bit set.
    fn set(&self, text: &str) -> Result<u64, String> {
        let mut bits = 0u64;
        for item in text.split(',') {
            let (range, step) = match item.split_once('/') {
                Some((range, step)) => {
                    let step = parse_number(step)
                        .and_then(|s| u32::try_from(s).ok())
                        .filter(|s| (1..=self.max).contains(s))
                        .ok_or_else(|| format!("{step:?} is not a valid step in {}", self.name))?;
                    (range, Some(step))
                }
                None => (item, None),
            };
            let (first, last) = if range == "*" {
                (self.min, self.max)
            } else if let Some((first, last)) = range.split_once('-') {
                (self.value(first)?, self.value(last)?)
            } else {
                let first = self.value(range)?;
                // `a/s` runs from a to the field's end.
                (first, if step.is_some() { self.max } else { first })
            };
            if first > last {
                return Err(format!("the {} range {range:?} runs backwards", self.name));
            }
            let step = step.unwrap_or(1);
            let mut value = first;
            while value <= last {
                bits |= 1 << value;
                value += step;
            }
        }
        Ok(bits)
    }
}

impl Cron {
    fn parse(body: &str) -> Result<Cron, String> {
        let fields: Vec<&str> = body.split_ascii_whitespace().collect();
        let [minutes, hours, day_of_month, month, day_of_week, year] = fields.as_slice() else {
            return Err(format!(
                "expected 6 fields (minutes hours day-of-month month day-of-week year), found {}",
                fields.len()
            ));
        };
        // Windows open on the hour.
        if *minutes != "0" {
            return Err(format!("minutes must be 0, not {minutes:?}"));
        }
        // Secrets Manager refuses schedules more than a year apart, so the year is always `*`.
        if *year != "*" {
            return Err(format!("year must be *, not {year:?}"));
        }
        let days = match (*day_of_month, *day_of_week) {
            ("?", "?") => {
                return Err("only one of day-of-month and day-of-week may be ?".into());
            }
            ("?", day_of_week) => Days::OfWeek(parse_week_days(day_of_week)?),
            (day_of_month, "?") => Days::OfMonth(parse_month_days(day_of_month)?),
            _ => {
                return Err(
                    "one of day-of-month and day-of-week must be ?, since both cannot be set"
                        .into(),
                );
            }
        };
        Ok(Cron {
            hours: HOURS.set(hours)?,
            months: MONTHS.set(month)?,
            days,
        })
    }

    fn latest_hour(&self) -> i64 {
        i64::from(63u32.saturating_sub(self.hours.leading_zeros()))
    }

    /// The fewest hours between two windows of one day, when there are several.
    fn shortest_gap(&self) -> Option<i64> {
        let hours: Vec<i64> = (0..24).filter(|h| self.hours & (1 << h) != 0).collect();
        hours
            .windows(2)
            .filter_map(|pair| match pair {
                [earlier, later] => Some(later - earlier),
                _ => None,
            })
            .min()
    }

    /// The first matching instant strictly after `after`.
    fn next_after(&self, after: i64) -> Option<i64> {
        let from = OffsetDateTime::from_unix_timestamp(after).ok()?;
        let first_month = i64::from(from.year()) * 12 + i64::from(u8::from(from.month())) - 1;
        for offset in 0..=CALENDAR_CYCLE_MONTHS {
            let index = first_month + offset;
            let year = i32::try_from(index.div_euclid(12)).ok()?;
            let number = u8::try_from(index.rem_euclid(12) + 1).ok()?;
            if self.months & (1 << number) == 0 {
                continue;
            }
            let month = Month::try_from(number).ok()?;
            let first_day = Date::from_calendar_date(year, month, 1).ok()?;
            let month_start = first_day.midnight().assume_utc().unix_timestamp();
            // Whole months before `after` cannot match.
            if month_start + i64::from(month.length(year)) * DAY <= after {
                continue;
            }
            let first_weekday = u32::from(first_day.weekday().number_days_from_sunday()) + 1;
            let days = self
                .days
                .in_month(first_weekday, u32::from(month.length(year)));
            for day in 1..=31i64 {
                if days & (1 << day) == 0 {
                    continue;
                }
                for hour in 0..24i64 {
                    if self.hours & (1 << hour) == 0 {
                        continue;
                    }
                    let instant = month_start + (day - 1) * DAY + hour * HOUR;
                    if instant > after {
                        return Some(instant);
                    }
                }
            }
        }
        None
    }
}

fn parse_month_days(text: &str) -> Result<MonthDays, String> {
    let text = text.to_ascii_uppercase();
    match text.as_str() {
        "L" => return Ok(MonthDays::Last),
        "LW" => return Ok(MonthDays::LastWeekday),
        _ => {}
    }
    if let Some(day) = text.strip_suffix('W') {
        return Ok(MonthDays::NearestWeekday(DAY_OF_MONTH.value(day)?));
    }
    Ok(MonthDays::Set(DAY_OF_MONTH.set(&text)?))
}

fn parse_week_days(text: &str) -> Result<WeekDays, String> {
    let text = text.to_ascii_uppercase();
    // `L` alone is the week's last day, Saturday.
    if text == "L" {
        return Ok(WeekDays::Set(1 << DAY_OF_WEEK.max));
    }
    if let Some((weekday, nth)) = text.split_once('#') {
        let weekday = DAY_OF_WEEK.value(weekday)?;
        let nth = parse_number(nth)
            .filter(|n| (1..=5).contains(n))
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| format!("the week in {text:?} must be between 1 and 5"))?;
        return Ok(WeekDays::Nth { weekday, nth });
    }
    if let Some(weekday) = text.strip_suffix('L') {
        return Ok(WeekDays::Last(DAY_OF_WEEK.value(weekday)?));
    }
    Ok(WeekDays::Set(DAY_OF_WEEK.set(&text)?))
}

impl Days {
    /// The days of a month of `length` days whose first day is weekday `first_weekday`
    /// (1 = Sunday), as a bit set.
    fn in_month(&self, first_weekday: u32, length: u32) -> u64 {
        let weekday_of = |day: u32| (first_weekday - 1 + day - 1) % 7 + 1;
        let is_weekend = |day: u32| matches!(weekday_of(day), 1 | 7);
        match self {
            Days::OfMonth(MonthDays::Set(days)) => days & ((1u64 << (length + 1)) - 1),
            Days::OfMonth(MonthDays::Last) => 1 << length,
            Days::OfMonth(MonthDays::LastWeekday) => {
                let day = (1..=length)
                    .rev()
                    .find(|&d| !is_weekend(d))
                    .unwrap_or(length);
                1 << day
            }
            Days::OfMonth(MonthDays::NearestWeekday(day)) => {
                let day = *day;
                if day > length {
                    return 0;
                }
                let nearest = match weekday_of(day) {
                    // Saturday: the Friday before, or the Monday after when that leaves the month.
                    7 if day == 1 => day + 2,
                    7 => day - 1,
                    // Sunday: the Monday after, or the Friday before at the month's end.
                    1 if day == length => day - 2,
                    1 => day + 1,
                    _ => day,
                };
                1 << nearest
            }
            Days::OfWeek(WeekDays::Set(weekdays)) => (1..=length)
                .filter(|&d| weekdays & (1 << weekday_of(d)) != 0)
                .fold(0, |bits, d| bits | 1 << d),
            Days::OfWeek(WeekDays::Last(weekday)) => (1..=length)
                .rev()
                .find(|&d| weekday_of(d) == *weekday)
                .map_or(0, |d| 1 << d),
            Days::OfWeek(WeekDays::Nth { weekday, nth }) => {
                let first = (weekday + 7 - first_weekday) % 7 + 1;
                let day = first + 7 * (nth - 1);
                if day <= length { 1 << day } else { 0 }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use rand::SeedableRng as _;
    use rand::rngs::StdRng;

    use super::*;

    /// A fixed instant: year, month, day, hour (UTC).
    fn at(year: i32, month: u8, day: u8, hour: i64) -> i64 {
        let month = Month::try_from(month).unwrap();
        let date = Date::from_calendar_date(year, month, day).unwrap();
        date.midnight().assume_utc().unix_timestamp() + hour * HOUR
    }

    fn expression(text: &str) -> RotationRules {
        RotationRules {
            automatically_after_days: None,
            schedule_expression: Some(text.to_owned()),
            duration: None,
        }
    }

    fn with_duration(mut rules: RotationRules, duration: &str) -> RotationRules {
        rules.duration = Some(duration.to_owned());
        rules
    }

    fn schedule(text: &str) -> Schedule {
        Schedule::parse(&expression(text)).unwrap()
    }

    fn refusal(rules: RotationRules) -> RulesError {
        Schedule::parse(&rules).unwrap_err()
    }

    /// The start of each of the next `count` windows after `from`.
    fn starts(schedule: &Schedule, from: i64, count: usize) -> Vec<i64> {
        let mut starts = Vec::new();
        let mut after = from;
        for _ in 0..count {
            let window = schedule.next_window(after, None).unwrap();
            starts.push(window.start);
            after = window.start;
        }
        starts
    }

    // Tuesday 1 December 2026, 15:30 UTC.
    const NOW: i64 = 1_796_083_200 + 15 * HOUR + 30 * 60;

    #[test]
    fn rate_in_days_opens_at_midnight_days_after_the_last_rotation() {
        let rate = schedule("rate(10 days)");
        let last = at(2026, 11, 25, 9);
        let window = rate.next_window(NOW, Some(last)).unwrap();
        assert_eq!(window.start, at(2026, 12, 5, 0));
        assert_eq!(window.end, at(2026, 12, 6, 0));
        // Never rotated: counted from `after`.
        let window = rate.next_window(NOW, None).unwrap();
        assert_eq!(window.start, at(2026, 12, 11, 0));
        // A missed window is followed by the next of the series.
        let window = rate.next_window(NOW, Some(at(2026, 11, 1, 12))).unwrap();
        assert_eq!(window.start, at(2026, 12, 11, 0));
        assert_eq!(
            schedule("rate(1 day)")
                .next_window(NOW, None)
                .unwrap()
                .start,
            at(2026, 12, 2, 0)
        );
    }

    #[test]
    fn rate_in_hours_opens_on_the_hour_and_lasts_an_hour() {
        let rate = schedule("rate(6 hours)");
        let window = rate.next_window(NOW, Some(at(2026, 12, 1, 12))).unwrap();
        assert_eq!(
            window,
            Window {
                start: at(2026, 12, 1, 18),
                end: at(2026, 12, 1, 19)
            }
        );
        // 15:30 rounds up to 16:00 before counting.
        let window = rate.next_window(NOW, None).unwrap();
        assert_eq!(window.start, at(2026, 12, 1, 22));
        let rate = Schedule::parse(&with_duration(expression("rate(6 hours)"), "6h")).unwrap();
        let window = rate.next_window(NOW, Some(at(2026, 12, 1, 12))).unwrap();
        assert_eq!(window.end, at(2026, 12, 2, 0));
    }

    #[test]
    fn automatically_after_days_counts_from_the_last_rotation() {
        let rules = RotationRules {
            automatically_after_days: Some(30),
            schedule_expression: None,
            duration: None,
        };
        let days = Schedule::parse(&rules).unwrap();
        let window = days.next_window(NOW, Some(at(2026, 11, 20, 23))).unwrap();
        assert_eq!(
            window,
            Window {
                start: at(2026, 12, 20, 0),
                end: at(2026, 12, 21, 0)
            }
        );
        let days = Schedule::parse(&with_duration(rules, "4h")).unwrap();
        let window = days.next_window(NOW, Some(at(2026, 11, 20, 23))).unwrap();
        assert_eq!(window.end, at(2026, 12, 20, 4));
    }

    #[test]
    fn cron_last_day_of_month() {
        let cron = schedule("cron(0 17 L * ? *)");
        assert_eq!(
            starts(&cron, NOW, 3),
            [
                at(2026, 12, 31, 17),
                at(2027, 1, 31, 17),
                at(2027, 2, 28, 17)
            ]
        );
        let window = cron.next_window(NOW, None).unwrap();
        assert_eq!(window.end, at(2027, 1, 1, 0));
    }

    #[test]
    fn cron_nth_weekday() {
        // Third Friday at 10:00.
        let cron = schedule("cron(0 10 ? * 6#3 *)");
        assert_eq!(
            starts(&cron, NOW, 3),
            [
                at(2026, 12, 18, 10),
                at(2027, 1, 15, 10),
                at(2027, 2, 19, 10)
            ]
        );
        assert_eq!(schedule("cron(0 10 ? * FRI#3 *)"), cron);
        // First Sunday at midnight; a fifth Tuesday only in months that have one.
        assert_eq!(
            starts(&schedule("cron(0 0 ? * SUN#1 *)"), NOW, 1),
            [at(2026, 12, 6, 0)]
        );
        assert_eq!(
            starts(&schedule("cron(0 0 ? * 3#5 *)"), NOW, 2),
            [at(2026, 12, 29, 0), at(2027, 3, 30, 0)]
        );
    }

    #[test]
    fn cron_last_weekday_of_month() {
        // Last Friday; last Sunday by name.
        assert_eq!(
            starts(&schedule("cron(0 8 ? * 6L *)"), NOW, 2),
            [at(2026, 12, 25, 8), at(2027, 1, 29, 8)]
        );
        assert_eq!(
            starts(&schedule("cron(0 8 ? * SUNL *)"), NOW, 1),
            [at(2026, 12, 27, 8)]
        );
    }

    #[test]
    fn cron_nearest_weekday() {
        // 15 Jan 2027 is a Friday, 15 May 2027 a Saturday, 15 Aug 2027 a Sunday.
        let cron = schedule("cron(0 9 15W * ? *)");
        assert_eq!(
            cron.next_window(at(2027, 1, 1, 0), None).unwrap().start,
            at(2027, 1, 15, 9)
        );
        assert_eq!(
            cron.next_window(at(2027, 5, 1, 0), None).unwrap().start,
            at(2027, 5, 14, 9)
        );
        assert_eq!(
            cron.next_window(at(2027, 8, 1, 0), None).unwrap().start,
            at(2027, 8, 16, 9)
        );
        // 1 May 2027 is a Saturday: the Monday after, not April.
        let first = schedule("cron(0 9 1W * ? *)");
        assert_eq!(
            first.next_window(at(2027, 4, 30, 0), None).unwrap().start,
            at(2027, 5, 3, 9)
        );
        // Last weekday: 31 Jan 2027 is a Sunday.
        let last = schedule("cron(0 9 LW * ? *)");
        assert_eq!(starts(&last, at(2027, 1, 1, 0), 1), [at(2027, 1, 29, 9)]);
    }

    #[test]
    fn cron_question_mark_in_either_day_field() {
        // Every day at 10:00; Monday to Friday at 08:00; the 1st and 15th at 16:00.
        assert_eq!(
            starts(&schedule("cron(0 10 * * ? *)"), NOW, 2),
            [at(2026, 12, 2, 10), at(2026, 12, 3, 10)]
        );
        assert_eq!(
            starts(&schedule("cron(0 8 ? * MON-FRI *)"), at(2026, 12, 4, 9), 2),
            [at(2026, 12, 7, 8), at(2026, 12, 8, 8)]
        );
        assert_eq!(
            starts(&schedule("cron(0 16 1,15 * ? *)"), NOW, 3),
            [
                at(2026, 12, 1, 16),
                at(2026, 12, 15, 16),
                at(2027, 1, 1, 16)
            ]
        );
        // Every three months from January, on Sundays.
        assert_eq!(
            starts(&schedule("cron(0 1 ? 1/3 SUN *)"), NOW, 1),
            [at(2027, 1, 3, 1)]
        );
    }

    #[test]
    fn cron_in_hours_resets_each_day_and_lasts_an_hour() {
        let cron = schedule("cron(0 4/12 * * ? *)");
        let window = cron.next_window(NOW, None).unwrap();
        assert_eq!(
            window,
            Window {
                start: at(2026, 12, 1, 16),
                end: at(2026, 12, 1, 17)
            }
        );
        assert_eq!(
            starts(&cron, NOW, 3),
            [at(2026, 12, 1, 16), at(2026, 12, 2, 4), at(2026, 12, 2, 16)]
        );
    }

    #[test]
    fn cron_first_match_is_strictly_after() {
        let cron = schedule("cron(0 10 * * ? *)");
        assert_eq!(
            cron.next_window(at(2026, 12, 1, 10), None).unwrap().start,
            at(2026, 12, 2, 10)
        );
        assert_eq!(
            cron.next_window(at(2026, 12, 1, 10) - 1, None)
                .unwrap()
                .start,
            at(2026, 12, 1, 10)
        );
    }

    #[test]
    fn cron_year_field_must_be_a_star() {
        for year in ["2027", "2026-2030", "?"] {
            let text = format!("cron(0 10 * * ? {year})");
            assert!(
                matches!(refusal(expression(&text)), RulesError::Cron { .. }),
                "{text}"
            );
        }
    }

    #[test]
    fn window_with_duration() {
        let cron = Schedule::parse(&with_duration(expression("cron(0 20 * * ? *)"), "4h")).unwrap();
        let window = cron.next_window(NOW, None).unwrap();
        assert_eq!(
            window,
            Window {
                start: at(2026, 12, 1, 20),
                end: at(2026, 12, 2, 0)
            }
        );
        let cron = schedule("cron(0 20 * * ? *)");
        assert_eq!(cron.next_window(NOW, None).unwrap().end, at(2026, 12, 2, 0));
        let cron = Schedule::parse(&with_duration(expression("cron(0 2 * * ? *)"), "3h")).unwrap();
        assert_eq!(cron.next_window(NOW, None).unwrap().end, at(2026, 12, 2, 5));
    }

    #[test]
    fn refuses_both_or_neither_schedule() {
        let neither = RotationRules {
            automatically_after_days: None,
            schedule_expression: None,
            duration: Some("2h".into()),
        };
        assert_eq!(refusal(neither), RulesError::NoSchedule);
        let both = RotationRules {
            automatically_after_days: Some(5),
            schedule_expression: Some("rate(5 days)".into()),
            duration: None,
        };
        assert_eq!(refusal(both), RulesError::BothSchedules);
    }

    #[test]
    fn refuses_values_out_of_range() {
        for days in [0, -1, 1001] {
            let rules = RotationRules {
                automatically_after_days: Some(days),
                schedule_expression: None,
                duration: None,
            };
            assert_eq!(refusal(rules), RulesError::AfterDaysOutOfRange(days));
        }
        for text in [
            "rate(0 days)",
            "rate(1000 days)",
            "rate(3 hours)",
            "rate(24 hours)",
            "rate(-1 days)",
            "rate(5 weeks)",
            "rate(5)",
            "rate(5 days extra)",
        ] {
            assert!(
                matches!(refusal(expression(text)), RulesError::Rate { .. }),
                "{text}"
            );
        }
        for text in [
            "cron(0 24 * * ? *)",
            "cron(0 10 32 * ? *)",
            "cron(0 10 0 * ? *)",
            "cron(0 10 * 13 ? *)",
            "cron(0 10 ? * 8 *)",
            "cron(0 10 ? * 0 *)",
            "cron(0 10 ? * 6#6 *)",
            "cron(0 10 ? * 6#0 *)",
        ] {
            assert!(
                matches!(refusal(expression(text)), RulesError::Cron { .. }),
                "{text}"
            );
        }
        for duration in ["0h", "25h", "3", "h", "3H", "-3h", "3 h", "1.5h"] {
            let rules = with_duration(expression("rate(1 day)"), duration);
            assert_eq!(
                refusal(rules),
                RulesError::Duration(duration.into()),
                "{duration}"
            );
        }
    }

    #[test]
    fn refuses_a_window_into_the_next_day_or_window() {
        let rules = with_duration(expression("cron(0 20 * * ? *)"), "5h");
        assert_eq!(
            refusal(rules),
            RulesError::CrossesMidnight {
                start_hour: 20,
                hours: 5
            }
        );
        // The latest window of the day decides.
        let rules = with_duration(expression("cron(0 4,22 * * ? *)"), "3h");
        assert_eq!(
            refusal(rules),
            RulesError::CrossesMidnight {
                start_hour: 22,
                hours: 3
            }
        );
        let rules = with_duration(expression("cron(0 2,5 * * ? *)"), "4h");
        assert_eq!(
            refusal(rules),
            RulesError::OverlapsNext { hours: 4, gap: 3 }
        );
        let rules = with_duration(expression("rate(4 hours)"), "5h");
        assert_eq!(
            refusal(rules),
            RulesError::OverlapsNext { hours: 5, gap: 4 }
        );
        // Up to the end of the day is fine.
        assert!(Schedule::parse(&with_duration(expression("cron(0 20 * * ? *)"), "4h")).is_ok());
        assert!(Schedule::parse(&with_duration(expression("rate(2 days)"), "24h")).is_ok());
    }

    #[test]
    fn refuses_malformed_cron() {
        for text in [
            // Five fields, as Unix cron writes them.
            "cron(0 10 * * ?)",
            "cron(0 10 * * 1)",
            "cron(0 10 * * ? * *)",
            "cron()",
            // Minutes other than 0.
            "cron(30 10 * * ? *)",
            "cron(* 10 * * ? *)",
            // `?` in neither or both day fields.
            "cron(0 10 * * * *)",
            "cron(0 10 1 * MON *)",
            "cron(0 10 ? * ? *)",
            // Bad tokens.
            "cron(0 10-8 * * ? *)",
            "cron(0 10 * FOO ? *)",
            "cron(0 10 * * ? *",
            "cron(0 */0 * * ? *)",
            "cron(0 10 ? * MON#x *)",
            "cron(0 10 1,,2 * ? *)",
            "cron(0 10 XW * ? *)",
        ] {
            assert!(
                matches!(
                    refusal(expression(text)),
                    RulesError::Cron { .. } | RulesError::UnknownExpression(_)
                ),
                "{text}"
            );
        }
        for text in [
            "every day",
            "rate 5 days",
            " rate(5 days)",
            "CRON(0 10 * * ? *)",
        ] {
            assert_eq!(
                refusal(expression(text)),
                RulesError::UnknownExpression(text.into())
            );
        }
        assert_eq!(
            refusal(expression("cron(0 10 30 FEB ? *)")),
            RulesError::NeverMatches("cron(0 10 30 FEB ? *)".into())
        );
    }

    #[test]
    fn messages_name_the_problem() {
        let message = refusal(expression("cron(0 10 * *)")).to_string();
        assert!(message.contains("expected 6 fields"), "{message}");
        let message = refusal(expression("cron(15 10 * * ? *)")).to_string();
        assert!(message.contains("minutes must be 0"), "{message}");
        let message = refusal(expression("rate(2 hours)")).to_string();
        assert!(message.contains("between 4 and 23"), "{message}");
    }

    #[test]
    fn rules_serialize_in_camel_case() {
        let rules = with_duration(expression("rate(10 days)"), "2h");
        let json = serde_json::to_value(&rules).unwrap();
        assert_eq!(json["scheduleExpression"], "rate(10 days)");
        assert_eq!(json["duration"], "2h");
        let back: RotationRules = serde_json::from_value(json).unwrap();
        assert_eq!(back, rules);
    }

    #[test]
    fn pick_stays_inside_the_window() {
        let mut rng = StdRng::seed_from_u64(7);
        let window = Window {
            start: at(2026, 12, 1, 20),
            end: at(2026, 12, 2, 0),
        };
        for _ in 0..1000 {
            let instant = window.pick(&mut rng);
            assert!((window.start..window.end).contains(&instant));
        }
        let empty = Window {
            start: NOW,
            end: NOW,
        };
        assert_eq!(empty.pick(&mut rng), NOW);
    }

    const EXPRESSIONS: &[&str] = &[
        "rate(1 day)",
        "rate(17 days)",
        "rate(4 hours)",
        "rate(23 hours)",
        "cron(0 10 * * ? *)",
        "cron(0 4/12 * * ? *)",
        "cron(0 17 L * ? *)",
        "cron(0 9 LW * ? *)",
        "cron(0 9 15W * ? *)",
        "cron(0 10 ? * 6#3 *)",
        "cron(0 8 ? * 6L *)",
        "cron(0 0 29 FEB ? *)",
        "cron(0 1 ? JAN-MAR,OCT SAT,SUN *)",
    ];

    proptest! {
        #[test]
        fn windows_open_after_and_stay_in_order(
            index in 0..EXPRESSIONS.len(),
            // 1970 to about 2100.
            after in 0i64..4_102_444_800,
            since in proptest::option::of(0i64..3 * DAY),
            seed: u64,
        ) {
            let schedule = schedule(EXPRESSIONS[index]);
            let last_rotated = since.map(|since| after - since);
            let window = schedule.next_window(after, last_rotated).unwrap();
            prop_assert!(window.start > after);
            prop_assert!(window.end > window.start);
            prop_assert_eq!(window.start % HOUR, 0);
            // A window never runs into the next UTC day.
            prop_assert!(window.end <= floor_day(window.start).unwrap() + DAY);
            let next = schedule.next_window(window.start, last_rotated).unwrap();
            prop_assert!(next.start >= window.end);
            let picked = window.pick(&mut StdRng::seed_from_u64(seed));
            prop_assert!((window.start..window.end).contains(&picked));
        }

        #[test]
        fn any_instant_is_answered_without_panicking(
            index in 0..EXPRESSIONS.len(),
            after: i64,
            last_rotated: Option<i64>,
        ) {
            let schedule = schedule(EXPRESSIONS[index]);
            if let Some(window) = schedule.next_window(after, last_rotated) {
                prop_assert!(window.start > after);
                prop_assert!(window.end > window.start);
            }
        }

        #[test]
        fn day_rates_open_at_midnight(days in 1i64..=999, last in 0i64..4_102_444_800) {
            let schedule = schedule(&format!("rate({days} days)"));
            let window = schedule.next_window(last, Some(last)).unwrap();
            prop_assert_eq!(window.start, floor_day(last).unwrap() + days * DAY);
            prop_assert_eq!(window.end, window.start + DAY);
        }
    }
}
