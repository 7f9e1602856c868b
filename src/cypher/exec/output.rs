//! The output side of the executor: result rows turned into cells (node and relationship
//! JSON shared between the cells that return them, values charged to the budget), the
//! output segment's projection, and the bulk path that adds a run of id-only rows at once.

use std::collections::HashMap;
use std::sync::Arc;

use super::*;
use crate::cypher::error::{CypherError, Fail, Limit};
use crate::cypher::eval::Env;
use crate::cypher::rows::{Cell, Rows, node_id_str};
use crate::cypher::value::{FastBuild, Value};
use crate::cypher::{RowSink, StreamOptions};
use crate::graph::{EdgeKind, NodeRef, OrgGraph};

/// Where a column's last borrowed string went: its address and length, and its place in
/// the result's text buffer.
pub(in crate::cypher) type LastStr = Option<(usize, usize, (usize, u32))>;

/// Nodes and relationships this query has already turned into JSON, shared by every cell
/// that returns them: a lineage path repeats the same adapters and DERIVED_FROM edges in
/// row after row, and a feedback node's texts are read once. Each is kept with the length
/// of its JSON text, which every cell that returns it adds to the response.
#[derive(Default)]
pub(in crate::cypher) struct SharedJson {
    pub(in crate::cypher) nodes: HashMap<u64, (Arc<serde_json::Value>, u64), FastBuild>,
    pub(in crate::cypher) rels: HashMap<u32, (Arc<serde_json::Value>, u64), FastBuild>,
}

