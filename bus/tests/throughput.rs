//! Rough throughput of the embedded log (ignored by default; run with
//! `cargo test --release -p mcpulse-bus --test throughput -- --ignored --nocapture`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mcpulse_bus::embedded::{EmbeddedBus, EmbeddedConfig};
use mcpulse_bus::{Bus, ConsumerEvent, Message, TopicSpec};

async fn run(
    label: &str,
    value_len: usize,
    batch: usize,
    senders: usize,
    batches_per_sender: usize,
) {
    let dir = tempfile::tempdir().unwrap();
    let bus = EmbeddedBus::open(EmbeddedConfig {
        max_pending_bytes: 256 << 20,
        ..EmbeddedConfig::new(dir.path())
    })
    .unwrap();
    bus.ensure_topics(&[TopicSpec {
        name: "t".into(),
        partitions: 4,
        replication: 1,
    }])
    .await
    .unwrap();
    let value = Bytes::from(vec![7u8; value_len]);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for s in 0..senders {
        let producer = bus.producer();
        let value = value.clone();
        tasks.push(tokio::spawn(async move {
            for b in 0..batches_per_sender {
                let messages = (0..batch)
                    .map(|i| {
                        Message::new(
                            Some(Bytes::from(format!("k{}", s * 7919 + b * 31 + i))),
                            value.clone(),
                        )
                    })
                    .collect();
                producer.send("t", messages).await.expect("send");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let total = senders * batches_per_sender * batch;
    let secs = started.elapsed().as_secs_f64();
    let mb = (total * value_len) as f64 / (1 << 20) as f64;
    println!(
        "{label}: produced {total} msgs in {secs:.2}s = {:.0} msg/s, {:.0} MiB/s",
        total as f64 / secs,
        mb / secs
    );

    let mut consumer = bus.consumer("g", &["t".to_string()]).await.unwrap();
    let started = Instant::now();
    let mut read = 0;
    while read < total {
        if let ConsumerEvent::Records(r) = consumer.poll(Duration::from_millis(100)).await.unwrap()
        {
            read += r.len();
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{label}: consumed {read} msgs in {secs:.2}s = {:.0} msg/s, {:.0} MiB/s",
        read as f64 / secs,
        mb / secs
    );
    let bus: Arc<dyn Bus> = bus;
    bus.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark"]
async fn throughput() {
    run("small 200 B", 200, 100, 64, 80).await;
    run("large 256 KiB", 256 << 10, 4, 16, 16).await;
    run("large 1 MiB", 1 << 20, 1, 32, 16).await;
}
