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
///
/// At most one policy flush is queued or running at a time, and writes do
/// not wait for it: what is written while it runs is covered by the next
/// one, which starts when it ends if a threshold is reached again. Under a
/// steady load, policy flushes therefore run back to back, each covering
/// more than `N` writes (bench H3: 8192 writes with `EveryWrites(64)` took 4
/// syncs). A policy bounds how much an acknowledged-but-unflushed crash can
/// lose only to "what was written since the last completed sync"; for a
/// write that must be durable before you go on, await
/// [`flush`](crate::MappedFile::flush) (flushes in flight share one sync).
///
/// `EveryBytes(0)` and `EveryWrites(0)` mean 1; an `Interval` shorter than
/// a millisecond means a millisecond.
///
/// ```no_run
/// # async fn demo() -> mmap_actor::Result<()> {
/// use mmap_actor::{FlushPolicy, MappedFile};
/// let file = MappedFile::options()
///     .create(true)
///     .len(1 << 20)
///     .flush_policy(FlushPolicy::EveryBytes(1 << 20))
///     .open("data.bin")
///     .await?;
/// file.update_from(0, b"hello").await?;
/// assert_eq!(file.pending_bytes(), 5);
/// # Ok(()) }
/// ```
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
