//! `kill -9` in the middle of a stream of acknowledged requests: after a restart the
//! archive holds every acknowledged span exactly once.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{ACME_TOKEN, Mcpulse, attr, now_ns, otlp_request};
use opentelemetry_proto::tonic::trace::v1::Span;

const SPANS_PER_REQUEST: u64 = 25;
const SENDERS: u64 = 4;

fn request(first: u64, service: &str) -> Vec<u8> {
    let now = now_ns();
    let spans = (first..first + SPANS_PER_REQUEST)
        .map(|id| Span {
            trace_id: [[9u8; 8], id.to_be_bytes()].concat(),
            span_id: (id + 1).to_be_bytes().to_vec(),
            name: "tools/call crash".into(),
            kind: 2,
            start_time_unix_nano: now,
            end_time_unix_nano: now + 5_000,
            attributes: vec![attr("marker", "crash"), attr("gen_ai.tool.name", "crash")],
            ..Default::default()
        })
        .collect();
    otlp_request(Some(service), spans)
}

fn span_hex(id: u64) -> String {
    format!("{:016x}", id + 1)
}

/// Sends requests from several threads until `stop`; returns the span ids acknowledged.
fn stream(
    m: &Mcpulse,
    stop: Arc<AtomicBool>,
    acked_requests: Arc<AtomicUsize>,
    base: u64,
) -> Vec<std::thread::JoinHandle<Vec<u64>>> {
    let url = m.otlp_url();
    (0..SENDERS)
        .map(|sender| {
            let url = url.clone();
            let stop = stop.clone();
            let acked_requests = acked_requests.clone();
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .unwrap();
                let mut acked = Vec::new();
                let mut first = base + sender * 1_000_000;
                let started = Instant::now();
                while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(60) {
                    let resp = client
                        .post(&url)
                        .header("content-type", "application/x-protobuf")
                        .bearer_auth(ACME_TOKEN)
                        .body(request(first, &format!("svc-{sender}")))
                        .send();
                    match resp {
                        Ok(r) if r.status().is_success() => {
                            acked.extend(first..first + SPANS_PER_REQUEST);
                            acked_requests.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(_) => {}
                        Err(_) => break, // the server died
                    }
                    first += SPANS_PER_REQUEST;
                }
                acked
            })
        })
        .collect()
}

/// How a round of the stream ends.
enum Crash {
    /// `kill -9` from outside, at whatever moment the stream is in.
    Kill9,
    /// The process aborts itself at a failpoint: the worst moments of an archive cut.
    Failpoint(&'static str),
}

#[test]
fn kill_9_mid_stream_keeps_every_acknowledged_span_exactly_once() {
    let mut m = Mcpulse::start("archive:\n  flush_interval: 150ms\nquery:\n  max_rows: 10000000\n");
    let acked: Arc<Mutex<HashSet<u64>>> = Arc::default();
    let rounds = [
        Crash::Kill9,
        // Objects of a cut written, offsets not yet committed.
        Crash::Failpoint("runtime.before_commit:4"),
        // One sealed batch written, others of the same flush not.
        Crash::Failpoint("archive.after_write:3"),
        // The cut recorded, none of its objects written.
        Crash::Failpoint("archive.after_manifest:3"),
        Crash::Kill9,
    ];
    for (round, crash) in rounds.iter().enumerate() {
        if let Crash::Failpoint(spec) = crash {
            m.kill9();
            m.spawn_with_env(&[("MCPULSE_FAILPOINT", spec)]);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let count = Arc::new(AtomicUsize::new(0));
        let senders = stream(&m, stop.clone(), count.clone(), round as u64 * 100_000_000);
        match crash {
            Crash::Kill9 => {
                let deadline = Instant::now() + Duration::from_secs(30);
                while count.load(Ordering::Relaxed) < 60 + round * 20 {
                    assert!(
                        Instant::now() < deadline,
                        "requests are not being acknowledged:\n{}",
                        m.log()
                    );
                    std::thread::sleep(Duration::from_millis(10));
                }
                m.kill9();
            }
            Crash::Failpoint(spec) => {
                let status = m.wait_exit(Duration::from_secs(60));
                assert!(!status.success(), "{spec}: the failpoint did not fire");
                assert!(m.log().contains("aborting"), "{spec}: {}", m.log());
            }
        }
        stop.store(true, Ordering::Relaxed);
        for s in senders {
            acked.lock().unwrap().extend(s.join().unwrap());
        }
        m.spawn();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 1000,
        "only {} spans acknowledged",
        acked.len()
    );

    // Nothing doubled: no span id appears twice, whatever was replayed.
    let doubled_sql = "SELECT count(*) AS n FROM (SELECT span_id FROM spans WHERE attributes['marker'] = 'crash' \
                       GROUP BY span_id HAVING count(*) > 1)";
    // Nothing lost: wait until the archive holds every acknowledged span.
    let wanted: HashSet<String> = acked.iter().map(|id| span_hex(*id)).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    let rows = loop {
        let doubled = m.query(doubled_sql)[0]["n"].as_i64().unwrap();
        assert_eq!(doubled, 0, "{doubled} spans archived more than once");
        let rows = m.query("SELECT span_id FROM spans WHERE attributes['marker'] = 'crash'");
        let have: HashSet<String> = rows
            .iter()
            .map(|r| r["span_id"].as_str().unwrap().to_string())
            .collect();
        if wanted.is_subset(&have) {
            break rows;
        }
        assert!(
            Instant::now() < deadline,
            "{} acknowledged spans missing",
            wanted.difference(&have).count()
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    eprintln!(
        "{} spans acknowledged across the crash rounds; {} rows archived",
        acked.len(),
        rows.len()
    );
    assert_eq!(m.query(doubled_sql)[0]["n"], 0);

    // A clean shutdown after all that exits 0.
    assert!(m.terminate().success(), "{}", m.log());
}
