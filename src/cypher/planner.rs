//! The planner: lowers open-cypher's spanned AST into a [`Plan`].
//!
//! - Variables get row slots; expressions are typed ([`Expr`]) with property names resolved
//!   to graph columns and `prop = 'constant'` on interned or enumerated properties compiled
//!   to integer comparisons ([`ExprKind::PropIs`]).
//! - Each MATCH is ordered by a small cost model: per connected part of the pattern it starts
//!   from the cheapest node (already bound < id-index seek < label scan with filters), then
//!   follows relationships greedily (checks against bound nodes first, then the lowest
//!   fan-out). Expanding into a large node set is charged extra because those visits are
//!   random memory accesses while a label scan is sequential. Every WHERE conjunct becomes a
//!   filter right after the last variable it needs is bound.
//! - Relationships within one MATCH are distinct (openCypher's relationship isomorphism);
//!   variable-length paths never reuse a relationship.
//! - Projections with aggregates become an aggregation sink grouped by the non-aggregated
//!   items; ORDER BY becomes a sort sink (keeping only the top rows when a LIMIT follows);
//!   SKIP and LIMIT are streaming and stop the upstream early.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use open_cypher::Span;
use open_cypher::ast::{self, visit::Visitor};

use super::dialect::OffsetMap;
use super::error::{CypherError, Limit, Position};
use super::plan::*;
use super::{PlanOptions, QueryLimits};
use crate::graph::OrgGraph;
use crate::model::{FeedbackType, ValidationStatus};

/// What a variable holds.
#[derive(Debug, Clone)]
enum VarKind {
    /// A node with these possible labels.
    Node(Kinds),
    /// A relationship.
    Rel,
    /// A list of relationships (variable-length).
    Rels,
    /// Any value (may still be a node at run time).
    Value,
    /// A path, built from other slots when read.
    Path(Arc<PathSpec>),
}

#[derive(Debug, Clone)]
struct Var {
    slot: Slot,
    kind: VarKind,
}

/// Variables visible at a point of the query, in order of introduction.
#[derive(Debug, Clone, Default)]
struct Scope {
    vars: Vec<(String, Var)>,
}

impl Scope {
    fn get(&self, name: &str) -> Option<&Var> {
        self.vars
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
    }

    fn set(&mut self, name: &str, var: Var) {
        match self.vars.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = var,
            None => self.vars.push((name.to_owned(), var)),
        }
    }
}

