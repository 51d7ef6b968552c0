//! What one subscription holds: the changes published to it, shared with
//! the other subscriptions they touch ([`Published`]), its bounded
//! [`Inbox`], and how it picks its own changes out of them
//! ([`Subscriber::take`]). The feed (`feed.rs`) numbers changes and pushes
//! them here.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;

use bytes::Bytes;

use super::subscribe::{Change, ChangeKind};

/// Changes one subscription buffers before it lags. A change costs about
/// 100 bytes, and a subscription may share lists that also hold changes of
/// other ranges (up to about four times as many): one that stops reading
/// holds a few hundred KiB at most (twice that with what it took but has
/// not yielded yet), plus the data of the changes it holds.
pub const SUBSCRIPTION_CAPACITY: usize = 1024;

const CAPACITY: usize = SUBSCRIPTION_CAPACITY;

/// One change about to be published.
#[derive(Clone, Debug)]
pub(crate) struct Draft {
    /// Given by the feed when published.
    pub(super) seq: u64,
    pub(crate) offset: u64,
    pub(crate) len: u64,
    pub(crate) kind: ChangeKind,
    /// The new bytes of `[at, at + bytes.len())`, a part of the change that
    /// covers what every data subscription wants of it (or all of it).
    pub(crate) data: Option<(u64, Bytes)>,
}

impl Draft {
    /// A change without its bytes.
    pub(crate) fn new(offset: u64, len: u64, kind: ChangeKind) -> Draft {
        Draft {
            seq: 0,
            offset,
            len,
            kind,
            data: None,
        }
    }

    /// A change whose new bytes are `bytes`, all of them.
    pub(crate) fn with_bytes(offset: u64, kind: ChangeKind, bytes: &Bytes) -> Draft {
        Draft {
            seq: 0,
            offset,
            len: bytes.len() as u64,
            kind,
            data: Some((offset, bytes.clone())),
        }
    }

    /// A change of `bytes.len()` bytes at `offset` whose new bytes are
    /// `bytes`: carried along (shared, not copied) when data subscriptions
    /// want them.
    pub(crate) fn of(offset: u64, kind: ChangeKind, bytes: &Bytes, with_bytes: bool) -> Draft {
        if with_bytes {
            Draft::with_bytes(offset, kind, bytes)
        } else {
            Draft::new(offset, bytes.len() as u64, kind)
        }
    }

    /// A change with the new bytes of `[at, at + bytes.len())`, a part of
    /// it (or none).
    pub(crate) fn with_data(
        offset: u64,
        len: u64,
        kind: ChangeKind,
        data: Option<(u64, Bytes)>,
    ) -> Draft {
        Draft {
            seq: 0,
            offset,
            len,
            kind,
            data,
        }
    }

    fn end(&self) -> u64 {
        self.offset.saturating_add(self.len)
    }
}

/// One subscription, as the feed sees it.
#[derive(Debug)]
pub(crate) struct Subscriber {
    pub(super) start: u64,
    pub(super) end: u64,
    pub(super) with_data: bool,
    pub(super) inbox: Mutex<Inbox>,
}

/// Changes published together (a batch's items, one update), shared by
/// every subscription that reports enough of them: publishing costs one
/// reference per subscription, not one copy per change. A subscription
/// that reports few of them (less than a quarter) keeps a copy of just
/// those instead, so that what it holds stays proportional to what it
/// reports.
#[derive(Debug)]
pub(crate) struct Published {
    pub(super) drafts: Vec<Draft>,
    /// The hull of the drafts' ranges, if every draft has bytes and none
    /// is a resize: a subscription whose range holds it reports them all.
    hull: Option<(u64, u64)>,
}

impl Published {
    pub(super) fn new(drafts: Vec<Draft>) -> Published {
        let plain = drafts
            .iter()
            .all(|d| d.len > 0 && !matches!(d.kind, ChangeKind::Resize { .. }));
        let hull = plain.then(|| {
            let lo = drafts.iter().map(|d| d.offset).min().unwrap_or(0);
            let hi = drafts.iter().map(Draft::end).max().unwrap_or(0);
            (lo, hi)
        });
        Published { drafts, hull }
    }
}

/// A subscription's place in a [`Published`] batch.
#[derive(Debug)]
pub(crate) struct Segment {
    pub(super) published: Arc<Published>,
    /// The next draft to look at.
    next: usize,
    /// Every draft is reported (no need to look at each).
    all: bool,
}

