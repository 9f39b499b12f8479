//! Roles of users and kinds of organisations.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

text_enum! {
    /// What a user does in the network.
    Role {
        Admin => "admin",
        Gp => "gp",
        HospitalDoctor => "hospital_doctor",
        Specialist => "specialist",
        Pharmacist => "pharmacist",
        Nurse => "nurse",
    }
}

impl Role {
    /// GPs, hospital doctors and specialists may prescribe.
    pub fn is_prescriber(self) -> bool {
        matches!(self, Role::Gp | Role::HospitalDoctor | Role::Specialist)
    }

    /// Everyone but administrators is a clinician.
    pub fn is_clinician(self) -> bool {
        self != Role::Admin
    }

    /// Whether a user of this role may belong to an organisation of `kind`.
    pub fn fits(self, kind: OrgKind) -> bool {
        match self {
            Role::Specialist => matches!(kind, OrgKind::AddictionCentre | OrgKind::PainCentre),
            _ => true,
        }
    }
}

text_enum! {
    /// The kind of an organisation of the network.
    OrgKind {
        GpPractice => "gp_practice",
        Pharmacy => "pharmacy",
        Hospital => "hospital",
        AddictionCentre => "addiction_centre",
        PainCentre => "pain_centre",
        NursingService => "nursing_service",
    }
}

text_enum! {
    /// How a user wants to hear about new items by email.
    NotificationPreference {
        Immediate => "immediate",
        DailyDigest => "daily_digest",
        Off => "off",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trips() {
        for role in Role::ALL {
            assert_eq!(Role::parse(role.as_str()), Some(*role));
            let json = serde_json::to_string(role).unwrap();
            assert_eq!(json, format!("\"{}\"", role.as_str()));
        }
        for kind in OrgKind::ALL {
            assert_eq!(OrgKind::parse(kind.as_str()), Some(*kind));
        }
        assert_eq!(Role::parse("root"), None);
    }

    #[test]
    fn prescribers_and_specialist_centres() {
        let prescribers: Vec<_> = Role::ALL.iter().filter(|r| r.is_prescriber()).collect();
        assert_eq!(
            prescribers,
            [&Role::Gp, &Role::HospitalDoctor, &Role::Specialist]
        );
        assert!(Role::Specialist.fits(OrgKind::PainCentre));
        assert!(Role::Specialist.fits(OrgKind::AddictionCentre));
        assert!(!Role::Specialist.fits(OrgKind::Pharmacy));
        assert!(Role::Pharmacist.fits(OrgKind::Hospital));
    }
}
