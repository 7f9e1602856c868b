//! The logical plan: typed operators over numbered row slots, and typed expressions.
//!
//! A plan is a list of [`Segment`]s. Each segment streams rows through its operators
//! (scans, seeks, expansions, filters, projections, ...) into a [`Sink`]: an aggregation or a
//! sort (which materialize their rows and feed the next segment) or the final output. Every
//! variable of the query owns a slot in the row; nodes and relationships are bound as indices
//! and properties are read from the graph's columns only when an expression asks.
//!
//! Plans are built by the planner and run by the executor; they contain no query
//! text, only byte offsets into it for error messages.

use std::fmt::{self, Write as _};
use std::sync::Arc;

use crate::graph::{EdgeKind, NodeRef, Sym};
use crate::model::{FeedbackType, ValidationStatus};

pub use super::group_scan::GroupScan;

/// Index of a value in a row.
pub type Slot = usize;

/// Which node labels a node may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kinds {
    /// May be a `Feedback` node.
    pub feedback: bool,
    /// May be an `Adapter` node.
    pub adapter: bool,
}

impl Kinds {
    /// Any node.
    pub const ANY: Kinds = Kinds {
        feedback: true,
        adapter: true,
    };
    /// No node (an unknown or contradictory label).
    pub const NONE: Kinds = Kinds {
        feedback: false,
        adapter: false,
    };
    /// `:Feedback`.
    pub const FEEDBACK: Kinds = Kinds {
        feedback: true,
        adapter: false,
    };
    /// `:Adapter`.
    pub const ADAPTER: Kinds = Kinds {
        feedback: false,
        adapter: true,
    };

    /// Does `n` have one of the allowed labels?
    #[inline]
    pub fn allows(self, n: NodeRef) -> bool {
        match n {
            NodeRef::Feedback(_) => self.feedback,
            NodeRef::Adapter(_) => self.adapter,
        }
    }

    /// Both constraints at once.
    pub fn and(self, o: Kinds) -> Kinds {
        Kinds {
            feedback: self.feedback && o.feedback,
            adapter: self.adapter && o.adapter,
        }
    }

    /// Either constraint.
    pub fn or(self, o: Kinds) -> Kinds {
        Kinds {
            feedback: self.feedback || o.feedback,
            adapter: self.adapter || o.adapter,
        }
    }

    /// The kinds of a label name.
    pub fn of_label(name: &str) -> Kinds {
        match name {
            "Feedback" => Kinds::FEEDBACK,
            "Adapter" => Kinds::ADAPTER,
            _ => Kinds::NONE,
        }
    }
}

/// Which relationship types a pattern accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelKinds {
    /// `FEEDBACK_FOR`.
    pub feedback_for: bool,
    /// `DERIVED_FROM`.
    pub derived_from: bool,
}

impl RelKinds {
    /// Any type.
    pub const ANY: RelKinds = RelKinds {
        feedback_for: true,
        derived_from: true,
    };
    /// No type.
    pub const NONE: RelKinds = RelKinds {
        feedback_for: false,
        derived_from: false,
    };

    /// Does the pattern accept an edge of kind `k`?
    #[inline]
    pub fn allows(self, k: EdgeKind) -> bool {
        match k {
            EdgeKind::FeedbackFor => self.feedback_for,
            EdgeKind::DerivedFrom => self.derived_from,
        }
    }

    /// Could the two patterns match the same edge?
    pub fn overlaps(self, o: RelKinds) -> bool {
        (self.feedback_for && o.feedback_for) || (self.derived_from && o.derived_from)
    }

    /// The kinds of a type name.
    pub fn of_type(name: &str) -> RelKinds {
        match name {
            "FEEDBACK_FOR" => RelKinds {
                feedback_for: true,
                derived_from: false,
            },
            "DERIVED_FROM" => RelKinds {
                feedback_for: false,
                derived_from: true,
            },
            _ => RelKinds::NONE,
        }
    }

    /// Either.
    pub fn or(self, o: RelKinds) -> RelKinds {
        RelKinds {
            feedback_for: self.feedback_for || o.feedback_for,
            derived_from: self.derived_from || o.derived_from,
        }
    }
}

/// Direction of an expansion, seen from the node it starts at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Follow outgoing edges.
    Out,
    /// Follow incoming edges.
    In,
    /// Either.
    Both,
}

impl Dir {
    /// The same edges seen from the other end.
    pub fn reverse(self) -> Dir {
        match self {
            Dir::Out => Dir::In,
            Dir::In => Dir::Out,
            Dir::Both => Dir::Both,
        }
    }
}

/// Long text fields of a feedback item, loaded through the `TextSource` on demand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextField {
    /// The question.
    Question,
    /// The answer.
    Answer,
    /// The correction.
    Correction,
    /// The comment.
    Comment,
}

impl TextField {
    /// All text fields, in output order.
    pub const ALL: [TextField; 4] = [
        TextField::Question,
        TextField::Answer,
        TextField::Correction,
        TextField::Comment,
    ];

