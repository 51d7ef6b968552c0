//! The one module allowed `unsafe`: the mapping's raw pointer, the bytes
//! behind it, and the few syscalls `memmap2` and `std` do not offer.
//!
//! Everything outside this module reaches mapped memory through three doors:
//!
//! - [`Mapping::read`] / [`Mapping::write`], used by the actor for `load` and
//!   `update`, which take a [`Cleared`] proof from the lease table;
//! - [`Region`], a leased byte range that hands out `&[u8]`, `&mut [u8]` or
//!   atomics, built only from a [`Ticket`] issued by the lease table.
//!
//! Bounds are checked here again (against the mapping's own length) so that
//! a bug elsewhere can produce a wrong answer but never an out-of-range
//! access. What this module cannot check is *exclusion*: that no plain
//! reference and no other write or atomic view covers the same bytes. That
//! is the lease table's invariant (see `actor/leases.rs`), and the proof
//! types [`Cleared`] and [`Ticket`] can only be minted there.
#![allow(unsafe_code)]

pub(crate) mod gate;

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use memmap2::{MmapMut, MmapOptions, MmapRaw};

use crate::actor::leases::{Cleared, Ticket};
use crate::Mode;

/// What keeps a mapping alive: memmap2 unmaps on drop.
enum Backing {
    /// Nothing is mapped: the mapping has length zero.
    Empty,
    /// `MAP_SHARED`, read-only or read-write.
    Shared(MmapRaw),
    /// `MAP_PRIVATE`, writable: copy-on-write pages. Held for its `Drop`.
    Private(#[allow(dead_code)] MmapMut),
}

/// One `mmap` of the file at one length: a mapping *generation*.
///
/// Invariant: `ptr` points to `len` bytes that stay mapped (and readable,
/// and writable when `writable`) for as long as this value lives, because
/// `backing` owns the mapping and is dropped only with it.
pub(crate) struct Mapping {
    ptr: *mut u8,
    len: usize,
    writable: bool,
    backing: Backing,
}

// SAFETY: `Mapping` is a pointer to memory it owns through `backing`; the
// memory is not tied to any thread. Concurrent access to the bytes is
// governed by the lease table (the `Cleared`/`Ticket` proofs), not by the
// thread that holds the `Mapping`.
unsafe impl Send for Mapping {}
// SAFETY: every method taking `&self` that touches the bytes either requires
// a lease-table proof of exclusion or goes through atomics; see the module
// documentation.
unsafe impl Sync for Mapping {}

impl std::fmt::Debug for Mapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mapping")
            .field("len", &self.len)
            .field("writable", &self.writable)
            .finish()
    }
}

