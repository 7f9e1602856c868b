//! The embedded backend: sled trees, key layout, group-commit durability and the per-record
//! history, behind [`Backend`]. The default; sled is then the source of truth.
//!
//! Trees (see ARCHITECTURE.md for the full layout):
//! - `meta`: `schema_version` -> u32 big-endian
//! - `feedback`: `org \0 feedback_id` -> [`FeedbackRecord`] (the item and its FEEDBACK_FOR edges)
//! - `adapters`: `org \0 adapter_id` -> [`Adapter`] (with its DERIVED_FROM parent)
//! - `history`: `org \0 kind id \0 version_be64` -> [`HistoryVersion`]
//! - `idempotency`: `org \0 user \0 key` -> the feedback id and request hash of a used key
//! - `batches`: `org \0 batch_id_be64` -> [`Batch`]
//! - `score_configs`: `org \0 name` -> [`ScoreConfig`] (written under the adapter lock)
//!
//! Crash consistency without sled transactions: sled recovers a contiguous prefix of its
//! log, so a thread's inserts survive in the order it made them. Every write puts the
//! history entry first and the record last; the record is the commit point. A history
//! entry newer than its record is an unfinished write and is never shown (and is
//! overwritten by the next change). Writers of one record are serialised by a striped lock,
//! adapter writes by one lock (they are rare, and lineage checks need a stable view); no
//! lock is held while waiting for durability. Plain inserts keep sled's fast path: its
//! transactions and batches take a global write lock and measured 4-5x slower here.
//!
//! Write methods return the [`ChangeSet`] the graph index applies, and return only once the
//! write is durable, unless the caller asks for [`SyncMode::Defer`] and later calls
//! [`SledStore::make_durable`] (bulk import). Each write counts itself in and out with the
//! syncer ([`Syncer::begin_write`]), so that reads that show stored state to a client go
//! through [`SledStore::durable_read`] and never show a write that is not durable yet.
//!
//! The database can be replaced while the store runs (the online rewrite that drops
//! erased bytes, `rewrite.rs`): every tree is reached through [`Handle`] (`t()`), and every
//! change to sled holds the handle's gate shared ([`SledStore::begin_write`]), so a swap
//! that holds it exclusively sees no write half in the old database and half in the new.
//!
//! Idempotency keys live for `storage.idempotency_ttl_secs` after their first use: an
//! older entry counts as absent, and a sweeper thread removes expired entries in batches
//! (at open, then every `storage.idempotency_sweep_secs`).

use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use serde::Serialize;
use sled::Tree;

use super::durability::Syncer;
use super::outbox::{Changed, EventStore};
use super::rules::{self, FEEDBACK_SKIP, IdempotencyRecord, creation_changes, import_entry};
use super::view::{FeedbackView, RecordView};
use super::{
    Backend, Batch, BatchWritten, BoxFuture, ChangeFn, ChangeSet, ErasureRecord, ErasureState,
    FeedbackRecord, IdSource, IdempotencyKey, Inserted, Linked, RecordHeadRef, StorageConfig,
    StoreError, WriteTx, codec, keys,
};
use crate::model::{
    Actor, Adapter, ChangeAction, Feedback, FeedbackLink, FieldChange, HistoryVersion, Millis,
    ScoreConfig,
};
use codec::CodecError;

mod backup;
mod link_append;
mod page_read;
mod rewrite;
mod sled_outbox;

pub use rewrite::RewriteMetrics;

/// Number of lock stripes serialising writers of the same feedback record.
const STRIPES: usize = 256;
/// Number of lock stripes serialising uses of the same idempotency key.
const IDEM_STRIPES: usize = 64;

/// The schema this build writes. Bump it (and add a migration) when the key layout or a
/// record's meaning changes.
pub const SCHEMA_VERSION: u32 = 1;

/// Expired idempotency entries removed per batch of a sweep (each batch then synced once).
const SWEEP_BATCH: usize = 1024;

/// Whether a write waits for durability before returning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// Wait (group commit). What every acknowledged client write uses.
    Wait,
    /// Return once in sled's memory; the caller calls [`SledStore::make_durable`] later.
    Defer,
}

/// One database generation: the sled database and its trees, swapped as a whole when an
/// online rewrite replaces the database (see [`rewrite`]).
#[derive(Debug)]
pub(super) struct Trees {
    db: sled::Db,
    /// The database's directory name inside the data directory (`sled` or `sled.gen<N>`).
    name: String,
    meta: Tree,
    feedback: Tree,
    adapters: Tree,
    history: Tree,
    idempotency: Tree,
    batches: Tree,
    /// Webhook endpoints: `org \0 endpoint id` -> `Endpoint`.
    webhooks: Tree,
    /// Events waiting for delivery: `org \0 endpoint \0 kind id \0 version` -> `OutboxEntry`.
    outbox: Tree,
    /// The delivery log: `org \0 endpoint \0 delivery id` -> `Delivery`.
    deliveries: Tree,
    score_configs: Tree,
    /// Erasure jobs and receipts: `org \0 erasure_id` -> `ErasureRecord`.
    erasures: Tree,
}

impl Trees {
    fn open(db: sled::Db, name: String) -> Result<Trees, StoreError> {
        Ok(Trees {
            meta: db.open_tree("meta")?,
            feedback: db.open_tree("feedback")?,
            adapters: db.open_tree("adapters")?,
            history: db.open_tree("history")?,
            idempotency: db.open_tree("idempotency")?,
            batches: db.open_tree("batches")?,
            webhooks: db.open_tree("webhooks")?,
            outbox: db.open_tree("outbox")?,
            deliveries: db.open_tree("deliveries")?,
            score_configs: db.open_tree("score_configs")?,
            erasures: db.open_tree("erasures")?,
            db,
            name,
        })
    }
}

/// The store's handle on its current database, and the gate that keeps writes off it
/// while a rewrite swaps in a new one. Every change to sled holds the gate shared (inside
/// [`SledStore::begin_write`]), so all the inserts of one write land in one database.
#[derive(Debug)]
pub(super) struct Handle {
    current: parking_lot::RwLock<std::sync::Arc<Trees>>,
    gate: parking_lot::RwLock<()>,
}

impl Handle {
    /// The current database. A reader may keep it across a swap: the old database stays
    /// readable (and holds everything durable at the swap) until its last user drops it.
    fn trees(&self) -> std::sync::Arc<Trees> {
        self.current.read().clone()
    }

    /// Holds writes off (shared): taken recursively, so a write that starts another
    /// (nested) write while a swap waits never deadlocks.
    fn hold(&self) -> parking_lot::RwLockReadGuard<'_, ()> {
        self.gate.read_recursive()
    }
}

/// A write in progress: holds the swap gate shared and counts the write in with the
/// syncer until dropped.
pub(super) struct StoreWrite<'a> {
    _write: super::durability::WriteGuard<'a>,
    _gate: parking_lot::RwLockReadGuard<'a, ()>,
}

/// The sled-backed store. Cheap to share behind an `Arc`; all methods take `&self`.
#[derive(Debug)]
pub struct SledStore {
    /// The current database and its trees (replaced by an online rewrite).
    h: std::sync::Arc<Handle>,
    /// Enabled endpoints per org with the mask of their events, so a write of an org with
    /// none costs one hash lookup. Kept in step by every endpoint write.
    hooks: parking_lot::RwLock<rustc_hash::FxHashMap<String, Vec<(String, u32)>>>,
    /// One online rewrite at a time.
    rewriting: Mutex<()>,
    /// sled's cache size the store was opened with (a rewrite opens its copy alike).
    cache_bytes: u64,
    /// The online rewrite's instruments.
    rewrite_metrics: RewriteMetrics,
    /// Test only: pause of the rewrite's copy after each batch, ms.
    rewrite_test_delay_ms: std::sync::atomic::AtomicU64,
    syncer: std::sync::Arc<Syncer>,
    dir: PathBuf,
    stripes: Vec<Mutex<()>>,
    idem_stripes: Vec<Mutex<()>>,
    adapter_lock: Mutex<()>,
    /// Keys of adapters known to be stored, so a submit naming one skips the sled read.
    /// Filled as adapters are seen; only a taken-back load removes adapters.
    known_adapters: parking_lot::RwLock<rustc_hash::FxHashSet<Vec<u8>>>,
    /// How long an idempotency key is remembered, ms.
    idempotency_ttl_ms: Millis,
    /// Added to the clock when deciding whether an idempotency key expired (tests).
    clock_skew_ms: std::sync::atomic::AtomicU64,
    /// The thread that removes expired idempotency keys; stopped on drop.
    sweeper: Option<Sweeper>,
    /// Set by [`SledStore::seal`]: every write from then on is refused.
    sealed: std::sync::atomic::AtomicBool,
    /// The graph checkpoint id found in `meta` at open (and removed there then).
    graph_checkpoint: Option<u128>,
}

/// The `meta` key holding the id of the graph checkpoint the store vouches for.
const GRAPH_CHECKPOINT_KEY: &[u8] = b"graph_checkpoint";

/// The idempotency sweeper thread and the means to stop it.
#[derive(Debug)]
struct Sweeper {
    stop: std::sync::Arc<(Mutex<bool>, parking_lot::Condvar)>,
    thread: std::thread::JoinHandle<()>,
}

impl Drop for SledStore {
    fn drop(&mut self) {
        if let Some(s) = self.sweeper.take() {
            *s.stop.0.lock() = true;
            s.stop.1.notify_all();
            let _ = s.thread.join();
        }
    }
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::Backend(format!("sled: {e}"))
    }
}

pub(super) fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    codec::encode(v).map_err(StoreError::Encode)
}

pub(super) fn decode<T: codec::Stored>(
    tree: &'static str,
    key: &[u8],
    bytes: &[u8],
) -> Result<T, StoreError> {
    codec::decode(bytes).map_err(|source| StoreError::Corrupt {
        tree,
        key: keys::display(key),
        source,
    })
}

/// The names of the trees whose values go through the record codec, for
/// [`decode_stored_value`].
#[doc(hidden)]
pub const CODEC_TREES: [&str; 6] = [
    "feedback",
    "adapters",
    "history",
    "idempotency",
    "batches",
    "score_configs",
];

/// Decodes `bytes` as the value type of `tree` (one of [`CODEC_TREES`]) exactly as a read
/// of that tree does, the in-place prefix read of start-up included for `feedback`, and
/// drops the result. For fuzzing and corruption tests: any bytes must give `Ok` or
/// [`StoreError::Corrupt`], never a panic. An unknown tree name is `Corrupt` too.
#[doc(hidden)]
pub fn decode_stored_value(tree: &str, bytes: &[u8]) -> Result<(), StoreError> {
    let key = b"fuzz";
    match tree {
        "feedback" => {
            let prefix = codec::decode_prefix_borrowed::<RecordHeadRef<'_>>(bytes);
            let full = decode::<FeedbackRecord>("feedback", key, bytes);
            // A link's in-place append reads the same bytes its own way: no panic either.
            if let Ok(Some(parts)) = link_append::RecordParts::read(bytes) {
                let probe = FeedbackLink {
                    feedback_id: "fuzz".into(),
                    adapter_id: "fuzz".into(),
                    created_at: 0,
                    source: crate::model::LinkSource::Manual,
                    metadata: crate::model::Metadata::default(),
                };
                let _ = parts.has_link("fuzz");
                if let Ok((value, item_at)) = parts.with_link(&probe, 0) {
                    let _ = link_append::item_for_graph(&value, item_at, parts.lease, &probe);
                }
            }
            prefix.map_err(|source| StoreError::Corrupt {
                tree: "feedback",
                key: keys::display(key),
                source,
            })?;
            full.map(drop)
        }
        "adapters" => decode::<Adapter>("adapters", key, bytes).map(drop),
        "history" => decode::<HistoryVersion>("history", key, bytes).map(drop),
        "idempotency" => decode::<IdempotencyRecord>("idempotency", key, bytes).map(drop),
        "batches" => decode::<Batch>("batches", key, bytes).map(drop),
        "score_configs" => decode::<ScoreConfig>("score_configs", key, bytes).map(drop),
        _ => Err(StoreError::Corrupt {
            tree: "unknown",
            key: keys::display(key),
            source: CodecError::Empty,
        }),
    }
}