    /// The field name.
    pub fn name(self) -> &'static str {
        match self {
            TextField::Question => "question",
            TextField::Answer => "answer",
            TextField::Correction => "correction",
            TextField::Comment => "comment",
        }
    }
}

/// JSON-valued fields of a feedback item, loaded through the `TextSource` on demand and
/// read as Cypher maps and lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonField {
    /// The item's metadata object (a map; `{}` when it has none).
    Metadata,
    /// The rules that decided its status (a list of maps `{rule, status, message}`).
    ValidationReasons,
    /// Where the PII detectors fired on ingest (a list of maps `{detector, field, path,
    /// in_key, start, end, action}`).
    Pii,
    /// The feedback kind (`thumbs`, `rating`, `text`, `correction`, `label`).
    Kind,
    /// The label of a `label` item (null otherwise).
    Label,
    /// The model provider, if the client gave one.
    Provider,
    /// The score config the item was checked against, if any.
    ScoreConfig,
}

impl JsonField {
    /// The field name.
    pub fn name(self) -> &'static str {
        match self {
            JsonField::Metadata => "metadata",
            JsonField::ValidationReasons => "validation_reasons",
            JsonField::Pii => "pii",
            JsonField::Kind => "kind",
            JsonField::Label => "label",
            JsonField::Provider => "provider",
            JsonField::ScoreConfig => "score_config",
        }
    }
}

/// A property of a Feedback node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum FProp {
    Id,
    OrgId,
    Type,
    Status,
    Used,
    Batch,
    CreatedAt,
    UpdatedAt,
    Version,
    ModelVersion,
    AdapterId,
    AdapterVersion,
    UserId,
    SessionId,
    InteractionId,
    Score,
    Text(TextField),
    Json(JsonField),
}

impl FProp {
    /// Every Feedback property with its name, in output order: the fields of the record as
    /// `GET /feedback/{id}` shows it.
    pub const ALL: [(&'static str, FProp); 27] = [
        ("id", FProp::Id),
        ("org_id", FProp::OrgId),
        ("type", FProp::Type),
        ("validation_status", FProp::Status),
        ("used_for_training", FProp::Used),
        ("training_batch_id", FProp::Batch),
        ("created_at", FProp::CreatedAt),
        ("updated_at", FProp::UpdatedAt),
        ("version", FProp::Version),
        ("model_version", FProp::ModelVersion),
        ("adapter_id", FProp::AdapterId),
        ("adapter_version", FProp::AdapterVersion),
        ("user_id", FProp::UserId),
        ("session_id", FProp::SessionId),
        ("interaction_id", FProp::InteractionId),
        ("score", FProp::Score),
        ("question", FProp::Text(TextField::Question)),
        ("answer", FProp::Text(TextField::Answer)),
        ("correction", FProp::Text(TextField::Correction)),
        ("comment", FProp::Text(TextField::Comment)),
        (
            "validation_reasons",
            FProp::Json(JsonField::ValidationReasons),
        ),
        ("metadata", FProp::Json(JsonField::Metadata)),
        ("pii", FProp::Json(JsonField::Pii)),
        ("kind", FProp::Json(JsonField::Kind)),
        ("label", FProp::Json(JsonField::Label)),
        ("provider", FProp::Json(JsonField::Provider)),
        ("score_config", FProp::Json(JsonField::ScoreConfig)),
    ];

    /// True for the properties the graph holds (the others are read from the store).
    pub fn in_graph(self) -> bool {
        !matches!(self, FProp::Text(_) | FProp::Json(_))
    }
}

/// A property of an Adapter node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum AProp {
    Id,
    OrgId,
    Version,
    BaseModel,
    DerivedFrom,
    CreatedAt,
    Source,
    RecordVersion,
    Metadata,
}

impl AProp {
    /// Every Adapter property with its name, in output order: the fields of the record as
    /// `GET /adapters/{id}` shows it (besides its computed `feedback` and `children`).
    pub const ALL: [(&'static str, AProp); 9] = [
        ("id", AProp::Id),
        ("org_id", AProp::OrgId),
        ("version", AProp::Version),
        ("base_model", AProp::BaseModel),
        ("derived_from", AProp::DerivedFrom),
        ("created_at", AProp::CreatedAt),
        ("source", AProp::Source),
        ("record_version", AProp::RecordVersion),
        ("metadata", AProp::Metadata),
    ];
}

/// A property of a relationship.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum RProp {
    CreatedAt,
    Source,
    Metadata,
}

