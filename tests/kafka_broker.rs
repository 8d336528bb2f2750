//! The Kafka test harness works: a tansu broker starts on a free loopback port, answers
//! a real client's metadata request, and takes OTLP messages from the Collector-like
//! producer (`tests/python/produce_otlp.py`).

mod common;

use std::process::Command;
use std::time::Duration;

use common::kafka::Tansu;

#[test]
fn tansu_answers_metadata_and_takes_otlp_messages() {
    let tansu = Tansu::start();
    let md = tansu.ping(Duration::from_secs(10));
    let brokers = md["brokers"].as_array().expect("brokers");
    assert_eq!(brokers.len(), 1, "{md}");
    assert_eq!(brokers[0]["host"], "127.0.0.1", "{md}");
    assert_eq!(
        brokers[0]["port"].as_u64(),
        Some(u64::from(tansu.addr().port())),
        "{md}"
    );

    let out = Command::new(common::python())
        .arg(common::repo_path("tests/python/produce_otlp.py"))
        .args(["--bootstrap", &tansu.bootstrap()])
        .args(["--topic", "smoke.spans.v1", "--create", "2"])
        .args(["--messages", "4", "--spans", "3", "--garbage", "1"])
        .args(["--header", "mcpulse-tenant=acme", "--key", "trace-id"])
        .output()
        .expect("run produce_otlp.py");
    assert!(
        out.status.success(),
        "produce_otlp.py failed: {}\n--- tansu log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        tansu.log_tail()
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["delivered"], 5, "{summary}");
    let spans = summary["spans"].as_array().unwrap();
    assert_eq!(spans.len(), 12, "{summary}");
    let mut ids: Vec<&str> = spans
        .iter()
        .map(|s| s["span_id"].as_str().unwrap())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 12, "span ids are unique: {summary}");

    let md = tansu.ping(Duration::from_secs(10));
    assert_eq!(md["topics"]["smoke.spans.v1"], 2, "{md}");
}
