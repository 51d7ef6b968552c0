//! Change notifications for one file: [`watch`] and its stream, [`Watch`].
//!
//! # Implementation
//!
//! `hub.rs`: one process-wide watcher serving every [`Watch`], and the
//! routing of its events; this file: the public types, and the bounded
//! channel between the watcher thread and each stream, with its lag
//! accounting.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use futures::stream::{FusedStream, Stream};
use tokio::sync::mpsc;

use crate::error::{Error, Result};

mod hub;

use hub::Subscription;

/// Events buffered for one [`Watch`] before it lags (one slot is kept for
/// the lag report).
const CAPACITY: usize = 64;

/// A change to a watched file, reported by [`Watch`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FileEvent {
    /// The contents changed through `write(2)` (or `copy_file_range`,
    /// `fallocate`), or the file was truncated or extended. Stores through
    /// a memory mapping are *not* reported (see [`watch`]).
    Modified,
    /// Metadata changed: permissions, owner, timestamps, extended
    /// attributes, a new hard link.
    Metadata,
    /// The file was renamed or moved; it is still watched under its new
    /// name. `to` is where the kernel placed it when the event was handled
    /// (it may have moved again since), or `None` if that is unknown.
    Renamed {
        /// The file's new path, if known.
        to: Option<PathBuf>,
    },
    /// The file's last name is gone: it was removed, or another file was
    /// renamed over it. This is the stream's last item.
    Removed,
    /// The stream was not polled fast enough and events were dropped
    /// (they happened here, between the items before and after this one).
    /// `missed` is their number, or `None` when the kernel's own queue
    /// overflowed and the number is unknown.
    Lagged {
        /// How many events were dropped, if known.
        missed: Option<u64>,
    },
}

/// Watches the file at `path` for changes made by any process.
///
/// The returned [`Watch`] is a stream of [`FileEvent`]s for *this file*
/// (the inode the path names now): it follows the file across renames, and
/// ends after [`FileEvent::Removed`]. Only changes made after `watch`
/// returns are reported. It runs without a tokio runtime; setting it up
/// takes a few system calls and a hand-off to the watcher thread.
///
/// What the kernel reports (inotify): `write(2)` and friends, `truncate`,
/// `fallocate`, `chmod`, `chown`, `utime`, `rename`, `unlink`. **Stores
/// through a memory mapping are invisible to it**, whoever makes them:
/// another process's mapping, or this library's own
/// [`update`](crate::MappedFile::update), leases and atomic views (only
/// [`write_through`](crate::OpenOptions::write_through) updates, which use
/// `pwrite`, are seen).
///
/// A slow consumer loses events, never silently: up to 64 events are
/// buffered, then further events are dropped and counted, and the stream
/// yields [`FileEvent::Lagged`] in their place. [`FileEvent::Removed`] is
/// never dropped.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> mmap_actor::Result<()> {
/// use futures::StreamExt;
/// use mmap_actor::FileEvent;
///
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("watched");
/// std::fs::write(&path, b"one").unwrap();
/// let mut events = mmap_actor::watch(&path)?;
/// std::fs::remove_file(&path).unwrap();
/// assert_eq!(events.next().await.transpose()?, Some(FileEvent::Removed));
/// assert_eq!(events.next().await.transpose()?, None);
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// [`Error::Io`] with the path when it cannot be opened (`NotFound`,
/// `PermissionDenied`) or names a directory (`EISDIR`); [`Error::Watch`]
/// when the watcher cannot be started or cannot watch the file (the
/// inotify instance or watch limits are reached, or the file is not
/// readable, which inotify requires).
pub fn watch(path: impl AsRef<Path>) -> Result<Watch> {
    let path = path.as_ref();
    let (outbox, inbox) = channel(CAPACITY);
    let subscription = hub::subscribe(path, outbox)?;
    Ok(Watch {
        path: path.to_path_buf(),
        inbox,
        subscription: Some(subscription),
        stashed: None,
        done: false,
    })
}

