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

    fn sym(&self, s: Option<Sym>) -> Value<'a> {
        match s {
            Some(s) => Value::Str(self.g.strings().resolve(s)),
            None => Value::Null,
        }
    }

    /// The public id of a node (`id(n)`, `_id`).
    pub fn node_id(&self, n: NodeRef) -> Option<u32> {
        self.g.node_id(n)
    }

    /// A Feedback property, read from its column.
    pub fn fprop(&self, r: u32, p: FProp) -> Value<'a> {
        let c = self.g.feedback();
        if r as usize >= c.len() {
            return Value::Null;
        }
        let int = |v: Option<u64>| {
            v.map_or(Value::Null, |v| {
                Value::Int(i64::try_from(v).unwrap_or(i64::MAX))
            })
        };
        match p {
            FProp::Id => Value::Str(c.id_str(r)),
            FProp::OrgId => self.text.org_id().map_or(Value::Null, Value::Str),
            FProp::Type => c
                .feedback_type(r)
                .map_or(Value::Null, |t| Value::Str(t.as_str())),
            FProp::Status => c.status(r).map_or(Value::Null, |t| Value::Str(t.as_str())),
            FProp::Used => Value::Bool(c.used_for_training(r)),
            FProp::Batch => int(c.training_batch_id(r)),
            FProp::CreatedAt => int(c.created_at(r)),
            FProp::UpdatedAt => int(c.updated_at(r)),
            FProp::Version => int(c.version(r)),
            FProp::ModelVersion
            | FProp::AdapterId
            | FProp::AdapterVersion
            | FProp::UserId
            | FProp::SessionId
            | FProp::InteractionId => self.sym(sym_col(p).and_then(|col| c.sym(r, col))),
            FProp::Score => c.score(r).map_or(Value::Null, Value::Float),
            FProp::Text(field) => {
                let present = match field {
                    TextField::Correction => c.has_correction(r),
                    TextField::Comment => c.has_comment(r),
                    TextField::Question | TextField::Answer => true,
                };
                if !present {
                    return Value::Null;
                }
                match self.text.feedback_text(c.id_str(r), field.name()) {
                    Some(s) => Value::Text(Rc::from(s)),
                    None => Value::Null,
                }
            }
            FProp::Json(field) => self
                .text
                .feedback_json(c.id_str(r), field.name())
                .map_or(Value::Null, |v| Value::from_json(&v)),
        }
    }

    /// The stored fields of feedback row `r` that `RETURN f` shows, read at once: the texts
    /// it has, its validation reasons and its metadata, with their names.
    fn stored_fields(&self, r: u32) -> Vec<(&'static str, Value<'a>)> {
        self.stored_fields_json(r)
            .into_iter()
            .map(|(name, v)| (name, Value::from_json(&v)))
            .collect()
    }

    /// [`Env::stored_fields`] as the JSON the store holds, for building a node's JSON
    /// without a round trip through [`Value`] (numbers as [`Value::from_json`] reads them, so
    /// `RETURN f` and `RETURN f.metadata` agree).
    fn stored_fields_json(&self, r: u32) -> Vec<(&'static str, serde_json::Value)> {
        let c = self.g.feedback();
        if r as usize >= c.len() {
            return Vec::new();
        }
        let mut fields = vec!["question", "answer"];
        if c.has_correction(r) {
            fields.push("correction");
        }
        if c.has_comment(r) {
            fields.push("comment");
        }
        fields.extend([
            JsonField::ValidationReasons.name(),
            JsonField::Metadata.name(),
            JsonField::Pii.name(),
            JsonField::Kind.name(),
            JsonField::Label.name(),
            JsonField::Provider.name(),
            JsonField::ScoreConfig.name(),
        ]);
        let values = self.text.feedback_fields(c.id_str(r), &fields);
        fields
            .into_iter()
            .zip(values)
            .filter_map(|(name, v)| {
                let mut v = v?;
                ints_beyond_i64_as_floats(&mut v);
                Some((name, v))
            })
            .collect()
    }

    /// An Adapter property.
    pub fn aprop(&self, r: u32, p: AProp) -> Value<'a> {
        let Some(a) = self.g.adapters().get(r as usize) else {
            return Value::Null;
        };
        match p {
            AProp::Id => Value::Str(self.g.strings().resolve(a.id)),
            AProp::OrgId => self.text.org_id().map_or(Value::Null, Value::Str),
            AProp::Version => self.sym(a.version),
            AProp::BaseModel => self.sym(a.base_model),
            AProp::DerivedFrom => match a.parent.and_then(|p| self.g.adapters().get(p as usize)) {
                Some(p) => Value::Str(self.g.strings().resolve(p.id)),
                None => Value::Null,
            },
            AProp::CreatedAt => Value::Int(i64::try_from(a.created_at).unwrap_or(i64::MAX)),
            AProp::Source => Value::Str(a.source.as_str()),
            AProp::RecordVersion => Value::Int(i64::try_from(a.record_version).unwrap_or(i64::MAX)),
            AProp::Metadata => self
                .text
                .adapter_metadata(self.g.strings().resolve(a.id))
                .map_or(Value::Null, |m| {
                    Value::from_json(&serde_json::Value::Object(m))
                }),
        }
    }

    /// A relationship property.
    pub fn rprop(&self, e: u32, p: RProp) -> Value<'a> {
        let Some(w) = self.g.edge(e) else {
            return Value::Null;
        };
        match p {
            RProp::CreatedAt => Value::Int(i64::try_from(w.created_at).unwrap_or(i64::MAX)),
            RProp::Source => Value::Str(w.source.as_str()),
            RProp::Metadata => {
                if w.kind != EdgeKind::FeedbackFor {
                    return Value::Null;
                }
                if !w.has_metadata {
                    // Most links have none: no read.
                    return Value::Map(Vec::new().into());
                }
                let Some((NodeRef::Feedback(f), NodeRef::Adapter(a))) = self.edge_ends(e) else {
                    return Value::Null;
                };
                let (Some(f), Some(a)) =
                    (self.g.feedback().id(f), self.g.adapters().get(a as usize))
                else {
                    return Value::Null;
                };
                self.text
                    .link_metadata(f, self.g.strings().resolve(a.id))
                    .map_or(Value::Null, |m| {
                        Value::from_json(&serde_json::Value::Object(m))
                    })
            }
        }
    }

    fn prop(&self, base: &Value<'a>, key: &PropKey, pos: usize) -> Result<Value<'a>, Fail> {
        Ok(match base {
            Value::Null => Value::Null,
            Value::Node(NodeRef::Feedback(r)) => key.f.map_or(Value::Null, |p| self.fprop(*r, p)),
            Value::Node(NodeRef::Adapter(r)) => key.a.map_or(Value::Null, |p| self.aprop(*r, p)),
            Value::Rel(e) => key.r.map_or(Value::Null, |p| self.rprop(*e, p)),
            Value::Map(m) => m
                .iter()
                .find(|(k, _)| **k == *key.name)
                .map_or(Value::Null, |(_, v)| v.clone()),
            other => {
                return Err(type_err(
                    format!(
                        "cannot read property `{}` of a {}",
                        key.name,
                        other.type_name()
                    ),
                    pos,
                ));
            }
        })
    }

    fn prop_pair(&self, a: &Value<'a>, b: &Value<'a>, sel: PairSel) -> Option<bool> {
        match (a, b, sel) {
            (
                Value::Node(NodeRef::Feedback(x)),
                Value::Node(NodeRef::Feedback(y)),
                PairSel::Feedback(p),
            ) => {
                if p == FProp::Id {
                    return Some(x == y);
                }
                let c = self.g.feedback();
                match p {
                    FProp::Type => Some(c.feedback_type(*x)? == c.feedback_type(*y)?),
                    FProp::Status => Some(c.status(*x)? == c.status(*y)?),
                    _ => {
                        let col = sym_col(p)?;
                        Some(c.sym(*x, col)? == c.sym(*y, col)?)
                    }
                }
            }
            (
                Value::Node(NodeRef::Adapter(x)),
                Value::Node(NodeRef::Adapter(y)),
                PairSel::Adapter(p),
            ) => {
                if p == AProp::Id {
                    return Some(x == y);
                }
                let (f, g) = (
                    self.g.adapters().get(*x as usize)?,
                    self.g.adapters().get(*y as usize)?,
                );
                match p {
                    AProp::Version => Some(f.version? == g.version?),
                    AProp::BaseModel => Some(f.base_model? == g.base_model?),
                    _ => None,
                }
            }
            _ => None,
        }
    }

    fn prop_test(&self, v: &Value<'a>, test: PropTest) -> Option<bool> {
        match (v, test) {
            (Value::Node(NodeRef::Feedback(r)), t) => {
                let c = self.g.feedback();
                match t {
                    PropTest::FType(t) => Some(t == Some(c.feedback_type(*r)?)),
                    PropTest::FStatus(s) => Some(s == Some(c.status(*r)?)),
                    PropTest::FUsed(b) => {
                        if *r as usize >= c.len() {
                            return None;
                        }
                        Some(c.used_for_training(*r) == b)
                    }
                    PropTest::FSym(p, s) => Some(s == Some(c.sym(*r, sym_col(p)?)?)),
                    PropTest::ASym(..) => None,
                }
            }
            (Value::Node(NodeRef::Adapter(r)), PropTest::ASym(p, s)) => {
                let a = self.g.adapters().get(*r as usize)?;
                let have = match p {
                    AProp::Id => Some(a.id),
                    AProp::Version => a.version,
                    AProp::BaseModel => a.base_model,
                    _ => None,
                }?;
                Some(s == Some(have))
            }
            _ => None,
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

    fn call(
        &self,
        f: Func,
        args: &'a [Expr],
        row: &[Value<'a>],
        pos: usize,
    ) -> Result<Value<'a>, Fail> {
        if f == Func::Coalesce {
            for a in args {
                let v = self.eval(a, row)?;
                if !v.is_null() {
                    return Ok(v);
                }
            }
            return Ok(Value::Null);
        }
        let mut vals = Vec::with_capacity(args.len());
        for a in args {
            vals.push(self.eval(a, row)?);
        }
        let bad = |v: &Value<'_>| {
            type_err(
                format!("{}() cannot take a {}", f.name(), v.type_name()),
                pos,
            )
        };
        let first = vals.first().cloned().unwrap_or(Value::Null);
        if first.is_null() && f != Func::Range {
            return Ok(Value::Null);
        }
        let int_arg = |i: usize| -> Result<Option<i64>, Fail> {
            match vals.get(i) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Int(n)) => Ok(Some(*n)),
                Some(v) => Err(bad(v)),
            }
        };
        let str_arg = |i: usize| -> Result<Option<&str>, Fail> {
            match vals.get(i) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => v.as_str().map(Some).ok_or_else(|| bad(v)),
            }
        };
        let num = |v: &Value<'_>| -> Result<f64, Fail> {
            match v {
                Value::Int(i) => Ok(*i as f64),
                Value::Float(x) => Ok(*x),
                other => Err(bad(other)),
            }
        };
        Ok(match f {
            Func::Coalesce => Value::Null,
            Func::Id => match first {
                Value::Node(n) => Value::Int(self.node_id(n).map_or(-1, i64::from)),
                Value::Rel(e) => match self.g.edge(e) {
                    Some(w) => Value::Int(i64::from(w.id)),
                    None => Value::Null,
                },
                v => return Err(bad(&v)),
            },
            Func::Labels => match first {
                Value::Node(NodeRef::Feedback(_)) => Value::list(vec![Value::Str("Feedback")]),
                Value::Node(NodeRef::Adapter(_)) => Value::list(vec![Value::Str("Adapter")]),
                v => return Err(bad(&v)),
            },
            Func::Type => match first {
                Value::Rel(e) => match self.g.edge(e) {
                    Some(w) => Value::Str(w.kind.name()),
                    None => Value::Null,
                },
                v => return Err(bad(&v)),
            },
            Func::ToLower => Value::text(&str_arg(0)?.unwrap_or("").to_lowercase()),
            Func::ToUpper => Value::text(&str_arg(0)?.unwrap_or("").to_uppercase()),
            Func::Trim => Value::text(str_arg(0)?.unwrap_or("").trim()),
            Func::LTrim => Value::text(str_arg(0)?.unwrap_or("").trim_start()),
            Func::RTrim => Value::text(str_arg(0)?.unwrap_or("").trim_end()),
            Func::Size => match &first {
                Value::List(items) => Value::Int(items.len() as i64),
                v => match v.as_str() {
                    Some(s) => Value::Int(s.chars().count() as i64),
                    None => return Err(bad(v)),
                },
            },
            Func::Length => match &first {
                Value::Path(p) => Value::Int(p.rels.len() as i64),
                Value::List(items) => Value::Int(items.len() as i64),
                v => match v.as_str() {
                    Some(s) => Value::Int(s.chars().count() as i64),
                    None => return Err(bad(v)),
                },
            },
            Func::Nodes => match &first {
                Value::Path(p) => Value::List(p.nodes.iter().map(|n| Value::Node(*n)).collect()),
                v => return Err(bad(v)),
            },
            Func::Relationships => match &first {
                Value::Path(p) => Value::List(p.rels.iter().map(|e| Value::Rel(*e)).collect()),
                v => return Err(bad(v)),
            },
            Func::StartNode | Func::EndNode => match first {
                Value::Rel(e) => match self.edge_ends(e) {
                    Some((a, b)) => Value::Node(if f == Func::StartNode { a } else { b }),
                    None => Value::Null,
                },
                v => return Err(bad(&v)),
            },
            Func::Properties => match &first {
                Value::Node(_) | Value::Rel(_) | Value::Map(_) => {
                    Value::Map(self.properties(&first).into())
                }
                v => return Err(bad(v)),
            },
            Func::Keys => match &first {
                Value::Node(_) | Value::Rel(_) | Value::Map(_) => Value::List(
                    self.properties(&first)
                        .into_iter()
                        .map(|(k, _)| Value::Text(k))
                        .collect(),
                ),
                v => return Err(bad(v)),
            },
            Func::Head | Func::Last | Func::Tail => match &first {
                Value::List(items) => match f {
                    Func::Head => items.first().cloned().unwrap_or(Value::Null),
                    Func::Last => items.last().cloned().unwrap_or(Value::Null),
                    _ => {
                        let n = items.len().saturating_sub(1) as u64;
                        self.budget.alloc(n, n * VALUE_BYTES)?;
                        Value::List(items.get(1..).unwrap_or(&[]).into())
                    }
                },
                v => return Err(bad(v)),
            },
            Func::ToString => match &first {
                Value::Int(i) => Value::text(&i.to_string()),
                Value::Float(x) => Value::text(&float_text(*x)),
                Value::Bool(b) => Value::Str(if *b { "true" } else { "false" }),
                v => match v.as_str() {
                    Some(_) => first.clone(),
                    None => return Err(bad(v)),
                },
            },
            Func::ToInteger => match &first {
                Value::Int(_) => first.clone(),
                Value::Float(x) => float_to_int(*x),
                Value::Bool(b) => Value::Int(*b as i64),
                v => match v.as_str() {
                    Some(s) => match s.trim().parse::<i64>() {
                        Ok(i) => Value::Int(i),
                        Err(_) => s.trim().parse::<f64>().map_or(Value::Null, float_to_int),
                    },
                    None => return Err(bad(v)),
                },
            },
            Func::ToFloat => match &first {
                Value::Int(i) => Value::Float(*i as f64),
                Value::Float(_) => first.clone(),
                v => match v.as_str() {
                    Some(s) => s.trim().parse::<f64>().map_or(Value::Null, Value::Float),
                    None => return Err(bad(v)),
                },
            },
            Func::ToBoolean => match &first {
                Value::Bool(_) => first.clone(),
                Value::Int(i) => Value::Bool(*i != 0),
                v => match v.as_str() {
                    Some(s) if s.trim().eq_ignore_ascii_case("true") => Value::Bool(true),
                    Some(s) if s.trim().eq_ignore_ascii_case("false") => Value::Bool(false),
                    Some(_) => Value::Null,
                    None => return Err(bad(v)),
                },
            },
            Func::Abs => match first {
                Value::Int(i) => Value::Int(
                    i.checked_abs()
                        .ok_or_else(|| type_err("integer overflow in abs()".into(), pos))?,
                ),
                Value::Float(x) => Value::Float(x.abs()),
                v => return Err(bad(&v)),
            },
            Func::Ceil => Value::Float(num(&first)?.ceil()),
            Func::Floor => Value::Float(num(&first)?.floor()),
            Func::Round => Value::Float(num(&first)?.round()),
            Func::Sqrt => Value::Float(num(&first)?.sqrt()),
            Func::Sign => {
                let x = num(&first)?;
                Value::Int(if x > 0.0 {
                    1
                } else if x < 0.0 {
                    -1
                } else {
                    0
                })
            }
            Func::Replace => match (str_arg(0)?, str_arg(1)?, str_arg(2)?) {
                (Some(s), Some(a), Some(b)) => {
                    // The size of the result, known before it is built.
                    self.budget.tick_n(string_work(s.len() as u64))?;
                    let hits = s.matches(a).count() as u64;
                    let len = (s.len() as u64)
                        .saturating_add(hits.saturating_mul(b.len() as u64))
                        .saturating_sub(hits.saturating_mul(a.len() as u64));
                    self.budget.alloc(string_work(len), len)?;
                    Value::text(&s.replace(a, b))
                }
                _ => Value::Null,
            },
            Func::Substring => {
                let s = str_arg(0)?.unwrap_or("");
                let Some(start) = int_arg(1)? else {
                    return Ok(Value::Null);
                };
                if start < 0
                    || vals
                        .get(2)
                        .is_some_and(|v| matches!(v, Value::Int(n) if *n < 0))
                {
                    return Err(type_err(
                        "substring() takes non-negative start and length".into(),
                        pos,
                    ));
                }
                let it = s.chars().skip(start as usize);
                match vals.get(2) {
                    None => Value::text(&it.collect::<String>()),
                    Some(_) => match int_arg(2)? {
                        Some(n) => Value::text(&it.take(n as usize).collect::<String>()),
                        None => Value::Null,
                    },
                }
            }
            Func::Split => match (str_arg(0)?, str_arg(1)?) {
                (Some(s), Some(d)) => {
                    self.budget.tick_n(string_work(s.len() as u64))?;
                    let parts = s.split(d).count() as u64;
                    self.budget.alloc(
                        parts,
                        parts
                            .saturating_mul(VALUE_BYTES)
                            .saturating_add(s.len() as u64),
                    )?;
                    Value::List(s.split(d).map(Value::text).collect())
                }
                _ => Value::Null,
            },
            Func::Reverse => match &first {
                Value::List(items) => {
                    let n = items.len() as u64;
                    self.budget.alloc(n, n * VALUE_BYTES)?;
                    Value::List(items.iter().rev().cloned().collect())
                }
                v => match v.as_str() {
                    Some(s) => {
                        let n = s.len() as u64;
                        self.budget.alloc(string_work(n), n)?;
                        Value::text(&s.chars().rev().collect::<String>())
                    }
                    None => return Err(bad(v)),
                },
            },
            Func::Range => {
                let (Some(a), Some(z)) = (int_arg(0)?, int_arg(1)?) else {
                    return Ok(Value::Null);
                };
                let step = int_arg(2)?.unwrap_or(1);
                if step == 0 {
                    return Err(type_err("range() step must not be zero".into(), pos));
                }
                // In i128 nothing here overflows: |z - a| < 2^64 and |step| >= 1.
                let (a, z, step) = (i128::from(a), i128::from(z), i128::from(step));
                let n: i128 = if (step > 0 && z < a) || (step < 0 && z > a) {
                    0
                } else {
                    (z - a) / step + 1
                };
                // Charged before anything is allocated: a huge span fails here.
                let n = u64::try_from(n).unwrap_or(u64::MAX);
                self.budget.alloc(n, n.saturating_mul(VALUE_BYTES))?;
                let mut out = Vec::with_capacity(n as usize);
                let mut k: u64 = 0;
                while k < n {
                    // Between a and z, so it fits in an i64.
                    let x = a + i128::from(k) * step;
                    out.push(Value::Int(i64::try_from(x).unwrap_or(i64::MAX)));
                    k += 1;
                }
                Value::list(out)
            }
        })
    }

    /// Turns a value into JSON for the result: nodes become maps of their properties plus
    /// `_id` and `_labels`, relationships maps plus `_id`, `_type`, `_start`, `_end`, paths
    /// lists alternating nodes and relationships.
    pub fn to_json(&self, v: &Value<'a>) -> serde_json::Value {
        match v {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => json!(b),
            Value::Int(i) => json!(i),
            Value::Float(f) => json_f64(*f),
            Value::Str(_) | Value::Text(_) => json!(v.as_str().unwrap_or("")),
            Value::Node(n) => self.node_json(*n),
            Value::Rel(e) => self.rel_json(*e),
            Value::List(items) => {
                serde_json::Value::Array(items.iter().map(|x| self.to_json(x)).collect())
            }
            Value::Map(m) => serde_json::Value::Object(
                m.iter()
                    .map(|(k, x)| (k.to_string(), self.to_json(x)))
                    .collect(),
            ),
            Value::Path(p) => {
                let mut out = Vec::with_capacity(p.nodes.len() + p.rels.len());
                for (i, n) in p.nodes.iter().enumerate() {
                    if i > 0
                        && let Some(e) = p.rels.get(i - 1)
                    {
                        out.push(self.rel_json(*e));
                    }
                    out.push(self.node_json(*n));
                }
                serde_json::Value::Array(out)
            }
        }
    }

    /// A node as a JSON object (see the module docs of `cypher` for its shape).
    pub(crate) fn node_json(&self, n: NodeRef) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        m.insert("_id".into(), json!(self.node_id(n).map_or(-1, i64::from)));
        match n {
            NodeRef::Feedback(r) => {
                m.insert("_labels".into(), json!(["Feedback"]));
                for (name, p) in FProp::ALL.iter().filter(|(_, p)| p.in_graph()) {
                    let v = self.fprop(r, *p);
                    if !v.is_null() {
                        m.insert((*name).into(), self.to_json(&v));
                    }
                }
                for (name, v) in self.stored_fields_json(r) {
                    m.insert(name.into(), v);
                }
            }
            NodeRef::Adapter(r) => {
                m.insert("_labels".into(), json!(["Adapter"]));
                for (name, p) in AProp::ALL {
                    let v = self.aprop(r, p);
                    if !v.is_null() {
                        m.insert(name.into(), self.to_json(&v));
                    }
                }
            }
        }
        serde_json::Value::Object(m)
    }

    /// A relationship as a JSON object.
    pub(crate) fn rel_json(&self, e: u32) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        if let (Some(w), Some((a, b))) = (self.g.edge(e), self.g.edge_ends(e)) {
            m.insert("_id".into(), json!(w.id));
            m.insert(
                "_type".into(),
                json!(match w.kind {
                    EdgeKind::FeedbackFor => "FEEDBACK_FOR",
                    EdgeKind::DerivedFrom => "DERIVED_FROM",
                }),
            );
            m.insert("_start".into(), json!(self.node_id(a)));
            m.insert("_end".into(), json!(self.node_id(b)));
            m.insert("created_at".into(), json!(w.created_at));
            m.insert("source".into(), json!(w.source.as_str()));
            let metadata = self.rprop(e, RProp::Metadata);
            if !metadata.is_null() {
                m.insert("metadata".into(), self.to_json(&metadata));
            }
        }
        serde_json::Value::Object(m)
    }
}

