//! Kinds of feedback beyond thumbs: the org's typed score configs (create, version, read)
//! and the kind-aware summary of an org's feedback (counts by kind, ratings, labels, per
//! model and per provider, in a window of hours).
//!
//! Score configs are small versioned records: every change that alters a field is a new
//! version with a history entry (who, when, what); re-posting the same values writes
//! nothing. Config writes take the org's adapter lock, so two admins changing one config
//! get consecutive versions, never one lost update.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Service, ServiceError, check_org};
use crate::model::{
    Actor, ChangeAction, FeedbackKind, FieldChange, HistoryVersion, ScoreConfig, ScoreDataType,
    now_millis,
};
use crate::store::rules::field_change;
use crate::validate::{self, ValidationError};

/// The most categories a categorical config may list.
pub const MAX_CATEGORIES: usize = 256;

/// A score config as an admin sends it (`POST /score-configs`); fields are optional here so
/// that a missing one is a 400 naming it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewScoreConfig {
    /// The name submissions use in `score_config` (id alphabet, no `/`).
    #[schema(required = true, value_type = String)]
    pub name: Option<String>,
    /// `numeric`, `categorical` or `boolean`.
    #[schema(required = true, value_type = ScoreDataType)]
    pub data_type: Option<String>,
    /// Numeric: lowest allowed score (required there).
    pub min: Option<f64>,
    /// Numeric: highest allowed score (required there).
    pub max: Option<f64>,
    /// Categorical: the allowed labels (required there, at least one).
    pub categories: Option<Vec<String>>,
    /// Numeric or boolean: scores at or above it are `positive`.
    pub threshold: Option<f64>,
    /// What the scale measures.
    pub description: Option<String>,
}

/// What writing a score config did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ConfigOutcome {
    /// A new config (version 1).
    Created,
    /// A new version of an existing config.
    Updated,
    /// It existed with exactly these values: nothing written.
    Unchanged,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ServiceError {
    ServiceError::Invalid(ValidationError::Invalid {
        field,
        reason: reason.into(),
    })
}

fn finite(field: &'static str, v: Option<f64>) -> Result<Option<f64>, ServiceError> {
    match v {
        Some(x) if !(x.is_finite() && x.abs() <= validate::MAX_SCORE) => Err(invalid(
            field,
            format!("must be a number between -{0} and {0}", validate::MAX_SCORE),
        )),
        v => Ok(v),
    }
}

