//! Kafka mode: the pipeline (ingest → Kafka → archiver runtime → Parquet) against plain
//! rdkafka producing and consuming the same messages, on the same broker, in one run.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use bytes::Bytes;
use mcpulse::Config;
use mcpulse::archive_store::ArchiveLocation;
use mcpulse::config::BusConfig;
use mcpulse::roles::{GROUP_ARCHIVE_SPANS, archiver_runtime, open_bus};
use mcpulse_bus::kafka::{KafkaBus, KafkaConfig, client_config};
use mcpulse_bus::{Bus as _, TopicSpec};
use mcpulse_ingest::stats::IngestStats;
use mcpulse_ingest::{Backpressure, Edge, TraceIngest};
use mcpulse_processors::archive::SpansFormat;
use mcpulse_processors::stats::RuntimeStats;
use mcpulse_schemas::topics::{HEADER_CONTENT_TYPE, HEADER_TENANT, tenant_key};
use parquet::file::reader::{FileReader, SerializedFileReader};
use prost::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message as _, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer as _, ProducerContext};
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};

use crate::tansu::{self, Tansu};
use crate::{
    Args, SERVICES, TEMPLATES, cpu_time, peak_rss_mb, request, requests_for, reset_peak_rss,
    service_name,
};

/// Tenant of every benchmark request.
const TENANT: &str = "bench";
/// Content type ingest puts on OTLP protobuf messages.
const CONTENT_TYPE: &[u8] = b"application/x-protobuf";

