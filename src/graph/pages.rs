//! Newest-first pages of the feedback linked to an adapter, or to any adapter of a family,
//! read from the per-adapter lists ordered by feedback id ([`OrgGraph::linked_by_id`]):
//! a page costs a binary search per adapter to find its cursor and then only the rows it
//! returns (and those its filter skips), however many items the adapters hold.
//!
//! A family is merged k ways, newest id first; an item linked to several adapters of the
//! family comes up once from each of their lists, consecutively (equal ids), and is kept
//! once.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::{FeedbackNode, OrgGraph};

/// One page of feedback rows, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkedPage {
    /// The rows of the page, newest first.
    pub rows: Vec<u32>,
    /// Whether more matching rows follow the page.
    pub more: bool,
}

impl OrgGraph {
    /// The newest `limit` feedback rows linked to any adapter row of `family` whose id
    /// is below `before` (when given) and that `keep` accepts.
    pub fn linked_page(
        &self,
        family: &[u32],
        before: Option<&str>,
        limit: usize,
        keep: impl Fn(&FeedbackNode<'_>) -> bool,
    ) -> LinkedPage {
        self.linked_page_within(family, before, limit, keep, usize::MAX)
            .unwrap_or_default()
    }

    /// [`OrgGraph::linked_page`] that gives up (`None`) rather than look at more than
    /// `max_rows` candidate rows or merge more than `max_rows` lists: a bounded amount of
    /// work, for callers that must not run long (an async runtime thread).
    pub fn linked_page_within(
        &self,
        family: &[u32],
        before: Option<&str>,
        limit: usize,
        keep: impl Fn(&FeedbackNode<'_>) -> bool,
        max_rows: usize,
    ) -> Option<LinkedPage> {
        if family.len() > max_rows {
            return None;
        }
        let feedback = &self.feedback;
        // Where each adapter's walk starts: past the last row below the cursor.
        let start = |a: u32| -> &[u32] {
            let list = self.linked_by_id(a);
            match before {
                None => list,
                Some(c) => {
                    let end = list.partition_point(|&r| feedback.id_str(r) < c);
                    list.get(..end).unwrap_or(&[])
                }
            }
        };
        let mut page = LinkedPage::default();
        let mut visited = 0usize;
        let mut over = false;
        let mut take = |r: u32| -> bool {
            visited += 1;
            if visited > max_rows {
                over = true;
                return false;
            }
            let Some(f) = feedback.get(r) else {
                return true;
            };
            if !keep(&f) {
                return true;
            }
            if page.rows.len() == limit {
                page.more = true;
                return false;
            }
            page.rows.push(r);
            true
        };
        if let [one] = family {
            for &r in start(*one).iter().rev() {
                if !take(r) {
                    break;
                }
            }
            return (!over).then_some(page);
        }
        // Heads of the lists still being walked: (id of the head row, list, index of the
        // head within the list). The greatest id comes first.
        let lists: Vec<&[u32]> = family.iter().map(|&a| start(a)).collect();
        let id_of = |r: u32| feedback.id_str(r);
        let mut heads: BinaryHeap<(&str, Reverse<usize>, usize)> = lists
            .iter()
            .enumerate()
            .filter_map(|(l, list)| {
                let i = list.len().checked_sub(1)?;
                Some((id_of(list[i]), Reverse(l), i))
            })
            .collect();
        let mut last: Option<u32> = None;
        while let Some((_, Reverse(l), i)) = heads.pop() {
            let r = lists[l][i];
            if let Some(next) = i.checked_sub(1) {
                heads.push((id_of(lists[l][next]), Reverse(l), next));
            }
            if last == Some(r) {
                continue;
            }
            last = Some(r);
            if !take(r) {
                break;
            }
        }
        (!over).then_some(page)
    }

    /// How many distinct feedback items are linked to at least one adapter row of
    /// `family`.
    pub fn linked_count(&self, family: &[u32]) -> usize {
        if let [one] = family {
            return self.linked_by_id(*one).len();
        }
        let mut seen = vec![0u64; self.feedback.len().div_ceil(64)];
        let mut n = 0;
        for &a in family {
            for &r in self.linked_by_id(a) {
                if let Some(word) = seen.get_mut(r as usize / 64) {
                    let bit = 1u64 << (r % 64);
                    if *word & bit == 0 {
                        *word |= bit;
                        n += 1;
                    }
                }
            }
        }
        n
    }
}

/// Per adapter row, how many distinct feedback items are linked to the adapter or to any
/// of its descendants (its subtree in the DERIVED_FROM forest): the `total_linked` of a
/// by-adapter page with `include_descendants`, kept up to date on every link instead of
/// counted with a pass over every link of the family.
///
/// A new link from item `f` to adapter `a` adds one to `a` and to each ancestor of `a` up
/// to (not including) the first one whose subtree already held `f` through another of
/// `f`'s adapters: above that one, every subtree held `f` already. The graph never removes
/// a FEEDBACK_FOR edge (an erased item keeps its node and links). A re-parented adapter
/// whose subtree holds items moves them between ancestors: the counts are then recomputed
/// once, at the end of the write ([`OrgGraph::family_refresh`]). While the forest has a
/// cycle the counts are off and callers count by scanning.
#[derive(Debug, Clone, Default)]
pub(super) struct FamilyCounts {
    /// Per adapter row: distinct items linked into its subtree.
    pub(super) counts: Vec<u64>,
    /// Whether `counts` can be trusted.
    pub(super) state: FamilyState,
}

/// Whether the family counts are up to date.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) enum FamilyState {
    /// Up to date.
    #[default]
    Fresh,
    /// To be recomputed at the end of the current write.
    Stale,
    /// The adapter forest has a cycle: not kept; callers scan.
    Off,
}

/// What a family page walks when the family holds this share of the org's items or more
/// (1 in `DENSE_FAMILY`): the org's items newest first, each tested for membership, rather
/// than a k-way merge of the family's lists. A dense family then costs about
/// `DENSE_FAMILY * limit` membership tests per page, however many adapters it has.
const DENSE_FAMILY: u64 = 8;

impl OrgGraph {
    /// The parent chain of adapter row `a`, `a` first; `None` if it is longer than there
    /// are adapters (a cycle).
    fn ancestors_of(&self, a: u32, mut each: impl FnMut(u32) -> bool) -> Option<()> {
        let mut at = Some(a);
        let mut steps = 0usize;
        while let Some(r) = at {
            if steps > self.adapters.len() {
                return None;
            }
            steps += 1;
            if !each(r) {
                return Some(());
            }
            at = self.adapters.get(r as usize).and_then(|n| n.parent);
        }
        Some(())
    }

