//! The direct path: small loads and updates copied by the calling task
//! through the gate (`sys/gate.rs`), without a round trip to the actor.
//!
//! An update is stored through the mapping or written with `pwrite`, as the
//! open's write method says (`actor/write_method.rs`); either way the copy
//! happens inside the gate, so leases and the actor's own copies exclude it
//! exactly as before.

use std::os::unix::fs::FileExt;

use bytes::Bytes;

use super::MappedFile;
use crate::actor::write_method::WriteMethod;
use crate::error::{Error, Result};
use crate::region;
use crate::sys::gate::Reading;
use crate::sys::{streaming, Generation};
use crate::INLINE_COPY_MAX;

/// Loads and updates up to this many bytes are served by the calling task
/// itself, straight from the current mapping generation, whenever the
/// mapping has no live lease, no queued request and no resize in progress
/// (otherwise they go through the actor like everything else). A load or a
/// stored update is copied with atomic byte accesses, so it costs about a
/// nanosecond a byte: past a few KiB the actor's `memcpy` is cheaper than
/// the saved round trip. An update written with `pwrite` (durable workloads,
/// see `OpenOptions::write_through`) goes direct up to
/// [`INLINE_COPY_MAX`].
pub const DIRECT_MAX: usize = 4096;

/// Zeros to copy from, for `zero` (in `.bss`: it costs no file size, and
/// no memory until read).
pub(super) static ZEROS: [u8; INLINE_COPY_MAX] = [0; INLINE_COPY_MAX];

/// Spends the task's scheduling budget for a direct call, one unit every
/// [`BUDGET_EVERY`] calls: a task looping on direct calls still yields to
/// its runtime regularly (after some thousand of them, within about a
/// hundred microseconds), and a single call stays short enough for the
/// processor to overlap the cache misses of consecutive calls.
pub(super) async fn spend_budget() {
    if budget_due() {
        tokio::task::consume_budget().await;
    }
}

/// Whether this direct call is one of the [`BUDGET_EVERY`] that spends a
/// unit of the task's budget (see [`spend_budget`]).
#[inline]
pub(super) fn budget_due() -> bool {
    thread_local! {
        static CALLS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
    }
    CALLS.with(|calls| {
        let n = calls.get().wrapping_add(1);
        calls.set(n);
        n % BUDGET_EVERY == 0
    })
}

/// See [`spend_budget`].
const BUDGET_EVERY: u32 = 8;