/// The Kafka-mode benchmark (see the binary's documentation).
pub fn run(args: &Args) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .try_init();

    let spans = args.spans.unwrap_or(1_000_000);
    let batch = args.batch.unwrap_or(500);
    let requests = requests_for(spans, batch)?;
    let timeout = Duration::from_secs(args.timeout_secs);
    let templates: Vec<Bytes> = (0..TEMPLATES.min(requests))
        .map(|i| Bytes::from(request(i, batch).encode_to_vec()))
        .collect();
    let payload_bytes: usize = (0..requests)
        .map(|i| templates[i % templates.len()].len())
        .sum();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);

    let broker = match &args.kafka {
        Some(bootstrap) => Broker::External(bootstrap.clone()),
        None => {
            let binary = args.tansu.clone().unwrap_or_else(tansu::default_binary);
            Broker::Tansu(Tansu::start(&binary)?, binary)
        }
    };
    let mut kafka = KafkaConfig::new(broker.bootstrap());
    kafka.partitions = args.partitions;
    for (flag, given, options) in [
        ("--option", &args.options, &mut kafka.options),
        (
            "--producer-option",
            &args.producer_options,
            &mut kafka.producer_options,
        ),
        (
            "--consumer-option",
            &args.consumer_options,
            &mut kafka.consumer_options,
        ),
    ] {
        for option in given {
            let (key, value) = option
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("{flag} {option:?}: expected KEY=VALUE"))?;
            options.insert(key.trim().into(), value.trim().into());
        }
    }
    let batch_num_messages = args.batch_num_messages.or(match broker {
        Broker::Tansu(..) => Some(1),
        Broker::External(_) => None,
    });
    if let Some(n) = batch_num_messages {
        kafka
            .producer_options
            .insert("batch.num.messages".into(), n.to_string());
    }
    kafka.validate().map_err(anyhow::Error::msg)?;
    let batch_num_messages = kafka
        .producer_options
        .get("batch.num.messages")
        .or(kafka.options.get("batch.num.messages"))
        .cloned();
    let run_id = format!(
        "{}-{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis()
    );

    println!(
        "bench-ingest (Kafka): {} spans in {requests} OTLP requests of {batch} spans = {requests} messages ({} distinct, {:.1} MB of payload), {cores} cores",
        requests * batch,
        templates.len(),
        payload_bytes as f64 / 1e6,
    );
    println!("broker: {}", broker.describe());
    println!("topics: {} partitions", kafka.partitions);
    println!(
        "producer settings of both (pipeline and raw): {}",
        show(&client_config::producer(&kafka))
    );
    println!(
        "consumer settings of both: {}",
        show(&client_config::consumer(&kafka, "<group>"))
    );
    match batch_num_messages {
        Some(n) => println!(
            "batch.num.messages={n} on both producers{}",
            if n == "1" {
                " (one record per batch: tansu 0.6 mishandles fetches inside multi-record batches)"
            } else {
                ""
            }
        ),
        None => println!(
            "batch.num.messages: librdkafka's default on both producers (pass --batch-num-messages 1 if the broker is tansu)"
        ),
    }
    println!(
        "pipeline: {} concurrent ingest requests, {} span archiver runtime(s) in group {GROUP_ARCHIVE_SPANS}.bench-{run_id}",
        args.concurrency, args.archivers
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let load = Load {
        templates: &templates,
        requests,
        batch,
        timeout,
    };
    let pipeline = rt
        .block_on(pipeline(&kafka, &broker, &run_id, &load, args))
        .context("pipeline phase")?;
    let raw_topic = format!("bench-{run_id}.raw");
    rt.block_on(create_topic(&kafka, &raw_topic))?;
    let raw = raw(&kafka, &broker, &raw_topic, &run_id, &load).context("raw phase")?;
    drop(rt);

    let total = (requests * batch) as f64;
    let pipeline_rate = total / pipeline.wall.as_secs_f64();
    let raw_wall = raw.produce + raw.consume;
    let raw_msgs = requests as f64 / raw_wall.as_secs_f64();
    let raw_rate = raw_msgs * batch as f64;
    println!();
    println!(
        "pipeline: all requests acknowledged (in Kafka) after {:.2}s, all messages consumed after {:.2}s, all spans in Parquet after {:.2}s, offsets committed after {:.2}s ({} files, {:.1} MB)",
        pipeline.acked.as_secs_f64(),
        pipeline.consumed.as_secs_f64(),
        pipeline.archived.as_secs_f64(),
        pipeline.wall.as_secs_f64(),
        pipeline.files,
        pipeline.parquet_bytes as f64 / 1e6,
    );
    println!(
        "raw: produced {requests} messages (all delivery reports) in {:.2}s ({:.0} msg/s), consumed them in {:.2}s ({:.0} msg/s)",
        raw.produce.as_secs_f64(),
        requests as f64 / raw.produce.as_secs_f64(),
        raw.consume.as_secs_f64(),
        requests as f64 / raw.consume.as_secs_f64(),
    );
    println!();
    println!(
        "{:<48} {:>9} {:>7} {:>7} {:>6} {:>12} {:>10}",
        "path", "spans/s", "msgs/s", "wall s", "cpu s", "spans/cpu-s", "broker cpu"
    );
    println!(
        "{:<48} {:>9.0} {:>7.0} {:>7.2} {:>6.2} {:>12.0} {:>10}",
        "pipeline (ingest → Kafka → archiver → Parquet)",
        pipeline_rate,
        requests as f64 / pipeline.wall.as_secs_f64(),
        pipeline.wall.as_secs_f64(),
        pipeline.cpu.as_secs_f64(),
        total / pipeline.cpu.as_secs_f64(),
        broker_cpu(pipeline.broker_cpu),
    );
    println!(
        "{:<48} {:>9.0} {:>7.0} {:>7.2} {:>6.2} {:>12.0} {:>10}",
        "raw rdkafka (produce all, then consume all)",
        raw_rate,
        raw_msgs,
        raw_wall.as_secs_f64(),
        raw.cpu.as_secs_f64(),
        total / raw.cpu.as_secs_f64(),
        broker_cpu(raw.broker_cpu),
    );
    println!();
    println!("pipeline: {pipeline_rate:.0} spans/s");
    println!("raw: {raw_msgs:.0} messages/s = {raw_rate:.0} spans/s ({batch} spans per message)");
    println!(
        "pipeline / raw: {:.1}% (target ≥ 50%)",
        100.0 * pipeline_rate / raw_rate
    );
    println!(
        "  (until the pipeline's last message was consumed: {:.0} spans/s, {:.1}% of raw; the rest is the archive's flush of its last, partial files after flush_interval {:?})",
        total / pipeline.consumed.as_secs_f64(),
        100.0 * total / pipeline.consumed.as_secs_f64() / raw_rate,
        pipeline.flush_interval
    );
    let broker_rss = match &broker {
        Broker::Tansu(t, _) => format!(", tansu {:.0} MB", peak_rss_mb(Some(t.pid()))),
        Broker::External(_) => String::new(),
    };
    println!(
        "peak RSS: {:.0} MB during the pipeline, {:.0} MB during raw{broker_rss}",
        pipeline.rss_mb, raw.rss_mb
    );
    println!(
        "check: {} spans archived (Parquet row count) == {} sent (incl. warm-up); raw: {} messages consumed == {} produced, {} payload bytes",
        pipeline.parquet_rows, pipeline.sent_spans, raw.consumed, requests, raw.consumed_bytes
    );
    Ok(())
}

