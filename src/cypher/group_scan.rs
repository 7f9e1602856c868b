//! Columnar grouped aggregation over one hop: the physical operator [`GroupScan`] for
//! `MATCH (x)-[:R]->(y) [WHERE ...] RETURN <keys of one end>, <aggregates>`.
//!
//! The row-by-row path binds every match in a row, finds its group (a dense array or a
//! hash probe) and updates each aggregate through the general accumulator, about fifty
//! nanoseconds a row. This operator turns the loop inside out: it walks the nodes of the
//! end the keys are read from (the *group* end) in row order, and each one's adjacency
//! list (the graph's dense typed lists where it keeps them, petgraph's otherwise), and
//! reads the other end's (the *member*'s) columns directly:
//!
//! - `count(*)` and `count` of either end are the group's number of rows;
//! - `count`, `sum` and `avg` of a numeric `CASE` over an enumerated Feedback column
//!   (`type`, `validation_status`) count rows per column value in locals, and the result is
//!   computed once per group from those counts and the CASE's table (only when every value
//!   of the table is a whole number small enough that any order of addition is exact);
//! - other aggregates of a column of either end (`min`/`max` of such a CASE, `sum`/`avg`/
//!   `min`/`max`/`count` of an in-graph property) read the value per row and add it to the
//!   group's accumulator, the same [`Acc`] the row path uses;
//! - WHERE conjuncts that read only the group end run once per group node; conjuncts on
//!   the member that test an enumerated column are a lookup in a mask; anything else is
//!   evaluated per row on a scratch row.
//!
//! The key values are computed once per group node (and, unless the keys are that node or
//! its unique id, merged through a hash map once per group node, never per row). A group
//! node with no matching rows makes no group; without keys there is always one group, as in
//! the row path. Anything the operator cannot do exactly as the row path does (DISTINCT,
//! `collect`, expressions over both ends, text properties, relationship variables that are
//! read, more than one hop) is left to the row path: [`compile`] answers `None`.
//!
//! Work is counted as in the row path: one unit per group node and per relationship
//! examined. Groups are charged to the memory budget as the row path charges them, and
//! bounded by the same `max_work / 10` rows.

use std::collections::HashMap;
use std::fmt::Write as _;

use super::error::{CypherError, Fail};
use super::eval::Env;
use super::exec::{
    Acc, EnumColumn, Row, STATUSES, TYPES, enum_case_arms, enum_case_values, held_too_many,
    in_list, source_ref, status_index, type_index,
};
use super::plan::{
    AProp, Agg, AggFunc, Const, Dir, Expr, ExprKind, FProp, Kinds, Op, PropTest, RelKinds, Sink,
    Slot,
};
use super::value::{FastBuild, Value};
use crate::graph::{Direction, EdgeKind, NodeRef, OrgGraph};

/// Largest magnitude of a CASE value counted by histogram: with fewer than 2^32 rows a
/// group's sum stays below 2^52, where every partial sum of whole numbers is exact in a
/// float, whatever the order of addition.
const EXACT: u64 = 1 << 20;

/// Which end of the hop a value is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The end the groups are keyed by (its nodes are walked in row order).
    Group,
    /// The other end (reached through each group node's adjacency list).
    Member,
}

impl EnumColumn {
    /// Its buckets: one per value, and a last one for a node that is not a Feedback node.
    fn width(self) -> usize {
        match self {
            EnumColumn::Type => TYPES.len() + 1,
            EnumColumn::Status => STATUSES.len() + 1,
        }
    }

    /// The bucket of feedback row `r`.
    #[inline(always)]
    fn feedback_bucket(self, g: &OrgGraph, r: u32) -> usize {
        let c = g.feedback();
        match self {
            EnumColumn::Type => c.feedback_type(r).map_or(TYPES.len(), type_index),
            EnumColumn::Status => c.status(r).map_or(STATUSES.len(), status_index),
        }
    }

    /// The bucket of node `n`.
    #[inline(always)]
    fn bucket(self, g: &OrgGraph, n: NodeRef) -> usize {
        match n {
            NodeRef::Feedback(r) => self.feedback_bucket(g, r),
            NodeRef::Adapter(_) => self.width() - 1,
        }
    }
}

