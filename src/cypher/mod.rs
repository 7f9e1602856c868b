//! The openCypher engine over the graph index.
//!
//! A query goes through four stages, each with its own typed form:
//!
//! 1. [`dialect`]: the seed's `RETURN ... GROUP BY ... HAVING ...` is rewritten to standard
//!    openCypher (an offset map keeps error positions pointing at the user's text);
//! 2. `open_cypher::parse` turns the text into a spanned AST;
//! 3. `planner` lowers the AST into a [`plan::Plan`]: typed operators over row slots,
//!    patterns ordered by a cost model, filters as early as possible;
//! 4. `exec` runs the plan over one org's [`OrgGraph`] and builds the result [`Rows`], or
//!    hands them to a [`RowSink`] batch by batch ([`execute_streaming`]); [`arrow`] encodes
//!    such batches as an Arrow IPC stream.
//!
//! The executor never sees query text. Queries are read-only: write clauses are refused.
//!
//! Stages 1 to 3 run once per repeated text: [`execute_cached`] keeps plans in a
//! [`PlanCache`], keyed by org, text and parameter values, and uses one only on a graph
//! where what it took from the graph (symbols, statistics) still holds.
//!
//! # Values in results
//!
//! - A node is a JSON object of its properties plus `_id` (the node's internal index, the
//!   same number `id(n)` returns; stable while the process runs, not across restarts) and
//!   `_labels` (`["Feedback"]` or `["Adapter"]`). Absent (null) properties are left out.
//!   Feedback nodes include the fields the [`TextSource`] loads (see Properties).
//! - A relationship is an object of its properties plus `_id`
//!   (the same number `id(r)` returns: given when the relationship is made, it stays its id
//!   while it exists, whatever else is added or removed, and is not given to another one
//!   while the process runs; not stable across restarts), `_type`, `_start` and `_end`
//!   (node `_id`s).
//! - A path is a list alternating nodes and relationships, starting and ending with a node.
//! - Floats that are NaN or infinite become `null` (JSON has no spelling for them).
//!
//! # Properties
//!
//! Every field of a record as the REST API shows it is a property, with the same value
//! (JSON objects as maps, arrays as lists, absent fields as null):
//!
//! - Feedback: `id, type, validation_status, used_for_training, training_batch_id,
//!   created_at, updated_at, version, model_version, adapter_id, adapter_version, user_id,
//!   session_id, interaction_id, score` from the graph; `question, answer, correction,
//!   comment, validation_reasons, metadata, pii` from the [`TextSource`] (read lazily, only when
//!   a query uses them or returns the node); `org_id` from the [`TextSource`] too.
//! - Adapter: `id, version, base_model, derived_from, created_at, source, record_version`
//!   from the graph; `metadata` and `org_id` from the [`TextSource`].
//! - Relationships: `created_at, source` from the graph; a FEEDBACK_FOR edge's `metadata`
//!   (as `POST /feedback/{id}/link` shows it) from the [`TextSource`]; `type(r)` gives the
//!   type.
//!
//! A JSON integer outside the 64-bit signed range reads as a float, as it does in
//! parameters.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::graph::OrgGraph;

pub mod arrow;
mod budget;
mod cache;
pub mod dialect;
pub mod error;
mod eval;
mod exec;
mod group_scan;
pub mod plan;
mod planner;
mod rows;
mod value;

pub use budget::{MEMORY_KEY, MEMORY_TOTAL_KEY, MemoryPool, POOL_FREE, PoolShare};
pub use cache::{CacheOutcome, MAX_CACHED_TEXT, PlanCache};
pub use error::{CypherError, Limit, Position};
pub use rows::Rows;

/// Loads what the graph does not hold: the long text fields and JSON fields of feedback
/// items, adapters' metadata, and the org the graph belongs to.
///
/// The executor calls it only when a query reads one of these properties or returns a
/// node. Every method but [`TextSource::feedback_text`] has a default that knows nothing
/// (the property reads as null).
pub trait TextSource {
    /// The text of `field` (`question`, `answer`, `correction` or `comment`) of the feedback
    /// item `id`, or `None` if it has none.
    fn feedback_text(&self, id: &str, field: &str) -> Option<String>;

