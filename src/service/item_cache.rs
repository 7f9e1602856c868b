//! Feedback items already rendered for a page, kept between pages.
//!
//! A by-adapter page of 100 items costs, without this cache, 100 store lookups, 100
//! records decoded in place and 100 items written as JSON. Pages are asked for again and
//! again (a dashboard refreshing an adapter's newest page, clients walking the same
//! cursors), so each item's rendered bytes are kept here, keyed by (org, id) and stamped
//! with the record version they were rendered from, within a byte budget
//! (`pages.cache_bytes`).
//!
//! Two rules keep it from ever serving what the store no longer holds:
//!
//! - **An entry is served only for the version the caller names**, the version of the item
//!   in the graph snapshot the page was chosen from. Every change to a record bumps its
//!   version, so an entry of an older version is never a hit.
//! - **Every change to a record removes its entry** ([`ItemCache::invalidate_changes`],
//!   called by the graph index for every durable change it applies, on every replica), so
//!   the text of an erased item does not stay in memory. A reader that rendered an item
//!   from a read made before such a change may only insert it if no change to that shard
//!   came in since it took its [`Ticket`] (taken before the store read): an insert racing
//!   a change is dropped, never kept stale.
//!
//! The entries are spread over shards, each behind its own short lock (held for a hash
//! lookup or an insert, never across I/O). Eviction is a clock: entries are queued in
//! insertion order, and one that was served since it last came round gets another turn.
//!
//! A client walking a listing bigger than the cache with its cursors would otherwise evict
//! everything kept, page after page, for items it never asks for again (at 1M the hottest
//! adapter's items take three times the default budget). So an item read for a page that
//! continues a cursor is kept only on its second read within a while ([`ItemCache::admit`]:
//! a small table of fingerprints of items read once); an adapter's first page, the one
//! dashboards ask again and again, is kept on its first read.

use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use crate::model::FeedbackKind;
use crate::store::ChangeSet;

/// How many shards the entries are spread over.
const SHARDS: usize = 64;

/// Fingerprints of items read once for a cursor page (see [`ItemCache::admit`]): 256 KiB.
const SEEN_SLOTS: usize = 1 << 16;

/// What an entry costs beyond its bytes (the map slot, the clock slot, the key).
const ENTRY_OVERHEAD: usize = 96;

/// One rendered item, as a hit hands it out.
#[derive(Debug, Clone)]
pub struct CachedItem {
    /// The item's kind (pages filtered by kind check it without the record).
    pub kind: FeedbackKind,
    /// The rendered bytes.
    pub bytes: Arc<[u8]>,
}

/// An entry: the item, the version it was rendered from, whose it is.
#[derive(Debug)]
struct Entry {
    org: Box<str>,
    id: Box<str>,
    version: u64,
    item: CachedItem,
    /// Served since the clock last passed it.
    referenced: bool,
}

impl Entry {
    fn cost(&self) -> usize {
        cost(&self.org, &self.id, self.item.bytes.len())
    }
}

fn cost(org: &str, id: &str, bytes: usize) -> usize {
    bytes + org.len() + id.len() + ENTRY_OVERHEAD
}

/// One shard's entries.
#[derive(Debug, Default)]
struct ShardMap {
    /// By the hash of (org, id); the entry names its key, so a colliding key is a miss.
    map: HashMap<u64, Entry, rustc_hash::FxBuildHasher>,
    /// Hashes in the order the clock visits them (may name removed entries).
    clock: VecDeque<u64>,
    /// Bytes held (see [`cost`]).
    bytes: usize,
}

#[derive(Debug, Default)]
struct Shard {
    /// Bumped (under the lock) by every change to a key of this shard.
    changes: AtomicU64,
    map: Mutex<ShardMap>,
}

/// Taken before an item is read from the store for rendering: the insert of what was
/// read is dropped if a change to its shard came in meanwhile.
#[derive(Debug, Clone, Copy)]
pub struct Ticket {
    shard: usize,
    changes: u64,
}