/// What a subscription has not taken yet.
#[derive(Debug, Default)]
pub(crate) struct Inbox {
    pub(crate) segments: VecDeque<Segment>,
    /// Changes of `segments` this subscription reports (what the capacity
    /// bounds).
    pub(super) held: usize,
    /// Changes dropped because the inbox was full, not yet reported.
    pub(crate) missed: u64,
    /// The mapping is closed: once `segments` is empty, the stream ends.
    pub(crate) ended: bool,
    pub(crate) waker: Option<Waker>,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind: carry on.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Subscriber {
    pub(crate) fn inbox(&self) -> MutexGuard<'_, Inbox> {
        lock(&self.inbox)
    }

    /// Whether this subscription reports `d` (a resize touches every one).
    fn reports(&self, d: &Draft) -> bool {
        matches!(d.kind, ChangeKind::Resize { .. }) || (d.offset < self.end && self.start < d.end())
    }

    /// The change as this subscription reports it: its bytes cut to the
    /// subscription's range, if it wants them.
    fn change(&self, seq: u64, d: &Draft) -> Change {
        let data = match (&d.data, self.with_data) {
            (Some((at, bytes)), true) => {
                let from = self.start.max(*at);
                let to = self.end.min(at + bytes.len() as u64);
                (from < to).then(|| {
                    let slice = bytes.slice((from - at) as usize..(to - at) as usize);
                    (from, slice)
                })
            }
            _ => None,
        };
        Change::new(seq, d.offset, d.len, d.kind, data)
    }

    /// The next change this subscription reports out of `segments`, taken
    /// from the front.
    #[inline]
    pub(crate) fn take(&self, segments: &mut VecDeque<Segment>) -> Option<Change> {
        while let Some(seg) = segments.front_mut() {
            let drafts = &seg.published.drafts;
            while let Some(d) = drafts.get(seg.next) {
                seg.next += 1;
                if seg.all || self.reports(d) {
                    return Some(self.change(d.seq, d));
                }
            }
            segments.pop_front();
        }
        None
    }

    /// Moves past the next change this subscription reports and returns
    /// it (a cheap clone: its bytes are shared).
    fn next_reported(&self, segments: &mut VecDeque<Segment>) -> Option<Draft> {
        while let Some(seg) = segments.front_mut() {
            let drafts = &seg.published.drafts;
            while let Some(d) = drafts.get(seg.next) {
                seg.next += 1;
                if seg.all || self.reports(d) {
                    return Some(d.clone());
                }
            }
            segments.pop_front();
        }
        None
    }

    /// How many of the drafts of `p` this subscription reports.
    pub(super) fn reported_in(&self, p: &Published) -> usize {
        if self.covers(p) {
            p.drafts.len()
        } else {
            p.drafts.iter().filter(|d| self.reports(d)).count()
        }
    }

    /// Whether this subscription reports every draft of `p`.
    fn covers(&self, p: &Published) -> bool {
        p.hull
            .is_some_and(|(lo, hi)| self.start <= lo && hi <= self.end)
    }
}

impl Inbox {
    /// Adds the `count` changes of `published` this subscription reports;
    /// beyond the capacity, the oldest are dropped and counted.
    pub(super) fn push(&mut self, sub: &Subscriber, published: &Arc<Published>, count: usize) {
        let (published, all) = if count * 4 < published.drafts.len() {
            let mine = published.drafts.iter().filter(|d| sub.reports(d));
            let copy = Published {
                drafts: mine.cloned().collect(),
                hull: None,
            };
            (Arc::new(copy), true)
        } else {
            (Arc::clone(published), count == published.drafts.len())
        };
        self.segments.push_back(Segment {
            published,
            next: 0,
            all,
        });
        self.held += count;
        while self.held > CAPACITY && sub.next_reported(&mut self.segments).is_some() {
            self.held -= 1;
            self.missed += 1;
        }
    }

    /// Takes everything held (the subscription yields it outside the lock).
    pub(crate) fn take_all(&mut self, into: &mut VecDeque<Segment>) {
        std::mem::swap(into, &mut self.segments);
        self.held = 0;
    }

    /// Whether nothing is held.
    pub(crate) fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }
}
