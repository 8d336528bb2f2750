//! The probe HTTP client against loopback servers: timings, SSE, and failure classification.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, NaiveDate, Utc};
use http::{Method, Request};
use mcpulse_ingest::prober::timed_http::{
    Connection, Deadlines, Endpoint, SseEvent, TlsSettings, connect,
};
use mcpulse_schemas::probe::{FailureReason, Phase, PhaseTimings};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

// ---- a tiny HTTP/1.1 test server -------------------------------------------------------

/// Serves requests on one connection: `/sse` streams events (chunked), `/slow` never
/// answers, `/missing` is 404, anything else echoes JSON with the request's index on the
/// connection and its `Host` header.
async fn serve_http<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) {
    let mut buf = Vec::new();
    let mut index = 0;
    loop {
        let head_end = loop {
            if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break pos + 4;
            }
            let mut chunk = [0u8; 4096];
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let mut request_line = lines.next().unwrap().split(' ');
        let method = request_line.next().unwrap().to_owned();
        let path = request_line.next().unwrap().to_owned();
        let mut host = String::new();
        let mut length = 0usize;
        for line in lines {
            if let Some((name, value)) = line.split_once(':') {
                match name.trim().to_ascii_lowercase().as_str() {
                    "host" => host = value.trim().to_owned(),
                    "content-length" => length = value.trim().parse().unwrap(),
                    _ => {}
                }
            }
        }
        while buf.len() < head_end + length {
            let mut chunk = [0u8; 4096];
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf.drain(..head_end + length);
        match path.as_str() {
            "/slow" => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
            "/sse" => {
                let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\
                            Transfer-Encoding: chunked\r\n\r\n";
                if s.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let pieces: [&[u8]; 5] = [
                    b": keep-alive comment\r\nevent: endpoint\r\ndata: /messages?sessionId=abc\r",
                    b"\n\r\n",
                    b"id: 1\ndata: {\"a\":1,\ndata: \"b\":2}\n\n",
                    b"event: message\rdata: third\r\r",
                    b"data: never dispatched",
                ];
                for piece in pieces {
                    let chunk =
                        [format!("{:x}\r\n", piece.len()).as_bytes(), piece, b"\r\n"].concat();
                    if s.write_all(&chunk).await.is_err() {
                        return;
                    }
                    s.flush().await.ok();
                    tokio::time::sleep(Duration::from_millis(30)).await;
                }
                if s.write_all(b"0\r\n\r\n").await.is_err() {
                    return;
                }
            }
            _ => {
                let (status, body) = if path == "/missing" {
                    ("404 Not Found", "{}".to_owned())
                } else {
                    (
                        "200 OK",
                        serde_json::json!({"index": index, "host": host, "method": method})
                            .to_string(),
                    )
                };
                let response = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\n\
                     Content-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                if s.write_all(response.as_bytes()).await.is_err() {
                    return;
                }
            }
        }
        s.flush().await.ok();
        index += 1;
    }
}

async fn http_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(serve_http(stream));
        }
    });
    addr
}

/// Accepts connections and holds them open without ever reading or writing.
async fn silent_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            held.push(stream);
        }
    });
    addr
}

struct TestCert {
    der: CertificateDer<'static>,
    key: Vec<u8>,
    not_after: DateTime<Utc>,
}

/// A self-signed certificate for `localhost` valid from `not_before` to `not_after` (dates).
fn cert(not_before: NaiveDate, not_after: NaiveDate) -> TestCert {
    use chrono::Datelike;
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    let ymd = |d: NaiveDate| rcgen::date_time_ymd(d.year(), d.month() as u8, d.day() as u8);
    params.not_before = ymd(not_before);
    params.not_after = ymd(not_after);
    let cert = params.self_signed(&key).unwrap();
    TestCert {
        der: cert.der().clone(),
        key: key.serialize_der(),
        not_after: not_after.and_hms_opt(0, 0, 0).unwrap().and_utc(),
    }
}

fn valid_cert() -> TestCert {
    let today = Utc::now().date_naive();
    cert(today - chrono::Days::new(1), today + chrono::Days::new(5))
}

async fn tls_server(cert: &TestCert) -> SocketAddr {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.key.clone()));
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der.clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(stream).await {
                    serve_http(tls).await;
                }
            });
        }
    });
    addr
}

fn endpoint(https: bool, host: &str, addr: SocketAddr) -> Endpoint {
    Endpoint {
        scheme_https: https,
        host: host.to_owned(),
        port: addr.port(),
        addrs: vec![addr],
        dns_ms: Some(0.5),
    }
}

fn post(path: &str) -> Request<Bytes> {
    Request::builder()
        .method(Method::POST)
        .uri(path)
        .header("content-type", "application/json")
        .header("authorization", "Bearer secret-token")
        .body(Bytes::from_static(
            br#"{"jsonrpc":"2.0","id":1,"method":"initialize"}"#,
        ))
        .unwrap()
}

fn in_ms(ms: u64) -> Instant {
    Instant::now() + Duration::from_millis(ms)
}

