//! Paging under writes (issue 18): through the real server, every paged list walked with
//! random page sizes while random writes land between the pages shows every item that was
//! in it at the start exactly once, newest first, and only full pages before the last.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::server::TestServer;
use feedgraph::http::auth::Role;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Value, json};

/// Adapters: `a0` and `a1` are roots, `a2` derives from `a1`.
const ADAPTERS: [&str; 3] = ["a0", "a1", "a2"];

/// One item as submitted.
#[derive(Debug, Clone)]
struct Item {
    adapter: Option<usize>,
    positive: bool,
    /// Negative items without a comment are flagged, so reviews have work.
    comment: bool,
    model: usize,
    session: usize,
}

/// A write between two pages.
#[derive(Debug, Clone)]
enum Write {
    Submit(Item),
    /// Links the n-th item (modulo how many there are) to an adapter.
    Link(usize, usize),
    /// Approves the n-th item (refused unless it is flagged: that is fine).
    Review(usize),
    /// Marks the n-th item used.
    MarkUsed(usize),
    /// Claims a batch of up to 3 items.
    Claim,
}

#[derive(Debug, Clone)]
struct Case {
    items: Vec<Item>,
    /// Page sizes, used in turn.
    limits: Vec<usize>,
    /// Writes before each page, used in turn.
    writes: Vec<Vec<Write>>,
}

fn item() -> impl Strategy<Value = Item> {
    (
        proptest::option::of(0..ADAPTERS.len()),
        any::<bool>(),
        any::<bool>(),
        0..2usize,
        0..2usize,
    )
        .prop_map(|(adapter, positive, comment, model, session)| Item {
            adapter,
            positive,
            comment,
            model,
            session,
        })
}

