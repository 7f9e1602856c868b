//! The graph query API against the REST API (issue 18, points 3 and 9): every property a
//! record shows over REST reads the same in Cypher, and relationship ids stay put.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::server::TestServer;
use feedgraph::http::auth::Role;
use serde_json::{Value, json};

/// A server on a data directory holding the fixtures (every org of them).
async fn server_with_fixtures() -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    {
        let service = common::open(dir.path());
        common::load_fixtures(&service);
    }
    TestServer::start_in(dir, |c| {
        c.rate_limit.enabled = false;
        // These tests compare answers, not speed: on PostgreSQL every text property of
        // every row is a store read, which a loaded 2-core machine can stretch past the
        // default 5 s query limit.
        c.query.timeout_ms = 60_000;
    })
    .await
}

/// The orgs the fixtures file names.
fn fixture_orgs() -> BTreeSet<String> {
    std::fs::read_to_string(common::fixtures())
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter_map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            v["org"].as_str().map(str::to_owned)
        })
        .collect()
}

async fn query(s: &TestServer, token: &str, q: &str, params: Value) -> Value {
    let (status, body) = s
        .post(
            token,
            "/graph/query",
            &json!({"query": q, "params": params}),
        )
        .await;
    assert_eq!(status, 200, "{q}: {body}");
    body
}

/// The result rows as maps from column name to value.
fn rows(result: &Value) -> Vec<BTreeMap<String, Value>> {
    let columns: Vec<String> = result["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    result["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            columns
                .iter()
                .cloned()
                .zip(r.as_array().unwrap().iter().cloned())
                .collect()
        })
        .collect()
}

/// Every feedback id of the caller's org, through the list endpoint.
async fn all_feedback_ids(s: &TestServer, token: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            Some(c) => format!("/feedback?limit=1000&cursor={c}"),
            None => "/feedback?limit=1000".to_owned(),
        };
        let (status, page) = s.get(token, &url).await;
        assert_eq!(status, 200, "{page}");
        for f in page["feedback"].as_array().unwrap() {
            out.push(f["id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return out,
        }
    }
}

/// Compares one record both ways: for every REST field `k`, `RETURN x.k` gives the REST
/// value, and the returned node holds it (a null field is left out of the node); the node
/// holds nothing else but `_id` and `_labels`.
fn compare(what: &str, rest: &serde_json::Map<String, Value>, row: &BTreeMap<String, Value>) {
    let node = row["node"]
        .as_object()
        .unwrap_or_else(|| panic!("{what}: no node in {row:?}"));
    for (i, (k, v)) in rest.iter().enumerate() {
        assert_eq!(
            &row[&format!("p{i}")],
            v,
            "{what}: RETURN .{k} differs from REST"
        );
        match node.get(k) {
            Some(n) => assert_eq!(n, v, "{what}: the node's '{k}' differs from REST"),
            None => assert!(v.is_null(), "{what}: the node has no '{k}' (REST: {v})"),
        }
    }
    for k in node.keys() {
        assert!(
            rest.contains_key(k) || k == "_id" || k == "_labels",
            "{what}: the node has '{k}', which REST does not show"
        );
    }
}

/// `RETURN var.id AS id, var AS node, var.k0 AS p0, ...` over every key of `keys`.
fn property_query(pattern: &str, var: &str, keys: &[String]) -> String {
    let props: Vec<String> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| format!("{var}.{k} AS p{i}"))
        .collect();
    format!(
        "{pattern} RETURN {var}.id AS id, {var} AS node, {}",
        props.join(", ")
    )
}

