//! The PostgreSQL backend's statements: each function runs inside a transaction the caller
//! opened on `c`, and applies the same rules (`store::rules`) as the sled backend.

use deadpool_postgres::ClientWrapper;
use tokio_postgres::error::SqlState;

use super::schema::{ADAPTER_LOCK_CLASS, IDEMPOTENCY_LOCK_CLASS};
use crate::model::{Actor, Adapter, ChangeAction, Feedback, HistoryVersion, Millis, ScoreConfig};
use crate::store::codec::{self, CodecError};
use crate::store::outbox::{self, Changed, OutboxEntry, Subject};
use crate::store::rules::{self, IdempotencyRecord, KeyVerdict};
use crate::store::{
    Batch, ChangeFn, ChangeSet, FeedbackRecord, IdempotencyKey, Inserted, StoreError, keys,
};

/// A failure inside a transaction: the driver's (kept whole, so the caller can tell a
/// retryable conflict from a broken connection) or the store's own.
#[derive(Debug)]
pub enum PgError {
    /// The database or the connection failed.
    Db(tokio_postgres::Error),
    /// A rule of the store refused the write, or a record did not decode.
    Store(StoreError),
}

impl From<tokio_postgres::Error> for PgError {
    fn from(e: tokio_postgres::Error) -> Self {
        PgError::Db(e)
    }
}

impl From<StoreError> for PgError {
    fn from(e: StoreError) -> Self {
        PgError::Store(e)
    }
}

impl PgError {
    /// Whether running the transaction again may succeed (it lost a race: a
    /// serialization failure or a deadlock the server broke).
    pub fn retryable(&self) -> bool {
        match self {
            PgError::Db(e) => matches!(
                e.code(),
                Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE
                    || *c == SqlState::T_R_DEADLOCK_DETECTED
            ),
            PgError::Store(_) => false,
        }
    }

    /// The store's view of the failure.
    pub fn into_store(self) -> StoreError {
        match self {
            PgError::Store(e) => e,
            PgError::Db(e) => db_error(e),
        }
    }
}

/// Turns a driver error into the store's: a lost or refused connection is
/// [`StoreError::Unavailable`] (503, retry later); anything else names the server's
/// message.
pub fn db_error(e: tokio_postgres::Error) -> StoreError {
    if e.is_closed() {
        return StoreError::Unavailable(format!("the database connection was lost: {e}"));
    }
    match e.as_db_error() {
        Some(db) => {
            let class = db.code().code().get(..2).unwrap_or("");
            // 08: connection exception, 57P: operator intervention (shutdown), 53: out of
            // resources: all mean "not now", not "never".
            if matches!(class, "08" | "53") || db.code().code().starts_with("57P") {
                StoreError::Unavailable(format!("the database refused: {}", db.message()))
            } else {
                StoreError::Backend(format!("postgres: {} ({})", db.message(), db.code().code()))
            }
        }
        None => StoreError::Unavailable(format!("the database cannot be reached: {e}")),
    }
}

pub(super) fn corrupt(table: &'static str, org: &str, id: &str, source: CodecError) -> StoreError {
    StoreError::Corrupt {
        tree: table,
        key: format!("{org}/{id}"),
        source,
    }
}

fn encode<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    codec::encode(v).map_err(StoreError::Encode)
}

/// One feedback record; `lock` takes its row lock until the transaction ends.
pub async fn get_record(
    c: &ClientWrapper,
    org: &str,
    id: &str,
    lock: bool,
) -> Result<Option<FeedbackRecord>, PgError> {
    // PostgreSQL text cannot hold NUL, and no stored id has one (validation refuses
    // control characters): such an id names nothing, rather than failing the statement.
    if id.contains('\0') {
        return Ok(None);
    }
    let sql = if lock {
        "SELECT body FROM fg_feedback WHERE org_id = $1 AND id = $2 FOR UPDATE"
    } else {
        "SELECT body FROM fg_feedback WHERE org_id = $1 AND id = $2"
    };
    let stmt = c.prepare_cached(sql).await?;
    let Some(row) = c.query_opt(&stmt, &[&org, &id]).await? else {
        return Ok(None);
    };
    let body: &[u8] = row.try_get(0)?;
    Ok(Some(
        codec::decode(body).map_err(|e| corrupt("fg_feedback", org, id, e))?,
    ))
}

