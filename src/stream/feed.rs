//! The change feed of one mapping: who subscribed to which bytes, how
//! changes are numbered and delivered to each subscription's bounded inbox
//! (`inbox.rs`).
//!
//! # Implementation notes
//!
//! - Every writer of the mapping (the actor, a pool thread finishing a large
//!   copy, a [`SegmentMut`](crate::SegmentMut) being dropped) publishes
//!   through [`Feed::publish`]; the feed's lock orders the changes and gives
//!   each its `seq`. Changes to the same bytes are published in the order
//!   they were applied, because the lease table orders their writers.
//! - A mapping that never subscribes pays one atomic load per write
//!   (`count`, which stays 0) and nothing else: no allocation, no lock, 24
//!   bytes in its `Shared` (the rest is allocated by the first subscription).
//! - The direct path (small updates copied by the calling task, which the
//!   actor never sees) asks [`Feed::watches`] first and goes through the
//!   actor when a subscription covers its bytes. `count`, `lo` and `hi` are
//!   plain atomics written under the lock: `count` last, so an
//!   update that happens after `subscribe` returned sees the new hull. A
//!   reader racing a change of the hull may see `lo` and `hi` from
//!   different moments, but every subscription that exists throughout lies
//!   inside both the old and the new hull, so any mix of them still covers
//!   it; only the subscription being added or removed may miss the racing
//!   update, which was concurrent with it.
//! - Changes published together (a batch's items) are one [`Published`]
//!   list, shared by the subscriptions that report enough of it; one that
//!   reports less than a quarter keeps a copy of its own changes instead.
//!   Publishing costs a reference (or that small copy) per subscription,
//!   not a copy per change; each subscription picks its changes out of the
//!   list as it yields them.
//! - Each subscription's inbox holds at most [`CAPACITY`] changes that it
//!   reports: beyond that it drops its oldest and counts them, and the
//!   reader gets one `Error::Lagged { missed }` before the oldest change
//!   still held (tokio `broadcast` semantics, per subscription, so a quiet
//!   range never lags because of a busy one). It holds about four times
//!   that many changes at most (those of other ranges in shared lists).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::Waker;

use bytes::Bytes;

use super::inbox::{lock, Draft, Inbox, Published, Subscriber};
use super::subscribe::ChangeKind;

/// A mapping's subscriptions; lives in the mapping's `Shared`.
#[derive(Debug, Default)]
pub(crate) struct Feed {
    /// Live subscriptions (0: nothing to publish, the direct path is free).
    count: AtomicU64,
    /// The rest, made by the first subscription (or by the end): a mapping
    /// that never subscribes holds only `count` and this empty cell.
    inner: OnceLock<Box<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Live subscriptions that want the changed bytes.
    with_data: AtomicU64,
    /// The hull `[lo, hi)` of the live subscriptions' ranges.
    lo: AtomicU64,
    hi: AtomicU64,
    hub: Mutex<Hub>,
}

#[derive(Debug, Default)]
struct Hub {
    subs: Vec<Arc<Subscriber>>,
    /// The next change's `seq`.
    seq: u64,
    /// Changes numbered but not yet delivered ([`Feed::hold`]): delivered,
    /// first, with the next delivery of any writer, before a subscription
    /// is added, and at the end.
    held: Vec<Draft>,
    /// The mapping is closed: nothing is published any more.
    ended: bool,
}

/// Changes held at most before they are delivered (see [`Feed::hold`]).
const HELD_MAX: usize = 256;

/// Wakes subscriptions, outside every lock (a waker may do anything).
fn wake_all(wake: Vec<Waker>) {
    for waker in wake {
        waker.wake();
    }
}

impl Feed {
    /// Whether any subscription is live: the cheap check every writer makes
    /// before building a change.
    #[inline]
    pub(crate) fn is_watched(&self) -> bool {
        self.count.load(Ordering::Acquire) != 0
    }

    /// How many subscriptions are live.
    pub(crate) fn subscriptions(&self) -> u64 {
        self.count.load(Ordering::Acquire)
    }

    /// Whether a live subscription wants the changed bytes.
    #[inline]
    pub(crate) fn wants_bytes(&self) -> bool {
        self.is_watched()
            && self
                .inner
                .get()
                .is_some_and(|i| i.with_data.load(Ordering::Acquire) != 0)
    }

    fn inner(&self) -> &Inner {
        self.inner.get_or_init(Box::default)
    }

