//! Schema drift: noticing that a server's tool list changed and saying how much it matters.
//!
//! DESIGN.md ("Schema drift") and issue 5: per (tenant, server) the operator keeps the last
//! confirmed tool list; a new tool-list hash is confirmed only after two consecutive probe
//! rounds, and every confirmed change is diffed and classed as breaking, additive or
//! cosmetic. The finding's severity follows the worst change.
//!
//! This module so far holds the pure part: [`diff::diff_tools`] compares two canonical
//! tool lists (as produced by the prober's `canonical_tools`) and classifies every change.
//! The stateful operator (confirmation, `fleet_inconsistent`, the `drift` table and the
//! `schema_drift` finding) builds on it.

pub mod diff;

pub use diff::{Change, ChangeClass, ChangeKind, diff_tools, worst};
