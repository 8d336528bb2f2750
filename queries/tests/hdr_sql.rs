//! The HdrHistogram SQL functions (`hdr_merge`, `hdr_quantile`, `hdr_count`, `hdr_max`)
//! through DataFusion, over multi-partition tables so partial and final aggregation both
//! run.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BinaryViewArray, Float64Array, LargeBinaryArray,
    RecordBatch, StringArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Float64Type, Schema, UInt64Type};
use datafusion::datasource::MemTable;
use datafusion::physical_plan::displayable;
use datafusion::prelude::{SessionConfig, SessionContext};
use hdrhistogram::Histogram;
use mcpulse_queries::{QueryConfig, QueryEngine, Scope, hdr};
use mcpulse_schemas::latency_hist::{self, encode, new_histogram, quantile_ms, record_ms};

/// Partitions of every test table (and the session's target partitions).
const PARTITIONS: usize = 4;

/// A seeded SplitMix64, so the data is the same on every run without a `rand` dependency.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1].
    fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    /// Log-normal latency in milliseconds with the given median.
    fn latency_ms(&mut self, median_ms: f64, sigma: f64) -> f64 {
        let normal =
            (-2.0 * self.unit().ln()).sqrt() * (2.0 * std::f64::consts::PI * self.unit()).cos();
        median_ms * (sigma * normal).exp()
    }
}

/// One row of a test `signals` table.
struct Row {
    server: &'static str,
    hist: Option<Vec<u8>>,
}

fn session() -> SessionContext {
    let ctx =
        SessionContext::new_with_config(SessionConfig::new().with_target_partitions(PARTITIONS));
    hdr::register(&ctx);
    ctx
}

/// Registers `rows` as `signals(server, latency_hist)` spread round-robin over
/// [`PARTITIONS`] partitions, with `latency_hist` of type `hist_type`.
fn register_signals(ctx: &SessionContext, rows: &[Row], hist_type: DataType) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("server", DataType::Utf8, false),
        Field::new("latency_hist", hist_type.clone(), true),
    ]));
    let partitions = (0..PARTITIONS)
        .map(|p| {
            let part: Vec<&Row> = rows.iter().skip(p).step_by(PARTITIONS).collect();
            let servers: ArrayRef =
                Arc::new(StringArray::from_iter_values(part.iter().map(|r| r.server)));
            let hists = part.iter().map(|r| r.hist.as_deref());
            let hists: ArrayRef = match hist_type {
                DataType::Binary => Arc::new(hists.collect::<BinaryArray>()),
                DataType::LargeBinary => Arc::new(hists.collect::<LargeBinaryArray>()),
                DataType::BinaryView => Arc::new(hists.collect::<BinaryViewArray>()),
                ref other => panic!("not a binary type: {other}"),
            };
            vec![RecordBatch::try_new(schema.clone(), vec![servers, hists]).unwrap()]
        })
        .collect();
    let table = MemTable::try_new(schema, partitions).unwrap();
    ctx.register_table("signals", Arc::new(table)).unwrap();
}

/// 60 one-minute histograms for `server` from `n` latencies, plus the histogram of all
/// of them and the raw values.
fn minutes(
    rng: &mut Rng,
    server: &'static str,
    n: usize,
    median_ms: f64,
) -> (Vec<Row>, Histogram<u64>, Vec<f64>) {
    let mut per_minute: Vec<Histogram<u64>> = (0..60).map(|_| new_histogram()).collect();
    let mut all = new_histogram();
    let mut raw = Vec::with_capacity(n);
    for i in 0..n {
        let ms = rng.latency_ms(median_ms, 1.0);
        record_ms(&mut per_minute[i * 60 / n], ms);
        record_ms(&mut all, ms);
        raw.push(ms);
    }
    let rows = per_minute
        .iter()
        .map(|h| Row {
            server,
            hist: Some(encode(h)),
        })
        .collect();
    (rows, all, raw)
}

async fn query(ctx: &SessionContext, sql: &str) -> RecordBatch {
    let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
    datafusion::arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap()
}

/// The error of `sql`, whether planning or execution refuses it.
async fn query_err(ctx: &SessionContext, sql: &str) -> String {
    let result = match ctx.sql(sql).await {
        Ok(df) => df.collect().await.map(|_| ()),
        Err(e) => Err(e),
    };
    result.expect_err("the query fails").to_string()
}

