//! `bench-notify` at a tiny size (20 receivers, a few hundred alerts): the benchmark runs
//! end to end — the notification stage delivers every alert once, to the right receiver,
//! and Alertmanager the same — and prints its figures and ratios. Figures are not checked
//! (performance lives in the benchmark, not in timed tests).
//!
//! Needs Debian's `prometheus-alertmanager` (installed by scripts/test-deps.sh); without
//! it, and only outside CI, the mcpulse side runs alone (`--no-alertmanager`).

use std::path::Path;
use std::process::Command;

const ALERTMANAGER: &str = "/usr/bin/prometheus-alertmanager";

#[test]
fn bench_notify_runs_at_a_tiny_size() {
    let with_am = Path::new(ALERTMANAGER).is_file();
    if !with_am {
        assert!(
            std::env::var_os("CI").is_none(),
            "{ALERTMANAGER} is missing: scripts/test-deps.sh installs prometheus-alertmanager"
        );
        eprintln!("{ALERTMANAGER} is missing: running the mcpulse side only");
    }
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bench-notify"));
    cmd.args([
        "--events",
        "200",
        "--receivers",
        "20",
        "--paced-events",
        "60",
        "--rate",
        "200",
        "--batch",
        "50",
        "--timeout-secs",
        "60",
    ]);
    if !with_am {
        cmd.arg("--no-alertmanager");
    }
    let out = cmd.output().expect("running bench-notify");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "bench-notify failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains("60 of 60 delivered") && stdout.contains("200 of 200 delivered"),
        "{stdout}"
    );
    assert!(
        stdout.contains("sink: 0 duplicate, 0 misrouted, 0 unrecognised"),
        "{stdout}"
    );
    if with_am {
        assert!(stdout.contains("p99 latency at 200/s:"), "{stdout}");
        assert!(stdout.contains("flat-out throughput:"), "{stdout}");
    }
}