/// A cache lookup that would have waited for a shard's lock (see [`ItemCache::try_get`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

/// Counters of the cache's use (tests; `/metrics` has the same figures).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups that found the item at the version asked for.
    pub hits: u64,
    /// Lookups that did not.
    pub misses: u64,
    /// Items stored.
    pub inserts: u64,
    /// Entries removed because their record changed.
    pub invalidations: u64,
    /// Entries held now.
    pub entries: u64,
    /// Bytes held now (rendered bytes plus a fixed cost per entry).
    pub bytes: u64,
}

/// Rendered feedback items keyed by (org, id) at a record version, within a byte budget
/// (see the module comment).
#[derive(Debug)]
pub struct ItemCache {
    shards: Box<[Shard]>,
    /// Bytes each shard may hold; 0 turns the cache off.
    shard_budget: usize,
    hits: Counter,
    misses: Counter,
    inserts: Counter,
    invalidations: Counter,
    entries: Gauge,
    bytes: Gauge,
    /// Items read for a cursor page and not kept: where their fingerprint went.
    seen: Box<[AtomicU32]>,
    passed_over: Counter,
}

fn key_hash(org: &str, id: &str) -> u64 {
    let mut h = rustc_hash::FxHasher::default();
    org.hash(&mut h);
    id.hash(&mut h);
    h.finish()
}

impl ItemCache {
    /// A cache holding at most about `budget_bytes` (0: holds nothing).
    pub fn new(budget_bytes: u64) -> ItemCache {
        let budget = usize::try_from(budget_bytes).unwrap_or(usize::MAX);
        ItemCache {
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
            shard_budget: budget / SHARDS,
            hits: Counter::default(),
            misses: Counter::default(),
            inserts: Counter::default(),
            invalidations: Counter::default(),
            entries: Gauge::default(),
            bytes: Gauge::default(),
            seen: (0..SEEN_SLOTS).map(|_| AtomicU32::new(0)).collect(),
            passed_over: Counter::default(),
        }
    }

    /// Whether an item of `org` read for a page that continues a cursor is to be kept: yes
    /// when it was read so before and its fingerprint is still in the table (a page asked
    /// again), else its fingerprint is put there and it is passed over (a walk moving on).
    /// Lossy both ways (another item may take the slot, or share it): it only decides what
    /// is worth keeping, never what is served.
    pub fn admit(&self, org: &str, id: &str) -> bool {
        let h = key_hash(org, id);
        let slot = &self.seen[(h >> 48) as usize % SEEN_SLOTS];
        let fingerprint = (h as u32) | 1;
        if slot.swap(fingerprint, Ordering::Relaxed) == fingerprint {
            slot.store(0, Ordering::Relaxed);
            return true;
        }
        self.passed_over.inc();
        false
    }

