//! Domain types and rules: plain values and functions, no I/O.

pub mod contact;
pub mod role;
pub mod rpps;
