//! The columnar group scan (`GroupScan` in `src/cypher/group_scan.rs`) against the
//! row-by-row path: every query runs with the operator on and off (`PlanOptions::group_scan`)
//! on fixed and random graphs and must give the same rows (sorted, unless the query's ORDER
//! BY fixes the order), the same errors, and `explain` must show the operator where it
//! applies and not where it must not.
//!
//! Scores are multiples of 1/4 and the other numbers integers, so float sums are exact in
//! any order of addition: the comparison is exact, `avg` included.

use feedgraph::cypher::{self, NoText, PlanOptions, QueryLimits};
use feedgraph::graph::OrgGraph;
use feedgraph::model::{
    Adapter, Feedback, FeedbackLink, FeedbackType, LinkSource, Metadata, ValidationStatus,
};
use proptest::prelude::*;
use serde_json::Value;

/// (query, ordered: its ORDER BY fixes the whole order, uses the group scan)
const QUERIES: &[(&str, bool, bool)] = &[
    // The benchmark's Q2 and the seed's adapter stats, verbatim.
    (
        "MATCH (f:Feedback)-[:FEEDBACK_FOR]->(a:Adapter) RETURN a.id AS adapter_id, count(f) AS total_feedback, sum(CASE WHEN f.type = 'positive' THEN 1 ELSE 0 END) AS positive_count, sum(CASE WHEN f.type = 'negative' THEN 1 ELSE 0 END) AS negative_count, avg(CASE WHEN f.type = 'positive' THEN 1.0 ELSE 0.0 END) AS positive_ratio",
        false,
        true,
    ),
    (
        "MATCH (f:Feedback)-[r:FEEDBACK_FOR]->(a:Adapter) RETURN a.id AS adapter_id, COUNT(f) AS total_feedback, SUM(CASE WHEN f.type = 'positive' THEN 1 ELSE 0 END) AS positive_count, SUM(CASE WHEN f.type = 'negative' THEN 1 ELSE 0 END) AS negative_count, AVG(CASE WHEN f.type = 'positive' THEN 1.0 ELSE 0.0 END) AS positive_ratio GROUP BY a.id",
        false,
        true,
    ),
    // The reversed pattern, columns in another order, aliases, ORDER BY and LIMIT after.
    (
        "MATCH (a:Adapter)<-[:FEEDBACK_FOR]-(f:Feedback) RETURN count(*) AS n, a.id AS id, max(f.score) AS top ORDER BY n DESC, id LIMIT 3",
        true,
        true,
    ),
    (
        "MATCH (a:Adapter)<-[:FEEDBACK_FOR]-(f:Feedback) RETURN sum(CASE WHEN f.validation_status = 'approved' THEN 2 WHEN f.validation_status <> 'rejected' THEN -1 END) AS s, avg(CASE WHEN f.validation_status = 'pending' THEN 3.0 END) AS m, a.id AS id ORDER BY id",
        true,
        true,
    ),
    // CASE values the counts would not sum exactly, min and max of a CASE: per row.
    (
        "MATCH (f:Feedback)-[:FEEDBACK_FOR]->(a:Adapter) RETURN a.id, sum(CASE WHEN f.validation_status = 'rejected' THEN 2.5 WHEN f.validation_status = 'approved' THEN 1 END) AS s, min(CASE WHEN f.type = 'positive' THEN 7 ELSE 3 END) AS lo, max(CASE WHEN f.type <> 'bogus' THEN 5.0 END) AS hi, count(CASE WHEN f.type = 'bogus' THEN 1 END) AS none, sum(CASE WHEN f.type = 'negative' THEN 4000000 ELSE 1 END) AS big",
        false,
        true,
    ),
    // Columns of the member: numbers, nullable numbers and strings.
    (
        "MATCH (f:Feedback)-[:FEEDBACK_FOR]->(a:Adapter) RETURN a.id, sum(f.score), avg(f.score), min(f.score), max(f.created_at), count(f.score), min(f.id), max(f.user_id), count(f.model_version), sum(f.version)",
        false,
        true,
    ),
    // Grouping by a property that is not unique per node: groups merge.
    (
        "MATCH (f:Feedback)-[:FEEDBACK_FOR]->(a:Adapter) RETURN a.base_model AS m, count(f) AS n, avg(f.score) AS s, sum(CASE WHEN f.type = 'positive' THEN 1 ELSE 0 END) AS p",
        false,
        true,
    ),
    (
        "MATCH (f:Feedback)-[:FEEDBACK_FOR]->(a:Adapter) RETURN a.version, a.base_model, count(*), sum(f.version)",
        false,
        true,
    ),
    // Grouping by the other end's properties (the feedback end is walked).
    (
        "MATCH (f:Feedback)-[:FEEDBACK_FOR]->(a:Adapter) RETURN f.type AS t, count(a) AS n, min(a.created_at) AS first, max(a.id) AS last",
        false,
        true,
    ),
    (
        "MATCH (f:Feedback)-[:FEEDBACK_FOR]->(a:Adapter) RETURN f.user_id, f.validation_status, count(*), sum(CASE WHEN f.type = 'positive' THEN 1 ELSE 0 END)",
        false,
        true,
    ),
    (
        "MATCH (f:Feedback)-[:FEEDBACK_FOR]->(a:Adapter) RETURN f, count(a), max(a.id)",
        false,
        true,
    ),
    // Keys that are the node, several properties of it, or expressions over it.
    (
        "MATCH (f:Feedback)-[:FEEDBACK_FOR]->(a:Adapter) RETURN a, count(f), sum(f.version)",
        false,
        true,
    ),
    (
        "MATCH (f:Feedback)-[:FEEDBACK_FOR]->(a:Adapter) RETURN toUpper(a.id) AS k, a.version AS v, count(f) AS n",
        false,
        true,
    ),
    // Expressions over aggregates, HAVING, ORDER BY an aggregate.
    (
        "MATCH (f:Feedback)-[:FEEDBACK_FOR]->(a:Adapter) RETURN a.id AS id, count(f) * 2 AS d, sum(CASE WHEN f.type = 'positive' THEN 1 ELSE 0 END) * 1.0 / count(f) AS r ORDER BY r DESC, id",
        true,
        true,
    ),
    (
        "MATCH (f:Feedback)-[:FEEDBACK_FOR]->(a:Adapter) WITH a.id AS x, count(f) AS c WHERE c > 1 RETURN x, c ORDER BY c DESC, x",
        true,
        true,
    ),
    // WHERE on either end: enumerated masks, the used flag, other predicates.
    (
        "MATCH (f:Feedback)-[:FEEDBACK_FOR]->(a:Adapter) WHERE f.validation_status = 'approved' AND a.version <> 'v2' RETURN a.id, count(f), sum(CASE WHEN f.type = 'positive' THEN 1 ELSE 0 END)",
        false,
        true,
    ),
    (
        "MATCH (f:Feedback)-[:FEEDBACK_FOR]->(a:Adapter) WHERE f.type <> 'negative' AND f.validation_status <> 'bogus' AND f.used_for_training = false RETURN a.id, count(*)",
        false,
        true,
    ),
    (
        "MATCH (f:Feedback)-[:FEEDBACK_FOR]->(a:Adapter) WHERE f.score >= 2.5 OR f.type = 'negative' RETURN a.id, count(*), avg(f.score)",
        false,
        true,
    ),
    (
        "MATCH (f:Feedback)-[:FEEDBACK_FOR]->(a:Adapter) WHERE a.id STARTS WITH 'a1' OR a.created_at = 0 RETURN a.id, count(*), avg(f.score)",
        false,
        true,
    ),
    (
        "MATCH (f:Feedback)-[:FEEDBACK_FOR]->(a:Adapter) WHERE f.type = 'bogus' RETURN a.id, count(*)",
        false,
        true,
    ),
    // No keys: one row, even over no rows.
    (
        "MATCH (f:Feedback)-[:FEEDBACK_FOR]->(a:Adapter) RETURN count(*), sum(CASE WHEN f.type = 'positive' THEN 1 ELSE 0 END), avg(f.score), min(f.created_at)",
        false,
        true,
    ),
    (
        "MATCH (f:Feedback)-[:FEEDBACK_FOR]->(a:Adapter) WHERE f.type = 'bogus' RETURN count(*), sum(CASE WHEN f.type = 'positive' THEN 1 ELSE 0 END), avg(CASE WHEN f.type = 'positive' THEN 1.0 END), max(f.score)",
        false,
        true,
    ),
    // Constant keys merge everything, and make no group over no rows.
    (
        "MATCH (f:Feedback)-[:FEEDBACK_FOR]->(a:Adapter) RETURN 'all' AS k, count(*), avg(f.score)",
        false,
        true,
    ),
    // DERIVED_FROM, unlabelled ends, both directions.
    (
        "MATCH (c:Adapter)-[:DERIVED_FROM]->(p:Adapter) RETURN p.id, count(c), max(c.created_at), min(c.id)",
        false,
        true,
    ),
    (
        "MATCH (x)-[:FEEDBACK_FOR]->(y) RETURN y.id, count(x), max(x.created_at), sum(x.version)",
        false,
        true,
    ),
    (
        "MATCH (x)-[]->(y) RETURN y.id, count(x), min(x.id), max(x.type)",
        false,
        true,
    ),
    (
        "MATCH (a:Adapter)-[:DERIVED_FROM]-(b:Adapter) RETURN a.id, count(b), min(b.id)",
        false,
        true,
    ),
    (
        "MATCH (a)--(b) RETURN a.id, count(*), min(b.id)",
        false,
        true,
    ),
    // Left to the row path: DISTINCT, keys on both ends, a relationship read, a CASE that
    // is no table, two hops.
    (
        "MATCH (f:Feedback)-[:FEEDBACK_FOR]->(a:Adapter) RETURN a.id, count(DISTINCT f.user_id)",
        false,
        false,
    ),
    (
        "MATCH (f:Feedback)-[:FEEDBACK_FOR]->(a:Adapter) RETURN a.id, f.type, count(*)",
        false,
        false,
    ),
    (
        "MATCH (f:Feedback)-[r:FEEDBACK_FOR]->(a:Adapter) RETURN a.id, min(r.created_at)",
        false,
        false,
    ),
    (
        "MATCH (f:Feedback)-[:FEEDBACK_FOR]->(a:Adapter) RETURN a.id, sum(CASE WHEN f.score > 2 THEN 1 ELSE 0 END)",
        false,
        false,
    ),
    (
        "MATCH (f:Feedback)-[:FEEDBACK_FOR]->(a:Adapter)-[:DERIVED_FROM]->(p:Adapter) RETURN p.id, count(f)",
        false,
        false,
    ),
];

