//! The graph dump format (JSONL, one record per line with a `kind`), used for backup,
//! restore and benchmarks: `adapter`, `derived_from`, `feedback`, `feedback_for`.
//!
//! `load` checks the whole file before writing anything (syntax, ids, duplicates,
//! references, one parent per adapter, no DERIVED_FROM cycles), then writes every record and
//! makes it durable once. Statuses and ids are kept as given: a load restores, it does not
//! re-validate. `dump` writes an org back in the same format (parents before children), so
//! dump then load gives the same graph.

use std::collections::{HashMap, HashSet};
use std::io::Write;

use rustc_hash::FxHashMap;

use serde::{Deserialize, Serialize};

use super::{Service, ServiceError};
use crate::model::{
    Actor, Adapter, Feedback, FeedbackKind, FeedbackLink, FeedbackType, LinkSource, Metadata,
    Millis, ValidationStatus, now_millis,
};
use crate::store::FeedbackRecord;
use crate::validate::{self, FieldLimits};

/// One line of a dump.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum DumpRecord {
    /// An adapter (parents come before children in a dump).
    Adapter {
        /// Adapter id.
        id: String,
        /// Display name.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// LoRA rank.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rank: Option<u32>,
        /// Life-cycle status (e.g. active, retired).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status: Option<String>,
        /// Creation time, ms.
        #[serde(default)]
        created_at: Millis,
        /// Version label.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        version: Option<String>,
        /// Base model.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        base_model: Option<String>,
    },
    /// `(child)-[:DERIVED_FROM]->(parent)`.
    DerivedFrom {
        /// Child adapter.
        from: String,
        /// Parent adapter.
        to: String,
    },
    /// A feedback item.
    Feedback(Box<DumpFeedback>),
    /// `(feedback)-[:FEEDBACK_FOR]->(adapter)`.
    FeedbackFor {
        /// Feedback id.
        from: String,
        /// Adapter id.
        to: String,
        /// When the edge was made (default: the feedback's creation time).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        created_at: Option<Millis>,
        /// auto or manual (default manual).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        source: Option<LinkSource>,
    },
}

/// A feedback line of a dump.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DumpFeedback {
    /// Id, kept as given.
    pub id: String,
    /// positive or negative.
    #[serde(rename = "type")]
    pub feedback_type: FeedbackType,
    /// Status, kept as given.
    pub validation_status: ValidationStatus,
    /// Used by training.
    pub used_for_training: bool,
    /// Model version.
    pub model_version: Option<String>,
    /// Question.
    pub question: String,
    /// Answer.
    pub answer: String,
    /// Creation time, ms.
    pub created_at: Millis,
    /// Optional fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correction: Option<String>,
    /// Comment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// End user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// Session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// Interaction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interaction_id: Option<String>,
    /// Adapter named at submit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapter_id: Option<String>,
    /// Its version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapter_version: Option<String>,
    /// Rating.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    /// Batch that used it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub training_batch_id: u64,
    /// Extra JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
    /// The feedback kind (the line's `kind` names the record type): absent for `thumbs`.
    #[serde(default, skip_serializing_if = "FeedbackKind::is_thumbs")]
    pub feedback_kind: FeedbackKind,
    /// The label of a `label` item.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Model provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// The score config the item was checked against when submitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score_config: Option<String>,
}

/// A FEEDBACK_FOR line waiting for its ends to be checked: line, from, to, time, source.
type PendingEdge = (usize, String, String, Option<Millis>, Option<LinkSource>);

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// What a load did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LoadSummary {
    /// Adapters written.
    pub adapters: usize,
    /// DERIVED_FROM edges.
    pub derived_from: usize,
    /// Feedback items.
    pub feedback: usize,
    /// FEEDBACK_FOR edges.
    pub feedback_for: usize,
}

/// A failed load: the first bad line (or 0) and why. Unless `partial` is set, nothing of
/// the load is left in the store.
#[derive(Debug, thiserror::Error)]
#[error("{}{message}", line_prefix(.line))]
pub struct LoadError {
    /// 1-based line number (0 when the problem is not one line's).
    pub line: usize,
    /// What is wrong.
    pub message: String,
    /// The load could not be taken back completely (its final sync failed): some of it
    /// may be on disk. `feedgraph check` tells what state the store is in.
    pub partial: bool,
}

