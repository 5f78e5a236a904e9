//! Fixed quota windows in UTC: minute, hour, day and calendar month.
//!
//! A window is identified by an index (minutes, hours or days since the epoch; months since
//! January 1970), so a counter can tell whether it belongs to the current window without a
//! clock of its own. Time is a parameter (seconds since the epoch).

use serde::Deserialize;

/// A fixed window in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Window {
    Minute,
    Hour,
    Day,
    Month,
}

impl Window {
    /// Index of the window containing `now_s`.
    pub fn index(self, now_s: u64) -> u64 {
        match self {
            Window::Minute => now_s / 60,
            Window::Hour => now_s / 3_600,
            Window::Day => now_s / 86_400,
            Window::Month => {
                let (year, month, _) = civil_from_days((now_s / 86_400) as i64);
                ((year - 1970) * 12 + i64::from(month) - 1).max(0) as u64
            }
        }
    }

    /// Seconds since the epoch at which window `index` ends (the next one starts).
    pub fn end(self, index: u64) -> u64 {
        match self {
            Window::Minute => (index + 1) * 60,
            Window::Hour => (index + 1) * 3_600,
            Window::Day => (index + 1) * 86_400,
            Window::Month => {
                let next = index + 1;
                let year = 1970 + (next / 12) as i64;
                let month = (next % 12) as u32 + 1;
                (days_from_civil(year, month, 1).max(0) as u64) * 86_400
            }
        }
    }

    /// Whole seconds until the window containing `now_s` ends (at least 1).
    pub fn reset_after(self, now_s: u64) -> u64 {
        self.end(self.index(now_s)).saturating_sub(now_s).max(1)
    }

    pub fn name(self) -> &'static str {
        match self {
            Window::Minute => "minute",
            Window::Hour => "hour",
            Window::Day => "day",
            Window::Month => "month",
        }
    }
}

/// Days since 1970-01-01 of a civil date (proleptic Gregorian; H. Hinnant's algorithm).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Civil date (year, month 1-12, day 1-31) of a day count since 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// OpenAI's `x-ratelimit-reset-*` duration format: `20ms`, `7s`, `6m0s`, `2h3m4s`.
pub fn openai_duration(seconds: u64) -> String {
    let (h, m, s) = (seconds / 3_600, seconds % 3_600 / 60, seconds % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s}s"),
        _ => format!("{h}h{m}m{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: u64 = 1_795_000_000; // 2026-11-18T05:46:40Z

    #[test]
    fn civil_conversions_round_trip_and_match_known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(civil_from_days(days_from_civil(2026, 11, 27)), (2026, 11, 27));
        for days in (-800_000..800_000).step_by(997) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(civil_from_days((T / 86_400) as i64), (2026, 11, 18));
    }

    #[test]
    fn windows_start_and_end_on_their_boundaries() {
        for window in [Window::Minute, Window::Hour, Window::Day, Window::Month] {
            let index = window.index(T);
            let end = window.end(index);
            assert!(end > T, "{window:?}");
            assert_eq!(window.index(end - 1), index, "{window:?}: last second is inside");
            assert_eq!(window.index(end), index + 1, "{window:?}: end starts the next window");
        }
        assert_eq!(Window::Minute.reset_after(T), 60 - T % 60);
    }

    #[test]
    fn months_are_calendar_months_including_leap_february() {
        let feb_2028 = days_from_civil(2028, 2, 10) as u64 * 86_400;
        let index = Window::Month.index(feb_2028);
        assert_eq!(Window::Month.end(index), days_from_civil(2028, 3, 1) as u64 * 86_400);
        let dec = days_from_civil(2026, 12, 31) as u64 * 86_400 + 86_399;
        assert_eq!(Window::Month.end(Window::Month.index(dec)), days_from_civil(2027, 1, 1) as u64 * 86_400);
    }

    #[test]
    fn durations_read_like_openais_headers() {
        assert_eq!(openai_duration(7), "7s");
        assert_eq!(openai_duration(360), "6m0s");
        assert_eq!(openai_duration(7384), "2h3m4s");
    }
}
