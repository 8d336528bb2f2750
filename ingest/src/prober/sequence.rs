//! The probe sequence over one MCP endpoint: the modern protocol first, then legacy
//! Streamable HTTP, then the legacy HTTP+SSE transport, each failure classified.
//!
//! The sequence is written against [`McpTransport`], so it is independent of how bytes
//! move (the prober's timed HTTP client in production, a scripted server in tests).
//!
//! - **Modern** (2026-07-28): `server/discover` then `tools/list`, each request carrying
//!   `_meta` and the `MCP-Protocol-Version` / `Mcp-Method` headers. A 400/404/405 whose
//!   body is not a modern version error, or a JSON-RPC "method not found" for
//!   `server/discover`, means the server predates it: fall back.
//! - **Streamable HTTP** (2025-03-26 … 2025-11-25): `initialize` (version negotiation) →
//!   `notifications/initialized` (202) → `tools/list` following `nextCursor` (page cap) →
//!   `DELETE` the session. A 400/404/405 to `initialize` falls back to HTTP+SSE.
//! - **HTTP+SSE** (2024-11-05): GET the event stream, read the `endpoint` event (same
//!   origin only), POST the same messages there and read the answers from the stream.
//!
//! Discovery time is reported as `initialize_ms` in the modern era (its first round trip).

use std::time::Instant;

use async_trait::async_trait;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use mcpulse_schemas::probe::{FailureReason, Phase, ProtocolEra};
use serde_json::Value;
use url::Url;

pub use super::timed_http::SseEvent;

use super::mcp::{
    self, LEGACY_VERSIONS, MODERN_VERSION, Negotiated, ProtocolFailure, RpcOutcome, ToolPages,
};

/// `Mcp-Session-Id`.
pub const SESSION_HEADER: HeaderName = HeaderName::from_static("mcp-session-id");
/// `MCP-Protocol-Version`.
pub const VERSION_HEADER: HeaderName = HeaderName::from_static("mcp-protocol-version");
/// `Mcp-Method` (modern era).
pub const METHOD_HEADER: HeaderName = HeaderName::from_static("mcp-method");

/// JSON-RPC "method not found".
const METHOD_NOT_FOUND: i64 = -32601;

/// What came back from one HTTP request.
#[derive(Clone, Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: AnswerBody,
}

/// The body of an answer, as the transport read it.
#[derive(Clone, Debug, PartialEq)]
pub enum AnswerBody {
    /// No body (e.g. 202 Accepted).
    Empty,
    /// `application/json`: the raw bytes (checked by the sequence).
    Json(bytes::Bytes),
    /// `text/event-stream`: the JSON-RPC messages in the `data` of its events, read up to
    /// the response the request waited for.
    Events(Vec<Value>),
    /// Anything else, with its content type and the start of the body.
    Other {
        content_type: String,
        snippet: String,
    },
}

/// How the sequence talks HTTP. Every call has the transport's deadline for `phase`; a
/// missed deadline is `timeout` with that phase, connection failures are classified by
/// the transport.
#[async_trait]
pub trait McpTransport: Send {
    /// POSTs `body` (a JSON-RPC message) to `url`. For an event-stream answer the
    /// transport reads events until the JSON-RPC response with `expect_id`.
    async fn post(
        &mut self,
        url: &Url,
        headers: &HeaderMap,
        body: &Value,
        expect_id: Option<u64>,
        phase: Phase,
    ) -> Result<Answer, ProtocolFailure>;

    /// DELETEs `url` (ending a legacy session).
    async fn delete(
        &mut self,
        url: &Url,
        headers: &HeaderMap,
        phase: Phase,
    ) -> Result<Answer, ProtocolFailure>;

    /// GETs `url` as an event stream (legacy HTTP+SSE); a non-2xx answer comes back as
    /// `Err(answer)` so the sequence can classify it.
    async fn open_events(
        &mut self,
        url: &Url,
        headers: &HeaderMap,
        phase: Phase,
    ) -> Result<Result<Box<dyn EventStream>, Answer>, ProtocolFailure>;
}

/// The legacy transport's long-lived GET stream.
#[async_trait]
pub trait EventStream: Send {
    /// The next event, `None` when the stream ended.
    async fn next_event(&mut self, phase: Phase) -> Result<Option<SseEvent>, ProtocolFailure>;
}

/// What the sequence found.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// The era that answered (also set when a later step of it failed).
    pub era: Option<ProtocolEra>,
    pub protocol_version: Option<String>,
    pub server_name: Option<String>,
    /// Every tool of every page, as the server sent them.
    pub tools: Option<Vec<Value>>,
    pub failure: Option<ProtocolFailure>,
    pub initialize_ms: Option<f64>,
    pub tools_list_ms: Option<f64>,
}

