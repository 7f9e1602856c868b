//! Runtime values of the executor and their Cypher semantics: equality and comparison
//! (three-valued, `None` = null), the total ORDER BY order, and the grouping equivalence used
//! by DISTINCT and aggregation keys.
//!
//! A value borrows strings from the graph's interner, the feedback id column and the plan's
//! constants (`Str`), so reading a property allocates nothing. Nodes and relationships are
//! bound as their row or edge index and only turned into maps when a result is produced.

use std::cmp::Ordering;
use std::hash::{Hash, Hasher};
use std::rc::Rc;

use crate::graph::NodeRef;

/// A path: `nodes.len() == rels.len() + 1`, `rels[i]` joins `nodes[i]` and `nodes[i + 1]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathVal {
    /// The nodes in path order.
    pub nodes: Vec<NodeRef>,
    /// Edge indices in path order.
    pub rels: Vec<u32>,
}

impl Hash for PathVal {
    fn hash<H: Hasher>(&self, state: &mut H) {
        for n in &self.nodes {
            let (k, r) = node_key(*n);
            state.write_u8(k);
            state.write_u32(r);
        }
        self.rels.hash(state);
    }
}

/// A value during execution.
#[derive(Debug, Clone)]
pub enum Value<'a> {
    /// Cypher `null`.
    Null,
    /// Boolean.
    Bool(bool),
    /// 64-bit integer.
    Int(i64),
    /// 64-bit float.
    Float(f64),
    /// A string borrowed from the graph or the plan.
    Str(&'a str),
    /// A string computed during execution (or loaded from the text source).
    Text(Rc<str>),
    /// A node.
    Node(NodeRef),
    /// A relationship (petgraph edge index).
    Rel(u32),
    /// A list.
    List(Rc<[Value<'a>]>),
    /// A map, keys sorted.
    Map(Rc<[(Rc<str>, Value<'a>)]>),
    /// A path.
    Path(Rc<PathVal>),
}

impl<'a> Value<'a> {
    /// The string content of a string value.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            Value::Text(s) => Some(s),
            _ => None,
        }
    }

    /// True for `null`.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// The Cypher type name, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "NULL",
            Value::Bool(_) => "BOOLEAN",
            Value::Int(_) => "INTEGER",
            Value::Float(_) => "FLOAT",
            Value::Str(_) | Value::Text(_) => "STRING",
            Value::Node(_) => "NODE",
            Value::Rel(_) => "RELATIONSHIP",
            Value::List(_) => "LIST",
            Value::Map(_) => "MAP",
            Value::Path(_) => "PATH",
        }
    }

    /// A list value from a vector.
    pub fn list(items: Vec<Value<'a>>) -> Self {
        Value::List(items.into())
    }

    /// An owned string value.
    pub fn text(s: &str) -> Self {
        Value::Text(Rc::from(s))
    }

    /// A stored JSON value as a Cypher value: objects become maps (keys sorted), arrays
    /// lists; an integer outside the i64 range becomes a float, as in parameters.
    pub fn from_json(v: &serde_json::Value) -> Value<'static> {
        match v {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Bool(*b),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => Value::Int(i),
                None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            serde_json::Value::String(s) => Value::text(s),
            serde_json::Value::Array(a) => Value::List(a.iter().map(Value::from_json).collect()),
            serde_json::Value::Object(m) => {
                let mut entries: Vec<(Rc<str>, Value<'static>)> = m
                    .iter()
                    .map(|(k, v)| (Rc::from(k.as_str()), Value::from_json(v)))
                    .collect();
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                Value::Map(entries.into())
            }
        }
    }
}

/// Cypher `=`: `None` when the answer is null (a null operand, or a null met inside lists).
pub fn cypher_eq(a: &Value<'_>, b: &Value<'_>) -> Option<bool> {
    match (a, b) {
        (Value::Null, _) | (_, Value::Null) => None,
        (Value::Bool(x), Value::Bool(y)) => Some(x == y),
        (Value::Int(x), Value::Int(y)) => Some(x == y),
        (Value::Float(x), Value::Float(y)) => Some(x == y),
        (Value::Int(x), Value::Float(y)) | (Value::Float(y), Value::Int(x)) => {
            Some(*x as f64 == *y)
        }
        (Value::Node(x), Value::Node(y)) => Some(x == y),
        (Value::Rel(x), Value::Rel(y)) => Some(x == y),
        (Value::Path(x), Value::Path(y)) => Some(x == y),
        (Value::List(x), Value::List(y)) => {
            if x.len() != y.len() {
                return Some(false);
            }
            let mut unknown = false;
            for (p, q) in x.iter().zip(y.iter()) {
                match cypher_eq(p, q) {
                    Some(false) => return Some(false),
                    None => unknown = true,
                    Some(true) => {}
                }
            }
            if unknown { None } else { Some(true) }
        }
        (Value::Map(x), Value::Map(y)) => {
            if x.len() != y.len() || x.iter().zip(y.iter()).any(|(p, q)| p.0 != q.0) {
                return Some(false);
            }
            let mut unknown = false;
            for (p, q) in x.iter().zip(y.iter()) {
                match cypher_eq(&p.1, &q.1) {
                    Some(false) => return Some(false),
                    None => unknown = true,
                    Some(true) => {}
                }
            }
            if unknown { None } else { Some(true) }
        }
        _ => match (a.as_str(), b.as_str()) {
            (Some(x), Some(y)) => Some(x == y),
            _ => Some(false),
        },
    }
}

/// Cypher `<`, `>` and friends: the order of two comparable values, `None` when they are not
/// comparable (different types, null, NaN).
pub fn cypher_cmp(a: &Value<'_>, b: &Value<'_>) -> Option<Ordering> {
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => Some(x.cmp(y)),
        (Value::Float(x), Value::Float(y)) => x.partial_cmp(y),
        (Value::Int(x), Value::Float(y)) => (*x as f64).partial_cmp(y),
        (Value::Float(x), Value::Int(y)) => x.partial_cmp(&(*y as f64)),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        (Value::List(x), Value::List(y)) => {
            for (p, q) in x.iter().zip(y.iter()) {
                match cypher_cmp(p, q)? {
                    Ordering::Equal => {}
                    o => return Some(o),
                }
            }
            Some(x.len().cmp(&y.len()))
        }
        _ => match (a.as_str(), b.as_str()) {
            (Some(x), Some(y)) => Some(x.cmp(y)),
            _ => None,
        },
    }
}

