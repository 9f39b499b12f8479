//! The destabilisation watch: which scores of an observation open or close
//! an alert episode (pure; `store::observation` applies it).

/// The scores an observation carries (each optional).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Scores {
    /// Pain, 0 to 10.
    pub pain: Option<i32>,
    /// Sedation, 0 to 4.
    pub sedation: Option<i32>,
    /// Withdrawal, COWS 0 to 48.
    pub cows: Option<i32>,
}

/// Alert thresholds of the destabilisation watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertKind {
    /// Pain ≥ 7 twice within 24 h (tightened: ≥ 6 once).
    Pain,
    /// Sedation ≥ 3.
    Sedation,
    /// COWS ≥ 13, moderate withdrawal (tightened: ≥ 9).
    Withdrawal,
}

/// Pain that alerts once while the watch is tightened.
pub const TIGHT_PAIN: i32 = 6;
/// COWS that alerts while the watch is tightened.
pub const TIGHT_COWS: i32 = 9;

impl AlertKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pain => "pain",
            Self::Sedation => "sedation",
            Self::Withdrawal => "withdrawal",
        }
    }
}

/// For each measure present: `Some(true)` above the threshold, `Some(false)`
/// back under it. `recent_high_pain`: another pain ≥ 7 in the 24 h before.
/// `tightened`: in the 7 days after a temporary OMT change ended (pain ≥ 6
/// once, COWS ≥ 9).
pub fn assess(obs: &Scores, recent_high_pain: bool, tightened: bool) -> Vec<(AlertKind, bool)> {
    let mut out = Vec::new();
    if let Some(pain) = obs.pain {
        let alert = if tightened {
            pain >= TIGHT_PAIN
        } else {
            pain >= 7 && recent_high_pain
        };
        out.push((AlertKind::Pain, alert));
    }
    if let Some(sedation) = obs.sedation {
        out.push((AlertKind::Sedation, sedation >= 3));
    }
    if let Some(cows) = obs.cows {
        out.push((
            AlertKind::Withdrawal,
            cows >= if tightened { TIGHT_COWS } else { 13 },
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Scores {
        fn of(pain: Option<i32>, sedation: Option<i32>, cows: Option<i32>) -> Self {
            Self {
                pain,
                sedation,
                cows,
            }
        }
    }

    #[test]
    fn thresholds() {
        assert_eq!(
            assess(&Scores::of(Some(8), None, None), false, false),
            [(AlertKind::Pain, false)]
        );
        assert_eq!(
            assess(&Scores::of(Some(7), None, None), true, false),
            [(AlertKind::Pain, true)]
        );
        assert_eq!(
            assess(&Scores::of(Some(6), None, None), true, false),
            [(AlertKind::Pain, false)]
        );
        assert_eq!(
            assess(&Scores::of(None, Some(3), None), false, false),
            [(AlertKind::Sedation, true)]
        );
        assert_eq!(
            assess(&Scores::of(None, Some(2), None), false, false),
            [(AlertKind::Sedation, false)]
        );
        assert_eq!(
            assess(&Scores::of(None, None, Some(13)), false, false),
            [(AlertKind::Withdrawal, true)]
        );
        assert_eq!(
            assess(&Scores::of(None, None, Some(12)), false, false),
            [(AlertKind::Withdrawal, false)]
        );
        assert!(assess(&Scores::of(None, None, None), false, false).is_empty());
        // Tightened: pain 6 once, COWS 9.
        assert_eq!(
            assess(&Scores::of(Some(6), None, None), false, true),
            [(AlertKind::Pain, true)]
        );
        assert_eq!(
            assess(&Scores::of(Some(5), None, None), true, true),
            [(AlertKind::Pain, false)]
        );
        assert_eq!(
            assess(&Scores::of(None, None, Some(9)), false, true),
            [(AlertKind::Withdrawal, true)]
        );
        assert_eq!(
            assess(&Scores::of(None, None, Some(8)), false, true),
            [(AlertKind::Withdrawal, false)]
        );
    }
}
