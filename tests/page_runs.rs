//! By-adapter pages served from an adapter run (`service::runs`: a big adapter's items
//! rendered newest first in a scratch file, built once clients page through it) are the
//! stored items: after the run is built, and after a review, a training mark, a link and
//! an erasure, every item of every page is what `GET /feedback/{id}` answers, the walk
//! is the same listing as before the run, and the erased text is in no page and in no
//! run file.

mod common;

use std::time::Duration;

use common::pages::{metric, submit_linked, walk};
use common::server::TestServer;
use feedgraph::http::auth::Role;
use serde_json::{Value, json};

/// Every byte of the run files under the server's data directory (`runs/<pid>/...`), as
/// text.
fn run_files(s: &TestServer) -> String {
    fn read(dir: &std::path::Path, all: &mut String) {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                if e.path().is_dir() {
                    read(&e.path(), all);
                } else if let Ok(bytes) = std::fs::read(e.path()) {
                    all.push_str(&String::from_utf8_lossy(&bytes));
                }
            }
        }
    }
    let mut all = String::new();
    read(&s.dir.path().join("runs"), &mut all);
    all
}

async fn wait_for_builds(s: &TestServer, at_least: u64) {
    for _ in 0..200 {
        if metric(s, "feedgraph_page_run_builds_total").await >= at_least {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no adapter run was built within 10 s");
}

fn id_of(v: &Value) -> &str {
    v["id"].as_str().unwrap()
}

#[tokio::test]
async fn pages_read_from_a_run_are_the_stored_items_through_changes() {
    let s = TestServer::start_with(|c| {
        c.rate_limit.enabled = false;
        // Nothing kept in memory: every item comes from the run or the store.
        c.pages.cache_bytes = 0;
        c.pages.runs_min_items = 40;
        c.pages.runs_after_reads = 40;
        // Whatever the machine's free disk: the room check has a test of its own.
        c.pages.runs_min_free_bytes = 0;
    })
    .await;
    let user = s.token("acme", "ana", Role::User);
    let admin = s.token("acme", "root", Role::Admin);
    let trainer = s.token("acme", "tim", Role::Trainer);
    // 60 items of `big`, one in three of the org, and an adapter too small for a run.
    let mut big = Vec::new();
    for i in 0..180 {
        let adapter = match i % 3 {
            0 => "big",
            1 if i < 60 => "small",
            _ => "other",
        };
        let body = json!({"type": if i % 6 == 0 { "negative" } else { "positive" },
                          "question": format!("Question {i}: the plum-{i}-phrase lives here"),
                          "answer": format!("An answer long enough to pass the rules, number {i}"),
                          "correction": if i % 6 == 0 { Some("A corrected answer") } else { None },
                          "adapter_id": adapter});
        let (st, b) = s.post(&user, "/feedback", &body).await;
        assert_eq!(st, 201, "{b}");
        if adapter == "big" {
            big.push(b["id"].as_str().unwrap().to_owned());
        }
    }
    big.reverse();
    let path = "/feedback/by-adapter/big?limit=7";
    // Read from the store: the walk itself makes the run due.
    let (before, _) = walk(&s, &user, path).await;
    assert_eq!(before.iter().map(id_of).collect::<Vec<_>>(), big);
    assert_eq!(metric(&s, "feedgraph_page_run_hits_total").await, 0);
    wait_for_builds(&s, 1).await;
    assert!(metric(&s, "feedgraph_page_run_slots").await >= 60);
    assert!(run_files(&s).contains("plum-0-phrase"));

    // The same listing, now from the run.
    let (after, _) = walk(&s, &user, path).await;
    assert_eq!(after, before);
    assert!(metric(&s, "feedgraph_page_run_hits_total").await >= 60);
    let (small, _) = walk(&s, &user, "/feedback/by-adapter/small?limit=100").await;
    assert_eq!(small.len(), 20);

    // A review, a training mark and a link: the pages show each item as stored.
    let (reviewed, used, linked) = (&big[1], &big[2], &big[3]);
    let (st, b) = s
        .patch(
            &admin,
            &format!("/feedback/{reviewed}"),
            &json!({"validation_status": "rejected", "reason": "checked"}),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    let (st, b) = s
        .post(&trainer, "/feedback/mark-used", &json!({"ids": [used]}))
        .await;
    assert_eq!(st, 200, "{b}");
    let (st, b) = s
        .post(
            &user,
            &format!("/feedback/{linked}/link"),
            &json!({"adapter_id": "small", "metadata": {"why": "moved"}}),
        )
        .await;
    assert_eq!(st, 201, "{b}");
    let hits = metric(&s, "feedgraph_page_run_hits_total").await;
    let (now, _) = walk(&s, &user, path).await;
    let find = |id: &str| now.iter().find(|v| id_of(v) == id).unwrap().clone();
    assert_eq!(find(reviewed)["validation_status"], "rejected");
    assert_eq!(find(used)["used_for_training"], true);
    assert_eq!(now.len(), 60);
    let served = metric(&s, "feedgraph_page_run_hits_total").await - hits;
    assert_eq!(
        served, 57,
        "the three changed items come from the store, the others from the run"
    );

    // An erasure: the text is in no page and no longer in the run file.
    let erased = &big[5];
    let n = big.len() - 1 - 5;
    let phrase = format!("plum-{}-phrase", n * 3);
    assert!(run_files(&s).contains(&phrase), "{phrase} was in the run");
    let (st, b) = s
        .post(&admin, &format!("/feedback/{erased}/erase"), &json!({}))
        .await;
    assert!(st == 200 || st == 201, "{st} {b}");
    assert!(
        !run_files(&s).contains(&phrase),
        "the run still holds the erased text"
    );
    let (now, bodies) = walk(&s, &user, path).await;
    assert!(!bodies.contains(&phrase));
    assert_eq!(
        now.iter().find(|v| id_of(v) == erased).unwrap()["question"],
        ""
    );
    s.stop().await;
}

/// With runs off (`pages.runs_min_items = 0`) nothing is built or written, and the pages
/// are the same.
#[tokio::test]
async fn no_run_is_built_when_runs_are_off() {
    let s = TestServer::start_with(|c| {
        c.rate_limit.enabled = false;
        c.pages.cache_bytes = 0;
        c.pages.runs_min_items = 0;
        c.pages.runs_after_reads = 1;
    })
    .await;
    let user = s.token("acme", "ana", Role::User);
    common::pages::submit_linked(&s, &user, "ad-1", 30).await;
    let (first, _) = walk(&s, &user, "/feedback/by-adapter/ad-1?limit=4").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (again, _) = walk(&s, &user, "/feedback/by-adapter/ad-1?limit=4").await;
    assert_eq!(first, again);
    assert_eq!(first.len(), 30);
    assert_eq!(metric(&s, "feedgraph_page_run_builds_total").await, 0);
    assert!(run_files(&s).is_empty());
    s.stop().await;
}

/// Submits `n` items of org `token`'s linked to `adapter`, then walks its pages once (10
/// items a page), which makes its run due.
async fn fill_and_walk(s: &TestServer, token: &str, adapter: &str, n: usize) {
    submit_linked(s, token, adapter, n).await;
    let (items, _) = walk(
        s,
        token,
        &format!("/feedback/by-adapter/{adapter}?limit=10"),
    )
    .await;
    assert_eq!(items.len(), n);
}

/// Runs never take the room the store needs: with less free space than
/// `pages.runs_min_free_bytes` nothing is built or written.
#[tokio::test]
async fn no_run_is_built_without_room_on_the_disk() {
    let s = TestServer::start_with(|c| {
        c.rate_limit.enabled = false;
        c.pages.cache_bytes = 0;
        c.pages.runs_min_items = 20;
        c.pages.runs_after_reads = 20;
        c.pages.runs_min_free_bytes = 1 << 62;
    })
    .await;
    let user = s.token("acme", "ana", Role::User);
    fill_and_walk(&s, &user, "ad-1", 40).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(metric(&s, "feedgraph_page_run_builds_total").await, 0);
    assert!(run_files(&s).is_empty());
    s.stop().await;
}

/// `pages.runs_max_bytes` bounds the runs of all orgs together: a second org's run is cut
/// short to what the first left, and still serves the stored items.
#[tokio::test]
async fn runs_of_all_orgs_stay_within_runs_max_bytes() {
    const MAX: u64 = 40_000;
    let s = TestServer::start_with(|c| {
        c.rate_limit.enabled = false;
        c.pages.cache_bytes = 0;
        c.pages.runs_min_items = 20;
        c.pages.runs_after_reads = 20;
        c.pages.runs_max_bytes = MAX;
        // Whatever the machine's free disk: the room check has a test of its own.
        c.pages.runs_min_free_bytes = 0;
    })
    .await;
    let acme = s.token("acme", "ana", Role::User);
    let other = s.token("globex", "gus", Role::User);
    // About 500 bytes an item: acme's run takes about 30 kB, globex's is cut short.
    fill_and_walk(&s, &acme, "ad-1", 60).await;
    wait_for_builds(&s, 1).await;
    let first = metric(&s, "feedgraph_page_run_bytes").await;
    assert!(first > 20_000 && first <= MAX, "{first}");
    fill_and_walk(&s, &other, "ad-1", 60).await;
    wait_for_builds(&s, 2).await;
    let both = metric(&s, "feedgraph_page_run_bytes").await;
    assert!(both > first && both <= MAX, "{first} then {both}");
    let on_disk: u64 = std::fs::read_dir(s.dir.path().join("runs"))
        .unwrap()
        .flatten()
        .flat_map(|d| std::fs::read_dir(d.path()).unwrap().flatten())
        .map(|f| f.metadata().unwrap().len())
        .sum();
    assert_eq!(on_disk, both);
    // The cut-short run serves what it holds; the rest comes from the store.
    let (items, _) = walk(&s, &other, "/feedback/by-adapter/ad-1?limit=10").await;
    assert_eq!(items.len(), 60);
    // Not built again and again for being short.
    let builds = metric(&s, "feedgraph_page_run_builds_total").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(metric(&s, "feedgraph_page_run_builds_total").await, builds);
    s.stop().await;
}
