//! Async-first, tokio-integrated memory-mapped file I/O.
//!
//! Each mapping is owned by one **actor task** ([`MappingActor`]); a cheap,
//! cloneable handle ([`MappedFile`]) sends it requests (load, update, flush,
//! resize, leases) over a bounded channel and awaits the answers. Nothing
//! parks an executor thread: every syscall that waits for a device
//! (`msync`, `fdatasync`, `ftruncate`, `fallocate`, `mmap`, `munmap`) runs
//! on tokio's blocking pool; a large copy is made by the calling task in
//! short chunks that yield to the scheduler; and waiting for a view to be
//! released is a future, not a lock. Every open of one file in a process is
//! served by one actor, so that the views of one never conflict with
//! another's.
//!
//! # Quick start
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> mmap_actor::Result<()> {
//! use mmap_actor::MappedFile;
//! use std::sync::atomic::Ordering;
//!
//! let dir = tempfile::tempdir().unwrap();
//! let file = MappedFile::create(dir.path().join("data.bin"), 1 << 20).await?;
//! file.update(100, b"hello".to_vec()).await?;     // visible to every handle now
//! let bytes = file.load(100, 5).await?;            // an owned copy
//! assert_eq!(&bytes[..], b"hello");
//!
//! let seg = file.segment(100, 5).await?;           // zero-copy lease
//! assert_eq!(&seg[..], b"hello");
//! drop(seg);
//!
//! let hits = file.atomic_u64(64).await?;           // an AtomicU64 in the file
//! hits.fetch_add(1, Ordering::Relaxed);
//!
//! file.flush().await?;                             // durable when Ok
//! file.resize(4 << 20).await?;                     // grow: `hits` stays valid
//! assert_eq!(file.len(), 4 << 20);
//! file.close().await?;
//! # Ok(()) }
//! ```
//!
//! # The model
//!
//! - **One actor per mapping.** It owns the file, the current mapping
//!   *generation* (one `mmap` at one length), the lease table and the flush
//!   queue. It drains its channel in batches and serves requests in order.
//!   It stops on [`MappedFile::close`], or once every handle is dropped and
//!   what was queued is done (it then flushes one last time, logging a
//!   failure).
//! - **Generations.** A resize maps the file anew; the old generation stays
//!   mapped for as long as a lease holds it. Two `MAP_SHARED` mappings of a
//!   file share its page-cache pages, so old and new generations see the same
//!   bytes.
//! - **Leases.** [`Segment`] (shared `&[u8]`), [`SegmentMut`] (exclusive
//!   `&mut [u8]`) and [`AtomicView`] (`&AtomicU32`, `&AtomicU64`, slices)
//!   are views registered in the actor's lease table. Overlapping segments
//!   coexist; overlapping atomic views of the same width coexist; anything
//!   else that overlaps waits, first come first served, and every waiting
//!   call has a `try_` twin that fails with [`Error::Conflict`]. Dropping a
//!   lease tells the actor, which is how a shrink *awaits* the views it must
//!   outlive. A shrink waits only for leases that overlap the cut tail; a
//!   grow never waits.
//!
//! # Durability
//!
//! - A completed update (or a write through a [`SegmentMut`] or
//!   [`AtomicView`]) is in the kernel's page cache: it survives a crash of
//!   this process without any flush.
//! - [`flush`](MappedFile::flush) makes every write that completed before it
//!   was called survive power loss or a kernel crash: it returns `Ok` only
//!   after `fdatasync` of the file succeeded ([`flush_range`] uses
//!   `msync(MS_SYNC)` on the range). It never uses `MS_ASYNC`, which does
//!   nothing on Linux. Flushes that arrive while a sync runs share the next
//!   one (group commit), and so do flushes through other opens of the file.
//! - Creating a file syncs it and its directory before the file appears;
//!   every resize syncs the new length.
//! - A failed sync is an error for every flush it served, and it
//!   **poisons** the mapping: the kernel reports a write-back error once, so
//!   a later sync could succeed although data was lost. Every later flush
//!   fails with [`Error::Poisoned`] until the file is reopened.
//! - Copy-on-write mappings never write to the file; their flush is an `Ok`
//!   no-op, as it is for anonymous mappings ([`MappedFile::anonymous`]).
//! - [`schedule_flush`](MappedFile::schedule_flush) only *starts* write-back
//!   (`sync_file_range`) and promises nothing about power loss: it spreads
//!   the writing out ahead of a `flush`.
//! - **What a flush costs, by default.** A store through a shared mapping
//!   marks its whole page-cache *folio* dirty, and Linux caches files in
//!   large folios (megabytes, once read or written sequentially), so a flush
//!   after small scattered stores writes megabytes per update. `pwrite`
//!   marks only the blocks it covers. The library chooses: updates that are
//!   rarely flushed are stored through the mapping (the fastest copy), and
//!   once updates are flushed often (a log, a database page: update then
//!   flush), small updates are written with `pwrite` by the calling task,
//!   so that each flush writes about what changed. On the reference machine
//!   32 durable 4 KiB updates put 140 KiB on the device this way, against
//!   32 MiB for the same updates stored through the mapping.
//!   [`OpenOptions::write_through`] fixes `pwrite` from the start.
//!
//! [`flush_range`]: MappedFile::flush_range
//!
//! # Soundness
//!
//! Safe code cannot get a reference into mapped memory that another access
//! through this library conflicts with: the lease table enforces the
//! compatibility rules above, and all pointer arithmetic (bounds checked
//! against the length of the lease's own generation) lives in one private
//! module (`src/sys/`). What this library cannot control is *other
//! processes*, or other code in this process using the same file without
//! it. `memmap2` makes its file-mapping constructors `unsafe` for exactly
//! this reason; this crate takes that assumption on deliberately, so that
//! its own API can be safe, and states here what breaking it costs:
//!
//! - If the file is **truncated by someone else** while mapped, touching a
//!   page past the new end raises `SIGBUS`, which kills the process.
//!   [`OpenOptions::lock`] takes an advisory `flock` so cooperating mappings
//!   refuse to map a file another one has mapped for writing.
//! - If the file is **written by someone else**, the bytes behind a
//!   [`Segment`] may change while you read them (you see torn data, as with
//!   any shared memory).
//! - Growing reserves blocks with `posix_fallocate` so that a full disk is an
//!   `ENOSPC` error from [`resize`](MappedFile::resize), not a `SIGBUS`
//!   later. With [`OpenOptions::preallocate`]`(false)` (huge sparse files)
//!   that protection is off.
//!
//! # Consistency of small operations
//!
//! Loads and updates of up to [`DIRECT_MAX`] bytes (updates written with
//! `pwrite`: up to [`INLINE_COPY_MAX`]) on a mapping with no live lease, no
//! waiting request and no resize in progress are copied by the calling task
//! itself, through a lock-free gate that the actor closes before it touches
//! bytes, grants a lease or replaces the mapping. The caller's side of the
//! gate has no locked instruction where the kernel offers `membarrier(2)`
//! (the actor runs one process-wide barrier per burst of leases instead;
//! the environment variable `MMAP_ACTOR_SYMMETRIC_GATE`, read once per
//! process, selects the symmetric form, whose model loom checks). Larger
//! copies are made by the calling task too, in chunks that let other tasks
//! run: under a temporary lease of the range, or, from the future of a
//! multi-thread runtime's `block_on` (where a round trip to the actor would
//! wake two parked threads), through the gate one chunk per entry, with the
//! rest under a lease if the actor closes the gate meanwhile. A large
//! update whose future is dropped mid-way leaves each 64 KiB chunk either
//! old or new, and one that races a shrink of its range may be applied in
//! part before it fails. Everything above still holds for them:
//! bounds are checked against the current generation, a completed update is
//! visible to every later load, requests from one handle keep their order,
//! and leases exclude them. What they do not promise is atomicity *between
//! concurrent* small requests from different tasks on the same bytes: two
//! overlapping updates racing each other (or an update racing a load) may
//! interleave byte by byte, as they would through any shared memory. Use
//! [`MappedFile::modify`], a [`SegmentMut`] or an [`AtomicView`] when a
//! multi-byte value must change all at once for concurrent readers.
//!
//! # Streams
//!
//! Updates stream in through an [`UpdateSink`] (a `futures::Sink` of
//! `(offset, Bytes)`, batched and backpressured; the file always holds a
//! prefix of what was sent) and records through an [`Appender`] (a cursor
//! the actor owns, shared by clones, growing the file in steps, durable by
//! group commit). Changes stream out through [`MappedFile::subscribe`]: every
//! change of a range from every write path, in the order applied, with
//! [`Error::Lagged`] instead of a silent gap. While a subscription covers
//! some bytes, small updates of them go through the actor (which reports
//! them) instead of the direct path. See [`stream`] for those and for
//! chunks, readers and writers.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> mmap_actor::Result<()> {
//! use bytes::Bytes;
//! use futures::{SinkExt, StreamExt};
//! # let dir = tempfile::tempdir().unwrap();
//! let file = mmap_actor::MappedFile::create(dir.path().join("s"), 1 << 20).await?;
//! let mut changes = file.subscribe(0..4096);
//! let mut sink = file.update_sink();
//! sink.send((0, Bytes::from_static(b"in"))).await?;
//! assert_eq!(changes.next().await.unwrap()?.offset(), 0);
//! let log = file.appender(4096).durable(true);
//! assert_eq!(log.append(b"record".to_vec()).await?, 4096);
//! # Ok(()) }
//! ```
//!
//! # Waiting on yourself
//!
//! A task that holds a lease and then awaits a request that conflicts with
//! it (an update of the same bytes, a shrink that cuts it) never completes:
//! the request waits for the lease, and the lease waits for the task. The
//! actor logs a warning (`waits on a lease taken by the same task`) when a
//! request waits on a lease its own caller holds — a spawned task, or, for
//! code outside any task (a `block_on` body, `#[tokio::main]`), the thread.
//! It does not fail the request: another branch of the same task (`join!`,
//! `select!`) may still release the lease. The `try_` twins fail fast
//! instead.
//!
//! A request that is *compatible* with the leases its caller holds does not
//! wait behind requests queued for those leases: a task holding a
//! [`Segment`] can load or take another segment of the same bytes while a
//! writer waits for it (otherwise the writer would wait for the task, and
//! the task for the writer). Writers are not starved by this: requests from
//! tasks that hold nothing still queue behind the writer, and the writer is
//! served as soon as the holder lets go.
//!
//! # Bad input
//!
//! Every call checks its arguments in one order and reports the first thing
//! wrong: the mapping's mode ([`Error::ReadOnly`]), then the alignment of an
//! atomic view ([`Error::Misaligned`]), then the range
//! ([`Error::OutOfBounds`], with overflow-free arithmetic: an `offset + len`
//! that overflows `u64` is out of bounds). Lengths no file can have are
//! [`Error::TooLarge`]; FIFOs, sockets, devices and `/proc` files are
//! [`Error::Unsupported`]. Nothing panics, and a failed open or resize
//! leaves the file as it was.
//!
//! # Queues and backpressure
//!
//! Requests wait in two bounded places: each open's channel
//! ([`OpenOptions::channel_capacity`]) and the lease table's queue of
//! requests waiting for their bytes (16 Ki requests; while it is full the
//! actor stops reading the channels, so callers wait for room). A request
//! whose future is dropped is forgotten at once: it neither stays queued
//! nor keeps the direct path closed.
#![deny(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

mod actor;
mod anonymous;
mod blocking;
mod disk;
mod error;
pub mod fs;
mod handle;
mod hints;
mod lease;
mod lease_table;
mod loom;
mod options;
mod policy;
mod region;
mod request;
mod smaps;
pub mod stream;
mod sys;
mod watch;

pub use actor::{MappingActor, INLINE_COPY_MAX};
pub use error::{Error, Result};
pub use handle::{LoadInto, MappedFile, Update, UpdateFrom, DIRECT_MAX, PREWARM_STEP};
pub use hints::{Advice, PrewarmProgress, Progress};
pub use lease::{AtomicReader, AtomicTarget, AtomicView, Segment, SegmentMut};
pub use options::{Mode, OpenOptions, DEFAULT_CHANNEL_CAPACITY};
pub use policy::FlushPolicy;
pub use stream::{
    AppendSink, Appender, Change, ChangeKind, Chunks, ChunksMut, Reader, Subscription, UpdateSink,
    Writer,
};
pub use watch::{watch, FileEvent, Watch};
