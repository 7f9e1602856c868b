//! The plan cache: a query text that comes again is parsed and planned once.
//!
//! An entry is keyed by everything the planner reads besides the graph: the org, the text,
//! the parameters' values (the planner folds parameters into constants, so two value sets
//! are two plans), the depth cap and the [`PlanOptions`]. What a plan takes from the graph
//! is recorded in the plan ([`PlanDeps`]): the symbols it compiled string tests to and the
//! magnitude of the statistics its cost model read. A cached plan is used only on a graph
//! where those still hold, and re-planned otherwise, so a plan never compares symbols
//! numbered by another graph (another org's, or this org's before a restart) and its
//! operator order follows the data as it grows. The org in the key is the second fence:
//! entries of one org are never even looked at for another.
//!
//! The cache is split into shards by the key's hash, each behind its own short mutex
//! (held for a map lookup, never while planning or running), so concurrent queries rarely
//! meet. Each shard evicts its least recently used entry when full. Capacity 0 turns the
//! cache off.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use parking_lot::Mutex;
use rustc_hash::{FxHashMap, FxHasher};

use super::PlanOptions;
use super::plan::Plan;
use crate::graph::OrgGraph;

/// Number of shards: a power of two, well above the cores that look up at once.
const SHARDS: usize = 16;

/// Longest query text the cache keeps (longer texts are planned every time: a cache of
/// a few hundred entries must not be made to hold megabytes of text).
pub const MAX_CACHED_TEXT: usize = 4 * 1024;

/// How a query found its plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// A cached plan was used.
    Hit,
    /// No plan was cached for the key: planned and cached.
    Miss,
    /// A plan was cached but the graph changed what it depends on: planned again.
    Stale,
    /// Not cached (cache off, text too long, or the query failed to plan).
    Bypass,
}

impl CacheOutcome {
    /// A label for metrics.
    pub fn name(self) -> &'static str {
        match self {
            CacheOutcome::Hit => "hit",
            CacheOutcome::Miss => "miss",
            CacheOutcome::Stale => "stale",
            CacheOutcome::Bypass => "bypass",
        }
    }
}

struct Entry {
    org: Box<str>,
    text: Box<str>,
    params: Box<str>,
    max_depth: u32,
    options: PlanOptions,
    plan: Arc<Plan>,
    used: u64,
}

impl Entry {
    fn is(&self, k: &Key<'_>) -> bool {
        *self.org == *k.org
            && *self.text == *k.text
            && *self.params == *k.params
            && self.max_depth == k.max_depth
            && self.options == k.options
    }
}

#[derive(Default)]
struct Shard {
    /// Entries by key hash (a collision keeps both, told apart by the full key).
    map: FxHashMap<u64, Vec<Entry>>,
    len: usize,
    tick: u64,
}

/// The borrowed form of a key.
pub(super) struct Key<'a> {
    pub org: &'a str,
    pub text: &'a str,
    /// The parameters as JSON text.
    pub params: &'a str,
    pub max_depth: u32,
    pub options: PlanOptions,
}

impl Key<'_> {
    fn hash(&self) -> u64 {
        let mut h = FxHasher::default();
        self.org.hash(&mut h);
        self.text.hash(&mut h);
        self.params.hash(&mut h);
        self.max_depth.hash(&mut h);
        self.options.hash(&mut h);
        h.finish()
    }
}

/// A bounded cache of query plans shared by every request (see the module comment).
pub struct PlanCache {
    shards: Box<[Mutex<Shard>]>,
    per_shard: usize,
}

impl std::fmt::Debug for PlanCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlanCache")
            .field("capacity", &self.capacity())
            .field("len", &self.len())
            .finish()
    }
}

impl PlanCache {
    /// A cache of about `capacity` plans (rounded up to a multiple of the shard count);
    /// 0 turns it off.
    pub fn new(capacity: usize) -> PlanCache {
        PlanCache {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            per_shard: capacity.div_ceil(SHARDS),
        }
    }

    /// How many plans it holds at most.
    pub fn capacity(&self) -> usize {
        self.per_shard * SHARDS
    }

    /// How many plans it holds now.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len).sum()
    }

    /// Whether it holds no plan.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets every plan.
    pub fn clear(&self) {
        for s in self.shards.iter() {
            *s.lock() = Shard::default();
        }
    }

    /// The plan for `key` on `graph`: the cached one if its dependencies hold there,
    /// otherwise the one `plan` makes (cached unless it failed).
    pub(super) fn get_or_plan<E>(
        &self,
        key: &Key<'_>,
        graph: &OrgGraph,
        plan: impl FnOnce() -> Result<Plan, E>,
    ) -> (Result<Arc<Plan>, E>, CacheOutcome) {
        if self.per_shard == 0 || key.text.len() > MAX_CACHED_TEXT {
            return (plan().map(Arc::new), CacheOutcome::Bypass);
        }
        let hash = key.hash();
        let shard = &self.shards[(hash as usize) % SHARDS];
        let cached = {
            let mut s = shard.lock();
            s.tick += 1;
            let tick = s.tick;
            s.map
                .get_mut(&hash)
                .and_then(|v| v.iter_mut().find(|e| e.is(key)))
                .map(|e| {
                    e.used = tick;
                    Arc::clone(&e.plan)
                })
        };
        // Checked outside the lock: a few interner lookups and counter reads.
        let outcome = match cached {
            Some(p) if p.deps.hold_on(graph) => return (Ok(p), CacheOutcome::Hit),
            Some(_) => CacheOutcome::Stale,
            None => CacheOutcome::Miss,
        };
        let planned = match plan() {
            Ok(p) => Arc::new(p),
            Err(e) => return (Err(e), CacheOutcome::Bypass),
        };
        let mut s = shard.lock();
        s.tick += 1;
        let tick = s.tick;
        let entry = Entry {
            org: key.org.into(),
            text: key.text.into(),
            params: key.params.into(),
            max_depth: key.max_depth,
            options: key.options,
            plan: Arc::clone(&planned),
            used: tick,
        };
        let list = s.map.entry(hash).or_default();
        match list.iter_mut().find(|e| e.is(key)) {
            Some(e) => *e = entry,
            None => {
                list.push(entry);
                s.len += 1;
            }
        }
        if s.len > self.per_shard {
            s.evict_oldest();
        }
        (Ok(planned), outcome)
    }
}

impl Shard {
    /// Drops the least recently used entry (a scan: shards are small, and this runs only
    /// when a new plan was made, which costs far more).
    fn evict_oldest(&mut self) {
        let oldest = self
            .map
            .iter()
            .flat_map(|(h, v)| v.iter().enumerate().map(move |(i, e)| (e.used, *h, i)))
            .min();
        if let Some((_, h, i)) = oldest
            && let Some(v) = self.map.get_mut(&h)
        {
            v.swap_remove(i);
            self.len -= 1;
            if v.is_empty() {
                self.map.remove(&h);
            }
        }
    }
}
