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
