//! The feedback rows of each session, for lookups by session id.
//!
//! One small vector per session costs about 76 bytes a session plus the rows (250k
//! sessions at 1M items: 19 MB). Here the rows of every session sit in one list grouped by
//! session symbol, with an offset per symbol (compressed sparse rows: 4 bytes a row and 4 a
//! symbol), built at once from the session column. Later writes go to a small map of rows
//! added per session; a row that leaves a session (an erasure blanks `session_id`, an
//! update may change it) is not removed from the grouped list but filtered out on reading,
//! by checking the row's current session in the column. Once the added rows outgrow a
//! fraction of the list, the list is rebuilt from the column.

use rustc_hash::FxHashMap;

use super::{FeedbackColumns, Sym, SymCol};

/// Added rows at which a rebuild is due: at least this many, and a quarter of all rows. A
/// rebuild is O(rows), so a live graph leaves it to its owner
/// ([`SessionRows::rebuild_due`], done by the graph thread on a copy; see `index.rs`);
/// `moved` rebuilds by itself only at `ADDED_FORCE` times that.
const ADDED_MIN: usize = if cfg!(test) { 3 } else { 4096 };
const ADDED_FORCE: usize = 4;

/// Every session's feedback rows (see the module comment).
#[derive(Debug, Default, Clone)]
pub struct SessionRows {
    /// Per symbol index `s` (symbol number - 1): its rows are `rows[starts[s]..starts[s + 1]]`.
    starts: Vec<u32>,
    /// Rows grouped by session, ascending within a session.
    rows: Vec<u32>,
    /// Rows that joined a session after the last build and are not in its group.
    added: FxHashMap<Sym, Vec<u32>>,
    /// Where each row of `added` sits in its session's list, so a row leaving its session
    /// is taken out in O(1) (erasing a session of k added rows would otherwise be O(k²)).
    added_at: FxHashMap<u32, u32>,
    /// Total rows in `added`.
    added_len: usize,
}

impl SessionRows {
    /// The grouped rows of session `s` (some may have left it since).
    fn group(&self, s: Sym) -> &[u32] {
        let i = s.0.get() as usize - 1;
        match (self.starts.get(i), self.starts.get(i + 1)) {
            (Some(&a), Some(&b)) => self.rows.get(a as usize..b as usize).unwrap_or(&[]),
            _ => &[],
        }
    }

    /// Rebuilds the grouped list from the session column (rows `0..columns.len()`), for
    /// symbols below `symbols` + 1.
    pub fn rebuild(&mut self, columns: &FeedbackColumns, symbols: usize) {
        let n = columns.len() as u32;
        let mut starts = vec![0u32; symbols + 1];
        for r in 0..n {
            if let Some(s) = columns.sym(r, SymCol::SessionId)
                && let Some(c) = starts.get_mut(s.0.get() as usize)
            {
                *c += 1;
            }
        }
        // The count of symbol index `i` is at `i + 1`; summed up to and including `i + 1`,
        // it is where the group of `i + 1` starts and `i`'s ends.
        let mut total = 0u32;
        for c in starts.iter_mut() {
            total += *c;
            *c = total;
        }
        let mut rows = vec![0u32; total as usize];
        let mut next = starts.clone();
        for r in 0..n {
            if let Some(s) = columns.sym(r, SymCol::SessionId)
                && let Some(at) = next.get_mut(s.0.get() as usize - 1)
                && let Some(slot) = rows.get_mut(*at as usize)
            {
                *slot = r;
                *at += 1;
            }
        }
        // `starts[s]` is the start of symbol index `s`, `starts[s + 1]` its end.
        self.starts = starts;
        self.rows = rows;
        self.added = FxHashMap::default();
        self.added_at = FxHashMap::default();
        self.added_len = 0;
    }

