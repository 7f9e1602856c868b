//! Graph queries over HTTP: the seed's four queries verbatim, named queries, errors with
//! positions, limits, and tenant isolation.

mod common;

use common::server::{TestServer, error_details};
use feedgraph::http::auth::Role;
use serde_json::{Value, json};

const SEED_BY_ADAPTER: &str =
    "MATCH (f:Feedback)-[r:FEEDBACK_FOR]->(a:Adapter {id: 'themis_help_lora_v2'})
WHERE f.validation_status = 'approved'
  AND f.used_for_training = false
RETURN f
LIMIT 100";

const SEED_STATS: &str = "MATCH (f:Feedback)-[r:FEEDBACK_FOR]->(a:Adapter)
RETURN a.id AS adapter_id,
       COUNT(f) AS total_feedback,
       SUM(CASE WHEN f.type = 'positive' THEN 1 ELSE 0 END) AS positive_count,
       SUM(CASE WHEN f.type = 'negative' THEN 1 ELSE 0 END) AS negative_count,
       AVG(CASE WHEN f.type = 'positive' THEN 1.0 ELSE 0.0 END) AS positive_ratio
GROUP BY a.id";

const SEED_LINEAGE: &str =
    "MATCH path = (f:Feedback)-[:FEEDBACK_FOR]->(a1:Adapter)-[:DERIVED_FROM*]->(a2:Adapter)
WHERE a2.id = 'base_model'
RETURN path, f.id, a1.id";

const SEED_SHARED: &str = "MATCH (f:Feedback)-[:FEEDBACK_FOR]->(a1:Adapter),
      (f:Feedback)-[:FEEDBACK_FOR]->(a2:Adapter)
WHERE a1.id <> a2.id
RETURN a1.id, a2.id, COUNT(f) AS shared_feedback_count
GROUP BY a1.id, a2.id
HAVING shared_feedback_count > 10
ORDER BY shared_feedback_count DESC";

async fn server(tweak: impl FnOnce(&mut feedgraph::config::Config)) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = common::open(dir.path());
        common::load_fixtures(&s);
    }
    TestServer::start_in(dir, |c| {
        c.rate_limit.enabled = false;
        tweak(c);
    })
    .await
}