/// A feedback record as a link read it before taking the record's stripe lock: its bytes,
/// and their parts when in the current format (see [`SledStore::link_in_place`]).
#[derive(Clone, Copy)]
struct Seen<'b, 'p> {
    bytes: &'b [u8],
    parts: Option<&'p link_append::RecordParts<'b>>,
}

fn stripe_of(org: &str, id: &str) -> usize {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    org.hash(&mut h);
    id.hash(&mut h);
    (h.finish() as usize) % STRIPES
}

impl SledStore {
    /// Opens (or creates) the store in the data directory's current database (`sled`, or
    /// the directory named in `CURRENT` after an online rewrite), checking the schema
    /// version. Leftovers of an interrupted rewrite are cleaned up first.
    pub fn open(data_dir: &Path, config: &StorageConfig) -> Result<Self, StoreError> {
        let started = std::time::Instant::now();
        let io = |context: String| move |source| StoreError::Io { context, source };
        std::fs::create_dir_all(data_dir).map_err(io(format!(
            "creating data directory {}",
            data_dir.display()
        )))?;
        super::compact::recover(data_dir)?;
        let name = super::compact::active_name(data_dir)?;
        let dir = data_dir.join(&name);
        let cache_bytes = config.cache_mb.saturating_mul(1024 * 1024);
        let db = super::compact::open_db(&dir, data_dir, cache_bytes)?;
        // Persist the directory entries of sled's files once, so that fsyncs of the data
        // file are enough from here on.
        for d in [&dir, data_dir] {
            std::fs::File::open(d)
                .and_then(|f| f.sync_all())
                .map_err(io(format!("syncing directory {}", d.display())))?;
        }
        // And the data directory's own name, which is new on a first start (made here or
        // by the secret setup): until its parent is synced, a power loss can take the
        // whole directory with every write acknowledged in it. A parent we may not read
        // cannot be synced by us; the directory was then most likely made by someone else.
        let parent = match data_dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        if let Err(e) = std::fs::File::open(parent).and_then(|f| f.sync_all()) {
            tracing::warn!(dir = %parent.display(), error = %e, "could not sync the data directory's parent");
        }
        let syncer = Syncer::new(
            db.clone(),
            &dir.join("db"),
            config.durability,
            config.group_commit,
            std::time::Duration::from_micros(config.commit_delay_us),
        )
        .map_err(io(format!("opening {}", dir.join("db").display())))?;
        let mut store = SledStore {
            h: std::sync::Arc::new(Handle {
                current: parking_lot::RwLock::new(std::sync::Arc::new(Trees::open(db, name)?)),
                gate: parking_lot::RwLock::new(()),
            }),
            hooks: parking_lot::RwLock::default(),
            rewriting: Mutex::new(()),
            cache_bytes,
            rewrite_metrics: RewriteMetrics::default(),
            rewrite_test_delay_ms: std::sync::atomic::AtomicU64::new(0),
            dir: data_dir.to_owned(),
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            idem_stripes: (0..IDEM_STRIPES).map(|_| Mutex::new(())).collect(),
            adapter_lock: Mutex::new(()),
            known_adapters: parking_lot::RwLock::default(),
            idempotency_ttl_ms: config.idempotency_ttl_secs.saturating_mul(1000),
            clock_skew_ms: std::sync::atomic::AtomicU64::new(0),
            syncer: std::sync::Arc::new(syncer),
            sweeper: None,
            sealed: std::sync::atomic::AtomicBool::new(false),
            graph_checkpoint: None,
        };
        store.check_schema()?;
        store.graph_checkpoint = store.take_graph_checkpoint()?;
        store.open_outbox()?;
        store.sweeper = Some(store.start_sweeper(config.idempotency_sweep_secs)?);
        tracing::info!(
            open_ms = started.elapsed().as_millis() as u64,
            rss_kib = crate::graph::resident_kib(),
            cache_mb = config.cache_mb,
            "sled store open"
        );
        Ok(store)
    }

    /// The current database's trees (see [`Handle::trees`]).
    fn t(&self) -> std::sync::Arc<Trees> {
        self.h.trees()
    }

