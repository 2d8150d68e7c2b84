//! Message times, in UTC or in the reader's time zone.
//!
//! The server cannot know the reader's time zone, so it renders every time in UTC. The browser must
//! hydrate exactly the page the server rendered (hydration keeps the server's text nodes), so it renders
//! UTC too while it hydrates; then the message list switches to [`Zone::Local`] in one step, in an
//! effect that runs before the first paint after hydration. Every time on the page reads the zone, so
//! each is rewritten then.
//!
//! UTC is computed here (the same on both sides: the two renders must agree); local times come from
//! the browser's `Intl.DateTimeFormat`, in the reader's locale, so no calendar or zone data is compiled
//! into the WASM.

use leptos::prelude::RwSignal;

/// Milliseconds in a day.
const DAY_MS: i64 = 86_400_000;

/// Where the page shows times.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Zone {
    /// As the server renders them (and the browser while it hydrates).
    Utc,
    /// In the reader's time zone and locale (in the browser only; UTC elsewhere).
    Local,
}

impl Zone {
    /// The day `ts_ms` falls on in this zone, counted from 1970-01-01: two messages are on one day
    /// when their numbers are equal.
    pub fn day(self, ts_ms: u64) -> i64 {
        let ts = ts_ms as i64;
        match self {
            Zone::Utc => ts.div_euclid(DAY_MS),
            Zone::Local => (ts - local::offset_ms(ts_ms)).div_euclid(DAY_MS),
        }
    }

    /// The time of day, short: `07:25` (UTC), or as the reader's locale writes it (`7:25 AM`).
    pub fn clock(self, ts_ms: u64) -> String {
        match self {
            Zone::Utc => {
                let c = Civil::utc(ts_ms);
                format!("{:02}:{:02}", c.hour, c.minute)
            }
            Zone::Local => local::clock(ts_ms),
        }
    }

    /// The full date and time, for the hover title.
    pub fn full(self, ts_ms: u64) -> String {
        match self {
            Zone::Utc => {
                let c = Civil::utc(ts_ms);
                format!(
                    "{}, {} {} {}, {:02}:{:02}:{:02} UTC",
                    WEEKDAYS[c.weekday],
                    c.day,
                    MONTHS[c.month as usize - 1],
                    c.year,
                    c.hour,
                    c.minute,
                    c.second
                )
            }
            Zone::Local => local::full(ts_ms),
        }
    }

    /// The heading of the day `ts_ms` falls on. In UTC, an absolute date that says it is UTC (the
    /// server's "today" is not the reader's); in local time "Today", "Yesterday", or the date.
    pub fn day_label(self, ts_ms: u64) -> String {
        match self {
            Zone::Utc => {
                let c = Civil::utc(ts_ms);
                format!(
                    "{}, {} {} {} (UTC)",
                    WEEKDAYS[c.weekday],
                    c.day,
                    MONTHS[c.month as usize - 1],
                    c.year
                )
            }
            Zone::Local => match self.day(local::now_ms()) - self.day(ts_ms) {
                0 => "Today".into(),
                1 => "Yesterday".into(),
                _ => local::date(ts_ms),
            },
        }
    }
}

/// The zone the page shows times in (in the context): UTC until the first message list is hydrated.
#[derive(Clone, Copy)]
pub struct ShownZone(pub RwSignal<Zone>);

/// The machine-readable form for `<time datetime>`: `2026-12-03T07:25:03Z`.
pub fn iso(ts_ms: u64) -> String {
    let c = Civil::utc(ts_ms);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    )
}

const WEEKDAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];
const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// A UTC instant as a calendar date and a time of day.
#[derive(Debug, PartialEq, Eq)]
struct Civil {
    year: i64,
    month: u32,
    day: u32,
    /// 0 is Sunday.
    weekday: usize,
    hour: u32,
    minute: u32,
    second: u32,
}

impl Civil {
    fn utc(ts_ms: u64) -> Civil {
        let ts = ts_ms as i64;
        let days = ts.div_euclid(DAY_MS);
        let in_day = ts.rem_euclid(DAY_MS) / 1000;
        // Howard Hinnant's civil_from_days: the proleptic Gregorian calendar, in eras of 400 years
        // counted from 0000-03-01 (so the leap day ends a year).
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = yoe + era * 400 + i64::from(month <= 2);
        Civil {
            year,
            month,
            day,
            // 1970-01-01 was a Thursday.
            weekday: (days + 4).rem_euclid(7) as usize,
            hour: (in_day / 3600) as u32,
            minute: (in_day / 60 % 60) as u32,
            second: (in_day % 60) as u32,
        }
    }
}

