//! The executor: runs a [`Plan`] over one org's [`OrgGraph`].
//!
//! Operators are push-based: each one binds slots of a single reusable row and calls the rest
//! of the pipeline, so a MATCH over millions of edges allocates nothing per row (nodes and
//! relationships are bound as indices). A LIMIT that is satisfied returns [`Flow::Stop`],
//! which unwinds every loop above it at once. Aggregation and sorting collect rows and feed
//! the next segment; the output sink turns rows into JSON.
//!
//! Every node scanned and every edge examined counts as one unit of work; the work and the
//! wall clock are checked against the [`QueryLimits`] as the query runs, and the number of
//! returned rows when it produces them.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use super::TextSource;
use super::budget::{Budget, VALUE_BYTES};
use super::error::{CypherError, Fail, Limit};
use super::eval::Env;
use super::plan::*;
use super::rows::{Cell, Rows, node_id_str};
use super::value::{FastBuild, Value, order_cmp};
use super::{QueryLimits, RowSink, StreamOptions};
use crate::graph::{Direction, EdgeKind, NodeRef, OrgGraph};
use crate::model::{FeedbackType, ValidationStatus};

pub(super) type Row<'a> = Vec<Value<'a>>;

#[path = "pair_group.rs"]
pub(super) mod pair_group;

/// Binds a node in `row[slot]`. When the slot already holds a node (the previous iteration's),
/// only the `NodeRef` is overwritten: building a whole `Value` on the stack and copying it
/// in costs a store-forwarding stall per row in the hot loops.
#[inline(always)]
fn set_node(row: &mut [Value<'_>], slot: Slot, n: NodeRef) {
    match &mut row[slot] {
        Value::Node(m) => *m = n,
        other => *other = Value::Node(n),
    }
}

/// Binds a relationship in `row[slot]` (see [`set_node`]).
#[inline(always)]
fn set_rel(row: &mut [Value<'_>], slot: Slot, e: u32) {
    match &mut row[slot] {
        Value::Rel(x) => *x = e,
        other => *other = Value::Rel(e),
    }
}

/// The directions to walk for `dir`, in the order the executor walks them.
fn dirs(dir: Dir) -> &'static [Direction] {
    match dir {
        Dir::Out => &[Direction::Outgoing],
        Dir::In => &[Direction::Incoming],
        Dir::Both => &[Direction::Outgoing, Direction::Incoming],
    }
}

/// The incoming edges of `node` accepted by `types`, as the dense list of their source rows
/// and the type, when the graph keeps one: a single type into an adapter (the graph's
/// per-adapter FEEDBACK_FOR and DERIVED_FROM lists) or anything into a feedback node (none:
/// FEEDBACK_FOR edges start at Feedback nodes and DERIVED_FROM edges join adapters). The list
/// is in edge order; petgraph's incoming walk is its reverse, which is the order used.
#[inline]
pub(super) fn in_list(g: &OrgGraph, node: NodeRef, types: RelKinds) -> Option<(&[u32], EdgeKind)> {
    match (node, types.feedback_for, types.derived_from) {
        (NodeRef::Feedback(_), _, _) => Some((&[], EdgeKind::FeedbackFor)),
        (NodeRef::Adapter(r), true, false) => Some((g.feedback_in(r), EdgeKind::FeedbackFor)),
        (NodeRef::Adapter(r), false, true) => Some((g.child_rows(r), EdgeKind::DerivedFrom)),
        _ => None,
    }
}

/// The node a source row of an [`in_list`] stands for.
#[inline]
pub(super) fn source_ref(kind: EdgeKind, row: u32) -> NodeRef {
    match kind {
        EdgeKind::FeedbackFor => NodeRef::Feedback(row),
        EdgeKind::DerivedFrom => NodeRef::Adapter(row),
    }
}

/// How many rows ahead [`warm_feedback`] loads a row's id entry; its string is loaded
/// half as far ahead, once the entry is in cache.
const WARM_AHEAD: usize = 16;

/// Loads, ahead of use, the id column entries of the feedback rows a walk down `list` (from
/// the end) will reach in a few steps, and their id strings: they are scattered over
/// memory, and reading them one at a time as the walk arrives leaves the core waiting on
/// each in turn. Issuing the loads early lets them overlap with the work on the current
/// rows. Plain loads whose values are discarded through `black_box`, so no unsafe prefetch
/// intrinsics.
///
/// Without `text`, only the id entries are loaded (a result whose ids are references into
/// the graph never reads their strings).
#[inline(always)]
fn warm_feedback(g: &OrgGraph, list: &[u32], i: usize, text: bool) {
    let rows = g.feedback();
    if let Some(id) = i
        .checked_sub(WARM_AHEAD)
        .and_then(|j| list.get(j))
        .and_then(|&r| rows.id(r))
    {
        std::hint::black_box(id.len());
    }
    if text
        && let Some(id) = i
            .checked_sub(WARM_AHEAD / 2)
            .and_then(|j| list.get(j))
            .and_then(|&r| rows.id(r))
    {
        std::hint::black_box(id.as_bytes().first().copied());
    }
}

/// Whether upstream operators should keep producing rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    /// Keep going.
    Go,
    /// A LIMIT is satisfied: stop producing.
    Stop,
}

type R = Result<Flow, Fail>;
type SinkFn<'s, 'a> = dyn FnMut(&mut Exec<'a>, &mut Row<'a>) -> R + 's;

pub(crate) struct Exec<'a> {
    env: Env<'a>,
    limits: &'a QueryLimits,
    counters: Vec<u64>,
    counts: Vec<Option<u64>>,
    seen: Vec<HashSet<Box<[Value<'a>]>, FastBuild>>,
    /// Whether walks over feedback rows load their id strings ahead of use (see
    /// [`warm_feedback`]): not when the segment returns ids as references into the graph.
    warm_text: bool,
    /// Whether walks over feedback lists load the rows' id entries ahead of use (see
    /// [`warm_feedback`]); off when nothing downstream reads them.
    warm_ids: bool,
}

/// Result rows and the work done.
pub(crate) struct Output {
    /// The rows not handed to a sink (all of them when the query is not streamed).
    pub rows: Rows,
    /// Rows produced in all.
    pub total: usize,
    pub work: u64,
    /// The most memory the query held at once (the budget's estimate).
    pub memory: u64,
}

/// Where a column's last borrowed string went: its address and length, and its place in
/// the result's text buffer.
type LastStr = Option<(usize, usize, (usize, u32))>;

/// Nodes and relationships this query has already turned into JSON, shared by every cell
/// that returns them: a lineage path repeats the same adapters and DERIVED_FROM edges in
/// row after row, and a feedback node's texts are read once. Each is kept with the length
/// of its JSON text, which every cell that returns it adds to the response.
#[derive(Default)]
struct SharedJson {
    nodes: HashMap<u64, (Arc<serde_json::Value>, u64), FastBuild>,
    rels: HashMap<u32, (Arc<serde_json::Value>, u64), FastBuild>,
}

/// The length of `v` as JSON text, found by walking the value instead of serializing it
/// (which cost a sixth of a whole-node query). Strings count their bytes and quotes but not
/// escapes: scanning every text for characters to escape cost as much again, and the texts
/// a query returns are stored fields, whose length validation bounds; floats count their
/// longest form.
fn json_len(v: &serde_json::Value) -> u64 {
    match v {
        serde_json::Value::Null => 4,
        serde_json::Value::Bool(_) => 5,
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => int_len(i),
            None => 24,
        },
        serde_json::Value::String(s) => str_json_len(s),
        serde_json::Value::Array(items) => 2 + items.iter().map(|x| json_len(x) + 1).sum::<u64>(),
        serde_json::Value::Object(m) => {
            2 + m
                .iter()
                .map(|(k, x)| str_json_len(k) + 2 + json_len(x))
                .sum::<u64>()
        }
    }
}

/// The length of `s` as a JSON string without escapes: its bytes and its quotes.
#[inline]
fn str_json_len(s: &str) -> u64 {
    s.len() as u64 + 2
}

/// The length of an integer as JSON text.
#[inline]
fn int_len(i: i64) -> u64 {
    u64::from(i.unsigned_abs().checked_ilog10().unwrap_or(0)) + 1 + u64::from(i < 0)
}

impl SharedJson {
    fn node(&mut self, env: &Env<'_>, n: NodeRef, est: &mut u64) -> Arc<serde_json::Value> {
        let key = match n {
            NodeRef::Feedback(r) => u64::from(r),
            NodeRef::Adapter(r) => (1 << 32) | u64::from(r),
        };
        let (v, len) = self.nodes.entry(key).or_insert_with(|| {
            let v = env.node_json(n);
            let len = json_len(&v);
            (Arc::new(v), len)
        });
        *est += *len;
        v.clone()
    }

    fn rel(&mut self, env: &Env<'_>, e: u32, est: &mut u64) -> Arc<serde_json::Value> {
        let (v, len) = self.rels.entry(e).or_insert_with(|| {
            let v = env.rel_json(e);
            let len = json_len(&v);
            (Arc::new(v), len)
        });
        *est += *len;
        v.clone()
    }
}

