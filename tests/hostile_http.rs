//! Hostile clients over raw TCP: connections that idle or stall are closed, a declared
//! oversize body is refused before it is sent, the connection cap leaves the server
//! answering, every error answered below the router carries the `{error, details}` body,
//! and a panicking handler answers 500 instead of resetting the connection.

mod common;

use std::io::Read;
use std::time::Duration;

use common::server::{TestServer, error_details};
use feedgraph::http::auth::Role;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A safety net so a broken server fails the test instead of hanging it; never an assertion
/// about how fast the server is.
const HANG: Duration = Duration::from_secs(60);

async fn small_timeouts() -> TestServer {
    TestServer::start_with(|c| {
        c.server.header_read_timeout_secs = 1;
        c.server.idle_timeout_secs = 1;
        c.server.body_read_timeout_secs = 1;
        c.rate_limit.enabled = false;
    })
    .await
}

fn addr(s: &TestServer) -> String {
    s.base.trim_start_matches("http://").to_owned()
}

/// Reads until the server closes the connection.
async fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    tokio::time::timeout(HANG, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("the server never closed the connection");
    out
}

/// Status and JSON body of one response.
fn parse(raw: &[u8]) -> (u16, serde_json::Value) {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no complete response in {text:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    let json = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: body {body:?}"));
    (status, json)
}

/// Sends `bytes` and leaves the connection as it is; returns everything the server sends
/// before it closes.
async fn send_and_wait(s: &TestServer, bytes: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr(s)).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    read_to_close(&mut stream).await
}

#[tokio::test]
async fn an_idle_connection_is_closed_without_an_answer() {
    let s = small_timeouts().await;
    let mut stream = TcpStream::connect(addr(&s)).await.unwrap();
    assert!(read_to_close(&mut stream).await.is_empty());
    // An idle keep-alive connection after a request is closed too.
    stream = TcpStream::connect(addr(&s)).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let raw = read_to_close(&mut stream).await;
    assert_eq!(parse(&raw).0, 200);
    s.stop().await;
}

#[tokio::test]
async fn half_sent_heads_get_a_json_408_and_are_closed() {
    let s = small_timeouts().await;
    for partial in [
        &b"GET /heal"[..],
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n",
        b"POST /api/v1/llm/feedback HTTP/1.1\r\nContent-Ty",
    ] {
        let raw = send_and_wait(&s, partial).await;
        let (status, body) = parse(&raw);
        assert_eq!(status, 408, "{}", String::from_utf8_lossy(partial));
        assert!(
            error_details(&body).contains("header_read_timeout"),
            "{body}"
        );
    }
    s.stop().await;
}

#[tokio::test]
async fn a_stalled_body_gets_a_json_408_and_is_closed() {
    let s = small_timeouts().await;
    let token = s.token("acme", "alice", Role::User);
    let head = format!(
        "POST /api/v1/llm/feedback HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"type\":"
    );
    let raw = send_and_wait(&s, head.as_bytes()).await;
    let (status, body) = parse(&raw);
    assert_eq!(status, 408, "{body}");
    assert!(error_details(&body).contains("body_read_timeout"), "{body}");
    s.stop().await;
}

#[tokio::test]
async fn a_declared_oversize_body_is_refused_before_it_is_sent() {
    // Long timeouts: if the server waited for the body, this would be a 408, not a 413.
    let s = TestServer::start_with(|c| c.server.body_read_timeout_secs = 120).await;
    let token = s.token("acme", "alice", Role::User);
    let head = format!(
        "POST /api/v1/llm/feedback HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: 10000000000\r\n\r\n"
    );
    let raw = send_and_wait(&s, head.as_bytes()).await;
    let (status, body) = parse(&raw);
    assert_eq!(status, 413, "{body}");
    let details = error_details(&body);
    assert!(
        details.contains("10000000000") && details.contains("body_limit_bytes"),
        "{details}"
    );
    s.stop().await;
}

#[tokio::test]
async fn errors_answered_below_the_router_carry_the_json_body() {
    let s = small_timeouts().await;
    let many_headers: String = (0..150).map(|i| format!("X-H{i}: v\r\n")).collect();
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        (
            "too many headers",
            format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{many_headers}\r\n").into_bytes(),
            431,
        ),
        (
            "long path",
            format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(70_000)).into_bytes(),
            414,
        ),
        (
            "duplicate Content-Length",
            b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello"
                .to_vec(),
            400,
        ),
        (
            "control byte in a header",
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Bad: a\x01b\r\n\r\n".to_vec(),
            400,
        ),
        (
            "garbage request line",
            b"\x00\x01\x02 nonsense\r\n\r\n".to_vec(),
            400,
        ),
    ];
    for (name, bytes, expected) in cases {
        let raw = send_and_wait(&s, &bytes).await;
        let (status, body) = parse(&raw);
        assert_eq!(status, expected, "{name}: {body}");
        error_details(&body);
    }
    s.stop().await;
}

