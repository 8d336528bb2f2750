//! The stream runtime (consume → operate → make durable → commit) and its operators.
//!
//! The first operator is the [`archive::Archiver`], which turns `spans.v1` and `probes.v1`
//! into Parquet files on object storage and commits offsets only after the files exist.

pub mod archive;
pub mod dlq;
pub mod drift;
pub mod failpoint;
pub mod forget;
pub mod incidents;
pub mod live;
pub mod operator;
pub mod runtime;
pub mod signals;
pub mod stateful;
pub mod stats;

pub use operator::{Operator, OperatorError};
pub use runtime::{Runtime, RuntimeConfig, RuntimeError};
