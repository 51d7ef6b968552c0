//! The direct path for bytes that subscriptions watch: an update sink
//! watched by many subscriptions stores its small items itself and
//! publishes their changes without the actor (`docs/PERFORMANCE.md`, P11;
//! `docs/ARCHITECTURE.md`, "Streams").

use bytes::Bytes;

use super::direct::DIRECT_MAX;
use super::MappedFile;
use crate::actor::write_method::WriteMethod;
use crate::stream::inbox::Draft;
use crate::stream::ChangeKind;
use crate::sys::streaming;

/// The bytes [`MappedFile::update_published`] copies in one gate entry: a
/// holder (a lease, a resize) waits for about this much copying at most.
const PUBLISHED_MAX: usize = 64 * 1024;

/// A sink publishes its changes itself once this many subscriptions are
/// live; below it the actor applies and publishes them. The actor's copy
/// runs beside the producer's own work, on another thread, which pays
/// while few readers compete for the runtime's threads; with many, the
/// actor's turn comes after theirs and the producer waits for it, so the
/// producer stores and publishes itself (`docs/PERFORMANCE.md`, P11).
const PUBLISH_ITSELF_FROM: u64 = 4;

/// Items of at least this many bytes are stored at once, their changes
/// held ([`MappedFile::update_held`]): their copy is what costs, and it is
/// cheapest while the item's bytes are still in the cache. Smaller ones
/// are gathered and stored a batch at a time
/// ([`MappedFile::update_published`]): their copies are cheap, and a lock
/// per item is not.
const HOLD_FROM: usize = 1024;

/// How many items ahead of the one it stores [`MappedFile::update_published`]
/// fetches lines for writing: about as many line fetches as a core tracks
/// at once.
const PREFETCH_AHEAD: usize = 16;

impl MappedFile {
    /// Whether small updates of watched bytes may be stored by the calling
    /// task and published by it ([`update_published`](Self::update_published)):
    /// a writable open that stores (updates written with `pwrite` go to the
    /// actor, which writes a batch with one `pwritev`), watched by at least
    /// [`PUBLISH_ITSELF_FROM`] subscriptions.
    pub(crate) fn publishes_directly(&self) -> bool {
        self.shared.writable
            && self.shared.method.get() == WriteMethod::Store
            && self.shared.feed.subscriptions() >= PUBLISH_ITSELF_FROM
    }

    /// One small update stored by the calling task while subscriptions may
    /// watch its bytes (as [`update_published`](Self::update_published)
    /// requires), its change numbered at once under the feed's lock and
    /// held for the next delivery (`Feed::hold`): the sink's item is copied
    /// while its bytes are still in the cache, and published with others.
    /// `true` once written; `false` (nothing written) when the general path
    /// must serve it. The caller delivers what it held when it flushes.
    pub(crate) fn update_held(&self, offset: u64, data: &Bytes) -> bool {
        if !(HOLD_FROM..=DIRECT_MAX).contains(&data.len())
            || !self.publishes_directly()
            || self.shared.is_closed()
        {
            return false;
        }
        let Some(reading) = self.shared.current.enter() else {
            return false;
        };
        let len = data.len() as u64;
        let written = self.shared.feed.hold(|with_bytes| {
            let wrote = reading.with(|generation, entered| {
                // Stored past the cache into a mapping larger than it, as
                // the unwatched sink's items are (`update_fast_run`); the
                // change's bytes are the item's, not the mapping's.
                if streaming::pays(generation.len(), data.len()) {
                    generation.write_direct_streaming(entered, offset, data)
                } else {
                    generation.write_direct(entered, offset, data)
                }
            });
            wrote.then(|| Draft::of(offset, ChangeKind::Update, data, with_bytes))
        });
        if !written {
            return false;
        }
        self.count_direct(reading, [len]);
        true
    }

    /// Small updates stored by the calling task while subscriptions may
    /// watch their bytes, published by it: in one gate entry, the items are
    /// written and their changes published under the feed's lock, so that
    /// changes to the same bytes are published in the order they were
    /// written (`Feed::publish_with`), and the actor, leases and resizes,
    /// which close the gate, are ordered before or after the lot. At most
    /// [`PUBLISHED_MAX`] bytes per entry. Returns how many items, from the
    /// first, were applied: all, or up to the first that is too large,
    /// out of bounds, or read-only (the actor serves the rest, and reports
    /// the error), or none when the gate is closed.
    ///
    /// The subscriptions to wake go to `wake` (`Feed::wake` wakes them).
    pub(crate) fn update_published(
        &self,
        items: &[(u64, Bytes)],
        wake: &mut Vec<std::task::Waker>,
    ) -> usize {
        if !self.publishes_directly() || self.shared.is_closed() {
            return 0;
        }
        let Some(reading) = self.shared.current.enter() else {
            return 0;
        };
        let applied = self.shared.feed.publish_with(wake, |drafts, with_bytes| {
            reading.with(|generation, entered| {
                // The lines of the items `PREFETCH_AHEAD` on are fetched
                // while these are stored (see `update_fast_run`).
                for (offset, data) in items.iter().take(PREFETCH_AHEAD) {
                    generation.prefetch_write(entered, *offset, data.len());
                }
                let mut bytes = 0;
                for (i, (offset, data)) in items.iter().enumerate() {
                    if let Some((ahead, data)) = items.get(i + PREFETCH_AHEAD) {
                        generation.prefetch_write(entered, *ahead, data.len());
                    }
                    if data.len() > DIRECT_MAX
                        || (bytes + data.len() > PUBLISHED_MAX && !drafts.is_empty())
                        || !generation.write_direct(entered, *offset, data)
                    {
                        break;
                    }
                    bytes += data.len();
                    drafts.push(Draft::of(*offset, ChangeKind::Update, data, with_bytes));
                }
                drafts.len()
            })
        });
        let lens = items[..applied].iter().map(|(_, data)| data.len() as u64);
        self.count_direct(reading, lens);
        applied
    }
}
