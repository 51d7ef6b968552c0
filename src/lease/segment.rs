//! [`Segment`]: a shared, zero-copy, read-only lease.

use std::fmt;
use std::ops::Deref;

use bytes::Bytes;

use super::Grant;

/// A shared, zero-copy, read-only view of `len` bytes of the mapping.
///
/// While it lives, no update, [`SegmentMut`](crate::SegmentMut) or
/// [`AtomicView`](crate::AtomicView) can touch its bytes (they wait); other
/// `Segment`s of the same bytes can coexist. Resizing the file does not
/// invalidate it: a grow maps a new generation and this segment keeps its
/// own; a shrink that would cut it waits for its drop.
///
/// It is `'static`, `Send` and `Sync`, may outlive every
/// [`MappedFile`](crate::MappedFile) handle, and turns into
/// [`Bytes`] without copying ([`into_bytes`](Segment::into_bytes)).
#[must_use = "a segment holds its bytes until dropped; dropping it at once releases them"]
#[clippy::has_significant_drop]
pub struct Segment {
    grant: Grant,
}

impl Segment {
    pub(crate) fn new(grant: Grant) -> Segment {
        Segment { grant }
    }

    /// The grant behind the lease.
    pub(crate) fn grant(&self) -> &Grant {
        &self.grant
    }

    /// Offset of the first byte in the file.
    pub fn offset(&self) -> u64 {
        self.grant.offset
    }

    /// Converts into [`Bytes`] without copying: the lease lives inside the
    /// `Bytes` (and its clones) and is released when the last one drops.
    pub fn into_bytes(self) -> Bytes {
        Bytes::from_owner(self)
    }
}

impl Deref for Segment {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.grant.bytes.bytes()
    }
}

impl AsRef<[u8]> for Segment {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl fmt::Debug for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Segment")
            .field("offset", &self.grant.offset)
            .field("len", &self.grant.bytes.len())
            .finish()
    }
}
