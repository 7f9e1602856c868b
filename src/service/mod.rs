//! The operations feedgraph offers, as a library API that the HTTP layer and the CLI call:
//! submit, get, list, stats, link, by-adapter, find by session, adapters, history, import.
//!
//! Every operation is scoped to one org. Writes go to the store first (durable before they
//! return) and then into the graph index; reads and filters run on the graph and load only
//! the records they return from the store. No lock is held across store I/O.

pub mod backup;
pub mod batch;
mod checkpoint;
pub mod dump;
pub mod erasure;
pub mod follow;
pub mod item_cache;
pub mod kinds;
pub mod lineage;
pub mod metrics;
pub mod overview;
pub mod pages;
pub mod placement;
pub mod query;
pub mod training;

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::graph::{Applied, Counts, FeedbackNode, GraphIndex, OrgGraph, Sym};
use crate::model::{
    Actor, Adapter, ChangeAction, Feedback, FeedbackLink, FeedbackType, HistoryVersion,
    IdGenerator, LinkSource, Millis, NewFeedback, ValidationStatus, now_millis,
};
use crate::store::pg::PgStore;
use crate::store::view::FeedbackView;
use crate::store::{
    AdapterOutcome, Backend, BackendKind, BoxFuture, ChangeSet, IdempotencyKey, Inserted,
    SledStore, StoreError, SyncError, WriteTx,
};
use crate::validate::{self, FieldLimits, ValidationError, Validator};

/// Default page size of lists.
pub const DEFAULT_LIMIT: usize = 100;
/// Largest page size of lists.
pub const MAX_LIMIT: usize = 1000;
/// Longest org id accepted.
pub const MAX_ORG_CHARS: usize = 128;

/// Errors of the service layer; the HTTP layer maps each to one status code.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The submission breaks the request contract (400, or 413 for size).
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// Another bad argument (limit, cursor, org, lineage).
    #[error("{0}")]
    BadRequest(String),
    /// The record does not exist in the caller's org.
    #[error("{kind} '{id}' not found")]
    NotFound {
        /// `feedback` or `adapter`.
        kind: &'static str,
        /// The id asked for.
        id: String,
    },
    /// The request contradicts the stored state.
    #[error("{0}")]
    Conflict(String),
    /// The configuration is unusable.
    #[error("{0}")]
    Config(String),
    /// The store failed (I/O, corruption).
    #[error(transparent)]
    Store(StoreError),
    /// The write reached the store but making it durable failed: it may or may not have
    /// been stored (a restart tells). The store refuses writes from now on.
    #[error("the write may or may not have been stored: {0}")]
    OutcomeUnknown(String),
    /// The store refuses writes (and reads of state it cannot vouch for) after a failed
    /// sync; nothing was written. A restart recovers what is durable.
    #[error("the store is unavailable after a failed sync: {0}")]
    Unavailable(String),
    /// A graph query failed (syntax, types, limits...).
    #[error(transparent)]
    Query(crate::cypher::CypherError),
    /// A broken internal invariant: a bug, reported instead of panicking.
    #[error("internal error: {0}")]
    Internal(String),
    /// The database cannot be reached now (down, restarting, no connection free);
    /// nothing was written. Unlike [`ServiceError::Unavailable`] it passes on its own.
    #[error("the store cannot be reached: {0}")]
    StoreDown(String),
    /// The org is not placed on this replica (see [`placement`]); the message names
    /// the replica's placement.
    #[error("{0}")]
    Misplaced(String),
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { kind, id } => ServiceError::NotFound { kind, id },
            e @ (StoreError::UnknownParent(_) | StoreError::Cycle { .. }) => {
                ServiceError::BadRequest(e.to_string())
            }
            e @ (StoreError::Conflict(_) | StoreError::Exists { .. }) => {
                ServiceError::Conflict(e.to_string())
            }
            StoreError::Sync(SyncError::Failed(m)) => ServiceError::OutcomeUnknown(m),
            StoreError::Sync(SyncError::Poisoned(m)) => ServiceError::Unavailable(m),
            StoreError::Unavailable(m) => ServiceError::StoreDown(m),
            StoreError::CommitUnknown(m) => ServiceError::OutcomeUnknown(m),
            e => ServiceError::Store(e),
        }
    }
}

/// Filters and paging of [`Service::list`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListQuery {
    /// Only this type.
    pub feedback_type: Option<FeedbackType>,
    /// Only this validation status.
    pub status: Option<ValidationStatus>,
    /// Only items not yet used for training.
    pub unused: bool,
    /// Only this model version.
    pub model: Option<String>,
    /// Only items linked to this adapter.
    pub adapter: Option<String>,
    /// Only this session.
    pub session: Option<String>,
    /// Only this kind (read from the stored records: the graph does not hold kinds).
    pub kind: Option<crate::model::FeedbackKind>,
    /// Page size (default 100, 1..=1000).
    pub limit: Option<usize>,
    /// Continue after this id (the `next_cursor` of the previous page).
    pub cursor: Option<String>,
}

/// One page of a list, newest first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Page {
    /// The items.
    pub items: Vec<Feedback>,
    /// The effective limit.
    pub limit: usize,
    /// Pass as `cursor` to get the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// What a page handed out item by item ([`Service::list_with`],
/// [`Service::by_adapter_with`]) adds to its items.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewPage {
    /// Items handed out.
    pub count: usize,
    /// The effective limit.
    pub limit: usize,
    /// Pass as `cursor` to get the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// Takes each item of a page read in place; an error stops the page.
pub type EmitView<'e> = dyn FnMut(&FeedbackView<'_>) -> Result<(), StoreError> + 'e;

/// Scope of [`Service::stats`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatsQuery {
    /// Only items linked to this adapter.
    pub adapter: Option<String>,
    /// Only this model version.
    pub model: Option<String>,
    /// Only items created in the last N hours.
    pub window_hours: Option<u64>,
}

/// The seed's counters, plus the mean score where items carry one.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Stats {
    /// Items in scope.
    pub total_feedback: u64,
    /// Thumbs up.
    pub positive_count: u64,
    /// Thumbs down.
    pub negative_count: u64,
    /// Status pending.
    pub pending_validation: u64,
    /// Status approved.
    pub approved_count: u64,
    /// Status rejected.
    pub rejected_count: u64,
    /// Status flagged.
    pub flagged_count: u64,
    /// Not yet consumed by training.
    pub unused_for_training: u64,
    /// Consumed by training.
    pub used_for_training: u64,
    /// positive / total (0 when empty).
    pub positive_ratio: f64,
    /// Mean of `score` over items that have one.
    pub average_score: Option<f64>,
}

/// Result of [`Service::by_adapter`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ByAdapter {
    /// The adapter asked for.
    pub adapter_id: String,
    /// Matching items, newest first.
    pub feedback: Vec<Feedback>,
    /// Number of items returned.
    pub count: usize,
    /// All FEEDBACK_FOR edges into the adapter, whatever the filters.
    pub total_linked: usize,
    /// Cursor for the next page.
    pub next_cursor: Option<String>,
}

/// Paging of [`Service::by_adapter`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ByAdapterQuery {
    /// Page size.
    pub limit: Option<usize>,
    /// Only unused items.
    pub unused: bool,
    /// Continue after this id.
    pub cursor: Option<String>,
    /// Also feedback linked to the adapter's descendants.
    pub include_descendants: bool,
    /// Only this kind.
    pub kind: Option<crate::model::FeedbackKind>,
}

/// Result of [`Service::link`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LinkOutcome {
    /// The edge (as stored; for an existing edge, as first made).
    pub link: FeedbackLink,
    /// False when the edge already existed (idempotent repeat).
    pub created: bool,
}

/// An adapter creation request.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAdapter {
    /// Adapter id.
    #[schema(required = true, value_type = String)]
    pub id: Option<String>,
    /// Version label.
    pub version: Option<String>,
    /// Base model.
    pub base_model: Option<String>,
    /// Parent adapter.
    pub derived_from: Option<String>,
    /// JSON object.
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