    /// The JSON value of `field` (`metadata` or `validation_reasons`) of the feedback item
    /// `id`, exactly as the item's record holds it.
    fn feedback_json(&self, _id: &str, _field: &str) -> Option<serde_json::Value> {
        None
    }

    /// Several stored fields of one item at once, in the order asked, texts as JSON
    /// strings (the executor uses this when it returns a whole node). The default asks
    /// [`TextSource::feedback_text`] or [`TextSource::feedback_json`] per field; a store
    /// can override it to read the record once.
    fn feedback_fields(&self, id: &str, fields: &[&str]) -> Vec<Option<serde_json::Value>> {
        fields
            .iter()
            .map(|f| match *f {
                "question" | "answer" | "correction" | "comment" => {
                    self.feedback_text(id, f).map(serde_json::Value::String)
                }
                other => self.feedback_json(id, other),
            })
            .collect()
    }

    /// The metadata object of the FEEDBACK_FOR edge from feedback item `feedback_id` to
    /// adapter `adapter_id`.
    fn link_metadata(
        &self,
        _feedback_id: &str,
        _adapter_id: &str,
    ) -> Option<serde_json::Map<String, serde_json::Value>> {
        None
    }

    /// The metadata object of the adapter `id`.
    fn adapter_metadata(&self, _id: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
        None
    }

    /// The org whose graph is queried: the `org_id` of every node.
    fn org_id(&self) -> Option<&str> {
        None
    }
}

/// A [`TextSource`] without any text: text properties read as null.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoText;

impl TextSource for NoText {
    fn feedback_text(&self, _id: &str, _field: &str) -> Option<String> {
        None
    }
}

/// Bounds on one query. Exceeding any of them stops the query with
/// [`CypherError::LimitExceeded`] naming the limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryLimits {
    /// Wall-clock time (checked every few thousand units of work, inside expressions too,
    /// and per output batch). For a streamed query, the time until its first batch of rows
    /// is handed to the sink; after that [`QueryLimits::stream_timeout`] applies.
    pub timeout: Duration,
    /// Wall-clock time of a streamed query once its rows are flowing. Its memory is bounded
    /// by the batch size whatever the row count, and its graph work by `max_work`, so a big answer
    /// (the seed's lineage with paths at 1M is gigabytes of JSON) may take longer than a
    /// query that holds its whole result. Never shorter than `timeout` in effect.
    pub stream_timeout: Duration,
    /// Rows returned.
    pub max_rows: usize,
    /// Work: nodes scanned, relationships examined, and list elements built or visited by
    /// expressions (ranges, comprehensions, list and string operations, collected values).
    pub max_work: u64,
    /// Memory, in bytes, a query may hold at once (an estimate): values built by
    /// expressions, values bound in rows, collected, DISTINCT, sort and grouping state, and
    /// the result (its cells plus the estimated JSON size of every row; for a streamed
    /// query, only the rows of the batch not yet handed over).
    pub max_memory: u64,
    /// Longest variable-length path; `*` without an upper bound is capped here (and reaching
    /// the cap with more to follow is an error, not a silent cut). Values above 1000 act as
    /// 1000, since the traversal recurses once per relationship.
    pub max_depth: u32,
    /// The query's org's share of the server's pool that bounds what every running query
    /// holds together (`query.max_memory_total_bytes`); `None`: no bound beyond
    /// `max_memory`.
    pub memory_pool: Option<PoolShare>,
}

impl Default for QueryLimits {
    fn default() -> Self {
        QueryLimits {
            timeout: Duration::from_secs(5),
            stream_timeout: Duration::from_secs(600),
            max_rows: 10_000,
            max_work: 50_000_000,
            max_memory: 256 * 1024 * 1024,
            max_depth: 30,
            memory_pool: None,
        }
    }
}

/// How much a query did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct QueryStats {
    /// Rows returned.
    pub rows: usize,
    /// Work done (see [`QueryLimits::max_work`]).
    pub work: u64,
    /// The most memory the query held at once, in bytes (the estimate
    /// [`QueryLimits::max_memory`] bounds).
    pub memory_bytes: u64,
    /// Wall-clock time, microseconds.
    pub elapsed_us: u64,
}

