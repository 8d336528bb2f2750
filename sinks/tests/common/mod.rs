//! Shared by the contract tests: alert events, and a local HTTP stand-in for a provider
//! that validates every request against the provider's contract (a validator per test
//! file) and answers as scripted: success, an error status, 429 with `Retry-After`, a
//! reply slower than the client's timeout, or a dropped connection.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use mcpulse_schemas::{AlertAction, AlertEvent, AlertStatus, Severity};
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

/// A private CA and a server certificate for 127.0.0.1 it signed.
pub struct TestPki {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    pub cert_der: Vec<u8>,
    pub key_der: Vec<u8>,
}

pub fn pki() -> TestPki {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "mcpulse test CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    let leaf_cert = leaf
        .signed_by(&leaf_key, &Issuer::from_params(&ca, &ca_key))
        .unwrap();
    TestPki {
        ca_pem: ca_cert.pem(),
        cert_pem: leaf_cert.pem(),
        key_pem: leaf_key.serialize_pem(),
        cert_der: leaf_cert.der().to_vec(),
        key_der: leaf_key.serialize_der(),
    }
}

pub fn time(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// A trigger of a P1 incident of acme/weather.
pub fn trigger() -> AlertEvent {
    let t = time("2026-11-21T10:00:00Z");
    AlertEvent {
        event_id: "ev-trigger".into(),
        incident_id: "3f2a9c".into(),
        dedup_key: "mcpulse/acme/weather/unreachable".into(),
        action: AlertAction::Trigger,
        status: AlertStatus::Open,
        tenant: "acme".into(),
        server: Some("weather".into()),
        class: "unreachable".into(),
        severity: Severity::P1,
        scope: "global".into(),
        reason: Some("tcp_refused".into()),
        regions: vec!["eu-west".into(), "us-east".into()],
        time: t,
        opened_at: t,
        resolved_at: None,
        duration_s: None,
        storm_id: None,
        storm: None,
        provider_outage: None,
        summary: "weather unreachable from 2 of 2 regions".into(),
        evidence: json!({"detail": "tcp_refused from eu-west, us-east"}),
    }
}

/// The same incident, `minutes` later, with `action`/`status`.
pub fn later(action: AlertAction, status: AlertStatus, minutes: i64) -> AlertEvent {
    let mut e = trigger();
    e.event_id = format!("ev-{}-{minutes}", action.as_str());
    e.action = action;
    e.status = status;
    e.time = e.opened_at + chrono::Duration::minutes(minutes);
    if status == AlertStatus::Resolved {
        e.resolved_at = Some(e.time);
        e.duration_s = Some(minutes as u64 * 60);
        e.summary = "weather reachable again".into();
    }
    e
}

/// One request as the stand-in received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: Method,
    /// Raw (still percent-encoded) path.
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub raw_body: String,
    pub body: Value,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// How the stand-in answers the next request.
#[derive(Clone, Debug)]
pub enum Reply {
    /// The provider's success answer (from the validator).
    Ok,
    /// This status and body.
    Status(u16, String),
    /// 429 with this `Retry-After` header and body.
    RateLimited { retry_after: String, body: String },
    /// The success answer, after this delay.
    Slow(Duration),
    /// Read the request, then close the connection without answering.
    Drop,
}

/// Checks a request against the contract: `Ok((status, body))` is the provider's
/// success answer; `Err` lists the violations (answered 400, and recorded).
pub type Validator = Arc<dyn Fn(&Recorded) -> Result<(u16, Value), Vec<String>> + Send + Sync>;

#[derive(Default)]
struct State {
    script: Mutex<VecDeque<Reply>>,
    requests: Mutex<Vec<Recorded>>,
    violations: Mutex<Vec<String>>,
    dropped: Mutex<usize>,
}

impl State {
    /// Whether the next scripted reply is a dropped connection (and takes it).
    fn take_drop(&self) -> bool {
        let mut script = self.script.lock().unwrap();
        if matches!(script.front(), Some(Reply::Drop)) {
            script.pop_front();
            *self.dropped.lock().unwrap() += 1;
            return true;
        }
        false
    }
}

/// A provider stand-in on 127.0.0.1. Every answer says `Connection: close`, so each
/// request arrives on a new connection (which is what lets one be dropped).
pub struct MockServer {
    pub url: String,
    state: Arc<State>,
}

impl MockServer {
    pub async fn start(validator: Validator) -> Self {
        let state = Arc::new(State::default());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = Router::new().fallback({
            let state = state.clone();
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let state = state.clone();
                let validator = validator.clone();
                async move { handle(state, validator, method, uri, headers, body).await }
            }
        });
        let listener = DroppingListener {
            inner: listener,
            state: state.clone(),
        };
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        MockServer { url, state }
    }

    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.state.script.lock().unwrap().extend(replies);
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().unwrap().clone()
    }

    pub fn violations(&self) -> Vec<String> {
        self.state.violations.lock().unwrap().clone()
    }

    pub fn dropped(&self) -> usize {
        *self.state.dropped.lock().unwrap()
    }

    /// Asserts every request so far met the contract.
    pub fn assert_no_violations(&self) {
        let v = self.violations();
        assert!(v.is_empty(), "contract violations: {v:#?}");
    }
}

