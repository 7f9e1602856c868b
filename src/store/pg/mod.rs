//! The PostgreSQL backend (`storage.backend = "postgres"`): the same records and rules as
//! the sled backend, kept in a PostgreSQL database, so that several feedgraph processes
//! can share one store and a database team's backups and replication cover it.
//!
//! Each write is one PostgreSQL transaction, acknowledged only after COMMIT returns (with
//! `synchronous_commit` on, the server's default, that is after the WAL reached disk).
//! Writers of one record are serialised by its row lock (`SELECT ... FOR UPDATE`), adapter
//! writes of one org by an advisory lock (so lineage checks hold), uses of one idempotency
//! key by another. A transaction that loses a race (deadlock, serialization failure) runs
//! again from the start; that is why [`crate::store::Backend::write`]'s closure may run more
//! than once.
//!
//! The driver is tokio-postgres with a deadpool pool: the service's synchronous calls
//! (from blocking threads) run their statements on a small runtime the backend owns, and
//! submits run as tasks on it, so a client that hangs up never cuts a transaction short.

mod backup;
mod bulk;
mod events;
pub mod follow;
pub mod ops;
pub mod schema;
mod snapshot;

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{ClientWrapper, Manager, ManagerConfig, Object, Pool, RecyclingMethod};

use self::ops::PgError;
use super::{
    Backend, Batch, BatchWritten, BoxFuture, ChangeFn, ChangeSet, ErasureRecord, FeedbackRecord,
    IdempotencyKey, Inserted, Linked, RecordHeadRef, StorageConfig, StoreError, WriteTx, codec,
    keys, rules,
};
use crate::model::{
    Actor, Adapter, ChangeAction, Feedback, FeedbackLink, FieldChange, HistoryVersion, Millis,
    ScoreConfig, now_millis,
};

/// How many times a write that lost a race is run again before its error is returned.
const MAX_ATTEMPTS: usize = 8;

/// The PostgreSQL-backed store. Share it behind an `Arc`; every method takes `&self`.
pub struct PgStore {
    pool: Pool,
    /// Drives the pool's connections and the statements of synchronous calls; shut down
    /// in the background on drop (dropping a runtime may happen on a runtime thread).
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
    idempotency_ttl_ms: Millis,
    /// `host:port/db` of the database, for messages (never the password).
    target: String,
    /// A small pool of its own for batch ids, taken and committed outside the claim's
    /// transaction so that the org's counter row is never held while a claim runs.
    counter_pool: Pool,
    /// Wake-ups between writes, the change-log notifier and the follower.
    signals: Arc<follow::Signals>,
    /// Connections held in a `REPEATABLE READ READ ONLY` transaction by the threads inside
    /// [`Backend::read_snapshot`]: every read such a thread makes goes through its own.
    snapshots: snapshot::Pinned,
    /// The webhook delivery leases' holders of this process, released at shutdown.
    leases: events::Leases,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// Where a connection string points, without credentials.
fn describe(config: &tokio_postgres::Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".into());
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config.get_dbname().unwrap_or("(default)");
    format!("{host}:{port}/{db}")
}

impl PgStore {
    /// Connects to the database of `config.postgres` and applies any migration it lacks.
    /// Fails with [`StoreError::Unavailable`] if the database cannot be reached.
    pub fn open(config: &StorageConfig) -> Result<Self, StoreError> {
        let pg = &config.postgres;
        if pg.url.trim().is_empty() {
            return Err(StoreError::Backend(
                "storage.backend is \"postgres\" but storage.postgres.url is not set \
                 (e.g. postgres://feedgraph@127.0.0.1:5432/feedgraph)"
                    .into(),
            ));
        }
        let pg_config: tokio_postgres::Config = pg
            .url
            .parse()
            .map_err(|e| StoreError::Backend(format!("storage.postgres.url: {e}")))?;
        let target = describe(&pg_config);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("feedgraph-pg")
            .enable_all()
            .build()
            .map_err(|source| StoreError::Io {
                context: "starting the PostgreSQL client runtime".into(),
                source,
            })?;
        let counter_manager = Manager::from_config(
            pg_config.clone(),
            tokio_postgres::NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let listen_config = pg_config.clone();
        let manager = Manager::from_config(
            pg_config,
            tokio_postgres::NoTls,
            ManagerConfig {
                // No statement on checkout: a connection whose transaction did not end
                // cleanly never comes back to the pool (see `OpenTx`).
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let wait = Duration::from_millis(pg.connect_timeout_ms.max(1));
        let pool = Pool::builder(manager)
            .max_size(pg.pool_size.max(1))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(wait))
            .create_timeout(Some(wait))
            .build()
            .map_err(|e| StoreError::Backend(format!("building the connection pool: {e}")))?;
        let counter_pool = Pool::builder(counter_manager)
            .max_size(2)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(wait))
            .create_timeout(Some(wait))
            .build()
            .map_err(|e| StoreError::Backend(format!("building the connection pool: {e}")))?;
        let signals = Arc::new(follow::Signals::default());
        follow::start(
            runtime.handle(),
            pool.clone(),
            listen_config,
            signals.clone(),
        );
        let store = PgStore {
            counter_pool,
            signals,
            snapshots: snapshot::Pinned::default(),
            leases: events::Leases::default(),
            pool,
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
            idempotency_ttl_ms: config.idempotency_ttl_secs.saturating_mul(1000),
            target,
        };
        store.run(store.migrate())?;
        tracing::info!(database = %store.target, "PostgreSQL store open");
        Ok(store)
    }

    /// Runs `fut` on the backend's runtime from a synchronous caller (a blocking thread,
    /// never a runtime's worker) and returns its result.
    fn run<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, PgError>>,
    ) -> Result<T, StoreError> {
        self.block(fut).map_err(PgError::into_store)
    }

