//! Erasure records every backend keeps: the job an erasure runs as and, once it is done,
//! the receipt it leaves. A record never holds erased content: the subject of a user or
//! session erasure is kept only as a SHA-256 of the value.
//!
//! An erasure is written as a job (`running`, with the ids of the items it covers) before
//! any item is touched, then each item is erased, then the record is rewritten as `done`
//! with its counts. A job found `running` at start-up is carried to the end (every step
//! is idempotent), so a crash never leaves a half-applied erasure without a record.

use serde::{Deserialize, Serialize};

use crate::model::{ChangeAction, Feedback, HistoryVersion, Millis};

/// What an erasure covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ErasureScope {
    /// One feedback item, by id.
    Item,
    /// Every item of one `user_id` in the org.
    User,
    /// Every item of one `session_id` in the org.
    Session,
    /// Items older than the org's retention period.
    Retention,
}

impl ErasureScope {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ErasureScope::Item => "item",
            ErasureScope::User => "user",
            ErasureScope::Session => "session",
            ErasureScope::Retention => "retention",
        }
    }
}

/// Where an erasure is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ErasureState {
    /// Written before its items are touched; finished at start-up if a crash stopped it.
    Running,
    /// Every item is erased: the record is the receipt.
    Done,
}

/// An erasure job and, once done, its receipt. It names the items by id (kept on the
/// tombstones anyway) and counts; it holds no erased text and no personal value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErasureRecord {
    /// Time-ordered id, `erasure-<ULID>`.
    pub id: String,
    /// The org it ran in.
    pub org_id: String,
    /// What it covers.
    pub scope: ErasureScope,
    /// For `item`: the feedback id; for `user` and `session`: `sha256:<hex>` of the value
    /// (so a receipt can be matched to a request without keeping the value); for
    /// `retention`: `created_before:<ms>`.
    pub subject: String,
    /// Who asked (the admin's `sub`, `cli`, or `retention`).
    pub requested_by: String,
    /// When it was asked for, ms since epoch.
    pub requested_at: Millis,
    /// Running or done.
    pub state: ErasureState,
    /// The items it covers, in id order.
    pub item_ids: Vec<String>,
    /// How many items are erased (all of `item_ids` once done).
    pub items: u64,
    /// How many stored history versions of those items had their content removed
    /// (every version except the `erased` entries themselves).
    pub versions: u64,
    /// When it finished.
    pub finished_at: Option<Millis>,
}

/// Removes from one history version every field change that names a content field (see
/// [`Feedback::CONTENT_FIELDS`]); true if it removed any.
pub fn scrub_history(entry: &mut HistoryVersion) -> bool {
    let before = entry.changes.len();
    entry
        .changes
        .retain(|c| !Feedback::CONTENT_FIELDS.contains(&c.field.as_str()));
    entry.changes.len() != before
}

/// True for the history entries an erasure writes (they hold no content, and are not
/// counted as scrubbed versions).
pub fn is_erase_entry(entry: &HistoryVersion) -> bool {
    entry.action == ChangeAction::Erase
}

/// The subject recorded for a user or session value: `sha256:<hex>`.
pub fn subject_hash(value: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(value.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::FieldChange;

    #[test]
    fn scrub_keeps_only_non_content_changes() {
        let change = |f: &str| FieldChange {
            field: f.into(),
            old: None,
            new: Some("\"x\"".into()),
        };
        let mut e = HistoryVersion {
            version: 1,
            at: 1,
            actor: "a".into(),
            action: ChangeAction::Submit,
            changes: vec![change("question"), change("type"), change("metadata")],
        };
        assert!(scrub_history(&mut e));
        assert_eq!(e.changes, vec![change("type")]);
        assert!(!scrub_history(&mut e));
        assert!(subject_hash("u").starts_with("sha256:"));
    }
}
