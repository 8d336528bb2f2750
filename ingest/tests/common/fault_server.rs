//! An MCP server on loopback that behaves well or fails on demand, one behaviour per
//! path: `http://127.0.0.1:PORT/{mode}/mcp`.
//!
//! | mode | behaviour |
//! |---|---|
//! | `good` | legacy Streamable HTTP: initialize (session), initialized (202), two pages of tools, DELETE |
//! | `good-sse` | the same, answering each request with an event stream |
//! | `modern` | the 2026-07-28 protocol: `server/discover`, two pages of tools |
//! | `sse` | the legacy HTTP+SSE transport (GET `/sse/mcp`, POST `/sse/messages`) |
//! | `500` | HTTP 500 to everything |
//! | `html` | 200 with an HTML page |
//! | `wrong-id` | initialize answered with another id |
//! | `bad-version` | initialize answered with an unknown version; discover with -32022 |
//! | `401` | 401 with a Bearer challenge |
//! | `401-bare` | 401 without `WWW-Authenticate` |
//! | `endless` | `tools/list` never stops paging |
//! | `session-404` | `tools/list` answers 404 for the session |
//! | `hang-initialize` | never answers initialize |
//! | `hang-tools` | never answers `tools/list` |
//! | `redirect` | 307 to `/good/mcp` on the same server |
//! | `redirect-loop` | 307 to itself, forever |
//! | `redirect-metadata` | 307 to the cloud metadata address `169.254.169.254` |
//! | `redirect-to?to=URL` | 307 to `URL` |
//!
//! [`FaultServer::start_tls`] serves the same paths over TLS with a given certificate.
//! Every request's `Authorization` header is recorded ([`FaultServer::authorizations`]).
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// `(mode, Authorization header)` of a request.
pub type SeenAuthorization = (String, Option<String>);

#[derive(Clone, Default)]
struct Shared {
    /// Open legacy SSE streams by session id.
    streams: Arc<Mutex<HashMap<String, mpsc::UnboundedSender<String>>>>,
    next_session: Arc<std::sync::atomic::AtomicU64>,
    /// `(mode, Authorization)` of every JSON-RPC request.
    authorizations: Arc<Mutex<Vec<SeenAuthorization>>>,
}

/// A running fault server; stops when dropped.
pub struct FaultServer {
    pub addr: SocketAddr,
    https: bool,
    shared: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultServer {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Shared::default();
        let app = router(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            addr,
            https: false,
            shared,
            task,
        }
    }

    /// The same server over TLS with the certificate chain `certs` and its PKCS#8 `key`;
    /// its URLs name `localhost`.
    pub async fn start_tls(
        certs: Vec<rustls::pki_types::CertificateDer<'static>>,
        key: Vec<u8>,
    ) -> Self {
        use hyper_util::rt::TokioIo;
        use hyper_util::service::TowerToHyperService;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(key.into());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Shared::default();
        let app = router(shared.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (acceptor, app) = (acceptor.clone(), app.clone());
                tokio::spawn(async move {
                    // A client refusing the certificate ends the handshake: nothing to serve.
                    if let Ok(tls) = acceptor.accept(stream).await {
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(tls), TowerToHyperService::new(app))
                            .await;
                    }
                });
            }
        });
        Self {
            addr,
            https: true,
            shared,
            task,
        }
    }

    /// `(mode, Authorization header)` of every JSON-RPC request so far.
    pub fn authorizations(&self) -> Vec<SeenAuthorization> {
        self.shared.authorizations.lock().unwrap().clone()
    }

    /// The MCP endpoint of `mode`.
    pub fn url(&self, mode: &str) -> String {
        if self.https {
            format!("https://localhost:{}/{mode}/mcp", self.addr.port())
        } else {
            format!("http://{}/{mode}/mcp", self.addr)
        }
    }
}