/// How one aggregate of the sink is computed.
#[derive(Debug, Clone, PartialEq)]
pub enum GroupAgg {
    /// `count(*)` or `count` of either end (never null): the group's number of rows.
    Rows,
    /// `count`, `sum` or `avg` of a numeric CASE over an enumerated column: `values` holds
    /// the CASE's result per bucket of the column (see [`EnumColumn::bucket`]); rows are
    /// counted per bucket and the result is computed from the counts.
    Hist {
        /// The end the column is read from.
        side: Side,
        /// The column.
        column: EnumColumn,
        /// The result per bucket (null, integer or float constants).
        values: Vec<Const>,
    },
    /// The same CASE, its value added per row (`min`/`max`, or values the counts would not
    /// sum exactly).
    Table {
        /// The end the column is read from.
        side: Side,
        /// The column.
        column: EnumColumn,
        /// The result per bucket.
        values: Vec<Const>,
    },
    /// A property of one end, read from its column per row.
    Prop {
        /// The end it is read from.
        side: Side,
        /// The property on a Feedback node.
        f: Option<FProp>,
        /// The property on an Adapter node.
        a: Option<AProp>,
    },
}

/// A WHERE conjunct that reads the member.
#[derive(Debug, Clone, PartialEq)]
pub enum MemberFilter {
    /// A test of an enumerated column: the row passes if its bucket is allowed.
    Mask {
        /// The column.
        column: EnumColumn,
        /// Per bucket.
        allowed: Vec<bool>,
    },
    /// Any other predicate, evaluated per row.
    Expr(Expr),
}

/// A one-hop grouped aggregation run over columns and adjacency lists (see the module
/// docs). The keys and aggregates are those of the segment's [`Sink::Aggregate`].
#[derive(Debug, Clone, PartialEq)]
pub struct GroupScan {
    /// The group end's node slot.
    pub group: Slot,
    /// The group end's labels.
    pub group_kinds: Kinds,
    /// The member's node slot.
    pub member: Slot,
    /// The member's labels.
    pub member_kinds: Kinds,
    /// Direction from the group end.
    pub dir: Dir,
    /// Accepted relationship types.
    pub types: RelKinds,
    /// WHERE conjuncts reading only the group end (or nothing).
    pub group_filters: Vec<Expr>,
    /// WHERE conjuncts reading the member.
    pub member_filters: Vec<MemberFilter>,
    /// One per aggregate of the sink, in order.
    pub aggs: Vec<GroupAgg>,
    /// The keys are the group node or its unique id: every group node is its own group.
    pub by_node: bool,
}

impl GroupScan {
    /// One line for [`super::plan::Plan::explain`].
    pub fn explain(&self, names: &[String]) -> String {
        let name = |s: Slot| names.get(s).map_or("?", String::as_str);
        let kinds = |k: Kinds| match (k.feedback, k.adapter) {
            (true, true) => ":*",
            (true, false) => ":Feedback",
            (false, true) => ":Adapter",
            (false, false) => ":<none>",
        };
        let mut out = format!(
            "GroupScan {} {} -{:?}-> {} {}{}",
            name(self.group),
            kinds(self.group_kinds),
            self.dir,
            name(self.member),
            kinds(self.member_kinds),
            if self.by_node { " (by node)" } else { "" },
        );
        if !self.group_filters.is_empty() || !self.member_filters.is_empty() {
            let _ = write!(
                out,
                " filters: {} per group node, {} per row",
                self.group_filters.len(),
                self.member_filters.len()
            );
        }
        let aggs: Vec<String> = self
            .aggs
            .iter()
            .map(|a| match a {
                GroupAgg::Rows => "rows".to_owned(),
                GroupAgg::Hist { column, .. } => format!("counts by {column:?}"),
                GroupAgg::Table { column, .. } => format!("per row by {column:?}"),
                GroupAgg::Prop { .. } => "per row column".to_owned(),
            })
            .collect();
        let _ = write!(out, " aggs: {aggs:?}");
        out
    }
}

/// The number or null a plan constant stands for, if it is one.
fn num(consts: &[Const], e: &Expr) -> Option<Const> {
    match e.kind {
        ExprKind::Const(i) => match consts.get(i)? {
            c @ (Const::Null | Const::Int(_) | Const::Float(_)) => Some(c.clone()),
            _ => None,
        },
        _ => None,
    }
}

