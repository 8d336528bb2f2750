//! Email against a real SMTP server: Python's aiosmtpd on loopback, STARTTLS required
//! before AUTH, AUTH required, a certificate from a private CA that the receiver trusts
//! through `ca_file`. Three transitions of one incident arrive as one thread.
//!
//! The interpreter is `$MCPULSE_PYTHON`, else the test virtualenv that
//! `scripts/test-deps.sh` builds (tests/python/requirements.txt pins aiosmtpd).

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::{later, trigger};
use mcpulse_schemas::{AlertAction, AlertStatus};
use mcpulse_sinks::receivers::{EmailConfig, EmailReceiver, Outcome, Receiver, SinkHandle};

const USER: &str = "alerts@example.com";
const PASSWORD: &str = "smtp-pa55word-for-tests";

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("MCPULSE_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = std::env::var_os("MCPULSE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/mcpulse/venv")
        });
    let python = venv.join("bin/python");
    assert!(
        python.exists(),
        "no test virtualenv at {}: run `bash scripts/test-deps.sh`",
        venv.display()
    );
    python
}

/// The CA and the server's certificate and key, as PEM files.
struct Pki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn make_pki(dir: &Path) -> Pki {
    let generated = common::pki();
    let pki = Pki {
        ca: dir.join("ca.pem"),
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    std::fs::write(&pki.ca, generated.ca_pem).unwrap();
    std::fs::write(&pki.cert, generated.cert_pem).unwrap();
    std::fs::write(&pki.key, generated.key_pem).unwrap();
    pki
}

/// The aiosmtpd server, killed on drop.
struct Smtp {
    child: Child,
    port: u16,
    out: PathBuf,
    _dir: tempfile::TempDir,
    pki: Pki,
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_smtp() -> Smtp {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path());
    let out = dir.path().join("mail");
    std::fs::create_dir(&out).unwrap();
    let port = free_port();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/smtp_server.py");
    let mut child = Command::new(python())
        .arg(script)
        .arg(port.to_string())
        .arg(&pki.cert)
        .arg(&pki.key)
        .args([USER, PASSWORD])
        .arg(&out)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start aiosmtpd");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(
        line.trim(),
        "READY",
        "aiosmtpd did not start (is it installed? see tests/python/requirements.txt)"
    );
    Smtp {
        child,
        port,
        out,
        _dir: dir,
        pki,
    }
}

fn config(smtp: &Smtp, extra: &str) -> EmailConfig {
    serde_yaml_ng::from_str(&format!(
        "smtp_host: 127.0.0.1\nport: {}\ntls: starttls\nusername: {USER}\npassword: {PASSWORD}\n\
         from: 'mcpulse <{USER}>'\nto: [oncall@example.com, 'SRE <sre@example.com>']\ntimeout: 10s\n{extra}",
        smtp.port
    ))
    .unwrap()
}

fn trusted(smtp: &Smtp) -> EmailReceiver {
    EmailReceiver::new(config(smtp, &format!("ca_file: {}", smtp.pki.ca.display()))).unwrap()
}

/// A received mail: unfolded headers (lower-case names) and the raw text.
struct Mail {
    headers: Vec<(String, String)>,
    raw: String,
    meta: serde_json::Value,
}

impl Mail {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == &name.to_lowercase())
            .map(|(_, v)| v.as_str())
    }
}

fn received(smtp: &Smtp) -> Vec<Mail> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(&smtp.out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "eml"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let raw = std::fs::read_to_string(&path)
                .unwrap()
                .replace("\r\n", "\n");
            let head = raw.split("\n\n").next().unwrap();
            let mut headers: Vec<(String, String)> = Vec::new();
            for line in head.lines() {
                if line.starts_with([' ', '\t']) {
                    headers
                        .last_mut()
                        .unwrap()
                        .1
                        .push_str(&format!(" {}", line.trim()));
                } else if let Some((k, v)) = line.split_once(':') {
                    headers.push((k.trim().to_lowercase(), v.trim().to_owned()));
                }
            }
            let meta = std::fs::read_to_string(path.with_extension("json")).unwrap();
            Mail {
                headers,
                raw,
                meta: serde_json::from_str(&meta).unwrap(),
            }
        })
        .collect()
}

fn handle_of(outcome: Outcome) -> SinkHandle {
    match outcome {
        Outcome::Sent { handle: Some(h) } => h,
        other => panic!("expected a handle, got {other:?}"),
    }
}

