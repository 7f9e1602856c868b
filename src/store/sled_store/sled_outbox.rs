//! The sled backend's part of lifecycle events: the outbox entries its writes add, the
//! endpoint cache that keeps that free for orgs without endpoints, and [`EventStore`].
//!
//! An entry goes in after the change's history entry and before its record, under the
//! same lock, so the record stays the commit point (see `store::outbox`): an entry is
//! handed out only once its record has reached the entry's version and is durable, and at
//! open every entry whose record never did is removed. The delivery lease is always
//! granted here: one process owns a sled directory.

use super::{SledStore, decode, encode};
use crate::model::{Actor, HistoryVersion};
use crate::store::outbox::{
    self, Changed, Delivery, Endpoint, EventStore, KIND_REDELIVERY, Lease, OutboxEntry, Settle,
};
use crate::store::{StoreError, keys};

impl SledStore {
    /// Adds the outbox entries of one change (see the module comment). Called between a
    /// history entry and its record.
    pub(super) fn emit(
        &self,
        actor: &Actor,
        kind: u8,
        id: &str,
        entry: &HistoryVersion,
        changed: Changed<'_>,
    ) -> Result<(), StoreError> {
        let Some(event) = outbox::event_for(kind, entry) else {
            return Ok(());
        };
        let targets: Vec<String> = {
            let hooks = self.hooks.read();
            match hooks.get(&actor.org) {
                None => return Ok(()),
                Some(list) => list
                    .iter()
                    .filter(|(_, mask)| mask & event.bit() != 0)
                    .map(|(ep, _)| ep.clone())
                    .collect(),
            }
        };
        if targets.is_empty() {
            return Ok(());
        }
        let event_id = format!("evt-{}", ulid::Ulid::new());
        let body = outbox::payload(&event_id, event, &actor.org, entry.at, &actor.user, changed);
        for endpoint_id in targets {
            let e = OutboxEntry {
                endpoint_id,
                org_id: actor.org.clone(),
                subject: outbox::Subject {
                    kind,
                    id: id.to_owned(),
                    version: entry.version,
                },
                event_id: event_id.clone(),
                event,
                body: body.clone(),
                attempts: 0,
                next_attempt_at: 0,
            };
            let key = keys::outbox(&actor.org, &e.endpoint_id, kind, id, entry.version);
            self.t().outbox.insert(key, encode(&e)?)?;
        }
        Ok(())
    }

    /// At open: fills the endpoint cache, then removes outbox entries that belong to no
    /// stored change (their write died before its record) or to no endpoint.
    pub(super) fn open_outbox(&self) -> Result<(), StoreError> {
        {
            let mut hooks = self.hooks.write();
            for kv in self.t().webhooks.iter() {
                let (k, v) = kv?;
                let ep: Endpoint = decode("webhooks", &k, &v)?;
                if ep.enabled {
                    hooks
                        .entry(ep.org_id.clone())
                        .or_default()
                        .push((ep.id.clone(), ep.mask()));
                }
            }
        }
        let mut removed = 0usize;
        for kv in self.t().outbox.iter() {
            let (k, v) = kv?;
            let e: OutboxEntry = decode("outbox", &k, &v)?;
            let endpoint_known = self
                .t()
                .webhooks
                .contains_key(keys::record(&e.org_id, &e.endpoint_id))?;
            if !endpoint_known || !self.committed(&e)? {
                self.t().outbox.remove(&k)?;
                removed += 1;
            }
        }
        if removed > 0 {
            tracing::info!(removed, "outbox entries of unfinished writes removed");
            self.make_durable()?;
        }
        Ok(())
    }

