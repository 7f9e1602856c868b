//! Adapter runs: the rendered items of an org's biggest adapters, written newest first,
//! adapter after adapter, to a scratch file beside the store, so that a by-adapter page
//! read for the first time is one read of consecutive bytes instead of a store lookup per
//! item.
//!
//! Why a file of its own: the store keeps records in id order, so an adapter holding one
//! item in ten of its org has each item of a page in a different leaf of the store, and a
//! page nobody read before loads about a hundred leaves (on sled about 8 µs each, mostly
//! building and dropping the leaf's other records). In a run the page's items lie side by
//! side, already rendered, and the file lives in the operating system's page cache, not in
//! the server's memory (it is read with `pread`, never mapped).
//!
//! The rules that keep it from answering what the store no longer holds are the item
//! cache's (`item_cache`):
//!
//! - **A slot is served only at the version the page's graph snapshot names.** Every
//!   change to an item bumps its version, so a stale slot is a miss (the item is read from
//!   the store), never a wrong answer.
//! - **Every change to an item a run holds kills its slot, and an erasure also overwrites
//!   its bytes with zeros** ([`Runs::invalidate_changes`], from the graph index's watch
//!   hook on every replica, before the graph shows the change), so an erased text does not
//!   outlive its erasure here; other changes do no I/O on the writer's thread. A reader
//!   checks the slot again after its read, so it never serves the zeros. The hook kills slots before the item cache drops its entries, so a page cannot
//!   put a dying slot's bytes back into the cache. A change made while a run is being
//!   built is remembered, and its slot killed and blanked in the new run before the run is
//!   put in place.
//! - **The file is scratch**: never read after a restart, deleted when its run is replaced
//!   or dropped; synced only after an erasure wrote zeros into it (before the graph shows
//!   the erasure), or after an install blanked items changed during its build. Each process
//!   keeps its runs in a directory of its own under `<data_dir>/runs`, holding a lock file
//!   while it lives, and at start-up deletes every directory whose lock nobody holds.
//! - **Runs never take the store's room**: all orgs' runs together stay within
//!   `pages.runs_max_bytes` (a run is cut short where it reaches it; an org's old run stays
//!   on disk until its rebuild is installed), and no run is built or grown while the file
//!   system has less than `pages.runs_min_free_bytes` free.
//!
//! Runs are built on demand: an adapter holding at least `pages.runs_min_items` items gets
//! one once pages have read `pages.runs_after_reads` of its items from the store (a client
//! is paging through it), and keeps it while the server runs. The `feedgraph-runs` thread
//! ([`spawn_builder`]) writes an org's runs, biggest adapter first, and writes them again
//! when an adapter joins or leaves, when a quarter of their slots died, or when their
//! adapters' item counts moved by a quarter (not for a run cut short, nor for adapters
//! changing places in size). It runs at the requests' CPU priority: a run is a one-off
//! cost (about a second of CPU per 100,000 items at 1M), and at a lower priority a busy
//! server would starve it for as long as clients keep paging the slow way. Nothing is built at start-up, so a server nobody pages through
//! spends no disk, memory or CPU on runs.

use std::collections::HashMap;
use std::fs::File;
use std::hash::{Hash, Hasher};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use rustc_hash::FxHashMap;

use super::ServiceError;
use super::item_cache::CachedItem;
use crate::graph::OrgGraph;
use crate::model::FeedbackKind;
use crate::store::ChangeSet;

/// Default of `pages.runs_min_items`.
pub const DEFAULT_MIN_ITEMS: usize = 5_000;

/// Default of `pages.runs_after_reads`.
pub const DEFAULT_AFTER_READS: u64 = 1_000;

/// Default of `pages.runs_max_bytes`: 1 GiB of disk for all runs together.
pub const DEFAULT_MAX_BYTES: u64 = 1 << 30;

/// Default of `pages.runs_min_free_bytes`: 2 GiB.
pub const DEFAULT_MIN_FREE_BYTES: u64 = 2 << 30;

/// The version of a killed slot whose bytes are still in the file (no record has it).
const DEAD: u64 = u64::MAX;

/// The version of a killed slot whose bytes were overwritten with zeros.
const BLANK: u64 = u64::MAX - 1;