/// One line of an import file: feedback (default) or an adapter.
#[derive(Debug, Clone, PartialEq)]
pub enum ImportRecord {
    /// A feedback item, optionally with its original id and creation time.
    Feedback {
        /// Org of the item (else the import's default org).
        org: Option<String>,
        /// Keep this id instead of generating one.
        id: Option<String>,
        /// Keep this creation time (ms).
        created_at: Option<Millis>,
        /// The submission.
        item: Box<NewFeedback>,
    },
    /// An adapter, possibly with a parent.
    Adapter {
        /// Org (else the default).
        org: Option<String>,
        /// The adapter.
        adapter: NewAdapter,
    },
    /// A manual FEEDBACK_FOR link between existing records.
    Link {
        /// Org (else the default).
        org: Option<String>,
        /// Feedback end.
        feedback_id: Option<String>,
        /// Adapter end.
        adapter_id: Option<String>,
        /// Edge metadata.
        metadata: Option<serde_json::Map<String, serde_json::Value>>,
    },
}

impl ImportRecord {
    /// Parses one JSON line. `kind` selects `feedback` (default) or `adapter`; `org`, `id`
    /// and `created_at` are import-only fields; the rest is the API's request body.
    pub fn parse(line: &str) -> Result<ImportRecord, String> {
        let mut map: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(line).map_err(|e| format!("not a JSON object: {e}"))?;
        let take_str =
            |map: &mut serde_json::Map<String, serde_json::Value>, k: &str| match map.remove(k) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(serde_json::Value::String(s)) => Ok(Some(s)),
                Some(other) => Err(format!("'{k}' must be a string, got {other}")),
            };
        let kind = take_str(&mut map, "kind")?;
        let org = take_str(&mut map, "org")?;
        match kind.as_deref().unwrap_or("feedback") {
            "feedback" => {
                let id = take_str(&mut map, "id")?;
                let created_at =
                    match map.remove("created_at") {
                        None | Some(serde_json::Value::Null) => None,
                        Some(v) => Some(v.as_u64().ok_or_else(|| {
                            format!("'created_at' must be ms since epoch, got {v}")
                        })?),
                    };
                let item = serde_json::from_value(serde_json::Value::Object(map))
                    .map(Box::new)
                    .map_err(|e| e.to_string())?;
                Ok(ImportRecord::Feedback {
                    org,
                    id,
                    created_at,
                    item,
                })
            }
            "adapter" => {
                let adapter = serde_json::from_value(serde_json::Value::Object(map))
                    .map_err(|e| e.to_string())?;
                Ok(ImportRecord::Adapter { org, adapter })
            }
            "link" => {
                let feedback_id = take_str(&mut map, "feedback_id")?;
                let adapter_id = take_str(&mut map, "adapter_id")?;
                let metadata = match map.remove("metadata") {
                    None | Some(serde_json::Value::Null) => None,
                    Some(serde_json::Value::Object(m)) => Some(m),
                    Some(other) => {
                        return Err(format!("'metadata' must be an object, got {other}"));
                    }
                };
                if let Some(k) = map.keys().next() {
                    return Err(format!("unknown field '{k}' on a link line"));
                }
                Ok(ImportRecord::Link {
                    org,
                    feedback_id,
                    adapter_id,
                    metadata,
                })
            }
            other => Err(format!(
                "unknown kind '{other}' (expected feedback, adapter or link)"
            )),
        }
    }
}

/// One checked import line: the write it asks for.
#[derive(Debug)]
enum ImportOp {
    /// Create or describe an adapter.
    Adapter(Adapter),
    /// Store a feedback item (skipped if its id exists).
    Feedback(Box<Feedback>),
    /// Link an item to an adapter.
    Link(FeedbackLink),
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ImportSummary {
    /// Feedback items stored.
    pub feedback: u64,
    /// Adapters created or updated.
    pub adapters: u64,
    /// Manual links created.
    pub links: u64,
    /// Lines skipped because their id already existed.
    pub skipped: u64,
}

/// Checks an org id: non-empty, bounded, printable.
pub fn check_org(org: &str) -> Result<(), ServiceError> {
    if org.is_empty() || org.chars().count() > MAX_ORG_CHARS || org.chars().any(char::is_control) {
        return Err(ServiceError::BadRequest(format!(
            "invalid org id '{}': 1 to {MAX_ORG_CHARS} printable characters",
            org.escape_debug()
        )));
    }
    Ok(())
}

fn effective_limit(limit: Option<usize>) -> Result<usize, ServiceError> {
    match limit {
        None => Ok(DEFAULT_LIMIT),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(n) => Err(ServiceError::BadRequest(format!(
            "limit must be between 1 and {MAX_LIMIT}, got {n}"
        ))),
    }
}

/// A compiled list filter: strings resolved to symbols once, so matching is integer compares.
struct Filter {
    feedback_type: Option<FeedbackType>,
    status: Option<ValidationStatus>,
    unused: bool,
    model: Option<Sym>,
    session: Option<Sym>,
    since: Option<Millis>,
}

impl Filter {
    fn matches(&self, f: &FeedbackNode<'_>) -> bool {
        self.feedback_type.is_none_or(|t| f.feedback_type == t)
            && self.status.is_none_or(|s| f.status == s)
            && (!self.unused || !f.used_for_training)
            && self.model.is_none_or(|m| f.model_version == Some(m))
            && self.session.is_none_or(|s| f.session_id == Some(s))
            && self.since.is_none_or(|t| f.created_at >= t)
    }
}

/// Resolves an optional filter string; `Err(())` means no item can match.
fn resolve(g: &OrgGraph, s: &Option<String>) -> Result<Option<Sym>, ()> {
    match s {
        None => Ok(None),
        Some(s) => g.strings().get(s).map(Some).ok_or(()),
    }
}

/// The feedgraph service: store, graph index and validator together.
#[derive(Debug)]
pub struct Service {
    store: Arc<dyn Backend>,
    graph: GraphIndex,
    validator: Validator,
    ids: IdGenerator,
    limits: FieldLimits,
    claim_locks: parking_lot::Mutex<HashMap<String, Arc<parking_lot::Mutex<()>>>>,
    query_limits: crate::cypher::QueryLimits,
    query_gate: query::QueryGate,
    query_metrics: metrics::QueryMetrics,
    /// The orgs this replica serves.
    placement: placement::Placement,
    /// The change-log follower, when the store is shared with other replicas.
    follower: Option<Arc<follow::Follower>>,
    erasure: erasure::ErasureConfig,
    retention: erasure::RetentionConfig,
    /// When `POST /admin/compact` last started a `VACUUM` (PostgreSQL).
    last_vacuum: parking_lot::Mutex<Option<std::time::Instant>>,
    /// Where the graph checkpoint is written at a clean stop (`None`: it is not).
    checkpoint_dir: Option<std::path::PathBuf>,
    /// Writes between their store call and the offer of their change to the graph, those
    /// whose client left and which a task of their own finishes ([`FinishOnDrop`])
    /// included; a clean stop's checkpoint waits until there are none.
    in_flight: InFlight,
    /// Rendered feedback items kept between pages (see `pages`).
    items: Arc<item_cache::ItemCache>,
    /// `[pages]`.
    pages: pages::PagesConfig,
}

/// A write the backend is making durable: polled by the request, or, if the client hangs
/// up first, by a task that finishes and indexes it (see [`FinishOnDrop`]).
type WriteFuture<T> = BoxFuture<'static, Result<T, StoreError>>;

/// What a durable write hands the graph index once it finished.
trait Indexed: Send + 'static {
    /// The changes to apply (`None` when nothing was stored).
    fn changes(&self) -> Option<&ChangeSet>;
}

impl Indexed for Inserted {
    fn changes(&self) -> Option<&ChangeSet> {
        match self {
            Inserted::New(changes) => Some(changes),
            Inserted::Replay(_) => None,
        }
    }
}

impl Indexed for crate::store::Linked {
    fn changes(&self) -> Option<&ChangeSet> {
        Some(&self.changes)
    }
}

/// A write (a submit or a link) handed to the backend whose caller may stop waiting: on
/// drop before the write finished, a task drives it to the end and indexes what it
/// stored, as the caller would have, so a stored change is always indexed.
struct FinishOnDrop<'a, T: Indexed> {
    service: &'a Arc<Service>,
    org: String,
    pending: Option<WriteFuture<T>>,
}

