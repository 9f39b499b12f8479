//! A UTC time as the API writes it, without chrono's formatting machinery.
//!
//! chrono serialises a `DateTime<Utc>` through `Display` and serde's
//! `collect_str`, one formatting call and one escaping pass per piece:
//! ~2 500 instructions a value (callgrind: 125 k of a 50-message thread
//! page). [`utc`] writes the same text (RFC 3339, `Z`, the fraction as
//! chrono's `SecondsFormat::AutoSi` gives it: none, 3, 6 or 9 digits) into
//! a buffer on the stack and serialises it as one string. Years outside
//! 0–9999 and leap seconds go to chrono itself. `tests` compares the two.

use chrono::{DateTime, Utc};
use serde::Serializer;

/// `#[serde(serialize_with = "crate::api::rfc3339::utc")]`.
pub fn utc<S: Serializer>(at: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    let mut buffer = [0u8; 30];
    match crate::clock::write_text(&at.naive_utc(), b'T', true, &mut buffer) {
        Some(len) => serializer.serialize_str(
            // Only ASCII digits and separators were written.
            std::str::from_utf8(&buffer[..len]).expect("ASCII"),
        ),
        None => serde::Serialize::serialize(at, serializer),
    }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, NaiveDate, TimeZone, Utc};

    #[derive(serde::Serialize)]
    struct Ours(#[serde(serialize_with = "super::utc")] DateTime<Utc>);

    /// The text chrono writes, for every fraction width, both ends of the
    /// years written fast, and the cases left to chrono.
    #[test]
    fn the_text_is_chronos() {
        let mut times: Vec<DateTime<Utc>> = Vec::new();
        let day = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).unwrap();
        for date in [
            day(2026, 12, 1),
            day(1, 1, 1),
            day(9999, 12, 31),
            day(2024, 2, 29),
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
                    times.push(
                        Utc.from_utc_datetime(&date.and_hms_nano_opt(h, m, s, nano).unwrap()),
                    );
                }
            }
        }
        // Left to chrono: a leap second, years past 9999 or before 0.
        times.push(
            Utc.from_utc_datetime(
                &day(2016, 12, 31)
                    .and_hms_nano_opt(23, 59, 59, 1_500_000_000)
                    .unwrap(),
            ),
        );
        times.push(Utc.from_utc_datetime(&day(10000, 1, 1).and_hms_opt(0, 0, 0).unwrap()));
        times.push(Utc.from_utc_datetime(&day(-1, 1, 1).and_hms_opt(0, 0, 0).unwrap()));
        for at in times {
            assert_eq!(
                serde_json::to_string(&Ours(at)).unwrap(),
                serde_json::to_string(&at).unwrap(),
                "{at:?}"
            );
        }
    }
}
