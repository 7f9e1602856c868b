//! Request ids: every response carries `x-request-id` (the client's or a new one), and every
//! log line written while serving the request carries it too, including lines written on
//! the blocking pool. Logs here are the JSON format of `log.format = "json"`.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::server::TestServer;
use feedgraph::config::LogFormat;
use feedgraph::http::auth::Role;
use serde_json::json;

/// Log output captured in memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Captured {
    /// Every line so far, parsed; panics on a line that is not one JSON object.
    fn lines(&self) -> Vec<serde_json::Value> {
        let bytes = self.0.lock().unwrap().clone();
        String::from_utf8(bytes)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }
}

/// The request id a JSON log line carries, from any of its spans.
fn request_id(line: &serde_json::Value) -> Option<&str> {
    line["spans"]
        .as_array()?
        .iter()
        .find_map(|s| s["request_id"].as_str())
}

fn message(line: &serde_json::Value) -> &str {
    line["fields"]["message"].as_str().unwrap_or("")
}

// One test function: the log subscriber is global to this test binary.
#[tokio::test]
async fn every_log_line_of_a_request_carries_its_id() {
    let logs = Captured::default();
    feedgraph::cli::init_logging_to(
        LogFormat::Json,
        tracing_subscriber::EnvFilter::new("feedgraph=debug"),
        logs.clone(),
        false,
    )
    .unwrap();
    let s = TestServer::start().await;
    let token = s.token("acme", "alice", Role::User);

    // A client's id is kept and echoed; a query logs from the blocking pool.
    let r = s
        .client
        .post(s.url("/graph/query"))
        .bearer_auth(&token)
        .header("x-request-id", "client-id-42")
        .json(&json!({"query": "MATCH (f:Feedback) RETURN count(f) AS n"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["x-request-id"], "client-id-42");

    // Without one, the server makes one and uses it in the logs; an internal error's log
    // line (written while answering) carries it as well.
    let r = s
        .client
        .post(s.url("/graph/query"))
        .bearer_auth(&token)
        .json(&json!({"query": "MATCH (f:Feedback) RETURN f.id ORDER BY"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let made = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(made.len(), 26, "a ULID: {made}");

    s.stop().await;
    let lines = logs.lines();
    for id in ["client-id-42", made.as_str()] {
        let mine: Vec<_> = lines.iter().filter(|l| request_id(l) == Some(id)).collect();
        let messages: Vec<&str> = mine.iter().map(|l| message(l)).collect();
        // Written on the blocking pool, and on the runtime after the handler.
        assert!(
            messages.contains(&"graph query finished"),
            "{id}: {messages:?}"
        );
        assert!(messages.contains(&"answered"), "{id}: {messages:?}");
    }
    // No line about a request lacks its id.
    for l in &lines {
        if ["graph query finished", "answered"].contains(&message(l)) {
            assert!(
                request_id(l).is_some(),
                "a request's line without its id: {l}"
            );
        }
    }
}