/// Compiles a segment (its operators and its sink) to a [`GroupScan`] when it has the
/// shape the operator runs exactly like the row path: a scan, a single expansion to a
/// fresh node, filters, and an aggregation without weights whose keys read one end only
/// and whose aggregates the operator knows. `None` leaves the segment as it is.
pub(super) fn compile(ops: &[Op], sink: &Sink, consts: &[Const]) -> Option<GroupScan> {
    let Sink::Aggregate {
        keys,
        aggs,
        nodes,
        weight: None,
    } = sink
    else {
        return None;
    };
    let Some((
        Op::Scan {
            slot: x,
            kinds: x_kinds,
        },
        rest,
    )) = ops.split_first()
    else {
        return None;
    };
    let (x, x_kinds) = (*x, *x_kinds);
    let mut filters = Vec::new();
    let mut expand = None;
    for op in rest {
        match op {
            Op::Filter(e) => filters.push(e),
            Op::Expand(e) if expand.is_none() => expand = Some(e),
            _ => return None,
        }
    }
    let e = expand?;
    if e.from != x || e.to == x || e.into || !e.unique.is_empty() || !e.unique_lists.is_empty() {
        return None;
    }
    let y = e.to;
    let mut key_reads = Vec::new();
    keys.iter().for_each(|(_, k)| k.slots(&mut key_reads));
    if key_reads.iter().any(|s| *s != x && *s != y) {
        return None;
    }
    // Without keys on either end, start from an end the graph keeps dense typed lists into.
    let listed = |kinds: Kinds, dir: Dir| {
        kinds == Kinds::ADAPTER && dir == Dir::In && e.types.feedback_for != e.types.derived_from
    };
    let group_is_y = match (key_reads.contains(&x), key_reads.contains(&y)) {
        (true, true) => return None,
        (true, false) => false,
        (false, true) => true,
        (false, false) => !listed(x_kinds, e.dir) && listed(e.to_kinds, e.dir.reverse()),
    };
    let (group, group_kinds, member, member_kinds, dir) = if group_is_y {
        (y, e.to_kinds, x, x_kinds, e.dir.reverse())
    } else {
        (x, x_kinds, y, e.to_kinds, e.dir)
    };
    let mut group_filters = Vec::new();
    let mut member_filters = Vec::new();
    for f in filters {
        let mut reads = Vec::new();
        f.slots(&mut reads);
        if reads.iter().any(|s| *s != group && *s != member) {
            return None;
        }
        if reads.contains(&member) {
            member_filters.push(member_filter(f, member, member_kinds));
        } else {
            group_filters.push(f.clone());
        }
    }
    let side_of = |s: Slot| {
        if s == group {
            Some((Side::Group, group_kinds))
        } else if s == member {
            Some((Side::Member, member_kinds))
        } else {
            None
        }
    };
    let mut out = Vec::with_capacity(aggs.len());
    for a in aggs {
        out.push(group_agg(a, consts, &side_of)?);
    }
    Some(GroupScan {
        group,
        group_kinds,
        member,
        member_kinds,
        dir,
        types: e.types,
        group_filters,
        member_filters,
        aggs: out,
        by_node: matches!(nodes.as_deref(), Some([s]) if *s == group),
    })
}

/// A WHERE conjunct on the member: a mask when it tests an enumerated column of a member
/// that is always a Feedback node, else the expression.
fn member_filter(f: &Expr, member: Slot, kinds: Kinds) -> MemberFilter {
    if let ExprKind::PropIs {
        slot,
        test,
        negated,
    } = &f.kind
        && *slot == member
        && kinds == Kinds::FEEDBACK
    {
        // As `Env::truth`: the test is (constant == the row's value), flipped by `<>`; a
        // node that is no Feedback node makes it null, which a filter drops.
        let mask = match test {
            PropTest::FType(t) => Some((
                EnumColumn::Type,
                TYPES
                    .iter()
                    .map(|v| (*t == Some(*v)) != *negated)
                    .collect::<Vec<_>>(),
            )),
            PropTest::FStatus(s) => Some((
                EnumColumn::Status,
                STATUSES
                    .iter()
                    .map(|v| (*s == Some(*v)) != *negated)
                    .collect(),
            )),
            _ => None,
        };
        if let Some((column, mut allowed)) = mask {
            allowed.push(false);
            return MemberFilter::Mask { column, allowed };
        }
    }
    MemberFilter::Expr(f.clone())
}