/// The answer to a query.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct QueryResult {
    /// Column names: aliases, or the expression as written.
    pub columns: Vec<String>,
    /// Rows, one value per column; they serialize as arrays of JSON values
    /// ([`Rows::to_json`] gives those values).
    #[schema(value_type = Vec<Vec<serde_json::Value>>)]
    pub rows: Rows,
    /// What it cost.
    pub stats: QueryStats,
}

/// Planner switches. [`execute`] and [`explain`] use the defaults (everything on); turning an
/// optimization off gives the plain plan to compare with, which is what tests do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PlanOptions {
    /// Aggregate pushdown: a count over a final expansion whose far node and relationship
    /// nothing reads adds the node's degree instead of enumerating the relationships
    /// ([`plan::Op::ExpandCount`]).
    pub count_pushdown: bool,
    /// Column statistics: the cost model estimates filters on a feedback item's type,
    /// status, used flag and model version from the org's counters instead of a fixed
    /// guess, which can change where a pattern starts (never its rows).
    pub statistics: bool,
    /// The pair grouper: rows of a scan and two expansions counted by two of their nodes
    /// are grouped by sorting packed node pairs instead of hashing each row
    /// ([`plan::Sink::PairCount`]).
    pub pair_count: bool,
    /// Columnar grouped aggregation: a one-hop match grouped by one end runs as a walk of
    /// that end's nodes and adjacency lists, reading columns into per-group counters
    /// ([`plan::GroupScan`]), instead of row by row.
    pub group_scan: bool,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            count_pushdown: true,
            statistics: true,
            pair_count: true,
            group_scan: true,
        }
    }
}

/// Runs a read-only openCypher query (with the GROUP BY / HAVING dialect) on one org's graph.
///
/// `params` are the query's `$name` parameters. Errors carry the position in `query` where
/// that makes sense.
pub fn execute(
    graph: &OrgGraph,
    text: &dyn TextSource,
    query: &str,
    params: &serde_json::Map<String, serde_json::Value>,
    limits: &QueryLimits,
) -> Result<QueryResult, CypherError> {
    execute_with(graph, text, query, params, limits, &PlanOptions::default())
}

/// [`execute`] with explicit [`PlanOptions`].
pub fn execute_with(
    graph: &OrgGraph,
    text: &dyn TextSource,
    query: &str,
    params: &serde_json::Map<String, serde_json::Value>,
    limits: &QueryLimits,
    options: &PlanOptions,
) -> Result<QueryResult, CypherError> {
    run_query(graph, text, query, params, limits, options, None)
}

/// [`execute`] that stops with [`CypherError::Cancelled`] soon after `cancel` turns true
/// (it is read every few thousand units of work): the HTTP layer sets it when the client
/// hangs up.
pub fn execute_cancellable(
    graph: &OrgGraph,
    text: &dyn TextSource,
    query: &str,
    params: &serde_json::Map<String, serde_json::Value>,
    limits: &QueryLimits,
    cancel: &AtomicBool,
) -> Result<QueryResult, CypherError> {
    run_query(
        graph,
        text,
        query,
        params,
        limits,
        &PlanOptions::default(),
        Some(cancel),
    )
}

/// How a streamed query ([`execute_streaming`]) hands over its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamOptions {
    /// Most rows in one batch (at least 1).
    pub batch_rows: usize,
    /// A batch is handed over early once its rows' estimated JSON size reaches this many
    /// bytes, so a batch of wide rows stays small.
    pub batch_bytes: u64,
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions {
            batch_rows: 8192,
            batch_bytes: 1024 * 1024,
        }
    }
}

/// Receives a streamed query's result: its columns once, then its rows in batches.
pub trait RowSink {
    /// The result's columns, once the query is planned and before it runs. An error
    /// before this call is the query's own (syntax, semantics, parameters).
    fn begin(&mut self, columns: &[String]) -> Result<(), CypherError>;

    /// The next rows, in result order. An error stops the query and is its result (a
    /// sink whose reader went away answers [`CypherError::Cancelled`]).
    fn batch(&mut self, rows: Rows) -> Result<(), CypherError>;

