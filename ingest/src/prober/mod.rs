//! mcpulse's own MCP prober (work in progress: the pieces below are built first; the
//! probe sequence and the `mcpulse probe` command come next).

pub mod http_transport;
pub mod mcp;
pub mod sequence;
pub mod target_guard;
pub mod targets;
pub mod timed_http;
pub mod tool_hash;
