//! The bounded step of an erasure on sled, online: while another task keeps submitting
//! and reading, an item holding a unique marker (in its record, history versions and a
//! committed batch) is erased over HTTP and the database is rewritten with the server
//! running (admin trigger, or the schedule of `erasure.rewrite_within_secs`). Afterwards
//! no file under the data directory holds the marker, every write acknowledged before,
//! during and after the rewrite reads back (and again after a restart), and the receipt
//! says when the bytes left the disk. A SIGKILL at points spread over an online rewrite
//! leaves a store that opens with every acknowledged write, and the erasure is still
//! completed on disk afterwards (the rewrite runs again).

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::disk::holders;
use common::free_port;
use common::server::TestServer;
use feedgraph::http::auth::{Role, mint};
use feedgraph::store::SledStore;
use serde_json::{Value, json};

fn item(m: &str, user: &str) -> Value {
    json!({
        "type": "negative",
        "question": format!("Question that carries {m} inside it?"),
        "answer": format!("Answer that carries {m} inside it."),
        "correction": format!("Correction that carries {m} inside it."),
        "comment": format!("Comment that carries {m} inside it."),
        "user_id": user,
        "adapter_id": "ad-m",
        "metadata": {"v": format!("meta{m}")},
    })
}

/// Submits items and reads them back until `stop`; returns every acknowledged item
/// (id, question).
async fn keep_writing(
    client: reqwest::Client,
    base: String,
    token: String,
    stop: Arc<AtomicBool>,
    tag: String,
) -> Vec<(String, String)> {
    let mut acked = Vec::new();
    let mut i = 0u64;
    while !stop.load(Ordering::SeqCst) {
        i += 1;
        let question = format!("Written while rewriting {tag} {i}?");
        let sent = client
            .post(format!("{base}/feedback"))
            .bearer_auth(&token)
            .json(&json!({"type": "positive", "question": question, "answer": "yes"}))
            .send()
            .await;
        let Ok(r) = sent else { break };
        if r.status().as_u16() != 201 {
            continue;
        }
        let Ok(body) = r.json::<Value>().await else {
            break;
        };
        let Some(id) = body["id"].as_str() else {
            continue;
        };
        acked.push((id.to_owned(), question));
        // And a read of something written earlier.
        let (id, _) = &acked[acked.len() / 2];
        let _ = client
            .get(format!("{base}/feedback/{id}"))
            .bearer_auth(&token)
            .send()
            .await;
    }
    acked
}

async fn check_readable(s: &TestServer, token: &str, acked: &[(String, String)]) {
    for (id, question) in acked {
        let (st, fb) = s.get(token, &format!("/feedback/{id}")).await;
        assert_eq!(st, 200, "acknowledged write {id} is missing: {fb}");
        assert_eq!(fb["question"], question.as_str());
    }
}

