//! Delivery semantics against a local PagerDuty stand-in: retries with backoff honouring
//! Retry-After, permanent errors not retried, attempts used up, the circuit breaker and
//! the token bucket of a destination.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{MockServer, Reply, trigger};
use mcpulse_sinks::delivery::{
    Attempt, BreakerConfig, BreakerState, DeliveryPolicy, Destination, Destinations, Jitter,
    RateLimit, RetryPolicy, deliver_with_retries,
};
use mcpulse_sinks::receivers::{HttpClient, PagerDutyConfig, PagerDutyReceiver, Receiver};
use serde_json::json;

async fn setup() -> (MockServer, PagerDutyReceiver) {
    let server = MockServer::start(Arc::new(|_| Ok((202, json!({"status": "success"}))))).await;
    let config: PagerDutyConfig = serde_yaml_ng::from_str(&format!(
        "routing_key: R0UT1NGKEY0123456789abcdefABCDEF\nurl: {}\ntimeout: 500ms",
        server.url
    ))
    .unwrap();
    let pd = PagerDutyReceiver::new(config, HttpClient::new().unwrap()).unwrap();
    (server, pd)
}

fn retry(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        base: Duration::from_millis(20),
        cap: Duration::from_millis(100),
        max_attempts,
    }
}

async fn run(
    pd: &PagerDutyReceiver,
    dest: &Destination,
    policy: &RetryPolicy,
) -> (Result<(), String>, Vec<Attempt>) {
    let mut attempts = Vec::new();
    let result = deliver_with_retries(
        pd,
        &trigger(),
        None,
        dest,
        policy,
        &mut Jitter::seeded(3),
        |a| attempts.push(a.clone()),
    )
    .await;
    (result.map(|_| ()).map_err(|e| e.to_string()), attempts)
}

#[tokio::test]
async fn retries_until_delivered_honouring_retry_after() {
    let (server, pd) = setup().await;
    server.script([
        Reply::Status(500, String::new()),
        Reply::RateLimited {
            retry_after: "1".into(),
            body: String::new(),
        },
        Reply::Drop,
    ]);
    let dest = Destination::new(&DeliveryPolicy::default());
    let start = Instant::now();
    let (result, attempts) = run(&pd, &dest, &retry(5)).await;
    result.unwrap();
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "Retry-After: 1 was not honoured"
    );
    let numbers: Vec<u32> = attempts.iter().map(|a| a.number).collect();
    assert_eq!(numbers, [1, 2, 3, 4]);
    assert!(attempts[..3].iter().all(|a| a.result.is_err()));
    assert!(attempts[3].result.is_ok());
    assert_eq!(server.requests().len(), 3, "plus one dropped connection");
}

#[tokio::test]
async fn permanent_errors_are_not_retried_and_attempts_run_out() {
    let (server, pd) = setup().await;
    let dest = Destination::new(&DeliveryPolicy::default());
    server.script([Reply::Status(400, "bad".into())]);
    let (result, attempts) = run(&pd, &dest, &retry(5)).await;
    assert!(result.unwrap_err().starts_with("permanent"));
    assert_eq!(attempts.len(), 1);

    server.script(std::iter::repeat_n(Reply::Status(503, String::new()), 3));
    let (result, attempts) = run(&pd, &dest, &retry(3)).await;
    assert!(result.unwrap_err().starts_with("retryable"));
    assert_eq!(attempts.len(), 3);
    assert_eq!(server.requests().len(), 4);
}

#[tokio::test]
async fn the_breaker_opens_then_probes_once() {
    let (server, pd) = setup().await;
    let policy = DeliveryPolicy {
        breaker: BreakerConfig {
            failure_threshold: 2,
            cooldown: Duration::from_millis(300),
        },
        ..DeliveryPolicy::default()
    };
    let destinations = Destinations::new(policy);
    let dest = destinations.get(pd.destination());
    server.script([
        Reply::Status(500, String::new()),
        Reply::Status(502, String::new()),
    ]);
    for _ in 0..2 {
        assert!(run(&pd, &dest, &retry(1)).await.0.is_err());
    }
    assert_eq!(dest.breaker_state(), BreakerState::Open);
    // Open: rejected without a request.
    let (result, attempts) = run(&pd, &dest, &retry(1)).await;
    assert!(result.unwrap_err().contains("circuit open"));
    assert_eq!(attempts[0].latency, Duration::ZERO);
    assert_eq!(server.requests().len(), 2);
    // After the cooldown a probe goes through and closes it.
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(dest.breaker_state(), BreakerState::HalfOpen);
    run(&pd, &dest, &retry(1)).await.0.unwrap();
    assert_eq!(dest.breaker_state(), BreakerState::Closed);
    assert!(Arc::ptr_eq(&dest, &destinations.get(pd.destination())));
}

#[tokio::test]
async fn the_token_bucket_paces_a_destination() {
    let (server, pd) = setup().await;
    let dest = Destination::new(&DeliveryPolicy {
        rate_limit: Some(RateLimit {
            per_minute: 120.0,
            burst: 2,
        }),
        ..DeliveryPolicy::default()
    });
    let start = Instant::now();
    for _ in 0..4 {
        run(&pd, &dest, &retry(1)).await.0.unwrap();
    }
    // Two at once, then one per half second.
    assert!(
        start.elapsed() >= Duration::from_millis(950),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(server.requests().len(), 4);
}