impl Service {
    /// Checks a score config request and builds the config it describes (version 0: the
    /// write sets the version).
    fn check_score_config(
        &self,
        org: &str,
        new: NewScoreConfig,
    ) -> Result<ScoreConfig, ServiceError> {
        let l = &self.limits;
        let name = validate::check_id("name", new.name, l)?.ok_or(ValidationError::Missing {
            field: "name",
            hint: "",
        })?;
        let name = validate::check_adapter_id("name", name)?;
        let data_type = match new.data_type.as_deref().map(str::trim) {
            None | Some("") => {
                return Err(ValidationError::Missing {
                    field: "data_type",
                    hint: " (numeric, categorical or boolean)",
                }
                .into());
            }
            Some("numeric") => ScoreDataType::Numeric,
            Some("categorical") => ScoreDataType::Categorical,
            Some("boolean") => ScoreDataType::Boolean,
            Some(other) => {
                return Err(invalid(
                    "data_type",
                    format!(
                        "unknown data type '{other}' (expected numeric, categorical or boolean)"
                    ),
                ));
            }
        };
        let (min, max) = (finite("min", new.min)?, finite("max", new.max)?);
        let threshold = finite("threshold", new.threshold)?;
        let mut categories = Vec::new();
        match data_type {
            ScoreDataType::Numeric => {
                let (Some(lo), Some(hi)) = (min, max) else {
                    let field = if min.is_none() { "min" } else { "max" };
                    return Err(ValidationError::Missing {
                        field,
                        hint: " (a numeric config needs min and max)",
                    }
                    .into());
                };
                if lo >= hi {
                    return Err(invalid(
                        "max",
                        format!("must be above min ({lo}), got {hi}"),
                    ));
                }
                if let Some(t) = threshold
                    && !(lo..=hi).contains(&t)
                {
                    return Err(invalid(
                        "threshold",
                        format!("must lie within min and max ({lo} to {hi}), got {t}"),
                    ));
                }
            }
            ScoreDataType::Boolean | ScoreDataType::Categorical => {
                if min.is_some() || max.is_some() {
                    let field = if min.is_some() { "min" } else { "max" };
                    return Err(invalid(
                        field,
                        format!(
                            "only numeric configs have a range (this one is {})",
                            data_type.as_str()
                        ),
                    ));
                }
            }
        }
        match data_type {
            ScoreDataType::Categorical => {
                if threshold.is_some() {
                    return Err(invalid(
                        "threshold",
                        "a categorical config has no threshold (labels carry no polarity)",
                    ));
                }
                let given = new.categories.unwrap_or_default();
                if given.is_empty() {
                    return Err(ValidationError::Missing {
                        field: "categories",
                        hint: " (a categorical config lists its allowed labels)",
                    }
                    .into());
                }
                if given.len() > MAX_CATEGORIES {
                    return Err(invalid(
                        "categories",
                        format!("{} labels, at most {MAX_CATEGORIES}", given.len()),
                    ));
                }
                for c in given {
                    let c = c.trim().to_owned();
                    if c.is_empty()
                        || c.contains(char::is_control)
                        || c.chars().count() > l.max_id_chars
                    {
                        return Err(invalid(
                            "categories",
                            format!("each label is 1 to {} printable characters", l.max_id_chars),
                        ));
                    }
                    if categories.contains(&c) {
                        return Err(invalid("categories", format!("'{c}' is listed twice")));
                    }
                    categories.push(c);
                }
            }
            _ => {
                if new.categories.is_some_and(|c| !c.is_empty()) {
                    return Err(invalid(
                        "categories",
                        format!(
                            "only categorical configs list labels (this one is {})",
                            data_type.as_str()
                        ),
                    ));
                }
                if data_type == ScoreDataType::Boolean
                    && let Some(t) = threshold
                    && !(0.0..=1.0).contains(&t)
                {
                    return Err(invalid(
                        "threshold",
                        format!("a boolean threshold lies in 0 to 1, got {t}"),
                    ));
                }
            }
        }
        let description = match new.description.map(|d| d.trim().to_owned()) {
            Some(d) if d.chars().count() > l.max_text_chars => {
                return Err(ValidationError::TooLong {
                    field: "description",
                    actual: d.chars().count(),
                    limit: l.max_text_chars,
                    unit: "characters",
                }
                .into());
            }
            Some(d) if d.contains('\0') => {
                return Err(invalid("description", "contains a NUL character"));
            }
            Some(d) if !d.is_empty() => Some(d),
            _ => None,
        };
        let now = now_millis();
        Ok(ScoreConfig {
            name,
            org_id: org.to_owned(),
            data_type,
            min,
            max,
            categories,
            threshold,
            description,
            version: 0,
            created_at: now,
            updated_at: now,
        })
    }

    /// Creates a score config, or writes a new version of it when a field differs.
    pub fn put_score_config(
        &self,
        actor: &Actor,
        new: NewScoreConfig,
    ) -> Result<(ScoreConfig, ConfigOutcome), ServiceError> {
        check_org(&actor.org)?;
        let asked = self.check_score_config(&actor.org, new)?;
        let mut result = None;
        self.store.write(actor, &mut |tx| {
            tx.lock_adapters()?;
            let existing = tx.get_score_config(&asked.name)?;
            let (next, outcome, changes) = match existing {
                None => {
                    let mut c = asked.clone();
                    c.version = 1;
                    let changes = config_changes(None, &c);
                    (c, ConfigOutcome::Created, changes)
                }
                Some(cur) => {
                    let changes = config_changes(Some(&cur), &asked);
                    if changes.is_empty() {
                        result = Some((cur, ConfigOutcome::Unchanged));
                        return Ok(());
                    }
                    let mut c = asked.clone();
                    c.version = cur.version + 1;
                    c.created_at = cur.created_at;
                    (c, ConfigOutcome::Updated, changes)
                }
            };
            let entry = HistoryVersion {
                version: next.version,
                at: next.updated_at,
                actor: actor.user.clone(),
                action: if outcome == ConfigOutcome::Created {
                    ChangeAction::Create
                } else {
                    ChangeAction::Update
                },
                changes,
            };
            tx.put_score_config(&next, &entry)?;
            result = Some((next, outcome));
            Ok(())
        })?;
        result.ok_or_else(|| ServiceError::Internal("a score config write returned nothing".into()))
    }