async fn handle(
    state: Arc<State>,
    validator: Validator,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let raw_body = String::from_utf8_lossy(&body).into_owned();
    let recorded = Recorded {
        method,
        path: uri.path().to_owned(),
        query: uri.query().map(str::to_owned),
        headers,
        body: serde_json::from_str(&raw_body).unwrap_or(Value::Null),
        raw_body,
    };
    state.requests.lock().unwrap().push(recorded.clone());
    let verdict = validator(&recorded);
    let reply = state
        .script
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or(Reply::Ok);
    let (status, body) = match verdict {
        Err(violations) => {
            let text = violations.join("; ");
            state.violations.lock().unwrap().extend(violations);
            return respond(400, json!({"message": text}).to_string(), None);
        }
        Ok(success) => success,
    };
    match reply {
        Reply::Ok | Reply::Drop => respond(status, body.to_string(), None),
        Reply::Status(code, body) => respond(code, body, None),
        Reply::RateLimited { retry_after, body } => respond(429, body, Some(retry_after)),
        Reply::Slow(delay) => {
            tokio::time::sleep(delay).await;
            respond(status, body.to_string(), None)
        }
    }
}

fn respond(status: u16, body: String, retry_after: Option<String>) -> Response {
    let mut response = (StatusCode::from_u16(status).unwrap(), body).into_response();
    let headers = response.headers_mut();
    headers.insert("connection", "close".parse().unwrap());
    headers.insert("content-type", "application/json".parse().unwrap());
    if let Some(value) = retry_after {
        headers.insert("retry-after", value.parse().unwrap());
    }
    response
}

/// Accepts connections, closing (after reading the request) those a scripted
/// [`Reply::Drop`] is for.
struct DroppingListener {
    inner: TcpListener,
    state: Arc<State>,
}

impl axum::serve::Listener for DroppingListener {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        loop {
            let Ok((mut stream, addr)) = self.inner.accept().await else {
                continue;
            };
            if !self.state.take_drop() {
                return (stream, addr);
            }
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let _ = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf)).await;
            });
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// Small helpers for validators.
pub mod check {
    use serde_json::Value;

    /// A string field: present (if `required`), a string, at most `max` characters.
    pub fn string(v: &mut Vec<String>, obj: &Value, key: &str, required: bool, max: usize) {
        match obj.get(key) {
            None | Some(Value::Null) if required => v.push(format!("{key} is required")),
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if s.chars().count() > max => v.push(format!(
                "{key} is {} characters, over {max}",
                s.chars().count()
            )),
            Some(Value::String(s)) if required && s.is_empty() => v.push(format!("{key} is empty")),
            Some(Value::String(_)) => {}
            Some(other) => v.push(format!("{key} must be a string, got {other}")),
        }
    }

    /// No keys outside `allowed`.
    pub fn only_keys(v: &mut Vec<String>, obj: &Value, what: &str, allowed: &[&str]) {
        match obj.as_object() {
            Some(map) => {
                for key in map.keys() {
                    if !allowed.contains(&key.as_str()) {
                        v.push(format!("{what}: unknown field {key}"));
                    }
                }
            }
            None => v.push(format!("{what} must be an object")),
        }
    }

    pub fn one_of(v: &mut Vec<String>, obj: &Value, key: &str, allowed: &[&str]) {
        match obj.get(key).and_then(Value::as_str) {
            Some(s) if allowed.contains(&s) => {}
            other => v.push(format!("{key} must be one of {allowed:?}, got {other:?}")),
        }
    }

    pub fn json_content_type(v: &mut Vec<String>, r: &super::Recorded) {
        if !r
            .header("content-type")
            .is_some_and(|c| c.starts_with("application/json"))
        {
            v.push(format!(
                "content-type must be application/json, got {:?}",
                r.header("content-type")
            ));
        }
    }
}
