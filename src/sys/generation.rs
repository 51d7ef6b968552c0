//! [`Generation`]: one `mmap` of the file at one length.

use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use memmap2::{MmapMut, MmapOptions, MmapRaw};

use std::sync::Arc;

use super::gate::Entered;
use super::page_size;
use crate::lease_table::Cleared;
use crate::Mode;

/// Whatever must outlive every generation of an open (its advisory lock,
/// its count in the registry): shared by them all, dropped with the last.
pub(crate) type Keep = Arc<dyn Send + Sync>;

/// What keeps a generation mapped: memmap2 unmaps on drop.
pub(super) enum Backing {
    /// Nothing is mapped: the generation has length zero.
    Empty,
    /// `MAP_SHARED` of the file, read-only or read-write.
    File(MmapRaw),
    /// `MAP_PRIVATE`, writable: copy-on-write pages. Held for its `Drop`.
    Private(#[allow(dead_code)] MmapMut),
}

/// One `mmap` of the file at one length: a mapping *generation*.
///
/// Invariant: `ptr` points to `mapped` bytes that stay mapped (and
/// readable, and writable when `writable`) for as long as this value lives,
/// because `backing` owns the mapping and is dropped only with it. `ptr` is
/// page aligned when `mapped > 0`. Bounds are checked against `len`, which
/// is at most `mapped` and only ever shrinks ([`Generation::cut`]).
pub(crate) struct Generation {
    pub(super) ptr: *mut u8,
    pub(super) mapped: usize,
    /// The bytes in use: `mapped`, or less once the file was cut under a
    /// generation that cannot be remapped (copy-on-write).
    len: AtomicUsize,
    pub(super) writable: bool,
    pub(super) backing: Backing,
    /// The open's descriptor, for updates written with `pwrite` (none for
    /// an empty generation).
    file: Option<Arc<File>>,
    /// What must live as long as this generation maps the file: its open's
    /// advisory lock and its place in the registry's count of mappings
    /// (dropped after `backing`, so after the `munmap`).
    _keep: Option<Keep>,
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
            .field("len", &self.len.load(Ordering::Relaxed))
            .field("writable", &self.writable)
            .finish()
    }
}

