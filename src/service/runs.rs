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
//! - **Every change to an item a run holds kills its slot and overwrites its bytes with
//!   zeros** ([`Runs::invalidate_changes`], from the graph index's watch hook on every
//!   replica, before the graph shows the change), so an erased text does not outlive its
//!   erasure here. A reader checks the slot again after its read, so it never serves the
//!   zeros. A change made while a run is being built is remembered and applied to the new
//!   run as it is installed.
//! - **The file is scratch**: never synced, never read after a restart; it is deleted
//!   when its run is replaced or dropped, and the directory is emptied at start-up.
//!
//! Runs are built on demand: an adapter holding at least `pages.runs_min_items` items gets
//! one once pages have read `pages.runs_after_reads` of its items from the store (a client
//! is paging through it), and keeps it while the server runs. The `feedgraph-runs` thread
//! ([`spawn_builder`]) writes an org's runs, biggest adapter first, up to
//! `pages.runs_max_bytes`, and writes them again when an adapter joins, when a quarter of
//! their slots died, or when their adapters' item counts moved by a quarter. It runs at the
//! requests' CPU priority: a run is a one-off cost (about a second of CPU per 100,000 items
//! at 1M), and at a lower priority a busy server would starve it for as long as clients
//! keep paging the slow way. Nothing is built at start-up, so a server nobody pages through
//! spends no disk, memory or CPU on runs.

use std::collections::HashMap;
use std::fs::File;
use std::hash::{Hash, Hasher};
use std::io::{BufWriter, Write};
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

use super::item_cache::CachedItem;
use super::pages::RenderItem;
use super::{Service, ServiceError};
use crate::graph::OrgGraph;
use crate::model::FeedbackKind;
use crate::store::ChangeSet;

/// Default of `pages.runs_min_items`.
pub const DEFAULT_MIN_ITEMS: usize = 5_000;

/// Default of `pages.runs_after_reads`.
pub const DEFAULT_AFTER_READS: u64 = 1_000;

/// Default of `pages.runs_max_bytes`: 1 GiB of disk.
pub const DEFAULT_MAX_BYTES: u64 = 1 << 30;

/// The version of a killed slot (no record has it).
const DEAD: u64 = u64::MAX;

/// Slots closer than this in the file are read together (reading the bytes between
/// costs less than another system call).
const JOIN_GAP: u64 = 16 << 10;

/// The most bytes one read covers.
const MAX_SPAN: u64 = 4 << 20;

/// Items read from the store per call while building.
const BUILD_CHUNK: usize = 256;

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
    /// The record version the bytes were rendered from; [`DEAD`] once the item changed.
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
    /// The adapters written, with the items each held when the run was built.
    adapters: Vec<(u32, usize)>,
}

impl Drop for OrgRuns {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.path) {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot delete an adapter run");
        }
    }
}

impl OrgRuns {
    /// Kills the slot of `id` (if held and alive) and zeroes its bytes in the file.
    fn kill(&self, id: &str) -> std::io::Result<bool> {
        let Some(s) = self.slots.get(&id_hash(id)) else {
            return Ok(false);
        };
        if s.version.swap(DEAD, Ordering::AcqRel) == DEAD {
            return Ok(false);
        }
        self.dead.fetch_add(1, Ordering::Relaxed);
        const ZEROS: [u8; 4096] = [0; 4096];
        let mut at = s.offset;
        let end = s.offset + u64::from(s.len);
        while at < end {
            let n = usize::try_from(end - at).map_or(ZEROS.len(), |n| n.min(ZEROS.len()));
            self.file.write_all_at(&ZEROS[..n], at)?;
            at += n as u64;
        }
        Ok(true)
    }

