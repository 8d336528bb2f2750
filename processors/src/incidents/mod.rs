//! Incidents: multi-region verdicts, severity, dedup and cross-tenant storm correlation
//! (in progress: the pure parts first; see [`types`] for the pipeline).

pub mod types;
