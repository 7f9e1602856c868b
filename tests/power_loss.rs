//! Power loss, not only a killed process: the server runs with its data directory on
//! LazyFs (tests/support/lazyfs.rs), a FUSE layer that forgets every write no fsync
//! covered when it "crashes". Each cycle drives every write path concurrently, SIGKILLs
//! the server mid-flight, crashes the file system, and then checks that every
//! acknowledged write survived with its effect, that `feedgraph check` passes, and that
//! the graph's listings agree with the records read by id.
//!
//! Needs /dev/fuse and the right to mount (root here). `POWER_LOSS_CYCLES` sets the
//! number of cycles (default 20).

mod common;
#[path = "support/lazyfs.rs"]
mod lazyfs;

use std::io::{Read, Write};
use std::path::Path;

use lazyfs::LazyFs;

/// A scratch directory with a backing store and a LazyFs mounted over it, or `None` when
/// this machine cannot mount one (no /dev/fuse, not root) and the run does not demand it.
/// CI sets `FEEDGRAPH_REQUIRE_FUSE=1` (in `.ci/run`), so there a failed mount fails the
/// test; a developer without root still gets a working `cargo test`, with a loud notice.
fn mounted() -> Option<(tempfile::TempDir, LazyFs)> {
    let root = tempfile::tempdir().unwrap();
    let backing = root.path().join("backing");
    let mnt = root.path().join("mnt");
    std::fs::create_dir(&backing).unwrap();
    std::fs::create_dir(&mnt).unwrap();
    match LazyFs::mount(&backing, &mnt) {
        Ok(fs) => Some((root, fs)),
        Err(e) => {
            let why = format!(
                "mounting LazyFs failed: {e} (needs /dev/fuse: `modprobe fuse`, and root or \
                 fusermount3 from Debian's fuse3 package)"
            );
            assert!(
                std::env::var_os("FEEDGRAPH_REQUIRE_FUSE").is_none(),
                "{why}; FEEDGRAPH_REQUIRE_FUSE is set, so this is a failure"
            );
            eprintln!("SKIPPED: the power-loss test did not run: {why}");
            None
        }
    }
}

fn sync_dir(dir: &Path) {
    std::fs::File::open(dir).unwrap().sync_all().unwrap();
}

fn read(path: &Path) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    match std::fs::File::open(path) {
        Ok(mut f) => {
            f.read_to_end(&mut buf).unwrap();
            Some(buf)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => panic!("{}: {e}", path.display()),
    }
}

