//! A client that hangs up while its submit waits for the group commit: the write still
//! reaches the graph once durable, so the live graph never falls behind the store.

mod common;

use std::io::Write;
use std::time::Duration;

use common::server::TestServer;
use feedgraph::http::auth::Role;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submits_whose_clients_hang_up_are_still_indexed() {
    let server = TestServer::start_with(|c| c.rate_limit.enabled = false).await;
    let token = server.token("acme", "quitter", Role::User);
    let addr = server.base.trim_start_matches("http://").to_owned();
    let mut tasks = Vec::new();
    for t in 0..32 {
        let (addr, token) = (addr.clone(), token.clone());
        tasks.push(std::thread::spawn(move || {
            for i in 0..20 {
                let body = format!(
                    r#"{{"type":"positive","question":"Question {i} of {t}?","answer":"A long enough answer.","adapter_id":"hangup_lora"}}"#
                );
                let request = format!(
                    "POST /api/v1/llm/feedback HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                let mut stream = std::net::TcpStream::connect(&addr).unwrap();
                stream.write_all(request.as_bytes()).unwrap();
                // Hang up without reading the answer: the server sees the connection close
                // while the submit waits for its fsync.
                drop(stream);
            }
        }));
    }
    tokio::task::spawn_blocking(move || {
        for t in tasks {
            t.join().unwrap();
        }
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let admin = server.token("acme", "admin", Role::Admin);
    let (status, v) = server
        .post(
            &admin,
            "/graph/query",
            &serde_json::json!({"query": "MATCH (f:Feedback)-[:FEEDBACK_FOR]->(a:Adapter {id: 'hangup_lora'}) RETURN count(f) AS n"}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let live = v["rows"][0][0].as_u64().unwrap();
    let dir = server.stop_keep().await;
    let service = common::open(dir.path());
    let mut stored = 0u64;
    service
        .store()
        .for_each_record_of("acme", &mut |r| {
            if r.feedback.adapter_id.as_deref() == Some("hangup_lora") {
                stored += 1;
            }
            Ok(())
        })
        .unwrap();
    assert!(stored > 0, "no submit reached the store");
    assert_eq!(
        live, stored,
        "the live graph indexed {live} of the {stored} stored submits"
    );
}