fn broker_cpu(cpu: Option<Duration>) -> String {
    cpu.map_or_else(|| "-".into(), |c| format!("{:.2}", c.as_secs_f64()))
}

/// The broker the run uses.
enum Broker {
    External(String),
    Tansu(Tansu, std::path::PathBuf),
}

impl Broker {
    fn bootstrap(&self) -> String {
        match self {
            Broker::External(b) => b.clone(),
            Broker::Tansu(t, _) => t.bootstrap(),
        }
    }

    fn describe(&self) -> String {
        match self {
            Broker::External(b) => format!("{b} (external)"),
            Broker::Tansu(t, path) => format!(
                "{} ({}, memory storage, started by the benchmark) at {}",
                if t.version.is_empty() {
                    "tansu"
                } else {
                    &t.version
                },
                path.display(),
                t.bootstrap()
            ),
        }
    }

    fn cpu_time(&self) -> Option<Duration> {
        match self {
            Broker::External(_) => None,
            Broker::Tansu(t, _) => Some(t.cpu_time()),
        }
    }

    fn log_tail(&self) -> String {
        match self {
            Broker::External(_) => String::new(),
            Broker::Tansu(t, _) => format!("\n--- tansu log:\n{}", t.log_tail()),
        }
    }
}

/// What each phase sends.
struct Load<'a> {
    templates: &'a [Bytes],
    requests: usize,
    batch: usize,
    timeout: Duration,
}

impl Load<'_> {
    /// Payload, key and service of request `i`.
    fn message(&self, i: usize) -> (&Bytes, String) {
        let t = i % self.templates.len();
        (&self.templates[t], tenant_key(TENANT, &service_name(t)))
    }
}

struct PipelineMeasure {
    acked: Duration,
    consumed: Duration,
    archived: Duration,
    /// Until every span is in Parquet and every offset committed.
    wall: Duration,
    cpu: Duration,
    broker_cpu: Option<Duration>,
    rss_mb: f64,
    files: u64,
    parquet_bytes: u64,
    parquet_rows: u64,
    sent_spans: u64,
    flush_interval: Duration,
}