/// The layer itself: synced data and names survive a crash, nothing else does.
#[test]
fn lazyfs_forgets_exactly_what_no_sync_covered() {
    common::sled_only!("it checks LazyFs, the file system the sled power-loss test runs on");
    let Some((root, mut fs)) = mounted() else {
        return;
    };
    let mnt = root.path().join("mnt");

    // Durable: written, fsynced, and named in a directory that was fsynced after.
    let synced = |path: &Path, data: &[u8]| {
        let mut f = std::fs::File::create(path).unwrap();
        f.write_all(data).unwrap();
        f.sync_all().unwrap();
        f
    };
    let kept = synced(&mnt.join("kept"), &[1u8; 10_000]);
    let empty = std::fs::File::create(mnt.join("empty")).unwrap();
    drop(synced(&mnt.join("a"), b"file a"));
    drop(synced(&mnt.join("b"), b"file b"));
    std::fs::create_dir(mnt.join("keep")).unwrap();
    drop(synced(&mnt.join("keep/c"), b"file c"));
    sync_dir(&mnt.join("keep"));
    sync_dir(&mnt);

    // Not durable: writes without a sync (an overwrite and an append)...
    use std::os::unix::fs::FileExt;
    kept.write_all_at(&[2u8; 100], 5_000).unwrap();
    kept.write_all_at(&[3u8; 5_000], 10_000).unwrap();
    (&empty).write_all(b"never synced").unwrap();
    // ... a new file, fsynced, whose directory never was ...
    drop(synced(&mnt.join("lost"), b"synced data, unsynced name"));
    // ... a directory with a synced file and a synced listing, its own name unsynced ...
    std::fs::create_dir(mnt.join("sub")).unwrap();
    drop(synced(&mnt.join("sub/inner"), b"x"));
    sync_dir(&mnt.join("sub"));
    // ... a rename over a file and an unlink.
    std::fs::rename(mnt.join("a"), mnt.join("b")).unwrap();
    std::fs::remove_file(mnt.join("empty")).unwrap();
    assert_eq!(read(&mnt.join("b")).unwrap(), b"file a");
    // Durable again: a rename in another directory, which is then fsynced.
    std::fs::rename(mnt.join("keep/c"), mnt.join("keep/d")).unwrap();
    sync_dir(&mnt.join("keep"));
    drop((kept, empty));

    let report = fs.crash().unwrap();
    assert_eq!(report.files_reverted, 2, "{report:?}");
    assert!(report.entries_undone >= 4, "{report:?}");

    assert_eq!(read(&mnt.join("kept")).unwrap(), vec![1u8; 10_000]);
    assert_eq!(
        read(&mnt.join("empty")).unwrap(),
        b"",
        "unlink undone, data lost"
    );
    assert_eq!(read(&mnt.join("lost")), None, "name never synced");
    assert_eq!(read(&mnt.join("sub/inner")), None, "directory never synced");
    assert_eq!(read(&mnt.join("a")).unwrap(), b"file a", "rename undone");
    assert_eq!(read(&mnt.join("b")).unwrap(), b"file b", "rename undone");
    assert_eq!(read(&mnt.join("keep/c")), None, "synced rename kept");
    assert_eq!(read(&mnt.join("keep/d")).unwrap(), b"file c");
    let mut names: Vec<_> = std::fs::read_dir(&mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["a", "b", "empty", "keep", "kept"]);

    // Truncation is undone too, and a sync after it makes it stick.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(mnt.join("kept"))
        .unwrap();
    f.set_len(10).unwrap();
    drop(f);
    fs.crash().unwrap();
    assert_eq!(read(&mnt.join("kept")).unwrap().len(), 10_000);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(mnt.join("kept"))
        .unwrap();
    f.set_len(10).unwrap();
    f.sync_all().unwrap();
    drop(f);
    fs.crash().unwrap();
    assert_eq!(read(&mnt.join("kept")).unwrap(), vec![1u8; 10]);
}

// ---------------------------------------------------------------------------------------
// The server under power loss.

use std::collections::{HashMap, HashSet};
use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use feedgraph::http::auth::{Role, mint};
use parking_lot::Mutex;
use rand::Rng;
use serde_json::{Value, json};

const ORG: &str = "power";
/// Answers this long make records above sled's blob threshold (a quarter of its 512 KiB
/// segments).
const BIG_ANSWER: usize = 200_000;
/// Concurrent clients during a cycle.
const CLIENTS: usize = 6;

