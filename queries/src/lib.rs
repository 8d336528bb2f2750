//! SQL over the archive: a DataFusion catalog of the archive tables with hive partition
//! pruning on tenant, date and hour, tenant scoping, output formats and the HTTP SQL
//! endpoint.

pub mod catalog;
pub mod config;
pub mod engine;
pub mod format;
pub mod hdr;
pub mod http;
pub mod time_pruning;

pub use catalog::ArchiveCatalog;
pub use config::QueryConfig;
pub use engine::{QueryEngine, QueryError, Scope};
pub use format::OutputFormat;
pub use hdr::register as register_hdr_functions;
