//! The pair grouper: counting the rows of a scan and two expansions grouped by two of their
//! nodes, by sorting packed integers instead of probing a hash table per row.
//!
//! The shape is the shared-feedback query's, `MATCH (f)-[:R]->(a1), (f)-[:R]->(a2) ...
//! RETURN a1.id, a2.id, count(f)`, and anything else the planner lowers to the same
//! operators: a [`Op::Scan`], an [`Op::Expand`] from it, a second `Expand` from the scanned
//! or the first expanded node, filters between them, and an aggregation whose keys read at
//! most two of those nodes and whose aggregates all count rows. [`rewrite`] (called by the
//! planner) marks such a segment with a [`Sink::PairCount`]; [`run`] executes it.
//!
//! The executor walks exactly the rows the general pipeline would, in the same order and
//! with the same filters, relationship uniqueness and work counted, but instead of finding
//! each row's group in a hash table (a cache miss per row once there are a few hundred
//! thousand groups) it appends one integer per row to a buffer: the two nodes' codes in the
//! high bits and the row's position in the low bits. Sorting the buffer (a least
//! significant digit radix sort) brings each group's rows together, position order inside;
//! a run's length is its count and its first entry its first row. Groups are then put back
//! in order of their first row, which is the order the hash grouper creates them in, so
//! every later operator (a stable sort with ties, or none) sees the same rows in the same
//! order. Filters on the counts alone (HAVING) run before the keys are built, so the key
//! values of the groups they drop are never made.
//!
//! When the keys are not the nodes themselves or their ids (say `a1.base_model`), several
//! node pairs can share a key: the node-pair groups are merged by key value, in order of
//! their first row.

use std::collections::HashMap;

use super::{
    Exec, Fail, FastBuild, Row, Value, dirs, held_too_many, in_list, set_node, set_rel, source_ref,
};
use crate::cypher::error::CypherError;
use crate::cypher::plan::{
    AProp, AggFunc, Expand, Expr, ExprKind, FProp, Kinds, Op, PairCount, PairSel, Segment, Sink,
    Slot,
};
use crate::graph::{Direction, NodeRef, OrgGraph};

/// The operators of a segment the pair grouper runs.
struct Shape<'p> {
    scan: Slot,
    kinds: Kinds,
    /// Filters after the scan, after the first expansion and after the second.
    filters: [Vec<&'p Expr>; 3],
    first: &'p Expand,
    second: &'p Expand,
}

impl Shape<'_> {
    /// The node slots the segment binds, in order: scanned, first expanded, second.
    fn nodes(&self) -> [Slot; 3] {
        [self.scan, self.first.to, self.second.to]
    }

    /// The slots holding a value in every row the segment produces.
    fn bound(&self) -> impl Iterator<Item = Slot> + '_ {
        self.nodes()
            .into_iter()
            .chain(self.first.rel)
            .chain(self.second.rel)
    }
}

/// The segment's operators as a pair-grouper shape, if they are one.
fn shape(ops: &[Op]) -> Option<Shape<'_>> {
    let mut it = ops.iter().peekable();
    let Some(Op::Scan { slot, kinds }) = it.next() else {
        return None;
    };
    let mut filters: [Vec<&Expr>; 3] = Default::default();
    let mut expands: Vec<&Expand> = Vec::with_capacity(2);
    for op in it {
        match op {
            Op::Filter(e) => filters[expands.len()].push(e),
            Op::Expand(e) if expands.len() < 2 => expands.push(e),
            _ => return None,
        }
    }
    let [first, second] = expands[..] else {
        return None;
    };
    let fresh = |e: &Expand| !e.into && e.unique_lists.is_empty();
    let ok = fresh(first)
        && fresh(second)
        && first.from == *slot
        && first.unique.is_empty()
        && (second.from == *slot || second.from == first.to)
        && second.unique.iter().all(|u| Some(*u) == first.rel)
        && first.to != *slot
        && second.to != *slot
        && second.to != first.to;
    ok.then_some(Shape {
        scan: *slot,
        kinds: *kinds,
        filters,
        first,
        second,
    })
}

