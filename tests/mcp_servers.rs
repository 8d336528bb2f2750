//! Smoke tests of the MCP test servers the prober's tests run (tests/common/mcp_servers.rs):
//! each starts on loopback and completes a real MCP handshake over plain HTTP.

mod common;

use common::mcp_servers::{
    McpServer, PROTOCOL_VERSION, PythonOptions, ServerOptions, SseReader, Transport,
    initialize_request, jsonrpc_response,
};
use serde_json::{Value, json};

const ACCEPT_BOTH: &str = "application/json, text/event-stream";

fn post(
    client: &reqwest::blocking::Client,
    url: &str,
    session: Option<&str>,
    after_initialize: bool,
    body: &Value,
) -> reqwest::blocking::Response {
    let mut req = client
        .post(url)
        .header("Accept", ACCEPT_BOTH)
        .header("Content-Type", "application/json")
        .body(body.to_string());
    if let Some(s) = session {
        req = req.header("Mcp-Session-Id", s);
    }
    if after_initialize {
        req = req.header("MCP-Protocol-Version", PROTOCOL_VERSION);
    }
    req.send().unwrap_or_else(|e| panic!("POST {url}: {e}"))
}

fn assert_initialize_result(server: &McpServer, msg: &Value) {
    assert_eq!(msg["jsonrpc"], "2.0", "{}: {msg}", server.name());
    assert_eq!(msg["id"], 1, "{}: {msg}", server.name());
    let result = &msg["result"];
    assert_eq!(
        result["protocolVersion"],
        PROTOCOL_VERSION,
        "{}: {msg}\n{}",
        server.name(),
        server.log_tail()
    );
    assert!(
        result["capabilities"].is_object(),
        "{}: {msg}",
        server.name()
    );
    assert!(
        result["serverInfo"]["name"].is_string(),
        "{}: {msg}",
        server.name()
    );
}

/// The legacy Streamable HTTP handshake: initialize, notifications/initialized,
/// tools/list, DELETE. Returns the session id (if the server issued one) and the tools.
fn streamable_handshake(server: &McpServer) -> (Option<String>, Vec<Value>) {
    let client = common::http();
    let resp = post(&client, server.url(), None, false, &initialize_request());
    assert_eq!(
        resp.status(),
        200,
        "{}: initialize\n{}",
        server.name(),
        server.log_tail()
    );
    let session = resp
        .headers()
        .get("mcp-session-id")
        .map(|v| v.to_str().unwrap().to_string());
    let msg = jsonrpc_response(resp, 1);
    assert_initialize_result(server, &msg);

    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let resp = post(
        &client,
        server.url(),
        session.as_deref(),
        true,
        &initialized,
    );
    assert_eq!(
        resp.status(),
        202,
        "{}: notifications/initialized",
        server.name()
    );

    let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}});
    let resp = post(&client, server.url(), session.as_deref(), true, &list);
    assert_eq!(resp.status(), 200, "{}: tools/list", server.name());
    let msg = jsonrpc_response(resp, 2);
    let tools = msg["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("{}: tools/list without tools: {msg}", server.name()))
        .clone();

    if let Some(s) = &session {
        let resp = client
            .delete(server.url())
            .header("Mcp-Session-Id", s)
            .header("MCP-Protocol-Version", PROTOCOL_VERSION)
            .send()
            .unwrap();
        assert!(
            resp.status().is_success() || resp.status() == 405,
            "{}: DELETE answered {}",
            server.name(),
            resp.status()
        );
    }
    (session, tools)
}

