//! The HTTP side shared by PagerDuty, OpsGenie, Discord and webhooks: one pooled HTTP/1.1
//! client (hyper-util) over rustls with the ring provider and the Mozilla roots — the
//! TLS stack the ingest crate already builds — and no redirects. Requests are planned
//! once, then either rendered (secrets redacted) or sent, and their answers classified.
//!
//! Not reqwest: its rustls features would either bring a second crypto provider
//! (aws-lc) or, through feature unification, make every other reqwest client in the
//! workspace panic for want of a default provider.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use serde::Serialize;
use serde_json::Value;

use super::classify::{classify_response, classify_transport};
use super::{ConfigError, DeliveryError, ReceiverKind, Redactor, RenderedRequest};

/// Largest response body kept (enough for any provider's answer or error).
const MAX_BODY: usize = 64 * 1024;
const USER_AGENT: &str = concat!("mcpulse/", env!("CARGO_PKG_VERSION"));

/// The HTTP client all HTTP receivers share (one connection pool). Cheap to clone.
#[derive(Clone)]
pub struct HttpClient {
    inner: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HttpClient")
    }
}

impl HttpClient {
    /// HTTPS trusting the Mozilla roots (`webpki-roots`); plain HTTP works too (local
    /// tests). Redirects are never followed: provider endpoints do not redirect, and a
    /// token-bearing URL must not be replayed to another host. Needs a Tokio runtime
    /// when used, not when built.
    pub fn new() -> Result<Self, ConfigError> {
        Self::with_extra_roots(&[])
    }

    /// Like [`HttpClient::new`], also trusting the CA certificates in `pem` (a private
    /// proxy's CA, or a test server's).
    pub fn with_extra_roots(pem: &[u8]) -> Result<Self, ConfigError> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let mut roots =
            rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| ConfigError::new("http", "ca", e.to_string()))?;
            roots
                .add(cert)
                .map_err(|e| ConfigError::new("http", "ca", e.to_string()))?;
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ConfigError::new("http", "tls", e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(Duration::from_secs(10)));
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(tcp);
        let inner = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(connector);
        Ok(HttpClient { inner })
    }
}

/// One HTTP request a delivery makes, with its real URL and headers (no `Debug`: it
/// holds secrets; [`PlannedRequest::render`] is the printable form).
#[derive(Clone)]
pub(crate) struct PlannedRequest {
    pub method: Method,
    pub url: String,
    pub headers: Vec<(String, String)>,
    /// The JSON body's exact bytes (what a webhook signature covers), shared by every
    /// attempt without a copy.
    pub body: Bytes,
}

impl PlannedRequest {
    /// A JSON request; `body` is serialized once, straight to bytes (no `Value` tree on
    /// the delivery path).
    pub fn json(method: Method, url: String, body: &impl Serialize) -> Self {
        let body = serde_json::to_vec(body).expect("a JSON body serializes");
        PlannedRequest {
            method,
            url,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: Bytes::from(body),
        }
    }

    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// What `routes test` prints: every secret replaced by `<redacted>`.
    pub fn render(&self, redactor: &Redactor) -> RenderedRequest {
        let mut body: Value =
            serde_json::from_slice(&self.body).expect("a planned body is JSON it serialized");
        redactor.scrub_json(&mut body);
        RenderedRequest {
            method: self.method.to_string(),
            url_redacted: redactor.scrub(&self.url),
            headers_redacted: self
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), redactor.scrub(v)))
                .collect(),
            body,
        }
    }

    fn to_request(&self) -> Result<Request<Full<Bytes>>, DeliveryError> {
        let invalid = |what: &str| DeliveryError::permanent(format!("invalid request: {what}"));
        let uri: Uri = self.url.parse().map_err(|_| invalid("URL"))?;
        let mut builder = Request::builder()
            .method(self.method.clone())
            .uri(uri)
            .header("user-agent", USER_AGENT);
        for (name, value) in &self.headers {
            let value = HeaderValue::from_str(value).map_err(|_| invalid("header value"))?;
            builder = builder.header(name.as_str(), value);
        }
        builder
            .body(Full::new(self.body.clone()))
            .map_err(|_| invalid("header"))
    }
}

/// A successful answer's body.
#[derive(Clone, Debug)]
pub(crate) struct HttpReply {
    pub body: String,
}

impl HttpReply {
    pub fn json(&self) -> Option<Value> {
        serde_json::from_str(&self.body).ok()
    }
}

/// Sends `request` (answer included within `timeout`), classifying anything but a 2xx
/// into a [`DeliveryError`].
pub(crate) async fn send(
    client: &HttpClient,
    kind: ReceiverKind,
    request: &PlannedRequest,
    timeout: Duration,
    redactor: &Redactor,
) -> Result<HttpReply, DeliveryError> {
    let http_request = request.to_request()?;
    let exchange = async {
        let response = client
            .inner
            .request(http_request)
            .await
            .map_err(|e| classify_transport(&e, redactor))?;
        let (parts, mut body) = response.into_parts();
        let mut bytes = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                DeliveryError::retryable(format!(
                    "answer cut short: {}",
                    redactor.scrub(&e.to_string())
                ))
            })?;
            if let Some(chunk) = frame.data_ref() {
                let room = MAX_BODY.saturating_sub(bytes.len());
                bytes.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
        }
        Ok::<_, DeliveryError>((parts, bytes))
    };
    let (parts, bytes) = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| {
            DeliveryError::retryable(format!("timeout: no answer within {timeout:?}"))
        })??;
    let body = String::from_utf8_lossy(&bytes).into_owned();
    classify_response(
        kind,
        parts.status.as_u16(),
        &parts.headers,
        &body,
        redactor,
        SystemTime::now(),
    )?;
    Ok(HttpReply { body })
}

/// Checks a configured base URL: `http(s)://host…`, no user info.
pub(crate) fn check_url(
    receiver: &'static str,
    field: &'static str,
    url: &str,
) -> Result<url::Url, ConfigError> {
    let parsed = url::Url::parse(url)
        .map_err(|e| ConfigError::new(receiver, field, format!("not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "https" | "http") || parsed.host_str().is_none() {
        return Err(ConfigError::new(
            receiver,
            field,
            "must be an http(s) URL with a host",
        ));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(ConfigError::new(
            receiver,
            field,
            "must not carry credentials",
        ));
    }
    Ok(parsed)
}
