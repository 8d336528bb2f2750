//! Local stand-ins for PagerDuty's Events API and a Discord webhook, for the end-to-end
//! notification tests: each records every request (with when it arrived and when it was
//! answered) and answers as scripted. They run on their own thread and Tokio runtime,
//! on 127.0.0.1.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::http::{Method, StatusCode, Uri};
use axum::response::IntoResponse;
use serde_json::{Value, json};

/// One request as received.
#[derive(Clone, Debug)]
pub struct Hit {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub body: Value,
    pub raw: String,
    pub received: Instant,
    pub answered: Option<Instant>,
    pub status: u16,
}

/// How to answer one request: status, body, delay.
pub type Answer = (u16, Value, Duration);

type Handler = dyn Fn(&Hit, &mut State) -> Answer + Send + Sync;

/// What a stand-in remembers between requests.
#[derive(Default)]
pub struct State {
    /// Statuses to answer next, in order (then the provider's success).
    pub script: VecDeque<(u16, Duration)>,
    /// Discord messages created.
    pub messages: Vec<String>,
}

pub struct StandIn {
    pub url: String,
    hits: Arc<Mutex<Vec<Hit>>>,
    state: Arc<Mutex<State>>,
}

impl StandIn {
    fn start(handler: Arc<Handler>) -> StandIn {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let hits: Arc<Mutex<Vec<Hit>>> = Arc::default();
        let state: Arc<Mutex<State>> = Arc::default();
        let (h, s) = (hits.clone(), state.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let app = Router::new().fallback(move |method: Method, uri: Uri, body: Bytes| {
                    let (hits, state, handler) = (h.clone(), s.clone(), handler.clone());
                    async move {
                        let raw = String::from_utf8_lossy(&body).into_owned();
                        let mut hit = Hit {
                            method: method.to_string(),
                            path: uri.path().to_owned(),
                            query: uri.query().map(str::to_owned),
                            body: serde_json::from_str(&raw).unwrap_or(Value::Null),
                            raw,
                            received: Instant::now(),
                            answered: None,
                            status: 0,
                        };
                        let (status, body, delay) = handler(&hit, &mut state.lock().unwrap());
                        tokio::time::sleep(delay).await;
                        hit.answered = Some(Instant::now());
                        hit.status = status;
                        hits.lock().unwrap().push(hit);
                        (StatusCode::from_u16(status).unwrap(), axum::Json(body)).into_response()
                    }
                });
                axum::serve(listener, app).await.unwrap();
            });
        });
        StandIn { url, hits, state }
    }

    /// PagerDuty's Events API v2: `POST /v2/enqueue` answered 202 (or the script).
    pub fn pagerduty() -> StandIn {
        StandIn::start(Arc::new(|hit: &Hit, state: &mut State| {
            if hit.method != "POST" || hit.path != "/v2/enqueue" {
                return (404, json!({"status": "invalid path"}), Duration::ZERO);
            }
            let (status, delay) = state.script.pop_front().unwrap_or((202, Duration::ZERO));
            let body = if status == 202 {
                json!({"status": "success", "message": "Event processed", "dedup_key": hit.body["dedup_key"]})
            } else {
                json!({"status": "invalid event", "message": "Event object is invalid", "errors": ["scripted"]})
            };
            (status, body, delay)
        }))
    }

    /// A Discord webhook: `POST ?wait=true` creates a message (200 with its id), `PATCH
    /// /messages/{id}` edits a known one (404 otherwise); the script overrides.
    pub fn discord() -> StandIn {
        StandIn::start(Arc::new(|hit: &Hit, state: &mut State| {
            let (scripted, delay) = state.script.pop_front().unwrap_or((200, Duration::ZERO));
            if scripted != 200 {
                return (scripted, json!({"message": "scripted", "code": 0}), delay);
            }
            match hit.method.as_str() {
                "POST"
                    if hit
                        .query
                        .as_deref()
                        .is_some_and(|q| q.contains("wait=true")) =>
                {
                    let id = format!(
                        "{}",
                        1_300_000_000_000_000_000u64 + state.messages.len() as u64
                    );
                    state.messages.push(id.clone());
                    (200, json!({"id": id, "channel_id": "42"}), delay)
                }
                "PATCH" => {
                    let id = hit.path.rsplit('/').next().unwrap_or("").to_owned();
                    if state.messages.contains(&id) {
                        (200, json!({"id": id, "channel_id": "42"}), delay)
                    } else {
                        (
                            404,
                            json!({"message": "Unknown Message", "code": 10008}),
                            delay,
                        )
                    }
                }
                _ => (400, json!({"message": "unexpected request"}), delay),
            }
        }))
    }

    /// Answers the next requests with these statuses (after these delays).
    pub fn script(&self, replies: impl IntoIterator<Item = (u16, Duration)>) {
        self.state.lock().unwrap().script.extend(replies);
    }

    /// Requests answered so far.
    pub fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }

    /// Waits until `n` requests were answered (or `timeout` passes); returns them.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Hit> {
        let deadline = Instant::now() + timeout;
        loop {
            let hits = self.hits();
            if hits.len() >= n || Instant::now() > deadline {
                return hits;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// `event_action` of PagerDuty requests.
pub fn actions(hits: &[Hit]) -> Vec<String> {
    hits.iter()
        .map(|h| h.body["event_action"].as_str().unwrap_or("?").to_owned())
        .collect()
}
