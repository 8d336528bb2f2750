//! The built-in prober: probes every target of `targets.yaml` on its interval and appends
//! the results to the log through the probe ingest path (the one `POST /v1/probes`
//! takes). It runs inside `mcpulse run` and `mcpulse ingest` when `prober.targets` is
//! set, and alone as `mcpulse probe --region R` on Kafka — one process per region gives
//! multi-region results for the same targets.
//!
//! The targets file is re-read every `prober.reload_interval`: a changed, valid file
//! replaces the target list (the prober keeps what it remembers per origin and per
//! server); a broken one is logged and the running list kept.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use anyhow::Context;
use mcpulse_ingest::ProbeIngest;
use mcpulse_ingest::prober::config::{ProberConfig, validate_region};
use mcpulse_ingest::prober::probe::Prober;
use mcpulse_ingest::prober::scheduler::{IngestSink, ResultSink, Scheduler, SchedulerStats};
use mcpulse_ingest::prober::targets::{TargetsFile, load_targets};
use mcpulse_schemas::metrics::{MetricsSource, PromWriter};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{error, info};

use super::Supervisor;
use crate::Config;

/// Where the prober's settings come from: `prober:` in the configuration, overridden by
/// the command line of `mcpulse probe`.
#[derive(Clone, Debug, Default)]
pub struct ProberOverrides {
    /// `--region`.
    pub region: Option<String>,
    /// `--targets`.
    pub targets: Option<PathBuf>,
}

/// A loaded prober, ready to start.
pub struct ProberPlan {
    path: PathBuf,
    region: String,
    file: TargetsFile,
    text: String,
    /// The text of the last invalid version of the file (reported once).
    rejected: Option<String>,
    prober: Arc<Prober>,
    metrics: Arc<ProberMetrics>,
}

impl ProberPlan {
    /// Reads the targets file and the prober settings. `Ok(None)` when no targets file
    /// is configured.
    pub fn load(config: &Config, overrides: &ProberOverrides) -> anyhow::Result<Option<Self>> {
        let Some(path) = overrides
            .targets
            .clone()
            .or_else(|| config.prober.targets.clone())
        else {
            return Ok(None);
        };
        let region = overrides
            .region
            .clone()
            .unwrap_or_else(|| config.prober.region.clone());
        validate_region(&region).map_err(|e| anyhow::anyhow!("--region: {e}"))?;
        let (text, file) = read(&path)?;
        let mut settings = config
            .prober
            .settings(&region)
            .map_err(anyhow::Error::msg)?;
        settings.policy = file.policy.clone();
        let metrics = Arc::new(ProberMetrics {
            region: region.clone(),
            stats: Arc::new(SchedulerStats::default()),
            targets: AtomicU64::new(file.targets.len() as u64),
            reloads: AtomicU64::new(0),
            reload_errors: AtomicU64::new(0),
        });
        Ok(Some(Self {
            path,
            region,
            file,
            text,
            rejected: None,
            prober: Arc::new(Prober::new(settings)),
            metrics,
        }))
    }

    /// The prober's counters, for `/metrics`.
    pub fn metrics(&self) -> Arc<ProberMetrics> {
        self.metrics.clone()
    }

    /// One phrase for the start-up log line.
    pub fn describe(&self) -> String {
        format!(
            "prober in region {} over {} target(s) of {}",
            self.region,
            self.file.targets.len(),
            self.path.display()
        )
    }

