//! The training workflow: claim a batch (lease items), commit it (mark them used, freeze a
//! manifest), abort it, mark items used directly, export a batch for trainers, review items,
//! and report the retraction impact of an item.
//!
//! Exactly-once: claims, commits and aborts of one org run under that org's claim lock, so
//! two claims never select the same item, and every item change re-checks its state under
//! the record's stripe lock. Across replicas of a shared store (PostgreSQL) a claim holds
//! its candidates' rows, skipping those another claimer holds, and a commit or abort reads
//! its batch under the batch's lock inside its write. Leases are stored in the records and batches in sled, so they
//! survive restarts; an expired lease frees its items for the next claim, and the expired
//! batch can no longer commit items someone else has since leased.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{Service, ServiceError};
use crate::graph::OrgGraph;
use crate::model::{
    Actor, ChangeAction, Feedback, FeedbackKind, FeedbackType, Millis, ValidationReason,
    ValidationStatus, now_millis,
};
use crate::store::rules::{creation_changes, field_change};
use crate::store::{Batch, BatchState, FeedbackRecord, Lease, ManifestEntry, stable_hash};

/// Most items one claim may take.
pub const MAX_CLAIM: usize = 10_000;
/// Default lease, seconds.
pub const DEFAULT_LEASE_SECS: u64 = 3600;
/// Longest lease, seconds (7 days).
pub const MAX_LEASE_SECS: u64 = 7 * 86_400;

/// A claim request.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimRequest {
    /// Only feedback linked to this adapter.
    pub adapter_id: Option<String>,
    /// Only this model version.
    pub model: Option<String>,
    /// With `adapter_id`: also feedback of its descendants.
    #[serde(default)]
    pub include_descendants: bool,
    /// How many items at most (1..=10,000).
    #[schema(minimum = 1, maximum = 10000)]
    pub limit: Option<usize>,
    /// Lease length in seconds (default 3600, at most 7 days).
    #[schema(minimum = 1, maximum = 604800)]
    pub lease_seconds: Option<u64>,
}

/// A commit request.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommitRequest {
    /// The adapter trained on the batch (created if unknown).
    pub trained_adapter_id: Option<String>,
    /// Its version.
    pub trained_adapter_version: Option<String>,
}

/// A batch as clients see it: the stored batch plus derived state.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct BatchView {
    /// `leased`, `expired`, `committed` or `aborted`.
    #[schema(value_type = String, pattern = "^(leased|expired|committed|aborted)$")]
    pub state: &'static str,
    /// The batch id.
    pub batch_id: u64,
    /// Items leased (or, once committed, trained on).
    pub count: usize,
    /// The stored batch.
    #[serde(flatten)]
    pub batch: Batch,
}

impl BatchView {
    /// Wraps a batch, computing `expired` from the lease time.
    pub fn new(batch: Batch, now: Millis) -> Self {
        let state = match batch.state {
            BatchState::Leased if batch.lease_expires_at <= now => "expired",
            BatchState::Leased => "leased",
            BatchState::Committed => "committed",
            BatchState::Aborted => "aborted",
        };
        let count = match batch.state {
            BatchState::Committed => batch.manifest.len(),
            _ => batch.items.len(),
        };
        BatchView {
            state,
            batch_id: batch.id,
            count,
            batch,
        }
    }
}

/// A claimed batch and its items.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Claimed {
    /// The batch.
    #[serde(flatten)]
    pub batch: BatchView,
    /// The leased items, in claim order (oldest first).
    pub feedback: Vec<Feedback>,
}

/// What happened to one id of a mark-used request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct MarkResult {
    /// The feedback id.
    pub id: String,
    /// HTTP-style status for this id: 200 marked (or repeated in the same call), 404, 409.
    pub status: u16,
    /// `marked`, `already_marked` (listed twice in one call), `not_found`,
    /// `used_by_other_batch`, `leased_to_other_batch`.
    #[schema(value_type = String)]
    pub result: &'static str,
    /// The batch already holding the item, on conflict.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_id: Option<u64>,
}

/// Export layouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// Chat messages, question -> answer (positive) or -> correction (corrected negative).
    Sft,
    /// TRL preference pairs: prompt, chosen (correction), rejected (answer).
    Dpo,
    /// OpenAI preference fine-tuning: input messages, preferred and non-preferred output.
    OpenAiDpo,
    /// TRL unpaired: prompt, completion, label (thumbs up = true; a rating is desirable
    /// at or above its score config's threshold).
    Kto,
    /// TRL preference pairs with a margin, from two ratings of answers to one prompt on
    /// one scale: prompt, chosen (higher rated), rejected, margin (the score difference).
    Preference,
    /// Ground-truth labels of inputs: prompt, label (items of kind `label`).
    Labels,
}

