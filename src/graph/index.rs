//! The graph of every org, published as immutable snapshots.
//!
//! Readers take a snapshot (`Arc<OrgGraph>`) and work on it for as long as they like
//! without holding any lock: a long graph query never stands in a writer's way. Writers
//! hand their durable changes to the org's slot:
//!
//! - **In place** when nobody holds the current snapshot (the common case): the change is
//!   applied under the slot's write lock, which is held for the microseconds the change
//!   takes, never across I/O or a long computation.
//! - **Copy on write** when a reader holds it: the change is queued, and the graph thread
//!   (`feedgraph-graph`) copies the graph, applies every queued change, and publishes the
//!   copy. Changes that arrive meanwhile join the same copy, so a long query costs the
//!   writers of its org one copy, however many of them there are. The old snapshot is freed
//!   when its last reader drops it.
//!
//! A writer that must show its change to its own next read (read-your-writes) waits for
//! [`Applied`]: at once in the common case, after the copy otherwise; an async caller awaits
//! it without holding a thread. Graph changes are idempotent and order-independent (a
//! record's node takes its highest version, edges are added only if absent), so a change
//! queued behind the copy and one applied in place never conflict.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Sender, channel};

use parking_lot::{Condvar, Mutex, RwLock};
use tokio::sync::Notify;

use super::{CanonicalGraph, OrgGraph};
use crate::store::{Backend, ChangeSet, StoreError};

/// One queued change: a write's [`ChangeSet`], and whether the FEEDBACK_FOR edges stored
/// inside its records are to be added too (bulk loads).
#[derive(Debug)]
struct QueuedChange {
    changes: ChangeSet,
    record_links: bool,
}

impl QueuedChange {
    fn apply_to(&self, g: &mut OrgGraph) {
        apply_change(g, &self.changes, self.record_links);
    }
}

fn apply_change(g: &mut OrgGraph, changes: &ChangeSet, record_links: bool) {
    g.apply_changes(changes);
    if record_links {
        g.apply_record_links(changes);
    }
}

/// Changes waiting for the graph thread, and how far the published snapshot has come.
#[derive(Debug, Default)]
struct Queue {
    changes: Vec<QueuedChange>,
    /// Sequence number of the newest change handed to the slot.
    last_seq: u64,
    /// Every change up to this sequence number is in the published snapshot.
    applied_seq: u64,
    /// The graph thread owns the queue's changes (it is copying or about to).
    busy: bool,
    /// The published graph's O(rows) upkeep is due ([`OrgGraph::upkeep_due`]): the graph
    /// thread does it on a copy.
    upkeep: bool,
}

/// One org's published snapshot and its pending changes.
#[derive(Debug, Default)]
struct OrgSlot {
    /// The snapshot readers get. Locked only to clone the `Arc` or, when no reader holds
    /// the snapshot, to apply a change in place.
    current: RwLock<Arc<OrgGraph>>,
    queue: Mutex<Queue>,
    /// Wakes blocking waiters when `applied_seq` moves.
    applied: Condvar,
    /// Wakes async waiters when `applied_seq` moves.
    applied_async: Notify,
}

impl OrgSlot {
    fn new(graph: OrgGraph) -> OrgSlot {
        OrgSlot {
            current: RwLock::new(Arc::new(graph)),
            ..OrgSlot::default()
        }
    }

    fn snapshot(&self) -> Arc<OrgGraph> {
        self.current.read().clone()
    }

    fn applied_seq(&self) -> u64 {
        self.queue.lock().applied_seq
    }

    /// Applies one change in place if nothing else is queued and no reader holds the
    /// snapshot; otherwise queues it. Returns the change's sequence number and whether the
    /// caller must start the graph thread on this slot.
    fn offer(&self, changes: &ChangeSet, record_links: bool) -> (u64, bool) {
        let mut q = self.queue.lock();
        q.last_seq += 1;
        let seq = q.last_seq;
        if !q.busy {
            let mut current = self.current.write();
            if let Some(g) = Arc::get_mut(&mut current) {
                apply_change(g, changes, record_links);
                q.applied_seq = seq;
                // Upkeep is O(rows): never here, on the caller's (often a runtime) thread
                // under the lock, but on the graph thread, on a copy.
                if g.upkeep_due() {
                    q.upkeep = true;
                    q.busy = true;
                    return (seq, true);
                }
                return (seq, false);
            }
        }
        // Copied only when it has to wait: a write applied in place (and a bulk load's
        // million records) is never cloned.
        q.changes.push(QueuedChange {
            changes: changes.clone(),
            record_links,
        });
        let start = !q.busy;
        q.busy = true;
        (seq, start)
    }

