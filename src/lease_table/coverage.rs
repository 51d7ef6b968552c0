//! [`Coverage`]: how many ranges cover each byte, as a piecewise-constant
//! count, so that "does any range of this set overlap `r`?" costs
//! `O(log n)` however many ranges the set holds.

use std::collections::BTreeMap;
use std::ops::Bound::{Excluded, Included, Unbounded};

use crate::region::ByteRange;

/// A multiset of byte ranges, kept as the count of ranges covering each
/// position.
///
/// Invariant: each key starts a piece whose count differs from the piece
/// before it (the count before the first key is zero), so that a piece of
/// count zero is always followed, within any range, by a positive one.
#[derive(Debug, Default, Clone)]
pub(crate) struct Coverage {
    pieces: BTreeMap<u64, u32>,
}

impl Coverage {
    /// Adds one range (empty ranges cover nothing).
    pub(crate) fn add(&mut self, r: ByteRange) {
        self.adjust(r, true);
    }

    /// Removes one range added before.
    pub(crate) fn remove(&mut self, r: ByteRange) {
        self.adjust(r, false);
    }

    /// Whether no range is held.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.pieces.is_empty()
    }

    /// Whether any held range shares a byte with `r`. Looks at two pieces
    /// at most (the invariant: after a zero piece comes a positive one).
    pub(crate) fn overlaps(&self, r: &ByteRange) -> bool {
        if r.start >= r.end {
            return false;
        }
        if self.count_at(r.start) > 0 {
            return true;
        }
        self.pieces
            .range((Excluded(r.start), Excluded(r.end)))
            .next()
            .is_some()
    }

    fn count_at(&self, pos: u64) -> u32 {
        self.pieces
            .range((Unbounded, Included(pos)))
            .next_back()
            .map_or(0, |(_, count)| *count)
    }

    /// Makes `pos` the start of a piece (with the count already there).
    fn split(&mut self, pos: u64) {
        if !self.pieces.contains_key(&pos) {
            let count = self.count_at(pos);
            self.pieces.insert(pos, count);
        }
    }

    /// Removes the piece start at `pos` if it no longer changes the count.
    fn merge(&mut self, pos: u64) {
        let Some(&count) = self.pieces.get(&pos) else {
            return;
        };
        if self.count_before(pos) == count {
            self.pieces.remove(&pos);
        }
    }

    fn adjust(&mut self, r: ByteRange, add: bool) {
        if r.start >= r.end {
            return;
        }
        self.split(r.start);
        self.split(r.end);
        for (_, count) in self.pieces.range_mut(r.start..r.end) {
            if add {
                *count += 1;
            } else {
                debug_assert!(*count > 0, "removing a range that was not added");
                *count = count.saturating_sub(1);
            }
        }
        // Pieces inside the range changed by the same amount, so they still
        // differ from their neighbours; only the two ends may now repeat
        // the count before them.
        self.merge(r.start);
        self.merge(r.end);
    }

    fn count_before(&self, pos: u64) -> u32 {
        match pos.checked_sub(1) {
            Some(prev) => self.count_at(prev),
            None => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn r(start: u64, end: u64) -> ByteRange {
        ByteRange { start, end }
    }

    #[test]
    fn coverage_edges() {
        let mut c = Coverage::default();
        assert!(!c.overlaps(&r(0, u64::MAX)));
        c.add(r(10, 20));
        assert!(c.overlaps(&r(19, 30)));
        assert!(!c.overlaps(&r(20, 30)));
        assert!(!c.overlaps(&r(0, 10)));
        assert!(!c.overlaps(&r(15, 15)), "an empty range overlaps nothing");
        c.add(r(5, u64::MAX));
        assert!(c.overlaps(&r(u64::MAX - 1, u64::MAX)));
        c.remove(r(5, u64::MAX));
        c.remove(r(10, 20));
        assert!(c.is_empty(), "{c:?}");
        c.add(r(0, 0));
        assert!(c.is_empty());
    }

    proptest! {
        /// Against a model: a list of ranges, added and removed at random.
        #[test]
        fn coverage_matches_a_list_of_ranges(
            ops in proptest::collection::vec((0u64..64, 0u64..16, any::<bool>(), 0u64..64, 0u64..16), 1..64)
        ) {
            let mut c = Coverage::default();
            let mut model: Vec<ByteRange> = Vec::new();
            for (start, len, add, qs, ql) in ops {
                let range = r(start, start + len);
                if add || model.is_empty() {
                    c.add(range);
                    model.push(range);
                } else {
                    let victim = model.remove((start as usize) % model.len());
                    c.remove(victim);
                }
                let q = r(qs, qs + ql);
                let want = model.iter().any(|m| m.overlaps(&q));
                prop_assert_eq!(c.overlaps(&q), want, "{:?} vs {:?}", q, model);
                // The invariant keeps the map small: never more pieces than
                // two per range held.
                prop_assert!(c.pieces.len() <= 2 * model.len());
            }
            for m in model.drain(..) {
                c.remove(m);
            }
            prop_assert!(c.is_empty());
        }
    }
}
