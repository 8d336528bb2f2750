//! `ProbeResult`: the outcome of one MCP probe of one server from one region, as sent by
//! external probers to `POST /v1/probes` and by mcpulse's own prober to `probes.v1`.
//!
//! The tenant is not part of a probe result: it comes from the credential at the edge.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Why a probe failed: the closed taxonomy of DESIGN.md.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FailureReason {
    DnsFailure,
    TcpRefused,
    ConnectTimeout,
    TlsError,
    TlsExpiring,
    #[serde(rename = "http_5xx")]
    Http5xx,
    #[serde(rename = "http_4xx")]
    Http4xx,
    AuthRequired,
    AuthMisconfigured,
    NotJsonrpc,
    InitializeError,
    ProtocolVersionMismatch,
    SessionError,
    Timeout,
    ToolsListError,
    LatencyDegraded,
}

impl FailureReason {
    pub const ALL: [FailureReason; 16] = [
        Self::DnsFailure,
        Self::TcpRefused,
        Self::ConnectTimeout,
        Self::TlsError,
        Self::TlsExpiring,
        Self::Http5xx,
        Self::Http4xx,
        Self::AuthRequired,
        Self::AuthMisconfigured,
        Self::NotJsonrpc,
        Self::InitializeError,
        Self::ProtocolVersionMismatch,
        Self::SessionError,
        Self::Timeout,
        Self::ToolsListError,
        Self::LatencyDegraded,
    ];

    /// The snake_case name used in JSON and in the `probes` table.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DnsFailure => "dns_failure",
            Self::TcpRefused => "tcp_refused",
            Self::ConnectTimeout => "connect_timeout",
            Self::TlsError => "tls_error",
            Self::TlsExpiring => "tls_expiring",
            Self::Http5xx => "http_5xx",
            Self::Http4xx => "http_4xx",
            Self::AuthRequired => "auth_required",
            Self::AuthMisconfigured => "auth_misconfigured",
            Self::NotJsonrpc => "not_jsonrpc",
            Self::InitializeError => "initialize_error",
            Self::ProtocolVersionMismatch => "protocol_version_mismatch",
            Self::SessionError => "session_error",
            Self::Timeout => "timeout",
            Self::ToolsListError => "tools_list_error",
            Self::LatencyDegraded => "latency_degraded",
        }
    }

    /// Reasons that describe a server that answered the protocol correctly (degraded or
    /// soon to fail, not down): they may accompany `ok: true`.
    pub fn is_warning(self) -> bool {
        matches!(self, Self::LatencyDegraded | Self::TlsExpiring)
    }
}

/// A phase of the probe sequence (records which phase timed out).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Dns,
    Connect,
    Tls,
    FirstByte,
    Discover,
    Initialize,
    Initialized,
    ToolsList,
    SessionDelete,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dns => "dns",
            Self::Connect => "connect",
            Self::Tls => "tls",
            Self::FirstByte => "first_byte",
            Self::Discover => "discover",
            Self::Initialize => "initialize",
            Self::Initialized => "initialized",
            Self::ToolsList => "tools_list",
            Self::SessionDelete => "session_delete",
        }
    }
}

/// The MCP protocol era a probe completed with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProtocolEra {
    /// 2026-07-28 and later: no handshake, `server/discover`, `_meta` per request.
    Modern,
    /// 2025-03-26 … 2025-11-25: Streamable HTTP with initialize and sessions.
    StreamableHttp,
    /// 2024-11-05: HTTP+SSE with an `endpoint` event.
    HttpSse,
}

impl ProtocolEra {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Modern => "modern",
            Self::StreamableHttp => "streamable_http",
            Self::HttpSse => "http_sse",
        }
    }
}

/// Time spent in each phase, in milliseconds. Absent phases did not run (e.g. no TLS
/// over plain HTTP, no initialize in the modern era).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PhaseTimings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_byte_ms: Option<f64>,
    /// `initialize` (legacy) or `server/discover` (modern).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initialize_ms: Option<f64>,
    /// All pages of `tools/list`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools_list_ms: Option<f64>,
}

