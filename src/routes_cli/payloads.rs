//! What each integration of a receiver would send for an event: the receivers' pure
//! `render`, given the handle the receiver would hold by then.

use mcpulse_schemas::{AlertAction, AlertEvent};
use mcpulse_sinks::receivers::{ReceiverKind, RenderedRequest, SinkHandle};

use super::integrations::BuiltIntegration;

/// Whether a receiver holds a handle for an incident before this transition, when
/// nothing else is known: every transition but a trigger or blip follows a trigger that
/// was delivered.
pub fn follows_a_delivery(event: &AlertEvent) -> bool {
    !matches!(event.action, AlertAction::Trigger | AlertAction::Blip)
}

/// The handle a receiver of `kind` holds for `event`'s incident once something was
/// delivered for it (placeholders where only the provider knows the value); webhooks
/// keep none.
pub fn assumed_handle(kind: ReceiverKind, event: &AlertEvent) -> Option<SinkHandle> {
    let handle = match kind {
        ReceiverKind::PagerDuty => SinkHandle::PagerDuty {
            dedup_key: event.dedup_key.clone(),
        },
        ReceiverKind::OpsGenie => SinkHandle::OpsGenie {
            alias: event.dedup_key.clone(),
        },
        ReceiverKind::Discord => SinkHandle::Discord {
            message_id: "MESSAGE_ID".into(),
            thread_id: None,
        },
        ReceiverKind::Email => {
            let first = format!("<{}@first-message>", event.incident_id);
            SinkHandle::Email {
                root_message_id: first.clone(),
                last_message_id: first,
                subject: "(the subject of the first message)".into(),
            }
        }
        ReceiverKind::Webhook => return None,
    };
    Some(handle)
}

/// The requests `integration` would make for `event`, with a handle if `delivered_before`.
pub fn render(
    integration: &BuiltIntegration,
    event: &AlertEvent,
    delivered_before: bool,
) -> Vec<RenderedRequest> {
    let kind = integration.receiver.kind();
    let handle = delivered_before
        .then(|| assumed_handle(kind, event))
        .flatten();
    integration.receiver.render(event, handle.as_ref())
}

/// A request as `routes test` prints it: method and URL, headers, then the body
/// (pretty JSON), indented by `indent`.
pub fn display(request: &RenderedRequest, indent: &str) -> String {
    let mut text = format!("{indent}{} {}\n", request.method, request.url_redacted);
    for (name, value) in &request.headers_redacted {
        text.push_str(&format!("{indent}{name}: {value}\n"));
    }
    let body = serde_json::to_string_pretty(&request.body).unwrap_or_default();
    for line in body.lines() {
        text.push_str(&format!("{indent}{line}\n"));
    }
    text
}
