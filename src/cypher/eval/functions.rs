//! The scalar functions (`call`) and arithmetic with Cypher's rules.

use super::*;

impl<'a> Env<'a> {
    pub(super) fn call(
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
}

pub(super) fn float_to_int(x: f64) -> Value<'static> {
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
