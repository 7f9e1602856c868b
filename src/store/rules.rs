//! Domain rules every backend obeys, written once: how history entries render a change,
//! when an idempotency key replays, conflicts or counts as absent, how a re-created
//! adapter merges with the stored one, and the lineage cycle check. Backends call these
//! inside their own transactions; none of them does I/O except through the reader it is
//! given.

use serde::{Deserialize, Serialize};

use super::{AdapterOutcome, FeedbackRecord, IdempotencyKey, StoreError};
use crate::model::{
    Actor, Adapter, ChangeAction, Feedback, FeedbackLink, FieldChange, HistoryVersion, LinkSource,
    Metadata, Millis,
};

/// What a backend remembers about a used idempotency key. `at` (the first use, ms since
/// epoch) has been stored since keys were introduced, so expiry needs no format change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    /// The item the key's first use stored.
    pub feedback_id: String,
    /// The hash of that request.
    pub request_hash: u64,
    /// When the key was first used, ms since epoch.
    pub at: Millis,
}

impl IdempotencyRecord {
    /// Whether the entry is `ttl_ms` or more old at `now` (then it counts as absent).
    pub fn expired(&self, now: Millis, ttl_ms: Millis) -> bool {
        now.saturating_sub(self.at) >= ttl_ms
    }
}

/// What an earlier use of an idempotency key means for a submit.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyVerdict {
    /// No live earlier use: store the item and remember the key.
    Fresh,
    /// The same request was stored before: answer with that item, write nothing.
    Replay(Box<Feedback>),
}

/// Judges a submit carrying `key` against the key's stored entry `seen` and the item that
/// entry names (`original`, looked up by the backend; `None` if the record is missing).
/// An expired entry counts as absent (this use overwrites it); an entry whose record is
/// missing belongs to a write that never committed; the same key with another request is
/// a conflict.
pub fn judge_key(
    key: &IdempotencyKey,
    seen: Option<&IdempotencyRecord>,
    original: Option<Feedback>,
    now: Millis,
    ttl_ms: Millis,
) -> Result<KeyVerdict, StoreError> {
    let Some(seen) = seen else {
        return Ok(KeyVerdict::Fresh);
    };
    if seen.expired(now, ttl_ms) {
        return Ok(KeyVerdict::Fresh);
    }
    let Some(original) = original else {
        return Ok(KeyVerdict::Fresh);
    };
    if seen.request_hash != key.request_hash {
        return Err(StoreError::Conflict(format!(
            "Idempotency-Key '{}' was already used for a different request",
            key.key
        )));
    }
    Ok(KeyVerdict::Replay(Box::new(original)))
}

/// The version-1 record of a new item: the item, and its FEEDBACK_FOR edge (source auto)
/// if it names an adapter.
pub fn new_record(fb: &Feedback) -> FeedbackRecord {
    let mut record = FeedbackRecord {
        feedback: fb.clone(),
        links: Vec::new(),
        lease: None,
    };
    if let Some(adapter_id) = &fb.adapter_id {
        record.links.push(FeedbackLink {
            feedback_id: fb.id.clone(),
            adapter_id: adapter_id.clone(),
            created_at: fb.created_at,
            source: LinkSource::Auto,
            metadata: Metadata::default(),
        });
    }
    record
}

/// The history entry of a new item, written compact: the fields are the record's own
/// until its first update (see [`expand_creation`]).
pub fn submit_entry(actor: &Actor, fb: &Feedback, action: ChangeAction) -> HistoryVersion {
    HistoryVersion {
        version: fb.version,
        at: fb.created_at,
        actor: actor.user.clone(),
        action,
        changes: Vec::new(),
    }
}

/// Fills in a compact creation entry from the record it describes: while an item is at
/// version 1 its creation entry lists no fields (they would only repeat the record, half
/// the bytes of a submit); readers render them here, and the first update writes them out.
pub fn expand_creation(current: &Feedback, entries: &mut [HistoryVersion]) {
    if current.version == 1
        && let Some(first) = entries.first_mut()
        && first.version == 1
        && first.changes.is_empty()
    {
        first.changes = creation_changes(current, FEEDBACK_SKIP);
    }
}

