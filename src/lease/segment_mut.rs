//! [`SegmentMut`]: an exclusive, writable lease.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use super::Grant;
use crate::actor::shared::Shared;
use crate::stream::ChangeKind;

/// An exclusive, writable view of `len` bytes of the mapping.
///
/// While it lives, nothing else in this process reads or writes its bytes
/// through the library (loads, updates and other leases of them wait).
/// Writes through it reach the file's page cache at once and are made
/// durable by the next [`flush`](crate::MappedFile::flush). A segment that
/// was written through (borrowed mutably) is reported to the mapping's
/// [subscriptions](crate::MappedFile::subscribe) when it is dropped, as one
/// change of its whole range.
#[must_use = "a segment holds its bytes until dropped; dropping it at once releases them"]
#[clippy::has_significant_drop]
pub struct SegmentMut {
    grant: Grant,
    /// The mapping, whose subscriptions hear of the segment's writes.
    shared: Arc<Shared>,
    /// Borrowed mutably: the bytes may have changed.
    written: bool,
    /// How its write is reported: `SegmentMut`, or `Update` for the
    /// temporary lease of a large update copied by its caller.
    kind: ChangeKind,
}

impl SegmentMut {
    pub(crate) fn new(grant: Grant, shared: &Arc<Shared>) -> SegmentMut {
        SegmentMut {
            grant,
            shared: Arc::clone(shared),
            written: false,
            kind: ChangeKind::SegmentMut,
        }
    }

    /// The temporary lease of a large update (or zero-fill) that its
    /// caller copies: its write is reported as an update.
    pub(crate) fn for_update(grant: Grant, shared: &Arc<Shared>) -> SegmentMut {
        let mut segment = SegmentMut::new(grant, shared);
        segment.kind = ChangeKind::Update;
        segment
    }

    /// The grant behind the lease.
    pub(crate) fn grant(&self) -> &Grant {
        &self.grant
    }

    /// Offset of the first byte in the file.
    pub fn offset(&self) -> u64 {
        self.grant.offset
    }
}

impl Deref for SegmentMut {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.grant.bytes.bytes()
    }
}

impl DerefMut for SegmentMut {
    fn deref_mut(&mut self) -> &mut [u8] {
        self.written = true;
        self.grant.bytes.bytes_mut()
    }
}

impl Drop for SegmentMut {
    fn drop(&mut self) {
        // Before the grant's release: a later write of these bytes waits
        // for the release, so its change is published after this one.
        if self.written {
            let bytes = self.grant.bytes.bytes();
            self.shared
                .feed
                .publish_copied(self.grant.offset, bytes, self.kind);
        }
    }
}

impl AsRef<[u8]> for SegmentMut {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl AsMut<[u8]> for SegmentMut {
    fn as_mut(&mut self) -> &mut [u8] {
        self
    }
}

impl fmt::Debug for SegmentMut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SegmentMut")
            .field("offset", &self.grant.offset)
            .field("len", &self.grant.bytes.len())
            .finish()
    }
}
