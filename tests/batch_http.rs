//! `POST /feedback/batch` over HTTP: per-item results for a mixed batch (bad items do not
//! keep the good ones out), idempotent replays across requests and restarts, the item
//! limit, and stored items visible in lists and reads as soon as the batch answers.

mod common;

use common::server::{TestServer, error_details};
use feedgraph::http::auth::Role;
use serde_json::{Value, json};

fn good(n: usize) -> Value {
    json!({
        "type": "positive",
        "question": format!("How do I enable sharding, case {n}?"),
        "answer": format!("Use SHARD BY in CREATE COLLECTION (case {n})."),
        "session_id": "batch-session",
    })
}

fn keyed(n: usize, key: &str) -> Value {
    let mut v = good(n);
    v["idempotency_key"] = json!(key);
    v
}

/// Ids of the org's items with the batch session, newest first.
async fn listed(s: &TestServer, token: &str) -> Vec<String> {
    let (status, body) = s
        .get(token, "/feedback?session=batch-session&limit=1000")
        .await;
    assert_eq!(status, 200, "{body}");
    body["feedback"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_mixed_batch_stores_the_good_items_and_reports_each_bad_one() {
    let s = TestServer::start().await;
    let token = s.token("acme", "alice", Role::User);
    let items = json!([
        good(0),
        {"type": "sideways", "question": "What is this about?", "answer": "Nothing at all really."},
        42,
        keyed(3, "k-3"),
        {"type": "positive", "answer": "An answer without a question."},
        {"type": "positive", "question": "Question here?", "answer": "Answer here.", "idempotency_key": 7},
        {"type": "positive", "question": "Question here?", "answer": "Answer here.", "colour": "red"},
        good(7),
    ]);
    let (status, body) = s
        .post(&token, "/feedback/batch", &json!({"items": items}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["count"], 8, "{body}");
    assert_eq!(body["created"], 3, "{body}");
    assert_eq!(body["replayed"], 0, "{body}");
    assert_eq!(body["failed"], 5, "{body}");
    let results = body["results"].as_array().unwrap();
    let statuses: Vec<u64> = results
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [201, 400, 400, 201, 400, 400, 400, 201], "{body}");
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r["index"], i, "{body}");
    }
    // Each failure names its problem in the usual words.
    let details = |i: usize| results[i]["details"].as_str().unwrap().to_owned();
    assert_eq!(results[1]["error"], "Invalid request");
    assert!(details(1).contains("type"), "{}", details(1));
    assert!(details(2).contains("JSON object"), "{}", details(2));
    assert!(details(4).contains("question"), "{}", details(4));
    assert!(details(5).contains("idempotency_key"), "{}", details(5));
    assert!(details(6).contains("colour"), "{}", details(6));
    assert_eq!(results[3]["idempotency_key"], "k-3");
    // The stored items are readable and listed at once (read-your-writes).
    let ids: Vec<String> = [0, 3, 7]
        .iter()
        .map(|&i| results[i]["feedback"]["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        results[0]["feedback"]["message"], "Feedback recorded successfully",
        "{body}"
    );
    for id in &ids {
        let (status, item) = s.get(&token, &format!("/feedback/{id}")).await;
        assert_eq!(status, 200, "{item}");
        assert_eq!(item["session_id"], "batch-session");
    }
    let mut seen = listed(&s, &token).await;
    seen.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(seen, want);
    // Another org sees none of it.
    let other = s.token("globex", "bob", Role::User);
    assert!(listed(&s, &other).await.is_empty());
    s.stop().await;
}

#[tokio::test]
async fn replaying_a_batch_with_the_same_keys_stores_nothing_twice_even_after_a_restart() {
    let s = TestServer::start().await;
    let token = s.token("acme", "alice", Role::User);
    let batch = json!({"items": [keyed(1, "a"), keyed(2, "b"), keyed(3, "c")]});
    let (status, first) = s.post(&token, "/feedback/batch", &batch).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["created"], 3, "{first}");
    let ids = |body: &Value| -> Vec<String> {
        body["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["feedback"]["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let (status, again) = s.post(&token, "/feedback/batch", &batch).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(
        (again["created"].clone(), again["replayed"].clone()),
        (json!(0), json!(3))
    );
    assert!(
        again["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["replayed"] == true)
    );
    assert_eq!(ids(&first), ids(&again));
    assert_eq!(listed(&s, &token).await.len(), 3);

    // Keys survive a restart.
    let dir = s.stop_keep().await;
    let s = TestServer::start_in(dir, |_| {}).await;
    let token = s.token("acme", "alice", Role::User);
    let (status, third) = s.post(&token, "/feedback/batch", &batch).await;
    assert_eq!(status, 200, "{third}");
    assert_eq!(third["replayed"], 3, "{third}");
    assert_eq!(ids(&first), ids(&third));
    assert_eq!(listed(&s, &token).await.len(), 3);

    // A key used again with other content is that item's 409; the rest go on.
    let (status, body) = s
        .post(
            &token,
            "/feedback/batch",
            &json!({"items": [keyed(9, "a"), keyed(4, "d"), keyed(4, "d")]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let results = body["results"].as_array().unwrap();
    assert_eq!(results[0]["status"], 409, "{body}");
    assert_eq!(results[0]["error"], "Conflict", "{body}");
    // The same key twice in one batch: the second is a replay of the first.
    assert_eq!(results[1]["status"], 201, "{body}");
    assert_eq!(results[1]["replayed"], false, "{body}");
    assert_eq!(results[2]["replayed"], true, "{body}");
    assert_eq!(results[1]["feedback"]["id"], results[2]["feedback"]["id"]);
    assert_eq!(listed(&s, &token).await.len(), 4);

    // Keys belong to their user: another user's same key stores its own item.
    let bob = s.token("acme", "bob", Role::User);
    let (_, body) = s
        .post(&bob, "/feedback/batch", &json!({"items": [keyed(1, "a")]}))
        .await;
    assert_eq!(body["created"], 1, "{body}");
    s.stop().await;
}

#[tokio::test]
async fn a_batch_over_the_limit_or_empty_is_a_400_and_stores_nothing() {
    let s = TestServer::start_with(|c| c.batch.max_items = 5).await;
    let token = s.token("acme", "alice", Role::User);
    let items: Vec<Value> = (0..6).map(good).collect();
    let (status, body) = s
        .post(&token, "/feedback/batch", &json!({"items": items}))
        .await;
    assert_eq!(status, 400, "{}", body["count"]);
    let details = error_details(&body);
    assert!(
        details.contains("6 items")
            && details.contains("at most 5")
            && details.contains("batch.max_items"),
        "{details}"
    );
    assert!(
        listed(&s, &token).await.is_empty(),
        "an over-limit batch stored something"
    );

    let items: Vec<Value> = (0..5).map(good).collect();
    let (status, body) = s
        .post(&token, "/feedback/batch", &json!({"items": items}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["created"], 5, "{body}");

    for bad in [
        json!({"items": []}),
        json!({}),
        json!({"items": {}}),
        json!({"items": [], "x": 1}),
    ] {
        let (status, body) = s.post(&token, "/feedback/batch", &bad).await;
        assert_eq!(status, 400, "{bad} -> {body}");
        error_details(&body);
    }
    // No token, no batch.
    let r = s
        .client
        .post(s.url("/feedback/batch"))
        .json(&json!({"items": [good(1)]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(listed(&s, &token).await.len(), 5);
    s.stop().await;
}

#[tokio::test]
async fn the_default_limit_is_a_thousand_items() {
    let s = TestServer::start_with(|c| c.server.body_limit_bytes = 4 * 1024 * 1024).await;
    let token = s.token("acme", "alice", Role::User);
    let items: Vec<Value> = (0..1000).map(good).collect();
    let (status, body) = s
        .post(&token, "/feedback/batch", &json!({"items": items}))
        .await;
    assert_eq!(status, 200, "{}", body["results"][0]);
    assert_eq!(body["created"], 1000);
    assert_eq!(listed(&s, &token).await.len(), 1000);
    let items: Vec<Value> = (0..1001).map(good).collect();
    let (status, body) = s
        .post(&token, "/feedback/batch", &json!({"items": items}))
        .await;
    assert_eq!(status, 400, "{}", body["count"]);
    s.stop().await;
}
