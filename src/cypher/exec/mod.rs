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

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use super::TextSource;
use super::budget::Budget;
use super::error::{CypherError, Fail, Limit};
use super::eval::Env;
use super::plan::*;
use super::rows::Rows;
use super::value::{FastBuild, Value, order_cmp};
use super::{QueryLimits, RowSink, StreamOptions};
use crate::graph::{Direction, EdgeKind, NodeRef, OrgGraph};

pub(super) type Row<'a> = Vec<Value<'a>>;

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

mod aggregate;
mod output;

pub(super) use aggregate::*;
use output::*;

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
