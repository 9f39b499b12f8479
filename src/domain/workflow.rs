//! The state machines of handovers, consultations and pharmacist
//! interventions: one `transition` function each, which refuses every
//! illegal move.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

text_enum! {
    /// Where a discharge handover stands.
    HandoverStatus {
        Sent => "sent",
        Acknowledged => "acknowledged",
        Reconciled => "reconciled",
        Rejected => "rejected",
    }
}

/// What the addressee does with a handover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandoverAction {
    Acknowledge,
    /// Accept or amend: a new plan version follows.
    Reconcile,
    Reject,
}

/// The next status, or why the move is illegal.
pub fn handover_transition(
    from: HandoverStatus,
    action: HandoverAction,
) -> Result<HandoverStatus, String> {
    use HandoverAction as A;
    use HandoverStatus as S;
    match (from, action) {
        (S::Sent, A::Acknowledge) => Ok(S::Acknowledged),
        // Reconciling implies having read it: no separate click needed.
        (S::Sent | S::Acknowledged, A::Reconcile) => Ok(S::Reconciled),
        (S::Sent | S::Acknowledged, A::Reject) => Ok(S::Rejected),
        (S::Acknowledged, A::Acknowledge) => Err("this handover is already acknowledged".into()),
        (S::Reconciled | S::Rejected, _) => Err(format!("this handover is already {from}")),
    }
}

text_enum! {
    /// Where a consultation request stands.
    ConsultationStatus {
        Submitted => "submitted",
        Accepted => "accepted",
        Answered => "answered",
        Closed => "closed",
        Declined => "declined",
        Cancelled => "cancelled",
    }
}

impl ConsultationStatus {
    /// Open consultations give the centre's specialists read access to the patient.
    pub fn is_open(self) -> bool {
        matches!(self, Self::Submitted | Self::Accepted | Self::Answered)
    }

    /// Still waiting for the centre (due time applies).
    pub fn awaits_answer(self) -> bool {
        matches!(self, Self::Submitted | Self::Accepted)
    }
}

/// Who moves a consultation, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsultationAction {
    /// Centre.
    Accept,
    /// Centre.
    Answer,
    /// Centre.
    Decline,
    /// Requester.
    Close,
    /// Requester.
    Cancel,
}

impl ConsultationAction {
    /// Whether the centre (rather than the requester) does this.
    pub fn by_centre(self) -> bool {
        matches!(self, Self::Accept | Self::Answer | Self::Decline)
    }
}

/// The next status, or why the move is illegal.
pub fn consultation_transition(
    from: ConsultationStatus,
    action: ConsultationAction,
) -> Result<ConsultationStatus, String> {
    use ConsultationAction as A;
    use ConsultationStatus as S;
    match (from, action) {
        (S::Submitted, A::Accept) => Ok(S::Accepted),
        // Answering at once implies accepting.
        (S::Submitted | S::Accepted, A::Answer) => Ok(S::Answered),
        (S::Submitted | S::Accepted, A::Decline) => Ok(S::Declined),
        (S::Submitted | S::Accepted, A::Cancel) => Ok(S::Cancelled),
        (S::Answered, A::Close) => Ok(S::Closed),
        (S::Accepted, A::Accept) => Err("this consultation is already accepted".into()),
        (S::Submitted | S::Accepted, A::Close) => {
            Err("a consultation is closed once answered; cancel it instead".into())
        }
        (S::Answered, _) => Err("this consultation is answered: the requester closes it".into()),
        (S::Closed | S::Declined | S::Cancelled, _) => Err(format!("this consultation is {from}")),
    }
}

text_enum! {
    /// Where a pharmacist's intervention stands.
    InterventionStatus {
        Open => "open",
        Accepted => "accepted",
        Refused => "refused",
    }
}

text_enum! {
    /// The problem a pharmacist raises (after the SFPC's intervention codes).
    InterventionProblem {
        Contraindication => "contraindication",
        Interaction => "interaction",
        DoseTooHigh => "dose_too_high",
        DoseTooLow => "dose_too_low",
        MissingEndDate => "missing_end_date",
        ScheduleOrAdministration => "schedule_or_administration",
        DuplicateTherapy => "duplicate_therapy",
        Other => "other",
    }
}

