//! Consistent reads across many calls: [`Backend::read_snapshot`] for PostgreSQL.
//!
//! A full backup reads an org through many backend calls (adapters, records with their
//! histories page by page, batches, idempotency keys, ...). Made on pooled connections as
//! usual, each call would see the database as of its own statement, so a write landing
//! between two of them could leave a backup holding a batch without its items' marks, or
//! a record naming an adapter the backup lacks. Inside `read_snapshot`, the calling thread
//! holds one connection in a `REPEATABLE READ READ ONLY` transaction, and every read of
//! that thread ([`PgStore::reader`]) runs on it: all of them see one snapshot, taken at
//! the first statement. Reads stay streamed (paged) as before; nothing more is buffered.
//!
//! [`Backend::read_snapshot`]: crate::store::Backend::read_snapshot

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::Mutex;
use std::thread::ThreadId;

use deadpool_postgres::Object;

use super::PgStore;
use super::ops::PgError;
use crate::store::StoreError;

/// The connections held by threads inside a snapshot.
#[derive(Default)]
pub struct Pinned(Mutex<HashMap<ThreadId, Object>>);

impl std::fmt::Debug for Pinned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pinned")
    }
}

impl Pinned {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ThreadId, Object>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn take(&self) -> Option<Object> {
        self.lock().remove(&std::thread::current().id())
    }

    fn put(&self, c: Object) {
        self.lock().insert(std::thread::current().id(), c);
    }

    fn held(&self) -> bool {
        self.lock().contains_key(&std::thread::current().id())
    }
}

/// A connection to read on: the calling thread's snapshot connection (given back on
/// drop), or a pooled one.
pub struct Reader<'a> {
    conn: Option<Object>,
    home: Option<&'a Pinned>,
}

impl Deref for Reader<'_> {
    type Target = Object;

    fn deref(&self) -> &Object {
        // `conn` is `Some` until drop.
        match &self.conn {
            Some(c) => c,
            None => unreachable!("a reader's connection is only taken on drop"),
        }
    }
}

impl Drop for Reader<'_> {
    fn drop(&mut self) {
        if let (Some(c), Some(home)) = (self.conn.take(), self.home) {
            home.put(c);
        }
    }
}

impl PgStore {
    /// A connection for a read: inside [`Backend::read_snapshot`](crate::store::Backend::read_snapshot)
    /// on this thread, the snapshot's; otherwise a pooled one.
    pub(super) async fn reader(&self) -> Result<Reader<'_>, PgError> {
        if let Some(c) = self.snapshots.take() {
            return Ok(Reader {
                conn: Some(c),
                home: Some(&self.snapshots),
            });
        }
        Ok(Reader {
            conn: Some(self.client().await?),
            home: None,
        })
    }

    /// Runs `work` with every read this thread makes on one `REPEATABLE READ READ ONLY`
    /// transaction. Nested calls share the outer snapshot.
    pub(super) fn snapshot(
        &self,
        work: &mut dyn FnMut() -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        if self.snapshots.held() {
            return work();
        }
        let c = self.run(async {
            let c = self.client().await?;
            c.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                .await?;
            Ok(c)
        })?;
        self.snapshots.put(c);
        let result = work();
        let Some(c) = self.snapshots.take() else {
            return result;
        };
        let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
        let ended = self.block(async { c.batch_execute(end).await });
        if ended.is_err() {
            // A connection whose state is unknown is not given back to the pool.
            let _ = Object::take(c);
        }
        result
    }
}