impl RProp {
    /// Every relationship property with its name. `metadata` is a FEEDBACK_FOR edge's (as
    /// the link endpoint shows it); DERIVED_FROM edges have none.
    pub const ALL: [(&'static str, RProp); 3] = [
        ("created_at", RProp::CreatedAt),
        ("source", RProp::Source),
        ("metadata", RProp::Metadata),
    ];
}

/// A property name resolved once for every kind of element it may be read from.
#[derive(Debug, Clone, PartialEq)]
pub struct PropKey {
    /// The name (for maps).
    pub name: Arc<str>,
    /// On Feedback nodes.
    pub f: Option<FProp>,
    /// On Adapter nodes.
    pub a: Option<AProp>,
    /// On relationships.
    pub r: Option<RProp>,
}

impl PropKey {
    /// Resolves `name`.
    pub fn new(name: &str) -> Self {
        PropKey {
            name: Arc::from(name),
            f: FProp::ALL.iter().find(|(n, _)| *n == name).map(|p| p.1),
            a: AProp::ALL.iter().find(|(n, _)| *n == name).map(|p| p.1),
            r: RProp::ALL.iter().find(|(n, _)| *n == name).map(|p| p.1),
        }
    }
}

/// A constant known at plan time: a literal or a parameter's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Const {
    /// null.
    Null,
    /// Boolean.
    Bool(bool),
    /// Integer.
    Int(i64),
    /// Float.
    Float(f64),
    /// String.
    Str(Box<str>),
    /// List.
    List(Vec<Const>),
    /// Map (sorted by key).
    Map(Vec<(Box<str>, Const)>),
}

impl Const {
    /// Converts a JSON parameter value.
    pub fn from_json(v: &serde_json::Value) -> Const {
        match v {
            serde_json::Value::Null => Const::Null,
            serde_json::Value::Bool(b) => Const::Bool(*b),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => Const::Int(i),
                None => Const::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            serde_json::Value::String(s) => Const::Str(s.as_str().into()),
            serde_json::Value::Array(a) => Const::List(a.iter().map(Const::from_json).collect()),
            serde_json::Value::Object(m) => {
                let mut entries: Vec<(Box<str>, Const)> = m
                    .iter()
                    .map(|(k, v)| (k.as_str().into(), Const::from_json(v)))
                    .collect();
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                Const::Map(entries)
            }
        }
    }
}

/// Comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// Arithmetic operators (`Concat` is `||`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum ArithOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
    Concat,
}

/// String predicates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum StrOp {
    StartsWith,
    EndsWith,
    Contains,
}

/// Scalar functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Func {
    Id,
    Labels,
    Type,
    Coalesce,
    ToLower,
    ToUpper,
    Size,
    Length,
    Nodes,
    Relationships,
    StartNode,
    EndNode,
    Properties,
    Keys,
    Head,
    Last,
    Tail,
    ToString,
    ToInteger,
    ToFloat,
    ToBoolean,
    Abs,
    Ceil,
    Floor,
    Round,
    Sqrt,
    Sign,
    Trim,
    LTrim,
    RTrim,
    Replace,
    Substring,
    Split,
    Reverse,
    Range,
}

impl Func {
    /// The function of a (case-insensitive) name with its arity bounds.
    pub fn lookup(name: &str) -> Option<(Func, usize, usize)> {
        let f = match name.to_ascii_lowercase().as_str() {
            "id" => (Func::Id, 1, 1),
            "labels" => (Func::Labels, 1, 1),
            "type" => (Func::Type, 1, 1),
            "coalesce" => (Func::Coalesce, 1, usize::MAX),
            "tolower" | "lower" => (Func::ToLower, 1, 1),
            "toupper" | "upper" => (Func::ToUpper, 1, 1),
            "size" => (Func::Size, 1, 1),
            "length" => (Func::Length, 1, 1),
            "nodes" => (Func::Nodes, 1, 1),
            "relationships" | "rels" => (Func::Relationships, 1, 1),
            "startnode" => (Func::StartNode, 1, 1),
            "endnode" => (Func::EndNode, 1, 1),
            "properties" => (Func::Properties, 1, 1),
            "keys" => (Func::Keys, 1, 1),
            "head" => (Func::Head, 1, 1),
            "last" => (Func::Last, 1, 1),
            "tail" => (Func::Tail, 1, 1),
            "tostring" => (Func::ToString, 1, 1),
            "tointeger" => (Func::ToInteger, 1, 1),
            "tofloat" => (Func::ToFloat, 1, 1),
            "toboolean" => (Func::ToBoolean, 1, 1),
            "abs" => (Func::Abs, 1, 1),
            "ceil" => (Func::Ceil, 1, 1),
            "floor" => (Func::Floor, 1, 1),
            "round" => (Func::Round, 1, 1),
            "sqrt" => (Func::Sqrt, 1, 1),
            "sign" => (Func::Sign, 1, 1),
            "trim" => (Func::Trim, 1, 1),
            "ltrim" => (Func::LTrim, 1, 1),
            "rtrim" => (Func::RTrim, 1, 1),
            "replace" => (Func::Replace, 3, 3),
            "substring" => (Func::Substring, 2, 3),
            "split" => (Func::Split, 2, 2),
            "reverse" => (Func::Reverse, 1, 1),
            "range" => (Func::Range, 2, 3),
            _ => return None,
        };
        Some(f)
    }

