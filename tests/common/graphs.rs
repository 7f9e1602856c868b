//! Graphs for the start-up tests: a populated service (several orgs, links, lineage,
//! sessions, an erasure) and a fingerprint of everything observable about a graph.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::{actor, item, load_fixtures, open};
use feedgraph::graph::{Direction, GraphIndex, NodeRef, OrgGraph};
use feedgraph::model::NewFeedback;
use feedgraph::service::erasure::EraseRequest;
use feedgraph::service::{NewAdapter, Service};
use feedgraph::store::ErasureScope;

/// Everything observable about a graph's layout, in row and node order: two graphs with
/// equal fingerprints answer every query with the same rows in the same order.
pub fn fingerprint(g: &OrgGraph) -> String {
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
            writeln!(out, "  session {s}: {:?}", {
                // In no particular order (`OrgGraph::session_rows`).
                let mut rows = g.session_rows(&s).collect::<Vec<_>>();
                rows.sort_unstable();
                rows
            })
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
        counters(g)
    )
    .unwrap();
    let newest: Vec<u32> = g.feedback_newest_first(None).collect();
    writeln!(out, "newest first {newest:?}").unwrap();
    out
}

/// The counters with their per-model maps in symbol order (a map's own order depends on
/// its history, not its contents).
fn counters(g: &OrgGraph) -> String {
    let c = g.counters();
    let models: BTreeMap<_, _> = c.models.iter().collect();
    let day_models: BTreeMap<_, _> = c.days.models.iter().collect();
    format!(
        "org={:?} adapters={:?} models={models:?} days: org={:?} adapters={:?} models={day_models:?}",
        c.org, c.adapters, c.days.org, c.days.adapters
    )
}

/// Every org's fingerprint.
pub fn fingerprints(index: &GraphIndex) -> BTreeMap<String, String> {
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
pub fn populated(dir: &std::path::Path) -> Service {
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
