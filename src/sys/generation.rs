//! [`Generation`]: one `mmap` of the file at one length.

use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicU8, Ordering};

use memmap2::{MmapMut, MmapOptions, MmapRaw};

use std::sync::Arc;

use super::file::FileLock;
use super::gate::Entered;
use super::page_size;
use crate::lease_table::Cleared;
use crate::Mode;

/// What keeps a generation mapped: memmap2 unmaps on drop.
enum Backing {
    /// Nothing is mapped: the generation has length zero.
    Empty,
    /// `MAP_SHARED` of the file, read-only or read-write.
    File(MmapRaw),
    /// `MAP_PRIVATE`, writable: copy-on-write pages. Held for its `Drop`.
    Private(#[allow(dead_code)] MmapMut),
}

/// One `mmap` of the file at one length: a mapping *generation*.
///
/// Invariant: `ptr` points to `len` bytes that stay mapped (and readable,
/// and writable when `writable`) for as long as this value lives, because
/// `backing` owns the mapping and is dropped only with it. `ptr` is page
/// aligned when `len > 0`.
pub(crate) struct Generation {
    ptr: *mut u8,
    len: usize,
    writable: bool,
    backing: Backing,
    /// The file's advisory lock, if the open took one: held for as long as
    /// this generation maps the file (dropped after `backing`, so after the
    /// `munmap`).
    _lock: Option<Arc<FileLock>>,
}

// SAFETY: `Generation` is a pointer to memory it owns through `backing`;
// the memory is not tied to any thread. Concurrent access to the bytes is
// governed by the lease table (the `Cleared`/`Ticket` proofs) and the gate
// (the `Entered` proof), not by the thread that holds the `Generation`.
unsafe impl Send for Generation {}
// SAFETY: every method taking `&self` that touches the bytes either requires
// a lease-table proof of exclusion or goes through atomics under the gate;
// see the module documentation of `sys`.
unsafe impl Sync for Generation {}

impl std::fmt::Debug for Generation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generation")
            .field("len", &self.len)
            .field("writable", &self.writable)
            .finish()
    }
}

