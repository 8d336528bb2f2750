//! Operations on the archive (issue 8): compaction while queries run (every query
//! through the real query engine sees each row exactly once), a compaction killed at
//! its worst moments and run again, retention removing expired folders and only those
//! (on demand and inside `mcpulse run`), and `mcpulse admin delete` of a server and of a
//! tenant leaving no row in any table and nothing in the operators' state.

mod common;
mod stand_ins;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use common::archive::{mcpulse, post_probes, post_spans, probe, stderr, stdout, wait_until};
use common::{ACME_TOKEN, GLOBEX_TOKEN, Mcpulse};
use mcpulse::Config;
use mcpulse::archive_store::ArchiveLocation;
use mcpulse_processors::archive::maintenance::Maintenance;
use mcpulse_processors::archive::{
    ArchiveTarget, ParquetEncoder, PartitionKey, PartitionedRows, ProbesFormat, TableFormat,
};
use mcpulse_processors::forget::Forget;
use mcpulse_queries::{OutputFormat, QueryEngine, Scope};
use mcpulse_schemas::Table;
use serde_json::{Value, json};

/// An archive in a temporary data directory, with its configuration: for CLI commands,
/// and for `mcpulse run` on it afterwards.
struct Archive {
    m: Mcpulse,
    parsed: Config,
}

impl Archive {
    fn new(extra: &str) -> Self {
        let m = Mcpulse::prepare(extra);
        let text = std::fs::read_to_string(&m.config).unwrap();
        let parsed = Config::parse(&text, |name| {
            (name == "ACME_TOKEN").then(|| ACME_TOKEN.to_string())
        })
        .unwrap();
        Self { m, parsed }
    }

    fn location(&self) -> ArchiveLocation {
        ArchiveLocation::open(&self.parsed).unwrap()
    }

    fn root(&self) -> PathBuf {
        self.m.data_dir().join("archive")
    }

    fn mcpulse(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        mcpulse(&self.m.config, args, env)
    }

    fn count(&self, sql: &str) -> i64 {
        count(&self.m.config, sql)
    }
}

/// `n` of `SELECT count(*) AS n …` through `mcpulse query`.
fn count(config: &Path, sql: &str) -> i64 {
    let out = mcpulse(config, &["query", "--format", "json", sql], &[]);
    assert!(out.status.success(), "{sql}: {}", stderr(&out));
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    rows[0]["n"].as_i64().unwrap()
}

/// Writes one archive object of probe results (server, time) of `tenant` named `name`
/// (in the folder of each row's hour), as the archiver would.
async fn write_probes(
    target: &ArchiveTarget,
    tenant: &str,
    name: &str,
    probes: &[(String, DateTime<Utc>)],
) -> Vec<(PartitionKey, bytes::Bytes)> {
    let mut rows = PartitionedRows::default();
    for (server, at) in probes {
        let probe = json!({"server": server, "region": "eu-west", "ok": true, "started_at": at.to_rfc3339()});
        ProbesFormat
            .decode_into(tenant, probe.to_string().as_bytes(), &mut rows)
            .unwrap();
    }
    let encoder = ParquetEncoder::new(Table::Probes, Default::default());
    let mut written = Vec::new();
    for (key, batch) in rows.finish().unwrap() {
        let path = key.dir(&target.root, Table::Probes).join(name);
        let bytes = encoder.encode(&batch, &key.tenant).unwrap();
        target.put_durable(&path, bytes.clone()).await.unwrap();
        written.push((key, bytes));
    }
    written
}

/// The start of the hour `hours` hours before now.
fn hour_ago(hours: i64) -> DateTime<Utc> {
    let now = Utc::now().timestamp();
    DateTime::from_timestamp((now / 3600 - hours) * 3600, 0).unwrap()
}