async fn json(conn: &mut Connection, path: &str, phase: Phase) -> (u16, serde_json::Value) {
    let response = conn.send(post(path), phase, in_ms(5000)).await.unwrap();
    let status = response.status.as_u16();
    assert!(response.head_ms >= 0.0);
    let body = response.read_all(1 << 20, in_ms(5000)).await.unwrap();
    (status, serde_json::from_slice(&body).unwrap())
}

// ---- tests -------------------------------------------------------------------------------

#[tokio::test]
async fn plain_http_times_phases_and_reuses_the_connection() {
    let addr = http_server().await;
    let ep = endpoint(false, "localhost", addr);
    let mut conn = connect(&ep, Deadlines::default(), &TlsSettings::default())
        .await
        .unwrap();
    assert_eq!(conn.info().remote_addr, addr);
    assert!(conn.info().connect_ms >= 0.0);
    assert_eq!(conn.info().tls_ms, None);
    assert_eq!(conn.first_byte_ms(), None);

    let (status, body) = json(&mut conn, "http://localhost/mcp", Phase::Initialize).await;
    assert_eq!(status, 200);
    assert_eq!(body["index"], 0);
    assert_eq!(body["host"], format!("localhost:{}", addr.port()));
    let first_byte = conn.first_byte_ms().unwrap();
    assert!(first_byte >= 0.0);

    let (status, body) = json(&mut conn, "/mcp", Phase::ToolsList).await;
    assert_eq!((status, body["index"].clone()), (200, 1.into()));
    let (status, _) = json(&mut conn, "/missing", Phase::SessionDelete).await;
    assert_eq!(status, 404);
    assert_eq!(
        conn.first_byte_ms(),
        Some(first_byte),
        "first request decides"
    );

    let mut phases = PhaseTimings::default();
    conn.record_phases(&mut phases);
    assert_eq!(phases.dns_ms, Some(0.5));
    assert!(phases.connect_ms.unwrap() >= 0.0);
    assert!(phases.first_byte_ms.unwrap() >= 0.0);
    assert_eq!(phases.tls_ms, None);
}

#[tokio::test]
async fn sse_stream_parses_events_while_another_connection_posts() {
    let addr = http_server().await;
    let ep = endpoint(false, "127.0.0.1", addr);
    let mut stream_conn = connect(&ep, Deadlines::default(), &TlsSettings::default())
        .await
        .unwrap();
    let get = Request::builder()
        .uri("/sse")
        .header("accept", "text/event-stream")
        .body(Bytes::new())
        .unwrap();
    let response = stream_conn
        .send(get, Phase::Discover, in_ms(5000))
        .await
        .unwrap();
    assert_eq!(response.status, 200);
    assert!(response.is_event_stream());
    let mut sse = response.into_sse(64 * 1024);
    drop(stream_conn); // the stream keeps its connection alive

    let first = sse.next_event(in_ms(5000)).await.unwrap().unwrap();
    assert_eq!(
        first,
        SseEvent {
            event: "endpoint".into(),
            data: "/messages?sessionId=abc".into(),
            id: None
        }
    );

    let mut post_conn = connect(&ep, Deadlines::default(), &TlsSettings::default())
        .await
        .unwrap();
    let (status, _) = json(&mut post_conn, "/messages?sessionId=abc", Phase::Initialize).await;
    assert_eq!(status, 200);

    let second = sse.next_event(in_ms(5000)).await.unwrap().unwrap();
    assert_eq!(second.event, "message");
    assert_eq!(second.data, "{\"a\":1,\n\"b\":2}");
    assert_eq!(second.id.as_deref(), Some("1"));
    let third = sse.next_event(in_ms(5000)).await.unwrap().unwrap();
    assert_eq!(
        (third.event.as_str(), third.data.as_str()),
        ("message", "third")
    );
    assert_eq!(third.id.as_deref(), Some("1"), "the last event id persists");
    assert_eq!(sse.next_event(in_ms(5000)).await.unwrap(), None);
}

#[tokio::test]
async fn refused_port_is_tcp_refused() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let err = connect(
        &endpoint(false, "localhost", addr),
        Deadlines::default(),
        &TlsSettings::default(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.reason, FailureReason::TcpRefused, "{err}");
    assert_eq!(err.phase, Phase::Connect);
}

#[tokio::test]
async fn full_backlog_is_connect_timeout() {
    // A listener with a tiny backlog that never accepts: once its queue is full the kernel
    // drops SYNs, so a connect hangs like one to a black-holed address.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut held = Vec::new();
    let mut saturated = false;
    for _ in 0..16 {
        match tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => held.push(stream),
            _ => {
                saturated = true;
                break;
            }
        }
    }
    if !saturated {
        eprintln!("kernel kept accepting SYNs; skipping the connect_timeout check");
        return;
    }
    let deadlines = Deadlines {
        connect: Duration::from_millis(300),
        ..Deadlines::default()
    };
    let start = std::time::Instant::now();
    let err = connect(
        &endpoint(false, "localhost", addr),
        deadlines,
        &TlsSettings::default(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.reason, FailureReason::ConnectTimeout, "{err}");
    assert_eq!(err.phase, Phase::Connect);
    assert!(start.elapsed() < Duration::from_millis(1300));
    drop(listener);
}