/// One probe of one MCP server from one region.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "mcpulse ProbeResult v1")]
pub struct ProbeResult {
    /// Unique id of this probe run (e.g. a UUID). Optional; recorded for tracing a result back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_id: Option<String>,
    /// The probed server's id, as named in targets.yaml (1–256 characters).
    pub server: String,
    /// The MCP endpoint probed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Region the probe ran from (1–64 characters).
    pub region: String,
    /// When the probe started (RFC 3339).
    pub started_at: DateTime<Utc>,
    /// Whether a complete protocol exchange succeeded (HTTP 200 alone is not health).
    pub ok: bool,
    /// Why it failed, or a warning on a successful probe (`latency_degraded`, `tls_expiring`).
    /// Required when `ok` is false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<FailureReason>,
    /// The phase that failed; required when `failure_reason` is `timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_phase: Option<Phase>,
    /// Human-readable detail explaining the failure (status line, error message).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_detail: Option<String>,
    /// HTTP status of the response that decided the outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    /// JSON-RPC error code, when the server answered with an error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jsonrpc_error_code: Option<i64>,
    /// The protocol era the probe completed (or last tried) with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol_era: Option<ProtocolEra>,
    /// The negotiated MCP protocol version, e.g. `2025-06-18`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol_version: Option<String>,
    /// Per-phase timings in milliseconds.
    #[serde(default)]
    pub phases: PhaseTimings,
    /// Wall time of the whole probe in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_ms: Option<f64>,
    /// Number of tools listed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_count: Option<u32>,
    /// SHA-256 (lowercase hex) of the RFC 8785 canonical JSON of the tools array sorted by
    /// name, without `_meta`, `ttlMs` and `cacheScope`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools_hash: Option<String>,
    /// The canonical tool list; sent when the hash changed so drift can be diffed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<serde_json::Value>>,
    /// Expiry of the server's TLS certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_expires_at: Option<DateTime<Utc>>,
    /// Free-form labels (from targets.yaml).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Identity of the prober that ran the probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prober: Option<String>,
}

/// A validation error naming the offending field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl ProbeResult {
    /// A failed result of `server` probed from `region` at `started_at` with nothing
    /// else known yet; the prober and tests fill in what they learn.
    pub fn new(
        server: impl Into<String>,
        region: impl Into<String>,
        started_at: DateTime<Utc>,
    ) -> Self {
        Self {
            probe_id: None,
            server: server.into(),
            url: None,
            region: region.into(),
            started_at,
            ok: false,
            failure_reason: None,
            failure_phase: None,
            failure_detail: None,
            http_status: None,
            jsonrpc_error_code: None,
            protocol_era: None,
            protocol_version: None,
            phases: PhaseTimings::default(),
            total_ms: None,
            tool_count: None,
            tools_hash: None,
            tools: None,
            tls_expires_at: None,
            labels: BTreeMap::new(),
            prober: None,
        }
    }

    /// Checks what serde cannot: lengths, the failure fields' consistency, the hash format,
    /// and that `started_at` lies within `[earliest, latest]`.
    pub fn validate(
        &self,
        earliest: DateTime<Utc>,
        latest: DateTime<Utc>,
    ) -> Result<(), FieldError> {
        check_len("server", &self.server, 256)?;
        check_len("region", &self.region, 64)?;
        if self.started_at < earliest || self.started_at > latest {
            return Err(FieldError::new(
                "started_at",
                format!(
                    "{} is outside the accepted window {} .. {}",
                    self.started_at.to_rfc3339(),
                    earliest.to_rfc3339(),
                    latest.to_rfc3339()
                ),
            ));
        }
        match (self.ok, self.failure_reason) {
            (false, None) => {
                return Err(FieldError::new(
                    "failure_reason",
                    "required when ok is false",
                ));
            }
            (true, Some(reason)) if !reason.is_warning() => {
                return Err(FieldError::new(
                    "failure_reason",
                    format!("{} contradicts ok: true", reason.as_str()),
                ));
            }
            _ => {}
        }
        if self.failure_reason == Some(FailureReason::Timeout) && self.failure_phase.is_none() {
            return Err(FieldError::new(
                "failure_phase",
                "required when failure_reason is timeout",
            ));
        }
        if let Some(hash) = &self.tools_hash {
            let is_hex =
                hash.len() == 64 && hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
            if !is_hex {
                return Err(FieldError::new(
                    "tools_hash",
                    "must be 64 lowercase hex characters (SHA-256)",
                ));
            }
        }
        if let Some(status) = self.http_status
            && !(100..=599).contains(&status)
        {
            return Err(FieldError::new(
                "http_status",
                format!("{status} is not an HTTP status"),
            ));
        }
        let timings = [
            ("phases.dns_ms", self.phases.dns_ms),
            ("phases.connect_ms", self.phases.connect_ms),
            ("phases.tls_ms", self.phases.tls_ms),
            ("phases.first_byte_ms", self.phases.first_byte_ms),
            ("phases.initialize_ms", self.phases.initialize_ms),
            ("phases.tools_list_ms", self.phases.tools_list_ms),
            ("total_ms", self.total_ms),
        ];
        for (field, value) in timings {
            if let Some(v) = value
                && !(v.is_finite() && v >= 0.0)
            {
                return Err(FieldError::new(
                    field,
                    format!("{v} is not a non-negative duration"),
                ));
            }
        }
        for key in self.labels.keys() {
            check_len("labels", key, 128)?;
        }
        Ok(())
    }

    /// The JSON Schema published in `schemas/json/probe_result.v1.schema.json`.
    pub fn json_schema() -> serde_json::Value {
        serde_json::to_value(schemars::schema_for!(ProbeResult)).expect("schema serializes")
    }
}

