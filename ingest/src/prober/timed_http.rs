//! A small HTTP/1.1 client for probes that times every phase and classifies failures.
//!
//! reqwest cannot report DNS/connect/TLS/first-byte timings, so probes use this instead:
//! the caller resolves and policy-checks the addresses (see `target_guard`), then
//! [`connect`] opens TCP (timed as `connect_ms`), does the TLS handshake for https (timed
//! as `tls_ms`, capturing the leaf certificate's `notAfter`), and wraps the stream in a
//! hyper HTTP/1 client connection that carries several requests in turn (initialize →
//! initialized → tools/list → DELETE). [`Connection::send`] records the time to the
//! response head (`first_byte_ms` for the first request) and hands back a
//! [`TimedResponse`] whose body is read either whole ([`TimedResponse::read_all`]) or as a
//! `text/event-stream` ([`TimedResponse::into_sse`]). A response owns its body, so an SSE
//! stream keeps going while other requests are sent over a second `Connection` (the legacy
//! HTTP+SSE transport).
//!
//! Failure mapping ([`HttpFailure`]):
//! - no address, ECONNREFUSED on every address → `tcp_refused` (phase `connect`);
//! - connect deadline or another connect error (unreachable, …) → `connect_timeout`;
//! - TLS handshake, chain or hostname failure → `tls_error` (phase `tls`), with a detail
//!   naming the cause (expired, unknown issuer, name mismatch, …);
//! - TLS handshake deadline → `timeout` with phase `tls` (a phase deadline is a timeout);
//! - deadline waiting for a response head or body → `timeout` with the caller's phase;
//! - connection closed/reset or a malformed HTTP response or body, a body over its limit,
//!   an oversized SSE event → `not_jsonrpc` with the caller's phase (the server did not
//!   answer with a usable HTTP message; the probe sequence may refine this).
//!
//! Details never contain request headers (credentials are never echoed).

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use chrono::{DateTime, NaiveDate, Utc};
use http::header::{HOST, HeaderMap, HeaderValue};
use http::{Request, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use mcpulse_schemas::probe::{FailureReason, Phase, PhaseTimings};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{CertificateError, ClientConfig, RootCertStore};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout_at};

/// Where to connect: the caller has resolved `host` and checked every address.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub scheme_https: bool,
    /// Host name (or IP literal) for SNI, certificate verification and the `Host` header.
    pub host: String,
    pub port: u16,
    /// Already resolved and policy-checked addresses, tried in order.
    pub addrs: Vec<SocketAddr>,
    /// Time the caller spent resolving `host`, reported as `dns_ms`.
    pub dns_ms: Option<f64>,
}

impl Endpoint {
    /// The `Host` header value: the port is omitted when it is the scheme's default.
    pub fn host_header(&self) -> String {
        let host = if self.host.contains(':') && !self.host.starts_with('[') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let default_port = if self.scheme_https { 443 } else { 80 };
        if self.port == default_port {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

/// Deadlines of the connection phases, each measured from the start of its phase.
#[derive(Clone, Copy, Debug)]
pub struct Deadlines {
    /// TCP connect, across all addresses.
    pub connect: Duration,
    /// TLS handshake.
    pub tls: Duration,
}

impl Default for Deadlines {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(5),
            tls: Duration::from_secs(5),
        }
    }
}

/// Why an HTTP exchange failed, in the probe taxonomy.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{} ({}): {detail}", reason.as_str(), phase.as_str())]
pub struct HttpFailure {
    pub reason: FailureReason,
    pub phase: Phase,
    /// Human-readable explanation; never contains request headers.
    pub detail: String,
}

impl HttpFailure {
    pub fn new(reason: FailureReason, phase: Phase, detail: impl Into<String>) -> Self {
        Self {
            reason,
            phase,
            detail: detail.into(),
        }
    }

