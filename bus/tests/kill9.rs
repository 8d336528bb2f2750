//! Durability under `kill -9`: a child process sends as fast as it can and reports every
//! acknowledged message; the parent kills it mid-stream with SIGKILL, reopens the log and
//! checks every acknowledged message is there, intact, at its acknowledged offset.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use mcpulse_bus::embedded::{EmbeddedBus, EmbeddedConfig};
use mcpulse_bus::{Bus, ConsumerEvent, Message};

const CHILD_ENV: &str = "MCPULSE_BUS_KILL9_CHILD_DIR";
const TEST_NAME: &str = "acknowledged_messages_survive_kill_9";

fn config(dir: &str) -> EmbeddedConfig {
    EmbeddedConfig {
        segment_bytes: 256 << 10,
        ..EmbeddedConfig::new(dir)
    }
}

fn value(task: usize, i: usize) -> Vec<u8> {
    let mut v = format!("{task}-{i}:").into_bytes();
    v.resize(1500 + (i % 7) * 100, b'a' + (task % 26) as u8);
    v
}

/// The child: sends until killed, printing `ack {partition} {offset} {task} {i}`.
fn child(dir: &str) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let bus = EmbeddedBus::open(config(dir)).unwrap();
        let mut tasks = Vec::new();
        for task in 0..8 {
            let producer = bus.producer();
            tasks.push(tokio::spawn(async move {
                for i in (0..).step_by(5) {
                    let messages = (i..i + 5)
                        .map(|j| Message::new(None, value(task, j)))
                        .collect();
                    let deliveries = producer.send("t", messages).await.unwrap();
                    for (j, d) in deliveries.iter().enumerate() {
                        println!("ack {} {} {task} {}", d.partition, d.offset, i + j);
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
}

#[test]
fn acknowledged_messages_survive_kill_9() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        child(&dir);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let dir_str = dir.path().to_str().unwrap().to_owned();
    let mut proc = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, &dir_str)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut acked: BTreeMap<(u32, u64), (usize, usize)> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut lines = BufReader::new(proc.stdout.take().unwrap()).lines();
    while acked.len() < 3000 && Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else { break };
        let Some(rest) = line.strip_prefix("ack ") else {
            continue;
        };
        let f: Vec<u64> = rest.split(' ').map(|x| x.parse().unwrap()).collect();
        acked.insert((f[0] as u32, f[1]), (f[2] as usize, f[3] as usize));
    }
    proc.kill().unwrap(); // SIGKILL
    proc.wait().unwrap();
    // Acks the child printed before it died (the pipe may still hold some).
    for line in lines.map_while(Result::ok) {
        if let Some(rest) = line.strip_prefix("ack ") {
            let f: Vec<u64> = rest.split(' ').map(|x| x.parse().unwrap()).collect();
            acked.insert((f[0] as u32, f[1]), (f[2] as usize, f[3] as usize));
        }
    }
    assert!(
        acked.len() >= 3000,
        "the child acknowledged only {} messages",
        acked.len()
    );

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let bus = EmbeddedBus::open(config(&dir_str)).unwrap();
        let status = bus.status("verify", &["t".to_string()]).await.unwrap();
        let stored: u64 = status.partitions.iter().map(|s| s.end_offset).sum();
        assert!(
            stored >= acked.len() as u64,
            "{stored} stored < {} acknowledged",
            acked.len()
        );
        let mut consumer = bus.consumer("verify", &["t".to_string()]).await.unwrap();
        let mut found: BTreeMap<(u32, u64), Bytes> = BTreeMap::new();
        while (found.len() as u64) < stored {
            if let ConsumerEvent::Records(records) =
                consumer.poll(Duration::from_millis(100)).await.unwrap()
            {
                for r in records {
                    found.insert((r.partition, r.offset), r.value);
                }
            }
        }
        for (key, (task, i)) in &acked {
            let got = found
                .get(key)
                .unwrap_or_else(|| panic!("acknowledged message at {key:?} lost"));
            assert_eq!(
                &got[..],
                &value(*task, *i)[..],
                "message at {key:?} differs"
            );
        }
        // After recovery, appends continue at the end of every partition.
        let d = bus
            .producer()
            .send("t", vec![Message::new(None, &b"after"[..])])
            .await
            .unwrap();
        assert_eq!(
            d[0].offset,
            status.partitions[d[0].partition as usize].end_offset
        );
    });
}
