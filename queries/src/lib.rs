//! SQL over the archive: a DataFusion catalog of the archive tables with hive partition
//! pruning on tenant, date and hour, tenant scoping, output formats, named queries, the
//! HTTP SQL endpoint and the PostgreSQL wire protocol.

pub mod catalog;
pub mod config;
pub mod engine;
pub mod format;
pub mod hdr;
pub mod http;
pub mod named;
pub mod named_table;
pub mod object_cache;
pub mod pg;
pub mod tenant_table;
pub mod time_pruning;
pub mod unpruned_scan;
mod view_types;
pub mod visible_store;

pub use catalog::ArchiveCatalog;
pub use config::QueryConfig;
pub use engine::{QueryEngine, QueryError, Request, RowStream, Scope};
pub use format::OutputFormat;
pub use hdr::register as register_hdr_functions;