impl Mapping {
    /// Maps the first `len` bytes of `file` for `mode`.
    ///
    /// The caller has made the file at least `len` bytes long.
    pub(crate) fn map(file: &File, len: u64, mode: Mode) -> io::Result<Mapping> {
        let len = usize::try_from(len)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "length exceeds usize"))?;
        if len == 0 {
            return Ok(Mapping {
                ptr: std::ptr::NonNull::<u8>::dangling().as_ptr(),
                len: 0,
                writable: mode != Mode::ReadOnly,
                backing: Backing::Empty,
            });
        }
        let mut opts = MmapOptions::new();
        opts.len(len);
        match mode {
            Mode::ReadOnly => {
                let raw = opts.map_raw_read_only(file)?;
                Ok(Mapping {
                    ptr: raw.as_mut_ptr(),
                    len,
                    writable: false,
                    backing: Backing::Shared(raw),
                })
            }
            Mode::ReadWrite => {
                let raw = opts.map_raw(file)?;
                Ok(Mapping {
                    ptr: raw.as_mut_ptr(),
                    len,
                    writable: true,
                    backing: Backing::Shared(raw),
                })
            }
            Mode::CopyOnWrite => {
                // SAFETY: `map_copy` is unsafe because the file may change
                // under the mapping; we never create references to mapped
                // bytes except through leases, and the crate documents that
                // another process changing the file is outside its control
                // (crate docs, "Soundness").
                let mut map = unsafe { opts.map_copy(file) }?;
                Ok(Mapping {
                    ptr: map.as_mut_ptr(),
                    len,
                    writable: true,
                    backing: Backing::Private(map),
                })
            }
        }
    }

    /// A mapping of nothing (what a closed mapping's handles keep).
    pub(crate) fn empty() -> Mapping {
        Mapping {
            ptr: std::ptr::NonNull::<u8>::dangling().as_ptr(),
            len: 0,
            writable: false,
            backing: Backing::Empty,
        }
    }

    /// Length of this generation in bytes.
    pub(crate) fn len(&self) -> u64 {
        self.len as u64
    }

    /// Checks that `[offset, offset + len)` lies inside this mapping and
    /// returns it as `usize`s. Overflow counts as outside.
    fn span(&self, offset: u64, len: usize) -> Option<usize> {
        let start = usize::try_from(offset).ok()?;
        let end = start.checked_add(len)?;
        (end <= self.len).then_some(start)
    }

    /// Copies `buf.len()` bytes at `offset` into `buf`.
    ///
    /// Panics on an out-of-range request: the actor checked the range
    /// already, so this is an internal bug, caught by the actor's panic
    /// isolation rather than turned into an out-of-range read.
    pub(crate) fn read(&self, _cleared: &Cleared, offset: u64, buf: &mut [u8]) {
        let start = self
            .span(offset, buf.len())
            .expect("read range checked by the actor");
        if buf.is_empty() {
            return;
        }
        // SAFETY: `span` proved `[start, start + buf.len())` is inside the
        // live mapping (struct invariant), `buf` is a distinct Rust
        // allocation so the ranges do not overlap, and `Cleared` proves no
        // writer (lease or update) covers these bytes right now.
        unsafe {
            std::ptr::copy_nonoverlapping(self.ptr.wrapping_add(start), buf.as_mut_ptr(), buf.len())
        }
    }

    /// Copies `data` to `offset`.
    ///
    /// Panics on an out-of-range request or a read-only mapping (internal
    /// bugs; see [`Mapping::read`]).
    pub(crate) fn write(&self, _cleared: &Cleared, offset: u64, data: &[u8]) {
        assert!(self.writable, "write to a read-only mapping");
        let start = self
            .span(offset, data.len())
            .expect("write range checked by the actor");
        if data.is_empty() {
            return;
        }
        // SAFETY: in range of the live, writable mapping (struct invariant
        // and `span`); `data` cannot overlap the mapping's bytes unless it
        // is itself a lease, and `Cleared` proves no lease covers them.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.wrapping_add(start), data.len())
        }
    }

    /// The bytes `[start, start + len)` as atomics, for direct operations.
    fn atomic_bytes(&self, start: usize, len: usize) -> &[AtomicU8] {
        if len == 0 {
            return &[];
        }
        // SAFETY: the caller checked `[start, start + len)` with `span`, so
        // it lies inside the live mapping (struct invariant); `AtomicU8` has
        // the size and alignment of `u8`; direct operations touch these bytes
        // only through atomics, and the gate keeps them apart from every
        // plain access (leases and the actor's own copies).
        unsafe { std::slice::from_raw_parts(self.ptr.wrapping_add(start).cast::<AtomicU8>(), len) }
    }

    /// A direct load: copies `buf.len()` bytes at `offset` into `buf`
    /// through relaxed atomic byte loads. Returns `false` (copying nothing)
    /// when the range is outside this generation.
    pub(crate) fn read_direct(
        &self,
        _entered: &gate::Entered<'_, Mapping>,
        offset: u64,
        buf: &mut [u8],
    ) -> bool {
        let Some(start) = self.span(offset, buf.len()) else {
            return false;
        };
        let len = buf.len();
        for (dst, src) in buf.iter_mut().zip(self.atomic_bytes(start, len)) {
            *dst = src.load(Ordering::Relaxed);
        }
        true
    }

    /// A direct update: copies `data` to `offset` through relaxed atomic byte
    /// stores. Returns `false` (writing nothing) when the range is outside
    /// this generation or the mapping is read-only.
    pub(crate) fn write_direct(
        &self,
        _entered: &gate::Entered<'_, Mapping>,
        offset: u64,
        data: &[u8],
    ) -> bool {
        if !self.writable {
            return false;
        }
        let Some(start) = self.span(offset, data.len()) else {
            return false;
        };
        for (dst, src) in self.atomic_bytes(start, data.len()).iter().zip(data) {
            dst.store(*src, Ordering::Relaxed);
        }
        true
    }

    /// Gives the writable bytes `[offset, offset + len)` to `f`.
    pub(crate) fn with_mut<R>(
        &self,
        _cleared: &Cleared,
        offset: u64,
        len: usize,
        f: impl FnOnce(&mut [u8]) -> R,
    ) -> R {
        assert!(self.writable, "write to a read-only mapping");
        let start = self.span(offset, len).expect("range checked by the actor");
        if len == 0 {
            return f(&mut []);
        }
        // SAFETY: in range of the live, writable mapping; `Cleared` proves
        // nothing else reads or writes these bytes, and the slice does not
        // outlive this call (nor the `&self` that keeps the mapping).
        let bytes = unsafe { std::slice::from_raw_parts_mut(self.ptr.wrapping_add(start), len) };
        f(bytes)
    }

    /// `msync(MS_SYNC)` of the pages covering `[offset, offset + len)`.
    pub(crate) fn sync_range(&self, offset: u64, len: u64) -> io::Result<()> {
        let Backing::Shared(raw) = &self.backing else {
            return Ok(());
        };
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(self.len);
        let len = usize::try_from(len)
            .unwrap_or(usize::MAX)
            .min(self.len - start);
        if len == 0 {
            return Ok(());
        }
        raw.flush_range(start, len)
    }

    /// Prefaults `[offset, offset + len)` for reading (`MADV_POPULATE_READ`),
    /// falling back to `MADV_WILLNEED` on kernels without populate. Runs on
    /// the blocking pool.
    ///
    /// Never `MADV_POPULATE_WRITE`: on a shared file mapping it simulates a
    /// write fault on every page, which marks the whole range dirty, so the
    /// next flush would write all of it back.
    pub(crate) fn populate(&self, offset: u64, len: u64) -> io::Result<()> {
        let Some(start) = usize::try_from(len)
            .ok()
            .and_then(|len| self.span(offset, len))
        else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "range outside the mapping",
            ));
        };
        if len == 0 {
            return Ok(());
        }
        let page = page_size();
        let aligned = start - start % page;
        let span = len as usize + (start - aligned);
        let advice = MADV_POPULATE_READ;
        // SAFETY: `[aligned, aligned + span)` lies inside the live mapping
        // (`span` check above, and `aligned <= start`); madvise with a
        // populate or willneed advice does not change the bytes.
        let ptr = unsafe { self.ptr.add(aligned) };
        // SAFETY: `ptr..ptr+span` is mapped (see above) and page aligned.
        let rc = unsafe { libc::madvise(ptr.cast(), span, advice) };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EINVAL) {
            // SAFETY: as above; WILLNEED only schedules read-ahead.
            let rc = unsafe { libc::madvise(ptr.cast(), span, libc::MADV_WILLNEED) };
            if rc == 0 {
                return Ok(());
            }
            return Err(io::Error::last_os_error());
        }
        Err(err)
    }
}

