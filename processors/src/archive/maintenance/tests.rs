//! Compaction, purge, retention and deletes on an in-memory archive.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, StringArray, TimestampNanosecondArray};
use chrono::{DateTime, TimeDelta, Utc};
use mcpulse_schemas::Table;
use mcpulse_schemas::folder_manifest;
use mcpulse_schemas::tables::{META_MAX_TIME, META_MIN_TIME, META_TENANT};
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::merge::Input;
use super::*;
use crate::archive::{
    ArchiveConfig, ArchiveTarget, ParquetEncoder, PartitionKey, PartitionedRows, ProbesFormat,
    TableFormat,
};

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().to_utc()
}

fn target() -> ArchiveTarget {
    ArchiveTarget {
        store: Arc::new(InMemory::new()),
        root: Path::from("archive"),
        local_root: None,
    }
}

fn config() -> ArchiveConfig {
    let mut c = ArchiveConfig {
        row_group_rows: 4,
        ..ArchiveConfig::default()
    };
    c.maintenance.delete_delay = Duration::from_secs(600);
    c
}

/// Writes one object of `probes` (server, started_at) for `tenant` named `name`.
async fn write_probes(target: &ArchiveTarget, tenant: &str, name: &str, probes: &[(&str, &str)]) {
    let mut rows = PartitionedRows::default();
    for (server, at) in probes {
        let json =
            serde_json::json!({"server": server, "region": "eu", "ok": true, "started_at": at});
        ProbesFormat
            .decode_into(tenant, json.to_string().as_bytes(), &mut rows)
            .unwrap();
    }
    let encoder = ParquetEncoder::new(Table::Probes, config());
    for (key, batch) in rows.finish().unwrap() {
        let path = key.dir(&target.root, Table::Probes).join(name);
        let bytes = encoder.encode(&batch, &key.tenant).unwrap();
        target
            .store
            .put(&path, PutPayload::from(bytes))
            .await
            .unwrap();
    }
}

fn folder_path(target: &ArchiveTarget, tenant: &str, at: &str) -> Path {
    PartitionKey::at(tenant, t(at).timestamp_nanos_opt().unwrap()).dir(&target.root, Table::Probes)
}

async fn folder(target: &ArchiveTarget, tenant: &str, at: &str) -> Folder {
    let path = folder_path(target, tenant, at);
    list_folders(target, Table::Probes, Some(tenant))
        .await
        .unwrap()
        .into_iter()
        .find(|f| f.path == path)
        .expect("folder exists")
}

/// What a reader sees in a folder: (server, time ns) of every row, in object order.
async fn visible_rows(target: &ArchiveTarget, tenant: &str, at: &str) -> Vec<(String, i64)> {
    let Some(mut folder) = list_folders(target, Table::Probes, Some(tenant))
        .await
        .unwrap()
        .into_iter()
        .find(|f| f.path == folder_path(target, tenant, at))
    else {
        return Vec::new();
    };
    let state = folder.state(target).await.unwrap();
    rows_of(target, state.visible).await
}

/// (server, time ns) of every row of `objects`, in order.
async fn rows_of(
    target: &ArchiveTarget,
    objects: Vec<object_store::ObjectMeta>,
) -> Vec<(String, i64)> {
    let mut rows = Vec::new();
    for meta in objects {
        let bytes = target
            .store
            .get(&meta.location)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
            .unwrap()
            .build()
            .unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            let servers = batch
                .column_by_name("server")
                .unwrap()
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap()
                .clone();
            let times = batch
                .column_by_name("time")
                .unwrap()
                .as_any()
                .downcast_ref::<TimestampNanosecondArray>()
                .unwrap()
                .clone();
            for i in 0..batch.num_rows() {
                rows.push((servers.value(i).to_string(), times.value(i)));
            }
        }
    }
    rows
}

fn sorted(mut rows: Vec<(String, i64)>) -> Vec<(String, i64)> {
    rows.sort();
    rows
}

