//! The online rewrite: copies the live keys of every tree into a fresh database while the
//! store keeps serving, then swaps it in, so erased bytes leave the disk without a
//! restart (see `store::compact` for the directory layout and the `CURRENT` pointer).
//!
//! 1. Under the swap gate (held exclusively for a moment: no write is changing sled), a
//!    subscriber is registered on every tree of the current database, so every change
//!    from then on is seen. sled hands each change to a subscriber through a bounded
//!    channel that a writer blocks on when it is full, so one thread per tree drains its
//!    subscriber into a set of changed keys in memory.
//! 2. Every key and value is copied into a new database in `sled.gen<N>`, with writes
//!    going on. A key changed during the copy may be copied in either state; it is in the
//!    changed set, and the catch-up copies it again.
//! 3. Catch-up passes, still online: the changed keys are read from the old database and
//!    written to the new one (or removed from it), until few are left.
//! 4. The final step holds writes off (the gate, exclusively): the drainers empty their
//!    channels (no write is in flight, so every change is in them) and stop, the last
//!    changed keys are copied, the new database is flushed and every file of it fsynced,
//!    `CURRENT` is switched to it (atomic, fsynced), the syncer is pointed at it and the
//!    store's handle swapped. Writers then go on in the new database. Only this step
//!    pauses writes; readers are never held.
//! 5. The old directory is deleted once sled let go of it, and the rewrite is recorded in
//!    the `meta` tree (`rewrite \0 <cutoff>` -> when the old files were deleted), which
//!    answers "when did this erasure's bytes leave the disk".
//!
//! Nothing acknowledged is lost: a write acknowledged before the swap was made durable
//! in the old database, which stays current until `CURRENT` names the new one, and the
//! new one holds it (copied or caught up) and is durable before `CURRENT` changes. A crash
//! at any point leaves `CURRENT` naming one whole database; `compact::recover` deletes the
//! other at the next open, and the marker of the erasures stays until a swap, so the
//! rewrite runs again.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use sled::IVec;

use super::super::compact::{self, CompactReport};
use super::{SledStore, StoreError, Trees};
use crate::model::{Millis, now_millis};

/// Keys per batch of the bulk copy.
const COPY_BATCH: usize = 1024;
/// Catch-up passes stop (and the final step starts) once a pass found fewer changed keys.
const FEW_LEFT: usize = 512;
/// At most this many online catch-up passes.
const MAX_PASSES: usize = 16;
/// The prefix of the rewrite log in the `meta` tree.
const LOG_PREFIX: &[u8] = b"rewrite\0";
/// How long the old database may stay open (readers in the middle of a long scan) before
/// its directory is deleted anyway.
const RELEASE_WAIT: Duration = Duration::from_secs(30);

/// The rewrite's instruments for `/metrics`.
#[derive(Debug, Clone)]
pub struct RewriteMetrics {
    done: Counter,
    failed: Counter,
    seconds: Histogram,
    pause: Histogram,
    keys: Counter,
}

impl Default for RewriteMetrics {
    fn default() -> Self {
        RewriteMetrics {
            done: Counter::default(),
            failed: Counter::default(),
            seconds: Histogram::new(exponential_buckets(0.01, 2.0, 16)),
            pause: Histogram::new(exponential_buckets(0.000_1, 2.0, 16)),
            keys: Counter::default(),
        }
    }
}

impl RewriteMetrics {
    /// Adds the instruments to `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "feedgraph_rewrites",
            "Online rewrites of the sled database completed (erased bytes removed)",
            self.done.clone(),
        );
        registry.register(
            "feedgraph_rewrite_failures",
            "Online rewrites of the sled database that failed (the old database stays)",
            self.failed.clone(),
        );
        registry.register_with_unit(
            "feedgraph_rewrite_duration",
            "Time of one online rewrite, copy to deletion of the old files",
            Unit::Seconds,
            self.seconds.clone(),
        );
        registry.register_with_unit(
            "feedgraph_rewrite_pause",
            "Time writes were held off for a rewrite's final catch-up, flush and swap",
            Unit::Seconds,
            self.pause.clone(),
        );
        registry.register(
            "feedgraph_rewrite_keys",
            "Keys copied by online rewrites",
            self.keys.clone(),
        );
    }
}

type Changed = Arc<parking_lot::Mutex<HashSet<(usize, IVec)>>>;