fn router(shared: Shared) -> Router {
    Router::new()
        .route("/sse/mcp", get(sse_stream).post(method_not_allowed))
        .route("/sse/messages", post(sse_message))
        .route(
            "/{mode}/mcp",
            post(rpc).delete(end_session).get(method_not_allowed),
        )
        .with_state(shared)
}

fn redirect(to: &str) -> Response {
    let mut response = StatusCode::TEMPORARY_REDIRECT.into_response();
    response
        .headers_mut()
        .insert(header::LOCATION, HeaderValue::from_str(to).unwrap());
    response
}

fn result(id: &Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

fn error(id: &Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

fn json_response(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn sse_response(messages: &[Value]) -> Response {
    let mut text = String::new();
    for m in messages {
        text.push_str(&format!("event: message\ndata: {m}\n\n"));
    }
    ([(header::CONTENT_TYPE, "text/event-stream")], text).into_response()
}

fn tools_page(cursor: Option<&str>, pages: usize) -> Value {
    let n: usize = cursor
        .and_then(|c| c.strip_prefix('p'))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let mut page = json!({"tools": [{
        "name": format!("tool{n}"),
        "description": "a tool",
        "inputSchema": {"type": "object", "properties": {"x": {"type": "number"}}},
    }]});
    if n + 1 < pages {
        page["nextCursor"] = json!(format!("p{}", n + 1));
    }
    page
}

async fn method_not_allowed() -> StatusCode {
    StatusCode::METHOD_NOT_ALLOWED
}

async fn end_session() -> StatusCode {
    StatusCode::OK
}

async fn hang() -> Response {
    tokio::time::sleep(Duration::from_secs(3600)).await;
    StatusCode::OK.into_response()
}

async fn rpc(
    State(shared): State<Shared>,
    Path(mode): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    shared.authorizations.lock().unwrap().push((
        mode.clone(),
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
    ));
    match mode.as_str() {
        "redirect" => return redirect("/good/mcp"),
        "redirect-loop" => return redirect("/redirect-loop/mcp"),
        "redirect-metadata" => return redirect("http://169.254.169.254/latest/meta-data/"),
        "redirect-to" => return redirect(query.get("to").map(String::as_str).unwrap_or("/")),
        _ => {}
    }
    let Ok(message) = serde_json::from_slice::<Value>(&body) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let method = message["method"].as_str().unwrap_or_default().to_string();
    let id = message["id"].clone();
    let cursor = message
        .pointer("/params/cursor")
        .and_then(Value::as_str)
        .map(str::to_string);
    match mode.as_str() {
        "500" => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        "html" => {
            return (
                [(header::CONTENT_TYPE, "text/html")],
                "<html><body>It works!</body></html>",
            )
                .into_response();
        }
        "401" => {
            let mut r = StatusCode::UNAUTHORIZED.into_response();
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer resource_metadata=\"http://127.0.0.1/.well-known/oauth-protected-resource\""),
            );
            return r;
        }
        "401-bare" => return StatusCode::UNAUTHORIZED.into_response(),
        "modern" => {
            return match method.as_str() {
                "server/discover" => json_response(
                    StatusCode::OK,
                    result(
                        &id,
                        json!({"supportedVersions": ["2026-07-28"], "capabilities": {"tools": {}}, "serverInfo": {"name": "fault-modern", "version": "1"}}),
                    ),
                ),
                "tools/list" => json_response(
                    StatusCode::OK,
                    result(&id, tools_page(cursor.as_deref(), 2)),
                ),
                _ => json_response(
                    StatusCode::BAD_REQUEST,
                    error(&id, -32601, "method not found"),
                ),
            };
        }
        _ => {}
    }
    // Legacy Streamable HTTP, with per-mode faults.
    match method.as_str() {
        "server/discover" => {
            if mode == "bad-version" {
                let mut e = error(&id, -32022, "unsupported protocol version");
                e["error"]["data"] = json!({"supported": ["2027-01-01"]});
                return json_response(StatusCode::BAD_REQUEST, e);
            }
            // What the SDKs answer a request before initialize.
            json_response(
                StatusCode::BAD_REQUEST,
                error(
                    &Value::Null,
                    -32000,
                    "Bad Request: No valid session ID provided",
                ),
            )
        }
        "initialize" => {
            if mode == "hang-initialize" {
                return hang().await;
            }
            let answer_id = if mode == "wrong-id" {
                json!(999)
            } else {
                id.clone()
            };
            let version = if mode == "bad-version" {
                "1999-01-01".to_string()
            } else {
                message
                    .pointer("/params/protocolVersion")
                    .and_then(Value::as_str)
                    .unwrap_or("2025-06-18")
                    .to_string()
            };
            let body = result(
                &answer_id,
                json!({"protocolVersion": version, "capabilities": {"tools": {}}, "serverInfo": {"name": "fault", "version": "1"}}),
            );
            let mut response = if mode == "good-sse" {
                sse_response(&[body])
            } else {
                json_response(StatusCode::OK, body)
            };
            response
                .headers_mut()
                .insert("mcp-session-id", HeaderValue::from_static("session-1"));
            response
        }
        "notifications/initialized" => StatusCode::ACCEPTED.into_response(),
        "tools/list" => {
            if headers.get("mcp-session-id").is_none() {
                return json_response(
                    StatusCode::BAD_REQUEST,
                    error(&Value::Null, -32000, "Bad Request: missing session"),
                );
            }
            match mode.as_str() {
                "hang-tools" => hang().await,
                "session-404" => StatusCode::NOT_FOUND.into_response(),
                "endless" => {
                    let n: usize = cursor
                        .as_deref()
                        .and_then(|c| c.strip_prefix('p'))
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(0);
                    json_response(
                        StatusCode::OK,
                        result(
                            &id,
                            json!({"tools": [], "nextCursor": format!("p{}", n + 1)}),
                        ),
                    )
                }
                "good-sse" => sse_response(&[
                    json!({"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": "listing"}}),
                    result(&id, tools_page(cursor.as_deref(), 2)),
                ]),
                _ => json_response(
                    StatusCode::OK,
                    result(&id, tools_page(cursor.as_deref(), 2)),
                ),
            }
        }
        _ => json_response(StatusCode::OK, error(&id, -32601, "method not found")),
    }
}

