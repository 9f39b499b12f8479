//! Everything that tells people something: email templates and the outbox.

pub mod outbox;
pub mod templates;
