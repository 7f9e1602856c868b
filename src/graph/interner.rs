//! The interner: each distinct string of an org graph stored once, named by a [`Sym`].
//!
//! Every string sits in one text with an 8-byte end offset per symbol, and the lookup by
//! text is a hash table of symbol numbers alone (4 bytes a slot, the key read back from
//! the text), instead of one `Arc<str>` allocation per string, a list of them and a map
//! keyed by them (about 85 bytes a string, 23 MB for the 270k strings at 1M items).
//!
//! A symbol can be present but unreachable by lookup: the checkpoint writes strings that
//! nothing refers to any more blank and marks them unused, and they are read back as
//! blank symbols that keep their number ([`Interner::push`] with `used == false`).

use std::hash::BuildHasher;
use std::num::NonZeroU32;

use hashbrown::HashTable;
use rustc_hash::FxBuildHasher;

use super::Sym;

/// Maps strings to [`Sym`]s and back; each distinct string is stored once.
#[derive(Debug, Default, Clone)]
pub struct Interner {
    /// Every string, one after another, in symbol order.
    text: String,
    /// Per symbol index (symbol number - 1): the end of its string in `text`.
    ends: Vec<u64>,
    /// Symbol indexes of the strings found by lookup, hashed by their text.
    table: HashTable<u32>,
}

/// The text of symbol index `i`.
#[inline]
fn text_of<'a>(text: &'a str, ends: &[u64], i: u32) -> &'a str {
    let i = i as usize;
    let Some(&end) = ends.get(i) else { return "" };
    let start = match i.checked_sub(1) {
        Some(p) => ends.get(p).copied().unwrap_or(0),
        None => 0,
    };
    text.get(start as usize..end as usize).unwrap_or("")
}

#[inline]
fn hash(s: &str) -> u64 {
    FxBuildHasher.hash_one(s)
}

impl Interner {
    /// An empty interner with room for `symbols` strings of `bytes` bytes in all.
    pub(super) fn with_capacity(symbols: usize, bytes: usize) -> Self {
        Interner {
            text: String::with_capacity(bytes),
            ends: Vec::with_capacity(symbols),
            table: HashTable::with_capacity(symbols),
        }
    }

    /// The symbol of `s`, adding it if new.
    pub fn intern(&mut self, s: &str) -> Sym {
        match self.get(s) {
            Some(sym) => sym,
            None => self.append(s, true),
        }
    }

    /// Appends `s` as a new symbol whatever the table holds; findable by lookup if `used`.
    /// Returns `None` (and appends nothing) if `used` and `s` is already findable: the
    /// checkpoint reader's check that no string is there twice.
    pub(super) fn push(&mut self, s: &str, used: bool) -> Option<Sym> {
        if used && self.get(s).is_some() {
            return None;
        }
        Some(self.append(s, used))
    }

    fn append(&mut self, s: &str, used: bool) -> Sym {
        let i = self.ends.len() as u32;
        self.text.push_str(s);
        self.ends.push(self.text.len() as u64);
        if used {
            let (text, ends) = (&self.text, &self.ends);
            self.table
                .insert_unique(hash(s), i, |&j| hash(text_of(text, ends, j)));
        }
        // `i + 1` is at least 1, so the symbol is never zero.
        Sym(NonZeroU32::MIN.saturating_add(i))
    }

    /// Every symbol's string, in symbol order (blank for the unused ones).
    pub(super) fn iter(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        (0..self.ends.len() as u32).map(move |i| text_of(&self.text, &self.ends, i))
    }

    /// Gives back spare capacity.
    pub(super) fn shrink_to_fit(&mut self) {
        self.text.shrink_to_fit();
        self.ends.shrink_to_fit();
        let (text, ends) = (&self.text, &self.ends);
        self.table.shrink_to_fit(|&j| hash(text_of(text, ends, j)));
    }

    /// Estimated heap bytes: the text, the offsets and the table (a 4-byte slot and a
    /// control byte per bucket, at most 7/8 of the buckets full).
    pub fn heap_bytes(&self) -> usize {
        let buckets = if self.table.capacity() == 0 {
            0
        } else {
            (self.table.capacity() * 8 / 7).next_power_of_two()
        };
        self.text.capacity() + self.ends.capacity() * 8 + buckets * 5
    }

    /// Number of strings interned (symbols are `1..=len`).
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// True if nothing was interned.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The symbol of `s` if it was ever interned.
    pub fn get(&self, s: &str) -> Option<Sym> {
        let (text, ends) = (&self.text, &self.ends);
        self.table
            .find(hash(s), |&j| text_of(text, ends, j) == s)
            .map(|&j| Sym(NonZeroU32::MIN.saturating_add(j)))
    }

    /// The string of a symbol.
    #[inline]
    pub fn resolve(&self, sym: Sym) -> &str {
        text_of(&self.text, &self.ends, sym.0.get() - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    proptest! {
        /// Answers as the map and list it replaced, with unused (blank) symbols among the
        /// strings, before and after giving back capacity.
        #[test]
        fn interner_matches_a_map_and_a_list(
            ops in prop::collection::vec(("[a-d]{0,3}", any::<bool>()), 0..120),
        ) {
            let mut it = Interner::default();
            let mut list: Vec<String> = Vec::new();
            let mut map: HashMap<String, Sym> = HashMap::new();
            for (s, blank) in &ops {
                if *blank {
                    let sym = it.push("", false).expect("unused is always appended");
                    list.push(String::new());
                    prop_assert_eq!(sym.0.get() as usize, list.len());
                } else {
                    let sym = it.intern(s);
                    if let Some(&old) = map.get(s) {
                        prop_assert_eq!(sym, old);
                    } else {
                        list.push(s.clone());
                        map.insert(s.clone(), sym);
                        prop_assert_eq!(sym.0.get() as usize, list.len());
                        prop_assert_eq!(it.push(s, true), None);
                    }
                }
            }
            for round in 0..2 {
                prop_assert_eq!(it.len(), list.len());
                prop_assert_eq!(it.iter().collect::<Vec<_>>(), list.iter().map(String::as_str).collect::<Vec<_>>());
                for (k, s) in list.iter().enumerate() {
                    let sym = Sym(NonZeroU32::MIN.saturating_add(k as u32));
                    prop_assert_eq!(it.resolve(sym), s.as_str());
                }
                for s in ["", "a", "ab", "abc", "dd", "zz"] {
                    prop_assert_eq!(it.get(s), map.get(s).copied(), "round {} {:?}", round, s);
                }
                it.shrink_to_fit();
            }
        }
    }
}
