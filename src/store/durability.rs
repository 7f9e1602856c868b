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
//! dirty pages, so retrying could report success for data that is gone. The writers whose
//! sync failed hear [`SyncError::Failed`]: their write is in sled and may still reach the
//! disk (through sled's background flusher or the kernel's own writeback), so its outcome
//! is unknown, not "not stored". sled's background flusher stays on: it is also the only
//! thing that runs sled's segment cleaning, so turning it off would let the data file grow
//! without bound.
//!
//! Readers see only durable state (see [`Syncer::settle_read`]): every write counts itself
//! in and out ([`Syncer::begin_write`]), each sync remembers how many writes had ended
//! when it started, and a read made while some write is not covered yet waits for the next
//! sync. With no write in flight that is two atomic loads.
//!
//! Each sync reports to [`SyncMetrics`] how many writers it served (the group-commit batch
//! size) and how long its flush and fsync took; `/metrics` shows both.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Condvar, Mutex};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use serde::{Deserialize, Serialize};

/// The syncer's instruments: writes per sync, time per sync, failed syncs. Cheap to
/// record (one uncontended lock per histogram, taken by the sync thread only).
#[derive(Debug, Clone)]
pub struct SyncMetrics {
    /// Tickets (writers) one sync served.
    batch: Histogram,
    /// Flush plus fsync, seconds.
    seconds: Histogram,
    /// Syncs that failed (after the first, the store refuses writes).
    failures: Counter,
}

impl Default for SyncMetrics {
    fn default() -> Self {
        SyncMetrics {
            batch: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
            seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 17)),
            failures: Counter::default(),
        }
    }
}

impl SyncMetrics {
    /// Adds the instruments to `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "feedgraph_sync_batch_writes",
            "Writes made durable by one sync (the group-commit batch size)",
            self.batch.clone(),
        );
        registry.register_with_unit(
            "feedgraph_sync_duration",
            "Time of one sync: sled flush plus fdatasync (flush only in flush mode)",
            Unit::Seconds,
            self.seconds.clone(),
        );
        registry.register(
            "feedgraph_sync_failures",
            "Syncs that failed; after one the store refuses writes until restarted",
            self.failures.clone(),
        );
    }

    fn record(&self, writers: u64, took: std::time::Duration, ok: bool) {
        self.batch.observe(writers as f64);
        self.seconds.observe(took.as_secs_f64());
        if !ok {
            self.failures.inc();
        }
    }
}

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
    /// Tickets taken in all (for tests).
    tickets: u64,
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
    /// The database and files a sync covers; replaced whole by [`Syncer::retarget`] when
    /// the store swaps in a rewritten database.
    target: Mutex<Arc<Target>>,
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
    /// The longest a sync waits for writers to join it.
    commit_delay: std::time::Duration,
    /// Batch sizes and sync times for `/metrics`.
    metrics: SyncMetrics,
    /// Writes that have begun changing sled (see [`Syncer::begin_write`]).
    begun: AtomicU64,
    /// Writes that have finished changing sled.
    ended: AtomicU64,
    /// `ended` as read when the most recent successful sync started: that many writes are
    /// durable, and if no more have begun, everything a reader can see is.
    covered: AtomicU64,
    /// sled's directory, which names this syncer to test hooks.
    #[cfg(any(test, feature = "testing"))]
    dir: std::path::PathBuf,
    /// Tests make the next syncs fail or panic.
    #[cfg(test)]
    fault: Mutex<Option<Fault>>,
}

#[cfg(any(test, feature = "testing"))]
use super::testing::Fault;

/// What one sync flushes and fsyncs: a sled database, its data file and its blob files.
#[derive(Debug)]
struct Target {
    db: sled::Db,
    data_file: File,
    /// sled's directory for large values, which its flush writes but never fsyncs.
    blobs: Blobs,
}

