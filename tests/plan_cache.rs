//! The plan cache and the planner's statistics (issue 13, point 4).
//!
//! - A cached plan is used only where what it took from the graph still holds: symbols of
//!   strings it compiled (`f.model_version = 'm'`), and the magnitude of the statistics it
//!   read. A string interned after planning, a graph numbered differently (another org's, a
//!   rebuilt one) or a graph grown past a statistic's class makes it plan again, and the
//!   rows are always those of an uncached run.
//! - The cache is bounded and counts hits in `/metrics`.
//! - Statistics change a plan (where a pattern starts) and never its rows.

mod common;

use std::sync::atomic::AtomicBool;

use common::server::TestServer;
use feedgraph::cypher::{
    self, CacheOutcome, NoText, PlanCache, PlanOptions, QueryLimits, plan::Op,
};
use feedgraph::graph::OrgGraph;
use feedgraph::http::auth::Role;
use feedgraph::model::{
    Adapter, Feedback, FeedbackLink, FeedbackType, LinkSource, Metadata, ValidationStatus,
};
use serde_json::{Map, Value, json};

fn item(id: &str, model: &str, status: ValidationStatus) -> Feedback {
    Feedback {
        id: id.into(),
        org_id: "t".into(),
        feedback_type: FeedbackType::Positive,
        validation_status: status,
        validation_reasons: Vec::new(),
        created_at: 1,
        updated_at: 1,
        version: 1,
        used_for_training: false,
        training_batch_id: 0,
        model_version: Some(model.into()),
        adapter_id: None,
        adapter_version: None,
        user_id: None,
        session_id: None,
        interaction_id: None,
        score: None,
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
    }
}

fn adapter(id: &str, version: &str) -> Adapter {
    Adapter {
        id: id.into(),
        org_id: "t".into(),
        version: Some(version.into()),
        base_model: None,
        derived_from: None,
        metadata: Metadata::default(),
        created_at: 1,
        source: LinkSource::Manual,
        record_version: 1,
    }
}

fn link(g: &mut OrgGraph, f: &str, a: &str) {
    g.add_link(&FeedbackLink {
        feedback_id: f.into(),
        adapter_id: a.into(),
        created_at: 1,
        source: LinkSource::Auto,
        metadata: Metadata::default(),
    });
}

/// Runs `q` through `cache` as org `org`; returns the rows and how the plan was found.
fn cached(
    cache: &PlanCache,
    org: &str,
    g: &OrgGraph,
    q: &str,
    params: &Map<String, Value>,
) -> (Vec<Vec<Value>>, CacheOutcome) {
    let (r, outcome) = cypher::execute_cached(
        &std::sync::Arc::new(g.clone()),
        &NoText,
        q,
        params,
        &QueryLimits::default(),
        &AtomicBool::new(false),
        cache,
        org,
    );
    let rows = r.unwrap_or_else(|e| panic!("{q}: {e}")).rows.to_json();
    (rows, outcome)
}

fn uncached(g: &OrgGraph, q: &str, params: &Map<String, Value>) -> Vec<Vec<Value>> {
    cypher::execute(g, &NoText, q, params, &QueryLimits::default())
        .unwrap_or_else(|e| panic!("{q}: {e}"))
        .rows
        .to_json()
}

const BY_MODEL: &str = "MATCH (f:Feedback) WHERE f.model_version = $m RETURN f.id ORDER BY f.id";

fn params(m: &str) -> Map<String, Value> {
    let mut p = Map::new();
    p.insert("m".into(), json!(m));
    p
}

#[test]
fn a_repeated_text_is_planned_once() {
    let mut g = OrgGraph::default();
    g.upsert_feedback(&item("f1", "m1", ValidationStatus::Approved));
    let cache = PlanCache::new(64);
    let p = params("m1");
    assert_eq!(cached(&cache, "o", &g, BY_MODEL, &p).1, CacheOutcome::Miss);
    let (rows, outcome) = cached(&cache, "o", &g, BY_MODEL, &p);
    assert_eq!(outcome, CacheOutcome::Hit);
    assert_eq!(rows, vec![vec![json!("f1")]]);
    // Other parameter values, another org or another text are other plans.
    assert_eq!(
        cached(&cache, "o", &g, BY_MODEL, &params("m2")).1,
        CacheOutcome::Miss
    );
    assert_eq!(
        cached(&cache, "other", &g, BY_MODEL, &p).1,
        CacheOutcome::Miss
    );
    let q2 = "MATCH (f:Feedback) RETURN count(*)";
    assert_eq!(
        cached(&cache, "o", &g, q2, &Map::new()).1,
        CacheOutcome::Miss
    );
    assert_eq!(
        cached(&cache, "o", &g, q2, &Map::new()).1,
        CacheOutcome::Hit
    );
    assert_eq!(cache.len(), 4);
    // Errors are not cached.
    let bad = "MATCH (f:Feedback) RETURN g";
    for _ in 0..2 {
        let (r, outcome) = cypher::execute_cached(
            &std::sync::Arc::new(g.clone()),
            &NoText,
            bad,
            &Map::new(),
            &QueryLimits::default(),
            &AtomicBool::new(false),
            &cache,
            "o",
        );
        assert!(r.is_err());
        assert_eq!(outcome, CacheOutcome::Bypass);
    }
    // Texts past the bound are planned every time, never kept.
    let long = format!("{BY_MODEL}\n// {}", "x".repeat(cypher::MAX_CACHED_TEXT));
    for _ in 0..2 {
        assert_eq!(cached(&cache, "o", &g, &long, &p).1, CacheOutcome::Bypass);
    }
    assert_eq!(cache.len(), 4);
    // Off: nothing is kept.
    let off = PlanCache::new(0);
    for _ in 0..2 {
        assert_eq!(cached(&off, "o", &g, BY_MODEL, &p).1, CacheOutcome::Bypass);
    }
    assert!(off.is_empty());
}

