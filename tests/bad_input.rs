//! Every kind of bad input gets the right OTLP/HTTP error with a message saying what was
//! wrong, and nothing of a rejected request is written.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{ACME_TOKEN, GLOBEX_TOKEN, Mcpulse, attr, http, now_ns, otlp_request};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use reqwest::StatusCode;

fn span(id: u64, start: u64, marker: &str) -> Span {
    Span {
        trace_id: [[7u8; 8], id.to_be_bytes()].concat(),
        span_id: (id + 1).to_be_bytes().to_vec(),
        name: "tools/call x".into(),
        kind: 2,
        start_time_unix_nano: start,
        end_time_unix_nano: start + 1_000,
        attributes: vec![attr("marker", marker)],
        ..Default::default()
    }
}

fn request(spans: Vec<Span>) -> Vec<u8> {
    otlp_request(Some("bad-input"), spans)
}

fn post(
    m: &Mcpulse,
    content_type: &str,
    token: Option<&str>,
    body: Vec<u8>,
) -> reqwest::blocking::Response {
    let mut req = http()
        .post(m.otlp_url())
        .header("content-type", content_type)
        .body(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().unwrap()
}

fn status_message(resp: reqwest::blocking::Response) -> (StatusCode, String) {
    let status = resp.status();
    let ct = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = resp.bytes().unwrap();
    let message = if ct.starts_with("application/x-protobuf") {
        #[derive(Clone, PartialEq, prost::Message)]
        struct RpcStatus {
            #[prost(int32, tag = "1")]
            code: i32,
            #[prost(string, tag = "2")]
            message: String,
        }
        RpcStatus::decode(body.as_ref())
            .expect("google.rpc.Status body")
            .message
    } else {
        let v: serde_json::Value = serde_json::from_slice(&body).expect("JSON error body");
        v["message"]
            .as_str()
            .or(v["error"].as_str())
            .unwrap_or_default()
            .to_string()
    };
    (status, message)
}

fn count(m: &Mcpulse, marker: &str) -> i64 {
    m.query(&format!(
        "SELECT count(*) AS n FROM spans WHERE attributes['marker'] = '{marker}'"
    ))[0]["n"]
        .as_i64()
        .unwrap()
}

#[test]
fn otlp_http_bad_input_gets_the_right_error_and_writes_nothing() {
    let m =
        Mcpulse::start("ingest:\n  max_request_bytes: 65536\n  max_decompressed_bytes: 262144\n");
    let now = now_ns();
    let good = || request(vec![span(1, now, "good")]);

    // Authentication.
    let resp = post(&m, "application/x-protobuf", None, good());
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(
        resp.headers()
            .get("www-authenticate")
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    let (status, msg) = status_message(post(
        &m,
        "application/x-protobuf",
        Some("wrong-token-123"),
        good(),
    ));
    assert_eq!(
        (status, msg.as_str()),
        (StatusCode::UNAUTHORIZED, "invalid bearer token")
    );
    let (status, msg) = status_message(post(
        &m,
        "application/x-protobuf",
        Some("operator-token-0123456789"),
        good(),
    ));
    assert_eq!(status, StatusCode::FORBIDDEN, "{msg}");

    // Encoding problems.
    let (status, msg) = status_message(post(
        &m,
        "application/x-protobuf",
        Some(ACME_TOKEN),
        b"\x0a\xff\xff\xff".to_vec(),
    ));
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        msg.contains("invalid ExportTraceServiceRequest protobuf"),
        "{msg}"
    );
    let (status, msg) = status_message(post(&m, "text/plain", Some(ACME_TOKEN), good()));
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(msg.contains("text/plain"), "{msg}");
    let (status, msg) = status_message(post(
        &m,
        "application/json",
        Some(ACME_TOKEN),
        b"{\"resourceSpans\": [".to_vec(),
    ));
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(msg.contains("OTLP/JSON"), "{msg}");
    let (status, msg) = status_message(post(
        &m,
        "application/json",
        Some(ACME_TOKEN),
        b"{\"resourceSpans\": \"\xff\xfe\"}".to_vec(),
    ));
    assert_eq!(status, StatusCode::BAD_REQUEST, "{msg}");
    // A protobuf string field holding invalid UTF-8 (span name).
    let mut bad_utf8 = span(2, now, "bad-utf8");
    bad_utf8.name = "NAME".into();
    let bytes = request(vec![bad_utf8]);
    let pos = bytes.windows(4).position(|w| w == b"NAME").unwrap();
    let mut corrupted = bytes.clone();
    corrupted[pos] = 0xff;
    let (status, msg) = status_message(post(
        &m,
        "application/x-protobuf",
        Some(ACME_TOKEN),
        corrupted,
    ));
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        msg.to_lowercase().contains("utf-8") || msg.contains("invalid"),
        "{msg}"
    );

    // Size limits: too large on the wire, and a gzip bomb.
    let (status, _) = status_message(post(
        &m,
        "application/x-protobuf",
        Some(ACME_TOKEN),
        vec![0u8; 70_000],
    ));
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&vec![0u8; 1 << 20]).unwrap();
    let resp = http()
        .post(m.otlp_url())
        .header("content-type", "application/x-protobuf")
        .header("content-encoding", "gzip")
        .bearer_auth(ACME_TOKEN)
        .body(gz.finish().unwrap())
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let resp = http()
        .post(m.otlp_url())
        .header("content-type", "application/x-protobuf")
        .header("content-encoding", "gzip")
        .bearer_auth(ACME_TOKEN)
        .body(b"not gzip at all".to_vec())
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let resp = http()
        .post(m.otlp_url())
        .header("content-type", "application/x-protobuf")
        .header("content-encoding", "br")
        .bearer_auth(ACME_TOKEN)
        .body(good())
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

    // A truncated body: Content-Length promises more than is sent before the client leaves.
    let mut stream = TcpStream::connect(m.otlp_http).unwrap();
    let body = request(vec![span(3, now, "truncated")]);
    write!(
        stream,
        "POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\nAuthorization: Bearer {ACME_TOKEN}\r\nContent-Length: {}\r\n\r\n",
        body.len() + 100
    )
    .unwrap();
    stream.write_all(&body).unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 400"),
        "{answer}"
    );

    // Timestamps far in the past or future: partial success naming the problem.
    let old = now - 30 * 24 * 3600 * 1_000_000_000;
    let future = now + 48 * 3600 * 1_000_000_000;
    let resp = post(
        &m,
        "application/x-protobuf",
        Some(ACME_TOKEN),
        request(vec![
            span(10, old, "partial"),
            span(11, now, "partial"),
            span(12, future, "partial"),
        ]),
    );
    assert_eq!(resp.status(), StatusCode::OK);
    let body = ExportTraceServiceResponse::decode(resp.bytes().unwrap().as_ref()).unwrap();
    let partial = body.partial_success.expect("partial success");
    assert_eq!(partial.rejected_spans, 2);
    assert!(
        partial
            .error_message
            .contains("outside the accepted window"),
        "{}",
        partial.error_message
    );
    // The same over JSON.
    let json = serde_json::json!({"resourceSpans": [{"scopeSpans": [{"spans": [{
        "traceId": "0102030405060708090a0b0c0d0e0f10", "spanId": "0102030405060708",
        "name": "old", "kind": 2, "startTimeUnixNano": old.to_string(), "endTimeUnixNano": old.to_string()}]}]}]});
    let resp = post(
        &m,
        "application/json",
        Some(ACME_TOKEN),
        serde_json::to_vec(&json).unwrap(),
    );
    assert_eq!(resp.status(), StatusCode::OK);
    let v: serde_json::Value = resp.json().unwrap();
    assert_eq!(v["partialSuccess"]["rejectedSpans"], "1");

    // An empty export is a valid no-op.
    let resp = post(&m, "application/x-protobuf", Some(ACME_TOKEN), Vec::new());
    assert_eq!(resp.status(), StatusCode::OK);

    // One good request, for contrast.
    assert_eq!(
        post(&m, "application/x-protobuf", Some(ACME_TOKEN), good()).status(),
        StatusCode::OK
    );
    assert_eq!(
        post(&m, "application/x-protobuf", Some(GLOBEX_TOKEN), good()).status(),
        StatusCode::OK
    );

    assert_eq!(
        m.wait_count(
            "SELECT count(*) AS n FROM spans WHERE attributes['marker'] = 'good'",
            2
        ),
        2
    );
    assert_eq!(
        m.wait_count(
            "SELECT count(*) AS n FROM spans WHERE attributes['marker'] = 'partial'",
            1
        ),
        1
    );
    std::thread::sleep(Duration::from_millis(800));
    for marker in ["bad-utf8", "truncated"] {
        assert_eq!(count(&m, marker), 0, "{marker} was written");
    }
    assert_eq!(count(&m, "partial"), 1);
    let tenants = m.query("SELECT tenant, count(*) AS n FROM spans WHERE attributes['marker'] = 'good' GROUP BY tenant ORDER BY tenant");
    assert_eq!(tenants.len(), 2);
    assert_eq!(
        (tenants[0]["tenant"].as_str(), tenants[1]["tenant"].as_str()),
        (Some("acme"), Some("globex"))
    );
}

