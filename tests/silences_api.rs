//! The silences HTTP API (`GET/POST /api/v1/silences`, `DELETE /api/v1/silences/{id}`)
//! over a real socket, with the authenticator of a real configuration: an operator
//! manages every silence, a tenant only its own tenant's; bad input is a 400 naming the
//! field. The API and `mcpulse silence` share `{data_dir}/silences.json`.

use std::path::Path;

use mcpulse::routes_cli::silences::SilenceStore;
use reqwest::StatusCode;
use serde_json::{Value, json};

const ACME: &str = "acme-token-0123456789";
const GLOBEX: &str = "globex-token-0123456789";
const OPERATOR: &str = "operator-token-0123456789";

/// Serves the silences router of a configuration in `dir` on a free port.
async fn serve(dir: &Path) -> (String, std::path::PathBuf) {
    let config_path = dir.join("mcpulse.yaml");
    std::fs::write(
        &config_path,
        format!(
            "data_dir: {}\nauth:\n  tenants:\n    - {{id: acme, tokens: [\"{ACME}\"]}}\n    - {{id: globex, tokens: [\"{GLOBEX}\"]}}\n  operators:\n    - {{name: ops, tokens: [\"{OPERATOR}\"]}}\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    let config = mcpulse::Config::load(&config_path).unwrap();
    let auth = mcpulse::roles::authenticator(&config).unwrap();
    let router = mcpulse::api::silences_router(SilenceStore::in_data_dir(&config.data_dir), auth);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/api/v1/silences", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (base, config_path)
}

struct Client {
    base: String,
    http: reqwest::Client,
}

impl Client {
    async fn list(&self, token: &str) -> Vec<Value> {
        let response = self
            .http
            .get(&self.base)
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.unwrap();
        body["silences"].as_array().unwrap().clone()
    }

    async fn create(&self, token: &str, body: Value) -> (StatusCode, Value) {
        let response = self
            .http
            .post(&self.base)
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        (response.status(), response.json().await.unwrap())
    }

    async fn expire(&self, token: &str, id: &str) -> (StatusCode, Value) {
        let response = self
            .http
            .delete(format!("{}/{id}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        (response.status(), response.json().await.unwrap())
    }
}

fn silence(matcher: &str) -> Value {
    json!({"matchers": [matcher], "duration": "2h", "comment": "maintenance", "created_by": "ana"})
}

#[tokio::test(flavor = "multi_thread")]
async fn tenants_see_and_manage_only_their_own_silences() {
    let dir = tempfile::tempdir().unwrap();
    let (base, config) = serve(dir.path()).await;
    let api = Client {
        base,
        http: reqwest::Client::new(),
    };

    // No token, or a wrong one: 401 with a challenge.
    let response = api.http.get(&api.base).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(
        response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    let response = api
        .http
        .get(&api.base)
        .bearer_auth("wrong-token-123")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    // A tenant's silences are its own, whether it names its tenant or not.
    let (status, acme) = api.create(ACME, silence("server = weather")).await;
    assert_eq!(status, StatusCode::CREATED, "{acme}");
    assert_eq!(
        (acme["tenant"].as_str(), acme["state"].as_str()),
        (Some("acme"), Some("active"))
    );
    let mut named = silence("server = maps");
    named["tenant"] = json!("globex");
    let (status, refused) = api.create(ACME, named.clone()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{refused}");
    assert!(refused["error"].as_str().unwrap().starts_with("tenant: "));
    let (status, globex) = api.create(GLOBEX, named).await;
    assert_eq!(status, StatusCode::CREATED, "{globex}");
    let (status, everyone) = api.create(OPERATOR, silence("class = tls")).await;
    assert_eq!(status, StatusCode::CREATED, "{everyone}");
    assert!(everyone.get("tenant").is_none(), "{everyone}");

    let ids = |silences: Vec<Value>| -> Vec<String> {
        silences
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect()
    };
    let id = |s: &Value| s["id"].as_str().unwrap().to_string();
    assert_eq!(ids(api.list(ACME).await), [id(&acme)]);
    assert_eq!(ids(api.list(GLOBEX).await), [id(&globex)]);
    assert_eq!(
        ids(api.list(OPERATOR).await),
        [id(&acme), id(&globex), id(&everyone)]
    );

    // Another tenant's silence, or an operator's, does not exist for a tenant.
    let (status, _) = api.expire(ACME, &id(&globex)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = api.expire(ACME, &id(&everyone)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let all = api.list(OPERATOR).await;
    assert!(all.iter().all(|s| s["state"] == "active"), "{all:#?}");

    // Its own: expired now; a second time is a conflict.
    let (status, expired) = api.expire(ACME, &id(&acme)).await;
    assert_eq!(
        (status, expired["state"].as_str()),
        (StatusCode::OK, Some("expired"))
    );
    let (status, _) = api.expire(ACME, &id(&acme)).await;
    assert_eq!(status, StatusCode::CONFLICT);
    // The operator manages any.
    let (status, _) = api.expire(OPERATOR, &id(&globex)).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = api.expire(OPERATOR, "no-such-id").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // The CLI reads the same file.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mcpulse"))
        .args(["silence", "list", "--all", "--format", "json", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let states: Vec<&str> = listed
        .iter()
        .map(|s| s["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["expired", "expired", "active"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_a_400_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let (base, _) = serve(dir.path()).await;
    let api = Client {
        base,
        http: reqwest::Client::new(),
    };
    let with = |key: &str, value: Value| {
        let mut body = silence("server = weather");
        match value {
            Value::Null => {
                body.as_object_mut().unwrap().remove(key);
            }
            value => body[key] = value,
        }
        body
    };
    let cases = [
        (with("matchers", json!(["severity = P9"])), "matchers[0]: "),
        (with("matchers", json!(["server =~ \".*\""])), "matchers: "),
        (with("matchers", json!([])), "matchers: "),
        (with("duration", json!("soon")), "duration: "),
        (with("duration", Value::Null), "ends_at: "),
        (with("ends_at", json!("2020-01-01T00:00:00Z")), "duration: "),
        (
            with("created_by", Value::Null),
            "missing field `created_by`",
        ),
        (with("created_by", json!("")), "created_by: "),
        (with("tenant", json!("not a tenant")), "tenant: "),
        (
            with("silence_everything", json!(true)),
            "unknown field `silence_everything`",
        ),
    ];
    for (body, expected) in cases {
        let (status, answer) = api.create(OPERATOR, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        let error = answer["error"].as_str().unwrap();
        assert!(
            error.contains(expected),
            "{body}: {expected:?} not in {error:?}"
        );
    }
    let response = api
        .http
        .post(&api.base)
        .bearer_auth(OPERATOR)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(api.list(OPERATOR).await.is_empty());
}