/// How aggregate `a` is computed, or `None` if the operator does not do it.
fn group_agg(
    a: &Agg,
    consts: &[Const],
    side_of: &dyn Fn(Slot) -> Option<(Side, Kinds)>,
) -> Option<GroupAgg> {
    if a.distinct || a.func == AggFunc::Collect {
        return None;
    }
    let Some(arg) = &a.arg else {
        return (a.func == AggFunc::Count).then_some(GroupAgg::Rows);
    };
    match &arg.kind {
        // A bound node is never null.
        ExprKind::Slot(s) if a.func == AggFunc::Count => side_of(*s).map(|_| GroupAgg::Rows),
        ExprKind::Prop(base, key) => {
            let ExprKind::Slot(s) = base.kind else {
                return None;
            };
            let (side, kinds) = side_of(s)?;
            // Only what the graph holds: stored texts and metadata stay on the row path.
            if kinds.feedback && key.f.is_some_and(|p| !p.in_graph()) {
                return None;
            }
            if kinds.adapter && key.a == Some(AProp::Metadata) {
                return None;
            }
            Some(GroupAgg::Prop {
                side,
                f: key.f,
                a: key.a,
            })
        }
        ExprKind::Case {
            operand: None,
            arms,
            default,
        } => {
            let numbered = arms
                .iter()
                .map(|(cond, then)| Some((cond, num(consts, then)?)))
                .collect::<Option<Vec<_>>>()?;
            let (slot, column, tests) = enum_case_arms(numbered)?;
            let default = match default {
                None => Const::Null,
                Some(d) => num(consts, d)?,
            };
            let (side, _) = side_of(slot)?;
            // The arm a row takes: the first whose test is true (never null on a Feedback
            // node); a node that is no Feedback node takes the default (the last bucket).
            let mut values: Vec<Const> = enum_case_values(column, &tests, &default);
            values.push(default);
            let exact = values.iter().all(|v| match v {
                Const::Null => true,
                Const::Int(i) => i.unsigned_abs() <= EXACT,
                Const::Float(f) => f.fract() == 0.0 && f.abs() <= EXACT as f64,
                _ => false,
            });
            Some(
                if exact && matches!(a.func, AggFunc::Count | AggFunc::Sum | AggFunc::Avg) {
                    GroupAgg::Hist {
                        side,
                        column,
                        values,
                    }
                } else {
                    GroupAgg::Table {
                        side,
                        column,
                        values,
                    }
                },
            )
        }
        _ => None,
    }
}

fn const_value<'a>(c: &Const) -> Value<'a> {
    match c {
        Const::Int(i) => Value::Int(*i),
        Const::Float(f) => Value::Float(*f),
        _ => Value::Null,
    }
}

/// The directions to walk for `dir`, in the order the row path walks them.
fn dirs(dir: Dir) -> &'static [Direction] {
    match dir {
        Dir::Out => &[Direction::Outgoing],
        Dir::In => &[Direction::Incoming],
        Dir::Both => &[Direction::Outgoing, Direction::Incoming],
    }
}

