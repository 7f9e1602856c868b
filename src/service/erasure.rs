//! Erasure: removing what end users typed, and who they are, from feedback items and
//! every history version of them, leaving tombstones, with a receipt per erasure.
//!
//! An erasure covers one item, every item of a `user_id`, or every item of a
//! `session_id` in the caller's org (the items stored when it starts). It runs as a job:
//! the [`ErasureRecord`] naming the items is made durable first (`running`), then the
//! items are erased in chunks, each chunk one durable write (the record blanked through
//! [`Feedback::erase_content`] as a new version with an `erase` history entry, then
//! every stored history version scrubbed of content fields), then the record is
//! rewritten `done` with its counts: the receipt. Each step is idempotent, so a job that
//! a crash stopped is run again from its start by [`Service::resume_erasures`] when the
//! store opens. On sled, a finished erasure also leaves a marker file, and the server
//! rewrites the database online within `erasure.rewrite_within_secs` (the
//! `feedgraph-rewrite` thread, [`spawn_rewriter`]; erasures finishing meanwhile share
//! that rewrite), or at once on `POST /admin/compact`, so the old bytes leave the disk
//! (see `store::compact` and `SledStore::rewrite`). A receipt says when that happened
//! (`bytes_gone_at`). On PostgreSQL the same trigger runs a plain `VACUUM` of the tables
//! an erasure touches.

use serde::{Deserialize, Serialize};

use super::{Service, ServiceError, check_org};
use crate::model::{Actor, ChangeAction, Millis, now_millis};
use crate::store::erasure::{is_erase_entry, scrub_history, subject_hash};
use crate::store::rules::field_change;
use crate::store::{ErasureRecord, ErasureScope, ErasureState, StoreError, WriteTx};

/// Erasure settings (`[erasure]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ErasureConfig {
    /// Items erased per durable write (default 64).
    pub chunk_items: usize,
    /// On sled: rewrite the database at start-up when an erasure finished since the last
    /// rewrite, so erased bytes leave the disk (default true).
    pub compact_on_start: bool,
    /// On sled: the longest time (seconds) from the end of an erasure or retention run to
    /// the start of the online rewrite that removes its bytes from the disk (default 600);
    /// erasures finishing meanwhile share that rewrite. 0 rewrites at once.
    pub rewrite_within_secs: u64,
    /// Test only: pause this many ms after each batch of the rewrite's copy (default 0),
    /// so a test can stop the process in the middle of a rewrite.
    pub test_rewrite_delay_ms: u64,
    /// Test only: pause this many ms after each chunk (default 0), so a test can stop the
    /// process in the middle of an erasure.
    pub test_chunk_delay_ms: u64,
}

impl Default for ErasureConfig {
    fn default() -> Self {
        ErasureConfig {
            chunk_items: 64,
            compact_on_start: true,
            rewrite_within_secs: 600,
            test_rewrite_delay_ms: 0,
            test_chunk_delay_ms: 0,
        }
    }
}

/// Retention settings (`[retention]`): per-org policies applied in the background and by
/// `feedgraph retention`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// How often (seconds) the server applies every policy (default 3600); 0 never runs
    /// them in the background (the CLI still does).
    pub interval_secs: u64,
    /// A policy per org id (`[retention.orgs.acme] max_age_days = 90`).
    pub orgs: std::collections::BTreeMap<String, RetentionPolicy>,
    /// Test only: added to the clock (ms) when deciding which items are old enough.
    pub test_clock_offset_ms: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            interval_secs: 3600,
            orgs: std::collections::BTreeMap::new(),
            test_clock_offset_ms: 0,
        }
    }
}

/// One org's retention policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionPolicy {
    /// Items created more than this many days ago have their content erased.
    pub max_age_days: u64,
    /// Spare items a committed training batch used (default true): their text stays
    /// for the trained adapter's provenance.
    pub spare_committed: bool,
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        RetentionPolicy {
            max_age_days: 365,
            spare_committed: true,
        }
    }
}

