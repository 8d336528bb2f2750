//! The MCP messages a probe sends, and the checks on what comes back, free of any
//! transport: JSON-RPC envelopes, version negotiation, tool-list paging and the mapping
//! of HTTP answers onto the failure taxonomy.

use std::collections::HashSet;

use http::{HeaderMap, StatusCode};
use mcpulse_schemas::probe::{FailureReason, Phase};
use serde_json::{Value, json};

/// The modern protocol version (no handshake, `server/discover`, `_meta` per request).
pub const MODERN_VERSION: &str = "2026-07-28";
/// Legacy (handshake) versions the prober offers and accepts, newest first.
pub const LEGACY_VERSIONS: &[&str] = &["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"];
/// JSON-RPC error of the modern protocol for an unsupported version.
pub const UNSUPPORTED_VERSION: i64 = -32022;
/// How the prober names itself to servers.
pub const CLIENT_NAME: &str = "mcpulse-prober";

/// A protocol-level failure: its reason, the phase it happened in and what explains it.
#[derive(Clone, Debug, PartialEq)]
pub struct ProtocolFailure {
    pub reason: FailureReason,
    pub phase: Phase,
    pub detail: String,
    pub http_status: Option<u16>,
    pub jsonrpc_error_code: Option<i64>,
    /// The `Location` of a redirect answer (as sent: possibly relative), for the prober
    /// to check and follow.
    pub redirect: Option<String>,
}

impl ProtocolFailure {
    pub fn new(reason: FailureReason, phase: Phase, detail: impl Into<String>) -> Self {
        Self {
            reason,
            phase,
            detail: detail.into(),
            http_status: None,
            jsonrpc_error_code: None,
            redirect: None,
        }
    }

    fn with_code(mut self, code: i64) -> Self {
        self.jsonrpc_error_code = Some(code);
        self
    }

    fn with_status(mut self, status: StatusCode) -> Self {
        self.http_status = Some(status.as_u16());
        self
    }
}

fn client_info() -> Value {
    json!({"name": CLIENT_NAME, "version": env!("CARGO_PKG_VERSION")})
}

/// A modern-era request: every request carries the protocol version, client info and
/// capabilities in `params._meta`.
pub fn modern_request(id: u64, method: &str, mut params: Value) -> Value {
    if !params.is_object() {
        params = json!({});
    }
    params["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": MODERN_VERSION,
        "io.modelcontextprotocol/clientInfo": client_info(),
        "io.modelcontextprotocol/clientCapabilities": {},
    });
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
}

/// The legacy `initialize` request offering `version`.
pub fn initialize(id: u64, version: &str) -> Value {
    json!({
        "jsonrpc": "2.0",
        "id": id,
        "method": "initialize",
        "params": {"protocolVersion": version, "capabilities": {}, "clientInfo": client_info()},
    })
}

/// The legacy `notifications/initialized` notification (no id, no answer but 202).
pub fn initialized() -> Value {
    json!({"jsonrpc": "2.0", "method": "notifications/initialized"})
}

/// A legacy `tools/list` request for the page after `cursor`.
pub fn tools_list(id: u64, cursor: Option<&str>) -> Value {
    let params = match cursor {
        Some(c) => json!({"cursor": c}),
        None => json!({}),
    };
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/list", "params": params})
}

/// What a JSON-RPC response carried.
#[derive(Clone, Debug, PartialEq)]
pub enum RpcOutcome {
    Result(Value),
    Error {
        code: i64,
        message: String,
        data: Option<Value>,
    },
}