impl Generation {
    /// Maps the first `len` bytes of `file` for `mode`, keeping `keep` for
    /// as long as it lives.
    ///
    /// The caller has made the file at least `len` bytes long.
    pub(crate) fn map(
        file: &Arc<File>,
        len: u64,
        mode: Mode,
        keep: Option<Keep>,
    ) -> io::Result<Generation> {
        let len = usize::try_from(len)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "length exceeds usize"))?;
        if len == 0 {
            let mut empty = Generation::empty(mode != Mode::ReadOnly);
            empty._keep = keep;
            empty.file = Some(Arc::clone(file));
            return Ok(empty);
        }
        let mut opts = MmapOptions::new();
        opts.len(len);
        match mode {
            Mode::ReadOnly => {
                let raw = opts.map_raw_read_only(&**file)?;
                Ok(Generation {
                    ptr: raw.as_mut_ptr(),
                    mapped: len,
                    len: AtomicUsize::new(len),
                    writable: false,
                    backing: Backing::File(raw),
                    file: Some(Arc::clone(file)),
                    _keep: keep,
                })
            }
            Mode::ReadWrite => {
                let raw = opts.map_raw(&**file)?;
                Ok(Generation {
                    ptr: raw.as_mut_ptr(),
                    mapped: len,
                    len: AtomicUsize::new(len),
                    writable: true,
                    backing: Backing::File(raw),
                    file: Some(Arc::clone(file)),
                    _keep: keep,
                })
            }
            Mode::CopyOnWrite => {
                // SAFETY: `map_copy` is unsafe because the file may change
                // under the mapping. We never create references to mapped
                // bytes except through leases, whose exclusion covers this
                // process; what other processes do to the file is the
                // assumption stated in the `sys` module docs and the crate's
                // "Soundness" section.
                let mut map = unsafe { opts.map_copy(&**file) }?;
                Ok(Generation {
                    ptr: map.as_mut_ptr(),
                    mapped: len,
                    len: AtomicUsize::new(len),
                    writable: true,
                    backing: Backing::Private(map),
                    file: None,
                    _keep: keep,
                })
            }
        }
    }

    /// A generation of nothing (an empty file, or what a closed mapping's
    /// handles keep).
    pub(crate) fn empty(writable: bool) -> Generation {
        Generation {
            ptr: std::ptr::NonNull::<u8>::dangling().as_ptr(),
            mapped: 0,
            len: AtomicUsize::new(0),
            writable,
            backing: Backing::Empty,
            file: None,
            _keep: None,
        }
    }

    /// Length in bytes.
    pub(crate) fn len(&self) -> u64 {
        self.len.load(Ordering::Acquire) as u64
    }

    /// The descriptor to `pwrite` to: a read-write generation's (a
    /// copy-on-write one has none, its writes must stay private).
    pub(crate) fn file(&self) -> Option<&Arc<File>> {
        self.file.as_ref().filter(|_| self.writable)
    }

    /// Whether stores are allowed (read-write and copy-on-write).
    pub(crate) fn is_writable(&self) -> bool {
        self.writable
    }

    /// Checks that `[offset, offset + len)` lies inside this generation and
    /// returns its start as a `usize`. Overflow counts as outside.
    #[inline]
    pub(super) fn start_of(&self, offset: u64, len: usize) -> Option<usize> {
        let start = usize::try_from(offset).ok()?;
        let end = start.checked_add(len)?;
        (end <= self.len.load(Ordering::Acquire)).then_some(start)
    }

    /// The address of byte `start`, which [`start_of`](Self::start_of)
    /// checked.
    #[inline]
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

    /// [`write`](Self::write) with stores past the cache
    /// ([`super::streaming`]), unfenced: the caller runs
    /// [`super::streaming::fence`] before the bytes may be seen elsewhere
    /// (the actor's batch of updates takes one).
    pub(crate) fn write_streaming_unfenced(&self, cleared: &Cleared, offset: u64, data: &[u8]) {
        self.with_mut(cleared, offset, data.len(), |dst| {
            super::streaming::copy_unfenced(dst, data)
        });
    }

    /// The words overlapping `[start, start + len)` as atomics, for direct
    /// operations, with the byte offset of `start` in the first word.
    ///
    /// Direct operations touch mapped bytes only through these aligned
    /// 8-byte atomics, so that two of them on overlapping bytes never mix
    /// access sizes; a word that reaches past the mapping's length stays
    /// inside its last page, which the kernel maps whole.
    #[inline]
    fn atomic_words(&self, start: usize, len: usize) -> (&[AtomicU64], usize) {
        if len == 0 {
            return (&[], 0);
        }
        let first = start / 8;
        let last = (start + len - 1) / 8;
        // SAFETY: the caller checked `[start, start + len)` with `start_of`,
        // so it lies inside the live mapping (struct invariant); the words
        // covering it start at a multiple of 8 from `ptr`, which is page
        // aligned, so they are aligned for `AtomicU64`, and they end at most
        // 7 bytes past `start + len`, inside the same page (mapped whole);
        // direct operations touch these bytes only through these atomics,
        // and the gate keeps them apart from every plain access (leases and
        // the actor's own copies).
        let words = unsafe {
            std::slice::from_raw_parts(self.ptr_at(first * 8).cast::<AtomicU64>(), last - first + 1)
        };
        (words, start % 8)
    }

    /// A direct load: copies `buf.len()` bytes at `offset` into `buf`
    /// through relaxed atomic word loads. Returns `false` (copying nothing)
    /// when the range is outside this generation.
    #[inline]
    pub(crate) fn read_direct(&self, _entered: &Entered<'_>, offset: u64, buf: &mut [u8]) -> bool {
        let Some(start) = self.start_of(offset, buf.len()) else {
            return false;
        };
        let (words, skip) = self.atomic_words(start, buf.len());
        if skip == 0 && buf.len() % 8 == 0 {
            // Whole words: a load and a store each (the common case, kept
            // short: see `MappedFile::load_fast`).
            // Four words a step, then the rest: fewer instructions per call
            // (see `MappedFile::load_fast`).
            let n = words.len();
            let dst = buf.as_mut_ptr().cast::<u64>();
            let mut i = 0;
            while i + 4 <= n {
                let w = &words[i..i + 4];
                let v = [
                    w[0].load(Ordering::Relaxed),
                    w[1].load(Ordering::Relaxed),
                    w[2].load(Ordering::Relaxed),
                    w[3].load(Ordering::Relaxed),
                ];
                // SAFETY: `words` covers exactly the `n` words of `buf` here
                // (`start` and the length are multiples of 8), so words
                // `i..i + 4` of `buf` are inside it, and ours to write;
                // unaligned writes need no alignment.
                unsafe { dst.wrapping_add(i).cast::<[u64; 4]>().write_unaligned(v) };
                i += 4;
            }
            while i < n {
                let v = words[i].load(Ordering::Relaxed);
                // SAFETY: as above, for word `i < n`.
                unsafe { dst.wrapping_add(i).write_unaligned(v) };
                i += 1;
            }
            return true;
        }
        read_parts(words, skip, buf);
        true
    }

    /// A direct update: copies `data` to `offset` through relaxed atomic
    /// word stores (a compare-and-swap for a word it covers only in part).
    /// Returns `false` (writing nothing) when the range is outside this
    /// generation or the generation is read-only.
    #[inline]
    pub(crate) fn write_direct(&self, _entered: &Entered<'_>, offset: u64, data: &[u8]) -> bool {
        if !self.writable {
            return false;
        }
        let Some(start) = self.start_of(offset, data.len()) else {
            return false;
        };
        let (words, skip) = self.atomic_words(start, data.len());
        if skip == 0 && data.len() % 8 == 0 {
            // Whole words: a load and a store each (the common case, kept
            // short).
            let n = words.len();
            let src = data.as_ptr().cast::<u64>();
            let mut i = 0;
            while i + 4 <= n {
                // SAFETY: `words` covers exactly the `n` words of `data`
                // here, so words `i..i + 4` of `data` are inside it;
                // unaligned reads need no alignment.
                let v = unsafe { src.wrapping_add(i).cast::<[u64; 4]>().read_unaligned() };
                let w = &words[i..i + 4];
                w[0].store(v[0], Ordering::Relaxed);
                w[1].store(v[1], Ordering::Relaxed);
                w[2].store(v[2], Ordering::Relaxed);
                w[3].store(v[3], Ordering::Relaxed);
                i += 4;
            }
            while i < n {
                // SAFETY: as above, for word `i < n`.
                let v = unsafe { src.wrapping_add(i).read_unaligned() };
                words[i].store(v, Ordering::Relaxed);
                i += 1;
            }
            return true;
        }
        write_parts(words, skip, data);
        true
    }

    /// Asks the processor to fetch the first and last cache lines of
    /// `[offset, offset + len)` for writing, ahead of a direct update of
    /// them: a batch of updates issues these first, so that the lines'
    /// fetches overlap instead of each store waiting for its own. Only a
    /// hint: nothing when the range is outside this generation.
    #[inline]
    pub(crate) fn prefetch_write(&self, _entered: &Entered<'_>, offset: u64, len: usize) {
        if !self.writable || len == 0 {
            return;
        }
        let Some(start) = self.start_of(offset, len) else {
            return;
        };
        #[cfg(not(target_arch = "x86_64"))]
        let _ = start;
        #[cfg(target_arch = "x86_64")]
        for at in [start, start + len - 1] {
            // SAFETY: a prefetch never faults and changes no memory (nor
            // what any load or store later sees): it only moves a line
            // into the cache. The address is inside the live mapping
            // (`start_of`) besides.
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_ET0 }>(
                    self.ptr_at(at).cast::<i8>(),
                );
            }
        }
    }

    /// A direct update as [`write_direct`](Self::write_direct), its whole
    /// words stored past the cache ([`super::streaming`]): for the pieces of
    /// large updates.
    pub(crate) fn write_direct_streaming(
        &self,
        entered: &Entered<'_>,
        offset: u64,
        data: &[u8],
    ) -> bool {
        let written = self.write_direct_streaming_unfenced(entered, offset, data);
        super::streaming::fence();
        written
    }

    /// [`write_direct_streaming`](Self::write_direct_streaming) without its
    /// closing fence: the caller runs [`super::streaming::fence`] before it
    /// leaves the gate (one for a run of items).
    pub(crate) fn write_direct_streaming_unfenced(
        &self,
        entered: &Entered<'_>,
        offset: u64,
        data: &[u8],
    ) -> bool {
        if !self.writable {
            return false;
        }
        let Some(start) = self.start_of(offset, data.len()) else {
            return false;
        };
        // The bytes before the first whole word and after the last take
        // the ordinary direct store (a compare-and-swap on a word they share
        // with bytes outside the update).
        let head = ((8 - start % 8) % 8).min(data.len());
        let body = (data.len() - head) / 8 * 8;
        if body == 0 {
            return self.write_direct(entered, offset, data);
        }
        let (words, _) = self.atomic_words(start + head, body);
        super::streaming::store_words_unfenced(words, &data[head..head + body]);
        if head > 0 {
            self.write_direct(entered, offset, &data[..head]);
        }
        if head + body < data.len() {
            self.write_direct(entered, offset + (head + body) as u64, &data[head + body..]);
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
        let used = self.len.load(Ordering::Acquire);
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(used);
        let len = usize::try_from(len).unwrap_or(usize::MAX).min(used - start);
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
    /// Whether every page of `[offset, offset + len)` is in the page cache
    /// (`mincore`): a copy into or out of them faults at most cheaply, with
    /// no read-ahead to run and no fresh page to zero. `false` when the
    /// range is outside this generation, or `mincore` fails.
    ///
    /// Checks at most [`RESIDENT_CHECKED`] bytes from `offset`: a copy
    /// larger than that is judged by its start.
    pub(crate) fn resident(&self, offset: u64, len: u64) -> bool {
        let len = len.min(RESIDENT_CHECKED as u64) as usize;
        let Some(start) = self.start_of(offset, len) else {
            return false;
        };
        if len == 0 {
            return true;
        }
        let page = page_size();
        let aligned = start - start % page;
        let span = len + (start - aligned);
        let pages = span.div_ceil(page);
        let mut vec = [0u8; RESIDENT_CHECKED / 4096 + 2];
        if pages > vec.len() {
            return false;
        }
        // SAFETY: `[aligned, aligned + span)` lies inside the live mapping
        // (`start_of` above, and `aligned <= start`), and `ptr` is page
        // aligned (struct invariant), so the result is too.
        let ptr = unsafe { self.ptr.add(aligned) };
        // SAFETY: `ptr..ptr+span` is mapped and page aligned (above), and
        // `vec` has room for one byte per page of it; `mincore` only reads
        // the page tables and writes `vec`.
        let rc = unsafe { libc::mincore(ptr.cast(), span, vec.as_mut_ptr()) };
        rc == 0 && vec[..pages].iter().all(|&b| b & 1 != 0)
    }

    /// Cuts this generation at `new_len` in place, for one that cannot be
    /// remapped without losing its private pages (copy-on-write) or could
    /// not be remapped: bounds are checked against `new_len` from now on,
    /// and the pages from `new_len` (rounded up to a page) to the end are
    /// replaced with private zero pages, so that nothing in them can fault
    /// on the cut file (`SIGBUS`).
    ///
    /// `cleared` is the lease table's proof that no lease covers
    /// `[new_len, end)` (the shrink's footprint); the caller has drained the
    /// direct path, so no reference into the range exists.
    pub(crate) fn cut(&self, _cleared: &Cleared, new_len: u64) -> io::Result<()> {
        let new_len = usize::try_from(new_len).unwrap_or(usize::MAX);
        if new_len >= self.len.load(Ordering::Acquire) {
            return Ok(());
        }
        self.len.store(new_len, Ordering::Release);
        let page = page_size();
        let Some(start) = new_len.checked_next_multiple_of(page) else {
            return Ok(());
        };
        if start >= self.mapped {
            return Ok(());
        }
        let prot = if self.writable {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        // SAFETY: `[start, mapped)` lies inside this live mapping (checked
        // above; `ptr` is page aligned and so is `start`), which `backing`
        // owns and unmaps whole on drop, replaced pages included;
        // `MAP_FIXED` replaces only those pages, and `cleared` proves no
        // reference into them exists.
        let rc = unsafe {
            libc::mmap(
                self.ptr_at(start).cast(),
                self.mapped - start,
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

/// The most bytes [`Generation::resident`] looks at.
pub(crate) const RESIDENT_CHECKED: usize = 4 << 20;

/// Linux 5.14's `MADV_POPULATE_READ` (older libc crates lack the constant).
const MADV_POPULATE_READ: libc::c_int = 22;

/// The rest of [`Generation::read_direct`]: a range that starts or ends
/// inside a word, copied word by word (out of line, so that the
/// whole-word case stays short where it is inlined).
#[inline(never)]
fn read_parts(words: &[AtomicU64], skip: usize, buf: &mut [u8]) {
    let mut at = 0;
    for (i, word) in words.iter().enumerate() {
        let bytes = word.load(Ordering::Relaxed).to_ne_bytes();
        let from = if i == 0 { skip } else { 0 };
        let n = (8 - from).min(buf.len() - at);
        buf[at..at + n].copy_from_slice(&bytes[from..from + n]);
        at += n;
    }
}

/// The rest of [`Generation::write_direct`], as [`read_parts`]: whole
/// words are stored, a word the range shares with bytes outside it is
/// updated by a compare-and-swap of the word.
#[inline(never)]
fn write_parts(words: &[AtomicU64], skip: usize, data: &[u8]) {
    let mut at = 0;
    for (i, word) in words.iter().enumerate() {
        let from = if i == 0 { skip } else { 0 };
        let n = (8 - from).min(data.len() - at);
        let part = &data[at..at + n];
        if n == 8 {
            let whole: [u8; 8] = part.try_into().expect("eight bytes");
            word.store(u64::from_ne_bytes(whole), Ordering::Relaxed);
        } else {
            let _ = word.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                let mut bytes = old.to_ne_bytes();
                bytes[from..from + n].copy_from_slice(part);
                Some(u64::from_ne_bytes(bytes))
            });
        }
        at += n;
    }
}