/// What the server acknowledged (answered 2xx) over all cycles.
#[derive(Debug, Default)]
struct Acked {
    /// Feedback id -> its question, and the review status it was given (if any).
    items: HashMap<String, (String, Option<String>)>,
    /// Flagged items nobody has reviewed yet.
    flagged: Vec<String>,
    /// Adapter id -> the parent it was created with.
    adapters: HashMap<String, Option<String>>,
    /// (feedback id, adapter id): FEEDBACK_FOR edges, from submits and links.
    links: HashSet<(String, String)>,
    /// Batch id -> its items and the last state change acknowledged.
    batches: HashMap<u64, (Vec<String>, &'static str)>,
    /// Feedback id -> the batch mark-used recorded it in.
    marked: HashMap<String, u64>,
    /// Feedback id -> answer length, for items large enough to be sled blobs.
    big: HashMap<String, usize>,
    /// Acknowledged requests, by write path.
    counts: HashMap<&'static str, usize>,
}

impl Acked {
    fn count(&mut self, path: &'static str) {
        *self.counts.entry(path).or_default() += 1;
    }
}

/// Bearer tokens, minted once with the secret the first server created: a restart that
/// lost the secret file would make them fail.
struct Tokens {
    user: String,
    trainer: String,
    admin: String,
}

struct Server {
    child: Child,
    base: String,
}

impl Server {
    fn start(data_dir: &Path) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_feedgraph"))
            .arg("--data-dir")
            .arg(data_dir)
            .args(["serve", "--bind", "127.0.0.1:0"])
            .env("RUST_LOG", "warn,tower_http=off")
            .env("FEEDGRAPH__RATE_LIMIT__ENABLED", "false")
            .env("FEEDGRAPH__SERVER__BODY_LIMIT_BYTES", "1048576")
            .env("FEEDGRAPH__VALIDATION__LIMITS__MAX_TEXT_CHARS", "400000")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut first = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut first)
            .unwrap();
        let addr = first
            .trim()
            .strip_prefix("feedgraph listening on ")
            .unwrap_or_else(|| panic!("unexpected first line from serve: {first:?}"))
            .to_owned();
        Server { child, base: addr }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api/v1/llm{path}", self.base)
    }

    async fn ready(&mut self, http: &reqwest::Client) {
        for _ in 0..600 {
            if let Ok(r) = http.get(format!("{}/readyz", self.base)).send().await
                && r.status().is_success()
            {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the server exited before it was ready: {status}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the server did not get ready in 60 s");
    }

    /// SIGKILL: the process dies wherever it is.
    fn kill(self) {}
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A request's answer if it came back complete with a 2xx status.
async fn ok(req: reqwest::RequestBuilder, token: &str) -> Option<(u16, Value)> {
    let r = req.bearer_auth(token).send().await.ok()?;
    let status = r.status().as_u16();
    let body = r.json::<Value>().await.ok()?;
    (200..300).contains(&status).then_some((status, body))
}

/// One client: random writes on every path until the server dies or `stop` is set.
async fn client(
    n: usize,
    cycle: usize,
    http: reqwest::Client,
    server: Arc<String>,
    tokens: Arc<Tokens>,
    acked: Arc<Mutex<Acked>>,
    stop: Arc<AtomicBool>,
) {
    let url = |path: &str| format!("{server}/api/v1/llm{path}");
    let mut seq = 0u64;
    let mut failures = 0;
    while !stop.load(Ordering::Relaxed) && failures < 3 {
        seq += 1;
        let tag = format!("{cycle}-{n}-{seq}");
        let (dice, pick) = {
            let mut rng = rand::rng();
            (rng.random_range(0..100u32), rng.random::<u64>())
        };
        let pick_of = |v: &[String]| (!v.is_empty()).then(|| v[(pick as usize) % v.len()].clone());
        let done = match dice {
            // submit: positive items are approved (claimable), negative ones flagged.
            0..35 => {
                let positive = pick % 2 == 0;
                let question = format!("How do I configure option {tag}?");
                let mut answer =
                    format!("Set option {tag} in the config file and restart the node.");
                if pick % 50 == 7 {
                    // Large enough for sled to keep it in a file of its own under blobs/.
                    answer = answer.repeat(BIG_ANSWER / answer.len() + 1);
                }
                let answer_len = answer.len();
                let mut body = json!({
                    "type": if positive { "positive" } else { "negative" },
                    "question": question,
                    "answer": answer,
                });
                let adapter = (pick % 3 == 0).then(|| format!("pool-{}", pick % 5));
                if let Some(a) = &adapter {
                    body["adapter_id"] = a.clone().into();
                }
                let r = ok(http.post(url("/feedback")).json(&body), &tokens.user).await;
                r.map(|(_, fb)| {
                    let id = fb["id"].as_str().unwrap_or_default().to_owned();
                    let mut a = acked.lock();
                    if fb["validation_status"] == "flagged" {
                        a.flagged.push(id.clone());
                    }
                    if let Some(ad) = adapter {
                        a.links.insert((id.clone(), ad));
                    }
                    if answer_len >= BIG_ANSWER {
                        a.big.insert(id.clone(), answer_len);
                        a.count("submit (blob)");
                    }
                    a.items.insert(id, (question, None));
                    a.count("submit");
                })
            }
            // link an acknowledged item to an adapter.
            35..50 => {
                let Some(id) = pick_of(&acked.lock().items.keys().cloned().collect::<Vec<_>>())
                else {
                    continue;
                };
                let adapter = format!("pool-{}", (pick >> 8) % 5);
                let r = ok(
                    http.post(url(&format!("/feedback/{id}/link")))
                        .json(&json!({"adapter_id": adapter})),
                    &tokens.user,
                )
                .await;
                r.map(|_| {
                    let mut a = acked.lock();
                    a.links.insert((id, adapter));
                    a.count("link");
                })
            }
            // review a flagged item (each one once).
            50..60 => {
                let Some(id) = acked.lock().flagged.pop() else {
                    continue;
                };
                let status = if pick % 2 == 0 {
                    "approved"
                } else {
                    "rejected"
                };
                let r = ok(
                    http.patch(url(&format!("/feedback/{id}")))
                        .json(&json!({"validation_status": status, "reason": "checked"})),
                    &tokens.admin,
                )
                .await;
                r.map(|_| {
                    let mut a = acked.lock();
                    if let Some(item) = a.items.get_mut(&id) {
                        item.1 = Some(status.to_owned());
                    }
                    a.count("review");
                })
            }
            // create an adapter, derived from an acknowledged one half of the time.
            60..70 => {
                let parent = if pick % 2 == 0 {
                    pick_of(&acked.lock().adapters.keys().cloned().collect::<Vec<_>>())
                } else {
                    None
                };
                let id = format!("adapter-{tag}");
                let r = ok(
                    http.post(url("/adapters"))
                        .json(&json!({"id": id, "derived_from": parent})),
                    &tokens.admin,
                )
                .await;
                r.map(|_| {
                    let mut a = acked.lock();
                    a.adapters.insert(id, parent);
                    a.count("adapter create");
                })
            }
            // claim a few approved items, then commit or abort the batch.
            70..88 => {
                let r = ok(
                    http.post(url("/training/batches"))
                        .json(&json!({"limit": 3})),
                    &tokens.trainer,
                )
                .await;
                match r {
                    None => None,
                    Some((_, b)) if b["count"] == 0 => Some(()),
                    Some((_, b)) => {
                        let batch = b["batch_id"].as_u64().unwrap_or_default();
                        let items: Vec<String> = b["feedback"]
                            .as_array()
                            .map(|a| {
                                a.iter()
                                    .filter_map(|f| f["id"].as_str().map(str::to_owned))
                                    .collect()
                            })
                            .unwrap_or_default();
                        {
                            let mut a = acked.lock();
                            a.batches.insert(batch, (items, "leased"));
                            a.count("claim");
                        }
                        let (path, state, body) = if pick % 3 == 0 {
                            ("abort", "aborted", json!({}))
                        } else {
                            (
                                "commit",
                                "committed",
                                json!({"trained_adapter_id": format!("trained-{tag}")}),
                            )
                        };
                        let r = ok(
                            http.post(url(&format!("/training/batches/{batch}/{path}")))
                                .json(&body),
                            &tokens.trainer,
                        )
                        .await;
                        r.map(|_| {
                            let mut a = acked.lock();
                            if let Some(b) = a.batches.get_mut(&batch) {
                                b.1 = state;
                            }
                            a.count(path);
                        })
                    }
                }
            }
            // mark a few acknowledged items as used by a run outside claims.
            _ => {
                let ids: Vec<String> = {
                    let a = acked.lock();
                    let all: Vec<&String> = a.items.keys().collect();
                    if all.is_empty() {
                        continue;
                    }
                    (0..3)
                        .map(|i| all[((pick >> (i * 8)) as usize) % all.len()].clone())
                        .collect()
                };
                let r = ok(
                    http.post(url("/feedback/mark-used"))
                        .json(&json!({ "ids": ids })),
                    &tokens.trainer,
                )
                .await;
                r.map(|(_, body)| {
                    let mut a = acked.lock();
                    // The batch the server recorded the marked items as.
                    let batch = body["training_batch_id"].as_u64();
                    for res in body["results"].as_array().into_iter().flatten() {
                        if res["result"] == "marked"
                            && let Some(id) = res["id"].as_str()
                            && let Some(batch) = batch
                        {
                            a.marked.insert(id.to_owned(), batch);
                        }
                    }
                    a.count("mark-used");
                })
            }
        };
        if done.is_none() {
            failures += 1;
        }
    }
}

/// Checks every acknowledged write against the restarted server.
async fn verify(
    cycle: usize,
    server: &Server,
    http: &reqwest::Client,
    tokens: &Tokens,
    acked: &Acked,
) {
    let get = |path: String, token: String| {
        let req = http.get(server.url(&path)).bearer_auth(token);
        async move {
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    // Items, their reviews and used flags: fetched by id (records), a few at a time.
    let ids: Vec<&String> = acked.items.keys().collect();
    for chunk in ids.chunks(16) {
        let answers = futures_join(
            chunk
                .iter()
                .map(|id| get(format!("/feedback/{id}"), tokens.user.clone())),
        )
        .await;
        for (id, (status, fb)) in chunk.iter().zip(answers) {
            assert_eq!(
                status,
                200,
                "cycle {cycle}: acknowledged item {id} (answer of {} bytes) lost: {fb}",
                acked.big.get(*id).copied().unwrap_or(60)
            );
            let (question, review) = &acked.items[*id];
            assert_eq!(fb["question"], question.as_str(), "cycle {cycle}: {id}");
            if let Some(r) = review {
                assert_eq!(
                    fb["validation_status"],
                    r.as_str(),
                    "cycle {cycle}: review of {id}"
                );
            }
            if let Some(len) = acked.big.get(*id) {
                assert_eq!(
                    fb["answer"].as_str().map(str::len),
                    Some(*len),
                    "cycle {cycle}: the large answer of {id}"
                );
            }
            if let Some(external) = acked.marked.get(*id) {
                assert_eq!(
                    (
                        fb["used_for_training"].as_bool(),
                        fb["training_batch_id"].as_u64()
                    ),
                    (Some(true), Some(*external)),
                    "cycle {cycle}: mark-used of {id}"
                );
            }
        }
    }
    // Adapters and their lineage.
    for (id, parent) in &acked.adapters {
        let (status, a) = get(format!("/adapters/{id}"), tokens.user.clone()).await;
        assert_eq!(
            status, 200,
            "cycle {cycle}: acknowledged adapter {id} lost: {a}"
        );
        assert_eq!(
            a["derived_from"].as_str(),
            parent.as_deref(),
            "cycle {cycle}: {id}"
        );
    }
    // Batches: state, and the used flags of committed ones.
    for (batch, (items, state)) in &acked.batches {
        let (status, b) = get(format!("/training/batches/{batch}"), tokens.trainer.clone()).await;
        assert_eq!(
            status, 200,
            "cycle {cycle}: acknowledged batch {batch} lost: {b}"
        );
        let stored = b["state"].as_str().unwrap_or_default();
        match *state {
            // A commit or abort may have been in flight: any later state may be there.
            "leased" => assert!(
                ["leased", "expired", "committed", "aborted"].contains(&stored),
                "cycle {cycle}: batch {batch} is {stored}"
            ),
            s => assert_eq!(stored, s, "cycle {cycle}: batch {batch}"),
        }
        if *state == "committed" {
            for id in items {
                let (_, fb) = get(format!("/feedback/{id}"), tokens.user.clone()).await;
                assert_eq!(
                    (
                        fb["used_for_training"].as_bool(),
                        fb["training_batch_id"].as_u64()
                    ),
                    (Some(true), Some(*batch)),
                    "cycle {cycle}: {id} of committed batch {batch}"
                );
            }
        }
    }
    // Links: the graph's by-adapter listing holds every acknowledged edge, and every item
    // it lists exists as a record.
    let mut by_adapter: HashMap<&str, Vec<&str>> = HashMap::new();
    for (id, adapter) in &acked.links {
        by_adapter.entry(adapter).or_default().push(id);
    }
    for (adapter, ids) in by_adapter {
        let mut listed = HashSet::new();
        let mut cursor = String::new();
        loop {
            let (status, page) = get(
                format!("/feedback/by-adapter/{adapter}?limit=1000{cursor}"),
                tokens.user.clone(),
            )
            .await;
            assert_eq!(status, 200, "cycle {cycle}: by-adapter {adapter}: {page}");
            listed.extend(
                page["feedback"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|f| f["id"].as_str().unwrap().to_owned()),
            );
            match page["next_cursor"].as_str() {
                Some(next) => cursor = format!("&cursor={next}"),
                None => break,
            }
        }
        assert_eq!(
            page_total(
                &get(
                    format!("/feedback/by-adapter/{adapter}?limit=1"),
                    tokens.user.clone()
                )
                .await
                .1
            ),
            listed.len() as u64,
            "cycle {cycle}: total_linked of {adapter}"
        );
        for id in ids {
            assert!(
                listed.contains(id),
                "cycle {cycle}: acknowledged link {id} -> {adapter} lost"
            );
        }
        for id in listed.iter().take(50) {
            let (status, _) = get(format!("/feedback/{id}"), tokens.user.clone()).await;
            assert_eq!(
                status, 200,
                "cycle {cycle}: {adapter} lists {id}, which has no record"
            );
        }
    }
    // A Cypher count over the graph covers every acknowledged item.
    let r = http
        .post(server.url("/graph/query"))
        .bearer_auth(&tokens.user)
        .json(&json!({"query": "MATCH (f:Feedback) RETURN count(f) AS n"}))
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    let n = body["rows"][0][0]
        .as_u64()
        .unwrap_or_else(|| panic!("{body}"));
    assert!(
        n >= acked.items.len() as u64,
        "cycle {cycle}: graph has {n} items"
    );
}

fn page_total(page: &Value) -> u64 {
    page["total_linked"].as_u64().unwrap_or_default()
}

/// Runs futures concurrently and returns their outputs in order.
async fn futures_join<F: std::future::Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut set = Vec::new();
    for f in futures {
        set.push(f);
    }
    let mut out = Vec::with_capacity(set.len());
    // Poll them all together: a join without an extra crate.
    let mut pinned: Vec<_> = set.into_iter().map(Box::pin).collect();
    let mut results: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, r) in pinned.iter_mut().zip(results.iter_mut()) {
            if r.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *r = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.extend(results.into_iter().flatten());
    out
}

/// `feedgraph check` on the data directory (server stopped) must pass.
fn check(cycle: usize, data_dir: &Path) {
    let out = Command::new(env!("CARGO_BIN_EXE_feedgraph"))
        .arg("--data-dir")
        .arg(data_dir)
        .arg("check")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cycle {cycle}: feedgraph check failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_loss_keeps_every_acknowledged_write() {
    common::sled_only!("sled's fsyncs on a file system that forgets unsynced writes");
    let cycles: usize = std::env::var("POWER_LOSS_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let Some((root, mut fs)) = mounted() else {
        return;
    };
    let data_dir = root.path().join("mnt/data");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let acked = Arc::new(Mutex::new(Acked::default()));
    let mut tokens: Option<Arc<Tokens>> = None;
    let mut lost = lazyfs::CrashReport::default();
    for cycle in 0..=cycles {
        if cycle > 0 {
            check(cycle, &data_dir);
        }
        let mut server = Server::start(&data_dir);
        server.ready(&http).await;
        let tokens = tokens
            .get_or_insert_with(|| {
                let config = feedgraph::config::Config {
                    data_dir: data_dir.clone(),
                    ..feedgraph::config::Config::default()
                };
                let t = |sub, role| mint(&config, ORG, sub, &[role], 24 * 3600).unwrap();
                Arc::new(Tokens {
                    user: t("ursula", Role::User),
                    trainer: t("tina", Role::Trainer),
                    admin: t("ada", Role::Admin),
                })
            })
            .clone();
        if cycle > 0 {
            // No client runs now: take the record out rather than hold its lock.
            let record = std::mem::take(&mut *acked.lock());
            verify(cycle, &server, &http, &tokens, &record).await;
            *acked.lock() = record;
        }
        if cycle == cycles {
            server.kill();
            break;
        }
        // Drive every write path, then pull the plug mid-flight.
        let stop = Arc::new(AtomicBool::new(false));
        let base = Arc::new(server.base.clone());
        let clients: Vec<_> = (0..CLIENTS)
            .map(|n| {
                tokio::spawn(client(
                    n,
                    cycle,
                    http.clone(),
                    base.clone(),
                    tokens.clone(),
                    acked.clone(),
                    stop.clone(),
                ))
            })
            .collect();
        let run = rand::rng().random_range(300..900);
        tokio::time::sleep(Duration::from_millis(run)).await;
        server.kill();
        stop.store(true, Ordering::Relaxed);
        for c in clients {
            c.await.unwrap();
        }
        let report = fs.crash().unwrap();
        eprintln!("cycle {cycle}: the crash dropped {report:?}");
        lost.files_reverted += report.files_reverted;
        lost.pages_restored += report.pages_restored;
        lost.entries_undone += report.entries_undone;
    }
    let acked = acked.lock();
    let counters = fs.counters();
    eprintln!(
        "{cycles} power losses: acknowledged {:?}; the crashes dropped {lost:?}; the file \
         system saw {counters:?}",
        acked.counts
    );
    for path in [
        "submit",
        "submit (blob)",
        "link",
        "review",
        "adapter create",
        "claim",
        "commit",
        "abort",
        "mark-used",
    ] {
        assert!(
            acked.counts.get(path).copied().unwrap_or_default() > 0,
            "no acknowledged {path}: the test exercised too little"
        );
    }
    assert!(
        lost.files_reverted > 0,
        "no crash dropped any unsynced write: the test proved nothing"
    );
}
