//! [`FlushPolicy`]: flushes the actor makes by itself.

use std::time::Duration;

/// When the actor flushes without being asked (`OpenOptions::flush_policy`).
///
/// A policy flush is the same `fdatasync` a [`flush`](crate::MappedFile::flush)
/// is, shared with the flushes in flight (group commit). Writes of every
/// path count: updates (served directly or by the actor), `modify`, and
/// leases that can write ([`SegmentMut`](crate::SegmentMut),
/// [`AtomicView`](crate::AtomicView)), which count, with their whole range,
/// when they are released. They are counted per file: every open of the
/// file in the process adds to the same count. A policy flush that fails
/// poisons the mapping like any flush (the next call that can report it
/// does: a `flush`, `close`), and is logged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum FlushPolicy {
    /// Only explicit flushes (the default).
    #[default]
    Manual,
    /// Once this many bytes were written since the last flush.
    EveryBytes(u64),
    /// Once this many writes were made since the last flush.
    EveryWrites(u64),
    /// This often, if anything was written since the last flush.
    Interval(Duration),
}

impl FlushPolicy {
    /// The writes or bytes after which this policy flushes, if it counts.
    pub(crate) fn thresholds(self) -> (Option<u64>, Option<u64>) {
        match self {
            FlushPolicy::EveryWrites(n) => (Some(n.max(1)), None),
            FlushPolicy::EveryBytes(n) => (None, Some(n.max(1))),
            FlushPolicy::Manual | FlushPolicy::Interval(_) => (None, None),
        }
    }

    /// The period of an `Interval` policy (at least a millisecond).
    pub(crate) fn period(self) -> Option<Duration> {
        match self {
            FlushPolicy::Interval(d) => Some(d.max(Duration::from_millis(1))),
            _ => None,
        }
    }
}
