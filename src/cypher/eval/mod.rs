//! Expression evaluation over a row, property reads from the graph's columns, the scalar
//! functions, and turning values into JSON for the result.
//!
//! Nothing here allocates for the common cases (property reads, comparisons, arithmetic on
//! numbers, CASE): strings are borrowed from the graph or the plan. Long text fields are
//! loaded through the [`TextSource`] only when an expression reads one or a Feedback node is
//! returned.

use std::rc::Rc;

use serde_json::json;

use super::TextSource;
use super::budget::{Budget, VALUE_BYTES, string_work};
use super::error::{CypherError, Fail};
use super::plan::*;
use super::value::{PathVal, Value, cypher_cmp, cypher_eq};
use crate::graph::{EdgeKind, NodeRef, OrgGraph, Sym, SymCol};

mod functions;
mod json;
mod props;

pub(crate) use functions::arith;
use json::ints_beyond_i64_as_floats;

/// What expressions are evaluated against: the graph, the text source, the constants, and
/// the query's budget, which every value-building loop charges (work and memory) and
/// which checks the deadline and the cancel flag as it goes.
pub(crate) struct Env<'a> {
    pub g: &'a OrgGraph,
    pub text: &'a dyn TextSource,
    pub consts: Vec<Value<'a>>,
    pub budget: Budget<'a>,
}

fn const_value(c: &Const) -> Value<'_> {
    match c {
        Const::Null => Value::Null,
        Const::Bool(b) => Value::Bool(*b),
        Const::Int(i) => Value::Int(*i),
        Const::Float(f) => Value::Float(*f),
        Const::Str(s) => Value::Str(s),
        Const::List(items) => Value::List(items.iter().map(const_value).collect()),
        Const::Map(entries) => Value::Map(
            entries
                .iter()
                .map(|(k, v)| (Rc::from(&**k), const_value(v)))
                .collect(),
        ),
    }
}

fn not_a_list(v: &Value<'_>, pos: usize) -> Fail {
    type_err(format!("expected a list, got {}", v.type_name()), pos)
}

fn type_err(msg: String, pos: usize) -> Fail {
    Box::new(CypherError::type_error(msg, pos))
}

fn json_f64(f: f64) -> serde_json::Value {
    serde_json::Number::from_f64(f).map_or(serde_json::Value::Null, serde_json::Value::Number)
}

/// Cypher's spelling of a float (`1.0`, not `1`).
fn float_text(f: f64) -> String {
    if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e16 {
        format!("{f:.1}")
    } else {
        format!("{f}")
    }
}

impl<'a> Env<'a> {
    /// An environment for running `plan` on `g` within `budget`.
    pub fn new(
        plan: &'a Plan,
        g: &'a OrgGraph,
        text: &'a dyn TextSource,
        budget: Budget<'a>,
    ) -> Self {
        Env {
            g,
            text,
            consts: plan.consts.iter().map(const_value).collect(),
            budget,
        }
    }

