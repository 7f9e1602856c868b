//! The storage interface: what the service may ask of a backend, in the interface's own
//! terms, and the records every backend keeps. No backend's types appear here.
//!
//! - [`Backend`] is the trait the service holds (`Arc<dyn Backend>`). Each write is one
//!   call that returns only once it is durable: [`Backend::submit`] (the hot path, a
//!   future, so waiting for the disk holds no thread) and [`Backend::write`], which runs a
//!   unit of work over a [`WriteTx`] (review, link, adapter create, claim, commit, abort,
//!   mark-used, import). Reads return durable state only: nothing a client reads can
//!   be lost by a crash.
//! - [`rules`] holds the domain rules every backend applies inside its writes, written
//!   once: history rendering, idempotency semantics, adapter merging, the lineage check.
//! - [`sled_store`] is the embedded backend (the default): sled trees, group commit.
//!
//! Every write reports what it stored as a [`ChangeSet`], which the graph index applies.

pub mod backup;
pub mod codec;
pub mod compact;
pub mod durability;
pub mod erasure;
pub mod keys;
pub mod outbox;
pub mod pg;
pub mod rules;
pub mod sled_store;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod view;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::model::{
    Actor, Adapter, ChangeAction, Feedback, FeedbackLink, FieldChange, HistoryVersion, LinkSource,
    Millis, ScoreConfig,
};
use codec::CodecError;
pub use durability::{Durability, SyncError, Syncer};
pub use erasure::{ErasureRecord, ErasureScope, ErasureState};
use rules::IdempotencyRecord;
pub use sled_store::{CODEC_TREES, SCHEMA_VERSION, SledStore, decode_stored_value};

/// What [`Backend::submit_many`] did: one outcome per item it got to, in order, and the
/// backend failure that stopped it early, if one did.
#[derive(Debug)]
pub struct BatchWritten {
    /// Each item's outcome, in the order given (shorter than the batch if it stopped).
    pub outcomes: Vec<Result<Inserted, StoreError>>,
    /// The failure that ended the batch before its last item.
    pub stopped: Option<StoreError>,
}

/// A boxed future a backend returns for an asynchronous write.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A change to one feedback record decided by the caller of [`WriteTx::update_feedback`]:
/// the new record, and the action and field changes its history entry records.
pub type RecordChange = (FeedbackRecord, ChangeAction, Vec<FieldChange>);

/// The closure [`WriteTx::update_feedback`] runs on the current record: `Some` change, or
/// `None` to leave it as it is.
pub type ChangeFn<'f> =
    &'f mut dyn FnMut(&FeedbackRecord) -> Result<Option<RecordChange>, StoreError>;

/// A storage backend: the source of truth the graph index is built from.
///
/// Implementations promise: a write call returns `Ok` only once what it wrote is durable
/// (a crash or power loss keeps it); reads return durable state only; a record's history
/// gains exactly one version per change, written with the change; ids are unique per org.
pub trait Backend: Send + Sync + std::fmt::Debug {
    /// A short name for logs and errors (`sled`).
    fn name(&self) -> &'static str;

    /// Stores a new feedback item with its history, auto-creating the adapter it names
    /// and its FEEDBACK_FOR edge, at most once per idempotency key (see
    /// [`rules::judge_key`]). The future resolves once the write is durable. It owns what
    /// it needs, so a caller that stops waiting can hand it to a task to finish.
    fn submit(
        self: Arc<Self>,
        actor: Actor,
        fb: Feedback,
        idempotency: Option<IdempotencyKey>,
    ) -> BoxFuture<'static, Result<Inserted, StoreError>>;

    /// Many submits (a batch) made durable together: each item as [`Backend::submit`]
    /// stores it, with its own outcome (an item's idempotency conflict is its own `Err`),
    /// and one durable commit for all. A failure of the backend itself stops the batch
    /// ([`BatchWritten::stopped`]); the items written before it are made durable all the
    /// same. `Err` when making them durable failed (then nothing may be acknowledged).
    fn submit_many(
        self: Arc<Self>,
        actor: Actor,
        items: Vec<(Feedback, Option<IdempotencyKey>)>,
    ) -> BoxFuture<'static, Result<BatchWritten, StoreError>>;

    /// [`Backend::submit`] for a blocking caller (tools, tests): returns once durable.
    /// Never call it on an async runtime's thread.
    fn submit_blocking(
        &self,
        actor: &Actor,
        fb: &Feedback,
        idempotency: Option<&IdempotencyKey>,
    ) -> Result<Inserted, StoreError>;