impl std::str::FromStr for ExportFormat {
    type Err = ServiceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "sft" => Ok(ExportFormat::Sft),
            "dpo" => Ok(ExportFormat::Dpo),
            "openai-dpo" => Ok(ExportFormat::OpenAiDpo),
            "kto" => Ok(ExportFormat::Kto),
            "preference" => Ok(ExportFormat::Preference),
            "labels" => Ok(ExportFormat::Labels),
            other => Err(ServiceError::BadRequest(format!(
                "unknown export format '{other}' (sft, dpo, openai-dpo, kto, preference, labels)"
            ))),
        }
    }
}

/// An export: JSONL lines plus counts trainers use to weight classes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Export {
    /// One JSON object per line.
    pub lines: Vec<String>,
    /// Items in the batch.
    pub items: usize,
    /// Items that produced no line in this format (e.g. negatives without correction for DPO).
    pub skipped: usize,
    /// KTO: thumbs up.
    pub desirable: usize,
    /// KTO: thumbs down.
    pub undesirable: usize,
    /// Items of the batch no longer approved (rejected after training): left out.
    pub retracted: usize,
}

/// TRL preference lines from rated items: per prompt and scale (question and score
/// config), the highest-rated answer is `chosen` against every lower-rated, different
/// answer, with `margin` = the score difference. Groups in order of their first item;
/// within one, the best first of equals (the oldest), then the rejected ones from the
/// highest score down (oldest first among equals). Returns the lines and the number of
/// items that are in no pair.
fn preference_pairs(rated: Vec<Feedback>) -> (Vec<String>, usize) {
    /// A prompt on one scale: the question and the score config.
    type GroupKey = (String, Option<String>);
    let mut groups: Vec<(GroupKey, Vec<Feedback>)> = Vec::new();
    for f in rated {
        let key = (f.question.clone(), f.score_config.clone());
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, g)) => g.push(f),
            None => groups.push((key, vec![f])),
        }
    }
    let mut lines = Vec::new();
    let mut unpaired = 0;
    for (_, mut group) in groups {
        let score = |f: &Feedback| f.score.unwrap_or(f64::NEG_INFINITY);
        // Stable: equal scores keep claim (oldest-first) order.
        group.sort_by(|a, b| score(b).total_cmp(&score(a)));
        let Some((best, rest)) = group.split_first() else {
            continue;
        };
        let mut paired = false;
        for other in rest {
            if score(other) < score(best) && other.answer != best.answer {
                paired = true;
                lines.push(
                    serde_json::json!({
                        "prompt": best.question,
                        "chosen": best.answer,
                        "rejected": other.answer,
                        "margin": score(best) - score(other),
                    })
                    .to_string(),
                );
            } else {
                unpaired += 1;
            }
        }
        if !paired {
            unpaired += 1;
        }
    }
    (lines, unpaired)
}

/// Where a feedback item's training reached.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Impact {
    /// The item.
    pub feedback_id: String,
    /// Whether it was trained on.
    pub used_for_training: bool,
    /// The batches that used it (exactly one when used through a batch).
    pub batches: Vec<BatchImpact>,
    /// Adapters trained on those batches.
    pub trained_adapters: Vec<String>,
    /// Adapters derived from those (they inherit the data).
    pub derived_adapters: Vec<String>,
}

/// One batch in an impact report.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct BatchImpact {
    /// The batch id.
    pub batch_id: u64,
    /// Its state, or `external` for a batch id that an older release let mark-used set
    /// without a batch record.
    #[schema(value_type = String)]
    pub state: &'static str,
    /// The adapter trained on it.
    pub trained_adapter_id: Option<String>,
    /// Its version.
    pub trained_adapter_version: Option<String>,
    /// When it was committed.
    pub committed_at: Option<Millis>,
}

/// A review decision.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReviewRequest {
    /// `approved` or `rejected`.
    #[schema(required = true, value_type = String, pattern = "^(approved|rejected)$")]
    pub validation_status: Option<String>,
    /// Why (required).
    #[schema(required = true, value_type = String, pattern = "\\S")]
    pub reason: Option<String>,
}

/// The result of a review.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Reviewed {
    /// The item after review.
    pub feedback: Feedback,
    /// False when the item already had that status (nothing written).
    pub changed: bool,
    /// For a rejected item that training already used: where it went.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub impact: Option<Impact>,
}

/// The hash recorded in a manifest for an item's trained content.
pub fn content_hash(f: &Feedback) -> String {
    let canonical = serde_json::json!([
        f.feedback_type.as_str(),
        f.question,
        f.answer,
        f.correction,
        f.comment
    ]);
    format!("{:016x}", stable_hash(canonical.to_string().as_bytes()))
}

fn claimable(f: &crate::graph::FeedbackNode<'_>, now: Millis) -> bool {
    f.status == ValidationStatus::Approved && !f.used_for_training && !f.leased_at(now)
}