    /// Whether the change an entry describes is stored: its record has reached the
    /// entry's version.
    fn committed(&self, e: &OutboxEntry) -> Result<bool, StoreError> {
        let s = &e.subject;
        let stored = match s.kind {
            KIND_REDELIVERY => return Ok(true),
            keys::KIND_FEEDBACK => self
                .read_record(&keys::record(&e.org_id, &s.id))?
                .map(|r| r.feedback.version),
            keys::KIND_ADAPTER => self
                .get_adapter(&e.org_id, &s.id)?
                .map(|a| a.record_version),
            keys::KIND_BATCH => match s.id.parse::<u64>() {
                Ok(n) => self.get_batch(&e.org_id, n)?.map(|b| b.version),
                Err(_) => None,
            },
            _ => None,
        };
        Ok(stored.is_some_and(|v| v >= s.version))
    }

    fn refresh_hooks(&self, org: &str) -> Result<(), StoreError> {
        let eps = self.endpoints_in(org)?;
        let list: Vec<(String, u32)> = eps
            .iter()
            .filter(|e| e.enabled)
            .map(|e| (e.id.clone(), e.mask()))
            .collect();
        let mut hooks = self.hooks.write();
        if list.is_empty() {
            hooks.remove(org);
        } else {
            hooks.insert(org.to_owned(), list);
        }
        Ok(())
    }

    fn endpoints_in(&self, org: &str) -> Result<Vec<Endpoint>, StoreError> {
        self.t()
            .webhooks
            .scan_prefix(keys::record(org, ""))
            .map(|kv| {
                let (k, v) = kv?;
                decode("webhooks", &k, &v)
            })
            .collect()
    }

    fn remove_prefix(&self, tree: &sled::Tree, prefix: &[u8]) -> Result<(), StoreError> {
        for k in tree.scan_prefix(prefix).keys() {
            tree.remove(k?)?;
        }
        Ok(())
    }
}

impl EventStore for SledStore {
    fn put_endpoint(&self, endpoint: &Endpoint) -> Result<(), StoreError> {
        {
            let _write = self.begin_write()?;
            // The adapter lock serialises endpoint writes with each other (rare writes).
            let _guard = self.adapter_lock.lock();
            self.t().webhooks.insert(
                keys::record(&endpoint.org_id, &endpoint.id),
                encode(endpoint)?,
            )?;
            self.refresh_hooks(&endpoint.org_id)?;
        }
        self.make_durable()
    }

    fn delete_endpoint(&self, org: &str, id: &str) -> Result<bool, StoreError> {
        let existed = {
            let _write = self.begin_write()?;
            let _guard = self.adapter_lock.lock();
            let existed = self.t().webhooks.remove(keys::record(org, id))?.is_some();
            self.refresh_hooks(org)?;
            let prefix = keys::endpoint_prefix(org, id);
            self.remove_prefix(&self.t().outbox, &prefix)?;
            self.remove_prefix(&self.t().deliveries, &prefix)?;
            existed
        };
        self.make_durable()?;
        Ok(existed)
    }

    fn get_endpoint(&self, org: &str, id: &str) -> Result<Option<Endpoint>, StoreError> {
        self.durable_read(|s| {
            let key = keys::record(org, id);
            match s.t().webhooks.get(&key)? {
                Some(v) => decode("webhooks", &key, &v).map(Some),
                None => Ok(None),
            }
        })
    }

    fn endpoints(&self, org: Option<&str>) -> Result<Vec<Endpoint>, StoreError> {
        match org {
            Some(org) => self.durable_read(|s| s.endpoints_in(org)),
            // Every org's: only the delivery worker asks, every poll. It does not wait for
            // a sync (an idle server syncs nothing): an endpoint write is durable before it
            // returns, and an endpoint seen a moment early has nothing queued yet.
            None => self
                .t()
                .webhooks
                .iter()
                .map(|kv| {
                    let (k, v) = kv?;
                    decode("webhooks", &k, &v)
                })
                .collect(),
        }
    }