    /// Adds the FEEDBACK_FOR edge `link` (made by hand) as [`link_in`] does: idempotent
    /// (an existing edge is left and reported, with `created: false`), its adapter created
    /// first if unknown, [`StoreError::NotFound`] for an unknown feedback item. The future
    /// resolves once the edge (or, for an existing one, what was read of it) is durable,
    /// so a caller that answers then never acknowledges a write a crash can lose. It owns
    /// what it needs, so a caller that stops waiting can hand it to a task to finish.
    ///
    /// PostgreSQL runs [`link_by_write`] (one transaction) on a blocking thread; sled
    /// writes in place and awaits the group commit it shares with [`Backend::submit`].
    fn link(
        self: Arc<Self>,
        actor: Actor,
        link: FeedbackLink,
    ) -> BoxFuture<'static, Result<Linked, StoreError>>;

    /// [`Backend::link`] for a blocking caller (tools, tests): returns once durable.
    /// Never call it on an async runtime's thread.
    fn link_blocking(&self, actor: &Actor, link: &FeedbackLink) -> Result<Linked, StoreError> {
        link_by_write(self, actor, link)
    }

    /// Runs `work` as one write and returns what it stored, once durable. `work` may be
    /// run more than once (a backend retries a transaction that lost a race), so it must
    /// start from scratch each time. If it fails, the backend keeps no partial state that
    /// breaks an invariant: a transactional backend rolls back, sled relies on each
    /// record being its own commit point.
    fn write(
        &self,
        actor: &Actor,
        work: &mut dyn FnMut(&mut dyn WriteTx) -> Result<(), StoreError>,
    ) -> Result<ChangeSet, StoreError>;

    /// Writes records that were checked beforehand (a dump being loaded into an org):
    /// adapters first, then feedback records with their edges, each with an `import`
    /// history entry. Durable on return. If it fails, it takes back what it wrote
    /// (`Err((error, partial))`, `partial` when even that failed). `progress` gets the
    /// number of records written so far.
    fn load(
        &self,
        actor: &Actor,
        adapters: &[Adapter],
        records: &[FeedbackRecord],
        progress: &mut dyn FnMut(u64),
    ) -> Result<(), (StoreError, bool)>;

    /// Runs `work` with every read the calling thread makes through this backend seeing
    /// one consistent state of the store (a full backup's many reads). PostgreSQL holds
    /// one `REPEATABLE READ READ ONLY` transaction for it; the default runs `work` as is.
    fn read_snapshot(
        &self,
        work: &mut dyn FnMut() -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        work()
    }

    /// The orgs that have any stored record (feedback, adapter or batch), sorted.
    fn orgs(&self) -> Result<Vec<String>, StoreError>;

