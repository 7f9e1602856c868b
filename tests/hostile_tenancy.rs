//! One org's long queries never stall its own writers, other orgs, or the server: readers
//! work on immutable snapshots of the org graph, so a submit never waits for a query, and
//! no runtime thread waits for a lock a query holds. Assertions are on the order in which
//! requests finish, never on wall-clock limits.

mod common;

use std::sync::{Arc, Mutex};

use common::server::TestServer;
use feedgraph::http::auth::Role;
use serde_json::json;

/// Runs until the query timeout: a four-way cartesian product over the org's feedback.
const SLOW: &str = "MATCH (a:Feedback), (b:Feedback), (c:Feedback), (d:Feedback)
WHERE a.created_at <= b.created_at + c.created_at + d.created_at
RETURN count(*)";

async fn server() -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = common::open(dir.path());
        common::load_fixtures(&s);
    }
    TestServer::start_in(dir, |c| {
        c.rate_limit.enabled = false;
        c.query.timeout_ms = 4_000;
        c.query.max_work = u64::MAX / 4;
        c.query.max_rows = usize::MAX / 4;
    })
    .await
}

/// The order in which requests finished, by label.
#[derive(Clone, Default)]
struct Finished(Arc<Mutex<Vec<String>>>);

impl Finished {
    fn push(&self, label: impl Into<String>) {
        self.0.lock().unwrap().push(label.into());
    }

    fn position(&self, label: &str) -> usize {
        let log = self.0.lock().unwrap();
        log.iter()
            .position(|l| l == label)
            .unwrap_or_else(|| panic!("{label} never finished: {log:?}"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_queries_of_one_org_stall_neither_its_writers_nor_anyone_else() {
    let s = Arc::new(server().await);
    let acme = s.token("acme", "ana", Role::User);
    let globex = s.token("globex", "gus", Role::User);
    let finished = Finished::default();

    let queries: Vec<_> = (0..2)
        .map(|i| {
            let (s, token, finished) = (s.clone(), acme.clone(), finished.clone());
            tokio::spawn(async move {
                let r = s
                    .post(&token, "/graph/query", &json!({ "query": SLOW }))
                    .await;
                finished.push(format!("query {i}"));
                r
            })
        })
        .collect();
    // Let both queries start and take their snapshots (a setup pause, not an assertion:
    // the assertions below are on the order of completion).
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;

    let submits: Vec<_> = (0..6)
        .map(|i| {
            let (s, token, finished) = (s.clone(), acme.clone(), finished.clone());
            tokio::spawn(async move {
                let (status, body) = s
                    .post(
                        &token,
                        "/feedback",
                        &json!({
                            "type": "positive",
                            "question": format!("Is snapshot write {i} visible?"),
                            "answer": "It should be, at once, to its writer.",
                            "adapter_id": "snapshot_lora",
                        }),
                    )
                    .await;
                finished.push(format!("submit {i}"));
                assert_eq!(status, 201, "{body}");
                body["id"].as_str().unwrap().to_owned()
            })
        })
        .collect();
    let health = {
        let (s, finished) = (s.clone(), finished.clone());
        tokio::spawn(async move {
            let r = s.client.get(format!("{}/healthz", s.base)).send().await;
            finished.push("healthz");
            r.unwrap().status().as_u16()
        })
    };
    let other_org = {
        let (s, token, finished) = (s.clone(), globex.clone(), finished.clone());
        tokio::spawn(async move {
            let r = s.get(&token, "/feedback/stats").await;
            finished.push("globex stats");
            r
        })
    };

    let mut ids = Vec::new();
    for t in submits {
        ids.push(t.await.unwrap());
    }
    // Read-your-writes: the by-adapter listing (served from the graph) shows every
    // acknowledged submit while the queries are still running.
    let (status, listed) = s.get(&acme, "/feedback/by-adapter/snapshot_lora").await;
    finished.push("listing");
    assert_eq!(status, 200, "{listed}");
    let listed: Vec<&str> = listed["feedback"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_str().unwrap())
        .collect();
    for id in &ids {
        assert!(
            listed.contains(&id.as_str()),
            "{id} missing from {listed:?}"
        );
    }
    assert_eq!(health.await.unwrap(), 200);
    let (status, stats) = other_org.await.unwrap();
    assert_eq!(status, 200, "{stats}");
    for q in queries {
        let (status, body) = q.await.unwrap();
        // The queries ran into their timeout; what matters is that they ran on.
        assert!(status == 200 || status >= 400, "{status} {body}");
    }

    let first_query_done = finished
        .position("query 0")
        .min(finished.position("query 1"));
    for label in (0..6)
        .map(|i| format!("submit {i}"))
        .chain(["healthz", "globex stats", "listing"].map(String::from))
    {
        assert!(
            finished.position(&label) < first_query_done,
            "{label} waited for a query: {:?}",
            finished.0.lock().unwrap()
        );
    }
}