    fn pending(&self, endpoint: &Endpoint, limit: usize) -> Result<Vec<OutboxEntry>, StoreError> {
        let s = self;
        let out = {
            let mut out = Vec::new();
            // A record whose earliest waiting event is not stored yet holds back its later
            // ones too (they cannot be stored before it anyway; this keeps order obvious).
            let mut blocked: Option<(u8, String)> = None;
            let prefix = keys::endpoint_prefix(&endpoint.org_id, &endpoint.id);
            for kv in s.t().outbox.scan_prefix(&prefix) {
                let (k, v) = kv?;
                let e: OutboxEntry = decode("outbox", &k, &v)?;
                if blocked
                    .as_ref()
                    .is_some_and(|(kind, id)| *kind == e.subject.kind && *id == e.subject.id)
                {
                    continue;
                }
                if !s.committed(&e)? {
                    blocked = Some((e.subject.kind, e.subject.id.clone()));
                    continue;
                }
                out.push(e);
                if out.len() >= limit {
                    break;
                }
            }
            out
        };
        // The records that vouched for these entries must be durable before they are
        // sent; with nothing to send, no sync is waited for (an idle poll costs none).
        if !out.is_empty() {
            self.settle_reads()?;
        }
        Ok(out)
    }

    fn settle(
        &self,
        entry: &OutboxEntry,
        outcome: &Settle,
        attempt: &Delivery,
    ) -> Result<(), StoreError> {
        let _gate = self.h.hold();
        let s = &entry.subject;
        let key = keys::outbox(&entry.org_id, &entry.endpoint_id, s.kind, &s.id, s.version);
        let mut log_key = keys::endpoint_prefix(&entry.org_id, &entry.endpoint_id);
        log_key.extend_from_slice(attempt.id.as_bytes());
        self.t().deliveries.insert(log_key, encode(attempt)?)?;
        match outcome {
            Settle::Done => {
                self.t().outbox.remove(key)?;
            }
            Settle::Retry { next_attempt_at } => {
                let mut next = entry.clone();
                next.attempts = next.attempts.saturating_add(1);
                next.next_attempt_at = *next_attempt_at;
                // Only if it is still queued (its endpoint may have been deleted meanwhile).
                if self.t().outbox.contains_key(&key)? {
                    self.t().outbox.insert(key, encode(&next)?)?;
                }
            }
        }
        Ok(())
    }

    fn deliveries(
        &self,
        org: &str,
        endpoint: &str,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        self.durable_read(|s| {
            let prefix = keys::endpoint_prefix(org, endpoint);
            let mut end = prefix.clone();
            match before {
                Some(b) => end.extend_from_slice(b.as_bytes()),
                None => end.push(0xff),
            }
            s.t()
                .deliveries
                .range(prefix.clone()..end)
                .rev()
                .take(limit)
                .map(|kv| {
                    let (k, v) = kv?;
                    decode("deliveries", &k, &v)
                })
                .collect()
        })
    }

    fn get_delivery(
        &self,
        org: &str,
        endpoint: &str,
        id: &str,
    ) -> Result<Option<Delivery>, StoreError> {
        self.durable_read(|s| {
            let mut key = keys::endpoint_prefix(org, endpoint);
            key.extend_from_slice(id.as_bytes());
            match s.t().deliveries.get(&key)? {
                Some(v) => decode("deliveries", &key, &v).map(Some),
                None => Ok(None),
            }
        })
    }

    fn enqueue(&self, entry: &OutboxEntry) -> Result<(), StoreError> {
        {
            let _write = self.begin_write()?;
            let s = &entry.subject;
            let key = keys::outbox(&entry.org_id, &entry.endpoint_id, s.kind, &s.id, s.version);
            self.t().outbox.insert(key, encode(entry)?)?;
        }
        self.make_durable()
    }

    fn pending_count(&self, org: &str, endpoint: &str) -> Result<usize, StoreError> {
        Ok(self
            .t()
            .outbox
            .scan_prefix(keys::endpoint_prefix(org, endpoint))
            .count())
    }

    fn trim_log(&self, org: &str, endpoint: &str, keep: usize) -> Result<(), StoreError> {
        let _gate = self.h.hold();
        let prefix = keys::endpoint_prefix(org, endpoint);
        let total = self.t().deliveries.scan_prefix(&prefix).count();
        for k in self
            .t()
            .deliveries
            .scan_prefix(&prefix)
            .keys()
            .take(total.saturating_sub(keep))
        {
            self.t().deliveries.remove(k?)?;
        }
        Ok(())
    }

