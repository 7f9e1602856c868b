//! Kinds of feedback over HTTP (issue 15): the seed's thumbs answer as before, every other
//! kind has its required field and a 400 naming it, kinds show in records, lists, filters,
//! Cypher, the batch endpoint, the summary and the dump; score configs are admin-written,
//! versioned, and checked on submit (nothing stored on a refusal).

mod common;

use common::server::{TestServer, error_details};
use feedgraph::http::auth::Role;
use serde_json::{Value, json};

async fn server() -> TestServer {
    TestServer::start_with(|c| c.rate_limit.enabled = false).await
}

fn item(extra: Value) -> Value {
    let mut v = json!({
        "question": "How do I rotate the API key of a project?",
        "answer": "Open Settings, then Keys, and press Rotate.",
    });
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    v
}

async fn count(s: &TestServer, token: &str) -> usize {
    let (status, body) = s.get(token, "/feedback?limit=1000").await;
    assert_eq!(status, 200, "{body}");
    body["count"].as_u64().unwrap() as usize
}

/// Rule: an item without `kind` is the seed's thumbs: the 201 body has exactly the seed's
/// fields (plus the reasons it always had), no `kind`.
#[tokio::test]
async fn the_seed_submit_answers_byte_for_byte_as_before() {
    let s = server().await;
    let t = s.token("acme", "ana", Role::User);
    let (status, body) = s
        .post(&t, "/feedback", &item(json!({"type": "positive"})))
        .await;
    assert_eq!(status, 201, "{body}");
    let mut keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "answer",
            "created_at",
            "id",
            "message",
            "question",
            "type",
            "validation_reasons",
            "validation_status"
        ],
        "{body}"
    );
    // The stored record says what it is.
    let (_, rec) = s
        .get(&t, &format!("/feedback/{}", body["id"].as_str().unwrap()))
        .await;
    assert_eq!(rec["kind"], "thumbs", "{rec}");
    assert_eq!(rec["label"], Value::Null, "{rec}");
    // Still required for thumbs: type.
    let (status, body) = s.post(&t, "/feedback", &item(json!({}))).await;
    assert_eq!(status, 400, "{body}");
    assert!(error_details(&body).contains("'type'"), "{body}");
    s.stop().await;
}

/// Rule: each kind's required field is a 400 naming it, and nothing is stored.
#[tokio::test]
async fn every_kind_names_its_missing_or_wrong_field() {
    let s = server().await;
    let t = s.token("acme", "ana", Role::User);
    let cases = [
        (json!({"kind": "rating", "type": "positive"}), "'score'"),
        (json!({"kind": "rating", "score": 4}), "'type'"),
        (json!({"kind": "text", "type": "negative"}), "'comment'"),
        (
            json!({"kind": "text", "comment": "It was slow to load."}),
            "'type'",
        ),
        (json!({"kind": "correction"}), "'correction'"),
        (json!({"kind": "label"}), "'label'"),
        (json!({"kind": "label", "label": "   "}), "'label'"),
        (
            json!({"kind": "thumbs", "type": "positive", "label": "billing"}),
            "'label'",
        ),
        (json!({"kind": "emoji", "type": "positive"}), "'kind'"),
        (
            json!({"type": "positive", "provider": "open ai"}),
            "'provider'",
        ),
        (
            json!({"kind": "rating", "score": 3, "score_config": "nope"}),
            "'score_config'",
        ),
        (
            json!({"kind": "label", "label": "x".repeat(300)}),
            "'label'",
        ),
    ];
    for (extra, field) in cases {
        let (status, body) = s.post(&t, "/feedback", &item(extra.clone())).await;
        assert_eq!(status, 400, "{extra}: {body}");
        assert!(error_details(&body).contains(field), "{extra}: {body}");
    }
    assert_eq!(count(&s, &t).await, 0);
    s.stop().await;
}