    fn timeout(phase: Phase, what: &str) -> Self {
        Self::new(
            FailureReason::Timeout,
            phase,
            format!("deadline passed {what}"),
        )
    }
}

/// Trust settings for TLS: the built client configuration (ring provider, HTTP/1.1 ALPN).
#[derive(Clone)]
pub struct TlsSettings {
    config: Arc<ClientConfig>,
}

impl fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsSettings").finish_non_exhaustive()
    }
}

impl TlsSettings {
    /// The Mozilla roots of `webpki-roots`.
    pub fn webpki_roots() -> Self {
        Self::build(true, &[]).expect("the webpki roots are valid trust anchors")
    }

    /// The Mozilla roots plus `extra` (e.g. a private CA).
    pub fn with_extra_roots(extra: &[CertificateDer<'static>]) -> Result<Self, rustls::Error> {
        Self::build(true, extra)
    }

    /// Only `roots` (tests, private deployments).
    pub fn only_roots(roots: &[CertificateDer<'static>]) -> Result<Self, rustls::Error> {
        Self::build(false, roots)
    }

    fn build(webpki: bool, extra: &[CertificateDer<'static>]) -> Result<Self, rustls::Error> {
        let mut roots = RootCertStore::empty();
        if webpki {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        }
        for cert in extra {
            roots.add(cert.clone())?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            config: Arc::new(config),
        })
    }
}

impl Default for TlsSettings {
    fn default() -> Self {
        Self::webpki_roots()
    }
}

/// What connecting measured.
#[derive(Clone, Debug, PartialEq)]
pub struct ConnectInfo {
    /// The address that accepted the connection.
    pub remote_addr: SocketAddr,
    pub dns_ms: Option<f64>,
    pub connect_ms: f64,
    /// Absent over plain HTTP.
    pub tls_ms: Option<f64>,
    /// The leaf certificate's `notAfter`.
    pub tls_expires_at: Option<DateTime<Utc>>,
}

trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// Aborts the hyper connection task once the connection and every response are dropped.
struct DriverGuard(JoinHandle<()>);

impl Drop for DriverGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One HTTP/1.1 connection carrying requests one after another.
pub struct Connection {
    sender: SendRequest<Full<Bytes>>,
    driver: Arc<DriverGuard>,
    host_header: HeaderValue,
    info: ConnectInfo,
    first_byte_ms: Option<f64>,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("info", &self.info)
            .field("first_byte_ms", &self.first_byte_ms)
            .finish_non_exhaustive()
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Opens a connection: TCP to the first address that accepts, TLS for https, then HTTP/1.
pub async fn connect(
    endpoint: &Endpoint,
    deadlines: Deadlines,
    tls: &TlsSettings,
) -> Result<Connection, HttpFailure> {
    let host_header = HeaderValue::from_str(&endpoint.host_header()).map_err(|_| {
        HttpFailure::new(
            FailureReason::DnsFailure,
            Phase::Dns,
            format!("{:?} is not a valid host", endpoint.host),
        )
    })?;
    let (tcp, remote_addr, connect_ms) = connect_tcp(endpoint, deadlines.connect).await?;
    let _ = tcp.set_nodelay(true);
    let mut info = ConnectInfo {
        remote_addr,
        dns_ms: endpoint.dns_ms,
        connect_ms,
        tls_ms: None,
        tls_expires_at: None,
    };
    let io: Box<dyn Io> = if endpoint.scheme_https {
        let (stream, tls_ms, expires) = handshake_tls(endpoint, tcp, deadlines.tls, tls).await?;
        info.tls_ms = Some(tls_ms);
        info.tls_expires_at = expires;
        Box::new(stream)
    } else {
        Box::new(tcp)
    };
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| {
            HttpFailure::new(
                FailureReason::NotJsonrpc,
                Phase::Connect,
                format!("HTTP/1.1 setup failed: {e}"),
            )
        })?;
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(Connection {
        sender,
        driver: Arc::new(DriverGuard(driver)),
        host_header,
        info,
        first_byte_ms: None,
    })
}

async fn connect_tcp(
    endpoint: &Endpoint,
    limit: Duration,
) -> Result<(TcpStream, SocketAddr, f64), HttpFailure> {
    let start = Instant::now();
    let deadline = start + limit;
    let mut errors = Vec::new();
    let mut all_refused = true;
    for &addr in &endpoint.addrs {
        match timeout_at(deadline, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => return Ok((stream, addr, ms(start.elapsed()))),
            Ok(Err(e)) => {
                all_refused &= e.kind() == io::ErrorKind::ConnectionRefused;
                errors.push(format!("{addr}: {e}"));
            }
            Err(_) => {
                errors.push(format!("{addr}: no answer"));
                return Err(HttpFailure::new(
                    FailureReason::ConnectTimeout,
                    Phase::Connect,
                    format!(
                        "TCP connect to {}:{} did not complete within {} ms ({})",
                        endpoint.host,
                        endpoint.port,
                        limit.as_millis(),
                        errors.join("; ")
                    ),
                ));
            }
        }
    }
    if endpoint.addrs.is_empty() {
        return Err(HttpFailure::new(
            FailureReason::DnsFailure,
            Phase::Dns,
            format!("no address to connect to for {}", endpoint.host),
        ));
    }
    let reason = if all_refused {
        FailureReason::TcpRefused
    } else {
        FailureReason::ConnectTimeout
    };
    Err(HttpFailure::new(
        reason,
        Phase::Connect,
        format!(
            "TCP connect to {}:{} failed ({})",
            endpoint.host,
            endpoint.port,
            errors.join("; ")
        ),
    ))
}

async fn handshake_tls(
    endpoint: &Endpoint,
    tcp: TcpStream,
    limit: Duration,
    tls: &TlsSettings,
) -> Result<
    (
        tokio_rustls::client::TlsStream<TcpStream>,
        f64,
        Option<DateTime<Utc>>,
    ),
    HttpFailure,
> {
    let bare = endpoint.host.trim_start_matches('[').trim_end_matches(']');
    let name = ServerName::try_from(bare.to_owned()).map_err(|_| {
        HttpFailure::new(
            FailureReason::TlsError,
            Phase::Tls,
            format!("{:?} is not a valid TLS server name", endpoint.host),
        )
    })?;
    let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
    let start = Instant::now();
    let stream = match timeout_at(start + limit, connector.connect(name, tcp)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            return Err(HttpFailure::new(
                FailureReason::TlsError,
                Phase::Tls,
                format!(
                    "TLS handshake with {}:{} failed: {}",
                    endpoint.host,
                    endpoint.port,
                    explain_tls_error(&e, &endpoint.host)
                ),
            ));
        }
        Err(_) => {
            return Err(HttpFailure::timeout(
                Phase::Tls,
                &format!(
                    "before the TLS handshake with {}:{} completed ({} ms)",
                    endpoint.host,
                    endpoint.port,
                    limit.as_millis()
                ),
            ));
        }
    };
    let tls_ms = ms(start.elapsed());
    let expires = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|leaf| certificate_not_after(leaf));
    Ok((stream, tls_ms, expires))
}