/// The physical plan of `sql`, indented.
async fn plan(ctx: &SessionContext, sql: &str) -> String {
    let plan = ctx
        .sql(sql)
        .await
        .unwrap()
        .create_physical_plan()
        .await
        .unwrap();
    displayable(plan.as_ref()).indent(true).to_string()
}

fn f64_column(batch: &RecordBatch, i: usize) -> &Float64Array {
    batch.column(i).as_primitive::<Float64Type>()
}

#[tokio::test]
async fn merged_p99_equals_p99_of_all_values() {
    let mut rng = Rng(0x5eed);
    let (rows, all, mut raw) = minutes(&mut rng, "a", 100_000, 20.0);
    let ctx = session();
    register_signals(&ctx, &rows, DataType::Binary);

    let sql = "SELECT hdr_quantile(hdr_merge(latency_hist), 0.99) AS p99, \
               hdr_count(hdr_merge(latency_hist)) AS n FROM signals";
    let plan = plan(&ctx, sql).await;
    assert!(plan.contains("mode=Partial"), "{plan}");
    assert!(plan.contains("mode=Final"), "{plan}");

    let batch = query(&ctx, sql).await;
    let p99 = f64_column(&batch, 0).value(0);
    let n = batch.column(1).as_primitive::<UInt64Type>().value(0);
    assert_eq!(n, 100_000);
    // Merging HdrHistograms is lossless: the same as one histogram of every value.
    assert_eq!(Some(p99), quantile_ms(&all, 0.99));

    raw.sort_by(f64::total_cmp);
    let exact = raw[(0.99 * raw.len() as f64).ceil() as usize - 1];
    let error = (p99 - exact).abs() / exact;
    assert!(error <= 0.01, "p99 {p99} ms vs exact {exact} ms: {error}");
}

#[tokio::test]
async fn group_by_server_merges_each_server_separately() {
    let mut rng = Rng(42);
    let servers = [
        ("alpha", 5.0),
        ("beta", 20.0),
        ("gamma", 80.0),
        ("delta", 300.0),
    ];
    let mut rows = Vec::new();
    let mut expected = Vec::new();
    for (server, median) in servers {
        let (r, all, _) = minutes(&mut rng, server, 20_000, median);
        rows.extend(r);
        expected.push((server, all));
    }
    // Interleave the servers so every partition holds every server.
    rows.sort_by_cached_key(|_| rng.next_u64());
    let ctx = session();
    register_signals(&ctx, &rows, DataType::Binary);

    let sql = "SELECT server, \
                 hdr_quantile(hdr_merge(latency_hist), 0.5) AS p50, \
                 hdr_quantile(hdr_merge(latency_hist), 0.99) AS p99, \
                 hdr_max(hdr_merge(latency_hist)) AS max, \
                 hdr_count(hdr_merge(latency_hist)) AS n \
               FROM signals GROUP BY server ORDER BY server";
    let plan = plan(&ctx, sql).await;
    assert!(plan.contains("mode=Partial"), "{plan}");
    assert!(plan.contains("mode=FinalPartitioned"), "{plan}");

    let batch = query(&ctx, sql).await;
    expected.sort_by_key(|(server, _)| *server);
    assert_eq!(batch.num_rows(), expected.len());
    let names = batch.column(0).as_string::<i32>();
    let counts = batch.column(4).as_primitive::<UInt64Type>();
    for (row, (server, all)) in expected.iter().enumerate() {
        assert_eq!(names.value(row), *server);
        assert_eq!(
            Some(f64_column(&batch, 1).value(row)),
            quantile_ms(all, 0.5)
        );
        assert_eq!(
            Some(f64_column(&batch, 2).value(row)),
            quantile_ms(all, 0.99)
        );
        assert_eq!(
            Some(f64_column(&batch, 3).value(row)),
            latency_hist::max_ms(all)
        );
        assert_eq!(counts.value(row), 20_000);
    }
}