/// The rows of `query`, with the group scan on or off, and the plan.
fn run(g: &OrgGraph, query: &str, on: bool) -> (Result<Vec<Vec<Value>>, String>, String) {
    let options = PlanOptions {
        group_scan: on,
        ..PlanOptions::default()
    };
    let none = serde_json::Map::new();
    let limits = QueryLimits::default();
    let rows = cypher::execute_with(g, &NoText, query, &none, &limits, &options)
        .map(|r| r.rows.to_json())
        .map_err(|e| e.to_string());
    let plan = cypher::explain_with(g, query, &none, &limits, &options)
        .map(|p| p.explain())
        .unwrap_or_else(|e| e.to_string());
    (rows, plan)
}

/// Both paths agree on `query`; the plan uses the group scan iff `expected`.
fn agree(g: &OrgGraph, query: &str, ordered: bool, expected: bool) -> Result<(), String> {
    let (on, plan) = run(g, query, true);
    let (off, plain) = run(g, query, false);
    let norm = |r: Result<Vec<Vec<Value>>, String>| {
        r.map(|rows| {
            let mut rows: Vec<String> = rows
                .iter()
                .map(|r| Value::Array(r.clone()).to_string())
                .collect();
            if !ordered {
                rows.sort();
            }
            rows
        })
    };
    let (on, off) = (norm(on), norm(off));
    if on != off {
        return Err(format!(
            "{query}\n group scan: {on:?}\n row path:   {off:?}\n{plan}"
        ));
    }
    // Counts, min and max alone may go to the count pushdown instead, which is as good.
    let used = plan.contains("GroupScan") || expected && plan.contains("ExpandCount");
    if used != expected {
        return Err(format!("{query}: group scan expected: {expected}\n{plan}"));
    }
    if plain.contains("GroupScan") {
        return Err(format!("{query}: group scan off but used\n{plain}"));
    }
    Ok(())
}