impl MappedFile {
    /// Enters the gate for one direct operation: `None` when the actor must
    /// serve the request instead (the gate is held). The caller has spent
    /// the task's scheduling budget for it (`consume_budget`), so that a
    /// task looping on direct calls cannot starve its runtime.
    #[inline]
    fn enter_direct(&self) -> Option<Result<Reading<'_, Generation>>> {
        // Set by the actor's end, however it ends (`Actor`'s `Drop`).
        if self.shared.is_closed() {
            return Some(Err(Error::Closed));
        }
        self.shared.current.enter().map(Ok)
    }

    /// The common direct load, as short as it can be: `true` once `buf`
    /// holds the bytes; `false` (nothing read) when the general path must
    /// serve it, which also reports every error (closed, out of bounds).
    ///
    /// Short matters: a loop of small loads overlaps one call's cache miss
    /// with the next call's only if the processor can look that far ahead,
    /// a few hundred instructions at most.
    #[inline(always)]
    pub(super) fn load_fast(&self, offset: u64, buf: &mut [u8]) -> bool {
        if buf.len() > DIRECT_MAX || self.shared.is_closed() {
            return false;
        }
        let Some(reading) = self.shared.current.enter() else {
            return false;
        };
        reading.with(|generation, entered| generation.read_direct(entered, offset, buf))
    }

    /// The common direct update, as [`load_fast`](Self::load_fast): stored
    /// through the mapping, `true` once done; `false` (nothing written)
    /// when the general path must serve it (including every error, and
    /// updates written with `pwrite`).
    #[inline(always)]
    pub(crate) fn update_fast(&self, offset: u64, data: &[u8]) -> bool {
        if !self.may_store_direct(offset, data.len()) {
            return false;
        }
        let Some(reading) = self.shared.current.enter() else {
            return false;
        };
        if !reading.with(|generation, entered| generation.write_direct(entered, offset, data)) {
            return false;
        }
        self.count_direct(reading, [data.len() as u64]);
        true
    }

    /// Whether an update of `len` bytes at `offset` may be stored by the
    /// calling task now, before it enters the gate: small, a writable open
    /// that stores, not closed, and no subscription of these bytes (while
    /// one covers them, the actor must see the update to report it).
    #[inline]
    pub(crate) fn may_store_direct(&self, offset: u64, len: usize) -> bool {
        len <= DIRECT_MAX
            && self.shared.writable
            && self.shared.method.get() == WriteMethod::Store
            && !self.shared.is_closed()
            && !self.shared.feed.watches(offset, len as u64)
    }

    /// Stores a run of small updates through the direct path in one gate
    /// entry, in order: first the lines they write are fetched for writing
    /// (`Generation::prefetch_write`), then each is stored, so that the
    /// fetches overlap rather than each store waiting for its own line (an
    /// update sink's small items: `docs/PERFORMANCE.md`, P10). Returns how
    /// many were stored, a prefix: it stops at the first the direct path
    /// refuses (too large, watched, out of bounds, the gate closed).
    pub(crate) fn update_fast_run(&self, items: &[(u64, Bytes)]) -> usize {
        let take = items
            .iter()
            .take_while(|(offset, data)| self.may_store_direct(*offset, data.len()))
            .count();
        if take == 0 {
            return 0;
        }
        let Some(reading) = self.shared.current.enter() else {
            return 0;
        };
        let stored = reading.with(|generation, entered| {
            // Items of a KiB or more into a mapping larger than the cache
            // are stored past it (`sys::streaming`): no line to fetch.
            let streamed = |len: usize| streaming::pays(generation.len(), len);
            for (offset, data) in &items[..take] {
                if !streamed(data.len()) {
                    generation.prefetch_write(entered, *offset, data.len());
                }
            }
            let stored = items[..take]
                .iter()
                .take_while(|(offset, data)| {
                    if streamed(data.len()) {
                        generation.write_direct_streaming_unfenced(entered, *offset, data)
                    } else {
                        generation.write_direct(entered, *offset, data)
                    }
                })
                .count();
            // One fence for the run's stores past the cache, before the
            // gate is left.
            if items[..stored].iter().any(|(_, data)| streamed(data.len())) {
                streaming::fence();
            }
            stored
        });
        self.count_direct(reading, items[..stored].iter().map(|(_, d)| d.len() as u64));
        stored
    }

    /// Counts direct writes of `lens` bytes in the slot of `reading`, leaves
    /// the gate, and tells the actor if a flush policy is now due.
    #[inline(always)]
    pub(super) fn count_direct(
        &self,
        reading: Reading<'_, Generation>,
        lens: impl IntoIterator<Item = u64>,
    ) {
        let mut due = false;
        for len in lens {
            let slot_writes = reading.wrote(len);
            due |= self.shared.tally.due_after(self.shared.gate(), slot_writes);
        }
        drop(reading);
        if due {
            self.note_policy_due();
        }
    }

    /// Tells the actor that a flush policy's threshold was reached by
    /// writes it did not see.
    pub(super) fn note_policy_due(&self) {
        let _ = self
            .shared
            .notices
            .send(crate::lease_table::Notice::PolicyDue);
    }

    /// A small load into `buf`, served by the calling task if the gate is
    /// open.
    pub(super) fn load_into_direct(&self, offset: u64, buf: &mut [u8]) -> Option<Result<()>> {
        if buf.len() > DIRECT_MAX {
            return None;
        }
        let reading = match self.enter_direct()? {
            Ok(reading) => reading,
            Err(err) => return Some(Err(err)),
        };
        let len = buf.len() as u64;
        let copied = reading.with(|generation, entered| {
            generation
                .read_direct(entered, offset, buf)
                .then_some(())
                .ok_or(generation.len())
        });
        drop(reading);
        Some(copied.map_err(|file_len| Error::OutOfBounds {
            offset,
            len,
            file_len,
        }))
    }

    /// A small load, served by the calling task if the gate is open.
    pub(super) fn load_direct(&self, offset: u64, len: u64) -> Option<Result<Bytes>> {
        if len > DIRECT_MAX as u64 {
            return None;
        }
        let mut buf = vec![0u8; len as usize];
        let loaded = self.load_into_direct(offset, &mut buf)?;
        Some(loaded.map(|()| Bytes::from(buf)))
    }

    /// The largest update the calling task may copy itself.
    fn direct_limit(&self) -> (WriteMethod, usize) {
        match self.shared.method.get() {
            WriteMethod::Store => (WriteMethod::Store, DIRECT_MAX),
            WriteMethod::Pwrite => (WriteMethod::Pwrite, INLINE_COPY_MAX),
        }
    }

    /// A small update made of `parts` written back to back at `offset`,
    /// served by the calling task if the gate is open. With no parts of
    /// `data`, `len` zeros are written.
    pub(super) fn update_direct(
        &self,
        offset: u64,
        parts: &[&[u8]],
        zeros: usize,
    ) -> Option<Result<()>> {
        let len = parts.iter().map(|p| p.len()).sum::<usize>() + zeros;
        let (method, limit) = self.direct_limit();
        // While a subscription covers these bytes, the actor must see the
        // update to report it.
        if len > limit || self.shared.feed.watches(offset, len as u64) {
            return None;
        }
        let reading = match self.enter_direct()? {
            Ok(reading) => reading,
            Err(err) => return Some(Err(err)),
        };
        let result = reading.with(|generation, entered| {
            let file_len = generation.len();
            if !generation.is_writable() || !region::in_bounds(offset, len as u64, file_len) {
                return Err(Error::OutOfBounds {
                    offset,
                    len: len as u64,
                    file_len,
                });
            }
            let zero_part: &[u8] = &ZEROS[..zeros];
            let mut at = offset;
            for part in parts.iter().copied().chain([zero_part]) {
                match method {
                    WriteMethod::Store => {
                        generation.write_direct(entered, at, part);
                    }
                    WriteMethod::Pwrite => match generation.file() {
                        Some(file) => file
                            .write_all_at(part, at)
                            .map_err(|e| Error::io("pwrite", &self.shared.path, e))?,
                        None => {
                            generation.write_direct(entered, at, part);
                        }
                    },
                }
                at += part.len() as u64;
            }
            Ok(())
        });
        self.count_direct(reading, [len as u64]);
        Some(result)
    }
}
