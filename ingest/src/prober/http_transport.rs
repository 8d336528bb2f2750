//! [`McpTransport`] over the prober's timed HTTP client: one reusable connection for
//! requests, a second one for the legacy transport's long-lived event stream, every
//! exchange bounded by the probe's deadline, and the first connection's phase timings
//! and certificate expiry kept for the result.

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::header::{ACCEPT, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode};
use mcpulse_schemas::probe::{Phase, PhaseTimings};
use serde_json::Value;
use tokio::time::Instant;
use url::Url;

use super::mcp::ProtocolFailure;
use super::sequence::{Answer, AnswerBody, EventStream, McpTransport, SseEvent};
use super::timed_http::{
    self, Connection, Deadlines, Endpoint, HttpFailure, SseStream, TlsSettings,
};

/// Largest JSON body read.
const MAX_BODY: usize = 4 << 20;
/// Largest single event read from an event stream.
const MAX_EVENT: usize = 4 << 20;
/// Most events read from one POST's event stream while looking for its response.
const MAX_EVENTS: usize = 1000;

/// HTTP for one probe of one endpoint.
pub struct HttpTransport {
    endpoint: Endpoint,
    tls: TlsSettings,
    /// Every exchange of the probe must end before this.
    deadline: Instant,
    connection: Option<Connection>,
    phases: PhaseTimings,
    tls_expires_at: Option<DateTime<Utc>>,
}

impl HttpTransport {
    pub fn new(endpoint: Endpoint, tls: TlsSettings, deadline: Instant) -> Self {
        Self {
            endpoint,
            tls,
            deadline,
            connection: None,
            phases: PhaseTimings::default(),
            tls_expires_at: None,
        }
    }

    /// DNS, connect, TLS and first-byte timings of the probe's first connection.
    pub fn phases(&self) -> &PhaseTimings {
        &self.phases
    }

    /// Expiry of the server's certificate (https only).
    pub fn tls_expires_at(&self) -> Option<DateTime<Utc>> {
        self.tls_expires_at
    }

    fn deadlines(&self) -> Deadlines {
        let left = self.deadline.saturating_duration_since(Instant::now());
        Deadlines {
            connect: left,
            tls: left,
        }
    }

    async fn open(&mut self) -> Result<Connection, ProtocolFailure> {
        let connection = timed_http::connect(&self.endpoint, self.deadlines(), &self.tls)
            .await
            .map_err(failure)?;
        if self.tls_expires_at.is_none() {
            self.tls_expires_at = connection.info().tls_expires_at;
        }
        Ok(connection)
    }

    /// Opens the request connection (again) when needed.
    async fn ensure_connection(&mut self) -> Result<(), ProtocolFailure> {
        if self.connection.as_ref().is_none_or(Connection::is_closed) {
            let connection = self.open().await?;
            self.connection = Some(connection);
        }
        Ok(())
    }

    fn request(
        url: &Url,
        method: Method,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<Request<Bytes>, ProtocolFailure> {
        let mut request = Request::builder()
            .method(method)
            .uri(path_and_query(url))
            .body(body)
            .map_err(|e| {
                ProtocolFailure::new(
                    mcpulse_schemas::probe::FailureReason::NotJsonrpc,
                    Phase::Initialize,
                    format!("bad request: {e}"),
                )
            })?;
        request.headers_mut().extend(headers.clone());
        Ok(request)
    }

    async fn exchange(
        &mut self,
        request: Request<Bytes>,
        expect_id: Option<u64>,
        phase: Phase,
    ) -> Result<Answer, ProtocolFailure> {
        let deadline = self.deadline;
        self.ensure_connection().await?;
        let connection = self.connection.as_mut().expect("opened above");
        let sent = connection.send(request, phase, deadline).await;
        connection.record_phases(&mut self.phases);
        let response = sent.map_err(failure)?;
        let status = response.status;
        let headers = response.headers.clone();
        let body = if response.is_event_stream() {
            let mut events = response.into_sse(MAX_EVENT);
            let messages = read_messages(&mut events, expect_id, deadline).await?;
            // The stream may stay open: this connection cannot carry another request.
            self.connection = None;
            AnswerBody::Events(messages)
        } else {
            let media_type = response.media_type();
            let bytes = response
                .read_all(MAX_BODY, deadline)
                .await
                .map_err(failure)?;
            match media_type.as_deref() {
                _ if bytes.is_empty() => AnswerBody::Empty,
                Some("application/json") => AnswerBody::Json(bytes),
                other => AnswerBody::Other {
                    content_type: other.unwrap_or("none").to_string(),
                    snippet: String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned(),
                },
            }
        };
        Ok(Answer {
            status,
            headers,
            body,
        })
    }
}

fn failure(e: HttpFailure) -> ProtocolFailure {
    ProtocolFailure::new(e.reason, e.phase, e.detail)
}

fn path_and_query(url: &Url) -> String {
    match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    }
}

