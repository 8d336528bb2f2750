//! Helpers shared by the ingest integration tests.
pub mod fault_server;