/// `line N: ` for a line's problem, nothing for the whole load's.
fn line_prefix(line: &usize) -> String {
    match line {
        0 => String::new(),
        n => format!("line {n}: "),
    }
}

impl LoadError {
    /// A load error about `line` (0: not one line's) that left nothing behind.
    pub fn new(line: usize, message: impl Into<String>) -> LoadError {
        LoadError {
            line,
            message: message.into(),
            partial: false,
        }
    }
}

fn bad(line: usize, message: impl Into<String>) -> LoadError {
    LoadError::new(line, message)
}

/// Parses dump text into records with their line numbers; the first bad line is the error.
pub fn parse_dump(text: &str) -> Result<Vec<(usize, DumpRecord)>, LoadError> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| parse_line(i + 1, line))
        .collect()
}

/// Parses one line of a dump (`line_no` is 1-based, for the error).
pub fn parse_line(line_no: usize, line: &str) -> Result<(usize, DumpRecord), LoadError> {
    serde_json::from_str(line)
        .map(|rec| (line_no, rec))
        .map_err(|e| bad(line_no, e.to_string()))
}

/// A dump record after the checks it can pass on its own, turned into what the load
/// writes (see [`check_record`]).
#[doc(hidden)]
#[derive(Debug, Clone, PartialEq)]
pub enum Staged {
    /// An adapter (its parent is set once every DERIVED_FROM line is known).
    Adapter(Box<Adapter>),
    /// `(from)-[:DERIVED_FROM]->(to)`.
    DerivedFrom {
        /// Child adapter.
        from: String,
        /// Parent adapter.
        to: String,
    },
    /// A feedback record without its edges.
    Feedback(Box<FeedbackRecord>),
    /// `(from)-[:FEEDBACK_FOR]->(to)`.
    FeedbackFor {
        /// Feedback id.
        from: String,
        /// Adapter id.
        to: String,
        /// When the edge was made.
        created_at: Option<Millis>,
        /// auto or manual.
        source: Option<LinkSource>,
    },
}

fn id_ok(line: usize, field: &'static str, v: &str, limits: &FieldLimits) -> Result<(), LoadError> {
    if v.is_empty() || v.trim() != v {
        return Err(bad(
            line,
            format!("{field} '{v}' is empty or has surrounding spaces"),
        ));
    }
    validate::check_id_text(field, v, limits).map_err(|e| bad(line, e.to_string()))
}

/// The checks `load` makes on one record by itself (ids, text and metadata limits), for
/// `org` at time `now`; what needs the other lines (duplicates, references, cycles) is
/// left to the load. Public for the fuzz targets, which feed it single lines.
#[doc(hidden)]
pub fn check_record(
    line: usize,
    rec: DumpRecord,
    org: &str,
    now: Millis,
    limits: &FieldLimits,
) -> Result<Staged, LoadError> {
    Ok(match rec {
        DumpRecord::Adapter {
            id,
            name,
            rank,
            status,
            created_at,
            version,
            base_model,
        } => {
            id_ok(line, "id", &id, limits)?;
            let id = validate::check_adapter_id("id", id).map_err(|e| bad(line, e.to_string()))?;
            let mut meta = serde_json::Map::new();
            if let Some(n) = name {
                meta.insert("name".into(), n.into());
            }
            if let Some(r) = rank {
                meta.insert("rank".into(), r.into());
            }
            if let Some(s) = status {
                meta.insert("status".into(), s.into());
            }
            Staged::Adapter(Box::new(Adapter {
                id,
                org_id: org.to_owned(),
                version,
                base_model,
                derived_from: None,
                metadata: Metadata(meta),
                created_at: if created_at == 0 { now } else { created_at },
                source: LinkSource::Manual,
                record_version: 1,
            }))
        }
        DumpRecord::DerivedFrom { from, to } => Staged::DerivedFrom { from, to },
        DumpRecord::Feedback(f) => {
            let f = *f;
            id_ok(line, "id", &f.id, limits)?;
            for (field, v) in [("provider", &f.provider), ("score_config", &f.score_config)] {
                if let Some(v) = v {
                    id_ok(line, field, v, limits)?;
                }
            }
            if f.label.as_ref().is_some_and(|l| {
                l.trim().is_empty() || l.contains('\0') || l.chars().count() > limits.max_id_chars
            }) {
                return Err(bad(
                    line,
                    "label is blank, holds a NUL or is over the id limit",
                ));
            }
            if f.question.chars().count() > limits.max_text_chars
                || f.answer.chars().count() > limits.max_text_chars
            {
                return Err(bad(line, "question or answer over the text limit"));
            }
            let metadata = validate::check_metadata("metadata", f.metadata, limits)
                .map_err(|e| bad(line, e.to_string()))?;
            Staged::Feedback(Box::new(FeedbackRecord {
                feedback: Feedback {
                    id: f.id,
                    org_id: org.to_owned(),
                    feedback_type: f.feedback_type,
                    validation_status: f.validation_status,
                    validation_reasons: Vec::new(),
                    created_at: f.created_at,
                    updated_at: f.created_at,
                    version: 1,
                    used_for_training: f.used_for_training,
                    training_batch_id: f.training_batch_id,
                    model_version: f.model_version,
                    adapter_id: f.adapter_id,
                    adapter_version: f.adapter_version,
                    user_id: f.user_id,
                    session_id: f.session_id,
                    interaction_id: f.interaction_id,
                    score: f.score,
                    question: f.question,
                    answer: f.answer,
                    correction: f.correction,
                    comment: f.comment,
                    metadata,
                    pii: Vec::new(),
                    kind: f.feedback_kind,
                    label: f.label,
                    provider: f.provider,
                    score_config: f.score_config,
                    erased_at: None,
                    erased_by: None,
                },
                links: Vec::new(),
                lease: None,
            }))
        }
        DumpRecord::FeedbackFor {
            from,
            to,
            created_at,
            source,
        } => Staged::FeedbackFor {
            from,
            to,
            created_at,
            source,
        },
    })
}