/// Slots closer than this in the file are read together (reading the bytes between
/// costs less than another system call).
const JOIN_GAP: u64 = 16 << 10;

/// The most bytes one read covers.
const MAX_SPAN: u64 = 4 << 20;

/// Items read from the store per call while building.
const BUILD_CHUNK: usize = 256;

/// Room a chunk of a build may take, beyond `pages.runs_min_free_bytes`, for it to be
/// written (256 items of up to 64 KiB).
const CHUNK_ROOM: u64 = (BUILD_CHUNK as u64) << 16;

/// How often the builder looks for runs to build.
const CHECK_EVERY: Duration = Duration::from_millis(500);

/// The hash a slot is found by.
fn id_hash(id: &str) -> u64 {
    let mut h = rustc_hash::FxHasher::default();
    id.hash(&mut h);
    h.finish()
}

/// Where one item's rendered bytes lie in the file.
#[derive(Debug)]
struct Slot {
    /// The item's graph row (checked with the id, so a hash collision is a miss).
    row: u32,
    len: u32,
    offset: u64,
    kind: FeedbackKind,
    /// The record version the bytes were rendered from; [`DEAD`] once the item changed,
    /// [`BLANK`] once its bytes were overwritten with zeros (it was erased).
    version: AtomicU64,
}

/// One org's runs: the file and where each item lies in it.
#[derive(Debug)]
struct OrgRuns {
    file: File,
    path: PathBuf,
    slots: FxHashMap<u64, Slot>,
    bytes: u64,
    dead: AtomicUsize,
    /// The adapters the run was built for (by row), with the items each held then; a run
    /// cut short by the disk bounds holds only some of them.
    built_for: Vec<(u32, usize)>,
    /// Zeros were written over a changed item since the file was last synced.
    blanked: AtomicBool,
}

impl Drop for OrgRuns {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.path) {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot delete an adapter run");
        }
    }
}

impl OrgRuns {
    /// Kills the slot of `id` (if held), and with `blank` also overwrites its bytes in the
    /// file with zeros (an erased item: its text must not stay on the disk). Other changes
    /// only kill, with no I/O on the writer's thread.
    fn kill(&self, id: &str, blank: bool) -> std::io::Result<()> {
        let Some(s) = self.slots.get(&id_hash(id)) else {
            return Ok(());
        };
        if !blank {
            let killed = s
                .version
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                    (v != DEAD && v != BLANK).then_some(DEAD)
                });
            if killed.is_ok() {
                self.dead.fetch_add(1, Ordering::Relaxed);
            }
            return Ok(());
        }
        let was = s.version.swap(BLANK, Ordering::AcqRel);
        if was == BLANK {
            return Ok(());
        }
        if was != DEAD {
            self.dead.fetch_add(1, Ordering::Relaxed);
        }
        const ZEROS: [u8; 4096] = [0; 4096];
        let mut at = s.offset;
        let end = s.offset + u64::from(s.len);
        while at < end {
            let n = usize::try_from(end - at).map_or(ZEROS.len(), |n| n.min(ZEROS.len()));
            self.file.write_all_at(&ZEROS[..n], at)?;
            at += n as u64;
        }
        // After the zeros are written: a sync that saw the flag covers them.
        self.blanked.store(true, Ordering::Release);
        Ok(())
    }

    /// Whether the run no longer pays for itself against what `wanted` (sorted by row)
    /// asks for: a quarter of its slots dead, another set of adapters, or their item counts
    /// moved by a quarter. Neither the order of the adapters nor a cut-short build counts.
    fn stale(&self, wanted: &[(u32, usize)]) -> bool {
        let dead = self.dead.load(Ordering::Relaxed);
        if dead.saturating_mul(4) > self.slots.len() {
            return true;
        }
        if self.built_for.len() != wanted.len()
            || self.built_for.iter().zip(wanted).any(|(a, w)| a.0 != w.0)
        {
            return true;
        }
        let (had, now): (usize, usize) = (
            self.built_for.iter().map(|a| a.1).sum(),
            wanted.iter().map(|w| w.1).sum(),
        );
        now.abs_diff(had).saturating_mul(4) > had
    }

    /// Makes the zeros written over changed items durable.
    fn sync_blanked(&self) -> std::io::Result<()> {
        if self.blanked.swap(false, Ordering::AcqRel) {
            self.file.sync_data()?;
        }
        Ok(())
    }
}