impl<'a, T: Indexed> FinishOnDrop<'a, T> {
    /// Waits for the write; from then on nothing is left for the guard (a failed write
    /// indexes nothing). Returns the write's outcome and the org to index it in.
    async fn finish(mut self) -> (Result<T, StoreError>, String) {
        let written = match self.pending.as_mut() {
            Some(pending) => pending.await,
            None => Err(StoreError::Backend("the write was finished twice".into())),
        };
        self.pending = None;
        (written, std::mem::take(&mut self.org))
    }
}

/// Counts the writes between their store call and the offer of their change to the graph.
/// A write takes [`InFlight::enter`] before it calls the store and holds the guard until
/// the graph has been offered its change; a clean stop seals the store, then waits for the
/// count to reach zero before it saves the graph ([`Service::checkpoint_graph`]), so the
/// checkpoint holds every write the store took, however long a writer's thread stalled
/// between the two steps.
#[derive(Debug, Default)]
struct InFlight(std::sync::atomic::AtomicUsize);

impl InFlight {
    /// Counts a write in until the returned guard is dropped.
    fn enter(&self) -> InFlightGuard<'_> {
        self.add();
        InFlightGuard(self)
    }

    fn add(&self) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    fn sub(&self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// Writes counted in now.
    fn count(&self) -> usize {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// One write counted in [`InFlight`] until dropped.
#[must_use = "the write is counted only while the guard lives"]
struct InFlightGuard<'a>(&'a InFlight);

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        self.0.sub();
    }
}

impl<T: Indexed> Drop for FinishOnDrop<'_, T> {
    fn drop(&mut self) {
        let Some(pending) = self.pending.take() else {
            return;
        };
        let service = Arc::clone(self.service);
        let org = std::mem::take(&mut self.org);
        // Counted before this returns: the caller's own count ends with it.
        service.in_flight.add();
        let finish = async move {
            match pending.await {
                Ok(written) => {
                    if let Some(changes) = written.changes() {
                        // Nobody waits for it; the graph thread publishes it if it queued.
                        let _applied = service.graph.apply(&org, changes);
                    }
                }
                Err(e) => tracing::error!("a write whose client left was not made durable: {e}"),
            }
            service.in_flight.sub();
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                // In the request's span, so its log lines carry the request id.
                runtime.spawn(tracing::Instrument::in_current_span(finish));
            }
            // Outside a runtime nobody polls futures: whatever was stored is indexed at
            // the next start.
            Err(_) => tracing::warn!(
                "a write was dropped outside the runtime; it is indexed at the next start"
            ),
        }
    }
}

impl Service {
    /// Opens the data directory of `config`, building the graph index from the store.
    pub fn open(config: &Config) -> Result<Self, ServiceError> {
        let validator = Validator::from_config(&config.validation)
            .map_err(|e| ServiceError::Config(e.to_string()))?
            .with_pii(&config.pii)
            .map_err(|e| ServiceError::Config(e.to_string()))?;
        let mut vouched = None;
        let store: Arc<dyn Backend> = match config.storage.backend {
            BackendKind::Sled => {
                let sled = SledStore::open(&config.data_dir, &config.storage)?;
                vouched = sled.vouched_graph_checkpoint();
                sled.set_rewrite_test_delay(config.erasure.test_rewrite_delay_ms);
                if config.erasure.compact_on_start
                    && crate::store::compact::is_due(&config.data_dir)
                {
                    sled.rewrite()?;
                }
                Arc::new(sled)
            }
            BackendKind::Postgres => Arc::new(PgStore::open(&config.storage)?),
        };
        let placement = placement::Placement::from_config(&config.placement)?;
        // The follower's start is taken before the graph is read: every change it has
        // not read then is either in the build or read later (applied twice is harmless).
        let follower = match store.change_log() {
            Some(log) => {
                let pg = &config.storage.postgres;
                Some(Arc::new(follow::Follower::new(
                    log.start_position()?,
                    std::time::Duration::from_millis(pg.follow_poll_ms.max(1)),
                    std::time::Duration::from_secs(pg.change_retention_secs.max(1)),
                )))
            }
            None => None,
        };
        let checkpoint_dir = checkpoint::dir_for(config, &placement);
        let graph = checkpoint::open_graph(
            store.as_ref(),
            &placement,
            checkpoint_dir.as_deref(),
            vouched,
        )?;
        if config.storage.backend == BackendKind::Sled {
            // Read or not, the file is stale now (the store vouches for it once): it goes,
            // so that no text erased from here on outlives the erasure in it.
            checkpoint::discard_file(&config.data_dir);
        }
        // Every durable change the graph is offered drops the changed items' rendered
        // copies (see `item_cache`).
        let items = Arc::new(item_cache::ItemCache::new(config.pages.cache_bytes));
        let watched = items.clone();
        graph.watch(crate::graph::ChangeWatcher(Arc::new(
            move |org, changes| watched.invalidate_changes(org, changes),
        )));
        let service = Service {
            items,
            pages: config.pages.clone(),
            checkpoint_dir,
            in_flight: InFlight::default(),
            placement,
            follower,
            store,
            graph,
            validator,
            ids: IdGenerator::new(),
            limits: config.validation.limits.clone(),
            claim_locks: parking_lot::Mutex::new(HashMap::new()),
            query_limits: crate::cypher::QueryLimits {
                timeout: std::time::Duration::from_millis(config.query.timeout_ms),
                stream_timeout: std::time::Duration::from_millis(config.query.stream_timeout_ms),
                max_rows: config.query.max_rows,
                max_work: config.query.max_work,
                max_depth: config.query.max_depth,
                max_memory: config.query.max_memory_bytes,
                memory_pool: (config.query.max_memory_total_bytes > 0).then(|| {
                    Arc::new(crate::cypher::MemoryPool::new(
                        config.query.max_memory_total_bytes,
                    ))
                }),
            },
            query_gate: query::QueryGate::with_plan_cache(
                config.query.max_concurrent_per_org,
                config.query.max_concurrent_total,
                config.query.plan_cache_entries,
            ),
            query_metrics: metrics::QueryMetrics::new(config.metrics.per_org_labels),
            erasure: config.erasure.clone(),
            retention: config.retention.clone(),
            last_vacuum: parking_lot::Mutex::new(None),
        };
        service.resume_erasures()?;
        Ok(service)
    }