    /// Every feedback record of `org` in id order, each with its committed history as
    /// stored (a compact creation entry stays compact), for a full backup.
    fn for_each_record_with_history(
        &self,
        org: &str,
        f: &mut dyn FnMut(FeedbackRecord, Vec<HistoryVersion>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError>;

    /// Every idempotency key `org` still remembers, as `(user, key, record)`, for a full
    /// backup (expired keys included: the restored store expires them on its own).
    fn for_each_idempotency(
        &self,
        org: &str,
        f: &mut dyn FnMut(&str, &str, IdempotencyRecord) -> Result<(), StoreError>,
    ) -> Result<(), StoreError>;

    /// Writes a backup's entities of `org` exactly as given (records, adapters and batches
    /// with their histories, idempotency keys; the org's batch counter moves past every
    /// batch id written) and makes them durable. Writing the same entities again changes
    /// nothing, so a restore that failed part-way can be run again. No rule is checked
    /// here: the caller restores into an org that holds nothing. Score configs, erasure
    /// records and webhook endpoints are skipped: the service writes those through
    /// [`Backend::write`] and the event store.
    fn restore(&self, org: &str, entries: &[backup::BackupEntry]) -> Result<(), StoreError>;

    /// One feedback record (item, edges, lease) of `org`.
    fn get_record(&self, org: &str, id: &str) -> Result<Option<FeedbackRecord>, StoreError>;

    /// Feedback items of `org` by id, in the order asked; `None` for an id not stored.
    fn get_many(&self, org: &str, ids: &[&str]) -> Result<Vec<Option<Feedback>>, StoreError>;

    /// Calls `f` with each feedback item of `org` named in `ids`, in the order asked
    /// (`None` for an id not stored), as a [`view::FeedbackView`]: read in place where the
    /// backend can, for pages that only render the items. Returns once everything read is
    /// durable, as the other reads. The default reads the items with [`Backend::get_many`].
    fn for_each_feedback_view(
        &self,
        org: &str,
        ids: &[&str],
        f: &mut dyn FnMut(Option<&view::FeedbackView<'_>>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        for fb in self.get_many(org, ids)? {
            match fb {
                Some(fb) => f(Some(&view::FeedbackView::from(&fb)))?,
                None => f(None)?,
            }
        }
        Ok(())
    }

    /// One adapter of `org`.
    fn get_adapter(&self, org: &str, id: &str) -> Result<Option<Adapter>, StoreError>;

    /// Every adapter of `org`.
    fn adapters_of(&self, org: &str) -> Result<Vec<Adapter>, StoreError>;

    /// Calls `f` with every feedback record of `org`, in id order.
    fn for_each_record_of(
        &self,
        org: &str,
        f: &mut dyn FnMut(FeedbackRecord) -> Result<(), StoreError>,
    ) -> Result<(), StoreError>;

    /// Every committed version of a feedback item's history, oldest first (empty if the
    /// item does not exist).
    fn feedback_history(&self, org: &str, id: &str) -> Result<Vec<HistoryVersion>, StoreError>;

    /// Every committed version of an adapter's history, oldest first.
    fn adapter_history(&self, org: &str, id: &str) -> Result<Vec<HistoryVersion>, StoreError>;

    /// Every committed version of a batch's history, oldest first.
    fn batch_history(&self, org: &str, id: u64) -> Result<Vec<HistoryVersion>, StoreError>;

    /// One training batch of `org`.
    fn get_batch(&self, org: &str, id: u64) -> Result<Option<Batch>, StoreError>;

    /// Every training batch of `org`, by id.
    fn batches_of(&self, org: &str) -> Result<Vec<Batch>, StoreError>;

    /// Up to `limit` batches of `org`, highest id first, with ids below `before` if given.
    fn batches_page(
        &self,
        org: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Batch>, StoreError>;

    /// Calls `f` with the org and the graph-relevant prefix of every feedback record of
    /// every org (start-up builds the graph from these; strings borrow from the backend's
    /// buffers, nothing long is decoded).
    fn for_each_record_head(
        &self,
        f: &mut dyn FnMut(&str, RecordHeadRef<'_>),
    ) -> Result<(), StoreError>;

    /// Calls `f` with every adapter of every org.
    fn for_each_adapter(
        &self,
        f: &mut dyn FnMut(Adapter) -> Result<(), StoreError>,
    ) -> Result<(), StoreError>;

    /// Calls `f` with every feedback record of every org and the org it is filed under
    /// (for consistency checks).
    fn for_each_record(
        &self,
        f: &mut dyn FnMut(&str, FeedbackRecord) -> Result<(), StoreError>,
    ) -> Result<(), StoreError>;

    /// The version numbers of a feedback item's committed history up to `up_to`, oldest
    /// first (for checks).
    fn feedback_history_versions(
        &self,
        org: &str,
        id: &str,
        up_to: u64,
    ) -> Result<Vec<u64>, StoreError>;

    /// One score config of `org`, by name.
    fn get_score_config(&self, org: &str, name: &str) -> Result<Option<ScoreConfig>, StoreError>;

    /// Every score config of `org`, by name.
    fn score_configs_of(&self, org: &str) -> Result<Vec<ScoreConfig>, StoreError>;

    /// Every committed version of a score config's history, oldest first.
    fn score_config_history(
        &self,
        org: &str,
        name: &str,
    ) -> Result<Vec<HistoryVersion>, StoreError>;

    /// One erasure record (job or receipt) of `org`.
    fn get_erasure(&self, org: &str, id: &str) -> Result<Option<ErasureRecord>, StoreError>;

    /// Up to `limit` erasure records of `org`, newest first, with ids below `before` if
    /// given.
    fn erasures_page(
        &self,
        org: &str,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ErasureRecord>, StoreError>;

    /// Every erasure of every org still `running` (a crash stopped it), oldest first.
    fn unfinished_erasures(&self) -> Result<Vec<ErasureRecord>, StoreError>;

    /// Fails when the backend cannot take writes now (for readiness).
    fn check_writable(&self) -> Result<(), StoreError>;

    /// Makes everything written so far durable (at shutdown).
    fn flush(&self) -> Result<(), StoreError>;

    /// Reclaims the space of row versions erasures left behind, where the backend keeps
    /// them (PostgreSQL: a plain `VACUUM` of the tables erasures rewrite). Nothing by
    /// default (sled has its own rewrite, `SledStore::rewrite`).
    fn vacuum_erased(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Adds the backend's instruments to `registry` (see `/metrics`).
    fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry);

    /// The backend as `Any`, so tools and tests can reach a concrete backend's extras.
    fn as_any(&self) -> &dyn std::any::Any;

    /// The change log other processes write to, if several processes can share this
    /// store (PostgreSQL); `None` for an embedded store only this process writes (sled).
    fn change_log(&self) -> Option<&dyn ChangeLog> {
        None
    }
    /// Webhook endpoints, the outbox and the delivery log (see [`outbox`]).
    fn events(&self) -> &dyn outbox::EventStore;
}

/// The operations of one [`Backend::write`]. Each method reads or writes within the
/// write; what it stores is collected into the write's [`ChangeSet`].
pub trait WriteTx {
    /// The actor the write runs for (its org scopes every key).
    fn actor(&self) -> &Actor;

    /// Stores a new feedback item with a caller-given id (an import): version 1 with its
    /// history, auto-creating its adapter and FEEDBACK_FOR edge. An existing id is
    /// [`StoreError::Exists`].
    fn insert_feedback(&mut self, fb: &Feedback, action: ChangeAction) -> Result<(), StoreError>;

    /// Reads one feedback record of the org.
    fn get_record(&mut self, id: &str) -> Result<Option<FeedbackRecord>, StoreError>;

    /// Changes one feedback record: `change` gets the current record and returns the new
    /// one with its history entry's action and field changes, or `None` to leave it. The
    /// version is bumped and `updated_at` moved to `at`; a missing record is
    /// [`StoreError::NotFound`]. Returns the new record if it changed.
    fn update_feedback(
        &mut self,
        id: &str,
        at: Millis,
        change: ChangeFn<'_>,
    ) -> Result<Option<FeedbackRecord>, StoreError>;

    /// Creates the adapter `id` (source auto) unless it exists.
    fn ensure_adapter(&mut self, id: &str, at: Millis) -> Result<(), StoreError>;

    /// Holds the org's adapters still until the write ends, so a lineage read stays
    /// true while the write depends on it. Call before reading adapters for a check.
    fn lock_adapters(&mut self) -> Result<(), StoreError>;

    /// Reads one adapter of the org.
    fn get_adapter(&mut self, id: &str) -> Result<Option<Adapter>, StoreError>;

    /// Writes an adapter (new or changed) with its history entry.
    fn put_adapter(&mut self, adapter: &Adapter, entry: &HistoryVersion) -> Result<(), StoreError>;

    /// Reads one score config of the org. Call [`WriteTx::lock_adapters`] first when the
    /// write depends on it (config writes are serialised by the same lock).
    fn get_score_config(&mut self, name: &str) -> Result<Option<ScoreConfig>, StoreError>;

    /// Writes a score config (new or a new version) with its history entry.
    fn put_score_config(
        &mut self,
        config: &ScoreConfig,
        entry: &HistoryVersion,
    ) -> Result<(), StoreError>;

    /// Takes the org's next training batch id (1, 2, 3...; never reused).
    fn next_batch_id(&mut self) -> Result<u64, StoreError>;

    /// Writes a batch with a history entry; `batch.version` is one more than stored.
    fn put_batch(
        &mut self,
        batch: &Batch,
        action: ChangeAction,
        changes: Vec<FieldChange>,
    ) -> Result<(), StoreError>;

    /// Reads one batch of the org and holds it until the write ends, so a commit, abort
    /// or mark-used decides on the batch as no other process can change it meanwhile.
    fn get_batch_for_update(&mut self, id: u64) -> Result<Option<Batch>, StoreError>;

    /// Of the feedback items `ids` (a claim's candidates), holds those no other write
    /// holds now and returns them in the order given; items another claimer holds are
    /// skipped, not waited for. A backend whose writers of one org never overlap (sled,
    /// under the service's claim lock) returns them all.
    fn lock_for_claim(&mut self, ids: &[String]) -> Result<Vec<String>, StoreError> {
        Ok(ids.to_vec())
    }

    /// Rewrites a feedback item's stored history versions in place (erasure only):
    /// `edit` gets each stored version, oldest first, and returns true if it changed it;
    /// changed versions are written back. Idempotent when `edit` is.
    fn rewrite_feedback_history(
        &mut self,
        id: &str,
        edit: &mut dyn FnMut(&mut HistoryVersion) -> bool,
    ) -> Result<(), StoreError>;

    /// Creates or replaces an erasure record of the org.
    fn put_erasure(&mut self, record: &ErasureRecord) -> Result<(), StoreError>;
}

/// One entry of a backend's change log: a record some transaction wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedChange {
    /// The org of the record.
    pub org: String,
    /// What kind of record (`keys::KIND_FEEDBACK`, `KIND_ADAPTER`, `KIND_BATCH`).
    pub kind: u8,
    /// Its id.
    pub id: String,
    /// Its version after the change (-1: deleted; 0: not versioned).
    pub version: i64,
    /// When the change was logged (ms since epoch, the database's clock).
    pub at_ms: i64,
}

/// A place in a change log: every change before it has been read. Opaque to callers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct LogPosition {
    /// The transaction id part (64-bit, never wraps).
    pub xid: u64,
    /// The sequence number part.
    pub seq: i64,
}

/// Changes read from a log and the position after them.
#[derive(Debug, Clone, Default)]
pub struct LogRead {
    /// The changes, in log order.
    pub changes: Vec<LoggedChange>,
    /// Where the next read starts.
    pub next: LogPosition,
    /// Whether the read stopped at its limit (more may be waiting).
    pub full: bool,
}

/// How far a reader is behind the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LogLag {
    /// Changes logged (by finished transactions) past the position.
    pub changes_behind: u64,
    /// Age in ms of the oldest of them (0 when none).
    pub ms_behind: u64,
}

/// A change log that other processes write to (several replicas over one database): what
/// a follower reads to keep its graph in step. See `store::pg::follow`.
pub trait ChangeLog: Send + Sync {
    /// A position to start following from, taken before the graph is built: every
    /// change before it is visible to any read that starts after this call.
    fn start_position(&self) -> Result<LogPosition, StoreError>;

    /// Up to `limit` changes after `from` whose transactions have all finished.
    fn read_since(&self, from: LogPosition, limit: usize) -> Result<LogRead, StoreError>;

    /// The current feedback records and adapters of the changed records (those still
    /// stored), for the follower to apply.
    fn fetch(&self, changes: &[LoggedChange]) -> Result<ChangeSet, StoreError>;

    /// How far `from` is behind the log.
    fn lag(&self, from: LogPosition) -> Result<LogLag, StoreError>;

    /// Blocks until another writer announces changes or `timeout` passes.
    fn wait(&self, timeout: std::time::Duration);

    /// Records that `replica` has read up to `at` (for pruning).
    fn report_position(&self, replica: &str, at: LogPosition) -> Result<(), StoreError>;

    /// Removes changes every live replica has read, and any older than `retention`.
    /// Returns how many.
    fn prune(&self, retention: std::time::Duration) -> Result<u64, StoreError>;
}

/// Adds the FEEDBACK_FOR edge `link` (idempotent: an existing edge is left, and the result
/// says `false`), creating its adapter first if needed. The one way every backend links.
pub fn link_in(tx: &mut dyn WriteTx, link: &FeedbackLink) -> Result<bool, StoreError> {
    if tx.get_record(&link.feedback_id)?.is_none() {
        return Err(StoreError::NotFound {
            kind: "feedback",
            id: link.feedback_id.clone(),
        });
    }
    tx.ensure_adapter(&link.adapter_id, link.created_at)?;
    let updated = tx.update_feedback(&link.feedback_id, link.created_at, &mut |cur| {
        Ok(rules::add_link(cur, link))
    })?;
    Ok(updated.is_some())
}

/// What [`Backend::link`] did: the edge as stored, whether this call made it, and what
/// the graph index must apply.
#[derive(Debug, Clone, PartialEq)]
pub struct Linked {
    /// The edge (as stored; for an existing edge, as first made).
    pub link: FeedbackLink,
    /// False when the edge existed already.
    pub created: bool,
    /// What the graph index must apply: what the write stored, or for an edge that
    /// existed that edge and its item as read (the request that made it may not have
    /// applied it yet; applying a change twice is harmless).
    pub changes: ChangeSet,
}

/// [`Backend::link`] through [`Backend::write`] and [`link_in`]: one transaction on a
/// transactional backend. Blocks until durable; for blocking callers only.
pub fn link_by_write<B: Backend + ?Sized>(
    store: &B,
    actor: &Actor,
    link: &FeedbackLink,
) -> Result<Linked, StoreError> {
    let mut created = false;
    let mut existing = None;
    let mut changes = store.write(actor, &mut |tx| {
        created = link_in(tx, link)?;
        existing = None;
        if !created {
            // Read in the same transaction: the edge as first made, and its item.
            existing = tx.get_record(&link.feedback_id)?.and_then(|r| {
                let edge = r
                    .links
                    .iter()
                    .find(|l| l.adapter_id == link.adapter_id)
                    .cloned()?;
                Some((edge, r))
            });
        }
        Ok(())
    })?;
    let stored = if created {
        changes
            .links
            .iter()
            .find(|l| l.adapter_id == link.adapter_id)
            .cloned()
    } else if let Some((edge, record)) = existing {
        // The graph may not show the edge yet (the request that made it may still be on
        // its way): applied again, it is there when this answer reaches the client.
        changes.links.push(edge.clone());
        changes.feedback.push(record);
        Some(edge)
    } else {
        None
    };
    let link = stored.ok_or_else(|| StoreError::Conflict("link vanished while reading".into()))?;
    Ok(Linked {
        link,
        created,
        changes,
    })
}

/// Creates or re-creates an adapter under the rules of [`rules::plan_adapter`], with the
/// lineage check when it names a parent. Returns the stored adapter (`None` when nothing
/// changed) and what happened.
pub fn create_adapter_in(
    tx: &mut dyn WriteTx,
    new: &Adapter,
) -> Result<(Option<Adapter>, AdapterOutcome), StoreError> {
    tx.lock_adapters()?;
    if let Some(parent) = &new.derived_from {
        rules::check_lineage(&new.id, parent, &mut |id| tx.get_adapter(id))?;
    }
    let existing = tx.get_adapter(&new.id)?;
    let actor = tx.actor().clone();
    match rules::plan_adapter(&actor, new, existing)? {
        None => Ok((None, AdapterOutcome::Unchanged)),
        Some((record, entry, outcome)) => {
            tx.put_adapter(&record, &entry)?;
            Ok((Some(record), outcome))
        }
    }
}

/// Store settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// What an acknowledged write survives (`fsync` or `flush`).
    pub durability: Durability,
    /// Whether concurrent writers share one flush + fsync.
    pub group_commit: bool,
    /// sled's page cache in MiB (sled's own default is 1 GiB). Default 8: reads by id and
    /// by-adapter pages measured no slower at 4, 8, 16 or 32 at 1M items (the OS page
    /// cache backs sled's), while resident memory grows about 1.6 MiB per MiB of it.
    pub cache_mb: u64,
    /// With group commit, how long (µs) a sync may wait for more writers to join it when
    /// the previous syncs served several at once (see [`durability`]); 0 never waits.
    pub commit_delay_us: u64,
    /// How long (seconds) an idempotency key is remembered after its first use: a repeat
    /// within this time replays the stored item, a later one is a new request.
    pub idempotency_ttl_secs: u64,
    /// How often (seconds) expired idempotency keys are removed; 0 sweeps only at open.
    pub idempotency_sweep_secs: u64,
    /// Which backend holds the data: `sled` (embedded, in `data_dir`) or `postgres`.
    pub backend: BackendKind,
    /// The PostgreSQL backend's settings (used when `backend = "postgres"`).
    pub postgres: PostgresConfig,
    /// sled backend: write every org's graph to `graph.ckpt` in the data directory at a
    /// clean stop (and at the end of `feedgraph load`), and read it at the next start
    /// instead of scanning the store, when the store vouches for it (see
    /// `graph/checkpoint.rs`). Off: every start scans.
    pub graph_checkpoint: bool,
}

/// The storage backends feedgraph can run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// sled in `data_dir/sled`: one process, no server to run.
    #[default]
    Sled,
    /// A PostgreSQL database (see [`PostgresConfig`]).
    Postgres,
}