/// Marks the first segment of a plan for the pair grouper when it has the shape (see the
/// module comment), and moves the filters on its counts alone from the start of the next
/// segment into it. Called by the planner once the plan is complete.
pub(crate) fn rewrite(segments: &mut [Segment]) {
    let Some((seg, rest)) = segments.split_first_mut() else {
        return;
    };
    let Sink::Aggregate {
        keys,
        aggs,
        nodes,
        weight: None,
    } = &seg.sink
    else {
        return;
    };
    let Some(sh) = shape(&seg.ops) else {
        return;
    };
    let bound: Vec<Slot> = sh.bound().collect();
    let counts_rows = aggs.iter().all(|a| {
        a.func == AggFunc::Count
            && !a.distinct
            && match &a.arg {
                None => true,
                Some(Expr {
                    kind: ExprKind::Slot(s),
                    ..
                }) => bound.contains(s),
                Some(_) => false,
            }
    });
    if !counts_rows || keys.is_empty() {
        return;
    }
    let mut read = Vec::new();
    keys.iter().for_each(|(_, e)| e.slots(&mut read));
    read.sort_unstable();
    read.dedup();
    let node_slots = sh.nodes();
    let pair = match read[..] {
        [a] if node_slots.contains(&a) => [a, a],
        [a, b] if node_slots.contains(&a) && node_slots.contains(&b) => [a, b],
        _ => return,
    };
    let injective = nodes.as_ref().is_some_and(|n| {
        let mut n = n.clone();
        n.sort_unstable();
        n.dedup();
        let mut p = pair.to_vec();
        p.sort_unstable();
        p.dedup();
        n == p
    });
    // HAVING: the next segment's leading filters that read only the counts.
    let count_slots: Vec<Slot> = aggs.iter().map(|a| a.slot).collect();
    let mut having = Vec::new();
    if let Some(next) = rest.first_mut() {
        let n = next
            .ops
            .iter()
            .take_while(|op| match op {
                Op::Filter(e) => {
                    let mut s = Vec::new();
                    e.slots(&mut s);
                    s.iter().all(|x| count_slots.contains(x))
                }
                _ => false,
            })
            .count();
        for op in next.ops.drain(..n) {
            if let Op::Filter(e) = op {
                having.push(e);
            }
        }
    }
    seg.sink = Sink::PairCount(Box::new(PairCount {
        keys: keys.clone(),
        aggs: aggs.clone(),
        pair,
        injective,
        having,
    }));
}

/// How a node of one slot is coded in a packed key: its row, or its row and label when the
/// slot may hold either label.
#[derive(Clone, Copy)]
struct Code {
    both: bool,
    bits: u32,
}

impl Code {
    fn new(g: &OrgGraph, kinds: Kinds) -> Self {
        let (f, a) = (g.feedback().len() as u64, g.adapters().len() as u64);
        let (range, both) = match (kinds.feedback, kinds.adapter) {
            (true, true) => (2 * f.max(a), true),
            (true, false) => (f, false),
            (false, true) => (a, false),
            (false, false) => (0, false),
        };
        Code {
            both,
            bits: 64 - range.saturating_sub(1).leading_zeros(),
        }
    }

    #[inline(always)]
    fn of(self, n: NodeRef) -> u64 {
        match (n, self.both) {
            (NodeRef::Feedback(r), false) | (NodeRef::Adapter(r), false) => u64::from(r),
            (NodeRef::Feedback(r), true) => u64::from(r) << 1,
            (NodeRef::Adapter(r), true) => (u64::from(r) << 1) | 1,
        }
    }

    fn node(self, c: u64, kinds: Kinds) -> NodeRef {
        let (row, adapter) = if self.both {
            ((c >> 1) as u32, c & 1 == 1)
        } else {
            (c as u32, !kinds.feedback)
        };
        if adapter {
            NodeRef::Adapter(row)
        } else {
            NodeRef::Feedback(row)
        }
    }
}

/// A buffer entry: a group's packed nodes above, the row's position below.
trait Entry: Copy + Default {
    /// Bits of the position part (the key starts above them).
    const SEQ_BITS: u32;
    fn pack(key: u64, seq: u64) -> Self;
    fn key(self) -> u64;
    fn seq(self) -> u64;
}

impl Entry for u64 {
    const SEQ_BITS: u32 = 32;
    #[inline(always)]
    fn pack(key: u64, seq: u64) -> Self {
        (key << 32) | seq
    }
    #[inline(always)]
    fn key(self) -> u64 {
        self >> 32
    }
    #[inline(always)]
    fn seq(self) -> u64 {
        self & 0xffff_ffff
    }
}

impl Entry for u128 {
    const SEQ_BITS: u32 = 64;
    #[inline(always)]
    fn pack(key: u64, seq: u64) -> Self {
        (u128::from(key) << 64) | u128::from(seq)
    }
    #[inline(always)]
    fn key(self) -> u64 {
        (self >> 64) as u64
    }
    #[inline(always)]
    fn seq(self) -> u64 {
        self as u64
    }
}