impl Service {
    /// Loads dump records into `org`, all or nothing, with one durable sync at the end.
    ///
    /// `records` may still be being parsed (an `Err` item, a bad line, ends the load): the
    /// load checks each record as it comes and writes a feedback item's history entry at
    /// once, so those writes overlap the parsing. The records themselves are written only
    /// after the whole input has checked out; if anything fails before that, the history
    /// entries written so far are taken back and nothing of the load remains.
    /// `progress(written, total)` follows the writing of the records.
    pub fn load_dump(
        &self,
        org: &str,
        records: impl IntoIterator<Item = Result<(usize, DumpRecord), LoadError>>,
        mut progress: impl FnMut(u64, u64),
    ) -> Result<LoadSummary, LoadError> {
        super::check_org(org).map_err(|e| bad(0, e.to_string()))?;
        let limits = self.limits.clone();
        // Pass 1: collect and check everything. What already exists is looked up in the
        // graph index (every stored record is in it), not in sled, one lookup per line.
        let existing = self.graph.org(org);
        let mut adapters: Vec<Adapter> = Vec::new();
        let mut adapter_line: FxHashMap<String, usize> = FxHashMap::default();
        let mut parents: FxHashMap<String, (String, usize)> = FxHashMap::default();
        let mut feedback: Vec<FeedbackRecord> = Vec::new();
        let mut feedback_index: FxHashMap<String, usize> = FxHashMap::default();
        let mut edges: Vec<PendingEdge> = Vec::new();
        let now = now_millis();
        let actor = Actor::new(org, "load");
        let check = || -> Result<(), LoadError> {
            for item in records {
                let (line, rec) = item?;
                match check_record(line, rec, org, now, &limits)? {
                    Staged::Adapter(a) => {
                        if adapter_line.insert(a.id.clone(), line).is_some()
                            || existing
                                .as_ref()
                                .is_some_and(|g| g.adapter_row(&a.id).is_some())
                        {
                            return Err(bad(
                                line,
                                format!("adapter '{}' appears twice or already exists", a.id),
                            ));
                        }
                        adapters.push(*a);
                    }
                    Staged::DerivedFrom { from, to } => {
                        if let Some((p, l)) = parents.get(&from) {
                            return Err(bad(
                                line,
                                format!(
                                    "adapter '{from}' already derives from '{p}' (line {l}); one parent each"
                                ),
                            ));
                        }
                        parents.insert(from, (to, line));
                    }
                    Staged::Feedback(r) => {
                        let id = &r.feedback.id;
                        if feedback_index.contains_key(id)
                            || existing
                                .as_ref()
                                .is_some_and(|g| g.feedback_row(id).is_some())
                        {
                            return Err(bad(
                                line,
                                format!("feedback '{id}' appears twice or already exists"),
                            ));
                        }
                        feedback_index.insert(id.clone(), feedback.len());
                        feedback.push(*r);
                    }
                    Staged::FeedbackFor {
                        from,
                        to,
                        created_at,
                        source,
                    } => edges.push((line, from, to, created_at, source)),
                }
            }
            let adapter_known = |id: &str| -> Result<bool, LoadError> {
                Ok(adapter_line.contains_key(id)
                    || existing
                        .as_ref()
                        .is_some_and(|g| g.adapter_row(id).is_some()))
            };
            for (child, (parent, line)) in &parents {
                if !adapter_line.contains_key(child) {
                    return Err(bad(
                        *line,
                        format!("derived_from names adapter '{child}' that is not in the file"),
                    ));
                }
                if !adapter_known(parent)? {
                    return Err(bad(
                        *line,
                        format!("derived_from names unknown parent adapter '{parent}'"),
                    ));
                }
            }
            // No cycles: walk up from every child (existing adapters have acyclic lineage).
            for (child, (_, line)) in &parents {
                let mut seen = HashSet::from([child.as_str()]);
                let mut cur = child.as_str();
                while let Some((p, _)) = parents.get(cur) {
                    if !seen.insert(p.as_str()) {
                        return Err(bad(
                            *line,
                            format!("DERIVED_FROM from '{child}' closes a cycle"),
                        ));
                    }
                    cur = p;
                }
            }
            for (line, from, to, created_at, source) in edges {
                let Some(&i) = feedback_index.get(&from) else {
                    return Err(bad(
                        line,
                        format!("feedback_for names feedback '{from}' that is not in the file"),
                    ));
                };
                if !adapter_known(&to)? {
                    return Err(bad(
                        line,
                        format!("feedback_for names unknown adapter '{to}'"),
                    ));
                }
                let r = &mut feedback[i];
                if r.links.iter().any(|l| l.adapter_id == to) {
                    return Err(bad(line, format!("duplicate edge {from} -> {to}")));
                }
                let at = created_at.unwrap_or(r.feedback.created_at);
                r.links.push(FeedbackLink {
                    feedback_id: from,
                    adapter_id: to,
                    created_at: at,
                    source: source.unwrap_or(LinkSource::Manual),
                    metadata: Metadata::default(),
                });
            }
            for a in &mut adapters {
                a.derived_from = parents.get(&a.id).map(|(p, _)| p.clone());
            }
            // Parents before children, so the graph never sees a dangling parent.
            let depth_of = |id: &str| {
                let mut d = 0usize;
                let mut cur = id;
                while let Some((p, _)) = parents.get(cur) {
                    d += 1;
                    cur = p;
                }
                d
            };
            adapters.sort_by_cached_key(|a| depth_of(&a.id));
            Ok(())
        };
        check()?;
        drop(existing);
        tracing::info!(
            feedback = feedback.len(),
            adapters = adapters.len(),
            "dump checked"
        );
        // Pass 2: write, then one durable sync. When the org has no graph yet, its graph is
        // built on another thread while the records are written, and published only once
        // they are durable; otherwise the records are applied to the live graph after the
        // sync, as every write is.
        let summary = LoadSummary {
            adapters: adapters.len(),
            derived_from: parents.len(),
            feedback: feedback.len(),
            feedback_for: feedback.iter().map(|r| r.links.len()).sum(),
        };
        let total = (adapters.len() + feedback.len()) as u64;
        let adapter_count = adapters.len() as u64;
        let changes = crate::store::ChangeSet {
            adapters,
            links: Vec::new(),
            feedback,
            linked_only: false,
        };
        // Counted until the graph has been offered the change (see `InFlight`).
        let _in_flight = self.in_flight.enter();
        let staged = std::thread::scope(|scope| {
            let loads_something = !changes.adapters.is_empty() || !changes.feedback.is_empty();
            let staged = (loads_something && self.graph.org(org).is_none())
                .then(|| scope.spawn(|| crate::graph::OrgGraph::from_changes(&changes)));
            let written = self
                .store
                .load(&actor, &changes.adapters, &changes.feedback, &mut |n| {
                    progress(adapter_count + n, total)
                });
            if let Err((e, partial)) = written {
                let step = match e {
                    crate::store::StoreError::Sync(_) => "the final sync failed",
                    _ => "writing the records failed",
                };
                return Err(LoadError {
                    line: 0,
                    message: format!("{step}: {e}"),
                    partial,
                });
            }
            tracing::info!("durable; indexing");
            Ok::<_, LoadError>(staged.and_then(|h| h.join().ok()))
        })?;
        match staged {
            Some(graph) => {
                if !self.graph.install(org, graph) {
                    // Someone else wrote to the org meanwhile: merge into the live graph.
                    self.graph.apply_records(org, &changes).wait();
                }
            }
            None => self.graph.apply_records(org, &changes).wait(),
        }
        // Freeing a million records takes most of a second; the caller need not wait.
        std::thread::spawn(move || drop(changes));
        Ok(summary)
    }