/// The result cell of `v`; adds the length of its JSON text and the cells it takes to `est`.
fn value_cell<'a>(
    env: &Env<'a>,
    out: &mut Rows,
    shared: &mut SharedJson,
    v: &Value<'a>,
    est: &mut u64,
) -> Result<Cell, Fail> {
    Ok(match v {
        Value::Null => {
            *est += 4;
            Cell::Null
        }
        Value::Bool(b) => {
            *est += 5;
            Cell::Bool(*b)
        }
        Value::Int(i) => {
            *est += int_len(*i);
            Cell::Int(*i)
        }
        Value::Float(f) => {
            *est += 24;
            Cell::float(*f)
        }
        Value::Str(_) | Value::Text(_) => {
            let s = v.as_str().unwrap_or("");
            *est += s.len() as u64 + 2;
            out.str_cell(s)
        }
        Value::Node(n) => Cell::Shared(shared.node(env, *n, est)),
        Value::Rel(e) => Cell::Shared(shared.rel(env, *e, est)),
        Value::List(items) => {
            // Each element is a cell of its own and a separator in the text.
            let n = items.len() as u64;
            env.budget.tick_n(n)?;
            *est += 2 + n * (1 + CELL_BYTES);
            let mut cells = Vec::with_capacity(items.len());
            for x in items.iter() {
                cells.push(value_cell(env, out, shared, x, est)?);
            }
            Cell::List(cells.into())
        }
        Value::Path(p) => {
            let n = (p.nodes.len() + p.rels.len()) as u64;
            *est += 2 + n * (1 + CELL_BYTES);
            let mut cells = Vec::with_capacity(p.nodes.len() + p.rels.len());
            for (i, node) in p.nodes.iter().enumerate() {
                if i > 0
                    && let Some(e) = p.rels.get(i - 1)
                {
                    cells.push(Cell::Shared(shared.rel(env, *e, est)));
                }
                cells.push(Cell::Shared(shared.node(env, *node, est)));
            }
            Cell::List(cells.into())
        }
        Value::Map(_) => {
            let j = env.to_json(v);
            // A JSON value in memory takes a few times its text.
            *est += 3 * json_len(&j);
            Cell::Json(Box::new(j))
        }
    })
}

/// The bytes one result cell takes.
const CELL_BYTES: u64 = std::mem::size_of::<Cell>() as u64;

/// Appends `v` to the row being built in `out`; returns the length of its JSON text (plus
/// what nested cells take), which the output charges to the budget.
#[inline]
fn push_cell<'a>(
    env: &Env<'a>,
    out: &mut Rows,
    shared: &mut SharedJson,
    v: &Value<'a>,
    last: &mut LastStr,
) -> Result<u64, Fail> {
    Ok(match v {
        Value::Null => {
            out.push_null();
            4
        }
        Value::Bool(b) => {
            out.push_bool(*b);
            5
        }
        Value::Int(i) => {
            out.push_int(*i);
            int_len(*i)
        }
        Value::Float(f) => {
            out.push_float(*f);
            24
        }
        // A string borrowed from the graph or the plan stays in place, unchanged, for the
        // whole query: the same address and length is the same string, stored once (but
        // written out every time).
        Value::Str(s) => {
            let key = (s.as_ptr() as usize, s.len());
            match *last {
                Some((p, l, at)) if (p, l) == key => out.push_stored(at),
                _ => *last = out.push_str(s).map(|at| (key.0, key.1, at)),
            }
            s.len() as u64 + 2
        }
        Value::Text(s) => {
            out.push_str(s);
            2 * s.len() as u64 + 2
        }
        other => {
            let mut est = 0;
            let cell = value_cell(env, out, shared, other, &mut est)?;
            out.push(cell);
            est
        }
    })
}

/// Runs `plan` on `g`, within `limits`, until done or `cancel` turns true.
///
/// With `stream`, result rows go to the sink in batches as they are produced and the
/// budget stops counting them once the sink has them; the sink's error stops the query.
/// When `shared` is the snapshot `g` is, the rows keep it and node ids they return are
/// references into it ([`Cell::Id`]) rather than copies.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run<'a>(
    plan: &'a Plan,
    g: &'a OrgGraph,
    shared: Option<&Arc<OrgGraph>>,
    text: &'a dyn TextSource,
    limits: &'a QueryLimits,
    started: Instant,
    cancel: Option<&'a AtomicBool>,
    stream: Option<(&mut dyn RowSink, StreamOptions)>,
) -> Result<Output, Fail> {
    let mut ex = Exec {
        env: Env::new(plan, g, text, Budget::new(limits, started, cancel)),
        limits,
        counters: vec![0; plan.states],
        counts: vec![None; plan.states],
        seen: (0..plan.states).map(|_| HashSet::default()).collect(),
        warm_text: true,
        warm_ids: true,
    };
    ex.check()?;
    let mut stream = stream;
    let mut input: Vec<Row<'_>> = vec![vec![Value::Null; plan.slots]];
    // What the rows handed from one segment to the next hold (charged by the sink that
    // built them, released once the next segment has consumed them).
    let mut input_bytes = 0u64;
    for seg in &plan.segments {
        let before = ex.env.budget.mark();
        match &seg.sink {
            // A one-hop grouped aggregation the planner compiled to a columnar scan.
            Sink::Aggregate { keys, aggs, .. } if matches!(*seg.ops, [Op::GroupScan(_)]) => {
                input = super::group_scan::run(
                    &seg.ops,
                    &ex.env,
                    plan.slots,
                    keys,
                    aggs,
                    ex.max_held(),
                )?;
            }
            Sink::Aggregate {
                keys,
                aggs,
                nodes,
                weight,
            } => {
                let mut st =
                    AggState::new(&ex.env, keys.len(), aggs, nodes.as_deref(), ex.max_held());
                for row in input.iter_mut() {
                    let flow = ex.run(&seg.ops, row, &mut |ex, row| {
                        let w = match weight.and_then(|s| row.get(s)) {
                            Some(Value::Int(w)) => *w,
                            _ => 1,
                        };
                        st.add(&ex.env, keys, aggs, w, row)?;
                        Ok(Flow::Go)
                    })?;
                    if flow == Flow::Stop {
                        break;
                    }
                }
                input = st.finish(plan.slots, keys, aggs);
            }
            Sink::PairCount(pc) => {
                input = pair_group::run(&mut ex, &seg.ops, pc, plan.slots)?;
            }
            Sink::Sort { keys, top } => {
                let keep = match top {
                    Some((skip, limit)) => {
                        let skip = match skip {
                            Some(s) => ex.count_value(s)?,
                            None => 0,
                        };
                        Some(skip.saturating_add(ex.count_value(limit)?) as usize)
                    }
                    None => None,
                };
                let mut buf: Vec<Row<'_>> = Vec::new();
                let mut buf_bytes = 0u64;
                for row in input.iter_mut() {
                    let flow = ex.run(&seg.ops, row, &mut |ex, row| {
                        let b = ex.env.budget.row_bytes(row)?;
                        ex.env.budget.charge(b)?;
                        buf_bytes += b;
                        buf.push(row.clone());
                        ex.tick()?;
                        ex.hold(buf.len())?;
                        if let Some(k) = keep
                            && buf.len() >= k.saturating_mul(2).max(1024)
                        {
                            sort_rows(&mut buf, keys);
                            buf.truncate(k);
                            buf_bytes = rebudget(&ex.env.budget, &buf, buf_bytes)?;
                        }
                        Ok(Flow::Go)
                    })?;
                    if flow == Flow::Stop {
                        break;
                    }
                }
                sort_rows(&mut buf, keys);
                if let Some(k) = keep {
                    buf.truncate(k);
                    rebudget(&ex.env.budget, &buf, buf_bytes)?;
                }
                input = buf;
            }
            Sink::Output { slots } => {
                let keep = shared.filter(|a| std::ptr::eq(&***a, g)).cloned();
                let ids = keep.is_some();
                let outp = OutProjection::new(&seg.ops, slots);
                ex.warm_text = !(ids && outp.ids.iter().any(Option::is_some));
                // With the ids kept as references and no filter to read them, nothing
                // reads a walked feedback row's id entry: loading it ahead is a wasted
                // miss per row.
                ex.warm_ids = ex.warm_text
                    || outp.ops.iter().any(|op| matches!(op, Op::Filter(_)))
                    || outp.items.iter().any(|(_, id)| id.is_none());
                let bulk = BulkIn::new(&outp, slots, ids).filter(|_| bulk_allowed());
                let mut o = RowOut::new(g, slots, &outp, keep, ex.limits.max_rows, stream.take());
                for row in input.iter_mut() {
                    let flow = match &bulk {
                        Some(b) => ex.run(b.before, row, &mut |ex, row| o.bulk(ex, row, b))?,
                        None => ex.run(outp.ops, row, &mut |ex, row| o.row(ex, row))?,
                    };
                    if flow == Flow::Stop {
                        break;
                    }
                }
                ex.check()?;
                return o.finish(&mut ex);
            }
        }
        let held = ex.env.budget.mark().saturating_sub(before);
        ex.env.budget.release(input_bytes);
        input_bytes = held;
        ex.check()?;
    }
    Ok(Output {
        rows: Rows::new(plan.columns.len()),
        total: 0,
        work: ex.env.budget.work(),
        memory: ex.env.budget.peak(),
    })
}

#[cfg(test)]
#[path = "exec_bulk_tests.rs"]
mod bulk_tests;