/// Widest radix digit: 2^14 counters (128 KiB) stay in the core's cache.
const MAX_DIGIT_BITS: u32 = 14;

/// Sorts `v` by the `bits` bits of each entry's key from bit `shift` up, stably, by a least
/// significant digit radix sort with `scratch` as the second buffer. The entries arrive in
/// row order, and a stable sort keeps the rows of each key in that order, so the first
/// entry of a run is the run's first row; the position bits need no sorting. Digits that
/// are the same in every entry are skipped.
fn radix_sort<E: Entry>(v: &mut Vec<E>, scratch: &mut Vec<E>, shift: u32, bits: u32) {
    if bits == 0 {
        return;
    }
    let passes = bits.div_ceil(MAX_DIGIT_BITS);
    let width = bits.div_ceil(passes);
    let mask = (1u64 << width) - 1;
    let digit = |x: E, p: u32| (((x.key() >> shift) >> (p * width)) & mask) as usize;
    // One read of the data for every pass's histogram.
    let mut hist = vec![0usize; (passes as usize) << width];
    for &x in v.iter() {
        for p in 0..passes {
            if let Some(c) = hist.get_mut(((p as usize) << width) + digit(x, p)) {
                *c += 1;
            }
        }
    }
    scratch.clear();
    scratch.resize(v.len(), E::default());
    for (p, h) in hist.chunks_exact_mut(1 << width).enumerate() {
        if h.contains(&v.len()) {
            continue;
        }
        // Counts to starting places.
        let mut sum = 0;
        for c in h.iter_mut() {
            let n = *c;
            *c = sum;
            sum += n;
        }
        for &x in v.iter() {
            if let Some(at) = h.get_mut(digit(x, p as u32)) {
                if let Some(slot) = scratch.get_mut(*at) {
                    *slot = x;
                }
                *at += 1;
            }
        }
        std::mem::swap(v, scratch);
    }
}

/// Widest low part of a key counted in a flat array rather than sorted: 2^16 counters and
/// first rows (768 KiB) for every group that shares the high part.
const MAX_DENSE_BITS: u32 = 16;

/// One group of equal keys: the packed key, its number of rows and its first row.
type Group = (u64, u64, u64);

/// The groups of `buf`'s keys (`hi_bits` above `lo_bits`), in no particular order (each
/// group's first row tells its place).
///
/// When the low part is narrow (at most [`MAX_DENSE_BITS`]), the entries are sorted by the
/// high part only, and each run of one high part is counted into a flat array indexed by
/// the low part, remembering each low part's first row: one radix pass fewer than sorting
/// the whole key, and no pass to find the runs. Otherwise the whole key is sorted and runs
/// are counted.
fn groups_of<E: Entry>(buf: &mut Vec<E>, hi_bits: u32, lo_bits: u32) -> Vec<Group> {
    let mut scratch = Vec::new();
    let mut groups: Vec<Group> = Vec::new();
    if lo_bits == 0 || lo_bits > MAX_DENSE_BITS {
        radix_sort(buf, &mut scratch, 0, hi_bits + lo_bits);
        drop(scratch);
        for &x in buf.iter() {
            match groups.last_mut() {
                Some(last) if last.0 == x.key() => last.1 += 1,
                _ => groups.push((x.key(), 1, x.seq())),
            }
        }
        return groups;
    }
    radix_sort(buf, &mut scratch, lo_bits, hi_bits);
    drop(scratch);
    let lo_mask = (1u64 << lo_bits) - 1;
    let mut count = vec![0u64; 1 << lo_bits];
    let mut first = vec![0u64; 1 << lo_bits];
    let mut touched: Vec<u64> = Vec::new();
    for run in buf.chunk_by(|x, y| x.key() >> lo_bits == y.key() >> lo_bits) {
        let Some(head) = run.first() else {
            continue;
        };
        let hi = head.key() & !lo_mask;
        for &x in run {
            let lo = x.key() & lo_mask;
            if let (Some(c), Some(f)) = (count.get_mut(lo as usize), first.get_mut(lo as usize)) {
                if *c == 0 {
                    *f = x.seq();
                    touched.push(lo);
                }
                *c += 1;
            }
        }
        for &lo in &touched {
            if let (Some(c), Some(f)) = (count.get_mut(lo as usize), first.get(lo as usize)) {
                groups.push((hi | lo, *c, *f));
                *c = 0;
            }
        }
        touched.clear();
    }
    groups
}