    /// Row `r` moved from session `old` to `new` (either may be none); the column already
    /// holds `new`. `symbols` is the number of interned strings (for a rebuild).
    pub fn moved(
        &mut self,
        r: u32,
        old: Option<Sym>,
        new: Option<Sym>,
        columns: &FeedbackColumns,
        symbols: usize,
    ) {
        if old == new {
            return;
        }
        // A row is in the added list of at most one session: the one the column holds.
        if let Some(s) = old
            && let Some(list) = self.added.get_mut(&s)
            && let Some(i) = self.added_at.remove(&r)
        {
            let i = i as usize;
            if list.get(i) == Some(&r) {
                list.swap_remove(i);
                if let Some(&last) = list.get(i) {
                    self.added_at.insert(last, i as u32);
                }
                self.added_len -= 1;
                if list.is_empty() {
                    self.added.remove(&s);
                }
            }
        }
        if let Some(s) = new
            && self.group(s).binary_search(&r).is_err()
        {
            let list = self.added.entry(s).or_default();
            self.added_at.insert(r, list.len() as u32);
            list.push(r);
            self.added_len += 1;
            // A rebuild reads every row's session: it waits for a quarter of all rows,
            // not of those in sessions, so it stays amortised O(1) per write in an org
            // where few items carry a session.
            if self.added_len >= ADDED_FORCE * Self::added_threshold(columns) {
                self.rebuild(columns, symbols);
            }
        }
    }

    /// The size of the added lists at which a rebuild is due.
    fn added_threshold(columns: &FeedbackColumns) -> usize {
        ADDED_MIN.max(columns.len() / 4)
    }

    /// Whether enough rows joined sessions since the last build that the grouped list
    /// should be rebuilt ([`SessionRows::rebuild`]): lookups stay right either way.
    pub fn rebuild_due(&self, columns: &FeedbackColumns) -> bool {
        self.added_len >= Self::added_threshold(columns)
    }

    /// The rows of session `s`: its group's rows that still belong to it, ascending, then
    /// the rows that joined it since, in no particular order.
    pub fn rows<'a>(
        &'a self,
        s: Sym,
        columns: &'a FeedbackColumns,
    ) -> impl Iterator<Item = u32> + 'a {
        let added = self.added.get(&s).map_or(&[][..], Vec::as_slice);
        self.group(s)
            .iter()
            .copied()
            .filter(move |&r| columns.sym(r, SymCol::SessionId) == Some(s))
            .chain(added.iter().copied())
    }

    /// Gives back spare capacity.
    pub fn shrink_to_fit(&mut self) {
        self.starts.shrink_to_fit();
        self.rows.shrink_to_fit();
        self.added.shrink_to_fit();
        self.added_at.shrink_to_fit();
    }

    /// Estimated heap bytes.
    pub fn heap_bytes(&self) -> usize {
        self.starts.capacity() * 4
            + self.rows.capacity() * 4
            + self.added.capacity() * 33
            + self.added_at.capacity() * 9
            + self
                .added
                .values()
                .map(|v| (v.capacity() * 4).div_ceil(16) * 16)
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use crate::model::Feedback;
    use crate::store::FeedbackHeadRef;

    use super::super::OrgGraph;

    fn item(n: usize, session: Option<u8>, version: u64) -> Feedback {
        let mut f = Feedback::sample(&format!("f{n:04}"), "t");
        f.session_id = session.map(|s| format!("s{s}"));
        f.version = version;
        f
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// Built at once or write by write, with items moving between sessions and out of
        /// them (erasure), every session lists exactly its items.
        #[test]
        fn sessions_match_the_column(
            first in prop::collection::vec(prop::option::of(0u8..5), 0..30),
            moves in prop::collection::vec((any::<u16>(), prop::option::of(0u8..6)), 0..40),
        ) {
            let mut bulk = OrgGraph::default();
            let mut live = OrgGraph::default();
            let mut model: Vec<Option<u8>> = Vec::new();
            for (n, s) in first.iter().enumerate() {
                let f = item(n, *s, 1);
                bulk.upsert_head(&FeedbackHeadRef::from(&f), None, false);
                live.upsert_feedback(&f);
                model.push(*s);
            }
            bulk.index_bulk();
            for (k, (i, s)) in moves.iter().enumerate() {
                let f = if model.is_empty() || k % 3 == 0 {
                    model.push(*s);
                    item(model.len() - 1, *s, 1)
                } else {
                    let n = *i as usize % model.len();
                    model[n] = *s;
                    item(n, *s, 2 + k as u64)
                };
                bulk.upsert_feedback(&f);
                live.upsert_feedback(&f);
            }
            for g in [&bulk, &live] {
                for s in 0u8..6 {
                    let mut got: Vec<u32> = g.session_rows(&format!("s{s}")).collect();
                    got.sort_unstable();
                    let want: Vec<u32> = (0..model.len() as u32)
                        .filter(|&r| model[r as usize] == Some(s))
                        .collect();
                    prop_assert_eq!(got, want, "session s{}", s);
                }
            }
        }
    }
}