    /// Starts a write: holds the swap gate shared (so all of the write's inserts land in
    /// one database) and counts the write in with the syncer ([`Syncer::begin_write`]).
    /// Drop it before waiting for durability.
    pub(super) fn begin_write(&self) -> Result<StoreWrite<'_>, StoreError> {
        let gate = self.h.hold();
        if self.sealed.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(StoreError::Unavailable(
                "the store is closed to writes: the server is stopping".into(),
            ));
        }
        Ok(StoreWrite {
            _write: self.syncer.begin_write()?,
            _gate: gate,
        })
    }

    /// Starts the thread that removes expired idempotency keys: once now, then every
    /// `every_secs` (never again if 0) until the store is dropped.
    fn start_sweeper(&self, every_secs: u64) -> Result<Sweeper, StoreError> {
        let stop = std::sync::Arc::new((Mutex::new(false), parking_lot::Condvar::new()));
        let (handle, syncer, ttl) = (self.h.clone(), self.syncer.clone(), self.idempotency_ttl_ms);
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("feedgraph-idem-sweep".into())
            .spawn(move || {
                loop {
                    match sweep_expired(&handle, &syncer, crate::model::now_millis(), ttl) {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(removed = n, "expired idempotency keys removed"),
                        Err(e) => tracing::warn!("sweeping expired idempotency keys: {e}"),
                    }
                    let mut stopped = stop2.0.lock();
                    if every_secs == 0 {
                        while !*stopped {
                            stop2.1.wait(&mut stopped);
                        }
                    } else {
                        let until =
                            std::time::Instant::now() + std::time::Duration::from_secs(every_secs);
                        while !*stopped && !stop2.1.wait_until(&mut stopped, until).timed_out() {}
                    }
                    if *stopped {
                        return;
                    }
                }
            })
            .map_err(|source| StoreError::Io {
                context: "starting the idempotency sweeper".into(),
                source,
            })?;
        Ok(Sweeper { stop, thread })
    }

    /// The clock idempotency expiry is judged by (the real one, unless a test moved it).
    fn now(&self) -> Millis {
        crate::model::now_millis().saturating_add(
            self.clock_skew_ms
                .load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    /// Removes every expired idempotency entry now, in batches; returns how many.
    pub fn sweep_idempotency(&self) -> Result<usize, StoreError> {
        sweep_expired(&self.h, &self.syncer, self.now(), self.idempotency_ttl_ms)
    }

    /// How many idempotency entries are stored, expired or not.
    pub fn idempotency_entries(&self) -> usize {
        self.t().idempotency.len()
    }

    /// Adds the store's instruments (group-commit batch sizes, sync times) to `registry`.
    pub fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        self.syncer.metrics().register(registry);
        self.rewrite_metrics.register(registry);
    }

    /// Fails once a sync failed: the store then refuses every write until it is reopened
    /// (a restart). For readiness checks.
    pub fn check_writable(&self) -> Result<(), StoreError> {
        Ok(self.syncer.check_writable()?)
    }

    /// Call after reading, before showing what was read to a client: returns once
    /// everything the reads could have seen is durable. Cheap when no write is in flight;
    /// otherwise it waits for the next sync. Fails with [`SyncError::Poisoned`] if that
    /// sync failed (what is durable is then unknown).
    pub fn settle_reads(&self) -> Result<(), StoreError> {
        Ok(self.syncer.settle_read()?)
    }

    /// Runs `read` (reads of this store), then waits until everything it could have seen
    /// is durable ([`SledStore::settle_reads`]), and returns its result.
    pub fn durable_read<T>(
        &self,
        read: impl FnOnce(&SledStore) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let out = read(self)?;
        self.syncer.settle_read()?;
        Ok(out)
    }

    /// Removes the graph checkpoint id from `meta`, durably, and returns it: the store
    /// vouches for a checkpoint once, at open, before anything else can write. Every
    /// opener takes it (a tool that writes while the server is down leaves none behind),
    /// so a checkpoint is used only by the first start after the stop that wrote it.
    fn take_graph_checkpoint(&self) -> Result<Option<u128>, StoreError> {
        let Some(v) = self.t().meta.get(GRAPH_CHECKPOINT_KEY)? else {
            return Ok(None);
        };
        {
            let _w = self.begin_write()?;
            self.t().meta.remove(GRAPH_CHECKPOINT_KEY)?;
        }
        self.make_durable()?;
        Ok(<[u8; 16]>::try_from(v.as_ref())
            .ok()
            .map(u128::from_be_bytes))
    }

    /// The id of the graph checkpoint this store vouched for when it was opened (see
    /// `graph/checkpoint.rs`); `None` if the last stop wrote none or anything opened the
    /// store since.
    pub fn vouched_graph_checkpoint(&self) -> Option<u128> {
        self.graph_checkpoint
    }

    /// Refuses every write from now on (with [`StoreError::Unavailable`]); returns once no
    /// write is between its first and last change to sled. For a clean stop, before the
    /// graph checkpoint is taken: after this, the store cannot change under it.
    pub fn seal(&self) {
        let _all = self.h.gate.write();
        self.sealed.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Records `id` as the graph checkpoint the store vouches for, durably. Call only with
    /// the store sealed and the checkpoint file durable.
    pub fn vouch_for_graph_checkpoint(&self, id: u128) -> Result<(), StoreError> {
        {
            let _gate = self.h.hold();
            let _w = self.syncer.begin_write()?;
            self.t()
                .meta
                .insert(GRAPH_CHECKPOINT_KEY, &id.to_be_bytes())?;
        }
        self.make_durable()
    }

    /// Takes back [`SledStore::vouch_for_graph_checkpoint`], durably.
    pub fn withdraw_graph_checkpoint(&self) -> Result<(), StoreError> {
        {
            let _gate = self.h.hold();
            let _w = self.syncer.begin_write()?;
            self.t().meta.remove(GRAPH_CHECKPOINT_KEY)?;
        }
        self.make_durable()
    }

    fn check_schema(&self) -> Result<(), StoreError> {
        const KEY: &[u8] = b"schema_version";
        match self.t().meta.get(KEY)? {
            None => {
                {
                    let _w = self.begin_write()?;
                    self.t().meta.insert(KEY, &SCHEMA_VERSION.to_be_bytes())?;
                }
                self.make_durable()?;
                Ok(())
            }
            Some(v) => {
                let found = <[u8; 4]>::try_from(v.as_ref())
                    .map(u32::from_be_bytes)
                    .map_err(|_| StoreError::Corrupt {
                        tree: "meta",
                        key: "schema_version".into(),
                        source: CodecError::Trailing(v.len()),
                    })?;
                if found > SCHEMA_VERSION {
                    return Err(StoreError::Schema { found });
                }
                // Versions below the current one would be migrated here, in order, each
                // migration rewriting records without dropping any. There are none yet.
                Ok(())
            }
        }
    }

    /// The data directory this store lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Makes every write completed so far durable (shared with concurrent callers).
    pub fn make_durable(&self) -> Result<(), StoreError> {
        Ok(self.syncer.wait_durable()?)
    }

    /// Asks for a sync covering every write this thread completed so far; pass the ticket
    /// to [`SledStore::durable`] to wait for it without blocking a thread.
    pub fn durability_ticket(&self) -> Result<u64, StoreError> {
        Ok(self.syncer.ticket()?)
    }

    /// Blocks until the sync of `ticket` completed.
    pub fn wait_ticket(&self, ticket: u64) -> Result<(), StoreError> {
        Ok(self.syncer.wait(ticket)?)
    }

    /// Waits until the sync of `ticket` completed: the writes before the ticket are durable.
    pub async fn durable(&self, ticket: u64) -> Result<(), StoreError> {
        Ok(self.syncer.wait_async(ticket).await?)
    }

    fn finish(&self, sync: SyncMode) -> Result<(), StoreError> {
        match sync {
            SyncMode::Wait => self.make_durable(),
            SyncMode::Defer => Ok(()),
        }
    }

    /// Records that an erasure finished: the next start-up (or `feedgraph compact`)
    /// rewrites the database so the erased bytes leave the disk (see [`super::compact`]).
    pub fn mark_compaction_due(&self) -> Result<(), StoreError> {
        super::compact::mark_due(&self.dir)
    }

    /// Size of the database on disk, in bytes.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.t().db.size_on_disk()?)
    }

    fn put_history(
        &self,
        org: &str,
        kind: u8,
        id: &str,
        entry: &HistoryVersion,
    ) -> Result<(), StoreError> {
        self.t()
            .history
            .insert(keys::history(org, kind, id, entry.version), encode(entry)?)?;
        Ok(())
    }

    /// Calls `f` with the item of a stored feedback record, read in place when the record
    /// is in the current format (older ones are decoded through their migration).
    fn with_feedback_view(
        &self,
        key: &[u8],
        bytes: &[u8],
        f: &mut dyn FnMut(Option<&FeedbackView<'_>>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let corrupt = |source| StoreError::Corrupt {
            tree: "feedback",
            key: keys::display(key),
            source,
        };
        match codec::decode_current_borrowed::<RecordView<'_>>(bytes).map_err(corrupt)? {
            Some(r) => f(Some(&r.feedback)),
            None => {
                let r: FeedbackRecord = decode("feedback", key, bytes)?;
                f(Some(&FeedbackView::from(&r.feedback)))
            }
        }
    }

    fn read_record(&self, key: &[u8]) -> Result<Option<FeedbackRecord>, StoreError> {
        match self.t().feedback.get(key)? {
            Some(v) => decode("feedback", key, &v).map(Some),
            None => Ok(None),
        }
    }

    /// Creates the adapter if it does not exist; returns it if it was created.
    /// `locked` says the caller holds the adapter lock already.
    fn ensure_adapter(
        &self,
        actor: &Actor,
        adapter_id: &str,
        at: Millis,
        locked: bool,
    ) -> Result<Option<Adapter>, StoreError> {
        let key = keys::record(&actor.org, adapter_id);
        if self.known_adapters.read().contains(&key) {
            return Ok(None);
        }
        let _guard = (!locked).then(|| self.adapter_lock.lock());
        if self.t().adapters.contains_key(&key)? {
            self.known_adapters.write().insert(key);
            return Ok(None);
        }
        let (adapter, entry) = rules::auto_adapter(actor, adapter_id, at);
        self.put_history(&actor.org, keys::KIND_ADAPTER, adapter_id, &entry)?;
        self.emit(
            actor,
            keys::KIND_ADAPTER,
            adapter_id,
            &entry,
            Changed::Adapter(&adapter),
        )?;
        self.t()
            .adapters
            .insert(key.as_slice(), encode(&adapter)?)?;
        self.known_adapters.write().insert(key);
        Ok(Some(adapter))
    }

    /// Before the first update of an item, rewrites its compact creation entry (see
    /// [`SledStore::feedback_history`]) with the fields of the version about to be replaced.
    /// Runs under the item's stripe lock, before the new entry and record are written: a
    /// crash after it leaves a full creation entry beside an unchanged record.
    fn write_out_creation(&self, org: &str, current: &FeedbackRecord) -> Result<(), StoreError> {
        let fb = &current.feedback;
        if fb.version != 1 {
            return Ok(());
        }
        let key = keys::history(org, keys::KIND_FEEDBACK, &fb.id, 1);
        let Some(v) = self.t().history.get(&key)? else {
            return Ok(());
        };
        let mut entry: HistoryVersion = decode("history", &key, &v)?;
        if !entry.changes.is_empty() {
            return Ok(());
        }
        entry.changes = creation_changes(fb, FEEDBACK_SKIP);
        self.put_history(org, keys::KIND_FEEDBACK, &fb.id, &entry)
    }

    /// Stores a new feedback item (version 1) with its history entry; if it names an
    /// adapter, creates that adapter if needed and the FEEDBACK_FOR edge (source auto).
    pub fn insert_feedback(
        &self,
        actor: &Actor,
        fb: &Feedback,
        action: ChangeAction,
        sync: SyncMode,
    ) -> Result<ChangeSet, StoreError> {
        let inserted = {
            let _write = self.begin_write()?;
            self.insert_record(actor, fb, IdSource::Given, action, None, false)?
        };
        self.finish(sync)?;
        match inserted {
            Inserted::New(cs) => Ok(cs),
            Inserted::Replay(existing) => Err(StoreError::Exists {
                kind: "feedback",
                id: existing.id.clone(),
            }),
        }
    }

    /// Like [`SledStore::insert_feedback`], but at most once per idempotency key (see
    /// [`rules::judge_key`]): a repeat of an earlier request returns the item stored then
    /// and writes nothing; with a different request it is a conflict.
    pub fn insert_feedback_once(
        &self,
        actor: &Actor,
        fb: &Feedback,
        id_source: IdSource,
        action: ChangeAction,
        idempotency: Option<&IdempotencyKey>,
        sync: SyncMode,
    ) -> Result<Inserted, StoreError> {
        let inserted = {
            let _write = self.begin_write()?;
            self.insert_record(actor, fb, id_source, action, idempotency, false)?
        };
        self.finish(sync)?;
        Ok(inserted)
    }

    /// The body of an insert; the caller has counted the write in with the syncer.
    /// `adapters_locked` says the caller holds the adapter lock.
    fn insert_record(
        &self,
        actor: &Actor,
        fb: &Feedback,
        id_source: IdSource,
        action: ChangeAction,
        idempotency: Option<&IdempotencyKey>,
        adapters_locked: bool,
    ) -> Result<Inserted, StoreError> {
        let _idem_guard = idempotency
            .map(|k| self.idem_stripes[stripe_of(&actor.org, &k.key) % IDEM_STRIPES].lock());
        let idem_key = idempotency.map(|k| keys::idempotency(&actor.org, &actor.user, &k.key));
        if let (Some(k), Some(ikey)) = (idempotency, &idem_key)
            && let Some(v) = self.t().idempotency.get(ikey)?
        {
            let seen: IdempotencyRecord = decode("idempotency", ikey, &v)?;
            let original = self.get_feedback(&actor.org, &seen.feedback_id)?;
            let verdict = rules::judge_key(
                k,
                Some(&seen),
                original,
                self.now(),
                self.idempotency_ttl_ms,
            )?;
            if let rules::KeyVerdict::Replay(existing) = verdict {
                return Ok(Inserted::Replay(existing));
            }
        }
        let fkey = keys::record(&actor.org, &fb.id);
        let mut cs = ChangeSet::default();
        // A given id that is stored already is refused before anything is written (the
        // adapter it names is not auto-created for a line that is skipped); the check is
        // repeated under the stripe below for a writer of the same id in between.
        if id_source == IdSource::Given && self.t().feedback.contains_key(&fkey)? {
            return Err(StoreError::Exists {
                kind: "feedback",
                id: fb.id.clone(),
            });
        }
        // The adapter before the record's stripe: locks are always taken in the order
        // idempotency stripe, adapter lock, record stripe (a write holding the adapter
        // lock takes stripes after it), so no two writers can wait on each other.
        if let Some(adapter_id) = &fb.adapter_id {
            cs.adapters.extend(self.ensure_adapter(
                actor,
                adapter_id,
                fb.created_at,
                adapters_locked,
            )?);
        }
        let _guard = self.stripes[stripe_of(&actor.org, &fb.id)].lock();
        if id_source == IdSource::Given && self.t().feedback.contains_key(&fkey)? {
            return Err(StoreError::Exists {
                kind: "feedback",
                id: fb.id.clone(),
            });
        }
        let record = rules::new_record(fb);
        let entry = rules::submit_entry(actor, fb, action);
        self.put_history(&actor.org, keys::KIND_FEEDBACK, &fb.id, &entry)?;
        self.emit(
            actor,
            keys::KIND_FEEDBACK,
            &fb.id,
            &entry,
            Changed::Feedback(&record),
        )?;
        if let (Some(k), Some(ikey)) = (idempotency, &idem_key) {
            let seen = IdempotencyRecord {
                feedback_id: fb.id.clone(),
                request_hash: k.request_hash,
                at: self.now(),
            };
            self.t()
                .idempotency
                .insert(ikey.as_slice(), encode(&seen)?)?;
        }
        self.t()
            .feedback
            .insert(fkey.as_slice(), encode(&record)?)?;
        cs.links = record.links.clone();
        cs.feedback.push(record);
        Ok(Inserted::New(cs))
    }

    /// Changes one feedback record under its stripe lock: `change` gets the current record
    /// and returns the new one plus the history entry's action and field changes, or `None`
    /// to leave it as is. The version is bumped and the history written before the record.
    pub fn update_feedback(
        &self,
        actor: &Actor,
        feedback_id: &str,
        at: Millis,
        sync: SyncMode,
        change: ChangeFn<'_>,
    ) -> Result<Option<FeedbackRecord>, StoreError> {
        let updated = {
            let _write = self.begin_write()?;
            self.update_record(actor, feedback_id, at, change)?
        };
        if updated.is_some() {
            self.finish(sync)?;
        }
        Ok(updated)
    }

    /// The body of an update; the caller has counted the write in with the syncer.
    fn update_record(
        &self,
        actor: &Actor,
        feedback_id: &str,
        at: Millis,
        change: ChangeFn<'_>,
    ) -> Result<Option<FeedbackRecord>, StoreError> {
        let fkey = keys::record(&actor.org, feedback_id);
        let _guard = self.stripes[stripe_of(&actor.org, feedback_id)].lock();
        let Some(current) = self.read_record(&fkey)? else {
            return Err(StoreError::NotFound {
                kind: "feedback",
                id: feedback_id.to_owned(),
            });
        };
        let Some((mut next, action, changes)) = change(&current)? else {
            return Ok(None);
        };
        self.write_out_creation(&actor.org, &current)?;
        next.feedback.version = current.feedback.version + 1;
        next.feedback.updated_at = at.max(current.feedback.updated_at);
        let entry = HistoryVersion {
            version: next.feedback.version,
            at,
            actor: actor.user.clone(),
            action,
            changes,
        };
        self.put_history(&actor.org, keys::KIND_FEEDBACK, feedback_id, &entry)?;
        self.emit(
            actor,
            keys::KIND_FEEDBACK,
            feedback_id,
            &entry,
            Changed::Feedback(&next),
        )?;
        self.t().feedback.insert(fkey.as_slice(), encode(&next)?)?;
        Ok(Some(next))
    }

    /// The writes of a link (see [`Backend::link`]), not yet durable: the adapter if it
    /// is new, then the feedback record with the edge added and its history entry, under
    /// the record's stripe lock as every update. Returns what happened and whether
    /// anything was written (then the caller waits for a sync; else for the sync that
    /// covers what it read, [`Syncer::read_ticket`]).
    ///
    /// An edge that exists already is answered from a read, without counting a write in
    /// with the syncer: a repeated link then waits for a sync only if a write it may have
    /// read is not durable yet. A new edge is appended to the stored record in place
    /// ([`link_append`]) when it can be; the record is decoded and encoded again only for
    /// an item's first update (its creation entry is written out), an older format, or an
    /// org with webhooks (the event carries the whole record).
    fn link_record(
        &self,
        actor: &Actor,
        link: &FeedbackLink,
    ) -> Result<(Linked, bool), StoreError> {
        let fkey = keys::record(&actor.org, &link.feedback_id);
        // An unknown item is refused before its adapter would be created.
        let Some(seen) = self.t().feedback.get(&fkey)? else {
            return Err(StoreError::NotFound {
                kind: "feedback",
                id: link.feedback_id.clone(),
            });
        };
        // Read once here; the locked read below reuses the parts when the bytes are the
        // same (the common case: nobody changed the item meanwhile).
        let parts =
            link_append::RecordParts::read(&seen).map_err(|source| StoreError::Corrupt {
                tree: "feedback",
                key: keys::display(&fkey),
                source,
            })?;
        if let Some(existed) = self.existing_link(&fkey, &seen, parts.as_ref(), link)? {
            return Ok((existed, false));
        }
        let _write = self.begin_write()?;
        let mut changes = ChangeSet::default();
        // The adapter before the record's stripe (the lock order of `insert_record`).
        let adapter = self.ensure_adapter(actor, &link.adapter_id, link.created_at, false)?;
        let wrote_adapter = adapter.is_some();
        changes.adapters.extend(adapter);
        let seen = Seen {
            bytes: &seen,
            parts: parts.as_ref(),
        };
        if let Some(mut linked) = self.link_in_place(actor, &fkey, link, seen)? {
            let wrote = wrote_adapter || linked.created;
            changes.feedback.append(&mut linked.changes.feedback);
            changes.links.append(&mut linked.changes.links);
            changes.linked_only = linked.changes.linked_only;
            linked.changes = changes;
            return Ok((linked, wrote));
        }
        let mut existing = None;
        let updated = self.update_record(
            actor,
            &link.feedback_id,
            link.created_at,
            &mut |cur: &FeedbackRecord| {
                let change = rules::add_link(cur, link);
                if change.is_none() {
                    existing = Some(cur.clone());
                }
                Ok(change)
            },
        )?;
        let linked = match (updated, existing) {
            (Some(next), _) => {
                // The edge as stored: an erased item's edge keeps no metadata
                // (`rules::add_link`), so neither the graph nor the answer may show it.
                let stored = next
                    .links
                    .iter()
                    .find(|l| l.adapter_id == link.adapter_id)
                    .cloned()
                    .unwrap_or_else(|| link.clone());
                changes.links.push(stored.clone());
                changes.feedback.push(next);
                Linked {
                    link: stored,
                    created: true,
                    changes,
                }
            }
            (None, Some(record)) => {
                let mut existed = Self::existed(record, link)?;
                changes.feedback.append(&mut existed.changes.feedback);
                changes.links.append(&mut existed.changes.links);
                existed.changes = changes;
                existed
            }
            (None, None) => {
                return Err(StoreError::Conflict("link vanished while reading".into()));
            }
        };
        let wrote = wrote_adapter || linked.created;
        Ok((linked, wrote))
    }

    /// If the stored record `bytes` (under `key`, read in place as `parts` when in the
    /// current format) has an edge to `link`'s adapter already,
    /// what a link answers: that edge as first made, and for the graph the edge and the
    /// item as read. The graph may not show them yet (the request that made the edge can
    /// still be waiting for its sync); applying them again is harmless (graph changes are
    /// idempotent), and then the client that hears "it existed" sees the edge at once.
    fn existing_link(
        &self,
        key: &[u8],
        bytes: &[u8],
        parts: Option<&link_append::RecordParts<'_>>,
        link: &FeedbackLink,
    ) -> Result<Option<Linked>, StoreError> {
        if let Some(parts) = parts
            && !parts.has_link(&link.adapter_id)
        {
            return Ok(None);
        }
        let record: FeedbackRecord = decode("feedback", key, bytes)?;
        if !record.links.iter().any(|l| l.adapter_id == link.adapter_id) {
            return Ok(None);
        }
        Self::existed(record, link).map(Some)
    }

    /// The answer to a link whose edge `record` has already.
    fn existed(record: FeedbackRecord, link: &FeedbackLink) -> Result<Linked, StoreError> {
        let Some(edge) = record
            .links
            .iter()
            .find(|l| l.adapter_id == link.adapter_id)
            .cloned()
        else {
            return Err(StoreError::Conflict("link vanished while reading".into()));
        };
        let record = FeedbackRecord {
            links: vec![edge.clone()],
            ..record
        };
        Ok(Linked {
            link: edge.clone(),
            created: false,
            changes: ChangeSet {
                feedback: vec![record],
                adapters: Vec::new(),
                links: vec![edge],
                linked_only: false,
            },
        })
    }

    /// Adds `link` to the record under `key` in place (see [`link_append`]), under the
    /// record's stripe lock: the history entry, then the record with the edge appended.
    /// `Ok(None)` when the record has to take the decoding path instead (see
    /// [`SledStore::link_record`]); the caller then runs it, after this released the lock.
    fn link_in_place(
        &self,
        actor: &Actor,
        key: &[u8],
        link: &FeedbackLink,
        seen: Seen<'_, '_>,
    ) -> Result<Option<Linked>, StoreError> {
        if self
            .hooks
            .read()
            .get(&actor.org)
            .is_some_and(|list| !list.is_empty())
        {
            return Ok(None);
        }
        let corrupt = |source| StoreError::Corrupt {
            tree: "feedback",
            key: keys::display(key),
            source,
        };
        let _guard = self.stripes[stripe_of(&actor.org, &link.feedback_id)].lock();
        let Some(bytes) = self.t().feedback.get(key)? else {
            return Err(StoreError::NotFound {
                kind: "feedback",
                id: link.feedback_id.clone(),
            });
        };
        let reread;
        let parts = match seen.parts {
            // The same bytes as read before the lock: the same parts.
            Some(parts) if *bytes == *seen.bytes => parts,
            _ => {
                reread = link_append::RecordParts::read(&bytes).map_err(corrupt)?;
                match &reread {
                    Some(parts) => parts,
                    None => return Ok(None),
                }
            }
        };
        if parts.has_link(&link.adapter_id) {
            // Made by another request since this one looked.
            let record: FeedbackRecord = decode("feedback", key, &bytes)?;
            return Self::existed(record, link).map(Some);
        }
        if parts.head.version == 1 {
            // The first update writes out the item's compact creation entry, which needs
            // the whole item.
            return Ok(None);
        }
        let (value, item_at) = parts.with_link(link, link.created_at).map_err(corrupt)?;
        let next =
            link_append::item_for_graph(&value, item_at, parts.lease, link).map_err(corrupt)?;
        if next.feedback.is_erased() && !link.metadata.0.is_empty() {
            // An erased item keeps no link metadata (`rules::add_link` drops it).
            return Ok(None);
        }
        let entry = HistoryVersion {
            version: next.feedback.version,
            at: link.created_at,
            actor: actor.user.clone(),
            action: ChangeAction::Link,
            changes: rules::link_changes(link),
        };
        self.put_history(&actor.org, keys::KIND_FEEDBACK, &link.feedback_id, &entry)?;
        // No webhook of this org listens (checked above), so there is no event to add.
        self.t().feedback.insert(key, value)?;
        Ok(Some(Linked {
            link: link.clone(),
            created: true,
            changes: ChangeSet {
                feedback: vec![next],
                adapters: Vec::new(),
                links: vec![link.clone()],
                // The item is the stored one with the edge appended and its version and
                // `updated_at` moved (`RecordParts::with_link`), nothing else.
                linked_only: true,
            },
        }))
    }

    /// Writes an adapter record after its history entry (the record is the commit point).
    fn put_adapter(
        &self,
        actor: &Actor,
        adapter: &Adapter,
        entry: &HistoryVersion,
    ) -> Result<(), StoreError> {
        let key = keys::record(&actor.org, &adapter.id);
        self.put_history(&actor.org, keys::KIND_ADAPTER, &adapter.id, entry)?;
        self.emit(
            actor,
            keys::KIND_ADAPTER,
            &adapter.id,
            entry,
            Changed::Adapter(adapter),
        )?;
        self.t().adapters.insert(key.as_slice(), encode(adapter)?)?;
        self.known_adapters.write().insert(key);
        Ok(())
    }

    /// The first half of a bulk load of a feedback item that was checked beforehand: its
    /// history version 1 (`Import`). A bulk load writes these while it is still reading
    /// its file, then the records with [`SledStore::load_records`]; until a record is written its
    /// history entry is inert, like the history written ahead of any record.
    pub fn load_history(&self, actor: &Actor, f: &Feedback) -> Result<(), StoreError> {
        let _write = self.begin_write()?;
        let entry = import_entry(actor, f.version, f.created_at);
        self.put_history(&actor.org, keys::KIND_FEEDBACK, &f.id, &entry)
    }

    /// Takes back the history entries [`SledStore::load_history`] wrote for a load that failed
    /// before writing its records.
    pub fn unload_history<'a>(
        &self,
        org: &str,
        ids: impl Iterator<Item = &'a str>,
    ) -> Result<(), StoreError> {
        let _write = self.begin_write()?;
        for id in ids {
            self.t()
                .history
                .remove(keys::history(org, keys::KIND_FEEDBACK, id, 1))?;
        }
        Ok(())
    }

    /// Takes back a bulk load that failed while writing its records: removes the records
    /// (the commit points) first, then their history entries. Best effort; the first
    /// error is returned.
    pub fn unload(
        &self,
        org: &str,
        adapters: &[Adapter],
        records: &[FeedbackRecord],
    ) -> Result<(), StoreError> {
        let _write = self.begin_write()?;
        for r in records {
            self.t()
                .feedback
                .remove(keys::record(org, &r.feedback.id))?;
        }
        {
            // Under the adapter lock, and out of sled before out of the cache: a submit
            // racing this cannot find the adapter in sled and remember it again.
            let _guard = self.adapter_lock.lock();
            for a in adapters {
                let key = keys::record(org, &a.id);
                self.t().adapters.remove(key.as_slice())?;
                self.known_adapters.write().remove(&key);
            }
        }
        self.unload_history(org, records.iter().map(|r| r.feedback.id.as_str()))?;
        for a in adapters {
            self.t().history.remove(keys::history(
                org,
                keys::KIND_ADAPTER,
                &a.id,
                a.record_version,
            ))?;
        }
        Ok(())
    }

    /// The second half of a bulk load of records that were checked beforehand (no
    /// existence or lineage checks here): adapters with their history version 1, then the
    /// feedback records, whose history entries [`SledStore::load_history`] wrote already.
    /// Records go in key order, whatever the order of `records`, which keeps sled's inserts
    /// at the right edge of its tree. Nothing is durable until [`SledStore::make_durable`].
    /// `progress` gets the number of records written so far.
    pub fn load_records(
        &self,
        actor: &Actor,
        adapters: &[Adapter],
        records: &[FeedbackRecord],
        progress: &mut dyn FnMut(u64),
    ) -> Result<(), StoreError> {
        let _write = self.begin_write()?;
        for a in adapters {
            let entry = import_entry(actor, a.record_version, a.created_at);
            self.put_history(&actor.org, keys::KIND_ADAPTER, &a.id, &entry)?;
            self.t()
                .adapters
                .insert(keys::record(&actor.org, &a.id), encode(a)?)?;
        }
        let mut order: Vec<usize> = (0..records.len()).collect();
        order.sort_unstable_by(|&x, &y| records[x].feedback.id.cmp(&records[y].feedback.id));
        for (n, &i) in order.iter().enumerate() {
            let r = &records[i];
            self.t()
                .feedback
                .insert(keys::record(&actor.org, &r.feedback.id), encode(r)?)?;
            if n % 4096 == 4095 {
                progress(n as u64 + 1);
            }
        }
        progress(records.len() as u64);
        Ok(())
    }

    /// Every adapter of one org.
    pub fn adapters_of(&self, org: &str) -> Result<Vec<Adapter>, StoreError> {
        self.t()
            .adapters
            .scan_prefix(keys::record(org, ""))
            .map(|kv| {
                let (k, v) = kv?;
                decode("adapters", &k, &v)
            })
            .collect()
    }

    /// Every feedback record of one org, in id order.
    pub fn records_of(
        &self,
        org: &str,
    ) -> impl Iterator<Item = Result<FeedbackRecord, StoreError>> + '_ {
        self.t()
            .feedback
            .scan_prefix(keys::record(org, ""))
            .map(|kv| {
                let (k, v) = kv?;
                decode("feedback", &k, &v)
            })
    }

    /// The next batch id of `org`: 1, 2, 3... per org. The counter lives in `meta` and is
    /// written before the batch that uses it, so a recovered batch always has its id
    /// counted and ids are never reused.
    pub fn new_batch_id(&self, org: &str) -> Result<u64, StoreError> {
        let _write = self.begin_write()?;
        let mut key = b"next_batch_id\0".to_vec();
        key.extend_from_slice(org.as_bytes());
        let next = self.t().meta.update_and_fetch(&key, |old| {
            let n = old
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map_or(0, u64::from_be_bytes);
            Some(n.saturating_add(1).to_be_bytes().to_vec())
        })?;
        next.and_then(|b| <[u8; 8]>::try_from(b.as_ref()).ok())
            .map(u64::from_be_bytes)
            .ok_or_else(|| StoreError::Corrupt {
                tree: "meta",
                key: "next_batch_id".into(),
                source: CodecError::Empty,
            })
    }

    /// Writes a batch: its history entry first, then the record (the commit point). The
    /// caller sets `batch.version` to one more than the stored version and serialises
    /// writers of one org's batches.
    pub fn put_batch(
        &self,
        actor: &Actor,
        batch: &Batch,
        action: ChangeAction,
        changes: Vec<FieldChange>,
        sync: SyncMode,
    ) -> Result<(), StoreError> {
        let write = self.begin_write()?;
        let entry = HistoryVersion {
            version: batch.version,
            at: crate::model::now_millis(),
            actor: actor.user.clone(),
            action,
            changes,
        };
        let batch_id = batch.id.to_string();
        self.put_history(&actor.org, keys::KIND_BATCH, &batch_id, &entry)?;
        self.emit(
            actor,
            keys::KIND_BATCH,
            &batch_id,
            &entry,
            Changed::Batch(batch),
        )?;
        self.t()
            .batches
            .insert(keys::batch(&actor.org, batch.id), encode(batch)?)?;
        drop(write);
        self.finish(sync)
    }

    /// One batch of `org`, if present.
    pub fn get_batch(&self, org: &str, id: u64) -> Result<Option<Batch>, StoreError> {
        let key = keys::batch(org, id);
        match self.t().batches.get(&key)? {
            Some(v) => decode("batches", &key, &v).map(Some),
            None => Ok(None),
        }
    }

    /// Every committed version of a batch's history, oldest first.
    pub fn batch_history(&self, org: &str, id: u64) -> Result<Vec<HistoryVersion>, StoreError> {
        let current = self.get_batch(org, id)?.map_or(0, |b| b.version);
        self.history_of(org, keys::KIND_BATCH, &id.to_string(), current)
    }

    /// Every batch of `org`, by id.
    pub fn batches_of(&self, org: &str) -> Result<Vec<Batch>, StoreError> {
        self.t()
            .batches
            .scan_prefix(keys::record(org, ""))
            .map(|kv| {
                let (k, v) = kv?;
                decode("batches", &k, &v)
            })
            .collect()
    }

    /// Up to `limit` batches of `org`, newest (highest id) first, with ids below `before`
    /// if given: one page of the org's batches, read by a reverse range scan.
    pub fn batches_page(
        &self,
        org: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Batch>, StoreError> {
        let start = keys::batch(org, 0);
        let range = match before {
            Some(id) => self.t().batches.range(start..keys::batch(org, id)),
            None => self.t().batches.range(start..=keys::batch(org, u64::MAX)),
        };
        range
            .rev()
            .take(limit)
            .map(|kv| {
                let (k, v) = kv?;
                decode("batches", &k, &v)
            })
            .collect()
    }

    /// One feedback record (item and edges) of `org`, if present.
    pub fn get_record(&self, org: &str, id: &str) -> Result<Option<FeedbackRecord>, StoreError> {
        self.read_record(&keys::record(org, id))
    }

    /// One feedback item of `org`, if present.
    pub fn get_feedback(&self, org: &str, id: &str) -> Result<Option<Feedback>, StoreError> {
        Ok(self.get_record(org, id)?.map(|r| r.feedback))
    }

    /// One score config of `org`, if present.
    pub fn get_score_config(
        &self,
        org: &str,
        name: &str,
    ) -> Result<Option<ScoreConfig>, StoreError> {
        let key = keys::record(org, name);
        match self.t().score_configs.get(&key)? {
            Some(v) => decode("score_configs", &key, &v).map(Some),
            None => Ok(None),
        }
    }

    /// Every score config of `org`, by name.
    pub fn score_configs_of(&self, org: &str) -> Result<Vec<ScoreConfig>, StoreError> {
        self.t()
            .score_configs
            .scan_prefix(keys::record(org, ""))
            .map(|kv| {
                let (k, v) = kv?;
                decode("score_configs", &k, &v)
            })
            .collect()
    }

    /// Every committed version of a score config's history, oldest first.
    pub fn score_config_history(
        &self,
        org: &str,
        name: &str,
    ) -> Result<Vec<HistoryVersion>, StoreError> {
        let current = self.get_score_config(org, name)?.map_or(0, |c| c.version);
        self.history_of(org, keys::KIND_SCORE_CONFIG, name, current)
    }

    /// Writes a score config after its history entry (the record is the commit point).
    fn put_score_config(
        &self,
        actor: &Actor,
        config: &ScoreConfig,
        entry: &HistoryVersion,
    ) -> Result<(), StoreError> {
        let key = keys::record(&actor.org, &config.name);
        self.put_history(&actor.org, keys::KIND_SCORE_CONFIG, &config.name, entry)?;
        self.t()
            .score_configs
            .insert(key.as_slice(), encode(config)?)?;
        Ok(())
    }

    /// One adapter of `org`, if present.
    pub fn get_adapter(&self, org: &str, id: &str) -> Result<Option<Adapter>, StoreError> {
        let key = keys::record(org, id);
        match self.t().adapters.get(&key)? {
            Some(v) => decode("adapters", &key, &v).map(Some),
            None => Ok(None),
        }
    }

    /// The FEEDBACK_FOR edges leaving one feedback item (empty if it does not exist).
    pub fn links_of(&self, org: &str, feedback_id: &str) -> Result<Vec<FeedbackLink>, StoreError> {
        Ok(self
            .get_record(org, feedback_id)?
            .map(|r| r.links)
            .unwrap_or_default())
    }

    /// Every committed version of a feedback item's history, oldest first (empty if the
    /// item does not exist).
    ///
    /// A new item's creation entry is stored without its field changes, which would only
    /// repeat the record (half the bytes of a submit): while the item is at version 1 they
    /// are read off the record here, and its first update writes them out in full. Items
    /// loaded from a dump (whose `import` entry never listed fields) get the same
    /// treatment from this version on; one loaded and then updated by an earlier build
    /// keeps an `import` entry without fields.
    pub fn feedback_history(&self, org: &str, id: &str) -> Result<Vec<HistoryVersion>, StoreError> {
        let Some(current) = self.get_feedback(org, id)? else {
            return Ok(Vec::new());
        };
        let mut entries = self.history_of(org, keys::KIND_FEEDBACK, id, current.version)?;
        rules::expand_creation(&current, &mut entries);
        Ok(entries)
    }

    /// The version numbers of a feedback item's committed history up to `up_to` (the
    /// record's version, which the caller has read), oldest first. For checks: cheaper
    /// than [`SledStore::feedback_history`], which reads the record and renders the creation.
    pub fn feedback_history_versions(
        &self,
        org: &str,
        id: &str,
        up_to: u64,
    ) -> Result<Vec<u64>, StoreError> {
        Ok(self
            .history_of(org, keys::KIND_FEEDBACK, id, up_to)?
            .iter()
            .map(|h| h.version)
            .collect())
    }

    /// How many history entries the store holds, committed or not, over every org (for
    /// checks: a failed bulk load must leave none of its own behind).
    pub fn history_entries(&self) -> usize {
        self.t().history.len()
    }

    /// Every committed version of an adapter's history, oldest first.
    pub fn adapter_history(&self, org: &str, id: &str) -> Result<Vec<HistoryVersion>, StoreError> {
        let current = self.get_adapter(org, id)?.map_or(0, |a| a.record_version);
        self.history_of(org, keys::KIND_ADAPTER, id, current)
    }

    fn history_of(
        &self,
        org: &str,
        kind: u8,
        id: &str,
        up_to: u64,
    ) -> Result<Vec<HistoryVersion>, StoreError> {
        let mut out = Vec::new();
        for kv in self
            .t()
            .history
            .scan_prefix(keys::history_prefix(org, kind, id))
        {
            let (k, v) = kv?;
            let entry: HistoryVersion = decode("history", &k, &v)?;
            // Entries past the record's version belong to a write that never committed.
            if entry.version > up_to {
                break;
            }
            out.push(entry);
        }
        Ok(out)
    }

    /// Every feedback record of every org, in key order (org, then id).
    pub fn scan_records(&self) -> impl Iterator<Item = Result<FeedbackRecord, StoreError>> + '_ {
        scan(&self.t().feedback, "feedback")
    }

    /// Calls `f` with the org of its key and the graph-relevant prefix of every feedback
    /// record of every org, in key order, read in place from the stored bytes (no text
    /// decoded, no allocation per field). Used to build the graph at start-up. The org is
    /// the key's, as on every other path; `Service::verify` reports a record whose body
    /// names another.
    ///
    /// sled's iteration (page reads, node decoding, its cache) runs on a thread of its own
    /// a few batches ahead of `f`, which runs on the calling thread: at start-up this and
    /// the graph's build share the machine's cores. If that thread cannot be started, the
    /// scan runs here.
    pub fn for_each_record_head(
        &self,
        mut f: impl FnMut(&str, RecordHeadRef<'_>),
    ) -> Result<(), StoreError> {
        let tree = self.t().feedback.clone();
        std::thread::scope(|scope| {
            let (tx, rx) = std::sync::mpsc::sync_channel::<
                Result<Vec<(sled::IVec, sled::IVec)>, sled::Error>,
            >(SCAN_AHEAD_BATCHES);
            let ahead = std::thread::Builder::new()
                .name("feedgraph-scan".into())
                .spawn_scoped(scope, move || {
                    let mut batch = Vec::with_capacity(SCAN_BATCH);
                    for kv in tree.iter() {
                        match kv {
                            Ok(kv) => batch.push(kv),
                            Err(e) => {
                                // The reader stops at the error, as a scan here would.
                                let _ = tx.send(Err(e));
                                return;
                            }
                        }
                        if batch.len() == SCAN_BATCH {
                            let full =
                                std::mem::replace(&mut batch, Vec::with_capacity(SCAN_BATCH));
                            // Fails only when the caller stopped reading (an error): stop too.
                            if tx.send(Ok(full)).is_err() {
                                return;
                            }
                        }
                    }
                    if !batch.is_empty() {
                        let _ = tx.send(Ok(batch));
                    }
                });
            match ahead {
                Ok(_) => {
                    // Returning early drops the receiver, which stops the thread.
                    for batch in rx {
                        for (k, v) in batch? {
                            record_head(&k, &v, &mut f)?;
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not start the scan thread; scanning here");
                    for kv in self.t().feedback.iter() {
                        let (k, v) = kv?;
                        record_head(&k, &v, &mut f)?;
                    }
                }
            }
            Ok(())
        })
    }

    /// Every feedback record of every org with the org of its key, in key order.
    pub fn scan_records_with_org(
        &self,
    ) -> impl Iterator<Item = Result<(String, FeedbackRecord), StoreError>> + '_ {
        self.t().feedback.iter().map(|kv| {
            let (k, v) = kv?;
            let org = key_org("feedback", &k)?.to_owned();
            Ok((org, decode("feedback", &k, &v)?))
        })
    }

    /// Every feedback item of every org, in key order.
    pub fn scan_feedback(&self) -> impl Iterator<Item = Result<Feedback, StoreError>> + '_ {
        self.scan_records().map(|r| r.map(|r| r.feedback))
    }

    /// Every adapter of every org.
    pub fn scan_adapters(&self) -> impl Iterator<Item = Result<Adapter, StoreError>> + '_ {
        scan(&self.t().adapters, "adapters")
    }

    /// The org ids present, from the org prefix of feedback, adapter and batch keys.
    pub fn orgs(&self) -> Result<Vec<String>, StoreError> {
        let mut out = std::collections::BTreeSet::new();
        for tree in [&self.t().feedback, &self.t().adapters, &self.t().batches] {
            let mut from: Vec<u8> = Vec::new();
            // Skip from one org to the next instead of walking every key.
            while let Some(kv) = tree.range(from.clone()..).next() {
                let (k, _) = kv?;
                let Some((org, _)) = keys::split_org(&k) else {
                    break;
                };
                out.insert(String::from_utf8_lossy(org).into_owned());
                from = org.to_vec();
                from.push(keys::SEP + 1);
            }
        }
        Ok(out.into_iter().collect())
    }

    /// Test hook (unit tests and the `testing` feature only): overwrites a stored
    /// feedback value with raw bytes, durably.
    #[cfg(any(test, feature = "testing"))]
    pub fn corrupt_feedback_for_tests(
        &self,
        org: &str,
        id: &str,
        bytes: &[u8],
    ) -> Result<(), StoreError> {
        {
            let _write = self.begin_write()?;
            self.t().feedback.insert(keys::record(org, id), bytes)?;
        }
        self.make_durable()
    }

    /// Test hook (unit tests and the `testing` feature only): how many sync tickets writers
    /// and waiting readers have taken so far.
    #[cfg(any(test, feature = "testing"))]
    pub fn tickets_taken_for_tests(&self) -> u64 {
        self.syncer.tickets_taken()
    }

    /// Test hook (unit tests and the `testing` feature only): moves the clock that judges
    /// idempotency expiry forward by `ms`.
    #[cfg(any(test, feature = "testing"))]
    pub fn advance_clock_for_tests(&self, ms: Millis) {
        self.clock_skew_ms
            .fetch_add(ms, std::sync::atomic::Ordering::Relaxed);
    }
}