/// Settings of one run.
#[derive(Clone, Debug)]
pub struct SequenceConfig {
    /// Eras to try, in order (one for an explicit transport hint; the era that worked
    /// last time first, for `auto`).
    pub eras: Vec<ProtocolEra>,
    /// Most `tools/list` pages followed before `tools_list_error`.
    pub max_pages: u32,
    /// Extra headers on every request (the credential).
    pub headers: HeaderMap,
}

impl SequenceConfig {
    /// Every era, `first` (the one that worked last) ahead of the default order.
    pub fn auto(first: Option<ProtocolEra>) -> Vec<ProtocolEra> {
        let mut eras = vec![
            ProtocolEra::Modern,
            ProtocolEra::StreamableHttp,
            ProtocolEra::HttpSse,
        ];
        if let Some(first) = first {
            eras.retain(|e| *e != first);
            eras.insert(0, first);
        }
        eras
    }
}

/// Why an era attempt ended.
enum Attempt {
    Done(Outcome),
    /// The server does not speak this era: try the next one.
    Unsupported(ProtocolFailure),
}

/// Runs the sequence against `url`.
pub async fn run(transport: &mut dyn McpTransport, url: &Url, config: &SequenceConfig) -> Outcome {
    let mut last = None;
    for era in &config.eras {
        let attempt = match era {
            ProtocolEra::Modern => modern(transport, url, config).await,
            ProtocolEra::StreamableHttp => streamable(transport, url, config).await,
            ProtocolEra::HttpSse => http_sse(transport, url, config).await,
        };
        match attempt {
            Attempt::Done(outcome) => return outcome,
            Attempt::Unsupported(failure) => last = Some(failure),
        }
    }
    Outcome {
        failure: Some(last.unwrap_or_else(|| {
            ProtocolFailure::new(
                FailureReason::Http4xx,
                Phase::Initialize,
                "no protocol era to try",
            )
        })),
        ..Outcome::default()
    }
}

fn failed(era: Option<ProtocolEra>, failure: ProtocolFailure) -> Attempt {
    Attempt::Done(Outcome {
        era,
        failure: Some(failure),
        ..Outcome::default()
    })
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

/// The JSON-RPC response in an answer's body.
fn response_of(answer: &Answer, id: u64, phase: Phase) -> Result<RpcOutcome, ProtocolFailure> {
    match &answer.body {
        AnswerBody::Json(bytes) => mcp::parse_response(bytes, id, phase),
        AnswerBody::Events(messages) => {
            let message = messages
                .iter()
                .find(|m| {
                    m.get("id").is_some() && (m.get("result").is_some() || m.get("error").is_some())
                })
                .ok_or_else(|| {
                    ProtocolFailure::new(
                        FailureReason::NotJsonrpc,
                        phase,
                        "the event stream ended without a JSON-RPC response",
                    )
                })?;
            mcp::parse_message(message, id, phase)
        }
        AnswerBody::Empty => Err(ProtocolFailure::new(
            FailureReason::NotJsonrpc,
            phase,
            format!("HTTP {} with an empty body", answer.status),
        )),
        AnswerBody::Other {
            content_type,
            snippet,
        } => Err(ProtocolFailure::new(
            FailureReason::NotJsonrpc,
            phase,
            format!("HTTP {} with {content_type:?}: {snippet}", answer.status),
        )),
    }
}

fn body_bytes(answer: &Answer) -> &[u8] {
    match &answer.body {
        AnswerBody::Json(bytes) => bytes,
        AnswerBody::Other { snippet, .. } => snippet.as_bytes(),
        _ => b"",
    }
}

fn with_headers(base: &HeaderMap, extra: &[(HeaderName, &str)]) -> HeaderMap {
    let mut headers = base.clone();
    for (name, value) in extra {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name.clone(), value);
        }
    }
    headers
}