/// Threads that drain one subscriber each into the changed set.
struct Drainers {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Drainers {
    /// Stops the drainers after they emptied their channels. Call with writes held off:
    /// every change is then in a channel, and a drainer that finds its channel empty
    /// after the stop was asked for has seen all of them.
    fn finish(mut self) -> Result<(), StoreError> {
        self.stop.store(true, Ordering::SeqCst);
        let mut ok = true;
        for t in std::mem::take(&mut self.threads) {
            ok &= t.join().is_ok();
        }
        if ok {
            Ok(())
        } else {
            Err(StoreError::Backend(
                "a change drainer of the rewrite stopped".into(),
            ))
        }
    }
}

impl Drop for Drainers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Moves the changes `sub` sees into `changed` until asked to stop (see
/// [`Drainers::finish`]), or until the old database closes.
///
/// The subscriber is polled as a future with a waker that does nothing, not waited on with
/// `next_timeout`: sled drops the notice of a write that lost a race with another writer
/// (the write retries under a new notice), and `next_timeout` then reports that dead notice
/// as a timeout on every later call, so a drainer waiting that way would see no change
/// after the first race, and the rewrite would swap in a database without them. Polling
/// skips a dead notice and goes on to the next.
fn drain(mut sub: sled::Subscriber, tree: usize, changed: Changed, stop: Arc<AtomicBool>) {
    use std::future::Future;
    use std::task::{Context, Poll, Waker};
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        let stopping = stop.load(Ordering::SeqCst);
        match std::pin::Pin::new(&mut sub).poll(&mut cx) {
            Poll::Ready(Some(event)) => {
                changed.lock().insert((tree, event.key().clone()));
            }
            // The old database is closing: no change can come any more.
            Poll::Ready(None) => return,
            // Nothing pending. With writes held off and the stop asked for before the
            // poll, no write is in flight (each notice is filled or dropped), so every
            // change was seen.
            Poll::Pending if stopping => return,
            Poll::Pending => std::thread::sleep(Duration::from_millis(1)),
        }
    }
}

fn take(changed: &Changed) -> HashSet<(usize, IVec)> {
    std::mem::take(&mut *changed.lock())
}

/// Copies the current value of each changed key from `pairs[i].0` to `pairs[i].1`.
fn catch_up(
    pairs: &[(sled::Tree, sled::Tree)],
    keys: HashSet<(usize, IVec)>,
) -> Result<u64, StoreError> {
    let mut n = 0;
    for (i, key) in keys {
        let Some((from, to)) = pairs.get(i) else {
            continue;
        };
        match from.get(&key)? {
            Some(v) => {
                to.insert(key, v)?;
            }
            None => {
                to.remove(key)?;
            }
        }
        n += 1;
    }
    Ok(n)
}

fn log_key(cutoff: Millis) -> Vec<u8> {
    let mut k = LOG_PREFIX.to_vec();
    k.extend_from_slice(&cutoff.to_be_bytes());
    k
}

/// What the copy made, before the old database is let go.
struct Swapped {
    keys: u64,
    caught_up: u64,
    pause: Duration,
    cutoff: Millis,
}

impl SledStore {
    /// The rewrite's instruments.
    pub fn rewrite_metrics(&self) -> &RewriteMetrics {
        &self.rewrite_metrics
    }

    /// Test only: pause this long after each batch of the bulk copy, so a test can stop
    /// the process in the middle of a rewrite.
    pub fn set_rewrite_test_delay(&self, ms: u64) {
        self.rewrite_test_delay_ms.store(ms, Ordering::Relaxed);
    }

    /// Rewrites the database online (see the module comment): every live key is copied
    /// into a fresh database that replaces the current one, the old files are deleted,
    /// and the erasure marker is cleared. Writes go on during the copy and are held off
    /// only for the final catch-up and swap. One rewrite runs at a time; a second caller
    /// waits and then runs its own (covering what finished meanwhile).
    pub fn rewrite(&self) -> Result<CompactReport, StoreError> {
        let _one = self.rewriting.lock();
        self.rewrite_locked()
    }

    /// [`SledStore::rewrite`] only if an erasure left bytes to remove (the marker is
    /// there once the lock is ours), else `None`. What a request may start: an org admin
    /// cannot make the server rewrite its whole store again and again, and callers that
    /// queue behind a running rewrite find nothing left to do.
    pub fn rewrite_if_due(&self) -> Result<Option<CompactReport>, StoreError> {
        let _one = self.rewriting.lock();
        if !compact::is_due(&self.dir) {
            return Ok(None);
        }
        self.rewrite_locked().map(Some)
    }

