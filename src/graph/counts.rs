//! Feedback counters kept up to date on every write: per org, per adapter (items linked to
//! it) and per model version, so the unfiltered stats answer in constant time instead of
//! scanning the org.
//!
//! A write changes an item's contribution: the old one is taken out and the new one put in,
//! so the counters equal a scan at every snapshot. Scores are summed in fixed point
//! ([`SCORE_SCALE`]) because a float sum that is added to and subtracted from drifts, and
//! a scan summing in another order would disagree in the last bits; integers add up the
//! same in any order. Stats computed by a scan use the same [`Counts`], so both ways give
//! the same answer to the bit.

use rustc_hash::FxHashMap;

use super::{FeedbackNode, Sym};
use crate::model::{FeedbackType, ValidationStatus};

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
    pub fn add(&mut self, f: &FeedbackNode) {
        self.apply(f, 1);
    }

    /// Takes one item out (it was added before).
    pub fn remove(&mut self, f: &FeedbackNode) {
        self.apply(f, -1);
    }

    fn apply(&mut self, f: &FeedbackNode, sign: i64) {
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
}

impl Counters {
    /// Adds `f` to the org's and its model's counts (not to its adapters': see
    /// [`Counters::link`]).
    pub fn add_item(&mut self, f: &FeedbackNode) {
        self.org.add(f);
        if let Some(m) = f.model_version {
            self.models.entry(m).or_default().add(f);
        }
    }

    /// Takes `f` out of the org's and its model's counts.
    pub fn remove_item(&mut self, f: &FeedbackNode) {
        self.org.remove(f);
        if let Some(m) = f.model_version
            && let Some(c) = self.models.get_mut(&m)
        {
            c.remove(f);
            if c.total == 0 {
                self.models.remove(&m);
            }
        }
    }

    /// Counts `f` for adapter row `a` (a new FEEDBACK_FOR edge, or `f` changed while
    /// linked).
    pub fn link(&mut self, a: u32, f: &FeedbackNode) {
        if let Some(c) = self.adapters.get_mut(a as usize) {
            c.add(f);
        }
    }

    /// Takes `f` out of adapter row `a`'s counts.
    pub fn unlink(&mut self, a: u32, f: &FeedbackNode) {
        if let Some(c) = self.adapters.get_mut(a as usize) {
            c.remove(f);
        }
    }
}