/// How aggregates are treated while lowering an expression.
enum AggMode {
    /// Not allowed here (the string says where we are).
    Forbid(&'static str),
    /// Lowering a projection item of an aggregating WITH/RETURN.
    Collect(Box<Collecting>),
}

struct Collecting {
    /// Grouping keys: canonical text of the key expression -> key slot.
    keys: Vec<(String, Slot, VarKind)>,
    /// Aggregates found so far: canonical text -> aggregate.
    aggs: Vec<(String, Agg)>,
    /// The scope before the projection (aggregate arguments are evaluated there).
    pre: Scope,
}

/// Graph sizes for the cost model (all O(1) to get).
struct Stats {
    feedback: f64,
    adapters: f64,
    feedback_for: f64,
    derived_from: f64,
}

/// Above this many nodes a kind no longer fits in cache: visiting it by expansion costs more.
const RANDOM_ACCESS_NODES: f64 = 65_536.0;
const RANDOM_ACCESS_PENALTY: f64 = 4.0;

struct PNode {
    name: Option<String>,
    slot: Slot,
    /// Labels the pattern asks for (combined over every mention).
    kinds: Kinds,
    /// Bound by an earlier clause.
    bound: bool,
    /// What is known about a bound node's labels.
    known: Kinds,
    pos: usize,
}

struct PRel {
    slot: Option<Slot>,
    named: bool,
    a: usize,
    b: usize,
    /// Direction from `a` to `b`.
    dir: Dir,
    types: RelKinds,
    /// (min, max, capped) for variable length.
    var: Option<(u32, u32, bool)>,
    props: Option<ast::Expr>,
    inline_where: Option<ast::Expr>,
}

struct Pred {
    expr: Expr,
    /// Pattern elements (node index, or nodes.len() + rel index) it needs.
    deps: Vec<usize>,
    selectivity: f64,
}

/// Plans a parsed program.
pub(crate) fn plan(
    program: &ast::Program,
    text: &str,
    map: &OffsetMap,
    params: &serde_json::Map<String, serde_json::Value>,
    graph: &OrgGraph,
    limits: &QueryLimits,
    options: &PlanOptions,
) -> Result<Plan, CypherError> {
    let mut deps = PlanDeps::default();
    let mut read = |k: StatKey| {
        let v = k.read(graph);
        deps.stats.push((k, stat_bucket(v)));
        v as f64
    };
    let edges = read(StatKey::Edges);
    let adapters = read(StatKey::Adapters);
    let feedback = read(StatKey::Feedback);
    let derived_from = (adapters - 1.0).max(0.0).min(edges);
    let stats = Stats {
        feedback,
        adapters,
        feedback_for: (edges - derived_from).max(0.0),
        derived_from,
    };
    let mut p = Planner {
        text,
        map,
        params,
        graph,
        limits,
        options: *options,
        stats,
        deps: RefCell::new(deps),
        slot_names: Vec::new(),
        consts: Vec::new(),
        states: 0,
        segments: Vec::new(),
        ops: Vec::new(),
        columns: Vec::new(),
    };
    let mut depth = Depth::default();
    depth.visit_program(program);
    if let Some(span) = depth.too_deep {
        return Err(CypherError::unsupported(
            format!("expressions nested more than {MAX_EXPR_DEPTH} levels deep"),
            map.to_original(span.start),
        ));
    }
    p.query(program)?;
    if options.pair_count {
        super::exec::pair_group::rewrite(&mut p.segments);
    }
    Ok(Plan {
        segments: p.segments,
        columns: p.columns,
        slots: p.slot_names.len(),
        consts: p.consts,
        states: p.states,
        slot_names: p.slot_names,
        deps: p.deps.into_inner(),
    })
}

struct Planner<'q> {
    text: &'q str,
    map: &'q OffsetMap,
    params: &'q serde_json::Map<String, serde_json::Value>,
    graph: &'q OrgGraph,
    limits: &'q QueryLimits,
    options: PlanOptions,
    stats: Stats,
    /// What the plan takes from the graph (interned strings, statistics).
    deps: RefCell<PlanDeps>,
    slot_names: Vec<String>,
    consts: Vec<Const>,
    states: usize,
    segments: Vec<Segment>,
    ops: Vec<Op>,
    columns: Vec<String>,
}

fn ident(n: &ast::Name) -> &str {
    &n.kind.text
}

/// Finds aggregate calls without descending into nested queries.
#[derive(Default)]
struct FindAgg {
    found: bool,
}

impl<'ast> Visitor<'ast> for FindAgg {
    fn visit_expr(&mut self, node: &'ast ast::Expr) {
        if agg_func(node).is_some() {
            self.found = true;
            return;
        }
        if matches!(node.kind, ast::ExprKind::Subquery(_)) {
            return;
        }
        ast::visit::walk_expr(self, node);
    }
}

/// Hard ceiling on variable-length paths, whatever `QueryLimits::max_depth` says: the
/// traversal recurses once per relationship.
pub const MAX_DEPTH_CEILING: u32 = 1000;

/// Deepest nesting of expressions the planner accepts: lowering and evaluation recurse
/// once per level, and a stack overflow would take the whole process down.
pub const MAX_EXPR_DEPTH: usize = 200;

/// Finds the first expression nested deeper than [`MAX_EXPR_DEPTH`].
#[derive(Default)]
struct Depth {
    depth: usize,
    too_deep: Option<Span>,
}