/// A plan made while `'m2'` was not interned compiled the test to "matches nothing"; once an
/// item with that model exists the cached plan must not be used.
#[test]
fn a_string_interned_after_planning_makes_it_plan_again() {
    let mut g = OrgGraph::default();
    g.upsert_feedback(&item("f1", "m1", ValidationStatus::Approved));
    let cache = PlanCache::new(64);
    let p = params("m2");
    assert_eq!(
        cached(&cache, "o", &g, BY_MODEL, &p),
        (vec![], CacheOutcome::Miss)
    );
    g.upsert_feedback(&item("f2", "m2", ValidationStatus::Approved));
    let (rows, outcome) = cached(&cache, "o", &g, BY_MODEL, &p);
    assert_eq!(rows, vec![vec![json!("f2")]]);
    assert_eq!(outcome, CacheOutcome::Stale);
    assert_eq!(rows, uncached(&g, BY_MODEL, &p));
    // Planned again on the new graph: a hit from now on.
    assert_eq!(cached(&cache, "o", &g, BY_MODEL, &p).1, CacheOutcome::Hit);
}

/// Symbols are numbered per graph: a plan for one graph must never run its symbol tests on
/// a graph that numbers the same strings differently (another org's, or a rebuilt one),
/// even under the same cache key.
#[test]
fn a_plan_is_not_used_on_a_graph_that_numbers_symbols_differently() {
    let mut a = OrgGraph::default();
    a.upsert_feedback(&item("a1", "m1", ValidationStatus::Approved));
    a.upsert_feedback(&item("a2", "m2", ValidationStatus::Approved));
    let mut b = OrgGraph::default();
    // Interned in the other order: m2 has the symbol m1 has in `a`.
    b.upsert_feedback(&item("b1", "m2", ValidationStatus::Approved));
    b.upsert_feedback(&item("b2", "m1", ValidationStatus::Approved));
    let cache = PlanCache::new(64);
    let p = params("m1");
    assert_eq!(
        cached(&cache, "o", &a, BY_MODEL, &p).0,
        vec![vec![json!("a1")]]
    );
    let (rows, outcome) = cached(&cache, "o", &b, BY_MODEL, &p);
    assert_eq!(rows, vec![vec![json!("b2")]]);
    assert_eq!(outcome, CacheOutcome::Stale);
}

/// The cost model's view of the graph is part of the plan: once a statistic it read moves
/// to another magnitude class, the text is planned again (and its rows never change).
#[test]
fn statistics_that_move_make_it_plan_again() {
    let mut g = OrgGraph::default();
    g.upsert_feedback(&item("f1", "m1", ValidationStatus::Approved));
    let cache = PlanCache::new(64);
    let q = "MATCH (f:Feedback) WHERE f.validation_status = 'flagged' RETURN count(*)";
    assert_eq!(
        cached(&cache, "o", &g, q, &Map::new()).1,
        CacheOutcome::Miss
    );
    assert_eq!(cached(&cache, "o", &g, q, &Map::new()).1, CacheOutcome::Hit);
    for i in 0..4 {
        g.upsert_feedback(&item(&format!("x{i}"), "m1", ValidationStatus::Flagged));
    }
    let (rows, outcome) = cached(&cache, "o", &g, q, &Map::new());
    assert_eq!(outcome, CacheOutcome::Stale);
    assert_eq!(rows, vec![vec![json!(4)]]);
}

#[test]
fn the_cache_is_bounded_and_keeps_what_is_used() {
    let g = OrgGraph::default();
    let cache = PlanCache::new(32);
    let hot = "MATCH (f:Feedback) RETURN count(*) AS hot";
    cached(&cache, "o", &g, hot, &Map::new());
    for i in 0..500 {
        let q = format!("MATCH (f:Feedback) RETURN count(*) AS c{i}");
        cached(&cache, "o", &g, &q, &Map::new());
        cached(&cache, "o", &g, hot, &Map::new());
        assert!(cache.len() <= cache.capacity(), "{} entries", cache.len());
    }
    assert!(cache.capacity() >= 32 && cache.capacity() < 64);
    assert_eq!(
        cached(&cache, "o", &g, hot, &Map::new()).1,
        CacheOutcome::Hit
    );
}

