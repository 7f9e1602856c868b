//! Reading a page's feedback records: one forward walk over the key interval where the ids
//! lie close together, point lookups where they do not.
//!
//! A by-adapter page asks for up to 1,000 records by id. A point lookup descends sled's tree
//! from the root each time; when the page's ids are neighbours in key order (a listing
//! through an adapter family holds most of the org's items, so a page is nearly a run of
//! consecutive records) a range iterator reads them in one pass, each leaf found once and
//! every record after the first a step within it. Where the ids are far apart (an adapter
//! holding one item in ten), stepping over the records in between would read leaves no id
//! lies in, so the walk gives up on a gap and finds the next id with a fresh descent; after
//! [`GIVE_UP`] such gaps in a row the rest of the page is read by point lookups.
//!
//! The answer is the same as one `get` per id: the value stored under each key (or none),
//! handed out in the order the ids were asked, duplicates included.

use sled::IVec;

use super::keys;
use crate::store::StoreError;

/// Records stepped over before the walk gives up on reaching the next id.
const MAX_SKIP: usize = 4;

/// Gaps in a row after which the rest of the page is read by point lookups.
const GIVE_UP: usize = 2;

/// Fewer ids than this are read by point lookups only.
const MIN_WALK: usize = 4;

/// The values of `ids` of `org` in `tree` (`None` for an id not stored), in the order asked.
pub(super) fn read_many(
    tree: &sled::Tree,
    org: &str,
    ids: &[&str],
) -> Result<Vec<Option<IVec>>, StoreError> {
    let mut out: Vec<Option<IVec>> = vec![None; ids.len()];
    let mut key = Vec::new();
    if ids.len() < MIN_WALK {
        for (slot, id) in out.iter_mut().zip(ids) {
            keys::record_into(&mut key, org, id);
            *slot = tree.get(&key)?;
        }
        return Ok(out);
    }
    // The ids in key order (keys are `org \0 id`: the order of the ids' bytes), each with
    // its place in the answer.
    let mut order: Vec<usize> = (0..ids.len()).collect();
    order.sort_unstable_by(|&a, &b| ids[a].as_bytes().cmp(ids[b].as_bytes()));
    let Some(&last) = order.last() else {
        return Ok(out);
    };
    let hi = keys::record(org, ids[last]);
    let mut walk = Walk {
        tree,
        hi: IVec::from(hi),
        iter: None,
        held: None,
    };
    let mut gaps = 0usize;
    let mut prev: Option<usize> = None;
    for &at in &order {
        if let Some(p) = prev
            && ids[p] == ids[at]
        {
            // The same id asked twice: the same answer.
            out[at] = out[p].clone();
            continue;
        }
        prev = Some(at);
        keys::record_into(&mut key, org, ids[at]);
        out[at] = if gaps >= GIVE_UP {
            tree.get(&key)?
        } else {
            match walk.seek(&key)? {
                Step::Found(v) => {
                    gaps = 0;
                    v
                }
                Step::Gap(v) => {
                    gaps += 1;
                    v
                }
            }
        };
    }
    Ok(out)
}

/// How the walk reached a key: within a few records of the last one, or by a new descent.
enum Step {
    /// Reached by stepping forward (the value, or `None` when the key is not stored).
    Found(Option<IVec>),
    /// Reached by a fresh descent after a gap (likewise).
    Gap(Option<IVec>),
}

/// A forward walk over the keys up to `hi`, asked for keys in increasing order.
struct Walk<'t> {
    tree: &'t sled::Tree,
    hi: IVec,
    iter: Option<sled::Iter>,
    /// An entry read but not yet asked for (its key is above the last key asked).
    held: Option<(IVec, IVec)>,
}