    fn hub(&self) -> MutexGuard<'_, Hub> {
        lock(&self.inner().hub)
    }

    /// Whether a subscription may cover a byte of `[offset, offset + len)`:
    /// a direct update of those bytes must go through the actor, which
    /// publishes it. Conservative (the hull of every subscription's range).
    #[inline]
    pub(crate) fn watches(&self, offset: u64, len: u64) -> bool {
        // `count` is stored after the hull, and only once `inner` exists.
        let Some(inner) = self.inner.get().filter(|_| self.is_watched()) else {
            return false;
        };
        let (lo, hi) = (
            inner.lo.load(Ordering::Acquire),
            inner.hi.load(Ordering::Acquire),
        );
        len > 0 && offset < hi && lo < offset.saturating_add(len)
    }

    /// The part of `[offset, offset + len)` that data subscriptions want
    /// (the hull of their parts), if any: what a writer that must copy the
    /// bytes out of the mapping needs to copy.
    pub(crate) fn wanted_bytes(&self, offset: u64, len: u64) -> Option<(u64, u64)> {
        if !self.wants_bytes() {
            return None;
        }
        let end = offset.saturating_add(len);
        let hub = self.hub();
        let mut hull: Option<(u64, u64)> = None;
        for sub in hub.subs.iter().filter(|s| s.with_data) {
            let (from, to) = (sub.start.max(offset), sub.end.min(end));
            if from < to {
                hull = Some(match hull {
                    Some((a, b)) => (a.min(from), b.max(to)),
                    None => (from, to),
                });
            }
        }
        hull
    }

    /// Adds a subscription to `[start, end)`, or `None` once the mapping is
    /// closed.
    pub(crate) fn subscribe(
        &self,
        start: u64,
        end: u64,
        with_data: bool,
    ) -> Option<Arc<Subscriber>> {
        let mut hub = self.hub();
        if hub.ended {
            return None;
        }
        // Held changes were made before this subscription: the others get
        // them now, this one never.
        let wake = Self::deliver(&mut hub, Vec::new());
        let sub = Arc::new(Subscriber {
            start,
            end,
            with_data,
            inbox: Mutex::new(Inbox::default()),
        });
        hub.subs.push(Arc::clone(&sub));
        self.publish_hull(&hub);
        drop(hub);
        wake_all(wake);
        Some(sub)
    }

    /// Removes a subscription (its stream was dropped).
    pub(crate) fn unsubscribe(&self, sub: &Arc<Subscriber>) {
        let mut hub = self.hub();
        hub.subs.retain(|s| !Arc::ptr_eq(s, sub));
        self.publish_hull(&hub);
    }

    /// Stores the hull and the counts for lock-free readers; `count` last
    /// (module docs).
    fn publish_hull(&self, hub: &Hub) {
        let lo = hub.subs.iter().map(|s| s.start).min().unwrap_or(u64::MAX);
        let hi = hub.subs.iter().map(|s| s.end).max().unwrap_or(0);
        let with_data = hub.subs.iter().filter(|s| s.with_data).count();
        let inner = self.inner();
        inner.lo.store(lo, Ordering::Release);
        inner.hi.store(hi, Ordering::Release);
        inner.with_data.store(with_data as u64, Ordering::Release);
        self.count.store(hub.subs.len() as u64, Ordering::Release);
    }

    /// Publishes `drafts`, in order, to every subscription they touch (a
    /// resize touches every subscription); each gets the next `seq`.
    pub(crate) fn publish(&self, drafts: Vec<Draft>) {
        if drafts.is_empty() || !self.is_watched() {
            return;
        }
        let wake = Self::deliver(&mut self.hub(), drafts);
        wake_all(wake);
    }

    /// Runs `write` under the feed's lock, then publishes the drafts it
    /// pushed (`write` is told whether data subscriptions want the bytes).
    ///
    /// For writers that no lease or hold orders (direct updates of watched
    /// bytes): with the write and its publication under one lock, two of
    /// them on the same bytes publish in the order they wrote. Every other
    /// writer writes and publishes while the gate is closed to them.
    ///
    /// The subscriptions to wake are added to `wake`, for the caller to
    /// wake ([`Feed::wake`]) once it is done with every lock; a writer
    /// publishing several lots wakes them once.
    pub(crate) fn publish_with<R>(
        &self,
        wake: &mut Vec<Waker>,
        write: impl FnOnce(&mut Vec<Draft>, bool) -> R,
    ) -> R {
        let mut drafts = Vec::new();
        let mut hub = self.hub();
        let with_bytes = self.inner().with_data.load(Ordering::Acquire) != 0;
        let result = write(&mut drafts, with_bytes);
        wake.extend(Self::deliver(&mut hub, drafts));
        result
    }

    /// Runs `write` under the feed's lock and holds the change it returns:
    /// numbered now (so racing writers of the same bytes are numbered in
    /// the order they wrote), delivered with the next delivery, or now once
    /// [`HELD_MAX`] are held. For a writer that makes many small changes
    /// and publishes them together without delaying its writes (an update
    /// sink); it calls [`deliver_held`](Self::deliver_held) when it
    /// flushes. Returns what `write` did, and whether subscriptions were
    /// woken.
    pub(crate) fn hold(&self, write: impl FnOnce(bool) -> Option<Draft>) -> bool {
        let mut hub = self.hub();
        let with_bytes = self.inner().with_data.load(Ordering::Acquire) != 0;
        let Some(mut draft) = write(with_bytes) else {
            return false;
        };
        if hub.ended {
            return true;
        }
        draft.seq = hub.seq;
        hub.seq += 1;
        hub.held.push(draft);
        if hub.held.len() >= HELD_MAX {
            let wake = Self::deliver(&mut hub, Vec::new());
            drop(hub);
            wake_all(wake);
        }
        true
    }

    /// Delivers the changes held by [`hold`](Self::hold), if any.
    pub(crate) fn deliver_held(&self) {
        let Some(inner) = self.inner.get() else {
            return;
        };
        let mut hub = lock(&inner.hub);
        if hub.held.is_empty() {
            return;
        }
        let wake = Self::deliver(&mut hub, Vec::new());
        drop(hub);
        wake_all(wake);
    }

    /// Wakes what [`publish_with`](Self::publish_with) collected, outside
    /// every lock.
    pub(crate) fn wake(wake: Vec<Waker>) {
        wake_all(wake);
    }

    /// Gives `drafts` their `seq`s and pushes them to the subscriptions
    /// they touch; returns the wakers to wake once the locks are let go.
    fn deliver(hub: &mut Hub, mut drafts: Vec<Draft>) -> Vec<Waker> {
        let mut wake = Vec::new();
        if hub.ended || (drafts.is_empty() && hub.held.is_empty()) {
            return wake;
        }
        for d in &mut drafts {
            d.seq = hub.seq;
            hub.seq += 1;
        }
        // Held changes were numbered first: they go first.
        if !hub.held.is_empty() {
            let mut all = std::mem::take(&mut hub.held);
            all.append(&mut drafts);
            drafts = all;
        }
        let published = Arc::new(Published::new(drafts));
        for sub in &hub.subs {
            let count = sub.reported_in(&published);
            if count == 0 {
                continue;
            }
            let mut inbox = sub.inbox();
            inbox.push(sub, &published, count);
            wake.extend(inbox.waker.take());
        }
        wake
    }

    /// Publishes one change of `bytes.len()` bytes at `offset`, whose new
    /// bytes are `bytes` (shared with data subscriptions, not copied).
    pub(crate) fn publish_bytes(&self, offset: u64, kind: ChangeKind, bytes: &Bytes) {
        if !self.is_watched() {
            return;
        }
        self.publish(vec![Draft::of(offset, kind, bytes, self.wants_bytes())]);
    }

    /// Publishes one change whose new bytes, `bytes`, are at `offset` in
    /// the mapping (a lease's or the actor's view of them): only the part
    /// data subscriptions want is copied.
    pub(crate) fn publish_copied(&self, offset: u64, bytes: &[u8], kind: ChangeKind) {
        if !self.is_watched() {
            return;
        }
        let len = bytes.len() as u64;
        let data = self.wanted_bytes(offset, len).map(|(from, to)| {
            let part = &bytes[(from - offset) as usize..(to - offset) as usize];
            (from, Bytes::copy_from_slice(part))
        });
        self.publish(vec![Draft::with_data(offset, len, kind, data)]);
    }

    /// The mapping closed: every subscription ends once it has taken what
    /// it holds, and later ones end at once. (It makes the inner part if
    /// none exists, so that a subscription racing the end finds it ended.)
    pub(crate) fn end(&self) {
        let mut wake;
        {
            let mut hub = self.hub();
            // What was held is reported before the end.
            wake = Self::deliver(&mut hub, Vec::new());
            hub.ended = true;
            for sub in &hub.subs {
                let mut inbox = sub.inbox();
                inbox.ended = true;
                wake.extend(inbox.waker.take());
            }
        }
        for waker in wake {
            waker.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;
    use crate::stream::inbox::SUBSCRIPTION_CAPACITY as CAPACITY;
    use crate::stream::subscribe::Change;

    fn update(offset: u64, len: u64) -> Draft {
        Draft::new(offset, len, ChangeKind::Update)
    }

    /// Takes every change a subscription holds.
    fn drain(s: &Subscriber) -> Vec<Change> {
        let mut segments = VecDeque::new();
        s.inbox().take_all(&mut segments);
        std::iter::from_fn(|| s.take(&mut segments)).collect()
    }

    fn seqs(s: &Subscriber) -> Vec<u64> {
        drain(s).iter().map(Change::seq).collect()
    }

    #[test]
    fn feed_routes_changes_by_range_and_resizes_to_all() {
        let feed = Feed::default();
        assert!(!feed.is_watched() && !feed.watches(0, 100));
        let a = feed.subscribe(0, 100, false).unwrap();
        let b = feed.subscribe(1000, 1100, false).unwrap();
        assert!(feed.watches(50, 1) && feed.watches(500, 1), "the hull");
        assert!(!feed.watches(1100, 10) && !feed.watches(5, 0));
        feed.publish(vec![update(90, 20), update(500, 1), update(1099, 5)]);
        feed.publish(vec![Draft::new(
            2000,
            1000,
            ChangeKind::Resize {
                old_len: 2000,
                new_len: 3000,
            },
        )]);
        assert_eq!(seqs(&a), [0, 3]);
        assert_eq!(seqs(&b), [2, 3]);
        feed.unsubscribe(&a);
        assert!(!feed.watches(50, 1));
        feed.unsubscribe(&b);
        assert!(!feed.is_watched());
        feed.publish(vec![update(1000, 1)]);
        assert!(seqs(&b).is_empty(), "gone subscriptions get nothing");
    }

    #[test]
    fn feed_lags_instead_of_growing() {
        let feed = Feed::default();
        let s = feed.subscribe(0, 10, false).unwrap();
        let other = feed.subscribe(100, 110, false).unwrap();
        for i in 0..(CAPACITY as u64 + 5) {
            // Changes elsewhere count for nobody here.
            feed.publish(vec![update(i % 10, 1), update(105, 1)]);
        }
        assert_eq!(s.inbox().missed, 5);
        assert_eq!(s.inbox().held, CAPACITY);
        let got = seqs(&s);
        assert_eq!(got.len(), CAPACITY);
        assert_eq!(got[0], 10, "the oldest held: the sixth, seqs two apart");
        assert_eq!(other.inbox().missed, 5);
    }

    #[test]
    fn feed_holds_what_a_subscription_reports_not_whole_batches() {
        let feed = Feed::default();
        let sparse = feed.subscribe(0, 10, false).unwrap();
        let dense = feed.subscribe(0, 1 << 20, false).unwrap();
        for _ in 0..100 {
            let mut batch = vec![update(5, 1)];
            batch.extend((1..1000).map(|i| update(1000 + i, 1)));
            feed.publish(batch);
        }
        let held = |s: &Subscriber| -> usize {
            let inbox = s.inbox();
            inbox
                .segments
                .iter()
                .map(|g| g.published.drafts.len())
                .sum()
        };
        assert_eq!(held(&sparse), 100, "a copy of its own changes only");
        assert_eq!(sparse.inbox().missed, 0);
        // The dense one shares the batches, and lags past its capacity.
        assert!(held(&dense) <= CAPACITY + 1000);
        assert_eq!(dense.inbox().held, CAPACITY);
        assert_eq!(dense.inbox().missed, 100 * 1000 - CAPACITY as u64);
        let first = seqs(&sparse);
        assert_eq!(first.len(), 100);
        assert!(first.windows(2).all(|w| w[1] == w[0] + 1000));
    }

    #[test]
    fn feed_cuts_data_to_the_range() {
        let feed = Feed::default();
        let s = feed.subscribe(10, 20, true).unwrap();
        let plain = feed.subscribe(0, 100, false).unwrap();
        assert_eq!(feed.wanted_bytes(0, 15), Some((10, 15)));
        assert_eq!(feed.wanted_bytes(20, 5), None);
        let bytes = Bytes::from((0u8..30).collect::<Vec<u8>>());
        feed.publish(vec![Draft::with_bytes(0, ChangeKind::Update, &bytes)]);
        let c = drain(&s).pop().unwrap();
        assert_eq!((c.offset(), c.len()), (0, 30), "reported whole");
        assert_eq!(c.data_offset(), Some(10));
        assert_eq!(
            c.data().unwrap().as_ref(),
            &(10u8..20).collect::<Vec<_>>()[..]
        );
        assert!(drain(&plain)[0].data().is_none());
        feed.end();
        assert!(s.inbox().ended);
        assert!(feed.subscribe(0, 1, false).is_none());
    }
}