async fn names(target: &ArchiveTarget, tenant: &str, at: &str) -> Vec<String> {
    let mut names: Vec<String> = folder(target, tenant, at)
        .await
        .objects
        .iter()
        .map(|m| folder_manifest::file_name(m.location.as_ref()).to_string())
        .collect();
    names.sort();
    names
}

const HOUR: &str = "2026-01-01T10:00:00Z";

async fn five_small_objects(target: &ArchiveTarget) -> Vec<(String, i64)> {
    for i in 0..5 {
        let probes: Vec<(String, String)> = (0..3)
            .map(|j| {
                (
                    ["weather", "search", "files"][(i + j) % 3].to_string(),
                    format!("2026-01-01T10:{:02}:{:02}Z", i * 10 + j, j),
                )
            })
            .collect();
        let probes: Vec<(&str, &str)> = probes
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        write_probes(
            target,
            "acme",
            &format!("probes-0-{i:05}-{i:05}.parquet"),
            &probes,
        )
        .await;
    }
    visible_rows(target, "acme", HOUR).await
}

#[tokio::test]
async fn compaction_merges_sorted_keeps_every_row_and_is_idempotent() {
    let target = target();
    let m = Maintenance::new(target.clone(), config());
    let before = five_small_objects(&target).await;
    assert_eq!(before.len(), 15);
    let now = t("2026-01-01T13:00:00Z");
    // The hour ended 2h ago: not yet closed for compact_after = 3h.
    let report = m
        .compact(
            Table::Probes,
            None,
            Duration::from_secs(3 * 3600),
            HOURS_ONLY,
            now,
        )
        .await
        .unwrap();
    assert!(report.is_empty());
    let report = m
        .compact(
            Table::Probes,
            None,
            Duration::from_secs(3600),
            HOURS_ONLY,
            now,
        )
        .await
        .unwrap();
    assert_eq!(
        (
            report.folders_compacted,
            report.objects_merged,
            report.objects_written,
            report.rows_compacted
        ),
        (1, 5, 1, 15)
    );
    let after = visible_rows(&target, "acme", HOUR).await;
    assert_eq!(
        after,
        sorted(before.clone()),
        "one object, sorted by (server, time)"
    );
    // The compacted object keeps the footer readers prune with, and row groups.
    let mut f = folder(&target, "acme", HOUR).await;
    let state = f.state(&target).await.unwrap();
    assert_eq!(state.visible.len(), 1);
    let input = Input::open(&target, state.visible[0].clone())
        .await
        .unwrap();
    let md = input.metadata.metadata();
    let kv = md.file_metadata().key_value_metadata().unwrap();
    let get = |k: &str| kv.iter().find(|x| x.key == k).and_then(|x| x.value.clone());
    assert_eq!(get(META_TENANT).as_deref(), Some("acme"));
    assert_eq!(
        get(META_MIN_TIME).as_deref(),
        Some("2026-01-01T10:00:00.000000000Z")
    );
    assert_eq!(
        get(META_MAX_TIME).as_deref(),
        Some("2026-01-01T10:42:02.000000000Z")
    );
    assert_eq!(
        md.num_row_groups(),
        4,
        "row groups of archive.row_group_rows"
    );
    assert!(md.row_group(0).sorting_columns().is_some());
    // Again: nothing to do.
    let again = m
        .compact(
            Table::Probes,
            None,
            Duration::from_secs(3600),
            HOURS_ONLY,
            now,
        )
        .await
        .unwrap();
    assert!(again.is_empty(), "{again:?}");
    // The inputs stay for the delay, then go; the manifest and compacted object stay.
    let purge = m
        .purge(
            Table::Probes,
            None,
            Duration::from_secs(600),
            now + TimeDelta::minutes(5),
        )
        .await
        .unwrap();
    assert_eq!(purge.objects_purged, 0);
    assert_eq!(names(&target, "acme", HOUR).await.len(), 7);
    let purge = m
        .purge(
            Table::Probes,
            None,
            Duration::from_secs(600),
            now + TimeDelta::minutes(11),
        )
        .await
        .unwrap();
    assert_eq!(purge.objects_purged, 5);
    let left = names(&target, "acme", HOUR).await;
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(left[0].starts_with("_compaction-0000000001"));
    assert!(left[1].starts_with("compacted-0000000001-"));
    assert_eq!(visible_rows(&target, "acme", HOUR).await, sorted(before));
}