#[cfg(test)]
thread_local! {
    /// Tests turn the bulk output off, to compare it with the walk a row at a time.
    static NO_BULK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// Runs of rows the bulk output added (tests check that it ran).
    static BULK_RUNS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Whether output segments may use [`BulkIn`] (always, but in tests that turn it off).
#[inline]
fn bulk_allowed() -> bool {
    #[cfg(test)]
    {
        !NO_BULK.with(std::cell::Cell::get)
    }
    #[cfg(not(test))]
    {
        true
    }
}

/// The rows a bulk step of [`RowOut::bulk`] adds at most at once: small enough that the
/// clock and the cancel flag are read often (as [`Exec::tick`] reads them every
/// `budget::CHECK_EVERY` units of work), large enough that the per-step checks cost
/// nothing per row.
const BULK_ROWS: usize = 4096;

/// An output segment whose last operator walks a node's incoming edges of one type (one
/// of the graph's dense lists, see [`in_list`]) and whose RETURN is only node ids kept as
/// references into the snapshot (`RETURN f.id, a1.id` after `(f)-[:FEEDBACK_FOR]->(a1)`):
/// the output takes each list whole, a run of rows at a time, instead of one row per
/// edge. Every row's cells are row numbers, from the list or repeated from a node bound
/// before the walk, and every row is charged the same, so a run of rows is two copies
/// into the id columns and one charge. The rows, their order, the batches and the limits
/// are those of the walk a row at a time ([`Exec::expand`] into [`RowOut::row`]), which
/// the output falls back on wherever a run does not fit a limit.
struct BulkIn<'a> {
    /// The operators before the walk.
    before: &'a [Op],
    /// The walk.
    expand: &'a Expand,
    /// Per output column, the node slot whose id it returns.
    cols: Vec<Slot>,
}

impl<'a> BulkIn<'a> {
    /// The bulk form of an output segment, when it has one (see the type's docs).
    fn new(outp: &OutProjection<'a>, slots: &[Slot], ids: bool) -> Option<Self> {
        if !ids || outp.items.is_empty() || outp.items.iter().any(|(_, id)| id.is_none()) {
            return None;
        }
        let cols = outp.ids.iter().copied().collect::<Option<Vec<Slot>>>()?;
        if cols.len() != slots.len() {
            return None;
        }
        let (Op::Expand(e), before) = outp.ops.split_last()? else {
            return None;
        };
        let plain = e.dir == Dir::In
            && !e.into
            && e.rel.is_none()
            && e.unique.is_empty()
            && e.unique_lists.is_empty();
        plain.then_some(BulkIn {
            before,
            expand: e,
            cols,
        })
    }
}

/// The output of a query's last segment: builds the result rows, charges them, enforces
/// `max_rows`, and with a sink hands them over in batches.
struct RowOut<'o, 's, 'a> {
    g: &'a OrgGraph,
    slots: &'o [Slot],
    outp: &'o OutProjection<'a>,
    /// The snapshot the rows keep (node ids are references into it), when they keep one.
    keep: Option<Arc<OrgGraph>>,
    /// The rows not yet handed over.
    out: Rows,
    /// Rows a fresh batch reserves room for.
    batch_rows: usize,
    last: Vec<LastStr>,
    shared: SharedJson,
    max_rows: usize,
    /// Rows produced so far.
    total: usize,
    /// What the rows not yet handed to the sink were charged (streamed rows are released
    /// once the sink has them).
    unsent: u64,
    /// A row's cells, its brackets and separators.
    row_base: u64,
    stream: Option<(&'s mut dyn RowSink, StreamOptions)>,
    /// Per column, the node a bulk run repeats (`None`: the walked list's).
    fixed: Vec<Option<NodeRef>>,
}

