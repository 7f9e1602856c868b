//! The PostgreSQL backend's [`EventStore`]: endpoints, outbox and delivery log in
//! `fg_webhooks`, `fg_outbox` and `fg_deliveries` (migration 4). Outbox rows are added by
//! the writes themselves, in their transactions (`ops::emit`), so every committed row
//! describes a committed change. Delivery leases are rows of `fg_delivery_leases`
//! (migration 6), timed by the database's clock so replicas' clocks need not agree.

use super::PgStore;
use super::ops::PgError;
use crate::store::StoreError;
use crate::store::codec;
use crate::store::outbox::{Delivery, Endpoint, EventStore, Lease, OutboxEntry, Settle};

fn encode<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    codec::encode(v).map_err(StoreError::Encode)
}

fn decode<T: codec::Stored>(table: &'static str, body: &[u8]) -> Result<T, PgError> {
    codec::decode(body).map_err(|source| {
        PgError::Store(StoreError::Corrupt {
            tree: table,
            key: "?".into(),
            source,
        })
    })
}

fn bodies<T: codec::Stored>(
    table: &'static str,
    rows: &[tokio_postgres::Row],
) -> Result<Vec<T>, PgError> {
    rows.iter()
        .map(|r| {
            let body: &[u8] = r.try_get(0)?;
            decode(table, body)
        })
        .collect()
}