    /// The canonical name.
    pub fn name(self) -> &'static str {
        match self {
            Func::Id => "id",
            Func::Labels => "labels",
            Func::Type => "type",
            Func::Coalesce => "coalesce",
            Func::ToLower => "toLower",
            Func::ToUpper => "toUpper",
            Func::Size => "size",
            Func::Length => "length",
            Func::Nodes => "nodes",
            Func::Relationships => "relationships",
            Func::StartNode => "startNode",
            Func::EndNode => "endNode",
            Func::Properties => "properties",
            Func::Keys => "keys",
            Func::Head => "head",
            Func::Last => "last",
            Func::Tail => "tail",
            Func::ToString => "toString",
            Func::ToInteger => "toInteger",
            Func::ToFloat => "toFloat",
            Func::ToBoolean => "toBoolean",
            Func::Abs => "abs",
            Func::Ceil => "ceil",
            Func::Floor => "floor",
            Func::Round => "round",
            Func::Sqrt => "sqrt",
            Func::Sign => "sign",
            Func::Trim => "trim",
            Func::LTrim => "ltrim",
            Func::RTrim => "rtrim",
            Func::Replace => "replace",
            Func::Substring => "substring",
            Func::Split => "split",
            Func::Reverse => "reverse",
            Func::Range => "range",
        }
    }
}

/// An equality test on an interned or enumerated property, compiled at plan time so the
/// executor compares integers instead of strings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PropTest {
    /// `f.type = '...'` (`None`: the constant is no feedback type).
    FType(Option<FeedbackType>),
    /// `f.validation_status = '...'`.
    FStatus(Option<ValidationStatus>),
    /// `f.used_for_training = true|false`.
    FUsed(bool),
    /// An interned Feedback property (`None`: the string never occurs in this graph).
    FSym(FProp, Option<Sym>),
    /// An interned Adapter property.
    ASym(AProp, Option<Sym>),
}

/// Which property a [`ExprKind::PropPair`] compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PairSel {
    /// A Feedback property (id, type, status or an interned one).
    Feedback(FProp),
    /// An interned Adapter property (id, version, base_model).
    Adapter(AProp),
}

/// One relationship step of a path value.
#[derive(Debug, Clone, PartialEq)]
pub enum PathStep {
    /// A single relationship bound in a slot.
    Rel(Slot),
    /// A variable-length relationship list bound in a slot (in pattern order).
    Rels(Slot),
}

/// How to build a path value from slots.
#[derive(Debug, Clone, PartialEq)]
pub struct PathSpec {
    /// The first node.
    pub start: Slot,
    /// The relationships in order.
    pub steps: Vec<PathStep>,
}

/// An expression and the original byte offset it was written at.
#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    /// What it computes.
    pub kind: ExprKind,
    /// Offset in the user's query.
    pub pos: usize,
}

/// The expression forms.
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)]
pub enum ExprKind {
    /// A plan constant (`Plan::consts`).
    Const(usize),
    /// A variable.
    Slot(Slot),
    /// `base.key`.
    Prop(Box<Expr>, PropKey),
    /// A compiled property equality on a node slot; `negated` for `<>`.
    PropIs {
        slot: Slot,
        test: PropTest,
        negated: bool,
    },
    /// `a.p = b.p` (or `<>`) on an interned or enumerated property of two nodes of the same
    /// label, compared as symbols (ids, which are unique, as rows).
    PropPair {
        a: Slot,
        b: Slot,
        sel: PairSel,
        negated: bool,
    },
    /// A path variable.
    Path(Arc<PathSpec>),
    List(Vec<Expr>),
    Map(Vec<(Arc<str>, Expr)>),
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Xor(Box<Expr>, Box<Expr>),
    Cmp(CmpOp, Box<Expr>, Box<Expr>),
    Arith(ArithOp, Box<Expr>, Box<Expr>),
    Neg(Box<Expr>),
    IsNull(Box<Expr>, bool),
    In(Box<Expr>, Box<Expr>),
    StrOp(StrOp, Box<Expr>, Box<Expr>),
    Case {
        operand: Option<Box<Expr>>,
        arms: Vec<(Expr, Expr)>,
        default: Option<Box<Expr>>,
    },
    Call(Func, Vec<Expr>),
    Index(Box<Expr>, Box<Expr>),
    Slice(Box<Expr>, Option<Box<Expr>>, Option<Box<Expr>>),
    /// `n:Label`.
    HasLabels(Box<Expr>, Kinds),
    /// `[x IN list WHERE pred | proj]`; `x` lives in `slot`.
    ListComp {
        slot: Slot,
        list: Box<Expr>,
        pred: Option<Box<Expr>>,
        proj: Option<Box<Expr>>,
    },
    /// `all/any/none/single(x IN list WHERE pred)`; `x` lives in `slot`.
    Quant {
        kind: QuantKind,
        slot: Slot,
        list: Box<Expr>,
        pred: Box<Expr>,
    },
}

