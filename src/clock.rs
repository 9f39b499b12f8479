//! The time source, injected so that tests can move time forward.

use std::sync::Mutex;

use chrono::{DateTime, Duration, DurationRound, NaiveDate, NaiveDateTime, TimeDelta, Utc};

/// A source of the current UTC time, to the microsecond (what PostgreSQL keeps).
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;

    /// The current time as stored in the database (UTC, no zone).
    fn now_naive(&self) -> NaiveDateTime {
        self.now().naive_utc()
    }

    /// Today's date in `zone` (the network's: `Settings::time_zone`), the
    /// only "today" the rules may use: UTC's date is yesterday's in France
    /// between midnight and 01:00 (02:00 in summer).
    fn today(&self, zone: chrono_tz::Tz) -> NaiveDate {
        self.now().with_timezone(&zone).date_naive()
    }
}

/// Writes `at` as `YYYY-MM-DD`, `separator`, `HH:MM:SS`, the fraction as
/// chrono's `%.f` and `SecondsFormat::AutoSi` give it (none, 3, 6 or 9
/// digits), then `Z` when `zulu`; its length. `None` (nothing to trust in
/// `out`) for a year outside 0–9999 or a leap second, which chrono's own
/// formatting writes: `db::Stamp` (`separator` ' ', SQLite's text) and
/// `api::rfc3339` (`T`, `Z`) go to it then.
pub fn write_text(
    at: &NaiveDateTime,
    separator: u8,
    zulu: bool,
    out: &mut [u8; 30],
) -> Option<usize> {
    use chrono::{Datelike, Timelike};
    let year = at.year();
    let nano = at.nanosecond();
    if !(0..=9999).contains(&year) || nano >= 1_000_000_000 {
        return None;
    }
    let mut text = Text { out, len: 0 };
    text.digits(year as u32, 4);
    text.byte(b'-');
    text.digits(at.month(), 2);
    text.byte(b'-');
    text.digits(at.day(), 2);
    text.byte(separator);
    text.digits(at.hour(), 2);
    text.byte(b':');
    text.digits(at.minute(), 2);
    text.byte(b':');
    text.digits(at.second(), 2);
    match nano {
        0 => {}
        n if n % 1_000_000 == 0 => text.fraction(n / 1_000_000, 3),
        n if n % 1_000 == 0 => text.fraction(n / 1_000, 6),
        n => text.fraction(n, 9),
    }
    if zulu {
        text.byte(b'Z');
    }
    Some(text.len)
}

/// What [`write_text`] has written so far.
struct Text<'a> {
    out: &'a mut [u8; 30],
    len: usize,
}

impl Text<'_> {
    fn byte(&mut self, byte: u8) {
        self.out[self.len] = byte;
        self.len += 1;
    }

    /// `value` in `width` digits, zero-padded.
    fn digits(&mut self, value: u32, width: u32) {
        for place in (0..width).rev() {
            self.byte(b'0' + (value / 10u32.pow(place) % 10) as u8);
        }
    }

    fn fraction(&mut self, value: u32, width: u32) {
        self.byte(b'.');
        self.digits(value, width);
    }
}

fn to_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(TimeDelta::microseconds(1)).unwrap_or(t)
}

/// The machine's clock.
#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        to_micros(Utc::now())
    }
}

/// The machine's clock shifted by an offset that tests can advance.
#[derive(Debug, Default)]
pub struct ManualClock {
    offset: Mutex<Duration>,
}

impl ManualClock {
    /// Sets this clock to `at` (it keeps running from there).
    pub fn set(&self, at: DateTime<Utc>) {
        let mut offset = self.offset.lock().unwrap_or_else(|e| e.into_inner());
        *offset = at - Utc::now();
    }

    /// Moves this clock forward.
    pub fn advance(&self, by: Duration) {
        let mut offset = self.offset.lock().unwrap_or_else(|e| e.into_inner());
        *offset += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        let offset = *self.offset.lock().unwrap_or_else(|e| e.into_inner());
        to_micros(Utc::now() + offset)
    }
}