/// sled keeps values larger than about a quarter of a log segment (128 KiB by default) in
/// files of their own under `blobs/`, written with plain writes and never synced; its log
/// then points at them. Every sync therefore also fsyncs the blob files that are new or
/// have grown since the last one, then the directory (for their names). New files are found
/// by comparing the names listed with those synced before, never by the directory's
/// modification time (coarse, and unchanged when a file grows).
///
/// The listing happens before sled's flush, which waits for every log reservation made
/// before it, so each file listed belongs to a write the flush covers; it is synced after
/// the flush. sled writes a blob from the writer's own thread, so a file may still be
/// growing when it is listed: its length is remembered, and a later sync that finds it
/// longer syncs it again. A file created after the listing belongs to a write that the
/// next sync covers.
#[derive(Debug)]
struct Blobs {
    dir: std::path::PathBuf,
    /// Each file synced so far (of those present at the last listing), with the length it
    /// had when synced.
    synced_names: Mutex<std::collections::HashMap<std::ffi::OsString, u64>>,
    /// Whether the directory's own name was synced into its parent.
    dir_synced: std::sync::atomic::AtomicBool,
    /// Blob files synced so far (for tests and logs).
    synced: AtomicU64,
}

impl Blobs {
    fn new(data_file: &Path) -> Blobs {
        let dir = data_file
            .parent()
            .map_or_else(|| Path::new("blobs").to_owned(), |d| d.join("blobs"));
        Blobs {
            dir,
            synced_names: Mutex::new(std::collections::HashMap::new()),
            dir_synced: std::sync::atomic::AtomicBool::new(false),
            synced: AtomicU64::new(0),
        }
    }

    fn io(&self, what: &str, e: std::io::Error) -> String {
        format!("{what} {}: {e}", self.dir.display())
    }

    /// Every name in the directory now, or `None` if there is no directory (yet).
    fn list(&self) -> Result<Option<Vec<std::ffi::OsString>>, String> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io("listing", e)),
        };
        let mut names = Vec::new();
        for entry in entries {
            names.push(entry.map_err(|e| self.io("listing", e))?.file_name());
        }
        Ok(Some(names))
    }

    /// Fsyncs the files of `listed` that are new or longer than when last synced, then
    /// the directory if a name is new (and, the first time, its parent), and remembers
    /// each file with its length.
    fn sync_new(&self, listed: Option<Vec<std::ffi::OsString>>) -> Result<(), String> {
        let Some(listed) = listed else {
            return Ok(());
        };
        let mut synced = self.synced_names.lock();
        let mut present = std::collections::HashMap::with_capacity(listed.len());
        let mut new_name = false;
        for name in listed {
            let path = self.dir.join(&name);
            // The length before the fsync: every byte below it was written before the
            // fsync, so it is durable after it.
            let len = match std::fs::metadata(&path) {
                Ok(m) => m.len(),
                // sled removed it meanwhile (its value was replaced): nothing to keep.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(self.io("reading a blob in", e)),
            };
            if synced.get(&name) != Some(&len) {
                new_name |= !synced.contains_key(&name);
                match std::fs::File::open(&path).and_then(|f| f.sync_data()) {
                    Ok(()) => {
                        self.synced.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(self.io("syncing a blob in", e)),
                }
            }
            present.insert(name, len);
        }
        let first_time = !self.dir_synced.load(Ordering::Acquire);
        if new_name || first_time {
            std::fs::File::open(&self.dir)
                .and_then(|f| f.sync_all())
                .map_err(|e| self.io("syncing", e))?;
        }
        if first_time {
            if let Some(parent) = self.dir.parent() {
                std::fs::File::open(parent)
                    .and_then(|f| f.sync_all())
                    .map_err(|e| self.io("syncing the parent of", e))?;
            }
            self.dir_synced.store(true, Ordering::Release);
        }
        *synced = present;
        Ok(())
    }
}

impl Shared {
    fn sync_once(&self) -> Result<(), String> {
        #[cfg(any(test, feature = "testing"))]
        {
            #[cfg(test)]
            let local = *self.fault.lock();
            #[cfg(not(test))]
            let local = None;
            match local.or_else(|| super::testing::fault_for(&self.dir)) {
                Some(Fault::Error) => return Err("injected failure".into()),
                Some(Fault::Panic) => panic!("injected panic"),
                Some(Fault::Hold) => super::testing::hold(&self.dir),
                None => {}
            }
        }
        let target = self.target.lock().clone();
        // Listed before the flush: see [`Blobs`].
        let blobs = match self.mode {
            Durability::Fsync => target.blobs.list()?,
            Durability::Flush => None,
        };
        target.db.flush().map_err(|e| format!("sled flush: {e}"))?;
        if self.mode == Durability::Fsync {
            target.blobs.sync_new(blobs)?;
            target
                .data_file
                .sync_data()
                .map_err(|e| format!("fdatasync of the sled data file: {e}"))?;
        }
        Ok(())
    }