/// A stream of the changes to one file; see [`watch`].
///
/// Items are `Result<FileEvent>`: an [`Error::Watch`] item reports an error
/// of the watcher (a failed read of the kernel's queue) and the stream goes
/// on. The stream ends after [`FileEvent::Removed`] and never ends
/// otherwise. Dropping it stops watching (and stops the watcher thread when
/// it was the last watch).
///
/// A watch holds an `O_PATH` descriptor of its file, so a removed file's
/// space is freed only once the stream has yielded `Removed` or been
/// dropped (as it is for any file still open or mapped).
///
/// # Cancel safety
///
/// `next()` is cancel safe: an event is taken from the buffer only by the
/// poll that returns it.
#[derive(Debug)]
pub struct Watch {
    path: PathBuf,
    inbox: Inbox,
    /// `None` once the stream has ended (or in unit tests).
    subscription: Option<Subscription>,
    /// An item to yield before reading the buffer again: a `Removed` that
    /// arrived while a lag report was queued.
    stashed: Option<FileEvent>,
    done: bool,
}

impl Watch {
    /// The path given to [`watch`].
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn yield_event(&mut self, event: FileEvent) -> Poll<Option<Result<FileEvent>>> {
        if event == FileEvent::Removed {
            self.done = true;
            // Release the inotify watch now rather than when dropped.
            self.subscription = None;
        }
        Poll::Ready(Some(Ok(event)))
    }
}

