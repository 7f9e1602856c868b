//! Adapters and lineage over HTTP: a tree, a diamond attempt, cycles, a depth-50 chain.

mod common;

use common::server::{TestServer, error_details};
use feedgraph::http::auth::Role;
use serde_json::json;

fn ids(v: &serde_json::Value, key: &str) -> Vec<String> {
    v[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn tree_diamond_cycles_and_deep_chains() {
    let s = TestServer::start_with(|c| c.rate_limit.enabled = false).await;
    let admin = s.token("acme", "root", Role::Admin);
    let user = s.token("acme", "ursula", Role::User);
    let create = |id: &str, parent: Option<&str>| {
        let mut b = json!({"id": id, "base_model": "llama-2-7b"});
        if let Some(p) = parent {
            b["derived_from"] = json!(p);
        }
        b
    };

    // A tree: root -> a, b; a -> a1, a2.
    for (id, parent) in [
        ("root", None),
        ("a", Some("root")),
        ("b", Some("root")),
        ("a1", Some("a")),
        ("a2", Some("a")),
    ] {
        let (status, body) = s.post(&admin, "/adapters", &create(id, parent)).await;
        assert_eq!(status, 201, "{id}: {body}");
        assert_eq!(body["result"], "created");
    }
    let (status, body) = s
        .post(&admin, "/adapters", &create("a", Some("root")))
        .await;
    assert_eq!(
        (status, body["result"].as_str()),
        (200, Some("unchanged")),
        "re-create is idempotent"
    );
    assert_eq!(s.post(&user, "/adapters", &create("z", None)).await.0, 403);

    let (status, body) = s.get(&user, "/adapters/a1/lineage").await;
    assert_eq!(status, 200);
    assert_eq!(ids(&body, "lineage"), ["a", "root"]);
    assert_eq!(body["root"], "root");
    assert_eq!(body["depth"], 2);
    let (_, body) = s.get(&user, "/adapters/root/descendants").await;
    assert_eq!(body["count"], 4);
    let depths: Vec<(String, u64)> = body["descendants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["id"].as_str().unwrap().to_owned(),
                e["depth"].as_u64().unwrap(),
            )
        })
        .collect();
    assert!(depths.contains(&("a".into(), 1)) && depths.contains(&("b".into(), 1)));
    assert!(depths.contains(&("a1".into(), 2)) && depths.contains(&("a2".into(), 2)));
    let (_, body) = s.get(&user, "/adapters/a").await;
    assert_eq!(body["children"], json!(["a1", "a2"]));
    assert_eq!(body["derived_from"], "root");

    // A diamond needs a second parent: DERIVED_FROM allows one, so it is a 409.
    assert_eq!(
        s.post(&admin, "/adapters", &create("d", Some("a1")))
            .await
            .0,
        201
    );
    let (status, body) = s.post(&admin, "/adapters", &create("d", Some("b"))).await;
    assert_eq!(status, 409);
    assert!(error_details(&body).contains("one parent"));
    let (_, body) = s.get(&user, "/adapters/d/lineage").await;
    assert_eq!(
        ids(&body, "lineage"),
        ["a1", "a", "root"],
        "nothing changed"
    );

    // Cycles and unknown parents are 400 and write nothing.
    let (status, body) = s
        .post(&admin, "/adapters", &create("root", Some("d")))
        .await;
    assert_eq!(status, 400);
    assert!(error_details(&body).contains("cycle"), "{body}");
    let (status, _) = s
        .post(&admin, "/adapters", &create("selfish", Some("selfish")))
        .await;
    assert_eq!(status, 400);
    let (status, body) = s
        .post(&admin, "/adapters", &create("orphan", Some("missing")))
        .await;
    assert_eq!(status, 400);
    assert!(error_details(&body).contains("missing"));
    assert_eq!(s.get(&user, "/adapters/orphan").await.0, 404);
    assert_eq!(s.get(&user, "/adapters/selfish").await.0, 404);
    let (_, body) = s.get(&user, "/adapters/root/lineage").await;
    assert_eq!(body["depth"], 0);

    // A chain of depth 50.
    assert_eq!(
        s.post(&admin, "/adapters", &create("c0", None)).await.0,
        201
    );
    for i in 1..=50 {
        let (status, body) = s
            .post(
                &admin,
                "/adapters",
                &create(&format!("c{i}"), Some(&format!("c{}", i - 1))),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
    let (_, body) = s.get(&user, "/adapters/c50/lineage").await;
    assert_eq!(body["depth"], 50);
    assert_eq!(body["root"], "c0");
    assert_eq!(ids(&body, "lineage")[0], "c49");
    let (_, body) = s.get(&user, "/adapters/c0/descendants").await;
    assert_eq!(body["count"], 50);
    assert_eq!(body["descendants"][49]["depth"], 50);
    let (status, body) = s
        .post(&admin, "/adapters", &create("c0", Some("c50")))
        .await;
    assert_eq!(status, 400, "closing a 51-long cycle: {body}");

    // Feedback of descendants through by-adapter.
    let fb = json!({"type": "positive", "question": "What is a LoRA adapter?", "answer": "A low-rank update to a model's weights.", "adapter_id": "a1"});
    assert_eq!(s.post(&user, "/feedback", &fb).await.0, 201);
    let (status, body) = s.get(&user, "/feedback/by-adapter/a").await;
    assert_eq!((status, body["total_linked"].as_u64()), (200, Some(0)));
    let (_, body) = s
        .get(&user, "/feedback/by-adapter/a?include_descendants=true")
        .await;
    assert_eq!(body["total_linked"], 1);
    assert_eq!(body["count"], 1);
    s.stop().await;
}