/// One [`Backend::write`] on sled. Each step writes at once under its record's lock, the
/// history entry before the record, so each record is its own commit point; the write
/// ends with one group-committed sync.
struct SledTx<'s> {
    store: &'s SledStore,
    actor: &'s Actor,
    changes: ChangeSet,
    /// The adapter lock, once [`WriteTx::lock_adapters`] took it.
    adapters: Option<parking_lot::MutexGuard<'s, ()>>,
    /// Whether any step wrote (then the write ends with a sync).
    wrote: bool,
}

impl SledTx<'_> {
    fn absorb(&mut self, cs: ChangeSet) {
        self.changes.feedback.extend(cs.feedback);
        self.changes.adapters.extend(cs.adapters);
        self.changes.links.extend(cs.links);
    }
}

impl WriteTx for SledTx<'_> {
    fn actor(&self) -> &Actor {
        self.actor
    }

    fn insert_feedback(&mut self, fb: &Feedback, action: ChangeAction) -> Result<(), StoreError> {
        let inserted = {
            let _w = self.store.begin_write()?;
            self.wrote = true;
            self.store.insert_record(
                self.actor,
                fb,
                IdSource::Given,
                action,
                None,
                self.adapters.is_some(),
            )?
        };
        match inserted {
            Inserted::New(cs) => {
                self.absorb(cs);
                Ok(())
            }
            Inserted::Replay(existing) => Err(StoreError::Exists {
                kind: "feedback",
                id: existing.id,
            }),
        }
    }

    fn get_record(&mut self, id: &str) -> Result<Option<FeedbackRecord>, StoreError> {
        self.store.get_record(&self.actor.org, id)
    }

    fn update_feedback(
        &mut self,
        id: &str,
        at: Millis,
        change: ChangeFn<'_>,
    ) -> Result<Option<FeedbackRecord>, StoreError> {
        let mut before: Vec<FeedbackLink> = Vec::new();
        let updated = {
            let _w = self.store.begin_write()?;
            self.store
                .update_record(self.actor, id, at, &mut |cur: &FeedbackRecord| {
                    before.clone_from(&cur.links);
                    change(cur)
                })?
        };
        if let Some(next) = &updated {
            self.wrote = true;
            self.changes.push_update(&before, next);
        }
        Ok(updated)
    }

    fn ensure_adapter(&mut self, id: &str, at: Millis) -> Result<(), StoreError> {
        let _w = self.store.begin_write()?;
        let created = self
            .store
            .ensure_adapter(self.actor, id, at, self.adapters.is_some())?;
        if let Some(a) = created {
            self.wrote = true;
            self.changes.adapters.push(a);
        }
        Ok(())
    }

    fn lock_adapters(&mut self) -> Result<(), StoreError> {
        if self.adapters.is_none() {
            self.adapters = Some(self.store.adapter_lock.lock());
        }
        Ok(())
    }

    fn get_adapter(&mut self, id: &str) -> Result<Option<Adapter>, StoreError> {
        self.store.get_adapter(&self.actor.org, id)
    }

    fn put_adapter(&mut self, adapter: &Adapter, entry: &HistoryVersion) -> Result<(), StoreError> {
        let _w = self.store.begin_write()?;
        self.wrote = true;
        self.store.put_adapter(self.actor, adapter, entry)?;
        self.changes.adapters.push(adapter.clone());
        Ok(())
    }

    fn get_score_config(&mut self, name: &str) -> Result<Option<ScoreConfig>, StoreError> {
        self.store.get_score_config(&self.actor.org, name)
    }

    fn put_score_config(
        &mut self,
        config: &ScoreConfig,
        entry: &HistoryVersion,
    ) -> Result<(), StoreError> {
        let _w = self.store.begin_write()?;
        self.wrote = true;
        self.store.put_score_config(self.actor, config, entry)
    }

    fn next_batch_id(&mut self) -> Result<u64, StoreError> {
        self.wrote = true;
        self.store.new_batch_id(&self.actor.org)
    }

    fn put_batch(
        &mut self,
        batch: &Batch,
        action: ChangeAction,
        changes: Vec<FieldChange>,
    ) -> Result<(), StoreError> {
        self.wrote = true;
        self.store
            .put_batch(self.actor, batch, action, changes, SyncMode::Defer)
    }

    fn get_batch_for_update(&mut self, id: u64) -> Result<Option<Batch>, StoreError> {
        // One process writes a sled store, and the service's claim lock serialises an
        // org's batch writes: a plain read holds.
        self.store.get_batch(&self.actor.org, id)
    }

    fn rewrite_feedback_history(
        &mut self,
        id: &str,
        edit: &mut dyn FnMut(&mut HistoryVersion) -> bool,
    ) -> Result<(), StoreError> {
        self.rewrite_history(id, edit)
    }

    fn put_erasure(&mut self, record: &ErasureRecord) -> Result<(), StoreError> {
        let _w = self.store.begin_write()?;
        self.wrote = true;
        self.store
            .t()
            .erasures
            .insert(keys::record(&self.actor.org, &record.id), encode(record)?)?;
        Ok(())
    }
}

