//! Links written into the stored record in place (the edge appended to the stored bytes,
//! the record's other edges neither decoded nor encoded again), against a real store:
//! many edges on one item read back in order with one history version each, before and
//! after a reopen; a record in an older format is linked through its migration and then
//! in place; a repeated link takes no sync when nothing is pending; and an answer "it
//! existed" leaves the edge in the graph even if the request that made it has not put it
//! there.

mod common;

use common::{actor, item, open};
use feedgraph::model::{ChangeAction, FeedbackLink, LinkSource, Metadata};
use feedgraph::service::{ByAdapterQuery, Service};
use feedgraph::store::{FeedbackRecord, codec};

/// The ids listed under `adapter` by the graph (first page of up to 1000).
fn listed(s: &Service, adapter: &str) -> Vec<String> {
    let q = ByAdapterQuery {
        limit: Some(1000),
        ..ByAdapterQuery::default()
    };
    match s.by_adapter("acme", adapter, &q) {
        Ok(page) => page.feedback.into_iter().map(|f| f.id).collect(),
        Err(_) => Vec::new(),
    }
}

fn adapters_of(s: &Service, id: &str) -> Vec<String> {
    s.links_of("acme", id)
        .unwrap()
        .into_iter()
        .map(|l| l.adapter_id)
        .collect()
}

#[test]
fn many_links_on_one_item_read_back_in_order_with_a_version_each() {
    let dir = tempfile::tempdir().unwrap();
    let names: Vec<String> = (0..40).map(|n| format!("lora_{n:02}")).collect();
    let id = {
        let s = open(dir.path());
        let mut new = item(
            "Which adapter answered?",
            "Many of them, one after another.",
        );
        new.adapter_id = Some("first_lora".into());
        let fb = s.submit(&actor("acme"), new).unwrap();
        for (n, name) in names.iter().enumerate() {
            let mut meta = serde_json::Map::new();
            if n.is_multiple_of(3) {
                meta.insert("confidence".into(), serde_json::json!(n));
            }
            let out = s
                .link(&actor("acme"), &fb.id, Some(name.clone()), Some(meta))
                .unwrap();
            assert!(out.created);
            // The graph shows the edge as soon as the call returns.
            assert_eq!(listed(&s, name), vec![fb.id.clone()], "{name}");
            let again = s
                .link(&actor("acme"), &fb.id, Some(name.clone()), None)
                .unwrap();
            assert!(!again.created);
            assert_eq!(again.link, out.link);
        }
        let got = s.get("acme", &fb.id).unwrap();
        assert_eq!(got.version, 1 + names.len() as u64);
        fb.id
    };
    // After a reopen the graph is rebuilt from the stored records alone.
    let s = open(dir.path());
    let mut want = vec!["first_lora".to_owned()];
    want.extend(names.iter().cloned());
    assert_eq!(adapters_of(&s, &id), want);
    let links = s.links_of("acme", &id).unwrap();
    for (n, l) in links.iter().skip(1).enumerate() {
        assert_eq!(l.source, LinkSource::Manual);
        assert_eq!(
            l.metadata.0.get("confidence"),
            n.is_multiple_of(3).then(|| serde_json::json!(n)).as_ref(),
            "{l:?}"
        );
    }
    for name in &names {
        assert_eq!(listed(&s, name), vec![id.clone()], "{name}");
    }
    let history = s.history("acme", &id).unwrap();
    assert_eq!(history.len(), 1 + names.len());
    for (v, h) in history.iter().enumerate().skip(1) {
        assert_eq!(h.version, v as u64 + 1);
        assert_eq!(h.action, ChangeAction::Link);
        let linked = h.changes.iter().find(|c| c.field == "links").unwrap();
        assert_eq!(
            linked.new.as_deref(),
            Some(format!("\"{}\"", names[v - 1]).as_str())
        );
    }
    let got = s.get("acme", &id).unwrap();
    assert_eq!(got.version, 1 + names.len() as u64);
}

#[test]
fn a_record_in_an_older_format_is_linked_through_its_migration_then_in_place() {
    common::sled_only!("plants a record in sled's older format");
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let mut new = item("Old and new?", "Both read.");
    new.adapter_id = Some("old_lora".into());
    let fb = s.submit(&actor("acme"), new).unwrap();
    s.link(&actor("acme"), &fb.id, Some("second_lora".into()), None)
        .unwrap();
    // The same record as a version-3 build wrote it (without the two erasure options).
    let record: FeedbackRecord = s.store().get_record("acme", &fb.id).unwrap().unwrap();
    let mut v3 = codec::encode(&record).unwrap();
    v3.truncate(v3.len() - 2);
    v3[0] = 3;
    let sled = s.sled().unwrap();
    sled.corrupt_feedback_for_tests("acme", &fb.id, &v3)
        .unwrap();
    assert_eq!(
        s.store().get_record("acme", &fb.id).unwrap().unwrap(),
        record
    );
    for name in ["third_lora", "fourth_lora", "fifth_lora"] {
        assert!(
            s.link(&actor("acme"), &fb.id, Some(name.into()), None)
                .unwrap()
                .created
        );
    }
    assert_eq!(
        adapters_of(&s, &fb.id),
        [
            "old_lora",
            "second_lora",
            "third_lora",
            "fourth_lora",
            "fifth_lora"
        ]
    );
    let got = s.get("acme", &fb.id).unwrap();
    assert_eq!(got.version, 5);
    assert_eq!(got.question, "Old and new?");
    assert_eq!(s.history("acme", &fb.id).unwrap().len(), 5);
    drop(s);
    let s = open(dir.path());
    assert_eq!(listed(&s, "fifth_lora"), vec![fb.id.clone()]);
    assert_eq!(listed(&s, "third_lora"), vec![fb.id.clone()]);
}