/// One adapter.
pub async fn get_adapter(
    c: &ClientWrapper,
    org: &str,
    id: &str,
) -> Result<Option<Adapter>, PgError> {
    if id.contains('\0') {
        return Ok(None);
    }
    let stmt = c
        .prepare_cached("SELECT body FROM fg_adapters WHERE org_id = $1 AND id = $2")
        .await?;
    let Some(row) = c.query_opt(&stmt, &[&org, &id]).await? else {
        return Ok(None);
    };
    let body: &[u8] = row.try_get(0)?;
    Ok(Some(
        codec::decode(body).map_err(|e| corrupt("fg_adapters", org, id, e))?,
    ))
}

/// Writes (or rewrites) one history entry.
pub async fn put_history(
    c: &ClientWrapper,
    org: &str,
    kind: u8,
    id: &str,
    entry: &HistoryVersion,
) -> Result<(), PgError> {
    let stmt = c.prepare_cached(PUT_HISTORY).await?;
    let version = i64::try_from(entry.version).unwrap_or(i64::MAX);
    c.execute(
        &stmt,
        &[&org, &i16::from(kind), &id, &version, &encode(entry)?],
    )
    .await?;
    Ok(())
}

/// Every history entry of one record up to `up_to`, oldest first.
pub async fn history_of(
    c: &ClientWrapper,
    org: &str,
    kind: u8,
    id: &str,
    up_to: u64,
) -> Result<Vec<HistoryVersion>, PgError> {
    let stmt = c
        .prepare_cached(
            "SELECT body FROM fg_history WHERE org_id = $1 AND kind = $2 AND id = $3 \
             AND version <= $4 ORDER BY version",
        )
        .await?;
    let up_to = i64::try_from(up_to).unwrap_or(i64::MAX);
    let rows = c
        .query(&stmt, &[&org, &i16::from(kind), &id, &up_to])
        .await?;
    rows.iter()
        .map(|r| {
            let body: &[u8] = r.try_get(0)?;
            Ok(codec::decode(body).map_err(|e| corrupt("fg_history", org, id, e))?)
        })
        .collect()
}

/// Creates the adapter `id` (source auto) unless it exists; returns it if it did not.
pub async fn ensure_adapter(
    c: &ClientWrapper,
    actor: &Actor,
    id: &str,
    at: Millis,
) -> Result<Option<Adapter>, PgError> {
    let (adapter, entry) = rules::auto_adapter(actor, id, at);
    let stmt = c.prepare_cached(INSERT_ADAPTER_IF_NEW).await?;
    let n = c
        .execute(&stmt, &[&actor.org, &id, &encode(&adapter)?])
        .await?;
    if n == 0 {
        return Ok(None);
    }
    put_history(c, &actor.org, keys::KIND_ADAPTER, id, &entry).await?;
    emit(
        c,
        &actor.org,
        keys::KIND_ADAPTER,
        id,
        &entry,
        Changed::Adapter(&adapter),
    )
    .await?;
    Ok(Some(adapter))
}

