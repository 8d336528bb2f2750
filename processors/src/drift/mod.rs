//! Schema drift: noticing that a server's tool list changed and saying how much it matters.
//!
//! DESIGN.md ("Schema drift") and issue 5: per (tenant, server) the operator keeps the last
//! confirmed tool list; a new tool-list hash is confirmed only after two consecutive probe
//! rounds (`drift.confirm_rounds`), and every confirmed change is diffed and classed as
//! breaking, additive or cosmetic. The finding's severity follows the worst change. A
//! *round* is every region's probe results whose `started_at` falls in the same bucket of
//! `drift.round` (default 1 minute, the prober's default interval); a hash that alternates
//! from round to round, or on which the regions of a round disagree, is reported once as
//! `fleet_inconsistent` (see [`tracker`]).
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