#[tokio::test]
async fn large_binary_and_binary_view_histograms_work() {
    let mut rng = Rng(7);
    let (rows, all, _) = minutes(&mut rng, "a", 5_000, 20.0);
    for hist_type in [DataType::LargeBinary, DataType::BinaryView] {
        let ctx = session();
        register_signals(&ctx, &rows, hist_type.clone());
        let batch = query(&ctx, "SELECT sum(hdr_count(latency_hist)) FROM signals").await;
        assert_eq!(
            batch.column(0).as_primitive::<UInt64Type>().value(0),
            5_000,
            "{hist_type}"
        );
        let batch = query(
            &ctx,
            "SELECT hdr_quantile(hdr_merge(latency_hist), 0.9) FROM signals",
        )
        .await;
        assert_eq!(
            Some(f64_column(&batch, 0).value(0)),
            quantile_ms(&all, 0.9),
            "{hist_type}"
        );
    }
}

#[tokio::test]
async fn nulls_and_empty_histograms() {
    let mut h = new_histogram();
    record_ms(&mut h, 12.5);
    let rows = vec![
        Row {
            server: "some",
            hist: Some(encode(&h)),
        },
        Row {
            server: "some",
            hist: None,
        },
        Row {
            server: "none",
            hist: None,
        },
        Row {
            server: "none",
            hist: None,
        },
        Row {
            server: "empty",
            hist: Some(encode(&new_histogram())),
        },
    ];
    let ctx = session();
    register_signals(&ctx, &rows, DataType::Binary);

    let batch = query(
        &ctx,
        "SELECT server, hdr_merge(latency_hist) IS NULL, \
                hdr_quantile(hdr_merge(latency_hist), 0.5), \
                hdr_count(hdr_merge(latency_hist)), hdr_max(hdr_merge(latency_hist)) \
         FROM signals GROUP BY server ORDER BY server",
    )
    .await;
    let names = batch.column(0).as_string::<i32>();
    let is_null = batch.column(1).as_boolean();
    let p50 = f64_column(&batch, 2);
    let count = batch.column(3).as_primitive::<UInt64Type>();
    let max = f64_column(&batch, 4);
    // empty: a merged empty histogram (not NULL) without quantiles.
    assert_eq!(names.value(0), "empty");
    assert!(!is_null.value(0));
    assert!(p50.is_null(0) && max.is_null(0));
    assert_eq!(count.value(0), 0);
    // none: only NULLs merge to NULL.
    assert_eq!(names.value(1), "none");
    assert!(is_null.value(1));
    assert!(p50.is_null(1) && count.is_null(1) && max.is_null(1));
    // some: the NULL is ignored.
    assert_eq!(names.value(2), "some");
    assert!(!is_null.value(2));
    assert_eq!(count.value(2), 1);
    assert_eq!(p50.value(2), quantile_ms(&h, 0.5).unwrap());

    // No rows at all.
    let batch = query(
        &ctx,
        "SELECT hdr_merge(latency_hist) FROM signals WHERE server = 'nobody'",
    )
    .await;
    assert_eq!(batch.num_rows(), 1);
    assert!(batch.column(0).is_null(0));

    // NULL literals and a NULL quantile.
    let batch = query(
        &ctx,
        "SELECT hdr_quantile(NULL, 0.5), hdr_count(NULL), hdr_max(NULL), \
                hdr_quantile(latency_hist, NULL) FROM signals WHERE server = 'some'",
    )
    .await;
    for column in batch.columns() {
        assert_eq!(column.null_count(), column.len());
    }
}

