//! Email over SMTP with lettre: STARTTLS required (port 587) or implicit TLS (465),
//! authentication when a username is set, pooled connections.
//!
//! One conversation per incident: the first mail's `Message-ID` derives from the incident
//! (`<incident_id@mcpulse>`), each later one answers the previous (`In-Reply-To`) and
//! lists the thread (`References`), under the same subject with `Re: `. Every mail is
//! multipart/alternative: plain text and HTML. Message-IDs derive from the event, so a
//! replayed delivery repeats its id and mail clients show it once.
//!
//! Certificates are always verified, against the Mozilla roots plus `ca_file` if given.
//! Plaintext is possible only towards a loopback relay (`tls: plaintext_loopback`).

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use async_trait::async_trait;
use lettre::message::{Mailbox, Message, MultiPart};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::transport::smtp::{AsyncSmtpTransportBuilder, PoolConfig};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use mcpulse_schemas::AlertEvent;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::classify::classify_smtp;
use super::describe::{Change, change, evidence, facts, state_line, title};
use super::{
    ConfigError, DeliveryError, Outcome, Receiver, ReceiverKind, Redactor, RenderedRequest, Secret,
    SinkHandle,
};

/// Domain part of the Message-IDs mcpulse makes.
const MESSAGE_ID_DOMAIN: &str = "mcpulse";

/// `email:` receiver config.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// SMTP server (the name its certificate must match).
    pub smtp_host: String,
    /// Port. Default 587 for `starttls`, 465 for `implicit`, 25 for `plaintext_loopback`.
    #[serde(default)]
    pub port: Option<u16>,
    /// Transport security; see [`SmtpTls`]. Default `starttls`.
    #[serde(default)]
    pub tls: SmtpTls,
    /// PEM file of a CA (or self-signed server certificate) to trust besides the Mozilla
    /// roots, for a private relay. Verification itself is never turned off.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Login for SMTP AUTH (PLAIN or LOGIN, only ever after TLS unless
    /// `plaintext_loopback`). Needs `password`.
    #[serde(default)]
    pub username: Option<String>,
    /// Password for SMTP AUTH. Secret: give it as `${ENV}`.
    #[serde(default)]
    pub password: Option<Secret>,
    /// Sender, `alerts@example.com` or `mcpulse <alerts@example.com>`.
    pub from: String,
    /// Recipients (at least one).
    pub to: Vec<String>,
    /// Name announced in EHLO. Default `localhost`.
    #[serde(default)]
    pub hello_name: Option<String>,
    /// Timeout of each SMTP command. Default 30s.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Connections kept in the pool. Default 4.
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
}

/// How the SMTP connection is secured.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpTls {
    /// Plain connect, then STARTTLS, required: the delivery fails before AUTH or any
    /// mail data if the server does not offer it (no downgrade). Port 587.
    #[default]
    Starttls,
    /// TLS from the first byte. Port 465.
    Implicit,
    /// No TLS at all. Accepted only when `smtp_host` is a loopback address or
    /// `localhost` (a relay on the same machine); any other host is a config error.
    PlaintextLoopback,
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_max_connections() -> u32 {
    4
}

/// Delivers to one list of recipients through one SMTP server.
pub struct EmailReceiver {
    config: EmailConfig,
    from: Mailbox,
    to: Vec<Mailbox>,
    /// Built on first use: lettre's pool starts a task on the Tokio runtime.
    builder: AsyncSmtpTransportBuilder,
    transport: OnceLock<AsyncSmtpTransport<Tokio1Executor>>,
    port: u16,
    destination: String,
    redactor: Redactor,
}

impl std::fmt::Debug for EmailReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmailReceiver")
            .field("config", &self.config)
            .field("destination", &self.destination)
            .finish_non_exhaustive()
    }
}

/// One composed mail.
struct Mail {
    message_id: String,
    in_reply_to: Option<String>,
    references: Option<String>,
    subject: String,
    /// The thread's root id and subject, for the next handle.
    root_id: String,
    root_subject: String,
    text: String,
    html: String,
}

