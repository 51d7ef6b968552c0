//! Checked `offset`/`len` arithmetic: [`ByteRange`] and the bounds and
//! alignment checks every request goes through. Pure functions, no I/O.

use crate::error::{Error, Result};

/// A half-open byte range `[start, end)` whose end did not overflow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ByteRange {
    pub(crate) start: u64,
    pub(crate) end: u64,
}

impl ByteRange {
    /// `[offset, offset + len)`, or `None` when the end overflows `u64`.
    pub(crate) fn new(offset: u64, len: u64) -> Option<ByteRange> {
        offset
            .checked_add(len)
            .map(|end| ByteRange { start: offset, end })
    }

    /// The range from `start` to the end of any file.
    pub(crate) fn tail(start: u64) -> ByteRange {
        ByteRange {
            start,
            end: u64::MAX,
        }
    }

    /// Length in bytes.
    pub(crate) fn len(&self) -> u64 {
        self.end - self.start
    }

    /// Whether the two ranges share a byte. Empty ranges share none.
    pub(crate) fn overlaps(&self, other: &ByteRange) -> bool {
        self.start < self.end
            && other.start < other.end
            && self.start < other.end
            && other.start < self.end
    }
}

/// Whether `[offset, offset + len)` is a valid range of a file of
/// `file_len` bytes: the end does not overflow and is at most `file_len`.
/// A zero-length range is valid at any `offset <= file_len`.
pub(crate) fn in_bounds(offset: u64, len: u64, file_len: u64) -> bool {
    matches!(offset.checked_add(len), Some(end) if end <= file_len)
}

/// Checks a range against a file length, returning the span or
/// [`Error::OutOfBounds`] naming all three numbers.
pub(crate) fn check(offset: u64, len: u64, file_len: u64) -> Result<ByteRange> {
    if in_bounds(offset, len, file_len) {
        Ok(ByteRange {
            start: offset,
            end: offset + len,
        })
    } else {
        Err(Error::OutOfBounds {
            offset,
            len,
            file_len,
        })
    }
}

/// Checks that `offset` is a multiple of `align` (a power of two).
pub(crate) fn check_aligned(offset: u64, align: u64) -> Result<()> {
    if offset % align == 0 {
        Ok(())
    } else {
        Err(Error::Misaligned { offset, align })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn in_bounds_matches_wide_arithmetic(offset: u64, len: u64, file_len: u64) {
            let exact = (offset as u128) + (len as u128) <= file_len as u128;
            prop_assert_eq!(in_bounds(offset, len, file_len), exact);
            prop_assert_eq!(check(offset, len, file_len).is_ok(), exact);
        }

        #[test]
        fn overlap_is_symmetric_and_exact(a in 0u64..64, al in 0u64..16, b in 0u64..64, bl in 0u64..16) {
            let x = ByteRange::new(a, al).unwrap();
            let y = ByteRange::new(b, bl).unwrap();
            let exact = (a..a + al).any(|i| (b..b + bl).contains(&i));
            prop_assert_eq!(x.overlaps(&y), exact);
            prop_assert_eq!(y.overlaps(&x), exact);
        }
    }

    #[test]
    fn edges() {
        assert!(in_bounds(0, 0, 0));
        assert!(in_bounds(10, 0, 10));
        assert!(!in_bounds(11, 0, 10));
        assert!(!in_bounds(u64::MAX, 1, u64::MAX));
        assert!(in_bounds(u64::MAX, 0, u64::MAX));
        assert!(ByteRange::new(u64::MAX, 1).is_none());
        assert!(matches!(
            check(5, 6, 10),
            Err(Error::OutOfBounds {
                offset: 5,
                len: 6,
                file_len: 10
            })
        ));
        assert!(check_aligned(12, 8).is_err());
        assert!(check_aligned(16, 8).is_ok());
    }
}