/// The column of an interned Feedback property.
fn sym_col(p: FProp) -> Option<SymCol> {
    Some(match p {
        FProp::ModelVersion => SymCol::ModelVersion,
        FProp::AdapterId => SymCol::AdapterId,
        FProp::AdapterVersion => SymCol::AdapterVersion,
        FProp::UserId => SymCol::UserId,
        FProp::SessionId => SymCol::SessionId,
        FProp::InteractionId => SymCol::InteractionId,
        _ => return None,
    })
}

fn float_to_int(x: f64) -> Value<'static> {
    if x.is_finite() && x.abs() < 9.2e18 {
        Value::Int(x.trunc() as i64)
    } else {
        Value::Null
    }
}

/// Arithmetic with Cypher's rules: integers stay integers (overflow is an error), a float on
/// either side makes a float, `+` also concatenates strings and lists.
pub(crate) fn arith<'a>(
    op: ArithOp,
    l: Value<'a>,
    r: Value<'a>,
    pos: usize,
    budget: &Budget<'_>,
) -> Result<Value<'a>, Fail> {
    use ArithOp::*;
    let sym = match op {
        Add => "+",
        Sub => "-",
        Mul => "*",
        Div => "/",
        Mod => "%",
        Pow => "^",
        Concat => "||",
    };
    let bad = |l: &Value<'_>, r: &Value<'_>| {
        type_err(
            format!(
                "cannot apply {sym} to {} and {}",
                l.type_name(),
                r.type_name()
            ),
            pos,
        )
    };
    let overflow = || type_err(format!("integer overflow in {sym}"), pos);
    if l.is_null() || r.is_null() {
        return Ok(Value::Null);
    }
    if matches!(op, Add | Concat) {
        // A concatenation is charged (work and memory) before it is built.
        let n = match (&l, &r) {
            (Value::List(a), Value::List(b)) => Some(a.len() + b.len()),
            (Value::List(a), _) | (_, Value::List(a)) if op == Add => Some(a.len() + 1),
            _ => None,
        };
        if let Some(n) = n {
            // Built in a vector, then copied into the list: twice its size for a moment.
            let n = n as u64;
            budget.alloc(n, n.saturating_mul(2 * VALUE_BYTES))?;
        }
        match (&l, &r) {
            (Value::List(a), Value::List(b)) => {
                return Ok(Value::List(a.iter().chain(b.iter()).cloned().collect()));
            }
            (Value::List(a), x) if op == Add => {
                return Ok(Value::List(
                    a.iter()
                        .cloned()
                        .chain(std::iter::once(x.clone()))
                        .collect(),
                ));
            }
            (x, Value::List(b)) if op == Add => {
                return Ok(Value::List(
                    std::iter::once(x.clone())
                        .chain(b.iter().cloned())
                        .collect(),
                ));
            }
            _ => {}
        }
        fn text<'v>(v: &'v Value<'_>, op: ArithOp) -> Option<std::borrow::Cow<'v, str>> {
            match v {
                Value::Int(i) if op == Add => Some(i.to_string().into()),
                Value::Float(f) if op == Add => Some(float_text(*f).into()),
                _ => v.as_str().map(Into::into),
            }
        }
        if l.as_str().is_some() || r.as_str().is_some() || op == Concat {
            // Built in a buffer, then copied into the value: twice its size for a moment.
            let n = (l.as_str().map_or(24, str::len) + r.as_str().map_or(24, str::len)) as u64;
            budget.alloc(string_work(n), n.saturating_mul(2))?;
            return match (text(&l, op), text(&r, op)) {
                (Some(a), Some(b)) => {
                    let mut out = String::with_capacity(a.len() + b.len());
                    out.push_str(&a);
                    out.push_str(&b);
                    Ok(Value::Text(Rc::from(out)))
                }
                _ => Err(bad(&l, &r)),
            };
        }
    }
    match (&l, &r) {
        (Value::Int(a), Value::Int(b)) => {
            let (a, b) = (*a, *b);
            Ok(Value::Int(match op {
                Add => a.checked_add(b).ok_or_else(overflow)?,
                Sub => a.checked_sub(b).ok_or_else(overflow)?,
                Mul => a.checked_mul(b).ok_or_else(overflow)?,
                Div => {
                    if b == 0 {
                        return Err(type_err("division by zero".into(), pos));
                    }
                    a.checked_div(b).ok_or_else(overflow)?
                }
                Mod => {
                    if b == 0 {
                        return Err(type_err("modulo by zero".into(), pos));
                    }
                    a.checked_rem(b).ok_or_else(overflow)?
                }
                Pow => return Ok(Value::Float((a as f64).powf(b as f64))),
                Concat => return Err(bad(&l, &r)),
            }))
        }
        (Value::Int(_) | Value::Float(_), Value::Int(_) | Value::Float(_)) => {
            let f = |v: &Value<'_>| match v {
                Value::Int(i) => *i as f64,
                Value::Float(x) => *x,
                _ => 0.0,
            };
            let (a, b) = (f(&l), f(&r));
            Ok(Value::Float(match op {
                Add => a + b,
                Sub => a - b,
                Mul => a * b,
                Div => a / b,
                Mod => a % b,
                Pow => a.powf(b),
                Concat => return Err(bad(&l, &r)),
            }))
        }
        _ => Err(bad(&l, &r)),
    }
}

/// Rewrites, in place, every JSON integer that does not fit an `i64` as the float Cypher
/// reads it as ([`Value::from_json`]); everything else stays as it is.
fn ints_beyond_i64_as_floats(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Number(n) if n.is_u64() && n.as_i64().is_none() => {
            if let Some(f) = n.as_f64().and_then(serde_json::Number::from_f64) {
                *n = f;
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(ints_beyond_i64_as_floats),
        serde_json::Value::Object(m) => m.values_mut().for_each(ints_beyond_i64_as_floats),
        _ => {}
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
