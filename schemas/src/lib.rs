//! mcpulse's data contracts: topic names and headers of the log, the Arrow schemas of
//! every archive table, and the event types external producers send (with JSON Schemas).
//!
//! This crate does no I/O.

pub mod alert;
pub mod env;
pub mod external;
pub mod finding;
pub mod folder_manifest;
pub mod latency_hist;
pub mod metrics;
pub mod probe;
pub mod tables;
pub mod topics;

pub use alert::{AlertAction, AlertEvent, AlertStatus, ProviderOutage, StormSummary};
pub use external::ExternalAlert;
pub use finding::{Finding, FindingKind, FindingStatus, Severity};
pub use probe::{FailureReason, FieldError, Phase, PhaseTimings, ProbeResult, ProtocolEra};
pub use tables::Table;
pub use topics::Topics;