    /// Blocks on `fut` on the backend's runtime. On a worker of a multi-threaded runtime
    /// (a caller that should have used a blocking thread) it first tells the runtime this
    /// thread blocks, rather than panicking.
    fn block<F: std::future::Future>(&self, fut: F) -> F::Output {
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| self.handle.block_on(fut))
            }
            _ => self.handle.block_on(fut),
        }
    }

    /// A pooled connection; none free within the timeout is [`StoreError::Unavailable`].
    async fn client(&self) -> Result<Object, PgError> {
        self.pool.get().await.map_err(|e| {
            PgError::Store(StoreError::Unavailable(format!(
                "no connection to the database at {}: {e}",
                self.target
            )))
        })
    }

    /// Applies the migrations the database lacks, in order, under the migration lock.
    async fn migrate(&self) -> Result<(), PgError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.execute(
            "SELECT pg_advisory_xact_lock($1)",
            &[&schema::MIGRATION_LOCK],
        )
        .await?;
        tx.batch_execute(schema::MIGRATIONS_TABLE).await?;
        let done: Vec<i32> = tx
            .query("SELECT version FROM fg_schema_migrations", &[])
            .await?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?;
        let newest = schema::MIGRATIONS.iter().map(|m| m.0).max().unwrap_or(0);
        if let Some(&found) = done.iter().find(|&&v| v > newest) {
            return Err(PgError::Store(StoreError::Schema {
                found: u32::try_from(found).unwrap_or(0),
            }));
        }
        for (version, note, sql) in schema::MIGRATIONS {
            if done.contains(version) {
                continue;
            }
            tracing::info!(version, note, "applying database migration");
            tx.batch_execute(sql).await?;
            tx.execute(
                "INSERT INTO fg_schema_migrations (version, note) VALUES ($1, $2)",
                &[version, note],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Runs `body` inside a transaction on one connection (handed to it and back), again
    /// from the start when it lost a race, and commits. A COMMIT whose answer is lost is
    /// [`StoreError::CommitUnknown`].
    async fn transact<'a, T, F>(&self, body: F) -> Result<T, PgError>
    where
        F: FnMut(OpenTx) -> BoxFuture<'a, (OpenTx, Result<T, PgError>)>,
    {
        self.transact_with(false, body).await
    }

    /// [`PgStore::transact`] whose `body` sends the `BEGIN` itself (with its first
    /// statements, in one round trip) when `body_begins`.
    async fn transact_with<'a, T, F>(&self, body_begins: bool, mut body: F) -> Result<T, PgError>
    where
        F: FnMut(OpenTx) -> BoxFuture<'a, (OpenTx, Result<T, PgError>)>,
    {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let client = OpenTx(Some(self.client().await?));
            if !body_begins {
                client.batch_execute("BEGIN").await?;
            }
            let (client, result) = body(client).await;
            match result {
                Ok(v) => {
                    return match client.batch_execute("COMMIT").await {
                        Ok(()) => {
                            client.release();
                            self.signals.wrote();
                            Ok(v)
                        }
                        Err(e) => {
                            let e = commit_error(e);
                            if e.retryable() && attempt < MAX_ATTEMPTS {
                                continue;
                            }
                            Err(e)
                        }
                    };
                }
                Err(e) => {
                    if client.batch_execute("ROLLBACK").await.is_ok() {
                        client.release();
                    }
                    if e.retryable() && attempt < MAX_ATTEMPTS {
                        continue;
                    }
                    return Err(e);
                }
            }
        }
    }

    /// Removes idempotency keys older than the TTL; returns how many.
    pub fn sweep_idempotency(&self) -> Result<usize, StoreError> {
        let cutoff =
            i64::try_from(now_millis().saturating_sub(self.idempotency_ttl_ms)).unwrap_or(i64::MAX);
        self.run(async {
            let c = self.client().await?;
            let n = c
                .execute("DELETE FROM fg_idempotency WHERE at <= $1", &[&cutoff])
                .await?;
            Ok(usize::try_from(n).unwrap_or(usize::MAX))
        })
    }
}

/// The error of a failed COMMIT: if the connection broke, the outcome is unknown.
fn commit_error(e: tokio_postgres::Error) -> PgError {
    if e.is_closed() || e.as_db_error().is_none() {
        PgError::Store(StoreError::CommitUnknown(format!(
            "the database connection broke during COMMIT: {e}"
        )))
    } else {
        PgError::Db(e)
    }
}