impl Stream for Watch {
    type Item = Result<FileEvent>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(event) = self.stashed.take() {
            return self.yield_event(event);
        }
        if self.done {
            return Poll::Ready(None);
        }
        match self.inbox.rx.poll_recv(cx) {
            Poll::Ready(Some(Msg::Event(event))) => self.yield_event(event),
            Poll::Ready(Some(Msg::Error(source))) => Poll::Ready(Some(Err(Error::Watch {
                path: self.path.clone(),
                source,
            }))),
            Poll::Ready(Some(Msg::Lag)) => {
                let (missed, end) = self.inbox.take_lag();
                self.stashed = end;
                Poll::Ready(Some(Ok(FileEvent::Lagged {
                    missed: Some(missed),
                })))
            }
            // Every sender is gone: the watch was torn down without a
            // `Removed` (only possible if the hub lost the entry).
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl FusedStream for Watch {
    fn is_terminated(&self) -> bool {
        self.done && self.stashed.is_none()
    }
}

/// What travels from the event thread to one [`Watch`].
#[derive(Debug)]
enum Msg {
    Event(FileEvent),
    Error(notify::Error),
    /// Events were dropped after this point: the count is in [`Lag`].
    Lag,
}

/// Lag bookkeeping shared by an [`Outbox`] and its [`Inbox`].
#[derive(Debug, Default)]
struct Lag {
    /// A [`Msg::Lag`] is in the channel: every event until the consumer
    /// takes it is dropped and counted, so that it reports them in order.
    queued: bool,
    missed: u64,
    /// A `Removed` that arrived while the channel was full.
    end: Option<FileEvent>,
    /// `Removed` was sent or stashed: nothing more is delivered.
    ended: bool,
}

/// The event thread's end of one watch's channel.
#[derive(Debug)]
struct Outbox {
    tx: mpsc::Sender<Msg>,
    lag: Arc<Mutex<Lag>>,
}

/// The stream's end.
#[derive(Debug)]
struct Inbox {
    rx: mpsc::Receiver<Msg>,
    lag: Arc<Mutex<Lag>>,
}

fn channel(capacity: usize) -> (Outbox, Inbox) {
    // One slot more than ordinary events may use: a lag report or the final
    // `Removed` always fits.
    let (tx, rx) = mpsc::channel(capacity.max(1) + 1);
    let lag = Arc::new(Mutex::new(Lag::default()));
    (
        Outbox {
            tx,
            lag: Arc::clone(&lag),
        },
        Inbox { rx, lag },
    )
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while holding these locks; if something did, the data
    // (counters and maps) is still consistent.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Outbox {
    /// Delivers without ever blocking: the event thread serves every watch.
    fn deliver(&self, msg: Msg) {
        let mut lag = lock(&self.lag);
        if lag.ended {
            return;
        }
        if matches!(msg, Msg::Event(FileEvent::Removed)) {
            lag.ended = true;
            if lag.queued {
                lag.end = Some(FileEvent::Removed);
            } else {
                // The reserved slot is free while no lag report is queued.
                let _ = self.tx.try_send(msg);
            }
            return;
        }
        if lag.queued {
            lag.missed += 1;
        } else if self.tx.capacity() >= 2 {
            let _ = self.tx.try_send(msg);
        } else {
            // Only the reserved slot is left: report the lag in it.
            let _ = self.tx.try_send(Msg::Lag);
            lag.queued = true;
            lag.missed = 1;
        }
    }
}

impl Inbox {
    /// The number of dropped events and a pending `Removed`, on receipt of
    /// the lag report.
    fn take_lag(&self) -> (u64, Option<FileEvent>) {
        let mut lag = lock(&self.lag);
        lag.queued = false;
        (std::mem::take(&mut lag.missed), lag.end.take())
    }
}

#[cfg(test)]
mod tests {
    use futures::{FutureExt, StreamExt};

    use super::*;

    fn detached(capacity: usize) -> (Outbox, Watch) {
        let (outbox, inbox) = channel(capacity);
        let watch = Watch {
            path: PathBuf::from("test"),
            inbox,
            subscription: None,
            stashed: None,
            done: false,
        };
        (outbox, watch)
    }

    /// Everything the watch has buffered, without waiting.
    fn drain(watch: &mut Watch) -> Vec<FileEvent> {
        let mut out = Vec::new();
        while let Some(Some(item)) = watch.next().now_or_never() {
            out.push(item.unwrap());
        }
        out
    }

    #[test]
    fn a_slow_consumer_sees_a_lag_report_in_place_of_the_dropped_events() {
        let (outbox, mut watch) = detached(4);
        for _ in 0..10 {
            outbox.deliver(Msg::Event(FileEvent::Modified));
        }
        assert_eq!(
            drain(&mut watch),
            [
                FileEvent::Modified,
                FileEvent::Modified,
                FileEvent::Modified,
                FileEvent::Modified,
                FileEvent::Lagged { missed: Some(6) },
            ]
        );
        // Delivery resumes after the report, and counts start again.
        outbox.deliver(Msg::Event(FileEvent::Metadata));
        for _ in 0..5 {
            outbox.deliver(Msg::Event(FileEvent::Modified));
        }
        assert_eq!(
            drain(&mut watch),
            [
                FileEvent::Metadata,
                FileEvent::Modified,
                FileEvent::Modified,
                FileEvent::Modified,
                FileEvent::Lagged { missed: Some(2) },
            ]
        );
        assert!(!watch.is_terminated());
    }

    #[test]
    fn removed_is_never_dropped_and_ends_the_stream() {
        // Full channel with a lag report queued: `Removed` waits behind it.
        let (outbox, mut watch) = detached(2);
        for _ in 0..5 {
            outbox.deliver(Msg::Event(FileEvent::Modified));
        }
        outbox.deliver(Msg::Event(FileEvent::Removed));
        outbox.deliver(Msg::Event(FileEvent::Modified));
        assert_eq!(
            drain(&mut watch),
            [
                FileEvent::Modified,
                FileEvent::Modified,
                FileEvent::Lagged { missed: Some(3) },
                FileEvent::Removed,
            ]
        );
        assert!(watch.is_terminated());
        assert!(watch.next().now_or_never().unwrap().is_none());

        // Full channel without a lag report: the reserved slot takes it.
        let (outbox, mut watch) = detached(2);
        outbox.deliver(Msg::Event(FileEvent::Modified));
        outbox.deliver(Msg::Event(FileEvent::Modified));
        outbox.deliver(Msg::Event(FileEvent::Removed));
        assert_eq!(
            drain(&mut watch),
            [FileEvent::Modified, FileEvent::Modified, FileEvent::Removed]
        );
        assert!(watch.next().now_or_never().unwrap().is_none());
    }

    #[test]
    fn errors_become_typed_items_and_the_stream_goes_on() {
        let (outbox, mut watch) = detached(4);
        outbox.deliver(Msg::Error(notify::Error::generic("boom")));
        outbox.deliver(Msg::Event(FileEvent::Modified));
        match watch.next().now_or_never() {
            Some(Some(Err(Error::Watch { path, source }))) => {
                assert_eq!(path, PathBuf::from("test"));
                assert!(source.to_string().contains("boom"), "{source}");
            }
            other => panic!("expected a watch error, got {other:?}"),
        }
        assert_eq!(drain(&mut watch), [FileEvent::Modified]);
    }
}
