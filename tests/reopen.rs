//! Close and re-open: the rebuilt graph equals the live one, records and histories intact.

mod common;

use std::collections::BTreeMap;

use common::{actor, item, load_fixtures, open};
use feedgraph::model::NewFeedback;
use feedgraph::service::{ListQuery, Service};

fn snapshot(
    s: &Service,
) -> BTreeMap<
    String,
    (
        feedgraph::model::Feedback,
        Vec<feedgraph::model::HistoryVersion>,
    ),
> {
    let mut out = BTreeMap::new();
    for org in s.graph().orgs() {
        let mut q = ListQuery {
            limit: Some(1000),
            ..Default::default()
        };
        loop {
            let page = s.list(&org, &q).unwrap();
            for f in page.items {
                let h = s.history(&org, &f.id).unwrap();
                out.insert(format!("{org}/{}", f.id), (f, h));
            }
            match page.next_cursor {
                Some(c) => q.cursor = Some(c),
                None => break,
            }
        }
    }
    out
}

#[test]
fn reopen_rebuilds_the_same_graph_and_keeps_every_record() {
    let dir = tempfile::tempdir().unwrap();
    let (graph_before, records_before) = {
        let s = open(dir.path());
        load_fixtures(&s);
        // Add live writes on top: submits with adapters, manual links, sessions.
        for i in 0..20 {
            let fb = s
                .submit(
                    &actor("acme"),
                    NewFeedback {
                        adapter_id: Some(format!("live_{}", i % 3)),
                        session_id: Some("live-session".into()),
                        score: Some(i as f64),
                        ..item(
                            &format!("Live question {i}?"),
                            "A live answer for the test.",
                        )
                    },
                )
                .unwrap();
            if i % 4 == 0 {
                s.link(
                    &actor("acme"),
                    &fb.id,
                    Some("themis_help_lora_v3".into()),
                    None,
                )
                .unwrap();
            }
        }
        let g = s.graph().canonical();
        assert_eq!(g.len(), 3, "three orgs");
        (g, snapshot(&s))
    };
    assert_eq!(records_before.len(), 260);

    let s = open(dir.path());
    let graph_after = s.graph().canonical();
    assert_eq!(
        graph_after.keys().collect::<Vec<_>>(),
        graph_before.keys().collect::<Vec<_>>()
    );
    for (org, before) in &graph_before {
        let after = &graph_after[org];
        assert_eq!(after.nodes, before.nodes, "nodes of {org}");
        assert_eq!(after.edges, before.edges, "edges of {org}");
    }
    let records_after = snapshot(&s);
    assert_eq!(records_after, records_before);
    for (f, h) in records_after.values() {
        assert_eq!(
            h.len() as u64,
            f.version,
            "one history version per record version"
        );
        assert_eq!(
            h.iter().map(|v| v.version).collect::<Vec<_>>(),
            (1..=f.version).collect::<Vec<_>>()
        );
    }
    assert_eq!(s.verify().unwrap(), None);
}
