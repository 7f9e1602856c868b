//! MATCH patterns: nodes and relationships lowered to scans, seeks and expansions, and the
//! small cost model that orders them (start from the cheapest node, then follow the
//! relationship with the lowest fan-out, checks against bound nodes first).

use super::*;

impl<'q> Planner<'q> {
    pub(super) fn match_clause(
        &mut self,
        m: &ast::MatchClause,
        scope: &mut Scope,
    ) -> Result<(), CypherError> {
        if let Some(mode) = &m.mode {
            return Err(self.unsupported("path modes (WALK, TRAIL, ...)", mode.span));
        }
        let mut nodes: Vec<PNode> = Vec::new();
        let mut rels: Vec<PRel> = Vec::new();
        let mut node_where: Vec<ast::Expr> = Vec::new();
        let mut node_props: Vec<(usize, ast::Expr)> = Vec::new();
        // (name, start node, rel indices, span)
        let mut paths: Vec<(String, usize, Vec<usize>, Span)> = Vec::new();
        let mut rel_names: Vec<String> = Vec::new();

        for part in &m.pattern.parts {
            if let Some(sel) = &part.kind.selector {
                return Err(self.unsupported("path selectors (shortest paths)", sel.span));
            }
            let factors = &part.kind.path.kind.factors;
            let mut prev: Option<usize> = None;
            let mut pending: Option<&ast::RelationshipPattern> = None;
            let mut pending_span = part.span;
            let mut first = None;
            let mut path_rels = Vec::new();
            for f in factors {
                match &f.kind {
                    ast::PathFactorKind::Node(np) => {
                        if pending.is_none() && prev.is_some() {
                            return Err(self.unsupported("adjacent node patterns", f.span));
                        }
                        let idx = self.pattern_node(np, f.span, scope, &mut nodes)?;
                        if let Some(w) = &np.where_clause {
                            node_where.push((**w).clone());
                        }
                        if let Some(pm) = &np.properties {
                            node_props.push((idx, (**pm).clone()));
                        }
                        if let (Some(a), Some(rp)) = (prev, pending.take()) {
                            let r =
                                self.pattern_rel(rp, pending_span, a, idx, scope, &mut rel_names)?;
                            path_rels.push(rels.len());
                            rels.push(r);
                        }
                        first.get_or_insert(idx);
                        prev = Some(idx);
                    }
                    ast::PathFactorKind::Relationship(rp) => {
                        if prev.is_none() || pending.is_some() {
                            return Err(
                                self.semantic("a relationship must connect two nodes", f.span)
                            );
                        }
                        pending = Some(rp);
                        pending_span = f.span;
                    }
                    _ => {
                        return Err(
                            self.unsupported("quantified or parenthesized path patterns", f.span)
                        );
                    }
                }
            }
            if pending.is_some() {
                return Err(self.semantic("a relationship must connect two nodes", pending_span));
            }
            if let Some(b) = &part.kind.binding {
                let name = ident(b).to_owned();
                if scope.get(&name).is_some() || paths.iter().any(|p| p.0 == name) {
                    return Err(
                        self.semantic(format!("variable `{name}` is already defined"), b.span)
                    );
                }
                paths.push((name, first.unwrap_or(0), path_rels, b.span));
            }
        }

        // Relationship slots: named ones, ones in paths, and ones uniqueness must compare.
        let in_path: Vec<bool> = (0..rels.len())
            .map(|i| paths.iter().any(|p| p.2.contains(&i)))
            .collect();
        for i in 0..rels.len() {
            if rels[i].slot.is_some() {
                continue;
            }
            let overlaps = (0..rels.len()).any(|j| j != i && rels[i].types.overlaps(rels[j].types));
            if in_path[i] || overlaps || rels[i].props.is_some() || rels[i].inline_where.is_some() {
                rels[i].slot = Some(self.new_slot(&format!("  rel{i}")));
            }
        }

        // The scope the WHERE sees.
        let mut local = scope.clone();
        for n in &nodes {
            if let (Some(name), false) = (&n.name, n.bound) {
                local.set(
                    name,
                    Var {
                        slot: n.slot,
                        kind: VarKind::Node(n.kinds),
                    },
                );
            }
        }
        for (i, r) in rels.iter().enumerate() {
            if let (true, Some(slot)) = (r.named, r.slot) {
                let name = &rel_names[i];
                local.set(
                    name,
                    Var {
                        slot,
                        kind: if r.var.is_some() {
                            VarKind::Rels
                        } else {
                            VarKind::Rel
                        },
                    },
                );
            }
        }
        for (name, start, prels, _) in &paths {
            let steps = prels
                .iter()
                .map(|&i| {
                    let s = rels[i].slot.unwrap_or(usize::MAX);
                    if rels[i].var.is_some() {
                        PathStep::Rels(s)
                    } else {
                        PathStep::Rel(s)
                    }
                })
                .collect();
            local.set(
                name,
                Var {
                    slot: usize::MAX,
                    kind: VarKind::Path(Arc::new(PathSpec {
                        start: nodes[*start].slot,
                        steps,
                    })),
                },
            );
        }

        // Predicates: property maps, inline WHEREs, the WHERE clause, split into conjuncts.
        let mut raw: Vec<Expr> = Vec::new();
        for (idx, pm) in &node_props {
            let slot = nodes[*idx].slot;
            raw.extend(self.prop_map_preds(pm, slot, &local)?);
        }
        for r in &rels {
            if let (Some(pm), Some(slot)) = (&r.props, r.slot) {
                raw.extend(self.prop_map_preds(pm, slot, &local)?);
            }
        }
        let mut wheres: Vec<&ast::Expr> = node_where.iter().collect();
        wheres.extend(rels.iter().filter_map(|r| r.inline_where.as_ref()));
        wheres.extend(m.where_clause.as_ref());
        for w in wheres {
            let mut conj = Vec::new();
            split_and(w, &mut conj);
            for c in conj {
                raw.push(self.lower(c, &local, &mut AggMode::Forbid("WHERE"))?);
            }
        }
        let elem_of: HashMap<Slot, usize> = nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| !n.bound)
            .map(|(i, n)| (n.slot, i))
            .chain(
                rels.iter()
                    .enumerate()
                    .filter_map(|(i, r)| r.slot.map(|s| (s, nodes.len() + i))),
            )
            .collect();
        let preds: Vec<Pred> = raw
            .into_iter()
            .map(|expr| {
                let mut slots = Vec::new();
                expr.slots(&mut slots);
                let mut deps: Vec<usize> = slots
                    .iter()
                    .filter_map(|s| elem_of.get(s).copied())
                    .collect();
                deps.sort_unstable();
                deps.dedup();
                let selectivity = self.selectivity(&expr);
                Pred {
                    expr,
                    deps,
                    selectivity,
                }
            })
            .collect();

