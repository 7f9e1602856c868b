//! Expressions: the AST's expressions lowered to typed [`Expr`]s, with property names
//! resolved to graph columns, comparisons with constants compiled to column tests, and
//! aggregates split out of the expressions that contain them.

use super::*;

impl<'q> Planner<'q> {
    pub(super) fn lower_var(&self, var: &Var, pos: usize) -> Expr {
        match &var.kind {
            VarKind::Path(spec) => Expr {
                kind: ExprKind::Path(spec.clone()),
                pos,
            },
            _ => Expr {
                kind: ExprKind::Slot(var.slot),
                pos,
            },
        }
    }

    /// The interned or enumerated property test `slot.key = c`, if `kinds` names one label.
    pub(super) fn prop_test(
        &self,
        kinds: Option<Kinds>,
        key: &PropKey,
        c: &Const,
    ) -> Option<PropTest> {
        let strings = self.graph.strings();
        let sym = |s: &str| {
            let found = strings.get(s);
            self.deps.borrow_mut().symbols.push((s.into(), found));
            found
        };
        match (kinds?, c) {
            (Kinds::FEEDBACK, Const::Str(s)) => match key.f? {
                FProp::Type => Some(PropTest::FType(match &**s {
                    "positive" => Some(FeedbackType::Positive),
                    "negative" => Some(FeedbackType::Negative),
                    _ => None,
                })),
                FProp::Status => Some(PropTest::FStatus(s.parse::<ValidationStatus>().ok())),
                p @ (FProp::ModelVersion
                | FProp::AdapterId
                | FProp::AdapterVersion
                | FProp::UserId
                | FProp::SessionId
                | FProp::InteractionId) => Some(PropTest::FSym(p, sym(s))),
                _ => None,
            },
            (Kinds::FEEDBACK, Const::Bool(b)) if key.f == Some(FProp::Used) => {
                Some(PropTest::FUsed(*b))
            }
            // `id` is left to the id index (a seek); other interned adapter properties here.
            (Kinds::ADAPTER, Const::Str(s)) => match key.a? {
                p @ (AProp::Version | AProp::BaseModel) => Some(PropTest::ASym(p, sym(s))),
                _ => None,
            },
            _ => None,
        }
    }

    /// `l op r`, compiled to integer comparisons where it can be:
    /// - [`ExprKind::PropIs`] when one side is an interned or enumerated property of a node
    ///   of known label and the other a constant;
    /// - [`ExprKind::PropPair`] when both sides are the same such property of nodes of the
    ///   same label (`a1.id <> a2.id`).
    pub(super) fn compare(
        &mut self,
        op: CmpOp,
        l: Expr,
        r: Expr,
        kinds: (Option<Kinds>, Option<Kinds>),
        pos: usize,
    ) -> Expr {
        let slot_prop = |e: &Expr| match &e.kind {
            ExprKind::Prop(base, key) => match base.kind {
                ExprKind::Slot(s) => Some((s, key.clone())),
                _ => None,
            },
            _ => None,
        };
        if matches!(op, CmpOp::Eq | CmpOp::Ne) {
            let negated = op == CmpOp::Ne;
            for (side, other, k) in [(&l, &r, kinds.0), (&r, &l, kinds.1)] {
                if let Some((slot, key)) = slot_prop(side)
                    && let Some(c) = self.const_of(other)
                    && let Some(test) = self.prop_test(k, &key, c)
                {
                    return Expr {
                        kind: ExprKind::PropIs {
                            slot,
                            test,
                            negated,
                        },
                        pos,
                    };
                }
            }
            if let (Some((a, ka)), Some((b, kb))) = (slot_prop(&l), slot_prop(&r))
                && ka.name == kb.name
                && kinds.0 == kinds.1
            {
                let sel = match kinds.0 {
                    Some(Kinds::FEEDBACK) => match ka.f {
                        Some(
                            p @ (FProp::Id
                            | FProp::Type
                            | FProp::Status
                            | FProp::ModelVersion
                            | FProp::AdapterId
                            | FProp::AdapterVersion
                            | FProp::UserId
                            | FProp::SessionId
                            | FProp::InteractionId),
                        ) => Some(PairSel::Feedback(p)),
                        _ => None,
                    },
                    Some(Kinds::ADAPTER) => match ka.a {
                        Some(p @ (AProp::Id | AProp::Version | AProp::BaseModel)) => {
                            Some(PairSel::Adapter(p))
                        }
                        _ => None,
                    },
                    _ => None,
                };
                if let Some(sel) = sel {
                    return Expr {
                        kind: ExprKind::PropPair { a, b, sel, negated },
                        pos,
                    };
                }
            }
        }
        Expr {
            kind: ExprKind::Cmp(op, Box::new(l), Box::new(r)),
            pos,
        }
    }