    fn rewrite_locked(&self) -> Result<CompactReport, StoreError> {
        let started = Instant::now();
        let old = self.t();
        let old_dir = self.dir.join(&old.name);
        let bytes_before = compact::dir_size(&old_dir);
        let name = compact::next_name(&self.dir)?;
        let fresh = self.dir.join(&name);
        tracing::info!(from = %old.name, to = %name, bytes = bytes_before, "rewrite of the database started");
        let swapped = match self.copy_and_swap(&old, &name) {
            Ok(s) => s,
            Err(e) => {
                self.rewrite_metrics.failed.inc();
                tracing::error!(error = %e, "rewrite of the database failed; the current database stays");
                if compact::wait_released(&fresh, Duration::from_secs(10)) {
                    let _ = std::fs::remove_dir_all(&fresh);
                    let _ = compact::sync_dir(&self.dir);
                }
                return Err(e);
            }
        };
        drop(old);
        // The old database is no longer current: delete it once sled let go of it (a
        // reader in the middle of a scan may still hold it for a moment).
        if !compact::wait_released(&old_dir, RELEASE_WAIT) {
            tracing::warn!(dir = %old_dir.display(), "the old database is still open; deleting its files anyway");
        }
        std::fs::remove_dir_all(&old_dir)
            .map_err(compact::io(format!("removing {}", old_dir.display())))?;
        compact::sync_dir(&self.dir)?;
        let finished_at = now_millis();
        {
            let _w = self.begin_write()?;
            self.t()
                .meta
                .insert(log_key(swapped.cutoff), &finished_at.to_be_bytes())?;
        }
        self.make_durable()?;
        let report = CompactReport {
            bytes_before,
            bytes_after: compact::dir_size(&fresh),
            keys: swapped.keys,
            caught_up: swapped.caught_up,
            took_ms: started.elapsed().as_millis() as u64,
            pause_us: swapped.pause.as_micros() as u64,
            finished_at,
        };
        self.rewrite_metrics.done.inc();
        self.rewrite_metrics.keys.inc_by(report.keys);
        self.rewrite_metrics
            .seconds
            .observe(started.elapsed().as_secs_f64());
        self.rewrite_metrics
            .pause
            .observe(swapped.pause.as_secs_f64());
        tracing::info!(
            keys = report.keys,
            caught_up = report.caught_up,
            bytes_before = report.bytes_before,
            bytes_after = report.bytes_after,
            took_ms = report.took_ms,
            pause_us = report.pause_us,
            "rewrite of the database finished; the old files are deleted"
        );
        Ok(report)
    }