/// Writes that give the fixtures what they lack: an adapter with nested metadata, items
/// with every optional field and with none, a reviewed item, items used by a committed
/// batch and by mark-used, a manual link with metadata.
async fn add_every_kind_of_record(s: &TestServer, admin: &str, trainer: &str) {
    let (status, body) = s
        .post(
            admin,
            "/adapters",
            &json!({"id": "meta_lora", "derived_from": "base_model", "base_model": "llama-2-7b",
                    "version": "v9", "metadata": {"rank": 16, "tags": ["a", "b"],
                    "nested": {"x": 1.5, "ok": true, "none": null, "big": i64::MAX, "neg": -3}}}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let full = json!({
        "type": "negative", "question": "Which port does the admin UI use?",
        "answer": "It listens on port 80.", "correction": "It listens on port 8443.",
        "comment": "Port 80 is closed here.", "user_id": "u-1", "session_id": "s-1",
        "interaction_id": "i-1", "model_version": "llama-2-7b", "adapter_id": "meta_lora",
        "adapter_version": "v9", "score": 2.5,
        "metadata": {"ui": {"lang": "de", "dark": false}, "ids": [1, 2.25, "x", null], "e": {}}
    });
    let minimal = json!({"type": "positive", "question": "Is the sky blue today?",
                         "answer": "Yes, it is clear."});
    let flagged = json!({"type": "negative", "question": "How do I list the shards?",
                         "answer": "Use SHOW SHARDS.", "adapter_id": "meta_lora"});
    let mut ids = Vec::new();
    for body in [&full, &minimal, &flagged] {
        let (status, r) = s.post(admin, "/feedback", body).await;
        assert_eq!(status, 201, "{r}");
        ids.push(r["id"].as_str().unwrap().to_owned());
    }
    let (status, r) = s
        .patch(
            admin,
            &format!("/feedback/{}", ids[2]),
            &json!({"validation_status": "approved", "reason": "checked by hand"}),
        )
        .await;
    assert_eq!(status, 200, "{r}");
    let (status, r) = s
        .post(
            admin,
            &format!("/feedback/{}/link", ids[1]),
            &json!({"adapter_id": "meta_lora", "metadata": {"confidence": 0.9, "by": ["ann"]}}),
        )
        .await;
    assert_eq!(status, 201, "{r}");
    let (status, r) = s
        .post(
            trainer,
            "/training/batches",
            &json!({"adapter_id": "meta_lora", "limit": 2}),
        )
        .await;
    assert_eq!(status, 201, "{r}");
    let batch = r["batch_id"].as_u64().unwrap();
    let (status, r) = s
        .post(
            trainer,
            &format!("/training/batches/{batch}/commit"),
            &json!({"trained_adapter_id": "meta_lora"}),
        )
        .await;
    assert_eq!(status, 200, "{r}");
    let (status, r) = s
        .post(trainer, "/feedback/mark-used", &json!({"ids": [ids[1]]}))
        .await;
    assert_eq!(status, 200, "{r}");
}

/// Rule: every property a record shows over REST reads the same through a graph query,
/// as `RETURN x.prop` and inside `RETURN x`: feedback (metadata, validation reasons,
/// optional fields present and absent, reviewed and used items), adapters (metadata,
/// parent, record version) and FEEDBACK_FOR edges (created_at, source, metadata), in every
/// org of the fixtures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rest_property_reads_the_same_in_cypher() {
    let s = server_with_fixtures().await;
    let orgs = fixture_orgs();
    assert!(orgs.len() >= 3, "{orgs:?}");
    add_every_kind_of_record(
        &s,
        &s.token("acme", "ada", Role::Admin),
        &s.token("acme", "tina", Role::Trainer),
    )
    .await;
    let mut seen_metadata = false;
    let mut seen_link_metadata = false;
    for org in &orgs {
        let token = s.token(org, "ada", Role::Admin);

        // Feedback.
        let ids = all_feedback_ids(&s, &token).await;
        assert!(!ids.is_empty(), "{org}");
        let mut records = BTreeMap::new();
        for id in &ids {
            let (status, f) = s.get(&token, &format!("/feedback/{id}")).await;
            assert_eq!(status, 200, "{f}");
            records.insert(id.clone(), f.as_object().unwrap().clone());
        }
        let keys: Vec<String> = records
            .values()
            .flat_map(|r| r.keys().cloned())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let result = query(
            &s,
            &token,
            &property_query("MATCH (f:Feedback)", "f", &keys),
            json!({}),
        )
        .await;
        let nodes = rows(&result);
        assert_eq!(nodes.len(), records.len(), "{org}: every item is a node");
        for row in &nodes {
            let id = row["id"].as_str().unwrap();
            let rest = &records[id];
            seen_metadata |= rest["metadata"].as_object().is_some_and(|m| !m.is_empty());
            // Every key of every record was asked for; one record's REST view lacks none
            // of them (absent optional fields are shown as null).
            assert_eq!(rest.len(), keys.len(), "{org}/{id}: {rest:?}");
            compare(&format!("{org}/feedback {id}"), rest, row);
        }

        // Adapters. `feedback` and `children` of GET /adapters/{id} are computed summaries
        // (stats and child ids), not fields of the adapter record.
        let result = query(&s, &token, "MATCH (a:Adapter) RETURN a.id AS id", json!({})).await;
        let adapter_ids: BTreeSet<String> = rows_of(&result, "id");
        for r in records.values() {
            if let Some(a) = r["adapter_id"].as_str() {
                assert!(adapter_ids.contains(a), "{org}: adapter {a} is a node");
            }
        }
        let mut adapters = BTreeMap::new();
        for id in &adapter_ids {
            let (status, a) = s.get(&token, &format!("/adapters/{id}")).await;
            assert_eq!(status, 200, "{a}");
            let mut a = a.as_object().unwrap().clone();
            a.remove("feedback");
            a.remove("children");
            if let Some(p) = a["derived_from"].as_str() {
                assert!(adapter_ids.contains(p), "{org}: parent {p} is a node");
            }
            adapters.insert(id.clone(), a);
        }
        let keys: Vec<String> = adapters
            .values()
            .flat_map(|r| r.keys().cloned())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let result = query(
            &s,
            &token,
            &property_query("MATCH (a:Adapter)", "a", &keys),
            json!({}),
        )
        .await;
        for row in rows(&result) {
            let id = row["id"].as_str().unwrap();
            let rest = &adapters[id];
            seen_metadata |= rest["metadata"].as_object().is_some_and(|m| !m.is_empty());
            assert_eq!(rest.len(), keys.len(), "{org}/{id}: {rest:?}");
            compare(&format!("{org}/adapter {id}"), rest, &row);
        }

        // FEEDBACK_FOR edges: a repeated link answers the stored edge (and changes nothing).
        let result = query(
            &s,
            &token,
            "MATCH (f:Feedback)-[r:FEEDBACK_FOR]->(a:Adapter) RETURN f.id AS f, a.id AS a, \
             r AS rel, r.created_at AS created_at, r.source AS source, r.metadata AS metadata",
            json!({}),
        )
        .await;
        let edges = rows(&result);
        assert!(!edges.is_empty(), "{org}");
        for row in &edges {
            let (f, a) = (row["f"].as_str().unwrap(), row["a"].as_str().unwrap());
            let (status, link) = s
                .post(
                    &token,
                    &format!("/feedback/{f}/link"),
                    &json!({"adapter_id": a}),
                )
                .await;
            assert_eq!(status, 200, "{org}: {f} -> {a} exists: {link}");
            seen_link_metadata |= link["metadata"].as_object().is_some_and(|m| !m.is_empty());
            for k in ["created_at", "source", "metadata"] {
                assert_eq!(row[k], link[k], "{org}: {f} -> {a}: r.{k}");
                assert_eq!(row["rel"][k], link[k], "{org}: {f} -> {a}: {k} in r");
            }
        }
        // Every link REST lists by adapter is an edge.
        let pairs: BTreeSet<(String, String)> = edges
            .iter()
            .map(|r| {
                (
                    r["f"].as_str().unwrap().into(),
                    r["a"].as_str().unwrap().into(),
                )
            })
            .collect();
        for a in &adapter_ids {
            let (status, page) = s
                .get(&token, &format!("/feedback/by-adapter/{a}?limit=1000"))
                .await;
            assert_eq!(status, 200, "{page}");
            for f in page["feedback"].as_array().unwrap() {
                let f = f["id"].as_str().unwrap().to_owned();
                assert!(pairs.contains(&(f.clone(), a.clone())), "{org}: {f} -> {a}");
            }
        }
    }
    assert!(seen_metadata, "the comparison covered non-empty metadata");
    assert!(seen_link_metadata, "the comparison covered link metadata");
}

fn rows_of(result: &Value, column: &str) -> BTreeSet<String> {
    rows(result)
        .iter()
        .map(|r| r[column].as_str().unwrap().to_owned())
        .collect()
}

/// Rule: the maps Cypher reads are real maps: their keys and values can be used in
/// expressions, and a filter on a metadata value finds the item REST shows it on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_is_a_map_in_expressions() {
    let s = TestServer::start_with(|c| c.rate_limit.enabled = false).await;
    let token = s.token("acme", "ana", Role::Admin);
    let (status, r) = s
        .post(
            &token,
            "/feedback",
            &json!({"type": "positive", "question": "Does metadata read?",
                    "answer": "It should now.", "metadata": {"k": "v", "n": 2}}),
        )
        .await;
    assert_eq!(status, 201, "{r}");
    let id = r["id"].as_str().unwrap();
    let result = query(
        &s,
        &token,
        "MATCH (f:Feedback) WHERE f.metadata.k = 'v' RETURN f.id, f.metadata, \
         f.metadata.n + 1, keys(f.metadata), f.org_id, size(f.validation_reasons)",
        json!({}),
    )
    .await;
    assert_eq!(
        result["rows"],
        json!([[id, {"k": "v", "n": 2}, 3, ["k", "n"], "acme", 0]]),
        "{result}"
    );
}

