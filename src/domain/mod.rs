//! Domain types and rules: plain values and functions, no I/O.

pub mod access;
pub mod clinical;
pub mod contact;
pub mod dispensing;
pub mod drugs;
pub mod in_force;
pub mod ins;
pub mod json;
pub mod messaging;
pub mod metrics;
pub mod patient;
pub mod plan;
pub mod plan_diff;
pub mod role;
pub mod rpps;
pub mod rules;
pub mod text;
pub mod versioning;
pub mod watch;
pub mod workflow;
