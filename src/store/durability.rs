//! Making writes durable: sled flush plus `fdatasync` of its data file, shared by every
//! writer waiting at the same time (group commit).
//!
//! A writer that has put its records into sled takes a ticket ([`Syncer::ticket`]): the
//! number of the next sync to start, which will cover its write. A worker thread runs the
//! syncs: whenever a ticket asks for a sync that has not started, it starts sync `n` (which
//! covers every write completed before it began), drops the lock, flushes and fsyncs, then
//! publishes `durable = n`. Writers that arrive during a sync ask for the next one, so one
//! sync serves all of them. A writer waits for its ticket either blocking
//! ([`Syncer::wait`]) or as a future ([`Syncer::wait_async`]), so an HTTP request waits
//! for its fsync without holding a thread. No lock is held across the flush or fsync.
//!
//! Under load (the previous sync served several writers) the worker lets a sync gather
//! more writers before it starts, for at most `commit_delay` (PostgreSQL's
//! `commit_delay` has the same purpose): each flush costs sled a fixed amount of CPU.
//!
//! After a failed fsync the store refuses further writes: the kernel may have dropped the
//! dirty pages, so retrying could report success for data that is gone.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};
use serde::{Deserialize, Serialize};

/// What "durable" means when a write is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// sled flush plus `fdatasync` of the data file: survives a killed process and a power
    /// loss. The default.
    #[default]
    Fsync,
    /// sled flush only (`pwrite` + `sync_file_range`): survives a killed process, not a
    /// power loss or kernel crash.
    Flush,
}

/// Why a sync failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SyncError {
    /// The flush or fsync failed now.
    #[error("making the write durable failed: {0}")]
    Failed(String),
    /// An earlier sync failed; the store no longer accepts writes.
    #[error("the store is read-only after an earlier sync failure: {0}")]
    Poisoned(String),
}

#[derive(Debug, Default)]
struct State {
    /// Number of the most recently started sync.
    started: u64,
    /// Number of the most recent sync that completed successfully.
    durable: u64,
    /// The highest sync number a writer is waiting for.
    requested: u64,
    /// Set forever after the first failure.
    poisoned: Option<String>,
    /// The syncer is being dropped: the worker finishes what was requested and exits.
    stop: bool,
    /// Tickets taken for the next sync so far.
    joined: u64,
    /// Tickets the previous sync served.
    last_batch: u64,
    /// While the worker waits for writers to join the next sync: how many it waits for.
    waiting_for: Option<u64>,
    /// When the last ticket was taken.
    last_join: Option<std::time::Instant>,
    /// Async waiters asleep, by slot (see [`Shared::waiters`]).
    parked: [u64; 2],
    /// When the last waiter woken by a sync got going again.
    resumed_at: Option<std::time::Instant>,
}

/// A sync waits for more writers only if the one before served at least this many: lone
/// writers, and a few at a time, never wait (there, waiting costs more latency than the
/// saved syncs give back).
const DELAY_FROM_BATCH: u64 = 8;

/// While gathering, a sync starts once no writer has taken a ticket for this long (after
/// the writers of the previous sync are back at work): nobody else is on the way.
const QUIET_GAP: std::time::Duration = std::time::Duration::from_micros(50);

/// The part of the syncer its worker thread shares.
#[derive(Debug)]
struct Shared {
    db: sled::Db,
    data_file: File,
    mode: Durability,
    state: Mutex<State>,
    /// Wakes the worker when a sync is requested, when a gathering sync has its writers or
    /// the last sync's waiters are back at work, and on stop.
    work: Condvar,
    /// Wakes blocking waiters when a sync completed or failed.
    done: Condvar,
    /// Wakes async waiters likewise, one slot per ticket parity. A ticket names the next
    /// sync to start, so while one sync runs its waiters and those of the next one sleep
    /// in different slots: each slot wakes only the waiters of the sync that just ended,
    /// not also those of the next one (which would only go back to sleep).
    waiters: [tokio::sync::Notify; 2],
    /// Serialises syncs without group commit.
    solo: Mutex<()>,
    /// Set with `State::poisoned`, for a lock-free check on every write.
    failed: std::sync::atomic::AtomicBool,
    /// sled's directory for large values, which its flush writes but never fsyncs.
    blobs: Blobs,
    /// The longest a sync waits for writers to join it.
    commit_delay: std::time::Duration,
    /// Tests make the next syncs fail or panic.
    #[cfg(test)]
    fault: Mutex<Option<Fault>>,
}