    /// How large the batches should be.
    fn options(&self) -> StreamOptions {
        StreamOptions::default()
    }
}

/// [`execute_cancellable`] that hands the rows to `sink` in batches as they are produced,
/// instead of collecting them: the memory budget stops counting rows once the sink has
/// them, so a result of any size runs in bounded memory (`max_rows` still caps the count).
/// The plan comes from `cache` as in [`execute_cached`]. Returns what the query cost, and
/// how the plan was found. The batches keep `graph` (a shared snapshot) alive: a node id
/// in them may be a reference into it, read when the batch is written out.
#[allow(clippy::too_many_arguments)]
pub fn execute_streaming(
    graph: &Arc<OrgGraph>,
    text: &dyn TextSource,
    query: &str,
    params: &serde_json::Map<String, serde_json::Value>,
    limits: &QueryLimits,
    cancel: &AtomicBool,
    sink: &mut dyn RowSink,
    cache: &PlanCache,
    org: &str,
) -> (Result<QueryStats, CypherError>, CacheOutcome) {
    let started = Instant::now();
    let options = sink.options();
    let (plan, outcome) = cached_plan(graph, query, params, limits, cache, org);
    let run = || -> Result<QueryStats, CypherError> {
        let p = plan?;
        sink.begin(&p.columns)?;
        let out = exec::run(
            &p,
            graph,
            Some(graph),
            text,
            limits,
            started,
            Some(cancel),
            Some((&mut *sink, options)),
        )
        .map_err(|e| *e)?;
        Ok(QueryStats {
            rows: out.total,
            work: out.work,
            memory_bytes: out.memory,
            elapsed_us: started.elapsed().as_micros() as u64,
        })
    };
    (run().map_err(|e| e.locate(query)), outcome)
}

/// The plan of `query` on `graph`: from `cache` while what it took from the graph still
/// holds, else made now (and kept).
fn cached_plan(
    graph: &OrgGraph,
    query: &str,
    params: &serde_json::Map<String, serde_json::Value>,
    limits: &QueryLimits,
    cache: &PlanCache,
    org: &str,
) -> (
    Result<std::sync::Arc<plan::Plan>, CypherError>,
    CacheOutcome,
) {
    let options = PlanOptions::default();
    let plan = || prepare(graph, query, params, limits, &options);
    match serde_json::to_string(params) {
        Ok(params) => {
            let key = cache::Key {
                org,
                text: query,
                params: &params,
                max_depth: limits.max_depth,
                options,
            };
            cache.get_or_plan(&key, graph, plan)
        }
        Err(_) => (plan().map(std::sync::Arc::new), CacheOutcome::Bypass),
    }
}

/// [`execute_cancellable`] on `org`'s graph with its plan from `cache`: a text with the
/// same parameters is parsed and planned once while what its plan took from the graph
/// still holds (see [`PlanCache`]). Also says how the plan was found. The rows keep
/// `graph` (a shared snapshot) alive: a node id in them may be a reference into it.
#[allow(clippy::too_many_arguments)]
pub fn execute_cached(
    graph: &Arc<OrgGraph>,
    text: &dyn TextSource,
    query: &str,
    params: &serde_json::Map<String, serde_json::Value>,
    limits: &QueryLimits,
    cancel: &AtomicBool,
    cache: &PlanCache,
    org: &str,
) -> (Result<QueryResult, CypherError>, CacheOutcome) {
    let started = Instant::now();
    let (plan, outcome) = cached_plan(graph, query, params, limits, cache, org);
    let result =
        plan.and_then(|p| run_plan(&p, graph, Some(graph), text, limits, started, Some(cancel)));
    (result.map_err(|e| e.locate(query)), outcome)
}

/// Runs a plan made for `graph` (or for a graph its [`plan::PlanDeps`] hold on).
fn run_plan(
    p: &plan::Plan,
    graph: &OrgGraph,
    shared: Option<&Arc<OrgGraph>>,
    text: &dyn TextSource,
    limits: &QueryLimits,
    started: Instant,
    cancel: Option<&AtomicBool>,
) -> Result<QueryResult, CypherError> {
    let out = exec::run(p, graph, shared, text, limits, started, cancel, None).map_err(|e| *e)?;
    Ok(QueryResult {
        columns: p.columns.clone(),
        stats: QueryStats {
            rows: out.rows.len(),
            work: out.work,
            memory_bytes: out.memory,
            elapsed_us: started.elapsed().as_micros() as u64,
        },
        rows: out.rows,
    })
}