/// Reads the response to request `id` from a JSON body (a single response, or a batch
/// holding it). Anything that is not a JSON-RPC 2.0 response with that id is
/// `not_jsonrpc`.
pub fn parse_response(body: &[u8], id: u64, phase: Phase) -> Result<RpcOutcome, ProtocolFailure> {
    let not_jsonrpc =
        |detail: String| ProtocolFailure::new(FailureReason::NotJsonrpc, phase, detail);
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| not_jsonrpc(format!("the body is not JSON ({e}): {}", snippet(body))))?;
    let response = match value {
        Value::Array(items) => items
            .into_iter()
            .find(|item| item.get("id").and_then(Value::as_u64) == Some(id))
            .ok_or_else(|| not_jsonrpc(format!("no response with id {id} in the batch")))?,
        other => other,
    };
    parse_message(&response, id, phase)
}

/// Checks one decoded JSON-RPC message as the response to request `id`.
pub fn parse_message(
    response: &Value,
    id: u64,
    phase: Phase,
) -> Result<RpcOutcome, ProtocolFailure> {
    let not_jsonrpc =
        |detail: String| ProtocolFailure::new(FailureReason::NotJsonrpc, phase, detail);
    let object = response
        .as_object()
        .ok_or_else(|| not_jsonrpc("the response is not a JSON object".into()))?;
    if object.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(not_jsonrpc(
            "the response lacks \"jsonrpc\": \"2.0\"".into(),
        ));
    }
    match object.get("id") {
        Some(got) if got.as_u64() == Some(id) || got.as_str() == Some(&id.to_string()) => {}
        Some(got) => {
            return Err(not_jsonrpc(format!(
                "response id {got} does not match request id {id}"
            )));
        }
        None => return Err(not_jsonrpc("the response has no id".into())),
    }
    if let Some(error) = object.get("error") {
        let code = error
            .get("code")
            .and_then(Value::as_i64)
            .ok_or_else(|| not_jsonrpc("the error has no integer code".into()))?;
        let message = error
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        return Ok(RpcOutcome::Error {
            code,
            message,
            data: error.get("data").cloned(),
        });
    }
    object
        .get("result")
        .cloned()
        .map(RpcOutcome::Result)
        .ok_or_else(|| not_jsonrpc("the response has neither result nor error".into()))
}

/// A JSON-RPC error answer as the failure of `phase`: an unsupported version is
/// `protocol_version_mismatch` wherever it comes; otherwise the phase decides.
pub fn rpc_error(phase: Phase, code: i64, message: &str) -> ProtocolFailure {
    let reason = if code == UNSUPPORTED_VERSION {
        FailureReason::ProtocolVersionMismatch
    } else {
        match phase {
            Phase::ToolsList => FailureReason::ToolsListError,
            _ => FailureReason::InitializeError,
        }
    };
    ProtocolFailure::new(
        reason,
        phase,
        format!("JSON-RPC error {code}: {}", truncate(message, 200)),
    )
    .with_code(code)
}

/// What `initialize` agreed on.
#[derive(Clone, Debug, PartialEq)]
pub struct Negotiated {
    pub protocol_version: String,
    pub server_name: Option<String>,
}

/// Checks an `initialize` result: it must name a protocol version the prober speaks and
/// carry capabilities.
pub fn check_initialize(result: &Value) -> Result<Negotiated, ProtocolFailure> {
    let fail = |reason, detail: String| ProtocolFailure::new(reason, Phase::Initialize, detail);
    let version = result
        .get("protocolVersion")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            fail(
                FailureReason::InitializeError,
                "the result lacks protocolVersion".into(),
            )
        })?;
    if !result.get("capabilities").is_some_and(Value::is_object) {
        return Err(fail(
            FailureReason::InitializeError,
            "the result lacks capabilities".into(),
        ));
    }
    if !LEGACY_VERSIONS.contains(&version) {
        return Err(fail(
            FailureReason::ProtocolVersionMismatch,
            format!(
                "the server answered with version {version:?}, which the prober does not speak"
            ),
        ));
    }
    Ok(Negotiated {
        protocol_version: version.to_string(),
        server_name: result
            .pointer("/serverInfo/name")
            .and_then(Value::as_str)
            .map(str::to_string),
    })
}