    // One process owns a sled directory (sled's file lock) and runs one delivery worker:
    // the lease is always granted. The worker takes the same path on every backend.
    fn acquire_lease(
        &self,
        org: &str,
        endpoint: &str,
        holder: &str,
        _ttl_ms: u64,
    ) -> Result<Option<Lease>, StoreError> {
        Ok(Some(Lease {
            org_id: org.to_owned(),
            endpoint_id: endpoint.to_owned(),
            holder: holder.to_owned(),
            epoch: 0,
        }))
    }

    fn renew_lease(&self, _lease: &Lease, _ttl_ms: u64) -> Result<bool, StoreError> {
        Ok(true)
    }

    fn release_lease(&self, _lease: &Lease) -> Result<(), StoreError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ChangeAction, Feedback};
    use crate::store::StorageConfig;
    use crate::store::sled_store::SyncMode;

    fn endpoint(org: &str) -> Endpoint {
        Endpoint {
            id: "wh-1".into(),
            org_id: org.into(),
            url: "https://example.com/h".into(),
            events: outbox::EventType::ALL.to_vec(),
            secret: "s".repeat(16),
            enabled: true,
            disabled_reason: None,
            created_at: 0,
            created_by: "root".into(),
            failure_streak: 0,
            failing_since: None,
            description: None,
        }
    }

    #[test]
    fn an_entry_waits_for_its_record_and_one_whose_record_never_came_is_dropped_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let config = StorageConfig::default();
        let actor = Actor::new("acme", "root");
        let ep = endpoint("acme");
        {
            let store = SledStore::open(dir.path(), &config).unwrap();
            store.put_endpoint(&ep).unwrap();
            let fb = Feedback::sample("f-1", "acme");
            store
                .insert_feedback(&actor, &fb, ChangeAction::Submit, SyncMode::Wait)
                .unwrap();
            assert_eq!(store.pending(&ep, 10).unwrap().len(), 1);
            // A review whose write died after its history and outbox entry, before its
            // record (the commit point): version 2 is never stored.
            let record = store.get_record("acme", "f-1").unwrap().unwrap();
            let mut next = record.clone();
            next.feedback.version = 2;
            let entry = HistoryVersion {
                version: 2,
                at: 1,
                actor: "root".into(),
                action: ChangeAction::Review,
                changes: vec![],
            };
            store
                .put_history("acme", keys::KIND_FEEDBACK, "f-1", &entry)
                .unwrap();
            store
                .emit(
                    &actor,
                    keys::KIND_FEEDBACK,
                    "f-1",
                    &entry,
                    Changed::Feedback(&next),
                )
                .unwrap();
            store.make_durable().unwrap();
            assert_eq!(store.pending_count("acme", "wh-1").unwrap(), 2);
            let due = store.pending(&ep, 10).unwrap();
            assert_eq!(due.len(), 1, "the uncommitted event is not handed out");
            assert_eq!(due[0].subject.version, 1);
            assert_eq!(due[0].event, outbox::EventType::FeedbackSubmitted);
        }
        let store = SledStore::open(dir.path(), &config).unwrap();
        assert_eq!(
            store.pending_count("acme", "wh-1").unwrap(),
            1,
            "the phantom is gone, the real event stays"
        );
        // An org without endpoints gets no entries; a disabled endpoint neither.
        let other = Actor::new("other", "u");
        store
            .insert_feedback(
                &other,
                &Feedback::sample("f-2", "other"),
                ChangeAction::Submit,
                SyncMode::Wait,
            )
            .unwrap();
        assert_eq!(store.t().outbox.len(), 1);
        let mut off = ep.clone();
        off.enabled = false;
        store.put_endpoint(&off).unwrap();
        store
            .insert_feedback(
                &actor,
                &Feedback::sample("f-3", "acme"),
                ChangeAction::Submit,
                SyncMode::Wait,
            )
            .unwrap();
        assert_eq!(store.t().outbox.len(), 1);
    }
}
