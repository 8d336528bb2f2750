//! mcpulse's own MCP prober: [`targets`] reads `targets.yaml`, [`probe::Prober`] runs the
//! protocol sequence ([`sequence`] over [`http_transport`] and [`timed_http`]) against one
//! target after [`target_guard`] checked where it resolves, and returns its `ProbeResult`;
//! [`scheduler::Scheduler`] probes every target on its interval with bounded concurrency
//! and hands the results to the probe ingest path. [`config`] is `prober:` in
//! `mcpulse.yaml`.

pub mod config;
pub mod http_transport;
pub mod mcp;
pub mod probe;
pub mod scheduler;
pub mod sequence;
pub mod target_guard;
pub mod targets;
pub mod timed_http;
pub mod tool_hash;
