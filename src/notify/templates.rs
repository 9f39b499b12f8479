//! Every email Relais sends, in one place. Subjects and bodies say what kind
//! of item waits and link to it: never a patient's name, INS, drug or free text.
//! No variant can carry such data: they take kinds, counts and links only.

use crate::domain::messaging::InboxCounts;

/// An email to render.
#[derive(Debug, Clone)]
pub enum Email {
    /// An invitation to set a password and join the network.
    Invitation { link: String, valid_days: u64 },
    /// Something new waits in the recipient's Relais inbox.
    NewItem { what: ItemKind, link: String },
    /// The once-a-day summary for users who chose `daily_digest`: counts only.
    Digest { counts: InboxCounts, link: String },
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
    NewMessage,
    InterventionReceived,
    InterventionDecided,
    EarlyRefill,
    TemporaryChangeEnding,
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
        ItemKind::NewMessage,
        ItemKind::InterventionReceived,
        ItemKind::InterventionDecided,
        ItemKind::EarlyRefill,
        ItemKind::TemporaryChangeEnding,
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
            ItemKind::NewMessage => {
                "A colleague wrote a new message in a conversation you take part in."
            }
            ItemKind::InterventionReceived => {
                "A pharmacist raised an intervention on a care plan you prescribe."
            }
            ItemKind::InterventionDecided => "An intervention you raised has been answered.",
            ItemKind::EarlyRefill => {
                "A pharmacy recorded a dispensation earlier than the previous supply allows."
            }
            ItemKind::TemporaryChangeEnding => {
                "A temporary treatment change of one of your patients ends tomorrow."
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
            Email::Digest { counts, link } => {
                let lines: String = counts
                    .lines()
                    .into_iter()
                    .map(|(n, one, many)| format!("- {n} {}\n", if n == 1 { one } else { many }))
                    .collect();
                Rendered {
                    subject: "Relais: your daily summary".into(),
                    body: format!(
                        "Hello,\n\nWaiting for you in Relais today:\n{lines}\n\
                         Sign in to Relais to see them:\n{link}\n\n\
                         You receive this summary once a day; change this in your account settings.\n\n{FOOTER}"
                    ),
                }
            }
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

    /// One of every email Relais can send. The matches make the compiler
    /// refuse a new variant or kind until it is listed here.
    fn every_email() -> Vec<Email> {
        let link = "https://relais.example/x/0190f0e2-7c1a-7000-8000-000000000001".to_owned();
        let mut emails = vec![
            Email::Invitation {
                link: link.clone(),
                valid_days: 7,
            },
            Email::Digest {
                counts: InboxCounts {
                    unread_threads: 3,
                    unread_notifications: 1,
                    ..InboxCounts::default()
                },
                link: link.clone(),
            },
        ];
        for &what in ItemKind::ALL {
            match what {
                ItemKind::EmergencyAccess
                | ItemKind::AccessRequest
                | ItemKind::AccessRequestDecided
                | ItemKind::AddedToCareTeam
                | ItemKind::ObservationAlert
                | ItemKind::HandoverReceived
                | ItemKind::HandoverDecided
                | ItemKind::HandoverOverdue
                | ItemKind::ConsultationReceived
                | ItemKind::ConsultationAnswered
                | ItemKind::ConsultationOverdue
                | ItemKind::NewMessage
                | ItemKind::InterventionReceived
                | ItemKind::InterventionDecided
                | ItemKind::EarlyRefill
                | ItemKind::TemporaryChangeEnding => {}
            }
            emails.push(Email::NewItem {
                what,
                link: link.clone(),
            });
        }
        for email in &emails {
            match email {
                Email::Invitation { .. } | Email::NewItem { .. } | Email::Digest { .. } => {}
            }
        }
        emails
    }

    #[test]
    fn every_email_is_free_of_health_data_and_links_to_its_item() {
        // The fixture of the integration test: what a patient record and its
        // messages hold. None of it can reach a template, and none appears.
        let forbidden = [
            "Kerbrat-Zyxqwerty",
            "Maïwenn-Oriane",
            "184127645108946",
            "1841276451089",
            "methadone",
            "méthadone",
            "buprenorphine",
            "tramadol",
            "douleur",
            "pain",
            "opioid",
        ];
        let emails = every_email();
        assert_eq!(emails.len(), 2 + ItemKind::ALL.len());
        for email in emails {
            let rendered = email.render();
            for text in [&rendered.subject, &rendered.body] {
                let lower = text.to_lowercase();
                for bad in forbidden {
                    assert!(
                        !lower.contains(&bad.to_lowercase()),
                        "{bad:?} in {email:?}: {text}"
                    );
                }
            }
            assert!(
                rendered
                    .body
                    .contains("https://relais.example/x/0190f0e2-7c1a-7000-8000-000000000001"),
                "{email:?} has no link"
            );
            assert!(rendered.subject.starts_with("Relais") || rendered.subject.contains("Relais"));
            assert!(rendered.body.ends_with(FOOTER));
        }
    }

    #[test]
    fn digest_lists_counts_only() {
        let rendered = Email::Digest {
            counts: InboxCounts {
                unread_threads: 1,
                unread_notifications: 4,
                ..InboxCounts::default()
            },
            link: "https://relais.example/inbox".into(),
        }
        .render();
        assert!(
            rendered
                .body
                .contains("- 1 conversation with unread messages\n")
        );
        assert!(rendered.body.contains("- 4 unread notifications\n"));
        assert_eq!(rendered.subject, "Relais: your daily summary");
    }
}
