//! The write path: borrowed-slice calls (`update_from`, `load_into`),
//! vectored updates, zeroing, `grow_to`, and the one body every load and
//! update goes through.
//!
//! Which way a copy goes:
//!
//! - **small** (up to `DIRECT_MAX`, or `INLINE_COPY_MAX` when updates are
//!   written with `pwrite`): the calling task copies through the gate, no
//!   round trip, no allocation;
//! - **medium** (up to `INLINE_COPY_MAX`): one request; the actor copies
//!   (a borrowed slice is copied into the request first, so a dropped
//!   future never leaves the actor holding a borrow);
//! - **large**: the calling task copies itself, in chunks, yielding to the
//!   scheduler whenever about 50 µs of copying have passed: no thread
//!   hand-off, and no executor thread held for long. From a task it first
//!   takes a temporary lease of the range (one round trip, cheap there) and
//!   copies with `memcpy`; from a multi-thread runtime's `block_on`, where
//!   a round trip wakes two parked threads, it copies through the gate one
//!   chunk per entry (atomic words), and if a lease or a resize closes the
//!   gate between two chunks, the rest goes under a lease
//!   ([`round_trips_are_dear`]). Dropping the future mid-copy leaves the
//!   range holding, chunk by chunk, old or new bytes.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::direct::{spend_budget, ZEROS};
use super::{request_span, MappedFile};
use crate::blocking;
use crate::error::{Error, Result};
use crate::lease::{Segment, SegmentMut};
use crate::lease_table::Access;
use crate::region;
use crate::request::{Inline, OnConflict, Request};
use crate::{DIRECT_MAX, INLINE_COPY_MAX};

/// A large copy's piece.
const CHUNK: usize = 64 * 1024;

/// How long a large copy runs before it lets other tasks in.
const SLICE: Duration = Duration::from_micros(50);

/// Lets other tasks in whenever `SLICE` has passed since it last did.
struct Yielder {
    since: Instant,
}

impl Yielder {
    fn new() -> Yielder {
        Yielder {
            since: Instant::now(),
        }
    }

    async fn tick(&mut self) {
        if self.since.elapsed() >= SLICE {
            tokio::task::yield_now().await;
            self.since = Instant::now();
        }
    }
}

/// Copies `parts` into `dst` back to back and zeros the rest of it, in
/// chunks, letting other tasks in between.
async fn copy_yielding(dst: &mut [u8], parts: &[&[u8]]) {
    let mut clock = Yielder::new();
    let mut at = 0;
    for part in parts {
        for piece in part.chunks(CHUNK) {
            dst[at..at + piece.len()].copy_from_slice(piece);
            at += piece.len();
            clock.tick().await;
        }
    }
    for piece in dst[at..].chunks_mut(CHUNK) {
        piece.fill(0);
        clock.tick().await;
    }
}

/// Copies `src` into `dst` in chunks, letting other tasks in between.
async fn copy_out_yielding(dst: &mut [u8], src: &[u8]) {
    let mut clock = Yielder::new();
    for (d, s) in dst.chunks_mut(CHUNK).zip(src.chunks(CHUNK)) {
        d.copy_from_slice(s);
        clock.tick().await;
    }
}

/// Whether a large copy should go through the gate instead of under a
/// temporary lease. The lease costs a round trip to the actor and then
/// lets the copy run as `memcpy`; the gate needs no round trip, but copies
/// with relaxed atomic words (other direct operations may touch the same
/// bytes), about a third slower here: 5 against 7 GiB/s into warm pages
/// (`docs/PERFORMANCE.md`, P3). The round trip is cheap (about 10 µs) from
/// a task of the runtime, whose worker runs the actor's reply at once; from
/// the future of a multi-thread runtime's `block_on` (`#[tokio::main]`'s
/// body, a test), which is no task, it wakes a parked worker and then the
/// parked caller: 80–250 µs per copy on the reference machine.
fn round_trips_are_dear() -> bool {
    tokio::task::try_id().is_none()
        && tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
}

/// The parts left after the first `done` bytes of `parts`.
fn rest_of<'a>(parts: &[&'a [u8]], mut done: usize) -> Vec<&'a [u8]> {
    let mut rest = Vec::with_capacity(parts.len());
    for part in parts {
        if done >= part.len() {
            done -= part.len();
            continue;
        }
        rest.push(&part[done..]);
        done = 0;
    }
    rest
}

/// What an update writes.
pub(super) enum Source<'a> {
    /// Borrowed slices, back to back.
    Slices(&'a [&'a [u8]]),
    /// Bytes the caller gave away (a request carries them without a copy).
    Owned(Bytes),
    /// This many zero bytes.
    Zeros(u64),
}

