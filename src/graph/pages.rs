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
        let mut take = |r: u32| -> bool {
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
            return page;
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
        page
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

    /// Applies `ops`; returns the graph and the items' ids in creation order.
    fn build(ops: &[Op]) -> (OrgGraph, Vec<Feedback>) {
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
        ) {
            let (g, _) = build(&ops);
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
                        prop_assert!(page.rows.len() <= limit);
                        prop_assert!(!page.more || page.rows.len() == limit);
                        got.extend(page.rows.iter().map(|&r| g.feedback().id_str(r)));
                        if !page.more {
                            break;
                        }
                        cursor = got.last().map(|s| s.to_string());
                    }
                    prop_assert_eq!(&got, &want, "root {} descendants {}", root, descendants);
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