/// Rule: a relationship's `_id` (and `id(r)`) is its id for as long as it exists: adding
/// links, adapters and parents never changes the id of an edge that was there, ids are
/// never shared, and a new edge gets an id no edge had.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relationship_ids_stay_put_while_edges_come_and_go() {
    let s = TestServer::start_with(|c| c.rate_limit.enabled = false).await;
    let admin = s.token("acme", "ada", Role::Admin);
    for (id, parent) in [("root", None), ("a", Some("root")), ("b", Some("root"))] {
        let (status, r) = s
            .post(
                &admin,
                "/adapters",
                &json!({"id": id, "derived_from": parent}),
            )
            .await;
        assert_eq!(status, 201, "{r}");
    }
    let mut items = Vec::new();
    for (i, a) in ["a", "b", "a", "auto_lora"].iter().enumerate() {
        let (status, r) = s
            .post(
                &admin,
                "/feedback",
                &json!({"type": "positive", "question": format!("Stable id question {i}?"),
                        "answer": "Stable id answer.", "adapter_id": a}),
            )
            .await;
        assert_eq!(status, 201, "{r}");
        items.push(r["id"].as_str().unwrap().to_owned());
    }
    let edges = |result: &Value| -> BTreeMap<(String, String, String), i64> {
        rows(result)
            .iter()
            .map(|r| {
                let id = r["id"].as_i64().unwrap();
                assert_eq!(r["rel"]["_id"], json!(id), "_id and id(r) agree: {r:?}");
                (
                    (
                        r["t"].as_str().unwrap().to_owned(),
                        r["from"].as_str().unwrap().to_owned(),
                        r["to"].as_str().unwrap().to_owned(),
                    ),
                    id,
                )
            })
            .collect()
    };
    let q =
        "MATCH (x)-[r]->(y) RETURN type(r) AS t, x.id AS from, y.id AS to, id(r) AS id, r AS rel";
    let before = edges(&query(&s, &admin, q, json!({})).await);
    assert_eq!(before.len(), 6, "{before:?}");

    // Every kind of edge the API makes: manual links, a new derived adapter, and a parent
    // given to an adapter that feedback created.
    let (status, r) = s
        .post(
            &admin,
            &format!("/feedback/{}/link", items[0]),
            &json!({"adapter_id": "b"}),
        )
        .await;
    assert_eq!(status, 201, "{r}");
    let (status, r) = s
        .post(
            &admin,
            "/adapters",
            &json!({"id": "c", "derived_from": "a"}),
        )
        .await;
    assert_eq!(status, 201, "{r}");
    let (status, r) = s
        .post(
            &admin,
            "/adapters",
            &json!({"id": "auto_lora", "derived_from": "b"}),
        )
        .await;
    assert_eq!(status, 200, "{r}");
    let after = edges(&query(&s, &admin, q, json!({})).await);
    assert_eq!(after.len(), before.len() + 3, "{after:?}");
    for (edge, id) in &before {
        assert_eq!(after.get(edge), Some(id), "{edge:?} kept its id");
    }
    let ids: BTreeSet<i64> = after.values().copied().collect();
    assert_eq!(ids.len(), after.len(), "ids are unique: {after:?}");
    let old_max = before.values().max().copied().unwrap_or(-1);
    for (edge, id) in &after {
        if !before.contains_key(edge) {
            assert!(*id > old_max, "{edge:?} got a fresh id {id}");
        }
    }
    // `id(r)` finds the same edge again.
    let (edge, id) = before.iter().next().unwrap();
    let result = query(
        &s,
        &admin,
        "MATCH (x)-[r]->(y) WHERE id(r) = $id RETURN type(r), x.id, y.id",
        json!({"id": id}),
    )
    .await;
    assert_eq!(result["rows"], json!([[edge.0, edge.1, edge.2]]));
}
