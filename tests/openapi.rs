//! The OpenAPI document: it describes exactly the routes the router serves (both ways), the
//! server serves it at `/openapi.json`, every operation documents the `{error, details}`
//! error body and its security, and every `$ref` resolves.

mod common;

use std::collections::BTreeSet;

use common::server::TestServer;

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

fn document() -> serde_json::Value {
    feedgraph::http::openapi::document_json().expect("the document renders")
}

/// `(METHOD, path)` of every operation in the document.
fn documented(doc: &serde_json::Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for m in METHODS {
            if item.get(m).is_some() {
                out.insert((m.to_uppercase(), path.clone()));
            }
        }
    }
    out
}

/// `(METHOD, path)` of every route the router serves, from the router's own route table.
fn served() -> BTreeSet<(String, String)> {
    feedgraph::http::route_list()
        .into_iter()
        .map(|(verb, path)| (verb.as_str().to_owned(), path.to_owned()))
        .collect()
}

#[test]
fn the_document_describes_exactly_the_routes_served() {
    let doc = document();
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "not OpenAPI 3.1: {}",
        doc["openapi"]
    );
    let documented = documented(&doc);
    let served = served();
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(
        undocumented.is_empty() && unserved.is_empty(),
        "routes the document does not describe: {undocumented:?}; \
         operations the router does not serve: {unserved:?}"
    );
    assert_eq!(
        served.len(),
        feedgraph::http::route_list().len(),
        "a route added twice"
    );
}

#[test]
fn every_operation_documents_errors_and_security() {
    let doc = document();
    let error_ref = "#/components/schemas/ErrorBody";
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert_eq!(doc["security"][0]["bearer"], serde_json::json!([]));
    let body = &doc["components"]["schemas"]["ErrorBody"];
    assert_eq!(
        body["required"],
        serde_json::json!(["error", "details"]),
        "{body}"
    );
    for (path, item) in doc["paths"].as_object().unwrap() {
        for m in METHODS {
            let Some(op) = item.get(m) else { continue };
            let responses = op["responses"].as_object().unwrap();
            let success: Vec<_> = responses.keys().filter(|c| c.starts_with('2')).collect();
            assert!(!success.is_empty(), "{m} {path}: no success response");
            for code in ["400", "500"] {
                let schema = &responses[code]["content"]["application/json"]["schema"]["$ref"];
                assert_eq!(schema, error_ref, "{m} {path} {code}");
            }
            if path.starts_with("/api/") {
                for code in ["401", "403", "404", "429", "503"] {
                    assert!(responses.contains_key(code), "{m} {path}: no {code}");
                }
                assert!(op.get("security").is_none(), "{m} {path}: overrides bearer");
            } else {
                // Open endpoints: an empty requirement means no token is needed.
                let open = op["security"]
                    .as_array()
                    .is_some_and(|s| s.iter().any(|r| r == &serde_json::json!({})));
                assert!(open, "{m} {path} should need no token");
            }
            assert!(op["operationId"].is_string(), "{m} {path}: no operationId");
        }
    }
}

#[test]
fn every_reference_resolves() {
    fn walk(v: &serde_json::Value, doc: &serde_json::Value, bad: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(map) => {
                if let Some(serde_json::Value::String(r)) = map.get("$ref") {
                    let target = r
                        .strip_prefix("#/")
                        .map(|p| p.split('/').fold(doc, |node, key| &node[key]));
                    if target.is_none_or(serde_json::Value::is_null) {
                        bad.push(r.clone());
                    }
                }
                map.values().for_each(|x| walk(x, doc, bad));
            }
            serde_json::Value::Array(items) => items.iter().for_each(|x| walk(x, doc, bad)),
            _ => {}
        }
    }
    let doc = document();
    let mut bad = Vec::new();
    walk(&doc, &doc, &mut bad);
    assert!(bad.is_empty(), "unresolved references: {bad:?}");
}

/// The document the server serves is the generated one, and every documented operation
/// reaches a handler (a request without a token is refused by the handler, never answered
/// by the router's "no route" or "method not allowed").
#[tokio::test]
async fn the_server_serves_the_document_and_every_operation_reaches_a_handler() {
    let s = TestServer::start().await;
    let r = s.get_open("/openapi.json").await;
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    let served: serde_json::Value = r.json().await.unwrap();
    assert_eq!(served, document());
    for (method, path) in documented(&served) {
        let concrete = path
            .replace("{id}", "1")
            .replace("{adapter_id}", "a")
            .replace("{name}", "lineage");
        let url = format!("{}{concrete}", s.base);
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let r = s.client.request(m, &url).send().await.unwrap();
        let status = r.status().as_u16();
        let body: serde_json::Value = r.json().await.unwrap_or_default();
        let details = body["details"].as_str().unwrap_or("");
        assert!(
            status != 405 && !details.starts_with("no route for"),
            "{method} {path}: the router does not serve it ({status} {body})"
        );
        if path.starts_with("/api/") {
            assert_eq!(status, 401, "{method} {path}: {body}");
        }
    }
    s.stop().await;
}