/// Writes an adapter (new or changed) with its history entry.
pub async fn put_adapter(
    c: &ClientWrapper,
    actor: &Actor,
    adapter: &Adapter,
    entry: &HistoryVersion,
) -> Result<(), PgError> {
    let stmt = c
        .prepare_cached(
            "INSERT INTO fg_adapters (org_id, id, version, body) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (org_id, id) DO UPDATE SET version = EXCLUDED.version, body = EXCLUDED.body",
        )
        .await?;
    let version = i64::try_from(adapter.record_version).unwrap_or(i64::MAX);
    c.execute(
        &stmt,
        &[&actor.org, &adapter.id, &version, &encode(adapter)?],
    )
    .await?;
    put_history(c, &actor.org, keys::KIND_ADAPTER, &adapter.id, entry).await?;
    emit(
        c,
        &actor.org,
        keys::KIND_ADAPTER,
        &adapter.id,
        entry,
        Changed::Adapter(adapter),
    )
    .await
}

/// One score config, if present.
pub async fn get_score_config(
    c: &ClientWrapper,
    org: &str,
    name: &str,
) -> Result<Option<ScoreConfig>, PgError> {
    let stmt = c
        .prepare_cached("SELECT body FROM fg_score_configs WHERE org_id = $1 AND name = $2")
        .await?;
    let Some(row) = c.query_opt(&stmt, &[&org, &name]).await? else {
        return Ok(None);
    };
    let body: &[u8] = row.try_get(0)?;
    Ok(Some(
        codec::decode(body).map_err(|e| corrupt("fg_score_configs", org, name, e))?,
    ))
}

/// Writes a score config (new or a new version) with its history entry.
pub async fn put_score_config(
    c: &ClientWrapper,
    actor: &Actor,
    config: &ScoreConfig,
    entry: &HistoryVersion,
) -> Result<(), PgError> {
    let stmt = c
        .prepare_cached(
            "INSERT INTO fg_score_configs (org_id, name, version, body) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (org_id, name) DO UPDATE SET version = EXCLUDED.version, body = EXCLUDED.body",
        )
        .await?;
    let version = i64::try_from(config.version).unwrap_or(i64::MAX);
    c.execute(
        &stmt,
        &[&actor.org, &config.name, &version, &encode(config)?],
    )
    .await?;
    put_history(c, &actor.org, keys::KIND_SCORE_CONFIG, &config.name, entry).await
}

/// Holds the org's adapter writes until the transaction ends (lineage checks).
pub async fn lock_adapters(c: &ClientWrapper, org: &str) -> Result<(), PgError> {
    let stmt = c
        .prepare_cached("SELECT pg_advisory_xact_lock($1, hashtext($2))")
        .await?;
    c.query_one(&stmt, &[&ADAPTER_LOCK_CLASS, &org]).await?;
    Ok(())
}

/// A submit's writes in one statement (see [`insert_record`]): the record, then, only if
/// it was new, its history entry and the adapter it names (unless that exists). Returns
/// whether the record was new and whether the adapter was.
const INSERT_SUBMIT: &str = "WITH f AS (INSERT INTO fg_feedback (org_id, id, version, body) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (org_id, id) DO NOTHING RETURNING 1), \
     h AS (INSERT INTO fg_history (org_id, kind, id, version, body) \
         SELECT $1, $5::smallint, $2, $6::bigint, $7::bytea FROM f \
         ON CONFLICT (org_id, kind, id, version) DO UPDATE SET body = EXCLUDED.body RETURNING 1), \
     a AS (INSERT INTO fg_adapters (org_id, id, version, body) \
         SELECT $1, $8::text, 1, $9::bytea FROM f WHERE $8::text IS NOT NULL \
         ON CONFLICT (org_id, id) DO NOTHING RETURNING 1) \
     SELECT (SELECT count(*) FROM f), (SELECT count(*) FROM h), (SELECT count(*) FROM a)";
const INSERT_ADAPTER_IF_NEW: &str = "INSERT INTO fg_adapters (org_id, id, version, body) \
     VALUES ($1, $2, 1, $3) ON CONFLICT (org_id, id) DO NOTHING";
const PUT_HISTORY: &str = "INSERT INTO fg_history (org_id, kind, id, version, body) \
     VALUES ($1, $2, $3, $4, $5) \
     ON CONFLICT (org_id, kind, id, version) DO UPDATE SET body = EXCLUDED.body";
