//! Exactly-once training over HTTP: 8 concurrent claimers against 5,000 approved items,
//! with random aborts and lease expiries and a server restart in the middle. At the end
//! every item is used exactly once, by a committed batch whose manifest lists it.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use common::server::TestServer;
use feedgraph::http::auth::Role;
use feedgraph::service::ImportRecord;
use feedgraph::store::BatchState;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

const ITEMS: usize = 5_000;
const CLAIMERS: usize = 8;

fn populate(dir: &std::path::Path) -> Vec<String> {
    let s = common::open(dir);
    let records = (0..ITEMS)
        .map(|i| {
            let line = json!({
                "org": "acme",
                "id": format!("feedback-{i:06}"),
                "type": if i % 3 == 0 { "negative" } else { "positive" },
                "question": format!("How do I do task number {i}?"),
                "answer": format!("You do task {i} by following the documented steps."),
                "correction": if i % 3 == 0 { Some(format!("Task {i} needs the admin console.")) } else { None },
                "adapter_id": format!("lora_{}", i % 7),
            });
            (i + 1, ImportRecord::parse(&line.to_string()).unwrap())
        })
        .collect();
    s.import(None, "seed", records, 1000, |_| {}).unwrap();
    (0..ITEMS).map(|i| format!("feedback-{i:06}")).collect()
}

/// One claimer's loop. Returns when nothing is left to claim and nothing it holds is open.
/// If `hold` is set, it stops after claiming one batch and returns that batch uncommitted.
async fn claimer(
    s: Arc<(String, reqwest::Client, String)>,
    seed: u64,
    rounds: usize,
    hold: bool,
) -> Option<u64> {
    let (base, client, token) = (&s.0, &s.1, &s.2);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let post = |path: String, body: Value| {
        let req = client
            .post(format!("{base}/api/v1/llm{path}"))
            .bearer_auth(token)
            .json(&body);
        async move {
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap())
        }
    };
    let mut idle = 0;
    for _ in 0..rounds {
        let short = rng.random_bool(0.1);
        let body = json!({"limit": rng.random_range(20..150), "lease_seconds": if short { 1 } else { 60 }});
        let (status, claimed) = post("/training/batches".into(), body).await;
        if status == 200 {
            // Nothing claimable right now (all leased or used).
            idle += 1;
            if idle > 40 {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        assert_eq!(status, 201, "{claimed}");
        idle = 0;
        let id = claimed["batch_id"].as_u64().unwrap();
        assert!(claimed["count"].as_u64().unwrap() > 0);
        if hold {
            return Some(id);
        }
        let roll: f64 = rng.random();
        if roll < 0.15 {
            let (status, b) = post(format!("/training/batches/{id}/abort"), json!({})).await;
            assert_eq!(status, 200, "{b}");
            assert_eq!(b["state"], "aborted");
        } else {
            if short {
                // Let the lease run out; others may take the items meanwhile.
                tokio::time::sleep(Duration::from_millis(1100)).await;
            }
            let (status, b) = post(
                format!("/training/batches/{id}/commit"),
                json!({"trained_adapter_id": format!("trained_{seed}"), "trained_adapter_version": "v1"}),
            )
            .await;
            match status {
                200 => assert_eq!(b["state"], "committed"),
                409 => assert!(short, "only an expired lease may fail to commit: {b}"),
                other => panic!("commit answered {other}: {b}"),
            }
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_item_is_trained_exactly_once_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let all = populate(dir.path());
    let tweak = |c: &mut feedgraph::config::Config| c.rate_limit.enabled = false;

    // Phase 1: claimers run a while, then each claims one batch and holds it open.
    let server = TestServer::start_in(dir, tweak).await;
    let token = server.token("acme", "trainer", Role::Trainer);
    let shared = Arc::new((server.base.clone(), server.client.clone(), token.clone()));
    let mut tasks = Vec::new();
    for c in 0..CLAIMERS {
        let shared = shared.clone();
        tasks.push(tokio::spawn(async move {
            claimer(shared.clone(), c as u64, 4, false).await;
            claimer(shared, 100 + c as u64, 1, true).await
        }));
    }
    let mut held = Vec::new();
    for t in tasks {
        held.extend(t.await.unwrap());
    }
    assert!(!held.is_empty());
    let dir = server.stop_keep().await;

    // Phase 2: a new server on the same data; the held leases survived and commit.
    let server = TestServer::start_in(dir, tweak).await;
    let token = server.token("acme", "trainer", Role::Trainer);
    for id in &held {
        let (status, b) = server
            .post(
                &token,
                &format!("/training/batches/{id}/commit"),
                &json!({}),
            )
            .await;
        assert_eq!(status, 200, "held batch {id} after restart: {b}");
        assert_eq!(b["state"], "committed");
    }
    let shared = Arc::new((server.base.clone(), server.client.clone(), token.clone()));
    let mut tasks = Vec::new();
    for c in 0..CLAIMERS {
        let shared = shared.clone();
        tasks.push(tokio::spawn(async move {
            claimer(shared, 200 + c as u64, 10_000, false).await
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (_, stats) = server.get(&token, "/feedback/stats").await;
    assert_eq!(stats["used_for_training"], ITEMS as u64, "{stats}");
    let dir = server.stop_keep().await;

    // Every item used once, by a committed batch whose manifest lists it exactly once.
    let s = common::open(dir.path());
    let batches = s.store().batches_of("acme").unwrap();
    let mut in_manifest: HashMap<String, u64> = HashMap::new();
    for b in batches.iter().filter(|b| b.state == BatchState::Committed) {
        for m in &b.manifest {
            let prev = in_manifest.insert(m.feedback_id.clone(), b.id);
            assert!(
                prev.is_none(),
                "{} trained twice: batches {prev:?} and {}",
                m.feedback_id,
                b.id
            );
        }
    }
    assert_eq!(in_manifest.len(), ITEMS, "none lost");
    let aborted: HashSet<u64> = batches
        .iter()
        .filter(|b| b.state == BatchState::Aborted)
        .map(|b| b.id)
        .collect();
    assert!(!aborted.is_empty(), "the run should have exercised aborts");
    for id in &all {
        let f = s.get("acme", id).unwrap();
        assert!(f.used_for_training, "{id} unused");
        assert_eq!(Some(&f.training_batch_id), in_manifest.get(id), "{id}");
        let h = s.history("acme", id).unwrap();
        assert_eq!(h.len() as u64, f.version);
        assert_eq!(
            h.last().unwrap().action,
            feedgraph::model::ChangeAction::Commit
        );
    }
    assert_eq!(s.verify().unwrap(), None);
}
