//! By-adapter and list pages served from rendered items kept between pages (`service::item_cache`)
//! never show an item as it was before a change: after a review, a training mark, a link
//! and an erasure, every item of every page is the item `GET /feedback/{id}` answers, a
//! page asked twice (the second time from the kept items) is the same bytes, and the text
//! of an erased item is in no page and no longer kept.

mod common;

use common::pages::metric;
use common::server::TestServer;
use feedgraph::http::auth::Role;
use feedgraph::service::ByAdapterQuery;
use feedgraph::service::erasure::EraseRequest;
use feedgraph::store::ErasureScope;
use serde_json::{Value, json};

async fn raw(s: &TestServer, token: &str, path: &str) -> (u16, String) {
    let r = s
        .client
        .get(s.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.text().await.unwrap())
}

/// Asks for `path` twice: the second answer comes from the kept items and must be the
/// same bytes as the first. Every item must be what `GET /feedback/{id}` answers.
async fn page(s: &TestServer, token: &str, path: &str) -> (String, Value) {
    let (st, first) = raw(s, token, path).await;
    assert_eq!(st, 200, "{path}: {first}");
    let (st, again) = raw(s, token, path).await;
    assert_eq!(st, 200, "{path}: {again}");
    assert_eq!(first, again, "{path} asked twice");
    let v: Value = serde_json::from_str(&first).unwrap();
    for item in v["feedback"].as_array().unwrap() {
        let id = item["id"].as_str().unwrap();
        let (st, one) = s.get(token, &format!("/feedback/{id}")).await;
        assert_eq!(st, 200);
        assert_eq!(item, &one, "{path}: item {id} is not the stored one");
    }
    (first, v)
}

fn item_of<'a>(page: &'a Value, id: &str) -> Option<&'a Value> {
    page["feedback"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == id)
}

