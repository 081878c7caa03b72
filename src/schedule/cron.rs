//! A schedule's cron pattern in its time zone. Patterns have 5 fields, or 6 with seconds
//! first; daylight-saving changes do what croner documents (after the Open Cron Pattern
//! Specification and Vixie cron): a fixed time that falls in a skipped hour runs right after
//! the gap, a fixed time in a repeated hour runs once (the first pass), and interval patterns
//! (`*/5`, `*`) skip the gap and run in both passes of a repeated hour.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;

/// A parsed pattern and the zone its fields are read in.
#[derive(Debug, Clone)]
pub struct Pattern {
    cron: Cron,
    tz: Tz,
}

/// Which field of a schedule is wrong, and why.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct PatternError {
    /// `cron` or `timezone`.
    pub field: &'static str,
    pub message: String,
}

impl Pattern {
    /// Parses `cron` (5 or 6 fields) for the IANA zone `timezone` (e.g. `Europe/Paris`).
    pub fn parse(cron: &str, timezone: &str) -> Result<Self, PatternError> {
        let tz: Tz = timezone.parse().map_err(|_| PatternError {
            field: "timezone",
            message: format!("unknown time zone {timezone:?}; use an IANA name such as Europe/Paris or UTC"),
        })?;
        let fields = cron.split_whitespace().count();
        if !(5..=6).contains(&fields) {
            let message = format!("a cron pattern has 5 fields, or 6 with seconds first; this one has {fields}");
            return Err(PatternError { field: "cron", message });
        }
        let parser = CronParser::builder().seconds(Seconds::Optional).year(Year::Disallowed).build();
        let cron = parser
            .parse(cron)
            .map_err(|e| PatternError { field: "cron", message: format!("not a valid cron pattern: {e}") })?;
        Ok(Self { cron, tz })
    }

    /// The first tick strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // The instant in the zone keeps its offset, so a search from a tick in the first pass
        // of a repeated hour goes on to the second pass rather than starting it again.
        let local = t.with_timezone(&self.tz);
        self.cron.find_next_occurrence(&local, false).ok().map(|d| d.with_timezone(&Utc))
    }

    /// The last tick at or before `t`.
    pub fn latest_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = t.with_timezone(&self.tz);
        self.cron.find_previous_occurrence(&local, true).ok().map(|d| d.with_timezone(&Utc))
    }

    /// The next `n` ticks after `t`.
    pub fn upcoming(&self, t: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        let mut out = Vec::with_capacity(n);
        let mut at = t;
        while out.len() < n {
            match self.next_after(at) {
                Some(next) => {
                    out.push(next);
                    at = next;
                }
                None => break,
            }
        }
        out
    }

    /// Ticks strictly after `from` up to and including `to`, counted up to `cap`.
    pub fn count_between(&self, from: DateTime<Utc>, to: DateTime<Utc>, cap: usize) -> usize {
        let mut n = 0;
        let mut at = from;
        while n < cap {
            match self.next_after(at) {
                Some(next) if next <= to => {
                    n += 1;
                    at = next;
                }
                _ => break,
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn paris(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        chrono_tz::Europe::Paris.with_ymd_and_hms(y, mo, d, h, mi, 0).earliest().unwrap().with_timezone(&Utc)
    }

    #[test]
    fn five_and_six_fields_parse_and_others_say_which_field_is_wrong() {
        assert!(Pattern::parse("*/5 * * * *", "Europe/Paris").is_ok());
        assert!(Pattern::parse("30 */5 * * * *", "UTC").is_ok());
        assert_eq!(Pattern::parse("* * * *", "UTC").unwrap_err().field, "cron");
        assert_eq!(Pattern::parse("0 0 0 * * * 2030", "UTC").unwrap_err().field, "cron");
        assert_eq!(Pattern::parse("61 * * * *", "UTC").unwrap_err().field, "cron");
        assert_eq!(Pattern::parse("* * * * *", "Mars/Olympus").unwrap_err().field, "timezone");
    }

    #[test]
    fn a_fixed_time_in_the_skipped_spring_hour_runs_right_after_the_gap() {
        // Paris, 2026-03-29: 02:00 becomes 03:00, so 02:30 does not exist that day.
        let p = Pattern::parse("30 2 * * *", "Europe/Paris").unwrap();
        let next = p.next_after(paris(2026, 3, 29, 1, 0)).unwrap();
        assert_eq!(next, paris(2026, 3, 29, 3, 0));
        assert_eq!(p.next_after(next).unwrap(), paris(2026, 3, 30, 2, 30));
    }

    #[test]
    fn a_fixed_time_in_the_repeated_autumn_hour_runs_once() {
        // Paris, 2026-10-25: 03:00 goes back to 02:00, so 02:30 happens twice.
        let p = Pattern::parse("30 2 * * *", "Europe/Paris").unwrap();
        let first = p.next_after(paris(2026, 10, 25, 0, 0)).unwrap();
        assert_eq!(first, Utc.with_ymd_and_hms(2026, 10, 25, 0, 30, 0).unwrap(), "02:30 CEST");
        assert_eq!(p.next_after(first).unwrap(), paris(2026, 10, 26, 2, 30), "not again at 02:30 CET");
    }

    #[test]
    fn an_interval_pattern_runs_in_both_passes_of_the_repeated_hour() {
        let p = Pattern::parse("*/30 * * * *", "Europe/Paris").unwrap();
        let ticks = p.upcoming(Utc.with_ymd_and_hms(2026, 10, 24, 23, 50, 0).unwrap(), 6);
        let utc: Vec<String> = ticks.iter().map(|t| t.format("%H:%M").to_string()).collect();
        // 02:00 and 02:30 CEST (00:00, 00:30 UTC), then 02:00 and 02:30 CET (01:00, 01:30 UTC).
        assert_eq!(utc, ["00:00", "00:30", "01:00", "01:30", "02:00", "02:30"]);
    }
}