/// The list predicates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum QuantKind {
    All,
    Any,
    None,
    Single,
}

impl Expr {
    /// Every slot the expression reads.
    pub fn slots(&self, out: &mut Vec<Slot>) {
        let mut walk = |e: &Expr| e.slots(out);
        match &self.kind {
            ExprKind::Const(_) => {}
            ExprKind::Slot(s) | ExprKind::PropIs { slot: s, .. } => out.push(*s),
            ExprKind::PropPair { a, b, .. } => {
                out.push(*a);
                out.push(*b);
            }
            ExprKind::Path(p) => {
                out.push(p.start);
                for s in &p.steps {
                    match s {
                        PathStep::Rel(x) | PathStep::Rels(x) => out.push(*x),
                    }
                }
            }
            ExprKind::Prop(b, _)
            | ExprKind::Not(b)
            | ExprKind::Neg(b)
            | ExprKind::IsNull(b, _)
            | ExprKind::HasLabels(b, _) => walk(b),
            ExprKind::List(items) | ExprKind::Call(_, items) => items.iter().for_each(walk),
            ExprKind::Map(entries) => entries.iter().for_each(|(_, e)| walk(e)),
            ExprKind::And(a, b)
            | ExprKind::Or(a, b)
            | ExprKind::Xor(a, b)
            | ExprKind::Cmp(_, a, b)
            | ExprKind::Arith(_, a, b)
            | ExprKind::In(a, b)
            | ExprKind::StrOp(_, a, b)
            | ExprKind::Index(a, b) => {
                walk(a);
                walk(b);
            }
            // The local variable's own slot is not a dependency of the expression.
            ExprKind::ListComp {
                list, pred, proj, ..
            } => {
                walk(list);
                if let Some(p) = pred {
                    walk(p);
                }
                if let Some(p) = proj {
                    walk(p);
                }
            }
            ExprKind::Quant { list, pred, .. } => {
                walk(list);
                walk(pred);
            }
            ExprKind::Slice(a, b, c) => {
                walk(a);
                if let Some(b) = b {
                    walk(b);
                }
                if let Some(c) = c {
                    walk(c);
                }
            }
            ExprKind::Case {
                operand,
                arms,
                default,
            } => {
                if let Some(o) = operand {
                    walk(o);
                }
                for (w, t) in arms {
                    walk(w);
                    walk(t);
                }
                if let Some(d) = default {
                    walk(d);
                }
            }
        }
    }
}

/// Aggregate functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum AggFunc {
    Count,
    Sum,
    Avg,
    Min,
    Max,
    Collect,
}

/// One aggregate of an aggregation.
#[derive(Debug, Clone, PartialEq)]
pub struct Agg {
    /// Where the result goes.
    pub slot: Slot,
    /// Which function.
    pub func: AggFunc,
    /// `DISTINCT` argument values only.
    pub distinct: bool,
    /// The argument (`None` for `count(*)`).
    pub arg: Option<Expr>,
    /// Offset of the call.
    pub pos: usize,
}

/// Expansion along single relationships.
#[derive(Debug, Clone, PartialEq)]
pub struct Expand {
    /// Node slot to start from.
    pub from: Slot,
    /// Node slot to bind (or to check, when `into`).
    pub to: Slot,
    /// Relationship slot to bind, if needed.
    pub rel: Option<Slot>,
    /// Direction from `from`.
    pub dir: Dir,
    /// Accepted types.
    pub types: RelKinds,
    /// Accepted labels of the other end.
    pub to_kinds: Kinds,
    /// `to` is already bound: only check it.
    pub into: bool,
    /// Relationship slots of the same MATCH the edge must differ from.
    pub unique: Vec<Slot>,
    /// Relationship-list slots of the same MATCH the edge must not be in.
    pub unique_lists: Vec<Slot>,
}

/// Expansion along variable-length paths, each relationship used at most once per path.
#[derive(Debug, Clone, PartialEq)]
pub struct VarExpand {
    /// The single-step part (rel is the list slot).
    pub step: Expand,
    /// Fewest hops.
    pub min: u32,
    /// Most hops.
    pub max: u32,
    /// `max` comes from `QueryLimits::max_depth` (no upper bound written): reaching it with
    /// more edges to follow is a depth-limit error rather than a silent cut.
    pub capped: bool,
    /// The list is stored reversed (the traversal runs against the pattern's order).
    pub reverse: bool,
}

