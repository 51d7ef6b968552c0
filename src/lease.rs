//! Views of the mapping that are leases: [`Segment`], [`SegmentMut`] and
//! [`AtomicView`].
//!
//! The actor registers each lease's byte range in its lease table before
//! handing it out, and every lease tells the actor when it is dropped. The
//! table keeps conflicting access apart (see the crate docs, "Leases"), which
//! is what makes the references these types hand out sound.

use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU32, AtomicU64};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::sys::Region;

/// Tells the actor, on drop, that lease `id` is released.
///
/// The actor receives releases on an unbounded channel: a drop cannot wait
/// for room, and each lease sends exactly one message, so the channel holds
/// at most as many messages as there are live leases.
pub(crate) struct Release {
    id: u64,
    tx: mpsc::UnboundedSender<u64>,
}

impl Release {
    pub(crate) fn new(id: u64, tx: mpsc::UnboundedSender<u64>) -> Release {
        Release { id, tx }
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        // The actor may have stopped; the mapping itself stays alive through
        // the region's `Arc`, so there is nothing else to do.
        let _ = self.tx.send(self.id);
    }
}

/// What the actor hands back for a lease request: the region and its release.
pub(crate) struct Grant {
    pub(crate) region: Region,
    pub(crate) offset: u64,
    /// Held for its `Drop`: releasing the lease.
    pub(crate) _release: Release,
}

/// A shared, zero-copy, read-only view of `len` bytes of the mapping.
///
/// While it lives, no update, [`SegmentMut`] or [`AtomicView`] can touch its
/// bytes (they wait); other `Segment`s of the same bytes can coexist. Resizing
/// the file does not invalidate it: a grow maps a new generation and this
/// segment keeps its own; a shrink that would cut it waits for its drop.
///
/// It is `'static`, `Send` and `Sync`, may outlive every
/// [`MappedFile`](crate::MappedFile) handle, and turns into
/// [`Bytes`] without copying ([`into_bytes`](Segment::into_bytes)).
pub struct Segment {
    grant: Grant,
}

impl Segment {
    pub(crate) fn new(grant: Grant) -> Segment {
        Segment { grant }
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
        self.grant.region.bytes()
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
            .field("len", &self.grant.region.len())
            .finish()
    }
}

/// An exclusive, writable view of `len` bytes of the mapping.
///
/// While it lives, nothing else in this process reads or writes its bytes
/// through the library (loads, updates and other leases of them wait).
/// Writes through it reach the file's page cache at once and are made
/// durable by the next [`flush`](crate::MappedFile::flush).
pub struct SegmentMut {
    grant: Grant,
}

impl SegmentMut {
    pub(crate) fn new(grant: Grant) -> SegmentMut {
        SegmentMut { grant }
    }

    /// Offset of the first byte in the file.
    pub fn offset(&self) -> u64 {
        self.grant.offset
    }
}

impl Deref for SegmentMut {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.grant.region.bytes()
    }
}

impl DerefMut for SegmentMut {
    fn deref_mut(&mut self) -> &mut [u8] {
        self.grant.region.bytes_mut()
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
            .field("len", &self.grant.region.len())
            .finish()
    }
}

mod sealed {
    //! Seals [`AtomicTarget`](super::AtomicTarget) and carries its one
    //! method, which takes a crate-private type: outside code can neither
    //! implement nor call it.
    #![allow(private_interfaces)]

    use std::sync::atomic::{AtomicU32, AtomicU64};

    use crate::sys::Region;

    pub trait Sealed {
        fn from_region(region: &Region) -> &Self;
    }

    impl Sealed for AtomicU32 {
        fn from_region(region: &Region) -> &Self {
            &region.atomics_u32()[0]
        }
    }

    impl Sealed for AtomicU64 {
        fn from_region(region: &Region) -> &Self {
            &region.atomics_u64()[0]
        }
    }

    impl Sealed for [AtomicU32] {
        fn from_region(region: &Region) -> &Self {
            region.atomics_u32()
        }
    }

    impl Sealed for [AtomicU64] {
        fn from_region(region: &Region) -> &Self {
            region.atomics_u64()
        }
    }
}

/// The types an [`AtomicView`] can show: `AtomicU32`, `AtomicU64` and slices
/// of them. Sealed: it cannot be implemented outside this crate.
pub trait AtomicTarget: sealed::Sealed {}

impl AtomicTarget for AtomicU32 {}
impl AtomicTarget for AtomicU64 {}
impl AtomicTarget for [AtomicU32] {}
impl AtomicTarget for [AtomicU64] {}

/// Atomics living inside the file: `AtomicView<AtomicU64>` derefs to
/// `&AtomicU64`, `AtomicView<[AtomicU32]>` to `&[AtomicU32]`, and so on.
///
/// Atomic views of the same width may overlap each other (they are the same
/// atomics); plain access to their bytes (loads, updates, segments) and views
/// of another width wait until they are released. A view taken before a grow
/// and one taken after it are the same memory of the same file, so their
/// operations are coherent.
pub struct AtomicView<T: ?Sized + AtomicTarget> {
    grant: Grant,
    _marker: PhantomData<fn() -> Box<T>>,
}

impl<T: ?Sized + AtomicTarget> AtomicView<T> {
    pub(crate) fn new(grant: Grant) -> AtomicView<T> {
        AtomicView {
            grant,
            _marker: PhantomData,
        }
    }

    /// Offset of the first byte in the file.
    pub fn offset(&self) -> u64 {
        self.grant.offset
    }
}

impl<T: ?Sized + AtomicTarget> Deref for AtomicView<T> {
    type Target = T;
    fn deref(&self) -> &T {
        <T as sealed::Sealed>::from_region(&self.grant.region)
    }
}

impl<T: ?Sized + AtomicTarget> fmt::Debug for AtomicView<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AtomicView")
            .field("offset", &self.grant.offset)
            .field("len", &self.grant.region.len())
            .finish()
    }
}