/// The running state of one group scan.
struct Run<'r, 'a> {
    gs: &'a GroupScan,
    env: &'r Env<'a>,
    keys: &'a [(Slot, Expr)],
    aggs: &'a [Agg],
    max_groups: usize,
    /// A row with the group node (and, for per-row filters, the member) bound, for the
    /// expressions evaluated through [`Env`].
    scratch: Row<'a>,
    /// Histogram columns read from the member per row, and from the group node once per
    /// group node: (column, offset in a group's counts).
    member_hists: Vec<(EnumColumn, usize)>,
    group_hists: Vec<(EnumColumn, usize)>,
    /// Counts per group.
    hist_width: usize,
    /// Per aggregate: the offset of its histogram column, or its accumulator's index.
    slot_of: Vec<usize>,
    /// The aggregates added per row (indices into `aggs`).
    row_aggs: Vec<usize>,
    /// Per aggregate: its CASE table as values (empty for the others).
    values: Vec<Vec<Value<'a>>>,
    /// Fresh accumulators of the per-row aggregates.
    init: Vec<Acc<'a>>,
    /// The member filters are only masks on enumerated columns.
    masks_only: bool,
    // Groups, in the order they were made.
    index: HashMap<Box<[Value<'a>]>, u32, FastBuild>,
    group_keys: Vec<Box<[Value<'a>]>>,
    rows: Vec<u64>,
    hist: Vec<u64>,
    accs: Vec<Acc<'a>>,
    /// The current group node's counts per histogram bucket.
    local: Vec<u64>,
}

/// Runs the [`GroupScan`] that is `ops`' only operator, with the keys and aggregates of its
/// sink; returns the groups' rows (`width` slots each), as the row path's aggregation does.
pub(super) fn run<'a>(
    ops: &'a [Op],
    env: &Env<'a>,
    width: usize,
    keys: &'a [(Slot, Expr)],
    aggs: &'a [Agg],
    max_groups: usize,
) -> Result<Vec<Row<'a>>, Fail> {
    let Some(Op::GroupScan(gs)) = ops.first() else {
        return Err(CypherError::semantic("internal: no group scan to run", 0).into());
    };
    let mut member_hists: Vec<(EnumColumn, usize)> = Vec::new();
    let mut group_hists: Vec<(EnumColumn, usize)> = Vec::new();
    let mut hist_width = 0;
    let mut slot_of = Vec::with_capacity(aggs.len());
    let mut row_aggs = Vec::new();
    let mut values = Vec::with_capacity(aggs.len());
    let mut init = Vec::new();
    for (j, (ga, a)) in gs.aggs.iter().zip(aggs).enumerate() {
        values.push(match ga {
            GroupAgg::Hist { values, .. } | GroupAgg::Table { values, .. } => {
                values.iter().map(const_value).collect()
            }
            _ => Vec::new(),
        });
        match ga {
            GroupAgg::Rows => slot_of.push(0),
            GroupAgg::Hist { side, column, .. } => {
                let list = match side {
                    Side::Group => &mut group_hists,
                    Side::Member => &mut member_hists,
                };
                let off = match list.iter().find(|(c, _)| c == column) {
                    Some((_, off)) => *off,
                    None => {
                        let off = hist_width;
                        list.push((*column, off));
                        hist_width += column.width();
                        off
                    }
                };
                slot_of.push(off);
            }
            GroupAgg::Table { .. } | GroupAgg::Prop { .. } => {
                slot_of.push(row_aggs.len());
                row_aggs.push(j);
                init.push(Acc::new(a.func));
            }
        }
    }
    let mut run = Run {
        gs,
        env,
        keys,
        aggs,
        max_groups,
        scratch: vec![Value::Null; width],
        member_hists,
        group_hists,
        hist_width,
        slot_of,
        row_aggs,
        values,
        init,
        masks_only: gs
            .member_filters
            .iter()
            .all(|f| matches!(f, MemberFilter::Mask { .. })),
        index: HashMap::default(),
        group_keys: Vec::new(),
        rows: Vec::new(),
        hist: Vec::new(),
        accs: Vec::new(),
        local: vec![0; hist_width],
    };
    let g = env.g;
    if gs.group_kinds.feedback {
        for r in 0..g.feedback().len() as u32 {
            run.visit_group(NodeRef::Feedback(r))?;
        }
    }
    if gs.group_kinds.adapter {
        for r in 0..g.adapters().len() as u32 {
            run.visit_group(NodeRef::Adapter(r))?;
        }
    }
    run.finish()
}

