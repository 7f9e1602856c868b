//! Black-box tests of the feedback endpoints: the seed's curl examples, success and error
//! cases of every endpoint, tenancy, idempotency and rate limits, over real HTTP.

mod common;

use common::server::{TestServer, error_details};
use feedgraph::http::auth::Role;
use serde_json::{Value, json};

fn positive_example() -> Value {
    json!({
        "type": "positive",
        "question": "How do I enable sharding in ThemisDB?",
        "answer": "To enable sharding, use SHARD BY clause in CREATE COLLECTION.",
        "user_id": "user123",
        "model_version": "llama-2-7b",
        "adapter_id": "themis_help_lora",
        "adapter_version": "v1.0"
    })
}

fn negative_example() -> Value {
    json!({
        "type": "negative",
        "question": "What is the default replication factor?",
        "answer": "The default replication factor is 1.",
        "correction": "The default replication factor is 3 for production.",
        "user_id": "user456",
        "model_version": "llama-2-7b"
    })
}

#[tokio::test]
async fn seed_curl_examples_work() {
    let s = TestServer::start().await;
    let t = s.token("acme", "alice", Role::User);

    // Example - Positive Feedback
    let (status, body) = s.post(&t, "/feedback", &positive_example()).await;
    assert_eq!(status, 201, "{body}");
    for field in [
        "id",
        "type",
        "question",
        "answer",
        "validation_status",
        "created_at",
        "message",
    ] {
        assert!(body.get(field).is_some(), "missing {field} in {body}");
    }
    assert_eq!(body["type"], "positive");
    assert_eq!(body["validation_status"], "approved");
    assert_eq!(body["message"], "Feedback recorded successfully");
    let positive_id = body["id"].as_str().unwrap().to_owned();
    assert!(positive_id.starts_with("feedback-"));

    // Example - Negative Feedback
    let (status, body) = s.post(&t, "/feedback", &negative_example()).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["validation_status"], "approved");

    // GET /feedback/{id}
    let (status, body) = s.get(&t, &format!("/feedback/{positive_id}")).await;
    assert_eq!(status, 200);
    assert_eq!(body["id"], positive_id.as_str());
    assert_eq!(body["user_id"], "user123");
    assert_eq!(body["adapter_id"], "themis_help_lora");
    assert_eq!(body["adapter_version"], "v1.0");
    assert_eq!(body["used_for_training"], false);
    assert_eq!(body["training_batch_id"], 0);

    // Example - List all positive feedback
    let (status, body) = s.get(&t, "/feedback?type=positive&limit=50").await;
    assert_eq!(status, 200);
    assert_eq!(body["count"], 1);
    assert_eq!(body["limit"], 50);
    assert_eq!(body["feedback"][0]["id"], positive_id.as_str());

    // Example - List unused feedback for training
    let (status, body) = s.get(&t, "/feedback?unused=true").await;
    assert_eq!(status, 200);
    assert_eq!(body["count"], 2);
    assert_eq!(body["limit"], 100);

    // Stats
    let (status, body) = s.get(&t, "/feedback/stats").await;
    assert_eq!(status, 200);
    assert_eq!(body["total_feedback"], 2);
    assert_eq!(body["positive_count"], 1);
    assert_eq!(body["negative_count"], 1);
    assert_eq!(body["approved_count"], 2);
    assert_eq!(body["unused_for_training"], 2);
    assert_eq!(body["used_for_training"], 0);
    assert_eq!(body["positive_ratio"], 0.5);
    for field in ["pending_validation", "rejected_count", "flagged_count"] {
        assert_eq!(body[field], 0, "{field}");
    }

    // Training workflow: unused approved feedback
    let (status, body) = s
        .get(&t, "/feedback?unused=true&status=approved&limit=100")
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["count"], 2);

    // Graph integration: automatic link on submit
    let (status, body) = s
        .post(
            &t,
            "/feedback",
            &json!({
                "type": "positive",
                "question": "How do I use vector search?",
                "answer": "Use the VECTOR SEARCH command...",
                "adapter_id": "themis_help_lora_v2",
                "user_id": "user123"
            }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let vector_id = body["id"].as_str().unwrap().to_owned();

    // Manual link
    let (status, body) = s
        .post(
            &t,
            &format!("/feedback/{positive_id}/link"),
            &json!({"adapter_id": "themis_help_lora_v2", "metadata": {"confidence": 0.95, "session_id": "abc-123"}}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["created"], true);
    assert_eq!(body["source"], "manual");
    assert_eq!(body["metadata"]["confidence"], 0.95);

    // By adapter
    let (status, body) = s
        .get(
            &t,
            "/feedback/by-adapter/themis_help_lora_v2?limit=100&unused=true",
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["adapter_id"], "themis_help_lora_v2");
    assert_eq!(body["count"], 2);
    assert_eq!(body["total_linked"], 2);
    let ids: Vec<&str> = body["feedback"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [vector_id.as_str(), positive_id.as_str()],
        "newest first"
    );
    s.stop().await;
}

#[tokio::test]
async fn endpoint_errors_and_edge_cases() {
    let s = TestServer::start().await;
    let t = s.token("acme", "alice", Role::User);
    let (status, body) = s.get(&t, "/feedback/feedback-does-not-exist").await;
    assert_eq!(status, 404);
    assert_eq!(body["error"], "Not Found");
    assert!(error_details(&body).contains("feedback-does-not-exist"));

    let (status, body) = s.get(&t, "/feedback/by-adapter/nobody").await;
    assert_eq!(status, 404);
    error_details(&body);

    let (status, body) = s
        .post(
            &t,
            "/feedback/feedback-missing/link",
            &json!({"adapter_id": "a"}),
        )
        .await;
    assert_eq!(status, 404, "{body}");

    // Link is idempotent: 201 then 200, one edge.
    let (_, created) = s.post(&t, "/feedback", &positive_example()).await;
    let id = created["id"].as_str().unwrap();
    let link = json!({"adapter_id": "other_lora"});
    assert_eq!(
        s.post(&t, &format!("/feedback/{id}/link"), &link).await.0,
        201
    );
    let (status, again) = s.post(&t, &format!("/feedback/{id}/link"), &link).await;
    assert_eq!(status, 200);
    assert_eq!(again["created"], false);
    let (_, by) = s.get(&t, "/feedback/by-adapter/other_lora").await;
    assert_eq!(by["total_linked"], 1);
    let (status, body) = s
        .post(&t, &format!("/feedback/{id}/link"), &json!({}))
        .await;
    assert_eq!(status, 400);
    assert!(error_details(&body).contains("adapter_id"));

    // Rejected and flagged items are stored (201) with their status.
    let (status, body) = s
        .post(
            &t,
            "/feedback",
            &json!({"type": "positive", "question": "Why?", "answer": "Because it is so."}),
        )
        .await;
    assert_eq!(status, 201);
    assert_eq!(body["validation_status"], "rejected");
    assert_eq!(body["validation_reasons"][0]["rule"], "question_too_short");
    let (_, list) = s.get(&t, "/feedback?status=rejected").await;
    assert_eq!(list["count"], 1);

    // Paging with a cursor.
    for i in 0..5 {
        let mut b = positive_example();
        b["question"] = json!(format!("Question number {i}?"));
        s.post(&t, "/feedback", &b).await;
    }
    let (_, page1) = s.get(&t, "/feedback?limit=3").await;
    assert_eq!(page1["count"], 3);
    let cursor = page1["next_cursor"].as_str().unwrap();
    let (_, page2) = s
        .get(&t, &format!("/feedback?limit=3&cursor={cursor}"))
        .await;
    assert_eq!(page2["count"], 3);
    assert_ne!(page1["feedback"][0]["id"], page2["feedback"][0]["id"]);

    // Unknown route and method.
    let (status, body) = s.get(&t, "/nothing-here").await;
    assert_eq!(status, 404);
    error_details(&body);
    let r = s
        .client
        .delete(s.url("/feedback"))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 405);
    error_details(&r.json().await.unwrap());

    // Health and readiness need no token.
    let r = s.get_open("/healthz").await;
    assert_eq!(r.status().as_u16(), 200);
    let r = s.get_open("/readyz").await;
    assert_eq!(r.status().as_u16(), 200);
    s.stop().await;
}

#[tokio::test]
async fn two_orgs_never_see_each_other() {
    let s = TestServer::start().await;
    let a = s.token("acme", "alice", Role::Admin);
    let g = s.token("globex", "gina", Role::Admin);
    let (_, fb) = s.post(&a, "/feedback", &positive_example()).await;
    let id = fb["id"].as_str().unwrap();

    assert_eq!(s.get(&g, &format!("/feedback/{id}")).await.0, 404);
    let (_, list) = s.get(&g, "/feedback").await;
    assert_eq!(list["count"], 0);
    let (_, stats) = s.get(&g, "/feedback/stats").await;
    assert_eq!(stats["total_feedback"], 0);
    assert_eq!(
        s.get(&g, "/feedback/by-adapter/themis_help_lora").await.0,
        404
    );
    assert_eq!(
        s.post(
            &g,
            &format!("/feedback/{id}/link"),
            &json!({"adapter_id": "x"})
        )
        .await
        .0,
        404
    );
    let (_, list) = s.get(&g, "/feedback?adapter=themis_help_lora").await;
    assert_eq!(list["count"], 0);
    // And acme still sees its own.
    assert_eq!(s.get(&a, &format!("/feedback/{id}")).await.0, 200);
    let (_, stats) = s.get(&a, "/feedback/stats").await;
    assert_eq!(stats["total_feedback"], 1);
    s.stop().await;
}

#[tokio::test]
async fn idempotency_key_replays_the_first_response() {
    let s = TestServer::start().await;
    let t = s.token("acme", "alice", Role::User);
    let send = |key: &'static str, body: Value| {
        let req = s
            .client
            .post(s.url("/feedback"))
            .bearer_auth(&t)
            .header("Idempotency-Key", key)
            .json(&body);
        async move {
            let r = req.send().await.unwrap();
            let replayed = r.headers().get("idempotent-replayed").is_some();
            (
                r.status().as_u16(),
                replayed,
                r.json::<Value>().await.unwrap(),
            )
        }
    };
    let (s1, r1, first) = send("req-1", positive_example()).await;
    let (s2, r2, second) = send("req-1", positive_example()).await;
    assert_eq!((s1, s2), (201, 201));
    assert!(!r1 && r2);
    assert_eq!(first, second);
    let (_, stats) = s.get(&t, "/feedback/stats").await;
    assert_eq!(stats["total_feedback"], 1);
    // Same key, different request: conflict, nothing stored.
    let (status, _, body) = send("req-1", negative_example()).await;
    assert_eq!(status, 409);
    error_details(&body);
    // Another user may use the same key for their own request.
    let t2 = s.token("acme", "bob", Role::User);
    let r = s
        .client
        .post(s.url("/feedback"))
        .bearer_auth(&t2)
        .header("Idempotency-Key", "req-1")
        .json(&positive_example())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let (_, stats) = s.get(&t, "/feedback/stats").await;
    assert_eq!(stats["total_feedback"], 2);
    s.stop().await;
}