/// Explains a handshake error: certificate problems in words, other errors as rustls says.
fn explain_tls_error(error: &io::Error, host: &str) -> String {
    let Some(tls) = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    else {
        return match error.kind() {
            io::ErrorKind::UnexpectedEof => "connection closed during the handshake".to_owned(),
            _ => error.to_string(),
        };
    };
    match tls {
        rustls::Error::InvalidCertificate(cert) => match cert {
            CertificateError::ExpiredContext { not_after, .. } => {
                let at = i64::try_from(not_after.as_secs())
                    .ok()
                    .and_then(|secs| DateTime::<Utc>::from_timestamp(secs, 0))
                    .map_or_else(|| "?".to_owned(), |t| t.to_rfc3339());
                format!("certificate expired (not valid after {at})")
            }
            CertificateError::Expired => "certificate expired".to_owned(),
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                format!("certificate not yet valid ({tls})")
            }
            CertificateError::UnknownIssuer => {
                "unknown issuer: the certificate chain does not lead to a trusted root \
                 (self-signed or missing intermediate?)"
                    .to_owned()
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                format!("certificate name mismatch: not valid for name {host:?} ({tls})")
            }
            CertificateError::Revoked => "certificate revoked".to_owned(),
            CertificateError::BadSignature => "bad certificate signature".to_owned(),
            _ => format!("invalid certificate: {tls}"),
        },
        other => other.to_string(),
    }
}

