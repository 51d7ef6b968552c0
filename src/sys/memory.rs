//! What `Generation::map` and `std` do not make: an in-memory file
//! (`memfd_create`) for anonymous mappings, and a read-only private
//! mapping (copy-on-write with writes refused).

use std::ffi::CStr;
use std::fs::File;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

use super::generation::{Generation, Keep};
use crate::Mode;

/// A new in-memory file named `name` (`memfd_create`, close-on-exec), of
/// length zero. With `hugetlb`, its pages are huge pages (`MFD_HUGETLB`):
/// creating it fails where the kernel has no hugetlbfs, and its length
/// must then stay a multiple of the huge page size.
pub(crate) fn memfd(name: &CStr, hugetlb: bool) -> io::Result<File> {
    let flags = libc::MFD_CLOEXEC | if hugetlb { libc::MFD_HUGETLB } else { 0 };
    // SAFETY: `name` is a NUL-terminated string that lives across the
    // call; `memfd_create` reads it and touches no other memory.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new descriptor that nothing else owns.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    Ok(File::from(owned))
}

impl Generation {
    /// A copy-on-write generation whose pages are read-only
    /// (`OpenOptions::cow_writable(false)`): private, so it never writes
    /// the file, and `PROT_READ`, so nothing can store through it.
    pub(crate) fn map_cow_read_only(
        file: &std::sync::Arc<File>,
        len: u64,
        keep: Option<Keep>,
    ) -> io::Result<Generation> {
        let mut generation = Generation::map(file, len, Mode::CopyOnWrite, keep)?;
        generation.writable = false;
        if generation.mapped == 0 {
            return Ok(generation);
        }
        // SAFETY: `[ptr, ptr + mapped)` is the mapping this generation has
        // just made (struct invariant), page aligned; no reference into it
        // exists yet, so taking write access away breaks no borrow. The
        // generation is not writable from here on, so nothing stores.
        let rc =
            unsafe { libc::mprotect(generation.ptr.cast(), generation.mapped, libc::PROT_READ) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(generation)
    }
}