/// A failure a test injects into the syncs.
#[cfg(test)]
#[derive(Debug, Clone, Copy)]
pub(crate) enum Fault {
    /// The sync returns an error.
    Error,
    /// The sync panics.
    Panic,
}

/// sled keeps values larger than about a quarter of a log segment (128 KiB by default) in
/// files of their own under `blobs/`, written with plain writes and never synced; its log
/// then points at them. Every sync therefore lists the directory and fsyncs each blob file
/// that is new or has grown since it was synced (then the directory). sled writes a blob
/// from the writer's thread, so a listing can meet a file still being written: its length
/// tells the next sync to sync it again. (The directory's modification time is no guide:
/// writing into a file leaves it unchanged, and its resolution is coarse.)
#[derive(Debug)]
struct Blobs {
    dir: std::path::PathBuf,
    /// Whether the directory was listed before, and each file synced with the length it
    /// had when listed.
    seen: Mutex<(bool, std::collections::HashMap<std::ffi::OsString, u64>)>,
    /// Blob files synced so far (for tests and logs).
    synced: std::sync::atomic::AtomicU64,
}

impl Blobs {
    fn new(data_file: &Path) -> Blobs {
        let dir = data_file
            .parent()
            .map_or_else(|| Path::new("blobs").to_owned(), |d| d.join("blobs"));
        Blobs {
            dir,
            seen: Mutex::new((false, std::collections::HashMap::new())),
            synced: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn sync_new(&self) -> Result<(), String> {
        let io = |what: &str, e: std::io::Error| format!("{what} {}: {e}", self.dir.display());
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io("listing", e)),
        };
        let mut seen = self.seen.lock();
        let first_time = !seen.0;
        let mut present = std::collections::HashMap::new();
        let mut changed = false;
        for entry in entries {
            let entry = entry.map_err(|e| io("listing", e))?;
            let name = entry.file_name();
            // The length before the fsync: everything below it was written before the
            // fsync, so it is durable after it.
            let len = match entry.metadata() {
                Ok(m) => m.len(),
                // sled removed it meanwhile (its value was replaced): nothing to keep.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io("reading a blob in", e)),
            };
            if seen.1.get(&name) != Some(&len) {
                changed |= !seen.1.contains_key(&name);
                match std::fs::File::open(entry.path()).and_then(|f| f.sync_data()) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(io("syncing a blob in", e)),
                }
                self.synced
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            present.insert(name, len);
        }
        if changed || first_time {
            std::fs::File::open(&self.dir)
                .and_then(|f| f.sync_all())
                .map_err(|e| io("syncing", e))?;
        }
        if first_time && let Some(parent) = self.dir.parent() {
            std::fs::File::open(parent)
                .and_then(|f| f.sync_all())
                .map_err(|e| io("syncing the parent of", e))?;
        }
        *seen = (true, present);
        Ok(())
    }
}

impl Shared {
    fn sync_once(&self) -> Result<(), String> {
        #[cfg(test)]
        match *self.fault.lock() {
            Some(Fault::Error) => return Err("injected failure".into()),
            Some(Fault::Panic) => panic!("injected panic"),
            None => {}
        }
        self.db.flush().map_err(|e| format!("sled flush: {e}"))?;
        if self.mode == Durability::Fsync {
            self.data_file
                .sync_data()
                .map_err(|e| format!("fdatasync of the sled data file: {e}"))?;
            self.blobs.sync_new()?;
        }
        Ok(())
    }