impl<'ast> Visitor<'ast> for Depth {
    fn visit_expr(&mut self, node: &'ast ast::Expr) {
        if self.too_deep.is_some() {
            return;
        }
        if self.depth >= MAX_EXPR_DEPTH {
            self.too_deep = Some(node.span);
            return;
        }
        self.depth += 1;
        ast::visit::walk_expr(self, node);
        self.depth -= 1;
    }
}

fn contains_agg(e: &ast::Expr) -> bool {
    let mut f = FindAgg::default();
    f.visit_expr(e);
    f.found
}

/// The aggregate function called by `e`, if it is one.
fn agg_func(e: &ast::Expr) -> Option<AggFunc> {
    let ast::ExprKind::Function(f) = &e.kind else {
        return None;
    };
    if f.name.parts.len() != 1 {
        return None;
    }
    let name = f.name.parts[0].kind.text.to_ascii_lowercase();
    Some(match name.as_str() {
        "count" => AggFunc::Count,
        "sum" => AggFunc::Sum,
        "avg" => AggFunc::Avg,
        "min" => AggFunc::Min,
        "max" => AggFunc::Max,
        "collect" => AggFunc::Collect,
        _ => return None,
    })
}

/// A canonical spelling of an expression, used to recognise an expression written twice
/// (a grouping key inside an aggregating item, an item repeated in ORDER BY). Forms it does
/// not know get a unique spelling, so they only ever match themselves.
fn canon(e: &ast::Expr) -> String {
    let mut s = String::new();
    write_canon(e, &mut s);
    s
}

fn write_canon(e: &ast::Expr, out: &mut String) {
    use ast::ExprKind as K;
    match &e.kind {
        K::Literal(l) => match &l.kind {
            ast::LiteralKind::Null => out.push_str("null"),
            ast::LiteralKind::Boolean(b) => out.push_str(if *b { "true" } else { "false" }),
            ast::LiteralKind::Integer(i) => out.push_str(&i.text),
            ast::LiteralKind::Float(f) => out.push_str(&f.text),
            ast::LiteralKind::String(s) => out.push_str(&format!("{:?}", s.value)),
            _ => out.push_str(&format!("#{}", e.span)),
        },
        K::Variable(n) => out.push_str(ident(n)),
        K::Parameter(p) => match &p.name {
            ast::ParameterName::Named(n) | ast::ParameterName::Positional(n) => {
                out.push('$');
                out.push_str(n);
            }
            _ => out.push_str(&format!("#{}", e.span)),
        },
        K::Wildcard => out.push('*'),
        K::List(items) => {
            out.push('[');
            for (i, x) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canon(x, out);
            }
            out.push(']');
        }
        K::Unary { operator, operand } => {
            out.push_str(&format!("{:?}(", operator.kind));
            write_canon(operand, out);
            out.push(')');
        }
        K::Binary {
            left,
            operator,
            right,
        } => {
            out.push('(');
            write_canon(left, out);
            out.push_str(&format!(" {:?} ", operator.kind));
            write_canon(right, out);
            out.push(')');
        }
        K::Is {
            expression,
            negated,
            predicate: ast::IsPredicate::Null,
        } => {
            out.push('(');
            write_canon(expression, out);
            out.push_str(if *negated {
                " IS NOT NULL)"
            } else {
                " IS NULL)"
            });
        }
        K::Property { expression, key } => {
            write_canon(expression, out);
            out.push('.');
            out.push_str(ident(key));
        }
        K::Index { expression, index } => {
            write_canon(expression, out);
            out.push('[');
            write_canon(index, out);
            out.push(']');
        }
        K::Function(f) => {
            let name: Vec<String> = f
                .name
                .parts
                .iter()
                .map(|p| p.kind.text.to_ascii_lowercase())
                .collect();
            out.push_str(&name.join("."));
            out.push('(');
            if matches!(
                f.quantifier.as_ref().map(|q| q.kind),
                Some(ast::SetQuantifier::Distinct)
            ) {
                out.push_str("DISTINCT ");
            }
            for (i, x) in f.arguments.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canon(x, out);
            }
            out.push(')');
        }
        K::Case(c) => {
            out.push_str("CASE ");
            if let Some(o) = &c.operand {
                write_canon(o, out);
            }
            for alt in &c.alternatives {
                out.push_str(" WHEN ");
                for (i, w) in alt.when.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_canon(w, out);
                }
                out.push_str(" THEN ");
                write_canon(&alt.then, out);
            }
            if let Some(d) = &c.else_expression {
                out.push_str(" ELSE ");
                write_canon(d, out);
            }
            out.push_str(" END");
        }
        K::Parenthesized(inner) => write_canon(inner, out),
        _ => out.push_str(&format!("#{}", e.span)),
    }
}