/// The `notAfter` of a DER X.509 certificate (minimal DER walk, no full parse).
pub fn certificate_not_after(der: &[u8]) -> Option<DateTime<Utc>> {
    let (tag, cert, _) = der_element(der)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, tbs, _) = der_element(cert)?;
    if tag != 0x30 {
        return None;
    }
    let mut rest = tbs;
    // [0] version (optional), serialNumber, signature, issuer, then validity.
    let (mut tag, _, mut after) = der_element(rest)?;
    if tag == 0xa0 {
        rest = after;
        (tag, _, after) = der_element(rest)?;
    }
    if tag != 0x02 {
        return None;
    }
    rest = after;
    for _ in 0..2 {
        let (tag, _, after) = der_element(rest)?;
        if tag != 0x30 {
            return None;
        }
        rest = after;
    }
    let (tag, validity, _) = der_element(rest)?;
    if tag != 0x30 {
        return None;
    }
    let (_, _, after_not_before) = der_element(validity)?;
    let (tag, not_after, _) = der_element(after_not_before)?;
    parse_der_time(tag, not_after)
}

/// One DER element: (tag, contents, rest). Only single-byte tags (all X.509 needs here).
fn der_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        rest = &rest[n..];
        len
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// UTCTime (`YYMMDDHHMMSSZ`, tag 0x17) or GeneralizedTime (`YYYYMMDDHHMMSSZ`, tag 0x18).
fn parse_der_time(tag: u8, value: &[u8]) -> Option<DateTime<Utc>> {
    let text = std::str::from_utf8(value).ok()?;
    let digits = text.strip_suffix('Z')?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (year, rest) = match (tag, digits.len()) {
        (0x17, 12) => {
            let yy: i32 = digits[..2].parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &digits[2..])
        }
        (0x18, 14) => (digits[..4].parse().ok()?, &digits[4..]),
        _ => return None,
    };
    let num = |i: usize| rest[i..i + 2].parse::<u32>().ok();
    let date = NaiveDate::from_ymd_opt(year, num(0)?, num(2)?)?;
    Some(date.and_hms_opt(num(4)?, num(6)?, num(8)?)?.and_utc())
}

impl Connection {
    /// What connecting measured.
    pub fn info(&self) -> &ConnectInfo {
        &self.info
    }

    /// Time from sending the first request to its response head.
    pub fn first_byte_ms(&self) -> Option<f64> {
        self.first_byte_ms
    }

    /// Copies this connection's timings into `phases` (fields already set are kept, so the
    /// first connection of a probe decides).
    pub fn record_phases(&self, phases: &mut PhaseTimings) {
        phases.dns_ms = phases.dns_ms.or(self.info.dns_ms);
        phases.connect_ms = phases.connect_ms.or(Some(self.info.connect_ms));
        phases.tls_ms = phases.tls_ms.or(self.info.tls_ms);
        phases.first_byte_ms = phases.first_byte_ms.or(self.first_byte_ms);
    }

