//! The golden-signals logic of one log partition: spans and probe results into open
//! windows, windows closed by the watermark into `signals` rows, rows into the rules.
//!
//! - A span counts when it is an MCP call: it has `mcp.method.name` or
//!   `gen_ai.tool.name` (other spans of the server — HTTP, database — are not calls). Its
//!   server is the configured resource attribute (default `service.name`,
//!   `unknown_service` when absent), its window the minute it *completed* in (its end
//!   time: spans are exported when they end, so a call longer than the allowed lateness
//!   is not late by construction), its latency end − start, and it failed when its
//!   status is ERROR or `error.type` is set.
//! - A probe result counts in its (server, region) series: failed when not `ok`, latency
//!   `total_ms`.
//! - The watermark is the largest event time seen minus `allowed_lateness` (event times
//!   more than a minute ahead of the wall clock are clamped, so one skewed client cannot
//!   close everyone's windows); after `idle_timeout` without records it follows the wall
//!   clock instead. A window closes when the watermark passes its end; a span for a
//!   closed minute is late: counted in `mcpulse_signals_late_total`, not in a window
//!   (the raw span is still archived).
//! - Every call and probe result read also updates the live series on `/metrics`
//!   ([`crate::live`]) when the context has them ([`SignalsContext::with_live`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use mcpulse_bus::{Record, TopicPartition};
use mcpulse_schemas::metrics::{MetricsSource, PromWriter};
use mcpulse_schemas::probe::ProbeResult;
use serde::{Deserialize, Serialize};

use super::config::SignalsConfig;
use super::row::Minute;
use super::rules::{RuleEngine, RuleState, RulesConfig};
use super::span_fields::{SpanFields, scan_spans};
use super::table;
use super::windows::{Added, Observation, WindowState, Windows};
use crate::live::LiveSignals;
use crate::operator::OperatorError;
use crate::stateful::{Closed, PartitionLogic};

const MINUTE_NS: i64 = 60_000_000_000;
/// How far ahead of the wall clock an event time may push the watermark.
const MAX_SKEW_NS: i64 = 60_000_000_000;
/// The server of spans without the server attribute (what OTel SDKs default to).
pub const UNKNOWN_SERVER: &str = "unknown_service";

/// Counters of the signals operator, on `/metrics`.
#[derive(Debug, Default)]
pub struct SignalsMetrics {
    pub spans: AtomicU64,
    /// Spans that are not MCP calls (no method, no tool).
    pub other_spans: AtomicU64,
    pub probes: AtomicU64,
    pub late: AtomicU64,
    pub overflow: AtomicU64,
    pub windows_closed: AtomicU64,
    pub findings: AtomicU64,
}

impl MetricsSource for SignalsMetrics {
    fn render(&self, out: &mut PromWriter) {
        let c = |out: &mut PromWriter, name: &str, help: &str, v: &AtomicU64| {
            out.counter(name, help, &[], v.load(Relaxed));
        };
        c(
            out,
            "mcpulse_signals_spans_total",
            "MCP call spans counted into windows (late and overflow included).",
            &self.spans,
        );
        c(
            out,
            "mcpulse_signals_other_spans_total",
            "Spans that are not MCP calls (no mcp.method.name or gen_ai.tool.name).",
            &self.other_spans,
        );
        c(
            out,
            "mcpulse_signals_probes_total",
            "Probe results counted into windows.",
            &self.probes,
        );
        c(
            out,
            "mcpulse_signals_late_total",
            "Spans and probe results whose minute had already closed (archived raw, not in signals).",
            &self.late,
        );
        c(
            out,
            "mcpulse_signals_overflow_total",
            "Values folded into a tenant's overflow series (cardinality cap).",
            &self.overflow,
        );
        c(
            out,
            "mcpulse_signals_windows_closed_total",
            "Closed windows written as signals rows.",
            &self.windows_closed,
        );
        c(
            out,
            "mcpulse_signals_findings_total",
            "Findings emitted by the signals rules.",
            &self.findings,
        );
    }
}

/// What every partition shares.
pub struct SignalsContext {
    pub config: SignalsConfig,
    pub rules: RulesConfig,
    pub spans_topic: String,
    pub probes_topic: String,
    pub metrics: Arc<SignalsMetrics>,
    /// The live series on `/metrics` every partition feeds (none: not kept).
    pub live: Option<Arc<LiveSignals>>,
}