/// Before the first update of an item, its compact creation entry must be written out
/// with the fields of the version about to be replaced: the full entry to write, or
/// `None` if `current` is past version 1 or `entry` lists its fields already.
pub fn written_out_creation(current: &Feedback, entry: &HistoryVersion) -> Option<HistoryVersion> {
    if current.version != 1 || entry.version != 1 || !entry.changes.is_empty() {
        return None;
    }
    Some(HistoryVersion {
        changes: creation_changes(current, FEEDBACK_SKIP),
        ..entry.clone()
    })
}

/// The history entry of a record created by a bulk load.
pub fn import_entry(actor: &Actor, version: u64, at: Millis) -> HistoryVersion {
    HistoryVersion {
        version,
        at,
        actor: actor.user.clone(),
        action: ChangeAction::Import,
        changes: Vec::new(),
    }
}

/// An adapter created because feedback named it (source auto, nothing described yet).
pub fn auto_adapter(actor: &Actor, adapter_id: &str, at: Millis) -> (Adapter, HistoryVersion) {
    let adapter = Adapter {
        id: adapter_id.to_owned(),
        org_id: actor.org.clone(),
        version: None,
        base_model: None,
        derived_from: None,
        metadata: Metadata::default(),
        created_at: at,
        source: LinkSource::Auto,
        record_version: 1,
    };
    let entry = HistoryVersion {
        version: 1,
        at,
        actor: actor.user.clone(),
        action: ChangeAction::Create,
        changes: creation_changes(&adapter, ADAPTER_SKIP),
    };
    (adapter, entry)
}

/// Adds the FEEDBACK_FOR edge `new` to a record, or `None` if the record has an edge to
/// that adapter already (linking is idempotent). An erased record gets the edge without
/// its metadata.
pub fn add_link(
    current: &FeedbackRecord,
    new: &FeedbackLink,
) -> Option<(FeedbackRecord, ChangeAction, Vec<FieldChange>)> {
    if current.links.iter().any(|l| l.adapter_id == new.adapter_id) {
        return None;
    }
    let mut next = current.clone();
    let mut link = new.clone();
    if current.feedback.is_erased() {
        // An erased item keeps no free text: the edge is made, its metadata is not kept.
        link.metadata = Default::default();
    }
    next.links.push(link);
    Some((next, ChangeAction::Link, link_changes(new)))
}

/// The field changes of the history entry that records the new edge `new`.
pub fn link_changes(new: &FeedbackLink) -> Vec<FieldChange> {
    vec![
        field_change("links", None, Some(new.adapter_id.as_str())),
        field_change("link_source", None, Some(new.source.as_str())),
    ]
}

/// Walks up the lineage from `parent` through `get_adapter`; meeting `child` means the new
/// DERIVED_FROM edge would close a cycle. The caller holds whatever makes the lineage
/// stable while it writes (one lock, or a transaction lock per org).
pub fn check_lineage(
    child: &str,
    parent: &str,
    get_adapter: &mut dyn FnMut(&str) -> Result<Option<Adapter>, StoreError>,
) -> Result<(), StoreError> {
    let mut chain = vec![child.to_owned(), parent.to_owned()];
    let mut cursor = parent.to_owned();
    loop {
        if cursor == child {
            return Err(StoreError::Cycle {
                child: child.to_owned(),
                parent: parent.to_owned(),
                path: chain.join(" -> "),
            });
        }
        let Some(node) = get_adapter(&cursor)? else {
            if cursor == parent {
                return Err(StoreError::UnknownParent(parent.to_owned()));
            }
            return Err(StoreError::Conflict(format!(
                "adapter '{cursor}' in the lineage of '{parent}' is missing"
            )));
        };
        match node.derived_from {
            Some(next) => {
                chain.push(next.clone());
                cursor = next;
            }
            None => return Ok(()),
        }
    }
}