/// Counting instead of enumerating: how many relationships an [`Expand`] would follow from
/// `from`, when nothing after it reads the relationship or the node at the far end (the
/// planner's aggregate pushdown). The row goes on once, weighted by that count; a count of
/// zero drops it. The aggregation at the end of the segment counts each row as `weight`
/// rows.
#[derive(Debug, Clone, PartialEq)]
pub struct ExpandCount {
    /// Node slot to count from.
    pub from: Slot,
    /// The far node's slot in the query; never bound (kept for explain).
    pub to: Slot,
    /// Direction from `from`.
    pub dir: Dir,
    /// Accepted types.
    pub types: RelKinds,
    /// Accepted labels of the far end.
    pub to_kinds: Kinds,
    /// Slot of the row's weight (an integer).
    pub weight: Slot,
    /// An earlier `ExpandCount` of the segment has set `weight`: multiply it rather than
    /// set it.
    pub chained: bool,
}

/// A streaming operator.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Binds `slot` to every node of the given kinds.
    Scan {
        /// Slot to bind.
        slot: Slot,
        /// Allowed labels.
        kinds: Kinds,
    },
    /// Binds `slot` to the node whose `id` equals `key`, found through the id index.
    Seek {
        /// Slot to bind.
        slot: Slot,
        /// Allowed labels.
        kinds: Kinds,
        /// The id (evaluated per input row).
        key: Expr,
    },
    /// Follows single relationships.
    Expand(Box<Expand>),
    /// Follows variable-length paths.
    VarExpand(Box<VarExpand>),
    /// Counts single relationships instead of following them.
    ExpandCount(Box<ExpandCount>),
    /// A whole one-hop grouped aggregation run over columns and adjacency lists (see
    /// [`GroupScan`]); only ever the single operator of a segment whose sink is the
    /// [`Sink::Aggregate`] it computes.
    GroupScan(Box<GroupScan>),
    /// Keeps rows where the predicate is true.
    Filter(Expr),
    /// Runs `body` per row; if it yields nothing, passes the row on with `nulls` set to null.
    Optional {
        /// The optional pattern's operators.
        body: Vec<Op>,
        /// Slots the body binds.
        nulls: Vec<Slot>,
    },
    /// One row per list element.
    Unwind {
        /// The list.
        list: Expr,
        /// Element slot.
        slot: Slot,
    },
    /// Computes expressions into slots.
    Project(Vec<(Slot, Expr)>),
    /// Passes only the first row of each distinct combination of `slots`.
    Distinct {
        /// Key slots.
        slots: Vec<Slot>,
        /// Executor state index.
        state: usize,
    },
    /// Drops the first `count` rows.
    Skip {
        /// Constant expression.
        count: Expr,
        /// Executor state index.
        state: usize,
    },
    /// Passes `count` rows, then stops everything upstream.
    Limit {
        /// Constant expression.
        count: Expr,
        /// Executor state index.
        state: usize,
    },
}

impl Op {
    /// Every slot the operator (and, for `Optional`, its body) reads: bound nodes it starts
    /// from or checks, relationships it must differ from, and its expressions' slots.
    pub fn reads(&self, out: &mut Vec<Slot>) {
        let expand = |e: &Expand, out: &mut Vec<Slot>| {
            out.push(e.from);
            if e.into {
                out.push(e.to);
            }
            out.extend(&e.unique);
            out.extend(&e.unique_lists);
        };
        match self {
            Op::Scan { .. } => {}
            Op::Seek { key, .. } => key.slots(out),
            Op::Expand(e) => expand(e, out),
            Op::VarExpand(v) => expand(&v.step, out),
            Op::ExpandCount(c) => {
                out.push(c.from);
                if c.chained {
                    out.push(c.weight);
                }
            }
            Op::Filter(e) => e.slots(out),
            Op::GroupScan(_) => {}
            Op::Optional { body, .. } => body.iter().for_each(|op| op.reads(out)),
            Op::Unwind { list, .. } => list.slots(out),
            Op::Project(items) => items.iter().for_each(|(_, e)| e.slots(out)),
            Op::Distinct { slots, .. } => out.extend(slots),
            Op::Skip { count, .. } | Op::Limit { count, .. } => count.slots(out),
        }
    }
}

/// Where a segment's rows go.
#[derive(Debug, Clone, PartialEq)]
pub enum Sink {
    /// Groups by `keys` and computes `aggs`; the groups feed the next segment.
    Aggregate {
        /// Grouping keys (slot, expression).
        keys: Vec<(Slot, Expr)>,
        /// Aggregates.
        aggs: Vec<Agg>,
        /// When every key is a node or a node's unique `id` (one or two keys): the node
        /// slots, so groups are found by node row instead of by hashing key values.
        nodes: Option<Vec<Slot>>,
        /// The slot an [`Op::ExpandCount`] keeps the row's weight in: each row counts as
        /// that many rows. Only set when every aggregate is a non-DISTINCT `count`, `min`
        /// or `max`, which is all the executor weights.
        weight: Option<Slot>,
    },
    /// Sorts by the key slots (true = descending); the sorted rows feed the next segment.
    /// With `top`, only the first `skip + limit` rows are kept.
    Sort {
        /// Keys.
        keys: Vec<(Slot, bool)>,
        /// (skip, limit) constants when a LIMIT follows.
        top: Option<(Option<Expr>, Expr)>,
    },
    /// An aggregation the pair grouper runs (see [`PairCount`]): the segment's operators are
    /// a scan and two expansions, and the groups are counted from sorted packed node pairs.
    PairCount(Box<PairCount>),
    /// The result: these slots, in column order.
    Output {
        /// Column slots.
        slots: Vec<Slot>,
    },
}