impl Generation {
    /// Maps the first `len` bytes of `file` for `mode`, keeping `lock`
    /// (the open's advisory lock, if any) for as long as it lives.
    ///
    /// The caller has made the file at least `len` bytes long.
    pub(crate) fn map(
        file: &File,
        len: u64,
        mode: Mode,
        lock: Option<Arc<FileLock>>,
    ) -> io::Result<Generation> {
        let len = usize::try_from(len)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "length exceeds usize"))?;
        if len == 0 {
            let mut empty = Generation::empty(mode != Mode::ReadOnly);
            empty._lock = lock;
            return Ok(empty);
        }
        let mut opts = MmapOptions::new();
        opts.len(len);
        match mode {
            Mode::ReadOnly => {
                let raw = opts.map_raw_read_only(file)?;
                Ok(Generation {
                    ptr: raw.as_mut_ptr(),
                    len,
                    writable: false,
                    backing: Backing::File(raw),
                    _lock: lock,
                })
            }
            Mode::ReadWrite => {
                let raw = opts.map_raw(file)?;
                Ok(Generation {
                    ptr: raw.as_mut_ptr(),
                    len,
                    writable: true,
                    backing: Backing::File(raw),
                    _lock: lock,
                })
            }
            Mode::CopyOnWrite => {
                // SAFETY: `map_copy` is unsafe because the file may change
                // under the mapping. We never create references to mapped
                // bytes except through leases, whose exclusion covers this
                // process; what other processes do to the file is the
                // assumption stated in the `sys` module docs and the crate's
                // "Soundness" section.
                let mut map = unsafe { opts.map_copy(file) }?;
                Ok(Generation {
                    ptr: map.as_mut_ptr(),
                    len,
                    writable: true,
                    backing: Backing::Private(map),
                    _lock: lock,
                })
            }
        }
    }

    /// A generation of nothing (an empty file, or what a closed mapping's
    /// handles keep).
    pub(crate) fn empty(writable: bool) -> Generation {
        Generation {
            ptr: std::ptr::NonNull::<u8>::dangling().as_ptr(),
            len: 0,
            writable,
            backing: Backing::Empty,
            _lock: None,
        }
    }

    /// Length in bytes.
    pub(crate) fn len(&self) -> u64 {
        self.len as u64
    }

    /// Whether stores are allowed (read-write and copy-on-write).
    pub(crate) fn is_writable(&self) -> bool {
        self.writable
    }

    /// Checks that `[offset, offset + len)` lies inside this generation and
    /// returns its start as a `usize`. Overflow counts as outside.
    pub(super) fn start_of(&self, offset: u64, len: usize) -> Option<usize> {
        let start = usize::try_from(offset).ok()?;
        let end = start.checked_add(len)?;
        (end <= self.len).then_some(start)
    }

    /// The address of byte `start`, which [`start_of`](Self::start_of)
    /// checked.
    pub(super) fn ptr_at(&self, start: usize) -> *mut u8 {
        self.ptr.wrapping_add(start)
    }

    /// Copies `buf.len()` bytes at `offset` into `buf`.
    ///
    /// Panics on an out-of-range request: the actor checked the range
    /// already, so this is an internal bug, caught by the actor's panic
    /// isolation rather than turned into an out-of-range read.
    pub(crate) fn read(&self, _cleared: &Cleared, offset: u64, buf: &mut [u8]) {
        let start = self
            .start_of(offset, buf.len())
            .expect("read range checked by the actor");
        if buf.is_empty() {
            return;
        }
        // SAFETY: `start_of` proved `[start, start + buf.len())` is inside
        // the live mapping (struct invariant), `buf` is a distinct Rust
        // allocation so the ranges do not overlap, and `Cleared` proves no
        // writer (lease or update) covers these bytes right now.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr_at(start), buf.as_mut_ptr(), buf.len()) }
    }

    /// Copies `data` to `offset`.
    ///
    /// Panics on an out-of-range request or a read-only generation
    /// (internal bugs; see [`Generation::read`]).
    pub(crate) fn write(&self, _cleared: &Cleared, offset: u64, data: &[u8]) {
        assert!(self.writable, "write to a read-only mapping");
        let start = self
            .start_of(offset, data.len())
            .expect("write range checked by the actor");
        if data.is_empty() {
            return;
        }
        // SAFETY: in range of the live, writable mapping (struct invariant
        // and `start_of`); `data` cannot overlap the mapping's bytes unless
        // it is itself a lease, and `Cleared` proves no lease covers them.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr_at(start), data.len()) }
    }

    /// The bytes `[start, start + len)` as atomics, for direct operations.
    fn atomic_bytes(&self, start: usize, len: usize) -> &[AtomicU8] {
        if len == 0 {
            return &[];
        }
        // SAFETY: the caller checked `[start, start + len)` with `start_of`,
        // so it lies inside the live mapping (struct invariant); `AtomicU8`
        // has the size and alignment of `u8`; direct operations touch these
        // bytes only through atomics, and the gate keeps them apart from
        // every plain access (leases and the actor's own copies).
        unsafe { std::slice::from_raw_parts(self.ptr_at(start).cast::<AtomicU8>(), len) }
    }

    /// A direct load: copies `buf.len()` bytes at `offset` into `buf`
    /// through relaxed atomic byte loads. Returns `false` (copying nothing)
    /// when the range is outside this generation.
    pub(crate) fn read_direct(&self, _entered: &Entered<'_>, offset: u64, buf: &mut [u8]) -> bool {
        let Some(start) = self.start_of(offset, buf.len()) else {
            return false;
        };
        let len = buf.len();
        for (dst, src) in buf.iter_mut().zip(self.atomic_bytes(start, len)) {
            *dst = src.load(Ordering::Relaxed);
        }
        true
    }

    /// A direct update: copies `data` to `offset` through relaxed atomic
    /// byte stores. Returns `false` (writing nothing) when the range is
    /// outside this generation or the generation is read-only.
    pub(crate) fn write_direct(&self, _entered: &Entered<'_>, offset: u64, data: &[u8]) -> bool {
        if !self.writable {
            return false;
        }
        let Some(start) = self.start_of(offset, data.len()) else {
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
        let start = self
            .start_of(offset, len)
            .expect("range checked by the actor");
        if len == 0 {
            return f(&mut []);
        }
        // SAFETY: in range of the live, writable mapping; `Cleared` proves
        // nothing else in this process reads or writes these bytes, and the
        // slice does not outlive this call (nor the `&self` that keeps the
        // mapping). Other processes writing the file meanwhile is the
        // assumption of the `sys` module docs.
        let bytes = unsafe { std::slice::from_raw_parts_mut(self.ptr_at(start), len) };
        f(bytes)
    }

    /// `msync(MS_SYNC)` of the pages covering `[offset, offset + len)`.
    pub(crate) fn sync_range(&self, offset: u64, len: u64) -> io::Result<()> {
        let Backing::File(raw) = &self.backing else {
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
            .and_then(|len| self.start_of(offset, len))
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
        // SAFETY: `[aligned, aligned + span)` lies inside the live mapping
        // (`start_of` above, and `aligned <= start`), and `ptr` is page
        // aligned (struct invariant), so the result is too.
        let ptr = unsafe { self.ptr.add(aligned) };
        // SAFETY: `ptr..ptr+span` is mapped (see above) and page aligned;
        // a populate advice does not change the bytes, and a page that
        // cannot be faulted in is an `EFAULT` return, not a signal.
        let rc = unsafe { libc::madvise(ptr.cast(), span, MADV_POPULATE_READ) };
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

impl Generation {
    /// Replaces the pages from `from` (rounded up to a page) to the end of
    /// this generation with private zero pages, in place: once the file is
    /// cut at `from`, nothing in them can fault on the file (`SIGBUS`). For
    /// a copy-on-write generation, whose private pages a remap would lose.
    ///
    /// `cleared` is the lease table's proof that no lease covers
    /// `[from, end)` (the shrink's footprint); the caller has drained the
    /// direct path, so no reference into the range exists.
    pub(crate) fn detach_tail(&self, _cleared: &Cleared, from: u64) -> io::Result<()> {
        let page = page_size() as u64;
        let Some(start) = from.checked_next_multiple_of(page) else {
            return Ok(());
        };
        let Some(start) = usize::try_from(start).ok().filter(|s| *s < self.len) else {
            return Ok(());
        };
        let prot = if self.writable {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        // SAFETY: `[start, len)` lies inside this live mapping (checked
        // above; `ptr` is page aligned and so is `start`), which `backing`
        // owns and unmaps whole on drop, replaced pages included;
        // `MAP_FIXED` replaces only those pages, and `cleared` proves no
        // reference into them exists.
        let rc = unsafe {
            libc::mmap(
                self.ptr_at(start).cast(),
                self.len - start,
                prot,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if rc == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// Linux 5.14's `MADV_POPULATE_READ` (older libc crates lack the constant).
const MADV_POPULATE_READ: libc::c_int = 22;