/// An item a page wants from the runs.
#[derive(Debug, Clone, Copy)]
pub(super) struct Want<'a> {
    /// The item's graph row.
    pub row: u32,
    /// Its id.
    pub id: &'a str,
    /// The version the page's snapshot shows.
    pub version: u64,
}

/// Counters of the runs (tests; `/metrics` has the same figures).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunStats {
    /// Page items served from a run.
    pub hits: u64,
    /// Runs built.
    pub builds: u64,
    /// Items held in runs now (dead ones included).
    pub slots: u64,
    /// Bytes of the run files now.
    pub bytes: u64,
}

/// The org whose run is being built, and the ids its changes touched since.
type Building = (Box<str>, Vec<Box<str>>);

/// Every org's runs, the settings they are built by, and their counters.
#[derive(Debug)]
pub struct Runs {
    /// This process's own directory under `<data_dir>/runs` (made at the first build).
    dir: PathBuf,
    /// The lock file of `dir`, held while this process lives: what tells other processes
    /// the directory is in use (see [`remove_left_over`]).
    lock: std::sync::OnceLock<File>,
    min_items: usize,
    after_reads: u64,
    max_bytes: u64,
    min_free: u64,
    orgs: RwLock<HashMap<Box<str>, Arc<OrgRuns>>>,
    /// Per org and adapter row: items its pages read from the store, and whether it is
    /// to have a run (it passed `after_reads`).
    demand: Mutex<HashMap<Box<str>, FxHashMap<u32, u64>>>,
    /// The org whose run is being built, and the ids changed since its build began.
    building: Mutex<Option<Building>>,
    building_any: AtomicBool,
    next_file: AtomicU64,
    hits: Counter,
    builds: Counter,
    slots: Gauge,
    bytes: Gauge,
}

impl Runs {
    /// Runs kept in a directory of this process's own under `base` (what processes no
    /// longer running left there is deleted now), built for adapters of at least
    /// `min_items` items (0: none) once their pages read `after_reads` items from the
    /// store, at most `max_bytes` for all orgs together, and never leaving less than
    /// `min_free` bytes free on the file system.
    pub fn new(
        base: PathBuf,
        min_items: usize,
        after_reads: u64,
        max_bytes: u64,
        min_free: u64,
    ) -> Runs {
        remove_left_over(&base);
        Runs {
            dir: base.join(format!("{}-{}", std::process::id(), unique_suffix())),
            lock: std::sync::OnceLock::new(),
            min_items,
            after_reads,
            max_bytes,
            min_free,
            orgs: RwLock::default(),
            demand: Mutex::default(),
            building: Mutex::new(None),
            building_any: AtomicBool::new(false),
            next_file: AtomicU64::new(0),
            hits: Counter::default(),
            builds: Counter::default(),
            slots: Gauge::default(),
            bytes: Gauge::default(),
        }
    }

    /// Whether runs are ever built.
    pub fn enabled(&self) -> bool {
        self.min_items > 0 && self.max_bytes > 0
    }