const ENDPOINTS: &str = "SELECT id FROM fg_webhooks WHERE org_id = $1 AND enabled \
     AND (mask & $2) <> 0 ORDER BY id";

/// Stores a new item with its history, adapter and edge, at most once per idempotency
/// key. What the caller's transaction commits is what this returns.
///
/// `begin`: the transaction is not open yet and this sends its `BEGIN`. The statements
/// every submit makes (`BEGIN`, the record, the adapter auto-create, the history entry,
/// the org's webhook endpoints for the event) go out together and are answered in one
/// round trip (tokio-postgres pipelines requests that are in flight at once); only a new
/// adapter or an org with endpoints adds statements. Their answers are read in the order
/// sent, so the first failure reported is the one that aborted the transaction, and the
/// caller commits only if every one succeeded.
#[allow(clippy::too_many_arguments)]
pub async fn insert_record(
    c: &ClientWrapper,
    actor: &Actor,
    fb: &Feedback,
    action: ChangeAction,
    key: Option<&IdempotencyKey>,
    now: Millis,
    ttl_ms: Millis,
    begin: bool,
) -> Result<Inserted, PgError> {
    let mut begin = begin;
    if let Some(k) = key {
        if begin {
            c.batch_execute("BEGIN").await?;
            begin = false;
        }
        // Uses of one key wait for each other: the second sees the first's entry.
        let stmt = c
            .prepare_cached("SELECT pg_advisory_xact_lock($1, hashtext($2))")
            .await?;
        let lock_name = format!("{}\u{1f}{}\u{1f}{}", actor.org, actor.user, k.key);
        c.query_one(&stmt, &[&IDEMPOTENCY_LOCK_CLASS, &lock_name])
            .await?;
        let stmt = c
            .prepare_cached(
                "SELECT body FROM fg_idempotency WHERE org_id = $1 AND user_id = $2 AND key = $3",
            )
            .await?;
        if let Some(row) = c
            .query_opt(&stmt, &[&actor.org, &actor.user, &k.key])
            .await?
        {
            let body: &[u8] = row.try_get(0)?;
            let seen: IdempotencyRecord = codec::decode(body)
                .map_err(|e| corrupt("fg_idempotency", &actor.org, &k.key, e))?;
            let original = get_record(c, &actor.org, &seen.feedback_id, false)
                .await?
                .map(|r| r.feedback);
            if let KeyVerdict::Replay(existing) =
                rules::judge_key(k, Some(&seen), original, now, ttl_ms)?
            {
                return Ok(Inserted::Replay(existing));
            }
        }
    }
    let record = rules::new_record(fb);
    let entry = rules::submit_entry(actor, fb, action);
    let auto = fb
        .adapter_id
        .as_deref()
        .map(|id| (id, rules::auto_adapter(actor, id, fb.created_at)));
    let event = outbox::event_for(keys::KIND_FEEDBACK, &entry);
    // Everything encoded and every statement prepared (cached after the first use)
    // before the first request goes out.
    let s_submit = c.prepare_cached(INSERT_SUBMIT).await?;
    let s_endpoints = match event {
        Some(_) => Some(c.prepare_cached(ENDPOINTS).await?),
        None => None,
    };
    let version = i64::try_from(fb.version).unwrap_or(i64::MAX);
    let entry_version = i64::try_from(entry.version).unwrap_or(i64::MAX);
    let (record_body, entry_body) = (encode(&record)?, encode(&entry)?);
    let (adapter_id, adapter_body) = match &auto {
        Some((id, (adapter, _))) => (Some(*id), Some(encode(adapter)?)),
        None => (None, None),
    };
    let mask = event.map_or(0, |e| i32::try_from(e.bit()).unwrap_or(0));
    let kind = i16::from(keys::KIND_FEEDBACK);
    let org = &actor.org;
    // `join3` polls its futures in order, so the requests are sent in this order.
    let (began, written, endpoints) = futures_util::future::join3(
        async {
            if begin {
                c.batch_execute("BEGIN").await
            } else {
                Ok(())
            }
        },
        c.query_one(
            &s_submit,
            &[
                org,
                &fb.id,
                &version,
                &record_body,
                &kind,
                &entry_version,
                &entry_body,
                &adapter_id,
                &adapter_body,
            ],
        ),
        async {
            match &s_endpoints {
                Some(s) => c.query(s, &[org, &mask]).await,
                None => Ok(Vec::new()),
            }
        },
    )
    .await;
    began?;
    let written = written?;
    let (inserted, adapter_new): (i64, i64) = (written.try_get(0)?, written.try_get(2)?);
    if inserted == 0 {
        return Err(PgError::Store(StoreError::Exists {
            kind: "feedback",
            id: fb.id.clone(),
        }));
    }
    let adapter_new = adapter_new == 1;
    let endpoints = endpoints?;
    let mut cs = ChangeSet::default();
    if let (true, Some((id, (adapter, adapter_entry)))) = (adapter_new, auto) {
        put_history(c, org, keys::KIND_ADAPTER, id, &adapter_entry).await?;
        emit(
            c,
            org,
            keys::KIND_ADAPTER,
            id,
            &adapter_entry,
            Changed::Adapter(&adapter),
        )
        .await?;
        cs.adapters.push(adapter);
    }
    if let Some(event) = event {
        let endpoints = endpoints
            .iter()
            .map(|r| r.try_get::<_, String>(0))
            .collect::<Result<Vec<_>, _>>()?;
        emit_to(
            c,
            org,
            keys::KIND_FEEDBACK,
            &fb.id,
            &entry,
            event,
            Changed::Feedback(&record),
            endpoints,
        )
        .await?;
    }
    if let Some(k) = key {
        let seen = IdempotencyRecord {
            feedback_id: fb.id.clone(),
            request_hash: k.request_hash,
            at: now,
        };
        let stmt = c
            .prepare_cached(
                "INSERT INTO fg_idempotency (org_id, user_id, key, at, body) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (org_id, user_id, key) \
                 DO UPDATE SET at = EXCLUDED.at, body = EXCLUDED.body",
            )
            .await?;
        let at = i64::try_from(now).unwrap_or(i64::MAX);
        c.execute(
            &stmt,
            &[&actor.org, &actor.user, &k.key, &at, &encode(&seen)?],
        )
        .await?;
    }
    cs.links = record.links.clone();
    cs.feedback.push(record);
    Ok(Inserted::New(cs))
}

