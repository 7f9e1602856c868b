//! Equivalence of the graph's representation (property columns, adjacency behind
//! `OrgGraph` methods) with a plain reference model, under random interleaved writes:
//! submits, links, reviews, erasures (a newer version with the personal fields cleared) and
//! adapter re-parenting, with snapshots taken (cloned, as the index does when a reader holds
//! one) and checked again after later writes to the copy.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::{Direction, EdgeKind, NodeRef, OrgGraph, SymCol};
use crate::model::{
    Adapter, Feedback, FeedbackLink, FeedbackType, LinkSource, Metadata, ValidationStatus,
};

#[derive(Debug, Clone)]
enum Op {
    /// Adapter `a` (of 6) with parent `p` (a lower number, or none), a newer record.
    Adapter { a: u8, parent: Option<u8> },
    /// A new item; `early` gives it an id that sorts before every `f` id (out of order,
    /// as a client-chosen id may).
    Submit {
        negative: bool,
        user: u8,
        score: Option<i8>,
        early: bool,
    },
    /// Item `i` moved to session `s`.
    Resession { i: u16, s: u8 },
    /// Item `i` (modulo the items so far) linked to adapter `a`.
    Link { i: u16, a: u8 },
    /// Item `i` reviewed and maybe consumed.
    Review { i: u16, status: u8, used: bool },
    /// Item `i` erased: a newer version without user, session, comment or score.
    Erase { i: u16 },
    /// A reader takes a snapshot here; later writes go to a copy.
    Snapshot,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => (0u8..6, prop::option::of(0u8..6))
            .prop_map(|(a, p)| Op::Adapter { a, parent: p.filter(|p| *p < a) }),
        4 => (any::<bool>(), 0u8..4, prop::option::of(-5i8..6), prop::bool::weighted(0.2))
            .prop_map(|(negative, user, score, early)| Op::Submit { negative, user, score, early }),
        1 => (any::<u16>(), 0u8..3).prop_map(|(i, s)| Op::Resession { i, s }),
        5 => (any::<u16>(), 0u8..6).prop_map(|(i, a)| Op::Link { i, a }),
        2 => (any::<u16>(), 0u8..4, any::<bool>())
            .prop_map(|(i, status, used)| Op::Review { i, status, used }),
        1 => any::<u16>().prop_map(|i| Op::Erase { i }),
        1 => Just(Op::Snapshot),
    ]
}

/// The reference: items by id, links as (item, adapter) pairs, adapters' parents.
#[derive(Debug, Clone, Default)]
struct Model {
    items: BTreeMap<String, Feedback>,
    order: Vec<String>,
    links: BTreeSet<(String, String)>,
    parents: BTreeMap<String, Option<String>>,
}

fn adapter(a: u8, parent: Option<u8>, version: u64) -> Adapter {
    Adapter {
        id: format!("a{a}"),
        org_id: "t".into(),
        version: None,
        base_model: None,
        derived_from: parent.map(|p| format!("a{p}")),
        metadata: Metadata::default(),
        created_at: version,
        source: LinkSource::Manual,
        record_version: version,
    }
}

const STATUSES: [ValidationStatus; 4] = [
    ValidationStatus::Pending,
    ValidationStatus::Approved,
    ValidationStatus::Rejected,
    ValidationStatus::Flagged,
];

/// Applies one op to the graph and the model.
fn apply(g: &mut OrgGraph, m: &mut Model, n: usize, op: &Op) {
    match op {
        Op::Adapter { a, parent } => {
            let ad = adapter(*a, *parent, n as u64 + 1);
            g.upsert_adapter(&ad);
            m.parents.insert(ad.id.clone(), ad.derived_from.clone());
            if let Some(p) = &ad.derived_from {
                m.parents.entry(p.clone()).or_insert(None);
            }
        }
        Op::Submit {
            negative,
            user,
            score,
            early,
        } => {
            let id = if *early {
                format!("e{:05}", 99_999 - n)
            } else {
                format!("f{n:05}")
            };
            let mut f = Feedback::sample(&id, "t");
            f.feedback_type = if *negative {
                FeedbackType::Negative
            } else {
                FeedbackType::Positive
            };
            f.user_id = Some(format!("u{user}"));
            f.session_id = Some(format!("s{}", user % 3));
            f.score = score.map(|s| f64::from(s) / 4.0);
            f.comment = n.is_multiple_of(2).then(|| "a comment".to_owned());
            g.upsert_feedback(&f);
            m.order.push(f.id.clone());
            m.items.insert(f.id.clone(), f);
        }
        Op::Link { i, a } if !m.order.is_empty() => {
            let id = m.order[*i as usize % m.order.len()].clone();
            let adapter_id = format!("a{a}");
            assert!(g.add_link(&FeedbackLink {
                feedback_id: id.clone(),
                adapter_id: adapter_id.clone(),
                created_at: n as u64,
                source: LinkSource::Manual,
                metadata: Metadata::default(),
            }));
            m.parents.entry(adapter_id.clone()).or_insert(None);
            m.links.insert((id, adapter_id));
        }
        Op::Review { i, status, used } if !m.order.is_empty() => {
            let id = &m.order[*i as usize % m.order.len()];
            if let Some(f) = m.items.get_mut(id) {
                f.version += 1;
                f.validation_status = STATUSES[*status as usize % 4];
                f.used_for_training = *used;
                g.upsert_feedback(f);
            }
        }
        Op::Resession { i, s } if !m.order.is_empty() => {
            let id = &m.order[*i as usize % m.order.len()];
            if let Some(f) = m.items.get_mut(id) {
                f.version += 1;
                f.session_id = Some(format!("s{s}"));
                g.upsert_feedback(f);
            }
        }
        Op::Erase { i } if !m.order.is_empty() => {
            let id = &m.order[*i as usize % m.order.len()];
            if let Some(f) = m.items.get_mut(id) {
                f.version += 1;
                f.user_id = None;
                f.session_id = None;
                f.comment = None;
                f.score = None;
                g.upsert_feedback(f);
            }
        }
        _ => {}
    }
}

