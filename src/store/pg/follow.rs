//! The PostgreSQL change log (`fg_changes`) and how a replica reads it.
//!
//! **Writing.** Triggers on `fg_feedback`, `fg_adapters` and `fg_batches` (migration 5)
//! append one row per changed record inside the writing transaction: `seq` (a
//! `bigserial`), `xid` (the writer's 64-bit transaction id, `pg_current_xact_id()`), the
//! org, the record's kind, id and new version. A change row therefore commits or rolls
//! back with its write, whichever path wrote it (submit, batch, `write` units, load, and a
//! raw SQL update by an operator too).
//!
//! **Reading without missing a late commit.** `seq` values are taken when a row is
//! inserted, not when its transaction commits, so a transaction holding seq 10 may commit
//! after one holding seq 11. A reader that remembered "everything up to seq 11" would
//! never see 10. Tracking holes with a timeout gives up on a hole after a guess, and a
//! long transaction (a big load, a stalled client) outlives any guess. We order by the
//! writer's transaction id instead, and read only what no running transaction can add
//! to: each read takes `xmin = pg_snapshot_xmin(pg_current_snapshot())`, the oldest
//! transaction still running, and returns the rows with `position <= (xid, seq) < (xmin,
//! 0)`. Every transaction with `xid < xmin` has finished, so its rows are all visible (or
//! rolled back, never to appear), and every transaction still running has `xid >= xmin`
//! and is read by a later call. The price: a long-running write transaction holds every
//! replica's log position back until it ends (the lag shows it in `/readyz` and
//! `/metrics`); nothing is ever skipped. Read-only transactions take no xid and never
//! hold it back. `xid8` is 64 bits and does not wrap.
//!
//! **Waking up.** After each committed write this process raises a flag; a task sends one
//! `NOTIFY fg_changes` for all the writes since its last one (outside the writes'
//! transactions: a NOTIFY inside them would serialise every commit on the notification
//! queue's lock). A listener connection turns the other replicas' notifications into a
//! wake-up of [`ChangeLog::wait`]; without one (a writer that does not notify, a lost
//! connection) the follower polls every `storage.postgres.follow_poll_ms`.
//!
//! **Pruning.** Each replica records its position in `fg_replicas`; rows below the lowest
//! position of the replicas seen within the retention age, and any row older than the
//! retention age, are deleted.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use parking_lot::{Condvar, Mutex};
use tokio::sync::Notify;

use super::ops::PgError;
use super::{PgStore, decode_scanned};
use crate::store::{
    ChangeLog, ChangeSet, LogLag, LogPosition, LogRead, LoggedChange, StoreError, keys,
};

/// Subscribes a connection to the channel replicas wake each other on.
const LISTEN: &str = "LISTEN fg_changes";

/// Wake-ups between this process's writers, its notifier task and its follower.
#[derive(Debug, Default)]
pub struct Signals {
    /// Set by a committed write, cleared by the notifier when it sends.
    dirty: AtomicBool,
    /// Wakes the notifier task.
    wrote: Notify,
    /// Counts notifications heard from the database; the follower waits on a change.
    heard: Mutex<u64>,
    heard_cv: Condvar,
    /// The count the follower last woke at: a notification heard while it was busy
    /// wakes its next wait at once.
    follower_seen: Mutex<u64>,
}

impl Signals {
    /// Called after a write committed: the notifier announces it soon.
    pub fn wrote(&self) {
        if !self.dirty.swap(true, Ordering::AcqRel) {
            self.wrote.notify_one();
        }
    }

    fn heard(&self) {
        *self.heard.lock() += 1;
        self.heard_cv.notify_all();
    }

    fn wait(&self, timeout: Duration) {
        let mut seen = self.follower_seen.lock();
        let mut heard = self.heard.lock();
        let last = *seen;
        let _ = self
            .heard_cv
            .wait_while_for(&mut heard, |h| *h == last, timeout);
        *seen = *heard;
    }
}