impl SignalsContext {
    pub fn new(
        config: SignalsConfig,
        spans_topic: String,
        probes_topic: String,
    ) -> Result<Self, String> {
        let rules = config.rules_config().map_err(|e| format!("signals.{e}"))?;
        Ok(Self {
            config,
            rules,
            spans_topic,
            probes_topic,
            metrics: Arc::new(SignalsMetrics::default()),
            live: None,
        })
    }

    /// Feeds `live` with every call and probe result read.
    pub fn with_live(mut self, live: Arc<LiveSignals>) -> Self {
        self.live = Some(live);
        self
    }
}

/// The checkpointed state of one partition.
#[derive(Debug, Serialize, Deserialize)]
pub struct SignalsState {
    pub closed_before: Minute,
    pub max_event_ns: i64,
    pub windows: Vec<WindowState>,
    pub rules: RuleState,
}

/// The logic of one partition.
pub struct SignalsLogic {
    windows: Windows,
    rules: RuleEngine,
    max_event_ns: i64,
    last_record: Instant,
    spans_topic: String,
    probes_topic: String,
    server_attribute: String,
    lateness_ns: i64,
    idle_timeout: Duration,
    retire_minutes: Minute,
    metrics: Arc<SignalsMetrics>,
    live: Option<Arc<LiveSignals>>,
}

fn now_ns() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX)
}

impl SignalsLogic {
    fn observe(&mut self, o: &Observation<'_>) {
        let event = o.time_ns.min(i64::MAX as u64) as i64;
        let clamped = event.min(now_ns().saturating_add(MAX_SKEW_NS));
        match self.windows.add(o) {
            Added::Counted => {}
            Added::Overflow => {
                self.metrics.overflow.fetch_add(1, Relaxed);
            }
            Added::Late => {
                self.metrics.late.fetch_add(1, Relaxed);
            }
        }
        self.max_event_ns = self.max_event_ns.max(clamped);
    }

    fn spans(&mut self, tenant: &str, value: &[u8]) -> Result<(), String> {
        let mut spans: Vec<SpanFields<'_>> = Vec::new();
        scan_spans(value, &self.server_attribute, &mut spans).map_err(|e| e.to_string())?;
        for span in &spans {
            if span.tool.is_none() && span.method.is_none() {
                self.metrics.other_spans.fetch_add(1, Relaxed);
                continue;
            }
            self.metrics.spans.fetch_add(1, Relaxed);
            let latency_ns = span.end_ns.saturating_sub(span.start_ns);
            self.observe(&Observation {
                source: super::row::SignalSource::Spans,
                tenant,
                server: span.server.unwrap_or(UNKNOWN_SERVER),
                a: span.tool,
                b: span.method,
                time_ns: span.end_ns.max(span.start_ns),
                start_ns: Some(span.start_ns),
                latency_us: latency_ns / 1000,
                error: span.is_error,
            });
        }
        if let Some(live) = &self.live {
            let mut calls = live.calls();
            for span in spans
                .iter()
                .filter(|s| s.tool.is_some() || s.method.is_some())
            {
                calls.record(
                    tenant,
                    span.server.unwrap_or(UNKNOWN_SERVER),
                    span.method.unwrap_or(""),
                    span.tool.unwrap_or(""),
                    span.end_ns.saturating_sub(span.start_ns) / 1000,
                    span.is_error,
                );
            }
        }
        Ok(())
    }

    fn probe(&mut self, tenant: &str, value: &[u8]) -> Result<(), String> {
        let probe: ProbeResult =
            serde_json::from_slice(value).map_err(|e| format!("probe result: {e}"))?;
        let start_ns = probe
            .started_at
            .timestamp_nanos_opt()
            .filter(|t| *t >= 0)
            .ok_or("probe result: started_at out of range")? as u64;
        self.metrics.probes.fetch_add(1, Relaxed);
        if let Some(live) = &self.live {
            live.probe(
                tenant,
                &probe.server,
                &probe.region,
                start_ns as i64,
                probe.ok,
            );
        }
        let latency_us = probe
            .total_ms
            .filter(|ms| ms.is_finite() && *ms >= 0.0)
            .map(|ms| (ms * 1000.0) as u64)
            .unwrap_or(0);
        self.observe(&Observation {
            source: super::row::SignalSource::Probes,
            tenant,
            server: &probe.server,
            a: Some(&probe.region),
            b: None,
            time_ns: start_ns,
            start_ns: None,
            latency_us,
            error: !probe.ok,
        });
        Ok(())
    }