/// Forty items linked to every one of thirty adapters, one of them flagged; fifteen
/// adapters at version v1. Without statistics the planner guesses a status test keeps a
/// tenth of the items and starts at the (fewer) adapters; the counters say it keeps one
/// item, so it starts at the items. Both plans give the same rows.
#[test]
fn statistics_change_where_a_pattern_starts_not_its_rows() {
    let mut g = OrgGraph::default();
    for a in 0..30 {
        g.upsert_adapter(&adapter(
            &format!("a{a}"),
            if a % 2 == 0 { "v1" } else { "v2" },
        ));
    }
    for i in 0..40 {
        let status = if i == 7 {
            ValidationStatus::Flagged
        } else {
            ValidationStatus::Approved
        };
        let id = format!("f{i:02}");
        g.upsert_feedback(&item(&id, "m1", status));
        for a in 0..30 {
            link(&mut g, &id, &format!("a{a}"));
        }
    }
    let q = "MATCH (f:Feedback)-[:FEEDBACK_FOR]->(a:Adapter) \
             WHERE f.validation_status = 'flagged' AND a.version = 'v1' \
             RETURN f.id, a.id ORDER BY a.id";
    let none = Map::new();
    let limits = QueryLimits::default();
    let with = PlanOptions::default();
    let without = PlanOptions {
        statistics: false,
        ..PlanOptions::default()
    };
    let plan = |o: &PlanOptions| cypher::explain_with(&g, q, &none, &limits, o).unwrap();
    let (p_with, p_without) = (plan(&with), plan(&without));
    let start = |p: &cypher::plan::Plan| match &p.segments[0].ops[0] {
        Op::Scan { slot, .. } => p.slot_names[*slot].clone(),
        op => panic!("{op:?}"),
    };
    assert_eq!(start(&p_with), "f", "{}", p_with.explain());
    assert_eq!(start(&p_without), "a", "{}", p_without.explain());
    let rows = |o: &PlanOptions| {
        cypher::execute_with(&g, &NoText, q, &none, &limits, o)
            .unwrap()
            .rows
            .to_json()
    };
    let mut v1: Vec<String> = (0..30).step_by(2).map(|a| format!("a{a}")).collect();
    v1.sort();
    let expected: Vec<Vec<Value>> = v1.iter().map(|a| vec![json!("f07"), json!(a)]).collect();
    assert_eq!(rows(&with), expected);
    assert_eq!(rows(&without), expected);
}

fn metric(text: &str, result: &str) -> u64 {
    let prefix = format!("feedgraph_query_plan_cache_total{{result=\"{result}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Over HTTP: repeated texts hit the cache (counted in `/metrics`), and one org's plan
/// never answers another org's query with the same text.
#[tokio::test]
async fn repeated_queries_hit_over_http_and_orgs_stay_apart() {
    let server = TestServer::start().await;
    let (ta, tb) = (
        server.token("org-a", "alice", Role::User),
        server.token("org-b", "bob", Role::User),
    );
    let submit = |model: &'static str| {
        json!({"type": "positive", "question": "How do I plan?", "answer": "Once, then reuse.",
               "model_version": model})
    };
    for (t, model) in [(&ta, "m-a"), (&tb, "m-b"), (&tb, "m-b")] {
        let (status, body) = server.post(t, "/feedback", &submit(model)).await;
        assert_eq!(status, 201, "{body}");
    }
    let q = json!({"query": "MATCH (f:Feedback) WHERE f.model_version = $m RETURN count(*) AS n",
                   "params": {"m": "m-b"}});
    let metrics = || async {
        let r = server.get_open("/metrics").await;
        r.text().await.unwrap_or_default()
    };
    let before = metrics().await;
    let run = |t: String| {
        let q = q.clone();
        let server = &server;
        async move {
            let (status, body) = server.post(&t, "/graph/query", &q).await;
            assert_eq!(status, 200, "{body}");
            body["rows"].clone()
        }
    };
    assert_eq!(run(tb.clone()).await, json!([[2]]));
    assert_eq!(run(tb.clone()).await, json!([[2]]));
    // Same text and parameters in another org: its own plan, its own rows.
    assert_eq!(run(ta.clone()).await, json!([[0]]));
    assert_eq!(run(ta.clone()).await, json!([[0]]));
    let after = metrics().await;
    assert_eq!(metric(&after, "hit") - metric(&before, "hit"), 2, "{after}");
    assert_eq!(
        metric(&after, "miss") - metric(&before, "miss"),
        2,
        "{after}"
    );
    server.stop().await;
}