/// Rank of a type in the global ORDER BY order (openCypher orderability, ascending).
fn order_rank(v: &Value<'_>) -> u8 {
    match v {
        Value::Map(_) => 0,
        Value::Node(_) => 1,
        Value::Rel(_) => 2,
        Value::List(_) => 3,
        Value::Path(_) => 4,
        Value::Str(_) | Value::Text(_) => 5,
        Value::Bool(_) => 6,
        Value::Int(_) | Value::Float(_) => 7,
        Value::Null => 8,
    }
}

fn node_key(n: NodeRef) -> (u8, u32) {
    match n {
        NodeRef::Feedback(r) => (0, r),
        NodeRef::Adapter(r) => (1, r),
    }
}

fn float_order(x: f64, y: f64) -> Ordering {
    // NaN sorts above every number.
    match (x.is_nan(), y.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        _ => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
    }
}

/// The total order of ORDER BY (ascending): maps, nodes, relationships, lists, paths,
/// strings, booleans, numbers, then null.
pub fn order_cmp(a: &Value<'_>, b: &Value<'_>) -> Ordering {
    let (ra, rb) = (order_rank(a), order_rank(b));
    if ra != rb {
        return ra.cmp(&rb);
    }
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => x.cmp(y),
        (Value::Float(x), Value::Float(y)) => float_order(*x, *y),
        (Value::Int(x), Value::Float(y)) => float_order(*x as f64, *y).then(Ordering::Less),
        (Value::Float(x), Value::Int(y)) => float_order(*x, *y as f64).then(Ordering::Greater),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Node(x), Value::Node(y)) => node_key(*x).cmp(&node_key(*y)),
        (Value::Rel(x), Value::Rel(y)) => x.cmp(y),
        (Value::List(x), Value::List(y)) => {
            for (p, q) in x.iter().zip(y.iter()) {
                match order_cmp(p, q) {
                    Ordering::Equal => {}
                    o => return o,
                }
            }
            x.len().cmp(&y.len())
        }
        (Value::Path(x), Value::Path(y)) => x
            .nodes
            .iter()
            .map(|n| node_key(*n))
            .cmp(y.nodes.iter().map(|n| node_key(*n)))
            .then_with(|| x.rels.cmp(&y.rels)),
        (Value::Map(x), Value::Map(y)) => {
            for (p, q) in x.iter().zip(y.iter()) {
                match p.0.cmp(&q.0).then_with(|| order_cmp(&p.1, &q.1)) {
                    Ordering::Equal => {}
                    o => return o,
                }
            }
            x.len().cmp(&y.len())
        }
        _ => match (a.as_str(), b.as_str()) {
            (Some(x), Some(y)) => x.cmp(y),
            _ => Ordering::Equal,
        },
    }
}