/// Changes one record under its row lock (see [`crate::store::WriteTx::update_feedback`]).
pub async fn update_record(
    c: &ClientWrapper,
    actor: &Actor,
    id: &str,
    at: Millis,
    change: ChangeFn<'_>,
) -> Result<Option<FeedbackRecord>, PgError> {
    let Some(current) = get_record(c, &actor.org, id, true).await? else {
        return Err(PgError::Store(StoreError::NotFound {
            kind: "feedback",
            id: id.to_owned(),
        }));
    };
    let Some((mut next, action, changes)) = change(&current)? else {
        return Ok(None);
    };
    if current.feedback.version == 1 {
        let first = history_of(c, &actor.org, keys::KIND_FEEDBACK, id, 1).await?;
        if let Some(full) = first
            .first()
            .and_then(|e| rules::written_out_creation(&current.feedback, e))
        {
            put_history(c, &actor.org, keys::KIND_FEEDBACK, id, &full).await?;
        }
    }
    next.feedback.version = current.feedback.version + 1;
    next.feedback.updated_at = at.max(current.feedback.updated_at);
    let entry = HistoryVersion {
        version: next.feedback.version,
        at,
        actor: actor.user.clone(),
        action,
        changes,
    };
    put_history(c, &actor.org, keys::KIND_FEEDBACK, id, &entry).await?;
    emit(
        c,
        &actor.org,
        keys::KIND_FEEDBACK,
        id,
        &entry,
        Changed::Feedback(&next),
    )
    .await?;
    let stmt = c
        .prepare_cached(
            "UPDATE fg_feedback SET version = $3, body = $4 WHERE org_id = $1 AND id = $2",
        )
        .await?;
    let version = i64::try_from(next.feedback.version).unwrap_or(i64::MAX);
    c.execute(&stmt, &[&actor.org, &id, &version, &encode(&next)?])
        .await?;
    Ok(Some(next))
}

