//! The sled backend's side of a full backup: listing orgs, reading every record with its
//! stored history and every remembered idempotency key, and writing a backup back
//! verbatim (see `store::backup` for the format).

use super::{SledStore, decode, encode};
use crate::model::HistoryVersion;
use crate::store::backup::BackupEntry;
use crate::store::rules::IdempotencyRecord;
use crate::store::{FeedbackRecord, StoreError, keys};

/// The meta key of an org's batch counter (the last batch id handed out).
fn batch_counter_key(org: &str) -> Vec<u8> {
    let mut key = b"next_batch_id\0".to_vec();
    key.extend_from_slice(org.as_bytes());
    key
}

impl SledStore {
    /// Every record of `org` in id order with its committed history as stored.
    pub fn for_each_record_with_history(
        &self,
        org: &str,
        f: &mut dyn FnMut(FeedbackRecord, Vec<HistoryVersion>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        self.settle_reads()?;
        for r in self.records_of(org) {
            let r = r?;
            let history =
                self.history_of(org, keys::KIND_FEEDBACK, &r.feedback.id, r.feedback.version)?;
            f(r, history)?;
        }
        Ok(())
    }

    /// Every idempotency key `org` remembers, as `(user, key, record)`.
    pub fn for_each_idempotency(
        &self,
        org: &str,
        f: &mut dyn FnMut(&str, &str, IdempotencyRecord) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        self.settle_reads()?;
        for kv in self.t().idempotency.scan_prefix(keys::record(org, "")) {
            let (k, v) = kv?;
            let rest = keys::split_org(&k).map_or(&[][..], |(_, rest)| rest);
            let Some((user, key)) = keys::split_org(rest) else {
                return Err(StoreError::Backend(format!(
                    "an idempotency key without a user: {}",
                    keys::display(&k)
                )));
            };
            let record: IdempotencyRecord = decode("idempotency", &k, &v)?;
            f(
                &String::from_utf8_lossy(user),
                &String::from_utf8_lossy(key),
                record,
            )?;
        }
        Ok(())
    }

    /// Writes `entries` of `org` verbatim and makes them durable. Histories go before
    /// the records they belong to (each record is its own commit point); the batch counter
    /// only ever moves up.
    pub fn restore(&self, org: &str, entries: &[BackupEntry]) -> Result<(), StoreError> {
        let write = self.begin_write()?;
        for entry in entries {
            match entry {
                BackupEntry::Adapter { adapter, history } => {
                    for h in history {
                        self.put_history(org, keys::KIND_ADAPTER, &adapter.id, h)?;
                    }
                    let key = keys::record(org, &adapter.id);
                    // Under the adapter lock, into sled before into the cache, as every
                    // adapter write does.
                    let _guard = self.adapter_lock.lock();
                    self.t()
                        .adapters
                        .insert(key.as_slice(), encode(adapter.as_ref())?)?;
                    self.known_adapters.write().insert(key);
                }
                BackupEntry::Feedback { record, history } => {
                    for h in history {
                        self.put_history(org, keys::KIND_FEEDBACK, &record.feedback.id, h)?;
                    }
                    self.t().feedback.insert(
                        keys::record(org, &record.feedback.id),
                        encode(record.as_ref())?,
                    )?;
                }
                BackupEntry::Batch { batch, history } => {
                    for h in history {
                        self.put_history(org, keys::KIND_BATCH, &batch.id.to_string(), h)?;
                    }
                    self.t()
                        .meta
                        .update_and_fetch(batch_counter_key(org), |old| {
                            let last = old
                                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                                .map_or(0, u64::from_be_bytes);
                            Some(last.max(batch.id).to_be_bytes().to_vec())
                        })?;
                    self.t()
                        .batches
                        .insert(keys::batch(org, batch.id), encode(batch.as_ref())?)?;
                }
                BackupEntry::Idempotency { user, key, record } => {
                    self.t()
                        .idempotency
                        .insert(keys::idempotency(org, user, key), encode(record)?)?;
                }
                // Written by the service through the interface's own writes.
                BackupEntry::ScoreConfig { .. }
                | BackupEntry::Erasure { .. }
                | BackupEntry::Webhook { .. }
                | BackupEntry::Org { .. }
                | BackupEntry::End { .. } => {}
            }
        }
        drop(write);
        self.make_durable()
    }
}
