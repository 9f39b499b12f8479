//! [`Stamp`]: a `Timestamp` column read without diesel's SQLite parse.
//!
//! SQLite has no time type: diesel stores a `NaiveDateTime` as text
//! (`%F %T%.f`, e.g. `2026-12-01 10:00:00.123456`) and reads it back by
//! trying `NaiveDateTime::parse_from_str` with each of 18 formats in turn,
//! then as a Julian day. That costs ~2 800 instructions per value
//! (callgrind: 140 k of a 50-message thread page's 1 477 k). [`Stamp`]
//! reads diesel's own format by position, and hands anything else (another
//! format, a number) to diesel's parse, unchanged: the same value either way
//! (`tests` compares them). On PostgreSQL a timestamp is binary already:
//! diesel's decoding, as before.

use chrono::{NaiveDate, NaiveDateTime};
use diesel::deserialize::{self, FromSql, FromSqlRow};
use diesel::expression::AsExpression;
use diesel::pg::{Pg, PgValue};
use diesel::serialize::{self, IsNull, Output, ToSql};
use diesel::sql_types::Timestamp;
use diesel::sqlite::{Sqlite, SqliteValue};

/// A timestamp column's value, for `#[diesel(deserialize_as = Stamp)]` or
/// a selected tuple; `.0` (or `NaiveDateTime::from`) is the time. Bound
/// as a `Timestamp` it is written as diesel writes it (on SQLite the same
/// text, which SQLite compares as text), without chrono's `format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromSqlRow, AsExpression)]
#[diesel(sql_type = Timestamp)]
pub struct Stamp(pub NaiveDateTime);

impl ToSql<Timestamp, Sqlite> for Stamp {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Sqlite>) -> serialize::Result {
        let mut text = [0u8; 30];
        match crate::clock::write_text(&self.0, b' ', false, &mut text) {
            Some(len) => {
                // Only ASCII digits and separators were written.
                let text = std::str::from_utf8(&text[..len]).expect("ASCII");
                out.set_value(text.to_owned());
                Ok(IsNull::No)
            }
            None => <NaiveDateTime as ToSql<Timestamp, Sqlite>>::to_sql(&self.0, out),
        }
    }
}

impl ToSql<Timestamp, Pg> for Stamp {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
        <NaiveDateTime as ToSql<Timestamp, Pg>>::to_sql(&self.0, out)
    }
}

impl From<NaiveDateTime> for Stamp {
    fn from(at: NaiveDateTime) -> Self {
        Stamp(at)
    }
}

impl From<Stamp> for NaiveDateTime {
    fn from(stamp: Stamp) -> Self {
        stamp.0
    }
}

impl FromSql<Timestamp, Sqlite> for Stamp {
    fn from_sql(mut value: SqliteValue<'_, '_, '_>) -> deserialize::Result<Self> {
        if let Some(at) = diesel_text(value.read_text()) {
            return Ok(Stamp(at));
        }
        <NaiveDateTime as FromSql<Timestamp, Sqlite>>::from_sql(value).map(Stamp)
    }
}

impl FromSql<Timestamp, Pg> for Stamp {
    fn from_sql(value: PgValue<'_>) -> deserialize::Result<Self> {
        <NaiveDateTime as FromSql<Timestamp, Pg>>::from_sql(value).map(Stamp)
    }
}