    /// Adds the instruments of the service and its store to `registry` (see `/metrics`).
    pub fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        self.store.register_metrics(registry);
        self.query_metrics.register(registry);
        let from_checkpoint = prometheus_client::metrics::gauge::Gauge::<i64>::default();
        from_checkpoint.set(i64::from(self.graph.loaded_from_checkpoint()));
        registry.register(
            "feedgraph_graph_checkpoint_loaded",
            "1 if this start read the graph from its checkpoint, 0 if it scanned the store",
            from_checkpoint,
        );
        self.items.register(registry);
        if let Some(pool) = &self.query_limits.memory_pool {
            registry.register_with_unit(
                "feedgraph_query_memory_reserved",
                "Memory the running queries have reserved together (query.max_memory_total_bytes bounds it)",
                prometheus_client::registry::Unit::Bytes,
                pool.gauge(),
            );
        }
        if let Some(f) = &self.follower {
            f.register(registry);
        }
    }

    /// The storage backend.
    pub fn store(&self) -> &dyn Backend {
        self.store.as_ref()
    }

    /// The sled backend, when that is the one in use (for tools and tests that reach
    /// sled's own extras: idempotency sweeps, test hooks).
    pub fn sled(&self) -> Option<&SledStore> {
        self.store.as_any().downcast_ref::<SledStore>()
    }

    /// The orgs this replica serves.
    pub fn placement(&self) -> &placement::Placement {
        &self.placement
    }

    /// The graph index.
    pub fn graph(&self) -> &GraphIndex {
        &self.graph
    }

    /// Validates and stores a feedback item; returns it once durable.
    pub fn submit(&self, actor: &Actor, new: NewFeedback) -> Result<Feedback, ServiceError> {
        check_org(&actor.org)?;
        let fb = self.prepare(new, None, None, &actor.org, None)?;
        // Counted until the graph has been offered the change (see `InFlight`).
        let _in_flight = self.in_flight.enter();
        let changes = self.store.write(actor, &mut |tx| {
            tx.insert_feedback(&fb, ChangeAction::Submit)
        })?;
        self.graph.apply(&actor.org, &changes).wait();
        Ok(fb)
    }

    /// Like [`Service::submit`], at most once per `(user, idempotency key)`: a repeat of an
    /// earlier request returns the item stored then (and `true`), storing nothing new; the
    /// same key with a different request is a conflict. Blocks until durable; call it
    /// from a blocking thread, never from the runtime.
    pub fn submit_idempotent(
        &self,
        actor: &Actor,
        new: NewFeedback,
        key: Option<IdempotencyKey>,
    ) -> Result<(Feedback, bool), ServiceError> {
        let (fb, org, key) = self.begin_submit(actor, new, key, None)?;
        // Counted until the graph has been offered the change (see `InFlight`).
        let _in_flight = self.in_flight.enter();
        let inserted = self.store.submit_blocking(actor, &fb, key.as_ref())?;
        let (feedback, replay, applied) = self.finish_submit(&org, inserted)?;
        applied.wait();
        Ok((feedback, replay))
    }

    /// [`Service::submit_idempotent`] for async callers: the backend's write is a future,
    /// so a request waiting for its durable commit holds no thread.
    ///
    /// Cancel-safe: dropped before the write finished (the client hung up), it hands the
    /// rest to a task that indexes the item once it is durable. Running the common case
    /// inline, instead of always in a task of its own, saves a task spawn and a wake-up
    /// per request.
    pub(crate) async fn submit_durable(
        self: &Arc<Self>,
        actor: &Actor,
        new: NewFeedback,
        key: Option<IdempotencyKey>,
    ) -> Result<(Feedback, bool), ServiceError> {
        let config = match new.score_config.as_deref() {
            None => Some(None),
            Some(name) => self
                .configs_named(&actor.org, vec![name.to_owned()])
                .await?
                .into_values()
                .next(),
        };
        let (fb, org, key) = self.begin_submit(actor, new, key, config)?;
        // Counted until the graph has been offered the change (see `InFlight`).
        let _in_flight = self.in_flight.enter();
        let unfinished = FinishOnDrop {
            service: self,
            org,
            pending: Some(Arc::clone(&self.store).submit(actor.clone(), fb, key)),
        };
        let (inserted, org) = unfinished.finish().await;
        let (feedback, replay, applied) = self.finish_submit(&org, inserted?)?;
        applied.wait_async().await;
        Ok((feedback, replay))
    }

    /// Checks a submission and builds its record; nothing is written yet.
    /// `config` as for [`Service::prepare`].
    fn begin_submit(
        &self,
        actor: &Actor,
        new: NewFeedback,
        key: Option<IdempotencyKey>,
        config: Option<Option<crate::model::ScoreConfig>>,
    ) -> Result<(Feedback, String, Option<IdempotencyKey>), ServiceError> {
        if let Some(key) = &key
            && (key.key.is_empty()
                || key.key.chars().count() > 255
                || key.key.chars().any(char::is_control))
        {
            return Err(ServiceError::BadRequest(
                "Idempotency-Key must be 1 to 255 printable characters".into(),
            ));
        }
        check_org(&actor.org)?;
        let fb = self.prepare(new, None, None, &actor.org, config)?;
        // The raw body's hash would let whoever holds the data directory test guesses of a
        // redacted value: after a redaction the key remembers the request as stored.
        let key = key.map(|mut k| {
            if let Some(text) = validate::pii::redacted_request_text(&fb) {
                k.request_hash = crate::store::stable_hash(text.as_bytes());
            }
            k
        });
        Ok((fb, actor.org.clone(), key))
    }

    /// Indexes a durable submission; returns the item, whether it was a replay, and the
    /// graph's progress on it (to wait for before answering: read-your-writes).
    fn finish_submit(
        &self,
        org: &str,
        inserted: Inserted,
    ) -> Result<(Feedback, bool, Applied), ServiceError> {
        match inserted {
            Inserted::New(changes) => {
                let applied = self.graph.apply(org, &changes);
                let fb = changes
                    .feedback
                    .into_iter()
                    .next()
                    .map(|r| r.feedback)
                    .ok_or_else(|| {
                        ServiceError::Internal("a stored submit reported no record".into())
                    })?;
                Ok((fb, false, applied))
            }
            Inserted::Replay(existing) => Ok((*existing, true, Applied::default())),
        }
    }

    /// Validates a submission and builds its version-1 record (id, time, verdict).
    ///
    /// `config` is the score config the submission names, looked up by an async caller
    /// off the runtime (see [`Service::configs_named`]); `None` looks it up here (a
    /// blocking read).
    fn prepare(
        &self,
        new: NewFeedback,
        id: Option<String>,
        created_at: Option<Millis>,
        org: &str,
        config: Option<Option<crate::model::ScoreConfig>>,
    ) -> Result<Feedback, ServiceError> {
        let config = match config {
            Some(c) => c,
            None => self.score_config_for(org, new.score_config.as_deref())?,
        };
        let (valid, verdict) = self.validator.validate_with(new, config.as_ref())?;
        let created_at = created_at.unwrap_or_else(now_millis);
        let id = match id {
            Some(id) => validate::check_id("id", Some(id), &self.limits)?.ok_or(
                ValidationError::Missing {
                    field: "id",
                    hint: "",
                },
            )?,
            None => self.ids.next_at(created_at),
        };
        let fb = Feedback {
            id,
            org_id: org.to_owned(),
            feedback_type: valid.feedback_type,
            validation_status: verdict.status,
            validation_reasons: verdict.reasons,
            created_at,
            updated_at: created_at,
            version: 1,
            used_for_training: false,
            training_batch_id: 0,
            model_version: valid.model_version,
            adapter_id: valid.adapter_id,
            adapter_version: valid.adapter_version,
            user_id: valid.user_id,
            session_id: valid.session_id,
            interaction_id: valid.interaction_id,
            score: valid.score,
            question: valid.question,
            answer: valid.answer,
            correction: valid.correction,
            comment: valid.comment,
            metadata: valid.metadata,
            pii: verdict.pii,
            kind: valid.kind,
            label: valid.label,
            provider: valid.provider,
            score_config: valid.score_config,
            erased_at: None,
            erased_by: None,
        };
        Ok(fb)
    }

    /// The org's score configs of the given names (an absent one maps to `None`), read
    /// on a blocking thread: for async callers.
    pub(crate) async fn configs_named(
        self: &Arc<Self>,
        org: &str,
        names: Vec<String>,
    ) -> Result<HashMap<String, Option<crate::model::ScoreConfig>>, ServiceError> {
        let service = Arc::clone(self);
        let org = org.to_owned();
        tokio::task::spawn_blocking(move || {
            names
                .into_iter()
                .map(|n| {
                    let c = service.score_config_for(&org, Some(&n))?;
                    Ok((n, c))
                })
                .collect()
        })
        .await
        .map_err(|e| ServiceError::Internal(format!("score config lookup failed: {e}")))?
    }

    /// The org's score config a submission names, if it names one and the org has it
    /// (the validator refuses a named config that is not found).
    fn score_config_for(
        &self,
        org: &str,
        name: Option<&str>,
    ) -> Result<Option<crate::model::ScoreConfig>, ServiceError> {
        match name.map(str::trim).filter(|n| !n.is_empty()) {
            None => Ok(None),
            Some(name) => Ok(self.store.get_score_config(org, name)?),
        }
    }

    /// One feedback item of the org.
    pub fn get(&self, org: &str, id: &str) -> Result<Feedback, ServiceError> {
        self.store
            .get_record(org, id)?
            .map(|r| r.feedback)
            .ok_or_else(|| ServiceError::NotFound {
                kind: "feedback",
                id: id.to_owned(),
            })
    }

    /// Every version of a feedback item's history, oldest first.
    pub fn history(&self, org: &str, id: &str) -> Result<Vec<HistoryVersion>, ServiceError> {
        let versions = self.store.feedback_history(org, id)?;
        if versions.is_empty() {
            return Err(ServiceError::NotFound {
                kind: "feedback",
                id: id.to_owned(),
            });
        }
        Ok(versions)
    }

    fn load(&self, org: &str, ids: Vec<Arc<str>>) -> Result<Vec<Feedback>, ServiceError> {
        let keys: Vec<&str> = ids.iter().map(|id| &**id).collect();
        let found = self.store.get_many(org, &keys)?;
        found
            .into_iter()
            .zip(&ids)
            .map(|(fb, id)| {
                // The graph only holds ids whose records are durable; a miss means the
                // store lost a record the index has, which is corruption, not a 404.
                fb.ok_or_else(|| {
                    ServiceError::Store(StoreError::Corrupt {
                        tree: "feedback",
                        key: format!("{org}/{id}"),
                        source: crate::store::codec::CodecError::Empty,
                    })
                })
            })
            .collect()
    }

    /// Hands the items named by `ids` (newest first) to `emit`, read in place: with a
    /// `kind`, only those of that kind, at most `limit` of them, reading a chunk at a
    /// time. Returns how many went out, the id of the last and whether more follow
    /// (`more` from the index when there is no kind to check).
    fn emit_views(
        &self,
        org: &str,
        ids: &[Arc<str>],
        kind: Option<crate::model::FeedbackKind>,
        limit: usize,
        more: bool,
        emit: &mut EmitView<'_>,
    ) -> Result<(usize, Option<Arc<str>>, bool), ServiceError> {
        const CHUNK: usize = 256;
        let chunk_len = if kind.is_some() { CHUNK } else { ids.len() };
        let mut count = 0;
        let mut last: Option<usize> = None;
        let mut full = false;
        let mut at = 0;
        for chunk in ids.chunks(chunk_len.max(1)) {
            let keys: Vec<&str> = chunk.iter().map(|id| &**id).collect();
            let mut missing: Option<usize> = None;
            self.store.for_each_feedback_view(org, &keys, &mut |v| {
                let i = at;
                at += 1;
                let Some(v) = v else {
                    missing.get_or_insert(i);
                    return Ok(());
                };
                if full || missing.is_some() {
                    return Ok(());
                }
                if let Some(k) = kind {
                    if v.kind != k {
                        return Ok(());
                    }
                    if count == limit {
                        full = true;
                        return Ok(());
                    }
                }
                emit(v)?;
                count += 1;
                last = Some(i);
                Ok(())
            })?;
            if let Some(i) = missing {
                // The graph only holds ids whose records are durable; a miss means the
                // store lost a record the index has, which is corruption, not a 404.
                return Err(ServiceError::Store(StoreError::Corrupt {
                    tree: "feedback",
                    key: format!("{org}/{}", ids[i]),
                    source: crate::store::codec::CodecError::Empty,
                }));
            }
            if full {
                break;
            }
        }
        let more = if kind.is_some() { full } else { more };
        Ok((count, last.map(|i| ids[i].clone()), more))
    }

    /// The page [`Service::list`] answers, each item handed to `emit` as it is read in
    /// place instead of collected (for callers that render the page straight away).
    pub fn list_with(
        &self,
        org: &str,
        q: &ListQuery,
        emit: &mut EmitView<'_>,
    ) -> Result<ViewPage, ServiceError> {
        let limit = effective_limit(q.limit)?;
        let snapshot = self.graph.org(org);
        check_cursor(snapshot.as_deref(), q.cursor.as_deref())?;
        let rows = if q.kind.is_some() { ALL_ROWS } else { limit };
        let (ids, more) = match snapshot {
            None => (Vec::new(), false),
            Some(g) => collect_page(&g, q, rows),
        };
        let (count, last, more) = self.emit_views(org, &ids, q.kind, limit, more, emit)?;
        Ok(ViewPage {
            count,
            limit,
            next_cursor: if more {
                last.map(|id| id.to_string())
            } else {
                None
            },
        })
    }

    /// Lists the org's feedback newest first, filtered, one page at a time.
    pub fn list(&self, org: &str, q: &ListQuery) -> Result<Page, ServiceError> {
        let limit = effective_limit(q.limit)?;
        let snapshot = self.graph.org(org);
        check_cursor(snapshot.as_deref(), q.cursor.as_deref())?;
        if let Some(kind) = q.kind {
            // Every candidate the graph's filters leave, newest first, then the stored
            // records decide the kind.
            let ids = match snapshot {
                None => Vec::new(),
                Some(g) => collect_page(&g, q, ALL_ROWS).0,
            };
            let (items, more) = self.first_of_kind(org, ids, kind, limit)?;
            let next_cursor = if more {
                items.last().map(|f| f.id.clone())
            } else {
                None
            };
            return Ok(Page {
                items,
                limit,
                next_cursor,
            });
        }
        let (ids, more) = match snapshot {
            None => (Vec::new(), false),
            Some(g) => collect_page(&g, q, limit),
        };
        let next_cursor = if more {
            ids.last().map(|s| s.to_string())
        } else {
            None
        };
        Ok(Page {
            items: self.load(org, ids)?,
            limit,
            next_cursor,
        })
    }

    /// The first `limit` items of `ids` (newest first) whose kind is `kind`, read from the
    /// store a chunk at a time, and whether more follow.
    fn first_of_kind(
        &self,
        org: &str,
        ids: Vec<Arc<str>>,
        kind: crate::model::FeedbackKind,
        limit: usize,
    ) -> Result<(Vec<Feedback>, bool), ServiceError> {
        const CHUNK: usize = 256;
        let mut out = Vec::new();
        for chunk in ids.chunks(CHUNK) {
            for f in self.load(org, chunk.to_vec())? {
                if f.kind != kind {
                    continue;
                }
                if out.len() == limit {
                    return Ok((out, true));
                }
                out.push(f);
            }
        }
        Ok((out, false))
    }

    /// Every item of a session, newest first.
    pub fn find_by_session(&self, org: &str, session: &str) -> Result<Vec<Feedback>, ServiceError> {
        let ids = match self.graph.org(org) {
            None => Vec::new(),
            Some(g) => {
                let mut ids: Vec<Arc<str>> = g
                    .session_rows(session)
                    .filter_map(|r| g.feedback().id(r).map(Arc::from))
                    .collect();
                ids.sort_unstable_by(|a, b| b.cmp(a));
                ids
            }
        };
        self.load(org, ids)
    }

    /// The seed's counters over the org's feedback, optionally narrowed.
    ///
    /// An `adapter` that the org does not have is a 404, as everywhere an adapter is named
    /// (by-adapter, lineage, descendants, claims); a `model` filter that matches nothing
    /// gives zeros.
    pub fn stats(&self, org: &str, q: &StatsQuery) -> Result<Stats, ServiceError> {
        let snapshot = self.graph.org(org);
        if let Some(a) = &q.adapter
            && snapshot.as_ref().is_none_or(|g| g.adapter_row(a).is_none())
        {
            return Err(ServiceError::NotFound {
                kind: "adapter",
                id: a.clone(),
            });
        }
        let Some(g) = snapshot else {
            return Ok(Stats::default());
        };
        let since = q
            .window_hours
            .map(|h| now_millis().saturating_sub(h.saturating_mul(3_600_000)));
        let Ok(model) = resolve(&g, &q.model) else {
            return Ok(Stats::default());
        };
        let filter = Filter {
            feedback_type: None,
            status: None,
            unused: false,
            model,
            session: None,
            since,
        };
        // Unfiltered, by adapter or by model: the counters kept on write. A time window,
        // or an adapter and a model together, scan the items in scope.
        let adapter_row = q.adapter.as_deref().and_then(|a| g.adapter_row(a));
        let kept = match (adapter_row, model, since) {
            (None, None, None) => Some(g.counters().org),
            (Some(row), None, None) => g.counters().adapters.get(row as usize).copied(),
            (None, Some(m), None) => Some(g.counters().models.get(&m).copied().unwrap_or_default()),
            _ => None,
        };
        if let Some(c) = kept {
            return Ok(Stats::from_counts(&c));
        }
        let mut acc = Counts::default();
        match adapter_row {
            Some(row) => {
                for r in g.adapter_feedback(row) {
                    if let Some(f) = g.feedback().get(r)
                        && filter.matches(&f)
                    {
                        acc.add(&f);
                    }
                }
            }
            None => {
                for f in g.feedback().iter() {
                    if filter.matches(&f) {
                        acc.add(&f);
                    }
                }
            }
        }
        Ok(Stats::from_counts(&acc))
    }

    /// Links a feedback item to an adapter by hand (idempotent). Blocks until durable
    /// and indexed; call it from a blocking thread, never from the runtime.
    pub fn link(
        &self,
        actor: &Actor,
        feedback_id: &str,
        adapter_id: Option<String>,
        metadata: Option<serde_json::Map<String, serde_json::Value>>,
    ) -> Result<LinkOutcome, ServiceError> {
        check_org(&actor.org)?;
        let link = self.new_link(feedback_id, adapter_id, metadata)?;
        // Counted until the graph has been offered the change (see `InFlight`).
        let _in_flight = self.in_flight.enter();
        let linked = self.store.link_blocking(actor, &link)?;
        self.graph.apply(&actor.org, &linked.changes).wait();
        Ok(LinkOutcome {
            link: linked.link,
            created: linked.created,
        })
    }

    /// [`Service::link`] for async callers: the backend's write is a future that joins
    /// the same group commit as the submits, so a request waiting for its durable commit
    /// holds no thread. Answers once the edge is durable and the graph shows it.
    ///
    /// Cancel-safe like [`Service::submit_durable`]: dropped before the write finished,
    /// it hands the rest to a task that indexes the edge once it is durable.
    pub(crate) async fn link_durable(
        self: &Arc<Self>,
        actor: &Actor,
        feedback_id: &str,
        adapter_id: Option<String>,
        metadata: Option<serde_json::Map<String, serde_json::Value>>,
    ) -> Result<LinkOutcome, ServiceError> {
        check_org(&actor.org)?;
        let link = self.new_link(feedback_id, adapter_id, metadata)?;
        // Counted until the graph has been offered the change (see `InFlight`).
        let _in_flight = self.in_flight.enter();
        let unfinished = FinishOnDrop {
            service: self,
            org: actor.org.clone(),
            pending: Some(Arc::clone(&self.store).link(actor.clone(), link)),
        };
        let (linked, org) = unfinished.finish().await;
        let linked = linked?;
        self.graph.apply(&org, &linked.changes).wait_async().await;
        Ok(LinkOutcome {
            link: linked.link,
            created: linked.created,
        })
    }

    /// Checks a link request and builds its edge (source manual, made now).
    fn new_link(
        &self,
        feedback_id: &str,
        adapter_id: Option<String>,
        metadata: Option<serde_json::Map<String, serde_json::Value>>,
    ) -> Result<FeedbackLink, ServiceError> {
        let adapter_id = validate::check_id("adapter_id", adapter_id, &self.limits)?.ok_or(
            ValidationError::Missing {
                field: "adapter_id",
                hint: "",
            },
        )?;
        let adapter_id = validate::check_adapter_id("adapter_id", adapter_id)?;
        let metadata = validate::check_metadata("metadata", metadata, &self.limits)?;
        Ok(FeedbackLink {
            feedback_id: feedback_id.to_owned(),
            adapter_id,
            created_at: now_millis(),
            source: LinkSource::Manual,
            metadata,
        })
    }

    /// The FEEDBACK_FOR edges of one feedback item.
    pub fn links_of(
        &self,
        org: &str,
        feedback_id: &str,
    ) -> Result<Vec<FeedbackLink>, ServiceError> {
        Ok(self
            .store
            .get_record(org, feedback_id)?
            .map(|r| r.links)
            .unwrap_or_default())
    }

    /// Feedback linked to an adapter, newest first, with the total number of links.
    pub fn by_adapter(
        &self,
        org: &str,
        adapter_id: &str,
        q: &ByAdapterQuery,
    ) -> Result<ByAdapter, ServiceError> {
        let limit = effective_limit(q.limit)?;
        let (ids, total, more) = self.by_adapter_ids(org, adapter_id, q, limit)?;
        let (feedback, more) = match q.kind {
            None => (self.load(org, ids)?, more),
            Some(kind) => self.first_of_kind(org, ids, kind, limit)?,
        };
        let next_cursor = if more {
            feedback.last().map(|f| f.id.clone())
        } else {
            None
        };
        Ok(ByAdapter {
            adapter_id: adapter_id.to_owned(),
            count: feedback.len(),
            feedback,
            total_linked: total,
            next_cursor,
        })
    }

    /// The page [`Service::by_adapter`] answers, each item handed to `emit` as it is read
    /// in place instead of collected (for callers that render the page straight away).
    /// Returns the page's summary and `total_linked`.
    pub fn by_adapter_with(
        &self,
        org: &str,
        adapter_id: &str,
        q: &ByAdapterQuery,
        emit: &mut EmitView<'_>,
    ) -> Result<(ViewPage, usize), ServiceError> {
        let limit = effective_limit(q.limit)?;
        let (ids, total, more) = self.by_adapter_ids(org, adapter_id, q, limit)?;
        let (count, last, more) = self.emit_views(org, &ids, q.kind, limit, more, emit)?;
        let page = ViewPage {
            count,
            limit,
            next_cursor: if more {
                last.map(|id| id.to_string())
            } else {
                None
            },
        };
        Ok((page, total))
    }

    /// The ids of a by-adapter page newest first (every candidate when a kind must be
    /// read from the records), the adapter's `total_linked`, and whether more follow.
    fn by_adapter_ids(
        &self,
        org: &str,
        adapter_id: &str,
        q: &ByAdapterQuery,
        limit: usize,
    ) -> Result<(Vec<Arc<str>>, usize, bool), ServiceError> {
        let not_found = || ServiceError::NotFound {
            kind: "adapter",
            id: adapter_id.to_owned(),
        };
        let g = self.graph.org(org).ok_or_else(not_found)?;
        let (ids, total, more) = {
            let rows = if q.kind.is_some() { ALL_ROWS } else { limit };
            let (page, total) = self
                .by_adapter_rows(&g, adapter_id, q, rows, usize::MAX)?
                .unwrap_or_default();
            let ids: Vec<Arc<str>> = page
                .rows
                .iter()
                .filter_map(|&r| g.feedback().id(r).map(Arc::from))
                .collect();
            (ids, total, page.more)
        };
        Ok((ids, total, more))
    }

    /// Creates (or idempotently re-creates) an adapter with an optional parent.
    pub fn create_adapter(
        &self,
        actor: &Actor,
        new: NewAdapter,
    ) -> Result<(Adapter, AdapterOutcome), ServiceError> {
        check_org(&actor.org)?;
        let adapter = self.new_adapter(actor, new)?;
        let mut outcome = AdapterOutcome::Unchanged;
        // Counted until the graph has been offered the change (see `InFlight`).
        let _in_flight = self.in_flight.enter();
        let changes = self.store.write(actor, &mut |tx| {
            outcome = crate::store::create_adapter_in(tx, &adapter)?.1;
            Ok(())
        })?;
        self.graph.apply(&actor.org, &changes).wait();
        let stored = match changes.adapters.into_iter().next() {
            Some(a) => a,
            None => self.get_adapter(&actor.org, &adapter.id)?,
        };
        Ok((stored, outcome))
    }

    /// Checks an adapter request and builds the adapter it describes (source manual).
    fn new_adapter(&self, actor: &Actor, new: NewAdapter) -> Result<Adapter, ServiceError> {
        let l = &self.limits;
        let id = validate::check_id("id", new.id, l)?.ok_or(ValidationError::Missing {
            field: "id",
            hint: "",
        })?;
        let id = validate::check_adapter_id("id", id)?;
        let derived_from = match validate::check_id("derived_from", new.derived_from, l)? {
            Some(p) => Some(validate::check_adapter_id("derived_from", p)?),
            None => None,
        };
        Ok(Adapter {
            id,
            org_id: actor.org.clone(),
            version: validate::check_id("version", new.version, l)?,
            base_model: validate::check_id("base_model", new.base_model, l)?,
            derived_from,
            metadata: validate::check_metadata("metadata", new.metadata, l)?,
            created_at: now_millis(),
            source: LinkSource::Manual,
            record_version: 1,
        })
    }

    /// One adapter of the org.
    pub fn get_adapter(&self, org: &str, id: &str) -> Result<Adapter, ServiceError> {
        self.store
            .get_adapter(org, id)?
            .ok_or_else(|| ServiceError::NotFound {
                kind: "adapter",
                id: id.to_owned(),
            })
    }

    /// Checks import records without writing anything: every line's org, shape (the same
    /// checks as the API), ids, and references (a parent adapter or a linked feedback id
    /// must exist in the store or earlier in the file). Returns each problem with its line.
    pub fn check_import(
        &self,
        default_org: Option<&str>,
        records: &[(usize, ImportRecord)],
    ) -> Vec<(usize, String)> {
        use std::collections::HashSet;
        let mut problems = Vec::new();
        let mut adapters: HashSet<(String, String)> = HashSet::new();
        let mut feedback: HashSet<(String, String)> = HashSet::new();
        for (line, rec) in records {
            let line = *line;
            let org_of = |org: &Option<String>| -> Result<String, String> {
                let org = org
                    .clone()
                    .or_else(|| default_org.map(str::to_owned))
                    .ok_or("no 'org' on the line and no --org given")?;
                check_org(&org).map_err(|e| e.to_string())?;
                Ok(org)
            };
            let result: Result<(), String> = (|| match rec {
                ImportRecord::Feedback { org, id, item, .. } => {
                    let org = org_of(org)?;
                    let config = self
                        .score_config_for(&org, item.score_config.as_deref())
                        .map_err(|e| e.to_string())?;
                    self.validator
                        .validate_with((**item).clone(), config.as_ref())
                        .map_err(|e| e.to_string())?;
                    if let Some(id) = id {
                        validate::check_id("id", Some(id.clone()), &self.limits)
                            .map_err(|e| e.to_string())?;
                        feedback.insert((org.clone(), id.clone()));
                    }
                    if let Some(a) = &item.adapter_id {
                        adapters.insert((org, a.trim().to_owned()));
                    }
                    Ok(())
                }
                ImportRecord::Adapter { org, adapter } => {
                    let org = org_of(org)?;
                    let id = adapter.id.clone().ok_or("adapter line without 'id'")?;
                    validate::check_adapter_id("id", id.clone()).map_err(|e| e.to_string())?;
                    if let Some(p) = &adapter.derived_from {
                        let known = adapters.contains(&(org.clone(), p.clone()))
                            || matches!(self.store.get_adapter(&org, p), Ok(Some(_)));
                        if !known {
                            return Err(format!(
                                "parent adapter '{p}' is neither in the store nor earlier in the file"
                            ));
                        }
                    }
                    adapters.insert((org, id));
                    Ok(())
                }
                ImportRecord::Link {
                    org,
                    feedback_id,
                    adapter_id,
                    ..
                } => {
                    let org = org_of(org)?;
                    let fid = feedback_id
                        .clone()
                        .ok_or("link line without 'feedback_id'")?;
                    let aid = adapter_id.clone().ok_or("link line without 'adapter_id'")?;
                    validate::check_adapter_id("adapter_id", aid).map_err(|e| e.to_string())?;
                    let known = feedback.contains(&(org.clone(), fid.clone()))
                        || matches!(self.store.get_record(&org, &fid), Ok(Some(_)));
                    if !known {
                        return Err(format!(
                            "feedback '{fid}' is neither in the store nor earlier in the file"
                        ));
                    }
                    Ok(())
                }
            })();
            if let Err(e) = result {
                problems.push((line, e));
            }
        }
        problems
    }

    /// Imports parsed records: adapters and feedback go through the same validation as the
    /// API, ids that already exist are skipped (so a re-run is harmless). Consecutive
    /// lines of one org are written together, `sync_every` lines per durable write (1 if
    /// 0). `progress` is called after each record.
    pub fn import(
        &self,
        default_org: Option<&str>,
        actor_user: &str,
        records: Vec<(usize, ImportRecord)>,
        sync_every: usize,
        mut progress: impl FnMut(u64),
    ) -> Result<ImportSummary, (usize, ServiceError)> {
        let mut summary = ImportSummary::default();
        let chunk_len = sync_every.max(1);
        // Lines are checked and turned into writes first; a line that fails the checks
        // ends the import after the lines before it are written.
        let mut chunk: Vec<(usize, ImportOp)> = Vec::with_capacity(chunk_len.min(65536));
        let mut chunk_org: Option<String> = None;
        let mut done = 0u64;
        let mut records = records.into_iter();
        loop {
            let prepared = records
                .next()
                .map(|(line, rec)| (line, self.import_op(default_org, rec)));
            let flush = match &prepared {
                None | Some((_, Err(_))) => true,
                Some((_, Ok((org, _)))) => {
                    chunk.len() >= chunk_len || chunk_org.as_deref().is_some_and(|o| o != org)
                }
            };
            if flush && let Some(org) = chunk_org.take() {
                let actor = Actor::new(org, actor_user);
                let written = self.import_chunk(&actor, &chunk)?;
                summary.adapters += written.adapters;
                summary.feedback += written.feedback;
                summary.links += written.links;
                summary.skipped += written.skipped;
                done += chunk.len() as u64;
                progress(done);
                chunk.clear();
            }
            match prepared {
                None => return Ok(summary),
                Some((line, Err(e))) => return Err((line, e)),
                Some((line, Ok((org, op)))) => {
                    chunk_org = Some(org);
                    chunk.push((line, op));
                }
            }
        }
    }

    /// Checks one import line and turns it into the write it asks for, with its org.
    fn import_op(
        &self,
        default_org: Option<&str>,
        rec: ImportRecord,
    ) -> Result<(String, ImportOp), ServiceError> {
        let org_of = |org: Option<String>| {
            let org = org
                .or_else(|| default_org.map(str::to_owned))
                .ok_or_else(|| {
                    ServiceError::BadRequest("no 'org' on the line and no default org given".into())
                })?;
            check_org(&org)?;
            Ok::<_, ServiceError>(org)
        };
        Ok(match rec {
            ImportRecord::Adapter { org, adapter } => {
                let actor = Actor::new(org_of(org)?, "import");
                let a = self.new_adapter(&actor, adapter)?;
                (actor.org, ImportOp::Adapter(a))
            }
            ImportRecord::Feedback {
                org,
                id,
                created_at,
                item,
            } => {
                let org = org_of(org)?;
                let fb = self.prepare(*item, id, created_at, &org, None)?;
                (org, ImportOp::Feedback(Box::new(fb)))
            }
            ImportRecord::Link {
                org,
                feedback_id,
                adapter_id,
                metadata,
            } => {
                let org = org_of(org)?;
                let feedback_id =
                    feedback_id.ok_or(ServiceError::Invalid(ValidationError::Missing {
                        field: "feedback_id",
                        hint: "",
                    }))?;
                let link = self.new_link(&feedback_id, adapter_id, metadata)?;
                (org, ImportOp::Link(link))
            }
        })
    }

    /// Writes checked import lines of one org as one durable write and indexes them.
    fn import_chunk(
        &self,
        actor: &Actor,
        chunk: &[(usize, ImportOp)],
    ) -> Result<ImportSummary, (usize, ServiceError)> {
        let mut summary = ImportSummary::default();
        let mut failed_line = 0;
        // Counted until the graph has been offered the change (see `InFlight`).
        let _in_flight = self.in_flight.enter();
        let written = self.store.write(actor, &mut |tx: &mut dyn WriteTx| {
            summary = ImportSummary::default();
            for (line, op) in chunk {
                failed_line = *line;
                match op {
                    ImportOp::Adapter(a) => {
                        let (_, outcome) = crate::store::create_adapter_in(tx, a)?;
                        if outcome != AdapterOutcome::Unchanged {
                            summary.adapters += 1;
                        }
                    }
                    ImportOp::Feedback(fb) => match tx.insert_feedback(fb, ChangeAction::Import) {
                        Ok(()) => summary.feedback += 1,
                        Err(StoreError::Exists { .. }) => summary.skipped += 1,
                        Err(e) => return Err(e),
                    },
                    ImportOp::Link(link) => {
                        if crate::store::link_in(tx, link)? {
                            summary.links += 1;
                        }
                    }
                }
            }
            Ok(())
        });
        match written {
            Ok(changes) => {
                self.graph.apply(&actor.org, &changes).wait();
                Ok(summary)
            }
            Err(e) => Err((failed_line, e.into())),
        }
    }

    /// Checks the store's invariants (every record decodes; its history has exactly the
    /// versions 1..=version; its edges point at stored adapters; its lease at a stored
    /// batch; every adapter's parent exists and lineage ends) and that the graph index
    /// equals one rebuilt from the store now. Returns the first problem found, or `None`.
    pub fn verify(&self) -> Result<Option<String>, ServiceError> {
        let mut problem: Option<String> = None;
        self.store.for_each_record(&mut |org, r| {
            if problem.is_none() {
                problem = self.verify_record(org, &r)?;
            }
            Ok(())
        })?;
        if problem.is_some() {
            return Ok(problem);
        }
        let mut adapters: Vec<Adapter> = Vec::new();
        self.store.for_each_adapter(&mut |a| {
            adapters.push(a);
            Ok(())
        })?;
        for a in &adapters {
            let mut cursor = a.derived_from.clone();
            let mut steps = 0;
            while let Some(p) = cursor {
                steps += 1;
                if steps > adapters.len() {
                    return Ok(Some(format!(
                        "the lineage of adapter '{}' has a cycle",
                        a.id
                    )));
                }
                match self.store.get_adapter(&a.org_id, &p)? {
                    Some(parent) => cursor = parent.derived_from,
                    None => {
                        return Ok(Some(format!(
                            "adapter '{}' derives from missing adapter '{p}'",
                            a.id
                        )));
                    }
                }
            }
        }
        let fresh = GraphIndex::build_for(self.store.as_ref(), &|org| self.placement.serves(org))?
            .canonical();
        let live = self.graph.canonical();
        if fresh == live {
            return Ok(None);
        }
        for (org, g) in &fresh {
            let Some(l) = live.get(org) else {
                return Ok(Some(format!(
                    "org '{org}' is in the store but not in the graph"
                )));
            };
            if let Some((k, v)) = g.nodes.iter().find(|(k, v)| l.nodes.get(*k) != Some(v)) {
                return Ok(Some(format!(
                    "org '{org}': node {k} is {v:?} in the store but {:?} in the graph",
                    l.nodes.get(k)
                )));
            }
            if let Some(e) = g.edges.symmetric_difference(&l.edges).next() {
                return Ok(Some(format!("org '{org}': edge {e:?} differs")));
            }
            if g.nodes.len() != l.nodes.len() {
                return Ok(Some(format!("org '{org}': the graph has extra nodes")));
            }
        }
        Ok(Some("the graph has orgs the store does not".into()))
    }

    /// The first broken invariant of one stored record, if any (see [`Service::verify`]).
    fn verify_record(
        &self,
        org: &str,
        r: &crate::store::FeedbackRecord,
    ) -> Result<Option<String>, StoreError> {
        let f = &r.feedback;
        if f.org_id != org {
            return Ok(Some(format!(
                "feedback '{}' is stored under org '{org}' but its record names org '{}'",
                f.id, f.org_id
            )));
        }
        let versions = self
            .store
            .feedback_history_versions(&f.org_id, &f.id, f.version)?;
        if versions != (1..=f.version).collect::<Vec<_>>() {
            return Ok(Some(format!(
                "feedback '{}' of '{}' is at version {} but its history has {versions:?}",
                f.id, f.org_id, f.version
            )));
        }
        for l in &r.links {
            if self.store.get_adapter(&f.org_id, &l.adapter_id)?.is_none() {
                return Ok(Some(format!(
                    "feedback '{}' links to missing adapter '{}'",
                    f.id, l.adapter_id
                )));
            }
        }
        if let Some(lease) = r.lease
            && self.store.get_batch(&f.org_id, lease.batch_id)?.is_none()
        {
            return Ok(Some(format!(
                "feedback '{}' is leased to missing batch {}",
                f.id, lease.batch_id
            )));
        }
        Ok(None)
    }
}