    /// The graph thread's work on this slot: publish every queued change, copying the
    /// graph when a reader holds the current snapshot or upkeep is due, until the queue
    /// is empty.
    fn drain(&self) {
        loop {
            let (mut batch, mut upto, upkeep) = {
                let mut q = self.queue.lock();
                if q.changes.is_empty() && !q.upkeep {
                    q.busy = false;
                    return;
                }
                let upkeep = std::mem::take(&mut q.upkeep);
                (std::mem::take(&mut q.changes), q.last_seq, upkeep)
            };
            let (in_place, upkeep_next) = if upkeep {
                (false, false)
            } else {
                let mut current = self.current.write();
                match Arc::get_mut(&mut current) {
                    Some(g) => {
                        batch.iter().for_each(|c| c.apply_to(g));
                        (true, g.upkeep_due())
                    }
                    None => (false, false),
                }
            };
            if upkeep_next {
                // For the next round, on a copy: not under the lock (taken after the
                // graph's lock is let go: writers take the queue's lock first).
                self.queue.lock().upkeep = true;
            }
            if !in_place {
                // The copy is made with no lock held: readers keep reading the old
                // snapshot and writers keep queueing.
                let mut copy = OrgGraph::clone(&self.snapshot());
                batch.iter().for_each(|c| c.apply_to(&mut copy));
                // Changes queued while copying join this copy rather than wait for another.
                {
                    let mut q = self.queue.lock();
                    batch = std::mem::take(&mut q.changes);
                    upto = q.last_seq;
                }
                batch.iter().for_each(|c| c.apply_to(&mut copy));
                copy.upkeep();
                *self.current.write() = Arc::new(copy);
            }
            self.queue.lock().applied_seq = upto;
            self.applied.notify_all();
            self.applied_async.notify_waiters();
        }
    }
}

/// A write's change as seen by the graph: done, or waiting for the graph thread's copy.
/// Dropping it does not lose the change; it only stops waiting for it.
#[derive(Debug, Default)]
#[must_use = "wait for the change when the caller's next read must show it"]
pub struct Applied {
    pending: Option<(Arc<OrgSlot>, u64)>,
}

impl Applied {
    /// True when the published snapshot shows the change.
    pub fn is_done(&self) -> bool {
        self.pending
            .as_ref()
            .is_none_or(|(slot, seq)| slot.applied_seq() >= *seq)
    }

    /// Blocks until the published snapshot shows the change. For blocking callers only
    /// (the blocking pool, the CLI), never on a runtime thread.
    pub fn wait(self) {
        if let Some((slot, seq)) = self.pending {
            let mut q = slot.queue.lock();
            while q.applied_seq < seq {
                slot.applied.wait(&mut q);
            }
        }
    }

    /// Waits, as a future, until the published snapshot shows the change.
    pub async fn wait_async(self) {
        let Some((slot, seq)) = self.pending else {
            return;
        };
        loop {
            let notified = slot.applied_async.notified();
            let mut notified = std::pin::pin!(notified);
            // Registered before the check, so a publish between the check and the await
            // still wakes this waiter.
            notified.as_mut().enable();
            if slot.applied_seq() >= seq {
                return;
            }
            notified.await;
        }
    }
}

/// The graph of every org, each published as snapshots (see the module comment).
#[derive(Debug, Default)]
pub struct GraphIndex {
    orgs: RwLock<HashMap<String, Arc<OrgSlot>>>,
    /// The graph thread's inbox, started on first use.
    worker: Mutex<Option<Sender<Arc<OrgSlot>>>>,
    /// Non-empty changes handed to the index so far (see [`GraphIndex::changes_offered`]).
    offered: AtomicU64,
    /// Whether the graphs were read from a checkpoint rather than built from the store.
    from_checkpoint: bool,
    /// Told of every change offered, before it is published (see [`GraphIndex::watch`]).
    watcher: std::sync::OnceLock<ChangeWatcher>,
}

/// What a [`ChangeWatcher`] calls: with the org and the change.
pub type WatchFn = dyn Fn(&str, &ChangeSet) + Send + Sync;

/// Told of every durable change the index is offered (see [`GraphIndex::watch`]).
#[derive(Clone)]
pub struct ChangeWatcher(
    /// Called with the org and the change.
    pub Arc<WatchFn>,
);

impl std::fmt::Debug for ChangeWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChangeWatcher")
    }
}