#[tokio::test]
async fn late_objects_replays_and_leftovers() {
    let target = target();
    let m = Maintenance::new(target.clone(), config());
    let before = five_small_objects(&target).await;
    let now = t("2026-01-01T13:00:00Z");
    let after = Duration::from_secs(3600);
    // A crash between the merge and the manifest left an object behind: never visible.
    let orphan = folder_path(&target, "acme", HOUR)
        .join("compacted-0000000001-0000000000000000-000.parquet");
    let bytes = target
        .store
        .get(&folder_path(&target, "acme", HOUR).join("probes-0-00000-00000.parquet"))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    target
        .store
        .put(&orphan, PutPayload::from(bytes.clone()))
        .await
        .unwrap();
    assert_eq!(visible_rows(&target, "acme", HOUR).await.len(), 15);
    m.compact(Table::Probes, None, after, HOURS_ONLY, now)
        .await
        .unwrap();
    assert_eq!(
        visible_rows(&target, "acme", HOUR).await,
        sorted(before.clone())
    );
    // A writer replaying an old flush writes a replaced object again: still hidden.
    target
        .store
        .put(
            &folder_path(&target, "acme", HOUR).join("probes-0-00000-00000.parquet"),
            PutPayload::from(bytes),
        )
        .await
        .unwrap();
    assert_eq!(visible_rows(&target, "acme", HOUR).await.len(), 15);
    // A late object: visible next to the compacted one, then merged with it.
    write_probes(
        &target,
        "acme",
        "probes-1-00000-00000.parquet",
        &[("weather", "2026-01-01T10:59:00Z")],
    )
    .await;
    assert_eq!(visible_rows(&target, "acme", HOUR).await.len(), 16);
    let report = m
        .compact(Table::Probes, None, after, HOURS_ONLY, now)
        .await
        .unwrap();
    assert_eq!((report.objects_merged, report.objects_written), (2, 1));
    let mut expected = before.clone();
    expected.push((
        "weather".into(),
        t("2026-01-01T10:59:00Z").timestamp_nanos_opt().unwrap(),
    ));
    assert_eq!(
        visible_rows(&target, "acme", HOUR).await,
        sorted(expected.clone())
    );
    // The orphan goes once it is old enough; everything replaced after the delay.
    let later = now + TimeDelta::hours(2);
    let purge = m
        .purge(Table::Probes, None, Duration::from_secs(600), later)
        .await
        .unwrap();
    assert_eq!(
        purge.orphans_deleted, 0,
        "in-memory objects are dated now, not `later`"
    );
    assert_eq!(
        purge.objects_purged, 7,
        "5 inputs, the replayed one's name, gen 1's output: {purge:?}"
    );
    assert_eq!(purge.manifests_deleted, 1);
    assert_eq!(visible_rows(&target, "acme", HOUR).await, sorted(expected));
    let future = Utc::now() + TimeDelta::hours(2);
    let purge = m
        .purge(Table::Probes, None, Duration::from_secs(600), future)
        .await
        .unwrap();
    assert_eq!(purge.orphans_deleted, 1);
    let left = names(&target, "acme", HOUR).await;
    assert_eq!(left.len(), 2, "{left:?}");
}

#[tokio::test]
async fn concurrent_compactions_leave_one_winner() {
    let target = target();
    let m = Maintenance::new(target.clone(), config());
    let before = five_small_objects(&target).await;
    let now = t("2026-01-01T13:00:00Z");
    let mut a = folder(&target, "acme", HOUR).await;
    let mut b = a.clone();
    let mut ra = Report::default();
    let mut rb = Report::default();
    let (x, y) = tokio::join!(
        m.compact_folder(&mut a, now, &mut ra),
        m.compact_folder(&mut b, now, &mut rb)
    );
    x.unwrap();
    y.unwrap();
    assert_eq!(
        ra.folders_compacted + rb.folders_compacted,
        1,
        "{ra:?} {rb:?}"
    );
    assert_eq!(visible_rows(&target, "acme", HOUR).await, sorted(before));
}