    /// Series interned right now (for tests and metrics).
    pub fn series_count(&self) -> usize {
        self.windows.series_count()
    }

    /// Open windows right now.
    pub fn open_windows(&self) -> usize {
        self.windows.open_windows()
    }
}

impl PartitionLogic for SignalsLogic {
    type State = SignalsState;
    type Context = SignalsContext;

    fn restore(context: &SignalsContext, tp: &TopicPartition, state: Option<SignalsState>) -> Self {
        let config = &context.config;
        let max_series = config.max_series_per_tenant;
        let (windows, rules, max_event_ns) = match state {
            Some(state) => match Windows::restore(max_series, state.closed_before, state.windows) {
                Ok(windows) => (
                    windows,
                    RuleEngine::restore(context.rules.clone(), state.rules),
                    state.max_event_ns,
                ),
                Err(e) => {
                    tracing::error!(%tp, error = %e, "signals: unreadable checkpoint; starting empty");
                    (
                        Windows::new(max_series, Minute::MIN),
                        RuleEngine::new(context.rules.clone()),
                        i64::MIN,
                    )
                }
            },
            None => (
                Windows::new(max_series, Minute::MIN),
                RuleEngine::new(context.rules.clone()),
                i64::MIN,
            ),
        };
        Self {
            windows,
            rules,
            max_event_ns,
            last_record: Instant::now(),
            spans_topic: context.spans_topic.clone(),
            probes_topic: context.probes_topic.clone(),
            server_attribute: config.server_attribute.clone(),
            lateness_ns: config.allowed_lateness.as_nanos().min(i64::MAX as u128) as i64,
            idle_timeout: config.idle_timeout,
            retire_minutes: (config.retire_after.as_secs() / 60).max(1) as Minute,
            metrics: context.metrics.clone(),
            live: context.live.clone(),
        }
    }

    fn snapshot(&self) -> SignalsState {
        SignalsState {
            closed_before: self.windows.closed_before(),
            max_event_ns: self.max_event_ns,
            windows: self.windows.snapshot(),
            rules: self.rules.state(),
        }
    }

    fn process(&mut self, tenant: &str, record: &Record) -> Result<(), String> {
        self.last_record = Instant::now();
        if record.topic == self.spans_topic {
            self.spans(tenant, &record.value)
        } else if record.topic == self.probes_topic {
            self.probe(tenant, &record.value)
        } else {
            Err(format!("unexpected topic {}", record.topic))
        }
    }

    fn watermark(&self) -> i64 {
        if self.max_event_ns == i64::MIN && self.last_record.elapsed() < self.idle_timeout {
            return i64::MIN;
        }
        let by_events = self.max_event_ns.saturating_sub(self.lateness_ns);
        if self.last_record.elapsed() >= self.idle_timeout {
            by_events.max(now_ns().saturating_sub(self.lateness_ns))
        } else {
            by_events
        }
    }

    fn close(&mut self, watermark_ns: i64) -> Result<Closed, OperatorError> {
        if watermark_ns == i64::MIN {
            // Nothing seen yet.
            return Ok(Closed::default());
        }
        let closed_before = watermark_ns.div_euclid(MINUTE_NS);
        if closed_before <= self.windows.closed_before() {
            return Ok(Closed::default());
        }
        let rows = self.windows.close(closed_before, self.retire_minutes);
        let mut findings = self.rules.observe(&rows);
        findings.extend(self.rules.advance(closed_before));
        let rows_out = table::batches(&rows)
            .map_err(|e| OperatorError::Fatal(format!("building signals rows: {e}")))?;
        self.metrics
            .windows_closed
            .fetch_add(rows.len() as u64, Relaxed);
        self.metrics
            .findings
            .fetch_add(findings.len() as u64, Relaxed);
        Ok(Closed {
            rows: rows_out,
            findings,
            ..Closed::default()
        })
    }
}
