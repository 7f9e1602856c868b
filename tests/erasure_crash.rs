//! A SIGKILL of the server in the middle of a user erasure: on disk the job is recorded
//! `running` with some items erased and some not; the next start carries it to the end,
//! so every item of the user is a tombstone, the receipt is `done`, and no history version
//! keeps the text.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::free_port;
use feedgraph::http::auth::{Role, mint};
use feedgraph::store::pg::PgStore;
use feedgraph::store::{Backend, BackendKind, ErasureState, SledStore};
use serde_json::{Value, json};

const ITEMS: usize = 12;

#[tokio::test(flavor = "multi_thread")]
async fn a_user_erasure_killed_half_way_is_finished_at_restart() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}/api/v1/llm");
    let mut child = Command::new(env!("CARGO_BIN_EXE_feedgraph"))
        .arg("--data-dir")
        .arg(dir.path())
        .args(["serve", "--bind", &format!("127.0.0.1:{port}")])
        // One item per durable write, and a pause after each: the kill lands mid-way.
        .env("FEEDGRAPH__ERASURE__CHUNK_ITEMS", "1")
        .env("FEEDGRAPH__ERASURE__TEST_CHUNK_DELAY_MS", "400")
        .env("RUST_LOG", "warn")
        .envs(common::backend_env(dir.path()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready = client
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .send()
            .await
            .map(|r| r.status().is_success())
            .unwrap_or(false);
        if ready {
            break;
        }
        assert!(Instant::now() < deadline, "server did not become ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let config = common::config(dir.path());
    let user = mint(&config, "acme", "alice", &[Role::User], 3600).unwrap();
    let admin = mint(&config, "acme", "root", &[Role::Admin], 3600).unwrap();
    let marker = format!("KILL{:016x}", rand::random::<u64>());
    let mut ids = Vec::new();
    for i in 0..ITEMS {
        let r: Value = client
            .post(format!("{base}/feedback"))
            .bearer_auth(&user)
            .json(&json!({
                "type": "negative",
                "question": format!("Question {i} about {marker} here?"),
                "answer": format!("Answer {i} about {marker} here."),
                "comment": format!("Comment {i} {marker}"),
                "user_id": "victim",
            }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        ids.push(r["id"].as_str().unwrap().to_owned());
    }
    // Start the erasure; it answers only when done, which it never is.
    let erase = {
        let (client, admin, base) = (client.clone(), admin.clone(), base.clone());
        tokio::spawn(async move {
            client
                .post(format!("{base}/erasures"))
                .bearer_auth(&admin)
                .json(&json!({"scope": "user", "value": "victim"}))
                .send()
                .await
        })
    };
    // Kill once some, not all, items are erased.
    let deadline = Instant::now() + Duration::from_secs(60);
    'wait: loop {
        assert!(Instant::now() < deadline, "the erasure never started");
        for id in &ids {
            let f: Value = client
                .get(format!("{base}/feedback/{id}"))
                .bearer_auth(&user)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if f["erased_at"].is_u64() {
                break 'wait;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    erase.abort();

    // On disk: the job is recorded, running, and the items are half done.
    {
        // The store itself, not a service (which would finish the job on open).
        let store: Box<dyn Backend> = match config.storage.backend {
            BackendKind::Sled => Box::new(SledStore::open(dir.path(), &config.storage).unwrap()),
            BackendKind::Postgres => Box::new(PgStore::open(&config.storage).unwrap()),
        };
        let running = store.unfinished_erasures().unwrap();
        assert_eq!(running.len(), 1, "the job was durable before its items");
        assert_eq!(running[0].state, ErasureState::Running);
        assert_eq!(running[0].item_ids.len(), ITEMS);
        let erased = ids
            .iter()
            .filter(|id| {
                store
                    .get_record("acme", id)
                    .unwrap()
                    .unwrap()
                    .feedback
                    .is_erased()
            })
            .count();
        assert!(
            erased > 0 && erased < ITEMS,
            "killed in the middle: {erased} of {ITEMS} erased"
        );
    }

    // The next start finishes it.
    let s = common::open(dir.path());
    let page = s.erasures("acme", None, None).unwrap();
    assert_eq!(page.count, 1);
    let receipt = &page.erasures[0].record;
    assert_eq!(receipt.state, ErasureState::Done);
    assert_eq!(receipt.items, ITEMS as u64);
    assert_eq!(
        receipt.versions, ITEMS as u64,
        "one version each before erasure"
    );
    for id in &ids {
        let f = s.get("acme", id).unwrap();
        assert!(f.is_erased(), "{id} erased after restart");
        assert!(f.question.is_empty() && f.comment.is_none() && f.user_id.is_none());
        let history = s.history("acme", id).unwrap();
        let text = serde_json::to_string(
            &history
                .iter()
                .map(feedgraph::model::HistoryVersion::to_json)
                .collect::<Vec<_>>(),
        )
        .unwrap();
        assert!(
            !text.contains(&marker),
            "history of {id} keeps text: {text}"
        );
    }
    assert_eq!(s.verify().unwrap(), None);
}