        let optional = m.optional;
        let saved = std::mem::take(&mut self.ops);
        self.order_pattern(&nodes, &rels, preds)?;
        let body = std::mem::replace(&mut self.ops, saved);
        if optional {
            let mut nulls: Vec<Slot> = nodes.iter().filter(|n| !n.bound).map(|n| n.slot).collect();
            nulls.extend(rels.iter().filter_map(|r| r.slot));
            self.ops.push(Op::Optional { body, nulls });
        } else {
            self.ops.extend(body);
        }

        // Publish the new variables.
        for n in &nodes {
            if let (Some(name), false) = (&n.name, n.bound) {
                scope.set(
                    name,
                    Var {
                        slot: n.slot,
                        kind: VarKind::Node(n.kinds),
                    },
                );
            }
        }
        for (i, r) in rels.iter().enumerate() {
            if let (true, Some(_)) = (r.named, r.slot)
                && let Some(v) = local.get(&rel_names[i])
            {
                scope.set(&rel_names[i], v.clone());
            }
        }
        for (name, ..) in &paths {
            if let Some(v) = local.get(name) {
                scope.set(name, v.clone());
            }
        }
        Ok(())
    }

    pub(super) fn pattern_node(
        &mut self,
        np: &ast::NodePattern,
        span: Span,
        scope: &Scope,
        nodes: &mut Vec<PNode>,
    ) -> Result<usize, CypherError> {
        let kinds = np.labels.as_ref().map_or(Kinds::ANY, label_kinds);
        let pos = self.pos(span);
        let Some(var) = &np.variable else {
            let slot = self.new_slot("  anon");
            nodes.push(PNode {
                name: None,
                slot,
                kinds,
                bound: false,
                known: Kinds::ANY,
                pos,
            });
            return Ok(nodes.len() - 1);
        };
        let name = ident(var);
        if let Some(i) = nodes.iter().position(|n| n.name.as_deref() == Some(name)) {
            nodes[i].kinds = nodes[i].kinds.and(kinds);
            return Ok(i);
        }
        let (slot, bound, known) = match scope.get(name) {
            Some(Var {
                slot,
                kind: VarKind::Node(k),
            }) => (*slot, true, *k),
            Some(Var {
                slot,
                kind: VarKind::Value,
            }) => (*slot, true, Kinds::ANY),
            Some(_) => {
                return Err(self.semantic(format!("variable `{name}` is not a node"), var.span));
            }
            None => (self.new_slot(name), false, Kinds::ANY),
        };
        nodes.push(PNode {
            name: Some(name.to_owned()),
            slot,
            kinds: if bound { known.and(kinds) } else { kinds },
            bound,
            known,
            pos,
        });
        Ok(nodes.len() - 1)
    }

    pub(super) fn pattern_rel(
        &mut self,
        rp: &ast::RelationshipPattern,
        span: Span,
        a: usize,
        b: usize,
        scope: &Scope,
        names: &mut Vec<String>,
    ) -> Result<PRel, CypherError> {
        if let Some(q) = &rp.graph_quantifier {
            return Err(
                self.unsupported("graph pattern quantifiers (use -[:T*min..max]->)", q.span)
            );
        }
        let dir = match rp.direction.kind {
            ast::RelationshipDirection::Right => Dir::Out,
            ast::RelationshipDirection::Left => Dir::In,
            _ => Dir::Both,
        };
        let types = rp.labels.as_ref().map_or(RelKinds::ANY, type_kinds);
        let var = match &rp.legacy_quantifier {
            None => None,
            Some(q) => {
                let bound =
                    |s: &Option<String>, span: Span| -> Result<Option<u32>, CypherError> {
                        match s {
                            None => Ok(None),
                            Some(t) => t.replace('_', "").parse::<u32>().map(Some).map_err(|_| {
                                self.semantic(format!("invalid path length `{t}`"), span)
                            }),
                        }
                    };
                let (min, max) = match &q.kind {
                    ast::QuantifierKind::ZeroOrMore | ast::QuantifierKind::OneOrMore => (1, None),
                    ast::QuantifierKind::Optional => (0, Some(1)),
                    ast::QuantifierKind::Fixed(n) => {
                        let n = bound(&Some(n.clone()), q.span)?.unwrap_or(1);
                        (n, Some(n))
                    }
                    ast::QuantifierKind::Range { lower, upper } => {
                        (bound(lower, q.span)?.unwrap_or(1), bound(upper, q.span)?)
                    }
                    _ => return Err(self.unsupported("this path quantifier", q.span)),
                };
                let depth = self.limits.max_depth.min(MAX_DEPTH_CEILING);
                match max {
                    Some(mx) if mx > depth => {
                        return Err(CypherError::limit(
                            Limit::MaxDepth,
                            format!(
                                "the pattern at {} asks for paths up to {mx} relationships; the limit is {depth}",
                                Position::locate(self.text, q.span.start)
                            ),
                        ));
                    }
                    None if min > depth => {
                        return Err(CypherError::limit(
                            Limit::MaxDepth,
                            format!(
                                "paths of at least {min} relationships exceed the limit of {depth}"
                            ),
                        ));
                    }
                    _ => {}
                }
                Some((min, max.unwrap_or(depth), max.is_none()))
            }
        };
        if var.is_some() && rp.properties.is_some() {
            return Err(self.unsupported("property maps on variable-length relationships", span));
        }
        let mut slot = None;
        let mut named = false;
        if let Some(v) = &rp.variable {
            let name = ident(v).to_owned();
            if scope.get(&name).is_some() {
                return Err(self.unsupported(
                    "re-using a variable from an earlier clause as a relationship",
                    v.span,
                ));
            }
            if names.contains(&name) {
                return Err(self.semantic(
                    format!("relationship variable `{name}` is used twice in one pattern"),
                    v.span,
                ));
            }
            slot = Some(self.new_slot(&name));
            named = true;
            names.push(name);
        } else {
            names.push(String::new());
        }
        Ok(PRel {
            slot,
            named,
            a,
            b,
            dir,
            types,
            var,
            props: rp.properties.as_deref().cloned(),
            inline_where: rp.where_clause.as_deref().cloned(),
        })
    }

    /// `{k: v, ...}` on the element in `slot` -> `slot.k = v` predicates.
    pub(super) fn prop_map_preds(
        &mut self,
        pm: &ast::Expr,
        slot: Slot,
        scope: &Scope,
    ) -> Result<Vec<Expr>, CypherError> {
        let ast::ExprKind::Map(entries) = &pm.kind else {
            return Err(self.unsupported("a parameter as a property map", pm.span));
        };
        let mut out = Vec::new();
        for e in entries {
            let value = self.lower(&e.value, scope, &mut AggMode::Forbid("a property map"))?;
            let pos = self.pos(e.span);
            let key = PropKey::new(ident(&e.key));
            let prop = Expr {
                kind: ExprKind::Prop(
                    Box::new(Expr {
                        kind: ExprKind::Slot(slot),
                        pos,
                    }),
                    key,
                ),
                pos,
            };
            let kinds = scope
                .vars
                .iter()
                .find(|(_, v)| v.slot == slot)
                .and_then(|(_, v)| match v.kind {
                    VarKind::Node(k) => Some(k),
                    _ => None,
                });
            out.push(self.compare(CmpOp::Eq, prop, value, (kinds, None), pos));
        }
        Ok(out)
    }

    /// The fraction of rows a filter keeps. With [`PlanOptions::statistics`] a test of a
    /// feedback item's type, status, used flag or model version reads the org's counters
    /// (kept on write, O(1)); anything else gets a fixed guess.
    pub(super) fn selectivity(&self, expr: &Expr) -> f64 {
        let guess = match &expr.kind {
            ExprKind::PropIs { negated: false, .. } | ExprKind::Cmp(CmpOp::Eq, _, _) => 0.1,
            _ => 0.3,
        };
        if !self.options.statistics {
            return guess;
        }
        let ExprKind::PropIs { test, negated, .. } = &expr.kind else {
            return guess;
        };
        let (key, negated) = match test {
            PropTest::FType(Some(t)) => (StatKey::Type(*t), *negated),
            PropTest::FStatus(Some(s)) => (StatKey::Status(*s), *negated),
            PropTest::FUsed(used) => (StatKey::Used, *negated != *used),
            PropTest::FSym(FProp::ModelVersion, Some(m)) => (StatKey::Model(*m), *negated),
            _ => return guess,
        };
        let total = self.stats.feedback.max(1.0);
        let v = key.read(self.graph);
        self.deps.borrow_mut().stats.push((key, stat_bucket(v)));
        // Never quite zero: the estimate steers the order, and an empty class may fill.
        let share = ((v as f64).max(0.5) / total).min(1.0);
        if negated {
            (1.0 - share).max(0.5 / total)
        } else {
            share
        }
    }

    /// Estimated rows per input row when following `r` from node `from`.
    pub(super) fn fanout(&self, nodes: &[PNode], r: &PRel, from: usize) -> f64 {
        let (dir, to) = if from == r.a {
            (r.dir, r.b)
        } else {
            (r.dir.reverse(), r.a)
        };
        let (fk, tk) = (nodes[from].kinds, nodes[to].kinds);
        let s = &self.stats;
        let mut f = 0.0;
        if r.types.feedback_for {
            if dir != Dir::In && fk.feedback && tk.adapter {
                f += s.feedback_for / s.feedback.max(1.0);
            }
            if dir != Dir::Out && fk.adapter && tk.feedback {
                f += s.feedback_for / s.adapters.max(1.0);
            }
        }
        if r.types.derived_from && fk.adapter && tk.adapter {
            let per = s.derived_from / s.adapters.max(1.0);
            f += if dir == Dir::Both { 2.0 * per } else { per };
        }
        match r.var {
            None => f,
            Some((min, max, _)) => (min..=max.min(8))
                .map(|k| f.powi(k as i32))
                .sum::<f64>()
                .max(0.01),
        }
    }

    pub(super) fn penalty(&self, nodes: &[PNode], to: usize) -> f64 {
        let k = nodes[to].kinds;
        let s = &self.stats;
        if (k.feedback && s.feedback > RANDOM_ACCESS_NODES)
            || (k.adapter && s.adapters > RANDOM_ACCESS_NODES)
        {
            RANDOM_ACCESS_PENALTY
        } else {
            1.0
        }
    }

    pub(super) fn scan_size(&self, k: Kinds) -> f64 {
        let s = &self.stats;
        (if k.feedback { s.feedback } else { 0.0 }) + (if k.adapter { s.adapters } else { 0.0 })
    }

    /// The next relationship to follow from the visited nodes: closing a cycle (both ends
    /// bound) first, then the lowest fan-out.
    pub(super) fn next_rel(
        &self,
        nodes: &[PNode],
        rels: &[PRel],
        visited: &[bool],
        done: &[bool],
    ) -> Option<(usize, usize)> {
        let mut best: Option<(usize, usize, f64)> = None;
        for (i, r) in rels.iter().enumerate() {
            if done[i] {
                continue;
            }
            let (va, vb) = (visited[r.a], visited[r.b]);
            let from = match (va, vb) {
                (true, true) => {
                    // Closing: check from the side with the smaller fan-out.
                    let cost = -1.0;
                    let from = if self.fanout(nodes, r, r.a) <= self.fanout(nodes, r, r.b) {
                        r.a
                    } else {
                        r.b
                    };
                    if best.is_none_or(|b| cost < b.2) {
                        best = Some((i, from, cost));
                    }
                    continue;
                }
                (true, false) => r.a,
                (false, true) => r.b,
                (false, false) => continue,
            };
            let to = if from == r.a { r.b } else { r.a };
            let cost = self.fanout(nodes, r, from) * self.penalty(nodes, to);
            if best.is_none_or(|b| cost < b.2) {
                best = Some((i, from, cost));
            }
        }
        best.map(|(i, from, _)| (i, from))
    }

    /// Estimated cost of starting a component at node `start`.
    pub(super) fn start_cost(
        &self,
        nodes: &[PNode],
        rels: &[PRel],
        preds: &[Pred],
        seeks: &[Option<usize>],
        start: usize,
        visited: &[bool],
    ) -> f64 {
        let mut visited = visited.to_vec();
        let mut done = vec![false; rels.len()];
        let mut ready = vec![false; preds.len()];
        visited[start] = true;
        let mut rows = if seeks[start].is_some() {
            1.0
        } else {
            self.scan_size(nodes[start].kinds)
        };
        let mut cost = rows;
        let bound = |visited: &[bool], done: &[bool], d: usize| {
            if d < nodes.len() {
                visited[d]
            } else {
                done[d - nodes.len()]
            }
        };
        let mut apply = |visited: &[bool], done: &[bool], rows: &mut f64| {
            for (i, p) in preds.iter().enumerate() {
                if !ready[i] && p.deps.iter().all(|&d| bound(visited, done, d)) {
                    ready[i] = true;
                    if seeks[start] != Some(i) {
                        *rows *= p.selectivity;
                    }
                }
            }
        };
        apply(&visited, &done, &mut rows);
        while let Some((i, from)) = self.next_rel(nodes, rels, &visited, &done) {
            let r = &rels[i];
            let to = if from == r.a { r.b } else { r.a };
            let closing = visited[to];
            rows *= self.fanout(nodes, r, from);
            cost += rows
                * if closing {
                    1.0
                } else {
                    self.penalty(nodes, to)
                };
            if closing {
                rows *= 0.5;
            }
            visited[to] = true;
            done[i] = true;
            apply(&visited, &done, &mut rows);
        }
        cost
    }

    /// Emits the operators of one MATCH pattern in a good order, with filters as early as
    /// possible.
    pub(super) fn order_pattern(
        &mut self,
        nodes: &[PNode],
        rels: &[PRel],
        preds: Vec<Pred>,
    ) -> Result<(), CypherError> {
        // Id seeks: `n.id = <expression not needing this pattern>`.
        let mut seeks: Vec<Option<usize>> = vec![None; nodes.len()];
        for (pi, p) in preds.iter().enumerate() {
            if let ExprKind::Cmp(CmpOp::Eq, l, r) = &p.expr.kind {
                for (side, other) in [(l, r), (r, l)] {
                    if let ExprKind::Prop(base, key) = &side.kind
                        && &*key.name == "id"
                        && let ExprKind::Slot(s) = base.kind
                        && let Some(ni) = nodes.iter().position(|n| n.slot == s && !n.bound)
                        && seeks[ni].is_none()
                    {
                        let mut os = Vec::new();
                        other.slots(&mut os);
                        if os
                            .iter()
                            .all(|s| !nodes.iter().any(|n| n.slot == *s && !n.bound))
                            && os.iter().all(|s| !rels.iter().any(|r| r.slot == Some(*s)))
                        {
                            seeks[ni] = Some(pi);
                        }
                    }
                }
            }
        }
        let seek_key = |pi: usize, slot: Slot| -> Option<Expr> {
            if let ExprKind::Cmp(CmpOp::Eq, l, r) = &preds[pi].expr.kind {
                for (side, other) in [(l, r), (r, l)] {
                    if let ExprKind::Prop(base, key) = &side.kind
                        && &*key.name == "id"
                        && base.kind == ExprKind::Slot(slot)
                    {
                        return Some((**other).clone());
                    }
                }
            }
            None
        };

        let mut visited: Vec<bool> = nodes.iter().map(|n| n.bound).collect();
        let mut done = vec![false; rels.len()];
        let mut emitted = vec![false; preds.len()];
        let mut bound_rels: Vec<(Slot, RelKinds, bool)> = Vec::new();

        // Label checks on nodes bound earlier.
        for n in nodes.iter().filter(|n| n.bound) {
            if n.kinds != n.known && n.kinds != Kinds::ANY {
                let e = Expr {
                    kind: ExprKind::Slot(n.slot),
                    pos: n.pos,
                };
                self.ops.push(Op::Filter(Expr {
                    kind: ExprKind::HasLabels(Box::new(e), n.kinds),
                    pos: n.pos,
                }));
            }
        }
        let emit_ready =
            |this: &mut Self, visited: &[bool], done: &[bool], emitted: &mut Vec<bool>| {
                for (i, p) in preds.iter().enumerate() {
                    let ok = p.deps.iter().all(|&d| {
                        if d < nodes.len() {
                            visited[d]
                        } else {
                            done[d - nodes.len()]
                        }
                    });
                    if !emitted[i] && ok {
                        emitted[i] = true;
                        this.ops.push(Op::Filter(p.expr.clone()));
                    }
                }
            };
        emit_ready(self, &visited, &done, &mut emitted);

        loop {
            if let Some((i, from)) = self.next_rel(nodes, rels, &visited, &done) {
                let r = &rels[i];
                let to = if from == r.a { r.b } else { r.a };
                let into = visited[to];
                let dir = if from == r.a { r.dir } else { r.dir.reverse() };
                let (unique, unique_lists) = {
                    let mut u = Vec::new();
                    let mut ul = Vec::new();
                    for &(s, t, list) in &bound_rels {
                        if t.overlaps(r.types) {
                            if list { ul.push(s) } else { u.push(s) }
                        }
                    }
                    (u, ul)
                };
                let step = Expand {
                    from: nodes[from].slot,
                    to: nodes[to].slot,
                    rel: r.slot,
                    dir,
                    types: r.types,
                    to_kinds: if into { Kinds::ANY } else { nodes[to].kinds },
                    into,
                    unique,
                    unique_lists,
                };
                match r.var {
                    None => self.ops.push(Op::Expand(Box::new(step))),
                    Some((min, max, capped)) => self.ops.push(Op::VarExpand(Box::new(VarExpand {
                        step,
                        min,
                        max,
                        capped,
                        reverse: from != r.a,
                    }))),
                }
                if let Some(s) = r.slot {
                    bound_rels.push((s, r.types, r.var.is_some()));
                }
                visited[to] = true;
                done[i] = true;
                emit_ready(self, &visited, &done, &mut emitted);
                continue;
            }
            // Start a new component at its cheapest node.
            let mut best: Option<(usize, f64)> = None;
            for n in 0..nodes.len() {
                if visited[n] {
                    continue;
                }
                let c = self.start_cost(nodes, rels, &preds, &seeks, n, &visited);
                if best.is_none_or(|b| c < b.1) {
                    best = Some((n, c));
                }
            }
            let Some((n, _)) = best else { break };
            let node = &nodes[n];
            match seeks[n].and_then(|pi| seek_key(pi, node.slot).map(|k| (pi, k))) {
                Some((pi, key)) => {
                    emitted[pi] = true;
                    self.ops.push(Op::Seek {
                        slot: node.slot,
                        kinds: node.kinds,
                        key,
                    });
                }
                None => self.ops.push(Op::Scan {
                    slot: node.slot,
                    kinds: node.kinds,
                }),
            }
            visited[n] = true;
            emit_ready(self, &visited, &done, &mut emitted);
        }
        Ok(())
    }
}