/// Keeps the `keep` newest rows (by id), sorted newest first: a partial selection, so a
/// page of a hot adapter with 100k links does not sort all of them.
fn newest_first(rows: &mut Vec<FeedbackNode<'_>>, keep: usize) {
    let newer = |a: &FeedbackNode<'_>, b: &FeedbackNode<'_>| b.id.cmp(a.id);
    if rows.len() > keep {
        rows.select_nth_unstable_by(keep - 1, newer);
        rows.truncate(keep);
    }
    rows.sort_unstable_by(newer);
}

/// A page size that takes every matching row (for filters the graph cannot apply).
const ALL_ROWS: usize = usize::MAX / 4;

fn collect_page(g: &OrgGraph, q: &ListQuery, limit: usize) -> (Vec<Arc<str>>, bool) {
    let (Ok(model), Ok(session)) = (resolve(g, &q.model), resolve(g, &q.session)) else {
        return (Vec::new(), false);
    };
    let filter = Filter {
        feedback_type: q.feedback_type,
        status: q.status,
        unused: q.unused,
        model,
        session,
        since: None,
    };
    let cursor = q.cursor.as_deref();
    let mut ids = Vec::with_capacity(limit.min(64));
    let mut more = false;
    let mut push = |f: &FeedbackNode<'_>| {
        if ids.len() == limit {
            more = true;
            return false;
        }
        ids.push(Arc::from(f.id));
        true
    };
    match &q.adapter {
        Some(a) => {
            let Some(row) = g.adapter_row(a) else {
                return (Vec::new(), false);
            };
            let mut rows: Vec<FeedbackNode<'_>> = g
                .adapter_feedback(row)
                .filter_map(|r| g.feedback().get(r))
                .filter(|f| filter.matches(f) && cursor.is_none_or(|c| f.id < c))
                .collect();
            newest_first(&mut rows, limit + 1);
            for f in rows {
                if !push(&f) {
                    break;
                }
            }
        }
        None => {
            for r in g.feedback_newest_first(cursor) {
                if let Some(f) = g.feedback().get(r)
                    && filter.matches(&f)
                    && !push(&f)
                {
                    break;
                }
            }
        }
    }
    (ids, more)
}