    /// One score config of the org.
    pub fn get_score_config(&self, org: &str, name: &str) -> Result<ScoreConfig, ServiceError> {
        self.store
            .get_score_config(org, name)?
            .ok_or_else(|| ServiceError::NotFound {
                kind: "score config",
                id: name.to_owned(),
            })
    }

    /// Every score config of the org, by name.
    pub fn score_configs(&self, org: &str) -> Result<Vec<ScoreConfig>, ServiceError> {
        Ok(self.store.score_configs_of(org)?)
    }

    /// Every version of a score config's history, oldest first.
    pub fn score_config_history(
        &self,
        org: &str,
        name: &str,
    ) -> Result<Vec<HistoryVersion>, ServiceError> {
        let versions = self.store.score_config_history(org, name)?;
        if versions.is_empty() {
            return Err(ServiceError::NotFound {
                kind: "score config",
                id: name.to_owned(),
            });
        }
        Ok(versions)
    }

    /// The kind-aware summary of the org's feedback created in the last `window_hours`
    /// (all of it when `None`), optionally for one model or one provider.
    pub fn summary(&self, org: &str, q: &SummaryQuery) -> Result<Summary, ServiceError> {
        let since = q
            .window_hours
            .map(|h| now_millis().saturating_sub(h.saturating_mul(3_600_000)));
        let mut acc = SummaryAcc::default();
        self.store.for_each_record_of(org, &mut |r| {
            let f = &r.feedback;
            if since.is_some_and(|t| f.created_at < t)
                || q.model
                    .as_ref()
                    .is_some_and(|m| f.model_version.as_ref() != Some(m))
                || q.provider
                    .as_ref()
                    .is_some_and(|p| f.provider.as_ref() != Some(p))
            {
                return Ok(());
            }
            acc.add(f);
            Ok(())
        })?;
        Ok(acc.finish(q.window_hours))
    }
}

/// The field changes from `old` (none: a creation) to `new`, over the fields a client sets.
fn config_changes(old: Option<&ScoreConfig>, new: &ScoreConfig) -> Vec<FieldChange> {
    let mut out = Vec::new();
    let mut diff = |field: &str, a: Option<serde_json::Value>, b: serde_json::Value| {
        let b = (!b.is_null()).then_some(b);
        let a = a.filter(|v| !v.is_null());
        if a != b {
            out.push(field_change(field, a.as_ref(), b.as_ref()));
        }
    };
    diff("data_type", old.map(|o| j(&o.data_type)), j(&new.data_type));
    diff("min", old.map(|o| j(&o.min)), j(&new.min));
    diff("max", old.map(|o| j(&o.max)), j(&new.max));
    let cats = |c: &ScoreConfig| {
        if c.categories.is_empty() {
            serde_json::Value::Null
        } else {
            j(&c.categories)
        }
    };
    diff("categories", old.map(cats), cats(new));
    diff("threshold", old.map(|o| j(&o.threshold)), j(&new.threshold));
    diff(
        "description",
        old.map(|o| j(&o.description)),
        j(&new.description),
    );
    out
}

/// A value rendered as JSON.
fn j<T: Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

/// Scope of [`Service::summary`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SummaryQuery {
    /// Only items created in the last this many hours.
    pub window_hours: Option<u64>,
    /// Only this model version.
    pub model: Option<String>,
    /// Only this provider.
    pub provider: Option<String>,
}

/// Ratings seen: how many and their mean.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct RatingStats {
    /// Items with a score.
    pub count: u64,
    /// Their mean score (`null` when none).
    pub average: Option<f64>,
}

/// The counts of one group (a model or a provider).
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct GroupSummary {
    /// Items in the group.
    pub total_count: u64,
    /// Thumbs-up (`type` positive) items.
    pub positive: u64,
    /// Thumbs-down items.
    pub negative: u64,
    /// Items of each kind.
    pub count_by_kind: BTreeMap<String, u64>,
    /// Mean of the scores in the group.
    pub average_rating: Option<f64>,
}

