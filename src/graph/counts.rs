//! Feedback counters kept up to date on every write: per org, per adapter (items linked to
//! it) and per model version, so the unfiltered stats answer in constant time instead of
//! scanning the org; and the same three per UTC day of `created_at` ([`DayCounters`]), so
//! the console's dashboard reads O(days) per series. The planner reads them too, as
//! column statistics.
//!
//! A write changes an item's contribution: the old one is taken out and the new one put in,
//! so the counters equal a scan at every snapshot. Scores are summed in fixed point
//! ([`SCORE_SCALE`]) because a float sum that is added to and subtracted from drifts, and
//! a scan summing in another order would disagree in the last bits; integers add up the
//! same in any order. Stats computed by a scan use the same [`Counts`], so both ways give
//! the same answer to the bit.

use rustc_hash::FxHashMap;

use super::{FeedbackProps, Sym};
use crate::model::{FeedbackType, Millis, ValidationStatus};

/// One day in milliseconds: day series count items by `created_at / DAY_MS` (UTC days).
pub const DAY_MS: Millis = 86_400_000;

/// Fixed-point scale of score sums: 2^40 (about 1e-12 of resolution). With scores bounded
/// by [`crate::validate::MAX_SCORE`] (1e9), an `i128` sum holds more than 10^17 items.
pub const SCORE_SCALE: f64 = (1u64 << 40) as f64;

/// What a set of feedback items adds up to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Items.
    pub total: u64,
    /// Thumbs up.
    pub positive: u64,
    /// Thumbs down.
    pub negative: u64,
    /// Status pending.
    pub pending: u64,
    /// Status approved.
    pub approved: u64,
    /// Status rejected.
    pub rejected: u64,
    /// Status flagged.
    pub flagged: u64,
    /// Consumed by training.
    pub used: u64,
    /// Items with a score.
    pub scored: u64,
    /// Sum of their scores, times [`SCORE_SCALE`].
    pub score_sum: i128,
}

impl Counts {
    /// Adds one item.
    pub fn add(&mut self, f: &FeedbackProps) {
        self.apply(f, 1);
    }

    /// Takes one item out (it was added before).
    pub fn remove(&mut self, f: &FeedbackProps) {
        self.apply(f, -1);
    }

    fn apply(&mut self, f: &FeedbackProps, sign: i64) {
        let step = |c: &mut u64| *c = c.wrapping_add_signed(sign);
        step(&mut self.total);
        match f.feedback_type {
            FeedbackType::Positive => step(&mut self.positive),
            FeedbackType::Negative => step(&mut self.negative),
        }
        match f.status {
            ValidationStatus::Pending => step(&mut self.pending),
            ValidationStatus::Approved => step(&mut self.approved),
            ValidationStatus::Rejected => step(&mut self.rejected),
            ValidationStatus::Flagged => step(&mut self.flagged),
        }
        if f.used_for_training {
            step(&mut self.used);
        }
        if let Some(s) = f.score {
            step(&mut self.scored);
            self.score_sum += i128::from(sign) * fixed_score(s);
        }
    }

    /// The mean score of the items that have one.
    pub fn average_score(&self) -> Option<f64> {
        (self.scored > 0).then(|| self.score_sum as f64 / SCORE_SCALE / self.scored as f64)
    }
}

/// A score in fixed point (validation keeps scores finite and bounded).
fn fixed_score(s: f64) -> i128 {
    (s * SCORE_SCALE).round() as i128
}

/// The counters of one org graph.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    /// Every item of the org.
    pub org: Counts,
    /// Per adapter row: the items linked to it.
    pub adapters: Vec<Counts>,
    /// Per model version: its items.
    pub models: FxHashMap<Sym, Counts>,
    /// Items per day: of the org, per adapter row (items linked to it) and per model
    /// version, so the console's dashboard reads O(days) per series, not every item.
    pub days: DayCounters,
}

/// Items and thumbs up on one UTC day.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Day {
    /// `created_at / DAY_MS` of its items.
    pub day: u64,
    /// Items created that day.
    pub count: u64,
    /// Of those, thumbs up.
    pub positive: u64,
}