    /// Adds the cache's instruments to `registry` (see `/metrics`).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "feedgraph_page_item_cache_hits",
            "Feedback page items served from their kept rendering",
            self.hits.clone(),
        );
        registry.register(
            "feedgraph_page_item_cache_misses",
            "Feedback page items not kept at the version asked for (read from an adapter run or the store)",
            self.misses.clone(),
        );
        registry.register(
            "feedgraph_page_item_cache_passed_over",
            "Feedback page items read for a cursor page the first time and not kept (a walk)",
            self.passed_over.clone(),
        );
        registry.register(
            "feedgraph_page_item_cache_invalidations",
            "Kept page items dropped because their record changed",
            self.invalidations.clone(),
        );
        registry.register(
            "feedgraph_page_item_cache_entries",
            "Rendered page items kept",
            self.entries.clone(),
        );
        registry.register_with_unit(
            "feedgraph_page_item_cache",
            "Memory held by kept page items (pages.cache_bytes bounds it)",
            Unit::Bytes,
            self.bytes.clone(),
        );
    }

    /// Frees an entry's cost from the shard and the gauges.
    fn freed(&self, m: &mut ShardMap, cost: usize) {
        m.bytes -= cost;
        self.entries.dec();
        self.bytes.dec_by(i64::try_from(cost).unwrap_or(i64::MAX));
    }

    /// Whether the cache keeps anything.
    pub fn enabled(&self) -> bool {
        self.shard_budget > 0
    }

    fn shard_of(hash: u64) -> usize {
        // The high bits: the map inside the shard uses the low ones.
        (hash >> 58) as usize % SHARDS
    }

    /// The item `id` of `org` rendered from version `version`, if held; waits for the
    /// shard's lock (held only for lookups and inserts).
    pub fn get(&self, org: &str, id: &str, version: u64) -> Option<CachedItem> {
        if !self.enabled() {
            return None;
        }
        let hash = key_hash(org, id);
        let mut shard = self.shards[Self::shard_of(hash)].map.lock();
        self.lookup(&mut shard, hash, org, id, version, true)
    }

    /// [`ItemCache::get`] without waiting: [`Busy`] when another thread holds the shard's
    /// lock (for callers on an async runtime thread). Counts neither hits nor misses: the
    /// caller counts the hits of a page it answers ([`ItemCache::count_hits`]).
    pub fn try_get(&self, org: &str, id: &str, version: u64) -> Result<Option<CachedItem>, Busy> {
        if !self.enabled() {
            return Ok(None);
        }
        let hash = key_hash(org, id);
        let mut shard = self.shards[Self::shard_of(hash)]
            .map
            .try_lock()
            .ok_or(Busy)?;
        Ok(self.lookup(&mut shard, hash, org, id, version, false))
    }

    /// Counts `n` hits of lookups made with [`ItemCache::try_get`], which counts nothing
    /// itself (a page it cannot answer whole is asked again through [`ItemCache::get`]).
    pub fn count_hits(&self, n: usize) {
        self.hits.inc_by(n as u64);
    }

    fn lookup(
        &self,
        shard: &mut ShardMap,
        hash: u64,
        org: &str,
        id: &str,
        version: u64,
        count: bool,
    ) -> Option<CachedItem> {
        match shard.map.get_mut(&hash) {
            Some(e) if e.version == version && &*e.id == id && &*e.org == org => {
                e.referenced = true;
                if count {
                    self.hits.inc();
                }
                Some(e.item.clone())
            }
            _ => {
                if count {
                    self.misses.inc();
                }
                None
            }
        }
    }

    /// To take before reading item `id` of `org` from the store, for [`ItemCache::insert`].
    pub fn ticket(&self, org: &str, id: &str) -> Ticket {
        let shard = Self::shard_of(key_hash(org, id));
        Ticket {
            shard,
            changes: self.shards[shard].changes.load(Ordering::SeqCst),
        }
    }

    /// Keeps `item`, rendered from version `version` of item `id` of `org` as read after
    /// `ticket` was taken, unless a change to its shard came in since (then what was
    /// read may be older than the store) or an entry of a later version is held.
    pub fn insert(&self, ticket: Ticket, org: &str, id: &str, version: u64, item: CachedItem) {
        let need = cost(org, id, item.bytes.len());
        if !self.enabled() || need > self.shard_budget {
            return;
        }
        let hash = key_hash(org, id);
        let Some(shard) = self.shards.get(ticket.shard) else {
            return;
        };
        if ticket.shard != Self::shard_of(hash) {
            return;
        }
        let mut m = shard.map.lock();
        if shard.changes.load(Ordering::SeqCst) != ticket.changes {
            return;
        }
        if let Some(old) = m.map.get(&hash) {
            if &*old.id == id && &*old.org == org && old.version >= version {
                return;
            }
            let freed = old.cost();
            self.freed(&mut m, freed);
            m.map.remove(&hash);
        }
        while m.bytes + need > self.shard_budget {
            let Some(freed) = evict_one(&mut m) else {
                break;
            };
            self.freed(&mut m, freed);
        }
        m.bytes += need;
        self.entries.inc();
        self.bytes.inc_by(i64::try_from(need).unwrap_or(i64::MAX));
        m.map.insert(
            hash,
            Entry {
                org: org.into(),
                id: id.into(),
                version,
                item,
                referenced: false,
            },
        );
        m.clock.push_back(hash);
        // The clock names removed entries too; keep it within a small multiple of the map.
        if m.clock.len() > 2 * m.map.len() + 64 {
            let ShardMap { map, clock, .. } = &mut *m;
            let mut seen = std::collections::HashSet::with_capacity(map.len());
            clock.retain(|h| map.contains_key(h) && seen.insert(*h));
        }
        self.inserts.inc();
    }

    /// Removes the entry of item `id` of `org` (whatever its version) and makes every
    /// insert of its shard still in flight drop what it read.
    pub fn invalidate(&self, org: &str, id: &str) {
        let hash = key_hash(org, id);
        let shard = &self.shards[Self::shard_of(hash)];
        let mut m = shard.map.lock();
        shard.changes.fetch_add(1, Ordering::SeqCst);
        if let Some(e) = m.map.get(&hash)
            && &*e.id == id
            && &*e.org == org
        {
            let freed = e.cost();
            self.freed(&mut m, freed);
            m.map.remove(&hash);
            self.invalidations.inc();
        }
    }

    /// Removes the entries of every feedback record a durable write of `org` changed or
    /// linked. Called by the graph index for each change it applies.
    pub fn invalidate_changes(&self, org: &str, changes: &ChangeSet) {
        if !self.enabled() {
            return;
        }
        for r in &changes.feedback {
            self.invalidate(org, &r.feedback.id);
        }
        for l in &changes.links {
            self.invalidate(org, &l.feedback_id);
        }
    }

    /// The cache's counters.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.get(),
            misses: self.misses.get(),
            inserts: self.inserts.get(),
            invalidations: self.invalidations.get(),
            entries: u64::try_from(self.entries.get()).unwrap_or(0),
            bytes: u64::try_from(self.bytes.get()).unwrap_or(0),
        }
    }
}