impl EmailReceiver {
    /// Validates the config (addresses, TLS choice, CA file) and prepares the transport;
    /// nothing connects until the first delivery. Drop it inside the Tokio runtime (the
    /// pool closes its connections on a task).
    pub fn new(config: EmailConfig) -> Result<Self, ConfigError> {
        let err = |field, msg: String| ConfigError::new("email", field, msg);
        let from: Mailbox = config
            .from
            .parse()
            .map_err(|e| err("from", format!("not a mailbox: {e}")))?;
        if config.to.is_empty() {
            return Err(err("to", "needs at least one recipient".into()));
        }
        let to = config
            .to
            .iter()
            .map(|a| {
                a.parse::<Mailbox>()
                    .map_err(|e| err("to", format!("{a:?}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if config.username.is_some() != config.password.is_some() {
            return Err(err("username", "username and password go together".into()));
        }
        if config.tls == SmtpTls::PlaintextLoopback && !is_loopback(&config.smtp_host) {
            return Err(err(
                "tls",
                "plaintext_loopback is only for a relay on this machine (127.0.0.1, ::1, localhost)".into(),
            ));
        }
        if config.max_connections == 0 {
            return Err(err("max_connections", "at least 1".into()));
        }
        let port = config.port.unwrap_or(match config.tls {
            SmtpTls::Starttls => 587,
            SmtpTls::Implicit => 465,
            SmtpTls::PlaintextLoopback => 25,
        });
        let builder = transport_builder(&config, port)?;
        let destination = format!("email:{}:{port}", config.smtp_host);
        let redactor = Redactor::new(config.password.as_ref().map(Secret::expose));
        Ok(EmailReceiver {
            config,
            from,
            to,
            builder,
            transport: OnceLock::new(),
            port,
            destination,
            redactor,
        })
    }

    fn transport(&self) -> &AsyncSmtpTransport<Tokio1Executor> {
        self.transport
            .get_or_init(|| self.builder.clone().build::<Tokio1Executor>())
    }

    fn compose(&self, event: &AlertEvent, handle: Option<&SinkHandle>) -> Mail {
        let local = message_id_local(&event.incident_id);
        let (message_id, in_reply_to, references, root_id, root_subject) = match handle {
            Some(SinkHandle::Email {
                root_message_id,
                last_message_id,
                subject,
            }) => {
                let id = format!("<{local}.{}@{MESSAGE_ID_DOMAIN}>", short(&event.event_id));
                let references = if root_message_id == last_message_id {
                    root_message_id.clone()
                } else {
                    format!("{root_message_id} {last_message_id}")
                };
                (
                    id,
                    Some(last_message_id.clone()),
                    Some(references),
                    root_message_id.clone(),
                    subject.clone(),
                )
            }
            _ => {
                let id = format!("<{local}@{MESSAGE_ID_DOMAIN}>");
                (id.clone(), None, None, id, title(event))
            }
        };
        let subject = if in_reply_to.is_some() {
            format!("Re: {root_subject}")
        } else {
            root_subject.clone()
        };
        Mail {
            message_id,
            in_reply_to,
            references,
            subject,
            root_id,
            root_subject,
            text: text_body(event),
            html: html_body(event),
        }
    }

    fn message(&self, mail: &Mail, event: &AlertEvent) -> Result<Message, DeliveryError> {
        let mut builder = Message::builder()
            .from(self.from.clone())
            .subject(mail.subject.clone())
            .message_id(Some(mail.message_id.clone()))
            .date(event.time.into());
        for to in &self.to {
            builder = builder.to(to.clone());
        }
        if let Some(parent) = &mail.in_reply_to {
            builder = builder.in_reply_to(parent.clone());
        }
        if let Some(references) = &mail.references {
            builder = builder.references(references.clone());
        }
        builder
            .multipart(MultiPart::alternative_plain_html(
                mail.text.clone(),
                mail.html.clone(),
            ))
            .map_err(|e| DeliveryError::permanent(format!("cannot build the mail: {e}")))
    }
}

fn transport_builder(
    config: &EmailConfig,
    port: u16,
) -> Result<AsyncSmtpTransportBuilder, ConfigError> {
    // `builder_dangerous` only means "no TLS chosen yet": it is chosen right below,
    // the same as `starttls_relay` (Tls::Required) and `relay` (Tls::Wrapper) do, plus
    // the extra trusted CA.
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&config.smtp_host)
        .port(port)
        .timeout(Some(config.timeout))
        .pool_config(PoolConfig::new().max_size(config.max_connections));
    let tls = match config.tls {
        SmtpTls::Starttls => Tls::Required(tls_parameters(config)?),
        SmtpTls::Implicit => Tls::Wrapper(tls_parameters(config)?),
        SmtpTls::PlaintextLoopback => Tls::None,
    };
    builder = builder.tls(tls);
    if let (Some(user), Some(password)) = (&config.username, &config.password) {
        builder = builder
            .credentials(Credentials::new(user.clone(), password.expose().to_owned()))
            .authentication(vec![Mechanism::Plain, Mechanism::Login]);
    }
    if let Some(name) = &config.hello_name {
        builder = builder.hello_name(ClientId::Domain(name.clone()));
    }
    Ok(builder)
}

fn tls_parameters(config: &EmailConfig) -> Result<TlsParameters, ConfigError> {
    let mut params = TlsParameters::builder(config.smtp_host.clone());
    if let Some(path) = &config.ca_file {
        let pem = std::fs::read(path).map_err(|e| {
            ConfigError::new("email", "ca_file", format!("{}: {e}", path.display()))
        })?;
        let cert = Certificate::from_pem(&pem).map_err(|e| {
            ConfigError::new("email", "ca_file", format!("{}: {e}", path.display()))
        })?;
        params = params.add_root_certificate(cert);
    }
    params
        .build_rustls()
        .map_err(|e| ConfigError::new("email", "tls", e.to_string()))
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The incident id when it is a plain atom (`[A-Za-z0-9_-]`, inner dots), else a hash.
fn message_id_local(incident_id: &str) -> String {
    let plain = !incident_id.is_empty()
        && incident_id.len() <= 128
        && incident_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !incident_id.starts_with('.')
        && !incident_id.ends_with('.')
        && !incident_id.contains("..");
    if plain {
        incident_id.to_owned()
    } else {
        hex::encode(&Sha256::digest(incident_id.as_bytes())[..16])
    }
}

/// 12 hex characters identifying an event.
fn short(event_id: &str) -> String {
    hex::encode(&Sha256::digest(event_id.as_bytes())[..6])
}

fn text_body(event: &AlertEvent) -> String {
    let mut text = format!("{}: {}\n\n", state_line(event), event.summary);
    for (label, value) in facts(event) {
        text.push_str(&format!("{:<16}{value}\n", format!("{label}:")));
    }
    if let Some(evidence) = evidence(event) {
        text.push_str(&format!("\nEvidence:\n{evidence}\n"));
    }
    text.push_str(&format!("\n-- \nmcpulse · event {}\n", event.event_id));
    text
}

fn html_body(event: &AlertEvent) -> String {
    let colour = match change(event) {
        Change::Resolve => "#2ecc71",
        Change::Suppress | Change::Blip => "#95a5a6",
        Change::Open => "#e74c3c",
    };
    let mut html = format!(
        "<!DOCTYPE html><html><body style=\"font-family:sans-serif\">\
         <div style=\"border-left:6px solid {colour};padding-left:12px\">\
         <h2 style=\"margin:0\">{}</h2><p>{}</p>",
        escape(&state_line(event)),
        escape(&event.summary)
    );
    html.push_str("<table cellpadding=\"4\">");
    for (label, value) in facts(event) {
        html.push_str(&format!(
            "<tr><th align=\"left\">{}</th><td>{}</td></tr>",
            escape(label),
            escape(&value)
        ));
    }
    html.push_str("</table>");
    if let Some(evidence) = evidence(event) {
        html.push_str(&format!(
            "<h3>Evidence</h3><pre>{}</pre>",
            escape(&evidence)
        ));
    }
    html.push_str(&format!(
        "<p style=\"color:#888\">mcpulse · event {}</p></div></body></html>",
        escape(&event.event_id)
    ));
    html
}

/// HTML-escapes text.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[async_trait]
impl Receiver for EmailReceiver {
    fn kind(&self) -> ReceiverKind {
        ReceiverKind::Email
    }

    fn destination(&self) -> &str {
        &self.destination
    }

    fn render(&self, event: &AlertEvent, handle: Option<&SinkHandle>) -> Vec<RenderedRequest> {
        let mail = self.compose(event, handle);
        let mut headers = vec![
            ("From".to_owned(), self.from.to_string()),
            (
                "To".to_owned(),
                self.to
                    .iter()
                    .map(Mailbox::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
            ("Subject".to_owned(), mail.subject.clone()),
            ("Message-ID".to_owned(), mail.message_id.clone()),
        ];
        if let Some(parent) = &mail.in_reply_to {
            headers.push(("In-Reply-To".to_owned(), parent.clone()));
        }
        if let Some(references) = &mail.references {
            headers.push(("References".to_owned(), references.clone()));
        }
        let tls = match self.config.tls {
            SmtpTls::Starttls => "starttls",
            SmtpTls::Implicit => "implicit-tls",
            SmtpTls::PlaintextLoopback => "plaintext-loopback",
        };
        let mut body = json!({"text": mail.text, "html": mail.html});
        self.redactor.scrub_json(&mut body);
        vec![RenderedRequest {
            method: "SMTP".into(),
            url_redacted: format!("smtp://{}:{} ({tls})", self.config.smtp_host, self.port),
            headers_redacted: headers
                .into_iter()
                .map(|(k, v)| (k, self.redactor.scrub(&v)))
                .collect(),
            body,
        }]
    }

    async fn deliver(
        &self,
        event: &AlertEvent,
        handle: Option<&SinkHandle>,
    ) -> Result<Outcome, DeliveryError> {
        let mail = self.compose(event, handle);
        let message = self.message(&mail, event)?;
        self.transport()
            .send(message)
            .await
            .map_err(|e| classify_smtp(&e, &self.redactor))?;
        Ok(Outcome::Sent {
            handle: Some(SinkHandle::Email {
                root_message_id: mail.root_id,
                last_message_id: mail.message_id,
                subject: mail.root_subject,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_are_plain_atoms() {
        assert_eq!(message_id_local("a1b2-c3"), "a1b2-c3");
        let hashed = message_id_local("acme/weather:x");
        assert_eq!(hashed.len(), 32);
        assert!(hashed.chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn plaintext_only_to_loopback() {
        assert!(is_loopback("127.0.0.1") && is_loopback("::1") && is_loopback("[::1]"));
        assert!(is_loopback("LOCALHOST"));
        assert!(!is_loopback("smtp.example.com") && !is_loopback("10.0.0.1"));
    }

    #[test]
    fn escapes_html() {
        assert_eq!(
            escape("<a href='x'>&</a>"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&lt;/a&gt;"
        );
    }
}