/// Collects `tools/list` pages, following `nextCursor` to the end and refusing repeated
/// cursors and endless paging.
#[derive(Debug)]
pub struct ToolPages {
    pub tools: Vec<Value>,
    pages: u32,
    max_pages: u32,
    cursors: HashSet<String>,
}

impl ToolPages {
    pub fn new(max_pages: u32) -> Self {
        Self {
            tools: Vec::new(),
            pages: 0,
            max_pages: max_pages.max(1),
            cursors: HashSet::new(),
        }
    }

    /// Adds one page's result; returns the cursor of the next page, if any.
    pub fn add(&mut self, result: &Value) -> Result<Option<String>, ProtocolFailure> {
        let fail = |detail: String| {
            ProtocolFailure::new(FailureReason::ToolsListError, Phase::ToolsList, detail)
        };
        let tools = result
            .get("tools")
            .and_then(Value::as_array)
            .ok_or_else(|| fail("the result has no tools array".into()))?;
        self.tools.extend(tools.iter().cloned());
        self.pages += 1;
        let next = match result.get("nextCursor") {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::String(c)) => c.clone(),
            Some(other) => return Err(fail(format!("nextCursor is not a string: {other}"))),
        };
        if !self.cursors.insert(next.clone()) {
            return Err(fail(format!(
                "the server repeated cursor {:?}",
                truncate(&next, 64)
            )));
        }
        if self.pages >= self.max_pages {
            return Err(fail(format!("more than {} pages of tools", self.max_pages)));
        }
        Ok(Some(next))
    }

    pub fn pages(&self) -> u32 {
        self.pages
    }
}

/// Maps a non-success HTTP answer in `phase` onto the taxonomy. `None` for 2xx.
///
/// 401 with a Bearer `WWW-Authenticate` challenge (or 403 `insufficient_scope`) is
/// `auth_required`: the server is alive and protected. 401 without a challenge is
/// `auth_misconfigured`.
pub fn classify_status(
    status: StatusCode,
    headers: &HeaderMap,
    phase: Phase,
) -> Option<ProtocolFailure> {
    if status.is_success() {
        return None;
    }
    let challenge = headers
        .get_all(http::header::WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.trim_start().to_ascii_lowercase().starts_with("bearer"));
    let failure = match status.as_u16() {
        401 => match challenge {
            Some(c) => ProtocolFailure::new(
                FailureReason::AuthRequired,
                phase,
                format!("401 with challenge {}", truncate(c, 200)),
            ),
            None => ProtocolFailure::new(
                FailureReason::AuthMisconfigured,
                phase,
                "401 without a WWW-Authenticate challenge",
            ),
        },
        403 if challenge.is_some_and(|c| c.contains("insufficient_scope")) => {
            ProtocolFailure::new(FailureReason::AuthRequired, phase, "403 insufficient_scope")
        }
        300..=399 => {
            // Not JSON-RPC: a redirect. The prober follows it (after checking the new
            // address) when it carries a Location; the detail never shows its query.
            let location = headers
                .get(http::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let shown = location
                .as_deref()
                .map(|l| truncate(l.split(['?', '#']).next().unwrap_or(""), 200));
            let mut failure = ProtocolFailure::new(
                FailureReason::NotJsonrpc,
                phase,
                match &shown {
                    Some(to) => format!("HTTP {} redirect to {to}", status.as_u16()),
                    None => format!("HTTP {} redirect without a Location", status.as_u16()),
                },
            );
            failure.redirect = location;
            failure
        }
        500..=599 => ProtocolFailure::new(FailureReason::Http5xx, phase, format!("HTTP {status}")),
        _ => ProtocolFailure::new(FailureReason::Http4xx, phase, format!("HTTP {status}")),
    };
    Some(failure.with_status(status))
}

/// Whether a modern-era request answered with `status` and `body` means "this server
/// predates the modern protocol": 400/404/405 whose body is not a modern version error.
pub fn modern_unsupported(status: StatusCode, body: &[u8]) -> bool {
    if !matches!(status.as_u16(), 400 | 404 | 405) {
        return false;
    }
    let code = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.pointer("/error/code").and_then(Value::as_i64));
    code != Some(UNSUPPORTED_VERSION)
}