#[tokio::test]
async fn quantile_column_and_out_of_range_quantiles() {
    let mut h = new_histogram();
    for ms in 1..=100 {
        record_ms(&mut h, f64::from(ms));
    }
    let rows = vec![Row {
        server: "a",
        hist: Some(encode(&h)),
    }];
    let ctx = session();
    register_signals(&ctx, &rows, DataType::Binary);

    // q from a column, one value per row.
    let batch = query(
        &ctx,
        "SELECT hdr_quantile(s.latency_hist, q.q) FROM signals s \
         CROSS JOIN (VALUES (0.0), (0.5), (1.0), (NULL)) AS q(q) ORDER BY q.q NULLS LAST",
    )
    .await;
    let qs = f64_column(&batch, 0);
    assert_eq!(qs.value(0), 1.0);
    assert_eq!(qs.value(1), quantile_ms(&h, 0.5).unwrap());
    // The highest value equivalent to 100 ms at 2 significant digits (within 1/128).
    let max = quantile_ms(&h, 1.0).unwrap();
    assert!((100.0..100.8).contains(&max), "{max}");
    assert_eq!(qs.value(2), max);
    assert!(qs.is_null(3));

    // An integer literal is coerced to Float64.
    let batch = query(&ctx, "SELECT hdr_quantile(latency_hist, 1) FROM signals").await;
    assert_eq!(f64_column(&batch, 0).value(0), max);

    for (q, shown) in [("1.5", "1.5"), ("-0.1", "-0.1"), ("'NaN'::double", "NaN")] {
        let err = query_err(
            &ctx,
            &format!("SELECT hdr_quantile(latency_hist, {q}) FROM signals"),
        )
        .await;
        assert!(err.contains("hdr_quantile"), "{err}");
        assert!(err.contains(shown), "{err}");
    }
    let err = query_err(
        &ctx,
        "SELECT hdr_quantile(s.latency_hist, q.q) FROM signals s \
         CROSS JOIN (VALUES (0.5), (2.0)) AS q(q)",
    )
    .await;
    assert!(err.contains("hdr_quantile") && err.contains('2'), "{err}");
}

#[tokio::test]
async fn garbage_bytes_are_errors_naming_the_function() {
    let mut h = new_histogram();
    record_ms(&mut h, 3.0);
    let rows = vec![
        Row {
            server: "a",
            hist: Some(encode(&h)),
        },
        Row {
            server: "a",
            hist: Some(b"definitely not a histogram".to_vec()),
        },
    ];
    let ctx = session();
    register_signals(&ctx, &rows, DataType::Binary);

    for func in ["hdr_count", "hdr_max"] {
        let err = query_err(&ctx, &format!("SELECT {func}(latency_hist) FROM signals")).await;
        assert!(err.contains(&format!("{func}: invalid histogram")), "{err}");
    }
    let err = query_err(&ctx, "SELECT hdr_merge(latency_hist) FROM signals").await;
    assert!(err.contains("hdr_merge: invalid histogram"), "{err}");
    let err = query_err(&ctx, "SELECT hdr_quantile(X'DEADBEEF', 0.5)").await;
    assert!(err.contains("hdr_quantile: invalid histogram"), "{err}");

    // Non-binary arguments are refused at planning.
    let err = query_err(&ctx, "SELECT hdr_merge(server) FROM signals").await;
    assert!(err.contains("hdr_merge"), "{err}");
    let err = query_err(&ctx, "SELECT hdr_quantile(latency_hist, 'x') FROM signals").await;
    assert!(err.contains("hdr_quantile"), "{err}");
}

#[tokio::test]
async fn query_engine_sessions_have_the_functions() {
    let dir = tempfile::tempdir().unwrap();
    let root = url::Url::from_directory_path(dir.path()).unwrap();
    let catalog = mcpulse_queries::ArchiveCatalog::new(
        root,
        Arc::new(object_store::local::LocalFileSystem::new()),
    );
    let engine = QueryEngine::new(catalog, QueryConfig::default());

    let mut all = new_histogram();
    let mut hex = |values: &[f64]| {
        let mut h = new_histogram();
        for ms in values {
            record_ms(&mut h, *ms);
            record_ms(&mut all, *ms);
        }
        encode(&h)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let sql = format!(
        "SELECT hdr_quantile(hdr_merge(h), 0.5) AS p50, hdr_count(hdr_merge(h)) AS n \
         FROM (VALUES (X'{}'), (X'{}'), (NULL)) AS t(h)",
        hex(&[1.0, 2.0]),
        hex(&[3.0, 4.0, 5.0]),
    );
    let result = engine.execute(&Scope::All, &sql).await.unwrap();
    let batch = &result.batches[0];
    // 3 ms, as the highest value equivalent to it.
    assert_eq!(Some(f64_column(batch, 0).value(0)), quantile_ms(&all, 0.5));
    assert!((3.0..3.01).contains(&f64_column(batch, 0).value(0)));
    assert_eq!(batch.column(1).as_primitive::<UInt64Type>().value(0), 5);
}
