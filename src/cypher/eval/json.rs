//! Values as JSON for results: nodes and relationships as their property maps, integers
//! beyond `i64` as the floats Cypher reads them as.

use super::*;

impl<'a> Env<'a> {
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

/// Rewrites, in place, every JSON integer that does not fit an `i64` as the float Cypher
/// reads it as ([`Value::from_json`]); everything else stays as it is.
pub(super) fn ints_beyond_i64_as_floats(v: &mut serde_json::Value) {
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