/// Every answer the graph gives about items, neighbours, degrees and edges agrees with
/// the model.
fn check(g: &OrgGraph, m: &Model) -> Result<(), TestCaseError> {
    let c = g.feedback();
    prop_assert_eq!(c.len(), m.items.len());
    let text = |s: Option<super::Sym>| g.text(s).map(str::to_owned);
    for (id, f) in &m.items {
        let r = g.feedback_row(id);
        prop_assert!(r.is_some(), "item {} has a row", id);
        let r = r.unwrap_or(0);
        prop_assert_eq!(c.id_str(r), id.as_str());
        prop_assert_eq!(c.feedback_type(r), Some(f.feedback_type));
        prop_assert_eq!(c.status(r), Some(f.validation_status));
        prop_assert_eq!(c.used_for_training(r), f.used_for_training);
        prop_assert_eq!(c.version(r), Some(f.version));
        prop_assert_eq!(c.score(r), f.score);
        prop_assert_eq!(c.has_comment(r), f.comment.is_some());
        prop_assert_eq!(text(c.sym(r, SymCol::UserId)), f.user_id.clone());
        prop_assert_eq!(text(c.sym(r, SymCol::SessionId)), f.session_id.clone());
        let view = c.get(r);
        prop_assert!(view.is_some_and(|v| v.version == f.version && v.id == id));
        // Out-neighbours and degree of the item.
        let node = NodeRef::Feedback(r);
        prop_assert_eq!(g.node_id(node).and_then(|i| g.node_at(i)), Some(node));
        let mut got: Vec<String> = g
            .edges(node, Direction::Outgoing)
            .filter(|e| e.kind == EdgeKind::FeedbackFor)
            .filter_map(|e| match e.other {
                NodeRef::Adapter(a) => g.adapters().get(a as usize),
                NodeRef::Feedback(_) => None,
            })
            .map(|a| g.strings().resolve(a.id).to_owned())
            .collect();
        got.sort();
        let want: Vec<String> = m
            .links
            .iter()
            .filter(|(i, _)| i == id)
            .map(|(_, a)| a.clone())
            .collect();
        prop_assert_eq!(&got, &want, "links of {}", id);
        let mut adapters: Vec<u32> = g.feedback_adapters(r).collect();
        adapters.sort_unstable();
        prop_assert_eq!(adapters.len(), want.len());
        prop_assert_eq!(g.edges(node, Direction::Incoming).count(), 0);
    }
    for (a, parent) in &m.parents {
        let row = g.adapter_row(a);
        prop_assert!(row.is_some(), "adapter {} has a row", a);
        let row = row.unwrap_or(0);
        let node = NodeRef::Adapter(row);
        // In-neighbours by FEEDBACK_FOR: the dense list, the walk and the degree agree.
        let mut want: Vec<&str> = m
            .links
            .iter()
            .filter(|(_, x)| x == a)
            .map(|(i, _)| i.as_str())
            .collect();
        want.sort_unstable();
        let mut listed: Vec<&str> = g.feedback_in(row).iter().map(|&r| c.id_str(r)).collect();
        listed.sort_unstable();
        prop_assert_eq!(&listed, &want, "items linked to {}", a);
        let mut walked: Vec<&str> = g
            .edges(node, Direction::Incoming)
            .filter(|e| e.kind == EdgeKind::FeedbackFor)
            .filter_map(|e| match e.other {
                NodeRef::Feedback(f) => Some(c.id_str(f)),
                NodeRef::Adapter(_) => None,
            })
            .collect();
        walked.sort_unstable();
        prop_assert_eq!(&walked, &want);
        let by_id: Vec<&str> = g.linked_by_id(row).iter().map(|&r| c.id_str(r)).collect();
        prop_assert_eq!(&by_id, &want, "id order of {}", a);
        // Every link is one edge whose ends are the item and the adapter.
        for i in &want {
            let f = NodeRef::Feedback(g.feedback_row(i).unwrap_or(u32::MAX));
            let e = g.edge_between(f, node, EdgeKind::FeedbackFor);
            prop_assert!(e.is_some());
            let e = e.unwrap_or(0);
            prop_assert_eq!(g.edge_ends(e), Some((f, node)));
            prop_assert_eq!(g.edge(e).map(|d| d.kind), Some(EdgeKind::FeedbackFor));
        }
        // The parent edge and the children.
        let up: Vec<String> = g
            .edges(node, Direction::Outgoing)
            .filter(|e| e.kind == EdgeKind::DerivedFrom)
            .filter_map(|e| match e.other {
                NodeRef::Adapter(p) => g.adapters().get(p as usize),
                NodeRef::Feedback(_) => None,
            })
            .map(|p| g.strings().resolve(p.id).to_owned())
            .collect();
        prop_assert_eq!(up, parent.iter().cloned().collect::<Vec<_>>());
        let mut kids: Vec<&str> = g
            .child_rows(row)
            .iter()
            .filter_map(|&k| g.adapters().get(k as usize))
            .map(|k| g.strings().resolve(k.id))
            .collect();
        kids.sort_unstable();
        let want_kids: Vec<&str> = m
            .parents
            .iter()
            .filter(|(_, p)| p.as_deref() == Some(a.as_str()))
            .map(|(k, _)| k.as_str())
            .collect();
        prop_assert_eq!(kids, want_kids, "children of {}", a);
    }
    prop_assert_eq!(
        g.edge_count(),
        m.links.len() + m.parents.values().flatten().count()
    );
    // Sessions: exactly the items whose record names the session now.
    for s in ["s0", "s1", "s2", "s3"] {
        let mut got: Vec<&str> = g.session_rows(s).map(|r| c.id_str(r)).collect();
        got.sort_unstable();
        let want: Vec<&str> = m
            .items
            .values()
            .filter(|f| f.session_id.as_deref() == Some(s))
            .map(|f| f.id.as_str())
            .collect();
        prop_assert_eq!(got, want, "session {}", s);
    }
    // The walks in id order, whole and from cursors (present and absent).
    let ids: Vec<String> = m.items.keys().cloned().collect();
    let walk = |w: Box<dyn Iterator<Item = u32> + '_>| -> Vec<String> {
        w.map(|r| c.id_str(r).to_owned()).collect()
    };
    let mut newest = ids.clone();
    newest.reverse();
    prop_assert_eq!(walk(g.feedback_newest_first(None)), newest);
    prop_assert_eq!(walk(g.feedback_oldest_first(None)), ids.clone());
    let mut cursors: Vec<String> = ids.iter().step_by(3).cloned().collect();
    cursors.extend(["e", "f00003x", "g"].map(str::to_owned));
    for cur in &cursors {
        let before: Vec<String> = ids.iter().rev().filter(|i| *i < cur).cloned().collect();
        let after: Vec<String> = ids.iter().filter(|i| *i > cur).cloned().collect();
        prop_assert_eq!(
            walk(g.feedback_newest_first(Some(cur))),
            before,
            "before {}",
            cur
        );
        prop_assert_eq!(
            walk(g.feedback_oldest_first(Some(cur))),
            after,
            "after {}",
            cur
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// The graph answers like the reference model after any interleaving of writes and
    /// compactions, and a snapshot taken mid-way still answers like the model did then.
    #[test]
    fn graph_matches_a_reference_model(ops in prop::collection::vec(op(), 1..150)) {
        let mut g = OrgGraph::default();
        let mut m = Model::default();
        let mut held: Vec<(OrgGraph, Model)> = Vec::new();
        for (n, op) in ops.iter().enumerate() {
            if matches!(op, Op::Snapshot) {
                held.push((g.clone(), m.clone()));
                // And the live graph is compacted as a build's end compacts it (lists in
                // id order that match the order of linking are shared again), so later
                // links start from shared lists.
                g.shrink_to_fit();
                continue;
            }
            apply(&mut g, &mut m, n, op);
        }
        check(&g, &m)?;
        for (g, m) in &held {
            check(g, m)?;
        }
    }
}
