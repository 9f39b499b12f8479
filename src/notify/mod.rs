//! Everything that tells people something: email templates and the outbox,
//! in-app notifications, live events.

pub mod events;
pub mod inapp;
pub mod outbox;
pub mod templates;