    /// Without group commit each writer pays its own flush + fsync (used to measure the
    /// difference; serialised so the figures are the honest one-sync-per-write cost).
    fn wait_solo(&self) -> Result<(), SyncError> {
        let _one = self.solo.lock();
        if let Some(p) = &self.state.lock().poisoned {
            return Err(SyncError::Poisoned(p.clone()));
        }
        self.sync_once().map_err(|e| {
            self.state.lock().poisoned = Some(e.clone());
            self.failed
                .store(true, std::sync::atomic::Ordering::Release);
            SyncError::Failed(e)
        })
    }

    /// Under load, lets more writers join the sync about to start. A sync costs a fixed
    /// amount of CPU (sled wakes all its I/O threads for every flush), so with many
    /// concurrent writers fewer, larger syncs leave more of the machine to the requests.
    /// Waits until twice as many writers as the previous sync served have taken tickets,
    /// or `commit_delay` passed, or arrivals paused for [`QUIET_GAP`] once the writers the
    /// previous sync released are back at work (before that, the runtime is busy
    /// answering them and takes no new tickets).
    fn gather(&self, st: &mut parking_lot::MutexGuard<'_, State>) {
        let until = std::time::Instant::now() + self.commit_delay;
        let want = st.last_batch.saturating_mul(2);
        st.waiting_for = Some(want);
        let done = slot(st.started);
        while st.joined < want && !st.stop {
            let now = std::time::Instant::now();
            if now >= until {
                break;
            }
            if st.parked[done] > 0 {
                // The writers the last sync released are still answering their clients;
                // the runtime takes new tickets once they are through.
                self.work.wait_until(st, until);
                continue;
            }
            let quiet = st
                .last_join
                .max(st.resumed_at)
                .map_or(now, |t| t + QUIET_GAP);
            if now >= quiet {
                break;
            }
            self.work.wait_until(st, until.min(quiet));
        }
        st.waiting_for = None;
    }

    /// The worker: runs one sync whenever one is requested that has not started yet.
    fn run(&self) {
        let mut st = self.state.lock();
        loop {
            if st.poisoned.is_some() || (st.stop && st.requested <= st.started) {
                return;
            }
            if st.requested <= st.started {
                self.work.wait(&mut st);
                continue;
            }
            if !self.commit_delay.is_zero() && st.last_batch >= DELAY_FROM_BATCH && !st.stop {
                self.gather(&mut st);
            }
            // Every write completed before this point is covered by this sync.
            st.last_batch = std::mem::take(&mut st.joined);
            st.started += 1;
            let number = st.started;
            drop(st);
            // A panic inside sled's flush must not leave every waiter hanging: it poisons
            // the store like a failed fsync.
            let result =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.sync_once()))
                    .unwrap_or_else(|_| Err("the flush panicked".to_owned()));
            st = self.state.lock();
            match result {
                Ok(()) => st.durable = number,
                Err(e) => {
                    st.poisoned = Some(e);
                    self.failed
                        .store(true, std::sync::atomic::Ordering::Release);
                }
            }
            self.done.notify_all();
            // Outside the lock, which each woken waiter takes at once. A waiter registers
            // with its slot before it checks under the lock, so none is missed.
            let failed = st.poisoned.is_some();
            drop(st);
            if failed {
                self.waiters
                    .iter()
                    .for_each(tokio::sync::Notify::notify_waiters);
            } else {
                self.waiters[slot(number)].notify_waiters();
            }
            st = self.state.lock();
        }
    }
}

/// The async waiter slot of sync `number`.
fn slot(number: u64) -> usize {
    (number % 2) as usize
}

/// An async waiter asleep in its slot; counted so that the sync worker knows when the
/// writers of the last sync are back at work (see [`Shared::gather`]).
struct Parked<'a> {
    shared: &'a Shared,
    slot: usize,
}

impl Drop for Parked<'_> {
    fn drop(&mut self) {
        let mut st = self.shared.state.lock();
        st.parked[self.slot] = st.parked[self.slot].saturating_sub(1);
        if st.parked[self.slot] == 0 {
            st.resumed_at = Some(std::time::Instant::now());
            if st.waiting_for.is_some() {
                self.shared.work.notify_one();
            }
        }
    }
}