/// Counting rows grouped by two nodes (or by expressions of them), done by the pair
/// grouper (`exec/pair_group.rs`) instead of hashing every row: the segment's operators are a
/// [`Op::Scan`], two [`Op::Expand`]s and filters; each row's pair of nodes is packed into an
/// integer with its position in the row order, the integers are sorted and runs counted.
#[derive(Debug, Clone, PartialEq)]
pub struct PairCount {
    /// Grouping keys (slot, expression), each reading only the nodes in `pair`.
    pub keys: Vec<(Slot, Expr)>,
    /// The aggregates: all `count(*)` or `count` of a variable the segment binds.
    pub aggs: Vec<Agg>,
    /// The node slots the keys read (the same slot twice when they read one).
    pub pair: [Slot; 2],
    /// The keys are the nodes themselves or their unique ids: a node pair is a group.
    pub injective: bool,
    /// Filters on the counts alone (a `HAVING` or `WITH ... WHERE`), applied before the
    /// keys are built.
    pub having: Vec<Expr>,
}

/// Operators feeding one sink.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    /// The streaming operators.
    pub ops: Vec<Op>,
    /// Their destination.
    pub sink: Sink,
}

/// A complete plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Segments in execution order; the last one outputs.
    pub segments: Vec<Segment>,
    /// Result column names.
    pub columns: Vec<String>,
    /// Row width.
    pub slots: usize,
    /// Constants (literals and parameters).
    pub consts: Vec<Const>,
    /// Number of stateful operators.
    pub states: usize,
    /// Variable names of slots (for explain).
    pub slot_names: Vec<String>,
    /// What the plan took from the graph it was planned on (see [`PlanDeps`]).
    pub deps: PlanDeps,
}

/// A statistic of an org's graph that the cost model read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatKey {
    /// Feedback nodes.
    Feedback,
    /// Adapter nodes.
    Adapters,
    /// Relationships of both types.
    Edges,
    /// Feedback items of a type.
    Type(FeedbackType),
    /// Feedback items with a validation status.
    Status(ValidationStatus),
    /// Feedback items consumed by training.
    Used,
    /// Feedback items of a model version (the symbol is recorded in [`PlanDeps::symbols`]).
    Model(Sym),
}

impl StatKey {
    /// The statistic's value on `g`.
    pub fn read(self, g: &crate::graph::OrgGraph) -> u64 {
        let org = &g.counters().org;
        match self {
            StatKey::Feedback => g.feedback().len() as u64,
            StatKey::Adapters => g.adapters().len() as u64,
            StatKey::Edges => g.edge_count() as u64,
            StatKey::Type(FeedbackType::Positive) => org.positive,
            StatKey::Type(FeedbackType::Negative) => org.negative,
            StatKey::Status(ValidationStatus::Pending) => org.pending,
            StatKey::Status(ValidationStatus::Approved) => org.approved,
            StatKey::Status(ValidationStatus::Rejected) => org.rejected,
            StatKey::Status(ValidationStatus::Flagged) => org.flagged,
            StatKey::Used => org.used,
            StatKey::Model(m) => g.counters().models.get(&m).map_or(0, |c| c.total),
        }
    }
}

/// The magnitude class of a statistic: 0 for 0, else 1 + floor(log2 v). A cached plan is
/// re-planned once a statistic it read has doubled or halved, not on every write.
pub fn stat_bucket(v: u64) -> u32 {
    if v == 0 { 0 } else { 64 - v.leading_zeros() }
}

/// What a plan took from the graph it was planned on, so that a cached plan is used on a
/// graph only while all of it still holds:
///
/// - every string the planner looked up in the org's interner (to compile `prop = 'text'`
///   to a symbol comparison) with the symbol it found, or `None` if absent. Symbols are
///   numbered per org graph, so this is also what keeps a plan from meaning something else
///   on another org's graph or on a rebuilt one;
/// - every statistic the cost model read, as a magnitude class ([`stat_bucket`]). These
///   only steer the operator order, never the result.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PlanDeps {
    /// Interned strings looked up, with the symbol each had.
    pub symbols: Vec<(Box<str>, Option<Sym>)>,
    /// Statistics read, with their magnitude class.
    pub stats: Vec<(StatKey, u32)>,
}

impl PlanDeps {
    /// Whether a plan with these dependencies means the same on `g` as on the graph it was
    /// planned on, with statistics of the same magnitude.
    pub fn hold_on(&self, g: &crate::graph::OrgGraph) -> bool {
        let strings = g.strings();
        self.symbols.iter().all(|(s, sym)| strings.get(s) == *sym)
            && self.stats.iter().all(|(k, b)| stat_bucket(k.read(g)) == *b)
    }
}

