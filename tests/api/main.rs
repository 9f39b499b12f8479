//! One integration-test binary: every test starts the real server over HTTP
//! against a real database and a real SMTP listener.

mod accounts;
mod audit;
mod auth;
mod auth_hardening;
mod care_plans;
mod cli;
mod consultations;
mod email;
mod errors;
mod events;
mod fixtures;
mod handovers;
mod hardening;
mod health;
mod helpers;
mod matrix;
mod messaging;
mod migrations;
mod one_door;
mod openapi;
mod patients;
