//! Dispensations: when a refill comes too early (pure).

use chrono::NaiveDate;

/// Share of the previous supply that must have elapsed before a refill of
/// the same drug is on time.
pub const EARLY_REFILL_SHARE: f64 = 0.8;

/// Whether a dispensation on `on` comes before 80 % of the previous supply
/// (`days_supply` days from `previous_on`) has elapsed.
pub fn is_early_refill(previous_on: NaiveDate, days_supply: i32, on: NaiveDate) -> bool {
    let elapsed = (on - previous_on).num_days() as f64;
    elapsed < EARLY_REFILL_SHARE * f64::from(days_supply)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn early_refill_boundaries() {
        let first: NaiveDate = "2026-11-01".parse().unwrap();
        let on = |days: i64| first + chrono::Duration::days(days);
        // (supply in days, days elapsed, early)
        let table = [
            (10, 7, true),
            (10, 8, false),
            (10, 9, false),
            (28, 22, true),
            (28, 23, false),
            (7, 5, true),
            (7, 6, false),
            (1, 0, true),
            (1, 1, false),
            (14, -1, true),
        ];
        for (supply, days, early) in table {
            assert_eq!(
                is_early_refill(first, supply, on(days)),
                early,
                "{supply} days supplied, {days} elapsed"
            );
        }
    }
}
