//! Helpers of the feedback-page tests (`pages_cache`, `page_runs`, `page_runs_rebuild`):
//! the value of a metric, items submitted to an adapter, and a walk through a listing that
//! checks every item against `GET /feedback/{id}`.

use serde_json::{Value, json};

use super::server::TestServer;

/// The value of an unlabelled series on `/metrics` (0 if absent).
pub async fn metric(s: &TestServer, name: &str) -> u64 {
    let text = s.get_open("/metrics").await.text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// Submits `n` items of the token's org linked to `adapter`; returns their ids, oldest
/// first.
pub async fn submit_linked(s: &TestServer, token: &str, adapter: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let body = json!({"type": "positive",
                          "question": format!("Question {i} for {adapter}, long enough to count"),
                          "answer": format!("An answer long enough to pass the rules, number {i}"),
                          "adapter_id": adapter});
        let (st, b) = s.post(token, "/feedback", &body).await;
        assert_eq!(st, 201, "{b}");
        ids.push(b["id"].as_str().unwrap().to_owned());
    }
    ids
}

/// Every page of `path` (which has `?limit=`), following `next_cursor`; every item must
/// be what `GET /feedback/{id}` answers. Returns the items in page order and the bodies.
pub async fn walk(s: &TestServer, token: &str, path: &str) -> (Vec<Value>, String) {
    let mut items = Vec::new();
    let mut bodies = String::new();
    let mut cursor: Option<String> = None;
    loop {
        let at = match &cursor {
            Some(c) => format!("{path}&cursor={c}"),
            None => path.to_owned(),
        };
        let r = s
            .client
            .get(s.url(&at))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{at}");
        let body = r.text().await.unwrap();
        let v: Value = serde_json::from_str(&body).unwrap();
        for item in v["feedback"].as_array().unwrap() {
            let id = item["id"].as_str().unwrap();
            let (st, one) = s.get(token, &format!("/feedback/{id}")).await;
            assert_eq!(st, 200);
            assert_eq!(item, &one, "{at}: item {id} is not the stored one");
            items.push(item.clone());
        }
        bodies.push_str(&body);
        match v["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return (items, bodies),
        }
    }
}