/// Settings of the PostgreSQL backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PostgresConfig {
    /// A libpq-style connection string or URL, e.g.
    /// `postgres://feedgraph@127.0.0.1:5432/feedgraph`.
    pub url: String,
    /// Most connections the pool opens.
    pub pool_size: usize,
    /// How long (ms) a request waits for a connection before it is answered 503.
    pub connect_timeout_ms: u64,
    /// How often (ms) the change-log follower polls when no notification woke it.
    pub follow_poll_ms: u64,
    /// Change-log entries older than this (seconds) are pruned even if a replica that
    /// stopped reporting has not read them (such a replica rebuilds its graph on restart).
    pub change_retention_secs: u64,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        PostgresConfig {
            url: String::new(),
            pool_size: 16,
            connect_timeout_ms: 5000,
            follow_poll_ms: 500,
            change_retention_secs: 24 * 60 * 60,
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            durability: Durability::Fsync,
            group_commit: true,
            cache_mb: 8,
            commit_delay_us: 800,
            idempotency_ttl_secs: 24 * 60 * 60,
            idempotency_sweep_secs: 10 * 60,
            backend: BackendKind::Sled,
            postgres: PostgresConfig::default(),
            graph_checkpoint: true,
        }
    }
}

/// Errors of the store layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend failed (an I/O or driver error it reports as text).
    #[error("storage error: {0}")]
    Backend(String),
    /// The backend cannot be reached now (database down, no connection free); nothing
    /// was written. Worth retrying later.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The commit's answer was lost (the connection broke during COMMIT): the write may
    /// or may not be stored.
    #[error("the commit's outcome is unknown: {0}")]
    CommitUnknown(String),
    /// A file-system operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What we were doing.
        context: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A stored value could not be decoded.
    #[error("corrupt record in tree '{tree}' at key '{key}': {source}")]
    Corrupt {
        /// Tree name.
        tree: &'static str,
        /// The key, rendered printable.
        key: String,
        /// What the codec said.
        source: CodecError,
    },
    /// A value could not be encoded.
    #[error("cannot encode record: {0}")]
    Encode(CodecError),
    /// The data directory was written with a schema this build cannot read.
    #[error(
        "data directory has schema version {found}, this build supports up to {SCHEMA_VERSION}; \
         upgrade feedgraph"
    )]
    Schema {
        /// The version found in `meta`.
        found: u32,
    },
    /// A sled key is not `org \0 ...` with a UTF-8 org.
    #[error("malformed key in tree '{tree}': '{key}'")]
    BadKey {
        /// Tree name.
        tree: &'static str,
        /// The key, rendered printable.
        key: String,
    },
    /// The record does not exist (in this org).
    #[error("{kind} '{id}' not found")]
    NotFound {
        /// `feedback` or `adapter`.
        kind: &'static str,
        /// The id asked for.
        id: String,
    },
    /// A record with this id already exists.
    #[error("{kind} '{id}' already exists")]
    Exists {
        /// `feedback` or `adapter`.
        kind: &'static str,
        /// The id.
        id: String,
    },
    /// A DERIVED_FROM parent does not exist.
    #[error("parent adapter '{0}' does not exist")]
    UnknownParent(String),
    /// The DERIVED_FROM edge would close a cycle.
    #[error("adapter '{child}' cannot derive from '{parent}': that would close a cycle ({path})")]
    Cycle {
        /// The adapter being created.
        child: String,
        /// The requested parent.
        parent: String,
        /// The chain found, `a -> b -> ... -> a`.
        path: String,
    },
    /// The request contradicts the stored state (e.g. re-parenting an adapter).
    #[error("{0}")]
    Conflict(String),
    /// A flush or fsync failed.
    #[error(transparent)]
    Sync(#[from] SyncError),
    /// Another process has the data directory open.
    #[error(
        "the data directory {0} is in use by another feedgraph process (a running server?); \
         stop it first, or use the HTTP API"
    )]
    Locked(String),
}

