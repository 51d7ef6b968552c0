//! The one module allowed `unsafe`: mapped memory and the few syscalls
//! `memmap2` and `std` do not offer.
//!
//! - [`generation`]: one `mmap` of the file at one length, the copies the
//!   actor and the direct path make into and out of it, and its `msync` /
//!   `madvise` calls;
//! - [`leased`]: a leased byte range of a generation, the only way safe code
//!   elsewhere gets references into mapped memory;
//! - [`gate`]: the direct-access gate and the cells it guards, and
//!   [`barrier`]: the process-wide barrier that spares its direct operations
//!   every locked instruction;
//! - [`file`]: `posix_fallocate`, `flock` and directory syncs;
//! - [`hints`]: `madvise`, `mlock`, `sync_file_range`, `RLIMIT_MEMLOCK`;
//! - [`memory`]: in-memory files (`memfd_create`) and read-only
//!   copy-on-write generations;
//! - [`streaming`]: stores that bypass the cache, for large copies.
//!
//! Everything outside this module reaches mapped bytes through three doors,
//! each demanding a proof: the actor's copies take a `Cleared` proof from the
//! lease table (`crate::lease_table`), leases are built from a `Ticket` the
//! table issued, and direct operations take an `Entered` proof from the gate.
//! Bounds are checked here again (against the generation's own length) so
//! that a bug elsewhere can produce a wrong answer but never an out-of-range
//! access. What this module cannot check is *exclusion*: that no plain
//! reference and no other write or atomic view covers the same bytes. That
//! is the lease table's invariant and the gate's protocol.
//!
//! One assumption is not ours to check: that no other process truncates the
//! file or writes it while we hold references into it. `memmap2` makes its
//! file-mapping constructors `unsafe` for exactly this reason; this crate
//! takes the assumption on deliberately and states it to its users (crate
//! docs, "Soundness"), where it also says what happens when it is broken.
#![allow(unsafe_code)]

pub(crate) mod barrier;
pub(crate) mod file;
pub(crate) mod gate;
pub(crate) mod generation;
pub(crate) mod hints;
pub(crate) mod leased;
pub(crate) mod memory;
pub(crate) mod streaming;

pub(crate) use self::generation::Generation;
pub(crate) use self::leased::LeasedBytes;

/// The system page size.
pub(crate) fn page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size)
        .ok()
        .filter(|s| *s > 0)
        .unwrap_or(4096)
}
