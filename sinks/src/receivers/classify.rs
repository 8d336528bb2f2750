//! What a provider's answer means: one table from HTTP status to decision, the retry
//! hints (`Retry-After` in seconds or as an HTTP date, Discord's `retry_after`), and the
//! mapping of transport and SMTP errors. Every reason text is scrubbed of secrets.

use std::ops::RangeInclusive;
use std::time::{Duration, SystemTime};

use http::HeaderMap;

use super::{DeliveryError, ReceiverKind, Redactor};

/// What an HTTP status means for a delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Delivered.
    Delivered,
    /// Try again later (after the server's retry hint, if any).
    Retry(&'static str),
    /// Give up and dead-letter, with this reason.
    Permanent(&'static str),
}

struct Rule {
    codes: RangeInclusive<u16>,
    /// `None`: every provider.
    only: Option<ReceiverKind>,
    decision: Decision,
}

const fn rule(codes: RangeInclusive<u16>, decision: Decision) -> Rule {
    Rule {
        codes,
        only: None,
        decision,
    }
}

/// First match wins.
const RULES: &[Rule] = &[
    rule(200..=299, Decision::Delivered),
    Rule {
        codes: 404..=404,
        only: Some(ReceiverKind::Discord),
        decision: Decision::Permanent("webhook or message gone (deleted in Discord)"),
    },
    rule(408..=408, Decision::Retry("request timeout")),
    rule(429..=429, Decision::Retry("rate limited")),
    rule(
        400..=400,
        Decision::Permanent("request rejected as invalid"),
    ),
    rule(
        401..=401,
        Decision::Permanent("unauthorized: check the key"),
    ),
    rule(
        403..=403,
        Decision::Permanent("forbidden: check the key and its rights"),
    ),
    rule(404..=404, Decision::Permanent("not found: check the URL")),
    rule(413..=413, Decision::Permanent("payload too large")),
    rule(400..=499, Decision::Permanent("client error")),
    rule(500..=599, Decision::Retry("server error")),
    // Redirects are not followed (a token-bearing URL must not travel elsewhere).
    rule(300..=399, Decision::Permanent("unexpected redirect")),
    rule(
        0..=199,
        Decision::Permanent("unexpected informational status"),
    ),
    rule(600..=u16::MAX, Decision::Permanent("invalid status")),
];

/// The decision for `status` from `kind`'s API.
pub fn decide(kind: ReceiverKind, status: u16) -> Decision {
    RULES
        .iter()
        .find(|r| r.codes.contains(&status) && r.only.is_none_or(|k| k == kind))
        .map(|r| r.decision)
        .unwrap_or(Decision::Permanent("invalid status"))
}

/// Maps a complete HTTP answer to `Ok` or a typed error with the status, the table's
/// reason, a short scrubbed excerpt of the body and the server's retry hint.
pub fn classify_response(
    kind: ReceiverKind,
    status: u16,
    headers: &HeaderMap,
    body: &str,
    redactor: &Redactor,
    now: SystemTime,
) -> Result<(), DeliveryError> {
    let reason = |what: &str| {
        let excerpt = excerpt(body, redactor);
        if excerpt.is_empty() {
            format!("HTTP {status}: {what}")
        } else {
            format!("HTTP {status}: {what}: {excerpt}")
        }
    };
    match decide(kind, status) {
        Decision::Delivered => Ok(()),
        Decision::Retry(what) => Err(DeliveryError::Retryable {
            reason: reason(what),
            retry_after: retry_hint(headers, body, now),
        }),
        Decision::Permanent(what) => Err(DeliveryError::permanent(reason(what))),
    }
}

/// The longest wait the server asked for: `Retry-After` (delay-seconds or HTTP-date),
/// Discord's `X-RateLimit-Reset-After` header and JSON `retry_after` (float seconds).
pub fn retry_hint(headers: &HeaderMap, body: &str, now: SystemTime) -> Option<Duration> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    [
        header("retry-after").and_then(|v| parse_retry_after(v, now)),
        header("x-ratelimit-reset-after").and_then(parse_seconds),
        json_retry_after(body),
    ]
    .into_iter()
    .flatten()
    .max()
}