const MADV_POPULATE_READ: libc::c_int = 22;

/// The system page size.
pub(crate) fn page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size)
        .ok()
        .filter(|s| *s > 0)
        .unwrap_or(4096)
}

/// A leased byte range of one generation: the only way safe code outside
/// this module gets references into mapped memory.
///
/// Invariant: `[offset, offset + len)` lies inside `map` (checked in
/// [`Region::new`]), and the lease table has registered the range with the
/// kind of access the ticket names, so the references handed out below do
/// not alias a conflicting access for as long as the lease (which owns this
/// region) lives.
pub(crate) struct Region {
    map: Arc<Mapping>,
    ptr: *mut u8,
    len: usize,
}

// SAFETY: `Region` only holds an `Arc<Mapping>` (Send + Sync) and a pointer
// into it; which threads may touch the bytes is decided by the lease.
unsafe impl Send for Region {}
// SAFETY: `&Region` only gives `&[u8]` (shared lease: no writer exists) or
// atomics (atomic lease: only same-width atomic access exists).
unsafe impl Sync for Region {}

impl Region {
    /// Builds the region a ticket grants. Returns `None` when the ticket's
    /// range is outside `map` or asks to write a read-only mapping, so a
    /// bookkeeping bug cannot become an out-of-range access.
    pub(crate) fn new(map: Arc<Mapping>, ticket: &Ticket) -> Option<Region> {
        let len = usize::try_from(ticket.len()).ok()?;
        let start = map.span(ticket.offset(), len)?;
        if ticket.writes() && !map.writable {
            return None;
        }
        if let Some(align) = ticket.atomic_align() {
            if start % align != 0 || len % align != 0 {
                return None;
            }
        }
        let ptr = if len == 0 {
            map.ptr
        } else {
            // SAFETY: `start < map.len` because `len > 0` and
            // `start + len <= map.len`; the result stays in the mapping.
            unsafe { map.ptr.add(start) }
        };
        Some(Region { map, ptr, len })
    }