    pub(super) fn node_kinds(&self, e: &ast::Expr, scope: &Scope) -> Option<Kinds> {
        match &e.kind {
            ast::ExprKind::Variable(v) => match scope.get(ident(v)).map(|v| &v.kind) {
                Some(VarKind::Node(k)) => Some(*k),
                _ => None,
            },
            ast::ExprKind::Parenthesized(inner) => self.node_kinds(inner, scope),
            _ => None,
        }
    }

    /// Lowers an expression. A thin dispatcher: every form has its own function, so the
    /// recursion through deeply nested expressions carries only small stack frames.
    pub(super) fn lower(
        &mut self,
        e: &ast::Expr,
        scope: &Scope,
        mode: &mut AggMode,
    ) -> Result<Expr, CypherError> {
        use ast::ExprKind as K;
        if matches!(mode, AggMode::Collect(_))
            && let Some(x) = self.lower_collected(e, mode)?
        {
            return Ok(x);
        }
        match &e.kind {
            K::Parenthesized(inner) => self.lower(inner, scope, mode),
            K::Literal(_) | K::Variable(_) | K::Parameter(_) | K::Wildcard => {
                self.lower_leaf(e, scope, mode)
            }
            K::List(_) | K::Map(_) => self.lower_collection(e, scope, mode),
            K::Unary { .. } => self.lower_unary(e, scope, mode),
            K::Binary { .. } => self.lower_binary(e, scope, mode),
            K::Is { .. }
            | K::Property { .. }
            | K::DynamicProperty { .. }
            | K::Index { .. }
            | K::Slice { .. } => self.lower_access(e, scope, mode),
            K::Function(_) => self.lower_function(e, scope, mode),
            K::Case(_) => self.lower_case(e, scope, mode),
            K::ListComprehension(_) | K::QuantifiedPredicate(_) => {
                self.lower_iteration(e, scope, mode)
            }
            K::MapProjection(_) => Err(self.unsupported("map projections", e.span)),
            K::PatternComprehension(_) | K::Pattern(_) => {
                Err(self.unsupported("patterns inside expressions", e.span))
            }
            K::Reduce(_) => Err(self.unsupported("reduce()", e.span)),
            K::Subquery(_) => {
                Err(self.unsupported("subqueries (EXISTS { }, COUNT { }, COLLECT { })", e.span))
            }
            K::Error(_) => Err(CypherError::Syntax {
                message: "malformed expression".into(),
                line: 0,
                column: 0,
                offset: self.pos(e.span),
            }),
            _ => Err(self.unsupported("this expression", e.span)),
        }
    }

    /// In an aggregating projection: a grouping key or an aggregate call becomes its slot.
    #[inline(never)]
    pub(super) fn lower_collected(
        &mut self,
        e: &ast::Expr,
        mode: &mut AggMode,
    ) -> Result<Option<Expr>, CypherError> {
        let AggMode::Collect(c) = mode else {
            return Ok(None);
        };
        let pos = self.pos(e.span);
        let text = canon(e);
        if let Some((_, slot, _)) = c.keys.iter().find(|(k, _, _)| *k == text) {
            return Ok(Some(Expr {
                kind: ExprKind::Slot(*slot),
                pos,
            }));
        }
        let Some(func) = agg_func(e) else {
            return Ok(None);
        };
        if let Some((_, a)) = c.aggs.iter().find(|(k, _)| *k == text) {
            return Ok(Some(Expr {
                kind: ExprKind::Slot(a.slot),
                pos,
            }));
        }
        let pre = c.pre.clone();
        let agg = self.aggregate(e, func, &pre)?;
        let slot = agg.slot;
        if let AggMode::Collect(c) = mode {
            c.aggs.push((text, agg));
        }
        Ok(Some(Expr {
            kind: ExprKind::Slot(slot),
            pos,
        }))
    }

