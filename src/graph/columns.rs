//! The feedback properties as columns: one vector per property, indexed by feedback row.
//!
//! Scans read one property of many rows (a type, a status, an id); with one vector per
//! property such a scan touches a byte or a few bytes per row instead of a whole wide
//! record. Flags are bitsets, symbols are 4-byte [`Sym`]s (0 is none, by the niche of
//! `Option<Sym>`), the score is a float column with a presence bitset, and leases, which
//! few items hold, are kept in a sparse map.
//!
//! [`FeedbackNode`] is the row view: all of one row's properties, built on demand by
//! [`FeedbackColumns::get`] for the service paths that look at whole items.

use petgraph::graph::NodeIndex;
use rustc_hash::FxHashMap;

use super::Sym;
use super::ids::{FeedbackIds, IdWalk};
use super::sparse::{Tail, U64Col};
use crate::model::{FeedbackType, Millis, ValidationStatus};
use crate::store::Lease;

/// A growable bitset, one bit per row.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Bits {
    pub(super) words: Vec<u64>,
}

impl Bits {
    /// The bit of row `r` (false past the end).
    #[inline]
    pub fn get(&self, r: u32) -> bool {
        self.words
            .get((r / 64) as usize)
            .is_some_and(|w| w >> (r % 64) & 1 == 1)
    }

    /// Sets the bit of row `r`, growing the set as needed.
    #[inline]
    pub fn set(&mut self, r: u32, on: bool) {
        let i = (r / 64) as usize;
        if i >= self.words.len() {
            if !on {
                return;
            }
            self.words.resize(i + 1, 0);
        }
        let mask = 1u64 << (r % 64);
        if let Some(w) = self.words.get_mut(i) {
            if on {
                *w |= mask;
            } else {
                *w &= !mask;
            }
        }
    }

    /// Bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.words.capacity() * 8
    }
}

/// All indexed properties of one feedback item, as read from the columns (a row view; the
/// id is borrowed from the id column).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FeedbackNode<'a> {
    /// Its graph node.
    pub node: NodeIndex,
    /// Feedback id.
    pub id: &'a str,
    /// The other properties.
    pub props: FeedbackProps,
}

impl std::ops::Deref for FeedbackNode<'_> {
    type Target = FeedbackProps;

    fn deref(&self) -> &FeedbackProps {
        &self.props
    }
}

impl FeedbackNode<'_> {
    /// True if a batch holds the item at `now`.
    pub fn leased_at(&self, now: Millis) -> bool {
        self.props.lease.is_some_and(|l| l.expires_at > now)
    }
}

/// The properties of one feedback item other than its node and id: what a write sets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FeedbackProps {
    /// Type.
    pub feedback_type: FeedbackType,
    /// Validation status.
    pub status: ValidationStatus,
    /// Consumed by training.
    pub used_for_training: bool,
    /// Batch that consumed it (0 = none).
    pub training_batch_id: u64,
    /// Created, ms.
    pub created_at: Millis,
    /// Last changed, ms.
    pub updated_at: Millis,
    /// Record version.
    pub version: u64,
    /// Model version.
    pub model_version: Option<Sym>,
    /// Adapter named at submit.
    pub adapter_id: Option<Sym>,
    /// Adapter version named at submit.
    pub adapter_version: Option<Sym>,
    /// End user.
    pub user_id: Option<Sym>,
    /// Session.
    pub session_id: Option<Sym>,
    /// Interaction.
    pub interaction_id: Option<Sym>,
    /// Rating.
    pub score: Option<f64>,
    /// Has a correction.
    pub has_correction: bool,
    /// Has a comment.
    pub has_comment: bool,
    /// The training batch holding the item, and until when.
    pub lease: Option<Lease>,
}

/// Which interned feedback property a symbol column holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SymCol {
    /// `model_version`.
    ModelVersion,
    /// `adapter_id`.
    AdapterId,
    /// `adapter_version`.
    AdapterVersion,
    /// `user_id`.
    UserId,
    /// `session_id`.
    SessionId,
    /// `interaction_id`.
    InteractionId,
}

