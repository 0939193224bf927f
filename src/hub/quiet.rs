//! Quiet hours: weekly windows in which an answerer is neither rung on its
//! page nor pushed. Pure: the hub's shell supplies the local time of week.
//!
//! Syntax of one window: `DAYS HH:MM-HH:MM`, where DAYS is `daily` or a
//! comma list of days (`mon`) and day ranges (`mon-fri`, `fri-mon`). The
//! window starts on each listed day; an end at or before the start is on
//! the next day (`mon-fri 22:00-07:00` ends Saturday 07:00). `24:00` is
//! allowed as an end only.

use std::fmt;

const DAY: u32 = 24 * 60;
const WEEK: u32 = 7 * DAY;
const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// Minutes since Monday 00:00, local time: 0 ..= 10079.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct WeekMinute(u32);

impl WeekMinute {
    /// `weekday`: 0 = Monday … 6 = Sunday. Out-of-range input wraps.
    pub fn new(weekday: u32, hour: u32, minute: u32) -> Self {
        WeekMinute(((weekday % 7) * DAY + (hour % 24) * 60 + minute % 60) % WEEK)
    }

    /// From `struct tm` fields (`tm_wday`: 0 = Sunday).
    pub fn from_tm(tm_wday: i32, tm_hour: i32, tm_min: i32) -> Self {
        let wd = (tm_wday.rem_euclid(7) as u32 + 6) % 7;
        Self::new(wd, tm_hour.max(0) as u32, tm_min.max(0) as u32)
    }

    pub fn minutes(self) -> u32 {
        self.0
    }
}

/// One window: `start` minutes into the week, `len` minutes long
/// (1 ..= one day), possibly running past Sunday into Monday.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Window {
    start: u32,
    len: u32,
}

/// An answerer's quiet hours; empty: never quiet.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QuietHours {
    windows: Vec<Window>,
    /// The windows as written, for the configuration dump.
    source: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuietHoursError(pub String);

impl fmt::Display for QuietHoursError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl QuietHours {
    /// Parses every window; the first bad one is the error.
    pub fn parse<S: AsRef<str>>(specs: &[S]) -> Result<Self, (usize, QuietHoursError)> {
        let mut q = QuietHours::default();
        for (i, s) in specs.iter().enumerate() {
            q.windows
                .extend(parse_window(s.as_ref()).map_err(|e| (i, e))?);
            q.source.push(s.as_ref().trim().to_owned());
        }
        Ok(q)
    }

    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }

    /// The windows as configured.
    pub fn source(&self) -> &[String] {
        &self.source
    }

    pub fn contains(&self, t: WeekMinute) -> bool {
        self.windows
            .iter()
            .any(|w| (t.0 + WEEK - w.start) % WEEK < w.len)
    }
}

fn parse_window(spec: &str) -> Result<Vec<Window>, QuietHoursError> {
    let bad = |why: String| QuietHoursError(format!("{spec:?}: {why}"));
    let example =
        "expected \"DAYS HH:MM-HH:MM\", e.g. \"mon-fri 22:00-07:00\" or \"daily 23:00-06:30\"";
    let mut parts = spec.split_whitespace();
    let (Some(days), Some(times), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad(example.into()));
    };
    let days = parse_days(days).map_err(bad)?;
    let (from, to) = times
        .split_once('-')
        .ok_or_else(|| bad(format!("{times:?} is not a time range; {example}")))?;
    let start = parse_time(from, false).map_err(bad)?;
    let end = parse_time(to, true).map_err(bad)?;
    if start == end {
        return Err(bad(format!(
            "{times:?} is empty (for a whole day write \"00:00-24:00\")"
        )));
    }
    let len = if end > start {
        end - start
    } else {
        end + DAY - start
    };
    Ok(days
        .into_iter()
        .map(|d| Window {
            start: d * DAY + start,
            len,
        })
        .collect())
}

fn day_index(name: &str) -> Result<u32, String> {
    let lower = name.to_ascii_lowercase();
    DAYS.iter()
        .position(|d| *d == lower)
        .map(|i| i as u32)
        .ok_or_else(|| {
            format!("{name:?} is not a day (mon, tue, wed, thu, fri, sat, sun or daily)")
        })
}