impl SledTx<'_> {
    /// The body of [`WriteTx::rewrite_feedback_history`] on sled: under the item's stripe
    /// lock, each changed version is written back where it was.
    fn rewrite_history(
        &mut self,
        id: &str,
        edit: &mut dyn FnMut(&mut HistoryVersion) -> bool,
    ) -> Result<(), StoreError> {
        let org = &self.actor.org;
        let _w = self.store.begin_write()?;
        let _guard = self.store.stripes[stripe_of(org, id)].lock();
        let prefix = keys::history_prefix(org, keys::KIND_FEEDBACK, id);
        for kv in self.store.t().history.scan_prefix(prefix) {
            let (k, v) = kv?;
            let mut entry: HistoryVersion = decode("history", &k, &v)?;
            if edit(&mut entry) {
                self.store.t().history.insert(k, encode(&entry)?)?;
                self.wrote = true;
            }
        }
        Ok(())
    }
}

/// Decodes the erasure records of one scan that `keep` accepts, at most `limit`.
fn erasures_in(
    iter: impl Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>,
    keep: &mut dyn FnMut(&ErasureRecord) -> bool,
    limit: usize,
) -> Result<Vec<ErasureRecord>, StoreError> {
    let mut out = Vec::new();
    for kv in iter {
        if out.len() >= limit {
            break;
        }
        let (k, v) = kv?;
        let rec: ErasureRecord = decode("erasures", &k, &v)?;
        if keep(&rec) {
            out.push(rec);
        }
    }
    Ok(out)
}