    /// Whether the server has closed the connection (a new one is needed).
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }

    /// Sends `request` and waits for the response head until `deadline`. `phase` is the
    /// protocol phase the request belongs to (used in failures). The URI may be absolute
    /// or origin-form; it is sent in origin-form with a `Host` header from the endpoint.
    /// The previous response's body must have been read or dropped.
    pub async fn send(
        &mut self,
        request: Request<Bytes>,
        phase: Phase,
        deadline: Instant,
    ) -> Result<TimedResponse, HttpFailure> {
        let (mut parts, body) = request.into_parts();
        let path = parts
            .uri
            .path_and_query()
            .map(|pq| pq.as_str().to_owned())
            .unwrap_or_else(|| "/".to_owned());
        parts.uri = Uri::try_from(path).map_err(|e| {
            HttpFailure::new(FailureReason::NotJsonrpc, phase, format!("bad URI: {e}"))
        })?;
        if !parts.headers.contains_key(HOST) {
            parts.headers.insert(HOST, self.host_header.clone());
        }
        let method = parts.method.clone();
        let request = Request::from_parts(parts, Full::new(body));
        let start = Instant::now();
        let response = timeout_at(deadline, async {
            self.sender.ready().await?;
            self.sender.send_request(request).await
        })
        .await
        .map_err(|_| HttpFailure::timeout(phase, &format!("waiting for the {method} response")))?
        .map_err(|e| {
            HttpFailure::new(
                FailureReason::NotJsonrpc,
                phase,
                format!("{method} failed: {}", describe_hyper_error(&e)),
            )
        })?;
        let head_ms = ms(start.elapsed());
        self.first_byte_ms.get_or_insert(head_ms);
        let (parts, body) = response.into_parts();
        Ok(TimedResponse {
            status: parts.status,
            version: parts.version,
            headers: parts.headers,
            head_ms,
            phase,
            body,
            _driver: self.driver.clone(),
        })
    }
}

fn describe_hyper_error(e: &hyper::Error) -> String {
    if e.is_incomplete_message() {
        format!("connection closed before a complete response ({e})")
    } else if e.is_parse() {
        format!("malformed HTTP response ({e})")
    } else if e.is_closed() || e.is_canceled() {
        format!("connection closed ({e})")
    } else {
        let mut text = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        text
    }
}

/// A response head; the body has not been read yet.
pub struct TimedResponse {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    /// Time from sending the request to the response head.
    pub head_ms: f64,
    /// The protocol phase given to [`Connection::send`].
    pub phase: Phase,
    body: Incoming,
    _driver: Arc<DriverGuard>,
}

impl fmt::Debug for TimedResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimedResponse")
            .field("status", &self.status)
            .field("headers", &self.headers)
            .field("head_ms", &self.head_ms)
            .field("phase", &self.phase)
            .finish_non_exhaustive()
    }
}

impl TimedResponse {
    /// The `Content-Type` media type, lowercased, without parameters.
    pub fn media_type(&self) -> Option<String> {
        let value = self
            .headers
            .get(http::header::CONTENT_TYPE)?
            .to_str()
            .ok()?;
        Some(value.split(';').next()?.trim().to_ascii_lowercase())
    }

    /// Whether the body is an SSE stream.
    pub fn is_event_stream(&self) -> bool {
        self.media_type().as_deref() == Some("text/event-stream")
    }

    /// Reads the whole body (at most `limit` bytes) until `deadline`.
    pub async fn read_all(mut self, limit: usize, deadline: Instant) -> Result<Bytes, HttpFailure> {
        let phase = self.phase;
        let mut buf = BytesMut::new();
        loop {
            let frame = timeout_at(deadline, self.body.frame())
                .await
                .map_err(|_| HttpFailure::timeout(phase, "reading the response body"))?;
            let Some(frame) = frame else {
                return Ok(buf.freeze());
            };
            let frame = frame.map_err(|e| body_failure(phase, &e))?;
            if let Ok(data) = frame.into_data() {
                if buf.len() + data.len() > limit {
                    return Err(HttpFailure::new(
                        FailureReason::NotJsonrpc,
                        phase,
                        format!("response body exceeds {limit} bytes"),
                    ));
                }
                buf.extend_from_slice(&data);
            }
        }
    }