fn snippet(body: &[u8]) -> String {
    truncate(&String::from_utf8_lossy(&body[..body.len().min(120)]), 120)
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modern_requests_carry_meta() {
        let r = modern_request(7, "tools/list", Value::Null);
        assert_eq!(r["id"], 7);
        assert_eq!(
            r["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"],
            MODERN_VERSION
        );
        assert_eq!(
            r["params"]["_meta"]["io.modelcontextprotocol/clientInfo"]["name"],
            CLIENT_NAME
        );
        let init = initialize(1, LEGACY_VERSIONS[0]);
        assert_eq!(init["params"]["protocolVersion"], "2025-11-25");
        assert!(initialized().get("id").is_none());
        assert_eq!(tools_list(3, Some("c1"))["params"]["cursor"], "c1");
    }

    #[test]
    fn responses_must_be_jsonrpc_with_the_right_id() {
        let ok = br#"{"jsonrpc":"2.0","id":3,"result":{"tools":[]}}"#;
        assert!(matches!(
            parse_response(ok, 3, Phase::ToolsList),
            Ok(RpcOutcome::Result(_))
        ));
        let batch =
            br#"[{"jsonrpc":"2.0","id":2,"result":{}},{"jsonrpc":"2.0","id":3,"result":{}}]"#;
        assert!(parse_response(batch, 3, Phase::ToolsList).is_ok());
        for bad in [
            &b"<html>ok</html>"[..],
            br#"{"id":3,"result":{}}"#,
            br#"{"jsonrpc":"2.0","id":4,"result":{}}"#,
            br#"{"jsonrpc":"2.0","id":3}"#,
            br#"[1,2]"#,
        ] {
            let err = parse_response(bad, 3, Phase::Initialize).unwrap_err();
            assert_eq!(
                err.reason,
                FailureReason::NotJsonrpc,
                "{}",
                String::from_utf8_lossy(bad)
            );
            assert_eq!(err.phase, Phase::Initialize);
        }
        let error = br#"{"jsonrpc":"2.0","id":3,"error":{"code":-32601,"message":"nope"}}"#;
        let Ok(RpcOutcome::Error { code, .. }) = parse_response(error, 3, Phase::ToolsList) else {
            panic!("error outcome expected");
        };
        let failure = rpc_error(Phase::ToolsList, code, "nope");
        assert_eq!(failure.reason, FailureReason::ToolsListError);
        assert_eq!(failure.jsonrpc_error_code, Some(-32601));
        assert_eq!(
            rpc_error(Phase::Discover, UNSUPPORTED_VERSION, "x").reason,
            FailureReason::ProtocolVersionMismatch
        );
    }

    #[test]
    fn initialize_results_are_checked() {
        let good = json!({"protocolVersion": "2025-06-18", "capabilities": {}, "serverInfo": {"name": "w"}});
        let n = check_initialize(&good).unwrap();
        assert_eq!(
            (n.protocol_version.as_str(), n.server_name.as_deref()),
            ("2025-06-18", Some("w"))
        );
        let no_caps = json!({"protocolVersion": "2025-06-18"});
        assert_eq!(
            check_initialize(&no_caps).unwrap_err().reason,
            FailureReason::InitializeError
        );
        let unknown = json!({"protocolVersion": "1999-01-01", "capabilities": {}});
        assert_eq!(
            check_initialize(&unknown).unwrap_err().reason,
            FailureReason::ProtocolVersionMismatch
        );
    }

    #[test]
    fn tool_pages_follow_cursors_and_stop_loops() {
        let mut pages = ToolPages::new(10);
        assert_eq!(
            pages
                .add(&json!({"tools": [{"name": "a"}], "nextCursor": "p2"}))
                .unwrap(),
            Some("p2".into())
        );
        assert_eq!(pages.add(&json!({"tools": [{"name": "b"}]})).unwrap(), None);
        assert_eq!(pages.tools.len(), 2);

        let mut repeat = ToolPages::new(10);
        repeat
            .add(&json!({"tools": [], "nextCursor": "x"}))
            .unwrap();
        assert_eq!(
            repeat
                .add(&json!({"tools": [], "nextCursor": "x"}))
                .unwrap_err()
                .reason,
            FailureReason::ToolsListError
        );
        let mut endless = ToolPages::new(3);
        let mut i = 0;
        let err = loop {
            i += 1;
            match endless.add(&json!({"tools": [], "nextCursor": format!("c{i}")})) {
                Ok(_) => continue,
                Err(e) => break e,
            }
        };
        assert_eq!(err.reason, FailureReason::ToolsListError);
        assert!(err.detail.contains("more than 3 pages"), "{}", err.detail);
        assert!(ToolPages::new(5).add(&json!({"result": 1})).is_err());
    }

    #[test]
    fn http_statuses_map_to_the_taxonomy() {
        let mut headers = HeaderMap::new();
        assert!(classify_status(StatusCode::OK, &headers, Phase::Initialize).is_none());
        let bare = classify_status(StatusCode::UNAUTHORIZED, &headers, Phase::Initialize).unwrap();
        assert_eq!(bare.reason, FailureReason::AuthMisconfigured);
        headers.insert(
            http::header::WWW_AUTHENTICATE,
            "Bearer resource_metadata=\"https://x/.well-known/oauth-protected-resource\""
                .parse()
                .unwrap(),
        );
        let protected =
            classify_status(StatusCode::UNAUTHORIZED, &headers, Phase::Initialize).unwrap();
        assert_eq!(protected.reason, FailureReason::AuthRequired);
        assert_eq!(protected.http_status, Some(401));
        let empty = HeaderMap::new();
        assert_eq!(
            classify_status(StatusCode::BAD_GATEWAY, &empty, Phase::ToolsList)
                .unwrap()
                .reason,
            FailureReason::Http5xx
        );
        assert_eq!(
            classify_status(StatusCode::FORBIDDEN, &empty, Phase::ToolsList)
                .unwrap()
                .reason,
            FailureReason::Http4xx
        );
        let mut moved = HeaderMap::new();
        moved.insert(
            http::header::LOCATION,
            "https://other.example/mcp?token=abc".parse().unwrap(),
        );
        let redirect =
            classify_status(StatusCode::PERMANENT_REDIRECT, &moved, Phase::Discover).unwrap();
        assert_eq!(redirect.reason, FailureReason::NotJsonrpc);
        assert_eq!(redirect.http_status, Some(308));
        assert_eq!(
            redirect.redirect.as_deref(),
            Some("https://other.example/mcp?token=abc")
        );
        assert_eq!(
            redirect.detail, "HTTP 308 redirect to https://other.example/mcp",
            "the detail leaves out the query"
        );
        let nowhere = classify_status(StatusCode::FOUND, &empty, Phase::Discover).unwrap();
        assert_eq!(nowhere.redirect, None);
        assert!(nowhere.detail.contains("without a Location"));
        assert!(modern_unsupported(StatusCode::NOT_FOUND, b"not found"));
        assert!(!modern_unsupported(
            StatusCode::BAD_REQUEST,
            br#"{"jsonrpc":"2.0","id":1,"error":{"code":-32022,"message":"unsupported","data":{"supported":["2027-01-01"]}}}"#
        ));
        assert!(!modern_unsupported(StatusCode::INTERNAL_SERVER_ERROR, b""));
    }
}