/// The feedback rows of one org, one vector per property (row number = index).
#[derive(Debug, Default, Clone)]
pub struct FeedbackColumns {
    pub(super) node: Vec<NodeIndex>,
    pub(super) ids: FeedbackIds,
    pub(super) feedback_type: Vec<FeedbackType>,
    pub(super) status: Vec<ValidationStatus>,
    pub(super) used: Bits,
    pub(super) has_correction: Bits,
    pub(super) has_comment: Bits,
    /// 0 (none) for most items until training uses them.
    pub(super) training_batch_id: U64Col,
    pub(super) created_at: Vec<Millis>,
    /// `updated_at - created_at` (wrapping): 0 for an item never changed.
    pub(super) updated_after: U64Col,
    pub(super) version: U64Col,
    pub(super) model_version: Tail<Option<Sym>>,
    pub(super) adapter_id: Tail<Option<Sym>>,
    pub(super) adapter_version: Tail<Option<Sym>>,
    pub(super) user_id: Tail<Option<Sym>>,
    pub(super) session_id: Tail<Option<Sym>>,
    pub(super) interaction_id: Tail<Option<Sym>>,
    /// The score's bits (of 0.0 where `has_score` is off).
    pub(super) score: Tail<u64>,
    pub(super) has_score: Bits,
    pub(super) leases: FxHashMap<u32, Lease>,
}

// A symbol column must stay 4 bytes a row.
const _: () = assert!(std::mem::size_of::<Option<Sym>>() == 4);

impl FeedbackColumns {
    /// Number of rows.
    #[inline]
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// True if there are no rows.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Gives back the spare capacity of every column.
    pub(super) fn shrink_to_fit(&mut self) {
        self.node.shrink_to_fit();
        self.ids.shrink_to_fit();
        self.feedback_type.shrink_to_fit();
        self.status.shrink_to_fit();
        self.training_batch_id.shrink_to_fit();
        self.created_at.shrink_to_fit();
        self.updated_after.shrink_to_fit();
        self.version.shrink_to_fit();
        self.model_version.shrink_to_fit();
        self.adapter_id.shrink_to_fit();
        self.adapter_version.shrink_to_fit();
        self.user_id.shrink_to_fit();
        self.session_id.shrink_to_fit();
        self.interaction_id.shrink_to_fit();
        self.score.shrink_to_fit();
        self.leases.shrink_to_fit();
    }

    /// Appends a row; returns its number. With `index == false` the id is not put into
    /// the lookup by id: a bulk build indexes every row at the end ([`FeedbackColumns::index_ids`]).
    pub(super) fn push(
        &mut self,
        node: NodeIndex,
        id: &str,
        p: &FeedbackProps,
        index: bool,
    ) -> u32 {
        let r = if index {
            self.ids.push(id)
        } else {
            self.ids.push_unindexed(id)
        };
        self.node.push(node);
        self.feedback_type.push(p.feedback_type);
        self.status.push(p.status);
        self.created_at.push(p.created_at);
        self.set_sparse(r, p);
        self.set_flags(r, p);
        r
    }

    /// The sparse and narrow columns of row `r` (whose `created_at` is set).
    fn set_sparse(&mut self, r: u32, p: &FeedbackProps) {
        self.training_batch_id.set(r, p.training_batch_id);
        self.updated_after
            .set(r, p.updated_at.wrapping_sub(p.created_at));
        self.version.set(r, p.version);
        self.model_version.set(r, p.model_version);
        self.adapter_id.set(r, p.adapter_id);
        self.adapter_version.set(r, p.adapter_version);
        self.user_id.set(r, p.user_id);
        self.session_id.set(r, p.session_id);
        self.interaction_id.set(r, p.interaction_id);
    }

    /// Overwrites the properties of row `r` (its node and id stay).
    pub(super) fn set(&mut self, r: u32, p: &FeedbackProps) {
        let i = r as usize;
        if i >= self.ids.len() {
            return;
        }
        self.feedback_type[i] = p.feedback_type;
        self.status[i] = p.status;
        self.created_at[i] = p.created_at;
        self.set_sparse(r, p);
        self.set_flags(r, p);
    }

    /// Moves row `r`'s `version` and `updated_at` (a change that touched nothing else of
    /// the item, such as a new edge); no other column, and no count, depends on them.
    pub(super) fn set_version(&mut self, r: u32, version: u64, updated_at: Millis) {
        let Some(&created_at) = self.created_at.get(r as usize) else {
            return;
        };
        self.version.set(r, version);
        self.updated_after
            .set(r, updated_at.wrapping_sub(created_at));
    }