/// Every file under `dir`, relative to it.
fn files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(
                    path.strip_prefix(dir)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queries_see_every_row_once_while_compaction_runs() {
    let archive =
        Archive::new("archive:\n  maintenance:\n    target_rows: 64\n    max_merge_files: 3\n");
    let location = archive.location();
    let target = location.target.clone();
    // 180 small objects over three hours of a closed day (two days back) and two tenants.
    let day_start = (Utc::now() - TimeDelta::days(2))
        .date_naive()
        .and_hms_opt(9, 0, 0)
        .unwrap()
        .and_utc();
    let mut originals: Vec<(object_store::path::Path, bytes::Bytes)> = Vec::new();
    let mut total = 0i64;
    let mut acme = 0i64;
    let mut per_hour: BTreeMap<DateTime<Utc>, i64> = BTreeMap::new();
    for i in 0..180usize {
        let tenant = if i % 2 == 0 { "globex" } else { "acme" };
        let hour = day_start + TimeDelta::hours((i % 3) as i64);
        let n = 1 + i % 9;
        let probes: Vec<(String, DateTime<Utc>)> = (0..n)
            .map(|j| {
                (
                    ["weather", "search", "files", "maps"][(i + j) % 4].to_string(),
                    hour + TimeDelta::seconds(((i * 7 + j * 13) % 3600) as i64),
                )
            })
            .collect();
        let name = format!("mcpulse.probes.v1-{}-{:020}-{:020}.parquet", i % 4, i, i);
        for (key, bytes) in write_probes(&target, tenant, &name, &probes).await {
            originals.push((
                key.dir(&target.root, Table::Probes).join(name.as_str()),
                bytes,
            ));
        }
        total += n as i64;
        if tenant == "acme" {
            acme += n as i64;
        }
        *per_hour.entry(hour).or_default() += n as i64;
    }
    let engine = QueryEngine::new(location.catalog(), archive.parsed.query.clone());
    let (first_hour, first_hour_rows) = per_hour.iter().next().map(|(h, n)| (*h, *n)).unwrap();
    let queries: Vec<(Scope, String, i64)> = vec![
        (Scope::All, "SELECT count(*) AS n FROM probes".into(), total),
        (
            Scope::Tenant("acme".into()),
            "SELECT count(*) AS n FROM probes".into(),
            acme,
        ),
        (
            Scope::All,
            format!(
                "SELECT count(*) AS n FROM probes WHERE time >= TIMESTAMP '{}' AND time < TIMESTAMP '{}'",
                first_hour.format("%Y-%m-%dT%H:%M:%S"),
                (first_hour + TimeDelta::hours(1)).format("%Y-%m-%dT%H:%M:%S")
            ),
            first_hour_rows,
        ),
        (
            Scope::All,
            "SELECT CAST(sum(n) AS BIGINT) AS n FROM (SELECT server, count(*) AS n FROM probes GROUP BY server)".into(),
            total,
        ),
    ];
    for (scope, sql, expected) in &queries {
        let result = engine.execute(scope, sql).await.unwrap();
        assert_eq!(n_of(&result), *expected, "{sql} before compaction");
    }

    // Queries in a loop, each checked against the exact count, while compaction runs.
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut loops = Vec::new();
    for worker in 0..3 {
        let engine = engine.clone();
        let queries = queries.clone();
        let stop = stop.clone();
        let done = done.clone();
        loops.push(tokio::spawn(async move {
            let mut i = worker;
            while !stop.load(Ordering::Relaxed) {
                let (scope, sql, expected) = &queries[i % queries.len()];
                let result = engine
                    .execute(scope, sql)
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
                assert_eq!(
                    n_of(&result),
                    *expected,
                    "{sql} returned a wrong count during compaction"
                );
                done.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        }));
    }

    // Compaction rounds (small target_rows and fan-in: several generations per folder),
    // hour by hour for the first rounds, then of the closed day into its day folder;
    // deletion of what they replaced 3 s later, and writers replaying old objects under
    // their names, until nothing is left to do.
    let maintenance = Maintenance::new(target.clone(), archive.parsed.archive.clone());
    let delay = Duration::from_secs(3);
    let started = Instant::now();
    let mut generations = 0;
    let mut quiet_rounds = 0;
    let mut round = 0;
    let mut day_generations = 0;
    while quiet_rounds < 2 || started.elapsed() < Duration::from_secs(8) || round < 12 {
        let now = Utc::now();
        let by_day = round >= 6;
        let day_after = if by_day {
            Duration::from_secs(2 * 3600)
        } else {
            Duration::from_secs(3650 * 86_400)
        };
        let report = maintenance
            .compact(
                Table::Probes,
                None,
                Duration::from_secs(3600),
                day_after,
                now,
            )
            .await
            .unwrap();
        generations += report.folders_compacted;
        if by_day {
            day_generations += report.folders_compacted;
        }
        quiet_rounds = if report.folders_compacted == 0 {
            quiet_rounds + 1
        } else {
            0
        };
        maintenance
            .purge(Table::Probes, None, delay, now)
            .await
            .unwrap();
        let (path, bytes) = &originals[(round * 37) % originals.len()];
        target.put_durable(path, bytes.clone()).await.unwrap();
        round += 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "compaction does not converge"
        );
    }
    // Let the last replaced objects go while queries still run.
    tokio::time::sleep(delay + Duration::from_millis(500)).await;
    let purged = maintenance
        .purge(Table::Probes, None, delay, Utc::now())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    for l in loops {
        l.await.unwrap();
    }
    let queried = done.load(Ordering::Relaxed);
    eprintln!(
        "{queried} queries during {round} rounds, {generations} folder compactions; last purge: {purged}"
    );
    assert!(
        generations >= 10,
        "several generations per folder: {generations}"
    );
    assert!(
        day_generations >= 2,
        "several generations of the day folders: {day_generations}"
    );
    assert!(queried >= 20, "too few queries ran meanwhile: {queried}");
    for (scope, sql, expected) in &queries {
        let result = engine.execute(scope, sql).await.unwrap();
        assert_eq!(n_of(&result), *expected, "{sql} after compaction");
    }
    // A few objects are left: the small ones went to each tenant's day folder, the large
    // ones hour compaction wrote (over target_rows / 2) stay in their hour folders, and
    // the replays written meanwhile were hidden, then deleted.
    let parquet: Vec<String> = files(&archive.root().join("probes"))
        .into_iter()
        .filter(|f| f.ends_with(".parquet"))
        .collect();
    assert!(parquet.len() < 40, "180 objects became a few: {parquet:?}");
    assert!(
        parquet.iter().all(|f| f.contains("/compacted-")),
        "{parquet:?}"
    );
    for tenant in ["acme", "globex"] {
        assert!(
            parquet
                .iter()
                .any(|f| f.starts_with(&format!("tenant={tenant}/")) && f.contains("/hour=day/")),
            "{parquet:?}"
        );
    }
}

/// `n` of a one-row result.
fn n_of(result: &mcpulse_queries::engine::QueryResult) -> i64 {
    let mut encoder =
        mcpulse_queries::format::Encoder::new(OutputFormat::Json, result.schema.clone()).unwrap();
    let mut json = Vec::new();
    for batch in &result.batches {
        json.extend(encoder.push(batch).unwrap());
    }
    json.extend(encoder.finish().unwrap());
    let rows: Vec<Value> = serde_json::from_slice(&json).unwrap();
    rows[0]["n"].as_i64().unwrap()
}

#[test]
fn a_compaction_killed_at_its_worst_moments_loses_and_doubles_nothing() {
    let archive = Archive::new(
        "archive:\n  flush_interval: 300ms\n  maintenance:\n    interval: 300ms\n    delete_delay: 0s\n    day_compact_after: 3650d\n",
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let target = archive.location().target;
    let hours = [hour_ago(5), hour_ago(4)];
    let mut total = 0;
    runtime.block_on(async {
        for (h, hour) in hours.iter().enumerate() {
            for i in 0..6 {
                let probes: Vec<(String, DateTime<Utc>)> = (0..5)
                    .map(|j| ("weather".to_string(), *hour + TimeDelta::minutes(i * 5 + j)))
                    .collect();
                let name = format!("mcpulse.probes.v1-0-{h}{i:019}-{h}{i:019}.parquet");
                write_probes(&target, "acme", &name, &probes).await;
                total += 5;
            }
        }
    });
    let sql = "SELECT count(*) AS n FROM probes";
    assert_eq!(archive.count(sql), total);

    // Killed after writing the first folder's compacted object, before its manifest.
    let out = archive.mcpulse(
        &["admin", "compact"],
        &[("MCPULSE_FAILPOINT", "compact.after_output:1")],
    );
    assert!(!out.status.success(), "the failpoint did not fire");
    assert!(
        stderr(&out).contains("failpoint compact.after_output"),
        "{}",
        stderr(&out)
    );
    let leftover: Vec<String> = files(&archive.root())
        .into_iter()
        .filter(|f| f.contains("compacted-"))
        .collect();
    assert_eq!(leftover.len(), 1, "{leftover:?}");
    assert_eq!(archive.count(sql), total, "a leftover is never read");

    // Killed after the first folder's manifest, before anything is deleted.
    let out = archive.mcpulse(
        &["admin", "compact"],
        &[("MCPULSE_FAILPOINT", "compact.after_manifest:1")],
    );
    assert!(!out.status.success());
    assert_eq!(archive.count(sql), total);

    // Run to the end, twice: the second run has nothing to do.
    let out = archive.mcpulse(&["admin", "compact", "--delay", "0s"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("compacted 1 folder"),
        "{}",
        stdout(&out)
    );
    assert_eq!(archive.count(sql), total);
    let out = archive.mcpulse(&["admin", "compact", "--delay", "0s"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "nothing to do", "{}", stdout(&out));
    assert_eq!(archive.count(sql), total);
    // The rerun rewrote the leftover under the same name: one object per folder.
    let parquet: Vec<String> = files(&archive.root())
        .into_iter()
        .filter(|f| f.ends_with(".parquet"))
        .collect();
    assert_eq!(parquet.len(), 2, "{parquet:?}");
    assert!(
        parquet.iter().all(|f| f.contains("compacted-")),
        "{parquet:?}"
    );
    // Time pruning still works on compacted objects.
    assert_eq!(
        archive.count(&format!(
            "SELECT count(*) AS n FROM probes WHERE time >= TIMESTAMP '{}'",
            hours[1].format("%Y-%m-%dT%H:%M:%S")
        )),
        total / 2
    );

    // Inside `mcpulse run`, maintenance compacts a late object into its closed hour.
    runtime.block_on(async {
        let probes = vec![("search".to_string(), hours[0] + TimeDelta::minutes(59))];
        write_probes(
            &target,
            "acme",
            "mcpulse.probes.v1-1-late-late.parquet",
            &probes,
        )
        .await;
    });
    let mut archive = archive;
    archive.m.spawn();
    let m = &archive.m;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let names = files(&archive.root().join("probes"));
        if !names.iter().any(|f| f.contains("late")) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not compacted by run: {names:?}\n{}",
            m.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(m.query(sql)[0]["n"], total + 1);
    archive.m.terminate();
}

#[test]
fn a_day_compaction_killed_at_its_worst_moments_loses_and_doubles_nothing() {
    let archive = Archive::new("archive:\n  maintenance:\n    delete_delay: 0s\n");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let target = archive.location().target;
    // Three hours of a day three days back, four small objects each.
    let day = (Utc::now() - TimeDelta::days(3))
        .date_naive()
        .and_hms_opt(10, 0, 0)
        .unwrap()
        .and_utc();
    let mut total = 0;
    runtime.block_on(async {
        for h in 0..3i64 {
            for i in 0..4i64 {
                let probes: Vec<(String, DateTime<Utc>)> = (0..5)
                    .map(|j| {
                        (
                            ["weather", "search"][(j % 2) as usize].to_string(),
                            day + TimeDelta::hours(h) + TimeDelta::minutes(i * 5 + j),
                        )
                    })
                    .collect();
                let name = format!("mcpulse.probes.v1-0-{h}{i:019}-{h}{i:019}.parquet");
                write_probes(&target, "acme", &name, &probes).await;
                total += 5;
            }
        }
    });
    let sql = "SELECT count(*) AS n FROM probes";
    let hour_11 = format!(
        "SELECT count(*) AS n FROM probes WHERE time >= TIMESTAMP '{}' AND time < TIMESTAMP '{}'",
        (day + TimeDelta::hours(1)).format("%Y-%m-%dT%H:%M:%S"),
        (day + TimeDelta::hours(2)).format("%Y-%m-%dT%H:%M:%S")
    );
    assert_eq!(archive.count(sql), total);
    assert_eq!(archive.count(&hour_11), total / 3);

    // Killed after writing the day object, before the day manifest: never read.
    let out = archive.mcpulse(
        &["admin", "compact"],
        &[("MCPULSE_FAILPOINT", "compact_day.after_output:1")],
    );
    assert!(!out.status.success(), "the failpoint did not fire");
    assert!(
        stderr(&out).contains("failpoint compact_day.after_output"),
        "{}",
        stderr(&out)
    );
    let leftover: Vec<String> = files(&archive.root())
        .into_iter()
        .filter(|f| f.contains("/hour=day/compacted-"))
        .collect();
    assert_eq!(leftover.len(), 1, "{leftover:?}");
    assert_eq!(archive.count(sql), total, "a leftover is never read");

    // Killed after the day manifest, before any hour object is deleted.
    let out = archive.mcpulse(
        &["admin", "compact"],
        &[("MCPULSE_FAILPOINT", "compact_day.after_manifest:1")],
    );
    assert!(!out.status.success());
    assert_eq!(archive.count(sql), total);
    assert_eq!(
        archive.count(&hour_11),
        total / 3,
        "time pruning keeps the day folder"
    );

    // To the end: one object in the day folder, the hour folders gone.
    let out = archive.mcpulse(&["admin", "compact", "--delay", "0s"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(archive.count(sql), total);
    let out = archive.mcpulse(&["admin", "compact", "--delay", "0s"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "nothing to do", "{}", stdout(&out));
    let parquet: Vec<String> = files(&archive.root())
        .into_iter()
        .filter(|f| f.ends_with(".parquet"))
        .collect();
    assert_eq!(parquet.len(), 1, "{parquet:?}");
    assert!(parquet[0].contains("/hour=day/compacted-"), "{parquet:?}");
    assert_eq!(archive.count(sql), total);
    assert_eq!(archive.count(&hour_11), total / 3);
    assert_eq!(
        archive.count("SELECT count(*) AS n FROM probes WHERE hour = 'day'"),
        total,
        "the rows of a compacted day read `day` in the hour column"
    );
    // Deleting a server rewrites the day object.
    let out = archive.mcpulse(
        &["admin", "delete", "--tenant", "acme", "--server", "weather"],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        archive.count("SELECT count(*) AS n FROM probes WHERE server = 'weather'"),
        0
    );
    assert_eq!(archive.count(sql), total / 5 * 2);
}

#[test]
fn retention_removes_expired_folders_and_only_those() {
    let archive = Archive::new(
        "archive:\n  flush_interval: 300ms\n  maintenance:\n    interval: 300ms\n  retention:\n    tables: {probes: 2d}\n    tenants:\n      globex: {probes: forever}\n",
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let target = archive.location().target;
    runtime.block_on(async {
        for (tenant, hours_ago, name) in [
            ("acme", 24 * 5, "old"),
            ("acme", 24 * 3, "older-than-2d"),
            ("acme", 30, "recent"),
            ("acme", 1, "now"),
            ("globex", 24 * 5, "old"),
        ] {
            let probes = vec![(
                "weather".to_string(),
                hour_ago(hours_ago) + TimeDelta::minutes(1),
            )];
            write_probes(&target, tenant, &format!("{name}.parquet"), &probes).await;
        }
    });
    let by_tenant = "SELECT count(*) AS n FROM probes WHERE tenant = ";
    assert_eq!(archive.count(&format!("{by_tenant}'acme'")), 4);

    let out = archive.mcpulse(&["admin", "retention", "--dry-run"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("2 folder(s)"), "{}", stdout(&out));
    assert_eq!(
        archive.count(&format!("{by_tenant}'acme'")),
        4,
        "a dry run deletes nothing"
    );

    let out = archive.mcpulse(&["admin", "retention"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("expired 2 folder(s)"),
        "{}",
        stdout(&out)
    );
    assert_eq!(archive.count(&format!("{by_tenant}'acme'")), 2);
    assert_eq!(
        archive.count(&format!("{by_tenant}'globex'")),
        1,
        "globex keeps probes forever"
    );
    let left = files(&archive.root().join("probes"));
    assert!(
        left.iter().any(|f| f.ends_with("recent.parquet")),
        "{left:?}"
    );
    assert!(
        !left
            .iter()
            .any(|f| f.contains("tenant=acme") && f.ends_with("old.parquet")),
        "{left:?}"
    );

    // Inside `mcpulse run`: a folder that expires is deleted by the periodic pass.
    runtime.block_on(async {
        let probes = vec![("weather".to_string(), hour_ago(24 * 4))];
        write_probes(&target, "acme", "late.parquet", &probes).await;
    });
    let mut archive = archive;
    archive.m.spawn();
    let m = &archive.m;
    let deadline = Instant::now() + Duration::from_secs(30);
    while files(&archive.root().join("probes"))
        .iter()
        .any(|f| f.ends_with("late.parquet"))
    {
        assert!(
            Instant::now() < deadline,
            "not expired by run:\n{}",
            m.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(m.query(&format!("{by_tenant}'acme'"))[0]["n"], 2);
    assert_eq!(m.query(&format!("{by_tenant}'globex'"))[0]["n"], 1);
    archive.m.terminate();
}

#[test]
fn admin_errors_name_the_flag() {
    let archive = Archive::new("");
    let out = archive.mcpulse(&["admin", "delete"], &[]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--tenant"), "{}", stderr(&out));
    let out = archive.mcpulse(&["admin", "delete", "--tenant", "a/b"], &[]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("--tenant: \"a/b\""),
        "{}",
        stderr(&out)
    );
    let out = archive.mcpulse(
        &["admin", "delete", "--tenant", "acme", "--server", " "],
        &[],
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--server"), "{}", stderr(&out));
    let out = archive.mcpulse(
        &["admin", "delete", "--tenant", "acme", "--delay", "soon"],
        &[],
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--delay"), "{}", stderr(&out));
    let out = archive.mcpulse(&["admin", "compact", "--table", "spanz"], &[]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("--table: unknown table \"spanz\""),
        "{}",
        stderr(&out)
    );
    let out = archive.mcpulse(&["admin", "retention"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("forever"), "{}", stdout(&out));
    // Unknown configuration fields are refused, naming them.
    let bad = Mcpulse::prepare("archive:\n  retention:\n    tables: {spanz: 1d}\n");
    let out = mcpulse(&bad.config, &["admin", "retention"], &[]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("archive.retention.tables"),
        "{}",
        stderr(&out)
    );
}

/// Start of the minute `minutes_ago` minutes before now.
/// Rows per table of a tenant (and server).
fn rows(m: &Mcpulse, tenant: &str, server: Option<&str>) -> BTreeMap<&'static str, i64> {
    Table::ALL
        .iter()
        .map(|table| {
            let mut sql = format!(
                "SELECT count(*) AS n FROM {} WHERE tenant = '{tenant}'",
                table.name()
            );
            if let Some(server) = server {
                sql += &format!(" AND {} = '{server}'", table.server_column());
            }
            (table.name(), m.query(&sql)[0]["n"].as_i64().unwrap())
        })
        .collect()
}

/// Every JSON document (or NDJSON line) under `_state/` that still holds something of
/// `forget` (what a scrub would remove, or, for a tenant, any mention of it).
fn state_holding(m: &Mcpulse, forget: &Forget) -> Vec<String> {
    let root = m.data_dir().join("archive").join("_state");
    let mut out = Vec::new();
    for file in files(&root) {
        let text = std::fs::read_to_string(root.join(&file)).unwrap_or_default();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let Ok(mut value) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            let mentions = if forget.server.is_none() {
                forget.mentions(&value)
            } else {
                Vec::new()
            };
            if forget.scrub(&mut value) || !mentions.is_empty() {
                out.push(format!("{file} {mentions:?}"));
            }
        }
    }
    out
}

#[test]
fn deleting_a_server_then_a_tenant_leaves_no_row_and_no_state() {
    // Incidents are delivered too, so the notification stage has state (its log,
    // journal, spooled rows) and rows of acme to forget.
    let pd = stand_ins::StandIn::pagerduty();
    let dir = tempfile::tempdir().unwrap();
    let routes = dir.path().join("routes.yaml");
    std::fs::write(
        &routes,
        format!(
            "receivers:\n  - name: oncall\n    pagerduty: {{ routing_key: \"maint-pd-r0uting-key-0123456789ab\", url: \"{}\" }}\nroute:\n  id: root\n  receiver: oncall\n",
            pd.url
        ),
    )
    .unwrap();
    let mut m = Mcpulse::start(&format!(
        "archive:\n  flush_interval: 300ms\n  maintenance:\n    interval: 500ms\n    deletion_poll: 200ms\n    delete_delay: 0s\n\
         signals:\n  allowed_lateness: 2s\n  idle_timeout: 2s\n  flush_interval: 300ms\n\
         incidents:\n  flush_interval: 200ms\n  storm: {{ hold: 0s }}\n\
         drift:\n  flush_interval: 300ms\n\
         notify:\n  routes: {}\n  flush_interval: 300ms\n  table_interval: 1h\n",
        routes.display()
    ));
    // acme: weather fails for 6 minutes in both regions (an incident that opens and
    // resolves), search is healthy; both send spans. globex: the same server names.
    let mut acme = Vec::new();
    let mut globex = Vec::new();
    for ago in (1..=12).rev() {
        for region in ["eu-west", "us-east"] {
            acme.push(probe("weather", region, ago, (7..=12).contains(&ago)));
            acme.push(probe("search", region, ago, false));
            globex.push(probe("weather", region, ago, false));
        }
    }
    post_probes(&m, ACME_TOKEN, acme);
    post_probes(&m, GLOBEX_TOKEN, globex);
    for ago in [5, 4, 3] {
        post_spans(&m, ACME_TOKEN, "weather", ago, 9);
        post_spans(&m, ACME_TOKEN, "search", ago, 9);
        post_spans(&m, GLOBEX_TOKEN, "weather", ago, 9);
    }
    wait_until(
        "acme's rows in probes, spans, signals and alerts",
        &m,
        Duration::from_secs(60),
        || {
            let r = rows(&m, "acme", None);
            r["probes"] == 48 && r["spans"] == 18 && r["signals"] > 0 && r["alerts"] >= 2
        },
    );
    wait_until("globex's signals", &m, Duration::from_secs(60), || {
        rows(&m, "globex", None)["signals"] > 0
    });
    // The trigger and resolve delivered; their attempts are spooled, not yet in the
    // table (table_interval 1h): the deletion must reach them in the stage.
    pd.wait_for(2, Duration::from_secs(60));
    wait_until(
        "acme's notification state",
        &m,
        Duration::from_secs(60),
        || {
            state_holding(&m, &Forget::tenant("acme"))
                .iter()
                .any(|f| f.contains(".spool/"))
        },
    );
    // Let every stage settle (windows closed, state checkpointed).
    std::thread::sleep(Duration::from_secs(3));
    let globex_before = rows(&m, "globex", None);
    let acme_weather = rows(&m, "acme", Some("weather"));
    // Inputs are fixed; derived tables may still grow a little (windows closing).
    let same = |before: &BTreeMap<&str, i64>, now: &BTreeMap<&str, i64>| {
        before.iter().all(|(table, n)| match *table {
            "probes" | "spans" => now[table] == *n,
            _ => now[table] >= *n,
        })
    };
    assert!(
        !state_holding(&m, &Forget::server("acme", "search")).is_empty(),
        "the test needs state of acme/search to delete"
    );
    let silence = mcpulse(
        &m.config,
        &[
            "silence",
            "add",
            "--matcher",
            "server = weather",
            "--duration",
            "1h",
            "--comment",
            "maintenance",
            "--tenant",
            "acme",
            "--created-by",
            "ops",
        ],
        &[],
    );
    assert!(silence.status.success(), "{}", stderr(&silence));

    // One server of acme.
    let out = mcpulse(
        &m.config,
        &["admin", "delete", "--tenant", "acme", "--server", "search"],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("deleted server \"search\" of tenant \"acme\""),
        "{}",
        stdout(&out)
    );
    let gone = rows(&m, "acme", Some("search"));
    assert!(
        gone.values().all(|n| *n == 0),
        "rows of acme/search left: {gone:?}"
    );
    let weather = rows(&m, "acme", Some("weather"));
    assert!(
        same(&acme_weather, &weather),
        "acme's other server keeps its rows: {acme_weather:?} -> {weather:?}"
    );
    let globex = rows(&m, "globex", None);
    assert!(
        same(&globex_before, &globex),
        "{globex_before:?} -> {globex:?}"
    );
    wait_until(
        "no state of acme/search",
        &m,
        Duration::from_secs(60),
        || state_holding(&m, &Forget::server("acme", "search")).is_empty(),
    );

    // The whole tenant.
    let out = mcpulse(&m.config, &["admin", "delete", "--tenant", "acme"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("1 silence(s) removed"),
        "{}",
        stdout(&out)
    );
    let gone = rows(&m, "acme", None);
    assert!(
        gone.values().all(|n| *n == 0),
        "rows of acme left: {gone:?}"
    );
    let globex = rows(&m, "globex", None);
    assert!(
        same(&globex_before, &globex),
        "other tenants keep every row: {globex_before:?} -> {globex:?}"
    );
    wait_until("no state of acme", &m, Duration::from_secs(60), || {
        state_holding(&m, &Forget::tenant("acme")).is_empty()
    });
    let folders: BTreeSet<String> = files(&m.data_dir().join("archive"))
        .into_iter()
        .filter(|f| f.contains("tenant=acme"))
        .collect();
    assert!(folders.is_empty(), "{folders:?}");
    let silences = std::fs::read_to_string(m.data_dir().join("silences.json")).unwrap();
    assert!(!silences.contains("acme"), "{silences}");
    // Still nothing after the stages and maintenance ran on (sweeps, checkpoints).
    std::thread::sleep(Duration::from_secs(3));
    assert!(rows(&m, "acme", None).values().all(|n| *n == 0));
    assert!(state_holding(&m, &Forget::tenant("acme")).is_empty());
    // Not even empty directories name the tenant.
    for table in Table::ALL {
        let dir = m
            .data_dir()
            .join("archive")
            .join(table.name())
            .join("tenant=acme");
        assert!(
            !dir.exists(),
            "{} remains: {:?}",
            dir.display(),
            std::process::Command::new("find")
                .arg(&dir)
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        );
    }
    let globex = rows(&m, "globex", None);
    assert!(
        same(&globex_before, &globex),
        "{globex_before:?} -> {globex:?}"
    );
    m.terminate();
}