/// A pooled connection on which this process may have a transaction open. The pool
/// recycles connections without a statement (`RecyclingMethod::Fast`: a `ROLLBACK` on
/// every checkout was a round trip per write), so a connection goes back to it only
/// through [`OpenTx::release`], after its COMMIT or ROLLBACK succeeded. Dropped any other
/// way (a failed COMMIT or ROLLBACK, a panic, a future dropped mid-transaction) it is
/// detached from the pool and closed, and the server rolls back whatever was open.
pub(crate) struct OpenTx(Option<Object>);

impl OpenTx {
    /// Gives the connection back to the pool: its transaction has ended.
    fn release(mut self) {
        drop(self.0.take());
    }
}

impl std::ops::Deref for OpenTx {
    type Target = Object;

    fn deref(&self) -> &Object {
        match &self.0 {
            Some(c) => c,
            None => unreachable!("an OpenTx's connection is only taken on release or drop"),
        }
    }
}

impl Drop for OpenTx {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            drop(Object::take(c));
        }
    }
}

/// One [`Backend::write`] on PostgreSQL: every step runs in the transaction the write
/// opened on its connection.
struct PgTx<'s> {
    store: &'s PgStore,
    client: &'s ClientWrapper,
    actor: &'s Actor,
    changes: ChangeSet,
    adapters_locked: bool,
    /// The step failed in a way that running the write again may cure.
    retry: bool,
    /// A statement failed: PostgreSQL has aborted the transaction, so it must not be
    /// committed whatever the closure did with the error.
    failed: bool,
}

impl PgTx<'_> {
    fn run<T>(
        &mut self,
        fut: impl std::future::Future<Output = Result<T, PgError>>,
    ) -> Result<T, StoreError> {
        match self.store.block(fut) {
            Ok(v) => Ok(v),
            Err(e) => {
                self.retry |= e.retryable();
                self.failed |= matches!(e, PgError::Db(_));
                Err(e.into_store())
            }
        }
    }
}

impl WriteTx for PgTx<'_> {
    fn actor(&self) -> &Actor {
        self.actor
    }

    fn insert_feedback(&mut self, fb: &Feedback, action: ChangeAction) -> Result<(), StoreError> {
        let (c, actor, now) = (self.client, self.actor, now_millis());
        let ttl = self.store.idempotency_ttl_ms;
        match self.run(ops::insert_record(
            c, actor, fb, action, None, now, ttl, false,
        ))? {
            Inserted::New(cs) => {
                self.changes.feedback.extend(cs.feedback);
                self.changes.adapters.extend(cs.adapters);
                self.changes.links.extend(cs.links);
                Ok(())
            }
            Inserted::Replay(existing) => Err(StoreError::Exists {
                kind: "feedback",
                id: existing.id,
            }),
        }
    }

    fn get_record(&mut self, id: &str) -> Result<Option<FeedbackRecord>, StoreError> {
        let (c, org) = (self.client, &self.actor.org);
        self.run(ops::get_record(c, org, id, false))
    }

    fn update_feedback(
        &mut self,
        id: &str,
        at: Millis,
        change: ChangeFn<'_>,
    ) -> Result<Option<FeedbackRecord>, StoreError> {
        let mut before: Vec<crate::model::FeedbackLink> = Vec::new();
        let (c, actor) = (self.client, self.actor);
        let mut observe = |cur: &FeedbackRecord| {
            before.clone_from(&cur.links);
            change(cur)
        };
        let updated = self.run(ops::update_record(c, actor, id, at, &mut observe))?;
        if let Some(next) = &updated {
            self.changes.push_update(&before, next);
        }
        Ok(updated)
    }

    fn ensure_adapter(&mut self, id: &str, at: Millis) -> Result<(), StoreError> {
        let (c, actor) = (self.client, self.actor);
        if let Some(a) = self.run(ops::ensure_adapter(c, actor, id, at))? {
            self.changes.adapters.push(a);
        }
        Ok(())
    }

    fn lock_adapters(&mut self) -> Result<(), StoreError> {
        if !self.adapters_locked {
            let (c, org) = (self.client, &self.actor.org);
            self.run(ops::lock_adapters(c, org))?;
            self.adapters_locked = true;
        }
        Ok(())
    }

    fn get_adapter(&mut self, id: &str) -> Result<Option<Adapter>, StoreError> {
        let (c, org) = (self.client, &self.actor.org);
        self.run(ops::get_adapter(c, org, id))
    }

    fn get_score_config(&mut self, name: &str) -> Result<Option<ScoreConfig>, StoreError> {
        let (c, org) = (self.client, &self.actor.org);
        self.run(ops::get_score_config(c, org, name))
    }

    fn put_score_config(
        &mut self,
        config: &ScoreConfig,
        entry: &HistoryVersion,
    ) -> Result<(), StoreError> {
        let (c, actor) = (self.client, self.actor);
        self.run(ops::put_score_config(c, actor, config, entry))
    }

    fn put_adapter(&mut self, adapter: &Adapter, entry: &HistoryVersion) -> Result<(), StoreError> {
        let (c, actor) = (self.client, self.actor);
        self.run(ops::put_adapter(c, actor, adapter, entry))?;
        self.changes.adapters.push(adapter.clone());
        Ok(())
    }

    fn next_batch_id(&mut self) -> Result<u64, StoreError> {
        // Taken and committed on a connection of its own: holding the org's counter row
        // until this write commits would queue every other claim of the org behind it.
        // A write that then fails leaves the id unused; ids are never reused.
        let (store, org) = (self.store, &self.actor.org);
        self.run(async move {
            let c = store.counter_pool.get().await.map_err(|e| {
                PgError::Store(StoreError::Unavailable(format!(
                    "no connection to the database at {}: {e}",
                    store.target
                )))
            })?;
            ops::next_batch_id(&c, org).await
        })
    }

    fn put_batch(
        &mut self,
        batch: &Batch,
        action: ChangeAction,
        changes: Vec<FieldChange>,
    ) -> Result<(), StoreError> {
        let entry = HistoryVersion {
            version: batch.version,
            at: now_millis(),
            actor: self.actor.user.clone(),
            action,
            changes,
        };
        let (c, org) = (self.client, &self.actor.org);
        self.run(ops::put_batch(c, org, batch, &entry))
    }

    fn get_batch_for_update(&mut self, id: u64) -> Result<Option<Batch>, StoreError> {
        let (c, org) = (self.client, &self.actor.org);
        self.run(ops::get_batch_locked(c, org, id, true))
    }

    fn lock_for_claim(&mut self, ids: &[String]) -> Result<Vec<String>, StoreError> {
        let (c, org) = (self.client, &self.actor.org);
        self.run(ops::lock_for_claim(c, org, ids))
    }

    fn rewrite_feedback_history(
        &mut self,
        id: &str,
        edit: &mut dyn FnMut(&mut HistoryVersion) -> bool,
    ) -> Result<(), StoreError> {
        let (c, org) = (self.client, &self.actor.org);
        let entries = self.run(ops::history_of(c, org, keys::KIND_FEEDBACK, id, u64::MAX))?;
        for mut entry in entries {
            if edit(&mut entry) {
                self.run(ops::put_history(c, org, keys::KIND_FEEDBACK, id, &entry))?;
            }
        }
        Ok(())
    }

    fn put_erasure(&mut self, record: &ErasureRecord) -> Result<(), StoreError> {
        let (c, org) = (self.client, &self.actor.org);
        self.run(ops::put_erasure(c, org, record))
    }
}

