//! Feedback columns that cost only what they hold: a column grown only as far as its last
//! row with a value other than the default ([`Tail`]), and a `u64` column kept in 4 bytes a
//! row with the rare larger values beside it ([`U64Col`]).
//!
//! Many properties are absent from most items (a score, an interaction id, an adapter
//! version, a training batch before training), and a version number or the time between
//! an item's creation and its last change fits in 32 bits. At 1M items a dense 8-byte
//! column is 8 MB; a tail column of an absent property is nothing, and a narrow one 4 MB.

use rustc_hash::FxHashMap;

/// A column whose rows past its length hold `T::default()`: it grows when a row gets
/// another value, and never shrinks (a row set back to the default keeps its slot).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Tail<T> {
    pub(super) values: Vec<T>,
}

impl<T: Copy + Default + PartialEq> Tail<T> {
    /// The value of row `r`.
    #[inline]
    pub fn get(&self, r: u32) -> T {
        self.values.get(r as usize).copied().unwrap_or_default()
    }

    /// Sets row `r` to `v`.
    #[inline]
    pub fn set(&mut self, r: u32, v: T) {
        let i = r as usize;
        if let Some(slot) = self.values.get_mut(i) {
            *slot = v;
        } else if v != T::default() {
            self.values.resize(i, T::default());
            self.values.push(v);
        }
    }

    /// The stored rows (`0..len`; every row past them holds the default).
    pub fn stored(&self) -> &[T] {
        &self.values
    }

    /// Gives back spare capacity.
    pub fn shrink_to_fit(&mut self) {
        self.values.shrink_to_fit();
    }

    /// Heap bytes.
    pub fn heap_bytes(&self) -> usize {
        self.values.capacity() * std::mem::size_of::<T>()
    }
}

/// The 4-byte value that sends a row to [`U64Col::big`].
pub(super) const BIG: u32 = u32::MAX;

/// A `u64` column (0 past its length) in 4 bytes a row: values below [`BIG`] in the tail
/// column, larger ones marked [`BIG`] there and kept in a map.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct U64Col {
    pub(super) small: Tail<u32>,
    pub(super) big: FxHashMap<u32, u64>,
}

impl U64Col {
    /// The value of row `r`.
    #[inline]
    pub fn get(&self, r: u32) -> u64 {
        match self.small.get(r) {
            BIG => self.big.get(&r).copied().unwrap_or(0),
            v => u64::from(v),
        }
    }

    /// Sets row `r` to `v`.
    pub fn set(&mut self, r: u32, v: u64) {
        match u32::try_from(v) {
            Ok(x) if x != BIG => {
                if self.small.get(r) == BIG {
                    self.big.remove(&r);
                }
                self.small.set(r, x);
            }
            _ => {
                self.small.set(r, BIG);
                self.big.insert(r, v);
            }
        }
    }

    /// Gives back spare capacity.
    pub fn shrink_to_fit(&mut self) {
        self.small.shrink_to_fit();
        self.big.shrink_to_fit();
    }

    /// Estimated heap bytes (a map slot: 16 bytes and a control byte).
    pub fn heap_bytes(&self) -> usize {
        self.small.heap_bytes() + self.big.capacity() * 17
    }

    /// Checks what a reader of a file gets: every row marked [`BIG`] has its value in the
    /// map, and the map holds nothing else.
    pub(super) fn consistent(&self) -> bool {
        let marked = self.small.stored().iter().filter(|&&v| v == BIG).count();
        marked == self.big.len() && self.big.keys().all(|&r| self.small.get(r) == BIG)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn value() -> impl Strategy<Value = u64> {
        prop_oneof![
            Just(0u64),
            0u64..10,
            Just(u64::from(BIG) - 1),
            Just(u64::from(BIG)),
            any::<u64>(),
        ]
    }

    proptest! {
        /// Both columns answer like a dense vector under any sequence of sets, and the
        /// wide values stay consistent with their marks.
        #[test]
        fn sparse_columns_match_a_vector(ops in prop::collection::vec((0u32..200, value()), 0..150)) {
            let mut col = U64Col::default();
            let mut tail: Tail<u64> = Tail::default();
            let mut model = vec![0u64; 200];
            for (r, v) in ops {
                col.set(r, v);
                tail.set(r, v);
                model[r as usize] = v;
                prop_assert!(col.consistent());
            }
            for (r, &m) in model.iter().enumerate() {
                prop_assert_eq!(col.get(r as u32), m, "row {}", r);
                prop_assert_eq!(tail.get(r as u32), m, "row {}", r);
            }
            let last = model.iter().rposition(|&v| v != 0).map_or(0, |i| i + 1);
            prop_assert!(tail.stored().len() <= 200 && tail.stored().len() >= last);
        }
    }
}
