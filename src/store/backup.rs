//! The full-backup format: every stored entity of an org, in backend-neutral JSON, so a
//! backup taken from one backend restores into the other with nothing lost.
//!
//! A graph dump (`service::dump`) carries the graph only: adapters, items and edges, each
//! restored as a fresh version 1. A backup carries everything a store keeps: every record
//! as stored (version, lease, edges with their metadata), every committed history version
//! (a creation entry stays compact, as the store keeps it), every training batch with its
//! history and manifest, and the idempotency keys still remembered, so a client retrying
//! against the restored store is answered as it would have been by the old one; also the
//! org's score configs with their history, its erasure receipts, and its webhook
//! endpoints (with their signing secrets; events still queued and the delivery log are
//! not carried over).
//!
//! The file is JSON Lines. Each org's part opens with a [`BackupEntry::Org`] line and
//! closes with a [`BackupEntry::End`] line that counts what came between: a file cut short
//! is found before anything of that org is trusted.

use serde::{Deserialize, Serialize};

use super::erasure::ErasureRecord;
use super::outbox::Endpoint;
use super::rules::IdempotencyRecord;
use super::{Batch, FeedbackRecord};
use crate::model::{Adapter, HistoryVersion, Millis, ScoreConfig};

/// The version of the backup format written by this build.
pub const BACKUP_FORMAT: u32 = 1;

/// One line of a backup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum BackupEntry {
    /// Opens an org's part of the file.
    Org {
        /// The org whose entities follow.
        org: String,
        /// [`BACKUP_FORMAT`] of the writer.
        format: u32,
        /// The backend it was taken from (`sled`, `postgres`).
        backend: String,
        /// When the backup of this org started, ms since epoch.
        taken_at: Millis,
    },
    /// An adapter with its history.
    Adapter {
        /// The adapter as stored.
        adapter: Box<Adapter>,
        /// Its committed history, oldest first.
        history: Vec<HistoryVersion>,
    },
    /// A feedback record (item, edges with metadata, lease) with its history.
    Feedback {
        /// The record as stored.
        record: Box<FeedbackRecord>,
        /// Its committed history as stored (a compact creation entry stays compact).
        history: Vec<HistoryVersion>,
    },
    /// A training batch with its history.
    Batch {
        /// The batch as stored (state, items, manifest).
        batch: Box<Batch>,
        /// Its committed history, oldest first.
        history: Vec<HistoryVersion>,
    },
    /// An idempotency key still remembered.
    Idempotency {
        /// The user (token `sub`) the key belongs to.
        user: String,
        /// The key as the client sent it.
        key: String,
        /// What its first use stored.
        record: IdempotencyRecord,
    },
    /// A score config with its history.
    ScoreConfig {
        /// The config as stored.
        config: Box<ScoreConfig>,
        /// Its committed history, oldest first.
        history: Vec<HistoryVersion>,
    },
    /// An erasure receipt (or a job a crash left running, finished after the restore).
    Erasure {
        /// The record as stored.
        record: Box<ErasureRecord>,
    },
    /// A webhook endpoint, with its signing secret.
    Webhook {
        /// The endpoint as stored.
        endpoint: Box<Endpoint>,
    },
    /// Closes an org's part with what it held.
    End {
        /// How many of each entity came since the `org` line.
        counts: BackupCounts,
    },
}

/// How many entities of each kind a backup (or one org's part of it) holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupCounts {
    /// Adapters.
    pub adapters: u64,
    /// Feedback records.
    pub feedback: u64,
    /// History versions of every kind.
    pub history: u64,
    /// Training batches.
    pub batches: u64,
    /// Idempotency keys.
    pub idempotency: u64,
    /// Score configs.
    #[serde(default)]
    pub score_configs: u64,
    /// Erasure receipts.
    #[serde(default)]
    pub erasures: u64,
    /// Webhook endpoints.
    #[serde(default)]
    pub webhooks: u64,
}

impl BackupCounts {
    /// Counts one entity line (the `org` and `end` lines count nothing).
    pub fn add(&mut self, entry: &BackupEntry) {
        match entry {
            BackupEntry::Adapter { history, .. } => {
                self.adapters += 1;
                self.history += history.len() as u64;
            }
            BackupEntry::Feedback { history, .. } => {
                self.feedback += 1;
                self.history += history.len() as u64;
            }
            BackupEntry::Batch { history, .. } => {
                self.batches += 1;
                self.history += history.len() as u64;
            }
            BackupEntry::Idempotency { .. } => self.idempotency += 1,
            BackupEntry::ScoreConfig { history, .. } => {
                self.score_configs += 1;
                self.history += history.len() as u64;
            }
            BackupEntry::Erasure { .. } => self.erasures += 1,
            BackupEntry::Webhook { .. } => self.webhooks += 1,
            BackupEntry::Org { .. } | BackupEntry::End { .. } => {}
        }
    }

    /// Adds another part's counts to these.
    pub fn merge(&mut self, other: &BackupCounts) {
        self.adapters += other.adapters;
        self.feedback += other.feedback;
        self.history += other.history;
        self.batches += other.batches;
        self.idempotency += other.idempotency;
        self.score_configs += other.score_configs;
        self.erasures += other.erasures;
        self.webhooks += other.webhooks;
    }

    /// The entities counted (every kind but history versions).
    pub fn entities(&self) -> u64 {
        self.adapters
            + self.feedback
            + self.batches
            + self.idempotency
            + self.score_configs
            + self.erasures
            + self.webhooks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_follow_the_entities_and_skip_the_frame_lines() {
        let mut c = BackupCounts::default();
        c.add(&BackupEntry::Org {
            org: "o".into(),
            format: BACKUP_FORMAT,
            backend: "sled".into(),
            taken_at: 1,
        });
        c.add(&BackupEntry::Idempotency {
            user: "u".into(),
            key: "k".into(),
            record: IdempotencyRecord {
                feedback_id: "f".into(),
                request_hash: 7,
                at: 3,
            },
        });
        c.add(&BackupEntry::End { counts: c });
        assert_eq!(
            c,
            BackupCounts {
                idempotency: 1,
                ..BackupCounts::default()
            }
        );
    }
}