    /// When the bytes an erasure that finished at `finished_at` removed left the disk:
    /// when the old files of the first rewrite that started its swap after then were
    /// deleted. `None` while no such rewrite completed.
    pub fn bytes_gone_at(&self, finished_at: Millis) -> Result<Option<Millis>, StoreError> {
        let from = log_key(finished_at.saturating_add(1));
        let mut end = LOG_PREFIX.to_vec();
        end.push(0xff);
        let first = self
            .t()
            .meta
            .range(from..end)
            .next()
            .transpose()?
            .and_then(|(_, v)| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map(Millis::from_be_bytes);
        Ok(first)
    }

    fn copy_and_swap(&self, old: &Arc<Trees>, name: &str) -> Result<Swapped, StoreError> {
        let fresh = self.dir.join(name);
        let new_db = compact::open_db(&fresh, &self.dir, self.cache_bytes)?;
        let mut pairs = Vec::new();
        for tree in old.db.tree_names() {
            pairs.push((old.db.open_tree(&tree)?, new_db.open_tree(&tree)?));
        }
        let changed: Changed = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        // Subscribed with no write in flight: each later change reaches a subscriber.
        let subs: Vec<sled::Subscriber> = {
            let _held = self.h.gate.write();
            pairs
                .iter()
                .map(|(from, _)| from.watch_prefix(Vec::<u8>::new()))
                .collect()
        };
        let mut drainers = Drainers {
            stop: stop.clone(),
            threads: Vec::new(),
        };
        for (i, sub) in subs.into_iter().enumerate() {
            let (changed, stop) = (changed.clone(), stop.clone());
            let t = std::thread::Builder::new()
                .name("feedgraph-rewrite-drain".into())
                .spawn(move || drain(sub, i, changed, stop))
                .map_err(compact::io("starting a drainer of the rewrite".into()))?;
            drainers.threads.push(t);
        }
        // The bulk copy, online.
        let delay = self.rewrite_test_delay_ms.load(Ordering::Relaxed);
        let mut keys = 0u64;
        for (from, to) in &pairs {
            let mut batch = sled::Batch::default();
            let mut n = 0;
            for kv in from.iter() {
                let (k, v) = kv?;
                batch.insert(k, v);
                n += 1;
                keys += 1;
                if n == COPY_BATCH {
                    to.apply_batch(std::mem::take(&mut batch))?;
                    n = 0;
                    if delay > 0 {
                        std::thread::sleep(Duration::from_millis(delay));
                    }
                }
            }
            to.apply_batch(batch)?;
            if delay > 0 {
                std::thread::sleep(Duration::from_millis(delay));
            }
        }
        tracing::info!(keys, "rewrite: bulk copy done, catching up");
        // Catch up online until few changes are left.
        let mut caught_up = 0;
        for _ in 0..MAX_PASSES {
            let pass = take(&changed);
            let n = pass.len();
            caught_up += catch_up(&pairs, pass)?;
            if n < FEW_LEFT {
                break;
            }
        }
        // Most of the copy reaches the disk now, so the fsync while writes are held
        // covers only the last changes.
        new_db.flush()?;
        compact::sync_tree(&fresh)?;
        let trees = Trees::open(new_db.clone(), name.to_owned())?;
        let data_file = fresh.join("db");
        let file = std::fs::File::open(&data_file)
            .map_err(compact::io(format!("opening {}", data_file.display())))?;
        // The final step: writes held off.
        let held = self.h.gate.write();
        let pause = Instant::now();
        drainers.finish()?;
        caught_up += catch_up(&pairs, take(&changed))?;
        // Every write that finished before now is in the new database.
        let cutoff = now_millis();
        new_db.flush()?;
        compact::sync_tree(&fresh)?;
        compact::point_to(&self.dir, name)?;
        // From here on the new database is the store's; nothing below can fail.
        self.syncer.retarget(new_db, file, &data_file);
        *self.h.current.write() = Arc::new(trees);
        if let Err(e) = compact::clear_due(&self.dir) {
            tracing::warn!(error = %e, "could not clear the erasure marker; the next rewrite finds nothing new");
        }
        let pause = pause.elapsed();
        drop(held);
        Ok(Swapped {
            keys,
            caught_up,
            pause,
            cutoff,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StorageConfig;

    /// Writers that race one another on the same tree make sled drop some of its change
    /// notices unsent (a write that lost a race retries under a new notice). The rewrite
    /// must still see every change after such a notice: every key written, before, during
    /// or after the rewrite, is in the database it swaps in.
    #[test]
    fn racing_writers_during_a_rewrite_lose_nothing() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let store = SledStore::open(dir.path(), &StorageConfig::default())?;
        for i in 0..2000u32 {
            let _w = store.begin_write()?;
            store
                .t()
                .feedback
                .insert(format!("seed/{i:06}"), &[1u8; 64][..])?;
        }
        // Slow the bulk copy down so the writers run through all of it.
        store.set_rewrite_test_delay(20);
        let stop = AtomicBool::new(false);
        let written = std::thread::scope(|s| {
            let writers: Vec<_> = (0..8)
                .map(|t| {
                    let (store, stop) = (&store, &stop);
                    s.spawn(move || -> Result<Vec<String>, StoreError> {
                        let mut keys = Vec::new();
                        let mut i = 0u32;
                        while !stop.load(Ordering::SeqCst) && i < 20_000 {
                            i += 1;
                            // Neighbouring keys of all writers share sled's leaves; all
                            // sort before the seed, so the copy passes them early rather
                            // than chase them.
                            let key = format!("a/{i:06}/{t}");
                            if i.is_multiple_of(64) {
                                std::thread::sleep(Duration::from_micros(200));
                            }
                            {
                                let _w = store.begin_write()?;
                                store.t().feedback.insert(key.as_bytes(), &[2u8; 64][..])?;
                            }
                            keys.push(key);
                        }
                        Ok(keys)
                    })
                })
                .collect();
            // Several rewrites one after another, each with the writers going on: a race
            // that drops a notice does not happen every time.
            let rewrote = (0..3).try_for_each(|_| store.rewrite().map(|_| ()));
            // A little more into the new database, then stop.
            std::thread::sleep(Duration::from_millis(50));
            stop.store(true, Ordering::SeqCst);
            let mut keys = Vec::new();
            for w in writers {
                match w.join() {
                    Ok(k) => keys.extend(k?),
                    Err(_) => return Err(StoreError::Backend("a writer panicked".into())),
                }
            }
            rewrote.map(|_| keys)
        })?;
        assert!(
            written.len() > 1000,
            "the writers made progress: {}",
            written.len()
        );
        let feedback = &store.t().feedback;
        let lost: Vec<&String> = written
            .iter()
            .filter(|k| !matches!(feedback.get(k.as_bytes()), Ok(Some(_))))
            .collect();
        assert!(
            lost.is_empty(),
            "{} of {} keys written during the rewrite are gone, e.g. {:?}",
            lost.len(),
            written.len(),
            lost.iter().take(3).collect::<Vec<_>>()
        );
        for i in 0..2000u32 {
            assert!(feedback.get(format!("seed/{i:06}"))?.is_some());
        }
        Ok(())
    }
}
