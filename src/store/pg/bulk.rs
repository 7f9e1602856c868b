//! Bulk writes of the PostgreSQL backend: `COPY ... FROM STDIN (FORMAT binary)` instead of
//! one statement (and one round trip) per row, for `feedgraph load` and `restore`.
//!
//! Rows go straight into a table only where a plain `INSERT` was the semantics (a load's
//! feedback rows: an id already present fails the load). Where the row-at-a-time path
//! replaced what was there (`ON CONFLICT ... DO UPDATE`), rows are copied into a temporary
//! table dropped at commit and moved with one `INSERT ... SELECT ... ON CONFLICT`, which
//! behaves the same. Either way the target tables' row triggers fire for every row (COPY
//! fires `AFTER ... FOR EACH ROW` triggers as `INSERT` does), so the change log replicas
//! follow gets one entry per record, in the caller's transaction.

use deadpool_postgres::ClientWrapper;
use futures_util::pin_mut;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::Type;

use super::ops::PgError;
use crate::model::HistoryVersion;
use crate::store::{FeedbackRecord, StoreError, codec};

/// A `u64` as PostgreSQL's `bigint` (ids and versions never reach `i64::MAX`).
fn big(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn encode<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, PgError> {
    codec::encode(v).map_err(|e| PgError::Store(StoreError::Encode(e)))
}

/// A binary `COPY` into `table` (`columns` of `types`); write rows, then `finish`.
async fn copy_into(
    c: &ClientWrapper,
    table: &str,
    columns: &str,
    types: &[Type],
) -> Result<BinaryCopyInWriter, PgError> {
    let sink = c
        .copy_in(&format!(
            "COPY {table} ({columns}) FROM STDIN (FORMAT binary)"
        ))
        .await?;
    Ok(BinaryCopyInWriter::new(sink, types))
}

/// Creates the transaction's staging table `table` (dropped at COMMIT) with `columns`
/// (name, SQL type, wire type) and opens a binary `COPY` into it.
async fn copy_into_staging(
    c: &ClientWrapper,
    table: &str,
    columns: &[(&str, &str, Type)],
) -> Result<BinaryCopyInWriter, PgError> {
    let ddl: Vec<String> = columns.iter().map(|(n, t, _)| format!("{n} {t}")).collect();
    c.batch_execute(&format!(
        "CREATE TEMP TABLE IF NOT EXISTS {table} ({}) ON COMMIT DROP",
        ddl.join(", ")
    ))
    .await?;
    let names: Vec<&str> = columns.iter().map(|(n, _, _)| *n).collect();
    let types: Vec<Type> = columns.iter().map(|(_, _, t)| t.clone()).collect();
    copy_into(c, table, &names.join(", "), &types).await
}

/// Writes history entries `(kind, id, entry)` of `org` as [`super::ops::put_history`]
/// does for each (an entry already stored at that version is replaced).
pub async fn put_histories(
    c: &ClientWrapper,
    org: &str,
    entries: &[(u8, &str, HistoryVersion)],
) -> Result<(), PgError> {
    let writer = copy_into_staging(
        c,
        "fg_bulk_history",
        &[
            ("kind", "smallint", Type::INT2),
            ("id", "text", Type::TEXT),
            ("version", "bigint", Type::INT8),
            ("body", "bytea", Type::BYTEA),
        ],
    )
    .await?;
    pin_mut!(writer);
    for (kind, id, entry) in entries {
        let (kind, version, body) = (i16::from(*kind), big(entry.version), encode(entry)?);
        writer.as_mut().write(&[&kind, id, &version, &body]).await?;
    }
    writer.finish().await?;
    c.execute(
        "INSERT INTO fg_history (org_id, kind, id, version, body) \
         SELECT $1, kind, id, version, body FROM fg_bulk_history \
         ON CONFLICT (org_id, kind, id, version) DO UPDATE SET body = EXCLUDED.body",
        &[&org],
    )
    .await?;
    c.batch_execute("TRUNCATE fg_bulk_history").await?;
    Ok(())
}

/// Inserts feedback records of `org` that must not exist yet (a plain `INSERT`: an id
/// already stored fails the statement, and with it the caller's transaction).
pub async fn insert_feedback(
    c: &ClientWrapper,
    org: &str,
    records: &[FeedbackRecord],
) -> Result<(), PgError> {
    let writer = copy_into(
        c,
        "fg_feedback",
        "org_id, id, version, body",
        &[Type::TEXT, Type::TEXT, Type::INT8, Type::BYTEA],
    )
    .await?;
    pin_mut!(writer);
    for r in records {
        let (version, body) = (big(r.feedback.version), encode(r)?);
        writer
            .as_mut()
            .write(&[&org, &r.feedback.id, &version, &body])
            .await?;
    }
    writer.finish().await?;
    Ok(())
}

/// Writes feedback records of `org` replacing any stored under the same id, as a
/// restore's row-at-a-time upsert does.
pub async fn upsert_feedback(
    c: &ClientWrapper,
    org: &str,
    records: &[&FeedbackRecord],
) -> Result<(), PgError> {
    let writer = copy_into_staging(
        c,
        "fg_bulk_feedback",
        &[
            ("id", "text", Type::TEXT),
            ("version", "bigint", Type::INT8),
            ("body", "bytea", Type::BYTEA),
        ],
    )
    .await?;
    pin_mut!(writer);
    for r in records {
        let (version, body) = (big(r.feedback.version), encode(r)?);
        writer
            .as_mut()
            .write(&[&r.feedback.id, &version, &body])
            .await?;
    }
    writer.finish().await?;
    c.execute(
        "INSERT INTO fg_feedback (org_id, id, version, body) \
         SELECT $1, id, version, body FROM fg_bulk_feedback \
         ON CONFLICT (org_id, id) DO UPDATE SET version = EXCLUDED.version, body = EXCLUDED.body",
        &[&org],
    )
    .await?;
    c.batch_execute("TRUNCATE fg_bulk_feedback").await?;
    Ok(())
}

/// Writes idempotency keys `(user, key, at, body)` of `org`, replacing any stored under
/// the same user and key, as a restore's row-at-a-time upsert does.
pub async fn upsert_idempotency(
    c: &ClientWrapper,
    org: &str,
    keys: &[(String, String, i64, Vec<u8>)],
) -> Result<(), PgError> {
    let writer = copy_into_staging(
        c,
        "fg_bulk_idempotency",
        &[
            ("user_id", "text", Type::TEXT),
            ("key", "text", Type::TEXT),
            ("at", "bigint", Type::INT8),
            ("body", "bytea", Type::BYTEA),
        ],
    )
    .await?;
    pin_mut!(writer);
    for (user, key, at, body) in keys {
        writer.as_mut().write(&[user, key, at, body]).await?;
    }
    writer.finish().await?;
    c.execute(
        "INSERT INTO fg_idempotency (org_id, user_id, key, at, body) \
         SELECT $1, user_id, key, at, body FROM fg_bulk_idempotency \
         ON CONFLICT (org_id, user_id, key) DO UPDATE SET at = EXCLUDED.at, body = EXCLUDED.body",
        &[&org],
    )
    .await?;
    c.batch_execute("TRUNCATE fg_bulk_idempotency").await?;
    Ok(())
}