/// Whether the server has closed `stream` (a FIN is waiting), without blocking.
fn closed_by_server(stream: &std::net::TcpStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 16];
    matches!((&*stream).read(&mut buf), Ok(0))
}

#[tokio::test]
async fn the_connection_cap_holds_and_healthz_answers_once_idle_ones_go() {
    let s = TestServer::start_with(|c| {
        c.server.max_connections = 3;
        c.server.idle_timeout_secs = 1;
    })
    .await;
    let a = addr(&s);
    let idle: Vec<std::net::TcpStream> = (0..3)
        .map(|_| std::net::TcpStream::connect(&a).unwrap())
        .collect();
    // Let the server accept all three so they hold every slot.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = tokio::time::timeout(HANG, s.client.get(format!("{}/healthz", s.base)).send())
        .await
        .expect("healthz never answered")
        .unwrap();
    assert_eq!(r.status(), 200);
    // A slot frees only when a connection ends, so one idle connection went first.
    assert!(
        idle.iter().any(closed_by_server),
        "healthz was served while all idle connections still held the slots"
    );
    s.stop().await;
}

#[tokio::test]
async fn under_the_cap_healthz_answers_while_idle_connections_stay() {
    let s = TestServer::start_with(|c| {
        c.server.max_connections = 3;
        c.server.idle_timeout_secs = 600;
    })
    .await;
    let a = addr(&s);
    let idle: Vec<std::net::TcpStream> = (0..2)
        .map(|_| std::net::TcpStream::connect(&a).unwrap())
        .collect();
    let r = tokio::time::timeout(HANG, s.client.get(format!("{}/healthz", s.base)).send())
        .await
        .expect("healthz never answered")
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(!idle.iter().any(closed_by_server));
    s.stop().await;
}

#[tokio::test]
async fn a_panicking_handler_answers_500_with_the_usual_body() {
    let s = TestServer::start_with(|c| c.server.enable_test_routes = true).await;
    let r = s
        .client
        .get(format!("{}/__test/panic", s.base))
        .header("x-request-id", "req-42")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 500);
    assert_eq!(r.headers()["x-request-id"], "req-42");
    let body: serde_json::Value = r.json().await.unwrap();
    let details = error_details(&body);
    assert!(
        !details.contains("deliberate"),
        "panic text leaked: {details}"
    );
    // The server goes on serving.
    let r = s.get_open("/healthz").await;
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("x-request-id"));
    s.stop().await;

    // Without the flag the route does not exist.
    let s = TestServer::start().await;
    let r = s
        .client
        .get(format!("{}/__test/panic", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    s.stop().await;
}

#[tokio::test]
async fn invisible_and_look_alike_ids_are_refused_by_code_point() {
    let s = TestServer::start_with(|c| c.rate_limit.enabled = false).await;
    let user = s.token("acme", "alice", Role::User);
    let admin = s.token("acme", "root", Role::Admin);
    let feedback = |field: &str, value: &str| {
        let mut b = serde_json::json!({
            "type": "positive",
            "question": "How do I enable sharding?",
            "answer": "Use SHARD BY in CREATE COLLECTION."
        });
        b[field] = value.into();
        b
    };
    for (field, value, code) in [
        ("adapter_id", "lora\u{200B}v2", "U+200B"),
        ("adapter_id", "\u{202E}2v", "U+202E"),
        ("adapter_id", "ｌｏｒａ", "U+FF4C"),
        ("user_id", "a\\b", "U+005C"),
        ("session_id", "..", "'..'"),
    ] {
        let (status, body) = s.post(&user, "/feedback", &feedback(field, value)).await;
        assert_eq!(status, 400, "{field}={value:?}: {body}");
        let details = error_details(&body);
        assert!(
            details.contains(field) && details.contains(code),
            "{details}"
        );
        assert!(details.is_ascii(), "{details}");
    }
    let (status, body) = s
        .post(
            &admin,
            "/adapters",
            &serde_json::json!({"id": "a\u{2066}b"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(error_details(&body).contains("U+2066"), "{body}");
    s.stop().await;
}