fn parse_int(lit: &ast::IntegerLiteral) -> Option<u64> {
    let digits: String = lit.text.chars().filter(|c| *c != '_').collect();
    match lit.radix {
        ast::IntegerRadix::Decimal => digits.parse().ok(),
        ast::IntegerRadix::Hexadecimal => u64::from_str_radix(&digits[2..], 16).ok(),
        ast::IntegerRadix::Octal => u64::from_str_radix(&digits[2..], 8).ok(),
        _ => None,
    }
}

fn parse_float(lit: &ast::FloatLiteral) -> Option<f64> {
    let digits: String = lit
        .text
        .chars()
        .filter(|c| *c != '_' && !matches!(c, 'f' | 'F' | 'd' | 'D'))
        .collect();
    digits.parse().ok()
}

fn clause_name(c: &ast::ClauseKind) -> &'static str {
    use ast::ClauseKind as C;
    match c {
        C::Use(_) => "USE",
        C::Match(_) => "MATCH",
        C::Unwind(_) => "UNWIND",
        C::Let(_) => "LET",
        C::Create(_) => "CREATE",
        C::Insert(_) => "INSERT",
        C::Merge(_) => "MERGE",
        C::Delete(_) => "DELETE",
        C::Set(_) => "SET",
        C::Remove(_) => "REMOVE",
        C::Foreach(_) => "FOREACH",
        C::LoadCsv(_) => "LOAD CSV",
        C::Call(_) => "CALL",
        C::With(_) => "WITH",
        C::Return(_) => "RETURN",
        C::Select(_) => "SELECT",
        C::Next(_) => "NEXT",
        C::Filter(_) => "FILTER",
        C::Finish => "FINISH",
        _ => "this clause",
    }
}

fn is_write(c: &ast::ClauseKind) -> bool {
    use ast::ClauseKind as C;
    matches!(
        c,
        C::Create(_)
            | C::Insert(_)
            | C::Merge(_)
            | C::Delete(_)
            | C::Set(_)
            | C::Remove(_)
            | C::Foreach(_)
    )
}

/// Label expression -> allowed kinds.
fn label_kinds(le: &ast::LabelExpression) -> Kinds {
    use ast::LabelExpressionKind as L;
    match &le.kind {
        L::Name(n) => Kinds::of_label(ident(n)),
        L::Wildcard => Kinds::ANY,
        L::Not(inner) => {
            let k = label_kinds(inner);
            Kinds {
                feedback: !k.feedback,
                adapter: !k.adapter,
            }
        }
        L::And(parts) => parts.iter().fold(Kinds::ANY, |k, p| k.and(label_kinds(p))),
        L::Or(parts) => parts.iter().fold(Kinds::NONE, |k, p| k.or(label_kinds(p))),
        L::Parenthesized(inner) => label_kinds(inner),
        _ => Kinds::NONE,
    }
}

/// Type expression -> allowed relationship kinds.
fn type_kinds(le: &ast::LabelExpression) -> RelKinds {
    use ast::LabelExpressionKind as L;
    match &le.kind {
        L::Name(n) => RelKinds::of_type(ident(n)),
        L::Wildcard => RelKinds::ANY,
        L::Not(inner) => {
            let k = type_kinds(inner);
            RelKinds {
                feedback_for: !k.feedback_for,
                derived_from: !k.derived_from,
            }
        }
        L::And(parts) => parts.iter().fold(RelKinds::ANY, |k, p| {
            let q = type_kinds(p);
            RelKinds {
                feedback_for: k.feedback_for && q.feedback_for,
                derived_from: k.derived_from && q.derived_from,
            }
        }),
        L::Or(parts) => parts
            .iter()
            .fold(RelKinds::NONE, |k, p| k.or(type_kinds(p))),
        L::Parenthesized(inner) => type_kinds(inner),
        _ => RelKinds::NONE,
    }
}