    /// Length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The bytes, for a shared or exclusive lease.
    pub(crate) fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr..ptr+len` is inside the mapping kept alive by
        // `self.map` (invariant); the lease that owns this region excludes
        // any writer of these bytes while the returned borrow of `self` lives.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    /// The bytes, writable, for an exclusive lease.
    pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`, and the exclusive lease excludes every other
        // reader and writer; `&mut self` makes the borrow unique.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }

    /// The bytes as `AtomicU32`s, for an atomic lease of width 4.
    pub(crate) fn atomics_u32(&self) -> &[AtomicU32] {
        debug_assert_eq!(self.ptr as usize % 4, 0);
        // SAFETY: the ticket was checked for 4-byte alignment of offset and
        // length in `new`, and mappings are page aligned, so `ptr` is aligned
        // for `AtomicU32`; the atomic lease excludes every non-atomic and
        // other-width access to these bytes; the memory lives as long as
        // `self.map`.
        unsafe { std::slice::from_raw_parts(self.ptr.cast::<AtomicU32>(), self.len / 4) }
    }

    /// The bytes as `AtomicU64`s, for an atomic lease of width 8.
    pub(crate) fn atomics_u64(&self) -> &[AtomicU64] {
        debug_assert_eq!(self.ptr as usize % 8, 0);
        // SAFETY: as in `atomics_u32`, with 8-byte alignment checked in `new`.
        unsafe { std::slice::from_raw_parts(self.ptr.cast::<AtomicU64>(), self.len / 8) }
    }

    /// The generation this region belongs to.
    pub(crate) fn mapping(&self) -> &Arc<Mapping> {
        &self.map
    }
}

/// `posix_fallocate(fd, offset, len)`: reserves blocks so that later writes
/// through the mapping cannot fail for lack of space (no `SIGBUS`).
pub(crate) fn fallocate(file: &File, offset: u64, len: u64) -> io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    let off =
        libc::off_t::try_from(offset).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
    let len = libc::off_t::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
    loop {
        // SAFETY: plain syscall on a descriptor `file` keeps open.
        let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), off, len) };
        match rc {
            0 => return Ok(()),
            libc::EINTR => continue,
            // Filesystems without fallocate support: fall back to nothing
            // (the tail stays sparse; documented residual risk).
            libc::EOPNOTSUPP => return Ok(()),
            errno => return Err(io::Error::from_raw_os_error(errno)),
        }
    }
}

/// `fsync` of a directory, so that a new entry in it survives power loss.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Releases the advisory lock taken by [`try_lock`].
pub(crate) fn unlock(file: &File) -> io::Result<()> {
    // SAFETY: plain syscall on a descriptor `file` keeps open.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_UN) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Advisory lock (`flock`) on the whole file, without waiting.
pub(crate) fn try_lock(file: &File, exclusive: bool) -> io::Result<bool> {
    let op = if exclusive {
        libc::LOCK_EX
    } else {
        libc::LOCK_SH
    } | libc::LOCK_NB;
    loop {
        // SAFETY: plain syscall on a descriptor `file` keeps open.
        let rc = unsafe { libc::flock(file.as_raw_fd(), op) };
        if rc == 0 {
            return Ok(true);
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EWOULDBLOCK) => return Ok(false),
            _ => return Err(err),
        }
    }
}