    #[inline(never)]
    pub(super) fn lower_leaf(
        &mut self,
        e: &ast::Expr,
        scope: &Scope,
        mode: &mut AggMode,
    ) -> Result<Expr, CypherError> {
        use ast::ExprKind as K;
        let pos = self.pos(e.span);
        match &e.kind {
            K::Literal(l) => {
                let c = match &l.kind {
                    ast::LiteralKind::Null => Const::Null,
                    ast::LiteralKind::Boolean(b) => Const::Bool(*b),
                    ast::LiteralKind::Integer(i) => {
                        let v = parse_int(i)
                            .and_then(|v| i64::try_from(v).ok())
                            .ok_or_else(|| {
                                self.semantic(
                                    format!("integer literal {} is too large", i.text),
                                    e.span,
                                )
                            })?;
                        Const::Int(v)
                    }
                    ast::LiteralKind::Float(f) => {
                        Const::Float(parse_float(f).ok_or_else(|| {
                            self.semantic(format!("invalid float literal {}", f.text), e.span)
                        })?)
                    }
                    ast::LiteralKind::String(s) => Const::Str(s.value.as_str().into()),
                    _ => return Err(self.unsupported("this literal", e.span)),
                };
                Ok(self.konst(c, pos))
            }
            K::Variable(v) => {
                let name = ident(v);
                match (scope.get(name), &*mode) {
                    (Some(var), _) => Ok(self.lower_var(var, pos)),
                    (None, AggMode::Collect(_)) => Err(self.semantic(
                        format!(
                            "variable `{name}` must be a grouping key (a non-aggregated item) or appear inside an aggregate"
                        ),
                        e.span,
                    )),
                    (None, _) => {
                        Err(self.semantic(format!("variable `{name}` is not defined"), e.span))
                    }
                }
            }
            K::Parameter(p) => {
                let name = match &p.name {
                    ast::ParameterName::Named(n) | ast::ParameterName::Positional(n) => n.clone(),
                    _ => return Err(self.unsupported("this parameter form", e.span)),
                };
                let Some(v) = self.params.get(&name) else {
                    return Err(CypherError::MissingParameter {
                        name,
                        position: Some(Position::at(pos)),
                    });
                };
                let c = Const::from_json(v);
                Ok(self.konst(c, pos))
            }
            _ => Err(self.semantic("`*` is only allowed in count(*)", e.span)),
        }
    }

    #[inline(never)]
    pub(super) fn lower_collection(
        &mut self,
        e: &ast::Expr,
        scope: &Scope,
        mode: &mut AggMode,
    ) -> Result<Expr, CypherError> {
        let pos = self.pos(e.span);
        let kind = match &e.kind {
            ast::ExprKind::List(items) => {
                let mut out = Vec::with_capacity(items.len());
                for i in items {
                    out.push(self.lower(i, scope, mode)?);
                }
                if out.iter().all(|x| self.const_of(x).is_some()) {
                    let c = Const::List(
                        out.iter()
                            .filter_map(|x| self.const_of(x).cloned())
                            .collect(),
                    );
                    return Ok(self.konst(c, pos));
                }
                ExprKind::List(out)
            }
            ast::ExprKind::Map(entries) => {
                let mut out: Vec<(Arc<str>, Expr)> = Vec::with_capacity(entries.len());
                for en in entries {
                    let v = self.lower(&en.value, scope, mode)?;
                    out.push((Arc::from(ident(&en.key)), v));
                }
                out.sort_by(|a, b| a.0.cmp(&b.0));
                out.dedup_by(|a, b| a.0 == b.0);
                ExprKind::Map(out)
            }
            _ => return Err(self.unsupported("this expression", e.span)),
        };
        Ok(Expr { kind, pos })
    }