fn tool_names(tools: &[Value]) -> Vec<String> {
    let mut names: Vec<String> = tools
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

/// The 2024-11-05 HTTP+SSE handshake: GET the stream, read the `endpoint` event, POST
/// initialize there (202), read the answer as a `message` event on the stream.
fn sse_handshake(server: &McpServer) -> String {
    let client = common::http();
    let resp = client
        .get(server.url())
        .header("Accept", "text/event-stream")
        .send()
        .unwrap_or_else(|e| panic!("GET {}: {e}", server.url()));
    assert_eq!(resp.status(), 200, "{}: GET stream", server.name());
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(
        content_type.starts_with("text/event-stream"),
        "{}: content-type {content_type}",
        server.name()
    );
    let mut events = SseReader::new(resp);
    let first = events
        .next_event()
        .unwrap()
        .unwrap_or_else(|| panic!("{}: stream ended before an event", server.name()));
    assert_eq!(first.event, "endpoint", "{}: {first:?}", server.name());
    let endpoint = if first.data.starts_with("http") {
        first.data.clone()
    } else {
        format!("{}{}", server.origin(), first.data)
    };

    let resp = post(&client, &endpoint, None, false, &initialize_request());
    assert!(
        resp.status() == 202 || resp.status() == 200,
        "{}: POST initialize to {endpoint} answered {}",
        server.name(),
        resp.status()
    );
    loop {
        let ev = events.next_event().unwrap().unwrap_or_else(|| {
            panic!(
                "{}: stream ended before the initialize answer",
                server.name()
            )
        });
        if ev.event != "message" || ev.data.trim().is_empty() {
            continue;
        }
        let msg: Value = serde_json::from_str(&ev.data).unwrap();
        if msg["id"] == 1 {
            assert_initialize_result(server, &msg);
            return endpoint;
        }
    }
}

#[test]
fn python_streamable_http_session_sse_answers() {
    let server = McpServer::python(Transport::StreamableHttp, PythonOptions::default());
    assert!(server.url().ends_with("/mcp"), "{}", server.url());
    assert_eq!(server.addr().ip().to_string(), "127.0.0.1");
    let (session, tools) = streamable_handshake(&server);
    assert!(session.is_some(), "session mode issues Mcp-Session-Id");
    assert_eq!(tool_names(&tools), ["add", "echo", "weather"]);
    let add = tools.iter().find(|t| t["name"] == "add").unwrap();
    assert_eq!(add["inputSchema"]["required"], json!(["a", "b"]));
}

#[test]
fn python_streamable_http_stateless_json_answers() {
    let server = McpServer::python(
        Transport::StreamableHttp,
        PythonOptions {
            stateless: true,
            json_response: true,
        },
    );
    // The answer to initialize is plain JSON.
    let resp = post(
        &common::http(),
        server.url(),
        None,
        false,
        &initialize_request(),
    );
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    assert_initialize_result(&server, &jsonrpc_response(resp, 1));
    let (session, tools) = streamable_handshake(&server);
    assert_eq!(session, None, "stateless mode issues no session id");
    assert_eq!(tool_names(&tools), ["add", "echo", "weather"]);
}

#[test]
fn python_sse() {
    let server = McpServer::python(Transport::Sse, PythonOptions::default());
    assert!(server.url().ends_with("/sse"), "{}", server.url());
    let endpoint = sse_handshake(&server);
    assert!(endpoint.contains("/messages/?session_id="), "{endpoint}");
}

#[test]
fn everything_streamable_http() {
    let server = McpServer::everything(Transport::StreamableHttp);
    assert!(server.url().ends_with("/mcp"), "{}", server.url());
    let (session, tools) = streamable_handshake(&server);
    assert!(session.is_some(), "server-everything runs in session mode");
    let names = tool_names(&tools);
    assert!(names.iter().any(|n| n == "echo"), "{names:?}");
}

#[test]
fn everything_sse() {
    let server = McpServer::everything(Transport::Sse);
    let endpoint = sse_handshake(&server);
    assert!(endpoint.contains("/message?sessionId="), "{endpoint}");
}

#[test]
fn rmcp_session_mode() {
    let server = McpServer::rmcp(true);
    assert!(server.url().ends_with("/mcp"), "{}", server.url());
    let (session, tools) = streamable_handshake(&server);
    assert!(session.is_some(), "session mode issues Mcp-Session-Id");
    assert_eq!(tool_names(&tools), ["add", "echo", "weather"]);
    // A request without the session id is refused.
    let list = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/list"});
    let resp = post(&common::http(), server.url(), None, true, &list);
    assert!(resp.status().is_client_error(), "{}", resp.status());
}

#[test]
fn rmcp_stateless() {
    let server = McpServer::rmcp(false);
    let (session, tools) = streamable_handshake(&server);
    assert_eq!(session, None, "stateless mode issues no session id");
    assert_eq!(tool_names(&tools), ["add", "echo", "weather"]);
}

#[test]
fn rmcp_stateless_json_answers() {
    let server = McpServer::rmcp_with(ServerOptions {
        stateless: true,
        json_response: true,
    });
    let resp = post(
        &common::http(),
        server.url(),
        None,
        false,
        &initialize_request(),
    );
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    assert_initialize_result(&server, &jsonrpc_response(resp, 1));
}

#[test]
fn killed_server_refuses_connections() {
    let mut server = McpServer::python(
        Transport::StreamableHttp,
        PythonOptions {
            stateless: true,
            json_response: true,
        },
    );
    let addr = server.addr();
    server.kill();
    assert!(
        std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(1)).is_err(),
        "{addr} still accepts connections after kill"
    );
}