/// Coordinates flush + fsync for all writers of one store.
#[derive(Debug)]
pub struct Syncer {
    shared: Arc<Shared>,
    worker: Option<std::thread::JoinHandle<()>>,
    group: bool,
}

impl Syncer {
    /// A syncer for `db`, whose data file is at `data_file`. With group commit it starts
    /// its worker thread, which stops when the syncer is dropped.
    pub fn new(
        db: sled::Db,
        data_file: &Path,
        mode: Durability,
        group: bool,
        commit_delay: std::time::Duration,
    ) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            db,
            data_file: File::open(data_file)?,
            mode,
            state: Mutex::new(State::default()),
            work: Condvar::new(),
            done: Condvar::new(),
            waiters: [tokio::sync::Notify::new(), tokio::sync::Notify::new()],
            solo: Mutex::new(()),
            failed: std::sync::atomic::AtomicBool::new(false),
            blobs: Blobs::new(data_file),
            commit_delay,
            #[cfg(test)]
            fault: Mutex::new(None),
        });
        let worker = if group {
            let s = shared.clone();
            Some(
                std::thread::Builder::new()
                    .name("feedgraph-sync".into())
                    .spawn(move || s.run())?,
            )
        } else {
            None
        };
        Ok(Syncer {
            shared,
            worker,
            group,
        })
    }

    /// Whether concurrent writers share syncs.
    pub fn group_commit(&self) -> bool {
        self.group
    }

    /// Fails once a sync has failed: the store then refuses writes before making them, so
    /// nothing a client was told failed can reach the disk later through sled's own
    /// flushes.
    pub fn check_writable(&self) -> Result<(), SyncError> {
        if !self
            .shared
            .failed
            .load(std::sync::atomic::Ordering::Acquire)
        {
            return Ok(());
        }
        match &self.shared.state.lock().poisoned {
            Some(p) => Err(SyncError::Poisoned(p.clone())),
            None => Ok(()),
        }
    }

    /// Asks for a sync that covers every write this thread completed before the call, and
    /// returns its number, to wait on with [`Syncer::wait`] or [`Syncer::wait_async`].
    /// Without group commit the number is 0 and the wait does its own sync.
    pub fn ticket(&self) -> Result<u64, SyncError> {
        if !self.group {
            return Ok(0);
        }
        let mut st = self.shared.state.lock();
        if let Some(p) = &st.poisoned {
            return Err(SyncError::Poisoned(p.clone()));
        }
        // A sync that starts after this point covers our write.
        let need = st.started + 1;
        st.joined += 1;
        st.last_join = Some(std::time::Instant::now());
        if st.requested < need {
            st.requested = need;
            self.shared.work.notify_one();
        } else if st.waiting_for == Some(st.joined) {
            self.shared.work.notify_one();
        }
        Ok(need)
    }

    /// Blocks until sync `ticket` completed.
    pub fn wait(&self, ticket: u64) -> Result<(), SyncError> {
        if !self.group {
            return self.shared.wait_solo();
        }
        let mut st = self.shared.state.lock();
        loop {
            if st.durable >= ticket {
                return Ok(());
            }
            if let Some(p) = &st.poisoned {
                return Err(SyncError::Failed(p.clone()));
            }
            self.shared.done.wait(&mut st);
        }
    }

    /// Waits, without blocking a thread, until sync `ticket` completed. Without group
    /// commit the caller's own sync runs on the blocking pool.
    pub async fn wait_async(&self, ticket: u64) -> Result<(), SyncError> {
        if !self.group {
            let shared = self.shared.clone();
            return tokio::task::spawn_blocking(move || shared.wait_solo())
                .await
                .unwrap_or_else(|e| Err(SyncError::Failed(format!("the sync task failed: {e}"))));
        }
        let i = slot(ticket);
        loop {
            // Registered before the check, so a sync that ends after it still wakes us.
            let woken = self.shared.waiters[i].notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let _parked = {
                let mut st = self.shared.state.lock();
                if st.durable >= ticket {
                    return Ok(());
                }
                if let Some(p) = &st.poisoned {
                    return Err(SyncError::Failed(p.clone()));
                }
                st.parked[i] += 1;
                Parked {
                    shared: &self.shared,
                    slot: i,
                }
            };
            woken.await;
        }
    }

    /// Returns once every write this thread completed before the call is durable.
    pub fn wait_durable(&self) -> Result<(), SyncError> {
        let ticket = self.ticket()?;
        self.wait(ticket)
    }
}

