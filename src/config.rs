//! `mcpulse.yaml`: one file for every role, with `${ENV}` references for secrets.
//!
//! Unknown fields are rejected and every error names the field (and line) at fault.
//! Values substituted from the environment are scrubbed from error messages, so a secret
//! never appears in an error even when it sits in the wrong field.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use mcpulse_bus::embedded::EmbeddedConfig;
use mcpulse_bus::kafka::KafkaConfig;
use mcpulse_ingest::IngestConfig;
use mcpulse_ingest::auth::{AuthConfig, Authenticator};
use mcpulse_ingest::prober::config::ProberConfig;
use mcpulse_processors::RuntimeConfig;
use mcpulse_processors::archive::ArchiveConfig;
use mcpulse_processors::drift::DriftConfig;
use mcpulse_processors::incidents::IncidentsConfig;
use mcpulse_processors::live::LiveMetricsConfig;
use mcpulse_processors::signals::config::SignalsConfig;
use mcpulse_queries::QueryConfig;
use mcpulse_schemas::Topics;
use mcpulse_schemas::env as config_env;
use mcpulse_sinks::notify::NotifyConfig;
use serde::Deserialize;

/// The whole configuration.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Folder for the embedded log, the default archive and state (default `./data`).
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// The log backend.
    #[serde(default)]
    pub bus: BusConfig,
    /// Topic names.
    #[serde(default)]
    pub topics: Topics,
    /// Addresses to listen on.
    #[serde(default)]
    pub listen: ListenConfig,
    /// Tenants, operators and their tokens.
    #[serde(default)]
    pub auth: AuthConfig,
    /// Request limits at the edges.
    #[serde(default)]
    pub ingest: IngestConfig,
    /// Parquet archive.
    #[serde(default)]
    pub archive: ArchiveConfig,
    /// Stream runtime tuning.
    #[serde(default)]
    pub runtime: RuntimeConfig,
    /// SQL limits.
    #[serde(default)]
    pub query: QueryConfig,
    /// The built-in MCP prober (`targets.yaml`, region, limits).
    #[serde(default)]
    pub prober: ProberConfig,
    /// The golden-signals operator and its alert rules.
    #[serde(default)]
    pub signals: SignalsConfig,
    /// The schema-drift operator.
    #[serde(default)]
    pub drift: DriftConfig,
    /// Verdicts, incidents, severity, dedup, flapping and storm correlation.
    #[serde(default)]
    pub incidents: IncidentsConfig,
    /// Delivery of incident transitions (`alerts.v1`) to the receivers of a routes file.
    #[serde(default)]
    pub notify: NotifyConfig,
    /// Live golden signals on `/metrics` (series per tenant, server and tool, the cap).
    #[serde(default)]
    pub metrics: LiveMetricsConfig,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("data")
}

/// `bus:` — which log to use.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "lowercase")]
pub enum BusConfig {
    /// The embedded durable log under `{data_dir}/log` (one process, no services).
    Embedded {
        /// Partitions of each topic.
        #[serde(default = "default_partitions")]
        partitions: u32,
        /// Segment size, retention and write-queue limits of the embedded log.
        #[serde(default)]
        log: EmbeddedTuning,
    },
    /// A Kafka cluster: one process per role, scaled out by partitions and consumer groups.
    Kafka(KafkaConfig),
}

fn default_partitions() -> u32 {
    4
}

/// Tuning of the embedded log (its folder is always `{data_dir}/log`).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EmbeddedTuning {
    /// Bytes per segment file before a new one starts.
    pub segment_bytes: Option<u64>,
    /// How long messages are kept, e.g. `24h`.
    #[serde(default, with = "humantime_serde")]
    pub retention: Option<std::time::Duration>,
    /// Bytes queued for append but not yet durable before producers are refused.
    pub max_pending_bytes: Option<u64>,
}

impl Default for BusConfig {
    fn default() -> Self {
        BusConfig::Embedded {
            partitions: default_partitions(),
            log: EmbeddedTuning::default(),
        }
    }
}

/// `listen:` — the three ports of `mcpulse run`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ListenConfig {
    /// OTLP/gRPC.
    pub otlp_grpc: SocketAddr,
    /// OTLP/HTTP (`/v1/traces`).
    pub otlp_http: SocketAddr,
    /// Probe API, SQL endpoint, health and metrics.
    pub api: SocketAddr,
}

impl Default for ListenConfig {
    fn default() -> Self {
        Self {
            otlp_grpc: "127.0.0.1:4317".parse().expect("valid"),
            otlp_http: "127.0.0.1:4318".parse().expect("valid"),
            api: "127.0.0.1:7080".parse().expect("valid"),
        }
    }
}