/// [`GraphIndex::try_org`] would have waited for a writer's lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WouldBlock;

impl GraphIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds the index from every record in the store: adapters first (so parents
    /// exist), then feedback, then edges.
    pub fn build(store: &dyn Backend) -> Result<Self, StoreError> {
        Self::build_for(store, &|_| true)
    }

    /// [`GraphIndex::build`] for only the orgs `serves` accepts (a replica's placement):
    /// other orgs' records are read past, never indexed.
    pub fn build_for(
        store: &dyn Backend,
        serves: &dyn Fn(&str) -> bool,
    ) -> Result<Self, StoreError> {
        let started = std::time::Instant::now();
        let rss_before = super::memory::resident_kib();
        // Records come in key order: org, then id. Ids are indexed once per org at the
        // end, from that sorted order. The org comes from each record's key, like every
        // other path; `feedgraph check` reports a record whose body names another.
        let built = super::build::build_graphs(store, serves)?;
        let scanned = started.elapsed();
        let rss_scanned = super::memory::resident_kib();
        let mut orgs: HashMap<String, Arc<OrgSlot>> = HashMap::with_capacity(built.len());
        for super::build::BuiltOrg {
            name: org,
            graph: mut g,
        } in built
        {
            g.index_bulk();
            g.family_refresh();
            g.shrink_to_fit();
            tracing::debug!(
                org = %org,
                feedback = g.feedback.len(),
                edges = g.edge_count(),
                heap = ?g.heap_report(),
                "org graph built"
            );
            orgs.insert(org, Arc::new(OrgSlot::new(g)));
        }
        tracing::info!(
            orgs = orgs.len(),
            scan_ms = scanned.as_millis() as u64,
            total_ms = started.elapsed().as_millis() as u64,
            rss_kib_before = rss_before,
            rss_kib_scanned = rss_scanned,
            rss_kib_built = super::memory::resident_kib(),
            "graph index built"
        );
        Ok(GraphIndex {
            orgs: RwLock::new(orgs),
            ..GraphIndex::default()
        })
    }

    /// Reads every org's graph from the checkpoint in `data_dir` whose id is `id` (the one
    /// the store vouches for; see `checkpoint.rs`). Any mismatch is an error, and the
    /// caller builds from the store instead.
    pub fn load_checkpoint(
        data_dir: &std::path::Path,
        id: u128,
    ) -> Result<Self, super::checkpoint::CheckpointError> {
        let started = std::time::Instant::now();
        let rss_before = super::memory::resident_kib();
        let graphs = super::checkpoint::read(data_dir, id)?;
        let orgs: HashMap<String, Arc<OrgSlot>> = graphs
            .into_iter()
            .map(|(org, g)| {
                tracing::debug!(
                    org = %org,
                    feedback = g.feedback.len(),
                    edges = g.edge_count(),
                    heap = ?g.heap_report(),
                    "org graph loaded"
                );
                (org, Arc::new(OrgSlot::new(g)))
            })
            .collect();
        tracing::info!(
            orgs = orgs.len(),
            total_ms = started.elapsed().as_millis() as u64,
            rss_kib_before = rss_before,
            rss_kib_built = super::memory::resident_kib(),
            "graph index loaded from the checkpoint"
        );
        Ok(GraphIndex {
            orgs: RwLock::new(orgs),
            from_checkpoint: true,
            ..GraphIndex::default()
        })
    }

    /// Whether the graphs were read from a checkpoint at start-up (not built by a scan).
    pub fn loaded_from_checkpoint(&self) -> bool {
        self.from_checkpoint
    }

    /// How many non-empty changes were handed to the index so far ([`GraphIndex::apply`]
    /// and the like). Unchanged over a stretch of time with the store closed to writes,
    /// it says every write the store took is in the graph.
    pub fn changes_offered(&self) -> u64 {
        self.offered.load(Ordering::SeqCst)
    }

    /// Every org's latest snapshot once every change handed to it so far is published
    /// (waiting for the graph thread if it is copying), by org name.
    pub fn settled_snapshots(&self) -> Vec<(String, Arc<OrgGraph>)> {
        let mut slots: Vec<(String, Arc<OrgSlot>)> = self
            .orgs
            .read()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        slots.sort_by(|a, b| a.0.cmp(&b.0));
        slots
            .into_iter()
            .map(|(org, slot)| {
                {
                    let mut q = slot.queue.lock();
                    while q.applied_seq < q.last_seq {
                        slot.applied.wait(&mut q);
                    }
                }
                (org, slot.snapshot())
            })
            .collect()
    }

    /// A snapshot of `org`'s graph, if the org has any data. It stays as it is however
    /// long it is held; a later call sees later writes.
    pub fn org(&self, org: &str) -> Option<Arc<OrgGraph>> {
        self.slot(org).map(|s| s.snapshot())
    }

    /// [`GraphIndex::org`] without waiting, for callers on an async runtime thread:
    /// [`WouldBlock`] when a writer holds a lock the snapshot is read under (a change
    /// being applied in place, an org being added).
    pub fn try_org(&self, org: &str) -> Result<Option<Arc<OrgGraph>>, WouldBlock> {
        let slot = match self.orgs.try_read() {
            Some(orgs) => orgs.get(org).cloned(),
            None => return Err(WouldBlock),
        };
        match slot {
            None => Ok(None),
            Some(s) => s
                .current
                .try_read()
                .map(|g| Some(g.clone()))
                .ok_or(WouldBlock),
        }
    }

    /// Has `watcher` told of every change offered from now on (once; a second watcher is
    /// refused and false returned). It runs on the writer's thread after the change is
    /// durable and before the graph shows it, so it must be quick and must not block.
    pub fn watch(&self, watcher: ChangeWatcher) -> bool {
        self.watcher.set(watcher).is_ok()
    }

    fn slot(&self, org: &str) -> Option<Arc<OrgSlot>> {
        self.orgs.read().get(org).cloned()
    }

    fn slot_or_create(&self, org: &str) -> Arc<OrgSlot> {
        if let Some(s) = self.slot(org) {
            return s;
        }
        self.orgs.write().entry(org.to_owned()).or_default().clone()
    }

    /// Applies a durable write's changes to `org`'s graph.
    pub fn apply(&self, org: &str, changes: &ChangeSet) -> Applied {
        self.offer(org, changes, false)
    }

    /// Applies loaded records, adding the FEEDBACK_FOR edges stored inside them.
    pub fn apply_records(&self, org: &str, changes: &ChangeSet) -> Applied {
        self.offer(org, changes, true)
    }

    fn offer(&self, org: &str, changes: &ChangeSet, record_links: bool) -> Applied {
        if changes.adapters.is_empty() && changes.feedback.is_empty() && changes.links.is_empty() {
            return Applied::default();
        }
        self.offered.fetch_add(1, Ordering::SeqCst);
        if let Some(w) = self.watcher.get() {
            (w.0)(org, changes);
        }
        let slot = self.slot_or_create(org);
        let (seq, start) = slot.offer(changes, record_links);
        if start {
            self.start_drain(&slot);
        }
        if slot.applied_seq() >= seq {
            Applied::default()
        } else {
            Applied {
                pending: Some((slot, seq)),
            }
        }
    }

    /// Hands a slot with queued changes to the graph thread, starting it if needed. If the
    /// thread cannot be started the slot is drained here: slower for this caller, but no
    /// change is ever left behind.
    fn start_drain(&self, slot: &Arc<OrgSlot>) {
        let mut worker = self.worker.lock();
        if let Some(tx) = worker.as_ref()
            && tx.send(slot.clone()).is_ok()
        {
            return;
        }
        let (tx, rx) = channel::<Arc<OrgSlot>>();
        let spawned = std::thread::Builder::new()
            .name("feedgraph-graph".into())
            .spawn(move || {
                // Ends when the index (and with it the sender) is dropped.
                for slot in rx {
                    slot.drain();
                }
            });
        match spawned {
            Ok(_) if tx.send(slot.clone()).is_ok() => *worker = Some(tx),
            _ => {
                *worker = None;
                drop(worker);
                tracing::warn!("could not start the graph thread; applying the change inline");
                slot.drain();
            }
        }
    }

    /// Org ids with a graph.
    pub fn orgs(&self) -> Vec<String> {
        let mut v: Vec<String> = self.orgs.read().keys().cloned().collect();
        v.sort();
        v
    }

    /// Canonical forms of every org's graph, as of the latest snapshots.
    pub fn canonical(&self) -> BTreeMap<String, CanonicalGraph> {
        let orgs: Vec<(String, Arc<OrgSlot>)> = self
            .orgs
            .read()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        orgs.into_iter()
            .map(|(k, s)| (k, s.snapshot().canonical()))
            .collect()
    }

    /// Publishes `graph` as the graph of `org` if the org has none yet, and says whether
    /// it did (if not, the caller applies its changes to the live graph instead).
    pub fn install(&self, org: &str, graph: OrgGraph) -> bool {
        let mut orgs = self.orgs.write();
        if orgs.contains_key(org) {
            return false;
        }
        orgs.insert(org.to_owned(), Arc::new(OrgSlot::new(graph)));
        self.offered.fetch_add(1, Ordering::SeqCst);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Feedback;
    use crate::store::FeedbackRecord;

    fn change(id: &str) -> ChangeSet {
        ChangeSet {
            feedback: vec![FeedbackRecord {
                lease: None,
                links: Vec::new(),
                feedback: Feedback::sample(id, "t"),
            }],
            ..ChangeSet::default()
        }
    }

    #[test]
    fn upkeep_runs_on_the_graph_thread_on_a_copy_never_in_place() {
        let slot = OrgSlot::new(OrgGraph::default());
        // Descending ids: every one after the first comes out of order.
        let id = |n: usize| format!("f{:06}", 100_000 - n);
        let mut n = 0;
        loop {
            n += 1;
            assert!(n < 10_000, "upkeep never fell due");
            let (seq, start) = slot.offer(&change(&id(n)), false);
            // Every write is applied at once, in place (no reader holds the graph).
            assert_eq!(slot.applied_seq(), seq);
            if start {
                break;
            }
        }
        // The write that made the upkeep due did not do it, and every id is found.
        let g = slot.snapshot();
        assert!(g.upkeep_due());
        assert!((1..=n).all(|k| g.feedback_row(&id(k)).is_some()));
        let before = Arc::as_ptr(&g);
        drop(g);
        // What the graph thread does with the slot.
        slot.drain();
        let g = slot.snapshot();
        assert_ne!(Arc::as_ptr(&g), before, "the upkeep was done on a copy");
        assert!(!g.upkeep_due());
        assert!((1..=n).all(|k| g.feedback_row(&id(k)).is_some()));
        assert!(!slot.queue.lock().busy);
    }

    #[test]
    fn a_write_with_no_reader_is_applied_in_place() {
        let index = GraphIndex::new();
        let before = Arc::as_ptr(&index.slot_or_create("t").snapshot());
        let applied = index.apply("t", &change("f1"));
        assert!(applied.is_done());
        let after = index.org("t").unwrap();
        assert_eq!(Arc::as_ptr(&after), before, "no copy was made");
        assert!(after.feedback_row("f1").is_some());
    }

    #[test]
    fn a_held_snapshot_never_changes_and_writes_still_publish() {
        let index = GraphIndex::new();
        index.apply("t", &change("f1")).wait();
        let held = index.org("t").unwrap();
        let applied = index.apply("t", &change("f2"));
        applied.wait();
        let fresh = index.org("t").unwrap();
        assert!(
            held.feedback_row("f2").is_none(),
            "the reader's snapshot is frozen"
        );
        assert!(fresh.feedback_row("f1").is_some());
        assert!(fresh.feedback_row("f2").is_some());
        // Later writes with no reader left go in place again, once the graph thread has
        // let go of the copy it published (it may still hold it for a moment).
        drop((held, fresh));
        let in_place = (0..1000).any(|i| {
            let applied = index.apply("t", &change(&format!("f3-{i}")));
            let done = applied.is_done();
            applied.wait();
            if !done {
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            done
        });
        assert!(in_place, "no write went in place with no reader left");
    }

    #[test]
    fn many_writers_behind_a_reader_all_publish() {
        let index = Arc::new(GraphIndex::new());
        index.apply("t", &change("seed")).wait();
        let held = index.org("t").unwrap();
        let writers: Vec<_> = (0..8)
            .map(|w| {
                let index = index.clone();
                std::thread::spawn(move || {
                    for i in 0..50 {
                        index.apply("t", &change(&format!("f{w}-{i}"))).wait();
                        // Read-your-writes: once waited for, the next snapshot shows it.
                        let g = index.org("t").unwrap();
                        assert!(g.feedback_row(&format!("f{w}-{i}")).is_some());
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        assert_eq!(held.feedback().len(), 1);
        assert_eq!(index.org("t").unwrap().feedback().len(), 401);
    }

    #[tokio::test]
    async fn an_async_writer_waits_without_a_thread() {
        let index = GraphIndex::new();
        index.apply("t", &change("f1")).wait();
        let held = index.org("t").unwrap();
        index.apply("t", &change("f2")).wait_async().await;
        assert!(index.org("t").unwrap().feedback_row("f2").is_some());
        assert!(held.feedback_row("f2").is_none());
    }
}