    /// Counts a new FEEDBACK_FOR edge from feedback row `f` to adapter row `a` (already
    /// added to the graph) in the family counts.
    pub(super) fn family_note_link(&mut self, f: u32, a: u32) {
        if self.family.state != FamilyState::Fresh {
            return;
        }
        let n = self.adapters.len();
        if self.family.counts.len() < n {
            self.family.counts.resize(n, 0);
        }
        // Every subtree that already held `f`: the chains above its other adapters.
        let mut covered: Vec<u32> = Vec::new();
        let others: Vec<u32> = self.feedback_adapters(f).filter(|&b| b != a).collect();
        for b in others {
            let walked = self.ancestors_of(b, |r| {
                if covered.contains(&r) {
                    return false;
                }
                covered.push(r);
                true
            });
            if walked.is_none() {
                self.family.state = FamilyState::Off;
                return;
            }
        }
        // The counts are taken out while the chain is walked (the walk reads `self`).
        let mut counts = std::mem::take(&mut self.family.counts);
        let walked = self.ancestors_of(a, |r| {
            if covered.contains(&r) {
                return false;
            }
            if let Some(c) = counts.get_mut(r as usize) {
                *c += 1;
            }
            true
        });
        self.family.counts = counts;
        if walked.is_none() {
            self.family.state = FamilyState::Off;
        }
    }

    /// Notes that adapter row `row` changed parent: its subtree's items move between
    /// ancestors, so the counts are recomputed at the end of the write (nothing moves if
    /// the subtree holds no items, as when an adapter is created).
    pub(super) fn family_note_parent(&mut self, row: u32) {
        let holds = self.family.counts.get(row as usize).copied().unwrap_or(0) > 0;
        match self.family.state {
            FamilyState::Fresh if !holds => {}
            // A cycle may have been broken: try again.
            _ => self.family.state = FamilyState::Stale,
        }
    }

