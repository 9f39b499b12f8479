//! One integration-test binary: every test starts the real server over HTTP
//! against a real database and a real SMTP listener.

mod accounts;
mod auth;
mod auth_hardening;
mod care_plans;
mod cli;
mod email;
mod errors;
mod handovers;
mod health;
mod helpers;
mod matrix;
mod messaging;
mod migrations;
mod network;
mod openapi;
mod patients;