/// Ingest → Kafka → archiver runtime → Parquet, as `mcpulse ingest` and `mcpulse process`
/// wire them (one process here).
async fn pipeline(
    kafka: &KafkaConfig,
    broker: &Broker,
    run_id: &str,
    load: &Load<'_>,
    args: &Args,
) -> anyhow::Result<PipelineMeasure> {
    let concurrency = args.concurrency;
    reset_peak_rss();
    let dir = tempfile::tempdir()?;
    let mut config = Config::embedded_default();
    config.data_dir = dir.path().to_path_buf();
    config.topics.prefix = format!("bench-{run_id}.");
    config.bus = BusConfig::Kafka(kafka.clone());
    if let Some(mb) = args.flush_mb {
        config.archive.flush_bytes = mb << 20;
    }
    let topic = config.topics.spans();
    let group = format!("{GROUP_ARCHIVE_SPANS}.bench-{run_id}");
    let bus = open_bus(&config).await?;
    let archive = ArchiveLocation::open(&config)?;
    // One set of counters for every member (they add up).
    let stats = Arc::new(RuntimeStats::default());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut archiver_tasks = Vec::new();
    for _ in 0..args.archivers {
        let runtime = archiver_runtime(
            &config,
            &bus,
            &archive,
            SpansFormat,
            &group,
            topic.clone(),
            stats.clone(),
        )
        .await?;
        archiver_tasks.push(tokio::spawn(runtime.run(stopped.clone())));
    }
    let pressure = Backpressure::new(
        config.ingest.max_inflight_bytes,
        u64::MAX,
        config.ingest.retry_after,
    );
    let ingest_stats = Arc::new(IngestStats::default());
    let edge = Edge::new(
        bus.producer(),
        config.ingest.clone(),
        pressure,
        ingest_stats.clone(),
    );
    let ingest = TraceIngest::new(edge, &config.topics);

    // Warm-up, outside the measurement: connections, producer id, the group join and
    // assignment, one archive flush per partition (one request from each service).
    let mut warm = 0u64;
    for template in load.templates.iter().take(SERVICES) {
        let outcome = ingest
            .export_protobuf(TENANT, template.clone())
            .await
            .context("warm-up request")?;
        anyhow::ensure!(
            outcome.accepted == load.batch as u64 && outcome.rejected == 0,
            "warm-up: {outcome:?}"
        );
        warm += outcome.accepted;
    }
    let deadline = Instant::now() + load.timeout;
    while stats.rows_written.load(Relaxed) < warm {
        anyhow::ensure!(
            Instant::now() < deadline,
            "warm-up: the archiver did not archive the first requests within {:?} (joined the group?){}",
            load.timeout,
            broker.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let records0 = stats.records.load(Relaxed);

    let cpu0 = cpu_time();
    let broker_cpu0 = broker.cpu_time();
    let start = Instant::now();
    let progress = args.progress.then(|| {
        let (stats, ingest_stats) = (stats.clone(), ingest_stats.clone());
        let (records0, rows0) = (records0, stats.rows_written.load(Relaxed));
        let accepted0 = ingest_stats.spans_accepted.load(Relaxed);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                println!(
                    "  {:>6.2}s: spans acknowledged {:>8}, records consumed {:>5}, spans in Parquet {:>8}, cpu {:.2}s",
                    start.elapsed().as_secs_f64(),
                    ingest_stats.spans_accepted.load(Relaxed) - accepted0,
                    stats.records.load(Relaxed) - records0,
                    stats.rows_written.load(Relaxed) - rows0,
                    (cpu_time() - cpu0).as_secs_f64(),
                );
            }
        })
    });
    let mut senders = Vec::new();
    for worker in 0..concurrency {
        let ingest = ingest.clone();
        let templates = load.templates.to_vec();
        let requests = load.requests;
        senders.push(tokio::spawn(async move {
            let mut i = worker;
            while i < requests {
                let outcome = ingest
                    .export_protobuf(TENANT, templates[i % templates.len()].clone())
                    .await?;
                anyhow::ensure!(outcome.rejected == 0, "spans rejected: {}", outcome.message);
                i += concurrency;
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for s in senders {
        s.await??;
    }
    let acked = start.elapsed();
    let sent_spans = warm + (load.requests * load.batch) as u64;
    let messages = load.requests as u64;
    let deadline = Instant::now() + load.timeout;
    let (mut consumed, mut archived) = (None, None);
    let wall = loop {
        if consumed.is_none() && stats.records.load(Relaxed) >= records0 + messages {
            consumed = Some(start.elapsed());
        }
        if stats.rows_written.load(Relaxed) >= sent_spans {
            let at = *archived.get_or_insert_with(|| start.elapsed());
            consumed.get_or_insert(at);
            let status = bus.status(&group, std::slice::from_ref(&topic)).await?;
            if status.total_lag() == 0 {
                break start.elapsed();
            }
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "pipeline did not finish within {:?}: {} of {sent_spans} spans archived, {} of {messages} messages consumed{}",
            load.timeout,
            stats.rows_written.load(Relaxed),
            stats.records.load(Relaxed) - records0,
            broker.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let cpu = cpu_time() - cpu0;
    let broker_cpu = broker.cpu_time().zip(broker_cpu0).map(|(b, a)| b - a);
    let rss_mb = peak_rss_mb(None);
    if let Some(progress) = progress {
        progress.abort();
    }

    let _ = stop.send(true);
    for task in archiver_tasks {
        task.await??;
    }
    bus.shutdown().await?;

    // Correctness: what the archiver says, and what the Parquet files hold.
    let rows_written = stats.rows_written.load(Relaxed);
    let dead = stats.dead_lettered.load(Relaxed);
    let accepted = ingest_stats.spans_accepted.load(Relaxed);
    let parquet_rows = parquet_rows(&archive_dir(&config))?;
    anyhow::ensure!(dead == 0, "pipeline: {dead} records were dead-lettered");
    anyhow::ensure!(
        accepted == sent_spans,
        "pipeline: ingest accepted {accepted} spans, {sent_spans} were sent"
    );
    anyhow::ensure!(
        rows_written == sent_spans && parquet_rows == sent_spans,
        "pipeline: the archiver reports {rows_written} spans written and the Parquet files hold {parquet_rows}, but {sent_spans} were sent"
    );
    let retried = [
        ("flush errors", stats.flush_errors.load(Relaxed)),
        ("commit errors", stats.commit_errors.load(Relaxed)),
        ("process errors", stats.process_errors.load(Relaxed)),
        ("stalls", stats.stalls.load(Relaxed)),
    ];
    for (what, n) in retried {
        if n > 0 {
            println!("pipeline: note: {n} {what} (retried) during the run");
        }
    }
    Ok(PipelineMeasure {
        acked,
        consumed: consumed.unwrap_or(wall),
        archived: archived.unwrap_or(wall),
        wall,
        cpu,
        broker_cpu,
        rss_mb,
        files: stats.files_written.load(Relaxed),
        parquet_bytes: stats.bytes_written.load(Relaxed),
        parquet_rows,
        sent_spans,
        flush_interval: config.archive.flush_interval,
    })
}

fn archive_dir(config: &Config) -> std::path::PathBuf {
    config.data_dir.join("archive")
}

/// Rows of every Parquet file under `dir` (from their footers).
fn parquet_rows(dir: &Path) -> anyhow::Result<u64> {
    let mut rows = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).with_context(|| format!("{}", dir.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "parquet") {
                let reader = SerializedFileReader::new(std::fs::File::open(&path)?)
                    .with_context(|| format!("reading {}", path.display()))?;
                rows += reader.metadata().file_metadata().num_rows() as u64;
            }
        }
    }
    Ok(rows)
}

async fn create_topic(kafka: &KafkaConfig, topic: &str) -> anyhow::Result<()> {
    let bus = KafkaBus::connect(kafka.clone()).await?;
    bus.ensure_topics(&[TopicSpec {
        name: topic.to_string(),
        partitions: kafka.partitions,
        replication: kafka.replication,
    }])
    .await?;
    bus.shutdown().await?;
    Ok(())
}

/// A client configuration as `k=v k=v` (secrets masked by rdkafka).
fn show(config: &ClientConfig) -> String {
    config
        .config_map()
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Delivery reports of the raw producer.
#[derive(Default)]
struct Deliveries {
    ok: AtomicU64,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

struct RawCtx(Arc<Deliveries>);

impl ClientContext for RawCtx {}

impl ProducerContext for RawCtx {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.0.ok.fetch_add(1, Relaxed);
            }
            Err((error, _)) => {
                self.0.failed.fetch_add(1, Relaxed);
                if let Ok(mut first) = self.0.first_error.lock() {
                    first.get_or_insert(error.to_string());
                }
            }
        }
    }
}

struct RawMeasure {
    produce: Duration,
    consume: Duration,
    cpu: Duration,
    broker_cpu: Option<Duration>,
    rss_mb: f64,
    consumed: u64,
    consumed_bytes: u64,
}

/// rdkafka alone: a `BaseProducer` with mcpulse's producer settings sends every message
/// (the same payload, key and headers ingest produces) and waits for all delivery
/// reports; then a `BaseConsumer` assigned every partition reads them all back.
fn raw(
    kafka: &KafkaConfig,
    broker: &Broker,
    topic: &str,
    run_id: &str,
    load: &Load<'_>,
) -> anyhow::Result<RawMeasure> {
    reset_peak_rss();
    let deliveries = Arc::new(Deliveries::default());
    let producer: BaseProducer<RawCtx> =
        client_config::producer(kafka).create_with_context(RawCtx(deliveries.clone()))?;
    let consumer: BaseConsumer =
        client_config::consumer(kafka, &format!("bench-{run_id}.raw")).create()?;
    let headers = || {
        OwnedHeaders::new_with_capacity(2)
            .insert(Header {
                key: HEADER_TENANT,
                value: Some(TENANT.as_bytes()),
            })
            .insert(Header {
                key: HEADER_CONTENT_TYPE,
                value: Some(CONTENT_TYPE),
            })
    };
    let send = |i: usize, deadline: Instant| -> anyhow::Result<()> {
        let (payload, key) = load.message(i);
        let mut record = BaseRecord::to(topic)
            .key(key.as_bytes())
            .payload(&payload[..])
            .headers(headers());
        loop {
            match producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    anyhow::ensure!(Instant::now() < deadline, "raw producer: queue full");
                    record = back;
                    producer.poll(Duration::from_millis(1));
                }
                Err((e, _)) => anyhow::bail!("raw producer: {e}"),
            }
        }
    };
    let delivered = |n: u64| -> anyhow::Result<()> {
        let failed = deliveries.failed.load(Relaxed);
        anyhow::ensure!(
            failed == 0,
            "raw producer: {failed} messages failed: {}",
            deliveries
                .first_error
                .lock()
                .ok()
                .and_then(|e| e.clone())
                .unwrap_or_default()
        );
        let ok = deliveries.ok.load(Relaxed);
        anyhow::ensure!(ok == n, "raw producer: {ok} delivery reports, {n} expected");
        Ok(())
    };

    // Warm-up, outside the measurement: connections, producer id, topic metadata.
    send(0, Instant::now() + load.timeout)?;
    producer
        .flush(load.timeout)
        .context("raw producer: warm-up")?;
    delivered(1)?;
    let mut assignment = TopicPartitionList::new();
    for p in 0..kafka.partitions as i32 {
        let (_, high) = consumer
            .fetch_watermarks(topic, p, load.timeout)
            .context("raw consumer: watermarks")?;
        assignment.add_partition_offset(topic, p, Offset::Offset(high))?;
    }

    let cpu0 = cpu_time();
    let broker_cpu0 = broker.cpu_time();
    let start = Instant::now();
    let deadline = start + load.timeout;
    let mut payload_bytes = 0u64;
    for i in 0..load.requests {
        send(i, deadline)?;
        payload_bytes += load.message(i).0.len() as u64;
        producer.poll(Duration::ZERO);
    }
    producer
        .flush(deadline.saturating_duration_since(Instant::now()))
        .context("raw producer: flush")?;
    let produce = start.elapsed();
    delivered(1 + load.requests as u64)?;

    let start = Instant::now();
    consumer.assign(&assignment)?;
    let deadline = start + load.timeout;
    let (mut consumed, mut consumed_bytes) = (0u64, 0u64);
    while consumed < load.requests as u64 {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                consumed += 1;
                consumed_bytes += message.payload().map_or(0, |p| p.len()) as u64;
            }
            Some(Err(e)) => anyhow::bail!("raw consumer: {e}"),
            None => anyhow::ensure!(
                Instant::now() < deadline,
                "raw consumer: {consumed} of {} messages within {:?}{}",
                load.requests,
                load.timeout,
                broker.log_tail()
            ),
        }
    }
    let consume = start.elapsed();
    let cpu = cpu_time() - cpu0;
    let broker_cpu = broker.cpu_time().zip(broker_cpu0).map(|(b, a)| b - a);
    let rss_mb = peak_rss_mb(None);

    // Nothing more (no duplicates), and every byte came back.
    let quiet = Instant::now() + Duration::from_millis(500);
    while Instant::now() < quiet {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => anyhow::bail!(
                "raw consumer: an extra message (partition {}, offset {}) after all {} were read",
                message.partition(),
                message.offset(),
                load.requests
            ),
            Some(Err(e)) => anyhow::bail!("raw consumer: {e}"),
            None => {}
        }
    }
    anyhow::ensure!(
        consumed_bytes == payload_bytes,
        "raw consumer: read {consumed_bytes} payload bytes, {payload_bytes} were produced"
    );
    Ok(RawMeasure {
        produce,
        consume,
        cpu,
        broker_cpu,
        rss_mb,
        consumed,
        consumed_bytes,
    })
}