#[tokio::test]
async fn one_incident_is_one_thread_over_starttls_with_auth() {
    let smtp = start_smtp();
    let email = trusted(&smtp);
    let h1 = handle_of(email.deliver(&trigger(), None).await.unwrap());
    let h2 = handle_of(
        email
            .deliver(
                &later(AlertAction::Update, AlertStatus::Flapping, 6),
                Some(&h1),
            )
            .await
            .unwrap(),
    );
    let h3 = handle_of(
        email
            .deliver(
                &later(AlertAction::Resolve, AlertStatus::Resolved, 30),
                Some(&h2),
            )
            .await
            .unwrap(),
    );
    let SinkHandle::Email {
        root_message_id,
        last_message_id,
        subject,
    } = &h3
    else {
        panic!("{h3:?}")
    };
    assert_eq!(root_message_id, "<3f2a9c@mcpulse>");
    assert_eq!(subject, "[P1] acme/weather unreachable");

    let mails = received(&smtp);
    assert_eq!(mails.len(), 3);
    let ids: Vec<&str> = mails
        .iter()
        .map(|m| m.header("Message-ID").unwrap())
        .collect();
    assert_eq!(ids[0], "<3f2a9c@mcpulse>");
    assert_eq!(ids[2], last_message_id);
    assert!(ids[1] != ids[0] && ids[2] != ids[1]);
    assert_eq!(mails[0].header("In-Reply-To"), None);
    assert_eq!(mails[0].header("References"), None);
    assert_eq!(mails[1].header("In-Reply-To"), Some(ids[0]));
    assert_eq!(mails[1].header("References"), Some(ids[0]));
    assert_eq!(mails[2].header("In-Reply-To"), Some(ids[1]));
    assert_eq!(
        mails[2].header("References"),
        Some(format!("{} {}", ids[0], ids[1]).as_str())
    );
    assert_eq!(
        mails[0].header("Subject"),
        Some("[P1] acme/weather unreachable")
    );
    for m in &mails[1..] {
        assert_eq!(
            m.header("Subject"),
            Some("Re: [P1] acme/weather unreachable")
        );
    }
    for m in &mails {
        assert_eq!(m.meta["tls"], true, "STARTTLS before the mail");
        assert_eq!(m.meta["authenticated"], true);
        assert_eq!(m.meta["mail_from"], USER);
        assert_eq!(
            m.meta["rcpt_tos"],
            serde_json::json!(["oncall@example.com", "sre@example.com"])
        );
        assert!(
            m.header("Content-Type")
                .unwrap()
                .starts_with("multipart/alternative")
        );
        assert!(m.raw.contains("Content-Type: text/plain"), "{}", m.raw);
        assert!(m.raw.contains("Content-Type: text/html"));
        assert!(m.header("Date").is_some());
        assert!(m.header("From").unwrap().contains(USER));
    }
    assert!(mails[2].raw.contains("RESOLVED after 30m"));
}

#[tokio::test]
async fn an_untrusted_certificate_is_refused_permanently() {
    let smtp = start_smtp();
    let email = EmailReceiver::new(config(&smtp, "")).unwrap();
    let err = email.deliver(&trigger(), None).await.unwrap_err();
    assert!(!err.is_retryable(), "{err}");
    assert!(received(&smtp).is_empty());
}

#[tokio::test]
async fn a_wrong_password_is_permanent_and_not_echoed() {
    let smtp = start_smtp();
    let mut c = config(&smtp, &format!("ca_file: {}", smtp.pki.ca.display()));
    c.password = Some(mcpulse_sinks::receivers::Secret::new("wrong-pa55word-xyz"));
    let email = EmailReceiver::new(c).unwrap();
    let err = email.deliver(&trigger(), None).await.unwrap_err();
    assert!(!err.is_retryable(), "{err}");
    assert!(!err.to_string().contains("wrong-pa55word-xyz"));
}

#[tokio::test]
async fn a_transient_refusal_is_retryable() {
    let smtp = start_smtp();
    let mut c = config(&smtp, &format!("ca_file: {}", smtp.pki.ca.display()));
    c.to = vec!["defer@example.com".into()];
    let err = EmailReceiver::new(c)
        .unwrap()
        .deliver(&trigger(), None)
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(err.reason().contains("451"), "{err}");
}

#[tokio::test]
async fn no_server_is_retryable() {
    let email = EmailReceiver::new(
        serde_yaml_ng::from_str(&format!(
            "smtp_host: 127.0.0.1\nport: {}\nfrom: a@example.com\nto: [b@example.com]\ntimeout: 2s",
            free_port()
        ))
        .unwrap(),
    )
    .unwrap();
    let err = email.deliver(&trigger(), None).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
}

#[tokio::test]
async fn render_shows_the_thread_headers_not_the_password() {
    let email = EmailReceiver::new(
        serde_yaml_ng::from_str(&format!(
            "smtp_host: smtp.example.com\nusername: u\npassword: {PASSWORD}\nfrom: a@example.com\nto: [b@example.com]"
        ))
        .unwrap(),
    )
    .unwrap();
    let first = &email.render(&trigger(), None)[0];
    assert_eq!(first.method, "SMTP");
    assert_eq!(first.url_redacted, "smtp://smtp.example.com:587 (starttls)");
    assert!(
        first
            .headers_redacted
            .contains(&("Message-ID".into(), "<3f2a9c@mcpulse>".into()))
    );
    let handle = SinkHandle::Email {
        root_message_id: "<3f2a9c@mcpulse>".into(),
        last_message_id: "<3f2a9c@mcpulse>".into(),
        subject: "[P1] acme/weather unreachable".into(),
    };
    let next = &email.render(
        &later(AlertAction::Resolve, AlertStatus::Resolved, 3),
        Some(&handle),
    )[0];
    assert!(
        next.headers_redacted
            .contains(&("In-Reply-To".into(), "<3f2a9c@mcpulse>".into()))
    );
    assert!(next.body["text"].as_str().unwrap().contains("RESOLVED"));
    assert!(next.body["html"].as_str().unwrap().contains("<table"));
    assert!(!format!("{first:?}{next:?}{email:?}").contains(PASSWORD));
    // Plaintext only towards loopback.
    let remote: EmailConfig = serde_yaml_ng::from_str(
        "smtp_host: smtp.example.com\ntls: plaintext_loopback\nfrom: a@example.com\nto: [b@example.com]",
    )
    .unwrap();
    assert!(
        EmailReceiver::new(remote)
            .unwrap_err()
            .to_string()
            .contains("plaintext_loopback")
    );
    assert!(
        serde_yaml_ng::from_str::<EmailConfig>("smtp_host: x\ntls: none\nfrom: a@b.c\nto: [d@e.f]")
            .is_err()
    );
}
