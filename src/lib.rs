//! The `mcpulse` binary's library: configuration, and the wiring of roles (ingest,
//! process, serve) onto a log and an archive.

pub mod admin;
pub mod alloc;
pub mod api;
pub mod archive_store;
pub mod config;
pub mod probe_once;
pub mod roles;
pub mod routes_cli;
pub mod telemetry;

pub use config::Config;