#[test]
fn a_repeated_link_takes_no_sync_when_nothing_is_pending() {
    common::sled_only!("counts sled sync tickets");
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let fb = s
        .submit(&actor("acme"), item("Once or twice?", "Once."))
        .unwrap();
    assert!(
        s.link(&actor("acme"), &fb.id, Some("once_lora".into()), None)
            .unwrap()
            .created
    );
    let sled = s.sled().unwrap();
    let tickets = sled.tickets_taken_for_tests();
    for _ in 0..3 {
        let again = s
            .link(&actor("acme"), &fb.id, Some("once_lora".into()), None)
            .unwrap();
        assert!(!again.created);
    }
    assert_eq!(
        sled.tickets_taken_for_tests(),
        tickets,
        "a link that wrote nothing waited for a sync"
    );
}

#[test]
fn an_edge_that_existed_is_in_the_graph_when_its_answer_comes() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let fb = s
        .submit(
            &actor("acme"),
            item("Who made the edge?", "Another request."),
        )
        .unwrap();
    // Another request made the edge and has not applied it to the graph yet (it is
    // written to the store only).
    let edge = FeedbackLink {
        feedback_id: fb.id.clone(),
        adapter_id: "early_lora".into(),
        created_at: 1_700_000_000_000,
        source: LinkSource::Manual,
        metadata: Metadata::default(),
    };
    s.store().link_blocking(&actor("acme"), &edge).unwrap();
    assert!(listed(&s, "early_lora").is_empty());
    // This request finds it: the answer says so, and the graph shows it by then.
    let out = s
        .link(&actor("acme"), &fb.id, Some("early_lora".into()), None)
        .unwrap();
    assert!(!out.created);
    assert_eq!(out.link, edge);
    assert_eq!(listed(&s, "early_lora"), vec![fb.id.clone()]);
}

/// The graph's `version` of item `id` (not the store's).
fn graph_version(s: &Service, id: &str) -> u64 {
    let mut params = serde_json::Map::new();
    params.insert("id".into(), serde_json::json!(id));
    let out = s
        .query(
            "acme",
            "MATCH (f:Feedback) WHERE f.id = $id RETURN f.version",
            &params,
        )
        .unwrap();
    let rows = serde_json::to_value(&out.rows).unwrap();
    rows[0][0].as_u64().unwrap()
}

#[test]
fn concurrent_links_on_one_item_keep_every_edge_and_version() {
    let dir = tempfile::tempdir().unwrap();
    let (threads, each) = (6, 25);
    let id = {
        let s = std::sync::Arc::new(open(dir.path()));
        let fb = s
            .submit(&actor("acme"), item("Who links me?", "Everyone at once."))
            .unwrap();
        // The first update writes out the creation entry; the later ones go in place,
        // each reading the record before its lock and again under it.
        s.link(&actor("acme"), &fb.id, Some("first_lora".into()), None)
            .unwrap();
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let (s, id) = (s.clone(), fb.id.clone());
                std::thread::spawn(move || {
                    for n in 0..each {
                        let name = format!("lora_{t}_{n:02}");
                        let out = s.link(&actor("acme"), &id, Some(name), None).unwrap();
                        assert!(out.created);
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        let versions = 2 + (threads * each) as u64;
        assert_eq!(s.get("acme", &fb.id).unwrap().version, versions);
        assert_eq!(graph_version(&s, &fb.id), versions);
        assert_eq!(adapters_of(&s, &fb.id).len(), 1 + threads * each);
        for t in 0..threads {
            for n in 0..each {
                let name = format!("lora_{t}_{n:02}");
                assert_eq!(listed(&s, &name), vec![fb.id.clone()], "{name}");
            }
        }
        let history = s.history("acme", &fb.id).unwrap();
        let got: Vec<u64> = history.iter().map(|h| h.version).collect();
        assert_eq!(got, (1..=versions).collect::<Vec<_>>());
        fb.id
    };
    // The stored records alone give the same after a reopen.
    let s = open(dir.path());
    assert_eq!(adapters_of(&s, &id).len(), 1 + threads * each);
    assert_eq!(graph_version(&s, &id), 2 + (threads * each) as u64);
}
