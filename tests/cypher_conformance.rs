//! Conformance: the seed's four Cypher queries, verbatim and in standard openCypher, on the
//! fixtures, against expected rows computed without feedgraph by
//! `tests/conformance/compute.py` (see `tests/conformance/seed_queries.json`).

mod common;

use std::collections::BTreeMap;

use feedgraph::cypher::{self, QueryLimits, TextSource};
use feedgraph::service::Service;
use serde_json::Value;

/// Text fields, metadata and the org straight from the store (validation reasons are left
/// out: their messages are feedgraph's wording, which compute.py does not repeat).
struct StoreText<'a> {
    service: &'a Service,
    org: &'a str,
}

impl TextSource for StoreText<'_> {
    fn feedback_text(&self, id: &str, field: &str) -> Option<String> {
        let f = self
            .service
            .store()
            .get_record(self.org, id)
            .ok()??
            .feedback;
        match field {
            "question" => Some(f.question),
            "answer" => Some(f.answer),
            "correction" => f.correction,
            "comment" => f.comment,
            _ => None,
        }
    }

    fn feedback_json(&self, id: &str, field: &str) -> Option<Value> {
        let f = self
            .service
            .store()
            .get_record(self.org, id)
            .ok()??
            .feedback;
        (field == "metadata").then_some(Value::Object(f.metadata.0))
    }

    fn link_metadata(
        &self,
        feedback_id: &str,
        adapter_id: &str,
    ) -> Option<serde_json::Map<String, Value>> {
        let links = self
            .service
            .store()
            .get_record(self.org, feedback_id)
            .ok()??
            .links;
        let l = links.into_iter().find(|l| l.adapter_id == adapter_id)?;
        Some(l.metadata.0)
    }

    fn adapter_metadata(&self, id: &str) -> Option<serde_json::Map<String, Value>> {
        let a = self.service.store().get_adapter(self.org, id).ok()??;
        Some(a.metadata.0)
    }

    fn org_id(&self) -> Option<&str> {
        Some(self.org)
    }
}

/// Drops the keys the conformance file says cannot be predicted, recursively.
fn normalize(v: &Value, ignore: &BTreeMap<String, Vec<String>>) -> Value {
    match v {
        Value::Array(items) => Value::Array(items.iter().map(|x| normalize(x, ignore)).collect()),
        Value::Object(m) => {
            let class = if let Some(Value::Array(labels)) = m.get("_labels") {
                labels
                    .first()
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned()
            } else if m.contains_key("_type") {
                "relationship".to_owned()
            } else {
                String::new()
            };
            let drop = ignore.get(&class).cloned().unwrap_or_default();
            Value::Object(
                m.iter()
                    .filter(|(k, _)| !drop.contains(k))
                    .map(|(k, x)| (k.clone(), normalize(x, ignore)))
                    .collect(),
            )
        }
        Value::Number(n) => match n.as_f64() {
            // One spelling per number, so 0.6 computed two ways compares equal.
            Some(f) if n.is_f64() => serde_json::json!((f * 1e12).round() / 1e12),
            _ => v.clone(),
        },
        other => other.clone(),
    }
}

fn sorted(rows: &[Value]) -> Vec<String> {
    let mut out: Vec<String> = rows.iter().map(|r| r.to_string()).collect();
    out.sort();
    out
}

#[test]
fn seed_queries_match_the_independent_computation() {
    let spec: Value = serde_json::from_str(include_str!("conformance/seed_queries.json")).unwrap();
    let ignore: BTreeMap<String, Vec<String>> =
        serde_json::from_value(spec["ignore"].clone()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let service = common::open(dir.path());
    common::load_fixtures(&service);
    let named = cypher::named_queries();
    let cases = spec["cases"].as_array().unwrap();
    assert!(cases.len() >= 8, "the conformance file lost its cases");
    let mut total_rows = 0;
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let org = case["org"].as_str().unwrap();
        let query = case["query"].as_str().unwrap();
        if let Some(n) = case.get("named_query").and_then(Value::as_str) {
            let nq = named.iter().find(|q| q.name == n).unwrap();
            assert_eq!(
                nq.query, query,
                "{name}: queries/{n}.cypher changed; rerun compute.py"
            );
        }
        let params = case["params"].as_object().unwrap();
        let graph = service.graph().org(org).unwrap();
        let text = StoreText {
            service: &service,
            org,
        };
        let result = cypher::execute(&graph, &text, query, params, &QueryLimits::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let want_columns: Vec<String> = serde_json::from_value(case["columns"].clone()).unwrap();
        assert_eq!(result.columns, want_columns, "{name}: columns");
        let got: Vec<Value> = result
            .rows
            .to_json()
            .iter()
            .map(|r| normalize(&Value::Array(r.clone()), &ignore))
            .collect();
        let want: Vec<Value> = case["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| normalize(r, &ignore))
            .collect();
        assert_eq!(got.len(), want.len(), "{name}: row count");
        assert_eq!(sorted(&got), sorted(&want), "{name}: rows");
        if let Some(col) = case.get("order_desc_column").and_then(Value::as_u64) {
            let keys: Vec<f64> = result
                .rows
                .to_json()
                .iter()
                .map(|r| r[col as usize].as_f64().unwrap())
                .collect();
            assert!(
                keys.windows(2).all(|w| w[0] >= w[1]),
                "{name}: not in descending order: {keys:?}"
            );
        }
        assert_eq!(result.stats.rows, result.rows.len());
        // The compact rows serialize exactly as their JSON values.
        assert_eq!(
            serde_json::to_string(&result.rows).unwrap(),
            serde_json::to_string(&result.rows.to_json()).unwrap(),
            "{name}: serialized rows"
        );
        total_rows += result.rows.len();
    }
    assert!(total_rows > 100, "the fixtures should exercise the queries");
}

#[test]
fn named_queries_describe_themselves() {
    let named = cypher::named_queries();
    let names: Vec<&str> = named.iter().map(|q| q.name).collect();
    assert_eq!(
        names,
        ["by_adapter", "adapter_stats", "lineage", "shared_feedback"]
    );
    for q in &named {
        assert!(!q.description.is_empty(), "{} has no description", q.name);
        for p in &q.params {
            assert!(
                q.query.contains(&format!("${p}")),
                "{} does not use ${p}",
                q.name
            );
        }
    }
    let params: Vec<Vec<&str>> = named.iter().map(|q| q.params.clone()).collect();
    assert_eq!(params, [vec!["adapter_id"], vec![], vec!["root"], vec![]]);
}

#[test]
fn seed_queries_run_on_every_org_of_the_fixtures() {
    // Every org, every named query: no errors, and tenants never see each other's ids.
    let dir = tempfile::tempdir().unwrap();
    let service = common::open(dir.path());
    common::load_fixtures(&service);
    let mut params = serde_json::Map::new();
    params.insert("adapter_id".into(), "base_model".into());
    params.insert("root".into(), "base_model".into());
    for org in ["acme", "globex", "initech"] {
        let graph = service.graph().org(org).unwrap();
        for q in cypher::named_queries() {
            let r = cypher::execute(
                &graph,
                &cypher::NoText,
                q.query,
                &params,
                &QueryLimits::default(),
            )
            .unwrap_or_else(|e| panic!("{org}/{}: {e}", q.name));
            let text = serde_json::to_string(&r.rows).unwrap();
            for other in ["acme-session", "globex-session", "initech-session"] {
                if !other.starts_with(org) {
                    assert!(!text.contains(other), "{org}/{} leaks {other}", q.name);
                }
            }
        }
    }
}