    #[inline(never)]
    pub(super) fn lower_unary(
        &mut self,
        e: &ast::Expr,
        scope: &Scope,
        mode: &mut AggMode,
    ) -> Result<Expr, CypherError> {
        let pos = self.pos(e.span);
        let ast::ExprKind::Unary { operator, operand } = &e.kind else {
            return Err(self.unsupported("this expression", e.span));
        };
        let kind = match operator.kind {
            ast::UnaryOperator::Minus => {
                // Fold -<integer literal> so i64::MIN is writable.
                if let ast::ExprKind::Literal(l) = &operand.kind
                    && let ast::LiteralKind::Integer(i) = &l.kind
                {
                    let v = parse_int(i)
                        .and_then(|v| 0i64.checked_sub_unsigned(v))
                        .ok_or_else(|| {
                            self.semantic(
                                format!("integer literal -{} is too large", i.text),
                                e.span,
                            )
                        })?;
                    return Ok(self.konst(Const::Int(v), pos));
                }
                ExprKind::Neg(Box::new(self.lower(operand, scope, mode)?))
            }
            ast::UnaryOperator::Plus => return self.lower(operand, scope, mode),
            ast::UnaryOperator::Not => ExprKind::Not(Box::new(self.lower(operand, scope, mode)?)),
            _ => return Err(self.unsupported("this operator", operator.span)),
        };
        Ok(Expr { kind, pos })
    }

    #[inline(never)]
    pub(super) fn lower_binary(
        &mut self,
        e: &ast::Expr,
        scope: &Scope,
        mode: &mut AggMode,
    ) -> Result<Expr, CypherError> {
        use ast::BinaryOperator as B;
        let pos = self.pos(e.span);
        let ast::ExprKind::Binary {
            left,
            operator,
            right,
        } = &e.kind
        else {
            return Err(self.unsupported("this expression", e.span));
        };
        let (kinds, rkinds) = if matches!(mode, AggMode::Forbid(_)) {
            (
                self.node_kinds_prop(left, scope),
                self.node_kinds_prop(right, scope),
            )
        } else {
            (None, None)
        };
        let l = Box::new(self.lower(left, scope, mode)?);
        let r = Box::new(self.lower(right, scope, mode)?);
        let kind = match operator.kind {
            B::Or => ExprKind::Or(l, r),
            B::Xor => ExprKind::Xor(l, r),
            B::And => ExprKind::And(l, r),
            B::Equal => return Ok(self.compare(CmpOp::Eq, *l, *r, (kinds, rkinds), pos)),
            B::NotEqual => return Ok(self.compare(CmpOp::Ne, *l, *r, (kinds, rkinds), pos)),
            B::Less => ExprKind::Cmp(CmpOp::Lt, l, r),
            B::LessEqual => ExprKind::Cmp(CmpOp::Le, l, r),
            B::Greater => ExprKind::Cmp(CmpOp::Gt, l, r),
            B::GreaterEqual => ExprKind::Cmp(CmpOp::Ge, l, r),
            B::In => ExprKind::In(l, r),
            B::StartsWith => ExprKind::StrOp(StrOp::StartsWith, l, r),
            B::EndsWith => ExprKind::StrOp(StrOp::EndsWith, l, r),
            B::Contains => ExprKind::StrOp(StrOp::Contains, l, r),
            B::Add => ExprKind::Arith(ArithOp::Add, l, r),
            B::Subtract => ExprKind::Arith(ArithOp::Sub, l, r),
            B::Multiply => ExprKind::Arith(ArithOp::Mul, l, r),
            B::Divide => ExprKind::Arith(ArithOp::Div, l, r),
            B::Remainder => ExprKind::Arith(ArithOp::Mod, l, r),
            B::Power => ExprKind::Arith(ArithOp::Pow, l, r),
            B::Concat => ExprKind::Arith(ArithOp::Concat, l, r),
            B::RegexMatch => {
                return Err(self.unsupported("regular expressions (=~)", operator.span));
            }
            _ => return Err(self.unsupported("this operator", operator.span)),
        };
        Ok(Expr { kind, pos })
    }