    /// Adds the runs' instruments to `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "feedgraph_page_run_hits",
            "Feedback page items read from an adapter run instead of the store",
            self.hits.clone(),
        );
        registry.register(
            "feedgraph_page_run_builds",
            "Adapter runs built",
            self.builds.clone(),
        );
        registry.register(
            "feedgraph_page_run_slots",
            "Feedback items held in adapter runs (dead ones included)",
            self.slots.clone(),
        );
        registry.register_with_unit(
            "feedgraph_page_run",
            "Disk used by adapter run files (pages.runs_max_bytes bounds all orgs' together)",
            Unit::Bytes,
            self.bytes.clone(),
        );
    }

    /// The runs' counters.
    pub fn stats(&self) -> RunStats {
        RunStats {
            hits: self.hits.get(),
            builds: self.builds.get(),
            slots: u64::try_from(self.slots.get()).unwrap_or(0),
            bytes: u64::try_from(self.bytes.get()).unwrap_or(0),
        }
    }

    fn org(&self, org: &str) -> Option<Arc<OrgRuns>> {
        self.orgs.read().get(org).cloned()
    }

    /// Puts `runs` in place of `org`'s (none: drops them), keeping the gauges true. The
    /// old run's file is deleted after the lock is let go (when its last reader is done).
    fn set(&self, org: &str, runs: Option<Arc<OrgRuns>>) {
        let old = {
            let mut orgs = self.orgs.write();
            if let Some(new) = &runs {
                self.slots
                    .inc_by(i64::try_from(new.slots.len()).unwrap_or(i64::MAX));
                self.bytes
                    .inc_by(i64::try_from(new.bytes).unwrap_or(i64::MAX));
            }
            let old = match runs {
                Some(new) => orgs.insert(org.into(), new),
                None => orgs.remove(org),
            };
            if let Some(old) = &old {
                self.slots
                    .dec_by(i64::try_from(old.slots.len()).unwrap_or(i64::MAX));
                self.bytes
                    .dec_by(i64::try_from(old.bytes).unwrap_or(i64::MAX));
            }
            old
        };
        drop(old);
    }

    /// Makes durable the zeros written over changed items in every run (called before an
    /// erasure's receipt says it is done). A run whose file cannot be synced is dropped
    /// (its file deleted).
    pub fn sync_blanked(&self) {
        let all: Vec<(Box<str>, Arc<OrgRuns>)> = self
            .orgs
            .read()
            .iter()
            .map(|(o, r)| (o.clone(), r.clone()))
            .collect();
        for (org, runs) in all {
            if let Err(e) = runs.sync_blanked() {
                tracing::warn!(org = %org, error = %e, "cannot sync an adapter run; run dropped");
                self.set(&org, None);
            }
        }
    }

    /// Bytes the runs of orgs other than `org` take.
    fn bytes_of_others(&self, org: &str) -> u64 {
        self.orgs
            .read()
            .iter()
            .filter(|(o, _)| o.as_ref() != org)
            .map(|(_, r)| r.bytes)
            .sum()
    }

    /// Whether the file system of the runs' directory has more than `min_free` bytes free
    /// beyond `more` (unknown counts as no).
    fn room_for(&self, more: u64) -> bool {
        let mut at = self.dir.as_path();
        while !at.exists() {
            match at.parent() {
                Some(p) => at = p,
                None => return false,
            }
        }
        match rustix::fs::statvfs(at) {
            Ok(st) => {
                let free = st.f_bavail.saturating_mul(st.f_frsize);
                free > self.min_free.saturating_add(more)
            }
            Err(_) => false,
        }
    }

    /// Kills the slots of every item `changes` touches (see the module's rules), and
    /// blanks those of erased items. Called by the graph index for every durable change,
    /// before the graph shows it; quick (a hash lookup per item, and for an erased item
    /// held a write of zeros to the page cache).
    pub fn invalidate_changes(&self, org: &str, changes: &ChangeSet) {
        // (id, erased) of every item changed.
        let ids = || {
            changes
                .feedback
                .iter()
                .map(|r| (r.feedback.id.as_str(), r.feedback.is_erased()))
                .chain(
                    changes
                        .links
                        .iter()
                        .map(|l| (l.feedback_id.as_str(), false)),
                )
        };
        if self.building_any.load(Ordering::Acquire) {
            let mut building = self.building.lock();
            if let Some((o, changed)) = building.as_mut()
                && o.as_ref() == org
            {
                changed.extend(ids().map(|(id, _)| Box::from(id)));
            }
        }
        let Some(runs) = self.org(org) else {
            return;
        };
        let mut blanked = false;
        for (id, erased) in ids() {
            blanked |= erased;
            if let Err(e) = runs.kill(id, erased) {
                // The bytes of a changed item could not be overwritten: the whole run goes
                // (its file is deleted), so they do not stay readable.
                tracing::warn!(org, error = %e, "cannot blank an item in its adapter run; run dropped");
                self.set(org, None);
                return;
            }
        }
        // An erasure's zeros reach the disk before the graph shows it, on every replica
        // (a follower applying another process's erasure included).
        if blanked && let Err(e) = runs.sync_blanked() {
            tracing::warn!(org, error = %e, "cannot sync an adapter run; run dropped");
            self.set(org, None);
        }
    }

    /// The items of `wants` the runs hold at the version asked for, in the order asked
    /// (`None` for the others, to be read from the store). Blocking (file reads).
    pub(super) fn read(&self, org: &str, wants: &[Want<'_>]) -> Vec<Option<CachedItem>> {
        let mut out: Vec<Option<CachedItem>> = vec![None; wants.len()];
        let Some(runs) = self.org(org) else {
            return out;
        };
        // (offset, len, place in `wants`, slot) of the items held at the right version.
        let mut found: Vec<(u64, u32, usize, &Slot)> = wants
            .iter()
            .enumerate()
            .filter_map(|(at, w)| {
                let s = runs.slots.get(&id_hash(w.id))?;
                (s.row == w.row && s.version.load(Ordering::Acquire) == w.version)
                    .then_some((s.offset, s.len, at, s))
            })
            .collect();
        found.sort_unstable_by_key(|f| f.0);
        let mut buf: Vec<u8> = Vec::new();
        let mut i = 0;
        let mut hits = 0u64;
        while i < found.len() {
            // One read: the items from `i` on while each starts near where the last ended.
            let start = found[i].0;
            let mut end = start + u64::from(found[i].1);
            let mut j = i + 1;
            while let Some(&(off, len, _, _)) = found.get(j) {
                let next_end = off + u64::from(len);
                if off > end + JOIN_GAP || next_end - start > MAX_SPAN {
                    break;
                }
                end = end.max(next_end);
                j += 1;
            }
            let Ok(n) = usize::try_from(end - start) else {
                i = j;
                continue;
            };
            buf.clear();
            buf.resize(n, 0);
            if let Err(e) = runs.file.read_exact_at(&mut buf, start) {
                tracing::warn!(org, error = %e, "cannot read an adapter run; items read from the store");
                i = j;
                continue;
            }
            for &(off, len, at, slot) in &found[i..j] {
                // Checked again after the read: a change that came in meanwhile may have
                // zeroed the bytes.
                if slot.version.load(Ordering::Acquire) != wants[at].version {
                    continue;
                }
                let from = usize::try_from(off - start).unwrap_or(usize::MAX);
                let Some(bytes) = from
                    .checked_add(len as usize)
                    .and_then(|to| buf.get(from..to))
                else {
                    continue;
                };
                if bytes.first() != Some(&b'{') {
                    continue;
                }
                out[at] = Some(CachedItem {
                    kind: slot.kind,
                    bytes: Arc::from(bytes),
                });
                hits += 1;
            }
            i = j;
        }
        self.hits.inc_by(hits);
        out
    }

    /// Counts `items` read from the store for a page of adapter row `adapter` of `org`,
    /// holding `linked` items (an adapter too small for a run is not counted).
    pub(super) fn note_reads(&self, org: &str, adapter: u32, linked: usize, items: u64) {
        if items == 0 || !self.enabled() || linked < self.min_items {
            return;
        }
        let mut demand = self.demand.lock();
        let per_org = match demand.get_mut(org) {
            Some(m) => m,
            None => demand.entry(org.into()).or_default(),
        };
        let n = per_org.entry(adapter).or_insert(0);
        *n = n.saturating_add(items);
    }

    /// The adapters of `g` a run is built for: those holding at least `min_items` items
    /// whose pages read `after_reads` items from the store, by row, with their counts.
    fn wanted(&self, org: &str, g: &OrgGraph) -> Vec<(u32, usize)> {
        if !self.enabled() {
            return Vec::new();
        }
        let asked: Vec<u32> = match self.demand.lock().get(org) {
            Some(m) => m
                .iter()
                .filter(|&(_, &n)| n >= self.after_reads)
                .map(|(&a, _)| a)
                .collect(),
            None => return Vec::new(),
        };
        let mut w: Vec<(u32, usize)> = asked
            .into_iter()
            .filter_map(|a| {
                let n = g.linked_by_id(a).len();
                (n >= self.min_items).then_some((a, n))
            })
            .collect();
        w.sort_unstable_by_key(|a| a.0);
        w
    }

    /// Starts remembering the ids `org`'s changes touch (see [`Runs::install`]).
    fn begin_build(&self, org: &str) {
        *self.building.lock() = Some((org.into(), Vec::new()));
        self.building_any.store(true, Ordering::Release);
    }

    /// Kills the slots of the items changed since the build began (their hooks ran while
    /// the run was not yet in place), then puts the run in place: no reader ever sees a
    /// slot of a changed item alive. Hooks wait meanwhile (they record under the same lock).
    fn install(&self, org: &str, runs: OrgRuns) -> std::io::Result<()> {
        let runs = Arc::new(runs);
        let mut building = self.building.lock();
        let changed = building.take().map(|b| b.1).unwrap_or_default();
        for id in &changed {
            // Blanked whatever the change was (it is not known here, and the new run may
            // hold an erased item's text read before its erasure). On failure the run is
            // dropped unseen, its file deleted.
            runs.kill(id, true)?;
        }
        if !changed.is_empty() {
            runs.file.sync_data()?;
        }
        self.set(org, Some(runs));
        // Only now: a hook that sees no build in progress finds the new run in place.
        self.building_any.store(false, Ordering::Release);
        drop(building);
        self.builds.inc();
        Ok(())
    }

    /// Ends a build that failed: nothing is installed.
    fn abandon_build(&self) {
        let mut building = self.building.lock();
        *building = None;
        self.building_any.store(false, Ordering::Release);
    }

    /// A new file for a run of `org`.
    fn create_file(&self) -> std::io::Result<(File, PathBuf)> {
        if self.lock.get().is_none() {
            std::fs::create_dir_all(&self.dir)?;
            let lock = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(self.dir.join(LOCK_FILE))?;
            lock.lock()?;
            let _ = self.lock.set(lock);
        }
        let n = self.next_file.fetch_add(1, Ordering::Relaxed);
        let path = self.dir.join(format!("run-{n}"));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        Ok((file, path))
    }
}