fn write() -> impl Strategy<Value = Write> {
    prop_oneof![
        item().prop_map(Write::Submit),
        (any::<usize>(), 0..ADAPTERS.len()).prop_map(|(i, a)| Write::Link(i, a)),
        any::<usize>().prop_map(Write::Review),
        any::<usize>().prop_map(Write::MarkUsed),
        Just(Write::Claim),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    (
        proptest::collection::vec(item(), 1..25),
        proptest::collection::vec(1..8usize, 1..6),
        proptest::collection::vec(proptest::collection::vec(write(), 0..3), 1..6),
    )
        .prop_map(|(items, limits, writes)| Case {
            items,
            limits,
            writes,
        })
}

/// The lists walked, as paths with their query (each may take `limit` and `cursor`).
/// Their filters are ones no write can take an item out of.
const LISTS: [&str; 8] = [
    "/feedback",
    "/feedback?type=positive",
    "/feedback?adapter=a1",
    "/feedback?model=m1",
    "/feedback?session=s0",
    "/feedback/by-adapter/a1",
    "/feedback/by-adapter/a1?include_descendants=true",
    "/feedback/by-adapter/a2",
];

/// `list` with more query parameters.
fn with(list: &str, params: &str) -> String {
    let sep = if list.contains('?') { '&' } else { '?' };
    format!("{list}{sep}{params}")
}

struct Org {
    user: String,
    admin: String,
    trainer: String,
    /// Every item submitted so far, in submit order.
    ids: Vec<String>,
}

async fn submit(s: &TestServer, org: &mut Org, it: &Item) {
    let n = org.ids.len();
    let mut body = json!({
        "type": if it.positive { "positive" } else { "negative" },
        "question": format!("Paging question number {n}?"),
        "answer": format!("Paging answer number {n}."),
        "model_version": format!("m{}", it.model),
        "session_id": format!("s{}", it.session),
    });
    if let Some(a) = it.adapter {
        body["adapter_id"] = json!(ADAPTERS[a]);
    }
    if it.comment {
        body["comment"] = json!("A comment on the answer.");
    }
    let (status, r) = s.post(&org.user, "/feedback", &body).await;
    assert_eq!(status, 201, "{r}");
    org.ids.push(r["id"].as_str().unwrap().to_owned());
}

async fn apply(s: &TestServer, org: &mut Org, w: &Write) {
    let pick = |n: usize| org.ids[n % org.ids.len()].clone();
    match w {
        Write::Submit(it) => submit(s, org, it).await,
        Write::Link(i, a) => {
            let (status, r) = s
                .post(
                    &org.user,
                    &format!("/feedback/{}/link", pick(*i)),
                    &json!({"adapter_id": ADAPTERS[*a]}),
                )
                .await;
            assert!(status == 200 || status == 201, "{r}");
        }
        Write::Review(i) => {
            let (status, r) = s
                .patch(
                    &org.admin,
                    &format!("/feedback/{}", pick(*i)),
                    &json!({"validation_status": "approved", "reason": "paging test"}),
                )
                .await;
            assert!(status < 500, "{r}");
        }
        Write::MarkUsed(i) => {
            let (status, r) = s
                .post(
                    &org.trainer,
                    "/feedback/mark-used",
                    &json!({"ids": [pick(*i)]}),
                )
                .await;
            assert!(status < 500, "{r}");
        }
        Write::Claim => {
            let (status, r) = s
                .post(&org.trainer, "/training/batches", &json!({"limit": 3}))
                .await;
            assert!(status == 200 || status == 201, "{r}");
        }
    }
}

fn page_ids(page: &Value) -> Vec<String> {
    page["feedback"]
        .as_array()
        .unwrap_or_else(|| panic!("no feedback in {page}"))
        .iter()
        .map(|f| f["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn run_case(s: &TestServer, org_name: &str, case: &Case) -> Result<(), TestCaseError> {
    let mut org = Org {
        user: s.token(org_name, "una", Role::User),
        admin: s.token(org_name, "ada", Role::Admin),
        trainer: s.token(org_name, "tina", Role::Trainer),
        ids: Vec::new(),
    };
    // The adapters first, so that every list names a known adapter.
    for (id, parent) in [("a0", None), ("a1", None), ("a2", Some("a1"))] {
        let (status, r) = s
            .post(
                &org.admin,
                "/adapters",
                &json!({"id": id, "derived_from": parent}),
            )
            .await;
        prop_assert_eq!(status, 201, "{}", r);
    }
    for it in &case.items {
        submit(s, &mut org, it).await;
    }
    let mut turn = 0usize;
    for list in LISTS {
        let (status, all) = s.get(&org.user, &with(list, "limit=1000")).await;
        prop_assert_eq!(status, 200, "{}: {}", list, all);
        let at_start = page_ids(&all);
        let mut seen: Vec<String> = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            for w in &case.writes[turn % case.writes.len()] {
                apply(s, &mut org, w).await;
            }
            let limit = case.limits[turn % case.limits.len()];
            turn += 1;
            let url = match &cursor {
                Some(c) => with(list, &format!("limit={limit}&cursor={c}")),
                None => with(list, &format!("limit={limit}")),
            };
            let (status, page) = s.get(&org.user, &url).await;
            prop_assert_eq!(status, 200, "{}: {}", url, page);
            let ids = page_ids(&page);
            prop_assert!(ids.len() <= limit, "{}: {} items", url, ids.len());
            seen.extend(ids.iter().cloned());
            match page["next_cursor"].as_str() {
                Some(c) => {
                    prop_assert_eq!(ids.len(), limit, "{}: a page before the last is full", url);
                    prop_assert_eq!(Some(c), ids.last().map(String::as_str));
                    cursor = Some(c.to_owned());
                }
                None => break,
            }
            prop_assert!(
                seen.len() <= org.ids.len(),
                "{}: the walk does not end",
                list
            );
        }
        // Newest first (ids are time-ordered), so strictly decreasing: in order, and no
        // item twice.
        for pair in seen.windows(2) {
            prop_assert!(
                pair[0] > pair[1],
                "{}: {} before {}",
                list,
                pair[0],
                pair[1]
            );
        }
        let seen_set: BTreeSet<&String> = seen.iter().collect();
        for id in &at_start {
            prop_assert!(seen_set.contains(id), "{}: {} was missed", list, id);
        }
        // Anything else seen joined the list during the walk (a new link).
        let known: BTreeSet<&String> = org.ids.iter().collect();
        for id in &seen {
            prop_assert!(known.contains(id), "{}: unknown item {}", list, id);
        }
    }
    Ok(())
}

#[test]
fn paging_sees_every_item_once_in_order_whatever_the_writes() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // Syncs are not what this test is about: `flush` durability keeps it quick.
    let server = rt.block_on(TestServer::start_with(|c| {
        c.rate_limit.enabled = false;
        c.storage.durability = feedgraph::store::Durability::Flush;
    }));
    // Each case (and each shrinking step) gets an org of its own.
    let orgs = AtomicUsize::new(0);
    let mut runner = TestRunner::new(Config {
        cases: 64,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&case(), |case| {
        let org = format!("paging{}", orgs.fetch_add(1, Ordering::Relaxed));
        rt.block_on(run_case(&server, &org, &case))
    });
    rt.block_on(server.stop());
    if let Err(e) = result {
        panic!("{e}");
    }
}