/// Rows a scan reads per round trip: scans run page by page, so the callback runs
/// outside any database call and may use the store itself.
const SCAN_PAGE: i64 = 2000;

/// What a paged scan hands each row to: its org and its `body`.
type RowFn<'f> = &'f mut dyn FnMut(&str, &[u8]) -> Result<(), StoreError>;

/// Decodes a scanned row's `body`; a body that does not decode is corruption, reported
/// with its table and org.
fn decode_scanned<T: codec::Stored>(
    table: &'static str,
    org: &str,
    body: &[u8],
) -> Result<T, StoreError> {
    codec::decode(body).map_err(|source| StoreError::Corrupt {
        tree: table,
        key: format!("{org}/?"),
        source,
    })
}

/// What a paged scan reads.
#[derive(Debug, Clone, Copy)]
enum Scan<'a> {
    /// Every feedback record, by org and id.
    Feedback,
    /// One org's feedback records, by id.
    FeedbackOf(&'a str),
    /// Every adapter, by org and id.
    Adapters,
}

impl PgStore {
    /// Hands the org and body of every row of `scan` to `f`, in key order, reading
    /// [`SCAN_PAGE`] rows at a time (keyset paging, so a page costs the same anywhere).
    fn scan_bodies(&self, scan: Scan<'_>, f: RowFn<'_>) -> Result<(), StoreError> {
        let (mut last_org, mut last_id) = (String::new(), String::new());
        let mut first = true;
        loop {
            let rows = self.run(async {
                let c = self.reader().await?;
                let rows = match scan {
                    Scan::Feedback | Scan::Adapters => {
                        let table = if matches!(scan, Scan::Feedback) {
                            "fg_feedback"
                        } else {
                            "fg_adapters"
                        };
                        let sql = format!(
                            "SELECT org_id, id, body FROM {table} \
                             WHERE $3 OR (org_id, id) > ($1, $2) ORDER BY org_id, id LIMIT $4"
                        );
                        c.query(&sql, &[&last_org, &last_id, &first, &SCAN_PAGE])
                            .await?
                    }
                    Scan::FeedbackOf(org) => {
                        c.query(
                            "SELECT org_id, id, body FROM fg_feedback \
                             WHERE org_id = $1 AND ($3 OR id > $2) ORDER BY id LIMIT $4",
                            &[&org, &last_id, &first, &SCAN_PAGE],
                        )
                        .await?
                    }
                };
                Ok(rows)
            })?;
            for row in &rows {
                let org: &str = row.try_get(0).map_err(ops::db_error)?;
                let body: &[u8] = row.try_get(2).map_err(ops::db_error)?;
                f(org, body)?;
            }
            let Some(tail) = rows.last() else {
                return Ok(());
            };
            last_org = tail.try_get(0).map_err(ops::db_error)?;
            last_id = tail.try_get(1).map_err(ops::db_error)?;
            first = false;
            if (rows.len() as i64) < SCAN_PAGE {
                return Ok(());
            }
        }
    }
}