/// `Retry-After`: seconds (`120`, also `1.5`) or an HTTP date (a past date is zero).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Some(d) = parse_seconds(value) {
        return Some(d);
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let at = SystemTime::from(at.with_timezone(&chrono::Utc));
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

fn parse_seconds(value: &str) -> Option<Duration> {
    let secs: f64 = value.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(86_400.0)))
}

/// Discord's 429 body: `{"message", "retry_after": 0.5, "global"}`.
fn json_retry_after(body: &str) -> Option<Duration> {
    let value: serde_json::Value = serde_json::from_str(body).ok()?;
    let secs = value.get("retry_after")?.as_f64()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(86_400.0)))
}

/// At most 200 characters of the body on one line, secrets scrubbed.
fn excerpt(body: &str, redactor: &Redactor) -> String {
    let one_line = body.split_whitespace().collect::<Vec<_>>().join(" ");
    super::text::truncate(&redactor.scrub(&one_line), 200)
}

/// A request that got no answer: connection refused or dropped, and the like, are
/// retryable; a server certificate that does not verify is permanent (it needs a fix
/// in the config or at the server, as with SMTP).
pub fn classify_transport(
    err: &hyper_util::client::legacy::Error,
    redactor: &Redactor,
) -> DeliveryError {
    let detail = redactor.scrub(&error_chain(err));
    if caused_by_tls(err) {
        DeliveryError::permanent(format!("TLS error: {detail}"))
    } else if err.is_connect() {
        DeliveryError::retryable(format!("connection failed: {detail}"))
    } else {
        DeliveryError::retryable(format!("request failed: {detail}"))
    }
}

/// An SMTP delivery error: the server's 4xx (transient), timeouts and network errors are
/// retryable; its 5xx, TLS failures (untrusted certificate, STARTTLS not offered) and
/// client-side protocol errors (no common AUTH mechanism) are permanent.
pub fn classify_smtp(err: &lettre::transport::smtp::Error, redactor: &Redactor) -> DeliveryError {
    let detail = redactor.scrub(&error_chain(err));
    if err.is_permanent() {
        DeliveryError::permanent(format!("SMTP rejected: {detail}"))
    } else if err.is_transient() || err.is_timeout() {
        DeliveryError::retryable(format!("SMTP deferred: {detail}"))
    } else if err.is_tls() || err.is_client() || caused_by_tls(err) {
        DeliveryError::permanent(format!("SMTP TLS or protocol error: {detail}"))
    } else {
        DeliveryError::retryable(format!("SMTP connection failed: {detail}"))
    }
}

/// Whether a rustls error (a certificate or handshake failure) is in the chain, also
/// when wrapped in an `io::Error`.
fn caused_by_tls(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(err);
    while let Some(e) = current {
        if e.downcast_ref::<rustls::Error>().is_some() {
            return true;
        }
        if let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            && caused_by_tls(inner)
        {
            return true;
        }
        current = e.source();
    }
    false
}

/// `outer: inner: innermost`, skipping repeats.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current = Some(err);
    while let Some(e) = current {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        current = e.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn retry_after_as_seconds_date_and_discord_float() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480); // 2015-10-21T07:28:00Z
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-1", now), None);

        let mut headers = HeaderMap::new();
        headers.insert("retry-after", HeaderValue::from_static("1"));
        let body = r#"{"message":"You are being rate limited.","retry_after":2.5,"global":false}"#;
        assert_eq!(
            retry_hint(&headers, body, now),
            Some(Duration::from_millis(2500))
        );
        assert_eq!(retry_hint(&HeaderMap::new(), "", now), None);
    }

    #[test]
    fn error_bodies_are_scrubbed_and_cut() {
        let r = Redactor::new(["KEY123456"]);
        let body = format!("invalid routing key KEY123456 {}", "x".repeat(500));
        let err = classify_response(
            ReceiverKind::PagerDuty,
            400,
            &HeaderMap::new(),
            &body,
            &r,
            SystemTime::now(),
        )
        .unwrap_err();
        assert!(!err.is_retryable());
        assert!(
            err.reason().starts_with(
                "HTTP 400: request rejected as invalid: invalid routing key <redacted>"
            )
        );
        assert!(err.reason().chars().count() < 300);
    }
}