/// Per-day counts of one set of items: only days with items, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DaySeries {
    pub(super) days: Vec<Day>,
}

impl DaySeries {
    fn apply(&mut self, f: &FeedbackProps, sign: i64) {
        let day = f.created_at / DAY_MS;
        let positive = u64::from(f.feedback_type == FeedbackType::Positive);
        // Items mostly arrive in time order: then this is the last day or a push.
        let at = match self.days.last() {
            Some(d) if d.day == day => self.days.len() - 1,
            Some(d) if d.day < day => self.days.len(),
            None => 0,
            Some(_) => self.days.partition_point(|d| d.day < day),
        };
        if self.days.get(at).is_none_or(|d| d.day != day) {
            if sign < 0 {
                return;
            }
            self.days.insert(
                at,
                Day {
                    day,
                    ..Day::default()
                },
            );
        }
        if let Some(d) = self.days.get_mut(at) {
            d.count = d.count.wrapping_add_signed(sign);
            d.positive = d.positive.wrapping_add_signed(sign * positive as i64);
            if d.count == 0 {
                self.days.remove(at);
            }
        }
    }

    /// The days with items from day `first` to day `last` (both included), oldest first.
    pub fn range(&self, first: u64, last: u64) -> &[Day] {
        let a = self.days.partition_point(|d| d.day < first);
        let b = self.days.partition_point(|d| d.day <= last);
        self.days.get(a..b.max(a)).unwrap_or(&[])
    }

    /// The newest day with items.
    pub fn last_day(&self) -> Option<u64> {
        self.days.last().map(|d| d.day)
    }
}

/// Per-day counts of an org graph's items (see [`Counters::days`]).
#[derive(Debug, Clone, Default)]
pub struct DayCounters {
    /// Every item of the org.
    pub org: DaySeries,
    /// Per adapter row: the items linked to it (rows past the end have none).
    pub adapters: Vec<DaySeries>,
    /// Per model version: its items.
    pub models: FxHashMap<Sym, DaySeries>,
}

impl Counters {
    /// Estimated heap bytes of the counters and day series.
    pub fn heap_bytes(&self) -> usize {
        let day = std::mem::size_of::<Day>();
        let series = |s: &DaySeries| s.days.capacity() * day;
        self.adapters.capacity() * std::mem::size_of::<Counts>()
            + self.models.capacity() * (std::mem::size_of::<(Sym, Counts)>() + 1)
            + series(&self.days.org)
            + self.days.adapters.capacity() * std::mem::size_of::<DaySeries>()
            + self.days.adapters.iter().map(series).sum::<usize>()
            + self.days.models.values().map(series).sum::<usize>()
    }

    /// Adds `f` to the org's and its model's counts (not to its adapters': see
    /// [`Counters::link`]).
    pub fn add_item(&mut self, f: &FeedbackProps) {
        self.org.add(f);
        self.days.org.apply(f, 1);
        if let Some(m) = f.model_version {
            self.models.entry(m).or_default().add(f);
            self.days.models.entry(m).or_default().apply(f, 1);
        }
    }

    /// Takes `f` out of the org's and its model's counts.
    pub fn remove_item(&mut self, f: &FeedbackProps) {
        self.org.remove(f);
        self.days.org.apply(f, -1);
        if let Some(m) = f.model_version
            && let Some(c) = self.models.get_mut(&m)
        {
            c.remove(f);
            if c.total == 0 {
                self.models.remove(&m);
            }
        }
        if let Some(m) = f.model_version
            && let Some(d) = self.days.models.get_mut(&m)
        {
            d.apply(f, -1);
            if d.days.is_empty() {
                self.days.models.remove(&m);
            }
        }
    }