/// Takes the org's next batch id.
pub async fn next_batch_id(c: &ClientWrapper, org: &str) -> Result<u64, PgError> {
    let stmt = c
        .prepare_cached(
            "INSERT INTO fg_batch_ids (org_id, next) VALUES ($1, 1) ON CONFLICT (org_id) \
             DO UPDATE SET next = fg_batch_ids.next + 1 RETURNING next",
        )
        .await?;
    let row = c.query_one(&stmt, &[&org]).await?;
    let next: i64 = row.try_get(0)?;
    Ok(u64::try_from(next).unwrap_or(0))
}

/// Writes a batch with its history entry.
pub async fn put_batch(
    c: &ClientWrapper,
    org: &str,
    batch: &Batch,
    entry: &HistoryVersion,
) -> Result<(), PgError> {
    let batch_id = batch.id.to_string();
    put_history(c, org, keys::KIND_BATCH, &batch_id, entry).await?;
    emit(
        c,
        org,
        keys::KIND_BATCH,
        &batch_id,
        entry,
        Changed::Batch(batch),
    )
    .await?;
    let stmt = c
        .prepare_cached(
            "INSERT INTO fg_batches (org_id, id, body) VALUES ($1, $2, $3) \
             ON CONFLICT (org_id, id) DO UPDATE SET body = EXCLUDED.body",
        )
        .await?;
    let id = i64::try_from(batch.id).unwrap_or(i64::MAX);
    c.execute(&stmt, &[&org, &id, &encode(batch)?]).await?;
    Ok(())
}

/// One batch.
pub async fn get_batch(c: &ClientWrapper, org: &str, id: u64) -> Result<Option<Batch>, PgError> {
    get_batch_locked(c, org, id, false).await
}

/// One batch; `lock` takes its row lock until the transaction ends.
pub async fn get_batch_locked(
    c: &ClientWrapper,
    org: &str,
    id: u64,
    lock: bool,
) -> Result<Option<Batch>, PgError> {
    let sql = if lock {
        "SELECT body FROM fg_batches WHERE org_id = $1 AND id = $2 FOR UPDATE"
    } else {
        "SELECT body FROM fg_batches WHERE org_id = $1 AND id = $2"
    };
    let stmt = c.prepare_cached(sql).await?;
    let key = i64::try_from(id).unwrap_or(i64::MAX);
    let Some(row) = c.query_opt(&stmt, &[&org, &key]).await? else {
        return Ok(None);
    };
    let body: &[u8] = row.try_get(0)?;
    Ok(Some(codec::decode(body).map_err(|e| {
        corrupt("fg_batches", org, &id.to_string(), e)
    })?))
}

/// Decodes each row's `body` column (the last one selected) as `T`.
pub fn decode_rows<T: codec::Stored>(
    table: &'static str,
    org: &str,
    rows: &[tokio_postgres::Row],
) -> Result<Vec<T>, PgError> {
    rows.iter()
        .map(|r| {
            let body: &[u8] = r.try_get(r.len().saturating_sub(1))?;
            Ok(codec::decode(body).map_err(|e| corrupt(table, org, "?", e))?)
        })
        .collect()
}