impl<'o, 's, 'a> RowOut<'o, 's, 'a> {
    fn new(
        g: &'a OrgGraph,
        slots: &'o [Slot],
        outp: &'o OutProjection<'a>,
        keep: Option<Arc<OrgGraph>>,
        max_rows: usize,
        stream: Option<(&'s mut dyn RowSink, StreamOptions)>,
    ) -> Self {
        let batch_rows = stream.as_ref().map_or(0, |(_, o)| o.batch_rows.max(1));
        RowOut {
            g,
            slots,
            outp,
            out: Rows::for_graph(slots.len(), keep.clone(), batch_rows),
            keep,
            batch_rows,
            last: vec![None; slots.len()],
            shared: SharedJson::default(),
            max_rows,
            total: 0,
            unsent: 0,
            row_base: 2 + slots.len() as u64 * (CELL_BYTES + 1),
            stream,
            fixed: Vec::with_capacity(slots.len()),
        }
    }

    /// The rows-over-the-limit error.
    #[cold]
    fn too_many(&self) -> Fail {
        let max_rows = self.max_rows;
        CypherError::limit(
            Limit::MaxRows,
            format!(
                "the query returns more than {max_rows} rows; add a LIMIT or narrow the MATCH (query.max_rows)"
            ),
        )
        .into()
    }

    /// Adds one result row from `row`.
    fn row(&mut self, ex: &mut Exec<'a>, row: &mut Row<'a>) -> R {
        if self.total >= self.max_rows {
            return Err(self.too_many());
        }
        let g = self.g;
        let ids = self.keep.is_some();
        // Values the projection builds are charged while the row holds them.
        let mark = ex.env.budget.mark();
        self.outp.eval(&ex.env, g, row)?;
        let held = ex.env.budget.mark().saturating_sub(mark);
        let mut bytes = self.row_base;
        for ((s, last), id) in self
            .slots
            .iter()
            .zip(self.last.iter_mut())
            .zip(&self.outp.ids)
        {
            if let Some(n) = id.and_then(|node| live_node(g, row, node)) {
                if ids {
                    // Charged without reading the id (see ID_TEXT_BYTES).
                    bytes += ID_TEXT_BYTES;
                    self.out.push_id(n);
                } else {
                    let v = Value::Str(node_id_str(g, n));
                    bytes += push_cell(&ex.env, &mut self.out, &mut self.shared, &v, last)?;
                }
                continue;
            }
            bytes += push_cell(
                &ex.env,
                &mut self.out,
                &mut self.shared,
                row.get(*s).unwrap_or(&Value::Null),
                last,
            )?;
        }
        self.out.end_row();
        self.total += 1;
        ex.env.budget.charge(bytes)?;
        ex.env.budget.release(held);
        self.unsent = self.unsent.saturating_add(bytes);
        ex.check_clock_every(self.total)?;
        self.hand_over_if_full(ex)?;
        Ok(Flow::Go)
    }

    /// Hands the rows over when a sink takes them and the batch is full.
    #[inline]
    fn hand_over_if_full(&mut self, ex: &mut Exec<'a>) -> Result<(), Fail> {
        let full = self.stream.as_ref().is_some_and(|(_, opts)| {
            self.out.len() >= opts.batch_rows.max(1) || self.unsent >= opts.batch_bytes
        });
        if full {
            self.hand_over(ex, self.batch_rows)?;
            ex.env.budget.note_streamed();
            ex.check()?;
        }
        Ok(())
    }

    /// Hands the rows not yet handed over to the sink; the next batch reserves room for
    /// `capacity` rows.
    fn hand_over(&mut self, ex: &mut Exec<'a>, capacity: usize) -> Result<(), Fail> {
        let fresh = Rows::for_graph(self.slots.len(), self.keep.clone(), capacity);
        let batch = std::mem::replace(&mut self.out, fresh);
        // The batch's strings and shared nodes go with it.
        self.last.iter_mut().for_each(|l| *l = None);
        self.shared = SharedJson::default();
        ex.env.budget.release(self.unsent);
        self.unsent = 0;
        if let Some((sink, _)) = self.stream.as_mut() {
            sink.batch(batch).map_err(Box::new)?;
        }
        Ok(())
    }

    /// The walk `b.expand` from `row` into the output, a run of rows at a time (see
    /// [`BulkIn`]).
    fn bulk(&mut self, ex: &mut Exec<'a>, row: &mut Row<'a>, b: &BulkIn<'a>) -> R {
        let e = b.expand;
        let Some(from) = ex.node_of(&row[e.from], 0)? else {
            return Ok(Flow::Go);
        };
        let g = self.g;
        let Some((list, kind)) = in_list(g, from, e.types) else {
            return ex.expand(e, &[], row, &mut |ex, row| self.row(ex, row));
        };
        if !e.to_kinds.allows(source_ref(kind, 0)) {
            return Ok(Flow::Go);
        }
        // The columns' nodes bound before the walk, read once; a column whose node is not
        // one of the graph's (or a list row that is not) takes the walk a row at a time.
        let nodes = match kind {
            EdgeKind::FeedbackFor => g.feedback().len(),
            EdgeKind::DerivedFrom => g.adapters().len(),
        };
        self.fixed.clear();
        for &s in &b.cols {
            if s == e.to {
                self.fixed.push(None);
            } else if let Some(n) = live_node(g, row, s) {
                self.fixed.push(Some(n));
            } else {
                return ex.expand(e, &[], row, &mut |ex, row| self.row(ex, row));
            }
        }
        if list.iter().any(|&r| r as usize >= nodes) {
            return ex.expand(e, &[], row, &mut |ex, row| self.row(ex, row));
        }
        let adapters = kind == EdgeKind::DerivedFrom;
        let per_row = self.row_base + ID_TEXT_BYTES * self.slots.len() as u64;
        // The walk goes down the list from its end (see `Exec::expand_in`).
        let mut end = list.len();
        while end > 0 {
            let mut k = end.min(BULK_ROWS);
            if let Some((_, opts)) = &self.stream {
                // Stop where a row at a time would hand the batch over.
                let room = opts.batch_rows.max(1).saturating_sub(self.out.len());
                let bytes_left = opts.batch_bytes.saturating_sub(self.unsent);
                let by_bytes = usize::try_from(bytes_left.div_ceil(per_row)).unwrap_or(usize::MAX);
                k = k.min(room.max(1)).min(by_bytes.max(1));
            }
            let run = &list[end - k..end];
            let fits = self.total.saturating_add(k) <= self.max_rows
                && ex.env.budget.work().saturating_add(k as u64) <= ex.limits.max_work
                && ex
                    .env
                    .budget
                    .charge(per_row.saturating_mul(k as u64))
                    .is_ok();
            if !fits {
                // Row by row, as the walk would: the limit stops it at the same row.
                for &r in run.iter().rev() {
                    ex.tick()?;
                    set_node(row, e.to, source_ref(kind, r));
                    if self.row(ex, row)? == Flow::Stop {
                        return Ok(Flow::Stop);
                    }
                }
                end -= k;
                continue;
            }
            ex.env.budget.tick_n(k as u64)?;
            for (c, n) in self.fixed.iter().enumerate() {
                match *n {
                    Some(NodeRef::Feedback(r)) => {
                        self.out.extend_ids(c, false, std::iter::repeat_n(r, k));
                    }
                    Some(NodeRef::Adapter(r)) => {
                        self.out.extend_ids(c, true, std::iter::repeat_n(r, k));
                    }
                    None => self.out.extend_ids(c, adapters, run.iter().rev().copied()),
                }
            }
            self.out.end_rows(k);
            #[cfg(test)]
            BULK_RUNS.with(|c| c.set(c.get() + 1));
            let before = self.total;
            self.total += k;
            self.unsent = self.unsent.saturating_add(per_row.saturating_mul(k as u64));
            // The clock, as often as a row at a time reads it.
            if before / 256 != self.total / 256 {
                ex.check()?;
            }
            // The walk leaves its last node bound.
            set_node(row, e.to, source_ref(kind, run[0]));
            self.hand_over_if_full(ex)?;
            end -= k;
        }
        Ok(Flow::Go)
    }

    /// The end of the output: hands the last rows to the sink, or returns them.
    fn finish(mut self, ex: &mut Exec<'a>) -> Result<Output, Fail> {
        if self.stream.is_some() && !self.out.is_empty() {
            self.hand_over(ex, 0)?;
        }
        Ok(Output {
            rows: self.out,
            total: self.total,
            work: ex.env.budget.work(),
            memory: ex.env.budget.peak(),
        })
    }
}

/// The node in `row[slot]`, when it is a node of `g`.
#[inline]
fn live_node(g: &OrgGraph, row: &[Value<'_>], slot: Slot) -> Option<NodeRef> {
    match row.get(slot)? {
        Value::Node(n @ NodeRef::Feedback(r)) if (*r as usize) < g.feedback().len() => Some(*n),
        Value::Node(n @ NodeRef::Adapter(r)) if (*r as usize) < g.adapters().len() => Some(*n),
        _ => None,
    }
}

/// What a returned node id kept as a reference into the snapshot is charged for its text
/// (quotes included), instead of its length: reading the length would read the id's entry,
/// a cache miss per row that costs more than the rest of the row. The rows hold 4 bytes
/// per such id (see `rows::Col`); this estimate only sizes the text a batch is written as
/// (a streamed batch ends at `query.stream_batch_bytes` of it) and what a result kept
/// whole counts against `query.max_memory_bytes`. Generated ids (a UUID is 36 characters,
/// the bundled generator's 11-13) are about this long; the id alphabet needs no escapes.
pub(crate) const ID_TEXT_BYTES: u64 = 40;

/// The node slot whose id `e` reads, when `e` is `n.id` of a variable.
fn id_of(e: &Expr) -> Option<Slot> {
    match &e.kind {
        ExprKind::Prop(base, key)
            if matches!(key.f, Some(FProp::Id)) && matches!(key.a, Some(AProp::Id)) =>
        {
            match base.kind {
                ExprKind::Slot(s) => Some(s),
                _ => None,
            }
        }
        _ => None,
    }
}

/// How an output segment produces its columns. When the segment ends with the RETURN's
/// projection, the projection runs in the output sink instead of as an operator, and an
/// item `n.id` whose `n` holds a node is not evaluated at all: the output reads the node
/// and pushes its id (a [`Cell::Id`] when the rows keep the graph), which is the same
/// string `n.id` evaluates to. Items of a RETURN never read each other's slots, so
/// evaluating the others here, in order, is what the operator did.
struct OutProjection<'a> {
    /// The operators to run before the sink.
    ops: &'a [Op],
    /// The projection moved into the sink, with, per item, the node slot of an `n.id`
    /// item.
    items: Vec<(&'a (Slot, Expr), Option<Slot>)>,
    /// Per output column: the node slot when the column is an `n.id` item.
    ids: Vec<Option<Slot>>,
}

impl<'a> OutProjection<'a> {
    fn new(ops: &'a [Op], slots: &[Slot]) -> Self {
        let plain = OutProjection {
            ops,
            items: Vec::new(),
            ids: vec![None; slots.len()],
        };
        let Some((Op::Project(items), before)) = ops.split_last() else {
            return plain;
        };
        let targets: Vec<Slot> = items.iter().map(|(s, _)| *s).collect();
        let items: Vec<_> = items
            .iter()
            .map(|it| (it, id_of(&it.1).filter(|n| !targets.contains(n))))
            .collect();
        if items.iter().all(|(_, id)| id.is_none()) {
            return plain;
        }
        let ids = slots
            .iter()
            .map(|s| {
                items
                    .iter()
                    .find(|((t, _), _)| t == s)
                    .and_then(|(_, id)| *id)
            })
            .collect();
        OutProjection {
            ops: before,
            items,
            ids,
        }
    }

    /// Evaluates the projection's items on `row`, but for `n.id` items whose node is in
    /// place (the output reads those from the node).
    #[inline]
    fn eval(&self, env: &Env<'a>, g: &OrgGraph, row: &mut Row<'a>) -> Result<(), Fail> {
        for ((slot, e), id) in &self.items {
            if id.is_some_and(|n| live_node(g, row, n).is_some()) {
                continue;
            }
            let v = env.eval(e, row)?;
            row[*slot] = v;
        }
        Ok(())
    }
}

/// Charges a sort buffer again after it was cut to its top rows: gives back what the
/// dropped rows held. Returns what the buffer holds now.
fn rebudget(budget: &Budget<'_>, buf: &[Row<'_>], charged: u64) -> Result<u64, Fail> {
    let mut now = 0u64;
    for r in buf {
        now = now.saturating_add(budget.row_bytes(r)?);
    }
    budget.release(charged.saturating_sub(now));
    Ok(now)
}

fn sort_rows(rows: &mut [Row<'_>], keys: &[(Slot, bool)]) {
    rows.sort_by(|a, b| {
        for &(s, desc) in keys {
            let (x, y) = (a.get(s), b.get(s));
            let o = match (x, y) {
                (Some(x), Some(y)) => order_cmp(x, y),
                _ => std::cmp::Ordering::Equal,
            };
            let o = if desc { o.reverse() } else { o };
            if o.is_ne() {
                return o;
            }
        }
        std::cmp::Ordering::Equal
    });
}

impl<'a> Exec<'a> {
    /// Counts one unit of work and enforces the work and time limits.
    #[inline(always)]
    fn tick(&mut self) -> Result<(), Fail> {
        self.env.budget.tick()
    }

    fn check(&mut self) -> Result<(), Fail> {
        self.env.budget.check()
    }

    /// Most rows a sort, a grouping or a DISTINCT may hold at once: a tenth of the work
    /// limit, so memory stays bounded well before the work limit is reached.
    fn max_held(&self) -> usize {
        usize::try_from((self.limits.max_work / 10).max(1)).unwrap_or(usize::MAX)
    }

    #[inline]
    fn hold(&self, n: usize) -> Result<(), Fail> {
        let max = self.max_held();
        if n > max {
            return Err(held_too_many(max));
        }
        Ok(())
    }

    fn check_clock_every(&mut self, n: usize) -> Result<(), Fail> {
        if n.is_multiple_of(256) {
            self.check()
        } else {
            Ok(())
        }
    }

    /// The value of a SKIP/LIMIT expression (a non-negative integer constant).
    fn count_value(&mut self, e: &'a Expr) -> Result<u64, Fail> {
        match self.env.eval(e, &[])? {
            Value::Int(n) if n >= 0 => Ok(n as u64),
            other => Err(CypherError::type_error(
                format!(
                    "SKIP and LIMIT take a non-negative integer, got {}",
                    other.type_name()
                ),
                e.pos,
            )
            .into()),
        }
    }

    fn count_of(&mut self, state: usize, e: &'a Expr) -> Result<u64, Fail> {
        if let Some(Some(n)) = self.counts.get(state) {
            return Ok(*n);
        }
        let n = self.count_value(e)?;
        if let Some(c) = self.counts.get_mut(state) {
            *c = Some(n);
        }
        Ok(n)
    }

    fn node_of(&self, v: &Value<'a>, pos: usize) -> Result<Option<NodeRef>, Fail> {
        match v {
            Value::Node(n) => Ok(self.env.node_id(*n).map(|_| *n)),
            Value::Null => Ok(None),
            other => Err(CypherError::type_error(
                format!(
                    "expected a node to match a pattern from, got {}",
                    other.type_name()
                ),
                pos,
            )
            .into()),
        }
    }

    /// Runs `ops` on `row`, handing every resulting row to `sink`.
    fn run(&mut self, ops: &'a [Op], row: &mut Row<'a>, sink: &mut SinkFn<'_, 'a>) -> R {
        let Some((op, rest)) = ops.split_first() else {
            return sink(self, row);
        };
        match op {
            Op::Expand(e) => self.expand(e, rest, row, sink),
            Op::Filter(pred) => {
                if self.env.test(pred, row)? {
                    self.run(rest, row, sink)
                } else {
                    Ok(Flow::Go)
                }
            }
            _ => self.run_op(op, rest, row, sink),
        }
    }

    /// The operators that run once per input row rather than once per output row.
    #[inline(never)]
    fn run_op(
        &mut self,
        op: &'a Op,
        rest: &'a [Op],
        row: &mut Row<'a>,
        sink: &mut SinkFn<'_, 'a>,
    ) -> R {
        match op {
            Op::Scan { slot, kinds } => {
                let g = self.env.g;
                if kinds.feedback {
                    for r in 0..g.feedback().len() as u32 {
                        self.tick()?;
                        set_node(row, *slot, NodeRef::Feedback(r));
                        if self.run(rest, row, sink)? == Flow::Stop {
                            return Ok(Flow::Stop);
                        }
                    }
                }
                if kinds.adapter {
                    for r in 0..g.adapters().len() as u32 {
                        self.tick()?;
                        set_node(row, *slot, NodeRef::Adapter(r));
                        if self.run(rest, row, sink)? == Flow::Stop {
                            return Ok(Flow::Stop);
                        }
                    }
                }
                Ok(Flow::Go)
            }
            Op::Seek { slot, kinds, key } => {
                let g = self.env.g;
                let mark = self.env.budget.mark();
                let key = self.env.eval(key, row)?;
                self.env.budget.settle(mark, 0);
                let Some(id) = key.as_str() else {
                    return Ok(Flow::Go);
                };
                self.tick()?;
                let mut found = Vec::with_capacity(2);
                if kinds.feedback
                    && let Some(r) = g.feedback_row(id)
                {
                    found.push(NodeRef::Feedback(r));
                }
                if kinds.adapter
                    && let Some(r) = g.adapter_row(id)
                {
                    found.push(NodeRef::Adapter(r));
                }
                for n in found {
                    set_node(row, *slot, n);
                    if self.run(rest, row, sink)? == Flow::Stop {
                        return Ok(Flow::Stop);
                    }
                }
                Ok(Flow::Go)
            }
            Op::Expand(e) => self.expand(e, rest, row, sink),
            Op::ExpandCount(c) => {
                let Some(from) = self.node_of(&row[c.from], 0)? else {
                    return Ok(Flow::Go);
                };
                let d = self.degree(c, from)?;
                if d == 0 {
                    return Ok(Flow::Go);
                }
                let w = match (c.chained, &row[c.weight]) {
                    (true, Value::Int(w)) => *w,
                    _ => 1,
                };
                row[c.weight] = Value::Int(w.saturating_mul(d));
                self.run(rest, row, sink)
            }
            Op::VarExpand(v) => {
                let Some(from) = self.node_of(&row[v.step.from], 0)? else {
                    return Ok(Flow::Go);
                };
                let mut path = Vec::new();
                if v.min == 0 && self.var_emit(v, rest, row, sink, from, &path)? == Flow::Stop {
                    return Ok(Flow::Stop);
                }
                self.var_dfs(v, rest, row, sink, from, &mut path)
            }
            Op::Filter(pred) => {
                if self.env.test(pred, row)? {
                    self.run(rest, row, sink)
                } else {
                    Ok(Flow::Go)
                }
            }
            Op::Optional { body, nulls } => {
                let mut matched = false;
                let flow = {
                    let mut inner = |ex: &mut Exec<'a>, row: &mut Row<'a>| {
                        matched = true;
                        ex.run(rest, row, sink)
                    };
                    self.run(body, row, &mut inner)?
                };
                if flow == Flow::Stop {
                    return Ok(Flow::Stop);
                }
                if matched {
                    return Ok(Flow::Go);
                }
                for s in nulls {
                    row[*s] = Value::Null;
                }
                self.run(rest, row, sink)
            }
            Op::Unwind { list, slot } => {
                // The list stays charged while it is unwound (a built one is charged by its
                // builder; a shared one is not new memory).
                let mark = self.env.budget.mark();
                let list = self.env.eval(list, row)?;
                let held = self.env.budget.mark().saturating_sub(mark);
                let flow = match list {
                    Value::Null => Ok(Flow::Go),
                    Value::List(items) => {
                        let mut flow = Ok(Flow::Go);
                        for it in items.iter() {
                            self.tick()?;
                            row[*slot] = it.clone();
                            if self.run(rest, row, sink)? == Flow::Stop {
                                flow = Ok(Flow::Stop);
                                break;
                            }
                        }
                        flow
                    }
                    other => {
                        row[*slot] = other;
                        self.run(rest, row, sink)
                    }
                };
                self.env.budget.release(held);
                flow
            }
            Op::Project(items) => {
                // Values built here are charged (by their builders) while the row holds
                // them, that is while the rest of the pipeline runs on it.
                let mark = self.env.budget.mark();
                for (slot, e) in items {
                    let v = self.env.eval(e, row)?;
                    row[*slot] = v;
                }
                let held = self.env.budget.mark().saturating_sub(mark);
                let flow = self.run(rest, row, sink);
                self.env.budget.release(held);
                flow
            }
            Op::Distinct { slots, state } => {
                let key: Box<[Value<'a>]> = slots.iter().map(|s| row[*s].clone()).collect();
                let bytes = self.env.budget.row_bytes(&key)?;
                let (fresh, held) = match self.seen.get_mut(*state) {
                    Some(set) => (set.insert(key), set.len()),
                    None => (true, 0),
                };
                self.hold(held)?;
                if fresh {
                    // Kept in the set (and its hash table) until the query ends.
                    self.env.budget.charge(bytes.saturating_add(16))?;
                }
                if fresh {
                    self.run(rest, row, sink)
                } else {
                    Ok(Flow::Go)
                }
            }
            // Only ever a segment's single operator, run by `run` with its aggregation.
            Op::GroupScan(_) => Err(CypherError::semantic(
                "internal: a group scan outside its aggregation",
                0,
            )
            .into()),
            Op::Skip { count, state } => {
                let n = self.count_of(*state, count)?;
                if self.counters[*state] < n {
                    self.counters[*state] += 1;
                    return Ok(Flow::Go);
                }
                self.run(rest, row, sink)
            }
            Op::Limit { count, state } => {
                let n = self.count_of(*state, count)?;
                if self.counters[*state] >= n {
                    return Ok(Flow::Stop);
                }
                self.counters[*state] += 1;
                let flow = self.run(rest, row, sink)?;
                if self.counters[*state] >= n {
                    Ok(Flow::Stop)
                } else {
                    Ok(flow)
                }
            }
        }
    }

    /// Is edge `eid` already used by another relationship of the same MATCH?
    #[inline]
    fn taken(&self, e: &Expand, row: &Row<'a>, eid: u32) -> bool {
        e.unique
            .iter()
            .any(|s| matches!(row[*s], Value::Rel(x) if x == eid))
            || e.unique_lists.iter().any(|s| match &row[*s] {
                Value::List(items) => items
                    .iter()
                    .any(|v| matches!(v, Value::Rel(x) if *x == eid)),
                _ => false,
            })
    }

    fn expand(
        &mut self,
        e: &'a Expand,
        rest: &'a [Op],
        row: &mut Row<'a>,
        sink: &mut SinkFn<'_, 'a>,
    ) -> R {
        let Some(from) = self.node_of(&row[e.from], 0)? else {
            return Ok(Flow::Go);
        };
        let g = self.env.g;
        for &d in dirs(e.dir) {
            if d == Direction::Incoming
                && let Some((list, kind)) = in_list(g, from, e.types)
            {
                if self.expand_in(e, rest, row, sink, from, list, kind)? == Flow::Stop {
                    return Ok(Flow::Stop);
                }
                continue;
            }
            for er in g.edges(from, d) {
                self.tick()?;
                if !e.types.allows(er.kind) {
                    continue;
                }
                let other = er.other;
                if e.into {
                    if !matches!(row[e.to], Value::Node(n) if n == other) {
                        continue;
                    }
                } else if !e.to_kinds.allows(other) {
                    continue;
                }
                let eid = er.id;
                if self.taken(e, row, eid) {
                    continue;
                }
                if !e.into {
                    set_node(row, e.to, other);
                }
                if let Some(rs) = e.rel {
                    set_rel(row, rs, eid);
                }
                if self.run(rest, row, sink)? == Flow::Stop {
                    return Ok(Flow::Stop);
                }
            }
        }
        Ok(Flow::Go)
    }

    /// [`Exec::expand`] over incoming edges of one type, from the graph's dense list of
    /// their source rows (newest edge first, as petgraph walks them). The edge index is
    /// looked up only when a relationship slot or a uniqueness check needs it.
    #[allow(clippy::too_many_arguments)]
    fn expand_in(
        &mut self,
        e: &'a Expand,
        rest: &'a [Op],
        row: &mut Row<'a>,
        sink: &mut SinkFn<'_, 'a>,
        to: NodeRef,
        list: &'a [u32],
        kind: EdgeKind,
    ) -> R {
        if !e.into && !e.to_kinds.allows(source_ref(kind, 0)) {
            return Ok(Flow::Go);
        }
        let g = self.env.g;
        let need_eid = e.rel.is_some() || !e.unique.is_empty() || !e.unique_lists.is_empty();
        let warm = kind == EdgeKind::FeedbackFor && self.warm_ids;
        for (i, &r) in list.iter().enumerate().rev() {
            self.tick()?;
            if warm {
                warm_feedback(g, list, i, self.warm_text);
            }
            let other = source_ref(kind, r);
            if e.into && !matches!(row[e.to], Value::Node(n) if n == other) {
                continue;
            }
            let mut eid = 0;
            if need_eid {
                let Some(x) = g.edge_between(other, to, kind) else {
                    continue;
                };
                eid = x;
                if self.taken(e, row, eid) {
                    continue;
                }
            }
            if !e.into {
                set_node(row, e.to, other);
            }
            if let Some(rs) = e.rel {
                set_rel(row, rs, eid);
            }
            if self.run(rest, row, sink)? == Flow::Stop {
                return Ok(Flow::Stop);
            }
        }
        Ok(Flow::Go)
    }

    /// How many relationships `c` stands for at `from`: what [`Exec::expand`] would
    /// follow, counted from the graph's per-adapter lists where it keeps one.
    fn degree(&mut self, c: &ExpandCount, from: NodeRef) -> Result<i64, Fail> {
        self.tick()?;
        let g = self.env.g;
        let mut n: i64 = 0;
        for &d in dirs(c.dir) {
            if d == Direction::Incoming
                && let Some((list, kind)) = in_list(g, from, c.types)
            {
                if c.to_kinds.allows(source_ref(kind, 0)) {
                    n = n.saturating_add(list.len() as i64);
                }
                continue;
            }
            for er in g.edges(from, d) {
                self.tick()?;
                if !c.types.allows(er.kind) {
                    continue;
                }
                if c.to_kinds.allows(er.other) {
                    n = n.saturating_add(1);
                }
            }
        }
        Ok(n)
    }

    /// Emits one variable-length match ending at `end` with relationships `path`.
    fn var_emit(
        &mut self,
        v: &'a VarExpand,
        rest: &'a [Op],
        row: &mut Row<'a>,
        sink: &mut SinkFn<'_, 'a>,
        end: NodeRef,
        path: &[u32],
    ) -> R {
        let e = &v.step;
        if e.into {
            if !matches!(row[e.to], Value::Node(n) if n == end) {
                return Ok(Flow::Go);
            }
        } else if !e.to_kinds.allows(end) {
            return Ok(Flow::Go);
        }
        if !e.into {
            set_node(row, e.to, end);
        }
        if let Some(rs) = e.rel {
            let rels: Vec<Value<'a>> = if v.reverse {
                path.iter().rev().map(|x| Value::Rel(*x)).collect()
            } else {
                path.iter().map(|x| Value::Rel(*x)).collect()
            };
            row[rs] = Value::list(rels);
        }
        self.run(rest, row, sink)
    }

    fn var_dfs(
        &mut self,
        v: &'a VarExpand,
        rest: &'a [Op],
        row: &mut Row<'a>,
        sink: &mut SinkFn<'_, 'a>,
        cur: NodeRef,
        path: &mut Vec<u32>,
    ) -> R {
        let e = &v.step;
        if self.env.node_id(cur).is_none() {
            return Ok(Flow::Go);
        }
        let g = self.env.g;
        for &d in dirs(e.dir) {
            if d == Direction::Incoming
                && let Some((list, kind)) = in_list(g, cur, e.types)
            {
                for &r in list.iter().rev() {
                    self.tick()?;
                    let next = source_ref(kind, r);
                    let Some(eid) = g.edge_between(next, cur, kind) else {
                        continue;
                    };
                    let flow = self.var_step(v, rest, row, sink, next, eid, path)?;
                    if flow == Flow::Stop {
                        return Ok(Flow::Stop);
                    }
                }
                continue;
            }
            for er in g.edges(cur, d) {
                self.tick()?;
                if !e.types.allows(er.kind) {
                    continue;
                }
                let (next, eid) = (er.other, er.id);
                if self.var_step(v, rest, row, sink, next, eid, path)? == Flow::Stop {
                    return Ok(Flow::Stop);
                }
            }
        }
        Ok(Flow::Go)
    }

    /// One relationship `eid` of a variable-length walk, from the end of `path` to `next`:
    /// emits the match if long enough and walks on if the path may grow.
    #[allow(clippy::too_many_arguments)]
    fn var_step(
        &mut self,
        v: &'a VarExpand,
        rest: &'a [Op],
        row: &mut Row<'a>,
        sink: &mut SinkFn<'_, 'a>,
        next: NodeRef,
        eid: u32,
        path: &mut Vec<u32>,
    ) -> R {
        let depth = path.len() as u32;
        if path.contains(&eid) || self.taken(&v.step, row, eid) {
            return Ok(Flow::Go);
        }
        if depth >= v.max {
            if v.capped {
                return Err(CypherError::limit(
                    Limit::MaxDepth,
                    format!(
                        "a variable-length pattern without an upper bound reached {} relationships and could go further; give it an upper bound (*..N) or raise max_depth",
                        v.max
                    ),
                ).into());
            }
            return Ok(Flow::Go);
        }
        path.push(eid);
        let mut flow = Flow::Go;
        if depth + 1 >= v.min {
            flow = self.var_emit(v, rest, row, sink, next, path)?;
        }
        if flow == Flow::Go && (depth + 1 < v.max || v.capped) {
            flow = self.var_dfs(v, rest, row, sink, next, path)?;
        }
        path.pop();
        Ok(flow)
    }
}

pub(super) fn held_too_many(max: usize) -> Fail {
    CypherError::limit(
        Limit::MaxWork,
        format!(
            "the query would hold more than {max} rows in memory (sorting, grouping or DISTINCT; a tenth of max_work); add a LIMIT or narrow the MATCH"
        ),
    )
    .into()
}

/// A number or null: what most aggregate arguments are, small enough for registers.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Num {
    Null,
    Int(i64),
    Float(f64),
}

/// An aggregate's argument, classified once per query so the common shapes skip the
/// general evaluator.
enum AggArg<'a> {
    /// `count(*)`.
    Star,
    /// A variable, read in place.
    Slot,
    /// `CASE WHEN c1 THEN n1 ... ELSE n END` with number (or null) results, not DISTINCT:
    /// the conditional-counting idiom.
    CaseNum {
        arms: Vec<(&'a Expr, Num)>,
        default: Num,
    },
    /// A [`AggArg::CaseNum`] whose every condition tests one enumerated column (`type` or
    /// `validation_status`) of the Feedback node in `slot`: the arm a row takes depends only
    /// on that column's byte, so the result is looked up in `table` (indexed by the enum's
    /// discriminant); a row whose slot holds no Feedback node takes `default`, as every
    /// arm's test is null for it.
    CaseTable {
        slot: Slot,
        column: EnumColumn,
        table: Vec<Num>,
        default: Num,
    },
    /// Anything else.
    General,
}

impl<'a> AggArg<'a> {
    fn compile(a: &'a Agg, env: &Env<'a>) -> Self {
        let num = |e: &Expr| match e.kind {
            ExprKind::Const(i) => match env.consts.get(i) {
                Some(Value::Int(n)) => Some(Num::Int(*n)),
                Some(Value::Float(f)) => Some(Num::Float(*f)),
                Some(Value::Null) => Some(Num::Null),
                _ => None,
            },
            _ => None,
        };
        match &a.arg {
            None => AggArg::Star,
            Some(Expr {
                kind: ExprKind::Slot(_),
                ..
            }) => AggArg::Slot,
            Some(Expr {
                kind:
                    ExprKind::Case {
                        operand: None,
                        arms,
                        default,
                    },
                ..
            }) if !a.distinct => {
                let mut out = Vec::with_capacity(arms.len());
                for (w, t) in arms {
                    match num(t) {
                        Some(n) => out.push((w, n)),
                        None => return AggArg::General,
                    }
                }
                let default = match default {
                    None => Num::Null,
                    Some(d) => match num(d) {
                        Some(n) => n,
                        None => return AggArg::General,
                    },
                };
                case_table(&out, default).unwrap_or(AggArg::CaseNum { arms: out, default })
            }
            Some(_) => AggArg::General,
        }
    }
}

/// An enumerated Feedback column a CASE over it is compiled against (the table of
/// [`AggArg::CaseTable`], the group scan's per-value counts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnumColumn {
    /// `type`.
    Type,
    /// `validation_status`.
    Status,
}