/// Bytes of the flat arrays [`groups_of`] uses for a low part of `lo_bits` (besides the
/// sort's second buffer, charged with the entries).
fn dense_bytes(lo_bits: u32) -> u64 {
    if lo_bits == 0 || lo_bits > MAX_DENSE_BITS {
        0
    } else {
        16u64 << lo_bits
    }
}

/// The relationships `e` follows from `from`, as [`Exec::expand`] walks them (same order,
/// same checks, one unit of work per relationship examined), into `out`; returns the units
/// of work. The uniqueness check is left to the caller.
///
/// The row pipeline first checks that `from` is a node of the graph; a row without one has
/// no relationships here either (`OrgGraph::edges` and the adapters' lists yield nothing),
/// so the check is left out. `need_eid`: look the relationship up where the list does not
/// carry it (as the pipeline does when a slot or a uniqueness check needs it).
#[inline]
fn edges(
    g: &OrgGraph,
    e: &Expand,
    from: NodeRef,
    need_eid: bool,
    out: &mut Vec<(NodeRef, u32)>,
) -> u64 {
    out.clear();
    let mut work = 0u64;
    for &d in dirs(e.dir) {
        if d == Direction::Incoming
            && let Some((list, kind)) = in_list(g, from, e.types)
        {
            if !e.to_kinds.allows(source_ref(kind, 0)) {
                continue;
            }
            for &r in list.iter().rev() {
                work += 1;
                let other = source_ref(kind, r);
                let mut eid = 0;
                if need_eid {
                    let Some(x) = g.edge_between(other, from, kind) else {
                        continue;
                    };
                    eid = x;
                }
                out.push((other, eid));
            }
            continue;
        }
        for er in g.edges(from, d) {
            work += 1;
            if e.types.allows(er.kind) && e.to_kinds.allows(er.other) {
                out.push((er.other, er.id));
            }
        }
    }
    work
}

/// Does `e` need relationship ids (for its slot or a uniqueness check)?
fn needs_eid(e: &Expand) -> bool {
    e.rel.is_some() || !e.unique.is_empty()
}

/// A filter of the walk: `a.id <> b.id` (or `=`) on two of its nodes compares rows (ids
/// are unique); anything else is evaluated on the row.
enum Test<'p> {
    /// `a.id <> b.id` (or `=`) on two nodes of the walk.
    SameId(SameId),
    General(&'p Expr),
}

/// [`ExprKind::PropPair`] on the id, decided on the nodes' rows.
#[derive(Clone, Copy)]
struct SameId {
    /// The levels of the two nodes (0 the scan, 1 the first expansion, 2 the second).
    a: usize,
    b: usize,
    /// The label both must have: Adapter (else Feedback).
    adapter: bool,
    /// `<>` rather than `=`.
    negated: bool,
}

impl SameId {
    /// The comparison's verdict on the nodes bound so far.
    #[inline(always)]
    fn pass(self, nodes: &[NodeRef; 3]) -> bool {
        match (nodes.get(self.a), nodes.get(self.b), self.adapter) {
            (Some(NodeRef::Adapter(x)), Some(NodeRef::Adapter(y)), true)
            | (Some(NodeRef::Feedback(x)), Some(NodeRef::Feedback(y)), false) => {
                (x == y) != self.negated
            }
            // A node of another label: the comparison is null.
            _ => false,
        }
    }
}

impl<'p> Test<'p> {
    fn compile(e: &'p Expr, sh: &Shape<'_>) -> Self {
        let nodes = sh.nodes();
        let level = |s: Slot| nodes.iter().position(|x| *x == s);
        if let ExprKind::PropPair { a, b, sel, negated } = &e.kind
            && let (Some(a), Some(b)) = (level(*a), level(*b))
        {
            let adapter = match sel {
                PairSel::Adapter(AProp::Id) => Some(true),
                PairSel::Feedback(FProp::Id) => Some(false),
                _ => None,
            };
            if let Some(adapter) = adapter {
                return Test::SameId(SameId {
                    a,
                    b,
                    adapter,
                    negated: *negated,
                });
            }
        }
        Test::General(e)
    }

    /// The filter's verdict on the nodes bound so far (`nodes`) or the row.
    #[inline(always)]
    fn pass<'a>(&self, ex: &Exec<'a>, nodes: &[NodeRef; 3], row: &Row<'a>) -> Result<bool, Fail>
    where
        'p: 'a,
    {
        match self {
            Test::SameId(t) => Ok(t.pass(nodes)),
            Test::General(e) => ex.env.test(e, row),
        }
    }
}