    /// `IS NULL`, labels, properties, indexes and slices.
    #[inline(never)]
    pub(super) fn lower_access(
        &mut self,
        e: &ast::Expr,
        scope: &Scope,
        mode: &mut AggMode,
    ) -> Result<Expr, CypherError> {
        use ast::ExprKind as K;
        let pos = self.pos(e.span);
        let kind = match &e.kind {
            K::Is {
                expression,
                negated,
                predicate,
            } => {
                let inner = Box::new(self.lower(expression, scope, mode)?);
                match predicate {
                    ast::IsPredicate::Null => ExprKind::IsNull(inner, *negated),
                    ast::IsPredicate::Label(le) => {
                        let has = ExprKind::HasLabels(inner, label_kinds(le));
                        if *negated {
                            ExprKind::Not(Box::new(Expr { kind: has, pos }))
                        } else {
                            has
                        }
                    }
                    _ => {
                        return Err(self.unsupported("IS type / normalization predicates", e.span));
                    }
                }
            }
            K::Property { expression, key } => {
                let base = self.lower(expression, scope, mode)?;
                ExprKind::Prop(Box::new(base), PropKey::new(ident(key)))
            }
            K::DynamicProperty { expression, key }
            | K::Index {
                expression,
                index: key,
            } => {
                let base = self.lower(expression, scope, mode)?;
                let k = self.lower(key, scope, mode)?;
                ExprKind::Index(Box::new(base), Box::new(k))
            }
            K::Slice {
                expression,
                lower,
                upper,
            } => {
                let base = self.lower(expression, scope, mode)?;
                let lo = match lower {
                    Some(x) => Some(Box::new(self.lower(x, scope, mode)?)),
                    None => None,
                };
                let hi = match upper {
                    Some(x) => Some(Box::new(self.lower(x, scope, mode)?)),
                    None => None,
                };
                ExprKind::Slice(Box::new(base), lo, hi)
            }
            _ => return Err(self.unsupported("this expression", e.span)),
        };
        Ok(Expr { kind, pos })
    }

    #[inline(never)]
    pub(super) fn lower_function(
        &mut self,
        e: &ast::Expr,
        scope: &Scope,
        mode: &mut AggMode,
    ) -> Result<Expr, CypherError> {
        let pos = self.pos(e.span);
        let ast::ExprKind::Function(f) = &e.kind else {
            return Err(self.unsupported("this expression", e.span));
        };
        if agg_func(e).is_some() {
            let AggMode::Forbid(place) = mode else {
                return Err(self.semantic("internal: aggregate", e.span));
            };
            return Err(self.semantic(
                format!("aggregate functions are not allowed in {place}"),
                e.span,
            ));
        }
        let name: Vec<&str> = f.name.parts.iter().map(|p| p.kind.text.as_str()).collect();
        let name = name.join(".");
        let Some((func, min, max)) = Func::lookup(&name) else {
            return Err(CypherError::UnknownFunction {
                name,
                position: Some(Position::at(pos)),
            });
        };
        if f.quantifier.is_some() {
            return Err(self.semantic(
                format!("DISTINCT is only allowed in aggregates, not in {name}()"),
                e.span,
            ));
        }
        let n = f.arguments.len();
        if n < min || n > max {
            let want = if min == max {
                format!("{min}")
            } else if max == usize::MAX {
                format!("at least {min}")
            } else {
                format!("{min} to {max}")
            };
            return Err(self.semantic(
                format!("{name}() takes {want} argument(s), got {n}"),
                e.span,
            ));
        }
        let mut args = Vec::with_capacity(n);
        for a in &f.arguments {
            args.push(self.lower(a, scope, mode)?);
        }
        Ok(Expr {
            kind: ExprKind::Call(func, args),
            pos,
        })
    }

    #[inline(never)]
    pub(super) fn lower_case(
        &mut self,
        e: &ast::Expr,
        scope: &Scope,
        mode: &mut AggMode,
    ) -> Result<Expr, CypherError> {
        let pos = self.pos(e.span);
        let ast::ExprKind::Case(c) = &e.kind else {
            return Err(self.unsupported("this expression", e.span));
        };
        let operand = match &c.operand {
            Some(o) => Some(Box::new(self.lower(o, scope, mode)?)),
            None => None,
        };
        let mut arms = Vec::new();
        for alt in &c.alternatives {
            let then = self.lower(&alt.then, scope, mode)?;
            for w in &alt.when {
                let w = self.lower(w, scope, mode)?;
                arms.push((w, then.clone()));
            }
        }
        let default = match &c.else_expression {
            Some(d) => Some(Box::new(self.lower(d, scope, mode)?)),
            None => None,
        };
        Ok(Expr {
            kind: ExprKind::Case {
                operand,
                arms,
                default,
            },
            pos,
        })
    }