impl Backend for PgStore {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn submit(
        self: Arc<Self>,
        actor: Actor,
        fb: Feedback,
        idempotency: Option<IdempotencyKey>,
    ) -> BoxFuture<'static, Result<Inserted, StoreError>> {
        let handle = self.handle.clone();
        // A task on the backend's runtime: it commits even if the caller stops waiting.
        let task = handle.spawn(async move {
            let ttl = self.idempotency_ttl_ms;
            let (actor, fb, key) = (&actor, &fb, idempotency.as_ref());
            self.transact_with(true, |c| {
                Box::pin(async move {
                    let r = ops::insert_record(
                        &c,
                        actor,
                        fb,
                        ChangeAction::Submit,
                        key,
                        now_millis(),
                        ttl,
                        true,
                    )
                    .await;
                    (c, r)
                })
            })
            .await
            .map_err(PgError::into_store)
        });
        Box::pin(async move {
            task.await
                .map_err(|e| StoreError::Backend(format!("the submit task failed: {e}")))?
        })
    }

    fn submit_many(
        self: Arc<Self>,
        actor: Actor,
        items: Vec<(Feedback, Option<IdempotencyKey>)>,
    ) -> BoxFuture<'static, Result<BatchWritten, StoreError>> {
        let handle = self.handle.clone();
        let task = handle.spawn(async move {
            let ttl = self.idempotency_ttl_ms;
            // One transaction for the batch; an item's own refusal is decided before any
            // statement of it fails, so it does not abort the others.
            let (actor, items) = (&actor, &items);
            self.transact(|c| {
                Box::pin(async move {
                    let r = insert_all(&c, actor, items, ttl).await;
                    (c, r)
                })
            })
            .await
            .map_err(PgError::into_store)
        });
        Box::pin(async move {
            task.await
                .map_err(|e| StoreError::Backend(format!("the batch task failed: {e}")))?
        })
    }

    fn submit_blocking(
        &self,
        actor: &Actor,
        fb: &Feedback,
        idempotency: Option<&IdempotencyKey>,
    ) -> Result<Inserted, StoreError> {
        let ttl = self.idempotency_ttl_ms;
        self.run(self.transact_with(true, |c| {
            Box::pin(async move {
                let r = ops::insert_record(
                    &c,
                    actor,
                    fb,
                    ChangeAction::Submit,
                    idempotency,
                    now_millis(),
                    ttl,
                    true,
                )
                .await;
                (c, r)
            })
        }))
    }

    fn link(
        self: Arc<Self>,
        actor: Actor,
        link: FeedbackLink,
    ) -> BoxFuture<'static, Result<Linked, StoreError>> {
        // One transaction (`link_in` under `write`) on a blocking thread of the backend's
        // runtime: it commits even if the caller stops waiting.
        let handle = self.handle.clone();
        let task = handle.spawn_blocking(move || super::link_by_write(&*self, &actor, &link));
        Box::pin(async move {
            task.await
                .map_err(|e| StoreError::Backend(format!("the link task failed: {e}")))?
        })
    }

    fn write(
        &self,
        actor: &Actor,
        work: &mut dyn FnMut(&mut dyn WriteTx) -> Result<(), StoreError>,
    ) -> Result<ChangeSet, StoreError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let client = OpenTx(Some(self.run(self.client())?));
            self.run(async { Ok(client.batch_execute("BEGIN").await?) })?;
            let mut tx = PgTx {
                store: self,
                client: &client,
                actor,
                changes: ChangeSet::default(),
                adapters_locked: false,
                retry: false,
                failed: false,
            };
            let mut done = work(&mut tx);
            let (changes, retry) = (std::mem::take(&mut tx.changes), tx.retry);
            if done.is_ok() && tx.failed {
                // The closure swallowed a statement's error: the transaction is aborted.
                done = Err(StoreError::Backend(
                    "a statement failed inside the write; nothing was stored".into(),
                ));
            }
            match done {
                Ok(()) => {
                    let committed = self.block(async { client.batch_execute("COMMIT").await });
                    match committed {
                        Ok(()) => {
                            client.release();
                            self.signals.wrote();
                            return Ok(changes);
                        }
                        Err(e) => {
                            let e = commit_error(e);
                            if !(e.retryable() && attempt < MAX_ATTEMPTS) {
                                return Err(e.into_store());
                            }
                        }
                    }
                }
                Err(e) => {
                    if self
                        .block(async { client.batch_execute("ROLLBACK").await })
                        .is_ok()
                    {
                        client.release();
                    }
                    if !(retry && attempt < MAX_ATTEMPTS) {
                        return Err(e);
                    }
                }
            }
        }
    }

    fn load(
        &self,
        actor: &Actor,
        adapters: &[Adapter],
        records: &[FeedbackRecord],
        progress: &mut dyn FnMut(u64),
    ) -> Result<(), (StoreError, bool)> {
        // One transaction: all or nothing, so a failed load leaves nothing to take back.
        // The records go in chunks; the count of those written is reported while the
        // transaction runs (the transaction's future must be `Send`, `progress` is not).
        let done = std::sync::atomic::AtomicU64::new(0);
        let transaction = self.transact(|c| {
            let done = &done;
            Box::pin(async move {
                let r = load_all(&c, actor, adapters, records, done).await;
                (c, r)
            })
        });
        let written = self.run(async {
            tokio::pin!(transaction);
            let mut tick = tokio::time::interval(LOAD_PROGRESS_EVERY);
            let mut shown = 0;
            loop {
                tokio::select! {
                    r = &mut transaction => break r,
                    _ = tick.tick() => {
                        let n = done.load(std::sync::atomic::Ordering::Relaxed);
                        if n != shown {
                            shown = n;
                            progress(n);
                        }
                    }
                }
            }
        });
        if written.is_ok() {
            progress(records.len() as u64);
        }
        written.map_err(|e| {
            let partial = matches!(e, StoreError::CommitUnknown(_));
            (e, partial)
        })
    }

    fn read_snapshot(
        &self,
        work: &mut dyn FnMut() -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        self.snapshot(work)
    }

    fn orgs(&self) -> Result<Vec<String>, StoreError> {
        PgStore::orgs(self)
    }

    fn for_each_record_with_history(
        &self,
        org: &str,
        f: &mut dyn FnMut(FeedbackRecord, Vec<HistoryVersion>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        PgStore::for_each_record_with_history(self, org, f)
    }

    fn for_each_idempotency(
        &self,
        org: &str,
        f: &mut dyn FnMut(&str, &str, rules::IdempotencyRecord) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        PgStore::for_each_idempotency(self, org, f)
    }

    fn restore(&self, org: &str, entries: &[super::backup::BackupEntry]) -> Result<(), StoreError> {
        PgStore::restore(self, org, entries)
    }

    fn get_record(&self, org: &str, id: &str) -> Result<Option<FeedbackRecord>, StoreError> {
        self.run(async {
            let c = self.reader().await?;
            ops::get_record(&c, org, id, false).await
        })
    }

    fn get_many(&self, org: &str, ids: &[&str]) -> Result<Vec<Option<Feedback>>, StoreError> {
        let found = self.run(async {
            let c = self.reader().await?;
            let stmt = c
                .prepare_cached(
                    "SELECT id, body FROM fg_feedback WHERE org_id = $1 AND id = ANY($2)",
                )
                .await?;
            // No stored id holds NUL, which PostgreSQL text refuses: leave such ids out.
            let ids: Vec<&str> = ids
                .iter()
                .copied()
                .filter(|id| !id.contains('\0'))
                .collect();
            let rows = c.query(&stmt, &[&org, &ids]).await?;
            let mut found = std::collections::HashMap::with_capacity(rows.len());
            for row in &rows {
                let id: String = row.try_get(0)?;
                let body: &[u8] = row.try_get(1)?;
                let r: FeedbackRecord =
                    codec::decode(body).map_err(|source| StoreError::Corrupt {
                        tree: "fg_feedback",
                        key: format!("{org}/{id}"),
                        source,
                    })?;
                found.insert(id, r.feedback);
            }
            Ok(found)
        })?;
        let mut found = found;
        Ok(ids.iter().map(|id| found.remove(*id)).collect())
    }

    fn get_adapter(&self, org: &str, id: &str) -> Result<Option<Adapter>, StoreError> {
        self.run(async {
            let c = self.reader().await?;
            ops::get_adapter(&c, org, id).await
        })
    }

    fn adapters_of(&self, org: &str) -> Result<Vec<Adapter>, StoreError> {
        self.run(async {
            let c = self.reader().await?;
            let rows = c
                .query(
                    "SELECT body FROM fg_adapters WHERE org_id = $1 ORDER BY id",
                    &[&org],
                )
                .await?;
            ops::decode_rows("fg_adapters", org, &rows)
        })
    }

    fn for_each_record_of(
        &self,
        org: &str,
        f: &mut dyn FnMut(FeedbackRecord) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        self.scan_bodies(Scan::FeedbackOf(org), &mut |org, body| {
            let r = decode_scanned("fg_feedback", org, body)?;
            f(r)
        })
    }

    fn feedback_history(&self, org: &str, id: &str) -> Result<Vec<HistoryVersion>, StoreError> {
        self.run(async {
            let c = self.reader().await?;
            let Some(current) = ops::get_record(&c, org, id, false).await? else {
                return Ok(Vec::new());
            };
            let mut entries =
                ops::history_of(&c, org, keys::KIND_FEEDBACK, id, current.feedback.version).await?;
            rules::expand_creation(&current.feedback, &mut entries);
            Ok(entries)
        })
    }

    fn adapter_history(&self, org: &str, id: &str) -> Result<Vec<HistoryVersion>, StoreError> {
        self.run(async {
            let c = self.reader().await?;
            let current = ops::get_adapter(&c, org, id)
                .await?
                .map_or(0, |a| a.record_version);
            ops::history_of(&c, org, keys::KIND_ADAPTER, id, current).await
        })
    }

    fn get_score_config(&self, org: &str, name: &str) -> Result<Option<ScoreConfig>, StoreError> {
        self.run(async {
            let c = self.reader().await?;
            ops::get_score_config(&c, org, name).await
        })
    }

    fn score_configs_of(&self, org: &str) -> Result<Vec<ScoreConfig>, StoreError> {
        self.run(async {
            let c = self.reader().await?;
            let rows = c
                .query(
                    "SELECT body FROM fg_score_configs WHERE org_id = $1 ORDER BY name",
                    &[&org],
                )
                .await?;
            ops::decode_rows("fg_score_configs", org, &rows)
        })
    }

    fn score_config_history(
        &self,
        org: &str,
        name: &str,
    ) -> Result<Vec<HistoryVersion>, StoreError> {
        self.run(async {
            let c = self.reader().await?;
            let current = ops::get_score_config(&c, org, name)
                .await?
                .map_or(0, |s| s.version);
            ops::history_of(&c, org, keys::KIND_SCORE_CONFIG, name, current).await
        })
    }

    fn batch_history(&self, org: &str, id: u64) -> Result<Vec<HistoryVersion>, StoreError> {
        self.run(async {
            let c = self.reader().await?;
            let current = ops::get_batch(&c, org, id).await?.map_or(0, |b| b.version);
            ops::history_of(&c, org, keys::KIND_BATCH, &id.to_string(), current).await
        })
    }

    fn get_batch(&self, org: &str, id: u64) -> Result<Option<Batch>, StoreError> {
        self.run(async {
            let c = self.reader().await?;
            ops::get_batch(&c, org, id).await
        })
    }

    fn batches_of(&self, org: &str) -> Result<Vec<Batch>, StoreError> {
        self.run(async {
            let c = self.reader().await?;
            let rows = c
                .query(
                    "SELECT body FROM fg_batches WHERE org_id = $1 ORDER BY id",
                    &[&org],
                )
                .await?;
            ops::decode_rows("fg_batches", org, &rows)
        })
    }

    fn batches_page(
        &self,
        org: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Batch>, StoreError> {
        let before = before.map_or(i64::MAX, |b| i64::try_from(b).unwrap_or(i64::MAX));
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.run(async {
            let c = self.reader().await?;
            let rows = c
                .query(
                    "SELECT body FROM fg_batches WHERE org_id = $1 AND id < $2 \
                     ORDER BY id DESC LIMIT $3",
                    &[&org, &before, &limit],
                )
                .await?;
            ops::decode_rows("fg_batches", org, &rows)
        })
    }

    fn for_each_record_head(
        &self,
        f: &mut dyn FnMut(&str, RecordHeadRef<'_>),
    ) -> Result<(), StoreError> {
        self.scan_bodies(Scan::Feedback, &mut |org, body| {
            let head: RecordHeadRef<'_> =
                codec::decode_prefix_borrowed(body).map_err(|source| StoreError::Corrupt {
                    tree: "fg_feedback",
                    key: format!("{org}/?"),
                    source,
                })?;
            f(org, head);
            Ok(())
        })
    }

    fn for_each_adapter(
        &self,
        f: &mut dyn FnMut(Adapter) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        self.scan_bodies(Scan::Adapters, &mut |org, body| {
            let a = decode_scanned("fg_adapters", org, body)?;
            f(a)
        })
    }

    fn for_each_record(
        &self,
        f: &mut dyn FnMut(&str, FeedbackRecord) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        self.scan_bodies(Scan::Feedback, &mut |org, body| {
            let r = decode_scanned("fg_feedback", org, body)?;
            f(org, r)
        })
    }

    fn feedback_history_versions(
        &self,
        org: &str,
        id: &str,
        up_to: u64,
    ) -> Result<Vec<u64>, StoreError> {
        self.run(async {
            let c = self.reader().await?;
            let entries = ops::history_of(&c, org, keys::KIND_FEEDBACK, id, up_to).await?;
            Ok(entries.iter().map(|h| h.version).collect())
        })
    }

    fn get_erasure(&self, org: &str, id: &str) -> Result<Option<ErasureRecord>, StoreError> {
        self.run(async {
            let c = self.reader().await?;
            let rows = c
                .query(
                    "SELECT body FROM fg_erasures WHERE org_id = $1 AND id = $2",
                    &[&org, &id],
                )
                .await?;
            Ok(ops::decode_rows("fg_erasures", org, &rows)?.pop())
        })
    }

    fn erasures_page(
        &self,
        org: &str,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ErasureRecord>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.run(async {
            let c = self.reader().await?;
            let rows = c
                .query(
                    "SELECT body FROM fg_erasures WHERE org_id = $1 AND ($2::text IS NULL OR id < $2) \
                     ORDER BY id DESC LIMIT $3",
                    &[&org, &before, &limit],
                )
                .await?;
            ops::decode_rows("fg_erasures", org, &rows)
        })
    }

    fn unfinished_erasures(&self) -> Result<Vec<ErasureRecord>, StoreError> {
        self.run(async {
            let c = self.reader().await?;
            let rows = c
                .query(
                    "SELECT org_id, body FROM fg_erasures WHERE running ORDER BY id",
                    &[],
                )
                .await?;
            let mut out: Vec<ErasureRecord> = ops::decode_rows("fg_erasures", "*", &rows)?;
            out.sort_by(|a, b| a.requested_at.cmp(&b.requested_at).then(a.id.cmp(&b.id)));
            Ok(out)
        })
    }

    fn check_writable(&self) -> Result<(), StoreError> {
        self.run(async {
            let c = self.client().await?;
            c.batch_execute("SELECT 1").await?;
            Ok(())
        })
    }

    fn flush(&self) -> Result<(), StoreError> {
        // Every acknowledged write was committed; there is nothing to flush. This runs at
        // shutdown: the webhook delivery leases this process holds are given up now, so
        // another replica takes those endpoints over at once instead of after
        // `webhooks.lease_ms` (best effort: a lease not released still lapses).
        if let Err(e) = self.release_leases_at_shutdown() {
            tracing::warn!("could not release the webhook delivery leases: {e}");
        }
        Ok(())
    }

    fn vacuum_erased(&self) -> Result<(), StoreError> {
        // A plain VACUUM (not FULL): dead row versions become reusable space without a
        // table lock; their bytes stay in the files until overwritten, and in the WAL
        // until it is recycled (see README, Data lifecycle).
        self.run(async {
            let c = self.client().await?;
            c.batch_execute("VACUUM fg_feedback, fg_history").await?;
            Ok(())
        })
    }

    fn register_metrics(&self, _registry: &mut prometheus_client::registry::Registry) {}

    fn events(&self) -> &dyn super::outbox::EventStore {
        self
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn change_log(&self) -> Option<&dyn super::ChangeLog> {
        Some(self)
    }
}

/// Stores each item of a batch inside the caller's transaction. An item's own refusal
/// (its idempotency key reused for another request) is decided before any statement of it
/// fails, so it does not abort the others.
async fn insert_all(
    c: &ClientWrapper,
    actor: &Actor,
    items: &[(Feedback, Option<IdempotencyKey>)],
    ttl: Millis,
) -> Result<BatchWritten, PgError> {
    let mut outcomes = Vec::with_capacity(items.len());
    for (fb, key) in items {
        let one = ops::insert_record(
            c,
            actor,
            fb,
            ChangeAction::Submit,
            key.as_ref(),
            now_millis(),
            ttl,
            false,
        )
        .await;
        match one {
            Ok(inserted) => outcomes.push(Ok(inserted)),
            Err(PgError::Store(e @ (StoreError::Conflict(_) | StoreError::Exists { .. }))) => {
                outcomes.push(Err(e))
            }
            Err(e) => return Err(e),
        }
    }
    Ok(BatchWritten {
        outcomes,
        stopped: None,
    })
}

/// Writes a checked dump inside the caller's transaction: adapters, then records with
/// their `import` history entries.
async fn load_all(
    c: &ClientWrapper,
    actor: &Actor,
    adapters: &[Adapter],
    records: &[FeedbackRecord],
    done: &std::sync::atomic::AtomicU64,
) -> Result<(), PgError> {
    // A retried transaction starts over.
    done.store(0, std::sync::atomic::Ordering::Relaxed);
    for a in adapters {
        let entry = rules::import_entry(actor, a.record_version, a.created_at);
        ops::put_adapter(c, actor, a, &entry).await?;
    }
    // Per chunk: its history entries, then its records (whose row trigger writes the
    // change log), each with one COPY in this transaction: no round trip per row, and a
    // count of records written to show.
    let org = actor.org.as_str();
    let mut written = 0u64;
    for chunk in records.chunks(LOAD_CHUNK) {
        let histories: Vec<(u8, &str, HistoryVersion)> = chunk
            .iter()
            .map(|r| {
                let f = &r.feedback;
                let entry = rules::import_entry(actor, f.version, f.created_at);
                (keys::KIND_FEEDBACK, f.id.as_str(), entry)
            })
            .collect();
        bulk::put_histories(c, org, &histories).await?;
        bulk::insert_feedback(c, org, chunk).await?;
        written += chunk.len() as u64;
        done.store(written, std::sync::atomic::Ordering::Relaxed);
    }
    Ok(())
}

/// Records per COPY of a load: large enough that a statement's round trips do not show,
/// small enough that progress moves every second or so.
const LOAD_CHUNK: usize = 50_000;

/// How often a load's progress is reported while its transaction runs.
const LOAD_PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_millis(250);
