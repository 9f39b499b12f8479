//! How quickly a centre answers its consultations: pure arithmetic over the
//! times of the consultations in a window (`store::consultation::times`
//! loads them).

use chrono::NaiveDateTime;

/// The times of one consultation that the metrics use.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConsultationTimes {
    pub created_at: NaiveDateTime,
    pub due_at: NaiveDateTime,
    pub answered_at: Option<NaiveDateTime>,
    /// Set when it was closed: whether the advice avoided a referral.
    pub referral_avoided: Option<bool>,
}

/// The response-time metrics of a set of consultations.
#[derive(Debug, Clone, PartialEq)]
pub struct ResponseMetrics {
    pub count: usize,
    pub answered: usize,
    /// Hours from request to answer, over answered consultations.
    pub median_response_hours: Option<f64>,
    pub p90_response_hours: Option<f64>,
    /// Share of all consultations answered within their due time.
    pub answered_within_due_share: Option<f64>,
    /// Share of closed consultations whose advice avoided a referral.
    pub referral_avoided_share: Option<f64>,
}

/// The `q`-quantile (nearest rank) of sorted values.
pub fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted.get(rank.min(sorted.len()) - 1).copied()
}

/// The metrics of `rows`.
pub fn response_metrics(rows: &[ConsultationTimes]) -> ResponseMetrics {
    let count = rows.len();
    let mut hours: Vec<f64> = rows
        .iter()
        .filter_map(|r| {
            r.answered_at
                .map(|a| (a - r.created_at).num_seconds() as f64 / 3600.0)
        })
        .collect();
    hours.sort_by(f64::total_cmp);
    let within = rows
        .iter()
        .filter(|r| r.answered_at.is_some_and(|a| a <= r.due_at))
        .count();
    let closed: Vec<bool> = rows.iter().filter_map(|r| r.referral_avoided).collect();
    let share = |n: usize, d: usize| (d > 0).then(|| n as f64 / d as f64);
    ResponseMetrics {
        count,
        answered: hours.len(),
        median_response_hours: quantile(&hours, 0.5),
        p90_response_hours: quantile(&hours, 0.9),
        answered_within_due_share: share(within, count),
        referral_avoided_share: share(closed.iter().filter(|a| **a).count(), closed.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(h: i64) -> NaiveDateTime {
        chrono::DateTime::from_timestamp(1_700_000_000 + h * 3600, 0)
            .unwrap()
            .naive_utc()
    }

    fn times(due: i64, answered: Option<i64>, avoided: Option<bool>) -> ConsultationTimes {
        ConsultationTimes {
            created_at: at(0),
            due_at: at(due),
            answered_at: answered.map(at),
            referral_avoided: avoided,
        }
    }

    #[test]
    fn quantiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), Some(5.0));
        assert_eq!(quantile(&v, 0.9), Some(9.0));
        assert_eq!(quantile(&[3.0], 0.9), Some(3.0));
        assert_eq!(quantile(&[], 0.5), None);
    }

    #[test]
    fn metrics() {
        let rows = [
            times(4, Some(2), Some(true)),
            times(4, Some(6), Some(false)),
            times(72, Some(10), None),
            times(72, None, None),
        ];
        let m = response_metrics(&rows);
        assert_eq!((m.count, m.answered), (4, 3));
        assert_eq!(m.median_response_hours, Some(6.0));
        assert_eq!(m.p90_response_hours, Some(10.0));
        assert_eq!(m.answered_within_due_share, Some(0.5));
        assert_eq!(m.referral_avoided_share, Some(0.5));
        assert_eq!(
            response_metrics(&[]),
            ResponseMetrics {
                count: 0,
                answered: 0,
                median_response_hours: None,
                p90_response_hours: None,
                answered_within_due_share: None,
                referral_avoided_share: None,
            }
        );
    }
}