/// The length of `v` as JSON text, found by walking the value instead of serializing it
/// (which cost a sixth of a whole-node query). Strings count their bytes and quotes but not
/// escapes: scanning every text for characters to escape cost as much again, and the texts
/// a query returns are stored fields, whose length validation bounds; floats count their
/// longest form.
pub(in crate::cypher) fn json_len(v: &serde_json::Value) -> u64 {
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
pub(in crate::cypher) fn str_json_len(s: &str) -> u64 {
    s.len() as u64 + 2
}

/// The length of an integer as JSON text.
#[inline]
pub(in crate::cypher) fn int_len(i: i64) -> u64 {
    u64::from(i.unsigned_abs().checked_ilog10().unwrap_or(0)) + 1 + u64::from(i < 0)
}

impl SharedJson {
    pub(in crate::cypher) fn node(
        &mut self,
        env: &Env<'_>,
        n: NodeRef,
        est: &mut u64,
    ) -> Arc<serde_json::Value> {
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

    pub(in crate::cypher) fn rel(
        &mut self,
        env: &Env<'_>,
        e: u32,
        est: &mut u64,
    ) -> Arc<serde_json::Value> {
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
pub(in crate::cypher) fn value_cell<'a>(
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
pub(in crate::cypher) const CELL_BYTES: u64 = std::mem::size_of::<Cell>() as u64;

/// Appends `v` to the row being built in `out`; returns the length of its JSON text (plus
/// what nested cells take), which the output charges to the budget.
#[inline]
pub(in crate::cypher) fn push_cell<'a>(
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

/// The rows a bulk step of [`RowOut::bulk`] adds at most at once: small enough that the
/// clock and the cancel flag are read often (as [`Exec::tick`] reads them every
/// `budget::CHECK_EVERY` units of work), large enough that the per-step checks cost
/// nothing per row.
pub(in crate::cypher) const BULK_ROWS: usize = 4096;

/// An output segment whose last operator walks a node's incoming edges of one type (one
/// of the graph's dense lists, see [`in_list`]) and whose RETURN is only node ids kept as
/// references into the snapshot (`RETURN f.id, a1.id` after `(f)-[:FEEDBACK_FOR]->(a1)`):
/// the output takes each list whole, a run of rows at a time, instead of one row per
/// edge. Every row's cells are row numbers, from the list or repeated from a node bound
/// before the walk, and every row is charged the same, so a run of rows is two copies
/// into the id columns and one charge. The rows, their order, the batches and the limits
/// are those of the walk a row at a time ([`Exec::expand`] into [`RowOut::row`]), which
/// the output falls back on wherever a run does not fit a limit.
pub(in crate::cypher) struct BulkIn<'a> {
    /// The operators before the walk.
    pub(in crate::cypher) before: &'a [Op],
    /// The walk.
    pub(in crate::cypher) expand: &'a Expand,
    /// Per output column, the node slot whose id it returns.
    pub(in crate::cypher) cols: Vec<Slot>,
}

impl<'a> BulkIn<'a> {
    /// The bulk form of an output segment, when it has one (see the type's docs).
    pub(in crate::cypher) fn new(
        outp: &OutProjection<'a>,
        slots: &[Slot],
        ids: bool,
    ) -> Option<Self> {
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
pub(in crate::cypher) struct RowOut<'o, 's, 'a> {
    pub(in crate::cypher) g: &'a OrgGraph,
    pub(in crate::cypher) slots: &'o [Slot],
    pub(in crate::cypher) outp: &'o OutProjection<'a>,
    /// The snapshot the rows keep (node ids are references into it), when they keep one.
    pub(in crate::cypher) keep: Option<Arc<OrgGraph>>,
    /// The rows not yet handed over.
    pub(in crate::cypher) out: Rows,
    /// Rows a fresh batch reserves room for.
    pub(in crate::cypher) batch_rows: usize,
    pub(in crate::cypher) last: Vec<LastStr>,
    pub(in crate::cypher) shared: SharedJson,
    pub(in crate::cypher) max_rows: usize,
    /// Rows produced so far.
    pub(in crate::cypher) total: usize,
    /// What the rows not yet handed to the sink were charged (streamed rows are released
    /// once the sink has them).
    pub(in crate::cypher) unsent: u64,
    /// A row's cells, its brackets and separators.
    pub(in crate::cypher) row_base: u64,
    pub(in crate::cypher) stream: Option<(&'s mut dyn RowSink, StreamOptions)>,
    /// Per column, the node a bulk run repeats (`None`: the walked list's).
    pub(in crate::cypher) fixed: Vec<Option<NodeRef>>,
}

impl<'o, 's, 'a> RowOut<'o, 's, 'a> {
    pub(in crate::cypher) fn new(
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
    pub(in crate::cypher) fn too_many(&self) -> Fail {
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
    pub(in crate::cypher) fn row(&mut self, ex: &mut Exec<'a>, row: &mut Row<'a>) -> R {
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
    pub(in crate::cypher) fn hand_over_if_full(&mut self, ex: &mut Exec<'a>) -> Result<(), Fail> {
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
    pub(in crate::cypher) fn hand_over(
        &mut self,
        ex: &mut Exec<'a>,
        capacity: usize,
    ) -> Result<(), Fail> {
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
    pub(in crate::cypher) fn bulk(
        &mut self,
        ex: &mut Exec<'a>,
        row: &mut Row<'a>,
        b: &BulkIn<'a>,
    ) -> R {
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
    pub(in crate::cypher) fn finish(mut self, ex: &mut Exec<'a>) -> Result<Output, Fail> {
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
pub(in crate::cypher) fn live_node(g: &OrgGraph, row: &[Value<'_>], slot: Slot) -> Option<NodeRef> {
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
pub(in crate::cypher) const ID_TEXT_BYTES: u64 = 40;

/// The node slot whose id `e` reads, when `e` is `n.id` of a variable.
pub(in crate::cypher) fn id_of(e: &Expr) -> Option<Slot> {
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
pub(in crate::cypher) struct OutProjection<'a> {
    /// The operators to run before the sink.
    pub(in crate::cypher) ops: &'a [Op],
    /// The projection moved into the sink, with, per item, the node slot of an `n.id`
    /// item.
    pub(in crate::cypher) items: Vec<(&'a (Slot, Expr), Option<Slot>)>,
    /// Per output column: the node slot when the column is an `n.id` item.
    pub(in crate::cypher) ids: Vec<Option<Slot>>,
}

impl<'a> OutProjection<'a> {
    pub(in crate::cypher) fn new(ops: &'a [Op], slots: &[Slot]) -> Self {
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
    pub(in crate::cypher) fn eval(
        &self,
        env: &Env<'a>,
        g: &OrgGraph,
        row: &mut Row<'a>,
    ) -> Result<(), Fail> {
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
