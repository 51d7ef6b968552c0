//! Memory hints on a generation (`madvise`, `mlock` / `munlock`, the
//! huge-page advice, the address range `/proc/self/smaps` knows it by),
//! and two calls on the file: `sync_file_range` and the `RLIMIT_MEMLOCK`
//! the kernel holds `mlock` to.
//!
//! None of these changes a byte that a reference may see: advice and locks
//! act on page tables and residency only. The one advice that can change
//! bytes, `MADV_DONTNEED` on private memory (it throws the private copies
//! away), is refused here as well as by the actor. Faults the kernel takes
//! on our behalf (populating for `mlock`, a page past the end of a file
//! someone truncated) come back as error returns, never as signals.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

use super::generation::{Backing, Generation};
use super::page_size;
use crate::hints::Advice;

fn outside() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, "range outside the mapping")
}

impl Generation {
    /// The whole pages covering `[offset, offset + len)` (the start widened
    /// down to a page), as an address and a length, or `None` for an empty
    /// range. The range must lie inside the generation.
    fn page_span(&self, offset: u64, len: u64) -> io::Result<Option<(*mut u8, usize)>> {
        let len = usize::try_from(len).map_err(|_| outside())?;
        let start = self.start_of(offset, len).ok_or_else(outside)?;
        if len == 0 {
            return Ok(None);
        }
        let aligned = start - start % page_size();
        // `ptr_at` is a wrapping offset: no reference is made, and the
        // address is inside the mapping (`start_of`, `aligned <= start`).
        Ok(Some((self.ptr_at(aligned), len + (start - aligned))))
    }

    /// Whether the generation is private memory that stores may have
    /// changed: copy-on-write pages, the only copy of their bytes.
    fn has_private_bytes(&self) -> bool {
        matches!(self.backing, Backing::Private(_)) && self.writable
    }

    /// `madvise` of the pages covering `[offset, offset + len)`.
    ///
    /// `DontNeed` on writable private memory is refused (`EPERM`): it would
    /// replace private pages under live references with the file's bytes.
    pub(crate) fn advise(&self, offset: u64, len: u64, advice: Advice) -> io::Result<()> {
        if advice == Advice::DontNeed && self.has_private_bytes() {
            return Err(io::Error::from_raw_os_error(libc::EPERM));
        }
        let Some((addr, span)) = self.page_span(offset, len)? else {
            return Ok(());
        };
        let code = match advice {
            Advice::Normal => libc::MADV_NORMAL,
            Advice::Sequential => libc::MADV_SEQUENTIAL,
            Advice::Random => libc::MADV_RANDOM,
            Advice::WillNeed => libc::MADV_WILLNEED,
            Advice::DontNeed => libc::MADV_DONTNEED,
        };
        // SAFETY: `[addr, addr + span)` is page aligned and inside this live
        // mapping (`page_span`), which `self` keeps mapped across the call.
        // None of these advices changes a byte of shared memory; DontNeed
        // on private memory, which would, was refused above.
        let rc = unsafe { libc::madvise(addr.cast(), span, code) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// `MADV_HUGEPAGE` on the whole generation: a hint that the kernel may
    /// back it with transparent huge pages.
    pub(crate) fn advise_huge_pages(&self) -> io::Result<()> {
        if self.mapped == 0 {
            return Ok(());
        }
        // SAFETY: `[ptr, ptr + mapped)` is this live mapping (struct
        // invariant), page aligned; the advice changes no byte.
        let rc = unsafe { libc::madvise(self.ptr.cast(), self.mapped, libc::MADV_HUGEPAGE) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// `mlock` of the pages covering `[offset, offset + len)`.
    pub(crate) fn lock(&self, offset: u64, len: u64) -> io::Result<()> {
        let Some((addr, span)) = self.page_span(offset, len)? else {
            return Ok(());
        };
        // SAFETY: `[addr, addr + span)` is inside this live mapping
        // (`page_span`). Locking changes no byte: it faults the pages in
        // (on writable private memory, by copying them, which keeps their
        // bytes), and a page that cannot be faulted in (a file cut by
        // someone else) is an error return, not a signal.
        let rc = unsafe { libc::mlock(addr.cast_const().cast(), span) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// `munlock` of the pages covering `[offset, offset + len)`.
    pub(crate) fn unlock(&self, offset: u64, len: u64) -> io::Result<()> {
        let Some((addr, span)) = self.page_span(offset, len)? else {
            return Ok(());
        };
        // SAFETY: `[addr, addr + span)` is inside this live mapping
        // (`page_span`); unlocking only lets the pages be evicted again.
        let rc = unsafe { libc::munlock(addr.cast_const().cast(), span) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// The addresses `[start, end)` of the mapping, as `/proc/self/smaps`
    /// lists them, or `None` when nothing is mapped.
    pub(crate) fn address_range(&self) -> Option<(usize, usize)> {
        (self.mapped > 0).then(|| {
            let start = self.ptr as usize;
            (start, start + self.mapped)
        })
    }
}

/// `sync_file_range(SYNC_FILE_RANGE_WRITE)` of `[offset, offset + len)`:
/// starts write-back of the dirty pages there and returns without waiting
/// for it (nor for metadata or the device cache). Not durable.
pub(crate) fn start_writeback(file: &File, offset: u64, len: u64) -> io::Result<()> {
    let too_far = || io::Error::from_raw_os_error(libc::EFBIG);
    let offset = libc::off64_t::try_from(offset).map_err(|_| too_far())?;
    let len = libc::off64_t::try_from(len).map_err(|_| too_far())?;
    loop {
        // SAFETY: a plain syscall on a descriptor `file` keeps open; it
        // touches no memory of this process.
        let rc = unsafe {
            libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE)
        };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINTR) {
            return Err(err);
        }
    }
}

/// The soft `RLIMIT_MEMLOCK` of this process, in bytes: `None` when it is
/// unlimited (or cannot be read).
pub(crate) fn memlock_limit() -> Option<u64> {
    let mut limit = std::mem::MaybeUninit::<libc::rlimit>::uninit();
    // SAFETY: `getrlimit` writes one `rlimit` into the buffer, which is
    // large enough and lives across the call.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, limit.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: `getrlimit` succeeded, so it initialised the buffer.
    let cur = unsafe { limit.assume_init() }.rlim_cur;
    (cur != libc::RLIM_INFINITY).then_some(cur)
}