/// Rule: each kind is stored with its fields and default polarity, echoed in the 201
/// body, filtered by `kind=` in lists and by-adapter, and readable in Cypher.
#[tokio::test]
async fn kinds_are_stored_listed_filtered_and_queried() {
    let s = server().await;
    let t = s.token("acme", "ana", Role::User);
    let sent = [
        json!({"type": "positive", "adapter_id": "kinds_lora"}),
        json!({"kind": "rating", "type": "positive", "score": 4.5, "provider": "openai", "adapter_id": "kinds_lora"}),
        json!({"kind": "text", "type": "negative", "comment": "The steps are out of date."}),
        json!({"kind": "correction", "correction": "Open Settings, then API, and press Regenerate."}),
        json!({"kind": "label", "label": "account_management", "provider": "anthropic", "adapter_id": "kinds_lora"}),
    ];
    let mut ids = Vec::new();
    for extra in &sent {
        let (status, body) = s.post(&t, "/feedback", &item(extra.clone())).await;
        assert_eq!(status, 201, "{extra}: {body}");
        match extra.get("kind") {
            None => assert!(body.get("kind").is_none(), "{body}"),
            Some(k) => assert_eq!(&body["kind"], k, "{body}"),
        }
        ids.push(body["id"].as_str().unwrap().to_owned());
    }
    let (_, correction) = s.get(&t, &format!("/feedback/{}", ids[3])).await;
    assert_eq!(
        correction["type"], "negative",
        "a correction defaults to negative"
    );
    let (_, label) = s.get(&t, &format!("/feedback/{}", ids[4])).await;
    assert_eq!(label["type"], "positive", "a label defaults to positive");
    assert_eq!(label["label"], "account_management");
    assert_eq!(label["provider"], "anthropic");

    for (kind, want) in [
        ("thumbs", vec![0]),
        ("rating", vec![1]),
        ("text", vec![2]),
        ("correction", vec![3]),
        ("label", vec![4]),
    ] {
        let (status, body) = s.get(&t, &format!("/feedback?kind={kind}")).await;
        assert_eq!(status, 200, "{body}");
        let got: Vec<&str> = body["feedback"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["id"].as_str().unwrap())
            .collect();
        let want: Vec<&str> = want.iter().map(|&i| ids[i].as_str()).collect();
        assert_eq!(got, want, "kind={kind}");
    }
    let (status, body) = s.get(&t, "/feedback?kind=emoji").await;
    assert_eq!(status, 400, "{body}");
    assert!(error_details(&body).contains("kind"), "{body}");
    // by-adapter with a kind, and its paging: limit 1 over two ratings/labels.
    let (status, body) = s
        .get(&t, "/feedback/by-adapter/kinds_lora?kind=label")
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["count"], 1, "{body}");
    assert_eq!(body["feedback"][0]["id"], ids[4].as_str());
    assert_eq!(body["total_linked"], 3, "{body}");
    let (_, page) = s.get(&t, "/feedback?kind=thumbs&limit=1").await;
    assert!(page.get("next_cursor").is_none(), "{page}");
    // A kind filter pages: two non-thumbs items with limit 1.
    let (_, p1) = s.get(&t, "/feedback?type=negative&kind=text&limit=1").await;
    assert_eq!(p1["count"], 1, "{p1}");

    // Cypher sees kind, label, provider and score.
    let (status, r) = s
        .post(
            &t,
            "/graph/query",
            &json!({"query": "MATCH (f:Feedback) WHERE f.kind IN ['rating', 'label'] \
                     RETURN f.kind AS kind, f.label AS label, f.provider AS provider, \
                     f.score AS score ORDER BY kind"}),
        )
        .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(
        r["rows"],
        json!([
            ["label", "account_management", "anthropic", null],
            ["rating", null, "openai", 4.5]
        ]),
        "{r}"
    );
    s.stop().await;
}