fn big(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The holders (one per delivery worker) this process has taken leases as, and whether
/// it is shutting down: then it takes no lease and renews none, so that a pass cut short
/// stops at its next renewal instead of taking back what shutdown released.
#[derive(Debug, Default)]
pub(super) struct Leases {
    holders: parking_lot::Mutex<std::collections::BTreeSet<String>>,
    closed: std::sync::atomic::AtomicBool,
}

impl Leases {
    fn closed(&self) -> bool {
        self.closed.load(std::sync::atomic::Ordering::Acquire)
    }
}

impl PgStore {
    /// Releases every unexpired lease of this process's holders and refuses further
    /// leases (graceful shutdown; see [`crate::store::Backend::flush`]).
    pub(super) fn release_leases_at_shutdown(&self) -> Result<(), StoreError> {
        self.leases
            .closed
            .store(true, std::sync::atomic::Ordering::Release);
        let holders: Vec<String> = self.leases.holders.lock().iter().cloned().collect();
        if holders.is_empty() {
            return Ok(());
        }
        self.run(async {
            let c = self.client().await?;
            let n = c
                .execute(
                    "UPDATE fg_delivery_leases SET expires_at = '-infinity' \
                     WHERE holder = ANY($1) AND expires_at > now()",
                    &[&holders],
                )
                .await?;
            if n > 0 {
                tracing::info!(released = n, "released webhook delivery leases at shutdown");
            }
            Ok(())
        })
    }
}

impl EventStore for PgStore {
    fn put_endpoint(&self, ep: &Endpoint) -> Result<(), StoreError> {
        let body = encode(ep)?;
        let mask = i32::try_from(ep.mask()).unwrap_or(0);
        self.run(async {
            let c = self.client().await?;
            c.execute(
                "INSERT INTO fg_webhooks (org_id, id, enabled, mask, body) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (org_id, id) DO UPDATE SET enabled = EXCLUDED.enabled, \
                 mask = EXCLUDED.mask, body = EXCLUDED.body",
                &[&ep.org_id, &ep.id, &ep.enabled, &mask, &body],
            )
            .await?;
            Ok(())
        })
    }

    fn delete_endpoint(&self, org: &str, id: &str) -> Result<bool, StoreError> {
        self.run(async {
            let mut c = self.client().await?;
            let tx = c.transaction().await?;
            let n = tx
                .execute(
                    "DELETE FROM fg_webhooks WHERE org_id = $1 AND id = $2",
                    &[&org, &id],
                )
                .await?;
            for table in ["fg_outbox", "fg_deliveries", "fg_delivery_leases"] {
                tx.execute(
                    &format!("DELETE FROM {table} WHERE org_id = $1 AND endpoint_id = $2"),
                    &[&org, &id],
                )
                .await?;
            }
            tx.commit().await?;
            Ok(n > 0)
        })
    }

    fn get_endpoint(&self, org: &str, id: &str) -> Result<Option<Endpoint>, StoreError> {
        self.run(async {
            let c = self.client().await?;
            let rows = c
                .query(
                    "SELECT body FROM fg_webhooks WHERE org_id = $1 AND id = $2",
                    &[&org, &id],
                )
                .await?;
            Ok(bodies("fg_webhooks", &rows)?.into_iter().next())
        })
    }

    fn endpoints(&self, org: Option<&str>) -> Result<Vec<Endpoint>, StoreError> {
        self.run(async {
            let c = self.reader().await?;
            let rows = match org {
                Some(org) => {
                    c.query(
                        "SELECT body FROM fg_webhooks WHERE org_id = $1 ORDER BY id",
                        &[&org],
                    )
                    .await?
                }
                None => {
                    c.query("SELECT body FROM fg_webhooks ORDER BY org_id, id", &[])
                        .await?
                }
            };
            bodies("fg_webhooks", &rows)
        })
    }

    fn pending(&self, ep: &Endpoint, limit: usize) -> Result<Vec<OutboxEntry>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.run(async {
            let c = self.client().await?;
            let rows = c
                .query(
                    "SELECT body FROM fg_outbox WHERE org_id = $1 AND endpoint_id = $2 \
                     ORDER BY kind, id COLLATE \"C\", version LIMIT $3",
                    &[&ep.org_id, &ep.id, &limit],
                )
                .await?;
            bodies("fg_outbox", &rows)
        })
    }

    fn settle(
        &self,
        entry: &OutboxEntry,
        outcome: &Settle,
        attempt: &Delivery,
    ) -> Result<(), StoreError> {
        let log = encode(attempt)?;
        let s = &entry.subject;
        let kind = i16::from(s.kind);
        let version = big(s.version);
        let next = match outcome {
            Settle::Done => None,
            Settle::Retry { next_attempt_at } => {
                let mut next = entry.clone();
                next.attempts = next.attempts.saturating_add(1);
                next.next_attempt_at = *next_attempt_at;
                Some(encode(&next)?)
            }
        };
        self.run(async {
            let c = self.client().await?;
            c.execute(
                "INSERT INTO fg_deliveries (org_id, endpoint_id, id, body) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT DO NOTHING",
                &[&entry.org_id, &entry.endpoint_id, &attempt.id, &log],
            )
            .await?;
            let key: [&(dyn tokio_postgres::types::ToSql + Sync); 5] =
                [&entry.org_id, &entry.endpoint_id, &kind, &s.id, &version];
            match &next {
                None => {
                    c.execute(
                        "DELETE FROM fg_outbox WHERE org_id = $1 AND endpoint_id = $2 \
                         AND kind = $3 AND id = $4 AND version = $5",
                        &key,
                    )
                    .await?;
                }
                Some(body) => {
                    c.execute(
                        "UPDATE fg_outbox SET body = $6 WHERE org_id = $1 AND endpoint_id = $2 \
                         AND kind = $3 AND id = $4 AND version = $5",
                        &[key[0], key[1], key[2], key[3], key[4], body],
                    )
                    .await?;
                }
            }
            Ok(())
        })
    }

    fn deliveries(
        &self,
        org: &str,
        endpoint: &str,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.run(async {
            let c = self.client().await?;
            let rows = c
                .query(
                    "SELECT body FROM fg_deliveries WHERE org_id = $1 AND endpoint_id = $2 \
                     AND ($3::text IS NULL OR id COLLATE \"C\" < $3) ORDER BY id COLLATE \"C\" DESC LIMIT $4",
                    &[&org, &endpoint, &before, &limit],
                )
                .await?;
            bodies("fg_deliveries", &rows)
        })
    }

    fn get_delivery(
        &self,
        org: &str,
        endpoint: &str,
        id: &str,
    ) -> Result<Option<Delivery>, StoreError> {
        self.run(async {
            let c = self.client().await?;
            let rows = c
                .query(
                    "SELECT body FROM fg_deliveries WHERE org_id = $1 AND endpoint_id = $2 AND id = $3",
                    &[&org, &endpoint, &id],
                )
                .await?;
            Ok(bodies("fg_deliveries", &rows)?.into_iter().next())
        })
    }

    fn enqueue(&self, entry: &OutboxEntry) -> Result<(), StoreError> {
        let body = encode(entry)?;
        let s = &entry.subject;
        let kind = i16::from(s.kind);
        let version = big(s.version);
        self.run(async {
            let c = self.client().await?;
            c.execute(
                "INSERT INTO fg_outbox (org_id, endpoint_id, kind, id, version, body) \
                 VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (org_id, endpoint_id, kind, id, version) DO UPDATE SET body = EXCLUDED.body",
                &[&entry.org_id, &entry.endpoint_id, &kind, &s.id, &version, &body],
            )
            .await?;
            Ok(())
        })
    }

    fn pending_count(&self, org: &str, endpoint: &str) -> Result<usize, StoreError> {
        self.run(async {
            let c = self.client().await?;
            let row = c
                .query_one(
                    "SELECT count(*) FROM fg_outbox WHERE org_id = $1 AND endpoint_id = $2",
                    &[&org, &endpoint],
                )
                .await?;
            let n: i64 = row.try_get(0)?;
            Ok(usize::try_from(n).unwrap_or(0))
        })
    }

    fn trim_log(&self, org: &str, endpoint: &str, keep: usize) -> Result<(), StoreError> {
        let keep = i64::try_from(keep).unwrap_or(i64::MAX);
        self.run(async {
            let c = self.client().await?;
            c.execute(
                "DELETE FROM fg_deliveries WHERE org_id = $1 AND endpoint_id = $2 \
                 AND id COLLATE \"C\" <= (SELECT id FROM fg_deliveries WHERE org_id = $1 \
                 AND endpoint_id = $2 ORDER BY id COLLATE \"C\" DESC OFFSET $3 LIMIT 1)",
                &[&org, &endpoint, &keep],
            )
            .await?;
            Ok(())
        })
    }

    fn acquire_lease(
        &self,
        org: &str,
        endpoint: &str,
        holder: &str,
        ttl_ms: u64,
    ) -> Result<Option<Lease>, StoreError> {
        if self.leases.closed() {
            return Ok(None);
        }
        self.leases.holders.lock().insert(holder.to_owned());
        let ttl = big(ttl_ms);
        let lease = self.run(async {
            let c = self.client().await?;
            // Two takers at once: the second waits for the first's row and then sees an
            // unexpired lease of someone else, so it gets no row back.
            let rows = c
                .query(
                    "INSERT INTO fg_delivery_leases (org_id, endpoint_id, holder, epoch, expires_at) \
                     VALUES ($1, $2, $3, 1, now() + $4::bigint * interval '1 millisecond') \
                     ON CONFLICT (org_id, endpoint_id) DO UPDATE SET holder = EXCLUDED.holder, \
                     epoch = fg_delivery_leases.epoch + 1, expires_at = EXCLUDED.expires_at \
                     WHERE fg_delivery_leases.expires_at <= now() \
                     OR fg_delivery_leases.holder = EXCLUDED.holder \
                     RETURNING epoch",
                    &[&org, &endpoint, &holder, &ttl],
                )
                .await?;
            let Some(row) = rows.first() else {
                return Ok(None);
            };
            let epoch: i64 = row.try_get(0)?;
            Ok(Some(Lease {
                org_id: org.to_owned(),
                endpoint_id: endpoint.to_owned(),
                holder: holder.to_owned(),
                epoch: u64::try_from(epoch).unwrap_or(0),
            }))
        })?;
        if let (Some(l), true) = (&lease, self.leases.closed()) {
            // Shutdown released the leases while this one was being taken.
            self.release_lease(l)?;
            return Ok(None);
        }
        Ok(lease)
    }

    fn renew_lease(&self, lease: &Lease, ttl_ms: u64) -> Result<bool, StoreError> {
        if self.leases.closed() {
            return Ok(false);
        }
        let ttl = big(ttl_ms);
        let epoch = big(lease.epoch);
        self.run(async {
            let c = self.client().await?;
            // No test of expires_at: if it lapsed and nobody took it over (same epoch),
            // nobody else delivered meanwhile and going on is safe.
            let n = c
                .execute(
                    "UPDATE fg_delivery_leases SET expires_at = now() + $5::bigint * interval '1 millisecond' \
                     WHERE org_id = $1 AND endpoint_id = $2 AND holder = $3 AND epoch = $4",
                    &[&lease.org_id, &lease.endpoint_id, &lease.holder, &epoch, &ttl],
                )
                .await?;
            Ok(n == 1)
        })
    }

    fn release_lease(&self, lease: &Lease) -> Result<(), StoreError> {
        let epoch = big(lease.epoch);
        self.run(async {
            let c = self.client().await?;
            c.execute(
                "UPDATE fg_delivery_leases SET expires_at = '-infinity' \
                 WHERE org_id = $1 AND endpoint_id = $2 AND holder = $3 AND epoch = $4",
                &[&lease.org_id, &lease.endpoint_id, &lease.holder, &epoch],
            )
            .await?;
            Ok(())
        })
    }
}