/// Records a write created or changed: what the graph index must apply.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChangeSet {
    /// New or changed feedback records: the item and lease in their new state. Their
    /// `links` are complete except from a link call, which carries only the edge it made
    /// or found (it does not decode the record's other edges); the graph takes edges from
    /// [`ChangeSet::links`], or from a record's `links` only for bulk loads.
    pub feedback: Vec<FeedbackRecord>,
    /// New or changed adapters (full new state).
    pub adapters: Vec<Adapter>,
    /// New FEEDBACK_FOR edges.
    pub links: Vec<FeedbackLink>,
    /// Each record of `feedback` is its version before (`version - 1`) with the edges of
    /// `links` added and only its `version` and `updated_at` moved: what a link's in-place
    /// append writes. The graph then moves those two columns of a row that holds the
    /// version before, without working the row's properties and counts out again; a row at
    /// any other version takes the whole record as usual.
    pub linked_only: bool,
}

impl ChangeSet {
    /// Records an updated feedback record, with the FEEDBACK_FOR edges it has that the
    /// version before it (whose edges were `before`) did not.
    pub fn push_update(&mut self, before: &[FeedbackLink], next: &FeedbackRecord) {
        self.links.extend(
            next.links
                .iter()
                .filter(|l| !before.iter().any(|b| b.adapter_id == l.adapter_id))
                .cloned(),
        );
        self.feedback.push(next.clone());
    }
}