    /// List comprehensions and list predicates (`all`, `any`, `none`, `single`).
    #[inline(never)]
    pub(super) fn lower_iteration(
        &mut self,
        e: &ast::Expr,
        scope: &Scope,
        mode: &mut AggMode,
    ) -> Result<Expr, CypherError> {
        let pos = self.pos(e.span);
        let kind = match &e.kind {
            ast::ExprKind::ListComprehension(lc) => {
                let list = self.lower(&lc.list, scope, mode)?;
                let (slot, inner) = self.local_var(&lc.variable, scope);
                let pred = match &lc.predicate {
                    Some(p) => Some(Box::new(self.lower(p, &inner, mode)?)),
                    None => None,
                };
                let proj = match &lc.projection {
                    Some(p) => Some(Box::new(self.lower(p, &inner, mode)?)),
                    None => None,
                };
                ExprKind::ListComp {
                    slot,
                    list: Box::new(list),
                    pred,
                    proj,
                }
            }
            ast::ExprKind::QuantifiedPredicate(q) => {
                let list = self.lower(&q.list, scope, mode)?;
                let (slot, inner) = self.local_var(&q.variable, scope);
                let pred = self.lower(&q.predicate, &inner, mode)?;
                let kind = match q.kind.kind {
                    ast::QuantifiedPredicateKind::All => QuantKind::All,
                    ast::QuantifiedPredicateKind::Any => QuantKind::Any,
                    ast::QuantifiedPredicateKind::None => QuantKind::None,
                    ast::QuantifiedPredicateKind::Single => QuantKind::Single,
                    _ => return Err(self.unsupported("this list predicate", q.kind.span)),
                };
                ExprKind::Quant {
                    kind,
                    slot,
                    list: Box::new(list),
                    pred: Box::new(pred),
                }
            }
            _ => return Err(self.unsupported("this expression", e.span)),
        };
        Ok(Expr { kind, pos })
    }

    /// The kinds of `v` when `e` is `v.prop` on a node variable.
    pub(super) fn node_kinds_prop(&self, e: &ast::Expr, scope: &Scope) -> Option<Kinds> {
        match &e.kind {
            ast::ExprKind::Property { expression, .. } => self.node_kinds(expression, scope),
            ast::ExprKind::Parenthesized(inner) => self.node_kinds_prop(inner, scope),
            _ => None,
        }
    }

    pub(super) fn aggregate(
        &mut self,
        e: &ast::Expr,
        func: AggFunc,
        pre: &Scope,
    ) -> Result<Agg, CypherError> {
        let ast::ExprKind::Function(f) = &e.kind else {
            return Err(self.semantic("internal: not an aggregate", e.span));
        };
        let distinct = matches!(
            f.quantifier.as_ref().map(|q| q.kind),
            Some(ast::SetQuantifier::Distinct)
        );
        let pos = self.pos(e.span);
        let arg = match f.arguments.as_slice() {
            [a] if matches!(a.kind, ast::ExprKind::Wildcard) => {
                if func != AggFunc::Count || distinct {
                    return Err(self.semantic("only count(*) may take `*`", a.span));
                }
                None
            }
            [a] => {
                if contains_agg(a) {
                    return Err(self.semantic("aggregates cannot be nested", a.span));
                }
                Some(self.lower(a, pre, &mut AggMode::Forbid("an aggregate's argument"))?)
            }
            args => {
                return Err(self.semantic(
                    format!("aggregate functions take one argument, got {}", args.len()),
                    e.span,
                ));
            }
        };
        let slot = self.new_slot(&self.span_text(e.span));
        Ok(Agg {
            slot,
            func,
            distinct,
            arg,
            pos,
        })
    }
}