/// The body of `POST /erasures`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EraseRequest {
    /// `item`, `user` or `session`.
    pub scope: ErasureScope,
    /// The feedback id, `user_id` or `session_id`.
    pub value: String,
}

/// A page of erasure receipts, newest first.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ErasurePage {
    /// The receipts (and any erasure still running), each with what is known about its
    /// bytes on disk, as `GET /erasures/{id}` gives it.
    pub erasures: Vec<ErasureReceipt>,
    /// How many are on this page.
    pub count: usize,
    /// Pass as `before` for the next page; `null` on the last.
    pub next_before: Option<String>,
}

/// Most receipts on one page.
const MAX_PAGE: usize = 1000;

impl Service {
    /// Erases the items `req` names in the actor's org and returns the receipt. Unknown
    /// item ids are a 404; a user or session with no items gives a receipt of zero items.
    pub fn erase(&self, actor: &Actor, req: &EraseRequest) -> Result<ErasureRecord, ServiceError> {
        check_org(&actor.org)?;
        let value = req.value.trim();
        if value.is_empty() {
            return Err(ServiceError::BadRequest(
                "'value' must name the item, user or session to erase".into(),
            ));
        }
        let (subject, mut item_ids) = match req.scope {
            ErasureScope::Item => {
                if self.store.get_record(&actor.org, value)?.is_none() {
                    return Err(ServiceError::NotFound {
                        kind: "feedback",
                        id: value.to_owned(),
                    });
                }
                (value.to_owned(), vec![value.to_owned()])
            }
            ErasureScope::User | ErasureScope::Session => (
                subject_hash(value),
                self.items_of(&actor.org, req.scope, value),
            ),
            ErasureScope::Retention => {
                return Err(ServiceError::BadRequest(
                    "scope must be item, user or session".into(),
                ));
            }
        };
        item_ids.sort_unstable();
        self.erase_ids(actor, req.scope, subject, item_ids, &mut |_, _| {})
    }

    /// Runs an erasure of `item_ids` (already chosen) to the end and returns its receipt.
    pub(crate) fn erase_ids(
        &self,
        actor: &Actor,
        scope: ErasureScope,
        subject: String,
        item_ids: Vec<String>,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<ErasureRecord, ServiceError> {
        let now = now_millis();
        let id = self
            .ids
            .next_at(now)
            .replacen(crate::model::FEEDBACK_ID_PREFIX, "erasure-", 1);
        let job = ErasureRecord {
            id,
            org_id: actor.org.clone(),
            scope,
            subject,
            requested_by: actor.user.clone(),
            requested_at: now,
            state: ErasureState::Running,
            items: 0,
            versions: 0,
            item_ids,
            finished_at: None,
        };
        // The job is durable before any item is touched.
        self.store.write(actor, &mut |tx| tx.put_erasure(&job))?;
        self.run_erasure(job, progress)
    }

    /// The ids of the org's items with this user or session, from the graph (durable
    /// state only).
    fn items_of(&self, org: &str, scope: ErasureScope, value: &str) -> Vec<String> {
        let Some(g) = self.graph.org(org) else {
            return Vec::new();
        };
        let Some(sym) = g.strings().get(value) else {
            return Vec::new();
        };
        g.feedback()
            .iter()
            .filter(|n| match scope {
                ErasureScope::User => n.user_id == Some(sym),
                _ => n.session_id == Some(sym),
            })
            .map(|n| n.id.to_string())
            .collect()
    }

    /// Erases every item of a running job, chunk by chunk, then writes its receipt.
    fn run_erasure(
        &self,
        mut job: ErasureRecord,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<ErasureRecord, ServiceError> {
        let total = job.item_ids.len() as u64;
        let mut done = 0u64;
        let actor = Actor::new(job.org_id.clone(), job.requested_by.clone());
        let chunk = self.erasure.chunk_items.max(1);
        let mut versions = 0u64;
        let mut items = 0u64;
        for ids in job.item_ids.chunks(chunk) {
            let mut counted = (0u64, 0u64);
            // Counted until the graph has been offered the change (see `InFlight`).
            let _in_flight = self.in_flight.enter();
            let changes = self.store.write(&actor, &mut |tx| {
                counted = (0, 0);
                for id in ids {
                    if let Some(v) = erase_one(tx, id, now_millis())? {
                        counted.0 += 1;
                        counted.1 += v;
                    }
                }
                Ok(())
            })?;
            self.graph.apply(&job.org_id, &changes).wait();
            items += counted.0;
            versions += counted.1;
            done += ids.len() as u64;
            progress(done, total);
            if self.erasure.test_chunk_delay_ms > 0 {
                std::thread::sleep(std::time::Duration::from_millis(
                    self.erasure.test_chunk_delay_ms,
                ));
            }
        }
        // The zeros written over the erased items in adapter runs reach the disk before
        // the receipt says the erasure is done.
        self.runs.sync_blanked();
        job.state = ErasureState::Done;
        job.items = items;
        job.versions = versions;
        job.finished_at = Some(now_millis());
        self.store.write(&actor, &mut |tx| tx.put_erasure(&job))?;
        if let Some(sled) = self.sled() {
            sled.mark_compaction_due()?;
        } else {
            // PostgreSQL: reclaim the dead row versions now rather than at autovacuum's
            // pace; best effort, off the request's path.
            let store = self.store.clone();
            let spawned = std::thread::Builder::new()
                .name("feedgraph-vacuum".into())
                .spawn(move || {
                    if let Err(e) = store.vacuum_erased() {
                        tracing::warn!(error = %e, "VACUUM after an erasure failed");
                    }
                });
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "cannot start VACUUM after an erasure");
            }
        }
        tracing::info!(
            erasure = %job.id,
            scope = job.scope.as_str(),
            items = job.items,
            versions = job.versions,
            "erasure finished"
        );
        Ok(job)
    }

