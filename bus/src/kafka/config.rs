//! `bus: {kind: kafka, ...}` — how to reach the cluster and how topics are created.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

/// librdkafka properties mcpulse sets itself because its guarantees depend on them; they
/// are refused in `options`.
pub const RESERVED_OPTIONS: &[&str] = &[
    "bootstrap.servers",
    "metadata.broker.list",
    "group.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "enable.idempotence",
    "partition.assignment.strategy",
    "partitioner",
    "isolation.level",
    "auto.offset.reset",
];

/// Connection and topic settings of the Kafka backend.
#[derive(Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap brokers as `host:port`.
    pub brokers: Vec<String>,
    /// Client id the brokers see (default `mcpulse`).
    #[serde(default = "default_client_id")]
    pub client_id: String,
    /// Partitions of each topic created on start (existing topics are validated against it).
    #[serde(default = "default_partitions")]
    pub partitions: u32,
    /// Replication factor of topics created on start.
    #[serde(default = "default_replication")]
    pub replication: u16,
    /// Largest message the producer sends, and the `max.message.bytes` of topics it
    /// creates (default 16 MiB: a whole OTLP request is one message).
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: u32,
    /// Extra librdkafka properties, passed through as they are: `security.protocol`,
    /// `sasl.mechanism`, `sasl.username`, `sasl.password`, `ssl.ca.location`, ... Values
    /// may be `${ENV}` references. Properties mcpulse sets itself ([`RESERVED_OPTIONS`])
    /// are refused.
    #[serde(default, deserialize_with = "scalar_map")]
    pub options: BTreeMap<String, String>,
    /// librdkafka properties for producers only (e.g. `linger.ms`, `compression.type`),
    /// so consumers do not warn about properties they ignore.
    #[serde(default, deserialize_with = "scalar_map")]
    pub producer_options: BTreeMap<String, String>,
    /// librdkafka properties for consumers only (e.g. `fetch.max.bytes`).
    #[serde(default, deserialize_with = "scalar_map")]
    pub consumer_options: BTreeMap<String, String>,
    /// Longest a produce waits for its delivery report; past it the message fails and
    /// ingest answers its client with a retryable error (default 10s).
    #[serde(default = "default_delivery_timeout", with = "humantime_serde")]
    pub delivery_timeout: Duration,
    /// Longest start-up waits for the brokers, and the timeout of admin and offset
    /// requests (default 10s).
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Consumer group session timeout: how long after a member stops heartbeating (a
    /// crash) its partitions move to the others (default 10s).
    #[serde(default = "default_session_timeout", with = "humantime_serde")]
    pub session_timeout: Duration,
}

/// librdkafka takes every property as a string; YAML numbers and booleans are accepted
/// and written the way librdkafka reads them.
fn scalar_map<'de, D>(deserializer: D) -> Result<BTreeMap<String, String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        Bool(bool),
        Int(i64),
        Float(f64),
        Text(String),
    }
    let raw = BTreeMap::<String, Scalar>::deserialize(deserializer)?;
    Ok(raw
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                Scalar::Bool(b) => b.to_string(),
                Scalar::Int(i) => i.to_string(),
                Scalar::Float(f) => f.to_string(),
                Scalar::Text(s) => s,
            };
            (k, v)
        })
        .collect())
}

fn default_client_id() -> String {
    "mcpulse".into()
}
fn default_partitions() -> u32 {
    4
}
fn default_replication() -> u16 {
    1
}
fn default_max_message_bytes() -> u32 {
    16 << 20
}
fn default_delivery_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_session_timeout() -> Duration {
    Duration::from_secs(10)
}

impl KafkaConfig {
    /// A configuration with defaults for `brokers`.
    pub fn new(brokers: impl Into<String>) -> Self {
        Self {
            brokers: vec![brokers.into()],
            client_id: default_client_id(),
            partitions: default_partitions(),
            replication: default_replication(),
            max_message_bytes: default_max_message_bytes(),
            options: BTreeMap::new(),
            producer_options: BTreeMap::new(),
            consumer_options: BTreeMap::new(),
            delivery_timeout: default_delivery_timeout(),
            request_timeout: default_request_timeout(),
            session_timeout: default_session_timeout(),
        }
    }

    /// The brokers as librdkafka's `bootstrap.servers`.
    pub fn bootstrap_servers(&self) -> String {
        self.brokers.join(",")
    }

    /// Checks what serde cannot; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.brokers.is_empty() || self.brokers.iter().any(|b| b.trim().is_empty()) {
            return Err("bus.brokers: list at least one broker as host:port".into());
        }
        if self.partitions == 0 || self.partitions > 10_000 {
            return Err(format!(
                "bus.partitions: {} is out of range 1..=10000",
                self.partitions
            ));
        }
        // Above 64 MiB a fetch response could pass librdkafka's default
        // `receive.message.max.bytes` (100 MB).
        if !(1 << 10..=64 << 20).contains(&self.max_message_bytes) {
            return Err("bus.max_message_bytes: must be between 1 KiB and 64 MiB".into());
        }
        if self.replication == 0 {
            return Err("bus.replication: must be at least 1".into());
        }
        for (field, options) in [
            ("options", &self.options),
            ("producer_options", &self.producer_options),
            ("consumer_options", &self.consumer_options),
        ] {
            for key in options.keys() {
                if RESERVED_OPTIONS.contains(&key.as_str()) {
                    return Err(format!(
                        "bus.{field}.{key}: set by mcpulse itself (delivery guarantees depend on it); remove it"
                    ));
                }
            }
        }
        for (field, value) in [
            ("bus.delivery_timeout", self.delivery_timeout),
            ("bus.request_timeout", self.request_timeout),
            ("bus.session_timeout", self.session_timeout),
        ] {
            if value < Duration::from_millis(100) || value > Duration::from_secs(3600) {
                return Err(format!("{field}: must be between 100ms and 1h"));
            }
        }
        Ok(())
    }
}

/// Whether a librdkafka property holds a secret (its value is never printed).
pub fn is_secret_option(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["password", "secret", "key", "token", "jaas"]
        .iter()
        .any(|s| key.contains(s))
}

impl std::fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redacted = |options: &BTreeMap<String, String>| -> BTreeMap<String, String> {
            options
                .iter()
                .map(|(k, v)| {
                    let shown = if is_secret_option(k) { "***" } else { v };
                    (k.clone(), shown.to_string())
                })
                .collect()
        };
        f.debug_struct("KafkaConfig")
            .field("brokers", &self.brokers)
            .field("client_id", &self.client_id)
            .field("partitions", &self.partitions)
            .field("replication", &self.replication)
            .field("max_message_bytes", &self.max_message_bytes)
            .field("options", &redacted(&self.options))
            .field("producer_options", &redacted(&self.producer_options))
            .field("consumer_options", &redacted(&self.consumer_options))
            .field("delivery_timeout", &self.delivery_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("session_timeout", &self.session_timeout)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_options_and_secrets() {
        let mut config = KafkaConfig::new("127.0.0.1:9092");
        config.validate().expect("defaults are valid");
        config
            .options
            .insert("sasl.password".into(), "hunter2".into());
        assert!(!format!("{config:?}").contains("hunter2"));
        config
            .options
            .insert("enable.auto.commit".into(), "true".into());
        let err = config.validate().unwrap_err();
        assert!(err.contains("bus.options.enable.auto.commit"), "{err}");
    }
}
