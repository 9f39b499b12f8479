//! Every email Relais sends, in one place. Subjects and bodies say what kind
//! of item waits and link to it: never a patient's name, INS, drug or free text.

/// An email to render.
#[derive(Debug, Clone)]
pub enum Email {
    /// An invitation to set a password and join the network.
    Invitation { link: String, valid_days: u64 },
}

/// A rendered email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub body: String,
}

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
                     If you did not expect this email, you can ignore it.\n\n\
                     -- Relais (this address does not read replies)\n"
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
}