/// Adapter rows of `root` and, if asked, every descendant.
pub(crate) fn adapter_family(g: &OrgGraph, root: u32, descendants: bool) -> Vec<u32> {
    let mut out = vec![root];
    if descendants {
        let mut seen: HashSet<u32> = HashSet::from([root]);
        let mut i = 0;
        while i < out.len() {
            let row = out[i];
            for c in g.children(row) {
                if seen.insert(c) {
                    out.push(c);
                }
            }
            i += 1;
        }
    }
    out
}

/// Carries a service-level refusal through a store write (whose closure speaks
/// `StoreError`); the `From<StoreError>` mapping turns it back.
fn service_to_store(e: ServiceError) -> crate::store::StoreError {
    match e {
        ServiceError::Conflict(m) => crate::store::StoreError::Conflict(m),
        other => crate::store::StoreError::Backend(other.to_string()),
    }
}

impl Service {
    /// What a commit of `batch` must do before writing: `Some` (return it as it is) when
    /// it is committed already, a conflict when it was aborted, `None` to go on.
    fn commit_verdict(batch: &Batch, id: u64) -> Result<Option<Batch>, ServiceError> {
        match batch.state {
            BatchState::Committed => Ok(Some(batch.clone())),
            BatchState::Aborted => Err(ServiceError::Conflict(format!(
                "training batch {id} was aborted; claim a new batch"
            ))),
            BatchState::Leased => Ok(None),
        }
    }

    fn claim_lock(&self, org: &str) -> Arc<parking_lot::Mutex<()>> {
        self.claim_locks
            .lock()
            .entry(org.to_owned())
            .or_default()
            .clone()
    }

    fn batch_or_404(&self, org: &str, id: u64) -> Result<Batch, ServiceError> {
        self.store
            .get_batch(org, id)?
            .ok_or_else(|| ServiceError::NotFound {
                kind: "training batch",
                id: id.to_string(),
            })
    }

    /// Claims up to `limit` approved, unused, unleased items (oldest first) into a new
    /// batch. Returns `None` when nothing is claimable.
    pub fn claim(&self, actor: &Actor, req: ClaimRequest) -> Result<Option<Claimed>, ServiceError> {
        super::check_org(&actor.org)?;
        let limit = req.limit.unwrap_or(100);
        if !(1..=MAX_CLAIM).contains(&limit) {
            return Err(ServiceError::BadRequest(format!(
                "limit must be between 1 and {MAX_CLAIM}, got {limit}"
            )));
        }
        let lease_secs = req.lease_seconds.unwrap_or(DEFAULT_LEASE_SECS);
        if !(1..=MAX_LEASE_SECS).contains(&lease_secs) {
            return Err(ServiceError::BadRequest(format!(
                "lease_seconds must be between 1 and {MAX_LEASE_SECS}, got {lease_secs}"
            )));
        }
        if req.include_descendants && req.adapter_id.is_none() {
            return Err(ServiceError::BadRequest(
                "include_descendants needs adapter_id".into(),
            ));
        }
        let lock = self.claim_lock(&actor.org);
        let _claiming = lock.lock();
        let now = now_millis();
        let ids: Vec<String> = match self.graph.org(&actor.org) {
            None => match &req.adapter_id {
                // An adapter the org does not have is a 404, with or without other data.
                Some(a) => {
                    return Err(ServiceError::NotFound {
                        kind: "adapter",
                        id: a.clone(),
                    });
                }
                None => Vec::new(),
            },
            Some(g) => self.select_claimable(&g, &req, limit, now)?,
        };
        if ids.is_empty() {
            return Ok(None);
        }
        let mut claimed: Option<Batch> = None;
        // Counted until the graph has been offered the change (see `InFlight`).
        let _in_flight = self.in_flight.enter();
        let changes = self.store.write(actor, &mut |tx| {
            claimed = None;
            // Candidates another claimer (another replica) holds right now are skipped,
            // not waited for; each is checked again below under its lock.
            let ids = tx.lock_for_claim(&ids)?;
            if ids.is_empty() {
                return Ok(());
            }
            let mut batch = Batch {
                id: tx.next_batch_id()?,
                org_id: actor.org.clone(),
                state: BatchState::Leased,
                version: 1,
                created_at: now,
                created_by: actor.user.clone(),
                lease_expires_at: now + lease_secs * 1000,
                adapter_id: req.adapter_id.clone(),
                model: req.model.clone(),
                include_descendants: req.include_descendants,
                items: ids.clone(),
                manifest: Vec::new(),
                trained_adapter_id: None,
                trained_adapter_version: None,
                finished_at: None,
            };
            // The batch first: every lease then points at a stored batch.
            let creation = creation_changes(&batch, &["id", "org_id", "version", "items"]);
            tx.put_batch(&batch, ChangeAction::Lease, creation)?;
            let lease = Lease {
                batch_id: batch.id,
                expires_at: batch.lease_expires_at,
            };
            let mut leased = Vec::with_capacity(batch.items.len());
            for id in &batch.items {
                let updated = tx.update_feedback(id, now, &mut |cur| {
                    let f = &cur.feedback;
                    let free = cur.lease.is_none_or(|l| l.expires_at <= now);
                    if f.validation_status != ValidationStatus::Approved
                        || f.used_for_training
                        || !free
                    {
                        return Ok(None);
                    }
                    let mut next = cur.clone();
                    let old = cur.lease.map(|l| l.batch_id);
                    next.lease = Some(lease);
                    Ok(Some((
                        next,
                        ChangeAction::Lease,
                        vec![field_change("lease", old.as_ref(), Some(&batch.id))],
                    )))
                })?;
                if let Some(r) = updated {
                    leased.push(r.feedback.id);
                }
            }
            if leased.len() != batch.items.len() {
                batch.items = leased;
                batch.version += 1;
                tx.put_batch(
                    &batch,
                    ChangeAction::Lease,
                    vec![field_change("items", None, Some(&batch.items.len()))],
                )?;
            }
            claimed = Some(batch);
            Ok(())
        })?;
        let Some(batch) = claimed else {
            // Every candidate was held by another claimer: nothing was written.
            return Ok(None);
        };
        self.graph.apply(&actor.org, &changes).wait();
        let feedback = changes.feedback.into_iter().map(|r| r.feedback).collect();
        Ok(Some(Claimed {
            batch: BatchView::new(batch, now),
            feedback,
        }))
    }