    /// The bit columns, the score and the lease of row `r` (which exists).
    fn set_flags(&mut self, r: u32, p: &FeedbackProps) {
        self.used.set(r, p.used_for_training);
        self.has_correction.set(r, p.has_correction);
        self.has_comment.set(r, p.has_comment);
        self.has_score.set(r, p.score.is_some());
        self.score.set(r, p.score.unwrap_or(0.0).to_bits());
        match p.lease {
            Some(l) => {
                self.leases.insert(r, l);
            }
            None => {
                self.leases.remove(&r);
            }
        }
    }

    /// The row view of row `r`.
    pub fn get(&self, r: u32) -> Option<FeedbackNode<'_>> {
        let i = r as usize;
        Some(FeedbackNode {
            node: *self.node.get(i)?,
            id: self.ids.get(r)?,
            props: self.props(r)?,
        })
    }

    /// Every property of row `r` but its node and id.
    pub fn props(&self, r: u32) -> Option<FeedbackProps> {
        let i = r as usize;
        let created_at = *self.created_at.get(i)?;
        Some(FeedbackProps {
            feedback_type: *self.feedback_type.get(i)?,
            status: *self.status.get(i)?,
            used_for_training: self.used.get(r),
            training_batch_id: self.training_batch_id.get(r),
            created_at,
            updated_at: created_at.wrapping_add(self.updated_after.get(r)),
            version: self.version.get(r),
            model_version: self.model_version.get(r),
            adapter_id: self.adapter_id.get(r),
            adapter_version: self.adapter_version.get(r),
            user_id: self.user_id.get(r),
            session_id: self.session_id.get(r),
            interaction_id: self.interaction_id.get(r),
            score: self.score(r),
            has_correction: self.has_correction.get(r),
            has_comment: self.has_comment.get(r),
            lease: self.lease(r),
        })
    }

    /// Every row's view, in row order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = FeedbackNode<'_>> + '_ {
        (0..self.len() as u32).map(move |r| FeedbackNode {
            node: self.node[r as usize],
            id: self.ids.get(r).unwrap_or(""),
            props: self.props(r).unwrap_or_else(unreachable_props),
        })
    }

    /// The graph node of row `r`.
    #[inline]
    pub fn node(&self, r: u32) -> Option<NodeIndex> {
        self.node.get(r as usize).copied()
    }

    /// The id of row `r`.
    #[inline]
    pub fn id(&self, r: u32) -> Option<&str> {
        self.ids.get(r)
    }

    /// The row of feedback id `id`.
    #[inline]
    pub fn row_of(&self, id: &str) -> Option<u32> {
        self.ids.row(id)
    }

    /// Rows newest first (ids are time-ordered), strictly before `before` if given.
    pub fn newest_first<'a>(&'a self, before: Option<&'a str>) -> IdWalk<'a> {
        self.ids.newest_first(before)
    }

    /// Rows oldest first, strictly after `after` if given.
    pub fn oldest_first<'a>(&'a self, after: Option<&'a str>) -> IdWalk<'a> {
        self.ids.oldest_first(after)
    }

    /// Indexes every row's id at once (after pushes with `index == false`).
    pub(super) fn index_ids(&mut self) {
        self.ids.index_all();
    }

    /// Whether ids that came out of order are due to be merged into the id order.
    pub(super) fn ids_merge_due(&self) -> bool {
        self.ids.merge_due()
    }

    /// Merges the ids that came out of order into the id order (O(rows)).
    pub(super) fn merge_ids(&mut self) {
        self.ids.merge_late();
    }

    /// Estimated heap bytes of the id column and the lookup by id (see `memory.rs`).
    pub(super) fn id_heap_bytes(&self) -> usize {
        self.ids.heap_bytes()
    }

    /// Estimated heap bytes of every column but the node and id columns' strings.
    pub(super) fn column_heap_bytes(&self) -> usize {
        fn v<T>(v: &Vec<T>) -> usize {
            v.capacity() * std::mem::size_of::<T>()
        }
        v(&self.node)
            + v(&self.feedback_type)
            + v(&self.status)
            + self.training_batch_id.heap_bytes()
            + v(&self.created_at)
            + self.updated_after.heap_bytes()
            + self.version.heap_bytes()
            + self.model_version.heap_bytes()
            + self.adapter_id.heap_bytes()
            + self.adapter_version.heap_bytes()
            + self.user_id.heap_bytes()
            + self.session_id.heap_bytes()
            + self.interaction_id.heap_bytes()
            + self.score.heap_bytes()
            + self.used.heap_bytes()
            + self.has_correction.heap_bytes()
            + self.has_comment.heap_bytes()
            + self.has_score.heap_bytes()
            + self.leases.capacity() * 25
    }

    /// The id of row `r` as a string (empty past the end).
    #[inline]
    pub fn id_str(&self, r: u32) -> &str {
        self.ids.get(r).unwrap_or("")
    }

    /// The type of row `r`.
    #[inline]
    pub fn feedback_type(&self, r: u32) -> Option<FeedbackType> {
        self.feedback_type.get(r as usize).copied()
    }

    /// The validation status of row `r`.
    #[inline]
    pub fn status(&self, r: u32) -> Option<ValidationStatus> {
        self.status.get(r as usize).copied()
    }

    /// Whether training consumed row `r`.
    #[inline]
    pub fn used_for_training(&self, r: u32) -> bool {
        self.used.get(r)
    }

    /// The consuming batch of row `r` (0 = none).
    #[inline]
    pub fn training_batch_id(&self, r: u32) -> Option<u64> {
        self.exists(r).then(|| self.training_batch_id.get(r))
    }

    #[inline]
    fn exists(&self, r: u32) -> bool {
        (r as usize) < self.created_at.len()
    }

    /// Created, ms.
    #[inline]
    pub fn created_at(&self, r: u32) -> Option<Millis> {
        self.created_at.get(r as usize).copied()
    }

    /// Last changed, ms.
    #[inline]
    pub fn updated_at(&self, r: u32) -> Option<Millis> {
        let created = *self.created_at.get(r as usize)?;
        Some(created.wrapping_add(self.updated_after.get(r)))
    }

    /// Record version.
    #[inline]
    pub fn version(&self, r: u32) -> Option<u64> {
        self.exists(r).then(|| self.version.get(r))
    }

    /// An interned property of row `r` (`None` if absent or past the end).
    #[inline]
    pub fn sym(&self, r: u32, c: SymCol) -> Option<Sym> {
        let col = match c {
            SymCol::ModelVersion => &self.model_version,
            SymCol::AdapterId => &self.adapter_id,
            SymCol::AdapterVersion => &self.adapter_version,
            SymCol::UserId => &self.user_id,
            SymCol::SessionId => &self.session_id,
            SymCol::InteractionId => &self.interaction_id,
        };
        col.get(r)
    }

    /// The score of row `r`, if it has one.
    #[inline]
    pub fn score(&self, r: u32) -> Option<f64> {
        if self.has_score.get(r) {
            Some(f64::from_bits(self.score.get(r)))
        } else {
            None
        }
    }

    /// Whether row `r` has a correction.
    #[inline]
    pub fn has_correction(&self, r: u32) -> bool {
        self.has_correction.get(r)
    }

    /// Whether row `r` has a comment.
    #[inline]
    pub fn has_comment(&self, r: u32) -> bool {
        self.has_comment.get(r)
    }

    /// The lease on row `r`, if any.
    #[inline]
    pub fn lease(&self, r: u32) -> Option<Lease> {
        self.leases.get(&r).copied()
    }
}

/// Never called: `iter` only asks for rows below `len`, which all have properties.
#[cold]
fn unreachable_props() -> FeedbackProps {
    FeedbackProps {
        feedback_type: FeedbackType::Positive,
        status: ValidationStatus::Pending,
        used_for_training: false,
        training_batch_id: 0,
        created_at: 0,
        updated_at: 0,
        version: 0,
        model_version: None,
        adapter_id: None,
        adapter_version: None,
        user_id: None,
        session_id: None,
        interaction_id: None,
        score: None,
        has_correction: false,
        has_comment: false,
        lease: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// A bitset answers like a vector of booleans under any sequence of sets.
        #[test]
        fn bits_match_a_vec_of_bools(ops in prop::collection::vec((0u32..300, any::<bool>()), 0..200)) {
            let mut bits = Bits::default();
            let mut model = vec![false; 300];
            for (r, on) in ops {
                bits.set(r, on);
                model[r as usize] = on;
            }
            for (r, &m) in model.iter().enumerate() {
                prop_assert_eq!(bits.get(r as u32), m, "row {}", r);
            }
        }
    }
}
