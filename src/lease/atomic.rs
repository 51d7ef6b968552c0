//! [`AtomicView`]: atomics living inside the file.

use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;
use std::sync::atomic::{AtomicU32, AtomicU64};

use super::Grant;

pub(super) mod sealed {
    //! Seals [`AtomicTarget`](super::AtomicTarget) and carries what the
    //! crate needs of each target: its width and how to view leased bytes
    //! as it. The method takes a crate-private type, so outside code can
    //! neither implement nor call it.
    #![allow(private_interfaces)]

    use std::sync::atomic::{AtomicU32, AtomicU64};

    use crate::sys::LeasedBytes;

    pub trait Sealed {
        /// Width of one atomic in bytes: the alignment the view needs.
        const WIDTH: u8;
        /// The leased bytes as this target (the actor granted a lease of
        /// the matching width and length).
        fn from_bytes(bytes: &LeasedBytes) -> &Self;
    }

    impl Sealed for AtomicU32 {
        const WIDTH: u8 = 4;
        fn from_bytes(bytes: &LeasedBytes) -> &Self {
            &bytes.atomics_u32()[0]
        }
    }

    impl Sealed for AtomicU64 {
        const WIDTH: u8 = 8;
        fn from_bytes(bytes: &LeasedBytes) -> &Self {
            &bytes.atomics_u64()[0]
        }
    }

    impl Sealed for [AtomicU32] {
        const WIDTH: u8 = 4;
        fn from_bytes(bytes: &LeasedBytes) -> &Self {
            bytes.atomics_u32()
        }
    }

    impl Sealed for [AtomicU64] {
        const WIDTH: u8 = 8;
        fn from_bytes(bytes: &LeasedBytes) -> &Self {
            bytes.atomics_u64()
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

/// The width in bytes of one atomic of `T`.
pub(crate) fn width_of<T: ?Sized + AtomicTarget>() -> u8 {
    <T as sealed::Sealed>::WIDTH
}

/// Atomics living inside the file: `AtomicView<AtomicU64>` derefs to
/// `&AtomicU64`, `AtomicView<[AtomicU32]>` to `&[AtomicU32]`, and so on.
///
/// Atomic views of the same width may overlap each other (they are the same
/// atomics); plain access to their bytes (loads, updates, segments) and views
/// of another width wait until they are released. A view taken before a grow
/// and one taken after it are the same memory of the same file, so their
/// operations are coherent.
#[must_use = "a view holds its bytes until dropped; dropping it at once releases them"]
#[clippy::has_significant_drop]
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
        <T as sealed::Sealed>::from_bytes(&self.grant.bytes)
    }
}

impl<T: ?Sized + AtomicTarget> fmt::Debug for AtomicView<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AtomicView")
            .field("offset", &self.grant.offset)
            .field("len", &self.grant.bytes.len())
            .finish()
    }
}
