//! Real OpenTelemetry SDK exporters (Python, from PyPI) send MCP spans over OTLP/gRPC,
//! OTLP/HTTP protobuf and OTLP/HTTP JSON; every accepted span must be queryable exactly
//! once, with its attributes, under the tenant of the token.

mod common;

use std::collections::HashMap;
use std::process::Command;

use common::{ACME_TOKEN, Mcpulse, python, repo_path};
use serde_json::Value;

const SPANS_PER_PROTOCOL: usize = 40;

fn send(m: &Mcpulse, protocol: &str, run_id: &str) -> Value {
    let endpoint = match protocol {
        "grpc" => format!("http://{}", m.otlp_grpc),
        _ => format!("http://{}", m.otlp_http),
    };
    let out = Command::new(python())
        .arg(repo_path("tests/python/send_spans.py"))
        .args([
            "--protocol",
            protocol,
            "--endpoint",
            &endpoint,
            "--token",
            ACME_TOKEN,
        ])
        .args([
            "--count",
            &SPANS_PER_PROTOCOL.to_string(),
            "--service",
            &format!("weather-{protocol}"),
        ])
        .args(["--run-id", run_id])
        .output()
        .expect("run send_spans.py");
    assert!(
        out.status.success(),
        "send_spans.py {protocol} failed: {}\n--- mcpulse log ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        m.log()
    );
    serde_json::from_slice(&out.stdout).expect("send_spans.py prints JSON")
}

#[test]
fn sdk_exporters_over_grpc_http_protobuf_and_http_json() {
    let m = Mcpulse::start("");
    let run_id = format!("run{}", std::process::id());
    let mut sent: HashMap<String, (String, Value)> = HashMap::new();
    for protocol in ["grpc", "http/protobuf", "http/json"] {
        let report = send(&m, protocol, run_id.as_str());
        assert_eq!(report["sent"].as_u64(), Some(SPANS_PER_PROTOCOL as u64));
        for span in report["spans"].as_array().unwrap() {
            let id = span["span_id"].as_str().unwrap().to_string();
            assert!(
                sent.insert(id, (protocol.to_string(), span.clone()))
                    .is_none()
            );
        }
    }
    let total = sent.len() as i64;
    let count_sql = format!(
        "SELECT count(*) AS n FROM spans WHERE attributes['mcpulse.test.run_id'] = '{run_id}'"
    );
    assert_eq!(m.wait_count(&count_sql, total), total, "{}", m.log());

    let rows = m.query(&format!(
        "SELECT tenant, trace_id, span_id, parent_span_id, name, kind, service_name, status_code, status_message,
                mcp_method_name, gen_ai_tool_name, mcp_session_id, mcp_protocol_version, error_type,
                jsonrpc_request_id, network_transport, attributes['mcpulse.test.seq'] AS seq,
                resource_attributes['deployment.environment'] AS env, events[1]['name'] AS event,
                events[1]['attributes']['step'] AS step, duration_ns, start_time
         FROM spans WHERE attributes['mcpulse.test.run_id'] = '{run_id}'"
    ));
    assert_eq!(rows.len(), sent.len());
    let mut seen = HashMap::new();
    for row in &rows {
        let span_id = row["span_id"].as_str().unwrap();
        *seen.entry(span_id.to_string()).or_insert(0) += 1;
        let (protocol, span) = sent
            .get(span_id)
            .unwrap_or_else(|| panic!("unexpected span {row}"));
        let seq = span["seq"].as_u64().unwrap();
        assert_eq!(row["tenant"], "acme", "{row}");
        assert_eq!(row["trace_id"], span["trace_id"], "{protocol}: {row}");
        assert_eq!(
            row.get("parent_span_id").cloned().unwrap_or(Value::Null),
            span["parent_span_id"],
            "{protocol}: {row}"
        );
        assert_eq!(row["name"], span["name"]);
        assert_eq!(row["kind"], "server");
        assert_eq!(row["service_name"], format!("weather-{protocol}"));
        assert_eq!(row["mcp_method_name"], "tools/call");
        assert_eq!(row["gen_ai_tool_name"], span["tool"]);
        assert_eq!(row["mcp_session_id"], format!("sess-{run_id}"));
        assert_eq!(row["mcp_protocol_version"], "2025-06-18");
        assert_eq!(row["jsonrpc_request_id"], seq.to_string());
        assert_eq!(row["network_transport"], "tcp");
        assert_eq!(row["seq"], seq.to_string());
        assert_eq!(row["env"], "test");
        assert_eq!(row["event"], "tool.start");
        assert_eq!(row["step"], "1");
        assert!(row["duration_ns"].as_i64().unwrap() >= 0);
        if span["error"].as_bool().unwrap() {
            assert_eq!(row["status_code"], "error", "{row}");
            assert_eq!(row["status_message"], "boom");
            assert_eq!(row["error_type"], "tool_error");
        } else {
            assert_eq!(row["status_code"], "unset", "{row}");
            assert!(row.get("error_type").is_none_or(Value::is_null), "{row}");
        }
    }
    assert!(seen.values().all(|n| *n == 1), "a span arrived twice");

    // Richer SQL: per service, per tool, with a time filter.
    let per_service = m.query(&format!(
        "SELECT service_name, count(*) AS n, sum(CASE WHEN status_code = 'error' THEN 1 ELSE 0 END) AS errors
         FROM spans WHERE attributes['mcpulse.test.run_id'] = '{run_id}'
           AND start_time > now() - INTERVAL '1 hour'
         GROUP BY service_name ORDER BY service_name"
    ));
    let expected_errors = (0..SPANS_PER_PROTOCOL).filter(|i| i % 5 == 0).count() as i64;
    assert_eq!(per_service.len(), 3, "{per_service:?}");
    for row in &per_service {
        assert_eq!(row["n"].as_i64(), Some(SPANS_PER_PROTOCOL as i64));
        assert_eq!(row["errors"].as_i64(), Some(expected_errors));
    }
    let per_tool = m.query(&format!(
        "SELECT gen_ai_tool_name AS tool, count(*) AS n FROM spans
         WHERE attributes['mcpulse.test.run_id'] = '{run_id}' AND tenant = 'acme'
         GROUP BY 1 ORDER BY 1"
    ));
    let tools: Vec<_> = per_tool
        .iter()
        .map(|r| r["tool"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(tools, ["get_weather_0", "get_weather_1", "get_weather_2"]);
    let future = m.query(&format!(
        "SELECT count(*) AS n FROM spans WHERE attributes['mcpulse.test.run_id'] = '{run_id}'
         AND start_time > now() + INTERVAL '1 hour'"
    ));
    assert_eq!(future[0]["n"].as_i64(), Some(0));
}