    /// Reads the body as `text/event-stream`, with events of at most `max_event_bytes`.
    pub fn into_sse(self, max_event_bytes: usize) -> SseStream {
        SseStream {
            phase: self.phase,
            body: self.body,
            parser: SseParser::new(max_event_bytes),
            done: false,
            _driver: self._driver,
        }
    }
}

fn body_failure(phase: Phase, e: &hyper::Error) -> HttpFailure {
    HttpFailure::new(
        FailureReason::NotJsonrpc,
        phase,
        format!(
            "reading the response body failed: {}",
            describe_hyper_error(e)
        ),
    )
}

/// One dispatched server-sent event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, `message` when absent.
    pub event: String,
    /// The `data:` lines joined with `\n`.
    pub data: String,
    /// The last event id seen on the stream, if any (it persists across events).
    pub id: Option<String>,
}

/// An SSE stream over a response body.
pub struct SseStream {
    phase: Phase,
    body: Incoming,
    parser: SseParser,
    done: bool,
    _driver: Arc<DriverGuard>,
}

impl fmt::Debug for SseStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SseStream")
            .field("phase", &self.phase)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl SseStream {
    /// The next event, `None` at the end of the stream (an unterminated event is dropped).
    pub async fn next_event(&mut self, deadline: Instant) -> Result<Option<SseEvent>, HttpFailure> {
        loop {
            if let Some(event) = self.parser.next_event() {
                return Ok(Some(event));
            }
            if self.done {
                return Ok(None);
            }
            let frame = timeout_at(deadline, self.body.frame())
                .await
                .map_err(|_| HttpFailure::timeout(self.phase, "waiting for an SSE event"))?;
            match frame {
                None => self.done = true,
                Some(Err(e)) => return Err(body_failure(self.phase, &e)),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.parser.feed(&data).map_err(|e| {
                            HttpFailure::new(FailureReason::NotJsonrpc, self.phase, e.to_string())
                        })?;
                    }
                }
            }
        }
    }

    /// The last `retry:` value (milliseconds) the server sent.
    pub fn retry_ms(&self) -> Option<u64> {
        self.parser.retry_ms
    }
}

/// An SSE event (pending line plus data) grew beyond the cap.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("SSE event exceeds {0} bytes")]
pub struct SseTooLarge(pub usize);

/// Incremental `text/event-stream` parser (WHATWG HTML, "Event stream interpretation").
#[derive(Debug)]
pub struct SseParser {
    max: usize,
    line: Vec<u8>,
    after_cr: bool,
    first_line: bool,
    data: String,
    event: String,
    last_id: String,
    retry_ms: Option<u64>,
    ready: VecDeque<SseEvent>,
}

impl SseParser {
    pub fn new(max_event_bytes: usize) -> Self {
        Self {
            max: max_event_bytes,
            line: Vec::new(),
            after_cr: false,
            first_line: true,
            data: String::new(),
            event: String::new(),
            last_id: String::new(),
            retry_ms: None,
            ready: VecDeque::new(),
        }
    }