/// Reads JSON-RPC messages from an event stream until the response with `expect_id`.
async fn read_messages(
    events: &mut SseStream,
    expect_id: Option<u64>,
    deadline: Instant,
) -> Result<Vec<Value>, ProtocolFailure> {
    let mut messages = Vec::new();
    while messages.len() < MAX_EVENTS {
        let Some(event) = events.next_event(deadline).await.map_err(failure)? else {
            break;
        };
        if event.event != "message" {
            continue;
        }
        let Ok(message) = serde_json::from_str::<Value>(&event.data) else {
            messages.push(Value::String(event.data));
            continue;
        };
        let is_response = message
            .get("id")
            .and_then(Value::as_u64)
            .is_some_and(|id| Some(id) == expect_id)
            && (message.get("result").is_some() || message.get("error").is_some());
        messages.push(message);
        if is_response {
            break;
        }
    }
    Ok(messages)
}

#[async_trait]
impl McpTransport for HttpTransport {
    async fn post(
        &mut self,
        url: &Url,
        headers: &HeaderMap,
        body: &Value,
        expect_id: Option<u64>,
        phase: Phase,
    ) -> Result<Answer, ProtocolFailure> {
        let mut headers = headers.clone();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(
            ACCEPT,
            HeaderValue::from_static("application/json, text/event-stream"),
        );
        let request = Self::request(url, Method::POST, &headers, Bytes::from(body.to_string()))?;
        self.exchange(request, expect_id, phase).await
    }

    async fn delete(
        &mut self,
        url: &Url,
        headers: &HeaderMap,
        phase: Phase,
    ) -> Result<Answer, ProtocolFailure> {
        let request = Self::request(url, Method::DELETE, headers, Bytes::new())?;
        self.exchange(request, None, phase).await
    }

    async fn open_events(
        &mut self,
        url: &Url,
        headers: &HeaderMap,
        phase: Phase,
    ) -> Result<Result<Box<dyn EventStream>, Answer>, ProtocolFailure> {
        let mut headers = headers.clone();
        headers.insert(ACCEPT, HeaderValue::from_static("text/event-stream"));
        let request = Self::request(url, Method::GET, &headers, Bytes::new())?;
        // The stream holds its connection for the whole exchange: a connection of its own.
        let mut connection = self.open().await?;
        let response = connection
            .send(request, phase, self.deadline)
            .await
            .map_err(failure)?;
        connection.record_phases(&mut self.phases);
        if response.status.is_success() && response.is_event_stream() {
            return Ok(Ok(Box::new(Events {
                stream: response.into_sse(MAX_EVENT),
                deadline: self.deadline,
            })));
        }
        let status: StatusCode = response.status;
        let headers = response.headers.clone();
        let media_type = response.media_type().unwrap_or_else(|| "none".into());
        let bytes = response
            .read_all(MAX_BODY, self.deadline)
            .await
            .map_err(failure)?;
        Ok(Err(Answer {
            status,
            headers,
            body: AnswerBody::Other {
                content_type: media_type,
                snippet: String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned(),
            },
        }))
    }
}

struct Events {
    stream: SseStream,
    deadline: Instant,
}

#[async_trait]
impl EventStream for Events {
    async fn next_event(&mut self, _phase: Phase) -> Result<Option<SseEvent>, ProtocolFailure> {
        self.stream.next_event(self.deadline).await.map_err(failure)
    }
}
