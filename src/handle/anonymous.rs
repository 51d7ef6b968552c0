//! Anonymous mappings: [`MappedFile::anonymous`] and
//! [`MappedFile::anonymous_huge`].

use std::sync::Arc;

use super::MappedFile;
use crate::actor::registry::Slot;
use crate::anonymous::{self, Memory};
use crate::blocking;
use crate::error::{Error, Result};
use crate::options::OpenOptions;

impl MappedFile {
    /// A mapping of `len` zero bytes of memory, with no file on any file
    /// system behind it: scratch space, or state shared by tasks, served by
    /// its own actor exactly like a file (loads, updates, leases, atomic
    /// views, resize; the direct path for small calls).
    ///
    /// The memory is an in-memory file (`memfd_create`), so that a resize
    /// keeps leases of old generations coherent with the new one, as for a
    /// file on disk. Its pages are allocated when first touched (a grow
    /// reserves nothing: memory that cannot be had is the OOM killer's
    /// business, as for any anonymous memory) and freed when the mapping
    /// and its last lease are gone. Its mode is [`Mode::ReadWrite`](crate::Mode::ReadWrite);
    /// [`path`](Self::path) is `memfd:anonymous` (and `/proc/self/maps`
    /// lists it as `/memfd:anonymous`). It is not in the process's registry
    /// of mapped files: every anonymous mapping is its own.
    ///
    /// [`flush`](Self::flush), [`flush_range`](Self::flush_range) and
    /// [`schedule_flush`](Self::schedule_flush) are `Ok` no-ops: there is
    /// nothing to be durable on. [`advise`](Self::advise) refuses
    /// [`Advice::DontNeed`](crate::Advice::DontNeed), and
    /// [`watch`](Self::watch) has no file to watch.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> mmap_actor::Result<()> {
    /// use mmap_actor::MappedFile;
    /// let scratch = MappedFile::anonymous(64 << 20).await?;
    /// scratch.update(0, &b"scratch"[..]).await?;
    /// let seg = scratch.segment(0, 7).await?;
    /// scratch.resize(128 << 20).await?; // `seg` stays valid
    /// assert_eq!(&seg[..], b"scratch");
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::TooLarge`] for a length no file can have; [`Error::Io`]
    /// (`"memfd_create"`, `"ftruncate"`, `"mmap"`) when the kernel refuses
    /// the memory (`ENOMEM`, `EMFILE`); [`Error::NoRuntime`] outside a
    /// tokio runtime.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future leaves nothing behind: the memory is freed.
    pub async fn anonymous(len: u64) -> Result<MappedFile> {
        open_anonymous("anonymous", len, false).await
    }

    /// [`anonymous`](Self::anonymous), backed by huge pages where the
    /// kernel can give them.
    ///
    /// First choice: huge pages from the kernel's reserved pool (hugetlbfs,
    /// `MFD_HUGETLB`; `vm.nr_hugepages`), when `len` is a non-zero multiple
    /// of the huge page size (2 MiB on x86-64) and the pool has `len` bytes
    /// free. They are reserved at once, so a later access cannot find none;
    /// every resize must then keep the length a multiple of the huge page
    /// size ([`Error::Misaligned`] otherwise, the length unchanged).
    /// Otherwise: plain memory with the transparent-huge-page advice, as
    /// [`OpenOptions::huge_pages`] gives (which the kernel follows for
    /// memory files only when
    /// `/sys/kernel/mm/transparent_hugepage/shmem_enabled` allows it).
    /// [`is_hugepage_backed`](Self::is_hugepage_backed) says which it got.
    ///
    /// # Errors
    ///
    /// As [`anonymous`](Self::anonymous).
    ///
    /// # Cancel safety
    ///
    /// As [`anonymous`](Self::anonymous).
    pub async fn anonymous_huge(len: u64) -> Result<MappedFile> {
        open_anonymous("anonymous_huge", len, true).await
    }
}

/// Makes the memory, then opens it like a probed file, with a slot of its
/// own (not the registry's: nothing else can open it).
async fn open_anonymous(op: &'static str, len: u64, huge: bool) -> Result<MappedFile> {
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(Error::NoRuntime { op });
    }
    let probe = blocking::run(op, move || {
        // As for files (`MappedFile::open_unspawned`).
        crate::sys::streaming::cache_size();
        anonymous::probe(len, huge)
    })
    .await?;
    let hugetlb = matches!(probe.anonymous, Some(Memory::Hugetlb { .. }));
    let mut opts = OpenOptions::new();
    // Huge pages from the pool are reserved as they are added (a fault
    // that finds none is a `SIGBUS`); plain memory is allocated on touch.
    opts.preallocate(hugetlb).huge_pages(huge && !hugetlb);
    let slot = Arc::new(Slot::default());
    let (file, actor, _) = opts.open_probed(&slot, probe).await?;
    tokio::spawn(actor.run());
    Ok(file)
}
