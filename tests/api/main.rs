//! One integration-test binary: every test starts the real server over HTTP
//! against a real database and a real SMTP listener.

mod accounts;
mod audit;
mod auth;
mod auth_hardening;
mod care_plans;
mod cli;
mod clinical;
mod consultations;
mod dead_peer;
mod email;
mod errors;
mod events;
mod fhir;
mod fixtures;
mod follow_up;
mod handovers;
mod hardening;
mod health;
mod helpers;
mod instances;
mod interventions;
mod matrix;
mod messaging;
mod mfa;
mod migrations;
mod oidc;
mod one_door;
mod openapi;
mod ops;
mod patients;
mod web;