/// The reader's zone and locale, from the browser.
#[cfg(feature = "hydrate")]
mod local {
    use js_sys::{Array, Date, Function, Intl::DateTimeFormat, Object, JSON};
    use wasm_bindgen::{JsCast, JsValue};

    /// The browser's formatters, made once: making one costs far more than formatting with it.
    struct Formats {
        clock: Function,
        full: Function,
        date: Function,
    }

    thread_local! {
        static FORMATS: Formats = Formats {
            clock: format(r#"{"hour":"numeric","minute":"2-digit"}"#),
            full: format(r#"{"dateStyle":"full","timeStyle":"medium"}"#),
            date: format(r#"{"weekday":"long","day":"numeric","month":"long","year":"numeric"}"#),
        };
    }

    /// `Intl.DateTimeFormat(undefined, options).format`: the reader's locale (an empty list of locales).
    fn format(options: &str) -> Function {
        let options = JSON::parse(options)
            .ok()
            .and_then(|o| o.dyn_into::<Object>().ok())
            .unwrap_or_default();
        DateTimeFormat::new(&Array::new(), &options).format()
    }

    fn apply(pick: impl Fn(&Formats) -> &Function, ts_ms: u64) -> String {
        let date = Date::new(&JsValue::from_f64(ts_ms as f64));
        FORMATS.with(|f| {
            pick(f)
                .call1(&JsValue::UNDEFINED, &date)
                .ok()
                .and_then(|s| s.as_string())
                .unwrap_or_default()
        })
    }

    pub fn clock(ts_ms: u64) -> String {
        apply(|f| &f.clock, ts_ms)
    }

    pub fn full(ts_ms: u64) -> String {
        apply(|f| &f.full, ts_ms)
    }

    pub fn date(ts_ms: u64) -> String {
        apply(|f| &f.date, ts_ms)
    }

    /// How far the reader's zone is behind UTC at `ts_ms` (daylight saving time included), in ms.
    pub fn offset_ms(ts_ms: u64) -> i64 {
        let date = Date::new(&JsValue::from_f64(ts_ms as f64));
        (date.get_timezone_offset() * 60_000.0) as i64
    }

    pub fn now_ms() -> u64 {
        Date::now() as u64
    }
}

/// Where there is no browser, "local" is UTC.
#[cfg(not(feature = "hydrate"))]
mod local {
    use super::Zone;

    pub fn clock(ts_ms: u64) -> String {
        Zone::Utc.clock(ts_ms)
    }

    pub fn full(ts_ms: u64) -> String {
        Zone::Utc.full(ts_ms)
    }

    pub fn date(ts_ms: u64) -> String {
        Zone::Utc.day_label(ts_ms)
    }

    pub fn offset_ms(_: u64) -> i64 {
        0
    }

    pub fn now_ms() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates_are_right_across_eras_leap_days_and_the_epoch() {
        let c = Civil::utc(0);
        assert_eq!((c.year, c.month, c.day, c.weekday), (1970, 1, 1, 4));
        // 2000-02-29 12:34:56 UTC, a Tuesday (a leap day of a century leap year).
        let c = Civil::utc(951_827_696_000);
        assert_eq!(
            c,
            Civil {
                year: 2000,
                month: 2,
                day: 29,
                weekday: 2,
                hour: 12,
                minute: 34,
                second: 56
            }
        );
        // 2026-12-31 23:59:59.999 and the next millisecond, 2027-01-01.
        let c = Civil::utc(1_798_761_599_999);
        assert_eq!(
            (c.year, c.month, c.day, c.hour, c.minute),
            (2026, 12, 31, 23, 59)
        );
        let c = Civil::utc(1_798_761_600_000);
        assert_eq!((c.year, c.month, c.day, c.weekday), (2027, 1, 1, 5));
    }

    #[test]
    fn utc_forms() {
        let ts = 1_796_282_703_000; // 2026-12-03 07:25:03 UTC, a Thursday
        assert_eq!(iso(ts), "2026-12-03T07:25:03Z");
        assert_eq!(Zone::Utc.clock(ts), "07:25");
        assert_eq!(
            Zone::Utc.full(ts),
            "Thursday, 3 December 2026, 07:25:03 UTC"
        );
        assert_eq!(Zone::Utc.day_label(ts), "Thursday, 3 December 2026 (UTC)");
        assert_eq!(Zone::Utc.day(ts), Zone::Utc.day(ts - 7 * 3_600_000));
        assert_eq!(Zone::Utc.day(ts) - 1, Zone::Utc.day(ts - 8 * 3_600_000));
    }
}