/// Grouping equivalence (DISTINCT, aggregation keys, `collect(DISTINCT ...)`): like `=` but
/// `null` is equivalent to `null`, NaN to NaN, and an integer to the equal float.
impl PartialEq for Value<'_> {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Value::Null, Value::Null) => true,
            (Value::Bool(x), Value::Bool(y)) => x == y,
            (Value::Int(x), Value::Int(y)) => x == y,
            (Value::Float(x), Value::Float(y)) => x == y || (x.is_nan() && y.is_nan()),
            (Value::Int(x), Value::Float(y)) | (Value::Float(y), Value::Int(x)) => *x as f64 == *y,
            (Value::Node(x), Value::Node(y)) => x == y,
            (Value::Rel(x), Value::Rel(y)) => x == y,
            (Value::Path(x), Value::Path(y)) => x == y,
            (Value::List(x), Value::List(y)) => x == y,
            (Value::Map(x), Value::Map(y)) => x == y,
            _ => match (self.as_str(), other.as_str()) {
                (Some(x), Some(y)) => x == y,
                _ => false,
            },
        }
    }
}

impl Eq for Value<'_> {}

impl Hash for Value<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        match self {
            Value::Null => state.write_u8(0),
            Value::Bool(b) => {
                state.write_u8(1);
                state.write_u8(*b as u8);
            }
            Value::Int(i) => {
                state.write_u8(2);
                state.write_i64(*i);
            }
            Value::Float(f) => {
                // Integral floats hash like the equal integer (they are equivalent).
                if f.fract() == 0.0 && f.abs() < 9.0e15 {
                    state.write_u8(2);
                    state.write_i64(*f as i64);
                } else if f.is_nan() {
                    state.write_u8(3);
                } else {
                    state.write_u8(3);
                    state.write_u64(f.to_bits());
                }
            }
            Value::Str(_) | Value::Text(_) => {
                state.write_u8(4);
                state.write(self.as_str().unwrap_or("").as_bytes());
                state.write_u8(0xff);
            }
            Value::Node(n) => {
                let (k, r) = node_key(*n);
                state.write_u8(5 + k);
                state.write_u32(r);
            }
            Value::Rel(e) => {
                state.write_u8(7);
                state.write_u32(*e);
            }
            Value::List(items) => {
                state.write_u8(8);
                state.write_usize(items.len());
                for v in items.iter() {
                    v.hash(state);
                }
            }
            Value::Map(entries) => {
                state.write_u8(9);
                state.write_usize(entries.len());
                for (k, v) in entries.iter() {
                    state.write(k.as_bytes());
                    v.hash(state);
                }
            }
            Value::Path(p) => {
                state.write_u8(10);
                p.hash(state);
            }
        }
    }
}

/// A small, fast, non-cryptographic hasher for grouping keys (FxHash-style multiply-rotate).
/// Keys come from the user's own data in their own org, so flooding resistance is not needed.
#[derive(Default, Clone, Copy)]
pub struct FastHasher(u64);

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FastHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for FastHasher {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }

    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(i as u64);
    }

    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(i as u64);
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
}

/// `BuildHasher` for [`FastHasher`].
pub type FastBuild = std::hash::BuildHasherDefault<FastHasher>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_valued_equality() {
        assert_eq!(cypher_eq(&Value::Int(1), &Value::Float(1.0)), Some(true));
        assert_eq!(cypher_eq(&Value::Int(1), &Value::Null), None);
        assert_eq!(cypher_eq(&Value::Int(1), &Value::Str("1")), Some(false));
        let l1 = Value::list(vec![Value::Int(1), Value::Null]);
        let l2 = Value::list(vec![Value::Int(1), Value::Int(2)]);
        let l3 = Value::list(vec![Value::Int(2), Value::Null]);
        assert_eq!(cypher_eq(&l1, &l2), None);
        assert_eq!(cypher_eq(&l3, &l2), Some(false));
        assert_eq!(cypher_eq(&Value::Str("a"), &Value::text("a")), Some(true));
    }

    #[test]
    fn comparison_and_order() {
        assert_eq!(cypher_cmp(&Value::Int(1), &Value::Str("a")), None);
        assert_eq!(
            cypher_cmp(&Value::Int(1), &Value::Float(1.5)),
            Some(Ordering::Less)
        );
        let mut v = [
            Value::Null,
            Value::Int(3),
            Value::Str("b"),
            Value::Float(f64::NAN),
            Value::Bool(true),
            Value::Float(2.5),
        ];
        v.sort_by(order_cmp);
        let names: Vec<_> = v.iter().map(Value::type_name).collect();
        assert_eq!(
            names,
            ["STRING", "BOOLEAN", "FLOAT", "INTEGER", "FLOAT", "NULL"]
        );
    }

    #[test]
    fn grouping_equivalence_hashes_consistently() {
        use std::collections::HashSet;
        let mut s: HashSet<Value<'_>, FastBuild> = HashSet::default();
        s.insert(Value::Int(2));
        assert!(s.contains(&Value::Float(2.0)));
        s.insert(Value::Null);
        assert!(s.contains(&Value::Null));
        s.insert(Value::Str("x"));
        assert!(s.contains(&Value::text("x")));
        s.insert(Value::Float(f64::NAN));
        assert!(s.contains(&Value::Float(f64::NAN)));
    }
}