async fn modern(transport: &mut dyn McpTransport, url: &Url, config: &SequenceConfig) -> Attempt {
    let era = Some(ProtocolEra::Modern);
    let started = Instant::now();
    let headers = with_headers(
        &config.headers,
        &[
            (VERSION_HEADER, MODERN_VERSION),
            (METHOD_HEADER, "server/discover"),
        ],
    );
    let request = mcp::modern_request(1, "server/discover", Value::Null);
    let answer = match transport
        .post(url, &headers, &request, Some(1), Phase::Discover)
        .await
    {
        Ok(answer) => answer,
        Err(failure) => return failed(None, failure),
    };
    if mcp::modern_unsupported(answer.status, body_bytes(&answer)) {
        return Attempt::Unsupported(ProtocolFailure::new(
            FailureReason::Http4xx,
            Phase::Discover,
            format!("server/discover answered HTTP {}", answer.status),
        ));
    }
    if answer.status == StatusCode::BAD_REQUEST
        && let Ok(RpcOutcome::Error { code, message, .. }) =
            response_of(&answer, 1, Phase::Discover)
    {
        return failed(era, mcp::rpc_error(Phase::Discover, code, &message));
    }
    if let Some(failure) = mcp::classify_status(answer.status, &answer.headers, Phase::Discover) {
        return failed(None, failure);
    }
    let discovered = match response_of(&answer, 1, Phase::Discover) {
        Ok(RpcOutcome::Result(result)) => result,
        Ok(RpcOutcome::Error {
            code: METHOD_NOT_FOUND,
            ..
        }) => {
            return Attempt::Unsupported(ProtocolFailure::new(
                FailureReason::Http4xx,
                Phase::Discover,
                "server/discover is not a method of this server",
            ));
        }
        Ok(RpcOutcome::Error { code, message, .. }) => {
            return failed(era, mcp::rpc_error(Phase::Discover, code, &message));
        }
        Err(failure) => return failed(era, failure),
    };
    let initialize_ms = ms(started);
    let supported = discovered
        .get("supportedVersions")
        .and_then(Value::as_array)
        .map(|v| {
            v.iter()
                .filter_map(Value::as_str)
                .any(|s| s == MODERN_VERSION)
        });
    if supported == Some(false) {
        return failed(
            era,
            ProtocolFailure::new(
                FailureReason::ProtocolVersionMismatch,
                Phase::Discover,
                format!("server/discover does not list {MODERN_VERSION}"),
            ),
        );
    }
    let server_name = discovered
        .pointer("/serverInfo/name")
        .and_then(Value::as_str)
        .map(str::to_string);

    let started = Instant::now();
    let mut pages = ToolPages::new(config.max_pages);
    let mut cursor: Option<String> = None;
    let mut id = 2;
    let headers = with_headers(
        &config.headers,
        &[
            (VERSION_HEADER, MODERN_VERSION),
            (METHOD_HEADER, "tools/list"),
        ],
    );
    loop {
        let params = match &cursor {
            Some(c) => serde_json::json!({"cursor": c}),
            None => Value::Null,
        };
        let request = mcp::modern_request(id, "tools/list", params);
        let result = match list_page(transport, url, &headers, &request, id).await {
            Ok(result) => result,
            Err(failure) => {
                return Attempt::Done(Outcome {
                    era,
                    protocol_version: Some(MODERN_VERSION.into()),
                    server_name,
                    failure: Some(failure),
                    initialize_ms: Some(initialize_ms),
                    ..Outcome::default()
                });
            }
        };
        match pages.add(&result) {
            Ok(Some(next)) => cursor = Some(next),
            Ok(None) => break,
            Err(failure) => {
                return Attempt::Done(Outcome {
                    era,
                    protocol_version: Some(MODERN_VERSION.into()),
                    server_name,
                    failure: Some(failure),
                    initialize_ms: Some(initialize_ms),
                    ..Outcome::default()
                });
            }
        }
        id += 1;
    }
    Attempt::Done(Outcome {
        era,
        protocol_version: Some(MODERN_VERSION.into()),
        server_name,
        tools: Some(pages.tools),
        failure: None,
        initialize_ms: Some(initialize_ms),
        tools_list_ms: Some(ms(started)),
    })
}

/// One `tools/list` page over a request/response transport.
async fn list_page(
    transport: &mut dyn McpTransport,
    url: &Url,
    headers: &HeaderMap,
    request: &Value,
    id: u64,
) -> Result<Value, ProtocolFailure> {
    let answer = transport
        .post(url, headers, request, Some(id), Phase::ToolsList)
        .await?;
    if answer.status == StatusCode::NOT_FOUND && headers.contains_key(SESSION_HEADER) {
        return Err(ProtocolFailure::new(
            FailureReason::SessionError,
            Phase::ToolsList,
            "HTTP 404 for the session right after initialize",
        ));
    }
    if let Some(failure) = mcp::classify_status(answer.status, &answer.headers, Phase::ToolsList) {
        return Err(failure);
    }
    match response_of(&answer, id, Phase::ToolsList)? {
        RpcOutcome::Result(result) => Ok(result),
        RpcOutcome::Error { code, message, .. } => {
            Err(mcp::rpc_error(Phase::ToolsList, code, &message))
        }
    }
}

