//! The HTTP receivers over real TLS (rustls with ring): a server whose certificate comes
//! from a private CA is reached when that CA is trusted, and refused — permanently, and
//! without sending anything — when it is not.

mod common;

use std::sync::{Arc, Mutex};

use common::{TestPki, pki, trigger};
use mcpulse_sinks::receivers::{HttpClient, PagerDutyConfig, PagerDutyReceiver, Receiver};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A minimal HTTPS server answering every request 202; returns its URL and the request
/// heads it read.
async fn tls_server(pki: &TestPki) -> (String, Arc<Mutex<Vec<String>>>) {
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![CertificateDer::from(pki.cert_der.clone())],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.key_der.clone())),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let heads = Arc::new(Mutex::new(Vec::new()));
    let seen = heads.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let (acceptor, seen) = (acceptor.clone(), seen.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !String::from_utf8_lossy(&buf).contains("\r\n\r\n") {
                    let n = tls.read(&mut chunk).await.unwrap();
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                let text = String::from_utf8_lossy(&buf).into_owned();
                seen.lock()
                    .unwrap()
                    .push(text.split("\r\n\r\n").next().unwrap().to_owned());
                let body = r#"{"status":"success","message":"Event processed"}"#;
                let reply = format!(
                    "HTTP/1.1 202 Accepted\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(reply.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (url, heads)
}

fn pagerduty(url: &str, http: HttpClient) -> PagerDutyReceiver {
    let config: PagerDutyConfig = serde_yaml_ng::from_str(&format!(
        "routing_key: R0UT1NGKEY0123456789abcdefABCDEF\nurl: {url}\ntimeout: 5s"
    ))
    .unwrap();
    PagerDutyReceiver::new(config, http).unwrap()
}

#[tokio::test]
async fn https_to_a_trusted_ca_and_refusal_of_an_unknown_one() {
    let pki = pki();
    let (url, heads) = tls_server(&pki).await;

    let trusting = HttpClient::with_extra_roots(pki.ca_pem.as_bytes()).unwrap();
    pagerduty(&url, trusting)
        .deliver(&trigger(), None)
        .await
        .unwrap();
    let seen = heads.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert!(
        seen[0].starts_with("POST /v2/enqueue HTTP/1.1"),
        "{}",
        seen[0]
    );

    let err = pagerduty(&url, HttpClient::new().unwrap())
        .deliver(&trigger(), None)
        .await
        .unwrap_err();
    assert!(!err.is_retryable(), "{err}");
    assert!(err.reason().contains("certificate"), "{err}");
    assert_eq!(heads.lock().unwrap().len(), 1);
}