fn run_query(
    graph: &OrgGraph,
    text: &dyn TextSource,
    query: &str,
    params: &serde_json::Map<String, serde_json::Value>,
    limits: &QueryLimits,
    options: &PlanOptions,
    cancel: Option<&AtomicBool>,
) -> Result<QueryResult, CypherError> {
    let started = Instant::now();
    let run = || -> Result<QueryResult, CypherError> {
        let p = prepare(graph, query, params, limits, options)?;
        run_plan(&p, graph, None, text, limits, started, cancel)
    };
    run().map_err(|e| e.locate(query))
}

/// Plans a query without running it (for EXPLAIN-style tooling and tests).
pub fn explain(
    graph: &OrgGraph,
    query: &str,
    params: &serde_json::Map<String, serde_json::Value>,
    limits: &QueryLimits,
) -> Result<plan::Plan, CypherError> {
    explain_with(graph, query, params, limits, &PlanOptions::default())
}

/// [`explain`] with explicit [`PlanOptions`].
pub fn explain_with(
    graph: &OrgGraph,
    query: &str,
    params: &serde_json::Map<String, serde_json::Value>,
    limits: &QueryLimits,
    options: &PlanOptions,
) -> Result<plan::Plan, CypherError> {
    prepare(graph, query, params, limits, options).map_err(|e| e.locate(query))
}

fn prepare(
    graph: &OrgGraph,
    query: &str,
    params: &serde_json::Map<String, serde_json::Value>,
    limits: &QueryLimits,
    options: &PlanOptions,
) -> Result<plan::Plan, CypherError> {
    let rw = dialect::rewrite(query)?;
    let parsed = open_cypher::parse(&rw.text).map_err(|errs| {
        let first = errs.diagnostics().first();
        let (message, offset) = match first {
            Some(d) => (d.message.clone(), rw.map.to_original(d.primary_span.start)),
            None => ("invalid query".to_owned(), 0),
        };
        CypherError::Syntax {
            message,
            line: 0,
            column: 0,
            offset,
        }
    })?;
    planner::plan(
        &parsed.program,
        &rw.text,
        &rw.map,
        params,
        graph,
        limits,
        options,
    )
}

/// A query shipped with feedgraph (from `queries/`), runnable by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct NamedQuery {
    /// Name (the file name without `.cypher`).
    #[schema(value_type = String)]
    pub name: &'static str,
    /// One-line description (the file's first `//` line).
    #[schema(value_type = String)]
    pub description: &'static str,
    /// Parameter names without `$` (the file's `// params:` line).
    #[schema(value_type = Vec<String>)]
    pub params: Vec<&'static str>,
    /// The query text (the whole file, comments included).
    #[schema(value_type = String)]
    pub query: &'static str,
}

const QUERY_FILES: [(&str, &str); 4] = [
    (
        "by_adapter",
        include_str!("../../queries/by_adapter.cypher"),
    ),
    (
        "adapter_stats",
        include_str!("../../queries/adapter_stats.cypher"),
    ),
    ("lineage", include_str!("../../queries/lineage.cypher")),
    (
        "shared_feedback",
        include_str!("../../queries/shared_feedback.cypher"),
    ),
];

fn named_query(name: &'static str, text: &'static str) -> NamedQuery {
    let mut description = "";
    let mut params = Vec::new();
    for line in text.lines().map(str::trim) {
        let Some(comment) = line.strip_prefix("//") else {
            break;
        };
        let comment = comment.trim();
        if let Some(list) = comment.strip_prefix("params:") {
            params = list
                .split(',')
                .map(|p| p.trim().trim_start_matches('$'))
                .filter(|p| !p.is_empty() && *p != "none")
                .collect();
        } else if description.is_empty() {
            description = comment;
        }
    }
    NamedQuery {
        name,
        description,
        params,
        query: text,
    }
}