impl Backend for SledStore {
    fn name(&self) -> &'static str {
        "sled"
    }

    fn submit(
        self: std::sync::Arc<Self>,
        actor: Actor,
        fb: Feedback,
        idempotency: Option<IdempotencyKey>,
    ) -> BoxFuture<'static, Result<Inserted, StoreError>> {
        Box::pin(async move {
            // The sled writes take microseconds and run on the caller's thread; the wait
            // for the group commit is a future, so it holds no thread.
            let inserted = self.insert_feedback_once(
                &actor,
                &fb,
                IdSource::Minted,
                ChangeAction::Submit,
                idempotency.as_ref(),
                SyncMode::Defer,
            )?;
            // Taken after the write (or after reading a replayed original, which may
            // itself still wait for its sync): the ticket's sync covers both.
            let ticket = self.durability_ticket()?;
            self.durable(ticket).await?;
            Ok(inserted)
        })
    }

    fn submit_many(
        self: std::sync::Arc<Self>,
        actor: Actor,
        items: Vec<(Feedback, Option<IdempotencyKey>)>,
    ) -> BoxFuture<'static, Result<BatchWritten, StoreError>> {
        Box::pin(async move {
            // A thousand sled writes take milliseconds: off the runtime's threads.
            let store = std::sync::Arc::clone(&self);
            let written = tokio::task::spawn_blocking(move || {
                let mut outcomes = Vec::with_capacity(items.len());
                let mut stopped = None;
                for (fb, key) in &items {
                    let one = store.insert_feedback_once(
                        &actor,
                        fb,
                        IdSource::Minted,
                        ChangeAction::Submit,
                        key.as_ref(),
                        SyncMode::Defer,
                    );
                    match one {
                        Err(e @ (StoreError::Conflict(_) | StoreError::Exists { .. })) => {
                            outcomes.push(Err(e));
                        }
                        Err(e) => {
                            stopped = Some(e);
                            break;
                        }
                        Ok(inserted) => outcomes.push(Ok(inserted)),
                    }
                }
                BatchWritten { outcomes, stopped }
            })
            .await
            .map_err(|e| StoreError::Backend(format!("the batch write task failed: {e}")))?;
            // One sync covers every write above (and every replayed original read).
            let ticket = self.durability_ticket()?;
            self.durable(ticket).await?;
            Ok(written)
        })
    }

    fn submit_blocking(
        &self,
        actor: &Actor,
        fb: &Feedback,
        idempotency: Option<&IdempotencyKey>,
    ) -> Result<Inserted, StoreError> {
        let inserted = self.insert_feedback_once(
            actor,
            fb,
            IdSource::Minted,
            ChangeAction::Submit,
            idempotency,
            SyncMode::Defer,
        )?;
        // As in `submit`: the sync after the write (or the replayed original's read).
        self.make_durable()?;
        Ok(inserted)
    }

    fn link(
        self: std::sync::Arc<Self>,
        actor: Actor,
        link: FeedbackLink,
    ) -> BoxFuture<'static, Result<Linked, StoreError>> {
        Box::pin(async move {
            // As in `submit`: the sled writes run on the caller's thread, and the wait for
            // the group commit they join (with the submits) is a future.
            let (linked, wrote) = self.link_record(&actor, &link)?;
            if wrote {
                let ticket = self.durability_ticket()?;
                self.durable(ticket).await?;
            } else if let Some(ticket) = self.syncer.read_ticket()? {
                // An edge another request made may not be durable yet: answering "it
                // existed" before it is would acknowledge a write a crash can lose.
                self.durable(ticket).await?;
            }
            Ok(linked)
        })
    }

    fn link_blocking(&self, actor: &Actor, link: &FeedbackLink) -> Result<Linked, StoreError> {
        let (linked, wrote) = self.link_record(actor, link)?;
        if wrote {
            self.make_durable()?;
        } else {
            self.settle_reads()?;
        }
        Ok(linked)
    }

    fn write(
        &self,
        actor: &Actor,
        work: &mut dyn FnMut(&mut dyn WriteTx) -> Result<(), StoreError>,
    ) -> Result<ChangeSet, StoreError> {
        self.syncer.check_writable()?;
        let mut tx = SledTx {
            store: self,
            actor,
            changes: ChangeSet::default(),
            adapters: None,
            wrote: false,
        };
        let done = work(&mut tx);
        let SledTx {
            changes,
            wrote,
            adapters,
            ..
        } = tx;
        // Never hold the adapter lock across the sync.
        drop(adapters);
        // Each step that was written is a commit point of its own, so even a failed write
        // makes what it wrote durable before it reports.
        let synced = if wrote { self.make_durable() } else { Ok(()) };
        done?;
        synced?;
        Ok(changes)
    }

    fn load(
        &self,
        actor: &Actor,
        adapters: &[Adapter],
        records: &[FeedbackRecord],
        progress: &mut dyn FnMut(u64),
    ) -> Result<(), (StoreError, bool)> {
        let written = (|| {
            for r in records {
                self.load_history(actor, &r.feedback)?;
            }
            self.load_records(actor, adapters, records, progress)
        })();
        if let Err(e) = written {
            // Take back what was written: records first (they are the commit points).
            let undone = self.unload(&actor.org, adapters, records);
            return Err((e, undone.is_err()));
        }
        self.make_durable().map_err(|e| (e, true))
    }

    fn orgs(&self) -> Result<Vec<String>, StoreError> {
        SledStore::orgs(self)
    }

    fn for_each_record_with_history(
        &self,
        org: &str,
        f: &mut dyn FnMut(FeedbackRecord, Vec<HistoryVersion>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        SledStore::for_each_record_with_history(self, org, f)
    }

    fn for_each_idempotency(
        &self,
        org: &str,
        f: &mut dyn FnMut(&str, &str, IdempotencyRecord) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        SledStore::for_each_idempotency(self, org, f)
    }

    fn restore(&self, org: &str, entries: &[super::backup::BackupEntry]) -> Result<(), StoreError> {
        SledStore::restore(self, org, entries)
    }

    fn get_record(&self, org: &str, id: &str) -> Result<Option<FeedbackRecord>, StoreError> {
        self.durable_read(|s| s.read_record(&keys::record(org, id)))
    }

    fn get_many(&self, org: &str, ids: &[&str]) -> Result<Vec<Option<Feedback>>, StoreError> {
        self.durable_read(|s| ids.iter().map(|id| s.get_feedback(org, id)).collect())
    }

    fn for_each_feedback_view(
        &self,
        org: &str,
        ids: &[&str],
        f: &mut dyn FnMut(Option<&FeedbackView<'_>>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        self.durable_read(|s| {
            let values = page_read::read_many(&s.t().feedback, org, ids)?;
            let mut key = Vec::new();
            for (id, value) in ids.iter().zip(values) {
                match value {
                    Some(bytes) => {
                        keys::record_into(&mut key, org, id);
                        s.with_feedback_view(&key, &bytes, &mut *f)?
                    }
                    None => f(None)?,
                }
            }
            Ok(())
        })
    }

    fn get_adapter(&self, org: &str, id: &str) -> Result<Option<Adapter>, StoreError> {
        self.durable_read(|s| s.get_adapter(org, id))
    }

    fn adapters_of(&self, org: &str) -> Result<Vec<Adapter>, StoreError> {
        self.durable_read(|s| s.adapters_of(org))
    }

    fn for_each_record_of(
        &self,
        org: &str,
        f: &mut dyn FnMut(FeedbackRecord) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        self.settle_reads()?;
        for r in self.records_of(org) {
            f(r?)?;
        }
        Ok(())
    }

    fn feedback_history(&self, org: &str, id: &str) -> Result<Vec<HistoryVersion>, StoreError> {
        self.durable_read(|s| s.feedback_history(org, id))
    }

    fn adapter_history(&self, org: &str, id: &str) -> Result<Vec<HistoryVersion>, StoreError> {
        self.durable_read(|s| s.adapter_history(org, id))
    }

    fn batch_history(&self, org: &str, id: u64) -> Result<Vec<HistoryVersion>, StoreError> {
        self.durable_read(|s| s.batch_history(org, id))
    }

    fn get_batch(&self, org: &str, id: u64) -> Result<Option<Batch>, StoreError> {
        self.durable_read(|s| s.get_batch(org, id))
    }

    fn batches_of(&self, org: &str) -> Result<Vec<Batch>, StoreError> {
        self.durable_read(|s| s.batches_of(org))
    }

    fn batches_page(
        &self,
        org: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Batch>, StoreError> {
        self.durable_read(|s| s.batches_page(org, before, limit))
    }

    fn for_each_record_head(
        &self,
        f: &mut dyn FnMut(&str, RecordHeadRef<'_>),
    ) -> Result<(), StoreError> {
        self.settle_reads()?;
        SledStore::for_each_record_head(self, f)
    }

    fn for_each_adapter(
        &self,
        f: &mut dyn FnMut(Adapter) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        self.settle_reads()?;
        for a in self.scan_adapters() {
            f(a?)?;
        }
        Ok(())
    }

    fn for_each_record(
        &self,
        f: &mut dyn FnMut(&str, FeedbackRecord) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        self.settle_reads()?;
        for r in self.scan_records_with_org() {
            let (org, rec) = r?;
            f(&org, rec)?;
        }
        Ok(())
    }

    fn feedback_history_versions(
        &self,
        org: &str,
        id: &str,
        up_to: u64,
    ) -> Result<Vec<u64>, StoreError> {
        self.durable_read(|s| s.feedback_history_versions(org, id, up_to))
    }

    fn get_score_config(&self, org: &str, name: &str) -> Result<Option<ScoreConfig>, StoreError> {
        self.durable_read(|s| s.get_score_config(org, name))
    }

    fn score_configs_of(&self, org: &str) -> Result<Vec<ScoreConfig>, StoreError> {
        self.durable_read(|s| s.score_configs_of(org))
    }

    fn score_config_history(
        &self,
        org: &str,
        name: &str,
    ) -> Result<Vec<HistoryVersion>, StoreError> {
        self.durable_read(|s| s.score_config_history(org, name))
    }

    fn get_erasure(&self, org: &str, id: &str) -> Result<Option<ErasureRecord>, StoreError> {
        self.durable_read(|s| {
            let key = keys::record(org, id);
            match s.t().erasures.get(&key)? {
                Some(v) => decode("erasures", &key, &v).map(Some),
                None => Ok(None),
            }
        })
    }

    fn erasures_page(
        &self,
        org: &str,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ErasureRecord>, StoreError> {
        self.durable_read(|s| {
            let prefix = keys::record(org, "");
            let end = match before {
                Some(b) => keys::record(org, b),
                None => {
                    let mut e = prefix.clone();
                    e.push(0xff);
                    e
                }
            };
            erasures_in(
                s.t().erasures.range(prefix..end).rev(),
                &mut |_| true,
                limit,
            )
        })
    }

    fn unfinished_erasures(&self) -> Result<Vec<ErasureRecord>, StoreError> {
        let mut out = erasures_in(
            self.t().erasures.iter(),
            &mut |r| r.state == ErasureState::Running,
            usize::MAX,
        )?;
        out.sort_by(|a, b| a.requested_at.cmp(&b.requested_at).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    fn check_writable(&self) -> Result<(), StoreError> {
        SledStore::check_writable(self)
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.make_durable()
    }

    fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        SledStore::register_metrics(self, registry);
    }

    fn events(&self) -> &dyn EventStore {
        self
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// Removes the idempotency entries of `tree` that are `ttl_ms` or more old at `now`, in
/// batches of [`SWEEP_BATCH`], each synced once. An entry is removed only if it is still
/// the one judged expired (compare-and-swap), so a key reused meanwhile is kept.
fn sweep_expired(
    handle: &Handle,
    syncer: &Syncer,
    now: Millis,
    ttl_ms: Millis,
) -> Result<usize, StoreError> {
    let mut removed = 0;
    let mut batch: Vec<(sled::IVec, sled::IVec)> = Vec::with_capacity(SWEEP_BATCH);
    let mut flush = |batch: &mut Vec<(sled::IVec, sled::IVec)>| -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        {
            let _gate = handle.hold();
            let _w = syncer.begin_write()?;
            let tree = &handle.trees().idempotency;
            for (k, v) in batch.drain(..) {
                if tree
                    .compare_and_swap(&k, Some(&v), None as Option<&[u8]>)?
                    .is_ok()
                {
                    removed += 1;
                }
            }
        }
        syncer.wait_durable()?;
        Ok(())
    };
    for kv in handle.trees().idempotency.iter() {
        let (k, v) = kv?;
        match codec::decode::<IdempotencyRecord>(&v) {
            Ok(rec) if rec.expired(now, ttl_ms) => batch.push((k, v)),
            Ok(_) => {}
            Err(e) => tracing::warn!(
                key = %keys::display(&k),
                "undecodable idempotency entry left in place: {e}"
            ),
        }
        if batch.len() >= SWEEP_BATCH {
            flush(&mut batch)?;
        }
    }
    flush(&mut batch)?;
    Ok(removed)
}

/// The org of a `org \0 ...` key.
/// Pairs per batch the scan thread of [`SledStore::for_each_record_head`] hands over.
const SCAN_BATCH: usize = 256;

/// Batches the scan thread may read ahead: a few hundred records' values in memory.
const SCAN_AHEAD_BATCHES: usize = 8;

/// Decodes one stored feedback record's key and leading fields and hands them to `f`.
fn record_head(
    k: &[u8],
    v: &[u8],
    f: &mut impl FnMut(&str, RecordHeadRef<'_>),
) -> Result<(), StoreError> {
    let org = key_org("feedback", k)?;
    let head: RecordHeadRef<'_> =
        codec::decode_prefix_borrowed(v).map_err(|source| StoreError::Corrupt {
            tree: "feedback",
            key: keys::display(k),
            source,
        })?;
    f(org, head);
    Ok(())
}

fn key_org<'k>(tree: &'static str, key: &'k [u8]) -> Result<&'k str, StoreError> {
    keys::split_org(key)
        .and_then(|(org, _)| std::str::from_utf8(org).ok())
        .ok_or_else(|| StoreError::BadKey {
            tree,
            key: keys::display(key),
        })
}

fn scan<T: codec::Stored>(
    tree: &Tree,
    name: &'static str,
) -> impl Iterator<Item = Result<T, StoreError>> + use<T> {
    tree.iter().map(move |kv| {
        let (k, v) = kv?;
        decode(name, &k, &v)
    })
}

#[cfg(test)]
mod tests {
    use super::super::rules::field_change;
    use super::super::{FeedbackHeadRef, Lease, SyncError, testing};
    use super::*;
    use crate::model::{FeedbackType, LinkSource, Metadata, ValidationReason, ValidationStatus};

    #[test]
    fn creation_changes_list_every_set_field_in_name_order() {
        #[derive(Serialize)]
        struct Inner {
            z: u8,
            a: &'static str,
        }
        #[derive(Serialize)]
        struct Rec {
            id: &'static str,
            text: &'static str,
            none: Option<u8>,
            empty_map: serde_json::Map<String, serde_json::Value>,
            empty_list: Vec<u8>,
            list: Vec<Inner>,
            score: f64,
            quoted: &'static str,
        }
        let rec = Rec {
            id: "skipped",
            text: "h\u{e9}llo",
            none: None,
            empty_map: serde_json::Map::new(),
            empty_list: Vec::new(),
            list: vec![Inner { z: 1, a: "x" }],
            score: 0.5,
            quoted: "say \"hi\"\n",
        };
        let got: Vec<(String, Option<String>, Option<String>)> = creation_changes(&rec, &["id"])
            .into_iter()
            .map(|c| (c.field, c.old, c.new))
            .collect();
        let want = |f: &str, v: &str| (f.to_owned(), None, Some(v.to_owned()));
        assert_eq!(
            got,
            vec![
                want("list", r#"[{"z":1,"a":"x"}]"#),
                want("quoted", r#""say \"hi\"\n""#),
                want("score", "0.5"),
                want("text", "\"h\u{e9}llo\""),
            ]
        );
    }

    /// A version-1 approved item with short texts and no optional fields.
    fn small_item(id: &str) -> Feedback {
        let mut f = Feedback::sample(id, "acme");
        f.question = "q?".into();
        f.answer = "a.".into();
        f
    }

    /// The creation entry as stored, not as [`SledStore::feedback_history`] shows it.
    fn raw_creation(store: &SledStore, id: &str) -> HistoryVersion {
        let key = keys::history("acme", keys::KIND_FEEDBACK, id, 1);
        let bytes = store.t().history.get(&key).unwrap().unwrap();
        decode("history", &key, &bytes).unwrap()
    }

    #[test]
    fn the_creation_entry_is_stored_compact_shown_whole_and_written_out_on_first_update() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), &StorageConfig::default()).unwrap();
        let actor = Actor::new("acme", "alice");
        let mut item = small_item("f1");
        item.comment = Some("first words".into());
        store
            .insert_feedback(&actor, &item, ChangeAction::Submit, SyncMode::Wait)
            .unwrap();
        assert!(raw_creation(&store, "f1").changes.is_empty());
        let shown = store.feedback_history("acme", "f1").unwrap();
        assert_eq!(shown.len(), 1);
        assert_eq!(shown[0].changes, creation_changes(&item, FEEDBACK_SKIP));
        assert!(
            shown[0]
                .changes
                .iter()
                .any(|c| c.field == "comment" && c.new.as_deref() == Some("\"first words\"")),
            "{:?}",
            shown[0].changes
        );

        store
            .update_feedback(
                &actor,
                "f1",
                5,
                SyncMode::Wait,
                &mut |cur: &FeedbackRecord| {
                    let mut next = cur.clone();
                    next.feedback.comment = Some("second words".into());
                    let change = field_change(
                        "comment",
                        cur.feedback.comment.as_deref(),
                        next.feedback.comment.as_deref(),
                    );
                    Ok(Some((next, ChangeAction::Review, vec![change])))
                },
            )
            .unwrap();
        // The first version keeps the first comment, though the record no longer has it.
        assert_eq!(raw_creation(&store, "f1").changes, shown[0].changes);
        let after = store.feedback_history("acme", "f1").unwrap();
        assert_eq!(after.len(), 2);
        assert_eq!(after[0], shown[0]);
        assert_eq!(
            store.feedback_history_versions("acme", "f1", 2).unwrap(),
            vec![1, 2]
        );
    }

    #[test]
    fn after_a_failed_sync_the_store_refuses_writes_before_making_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), &StorageConfig::default()).unwrap();
        let actor = Actor::new("acme", "alice");
        store
            .insert_feedback(
                &actor,
                &small_item("ok"),
                ChangeAction::Submit,
                SyncMode::Wait,
            )
            .unwrap();
        store.syncer.inject(testing::Fault::Error);
        // This write is in sled when its sync fails: the client hears an error.
        assert!(
            store
                .insert_feedback(
                    &actor,
                    &small_item("failed"),
                    ChangeAction::Submit,
                    SyncMode::Wait
                )
                .is_err()
        );
        let before = store.records_of("acme").count();
        let refused = store.insert_feedback(
            &actor,
            &small_item("refused"),
            ChangeAction::Submit,
            SyncMode::Wait,
        );
        assert!(
            matches!(refused, Err(StoreError::Sync(SyncError::Poisoned(_)))),
            "{refused:?}"
        );
        assert_eq!(
            store.records_of("acme").count(),
            before,
            "a refused write reached sled"
        );
        assert!(store.get_feedback("acme", "refused").unwrap().is_none());
    }

    #[test]
    fn values_sled_keeps_in_blob_files_are_synced_too() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), &StorageConfig::default()).unwrap();
        let actor = Actor::new("acme", "alice");
        let mut f = small_item("big");
        f.question = "q".repeat(100);
        f.answer = "a".repeat(100);
        store
            .insert_feedback(&actor, &f, ChangeAction::Submit, SyncMode::Wait)
            .unwrap();
        assert_eq!(
            store.syncer.blobs_synced(),
            0,
            "a small record needs no blob"
        );
        f.id = "bigger".into();
        f.question = "\u{20ac}".repeat(70_000);
        store
            .insert_feedback(&actor, &f, ChangeAction::Submit, SyncMode::Wait)
            .unwrap();
        let blobs = std::fs::read_dir(dir.path().join("sled").join("blobs"))
            .map(|d| d.count())
            .unwrap_or(0);
        assert!(blobs > 0, "sled kept the large record in its log");
        assert!(
            store.syncer.blobs_synced() >= 1,
            "its blob file was not synced"
        );
    }

    #[test]
    fn record_head_is_a_prefix_of_the_record() {
        let f = Feedback {
            id: "feedback-1".into(),
            org_id: "acme".into(),
            feedback_type: FeedbackType::Negative,
            validation_status: ValidationStatus::Flagged,
            created_at: 1,
            updated_at: 2,
            version: 3,
            used_for_training: true,
            training_batch_id: 9,
            model_version: Some("m".into()),
            adapter_id: Some("a".into()),
            adapter_version: Some("v".into()),
            user_id: Some("u".into()),
            session_id: Some("s".into()),
            interaction_id: Some("i".into()),
            score: Some(4.5),
            correction: Some("c".into()),
            comment: None,
            validation_reasons: vec![ValidationReason {
                rule: "r".into(),
                status: ValidationStatus::Flagged,
                message: "m".into(),
            }],
            question: "q".repeat(100),
            answer: "a".repeat(100),
            metadata: Metadata::default(),
            pii: Vec::new(),
            kind: Default::default(),
            label: None,
            provider: None,
            score_config: None,
            erased_at: None,
            erased_by: None,
        };
        let record = FeedbackRecord {
            lease: Some(Lease {
                batch_id: 7,
                expires_at: 8,
            }),
            links: vec![FeedbackLink {
                feedback_id: "feedback-1".into(),
                adapter_id: "a".into(),
                created_at: 1,
                source: LinkSource::Auto,
                metadata: Metadata::default(),
            }],
            feedback: f.clone(),
        };
        let bytes = codec::encode(&record).unwrap();
        let borrowed: RecordHeadRef<'_> = codec::decode_prefix_borrowed(&bytes).unwrap();
        assert_eq!(borrowed.feedback, FeedbackHeadRef::from(&f));
        assert_eq!(borrowed.links[0].adapter_id, "a");
        assert_eq!(borrowed.links[0].metadata, "{}");
        assert_eq!(borrowed.lease, record.lease);
    }
}
