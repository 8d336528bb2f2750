//! Schema drift: noticing that a server's tool list changed and saying how much it matters.
//!
//! DESIGN.md ("Schema drift") and issue 5: per (tenant, server) the operator keeps the last
//! confirmed tool list; a new tool-list hash is confirmed only after two consecutive probe
//! rounds, and every confirmed change is diffed and classed as breaking, additive or
//! cosmetic. The finding's severity follows the worst change.
//!
//! The pure parts live here: [`diff::diff_tools`] compares two canonical tool lists (as
//! produced by the prober's `canonical_tools`) and classifies every change;
//! [`tracker::ServerTracker`] is the per-(tenant, server) state machine (confirmation,
//! `fleet_inconsistent`, findings via [`tracker::to_finding`]); [`rows`] turns its events
//! into `drift` table rows. The operator's I/O shell builds on them.

pub mod diff;
pub mod logic;
pub mod rows;
pub mod tracker;

pub use diff::{Change, ChangeClass, ChangeKind, diff_tools, worst};
pub use logic::{DriftContext, DriftLogic, DriftMetrics, DriftState};
pub use rows::{DriftRow, row_of, to_batch};
pub use tracker::{DriftConfig, DriftEvent, Observation, ServerTracker, to_finding};