    /// Runs the prober under `roles` (it stops with the servers, before the processors
    /// drain), delivering through `probes`.
    pub fn spawn(self, config: &Config, probes: ProbeIngest, roles: &mut Supervisor) {
        let sink: Arc<dyn ResultSink> = Arc::new(IngestSink::new(probes));
        let max_concurrency = config.prober.max_concurrency;
        let reload_interval = config.prober.reload_interval;
        let prober_config = config.prober.clone();
        roles.spawn_edge("prober", move |stop| async move {
            let mut plan = self;
            info!(
                region = %plan.region,
                targets = plan.file.targets.len(),
                file = %plan.path.display(),
                "prober: started"
            );
            let mut running = plan.start(sink.clone(), max_concurrency);
            let mut stop = stop;
            loop {
                let tick = async {
                    if reload_interval.is_zero() {
                        std::future::pending::<()>().await
                    } else {
                        tokio::time::sleep(reload_interval).await
                    }
                };
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => break,
                    _ = tick => {}
                }
                match plan.reload(&prober_config) {
                    Ok(false) => {}
                    Ok(true) => {
                        running.stop().await;
                        running = plan.start(sink.clone(), max_concurrency);
                    }
                    Err(e) => {
                        plan.metrics.reload_errors.fetch_add(1, Relaxed);
                        error!(
                            file = %plan.path.display(),
                            error = format!("{e:#}"),
                            "prober: the targets file is invalid; probing the previous list"
                        );
                    }
                }
            }
            running.stop().await;
            info!(region = %plan.region, "prober: stopped");
            Ok(())
        });
    }

    fn start(&self, sink: Arc<dyn ResultSink>, max_concurrency: usize) -> Running {
        let scheduler = Scheduler::with_stats(
            self.prober.clone(),
            sink,
            max_concurrency,
            self.metrics.stats.clone(),
        );
        let (stop, stopped) = watch::channel(false);
        let targets = self.file.targets.clone();
        Running {
            stop,
            task: tokio::spawn(scheduler.run(targets, stopped)),
        }
    }

    /// Re-reads the file: `Ok(true)` when it changed and is valid (now loaded).
    fn reload(&mut self, config: &ProberConfig) -> anyhow::Result<bool> {
        let text = std::fs::read_to_string(&self.path)
            .with_context(|| format!("cannot read {}", self.path.display()))?;
        if text == self.text || self.rejected.as_ref() == Some(&text) {
            return Ok(false);
        }
        self.rejected = Some(text);
        let (text, file) = read(&self.path)?;
        self.rejected = None;
        if file.policy != self.file.policy {
            // The policy lives in the prober's settings: a new prober (it forgets the
            // eras and tool hashes it remembered, so the next results carry the tools).
            let mut settings = config.settings(&self.region).map_err(anyhow::Error::msg)?;
            settings.policy = file.policy.clone();
            self.prober = Arc::new(Prober::new(settings));
        }
        info!(
            file = %self.path.display(),
            before = self.file.targets.len(),
            after = file.targets.len(),
            "prober: targets reloaded"
        );
        self.metrics
            .targets
            .store(file.targets.len() as u64, Relaxed);
        self.metrics.reloads.fetch_add(1, Relaxed);
        self.text = text;
        self.file = file;
        Ok(true)
    }
}

fn read(path: &Path) -> anyhow::Result<(String, TargetsFile)> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("prober.targets: cannot read {}", path.display()))?;
    let file = load_targets(path).map_err(|e| anyhow::anyhow!("prober.targets: {e}"))?;
    Ok((text, file))
}

/// A scheduler running over one version of the target list.
struct Running {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Running {
    /// Stops probing (in-flight probes are abandoned) and delivers what is buffered.
    async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// The prober on `/metrics`: the scheduler's counters, the number of targets and the
/// reloads of the targets file.
pub struct ProberMetrics {
    region: String,
    stats: Arc<SchedulerStats>,
    targets: AtomicU64,
    reloads: AtomicU64,
    reload_errors: AtomicU64,
}

impl ProberMetrics {
    /// The scheduler's counters.
    pub fn stats(&self) -> &SchedulerStats {
        &self.stats
    }
}

impl MetricsSource for ProberMetrics {
    fn render(&self, out: &mut PromWriter) {
        out.gauge(
            "mcpulse_prober_targets",
            "Targets the prober probes, by region.",
            &[("region", &self.region)],
            self.targets.load(Relaxed) as f64,
        );
        out.counter(
            "mcpulse_prober_reloads_total",
            "Times a changed targets file was loaded.",
            &[],
            self.reloads.load(Relaxed),
        );
        out.counter(
            "mcpulse_prober_reload_errors_total",
            "Times a changed targets file was invalid (the previous list kept running).",
            &[],
            self.reload_errors.load(Relaxed),
        );
        self.stats.render(out);
    }
}

/// Runs the prober alone (`mcpulse probe --region R`) until `shutdown` resolves: results
/// go to the shared log (Kafka); `/healthz`, `/readyz` and `/metrics` on the API port.
pub async fn run(
    config: Config,
    overrides: ProberOverrides,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    if config.is_embedded() {
        anyhow::bail!(
            "`mcpulse probe` cannot run alone on the embedded log (it is single-process): set prober.targets and use `mcpulse run`, set bus.kind: kafka, or probe one URL with `mcpulse probe --once URL`"
        );
    }
    let plan = ProberPlan::load(&config, &overrides)?.ok_or_else(|| {
        anyhow::anyhow!(
            "no targets: pass --targets FILE or set prober.targets in the configuration"
        )
    })?;
    let mut roles = Supervisor::new("probe", &config)?;
    let api_listener = super::bind(config.listen.api, "listen.api").await?;
    let addrs = super::BoundAddrs {
        role: "probe",
        api: Some(api_listener.local_addr()?),
        ..Default::default()
    };
    let bus = super::open_bus(&config).await?;
    let edges = super::ingest::Edges::new(&config, &bus);
    let sources: Vec<Arc<dyn MetricsSource>> = vec![
        Arc::new(super::RoleInfo("probe")),
        edges.stats.clone(),
        plan.metrics(),
    ];
    let health = crate::api::Health {
        ready: roles.ready_flag(),
        sources: Arc::new(sources),
        auth: None,
    };
    roles.serve_http(
        "API server",
        api_listener,
        crate::api::health_router(health),
    );
    let details = format!("{}, {}", plan.describe(), super::describe_bus(&config));
    plan.spawn(&config, edges.probes.clone(), &mut roles);
    roles.run(addrs, Some(bus), details, shutdown).await
}