/// Runs a [`Sink::PairCount`] segment on the single empty input row; returns the groups as
/// the aggregation would (one row per group surviving `having`, in order of first row).
pub(super) fn run<'a>(
    ex: &mut Exec<'a>,
    ops: &'a [Op],
    pc: &'a PairCount,
    width: usize,
) -> Result<Vec<Row<'a>>, Fail> {
    let sh = shape(ops).ok_or_else(|| {
        Fail::from(CypherError::semantic(
            "internal: the pair grouper's operators changed",
            0,
        ))
    })?;
    let g = ex.env.g;
    let kinds_of = |s: Slot| {
        if s == sh.scan {
            sh.kinds
        } else if s == sh.first.to {
            sh.first.to_kinds
        } else {
            sh.second.to_kinds
        }
    };
    let lo = if pc.pair[0] == pc.pair[1] {
        None
    } else {
        Some(Code::new(g, kinds_of(pc.pair[1])))
    };
    let hi = Code::new(g, kinds_of(pc.pair[0]));
    let key_bits = hi.bits + lo.map_or(0, |c| c.bits);
    if key_bits <= 32 {
        count::<u64>(ex, &sh, pc, width, hi, lo)
    } else {
        count::<u128>(ex, &sh, pc, width, hi, lo)
    }
}

/// Which level of the walk binds a key node: 0 the scan, 1 the first expansion, 2 the second.
fn level(sh: &Shape<'_>, s: Slot) -> usize {
    sh.nodes().iter().position(|x| *x == s).unwrap_or(0)
}

/// A remembered HAVING verdict for one count.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Unknown,
    Pass,
    Fail,
}

/// The buffer of packed entries the walk fills, one per row, charged to the budget as it
/// grows.
struct Entries<E> {
    buf: Vec<E>,
    /// The next row's position.
    seq: u64,
    /// The largest position an entry can hold.
    max_seq: u64,
    /// Entries charged so far.
    charged: usize,
}

impl<E: Entry> Entries<E> {
    fn new() -> Self {
        Entries {
            buf: Vec::new(),
            seq: 0,
            max_seq: if E::SEQ_BITS >= 64 {
                u64::MAX
            } else {
                (1u64 << E::SEQ_BITS) - 1
            },
            charged: 0,
        }
    }

    /// Appends the next row's entry, grouped by `key`.
    #[inline(always)]
    fn push(&mut self, ex: &Exec<'_>, key: u64) -> Result<(), Fail> {
        if self.seq > self.max_seq {
            return Err(CypherError::limit(
                super::Limit::MaxWork,
                "the query produced more rows than the pair grouper can number; narrow the MATCH",
            )
            .into());
        }
        self.buf.push(E::pack(key, self.seq));
        self.seq += 1;
        if self.buf.len() >= self.charged + CHARGE_EVERY {
            self.charge(ex)?;
        }
        Ok(())
    }

    /// Charges the entries added since the last charge: the buffer and the sort's second
    /// buffer.
    #[inline(never)]
    fn charge(&mut self, ex: &Exec<'_>) -> Result<(), Fail> {
        let new = (self.buf.len() - self.charged) as u64;
        ex.env
            .budget
            .charge(2 * std::mem::size_of::<E>() as u64 * new)?;
        self.charged = self.buf.len();
        Ok(())
    }
}

/// The walk of [`count`] when every filter compares ids (nothing is bound in a row) and the
/// second expansion is the first one again from the scanned node, as in the shared-feedback
/// query: one list per scanned node, walked twice. The rows, their order and the work
/// counted are the general walk's.
#[allow(clippy::too_many_arguments)]
fn walk_same<E: Entry>(
    ex: &mut Exec<'_>,
    first: &Expand,
    scan: impl Iterator<Item = NodeRef>,
    tests: &[Vec<SameId>; 3],
    need_eid: bool,
    taken_check: bool,
    key_of: impl Fn(&[NodeRef; 3]) -> u64,
    out: &mut Entries<E>,
) -> Result<(), Fail> {
    let g = ex.env.g;
    let mut list: Vec<(NodeRef, u32)> = Vec::new();
    let mut nodes = [NodeRef::Feedback(0); 3];
    let [t0, t1, t2] = tests;
    for s in scan {
        ex.tick()?;
        nodes[0] = s;
        if !t0.iter().all(|t| t.pass(&nodes)) {
            continue;
        }
        let work = edges(g, first, s, need_eid, &mut list);
        ex.env.budget.tick_n(work)?;
        for &(a, e1) in &list {
            nodes[1] = a;
            if !t1.iter().all(|t| t.pass(&nodes)) {
                continue;
            }
            // The second expansion walks the list again (the row path walks it per row).
            ex.env.budget.tick_n(work)?;
            for &(b, e2) in &list {
                if taken_check && e2 == e1 {
                    continue;
                }
                nodes[2] = b;
                if !t2.iter().all(|t| t.pass(&nodes)) {
                    continue;
                }
                out.push(ex, key_of(&nodes))?;
            }
        }
    }
    Ok(())
}