/// The arms of a CASE over one enumerated column of one slot: the slot, the column, and
/// each arm's test, whether it is negated (`<>`) and its value.
pub(super) type EnumArms<V> = (Slot, EnumColumn, Vec<(PropTest, bool, V)>);

/// The arms of a CASE whose every condition is a compiled [`ExprKind::PropIs`] on one slot
/// and one enumerated column, each with its value; `None` for any other CASE.
pub(super) fn enum_case_arms<'e, V>(
    arms: impl IntoIterator<Item = (&'e Expr, V)>,
) -> Option<EnumArms<V>> {
    let mut slot = None;
    let mut column = None;
    let mut tests = Vec::new();
    for (cond, v) in arms {
        let ExprKind::PropIs {
            slot: s,
            test,
            negated,
        } = &cond.kind
        else {
            return None;
        };
        let c = match test {
            PropTest::FType(_) => EnumColumn::Type,
            PropTest::FStatus(_) => EnumColumn::Status,
            _ => return None,
        };
        if *slot.get_or_insert(*s) != *s || *column.get_or_insert(c) != c {
            return None;
        }
        tests.push((*test, *negated, v));
    }
    Some((slot?, column?, tests))
}

/// The value a Feedback row takes for each value of `column` (in [`TYPES`] or
/// [`STATUSES`] order): the first arm whose test holds (a test on a Feedback node's
/// enumerated column is never null), else `default`.
pub(super) fn enum_case_values<V: Clone>(
    column: EnumColumn,
    tests: &[(PropTest, bool, V)],
    default: &V,
) -> Vec<V> {
    let pick = |matches: &dyn Fn(PropTest) -> bool| {
        tests
            .iter()
            .find(|(t, negated, _)| matches(*t) != *negated)
            .map_or_else(|| default.clone(), |(_, _, v)| v.clone())
    };
    match column {
        EnumColumn::Type => TYPES
            .iter()
            .map(|ty| pick(&|t| t == PropTest::FType(Some(*ty))))
            .collect(),
        EnumColumn::Status => STATUSES
            .iter()
            .map(|st| pick(&|t| t == PropTest::FStatus(Some(*st))))
            .collect(),
    }
}

