//! The golden-signals operator: per (tenant, server, tool, method) and event-time minute,
//! calls, errors, a latency HdrHistogram and peak concurrency from spans; per (tenant,
//! server, region) and minute, availability and probe latency from probes. Windows close
//! on a watermark; closed windows become rows of the `signals` table and feed the rules,
//! which emit findings.

pub mod config;
pub mod logic;
pub mod row;
pub mod rules;
pub mod span_fields;
pub mod table;
pub mod windows;

pub use config::SignalsConfig;
pub use logic::{SignalsContext, SignalsLogic, SignalsMetrics, SignalsState};