async fn streamable(
    transport: &mut dyn McpTransport,
    url: &Url,
    config: &SequenceConfig,
) -> Attempt {
    let era = Some(ProtocolEra::StreamableHttp);
    let started = Instant::now();
    let request = mcp::initialize(1, LEGACY_VERSIONS[0]);
    let answer = match transport
        .post(url, &config.headers, &request, Some(1), Phase::Initialize)
        .await
    {
        Ok(answer) => answer,
        Err(failure) => return failed(None, failure),
    };
    if matches!(answer.status.as_u16(), 400 | 404 | 405) {
        return Attempt::Unsupported(
            mcp::classify_status(answer.status, &answer.headers, Phase::Initialize)
                .expect("4xx is a failure"),
        );
    }
    if let Some(failure) = mcp::classify_status(answer.status, &answer.headers, Phase::Initialize) {
        return failed(None, failure);
    }
    let negotiated = match response_of(&answer, 1, Phase::Initialize) {
        Ok(RpcOutcome::Result(result)) => match mcp::check_initialize(&result) {
            Ok(n) => n,
            Err(failure) => return failed(era, failure),
        },
        Ok(RpcOutcome::Error { code, message, .. }) => {
            return failed(era, mcp::rpc_error(Phase::Initialize, code, &message));
        }
        Err(failure) => return failed(era, failure),
    };
    let initialize_ms = ms(started);
    let session = answer
        .headers
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut session_headers = config.headers.clone();
    if let Some(session) = &session
        && let Ok(value) = HeaderValue::from_str(session)
    {
        session_headers.insert(SESSION_HEADER, value);
    }
    if negotiated.protocol_version.as_str() >= "2025-06-18"
        && let Ok(value) = HeaderValue::from_str(&negotiated.protocol_version)
    {
        session_headers.insert(VERSION_HEADER, value);
    }
    let partial = |failure: ProtocolFailure, n: &Negotiated| {
        Attempt::Done(Outcome {
            era,
            protocol_version: Some(n.protocol_version.clone()),
            server_name: n.server_name.clone(),
            failure: Some(failure),
            initialize_ms: Some(initialize_ms),
            ..Outcome::default()
        })
    };

    match transport
        .post(
            url,
            &session_headers,
            &mcp::initialized(),
            None,
            Phase::Initialized,
        )
        .await
    {
        Ok(answer) if answer.status.is_success() => {}
        Ok(answer) if matches!(answer.status.as_u16(), 400 | 404) => {
            let failure = ProtocolFailure::new(
                FailureReason::SessionError,
                Phase::Initialized,
                format!("notifications/initialized answered HTTP {}", answer.status),
            );
            return partial(failure, &negotiated);
        }
        Ok(answer) => {
            let failure = mcp::classify_status(answer.status, &answer.headers, Phase::Initialized)
                .expect("not a success");
            return partial(failure, &negotiated);
        }
        Err(failure) => return partial(failure, &negotiated),
    }

    let started = Instant::now();
    let mut pages = ToolPages::new(config.max_pages);
    let mut cursor: Option<String> = None;
    let mut id = 2;
    let outcome = loop {
        let request = mcp::tools_list(id, cursor.as_deref());
        let result = match list_page(transport, url, &session_headers, &request, id).await {
            Ok(result) => result,
            Err(failure) => break partial(failure, &negotiated),
        };
        match pages.add(&result) {
            Ok(Some(next)) => cursor = Some(next),
            Ok(None) => {
                break Attempt::Done(Outcome {
                    era,
                    protocol_version: Some(negotiated.protocol_version.clone()),
                    server_name: negotiated.server_name.clone(),
                    tools: Some(std::mem::take(&mut pages.tools)),
                    failure: None,
                    initialize_ms: Some(initialize_ms),
                    tools_list_ms: Some(ms(started)),
                });
            }
            Err(failure) => break partial(failure, &negotiated),
        }
        id += 1;
    };
    if session.is_some() {
        // Ending the session is courtesy: 405 (not supported) and failures do not change
        // the verdict.
        let _ = transport
            .delete(url, &session_headers, Phase::SessionDelete)
            .await;
    }
    outcome
}