impl MappedFile {
    /// A large update (the `parts`, then zeros up to `total` bytes) copied
    /// by the calling task through the gate, one piece of at most `CHUNK`
    /// bytes per entry, with the gate left and the scheduler let in between
    /// pieces: no round trip to the actor, no thread woken, and a holder
    /// (a lease, a resize) waits for one piece at most. Returns the bytes
    /// written: all of them, none (the gate was closed, the range is
    /// watched, or out of bounds: the general path reports it), or a prefix
    /// (the gate closed between two pieces: the general path writes the
    /// rest).
    async fn write_large_direct(&self, offset: u64, parts: &[&[u8]], total: u64) -> u64 {
        if !round_trips_are_dear()
            || self.shared.is_closed()
            || self.shared.feed.watches(offset, total)
        {
            return 0;
        }
        let sum: u64 = parts.iter().map(|p| p.len() as u64).sum();
        let zeros = total - sum;
        let zero_pieces = (0..zeros)
            .step_by(CHUNK)
            .map(|at| &ZEROS[..(zeros - at).min(CHUNK as u64) as usize]);
        let pieces = (parts.iter().flat_map(|p| p.chunks(CHUNK))).chain(zero_pieces);
        let mut clock = Yielder::new();
        let mut done = 0u64;
        for piece in pieces {
            let copied = {
                let Some(reading) = self.shared.current.enter() else {
                    break;
                };
                let copied = reading.with(|generation, entered| {
                    // The whole range is checked before the first byte, so
                    // an update out of bounds writes nothing; pages not in
                    // the cache go the leased way, which faults them in on
                    // the blocking pool.
                    let fits = done > 0
                        || (generation.is_writable()
                            && region::in_bounds(offset, total, generation.len())
                            && generation.resident(offset, total));
                    fits && generation.write_direct(entered, offset + done, piece)
                });
                if copied {
                    if done == 0 {
                        reading.wrote(piece.len() as u64);
                    } else {
                        reading.wrote_more(piece.len() as u64);
                    }
                }
                copied
            };
            if !copied {
                break;
            }
            done += piece.len() as u64;
            if done < total {
                clock.tick().await;
            }
        }
        if done > 0 && self.shared.tally.due_now(self.shared.gate()) {
            let _ = self
                .shared
                .notices
                .send(crate::lease_table::Notice::PolicyDue);
        }
        done
    }

    /// A large load into `buf`, copied by the calling task through the
    /// gate a piece at a time, as [`write_large_direct`](Self::write_large_direct).
    /// Returns the bytes copied: all, none, or a prefix.
    async fn read_large_direct(&self, offset: u64, buf: &mut [u8]) -> usize {
        if !round_trips_are_dear() || self.shared.is_closed() {
            return 0;
        }
        let total = buf.len() as u64;
        let mut clock = Yielder::new();
        let mut done = 0usize;
        for piece in buf.chunks_mut(CHUNK) {
            let copied = {
                let Some(reading) = self.shared.current.enter() else {
                    break;
                };
                reading.with(|generation, entered| {
                    let fits = done > 0
                        || (region::in_bounds(offset, total, generation.len())
                            && generation.resident(offset, total));
                    fits && generation.read_direct(entered, offset + done as u64, piece)
                })
            };
            if !copied {
                break;
            }
            done += piece.len();
            if done < total as usize {
                clock.tick().await;
            }
        }
        done
    }

    /// The body of every update: the direct path inline, anything else in
    /// a future of its own on the heap (so that the future of a small
    /// update stays small: it is built and moved at every call).
    pub(super) async fn write_parts(
        &self,
        op: &'static str,
        offset: u64,
        source: Source<'_>,
        on_conflict: OnConflict,
    ) -> Result<()> {
        self.writable(op)?;
        if let Some(done) = self.write_direct(offset, &source).await {
            return done;
        }
        Box::pin(self.write_slow(op, offset, source, on_conflict)).await
    }

    /// The direct path of an update, if it applies and the gate is open.
    async fn write_direct(&self, offset: u64, source: &Source<'_>) -> Option<Result<()>> {
        let (one, zeros) = match source {
            Source::Slices(parts) if parts.len() == 1 => (parts[0], 0),
            Source::Owned(bytes) => (&bytes[..], 0),
            Source::Zeros(n) => (&[][..], usize::try_from(*n).ok()?),
            Source::Slices(parts) => {
                spend_budget().await;
                return self.update_direct(offset, parts, 0);
            }
        };
        if one.len() + zeros > INLINE_COPY_MAX {
            return None;
        }
        spend_budget().await;
        self.update_direct(offset, &[one], zeros)
    }