/// Rule: score configs are written by admins only, versioned (a change is a new version
/// with history; the same values write nothing), and read by every role.
#[tokio::test]
async fn score_configs_are_admin_written_and_versioned() {
    let s = server().await;
    let admin = s.token("acme", "root", Role::Admin);
    let user = s.token("acme", "ana", Role::User);
    let stars =
        json!({"name": "stars", "data_type": "numeric", "min": 1, "max": 5, "threshold": 4});
    let (status, body) = s.post(&user, "/score-configs", &stars).await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = s.post(&admin, "/score-configs", &stars).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["result"], "created");
    assert_eq!(body["config"]["version"], 1);
    let (status, body) = s.post(&admin, "/score-configs", &stars).await;
    assert_eq!(
        (status, &body["result"]),
        (200, &json!("unchanged")),
        "{body}"
    );
    let mut wider = stars.clone();
    wider["max"] = json!(10);
    let (status, body) = s.post(&admin, "/score-configs", &wider).await;
    assert_eq!(
        (status, &body["result"]),
        (200, &json!("updated")),
        "{body}"
    );
    assert_eq!(body["config"]["version"], 2);
    let (status, h) = s.get(&user, "/score-configs/stars/history").await;
    assert_eq!(status, 200, "{h}");
    assert_eq!(h.as_array().unwrap().len(), 2, "{h}");
    assert_eq!(h[1]["action"], "update");
    assert_eq!(
        h[1]["changes"],
        json!([{"field": "max", "old": 5.0, "new": 10.0}])
    );
    let (status, c) = s.get(&user, "/score-configs/stars").await;
    assert_eq!((status, &c["max"]), (200, &json!(10.0)), "{c}");
    let (status, l) = s.get(&user, "/score-configs").await;
    assert_eq!((status, &l["count"]), (200, &json!(1)), "{l}");
    let (status, _) = s.get(&user, "/score-configs/nope").await;
    assert_eq!(status, 404);
    // Another org sees none of it.
    let other = s.token("globex", "gus", Role::User);
    let (status, _) = s.get(&other, "/score-configs/stars").await;
    assert_eq!(status, 404);

    // Bad configs name their field.
    for (bad, field) in [
        (
            json!({"data_type": "numeric", "min": 1, "max": 5}),
            "'name'",
        ),
        (json!({"name": "x"}), "'data_type'"),
        (json!({"name": "x", "data_type": "fuzzy"}), "'data_type'"),
        (
            json!({"name": "x", "data_type": "numeric", "min": 1}),
            "'max'",
        ),
        (
            json!({"name": "x", "data_type": "numeric", "min": 5, "max": 1}),
            "'max'",
        ),
        (
            json!({"name": "x", "data_type": "numeric", "min": 1, "max": 5, "threshold": 9}),
            "'threshold'",
        ),
        (
            json!({"name": "x", "data_type": "categorical"}),
            "'categories'",
        ),
        (
            json!({"name": "x", "data_type": "categorical", "categories": ["a", "a"]}),
            "'categories'",
        ),
        (
            json!({"name": "x", "data_type": "boolean", "categories": ["a"]}),
            "'categories'",
        ),
        (json!({"name": "x/y", "data_type": "boolean"}), "'name'"),
    ] {
        let (status, body) = s.post(&admin, "/score-configs", &bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(error_details(&body).contains(field), "{bad}: {body}");
    }
    s.stop().await;
}

