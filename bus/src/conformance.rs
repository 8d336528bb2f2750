//! The conformance suite every log backend must pass, written against the
//! [`Bus`](crate::Bus), [`Producer`](crate::Producer) and [`Consumer`](crate::Consumer) traits only.
//!
//! Each check takes a factory `make_bus` that opens the backend over the *same* storage
//! each time it is called (same directory, same cluster), so a check can simulate a crash:
//! drop every handle without committing or shutting down, then open a new bus. The factory
//! is called again only after every handle of the previous bus was dropped. Checks use
//! unique topic and group names, so they may share storage, and they panic with a message
//! on the first violated expectation.
//!
//! Checks create their topics with [`Bus::ensure_topics`](crate::Bus::ensure_topics)
//! (they do not rely on automatic topic creation), wait at most [`WAIT`] for anything, and poll with short timeouts.
//!
//! ```ignore
//! #[tokio::test]
//! async fn keyed_partitioning() {
//!     let dir = tempfile::tempdir().unwrap();
//!     let config = EmbeddedConfig::new(dir.path());
//!     conformance::keyed_partitioning(|| async { EmbeddedBus::open(config.clone()).unwrap() as DynBus }).await;
//! }
//! ```

mod groups;
mod log;
mod support;

use std::future::Future;

pub use groups::*;
pub use log::*;
pub use support::{WAIT, keys_for_partitions, unique};

use crate::DynBus;

/// Runs every check in turn.
pub async fn run_all<F, Fut>(make_bus: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = DynBus>,
{
    keyed_partitioning(&make_bus).await;
    ordered_offsets(&make_bus).await;
    message_round_trip(&make_bus).await;
    committed_offsets_resume(&make_bus).await;
    redelivery_after_crash(&make_bus).await;
    acknowledged_messages_survive_reopen(&make_bus).await;
    group_split_and_rebalance(&make_bus).await;
    stale_commit_rejected(&make_bus).await;
    commits_never_go_backwards(&make_bus).await;
    status_reports_lag(&make_bus).await;
    ensure_topics_validates(&make_bus).await;
    pause_and_resume(&make_bus).await;
    shutdown_rejects_sends(&make_bus).await;
}
