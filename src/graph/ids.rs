//! The feedback id column and the lookup by id: every row's id in one text arena, and the
//! rows in id order without a map entry per id.
//!
//! Ids are 11 to 40 bytes; one `Arc<str>` each plus an ordered map from id to row cost
//! about 70 bytes an item. Here an id costs its bytes and a 4-byte end offset. Rows arrive
//! in id order almost always (a start-up build reads records in key order; server-minted
//! ids are time-ordered), so the id order of the rows is usually the row order itself and
//! needs no storage at all ([`Order::Rows`] = rows `0..n`). Rows whose id arrives out of
//! order (a client may choose its own ids) go to a small ordered map, `late`, which is
//! merged into an explicit list of rows in id order once it grows past a fraction of the
//! rows. A lookup binary-searches the ordered rows and then asks `late`; the walks in id
//! order merge the two.
//!
//! Rows are never removed (an erased item keeps its node and id), so the row list only
//! grows.

use std::collections::BTreeMap;
use std::ops::Bound;

use rustc_hash::FxHashMap;

/// Rows per block of end offsets: offsets are 4 bytes relative to their block's start.
pub(super) const BLOCK: usize = if cfg!(test) { 8 } else { 4096 };

/// Ids longer than this (bytes) are kept beside the arena, so that a block's offsets always
/// fit in 32 bits (ids are bounded far below this by the request limits; this only makes
/// the arithmetic safe for any input).
const LONG_ID: usize = if cfg!(test) { 6 } else { 64 * 1024 };

/// Rows in `late` at which a merge is due: at least this many, and more than
/// `1 / LATE_FRACTION` of the ordered rows. A merge is O(rows), so a live graph leaves it
/// to its owner ([`FeedbackIds::merge_due`], done by the graph thread on a copy; see
/// `index.rs`); `push` merges by itself only at `LATE_FORCE` times that, so that a graph
/// nobody tends still keeps `late` a fraction of the rows.
const LATE_MIN: usize = if cfg!(test) { 4 } else { 1024 };
const LATE_FRACTION: usize = if cfg!(test) { 4 } else { 64 };
const LATE_FORCE: usize = 4;

/// The rows in id order, other than those in `late`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Order {
    /// Rows `0..n`, whose ids increase with the row number.
    Prefix(u32),
    /// These rows, ids increasing.
    Rows(Vec<u32>),
}

impl Default for Order {
    fn default() -> Self {
        Order::Prefix(0)
    }
}

impl Order {
    #[inline]
    fn len(&self) -> usize {
        match self {
            Order::Prefix(n) => *n as usize,
            Order::Rows(v) => v.len(),
        }
    }

    /// The row at position `i` of the id order.
    #[inline]
    fn at(&self, i: usize) -> Option<u32> {
        match self {
            Order::Prefix(n) => (i < *n as usize).then_some(i as u32),
            Order::Rows(v) => v.get(i).copied(),
        }
    }
}

/// Every feedback row's id, and the rows in id order (see the module comment).
#[derive(Debug, Default, Clone)]
pub struct FeedbackIds {
    /// The ids, one after another.
    pub(super) text: String,
    /// Per row: the end of its id in `text`, relative to its block's base.
    pub(super) ends: Vec<u32>,
    /// Per block of [`BLOCK`] rows: where its first id starts in `text`.
    pub(super) bases: Vec<u64>,
    /// Ids over [`LONG_ID`] bytes (their span in `text` is empty).
    pub(super) long: FxHashMap<u32, Box<str>>,
    /// Rows in id order, other than `late`'s.
    pub(super) order: Order,
    /// Rows whose id came out of order since the last merge, by id.
    pub(super) late: BTreeMap<Box<str>, u32>,
}

impl FeedbackIds {
    /// Number of rows.
    #[inline]
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// True if there are no rows.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The id of row `r`.
    #[inline]
    pub fn get(&self, r: u32) -> Option<&str> {
        let i = r as usize;
        let end = *self.ends.get(i)? as usize;
        let base = *self.bases.get(i / BLOCK)? as usize;
        let start = if i.is_multiple_of(BLOCK) {
            0
        } else {
            *self.ends.get(i - 1)? as usize
        };
        if start == end && !self.long.is_empty() {
            return self.long.get(&r).map(|s| &**s);
        }
        self.text.get(base + start..base + end)
    }

    /// Appends row `len()` with `id` to the column without indexing it (a bulk build
    /// indexes once at the end, [`FeedbackIds::index_all`]). Returns the row.
    fn append(&mut self, id: &str) -> u32 {
        let r = self.ends.len();
        if r.is_multiple_of(BLOCK) {
            self.bases.push(self.text.len() as u64);
        }
        let base = self.bases.last().copied().unwrap_or(0) as usize;
        if id.len() > LONG_ID {
            self.long.insert(r as u32, id.into());
        } else {
            self.text.push_str(id);
        }
        // A block holds at most BLOCK ids of at most LONG_ID bytes: 256 MiB, within u32.
        self.ends.push((self.text.len() - base) as u32);
        r as u32
    }