/// What creating an adapter did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdapterOutcome {
    /// A new adapter was stored.
    Created,
    /// It existed and was filled in (e.g. auto-created, now described).
    Updated,
    /// It existed exactly as asked: nothing written.
    Unchanged,
}

/// What the `feedback` tree stores: the item, its outgoing FEEDBACK_FOR edges and its
/// training lease, so that one insert commits all of them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeedbackRecord {
    /// The training batch currently holding the item, if any.
    pub lease: Option<Lease>,
    /// Its FEEDBACK_FOR edges, in the order they were made.
    pub links: Vec<FeedbackLink>,
    /// The item (last, so that its long text fields end the record).
    pub feedback: Feedback,
}

/// A FEEDBACK_FOR edge read in place from a stored record (no allocation).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub struct LinkRef<'a> {
    /// Feedback end.
    pub feedback_id: &'a str,
    /// Adapter end.
    pub adapter_id: &'a str,
    /// When the edge was made.
    pub created_at: Millis,
    /// Auto or manual.
    pub source: LinkSource,
    /// Edge metadata as JSON text.
    pub metadata: &'a str,
}

/// The leading fields of a stored [`Feedback`], read in place (strings borrow from the
/// stored bytes): everything the graph index needs, and nothing of the long texts after
/// them. It mirrors `Feedback`'s field order up to `comment`; a unit test keeps the two in
/// step.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct FeedbackHeadRef<'a> {
    /// Id.
    pub id: &'a str,
    /// Org.
    pub org_id: &'a str,
    /// Type.
    pub feedback_type: crate::model::FeedbackType,
    /// Status.
    pub validation_status: crate::model::ValidationStatus,
    /// Created.
    pub created_at: Millis,
    /// Updated.
    pub updated_at: Millis,
    /// Version.
    pub version: u64,
    /// Used.
    pub used_for_training: bool,
    /// Batch.
    pub training_batch_id: u64,
    /// Model.
    pub model_version: Option<&'a str>,
    /// Adapter.
    pub adapter_id: Option<&'a str>,
    /// Adapter version.
    pub adapter_version: Option<&'a str>,
    /// User.
    pub user_id: Option<&'a str>,
    /// Session.
    pub session_id: Option<&'a str>,
    /// Interaction.
    pub interaction_id: Option<&'a str>,
    /// Score.
    pub score: Option<f64>,
    /// Correction.
    pub correction: Option<&'a str>,
    /// Comment.
    pub comment: Option<&'a str>,
}