impl<'q> Planner<'q> {
    fn pos(&self, span: Span) -> usize {
        self.map.to_original(span.start)
    }

    fn new_slot(&mut self, name: &str) -> Slot {
        self.slot_names.push(name.to_owned());
        self.slot_names.len() - 1
    }

    fn konst(&mut self, c: Const, pos: usize) -> Expr {
        let i = match self.consts.iter().position(|x| *x == c) {
            Some(i) => i,
            None => {
                self.consts.push(c);
                self.consts.len() - 1
            }
        };
        Expr {
            kind: ExprKind::Const(i),
            pos,
        }
    }

    fn const_of(&self, e: &Expr) -> Option<&Const> {
        match e.kind {
            ExprKind::Const(i) => self.consts.get(i),
            _ => None,
        }
    }

    fn span_text(&self, span: Span) -> String {
        span.text(self.text).unwrap_or("").to_owned()
    }

    fn unsupported(&self, what: &str, span: Span) -> CypherError {
        CypherError::unsupported(what, self.pos(span))
    }

    fn semantic(&self, what: impl Into<String>, span: Span) -> CypherError {
        CypherError::semantic(what, self.pos(span))
    }

    // ----- query and clauses -------------------------------------------------------------

    fn query(&mut self, program: &ast::Program) -> Result<(), CypherError> {
        let Some(stmt) = program.statements.first() else {
            return Err(CypherError::semantic("the query is empty", 0));
        };
        let qs = match &stmt.kind {
            ast::StatementKind::Query(qs) => qs,
            _ => return Err(self.semantic("not a query", stmt.span)),
        };
        if let Some(mode) = &qs.mode {
            return Err(self.unsupported("EXPLAIN / PROFILE", mode.span));
        }
        let rq = match &qs.query.kind {
            ast::QueryKind::Regular(rq) => rq,
            _ => return Err(self.semantic("not a query", qs.query.span)),
        };
        let clauses = &rq.head.kind.clauses;
        // Refuse writes first, wherever they are.
        let all = clauses
            .iter()
            .chain(rq.unions.iter().flat_map(|u| u.query.kind.clauses.iter()));
        for c in all {
            if is_write(&c.kind) {
                return Err(CypherError::WriteClause {
                    clause: clause_name(&c.kind).to_owned(),
                    position: Some(Position::at(self.pos(c.span))),
                });
            }
        }
        if let Some(u) = rq.unions.first() {
            return Err(self.unsupported("UNION", u.operator.span));
        }
        let mut scope = Scope::default();
        for (i, clause) in clauses.iter().enumerate() {
            let last = i + 1 == clauses.len();
            match &clause.kind {
                ast::ClauseKind::Match(m) => self.match_clause(m, &mut scope)?,
                ast::ClauseKind::Unwind(u) => {
                    let list = self.lower(&u.expression, &scope, &mut AggMode::Forbid("UNWIND"))?;
                    let name = ident(&u.variable);
                    let slot = self.new_slot(name);
                    self.ops.push(Op::Unwind { list, slot });
                    scope.set(
                        name,
                        Var {
                            slot,
                            kind: VarKind::Value,
                        },
                    );
                }
                ast::ClauseKind::With(w) => {
                    scope =
                        self.projection(&w.projection, w.where_clause.as_ref(), &scope, false)?;
                }
                ast::ClauseKind::Return(r) => {
                    if !last {
                        return Err(
                            self.semantic("RETURN must be the last clause", clauses[i + 1].span)
                        );
                    }
                    self.projection(&r.projection, None, &scope, true)?;
                    return Ok(());
                }
                ast::ClauseKind::Error(_) => {
                    return Err(CypherError::Syntax {
                        message: "malformed clause".into(),
                        line: 0,
                        column: 0,
                        offset: self.pos(clause.span),
                    });
                }
                other => {
                    return Err(self
                        .unsupported(&format!("the {} clause", clause_name(other)), clause.span));
                }
            }
        }
        Err(CypherError::semantic(
            "a query must end with RETURN",
            self.map.to_original(self.text.len()),
        ))
    }