impl Plan {
    /// A readable rendering of the plan, one operator per line.
    pub fn explain(&self) -> String {
        let mut out = String::new();
        for (i, seg) in self.segments.iter().enumerate() {
            let _ = writeln!(out, "segment {i}:");
            self.explain_ops(&seg.ops, 1, &mut out);
            let _ = match &seg.sink {
                Sink::Aggregate {
                    keys,
                    aggs,
                    nodes,
                    weight,
                } => writeln!(
                    out,
                    "  -> Aggregate{}{} keys={:?} aggs={:?}",
                    if nodes.is_some() { " (by node)" } else { "" },
                    if weight.is_some() { " (weighted)" } else { "" },
                    keys.iter().map(|k| self.name(k.0)).collect::<Vec<_>>(),
                    aggs.iter()
                        .map(|a| format!(
                            "{:?}{}",
                            a.func,
                            if a.distinct { " DISTINCT" } else { "" }
                        ))
                        .collect::<Vec<_>>()
                ),
                Sink::Sort { keys, top } => writeln!(
                    out,
                    "  -> Sort {:?}{}",
                    keys.iter()
                        .map(|(s, d)| format!("{}{}", self.name(*s), if *d { " DESC" } else { "" }))
                        .collect::<Vec<_>>(),
                    if top.is_some() { " (top-k)" } else { "" }
                ),
                Sink::PairCount(pc) => writeln!(
                    out,
                    "  -> PairCount (sorted pair keys{}) pair=({}, {}) keys={:?} counts={}{}",
                    if pc.injective { "" } else { ", merged by key" },
                    self.name(pc.pair[0]),
                    self.name(pc.pair[1]),
                    pc.keys.iter().map(|k| self.name(k.0)).collect::<Vec<_>>(),
                    pc.aggs.len(),
                    if pc.having.is_empty() { "" } else { " having" }
                ),
                Sink::Output { .. } => writeln!(out, "  -> Output {:?}", self.columns),
            };
        }
        out
    }

    fn name(&self, s: Slot) -> &str {
        self.slot_names.get(s).map_or("?", String::as_str)
    }

    fn explain_ops(&self, ops: &[Op], depth: usize, out: &mut String) {
        let pad = "  ".repeat(depth);
        for op in ops {
            let _ = match op {
                Op::Scan { slot, kinds } => {
                    writeln!(out, "{pad}Scan {} {}", self.name(*slot), KindsFmt(*kinds))
                }
                Op::Seek { slot, kinds, .. } => writeln!(
                    out,
                    "{pad}Seek {} {} by id",
                    self.name(*slot),
                    KindsFmt(*kinds)
                ),
                Op::Expand(e) => writeln!(
                    out,
                    "{pad}Expand{} {} -{:?}-> {} {}",
                    if e.into { "Into" } else { "" },
                    self.name(e.from),
                    e.dir,
                    self.name(e.to),
                    KindsFmt(e.to_kinds)
                ),
                Op::VarExpand(v) => writeln!(
                    out,
                    "{pad}VarExpand{} {} -{:?}*{}..{}-> {}",
                    if v.step.into { "Into" } else { "" },
                    self.name(v.step.from),
                    v.step.dir,
                    v.min,
                    v.max,
                    self.name(v.step.to)
                ),
                Op::ExpandCount(c) => writeln!(
                    out,
                    "{pad}ExpandCount {} -{:?}-> {} {} (degree, not enumerated)",
                    self.name(c.from),
                    c.dir,
                    self.name(c.to),
                    KindsFmt(c.to_kinds)
                ),
                Op::Filter(_) => writeln!(out, "{pad}Filter"),
                Op::GroupScan(g) => writeln!(out, "{pad}{}", g.explain(&self.slot_names)),
                Op::Optional { body, .. } => {
                    let _ = writeln!(out, "{pad}Optional");
                    self.explain_ops(body, depth + 1, out);
                    Ok(())
                }
                Op::Unwind { slot, .. } => writeln!(out, "{pad}Unwind {}", self.name(*slot)),
                Op::Project(items) => writeln!(
                    out,
                    "{pad}Project {:?}",
                    items.iter().map(|i| self.name(i.0)).collect::<Vec<_>>()
                ),
                Op::Distinct { .. } => writeln!(out, "{pad}Distinct"),
                Op::Skip { .. } => writeln!(out, "{pad}Skip"),
                Op::Limit { .. } => writeln!(out, "{pad}Limit"),
            };
        }
    }
}

struct KindsFmt(Kinds);

impl fmt::Display for KindsFmt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.0.feedback, self.0.adapter) {
            (true, true) => f.write_str(":*"),
            (true, false) => f.write_str(":Feedback"),
            (false, true) => f.write_str(":Adapter"),
            (false, false) => f.write_str(":<none>"),
        }
    }
}
