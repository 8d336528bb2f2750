//! The edges of mcpulse: OTLP/gRPC and OTLP/HTTP receivers, the probe results API, the
//! Alertmanager-compatible alerts API and tenant authentication. A request is acknowledged
//! only after the log has made everything it carried durable; nothing of a rejected
//! request is written (except on the alerts API, which, like Alertmanager, writes the
//! valid alerts of a batch and answers 400 naming the others).

pub mod alertmanager;
pub mod auth;
pub mod config;
pub mod edge;
pub mod error;
pub mod grpc;
pub mod http;
pub mod otlp_scan;
pub mod pressure;
pub mod prober;
pub mod probes;
pub mod stats;
pub mod traces;

pub use alertmanager::AlertIngest;
pub use auth::{Authenticator, Principal};
pub use config::IngestConfig;
pub use edge::Edge;
pub use error::IngestError;
pub use pressure::Backpressure;
pub use probes::ProbeIngest;
pub use traces::{ExportOutcome, TraceIngest};
