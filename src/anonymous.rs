//! Anonymous mappings: memory with no file on any file system, served by
//! an actor like any file (`MappedFile::anonymous`, `anonymous_huge`).
//!
//! The memory is an in-memory file (`memfd_create`) mapped `MAP_SHARED`,
//! not an anonymous `mmap`: a resize maps the memory file anew, and the
//! old generations that leases still hold share its pages with the new
//! one, exactly as two mappings of a file on disk share its page cache. An
//! anonymous `mmap` could only be copied or moved (`mremap`), which would
//! leave a lease's bytes behind.
//!
//! This is the blocking half of opening one: making the memory file and
//! giving it its length (the async half is `src/handle/anonymous.rs`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::actor::registry::FileId;
use crate::disk::{self, Probe};
use crate::error::{Error, Result};
use crate::sys::memory::memfd;

/// The path an anonymous mapping reports (`MappedFile::path`) and names in
/// errors. `/proc/self/maps` lists its pages as `/memfd:anonymous`.
pub(crate) const PATH: &str = "memfd:anonymous";

/// What an anonymous mapping's memory is made of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Memory {
    /// Ordinary shared-memory pages (which transparent huge pages may
    /// back, when the kernel allows it for shared memory).
    Plain,
    /// Huge pages of `page` bytes from the kernel's reserved pool
    /// (hugetlbfs): the length stays a multiple of `page`.
    Hugetlb {
        /// The huge page size in bytes.
        page: u64,
    },
}

impl Memory {
    /// The multiple every length of the mapping must be.
    pub(crate) fn len_multiple(self) -> u64 {
        match self {
            Memory::Plain => 1,
            Memory::Hugetlb { page } => page,
        }
    }
}

/// Makes the memory of an anonymous mapping of `len` bytes. With `huge`,
/// huge pages from the reserved pool are tried first, and reserved at once
/// (so that a later fault cannot find none: a `SIGBUS`); when the pool
/// cannot give them, or `len` is not a multiple of their size, plain
/// memory is used (the caller then advises transparent huge pages).
pub(crate) fn probe(len: u64, huge: bool) -> Result<Probe> {
    disk::check_len(len)?;
    let path = Path::new(PATH);
    if huge && len > 0 {
        match hugetlb(len, path) {
            Ok(probe) => return Ok(probe),
            Err(err) => tracing::debug!(%err, len, "no huge pages from the pool; plain memory"),
        }
    }
    let file = memfd(c"anonymous", false).map_err(|e| Error::io("memfd_create", path, e))?;
    // Plain memory is not reserved up front: like anonymous memory, its
    // pages are allocated when first touched.
    disk::set_length(&file, path, 0, len, false)?;
    made(file, len, Memory::Plain)
}

/// A memory file of huge pages, `len` bytes of them reserved.
fn hugetlb(len: u64, path: &Path) -> Result<Probe> {
    let file = memfd(c"anonymous", true).map_err(|e| Error::io("memfd_create", path, e))?;
    let meta = file.metadata().map_err(|e| Error::io("stat", path, e))?;
    // hugetlbfs reports its page size as the block size.
    let page = std::os::unix::fs::MetadataExt::blksize(&meta);
    if page == 0 || len % page != 0 {
        return Err(Error::Misaligned {
            offset: len,
            align: page,
        });
    }
    disk::set_length(&file, path, 0, len, true)?;
    made(file, len, Memory::Hugetlb { page })
}

fn made(file: std::fs::File, len: u64, memory: Memory) -> Result<Probe> {
    let path = PathBuf::from(PATH);
    let meta = file.metadata().map_err(|e| Error::io("stat", &path, e))?;
    Ok(Probe {
        file: Arc::new(file),
        id: FileId::of(&meta),
        path,
        len,
        // Made at its final length: nothing to resize after the map.
        created: true,
        lock: None,
        cow_writable: true,
        anonymous: Some(memory),
    })
}