    /// A predicate's verdict: null counts as false; anything but a boolean is a type error.
    #[inline]
    pub fn test(&self, e: &'a Expr, row: &[Value<'a>]) -> Result<bool, Fail> {
        Ok(self.truth(e, row)? == Some(true))
    }

    /// The three-valued truth of a boolean expression (`None` = null), computed without
    /// building `Value`s for the common predicate forms.
    pub fn truth(&self, e: &'a Expr, row: &[Value<'a>]) -> Result<Option<bool>, Fail> {
        match &e.kind {
            ExprKind::PropIs {
                slot,
                test,
                negated,
            } => Ok(row
                .get(*slot)
                .and_then(|v| self.prop_test(v, *test))
                .map(|x| x != *negated)),
            ExprKind::PropPair { a, b, sel, negated } => Ok(match (row.get(*a), row.get(*b)) {
                (Some(x), Some(y)) => self.prop_pair(x, y, *sel).map(|v| v != *negated),
                _ => None,
            }),
            ExprKind::Not(x) => Ok(self.truth(x, row)?.map(|v| !v)),
            ExprKind::And(x, y) => {
                let l = self.truth(x, row)?;
                if l == Some(false) {
                    return Ok(Some(false));
                }
                Ok(match (l, self.truth(y, row)?) {
                    (_, Some(false)) => Some(false),
                    (Some(true), Some(true)) => Some(true),
                    _ => None,
                })
            }
            ExprKind::Or(x, y) => {
                let l = self.truth(x, row)?;
                if l == Some(true) {
                    return Ok(Some(true));
                }
                Ok(match (l, self.truth(y, row)?) {
                    (_, Some(true)) => Some(true),
                    (Some(false), Some(false)) => Some(false),
                    _ => None,
                })
            }
            ExprKind::Xor(x, y) => Ok(match (self.truth(x, row)?, self.truth(y, row)?) {
                (Some(p), Some(q)) => Some(p != q),
                _ => None,
            }),
            ExprKind::IsNull(x, negated) => Ok(Some(match &x.kind {
                ExprKind::Slot(s) => row.get(*s).is_none_or(Value::is_null) != *negated,
                _ => self.eval(x, row)?.is_null() != *negated,
            })),
            ExprKind::Slot(s) => Self::bool_of(row.get(*s).unwrap_or(&Value::Null), e.pos),
            _ => Self::bool_of(&self.eval(e, row)?, e.pos),
        }
    }

    fn bool_of(v: &Value<'a>, pos: usize) -> Result<Option<bool>, Fail> {
        match v {
            Value::Bool(b) => Ok(Some(*b)),
            Value::Null => Ok(None),
            other => Err(type_err(
                format!("expected a boolean, got {}", other.type_name()),
                pos,
            )),
        }
    }

    /// Evaluates `e` on `row`. The common forms are handled here, in a small function; the
    /// rest in [`Env::eval_full`].
    #[inline]
    pub fn eval(&self, e: &'a Expr, row: &[Value<'a>]) -> Result<Value<'a>, Fail> {
        let b = |x: Option<bool>| x.map_or(Value::Null, Value::Bool);
        match &e.kind {
            ExprKind::Const(i) => Ok(self.consts.get(*i).cloned().unwrap_or(Value::Null)),
            ExprKind::Slot(s) => Ok(row.get(*s).cloned().unwrap_or(Value::Null)),
            ExprKind::PropIs { .. }
            | ExprKind::PropPair { .. }
            | ExprKind::Not(_)
            | ExprKind::And(..)
            | ExprKind::Or(..)
            | ExprKind::Xor(..) => Ok(b(self.truth(e, row)?)),
            ExprKind::Case {
                operand: None,
                arms,
                default,
            } => {
                for (w, t) in arms {
                    if self.truth(w, row)? == Some(true) {
                        return self.eval(t, row);
                    }
                }
                match default {
                    Some(d) => self.eval(d, row),
                    None => Ok(Value::Null),
                }
            }
            // A property of a bound variable (the most common expression): read in place,
            // with nothing to charge unless the value holds memory of its own (a text
            // loaded from the store, a map).
            ExprKind::Prop(base, _) if matches!(base.kind, ExprKind::Slot(_)) => {
                let mark = self.budget.mark();
                let v = self.eval_prop(e, row)?;
                if holds_heap(&v) {
                    let held = self.budget.heap_bytes(&v)?;
                    self.budget.keep(mark, held)?;
                } else {
                    self.budget.settle(mark, 0);
                }
                Ok(v)
            }
            _ => self.eval_full(e, row),
        }
    }

    /// Evaluates every form of expression: a dispatcher, so that nested expressions recurse
    /// through small stack frames.
    ///
    /// Memory: whatever the operands of `e` were charged is released when `e` is done with
    /// them, and the result is charged for what it holds (see [`Budget::keep`]): so at any
    /// time the budget holds the values alive on the evaluation stack.
    #[inline(never)]
    fn eval_full(&self, e: &'a Expr, row: &[Value<'a>]) -> Result<Value<'a>, Fail> {
        let mark = self.budget.mark();
        let v = self.eval_any(e, row)?;
        let held = if holds_heap(&v) {
            self.budget.heap_bytes(&v)?
        } else {
            0
        };
        self.budget.keep(mark, held)?;
        Ok(v)
    }

    fn eval_any(&self, e: &'a Expr, row: &[Value<'a>]) -> Result<Value<'a>, Fail> {
        match &e.kind {
            ExprKind::Const(i) => Ok(self.consts.get(*i).cloned().unwrap_or(Value::Null)),
            ExprKind::Slot(s) => Ok(row.get(*s).cloned().unwrap_or(Value::Null)),
            ExprKind::PropIs { .. }
            | ExprKind::PropPair { .. }
            | ExprKind::Not(_)
            | ExprKind::And(..)
            | ExprKind::Or(..)
            | ExprKind::Xor(..) => Ok(self.truth(e, row)?.map_or(Value::Null, Value::Bool)),
            ExprKind::IsNull(x, negated) => {
                Ok(Value::Bool(self.eval(x, row)?.is_null() != *negated))
            }
            ExprKind::Call(f, args) => self.call(*f, args, row, e.pos),
            ExprKind::Prop(..) => self.eval_prop(e, row),
            ExprKind::Path(..) | ExprKind::List(..) | ExprKind::Map(..) => self.eval_build(e, row),
            ExprKind::Cmp(..)
            | ExprKind::Arith(..)
            | ExprKind::Neg(..)
            | ExprKind::In(..)
            | ExprKind::StrOp(..)
            | ExprKind::HasLabels(..) => self.eval_ops(e, row),
            ExprKind::Case { .. } => self.eval_case(e, row),
            ExprKind::Index(..) | ExprKind::Slice(..) => self.eval_index(e, row),
            ExprKind::ListComp { .. } | ExprKind::Quant { .. } => self.eval_iter(e, row),
        }
    }

    #[inline(never)]
    fn eval_prop(&self, e: &'a Expr, row: &[Value<'a>]) -> Result<Value<'a>, Fail> {
        Ok(match &e.kind {
            ExprKind::Prop(base, key) => {
                if let ExprKind::Slot(s) = base.kind {
                    match row.get(s) {
                        Some(v) => return self.prop(v, key, e.pos),
                        None => return Ok(Value::Null),
                    }
                }
                let v = self.eval(base, row)?;
                self.prop(&v, key, e.pos)?
            }
            _ => Value::Null,
        })
    }

    #[inline(never)]
    fn eval_build(&self, e: &'a Expr, row: &[Value<'a>]) -> Result<Value<'a>, Fail> {
        Ok(match &e.kind {
            ExprKind::Path(spec) => self.path(spec, row, e.pos)?,
            ExprKind::List(items) => {
                let n = items.len() as u64;
                self.budget.alloc(n, n * VALUE_BYTES)?;
                let mut out = Vec::with_capacity(items.len());
                for i in items {
                    out.push(self.eval(i, row)?);
                }
                Value::list(out)
            }
            ExprKind::Map(entries) => {
                let n = entries.len() as u64;
                self.budget.alloc(n, n * (VALUE_BYTES + 16))?;
                let mut out = Vec::with_capacity(entries.len());
                for (k, v) in entries {
                    out.push((Rc::from(&**k), self.eval(v, row)?));
                }
                Value::Map(out.into())
            }
            _ => Value::Null,
        })
    }

    #[inline(never)]
    fn eval_ops(&self, e: &'a Expr, row: &[Value<'a>]) -> Result<Value<'a>, Fail> {
        let b = |x: Option<bool>| x.map_or(Value::Null, Value::Bool);
        Ok(match &e.kind {
            ExprKind::Cmp(op, x, y) => {
                let (l, r) = (self.eval(x, row)?, self.eval(y, row)?);
                match op {
                    CmpOp::Eq => b(cypher_eq(&l, &r)),
                    CmpOp::Ne => b(cypher_eq(&l, &r).map(|v| !v)),
                    CmpOp::Lt => b(cypher_cmp(&l, &r).map(|o| o.is_lt())),
                    CmpOp::Le => b(cypher_cmp(&l, &r).map(|o| o.is_le())),
                    CmpOp::Gt => b(cypher_cmp(&l, &r).map(|o| o.is_gt())),
                    CmpOp::Ge => b(cypher_cmp(&l, &r).map(|o| o.is_ge())),
                }
            }
            ExprKind::Arith(op, x, y) => {
                let (l, r) = (self.eval(x, row)?, self.eval(y, row)?);
                arith(*op, l, r, e.pos, &self.budget)?
            }
            ExprKind::Neg(x) => match self.eval(x, row)? {
                Value::Null => Value::Null,
                Value::Int(i) => Value::Int(
                    i.checked_neg()
                        .ok_or_else(|| type_err("integer overflow in negation".into(), e.pos))?,
                ),
                Value::Float(f) => Value::Float(-f),
                other => {
                    return Err(type_err(
                        format!("cannot negate a {}", other.type_name()),
                        e.pos,
                    ));
                }
            },
            ExprKind::In(x, list) => {
                let needle = self.eval(x, row)?;
                match self.eval(list, row)? {
                    Value::Null => Value::Null,
                    Value::List(items) => {
                        let mut unknown = false;
                        for it in items.iter() {
                            match cypher_eq(&needle, it) {
                                Some(true) => return Ok(Value::Bool(true)),
                                None => unknown = true,
                                Some(false) => {}
                            }
                        }
                        if unknown {
                            Value::Null
                        } else {
                            Value::Bool(false)
                        }
                    }
                    other => {
                        return Err(type_err(
                            format!("IN expects a list on its right, got {}", other.type_name()),
                            list.pos,
                        ));
                    }
                }
            }
            ExprKind::StrOp(op, x, y) => {
                let (l, r) = (self.eval(x, row)?, self.eval(y, row)?);
                match (l.as_str(), r.as_str()) {
                    (Some(s), Some(t)) => Value::Bool(match op {
                        StrOp::StartsWith => s.starts_with(t),
                        StrOp::EndsWith => s.ends_with(t),
                        StrOp::Contains => s.contains(t),
                    }),
                    _ => Value::Null,
                }
            }
            ExprKind::HasLabels(x, kinds) => match self.eval(x, row)? {
                Value::Null => Value::Null,
                Value::Node(n) => Value::Bool(kinds.allows(n)),
                other => {
                    return Err(type_err(
                        format!("label test on a {}", other.type_name()),
                        e.pos,
                    ));
                }
            },
            _ => Value::Null,
        })
    }

    #[inline(never)]
    fn eval_case(&self, e: &'a Expr, row: &[Value<'a>]) -> Result<Value<'a>, Fail> {
        Ok(match &e.kind {
            ExprKind::Case {
                operand,
                arms,
                default,
            } => {
                match operand {
                    Some(o) => {
                        let subject = self.eval(o, row)?;
                        for (w, t) in arms {
                            if cypher_eq(&subject, &self.eval(w, row)?) == Some(true) {
                                return self.eval(t, row);
                            }
                        }
                    }
                    None => {
                        for (w, t) in arms {
                            if self.truth(w, row)? == Some(true) {
                                return self.eval(t, row);
                            }
                        }
                    }
                }
                match default {
                    Some(d) => self.eval(d, row)?,
                    None => Value::Null,
                }
            }
            _ => Value::Null,
        })
    }

    #[inline(never)]
    fn eval_index(&self, e: &'a Expr, row: &[Value<'a>]) -> Result<Value<'a>, Fail> {
        Ok(match &e.kind {
            ExprKind::Index(x, i) => {
                let (base, idx) = (self.eval(x, row)?, self.eval(i, row)?);
                match (&base, &idx) {
                    (Value::Null, _) | (_, Value::Null) => Value::Null,
                    (Value::List(items), Value::Int(n)) => {
                        let len = items.len() as i64;
                        let at = if *n < 0 { len + n } else { *n };
                        if (0..len).contains(&at) {
                            items[at as usize].clone()
                        } else {
                            Value::Null
                        }
                    }
                    (Value::Map(_) | Value::Node(_) | Value::Rel(_), _)
                        if idx.as_str().is_some() =>
                    {
                        let key = PropKey::new(idx.as_str().unwrap_or(""));
                        self.prop(&base, &key, e.pos)?
                    }
                    _ => {
                        return Err(type_err(
                            format!(
                                "cannot index a {} with a {}",
                                base.type_name(),
                                idx.type_name()
                            ),
                            e.pos,
                        ));
                    }
                }
            }
            ExprKind::Slice(x, lo, hi) => {
                let base = self.eval(x, row)?;
                let bound = |v: &'a Option<Box<Expr>>| -> Result<Option<Value<'a>>, Fail> {
                    match v {
                        Some(v) => Ok(Some(self.eval(v, row)?)),
                        None => Ok(None),
                    }
                };
                let (lo, hi) = (bound(lo)?, bound(hi)?);
                match base {
                    Value::Null => Value::Null,
                    Value::List(items) => {
                        let len = items.len() as i64;
                        let norm = |v: Option<Value<'a>>, dflt: i64| -> Result<Option<i64>, Fail> {
                            match v {
                                None => Ok(Some(dflt)),
                                Some(Value::Null) => Ok(None),
                                Some(Value::Int(i)) => {
                                    Ok(Some(if i < 0 { (len + i).max(0) } else { i.min(len) }))
                                }
                                Some(o) => Err(type_err(
                                    format!(
                                        "list slice bounds must be integers, got {}",
                                        o.type_name()
                                    ),
                                    e.pos,
                                )),
                            }
                        };
                        match (norm(lo, 0)?, norm(hi, len)?) {
                            (Some(a), Some(z)) if a < z => {
                                Value::List(items[a as usize..z as usize].into())
                            }
                            (Some(_), Some(_)) => Value::list(Vec::new()),
                            _ => Value::Null,
                        }
                    }
                    other => {
                        return Err(type_err(
                            format!("cannot slice a {}", other.type_name()),
                            e.pos,
                        ));
                    }
                }
            }
            _ => Value::Null,
        })
    }

    #[inline(never)]
    fn eval_iter(&self, e: &'a Expr, row: &[Value<'a>]) -> Result<Value<'a>, Fail> {
        Ok(match &e.kind {
            ExprKind::ListComp {
                slot,
                list,
                pred,
                proj,
            } => {
                let items = match self.eval(list, row)? {
                    Value::Null => return Ok(Value::Null),
                    Value::List(items) => items,
                    other => return Err(not_a_list(&other, list.pos)),
                };
                let mut scratch = row.to_vec();
                // What the result holds so far is charged on top of `base`; each element's
                // temporaries are released once it is built.
                let base = self.budget.mark();
                let mut held = 0u64;
                let mut out = Vec::new();
                for it in items.iter() {
                    self.budget.tick()?;
                    if let Some(cell) = scratch.get_mut(*slot) {
                        *cell = it.clone();
                    }
                    if let Some(p) = pred
                        && self.truth(p, &scratch)? != Some(true)
                    {
                        self.budget.settle(base, held);
                        continue;
                    }
                    let v = match proj {
                        Some(x) => self.eval(x, &scratch)?,
                        None => it.clone(),
                    };
                    held = held
                        .saturating_add(VALUE_BYTES)
                        .saturating_add(self.budget.mark().saturating_sub(base + held));
                    self.budget.keep(base, held)?;
                    out.push(v);
                }
                Value::list(out)
            }
            ExprKind::Quant {
                kind,
                slot,
                list,
                pred,
            } => {
                let items = match self.eval(list, row)? {
                    Value::Null => return Ok(Value::Null),
                    Value::List(items) => items,
                    other => return Err(not_a_list(&other, list.pos)),
                };
                let mut scratch = row.to_vec();
                let base = self.budget.mark();
                let (mut yes, mut no, mut unknown) = (0usize, 0usize, false);
                for it in items.iter() {
                    self.budget.tick()?;
                    if let Some(cell) = scratch.get_mut(*slot) {
                        *cell = it.clone();
                    }
                    let verdict = self.truth(pred, &scratch)?;
                    self.budget.settle(base, 0);
                    match verdict {
                        Some(true) => yes += 1,
                        Some(false) => no += 1,
                        None => unknown = true,
                    }
                }
                // Three-valued: a decided answer wins over nulls, otherwise null is null.
                let decided = match kind {
                    QuantKind::All => (no > 0).then_some(false),
                    QuantKind::Any => (yes > 0).then_some(true),
                    QuantKind::None => (yes > 0).then_some(false),
                    QuantKind::Single => (yes > 1).then_some(false),
                };
                match (decided, unknown) {
                    (Some(v), _) => Value::Bool(v),
                    (None, true) => Value::Null,
                    (None, false) => Value::Bool(match kind {
                        QuantKind::All | QuantKind::None => true,
                        QuantKind::Any => false,
                        QuantKind::Single => yes == 1,
                    }),
                }
            }
            _ => Value::Null,
        })
    }

    fn path(&self, spec: &PathSpec, row: &[Value<'a>], pos: usize) -> Result<Value<'a>, Fail> {
        let start = match row.get(spec.start) {
            Some(Value::Node(n)) => *n,
            _ => return Ok(Value::Null),
        };
        let mut p = PathVal {
            nodes: vec![start],
            rels: Vec::new(),
        };
        let mut cur = start;
        let push = |e: u32, p: &mut PathVal, cur: &mut NodeRef| -> Result<(), Fail> {
            let Some((a, b)) = self.g.edge_ends(e) else {
                return Err(type_err(
                    "a path refers to a missing relationship".into(),
                    pos,
                ));
            };
            let n = if a == *cur { b } else { a };
            p.rels.push(e);
            p.nodes.push(n);
            *cur = n;
            Ok(())
        };
        for step in &spec.steps {
            match step {
                PathStep::Rel(s) => match row.get(*s) {
                    Some(Value::Rel(e)) => push(*e, &mut p, &mut cur)?,
                    _ => return Ok(Value::Null),
                },
                PathStep::Rels(s) => match row.get(*s) {
                    Some(Value::List(items)) => {
                        for it in items.iter() {
                            if let Value::Rel(e) = it {
                                push(*e, &mut p, &mut cur)?;
                            }
                        }
                    }
                    _ => return Ok(Value::Null),
                },
            }
        }
        Ok(Value::Path(Rc::new(p)))
    }

    fn edge_ends(&self, e: u32) -> Option<(NodeRef, NodeRef)> {
        self.g.edge_ends(e)
    }

    fn properties(&self, v: &Value<'a>) -> Vec<(Rc<str>, Value<'a>)> {
        let mut props = match v {
            Value::Node(NodeRef::Feedback(r)) => {
                let mut props: Vec<(Rc<str>, Value<'a>)> = FProp::ALL
                    .iter()
                    .filter(|(_, p)| p.in_graph())
                    .map(|(n, p)| (Rc::from(*n), self.fprop(*r, *p)))
                    .collect();
                {
                    props.extend(
                        self.stored_fields(*r)
                            .into_iter()
                            .map(|(n, v)| (Rc::from(n), v)),
                    );
                }
                props
            }
            Value::Node(NodeRef::Adapter(r)) => AProp::ALL
                .iter()
                .map(|(n, p)| (Rc::from(*n), self.aprop(*r, *p)))
                .collect(),
            Value::Rel(e) => RProp::ALL
                .iter()
                .map(|(n, p)| (Rc::from(*n), self.rprop(*e, *p)))
                .collect(),
            Value::Map(m) => return m.to_vec(),
            _ => Vec::new(),
        };
        // Maps keep their keys sorted (equality and grouping compare them in order).
        props.retain(|(_, v)| !v.is_null());
        props.sort_by(|a, b| a.0.cmp(&b.0));
        props
    }
}

/// Whether `v` holds memory beyond its own slot (what [`Budget::heap_bytes`] counts).
#[inline(always)]
fn holds_heap(v: &Value<'_>) -> bool {
    matches!(
        v,
        Value::Text(_) | Value::List(_) | Value::Map(_) | Value::Path(_)
    )
}