    /// Recomputes the family counts if a write left them stale: one pass over every
    /// item's links, each walking up its adapters' chains until a subtree already counted
    /// for that item.
    pub(super) fn family_refresh(&mut self) {
        if self.family.state != FamilyState::Stale {
            return;
        }
        let n = self.adapters.len();
        // A cycle anywhere: the counts stay off.
        for a in 0..n as u32 {
            if self.ancestors_of(a, |_| true).is_none() {
                self.family.state = FamilyState::Off;
                return;
            }
        }
        let mut counts = vec![0u64; n];
        let mut stamp = vec![u32::MAX; n];
        for f in 0..self.feedback.len() as u32 {
            for b in self.feedback_adapters(f) {
                // Acyclic (checked above), so each walk ends.
                let _ = self.ancestors_of(b, |r| {
                    let Some(s) = stamp.get_mut(r as usize) else {
                        return false;
                    };
                    if *s == f {
                        return false;
                    }
                    *s = f;
                    if let Some(c) = counts.get_mut(r as usize) {
                        *c += 1;
                    }
                    true
                });
            }
        }
        self.family = FamilyCounts {
            counts,
            state: FamilyState::Fresh,
        };
    }

    /// How many distinct feedback items are linked to adapter row `root` or to any of its
    /// descendants, from the counts kept on write; `None` while they are off (a cycle).
    pub fn subtree_linked_count(&self, root: u32) -> Option<usize> {
        if self.family.state != FamilyState::Fresh || root as usize >= self.adapters.len() {
            return None;
        }
        Some(self.family.counts.get(root as usize).copied().unwrap_or(0) as usize)
    }

    /// Whether feedback row `f` is linked to adapter row `root` or to a descendant of it.
    fn in_subtree(&self, f: u32, root: u32) -> bool {
        self.feedback_adapters(f).any(|b| {
            let mut found = false;
            let _ = self.ancestors_of(b, |r| {
                found = r == root;
                !found
            });
            found
        })
    }