async fn http_sse(transport: &mut dyn McpTransport, url: &Url, config: &SequenceConfig) -> Attempt {
    let era = Some(ProtocolEra::HttpSse);
    let started = Instant::now();
    let mut stream = match transport
        .open_events(url, &config.headers, Phase::Initialize)
        .await
    {
        Ok(Ok(stream)) => stream,
        Ok(Err(answer)) => {
            return failed(
                None,
                mcp::classify_status(answer.status, &answer.headers, Phase::Initialize)
                    .unwrap_or_else(|| {
                        ProtocolFailure::new(
                            FailureReason::NotJsonrpc,
                            Phase::Initialize,
                            format!("HTTP {} but not an event stream", answer.status),
                        )
                    }),
            );
        }
        Err(failure) => return failed(None, failure),
    };
    let endpoint = loop {
        match stream.next_event(Phase::Initialize).await {
            Ok(Some(event)) if event.event == "endpoint" => break event.data,
            Ok(Some(_)) => continue,
            Ok(None) => {
                return failed(
                    era,
                    ProtocolFailure::new(
                        FailureReason::SessionError,
                        Phase::Initialize,
                        "the event stream ended before its endpoint event",
                    ),
                );
            }
            Err(failure) => return failed(era, failure),
        }
    };
    let endpoint = match url.join(endpoint.trim()) {
        Ok(e) if e.origin() == url.origin() => e,
        Ok(e) => {
            return failed(
                era,
                ProtocolFailure::new(
                    FailureReason::SessionError,
                    Phase::Initialize,
                    format!(
                        "the endpoint event points at another origin ({}); refused",
                        e.origin().ascii_serialization()
                    ),
                ),
            );
        }
        Err(e) => {
            return failed(
                era,
                ProtocolFailure::new(
                    FailureReason::SessionError,
                    Phase::Initialize,
                    format!("the endpoint event is not a URL: {e}"),
                ),
            );
        }
    };

    let negotiated = match sse_call(
        transport,
        stream.as_mut(),
        &endpoint,
        config,
        &mcp::initialize(1, "2024-11-05"),
        1,
        Phase::Initialize,
    )
    .await
    {
        Ok(RpcOutcome::Result(result)) => match mcp::check_initialize(&result) {
            Ok(n) => n,
            Err(failure) => return failed(era, failure),
        },
        Ok(RpcOutcome::Error { code, message, .. }) => {
            return failed(era, mcp::rpc_error(Phase::Initialize, code, &message));
        }
        Err(failure) => return failed(era, failure),
    };
    let initialize_ms = ms(started);
    let partial = |failure: ProtocolFailure| {
        Attempt::Done(Outcome {
            era,
            protocol_version: Some(negotiated.protocol_version.clone()),
            server_name: negotiated.server_name.clone(),
            failure: Some(failure),
            initialize_ms: Some(initialize_ms),
            ..Outcome::default()
        })
    };
    match transport
        .post(
            &endpoint,
            &config.headers,
            &mcp::initialized(),
            None,
            Phase::Initialized,
        )
        .await
    {
        Ok(answer) if answer.status.is_success() => {}
        Ok(answer) => {
            return partial(
                mcp::classify_status(answer.status, &answer.headers, Phase::Initialized)
                    .expect("not a success"),
            );
        }
        Err(failure) => return partial(failure),
    }
    let started = Instant::now();
    let mut pages = ToolPages::new(config.max_pages);
    let mut cursor: Option<String> = None;
    let mut id = 2;
    loop {
        let request = mcp::tools_list(id, cursor.as_deref());
        let result = match sse_call(
            transport,
            stream.as_mut(),
            &endpoint,
            config,
            &request,
            id,
            Phase::ToolsList,
        )
        .await
        {
            Ok(RpcOutcome::Result(result)) => result,
            Ok(RpcOutcome::Error { code, message, .. }) => {
                return partial(mcp::rpc_error(Phase::ToolsList, code, &message));
            }
            Err(failure) => return partial(failure),
        };
        match pages.add(&result) {
            Ok(Some(next)) => cursor = Some(next),
            Ok(None) => break,
            Err(failure) => return partial(failure),
        }
        id += 1;
    }
    Attempt::Done(Outcome {
        era,
        protocol_version: Some(negotiated.protocol_version.clone()),
        server_name: negotiated.server_name.clone(),
        tools: Some(pages.tools),
        failure: None,
        initialize_ms: Some(initialize_ms),
        tools_list_ms: Some(ms(started)),
    })
}