pub(super) const TYPES: [FeedbackType; 2] = [FeedbackType::Positive, FeedbackType::Negative];
pub(super) const STATUSES: [ValidationStatus; 4] = [
    ValidationStatus::Approved,
    ValidationStatus::Pending,
    ValidationStatus::Flagged,
    ValidationStatus::Rejected,
];

/// The position of `t` in [`TYPES`] (an exhaustive match: a new variant must be added there).
#[inline]
pub(super) fn type_index(t: FeedbackType) -> usize {
    match t {
        FeedbackType::Positive => 0,
        FeedbackType::Negative => 1,
    }
}

/// The position of `s` in [`STATUSES`].
#[inline]
pub(super) fn status_index(s: ValidationStatus) -> usize {
    match s {
        ValidationStatus::Approved => 0,
        ValidationStatus::Pending => 1,
        ValidationStatus::Flagged => 2,
        ValidationStatus::Rejected => 3,
    }
}

/// Compiles a numeric CASE to a lookup table when every condition is a [`ExprKind::PropIs`]
/// on one slot and one enumerated column: the arms are evaluated once per enum value, in
/// order, with the same three-valued logic [`Env::truth`] applies per row.
fn case_table<'a>(arms: &[(&'a Expr, Num)], default: Num) -> Option<AggArg<'a>> {
    let (slot, column, tests) = enum_case_arms(arms.iter().map(|(c, v)| (*c, *v)))?;
    let table = enum_case_values(column, &tests, &default);
    Some(AggArg::CaseTable {
        slot,
        column,
        table,
        default,
    })
}

