//! The API contract a client builds on: where an answer could be taken for the truth while
//! it is not, the rule is pinned here (issue 18). Each test names the rule it holds.

mod common;

use common::server::{TestServer, error_details};
use feedgraph::http::auth::Role;
use serde_json::{Value, json};

async fn server() -> TestServer {
    TestServer::start_with(|c| c.rate_limit.enabled = false).await
}

async fn submit(s: &TestServer, token: &str, adapter: &str, i: usize) -> String {
    let (status, body) = s
        .post(
            token,
            "/feedback",
            &json!({
                "type": "positive",
                "question": format!("Contract question number {i}?"),
                "answer": format!("Contract answer number {i}."),
                "adapter_id": adapter,
            }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

fn ids(page: &Value, field: &str) -> Vec<String> {
    page[field]
        .as_array()
        .unwrap_or_else(|| panic!("no '{field}' in {page}"))
        .iter()
        .map(|f| f["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Rule: a cursor that did not come from a listing is a 400 naming `cursor`, never an
/// empty page; the cursor of the last page's last item gives an empty last page.
#[tokio::test]
async fn a_bogus_cursor_is_refused_and_the_last_cursor_ends_the_list() {
    let s = server().await;
    let acme = s.token("acme", "ana", Role::User);
    let mut made = Vec::new();
    for i in 0..5 {
        made.push(submit(&s, &acme, "contract_lora", i).await);
    }
    for path in ["/feedback", "/feedback/by-adapter/contract_lora"] {
        for bogus in [
            "abc",
            "feedback-0000",
            "feedback-ZZZZZZZZZZZZZZZZZZZZZZZZZZ",
        ] {
            let (status, body) = s.get(&acme, &format!("{path}?cursor={bogus}")).await;
            assert_eq!(status, 400, "{path} cursor {bogus}: {body}");
            assert!(error_details(&body).contains("'cursor'"), "{body}");
        }
        // Another org's item is no cursor here either.
        let globex = s.token("globex", "gus", Role::User);
        let theirs = submit(&s, &globex, "contract_lora", 99).await;
        let (status, body) = s.get(&acme, &format!("{path}?cursor={theirs}")).await;
        assert_eq!(status, 400, "{path}: {body}");

        // Paging with limit 2 sees every item once, newest first, and ends with an empty
        // page only when the cursor is the last item's.
        let field = "feedback";
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let url = match &cursor {
                Some(c) => format!("{path}?limit=2&cursor={c}"),
                None => format!("{path}?limit=2"),
            };
            let (status, page) = s.get(&acme, &url).await;
            assert_eq!(status, 200, "{page}");
            seen.extend(ids(&page, field));
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
        }
        let mut newest_first = made.clone();
        newest_first.reverse();
        assert_eq!(seen, newest_first, "{path}");
        let oldest = made.first().unwrap();
        let (status, page) = s.get(&acme, &format!("{path}?cursor={oldest}")).await;
        assert_eq!(status, 200, "{page}");
        assert!(ids(&page, field).is_empty(), "{page}");
    }
}

/// Rule: an adapter the org does not have is a 404 wherever it is named (stats,
/// by-adapter, lineage, descendants, claims), also in an org with no data at all.
#[tokio::test]
async fn an_unknown_adapter_is_a_404_everywhere() {
    let s = server().await;
    let trainer = s.token("acme", "tina", Role::Trainer);
    let empty_org = s.token("initech", "ian", Role::Trainer);
    submit(&s, &trainer, "known_lora", 1).await;
    for token in [&trainer, &empty_org] {
        for path in [
            "/feedback/stats?adapter=nope_lora",
            "/feedback/by-adapter/nope_lora",
            "/adapters/nope_lora/lineage",
            "/adapters/nope_lora/descendants",
            "/adapters/nope_lora",
        ] {
            let (status, body) = s.get(token, path).await;
            assert_eq!(status, 404, "{path}: {body}");
            assert!(error_details(&body).contains("nope_lora"), "{body}");
        }
        let (status, body) = s
            .post(
                token,
                "/training/batches",
                &json!({"adapter_id": "nope_lora"}),
            )
            .await;
        assert_eq!(status, 404, "claim: {body}");
    }
    // A known adapter still answers, and a model filter that matches nothing gives zeros.
    let (status, body) = s.get(&trainer, "/feedback/stats?adapter=known_lora").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["total_feedback"], 1, "{body}");
    let (status, body) = s.get(&trainer, "/feedback/stats?model=no-such-model").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["total_feedback"], 0, "{body}");
}

/// Rule: creating an adapter is idempotent in the strict sense: the same request gives the
/// same result (200, unchanged), a request that differs is a 409 naming the fields. An
/// adapter auto-created by feedback may be described once, and then counts as created.
#[tokio::test]
async fn re_posting_an_adapter_is_the_same_result_or_a_conflict() {
    let s = server().await;
    let admin = s.token("acme", "ada", Role::Admin);
    let first = json!({"id": "desc_lora", "base_model": "llama-2-7b", "version": "v1"});
    let (status, body) = s.post(&admin, "/adapters", &first).await;
    assert_eq!(status, 201, "{body}");
    let (status, again) = s.post(&admin, "/adapters", &first).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["result"], "unchanged", "{again}");
    assert_eq!(again["version"], "v1", "{again}");
    for (change, field) in [
        (
            json!({"id": "desc_lora", "base_model": "llama-2-7b", "version": "v2"}),
            "version",
        ),
        (json!({"id": "desc_lora", "version": "v1"}), "base_model"),
        (
            json!({"id": "desc_lora", "base_model": "llama-2-7b", "version": "v1", "metadata": {"k": "v"}}),
            "metadata",
        ),
    ] {
        let (status, body) = s.post(&admin, "/adapters", &change).await;
        assert_eq!(status, 409, "{change}: {body}");
        let details = error_details(&body);
        assert!(details.contains(field), "{details}");
    }
    let (_, stored) = s.get(&admin, "/adapters/desc_lora").await;
    assert_eq!(stored["version"], "v1", "nothing was merged: {stored}");

    // Auto-created by feedback, then described: source becomes manual, and from then on
    // the same rule holds.
    submit(&s, &admin, "auto_lora", 1).await;
    let (_, auto) = s.get(&admin, "/adapters/auto_lora").await;
    assert_eq!(auto["source"], "auto", "{auto}");
    let describe = json!({"id": "auto_lora", "base_model": "llama-2-7b"});
    let (status, body) = s.post(&admin, "/adapters", &describe).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["source"], "manual", "{body}");
    let (status, body) = s.post(&admin, "/adapters", &describe).await;
    assert_eq!(
        (status, body["result"].as_str()),
        (200, Some("unchanged")),
        "{body}"
    );
    let (status, body) = s
        .post(
            &admin,
            "/adapters",
            &json!({"id": "auto_lora", "base_model": "mistral-7b"}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
}

/// Rule: history values are JSON values, not JSON text inside strings.
#[tokio::test]
async fn history_values_are_json_values() {
    let s = server().await;
    let admin = s.token("acme", "ada", Role::Admin);
    let (status, body) = s
        .post(
            &admin,
            "/feedback",
            &json!({"type": "negative", "question": "Is history typed?", "answer": "Maybe so.",
                    "metadata": {"k": "v", "n": 2}}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().unwrap();
    let (status, r) = s
        .patch(
            &admin,
            &format!("/feedback/{id}"),
            &json!({"validation_status": "approved", "reason": "checked"}),
        )
        .await;
    assert_eq!(status, 200, "{r}");
    let (status, h) = s.get(&admin, &format!("/feedback/{id}/history")).await;
    assert_eq!(status, 200, "{h}");
    let versions = h["versions"].as_array().unwrap();
    let change = |v: usize, field: &str| -> Value {
        versions[v]["changes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["field"] == field)
            .unwrap_or_else(|| panic!("no change of {field} in version {v}: {h}"))
            .clone()
    };
    let status = change(1, "validation_status");
    assert_eq!(status["old"], "flagged", "{h}");
    assert_eq!(status["new"], "approved", "{h}");
    assert_eq!(
        change(0, "metadata")["new"],
        json!({"k": "v", "n": 2}),
        "{h}"
    );
    assert_eq!(change(0, "type")["new"], "negative", "{h}");
    assert_eq!(change(0, "metadata")["old"], Value::Null, "{h}");
}