    /// Carries every erasure a crash stopped to its end (at start-up); returns how many.
    pub fn resume_erasures(&self) -> Result<usize, ServiceError> {
        let pending = self.store.unfinished_erasures()?;
        let n = pending.len();
        for job in pending {
            tracing::warn!(erasure = %job.id, items = job.item_ids.len(), "resuming an erasure a stop interrupted");
            self.run_erasure(job, &mut |_, _| {})?;
        }
        Ok(n)
    }

    /// Applies `org`'s retention policy as of `now` (ms; the configured test offset is
    /// added): erases the content of every item created more than `max_age_days` before,
    /// not erased yet, sparing items of committed batches if the policy says so. Returns
    /// the receipt, or `None` when nothing was old enough. `progress` gets (done, total).
    pub fn apply_retention(
        &self,
        org: &str,
        now: Millis,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<Option<ErasureRecord>, ServiceError> {
        check_org(org)?;
        let policy = self.retention.orgs.get(org).ok_or_else(|| {
            ServiceError::BadRequest(format!("org '{org}' has no retention policy"))
        })?;
        let now = now.saturating_add(self.retention.test_clock_offset_ms);
        let cutoff = now.saturating_sub(policy.max_age_days.saturating_mul(86_400_000));
        let candidates: Vec<String> = match self.graph.org(org) {
            None => Vec::new(),
            Some(g) => g
                .feedback()
                .iter()
                .filter(|n| n.created_at < cutoff)
                .filter(|n| {
                    !(policy.spare_committed && n.used_for_training && n.training_batch_id != 0)
                })
                .map(|n| n.id.to_string())
                .collect(),
        };
        // Tombstones are not erased again.
        let mut ids = Vec::with_capacity(candidates.len());
        for chunk in candidates.chunks(1024) {
            let keys: Vec<&str> = chunk.iter().map(String::as_str).collect();
            for f in self.store.get_many(org, &keys)?.into_iter().flatten() {
                if !f.is_erased() {
                    ids.push(f.id);
                }
            }
        }
        if ids.is_empty() {
            return Ok(None);
        }
        ids.sort_unstable();
        let actor = Actor::new(org, "retention");
        self.erase_ids(
            &actor,
            ErasureScope::Retention,
            format!("created_before:{cutoff}"),
            ids,
            progress,
        )
        .map(Some)
    }

    /// The orgs with a retention policy.
    pub fn retention_orgs(&self) -> Vec<String> {
        self.retention.orgs.keys().cloned().collect()
    }

    /// How often the server applies the retention policies; `None` for never.
    pub fn retention_interval(&self) -> Option<std::time::Duration> {
        (self.retention.interval_secs > 0 && !self.retention.orgs.is_empty())
            .then(|| std::time::Duration::from_secs(self.retention.interval_secs))
    }

    /// A page of the org's erasure receipts, newest first.
    pub fn erasures(
        &self,
        org: &str,
        before: Option<&str>,
        limit: Option<usize>,
    ) -> Result<ErasurePage, ServiceError> {
        let limit = limit.unwrap_or(100);
        if limit == 0 || limit > MAX_PAGE {
            return Err(ServiceError::BadRequest(format!(
                "limit must be between 1 and {MAX_PAGE}"
            )));
        }
        let mut erasures = self.store.erasures_page(org, before, limit + 1)?;
        let next_before = if erasures.len() > limit {
            erasures.truncate(limit);
            erasures.last().map(|e| e.id.clone())
        } else {
            None
        };
        let erasures = erasures
            .into_iter()
            .map(|e| self.receipt(e))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ErasurePage {
            count: erasures.len(),
            erasures,
            next_before,
        })
    }

