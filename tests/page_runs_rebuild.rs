//! An adapter run is written again only for what the module names (`service::runs`): an
//! adapter joining or leaving, a quarter of its slots dead, or its adapters' item counts
//! moved by a quarter. Not when:
//!
//! - the run was cut short by `pages.runs_max_bytes` (it then never holds every adapter it
//!   was built for; a run compared by the adapters it holds was written twice a second,
//!   forever);
//! - two paged adapters of about the same size swap places when one of them gets a new
//!   item (a run compared in order was written again for each such item).

mod common;

use std::time::Duration;

use common::pages::{metric, submit_linked, walk};
use common::server::TestServer;
use feedgraph::http::auth::Role;

async fn builds(s: &TestServer) -> u64 {
    metric(s, "feedgraph_page_run_builds_total").await
}

/// The build count once it stopped moving for 1.5 s (at most 20 s).
async fn settled_builds(s: &TestServer) -> u64 {
    let mut last = builds(s).await;
    for _ in 0..13 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let now = builds(s).await;
        if now == last && now > 0 {
            return now;
        }
        last = now;
    }
    last
}

#[tokio::test]
async fn a_run_cut_short_by_runs_max_bytes_is_not_written_again_and_again() {
    let s = TestServer::start_with(|c| {
        c.rate_limit.enabled = false;
        c.pages.cache_bytes = 0;
        c.pages.runs_min_items = 20;
        c.pages.runs_after_reads = 20;
        // Less than the first adapter's 30 items (about 500 bytes each): the run stops
        // after it and never holds the second.
        c.pages.runs_max_bytes = 4096;
        // Whatever the machine's free disk: the room check has a test of its own.
        c.pages.runs_min_free_bytes = 0;
    })
    .await;
    let user = s.token("acme", "ana", Role::User);
    submit_linked(&s, &user, "first", 30).await;
    submit_linked(&s, &user, "second", 30).await;
    assert_eq!(
        walk(&s, &user, "/feedback/by-adapter/first?limit=10")
            .await
            .0
            .len(),
        30
    );
    assert_eq!(
        walk(&s, &user, "/feedback/by-adapter/second?limit=10")
            .await
            .0
            .len(),
        30
    );
    // The first build, and the one for the second adapter joining.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let before = builds(&s).await;
    assert!(before >= 1, "no run was built");
    // Nothing is written or read from here on.
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let after = builds(&s).await;
    assert!(
        after - before <= 1,
        "the run was written {} more times in 3 s with nothing changed (runs_max_bytes cut \
         it short, so `adapters` never equals `wanted` and `stale` is always true)",
        after - before
    );
    s.stop().await;
}

#[tokio::test]
async fn one_new_item_does_not_rewrite_the_whole_run() {
    let s = TestServer::start_with(|c| {
        c.rate_limit.enabled = false;
        c.pages.cache_bytes = 0;
        c.pages.runs_min_items = 20;
        c.pages.runs_after_reads = 20;
        // Whatever the machine's free disk: the room check has a test of its own.
        c.pages.runs_min_free_bytes = 0;
    })
    .await;
    let user = s.token("acme", "ana", Role::User);
    submit_linked(&s, &user, "left", 30).await;
    submit_linked(&s, &user, "right", 30).await;
    assert_eq!(
        walk(&s, &user, "/feedback/by-adapter/left?limit=10")
            .await
            .0
            .len(),
        30
    );
    assert_eq!(
        walk(&s, &user, "/feedback/by-adapter/right?limit=10")
            .await
            .0
            .len(),
        30
    );
    let settled = settled_builds(&s).await;
    assert!(settled >= 1, "no run was built");
    // Four new items, one at a time, each 1/60 of the run: no slot dies and the counts
    // move by 4/60, far from a quarter. Each makes the other adapter the bigger one.
    for side in ["right", "left", "right", "left"] {
        submit_linked(&s, &user, side, 1).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    let after = builds(&s).await;
    assert!(
        after - settled <= 1,
        "{} whole-run rewrites for 4 new items (the adapters swapped places in `wanted`, \
         which `stale` compares in order)",
        after - settled
    );
    s.stop().await;
}
