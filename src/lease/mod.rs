//! Views of the mapping that are leases: [`Segment`], [`SegmentMut`] and
//! [`AtomicView`], one file each, and the [`Grant`] every one of them holds.
//!
//! The actor registers each lease's byte range in its lease table before
//! handing it out, and every lease tells the actor when it is dropped. The
//! table keeps conflicting access apart (see the crate docs, "Leases"), which
//! is what makes the references these types hand out sound.

mod atomic;
mod reader;
mod segment;
mod segment_mut;

pub use self::atomic::{AtomicTarget, AtomicView};
pub use self::reader::AtomicReader;
pub use self::segment::Segment;
pub use self::segment_mut::SegmentMut;

pub(crate) use self::atomic::width_of;

use tokio::sync::mpsc;

use crate::lease_table::Notice;
use crate::sys::LeasedBytes;

/// Tells the actor, on drop, that lease `id` is released.
///
/// The actor receives notices on an unbounded channel: a drop cannot wait
/// for room, and each lease sends exactly one, so the channel holds at most
/// as many notices as there are live leases (plus cancelled requests, one
/// each).
pub(crate) struct Release {
    id: u64,
    tx: mpsc::UnboundedSender<Notice>,
}

impl Release {
    pub(crate) fn new(id: u64, tx: mpsc::UnboundedSender<Notice>) -> Release {
        Release { id, tx }
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        // The actor may have stopped; the mapping itself stays alive through
        // the bytes' `Arc`, so there is nothing else to do.
        let _ = self.tx.send(Notice::Released(self.id));
    }
}

/// What the actor hands back for a lease request: the bytes and their
/// release. Field order matters: the bytes (and with them, possibly, the
/// last reference to the generation) are dropped before the release is
/// sent, so the actor never sees a release while the range is still mapped
/// by this lease.
pub(crate) struct Grant {
    pub(crate) bytes: LeasedBytes,
    pub(crate) offset: u64,
    /// Held for its `Drop`: releasing the lease.
    pub(crate) _release: Release,
}

impl Grant {
    /// Whether the granted pages are in the page cache, so that copying
    /// them takes no read-ahead and no zeroing of fresh pages.
    pub(crate) fn resident(&self) -> bool {
        let generation = self.bytes.generation();
        generation.resident(self.offset, self.bytes.len() as u64)
    }

    /// Faults the granted pages in for reading; run on the blocking pool.
    /// Best effort: a failure leaves the copy to fault them itself.
    pub(crate) fn prefault(&self) {
        let generation = self.bytes.generation();
        let _ = generation.populate(self.offset, self.bytes.len() as u64);
    }
}