    /// One erasure receipt of the org.
    pub fn erasure(&self, org: &str, id: &str) -> Result<ErasureRecord, ServiceError> {
        self.store
            .get_erasure(org, id)?
            .ok_or_else(|| ServiceError::NotFound {
                kind: "erasure",
                id: id.to_owned(),
            })
    }

    /// `record` with what is known about its bytes on disk (see [`ErasureReceipt`]).
    pub fn receipt(&self, record: ErasureRecord) -> Result<ErasureReceipt, ServiceError> {
        let (mut gone, mut due) = (None, None);
        if let (Some(sled), Some(finished)) = (self.sled(), record.finished_at) {
            gone = sled.bytes_gone_at(finished)?;
            if gone.is_none() {
                due = Some(
                    finished.saturating_add(self.erasure.rewrite_within_secs.saturating_mul(1000)),
                );
            }
        }
        Ok(ErasureReceipt {
            record,
            bytes_gone_at: gone,
            bytes_due_by: due,
        })
    }

    /// Rewrites the store now so erased bytes leave the disk: on sled the online rewrite
    /// (writes go on; see `SledStore::rewrite`), on PostgreSQL a plain `VACUUM` of the
    /// tables erasures touch (dead row versions become free space; see README).
    ///
    /// Any org's admin may ask, and the work covers the whole store, so a request only
    /// starts what is due: on sled a rewrite only while an erasure's bytes wait for one
    /// (otherwise the answer says nothing was due), on PostgreSQL at most one `VACUUM`
    /// per [`VACUUM_INTERVAL`].
    pub fn compact_now(&self) -> Result<CompactOutcome, ServiceError> {
        match self.sled() {
            Some(sled) => {
                let rewrite = sled.rewrite_if_due()?;
                Ok(CompactOutcome {
                    backend: "sled",
                    done: rewrite.is_some(),
                    rewrite,
                })
            }
            None => {
                let done = {
                    let mut last = self.last_vacuum.lock();
                    let due = last.is_none_or(|t| t.elapsed() >= VACUUM_INTERVAL);
                    if due {
                        *last = Some(std::time::Instant::now());
                    }
                    due
                };
                if done {
                    self.store.vacuum_erased()?;
                }
                Ok(CompactOutcome {
                    backend: self.store.name(),
                    done,
                    rewrite: None,
                })
            }
        }
    }
}

