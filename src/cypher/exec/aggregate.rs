//! Aggregation in the executor: numeric arguments read straight from property columns
//! (CASE tables over status and type included), the accumulators, and the group state
//! keyed by node codes or whole values.

use std::collections::{HashMap, HashSet};

use super::*;
use crate::cypher::budget::VALUE_BYTES;
use crate::cypher::error::{CypherError, Fail};
use crate::cypher::eval::Env;
use crate::cypher::value::{FastBuild, Value, order_cmp};
use crate::graph::NodeRef;
use crate::model::{FeedbackType, ValidationStatus};

/// A number or null: what most aggregate arguments are, small enough for registers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(in crate::cypher) enum Num {
    Null,
    Int(i64),
    Float(f64),
}

/// An aggregate's argument, classified once per query so the common shapes skip the
/// general evaluator.
pub(in crate::cypher) enum AggArg<'a> {
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
    pub(in crate::cypher) fn compile(a: &'a Agg, env: &Env<'a>) -> Self {
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
pub(in crate::cypher) type EnumArms<V> = (Slot, EnumColumn, Vec<(PropTest, bool, V)>);

/// The arms of a CASE whose every condition is a compiled [`ExprKind::PropIs`] on one slot
/// and one enumerated column, each with its value; `None` for any other CASE.
pub(in crate::cypher) fn enum_case_arms<'e, V>(
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
pub(in crate::cypher) fn enum_case_values<V: Clone>(
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

pub(in crate::cypher) const TYPES: [FeedbackType; 2] =
    [FeedbackType::Positive, FeedbackType::Negative];
pub(in crate::cypher) const STATUSES: [ValidationStatus; 4] = [
    ValidationStatus::Approved,
    ValidationStatus::Pending,
    ValidationStatus::Flagged,
    ValidationStatus::Rejected,
];

/// The position of `t` in [`TYPES`] (an exhaustive match: a new variant must be added there).
#[inline]
pub(in crate::cypher) fn type_index(t: FeedbackType) -> usize {
    match t {
        FeedbackType::Positive => 0,
        FeedbackType::Negative => 1,
    }
}

/// The position of `s` in [`STATUSES`].
#[inline]
pub(in crate::cypher) fn status_index(s: ValidationStatus) -> usize {
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
pub(in crate::cypher) fn case_table<'a>(
    arms: &[(&'a Expr, Num)],
    default: Num,
) -> Option<AggArg<'a>> {
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
pub(in crate::cypher) enum Acc<'a> {
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
    pub(in crate::cypher) fn new(f: AggFunc) -> Self {
        match f {
            AggFunc::Count => Acc::Count(0),
            AggFunc::Sum => Acc::SumInt(0),
            AggFunc::Avg => Acc::Avg { sum: 0.0, n: 0 },
            AggFunc::Min => Acc::Min(Box::new(Value::Null)),
            AggFunc::Max => Acc::Max(Box::new(Value::Null)),
            AggFunc::Collect => Acc::Collect(Box::default()),
        }
    }

    pub(in crate::cypher) fn add(&mut self, v: &Value<'a>, pos: usize) -> Result<(), Fail> {
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
    pub(in crate::cypher) fn add_num(&mut self, v: Num, pos: usize) -> Result<(), Fail> {
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

    pub(in crate::cypher) fn result(self) -> Value<'a> {
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
pub(in crate::cypher) enum Grouper<'a> {
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

pub(in crate::cypher) const NO_GROUP: u32 = u32::MAX;

/// A node as a 32-bit code (row and label), null as `NO_GROUP`.
#[inline]
pub(in crate::cypher) fn node_code(v: &Value<'_>) -> u32 {
    match v {
        Value::Node(NodeRef::Feedback(r)) => r.wrapping_mul(2),
        Value::Node(NodeRef::Adapter(r)) => r.wrapping_mul(2) | 1,
        _ => NO_GROUP,
    }
}

/// Streaming aggregation: one accumulator per group and aggregate, updated as rows arrive;
/// nothing but the groups is kept.
pub(in crate::cypher) struct AggState<'a> {
    pub(in crate::cypher) max_groups: usize,
    pub(in crate::cypher) args: Vec<AggArg<'a>>,
    pub(in crate::cypher) grouper: Grouper<'a>,
    pub(in crate::cypher) keys: Vec<Box<[Value<'a>]>>,
    pub(in crate::cypher) accs: Vec<Acc<'a>>,
    pub(in crate::cypher) distinct: Vec<Option<HashSet<Value<'a>, FastBuild>>>,
    pub(in crate::cypher) init: Vec<Acc<'a>>,
    pub(in crate::cypher) init_distinct: Vec<bool>,
}

impl<'a> AggState<'a> {
    pub(in crate::cypher) fn new(
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
    pub(in crate::cypher) fn group(
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
    pub(in crate::cypher) fn add(
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

    pub(in crate::cypher) fn finish(
        mut self,
        width: usize,
        keys: &[(Slot, Expr)],
        aggs: &[Agg],
    ) -> Vec<Row<'a>> {
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