#[test]
fn probe_api_accepts_json_array_and_ndjson_and_rejects_whole_requests() {
    let m = Mcpulse::start("");
    let now = chrono_now();
    let probe = |server: &str, ok: bool| {
        let mut p = serde_json::json!({"server": server, "region": "eu-west", "started_at": now, "ok": ok,
            "phases": {"dns_ms": 1.5, "connect_ms": 2.0}, "total_ms": 40.0, "protocol_era": "streamable_http",
            "protocol_version": "2025-06-18", "tool_count": 3, "labels": {"team": "a"}});
        if !ok {
            p["failure_reason"] = "timeout".into();
            p["failure_phase"] = "tools_list".into();
        }
        p
    };
    let post = |ct: &str, body: String| {
        http()
            .post(m.url("/v1/probes"))
            .header("content-type", ct)
            .bearer_auth(ACME_TOKEN)
            .body(body)
            .send()
            .unwrap()
    };
    assert_eq!(
        post("application/json", probe("one", true).to_string()).status(),
        StatusCode::OK
    );
    let array = serde_json::json!([probe("two", true), probe("two", false)]);
    let resp = post("application/json", array.to_string());
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.json::<serde_json::Value>().unwrap()["accepted"], 2);
    let nd = format!("{}\n{}\n", probe("three", true), probe("three", false));
    assert_eq!(post("application/x-ndjson", nd).status(), StatusCode::OK);

    // Rejected whole: one bad item, a tenant in the payload, a bad reason, no token, empty.
    let mut with_tenant = probe("evil", true);
    with_tenant["tenant"] = "globex".into();
    let resp = post(
        "application/json",
        serde_json::json!([probe("evil", true), with_tenant]).to_string(),
    );
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let err = resp.json::<serde_json::Value>().unwrap()["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(err.contains("[1]") && err.contains("tenant"), "{err}");
    let mut bad_reason = probe("evil", false);
    bad_reason["failure_reason"] = "exploded".into();
    assert_eq!(
        post("application/json", bad_reason.to_string()).status(),
        StatusCode::BAD_REQUEST
    );
    let mut no_phase = probe("evil", false);
    no_phase.as_object_mut().unwrap().remove("failure_phase");
    let resp = post("application/json", no_phase.to_string());
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(resp.text().unwrap().contains("failure_phase"));
    assert_eq!(
        post("application/json", String::new()).status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        post("text/csv", "a,b".into()).status(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    let resp = http()
        .post(m.url("/v1/probes"))
        .header("content-type", "application/json")
        .body(probe("evil", true).to_string())
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    let n = m.wait_count("SELECT count(*) AS n FROM probes", 5);
    assert_eq!(n, 5);
    std::thread::sleep(Duration::from_millis(800));
    let rows = m.query("SELECT tenant, server, region, ok, failure_reason, failure_phase, dns_ms, labels['team'] AS team FROM probes ORDER BY server, ok");
    assert_eq!(rows.len(), 5, "{rows:?}");
    assert!(
        rows.iter()
            .all(|r| r["tenant"] == "acme" && r["region"] == "eu-west" && r["team"] == "a")
    );
    assert!(rows.iter().all(|r| r["server"] != "evil"));
    let failed: Vec<_> = rows.iter().filter(|r| r["ok"] == false).collect();
    assert_eq!(failed.len(), 2);
    assert!(
        failed
            .iter()
            .all(|r| r["failure_reason"] == "timeout" && r["failure_phase"] == "tools_list")
    );
}

#[test]
fn saturation_answers_retryable_statuses() {
    // The archiver flushes only every minute, so its lag stays above the (zero) limit.
    let m = Mcpulse::start(
        "archive:\n  flush_interval: 60s\ningest:\n  max_backlog_messages: 0\n  retry_after: 3s\n",
    );
    let body = request(vec![span(1, now_ns(), "first")]);
    assert_eq!(
        post(&m, "application/x-protobuf", Some(ACME_TOKEN), body.clone()).status(),
        StatusCode::OK
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let resp = loop {
        let resp = post(&m, "application/x-protobuf", Some(ACME_TOKEN), body.clone());
        if resp.status() != StatusCode::OK || std::time::Instant::now() > deadline {
            break resp;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(resp.headers().get("retry-after").unwrap(), "6");
    let (_, msg) = status_message(resp);
    assert!(msg.contains("behind"), "{msg}");
}

fn chrono_now() -> String {
    chrono::Utc::now().to_rfc3339()
}