#[tokio::test]
async fn the_101st_request_in_a_minute_is_refused() {
    let s = TestServer::start().await;
    let t = s.token("acme", "alice", Role::User);
    for i in 0..100 {
        let (status, body) = s.get(&t, "/feedback/stats").await;
        assert_eq!(status, 200, "request {i}: {body}");
    }
    let r = s
        .client
        .get(s.url("/feedback/stats"))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "Too Many Requests");
    assert!(error_details(&body).contains("100 requests per 60 s"));
    // Another user of the same org is unaffected.
    let t2 = s.token("acme", "bob", Role::User);
    assert_eq!(s.get(&t2, "/feedback/stats").await.0, 200);
    s.stop().await;
}

#[tokio::test]
async fn org_rate_limit_spans_users() {
    let s = TestServer::start_with(|c| {
        c.rate_limit.per_org = 5;
    })
    .await;
    for i in 0..5 {
        let t = s.token("acme", &format!("user{i}"), Role::User);
        assert_eq!(s.get(&t, "/feedback/stats").await.0, 200);
    }
    let t = s.token("acme", "user9", Role::User);
    let (status, body) = s.get(&t, "/feedback/stats").await;
    assert_eq!(status, 429);
    assert!(error_details(&body).contains("per organization"));
    let g = s.token("globex", "gina", Role::User);
    assert_eq!(s.get(&g, "/feedback/stats").await.0, 200);
    s.stop().await;
}
