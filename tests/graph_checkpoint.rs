//! The graph checkpoint (`storage.graph_checkpoint`): a clean stop writes every org's graph
//! to `graph.ckpt` and the store vouches for it; the next start reads it instead of
//! scanning, and gets the graph the writes made (the one a scan builds). A start after a
//! crash, after anything else opened the store, or with a damaged, foreign or old-format
//! file scans, and answers the same.

mod common;

use std::path::Path;
use std::time::Duration;

use common::graphs::{fingerprints, populated};
use common::server::TestServer;
use common::{actor, item, open, sled_only};
use feedgraph::graph::GraphIndex;
use feedgraph::graph::checkpoint::{self, CheckpointError, FORMAT_VERSION};
use feedgraph::http::auth::{Role, mint};
use feedgraph::model::{Actor, NewFeedback};
use feedgraph::service::{ImportRecord, NewAdapter};
use serde_json::{Value, json};

/// The id in a checkpoint file's header (after the magic and the format version).
fn file_id(dir: &Path) -> u128 {
    let bytes = std::fs::read(checkpoint::path_in(dir)).unwrap();
    u128::from_le_bytes(bytes[12..28].try_into().unwrap())
}

#[test]
fn a_checkpoint_gives_back_the_graph_the_writes_made() {
    sled_only!("the checkpoint is the sled backend's start-up");
    let dir = tempfile::tempdir().unwrap();
    let s = populated(dir.path());
    // Ids below the ones already there (they arrive out of order), in a session.
    let records = (0..6)
        .map(|i| {
            let line = json!({
                "org": "acme", "id": format!("a-early-{i}"), "type": "positive",
                "question": format!("An early question {i}?"), "answer": "An early answer.",
                "adapter_id": "sb_1", "session_id": "sess-1",
            });
            (i + 1, ImportRecord::parse(&line.to_string()).unwrap())
        })
        .collect();
    s.import(None, "test", records, 100, |_| {}).unwrap();
    let live = fingerprints(s.graph());
    let canonical = s.graph().canonical();
    assert!(!s.graph_from_checkpoint());
    assert!(s.checkpoint_graph().is_some(), "a checkpoint was written");
    drop(s);

    let s = open(dir.path());
    assert!(
        s.graph_from_checkpoint(),
        "the clean stop's checkpoint was used"
    );
    // The same layout row by row (ids, symbols, node and edge ids, typed lists, sessions,
    // counters, the id order with its late ids) as the live graph...
    assert_eq!(fingerprints(s.graph()), live);
    // ...which is, canonically, what a scan of the store builds.
    assert_eq!(s.graph().canonical(), canonical);
    assert_eq!(GraphIndex::build(s.store()).unwrap().canonical(), canonical);
    assert_eq!(s.verify().unwrap(), None);

    // Writes go on from the loaded graph: items joining a session, links to an adapter
    // that exists only as a link's placeholder, which is then created with a parent.
    for i in 0..8 {
        let fb = s
            .submit(
                &actor("acme"),
                NewFeedback {
                    adapter_id: Some("sb_2".into()),
                    session_id: Some("sess-1".into()),
                    ..item(&format!("A later question {i}?"), "A later answer.")
                },
            )
            .unwrap();
        s.link(&actor("acme"), &fb.id, Some("sb-late".into()), None)
            .unwrap();
    }
    let admin = Actor::new("acme", "admin");
    s.create_adapter(
        &admin,
        NewAdapter {
            id: Some("sb-late".into()),
            derived_from: Some("sb_4".into()),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(s.verify().unwrap(), None, "the loaded graph follows writes");
    let canonical = s.graph().canonical();
    assert!(s.checkpoint_graph().is_some());
    drop(s);

    let s = open(dir.path());
    assert!(s.graph_from_checkpoint());
    assert_eq!(s.graph().canonical(), canonical);
    assert_eq!(s.verify().unwrap(), None);
    // That open used up the store's voucher: with no clean stop since, the next one scans.
    drop(s);
    let s = open(dir.path());
    assert!(!s.graph_from_checkpoint(), "a checkpoint is used once");
    assert_eq!(s.graph().canonical(), canonical);
}

/// `feedgraph_graph_checkpoint_loaded` from `/metrics`.
async fn loaded(s: &TestServer) -> u32 {
    let text = s.get_open("/metrics").await.text().await.unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("feedgraph_graph_checkpoint_loaded "))
        .unwrap_or_else(|| panic!("no checkpoint gauge in\n{text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

/// What clients see: by-adapter pages (with descendants), the list, stats, a lineage and
/// a grouped Cypher query.
async fn answers(s: &TestServer) -> Vec<Value> {
    let token = s.token("acme", "alice", Role::Admin);
    let mut out = Vec::new();
    for path in [
        "/feedback/by-adapter/cp_1?limit=7",
        "/feedback/by-adapter/cp_root?limit=50&include_descendants=true",
        "/feedback?limit=1000",
        "/feedback/stats",
        "/adapters/cp_2/lineage",
    ] {
        let (status, body) = s.get(&token, path).await;
        assert_eq!(status, 200, "{path}: {body}");
        out.push(body);
    }
    let (status, body) = s
        .post(
            &token,
            "/graph/query",
            &json!({"query": "MATCH (f:Feedback)-[:FEEDBACK_FOR]->(a:Adapter) \
                RETURN a.id AS adapter, count(f) AS n, sum(f.score) AS total \
                ORDER BY adapter"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    out.push(body["rows"].clone());
    out
}

/// Adapters `cp_root <- cp_1 <- cp_2`, 40 items over them in sessions, some linked twice,
/// one erased.
async fn fill(s: &TestServer) {
    let token = s.token("acme", "alice", Role::Admin);
    for (id, parent) in [
        ("cp_root", None),
        ("cp_1", Some("cp_root")),
        ("cp_2", Some("cp_1")),
    ] {
        let (status, body) = s
            .post(
                &token,
                "/adapters",
                &json!({"id": id, "derived_from": parent}),
            )
            .await;
        assert!(status == 201 || status == 200, "{body}");
    }
    let mut ids = Vec::new();
    for i in 0..40 {
        let (status, body) = s
            .post(
                &token,
                "/feedback",
                &json!({
                    "type": if i % 3 == 0 { "negative" } else { "positive" },
                    "question": format!("How do I shard collection {i}?"),
                    "answer": "Use SHARD BY in CREATE COLLECTION.",
                    "comment": "Checked by hand.",
                    "adapter_id": (["cp_root", "cp_1", "cp_2"][i % 3]),
                    "session_id": format!("s-{}", i / 4),
                    "user_id": format!("u-{}", i % 5),
                    "score": i % 5,
                }),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        ids.push(body["id"].as_str().unwrap().to_owned());
    }
    for id in ids.iter().step_by(4) {
        let (status, body) = s
            .post(
                &token,
                &format!("/feedback/{id}/link"),
                &json!({"adapter_id": "cp_2"}),
            )
            .await;
        assert!(status == 200 || status == 201, "{body}");
    }
    let (status, body) = s
        .post(&token, &format!("/feedback/{}/erase", ids[5]), &json!({}))
        .await;
    assert!((200..300).contains(&status), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_stop_checkpoints_and_only_a_sound_vouched_file_is_read() {
    sled_only!("the checkpoint is the sled backend's start-up");
    let s = TestServer::start().await;
    assert_eq!(loaded(&s).await, 0, "a new directory has no checkpoint");
    fill(&s).await;
    let expected = answers(&s).await;
    let dir = s.stop_keep().await;
    assert!(checkpoint::path_in(dir.path()).exists());
    let first_file = std::fs::read(checkpoint::path_in(dir.path())).unwrap();

    let s = TestServer::start_in(dir, |_| {}).await;
    assert_eq!(loaded(&s).await, 1, "a clean stop's checkpoint is read");
    assert_eq!(answers(&s).await, expected);

    // Each kind of damage, on a fresh checkpoint of a clean stop: the start scans (the
    // reason is what `read` says, which the start logs) and answers the same.
    type Damage = fn(&Path, &[u8]);
    let damages: [(&str, Damage); 5] = [
        ("a flipped checksum", |dir, _| {
            let p = checkpoint::path_in(dir);
            let mut b = std::fs::read(&p).unwrap();
            let last = b.len() - 1;
            b[last] ^= 0x01;
            std::fs::write(&p, b).unwrap();
        }),
        ("a flipped byte", |dir, _| {
            let p = checkpoint::path_in(dir);
            let mut b = std::fs::read(&p).unwrap();
            let at = b.len() * 2 / 3;
            b[at] ^= 0x5a;
            std::fs::write(&p, b).unwrap();
        }),
        ("a truncated file", |dir, _| {
            let p = checkpoint::path_in(dir);
            let b = std::fs::read(&p).unwrap();
            std::fs::write(&p, &b[..b.len() / 2]).unwrap();
        }),
        ("an older format version", |dir, _| {
            let p = checkpoint::path_in(dir);
            let mut b = std::fs::read(&p).unwrap();
            b[8..12].copy_from_slice(&(FORMAT_VERSION - 1).to_le_bytes());
            std::fs::write(&p, b).unwrap();
        }),
        ("a file the store does not vouch for", |dir, first| {
            std::fs::write(checkpoint::path_in(dir), first).unwrap();
        }),
    ];
    let mut s = s;
    for (what, damage) in damages {
        let dir = s.stop_keep().await;
        let id = file_id(dir.path());
        damage(dir.path(), &first_file);
        let why = checkpoint::read(dir.path(), id).err();
        let fits = match what {
            "a flipped checksum" => matches!(why, Some(CheckpointError::Checksum)),
            "a flipped byte" => matches!(
                why,
                Some(CheckpointError::Checksum | CheckpointError::Malformed(_))
            ),
            "a truncated file" => matches!(
                why,
                Some(CheckpointError::Checksum | CheckpointError::Malformed(_))
            ),
            "an older format version" => matches!(
                why,
                Some(CheckpointError::Version { found }) if found == FORMAT_VERSION - 1
            ),
            _ => matches!(why, Some(CheckpointError::OtherId { expected, .. }) if expected == id),
        };
        assert!(fits, "{what}: {why:?}");
        s = TestServer::start_in(dir, |_| {}).await;
        assert_eq!(loaded(&s).await, 0, "{what}: the start scanned");
        assert_eq!(answers(&s).await, expected, "{what}");
    }

    // Turned off: a start reads none (and, like every start, removes the file it no
    // longer vouches for), and a clean stop writes none.
    let dir = s.stop_keep().await;
    assert!(checkpoint::path_in(dir.path()).exists());
    let s = TestServer::start_in(dir, |c| c.storage.graph_checkpoint = false).await;
    assert_eq!(loaded(&s).await, 0, "off: the start scanned");
    assert_eq!(answers(&s).await, expected);
    let dir = s.stop_keep().await;
    assert!(
        !checkpoint::path_in(dir.path()).exists(),
        "off: the stale file removed, no checkpoint written"
    );
}

/// Starts `feedgraph serve` on `dir`; returns the child and its address once ready.
async fn serve(dir: &Path) -> (std::process::Child, String) {
    let (mut child, addr) = common::spawn_serve(dir, &[]);
    let client = reqwest::Client::new();
    for _ in 0..1000 {
        if let Ok(r) = client.get(format!("{addr}/readyz")).send().await
            && r.status().is_success()
        {
            return (child, addr);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("the server did not get ready");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_after_a_checkpointed_start_survive_a_kill() {
    sled_only!("the checkpoint is the sled backend's start-up");
    let dir = tempfile::tempdir().unwrap();
    {
        let s = populated(dir.path());
        assert!(s.checkpoint_graph().is_some());
    }
    let (mut child, addr) = serve(dir.path()).await;
    let client = reqwest::Client::new();
    let metrics = client
        .get(format!("{addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("feedgraph_graph_checkpoint_loaded 1"),
        "the child started from the checkpoint"
    );
    let token = mint(
        &common::config(dir.path()),
        "acme",
        "killer",
        &[Role::Admin],
        600,
    )
    .unwrap();
    let mut acked = Vec::new();
    for i in 0..20 {
        let r = client
            .post(format!("{addr}/api/v1/llm/feedback"))
            .bearer_auth(&token)
            .json(&json!({
                "type": "positive",
                "question": format!("Written after the checkpoint {i}?"),
                "answer": "An answer to keep.",
                "adapter_id": "sb_3",
                "session_id": "sess-1",
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 201);
        let body: Value = r.json().await.unwrap();
        acked.push(body["id"].as_str().unwrap().to_owned());
    }
    child.kill().unwrap(); // SIGKILL: no clean stop, no new checkpoint
    child.wait().unwrap();

    let s = open(dir.path());
    assert!(
        !s.graph_from_checkpoint(),
        "the checkpoint holds none of the later writes: the start scans"
    );
    let g = s.graph().org("acme").unwrap();
    for id in &acked {
        s.get("acme", id).unwrap();
        assert!(g.feedback_row(id).is_some(), "{id} is in the graph");
    }
    assert_eq!(s.verify().unwrap(), None);
}