async fn sse_stream(State(shared): State<Shared>) -> Response {
    let session = shared
        .next_session
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        .to_string();
    let (tx, rx) = mpsc::unbounded_channel::<String>();
    let _ = tx.send(format!(
        "event: endpoint\ndata: /sse/messages?sessionId={session}\n\n"
    ));
    shared.streams.lock().unwrap().insert(session, tx);
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|chunk| (Ok::<_, std::io::Error>(Bytes::from(chunk)), rx))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .body(Body::from_stream(stream))
        .unwrap()
}

async fn sse_message(
    State(shared): State<Shared>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> StatusCode {
    let Some(tx) = query
        .get("sessionId")
        .and_then(|s| shared.streams.lock().unwrap().get(s).cloned())
    else {
        return StatusCode::NOT_FOUND;
    };
    let Ok(message) = serde_json::from_slice::<Value>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    let id = message["id"].clone();
    let cursor = message.pointer("/params/cursor").and_then(Value::as_str);
    let answer = match message["method"].as_str().unwrap_or_default() {
        "initialize" => result(
            &id,
            json!({"protocolVersion": "2024-11-05", "capabilities": {"tools": {}}, "serverInfo": {"name": "fault-sse", "version": "1"}}),
        ),
        "tools/list" => result(&id, tools_page(cursor, 3)),
        _ => return StatusCode::ACCEPTED,
    };
    let _ = tx.send(format!("event: message\ndata: {answer}\n\n"));
    StatusCode::ACCEPTED
}
