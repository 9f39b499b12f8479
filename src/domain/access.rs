//! Who may see a patient, and do what: one pure function over the caller and
//! the patient's relations. Every patient-scoped route goes through it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::role::Role;

text_enum! {
    /// The documented reason a user may access a patient (or an admin record).
    Basis {
        Team => "team",
        Consultation => "consultation",
        Emergency => "emergency",
        OwnAccount => "self",
        Admin => "admin",
    }
}

text_enum! {
    /// The patient's decision on sharing within the network (CSP L1110-4).
    ConsentStatus {
        Granted => "granted",
        Refused => "refused",
        Withdrawn => "withdrawn",
    }
}

text_enum! {
    /// A member's place in the care team.
    TeamRole {
        Referent => "referent",
        Member => "member",
    }
}

/// The user asking.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    pub user_id: &'a str,
    pub role: Role,
    pub organization_id: Option<&'a str>,
}

/// An active care-team member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub user_id: String,
    pub organization_id: Option<String>,
    pub team_role: TeamRole,
}

/// What is known of a patient's relations, as far as access goes.
#[derive(Debug, Clone, Default)]
pub struct Relations {
    /// Active members only.
    pub members: Vec<Member>,
    /// The latest consent decision, if any was recorded.
    pub consent: Option<ConsentStatus>,
    /// Organisations (centres) with an open consultation about the patient.
    pub consultation_centres: Vec<String>,
    /// The latest expiry among the caller's emergency grants, if any.
    pub emergency_until: Option<DateTime<Utc>>,
}

impl Relations {
    /// The organisation of the referent, whose members need no consent.
    pub fn referent_organization(&self) -> Option<&str> {
        self.members
            .iter()
            .find(|m| m.team_role == TeamRole::Referent)
            .and_then(|m| m.organization_id.as_deref())
    }

    /// Whether members of `organization_id` may share this patient's data now.
    pub fn sharing_allowed_with(&self, organization_id: Option<&str>) -> bool {
        self.consent == Some(ConsentStatus::Granted)
            || (organization_id.is_some() && organization_id == self.referent_organization())
    }
}

/// The caller's basis on the patient, or none. Administrators have no clinical access.
pub fn basis(caller: Caller<'_>, relations: &Relations, now: DateTime<Utc>) -> Option<Basis> {
    if caller.role == Role::Admin {
        return None;
    }
    let on_team = relations
        .members
        .iter()
        .any(|m| m.user_id == caller.user_id);
    if on_team && relations.sharing_allowed_with(caller.organization_id) {
        return Some(Basis::Team);
    }
    // A centre's specialists, while a consultation about the patient is open
    // there, under the consent rule like any member of another organisation.
    if caller.role == Role::Specialist
        && caller
            .organization_id
            .is_some_and(|org| relations.consultation_centres.iter().any(|c| c == org))
        && relations.sharing_allowed_with(caller.organization_id)
    {
        return Some(Basis::Consultation);
    }
    if relations.emergency_until.is_some_and(|until| until > now) {
        return Some(Basis::Emergency);
    }
    None
}

/// What a caller wants to do with a patient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// Read the record, care plan, observations, threads.
    Read,
    /// Record a nurse's or pharmacist's observation.
    RecordObservation,
    /// Write the care plan or the patient's details.
    WritePlan,
    /// Add or remove team members, record consent, decide access requests.
    ManageTeam,
    /// Read the patient's audit trail.
    ReadAudit,
    /// A pharmacist's act on the patient (an intervention on the plan, a
    /// dispensation): a pharmacist with a team basis.
    Pharmacy,
    /// Attach the patient to a consultation, name someone on the patient's
    /// records: a team basis, whatever the role (never emergency or consultation).
    Refer,
}