/// Locks the rows of the feedback items `ids` that no other transaction holds
/// (`FOR UPDATE SKIP LOCKED`) and returns their ids in the order given: claimers on
/// several replicas split candidates between them instead of queueing on each other.
pub async fn lock_for_claim(
    c: &ClientWrapper,
    org: &str,
    ids: &[String],
) -> Result<Vec<String>, PgError> {
    let stmt = c
        .prepare_cached(
            "SELECT id FROM fg_feedback WHERE org_id = $1 AND id = ANY($2) \
             FOR UPDATE SKIP LOCKED",
        )
        .await?;
    let rows = c.query(&stmt, &[&org, &ids]).await?;
    let mut locked = std::collections::HashSet::with_capacity(rows.len());
    for r in &rows {
        locked.insert(r.try_get::<_, String>(0)?);
    }
    Ok(ids
        .iter()
        .filter(|id| locked.contains(*id))
        .cloned()
        .collect())
}

/// Adds the outbox entries of one change (see `store::outbox`) in the change's own
/// transaction: one per enabled endpoint of the org that receives its event. An org with
/// no endpoint costs one indexed read.
pub async fn emit(
    c: &ClientWrapper,
    org: &str,
    kind: u8,
    id: &str,
    entry: &HistoryVersion,
    changed: Changed<'_>,
) -> Result<(), PgError> {
    let Some(event) = outbox::event_for(kind, entry) else {
        return Ok(());
    };
    let stmt = c.prepare_cached(ENDPOINTS).await?;
    let mask = i32::try_from(event.bit()).unwrap_or(0);
    let endpoints = c
        .query(&stmt, &[&org, &mask])
        .await?
        .iter()
        .map(|r| r.try_get::<_, String>(0))
        .collect::<Result<Vec<_>, _>>()?;
    emit_to(c, org, kind, id, entry, event, changed, endpoints).await
}

/// Adds the outbox entries of one change for the `endpoints` (ids, in order) that
/// receive its `event`; none costs nothing.
#[allow(clippy::too_many_arguments)]
async fn emit_to(
    c: &ClientWrapper,
    org: &str,
    kind: u8,
    id: &str,
    entry: &HistoryVersion,
    event: outbox::EventType,
    changed: Changed<'_>,
    endpoints: Vec<String>,
) -> Result<(), PgError> {
    if endpoints.is_empty() {
        return Ok(());
    }
    let event_id = format!("evt-{}", ulid::Ulid::new());
    let body = outbox::payload(&event_id, event, org, entry.at, &entry.actor, changed);
    let insert = c
        .prepare_cached(
            "INSERT INTO fg_outbox (org_id, endpoint_id, kind, id, version, body) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (org_id, endpoint_id, kind, id, version) DO UPDATE SET body = EXCLUDED.body",
        )
        .await?;
    let version = i64::try_from(entry.version).unwrap_or(i64::MAX);
    for endpoint_id in endpoints {
        let e = OutboxEntry {
            endpoint_id,
            org_id: org.to_owned(),
            subject: Subject {
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
        c.execute(
            &insert,
            &[
                &org,
                &e.endpoint_id,
                &i16::from(kind),
                &id,
                &version,
                &encode(&e)?,
            ],
        )
        .await?;
    }
    Ok(())
}

/// Creates or replaces an erasure record (job or receipt).
pub async fn put_erasure(
    c: &ClientWrapper,
    org: &str,
    record: &super::super::ErasureRecord,
) -> Result<(), PgError> {
    let stmt = c
        .prepare_cached(
            "INSERT INTO fg_erasures (org_id, id, running, body) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (org_id, id) DO UPDATE SET running = EXCLUDED.running, body = EXCLUDED.body",
        )
        .await?;
    let running = record.state == super::super::ErasureState::Running;
    c.execute(&stmt, &[&org, &record.id, &running, &encode(record)?])
        .await?;
    Ok(())
}
