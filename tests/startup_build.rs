//! The start-up build (two threads: one reads and interns, one grows the graphs) makes the
//! same graph as applying the stored records one by one in key order: same rows, node ids,
//! edge ids, symbols, typed lists, sessions and counters, for several orgs, with links,
//! lineage, sessions and erasures; and only the orgs a placement serves.

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use common::{actor, item, load_fixtures, open};
use feedgraph::graph::{Direction, GraphIndex, NodeRef, OrgGraph};
use feedgraph::model::NewFeedback;
use feedgraph::service::erasure::EraseRequest;
use feedgraph::service::{NewAdapter, Service};
use feedgraph::store::{ChangeSet, ErasureScope};

/// Everything observable about a graph's layout, in row and node order: two graphs with
/// equal fingerprints answer every query with the same rows in the same order.
fn fingerprint(g: &OrgGraph) -> String {
    let mut out = String::new();
    let strings = g.strings();
    let text = |s: Option<feedgraph::graph::Sym>| s.map(|s| strings.resolve(s).to_owned());
    for (r, f) in g.feedback().iter().enumerate() {
        let r = r as u32;
        let node = NodeRef::Feedback(r);
        let edges: Vec<_> = g.edges(node, Direction::Outgoing).collect();
        let edge_data: Vec<_> = edges.iter().map(|e| g.edge(e.id).copied()).collect();
        writeln!(
            out,
            "F{r} {} node={:?} props={:?} syms={:?} out={edges:?} {edge_data:?}",
            f.id,
            g.node_id(node),
            f.props,
            [
                text(f.model_version),
                text(f.adapter_id),
                text(f.adapter_version),
                text(f.user_id),
                text(f.session_id),
                text(f.interaction_id),
            ],
        )
        .unwrap();
        if let Some(s) = text(f.session_id) {
            writeln!(
                out,
                "  session {s}: {:?}",
                g.session_rows(&s).collect::<Vec<_>>()
            )
            .unwrap();
        }
    }
    for (r, a) in g.adapters().iter().enumerate() {
        let r = r as u32;
        let node = NodeRef::Adapter(r);
        writeln!(
            out,
            "A{r} {a:?} id={} node={:?} in={:?} by_id={:?} children={:?} pg_in={:?} out={:?}",
            strings.resolve(a.id),
            g.node_id(node),
            g.feedback_in(r),
            g.linked_by_id(r),
            g.child_rows(r),
            g.edges(node, Direction::Incoming).collect::<Vec<_>>(),
            g.edges(node, Direction::Outgoing).collect::<Vec<_>>(),
        )
        .unwrap();
    }
    writeln!(
        out,
        "nodes={} edges={} counters={:?}",
        g.node_count(),
        g.edge_count(),
        g.counters()
    )
    .unwrap();
    let newest: Vec<u32> = g.feedback_newest_first(None).collect();
    writeln!(out, "newest first {newest:?}").unwrap();
    out
}

/// The reference: every served org's adapters, then its records one at a time in key
/// order, applied to an empty index as a write applies its changes.
fn applied_one_by_one(s: &Service, serves: &dyn Fn(&str) -> bool) -> GraphIndex {
    let index = GraphIndex::new();
    s.store()
        .for_each_adapter(&mut |a| {
            if serves(&a.org_id) {
                let org = a.org_id.clone();
                index
                    .apply(
                        &org,
                        &ChangeSet {
                            adapters: vec![a],
                            ..ChangeSet::default()
                        },
                    )
                    .wait();
            }
            Ok(())
        })
        .unwrap();
    s.store()
        .for_each_record(&mut |org, r| {
            if serves(org) {
                index
                    .apply_records(
                        org,
                        &ChangeSet {
                            feedback: vec![r],
                            ..ChangeSet::default()
                        },
                    )
                    .wait();
            }
            Ok(())
        })
        .unwrap();
    index
}

fn fingerprints(index: &GraphIndex) -> BTreeMap<String, String> {
    index
        .orgs()
        .into_iter()
        .map(|o| {
            let g = index.org(&o).unwrap();
            (o, fingerprint(&g))
        })
        .collect()
}

/// Several orgs, live writes on top of the fixtures: submits to new adapters, sessions,
/// manual links (an item linked to several adapters), lineage, an erasure.
fn populated(dir: &std::path::Path) -> Service {
    let s = open(dir);
    load_fixtures(&s);
    let admin = feedgraph::model::Actor::new("acme", "admin");
    let adapter = |id: &str, parent: Option<&str>| NewAdapter {
        id: Some(id.into()),
        derived_from: parent.map(str::to_owned),
        ..Default::default()
    };
    s.create_adapter(&admin, adapter("sb-root", None)).unwrap();
    s.create_adapter(&admin, adapter("sb-child", Some("sb-root")))
        .unwrap();
    for org in ["acme", "globex", "zeta-new"] {
        for i in 0..40 {
            let fb = s
                .submit(
                    &actor(org),
                    NewFeedback {
                        adapter_id: Some(format!("sb_{}", i % 5)),
                        session_id: Some(format!("sess-{}", i / 3)),
                        user_id: Some(format!("user-{}", i % 7)),
                        model_version: Some(["m1", "m2"][i % 2].into()),
                        score: (i % 4 == 0).then_some(i as f64),
                        ..item(&format!("Question {i} of {org}?"), "An answer for it.")
                    },
                )
                .unwrap();
            if i % 3 == 0 {
                s.link(&actor(org), &fb.id, Some("sb-child".into()), None)
                    .unwrap();
            }
            if i % 5 == 0 {
                let mut meta = serde_json::Map::new();
                meta.insert("why".into(), serde_json::json!("checked"));
                s.link(&actor(org), &fb.id, Some("sb_4".into()), Some(meta))
                    .unwrap();
            }
        }
    }
    s.erase(
        &admin,
        &EraseRequest {
            scope: ErasureScope::User,
            value: "user-3".into(),
        },
    )
    .unwrap();
    s
}

#[test]
fn the_start_up_build_equals_the_records_applied_one_by_one() {
    let dir = tempfile::tempdir().unwrap();
    let s = populated(dir.path());
    let built = GraphIndex::build(s.store()).unwrap();
    let reference = applied_one_by_one(&s, &|_| true);
    let (built, reference) = (fingerprints(&built), fingerprints(&reference));
    assert_eq!(
        built.keys().collect::<Vec<_>>(),
        ["acme", "globex", "initech", "zeta-new"]
    );
    assert_eq!(
        built.keys().collect::<Vec<_>>(),
        reference.keys().collect::<Vec<_>>()
    );
    for (org, fp) in &built {
        assert!(fp.contains("edges="), "{org}");
        assert_eq!(fp, &reference[org], "the graph of {org}");
    }
    // And, canonically, the live graph the writes made.
    assert_eq!(
        GraphIndex::build(s.store()).unwrap().canonical(),
        s.graph().canonical()
    );
    assert_eq!(s.verify().unwrap(), None);
}

#[test]
fn the_start_up_build_indexes_only_the_orgs_served() {
    let dir = tempfile::tempdir().unwrap();
    let s = populated(dir.path());
    let serves = |org: &str| org != "globex" && org != "initech";
    let built = fingerprints(&GraphIndex::build_for(s.store(), &serves).unwrap());
    let reference = fingerprints(&applied_one_by_one(&s, &serves));
    assert_eq!(built.keys().collect::<Vec<_>>(), ["acme", "zeta-new"]);
    assert_eq!(built, reference);
}