impl<'a> Run<'_, 'a> {
    /// Aggregates the rows of group node `n`.
    fn visit_group(&mut self, n: NodeRef) -> Result<(), Fail> {
        let env = self.env;
        let gs = self.gs;
        let g = env.g;
        env.budget.tick()?;
        self.scratch[gs.group] = Value::Node(n);
        for f in &gs.group_filters {
            if !env.test(f, &self.scratch)? {
                return Ok(());
            }
        }
        self.local.fill(0);
        let mut rows = 0u64;
        let mut group = None;
        // Only counts per bucket: no per-row filter expression and no per-row aggregate.
        let counts_only = self.row_aggs.is_empty() && self.masks_only;
        for &d in dirs(gs.dir) {
            if d == Direction::Incoming
                && let Some((list, kind)) = in_list(g, n, gs.types)
            {
                env.budget.tick_n(list.len() as u64)?;
                if !gs.member_kinds.allows(source_ref(kind, 0)) {
                    continue;
                }
                if counts_only && kind == EdgeKind::FeedbackFor {
                    rows += self.count_feedback(list);
                } else {
                    // Newest edge first, as the row path expands.
                    for &r in list.iter().rev() {
                        self.visit_member(n, source_ref(kind, r), &mut rows, &mut group)?;
                    }
                }
                continue;
            }
            for er in g.edges(n, d) {
                env.budget.tick()?;
                if !gs.types.allows(er.kind) || !gs.member_kinds.allows(er.other) {
                    continue;
                }
                self.visit_member(n, er.other, &mut rows, &mut group)?;
            }
        }
        if rows == 0 {
            return Ok(());
        }
        let gi = match group {
            Some(gi) => gi,
            None => self.group_of(n)?,
        };
        for &(column, off) in &self.group_hists {
            self.local[off + column.bucket(g, n)] += rows;
        }
        self.rows[gi] += rows;
        let hw = self.hist_width;
        for (h, l) in self.hist[gi * hw..(gi + 1) * hw]
            .iter_mut()
            .zip(&self.local)
        {
            *h += l;
        }
        Ok(())
    }

    /// Counts the feedback rows of `list` that pass the masks into the current group node's
    /// buckets; returns how many passed. The hot loop: a byte or two read per row.
    #[inline(never)]
    fn count_feedback(&mut self, list: &[u32]) -> u64 {
        let g = self.env.g;
        let gs = self.gs;
        if gs.member_filters.is_empty() {
            for &(column, off) in &self.member_hists {
                let mut h = [0u64; 8];
                match column {
                    EnumColumn::Type => {
                        let c = g.feedback();
                        for &r in list {
                            h[c.feedback_type(r).map_or(TYPES.len(), type_index)] += 1;
                        }
                    }
                    EnumColumn::Status => {
                        let c = g.feedback();
                        for &r in list {
                            h[c.status(r).map_or(STATUSES.len(), status_index)] += 1;
                        }
                    }
                }
                for (l, x) in self.local[off..off + column.width()].iter_mut().zip(h) {
                    *l += x;
                }
            }
            return list.len() as u64;
        }
        let mut rows = 0;
        'rows: for &r in list {
            for f in &gs.member_filters {
                if let MemberFilter::Mask { column, allowed } = f
                    && !allowed
                        .get(column.feedback_bucket(g, r))
                        .copied()
                        .unwrap_or(false)
                {
                    continue 'rows;
                }
            }
            rows += 1;
            for &(column, off) in &self.member_hists {
                self.local[off + column.feedback_bucket(g, r)] += 1;
            }
        }
        rows
    }

    /// One row: group node `n`, member `m`.
    fn visit_member(
        &mut self,
        n: NodeRef,
        m: NodeRef,
        rows: &mut u64,
        group: &mut Option<usize>,
    ) -> Result<(), Fail> {
        let env = self.env;
        let g = env.g;
        for f in &self.gs.member_filters {
            match f {
                MemberFilter::Mask { column, allowed } => {
                    if !allowed.get(column.bucket(g, m)).copied().unwrap_or(false) {
                        return Ok(());
                    }
                }
                MemberFilter::Expr(e) => {
                    self.scratch[self.gs.member] = Value::Node(m);
                    if !env.test(e, &self.scratch)? {
                        return Ok(());
                    }
                }
            }
        }
        *rows += 1;
        for &(column, off) in &self.member_hists {
            self.local[off + column.bucket(g, m)] += 1;
        }
        if self.row_aggs.is_empty() {
            return Ok(());
        }
        let gi = match *group {
            Some(gi) => gi,
            None => {
                let gi = self.group_of(n)?;
                *group = Some(gi);
                gi
            }
        };
        let base = gi * self.row_aggs.len();
        for (k, &j) in self.row_aggs.iter().enumerate() {
            let at = |side: &Side| match side {
                Side::Group => n,
                Side::Member => m,
            };
            let v = match self.gs.aggs.get(j) {
                Some(GroupAgg::Table { side, column, .. }) => self
                    .values
                    .get(j)
                    .and_then(|t| t.get(column.bucket(g, at(side))))
                    .cloned()
                    .unwrap_or(Value::Null),
                Some(GroupAgg::Prop { side, f, a }) => match at(side) {
                    NodeRef::Feedback(r) => f.map_or(Value::Null, |p| env.fprop(r, p)),
                    NodeRef::Adapter(r) => a.map_or(Value::Null, |p| env.aprop(r, p)),
                },
                _ => Value::Null,
            };
            if v.is_null() {
                continue;
            }
            if let (Some(acc), Some(a)) = (self.accs.get_mut(base + k), self.aggs.get(j)) {
                acc.add(&v, a.pos)?;
            }
        }
        Ok(())
    }

    /// The group of group node `n` (bound in the scratch row): a new one when the keys are
    /// the node itself, else found by its key values, made if new.
    fn group_of(&mut self, n: NodeRef) -> Result<usize, Fail> {
        let env = self.env;
        let budget = &env.budget;
        self.scratch[self.gs.group] = Value::Node(n);
        let mark = budget.mark();
        let mut key = Vec::with_capacity(self.keys.len());
        for (_, e) in self.keys {
            key.push(env.eval(e, &self.scratch)?);
        }
        budget.settle(mark, 0);
        let key: Box<[Value<'a>]> = key.into();
        let next = self.group_keys.len();
        if !self.gs.by_node {
            if let Some(gi) = self.index.get(&key) {
                return Ok(*gi as usize);
            }
            self.index.insert(key.clone(), next as u32);
        }
        if next >= self.max_groups {
            return Err(held_too_many(self.max_groups));
        }
        // As the row path charges a group: its key (in the list and the index) and its
        // accumulators.
        let bytes = budget.row_bytes(&key)?;
        budget.charge(
            bytes
                .saturating_mul(2)
                .saturating_add(16 * self.aggs.len() as u64 + 32),
        )?;
        self.group_keys.push(key);
        self.rows.push(0);
        self.hist.extend(std::iter::repeat_n(0, self.hist_width));
        self.accs.extend(self.init.iter().cloned());
        Ok(next)
    }

    /// The groups' rows.
    fn finish(mut self) -> Result<Vec<Row<'a>>, Fail> {
        if self.group_keys.is_empty() && self.keys.is_empty() {
            // No keys: one group, even over no rows.
            self.group_keys.push(Box::new([]));
            self.rows.push(0);
            self.hist.extend(std::iter::repeat_n(0, self.hist_width));
            self.accs.extend(self.init.iter().cloned());
        }
        let width = self.scratch.len();
        let hw = self.hist_width;
        let mut accs = std::mem::take(&mut self.accs).into_iter();
        let mut out = Vec::with_capacity(self.group_keys.len());
        for (gi, key) in self.group_keys.iter().enumerate() {
            let mut row = vec![Value::Null; width];
            for ((slot, _), v) in self.keys.iter().zip(key.iter()) {
                row[*slot] = v.clone();
            }
            for (j, (ga, a)) in self.gs.aggs.iter().zip(self.aggs).enumerate() {
                let v = match ga {
                    GroupAgg::Rows => Value::Int(i64::try_from(self.rows[gi]).unwrap_or(i64::MAX)),
                    GroupAgg::Hist { column, .. } => {
                        let off = gi * hw + self.slot_of[j];
                        let counts = &self.hist[off..off + column.width()];
                        hist_result(a, &self.values[j], counts)?
                    }
                    GroupAgg::Table { .. } | GroupAgg::Prop { .. } => {
                        accs.next().map_or(Value::Null, Acc::result)
                    }
                };
                row[a.slot] = v;
            }
            out.push(row);
        }
        Ok(out)
    }
}