/// Evicts one entry by the clock (an entry served since its last turn gets another) and
/// returns its cost (not yet taken off `m.bytes`); `None` when nothing is left.
fn evict_one(m: &mut ShardMap) -> Option<usize> {
    while let Some(h) = m.clock.pop_front() {
        let Some(e) = m.map.get_mut(&h) else {
            continue;
        };
        if e.referenced {
            e.referenced = false;
            m.clock.push_back(h);
            continue;
        }
        let freed = e.cost();
        m.map.remove(&h);
        return Some(freed);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Feedback;
    use crate::store::FeedbackRecord;

    fn item(text: &str) -> CachedItem {
        CachedItem {
            kind: FeedbackKind::Thumbs,
            bytes: Arc::from(text.as_bytes()),
        }
    }

    fn put(c: &ItemCache, org: &str, id: &str, version: u64, text: &str) {
        let t = c.ticket(org, id);
        c.insert(t, org, id, version, item(text));
    }

    fn text(c: &ItemCache, org: &str, id: &str, version: u64) -> Option<String> {
        c.get(org, id, version)
            .map(|i| String::from_utf8_lossy(&i.bytes).into_owned())
    }

    #[test]
    fn a_hit_needs_the_same_org_id_and_version() {
        let c = ItemCache::new(1 << 20);
        put(&c, "acme", "f1", 3, "v3");
        assert_eq!(text(&c, "acme", "f1", 3).as_deref(), Some("v3"));
        assert_eq!(text(&c, "acme", "f1", 4), None);
        assert_eq!(text(&c, "acme", "f1", 2), None);
        assert_eq!(text(&c, "other", "f1", 3), None);
        assert_eq!(text(&c, "acme", "f2", 3), None);
        // An older version never replaces a newer one.
        put(&c, "acme", "f1", 2, "v2");
        assert_eq!(text(&c, "acme", "f1", 3).as_deref(), Some("v3"));
        put(&c, "acme", "f1", 5, "v5");
        assert_eq!(text(&c, "acme", "f1", 5).as_deref(), Some("v5"));
        assert_eq!(text(&c, "acme", "f1", 3), None);
    }

    #[test]
    fn a_change_removes_the_entry_and_drops_a_racing_insert() {
        let c = ItemCache::new(1 << 20);
        put(&c, "acme", "f1", 1, "secret");
        let mut rec = FeedbackRecord {
            lease: None,
            links: Vec::new(),
            feedback: Feedback::sample("f1", "acme"),
        };
        rec.feedback.version = 2;
        // A reader takes its ticket and reads version 1 from the store; the change (an
        // erasure, say) lands before it inserts what it read.
        let t = c.ticket("acme", "f1");
        c.invalidate_changes(
            "acme",
            &ChangeSet {
                feedback: vec![rec],
                ..ChangeSet::default()
            },
        );
        assert_eq!(text(&c, "acme", "f1", 1), None, "the old entry is gone");
        c.insert(t, "acme", "f1", 1, item("secret"));
        assert_eq!(
            text(&c, "acme", "f1", 1),
            None,
            "the racing insert was dropped"
        );
        assert_eq!(c.stats().entries, 0);
        // A reader that starts after the change inserts as usual.
        put(&c, "acme", "f1", 2, "erased");
        assert_eq!(text(&c, "acme", "f1", 2).as_deref(), Some("erased"));
        // A link names the item too.
        let t = c.ticket("acme", "f1");
        c.invalidate_changes(
            "acme",
            &ChangeSet {
                links: vec![crate::model::FeedbackLink {
                    feedback_id: "f1".into(),
                    adapter_id: "a".into(),
                    created_at: 1,
                    source: crate::model::LinkSource::Manual,
                    metadata: Default::default(),
                }],
                ..ChangeSet::default()
            },
        );
        assert_eq!(text(&c, "acme", "f1", 2), None);
        c.insert(t, "acme", "f1", 2, item("erased"));
        assert_eq!(c.stats().entries, 0);
    }

    #[test]
    fn the_budget_holds_and_served_entries_stay_longest() {
        let item_bytes = 1000;
        let per = cost("o", "f-000", item_bytes);
        // Room for about four items per shard.
        let c = ItemCache::new((SHARDS * per * 4 + SHARDS) as u64);
        let body = "x".repeat(item_bytes);
        let ids: Vec<String> = (0..2000).map(|i| format!("f-{i:03}")).collect();
        // One hot item, served between every insert.
        put(&c, "o", "hot", 1, &body);
        for id in &ids {
            put(&c, "o", id, 1, &body);
            assert!(c.get("o", "hot", 1).is_some(), "the hot item was evicted");
        }
        let s = c.stats();
        assert!(s.bytes as usize <= SHARDS * c.shard_budget, "{s:?}");
        assert!(s.entries > 0 && s.entries < 2000, "{s:?}");
        // An item larger than a shard's budget is not kept.
        put(&c, "o", "huge", 1, &"y".repeat(per * 5));
        assert!(c.get("o", "huge", 1).is_none());
    }

    #[test]
    fn an_empty_budget_keeps_nothing() {
        let c = ItemCache::new(0);
        assert!(!c.enabled());
        put(&c, "o", "f", 1, "x");
        assert!(c.get("o", "f", 1).is_none());
        assert!(matches!(c.try_get("o", "f", 1), Ok(None)));
        assert_eq!(c.stats().entries, 0);
    }

    #[test]
    fn an_item_read_for_a_walk_is_admitted_on_its_second_read() {
        let c = ItemCache::new(1 << 20);
        assert!(!c.admit("o", "f1"), "first read: passed over");
        assert!(!c.admit("o", "f2"));
        assert!(c.admit("o", "f1"), "second read: kept");
        assert!(!c.admit("o", "f1"), "the fingerprint was used up");
        assert!(!c.admit("p", "f2"), "another org's item");
        assert_eq!(c.passed_over.get(), 4);
    }
}