    /// One sync, and on success the writes it covered recorded as durable for readers.
    fn sync_counted(&self) -> Result<(), String> {
        // Every write that ended before this load is in sled before the flush starts.
        let ended = self.ended.load(Ordering::SeqCst);
        self.sync_once()?;
        self.covered.fetch_max(ended, Ordering::SeqCst);
        Ok(())
    }

    /// Without group commit each writer pays its own flush + fsync (used to measure the
    /// difference; serialised so the figures are the honest one-sync-per-write cost).
    fn wait_solo(&self) -> Result<(), SyncError> {
        let _one = self.solo.lock();
        if let Some(p) = &self.state.lock().poisoned {
            return Err(SyncError::Poisoned(p.clone()));
        }
        let started = std::time::Instant::now();
        let result = self.sync_counted();
        self.metrics.record(1, started.elapsed(), result.is_ok());
        result.map_err(|e| {
            self.state.lock().poisoned = Some(e.clone());
            self.failed.store(true, Ordering::Release);
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
            let writers = st.last_batch;
            drop(st);
            let started = std::time::Instant::now();
            // A panic inside sled's flush must not leave every waiter hanging: it poisons
            // the store like a failed fsync.
            let result =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.sync_counted()))
                    .unwrap_or_else(|_| Err("the flush panicked".to_owned()));
            self.metrics
                .record(writers, started.elapsed(), result.is_ok());
            st = self.state.lock();
            match result {
                Ok(()) => st.durable = number,
                Err(e) => {
                    st.poisoned = Some(e);
                    self.failed.store(true, Ordering::Release);
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
            target: Mutex::new(Arc::new(Target {
                db,
                data_file: File::open(data_file)?,
                blobs: Blobs::new(data_file),
            })),
            mode,
            state: Mutex::new(State::default()),
            work: Condvar::new(),
            done: Condvar::new(),
            waiters: [tokio::sync::Notify::new(), tokio::sync::Notify::new()],
            solo: Mutex::new(()),
            failed: std::sync::atomic::AtomicBool::new(false),
            commit_delay,
            metrics: SyncMetrics::default(),
            begun: AtomicU64::new(0),
            ended: AtomicU64::new(0),
            covered: AtomicU64::new(0),
            #[cfg(any(test, feature = "testing"))]
            dir: data_file.parent().map(Path::to_owned).unwrap_or_default(),
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

    /// The syncer's instruments (batch sizes, sync times, failures).
    pub fn metrics(&self) -> &SyncMetrics {
        &self.shared.metrics
    }

    /// Whether concurrent writers share syncs.
    pub fn group_commit(&self) -> bool {
        self.group
    }

    /// Fails once a sync has failed: the store then refuses writes before making them, so
    /// nothing a client was told failed can reach the disk later through sled's own
    /// flushes.
    pub fn check_writable(&self) -> Result<(), SyncError> {
        if !self.shared.failed.load(Ordering::Acquire) {
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
        st.tickets += 1;
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

    /// Makes later syncs cover `db`, whose data file `file` (opened by the caller, so this
    /// step cannot fail) is at `path`, instead of the database they covered so far (the
    /// store swapped in a rewritten copy). The caller holds every writer off and has made
    /// `db` durable itself: a sync already running finishes on the old database, whose
    /// writes `db` holds too.
    pub fn retarget(&self, db: sled::Db, file: File, path: &Path) {
        let target = Arc::new(Target {
            db,
            data_file: file,
            blobs: Blobs::new(path),
        });
        *self.shared.target.lock() = target;
    }

    /// Returns once every write this thread completed before the call is durable.
    pub fn wait_durable(&self) -> Result<(), SyncError> {
        let ticket = self.ticket()?;
        self.wait(ticket)
    }

    /// Starts a write: fails if the store refuses writes (see
    /// [`Syncer::check_writable`]), else counts the write in until the guard is dropped.
    /// Every change to sled must hold one while it changes sled, and should drop it before
    /// waiting for its sync (a write still counted in keeps readers waiting for the next).
    pub fn begin_write(&self) -> Result<WriteGuard<'_>, SyncError> {
        self.check_writable()?;
        self.shared.begun.fetch_add(1, Ordering::SeqCst);
        Ok(WriteGuard {
            shared: &self.shared,
        })
    }

    /// [`Syncer::settle_read`] for async callers: `None` when everything a read made
    /// before the call could have seen is durable already, else the ticket of a sync that
    /// covers it, to wait on with [`Syncer::wait_async`]. Errors as for `settle_read`.
    pub fn read_ticket(&self) -> Result<Option<u64>, SyncError> {
        let begun = self.shared.begun.load(Ordering::SeqCst);
        if begun <= self.shared.covered.load(Ordering::SeqCst) {
            return Ok(None);
        }
        match self.ticket() {
            Ok(t) => Ok(Some(t)),
            Err(SyncError::Failed(m) | SyncError::Poisoned(m)) => Err(SyncError::Poisoned(m)),
        }
    }

    /// Call after reading sled, before showing what was read: returns once everything the
    /// read could have seen is durable. If no write has begun since the last sync started
    /// (with every earlier write ended), that is already true; otherwise this waits for a
    /// sync that starts now, which covers every write visible to the read.
    ///
    /// After a failed sync the store cannot tell what is durable: reads that meet writes
    /// the failed sync did not cover fail with [`SyncError::Poisoned`].
    pub fn settle_read(&self) -> Result<(), SyncError> {
        // Loaded after the read: a write the read saw began before it, so it is counted.
        let begun = self.shared.begun.load(Ordering::SeqCst);
        if begun <= self.shared.covered.load(Ordering::SeqCst) {
            return Ok(());
        }
        let refused = |e: SyncError| match e {
            SyncError::Failed(m) | SyncError::Poisoned(m) => SyncError::Poisoned(m),
        };
        let ticket = self.ticket().map_err(refused)?;
        self.wait(ticket).map_err(refused)
    }
}

/// A write in progress (see [`Syncer::begin_write`]); dropping it counts the write out.
#[derive(Debug)]
pub struct WriteGuard<'a> {
    shared: &'a Shared,
}

impl Drop for WriteGuard<'_> {
    fn drop(&mut self) {
        self.shared.ended.fetch_add(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
impl Syncer {
    /// Blob files synced so far.
    pub(crate) fn blobs_synced(&self) -> u64 {
        self.shared
            .target
            .lock()
            .blobs
            .synced
            .load(Ordering::Relaxed)
    }

    /// Makes every later sync fail or panic.
    pub(crate) fn inject(&self, fault: Fault) {
        *self.shared.fault.lock() = Some(fault);
    }
}

#[cfg(any(test, feature = "testing"))]
impl Syncer {
    /// Tickets taken so far, by writers and by readers that wait.
    pub(crate) fn tickets_taken(&self) -> u64 {
        self.shared.state.lock().tickets
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
    fn a_blob_added_without_a_change_of_the_directory_time_is_still_synced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let blobs_dir = dir.path().join("sled").join("blobs");
        std::fs::create_dir_all(&blobs_dir).expect("mkdir");
        std::fs::write(blobs_dir.join("100"), b"first").expect("write");
        let blobs = Blobs::new(&dir.path().join("sled").join("db"));
        let sync = || blobs.sync_new(blobs.list().expect("list")).expect("sync");
        sync();
        assert_eq!(blobs.synced.load(Ordering::Relaxed), 1);
        let listed_at = std::fs::metadata(&blobs_dir)
            .and_then(|m| m.modified())
            .expect("mtime");
        // A file created in the same tick as the listing leaves the directory's time as
        // it was; set it back to show that.
        std::fs::write(blobs_dir.join("200"), b"second").expect("write");
        std::fs::File::open(&blobs_dir)
            .and_then(|d| d.set_modified(listed_at))
            .expect("set mtime");
        assert_eq!(
            std::fs::metadata(&blobs_dir)
                .and_then(|m| m.modified())
                .expect("mtime"),
            listed_at
        );
        sync();
        assert_eq!(
            blobs.synced.load(Ordering::Relaxed),
            2,
            "the new blob was not synced"
        );
        sync();
        assert_eq!(
            blobs.synced.load(Ordering::Relaxed),
            2,
            "a synced blob was synced again"
        );
        // A removed blob is forgotten; a new one is still found.
        std::fs::remove_file(blobs_dir.join("100")).expect("rm");
        std::fs::write(blobs_dir.join("300"), b"third").expect("write");
        sync();
        assert_eq!(blobs.synced.load(Ordering::Relaxed), 3);
        assert_eq!(blobs.synced_names.lock().len(), 2);
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