/// Why a run could not be built (logged by the builder; pages then read the store).
#[derive(Debug, thiserror::Error)]
pub enum RunsError {
    /// The run file could not be written or blanked.
    #[error("adapter run file: {0}")]
    Io(#[from] std::io::Error),
    /// Reading the items from the store failed.
    #[error(transparent)]
    Service(#[from] ServiceError),
}

/// Where the runs of a data directory are kept (each process in a directory of its own,
/// named by its pid).
pub fn runs_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("runs")
}

/// The lock file each process's runs directory holds, locked while the process lives.
const LOCK_FILE: &str = "lock";

/// A suffix no other process starting now picks (with the pid: two containers may both be
/// pid 1 on one shared volume).
fn unique_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// Deletes what processes no longer running left under `base`: every directory whose lock
/// file no process holds (or that has none), and anything that is not a directory. The
/// runs of a live process (a server beside a CLI command, replicas sharing a data
/// directory, in containers or not) hold their lock and are left alone.
fn remove_left_over(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        let gone = if e.file_type().is_ok_and(|t| t.is_dir()) {
            let lock = std::fs::OpenOptions::new()
                .write(true)
                .open(path.join(LOCK_FILE));
            match lock.map(|f| (f.try_lock(), f)) {
                // Held by a live process.
                Ok((Err(std::fs::TryLockError::WouldBlock), _)) => continue,
                Ok((Err(std::fs::TryLockError::Error(e)), _)) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot tell whether adapter runs are in use; left");
                    continue;
                }
                // Taken (its process is gone) or missing: stale.
                Ok((Ok(()), _held)) => std::fs::remove_dir_all(&path),
                Err(_) => std::fs::remove_dir_all(&path),
            }
        } else {
            std::fs::remove_file(&path)
        };
        if let Err(e) = gone {
            tracing::warn!(path = %path.display(), error = %e, "cannot delete a stale adapter run");
        }
    }
}

impl Drop for Runs {
    fn drop(&mut self) {
        // The run files go with their runs; the directory and its lock go here.
        self.orgs.get_mut().clear();
        if self.lock.get().is_some()
            && let Err(e) = std::fs::remove_dir_all(&self.dir)
        {
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot delete the adapter runs directory");
        }
    }
}

mod build;
#[cfg(test)]
mod tests;

pub use build::spawn_builder;