/// Entries per budget charge.
const CHARGE_EVERY: usize = 1 << 14;

fn count<'a, E: Entry>(
    ex: &mut Exec<'a>,
    sh: &Shape<'a>,
    pc: &'a PairCount,
    width: usize,
    hi: Code,
    lo: Option<Code>,
) -> Result<Vec<Row<'a>>, Fail> {
    let g = ex.env.g;
    let budget_mark = ex.env.budget.mark();
    let (hl, ll) = (level(sh, pc.pair[0]), level(sh, pc.pair[1]));
    let lo_bits = lo.map_or(0, |c| c.bits);
    let mut row: Row<'a> = vec![Value::Null; width];
    let mut list1: Vec<(NodeRef, u32)> = Vec::new();
    let mut list2: Vec<(NodeRef, u32)> = Vec::new();
    let second_from_scan = sh.second.from == sh.scan;
    // From the scanned node, the second expansion may be the first one again (Q4): then
    // its list is the first's.
    let same = second_from_scan
        && sh.first.types == sh.second.types
        && sh.first.dir == sh.second.dir
        && sh.first.to_kinds == sh.second.to_kinds;
    let need1 = needs_eid(sh.first) || (same && needs_eid(sh.second));
    let need2 = needs_eid(sh.second);
    let taken_check = !sh.second.unique.is_empty();
    let tests: [Vec<Test<'a>>; 3] = [0, 1, 2].map(|l| {
        sh.filters[l]
            .iter()
            .map(|&e| Test::compile(e, sh))
            .collect()
    });
    // Bind the row's slots at a level only when a general filter at or after it reads them.
    let general = |l: usize| tests[l].iter().any(|t| matches!(t, Test::General(_)));
    let write = [
        general(0) || general(1) || general(2),
        general(1) || general(2),
        general(2),
    ];
    let mut out = Entries::<E>::new();
    let rows = |k: Kinds| {
        (
            if k.feedback { g.feedback().len() } else { 0 } as u32,
            if k.adapter { g.adapters().len() } else { 0 } as u32,
        )
    };
    let (nf, na) = rows(sh.kinds);
    let scan = (0..nf)
        .map(NodeRef::Feedback)
        .chain((0..na).map(NodeRef::Adapter));
    let key_of = |nodes: &[NodeRef; 3]| {
        let mut key = hi.of(nodes[hl]);
        if let Some(lo) = lo {
            key = (key << lo_bits) | lo.of(nodes[ll]);
        }
        key
    };
    let only_ids = |l: usize| -> Option<Vec<SameId>> {
        tests[l]
            .iter()
            .map(|t| match t {
                Test::SameId(t) => Some(*t),
                Test::General(_) => None,
            })
            .collect()
    };
    if same && let (Some(t0), Some(t1), Some(t2)) = (only_ids(0), only_ids(1), only_ids(2)) {
        walk_same(
            ex,
            sh.first,
            scan,
            &[t0, t1, t2],
            need1,
            taken_check,
            key_of,
            &mut out,
        )?;
    } else {
        let mut nodes = [NodeRef::Feedback(0); 3];
        'scan: for s in scan {
            ex.tick()?;
            nodes[0] = s;
            if write[0] {
                set_node(&mut row, sh.scan, s);
            }
            for t in &tests[0] {
                if !t.pass(ex, &nodes, &row)? {
                    continue 'scan;
                }
            }
            let work1 = edges(g, sh.first, s, need1, &mut list1);
            ex.env.budget.tick_n(work1)?;
            // From the scanned node, the second list is the same for every first relationship:
            // walked once, counted each time (as the row pipeline walks it each time).
            let mut work2 = None;
            'first: for &(a, e1) in &list1 {
                nodes[1] = a;
                if write[1] {
                    set_node(&mut row, sh.first.to, a);
                    if let Some(rs) = sh.first.rel {
                        set_rel(&mut row, rs, e1);
                    }
                }
                for t in &tests[1] {
                    if !t.pass(ex, &nodes, &row)? {
                        continue 'first;
                    }
                }
                let w = match (second_from_scan, work2) {
                    (true, Some(w)) => w,
                    (true, None) => {
                        let w = if same {
                            work1
                        } else {
                            edges(g, sh.second, s, need2, &mut list2)
                        };
                        work2 = Some(w);
                        w
                    }
                    (false, _) => edges(g, sh.second, a, need2, &mut list2),
                };
                ex.env.budget.tick_n(w)?;
                let second: &[(NodeRef, u32)] = if same { &list1 } else { &list2 };
                'second: for &(b, e2) in second {
                    if taken_check && e2 == e1 {
                        continue;
                    }
                    nodes[2] = b;
                    if write[2] {
                        set_node(&mut row, sh.second.to, b);
                        if let Some(rs) = sh.second.rel {
                            set_rel(&mut row, rs, e2);
                        }
                    }
                    for t in &tests[2] {
                        if !t.pass(ex, &nodes, &row)? {
                            continue 'second;
                        }
                    }
                    out.push(ex, key_of(&nodes))?;
                }
            }
        }
    }
    ex.env.budget.check()?;

    // The groups: (packed nodes, rows, first row).
    ex.env.budget.charge(dense_bytes(lo_bits))?;
    let mut buf = out.buf;
    let mut groups = groups_of(&mut buf, hi.bits, lo_bits);
    drop(buf);
    ex.env.budget.settle(budget_mark, 0);
    let max_groups = ex.max_held();
    if groups.len() > max_groups {
        return Err(held_too_many(max_groups));
    }
    ex.env.budget.charge(24 * groups.len() as u64)?;

    let lo_mask = if lo_bits == 0 {
        0
    } else {
        (1u64 << lo_bits) - 1
    };
    let kinds = |s: Slot| {
        if s == sh.scan {
            sh.kinds
        } else if s == sh.first.to {
            sh.first.to_kinds
        } else {
            sh.second.to_kinds
        }
    };
    let decode = |k: u64, row: &mut Row<'a>| {
        let (h, l) = match lo {
            Some(_) => (k >> lo_bits, k & lo_mask),
            None => (k, 0),
        };
        set_node(row, pc.pair[0], hi.node(h, kinds(pc.pair[0])));
        if let Some(lo) = lo {
            set_node(row, pc.pair[1], lo.node(l, kinds(pc.pair[1])));
        }
    };
    let mut scratch_row: Row<'a> = vec![Value::Null; width];
    // Does a group with `n` rows pass HAVING? It reads only the counts, so the verdict of
    // a small count is remembered.
    let mut verdicts = vec![Verdict::Unknown; if pc.having.is_empty() { 0 } else { 4096 }];
    let mut passes = |ex: &mut Exec<'a>, r: &mut Row<'a>, n: u64| -> Result<bool, Fail> {
        if pc.having.is_empty() {
            return Ok(true);
        }
        let known = usize::try_from(n).ok().and_then(|i| verdicts.get_mut(i));
        if let Some(Verdict::Pass | Verdict::Fail) = known.as_deref() {
            return Ok(known.as_deref() == Some(&Verdict::Pass));
        }
        let v = Value::Int(i64::try_from(n).unwrap_or(i64::MAX));
        for a in &pc.aggs {
            r[a.slot] = v.clone();
        }
        let mut ok = true;
        for f in &pc.having {
            if !ex.env.test(f, r)? {
                ok = false;
                break;
            }
        }
        if let Some(k) = known {
            *k = if ok { Verdict::Pass } else { Verdict::Fail };
        }
        Ok(ok)
    };
    let key_values = |ex: &mut Exec<'a>, r: &Row<'a>| -> Result<Vec<Value<'a>>, Fail> {
        let mut out = Vec::with_capacity(pc.keys.len());
        for (_, e) in &pc.keys {
            out.push(ex.env.eval(e, r)?);
        }
        Ok(out)
    };
    let mut out: Vec<Row<'a>> = Vec::new();
    let emit = |ex: &mut Exec<'a>,
                out: &mut Vec<Row<'a>>,
                key: Vec<Value<'a>>,
                n: u64|
     -> Result<(), Fail> {
        let mut r = vec![Value::Null; width];
        for ((slot, _), v) in pc.keys.iter().zip(key) {
            r[*slot] = v;
        }
        let v = Value::Int(i64::try_from(n).unwrap_or(i64::MAX));
        for a in &pc.aggs {
            r[a.slot] = v.clone();
        }
        let b = ex.env.budget.row_bytes(&r)?;
        ex.env.budget.charge(b)?;
        out.push(r);
        Ok(())
    };
    if pc.injective {
        // HAVING first, then only the groups it keeps are put back in order of first row.
        let mut kept = 0;
        for i in 0..groups.len() {
            if let Some(&g) = groups.get(i)
                && passes(ex, &mut scratch_row, g.1)?
            {
                if let Some(slot) = groups.get_mut(kept) {
                    *slot = g;
                }
                kept += 1;
            }
        }
        groups.truncate(kept);
        groups.sort_unstable_by_key(|g| g.2);
        for &(k, n, _) in &groups {
            decode(k, &mut scratch_row);
            let key = key_values(ex, &scratch_row)?;
            emit(ex, &mut out, key, n)?;
        }
    } else {
        // Merge node pairs with equal keys, in order of first row.
        groups.sort_unstable_by_key(|g| g.2);
        let mut index: HashMap<Box<[Value<'a>]>, usize, FastBuild> = HashMap::default();
        let mut merged: Vec<(Box<[Value<'a>]>, u64)> = Vec::new();
        for &(k, n, _) in &groups {
            decode(k, &mut scratch_row);
            let key: Box<[Value<'a>]> = key_values(ex, &scratch_row)?.into();
            match index.get(&key) {
                Some(&i) => {
                    if let Some(m) = merged.get_mut(i) {
                        m.1 += n;
                    }
                }
                None => {
                    let b = ex.env.budget.row_bytes(&key)?;
                    ex.env.budget.charge(2 * b + 48)?;
                    index.insert(key.clone(), merged.len());
                    merged.push((key, n));
                }
            }
        }
        drop(index);
        for (key, n) in merged {
            if passes(ex, &mut scratch_row, n)? {
                emit(ex, &mut out, key.into_vec(), n)?;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The groups by the obvious method: a map from key to (rows, first row).
    fn reference<E: Entry>(entries: &[E]) -> Vec<Group> {
        let mut by_key: std::collections::BTreeMap<u64, (u64, u64)> = Default::default();
        for x in entries {
            by_key
                .entry(x.key())
                .and_modify(|g| g.0 += 1)
                .or_insert((1, x.seq()));
        }
        let mut out: Vec<Group> = by_key.into_iter().map(|(k, (n, f))| (k, n, f)).collect();
        out.sort_unstable_by_key(|g| g.2);
        out
    }

    fn grouped<E: Entry>(mut entries: Vec<E>, hi_bits: u32, lo_bits: u32) -> Vec<Group> {
        let mut out = groups_of(&mut entries, hi_bits, lo_bits);
        out.sort_unstable_by_key(|g| g.2);
        out
    }

    /// Keys drawn from `hi_bits` and `lo_bits` wide parts (a few values of each, so groups
    /// repeat), numbered in order.
    fn keys(hi_bits: u32, lo_bits: u32) -> impl Strategy<Value = Vec<u64>> {
        let part = |bits: u32| {
            let max = if bits == 0 { 0 } else { (1u64 << bits) - 1 };
            prop_oneof![Just(0u64), Just(max), 0..=max, 0..=max.min(7)]
        };
        prop::collection::vec(
            (part(hi_bits), part(lo_bits)).prop_map(move |(h, l)| (h << lo_bits) | l),
            0..600,
        )
    }

    proptest! {
        #[test]
        fn narrow_low_parts_group_as_a_map_does(
            (hi_bits, lo_bits, ks) in (0u32..=MAX_DENSE_BITS)
                .prop_flat_map(|l| (0..=32 - l, Just(l)))
                .prop_flat_map(|(h, l)| (Just(h), Just(l), keys(h, l)))
        ) {
            let entries: Vec<u64> =
                ks.iter().enumerate().map(|(i, &k)| u64::pack(k, i as u64)).collect();
            prop_assert_eq!(grouped(entries.clone(), hi_bits, lo_bits), reference(&entries));
        }

        #[test]
        fn wide_keys_group_as_a_map_does(
            (hi_bits, lo_bits, ks) in (0u32..=30, (MAX_DENSE_BITS + 1)..=34)
                .prop_flat_map(|(h, l)| (Just(h), Just(l), keys(h, l)))
        ) {
            let entries: Vec<u128> =
                ks.iter().enumerate().map(|(i, &k)| u128::pack(k, i as u64)).collect();
            prop_assert_eq!(grouped(entries.clone(), hi_bits, lo_bits), reference(&entries));
        }
    }
}
