//! Domain types and rules: plain values and functions, no I/O.

pub mod access;
pub mod contact;
pub mod ins;
pub mod messaging;
pub mod role;
pub mod rpps;