    fn select_claimable(
        &self,
        g: &OrgGraph,
        req: &ClaimRequest,
        limit: usize,
        now: Millis,
    ) -> Result<Vec<String>, ServiceError> {
        let model = match &req.model {
            None => None,
            Some(m) => match g.strings().get(m) {
                Some(sym) => Some(sym),
                None => return Ok(Vec::new()),
            },
        };
        let ok = |f: &crate::graph::FeedbackNode<'_>| {
            claimable(f, now) && model.is_none_or(|m| f.model_version == Some(m))
        };
        match &req.adapter_id {
            Some(a) => {
                let Some(root) = g.adapter_row(a) else {
                    return Err(ServiceError::NotFound {
                        kind: "adapter",
                        id: a.clone(),
                    });
                };
                let mut rows: BTreeSet<(&str, u32)> = BTreeSet::new();
                for ad in adapter_family(g, root, req.include_descendants) {
                    for r in g.adapter_feedback(ad) {
                        if let Some(f) = g.feedback().get(r)
                            && ok(&f)
                        {
                            rows.insert((f.id, r));
                        }
                    }
                }
                Ok(rows
                    .into_iter()
                    .take(limit)
                    .map(|(id, _)| id.to_owned())
                    .collect())
            }
            None => Ok(g
                .feedback_newest_first(None)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .filter_map(|r| g.feedback().get(r))
                .filter(|f| ok(f))
                .take(limit)
                .map(|f| f.id.to_string())
                .collect()),
        }
    }

    /// The org's batches, newest first, optionally only those that trained `adapter` or are
    /// in `state` (`leased`, `expired`, `committed`, `aborted`).
    pub fn batches(
        &self,
        org: &str,
        trained_adapter: Option<&str>,
        state: Option<&str>,
    ) -> Result<Vec<BatchView>, ServiceError> {
        if let Some(st) = state
            && !["leased", "expired", "committed", "aborted"].contains(&st)
        {
            return Err(ServiceError::BadRequest(format!(
                "unknown batch state '{st}' (leased, expired, committed, aborted)"
            )));
        }
        let now = now_millis();
        let mut out: Vec<BatchView> = self
            .store
            .batches_of(org)?
            .into_iter()
            .filter(|b| trained_adapter.is_none_or(|a| b.trained_adapter_id.as_deref() == Some(a)))
            .map(|b| BatchView::new(b, now))
            .filter(|v| state.is_none_or(|s| v.state == s))
            .collect();
        out.reverse();
        Ok(out)
    }

    /// A batch of the org, with its derived state.
    pub fn batch(&self, org: &str, id: u64) -> Result<BatchView, ServiceError> {
        let batch = self.batch_or_404(org, id)?;
        Ok(BatchView::new(batch, now_millis()))
    }

    /// Commits a leased batch: every item still leased to it and still approved is marked
    /// used with the batch id, and the manifest (ids and content hashes) is frozen. If the
    /// lease expired and another batch took an item, nothing is written (409). Committing
    /// a committed batch again returns it unchanged.
    pub fn commit(
        &self,
        actor: &Actor,
        id: u64,
        req: CommitRequest,
    ) -> Result<BatchView, ServiceError> {
        let lock = self.claim_lock(&actor.org);
        let _claiming = lock.lock();
        let now = now_millis();
        // Checked here first (a clear 404/409 before the trained adapter is created),
        // then again inside the write on the locked batch, which decides.
        let first = self.batch_or_404(&actor.org, id)?;
        if let Some(done) = Self::commit_verdict(&first, id)? {
            return Ok(BatchView::new(done, now));
        }
        // The trained adapter is created if the org does not have it yet; one that exists
        // (described by an admin, say) is left as it is.
        let trained = match &req.trained_adapter_id {
            Some(a) if self.store.get_adapter(&actor.org, a)?.is_none() => Some(self.new_adapter(
                actor,
                super::NewAdapter {
                    id: Some(a.clone()),
                    version: req.trained_adapter_version.clone(),
                    ..Default::default()
                },
            )?),
            _ => None,
        };
        let mut outcome: Option<Batch> = None;
        // Counted until the graph has been offered the change (see `InFlight`).
        let _in_flight = self.in_flight.enter();
        let changes = self.store.write(actor, &mut |tx| {
            outcome = None;
            // The batch and its items are read under their locks, inside the write: a
            // commit or abort on another replica cannot slip in between.
            let Some(mut batch) = tx.get_batch_for_update(id)? else {
                return Err(crate::store::StoreError::NotFound {
                    kind: "training batch",
                    id: id.to_string(),
                });
            };
            if let Some(done) = Self::commit_verdict(&batch, id).map_err(service_to_store)? {
                outcome = Some(done);
                return Ok(());
            }
            // Check every item before writing anything.
            let mut records: Vec<FeedbackRecord> = Vec::with_capacity(batch.items.len());
            for fid in &batch.items {
                let Some(r) = tx.get_record(fid)? else {
                    continue;
                };
                let ours = r.lease.is_some_and(|l| l.batch_id == id);
                let done = r.feedback.used_for_training && r.feedback.training_batch_id == id;
                if !ours && !done {
                    return Err(crate::store::StoreError::Conflict(format!(
                        "the lease of training batch {id} expired and item {fid} was taken by \
                         another batch; nothing was committed, claim a new batch"
                    )));
                }
                records.push(r);
            }
            batch.state = BatchState::Committed;
            batch.trained_adapter_id = req.trained_adapter_id.clone();
            batch.trained_adapter_version = req.trained_adapter_version.clone();
            batch.finished_at = Some(now);
            batch.version += 1;
            if let Some(a) = &trained {
                crate::store::create_adapter_in(tx, a)?;
            }
            let mut manifest = Vec::with_capacity(records.len());
            for r in &records {
                let fid = &r.feedback.id;
                let approved = r.feedback.validation_status == ValidationStatus::Approved;
                let updated = tx.update_feedback(fid, now, &mut |cur| {
                    let ours = cur.lease.is_some_and(|l| l.batch_id == id);
                    if !ours {
                        return Ok(None);
                    }
                    let mut next = cur.clone();
                    next.lease = None;
                    if cur.feedback.validation_status != ValidationStatus::Approved {
                        // Reviewed away while leased: released, not trained.
                        return Ok(Some((
                            next,
                            ChangeAction::Abort,
                            vec![field_change("lease", Some(&id), None)],
                        )));
                    }
                    next.feedback.used_for_training = true;
                    next.feedback.training_batch_id = id;
                    Ok(Some((
                        next,
                        ChangeAction::Commit,
                        vec![
                            field_change("used_for_training", Some(&false), Some(&true)),
                            field_change("training_batch_id", Some(&0u64), Some(&id)),
                            field_change("lease", Some(&id), None),
                        ],
                    )))
                })?;
                let final_state = match &updated {
                    Some(u) => &u.feedback,
                    None => &r.feedback,
                };
                if approved && final_state.used_for_training && final_state.training_batch_id == id
                {
                    manifest.push(ManifestEntry {
                        feedback_id: fid.clone(),
                        content_hash: content_hash(final_state),
                    });
                }
            }
            batch.manifest = manifest;
            let ch = vec![
                field_change("state", Some("leased"), Some("committed")),
                field_change("manifest", None, Some(&batch.manifest.len())),
                field_change::<String>(
                    "trained_adapter_id",
                    None,
                    batch.trained_adapter_id.as_ref(),
                ),
            ];
            tx.put_batch(&batch, ChangeAction::Commit, ch)?;
            outcome = Some(batch);
            Ok(())
        })?;
        let batch =
            outcome.ok_or_else(|| ServiceError::Internal("a commit decided nothing".into()))?;
        self.graph.apply(&actor.org, &changes).wait();
        Ok(BatchView::new(batch, now))
    }

    /// Aborts a leased batch: its items go back to the pool.
    pub fn abort(&self, actor: &Actor, id: u64) -> Result<BatchView, ServiceError> {
        let lock = self.claim_lock(&actor.org);
        let _claiming = lock.lock();
        let now = now_millis();
        let mut outcome: Option<Batch> = None;
        // Counted until the graph has been offered the change (see `InFlight`).
        let _in_flight = self.in_flight.enter();
        let changes = self.store.write(actor, &mut |tx| {
            outcome = None;
            // Read under the batch's lock, inside the write (see commit).
            let Some(mut batch) = tx.get_batch_for_update(id)? else {
                return Err(crate::store::StoreError::NotFound {
                    kind: "training batch",
                    id: id.to_string(),
                });
            };
            match batch.state {
                BatchState::Aborted => {
                    outcome = Some(batch);
                    return Ok(());
                }
                BatchState::Committed => {
                    return Err(crate::store::StoreError::Conflict(format!(
                        "training batch {id} is committed; it cannot be aborted"
                    )));
                }
                BatchState::Leased => {}
            }
            batch.state = BatchState::Aborted;
            batch.finished_at = Some(now);
            batch.version += 1;
            for fid in &batch.items {
                let updated = tx.update_feedback(fid, now, &mut |cur| {
                    if cur.lease.is_none_or(|l| l.batch_id != id) {
                        return Ok(None);
                    }
                    let mut next = cur.clone();
                    next.lease = None;
                    Ok(Some((
                        next,
                        ChangeAction::Abort,
                        vec![field_change("lease", Some(&id), None)],
                    )))
                });
                match updated {
                    Ok(_) | Err(crate::store::StoreError::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            tx.put_batch(
                &batch,
                ChangeAction::Abort,
                vec![field_change("state", Some("leased"), Some("aborted"))],
            )?;
            outcome = Some(batch);
            Ok(())
        })?;
        let batch =
            outcome.ok_or_else(|| ServiceError::Internal("an abort decided nothing".into()))?;
        self.graph.apply(&actor.org, &changes).wait();
        Ok(BatchView::new(batch, now))
    }

    /// Marks items used for training directly, for pipelines that select items on their
    /// own: the marked items become a new committed batch, with an id from the org's batch
    /// counter (the same one claims use, so an id never names two batches) and a manifest.
    /// Reports each id: marked, already marked by this call (a repeated id), or a
    /// conflict. Returns the new batch's id, or `None` when nothing was marked (then no
    /// batch is stored; the id taken from the counter stays unused).
    pub fn mark_used(
        &self,
        actor: &Actor,
        ids: Vec<String>,
    ) -> Result<(Option<u64>, Vec<MarkResult>), ServiceError> {
        super::check_org(&actor.org)?;
        if ids.is_empty() || ids.len() > MAX_CLAIM {
            return Err(ServiceError::BadRequest(format!(
                "ids must list 1 to {MAX_CLAIM} feedback ids"
            )));
        }
        let lock = self.claim_lock(&actor.org);
        let _claiming = lock.lock();
        let now = now_millis();
        let mut out = Vec::with_capacity(ids.len());
        let mut marked: Option<u64> = None;
        // Counted until the graph has been offered the change (see `InFlight`).
        let _in_flight = self.in_flight.enter();
        let changes = self.store.write(actor, &mut |tx| {
            out.clear();
            marked = None;
            let batch_id = tx.next_batch_id()?;
            let mut manifest = Vec::new();
            for id in &ids {
                let mut verdict: (u16, &'static str, Option<u64>) = (200, "marked", None);
                let updated = tx.update_feedback(id, now, &mut |cur| {
                    let f = &cur.feedback;
                    if f.used_for_training {
                        verdict = if f.training_batch_id == batch_id {
                            (200, "already_marked", None)
                        } else {
                            (409, "used_by_other_batch", Some(f.training_batch_id))
                        };
                        return Ok(None);
                    }
                    if let Some(l) = cur.lease
                        && l.expires_at > now
                    {
                        verdict = (409, "leased_to_other_batch", Some(l.batch_id));
                        return Ok(None);
                    }
                    let mut next = cur.clone();
                    next.lease = None;
                    next.feedback.used_for_training = true;
                    next.feedback.training_batch_id = batch_id;
                    Ok(Some((
                        next,
                        ChangeAction::MarkUsed,
                        vec![
                            field_change("used_for_training", Some(&false), Some(&true)),
                            field_change("training_batch_id", Some(&0u64), Some(&batch_id)),
                        ],
                    )))
                });
                match updated {
                    Ok(Some(u)) => manifest.push(ManifestEntry {
                        feedback_id: u.feedback.id.clone(),
                        content_hash: content_hash(&u.feedback),
                    }),
                    Ok(None) => {}
                    Err(crate::store::StoreError::NotFound { .. }) => {
                        verdict = (404, "not_found", None)
                    }
                    Err(e) => return Err(e),
                }
                out.push(MarkResult {
                    id: id.clone(),
                    status: verdict.0,
                    result: verdict.1,
                    batch_id: verdict.2,
                });
            }
            if manifest.is_empty() {
                // No batch is stored; the id taken from the counter stays unused.
                return Ok(());
            }
            // The batch record last, as in a commit: it is the batch's commit point.
            let batch = Batch {
                id: batch_id,
                org_id: actor.org.clone(),
                state: BatchState::Committed,
                version: 1,
                created_at: now,
                created_by: actor.user.clone(),
                lease_expires_at: now,
                adapter_id: None,
                model: None,
                include_descendants: false,
                items: manifest.iter().map(|m| m.feedback_id.clone()).collect(),
                manifest,
                trained_adapter_id: None,
                trained_adapter_version: None,
                finished_at: Some(now),
            };
            let creation = creation_changes(&batch, &["id", "org_id", "version", "items"]);
            tx.put_batch(&batch, ChangeAction::MarkUsed, creation)?;
            marked = Some(batch_id);
            Ok(())
        })?;
        self.graph.apply(&actor.org, &changes).wait();
        Ok((marked, out))
    }

    /// Renders a batch's items for a trainer. Committed batches export their manifest;
    /// leased ones their current items. Only approved items are ever exported.
    pub fn export(&self, org: &str, id: u64, format: ExportFormat) -> Result<Export, ServiceError> {
        let batch = self.batch_or_404(org, id)?;
        let ids: Vec<String> = match batch.state {
            BatchState::Committed => batch
                .manifest
                .iter()
                .map(|m| m.feedback_id.clone())
                .collect(),
            BatchState::Leased => batch.items.clone(),
            BatchState::Aborted => {
                return Err(ServiceError::Conflict(format!(
                    "training batch {id} was aborted; there is nothing to export"
                )));
            }
        };
        let mut e = Export {
            lines: Vec::with_capacity(ids.len()),
            items: 0,
            skipped: 0,
            desirable: 0,
            undesirable: 0,
            retracted: 0,
        };
        let keys: Vec<&str> = ids.iter().map(String::as_str).collect();
        let mut configs: HashMap<String, Option<crate::model::ScoreConfig>> = HashMap::new();
        let mut rated: Vec<Feedback> = Vec::new();
        for f in self.store.get_many(org, &keys)? {
            let Some(f) = f else {
                continue;
            };
            e.items += 1;
            // An erased item is a tombstone: nothing of it is exported.
            if f.is_erased() {
                e.skipped += 1;
                continue;
            }
            if f.validation_status != ValidationStatus::Approved {
                e.retracted += 1;
                e.skipped += 1;
                continue;
            }
            // A label says what the input is, not how good the answer was: only the
            // labels export takes it. The pair and label formats take their own kinds.
            match (format, f.kind) {
                (ExportFormat::Labels, FeedbackKind::Label) => {
                    let line = serde_json::json!({"prompt": f.question, "label": f.label});
                    e.lines.push(line.to_string());
                    continue;
                }
                (ExportFormat::Preference, FeedbackKind::Rating) if f.score.is_some() => {
                    rated.push(f);
                    continue;
                }
                (ExportFormat::Labels | ExportFormat::Preference, _) | (_, FeedbackKind::Label) => {
                    e.skipped += 1;
                    continue;
                }
                _ => {}
            }
            // A rating's polarity for KTO: its config's threshold when it has one (the
            // config as it is now), else the type it was stored with.
            let polarity = match (&f.score_config, f.score) {
                (Some(name), Some(score)) if f.kind == FeedbackKind::Rating => {
                    if !configs.contains_key(name) {
                        let c = self.store.get_score_config(org, name)?;
                        configs.insert(name.clone(), c);
                    }
                    configs
                        .get(name)
                        .and_then(|c| c.as_ref())
                        .and_then(|c| c.polarity(score))
                        .unwrap_or(f.feedback_type)
                }
                _ => f.feedback_type,
            };
            let user = |q: &str| serde_json::json!({"role": "user", "content": q});
            let assistant = |a: &str| serde_json::json!({"role": "assistant", "content": a});
            let line = match (format, f.feedback_type, f.correction.as_deref()) {
                (ExportFormat::Sft, FeedbackType::Positive, _) => Some(serde_json::json!({
                    "messages": [user(&f.question), assistant(&f.answer)]
                })),
                (ExportFormat::Sft, FeedbackType::Negative, Some(c)) => Some(serde_json::json!({
                    "messages": [user(&f.question), assistant(c)]
                })),
                (ExportFormat::Dpo, FeedbackType::Negative, Some(c)) => Some(serde_json::json!({
                    "prompt": f.question, "chosen": c, "rejected": f.answer
                })),
                (ExportFormat::OpenAiDpo, FeedbackType::Negative, Some(c)) => {
                    Some(serde_json::json!({
                        "input": {"messages": [user(&f.question)]},
                        "preferred_output": [assistant(c)],
                        "non_preferred_output": [assistant(&f.answer)]
                    }))
                }
                (ExportFormat::Kto, _, _) => {
                    let good = polarity == FeedbackType::Positive;
                    if good {
                        e.desirable += 1;
                    } else {
                        e.undesirable += 1;
                    }
                    Some(serde_json::json!({
                        "prompt": f.question, "completion": f.answer, "label": good
                    }))
                }
                _ => None,
            };
            match line {
                Some(l) => e.lines.push(l.to_string()),
                None => e.skipped += 1,
            }
        }
        if format == ExportFormat::Preference {
            let (lines, unpaired) = preference_pairs(rated);
            e.skipped += unpaired;
            e.lines.extend(lines);
        }
        Ok(e)
    }

    /// Where an item's training went: its batch, the adapter trained on it, and that
    /// adapter's descendants.
    pub fn impact(&self, org: &str, id: &str) -> Result<Impact, ServiceError> {
        let f = self.get(org, id)?;
        let mut impact = Impact {
            feedback_id: f.id.clone(),
            used_for_training: f.used_for_training,
            batches: Vec::new(),
            trained_adapters: Vec::new(),
            derived_adapters: Vec::new(),
        };
        if !f.used_for_training || f.training_batch_id == 0 {
            return Ok(impact);
        }
        match self.store.get_batch(org, f.training_batch_id)? {
            Some(b) => {
                let view = BatchView::new(b, now_millis());
                if let Some(a) = &view.batch.trained_adapter_id {
                    impact.trained_adapters.push(a.clone());
                }
                impact.batches.push(BatchImpact {
                    batch_id: view.batch.id,
                    state: view.state,
                    trained_adapter_id: view.batch.trained_adapter_id,
                    trained_adapter_version: view.batch.trained_adapter_version,
                    committed_at: view.batch.finished_at,
                });
            }
            None => impact.batches.push(BatchImpact {
                batch_id: f.training_batch_id,
                state: "external",
                trained_adapter_id: None,
                trained_adapter_version: None,
                committed_at: None,
            }),
        }
        if let Some(g) = self.graph.org(org) {
            let mut derived = BTreeSet::new();
            for a in &impact.trained_adapters {
                if let Some(row) = g.adapter_row(a) {
                    for d in adapter_family(&g, row, true).into_iter().skip(1) {
                        derived.insert(g.strings().resolve(g.adapters()[d as usize].id).to_owned());
                    }
                }
            }
            impact.derived_adapters = derived.into_iter().collect();
        }
        Ok(impact)
    }

    /// Moves an item to approved or rejected with a reason (admin review). Rejecting an
    /// item that training already used reports the retraction impact.
    pub fn review(
        &self,
        actor: &Actor,
        id: &str,
        req: ReviewRequest,
    ) -> Result<Reviewed, ServiceError> {
        let status: ValidationStatus = match req.validation_status.as_deref() {
            None => {
                return Err(ServiceError::BadRequest(
                    "missing required field 'validation_status' (approved or rejected)".into(),
                ));
            }
            Some(s) => s.parse().map_err(|e: crate::model::UnknownVariant| {
                ServiceError::BadRequest(e.to_string())
            })?,
        };
        if !matches!(
            status,
            ValidationStatus::Approved | ValidationStatus::Rejected
        ) {
            return Err(ServiceError::BadRequest(format!(
                "a review moves an item to approved or rejected, not {status}"
            )));
        }
        let reason = req
            .reason
            .map(|r| r.trim().to_owned())
            .filter(|r| !r.is_empty())
            .ok_or_else(|| ServiceError::BadRequest("missing required field 'reason'".into()))?;
        if reason.chars().count() > 2000 {
            return Err(ServiceError::BadRequest(
                "'reason' is longer than 2000 characters".into(),
            ));
        }
        let now = now_millis();
        let mut updated = None;
        // Counted until the graph has been offered the change (see `InFlight`).
        let _in_flight = self.in_flight.enter();
        let changes = self.store.write(actor, &mut |tx| {
            updated = tx.update_feedback(id, now, &mut |cur| {
                let old = cur.feedback.validation_status;
                if old == status {
                    return Ok(None);
                }
                let mut next = cur.clone();
                next.feedback.validation_status = status;
                next.feedback.validation_reasons.push(ValidationReason {
                    rule: "manual_review".into(),
                    status,
                    message: format!("{} by {}: {reason}", status, actor.user),
                });
                Ok(Some((
                    next,
                    ChangeAction::Review,
                    vec![
                        field_change(
                            "validation_status",
                            Some(old.as_str()),
                            Some(status.as_str()),
                        ),
                        field_change::<str>("reason", None, Some(&reason)),
                    ],
                )))
            })?;
            Ok(())
        })?;
        let changed = updated.is_some();
        let feedback = match updated {
            Some(r) => {
                self.graph.apply(&actor.org, &changes).wait();
                r.feedback
            }
            None => self.get(&actor.org, id)?,
        };
        let impact = if status == ValidationStatus::Rejected && feedback.used_for_training {
            Some(self.impact(&actor.org, id)?)
        } else {
            None
        };
        Ok(Reviewed {
            feedback,
            changed,
            impact,
        })
    }
}
