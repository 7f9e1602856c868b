//! `POST /feedback/{id}/link` as the async, group-committed write it is: many clients
//! linking the same pair at once make one edge and hear `created: true` once; an answer
//! "it existed" waits until the edge it reports is durable; the graph shows an edge before
//! its answer; and an edge whose client hung up while it waited for its sync is still
//! indexed once durable.

mod common;

use std::io::Write;
use std::time::Duration;

use common::server::TestServer;
use feedgraph::http::auth::Role;
use feedgraph::store::testing::{self, Fault};
use serde_json::{Value, json};

/// A stored item's id.
async fn new_item(s: &TestServer, t: &str, n: usize) -> String {
    let (status, body) = s
        .post(
            t,
            "/feedback",
            &json!({
                "type": "positive",
                "question": format!("How do I link things, attempt {n}?"),
                "answer": "Post the adapter id to the link endpoint of the item."
            }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

/// The ids listed by adapter (first page of up to 1000).
async fn listed(s: &TestServer, t: &str, adapter: &str) -> Vec<String> {
    let (status, body) = s
        .get(t, &format!("/feedback/by-adapter/{adapter}?limit=1000"))
        .await;
    if status == 404 {
        return Vec::new();
    }
    assert_eq!(status, 200, "{body}");
    body["feedback"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Releases the held syncs of a data directory when dropped, so a failing assertion
/// while a sync is held fails the test instead of hanging its server's shutdown.
struct ReleaseOnDrop(std::path::PathBuf);

impl Drop for ReleaseOnDrop {
    fn drop(&mut self) {
        testing::release(&self.0);
    }
}

/// A link request sent on its own client (its own connection).
async fn link(base_url: String, token: String, adapter: String) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(base_url)
        .bearer_auth(token)
        .json(&json!({"adapter_id": adapter}))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_clients_linking_one_pair_make_one_edge_and_one_created_answer() {
    let s = TestServer::start_with(|c| c.rate_limit.enabled = false).await;
    let t = s.token("acme", "alice", Role::User);
    for round in 0..3 {
        let id = new_item(&s, &t, round).await;
        let adapter = format!("race_lora_{round}");
        let url = s.url(&format!("/feedback/{id}/link"));
        let calls: Vec<_> = (0..24)
            .map(|_| tokio::spawn(link(url.clone(), t.clone(), adapter.clone())))
            .collect();
        let mut answers = Vec::new();
        for c in calls {
            answers.push(c.await.unwrap());
        }
        let created: Vec<&(u16, Value)> = answers
            .iter()
            .filter(|(_, b)| b["created"] == true)
            .collect();
        assert_eq!(created.len(), 1, "created answers: {answers:?}");
        assert_eq!(created[0].0, 201);
        for (status, body) in &answers {
            assert!(*status == 201 || *status == 200, "{status} {body}");
            assert_eq!((*status == 201), body["created"] == true, "{body}");
            // Every answer reports the one edge as first made.
            assert_eq!(body["created_at"], created[0].1["created_at"], "{body}");
            assert_eq!(body["adapter_id"], adapter.as_str());
        }
        // One edge: in the record, in the graph's listing, and one history version.
        assert_eq!(listed(&s, &t, &adapter).await, vec![id.clone()]);
        let (_, by) = s.get(&t, &format!("/feedback/by-adapter/{adapter}")).await;
        assert_eq!(by["total_linked"], 1, "{by}");
        let (status, history) = s.get(&t, &format!("/feedback/{id}/history")).await;
        assert_eq!(status, 200, "{history}");
        assert_eq!(history["count"], 2, "one version for the link: {history}");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_linked_item_is_listed_as_soon_as_its_link_is_answered() {
    let s = TestServer::start_with(|c| c.rate_limit.enabled = false).await;
    let t = s.token("acme", "alice", Role::User);
    let mut ids = Vec::new();
    for n in 0..16 {
        ids.push(new_item(&s, &t, n).await);
    }
    // Concurrent links to one adapter: each answer is followed at once by a listing that
    // must hold the item (the graph shows an edge before its answer).
    let calls: Vec<_> = ids
        .iter()
        .map(|id| {
            let (url, t) = (s.url(&format!("/feedback/{id}/link")), t.clone());
            let list = s.url("/feedback/by-adapter/shared_lora?limit=1000");
            let id = id.clone();
            tokio::spawn(async move {
                let (status, body) = link(url, t.clone(), "shared_lora".into()).await;
                assert_eq!(status, 201, "{body}");
                let page: Value = reqwest::Client::new()
                    .get(list)
                    .bearer_auth(t)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                let listed = page["feedback"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|f| f["id"] == id.as_str());
                assert!(listed, "{id} answered but not listed: {page}");
            })
        })
        .collect();
    for c in calls {
        c.await.unwrap();
    }
    let mut all = listed(&s, &t, "shared_lora").await;
    all.sort();
    ids.sort();
    assert_eq!(all, ids);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_existing_edge_is_reported_only_once_it_is_durable() {
    common::sled_only!("a sled sync held by the fault hooks");
    let s = TestServer::start_with(|c| c.rate_limit.enabled = false).await;
    let t = s.token("acme", "alice", Role::User);
    let id = new_item(&s, &t, 0).await;
    let url = s.url(&format!("/feedback/{id}/link"));
    let dir = s.dir.path().to_owned();

    // The first link is written to sled, then waits for a sync that is held.
    testing::inject(&dir, Fault::Hold);
    let _release = ReleaseOnDrop(dir.clone());
    let first = tokio::spawn(link(url.clone(), t.clone(), "held_lora".into()));
    let held = {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || testing::wait_until_held(&dir, Duration::from_secs(20)))
    };
    assert!(held.await.unwrap(), "no sync started");
    // The same pair again finds the edge in sled; it must not say "it existed" while
    // that edge is not durable (a crash now would lose it).
    let mut second = tokio::spawn(link(url.clone(), t.clone(), "held_lora".into()));
    let early = tokio::time::timeout(Duration::from_millis(700), &mut second).await;
    assert!(
        early.is_err(),
        "answered while the edge it reports was not durable: {early:?}"
    );
    assert!(
        !first.is_finished(),
        "the first link answered before its sync"
    );
    testing::release(&dir);
    let (s1, b1) = first.await.unwrap();
    let (s2, b2) = second.await.unwrap();
    // Which of the two made the edge depends on who reached sled first.
    let mut statuses = [s1, s2];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 201], "{b1} {b2}");
    assert_eq!(b1["created_at"], b2["created_at"]);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_link_whose_client_left_during_its_sync_is_still_indexed() {
    common::sled_only!("a sled sync held by the fault hooks");
    let s = TestServer::start_with(|c| c.rate_limit.enabled = false).await;
    let t = s.token("acme", "alice", Role::User);
    let id = new_item(&s, &t, 0).await;
    let dir = s.dir.path().to_owned();

    testing::inject(&dir, Fault::Hold);
    let _release = ReleaseOnDrop(dir.clone());
    let addr = s.base.trim_start_matches("http://").to_owned();
    let body = r#"{"adapter_id":"left_lora"}"#;
    let request = format!(
        "POST /api/v1/llm/feedback/{id}/link HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {t}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut stream = std::net::TcpStream::connect(&addr).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    assert!(
        tokio::task::spawn_blocking({
            let dir = dir.clone();
            move || testing::wait_until_held(&dir, Duration::from_secs(20))
        })
        .await
        .unwrap(),
        "no sync started"
    );
    // The client hangs up without reading its answer while the link waits for its sync;
    // the server notices the closed connection and drops the request.
    drop(stream);
    tokio::time::sleep(Duration::from_millis(300)).await;
    testing::release(&dir);
    // Once durable, the edge is indexed though nobody waits for it (a hang guard, not a
    // timing assertion: it must show up, however long the machine takes).
    let mut shown = false;
    for _ in 0..400 {
        if listed(&s, &t, "left_lora").await == vec![id.clone()] {
            shown = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(shown, "the stored edge never reached the graph");
    let (_, rec) = s.get(&t, &format!("/feedback/{id}/history")).await;
    assert_eq!(rec["count"], 2, "{rec}");
    s.stop().await;
}
