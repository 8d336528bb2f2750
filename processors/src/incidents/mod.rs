//! Incidents (issue 6): multi-region verdicts, severity, dedup, flapping and
//! cross-tenant storm correlation. Two stateful stages (see [`types`] for the pipeline):
//!
//! * the verdict stage ([`verdict_stage`]): `probes.v1` → one verdict per server and
//!   minute across regions → `findings.v1`, keyed by upstream cause;
//! * the incident stage ([`stage`]): `findings.v1` (verdicts, the analytic findings and
//!   alerts received on the Alertmanager API, see [`external`])
//!   → the [`engine`] (incident trackers, storm correlator, held triggers) → `alerts.v1`
//!   and the `alerts` table.

pub mod config;
pub mod engine;
pub mod external;
pub mod fleet;
pub mod incident;
pub mod provider;
pub mod rows;
pub mod stage;
pub mod storm;
pub mod types;
pub mod verdict;
pub mod verdict_stage;

pub use config::IncidentsConfig;
pub use stage::{IncidentContext, IncidentLogic, IncidentMetrics};
pub use verdict_stage::{VerdictContext, VerdictLogic, VerdictMetrics};