#[cfg(test)]
impl Syncer {
    /// Blob files synced so far.
    pub(crate) fn blobs_synced(&self) -> u64 {
        self.shared
            .blobs
            .synced
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Makes every later sync fail or panic.
    pub(crate) fn inject(&self, fault: Fault) {
        *self.shared.fault.lock() = Some(fault);
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.shared.state.lock().stop = true;
        self.shared.work.notify_one();
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn syncer(dir: &Path) -> Syncer {
        let db = sled::Config::new()
            .path(dir.join("sled"))
            .open()
            .expect("sled");
        Syncer::new(
            db,
            &dir.join("sled").join("db"),
            Durability::Fsync,
            true,
            std::time::Duration::from_micros(300),
        )
        .expect("syncer")
    }

    /// Waits for `f` on another thread; `None` if it has not returned after 20 s (a hang).
    fn within_20s<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(std::time::Duration::from_secs(20)).ok()
    }

    #[test]
    fn tickets_are_served_in_order_and_cover_earlier_writes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = syncer(dir.path());
        let a = s.ticket().expect("ticket");
        s.wait(a).expect("durable");
        let b = s.ticket().expect("ticket");
        assert!(
            b > a,
            "a ticket after a completed sync asks for a later one"
        );
        s.wait(b).expect("durable");
        assert!(s.check_writable().is_ok());
    }

    #[test]
    fn many_concurrent_async_writers_all_finish_and_leave_no_waiter_counted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = std::sync::Arc::new(syncer(dir.path()));
        let s2 = s.clone();
        let finished = within_20s(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let tasks: Vec<_> = (0..32)
                    .map(|_| {
                        let s = s2.clone();
                        tokio::spawn(async move {
                            for _ in 0..40 {
                                let t = s.ticket().expect("ticket");
                                s.wait_async(t).await.expect("durable");
                            }
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await.expect("task");
                }
            });
        });
        assert!(finished.is_some(), "the writers hung");
        let st = s.shared.state.lock();
        assert_eq!(st.parked, [0, 0], "a woken waiter stayed counted");
        assert!(st.durable >= 40, "fewer syncs than one writer's waits");
        assert!(st.last_batch <= 32);
    }

    #[test]
    fn a_failed_sync_fails_its_waiters_and_refuses_later_writes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = std::sync::Arc::new(syncer(dir.path()));
        s.inject(Fault::Error);
        let t = s.ticket().expect("ticket");
        let s2 = s.clone();
        let waited = within_20s(move || s2.wait(t)).expect("the waiter hung");
        assert!(matches!(waited, Err(SyncError::Failed(_))), "{waited:?}");
        assert!(matches!(s.check_writable(), Err(SyncError::Poisoned(_))));
        assert!(matches!(s.ticket(), Err(SyncError::Poisoned(_))));
    }

    #[test]
    fn a_panicking_flush_poisons_instead_of_hanging_every_waiter() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = std::sync::Arc::new(syncer(dir.path()));
        s.inject(Fault::Panic);
        let t = s.ticket().expect("ticket");
        let s2 = s.clone();
        let waited = within_20s(move || s2.wait(t)).expect("the waiter hung");
        assert!(waited.is_err(), "{waited:?}");
        let s3 = s.clone();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let async_waited = rt.block_on(async move { s3.wait_async(t).await });
        assert!(async_waited.is_err());
        assert!(s.check_writable().is_err());
    }
}