    /// Appends a row with `id` (not yet in the column) and indexes it. Returns the row.
    pub fn push(&mut self, id: &str) -> u32 {
        let r = self.append(id);
        let last = self
            .order
            .len()
            .checked_sub(1)
            .and_then(|i| self.order.at(i));
        let in_order = last.and_then(|l| self.get(l)).is_none_or(|l| l < id);
        match &mut self.order {
            Order::Prefix(n) if in_order && *n == r => *n += 1,
            Order::Rows(v) if in_order => v.push(r),
            _ => {
                self.late.insert(id.into(), r);
                if self.late.len() >= LATE_FORCE * self.late_threshold() {
                    self.merge_late();
                }
            }
        }
        r
    }

    /// Appends a row to the column only; the caller indexes every row at the end with
    /// [`FeedbackIds::index_all`].
    pub fn push_unindexed(&mut self, id: &str) -> u32 {
        self.append(id)
    }

    /// Indexes every row from scratch (after [`FeedbackIds::push_unindexed`]). If two rows
    /// share an id, the later row is the one found.
    pub fn index_all(&mut self) {
        self.late.clear();
        let n = self.len() as u32;
        let sorted = (1..n).all(|r| self.get(r - 1) < self.get(r));
        if sorted {
            self.order = Order::Prefix(n);
            return;
        }
        let mut rows: Vec<u32> = (0..n).collect();
        // Stable: equal ids keep row order, and the last of each run is kept.
        rows.sort_by(|&a, &b| self.get(a).cmp(&self.get(b)));
        let mut kept: Vec<u32> = Vec::with_capacity(rows.len());
        for r in rows {
            if let Some(&prev) = kept.last()
                && self.get(prev) == self.get(r)
            {
                kept.pop();
            }
            kept.push(r);
        }
        self.order = Order::Rows(kept);
    }

    /// The size of `late` at which a merge is due.
    fn late_threshold(&self) -> usize {
        LATE_MIN.max(self.order.len() / LATE_FRACTION)
    }

    /// Whether enough ids came out of order that they should be merged into the ordered
    /// rows ([`FeedbackIds::merge_late`]): lookups stay right either way, they only slow
    /// down as `late` grows.
    pub fn merge_due(&self) -> bool {
        self.late.len() >= self.late_threshold()
    }

    /// Moves every row of `late` into the ordered rows: O(rows).
    pub fn merge_late(&mut self) {
        let late = std::mem::take(&mut self.late);
        let mut merged = Vec::with_capacity(self.order.len() + late.len());
        let mut late = late.into_iter().peekable();
        for i in 0..self.order.len() {
            let Some(r) = self.order.at(i) else { break };
            let id = self.get(r);
            while let Some((l, lr)) = late.peek() {
                if id.is_some_and(|id| id < &**l) {
                    break;
                }
                merged.push(*lr);
                late.next();
            }
            merged.push(r);
        }
        merged.extend(late.map(|(_, r)| r));
        let prefix = merged.iter().enumerate().all(|(i, &r)| i == r as usize);
        self.order = if prefix {
            Order::Prefix(merged.len() as u32)
        } else {
            Order::Rows(merged)
        };
    }

    /// The row of `id`, if any.
    pub fn row(&self, id: &str) -> Option<u32> {
        let i = self.position(id, false);
        if let Some(r) = self.order.at(i)
            && self.get(r) == Some(id)
        {
            return Some(r);
        }
        self.late.get(id).copied()
    }

