//! Projections (RETURN and WITH): aggregation, sorting, SKIP and LIMIT sinks, the segments
//! a query splits into at each WITH, and counts pushed down into the scans before them.

use super::*;

impl<'q> Planner<'q> {
    /// Plans a projection; returns the scope after it.
    pub(super) fn projection(
        &mut self,
        proj: &ast::ProjectionClause,
        where_clause: Option<&ast::Expr>,
        scope: &Scope,
        is_return: bool,
    ) -> Result<Scope, CypherError> {
        let clause = if is_return { "RETURN" } else { "WITH" };
        if let Some(off) = &proj.offset {
            return Err(self.unsupported("OFFSET (use SKIP)", off.span));
        }
        // Items: (column name, expression or plain variable, span).
        enum Src<'e> {
            Var(String),
            Expr(&'e ast::Expr),
        }
        let mut items: Vec<(String, Src<'_>, Span)> = Vec::new();
        for it in &proj.items {
            match &it.kind {
                ast::ProjectionItemKind::Wildcard => {
                    let mut names: Vec<String> =
                        scope.vars.iter().map(|(n, _)| n.clone()).collect();
                    if is_return {
                        names.sort();
                    }
                    if names.is_empty() {
                        return Err(self
                            .semantic(format!("{clause} * with no variables in scope"), it.span));
                    }
                    for n in names {
                        items.push((n.clone(), Src::Var(n), it.span));
                    }
                }
                ast::ProjectionItemKind::Expression { expression, alias } => {
                    let name = match alias {
                        Some(a) => ident(a).to_owned(),
                        None => match &expression.kind {
                            ast::ExprKind::Variable(v) => ident(v).to_owned(),
                            _ if !is_return => {
                                return Err(self.semantic(
                                    "expressions in WITH must be aliased (use AS)",
                                    expression.span,
                                ));
                            }
                            _ => self.span_text(expression.span),
                        },
                    };
                    let src = match (&expression.kind, alias) {
                        (ast::ExprKind::Variable(v), _) => Src::Var(ident(v).to_owned()),
                        _ => Src::Expr(expression),
                    };
                    items.push((name, src, it.span));
                }
                _ => return Err(self.unsupported("this projection item", it.span)),
            }
        }
        for (i, (name, _, span)) in items.iter().enumerate() {
            if items[..i].iter().any(|(n, _, _)| n == name) {
                return Err(self.semantic(format!("column `{name}` is defined twice"), *span));
            }
        }
        let distinct = matches!(
            proj.quantifier.as_ref().map(|q| q.kind),
            Some(ast::SetQuantifier::Distinct)
        );
        let aggregating = items
            .iter()
            .any(|(_, s, _)| matches!(s, Src::Expr(e) if contains_agg(e)));

        let mut new_scope = Scope::default();
        let mut out_slots: Vec<Slot> = Vec::new();
        let mut order_keys: Vec<(Slot, bool)> = Vec::new();
        let sort_items: Vec<&ast::SortItem> = proj
            .order_by
            .as_ref()
            .map(|o| o.items.iter().collect())
            .unwrap_or_default();
        let desc = |s: &ast::SortItem| {
            matches!(
                s.direction.as_ref().map(|d| d.kind),
                Some(ast::SortDirection::Descending)
            )
        };
        for s in &sort_items {
            if s.nulls.is_some() {
                return Err(self.unsupported("NULLS FIRST / NULLS LAST", s.span));
            }
        }

        if !aggregating {
            let mut project: Vec<(Slot, Expr)> = Vec::new();
            for (name, src, span) in &items {
                let var = match src {
                    Src::Var(v) => match scope.get(v) {
                        Some(
                            var @ Var {
                                kind: VarKind::Path(_),
                                ..
                            },
                        ) if !is_return && !distinct && sort_items.is_empty() => var.clone(),
                        Some(Var {
                            kind: VarKind::Path(spec),
                            ..
                        }) => {
                            let slot = self.new_slot(name);
                            project.push((
                                slot,
                                Expr {
                                    kind: ExprKind::Path(spec.clone()),
                                    pos: self.pos(*span),
                                },
                            ));
                            Var {
                                slot,
                                kind: VarKind::Value,
                            }
                        }
                        Some(var) => var.clone(),
                        None => {
                            return Err(
                                self.semantic(format!("variable `{v}` is not defined"), *span)
                            );
                        }
                    },
                    Src::Expr(e) => {
                        let ex = self.lower(e, scope, &mut AggMode::Forbid(clause))?;
                        let slot = self.new_slot(name);
                        project.push((slot, ex));
                        Var {
                            slot,
                            kind: VarKind::Value,
                        }
                    }
                };
                out_slots.push(var.slot);
                new_scope.set(name, var);
            }
            if !project.is_empty() {
                self.ops.push(Op::Project(project));
            }
            if distinct {
                let state = self.state();
                self.ops.push(Op::Distinct {
                    slots: out_slots.clone(),
                    state,
                });
            }
            if !sort_items.is_empty() {
                // ORDER BY sees the new names, and (without DISTINCT) the old variables too.
                let mut sort_scope = if distinct {
                    Scope::default()
                } else {
                    scope.clone()
                };
                for (n, v) in &new_scope.vars {
                    sort_scope.set(n, v.clone());
                }
                // An ORDER BY expression written like a projected item is that item.
                let item_canon: Vec<(String, Slot)> = items
                    .iter()
                    .zip(&out_slots)
                    .map(|((_, src, _), slot)| {
                        let c = match src {
                            Src::Var(v) => v.clone(),
                            Src::Expr(e) => canon(e),
                        };
                        (c, *slot)
                    })
                    .collect();
                let mut project = Vec::new();
                for s in &sort_items {
                    let text = canon(&s.expression);
                    if let Some((_, slot)) = item_canon.iter().find(|(c, _)| *c == text) {
                        order_keys.push((*slot, desc(s)));
                        continue;
                    }
                    let e =
                        self.lower(&s.expression, &sort_scope, &mut AggMode::Forbid("ORDER BY"))?;
                    let slot = match e.kind {
                        ExprKind::Slot(slot) => slot,
                        _ => {
                            let slot = self.new_slot("  sort");
                            project.push((slot, e));
                            slot
                        }
                    };
                    order_keys.push((slot, desc(s)));
                }
                if !project.is_empty() {
                    self.ops.push(Op::Project(project));
                }
            }
        } else {
            // Grouping keys are the items without aggregates.
            let mut keys: Vec<(Slot, Expr)> = Vec::new();
            let mut collecting = Collecting {
                keys: Vec::new(),
                aggs: Vec::new(),
                pre: scope.clone(),
            };
            let mut item_vars: Vec<Option<Var>> = Vec::new();
            // The node slot each key is determined by (the node itself, or its unique id).
            let mut node_keys: Vec<Option<Slot>> = Vec::new();
            for (name, src, span) in &items {
                node_keys.push(match src {
                    Src::Var(v) => match scope.get(v) {
                        Some(Var {
                            slot,
                            kind: VarKind::Node(_),
                        }) => Some(*slot),
                        _ => None,
                    },
                    Src::Expr(e) => match &e.kind {
                        ast::ExprKind::Property { expression, key } if ident(key) == "id" => {
                            match (&expression.kind, self.node_kinds(expression, scope)) {
                                (
                                    ast::ExprKind::Variable(v),
                                    Some(Kinds::FEEDBACK | Kinds::ADAPTER),
                                ) => scope.get(ident(v)).map(|v| v.slot),
                                _ => None,
                            }
                        }
                        _ => None,
                    },
                });
                let (expr, canon_text, kind) = match src {
                    Src::Var(v) => {
                        let var = scope.get(v).ok_or_else(|| {
                            self.semantic(format!("variable `{v}` is not defined"), *span)
                        })?;
                        let kind = match &var.kind {
                            VarKind::Path(_) => VarKind::Value,
                            k => k.clone(),
                        };
                        let e = self.lower_var(var, self.pos(*span));
                        (e, v.clone(), kind)
                    }
                    Src::Expr(e) if !contains_agg(e) => (
                        self.lower(e, scope, &mut AggMode::Forbid(clause))?,
                        canon(e),
                        VarKind::Value,
                    ),
                    Src::Expr(_) => {
                        item_vars.push(None);
                        node_keys.pop();
                        continue;
                    }
                };
                let slot = self.new_slot(name);
                keys.push((slot, expr));
                collecting.keys.push((canon_text, slot, kind.clone()));
                item_vars.push(Some(Var { slot, kind }));
            }
            let mut mode = AggMode::Collect(Box::new(collecting));
            let mut post: Vec<(Slot, Expr)> = Vec::new();
            for (i, (name, src, _)) in items.iter().enumerate() {
                let var = match (&item_vars[i], src) {
                    (Some(v), _) => v.clone(),
                    (None, Src::Expr(e)) => {
                        let ex = self.lower(e, &Scope::default(), &mut mode)?;
                        let slot = match ex.kind {
                            ExprKind::Slot(s) => s,
                            _ => {
                                let s = self.new_slot(name);
                                post.push((s, ex));
                                s
                            }
                        };
                        Var {
                            slot,
                            kind: VarKind::Value,
                        }
                    }
                    (None, Src::Var(_)) => continue,
                };
                out_slots.push(var.slot);
                new_scope.set(name, var);
            }
            // ORDER BY may use the new names, the items' expressions, and more aggregates.
            let mut sort_exprs = Vec::new();
            for s in &sort_items {
                let e = self.lower(&s.expression, &new_scope, &mut mode)?;
                sort_exprs.push((e, desc(s)));
            }
            let AggMode::Collect(c) = mode else {
                return Err(CypherError::semantic("internal: aggregation state lost", 0));
            };
            let aggs = c.aggs.into_iter().map(|(_, a)| a).collect();
            let by_nodes: Option<Vec<Slot>> = node_keys.into_iter().collect();
            let nodes = by_nodes.filter(|n| (1..=2).contains(&n.len()));
            self.finish_segment(Sink::Aggregate {
                keys,
                aggs,
                nodes,
                weight: None,
            });
            if !post.is_empty() {
                self.ops.push(Op::Project(post));
            }
            if distinct {
                let state = self.state();
                self.ops.push(Op::Distinct {
                    slots: out_slots.clone(),
                    state,
                });
            }
            let mut project = Vec::new();
            for (e, d) in sort_exprs {
                let slot = match e.kind {
                    ExprKind::Slot(slot) => slot,
                    _ => {
                        let slot = self.new_slot("  sort");
                        project.push((slot, e));
                        slot
                    }
                };
                order_keys.push((slot, d));
            }
            if !project.is_empty() {
                self.ops.push(Op::Project(project));
            }
        }

        let skip = match &proj.skip {
            Some(e) => Some(self.lower(e, &Scope::default(), &mut AggMode::Forbid("SKIP"))?),
            None => None,
        };
        let limit = match &proj.limit {
            Some(e) => Some(self.lower(e, &Scope::default(), &mut AggMode::Forbid("LIMIT"))?),
            None => None,
        };
        if !order_keys.is_empty() {
            let top = limit.clone().map(|l| (skip.clone(), l));
            self.finish_segment(Sink::Sort {
                keys: order_keys,
                top,
            });
        }
        if let Some(count) = skip {
            let state = self.state();
            self.ops.push(Op::Skip { count, state });
        }
        if let Some(count) = limit {
            let state = self.state();
            self.ops.push(Op::Limit { count, state });
        }
        if let Some(w) = where_clause {
            let e = self.lower(w, &new_scope, &mut AggMode::Forbid("WHERE"))?;
            self.ops.push(Op::Filter(e));
        }
        if is_return {
            self.columns = items.into_iter().map(|(n, _, _)| n).collect();
            self.finish_segment(Sink::Output { slots: out_slots });
        }
        Ok(new_scope)
    }

    /// A variable local to an expression (list comprehension, list predicate): a fresh slot
    /// and the scope that sees it.
    pub(super) fn local_var(&mut self, name: &ast::Name, scope: &Scope) -> (Slot, Scope) {
        let slot = self.new_slot(ident(name));
        let mut inner = scope.clone();
        inner.set(
            ident(name),
            Var {
                slot,
                kind: VarKind::Value,
            },
        );
        (slot, inner)
    }

    pub(super) fn state(&mut self) -> usize {
        self.states += 1;
        self.states - 1
    }

    pub(super) fn finish_segment(&mut self, mut sink: Sink) {
        let mut ops = std::mem::take(&mut self.ops);
        self.push_down_counts(&mut ops, &mut sink);
        // The first segment (nothing bound before it) may run as a columnar group scan.
        if self.options.group_scan
            && self.segments.is_empty()
            && let Some(gs) = crate::cypher::group_scan::compile(&ops, &sink, &self.consts)
        {
            ops = vec![Op::GroupScan(Box::new(gs))];
        }
        self.segments.push(Segment { ops, sink });
    }

    /// Aggregate pushdown: an expansion whose relationship and far node nothing after it
    /// reads becomes an [`Op::ExpandCount`], which weights the row by the number of
    /// relationships instead of producing one row per relationship.
    ///
    /// Sound when the segment ends in an aggregation that only counts, or takes `min` /
    /// `max` (which repeats do not change), without DISTINCT; when the operators after the
    /// expansion are per-row (no DISTINCT, SKIP or LIMIT counting rows); when the expansion
    /// binds a fresh node and no other relationship of its MATCH may be the same edge (its
    /// uniqueness lists are empty, and a later overlapping relationship would read its slot).
    /// `count(f)` of the far node itself counts like `count(*)`: the expansion binds it, so
    /// it is never null. Label checks on the far node stay (`to_kinds`); any other
    /// condition on it is a filter reading it, which keeps the enumeration.
    pub(super) fn push_down_counts(&mut self, ops: &mut [Op], sink: &mut Sink) {
        if !self.options.count_pushdown {
            return;
        }
        let Sink::Aggregate {
            keys, aggs, weight, ..
        } = sink
        else {
            return;
        };
        if aggs
            .iter()
            .any(|a| a.distinct || !matches!(a.func, AggFunc::Count | AggFunc::Min | AggFunc::Max))
        {
            return;
        }
        let mut weight_slot = None;
        for i in (0..ops.len()).rev() {
            let Op::Expand(e) = &ops[i] else {
                continue;
            };
            if e.into || !e.unique.is_empty() || !e.unique_lists.is_empty() {
                continue;
            }
            let (from, to, rel, dir, types, to_kinds) =
                (e.from, e.to, e.rel, e.dir, e.types, e.to_kinds);
            let rest = &ops[i + 1..];
            if rest
                .iter()
                .any(|op| matches!(op, Op::Distinct { .. } | Op::Skip { .. } | Op::Limit { .. }))
            {
                continue;
            }
            let gone = |s: Slot| s == to || Some(s) == rel;
            // `count(x)` of the far node or relationship: a count of rows.
            let counted = |a: &Agg| {
                a.func == AggFunc::Count
                    && matches!(&a.arg, Some(Expr { kind: ExprKind::Slot(s), .. }) if gone(*s))
            };
            let mut reads = Vec::new();
            rest.iter().for_each(|op| op.reads(&mut reads));
            keys.iter().for_each(|(_, k)| k.slots(&mut reads));
            for a in aggs.iter().filter(|a| !counted(a)) {
                if let Some(arg) = &a.arg {
                    arg.slots(&mut reads);
                }
            }
            if reads.iter().any(|s| gone(*s)) {
                continue;
            }
            for a in aggs.iter_mut() {
                if counted(a) {
                    a.arg = None;
                }
            }
            let w = *weight_slot.get_or_insert_with(|| self.new_slot("  weight"));
            ops[i] = Op::ExpandCount(Box::new(ExpandCount {
                from,
                to,
                dir,
                types,
                to_kinds,
                weight: w,
                chained: false,
            }));
        }
        // The first counter of a row sets its weight, the later ones multiply it.
        let mut first = true;
        for op in ops.iter_mut() {
            if let Op::ExpandCount(c) = op {
                c.chained = !first;
                first = false;
            }
        }
        *weight = weight_slot;
    }
}
