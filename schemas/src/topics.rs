//! Topic names and message headers of the log (see DESIGN.md, "The log").

use serde::Deserialize;

/// Header carrying the tenant a message belongs to (set at the edge from the credential).
pub const HEADER_TENANT: &str = "mcpulse-tenant";
/// Whether `id` is a valid tenant id: 1-64 characters of `A-Z a-z 0-9 _ -`. Tenant ids
/// name archive folders (`tenant={id}`), so the same rule holds for configured tenants
/// and for the tenant header of a message read from the log.
pub fn valid_tenant_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// What a valid tenant id looks like, for error messages.
pub const TENANT_ID_RULE: &str = "must be 1-64 characters of A-Z a-z 0-9 _ -";

/// Header carrying the content type of a message value (`application/x-protobuf`, `application/json`).
pub const HEADER_CONTENT_TYPE: &str = "content-type";
/// Dead-letter headers: where the message came from and why it was dead-lettered.
pub const HEADER_DLQ_TOPIC: &str = "mcpulse-dlq-topic";
pub const HEADER_DLQ_PARTITION: &str = "mcpulse-dlq-partition";
pub const HEADER_DLQ_OFFSET: &str = "mcpulse-dlq-offset";
pub const HEADER_DLQ_ERROR: &str = "mcpulse-dlq-error";

/// The topics of the log, under a configurable prefix (default `mcpulse.`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Topics {
    /// Prefix put before every topic name.
    pub prefix: String,
}

impl Default for Topics {
    fn default() -> Self {
        Self {
            prefix: "mcpulse.".to_string(),
        }
    }
}

impl Topics {
    /// OTLP `ExportTraceServiceRequest` protobuf, keyed by `tenant/service`.
    pub fn spans(&self) -> String {
        format!("{}spans.v1", self.prefix)
    }
    /// `ProbeResult` JSON, keyed by `tenant/server`.
    pub fn probes(&self) -> String {
        format!("{}probes.v1", self.prefix)
    }
    /// Candidate incidents, keyed by correlation key.
    pub fn findings(&self) -> String {
        format!("{}findings.v1", self.prefix)
    }
    /// Decided incident transitions, keyed by `tenant/incident`.
    pub fn alerts(&self) -> String {
        format!("{}alerts.v1", self.prefix)
    }
    /// Messages that could not be decoded, with the error and origin in headers.
    pub fn dlq(&self) -> String {
        format!("{}dlq.v1", self.prefix)
    }
    /// Every topic, in a stable order.
    pub fn all(&self) -> Vec<String> {
        vec![
            self.spans(),
            self.probes(),
            self.findings(),
            self.alerts(),
            self.dlq(),
        ]
    }
}

/// The partitioning key `tenant/name` used by `spans.v1` and `probes.v1`.
pub fn tenant_key(tenant: &str, name: &str) -> String {
    format!("{tenant}/{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_ids() {
        assert!(valid_tenant_id("acme_01-x"));
        assert!(valid_tenant_id(&"a".repeat(64)));
        for bad in ["", "a/b", "..", "a b", "é", &"a".repeat(65)] {
            assert!(!valid_tenant_id(bad), "{bad:?}");
        }
    }
}