/// One generated feedback item: (positive, status, used, user, score in quarters or none,
/// created_at, links).
type Item = (bool, u8, bool, u8, Option<u8>, u64, Vec<usize>);

/// A random graph: adapters in a forest, feedback with a few links each.
#[derive(Debug, Clone)]
struct Spec {
    parents: Vec<Option<usize>>,
    feedback: Vec<Item>,
}

fn spec() -> impl Strategy<Value = Spec> {
    (1usize..8)
        .prop_flat_map(|n| {
            let parents = (0..n)
                .map(|i| {
                    if i == 0 {
                        Just(None).boxed()
                    } else {
                        proptest::option::of(0..i).boxed()
                    }
                })
                .collect::<Vec<_>>();
            let item = (
                any::<bool>(),
                0u8..4,
                any::<bool>(),
                0u8..4,
                proptest::option::of(0u8..21),
                0u64..10,
                proptest::collection::vec(0..n, 0..4),
            );
            (parents, proptest::collection::vec(item, 0..24))
        })
        .prop_map(|(parents, feedback)| Spec { parents, feedback })
}

fn build(spec: &Spec) -> OrgGraph {
    let mut g = OrgGraph::default();
    for (i, p) in spec.parents.iter().enumerate() {
        g.upsert_adapter(&Adapter {
            id: format!("a{i}"),
            org_id: "t".into(),
            version: (i % 3 != 2).then(|| format!("v{}", i % 2 + 1)),
            base_model: (i % 4 != 3).then(|| if i % 3 == 0 { "llama" } else { "mistral" }.into()),
            derived_from: p.map(|p| format!("a{p}")),
            metadata: Metadata::default(),
            created_at: (i % 3) as u64,
            source: LinkSource::Manual,
            record_version: 1,
        });
    }
    let statuses = [
        ValidationStatus::Approved,
        ValidationStatus::Pending,
        ValidationStatus::Flagged,
        ValidationStatus::Rejected,
    ];
    for (i, (positive, status, used, user, score, created, links)) in
        spec.feedback.iter().enumerate()
    {
        let f = Feedback {
            id: format!("f{i:02}"),
            org_id: "t".into(),
            feedback_type: if *positive {
                FeedbackType::Positive
            } else {
                FeedbackType::Negative
            },
            validation_status: statuses[*status as usize],
            validation_reasons: Vec::new(),
            created_at: *created,
            updated_at: *created,
            version: 1 + links.len() as u64,
            used_for_training: *used,
            training_batch_id: 0,
            model_version: (*user != 3).then(|| "llama".into()),
            adapter_id: links.first().map(|a| format!("a{a}")),
            adapter_version: None,
            user_id: Some(format!("u{user}")),
            session_id: None,
            interaction_id: None,
            score: score.map(|s| f64::from(s) / 4.0),
            question: String::new(),
            answer: String::new(),
            correction: None,
            comment: None,
            metadata: Metadata::default(),
            pii: Vec::new(),
            kind: Default::default(),
            label: None,
            provider: None,
            score_config: None,
            erased_at: None,
            erased_by: None,
        };
        g.upsert_feedback(&f);
        for a in links {
            g.add_link(&FeedbackLink {
                feedback_id: f.id.clone(),
                adapter_id: format!("a{a}"),
                created_at: 1,
                source: LinkSource::Auto,
                metadata: Metadata::default(),
            });
        }
    }
    g
}