/// What an adapter create request does to the stored adapter `existing`: the record to
/// write with its history entry and the outcome, or `None` when nothing changes.
///
/// Re-creating an identical adapter changes nothing. An existing adapter without a
/// parent may gain one, and missing descriptive fields are filled in; changing an
/// existing parent is a conflict. An adapter created explicitly before takes the same
/// request again as a no-op and a different one as a conflict, never a silent merge.
pub fn plan_adapter(
    actor: &Actor,
    new: &Adapter,
    existing: Option<Adapter>,
) -> Result<Option<(Adapter, HistoryVersion, AdapterOutcome)>, StoreError> {
    let (record, outcome, changes) = match existing {
        None => {
            let rec = Adapter {
                org_id: actor.org.clone(),
                record_version: 1,
                ..new.clone()
            };
            let ch = creation_changes(&rec, ADAPTER_SKIP);
            (rec, AdapterOutcome::Created, ch)
        }
        Some(old) => {
            if let (Some(p_old), Some(p_new)) = (&old.derived_from, &new.derived_from)
                && p_old != p_new
            {
                return Err(StoreError::Conflict(format!(
                    "adapter '{}' already derives from '{p_old}'; an adapter has one \
                     parent and it cannot be changed to '{p_new}'",
                    new.id
                )));
            }
            if old.source == LinkSource::Manual {
                let differs: Vec<&str> = [
                    ("version", old.version != new.version),
                    ("base_model", old.base_model != new.base_model),
                    ("derived_from", old.derived_from != new.derived_from),
                    ("metadata", old.metadata != new.metadata),
                ]
                .into_iter()
                .filter_map(|(name, d)| d.then_some(name))
                .collect();
                if differs.is_empty() {
                    return Ok(None);
                }
                return Err(StoreError::Conflict(format!(
                    "adapter '{}' exists with other values for: {}; repeat the \
                     request that created it, or create an adapter with a new id",
                    new.id,
                    differs.join(", ")
                )));
            }
            // Auto-created when feedback first named it: this request describes it,
            // once, and it becomes an explicitly created adapter.
            let mut rec = old.clone();
            let mut ch = vec![field_change(
                "source",
                Some(&old.source),
                Some(&LinkSource::Manual),
            )];
            rec.source = LinkSource::Manual;
            macro_rules! fill {
                ($field:ident) => {
                    if new.$field.is_some() && new.$field != old.$field {
                        ch.push(field_change(
                            stringify!($field),
                            old.$field.as_ref(),
                            new.$field.as_ref(),
                        ));
                        rec.$field = new.$field.clone();
                    }
                };
            }
            fill!(derived_from);
            fill!(version);
            fill!(base_model);
            if !new.metadata.is_empty() && new.metadata != old.metadata {
                ch.push(field_change(
                    "metadata",
                    Some(&old.metadata),
                    Some(&new.metadata),
                ));
                rec.metadata = new.metadata.clone();
            }
            rec.record_version += 1;
            (rec, AdapterOutcome::Updated, ch)
        }
    };
    let entry = HistoryVersion {
        version: record.record_version,
        at: new.created_at,
        actor: actor.user.clone(),
        action: ChangeAction::Create,
        changes,
    };
    Ok(Some((record, entry, outcome)))
}

/// Renders a value as compact JSON for history entries.
fn json_text<T: Serialize + ?Sized>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|e| format!("<unrenderable: {e}>"))
}

/// The field changes that describe creating `record`: every non-null, non-empty field,
/// in field-name order.
///
/// On the submit path: the record is rendered to JSON once and each field's text is cut
/// out of it, rather than building a `serde_json::Value` tree and rendering every field
/// again.
pub fn creation_changes<T: Serialize>(record: &T, skip: &[&str]) -> Vec<FieldChange> {
    let Ok(text) = serde_json::to_string(record) else {
        return Vec::new();
    };
    let Ok(fields) = serde_json::from_str::<
        std::collections::BTreeMap<&str, &serde_json::value::RawValue>,
    >(&text) else {
        return Vec::new();
    };
    fields
        .into_iter()
        .filter(|(k, v)| !skip.contains(k) && !matches!(v.get(), "null" | "{}" | "[]"))
        .map(|(field, v)| FieldChange {
            field: field.to_owned(),
            old: None,
            new: Some(v.get().to_owned()),
        })
        .collect()
}

/// One field change from `old` to `new`, rendered as JSON.
pub fn field_change<T: Serialize + ?Sized>(
    field: &str,
    old: Option<&T>,
    new: Option<&T>,
) -> FieldChange {
    FieldChange {
        field: field.to_owned(),
        old: old.map(json_text),
        new: new.map(json_text),
    }
}

/// Fields a feedback creation entry does not list (they are the record's identity).
pub const FEEDBACK_SKIP: &[&str] = &["id", "org_id", "version", "created_at", "updated_at"];
/// Fields an adapter creation entry does not list.
pub const ADAPTER_SKIP: &[&str] = &["id", "org_id", "record_version", "created_at"];