/// POSTs a request to the legacy endpoint and reads its response from the event stream.
async fn sse_call(
    transport: &mut dyn McpTransport,
    stream: &mut dyn EventStream,
    endpoint: &Url,
    config: &SequenceConfig,
    request: &Value,
    id: u64,
    phase: Phase,
) -> Result<RpcOutcome, ProtocolFailure> {
    let answer = transport
        .post(endpoint, &config.headers, request, None, phase)
        .await?;
    if let Some(failure) = mcp::classify_status(answer.status, &answer.headers, phase) {
        return Err(failure);
    }
    loop {
        let Some(event) = stream.next_event(phase).await? else {
            return Err(ProtocolFailure::new(
                FailureReason::SessionError,
                phase,
                "the event stream ended before the response",
            ));
        };
        if event.event != "message" && !event.event.is_empty() {
            continue;
        }
        let Ok(message) = serde_json::from_str::<Value>(&event.data) else {
            return Err(ProtocolFailure::new(
                FailureReason::NotJsonrpc,
                phase,
                "a message event that is not JSON",
            ));
        };
        // Server requests and notifications may come first.
        if message.get("result").is_none() && message.get("error").is_none() {
            continue;
        }
        return mcp::parse_message(&message, id, phase);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};

    use serde_json::json;

    use super::*;

    /// How the scripted server behaves.
    #[derive(Clone, Copy, Debug)]
    enum Kind {
        Modern,
        /// Legacy Streamable HTTP with `pages` pages of tools; answers in SSE when `sse`.
        Streamable {
            pages: usize,
            sse: bool,
        },
        /// Legacy HTTP+SSE only.
        Sse,
        /// 401 with a Bearer challenge everywhere.
        Protected,
        /// 200 with an HTML page.
        Html,
        /// Streamable, but `tools/list` never stops paging.
        Endless,
        /// Streamable, but answers initialize with an unknown version.
        BadVersion,
    }

    struct Fake {
        kind: Kind,
        log: Vec<String>,
        events: Arc<Mutex<VecDeque<SseEvent>>>,
    }

    impl Fake {
        fn new(kind: Kind) -> Self {
            Self {
                kind,
                log: Vec::new(),
                events: Arc::default(),
            }
        }
    }

    fn json_answer(status: u16, body: Value) -> Answer {
        Answer {
            status: StatusCode::from_u16(status).unwrap(),
            headers: HeaderMap::new(),
            body: AnswerBody::Json(body.to_string().into()),
        }
    }

    fn empty(status: u16) -> Answer {
        Answer {
            status: StatusCode::from_u16(status).unwrap(),
            headers: HeaderMap::new(),
            body: AnswerBody::Empty,
        }
    }

    fn result(id: &Value, result: Value) -> Value {
        json!({"jsonrpc": "2.0", "id": id, "result": result})
    }

    fn page(cursor: Option<&str>, pages: usize) -> Value {
        let n: usize = cursor
            .and_then(|c| c.strip_prefix('p'))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let mut page =
            json!({"tools": [{"name": format!("tool{n}"), "inputSchema": {"type": "object"}}]});
        if n + 1 < pages {
            page["nextCursor"] = json!(format!("p{}", n + 1));
        }
        page
    }

    #[async_trait]
    impl McpTransport for Fake {
        async fn post(
            &mut self,
            url: &Url,
            headers: &HeaderMap,
            body: &Value,
            _expect_id: Option<u64>,
            _phase: Phase,
        ) -> Result<Answer, ProtocolFailure> {
            let method = body["method"].as_str().unwrap_or_default().to_string();
            self.log.push(format!("POST {} {method}", url.path()));
            let id = &body["id"];
            let cursor = body.pointer("/params/cursor").and_then(Value::as_str);
            Ok(match self.kind {
                Kind::Protected => {
                    let mut a = empty(401);
                    a.headers.insert(
                        http::header::WWW_AUTHENTICATE,
                        HeaderValue::from_static("Bearer resource_metadata=\"https://as/.well-known/oauth-protected-resource\""),
                    );
                    a
                }
                Kind::Html => Answer {
                    status: StatusCode::OK,
                    headers: HeaderMap::new(),
                    body: AnswerBody::Other {
                        content_type: "text/html".into(),
                        snippet: "<html>hello</html>".into(),
                    },
                },
                Kind::Modern => match method.as_str() {
                    "server/discover" => {
                        assert_eq!(headers[&VERSION_HEADER], MODERN_VERSION);
                        assert_eq!(
                            body["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"],
                            MODERN_VERSION
                        );
                        json_answer(
                            200,
                            result(
                                id,
                                json!({"supportedVersions": [MODERN_VERSION], "serverInfo": {"name": "modern"}, "capabilities": {}}),
                            ),
                        )
                    }
                    "tools/list" => json_answer(200, result(id, page(cursor, 2))),
                    _ => json_answer(400, json!({"error": "?"})),
                },
                Kind::Sse => {
                    if url.path() == "/messages" {
                        if body.get("id").is_some() {
                            let answer = match method.as_str() {
                                "initialize" => result(
                                    id,
                                    json!({"protocolVersion": "2024-11-05", "capabilities": {}, "serverInfo": {"name": "sse"}}),
                                ),
                                _ => result(id, page(cursor, 3)),
                            };
                            let mut events = self.events.lock().unwrap();
                            events.push_back(SseEvent {
                                event: "ping".into(),
                                data: String::new(),
                                id: None,
                            });
                            events.push_back(SseEvent {
                                event: "message".into(),
                                data: answer.to_string(),
                                id: None,
                            });
                        }
                        empty(202)
                    } else {
                        empty(405)
                    }
                }
                Kind::Streamable { .. } | Kind::Endless | Kind::BadVersion => match method.as_str()
                {
                    "server/discover" => json_answer(404, json!({"error": "not found"})),
                    "initialize" => {
                        let version = if matches!(self.kind, Kind::BadVersion) {
                            "1999-01-01"
                        } else {
                            "2025-06-18"
                        };
                        let mut a = json_answer(
                            200,
                            result(
                                id,
                                json!({"protocolVersion": version, "capabilities": {"tools": {}}, "serverInfo": {"name": "legacy"}}),
                            ),
                        );
                        a.headers
                            .insert(SESSION_HEADER, HeaderValue::from_static("s-1"));
                        a
                    }
                    "notifications/initialized" => {
                        assert_eq!(headers[&SESSION_HEADER], "s-1");
                        empty(202)
                    }
                    "tools/list" => {
                        assert_eq!(headers[&SESSION_HEADER], "s-1");
                        assert_eq!(headers[&VERSION_HEADER], "2025-06-18");
                        let body = match self.kind {
                            Kind::Endless => {
                                let n = cursor.map_or(0, |c| c.len());
                                json!({"tools": [], "nextCursor": "x".repeat(n + 1)})
                            }
                            Kind::Streamable { pages, .. } => page(cursor, pages),
                            _ => unreachable!(),
                        };
                        match self.kind {
                            Kind::Streamable { sse: true, .. } => Answer {
                                status: StatusCode::OK,
                                headers: HeaderMap::new(),
                                body: AnswerBody::Events(vec![
                                    json!({"jsonrpc": "2.0", "method": "notifications/message", "params": {}}),
                                    result(id, body),
                                ]),
                            },
                            _ => json_answer(200, result(id, body)),
                        }
                    }
                    _ => empty(400),
                },
            })
        }

        async fn delete(
            &mut self,
            url: &Url,
            headers: &HeaderMap,
            _phase: Phase,
        ) -> Result<Answer, ProtocolFailure> {
            self.log.push(format!(
                "DELETE {} {}",
                url.path(),
                headers[&SESSION_HEADER].to_str().unwrap()
            ));
            Ok(empty(200))
        }

        async fn open_events(
            &mut self,
            url: &Url,
            _headers: &HeaderMap,
            _phase: Phase,
        ) -> Result<Result<Box<dyn EventStream>, Answer>, ProtocolFailure> {
            self.log.push(format!("GET {}", url.path()));
            if !matches!(self.kind, Kind::Sse) {
                return Ok(Err(empty(405)));
            }
            self.events.lock().unwrap().push_back(SseEvent {
                event: "endpoint".into(),
                data: "/messages?sessionId=abc".into(),
                id: None,
            });
            Ok(Ok(Box::new(FakeStream(self.events.clone()))))
        }
    }

    struct FakeStream(Arc<Mutex<VecDeque<SseEvent>>>);

    #[async_trait]
    impl EventStream for FakeStream {
        async fn next_event(&mut self, _phase: Phase) -> Result<Option<SseEvent>, ProtocolFailure> {
            Ok(self.0.lock().unwrap().pop_front())
        }
    }

    fn config(eras: Vec<ProtocolEra>) -> SequenceConfig {
        SequenceConfig {
            eras,
            max_pages: 20,
            headers: HeaderMap::new(),
        }
    }

    async fn probe(kind: Kind) -> (Outcome, Vec<String>) {
        let mut fake = Fake::new(kind);
        let url = Url::parse("http://mcp.test/mcp").unwrap();
        let outcome = run(&mut fake, &url, &config(SequenceConfig::auto(None))).await;
        (outcome, fake.log)
    }

    fn names(outcome: &Outcome) -> Vec<String> {
        outcome
            .tools
            .as_ref()
            .expect("tools")
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_string())
            .collect()
    }

    #[tokio::test]
    async fn modern_servers_answer_discover_and_tools() {
        let (outcome, log) = probe(Kind::Modern).await;
        assert!(outcome.failure.is_none(), "{:?}", outcome.failure);
        assert_eq!(outcome.era, Some(ProtocolEra::Modern));
        assert_eq!(outcome.protocol_version.as_deref(), Some(MODERN_VERSION));
        assert_eq!(names(&outcome), ["tool0", "tool1"]);
        assert!(outcome.initialize_ms.is_some() && outcome.tools_list_ms.is_some());
        assert_eq!(
            log,
            [
                "POST /mcp server/discover",
                "POST /mcp tools/list",
                "POST /mcp tools/list"
            ]
        );
    }

    #[tokio::test]
    async fn legacy_streamable_falls_back_pages_and_ends_the_session() {
        for sse in [false, true] {
            let (outcome, log) = probe(Kind::Streamable { pages: 3, sse }).await;
            assert!(outcome.failure.is_none(), "{:?}", outcome.failure);
            assert_eq!(outcome.era, Some(ProtocolEra::StreamableHttp));
            assert_eq!(outcome.protocol_version.as_deref(), Some("2025-06-18"));
            assert_eq!(outcome.server_name.as_deref(), Some("legacy"));
            assert_eq!(names(&outcome), ["tool0", "tool1", "tool2"]);
            assert_eq!(
                log,
                [
                    "POST /mcp server/discover",
                    "POST /mcp initialize",
                    "POST /mcp notifications/initialized",
                    "POST /mcp tools/list",
                    "POST /mcp tools/list",
                    "POST /mcp tools/list",
                    "DELETE /mcp s-1",
                ]
            );
        }
    }

    #[tokio::test]
    async fn legacy_sse_reads_answers_from_the_stream() {
        let (outcome, log) = probe(Kind::Sse).await;
        assert!(outcome.failure.is_none(), "{:?}", outcome.failure);
        assert_eq!(outcome.era, Some(ProtocolEra::HttpSse));
        assert_eq!(outcome.protocol_version.as_deref(), Some("2024-11-05"));
        assert_eq!(names(&outcome), ["tool0", "tool1", "tool2"]);
        assert_eq!(
            &log[..3],
            [
                "POST /mcp server/discover",
                "POST /mcp initialize",
                "GET /mcp"
            ]
        );
        assert_eq!(log[3], "POST /messages initialize");
    }

    #[tokio::test]
    async fn failures_are_classified() {
        let (outcome, log) = probe(Kind::Protected).await;
        assert_eq!(outcome.failure.unwrap().reason, FailureReason::AuthRequired);
        assert_eq!(
            log.len(),
            1,
            "a protected server is not retried in other eras: {log:?}"
        );

        let (outcome, _) = probe(Kind::Html).await;
        let failure = outcome.failure.unwrap();
        assert_eq!(
            (failure.reason, failure.phase),
            (FailureReason::NotJsonrpc, Phase::Discover)
        );

        let (outcome, log) = probe(Kind::Endless).await;
        let failure = outcome.failure.unwrap();
        assert_eq!(failure.reason, FailureReason::ToolsListError);
        assert_eq!(outcome.era, Some(ProtocolEra::StreamableHttp));
        assert!(
            log.last().unwrap().starts_with("DELETE"),
            "the session is still ended: {log:?}"
        );

        let (outcome, _) = probe(Kind::BadVersion).await;
        assert_eq!(
            outcome.failure.unwrap().reason,
            FailureReason::ProtocolVersionMismatch
        );
    }

    #[tokio::test]
    async fn the_remembered_era_goes_first_and_a_hint_pins_one() {
        let mut fake = Fake::new(Kind::Streamable {
            pages: 1,
            sse: false,
        });
        let url = Url::parse("http://mcp.test/mcp").unwrap();
        let remembered = config(SequenceConfig::auto(Some(ProtocolEra::StreamableHttp)));
        let outcome = run(&mut fake, &url, &remembered).await;
        assert_eq!(outcome.era, Some(ProtocolEra::StreamableHttp));
        assert_eq!(
            fake.log[0], "POST /mcp initialize",
            "no modern attempt first"
        );

        let mut fake = Fake::new(Kind::Streamable {
            pages: 1,
            sse: false,
        });
        let outcome = run(&mut fake, &url, &config(vec![ProtocolEra::Modern])).await;
        assert!(
            outcome.failure.is_some(),
            "a modern-only probe of a legacy server fails"
        );
        assert_eq!(fake.log.len(), 1);
    }
}