    /// Whether the run no longer pays for itself against what `wanted` asks for: a
    /// quarter of its slots dead, other adapters, or item counts moved by a quarter.
    fn stale(&self, wanted: &[(u32, usize)]) -> bool {
        let dead = self.dead.load(Ordering::Relaxed);
        if dead.saturating_mul(4) > self.slots.len() {
            return true;
        }
        if self.adapters.len() != wanted.len()
            || self.adapters.iter().zip(wanted).any(|(a, w)| a.0 != w.0)
        {
            return true;
        }
        let (had, now): (usize, usize) = (
            self.adapters.iter().map(|a| a.1).sum(),
            wanted.iter().map(|w| w.1).sum(),
        );
        now.abs_diff(had).saturating_mul(4) > had
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
    dir: PathBuf,
    min_items: usize,
    after_reads: u64,
    max_bytes: u64,
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
    /// Runs kept in `dir` (emptied now: what an earlier process left is stale), built for
    /// adapters of at least `min_items` items (0: none) once their pages read
    /// `after_reads` items from the store, at most `max_bytes` per org.
    pub fn new(dir: PathBuf, min_items: usize, after_reads: u64, max_bytes: u64) -> Runs {
        if dir.exists()
            && let Err(e) = std::fs::remove_dir_all(&dir)
        {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot empty the adapter runs directory");
        }
        Runs {
            dir,
            min_items,
            after_reads,
            max_bytes,
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
            "Disk used by adapter run files (pages.runs_max_bytes bounds each org's)",
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

    /// Puts `runs` in place of `org`'s (none: drops them), keeping the gauges true.
    fn set(&self, org: &str, runs: Option<Arc<OrgRuns>>) {
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
        if let Some(old) = old {
            self.slots
                .dec_by(i64::try_from(old.slots.len()).unwrap_or(i64::MAX));
            self.bytes
                .dec_by(i64::try_from(old.bytes).unwrap_or(i64::MAX));
        }
    }

    /// Kills the slots of every item `changes` touches (see the module's rules). Called by
    /// the graph index for every durable change, before the graph shows it; quick (a hash
    /// lookup per item, and a write of zeros to the page cache for an item held).
    pub fn invalidate_changes(&self, org: &str, changes: &ChangeSet) {
        let ids = || {
            changes
                .feedback
                .iter()
                .map(|r| r.feedback.id.as_str())
                .chain(changes.links.iter().map(|l| l.feedback_id.as_str()))
        };
        if self.building_any.load(Ordering::Acquire) {
            let mut building = self.building.lock();
            if let Some((o, changed)) = building.as_mut()
                && o.as_ref() == org
            {
                changed.extend(ids().map(Box::from));
            }
        }
        let Some(runs) = self.org(org) else {
            return;
        };
        for id in ids() {
            if let Err(e) = runs.kill(id) {
                // The bytes of a changed item could not be overwritten: the whole run goes
                // (its file is deleted), so they do not stay readable.
                tracing::warn!(org, error = %e, "cannot blank an item in its adapter run; run dropped");
                self.set(org, None);
                return;
            }
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
    /// whose pages read `after_reads` items from the store, biggest first (ties by row),
    /// with their counts.
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
        w.sort_unstable_by(|x, y| y.1.cmp(&x.1).then(x.0.cmp(&y.0)));
        w
    }

    /// Starts remembering the ids `org`'s changes touch (see [`Runs::install`]).
    fn begin_build(&self, org: &str) {
        *self.building.lock() = Some((org.into(), Vec::new()));
        self.building_any.store(true, Ordering::Release);
    }

    /// Puts a built run in place and kills the slots of the items changed since its build
    /// began (their hooks ran while the run was not yet in place).
    fn install(&self, org: &str, runs: OrgRuns) -> std::io::Result<()> {
        let runs = Arc::new(runs);
        let changed = {
            let mut building = self.building.lock();
            self.set(org, Some(runs.clone()));
            self.building_any.store(false, Ordering::Release);
            building.take().map(|b| b.1).unwrap_or_default()
        };
        for id in &changed {
            if let Err(e) = runs.kill(id) {
                self.set(org, None);
                return Err(e);
            }
        }
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
        std::fs::create_dir_all(&self.dir)?;
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

/// Where the runs of a data directory are kept.
pub fn runs_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("runs")
}

impl Service {
    /// The adapter runs (see the module).
    pub fn runs(&self) -> &Runs {
        &self.runs
    }

    /// Builds, rebuilds or drops each org's runs as its adapters now ask (see the
    /// module); `render` writes the items as pages serve them. Blocking, and long (it
    /// reads every item of the adapters a run is built for).
    /// `keep_going` is asked between chunks of a build: false abandons it (the server is
    /// stopping).
    pub fn refresh_runs(
        &self,
        render: RenderItem,
        keep_going: &dyn Fn() -> bool,
    ) -> Result<(), RunsError> {
        let orgs: Vec<Box<str>> = {
            let mut orgs: Vec<Box<str>> = self.runs.demand.lock().keys().cloned().collect();
            orgs.extend(self.runs.orgs.read().keys().cloned());
            orgs.sort_unstable();
            orgs.dedup();
            orgs
        };
        for org in orgs {
            if !keep_going() {
                break;
            }
            self.refresh_org_runs(&org, render, keep_going)?;
        }
        Ok(())
    }

    fn refresh_org_runs(
        &self,
        org: &str,
        render: RenderItem,
        keep_going: &dyn Fn() -> bool,
    ) -> Result<(), RunsError> {
        let runs = &self.runs;
        let Some(g) = self.graph.org(org) else {
            runs.set(org, None);
            return Ok(());
        };
        let wanted = runs.wanted(org, &g);
        if wanted.is_empty() {
            if runs.org(org).is_some() {
                runs.set(org, None);
            }
            return Ok(());
        }
        if runs.org(org).is_some_and(|r| !r.stale(&wanted)) {
            return Ok(());
        }
        runs.begin_build(org);
        match self.build_runs(org, &g, wanted, render, keep_going) {
            Ok(Some(built)) => Ok(runs.install(org, built)?),
            Ok(None) => {
                runs.abandon_build();
                Ok(())
            }
            Err(e) => {
                runs.abandon_build();
                Err(e)
            }
        }
    }

    /// Writes the items of `wanted`'s adapters, newest first, adapter after adapter (an
    /// item of two of them once), read from the store now, into a new file; `None` when
    /// `keep_going` said to stop (the file is deleted).
    fn build_runs(
        &self,
        org: &str,
        g: &OrgGraph,
        wanted: Vec<(u32, usize)>,
        render: RenderItem,
        keep_going: &dyn Fn() -> bool,
    ) -> Result<Option<OrgRuns>, RunsError> {
        let (file, path) = self.runs.create_file()?;
        // Deletes the file on every way out but the last.
        let mut partial = Partial(Some(path));
        let mut slots: FxHashMap<u64, Slot> = FxHashMap::default();
        let mut out = BufWriter::with_capacity(1 << 20, file);
        let mut offset = 0u64;
        let mut scratch: Vec<u8> = Vec::with_capacity(2048);
        let mut adapters = Vec::with_capacity(wanted.len());
        let cols = g.feedback();
        let mut written: rustc_hash::FxHashSet<u32> = rustc_hash::FxHashSet::default();
        'adapters: for (a, n) in wanted {
            adapters.push((a, n));
            let rows: Vec<u32> = g
                .linked_by_id(a)
                .iter()
                .rev()
                .copied()
                .filter(|&r| written.insert(r))
                .collect();
            for chunk in rows.chunks(BUILD_CHUNK) {
                if !keep_going() {
                    return Ok(None);
                }
                let picked: Vec<(u32, &str)> = chunk
                    .iter()
                    .filter_map(|&r| Some((r, cols.id(r)?)))
                    .collect();
                let ids: Vec<&str> = picked.iter().map(|p| p.1).collect();
                let mut at = 0usize;
                let mut failed: Option<std::io::Error> = None;
                self.store
                    .for_each_feedback_view(org, &ids, &mut |v| {
                        let row = picked.get(at).map(|p| p.0);
                        at += 1;
                        let (Some(v), Some(row)) = (v, row) else {
                            return Ok(());
                        };
                        if failed.is_some() {
                            return Ok(());
                        }
                        scratch.clear();
                        if render(&mut scratch, v).is_err() {
                            // Left to the store read, which reports it.
                            return Ok(());
                        }
                        let Ok(len) = u32::try_from(scratch.len()) else {
                            return Ok(());
                        };
                        if let Err(e) = out.write_all(&scratch) {
                            failed = Some(e);
                            return Ok(());
                        }
                        slots.entry(id_hash(v.id)).or_insert(Slot {
                            row,
                            len,
                            offset,
                            kind: v.kind,
                            version: AtomicU64::new(v.version),
                        });
                        offset += u64::from(len);
                        Ok(())
                    })
                    .map_err(ServiceError::from)?;
                if let Some(e) = failed {
                    return Err(e.into());
                }
                if offset >= self.runs.max_bytes {
                    break 'adapters;
                }
            }
        }
        let file = out.into_inner().map_err(|e| e.into_error())?;
        let Some(path) = partial.0.take() else {
            return Ok(None);
        };
        Ok(Some(OrgRuns {
            file,
            path,
            slots,
            bytes: offset,
            dead: AtomicUsize::new(0),
            adapters,
        }))
    }
}

/// The path of a run file being written, deleted if the build does not finish.
struct Partial(Option<PathBuf>);

impl Drop for Partial {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Starts the `feedgraph-runs` thread: twice a second it refreshes the runs of every org
/// clients page through ([`Service::refresh_runs`]). Holds the
/// service weakly and ends with the server. Nothing is started when runs are off.
pub fn spawn_builder(service: &Arc<Service>, render: RenderItem) {
    if !service.runs.enabled() {
        return;
    }
    let weak = Arc::downgrade(service);
    let spawned = std::thread::Builder::new()
        .name("feedgraph-runs".into())
        .spawn(move || {
            loop {
                let Some(service) = weak.upgrade() else {
                    return;
                };
                // Stops a build once the server let go of the service.
                let keep_going = || weak.strong_count() > 1;
                if let Err(e) = service.refresh_runs(render, &keep_going) {
                    tracing::warn!(error = %e, "adapter runs not built; pages read the store");
                }
                drop(service);
                // Sleep in short steps so a stopped server is noticed soon.
                let until = std::time::Instant::now() + CHECK_EVERY;
                while std::time::Instant::now() < until {
                    std::thread::sleep(Duration::from_millis(100));
                    if weak.strong_count() == 0 {
                        return;
                    }
                }
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the adapter runs thread");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{FeedbackLink, LinkSource};

    /// A run of org `o` holding `items` (id, row, version, bytes) one after another.
    fn run_of(runs: &Runs, items: &[(&str, u32, u64, &str)]) -> OrgRuns {
        let (file, path) = runs.create_file().unwrap();
        let mut slots = FxHashMap::default();
        let mut offset = 0u64;
        for &(id, row, version, bytes) in items {
            file.write_all_at(bytes.as_bytes(), offset).unwrap();
            slots.insert(
                id_hash(id),
                Slot {
                    row,
                    len: bytes.len() as u32,
                    offset,
                    kind: FeedbackKind::Thumbs,
                    version: AtomicU64::new(version),
                },
            );
            offset += bytes.len() as u64;
        }
        OrgRuns {
            file,
            path,
            slots,
            bytes: offset,
            dead: AtomicUsize::new(0),
            adapters: vec![(0, items.len())],
        }
    }

    fn link_change(id: &str) -> ChangeSet {
        ChangeSet {
            links: vec![FeedbackLink {
                feedback_id: id.into(),
                adapter_id: "a".into(),
                created_at: 0,
                source: LinkSource::Manual,
                metadata: Default::default(),
            }],
            ..ChangeSet::default()
        }
    }

    fn text(item: &Option<CachedItem>) -> Option<String> {
        item.as_ref()
            .map(|i| String::from_utf8(i.bytes.to_vec()).unwrap())
    }

    const ITEMS: [(&str, u32, u64, &str); 3] = [
        ("f1", 1, 3, r#"{"id":"f1","secret":"first"}"#),
        ("f2", 2, 1, r#"{"id":"f2","secret":"second"}"#),
        ("f3", 3, 7, r#"{"id":"f3","secret":"third"}"#),
    ];

    #[test]
    fn a_slot_is_served_only_at_its_row_and_version_and_never_after_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let runs = Runs::new(dir.path().join("runs"), 1, 1, 1 << 20);
        runs.set("o", Some(Arc::new(run_of(&runs, &ITEMS))));
        let want = |id, row, version| Want { row, id, version };
        let got = runs.read(
            "o",
            &[
                want("f3", 3, 7),
                want("f1", 1, 3),
                want("f2", 2, 2),
                want("f2", 9, 1),
            ],
        );
        assert_eq!(text(&got[0]).as_deref(), Some(ITEMS[2].3));
        assert_eq!(text(&got[1]).as_deref(), Some(ITEMS[0].3));
        assert!(got[2].is_none(), "another version");
        assert!(got[3].is_none(), "another row");
        assert!(
            runs.read("p", &[want("f1", 1, 3)])[0].is_none(),
            "another org"
        );
        assert_eq!(runs.stats().hits, 2);

        // A change to f1 kills its slot and blanks its bytes in the file.
        runs.invalidate_changes("o", &link_change("f1"));
        assert!(runs.read("o", &[want("f1", 1, 3)])[0].is_none());
        let path = runs.org("o").unwrap().path.clone();
        let on_disk = std::fs::read(&path).unwrap();
        assert!(!String::from_utf8_lossy(&on_disk).contains("first"));
        assert!(String::from_utf8_lossy(&on_disk).contains("second"));
        assert_eq!(
            text(&runs.read("o", &[want("f2", 2, 1)])[0]).as_deref(),
            Some(ITEMS[1].3)
        );
        // Dropping the run deletes its file.
        runs.set("o", None);
        assert!(!path.exists());
    }

    #[test]
    fn a_change_made_while_a_run_was_built_kills_its_slot_when_installed() {
        let dir = tempfile::tempdir().unwrap();
        let runs = Runs::new(dir.path().join("runs"), 1, 1, 1 << 20);
        runs.begin_build("o");
        // The run read f2 before this change reached the store.
        runs.invalidate_changes("o", &link_change("f2"));
        runs.invalidate_changes("other", &link_change("f3"));
        runs.install("o", run_of(&runs, &ITEMS)).unwrap();
        let want = |id, row, version| Want { row, id, version };
        let got = runs.read("o", &[want("f1", 1, 3), want("f2", 2, 1), want("f3", 3, 7)]);
        assert!(got[0].is_some());
        assert!(got[1].is_none(), "changed during the build");
        assert!(got[2].is_some(), "a change of another org");
        let on_disk = std::fs::read(&runs.org("o").unwrap().path).unwrap();
        assert!(!String::from_utf8_lossy(&on_disk).contains("second"));
        assert_eq!(runs.stats().builds, 1);
    }

    #[test]
    fn demand_picks_the_adapters_paged_through_biggest_first() {
        let dir = tempfile::tempdir().unwrap();
        let runs = Runs::new(dir.path().join("runs"), 10, 100, 1 << 20);
        runs.note_reads("o", 4, 50, 60);
        runs.note_reads("o", 4, 50, 60);
        runs.note_reads("o", 7, 9, 500);
        runs.note_reads("o", 5, 80, 99);
        let per_org = runs.demand.lock().get("o").cloned().unwrap();
        assert_eq!(per_org.get(&4), Some(&120));
        assert_eq!(per_org.get(&7), None, "too small for a run");
        assert_eq!(per_org.get(&5), Some(&99));
    }
}