fn parse_days(text: &str) -> Result<Vec<u32>, String> {
    if text.eq_ignore_ascii_case("daily") {
        return Ok((0..7).collect());
    }
    let mut out = Vec::new();
    for item in text.split(',') {
        match item.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (day_index(a)?, day_index(b)?);
                let mut d = a;
                loop {
                    out.push(d);
                    if d == b {
                        break;
                    }
                    d = (d + 1) % 7;
                }
            }
            None => out.push(day_index(item)?),
        }
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// `HH:MM` in minutes; `24:00` only as an end.
fn parse_time(text: &str, is_end: bool) -> Result<u32, String> {
    let wrong =
        || format!("{text:?} is not a time of day (HH:MM, 00:00 to 23:59, or 24:00 as an end)");
    let (h, m) = text.split_once(':').ok_or_else(wrong)?;
    if h.is_empty() || h.len() > 2 || m.len() != 2 {
        return Err(wrong());
    }
    let h: u32 = h.parse().map_err(|_| wrong())?;
    let m: u32 = m.parse().map_err(|_| wrong())?;
    match (h, m) {
        (24, 0) if is_end => Ok(DAY),
        (0..=23, 0..=59) => Ok(h * 60 + m),
        _ => Err(wrong()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(specs: &[&str]) -> QuietHours {
        QuietHours::parse(specs).unwrap_or_else(|(i, e)| panic!("{i}: {e}"))
    }

    fn at(day: &str, h: u32, m: u32) -> WeekMinute {
        WeekMinute::new(day_index(day).expect("test day"), h, m)
    }

    #[test]
    fn crossing_midnight_ends_on_the_next_day() {
        let w = q(&["mon-fri 22:00-07:00"]);
        assert!(w.contains(at("mon", 22, 0)));
        assert!(w.contains(at("tue", 6, 59)));
        assert!(!w.contains(at("tue", 7, 0)));
        assert!(!w.contains(at("mon", 21, 59)));
        // Monday morning belongs to Sunday night, which is not listed.
        assert!(!w.contains(at("mon", 3, 0)));
        // Friday night runs into Saturday.
        assert!(w.contains(at("sat", 6, 0)));
        assert!(!w.contains(at("sat", 22, 30)));
    }

    #[test]
    fn sunday_night_wraps_into_monday() {
        let w = q(&["sun 23:00-01:00"]);
        assert!(w.contains(at("sun", 23, 30)));
        assert!(w.contains(at("mon", 0, 30)));
        assert!(!w.contains(at("mon", 1, 0)));
    }

    #[test]
    fn day_lists_ranges_and_daily() {
        let w = q(&["sat,sun 23:00-08:30"]);
        assert!(w.contains(at("sun", 8, 29)));
        assert!(w.contains(at("mon", 8, 0)), "Sunday night runs into Monday");
        assert!(!w.contains(at("sat", 8, 0)), "Friday night is not listed");
        let w = q(&["daily 00:00-24:00"]);
        for d in DAYS {
            for h in [0, 12, 23] {
                assert!(w.contains(at(d, h, 59)));
            }
        }
        let w = q(&["fri-mon 12:00-13:00", "WED 12:00-13:00"]);
        for (d, quiet) in [
            ("fri", true),
            ("sat", true),
            ("sun", true),
            ("mon", true),
            ("tue", false),
            ("wed", true),
            ("thu", false),
        ] {
            assert_eq!(w.contains(at(d, 12, 30)), quiet, "{d}");
        }
        assert!(q(&[]).is_empty());
        assert!(!q(&[]).contains(at("mon", 0, 0)));
    }

    #[test]
    fn bad_syntax_is_named() {
        for (spec, needle) in [
            ("22:00-07:00", "expected"),
            ("mon-fri", "expected"),
            ("mon-fri 22:00", "not a time range"),
            ("mo 22:00-07:00", "not a day"),
            ("mon 25:00-07:00", "not a time of day"),
            ("mon 24:00-07:00", "not a time of day"),
            ("mon 22:60-07:00", "not a time of day"),
            ("mon 7-8", "not a time of day"),
            ("mon 08:00-08:00", "empty"),
            ("mon 08:00-09:00 extra", "expected"),
        ] {
            let (i, e) = QuietHours::parse(&["daily 01:00-02:00", spec]).expect_err(spec);
            assert_eq!(i, 1, "{spec}");
            assert!(e.0.contains(needle), "{spec}: {e}");
        }
    }

    #[test]
    fn from_tm_counts_from_monday() {
        assert_eq!(WeekMinute::from_tm(1, 0, 0).minutes(), 0);
        assert_eq!(WeekMinute::from_tm(0, 23, 59).minutes(), WEEK - 1);
        assert_eq!(WeekMinute::from_tm(3, 1, 2), at("wed", 1, 2));
    }
}
