//! Bad input never gets a 500 and never half-writes: each case is checked for status, the
//! `{error, details}` body, a hint naming the problem, and an unchanged store.

mod common;

use common::server::{TestServer, error_details};
use feedgraph::http::auth::Role;
use serde_json::json;

fn good() -> serde_json::Value {
    json!({"type": "positive", "question": "How do I enable sharding?", "answer": "Use SHARD BY in CREATE COLLECTION."})
}

fn with(k: &str, v: serde_json::Value) -> String {
    let mut b = good();
    b[k] = v;
    b.to_string()
}

fn without(k: &str) -> String {
    let mut b = good();
    b.as_object_mut().unwrap().remove(k);
    b.to_string()
}

struct Case {
    name: &'static str,
    method: &'static str,
    path: String,
    content_type: Option<&'static str>,
    body: Option<String>,
    extra_header: Option<(&'static str, String)>,
    status: u16,
    hint: &'static str,
}

fn post(name: &'static str, body: String, status: u16, hint: &'static str) -> Case {
    Case {
        name,
        method: "POST",
        path: "/feedback".into(),
        content_type: Some("application/json"),
        body: Some(body),
        extra_header: None,
        status,
        hint,
    }
}

fn get(name: &'static str, path: &str, hint: &'static str) -> Case {
    Case {
        name,
        method: "GET",
        path: path.into(),
        content_type: None,
        body: None,
        extra_header: None,
        status: 400,
        hint,
    }
}

#[tokio::test]
async fn bad_input_table() {
    let s = TestServer::start_with(|c| c.rate_limit.enabled = false).await;
    let t = s.token("acme", "alice", Role::User);
    let (status, seeded) = s.post(&t, "/feedback", &good()).await;
    assert_eq!(status, 201);
    let id = seeded["id"].as_str().unwrap().to_owned();

    let cases = vec![
        post(
            "malformed JSON",
            r#"{"type": "positive", "question": "#.into(),
            400,
            "malformed JSON",
        ),
        post("not JSON", "hello there".into(), 400, "malformed JSON"),
        post("JSON array", "[]".into(), 400, "JSON object, not an array"),
        // serde reads a struct from a sequence too, field by field: found by schemathesis.
        post(
            "fields as a JSON array",
            r#"["positive", "How do I enable sharding?", "Use SHARD BY in CREATE COLLECTION."]"#
                .into(),
            400,
            "JSON object, not an array",
        ),
        Case {
            name: "named query params as an empty array",
            method: "POST",
            path: "/graph/queries/shared_feedback".into(),
            content_type: Some("application/json"),
            body: Some("[]".into()),
            extra_header: None,
            status: 400,
            hint: "JSON object, not an array",
        },
        post(
            "trailing garbage",
            format!("{} extra", good()),
            400,
            "malformed JSON",
        ),
        post("missing type", without("type"), 400, "'type'"),
        post(
            "unknown type",
            with("type", json!("neutral")),
            400,
            "neutral",
        ),
        post(
            "type is a number",
            with("type", json!(1)),
            400,
            "invalid type",
        ),
        post("missing question", without("question"), 400, "'question'"),
        post("missing answer", without("answer"), 400, "'answer'"),
        post(
            "blank question",
            with("question", json!("   ")),
            400,
            "'question'",
        ),
        post(
            "question is a number",
            with("question", json!(42)),
            400,
            "invalid type",
        ),
        post(
            "answer too long",
            with("answer", json!("x".repeat(32_769))),
            400,
            "'answer' is too long",
        ),
        post(
            "user_id too long",
            with("user_id", json!("u".repeat(257))),
            400,
            "'user_id' is too long",
        ),
        post(
            "metadata not an object",
            with("metadata", json!([1, 2])),
            400,
            "invalid type",
        ),
        post(
            "metadata too big",
            with("metadata", json!({"blob": "m".repeat(17_000)})),
            400,
            "'metadata' is too long",
        ),
        post(
            "score is a string",
            with("score", json!("five")),
            400,
            "invalid type",
        ),
        post(
            "unknown field",
            with("corection", json!("typo")),
            400,
            "corection",
        ),
        post(
            "adapter id with a slash",
            with("adapter_id", json!("a/b")),
            400,
            "adapter_id",
        ),
        post(
            "user id with a newline",
            with("user_id", json!("bad\nid")),
            400,
            "control",
        ),
        post(
            "body over the limit",
            with("comment", json!("c".repeat(300_000))),
            413,
            "larger than",
        ),
        Case {
            content_type: Some("text/plain"),
            ..post(
                "wrong content type",
                good().to_string(),
                415,
                "application/json",
            )
        },
        Case {
            content_type: None,
            ..post(
                "no content type",
                good().to_string(),
                415,
                "application/json",
            )
        },
        Case {
            extra_header: Some(("Idempotency-Key", "k".repeat(300))),
            ..post(
                "idempotency key too long",
                good().to_string(),
                400,
                "Idempotency-Key",
            )
        },
        get("limit 0", "/feedback?limit=0", "'limit'"),
        get("limit over 1000", "/feedback?limit=1001", "'limit'"),
        get("limit not a number", "/feedback?limit=ten", "'limit'"),
        get("unknown status", "/feedback?status=archived", "'status'"),
        get("unknown type filter", "/feedback?type=neutral", "'type'"),
        get("unused not a boolean", "/feedback?unused=maybe", "'unused'"),
        get("unknown parameter", "/feedback?stauts=approved", "stauts"),
        get(
            "repeated parameter",
            "/feedback?limit=1&limit=2",
            "more than once",
        ),
        get("negative hours", "/feedback/stats?hours=-1", "'hours'"),
        get(
            "by-adapter limit 0",
            "/feedback/by-adapter/a?limit=0",
            "'limit'",
        ),
        Case {
            path: format!("/feedback/{id}/link"),
            ..post(
                "link metadata not an object",
                json!({"adapter_id": "a", "metadata": "x"}).to_string(),
                400,
                "invalid type",
            )
        },
        Case {
            path: format!("/feedback/{id}/link"),
            ..post("link malformed JSON", "{".into(), 400, "malformed")
        },
        Case {
            path: format!("/feedback/{id}/link"),
            ..post(
                "link unknown field",
                json!({"adapter": "a"}).to_string(),
                400,
                "adapter",
            )
        },
    ];
    assert!(cases.len() >= 25);

    for c in cases {
        let mut req = match c.method {
            "POST" => s.client.post(s.url(&c.path)),
            _ => s.client.get(s.url(&c.path)),
        }
        .bearer_auth(&t);
        if let Some(ct) = c.content_type {
            req = req.header("Content-Type", ct);
        }
        if let Some((k, v)) = &c.extra_header {
            req = req.header(*k, v);
        }
        if let Some(b) = c.body {
            req = req.body(b);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status().as_u16(), c.status, "{}", c.name);
        let body: serde_json::Value = r
            .json()
            .await
            .unwrap_or_else(|e| panic!("{}: body is not JSON: {e}", c.name));
        let details = error_details(&body);
        assert!(
            details.contains(c.hint),
            "{}: details '{details}' lack '{}'",
            c.name,
            c.hint
        );

        // Nothing was written: one item, version 1, no new links.
        let (_, stats) = s.get(&t, "/feedback/stats").await;
        assert_eq!(stats["total_feedback"], 1, "{} changed the store", c.name);
        let (_, item) = s.get(&t, &format!("/feedback/{id}")).await;
        assert_eq!(item["version"], 1, "{} changed the record", c.name);
    }
    s.stop().await;
}