/// The running state of one aggregate.
#[derive(Debug, Clone)]
///
/// Kept to 16 bytes (the rare large states are boxed) so one group's accumulators share a
/// cache line: groups are hit in random order.
pub(super) enum Acc<'a> {
    Count(i64),
    SumInt(i64),
    SumFloat(f64),
    /// `n` counts values; a query stops at `max_work` rows, far below `u32::MAX`.
    Avg {
        sum: f64,
        n: u32,
    },
    Min(Box<Value<'a>>),
    Max(Box<Value<'a>>),
    // Boxed on purpose: a bare Vec would make every accumulator 32 bytes.
    #[allow(clippy::box_collection)]
    Collect(Box<Vec<Value<'a>>>),
}

impl<'a> Acc<'a> {
    pub(super) fn new(f: AggFunc) -> Self {
        match f {
            AggFunc::Count => Acc::Count(0),
            AggFunc::Sum => Acc::SumInt(0),
            AggFunc::Avg => Acc::Avg { sum: 0.0, n: 0 },
            AggFunc::Min => Acc::Min(Box::new(Value::Null)),
            AggFunc::Max => Acc::Max(Box::new(Value::Null)),
            AggFunc::Collect => Acc::Collect(Box::default()),
        }
    }

    pub(super) fn add(&mut self, v: &Value<'a>, pos: usize) -> Result<(), Fail> {
        let num_err = |name: &str, v: &Value<'_>| -> Fail {
            CypherError::type_error(
                format!("{name}() needs numbers, got {}", v.type_name()),
                pos,
            )
            .into()
        };
        match self {
            Acc::Count(n) => *n += 1,
            Acc::SumInt(s) => match v {
                Value::Int(i) => match s.checked_add(*i) {
                    Some(t) => *s = t,
                    None => {
                        return Err(
                            CypherError::type_error("integer overflow in sum()", pos).into()
                        );
                    }
                },
                Value::Float(f) => *self = Acc::SumFloat(*s as f64 + f),
                other => return Err(num_err("sum", other)),
            },
            Acc::SumFloat(s) => match v {
                Value::Int(i) => *s += *i as f64,
                Value::Float(f) => *s += f,
                other => return Err(num_err("sum", other)),
            },
            Acc::Avg { sum, n } => {
                match v {
                    Value::Int(i) => *sum += *i as f64,
                    Value::Float(f) => *sum += f,
                    other => return Err(num_err("avg", other)),
                }
                *n = n.saturating_add(1);
            }
            Acc::Min(m) => {
                if m.is_null() || order_cmp(v, m).is_lt() {
                    **m = v.clone();
                }
            }
            Acc::Max(m) => {
                if m.is_null() || order_cmp(v, m).is_gt() {
                    **m = v.clone();
                }
            }
            Acc::Collect(items) => items.push(v.clone()),
        }
        Ok(())
    }

    #[inline]
    fn add_num(&mut self, v: Num, pos: usize) -> Result<(), Fail> {
        match (self, v) {
            (_, Num::Null) => Ok(()),
            (Acc::Count(n), _) => {
                *n += 1;
                Ok(())
            }
            (Acc::SumInt(s), Num::Int(i)) => match s.checked_add(i) {
                Some(t) => {
                    *s = t;
                    Ok(())
                }
                None => Err(CypherError::type_error("integer overflow in sum()", pos).into()),
            },
            (Acc::SumFloat(s), Num::Int(i)) => {
                *s += i as f64;
                Ok(())
            }
            (Acc::SumFloat(s), Num::Float(f)) => {
                *s += f;
                Ok(())
            }
            (Acc::Avg { sum, n }, Num::Int(i)) => {
                *sum += i as f64;
                *n = n.saturating_add(1);
                Ok(())
            }
            (Acc::Avg { sum, n }, Num::Float(f)) => {
                *sum += f;
                *n = n.saturating_add(1);
                Ok(())
            }
            (acc, Num::Int(i)) => acc.add(&Value::Int(i), pos),
            (acc, Num::Float(f)) => acc.add(&Value::Float(f), pos),
        }
    }

    pub(super) fn result(self) -> Value<'a> {
        match self {
            Acc::Count(n) | Acc::SumInt(n) => Value::Int(n),
            Acc::SumFloat(f) => Value::Float(f),
            Acc::Avg { n: 0, .. } => Value::Null,
            Acc::Avg { sum, n } => Value::Float(sum / n as f64),
            Acc::Min(v) | Acc::Max(v) => *v,
            Acc::Collect(items) => Value::list(*items),
        }
    }
}

/// How rows find their group.
enum Grouper<'a> {
    /// By the key values (hashed), with the previous row's group checked first: consecutive
    /// rows of one group (common when the plan expands from the grouping node) skip the hash.
    Values {
        index: HashMap<Box<[Value<'a>]>, u32, FastBuild>,
        buf: Vec<Value<'a>>,
        last: Option<u32>,
    },
    /// By one node: a dense array from node row to group, per label, allocated when that
    /// label is first seen.
    Node {
        slot: Slot,
        feedback: Vec<u32>,
        adapter: Vec<u32>,
        sizes: (usize, usize),
        null: u32,
    },
    /// By two nodes packed into one integer.
    Pair {
        a: Slot,
        b: Slot,
        index: HashMap<u64, u32, FastBuild>,
    },
}

const NO_GROUP: u32 = u32::MAX;

/// A node as a 32-bit code (row and label), null as `NO_GROUP`.
#[inline]
fn node_code(v: &Value<'_>) -> u32 {
    match v {
        Value::Node(NodeRef::Feedback(r)) => r.wrapping_mul(2),
        Value::Node(NodeRef::Adapter(r)) => r.wrapping_mul(2) | 1,
        _ => NO_GROUP,
    }
}

/// Streaming aggregation: one accumulator per group and aggregate, updated as rows arrive;
/// nothing but the groups is kept.
struct AggState<'a> {
    max_groups: usize,
    args: Vec<AggArg<'a>>,
    grouper: Grouper<'a>,
    keys: Vec<Box<[Value<'a>]>>,
    accs: Vec<Acc<'a>>,
    distinct: Vec<Option<HashSet<Value<'a>, FastBuild>>>,
    init: Vec<Acc<'a>>,
    init_distinct: Vec<bool>,
}

