//! `mcpulse probe --once URL`: probe one MCP endpoint now and print a readable report.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::Context;
use mcpulse_ingest::prober::probe::{Prober, ProberSettings};
use mcpulse_ingest::prober::target_guard::{TargetPolicy, parse_target_url};
use mcpulse_ingest::prober::targets::{Credential, Target, TransportHint};
use mcpulse_schemas::probe::ProbeResult;

/// What `--once` was asked.
pub struct OnceArgs {
    pub url: String,
    pub region: String,
    pub transport: TransportHint,
    pub timeout: Duration,
    /// Sent as `Authorization: Bearer …` (from an environment variable; never printed).
    pub bearer: Option<String>,
    pub allow_loopback: bool,
    pub allow_private: bool,
    pub json: bool,
}

/// Probes `args.url` once; prints the report; `Ok(true)` when the probe succeeded.
pub async fn run(args: OnceArgs) -> anyhow::Result<bool> {
    let url = parse_target_url(&args.url).map_err(|e| anyhow::anyhow!("{e}"))?;
    let credential = args
        .bearer
        .as_deref()
        .map(Credential::bearer)
        .transpose()
        .map_err(|e| anyhow::anyhow!("the bearer token: {e}"))?;
    let target = Target {
        tenant: "cli".into(),
        server: url.host_str().unwrap_or("server").to_string(),
        url,
        transport: args.transport,
        credential,
        interval: Duration::from_secs(60),
        timeout: args.timeout,
        labels: Default::default(),
    };
    let mut settings = ProberSettings::new(args.region);
    settings.policy = TargetPolicy {
        allow_loopback: args.allow_loopback,
        allow_private: args.allow_private,
        ..TargetPolicy::default()
    };
    let prober = Prober::new(settings);
    let result = prober.probe(&target).await.context("probing")?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        print!("{}", report(&result));
    }
    Ok(result.ok)
}

/// The human-readable report of one probe.
pub fn report(r: &ProbeResult) -> String {
    let mut out = String::new();
    let url = r.url.as_deref().unwrap_or(&r.server);
    let _ = writeln!(out, "{url}  (region {})", r.region);
    let verdict = match (r.ok, r.failure_reason) {
        (true, None) => "OK".to_string(),
        (true, Some(w)) => format!("OK, with warning {}", w.as_str()),
        (false, Some(reason)) => match r.failure_phase {
            Some(phase) => format!("FAILED: {} (in {})", reason.as_str(), phase.as_str()),
            None => format!("FAILED: {}", reason.as_str()),
        },
        (false, None) => "FAILED".to_string(),
    };
    let _ = writeln!(out, "  result       {verdict}");
    if let Some(detail) = &r.failure_detail {
        let _ = writeln!(out, "  detail       {detail}");
    }
    if r.http_status.is_some() || r.jsonrpc_error_code.is_some() {
        let status = r.http_status.map_or("-".into(), |s| s.to_string());
        let code = r.jsonrpc_error_code.map_or("-".into(), |c| c.to_string());
        let _ = writeln!(out, "  answer       HTTP {status}, JSON-RPC error {code}");
    }
    let era = r.protocol_era.map_or("-", |e| e.as_str());
    let version = r.protocol_version.as_deref().unwrap_or("-");
    let _ = writeln!(out, "  protocol     {era} {version}");
    let p = &r.phases;
    let phases = [
        ("dns", p.dns_ms),
        ("connect", p.connect_ms),
        ("tls", p.tls_ms),
        ("first byte", p.first_byte_ms),
        ("initialize", p.initialize_ms),
        ("tools/list", p.tools_list_ms),
        ("total", r.total_ms),
    ];
    let timings: Vec<String> = phases
        .iter()
        .filter_map(|(name, v)| v.map(|v| format!("{name} {v:.1} ms")))
        .collect();
    let _ = writeln!(out, "  timings      {}", timings.join(" · "));
    match (r.tool_count, &r.tools_hash) {
        (Some(n), Some(hash)) => {
            let _ = writeln!(out, "  tools        {n} (sha256 {hash})");
        }
        _ => {
            let _ = writeln!(out, "  tools        -");
        }
    }
    if let Some(tools) = &r.tools {
        let names: Vec<&str> = tools
            .iter()
            .filter_map(|t| t.get("name").and_then(|n| n.as_str()))
            .collect();
        let _ = writeln!(out, "               {}", names.join(", "));
    }
    match r.tls_expires_at {
        Some(expires) => {
            let days = (expires - chrono::Utc::now()).num_days();
            let _ = writeln!(
                out,
                "  certificate  expires {} ({days} days)",
                expires.format("%Y-%m-%d")
            );
        }
        None => {
            let _ = writeln!(out, "  certificate  - (plain HTTP or no handshake)");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcpulse_schemas::probe::{FailureReason, Phase, PhaseTimings, ProtocolEra};

    #[test]
    fn the_report_names_what_an_operator_needs() {
        let mut r = ProbeResult::new("weather", "eu-west", chrono::Utc::now());
        r.ok = true;
        r.url = Some("https://weather.example:443/mcp".into());
        r.protocol_era = Some(ProtocolEra::StreamableHttp);
        r.protocol_version = Some("2025-06-18".into());
        r.phases = PhaseTimings {
            dns_ms: Some(1.0),
            connect_ms: Some(2.0),
            tls_ms: Some(3.0),
            first_byte_ms: Some(4.0),
            initialize_ms: Some(5.0),
            tools_list_ms: Some(6.0),
        };
        r.total_ms = Some(21.0);
        r.tool_count = Some(2);
        r.tools_hash = Some("ab".repeat(32));
        r.tls_expires_at = Some(chrono::Utc::now() + chrono::Duration::days(40));
        let text = report(&r);
        for needle in [
            "OK",
            "streamable_http 2025-06-18",
            "tls 3.0 ms",
            "tools/list 6.0 ms",
            "2 (sha256 abab",
            "days)",
        ] {
            assert!(text.contains(needle), "{needle:?} missing from\n{text}");
        }
        r.ok = false;
        r.failure_reason = Some(FailureReason::Timeout);
        r.failure_phase = Some(Phase::ToolsList);
        r.failure_detail = Some("deadline passed".into());
        let text = report(&r);
        assert!(text.contains("FAILED: timeout (in tools_list)"), "{text}");
    }
}
