//! Property reads: a node's or relationship's property from the graph's columns (interned
//! strings, enumerated values, times), stored text fields through the text source, and
//! the compiled property tests of filters.

use super::*;

impl<'a> Env<'a> {
    pub(super) fn sym(&self, s: Option<Sym>) -> Value<'a> {
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
    pub(super) fn stored_fields(&self, r: u32) -> Vec<(&'static str, Value<'a>)> {
        self.stored_fields_json(r)
            .into_iter()
            .map(|(name, v)| (name, Value::from_json(&v)))
            .collect()
    }

    /// [`Env::stored_fields`] as the JSON the store holds, for building a node's JSON
    /// without a round trip through [`Value`] (numbers as [`Value::from_json`] reads them, so
    /// `RETURN f` and `RETURN f.metadata` agree).
    pub(super) fn stored_fields_json(&self, r: u32) -> Vec<(&'static str, serde_json::Value)> {
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

    pub(super) fn prop(
        &self,
        base: &Value<'a>,
        key: &PropKey,
        pos: usize,
    ) -> Result<Value<'a>, Fail> {
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

    pub(super) fn prop_pair(&self, a: &Value<'a>, b: &Value<'a>, sel: PairSel) -> Option<bool> {
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

    pub(super) fn prop_test(&self, v: &Value<'a>, test: PropTest) -> Option<bool> {
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
}

/// The column of an interned Feedback property.
pub(super) fn sym_col(p: FProp) -> Option<SymCol> {
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
