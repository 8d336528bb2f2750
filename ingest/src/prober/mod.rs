//! mcpulse's own MCP prober: [`probe::Prober`] runs the protocol sequence against one
//! target and returns its `ProbeResult`. (In progress: the scheduler over `targets.yaml`
//! and the `mcpulse probe` command come next.)

pub mod http_transport;
pub mod mcp;
pub mod probe;
pub mod scheduler;
pub mod sequence;
pub mod target_guard;
pub mod targets;
pub mod timed_http;
pub mod tool_hash;
