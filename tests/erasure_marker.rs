//! The bytes are gone: unique markers in question, answer, correction, comment, metadata
//! (values and keys), the personal ids, history versions (a link and a review write the
//! fields out) and a committed batch. After an erasure the markers are still in sled's
//! log on disk (the scan sees them: without the rewrite this test fails); after the
//! rewrite the server runs at its next start, and after `feedgraph compact`, no file
//! under the data directory holds them, while a control item's text is still found.

mod common;

use common::disk::holders;
use common::server::TestServer;
use feedgraph::http::auth::Role;
use serde_json::{Value, json};

fn item(m: &str, user: &str) -> Value {
    json!({
        "type": "negative",
        "question": format!("Question that carries {m} inside it?"),
        "answer": format!("Answer that carries {m} inside it."),
        "correction": format!("Correction that carries {m} inside it."),
        "comment": format!("Comment that carries {m} inside it."),
        "user_id": format!("{user}"),
        "session_id": format!("sess{m}"),
        "interaction_id": format!("trace{m}"),
        "adapter_id": "ad-m",
        "metadata": {"v": format!("meta{m}"), format!("key{m}"): 1},
    })
}

async fn post_item(s: &TestServer, t: &str, b: &Value, key: &str) -> String {
    let r = s
        .client
        .post(s.url("/feedback"))
        .bearer_auth(t)
        .header("Idempotency-Key", key)
        .json(b)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn erased_bytes_leave_the_data_directory_after_the_rewrite() {
    common::sled_only!("the proof is about sled's log segments in the data directory");
    let m = format!("MRK{:016x}", rand::random::<u64>());
    let control = format!("CTL{:016x}", rand::random::<u64>());
    let s = TestServer::start().await;
    let user = s.token("acme", "alice", Role::User);
    let admin = s.token("acme", "root", Role::Admin);
    let id = post_item(&s, &user, &item(&m, &format!("user{m}")), "k1").await;
    let kept = post_item(&s, &user, &item(&control, "user-control"), "k2").await;
    // History versions that hold the fields, and a committed batch with the item.
    let (st, _) = s
        .post(
            &admin,
            &format!("/feedback/{id}/link"),
            &json!({"adapter_id": "ad-n"}),
        )
        .await;
    assert!(st < 300);
    let (st, _) = s
        .patch(
            &admin,
            &format!("/feedback/{id}"),
            &json!({"validation_status": "rejected", "reason": "marker test"}),
        )
        .await;
    assert_eq!(st, 200);
    let (st, _) = s
        .patch(
            &admin,
            &format!("/feedback/{id}"),
            &json!({"validation_status": "approved", "reason": "marker test"}),
        )
        .await;
    assert_eq!(st, 200);
    let (st, claimed) = s
        .post(&admin, "/training/batches", &json!({"limit": 10}))
        .await;
    assert_eq!(st, 201, "{claimed}");
    let batch = claimed["batch_id"].as_u64().unwrap();
    let (st, _) = s
        .post(
            &admin,
            &format!("/training/batches/{batch}/commit"),
            &json!({}),
        )
        .await;
    assert_eq!(st, 200);

    let (st, receipt) = s
        .post(
            &admin,
            "/erasures",
            &json!({"scope": "user", "value": format!("user{m}")}),
        )
        .await;
    assert_eq!(st, 201, "{receipt}");
    assert_eq!(receipt["items"], 1);
    let dir = s.stop_keep().await;

    // Erased in every record, but sled's log still holds the old values: the scan sees
    // them, so it would fail if the rewrite were skipped.
    assert!(
        !holders(dir.path(), &m).is_empty(),
        "the scan must see stale bytes before the rewrite"
    );
    assert!(dir.path().join("compaction-due").exists());

    // The next start rewrites the database.
    let s = TestServer::start_in(dir, |_| {}).await;
    let user = s.token("acme", "alice", Role::User);
    let admin = s.token("acme", "root", Role::Admin);
    let fb = s.get(&user, &format!("/feedback/{id}")).await.1;
    assert_eq!(fb["erased_by"], "root");
    assert_eq!(fb["question"], "");
    let batch_view = s.get(&admin, &format!("/training/batches/{batch}")).await.1;
    assert!(
        batch_view["manifest"].to_string().contains(&id),
        "the manifest keeps the item"
    );
    assert_eq!(s.get(&admin, "/erasures").await.1["count"], 1);
    let dir = s.stop_keep().await;
    let left = holders(dir.path(), &m);
    assert!(left.is_empty(), "erased marker still on disk in {left:?}");
    assert!(
        !holders(dir.path(), &control).is_empty(),
        "live text is found by the scan"
    );
    assert!(!dir.path().join("compaction-due").exists());

    // The same through the CLI: erase the control item, then `feedgraph compact`.
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_feedgraph"))
            .arg("--data-dir")
            .arg(dir.path())
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&["erase", "--org", "acme", "--item", &kept]);
    assert!(
        !holders(dir.path(), &control).is_empty(),
        "stale until compacted"
    );
    run(&["compact"]);
    let left = holders(dir.path(), &control);
    assert!(left.is_empty(), "erased control still on disk in {left:?}");
    // The store is whole after the rewrite.
    run(&["check"]);
}
