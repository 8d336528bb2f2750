//! Live golden signals for Prometheus: the values the signals operator and the incident
//! stage see as they read the log, kept in memory and rendered on `/metrics` (never
//! computed from the archive).
//!
//! - [`signals::LiveSignals`]: per (tenant, server, method, tool) calls, errors and a
//!   latency histogram from spans; per (tenant, server, region) availability from probe
//!   results. Fed by the signals operator ([`crate::signals`]).
//! - [`incidents::LiveIncidents`]: open incidents per (tenant, server, severity). Fed by
//!   the incident stage ([`crate::incidents`]).
//!
//! Cardinality is bounded ([`config::LiveMetricsConfig::max_series`] label sets per
//! kind, label values sanitized and cut, see [`labels`]): past the cap, values fold into
//! one `__other__` series and the label sets folded are counted. Series carry the tenant
//! label, and a scrape sees the tenants its credential allows
//! ([`mcpulse_schemas::metrics::Viewer`]).

pub mod calls;
pub mod config;
pub mod incidents;
pub mod labels;
pub mod probes;
pub mod signals;
pub mod table;

pub use config::LiveMetricsConfig;
pub use incidents::LiveIncidents;
pub use signals::LiveSignals;