/// The prefix of a stored [`FeedbackRecord`] that start-up decodes, read in place.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RecordHeadRef<'a> {
    /// The lease.
    pub lease: Option<Lease>,
    /// The edges.
    #[serde(borrow)]
    pub links: Vec<LinkRef<'a>>,
    /// The leading fields.
    #[serde(borrow)]
    pub feedback: FeedbackHeadRef<'a>,
}

impl<'a> From<&'a Feedback> for FeedbackHeadRef<'a> {
    /// A view of a full record's leading fields (no copies).
    fn from(f: &'a Feedback) -> Self {
        FeedbackHeadRef {
            id: &f.id,
            org_id: &f.org_id,
            feedback_type: f.feedback_type,
            validation_status: f.validation_status,
            created_at: f.created_at,
            updated_at: f.updated_at,
            version: f.version,
            used_for_training: f.used_for_training,
            training_batch_id: f.training_batch_id,
            model_version: f.model_version.as_deref(),
            adapter_id: f.adapter_id.as_deref(),
            adapter_version: f.adapter_version.as_deref(),
            user_id: f.user_id.as_deref(),
            session_id: f.session_id.as_deref(),
            interaction_id: f.interaction_id.as_deref(),
            score: f.score,
            correction: f.correction.as_deref(),
            comment: f.comment.as_deref(),
        }
    }
}