    /// Feeds bytes; complete events become available from [`SseParser::next_event`].
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), SseTooLarge> {
        for &b in chunk {
            if std::mem::take(&mut self.after_cr) && b == b'\n' {
                continue;
            }
            match b {
                b'\n' => self.end_line(),
                b'\r' => {
                    self.end_line();
                    self.after_cr = true;
                }
                _ => self.line.push(b),
            }
            if self.line.len() + self.data.len() + self.event.len() > self.max {
                return Err(SseTooLarge(self.max));
            }
        }
        Ok(())
    }

    /// The next complete event.
    pub fn next_event(&mut self) -> Option<SseEvent> {
        self.ready.pop_front()
    }

    fn end_line(&mut self) {
        let raw = std::mem::take(&mut self.line);
        let mut bytes = raw.as_slice();
        if std::mem::take(&mut self.first_line) {
            bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        }
        if bytes.is_empty() {
            self.dispatch();
            return;
        }
        let line = String::from_utf8_lossy(bytes);
        if line.starts_with(':') {
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line.as_ref(), ""),
        };
        match field {
            "event" => self.event = value.to_owned(),
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
            }
            "id" if !value.contains('\0') => self.last_id = value.to_owned(),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                self.retry_ms = value.parse().ok();
            }
            _ => {}
        }
    }

    fn dispatch(&mut self) {
        let event = std::mem::take(&mut self.event);
        if self.data.is_empty() {
            return;
        }
        let mut data = std::mem::take(&mut self.data);
        data.pop();
        self.ready.push_back(SseEvent {
            event: if event.is_empty() {
                "message".to_owned()
            } else {
                event
            },
            data,
            id: (!self.last_id.is_empty()).then(|| self.last_id.clone()),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut parser = SseParser::new(1 << 16);
        let mut out = Vec::new();
        for chunk in chunks {
            parser.feed(chunk).unwrap();
            while let Some(e) = parser.next_event() {
                out.push(e);
            }
        }
        out
    }

    fn ev(event: &str, data: &str, id: Option<&str>) -> SseEvent {
        SseEvent {
            event: event.into(),
            data: data.into(),
            id: id.map(str::to_owned),
        }
    }

    #[test]
    fn sse_fields_comments_and_multiline_data() {
        let events = parse_all(&[
            b"\xEF\xBB\xBF: hello\nevent: endpoint\ndata: /messages?sessionId=1\n\n",
            b"data: line one\ndata:line two\nid: 7\n\n",
            b"data\n\nevent: x\n\n",
            b"data: tail without blank line",
        ]);
        assert_eq!(
            events,
            vec![
                ev("endpoint", "/messages?sessionId=1", None),
                ev("message", "line one\nline two", Some("7")),
                ev("message", "", Some("7")),
            ]
        );
    }

    #[test]
    fn sse_line_endings_split_across_chunks() {
        let events = parse_all(&[
            b"data: a\r",
            b"\ndata: b\r\r",
            b"data: c\r\n",
            b"\r\nevent: e\rdata: d\n\n",
        ]);
        assert_eq!(
            events,
            vec![
                ev("message", "a\nb", None),
                ev("message", "c", None),
                ev("e", "d", None)
            ]
        );
    }

    #[test]
    fn sse_id_retry_and_cap() {
        let mut parser = SseParser::new(64);
        parser
            .feed(b"retry: 1500\nid: a\0b\nid: ok\ndata: x\n\n")
            .unwrap();
        assert_eq!(parser.next_event(), Some(ev("message", "x", Some("ok"))));
        assert_eq!(parser.retry_ms, Some(1500));
        let err = parser.feed(&[b'a'; 100]).unwrap_err();
        assert_eq!(err, SseTooLarge(64));
    }

    #[test]
    fn der_times() {
        assert_eq!(
            parse_der_time(0x17, b"310102030405Z").unwrap().to_rfc3339(),
            "2031-01-02T03:04:05+00:00"
        );
        assert_eq!(
            parse_der_time(0x17, b"991231235959Z").unwrap().to_rfc3339(),
            "1999-12-31T23:59:59+00:00"
        );
        assert_eq!(
            parse_der_time(0x18, b"20500101000000Z")
                .unwrap()
                .to_rfc3339(),
            "2050-01-01T00:00:00+00:00"
        );
        assert!(parse_der_time(0x17, b"3101020304Z").is_none());
        assert!(certificate_not_after(b"\x30\x03\x02\x01\x00").is_none());
    }

    #[test]
    fn host_header_omits_default_port() {
        let mut e = Endpoint {
            scheme_https: true,
            host: "example.com".into(),
            port: 443,
            addrs: vec![],
            dns_ms: None,
        };
        assert_eq!(e.host_header(), "example.com");
        e.port = 8443;
        assert_eq!(e.host_header(), "example.com:8443");
        e.host = "::1".into();
        assert_eq!(e.host_header(), "[::1]:8443");
    }
}