    /// [`OrgGraph::linked_page`] for the subtree of adapter row `root` (`family` lists its
    /// rows, as [`OrgGraph::linked_page`] takes them, when they are needed). A family holding a large share of
    /// the org's items is paged by walking the org's items newest first and keeping those
    /// linked into the subtree, which reads about as many items as the page returns
    /// however many adapters the family has; a sparse one is merged from its lists.
    pub fn subtree_page(
        &self,
        root: u32,
        family: impl FnOnce() -> Vec<u32>,
        before: Option<&str>,
        limit: usize,
        keep: impl Fn(&FeedbackNode<'_>) -> bool,
    ) -> LinkedPage {
        self.subtree_page_within(root, family, before, limit, keep, usize::MAX)
            .unwrap_or_default()
    }

    /// [`OrgGraph::subtree_page`] that gives up (`None`) rather than look at more than
    /// `max_rows` rows. With a bound, a sparse family (one merged from its lists, which
    /// are listed first) always gives up: listing them is not bounded.
    pub fn subtree_page_within(
        &self,
        root: u32,
        family: impl FnOnce() -> Vec<u32>,
        before: Option<&str>,
        limit: usize,
        keep: impl Fn(&FeedbackNode<'_>) -> bool,
        max_rows: usize,
    ) -> Option<LinkedPage> {
        let dense = self
            .subtree_linked_count(root)
            .is_some_and(|n| (n as u64).saturating_mul(DENSE_FAMILY) >= self.feedback.len() as u64);
        if !dense {
            if max_rows != usize::MAX {
                return None;
            }
            return self.linked_page_within(&family(), before, limit, keep, max_rows);
        }
        let mut page = LinkedPage::default();
        for (visited, r) in self.feedback_newest_first(before).enumerate() {
            if visited >= max_rows {
                return None;
            }
            if !self.in_subtree(r, root) {
                continue;
            }
            let Some(f) = self.feedback.get(r) else {
                continue;
            };
            if !keep(&f) {
                continue;
            }
            if page.rows.len() == limit {
                page.more = true;
                break;
            }
            page.rows.push(r);
        }
        Some(page)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use crate::graph::{Counts, OrgGraph};
    use crate::model::{
        Adapter, Feedback, FeedbackLink, FeedbackType, LinkSource, Metadata, ValidationStatus,
    };

    /// One change to a random graph.
    #[derive(Debug, Clone)]
    enum Op {
        /// Adapter `a` (of 6) with parent `p` (a lower number, or none): a forest.
        Adapter { a: u8, parent: Option<u8> },
        /// A new item (ids grow with the op number, as real ids grow with time).
        Item { model: u8, score: Option<i8> },
        /// Item `i` (modulo the items so far) linked to adapter `a`.
        Link { i: u16, a: u8 },
        /// Item `i` reviewed, marked used or re-rated: a newer version of it.
        Update {
            i: u16,
            status: u8,
            used: bool,
            score: Option<i8>,
            model: u8,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            1 => (0u8..6, prop::option::of(0u8..6))
                .prop_map(|(a, p)| Op::Adapter { a, parent: p.filter(|p| *p < a) }),
            4 => (0u8..3, prop::option::of(-5i8..6)).prop_map(|(model, score)| Op::Item { model, score }),
            5 => (any::<u16>(), 0u8..6).prop_map(|(i, a)| Op::Link { i, a }),
            2 => (any::<u16>(), 0u8..4, any::<bool>(), prop::option::of(-5i8..6), 0u8..3)
                .prop_map(|(i, status, used, score, model)| Op::Update { i, status, used, score, model }),
        ]
    }

    fn adapter(a: u8, parent: Option<u8>, version: u64) -> Adapter {
        Adapter {
            id: format!("a{a}"),
            org_id: "t".into(),
            version: None,
            base_model: None,
            derived_from: parent.map(|p| format!("a{p}")),
            metadata: Metadata::default(),
            created_at: version,
            source: LinkSource::Manual,
            record_version: version,
        }
    }

    /// Applies `ops`; returns the graph and the items' ids in creation order. With
    /// `refresh_each`, each op ends as a write does (stale family counts recomputed), so
    /// later links are counted on top of a recomputation; without, a re-parenting leaves
    /// them stale until the end.
    fn build(ops: &[Op], refresh_each: bool) -> (OrgGraph, Vec<Feedback>) {
        let mut g = OrgGraph::default();
        let mut items: Vec<Feedback> = Vec::new();
        for (n, op) in ops.iter().enumerate() {
            match op {
                Op::Adapter { a, parent } => {
                    g.upsert_adapter(&adapter(*a, *parent, n as u64 + 1));
                }
                Op::Item { model, score } => {
                    let mut f = Feedback::sample(&format!("f{n:05}"), "t");
                    f.model_version = Some(format!("m{model}"));
                    f.score = score.map(|s| f64::from(s) / 4.0);
                    f.feedback_type = if n % 3 == 0 {
                        FeedbackType::Negative
                    } else {
                        FeedbackType::Positive
                    };
                    g.upsert_feedback(&f);
                    items.push(f);
                }
                Op::Link { i, a } if !items.is_empty() => {
                    let f = &items[*i as usize % items.len()];
                    g.add_link(&FeedbackLink {
                        feedback_id: f.id.clone(),
                        adapter_id: format!("a{a}"),
                        created_at: n as u64,
                        source: LinkSource::Manual,
                        metadata: Metadata::default(),
                    });
                }
                Op::Update {
                    i,
                    status,
                    used,
                    score,
                    model,
                } if !items.is_empty() => {
                    let k = *i as usize % items.len();
                    let f = &mut items[k];
                    f.version += 1;
                    f.validation_status = [
                        ValidationStatus::Pending,
                        ValidationStatus::Approved,
                        ValidationStatus::Rejected,
                        ValidationStatus::Flagged,
                    ][*status as usize % 4];
                    f.used_for_training = *used;
                    f.score = score.map(|s| f64::from(s) / 4.0);
                    f.model_version = Some(format!("m{model}"));
                    g.upsert_feedback(f);
                }
                _ => {}
            }
            if refresh_each {
                g.family_refresh();
            }
        }
        (g, items)
    }

    /// The adapter rows of `root`'s family (itself and every descendant).
    fn family(g: &OrgGraph, root: u32, descendants: bool) -> Vec<u32> {
        crate::service::training::adapter_family(g, root, descendants)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// Paging through any adapter or family, with any page size and with or without
        /// the unused filter, yields exactly what a full scan of its links yields, newest
        /// first, each item once; and the counters equal a scan.
        #[test]
        fn pages_and_counters_match_a_scan(
            ops in prop::collection::vec(op(), 1..120),
            limit in 1usize..7,
            unused in any::<bool>(),
            refresh_each in any::<bool>(),
        ) {
            let (mut g, _) = build(&ops, refresh_each);
            // Counts kept on write are right or, while stale, not offered.
            for root in 0..g.adapters().len() as u32 {
                if let Some(n) = g.subtree_linked_count(root) {
                    let fam = family(&g, root, true);
                    prop_assert_eq!(n, g.linked_count(&fam), "root {}", root);
                }
            }
            g.family_refresh();
            for root in 0..g.adapters().len() as u32 {
                for descendants in [false, true] {
                    let fam = family(&g, root, descendants);
                    // The scan: every linked row, distinct, newest id first.
                    let all: BTreeSet<&str> = fam
                        .iter()
                        .flat_map(|&a| g.adapter_feedback(a))
                        .map(|r| g.feedback().id_str(r))
                        .collect();
                    prop_assert_eq!(g.linked_count(&fam), all.len());
                    if descendants {
                        prop_assert_eq!(g.subtree_linked_count(root), Some(all.len()));
                    }
                    let want: Vec<&str> = all
                        .iter()
                        .rev()
                        .copied()
                        .filter(|id| {
                            let r = g.feedback_row(id).unwrap_or(0);
                            !unused || !g.feedback().used_for_training(r)
                        })
                        .collect();
                    let mut got: Vec<&str> = Vec::new();
                    let mut cursor: Option<String> = None;
                    loop {
                        let page = g.linked_page(&fam, cursor.as_deref(), limit, |f| {
                            !unused || !f.used_for_training
                        });
                        // With a bound on the rows looked at: the same page, or none.
                        for bound in [0, 1, limit, limit + 1, limit + 3, 64] {
                            let within = g.linked_page_within(&fam, cursor.as_deref(), limit, |f| {
                                !unused || !f.used_for_training
                            }, bound);
                            prop_assert!(within.as_ref().is_none_or(|w| w == &page), "bound {}", bound);
                            if bound > fam.len() + g.feedback().len() {
                                prop_assert!(within.is_some());
                            }
                        }
                        prop_assert!(page.rows.len() <= limit);
                        prop_assert!(!page.more || page.rows.len() == limit);
                        got.extend(page.rows.iter().map(|&r| g.feedback().id_str(r)));
                        if !page.more {
                            break;
                        }
                        cursor = got.last().map(|s| s.to_string());
                    }
                    prop_assert_eq!(&got, &want, "root {} descendants {}", root, descendants);
                    // The same through `subtree_page` (a dense family walks the org's
                    // items instead of merging lists).
                    if descendants {
                        let mut got: Vec<&str> = Vec::new();
                        let mut cursor: Option<String> = None;
                        loop {
                            let page = g.subtree_page(
                                root,
                                || fam.clone(),
                                cursor.as_deref(),
                                limit,
                                |f| !unused || !f.used_for_training,
                            );
                            for bound in [0, 1, limit, limit + 1, limit + 3, 64] {
                                let within = g.subtree_page_within(
                                    root,
                                    || fam.clone(),
                                    cursor.as_deref(),
                                    limit,
                                    |f| !unused || !f.used_for_training,
                                    bound,
                                );
                                prop_assert!(within.as_ref().is_none_or(|w| w == &page), "bound {}", bound);
                            }
                            prop_assert!(page.rows.len() <= limit);
                            prop_assert!(!page.more || page.rows.len() == limit);
                            got.extend(page.rows.iter().map(|&r| g.feedback().id_str(r)));
                            if !page.more {
                                break;
                            }
                            cursor = got.last().map(|s| s.to_string());
                        }
                        prop_assert_eq!(&got, &want, "subtree of root {}", root);
                    }
                }
                // An adapter's counts are the sum over its linked items.
                let mut c = Counts::default();
                for r in g.adapter_feedback(root) {
                    if let Some(f) = g.feedback().get(r) {
                        c.add(&f);
                    }
                }
                prop_assert_eq!(g.counters().adapters[root as usize], c);
            }
            let mut org = Counts::default();
            let mut models: std::collections::HashMap<_, Counts> = Default::default();
            for f in g.feedback().iter() {
                org.add(&f);
                if let Some(m) = f.model_version {
                    models.entry(m).or_default().add(&f);
                }
            }
            prop_assert_eq!(g.counters().org, org);
            prop_assert_eq!(g.counters().models.len(), models.len());
            for (m, c) in models {
                prop_assert_eq!(g.counters().models.get(&m).copied(), Some(c));
            }
        }
    }
}