    /// Every update that is not served directly.
    async fn write_slow(
        &self,
        op: &'static str,
        offset: u64,
        source: Source<'_>,
        on_conflict: OnConflict,
    ) -> Result<()> {
        let owned;
        let (parts, zeros): (&[&[u8]], u64) = match &source {
            Source::Slices(parts) => (parts, 0),
            Source::Owned(bytes) => {
                owned = [&bytes[..]];
                (&owned, 0)
            }
            Source::Zeros(n) => (&[], *n),
        };
        let sum = parts.iter().map(|p| p.len() as u64).sum::<u64>();
        let total = sum.checked_add(zeros).ok_or(Error::OutOfBounds {
            offset,
            len: u64::MAX,
            file_len: self.len(),
        })?;
        if total > INLINE_COPY_MAX as u64 {
            let done = self.write_large_direct(offset, parts, total).await;
            if done == total {
                return Ok(());
            }
            // The gate closed between two pieces (or was closed from the
            // start): the rest under a temporary lease.
            let rest = rest_of(parts, done as usize);
            let mut lease = self
                .lease(
                    op,
                    offset + done,
                    total - done,
                    Access::Write,
                    true,
                    on_conflict,
                )
                .await
                .map(|grant| SegmentMut::for_update(grant, &self.shared))?;
            if !lease.grant().resident() {
                // Pages not in the cache yet (a fresh file, a grown end):
                // their read-ahead and zeroing run on the blocking pool,
                // not in the copy on this thread.
                lease = blocking::run(op, move || {
                    lease.grant().prefault();
                    Ok(lease)
                })
                .await?;
            }
            copy_yielding(&mut lease, &rest).await;
            return Ok(());
        }
        let data = match source {
            Source::Owned(data) => data,
            Source::Zeros(n) => Bytes::from_static(&ZEROS[..n as usize]),
            Source::Slices(parts) => {
                let mut joined = BytesMut::with_capacity(total as usize);
                for part in parts {
                    joined.extend_from_slice(part);
                }
                joined.freeze()
            }
        };
        self.call(op, on_conflict, request_span(op, offset, total), |reply| {
            Request::Inline(Inline::Update {
                offset,
                data,
                reply,
            })
        })
        .await
    }

    /// The body of every load into a caller's buffer.
    pub(super) async fn read_into(
        &self,
        op: &'static str,
        offset: u64,
        buf: &mut [u8],
        on_conflict: OnConflict,
    ) -> Result<()> {
        if buf.len() <= DIRECT_MAX {
            spend_budget().await;
            if let Some(done) = self.load_into_direct(offset, buf) {
                return done;
            }
        }
        Box::pin(self.read_into_slow(op, offset, buf, on_conflict)).await
    }

    async fn read_into_slow(
        &self,
        op: &'static str,
        offset: u64,
        buf: &mut [u8],
        on_conflict: OnConflict,
    ) -> Result<()> {
        let len = buf.len() as u64;
        if buf.len() > INLINE_COPY_MAX {
            let done = self.read_large_direct(offset, buf).await;
            if done == buf.len() {
                return Ok(());
            }
            let rest = &mut buf[done..];
            let mut lease = self
                .lease(
                    op,
                    offset + done as u64,
                    rest.len() as u64,
                    Access::Read,
                    false,
                    on_conflict,
                )
                .await
                .map(Segment::new)?;
            if !lease.grant().resident() {
                // Reading pages in is I/O: on the blocking pool.
                lease = blocking::run(op, move || {
                    lease.grant().prefault();
                    Ok(lease)
                })
                .await?;
            }
            copy_out_yielding(rest, &lease).await;
            return Ok(());
        }
        let bytes = self.load_request(op, offset, len, on_conflict).await?;
        buf.copy_from_slice(&bytes);
        Ok(())
    }

    /// The body of every load returning `Bytes`.
    pub(super) async fn read(
        &self,
        op: &'static str,
        offset: u64,
        len: u64,
        on_conflict: OnConflict,
    ) -> Result<Bytes> {
        if len > INLINE_COPY_MAX as u64 {
            // Checked before allocating (the actor checks again).
            region::check(offset, len, self.len())?;
            let mut buf = vec![0u8; len as usize];
            Box::pin(self.read_into_slow(op, offset, &mut buf, on_conflict)).await?;
            return Ok(Bytes::from(buf));
        }
        if len <= DIRECT_MAX as u64 {
            spend_budget().await;
            if let Some(done) = self.load_direct(offset, len) {
                return done;
            }
        }
        Box::pin(self.load_request(op, offset, len, on_conflict)).await
    }

    async fn load_request(
        &self,
        op: &'static str,
        offset: u64,
        len: u64,
        on_conflict: OnConflict,
    ) -> Result<Bytes> {
        self.call(op, on_conflict, request_span(op, offset, len), |reply| {
            Request::Inline(Inline::Load { offset, len, reply })
        })
        .await
    }