/// An erasure receipt with what is known about the erased bytes on disk.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ErasureReceipt {
    /// The erasure record.
    #[serde(flatten)]
    pub record: ErasureRecord,
    /// On sled: when the old files holding the erased bytes were deleted (ms since
    /// epoch), by the first database rewrite after the erasure finished; null until then
    /// and on PostgreSQL (see README, Data lifecycle).
    pub bytes_gone_at: Option<Millis>,
    /// On sled, while `bytes_gone_at` is null: by when the scheduled rewrite starts
    /// (`finished_at` + `erasure.rewrite_within_secs`).
    pub bytes_due_by: Option<Millis>,
}

/// What `POST /admin/compact` did.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CompactOutcome {
    /// `sled` or `postgres`.
    pub backend: &'static str,
    /// Whether anything ran: false when no erased bytes waited for a rewrite (sled) or a
    /// `VACUUM` ran less than a minute ago (PostgreSQL).
    pub done: bool,
    /// On sled: the rewrite's report.
    pub rewrite: Option<crate::store::compact::CompactReport>,
}

/// The least time between two `VACUUM`s that `POST /admin/compact` starts on PostgreSQL.
pub const VACUUM_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

/// How often the rewrite thread looks for the erasure marker.
const REWRITE_POLL: std::time::Duration = std::time::Duration::from_millis(200);

/// Starts the `feedgraph-rewrite` thread (sled only): once the erasure marker appears it
/// waits at most `erasure.rewrite_within_secs` (erasures that finish meanwhile join the
/// same rewrite), then rewrites the database online. The marker stays until a rewrite
/// swapped, so a failed rewrite is tried again (after another wait). Holds the service
/// weakly and ends with the server.
pub fn spawn_rewriter(service: &std::sync::Arc<Service>) {
    let Some(sled) = service.sled() else {
        return;
    };
    let dir = sled.dir().to_owned();
    let within = std::time::Duration::from_secs(service.erasure.rewrite_within_secs);
    let weak = std::sync::Arc::downgrade(service);
    let spawned = std::thread::Builder::new()
        .name("feedgraph-rewrite".into())
        .spawn(move || {
            let mut due_since: Option<std::time::Instant> = None;
            loop {
                std::thread::sleep(REWRITE_POLL);
                if weak.strong_count() == 0 {
                    return;
                }
                if !crate::store::compact::is_due(&dir) {
                    due_since = None;
                    continue;
                }
                let since = *due_since.get_or_insert_with(std::time::Instant::now);
                if since.elapsed() < within {
                    continue;
                }
                let Some(service) = weak.upgrade() else {
                    return;
                };
                if let Some(sled) = service.sled() {
                    match sled.rewrite() {
                        Ok(_) => due_since = None,
                        Err(e) => {
                            tracing::error!(error = %e, "scheduled rewrite failed; retried later");
                            due_since = Some(std::time::Instant::now());
                        }
                    }
                }
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the rewrite thread");
    }
}

/// Erases one item inside a write: blanks the record, its links' metadata included, as a
/// new version (unless it is erased already) and scrubs every stored history version. Returns how many history
/// versions held content before (all but `erase` entries), `None` if the item is gone.
fn erase_one(tx: &mut dyn WriteTx, id: &str, at: Millis) -> Result<Option<u64>, StoreError> {
    let by = tx.actor().user.clone();
    let updated = tx.update_feedback(id, at, &mut |cur| {
        if cur.feedback.is_erased() {
            return Ok(None);
        }
        let mut next = cur.clone();
        next.feedback.erase_content(at, &by);
        // A link's metadata is the client's free text about the item: it goes too.
        for link in &mut next.links {
            link.metadata = Default::default();
        }
        Ok(Some((
            next,
            ChangeAction::Erase,
            vec![
                field_change("erased_at", None, Some(&at)),
                field_change::<str>("erased_by", None, Some(&by)),
            ],
        )))
    });
    match updated {
        Ok(_) => {}
        Err(StoreError::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut versions = 0u64;
    tx.rewrite_feedback_history(id, &mut |entry| {
        if !is_erase_entry(entry) {
            versions += 1;
        }
        scrub_history(entry)
    })?;
    Ok(Some(versions))
}