fn check_len(field: &str, value: &str, max: usize) -> Result<(), FieldError> {
    if value.is_empty() {
        Err(FieldError::new(field, "must not be empty"))
    } else if value.chars().count() > max {
        Err(FieldError::new(
            field,
            format!("longer than {max} characters"),
        ))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn window() -> (DateTime<Utc>, DateTime<Utc>) {
        let now = Utc::now();
        (now - Duration::days(7), now + Duration::hours(1))
    }

    fn parse(json: &str) -> Result<ProbeResult, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn failure_reason_names_are_the_design_taxonomy() {
        for reason in FailureReason::ALL {
            let json = serde_json::to_string(&reason).unwrap();
            assert_eq!(json, format!("\"{}\"", reason.as_str()));
            let back: FailureReason = serde_json::from_str(&json).unwrap();
            assert_eq!(back, reason);
        }
        assert_eq!(FailureReason::Http5xx.as_str(), "http_5xx");
    }

    #[test]
    fn accepts_a_failed_probe_and_round_trips() {
        let now = Utc::now().to_rfc3339();
        let p = parse(&format!(
            r#"{{"server":"weather","region":"eu-west","started_at":"{now}","ok":false,
               "failure_reason":"timeout","failure_phase":"tools_list","phases":{{"dns_ms":1.5}}}}"#
        ))
        .unwrap();
        let (a, b) = window();
        p.validate(a, b).unwrap();
        let again: ProbeResult = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        assert_eq!(again, p);
    }

    #[test]
    fn rejects_tenant_in_payload_and_unknown_fields() {
        let now = Utc::now().to_rfc3339();
        let err = parse(&format!(
            r#"{{"tenant":"other","server":"s","region":"r","started_at":"{now}","ok":true}}"#
        ))
        .unwrap_err();
        assert!(err.to_string().contains("unknown field `tenant`"), "{err}");
    }

    #[test]
    fn validation_names_the_field() {
        let (a, b) = window();
        let base = ProbeResult::new("s", "r", Utc::now());
        assert_eq!(base.validate(a, b).unwrap_err().field, "failure_reason");
        let timeout = ProbeResult {
            failure_reason: Some(FailureReason::Timeout),
            ..base.clone()
        };
        assert_eq!(timeout.validate(a, b).unwrap_err().field, "failure_phase");
        let contradictory = ProbeResult {
            ok: true,
            failure_reason: Some(FailureReason::TcpRefused),
            ..base.clone()
        };
        assert_eq!(
            contradictory.validate(a, b).unwrap_err().field,
            "failure_reason"
        );
        let slow = ProbeResult {
            ok: true,
            failure_reason: Some(FailureReason::LatencyDegraded),
            ..base.clone()
        };
        slow.validate(a, b).unwrap();
        let old = ProbeResult {
            ok: true,
            started_at: a - Duration::days(1),
            ..base.clone()
        };
        assert_eq!(old.validate(a, b).unwrap_err().field, "started_at");
        let bad_hash = ProbeResult {
            ok: true,
            tools_hash: Some("ABC".into()),
            ..base.clone()
        };
        assert_eq!(bad_hash.validate(a, b).unwrap_err().field, "tools_hash");
        let empty = ProbeResult {
            ok: true,
            server: String::new(),
            ..base
        };
        assert_eq!(empty.validate(a, b).unwrap_err().field, "server");
    }

    #[test]
    fn published_json_schema_is_current() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/json/probe_result.v1.schema.json"
        );
        let generated = serde_json::to_string_pretty(&ProbeResult::json_schema()).unwrap() + "\n";
        if std::env::var_os("MCPULSE_BLESS").is_some() {
            std::fs::write(path, &generated).unwrap();
        }
        let published =
            std::fs::read_to_string(path).expect("schema file exists (MCPULSE_BLESS=1 writes it)");
        assert_eq!(
            published, generated,
            "run `MCPULSE_BLESS=1 cargo test -p mcpulse-schemas` to update"
        );
    }
}