    /// The first position in the id order whose id is not below `id` (past it if `after`).
    fn position(&self, id: &str, after: bool) -> usize {
        let (mut lo, mut hi) = (0, self.order.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let here = self.order.at(mid).and_then(|r| self.get(r)).unwrap_or("");
            let below = if after { here <= id } else { here < id };
            if below {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// Rows newest first (greatest id first), strictly before `before` if given.
    pub fn newest_first<'a>(&'a self, before: Option<&'a str>) -> IdWalk<'a> {
        let end = before.map_or(self.order.len(), |c| self.position(c, false));
        let late = match before {
            None => self.late.range::<str, _>(..),
            Some(c) => self
                .late
                .range::<str, _>((Bound::Unbounded, Bound::Excluded(c))),
        };
        IdWalk::new(self, 0..end, late, true)
    }

    /// Rows oldest first (least id first), strictly after `after` if given.
    pub fn oldest_first<'a>(&'a self, after: Option<&'a str>) -> IdWalk<'a> {
        let start = after.map_or(0, |c| self.position(c, true));
        let late = match after {
            None => self.late.range::<str, _>(..),
            Some(c) => self
                .late
                .range::<str, _>((Bound::Excluded(c), Bound::Unbounded)),
        };
        IdWalk::new(self, start..self.order.len(), late, false)
    }

    /// Gives back spare capacity.
    pub fn shrink_to_fit(&mut self) {
        self.text.shrink_to_fit();
        self.ends.shrink_to_fit();
        self.bases.shrink_to_fit();
        self.long.shrink_to_fit();
        if let Order::Rows(v) = &mut self.order {
            v.shrink_to_fit();
        }
    }

    /// Estimated heap bytes: the arena, the offsets, the ordered rows and `late`.
    pub fn heap_bytes(&self) -> usize {
        let order = match &self.order {
            Order::Prefix(_) => 0,
            Order::Rows(v) => v.capacity() * 4,
        };
        let boxed = |s: &str| 16 + s.len().div_ceil(16) * 16;
        self.text.capacity()
            + self.ends.capacity() * 4
            + self.bases.capacity() * 8
            + self.long.values().map(|s| boxed(s) + 24).sum::<usize>()
            + order
            // A B-tree entry: the key's box and allocation and the row, about 11 a node.
            + self.late.keys().map(|k| boxed(k) + 8).sum::<usize>()
    }
}

/// A walk over rows in id order, either way, merging the ordered rows with `late`
/// ([`FeedbackIds::newest_first`], [`FeedbackIds::oldest_first`]).
pub struct IdWalk<'a> {
    ids: &'a FeedbackIds,
    /// Positions of the id order still to walk.
    main: std::ops::Range<usize>,
    late: std::collections::btree_map::Range<'a, Box<str>, u32>,
    newest_first: bool,
}

impl<'a> IdWalk<'a> {
    fn new(
        ids: &'a FeedbackIds,
        main: std::ops::Range<usize>,
        late: std::collections::btree_map::Range<'a, Box<str>, u32>,
        newest_first: bool,
    ) -> Self {
        IdWalk {
            ids,
            main,
            late,
            newest_first,
        }
    }

    /// The next position of the ordered rows in walk order, not taken.
    #[inline]
    fn main_next(&self) -> Option<usize> {
        if self.main.is_empty() {
            None
        } else if self.newest_first {
            Some(self.main.end - 1)
        } else {
            Some(self.main.start)
        }
    }

    #[inline]
    fn take_main(&mut self) {
        if self.newest_first {
            self.main.end -= 1;
        } else {
            self.main.start += 1;
        }
    }

    /// The next row of `late` in walk order, not taken (a clone of a B-tree range is two
    /// cursors: cheap).
    #[inline]
    fn late_next(&self) -> Option<(&'a str, u32)> {
        let mut probe = self.late.clone();
        let next = if self.newest_first {
            probe.next_back()
        } else {
            probe.next()
        };
        next.map(|(k, &r)| (&**k, r))
    }
}

impl Iterator for IdWalk<'_> {
    type Item = u32;

    #[inline]
    fn next(&mut self) -> Option<u32> {
        let main = self.main_next();
        let late = self.late_next();
        match (main, late) {
            (None, None) => None,
            (Some(i), None) => {
                self.take_main();
                self.ids.order.at(i)
            }
            (None, Some((_, r))) => {
                self.step_late();
                Some(r)
            }
            (Some(i), Some((lid, lr))) => {
                let r = self.ids.order.at(i)?;
                let mid = self.ids.get(r).unwrap_or("");
                let main_first = if self.newest_first {
                    mid > lid
                } else {
                    mid < lid
                };
                if main_first {
                    self.take_main();
                    Some(r)
                } else {
                    self.step_late();
                    Some(lr)
                }
            }
        }
    }
}

impl IdWalk<'_> {
    #[inline]
    fn step_late(&mut self) {
        if self.newest_first {
            self.late.next_back();
        } else {
            self.late.next();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What the id column replaced: an ordered map from id to row.
    fn check(ids: &FeedbackIds, model: &BTreeMap<String, u32>, all: &[String], cursors: &[String]) {
        assert_eq!(ids.len(), all.len());
        for (r, id) in all.iter().enumerate() {
            assert_eq!(ids.get(r as u32), Some(id.as_str()), "row {r}");
        }
        assert_eq!(ids.get(all.len() as u32), None);
        for (id, &r) in model {
            assert_eq!(ids.row(id), Some(r), "id {id}");
        }
        let newest: Vec<u32> = model.values().rev().copied().collect();
        let oldest: Vec<u32> = model.values().copied().collect();
        assert_eq!(ids.newest_first(None).collect::<Vec<_>>(), newest);
        assert_eq!(ids.oldest_first(None).collect::<Vec<_>>(), oldest);
        for c in cursors {
            if !model.contains_key(c) {
                assert_eq!(ids.row(c), None, "absent {c}");
            }
            let before: Vec<u32> = model
                .range::<str, _>((Bound::Unbounded, Bound::Excluded(c.as_str())))
                .rev()
                .map(|(_, &r)| r)
                .collect();
            let after: Vec<u32> = model
                .range::<str, _>((Bound::Excluded(c.as_str()), Bound::Unbounded))
                .map(|(_, &r)| r)
                .collect();
            assert_eq!(
                ids.newest_first(Some(c)).collect::<Vec<_>>(),
                before,
                "before {c}"
            );
            assert_eq!(
                ids.oldest_first(Some(c)).collect::<Vec<_>>(),
                after,
                "after {c}"
            );
        }
    }

    /// Ids of one to nine characters from a small alphabet: many shared prefixes, some
    /// longer than the (test) long-id bound.
    fn id() -> impl Strategy<Value = String> {
        "[a-d]{1,9}"
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// Pushed one by one (mostly ascending, some out of order), the column answers
        /// lookups and walks like the ordered map, after every push.
        #[test]
        fn pushes_match_an_ordered_map(
            seq in prop::collection::vec((id(), any::<bool>()), 0..80),
            cursors in prop::collection::vec(id(), 0..6),
        ) {
            let mut ids = FeedbackIds::default();
            let mut model = BTreeMap::new();
            let mut all = Vec::new();
            // Half the ids come in ascending order, as the server mints them.
            let mut ascending: Vec<String> = seq.iter().filter(|(_, a)| *a).map(|(s, _)| s.clone()).collect();
            ascending.sort();
            let mut asc = ascending.into_iter();
            for (s, in_order) in &seq {
                let s = if *in_order { asc.next().unwrap_or_else(|| s.clone()) } else { s.clone() };
                if model.contains_key(&s) {
                    continue;
                }
                let r = ids.push(&s);
                prop_assert_eq!(r as usize, all.len());
                model.insert(s.clone(), r);
                all.push(s);
                check(&ids, &model, &all, &cursors);
            }
            let mut cloned = ids.clone();
            cloned.shrink_to_fit();
            check(&cloned, &model, &all, &cursors);
        }

        /// A bulk build (rows unindexed, indexed at the end) gives the same answers,
        /// sorted input or not; of two rows with one id the later is found.
        #[test]
        fn bulk_index_matches_an_ordered_map(
            mut seq in prop::collection::vec(id(), 0..80),
            sorted in any::<bool>(),
            cursors in prop::collection::vec(id(), 0..6),
        ) {
            if sorted {
                seq.sort();
                seq.dedup();
            }
            let mut ids = FeedbackIds::default();
            let mut model = BTreeMap::new();
            for s in &seq {
                let r = ids.push_unindexed(s);
                model.insert(s.clone(), r);
            }
            ids.index_all();
            check(&ids, &model, &seq, &cursors);
            // And pushes after the build keep it right.
            let mut all = seq.clone();
            for s in &cursors {
                if !model.contains_key(s) {
                    let r = ids.push(s);
                    model.insert(s.clone(), r);
                    all.push(s.clone());
                }
            }
            check(&ids, &model, &all, &cursors);
        }
    }

    #[test]
    fn ascending_ids_need_no_order_list() {
        let mut ids = FeedbackIds::default();
        for i in 0..100 {
            ids.push(&format!("f{i:04}"));
        }
        assert_eq!(ids.order, Order::Prefix(100));
        assert!(ids.late.is_empty());
        // One out of order goes to `late`; enough of them are merged into a row list.
        ids.push("f0050x");
        assert_eq!(ids.late.len(), 1);
        for i in 0..40 {
            ids.push(&format!("e{i:04}"));
        }
        // Past a quarter of the rows (in tests) a merge is due, but left to the owner.
        assert_eq!(ids.late.len(), 41);
        assert!(ids.merge_due());
        ids.merge_late();
        assert!(ids.late.is_empty() && !ids.merge_due());
        assert_eq!(ids.row("f0050x"), Some(100));
        assert_eq!(ids.row("e0000"), Some(101));
        assert_eq!(ids.newest_first(None).next(), Some(99));
        assert_eq!(ids.oldest_first(None).next(), Some(101));
        // Left untended, `late` is merged by `push` itself at LATE_FORCE times the due size.
        for i in 0..200 {
            ids.push(&format!("d{i:04}"));
            assert!(ids.late.len() < LATE_FORCE * ids.late_threshold());
        }
        assert_eq!(ids.row("d0000"), Some(141));
        assert_eq!(ids.oldest_first(None).next(), Some(141));
    }
}