#[tokio::test]
async fn deleting_a_server_or_a_tenant() {
    let target = target();
    let m = Maintenance::new(target.clone(), config());
    let before = five_small_objects(&target).await;
    write_probes(
        &target,
        "acme",
        "probes-0-00009-00009.parquet",
        &[("weather", "2026-01-01T11:30:00Z")],
    )
    .await;
    write_probes(
        &target,
        "globex",
        "probes-0-00009-00009.parquet",
        &[("weather", "2026-01-01T10:30:00Z")],
    )
    .await;
    let now = t("2026-01-01T13:00:00Z");
    let removal = Removal {
        server: Some("weather".into()),
        until: None,
    };
    let report = m
        .delete_rows(Table::Probes, "acme", &removal, Duration::ZERO, now)
        .await
        .unwrap();
    assert_eq!(report.rows_deleted, 6, "{report:?}");
    assert_eq!(report.folders_rewritten, 2);
    let left = visible_rows(&target, "acme", HOUR).await;
    let expected: Vec<_> = sorted(before.into_iter().filter(|(s, _)| s != "weather").collect());
    assert_eq!(sorted(left), expected);
    assert!(
        visible_rows(&target, "acme", "2026-01-01T11:00:00Z")
            .await
            .is_empty()
    );
    assert_eq!(
        visible_rows(&target, "globex", HOUR).await.len(),
        1,
        "other tenants untouched"
    );
    // With no delay the replaced objects are gone already: nothing of weather is stored.
    for name in names(&target, "acme", HOUR).await {
        assert!(
            name.starts_with("compacted-") || name.starts_with("_compaction-"),
            "{name}"
        );
    }
    // Again: nothing matches.
    let again = m
        .delete_rows(Table::Probes, "acme", &removal, Duration::ZERO, now)
        .await
        .unwrap();
    assert_eq!(again.rows_deleted, 0);
    // The whole tenant: its folders go.
    let all = Removal::default();
    let report = m
        .delete_rows(Table::Probes, "acme", &all, Duration::ZERO, now)
        .await
        .unwrap();
    assert_eq!(report.folders_deleted, 2);
    assert!(
        list_folders(&target, Table::Probes, Some("acme"))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(visible_rows(&target, "globex", HOUR).await.len(), 1);
}

#[tokio::test]
async fn a_sweep_removes_only_rows_before_the_request() {
    let target = target();
    let m = Maintenance::new(target.clone(), config());
    write_probes(
        &target,
        "acme",
        "probes-0-00001-00001.parquet",
        &[
            ("weather", "2026-01-01T10:10:00Z"),
            ("weather", "2026-01-01T10:50:00Z"),
            ("search", "2026-01-01T10:20:00Z"),
        ],
    )
    .await;
    write_probes(
        &target,
        "acme",
        "probes-0-00002-00002.parquet",
        &[("weather", "2026-01-01T09:10:00Z")],
    )
    .await;
    let removal = Removal {
        server: None,
        until: Some(t("2026-01-01T10:30:00Z")),
    };
    let now = t("2026-01-01T10:31:00Z");
    let report = m
        .delete_rows(Table::Probes, "acme", &removal, Duration::ZERO, now)
        .await
        .unwrap();
    assert_eq!(
        (report.folders_deleted, report.rows_deleted),
        (1, 2),
        "{report:?}"
    );
    let left = visible_rows(&target, "acme", HOUR).await;
    assert_eq!(
        left,
        vec![(
            "weather".to_string(),
            t("2026-01-01T10:50:00Z").timestamp_nanos_opt().unwrap()
        )]
    );
}

#[tokio::test]
async fn retention_deletes_expired_folders_only() {
    let target = target();
    let mut c = config();
    c.retention =
        serde_yaml_ng::from_str("tables: {probes: 2d}\ntenants:\n  globex: {probes: forever}\n")
            .unwrap();
    let m = Maintenance::new(target.clone(), c);
    write_probes(
        &target,
        "acme",
        "a.parquet",
        &[("weather", "2026-01-01T10:10:00Z")],
    )
    .await;
    write_probes(
        &target,
        "acme",
        "b.parquet",
        &[("weather", "2026-01-02T23:10:00Z")],
    )
    .await;
    write_probes(
        &target,
        "globex",
        "c.parquet",
        &[("weather", "2026-01-01T10:10:00Z")],
    )
    .await;
    let now = t("2026-01-03T12:00:00Z");
    let dry = m.apply_retention(Table::Probes, now, true).await.unwrap();
    assert_eq!(dry.folders_expired, 1);
    assert_eq!(
        list_folders(&target, Table::Probes, None)
            .await
            .unwrap()
            .len(),
        3
    );
    let report = m.apply_retention(Table::Probes, now, false).await.unwrap();
    assert_eq!((report.folders_expired, report.objects_expired), (1, 1));
    let left: Vec<String> = list_folders(&target, Table::Probes, None)
        .await
        .unwrap()
        .iter()
        .map(Folder::describe)
        .collect();
    assert_eq!(
        left,
        [
            "probes/tenant=acme/date=2026-01-02/hour=23",
            "probes/tenant=globex/date=2026-01-01/hour=10"
        ]
    );
    // Other tables keep everything.
    assert!(
        m.apply_retention(Table::Spans, now, false)
            .await
            .unwrap()
            .is_empty()
    );
}

/// Compactions in these tests keep to hours unless they say otherwise.
const HOURS_ONLY: Duration = Duration::from_secs(100 * 365 * 86_400);

/// What a reader sees of every folder of `tenant`'s probes on `date`.
async fn visible_rows_of_date(
    target: &ArchiveTarget,
    tenant: &str,
    date: &str,
) -> Vec<(String, i64)> {
    let mut rows = Vec::new();
    for folder in list_folders(target, Table::Probes, Some(tenant))
        .await
        .unwrap()
    {
        if folder.date().format("%Y-%m-%d").to_string() != date {
            continue;
        }
        let mut folder = folder.clone();
        let read = rows_of(target, folder.state(target).await.unwrap().visible).await;
        rows.extend(read);
    }
    sorted(rows)
}

async fn spans_of_date(target: &ArchiveTarget, tenant: &str) -> Vec<(Span, usize)> {
    let mut out = Vec::new();
    for mut folder in list_folders(target, Table::Probes, Some(tenant))
        .await
        .unwrap()
    {
        let visible = folder.state(target).await.unwrap().visible.len();
        if visible > 0 {
            out.push((folder.span, visible));
        }
    }
    out
}

#[tokio::test]
async fn a_closed_day_moves_into_its_day_folder() {
    let target = target();
    let m = Maintenance::new(target.clone(), config());
    let before = five_small_objects(&target).await;
    // Hour 10 was compacted hour by hour while the day was recent.
    let report = m
        .compact(
            Table::Probes,
            None,
            Duration::from_secs(3600),
            HOURS_ONLY,
            t("2026-01-01T13:00:00Z"),
        )
        .await
        .unwrap();
    assert_eq!(report.folders_compacted, 1);
    write_probes(
        &target,
        "acme",
        "probes-0-00010-00010.parquet",
        &[("files", "2026-01-01T11:05:00Z")],
    )
    .await;
    write_probes(
        &target,
        "acme",
        "probes-0-00011-00011.parquet",
        &[("weather", "2026-01-01T23:59:00Z")],
    )
    .await;
    let all = visible_rows_of_date(&target, "acme", "2026-01-01").await;
    assert_eq!(all.len(), before.len() + 2);
    assert_eq!(
        spans_of_date(&target, "acme").await,
        [(Span::Hour, 1), (Span::Hour, 1), (Span::Hour, 1)]
    );

    // An hour after midnight the day is not closed for day_compact_after = 2h.
    let report = m
        .compact(
            Table::Probes,
            None,
            Duration::from_secs(3600),
            Duration::from_secs(7200),
            t("2026-01-02T01:00:00Z"),
        )
        .await
        .unwrap();
    assert!(report.is_empty(), "{report:?}");
    let now = t("2026-01-02T03:00:00Z");
    let report = m
        .compact(
            Table::Probes,
            None,
            Duration::from_secs(3600),
            Duration::from_secs(7200),
            now,
        )
        .await
        .unwrap();
    assert_eq!(
        (
            report.folders_compacted,
            report.objects_merged,
            report.objects_written,
            report.rows_compacted
        ),
        (1, 3, 1, all.len() as u64),
        "{report:?}"
    );
    assert_eq!(
        visible_rows_of_date(&target, "acme", "2026-01-01").await,
        all
    );
    assert_eq!(spans_of_date(&target, "acme").await, [(Span::Day, 1)]);

    // Replays of names an hour manifest covered, or the day manifest, stay hidden.
    five_small_objects(&target).await;
    write_probes(
        &target,
        "acme",
        "probes-0-00010-00010.parquet",
        &[("files", "2026-01-01T11:05:00Z")],
    )
    .await;
    assert_eq!(
        visible_rows_of_date(&target, "acme", "2026-01-01").await,
        all
    );

    // A late object is visible beside the day object, and the next pass merges it in.
    write_probes(
        &target,
        "acme",
        "probes-0-00012-00012.parquet",
        &[("search", "2026-01-01T12:30:00Z")],
    )
    .await;
    let mut with_late = all.clone();
    with_late.push((
        "search".to_string(),
        t("2026-01-01T12:30:00Z").timestamp_nanos_opt().unwrap(),
    ));
    let with_late = sorted(with_late);
    assert_eq!(
        visible_rows_of_date(&target, "acme", "2026-01-01").await,
        with_late
    );
    let report = m.pass(now).await.unwrap();
    assert_eq!(
        (report.folders_compacted, report.objects_merged),
        (1, 2),
        "{report:?}"
    );
    assert_eq!(
        visible_rows_of_date(&target, "acme", "2026-01-01").await,
        with_late
    );
    assert_eq!(spans_of_date(&target, "acme").await, [(Span::Day, 1)]);

    // Once the delay passed, the hour folders go entirely (objects and manifests).
    let later = now + TimeDelta::hours(1);
    m.pass(later).await.unwrap();
    let folders: Vec<String> = list_folders(&target, Table::Probes, None)
        .await
        .unwrap()
        .iter()
        .map(Folder::describe)
        .collect();
    assert_eq!(folders, ["probes/tenant=acme/date=2026-01-01/hour=day"]);
    assert_eq!(
        visible_rows_of_date(&target, "acme", "2026-01-01").await,
        with_late
    );

    // Deleting a server rewrites the day object without its rows.
    let removal = Removal {
        server: Some("weather".to_string()),
        until: None,
    };
    let report = m
        .delete_rows(Table::Probes, "acme", &removal, Duration::ZERO, later)
        .await
        .unwrap();
    assert_eq!(report.folders_rewritten, 1);
    let left = visible_rows_of_date(&target, "acme", "2026-01-01").await;
    let expected: Vec<_> = with_late
        .iter()
        .filter(|(s, _)| s != "weather")
        .cloned()
        .collect();
    assert_eq!(left, expected);
    // Retention past the day deletes the day folder.
    let mut c = config();
    c.retention = serde_yaml_ng::from_str("tables: {probes: 1d}\n").unwrap();
    let r = Maintenance::new(target.clone(), c);
    let report = r
        .apply_retention(Table::Probes, t("2026-01-03T00:00:00Z"), false)
        .await
        .unwrap();
    assert_eq!(report.folders_expired, 1);
    assert!(
        list_folders(&target, Table::Probes, None)
            .await
            .unwrap()
            .is_empty()
    );
}