    // ----- MATCH -------------------------------------------------------------------------

    fn match_clause(&mut self, m: &ast::MatchClause, scope: &mut Scope) -> Result<(), CypherError> {
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

    fn pattern_node(
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

    fn pattern_rel(
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
    fn prop_map_preds(
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
    fn selectivity(&self, expr: &Expr) -> f64 {
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
    fn fanout(&self, nodes: &[PNode], r: &PRel, from: usize) -> f64 {
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

    fn penalty(&self, nodes: &[PNode], to: usize) -> f64 {
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

    fn scan_size(&self, k: Kinds) -> f64 {
        let s = &self.stats;
        (if k.feedback { s.feedback } else { 0.0 }) + (if k.adapter { s.adapters } else { 0.0 })
    }

    /// The next relationship to follow from the visited nodes: closing a cycle (both ends
    /// bound) first, then the lowest fan-out.
    fn next_rel(
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
    fn start_cost(
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
    fn order_pattern(
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

    // ----- WITH / RETURN -----------------------------------------------------------------

    /// Plans a projection; returns the scope after it.
    fn projection(
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
    fn local_var(&mut self, name: &ast::Name, scope: &Scope) -> (Slot, Scope) {
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

    fn state(&mut self) -> usize {
        self.states += 1;
        self.states - 1
    }

    fn finish_segment(&mut self, mut sink: Sink) {
        let mut ops = std::mem::take(&mut self.ops);
        self.push_down_counts(&mut ops, &mut sink);
        // The first segment (nothing bound before it) may run as a columnar group scan.
        if self.options.group_scan
            && self.segments.is_empty()
            && let Some(gs) = super::group_scan::compile(&ops, &sink, &self.consts)
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
    fn push_down_counts(&mut self, ops: &mut [Op], sink: &mut Sink) {
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

    // ----- expressions -------------------------------------------------------------------

    fn lower_var(&self, var: &Var, pos: usize) -> Expr {
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
    fn prop_test(&self, kinds: Option<Kinds>, key: &PropKey, c: &Const) -> Option<PropTest> {
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
    fn compare(
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

    fn node_kinds(&self, e: &ast::Expr, scope: &Scope) -> Option<Kinds> {
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
    fn lower(
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
    fn lower_collected(
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
    fn lower_leaf(
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
    fn lower_collection(
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
    fn lower_unary(
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
    fn lower_binary(
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
    fn lower_access(
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
    fn lower_function(
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
    fn lower_case(
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
    fn lower_iteration(
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
    fn node_kinds_prop(&self, e: &ast::Expr, scope: &Scope) -> Option<Kinds> {
        match &e.kind {
            ast::ExprKind::Property { expression, .. } => self.node_kinds(expression, scope),
            ast::ExprKind::Parenthesized(inner) => self.node_kinds_prop(inner, scope),
            _ => None,
        }
    }

    fn aggregate(&mut self, e: &ast::Expr, func: AggFunc, pre: &Scope) -> Result<Agg, CypherError> {
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

/// Flattens `a AND b AND ...` into conjuncts.
fn split_and<'e>(e: &'e ast::Expr, out: &mut Vec<&'e ast::Expr>) {
    match &e.kind {
        ast::ExprKind::Binary {
            left,
            operator,
            right,
        } if operator.kind == ast::BinaryOperator::And => {
            split_and(left, out);
            split_and(right, out);
        }
        ast::ExprKind::Parenthesized(inner) => split_and(inner, out),
        _ => out.push(e),
    }
}