text_enum! {
    /// What the pharmacist proposes.
    ProposedAction {
        Stop => "stop",
        Substitute => "substitute",
        AdjustDose => "adjust_dose",
        ChangeSchedule => "change_schedule",
        AddEndDate => "add_end_date",
        Monitor => "monitor",
        Other => "other",
    }
}

/// What the addressed prescriber does with an intervention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InterventionAction {
    Accept,
    Refuse,
}

/// The next status, or why the move is illegal: an intervention is answered once.
pub fn intervention_transition(
    from: InterventionStatus,
    action: InterventionAction,
) -> Result<InterventionStatus, String> {
    use InterventionAction as A;
    use InterventionStatus as S;
    match (from, action) {
        (S::Open, A::Accept) => Ok(S::Accepted),
        (S::Open, A::Refuse) => Ok(S::Refused),
        (S::Accepted | S::Refused, _) => Err(format!("this intervention is already {from}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_handover_move() {
        use HandoverAction as A;
        use HandoverStatus as S;
        let legal = [
            (S::Sent, A::Acknowledge, S::Acknowledged),
            (S::Sent, A::Reconcile, S::Reconciled),
            (S::Sent, A::Reject, S::Rejected),
            (S::Acknowledged, A::Reconcile, S::Reconciled),
            (S::Acknowledged, A::Reject, S::Rejected),
        ];
        for from in S::ALL {
            for action in [A::Acknowledge, A::Reconcile, A::Reject] {
                let expected = legal
                    .iter()
                    .find(|(f, a, _)| f == from && *a == action)
                    .map(|(_, _, to)| *to);
                match (handover_transition(*from, action), expected) {
                    (Ok(to), Some(want)) => assert_eq!(to, want, "{from:?} {action:?}"),
                    (Err(_), None) => {}
                    (got, want) => panic!("{from:?} {action:?}: got {got:?}, want {want:?}"),
                }
            }
        }
    }

    #[test]
    fn every_consultation_move() {
        use ConsultationAction as A;
        use ConsultationStatus as S;
        let legal = [
            (S::Submitted, A::Accept, S::Accepted),
            (S::Submitted, A::Answer, S::Answered),
            (S::Submitted, A::Decline, S::Declined),
            (S::Submitted, A::Cancel, S::Cancelled),
            (S::Accepted, A::Answer, S::Answered),
            (S::Accepted, A::Decline, S::Declined),
            (S::Accepted, A::Cancel, S::Cancelled),
            (S::Answered, A::Close, S::Closed),
        ];
        let actions = [A::Accept, A::Answer, A::Decline, A::Close, A::Cancel];
        for from in S::ALL {
            for action in actions {
                let expected = legal
                    .iter()
                    .find(|(f, a, _)| f == from && *a == action)
                    .map(|(_, _, to)| *to);
                match (consultation_transition(*from, action), expected) {
                    (Ok(to), Some(want)) => assert_eq!(to, want, "{from:?} {action:?}"),
                    (Err(_), None) => {}
                    (got, want) => panic!("{from:?} {action:?}: got {got:?}, want {want:?}"),
                }
            }
        }
        assert_eq!(legal.len(), 8);
    }

    #[test]
    fn every_intervention_move() {
        use InterventionAction as A;
        use InterventionStatus as S;
        let legal = [
            (S::Open, A::Accept, S::Accepted),
            (S::Open, A::Refuse, S::Refused),
        ];
        let mut illegal = 0;
        for from in S::ALL {
            for action in [A::Accept, A::Refuse] {
                let expected = legal
                    .iter()
                    .find(|(f, a, _)| f == from && *a == action)
                    .map(|(_, _, to)| *to);
                match (intervention_transition(*from, action), expected) {
                    (Ok(to), Some(want)) => assert_eq!(to, want, "{from:?} {action:?}"),
                    (Err(_), None) => illegal += 1,
                    (got, want) => panic!("{from:?} {action:?}: got {got:?}, want {want:?}"),
                }
            }
        }
        assert_eq!(illegal, 4, "accepted and refused are final");
    }

    #[test]
    fn open_and_waiting() {
        use ConsultationStatus as S;
        let open: Vec<_> = S::ALL.iter().filter(|s| s.is_open()).collect();
        assert_eq!(open, [&S::Submitted, &S::Accepted, &S::Answered]);
        let waiting: Vec<_> = S::ALL.iter().filter(|s| s.awaits_answer()).collect();
        assert_eq!(waiting, [&S::Submitted, &S::Accepted]);
    }
}
