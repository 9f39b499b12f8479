//! Relais: shared care plans, handovers and consultations for patients on
//! opioid maintenance treatment in acute pain.

pub mod api;
pub mod auth;
pub mod cli;
pub mod clock;
pub mod config;
pub mod db;
pub mod domain;
pub mod error;
pub mod notify;
pub mod startup;
pub mod telemetry;
