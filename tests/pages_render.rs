//! Pages written straight from the stored records (`http::render`) are byte for byte the
//! bodies serde_json wrote before: each item of `GET /feedback` and
//! `GET /feedback/by-adapter/{id}` is exactly the body of `GET /feedback/{id}` (still
//! serialised by serde_json from the owned record), and the fields around the items are in
//! their old order. Items carry every optional field, unicode, escapes, metadata with
//! nested values and floats, a PII finding, another kind, and an erased tombstone.

mod common;

use common::server::TestServer;
use feedgraph::http::auth::Role;
use serde_json::{Value, json};

async fn raw(s: &TestServer, token: &str, path: &str) -> (u16, String, String) {
    let r = s
        .client
        .get(s.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let ctype = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, ctype, r.text().await.unwrap())
}

/// The body a page must have: `head`, then the items as `GET /feedback/{id}` answers them,
/// then `tail`.
async fn expected(s: &TestServer, token: &str, head: &str, ids: &[String], tail: &str) -> String {
    let mut out = format!("{{{head}\"feedback\":[");
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let (status, ctype, body) = raw(s, token, &format!("/feedback/{id}")).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(ctype, "application/json");
        out.push_str(&body);
    }
    out.push_str("],");
    out.push_str(tail);
    out.push('}');
    out
}