/// `YYYY-MM-DD HH:MM:SS` with an optional `.` and 1–9 digits, exactly
/// (diesel's `%F %T%.f`); `None` for anything else, leap seconds included.
fn diesel_text(text: &str) -> Option<NaiveDateTime> {
    let b = text.as_bytes();
    if b.len() < 19
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b' '
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let digits = |from: usize, to: usize| -> Option<u32> {
        b[from..to].iter().try_fold(0u32, |n, &c| {
            c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
        })
    };
    let year = i32::try_from(digits(0, 4)?).ok()?;
    let (month, day) = (digits(5, 7)?, digits(8, 10)?);
    let (hour, minute, second) = (digits(11, 13)?, digits(14, 16)?, digits(17, 19)?);
    let nano = match &b[19..] {
        [] => 0,
        [b'.', fraction @ ..] if (1..=9).contains(&fraction.len()) => {
            digits(20, b.len())? * 10u32.pow(9 - fraction.len() as u32)
        }
        _ => return None,
    };
    if second > 59 {
        return None;
    }
    NaiveDate::from_ymd_opt(year, month, day)?.and_hms_nano_opt(hour, minute, second, nano)
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDateTime;
    use diesel::prelude::*;
    use diesel::sql_types::{Text, Timestamp};

    use super::Stamp;

    /// Whatever the text, [`Stamp`] reads the value diesel reads, or fails
    /// where diesel fails.
    #[test]
    fn a_stamp_reads_what_diesel_reads_on_sqlite() {
        let mut lite = SqliteConnection::establish(":memory:").unwrap();
        let texts = [
            "2026-12-01 10:00:00",
            "2026-12-01 10:00:00.5",
            "2026-12-01 10:00:00.123",
            "2026-12-01 10:00:00.123456",
            "2026-12-01 10:00:00.123456789",
            "0001-01-01 00:00:00",
            "9999-12-31 23:59:59.999999999",
            "2024-02-29 12:00:00",
            // Not diesel's format: read by diesel's parse, or refused.
            "2026-12-01T10:00:00",
            "2026-12-01 10:00:00Z",
            "2026-12-01 10:00",
            "2026-12-01 10:00:00.1234567891",
            "2026-12-01 10:00:00.",
            "2026-12-01 10:00:60",
            "2026-12-01 24:00:00",
            "2023-02-29 12:00:00",
            "2026-13-01 10:00:00",
            "2026-12-01 1a:00:00",
            "+2026-12-01 10:00:00",
            "2461010.5",
            "not a time",
            "",
        ];
        for text in texts {
            let query = || {
                diesel::select(
                    diesel::dsl::sql::<Timestamp>("CAST(")
                        .bind::<Text, _>(text)
                        .sql(" AS TEXT)"),
                )
            };
            let diesel: QueryResult<NaiveDateTime> = query().get_result(&mut lite);
            let stamp: QueryResult<Stamp> = query().get_result(&mut lite);
            match (diesel, stamp) {
                (Ok(d), Ok(s)) => assert_eq!(d, s.0, "{text}"),
                (Err(_), Err(_)) => {}
                (d, s) => panic!("{text}: diesel {d:?}, stamp {s:?}"),
            }
        }
        // A value diesel wrote, read back.
        let at = chrono::NaiveDate::from_ymd_opt(2026, 12, 1)
            .unwrap()
            .and_hms_micro_opt(9, 8, 7, 654_321)
            .unwrap();
        let back: Stamp =
            diesel::select(diesel::dsl::sql::<Timestamp>("").bind::<Timestamp, _>(at))
                .get_result(&mut lite)
                .unwrap();
        assert_eq!(back.0, at);
    }

    /// Bound as a timestamp, a [`Stamp`] is the text diesel writes, byte for
    /// byte (SQLite compares timestamps as text), for every fraction width,
    /// both ends of the years written fast, and the cases left to diesel.
    #[test]
    fn a_stamp_is_written_as_diesel_writes_it_on_sqlite() {
        let mut lite = SqliteConnection::establish(":memory:").unwrap();
        let day = |y, m, d| chrono::NaiveDate::from_ymd_opt(y, m, d).unwrap();
        let mut times = Vec::new();
        for date in [
            day(2026, 12, 1),
            day(1, 1, 1),
            day(9999, 12, 31),
            day(0, 1, 1),
        ] {
            for nano in [
                0,
                1,
                5_000_000,
                123_000_000,
                123_456_000,
                123_456_789,
                999_999_999,
                1_000,
            ] {
                for (h, m, s) in [(0, 0, 0), (9, 8, 7), (23, 59, 59)] {
                    times.push(date.and_hms_nano_opt(h, m, s, nano).unwrap());
                }
            }
        }
        times.push(
            day(2016, 12, 31)
                .and_hms_nano_opt(23, 59, 59, 1_500_000_000)
                .unwrap(),
        );
        times.push(day(10000, 1, 1).and_hms_opt(0, 0, 0).unwrap());
        times.push(day(-1, 1, 1).and_hms_opt(0, 0, 0).unwrap());
        for at in times {
            macro_rules! text {
                ($value:expr) => {
                    diesel::select(
                        diesel::dsl::sql::<Text>("CAST(")
                            .bind::<Timestamp, _>($value)
                            .sql(" AS TEXT)"),
                    )
                    .get_result::<String>(&mut lite)
                    .unwrap()
                };
            }
            let (diesel, stamp) = (text!(at), text!(Stamp(at)));
            assert_eq!(stamp, diesel, "{at:?}");
        }
    }
}
