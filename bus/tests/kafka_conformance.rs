//! The bus conformance suite against the Kafka backend, on librdkafka's in-process mock
//! cluster (consumer groups, commits, the idempotent producer; no broker to install).

use mcpulse_bus::conformance;
use mcpulse_bus::kafka::mock::MockKafka;

macro_rules! check {
    ($name:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let mock = MockKafka::new(3);
            conformance::$name(|| {
                let mock = mock.clone();
                async move { mock.bus().await }
            })
            .await;
        }
    };
}

check!(keyed_partitioning);
check!(ordered_offsets);
check!(message_round_trip);
check!(committed_offsets_resume);
check!(redelivery_after_crash);
check!(acknowledged_messages_survive_reopen);
check!(group_split_and_rebalance);
check!(stale_commit_rejected);
check!(commits_never_go_backwards);
check!(status_reports_lag);
check!(ensure_topics_validates);
check!(pause_and_resume);
check!(shutdown_rejects_sends);