/// The named queries of `queries/`, compiled into the binary.
pub fn named_queries() -> Vec<NamedQuery> {
    QUERY_FILES
        .iter()
        .map(|(name, text)| named_query(name, text))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::plan::{Op, Sink};
    use super::*;
    use crate::model::{Adapter, Feedback, FeedbackLink, LinkSource, Metadata};

    fn feedback(id: &str, adapter: Option<&str>) -> Feedback {
        let mut f = Feedback::sample(id, "t");
        f.model_version = Some("m".into());
        f.adapter_id = adapter.map(str::to_owned);
        f.question = "q".into();
        f.answer = "a".into();
        f
    }

    /// Two adapters (child -> root) and three feedback items linked to them.
    fn graph() -> OrgGraph {
        let mut g = OrgGraph::default();
        for (id, parent) in [("root", None), ("child", Some("root"))] {
            g.upsert_adapter(&Adapter {
                id: id.into(),
                org_id: "t".into(),
                version: None,
                base_model: None,
                derived_from: parent.map(str::to_owned),
                metadata: Metadata::default(),
                created_at: 1,
                source: LinkSource::Manual,
                record_version: 1,
            });
        }
        for (i, a) in [(1, "child"), (2, "child"), (3, "root")] {
            let f = feedback(&format!("feedback-{i}"), Some(a));
            g.upsert_feedback(&f);
            g.add_link(&FeedbackLink {
                feedback_id: f.id.clone(),
                adapter_id: a.into(),
                created_at: 1,
                source: LinkSource::Auto,
                metadata: Metadata::default(),
            });
        }
        g
    }

    fn first_op(g: &OrgGraph, q: &str) -> Op {
        let mut params = serde_json::Map::new();
        params.insert("x".into(), "child".into());
        let p = explain(g, q, &params, &QueryLimits::default()).unwrap();
        p.segments[0].ops[0].clone()
    }

    #[test]
    fn planner_seeks_by_id() {
        let g = graph();
        for q in [
            "MATCH (f:Feedback)-[:FEEDBACK_FOR]->(a:Adapter {id: $x}) RETURN f.id",
            "MATCH (f:Feedback)-[:FEEDBACK_FOR]->(a:Adapter) WHERE a.id = 'child' RETURN f.id",
            "MATCH (f:Feedback)-[:FEEDBACK_FOR]->(a:Adapter) WHERE $x = a.id AND f.type = 'positive' RETURN f.id",
            "MATCH (a:Adapter)<-[:FEEDBACK_FOR]-(f) WHERE f.id = 'feedback-1' RETURN a.id",
        ] {
            let op = first_op(&g, q);
            assert!(matches!(op, Op::Seek { .. }), "{q}: {op:?}");
        }
        // The key must not depend on the pattern itself: that is a filter, not a seek.
        let op = first_op(
            &g,
            "MATCH (f:Feedback)-[:FEEDBACK_FOR]->(a:Adapter) WHERE a.id = f.adapter_id RETURN f.id",
        );
        assert!(matches!(op, Op::Scan { .. }), "{op:?}");
        // Seeks run: two items are linked to `child`.
        let r = execute(
            &g,
            &NoText,
            "MATCH (f:Feedback)-[:FEEDBACK_FOR]->(a:Adapter {id: 'child'}) RETURN f.id ORDER BY f.id",
            &serde_json::Map::new(),
            &QueryLimits::default(),
        )
        .unwrap();
        assert_eq!(
            r.rows,
            vec![
                vec![serde_json::json!("feedback-1")],
                vec![serde_json::json!("feedback-2")]
            ]
        );
    }

    #[test]
    fn planner_starts_from_the_seek_and_filters_early() {
        let g = graph();
        let p = explain(
            &g,
            "MATCH (f:Feedback)-[:FEEDBACK_FOR]->(a1:Adapter)-[:DERIVED_FROM*]->(a2:Adapter) \
             WHERE a2.id = 'root' AND f.type = 'positive' RETURN f.id",
            &serde_json::Map::new(),
            &QueryLimits::default(),
        )
        .unwrap();
        let ops = &p.segments[0].ops;
        assert!(matches!(ops[0], Op::Seek { .. }), "{}", p.explain());
        assert!(matches!(ops[1], Op::VarExpand(_)), "{}", p.explain());
        assert!(matches!(ops[2], Op::Expand(_)), "{}", p.explain());
        // The filter on f comes right after f is bound.
        assert!(matches!(ops[3], Op::Filter(_)), "{}", p.explain());
        // Grouping by a node's id groups by node.
        let p = explain(
            &g,
            "MATCH (f)-[:FEEDBACK_FOR]->(a:Adapter) RETURN a.id, count(f)",
            &serde_json::Map::new(),
            &QueryLimits::default(),
        )
        .unwrap();
        assert!(
            matches!(&p.segments[0].sink, Sink::Aggregate { nodes: Some(n), .. } if n.len() == 1)
        );
    }

    #[test]
    fn counts_over_a_final_expansion_use_degrees() {
        let g = graph();
        let none = serde_json::Map::new();
        let limits = QueryLimits::default();
        let q = "MATCH (f:Feedback)-[:FEEDBACK_FOR]->(a1:Adapter)-[:DERIVED_FROM*1..30]->(a2:Adapter) \
                 WHERE a2.id = 'root' RETURN count(*)";
        let p = explain(&g, q, &none, &limits).unwrap();
        let text = p.explain();
        let ops = &p.segments[0].ops;
        assert!(matches!(ops[0], Op::Seek { .. }), "{text}");
        assert!(matches!(ops[1], Op::VarExpand(_)), "{text}");
        assert!(matches!(ops[2], Op::ExpandCount(_)), "{text}");
        assert_eq!(ops.len(), 3, "{text}");
        assert!(
            matches!(
                &p.segments[0].sink,
                Sink::Aggregate {
                    weight: Some(_),
                    ..
                }
            ),
            "{text}"
        );
        assert!(
            text.contains("ExpandCount a1 -In-> f :Feedback") && text.contains("(weighted)"),
            "{text}"
        );
        // child has two items, and it is the only adapter below root.
        let r = execute(&g, &NoText, q, &none, &limits).unwrap();
        assert_eq!(r.rows, vec![vec![serde_json::json!(2)]]);
        // Off, the same plan enumerates.
        let off = PlanOptions {
            count_pushdown: false,
            ..PlanOptions::default()
        };
        let p = explain_with(&g, q, &none, &limits, &off).unwrap();
        assert!(
            matches!(p.segments[0].ops[2], Op::Expand(_)),
            "{}",
            p.explain()
        );
        // Reading the far node keeps the enumeration.
        let q = "MATCH (f:Feedback)-[:FEEDBACK_FOR]->(a1:Adapter)-[:DERIVED_FROM*1..30]->(a2:Adapter) \
                 WHERE a2.id = 'root' RETURN count(*), collect(f.id)";
        let p = explain(&g, q, &none, &limits).unwrap();
        assert!(!p.explain().contains("ExpandCount"), "{}", p.explain());
    }

    #[test]
    fn syntax_errors_point_into_the_original_text() {
        let g = graph();
        let none = serde_json::Map::new();
        let err = |q: &str| execute(&g, &NoText, q, &none, &QueryLimits::default()).unwrap_err();
        match err("MATCH (f:Feedback)\nWHERE f.type = = 'x'\nRETURN f") {
            CypherError::Syntax { line, column, .. } => assert_eq!((line, column), (2, 16)),
            e => panic!("{e:?}"),
        }
        // After the GROUP BY / HAVING rewrite the position is still the user's.
        let q = "MATCH (f)-->(a)\nRETURN a.id, count(f) AS n\nGROUP BY a.id\nHAVING n > > 1";
        match err(q) {
            CypherError::Syntax {
                line,
                column,
                offset,
                ..
            } => {
                assert_eq!(line, 4, "{q}");
                assert_eq!(offset, q.rfind("> 1").unwrap(), "{q}");
                assert_eq!(column, 12);
            }
            e => panic!("{e:?}"),
        }
        // Semantic errors carry positions too.
        let q = "MATCH (f) RETURN g";
        match err(q) {
            CypherError::Semantic { position, .. } => {
                assert_eq!(position.unwrap().column, 18);
            }
            e => panic!("{e:?}"),
        }
    }
}