    /// Copies `buf.len()` bytes at `offset` into `buf`: [`load`](Self::load)
    /// without allocating.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> mmap_actor::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let file = mmap_actor::MappedFile::create(dir.path().join("f"), 8192).await?;
    /// file.update_from(4096, b"sixty-four bytes or any length").await?;
    /// let mut buf = [0u8; 9];
    /// file.load_into(4096, &mut buf).await?;
    /// assert_eq!(&buf, b"sixty-fou");
    /// # Ok(()) }
    /// ```
    ///
    /// Small loads are copied by the calling task; large ones under a
    /// temporary lease, in chunks, by the calling task too.
    ///
    /// # Errors
    ///
    /// As [`load`](Self::load).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future abandons the load; `buf` may then
    /// hold part of the bytes.
    pub async fn load_into(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        spend_budget().await;
        if self.load_fast(offset, buf) {
            return Ok(());
        }
        self.read_into("load", offset, buf, OnConflict::Wait).await
    }

    /// [`load_into`](Self::load_into) that fails with [`Error::Conflict`]
    /// instead of waiting for a lease.
    ///
    /// # Errors
    ///
    /// As [`load_into`](Self::load_into), plus [`Error::Conflict`].
    ///
    /// # Cancel safety
    ///
    /// As [`load_into`](Self::load_into).
    pub async fn try_load_into(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.read_into("load", offset, buf, OnConflict::Fail).await
    }

    /// Writes `data` at `offset`: [`update`](Self::update) from a borrowed
    /// slice. A small update is copied by the calling task, with no
    /// allocation; a medium one is copied into the request; a large one is
    /// copied by the calling task under a temporary lease.
    ///
    /// # Errors
    ///
    /// As [`update`](Self::update).
    ///
    /// # Cancel safety
    ///
    /// As [`update`](Self::update); a large update dropped mid-way leaves
    /// each of its 64 KiB chunks either old or new.
    pub async fn update_from(&self, offset: u64, data: &[u8]) -> Result<()> {
        spend_budget().await;
        if self.update_fast(offset, data) {
            return Ok(());
        }
        self.write_parts("update", offset, Source::Slices(&[data]), OnConflict::Wait)
            .await
    }

    /// [`update_from`](Self::update_from) that fails with
    /// [`Error::Conflict`] instead of waiting for a lease.
    ///
    /// # Errors
    ///
    /// As [`update_from`](Self::update_from), plus [`Error::Conflict`].
    ///
    /// # Cancel safety
    ///
    /// As [`update_from`](Self::update_from).
    pub async fn try_update_from(&self, offset: u64, data: &[u8]) -> Result<()> {
        self.write_parts("update", offset, Source::Slices(&[data]), OnConflict::Fail)
            .await
    }

    /// Writes `parts` back to back at `offset`, as one update (a record
    /// header and its payload, without joining them first).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> mmap_actor::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let file = mmap_actor::MappedFile::create(dir.path().join("f"), 4096).await?;
    /// let payload = b"payload";
    /// let header = (payload.len() as u32).to_le_bytes();
    /// file.update_vectored(0, &[&header, payload]).await?;
    /// assert_eq!(&file.load(4, 7).await?[..], b"payload");
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`update`](Self::update), for the whole range.
    ///
    /// # Cancel safety
    ///
    /// As [`update_from`](Self::update_from).
    pub async fn update_vectored(&self, offset: u64, parts: &[&[u8]]) -> Result<()> {
        self.write_parts("update", offset, Source::Slices(parts), OnConflict::Wait)
            .await
    }

    /// Writes `len` zero bytes at `offset`, without allocating them.
    ///
    /// # Errors
    ///
    /// As [`update`](Self::update).
    ///
    /// # Cancel safety
    ///
    /// As [`update_from`](Self::update_from).
    pub async fn zero(&self, offset: u64, len: u64) -> Result<()> {
        self.write_parts("zero", offset, Source::Zeros(len), OnConflict::Wait)
            .await
    }

    /// Grows the file to at least `min_len` bytes; a file already that long
    /// is left alone. Tasks racing to make room can call it freely: it never
    /// shrinks the file, so it never waits for leases either.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> mmap_actor::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let file = mmap_actor::MappedFile::create(dir.path().join("f"), 4096).await?;
    /// file.grow_to(1 << 20).await?;
    /// file.grow_to(8192).await?; // already longer: nothing happens
    /// assert_eq!(file.len(), 1 << 20);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`resize`](Self::resize) (a grow).
    ///
    /// # Cancel safety
    ///
    /// As [`resize`](Self::resize).
    pub async fn grow_to(&self, min_len: u64) -> Result<()> {
        self.resize_with(min_len, crate::request::ResizeKind::AtLeast)
            .await
    }
}