/// A page cursor is the id of the last item of the previous page (its `next_cursor`): one
/// that names no item of the org did not come from a listing, and is refused rather than
/// answered with an empty page a client would take for the end of the list.
fn check_cursor(g: Option<&OrgGraph>, cursor: Option<&str>) -> Result<(), ServiceError> {
    match cursor {
        Some(c) if g.is_none_or(|g| g.feedback_row(c).is_none()) => {
            Err(ServiceError::BadRequest(format!(
                "invalid 'cursor' {:?}: it names no item of this org; pass back the \
                 'next_cursor' of the previous page",
                c.chars().take(80).collect::<String>()
            )))
        }
        _ => Ok(()),
    }
}

impl Stats {
    /// The stats of a set of items from what they add up to.
    fn from_counts(c: &Counts) -> Stats {
        Stats {
            total_feedback: c.total,
            positive_count: c.positive,
            negative_count: c.negative,
            pending_validation: c.pending,
            approved_count: c.approved,
            rejected_count: c.rejected,
            flagged_count: c.flagged,
            unused_for_training: c.total.saturating_sub(c.used),
            used_for_training: c.used,
            positive_ratio: if c.total > 0 {
                c.positive as f64 / c.total as f64
            } else {
                0.0
            },
            average_score: c.average_score(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::OrgGraph;
    use crate::model::Feedback;
    use proptest::prelude::*;

    fn graph_with(ids: &[u32]) -> OrgGraph {
        let mut g = OrgGraph::default();
        for id in ids {
            let f = Feedback::sample(&format!("f{id:06}"), "o");
            g.upsert_feedback(&f);
        }
        g
    }

    proptest! {
        #[test]
        fn partial_selection_equals_a_full_sort(
            ids in proptest::collection::hash_set(0u32..5000, 0..300),
            keep in 1usize..50,
        ) {
            let ids: Vec<u32> = ids.into_iter().collect();
            let g = graph_with(&ids);
            let mut rows: Vec<FeedbackNode<'_>> = g.feedback().iter().collect();
            newest_first(&mut rows, keep);
            let got: Vec<&str> = rows.iter().map(|f| f.id).collect();
            let mut all: Vec<&str> = g.feedback().iter().map(|f| f.id).collect();
            all.sort_unstable_by(|a, b| b.cmp(a));
            all.truncate(keep);
            prop_assert_eq!(got, all);
        }
    }
}