/// `log:` — how mcpulse logs.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: LogFormat,
    /// A tracing filter, e.g. `info` or `mcpulse=debug,info` (RUST_LOG overrides it).
    pub level: String,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

/// A configuration error, naming the field.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl Config {
    /// The configuration `mcpulse run` uses without a file: everything on loopback, the
    /// embedded log, a local archive, and requests without a token acting as tenant
    /// `default`.
    pub fn embedded_default() -> Self {
        let mut config: Config = serde_yaml_ng::from_str("{}").expect("defaults deserialize");
        config.auth.anonymous_tenant = Some("default".into());
        config
    }

    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
        Self::parse(&text, |name| std::env::var(name).ok())
            .map_err(|e| ConfigError(format!("{}: {}", path.display(), e.0)))
    }

    /// Parses YAML text, substituting `${NAME}` from `env`, and validates the result.
    pub fn parse(text: &str, env: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let (expanded, secrets) =
            config_env::interpolate(text, env).map_err(|e| ConfigError(e.0))?;
        let scrub = |message: String| config_env::scrub(message, &secrets);
        let deserializer = serde_yaml_ng::Deserializer::from_str(&expanded);
        let config: Config = serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner().to_string();
            ConfigError(scrub(if path == "." {
                inner
            } else {
                format!("{path}: {inner}")
            }))
        })?;
        config.validate().map_err(|e| ConfigError(scrub(e.0)))?;
        Ok(config)
    }

    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        Authenticator::new(&self.auth).map_err(ConfigError)?;
        match &self.bus {
            BusConfig::Embedded { partitions, .. } => {
                if *partitions == 0 || *partitions > 256 {
                    return Err(ConfigError(
                        "bus.partitions: must be between 1 and 256".into(),
                    ));
                }
            }
            BusConfig::Kafka(kafka) => kafka.validate().map_err(ConfigError)?,
        }
        self.archive.validate_tenancy().map_err(ConfigError)?;
        self.archive.maintenance.validate().map_err(ConfigError)?;
        self.archive.retention.validate().map_err(ConfigError)?;
        if self.archive.flush_rows == 0 {
            return Err(ConfigError("archive.flush_rows: must be positive".into()));
        }
        if !(1..=22).contains(&self.archive.zstd_level) {
            return Err(ConfigError(
                "archive.zstd_level: must be between 1 and 22".into(),
            ));
        }
        if self.archive.row_group_rows == 0 {
            return Err(ConfigError(
                "archive.row_group_rows: must be positive".into(),
            ));
        }
        crate::archive_store::validate(&self.archive)?;
        self.prober.validate().map_err(ConfigError)?;
        self.signals.validate().map_err(ConfigError)?;
        self.drift.validate().map_err(ConfigError)?;
        self.incidents.validate().map_err(ConfigError)?;
        self.notify.validate().map_err(ConfigError)?;
        self.metrics.validate().map_err(ConfigError)?;
        if self.query.max_rows == 0 {
            return Err(ConfigError("query.max_rows: must be positive".into()));
        }
        if self
            .topics
            .prefix
            .chars()
            .any(|c| !(c.is_ascii_alphanumeric() || "._-".contains(c)))
        {
            return Err(ConfigError(
                "topics.prefix: only letters, digits, '.', '_' and '-' are allowed".into(),
            ));
        }
        Ok(())
    }

    /// Settings of the embedded log, or `None` when `bus.kind` is not `embedded`.
    pub fn embedded_log(&self) -> Option<EmbeddedConfig> {
        let BusConfig::Embedded { partitions, log } = &self.bus else {
            return None;
        };
        let mut config = EmbeddedConfig {
            dir: self.data_dir.join("log"),
            ..EmbeddedConfig::default()
        };
        config.default_partitions = *partitions;
        if let Some(v) = log.segment_bytes {
            config.segment_bytes = v;
        }
        if let Some(v) = log.retention {
            config.retention = v;
        }
        if let Some(v) = log.max_pending_bytes {
            config.max_pending_bytes = v;
        }
        Some(config)
    }

    /// Partitions of each topic created on start.
    pub fn partitions(&self) -> u32 {
        match &self.bus {
            BusConfig::Embedded { partitions, .. } => *partitions,
            BusConfig::Kafka(kafka) => kafka.partitions,
        }
    }

    /// Replication factor of topics created on start (1 on the embedded log).
    pub fn replication(&self) -> u16 {
        match &self.bus {
            BusConfig::Embedded { .. } => 1,
            BusConfig::Kafka(kafka) => kafka.replication,
        }
    }

    /// Whether the log is the embedded one (a single process owns it).
    pub fn is_embedded(&self) -> bool {
        matches!(self.bus, BusConfig::Embedded { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "ACME_TOKEN" => Some("acme-token-123".into()),
            "NUMBER_SECRET" => Some("s3cr3t-value".into()),
            _ => None,
        }
    }

    #[test]
    fn embedded_default_is_valid() {
        let c = Config::embedded_default();
        c.validate().unwrap();
        assert_eq!(c.listen.otlp_grpc.port(), 4317);
        assert_eq!(c.listen.otlp_http.port(), 4318);
        assert_eq!(c.auth.anonymous_tenant.as_deref(), Some("default"));
    }

    #[test]
    fn interpolates_tokens() {
        let c = Config::parse(
            "auth:\n  tenants:\n    - id: acme\n      tokens: [\"${ACME_TOKEN}\"]\n",
            env,
        )
        .unwrap();
        assert_eq!(c.auth.tenants[0].tokens, vec!["acme-token-123".to_string()]);
    }

    #[test]
    fn errors_name_the_field_and_hide_secrets() {
        let err = Config::parse("archive:\n  flush_rowz: 3\n", env)
            .unwrap_err()
            .0;
        assert!(
            err.contains("archive") && err.contains("flush_rowz"),
            "{err}"
        );
        let err = Config::parse("archive:\n  flush_rows: \"${NUMBER_SECRET}\"\n", env)
            .unwrap_err()
            .0;
        assert!(err.contains("archive.flush_rows"), "{err}");
        assert!(!err.contains("s3cr3t-value"), "{err}");
        let err = Config::parse("auth:\n  anonymous_tenant: ${MISSING}\n", env)
            .unwrap_err()
            .0;
        assert!(err.contains("line 2") && err.contains("MISSING"), "{err}");
        let err = Config::parse("auth:\n  anonymous_tenant: \"a/b\"\n", env)
            .unwrap_err()
            .0;
        assert!(err.starts_with("auth.anonymous_tenant"), "{err}");
        let err = Config::parse("listen:\n  api: nowhere\n", env)
            .unwrap_err()
            .0;
        assert!(err.starts_with("listen.api"), "{err}");
        let err = Config::parse(
            "auth:\n  anonymous_tenant: demo\narchive:\n  url: gs://bucket/x\n",
            |_| None,
        )
        .unwrap_err()
        .0;
        assert!(err.starts_with("archive.url"), "{err}");
    }

    #[test]
    fn parses_a_kafka_bus() {
        let env = |name: &str| match name {
            "KAFKA_PASSWORD" => Some("kafka-pa55word".to_string()),
            _ => None,
        };
        let c = Config::parse(
            "auth:\n  anonymous_tenant: demo\nbus:\n  kind: kafka\n  brokers: [\"k1:9092\", \"k2:9092\"]\n  partitions: 12\n  replication: 3\n  delivery_timeout: 5s\n  session_timeout: 30s\n  options:\n    security.protocol: SASL_SSL\n    sasl.mechanism: PLAIN\n    sasl.password: \"${KAFKA_PASSWORD}\"\n",
            env,
        )
        .unwrap();
        let BusConfig::Kafka(kafka) = &c.bus else {
            panic!("not kafka: {:?}", c.bus);
        };
        assert_eq!(kafka.brokers, vec!["k1:9092", "k2:9092"]);
        assert_eq!(kafka.bootstrap_servers(), "k1:9092,k2:9092");
        assert_eq!(kafka.replication, 3);
        assert_eq!(kafka.delivery_timeout, std::time::Duration::from_secs(5));
        assert_eq!(kafka.session_timeout, std::time::Duration::from_secs(30));
        assert_eq!(kafka.request_timeout, std::time::Duration::from_secs(10));
        assert_eq!(kafka.options["sasl.password"], "kafka-pa55word");
        assert_eq!(c.partitions(), 12);
        assert_eq!(c.replication(), 3);
        assert!(!c.is_embedded());
        assert!(c.embedded_log().is_none());
        // The whole configuration's Debug (e.g. in a log line) hides the password.
        assert!(!format!("{c:?}").contains("kafka-pa55word"));

        // The defaults: one broker list is all that is needed.
        let c = Config::parse(
            "auth:\n  anonymous_tenant: demo\nbus:\n  kind: kafka\n  brokers: [\"k:9092\"]\n",
            env,
        )
        .unwrap();
        assert_eq!((c.partitions(), c.replication()), (4, 1));
    }

    #[test]
    fn kafka_bus_errors_name_the_field_and_hide_secrets() {
        let env = |name: &str| match name {
            "KAFKA_PASSWORD" => Some("kafka-pa55word".to_string()),
            _ => None,
        };
        let parse = |bus: &str| {
            Config::parse(
                &format!("auth:\n  anonymous_tenant: demo\nbus:\n  kind: kafka\n{bus}"),
                env,
            )
            .unwrap_err()
            .0
        };
        // A property mcpulse sets itself.
        let err = parse("  brokers: [\"k:9092\"]\n  options:\n    enable.auto.commit: \"true\"\n");
        assert!(err.starts_with("bus.options.enable.auto.commit:"), "{err}");
        let err = parse("  brokers: []\n");
        assert!(err.starts_with("bus.brokers"), "{err}");
        let err = parse("  brokers: [\"k:9092\"]\n  partitions: 0\n");
        assert!(err.starts_with("bus.partitions"), "{err}");
        // Embedded-only fields are unknown to the Kafka backend, and vice versa.
        let err = parse("  brokers: [\"k:9092\"]\n  log:\n    retention: 1h\n");
        assert!(err.contains("unknown field `log`"), "{err}");
        let err = Config::parse(
            "auth:\n  anonymous_tenant: demo\nbus:\n  kind: embedded\n  brokers: [\"k:9092\"]\n",
            env,
        )
        .unwrap_err()
        .0;
        assert!(err.contains("unknown field `brokers`"), "{err}");
        let err = parse("  brokers: [\"k:9092\"]\n  kind2: x\n");
        assert!(err.contains("kind2"), "{err}");
        // A secret from the environment in the wrong place never shows in the error.
        let err = parse("  brokers: [\"k:9092\"]\n  session_timeout: \"${KAFKA_PASSWORD}\"\n");
        assert!(err.contains("bus"), "{err}");
        assert!(!err.contains("kafka-pa55word"), "{err}");
        let err = parse(
            "  brokers: [\"k:9092\"]\n  options:\n    sasl.password: \"${KAFKA_PASSWORD}\"\n    group.id: \"${KAFKA_PASSWORD}\"\n",
        );
        assert!(err.starts_with("bus.options.group.id"), "{err}");
        assert!(!err.contains("kafka-pa55word"), "{err}");
        let err = Config::parse(
            "auth:\n  anonymous_tenant: demo\nbus:\n  kind: rabbitmq\n",
            env,
        )
        .unwrap_err()
        .0;
        assert!(err.contains("rabbitmq") && err.contains("kafka"), "{err}");
    }

    #[test]
    fn archive_tenancy() {
        let c = Config::parse("auth:\n  anonymous_tenant: demo\n", env).unwrap();
        assert_eq!(c.archive.tenant_header, "mcpulse-tenant");
        assert_eq!(c.archive.default_tenant, None);
        let c = Config::parse(
            "auth:\n  anonymous_tenant: demo\narchive:\n  tenant_header: x-tenant\n  default_tenant: collector\n",
            env,
        )
        .unwrap();
        assert_eq!(c.archive.tenant_header, "x-tenant");
        assert_eq!(c.archive.default_tenant.as_deref(), Some("collector"));
        let err = Config::parse(
            "auth:\n  anonymous_tenant: demo\narchive:\n  default_tenant: \"../x\"\n",
            env,
        )
        .unwrap_err()
        .0;
        assert!(err.starts_with("archive.default_tenant"), "{err}");
        let err = Config::parse(
            "auth:\n  anonymous_tenant: demo\narchive:\n  tenant_header: \"\"\n",
            env,
        )
        .unwrap_err()
        .0;
        assert!(err.starts_with("archive.tenant_header"), "{err}");
    }

    #[test]
    fn notify_section() {
        let c = Config::parse("auth:\n  anonymous_tenant: demo\n", env).unwrap();
        assert!(!c.notify.active(), "off without a routes file");
        let c = Config::parse(
            "auth:\n  anonymous_tenant: demo\nnotify:\n  routes: /etc/mcpulse/routes.yaml\n  flush_interval: 500ms\n  retry: { base: 2s, cap: 5m, max_attempts: 6 }\n  breaker: { failure_threshold: 3, cooldown: 1m }\n  rate_limit: { per_minute: 120, burst: 20 }\n",
            env,
        )
        .unwrap();
        assert!(c.notify.active());
        assert_eq!(c.notify.retry.max_attempts, 6);
        assert_eq!(c.notify.rate_limit.as_ref().unwrap().burst, 20);
        let err = Config::parse(
            "auth:\n  anonymous_tenant: demo\nnotify:\n  routes: r.yaml\n  retries: 3\n",
            env,
        )
        .unwrap_err()
        .0;
        assert!(
            err.starts_with("notify") && err.contains("retries"),
            "{err}"
        );
        let err = Config::parse(
            "auth:\n  anonymous_tenant: demo\nnotify:\n  retry: { max_attempts: 0 }\n",
            env,
        )
        .unwrap_err()
        .0;
        assert!(err.starts_with("notify.retry.max_attempts"), "{err}");
    }

    #[test]
    fn metrics_section() {
        let c = Config::parse(
            "auth:\n  anonymous_tenant: demo\nmetrics:\n  max_series: 500\n  latency_buckets: [0.1, 1]\n",
            env,
        )
        .unwrap();
        assert_eq!(c.metrics.max_series, 500);
        assert_eq!(c.metrics.latency_buckets, [0.1, 1.0]);
        let err = Config::parse(
            "auth:\n  anonymous_tenant: demo\nmetrics:\n  max_labels: 3\n",
            env,
        )
        .unwrap_err()
        .0;
        assert!(
            err.starts_with("metrics") && err.contains("max_labels"),
            "{err}"
        );
        let err = Config::parse(
            "auth:\n  anonymous_tenant: demo\nmetrics:\n  latency_buckets: [1, 0.5]\n",
            env,
        )
        .unwrap_err()
        .0;
        assert!(err.starts_with("metrics.latency_buckets[1]"), "{err}");
    }

    #[test]
    fn s3_archive_section() {
        let env = |name: &str| match name {
            "S3_SECRET" => Some("s3-secret-key-value".to_string()),
            "S3_TOKEN" => Some("s3-session-token-value".to_string()),
            _ => None,
        };
        let c = Config::parse(
            "auth:\n  anonymous_tenant: demo\narchive:\n  url: s3://mcpulse-archive/prod\n  s3:\n    region: eu-west-1\n    endpoint: https://minio.internal:9000\n    addressing_style: virtual_hosted\n    access_key_id: AKIAEXAMPLE\n    secret_access_key: ${S3_SECRET}\n    session_token: \"${S3_TOKEN}\"\n",
            env,
        )
        .unwrap();
        assert_eq!(c.archive.s3.region.as_deref(), Some("eu-west-1"));
        assert_eq!(
            c.archive.s3.secret_access_key.as_ref().unwrap().expose(),
            "s3-secret-key-value"
        );
        let debug = format!("{c:?}");
        assert!(
            !debug.contains("s3-secret-key-value") && !debug.contains("s3-session-token-value"),
            "{debug}"
        );
        let parse = |archive: &str| {
            Config::parse(
                &format!("auth:\n  anonymous_tenant: demo\narchive:\n{archive}"),
                env,
            )
            .unwrap_err()
            .0
        };
        let err = parse("  url: s3://\n");
        assert!(
            err.starts_with("archive.url") && err.contains("bucket"),
            "{err}"
        );
        let err = parse("  url: ftp://host/x\n");
        assert!(
            err.starts_with("archive.url") && err.contains("ftp"),
            "{err}"
        );
        let err = parse("  url: s3://b/x\n  s3:\n    bucket: b\n");
        assert!(
            err.starts_with("archive.s3") && err.contains("bucket"),
            "{err}"
        );
        let err = parse("  url: s3://bkt/x\n  s3:\n    endpoint: http://127.0.0.1:9000\n");
        assert!(
            err.starts_with("archive.s3.endpoint") && err.contains("allow_http"),
            "{err}"
        );
        let err = parse("  url: s3://bkt/x\n  s3:\n    secret_access_key: ${S3_SECRET}\n");
        assert!(err.starts_with("archive.s3.access_key_id"), "{err}");
        assert!(!err.contains("s3-secret-key-value"), "{err}");
        // A secret in the wrong field is scrubbed from the error.
        let err = parse("  url: s3://bkt/x\n  s3:\n    region: \"${S3_SECRET} x\"\n");
        assert!(err.starts_with("archive.s3.region"), "{err}");
        assert!(!err.contains("s3-secret-key-value"), "{err}");
        let err = parse("  s3:\n    region: eu-west-1\n");
        assert!(err.starts_with("archive.s3"), "{err}");
    }

    #[test]
    fn escaped_dollar_is_kept() {
        let c = Config::parse("auth:\n  anonymous_tenant: a$${x}\n", env);
        // `a${x}` is not a valid tenant id, and the error shows the literal text.
        assert!(c.unwrap_err().0.contains("a${x}"));
    }
}