/// The result of `count`, `sum` or `avg` of a CASE whose value per bucket is `values`,
/// over rows counted per bucket: what adding each row's value in turn gives (every value
/// is a whole number of magnitude at most [`EXACT`], so the sums are exact).
fn hist_result<'a>(a: &Agg, values: &[Value<'a>], counts: &[u64]) -> Result<Value<'a>, Fail> {
    let mut n: u64 = 0;
    let mut total: i128 = 0;
    let mut float = false;
    for (v, &c) in values.iter().zip(counts) {
        if c == 0 {
            continue;
        }
        let x = match v {
            Value::Int(i) => i128::from(*i),
            Value::Float(f) => {
                float = true;
                *f as i128
            }
            _ => continue,
        };
        n += c;
        total += i128::from(c) * x;
    }
    Ok(match a.func {
        AggFunc::Count => Value::Int(i64::try_from(n).unwrap_or(i64::MAX)),
        AggFunc::Sum if float => Value::Float(total as f64),
        AggFunc::Sum => match i64::try_from(total) {
            Ok(s) => Value::Int(s),
            Err(_) => {
                return Err(CypherError::type_error("integer overflow in sum()", a.pos).into());
            }
        },
        AggFunc::Avg if n == 0 => Value::Null,
        AggFunc::Avg => Value::Float(total as f64 / n as f64),
        _ => Value::Null,
    })
}