    /// Writes `org` as a dump: adapters (parents first), DERIVED_FROM edges, feedback,
    /// FEEDBACK_FOR edges. Returns the number of lines.
    pub fn dump(&self, org: &str, out: &mut dyn Write) -> Result<u64, ServiceError> {
        let io = |e: std::io::Error| ServiceError::BadRequest(format!("writing the dump: {e}"));
        let mut adapters = self.store.adapters_of(org)?;
        let parent: HashMap<String, Option<String>> = adapters
            .iter()
            .map(|a| (a.id.clone(), a.derived_from.clone()))
            .collect();
        let depth = |id: &str| {
            let mut d = 0usize;
            let mut cur = id.to_owned();
            while let Some(Some(p)) = parent.get(&cur) {
                d += 1;
                if d > parent.len() {
                    break;
                }
                cur = p.clone();
            }
            d
        };
        adapters.sort_by_cached_key(|a| (depth(&a.id), a.id.clone()));
        let mut lines = 0u64;
        let mut emit = |rec: &DumpRecord, out: &mut dyn Write| -> Result<(), ServiceError> {
            let text =
                serde_json::to_string(rec).map_err(|e| ServiceError::BadRequest(e.to_string()))?;
            writeln!(out, "{text}").map_err(io)?;
            lines += 1;
            Ok(())
        };
        for a in &adapters {
            let m = &a.metadata.0;
            emit(
                &DumpRecord::Adapter {
                    id: a.id.clone(),
                    name: m.get("name").and_then(|v| v.as_str()).map(str::to_owned),
                    rank: m
                        .get("rank")
                        .and_then(|v| v.as_u64())
                        .and_then(|r| u32::try_from(r).ok()),
                    status: m.get("status").and_then(|v| v.as_str()).map(str::to_owned),
                    created_at: a.created_at,
                    version: a.version.clone(),
                    base_model: a.base_model.clone(),
                },
                out,
            )?;
        }
        for a in &adapters {
            if let Some(p) = &a.derived_from {
                emit(
                    &DumpRecord::DerivedFrom {
                        from: a.id.clone(),
                        to: p.clone(),
                    },
                    out,
                )?;
            }
        }
        let mut links = Vec::new();
        let mut failed: Result<(), ServiceError> = Ok(());
        self.store.for_each_record_of(org, &mut |r| {
            if failed.is_err() {
                return Ok(());
            }
            let f = r.feedback;
            links.extend(r.links);
            let emitted = emit(
                &DumpRecord::Feedback(Box::new(DumpFeedback {
                    id: f.id,
                    feedback_type: f.feedback_type,
                    validation_status: f.validation_status,
                    used_for_training: f.used_for_training,
                    model_version: f.model_version,
                    question: f.question,
                    answer: f.answer,
                    created_at: f.created_at,
                    correction: f.correction,
                    comment: f.comment,
                    user_id: f.user_id,
                    session_id: f.session_id,
                    interaction_id: f.interaction_id,
                    adapter_id: f.adapter_id,
                    adapter_version: f.adapter_version,
                    score: f.score,
                    training_batch_id: f.training_batch_id,
                    metadata: if f.metadata.is_empty() {
                        None
                    } else {
                        Some(f.metadata.0)
                    },
                    feedback_kind: f.kind,
                    label: f.label,
                    provider: f.provider,
                    score_config: f.score_config,
                })),
                out,
            );
            if let Err(e) = emitted {
                failed = Err(e);
            }
            Ok(())
        })?;
        failed?;
        for l in links {
            emit(
                &DumpRecord::FeedbackFor {
                    from: l.feedback_id,
                    to: l.adapter_id,
                    created_at: Some(l.created_at),
                    source: Some(l.source),
                },
                out,
            )?;
        }
        out.flush().map_err(io)?;
        Ok(lines)
    }
}
