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
//!
//! This file holds the planner's state, its scopes and the clause loop; MATCH patterns and
//! the cost model are in `pattern.rs`, projections in `project.rs`, expressions in
//! `lower.rs`.

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

mod lower;
mod pattern;
mod project;

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