/// The body of `GET /feedback/summary`: what the Python module's `aggregate` returns
/// (`total_count`, `average_rating`, `count_by_type`) and the kinds' details.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Summary {
    /// The window, in hours (`null`: all time).
    pub window_hours: Option<u64>,
    /// Items in scope.
    pub total_count: u64,
    /// Mean of every score in scope (`null` when none).
    pub average_rating: Option<f64>,
    /// Items of each `type` (positive, negative).
    pub count_by_type: BTreeMap<String, u64>,
    /// Items of each kind (every kind listed, zeros included).
    pub count_by_kind: BTreeMap<String, u64>,
    /// Ratings per score config (items with a score and a config).
    pub ratings_by_config: BTreeMap<String, RatingStats>,
    /// Label items per label.
    pub label_distribution: BTreeMap<String, u64>,
    /// Per model version (`(none)` for items without one).
    pub by_model: BTreeMap<String, GroupSummary>,
    /// Per provider (`(none)` for items without one).
    pub by_provider: BTreeMap<String, GroupSummary>,
}

/// The key of items without a model or provider in the per-group maps.
pub const NO_GROUP: &str = "(none)";

#[derive(Default)]
struct GroupAcc {
    total: u64,
    positive: u64,
    negative: u64,
    kinds: BTreeMap<String, u64>,
    scores: (u64, f64),
}

impl GroupAcc {
    fn add(&mut self, f: &crate::model::Feedback) {
        self.total += 1;
        match f.feedback_type {
            crate::model::FeedbackType::Positive => self.positive += 1,
            crate::model::FeedbackType::Negative => self.negative += 1,
        }
        *self.kinds.entry(f.kind.as_str().to_owned()).or_default() += 1;
        if let Some(s) = f.score {
            self.scores.0 += 1;
            self.scores.1 += s;
        }
    }

    fn finish(self) -> GroupSummary {
        GroupSummary {
            total_count: self.total,
            positive: self.positive,
            negative: self.negative,
            count_by_kind: self.kinds,
            average_rating: mean(self.scores),
        }
    }
}

fn mean((n, sum): (u64, f64)) -> Option<f64> {
    (n > 0).then(|| sum / n as f64)
}

#[derive(Default)]
struct SummaryAcc {
    all: GroupAcc,
    configs: BTreeMap<String, (u64, f64)>,
    labels: BTreeMap<String, u64>,
    models: BTreeMap<String, GroupAcc>,
    providers: BTreeMap<String, GroupAcc>,
}

impl SummaryAcc {
    fn add(&mut self, f: &crate::model::Feedback) {
        self.all.add(f);
        if let (Some(c), Some(s)) = (&f.score_config, f.score) {
            let e = self.configs.entry(c.clone()).or_default();
            e.0 += 1;
            e.1 += s;
        }
        if f.kind == FeedbackKind::Label
            && let Some(l) = &f.label
        {
            *self.labels.entry(l.clone()).or_default() += 1;
        }
        let group = |v: &Option<String>| v.clone().unwrap_or_else(|| NO_GROUP.to_owned());
        self.models
            .entry(group(&f.model_version))
            .or_default()
            .add(f);
        self.providers.entry(group(&f.provider)).or_default().add(f);
    }

    fn finish(self, window_hours: Option<u64>) -> Summary {
        let mut count_by_kind: BTreeMap<String, u64> = FeedbackKind::ALL
            .iter()
            .map(|k| (k.as_str().to_owned(), 0))
            .collect();
        count_by_kind.extend(self.all.kinds.clone());
        let count_by_type = BTreeMap::from([
            ("positive".to_owned(), self.all.positive),
            ("negative".to_owned(), self.all.negative),
        ]);
        Summary {
            window_hours,
            total_count: self.all.total,
            average_rating: mean(self.all.scores),
            count_by_type,
            count_by_kind,
            ratings_by_config: self
                .configs
                .into_iter()
                .map(|(k, v)| {
                    (
                        k,
                        RatingStats {
                            count: v.0,
                            average: mean(v),
                        },
                    )
                })
                .collect(),
            label_distribution: self.labels,
            by_model: self
                .models
                .into_iter()
                .map(|(k, v)| (k, v.finish()))
                .collect(),
            by_provider: self
                .providers
                .into_iter()
                .map(|(k, v)| (k, v.finish()))
                .collect(),
        }
    }
}