/// A fixed graph with every case in it: adapters without feedback, an unlinked item, items
/// linked to several adapters, scores and none, every status and both types.
fn fixed() -> Spec {
    let item = |p: bool, s: u8, used: bool, user: u8, score: Option<u8>, links: &[usize]| {
        (p, s, used, user, score, u64::from(user) * 3, links.to_vec())
    };
    Spec {
        parents: vec![None, Some(0), Some(1), Some(0), None, Some(1)],
        feedback: vec![
            item(true, 0, false, 0, Some(16), &[1]),
            item(false, 0, false, 1, Some(8), &[1, 2]),
            item(true, 2, false, 0, None, &[2]),
            item(false, 3, true, 2, Some(6), &[3]),
            item(true, 1, false, 3, None, &[]),
            item(true, 0, true, 1, Some(3), &[0, 1, 3]),
            item(false, 1, false, 2, Some(20), &[1]),
            item(true, 0, false, 0, Some(1), &[5]),
        ],
    }
}

#[test]
fn fixed_graph_agrees_with_the_row_path() {
    let g = build(&fixed());
    for (q, ordered, expected) in QUERIES {
        if let Err(e) = agree(&g, q, *ordered, *expected) {
            panic!("{e}");
        }
    }
    // Nothing at all: no groups, or the one group of no keys.
    let empty = OrgGraph::default();
    for (q, ordered, expected) in QUERIES {
        if let Err(e) = agree(&empty, q, *ordered, *expected) {
            panic!("empty graph: {e}");
        }
    }
}