#[tokio::test]
async fn kept_items_follow_reviews_marks_links_and_erasures() {
    let s = TestServer::start_with(|c| c.rate_limit.enabled = false).await;
    let user = s.token("acme", "ana", Role::User);
    let admin = s.token("acme", "root", Role::Admin);
    let trainer = s.token("acme", "tim", Role::Trainer);
    for a in [
        json!({"id": "ad-1"}),
        json!({"id": "ad-2", "derived_from": "ad-1"}),
        json!({"id": "ad-3"}),
    ] {
        let (st, b) = s.post(&admin, "/adapters", &a).await;
        assert!(st == 201 || st == 200, "{st} {b}");
    }
    let mut ids = Vec::new();
    for i in 0..6 {
        let body = if i == 0 {
            // Negative with neither correction nor comment: flagged, to be reviewed.
            json!({"type": "negative", "question": "How do I rotate the keys?",
                   "answer": "Run the rotate command twice.", "adapter_id": "ad-1"})
        } else {
            json!({"type": "positive",
                   "question": format!("Question {i}: the tangerine-42 phrase lives here"),
                   "answer": format!("An answer long enough to pass the rules, number {i}"),
                   "adapter_id": if i == 5 { "ad-2" } else { "ad-1" }})
        };
        let (st, b) = s.post(&user, "/feedback", &body).await;
        assert_eq!(st, 201, "{b}");
        ids.push(b["id"].as_str().unwrap().to_owned());
    }
    let (flagged, used, linked, erased) = (&ids[0], &ids[1], &ids[2], &ids[3]);
    let ad1 = "/feedback/by-adapter/ad-1?limit=100";
    let family = "/feedback/by-adapter/ad-1?limit=100&include_descendants=true";
    let (_, p) = page(&s, &user, ad1).await;
    assert_eq!(p["count"], 5);
    assert_eq!(
        item_of(&p, flagged).unwrap()["validation_status"],
        "flagged"
    );
    let (_, p) = page(&s, &user, family).await;
    assert_eq!(p["count"], 6);
    let list = "/feedback?limit=100";
    let (_, p) = page(&s, &user, list).await;
    assert_eq!(p["count"], 6);
    assert!(
        metric(&s, "feedgraph_page_item_cache_hits_total").await >= 11,
        "the second asks were served from kept items"
    );

    // A review changes the item's status.
    let (st, b) = s
        .patch(
            &admin,
            &format!("/feedback/{flagged}"),
            &json!({"validation_status": "approved", "reason": "checked"}),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    for path in [ad1, family, list] {
        let (_, p) = page(&s, &user, path).await;
        assert_eq!(
            item_of(&p, flagged).unwrap()["validation_status"],
            "approved"
        );
    }

    // A training mark.
    let (st, b) = s
        .post(&trainer, "/feedback/mark-used", &json!({"ids": [used]}))
        .await;
    assert_eq!(st, 200, "{b}");
    for path in [ad1, list] {
        let (_, p) = page(&s, &user, path).await;
        assert_eq!(item_of(&p, used).unwrap()["used_for_training"], true);
    }
    let (_, p) = page(&s, &user, &format!("{ad1}&unused=true")).await;
    assert!(item_of(&p, used).is_none());
    assert_eq!(p["count"], 4);

    // A link to another adapter: the item shows up there as stored.
    let (st, b) = s
        .post(
            &user,
            &format!("/feedback/{linked}/link"),
            &json!({"adapter_id": "ad-3", "metadata": {"why": "moved"}}),
        )
        .await;
    assert_eq!(st, 201, "{b}");
    let (_, p) = page(&s, &user, "/feedback/by-adapter/ad-3").await;
    assert_eq!(p["count"], 1);
    assert!(item_of(&p, linked).is_some());
    page(&s, &user, family).await;

    // An erasure: the item is a tombstone everywhere, its text in no page.
    let before = metric(&s, "feedgraph_page_item_cache_invalidations_total").await;
    let (st, b) = s
        .post(&admin, &format!("/feedback/{erased}/erase"), &json!({}))
        .await;
    assert!(st == 200 || st == 201, "{st} {b}");
    assert!(metric(&s, "feedgraph_page_item_cache_invalidations_total").await > before);
    let erased_q = "Question 3: the tangerine-42 phrase lives here";
    for path in [ad1, family, list] {
        let (text, p) = page(&s, &user, path).await;
        let tomb = item_of(&p, erased).unwrap();
        assert!(tomb["erased_at"].is_u64(), "{tomb}");
        assert_eq!(tomb["question"], "");
        assert!(!text.contains(erased_q), "{path} shows the erased text");
    }

    // Pages of two, cursor after cursor, are the whole listing in order.
    let (_, whole) = page(&s, &user, family).await;
    let want: Vec<&Value> = whole["feedback"].as_array().unwrap().iter().collect();
    let mut got: Vec<Value> = Vec::new();
    let pairs = "/feedback/by-adapter/ad-1?limit=2&include_descendants=true";
    let mut path = pairs.to_owned();
    loop {
        let (_, p) = page(&s, &user, &path).await;
        got.extend(p["feedback"].as_array().unwrap().iter().cloned());
        match p["next_cursor"].as_str() {
            Some(c) => path = format!("{pairs}&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(got.iter().collect::<Vec<_>>(), want);
    s.stop().await;
}

/// With nothing kept (`pages.cache_bytes = 0`) and nothing answered on the HTTP thread,
/// pages are what they were.
#[tokio::test]
async fn pages_without_the_cache_are_the_same() {
    let s = TestServer::start_with(|c| {
        c.rate_limit.enabled = false;
        c.pages.cache_bytes = 0;
        c.pages.inline_rows = 0;
    })
    .await;
    let user = s.token("acme", "ana", Role::User);
    common::pages::submit_linked(&s, &user, "ad-1", 3).await;
    let (_, p) = page(&s, &user, "/feedback/by-adapter/ad-1?limit=2").await;
    assert_eq!(p["count"], 2);
    assert_eq!(metric(&s, "feedgraph_page_item_cache_hits_total").await, 0);
    assert_eq!(metric(&s, "feedgraph_page_item_cache_entries").await, 0);
    s.stop().await;
}

/// After an erasure the cache holds the item's old rendering at no version.
#[test]
fn an_erased_item_is_no_longer_kept() {
    let dir = tempfile::tempdir().unwrap();
    let s = common::open(dir.path());
    let actor = common::actor("acme");
    let mut new = common::item(
        "What is the tangerine-42 phrase?",
        "It is a secret that must be erased.",
    );
    new.adapter_id = Some("ad-1".into());
    let f = s.submit(&actor, new).unwrap();
    let q = ByAdapterQuery::default();
    let render = feedgraph::http::render::write_feedback;
    let page = s.by_adapter_rendered("acme", "ad-1", &q, render).unwrap();
    assert_eq!(page.items.len(), 1);
    let kept = s.item_cache().get("acme", &f.id, f.version).unwrap();
    assert!(String::from_utf8_lossy(&kept.bytes).contains("tangerine-42"));
    s.erase(
        &actor,
        &EraseRequest {
            scope: ErasureScope::Item,
            value: f.id.clone(),
        },
    )
    .unwrap();
    for v in 0..=f.version + 5 {
        if let Some(kept) = s.item_cache().get("acme", &f.id, v) {
            assert!(!String::from_utf8_lossy(&kept.bytes).contains("tangerine-42"));
        }
    }
    assert_eq!(s.item_cache().stats().entries, 0);
    let page = s.by_adapter_rendered("acme", "ad-1", &q, render).unwrap();
    assert!(!String::from_utf8_lossy(&page.items[0]).contains("tangerine-42"));
}

/// The ids of every page of `path` in page order ([`common::pages::walk`]: every item
/// must be what `GET /feedback/{id}` answers).
async fn walk(s: &TestServer, token: &str, path: &str) -> Vec<String> {
    let (items, _) = common::pages::walk(s, token, path).await;
    items
        .iter()
        .map(|v| v["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Pages read from the store (nothing kept), whose records lie next to each other (every
/// item of the org) or far apart (one in seven, one in fifty), at several page sizes,
/// walked with their cursors: each item is the stored one, none is missing or repeated.
#[tokio::test]
async fn close_and_scattered_pages_read_from_the_store_are_the_stored_items() {
    let s = TestServer::start_with(|c| {
        c.rate_limit.enabled = false;
        c.pages.cache_bytes = 0;
        c.pages.inline_rows = 0;
    })
    .await;
    let user = s.token("acme", "ana", Role::User);
    let other = s.token("acme2", "bo", Role::User);
    let mut all = Vec::new();
    let (mut sevenths, mut fiftieths) = (Vec::new(), Vec::new());
    for i in 0..260 {
        let body = json!({"type": "positive", "question": format!("Question number {i} here"),
                          "answer": format!("An answer long enough, number {i}"),
                          "adapter_id": "every", "metadata": {"n": i}});
        let (st, b) = s.post(&user, "/feedback", &body).await;
        assert_eq!(st, 201, "{b}");
        let id = b["id"].as_str().unwrap().to_owned();
        for (linked, adapter, list) in [
            (i % 7 == 0, "seventh", &mut sevenths),
            (i % 50 == 3, "fiftieth", &mut fiftieths),
        ] {
            if linked {
                let path = format!("/feedback/{id}/link");
                let (st, b) = s.post(&user, &path, &json!({"adapter_id": adapter})).await;
                assert_eq!(st, 201, "{b}");
                list.push(id.clone());
            }
        }
        // Another org's records between this org's in time (never in its pages).
        if i % 3 == 0 {
            let (st, b) = s.post(&other, "/feedback", &body).await;
            assert_eq!(st, 201, "{b}");
        }
        all.push(id);
    }
    for want in [&mut all, &mut sevenths, &mut fiftieths] {
        want.reverse();
    }
    for limit in [100, 7, 1000] {
        for (adapter, want) in [
            ("every", &all),
            ("seventh", &sevenths),
            ("fiftieth", &fiftieths),
        ] {
            let path = format!("/feedback/by-adapter/{adapter}?limit={limit}");
            let got = walk(&s, &user, &path).await;
            assert_eq!(&got, want, "{adapter}, limit {limit}");
        }
        let got = walk(&s, &user, &format!("/feedback?limit={limit}")).await;
        assert_eq!(got, all, "list, limit {limit}");
    }
    s.stop().await;
}

/// A client walking a listing with its cursors does not fill the cache with items it will
/// not ask for again: an item read for a page that continues a cursor is kept only when
/// the page is read again; an adapter's first page is kept at once.
#[tokio::test]
async fn a_cursor_walk_keeps_its_items_only_when_a_page_is_read_again() {
    let s = TestServer::start_with(|c| c.rate_limit.enabled = false).await;
    let user = s.token("acme", "ana", Role::User);
    common::pages::submit_linked(&s, &user, "ad-1", 30).await;
    let entries = "feedgraph_page_item_cache_entries";
    let (_, first) = page(&s, &user, "/feedback/by-adapter/ad-1?limit=10").await;
    assert_eq!(
        metric(&s, entries).await,
        10,
        "the first page is kept at once"
    );
    let cursor = first["next_cursor"].as_str().unwrap();
    let second = format!("/feedback/by-adapter/ad-1?limit=10&cursor={cursor}");
    let (st, once) = raw(&s, &user, &second).await;
    assert_eq!(st, 200);
    assert_eq!(metric(&s, entries).await, 10, "a walk's page is not kept");
    assert_eq!(
        metric(&s, "feedgraph_page_item_cache_passed_over_total").await,
        10
    );
    // Read again: kept now, and served from the cache the time after.
    let (_, twice) = raw(&s, &user, &second).await;
    assert_eq!(metric(&s, entries).await, 20);
    let hits = metric(&s, "feedgraph_page_item_cache_hits_total").await;
    let (_, thrice) = raw(&s, &user, &second).await;
    assert_eq!(
        metric(&s, "feedgraph_page_item_cache_hits_total").await,
        hits + 10
    );
    assert_eq!(once, twice);
    assert_eq!(once, thrice);
    s.stop().await;
}
