//! Everything that tells people something: email templates and the outbox.

pub mod inapp;
pub mod outbox;
pub mod templates;