/// Whether `basis` lets a user of `role` do `permission`.
pub fn allows(basis: Basis, role: Role, permission: Permission) -> bool {
    match permission {
        Permission::Read => matches!(basis, Basis::Team | Basis::Consultation | Basis::Emergency),
        Permission::RecordObservation => matches!(basis, Basis::Team | Basis::Emergency),
        Permission::WritePlan | Permission::ManageTeam | Permission::ReadAudit => {
            basis == Basis::Team && role.is_prescriber()
        }
        Permission::Refer => basis == Basis::Team,
        Permission::Pharmacy => basis == Basis::Team && role == Role::Pharmacist,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    const REFERENT_ORG: &str = "org-gp";
    const OTHER_ORG: &str = "org-pharmacy";

    fn relations(consent: Option<ConsentStatus>) -> Relations {
        Relations {
            members: vec![
                Member {
                    user_id: "gp".into(),
                    organization_id: Some(REFERENT_ORG.into()),
                    team_role: TeamRole::Referent,
                },
                Member {
                    user_id: "colleague".into(),
                    organization_id: Some(REFERENT_ORG.into()),
                    team_role: TeamRole::Member,
                },
                Member {
                    user_id: "pharmacist".into(),
                    organization_id: Some(OTHER_ORG.into()),
                    team_role: TeamRole::Member,
                },
            ],
            consent,
            ..Relations::default()
        }
    }

    fn caller<'a>(user_id: &'a str, role: Role, org: &'a str) -> Caller<'a> {
        Caller {
            user_id,
            role,
            organization_id: Some(org),
        }
    }

    #[test]
    fn team_members_and_the_consent_rule() {
        let now = Utc::now();
        let cases = [
            // (consent, user, org, expected)
            (None, "gp", REFERENT_ORG, Some(Basis::Team)),
            (None, "colleague", REFERENT_ORG, Some(Basis::Team)),
            (None, "pharmacist", OTHER_ORG, None),
            (
                Some(ConsentStatus::Granted),
                "pharmacist",
                OTHER_ORG,
                Some(Basis::Team),
            ),
            (Some(ConsentStatus::Refused), "pharmacist", OTHER_ORG, None),
            (
                Some(ConsentStatus::Withdrawn),
                "pharmacist",
                OTHER_ORG,
                None,
            ),
            (
                Some(ConsentStatus::Withdrawn),
                "colleague",
                REFERENT_ORG,
                Some(Basis::Team),
            ),
            (Some(ConsentStatus::Granted), "stranger", OTHER_ORG, None),
        ];
        for (consent, user, org, expected) in cases {
            let got = basis(
                caller(user, Role::Pharmacist, org),
                &relations(consent),
                now,
            );
            assert_eq!(got, expected, "{user} with consent {consent:?}");
        }
    }

    #[test]
    fn administrators_have_no_clinical_access() {
        let mut rel = relations(Some(ConsentStatus::Granted));
        rel.members[0].user_id = "admin".into();
        rel.emergency_until = Some(Utc::now() + Duration::hours(1));
        assert_eq!(
            basis(caller("admin", Role::Admin, REFERENT_ORG), &rel, Utc::now()),
            None
        );
    }

    #[test]
    fn consultation_basis_is_for_the_centre_specialists() {
        let mut rel = relations(Some(ConsentStatus::Granted));
        rel.consultation_centres = vec!["centre".into()];
        let now = Utc::now();
        assert_eq!(
            basis(caller("s", Role::Specialist, "centre"), &rel, now),
            Some(Basis::Consultation)
        );
        assert_eq!(basis(caller("n", Role::Nurse, "centre"), &rel, now), None);
        assert_eq!(
            basis(caller("s", Role::Specialist, "elsewhere"), &rel, now),
            None
        );
    }

    #[test]
    fn consultation_basis_obeys_consent() {
        let now = Utc::now();
        for (consent, expected) in [
            (None, None),
            (Some(ConsentStatus::Refused), None),
            (Some(ConsentStatus::Withdrawn), None),
            (Some(ConsentStatus::Granted), Some(Basis::Consultation)),
        ] {
            let mut rel = relations(consent);
            rel.consultation_centres = vec!["centre".into()];
            assert_eq!(
                basis(caller("s", Role::Specialist, "centre"), &rel, now),
                expected,
                "consent {consent:?}"
            );
        }
        // A centre that is the referent's own organisation needs no consent.
        let mut rel = relations(Some(ConsentStatus::Withdrawn));
        rel.consultation_centres = vec![REFERENT_ORG.into()];
        assert_eq!(
            basis(caller("s", Role::Specialist, REFERENT_ORG), &rel, now),
            Some(Basis::Consultation)
        );
    }

    #[test]
    fn only_a_team_basis_refers() {
        assert!(allows(Basis::Team, Role::Nurse, Permission::Refer));
        assert!(!allows(Basis::Emergency, Role::Gp, Permission::Refer));
        assert!(!allows(
            Basis::Consultation,
            Role::Specialist,
            Permission::Refer
        ));
    }

    #[test]
    fn emergency_grants_expire() {
        let now = Utc::now();
        let mut rel = relations(None);
        rel.emergency_until = Some(now + Duration::minutes(1));
        assert_eq!(
            basis(caller("nurse", Role::Nurse, "n"), &rel, now),
            Some(Basis::Emergency)
        );
        rel.emergency_until = Some(now);
        assert_eq!(basis(caller("nurse", Role::Nurse, "n"), &rel, now), None);
        // Emergency access does not wait for consent: that is its purpose.
        rel.emergency_until = Some(now + Duration::minutes(1));
        assert_eq!(
            basis(caller("pharmacist", Role::Pharmacist, OTHER_ORG), &rel, now),
            Some(Basis::Emergency)
        );
    }

    #[test]
    fn permissions_by_basis_and_role() {
        use Permission::*;
        assert!(allows(Basis::Team, Role::Gp, WritePlan));
        assert!(!allows(Basis::Team, Role::Pharmacist, WritePlan));
        assert!(!allows(Basis::Emergency, Role::Gp, WritePlan));
        assert!(!allows(Basis::Consultation, Role::Specialist, WritePlan));
        assert!(allows(Basis::Emergency, Role::Nurse, RecordObservation));
        assert!(!allows(
            Basis::Consultation,
            Role::Specialist,
            RecordObservation
        ));
        for basis in [Basis::Team, Basis::Consultation, Basis::Emergency] {
            assert!(allows(basis, Role::Nurse, Read));
        }
        assert!(!allows(Basis::Admin, Role::Admin, Read));
        assert!(allows(Basis::Team, Role::Pharmacist, Pharmacy));
        assert!(!allows(Basis::Emergency, Role::Pharmacist, Pharmacy));
        assert!(!allows(Basis::Team, Role::Gp, Pharmacy));
        assert!(!allows(Basis::Team, Role::Nurse, Pharmacy));
        assert!(allows(Basis::Team, Role::HospitalDoctor, ManageTeam));
        assert!(!allows(Basis::Team, Role::Nurse, ReadAudit));
    }
}