#[test]
fn explain_shows_the_group_scan() {
    let g = build(&fixed());
    let (_, plan) = run(&g, QUERIES[0].0, true);
    assert!(
        plan.contains("GroupScan a :Adapter -In-> f :Feedback (by node)"),
        "{plan}"
    );
    assert!(plan.contains("counts by Type"), "{plan}");
    assert!(plan.contains("Aggregate (by node)"), "{plan}");
}

#[test]
fn errors_are_the_row_paths() {
    let g = build(&fixed());
    for q in [
        "MATCH (f:Feedback)-[:FEEDBACK_FOR]->(a:Adapter) RETURN a.id, sum(f.id)",
        "MATCH (f:Feedback)-[:FEEDBACK_FOR]->(a:Adapter) RETURN a.id, avg(f.used_for_training)",
        "MATCH (f:Feedback)-[:FEEDBACK_FOR]->(a:Adapter) WHERE f.score RETURN a.id, count(*)",
        "MATCH (f:Feedback)-[:FEEDBACK_FOR]->(a:Adapter) WHERE a.id RETURN a.id, count(*), min(f.score)",
    ] {
        let (on, plan) = run(&g, q, true);
        let (off, _) = run(&g, q, false);
        assert!(plan.contains("GroupScan"), "{q}\n{plan}");
        assert!(on.is_err(), "{q}: {on:?}");
        assert_eq!(on, off, "{q}");
    }
}

/// The work limit stops a group scan as it stops the row path.
#[test]
fn the_work_limit_holds() {
    let g = build(&fixed());
    let limits = QueryLimits {
        max_work: 5,
        ..QueryLimits::default()
    };
    let r = cypher::execute(&g, &NoText, QUERIES[0].0, &serde_json::Map::new(), &limits);
    assert!(
        matches!(r, Err(cypher::CypherError::LimitExceeded { .. })),
        "{r:?}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn random_graphs_agree_with_the_row_path(s in spec()) {
        let g = build(&s);
        for (q, ordered, expected) in QUERIES {
            if let Err(e) = agree(&g, q, *ordered, *expected) {
                prop_assert!(false, "{}", e);
            }
        }
    }
}
