//! The PostgreSQL backend's side of a full backup: listing orgs, reading every record
//! with its stored history (a page of records, then their histories in one query) and
//! every remembered idempotency key, and writing a backup back verbatim in one
//! transaction per call (see `store::backup` for the format).

use std::collections::HashMap;

use deadpool_postgres::ClientWrapper;

use super::bulk;
use super::ops::{self, PgError, corrupt};
use super::{PgStore, SCAN_PAGE};
use crate::model::HistoryVersion;
use crate::store::backup::BackupEntry;
use crate::store::rules::IdempotencyRecord;
use crate::store::{FeedbackRecord, StoreError, codec, keys};

/// A `u64` as PostgreSQL's `bigint` (ids and versions never reach `i64::MAX`).
fn big(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn encode<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, PgError> {
    codec::encode(v).map_err(|e| PgError::Store(StoreError::Encode(e)))
}

impl PgStore {
    /// Every org with a feedback record, an adapter or a batch, sorted.
    pub fn orgs(&self) -> Result<Vec<String>, StoreError> {
        self.run(async {
            let c = self.reader().await?;
            let rows = c
                .query(
                    "SELECT org_id FROM fg_feedback UNION SELECT org_id FROM fg_adapters \
                     UNION SELECT org_id FROM fg_batches ORDER BY 1",
                    &[],
                )
                .await?;
            rows.iter()
                .map(|r| r.try_get::<_, String>(0).map_err(PgError::from))
                .collect()
        })
    }

    /// Every record of `org` in id order with its committed history as stored.
    pub fn for_each_record_with_history(
        &self,
        org: &str,
        f: &mut dyn FnMut(FeedbackRecord, Vec<HistoryVersion>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut last: Option<String> = None;
        loop {
            let page = self.run(async {
                let c = self.reader().await?;
                let rows = c
                    .query(
                        "SELECT id, body FROM fg_feedback WHERE org_id = $1 \
                         AND ($2::text IS NULL OR id > $2) ORDER BY id LIMIT $3",
                        &[&org, &last, &SCAN_PAGE],
                    )
                    .await?;
                let mut records = Vec::with_capacity(rows.len());
                for row in &rows {
                    let id: String = row.try_get(0)?;
                    let body: &[u8] = row.try_get(1)?;
                    let r: FeedbackRecord = codec::decode(body)
                        .map_err(|e| PgError::Store(corrupt("fg_feedback", org, &id, e)))?;
                    records.push(r);
                }
                let ids: Vec<&str> = records.iter().map(|r| r.feedback.id.as_str()).collect();
                let mut history = histories(&c, org, &ids).await?;
                Ok(records
                    .into_iter()
                    .map(|r| {
                        let mut h = history.remove(&r.feedback.id).unwrap_or_default();
                        // Entries past the record's version belong to a write that never
                        // committed (none should exist here, as writes are transactions).
                        h.retain(|e| e.version <= r.feedback.version);
                        (r, h)
                    })
                    .collect::<Vec<_>>())
            })?;
            let full = page.len() as i64 == SCAN_PAGE;
            for (r, h) in page {
                last = Some(r.feedback.id.clone());
                f(r, h)?;
            }
            if !full {
                return Ok(());
            }
        }
    }

    /// Every idempotency key `org` remembers, as `(user, key, record)`.
    pub fn for_each_idempotency(
        &self,
        org: &str,
        f: &mut dyn FnMut(&str, &str, IdempotencyRecord) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut last: Option<(String, String)> = None;
        loop {
            let (after_user, after_key) = last.clone().unzip();
            let rows = self.run(async {
                let c = self.reader().await?;
                Ok(c.query(
                    "SELECT user_id, key, body FROM fg_idempotency WHERE org_id = $1 \
                     AND ($2::text IS NULL OR (user_id, key) > ($2, $3)) \
                     ORDER BY user_id, key LIMIT $4",
                    &[&org, &after_user, &after_key, &SCAN_PAGE],
                )
                .await?)
            })?;
            for row in &rows {
                let user: String = row.try_get(0).map_err(ops::db_error)?;
                let key: String = row.try_get(1).map_err(ops::db_error)?;
                let body: &[u8] = row.try_get(2).map_err(ops::db_error)?;
                let record: IdempotencyRecord =
                    codec::decode(body).map_err(|e| corrupt("fg_idempotency", org, &key, e))?;
                f(&user, &key, record)?;
                last = Some((user, key));
            }
            if (rows.len() as i64) < SCAN_PAGE {
                return Ok(());
            }
        }
    }

    /// Writes `entries` of `org` verbatim in one transaction (rows that exist are
    /// replaced, so running it again changes nothing) and returns once it committed.
    pub fn restore(&self, org: &str, entries: &[BackupEntry]) -> Result<(), StoreError> {
        self.run(self.transact(|c| {
            Box::pin(async move {
                let r = restore_all(&c, org, entries).await;
                (c, r)
            })
        }))
    }
}

/// The stored history of each of `ids`, in version order.
async fn histories(
    c: &ClientWrapper,
    org: &str,
    ids: &[&str],
) -> Result<HashMap<String, Vec<HistoryVersion>>, PgError> {
    let rows = c
        .query(
            "SELECT id, body FROM fg_history WHERE org_id = $1 AND kind = $2 AND id = ANY($3) \
             ORDER BY id, version",
            &[&org, &i16::from(keys::KIND_FEEDBACK), &ids],
        )
        .await?;
    let mut out: HashMap<String, Vec<HistoryVersion>> = HashMap::with_capacity(ids.len());
    for row in &rows {
        let id: String = row.try_get(0)?;
        let body: &[u8] = row.try_get(1)?;
        let entry: HistoryVersion =
            codec::decode(body).map_err(|e| PgError::Store(corrupt("fg_history", org, &id, e)))?;
        out.entry(id).or_default().push(entry);
    }
    Ok(out)
}

async fn restore_all(c: &ClientWrapper, org: &str, entries: &[BackupEntry]) -> Result<(), PgError> {
    // Records, their histories and idempotency keys (the bulk of a backup) are gathered
    // and written with COPY after the loop; adapters and batches (few) row by row.
    let mut histories: Vec<(u8, &str, HistoryVersion)> = Vec::new();
    let mut records: Vec<&FeedbackRecord> = Vec::new();
    let mut idempotency: Vec<(String, String, i64, Vec<u8>)> = Vec::new();
    for entry in entries {
        match entry {
            BackupEntry::Adapter { adapter, history } => {
                for h in history {
                    ops::put_history(c, org, keys::KIND_ADAPTER, &adapter.id, h).await?;
                }
                let stmt = c
                    .prepare_cached(
                        "INSERT INTO fg_adapters (org_id, id, version, body) \
                         VALUES ($1, $2, $3, $4) ON CONFLICT (org_id, id) \
                         DO UPDATE SET version = EXCLUDED.version, body = EXCLUDED.body",
                    )
                    .await?;
                let version = big(adapter.record_version);
                c.execute(&stmt, &[&org, &adapter.id, &version, &encode(adapter)?])
                    .await?;
            }
            BackupEntry::Feedback { record, history } => {
                let id = record.feedback.id.as_str();
                histories.extend(history.iter().map(|h| (keys::KIND_FEEDBACK, id, h.clone())));
                records.push(&**record);
            }
            BackupEntry::Batch { batch, history } => {
                let id = batch.id.to_string();
                for h in history {
                    ops::put_history(c, org, keys::KIND_BATCH, &id, h).await?;
                }
                let stmt = c
                    .prepare_cached(
                        "INSERT INTO fg_batches (org_id, id, body) VALUES ($1, $2, $3) \
                         ON CONFLICT (org_id, id) DO UPDATE SET body = EXCLUDED.body",
                    )
                    .await?;
                c.execute(&stmt, &[&org, &big(batch.id), &encode(batch)?])
                    .await?;
                // The counter holds the last id handed out: move it past this batch.
                let stmt = c
                    .prepare_cached(
                        "INSERT INTO fg_batch_ids (org_id, next) VALUES ($1, $2) \
                         ON CONFLICT (org_id) \
                         DO UPDATE SET next = GREATEST(fg_batch_ids.next, EXCLUDED.next)",
                    )
                    .await?;
                c.execute(&stmt, &[&org, &big(batch.id)]).await?;
            }
            BackupEntry::Idempotency { user, key, record } => {
                let at = i64::try_from(record.at).unwrap_or(i64::MAX);
                idempotency.push((user.clone(), key.clone(), at, encode(record)?));
            }
            // Written by the service through the interface's own writes.
            BackupEntry::ScoreConfig { .. }
            | BackupEntry::Erasure { .. }
            | BackupEntry::Webhook { .. }
            | BackupEntry::Org { .. }
            | BackupEntry::End { .. } => {}
        }
    }
    if !histories.is_empty() {
        bulk::put_histories(c, org, &histories).await?;
    }
    if !records.is_empty() {
        bulk::upsert_feedback(c, org, &records).await?;
    }
    if !idempotency.is_empty() {
        bulk::upsert_idempotency(c, org, &idempotency).await?;
    }
    Ok(())
}
