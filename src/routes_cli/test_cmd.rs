//! `mcpulse routes test FILE --incident …`: which routes and receivers an event reaches,
//! and the exact requests each integration would make (secrets redacted).

use std::path::Path;

use chrono::{DateTime, Utc};
use mcpulse_schemas::AlertEvent;
use mcpulse_sinks::routes::{RoutesFile, SilenceSet, explain};

use super::CliError;
use super::incident::IncidentArgs;
use super::integrations::Integrations;
use super::payloads;

/// Routes the event of `incident` through `path` at `at` (default: the event's time)
/// with `silences`, and prints the decision and the payloads.
pub fn run(
    path: &Path,
    incident: &IncidentArgs,
    at: Option<DateTime<Utc>>,
    silences: Option<&SilenceSet>,
) -> Result<(), CliError> {
    let file = RoutesFile::load(path)?;
    let integrations = Integrations::build(&file).map_err(CliError::Integrations)?;
    let event = incident.event(at)?;
    let now = at.unwrap_or(event.time);
    print!("{}", report(&file, &integrations, &event, now, silences));
    Ok(())
}

/// The decision, then every request each delivered receiver's integrations would make.
pub fn report(
    file: &RoutesFile,
    integrations: &Integrations,
    event: &AlertEvent,
    now: DateTime<Utc>,
    silences: Option<&SilenceSet>,
) -> String {
    let decision = explain(file, event, now, silences);
    let mut text = decision.to_string();
    let deliveries = decision.deliveries();
    if deliveries.is_empty() {
        text.push_str("\npayloads: none (nothing would be sent)\n");
        return file.redact(&text);
    }
    let delivered_before = payloads::follows_a_delivery(event);
    text.push_str("\npayloads");
    if delivered_before {
        text.push_str(
            " (as a follow-up: each receiver is assumed to have got the incident's earlier \
             notifications; MESSAGE_ID and the first message stand for what it recorded)",
        );
    }
    text.push_str(":\n");
    for delivery in deliveries {
        text.push_str(&format!(
            "→ {} (route {})\n",
            delivery.receiver, delivery.route_id
        ));
        for integration in integrations.of(&delivery.receiver) {
            let requests = payloads::render(integration, event, delivered_before);
            if requests.is_empty() {
                text.push_str(&format!(
                    "  {} ({}): nothing to send for this transition\n",
                    integration.kind, integration.path
                ));
            }
            for (i, request) in requests.iter().enumerate() {
                let n = match requests.len() {
                    1 => String::new(),
                    _ => format!(" request {} of {}", i + 1, requests.len()),
                };
                text.push_str(&format!(
                    "  {} ({}){n}:\n",
                    integration.kind, integration.path
                ));
                text.push_str(&payloads::display(request, "    "));
            }
        }
    }
    file.redact(&text)
}