async fn run(s: &TestServer, token: &str, query: &str, params: Value) -> (u16, Value) {
    s.post(
        token,
        "/graph/query",
        &json!({"query": query, "params": params}),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_queries_named_queries_and_tenancy() {
    let s = server(|_| {}).await;
    let acme = s.token("acme", "ana", Role::User);
    let globex = s.token("globex", "gus", Role::User);

    let (status, r) = run(&s, &acme, SEED_BY_ADAPTER, json!({})).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["columns"], json!(["f"]));
    let rows = r["rows"].as_array().unwrap();
    assert!(!rows.is_empty());
    for row in rows {
        let f = &row[0];
        assert_eq!(f["validation_status"], "approved");
        assert_eq!(f["used_for_training"], false);
        assert!(f["question"].is_string(), "text loaded from the store: {f}");
    }
    // The by-adapter endpoint agrees on the item set.
    let (_, by) = s
        .get(
            &acme,
            "/feedback/by-adapter/themis_help_lora_v2?unused=true&limit=1000",
        )
        .await;
    let mut want: Vec<String> = by["feedback"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["validation_status"] == "approved")
        .map(|f| f["id"].as_str().unwrap().to_owned())
        .collect();
    let mut got: Vec<String> = rows
        .iter()
        .map(|r| r[0]["id"].as_str().unwrap().to_owned())
        .collect();
    want.sort();
    got.sort();
    assert_eq!(got, want);

    let (status, r) = run(&s, &acme, SEED_STATS, json!({})).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(
        r["columns"],
        json!([
            "adapter_id",
            "total_feedback",
            "positive_count",
            "negative_count",
            "positive_ratio"
        ])
    );
    for row in r["rows"].as_array().unwrap() {
        let id = row[0].as_str().unwrap();
        let (_, st) = s.get(&acme, &format!("/feedback/stats?adapter={id}")).await;
        assert_eq!(row[1], st["total_feedback"], "{id}");
        assert_eq!(row[2], st["positive_count"], "{id}");
    }

    let (status, r) = run(&s, &acme, SEED_LINEAGE, json!({})).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["columns"], json!(["path", "f.id", "a1.id"]));
    assert!(r["rows"].as_array().unwrap().len() > 50);
    let path = r["rows"][0][0].as_array().unwrap();
    assert!(
        path.len() >= 5 && path.len() % 2 == 1,
        "alternating nodes and relationships"
    );

    let (status, r) = run(&s, &acme, SEED_SHARED, json!({})).await;
    assert_eq!(status, 200, "{r}");
    for row in r["rows"].as_array().unwrap() {
        assert!(row[2].as_i64().unwrap() > 10);
    }

    // Named queries.
    let (status, list) = s.get(&acme, "/graph/queries").await;
    assert_eq!(status, 200);
    let names: Vec<&str> = list["queries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["name"].as_str().unwrap())
        .collect();
    for n in ["by_adapter", "adapter_stats", "lineage", "shared_feedback"] {
        assert!(names.contains(&n), "{n} missing from {names:?}");
    }
    let (status, r) = s
        .post(
            &acme,
            "/graph/queries/lineage",
            &json!({"params": {"root": "base_model"}}),
        )
        .await;
    assert_eq!(status, 200, "{r}");
    let (status, body) = s
        .post(&acme, "/graph/queries/lineage", &json!({"params": {}}))
        .await;
    assert_eq!(status, 400);
    assert!(error_details(&body).contains("root"));
    assert_eq!(
        s.post(&acme, "/graph/queries/nope", &json!({})).await.0,
        404
    );

    // Tenancy: the same query sees only the caller's org.
    let all_adapters = "MATCH (a:Adapter) RETURN a.id ORDER BY a.id";
    let (_, a) = run(&s, &acme, all_adapters, json!({})).await;
    let (_, g) = run(&s, &globex, all_adapters, json!({})).await;
    let ids = |v: &Value| {
        v["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r[0].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert!(ids(&a).contains(&"themis_help_lora".to_owned()));
    assert!(!ids(&g).contains(&"themis_help_lora".to_owned()));
    assert!(ids(&g).contains(&"support_lora".to_owned()));
    let count = "MATCH (f:Feedback) RETURN count(f) AS n";
    assert_eq!(run(&s, &acme, count, json!({})).await.1["rows"][0][0], 150);
    assert_eq!(run(&s, &globex, count, json!({})).await.1["rows"][0][0], 60);
    let nobody = s.token("nobody", "n", Role::User);
    assert_eq!(run(&s, &nobody, count, json!({})).await.1["rows"][0][0], 0);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_errors_and_limits() {
    let s = server(|c| {
        c.query.max_rows = 5;
        c.query.max_work = 100_000;
    })
    .await;
    let t = s.token("acme", "ana", Role::User);
    let cases: Vec<(&str, &str, &str)> = vec![
        ("MATCH (f:Feedback RETURN f", "Invalid query", "line 1"),
        (
            "MATCH (f:Feedback) RETURN nosuchfn(f)",
            "Invalid query",
            "nosuchfn",
        ),
        ("CREATE (a:Adapter {id: 'x'})", "Invalid query", "read-only"),
        (
            "MATCH (a:Adapter) SET a.id = 'x'",
            "Invalid query",
            "read-only",
        ),
        (
            "MATCH (f:Feedback) WHERE f.id RETURN f.id",
            "Invalid query",
            "type",
        ),
        (
            "MATCH (a:Adapter {id: $who}) RETURN a",
            "Invalid query",
            "who",
        ),
        (
            "MATCH (f:Feedback) RETURN f.id",
            "Query limit exceeded",
            "max_rows",
        ),
    ];
    for (q, error, hint) in cases {
        let (status, body) = run(&s, &t, q, json!({})).await;
        assert_eq!(status, 400, "{q}: {body}");
        assert_eq!(body["error"], error, "{q}");
        let d = error_details(&body);
        assert!(d.contains(hint), "{q}: {d}");
    }
    let (status, body) = s.post(&t, "/graph/query", &json!({"params": {}})).await;
    assert_eq!(status, 400);
    assert!(error_details(&body).contains("query"));
    // The server stays healthy and answers the next query.
    let r = s.get_open("/healthz").await;
    assert_eq!(r.status().as_u16(), 200);
    let (status, r) = run(&s, &t, "MATCH (a:Adapter) RETURN count(*) AS n", json!({})).await;
    assert_eq!((status, r["rows"][0][0].as_i64()), (200, Some(9)));
    s.stop().await;
}