#[tokio::test]
async fn silent_server_times_out_in_the_callers_phase() {
    let addr = silent_server().await;
    let mut conn = connect(
        &endpoint(false, "localhost", addr),
        Deadlines::default(),
        &TlsSettings::default(),
    )
    .await
    .unwrap();
    let start = std::time::Instant::now();
    let err = conn
        .send(post("/mcp"), Phase::Initialize, in_ms(300))
        .await
        .unwrap_err();
    let elapsed = start.elapsed();
    assert_eq!(err.reason, FailureReason::Timeout, "{err}");
    assert_eq!(err.phase, Phase::Initialize);
    assert!(elapsed >= Duration::from_millis(290), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(1300), "{elapsed:?}");
    assert!(!err.detail.contains("secret-token"));
    assert_eq!(conn.first_byte_ms(), None);
}

#[tokio::test]
async fn a_hanging_response_head_on_a_live_server_is_a_timeout() {
    let addr = http_server().await;
    let mut conn = connect(
        &endpoint(false, "localhost", addr),
        Deadlines::default(),
        &TlsSettings::default(),
    )
    .await
    .unwrap();
    let err = conn
        .send(post("/slow"), Phase::ToolsList, in_ms(200))
        .await
        .unwrap_err();
    assert_eq!(
        (err.reason, err.phase),
        (FailureReason::Timeout, Phase::ToolsList)
    );
}

#[tokio::test]
async fn tls_handshake_deadline_is_a_timeout_in_the_tls_phase() {
    let addr = silent_server().await;
    let deadlines = Deadlines {
        tls: Duration::from_millis(300),
        ..Deadlines::default()
    };
    let start = std::time::Instant::now();
    let err = connect(
        &endpoint(true, "localhost", addr),
        deadlines,
        &TlsSettings::default(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.reason, FailureReason::Timeout, "{err}");
    assert_eq!(err.phase, Phase::Tls);
    assert!(start.elapsed() < Duration::from_millis(1300));
}

#[tokio::test]
async fn untrusted_self_signed_certificate_is_unknown_issuer() {
    let cert = valid_cert();
    let addr = tls_server(&cert).await;
    let err = connect(
        &endpoint(true, "localhost", addr),
        Deadlines::default(),
        &TlsSettings::webpki_roots(),
    )
    .await
    .unwrap_err();
    assert_eq!(
        (err.reason, err.phase),
        (FailureReason::TlsError, Phase::Tls)
    );
    assert!(err.detail.contains("unknown issuer"), "{}", err.detail);
}

#[tokio::test]
async fn trusted_certificate_succeeds_and_reports_its_expiry() {
    let cert = valid_cert();
    let addr = tls_server(&cert).await;
    let tls = TlsSettings::with_extra_roots(std::slice::from_ref(&cert.der)).unwrap();
    let mut conn = connect(
        &endpoint(true, "localhost", addr),
        Deadlines::default(),
        &tls,
    )
    .await
    .unwrap();
    assert!(conn.info().tls_ms.unwrap() >= 0.0);
    assert_eq!(conn.info().tls_expires_at, Some(cert.not_after));
    let (status, body) = json(&mut conn, "/mcp", Phase::Initialize).await;
    assert_eq!(status, 200);
    assert_eq!(body["host"], format!("localhost:{}", addr.port()));
    let (_, body) = json(&mut conn, "/mcp", Phase::ToolsList).await;
    assert_eq!(body["index"], 1);
    let mut phases = PhaseTimings::default();
    conn.record_phases(&mut phases);
    assert!(phases.tls_ms.is_some() && phases.first_byte_ms.is_some());
}

#[tokio::test]
async fn wrong_hostname_is_a_tls_error_naming_it() {
    let cert = valid_cert();
    let addr = tls_server(&cert).await;
    let tls = TlsSettings::only_roots(std::slice::from_ref(&cert.der)).unwrap();
    let err = connect(
        &endpoint(true, "wrong.example", addr),
        Deadlines::default(),
        &tls,
    )
    .await
    .unwrap_err();
    assert_eq!(
        (err.reason, err.phase),
        (FailureReason::TlsError, Phase::Tls)
    );
    assert!(err.detail.contains("wrong.example"), "{}", err.detail);
    assert!(err.detail.contains("name mismatch"), "{}", err.detail);
}

#[tokio::test]
async fn expired_certificate_is_a_tls_error_saying_so() {
    let cert = cert(
        NaiveDate::from_ymd_opt(2020, 1, 1).unwrap(),
        NaiveDate::from_ymd_opt(2021, 1, 1).unwrap(),
    );
    let addr = tls_server(&cert).await;
    let tls = TlsSettings::only_roots(std::slice::from_ref(&cert.der)).unwrap();
    let err = connect(
        &endpoint(true, "localhost", addr),
        Deadlines::default(),
        &tls,
    )
    .await
    .unwrap_err();
    assert_eq!(
        (err.reason, err.phase),
        (FailureReason::TlsError, Phase::Tls)
    );
    assert!(err.detail.contains("expired"), "{}", err.detail);
}
