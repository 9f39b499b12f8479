//! Every email Relais sends, in one place. Subjects and bodies say what kind
//! of item waits and link to it: never a patient's name, INS, drug or free text.

/// An email to render.
#[derive(Debug, Clone)]
pub enum Email {
    /// An invitation to set a password and join the network.
    Invitation { link: String, valid_days: u64 },
    /// Something new waits in the recipient's Relais inbox.
    NewItem { what: ItemKind, link: String },
}

/// The kinds of item an email may announce, each with a fixed wording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemKind {
    EmergencyAccess,
    AccessRequest,
    AccessRequestDecided,
    AddedToCareTeam,
    ObservationAlert,
    HandoverReceived,
    HandoverDecided,
    HandoverOverdue,
    ConsultationReceived,
    ConsultationAnswered,
    ConsultationOverdue,
}

impl ItemKind {
    /// Every kind, for tests that render them all.
    pub const ALL: &'static [ItemKind] = &[
        ItemKind::EmergencyAccess,
        ItemKind::AccessRequest,
        ItemKind::AccessRequestDecided,
        ItemKind::AddedToCareTeam,
        ItemKind::ObservationAlert,
        ItemKind::HandoverReceived,
        ItemKind::HandoverDecided,
        ItemKind::HandoverOverdue,
        ItemKind::ConsultationReceived,
        ItemKind::ConsultationAnswered,
        ItemKind::ConsultationOverdue,
    ];
}

impl ItemKind {
    fn sentence(self) -> &'static str {
        match self {
            ItemKind::EmergencyAccess => {
                "An emergency access was opened on a patient of your care team."
            }
            ItemKind::AccessRequest => {
                "A colleague asks to join the care team of one of your patients."
            }
            ItemKind::AccessRequestDecided => "Your request to join a care team has been answered.",
            ItemKind::AddedToCareTeam => "You have been added to a patient's care team.",
            ItemKind::ObservationAlert => {
                "An observation of one of your patients crossed an alert threshold."
            }
            ItemKind::HandoverReceived => "A discharge handover is waiting for you.",
            ItemKind::HandoverDecided => "A discharge handover you sent has been answered.",
            ItemKind::HandoverOverdue => {
                "A discharge handover has not been acknowledged within its due time."
            }
            ItemKind::ConsultationReceived => "A consultation request is waiting for your centre.",
            ItemKind::ConsultationAnswered => "A consultation request you sent has been answered.",
            ItemKind::ConsultationOverdue => {
                "A consultation request is overdue: it has not been answered within its due time."
            }
        }
    }
}

/// A rendered email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub body: String,
}

const FOOTER: &str = "-- Relais (this address does not read replies)\n";

impl Email {
    /// The subject and plain-text body.
    pub fn render(&self) -> Rendered {
        match self {
            Email::Invitation { link, valid_days } => Rendered {
                subject: "Your invitation to Relais".into(),
                body: format!(
                    "Hello,\n\n\
                     You have been invited to Relais, the coordination service of your care network.\n\n\
                     Choose your password here (the link works once and expires in {valid_days} days):\n\
                     {link}\n\n\
                     If you did not expect this email, you can ignore it.\n\n{FOOTER}"
                ),
            },
            Email::NewItem { what, link } => Rendered {
                subject: "Relais: a new item is waiting for you".into(),
                body: format!(
                    "Hello,\n\n{}\nSign in to Relais to see it:\n{link}\n\n{FOOTER}",
                    what.sentence()
                ),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invitation_carries_the_link() {
        let rendered = Email::Invitation {
            link: "https://relais.example/invitations/abc".into(),
            valid_days: 7,
        }
        .render();
        assert!(
            rendered
                .body
                .contains("https://relais.example/invitations/abc")
        );
        assert!(rendered.body.contains("7 days"));
    }

    #[test]
    fn new_item_emails_say_only_what_kind_waits() {
        for &what in ItemKind::ALL {
            let rendered = Email::NewItem {
                what,
                link: "https://relais.example/notifications".into(),
            }
            .render();
            assert_eq!(rendered.subject, "Relais: a new item is waiting for you");
            assert!(rendered.body.contains(what.sentence()));
            assert!(
                rendered
                    .body
                    .contains("https://relais.example/notifications")
            );
        }
    }
}