impl Walk<'_> {
    /// The next entry of the walk, if any.
    fn next(&mut self) -> Result<Option<(IVec, IVec)>, StoreError> {
        if let Some(e) = self.held.take() {
            return Ok(Some(e));
        }
        match self.iter.as_mut().and_then(Iterator::next) {
            Some(r) => Ok(Some(r?)),
            None => Ok(None),
        }
    }

    /// The value under `key` (greater than every key asked before).
    fn seek(&mut self, key: &[u8]) -> Result<Step, StoreError> {
        if self.iter.is_some() {
            for _ in 0..=MAX_SKIP {
                let Some((k, v)) = self.next()? else {
                    // Nothing left up to `hi`, the greatest key asked: not stored.
                    return Ok(Step::Found(None));
                };
                match k.as_ref().cmp(key) {
                    std::cmp::Ordering::Less => continue,
                    std::cmp::Ordering::Equal => return Ok(Step::Found(Some(v))),
                    std::cmp::Ordering::Greater => {
                        self.held = Some((k, v));
                        return Ok(Step::Found(None));
                    }
                }
            }
        }
        // A gap (or the first key): descend afresh, from `key` on.
        self.held = None;
        let mut iter = self.tree.range(IVec::from(key)..=self.hi.clone());
        let first = iter.next().transpose()?;
        self.iter = Some(iter);
        Ok(Step::Gap(match first {
            Some((k, v)) if k.as_ref() == key => Some(v),
            Some(e) => {
                self.held = Some(e);
                None
            }
            None => None,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tree holding records `r00000`..: every one of org `o` whose number is not a
    /// multiple of 5 (so some ids asked for are missing), and a few of orgs sorting
    /// around it.
    fn tree() -> sled::Tree {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let t = db.open_tree("feedback").unwrap();
        for i in 0..2000u32 {
            if i % 5 != 0 {
                let id = format!("r{i:05}");
                t.insert(keys::record("o", &id), id.as_bytes()).unwrap();
            }
        }
        for org in ["n", "o2", "p"] {
            for i in 0..50u32 {
                let id = format!("r{i:05}");
                t.insert(keys::record(org, &id), b"other org".as_slice())
                    .unwrap();
            }
        }
        t
    }

    /// What one point lookup per id answers.
    fn one_by_one(t: &sled::Tree, ids: &[&str]) -> Vec<Option<IVec>> {
        ids.iter()
            .map(|id| t.get(keys::record("o", id)).unwrap())
            .collect()
    }

    #[test]
    fn every_pattern_of_ids_reads_as_point_lookups_do() {
        let t = tree();
        let id = |i: u32| format!("r{i:05}");
        let mut cases: Vec<Vec<String>> = vec![
            // Dense, newest first (as a page asks), with the missing multiples of 5.
            (1000..1100).rev().map(id).collect(),
            // Sparse: one in ten, one in 97, then dense again (the walk gives up, then
            // point lookups take over).
            (0..100).map(|k| id(k * 10 + 3)).collect(),
            (0..20).map(|k| id(k * 97)).collect(),
            (0..30)
                .map(|k| id(k * 40))
                .chain((500..600).map(id))
                .collect(),
            // Gaps just within and just past what the walk steps over.
            (0..200)
                .map(|k| id(k * (MAX_SKIP as u32 + 1)))
                .chain((0..200).map(|k| id(k * (MAX_SKIP as u32 + 2) + 1)))
                .collect(),
            // Duplicates, unsorted, ids beyond every record and below the first.
            [
                "r00007", "r00003", "r00007", "r00004", "r99999", "a", "r00004", "r00005",
            ]
            .map(String::from)
            .to_vec(),
            // Fewer than the walk needs, and none.
            vec![id(8), id(9)],
            vec![],
            // Every id missing.
            (0..50).map(|k| id(k * 5)).collect(),
        ];
        // A long shuffled run (a fixed permutation: every 37th of 1999).
        cases.push((0..1999u32).map(|k| id((k * 37) % 1999)).collect());
        for ids in &cases {
            let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
            let got = read_many(&t, "o", &ids).unwrap();
            assert_eq!(got, one_by_one(&t, &ids), "ids {:?}..", ids.first());
        }
    }
}
