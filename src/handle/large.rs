//! Large loads and updates (above `INLINE_COPY_MAX`): copied by the
//! calling task in chunks that yield to the scheduler, under a temporary
//! lease, or through the gate a chunk per entry where a round trip is dear
//! ([`round_trips_are_dear`]) and for every update of at least
//! [`STREAM_FROM`], which stores past the cache (`crate::sys::streaming`).
//! Pages not in the page cache are faulted in on the blocking pool before a
//! leased copy touches them.

use std::time::{Duration, Instant};

use super::direct::ZEROS;
use super::MappedFile;
use crate::blocking;
use crate::error::Result;
use crate::lease::{Grant, Segment, SegmentMut};
use crate::lease_table::Access;
use crate::region;
use crate::request::OnConflict;
use crate::sys::streaming;

/// A large copy's piece.
const CHUNK: usize = 64 * 1024;

/// The size from which a large update stores past the cache
/// ([`crate::sys::streaming`]) and goes through the gate from any caller:
/// at 12 GiB/s against `memcpy`'s 7.4 into a file bigger than the cache,
/// the round trip a lease costs buys nothing (`docs/PERFORMANCE.md`, P3).
/// Below it, an update may well be read back from the cache soon, and
/// `memcpy` into cached lines is faster than a store that evicts them.
const STREAM_FROM: u64 = 1024 * 1024;

/// How many turns of the scheduler a large copy through the gate waits for
/// the gate to reopen before it takes a lease for the rest.
const GATE_WAITS: u32 = 16;

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
/// chunks, letting other tasks in between; `streaming`: with stores that
/// bypass the cache.
async fn copy_yielding(dst: &mut [u8], parts: &[&[u8]], streaming: bool) {
    let mut clock = Yielder::new();
    let mut at = 0;
    for part in parts {
        for piece in part.chunks(CHUNK) {
            let to = &mut dst[at..at + piece.len()];
            if streaming {
                streaming::copy(to, piece);
            } else {
                to.copy_from_slice(piece);
            }
            at += piece.len();
            clock.tick().await;
        }
    }
    for piece in dst[at..].chunks_mut(CHUNK) {
        if streaming {
            let len = piece.len();
            streaming::copy(piece, &ZEROS[..len]);
        } else {
            piece.fill(0);
        }
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

/// Faults a lease's pages in on the blocking pool if they are not in the
/// page cache (a fresh file, a grown end), so that their read-ahead,
/// zeroing or reading never runs in the copy on this thread.
async fn faulted_in<L: Send + 'static>(
    op: &'static str,
    lease: L,
    grant: fn(&L) -> &Grant,
) -> Result<L> {
    if grant(&lease).resident() {
        return Ok(lease);
    }
    blocking::run(op, move || {
        grant(&lease).prefault();
        Ok(lease)
    })
    .await
}

impl MappedFile {
    /// A large update: `parts`, then zeros up to `total` bytes.
    pub(super) async fn write_large(
        &self,
        op: &'static str,
        offset: u64,
        parts: &[&[u8]],
        total: u64,
        on_conflict: OnConflict,
    ) -> Result<()> {
        let done = self.write_large_direct(offset, parts, total).await;
        if done == total {
            return Ok(());
        }
        // The gate closed between two pieces (or was closed from the
        // start): the rest under a temporary lease.
        let rest = rest_of(parts, done as usize);
        let lease = self
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
        let mut lease = faulted_in(op, lease, SegmentMut::grant).await?;
        copy_yielding(&mut lease, &rest, total >= STREAM_FROM).await;
        Ok(())
    }

    /// A large load into `buf`.
    pub(super) async fn read_large(
        &self,
        op: &'static str,
        offset: u64,
        buf: &mut [u8],
        on_conflict: OnConflict,
    ) -> Result<()> {
        let done = self.read_large_direct(offset, buf).await;
        if done == buf.len() {
            return Ok(());
        }
        let rest = &mut buf[done..];
        let lease = self
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
        let lease = faulted_in(op, lease, Segment::grant).await?;
        copy_out_yielding(rest, &lease).await;
        Ok(())
    }

    /// A large update (the `parts`, then zeros up to `total` bytes) copied
    /// by the calling task through the gate (from any caller at
    /// [`STREAM_FROM`] bytes and up, else only where round trips are dear),
    /// one piece of at most `CHUNK` bytes per entry, with the gate left and
    /// the scheduler let in between pieces: no round trip to the actor, no
    /// thread woken, and a holder (a lease, a resize) waits for one piece
    /// at most. Returns the bytes written: all of them, none (the gate was
    /// closed, the range is watched, or out of bounds: the general path
    /// reports it), or a prefix (the gate stayed closed between two pieces:
    /// the general path writes the rest).
    async fn write_large_direct(&self, offset: u64, parts: &[&[u8]], total: u64) -> u64 {
        let streaming = total >= STREAM_FROM;
        if !(streaming || round_trips_are_dear())
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
            let mut waited = 0;
            let copied = loop {
                let Some(reading) = self.shared.current.enter() else {
                    // Closed by a holder. A request's hold (a load or update
                    // of other tasks, sent to the actor) goes within
                    // microseconds: wait a few turns of the scheduler for it
                    // rather than take a lease, which would make every
                    // direct call on these bytes meanwhile queue behind the
                    // rest of this copy, and so on (a convoy). A lease or a
                    // resize stays: the rest then goes under a lease.
                    if waited < GATE_WAITS && !self.shared.is_closed() {
                        waited += 1;
                        tokio::task::yield_now().await;
                        continue;
                    }
                    break false;
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
                    fits && if streaming {
                        generation.write_direct_streaming(entered, offset + done, piece)
                    } else {
                        generation.write_direct(entered, offset + done, piece)
                    }
                });
                if copied {
                    if done == 0 {
                        reading.wrote(piece.len() as u64);
                    } else {
                        reading.wrote_more(piece.len() as u64);
                    }
                }
                break copied;
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
            self.note_policy_due();
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
}
