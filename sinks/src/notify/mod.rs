//! The notification stage: `alerts.v1` → the receivers of `routes.yaml`, once.
//!
//! A stream operator ([`NotifyOperator`], consumer group `mcpulse-notify`) driven by the
//! processors' runtime. For each incident transition it:
//!
//! 1. routes it ([`crate::routes::RoutesFile::route`]; the file is reloaded when it
//!    changes) and checks the silences; a muted or silenced notification is recorded as
//!    such (a row, and finished in the notification log) and not sent;
//! 2. skips every integration whose [`nflog`] entry already lists the event id (a replay
//!    after a crash re-reads records whose notifications went out);
//! 3. queues one notification per remaining integration on its destination's worker
//!    ([`dispatch`]): fan-out is independent, each destination has its own queue,
//!    retries (exponential backoff, full jitter, `Retry-After` honoured), circuit
//!    breaker and token bucket; a notification that fails for good goes to the
//!    dead-letter topic with the reason ([`dead_letter`]);
//! 4. as soon as a notification finished, its outcome (with the handle the provider
//!    gave: PagerDuty dedup key, Discord message id, …) is written to the partition's
//!    journal ([`store`]), durably, before anything else happens.
//!
//! A per-tenant notification budget (`notify.budget`, off by default) folds the
//! notifications of a tenant's new incidents past its budget into one digest per
//! integration, sent once per interval ([`budget`]).
//!
//! Every `flush_interval` each partition writes the attempts as rows of the
//! `notifications` table (one object per tenant and hour, named
//! `{topic}-{partition}-{seq}.parquet`, so a replay overwrites instead of doubling),
//! checkpoints its notification log with the offset it covers, deletes the journal
//! entries the checkpoint folded in, and reports for commit the offset below which every
//! record's notifications are finished (delivered, skipped, dead-lettered, muted or
//! silenced). Incidents still open re-send their last transition after the route's
//! `repeat_interval`.
//!
//! On start (or when a partition is assigned) the checkpoint and the journal entries
//! after it are read back; records below the checkpoint's offset are skipped. The one
//! window left is a crash between a provider's answer and the journal write (a single
//! fsync): that notification is sent again on replay (PagerDuty and OpsGenie fold it by
//! dedup key / alias; a Discord webhook would show a second message).

pub mod background;
pub mod budget;
pub mod config;
pub mod dead_letter;
pub mod dispatch;
pub mod error;
pub mod flush;
pub mod metrics;
pub mod nflog;
pub mod operator;
pub mod partition;
pub mod recorder;
pub mod rows;
pub mod shared;
pub mod store;
pub mod targets;
pub mod watched;

#[cfg(test)]
mod testutil;

pub use config::NotifyConfig;
pub use error::NotifyError;
pub use metrics::NotifyMetrics;
pub use operator::{NotifyOperator, NotifySetup};
pub use targets::{Routing, Target};

/// Consumer group of the notification stage.
pub const GROUP_NOTIFY: &str = "mcpulse-notify";