/// A training batch's hold on an item until `expires_at`; after that the item is free.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The batch.
    pub batch_id: u64,
    /// When the hold ends, ms since epoch.
    pub expires_at: Millis,
}

/// Where a training batch is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BatchState {
    /// Items are leased to it until `lease_expires_at`.
    Leased,
    /// Its items were trained on and marked used; the manifest is final.
    Committed,
    /// Given up; its items went back to the pool.
    Aborted,
}

/// One item as it was trained: its id and a hash of its content at commit time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ManifestEntry {
    /// Feedback id.
    pub feedback_id: String,
    /// FNV-1a 64 of the item's type, question, answer, correction and comment (hex).
    pub content_hash: String,
}

/// A training batch: items claimed together, then committed (used) or aborted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Batch {
    /// Numeric id (the items' `training_batch_id` once committed).
    pub id: u64,
    /// Owning tenant.
    pub org_id: String,
    /// Life-cycle state as stored (`leased` stays `leased` after the lease runs out; the
    /// derived `state` of the API says `expired`).
    #[serde(rename = "stored_state")]
    pub state: BatchState,
    /// Bumped on every change; equals the number of history versions.
    pub version: u64,
    /// When it was claimed.
    pub created_at: Millis,
    /// Who claimed it.
    pub created_by: String,
    /// When the lease ends if not committed.
    pub lease_expires_at: Millis,
    /// Claim filter: only feedback linked to this adapter.
    pub adapter_id: Option<String>,
    /// Claim filter: only this model version.
    pub model: Option<String>,
    /// Claim filter: also feedback of the adapter's descendants.
    pub include_descendants: bool,
    /// The items leased to the batch, in claim order.
    pub items: Vec<String>,
    /// The items trained on, with content hashes (set at commit, then immutable).
    pub manifest: Vec<ManifestEntry>,
    /// The adapter trained on this batch.
    pub trained_adapter_id: Option<String>,
    /// Its version.
    pub trained_adapter_version: Option<String>,
    /// When it was committed or aborted.
    pub finished_at: Option<Millis>,
}

/// A client-chosen key that makes a submit happen at most once per user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    /// The key as sent (the `Idempotency-Key` header).
    pub key: String,
    /// A stable hash of the request, to tell a retry from a different request.
    pub request_hash: u64,
}

/// Where a new item's id came from: it decides whether an insert must look for an item
/// that already has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdSource {
    /// Minted for this insert by the service's time-ordered generator: strictly increasing
    /// within the process (a fresh random ULID only if its counter overflows within one
    /// millisecond), with 80 random bits behind each new millisecond, so no stored item
    /// can have it and the sled read is skipped.
    Minted,
    /// Given by the caller (an import, a dump): checked against the stored items.
    Given,
}

/// Result of [`Store::insert_feedback_once`].
#[derive(Debug, Clone, PartialEq)]
pub enum Inserted {
    /// Stored now.
    New(ChangeSet),
    /// The idempotency key was used before for this request: the item stored then.
    Replay(Box<Feedback>),
}

/// FNV-1a, 64 bit: a hash that is stable across builds and platforms, for values we persist.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