fn ids_of(page: &str) -> Vec<String> {
    let v: Value = serde_json::from_str(page).unwrap();
    v["feedback"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn pages_are_the_bytes_serde_json_wrote() {
    let s = TestServer::start_with(|c| c.rate_limit.enabled = false).await;
    let user = s.token("acme", "ana", Role::User);
    let admin = s.token("acme", "root", Role::Admin);
    for a in [
        json!({"id": "ad-1"}),
        json!({"id": "child:x@1", "derived_from": "ad-1"}),
    ] {
        let (st, b) = s.post(&admin, "/adapters", &a).await;
        assert!(st == 201 || st == 200, "{st} {b}");
    }
    let texts = [
        "plain question about a vector index and its recall",
        "quotes \" and backslash \\ and a tab\tand\nnewlines, é ü 日本語 🦀 \u{2028} </script>",
        "ask me at someone@example.com about the invoice, it is urgent",
    ];
    let mut ids = Vec::new();
    for (i, q) in texts.iter().enumerate() {
        let adapter = if i == 1 { "child:x@1" } else { "ad-1" };
        let body = json!({
            "type": if i % 2 == 0 { "positive" } else { "negative" },
            "question": q,
            "answer": format!("An answer long enough to pass the rules, number {i}: \"ok\" \\ ✓"),
            "user_id": format!("user-{i}"),
            "session_id": "sess-1",
            "interaction_id": "trace:7",
            "correction": "the corrected answer, with ümlauts",
            "comment": "a comment\twith a tab",
            "model_version": "llama-3",
            "adapter_id": adapter,
            "adapter_version": "v2",
            "score": 0.1 + 0.2 * i as f64,
            "provider": "openai",
            "metadata": {"z": 1, "a": [1, 2.5, -0.0, 1e300, null, true, "x\"y"],
                         "nested": {"é": {"deep": "✓"}, "n": -9007199254740993i64},
                         "big": 18446744073709551615u64},
        });
        let (st, b) = s.post(&user, "/feedback", &body).await;
        assert_eq!(st, 201, "{b}");
        ids.push(b["id"].as_str().unwrap().to_owned());
    }
    let (st, b) = s
        .post(
            &user,
            "/feedback",
            &json!({"kind": "label", "label": "billing \"x\"", "question": "Where is my invoice for March?",
                    "answer": "It is under Billing, then Invoices.", "adapter_id": "ad-1"}),
        )
        .await;
    assert_eq!(st, 201, "{b}");
    ids.push(b["id"].as_str().unwrap().to_owned());
    // A manual link with metadata, and an erased item.
    let (st, b) = s
        .post(
            &user,
            &format!("/feedback/{}/link", ids[1]),
            &json!({"adapter_id": "ad-1", "metadata": {"why": "same \"family\""}}),
        )
        .await;
    assert_eq!(st, 201, "{b}");
    let (st, b) = s
        .post(&admin, &format!("/feedback/{}/erase", ids[0]), &json!({}))
        .await;
    assert!(st == 200 || st == 201, "{st} {b}");

    // The org's list, whole and in pages of two with a cursor.
    let (st, ctype, page) = raw(&s, &user, "/feedback?limit=1000").await;
    assert_eq!((st, ctype.as_str()), (200, "application/json"), "{page}");
    let all = ids_of(&page);
    assert_eq!(all.len(), 4);
    let want = expected(&s, &user, "", &all, "\"count\":4,\"limit\":1000").await;
    assert_eq!(page, want);
    let (_, _, page) = raw(&s, &user, "/feedback?limit=2").await;
    let tail = format!("\"count\":2,\"limit\":2,\"next_cursor\":\"{}\"", all[1]);
    assert_eq!(page, expected(&s, &user, "", &all[..2], &tail).await);
    let (_, _, page) = raw(&s, &user, &format!("/feedback?limit=2&cursor={}", all[1])).await;
    assert_eq!(
        page,
        expected(&s, &user, "", &all[2..], "\"count\":2,\"limit\":2").await
    );
    // With a kind filter (records decide).
    let (_, _, page) = raw(&s, &user, "/feedback?kind=thumbs&limit=2").await;
    let thumbs: Vec<String> = all[1..].to_vec();
    let tail = format!("\"count\":2,\"limit\":2,\"next_cursor\":\"{}\"", thumbs[1]);
    assert_eq!(page, expected(&s, &user, "", &thumbs[..2], &tail).await);

    // By adapter: the adapter id (escaped) first, then the items, count, total, cursor.
    let (st, ctype, page) = raw(&s, &user, "/feedback/by-adapter/ad-1?limit=2").await;
    assert_eq!((st, ctype.as_str()), (200, "application/json"), "{page}");
    let linked = ids_of(&page);
    let tail = format!(
        "\"count\":2,\"total_linked\":4,\"next_cursor\":\"{}\"",
        linked[1]
    );
    assert_eq!(
        page,
        expected(&s, &user, "\"adapter_id\":\"ad-1\",", &linked, &tail).await
    );
    let path = "/feedback/by-adapter/ad-1?limit=100&include_descendants=true";
    let (_, _, page) = raw(&s, &user, path).await;
    let family = ids_of(&page);
    assert_eq!(family.len(), 4, "{page}");
    let tail = "\"count\":4,\"total_linked\":4";
    assert_eq!(
        page,
        expected(&s, &user, "\"adapter_id\":\"ad-1\",", &family, tail).await
    );
    let (_, _, page) = raw(&s, &user, "/feedback/by-adapter/child:x@1").await;
    let tail = "\"count\":1,\"total_linked\":1";
    assert_eq!(
        page,
        expected(
            &s,
            &user,
            "\"adapter_id\":\"child:x@1\",",
            &[ids[1].clone()],
            tail
        )
        .await
    );
    // Every item shows up whole: the erased one as a tombstone, the e-mail redacted.
    let v: Value = serde_json::from_str(&page).unwrap();
    assert!(
        v["feedback"][0]["question"]
            .as_str()
            .unwrap()
            .contains('\u{2028}')
    );
    let (_, _, whole) = raw(&s, &user, "/feedback?limit=1000").await;
    let v: Value = serde_json::from_str(&whole).unwrap();
    let erased = v["feedback"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == ids[0].as_str())
        .unwrap();
    assert!(erased["erased_at"].is_u64(), "{erased}");
    assert_eq!(erased["question"], "");
    let redacted = v["feedback"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == ids[2].as_str())
        .unwrap();
    // The e-mail was found (flagged or redacted, as configured); its finding renders too.
    assert!(
        !redacted["pii"].as_array().unwrap().is_empty(),
        "{redacted}"
    );
    // An unknown adapter is still the 404 it was.
    let (st, _, body) = raw(&s, &user, "/feedback/by-adapter/nope").await;
    assert_eq!(st, 404, "{body}");
    s.stop().await;
}