/// Starts the notifier and the listener on the backend's runtime. Both run until the
/// runtime shuts down; both survive a database restart (they reconnect).
pub(super) fn start(
    handle: &tokio::runtime::Handle,
    pool: deadpool_postgres::Pool,
    config: tokio_postgres::Config,
    signals: Arc<Signals>,
) {
    let notifier_signals = signals.clone();
    handle.spawn(async move {
        let signals = notifier_signals;
        loop {
            signals.wrote.notified().await;
            // Writes that finish in the next moment share this notification.
            tokio::time::sleep(Duration::from_millis(2)).await;
            signals.dirty.store(false, Ordering::Release);
            let sent = match pool.get().await {
                Ok(c) => c
                    .batch_execute("NOTIFY fg_changes")
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            if let Err(e) = sent {
                tracing::debug!("could not notify the other replicas: {e}");
            }
        }
    });
    handle.spawn(async move {
        loop {
            if let Err(e) = listen(&config, &signals).await {
                tracing::debug!("change-log listener: {e}; reconnecting");
            }
            // Whatever we missed while disconnected, the follower's poll finds.
            signals.heard();
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
}

/// One listener connection: LISTEN, then turn each notification into a wake-up until the
/// connection ends.
async fn listen(config: &tokio_postgres::Config, signals: &Signals) -> Result<(), String> {
    let (client, mut connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(|e| e.to_string())?;
    let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
    let listening = client.batch_execute(LISTEN);
    tokio::pin!(listening);
    // The connection must be polled for the LISTEN to complete.
    loop {
        tokio::select! {
            done = &mut listening => { done.map_err(|e| e.to_string())?; break; }
            m = messages.next() => match m {
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.to_string()),
                None => return Err("connection closed".into()),
            }
        }
    }
    while let Some(m) = messages.next().await {
        match m {
            Ok(tokio_postgres::AsyncMessage::Notification(_)) => signals.heard(),
            Ok(_) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    Err("connection closed".into())
}

fn position_params(p: LogPosition) -> (String, i64) {
    (p.xid.to_string(), p.seq)
}

fn parse_xid(text: &str) -> Result<u64, PgError> {
    text.parse::<u64>().map_err(|e| {
        PgError::Store(StoreError::Backend(format!(
            "unreadable transaction id '{text}': {e}"
        )))
    })
}

impl ChangeLog for PgStore {
    fn start_position(&self) -> Result<LogPosition, StoreError> {
        self.run(async {
            let c = self.client().await?;
            let row = c
                .query_one("SELECT pg_snapshot_xmin(pg_current_snapshot())::text", &[])
                .await?;
            let xmin: String = row.try_get(0)?;
            Ok(LogPosition {
                xid: parse_xid(&xmin)?,
                seq: 0,
            })
        })
    }

    fn read_since(&self, from: LogPosition, limit: usize) -> Result<LogRead, StoreError> {
        let (xid, seq) = position_params(from);
        let limit = i64::try_from(limit.max(1)).unwrap_or(i64::MAX);
        self.run(async {
            let c = self.client().await?;
            // One statement, one snapshot: `xmin` and the rows below it are read together
            // (every transaction below the snapshot's xmin has ended, so its rows are
            // visible to that same snapshot). Every row carries xmin; with no change, one
            // row of xmin and NULLs.
            let stmt = c
                .prepare_cached(
                    "SELECT s.xmin::text, c.org_id, c.entity, c.id, c.version, c.at_ms, \
                     c.xid::text, c.seq \
                     FROM (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xmin) s \
                     LEFT JOIN LATERAL (SELECT org_id, entity, id, version, \
                         (extract(epoch FROM at) * 1000)::bigint AS at_ms, xid, seq \
                         FROM fg_changes \
                         WHERE (xid, seq) >= ($1::text::xid8, $2) AND xid < s.xmin \
                         ORDER BY xid, seq LIMIT $3) c ON true \
                     ORDER BY c.xid, c.seq",
                )
                .await?;
            let rows = c.query(&stmt, &[&xid, &seq, &limit]).await?;
            let Some(head) = rows.first() else {
                return Err(PgError::Store(StoreError::Backend(
                    "the change-log read returned no snapshot row".into(),
                )));
            };
            let xmin: String = head.try_get(0)?;
            let mut changes = Vec::with_capacity(rows.len());
            let mut last = None;
            for r in &rows {
                let Some(seq) = r.try_get::<_, Option<i64>>(7)? else {
                    continue;
                };
                let kind: i16 = r.try_get(2)?;
                changes.push(LoggedChange {
                    org: r.try_get(1)?,
                    kind: u8::try_from(kind).unwrap_or(0),
                    id: r.try_get(3)?,
                    version: r.try_get(4)?,
                    at_ms: r.try_get(5)?,
                });
                let x: String = r.try_get(6)?;
                last = Some(LogPosition {
                    xid: parse_xid(&x)?,
                    seq,
                });
            }
            let full = changes.len() as i64 >= limit;
            let xmin = parse_xid(&xmin)?;
            let next = match (full, last) {
                // Stopped at the limit: resume just after the last row read.
                (true, Some(p)) => LogPosition {
                    xid: p.xid,
                    seq: p.seq.saturating_add(1),
                },
                // Read everything below xmin: nothing below it can still appear.
                _ if xmin > from.xid => LogPosition { xid: xmin, seq: 0 },
                _ => from,
            };
            Ok(LogRead {
                changes,
                next,
                full,
            })
        })
    }

    fn fetch(&self, changes: &[LoggedChange]) -> Result<ChangeSet, StoreError> {
        let (mut f_orgs, mut f_ids, mut a_orgs, mut a_ids) = (vec![], vec![], vec![], vec![]);
        for ch in changes {
            if ch.kind == keys::KIND_FEEDBACK {
                f_orgs.push(ch.org.as_str());
                f_ids.push(ch.id.as_str());
            } else if ch.kind == keys::KIND_ADAPTER {
                a_orgs.push(ch.org.as_str());
                a_ids.push(ch.id.as_str());
            }
        }
        self.run(async {
            let c = self.client().await?;
            let mut out = ChangeSet::default();
            if !a_ids.is_empty() {
                let rows = c
                    .query(
                        "SELECT a.org_id, a.body FROM fg_adapters a \
                         JOIN unnest($1::text[], $2::text[]) AS k(org_id, id) \
                         ON a.org_id = k.org_id AND a.id = k.id",
                        &[&a_orgs, &a_ids],
                    )
                    .await?;
                for r in &rows {
                    let org: &str = r.try_get(0)?;
                    let body: &[u8] = r.try_get(1)?;
                    out.adapters.push(decode_scanned("fg_adapters", org, body)?);
                }
            }
            if !f_ids.is_empty() {
                let rows = c
                    .query(
                        "SELECT f.org_id, f.body FROM fg_feedback f \
                         JOIN unnest($1::text[], $2::text[]) AS k(org_id, id) \
                         ON f.org_id = k.org_id AND f.id = k.id",
                        &[&f_orgs, &f_ids],
                    )
                    .await?;
                for r in &rows {
                    let org: &str = r.try_get(0)?;
                    let body: &[u8] = r.try_get(1)?;
                    out.feedback.push(decode_scanned("fg_feedback", org, body)?);
                }
            }
            Ok(out)
        })
    }

    fn lag(&self, from: LogPosition) -> Result<LogLag, StoreError> {
        let (xid, seq) = position_params(from);
        self.run(async {
            let c = self.client().await?;
            let stmt = c
                .prepare_cached(
                    "SELECT count(*), \
                     COALESCE((extract(epoch FROM (now() - min(at))) * 1000)::bigint, 0) \
                     FROM (SELECT at FROM fg_changes \
                           WHERE (xid, seq) >= ($1::text::xid8, $2) LIMIT 1000000) t",
                )
                .await?;
            let row = c.query_one(&stmt, &[&xid, &seq]).await?;
            let n: i64 = row.try_get(0)?;
            let ms: i64 = row.try_get(1)?;
            Ok(LogLag {
                changes_behind: u64::try_from(n).unwrap_or(0),
                ms_behind: u64::try_from(ms).unwrap_or(0),
            })
        })
    }

    fn wait(&self, timeout: Duration) {
        self.signals.wait(timeout);
    }

    fn report_position(&self, replica: &str, at: LogPosition) -> Result<(), StoreError> {
        let xid = at.xid.to_string();
        self.run(async {
            let c = self.client().await?;
            c.execute(
                "INSERT INTO fg_replicas (replica_id, position, seen_at) \
                 VALUES ($1, $2::text::xid8, now()) ON CONFLICT (replica_id) \
                 DO UPDATE SET position = EXCLUDED.position, seen_at = now()",
                &[&replica, &xid],
            )
            .await?;
            Ok(())
        })
    }

    fn prune(&self, retention: Duration) -> Result<u64, StoreError> {
        let secs = i64::try_from(retention.as_secs())
            .unwrap_or(i64::MAX)
            .max(1);
        self.run(async {
            let c = self.client().await?;
            let n = c
                .execute(
                    "DELETE FROM fg_changes WHERE \
                     at < now() - make_interval(secs => $1::bigint::double precision) \
                     OR xid < (SELECT position FROM fg_replicas \
                               WHERE seen_at >= now() - make_interval(secs => $1::bigint::double precision) \
                               ORDER BY position LIMIT 1)",
                    &[&secs],
                )
                .await?;
            Ok(n)
        })
    }
}