    /// Counts `f` for adapter row `a` (a new FEEDBACK_FOR edge, or `f` changed while
    /// linked).
    pub fn link(&mut self, a: u32, f: &FeedbackProps) {
        if let Some(c) = self.adapters.get_mut(a as usize) {
            c.add(f);
            let days = &mut self.days.adapters;
            if days.len() <= a as usize {
                days.resize_with(a as usize + 1, DaySeries::default);
            }
            if let Some(d) = days.get_mut(a as usize) {
                d.apply(f, 1);
            }
        }
    }

    /// Takes `f` out of adapter row `a`'s counts.
    pub fn unlink(&mut self, a: u32, f: &FeedbackProps) {
        if let Some(c) = self.adapters.get_mut(a as usize) {
            c.remove(f);
        }
        if let Some(d) = self.days.adapters.get_mut(a as usize) {
            d.apply(f, -1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::OrgGraph;
    use crate::model::{Feedback, FeedbackLink, LinkSource, Metadata};

    /// Per-day counts of `rows` by a scan: (day, count, positive), days with items only.
    fn scan(g: &OrgGraph, rows: impl Iterator<Item = u32>) -> Vec<Day> {
        let mut days: std::collections::BTreeMap<u64, Day> = Default::default();
        for r in rows {
            let Some(f) = g.feedback().get(r) else {
                continue;
            };
            let d = days.entry(f.created_at / DAY_MS).or_insert(Day {
                day: f.created_at / DAY_MS,
                ..Day::default()
            });
            d.count += 1;
            d.positive += u64::from(f.feedback_type == FeedbackType::Positive);
        }
        days.into_values().collect()
    }

    fn check(g: &OrgGraph) {
        let days = &g.counters().days;
        let all = 0..g.feedback().len() as u32;
        assert_eq!(days.org.range(0, u64::MAX), scan(g, all.clone()));
        for m in ["m0", "m1", "m2"] {
            let sym = g.strings().get(m);
            let rows = all
                .clone()
                .filter(|&r| g.feedback().sym(r, crate::graph::SymCol::ModelVersion) == sym);
            let kept = sym
                .and_then(|s| days.models.get(&s))
                .map_or(&[][..], |d| d.range(0, u64::MAX));
            assert_eq!(kept, scan(g, rows), "{m}");
        }
        for a in 0..g.adapters().len() as u32 {
            let kept = days
                .adapters
                .get(a as usize)
                .map_or(&[][..], |d| d.range(0, u64::MAX));
            assert_eq!(
                kept,
                scan(g, g.feedback_in(a).iter().copied()),
                "adapter row {a}"
            );
        }
    }

    /// The day counters equal a scan after new items, links, and changes of type, model
    /// and day, items arriving out of time order included.
    #[test]
    fn day_counters_follow_every_change() {
        let mut g = OrgGraph::default();
        let mut items = Vec::new();
        for i in 0..60u64 {
            let mut f = Feedback::sample(&format!("feedback-{i:03}"), "t");
            // Out of order now and then, over five days.
            f.created_at = ((i * 7) % 5) * DAY_MS + i * 1000;
            f.feedback_type = if i % 3 == 0 {
                FeedbackType::Negative
            } else {
                FeedbackType::Positive
            };
            f.model_version = Some(format!("m{}", i % 3));
            g.upsert_feedback(&f);
            g.add_link(&FeedbackLink {
                feedback_id: f.id.clone(),
                adapter_id: format!("a{}", i % 4),
                created_at: 1,
                source: LinkSource::Auto,
                metadata: Metadata::default(),
            });
            items.push(f);
            check(&g);
        }
        // Changes: each item's type flips and its model moves; some move a day.
        for (i, f) in items.iter_mut().enumerate() {
            f.version += 1;
            f.feedback_type = match f.feedback_type {
                FeedbackType::Positive => FeedbackType::Negative,
                FeedbackType::Negative => FeedbackType::Positive,
            };
            f.model_version = Some(format!("m{}", (i + 1) % 3));
            if i % 5 == 0 {
                f.created_at += DAY_MS;
            }
            g.upsert_feedback(f);
            check(&g);
        }
        assert!(!g.counters().days.org.range(0, u64::MAX).is_empty());
    }
}