/// Writes the marker item with history versions and a committed batch; returns its id.
async fn marked_item(s: &TestServer, user: &str, admin: &str, m: &str) -> String {
    let (st, fb) = s
        .post(user, "/feedback", &item(m, &format!("user{m}")))
        .await;
    assert_eq!(st, 201, "{fb}");
    let id = fb["id"].as_str().unwrap().to_owned();
    for status in ["rejected", "approved"] {
        let (st, _) = s
            .patch(
                admin,
                &format!("/feedback/{id}"),
                &json!({"validation_status": status, "reason": "marker"}),
            )
            .await;
        assert_eq!(st, 200);
    }
    let (st, claimed) = s
        .post(admin, "/training/batches", &json!({"limit": 10}))
        .await;
    assert_eq!(st, 201, "{claimed}");
    let batch = claimed["batch_id"].as_u64().unwrap();
    let (st, _) = s
        .post(
            admin,
            &format!("/training/batches/{batch}/commit"),
            &json!({}),
        )
        .await;
    assert_eq!(st, 200);
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_admin_rewrite_with_writes_going_on_removes_the_erased_bytes_and_loses_no_write() {
    common::sled_only!("the proof is about sled's files in the data directory");
    let m = format!("MRK{:016x}", rand::random::<u64>());
    let s = TestServer::start_with(|c| {
        // Only the admin trigger rewrites here; the copy pauses after each batch (each
        // tree here), so writes land in trees the copy has passed: only the catch-up
        // brings them over.
        c.erasure.rewrite_within_secs = 3600;
        c.erasure.test_rewrite_delay_ms = 150;
        c.rate_limit.enabled = false;
    })
    .await;
    let user = s.token("acme", "alice", Role::User);
    let admin = s.token("acme", "root", Role::Admin);
    let id = marked_item(&s, &user, &admin, &m).await;

    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(keep_writing(
        s.client.clone(),
        s.url(""),
        user.clone(),
        stop.clone(),
        "A".into(),
    ));
    let (st, receipt) = s
        .post(
            &admin,
            "/erasures",
            &json!({"scope": "user", "value": format!("user{m}")}),
        )
        .await;
    assert_eq!(st, 201, "{receipt}");
    assert_eq!(receipt["items"], 1);
    assert!(receipt["bytes_gone_at"].is_null(), "{receipt}");
    assert!(receipt["bytes_due_by"].is_u64(), "{receipt}");
    assert!(
        !holders(s.dir.path(), &m).is_empty(),
        "the scan must see the stale bytes before the rewrite"
    );
    let (st, done) = s.post(&admin, "/admin/compact", &json!({})).await;
    assert_eq!(st, 200, "{done}");
    assert_eq!(done["done"], true, "{done}");
    let report = &done["rewrite"];
    eprintln!("rewrite report: {report}");
    // Keep writing a little into the new database, then stop.
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::SeqCst);
    let acked = writer.await.unwrap();
    assert!(
        acked.len() > 10,
        "the writer made progress: {}",
        acked.len()
    );

    // The receipt says when the bytes left the disk.
    let erasure = receipt["id"].as_str().unwrap();
    let (st, r) = s.get(&admin, &format!("/erasures/{erasure}")).await;
    assert_eq!(st, 200);
    assert!(r["bytes_gone_at"].is_u64(), "{r}");
    assert!(r["bytes_due_by"].is_null(), "{r}");
    // ... and so does the list.
    let (st, list) = s.get(&admin, "/erasures").await;
    assert_eq!(st, 200);
    assert_eq!(list["erasures"][0]["id"], r["id"], "{list}");
    assert_eq!(
        list["erasures"][0]["bytes_gone_at"], r["bytes_gone_at"],
        "{list}"
    );
    // The users role may not rewrite.
    let (st, _) = s.post(&user, "/admin/compact", &json!({})).await;
    assert_eq!(st, 403);
    // Nothing is due any more: another request starts no rewrite (an org admin cannot
    // make the server rewrite its whole store at will).
    let (st, again) = s.post(&admin, "/admin/compact", &json!({})).await;
    assert_eq!(st, 200, "{again}");
    assert_eq!(again["done"], false, "{again}");
    assert!(again["rewrite"].is_null(), "{again}");

    check_readable(&s, &user, &acked).await;
    let fb = s.get(&user, &format!("/feedback/{id}")).await.1;
    assert_eq!(fb["question"], "");
    let left = holders(s.dir.path(), &m);
    assert!(left.is_empty(), "erased marker still on disk in {left:?}");
    assert!(!s.dir.path().join("compaction-due").exists());
    let (_, last) = acked.last().unwrap();
    assert!(
        !holders(s.dir.path(), last).is_empty(),
        "live text is found by the scan"
    );

    // And after a restart.
    let dir = s.stop_keep().await;
    let s = TestServer::start_in(dir, |c| {
        c.erasure.rewrite_within_secs = 3600;
        c.rate_limit.enabled = false;
    })
    .await;
    let user = s.token("acme", "alice", Role::User);
    check_readable(&s, &user, &acked).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_scheduled_rewrite_runs_within_the_configured_time_by_itself() {
    common::sled_only!("the proof is about sled's files in the data directory");
    let m = format!("MRK{:016x}", rand::random::<u64>());
    let s = TestServer::start_with(|c| {
        c.erasure.rewrite_within_secs = 1;
        c.rate_limit.enabled = false;
    })
    .await;
    let user = s.token("acme", "alice", Role::User);
    let admin = s.token("acme", "root", Role::Admin);
    let id = marked_item(&s, &user, &admin, &m).await;
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(keep_writing(
        s.client.clone(),
        s.url(""),
        user.clone(),
        stop.clone(),
        "B".into(),
    ));
    let (st, receipt) = s
        .post(&admin, &format!("/feedback/{id}/erase"), &json!({}))
        .await;
    assert_eq!(st, 201, "{receipt}");
    let erasure = receipt["id"].as_str().unwrap().to_owned();
    // Nobody asks: the server's own schedule does it (a hang guard, not a timing check).
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, r) = s.get(&admin, &format!("/erasures/{erasure}")).await;
        if r["bytes_gone_at"].is_u64() {
            assert!(r["bytes_gone_at"].as_u64() >= r["finished_at"].as_u64());
            break;
        }
        assert!(Instant::now() < deadline, "no rewrite ran: {r}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let acked = writer.await.unwrap();
    check_readable(&s, &user, &acked).await;
    let left = holders(s.dir.path(), &m);
    assert!(left.is_empty(), "erased marker still on disk in {left:?}");
    let metrics = s.get_open("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("feedgraph_rewrites_total 1"),
        "the rewrite is counted"
    );
    s.stop().await;
}

fn serve(dir: &Path, port: u16) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_feedgraph"))
        .arg("--data-dir")
        .arg(dir)
        .args(["serve", "--bind", &format!("127.0.0.1:{port}")])
        .env("FEEDGRAPH__ERASURE__REWRITE_WITHIN_SECS", "3600")
        .env("FEEDGRAPH__ERASURE__TEST_REWRITE_DELAY_MS", "120")
        .env("FEEDGRAPH__RATE_LIMIT__ENABLED", "false")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

async fn wait_ready(client: &reqwest::Client, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready = client
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .send()
            .await
            .map(|r| r.status().is_success())
            .unwrap_or(false);
        if ready {
            return;
        }
        assert!(Instant::now() < deadline, "server did not become ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sigkill_during_an_online_rewrite_loses_no_acknowledged_write() {
    common::sled_only!("the online rewrite is sled's");
    let dir = tempfile::tempdir().unwrap();
    let config = common::config(dir.path());
    let user = mint(&config, "acme", "alice", &[Role::User], 3600).unwrap();
    let admin = mint(&config, "acme", "root", &[Role::Admin], 3600).unwrap();
    let client = reqwest::Client::new();
    let mut acked: Vec<(String, String)> = Vec::new();
    let mut markers = Vec::new();
    // Kill points spread over the rewrite (the copy pauses 120 ms per tree), with jitter.
    for (round, base_ms) in [60u64, 500, 1100, 1700].into_iter().enumerate() {
        let port = free_port();
        let mut child = serve(dir.path(), port);
        wait_ready(&client, port).await;
        let base = format!("http://127.0.0.1:{port}/api/v1/llm");
        let m = format!("KILL{:016x}", rand::random::<u64>());
        let r: Value = client
            .post(format!("{base}/feedback"))
            .bearer_auth(&user)
            .json(&item(&m, &format!("user{m}")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = r["id"].as_str().unwrap().to_owned();
        let r = client
            .post(format!("{base}/feedback/{id}/erase"))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 201);
        markers.push(m);
        let stop = Arc::new(AtomicBool::new(false));
        let writer = tokio::spawn(keep_writing(
            client.clone(),
            base.clone(),
            user.clone(),
            stop.clone(),
            format!("K{round}"),
        ));
        let compact = {
            let (client, admin, base) = (client.clone(), admin.clone(), base.clone());
            tokio::spawn(async move {
                client
                    .post(format!("{base}/admin/compact"))
                    .bearer_auth(&admin)
                    .send()
                    .await
            })
        };
        let jitter = rand::random::<u64>() % 200;
        tokio::time::sleep(Duration::from_millis(base_ms + jitter)).await;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        stop.store(true, Ordering::SeqCst);
        acked.extend(writer.await.unwrap());
        let finished = matches!(compact.await.unwrap(), Ok(r) if r.status().is_success());
        // The store opens (leftovers cleaned) with every acknowledged write; the erasure
        // marker is still there unless the swap completed.
        {
            let store = SledStore::open(dir.path(), &config.storage).unwrap();
            let lost: Vec<&String> = acked
                .iter()
                .filter(|(id, q)| {
                    store
                        .get_feedback("acme", id)
                        .unwrap()
                        .is_none_or(|fb| &fb.question != q)
                })
                .map(|(_, q)| q)
                .collect();
            assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
            let due = feedgraph::store::compact::is_due(dir.path());
            eprintln!(
                "round {round}: killed at {} ms, rewrite answered: {finished}, still due: {due}",
                base_ms + jitter
            );
            if finished {
                assert!(!due, "a finished rewrite cleared the marker");
            }
        }
    }
    // The next start finishes what is due; no marker survives on disk.
    let port = free_port();
    let mut child = serve(dir.path(), port);
    wait_ready(&client, port).await;
    let base = format!("http://127.0.0.1:{port}/api/v1/llm");
    let r = client
        .post(format!("{base}/admin/compact"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    child.kill().unwrap();
    child.wait().unwrap();
    for m in &markers {
        let left = holders(dir.path(), m);
        assert!(
            left.is_empty(),
            "erased marker {m} still on disk in {left:?}"
        );
    }
    let store = SledStore::open(dir.path(), &config.storage).unwrap();
    for (id, question) in &acked {
        let fb = store.get_feedback("acme", id).unwrap();
        assert_eq!(&fb.unwrap().question, question, "{id}");
    }
}
