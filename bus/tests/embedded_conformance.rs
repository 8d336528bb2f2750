//! The conformance suite against the embedded log, one test per check so failures are
//! named. Each test gets its own directory; `make_bus` reopens the log in it.

use std::future::Ready;
use std::path::Path;

use mcpulse_bus::DynBus;
use mcpulse_bus::conformance;
use mcpulse_bus::embedded::{EmbeddedBus, EmbeddedConfig};

/// A factory opening the embedded log in `dir` (small segments, so rolls happen too).
fn factory(dir: &Path) -> impl Fn() -> Ready<DynBus> + use<> {
    let config = EmbeddedConfig {
        segment_bytes: 64 << 10,
        ..EmbeddedConfig::new(dir)
    };
    move || {
        std::future::ready(
            EmbeddedBus::open(config.clone()).expect("open the embedded log") as DynBus,
        )
    }
}

macro_rules! check {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let dir = tempfile::tempdir().unwrap();
            conformance::$name(factory(dir.path())).await;
        }
    )*};
}

check!(
    keyed_partitioning,
    ordered_offsets,
    message_round_trip,
    committed_offsets_resume,
    redelivery_after_crash,
    acknowledged_messages_survive_reopen,
    group_split_and_rebalance,
    stale_commit_rejected,
    commits_never_go_backwards,
    status_reports_lag,
    ensure_topics_validates,
    pause_and_resume,
    shutdown_rejects_sends,
);

/// All checks in one directory, as they would share one Kafka cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_all_in_one_directory() {
    let dir = tempfile::tempdir().unwrap();
    conformance::run_all(factory(dir.path())).await;
}