impl<'a> AggState<'a> {
    fn new(
        env: &Env<'a>,
        nkeys: usize,
        aggs: &'a [Agg],
        nodes: Option<&[Slot]>,
        max_groups: usize,
    ) -> Self {
        let g = env.g;
        let grouper = match nodes {
            Some([slot]) => Grouper::Node {
                slot: *slot,
                feedback: Vec::new(),
                adapter: Vec::new(),
                sizes: (g.feedback().len(), g.adapters().len()),
                null: NO_GROUP,
            },
            Some([a, b]) => Grouper::Pair {
                a: *a,
                b: *b,
                index: HashMap::default(),
            },
            _ => Grouper::Values {
                index: HashMap::default(),
                buf: Vec::with_capacity(nkeys),
                last: None,
            },
        };
        AggState {
            max_groups,
            args: aggs.iter().map(|a| AggArg::compile(a, env)).collect(),
            grouper,
            keys: Vec::new(),
            accs: Vec::new(),
            distinct: Vec::new(),
            init: aggs.iter().map(|a| Acc::new(a.func)).collect(),
            init_distinct: aggs.iter().map(|a| a.distinct).collect(),
        }
    }

    /// The group of `row`; a new group gets its key values and fresh accumulators.
    fn group(
        &mut self,
        env: &Env<'a>,
        keys: &'a [(Slot, Expr)],
        row: &Row<'a>,
    ) -> Result<usize, Fail> {
        let next = self.keys.len() as u32;
        let (g, new) = match &mut self.grouper {
            Grouper::Values { index, buf, last } => {
                buf.clear();
                for (_, e) in keys {
                    let v = env.eval(e, row)?;
                    buf.push(v);
                }
                if let Some(l) = *last
                    && self.keys.get(l as usize).is_some_and(|k| **k == **buf)
                {
                    return Ok(l as usize);
                }
                match index.get(&**buf) {
                    Some(g) => {
                        *last = Some(*g);
                        return Ok(*g as usize);
                    }
                    None => {
                        let key: Box<[Value<'a>]> = buf.as_slice().into();
                        index.insert(key.clone(), next);
                        self.keys.push(key);
                        *last = Some(next);
                        (next, true)
                    }
                }
            }
            Grouper::Node {
                slot,
                feedback,
                adapter,
                sizes,
                null,
            } => {
                let cell = match row.get(*slot) {
                    Some(Value::Node(NodeRef::Feedback(r))) => {
                        if feedback.is_empty() {
                            *feedback = vec![NO_GROUP; sizes.0];
                        }
                        feedback.get_mut(*r as usize)
                    }
                    Some(Value::Node(NodeRef::Adapter(r))) => {
                        if adapter.is_empty() {
                            *adapter = vec![NO_GROUP; sizes.1];
                        }
                        adapter.get_mut(*r as usize)
                    }
                    _ => Some(null),
                };
                match cell {
                    Some(c) if *c != NO_GROUP => return Ok(*c as usize),
                    Some(c) => {
                        *c = next;
                        (next, true)
                    }
                    None => (next, true),
                }
            }
            Grouper::Pair { a, b, index } => {
                let code = |s: &Slot| row.get(*s).map_or(NO_GROUP, node_code) as u64;
                let k = (code(a) << 32) | code(b);
                match index.get(&k) {
                    Some(g) => return Ok(*g as usize),
                    None => {
                        index.insert(k, next);
                        (next, true)
                    }
                }
            }
        };
        if new {
            if self.keys.len() > self.max_groups {
                return Err(held_too_many(self.max_groups));
            }
            if !matches!(self.grouper, Grouper::Values { .. }) {
                let mut key = Vec::with_capacity(keys.len());
                for (_, e) in keys {
                    key.push(env.eval(e, row)?);
                }
                self.keys.push(key.into());
            }
            self.accs.extend(self.init.iter().cloned());
            self.distinct
                .extend(self.init_distinct.iter().map(|d| d.then(HashSet::default)));
        }
        Ok(g as usize)
    }

    /// Adds `row`, standing for `w` identical rows (see [`Op::ExpandCount`]; the planner
    /// weights rows only for `count`, `min` and `max`, which is all this weights).
    fn add(
        &mut self,
        env: &Env<'a>,
        keys: &'a [(Slot, Expr)],
        aggs: &'a [Agg],
        w: i64,
        row: &Row<'a>,
    ) -> Result<(), Fail> {
        let budget = &env.budget;
        let mark = budget.mark();
        let groups = self.keys.len();
        let g = self.group(env, keys, row)?;
        budget.settle(mark, 0);
        if self.keys.len() != groups {
            // A new group: its key (kept in the list and in the hash index) and its
            // accumulators, held until the aggregation ends.
            let key = match self.keys.last() {
                Some(k) => budget.row_bytes(k)?,
                None => 0,
            };
            budget.charge(
                key.saturating_mul(2)
                    .saturating_add(16 * aggs.len() as u64 + 32),
            )?;
        }
        let n = aggs.len();
        for (j, (a, arg)) in aggs.iter().zip(&self.args).enumerate() {
            let at = g * n + j;
            let case = match arg {
                AggArg::CaseNum { arms, default } => {
                    let mut r = *default;
                    for (cond, v) in arms {
                        if env.truth(cond, row)? == Some(true) {
                            r = *v;
                            break;
                        }
                    }
                    Some(r)
                }
                AggArg::CaseTable {
                    slot,
                    column,
                    table,
                    default,
                } => Some(match row.get(*slot) {
                    Some(Value::Node(NodeRef::Feedback(f))) => {
                        let c = env.g.feedback();
                        let i = match column {
                            EnumColumn::Type => c.feedback_type(*f).map(type_index),
                            EnumColumn::Status => c.status(*f).map(status_index),
                        };
                        i.and_then(|i| table.get(i)).copied().unwrap_or(*default)
                    }
                    _ => *default,
                }),
                _ => None,
            };
            if let Some(r) = case {
                if let Some(acc) = self.accs.get_mut(at) {
                    match acc {
                        Acc::Count(c) if r != Num::Null => *c = c.saturating_add(w),
                        acc => acc.add_num(r, a.pos)?,
                    }
                }
                continue;
            }
            let owned;
            let v: &Value<'a> = match &a.arg {
                None => {
                    if let Some(Acc::Count(c)) = self.accs.get_mut(at) {
                        *c = c.saturating_add(w);
                    }
                    continue;
                }
                // Variables are read in place.
                Some(Expr {
                    kind: ExprKind::Slot(s),
                    ..
                }) => row.get(*s).unwrap_or(&Value::Null),
                Some(e) => {
                    let arg_mark = budget.mark();
                    owned = env.eval(e, row)?;
                    // The argument's temporaries are done with; what is kept of it is
                    // charged below.
                    budget.settle(arg_mark, 0);
                    &owned
                }
            };
            if v.is_null() {
                continue;
            }
            if a.distinct
                && let Some(Some(seen)) = self.distinct.get_mut(at)
            {
                if !seen.insert(v.clone()) {
                    continue;
                }
                budget.charge(VALUE_BYTES + 16 + budget.heap_bytes(v)?)?;
            }
            match self.accs.get_mut(at) {
                // A DISTINCT value counts once however many rows carry it.
                Some(Acc::Count(c)) => *c = c.saturating_add(if a.distinct { 1 } else { w }),
                Some(acc @ Acc::Collect(_)) => {
                    budget.alloc(1, VALUE_BYTES + budget.heap_bytes(v)?)?;
                    acc.add(v, a.pos)?;
                }
                Some(acc) => acc.add(v, a.pos)?,
                None => {}
            }
        }
        Ok(())
    }

    fn finish(mut self, width: usize, keys: &[(Slot, Expr)], aggs: &[Agg]) -> Vec<Row<'a>> {
        if self.keys.is_empty() && keys.is_empty() {
            self.keys.push(Box::new([]));
            self.accs.extend(self.init.iter().cloned());
        }
        let mut accs = self.accs.into_iter();
        let mut out = Vec::with_capacity(self.keys.len());
        for key in self.keys {
            let mut row = vec![Value::Null; width];
            for ((slot, _), v) in keys.iter().zip(key.iter()) {
                row[*slot] = v.clone();
            }
            for a in aggs {
                if let Some(acc) = accs.next() {
                    row[a.slot] = acc.result();
                }
            }
            out.push(row);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::json_len;
    use proptest::prelude::*;
    use serde_json::json;

    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::Bool),
            any::<i64>().prop_map(|i| json!(i)),
            any::<u64>().prop_map(|u| json!(u)),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| json!(f)),
            // Any text JSON writes without escapes (see `json_len`).
            "[^\"\\\\\\x00-\\x1f]{0,40}".prop_map(serde_json::Value::String),
        ];
        leaf.prop_recursive(3, 24, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
                prop::collection::btree_map("[a-z_]{0,12}", inner, 0..6)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// The estimate the budget charges for a returned value is never below its text
        /// (escapes aside).
        #[test]
        fn json_len_bounds_the_text(v in json_value()) {
            let text = serde_json::to_string(&v).unwrap_or_default();
            prop_assert!(json_len(&v) >= text.len() as u64, "{} < {} for {text}", json_len(&v), text.len());
        }
    }
}