/// Rule: a submit naming a config is checked against it (range, labels, booleans, kind);
/// a refused one stores nothing; a rating without `type` takes it from the threshold; the
/// batch endpoint applies the same rules per item.
#[tokio::test]
async fn submits_are_checked_against_their_score_config() {
    let s = server().await;
    let admin = s.token("acme", "root", Role::Admin);
    let t = s.token("acme", "ana", Role::User);
    for c in [
        json!({"name": "stars", "data_type": "numeric", "min": 1, "max": 5, "threshold": 4}),
        json!({"name": "topic", "data_type": "categorical", "categories": ["billing", "auth"]}),
        json!({"name": "helpful", "data_type": "boolean"}),
    ] {
        let (status, body) = s.post(&admin, "/score-configs", &c).await;
        assert_eq!(status, 201, "{body}");
    }
    for (bad, field) in [
        (
            json!({"kind": "rating", "score": 6, "score_config": "stars"}),
            "'score'",
        ),
        (
            json!({"kind": "rating", "score": 0.5, "score_config": "stars"}),
            "'score'",
        ),
        (
            json!({"kind": "label", "label": "shipping", "score_config": "topic"}),
            "'label'",
        ),
        (
            json!({"kind": "rating", "score": 0.5, "score_config": "helpful"}),
            "'score'",
        ),
        (
            json!({"kind": "rating", "score": 3, "score_config": "topic"}),
            "'score_config'",
        ),
        (
            json!({"kind": "label", "label": "billing", "score_config": "stars"}),
            "'score_config'",
        ),
        (
            json!({"kind": "rating", "score": 3, "score_config": "missing"}),
            "'score_config'",
        ),
    ] {
        let (status, body) = s.post(&t, "/feedback", &item(bad.clone())).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(error_details(&body).contains(field), "{bad}: {body}");
    }
    assert_eq!(count(&s, &t).await, 0, "a refused submit stores nothing");

    // The threshold decides the type when none is given; a given type wins.
    for (score, want) in [(4.0, "positive"), (3.5, "negative")] {
        let (status, body) = s
            .post(
                &t,
                "/feedback",
                &item(json!({"kind": "rating", "score": score, "score_config": "stars"})),
            )
            .await;
        assert_eq!((status, &body["type"]), (201, &json!(want)), "{body}");
    }
    let (status, body) = s
        .post(
            &t,
            "/feedback",
            &item(json!({"kind": "rating", "score": 1, "score_config": "helpful"})),
        )
        .await;
    assert_eq!((status, &body["type"]), (201, &json!("positive")), "{body}");
    let (status, body) = s
        .post(
            &t,
            "/feedback",
            &item(json!({"kind": "label", "label": "auth", "score_config": "topic"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");

    // The batch endpoint: the good items go in, each bad one says why.
    let items = json!([
        item(json!({"kind": "rating", "score": 5, "score_config": "stars"})),
        item(json!({"kind": "rating", "score": 50, "score_config": "stars"})),
        item(json!({"kind": "label", "label": "billing", "score_config": "topic"})),
        item(json!({"kind": "label", "label": "nope", "score_config": "topic"})),
        item(json!({"kind": "rating", "score": 2, "score_config": "unknown"})),
    ]);
    let (status, body) = s
        .post(&t, "/feedback/batch", &json!({"items": items}))
        .await;
    assert_eq!(status, 200, "{body}");
    let statuses: Vec<u64> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [201, 400, 201, 400, 400], "{body}");
    assert!(
        body["results"][1]["details"]
            .as_str()
            .unwrap()
            .contains("'score'"),
        "{body}"
    );
    assert!(
        body["results"][3]["details"]
            .as_str()
            .unwrap()
            .contains("'label'"),
        "{body}"
    );
    assert!(
        body["results"][4]["details"]
            .as_str()
            .unwrap()
            .contains("'score_config'"),
        "{body}"
    );
    assert_eq!(count(&s, &t).await, 6);
    s.stop().await;
}

/// Rule: the summary counts by kind and type, averages ratings overall and per config,
/// distributes labels, groups by model and provider, and honours `window_hours`; the
/// seed's stats body keeps its shape.
#[tokio::test]
async fn the_summary_counts_kinds_ratings_labels_and_groups() {
    let s = server().await;
    let admin = s.token("acme", "root", Role::Admin);
    let t = s.token("acme", "ana", Role::User);
    let (status, body) = s
        .post(
            &admin,
            "/score-configs",
            &json!({"name": "stars", "data_type": "numeric", "min": 1, "max": 5}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    for extra in [
        json!({"type": "positive", "model_version": "m1"}),
        json!({"kind": "rating", "type": "positive", "score": 5, "score_config": "stars", "provider": "openai", "model_version": "m1"}),
        json!({"kind": "rating", "type": "negative", "score": 2, "score_config": "stars", "provider": "openai"}),
        json!({"kind": "rating", "type": "positive", "score": 0.5}),
        json!({"kind": "label", "label": "billing"}),
        json!({"kind": "label", "label": "billing", "provider": "anthropic"}),
        json!({"kind": "label", "label": "auth"}),
    ] {
        let (status, body) = s.post(&t, "/feedback", &item(extra)).await;
        assert_eq!(status, 201, "{body}");
    }
    let (status, sum) = s.get(&t, "/feedback/summary?window_hours=1").await;
    assert_eq!(status, 200, "{sum}");
    assert_eq!(sum["total_count"], 7, "{sum}");
    assert_eq!(sum["window_hours"], 1, "{sum}");
    assert_eq!(
        sum["count_by_kind"],
        json!({"thumbs": 1, "rating": 3, "text": 0, "correction": 0, "label": 3})
    );
    assert_eq!(sum["count_by_type"], json!({"positive": 6, "negative": 1}));
    assert_eq!(sum["average_rating"], json!(2.5), "{sum}");
    assert_eq!(
        sum["ratings_by_config"],
        json!({"stars": {"count": 2, "average": 3.5}})
    );
    assert_eq!(sum["label_distribution"], json!({"billing": 2, "auth": 1}));
    assert_eq!(sum["by_provider"]["openai"]["total_count"], 2, "{sum}");
    assert_eq!(sum["by_provider"]["openai"]["average_rating"], 3.5, "{sum}");
    assert_eq!(sum["by_provider"]["(none)"]["total_count"], 4, "{sum}");
    assert_eq!(sum["by_model"]["m1"]["total_count"], 2, "{sum}");
    let (_, one) = s.get(&t, "/feedback/summary?provider=anthropic").await;
    assert_eq!(one["total_count"], 1, "{one}");
    // A zero-hour window holds nothing created before now.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let (_, none) = s.get(&t, "/feedback/summary?window_hours=0").await;
    assert_eq!(none["total_count"], 0, "{none}");
    let (status, bad) = s.get(&t, "/feedback/summary?window_hours=-1").await;
    assert_eq!(status, 400, "{bad}");
    // The seed's stats body is unchanged.
    let (status, stats) = s.get(&t, "/feedback/stats").await;
    assert_eq!(status, 200, "{stats}");
    assert!(stats.get("count_by_kind").is_none(), "{stats}");
    assert_eq!(stats["total_feedback"], 7, "{stats}");
    s.stop().await;
}

/// Rule: the dump carries kinds, labels and providers, and loading it gives them back.
// Multi-threaded: the test calls the synchronous service, which on PostgreSQL blocks on
// the backend's runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dump_round_trips_kinds() {
    let s = server().await;
    let t = s.token("acme", "ana", Role::User);
    for extra in [
        json!({"type": "positive"}),
        json!({"kind": "label", "label": "billing", "provider": "openai"}),
        json!({"kind": "rating", "type": "negative", "score": 2}),
    ] {
        let (status, body) = s.post(&t, "/feedback", &item(extra)).await;
        assert_eq!(status, 201, "{body}");
    }
    let dir = s.stop_keep().await;
    let service = common::open(dir.path());
    let mut out = Vec::new();
    service.dump("acme", &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains(r#""feedback_kind":"label""#), "{text}");
    assert!(text.contains(r#""label":"billing""#), "{text}");
    assert!(text.contains(r#""provider":"openai""#), "{text}");
    let thumbs = text
        .lines()
        .find(|l| l.contains(r#""kind":"feedback""#) && !l.contains("feedback_kind"));
    assert!(
        thumbs.is_some(),
        "a thumbs line names no feedback_kind: {text}"
    );
    let other = tempfile::tempdir().unwrap();
    let loaded = common::open(other.path());
    loaded
        .load_dump(
            "acme",
            feedgraph::service::dump::parse_dump(&text)
                .unwrap()
                .into_iter()
                .map(Ok),
            |_, _| {},
        )
        .unwrap();
    let mut again = Vec::new();
    loaded.dump("acme", &mut again).unwrap();
    assert_eq!(String::from_utf8(again).unwrap(), text);
}
